/* qmp-blockdev.c - the QMP commands of the block graph: blockdev-add,
 * blockdev-del, query-named-block-nodes, block_resize, query-blockstats.
 *
 * Handlers run on the loop thread with arguments already checked
 * against the schema (qmp/dispatch.c); they only add the block layer's
 * own checks.  blockdev-add and block_resize hand their driver work to
 * the pool and answer when it is done (qmp_defer, qmp/qmp.h).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "qapi-commands.h"
#include "qmp/qmp.h"
#include "util/util.h"
#include "util/vector.h"

/* The open finished on the pool (loop thread).  The node is kept even
 * when the monitor closed meanwhile: blockdev-del removes it. */
static void blockdev_add_done(BlockNode *bs, Error *err, void *opaque)
{
    if (bs != NULL) {
        bs->monitor_owned = true;   /* the reference blk_open returned */
    }
    qmp_complete(opaque, NULL, err);
}

/* Opening reads (and for a dirty qcow2 rewrites) metadata: on the pool
 * when the caller can wait for the reply, here otherwise (the command
 * line, before the loop runs). */
/* An nbd node's server.type=fd names a descriptor passed with getfd
 * on this monitor (QEMU's monitor_fd_param: a name does not start with
 * a digit; a number is used as it is).  Take it and put its number in
 * the options for the open; *name gets the name back for
 * blockdev_fd_restore().  The driver owns the descriptor from then on
 * (it closes it if the open fails). */
static bool blockdev_fd_resolve(QmpCtx *ctx, const BlockdevOptions *args,
                                char **name, Error **errp)
{
    SocketAddress *sa = args->driver == BLOCKDEV_DRIVER_NBD
                        ? args->u.nbd.server : NULL;
    int fd;

    *name = NULL;
    if (sa == NULL || sa->type != SOCKET_ADDRESS_TYPE_FD ||
        (sa->u.fd.str[0] >= '0' && sa->u.fd.str[0] <= '9')) {
        return true;
    }
    fd = monitor_fd_take(ctx->mon, sa->u.fd.str);
    if (fd < 0) {
        error_setg(errp, "File descriptor named '%s' has not been found",
                   sa->u.fd.str);
        return false;
    }
    *name = sa->u.fd.str;
    sa->u.fd.str = xasprintf("%d", fd);
    return true;
}

static void blockdev_fd_restore(const BlockdevOptions *args, char *name)
{
    if (name != NULL) {
        free(args->u.nbd.server->u.fd.str);
        args->u.nbd.server->u.fd.str = name;
    }
}

bool qmp_blockdev_add(QmpCtx *ctx, const BlockdevOptions *args,
                      Error **errp)
{
    QmpPending *p;
    BlockNode *bs;
    Error *err = NULL;
    char *fd_name;

    if (!args->has_node_name) {
        error_setg(errp, "'node-name' must be specified for the root node");
        return false;
    }
    if (!blockdev_fd_resolve(ctx, args, &fd_name, errp)) {
        return false;
    }
    p = blk_graph_host(ctx->graph)->pool ? qmp_defer(ctx) : NULL;
    if (p == NULL) {
        bs = blk_open(ctx->graph, args, errp);
        blockdev_fd_restore(args, fd_name);
        if (bs == NULL) {
            return false;
        }
        bs->monitor_owned = true;
        return true;
    }
    if (!blk_open_async(ctx->graph, args, blockdev_add_done, p, &err)) {
        if (fd_name != NULL) {
            close(atoi(args->u.nbd.server->u.fd.str));   /* never opened */
        }
        qmp_complete(p, NULL, err);
    }
    blockdev_fd_restore(args, fd_name);
    return true;
}

bool qmp_blockdev_del(QmpCtx *ctx, const QmpBlockdevDelArgs *args,
                      Error **errp)
{
    return blk_node_delete(ctx->graph, args->node_name, errp);
}

/* ---- query-named-block-nodes --------------------------------------- */

static ImageInfo *blk_image_info(BlockNode *bs, bool flat)
{
    ImageInfo *info = XNEW(ImageInfo);
    BlockNode *bottom = bs;

    info->filename = xstrdup(bs->filename);
    info->format = xstrdup(bs->drv->format_name);
    info->virtual_size = blk_getlength(bs);
    /* The space used on the host is the protocol node's. */
    while (bottom->file != NULL) {
        bottom = bottom->file;
    }
    if (bottom != bs && bottom->drv->query_image != NULL) {
        bottom->drv->query_image(bottom, info);
    }
    if (bs->drv->query_image != NULL) {
        bs->drv->query_image(bs, info);
    }
    if (bs->backing != NULL && !info->has_backing_filename) {
        info->has_backing_filename = true;
        info->backing_filename = xstrdup(bs->backing->filename);
    }
    if (bs->backing != NULL && !flat) {
        info->has_backing_image = true;
        info->backing_image = blk_image_info(bs->backing, false);
    }
    return info;
}

