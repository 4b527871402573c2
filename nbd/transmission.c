/* transmission.c - the transmission phase of a connection
 * (doc/proto.md "Transmission"): request headers and payloads, their
 * validation (nbd_check_request() in proto.c), the block-layer requests
 * that run them, and the replies: simple, or structured/extended chunks
 * with sparse reads and block status.
 *
 * A connection gets here after GO/EXPORT_NAME (handshake.c) or directly
 * through nbd_conn_start_transmission(), for a client that negotiated
 * elsewhere (the kernel's /dev/nbdX after the daemon's own handshake).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include "nbd/internal.h"
#include "qapi-events.h"
#include "util/log.h"
#include "util/trace.h"
#include "util/util.h"

#define NBD_ZERO_BLOCK 4096          /* granularity of hole detection */
#define NBD_ZERO_BLOCK_MIN 512       /* ... for short reads */

/* ---- replies ------------------------------------------------------------- */

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
        TRACE(nbd_co_send_structured_done, "done: cookie %" PRIu64,
              s->req.cookie);
        slot_chunk(s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0, NULL, 0);
    } else {
        uint8_t *h = slot_hdr(s, NBD_SIMPLE_REPLY_SIZE);

        TRACE(nbd_co_send_simple_reply, "cookie %" PRIu64 ", error 0, "
              "len 0", s->req.cookie);
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
        TRACE(nbd_co_send_structured_error, "cookie %" PRIu64 ", error %u, "
              "msg '%s'", s->req.cookie, err, (char *)extra + 6);
        put_be32(extra, err);
        put_be16(extra + 4, (uint16_t)n);
        slot_chunk(s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + n,
                   extra, 6 + n);
    } else {
        uint8_t *h = slot_hdr(s, NBD_SIMPLE_REPLY_SIZE);

        TRACE(nbd_co_send_simple_reply, "cookie %" PRIu64 ", error %u, "
              "len 0", s->req.cookie, err);
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
 * already read costs no extra syscall per read.  The block is
 * NBD_ZERO_BLOCK, halved down to NBD_ZERO_BLOCK_MIN for a read shorter
 * than a few blocks, so that a short read still shows its hole (as
 * qemu-nbd's does: libnbd's interop/structured-read checks a 1 KiB
 * read of [zero sector][data sector]); scanning costs the same. */
static void slot_find_holes(NbdSlot *s)
{
    uint64_t len = s->req.length;
    uint64_t blk = NBD_ZERO_BLOCK;

    while (blk > NBD_ZERO_BLOCK_MIN && blk * 4 > len) {
        blk /= 2;
    }
    s->nsegs = 0;
    for (uint64_t pos = 0; pos < len; pos += blk) {
        uint64_t n = MIN(blk, len - pos);
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

        TRACE(nbd_co_send_simple_reply, "cookie %" PRIu64 ", error 0, "
              "len %" PRIu64, s->req.cookie, len);
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
            TRACE(nbd_co_send_structured_read_hole, "cookie %" PRIu64
                  ", offset %" PRIu64 ", len %" PRIu64, s->req.cookie,
                  s->req.offset + g->off, (uint64_t)g->len);
            put_be32(extra + 8, (uint32_t)g->len);
            slot_chunk(s, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12, extra, 12);
        } else {
            TRACE(nbd_co_send_structured_read, "cookie %" PRIu64
                  ", offset %" PRIu64 ", len %" PRIu64, s->req.cookie,
                  s->req.offset + g->off, (uint64_t)g->len);
            slot_chunk(s, flags, NBD_REPLY_TYPE_OFFSET_DATA, 8 + g->len,
                       extra, 8);
            slot_iov(s, s->buf + g->off, g->len);
        }
    }
}

/* The reply to a spliced read: the header only; the data waits in the
 * slot's pipe (pipe_fill bytes) and follows it (nbd_conn_flush_output).
 * One data chunk when structured: the holes were ruled out (DATA_ONLY)
 * or the client asked for none (DF). */
