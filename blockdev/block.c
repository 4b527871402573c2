/* block.c - the node graph: drivers, opening, references, users,
 * deletion, probing.  See block.h.
 *
 * Everything here runs on the loop thread, except the driver work of
 * blk_open_async() and blk_truncate_async() (see "work on the pool"
 * below).  The graph is a list of nodes in creation order; names are
 * unique over the whole list (auto names "#blockN" included, which
 * users cannot pick because a node-name must start with a letter) and
 * over the names reserved by opens in flight.
 */
#include "blockdev/block.h"
#include "blockdev/bitmap.h"
#include "blockdev/block-drivers.h"
#include "blockdev/job.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"
#include "util/vector.h"

DEFINE_VECTOR_TYPE(NodeVec, BlockNode *);

DEFINE_VECTOR_TYPE(DriverVec, const BlockDriver *);
DEFINE_VECTOR_TYPE(PathVec, char *);

DEFINE_VECTOR_TYPE(NameVec, const char *);

typedef struct BlockOpenJob BlockOpenJob;

/* The write gate (block.h). */
typedef struct BlockWriteGate {
    bool closed;
    uint64_t in_flight;          /* gated writes not yet done */
    BlockRequest *held;          /* waiting while closed, by pool_next */
    BlockRequest **held_tail;
    void (*drained)(void *opaque);
    void *drained_opaque;
} BlockWriteGate;

struct BlockGraph {
    BlockHost host;
    BlockWriteGate gate;
    DriverVec drivers;           /* registered from above */
    NodeVec nodes;               /* every open node, creation order */
    unsigned next_auto;          /* for "#blockN" */
    PathVec backing_roots;       /* realpath()s; empty: no confinement */
    BlockOpenJob *opening;       /* opens in flight: names reserved */
    struct Job *jobs;            /* blockdev/job.c's list */
    BlockReplaceFn *replace_fn;  /* pivots users above; may be NULL */
    void *replace_opaque;
};

/* One registered user of a node (an export, a job). */
typedef struct BlockUser {
    char *name;                  /* "export 'e0'" */
    bool write;
} BlockUser;
DEFINE_VECTOR_TYPE(UserVec, BlockUser);

static const BlockDriver *const blk_drivers[] = {
    &blk_drv_file,
    &blk_drv_host_device,
    &blk_drv_raw,
    &blk_drv_null_co,
    &blk_drv_null_aio,
    &blk_drv_qcow2,
    &blk_drv_blkdebug,
    &blk_drv_copy_before_write,
    &blk_drv_snapshot_access,
};

const BlockDriver *blk_find_driver(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(blk_drivers); i++) {
        if (strcmp(blk_drivers[i]->format_name, name) == 0) {
            return blk_drivers[i];
        }
    }
    return NULL;
}

const BlockDriver *blk_graph_find_driver(const BlockGraph *g,
                                         const char *name)
{
    const BlockDriver *drv = blk_find_driver(name);

    for (size_t i = 0; drv == NULL && g != NULL && i < g->drivers.len; i++) {
        if (strcmp(g->drivers.ptr[i]->format_name, name) == 0) {
            drv = g->drivers.ptr[i];
        }
    }
    return drv;
}

void blk_graph_register_driver(BlockGraph *g, const BlockDriver *drv)
{
    assert(blk_graph_find_driver(g, drv->format_name) == NULL);
    DriverVec_append(&g->drivers, drv);
}

BlockGraph *blk_graph_new(const BlockHost *host)
{
    BlockGraph *g = XNEW(BlockGraph);

    if (host != NULL) {
        g->host = *host;
    }
    g->gate.held_tail = &g->gate.held;
    return g;
}

/* ---- the write gate ------------------------------------------------- */

static bool blk_req_writes(const BlockRequest *req)
{
    return req->type == BLK_OP_WRITE || req->type == BLK_OP_WRITE_ZEROES ||
           req->type == BLK_OP_DISCARD;
}

static void blk_write_gate_drained(BlockWriteGate *gate)
{
    void (*fn)(void *) = gate->drained;

    gate->drained = NULL;
    fn(gate->drained_opaque);
}

bool blk_write_gate_close(BlockGraph *g, void (*drained)(void *opaque),
                          void *opaque)
{
    BlockWriteGate *gate = &g->gate;

    if (gate->closed) {
        return false;
    }
    gate->closed = true;
    gate->drained = drained;
    gate->drained_opaque = opaque;
    if (gate->in_flight == 0) {
        blk_write_gate_drained(gate);
    }
    return true;
}

void blk_write_gate_open(BlockGraph *g)
{
    BlockWriteGate *gate = &g->gate;
    BlockRequest *req = gate->held;

    gate->closed = false;
    gate->drained = NULL;
    gate->held = NULL;
    gate->held_tail = &gate->held;
    while (req != NULL) {
        BlockRequest *next = req->pool_next;

        req->pool_next = NULL;
        blk_aio_submit_on(req->pool, req, req->loop);
        req = next;
    }
}

bool blk_write_gate_enter(BlockRequest *req, WorkerPool *pool, Loop *loop)
{
    BlockGraph *g = req->bs->graph;

    if (g == NULL || loop == NULL || loop != g->host.loop ||
        !blk_req_writes(req)) {
        return false;
    }
    if (g->gate.closed) {
        req->pool = pool;
        req->loop = loop;
        req->pool_next = NULL;
        *g->gate.held_tail = req;
        g->gate.held_tail = &req->pool_next;
        return true;
    }
    req->gated = true;
    g->gate.in_flight++;
    return false;
}

void blk_write_gate_leave(BlockRequest *req)
{
    BlockGraph *g = req->bs->graph;

    if (!req->gated) {
        return;
    }
    req->gated = false;
    if (--g->gate.in_flight == 0 && g->gate.drained != NULL) {
        /* Not inside req's completion: on the next loop turn. */
        loop_post(g->host.loop, g->gate.drained, g->gate.drained_opaque);
        g->gate.drained = NULL;
    }
}

static void blk_graph_clear_roots(BlockGraph *g)
{
    for (size_t i = 0; i < g->backing_roots.len; i++) {
        free(g->backing_roots.ptr[i]);
    }
    PathVec_reset(&g->backing_roots);
}

