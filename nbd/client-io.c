/* client-io.c - the NBD client's transmission engine.  See client-io.h.
 *
 * Everything below "I/O thread" runs on the engine's own thread and is
 * touched by no other: slots, connections, the pending and retry lists.
 * The mutex guards only the submit list, the stop flag, the up count
 * and the completion of synchronous commands.
 *
 * A command is split into pieces ("slots"): at most max_payload bytes
 * for READ/WRITE/CACHE, NBD_CLIENT_ZERO_PIECE for TRIM/WRITE_ZEROES,
 * one for FLUSH and BLOCK_STATUS.  A slot's cookie is its index in the
 * table (low 32 bits) and a generation (high 32 bits), so a reply finds
 * its slot without a search and a stale or forged cookie is refused.
 *
 * Reply checks (doc/proto.md "Structured reply chunk message types"):
 *   simple reply     success only for non-READ commands when structured
 *                    replies were negotiated; a READ's data follows it
 *                    only without them
 *   OFFSET_DATA      READ only; inside the piece; bytes so far <= length
 *   OFFSET_HOLE      READ only; exactly 12 bytes; inside the piece
 *   BLOCK_STATUS(_EXT) BLOCK_STATUS only, the compact or extended form
 *                    as negotiated, once per context; our context id
 *   ERROR(_OFFSET)   any command; the offset inside the piece; the
 *                    first error is the command's
 *   NONE             with DONE only
 * A successful READ whose chunks do not add up to its length fails
 * with -EIO (the stream is still in sync; chunks that overlap and leave
 * a gap of the same size are not detected).
 */
#include "nbd/client-io.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "nbd/client-tls.h"
#include "nbd/proto.h"
#include "util/log.h"
#include "util/util.h"

#define NBDC_MAX_SLOTS      1024     /* pieces in flight per engine */
#define NBDC_MAX_CONNS      16
#define NBDC_ZERO_PIECE     (1u << 30)   /* TRIM/WRITE_ZEROES piece */
/* Largest non-data chunk payload we take: a block status chunk of
 * NBD_MAX_EXTENTS extended descriptors, or an error with its message. */
#define NBDC_MAX_CHUNK      (8 + 16 * (size_t)NBD_MAX_EXTENTS)
#define NBDC_RBUF_SIZE      (64 * 1024)
#define NBDC_BACKOFF_MIN_US 50000
#define NBDC_BACKOFF_MAX_US 1000000

typedef enum SlotState {
    SLOT_FREE,
    SLOT_RETRY,                 /* waiting to be sent again */
    SLOT_SENT,                  /* on a connection's queue or sent */
} SlotState;

typedef struct NbdcSlot {
    NbdcCmd *cmd;
    uint32_t gen;
    SlotState state;
    int conn;                   /* index while SENT */
    uint64_t offset, length;    /* this piece */
    uint8_t *buf;               /* READ/WRITE: the piece's bytes */
    uint64_t got;               /* READ: data + hole bytes received */
    int err;                    /* first error chunk, -errno */
    bool got_status;
    uint64_t deadline_us;       /* lost once: fail with EIO after this
                                 * (monotonic µs); 0 = never lost */
    unsigned losses;            /* connections it was lost with */
    bool sending;               /* still on the send queue */
    bool answered;              /* replied (err) while still sending: a
                                 * server may refuse a write before it
                                 * has drained the payload */
    struct NbdcSlot *next;      /* free list, retry list, send queue */
} NbdcSlot;

typedef enum InState {
    IN_HDR,                     /* reading a reply header */
    IN_DATA,                    /* reading data into a slot's buffer */
    IN_PAYLOAD,                 /* reading a chunk payload into pl */
} InState;

/* How a connection moves bytes once the engine has it: the socket
 * itself, or the TLS stream the handshake left (client-tls.h).  Both
 * never wait: > 0 bytes, 0 on EOF (recv), -EAGAIN, -errno. */
typedef struct NbdcIo {
    ssize_t (*recv)(NbdClientXport *xp, void *buf, size_t len);
    ssize_t (*sendv)(NbdClientXport *xp, const struct iovec *iov,
                     int iovcnt);
    /* Bytes already received that poll() cannot see; NULL: none. */
    size_t (*pending)(NbdClientXport *xp);
} NbdcIo;

typedef struct NbdcConn {
    NbdcLink link;
    const NbdcIo *io;
    bool up;
    unsigned inflight;          /* SENT slots on this connection */
    /* output: a queue of slots; the head is being written */
    NbdcSlot *out_head, *out_tail;
    uint8_t out_hdr[NBD_EXT_REQ_SIZE];
    size_t out_hdr_len, out_pos;    /* bytes of hdr + payload written */
    /* input */
    InState in;
    uint8_t hdr_buf[NBD_MAX_CHUNK_HDR_SIZE];
    size_t have, need;
    NbdReplyHdr hdr;
    NbdcSlot *slot;             /* the reply's slot */
    uint8_t *dst;               /* IN_DATA */
    uint64_t left;
    bool data_chunk;            /* IN_DATA belongs to an OFFSET_DATA */
    uint8_t *pl;                /* IN_PAYLOAD buffer */
    size_t pl_cap, pl_len;
    /* What recv() brought and the states above did not take yet: many
     * small replies per system call.  Big data goes straight to the
     * request's buffer. */
    uint8_t *rbuf;              /* NBDC_RBUF_SIZE bytes */
    size_t rpos, rlen;
    /* reconnect */
    bool refused_logged;        /* a changed export was logged */
    uint64_t next_try_us;
    uint64_t backoff_us;
} NbdcConn;

