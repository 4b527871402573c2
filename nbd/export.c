/* export.c - the export registry: a BlockNode under an NBD export name,
 * with the table of meta contexts it offers.
 *
 * An export lives in its server's registry (one reference) and is
 * referenced by every connection that did GO on it.  Deleting it marks it
 * shutting-down (hidden from new clients), hard mode disconnects its
 * clients, and drops the registry's reference; when the last reference
 * goes the node is released and BLOCK_EXPORT_DELETED is sent.
 */
#include <stdlib.h>
#include <string.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "nbd/internal.h"
#include "nbd/kernel.h"
#include "crypto/object.h"
#include "qapi-events.h"
#include "util/log.h"
#include "util/util.h"

/* ---- meta contexts -------------------------------------------------------
 *
 * Each export carries a table of {name, extent function}; the
 * connection code only walks it.  A new kind of context (the dirty
 * bitmaps' "qemu:dirty-bitmap:NAME") is one more entry added at
 * nbd_export_add().  The extent functions run on worker threads.
 */

/* base:allocation (doc/proto.md "base:allocation metadata context"). */
static int meta_base_allocation(BlockNode *bs, uint64_t offset,
                                uint64_t bytes, uint64_t *pnum, void *opaque)
{
    int r = blk_block_status(bs, offset, bytes, pnum);

    (void)opaque;
    if (r < 0) {
        return r;
    }
    return ((r & BLK_STATUS_DATA) ? 0 : NBD_STATE_HOLE) |
           ((r & BLK_STATUS_ZERO) ? NBD_STATE_ZERO : 0);
}

/* qemu:allocation-depth (QEMU docs/interop/nbd.txt): the depth in the
 * backing chain that allocates the range, 0 for none. */
static int meta_allocation_depth(BlockNode *bs, uint64_t offset,
                                 uint64_t bytes, uint64_t *pnum,
                                 void *opaque)
{
    (void)opaque;
    return blk_allocation_depth(bs, offset, bytes, pnum);
}

/* qemu:dirty-bitmap:NAME (QEMU docs/interop/nbd.txt): NBD_STATE_DIRTY
 * for the granules the bitmap holds dirty, extents at its granularity
 * clipped to the request.  opaque is the DirtyBitmap (busy, so alive);
 * it may sit on another node than bs, and past its end all is clean. */
static int meta_dirty_bitmap(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             uint64_t *pnum, void *opaque)
{
    DirtyBitmap *bm = opaque;
    BlockNode *bbs = dirty_bitmap_node(bm);
    HBitmap *hb;
    bool dirty = false;

    (void)bs;
    blk_dirty_bitmap_lock(bbs);
    hb = dirty_bitmap_bits(bm);
    if (offset < hbm_size(hb)) {
        *pnum = hbm_extent(hb, offset, bytes, &dirty);
    } else {
        *pnum = bytes;
    }
    blk_dirty_bitmap_unlock(bbs);
    return dirty ? NBD_STATE_DIRTY : 0;
}

static void export_meta_add(NbdExport *exp, const char *name,
                            BlockStatusFn *extent, void *opaque)
{
    NbdMetaContext m = {
        .name = xstrdup(name),
        .extent = extent,
        .opaque = opaque,
    };

    NbdMetaContextVec_append(&exp->meta, m);
}

int nbd_export_meta_find(const NbdExport *exp, const char *name, size_t len)
{
    for (size_t i = 0; i < exp->meta.len; i++) {
        if (nbd_str_eq(name, len, exp->meta.ptr[i].name)) {
            return (int)i;
        }
    }
    return -1;
}

/* ---- the registry -------------------------------------------------------- */

void nbd_export_ref(NbdExport *exp)
{
    exp->refcnt++;
}

