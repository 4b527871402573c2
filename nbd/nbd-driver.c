/* nbd-driver.c - the "nbd" block driver: a node whose data lives on an
 * NBD server.
 *
 *   blk_aio_submit ──aio_submit──> NbdcCmd ──> engine (client-io.c)
 *   blk_pread & co (worker or loop thread) ──nbdc_run: submit and wait
 *
 * Open (a worker, or the loop thread from the command line) runs the
 * handshake (client.c), with retries up to open-timeout seconds; when
 * the server advertises NBD_FLAG_CAN_MULTI_CONN it opens
 * NBD_DRIVER_MULTI_CONN connections and the engine spreads requests
 * over them (a flush on one covers the writes completed on all: that
 * is what the flag promises, doc/proto.md "Flag: CAN_MULTI_CONN").
 * Reconnects run on the engine's thread with the same options; a
 * socket passed as a descriptor cannot be reconnected.
 *
 * What the server's transmission flags offer becomes the node's caps;
 * what it lacks is emulated (FUA by a flush after the write, zeroes by
 * writing zero buffers: blk_aio_complete() sends -ENOTSUP to the pool)
 * or dropped (TRIM, CACHE are hints).
 */
#include "nbd/nbd-driver.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd/client-io.h"
#include "nbd/client-tls.h"
#include "nbd/proto.h"
#include "qapi-events.h"
#include "util/log.h"
#include "util/util.h"

/* Per handshake step (connect, each option reply). */
#define NBD_DRV_STEP_TIMEOUT_MS 10000

/* An asynchronous request's command (a free list, grown on demand). */
typedef struct NbdAio {
    NbdcCmd cmd;
    BlockRequest *req;
    struct BDRVNbd *s;
    bool fua_flush;             /* emulate FUA: flush after the write */
    struct NbdAio *next;
} NbdAio;

typedef struct BDRVNbd {
    BlockNode *bs;
    /* Where to connect (strings owned). */
    SockAddr addr;
    char *path, *host, *port;
    char *export;
    char *context;              /* "base:allocation" or x-dirty-bitmap */
    bool has_context;
    uint64_t size;
    uint16_t flags;             /* NBD_FLAG_* */
    uint32_t min_block;         /* bytes; 1 when the server gave none */
    uint32_t max_block;         /* bytes; 0 when the server gave none */
    /* TLS: creds pinned in objects as user tls_user (open to close);
     * tls.hostname is tls-hostname, else the inet host. */
    ObjectSet *objects;
    char *tls_id, *tls_user, *tls_hostname;
    NbdClientTls tls;
    NbdcEngine *eng;
    MonitorSet *events;
    Loop *loop;
    pthread_mutex_t lock;       /* free list, connecting_fd, cancelled */
    NbdAio *free_aio;
    int connecting_fd;          /* a handshake in progress, or -1 */
    bool cancelled;             /* the engine stops: no more handshakes */
} BDRVNbd;

/* ---- connecting ----------------------------------------------------- */

static void nbd_client_opts(BDRVNbd *s, NbdClientOpts *o,
                            const char **ctxs)
{
    ctxs[0] = s->context;
    *o = (NbdClientOpts) {
        .export_name = s->export,
        .meta_contexts = ctxs,
        .n_meta_contexts = 1,
        .timeout_ms = NBD_DRV_STEP_TIMEOUT_MS,
    };
    if (s->tls.creds != NULL) {
        o->starttls = nbd_client_starttls;
        o->starttls_opaque = &s->tls;
    }
}

/* The handshake on a new socket, which nbd_cancel() may shut down
 * meanwhile (a reconnect on the I/O thread must not keep a closing
 * node waiting for a server that stalls). */
