/* conn.c - one NBD client connection: the byte engine, the request
 * slots and their buffers, and the connection's lifetime.  The states
 * and their handlers are in internal.h, handshake.c and transmission.c.
 *
 * Input goes through a 64 KiB buffer (several small headers per recv);
 * large payloads are received straight into the request's buffer.
 * Until its first request a connection reads through a small buffer in
 * its struct instead, and its loop polls briefly for the client's next
 * message (see "polling while negotiating").
 * Replies are iovecs queued per request slot and sent with one sendmsg
 * for as many queued replies as fit.  Requests complete out of order.
 *
 * Memory: request buffers, block status buffers and the input buffer
 * are anonymous pages (nbd_mem_*), zero when first mapped, so no byte a
 * client reads can come from another connection.  They are kept while
 * requests flow (up to NBD_BUF_KEEP each) and unmapped once the
 * connection has had nothing in flight for NBD_IDLE_RELEASE_US: an idle
 * connection costs its struct, not its peak.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/sockios.h>

#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>

#include "nbd/internal.h"
#include "qapi-events.h"
#include "util/log.h"
#include "util/util.h"

#define NBD_SEND_IOV 64              /* iovecs per sendmsg */

/* ---- page-backed buffers ------------------------------------------------- */

static size_t mem_round(size_t len)
{
    static size_t page;

    if (!page) {
        long n = sysconf(_SC_PAGESIZE);

        page = n > 0 ? (size_t)n : 4096;
    }
    return (len + page - 1) & ~(page - 1);
}

void *nbd_mem_alloc(size_t len)
{
    void *p = mmap(NULL, mem_round(len), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        log_error("nbd: out of memory mapping %zu bytes", len);
        abort();
    }
    return p;
}

void *nbd_mem_grow(void *p, size_t old_len, size_t new_len)
{
    void *q;

    if (!p) {
        return nbd_mem_alloc(new_len);
    }
    if (mem_round(new_len) <= mem_round(old_len)) {
        return p;
    }
    q = mremap(p, mem_round(old_len), mem_round(new_len), MREMAP_MAYMOVE);
    if (q == MAP_FAILED) {
        log_error("nbd: out of memory growing a buffer to %zu bytes",
                  new_len);
        abort();
    }
    return q;
}

void nbd_mem_free(void *p, size_t len)
{
    if (p) {
        munmap(p, mem_round(len));
    }
}

/* ---- slots --------------------------------------------------------------- */

static void conn_input(NbdConn *c);
static void conn_maybe_free(NbdConn *c);

static NbdSlot *slot_get(NbdConn *c)
{
    NbdSlot *s = c->free_slots;

    if (!s && c->nslots < NBD_SLOTS) {
        s = XNEW(NbdSlot);
        s->conn = c;
        s->pipe_fd[0] = s->pipe_fd[1] = -1;
        c->nslots++;
        c->free_slots = s;
    }
    if (s) {
        c->free_slots = s->next;
        s->next = NULL;
        c->busy++;
        s->err = 0;
        s->flush_after = false;
        s->niov = s->iov_idx = 0;
        s->hdr_len = 0;
    }
    return s;
}

static void slot_free_buf(NbdSlot *s)
{
    nbd_mem_free(s->buf, s->buf_cap);
    s->buf = NULL;
    s->buf_cap = 0;
}

static unsigned nbd_pipes_open;      /* atomic: pipes of all slots */

void nbd_slot_drop_pipe(NbdSlot *s)
{
    if (s->pipe_fd[0] >= 0) {
        close(s->pipe_fd[0]);
        close(s->pipe_fd[1]);
        s->pipe_fd[0] = s->pipe_fd[1] = -1;
        s->pipe_cap = 0;
        __atomic_fetch_sub(&nbd_pipes_open, 1, __ATOMIC_RELAXED);
    }
    /* The pipe's page references went with it. */
    blk_splice_unpin(&s->pin);
    s->splicing = false;
    s->pipe_fill = 0;
}

/* A spliced reply's last byte is in the socket: its pin waits there
 * until the peer has consumed it. */
static void conn_keep_pin(NbdConn *c, NbdSlot *s)
{
    if (s->pin.node == NULL) {
        return;
    }
    if (c->npins == c->cap_pins) {
        c->cap_pins = c->cap_pins ? 2 * c->cap_pins : 16;
        c->pins = xrealloc(c->pins, c->cap_pins * sizeof(*c->pins));
    }
    c->pins[c->npins++] = (NbdPinRec){ s->pin, c->sent };
    s->pin.node = NULL;
}