static void slot_reply_read_pipe(NbdSlot *s)
{
    uint8_t extra[8];

    if (!s->conn->structured) {
        uint8_t *h = slot_hdr(s, NBD_SIMPLE_REPLY_SIZE);

        TRACE(nbd_co_send_simple_reply, "cookie %" PRIu64 ", error 0, "
              "len %" PRIu64 " (spliced)", s->req.cookie, s->req.length);
        nbd_encode_simple_reply(h, 0, s->req.cookie);
        slot_iov(s, h, NBD_SIMPLE_REPLY_SIZE);
        return;
    }
    TRACE(nbd_co_send_structured_read, "cookie %" PRIu64 ", offset %"
          PRIu64 ", len %" PRIu64 " (spliced)", s->req.cookie,
          s->req.offset, s->req.length);
    put_be64(extra, s->req.offset);
    slot_chunk(s, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
               8 + s->req.length, extra, 8);
}

static void slot_reply_block_status(NbdSlot *s)
{
    NbdConn *c = s->conn;

    for (unsigned i = 0; i < c->meta_sel.len; i++) {
        NbdExtBuf *e = &s->ext[i];

        TRACE(nbd_co_send_extents, "cookie %" PRIu64 ", %u extents, "
              "context %u, last chunk %d", s->req.cookie, (unsigned)e->count,
              c->meta_sel.ptr[i], i + 1 == c->meta_sel.len);
        put_be32(e->p, c->meta_sel.ptr[i]);
        if (c->extended) {
            put_be32(e->p + 4, e->count);
        }
        slot_chunk(s, i + 1 == c->meta_sel.len ? NBD_REPLY_FLAG_DONE : 0,
                   c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT
                               : NBD_REPLY_TYPE_BLOCK_STATUS,
                   e->len, NULL, 0);
        slot_iov(s, e->p, e->len);
    }
}

/* ---- statistics ----------------------------------------------------------
 *
 * Each executed request counts on its export (by kind, with its latency
 * from the request read to the reply queued) and on its client (bytes
 * and requests).  Loop thread: plain increments. */

/* The statistics kind of an NBD command; -1 for one not counted. */
static int tx_stat_op(uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ:
        return BLOCK_STATS_OP_READ;
    case NBD_CMD_WRITE:
        return BLOCK_STATS_OP_WRITE;
    case NBD_CMD_WRITE_ZEROES:
        return BLOCK_STATS_OP_WRITE_ZEROES;
    case NBD_CMD_TRIM:
        return BLOCK_STATS_OP_DISCARD;
    case NBD_CMD_FLUSH:
        return BLOCK_STATS_OP_FLUSH;
    case NBD_CMD_BLOCK_STATUS:
        return BLOCK_STATS_OP_BLOCK_STATUS;
    default:
        return -1;
    }
}

static uint64_t tx_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* s's request starts: in flight on its export. */
static void tx_stat_begin(NbdSlot *s)
{
    int op = tx_stat_op(s->req.type);

    s->start_ns = tx_now_ns();
    if (op >= 0) {
        NBD_STAT_ADD(s->conn->exp->ops.in_flight[op], 1);
    }
}

/* s's request is over with ret (0 or -errno).  The connection holds
 * its export while requests run, closed or not. */
static void tx_stat_end(NbdSlot *s, int ret)
{
    NbdOpCounters *o = &s->conn->exp->ops;
    int op = tx_stat_op(s->req.type);

    if (op < 0) {
        return;
    }
    NBD_STAT_ADD(o->in_flight[op], -1);
    if (ret < 0) {
        NBD_STAT_ADD(o->failed[op], 1);
    } else {
        lathist_record(&o->lat[op], tx_now_ns() - s->start_ns);
    }
}