static bool nbd_connect_cancellable(BDRVNbd *s, const NbdClientOpts *o,
                                    NbdcLink *link, NbdExportInfo *info,
                                    Error **errp)
{
    int fd = sock_connect(&s->addr, o->timeout_ms, errp);
    bool cancelled, ok;

    if (fd < 0) {
        return false;
    }
    pthread_mutex_lock(&s->lock);
    cancelled = s->cancelled;
    s->connecting_fd = cancelled ? -1 : fd;
    pthread_mutex_unlock(&s->lock);
    nbd_client_xport_init_plain(&link->xp, fd, o->timeout_ms);
    if (cancelled) {
        link->xp.ops->close(&link->xp);
        error_setg(errp, "The node is closing");
        return false;
    }
    ok = nbd_client_handshake(&link->xp, o, info, errp);
    pthread_mutex_lock(&s->lock);
    s->connecting_fd = -1;
    pthread_mutex_unlock(&s->lock);
    if (!ok) {
        link->xp.ops->close(&link->xp);
    }
    return ok;
}

/* The engine stops or aborts (any thread): a handshake in progress
 * fails now; after a stop, every later one too. */
static void nbd_cancel(void *opaque, bool stop)
{
    BDRVNbd *s = opaque;

    pthread_mutex_lock(&s->lock);
    s->cancelled = s->cancelled || stop;
    if (s->connecting_fd >= 0) {
        shutdown(s->connecting_fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&s->lock);
}

/* One connection: the handshake, then what the engine needs. */
static bool nbd_connect_one(BDRVNbd *s, NbdcLink *link, Error **errp)
{
    const char *ctxs[1];
    NbdClientOpts o;
    NbdExportInfo info;
    bool ok;

    nbd_client_opts(s, &o, ctxs);
    if (s->addr.type == SOCK_ADDR_FD) {
        ok = nbd_client_connect(&s->addr, &o, &link->xp, &info, errp);
    } else {
        ok = nbd_connect_cancellable(s, &o, link, &info, errp);
    }
    if (!ok) {
        return false;
    }
    link->size = info.size;
    link->flags = info.flags;
    link->structured = info.structured;
    link->extended = info.extended;
    link->has_context = false;
    for (size_t i = 0; i < info.n_contexts; i++) {
        if (strcmp(info.contexts[i].name, s->context) == 0) {
            link->has_context = true;
            link->context_id = info.contexts[i].id;
        }
    }
    /* doc/proto.md: a power of two up to 64 KiB; else ignored. */
    if (info.has_block_size && IS_POWER_OF_2(info.min_block) &&
        info.min_block <= 65536) {
        s->min_block = info.min_block;
    }
    if (info.has_block_size && info.max_block >= s->min_block) {
        s->max_block = info.max_block;
    }
    nbd_export_info_clear(&info);
    return true;
}

/* The engine's reconnect hook (its thread). */
static bool nbd_reconnect(void *opaque, unsigned idx, NbdcLink *link,
                          Error **errp)
{
    BDRVNbd *s = opaque;

    (void)idx;
    if (s->addr.type == SOCK_ADDR_FD) {
        error_setg(errp, "A socket passed as a descriptor cannot be "
                   "reconnected");
        return false;
    }
    return nbd_connect_one(s, link, errp);
}

typedef struct NbdEvent {
    MonitorSet *events;
    char *node;
    char *reason;
    bool up;
} NbdEvent;

static void nbd_event_cb(void *opaque)
{
    NbdEvent *ev = opaque;

    if (ev->up) {
        qapi_event_send_nbd_client_reconnected(ev->events, ev->node,
                                               ev->reason);
    } else {
        qapi_event_send_nbd_client_disconnected(ev->events, ev->node,
                                                ev->reason);
    }
    free(ev->node);
    free(ev->reason);
    free(ev);
}

/* The engine's state hook (its thread): an event on the loop. */
static void nbd_state(void *opaque, bool up, const char *reason)
{
    BDRVNbd *s = opaque;
    const char *name = __atomic_load_n(&s->bs->node_name, __ATOMIC_ACQUIRE);
    NbdEvent *ev;

    if (s->loop == NULL || s->events == NULL) {
        return;
    }
    ev = XNEW(NbdEvent);
    ev->events = s->events;
    ev->node = xstrdup(name != NULL ? name : "");
    ev->reason = xstrdup(reason);
    ev->up = up;
    loop_post(s->loop, nbd_event_cb, ev);
}

/* ---- open and close ------------------------------------------------- */

static bool nbd_parse_addr(BDRVNbd *s, const SocketAddress *sa,
                           Error **errp)
{
    uint64_t fd;

    switch (sa->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        s->path = xstrdup(sa->u.q_unix.path);
        s->addr = (SockAddr) { .type = SOCK_ADDR_UNIX, .path = s->path };
        return true;
    case SOCKET_ADDRESS_TYPE_INET:
        s->host = xstrdup(sa->u.inet.host);
        s->port = xstrdup(sa->u.inet.port);
        s->addr = (SockAddr) { .type = SOCK_ADDR_INET, .host = s->host,
                               .port = s->port };
        return true;
    case SOCKET_ADDRESS_TYPE_FD:
        if (!parse_uint64(sa->u.fd.str, &fd) || fd > INT32_MAX ||
            fd <= 2) {
            error_setg(errp, "Invalid file descriptor '%s' (a number of an "
                       "open socket)", sa->u.fd.str);
            return false;
        }
        s->addr = (SockAddr) { .type = SOCK_ADDR_FD, .fd = (int)fd };
        return true;
    default:
        error_setg(errp, "Unsupported socket address type for nbd");
        return false;
    }
}

/* QEMU's pseudo file name of the node (query-named-block-nodes). */
static char *nbd_filename(const BDRVNbd *s)
{
    if (s->addr.type == SOCK_ADDR_UNIX) {
        return s->export != NULL
               ? xasprintf("nbd+unix:///%s?socket=%s", s->export, s->path)
               : xasprintf("nbd+unix://?socket=%s", s->path);
    }
    if (s->addr.type == SOCK_ADDR_INET && strchr(s->host, ':') == NULL) {
        return s->export != NULL
               ? xasprintf("nbd://%s:%s/%s", s->host, s->port, s->export)
               : xasprintf("nbd://%s:%s", s->host, s->port);
    }
    return xasprintf("json:{\"driver\": \"nbd\", \"export\": \"%s\"}",
                     s->export != NULL ? s->export : "");
}

/* The first connection, retried up to open_timeout seconds. */
static bool nbd_connect_first(BDRVNbd *s, uint32_t open_timeout,
                              NbdcLink *link, Error **errp)
{
    struct timespec t0, now;
    uint64_t backoff_ms = 50;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        Error *err = NULL;

        if (nbd_connect_one(s, link, &err)) {
            return true;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (s->addr.type == SOCK_ADDR_FD ||
            (uint64_t)(now.tv_sec - t0.tv_sec) >= open_timeout) {
            error_propagate(errp, err);
            return false;
        }
        error_free(err);
        usleep((useconds_t)(backoff_ms * 1000));
        backoff_ms = MIN(backoff_ms * 2, (uint64_t)1000);
    }
}

static void nbd_link_close(NbdcLink *link)
{
    link->xp.ops->close(&link->xp);
}

static void nbd_free_state(BDRVNbd *s);

/* tls-creds: the credentials, resolved and pinned now (any thread:
 * object_use_tls_creds takes the set's lock) until nbd_free_state. */
static bool nbd_tls_setup(BDRVNbd *s, const BlockdevOptionsNbd *o,
                          const char *filename, const BlockHost *host,
                          Error **errp)
{
    static unsigned next_user;
    unsigned n;

    if (!o->has_tls_creds) {
        if (o->has_tls_hostname) {
            error_setg(errp, "tls-hostname is set but tls-creds is not");
            return false;
        }
        return true;
    }
    if (host == NULL || host->objects == NULL) {
        error_setg(errp, "No TLS credentials with id '%s'", o->tls_creds);
        return false;
    }
    n = __atomic_add_fetch(&next_user, 1, __ATOMIC_RELAXED);
    /* The node has no name yet: its server and a serial number. */
    s->tls_user = xasprintf("nbd node #%u (%s)", n, filename);
    s->tls.creds = object_use_tls_creds(host->objects, o->tls_creds,
                                        TLS_ENDPOINT_CLIENT, s->tls_user,
                                        errp);
    if (s->tls.creds == NULL) {
        return false;
    }
    s->objects = host->objects;
    s->tls_id = xstrdup(o->tls_creds);
    if (o->has_tls_hostname) {
        s->tls_hostname = xstrdup(o->tls_hostname);
    } else if (s->addr.type == SOCK_ADDR_INET) {
        s->tls_hostname = xstrdup(s->host);
    }
    s->tls.hostname = s->tls_hostname;
    return true;
}

static bool nbd_do_open(BlockNode *bs, const void *opts, Error **errp)
{
    const BlockdevOptionsNbd *o = opts;
    BDRVNbd *s = bs->opaque;
    const BlockHost *host = bs->graph != NULL ? blk_graph_host(bs->graph)
                                              : NULL;
    NbdcLink links[NBD_DRIVER_MULTI_CONN];
    unsigned n = 1;
    NbdcConfig cfg;

    if (host != NULL) {
        s->loop = host->loop;
        s->events = host->events;
    }
    if (!nbd_parse_addr(s, o->server, errp)) {
        return false;
    }
    s->export = o->has_export ? xstrdup(o->export) : NULL;
    s->context = xstrdup(o->has_x_dirty_bitmap ? o->x_dirty_bitmap
                                               : "base:allocation");
    bs->filename = nbd_filename(s);
    s->min_block = 1;
    if (!nbd_tls_setup(s, o, bs->filename, host, errp)) {
        if (s->addr.type == SOCK_ADDR_FD) {
            close(s->addr.fd);      /* ours since blockdev-add took it */
        }
        return false;
    }

    if (!nbd_connect_first(s, o->has_open_timeout ? o->open_timeout : 0,
                           &links[0], errp)) {
        return false;
    }
    s->size = links[0].size;
    s->flags = links[0].flags;
    s->has_context = links[0].has_context;
    if (o->has_x_dirty_bitmap && !s->has_context) {
        error_setg(errp, "requested x-dirty-bitmap %s not found",
                   o->x_dirty_bitmap);
        nbd_link_close(&links[0]);
        return false;
    }
    if ((s->flags & NBD_FLAG_READ_ONLY) && !bs->read_only) {
        if (!bs->auto_read_only) {
            error_setg(errp, "NBD export is read-only");
            nbd_link_close(&links[0]);
            return false;
        }
        bs->read_only = true;
    }
    if ((s->flags & NBD_FLAG_CAN_MULTI_CONN) && s->addr.type != SOCK_ADDR_FD) {
        for (; n < NBD_DRIVER_MULTI_CONN; n++) {
            Error *err = NULL;

            if (!nbd_connect_one(s, &links[n], &err)) {
                log_warn("nbd '%s': extra connection failed: %s",
                         bs->filename, error_get_pretty(err));
                error_free(err);
                break;
            }
            if (links[n].size != s->size || links[n].flags != s->flags ||
                links[n].has_context != s->has_context) {
                log_warn("nbd '%s': the export changed between two "
                         "connections", bs->filename);
                nbd_link_close(&links[n]);
                break;
            }
        }
    }
    bs->request_alignment = s->min_block;
    cfg = (NbdcConfig) {
        .name = bs->filename,
        .min_block = s->min_block,
        .max_payload = MIN(s->max_block != 0 ? s->max_block
                                             : (uint32_t)NBD_MAX_PAYLOAD,
                           (uint32_t)NBD_MAX_PAYLOAD),
        .reconnect_delay = o->has_reconnect_delay ? o->reconnect_delay : 0,
        .connect = nbd_reconnect,
        .cancel = nbd_cancel,
        .state = nbd_state,
        .opaque = s,
    };
    s->eng = nbdc_engine_new(&cfg, links, n, errp);
    return s->eng != NULL;
}

static bool nbd_open(BlockNode *bs, const void *opts, Error **errp)
{
    BDRVNbd *s = bs->opaque;

    s->bs = bs;
    s->connecting_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    if (!nbd_do_open(bs, opts, errp)) {
        nbd_free_state(s);
        return false;
    }
    return true;
}

/* Free what open allocated (open failed, or close). */
static void nbd_free_state(BDRVNbd *s)
{
    while (s->free_aio != NULL) {
        NbdAio *a = s->free_aio;
        s->free_aio = a->next;
        free(a);
    }
    pthread_mutex_destroy(&s->lock);
    if (s->tls.creds != NULL) {
        object_remove_user(s->objects, s->tls_id, s->tls_user);
        s->tls.creds = NULL;
    }
    free(s->tls_id);
    free(s->tls_user);
    free(s->tls_hostname);
    s->tls_id = s->tls_user = s->tls_hostname = NULL;
    free(s->path);
    free(s->host);
    free(s->port);
    free(s->export);
    free(s->context);
    s->path = s->host = s->port = s->export = s->context = NULL;
}

static void nbd_close(BlockNode *bs)
{
    BDRVNbd *s = bs->opaque;

    nbdc_engine_free(s->eng);
    s->eng = NULL;
    nbd_free_state(s);
}

static int64_t nbd_get_length(BlockNode *bs)
{
    BDRVNbd *s = bs->opaque;

    return (int64_t)s->size;
}

static void nbd_get_caps(BlockNode *bs, BlockCaps *caps)
{
    BDRVNbd *s = bs->opaque;

    caps->fua = (s->flags & NBD_FLAG_SEND_FUA) != 0;
    caps->zero = true;          /* emulated without WRITE_ZEROES */
    caps->fast_zero = (s->flags & NBD_FLAG_SEND_WRITE_ZEROES) &&
                      (s->flags & NBD_FLAG_SEND_FAST_ZERO);
    caps->discard = (s->flags & NBD_FLAG_SEND_TRIM) != 0;
    caps->cache = (s->flags & NBD_FLAG_SEND_CACHE) != 0;
    caps->multi_conn = (s->flags & NBD_FLAG_CAN_MULTI_CONN) != 0;
}

/* ---- requests ------------------------------------------------------- */

/* Fill cmd for a block-layer request.  Returns 1 to send it, 0 when
 * there is nothing to send (a hint the server does not take, a flush
 * it does not need), or -errno.  *fua_flush: follow with a flush. */
static int nbd_fill_cmd(BDRVNbd *s, BlockRequestType type, uint64_t offset,
                        uint64_t bytes, void *buf, uint32_t flags,
                        NbdcCmd *cmd, bool *fua_flush)
{
    uint16_t f = s->flags;

    *fua_flush = false;
    *cmd = (NbdcCmd) { .offset = offset, .length = bytes, .buf = buf };
    if ((flags & BLK_REQ_FUA) &&
        (type == BLK_OP_WRITE || type == BLK_OP_WRITE_ZEROES)) {
        if (f & NBD_FLAG_SEND_FUA) {
            cmd->flags |= NBD_CMD_FLAG_FUA;
        } else {
            *fua_flush = (f & NBD_FLAG_SEND_FLUSH) != 0;
        }
    }
    switch (type) {
    case BLK_OP_READ:
        cmd->type = NBD_CMD_READ;
        return 1;
    case BLK_OP_WRITE:
        cmd->type = NBD_CMD_WRITE;
        return 1;
    case BLK_OP_WRITE_ZEROES:
        if (!(f & NBD_FLAG_SEND_WRITE_ZEROES) ||
            ((flags & BLK_REQ_NO_FALLBACK) && !(f & NBD_FLAG_SEND_FAST_ZERO))) {
            return -ENOTSUP;
        }
        cmd->type = NBD_CMD_WRITE_ZEROES;
        cmd->buf = NULL;
        if (!(flags & BLK_REQ_MAY_UNMAP)) {
            cmd->flags |= NBD_CMD_FLAG_NO_HOLE;
        }
        if (flags & BLK_REQ_NO_FALLBACK) {
            cmd->flags |= NBD_CMD_FLAG_FAST_ZERO;
        }
        return 1;
    case BLK_OP_DISCARD:
        cmd->type = NBD_CMD_TRIM;
        cmd->buf = NULL;
        return (f & NBD_FLAG_SEND_TRIM) ? 1 : 0;
    case BLK_OP_FLUSH:
        cmd->type = NBD_CMD_FLUSH;
        cmd->offset = cmd->length = 0;
        cmd->buf = NULL;
        return (f & NBD_FLAG_SEND_FLUSH) ? 1 : 0;
    case BLK_OP_CACHE:
        cmd->type = NBD_CMD_CACHE;
        cmd->buf = NULL;
        return (f & NBD_FLAG_SEND_CACHE) ? 1 : 0;
    default:
        return -EINVAL;
    }
}

/* Synchronous: submit to the engine and wait (any thread). */
static int nbd_run(BlockNode *bs, BlockRequestType type, uint64_t offset,
                   uint64_t bytes, void *buf, uint32_t flags)
{
    BDRVNbd *s = bs->opaque;
    NbdcCmd cmd;
    bool fua_flush;
    int ret = nbd_fill_cmd(s, type, offset, bytes, buf, flags, &cmd,
                           &fua_flush);

    if (ret <= 0) {
        return ret;
    }
    ret = nbdc_run(s->eng, &cmd);
    if (ret == 0 && fua_flush) {
        cmd = (NbdcCmd) { .type = NBD_CMD_FLUSH };
        ret = nbdc_run(s->eng, &cmd);
    }
    return ret;
}

/* ---- the server's minimum block size ---------------------------------
 *
 * A server with a minimum block size (doc/proto.md "Block size
 * constraints") may refuse requests not aligned to it.  The block layer
 * sends only aligned ranges to aio_submit; the synchronous callbacks
 * take any range: reads through a bounce buffer, writes by
 * read-modify-write of the edge blocks under bs->rmw_lock (unaligned
 * writes are serialised with each other, not with aligned ones: a
 * client that overlaps them gets one or the other), zeroes by the
 * generic zero-buffer fallback, discards shrunk to the aligned middle,
 * cache hints dropped. */

static bool nbd_aligned(const BDRVNbd *s, uint64_t offset, uint64_t bytes)
{
    return IS_ALIGNED(offset, (uint64_t)s->min_block) &&
           IS_ALIGNED(bytes, (uint64_t)s->min_block);
}

/* The aligned range around [offset, offset+bytes), clamped to the
 * export (whose size the server made a multiple of min_block). */
static void nbd_align_out(const BDRVNbd *s, uint64_t offset, uint64_t bytes,
                          uint64_t *aoff, uint64_t *alen)
{
    uint64_t end = MIN(ALIGN_UP(offset + bytes, (uint64_t)s->min_block),
                       s->size);

    *aoff = ALIGN_DOWN(offset, (uint64_t)s->min_block);
    *alen = end - *aoff;
}

static int nbd_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                     void *buf, uint32_t flags)
{
    BDRVNbd *s = bs->opaque;
    uint64_t aoff, alen;
    uint8_t *bounce;
    int ret;

    if (nbd_aligned(s, offset, bytes)) {
        return nbd_run(bs, BLK_OP_READ, offset, bytes, buf, flags);
    }
    nbd_align_out(s, offset, bytes, &aoff, &alen);
    bounce = xmalloc(alen);
    ret = nbd_run(bs, BLK_OP_READ, aoff, alen, bounce, flags);
    if (ret == 0) {
        memcpy(buf, bounce + (offset - aoff), bytes);
    }
    free(bounce);
    return ret;
}