struct NbdcEngine {
    char *name;
    NbdcConfig cfg;
    uint64_t size;
    uint16_t flags;
    bool has_context;
    unsigned nconns;
    NbdcConn conns[NBDC_MAX_CONNS];
    NbdcSlot slots[NBDC_MAX_SLOTS];
    NbdcSlot *free_slots;
    NbdcSlot *retry_head, *retry_tail;
    NbdcCmd *pending_head, *pending_tail;   /* not fully split */
    bool all_up;                /* last state told (state callback) */
    uint64_t deadline_us;       /* while none is up: fail waiting ones */
    bool fail_fast;             /* none up, delay over */
    pthread_t thread;
    int efd;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    NbdcCmd *submit_head, *submit_tail;     /* lock */
    bool stop;                  /* lock */
    bool abort;                 /* lock: nbdc_engine_abort() asked */
    NbdcCmd *abort_last;        /* lock: the last command submitted
                                 * before it (NULL: none waiting) */
    bool stopped;               /* lock: the thread is gone */
    bool joined;                /* nbdc_engine_stop() is over */
    unsigned up;                /* lock (written by the I/O thread) */
};

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* An NBD error from the wire as a -errno. */
static int nbdc_errno(uint32_t err)
{
    switch (err) {
    case NBD_EPERM:
    case NBD_EIO:
    case NBD_ENOMEM:
    case NBD_EINVAL:
    case NBD_ENOSPC:
    case NBD_EOVERFLOW:
    case NBD_ENOTSUP:
    case NBD_ESHUTDOWN:
        return -(int)err;
    default:
        return -EIO;
    }
}

/* ---- commands ------------------------------------------------------ */