static void export_remove_from_registry(NbdExport *exp)
{
    NbdServer *srv = exp->srv;

    if (!srv || !exp->in_registry) {
        return;
    }
    for (size_t i = 0; i < srv->exports.len; i++) {
        if (srv->exports.ptr[i] == exp) {
            NbdExportVec_remove(&srv->exports, i);
            break;
        }
    }
    exp->in_registry = false;
}

void nbd_export_unref(NbdExport *exp)
{
    if (--exp->refcnt > 0) {
        return;
    }
    export_remove_from_registry(exp);
    for (size_t i = 0; i < exp->n_bitmaps; i++) {
        dirty_bitmap_set_busy(exp->bitmaps[i], false);
        if (exp->bitmap_users[i] != NULL) {
            BlockNode *bbs = dirty_bitmap_node(exp->bitmaps[i]);
            blk_node_remove_user(bbs, exp->bitmap_users[i]);
            free(exp->bitmap_users[i]);
            blk_unref(bbs);
        }
    }
    free(exp->bitmaps);
    free(exp->bitmap_users);
    if (exp->n_loops > 0) {
        blk_node_iothread_use(exp->node, -1);
    }
    for (size_t i = 0; i < exp->n_loops; i++) {
        object_remove_user(exp->ctx->objects, exp->iothreads[i], exp->user);
        free(exp->iothreads[i]);
    }
    free(exp->iothreads);
    free(exp->loops);
    blk_node_remove_user(exp->node, exp->user);
    blk_unref(exp->node);
    /* The export is really gone now: tell the monitors. */
    qapi_event_send_block_export_deleted(exp->ctx->events, exp->id);
    free(exp->id);
    free(exp->name);
    free(exp->description);
    free(exp->user);
    for (size_t i = 0; i < exp->meta.len; i++) {
        free(exp->meta.ptr[i].name);
    }
    NbdMetaContextVec_reset(&exp->meta);
    free(exp);
}

/* The transmission flags: what the node does (blk_get_caps()), no more.
 * A read-only export offers no write flag at all. */
uint16_t nbd_export_tflags(const NbdExport *exp, bool structured)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH;
    BlockCaps caps;

    blk_get_caps(exp->node, &caps);
    if (caps.cache) {
        f |= NBD_FLAG_SEND_CACHE;
    }
    if (exp->writable) {
        f |= (caps.fua ? NBD_FLAG_SEND_FUA : 0) |
             (caps.discard ? NBD_FLAG_SEND_TRIM : 0) |
             (caps.zero ? NBD_FLAG_SEND_WRITE_ZEROES : 0) |
             (caps.fast_zero ? NBD_FLAG_SEND_FAST_ZERO : 0);
    } else {
        f |= NBD_FLAG_READ_ONLY;
    }
    if (structured) {
        f |= NBD_FLAG_SEND_DF;
    }
    /* Every connection goes to the same node, so multi-conn holds when
     * the node says so, unless the server allows one client only. */
    if (caps.multi_conn && (!exp->srv || exp->srv->max_connections != 1)) {
        f |= NBD_FLAG_CAN_MULTI_CONN;
    }
    return f;
}

NbdExport *nbd_export_find_id(NbdServer *srv, const char *id)
{
    for (size_t i = 0; i < srv->exports.len; i++) {
        if (strcmp(srv->exports.ptr[i]->id, id) == 0) {
            return srv->exports.ptr[i];
        }
    }
    return NULL;
}

NbdExport *nbd_export_find_name(NbdServer *srv, const char *name)
{
    for (size_t i = 0; i < srv->exports.len; i++) {
        NbdExport *exp = srv->exports.ptr[i];

        if (!exp->shutting_down && strcmp(exp->name, name) == 0) {
            return exp;
        }
    }
    return NULL;
}

/* Offer cfg's bitmaps and make them busy; a bitmap on another node
 * keeps that node referenced and in use (blockdev-del and resize wait
 * for the export).  False (nothing held) when a node refuses the user. */