static void blk_add_child(BlockdevChildList *l, const char *role,
                          BlockNode *child)
{
    BlockdevChild *c = XNEW(BlockdevChild);

    c->child = xstrdup(role);
    c->node_name = xstrdup(child->node_name);
    l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = c;
}

static BlockDeviceInfo *blk_device_info(BlockNode *bs, bool flat)
{
    BlockDeviceInfo *info = XNEW(BlockDeviceInfo);
    int64_t depth = 0;

    info->file = xstrdup(bs->filename);
    info->node_name = xstrdup(bs->node_name);
    info->ro = bs->read_only;
    info->drv = xstrdup(bs->drv->format_name);
    if (bs->backing != NULL) {
        info->has_backing_file = true;
        info->backing_file = xstrdup(bs->backing->filename);
    }
    for (BlockNode *b = bs->backing; b != NULL; b = b->backing) {
        depth++;
    }
    info->backing_file_depth = depth;
    info->children = XNEW(BlockdevChildList);
    if (bs->file != NULL) {
        blk_add_child(info->children, "file", bs->file);
    }
    if (bs->backing != NULL) {
        blk_add_child(info->children, "backing", bs->backing);
    }
    if (bs->target != NULL) {
        blk_add_child(info->children, "target", bs->target);
    }
    info->active = true;
    info->encrypted = false;
    info->detect_zeroes = bs->detect_zeroes;
    info->image = blk_image_info(bs, flat);
    info->cache = XNEW(BlockdevCacheInfo);
    info->cache->writeback = true;
    info->cache->direct = bs->cache_direct;
    info->cache->no_flush = bs->cache_no_flush;
    info->write_threshold = 0;
    if (blk_node_has_dirty_bitmaps(bs)) {
        info->has_dirty_bitmaps = true;
        info->dirty_bitmaps = blk_dirty_bitmap_query(bs);
    }
    return info;
}

typedef struct NodeInfoCtx {
    BlockDeviceInfoList *list;
    bool flat;
} NodeInfoCtx;

static void blk_collect_info(BlockNode *bs, void *opaque)
{
    NodeInfoCtx *c = opaque;
    BlockDeviceInfoList *l = c->list;

    l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = blk_device_info(bs, c->flat);
}

bool qmp_query_named_block_nodes(QmpCtx *ctx,
                                 const QmpQueryNamedBlockNodesArgs *args,
                                 BlockDeviceInfoList **ret, Error **errp)
{
    NodeInfoCtx c = {
        .list = XNEW(BlockDeviceInfoList),
        .flat = args->has_flat && args->flat,
    };

    (void)errp;
    blk_foreach_node(ctx->graph, blk_collect_info, &c);
    *ret = c.list;
    return true;
}

/* ---- block_resize --------------------------------------------------- */

static void block_resize_done(Error *err, void *opaque)
{
    qmp_complete(opaque, NULL, err);
}

bool qmp_block_resize(QmpCtx *ctx, const QmpBlockResizeArgs *args,
                      Error **errp)
{
    BlockNode *bs;
    QmpPending *p;
    Error *err = NULL;

    bs = blk_lookup_bs(ctx->graph,
                       args->has_device ? args->device : NULL,
                       args->has_node_name ? args->node_name : NULL, errp);
    if (bs == NULL) {
        return false;
    }
    if (args->size < 0) {
        error_setg(errp, "Parameter 'size' expects a >0 size");
        return false;
    }
    /* Growing a qcow2 writes refcount and L1 tables: on the pool, as
     * blockdev-add. */
    p = blk_graph_host(ctx->graph)->pool ? qmp_defer(ctx) : NULL;
    if (p == NULL) {
        return blk_truncate(bs, (uint64_t)args->size, errp);
    }
    if (!blk_truncate_async(bs, (uint64_t)args->size, block_resize_done, p,
                            &err)) {
        qmp_complete(p, NULL, err);
    }
    return true;
}

/* ---- query-blockstats ---------------------------------------------- */

#define LOAD(f) ((int64_t)__atomic_load_n(&(f), __ATOMIC_RELAXED))

DEFINE_VECTOR_TYPE(StatsNodeVec, BlockNode *);

/* The reply is built in one go on the loop thread: it must stay linear
 * in the number of nodes.  Nesting every child's stats in full under
 * every node made a chain of n nodes produce O(n^2) entries (400 raw
 * levels: > 16 MiB; 1000: no answer in 30 s, and SIGTERM waited for
 * it).  So a child that has an entry of its own in the list gets only
 * its own counters where it is nested (its children are in its own
 * entry), and a child without one is expanded at its first place in
 * the reply only.  Each node then appears at most once per parent. */