static void cmd_complete(NbdcEngine *e, NbdcCmd *cmd, int ret)
{
    cmd->ret = ret;
    if (cmd->done != NULL) {
        cmd->done(cmd);
        return;
    }
    pthread_mutex_lock(&e->lock);
    cmd->completed = true;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

/* One piece of cmd is over with ret; the last one completes it. */
static void cmd_piece_done(NbdcEngine *e, NbdcCmd *cmd, int ret)
{
    if (ret < 0 && cmd->err == 0) {
        cmd->err = ret;
    }
    cmd->pieces--;
    if (cmd->pieces == 0 && cmd->split == cmd->length) {
        cmd_complete(e, cmd, cmd->err);
    }
}

/* The most bytes one piece of cmd may cover. */
static uint64_t cmd_piece_max(const NbdcEngine *e, const NbdcCmd *cmd)
{
    switch (cmd->type) {
    case NBD_CMD_READ:
    case NBD_CMD_WRITE:
    case NBD_CMD_CACHE:
        return e->cfg.max_payload;
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
        return NBDC_ZERO_PIECE;
    default:
        return UINT64_MAX;      /* FLUSH, BLOCK_STATUS: one piece */
    }
}

/* ---- slots ---------------------------------------------------------- */

static NbdcSlot *slot_alloc(NbdcEngine *e)
{
    NbdcSlot *s = e->free_slots;

    if (s != NULL) {
        e->free_slots = s->next;
        s->next = NULL;
    }
    return s;
}

static void slot_free(NbdcEngine *e, NbdcSlot *s)
{
    s->state = SLOT_FREE;
    s->answered = false;
    s->cmd = NULL;
    s->gen++;
    s->next = e->free_slots;
    e->free_slots = s;
}

static uint64_t slot_cookie(const NbdcEngine *e, const NbdcSlot *s)
{
    return ((uint64_t)s->gen << 32) | (uint64_t)(s - e->slots);
}

static void retry_push(NbdcEngine *e, NbdcSlot *s)
{
    s->state = SLOT_RETRY;
    s->next = NULL;
    if (e->retry_tail != NULL) {
        e->retry_tail->next = s;
    } else {
        e->retry_head = s;
    }
    e->retry_tail = s;
}

static NbdcSlot *retry_pop(NbdcEngine *e)
{
    NbdcSlot *s = e->retry_head;

    if (s != NULL) {
        e->retry_head = s->next;
        if (e->retry_head == NULL) {
            e->retry_tail = NULL;
        }
        s->next = NULL;
    }
    return s;
}

/* A piece is answered: complete it and free the slot. */
static void slot_finish(NbdcEngine *e, NbdcConn *c, NbdcSlot *s, int ret)
{
    NbdcCmd *cmd = s->cmd;

    if (s->sending) {
        /* Completed when the rest of it is written (conn_send). */
        s->answered = true;
        s->err = ret;
        return;
    }

    c->inflight--;
    slot_free(e, s);
    cmd_piece_done(e, cmd, ret);
}

/* ---- connections ---------------------------------------------------- */

static void engine_set_up(NbdcEngine *e, int delta)
{
    pthread_mutex_lock(&e->lock);
    e->up = (unsigned)((int)e->up + delta);
    pthread_mutex_unlock(&e->lock);
}

static void conn_reset_io(NbdcConn *c)
{
    c->out_head = c->out_tail = NULL;
    c->out_pos = c->out_hdr_len = 0;
    c->in = IN_HDR;
    c->have = 0;
    c->need = 4;
    c->slot = NULL;
    c->inflight = 0;
    c->rpos = c->rlen = 0;
}

/* Connection idx is gone (reason for the log and the event): its
 * pieces go back for a resend; a reconnect is scheduled at once. */
static void conn_lost_why(NbdcEngine *e, unsigned idx, const char *reason,
                          bool violation);

static void conn_lost(NbdcEngine *e, unsigned idx, const char *reason)
{
    conn_lost_why(e, idx, reason, false);
}

/* A connection that died of a protocol violation is tried again only
 * after the back-off (the server will likely do it again); one that was
 * simply lost at once.  Each piece in flight on it may be resent until
 * reconnect_delay seconds after its first loss, and in any case until
 * it was lost once per connection (multi-conn: another connection gets
 * it even with reconnect_delay 0); then it fails with EIO, so a server
 * that breaks the protocol on every attempt cannot keep a request
 * going forever. */
static void conn_lost_why(NbdcEngine *e, unsigned idx, const char *reason,
                          bool violation)
{
    NbdcConn *c = &e->conns[idx];
    uint64_t now = now_us();
    unsigned live = 0;

    if (!c->up) {
        return;
    }
    log_warn("nbd '%s': connection %u lost: %s", e->name, idx, reason);
    c->up = false;
    c->link.xp.ops->close(&c->link.xp);
    engine_set_up(e, -1);
    for (size_t i = 0; i < NBDC_MAX_SLOTS; i++) {
        NbdcSlot *s = &e->slots[i];
        if (s->state == SLOT_SENT && s->conn == (int)idx && s->answered) {
            NbdcCmd *cmd = s->cmd;
            int ret = s->err;
            slot_free(e, s);
            cmd_piece_done(e, cmd, ret);
        } else if (s->state == SLOT_SENT && s->conn == (int)idx) {
            s->got = 0;
            s->err = 0;
            s->got_status = false;
            s->sending = false;
            if (s->deadline_us == 0) {
                s->deadline_us = now +
                    (uint64_t)e->cfg.reconnect_delay * 1000000u;
            }
            s->losses++;
            retry_push(e, s);
        }
    }
    conn_reset_io(c);
    if (violation) {
        c->next_try_us = now + c->backoff_us;
        c->backoff_us = MIN(c->backoff_us * 2,
                            (uint64_t)NBDC_BACKOFF_MAX_US);
    } else {
        c->next_try_us = now;
        c->backoff_us = NBDC_BACKOFF_MIN_US;
    }
    for (unsigned i = 0; i < e->nconns; i++) {
        live += e->conns[i].up;
    }
    if (live == 0) {
        e->deadline_us = now + (uint64_t)e->cfg.reconnect_delay * 1000000u;
    }
    if (e->all_up) {
        e->all_up = false;
        if (e->cfg.state != NULL) {
            e->cfg.state(e->cfg.opaque, false, reason);
        }
    }
}

static ssize_t plain_recv(NbdClientXport *xp, void *buf, size_t len)
{
    ssize_t n = recv(xp->fd, buf, len, MSG_DONTWAIT);

    return n >= 0 ? n : errno == EINTR ? -EAGAIN : -errno;
}

static ssize_t plain_sendv(NbdClientXport *xp, const struct iovec *iov,
                           int iovcnt)
{
    ssize_t n = sendmsg(xp->fd, &(struct msghdr) {
                            .msg_iov = (struct iovec *)iov,
                            .msg_iovlen = (size_t)iovcnt },
                        MSG_NOSIGNAL | MSG_DONTWAIT);

    return n >= 0 ? n : errno == EINTR ? -EAGAIN : -errno;
}

static const NbdcIo plain_io = {
    .recv = plain_recv,
    .sendv = plain_sendv,
};

static const NbdcIo tls_io = {
    .recv = nbd_client_xport_tls_recv,
    .sendv = nbd_client_xport_tls_sendv,
    .pending = nbd_client_xport_tls_pending,
};

/* Take a link for connection idx: non-blocking from now on. */
static void conn_attach(NbdcEngine *e, unsigned idx, const NbdcLink *link)
{
    NbdcConn *c = &e->conns[idx];
    int fl = fcntl(link->xp.fd, F_GETFL);

    c->link = *link;
    c->io = &plain_io;
    if (nbd_client_xport_tls_session(&c->link.xp) != NULL) {
        c->io = &tls_io;
        nbd_client_xport_tls_moved(&c->link.xp);
        nbd_client_xport_tls_set_nonblocking(&c->link.xp, true);
    }
    if (c->rbuf == NULL) {
        c->rbuf = xmalloc(NBDC_RBUF_SIZE);
    }
    if (fl >= 0) {
        fcntl(link->xp.fd, F_SETFL, fl | O_NONBLOCK);
    }
    conn_reset_io(c);
    c->up = true;
    if (c->backoff_us == 0) {
        c->backoff_us = NBDC_BACKOFF_MIN_US;
    }
    engine_set_up(e, 1);
}

/* ---- sending -------------------------------------------------------- */

static void conn_queue(NbdcEngine *e, unsigned idx, NbdcSlot *s)
{
    NbdcConn *c = &e->conns[idx];

    s->state = SLOT_SENT;
    s->conn = (int)idx;
    s->sending = true;
    s->next = NULL;
    if (c->out_tail != NULL) {
        c->out_tail->next = s;
    } else {
        c->out_head = s;
        c->out_pos = c->out_hdr_len = 0;
    }
    c->out_tail = s;
    c->inflight++;
}

/* The live connection with the fewest pieces in flight, or -1. */
static int pick_conn(const NbdcEngine *e)
{
    int best = -1;

    for (unsigned i = 0; i < e->nconns; i++) {
        if (e->conns[i].up &&
            (best < 0 || e->conns[i].inflight < e->conns[best].inflight)) {
            best = (int)i;
        }
    }
    return best;
}

/* Give queued work to connections: retries first, then new pieces. */
static void dispatch(NbdcEngine *e)
{
    for (;;) {
        int idx = pick_conn(e);
        NbdcSlot *s;
        NbdcCmd *cmd;
        uint64_t n;

        if (idx < 0) {
            return;
        }
        s = retry_pop(e);
        if (s != NULL) {
            conn_queue(e, (unsigned)idx, s);
            continue;
        }
        cmd = e->pending_head;
        if (cmd == NULL) {
            return;
        }
        s = slot_alloc(e);
        if (s == NULL) {
            return;             /* every cookie in flight: wait */
        }
        n = MIN(cmd->length - cmd->split, cmd_piece_max(e, cmd));
        s->cmd = cmd;
        s->offset = cmd->offset + cmd->split;
        s->length = n;
        s->buf = cmd->buf != NULL ? (uint8_t *)cmd->buf + cmd->split : NULL;
        s->got = 0;
        s->err = 0;
        s->got_status = false;
        s->deadline_us = 0;
        s->losses = 0;
        cmd->split += n;
        cmd->pieces++;
        if (cmd->split == cmd->length) {
            e->pending_head = cmd->next;
            if (e->pending_head == NULL) {
                e->pending_tail = NULL;
            }
            cmd->next = NULL;
        }
        conn_queue(e, (unsigned)idx, s);
    }
}

/* Write what connection idx can take now.  False: the connection
 * failed (already handled). */
static bool conn_send(NbdcEngine *e, unsigned idx)
{
    NbdcConn *c = &e->conns[idx];

    while (c->out_head != NULL) {
        NbdcSlot *s = c->out_head;
        NbdcCmd *cmd = s->cmd;
        uint64_t payload = cmd->type == NBD_CMD_WRITE ? s->length : 0;
        struct iovec iov[2];
        int iovcnt = 0;
        ssize_t n;

        if (c->out_hdr_len == 0) {
            /* Extended headers: a write says its payload length
             * (doc/proto.md "NBD_CMD_FLAG_PAYLOAD_LEN"). */
            uint16_t flags = cmd->flags;
            if (c->link.extended && cmd->type == NBD_CMD_WRITE) {
                flags |= NBD_CMD_FLAG_PAYLOAD_LEN;
            }
            NbdRequest r = {
                .flags = flags, .type = cmd->type,
                .cookie = slot_cookie(e, s), .offset = s->offset,
                .length = s->length,
            };
            c->out_hdr_len = nbd_encode_request(c->out_hdr,
                                                c->link.extended, &r);
            c->out_pos = 0;
        }
        if (c->out_pos < c->out_hdr_len) {
            iov[iovcnt].iov_base = c->out_hdr + c->out_pos;
            iov[iovcnt++].iov_len = c->out_hdr_len - c->out_pos;
        }
        if (payload > 0) {
            size_t done = c->out_pos > c->out_hdr_len
                          ? c->out_pos - c->out_hdr_len : 0;
            iov[iovcnt].iov_base = s->buf + done;
            iov[iovcnt++].iov_len = payload - done;
        }
        n = c->io->sendv(&c->link.xp, iov, iovcnt);
        if (n < 0) {
            if (n == -EAGAIN) {
                return true;
            }
            conn_lost(e, idx, strerror((int)-n));
            return false;
        }
        c->out_pos += (size_t)n;
        if (c->out_pos < c->out_hdr_len + payload) {
            continue;
        }
        c->out_head = s->next;
        if (c->out_head == NULL) {
            c->out_tail = NULL;
        }
        s->next = NULL;
        s->sending = false;
        c->out_hdr_len = c->out_pos = 0;
        if (s->answered) {
            slot_finish(e, c, s, s->err);
        }
    }
    return true;
}

/* ---- receiving ------------------------------------------------------ */

/* A protocol violation: log it and drop the connection. */
static void violation(NbdcEngine *e, unsigned idx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void violation(NbdcEngine *e, unsigned idx, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    char *reason;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    reason = xasprintf("protocol violation: %s", msg);
    log_error("nbd '%s': server %s", e->name, reason);
    conn_lost_why(e, idx, reason, true);
    free(reason);
    free(msg);
}

/* Is [off, off+len) inside the slot's piece? */
static bool in_piece(const NbdcSlot *s, uint64_t off, uint64_t len)
{
    return off >= s->offset && len <= s->length &&
           off - s->offset <= s->length - len;
}

/* The reply or chunk is over: DONE completes the piece. */
static void reply_end(NbdcEngine *e, unsigned idx, bool done)
{
    NbdcConn *c = &e->conns[idx];
    NbdcSlot *s = c->slot;
    int ret = s->err;

    c->in = IN_HDR;
    c->have = 0;
    c->need = 4;
    c->slot = NULL;
    if (!done) {
        return;
    }
    c->backoff_us = NBDC_BACKOFF_MIN_US;   /* the server behaves */
    if (ret == 0 && s->cmd->type == NBD_CMD_READ && s->got != s->length) {
        log_error("nbd '%s': server read reply covers %" PRIu64 " of %"
                  PRIu64 " bytes", e->name, s->got, s->length);
        ret = -EIO;
    }
    if (ret == 0 && s->cmd->type == NBD_CMD_BLOCK_STATUS && !s->got_status) {
        log_error("nbd '%s': server block status reply has no extent",
                  e->name);
        ret = -EIO;
    }
    slot_finish(e, c, s, ret);
}

/* A complete non-data chunk payload is in c->pl.  False: violation
 * (handled). */
static bool chunk_payload(NbdcEngine *e, unsigned idx)
{
    NbdcConn *c = &e->conns[idx];
    NbdcSlot *s = c->slot;
    const NbdReplyHdr *h = &c->hdr;
    uint16_t type = h->type;
    bool ext = c->link.extended;

    if (type == NBD_REPLY_TYPE_OFFSET_DATA) {
        uint64_t off, dlen;
        if (!nbd_decode_offset_data_hdr(c->pl, c->pl_len, h->length, &off,
                                        &dlen) ||
            !in_piece(s, off, dlen) || s->got + dlen > s->length) {
            violation(e, idx, "data chunk outside the read request");
            return false;
        }
        s->got += dlen;
        c->in = IN_DATA;
        c->dst = s->buf + (off - s->offset);
        c->left = dlen;
        c->data_chunk = true;
        return true;
    }
    if (type == NBD_REPLY_TYPE_OFFSET_HOLE) {
        NbdChunkHole hole;
        if (!nbd_decode_offset_hole(c->pl, c->pl_len, &hole) ||
            !in_piece(s, hole.offset, hole.length) ||
            s->got + hole.length > s->length) {
            violation(e, idx, "hole chunk outside the read request");
            return false;
        }
        memset(s->buf + (hole.offset - s->offset), 0, hole.length);
        s->got += hole.length;
    } else if (type == NBD_REPLY_TYPE_BLOCK_STATUS ||
               type == NBD_REPLY_TYPE_BLOCK_STATUS_EXT) {
        NbdBlockStatus bst;
        NbdExtent ext0;
        if (!nbd_decode_block_status(c->pl, c->pl_len, ext, &bst)) {
            violation(e, idx, "malformed block status chunk");
            return false;
        }
        if (!c->link.has_context || bst.context_id != c->link.context_id) {
            violation(e, idx, "block status for unknown context %u",
                      bst.context_id);
            return false;
        }
        if (s->got_status) {
            violation(e, idx, "second block status chunk for a context");
            return false;
        }
        nbd_block_status_extent(c->pl, ext, 0, &ext0);
        s->got_status = true;
        /* REQ_ONE: the first extent; one past the request is clamped. */
        s->cmd->status_length = MIN(ext0.length, s->length);
        s->cmd->status_flags = (uint32_t)ext0.flags;
    } else if (NBD_REPLY_TYPE_IS_ERR(type)) {
        NbdChunkError ce;
        if (!nbd_decode_chunk_error(c->pl, c->pl_len, type, &ce)) {
            violation(e, idx, "malformed error chunk");
            return false;
        }
        if (type == NBD_REPLY_TYPE_ERROR_OFFSET &&
            !in_piece(s, ce.offset, 1)) {
            violation(e, idx, "error offset outside the request");
            return false;
        }
        log_debug("nbd '%s': server error %u for %s: %.*s", e->name,
                  ce.error, nbd_cmd_name(s->cmd->type), (int)ce.msg.len,
                  ce.msg.ptr != NULL ? ce.msg.ptr : "");
        if (s->err == 0) {
            s->err = nbdc_errno(ce.error);
        }
    }
    reply_end(e, idx, (h->flags & NBD_REPLY_FLAG_DONE) != 0);
    return true;
}

/* Check a chunk type against the request and the negotiated mode, and
 * prepare to read its payload.  False: violation (handled). */
static bool chunk_start(NbdcEngine *e, unsigned idx)
{
    NbdcConn *c = &e->conns[idx];
    NbdcSlot *s = c->slot;
    const NbdReplyHdr *h = &c->hdr;
    uint16_t cmdtype = s->cmd->type;
    uint64_t max;

    switch (h->type) {
    case NBD_REPLY_TYPE_NONE:
        reply_end(e, idx, true);   /* the decoder checked DONE, len 0 */
        return true;
    case NBD_REPLY_TYPE_OFFSET_DATA:
        if (cmdtype != NBD_CMD_READ) {
            violation(e, idx, "data chunk for %s", nbd_cmd_name(cmdtype));
            return false;
        }
        if (h->length <= NBD_OFFSET_DATA_HDR_SIZE ||
            h->length - NBD_OFFSET_DATA_HDR_SIZE > s->length) {
            violation(e, idx, "data chunk of %" PRIu64 " bytes for a read "
                      "of %" PRIu64, h->length, s->length);
            return false;
        }
        max = NBD_OFFSET_DATA_HDR_SIZE;   /* the offset, then the data */
        break;
    case NBD_REPLY_TYPE_OFFSET_HOLE:
        if (cmdtype != NBD_CMD_READ || h->length != NBD_OFFSET_HOLE_SIZE) {
            violation(e, idx, "bad hole chunk");
            return false;
        }
        max = h->length;
        break;
    case NBD_REPLY_TYPE_BLOCK_STATUS:
    case NBD_REPLY_TYPE_BLOCK_STATUS_EXT:
        if (cmdtype != NBD_CMD_BLOCK_STATUS ||
            (h->type == NBD_REPLY_TYPE_BLOCK_STATUS_EXT) !=
            c->link.extended || h->length > NBDC_MAX_CHUNK) {
            violation(e, idx, "bad block status chunk");
            return false;
        }
        max = h->length;
        break;
    default:
        if (!NBD_REPLY_TYPE_IS_ERR(h->type)) {
            violation(e, idx, "unknown chunk type %u", h->type);
            return false;
        }
        if (h->length > 6 + NBD_MAX_STRING + 8) {
            violation(e, idx, "error chunk of %" PRIu64 " bytes",
                      h->length);
            return false;
        }
        max = h->length;
        break;
    }
    if (max > c->pl_cap) {
        c->pl = xrealloc(c->pl, max);
        c->pl_cap = max;
    }
    c->pl_len = max;
    c->in = IN_PAYLOAD;
    c->have = 0;
    if (max == 0) {
        return chunk_payload(e, idx);
    }
    return true;
}

/* A complete reply header is in hdr_buf. */
static bool reply_header(NbdcEngine *e, unsigned idx)
{
    NbdcConn *c = &e->conns[idx];
    NbdReplyHdr *h = &c->hdr;
    uint64_t cookie;
    uint32_t slot_idx;
    NbdcSlot *s;

    if (!nbd_decode_reply_hdr(c->hdr_buf, c->have, c->link.structured,
                              c->link.extended, h)) {
        violation(e, idx, "malformed reply header (magic 0x%08x)",
                  get_be32(c->hdr_buf));
        return false;
    }
    cookie = h->cookie;
    slot_idx = (uint32_t)cookie;
    s = slot_idx < NBDC_MAX_SLOTS ? &e->slots[slot_idx] : NULL;
    if (s == NULL || s->state != SLOT_SENT || s->conn != (int)idx ||
        s->gen != (uint32_t)(cookie >> 32)) {
        violation(e, idx, "reply for unknown cookie 0x%" PRIx64, cookie);
        return false;
    }
    if (s->answered) {
        violation(e, idx, "second reply for cookie 0x%" PRIx64, cookie);
        return false;
    }
    c->slot = s;
    if (h->magic != NBD_SIMPLE_REPLY_MAGIC) {
        return chunk_start(e, idx);
    }
    if (h->error != 0) {
        s->err = nbdc_errno(h->error);
        reply_end(e, idx, true);
        return true;
    }
    if (s->cmd->type == NBD_CMD_READ) {
        if (c->link.structured) {
            violation(e, idx, "simple reply with data to a read");
            return false;
        }
        s->got = s->length;
        c->in = IN_DATA;
        c->dst = s->buf;
        c->left = s->length;
        c->data_chunk = false;
        return true;
    }
    if (s->cmd->type == NBD_CMD_BLOCK_STATUS) {
        violation(e, idx, "simple reply to block status");
        return false;
    }
    reply_end(e, idx, true);
    return true;
}

/* Read what connection idx has.  False: the connection failed. */
static bool conn_recv(NbdcEngine *e, unsigned idx)
{
    NbdcConn *c = &e->conns[idx];

    for (;;) {
        uint8_t *dst;
        size_t want;
        ssize_t n;

        switch (c->in) {
        case IN_HDR:
            dst = c->hdr_buf + c->have;
            want = c->need - c->have;
            break;
        case IN_DATA:
            dst = c->dst;
            want = (size_t)MIN(c->left, (uint64_t)SSIZE_MAX);
            break;
        default:
            dst = c->pl + c->have;
            want = c->pl_len - c->have;
            break;
        }
        if (c->rpos < c->rlen) {
            n = (ssize_t)MIN(want, c->rlen - c->rpos);
            memcpy(dst, c->rbuf + c->rpos, (size_t)n);
            c->rpos += (size_t)n;
        } else {
            bool direct = c->in == IN_DATA && want >= NBDC_RBUF_SIZE / 2;

            n = c->io->recv(&c->link.xp, direct ? dst : c->rbuf,
                            direct ? want : NBDC_RBUF_SIZE);
            if (n == 0) {
                conn_lost(e, idx, "server closed the connection");
                return false;
            }
            if (n < 0) {
                if (n == -EAGAIN) {
                    return true;
                }
                conn_lost(e, idx, strerror((int)-n));
                return false;
            }
            if (!direct) {
                c->rpos = 0;
                c->rlen = (size_t)n;
                continue;
            }
        }
        switch (c->in) {
        case IN_HDR:
            c->have += (size_t)n;
            if (c->have < c->need) {
                break;
            }
            if (c->need == 4) {
                c->need = nbd_reply_hdr_size(c->hdr_buf, 4);
                if (c->need == 0) {
                    violation(e, idx, "unknown reply magic 0x%08x",
                              get_be32(c->hdr_buf));
                    return false;
                }
                break;
            }
            if (!reply_header(e, idx)) {
                return false;
            }
            break;
        case IN_DATA:
            c->dst += n;
            c->left -= (uint64_t)n;
            if (c->left == 0) {
                reply_end(e, idx, !c->data_chunk ||
                          (c->hdr.flags & NBD_REPLY_FLAG_DONE) != 0);
            }
            break;
        default:
            c->have += (size_t)n;
            if (c->have == c->pl_len && !chunk_payload(e, idx)) {
                return false;
            }
            break;
        }
    }
}

/* ---- the I/O thread ------------------------------------------------- */

static void fail_waiting(NbdcEngine *e)
{
    NbdcSlot *s;
    NbdcCmd *cmd;

    /* Commands not fully split first: those with pieces waiting below
     * are completed by them. */
    while ((cmd = e->pending_head) != NULL) {
        e->pending_head = cmd->next;
        cmd->next = NULL;
        if (cmd->pieces > 0) {
            cmd->err = cmd->err != 0 ? cmd->err : -EIO;
            cmd->split = cmd->length;
        } else {
            cmd_complete(e, cmd, -EIO);
        }
    }
    e->pending_tail = NULL;
    while ((s = retry_pop(e)) != NULL) {
        NbdcCmd *c = s->cmd;
        slot_free(e, s);
        cmd_piece_done(e, c, -EIO);
    }
}

/* Fail the pieces waiting for a resend past their deadline; returns
 * the earliest deadline still pending (UINT64_MAX: none). */
static uint64_t expire_retries(NbdcEngine *e, uint64_t now)
{
    NbdcSlot *keep_head = NULL, *keep_tail = NULL, *s;
    uint64_t next = UINT64_MAX;

    while ((s = retry_pop(e)) != NULL) {
        if (s->deadline_us != 0 && s->deadline_us <= now &&
            s->losses >= e->nconns) {
            NbdcCmd *cmd = s->cmd;
            slot_free(e, s);
            cmd_piece_done(e, cmd, -EIO);
            continue;
        }
        if (s->deadline_us != 0) {
            next = MIN(next, s->deadline_us);
        }
        if (keep_tail != NULL) {
            keep_tail->next = s;
        } else {
            keep_head = s;
        }
        keep_tail = s;
    }
    e->retry_head = keep_head;
    e->retry_tail = keep_tail;
    return next;
}

/* Try connection idx again. */
static void conn_retry(NbdcEngine *e, unsigned idx)
{
    NbdcConn *c = &e->conns[idx];
    NbdcLink link = { 0 };
    Error *err = NULL;
    bool all = true;

    if (!e->cfg.connect(e->cfg.opaque, idx, &link, &err)) {
        log_debug("nbd '%s': reconnect %u: %s", e->name, idx,
                  error_get_pretty(err));
        error_free(err);
        goto backoff;
    }
    if (link.size != e->size || link.flags != e->flags ||
        link.has_context != e->has_context) {
        /* Once per outage: the attempts go on every second. */
        if (!c->refused_logged) {
            log_error("nbd '%s': reconnect refused: the export changed "
                      "(size %" PRIu64 " -> %" PRIu64 ", flags 0x%x -> "
                      "0x%x)", e->name, e->size, link.size, e->flags,
                      link.flags);
            c->refused_logged = true;
        }
        link.xp.ops->close(&link.xp);
        goto backoff;
    }
    conn_attach(e, idx, &link);
    c->refused_logged = false;
    log_info("nbd '%s': connection %u re-established", e->name, idx);
    e->fail_fast = false;
    for (unsigned i = 0; i < e->nconns; i++) {
        all = all && e->conns[i].up;
    }
    if (all && !e->all_up) {
        e->all_up = true;
        if (e->cfg.state != NULL) {
            e->cfg.state(e->cfg.opaque, true, "reconnected");
        }
    }
    return;

backoff:
    c->next_try_us = now_us() + c->backoff_us;
    c->backoff_us = MIN(c->backoff_us * 2, (uint64_t)NBDC_BACKOFF_MAX_US);
}

/* Whether any piece or command is queued or in flight (I/O thread). */
static bool engine_busy(const NbdcEngine *e)
{
    if (e->pending_head != NULL || e->retry_head != NULL) {
        return true;
    }
    for (size_t i = 0; i < NBDC_MAX_SLOTS; i++) {
        if (e->slots[i].state != SLOT_FREE) {
            return true;
        }
    }
    return false;
}

static void list_append_pending(NbdcEngine *e, NbdcCmd *cmd)
{
    if (e->pending_tail != NULL) {
        e->pending_tail->next = cmd;
    } else {
        e->pending_head = cmd;
    }
    e->pending_tail = cmd;
}

/* nbdc_engine_abort() on the I/O thread: the connections go (their
 * pieces back to the retry list, the sockets closed: nothing can land
 * in a buffer after this), then everything waiting fails with -EIO.
 * Reconnects wait for the back-off, as after a protocol violation. */
static void engine_abort(NbdcEngine *e)
{
    if (!engine_busy(e)) {
        return;
    }
    log_warn("nbd '%s': requests aborted, connections dropped", e->name);
    for (unsigned i = 0; i < e->nconns; i++) {
        conn_lost_why(e, i, "requests aborted", true);
    }
    fail_waiting(e);
}

/* Move submitted commands to the pending list (or fail them).  An
 * abort asked for runs once the commands submitted before it are
 * pending, so it fails those and not the ones submitted after it.
 * Returns whether the engine stops. */
static bool take_submitted(NbdcEngine *e)
{
    NbdcCmd *list, *abort_last;
    bool stop, abort_now;
    uint64_t junk;

    if (read(e->efd, &junk, sizeof(junk)) < 0) {
        /* EAGAIN: nothing was signalled */
    }
    pthread_mutex_lock(&e->lock);
    list = e->submit_head;
    e->submit_head = e->submit_tail = NULL;
    stop = e->stop;
    abort_now = e->abort;
    abort_last = e->abort_last;
    e->abort = false;
    e->abort_last = NULL;
    pthread_mutex_unlock(&e->lock);
    if (abort_now && !stop && abort_last == NULL) {
        engine_abort(e);
        abort_now = false;
    }
    while (list != NULL) {
        NbdcCmd *cmd = list;
        list = cmd->next;
        cmd->next = NULL;
        if (cmd == abort_last && abort_now && !stop) {
            abort_now = false;
            list_append_pending(e, cmd);
            engine_abort(e);
            continue;
        }
        if (e->fail_fast || stop) {
            cmd_complete(e, cmd, -EIO);
            continue;
        }
        list_append_pending(e, cmd);
    }
    return stop;
}

static void *engine_thread(void *opaque)
{
    NbdcEngine *e = opaque;
    struct pollfd pfd[NBDC_MAX_CONNS + 1];
    int map[NBDC_MAX_CONNS + 1];

    for (;;) {
        uint64_t now = now_us(), wake = UINT64_MAX;
        unsigned live = 0;
        int npfd = 0, timeout;
        bool pending = false;

        if (take_submitted(e)) {
            break;
        }
        /* The delay is checked before a reconnect is tried, so with
         * reconnect-delay 0 what was waiting fails at once. */
        for (unsigned i = 0; i < e->nconns; i++) {
            live += e->conns[i].up;
        }
        if (live == 0 && !e->fail_fast && now >= e->deadline_us) {
            e->fail_fast = true;
            log_warn("nbd '%s': no connection; requests fail until the "
                     "server is back", e->name);
        }
        if (live == 0 && e->fail_fast) {
            fail_waiting(e);
        }
        wake = expire_retries(e, now);
        live = 0;
        for (unsigned i = 0; i < e->nconns; i++) {
            NbdcConn *c = &e->conns[i];
            if (!c->up && e->cfg.connect != NULL && c->next_try_us <= now) {
                conn_retry(e, i);
                now = now_us();
            }
            live += c->up;
        }
        if (live == 0 && !e->fail_fast) {
            wake = MIN(wake, e->deadline_us);
        }
        dispatch(e);

        pfd[npfd].fd = e->efd;
        pfd[npfd].events = POLLIN;
        map[npfd++] = -1;
        for (unsigned i = 0; i < e->nconns; i++) {
            NbdcConn *c = &e->conns[i];
            if (c->up) {
                if (c->out_head != NULL && !conn_send(e, i)) {
                    continue;
                }
                pfd[npfd].fd = c->link.xp.fd;
                pfd[npfd].events = POLLIN |
                                   (c->out_head != NULL ? POLLOUT : 0);
                map[npfd++] = (int)i;
                /* TLS: decrypted bytes wait in gnutls, not the socket. */
                if (c->io->pending != NULL &&
                    c->io->pending(&c->link.xp) > 0) {
                    pending = true;
                }
            } else if (e->cfg.connect != NULL) {
                wake = MIN(wake, c->next_try_us);
            }
        }
        if (pending) {
            timeout = 0;
        } else if (wake == UINT64_MAX) {
            timeout = -1;
        } else {
            now = now_us();
            timeout = wake <= now ? 0
                      : (int)MIN((wake - now + 999) / 1000, (uint64_t)60000);
        }
        if (poll(pfd, (nfds_t)npfd, timeout) < 0) {
            continue;
        }
        for (int i = 1; i < npfd; i++) {
            unsigned idx = (unsigned)map[i];
            if (!e->conns[idx].up) {
                continue;
            }
            if ((pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) ||
                (pending && e->conns[idx].io->pending != NULL &&
                 e->conns[idx].io->pending(&e->conns[idx].link.xp) > 0)) {
                if (!conn_recv(e, idx)) {
                    continue;
                }
            }
            if (pfd[i].revents & POLLOUT) {
                conn_send(e, idx);
            }
        }
    }

    /* Stopping: nothing should be left; fail what is. */
    for (unsigned i = 0; i < e->nconns; i++) {
        NbdcConn *c = &e->conns[i];
        if (c->up) {
            uint8_t buf[NBD_EXT_REQ_SIZE];
            NbdRequest r = { .type = NBD_CMD_DISC };
            size_t len = nbd_encode_request(buf, c->link.extended, &r);

            if (c->out_head == NULL) {
                struct iovec iov = { .iov_base = buf, .iov_len = len };
                (void)!c->io->sendv(&c->link.xp, &iov, 1);
            }
            c->link.xp.ops->close(&c->link.xp);
            c->up = false;
        }
    }
    for (size_t i = 0; i < NBDC_MAX_SLOTS; i++) {
        NbdcSlot *s = &e->slots[i];
        if (s->state == SLOT_SENT) {
            s->sending = false;
            retry_push(e, s);
        }
    }
    fail_waiting(e);
    pthread_mutex_lock(&e->lock);
    e->stopped = true;
    pthread_mutex_unlock(&e->lock);
    take_submitted(e);          /* fails anything that raced in */
    return NULL;
}

/* ---- public ------------------------------------------------------- */

NbdcEngine *nbdc_engine_new(const NbdcConfig *cfg, NbdcLink *links,
                            unsigned n, Error **errp)
{
    NbdcEngine *e;
    int ret;

    assert(n >= 1 && n <= NBDC_MAX_CONNS);
    e = XNEW(NbdcEngine);
    e->cfg = *cfg;
    e->name = xstrdup(cfg->name != NULL ? cfg->name : "");
    e->cfg.name = e->name;
    if (e->cfg.max_payload == 0) {
        e->cfg.max_payload = NBD_MAX_PAYLOAD;
    }
    e->size = links[0].size;
    e->flags = links[0].flags;
    e->has_context = links[0].has_context;
    e->nconns = n;
    for (size_t i = NBDC_MAX_SLOTS; i-- > 0;) {
        e->slots[i].conn = -1;
        e->slots[i].next = e->free_slots;
        e->free_slots = &e->slots[i];
    }
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cond, NULL);
    for (unsigned i = 0; i < n; i++) {
        conn_attach(e, i, &links[i]);
    }
    e->all_up = true;
    e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->efd < 0) {
        error_setg_errno(errp, errno, "Could not create an eventfd");
        goto fail;
    }
    ret = pthread_create(&e->thread, NULL, engine_thread, e);
    if (ret != 0) {
        error_setg_errno(errp, ret, "Could not start the NBD I/O thread");
        close(e->efd);
        goto fail;
    }
    return e;

fail:
    for (unsigned i = 0; i < n; i++) {
        e->conns[i].link.xp.ops->close(&e->conns[i].link.xp);
        free(e->conns[i].rbuf);
    }
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->cond);
    free(e->name);
    free(e);
    return NULL;
}