/* Release the pins of spliced replies the peer has consumed.  Only on
 * an AF_UNIX stream socket (nbd_conn_enter_transmission): there every
 * queued skb is charged to the sender (sk_wmem_alloc, which SIOCOUTQ
 * returns) with its truesize, at least its bytes, until the receiver
 * has consumed and freed it, and skbs are consumed in order.  So the
 * skbs still alive (the only ones holding our pages) carry at most the
 * last outq bytes sent, and a reply that ended outq bytes or more
 * before c->sent is no longer referenced.  (Not TCP: over loopback the
 * receiver's queue keeps the pages after the data is acknowledged.  A
 * peer that splices the socket into a pipe of its own keeps references
 * we cannot see: those pages it took are its own business, as with a
 * raw export.) */
static void conn_release_pins(NbdConn *c)
{
    size_t k = 0;
    int outq;

    if (c->npins == 0 || ioctl(c->xp.fd, SIOCOUTQ, &outq) < 0 || outq < 0) {
        return;
    }
    while (k < c->npins && c->sent - c->pins[k].end >= (uint64_t)outq) {
        blk_splice_unpin(&c->pins[k].pin);
        k++;
    }
    memmove(c->pins, c->pins + k, (c->npins - k) * sizeof(*c->pins));
    c->npins -= k;
}

/* The socket is closing: whatever was not seen consumed is lost. */
static void conn_drop_pins(NbdConn *c)
{
    conn_release_pins(c);
    for (size_t i = 0; i < c->npins; i++) {
        blk_splice_unpin_lost(&c->pins[i].pin);
    }
    c->npins = 0;
    free(c->pins);
    c->pins = NULL;
    c->cap_pins = 0;
}

bool nbd_slot_get_pipe(NbdSlot *s, uint64_t len)
{
    /* Bytes at an unaligned file offset straddle pages: a pipe buffer
     * per page, the first and the last only partly used. */
    uint64_t need = len + 2 * 4096;
    int fds[2];
    int cap;

    if (s->pipe_fd[0] >= 0) {
        return s->pipe_cap >= need;
    }
    if (need > NBD_PIPE_SIZE) {
        return false;
    }
    if (__atomic_add_fetch(&nbd_pipes_open, 1, __ATOMIC_RELAXED) >
        NBD_PIPES_MAX) {
        __atomic_fetch_sub(&nbd_pipes_open, 1, __ATOMIC_RELAXED);
        return false;
    }
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        __atomic_fetch_sub(&nbd_pipes_open, 1, __ATOMIC_RELAXED);
        return false;
    }
    /* Unprivileged users may be held to less (pipe-max-size,
     * pipe-user-pages-soft): take what the pipe has. */
    (void)fcntl(fds[1], F_SETPIPE_SZ, NBD_PIPE_SIZE);
    cap = fcntl(fds[1], F_GETPIPE_SZ);
    s->pipe_fd[0] = fds[0];
    s->pipe_fd[1] = fds[1];
    s->pipe_cap = cap > 0 ? (size_t)cap : 0;
    return s->pipe_cap >= need;
}

static void slot_free_ext(NbdSlot *s)
{
    for (unsigned i = 0; i < s->ext_n; i++) {
        nbd_mem_free(s->ext[i].p, s->ext[i].cap);
    }
    free(s->ext);
    s->ext = NULL;
    s->ext_n = 0;
}

/* Free the slots on the free list, with their buffers. */
static void conn_free_slots(NbdConn *c)
{
    while (c->free_slots) {
        NbdSlot *s = c->free_slots;

        c->free_slots = s->next;
        slot_free_buf(s);
        slot_free_ext(s);
        nbd_slot_drop_pipe(s);
        free(s);
        c->nslots--;
    }
}

static void conn_free_inbuf(NbdConn *c)
{
    if (c->inbuf != c->insmall) {
        nbd_mem_free(c->inbuf, NBD_INBUF_SIZE);
    }
    c->inbuf = NULL;
}

/* Give back the input buffer when it holds nothing. */
static void conn_release_inbuf(NbdConn *c)
{
    if (c->inbuf && c->in_start == c->in_end) {
        conn_free_inbuf(c);
        c->in_start = c->in_end = 0;
    }
}

/* The input buffer for a recv, empty: while negotiating the small one
 * inside the struct (a connection that only negotiates, or connects
 * and disconnects, maps and unmaps no page: an munmap costs a TLB
 * flush, on a virtual machine a dear one), else the page-backed one.
 * Returns its size. */
static size_t conn_inbuf_get(NbdConn *c)
{
    if (c->inbuf == c->insmall && !c->negotiating) {
        c->inbuf = NULL;
    }
    if (!c->inbuf) {
        c->inbuf = c->negotiating ? c->insmall
                                  : nbd_mem_alloc(NBD_INBUF_SIZE);
    }
    return c->inbuf == c->insmall ? NBD_INBUF_SMALL : NBD_INBUF_SIZE;
}

/* Give back every slot with nothing in flight and the input buffer
 * when it holds nothing.  (A request header is read into c->hdrbuf and
 * takes its slot once complete, so a connection waiting for one holds
 * no slot.) */
