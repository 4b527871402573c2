/* rbd.c - the "rbd" driver: a Ceph RBD image through librbd.
 *
 * Options are QEMU's (BlockdevOptionsRbd): pool, namespace, image,
 * snapshot, conf, user, auth-client-required, key-secret (a secret
 * object holding the base64 cephx key) and server (the monitors).
 *
 *   blk_aio_submit ──aio_submit──> rbd_aio_{read2,write2,discard,
 *        write_zeroes,flush} ──librbd's own threads──> rbd_aio_done
 *        ──blk_aio_complete──> loop_post ──> req->cb on the loop
 *
 * No worker waits on Ceph: librbd completes requests on its own
 * threads and the completion is posted to the loop, as the nbd driver
 * does.  The synchronous callbacks (rbd_read2 ...) serve what runs on
 * the pool: a qcow2 above, block status, the command line.
 *
 * FUA is a flush after the write (librbd has no per-write FUA).  Block
 * status comes from rbd_diff_iterate2 over whole objects, which is fast
 * with the fast-diff feature (Ceph's default); without it, or when the
 * object map is flagged invalid, everything reads as data, as QEMU does.
 *
 * librbd's C calls take at most INT_MAX bytes: longer zero and discard
 * ranges go in RBD_MAX_CHUNK pieces, one after the other.
 */
#include "blockdev/block.h"

#include <errno.h>
#include <limits.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "crypto/object.h"
#include "util/cleanup.h"
#include "util/module.h"
#include "util/util.h"

#define RBD_MAX_CHUNK (1ull << 30)   /* bytes per librbd call */

typedef struct RbdState {
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t image;
    bool have_cluster, have_io, have_image;
    bool fast_diff;              /* the image has RBD_FEATURE_FAST_DIFF */
} RbdState;

/* One asynchronous request on its way through librbd. */
typedef struct RbdAio {
    BlockRequest *req;
    uint64_t pos, end;           /* zeroes/discard: what is left */
    bool flushing;               /* the FUA flush after a write runs */
} RbdAio;

/* ---- open / close ------------------------------------------------- */

static char *rbd_drv_mon_host(const InetSocketAddressBaseList *l)
{
    size_t len = 1;
    char *out;

    for (size_t i = 0; i < l->n; i++) {
        len += strlen(l->v[i]->host) + strlen(l->v[i]->port) + 4;
    }
    out = xzalloc(len);
    for (size_t i = 0; i < l->n; i++) {
        const char *h = l->v[i]->host;
        bool v6 = strchr(h, ':') != NULL;

        if (out[0] != '\0') {
            strcat(out, ",");
        }
        strcat(out, v6 ? "[" : "");
        strcat(out, h);
        strcat(out, v6 ? "]:" : ":");
        strcat(out, l->v[i]->port);
    }
    return out;
}

static bool rbd_drv_conf_set(RbdState *s, const char *key,
                             const char *value, Error **errp)
{
    int r = rados_conf_set(s->cluster, key, value);

    if (r < 0) {
        error_setg_errno(errp, -r, "Could not set Ceph option '%s'", key);
        return false;
    }
    return true;
}

/* The cluster handle configured from the options (not connected). */
static bool rbd_drv_configure(BlockNode *bs, RbdState *s,
                              const BlockdevOptionsRbd *o, Error **errp)
{
    const BlockHost *host = blk_graph_host(bs->graph);
    int r;

    r = rados_create(&s->cluster, o->has_user ? o->user : NULL);
    if (r < 0) {
        error_setg_errno(errp, -r, "error initializing");
        return false;
    }
    s->have_cluster = true;
    /* Without conf, librados' search path ($CEPH_CONF, /etc/ceph) if
     * there is a file there (QEMU ignores its absence too). */
    r = rados_conf_read_file(s->cluster, o->has_conf ? o->conf : NULL);
    if (r < 0 && o->has_conf) {
        error_setg_errno(errp, -r, "error reading conf file %s", o->conf);
        return false;
    }
    if (o->has_server) {
        CLEANUP_FREE char *mon = rbd_drv_mon_host(o->server);

        if (!rbd_drv_conf_set(s, "mon_host", mon, errp)) {
            return false;
        }
    }
    if (o->has_auth_client_required) {
        char modes[64] = "";

        for (size_t i = 0; i < o->auth_client_required->n; i++) {
            const char *m = RbdAuthMode_str(o->auth_client_required->v[i]);

            if (strlen(modes) + strlen(m) + 2 > sizeof(modes)) {
                break;
            }
            if (modes[0] != '\0') {
                strcat(modes, ";");
            }
            strcat(modes, m);
        }
        if (!rbd_drv_conf_set(s, "auth_client_required", modes, errp)) {
            return false;
        }
    }
    if (o->has_key_secret) {
        const uint8_t *key;
        size_t len;

        if (host->objects == NULL) {
            error_setg(errp, "No secret with id '%s'", o->key_secret);
            return false;
        }
        key = object_get_secret(host->objects, o->key_secret, &len, errp);
        if (key == NULL) {
            return false;
        }
        if (memchr(key, '\0', len) != NULL) {
            error_setg(errp, "Secret '%s' is not a base64 cephx key",
                       o->key_secret);
            return false;
        }
        if (!rbd_drv_conf_set(s, "key", (const char *)key, errp)) {
            return false;
        }
    }
    /* cache.direct=on: no librbd write-back cache (QEMU's rule). */
    return rbd_drv_conf_set(s, "rbd_cache",
                            bs->cache_direct ? "false" : "true", errp);
}