typedef struct StatsCtx {
    BlockStatsList *list;
    bool all;                    /* query-nodes: every node is listed */
    StatsNodeVec nodes;          /* every node, sorted by address */
    bool *expanded;              /* per entry of nodes */
} StatsCtx;

static int stats_node_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(BlockNode *const *)a;
    uintptr_t y = (uintptr_t)*(BlockNode *const *)b;

    return x < y ? -1 : x > y;
}

static bool stats_listed(const StatsCtx *c, const BlockNode *bs)
{
    return c->all || bs->monitor_owned;
}

/* Mark bs expanded; false if it already was. */
static bool stats_expand_once(StatsCtx *c, BlockNode *bs)
{
    BlockNode **p = bsearch(&bs, c->nodes.ptr, c->nodes.len,
                            sizeof(*c->nodes.ptr), stats_node_cmp);
    size_t i;

    if (p == NULL) {
        return false;            /* not in the graph: do not descend */
    }
    i = (size_t)(p - c->nodes.ptr);
    if (c->expanded[i]) {
        return false;
    }
    c->expanded[i] = true;
    return true;
}

BlockLatencyHistogramInfo *blk_lathist_info(const LatHist *src,
                                            uint64_t *count,
                                            uint64_t *sum_ns)
{
    BlockLatencyHistogramInfo *h = XNEW(BlockLatencyHistogramInfo);
    LatHist copy;

    lathist_read(src, &copy, count);
    *sum_ns = copy.sum_ns;
    h->boundaries = XNEW(uint64List);
    h->boundaries->n = LATHIST_BINS - 1;
    h->boundaries->v = xcalloc(LATHIST_BINS - 1, sizeof(uint64_t));
    for (unsigned i = 0; i < LATHIST_BINS - 1; i++) {
        h->boundaries->v[i] = lathist_boundary(i);
    }
    h->bins = XNEW(uint64List);
    h->bins->n = LATHIST_BINS;
    h->bins->v = xcalloc(LATHIST_BINS, sizeof(uint64_t));
    memcpy(h->bins->v, copy.bins, sizeof(copy.bins));
    return h;
}

/* The failed-request counter of kind op (zeroes fail as writes, and
 * block status is not counted apart). */
static uint64_t blk_stats_failed(BlockNode *bs, BlockStatsOp op)
{
    switch (op) {
    case BLOCK_STATS_OP_READ:
        return LOAD(bs->failed_rd_ops);
    case BLOCK_STATS_OP_WRITE:
    case BLOCK_STATS_OP_WRITE_ZEROES:
        return LOAD(bs->failed_wr_ops);
    case BLOCK_STATS_OP_DISCARD:
        return LOAD(bs->failed_discard_ops);
    case BLOCK_STATS_OP_FLUSH:
        return LOAD(bs->failed_flush_ops);
    default:
        return 0;
    }
}

/* op-stats and QEMU's latency histograms and invalid_* counters. */
static void blk_stats_ops(BlockNode *bs, BlockDeviceStats *d)
{
    BlockOpStatsList *l = XNEW(BlockOpStatsList);
    uint64_t n, sum;

    l->n = BLOCK_STATS_OP__MAX;
    l->v = xcalloc(BLOCK_STATS_OP__MAX, sizeof(*l->v));
    for (int op = 0; op < BLOCK_STATS_OP__MAX; op++) {
        BlockOpStats *o = XNEW(BlockOpStats);

        o->op = (BlockStatsOp)op;
        o->latency = blk_lathist_info(&bs->lat[op], &o->operations,
                                    &o->total_time_ns);
        o->failed = blk_stats_failed(bs, (BlockStatsOp)op);
        o->invalid = LOAD(bs->invalid_ops[op]);
        o->in_flight = LOAD(bs->in_flight[op]);
        l->v[op] = o;
    }
    d->has_op_stats = true;
    d->op_stats = l;
    d->rd_total_time_ns =
        (int64_t)l->v[BLOCK_STATS_OP_READ]->total_time_ns;
    d->wr_total_time_ns =
        (int64_t)l->v[BLOCK_STATS_OP_WRITE]->total_time_ns;
    d->flush_total_time_ns =
        (int64_t)l->v[BLOCK_STATS_OP_FLUSH]->total_time_ns;
    d->unmap_total_time_ns =
        (int64_t)l->v[BLOCK_STATS_OP_DISCARD]->total_time_ns;
    d->invalid_rd_operations = LOAD(bs->invalid_ops[BLOCK_STATS_OP_READ]);
    d->invalid_wr_operations =
        LOAD(bs->invalid_ops[BLOCK_STATS_OP_WRITE]) +
        LOAD(bs->invalid_ops[BLOCK_STATS_OP_WRITE_ZEROES]);
    d->invalid_flush_operations =
        LOAD(bs->invalid_ops[BLOCK_STATS_OP_FLUSH]);
    d->invalid_unmap_operations =
        LOAD(bs->invalid_ops[BLOCK_STATS_OP_DISCARD]);
    d->account_invalid = true;
    d->has_rd_latency_histogram = d->has_wr_latency_histogram =
        d->has_flush_latency_histogram = true;
    d->rd_latency_histogram =
        blk_lathist_info(&bs->lat[BLOCK_STATS_OP_READ], &n, &sum);
    d->wr_latency_histogram =
        blk_lathist_info(&bs->lat[BLOCK_STATS_OP_WRITE], &n, &sum);
    d->flush_latency_histogram =
        blk_lathist_info(&bs->lat[BLOCK_STATS_OP_FLUSH], &n, &sum);
}