static void conn_release_buffers(NbdConn *c)
{
    conn_free_slots(c);
    if (!c->in_input) {
        conn_release_inbuf(c);
    }
}

void nbd_conn_release_inbuf(NbdConn *c)
{
    conn_release_inbuf(c);
}

/* Loop thread: the idle timer.  It runs at most once per
 * NBD_IDLE_RELEASE_US while requests flow (re-arming itself for the
 * rest of the period) and releases buffers once a whole period passed
 * without a completion. */
static void conn_idle_cb(void *opaque)
{
    NbdConn *c = opaque;
    uint64_t now = loop_now_us();
    unsigned in_flight = c->busy - (c->cur ? 1 : 0);

    c->idle_armed = false;
    if (c->closed) {
        return;
    }
    conn_release_pins(c);
    if (in_flight == 0 && now - c->last_active_us >= NBD_IDLE_RELEASE_US) {
        conn_release_buffers(c);
        if (c->npins > 0) {
            /* Look again until the peer has read them. */
            c->idle_armed = true;
            loop_timer_arm(c->idle_timer, NBD_PIN_CHECK_US);
        }
        return;
    }
    c->idle_armed = true;
    loop_timer_arm(c->idle_timer,
                   in_flight ? NBD_IDLE_RELEASE_US
                             : NBD_IDLE_RELEASE_US -
                               (now - c->last_active_us));
}

static void conn_note_activity(NbdConn *c)
{
    c->last_active_us = loop_now_us();
    if (!c->idle_armed && c->idle_timer) {
        c->idle_armed = true;
        loop_timer_arm(c->idle_timer, NBD_IDLE_RELEASE_US);
    }
}

void nbd_slot_put(NbdSlot *s)
{
    NbdConn *c = s->conn;

    if (s->buf_cap > NBD_BUF_KEEP) {
        slot_free_buf(s);
    }
    if (s->splicing || s->pipe_fill > 0) {
        /* Dropped with bytes in its pipe (the connection went): they
         * cannot be taken back out cheaply. */
        nbd_slot_drop_pipe(s);
    }
    s->next = c->free_slots;
    c->free_slots = s;
    c->busy--;
    if (c->closed) {
        conn_maybe_free(c);
        return;
    }
    conn_note_activity(c);
    if (c->input_paused) {
        c->input_paused = false;
        conn_input(c);
    }
    nbd_conn_maybe_finish(c);
}

void nbd_slot_ensure_buf(NbdSlot *s, uint64_t len)
{
    if (s->buf_cap < len) {
        /* Fresh pages: never bytes of an earlier, bigger request
         * moved around by realloc. */
        slot_free_buf(s);
        s->buf = nbd_mem_alloc(len);
        s->buf_cap = len;
    }
}

/* Loop thread: the deferred send of the replies queued so far. */
static void conn_flush_posted(void *opaque)
{
    NbdConn *c = opaque;

    c->flush_posted = false;
    if (c->closed) {
        conn_maybe_free(c);
        return;
    }
    nbd_conn_flush_output(c);
}

void nbd_conn_queue(NbdConn *c, NbdSlot *s)
{
    s->next = NULL;
    if (c->out_tail) {
        c->out_tail->next = s;
    } else {
        c->out_head = s;
    }
    c->out_tail = s;
    if (c->closed) {
        return;
    }
    /* Completions arrive in batches (posted by workers or by inline
     * requests, run in order by one loop turn): sending after the batch
     * answers a queue of 16 4 KiB writes with one sendmsg instead of
     * 16.  A post from the loop thread is no system call. */
    if (!c->flush_posted) {
        c->flush_posted = true;
        loop_post(c->loop, conn_flush_posted, c);
    }
}

/* ---- the byte engine ----------------------------------------------------- */

static bool conn_reading(const NbdConn *c)
{
    return !c->closed && c->state <= NBD_CS_REQ_DRAIN;
}

void nbd_conn_want(NbdConn *c, NbdConnState st, uint8_t *dst, uint64_t len)
{
    c->state = st;
    c->rd_dst = dst;
    c->rd_len = len;
    c->rd_got = 0;
}

/* One handler per reading state, called when its bytes are complete. */
static void conn_dispatch(NbdConn *c)
{
    switch (c->state) {
    case NBD_CS_CLIENT_FLAGS:
        nbd_hs_on_client_flags(c);
        break;
    case NBD_CS_OPT_HDR:
        nbd_hs_on_opt_hdr(c);
        break;
    case NBD_CS_OPT_DATA:
        nbd_hs_on_opt_data(c);
        break;
    case NBD_CS_OPT_DISCARD:
        nbd_hs_on_opt_discard(c);
        break;
    case NBD_CS_REQ_HDR:
        nbd_tx_on_req_hdr(c);
        break;
    case NBD_CS_REQ_PAYLOAD:
        nbd_tx_on_req_payload(c);
        break;
    case NBD_CS_REQ_DRAIN:
        nbd_tx_on_req_drain(c);
        break;
    default:
        abort();
    }
}