bool blk_graph_set_backing_roots(BlockGraph *g, char *const *dirs, size_t n,
                                 Error **errp)
{
    PathVec roots = { 0 };
    struct stat st;

    for (size_t i = 0; i < n; i++) {
        char *real = realpath(dirs[i], NULL);

        if (real == NULL || stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
            error_setg_errno(errp, real == NULL ? errno : ENOTDIR,
                             "Backing root '%s'", dirs[i]);
            free(real);
            for (size_t j = 0; j < roots.len; j++) {
                free(roots.ptr[j]);
            }
            PathVec_reset(&roots);
            return false;
        }
        PathVec_append(&roots, real);
    }
    blk_graph_clear_roots(g);
    g->backing_roots = roots;
    return true;
}

const BlockHost *blk_graph_host(const BlockGraph *g)
{
    return &g->host;
}

WorkerPool *blk_graph_job_pool(const BlockGraph *g)
{
    return g->host.job_pool != NULL ? g->host.job_pool : g->host.pool;
}

struct Job **blk_graph_jobs(BlockGraph *g)
{
    return &g->jobs;
}

void blk_graph_free(BlockGraph *g)
{
    size_t i;

    if (g == NULL) {
        return;
    }
    job_free_all(g);
    /* Drop the monitor's references, newest first so that parents go
     * before the children they reference. */
    for (i = g->nodes.len; i > 0; i--) {
        if (i > g->nodes.len) {
            continue;            /* the list shrank under us */
        }
        BlockNode *bs = g->nodes.ptr[i - 1];
        if (bs->monitor_owned) {
            bs->monitor_owned = false;
            blk_unref(bs);
            i = g->nodes.len + 1;  /* restart: closing may free several */
        }
    }
    if (g->nodes.len > 0) {
        log_warn("%zu block nodes still referenced at exit", g->nodes.len);
        /* Whoever drops them later must not touch the freed graph. */
        for (i = 0; i < g->nodes.len; i++) {
            g->nodes.ptr[i]->graph = NULL;
        }
    }
    NodeVec_reset(&g->nodes);
    DriverVec_reset(&g->drivers);
    blk_graph_clear_roots(g);
    free(g);
}

BlockNode *blk_find_node(BlockGraph *g, const char *node_name)
{
    for (size_t i = 0; i < g->nodes.len; i++) {
        if (strcmp(g->nodes.ptr[i]->node_name, node_name) == 0) {
            return g->nodes.ptr[i];
        }
    }
    return NULL;
}

BlockNode *blk_lookup_node(BlockGraph *g, const char *node_name,
                           Error **errp)
{
    BlockNode *bs = blk_find_node(g, node_name);

    if (bs == NULL) {
        error_setg(errp, "Failed to find node with node-name='%s'",
                   node_name);
    }
    return bs;
}

BlockNode *blk_lookup_bs(BlockGraph *g, const char *device,
                         const char *node_name, Error **errp)
{
    BlockNode *bs = NULL;

    /* blockd has no devices (BlockBackends): a device name is looked up
     * among the node names too. */
    if (node_name != NULL) {
        bs = blk_find_node(g, node_name);
    } else if (device != NULL) {
        bs = blk_find_node(g, device);
    }
    if (bs == NULL) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'",
                   device ? device : "", node_name ? node_name : "");
    }
    return bs;
}

void blk_foreach_node(BlockGraph *g, void (*fn)(BlockNode *bs, void *opaque),
                      void *opaque)
{
    for (size_t i = 0; i < g->nodes.len; i++) {
        fn(g->nodes.ptr[i], opaque);
    }
}

/* QEMU's id_wellformed(): a letter, then letters, digits, '-', '.',
 * '_'. */
static bool blk_name_wellformed(const char *name)
{
    if (!((name[0] >= 'a' && name[0] <= 'z') ||
          (name[0] >= 'A' && name[0] <= 'Z'))) {
        return false;
    }
    for (const char *p = name + 1; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
              *p == '_')) {
            return false;
        }
    }
    return true;
}

static bool blk_name_reserved(BlockGraph *g, const char *name);

static bool blk_check_node_name(BlockGraph *g, const char *name,
                                Error **errp)
{
    if (!blk_name_wellformed(name)) {
        error_setg(errp, "Invalid node-name: '%s'", name);
        return false;
    }
    if (blk_find_node(g, name) != NULL || blk_name_reserved(g, name)) {
        error_setg(errp, "Duplicate nodes with node-name='%s'", name);
        return false;
    }
    if (strlen(name) >= BLK_NODE_NAME_MAX) {
        error_setg(errp, "Node name too long");
        return false;
    }
    return true;
}

/* ---- references ---------------------------------------------------- */

/* Atomic: an open on the pool references the nodes it names while
 * the loop thread references them for requests. */
void blk_ref(BlockNode *bs)
{
    __atomic_add_fetch(&bs->refcnt, 1, __ATOMIC_RELAXED);
}

static void blk_node_free(BlockNode *bs)
{
    UserVec *users = bs->users;

    if (users != NULL) {
        for (size_t i = 0; i < users->len; i++) {
            free(users->ptr[i].name);
        }
        UserVec_reset(users);
        free(users);
    }
    pthread_mutex_destroy(&bs->rmw_lock);
    pthread_mutex_destroy(&bs->hook_lock);
    pthread_mutex_destroy(&bs->pool_lock);
    pthread_mutex_destroy(&bs->bitmap_lock);
    free(bs->opaque);
    free(bs->node_name);
    free(bs->filename);
    free(bs->driver_filename);
    free(bs);
}

static void blk_graph_remove(BlockGraph *g, BlockNode *bs)
{
    for (size_t i = 0; i < g->nodes.len; i++) {
        if (g->nodes.ptr[i] == bs) {
            NodeVec_remove(&g->nodes, i);
            return;
        }
    }
}

void blk_unref(BlockNode *bs)
{
    BlockNode *file, *backing, *target;
    unsigned old;

    if (bs == NULL) {
        return;
    }
    old = __atomic_fetch_sub(&bs->refcnt, 1, __ATOMIC_ACQ_REL);
    assert(old > 0);
    if (old > 1) {
        return;
    }
    if (bs->graph != NULL) {
        blk_graph_remove(bs->graph, bs);
    }
    if (bs->drv != NULL && bs->drv->close != NULL && bs->opened) {
        bs->drv->close(bs);
    }
    /* After close: the driver stores its persistent bitmaps there. */
    blk_dirty_bitmaps_release_all(bs);
    file = bs->file;
    backing = bs->backing;
    target = bs->target;
    bs->file = bs->backing = bs->target = NULL;
    blk_node_free(bs);
    blk_unref(target);
    blk_unref(backing);
    blk_unref(file);
}

