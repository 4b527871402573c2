/* conn.c - one NBD client connection: the handshake and transmission
 * state machine.
 *
 *  accept ─> greeting sent
 *             │
 *   CLIENT_FLAGS (4 B) ──bad flags──> DEAD
 *             │
 *   OPT_HDR (16 B) ──bad magic / length > cap──> DEAD
 *      ^      │
 *      │   OPT_DATA (length B) ─ option handler, one write of replies
 *      └──────┤
 *             ├─ ABORT ──> CLOSING ──(output drained)──> DEAD
 *             └─ GO / EXPORT_NAME
 *                   │
 *   REQ_HDR (28/32 B) <──────────────┐   (paused while 16 slots busy)
 *      │ ├─ WRITE ─> REQ_PAYLOAD ────┤
 *      │ ├─ bad request w/ payload ─> REQ_DRAIN ─┤
 *      │ └─ others: submit / reply ──┘
 *      └─ DISC ──> CLOSING ──(in-flight done, output drained)──> DEAD
 *
 * Input goes through a 64 KiB buffer (several small headers per recv);
 * large payloads are received straight into the request's buffer.
 * Replies are iovecs queued per request slot and sent with one sendmsg
 * for as many queued replies as fit.  Requests complete out of order.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/block.h"
#include "nbd/internal.h"
#include "util/log.h"
#include "util/util.h"

#define NBD_SLOTS 16                 /* requests in flight per connection */
#define NBD_INBUF_SIZE (64 * 1024)
#define NBD_MAX_SEGS 16              /* chunks per sparse read reply */
#define NBD_ZERO_BLOCK 4096          /* granularity of hole detection */
#define NBD_ERRMSG_MAX 200
#define NBD_SLOT_IOV (2 * NBD_MAX_SEGS + 4)
#define NBD_SEND_IOV 64
/* Keep request buffers up to this size between requests. */
#define NBD_BUF_KEEP (4 * 1024 * 1024)

typedef enum NbdConnState {
    NBD_CS_CLIENT_FLAGS,
    NBD_CS_OPT_HDR,
    NBD_CS_OPT_DATA,
    NBD_CS_REQ_HDR,
    NBD_CS_REQ_PAYLOAD,
    NBD_CS_REQ_DRAIN,
    NBD_CS_CLOSING,
    NBD_CS_DEAD,
} NbdConnState;

typedef struct NbdSeg {
    uint64_t off;                /* from the request offset, bytes */
    uint64_t len;
    bool hole;
} NbdSeg;

/* A block status chunk payload being built: wire bytes, with room for
 * the context id (and count when extended) at the start. */
typedef struct NbdExtBuf {
    uint8_t *p;
    size_t len, cap;
    uint32_t count;
    uint64_t last_len;           /* length of the last extent */
    uint32_t last_flags;
} NbdExtBuf;

typedef struct NbdSlot {
    NbdConn *conn;
    struct NbdSlot *next;        /* free list or output queue */
    NbdRequest req;
    BlockRequest breq;
    WorkerJob job;
    uint8_t *buf;                /* payload buffer, buf_cap bytes */
    size_t buf_cap;
    uint32_t err;                /* NBD_E* of the pending error reply */
    char errmsg[NBD_ERRMSG_MAX];
    bool flush_after;            /* TRIM with FUA: flush when done */
    int bs_ret;                  /* block status job result */
    NbdSeg segs[NBD_MAX_SEGS];
    unsigned nsegs;
    NbdExtBuf ext[NBD_META_COUNT];
    uint8_t hdr[NBD_MAX_SEGS * 48 + 128 + NBD_ERRMSG_MAX];
    size_t hdr_len;
    struct iovec iov[NBD_SLOT_IOV];
    int niov, iov_idx;
} NbdSlot;

struct NbdConn {
    NbdServer *srv;              /* NULL once the server is gone */
    NbdContext *ctx;          /* what the layer above handed us */
    Xport xp;
    LoopFd *watch;
    LoopTimer *hs_timer;         /* handshake limit; NULL after GO */
    NbdConnState state;
    bool closed;
    bool free_posted;
    bool in_input, input_again, input_paused;
    bool in_flush;
    bool want_write;

    /* negotiation */
    bool fixed, no_zeroes, structured, extended;
    unsigned meta_sel;           /* bit i = context id i selected */
    char *meta_export;           /* the export the selection is for */
    uint32_t opt, optlen;
    uint8_t *optbuf;
    size_t optbuf_cap;

    /* transmission */
    NbdExport *exp;              /* referenced after GO */
    uint64_t size;
    uint16_t tflags;

    /* input */
    uint8_t *inbuf;
    size_t in_start, in_end;
    uint8_t *rd_dst;             /* NULL: discard */
    uint64_t rd_len, rd_got;
    uint8_t hdrbuf[NBD_EXT_REQ_SIZE];

    /* handshake output (one write per option's replies) */
    uint8_t *hs;
    size_t hs_off, hs_len, hs_cap;

    /* request slots */
    NbdSlot slots[NBD_SLOTS];
    NbdSlot *free_slots;
    unsigned busy;               /* slots not on the free list */
    NbdSlot *cur;                /* slot for the request being read */
    NbdSlot *out_head, *out_tail;
};

static void conn_input(NbdConn *c);
static void conn_flush_output(NbdConn *c);
static void conn_update_events(NbdConn *c);
static void conn_maybe_finish(NbdConn *c);

/* ---- small helpers ------------------------------------------------------- */

static bool conn_reading(const NbdConn *c)
{
    return !c->closed && c->state <= NBD_CS_REQ_DRAIN;
}

static void conn_want(NbdConn *c, NbdConnState st, uint8_t *dst,
                      uint64_t len)
{
    c->state = st;
    c->rd_dst = dst;
    c->rd_len = len;
    c->rd_got = 0;
}