/* Receive up to need bytes straight into c->rd_dst.  A request payload
 * on a plain socket takes the next request's header behind it into the
 * (empty) input buffer in the same recvmsg: that header is then read
 * without a recv of its own, and the next payload goes straight to its
 * buffer too instead of partly through the input buffer and a copy.
 * Returns what recv returned (all bytes taken, header included);
 * *want is what was asked for. */
static ssize_t conn_recv_direct(NbdConn *c, uint64_t need, size_t *want)
{
    size_t len = (size_t)MIN(need, (uint64_t)SSIZE_MAX - NBD_EXT_REQ_SIZE);
    struct iovec iov[2];
    ssize_t n;

    if (c->state != NBD_CS_REQ_PAYLOAD || c->xp.ops->recvv == NULL) {
        *want = len;
        n = xport_recv(&c->xp, c->rd_dst + c->rd_got, len);
        if (n > 0) {
            c->rd_got += n;
        }
        return n;
    }
    conn_inbuf_get(c);           /* the header fits the small one */
    iov[0].iov_base = c->rd_dst + c->rd_got;
    iov[0].iov_len = len;
    iov[1].iov_base = c->inbuf;
    iov[1].iov_len = c->extended ? NBD_EXT_REQ_SIZE : NBD_REQ_SIZE;
    *want = len + iov[1].iov_len;
    n = c->xp.ops->recvv(&c->xp, iov, 2);
    if (n > (ssize_t)len) {
        c->in_start = 0;
        c->in_end = (size_t)n - len;
        c->rd_got += len;
    } else if (n > 0) {
        c->rd_got += n;
    }
    return n;
}

static void conn_input_loop(NbdConn *c)
{
    /* A short read from a plain socket took all there was: asking again
     * would only hear EAGAIN (a system call per request at queue depth
     * 1).  The watch is level-triggered, so bytes that arrive later
     * wake us.  gnutls may hold decrypted records back: not for TLS. */
    bool drained = false;

    while (conn_reading(c) && !c->handoff) {
        uint64_t need;

        if (c->state == NBD_CS_OPT_HDR && c->hs_off < c->hs_len) {
            /* The client is not reading our replies: read no more
             * options until it does (bounds the reply buffer). */
            c->input_paused = true;
            return;
        }
        if (c->state == NBD_CS_REQ_HDR && c->busy >= NBD_SLOTS) {
            c->input_paused = true;       /* back-pressure: 16 in flight */
            return;
        }
        need = c->rd_len - c->rd_got;
        if (need) {
            size_t avail = c->in_end - c->in_start;
            ssize_t n;

            if (avail) {
                size_t take = (size_t)MIN((uint64_t)avail, need);

                if (c->rd_dst) {
                    memcpy(c->rd_dst + c->rd_got, c->inbuf + c->in_start,
                           take);
                }
                c->in_start += take;
                c->rd_got += take;
                if (c->in_start == c->in_end) {
                    c->in_start = c->in_end = 0;
                }
                if (take < need) {
                    continue;
                }
            } else {
                size_t want;

                if (drained) {
                    return;
                }
                if (c->rd_dst &&
                    need >= (c->negotiating ? NBD_INBUF_SMALL
                                            : NBD_INBUF_SIZE) / 2) {
                    n = conn_recv_direct(c, need, &want);
                } else {
                    want = conn_inbuf_get(c);
                    n = xport_recv(&c->xp, c->inbuf, want);
                    if (n > 0) {
                        c->in_start = 0;
                        c->in_end = n;
                    }
                }
                if (n > 0 && (size_t)n < want && c->xp.ops->pending == NULL) {
                    drained = true;
                }
                if (n == -EAGAIN) {
                    return;
                }
                if (n <= 0) {
                    if (n < 0) {
                        log_debug("nbd: receive failed: %s", strerror(-n));
                    }
                    nbd_conn_close(c);
                    return;
                }
                continue;
            }
        }
        if (c->state == NBD_CS_REQ_HDR) {
            /* The header is in c->hdrbuf: only now does the request
             * need a slot (an idle connection holds none). */
            c->cur = slot_get(c);
            c->negotiating = false;   /* negotiated: no more polling */
        }
        conn_dispatch(c);
    }
}

static void conn_move(NbdConn *c);

static void conn_input(NbdConn *c)
{
    if (c->in_input) {
        c->input_again = true;
        return;
    }
    c->in_input = true;
    do {
        c->input_again = false;
        conn_input_loop(c);
    } while (c->input_again && !c->closed && !c->input_paused &&
             !c->handoff);
    c->in_input = false;
    if (c->handoff && !c->closed) {
        conn_move(c);
        return;
    }
    nbd_conn_update_events(c);
}