/* ---- reopen ------------------------------------------------------- */

bool blk_reopen(BlockNode *bs, bool read_only, Error **errp)
{
    bool file_switched = false;

    if (read_only) {
        if (!bs->reopened_rw) {
            return true;
        }
        if (!bs->drv->reopen(bs, true, errp)) {
            return false;
        }
        bs->read_only = true;
        bs->write_perm = false;
        bs->reopened_rw = false;
        return bs->file == NULL || blk_reopen(bs->file, true, errp);
    }
    if (!bs->read_only) {
        return true;
    }
    if (bs->drv->reopen == NULL) {
        error_setg(errp, "Could not reopen '%s' read-write: driver '%s' "
                   "cannot switch", bs->node_name, bs->drv->format_name);
        return false;
    }
    if (bs->file != NULL && bs->file->read_only) {
        if (!blk_reopen(bs->file, false, errp)) {
            return false;
        }
        file_switched = true;
    }
    if (!bs->drv->reopen(bs, false, errp)) {
        if (file_switched) {
            blk_reopen(bs->file, true, NULL);
        }
        return false;
    }
    bs->read_only = false;
    bs->write_perm = true;
    bs->reopened_rw = true;
    return true;
}

/* ---- users and busy checks ---------------------------------------- */

/* The user a resize on the pool registers (blk_truncate_async). */
#define BLK_RESIZE_USER "block_resize"

bool blk_node_add_user(BlockNode *bs, const char *user, bool write,
                       Error **errp)
{
    UserVec *users;

    if (write && bs->read_only) {
        error_setg(errp, "Block node is read-only");
        return false;
    }
    /* A new user (an export) must not see the size change under it. */
    for (size_t i = 0; bs->users != NULL &&
         i < ((UserVec *)bs->users)->len; i++) {
        if (strcmp(((UserVec *)bs->users)->ptr[i].name,
                   BLK_RESIZE_USER) == 0) {
            error_setg(errp, "Node '%s' is busy: node is being resized",
                       bs->node_name);
            return false;
        }
    }
    if (bs->users == NULL) {
        bs->users = XNEW(UserVec);
    }
    users = bs->users;
    UserVec_append(users, (BlockUser){ .name = xstrdup(user),
                                       .write = write });
    return true;
}

void blk_node_remove_user(BlockNode *bs, const char *user)
{
    UserVec *users = bs->users;

    if (users == NULL) {
        return;
    }
    for (size_t i = 0; i < users->len; i++) {
        if (strcmp(users->ptr[i].name, user) == 0) {
            free(users->ptr[i].name);
            UserVec_remove(users, i);
            return;
        }
    }
}

/* Whether nothing but parent (a node, or NULL) and user (or NULL) uses
 * bs: no other registered user, no other node with bs as a child. */
static bool blk_node_only_used_by(BlockNode *bs, const BlockNode *parent,
                                  const char *user)
{
    UserVec *users = bs->users;
    BlockGraph *g = bs->graph;

    for (size_t i = 0; users != NULL && i < users->len; i++) {
        if (user == NULL || strcmp(users->ptr[i].name, user) != 0) {
            return false;
        }
    }
    for (size_t i = 0; g != NULL && i < g->nodes.len; i++) {
        BlockNode *p = g->nodes.ptr[i];
        if (p != parent && (p->backing == bs || p->file == bs)) {
            return false;
        }
    }
    return true;
}

static void blk_abort_tree(BlockNode *bs)
{
    if (bs->drv != NULL && bs->drv->abort_requests != NULL) {
        bs->drv->abort_requests(bs);
    }
    if (bs->file != NULL && blk_node_only_used_by(bs->file, bs, NULL)) {
        blk_abort_tree(bs->file);
    }
    if (bs->backing != NULL &&
        blk_node_only_used_by(bs->backing, bs, NULL)) {
        blk_abort_tree(bs->backing);
    }
}

bool blk_node_abort_requests(BlockNode *bs, const char *user)
{
    if (!blk_node_only_used_by(bs, NULL, user)) {
        return false;
    }
    blk_abort_tree(bs);
    return true;
}

/* The first node of the graph that has bs as a child; *role says which
 * child. */
static BlockNode *blk_find_parent(BlockNode *bs, const char **role)
{
    BlockGraph *g = bs->graph;

    for (size_t i = 0; g != NULL && i < g->nodes.len; i++) {
        BlockNode *p = g->nodes.ptr[i];
        if (p->backing == bs) {
            *role = "backing";
            return p;
        }
        if (p->file == bs) {
            *role = "file";
            return p;
        }
        if (p->target == bs) {
            *role = "target";
            return p;
        }
    }
    return NULL;
}

char *blk_node_writer(BlockNode *bs)
{
    UserVec *users = bs->users;

    for (size_t i = 0; users != NULL && i < users->len; i++) {
        if (users->ptr[i].write) {
            return xstrdup(users->ptr[i].name);
        }
    }
    return NULL;
}

char *blk_node_busy_reason(BlockNode *bs)
{
    UserVec *users = bs->users;
    const char *role = NULL;
    BlockNode *parent = blk_find_parent(bs, &role);

    if (parent != NULL) {
        return xasprintf("node '%s' (as its %s child)", parent->node_name,
                         role);
    }
    if (users != NULL && users->len > 0) {
        return xstrdup(users->ptr[0].name);
    }
    if (__atomic_load_n(&bs->refcnt, __ATOMIC_RELAXED) > 1) {
        return xstrdup("requests in flight");
    }
    return NULL;
}

bool blk_node_delete(BlockGraph *g, const char *node_name, Error **errp)
{
    BlockNode *bs = blk_lookup_node(g, node_name, errp);
    const char *role = NULL;
    BlockNode *parent;
    CLEANUP_FREE char *why = NULL;

    if (bs == NULL) {
        return false;
    }
    /* QEMU's order: the op blocker a backing parent sets, then monitor
     * ownership, then any other reference. */
    parent = blk_find_parent(bs, &role);
    if (parent != NULL && strcmp(role, "backing") == 0) {
        error_setg(errp, "Node '%s' is busy: node is used as backing hd "
                   "of '%s'", bs->node_name, parent->node_name);
        return false;
    }
    if (!bs->monitor_owned) {
        error_setg(errp, "Node %s is not owned by the monitor",
                   bs->node_name);
        return false;
    }
    why = blk_node_busy_reason(bs);
    if (why != NULL) {
        error_setg(errp, "Block device %s is in use by %s", bs->node_name,
                   why);
        return false;
    }
    bs->monitor_owned = false;
    blk_unref(bs);
    return true;
}