static void hs_append(NbdConn *c, const void *p, size_t len)
{
    if (c->hs_len + len > c->hs_cap) {
        size_t cap = MAX(c->hs_cap * 2, c->hs_len + len + 256);

        c->hs = xrealloc(c->hs, cap);
        c->hs_cap = cap;
    }
    memcpy(c->hs + c->hs_len, p, len);
    c->hs_len += len;
}

static void opt_reply(NbdConn *c, uint32_t type, const void *data,
                      uint32_t len)
{
    uint8_t h[NBD_OPT_REPLY_HDR_SIZE];

    nbd_encode_opt_reply_hdr(h, c->opt, type, len);
    hs_append(c, h, sizeof(h));
    if (len) {
        hs_append(c, data, len);
    }
}

static void opt_error(NbdConn *c, uint32_t type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void opt_error(NbdConn *c, uint32_t type, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
    }
    opt_reply(c, type, msg, (uint32_t)MIN((size_t)n, sizeof(msg) - 1));
}

/* ---- slots --------------------------------------------------------------- */

static NbdSlot *slot_get(NbdConn *c)
{
    NbdSlot *s = c->free_slots;

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

static void conn_maybe_free(NbdConn *c);

static void slot_put(NbdSlot *s)
{
    NbdConn *c = s->conn;

    if (s->buf_cap > NBD_BUF_KEEP) {
        free(s->buf);
        s->buf = NULL;
        s->buf_cap = 0;
    }
    s->next = c->free_slots;
    c->free_slots = s;
    c->busy--;
    if (c->closed) {
        conn_maybe_free(c);
        return;
    }
    if (c->input_paused) {
        c->input_paused = false;
        conn_input(c);
    }
    conn_maybe_finish(c);
}

static void slot_ensure_buf(NbdSlot *s, uint64_t len)
{
    if (s->buf_cap < len) {
        free(s->buf);
        s->buf = xmalloc(len);
        s->buf_cap = len;
    }
}

static uint8_t *slot_hdr(NbdSlot *s, size_t len)
{
    uint8_t *p = s->hdr + s->hdr_len;

    if (s->hdr_len + len > sizeof(s->hdr)) {
        abort();                 /* sized for NBD_MAX_SEGS chunks */
    }
    s->hdr_len += len;
    return p;
}

static void slot_iov(NbdSlot *s, const void *p, size_t len)
{
    if (len == 0) {
        return;
    }
    s->iov[s->niov].iov_base = (void *)p;
    s->iov[s->niov].iov_len = len;
    s->niov++;
}

static void conn_queue(NbdConn *c, NbdSlot *s)
{
    s->next = NULL;
    if (c->out_tail) {
        c->out_tail->next = s;
    } else {
        c->out_head = s;
    }
    c->out_tail = s;
    conn_flush_output(c);
}

/* ---- replies ------------------------------------------------------------- */

static void slot_chunk(NbdSlot *s, uint16_t flags, uint16_t type,
                       uint64_t len, const void *extra, size_t extra_len)
{
    NbdConn *c = s->conn;
    uint8_t *h = slot_hdr(s, NBD_MAX_CHUNK_HDR_SIZE + extra_len);
    size_t n = nbd_encode_chunk_hdr(h, c->extended, flags, type,
                                    s->req.cookie, s->req.offset, len);

    if (extra_len > 0) {
        memcpy(h + n, extra, extra_len);
    }
    s->hdr_len -= NBD_MAX_CHUNK_HDR_SIZE - n;
    slot_iov(s, h, n + extra_len);
}

/* Success without payload. */
static void slot_reply_ok(NbdSlot *s)
{
    if (s->conn->extended ||
        (s->conn->structured && s->req.type == NBD_CMD_READ)) {
        slot_chunk(s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0, NULL, 0);
    } else {
        uint8_t *h = slot_hdr(s, NBD_SIMPLE_REPLY_SIZE);

        nbd_encode_simple_reply(h, 0, s->req.cookie);
        slot_iov(s, h, NBD_SIMPLE_REPLY_SIZE);
    }
}

static void slot_reply_error(NbdSlot *s, uint32_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void slot_reply_error(NbdSlot *s, uint32_t err, const char *fmt, ...)
{
    s->niov = s->iov_idx = 0;
    s->hdr_len = 0;
    if (s->conn->structured) {
        uint8_t extra[6 + NBD_ERRMSG_MAX];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf((char *)extra + 6, NBD_ERRMSG_MAX, fmt, ap);
        va_end(ap);
        n = n < 0 ? 0 : MIN(n, NBD_ERRMSG_MAX - 1);
        put_be32(extra, err);
        put_be16(extra + 4, (uint16_t)n);
        slot_chunk(s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + n,
                   extra, 6 + n);
    } else {
        uint8_t *h = slot_hdr(s, NBD_SIMPLE_REPLY_SIZE);

        nbd_encode_simple_reply(h, err, s->req.cookie);
        slot_iov(s, h, NBD_SIMPLE_REPLY_SIZE);
    }
}

static bool is_zero(const uint8_t *p, size_t len)
{
    if (len <= 16) {
        for (size_t i = 0; i < len; i++) {
            if (p[i]) {
                return false;
            }
        }
        return true;
    }
    for (size_t i = 0; i < 16; i++) {
        if (p[i]) {
            return false;
        }
    }
    return memcmp(p, p + 16, len - 16) == 0;
}

/* Split a read buffer into data and hole segments: zero blocks become
 * NBD_REPLY_TYPE_OFFSET_HOLE chunks (doc/proto.md "Structured reply
 * types": holes read as zeroes).  Detecting zeroes in the buffer we
 * already read costs no extra syscall per read. */
static void slot_find_holes(NbdSlot *s)
{
    uint64_t len = s->req.length;

    s->nsegs = 0;
    for (uint64_t pos = 0; pos < len; pos += NBD_ZERO_BLOCK) {
        uint64_t n = MIN((uint64_t)NBD_ZERO_BLOCK, len - pos);
        bool hole = is_zero(s->buf + pos, n);
        NbdSeg *last = s->nsegs ? &s->segs[s->nsegs - 1] : NULL;

        if (last && (last->hole == hole || s->nsegs == NBD_MAX_SEGS)) {
            /* Same kind, or out of segments: a zero block may always be
             * sent as data. */
            last->hole = last->hole && hole;
            last->len += n;
        } else {
            s->segs[s->nsegs++] = (NbdSeg){ .off = pos, .len = n,
                                            .hole = hole };
        }
    }
}

static void slot_reply_read(NbdSlot *s)
{
    NbdConn *c = s->conn;
    uint64_t len = s->req.length;

    if (!c->structured) {
        uint8_t *h = slot_hdr(s, NBD_SIMPLE_REPLY_SIZE);

        nbd_encode_simple_reply(h, 0, s->req.cookie);
        slot_iov(s, h, NBD_SIMPLE_REPLY_SIZE);
        slot_iov(s, s->buf, len);
        return;
    }
    if (len == 0) {
        slot_reply_ok(s);
        return;
    }
    if (s->req.flags & NBD_CMD_FLAG_DF) {
        s->nsegs = 1;
        s->segs[0] = (NbdSeg){ .off = 0, .len = len, .hole = false };
    } else {
        slot_find_holes(s);
    }
    for (unsigned i = 0; i < s->nsegs; i++) {
        NbdSeg *g = &s->segs[i];
        uint16_t flags = i + 1 == s->nsegs ? NBD_REPLY_FLAG_DONE : 0;
        uint8_t extra[12];

        put_be64(extra, s->req.offset + g->off);
        if (g->hole) {
            put_be32(extra + 8, (uint32_t)g->len);
            slot_chunk(s, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12, extra, 12);
        } else {
            slot_chunk(s, flags, NBD_REPLY_TYPE_OFFSET_DATA, 8 + g->len,
                       extra, 8);
            slot_iov(s, s->buf + g->off, g->len);
        }
    }
}

static void slot_reply_block_status(NbdSlot *s)
{
    NbdConn *c = s->conn;
    unsigned last = 0;

    for (unsigned id = 0; id < NBD_META_COUNT; id++) {
        if (c->meta_sel & (1u << id)) {
            last = id;
        }
    }
    for (unsigned id = 0; id < NBD_META_COUNT; id++) {
        NbdExtBuf *e = &s->ext[id];

        if (!(c->meta_sel & (1u << id))) {
            continue;
        }
        put_be32(e->p, id);
        if (c->extended) {
            put_be32(e->p + 4, e->count);
        }
        slot_chunk(s, id == last ? NBD_REPLY_FLAG_DONE : 0,
                   c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT
                               : NBD_REPLY_TYPE_BLOCK_STATUS,
                   e->len, NULL, 0);
        slot_iov(s, e->p, e->len);
    }
}

/* ---- block status on the worker pool ------------------------------------- */

static void ext_reset(NbdExtBuf *e, size_t prefix)
{
    if (e->cap < prefix + 256) {
        e->p = xrealloc(e->p, prefix + 256);
        e->cap = prefix + 256;
    }
    e->len = prefix;
    e->count = 0;
}

static void ext_add(NbdExtBuf *e, bool extended, uint64_t len,
                    uint32_t flags)
{
    size_t dsz = extended ? 16 : 8;

    if (e->count && e->last_flags == flags &&
        (extended || e->last_len + len <= UINT32_MAX)) {
        e->last_len += len;
        if (extended) {
            put_be64(e->p + e->len - 16, e->last_len);
        } else {
            put_be32(e->p + e->len - 8, (uint32_t)e->last_len);
        }
        return;
    }
    if (e->len + dsz > e->cap) {
        e->cap *= 2;
        e->p = xrealloc(e->p, e->cap);
    }
    if (extended) {
        put_be64(e->p + e->len, len);
        put_be64(e->p + e->len + 8, flags);
    } else {
        put_be32(e->p + e->len, (uint32_t)len);
        put_be32(e->p + e->len + 4, flags);
    }
    e->len += dsz;
    e->count++;
    e->last_len = len;
    e->last_flags = flags;
}

/* Worker thread: walk one context over the request range. */
static int bs_walk(NbdSlot *s, unsigned id, BlockNode *bs, bool extended)
{
    NbdExtBuf *e = &s->ext[id];
    uint64_t pos = s->req.offset;
    uint64_t end = s->req.offset + s->req.length;
    bool one = s->req.flags & NBD_CMD_FLAG_REQ_ONE;

    ext_reset(e, extended ? 8 : 4);
    while (pos < end) {
        uint64_t pnum = 0;
        uint32_t flags;
        int r;

        if (id == NBD_META_BASE_ALLOCATION) {
            r = blk_block_status(bs, pos, end - pos, &pnum);
            if (r < 0) {
                return r;
            }
            flags = ((r & BLK_STATUS_DATA) ? 0 : NBD_STATE_HOLE) |
                    ((r & BLK_STATUS_ZERO) ? NBD_STATE_ZERO : 0);
        } else {
            r = blk_allocation_depth(bs, pos, end - pos, &pnum);
            if (r < 0) {
                return r;
            }
            flags = (uint32_t)r;
        }
        if (pnum == 0 || pnum > end - pos) {
            pnum = end - pos;    /* a driver bug must not loop forever */
        }
        ext_add(e, extended, pnum, flags);
        pos += pnum;
        if (one || e->count >= NBD_MAX_EXTENTS) {
            break;
        }
    }
    return 0;
}

static void bs_job_run(WorkerJob *job)
{
    NbdSlot *s = container_of(job, NbdSlot, job);
    NbdConn *c = s->conn;

    s->bs_ret = 0;
    for (unsigned id = 0; id < NBD_META_COUNT && s->bs_ret == 0; id++) {
        if (c->meta_sel & (1u << id)) {
            s->bs_ret = bs_walk(s, id, c->exp->node, c->extended);
        }
    }
}

static void bs_job_done(WorkerJob *job)
{
    NbdSlot *s = container_of(job, NbdSlot, job);
    NbdConn *c = s->conn;

    if (c->closed) {
        slot_put(s);
        return;
    }
    c->exp->other_ops++;
    if (s->bs_ret < 0) {
        slot_reply_error(s, nbd_errno(s->bs_ret), "block status failed: %s",
                         strerror(-s->bs_ret));
    } else {
        slot_reply_block_status(s);
    }
    conn_queue(c, s);
}

/* ---- I/O through the block layer ----------------------------------------- */

static void slot_io_done(BlockRequest *r)
{
    NbdSlot *s = r->opaque;
    NbdConn *c = s->conn;
    NbdExport *exp = c->exp;

    if (c->closed) {
        slot_put(s);
        return;
    }
    if (r->ret == 0 && s->flush_after) {
        s->flush_after = false;
        r->type = BLK_OP_FLUSH;
        r->flags = 0;
        blk_aio_submit(c->ctx->pool, r);
        return;
    }
    switch (s->req.type) {
    case NBD_CMD_READ:
        exp->rd_ops++;
        exp->rd_bytes += s->req.length;
        break;
    case NBD_CMD_WRITE:
        exp->wr_ops++;
        exp->wr_bytes += s->req.length;
        break;
    default:
        exp->other_ops++;
        break;
    }
    if (r->ret < 0) {
        uint32_t err = nbd_errno(r->ret);

        /* ENOTSUP is only legal as the answer to FAST_ZERO. */
        if (err == NBD_ENOTSUP &&
            !(s->req.type == NBD_CMD_WRITE_ZEROES &&
              (s->req.flags & NBD_CMD_FLAG_FAST_ZERO))) {
            err = NBD_EIO;
        }
        slot_reply_error(s, err, "%s failed: %s", nbd_cmd_name(s->req.type),
                         strerror(-r->ret));
    } else if (s->req.type == NBD_CMD_READ) {
        slot_reply_read(s);
    } else {
        slot_reply_ok(s);
    }
    conn_queue(c, s);
}

static void slot_submit(NbdSlot *s, BlockRequestType type, uint32_t flags)
{
    NbdConn *c = s->conn;
    BlockRequest *r = &s->breq;

    memset(r, 0, sizeof(*r));
    r->bs = c->exp->node;
    r->type = type;
    r->flags = flags;
    r->offset = s->req.offset;
    r->bytes = s->req.length;
    r->buf = (type == BLK_OP_READ || type == BLK_OP_WRITE) ? s->buf : NULL;
    r->cb = slot_io_done;
    r->opaque = s;
    blk_aio_submit(c->ctx->pool, r);
}

/* Run a validated request (payload, if any, is in s->buf). */
static void slot_execute(NbdSlot *s)
{
    NbdConn *c = s->conn;
    NbdRequest *q = &s->req;
    uint32_t fua = ((q->flags & NBD_CMD_FLAG_FUA) || c->exp->writethrough)
                   ? BLK_REQ_FUA : 0;

    if (q->length == 0 && q->type != NBD_CMD_FLUSH) {
        /* Nothing to do: the spec leaves zero-length requests
         * unspecified; answer success. */
        if (q->type == NBD_CMD_READ) {
            slot_reply_read(s);
        } else {
            slot_reply_ok(s);
        }
        conn_queue(c, s);
        return;
    }
    switch (q->type) {
    case NBD_CMD_READ:
        slot_ensure_buf(s, q->length);
        slot_submit(s, BLK_OP_READ, 0);
        break;
    case NBD_CMD_WRITE:
        slot_submit(s, BLK_OP_WRITE, fua);
        break;
    case NBD_CMD_FLUSH:
        slot_submit(s, BLK_OP_FLUSH, 0);
        break;
    case NBD_CMD_TRIM:
        s->flush_after = fua != 0;
        slot_submit(s, BLK_OP_DISCARD, 0);
        break;
    case NBD_CMD_CACHE:
        slot_submit(s, BLK_OP_CACHE, 0);
        break;
    case NBD_CMD_WRITE_ZEROES:
        slot_submit(s, BLK_OP_WRITE_ZEROES,
                    fua |
                    ((q->flags & NBD_CMD_FLAG_NO_HOLE) ? 0
                                                       : BLK_REQ_MAY_UNMAP) |
                    ((q->flags & NBD_CMD_FLAG_FAST_ZERO)
                     ? BLK_REQ_NO_FALLBACK : 0));
        break;
    case NBD_CMD_BLOCK_STATUS:
        s->job.run = bs_job_run;
        s->job.done = bs_job_done;
        s->job.next = NULL;
        worker_submit(c->ctx->pool, &s->job);
        break;
    default:
        abort();                 /* nbd_check_request() let it through */
    }
}

/* ---- transmission state handlers ----------------------------------------- */

static void conn_next_request(NbdConn *c)
{
    conn_want(c, NBD_CS_REQ_HDR, c->hdrbuf,
              c->extended ? NBD_EXT_REQ_SIZE : NBD_REQ_SIZE);
}

static void conn_start_closing(NbdConn *c)
{
    c->state = NBD_CS_CLOSING;
    if (c->cur) {
        NbdSlot *s = c->cur;

        c->cur = NULL;
        slot_put(s);
    }
    conn_maybe_finish(c);
}

static void on_req_hdr(NbdConn *c)
{
    NbdSlot *s = c->cur;
    NbdReqLimits lim = {
        .structured = c->structured,
        .extended = c->extended,
        .read_only = !c->exp->writable,
        .have_contexts = c->meta_sel != 0,
        .size = c->size,
        .max_payload = NBD_MAX_PAYLOAD,
    };
    uint64_t payload = 0;
    const char *why = "";
    uint32_t err;

    if (!nbd_decode_request(c->hdrbuf, c->extended, &s->req)) {
        log_debug("nbd: bad request magic, disconnecting");
        nbd_conn_close(c);
        return;
    }
    if (s->req.type == NBD_CMD_DISC) {
        /* Whatever its flags: a disconnect request (doc/proto.md). */
        conn_start_closing(c);
        return;
    }
    err = nbd_check_request(&s->req, &lim, &payload, &why);
    if (err) {
        slot_reply_error(s, err, "%s: %s", nbd_cmd_name(s->req.type), why);
        s->err = err;
    }
    if (payload) {
        if (!err) {
            slot_ensure_buf(s, payload);
            conn_want(c, NBD_CS_REQ_PAYLOAD, s->buf, payload);
            return;
        }
        if (payload <= UINT32_MAX) {
            /* Skip it so the stream stays in sync, then answer. */
            conn_want(c, NBD_CS_REQ_DRAIN, NULL, payload);
            return;
        }
        /* A payload we will not read: answer, then hang up. */
        c->cur = NULL;
        conn_queue(c, s);
        conn_start_closing(c);
        return;
    }
    c->cur = NULL;
    conn_next_request(c);
    if (err) {
        conn_queue(c, s);
    } else {
        slot_execute(s);
    }
}

static void on_req_payload(NbdConn *c)
{
    NbdSlot *s = c->cur;

    c->cur = NULL;
    conn_next_request(c);
    slot_execute(s);
}

static void on_req_drain(NbdConn *c)
{
    NbdSlot *s = c->cur;

    c->cur = NULL;
    conn_next_request(c);
    conn_queue(c, s);
}

/* ---- option handlers ----------------------------------------------------- */

static void conn_enter_transmission(NbdConn *c, NbdExport *exp)
{
    nbd_export_ref(exp);
    exp->nconns++;
    c->exp = exp;
    if (c->hs_timer) {
        loop_timer_free(c->hs_timer);
        c->hs_timer = NULL;
    }
    free(c->optbuf);
    c->optbuf = NULL;
    c->optbuf_cap = 0;
    conn_next_request(c);
}

static NbdExport *conn_find_export(NbdConn *c, const char *name)
{
    NbdExport *exp = c->srv ? nbd_export_find_name(c->srv, name) : NULL;

    return exp && !exp->shutting_down ? exp : NULL;
}

static uint64_t export_size(NbdExport *exp)
{
    int64_t len = blk_getlength(exp->node);

    return len < 0 ? 0 : (uint64_t)len;
}

static void opt_export_name(NbdConn *c)
{
    char name[NBD_MAX_STRING + 1];
    NbdOptError err;
    NbdExport *exp;
    uint8_t reply[8 + 2 + 124] = { 0 };

    /* No error reply exists for EXPORT_NAME: every failure hangs up. */
    if (c->extended) {
        log_debug("nbd: NBD_OPT_EXPORT_NAME after extended headers");
        nbd_conn_close(c);
        return;
    }
    if (!nbd_parse_opt_export_name(c->optbuf, c->optlen, name, &err) ||
        !(exp = conn_find_export(c, name))) {
        log_debug("nbd: NBD_OPT_EXPORT_NAME for unknown export");
        nbd_conn_close(c);
        return;
    }
    c->size = export_size(exp);
    c->tflags = nbd_export_tflags(exp, c->structured);
    if (c->meta_export && strcmp(c->meta_export, exp->name) != 0) {
        c->meta_sel = 0;
    }
    put_be64(reply, c->size);
    put_be16(reply + 8, c->tflags);
    hs_append(c, reply, c->no_zeroes ? 10 : sizeof(reply));
    conn_enter_transmission(c, exp);
}

static void opt_info_go(NbdConn *c)
{
    NbdOptInfo info;
    NbdOptError err;
    NbdExport *exp;
    uint8_t buf[14];
    uint32_t align, min_block;

    if (!nbd_parse_opt_info(c->optbuf, c->optlen, &info, &err)) {
        opt_error(c, err.rep, "%s: %s", nbd_opt_name(c->opt), err.msg);
        return;
    }
    exp = conn_find_export(c, info.name);
    if (!exp) {
        opt_error(c, NBD_REP_ERR_UNKNOWN, "export '%.80s' not present",
                  info.name);
        return;
    }
    align = exp->node->request_alignment ? exp->node->request_alignment : 1;
    if (c->opt == NBD_OPT_INFO && !info.want_block_size && align > 1) {
        opt_error(c, NBD_REP_ERR_BLOCK_SIZE_REQD,
                  "export '%.80s' requires a block size of %u",
                  info.name, align);
        return;
    }
    c->size = export_size(exp);
    c->tflags = nbd_export_tflags(exp, c->structured);

    put_be16(buf, NBD_INFO_EXPORT);
    put_be64(buf + 2, c->size);
    put_be16(buf + 10, c->tflags);
    opt_reply(c, NBD_REP_INFO, buf, 12);
    if (info.want_name) {
        size_t n = strlen(exp->name);
        uint8_t *p = xmalloc(2 + n);

        put_be16(p, NBD_INFO_NAME);
        memcpy(p + 2, exp->name, n);
        opt_reply(c, NBD_REP_INFO, p, (uint32_t)(2 + n));
        free(p);
    }
    if (exp->description) {
        size_t n = MIN(strlen(exp->description), (size_t)NBD_MAX_STRING);
        uint8_t *p = xmalloc(2 + n);

        put_be16(p, NBD_INFO_DESCRIPTION);
        memcpy(p + 2, exp->description, n);
        opt_reply(c, NBD_REP_INFO, p, (uint32_t)(2 + n));
        free(p);
    }
    /* Always send BLOCK_SIZE; a client that did not ask for it gets a
     * minimum of 1 on GO (it cannot honour more), as QEMU does. */
    min_block = (c->opt == NBD_OPT_GO && !info.want_block_size) ? 1 : align;
    put_be16(buf, NBD_INFO_BLOCK_SIZE);
    put_be32(buf + 2, min_block);
    put_be32(buf + 6, MAX(4096u, min_block));
    put_be32(buf + 10, NBD_MAX_PAYLOAD);
    opt_reply(c, NBD_REP_INFO, buf, 14);
    opt_reply(c, NBD_REP_ACK, NULL, 0);

    if (c->opt == NBD_OPT_GO) {
        if (c->meta_export && strcmp(c->meta_export, exp->name) != 0) {
            c->meta_sel = 0;
        }
        conn_enter_transmission(c, exp);
    }
}

static void opt_list(NbdConn *c)
{
    if (c->optlen) {
        opt_error(c, NBD_REP_ERR_INVALID,
                  "NBD_OPT_LIST must not carry data");
        return;
    }
    for (size_t i = 0; c->srv && i < c->srv->exports.len; i++) {
        NbdExport *exp = c->srv->exports.ptr[i];
        size_t nl = strlen(exp->name);
        size_t dl = exp->description ? strlen(exp->description) : 0;
        uint8_t *p;

        if (exp->shutting_down) {
            continue;
        }
        p = xmalloc(4 + nl + dl);
        put_be32(p, (uint32_t)nl);
        memcpy(p + 4, exp->name, nl);
        if (dl) {
            memcpy(p + 4 + nl, exp->description, dl);
        }
        opt_reply(c, NBD_REP_SERVER, p, (uint32_t)(4 + nl + dl));
        free(p);
    }
    opt_reply(c, NBD_REP_ACK, NULL, 0);
}

static const char *const meta_names[NBD_META_COUNT] = {
    [NBD_META_BASE_ALLOCATION] = "base:allocation",
    [NBD_META_ALLOCATION_DEPTH] = "qemu:allocation-depth",
};

/* Contexts a query selects (LIST also accepts the namespace
 * wildcards); unknown queries select nothing. */
static unsigned meta_match(const NbdExport *exp, bool list, const char *q,
                           uint32_t qlen)
{
    unsigned depth = exp->allocation_depth
                     ? 1u << NBD_META_ALLOCATION_DEPTH : 0;

    if (nbd_str_eq(q, qlen, "base:allocation") ||
        (list && nbd_str_eq(q, qlen, "base:"))) {
        return 1u << NBD_META_BASE_ALLOCATION;
    }
    if (nbd_str_eq(q, qlen, "qemu:allocation-depth") ||
        (list && nbd_str_eq(q, qlen, "qemu:"))) {
        return depth;
    }
    /* qemu:dirty-bitmap:NAME: the bitmaps issue adds them here. */
    return 0;
}

static void opt_meta(NbdConn *c)
{
    bool list = c->opt == NBD_OPT_LIST_META_CONTEXT;
    NbdOptMeta m;
    NbdOptError err;
    NbdExport *exp;
    unsigned found = 0;
    size_t pos;

    if (!list) {
        /* SET replaces the selection, even when it fails. */
        c->meta_sel = 0;
        free(c->meta_export);
        c->meta_export = NULL;
        if (!c->structured) {
            opt_error(c, NBD_REP_ERR_INVALID,
                      "NBD_OPT_SET_META_CONTEXT needs structured replies "
                      "first");
            return;
        }
    }
    if (!nbd_parse_opt_meta(c->optbuf, c->optlen, &m, &err)) {
        opt_error(c, err.rep, "%s: %s", nbd_opt_name(c->opt), err.msg);
        return;
    }
    exp = conn_find_export(c, m.name);
    if (!exp) {
        opt_error(c, NBD_REP_ERR_UNKNOWN, "export '%.80s' not present",
                  m.name);
        return;
    }
    if (list && m.nqueries == 0) {
        found = 1u << NBD_META_BASE_ALLOCATION;
        if (exp->allocation_depth) {
            found |= 1u << NBD_META_ALLOCATION_DEPTH;
        }
    }
    pos = m.queries_off;
    for (uint32_t i = 0; i < m.nqueries; i++) {
        const char *q;
        uint32_t qlen;

        nbd_meta_next_query(c->optbuf, &pos, &q, &qlen);
        if (qlen <= NBD_MAX_STRING) {
            found |= meta_match(exp, list, q, qlen);
        }
    }
    for (unsigned id = 0; id < NBD_META_COUNT; id++) {
        size_t n = strlen(meta_names[id]);
        uint8_t p[64];

        if (!(found & (1u << id))) {
            continue;
        }
        put_be32(p, list ? 0 : id);
        memcpy(p + 4, meta_names[id], n);
        opt_reply(c, NBD_REP_META_CONTEXT, p, (uint32_t)(4 + n));
    }
    opt_reply(c, NBD_REP_ACK, NULL, 0);
    if (!list) {
        c->meta_sel = found;
        c->meta_export = xstrdup(exp->name);
    }
}

static bool opt_no_data(NbdConn *c)
{
    if (c->optlen) {
        opt_error(c, NBD_REP_ERR_INVALID, "%s must not carry data",
                  nbd_opt_name(c->opt));
        return false;
    }
    return true;
}

static void on_opt_data(NbdConn *c)
{
    switch (c->opt) {
    case NBD_OPT_EXPORT_NAME:
        opt_export_name(c);
        break;
    case NBD_OPT_ABORT:
        opt_reply(c, NBD_REP_ACK, NULL, 0);
        conn_flush_output(c);
        conn_start_closing(c);
        return;
    case NBD_OPT_LIST:
        opt_list(c);
        break;
    case NBD_OPT_STARTTLS:
        /* The TLS issue plugs in here.  Its rules (nbd-protocol.md §5):
         * refuse if c->in_end != c->in_start (plaintext read ahead must
         * never become TLS input: drop the connection), ACK, flush,
         * swap c->xp.ops for the gnutls ops, and reset what plaintext
         * negotiated (structured, extended, meta_sel, meta_export). */
        if (opt_no_data(c)) {
            opt_error(c, NBD_REP_ERR_POLICY,
                      "TLS is not enabled on this server");
        }
        break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        opt_info_go(c);
        break;
    case NBD_OPT_STRUCTURED_REPLY:
        if (!opt_no_data(c)) {
            break;
        }
        if (c->extended) {
            opt_error(c, NBD_REP_ERR_EXT_HEADER_REQD,
                      "extended headers already negotiated");
        } else if (c->structured) {
            opt_error(c, NBD_REP_ERR_INVALID,
                      "structured replies already negotiated");
        } else {
            c->structured = true;
            opt_reply(c, NBD_REP_ACK, NULL, 0);
        }
        break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        opt_meta(c);
        break;
    case NBD_OPT_EXTENDED_HEADERS:
        if (!opt_no_data(c)) {
            break;
        }
        if (c->extended) {
            opt_error(c, NBD_REP_ERR_INVALID,
                      "extended headers already negotiated");
        } else {
            c->extended = c->structured = true;
            opt_reply(c, NBD_REP_ACK, NULL, 0);
        }
        break;
    default:
        opt_error(c, NBD_REP_ERR_UNSUP, "option %u (%s) is not supported",
                  c->opt, nbd_opt_name(c->opt));
        break;
    }
    if (c->closed) {
        return;
    }
    if (c->state == NBD_CS_OPT_DATA) {
        conn_want(c, NBD_CS_OPT_HDR, c->hdrbuf, NBD_OPT_HDR_SIZE);
    }
    conn_flush_output(c);
}

static void on_opt_hdr(NbdConn *c)
{
    if (get_be64(c->hdrbuf) != NBD_OPTS_MAGIC) {
        log_debug("nbd: bad option magic, disconnecting");
        nbd_conn_close(c);
        return;
    }
    c->opt = get_be32(c->hdrbuf + 8);
    c->optlen = get_be32(c->hdrbuf + 12);
    if (c->optlen > NBD_MAX_OPTION_LEN) {
        /* Dropped before allocating anything: a DoS guard. */
        log_debug("nbd: option length %u over the cap, disconnecting",
                  c->optlen);
        nbd_conn_close(c);
        return;
    }
    if (!c->fixed && c->opt != NBD_OPT_EXPORT_NAME) {
        nbd_conn_close(c);
        return;
    }
    if (c->optbuf_cap < c->optlen) {
        c->optbuf = xrealloc(c->optbuf, c->optlen);
        c->optbuf_cap = c->optlen;
    }
    conn_want(c, NBD_CS_OPT_DATA, c->optbuf, c->optlen);
}

static void on_client_flags(NbdConn *c)
{
    uint32_t flags = get_be32(c->hdrbuf);

    if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE |
                            NBD_FLAG_C_NO_ZEROES)) {
        log_debug("nbd: unknown client flags 0x%x, disconnecting", flags);
        nbd_conn_close(c);
        return;
    }
    c->fixed = flags & NBD_FLAG_C_FIXED_NEWSTYLE;
    c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
    conn_want(c, NBD_CS_OPT_HDR, c->hdrbuf, NBD_OPT_HDR_SIZE);
}