/* ---- block status -------------------------------------------------------- *
 *
 * One BLK_OP_BLOCK_STATUS walk per selected context, one after the
 * other, each filling its own chunk payload on a worker thread; the
 * reply goes out when the last one is done.
 */

static void ext_reset(NbdExtBuf *e, bool extended, bool one)
{
    size_t prefix = extended ? 8 : 4;

    if (e->cap < prefix + 256) {
        e->p = nbd_mem_grow(e->p, e->cap, 4096);
        e->cap = 4096;
    }
    e->len = prefix;
    e->count = 0;
    e->extended = extended;
    e->one = one;
}

/* Worker thread: append one extent (merged with the last one when the
 * flags match).  False once no more extents are wanted.  With REQ_ONE
 * the one extent still grows over following extents of the same flags
 * (as QEMU's server does), so a client stepping through the export
 * with REQ_ONE gets whole runs, not the block layer's pieces. */
static bool ext_add(BlockRequest *r, uint64_t len, uint32_t flags)
{
    NbdSlot *s = r->opaque;
    NbdExtBuf *e = &s->ext[s->ext_cur];
    size_t dsz = e->extended ? 16 : 8;

    if (e->count && e->last_flags == flags &&
        (e->extended || e->last_len + len <= UINT32_MAX)) {
        e->last_len += len;
        if (e->extended) {
            put_be64(e->p + e->len - 16, e->last_len);
        } else {
            put_be32(e->p + e->len - 8, (uint32_t)e->last_len);
        }
        return true;
    }
    if (e->one && e->count) {
        return false;
    }
    if (e->len + dsz > e->cap) {
        e->p = nbd_mem_grow(e->p, e->cap, e->cap * 2);
        e->cap *= 2;
    }
    if (e->extended) {
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
    return e->count < NBD_MAX_EXTENTS;
}

static void slot_bs_done(BlockRequest *r);

/* Walk the context s->ext_cur selects. */
static void slot_bs_submit(NbdSlot *s)
{
    NbdConn *c = s->conn;
    const NbdMetaContext *ctx = &c->exp->meta.ptr[c->meta_sel.ptr[s->ext_cur]];
    BlockRequest *r = &s->breq;

    ext_reset(&s->ext[s->ext_cur], c->extended,
              s->req.flags & NBD_CMD_FLAG_REQ_ONE);
    memset(r, 0, sizeof(*r));
    r->bs = nbd_export_node(c->exp);
    r->type = BLK_OP_BLOCK_STATUS;
    r->offset = s->req.offset;
    r->bytes = s->req.length;
    r->status_fn = ctx->extent;
    r->status_opaque = ctx->opaque;
    r->extent_cb = ext_add;
    r->cb = slot_bs_done;
    r->opaque = s;
    blk_aio_submit_on(c->ctx->pool, r, c->loop);
}

static void slot_bs_done(BlockRequest *r)
{
    NbdSlot *s = r->opaque;
    NbdConn *c = s->conn;

    if (c->closed) {
        tx_stat_end(s, r->ret);
        nbd_slot_put(s);
        return;
    }
    if (r->ret == 0 && ++s->ext_cur < c->meta_sel.len) {
        slot_bs_submit(s);
        return;
    }
    tx_stat_end(s, r->ret);
    NBD_STAT_ADD(c->exp->other_ops, 1);
    NBD_CONN_STAT_ADD(c->other_ops, 1);
    if (r->ret < 0) {
        slot_reply_error(s, nbd_errno(r->ret), "block status failed: %s",
                         strerror(-r->ret));
    } else {
        slot_reply_block_status(s);
    }
    nbd_conn_queue(c, s);
}

static void slot_block_status(NbdSlot *s)
{
    NbdConn *c = s->conn;
    unsigned n = (unsigned)c->meta_sel.len;

    if (s->ext_n < n) {
        s->ext = xrealloc(s->ext, n * sizeof(*s->ext));
        memset(s->ext + s->ext_n, 0, (n - s->ext_n) * sizeof(*s->ext));
        s->ext_n = n;
    }
    s->ext_cur = 0;
    slot_bs_submit(s);
}

/* ---- requests ------------------------------------------------------------ */

static void slot_submit(NbdSlot *s, BlockRequestType type, uint32_t flags);


static void slot_io_done(BlockRequest *r)
{
    NbdSlot *s = r->opaque;
    NbdConn *c = s->conn;
    NbdExport *exp = c->exp;

    if (r->pin.node != NULL) {
        /* The slot keeps it until its pipe is empty or closed. */
        s->pin = r->pin;
        r->pin.node = NULL;
    }
    if (c->closed) {
        tx_stat_end(s, r->ret);
        nbd_slot_put(s);
        return;
    }
    if (s->splicing) {
        s->splicing = false;
        if (r->ret < 0) {
            /* Holes to report, or a failure that may have left part of
             * the range in the pipe: read it the ordinary way, which
             * also gives a real error its ordinary reply. */
            if (r->ret != -ENOTSUP) {
                nbd_slot_drop_pipe(s);
            }
            nbd_slot_ensure_buf(s, s->req.length);
            slot_submit(s, BLK_OP_READ, 0);
            return;
        }
        s->pipe_fill = s->req.length;
    }
    if (r->ret == 0 && s->flush_after) {
        s->flush_after = false;
        r->type = BLK_OP_FLUSH;
        r->flags = 0;
        blk_aio_submit_on(c->ctx->pool, r, c->loop);
        return;
    }
    tx_stat_end(s, r->ret);
    switch (s->req.type) {
    case NBD_CMD_READ:
        NBD_STAT_ADD(exp->rd_ops, 1);
        NBD_STAT_ADD(exp->rd_bytes, s->req.length);
        NBD_CONN_STAT_ADD(c->rd_ops, 1);
        NBD_CONN_STAT_ADD(c->rd_bytes, s->req.length);
        break;
    case NBD_CMD_WRITE:
        NBD_STAT_ADD(exp->wr_ops, 1);
        NBD_STAT_ADD(exp->wr_bytes, s->req.length);
        NBD_CONN_STAT_ADD(c->wr_ops, 1);
        NBD_CONN_STAT_ADD(c->wr_bytes, s->req.length);
        break;
    default:
        NBD_STAT_ADD(exp->other_ops, 1);
        NBD_CONN_STAT_ADD(c->other_ops, 1);
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
    } else if (s->req.type == NBD_CMD_READ && s->pipe_fill > 0) {
        slot_reply_read_pipe(s);
    } else if (s->req.type == NBD_CMD_READ) {
        slot_reply_read(s);
    } else {
        slot_reply_ok(s);
    }
    nbd_conn_queue(c, s);
}

static void slot_submit(NbdSlot *s, BlockRequestType type, uint32_t flags)
{
    NbdConn *c = s->conn;
    BlockRequest *r = &s->breq;

    memset(r, 0, sizeof(*r));
    r->bs = nbd_export_node(c->exp);
    r->type = type;
    r->flags = flags;
    r->offset = s->req.offset;
    r->bytes = s->req.length;
    r->buf = (type == BLK_OP_READ || type == BLK_OP_WRITE) ? s->buf : NULL;
    if (flags & BLK_REQ_PIPE) {
        r->buf = NULL;
        r->pipe_fd = s->pipe_fd[1];
    }
    r->cb = slot_io_done;
    r->opaque = s;
    blk_aio_submit_on(c->ctx->pool, r, c->loop);
}

/* A big read from a node that can splice, over a transport that can:
 * the data goes from the page cache to the socket through the slot's
 * pipe, never through our memory.  False: read it the ordinary way. */
static bool slot_submit_splice(NbdSlot *s)
{
    NbdConn *c = s->conn;

    if (!c->can_splice || s->req.length < NBD_SPLICE_MIN ||
        !nbd_slot_get_pipe(s, s->req.length)) {
        return false;
    }
    s->splicing = true;
    slot_submit(s, BLK_OP_READ,
                BLK_REQ_PIPE | (c->sees_consumed ? BLK_REQ_PIN_OK : 0) |
                (c->structured && !(s->req.flags & NBD_CMD_FLAG_DF)
                 ? BLK_REQ_DATA_ONLY : 0));  /* holes go as hole chunks */
    return true;
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
        nbd_conn_queue(c, s);
        return;
    }
    tx_stat_begin(s);
    switch (q->type) {
    case NBD_CMD_READ:
        if (slot_submit_splice(s)) {
            break;
        }
        nbd_slot_ensure_buf(s, q->length);
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
        slot_block_status(s);
        break;
    default:
        abort();                 /* nbd_check_request() let it through */
    }
}

