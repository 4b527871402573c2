/* qmp-bitmap.c - the block-dirty-bitmap-* commands and the dirty-bitmaps
 * member of query-named-block-nodes, with QEMU's semantics and error
 * messages (qapi/block-core.json, block/monitor/bitmap-qmp-cmds.c).
 *
 * Loop thread.  Which state forbids which command (QEMU's
 * bdrv_dirty_bitmap_check() flags):
 *
 *              busy   read-only   inconsistent
 *   remove      x        x
 *   clear       x        x            x
 *   enable      x                     x
 *   disable     x                     x
 *   merge dst   x        x            x
 *   merge src   x                     x
 *
 * busy: an export (or later a job) reads the bitmap.  read-only: a
 * persistent bitmap of a read-only node (QEMU's readonly bitmaps are
 * those loaded from an image opened read-only).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "qapi-commands.h"
#include "qmp/qmp.h"
#include "util/util.h"

static bool bitmap_readonly(const DirtyBitmap *bm)
{
    return dirty_bitmap_persistent(bm) && dirty_bitmap_node(bm)->read_only;
}

bool dirty_bitmap_check(const DirtyBitmap *bm, unsigned flags, Error **errp)
{
    const char *name = dirty_bitmap_name(bm);

    if ((flags & BM_CHECK_BUSY) && dirty_bitmap_busy(bm)) {
        error_setg(errp, "Bitmap '%s' is currently in use by another "
                   "operation and cannot be used", name);
        return false;
    }
    if ((flags & BM_CHECK_RO) && bitmap_readonly(bm)) {
        error_setg(errp, "Bitmap '%s' is readonly and cannot be modified",
                   name);
        return false;
    }
    if ((flags & BM_CHECK_INCONSISTENT) && dirty_bitmap_inconsistent(bm)) {
        error_setg(errp, "Bitmap '%s' is inconsistent and cannot be used",
                   name);
        return false;
    }
    return true;
}

DirtyBitmap *blk_dirty_bitmap_lookup(BlockGraph *g, const char *node,
                                     const char *name, Error **errp)
{
    BlockNode *bs = blk_find_node(g, node);
    DirtyBitmap *bm;

    if (bs == NULL) {
        error_setg(errp, "Node '%s' not found", node);
        return NULL;
    }
    bm = blk_dirty_bitmap_find(bs, name);
    if (bm == NULL) {
        error_setg(errp, "Dirty bitmap '%s' not found", name);
        return NULL;
    }
    return bm;
}

bool qmp_block_dirty_bitmap_add(QmpCtx *ctx, const BlockDirtyBitmapAdd *args,
                                Error **errp)
{
    BlockNode *bs;
    DirtyBitmap *bm;
    uint32_t gran;
    bool persistent = args->has_persistent && args->persistent;

    if (args->name[0] == '\0') {
        error_setg(errp, "Bitmap name cannot be empty");
        return false;
    }
    bs = blk_lookup_bs(ctx->graph, args->node, args->node, errp);
    if (bs == NULL) {
        return false;
    }
    if (args->has_granularity) {
        gran = args->granularity;
        if (gran < BITMAP_GRANULARITY_MIN || !IS_POWER_OF_2(gran)) {
            error_setg(errp, "Granularity must be power of 2 and at least "
                       "512");
            return false;
        }
    } else {
        gran = blk_dirty_bitmap_default_granularity(bs);
    }
    if (persistent) {
        if (bs->drv->bitmap_can_store == NULL) {
            error_setg(errp, "Can't store persistent bitmaps to %s",
                       bs->node_name);
            return false;
        }
        if (!bs->drv->bitmap_can_store(bs, args->name, gran, errp)) {
            return false;
        }
    }
    bm = blk_dirty_bitmap_create(bs, args->name, gran, errp);
    if (bm == NULL) {
        return false;
    }
    if (args->has_disabled && args->disabled) {
        dirty_bitmap_set_enabled(bm, false);
    }
    dirty_bitmap_set_persistent(bm, persistent);
    return true;
}

DirtyBitmap *blk_dirty_bitmap_remove_prepare(BlockGraph *g, const char *node,
                                             const char *name, Error **errp)
{
    DirtyBitmap *bm = blk_dirty_bitmap_lookup(g, node, name, errp);
    BlockNode *bs;

    if (bm == NULL ||
        !dirty_bitmap_check(bm, BM_CHECK_BUSY | BM_CHECK_RO, errp)) {
        return NULL;
    }
    bs = dirty_bitmap_node(bm);
    /* The stored copy goes at once: a crash after this reply must not
     * bring the bitmap back. */
    if (dirty_bitmap_persistent(bm) &&
        bs->drv->bitmap_remove_persistent != NULL &&
        !bs->drv->bitmap_remove_persistent(bs, name, errp)) {
        return NULL;
    }
    return bm;
}

bool qmp_block_dirty_bitmap_remove(QmpCtx *ctx, const BlockDirtyBitmap *args,
                                   Error **errp)
{
    DirtyBitmap *bm = blk_dirty_bitmap_remove_prepare(ctx->graph, args->node,
                                                      args->name, errp);

    if (bm == NULL) {
        return false;
    }
    blk_dirty_bitmap_release(bm);
    return true;
}