/* One handler per reading state, called when its bytes are complete. */
static void conn_dispatch(NbdConn *c)
{
    switch (c->state) {
    case NBD_CS_CLIENT_FLAGS:
        on_client_flags(c);
        break;
    case NBD_CS_OPT_HDR:
        on_opt_hdr(c);
        break;
    case NBD_CS_OPT_DATA:
        on_opt_data(c);
        break;
    case NBD_CS_REQ_HDR:
        on_req_hdr(c);
        break;
    case NBD_CS_REQ_PAYLOAD:
        on_req_payload(c);
        break;
    case NBD_CS_REQ_DRAIN:
        on_req_drain(c);
        break;
    default:
        abort();
    }
}

/* ---- the byte engine ----------------------------------------------------- */

static void conn_input_loop(NbdConn *c)
{
    while (conn_reading(c)) {
        uint64_t need;

        if (c->state == NBD_CS_OPT_HDR && c->hs_off < c->hs_len) {
            /* The client is not reading our replies: read no more
             * options until it does (bounds the reply buffer). */
            c->input_paused = true;
            return;
        }
        if (c->state == NBD_CS_REQ_HDR && !c->cur) {
            c->cur = slot_get(c);
            if (!c->cur) {
                c->input_paused = true;   /* back-pressure: 16 in flight */
                return;
            }
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
                if (c->rd_dst && need >= NBD_INBUF_SIZE / 2) {
                    n = xport_recv(&c->xp, c->rd_dst + c->rd_got,
                                   (size_t)MIN(need, (uint64_t)SSIZE_MAX));
                    if (n > 0) {
                        c->rd_got += n;
                    }
                } else {
                    n = xport_recv(&c->xp, c->inbuf, NBD_INBUF_SIZE);
                    if (n > 0) {
                        c->in_start = 0;
                        c->in_end = n;
                    }
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
        conn_dispatch(c);
    }
}

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
    } while (c->input_again && !c->closed && !c->input_paused);
    c->in_input = false;
    conn_update_events(c);
}