static bool export_add_bitmaps(NbdExport *exp, const NbdExportConfig *cfg,
                               Error **errp)
{
    size_t n = cfg->n_bitmaps;

    exp->bitmaps = xcalloc(n ? n : 1, sizeof(*exp->bitmaps));
    exp->bitmap_users = xcalloc(n ? n : 1, sizeof(*exp->bitmap_users));
    for (size_t i = 0; i < n; i++) {
        DirtyBitmap *bm = cfg->bitmaps[i];
        BlockNode *bbs = dirty_bitmap_node(bm);

        if (bbs != cfg->node) {
            char *u = xasprintf("export '%s' bitmap '%s'", cfg->id,
                                dirty_bitmap_name(bm));
            if (!blk_node_add_user(bbs, u, false, errp)) {
                free(u);
                break;
            }
            blk_ref(bbs);
            exp->bitmap_users[i] = u;
        }
        exp->bitmaps[i] = bm;
        exp->n_bitmaps = i + 1;
    }
    if (exp->n_bitmaps < n) {
        for (size_t i = 0; i < exp->n_bitmaps; i++) {
            if (exp->bitmap_users[i] != NULL) {
                BlockNode *bbs = dirty_bitmap_node(exp->bitmaps[i]);
                blk_node_remove_user(bbs, exp->bitmap_users[i]);
                free(exp->bitmap_users[i]);
                blk_unref(bbs);
            }
        }
        free(exp->bitmaps);
        free(exp->bitmap_users);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char *ctx = xasprintf("qemu:dirty-bitmap:%s",
                              dirty_bitmap_name(exp->bitmaps[i]));
        dirty_bitmap_set_busy(exp->bitmaps[i], true);
        export_meta_add(exp, ctx, meta_dirty_bitmap, exp->bitmaps[i]);
        free(ctx);
    }
    return true;
}

Loop *nbd_export_next_loop(NbdExport *exp, const char **name)
{
    size_t i;

    if (exp->n_loops == 0) {
        *name = NULL;
        return NULL;
    }
    i = exp->next_loop++ % exp->n_loops;
    *name = exp->iothreads[i];
    return exp->loops[i];
}

static void export_put_iothreads(NbdServer *srv, const NbdExportConfig *cfg,
                                 const char *user, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        object_remove_user(srv->ctx->objects, cfg->iothreads[i], user);
    }
}

/* cfg->iothreads for the export that user names: their loops in *loops
 * (pinned; n_iothreads of them), or *loops NULL when the node cannot be
 * used from another thread and the iothread is not fixed: its clients
 * stay on the main loop, as QEMU keeps an export in the node's
 * AioContext then. */
static bool export_get_iothreads(NbdServer *srv, const NbdExportConfig *cfg,
                                 const char *user, Loop ***loops,
                                 Error **errp)
{
    Loop **l;

    if (cfg->fixed_iothread && cfg->n_iothreads > 1) {
        error_setg(errp, "fixed-iothread takes one iothread, not a list");
        return false;
    }
    l = xcalloc(cfg->n_iothreads, sizeof(*l));
    for (size_t i = 0; i < cfg->n_iothreads; i++) {
        l[i] = object_use_iothread(srv->ctx->objects, cfg->iothreads[i],
                                   user, errp);
        if (l[i] == NULL) {
            export_put_iothreads(srv, cfg, user, i);
            free(l);
            return false;
        }
    }
    if (!blk_node_iothread_ok(cfg->node)) {
        export_put_iothreads(srv, cfg, user, cfg->n_iothreads);
        free(l);
        if (cfg->fixed_iothread) {
            /* QEMU's words (block/block-backend.c) */
            error_setg(errp, "Cannot change iothread of active block "
                       "backend");
            return false;
        }
        log_info("export '%s': node '%s' cannot be used from an iothread "
                 "(only file, raw and null-co nodes without a job can): "
                 "its clients stay on the main loop", cfg->id,
                 blk_node_name(cfg->node));
        *loops = NULL;
        return true;
    }
    *loops = l;
    return true;
}