/* The counters of bs alone. */
static BlockStats *blk_stats_own(BlockNode *bs)
{
    BlockStats *st = XNEW(BlockStats);
    BlockDeviceStats *d = XNEW(BlockDeviceStats);

    st->has_node_name = true;
    st->node_name = xstrdup(bs->node_name);
    st->stats = d;
    d->rd_bytes = LOAD(bs->rd_bytes);
    d->wr_bytes = LOAD(bs->wr_bytes);
    d->unmap_bytes = LOAD(bs->discard_bytes);
    d->rd_operations = LOAD(bs->rd_ops);
    d->wr_operations = LOAD(bs->wr_ops);
    d->flush_operations = LOAD(bs->flush_ops);
    d->unmap_operations = LOAD(bs->discard_ops);
    d->wr_highest_offset = LOAD(bs->wr_highest_offset);
    d->failed_rd_operations = LOAD(bs->failed_rd_ops);
    d->failed_wr_operations = LOAD(bs->failed_wr_ops);
    d->failed_flush_operations = LOAD(bs->failed_flush_ops);
    d->failed_unmap_operations = LOAD(bs->failed_discard_ops);
    d->account_failed = true;
    blk_stats_ops(bs, d);
    return st;
}

static BlockStats *blk_stats_child(StatsCtx *c, BlockNode *child);

/* The entry of bs: its counters, the file child as "parent" and, as
 * QEMU does it only without query-nodes, the backing child as
 * "backing". */
static BlockStats *blk_stats(StatsCtx *c, BlockNode *bs)
{
    BlockStats *st = blk_stats_own(bs);

    if (bs->file != NULL) {
        st->has_parent = true;
        st->parent = blk_stats_child(c, bs->file);
    }
    if (bs->backing != NULL && !c->all) {
        st->has_backing = true;
        st->backing = blk_stats_child(c, bs->backing);
    }
    return st;
}

static BlockStats *blk_stats_child(StatsCtx *c, BlockNode *child)
{
    if (stats_listed(c, child) || !stats_expand_once(c, child)) {
        return blk_stats_own(child);
    }
    return blk_stats(c, child);
}

static void blk_collect_node(BlockNode *bs, void *opaque)
{
    StatsCtx *c = opaque;

    StatsNodeVec_append(&c->nodes, bs);
}

static void blk_collect_stats(BlockNode *bs, void *opaque)
{
    StatsCtx *c = opaque;
    BlockStatsList *l = c->list;

    if (!stats_listed(c, bs)) {
        return;
    }
    l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = blk_stats(c, bs);
}

/* Without query-nodes QEMU lists its devices; blockd has none, so it
 * lists the nodes added with blockdev-add (with their children as
 * "parent"/"backing").  With query-nodes, every node, with its file
 * child as "parent" (QEMU: "parent" information, but not "backing"). */
bool qmp_query_blockstats(QmpCtx *ctx, const QmpQueryBlockstatsArgs *args,
                          BlockStatsList **ret, Error **errp)
{
    StatsCtx c = {
        .list = XNEW(BlockStatsList),
        .all = args->has_query_nodes && args->query_nodes,
    };
    BlockGraph *g = ctx->graph;

    (void)errp;
    blk_foreach_node(g, blk_collect_node, &c);
    if (c.nodes.len > 0) {
        qsort(c.nodes.ptr, c.nodes.len, sizeof(*c.nodes.ptr),
              stats_node_cmp);
    }
    c.expanded = xcalloc(c.nodes.len + 1, sizeof(*c.expanded));
    blk_foreach_node(g, blk_collect_stats, &c);
    free(c.expanded);
    StatsNodeVec_reset(&c.nodes);
    *ret = c.list;
    return true;
}