static void engine_kick(NbdcEngine *e)
{
    uint64_t one = 1;

    if (write(e->efd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero */
    }
}

void nbdc_engine_stop(NbdcEngine *e)
{
    if (e == NULL || e->joined) {
        return;
    }
    pthread_mutex_lock(&e->lock);
    e->stop = true;
    pthread_mutex_unlock(&e->lock);
    if (e->cfg.cancel != NULL) {
        e->cfg.cancel(e->cfg.opaque, true);
    }
    engine_kick(e);
    pthread_join(e->thread, NULL);
    e->joined = true;
}

void nbdc_engine_abort(NbdcEngine *e)
{
    pthread_mutex_lock(&e->lock);
    e->abort = true;
    e->abort_last = e->submit_tail;
    pthread_mutex_unlock(&e->lock);
    if (e->cfg.cancel != NULL) {
        e->cfg.cancel(e->cfg.opaque, false);
    }
    engine_kick(e);
}

void nbdc_engine_free(NbdcEngine *e)
{
    if (e == NULL) {
        return;
    }
    nbdc_engine_stop(e);
    close(e->efd);
    for (unsigned i = 0; i < e->nconns; i++) {
        free(e->conns[i].pl);
        free(e->conns[i].rbuf);
    }
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->cond);
    free(e->name);
    free(e);
}