/* ---- opening -------------------------------------------------------- */

/* Options a node may inherit from its parent when it is opened inline
 * and does not set them itself (QEMU's bdrv_inherited_options). */
typedef struct BlockInherit {
    bool read_only;
    bool cache_direct, cache_no_flush;
    BlockdevDiscardOptions discard;
} BlockInherit;

static BlockNode *blk_open_inherit(BlockGraph *g, const BlockdevOptions *o,
                                   const BlockInherit *inh,
                                   BlockNode *parent, Error **errp);

/* What a child opened inline under parent for role inherits: a backing
 * node is read-only. */
static BlockInherit blk_inherit_for(const BlockNode *parent,
                                    const char *role)
{
    return (BlockInherit){
        .read_only = parent->read_only || strcmp(role, "backing") == 0,
        .cache_direct = parent->cache_direct,
        .cache_no_flush = parent->cache_no_flush,
        .discard = parent->discard,
    };
}

/* Where parent keeps its child for role, or NULL for an unknown role. */
static BlockNode **blk_child_slot(BlockNode *parent, const char *role)
{
    if (strcmp(role, "file") == 0) {
        return &parent->file;
    }
    if (strcmp(role, "backing") == 0) {
        return &parent->backing;
    }
    if (strcmp(role, "target") == 0) {
        return &parent->target;
    }
    return NULL;
}

/* The node ref names (a new reference) or a new node opened from its
 * inline definition under parent. */
static BlockNode *blk_resolve_child(BlockNode *parent, const char *role,
                                    const BlockdevRef *ref, Error **errp)
{
    BlockInherit inh = blk_inherit_for(parent, role);
    BlockNode *child;

    if (ref == NULL) {
        error_setg(errp, "A block device must be specified for \"%s\"",
                   role);
        return NULL;
    }
    if (ref->type == QTYPE_QSTRING) {
        child = blk_lookup_bs(parent->graph, NULL, ref->u.reference, errp);
        if (child == NULL) {
            return NULL;
        }
        if (child == parent) {
            error_setg(errp, "Making '%s' a %s child of itself would "
                       "create a cycle", child->node_name, role);
            return NULL;
        }
        if (strcmp(role, "file") == 0 && !parent->read_only &&
            child->read_only) {
            error_setg(errp, "Block node is read-only");
            return NULL;
        }
        blk_ref(child);
        return child;
    }
    if (ref->type != QTYPE_QDICT || ref->u.definition == NULL) {
        error_setg(errp, "Invalid %s reference", role);
        return NULL;
    }
    return blk_open_inherit(parent->graph, ref->u.definition, &inh, parent,
                            errp);
}

bool blk_open_child(BlockNode *parent, const char *role,
                    const BlockdevRef *ref, Error **errp)
{
    BlockNode **slot = blk_child_slot(parent, role);
    BlockNode *child;

    assert(slot != NULL && *slot == NULL);
    child = blk_resolve_child(parent, role, ref, errp);
    if (child == NULL) {
        return false;
    }
    *slot = child;
    if (slot == &parent->file && parent->filename == NULL) {
        parent->filename = xstrdup(child->filename);
    }
    return true;
}

static BlockNode *blk_open_inherit(BlockGraph *g, const BlockdevOptions *o,
                                   const BlockInherit *inh,
                                   BlockNode *parent, Error **errp)
{
    const char *drvname = BlockdevDriver_str(o->driver);
    const BlockDriver *drv = blk_graph_find_driver(g, drvname);
    BlockNode *bs;
    bool ok;

    if (drv == NULL) {
        int r = blk_module_load(drvname, &drv, errp);

        if (r == 0) {
            error_setg(errp, "Driver '%s' is not supported", drvname);
        }
        if (r <= 0) {
            return NULL;
        }
    }
    if (o->has_node_name && !blk_check_node_name(g, o->node_name, errp)) {
        return NULL;
    }

    bs = XNEW(BlockNode);
    bs->drv = drv;
    bs->refcnt = 1;
    bs->graph = g;              /* listed in g->nodes only once open */
    bs->request_alignment = 1;
    pthread_mutex_init(&bs->rmw_lock, NULL);
    pthread_mutex_init(&bs->hook_lock, NULL);
    pthread_mutex_init(&bs->pool_lock, NULL);
    pthread_mutex_init(&bs->bitmap_lock, NULL);
    bs->read_only = o->has_read_only ? o->read_only
                                     : (inh != NULL && inh->read_only);
    bs->auto_read_only = o->has_auto_read_only && o->auto_read_only;
    bs->force_share = o->has_force_share && o->force_share;
    bs->discard = o->has_discard ? o->discard
                  : (inh != NULL ? inh->discard
                                 : BLOCKDEV_DISCARD_OPTIONS_IGNORE);
    bs->detect_zeroes = o->has_detect_zeroes
                        ? o->detect_zeroes
                        : BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF;
    bs->cache_direct = inh != NULL && inh->cache_direct;
    bs->cache_no_flush = inh != NULL && inh->cache_no_flush;
    if (o->has_cache && o->cache != NULL) {
        if (o->cache->has_direct) {
            bs->cache_direct = o->cache->direct;
        }
        if (o->cache->has_no_flush) {
            bs->cache_no_flush = o->cache->no_flush;
        }
    }
    bs->opaque = drv->instance_size ? xzalloc(drv->instance_size) : NULL;

    if (bs->detect_zeroes == BLOCKDEV_DETECT_ZEROES_OPTIONS_UNMAP &&
        bs->discard != BLOCKDEV_DISCARD_OPTIONS_UNMAP) {
        error_setg(errp, "setting detect-zeroes to unmap is not allowed "
                   "without setting discard operation to unmap");
        goto fail;
    }
    if (bs->force_share && !bs->read_only) {
        error_setg(errp, "force-share=on can only be used with read-only "
                   "images");
        goto fail;
    }

    /* The driver gets its own member of the options union (every member
     * starts at &o->u) and opens its children with blk_open_child(); a
     * failure below closes them again through blk_unref(bs). */
    bs->opening_parent = parent;
    ok = drv->open(bs, &o->u, errp);
    bs->opening_parent = NULL;
    if (!ok) {
        goto fail;
    }
    bs->opened = true;
    if (drv->is_format) {
        /* A format driver waits only for its children (qcow2's mutex is
         * held for metadata work on those same children), so it never
         * waits for a device when none of them does. */
        bs->aio_inline = bs->file != NULL && bs->file->aio_inline &&
                         (bs->backing == NULL || bs->backing->aio_inline);
    }
    if (bs->filename == NULL) {
        bs->filename = xstrdup("");
    }
    bs->total_size = drv->get_length(bs);
    if (bs->total_size < 0) {
        error_setg_errno(errp, (int)-bs->total_size,
                         "Could not get the size of '%s'", bs->filename);
        goto fail;
    }
    bs->write_perm = !bs->read_only;

    /* Name it last: a failed open never occupies a name. */
    if (o->has_node_name) {
        /* A child may have taken the name meanwhile. */
        if (!blk_check_node_name(g, o->node_name, errp)) {
            goto fail;
        }
        bs->node_name = xstrdup(o->node_name);
    } else {
        bs->node_name = xasprintf("#block%u", g->next_auto++);
    }
    NodeVec_append(&g->nodes, bs);
    return bs;

fail:
    blk_unref(bs);
    return NULL;
}