static int nbd_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                      const void *buf, uint32_t flags)
{
    BDRVNbd *s = bs->opaque;
    uint64_t aoff, alen;
    uint8_t *bounce;
    int ret;

    if (nbd_aligned(s, offset, bytes)) {
        return nbd_run(bs, BLK_OP_WRITE, offset, bytes, (void *)buf, flags);
    }
    nbd_align_out(s, offset, bytes, &aoff, &alen);
    bounce = xmalloc(alen);
    pthread_mutex_lock(&bs->rmw_lock);
    ret = nbd_run(bs, BLK_OP_READ, aoff, alen, bounce, 0);
    if (ret == 0) {
        memcpy(bounce + (offset - aoff), buf, bytes);
        ret = nbd_run(bs, BLK_OP_WRITE, aoff, alen, bounce, flags);
    }
    pthread_mutex_unlock(&bs->rmw_lock);
    free(bounce);
    return ret;
}

static int nbd_pwrite_zeroes(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             uint32_t flags)
{
    BDRVNbd *s = bs->opaque;

    if (!nbd_aligned(s, offset, bytes)) {
        return -ENOTSUP;        /* zero buffers through nbd_pwrite */
    }
    return nbd_run(bs, BLK_OP_WRITE_ZEROES, offset, bytes, NULL, flags);
}

