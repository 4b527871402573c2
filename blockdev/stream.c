/* stream.c - block-stream: pull the backing chain's data into the top.
 *
 *   base <- mid <- top        ==>        base <- top  (mid's data in top)
 *
 * At the start (on a worker) the job marks in "todo" every range that
 * top reads from a layer above base (allocation depth 2 .. depth of
 * base - 1).  It then copies those ranges, in chunks, by reading top
 * (which reads through the chain) and writing the data back to top,
 * with BLK_REQ_NO_HOOK so its own writes skip the hook below.  On
 * success base becomes top's backing file (header and graph).
 *
 * Writes to top during the job: top's write hook takes the written
 * ranges out of todo (rounded out to todo's 512-byte granules; a format
 * allocating a cluster copies the rest of it from the backing chain
 * itself), after waiting for any job copy in flight over them.  So a
 * job copy never lands over newer data: either the write waited for
 * the copy, or the copy never starts.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "blockdev/job.h"
#include "blockdev/mirror.h"
#include "qapi-commands.h"
#include "qmp/qmp.h"
#include "util/cleanup.h"
#include "util/util.h"

#define STREAM_GRANULE 512
#define STREAM_CHUNK (1024 * 1024)
#define STREAM_MAX_INFLIGHT 4

typedef struct StreamShared {
    BlockWriteHook hook;
    uint64_t len;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    HBitmap *todo;               /* under lock */
    struct StreamRange *inflight;/* under lock */
    uint64_t copied;             /* atomic */
} StreamShared;

typedef struct StreamRange {
    uint64_t start, end;
    struct StreamRange *next;
} StreamRange;

typedef struct StreamJob StreamJob;

typedef struct StreamChunk {
    WorkerJob wj;
    StreamJob *s;
    StreamRange r;               /* registered while copying */
    uint8_t *buf;
    int ret;
    bool failed_read;
    bool busy;
} StreamChunk;

struct StreamJob {
    Job job;
    StreamShared *sh;
    BlockNode *top, *base;       /* base NULL: the whole chain */
    int base_depth;              /* 0: none, else base's depth from top */
    /* block-commit: read top (through its chain), write base, and
     * point overlay (the node above top) at base.  No hook: nobody
     * else writes top or base (they are backing nodes). */
    bool is_commit;
    BlockNode *overlay;
    char *backing_file;          /* backing-file: recorded instead of
                                  * base's file name, or NULL */
    bool init_started, init_done;
    WorkerJob init_wj;
    int init_ret;
    bool flushing, flushed;
    BlockRequest flush_req;
    int fail_ret;
    StreamChunk chunks[STREAM_MAX_INFLIGHT];
};

static WorkerPool *stream_pool(StreamJob *s)
{
    return blk_graph_job_pool(s->job.graph);
}

static bool stream_overlaps_inflight(StreamShared *sh, uint64_t a,
                                     uint64_t b)
{
    for (StreamRange *r = sh->inflight; r != NULL; r = r->next) {
        if (r->start < b && a < r->end) {
            return true;
        }
    }
    return false;
}