static void conn_flush_output(NbdConn *c)
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
        c->hs_off += n;
    }
    c->hs_off = c->hs_len = 0;
    if (c->input_paused && c->state == NBD_CS_OPT_HDR) {
        resume = true;
    }

    while (c->out_head) {
        struct iovec iov[NBD_SEND_IOV];
        int cnt = 0;
        ssize_t n;

        for (NbdSlot *s = c->out_head; s && cnt < NBD_SEND_IOV;
             s = s->next) {
            for (int i = s->iov_idx; i < s->niov && cnt < NBD_SEND_IOV;
                 i++) {
                iov[cnt++] = s->iov[i];
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
            if (s->iov_idx < s->niov) {
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
            slot_put(s);       /* may queue output: sent by this loop */
        }
        if (c->closed) {
            c->in_flush = false;
            return;
        }
    }
out:
    c->in_flush = false;
    if (resume) {
        c->input_paused = false;
        conn_input(c);
    }
    conn_maybe_finish(c);
    conn_update_events(c);
    return;
fail:
    c->in_flush = false;
    log_debug("nbd: send failed, disconnecting");
    nbd_conn_close(c);
}

/* CLOSING: hang up once every in-flight request is answered. */
static void conn_maybe_finish(NbdConn *c)
{
    if (!c->closed && c->state == NBD_CS_CLOSING && c->busy == 0 &&
        !c->out_head && c->hs_off == c->hs_len && !c->in_flush) {
        nbd_conn_close(c);
    }
}

static void conn_update_events(NbdConn *c)
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
    if (loop_fd_events(c->watch) != ev) {
        loop_fd_set_events(c->watch, ev);
    }
}