NbdExport *nbd_export_add(NbdServer *srv, const NbdExportConfig *cfg,
                          Error **errp)
{
    const char *name = cfg->name ? cfg->name : blk_node_name(cfg->node);
    NbdExport *exp;
    Loop **loops = NULL;
    char *user;

    if (nbd_export_find_id(srv, cfg->id)) {
        error_setg(errp, "Block export id '%s' is already in use", cfg->id);
        return NULL;
    }
    if (strlen(name) > NBD_MAX_STRING) {
        error_setg(errp, "export name '%.80s...' too long", name);
        return NULL;
    }
    if (cfg->description && strlen(cfg->description) > NBD_MAX_STRING) {
        error_setg(errp, "description '%.80s...' too long",
                   cfg->description);
        return NULL;
    }
    if (nbd_export_find_name(srv, name)) {
        error_setg(errp, "NBD server already has export named '%s'", name);
        return NULL;
    }
    user = xasprintf("export '%s'", cfg->id);
    if (cfg->n_iothreads > 0 &&
        !export_get_iothreads(srv, cfg, user, &loops, errp)) {
        free(user);
        return NULL;
    }
    if (!blk_node_add_user(cfg->node, user, cfg->writable, errp)) {
        if (loops != NULL) {
            export_put_iothreads(srv, cfg, user, cfg->n_iothreads);
            free(loops);
        }
        free(user);
        return NULL;
    }
    blk_ref(cfg->node);

    exp = XNEW(NbdExport);
    exp->srv = srv;
    exp->ctx = srv->ctx;
    exp->id = xstrdup(cfg->id);
    exp->name = xstrdup(name);
    exp->description = cfg->description ? xstrdup(cfg->description) : NULL;
    exp->user = user;
    exp->node = cfg->node;
    exp->writable = cfg->writable;
    exp->writethrough = cfg->writethrough;
    export_meta_add(exp, "base:allocation", meta_base_allocation, NULL);
    if (cfg->allocation_depth) {
        export_meta_add(exp, "qemu:allocation-depth", meta_allocation_depth,
                        NULL);
    }
    if (!export_add_bitmaps(exp, cfg, errp)) {
        if (loops != NULL) {
            export_put_iothreads(srv, cfg, user, cfg->n_iothreads);
            free(loops);
        }
        blk_node_remove_user(cfg->node, user);
        blk_unref(cfg->node);
        for (size_t i = 0; i < exp->meta.len; i++) {
            free(exp->meta.ptr[i].name);
        }
        NbdMetaContextVec_reset(&exp->meta);
        free(exp->id);
        free(exp->name);
        free(exp->description);
        free(user);
        free(exp);
        return NULL;
    }
    if (loops != NULL) {
        blk_node_iothread_use(cfg->node, 1);
        exp->loops = loops;
        exp->n_loops = cfg->n_iothreads;
        exp->iothreads = xcalloc(cfg->n_iothreads, sizeof(char *));
        for (size_t i = 0; i < cfg->n_iothreads; i++) {
            exp->iothreads[i] = xstrdup(cfg->iothreads[i]);
        }
    }
    exp->refcnt = 1;
    exp->in_registry = true;
    NbdExportVec_append(&srv->exports, exp);
    return exp;
}

/* exp is deleted: disconnect the clients attached to it (hard), and
 * make clients still negotiating forget the meta contexts they selected
 * on it, so a new export under the same name starts from nothing. */
static void export_detach_clients(NbdExport *exp, bool hard)
{
    NbdServer *srv = exp->srv;

    if (!srv) {
        return;
    }
    for (size_t i = 0; i < srv->conns.len; i++) {
        NbdConn *c = srv->conns.ptr[i];

        nbd_conn_forget_export(c, exp);
        if (hard && !nbd_conn_closed(c) && nbd_conn_export(c) == exp) {
            nbd_conn_close(c);
        }
    }
}