void nbd_conn_input(NbdConn *c)
{
    conn_input(c);
}

void nbd_conn_flush_output(NbdConn *c)
{
    bool resume = false;

    if (c->in_flush || c->closed) {
        return;
    }
    c->in_flush = true;
    c->want_write = false;
    while (c->hs_off < c->hs_len) {
        struct iovec iov = { c->hs + c->hs_off, c->hs_len - c->hs_off };
        ssize_t n = xport_sendv(&c->xp, &iov, 1);

        if (n == -EAGAIN) {
            c->want_write = true;
            goto out;
        }
        if (n < 0) {
            goto fail;
        }
        c->sent += (uint64_t)n;
        c->hs_off += n;
    }
    c->hs_off = c->hs_len = 0;
    if (c->exp && c->hs) {
        /* In transmission: the handshake's buffer is done with. */
        free(c->hs);
        c->hs = NULL;
        c->hs_cap = 0;
    }
    if (c->input_paused && c->state == NBD_CS_OPT_HDR) {
        resume = true;
    }

    while (c->out_head) {
        struct iovec iov[NBD_SEND_IOV];
        NbdSlot *h = c->out_head;
        int cnt = 0;
        ssize_t n;

        if (h->iov_idx == h->niov && h->pipe_fill > 0) {
            /* The header is out: the data follows from the pipe. */
            n = xport_splice(&c->xp, h->pipe_fd[0], h->pipe_fill);
            if (n == -EAGAIN) {
                c->want_write = true;
                goto out;
            }
            if (n <= 0) {
                goto fail;
            }
            c->sent += (uint64_t)n;
            h->pipe_fill -= (uint64_t)n;
            if (h->pipe_fill == 0) {
                conn_keep_pin(c, h);
                c->out_head = h->next;
                if (!c->out_head) {
                    c->out_tail = NULL;
                }
                h->next = NULL;
                nbd_slot_put(h);
                if (c->closed) {
                    c->in_flush = false;
                    return;
                }
            }
            continue;
        }
        for (NbdSlot *s = c->out_head; s && cnt < NBD_SEND_IOV;
             s = s->next) {
            for (int i = s->iov_idx; i < s->niov && cnt < NBD_SEND_IOV;
                 i++) {
                iov[cnt++] = s->iov[i];
            }
            if (s->pipe_fill > 0) {
                break;           /* its data is not in iovecs */
            }
        }
        n = xport_sendv(&c->xp, iov, cnt);
        if (n == -EAGAIN) {
            c->want_write = true;
            goto out;
        }
        if (n < 0) {
            goto fail;
        }
        c->sent += (uint64_t)n;
        /* Account for every byte sent before releasing any slot:
         * releasing can queue new replies. */
        NbdSlot *done = NULL, **tail = &done;

        while (c->out_head) {
            NbdSlot *s = c->out_head;

            while (s->iov_idx < s->niov && n > 0) {
                struct iovec *v = &s->iov[s->iov_idx];

                if ((size_t)n >= v->iov_len) {
                    n -= v->iov_len;
                    s->iov_idx++;
                } else {
                    v->iov_base = (char *)v->iov_base + n;
                    v->iov_len -= n;
                    n = 0;
                }
            }
            if (s->iov_idx < s->niov || s->pipe_fill > 0) {
                break;
            }
            c->out_head = s->next;
            if (!c->out_head) {
                c->out_tail = NULL;
            }
            s->next = NULL;
            *tail = s;
            tail = &s->next;
        }
        while (done) {
            NbdSlot *s = done;

            done = s->next;
            nbd_slot_put(s);   /* may queue output: sent by this loop */
        }
        if (c->closed) {
            c->in_flush = false;
            return;
        }
    }
out:
    c->in_flush = false;
    if (c->state == NBD_CS_TLS_HANDSHAKE && c->hs_off == c->hs_len) {
        /* The STARTTLS ACK is out in clear: TLS from here on. */
        nbd_hs_tls_step(c);
        return;
    }
    conn_release_pins(c);
    if (resume) {
        c->input_paused = false;
        conn_input(c);
    }
    nbd_conn_maybe_finish(c);
    nbd_conn_update_events(c);
    return;
fail:
    c->in_flush = false;
    log_debug("nbd: send failed, disconnecting");
    nbd_conn_close(c);
}

/* CLOSING: hang up once every in-flight request is answered. */
void nbd_conn_maybe_finish(NbdConn *c)
{
    if (!c->closed && c->state == NBD_CS_CLOSING && c->busy == 0 &&
        !c->out_head && c->hs_off == c->hs_len && !c->in_flush) {
        nbd_conn_close(c);
    }
}

