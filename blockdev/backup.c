/* backup.c - blockdev-backup: a point-in-time copy of a node.
 *
 * The job copies the clusters marked in its "todo" bitmap (everything
 * for sync=full, the node's own allocation for top, the dirty bitmap's
 * bits for bitmap, nothing for none) from the source to the target,
 * in chunks of at most BACKUP_CHUNK bytes, BACKUP_MAX_INFLIGHT at once,
 * each chunk a worker job (read source, write target).
 *
 * Copy-before-write: the job hooks the source's writes (block.h
 * BlockWriteHook).  A write to a cluster still in todo first copies
 * that cluster's old data to the target, on the worker running the
 * write.  Both copiers go through backup_copy(), which takes clusters
 * out of todo and registers the range as in flight under the shared
 * lock; a copier that meets a range in flight waits for it (so a write
 * never lands in a cluster while the job reads its old data).  Only
 * running workers register ranges, so a wait always ends.
 *
 *   loop: run ──> chunk worker: backup_copy ──> chunk_done (loop)
 *   worker running an NBD write: hook ──> backup_copy ──> the write
 *
 * The shared state (BackupCbw) is freed by the hook's done callback, once
 * no write is inside the hook: the job may be gone by then.
 *
 * Bitmap modes (QEMU's): at the start the bitmap's bits are moved to a
 * snapshot and the bitmap records only writes from then on.  Success:
 * on-success / always keep it so, never merges the snapshot back.
 * Failure: on-success / never merge the snapshot back, always merges
 * back only what was not copied.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "blockdev/job.h"
#include "qapi-commands.h"
#include "qmp/qmp.h"
#include "util/cleanup.h"
#include "util/util.h"

#define BACKUP_CLUSTER (64 * 1024)        /* copy-before-write unit */
#define BACKUP_CHUNK (1024 * 1024)        /* bytes per job request */
#define BACKUP_MAX_INFLIGHT 4

/* A range some worker is copying (on its stack). */
typedef struct CopyRange {
    uint64_t start, end;
    struct CopyRange *next;
} CopyRange;

typedef struct BackupCbw {
    BlockWriteHook hook;
    BlockNode *source, *target;  /* the job holds the references */
    uint64_t len;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    HBitmap *todo;               /* clusters not copied yet (under lock) */
    CopyRange *inflight;         /* under lock */
    uint64_t copied;             /* bytes, atomic */
} BackupCbw;

typedef struct BackupJob BackupJob;

typedef struct BackupChunk {
    WorkerJob wj;
    BackupJob *b;
    uint64_t offset, bytes;
    uint8_t *buf;                /* BACKUP_CHUNK bytes */
    int ret;
    bool failed_read;
    bool busy;
} BackupChunk;

struct BackupJob {
    Job job;
    BackupCbw *cbw;
    BlockNode *source, *target;
    MirrorSyncMode sync;
    DirtyBitmap *bitmap;         /* NULL: none */
    BitmapSyncMode bitmap_mode;
    HBitmap *snap;               /* the bitmap's bits at the start */
    bool init_started, init_done;
    WorkerJob init_wj;
    int init_ret;
    bool flushing, flushed;
    BlockRequest flush_req;
    int fail_ret;                /* a reported error: finish with it */
    bool fail_read;
    uint64_t next;               /* scan position */
    BackupChunk chunks[BACKUP_MAX_INFLIGHT];
};

static WorkerPool *backup_pool(BackupJob *b)
{
    return blk_graph_job_pool(b->job.graph);
}

static bool ranges_overlap(const CopyRange *r, uint64_t s, uint64_t e)
{
    return r->start < e && s < r->end;
}

/* Copy the clusters of [offset, offset+bytes) still in todo from the
 * source to the target, using buf (buflen bytes, >= BACKUP_CLUSTER).
 * Any thread but the loop (blocks).  0 or -errno; *failed_read says
 * which side failed.  A failed range goes back into todo. */