bool nbd_export_del(NbdExport *exp, bool hard, Error **errp)
{
    if (exp->shutting_down) {
        error_setg(errp, "Block export '%s' is already shutting down",
                   exp->id);
        return false;
    }
    /* A bound /dev/nbdN: refused, or disconnected first (hard). */
    if (!nbd_kernel_export_del(exp->ctx, exp, hard, errp)) {
        return false;
    }
    if (!hard && exp->nconns > 0) {
        error_setg(errp, "export '%s' still in use", exp->id);
        return false;
    }
    exp->shutting_down = true;
    export_detach_clients(exp, hard);
    /* Connections still finishing requests hold the export (their
     * buffers are the node's until the driver completes them).  With
     * no other user of the node, a driver waiting on a server that
     * hangs (nbd) fails them now, so the export and the node go. */
    if (hard && exp->refcnt > 1) {
        blk_node_abort_requests(exp->node, exp->user);
    }
    nbd_export_unref(exp);
    return true;
}

size_t nbd_export_count(const NbdServer *srv)
{
    return srv ? srv->exports.len : 0;
}

void nbd_export_info(const NbdServer *srv, size_t i, NbdExportInfo *info)
{
    const NbdExport *exp = srv->exports.ptr[i];

    info->id = exp->id;
    info->name = exp->name;
    info->node_name = blk_node_name(exp->node);
    info->shutting_down = exp->shutting_down;
    info->writable = exp->writable;
    info->clients = exp->nconns;
    info->rd_bytes = NBD_STAT_GET(exp->rd_bytes);
    info->wr_bytes = NBD_STAT_GET(exp->wr_bytes);
    info->rd_ops = NBD_STAT_GET(exp->rd_ops);
    info->wr_ops = NBD_STAT_GET(exp->wr_ops);
    info->other_ops = NBD_STAT_GET(exp->other_ops);
    info->ops = &exp->ops;
}

/* The export leaves from (a pivot): its qemu:dirty-bitmap contexts
 * keep the bitmaps they were given at block-export-add, as QEMU's
 * export keeps the bitmaps it looked up while its BlockBackend moves to
 * the target.  Those on from were held through the export's own user
 * of from: they now get one of their own, as a bitmap on another node
 * has (export_add_bitmaps), so from stays alive and blockdev-del
 * refuses it until the export goes. */
static void export_pin_bitmaps(NbdExport *exp, BlockNode *from)
{
    for (size_t i = 0; i < exp->n_bitmaps; i++) {
        DirtyBitmap *bm = exp->bitmaps[i];

        if (exp->bitmap_users[i] != NULL || dirty_bitmap_node(bm) != from) {
            continue;
        }
        exp->bitmap_users[i] = xasprintf("export '%s' bitmap '%s'",
                                         exp->id, dirty_bitmap_name(bm));
        /* Should a resize refuse the user, the reference still keeps
         * the bitmap's memory. */
        blk_node_add_user(from, exp->bitmap_users[i], false, NULL);
        blk_ref(from);
    }
}

void nbd_exports_replace_node(NbdContext *ctx, BlockNode *from,
                              BlockNode *to)
{
    NbdServer *srv = ctx->server;

    for (size_t i = 0; srv != NULL && i < srv->exports.len; i++) {
        NbdExport *exp = srv->exports.ptr[i];

        if (exp->node != from) {
            continue;
        }
        /* The user moves with the export; the job holding to already
         * checked it can be written. */
        blk_node_add_user(to, exp->user, exp->writable, NULL);
        blk_ref(to);
        __atomic_store_n(&exp->node, to, __ATOMIC_RELEASE);
        export_pin_bitmaps(exp, from);
        blk_node_remove_user(from, exp->user);
        blk_unref(from);
    }
}