void nbd_conn_start_closing(NbdConn *c)
{
    c->state = NBD_CS_CLOSING;
    if (c->cur) {
        NbdSlot *s = c->cur;

        c->cur = NULL;
        nbd_slot_put(s);
    }
    nbd_conn_maybe_finish(c);
}

void nbd_conn_update_events(NbdConn *c)
{
    int ev = 0;

    if (c->closed) {
        return;
    }
    if (conn_reading(c) && !c->input_paused) {
        ev |= LOOP_READ;
    }
    if (c->want_write) {
        ev |= LOOP_WRITE;
    }
    if (c->state == NBD_CS_TLS_HANDSHAKE && c->hs_off == c->hs_len) {
        ev = c->tls_want_write ? LOOP_WRITE : LOOP_READ;
    }
    if (loop_fd_events(c->watch) != ev) {
        loop_fd_set_events(c->watch, ev);
    }
}

/* ---- polling while negotiating ------------------------------------------ */

/* Whether c waits for its client's next message in the ping-pong of the
 * negotiation (up to its first request): the client answers within
 * microseconds, and a sleeping loop would pay a wake-up per round trip.
 * Not during the TLS handshake: there the client computes keys and
 * checks certificates, hundreds of microseconds. */
static bool conn_poll_waits(const NbdConn *c)
{
    if (!c->negotiating || c->closed || c->remote || c->handoff ||
        c->want_write || c->input_paused) {
        return false;
    }
    switch (c->state) {
    case NBD_CS_CLIENT_FLAGS:
    case NBD_CS_OPT_HDR:
    case NBD_CS_OPT_DATA:
    case NBD_CS_OPT_DISCARD:
    case NBD_CS_REQ_HDR:
        return true;
    default:
        return false;
    }
}

/* After a callback of c: if it now waits for its client, note when the
 * wait began and ask the loop to poll before sleeping. */
static void conn_poll_arm(NbdConn *c)
{
    NbdServer *srv = c->srv;

    c->poll_start_ns = 0;
    if (srv == NULL || srv->hs_poll.max_ns == 0 || !conn_poll_waits(c)) {
        return;
    }
    c->poll_used_ns = loop_poll_window_next(&srv->hs_poll);
    c->poll_start_ns = loop_now_ns();
    loop_poll_hint(c->loop, c->poll_used_ns);
}

/* c's client answered: how long it took teaches the window. */
static void conn_poll_answered(NbdConn *c)
{
    if (c->poll_start_ns && c->srv) {
        loop_poll_window_update(&c->srv->hs_poll, c->poll_used_ns,
                                loop_now_ns() - c->poll_start_ns);
    }
    c->poll_start_ns = 0;
}

static void conn_fd_cb(int fd, int events, void *opaque)
{
    NbdConn *c = opaque;

    (void)fd;
    if (c->state == NBD_CS_TLS_HANDSHAKE) {
        if (c->hs_off < c->hs_len) {
            nbd_conn_flush_output(c);   /* the ACK; then the handshake */
        } else {
            nbd_hs_tls_step(c);
        }
        conn_poll_arm(c);
        return;
    }
    if (c->poll_start_ns && (events & LOOP_READ)) {
        conn_poll_answered(c);
    }
    if (events & LOOP_WRITE) {
        nbd_conn_flush_output(c);
    }
    if (!c->closed && (events & LOOP_READ)) {
        conn_input(c);
    }
    conn_poll_arm(c);
}

/* ---- lifetime ------------------------------------------------------------ */

/* The peer of fd as events name it: "HOST:PORT" ("[HOST]:PORT" for
 * IPv6) or, for a unix socket, "unix:pid=PID" (SO_PEERCRED). */
static char *conn_peer_name(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST], port[NI_MAXSERV];
    struct ucred cred;
    socklen_t clen = sizeof(cred);

    memset(&ss, 0, sizeof(ss));
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        return ss.ss_family == AF_INET6 ? xasprintf("[%s]:%s", host, port)
                                        : xasprintf("%s:%s", host, port);
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 &&
        cred.pid > 0) {
        return xasprintf("unix:pid=%d", (int)cred.pid);
    }
    return xstrdup("unix");
}

/* A connection on fd without its peer name yet. */
static NbdConn *conn_alloc_unnamed(NbdServer *srv, int fd)
{
    NbdConn *c = XNEW(NbdConn);

    c->srv = srv;
    c->ctx = srv->ctx;
    c->loop = srv->ctx->loop;
    c->tls_required = srv->tls != NULL;
    c->serial = ++srv->conn_serial;
    xport_init_plain(&c->xp, fd);
    c->watch = loop_fd_add(c->loop, fd, 0, conn_fd_cb, c);
    c->idle_timer = loop_timer_new(c->loop, conn_idle_cb, c);
    return c;
}

NbdConn *nbd_conn_alloc(NbdServer *srv, int fd)
{
    NbdConn *c = conn_alloc_unnamed(srv, fd);

    c->peer = conn_peer_name(fd);
    return c;
}