static void rbd_drv_free_state(RbdState *s)
{
    if (s->have_image) {
        rbd_close(s->image);
        s->have_image = false;
    }
    if (s->have_io) {
        rados_ioctx_destroy(s->io);
        s->have_io = false;
    }
    if (s->have_cluster) {
        rados_shutdown(s->cluster);
        s->have_cluster = false;
    }
}

static bool rbd_drv_open(BlockNode *bs, const void *opts, Error **errp)
{
    const BlockdevOptionsRbd *o = opts;
    RbdState *s = bs->opaque;
    uint64_t features = 0;
    int r;

    if (o->has_snapshot && !bs->read_only) {
        if (!bs->auto_read_only) {
            error_setg(errp, "Snapshots of rbd images are read-only: "
                       "open snapshot '%s' with read-only=on",
                       o->snapshot);
            return false;
        }
        bs->read_only = true;
    }
    bs->filename = xasprintf("rbd:%s/%s%s%s%s%s", o->pool,
                             o->has_namespace ? o->namespace : "",
                             o->has_namespace ? "/" : "", o->image,
                             o->has_snapshot ? "@" : "",
                             o->has_snapshot ? o->snapshot : "");
    if (!rbd_drv_configure(bs, s, o, errp)) {
        goto fail;
    }
    r = rados_connect(s->cluster);
    if (r < 0) {
        error_setg_errno(errp, -r, "error connecting");
        goto fail;
    }
    r = rados_ioctx_create(s->cluster, o->pool, &s->io);
    if (r < 0) {
        error_setg_errno(errp, -r, "error opening pool %s", o->pool);
        goto fail;
    }
    s->have_io = true;
    if (o->has_namespace) {
        rados_ioctx_set_namespace(s->io, o->namespace);
    }
    /* Read-only: no exclusive lock, so several daemons share it. */
    r = bs->read_only
        ? rbd_open_read_only(s->io, o->image, &s->image,
                             o->has_snapshot ? o->snapshot : NULL)
        : rbd_open(s->io, o->image, &s->image,
                   o->has_snapshot ? o->snapshot : NULL);
    if (r < 0) {
        error_setg_errno(errp, -r, "error reading header from %s",
                         o->image);
        goto fail;
    }
    s->have_image = true;
    if (rbd_get_features(s->image, &features) == 0) {
        s->fast_diff = (features & RBD_FEATURE_FAST_DIFF) != 0;
    }
    return true;

fail:
    rbd_drv_free_state(s);
    return false;
}

static void rbd_drv_close(BlockNode *bs)
{
    rbd_drv_free_state(bs->opaque);
}

static int64_t rbd_drv_get_length(BlockNode *bs)
{
    RbdState *s = bs->opaque;
    uint64_t size;
    int r = rbd_get_size(s->image, &size);

    if (r < 0) {
        return r;
    }
    return size > INT64_MAX ? -EFBIG : (int64_t)size;
}

/* ---- synchronous I/O (worker threads) ----------------------------- */

/* librbd's failures as the data path reports them.  A request that
 * timed out (rados_osd_op_timeout, set in the node's conf: librbd has
 * no timeout by default and waits for the cluster, as under QEMU) and
 * a client the cluster blocklisted (librados' EBLOCKLISTED is
 * ESHUTDOWN) are I/O errors: NBD would otherwise carry them as EINVAL
 * (a bad request) and ESHUTDOWN (the server going away). */
static int rbd_drv_errno(int r)
{
    return r == -ETIMEDOUT || r == -ESHUTDOWN ? -EIO : r;
}