BlockNode *blk_open(BlockGraph *g, const BlockdevOptions *opts,
                    Error **errp)
{
    return blk_open_inherit(g, opts, NULL, NULL, errp);
}

/* ---- images by file name, probing --------------------------------- */

const char *blk_probe_format(BlockNode *bs, Error **errp)
{
    uint8_t buf[BLK_PROBE_BUF_SIZE];
    const char *best = "raw";
    int best_score = 0, ret;
    int64_t len = blk_getlength(bs);
    size_t n = len < 0 ? 0 : (size_t)MIN((uint64_t)len, sizeof(buf));

    memset(buf, 0, sizeof(buf));
    if (n > 0) {
        ret = blk_pread(bs, 0, n, buf, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not read image for "
                             "determining its format");
            return NULL;
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(blk_drivers); i++) {
        const BlockDriver *drv = blk_drivers[i];
        if (drv->probe != NULL) {
            int score = drv->probe(buf, n, bs->filename);
            if (score > best_score) {
                best_score = score;
                best = drv->format_name;
            }
        }
    }
    return best;
}

/* Check a sector-0 write to a probed raw image: true when buf (the new
 * first bytes, len of them) would still probe as raw. */
bool blk_probe_is_raw(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < ARRAY_SIZE(blk_drivers); i++) {
        const BlockDriver *drv = blk_drivers[i];
        if (drv->probe != NULL && strcmp(drv->format_name, "raw") != 0 &&
            drv->probe(buf, len, NULL) > 1) {
            return false;
        }
    }
    return true;
}

/* Typed options for the protocol node of an image file: "host_device"
 * for a block device, else "file".  Free with qapi_free_BlockdevOptions. */
static BlockdevOptions *blk_file_opts(const char *filename, bool read_only)
{
    BlockdevOptions *o = XNEW(BlockdevOptions);
    struct stat st;

    o->driver = stat(filename, &st) == 0 && S_ISBLK(st.st_mode)
                ? BLOCKDEV_DRIVER_HOST_DEVICE : BLOCKDEV_DRIVER_FILE;
    /* file and host_device share BlockdevOptionsFile. */
    o->u.file.filename = xstrdup(filename);
    o->has_read_only = true;
    o->read_only = read_only;
    return o;
}

/* Typed options for a format node of driver drv over the node named
 * file_node.  A format driver's options begin with the members of
 * BlockdevOptionsGenericFormat, the schema base of every format (see
 * BlockDriver.is_format), so "file" is set through that base, as a
 * generated base accessor would.  Free with qapi_free_BlockdevOptions. */
static BlockdevOptions *blk_format_opts(BlockdevDriver drv,
                                        const char *file_node,
                                        const char *node_name,
                                        bool read_only)
{
    BlockdevOptions *o = XNEW(BlockdevOptions);
    BlockdevOptionsGenericFormat *base = (BlockdevOptionsGenericFormat *)
                                         (void *)&o->u;
    BlockdevRef *ref = XNEW(BlockdevRef);

    o->driver = drv;
    ref->type = QTYPE_QSTRING;
    ref->u.reference = xstrdup(file_node);
    base->file = ref;
    o->has_read_only = true;
    o->read_only = read_only;
    if (node_name != NULL) {
        o->has_node_name = true;
        o->node_name = xstrdup(node_name);
    }
    return o;
}

/* blk_open_image() for a node opened under parent (which may be NULL):
 * parent is only the link blk_open_backing_file's loop check walks; no
 * option is inherited from it. */
static BlockNode *blk_open_image_under(BlockGraph *g, BlockNode *parent,
                                       const char *filename,
                                       const char *format,
                                       const char *node_name,
                                       bool read_only, Error **errp)
{
    BlockdevOptions *fopts, *topts;
    const BlockDriver *drv;
    BlockNode *file, *bs;
    bool probed = false;
    int drv_id;

    fopts = blk_file_opts(filename, read_only);
    file = blk_open_inherit(g, fopts, NULL, parent, errp);
    qapi_free_BlockdevOptions(fopts);
    if (file == NULL) {
        return NULL;
    }
    if (format == NULL) {
        format = blk_probe_format(file, errp);
        if (format == NULL) {
            blk_unref(file);
            return NULL;
        }
        probed = true;
    }
    drv = blk_graph_find_driver(g, format);
    if (drv != NULL && drv->is_protocol) {
        /* A protocol "format": the file node is the image. */
        if (node_name != NULL) {
            Error *local = NULL;
            if (!blk_check_node_name(g, node_name, &local)) {
                error_propagate(errp, local);
                blk_unref(file);
                return NULL;
            }
            free(file->node_name);
            file->node_name = xstrdup(node_name);
        }
        return file;
    }
    drv_id = BlockdevDriver_lookup(format);
    if (drv == NULL || !drv->is_format || drv_id < 0) {
        error_setg(errp, "Unknown driver '%s'", format);
        blk_unref(file);
        return NULL;
    }
    topts = blk_format_opts((BlockdevDriver)drv_id, file->node_name,
                            node_name, read_only);
    bs = blk_open_inherit(g, topts, NULL, parent, errp);
    qapi_free_BlockdevOptions(topts);
    blk_unref(file);            /* the format node holds it now */
    if (bs != NULL && probed && strcmp(format, "raw") == 0) {
        bs->probed_raw = true;
    }
    return bs;
}