bool qmp_block_dirty_bitmap_clear(QmpCtx *ctx, const BlockDirtyBitmap *args,
                                  Error **errp)
{
    DirtyBitmap *bm = blk_dirty_bitmap_lookup(ctx->graph, args->node,
                                              args->name, errp);

    if (bm == NULL || !dirty_bitmap_check(bm, BM_CHECK_DEFAULT, errp)) {
        return false;
    }
    blk_dirty_bitmap_lock(dirty_bitmap_node(bm));
    hbm_reset_all(dirty_bitmap_bits(bm));
    blk_dirty_bitmap_unlock(dirty_bitmap_node(bm));
    return true;
}

static bool bitmap_set_enabled(QmpCtx *ctx, const BlockDirtyBitmap *args,
                               bool enabled, Error **errp)
{
    DirtyBitmap *bm = blk_dirty_bitmap_lookup(ctx->graph, args->node,
                                              args->name, errp);

    if (bm == NULL || !dirty_bitmap_check(bm, BM_CHECK_ALLOW_RO, errp)) {
        return false;
    }
    dirty_bitmap_set_enabled(bm, enabled);
    return true;
}

bool qmp_block_dirty_bitmap_enable(QmpCtx *ctx, const BlockDirtyBitmap *args,
                                   Error **errp)
{
    return bitmap_set_enabled(ctx, args, true, errp);
}

bool qmp_block_dirty_bitmap_disable(QmpCtx *ctx,
                                    const BlockDirtyBitmap *args,
                                    Error **errp)
{
    return bitmap_set_enabled(ctx, args, false, errp);
}

/* tmp |= src's bits, after QEMU's checks on src (sizes must match). */
static bool bitmap_merge_one(HBitmap *tmp, DirtyBitmap *src, Error **errp)
{
    BlockNode *sbs = dirty_bitmap_node(src);
    bool ok;

    if (!dirty_bitmap_check(src, BM_CHECK_ALLOW_RO, errp)) {
        return false;
    }
    blk_dirty_bitmap_lock(sbs);
    ok = hbm_merge(tmp, dirty_bitmap_bits(src));
    if (!ok) {
        error_setg(errp, "Bitmaps are of different sizes (destination size "
                   "is %" PRIu64 ", source size is %" PRIu64 ") and can't "
                   "be merged", hbm_size(tmp),
                   hbm_size(dirty_bitmap_bits(src)));
    }
    blk_dirty_bitmap_unlock(sbs);
    return ok;
}

bool qmp_block_dirty_bitmap_merge(QmpCtx *ctx,
                                  const BlockDirtyBitmapMerge *args,
                                  Error **errp)
{
    DirtyBitmap *dst = blk_dirty_bitmap_lookup(ctx->graph, args->node,
                                               args->target, errp);
    BlockNode *bs;
    HBitmap *tmp;

    if (dst == NULL || !dirty_bitmap_check(dst, BM_CHECK_DEFAULT, errp)) {
        return false;
    }
    bs = dirty_bitmap_node(dst);
    /* Into a private copy first: the target is unchanged on error. */
    blk_dirty_bitmap_lock(bs);
    tmp = hbm_new(hbm_size(dirty_bitmap_bits(dst)),
                  dirty_bitmap_granularity(dst));
    blk_dirty_bitmap_unlock(bs);
    for (size_t i = 0; i < args->bitmaps->n; i++) {
        const BlockDirtyBitmapOrStr *b = args->bitmaps->v[i];
        DirtyBitmap *src;

        if (b->type == QTYPE_QSTRING) {
            src = blk_dirty_bitmap_find(bs, b->u.local);
            if (src == NULL) {
                error_setg(errp, "Dirty bitmap '%s' not found", b->u.local);
            }
        } else {
            src = blk_dirty_bitmap_lookup(ctx->graph, b->u.external->node,
                                          b->u.external->name, errp);
        }
        if (src == NULL || !bitmap_merge_one(tmp, src, errp)) {
            hbm_free(tmp);
            return false;
        }
    }
    blk_dirty_bitmap_lock(bs);
    hbm_merge(dirty_bitmap_bits(dst), tmp);
    blk_dirty_bitmap_unlock(bs);
    hbm_free(tmp);
    return true;
}

BlockDirtyInfoList *blk_dirty_bitmap_query(BlockNode *bs)
{
    BlockDirtyInfoList *list = XNEW(BlockDirtyInfoList);

    blk_dirty_bitmap_lock(bs);
    for (DirtyBitmap *bm = blk_dirty_bitmap_next(bs, NULL); bm != NULL;
         bm = blk_dirty_bitmap_next(bs, bm)) {
        BlockDirtyInfo *info = XNEW(BlockDirtyInfo);

        info->has_name = true;
        info->name = xstrdup(dirty_bitmap_name(bm));
        info->count = (int64_t)hbm_count(dirty_bitmap_bits(bm));
        info->granularity = dirty_bitmap_granularity(bm);
        info->recording = dirty_bitmap_enabled(bm);
        info->busy = dirty_bitmap_busy(bm);
        info->persistent = dirty_bitmap_persistent(bm);
        if (dirty_bitmap_inconsistent(bm)) {
            info->has_inconsistent = true;
            info->inconsistent = true;
        }
        list->v = xrealloc(list->v, (list->n + 1) * sizeof(*list->v));
        list->v[list->n++] = info;
    }
    blk_dirty_bitmap_unlock(bs);
    return list;
}