NbdConn *nbd_conn_new(NbdServer *srv, int fd)
{
    NbdConn *c = conn_alloc_unnamed(srv, fd);

    /* The greeting first: the client waits for it, not for the two
     * system calls that name the peer (nothing reads the name before
     * this function returns). */
    c->negotiating = true;
    nbd_hs_start(c);
    nbd_conn_flush_output(c);
    c->peer = c->closed ? xstrdup("unix") : conn_peer_name(fd);
    nbd_conn_update_events(c);
    conn_poll_arm(c);
    return c;
}

/* Drop the export (and so the node) reference; idempotent. */
static void conn_release_export(NbdConn *c)
{
    NbdExport *exp = c->exp;

    if (exp) {
        c->exp = NULL;
        nbd_export_unref(exp);
    }
}

/* Main loop: the struct goes (no request in flight any more). */
static void conn_free_cb(void *opaque)
{
    NbdConn *c = opaque;

    if (c->close_posts > 0) {
        c->free_pending = true;  /* a posted close still names it */
        return;
    }
    if (c->srv) {
        nbd_server_conn_freed(c->srv, c);
    }
    conn_release_export(c);
    conn_free_slots(c);          /* no request in flight: all of them */
    conn_free_inbuf(c);
    free(c->hs);
    free(c->optbuf);
    free(c->peer);
    free(c->tls_identity);
    NbdMetaSel_reset(&c->meta_sel);
    free(c);
}

/* What nbd_conn_shutdown() waits on: the connection closed on its loop
 * with nothing in flight (its free posted to the main loop). */
struct NbdConnWait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
};

static void conn_wait_done(NbdConnWait *w)
{
    if (w != NULL) {
        pthread_mutex_lock(&w->lock);
        w->done = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
    }
}

/* A remote connection's loop, on the turn after the one that found it
 * quiet (whatever called conn_maybe_free may still use it then): hand
 * the free to the main loop, and touch it no more. */
static void conn_free_remote_cb(void *opaque)
{
    NbdConn *c = opaque;
    NbdConnWait *w = c->wait;

    c->wait = NULL;
    loop_post(c->ctx->loop, conn_free_cb, c);
    conn_wait_done(w);           /* the waiter holds off the free */
}

static void conn_maybe_free(NbdConn *c)
{
    if (c->closed && c->busy == 0 && !c->free_posted && !c->flush_posted) {
        c->free_posted = true;
        /* The server's list and the export's reference are the main
         * loop's, whichever loop the connection ran on. */
        loop_post(c->remote ? c->loop : c->ctx->loop,
                  c->remote ? conn_free_remote_cb : conn_free_cb, c);
    }
}

/* Main loop: the half of a close that touches what the main loop owns
 * (the export's client count, events, the server's counts). */
static void conn_closed_main(NbdConn *c)
{
    if (c->main_closed) {
        return;
    }
    c->main_closed = true;
    if (c->exp) {
        c->exp->nconns--;
        if (c->announced) {
            c->announced = false;
            qapi_event_send_nbd_export_client_disconnected(
                c->ctx->events, c->exp->id, c->peer,
                c->tls_identity != NULL, c->tls_identity);
        }
    }
    if (c->srv) {
        nbd_server_conn_closed(c->srv, c);
    }
    if (c->on_close) {
        void (*fn)(void *, NbdConn *) = c->on_close;

        c->on_close = NULL;
        fn(c->close_opaque, c);
    }
}

static void conn_closed_main_cb(void *opaque)
{
    conn_closed_main(opaque);
}

/* Main loop: a close posted to a remote connection's loop was done. */
static void conn_close_ack_cb(void *opaque)
{
    NbdConn *c = opaque;

    c->close_posts--;
    if (c->close_posts == 0 && c->free_pending) {
        c->free_pending = false;
        conn_free_cb(c);
    }
}

/* The connection's loop: a close asked by the main loop. */
static void conn_close_remote_cb(void *opaque)
{
    NbdConn *c = opaque;

    nbd_conn_close(c);
    loop_post(c->ctx->loop, conn_close_ack_cb, c);
}