BlockNode *blk_open_image(BlockGraph *g, const char *filename,
                          const char *format, const char *node_name,
                          bool read_only, Error **errp)
{
    return blk_open_image_under(g, NULL, filename, format, node_name,
                                read_only, errp);
}

char *blk_path_combine(const char *base_filename, const char *filename)
{
    const char *slash;

    if (filename[0] == '/' || base_filename == NULL ||
        strchr(filename, ':') != NULL) {
        return xstrdup(filename);
    }
    slash = strrchr(base_filename, '/');
    if (slash == NULL) {
        return xstrdup(filename);
    }
    return xasprintf("%.*s/%s", (int)(slash - base_filename), base_filename,
                     filename);
}

/* Refuse a backing file that is already open above parent in the chain
 * being opened (A -> B -> A), found by walking the nodes that are
 * opening each other (opening_parent), and chains deeper than
 * BLK_BACKING_CHAIN_MAX. */
static bool blk_check_backing_chain(BlockNode *parent, const char *path,
                                    Error **errp)
{
    struct stat cand, st;
    bool have = stat(path, &cand) == 0;
    const BlockNode *top = parent;
    bool loop = false;
    unsigned depth = 0;

    for (const BlockNode *p = parent; p != NULL; p = p->opening_parent) {
        if (have && p->filename != NULL && stat(p->filename, &st) == 0 &&
            st.st_dev == cand.st_dev && st.st_ino == cand.st_ino) {
            loop = true;
        }
        top = p;
        depth++;
    }
    if (loop) {
        CLEANUP_FREE char *real = realpath(top->filename, NULL);

        error_setg(errp, "%s: backing file loop detected: '%s' is already "
                   "part of the chain opened from '%s'",
                   parent->drv->format_name, path,
                   real != NULL ? real : top->filename);
        return false;
    }
    if (depth >= BLK_BACKING_CHAIN_MAX) {
        error_setg(errp, "%s: backing chain too long",
                   parent->drv->format_name);
        return false;
    }
    return true;
}

/* True when real (a realpath()) is dir or below it. */
static bool blk_path_within(const char *real, const char *dir)
{
    size_t n = strlen(dir);

    if (strncmp(real, dir, n) != 0) {
        return false;
    }
    return real[n] == '\0' || real[n] == '/' || (n > 0 && dir[n - 1] == '/');
}

/* With backing roots set, the name a header gave (name as written;
 * path, combined with the parent's directory) must resolve inside one
 * of them.  *open_path is what to open: the resolved name then (nothing
 * left to follow), else path.  Returns a new string in *open_path, or
 * false with errp set. */
static bool blk_confine_backing(BlockNode *parent, const char *name,
                                const char *path, char **open_path,
                                Error **errp)
{
    BlockGraph *g = parent->graph;
    char *real;

    if (g == NULL || g->backing_roots.len == 0) {
        *open_path = xstrdup(path);
        return true;
    }
    real = realpath(path, NULL);
    if (real == NULL) {
        error_setg_errno(errp, errno, "Could not open backing file '%s' "
                         "named by '%s'", name, parent->filename);
        return false;
    }
    for (size_t i = 0; i < g->backing_roots.len; i++) {
        if (blk_path_within(real, g->backing_roots.ptr[i])) {
            *open_path = real;
            return true;
        }
    }
    error_setg(errp, "Backing file '%s' named by '%s' resolves to '%s', "
               "outside the allowed backing roots", name, parent->filename,
               real);
    free(real);
    return false;
}

BlockNode *blk_open_backing_file(BlockNode *parent, const char *filename,
                                 const char *format, Error **errp)
{
    const char *base = parent->file != NULL ? parent->file->filename
                                            : parent->filename;
    CLEANUP_FREE char *path = blk_path_combine(base, filename);
    CLEANUP_FREE char *open_path = NULL;
    bool audit = parent->graph != NULL &&
                 parent->graph->backing_roots.len > 0;
    BlockNode *bs;
    Error *local = NULL;

    if (!blk_confine_backing(parent, filename, path, &open_path, errp) ||
        !blk_check_backing_chain(parent, open_path, errp)) {
        return NULL;
    }
    /* A name from image content, not from the user: say what it
     * opens (docs/security.md).  An audit line where backing roots
     * confine such names; otherwise only with -v, so that blockd
     * started as qemu-storage-daemon says what it says (nothing). */
    log_msg(audit ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG,
            "'%s': opening backing file '%s' named in its header",
            parent->filename, open_path);
    bs = blk_open_image_under(parent->graph, parent, open_path, format,
                              NULL, true, &local);
    if (bs == NULL) {
        error_propagate(errp, local);
        error_prepend(errp, "Could not open backing file: ");
    }
    return bs;
}

/* ---- resize -------------------------------------------------------- */

/* What block_resize checks before touching the node (loop thread);
 * user (NULL: none) is the one user that may hold bs. */
static bool blk_truncate_check(BlockNode *bs, uint64_t size,
                               const char *user, Error **errp)
{
    if (bs->read_only) {
        error_setg(errp, "Block node is read-only");
        return false;
    }
    if (size > INT64_MAX) {
        error_setg(errp, "Image size cannot be larger than %lld bytes",
                   (long long)INT64_MAX);
        return false;
    }
    if (bs->drv->truncate == NULL) {
        error_setg(errp, "Image format driver does not support resize");
        return false;
    }
    /* Users (exports) do not share resizing, as in QEMU: a client must
     * not see the size change under it. */
    for (size_t i = 0; bs->users != NULL &&
         i < ((UserVec *)bs->users)->len; i++) {
        const char *name = ((UserVec *)bs->users)->ptr[i].name;

        if (user == NULL || strcmp(name, user) != 0) {
            error_setg(errp, "Node '%s' is busy: node is used by %s",
                       bs->node_name, name);
            return false;
        }
    }
    return true;
}

/* The driver's part of a resize (any thread). */
static bool blk_truncate_run(BlockNode *bs, uint64_t size, Error **errp)
{
    int64_t len;

    if (!bs->drv->truncate(bs, size, errp)) {
        return false;
    }
    len = bs->drv->get_length(bs);
    __atomic_store_n(&bs->total_size, len < 0 ? (int64_t)size : len,
                     __ATOMIC_RELEASE);
    blk_dirty_bitmaps_resize(bs, (uint64_t)blk_getlength(bs));
    return true;
}