static int rbd_drv_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                         void *buf, uint32_t flags)
{
    RbdState *s = bs->opaque;
    uint8_t *p = buf;

    (void)flags;
    while (bytes > 0) {
        size_t n = (size_t)MIN(bytes, RBD_MAX_CHUNK);
        ssize_t r = rbd_read2(s->image, offset, n, (char *)p, 0);

        if (r < 0) {
            return rbd_drv_errno((int)r);
        }
        if ((size_t)r < n) {
            memset(p + r, 0, n - (size_t)r);
        }
        p += n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int rbd_drv_flush_image(BlockNode *bs)
{
    RbdState *s = bs->opaque;

    return rbd_drv_errno(rbd_flush(s->image));
}

static int rbd_drv_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                          const void *buf, uint32_t flags)
{
    RbdState *s = bs->opaque;
    const uint8_t *p = buf;

    while (bytes > 0) {
        size_t n = (size_t)MIN(bytes, RBD_MAX_CHUNK);
        ssize_t r = rbd_write2(s->image, offset, n, (const char *)p, 0);

        if (r < 0) {
            return rbd_drv_errno((int)r);
        }
        if ((size_t)r != n) {
            return -EIO;
        }
        p += n;
        offset += n;
        bytes -= n;
    }
    return (flags & BLK_REQ_FUA) ? rbd_drv_flush_image(bs) : 0;
}

/* Without MAY_UNMAP (NBD's NO_HOLE, or discard=ignore on the node) the
 * zeroed range stays allocated, as QEMU asks librbd too; otherwise
 * librbd may deallocate whole objects. */
static int rbd_drv_zero_flags(uint32_t flags)
{
    return (flags & BLK_REQ_MAY_UNMAP)
           ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
}

static int rbd_drv_pwrite_zeroes(BlockNode *bs, uint64_t offset,
                                 uint64_t bytes, uint32_t flags)
{
    RbdState *s = bs->opaque;

    while (bytes > 0) {
        size_t n = (size_t)MIN(bytes, RBD_MAX_CHUNK);
        ssize_t r = rbd_write_zeroes(s->image, offset, n,
                                     rbd_drv_zero_flags(flags), 0);

        if (r < 0) {
            return rbd_drv_errno((int)r);
        }
        offset += n;
        bytes -= n;
    }
    return (flags & BLK_REQ_FUA) ? rbd_drv_flush_image(bs) : 0;
}

static int rbd_drv_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    RbdState *s = bs->opaque;

    while (bytes > 0) {
        uint64_t n = MIN(bytes, RBD_MAX_CHUNK);
        int r = rbd_discard(s->image, offset, n);

        if (r < 0) {
            return rbd_drv_errno(r);
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

/* ---- block status ------------------------------------------------- */

/* The first allocated extent at or after start, merged with the ones
 * right behind it. */
typedef struct RbdDiffWalk {
    uint64_t start, end;         /* the range asked */
    bool found;
    uint64_t dstart, dend;       /* the allocated run found */
} RbdDiffWalk;

#define RBD_DIFF_STOP (-9000)    /* stop the walk early: not an errno */

static int rbd_drv_diff_cb(uint64_t offs, size_t len, int exists,
                           void *opaque)
{
    RbdDiffWalk *w = opaque;
    uint64_t a = MAX(offs, w->start), b = MIN(offs + len, w->end);

    if (!exists || a >= b) {
        return 0;
    }
    if (!w->found) {
        w->found = true;
        w->dstart = a;
        w->dend = b;
        return 0;
    }
    if (a <= w->dend) {
        w->dend = MAX(w->dend, b);
        return 0;
    }
    return RBD_DIFF_STOP;
}

static int rbd_drv_block_status(BlockNode *bs, uint64_t offset,
                                uint64_t bytes, uint64_t *pnum,
                                uint64_t *map, BlockNode **file)
{
    RbdState *s = bs->opaque;
    RbdDiffWalk w = { .start = offset, .end = offset + bytes };
    uint64_t flags = 0;
    int r;

    (void)map;
    (void)file;
    *pnum = bytes;
    if (!s->fast_diff || rbd_get_flags(s->image, &flags) < 0 ||
        (flags & RBD_FLAG_FAST_DIFF_INVALID)) {
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
    }
    r = rbd_diff_iterate2(s->image, NULL, offset, bytes, 1, 1,
                          rbd_drv_diff_cb, &w);
    if (r < 0 && r != RBD_DIFF_STOP) {
        return rbd_drv_errno(r);
    }
    if (w.found && w.dstart <= offset) {
        *pnum = w.dend - offset;
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
    }
    /* A hole, up to the first data (or the end of the range). */
    *pnum = (w.found ? w.dstart : w.end) - offset;
    return BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
}

/* ---- resize, capabilities ----------------------------------------- */

static bool rbd_drv_truncate(BlockNode *bs, uint64_t size, Error **errp)
{
    RbdState *s = bs->opaque;
    int r = rbd_resize(s->image, size);

    if (r < 0) {
        error_setg_errno(errp, -r, "failed to resize rbd image");
        return false;
    }
    return true;
}

static void rbd_drv_get_caps(BlockNode *bs, BlockCaps *caps)
{
    (void)bs;
    caps->fua = true;
    caps->zero = true;
    caps->fast_zero = true;
    caps->discard = true;
    /* One librbd image handle (and cache) serves every user. */
    caps->multi_conn = true;
}

/* ---- asynchronous I/O (librbd's threads complete) ----------------- */

static int rbd_drv_aio_start(RbdAio *a);

static void rbd_drv_aio_done(rbd_completion_t c, void *opaque)
{
    RbdAio *a = opaque;
    BlockRequest *req = a->req;
    ssize_t r = rbd_aio_get_return_value(c);

    rbd_aio_release(c);
    if (r >= 0) {
        if (req->type == BLK_OP_READ && (uint64_t)r < req->bytes) {
            memset((uint8_t *)req->buf + r, 0, req->bytes - (uint64_t)r);
        }
        if ((req->type == BLK_OP_WRITE_ZEROES ||
             req->type == BLK_OP_DISCARD) && a->pos < a->end) {
            /* The next piece of a long range. */
            r = rbd_drv_aio_start(a);
            if (r == 0) {
                return;
            }
        } else if ((req->flags & BLK_REQ_FUA) && !a->flushing &&
                   (req->type == BLK_OP_WRITE ||
                    req->type == BLK_OP_WRITE_ZEROES)) {
            a->flushing = true;
            r = rbd_drv_aio_start(a);
            if (r == 0) {
                return;
            }
        }
    }
    free(a);
    blk_aio_complete(req, r < 0 ? rbd_drv_errno((int)r) : 0);
}

/* Issue a's next librbd call: 0 (rbd_aio_done runs later) or -errno
 * (it never will). */
static int rbd_drv_aio_start(RbdAio *a)
{
    BlockRequest *req = a->req;
    RbdState *s = req->bs->opaque;
    rbd_completion_t c;
    uint64_t n;
    int r;

    r = rbd_aio_create_completion(a, rbd_drv_aio_done, &c);
    if (r < 0) {
        return r;
    }
    if (a->flushing) {
        r = rbd_aio_flush(s->image, c);
        goto out;
    }
    switch (req->type) {
    case BLK_OP_READ:
        r = rbd_aio_read2(s->image, req->offset, req->bytes, req->buf, c, 0);
        break;
    case BLK_OP_WRITE:
        r = rbd_aio_write2(s->image, req->offset, req->bytes, req->buf, c,
                           0);
        break;
    case BLK_OP_WRITE_ZEROES:
        n = MIN(a->end - a->pos, RBD_MAX_CHUNK);
        r = rbd_aio_write_zeroes(s->image, a->pos, n, c,
                                 rbd_drv_zero_flags(req->flags), 0);
        a->pos += n;
        break;
    case BLK_OP_DISCARD:
        n = MIN(a->end - a->pos, RBD_MAX_CHUNK);
        r = rbd_aio_discard(s->image, a->pos, n, c);
        a->pos += n;
        break;
    case BLK_OP_FLUSH:
        r = rbd_aio_flush(s->image, c);
        break;
    default:
        r = -ENOTSUP;
        break;
    }
out:
    if (r < 0) {
        rbd_aio_release(c);
    }
    return r;
}

static void rbd_drv_aio_submit(BlockNode *bs, BlockRequest *req)
{
    RbdAio *a;
    int r;

    (void)bs;
    /* A prefetch hint: librbd has no readahead call worth a request. */
    if (req->type == BLK_OP_CACHE) {
        blk_aio_complete(req, 0);
        return;
    }
    /* Reads and writes come from NBD (32 MiB at most): one librbd
     * call each, which takes at most INT_MAX bytes. */
    if ((req->type == BLK_OP_READ || req->type == BLK_OP_WRITE) &&
        req->bytes > RBD_MAX_CHUNK) {
        blk_aio_complete(req, -EINVAL);
        return;
    }
    a = XNEW(RbdAio);
    a->req = req;
    a->pos = req->offset;
    a->end = req->offset + req->bytes;
    r = rbd_drv_aio_start(a);
    if (r < 0) {
        free(a);
        blk_aio_complete(req, rbd_drv_errno(r));
    }
}

/* Built as the module block-rbd.so (blockdev/module.c loads it). */
const char blockd_module_stamp[] = MODULE_STAMP;

const BlockDriver blk_drv_rbd = {
    .format_name = "rbd",
    .instance_size = sizeof(RbdState),
    .open = rbd_drv_open,
    .close = rbd_drv_close,
    .get_length = rbd_drv_get_length,
    .pread = rbd_drv_pread,
    .pwrite = rbd_drv_pwrite,
    .pwrite_zeroes = rbd_drv_pwrite_zeroes,
    .pdiscard = rbd_drv_pdiscard,
    .flush = rbd_drv_flush_image,
    .block_status = rbd_drv_block_status,
    .truncate = rbd_drv_truncate,
    .get_caps = rbd_drv_get_caps,
    .aio_submit = rbd_drv_aio_submit,
};