void nbd_conn_close(NbdConn *c)
{
    if (c->remote && !loop_is_current(c->loop)) {
        /* From the main loop: the owner closes it. */
        if (!c->main_closed) {
            c->close_posts++;
            loop_post(c->loop, conn_close_remote_cb, c);
        }
        return;
    }
    if (c->closed) {
        return;
    }
    c->closed = true;
    c->state = NBD_CS_DEAD;
    if (c->hs_timer) {
        loop_timer_free(c->hs_timer);
        c->hs_timer = NULL;
    }
    if (c->idle_timer) {
        loop_timer_free(c->idle_timer);
        c->idle_timer = NULL;
        c->idle_armed = false;
    }
    loop_fd_del(c->watch);
    c->watch = NULL;
    /* A reply cut short may have part of its spliced bytes in the
     * socket already: its pin goes with the others. */
    for (NbdSlot *s = c->out_head; s; s = s->next) {
        conn_keep_pin(c, s);
    }
    conn_drop_pins(c);
    xport_close(&c->xp);
    while (c->out_head) {
        NbdSlot *s = c->out_head;

        c->out_head = s->next;
        nbd_slot_put(s);
    }
    c->out_tail = NULL;
    if (c->cur) {
        NbdSlot *s = c->cur;

        c->cur = NULL;
        nbd_slot_put(s);
    }
    if (c->remote) {
        loop_post(c->ctx->loop, conn_closed_main_cb, c);
    } else {
        conn_closed_main(c);
    }
    conn_maybe_free(c);
}

/* ---- moving to an iothread ----------------------------------------------- */

/* The iothread's loop: take the connection over and carry on where the
 * main loop stopped (the GO reply may still be unsent, requests may
 * already be in the input buffer). */
static void conn_adopt_cb(void *opaque)
{
    NbdConn *c = opaque;

    c->watch = loop_fd_add(c->loop, c->xp.fd, 0, conn_fd_cb, c);
    c->idle_timer = loop_timer_new(c->loop, conn_idle_cb, c);
    nbd_conn_flush_output(c);
    if (!c->closed) {
        conn_input(c);
    }
}

/* Main loop, right after GO on an export with an iothread: stop
 * watching the connection here and hand it to the iothread's loop.
 * Nothing of it is pending on the main loop: the handshake posts
 * nothing, its time limit went at GO. */
static void conn_move(NbdConn *c)
{
    const char *name;

    c->handoff = false;
    loop_fd_del(c->watch);
    c->watch = NULL;
    loop_timer_free(c->idle_timer);
    c->idle_timer = NULL;
    c->idle_armed = false;
    c->remote = true;
    c->loop = nbd_export_next_loop(c->exp, &name);
    log_debug("nbd: client %" PRIu64 " moves to iothread '%s'", c->serial,
              name);
    loop_post(c->loop, conn_adopt_cb, c);
}

NbdExport *nbd_conn_export(const NbdConn *c)
{
    return c->exp;
}

bool nbd_conn_closed(const NbdConn *c)
{
    return c->remote ? c->main_closed : c->closed;
}

void nbd_conn_forget_export(NbdConn *c, const NbdExport *exp)
{
    /* A remote connection is in transmission: its selection stays its
     * own (and its loop's). */
    if (!c->remote && c->meta_exp == exp) {
        nbd_conn_meta_clear(c);
    }
}

/* Main loop: close a remote connection on its loop and wait until it
 * has nothing in flight (its requests complete to that loop, which
 * keeps running), then do the main half of the close now. */
static void conn_quiesce_cb(void *opaque)
{
    NbdConn *c = opaque;

    if (c->free_posted) {
        /* Quiet already: its free is posted (to the main loop, which
         * waits for us, or behind us to this loop, which then finds
         * no waiter). */
        conn_wait_done(c->wait_req);
        return;
    }
    c->wait = c->wait_req;
    nbd_conn_close(c);           /* conn_free_remote_cb signals */
}

static void conn_shutdown_remote(NbdConn *c)
{
    NbdConnWait w = { .done = false };

    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    c->close_posts++;            /* the struct outlives the post */
    c->wait_req = &w;            /* read by the owner in the post */
    loop_post(c->loop, conn_quiesce_cb, c);
    pthread_mutex_lock(&w.lock);
    while (!w.done) {
        pthread_cond_wait(&w.cond, &w.lock);
    }
    pthread_mutex_unlock(&w.lock);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    c->wait_req = NULL;
    c->close_posts--;
    /* Its main half and its free are posted behind us: the first now
     * (events while the monitors are still there), then let go of the
     * export so the node closes cleanly at exit; the posted free
     * finds both done. */
    conn_closed_main(c);
    conn_release_export(c);
}

void nbd_conn_shutdown(NbdConn *c)
{
    c->srv = NULL;
    if (c->remote) {
        conn_shutdown_remote(c);
        return;
    }
    if (c->closed) {
        /* Its free is posted (or due when requests end).  The post may
         * never run if the daemon is exiting, so let go of the export
         * now when no request can still touch it. */
        if (c->busy == 0) {
            conn_release_export(c);
        }
        return;
    }
    /* Free an idle connection now rather than from a loop_post(): at
     * daemon exit the loop no longer runs, and the export's node
     * reference must be dropped so the node is closed cleanly. */
    c->free_posted = true;
    nbd_conn_close(c);
    if (c->busy == 0 && !c->flush_posted) {
        conn_free_cb(c);
    } else {
        /* Freed when its requests end, or by its posted flush. */
        c->free_posted = false;
    }
}