/* ---- transmission state handlers ----------------------------------------- */

void nbd_tx_next_request(NbdConn *c)
{
    TRACE(nbd_trip, "reading request");
    nbd_conn_want(c, NBD_CS_REQ_HDR, c->hdrbuf,
              c->extended ? NBD_EXT_REQ_SIZE : NBD_REQ_SIZE);
}

void nbd_tx_on_req_hdr(NbdConn *c)
{
    NbdSlot *s = c->cur;
    NbdReqLimits lim = {
        .structured = c->structured,
        .extended = c->extended,
        .read_only = !c->exp->writable || c->read_only,
        .have_contexts = c->meta_sel.len != 0,
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
    TRACE(nbd_receive_request, "request: flags 0x%x, type 0x%x, cookie %"
          PRIu64 ", offset %" PRIu64 ", length %" PRIu64, s->req.flags,
          s->req.type, s->req.cookie, s->req.offset, s->req.length);
    TRACE(nbd_co_receive_request_decode_type, "cookie %" PRIu64
          ", type %u (%s)", s->req.cookie, s->req.type,
          nbd_cmd_name(s->req.type));
    if (s->req.type == NBD_CMD_DISC) {
        /* Whatever its flags: a disconnect request (doc/proto.md). */
        c->disc_received = true;
        nbd_conn_start_closing(c);
        return;
    }
    err = nbd_check_request(&s->req, &lim, &payload, &why);
    if (err) {
        int op = tx_stat_op(s->req.type);

        if (op >= 0) {
            NBD_STAT_ADD(c->exp->ops.invalid[op], 1);
        }
        slot_reply_error(s, err, "%s: %s", nbd_cmd_name(s->req.type), why);
        s->err = err;
    }
    if (payload) {
        if (!err) {
            nbd_slot_ensure_buf(s, payload);
            nbd_conn_want(c, NBD_CS_REQ_PAYLOAD, s->buf, payload);
            return;
        }
        if (payload <= UINT32_MAX) {
            /* Skip it so the stream stays in sync, then answer. */
            nbd_conn_want(c, NBD_CS_REQ_DRAIN, NULL, payload);
            return;
        }
        /* A payload we will not read: answer, then hang up. */
        c->cur = NULL;
        nbd_conn_queue(c, s);
        nbd_conn_start_closing(c);
        return;
    }
    c->cur = NULL;
    nbd_tx_next_request(c);
    if (err) {
        nbd_conn_queue(c, s);
    } else {
        slot_execute(s);
    }
}

void nbd_tx_on_req_payload(NbdConn *c)
{
    NbdSlot *s = c->cur;

    TRACE(nbd_co_receive_request_payload_received, "cookie %" PRIu64
          ", len %" PRIu64, s->req.cookie, s->req.length);

    c->cur = NULL;
    nbd_tx_next_request(c);
    slot_execute(s);
}

void nbd_tx_on_req_drain(NbdConn *c)
{
    NbdSlot *s = c->cur;

    c->cur = NULL;
    nbd_tx_next_request(c);
    nbd_conn_queue(c, s);
}


/* ---- entering transmission ----------------------------------------------- */

/* Can the connection tell when its peer consumed what it sent (which a
 * node with BlockCaps.splice_pin needs before it splices)?  Only an
 * AF_UNIX stream socket (see conn_release_pins in conn.c). */
static bool nbd_conn_sees_consumed(NbdConn *c)
{
    int domain = 0;
    socklen_t len = sizeof(domain);

    return getsockopt(c->xp.fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
           domain == AF_UNIX;
}

void nbd_conn_enter_transmission(NbdConn *c, NbdExport *exp)
{
    BlockCaps caps;

    blk_get_caps(exp->node, &caps);
    /* The export's node may change (a job's pivot): the driver checks
     * BLK_REQ_PIN_OK on every read. */
    c->sees_consumed = nbd_conn_sees_consumed(c);
    c->can_splice = caps.splice_read && c->xp.ops->splice != NULL &&
                    (!caps.splice_pin || c->sees_consumed);
    nbd_export_ref(exp);
    exp->nconns++;
    c->exp = exp;
    c->announced = true;
    qapi_event_send_nbd_export_client_connected(
        c->ctx->events, exp->id, c->peer ? c->peer : "unix",
        c->tls_identity != NULL, c->tls_identity);
    /* The handshake's input buffer is done with: a connection that
     * stays idle after GO should not hold its page. */
    nbd_conn_release_inbuf(c);
    nbd_tx_next_request(c);
    /* A client of the listeners on an export with an iothread moves to
     * that loop once its input loop unwinds (conn.c, conn_move); a
     * kernel device's (on_close) stays. */
    if (exp->n_loops > 0 && c->on_close == NULL) {
        c->handoff = true;
    }
}

NbdConn *nbd_conn_start_transmission(NbdServer *srv, int fd, NbdExport *exp,
                                     const NbdConnOptions *opts,
                                     Error **errp)
{
    NbdMetaSel sel = { 0 };
    NbdConn *c;

    if (exp->shutting_down) {
        error_setg(errp, "export '%s' is shutting down", exp->id);
        return NULL;
    }
    if (opts->ncontexts && !(opts->structured || opts->extended)) {
        error_setg(errp, "meta contexts need structured replies");
        return NULL;
    }
    for (size_t i = 0; i < opts->ncontexts; i++) {
        const char *name = opts->contexts[i];
        int id = nbd_export_meta_find(exp, name, strlen(name));

        if (id < 0) {
            error_setg(errp, "export '%s' has no meta context '%s'",
                       exp->id, name);
            NbdMetaSel_reset(&sel);
            return NULL;
        }
        /* Ascending and once each, as SET_META_CONTEXT leaves it. */
        size_t pos = 0;

        while (pos < sel.len && sel.ptr[pos] < (uint32_t)id) {
            pos++;
        }
        if (pos == sel.len || sel.ptr[pos] != (uint32_t)id) {
            NbdMetaSel_append(&sel, (uint32_t)id);
            memmove(sel.ptr + pos + 1, sel.ptr + pos,
                    (sel.len - 1 - pos) * sizeof(*sel.ptr));
            sel.ptr[pos] = (uint32_t)id;
        }
    }
    c = nbd_conn_alloc(srv, fd);
    c->fixed = true;
    c->structured = opts->structured || opts->extended;
    c->extended = opts->extended;
    c->read_only = opts->read_only;
    c->on_close = opts->on_close;
    c->close_opaque = opts->close_opaque;
    c->meta_sel = sel;
    c->meta_exp = exp;
    c->size = (uint64_t)MAX(blk_getlength(exp->node), 0);
    c->tflags = nbd_export_tflags(exp, c->structured);
    nbd_server_conn_added(srv, c);
    nbd_conn_enter_transmission(c, exp);
    nbd_conn_update_events(c);
    return c;
}