static int backup_copy(BackupCbw *c, uint64_t offset, uint64_t bytes,
                       uint8_t *buf, size_t buflen, bool *failed_read)
{
    uint64_t pos = ALIGN_DOWN(offset, (uint64_t)BACKUP_CLUSTER);
    uint64_t end = MIN(ALIGN_UP(offset + bytes, (uint64_t)BACKUP_CLUSTER),
                       c->len);

    while (pos < end) {
        CopyRange me;
        int64_t d;
        int ret;
        bool busy;

        pthread_mutex_lock(&c->lock);
        do {
            busy = false;
            for (CopyRange *r = c->inflight; r != NULL; r = r->next) {
                if (ranges_overlap(r, pos, end)) {
                    busy = true;
                    pthread_cond_wait(&c->cond, &c->lock);
                    break;
                }
            }
        } while (busy);
        d = hbm_next_dirty(c->todo, pos, end - pos);
        if (d < 0) {
            pthread_mutex_unlock(&c->lock);
            return 0;
        }
        me.start = (uint64_t)d;
        {
            uint64_t lim = MIN(end, me.start + buflen);
            int64_t cl = hbm_next_clean(c->todo, me.start, lim - me.start);
            me.end = cl < 0 ? lim : (uint64_t)cl;
        }
        hbm_reset(c->todo, me.start, me.end - me.start);
        me.next = c->inflight;
        c->inflight = &me;
        pthread_mutex_unlock(&c->lock);

        ret = blk_pread(c->source, me.start, me.end - me.start, buf, 0);
        if (ret < 0) {
            *failed_read = true;
        } else {
            if (blk_buffer_is_zero(buf, me.end - me.start)) {
                ret = blk_pwrite_zeroes(c->target, me.start,
                                        me.end - me.start, 0);
            } else {
                ret = blk_pwrite(c->target, me.start, me.end - me.start,
                                 buf, 0);
            }
            *failed_read = false;
        }

        pthread_mutex_lock(&c->lock);
        for (CopyRange **p = &c->inflight; *p != NULL; p = &(*p)->next) {
            if (*p == &me) {
                *p = me.next;
                break;
            }
        }
        if (ret < 0) {
            hbm_set(c->todo, me.start, me.end - me.start);
        }
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        if (ret < 0) {
            return ret;
        }
        __atomic_fetch_add(&c->copied, me.end - me.start, __ATOMIC_RELAXED);
        pos = me.end;
    }
    return 0;
}

/* The write hook: a write to the source first saves the old data. */
static int backup_cbw_fn(BlockWriteHook *hook, BlockNode *bs,
                         uint64_t offset, uint64_t bytes)
{
    BackupCbw *c = container_of(hook, BackupCbw, hook);
    CLEANUP_FREE uint8_t *buf = NULL;
    bool failed_read = false;
    bool any;

    (void)bs;
    if (offset >= c->len) {
        return 0;              /* past the end: nothing old to keep */
    }
    bytes = MIN(bytes, c->len - offset);
    /* Nothing left to copy and nobody copying the range: the write may
     * go.  A range a copier took out of todo is not copied yet while it
     * is in flight (its read of the old data may still be to come):
     * backup_copy() waits for it. */
    pthread_mutex_lock(&c->lock);
    any = hbm_next_dirty(c->todo, offset, bytes) >= 0;
    for (CopyRange *r = c->inflight; r != NULL && !any; r = r->next) {
        any = ranges_overlap(r, offset, offset + bytes);
    }
    pthread_mutex_unlock(&c->lock);
    if (!any) {
        return 0;
    }
    buf = xmalloc(BACKUP_CHUNK);
    return backup_copy(c, offset, bytes, buf, BACKUP_CHUNK, &failed_read);
}