bool blk_truncate(BlockNode *bs, uint64_t size, Error **errp)
{
    return blk_truncate_check(bs, size, NULL, errp) &&
           blk_truncate_run(bs, size, errp);
}

bool blk_truncate_for_user(BlockNode *bs, uint64_t size, const char *user,
                           Error **errp)
{
    return blk_truncate_check(bs, size, user, errp) &&
           blk_truncate_run(bs, size, errp);
}

/* ---- work on the pool ----------------------------------------------
 *
 * An open runs blk_open() on a worker against a private "stage" graph:
 *
 *   loop: check and reserve the node-names opts defines; reference the
 *         nodes it names (they join the stage, and blockdev-del finds
 *         them busy until the open ends)
 *   pool: blk_open(stage, opts): every lookup, auto name and new node
 *         stays in the stage, which no other thread sees
 *   loop: move the new nodes into the graph (auto names renumbered),
 *         drop the references and the reservations, call cb
 *
 * So the graph itself is only ever changed on the loop thread.
 */

struct BlockOpenJob {
    WorkerJob job;
    BlockGraph *g;               /* where the new nodes go */
    BlockGraph *stage;           /* the worker's private graph */
    BlockdevOptions *opts;       /* a copy, owned */
    json_object *json;           /* opts as JSON, owned */
    NameVec names;               /* node-names opts defines (into json) */
    NodeVec held;                /* nodes opts names, one reference each */
    BlockNode *bs;               /* the result, or NULL and err */
    Error *err;
    BlockOpenCb *cb;
    void *opaque;
    BlockOpenJob *next;          /* g->opening */
};