static int nbd_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    BDRVNbd *s = bs->opaque;
    uint64_t start = ALIGN_UP(offset, (uint64_t)s->min_block);
    uint64_t end = ALIGN_DOWN(offset + bytes, (uint64_t)s->min_block);

    if (end <= start) {
        return 0;
    }
    return nbd_run(bs, BLK_OP_DISCARD, start, end - start, NULL, 0);
}

static int nbd_flush(BlockNode *bs)
{
    return nbd_run(bs, BLK_OP_FLUSH, 0, 0, NULL, 0);
}

static int nbd_prefetch(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    BDRVNbd *s = bs->opaque;

    if (!nbd_aligned(s, offset, bytes)) {
        return 0;               /* a hint */
    }
    return nbd_run(bs, BLK_OP_CACHE, offset, bytes, NULL, 0);
}

/* Block status from the selected context (base:allocation, or the
 * x-dirty-bitmap one read the same way, as QEMU does: a set bit 0 is a
 * hole).  A protocol node, as in QEMU: data or zeroes count as
 * allocated.  Without the context (no structured replies, e.g.
 * nbd-server) everything is data. */
static int nbd_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BlockNode **file)
{
    BDRVNbd *s = bs->opaque;
    NbdcCmd cmd;
    int ret;

    *map = offset;
    *file = bs;
    if (!s->has_context || !IS_ALIGNED(offset, (uint64_t)s->min_block) ||
        bytes < s->min_block) {
        /* No status (or a range the server may refuse): data, up to
         * the next block boundary when unaligned. */
        *pnum = IS_ALIGNED(offset, (uint64_t)s->min_block)
                ? bytes
                : MIN(bytes, ALIGN_UP(offset + 1, (uint64_t)s->min_block) -
                             offset);
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED |
               BLK_STATUS_OFFSET_VALID;
    }
    bytes = ALIGN_DOWN(bytes, (uint64_t)s->min_block);
    cmd = (NbdcCmd) {
        .type = NBD_CMD_BLOCK_STATUS, .flags = NBD_CMD_FLAG_REQ_ONE,
        .offset = offset,
        .length = MIN(bytes, (uint64_t)(1u << 30)),   /* aligned */
    };
    ret = nbdc_run(s->eng, &cmd);
    if (ret < 0) {
        return ret;
    }
    *pnum = cmd.status_length;
    ret = BLK_STATUS_OFFSET_VALID;
    if (!(cmd.status_flags & NBD_STATE_HOLE)) {
        ret |= BLK_STATUS_DATA;
    }
    if (cmd.status_flags & NBD_STATE_ZERO) {
        ret |= BLK_STATUS_ZERO;
    }
    if (ret & (BLK_STATUS_DATA | BLK_STATUS_ZERO)) {
        ret |= BLK_STATUS_ALLOCATED;
    }
    return ret;
}