static void conn_fd_cb(int fd, int events, void *opaque)
{
    NbdConn *c = opaque;

    (void)fd;
    if (events & LOOP_WRITE) {
        conn_flush_output(c);
    }
    if (!c->closed && (events & LOOP_READ)) {
        conn_input(c);
    }
}

static void conn_hs_timeout(void *opaque)
{
    NbdConn *c = opaque;

    log_info("nbd: client did not finish the handshake in time, "
             "disconnecting");
    nbd_conn_close(c);
}

/* ---- lifetime ------------------------------------------------------------ */

NbdConn *nbd_conn_new(NbdServer *srv, int fd)
{
    NbdConn *c = XNEW(NbdConn);
    uint8_t greeting[NBD_GREETING_SIZE];

    c->srv = srv;
    c->ctx = srv->ctx;
    xport_init_plain(&c->xp, fd);
    c->inbuf = xmalloc(NBD_INBUF_SIZE);
    for (int i = NBD_SLOTS - 1; i >= 0; i--) {
        c->slots[i].conn = c;
        c->slots[i].next = c->free_slots;
        c->free_slots = &c->slots[i];
    }
    c->watch = loop_fd_add(srv->ctx->loop, fd, 0, conn_fd_cb, c);
    if (srv->handshake_limit_us) {
        c->hs_timer = loop_timer_new(srv->ctx->loop, conn_hs_timeout, c);
        loop_timer_arm(c->hs_timer, srv->handshake_limit_us);
    }
    nbd_encode_greeting(greeting);
    hs_append(c, greeting, sizeof(greeting));
    conn_want(c, NBD_CS_CLIENT_FLAGS, c->hdrbuf, 4);
    conn_flush_output(c);
    conn_update_events(c);
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

static void conn_free_cb(void *opaque)
{
    NbdConn *c = opaque;

    if (c->srv) {
        nbd_server_conn_freed(c->srv, c);
    }
    conn_release_export(c);
    for (int i = 0; i < NBD_SLOTS; i++) {
        free(c->slots[i].buf);
        for (int j = 0; j < NBD_META_COUNT; j++) {
            free(c->slots[i].ext[j].p);
        }
    }
    free(c->inbuf);
    free(c->hs);
    free(c->optbuf);
    free(c->meta_export);
    free(c);
}

static void conn_maybe_free(NbdConn *c)
{
    if (c->closed && c->busy == 0 && !c->free_posted) {
        c->free_posted = true;
        loop_post(c->ctx->loop, conn_free_cb, c);
    }
}

void nbd_conn_close(NbdConn *c)
{
    if (c->closed) {
        return;
    }
    c->closed = true;
    c->state = NBD_CS_DEAD;
    if (c->hs_timer) {
        loop_timer_free(c->hs_timer);
        c->hs_timer = NULL;
    }
    loop_fd_del(c->watch);
    c->watch = NULL;
    xport_close(&c->xp);
    while (c->out_head) {
        NbdSlot *s = c->out_head;

        c->out_head = s->next;
        slot_put(s);
    }
    c->out_tail = NULL;
    if (c->cur) {
        NbdSlot *s = c->cur;

        c->cur = NULL;
        slot_put(s);
    }
    if (c->exp) {
        c->exp->nconns--;
    }
    if (c->srv) {
        nbd_server_conn_closed(c->srv, c);
    }
    conn_maybe_free(c);
}

NbdExport *nbd_conn_export(const NbdConn *c)
{
    return c->exp;
}

bool nbd_conn_closed(const NbdConn *c)
{
    return c->closed;
}

void nbd_conn_shutdown(NbdConn *c)
{
    c->srv = NULL;
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
    if (c->busy == 0) {
        conn_free_cb(c);
    } else {
        c->free_posted = false;  /* freed when its requests end */
    }
}