/* The write hook on top (a worker running a client's write). */
static int stream_hook_fn(BlockWriteHook *hook, BlockNode *bs,
                          uint64_t offset, uint64_t bytes)
{
    StreamShared *sh = container_of(hook, StreamShared, hook);
    uint64_t a, b;

    (void)bs;
    if (offset >= sh->len) {
        return 0;
    }
    a = ALIGN_DOWN(offset, (uint64_t)STREAM_GRANULE);
    b = MIN(ALIGN_UP(offset + bytes, (uint64_t)STREAM_GRANULE), sh->len);
    pthread_mutex_lock(&sh->lock);
    while (stream_overlaps_inflight(sh, a, b)) {
        pthread_cond_wait(&sh->cond, &sh->lock);
    }
    hbm_reset(sh->todo, a, b - a);
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

static void stream_hook_done(BlockWriteHook *hook)
{
    StreamShared *sh = container_of(hook, StreamShared, hook);

    hbm_free(sh->todo);
    pthread_mutex_destroy(&sh->lock);
    pthread_cond_destroy(&sh->cond);
    free(sh);
}

static void stream_run(Job *job);

static void stream_init_work(WorkerJob *wj)
{
    StreamJob *s = container_of(wj, StreamJob, init_wj);
    StreamShared *sh = s->sh;
    uint64_t pos = 0;

    s->init_ret = 0;
    while (pos < sh->len) {
        uint64_t pnum = 0;
        int depth = blk_allocation_depth(s->top, pos, sh->len - pos, &pnum);

        if (depth < 0) {
            s->init_ret = depth;
            return;
        }
        if (depth > (s->is_commit ? 0 : 1) &&
            (s->base_depth == 0 || depth < s->base_depth)) {
            pthread_mutex_lock(&sh->lock);
            hbm_set(sh->todo, pos, pnum);
            pthread_mutex_unlock(&sh->lock);
        }
        pos += pnum;
    }
}

static void stream_init_done(WorkerJob *wj)
{
    StreamJob *s = container_of(wj, StreamJob, init_wj);

    s->job.inflight--;
    s->init_done = true;
    if (s->init_ret < 0) {
        s->fail_ret = s->init_ret;
    }
    pthread_mutex_lock(&s->sh->lock);
    s->job.progress_total = (int64_t)hbm_count(s->sh->todo);
    pthread_mutex_unlock(&s->sh->lock);
    stream_run(&s->job);
}

static void stream_chunk_work(WorkerJob *wj)
{
    StreamChunk *ch = container_of(wj, StreamChunk, wj);
    StreamShared *sh = ch->s->sh;
    uint64_t n = ch->r.end - ch->r.start;
    int ret;

    BlockNode *dst = ch->s->is_commit ? ch->s->base : ch->s->top;

    ret = blk_pread(ch->s->top, ch->r.start, n, ch->buf, 0);
    ch->failed_read = ret < 0;
    if (ret == 0) {
        ret = blk_buffer_is_zero(ch->buf, n)
              ? blk_pwrite_zeroes(dst, ch->r.start, n, BLK_REQ_NO_HOOK)
              : blk_pwrite(dst, ch->r.start, n, ch->buf, BLK_REQ_NO_HOOK);
    }
    pthread_mutex_lock(&sh->lock);
    for (StreamRange **p = &sh->inflight; *p != NULL; p = &(*p)->next) {
        if (*p == &ch->r) {
            *p = ch->r.next;
            break;
        }
    }
    if (ret < 0) {
        hbm_set(sh->todo, ch->r.start, n);
    } else {
        __atomic_fetch_add(&sh->copied, n, __ATOMIC_RELAXED);
    }
    pthread_cond_broadcast(&sh->cond);
    pthread_mutex_unlock(&sh->lock);
    ch->ret = ret;
}

static void stream_chunk_done(WorkerJob *wj)
{
    StreamChunk *ch = container_of(wj, StreamChunk, wj);
    StreamJob *s = ch->s;

    ch->busy = false;
    s->job.inflight--;
    s->job.progress_current =
        (int64_t)__atomic_load_n(&s->sh->copied, __ATOMIC_RELAXED);
    if (ch->ret < 0 && s->fail_ret == 0) {
        switch (job_io_error(&s->job, ch->failed_read, ch->ret)) {
        case BLOCK_ERROR_ACTION_IGNORE:
            pthread_mutex_lock(&s->sh->lock);
            hbm_reset(s->sh->todo, ch->r.start, ch->r.end - ch->r.start);
            pthread_mutex_unlock(&s->sh->lock);
            break;
        case BLOCK_ERROR_ACTION_STOP:
            break;             /* back in todo: retried on resume */
        default:
            s->fail_ret = ch->ret;
            break;
        }
    }
    stream_run(&s->job);
}

static void stream_flush_done(BlockRequest *req)
{
    StreamJob *s = req->opaque;

    s->job.inflight--;
    s->flushing = false;
    s->flushed = true;
    if (req->ret < 0 && s->fail_ret == 0) {
        s->fail_ret = req->ret;
    }
    stream_run(&s->job);
}

/* Take the next todo range (at most a chunk) and register it in flight
 * in ch; false when todo is empty. */
static bool stream_take(StreamJob *s, StreamChunk *ch)
{
    StreamShared *sh = s->sh;
    int64_t d, c;

    pthread_mutex_lock(&sh->lock);
    d = hbm_next_dirty(sh->todo, 0, sh->len);
    /* skip ranges already being copied */
    while (d >= 0 && stream_overlaps_inflight(sh, (uint64_t)d,
                                              (uint64_t)d + 1)) {
        uint64_t skip = (uint64_t)d;
        for (StreamRange *r = sh->inflight; r != NULL; r = r->next) {
            if (r->start <= skip && skip < r->end) {
                skip = r->end;
            }
        }
        d = skip < sh->len ? hbm_next_dirty(sh->todo, skip, sh->len - skip)
                           : -1;
    }
    if (d < 0) {
        pthread_mutex_unlock(&sh->lock);
        return false;
    }
    {
        uint64_t lim = MIN(sh->len, (uint64_t)d + STREAM_CHUNK);
        c = hbm_next_clean(sh->todo, (uint64_t)d, lim - (uint64_t)d);
        ch->r.start = (uint64_t)d;
        ch->r.end = c < 0 ? lim : (uint64_t)c;
    }
    /* Stop at a range in flight. */
    for (StreamRange *r = sh->inflight; r != NULL; r = r->next) {
        if (r->start > ch->r.start && r->start < ch->r.end) {
            ch->r.end = r->start;
        }
    }
    hbm_reset(sh->todo, ch->r.start, ch->r.end - ch->r.start);
    ch->r.next = sh->inflight;
    sh->inflight = &ch->r;
    pthread_mutex_unlock(&sh->lock);
    return true;
}

static bool stream_todo_empty(StreamJob *s)
{
    bool empty;

    pthread_mutex_lock(&s->sh->lock);
    empty = hbm_is_empty(s->sh->todo);
    pthread_mutex_unlock(&s->sh->lock);
    return empty;
}

static void stream_run(Job *job)
{
    StreamJob *s = container_of(job, StreamJob, job);

    if (job_is_cancelled(job) || s->fail_ret < 0) {
        if (job->inflight == 0) {
            job_finish(job, s->fail_ret < 0 ? s->fail_ret : -ECANCELED,
                       NULL);
        }
        return;
    }
    if (!s->init_started) {
        s->init_started = true;
        job->inflight++;
        s->init_wj.run = stream_init_work;
        s->init_wj.done = stream_init_done;
        worker_submit(stream_pool(s), &s->init_wj);
        return;
    }
    if (!s->init_done) {
        return;
    }
    while (job_may_issue(job) && !s->flushing && !s->flushed) {
        StreamChunk *ch = NULL;
        uint64_t wait;

        for (unsigned i = 0; i < STREAM_MAX_INFLIGHT; i++) {
            if (!s->chunks[i].busy) {
                ch = &s->chunks[i];
                break;
            }
        }
        if (ch == NULL) {
            return;
        }
        wait = job_rate_check(job, STREAM_CHUNK);
        if (wait > 0) {
            job_sleep(job, wait);
            return;
        }
        if (!stream_take(s, ch)) {
            if (job->inflight > 0 || !stream_todo_empty(s)) {
                return;
            }
            s->flushing = true;
            job->inflight++;
            s->flush_req = (BlockRequest){
                .bs = s->is_commit ? s->base : s->top, .type = BLK_OP_FLUSH,
                .cb = stream_flush_done, .opaque = s,
            };
            blk_aio_submit(stream_pool(s), &s->flush_req);
            return;
        }
        ch->s = s;
        ch->busy = true;
        ch->wj.run = stream_chunk_work;
        ch->wj.done = stream_chunk_done;
        job->inflight++;
        worker_submit(stream_pool(s), &ch->wj);
    }
    if (s->flushed && job->inflight == 0) {
        job_finish(job, s->fail_ret, NULL);
    }
}

static void stream_commit(Job *job)
{
    StreamJob *s = container_of(job, StreamJob, job);
    Error *err = NULL;

    /* Every range above base is in top (stream) or base (commit) now:
     * drop the layers between. */
    if (!blk_change_backing(s->is_commit ? s->overlay : s->top, s->base,
                            s->backing_file, &err)) {
        free(job->error);
        job->error = xstrdup(error_get_pretty(err));
        error_free(err);
    }
}

static void stream_clean(Job *job)
{
    StreamJob *s = container_of(job, StreamJob, job);

    if (s->sh != NULL) {
        StreamShared *sh = s->sh;
        s->sh = NULL;
        if (s->is_commit) {
            stream_hook_done(&sh->hook);
        } else {
            blk_write_hook_remove(s->top, &sh->hook);
        }
    }
    if (s->base != NULL) {
        blk_unref(s->base);
        s->base = NULL;
    }
}

static void stream_free(Job *job)
{
    StreamJob *s = container_of(job, StreamJob, job);

    for (unsigned i = 0; i < STREAM_MAX_INFLIGHT; i++) {
        free(s->chunks[i].buf);
    }
    free(s->backing_file);
}

static const JobDriver stream_driver = {
    .type = JOB_TYPE_STREAM,
    .run = stream_run,
    .commit = stream_commit,
    .clean = stream_clean,
    .free = stream_free,
};

static const JobDriver commit_driver = {
    .type = JOB_TYPE_COMMIT,
    .run = stream_run,
    .commit = stream_commit,
    .clean = stream_clean,
    .free = stream_free,
};

/* QEMU's stream job unshares write on the nodes it copies from (top's
 * backing chain above base): a writer there, such as a writable
 * export, would change data under the copy.  QEMU's message (its
 * exports are unnamed block devices). */
static bool stream_check_writers(Job *job, BlockNode *top, BlockNode *base,
                                 Error **errp)
{
    for (BlockNode *n = top->backing; n != NULL && n != base;
         n = n->backing) {
        CLEANUP_FREE char *w = blk_node_writer(n);

        if (w != NULL) {
            error_setg(errp, "Permission conflict on node '%s': permissions "
                       "'write' are both required by %s (uses node '%s' as "
                       "'root' child) and unshared by stream job '%s' (uses "
                       "node '%s' as 'intermediate node' child).",
                       blk_node_name(n),
                       strncmp(w, "export ", 7) == 0
                       ? "an unnamed block device" : w,
                       blk_node_name(n), job->id, blk_node_name(n));
            return false;
        }
    }
    return true;
}

/* base's depth in top's chain (top = 1), or 0 when it is not there. */
static int stream_chain_depth(BlockNode *top, BlockNode *base)
{
    int d = 1;

    for (BlockNode *n = top; n != NULL; n = n->backing, d++) {
        if (n == base) {
            return d;
        }
    }
    return 0;
}

/* Buffers and the shared state of a new stream or commit job. */
static void stream_setup(StreamJob *s, uint64_t len)
{
    StreamShared *sh;

    for (unsigned i = 0; i < STREAM_MAX_INFLIGHT; i++) {
        s->chunks[i].buf = xmalloc(STREAM_CHUNK);
    }
    sh = XNEW(StreamShared);
    sh->len = len;
    pthread_mutex_init(&sh->lock, NULL);
    pthread_cond_init(&sh->cond, NULL);
    sh->todo = hbm_new(len, STREAM_GRANULE);
    sh->hook.fn = stream_hook_fn;
    sh->hook.done = stream_hook_done;
    s->sh = sh;
}

bool qmp_block_stream(QmpCtx *ctx, const QmpBlockStreamArgs *args,
                      Error **errp)
{
    BlockGraph *g = ctx->graph;
    BlockNode *top, *base = NULL;
    StreamJob *s;
    Job *job;
    int64_t len;

    top = blk_lookup_bs(g, args->device, NULL, errp);
    if (top == NULL) {
        return false;
    }
    if (args->has_base && args->has_base_node) {
        error_setg(errp, "'base' and 'base-node' cannot be specified at "
                   "the same time");
        return false;
    }
    if (args->has_bottom && (args->has_base || args->has_base_node)) {
        error_setg(errp, "'%s' and 'bottom' cannot be specified at the "
                   "same time", args->has_base ? "base" : "base-node");
        return false;
    }
    if (args->speed < 0) {
        error_setg(errp, "Parameter 'speed' expects a non-negative value");
        return false;
    }
    if (args->has_base_node) {
        base = blk_lookup_bs(g, NULL, args->base_node, errp);
        if (base == NULL) {
            return false;
        }
        if (base == top || stream_chain_depth(top, base) == 0) {
            error_setg(errp, "Node '%s' is not a backing image of '%s'",
                       args->base_node, args->device);
            return false;
        }
    } else if (args->has_base) {
        for (BlockNode *n = top->backing; n != NULL; n = n->backing) {
            if (strcmp(n->filename, args->base) == 0) {
                base = n;
                break;
            }
        }
        if (base == NULL) {
            error_setg(errp, "Cannot find '%s'", args->base);
            return false;
        }
    } else if (args->has_bottom) {
        /* bottom: the lowest node streamed; base is what is below it. */
        BlockNode *bottom = blk_lookup_bs(g, NULL, args->bottom, errp);

        if (bottom == NULL) {
            return false;
        }
        if (bottom->drv->is_filter) {
            error_setg(errp, "Node '%s' is a filter, use a non-filter node "
                       "as 'bottom'", args->bottom);
            return false;
        }
        if (stream_chain_depth(top, bottom) == 0) {
            error_setg(errp, "Node '%s' is not in a chain starting from "
                       "'%s'", args->bottom, args->device);
            return false;
        }
        base = bottom->backing;
    }
    if (args->has_backing_file && base == NULL) {
        error_setg(errp, "backing file specified, but streaming the entire "
                   "chain");
        return false;
    }
    if (top->drv->change_backing_file == NULL) {
        error_setg(errp, "Driver '%s' cannot change the backing file of "
                   "'%s'", top->drv->format_name, blk_node_name(top));
        return false;
    }
    len = blk_getlength(top);
    job = job_create(g, &stream_driver, sizeof(StreamJob),
                     args->has_job_id ? args->job_id : args->device,
                     args->auto_finalize, args->auto_dismiss, errp);
    if (job == NULL) {
        return false;
    }
    s = container_of(job, StreamJob, job);
    job->on_source_error = job->on_target_error = args->on_error;
    job->speed = args->speed;
    if (!stream_check_writers(job, top, base, errp) ||
        !job_claim_node(job, top, true, errp)) {
        job_early_fail(job);
        return false;
    }
    s->top = top;
    if (base != NULL) {
        blk_ref(base);
        s->base = base;
        s->base_depth = stream_chain_depth(top, base);
    }
    if (args->has_backing_file) {
        s->backing_file = xstrdup(args->backing_file);
    }
    if (args->has_filter_node_name &&
        !job_insert_filter(job, top, JOB_FILTER_COPY_ON_READ,
                           args->filter_node_name, errp)) {
        job_early_fail(job);
        return false;
    }
    stream_setup(s, (uint64_t)len);
    blk_write_hook_add(top, &s->sh->hook);
    job_start(job);
    return true;
}

/* ---- block-commit --------------------------------------------------- */

bool qmp_block_commit(QmpCtx *ctx, const QmpBlockCommitArgs *args,
                      Error **errp)
{
    BlockGraph *g = ctx->graph;
    BlockNode *dev, *top = NULL, *base = NULL, *overlay = NULL;
    StreamJob *s;
    Job *job;
    int depth;

    dev = blk_lookup_bs(g, args->device, NULL, errp);
    if (dev == NULL) {
        return false;
    }
    if (args->has_top && args->has_top_node) {
        error_setg(errp, "'top' and 'top-node' cannot be specified at the "
                   "same time");
        return false;
    }
    if (args->has_base && args->has_base_node) {
        error_setg(errp, "'base' and 'base-node' cannot be specified at "
                   "the same time");
        return false;
    }
    if (args->speed < 0) {
        error_setg(errp, "Parameter 'speed' expects a non-negative value");
        return false;
    }
    /* top: by node-name or file name, default the active layer. */
    top = dev;
    if (args->has_top_node || args->has_top) {
        const char *want = args->has_top_node ? args->top_node : args->top;
        top = NULL;
        for (BlockNode *n = dev; n != NULL; n = n->backing) {
            if (strcmp(args->has_top_node ? n->node_name : n->filename,
                       want) == 0) {
                top = n;
                break;
            }
            overlay = n;
        }
        if (top == NULL) {
            error_setg(errp, "Top image file %s not found", want);
            return false;
        }
    }
    /* base: by node-name or file name, default the bottom of the chain */
    if (args->has_base_node || args->has_base) {
        const char *want = args->has_base_node ? args->base_node : args->base;
        for (BlockNode *n = top->backing; n != NULL; n = n->backing) {
            if (strcmp(args->has_base_node ? n->node_name : n->filename,
                       want) == 0) {
                base = n;
                break;
            }
        }
        if (base == NULL) {
            if (args->has_base_node &&
                (blk_find_node(g, want) == top ||
                 blk_find_node(g, want) == dev)) {
                error_setg(errp, "cannot commit an image into itself");
            } else if (args->has_base_node) {
                error_setg(errp, "Node '%s' is not a backing image of '%s'",
                           want, blk_node_name(top));
            } else {
                error_setg(errp, "Can't find '%s' to use as base", want);
            }
            return false;
        }
    } else {
        for (BlockNode *n = top->backing; n != NULL; n = n->backing) {
            base = n;
        }
        if (base == NULL) {
            error_setg(errp, "Cannot commit '%s': it has no backing file",
                       blk_node_name(top));
            return false;
        }
    }
    if (top == dev && args->has_backing_file) {
        error_setg(errp, "'backing-file' specified, but 'top' is the "
                   "active layer");
        return false;
    }
    if (top == dev) {
        /* Active commit: a mirror of the active layer into base (a
         * read-only base is reopened as below; the job claims it, so
         * its release switches it back). */
        bool ok;

        if (base->read_only && !blk_reopen(base, false, errp)) {
            return false;
        }
        ok = mirror_start_active_commit(
            g, args->has_job_id ? args->job_id : args->device, top, base,
            args->has_filter_node_name ? args->filter_node_name : NULL,
            args->speed, args->on_error, args->auto_finalize,
            args->auto_dismiss, errp);
        if (!ok) {
            blk_reopen(base, true, NULL);
        }
        return ok;
    }
    if (overlay->drv->change_backing_file == NULL) {
        error_setg(errp, "Driver '%s' cannot change the backing file of "
                   "'%s'", overlay->drv->format_name,
                   blk_node_name(overlay));
        return false;
    }
    depth = stream_chain_depth(top, base);
    /* A backing node is normally read-only: QEMU reopens base
     * read-write for the commit, and read-only again when the job
     * releases it (job.c). */
    if (base->read_only && !blk_reopen(base, false, errp)) {
        return false;
    }
    job = job_create(g, &commit_driver, sizeof(StreamJob),
                     args->has_job_id ? args->job_id : args->device,
                     args->auto_finalize, args->auto_dismiss, errp);
    if (job == NULL) {
        blk_reopen(base, true, NULL);
        return false;
    }
    s = container_of(job, StreamJob, job);
    job->on_source_error = job->on_target_error = args->on_error;
    job->speed = args->speed;
    if (!job_claim_node(job, base, true, errp) ||
        !job_claim_node(job, top, false, errp) ||
        !job_claim_node(job, overlay, false, errp) ||
        /* A base smaller than top grows, as QEMU's commit does. */
        (blk_getlength(base) < blk_getlength(top) &&
         !job_truncate_node(job, base, (uint64_t)blk_getlength(top),
                            errp))) {
        job_early_fail(job);
        blk_reopen(base, true, NULL);
        return false;
    }
    if (args->has_filter_node_name &&
        !job_insert_filter(job, top, JOB_FILTER_COMMIT_TOP,
                           args->filter_node_name, errp)) {
        job_early_fail(job);
        blk_reopen(base, true, NULL);
        return false;
    }
    s->is_commit = true;
    s->top = top;
    s->overlay = overlay;
    if (args->has_backing_file) {
        s->backing_file = xstrdup(args->backing_file);
    }
    blk_ref(base);
    s->base = base;
    s->base_depth = depth;
    stream_setup(s, (uint64_t)blk_getlength(top));
    job_start(job);
    return true;
}