void nbdc_submit(NbdcEngine *e, NbdcCmd *cmd)
{
    bool kick, stopped;

    cmd->next = NULL;
    cmd->split = 0;
    cmd->pieces = 0;
    cmd->err = 0;
    cmd->ret = 0;
    cmd->completed = false;
    cmd->status_length = 0;
    cmd->status_flags = 0;
    pthread_mutex_lock(&e->lock);
    stopped = e->stopped;
    if (!stopped) {
        kick = e->submit_head == NULL;
        if (e->submit_tail != NULL) {
            e->submit_tail->next = cmd;
        } else {
            e->submit_head = cmd;
        }
        e->submit_tail = cmd;
    }
    pthread_mutex_unlock(&e->lock);
    if (stopped) {
        cmd_complete(e, cmd, -EIO);
    } else if (kick) {
        engine_kick(e);
    }
}

int nbdc_run(NbdcEngine *e, NbdcCmd *cmd)
{
    cmd->done = NULL;
    nbdc_submit(e, cmd);
    pthread_mutex_lock(&e->lock);
    while (!cmd->completed) {
        pthread_cond_wait(&e->cond, &e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    return cmd->ret;
}

unsigned nbdc_connections_up(NbdcEngine *e)
{
    unsigned n;

    pthread_mutex_lock(&e->lock);
    n = e->up;
    pthread_mutex_unlock(&e->lock);
    return n;
}