static void backup_cbw_done(BlockWriteHook *hook)
{
    BackupCbw *c = container_of(hook, BackupCbw, hook);

    hbm_free(c->todo);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

static void backup_sync_progress(BackupJob *b)
{
    b->job.progress_current =
        (int64_t)__atomic_load_n(&b->cbw->copied, __ATOMIC_RELAXED);
}

/* ---- the job -------------------------------------------------------- */

static void backup_run(Job *job);

static void backup_init_extent(void *opaque, uint64_t pos, uint64_t n,
                               int depth)
{
    BackupCbw *c = opaque;

    if (depth != 1) {
        pthread_mutex_lock(&c->lock);
        hbm_reset(c->todo, pos, n);
        pthread_mutex_unlock(&c->lock);
    }
}

/* On a worker: for sync=top, drop from todo what the source's own layer
 * does not allocate. */
static void backup_init_work(WorkerJob *wj)
{
    BackupJob *b = container_of(wj, BackupJob, init_wj);

    b->init_ret = 0;
    if (b->sync != MIRROR_SYNC_MODE_TOP) {
        return;
    }
    b->init_ret = job_walk_depth(b->source, b->cbw->len, backup_init_extent,
                                 b->cbw);
}

static void backup_init_done(WorkerJob *wj)
{
    BackupJob *b = container_of(wj, BackupJob, init_wj);
    BackupCbw *c = b->cbw;

    b->job.inflight--;
    b->init_done = true;
    if (b->init_ret < 0) {
        b->fail_ret = b->init_ret;
        b->fail_read = true;
    }
    pthread_mutex_lock(&c->lock);
    b->job.progress_total = (int64_t)hbm_count(c->todo) +
        (int64_t)__atomic_load_n(&c->copied, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->lock);
    backup_run(&b->job);
}

static void backup_chunk_work(WorkerJob *wj)
{
    BackupChunk *ch = container_of(wj, BackupChunk, wj);

    ch->ret = backup_copy(ch->b->cbw, ch->offset, ch->bytes, ch->buf,
                          BACKUP_CHUNK, &ch->failed_read);
}

static void backup_chunk_done(WorkerJob *wj)
{
    BackupChunk *ch = container_of(wj, BackupChunk, wj);
    BackupJob *b = ch->b;

    ch->busy = false;
    b->job.inflight--;
    backup_sync_progress(b);
    if (ch->ret < 0 && b->fail_ret == 0) {
        switch (job_io_error(&b->job, ch->failed_read, ch->ret)) {
        case BLOCK_ERROR_ACTION_IGNORE:
            /* Skip the range: it stays uncopied. */
            pthread_mutex_lock(&b->cbw->lock);
            hbm_reset(b->cbw->todo, ch->offset, ch->bytes);
            pthread_mutex_unlock(&b->cbw->lock);
            break;
        case BLOCK_ERROR_ACTION_STOP:
            b->next = 0;       /* the range is in todo again: retried */
            break;
        default:
            b->fail_ret = ch->ret;
            b->fail_read = ch->failed_read;
            break;
        }
    }
    backup_run(&b->job);
}

static void backup_flush_done(BlockRequest *req)
{
    BackupJob *b = req->opaque;

    b->job.inflight--;
    b->flushing = false;
    b->flushed = true;
    if (req->ret < 0 && b->fail_ret == 0) {
        b->fail_ret = req->ret;
    }
    backup_run(&b->job);
}

/* The next range to copy at or after b->next (wrapping once), or false
 * when todo is empty. */
static bool backup_next_range(BackupJob *b, uint64_t *off, uint64_t *bytes)
{
    BackupCbw *c = b->cbw;
    int64_t d;

    pthread_mutex_lock(&c->lock);
    d = b->next < c->len ? hbm_next_dirty(c->todo, b->next, c->len - b->next)
                         : -1;
    if (d < 0 && b->next > 0) {
        d = hbm_next_dirty(c->todo, 0, c->len);
    }
    pthread_mutex_unlock(&c->lock);
    if (d < 0) {
        return false;
    }
    *off = (uint64_t)d;
    *bytes = MIN((uint64_t)BACKUP_CHUNK, c->len - *off);
    return true;
}

/* Is a chunk copying [off, off+bytes) already? */
static bool backup_chunk_busy(BackupJob *b, uint64_t off)
{
    for (unsigned i = 0; i < BACKUP_MAX_INFLIGHT; i++) {
        if (b->chunks[i].busy && b->chunks[i].offset <= off &&
            off < b->chunks[i].offset + b->chunks[i].bytes) {
            return true;
        }
    }
    return false;
}

static void backup_run(Job *job)
{
    BackupJob *b = container_of(job, BackupJob, job);

    if (job_is_cancelled(job) && job->inflight == 0) {
        job_finish(job, b->fail_ret < 0 ? b->fail_ret : -ECANCELED, NULL);
        return;
    }
    if (!b->init_started) {
        b->init_started = true;
        job->inflight++;
        b->init_wj.run = backup_init_work;
        b->init_wj.done = backup_init_done;
        worker_submit(backup_pool(b), &b->init_wj);
        return;
    }
    if (!b->init_done) {
        return;
    }
    if (job_is_cancelled(job) || b->fail_ret < 0) {
        if (job->inflight == 0) {
            job_finish(job, b->fail_ret < 0 ? b->fail_ret : -ECANCELED,
                       NULL);
        }
        return;
    }
    if (b->sync == MIRROR_SYNC_MODE_NONE) {
        return;                /* copy-before-write only, until cancel */
    }
    while (job_may_issue(job) && !b->flushing && !b->flushed) {
        BackupChunk *ch = NULL;
        uint64_t off, bytes, wait;

        for (unsigned i = 0; i < BACKUP_MAX_INFLIGHT; i++) {
            if (!b->chunks[i].busy) {
                ch = &b->chunks[i];
                break;
            }
        }
        if (ch == NULL) {
            return;            /* all in flight */
        }
        if (!backup_next_range(b, &off, &bytes)) {
            if (job->inflight > 0) {
                return;        /* the last chunks are still copying */
            }
            /* Everything copied: make it durable, then done. */
            b->flushing = true;
            job->inflight++;
            b->flush_req = (BlockRequest){
                .bs = b->target, .type = BLK_OP_FLUSH,
                .cb = backup_flush_done, .opaque = b,
            };
            blk_aio_submit(backup_pool(b), &b->flush_req);
            return;
        }
        if (backup_chunk_busy(b, off)) {
            return;            /* wait for that chunk to finish */
        }
        wait = job_rate_check(job, bytes);
        if (wait > 0) {
            job_sleep(job, wait);
            return;
        }
        ch->b = b;
        ch->offset = off;
        ch->bytes = bytes;
        ch->busy = true;
        ch->wj.run = backup_chunk_work;
        ch->wj.done = backup_chunk_done;
        b->next = off + bytes;
        job->inflight++;
        worker_submit(backup_pool(b), &ch->wj);
    }
    if (b->flushed && job->inflight == 0) {
        job_finish(job, b->fail_ret, NULL);
    }
}

static void backup_bitmap_restore(BackupJob *b, bool ok)
{
    HBitmap *bits;

    if (b->bitmap == NULL) {
        return;
    }
    blk_dirty_bitmap_lock(b->source);
    bits = dirty_bitmap_bits(b->bitmap);
    if (b->bitmap_mode == BITMAP_SYNC_MODE_NEVER ||
        (!ok && b->bitmap_mode == BITMAP_SYNC_MODE_ON_SUCCESS)) {
        hbm_merge(bits, b->snap);
    } else if (!ok && b->bitmap_mode == BITMAP_SYNC_MODE_ALWAYS) {
        pthread_mutex_lock(&b->cbw->lock);
        hbm_merge(bits, b->cbw->todo);
        pthread_mutex_unlock(&b->cbw->lock);
    }
    blk_dirty_bitmap_unlock(b->source);
}

static void backup_commit(Job *job)
{
    backup_bitmap_restore(container_of(job, BackupJob, job), true);
}

static void backup_abort(Job *job)
{
    backup_bitmap_restore(container_of(job, BackupJob, job), false);
}

static void backup_clean(Job *job)
{
    BackupJob *b = container_of(job, BackupJob, job);

    if (b->bitmap != NULL) {
        dirty_bitmap_set_busy(b->bitmap, false);
        b->bitmap = NULL;
    }
    if (b->cbw != NULL) {
        BackupCbw *c = b->cbw;
        b->cbw = NULL;
        /* Frees c once no write is inside the hook. */
        blk_write_hook_remove(c->source, &c->hook);
    }
}

static void backup_free(Job *job)
{
    BackupJob *b = container_of(job, BackupJob, job);

    for (unsigned i = 0; i < BACKUP_MAX_INFLIGHT; i++) {
        free(b->chunks[i].buf);
    }
    hbm_free(b->snap);
}

static const JobDriver backup_driver = {
    .type = JOB_TYPE_BACKUP,
    .run = backup_run,
    .commit = backup_commit,
    .abort = backup_abort,
    .clean = backup_clean,
    .free = backup_free,
};

/* QEMU's checks of the bitmap arguments (blockdev.c
 * do_backup_common), with its messages.  Turns incremental into
 * bitmap. */
static bool backup_check_bitmap_args(const BlockdevBackup *a,
                                     MirrorSyncMode *sync,
                                     BitmapSyncMode *mode, Error **errp)
{
    bool has_mode = a->has_bitmap_mode;

    *sync = a->sync;
    *mode = a->bitmap_mode;
    if (*sync == MIRROR_SYNC_MODE_INCREMENTAL) {
        if (has_mode && *mode != BITMAP_SYNC_MODE_ON_SUCCESS) {
            error_setg(errp, "Bitmap sync mode must be 'on-success' when "
                       "using sync mode 'incremental'");
            return false;
        }
        has_mode = true;
        *sync = MIRROR_SYNC_MODE_BITMAP;
        *mode = BITMAP_SYNC_MODE_ON_SUCCESS;
    }
    if (a->has_bitmap) {
        if (!has_mode) {
            error_setg(errp, "Bitmap sync mode must be given when "
                       "providing a bitmap");
            return false;
        }
        if (*sync == MIRROR_SYNC_MODE_NONE) {
            error_setg(errp, "sync mode 'none' does not produce meaningful "
                       "bitmap outputs");
            return false;
        }
        if (*mode == BITMAP_SYNC_MODE_NEVER &&
            *sync != MIRROR_SYNC_MODE_BITMAP) {
            error_setg(errp, "Bitmap sync mode 'never' has no meaningful "
                       "effect when combined with sync mode '%s'",
                       MirrorSyncMode_str(*sync));
            return false;
        }
    } else {
        if (*sync == MIRROR_SYNC_MODE_BITMAP) {
            error_setg(errp, "must provide a valid bitmap name for "
                       "'bitmap' sync mode");
            return false;
        }
        if (has_mode) {
            error_setg(errp, "Cannot specify bitmap sync mode without a "
                       "bitmap");
            return false;
        }
    }
    return true;
}

Job *backup_prepare(QmpCtx *ctx, const BlockdevBackup *args, Error **errp)
{
    BlockGraph *g = ctx->graph;
    BlockNode *source, *target;
    DirtyBitmap *bm = NULL;
    MirrorSyncMode sync;
    BitmapSyncMode mode;
    BackupJob *b;
    BackupCbw *c;
    Job *job;
    int64_t len;

    source = blk_lookup_bs(g, args->device, NULL, errp);
    if (source == NULL) {
        return NULL;
    }
    target = blk_lookup_bs(g, args->target, NULL, errp);
    if (target == NULL) {
        return NULL;
    }
    if (!backup_check_bitmap_args(args, &sync, &mode, errp)) {
        return NULL;
    }
    if (args->compress) {
        error_setg(errp, "Compression is not supported for this drive %s",
                   blk_node_name(target));
        return NULL;
    }
    if (args->speed < 0) {
        error_setg(errp, "Parameter 'speed' expects a non-negative value");
        return NULL;
    }
    if (source == target) {
        error_setg(errp, "Source and target cannot be the same");
        return NULL;
    }
    len = blk_getlength(source);
    if (len < 0 || blk_getlength(target) != len) {
        error_setg(errp, "Source and target image have different sizes");
        return NULL;
    }
    if (args->has_bitmap) {
        bm = blk_dirty_bitmap_find(source, args->bitmap);
        if (bm == NULL) {
            error_setg(errp, "Bitmap '%s' could not be found",
                       args->bitmap);
            return NULL;
        }
        if (!dirty_bitmap_check(bm, BM_CHECK_ALLOW_RO, errp)) {
            return NULL;
        }
    }
    job = job_create(g, &backup_driver, sizeof(BackupJob),
                     args->has_job_id ? args->job_id : args->device,
                     args->auto_finalize, args->auto_dismiss, errp);
    if (job == NULL) {
        return NULL;
    }
    b = container_of(job, BackupJob, job);
    job->on_source_error = args->on_source_error;
    job->on_target_error = args->on_target_error;
    job->speed = args->speed;
    if (!job_claim_node(job, source, false, errp) ||
        !job_claim_node(job, target, true, errp)) {
        job_early_fail(job);
        return NULL;
    }
    if (args->has_filter_node_name &&
        !job_insert_filter(job, source, JOB_FILTER_COPY_BEFORE_WRITE,
                           args->filter_node_name, errp)) {
        job_early_fail(job);
        return NULL;
    }
    b->source = source;
    b->target = target;
    b->sync = sync;
    b->bitmap_mode = mode;
    for (unsigned i = 0; i < BACKUP_MAX_INFLIGHT; i++) {
        b->chunks[i].buf = xmalloc(BACKUP_CHUNK);
    }

    c = XNEW(BackupCbw);
    c->source = source;
    c->target = target;
    c->len = (uint64_t)len;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->todo = hbm_new((uint64_t)len, BACKUP_CLUSTER);
    c->hook.fn = backup_cbw_fn;
    c->hook.done = backup_cbw_done;
    if (sync == MIRROR_SYNC_MODE_BITMAP) {
        /* todo: the bitmap's dirty ranges, at the cluster size. */
        blk_dirty_bitmap_lock(source);
        HBitmap *bits = dirty_bitmap_bits(bm);
        uint64_t pos = 0;
        while (pos < (uint64_t)len) {
            bool dirty;
            uint64_t n = hbm_extent(bits, pos, (uint64_t)len - pos, &dirty);
            if (dirty) {
                hbm_set(c->todo, pos, n);
            }
            pos += n;
        }
        blk_dirty_bitmap_unlock(source);
    } else {
        /* full, none: everything may need saving; top: the init step
         * drops what the node does not allocate. */
        hbm_set_all(c->todo);
    }
    b->cbw = c;
    if (bm != NULL) {
        /* From now on the bitmap records only the writes made during
         * the job; its old bits wait in snap. */
        blk_dirty_bitmap_lock(source);
        b->snap = hbm_copy(dirty_bitmap_bits(bm));
        hbm_reset_all(dirty_bitmap_bits(bm));
        blk_dirty_bitmap_unlock(source);
        dirty_bitmap_set_busy(bm, true);
        b->bitmap = bm;
    }
    job->progress_total = (int64_t)hbm_count(c->todo);
    blk_write_hook_add(source, &c->hook);
    return job;
}

bool qmp_blockdev_backup(QmpCtx *ctx, const BlockdevBackup *args,
                         Error **errp)
{
    Job *job = backup_prepare(ctx, args, errp);

    if (job == NULL) {
        return false;
    }
    job_start(job);
    return true;
}