/* ---- asynchronous requests ------------------------------------------ */

static NbdAio *nbd_aio_get(BDRVNbd *s)
{
    NbdAio *a;

    pthread_mutex_lock(&s->lock);
    a = s->free_aio;
    if (a != NULL) {
        s->free_aio = a->next;
    }
    pthread_mutex_unlock(&s->lock);
    if (a == NULL) {
        a = XNEW(NbdAio);
        a->s = s;
    }
    return a;
}

static void nbd_aio_put(BDRVNbd *s, NbdAio *a)
{
    pthread_mutex_lock(&s->lock);
    a->next = s->free_aio;
    s->free_aio = a;
    pthread_mutex_unlock(&s->lock);
}

/* The engine's completion (its thread). */
static void nbd_aio_done(NbdcCmd *cmd)
{
    NbdAio *a = container_of(cmd, NbdAio, cmd);
    BDRVNbd *s = a->s;
    BlockRequest *req = a->req;
    int ret = cmd->ret;

    if (ret == 0 && a->fua_flush) {
        a->fua_flush = false;
        a->cmd = (NbdcCmd) { .type = NBD_CMD_FLUSH, .done = nbd_aio_done };
        nbdc_submit(s->eng, &a->cmd);
        return;
    }
    nbd_aio_put(s, a);
    blk_aio_complete(req, ret);
}