static bool blk_name_reserved(BlockGraph *g, const char *name)
{
    for (BlockOpenJob *j = g->opening; j != NULL; j = j->next) {
        for (size_t i = 0; i < j->names.len; i++) {
            if (strcmp(j->names.ptr[i], name) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* Collect, from the JSON form of the options, the node-names they
 * define ("node-name" at any depth) and every other string: a child
 * given by reference ("file": "f0") is one of them, whatever the driver
 * calls its children.  A string that names a node by chance (a file
 * name) only keeps that node busy for the open. */
static void blk_opts_names(json_object *o, NameVec *defined,
                           NameVec *strings)
{
    switch (json_object_get_type(o)) {
    case json_type_object: {
        json_object_object_foreach(o, key, val) {
            if (strcmp(key, "node-name") == 0 &&
                json_object_is_type(val, json_type_string)) {
                NameVec_append(defined, json_object_get_string(val));
            } else {
                blk_opts_names(val, defined, strings);
            }
        }
        break;
    }
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(o); i++) {
            blk_opts_names(json_object_array_get_idx(o, i), defined,
                           strings);
        }
        break;
    case json_type_string:
        NameVec_append(strings, json_object_get_string(o));
        break;
    default:
        break;
    }
}

static void blk_open_job_run(WorkerJob *wj)
{
    BlockOpenJob *job = (BlockOpenJob *)wj;

    job->bs = blk_open(job->stage, job->opts, &job->err);
}

/* Move the stage's new nodes into g, in creation order. */
static void blk_open_commit(BlockOpenJob *job)
{
    BlockGraph *g = job->g, *stage = job->stage;

    for (size_t i = 0; i < stage->nodes.len; i++) {
        BlockNode *n = stage->nodes.ptr[i];

        if (n->graph != stage) {
            continue;            /* one of job->held */
        }
        n->graph = g;
        if (n->node_name[0] == '#') {
            free(n->node_name);
            n->node_name = xasprintf("#block%u", g->next_auto++);
        }
        NodeVec_append(&g->nodes, n);
    }
}

static void blk_open_job_free(BlockOpenJob *job)
{
    BlockGraph *g = job->g;

    for (BlockOpenJob **pp = &g->opening; *pp != NULL;
         pp = &(*pp)->next) {
        if (*pp == job) {
            *pp = job->next;
            break;
        }
    }
    for (size_t i = 0; i < job->held.len; i++) {
        blk_unref(job->held.ptr[i]);
    }
    NodeVec_reset(&job->held);
    NameVec_reset(&job->names);
    NodeVec_reset(&job->stage->nodes);
    DriverVec_reset(&job->stage->drivers);
    blk_graph_clear_roots(job->stage);
    free(job->stage);
    qapi_free_BlockdevOptions(job->opts);
    json_object_put(job->json);
    free(job);
}

static void blk_open_job_done(WorkerJob *wj)
{
    BlockOpenJob *job = (BlockOpenJob *)wj;
    BlockNode *bs = job->bs;
    Error *err = job->err;
    BlockOpenCb *cb = job->cb;
    void *opaque = job->opaque;

    if (bs != NULL) {
        blk_open_commit(job);
    }
    blk_open_job_free(job);
    cb(bs, err, opaque);
}

bool blk_open_async(BlockGraph *g, const BlockdevOptions *opts,
                    BlockOpenCb *cb, void *opaque, Error **errp)
{
    BlockOpenJob *job;
    NameVec refs = { 0 };

    assert(g->host.pool != NULL);
    job = XNEW(BlockOpenJob);
    job->g = g;
    job->cb = cb;
    job->opaque = opaque;
    job->job.run = blk_open_job_run;
    job->job.done = blk_open_job_done;
    job->stage = blk_graph_new(&g->host);
    for (size_t i = 0; i < g->drivers.len; i++) {
        DriverVec_append(&job->stage->drivers, g->drivers.ptr[i]);
    }
    for (size_t i = 0; i < g->backing_roots.len; i++) {
        PathVec_append(&job->stage->backing_roots,
                       xstrdup(g->backing_roots.ptr[i]));
    }
    /* Auto names of the stage do not clash with g's: a node of g may be
     * named "#blockN" in opts. */
    job->stage->next_auto = g->next_auto;
    /* The options outlive the handler's copy. */
    job->json = qapi_BlockdevOptions_to_json(opts);
    if (!qapi_parse_BlockdevOptions(job->json, NULL, 0, &job->opts, errp)) {
        goto fail;
    }
    blk_opts_names(job->json, &job->names, &refs);
    for (size_t i = 0; i < job->names.len; i++) {
        if (!blk_check_node_name(g, job->names.ptr[i], errp)) {
            goto fail;
        }
    }
    for (size_t i = 0; i < refs.len; i++) {
        BlockNode *bs = blk_find_node(g, refs.ptr[i]);
        bool dup = false;

        /* A reference not found may be defined inline: the open
         * says. */
        for (size_t k = 0; bs != NULL && k < job->held.len; k++) {
            dup = dup || job->held.ptr[k] == bs;
        }
        if (bs != NULL && !dup) {
            blk_ref(bs);
            NodeVec_append(&job->held, bs);
            NodeVec_append(&job->stage->nodes, bs);
        }
    }
    NameVec_reset(&refs);
    job->next = g->opening;
    g->opening = job;
    worker_submit(g->host.pool, &job->job);
    return true;

fail:
    NameVec_reset(&refs);
    blk_open_job_free(job);
    return false;
}

typedef struct BlockTruncateJob {
    WorkerJob job;
    BlockNode *bs;               /* referenced */
    uint64_t size;
    bool ok;
    Error *err;
    BlockDoneCb *cb;
    void *opaque;
} BlockTruncateJob;


static void blk_truncate_job_run(WorkerJob *wj)
{
    BlockTruncateJob *job = (BlockTruncateJob *)wj;

    job->ok = blk_truncate_run(job->bs, job->size, &job->err);
}

static void blk_truncate_job_done(WorkerJob *wj)
{
    BlockTruncateJob *job = (BlockTruncateJob *)wj;

    blk_node_remove_user(job->bs, BLK_RESIZE_USER);
    blk_unref(job->bs);
    job->cb(job->ok ? NULL : job->err, job->opaque);
    free(job);
}

bool blk_truncate_async(BlockNode *bs, uint64_t size, BlockDoneCb *cb,
                        void *opaque, Error **errp)
{
    BlockTruncateJob *job;
    WorkerPool *pool = bs->graph ? bs->graph->host.pool : NULL;

    assert(pool != NULL);
    if (!blk_truncate_check(bs, size, NULL, errp)) {
        return false;
    }
    job = XNEW(BlockTruncateJob);
    job->job.run = blk_truncate_job_run;
    job->job.done = blk_truncate_job_done;
    job->bs = bs;
    job->size = size;
    job->cb = cb;
    job->opaque = opaque;
    /* A user for the duration: a second resize, an export and
     * blockdev-del find the node busy meanwhile. */
    blk_ref(bs);
    blk_node_add_user(bs, BLK_RESIZE_USER, false, NULL);
    worker_submit(pool, &job->job);
    return true;
}

bool blk_change_backing(BlockNode *bs, BlockNode *base,
                        const char *backing_file, Error **errp)
{
    BlockNode *old = bs->backing;
    const char *name = NULL, *fmt = NULL;

    if (bs->drv->change_backing_file == NULL) {
        error_setg(errp, "Driver '%s' cannot change the backing file of "
                   "'%s'", bs->drv->format_name, bs->node_name);
        return false;
    }
    if (base != NULL) {
        /* The name an image header records: the file's path. */
        name = backing_file != NULL ? backing_file
               : base->file != NULL ? base->file->filename : base->filename;
        fmt = base->drv->format_name;
    }
    if (!bs->drv->change_backing_file(bs, name, fmt, errp)) {
        return false;
    }
    if (base != NULL) {
        blk_ref(base);
    }
    bs->backing = base;
    if (old != NULL) {
        blk_unref(old);
    }
    return true;
}

void blk_graph_set_replace_fn(BlockGraph *g, BlockReplaceFn *fn,
                              void *opaque)
{
    g->replace_fn = fn;
    g->replace_opaque = opaque;
}

/* Is n bs or below it (file, backing and target children,
 * recursively)? */
static bool blk_subtree_contains(BlockNode *bs, BlockNode *n)
{
    if (bs == NULL) {
        return false;
    }
    return bs == n || blk_subtree_contains(bs->file, n) ||
           blk_subtree_contains(bs->backing, n) ||
           blk_subtree_contains(bs->target, n);
}

void blk_replace_node(BlockNode *from, BlockNode *to)
{
    BlockGraph *g = from->graph;

    for (size_t i = 0; g != NULL && i < g->nodes.len; i++) {
        BlockNode *p = g->nodes.ptr[i];

        if (blk_subtree_contains(to, p)) {
            continue;
        }
        if (p->file == from) {
            blk_ref(to);
            p->file = to;
            blk_unref(from);
        }
        if (p->backing == from) {
            blk_ref(to);
            p->backing = to;
            blk_unref(from);
        }
        if (p->target == from) {
            blk_ref(to);
            p->target = to;
            blk_unref(from);
        }
    }
    if (g != NULL && g->replace_fn != NULL) {
        g->replace_fn(from, to, g->replace_opaque);
    }
}

BlockNode *blk_insert_filter(BlockNode *bs, const BlockDriver *drv,
                             const char *node_name, Error **errp)
{
    BlockGraph *g = bs->graph;
    BlockNode *f;

    assert(drv->is_filter && drv->open == NULL);
    if (node_name != NULL && !blk_check_node_name(g, node_name, errp)) {
        return NULL;
    }
    f = XNEW(BlockNode);
    f->drv = drv;
    f->refcnt = 1;
    f->graph = g;
    pthread_mutex_init(&f->rmw_lock, NULL);
    pthread_mutex_init(&f->hook_lock, NULL);
    pthread_mutex_init(&f->bitmap_lock, NULL);
    f->opaque = drv->instance_size ? xzalloc(drv->instance_size) : NULL;
    blk_ref(bs);
    f->file = bs;
    f->filename = xstrdup(bs->filename);
    f->read_only = bs->read_only;
    f->write_perm = bs->write_perm;
    f->discard = bs->discard;
    f->request_alignment = bs->request_alignment;
    f->max_transfer = bs->max_transfer;
    f->total_size = drv->get_length(f);
    f->opened = true;
    f->node_name = node_name != NULL ? xstrdup(node_name)
                                     : xasprintf("#block%u", g->next_auto++);
    NodeVec_append(&g->nodes, f);
    blk_replace_node(bs, f);
    return f;
}

bool blk_can_replace(BlockNode *bs, BlockNode *to_replace)
{
    while (bs != NULL) {
        if (bs == to_replace) {
            return true;
        }
        bs = bs->drv->is_filter ? bs->file : NULL;
    }
    return false;
}