/* The node's last user goes (a hard export delete) while requests may
 * wait on a server that does not answer: fail them now (loop thread). */
static void nbd_abort_requests(BlockNode *bs)
{
    BDRVNbd *s = bs->opaque;

    if (s->eng != NULL) {
        nbdc_engine_abort(s->eng);
    }
}

static void nbd_aio_submit(BlockNode *bs, BlockRequest *req)
{
    BDRVNbd *s = bs->opaque;
    NbdAio *a = nbd_aio_get(s);
    int ret = nbd_fill_cmd(s, req->type, req->offset, req->bytes, req->buf,
                           req->flags, &a->cmd, &a->fua_flush);

    if (ret <= 0) {
        nbd_aio_put(s, a);
        blk_aio_complete(req, ret);
        return;
    }
    a->req = req;
    a->cmd.done = nbd_aio_done;
    nbdc_submit(s->eng, &a->cmd);
}

const BlockDriver nbd_block_driver = {
    .format_name = "nbd",
    .instance_size = sizeof(BDRVNbd),
    .open = nbd_open,
    .close = nbd_close,
    .get_length = nbd_get_length,
    .pread = nbd_pread,
    .pwrite = nbd_pwrite,
    .pwrite_zeroes = nbd_pwrite_zeroes,
    .pdiscard = nbd_pdiscard,
    .flush = nbd_flush,
    .block_status = nbd_block_status,
    .get_caps = nbd_get_caps,
    .prefetch = nbd_prefetch,
    .aio_submit = nbd_aio_submit,
    .abort_requests = nbd_abort_requests,
};

void nbd_driver_register(BlockGraph *g)
{
    blk_graph_register_driver(g, &nbd_block_driver);
}

static void nbd_shutdown_node(BlockNode *bs, void *opaque)
{
    (void)opaque;
    if (bs->drv == &nbd_block_driver && bs->opened) {
        nbdc_engine_stop(((BDRVNbd *)bs->opaque)->eng);
    }
}

void nbd_driver_shutdown(BlockGraph *g)
{
    blk_foreach_node(g, nbd_shutdown_node, NULL);
}
