/* mirror.c - blockdev-mirror and active block-commit: keep a target in
 * sync with a node in use, then pivot its users to the target.
 *
 * The job tracks what differs between source and target in "dirty", a
 * bitmap at the job's granularity: at the start everything the sync
 * mode copies (full: all, top: what the source's own layer allocates,
 * active commit: what the layers above base allocate), then every
 * range written to the source.  Chunks of dirty ranges are taken out
 * of the bitmap on the loop thread, copied on a worker (read source,
 * write target) and put back if they fail.
 *
 * The source's write hook (block.h BlockWriteHook) sees every write:
 *
 *   background      fn registers the write as a range in flight (BG),
 *                   after marks it dirty; the job copies it later.
 *   write-blocking  fn waits for chunks and other blocking writes over
 *                   the range, registers it (ACTIVE); after writes the
 *                   same data to the target before the guest's write
 *                   completes (on failure: dirty, and the job reports).
 *
 * A chunk never overlaps an ACTIVE write (it is taken around them, and
 * an ACTIVE write waits for the chunks it meets), so neither lands old
 * data over the other's new data.  A BG write racing a chunk is safe:
 * it marks dirty after its data is in the source, so the range is
 * copied again.
 *
 *   running ──copied everything──> ready (BLOCK_JOB_READY), keeps
 *   copying what gets dirty ──job-complete / soft cancel──> the hook
 *   turns write-blocking; once no BG write is left and nothing is
 *   dirty the hook holds new writes (draining); once the ACTIVE ones
 *   are done and nothing is dirty the target is flushed and the job
 *   finishes.  Commit (finalize) pivots: blk_replace_node(source,
 *   target) moves the exports and parents; then the held writes go on
 *   (to the source, mirrored to the target: they were submitted before
 *   the pivot).  A soft cancel (block-job-cancel in ready) does all but
 *   the pivot.
 *
 * The shared state (MirrorShared) is freed by the hook's done callback,
 * once no write is inside the hook.
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

#define MIRROR_CHUNK_MAX (1024 * 1024)      /* bytes per job request */
#define MIRROR_KERNEL_CHUNK (8u * 1024 * 1024)  /* the same, in-kernel */
#define MIRROR_BUF_DEFAULT (16 * 1024 * 1024)
#define MIRROR_MAX_INFLIGHT 4        /* chunks, as backup and stream */
#define MIRROR_GRAN_MIN 512u
#define MIRROR_GRAN_MAX (64u * 1024 * 1024)
#define MIRROR_POLL_US 20000    /* ready: look for new dirty ranges */
#define MIRROR_DRAIN_POLL_US 1000

typedef enum MirrorOpKind {
    MIRROR_OP_CHUNK,             /* the job copying a range */
    MIRROR_OP_ACTIVE,            /* a write-blocking guest write */
    MIRROR_OP_BG,                /* a background-mode guest write */
} MirrorOpKind;

/* A range in flight. */
typedef struct MirrorOp {
    uint64_t start, end;
    MirrorOpKind kind;
    pthread_t owner;             /* writes: the thread running them */
    struct MirrorOp *next;
} MirrorOp;

typedef struct MirrorShared {
    BlockWriteHook hook;
    BlockNode *target;           /* referenced until done */
    uint64_t len;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    HBitmap *dirty;              /* under lock */
    MirrorOp *ops;               /* under lock */
    bool active;                 /* write-blocking (under lock) */
    bool draining;               /* new writes wait (under lock) */
    unsigned bg_writers;         /* BG ops (under lock) */
    int active_err;              /* a blocking write's target write
                                  * failed: -errno (under lock) */
} MirrorShared;

typedef struct MirrorJob MirrorJob;

typedef struct MirrorChunk {
    WorkerJob wj;
    MirrorJob *m;
    MirrorOp op;                 /* registered while copying */
    uint8_t *buf;                /* chunk_size bytes, allocated on use */
    int ret;
    bool failed_read;
    bool kernel_copy;            /* the kernel copied some of it */
    bool busy;
} MirrorChunk;

struct MirrorJob {
    Job job;
    MirrorShared *sh;
    BlockNode *source, *target;
    BlockNode *to_replace;       /* replaces: what the pivot replaces
                                  * (the source or below it), or NULL */
    MirrorSyncMode sync;
    int base_depth;              /* active commit: base's depth from
                                  * source (1 = source), else 0 */
    bool is_commit;
    uint64_t len;
    uint32_t granularity;
    uint64_t chunk_size;
    uint32_t zero_flags;         /* zeroing the target: BLK_REQ_* */
    unsigned max_chunks;
    bool init_started, init_done;
    WorkerJob init_wj;
    int init_ret;
    bool should_complete;        /* job-complete or soft cancel */
    bool flushing, flushed;
    BlockRequest flush_req;
    int fail_ret;
    const char *fail_msg;        /* static text, NULL: strerror */
    uint64_t copied;             /* bytes copied by chunks */
    /* A chunk was copied inside the kernel (copy_file_range): then one
     * chunk at a time, of up to MIRROR_KERNEL_CHUNK (no buffer limits
     * it).  Writers of one file take its inode lock in turn, so more
     * chunks copy no faster; they spin on the lock (on tmpfs, a third
     * of the job's CPU time with four).  Bigger chunks make up for the
     * pause between two (the loop takes the next). */
    bool kernel_copy;
    MirrorChunk chunks[MIRROR_MAX_INFLIGHT];
};

static WorkerPool *mirror_pool(MirrorJob *m)
{
    return blk_graph_job_pool(m->job.graph);
}

static bool mirror_overlaps(MirrorShared *sh, uint64_t a, uint64_t b,
                            bool ignore_bg)
{
    for (MirrorOp *o = sh->ops; o != NULL; o = o->next) {
        if (ignore_bg && o->kind == MIRROR_OP_BG) {
            continue;
        }
        if (o->start < b && a < o->end) {
            return true;
        }
    }
    return false;
}

static void mirror_unlink(MirrorShared *sh, MirrorOp *op)
{
    for (MirrorOp **p = &sh->ops; *p != NULL; p = &(*p)->next) {
        if (*p == op) {
            *p = op->next;
            return;
        }
    }
}

/* ---- the source's write hook (workers) ------------------------------ */

static int mirror_hook_before(BlockWriteHook *hook, BlockNode *bs,
                              uint64_t offset, uint64_t bytes)
{
    MirrorShared *sh = container_of(hook, MirrorShared, hook);
    MirrorOp *op;

    (void)bs;
    if (offset >= sh->len) {
        return 0;
    }
    op = XNEW(MirrorOp);
    op->start = offset;
    op->end = MIN(offset + bytes, sh->len);
    op->owner = pthread_self();
    pthread_mutex_lock(&sh->lock);
    while (sh->draining) {
        pthread_cond_wait(&sh->cond, &sh->lock);
    }
    if (sh->active) {
        while (mirror_overlaps(sh, op->start, op->end, true)) {
            pthread_cond_wait(&sh->cond, &sh->lock);
        }
        op->kind = MIRROR_OP_ACTIVE;
    } else {
        op->kind = MIRROR_OP_BG;
        sh->bg_writers++;
    }
    op->next = sh->ops;
    sh->ops = op;
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

/* Put what the source now holds in [offset, offset+bytes) on the target
 * (a blocking write's second half). */
static int mirror_active_copy(MirrorShared *sh, BlockNode *bs,
                              uint64_t offset, uint64_t bytes,
                              const void *buf, bool discard)
{
    CLEANUP_FREE uint8_t *tmp = NULL;

    if (buf != NULL) {
        return blk_pwrite(sh->target, offset, bytes, buf, 0);
    }
    if (!discard) {
        return blk_pwrite_zeroes(sh->target, offset, bytes, 0);
    }
    /* A discard leaves what the format says (zeroes, the backing
     * file's data): copy that. */
    tmp = xmalloc(MIRROR_CHUNK_MAX);
    while (bytes > 0) {
        uint64_t n = MIN(bytes, (uint64_t)MIRROR_CHUNK_MAX);
        int ret = blk_pread(bs, offset, n, tmp, 0);

        if (ret == 0) {
            ret = blk_buffer_is_zero(tmp, n)
                  ? blk_pwrite_zeroes(sh->target, offset, n, 0)
                  : blk_pwrite(sh->target, offset, n, tmp, 0);
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int mirror_hook_after(BlockWriteHook *hook, BlockNode *bs,
                             uint64_t offset, uint64_t bytes,
                             const void *buf, bool discard, int ret,
                             bool before_ran)
{
    MirrorShared *sh = container_of(hook, MirrorShared, hook);
    MirrorOp *op = NULL;
    uint64_t end;
    int r;

    if (offset >= sh->len) {
        return ret;
    }
    end = MIN(offset + bytes, sh->len);
    pthread_mutex_lock(&sh->lock);
    if (before_ran) {
        pthread_t self = pthread_self();
        for (MirrorOp *o = sh->ops; o != NULL; o = o->next) {
            if (o->kind != MIRROR_OP_CHUNK && o->start == offset &&
                o->end == end && pthread_equal(o->owner, self)) {
                op = o;
                break;
            }
        }
    }
    if (op == NULL || op->kind == MIRROR_OP_BG || ret < 0) {
        /* The data changed (or may have): copy it later. */
        hbm_set(sh->dirty, offset, end - offset);
        if (op != NULL) {
            if (op->kind == MIRROR_OP_BG) {
                sh->bg_writers--;
            }
            mirror_unlink(sh, op);
            free(op);
        }
        pthread_cond_broadcast(&sh->cond);
        pthread_mutex_unlock(&sh->lock);
        return ret;
    }
    pthread_mutex_unlock(&sh->lock);

    r = mirror_active_copy(sh, bs, offset, end - offset, buf, discard);

    pthread_mutex_lock(&sh->lock);
    if (r < 0) {
        hbm_set(sh->dirty, offset, end - offset);
        if (sh->active_err == 0) {
            sh->active_err = r;
        }
    }
    mirror_unlink(sh, op);
    free(op);
    pthread_cond_broadcast(&sh->cond);
    pthread_mutex_unlock(&sh->lock);
    return ret;
}

static void mirror_hook_done(BlockWriteHook *hook)
{
    MirrorShared *sh = container_of(hook, MirrorShared, hook);

    while (sh->ops != NULL) {
        MirrorOp *o = sh->ops;
        sh->ops = o->next;
        if (o->kind != MIRROR_OP_CHUNK) {
            free(o);
        }
    }
    hbm_free(sh->dirty);
    blk_unref(sh->target);
    pthread_mutex_destroy(&sh->lock);
    pthread_cond_destroy(&sh->cond);
    free(sh);
}

/* ---- the job (loop thread, chunks on workers) ----------------------- */

static void mirror_run(Job *job);

/* sync=top copies the top layer; commit, the layers above the base. */
static void mirror_init_extent(void *opaque, uint64_t pos, uint64_t n,
                               int depth)
{
    MirrorJob *m = opaque;

    if (m->is_commit ? depth >= 1 && depth < m->base_depth : depth == 1) {
        pthread_mutex_lock(&m->sh->lock);
        hbm_set(m->sh->dirty, pos, n);
        pthread_mutex_unlock(&m->sh->lock);
    }
}

/* On a worker: the initial dirty ranges for sync=top and active
 * commit (full has them all already). */
static void mirror_init_work(WorkerJob *wj)
{
    MirrorJob *m = container_of(wj, MirrorJob, init_wj);

    m->init_ret = 0;
    if (m->sync != MIRROR_SYNC_MODE_TOP && !m->is_commit) {
        return;
    }
    m->init_ret = job_walk_depth(m->source, m->len, mirror_init_extent, m);
}

static void mirror_update_progress(MirrorJob *m)
{
    uint64_t dirty, busy = 0;

    pthread_mutex_lock(&m->sh->lock);
    dirty = hbm_count(m->sh->dirty);
    pthread_mutex_unlock(&m->sh->lock);
    for (unsigned i = 0; i < m->max_chunks; i++) {
        if (m->chunks[i].busy) {
            busy += m->chunks[i].op.end - m->chunks[i].op.start;
        }
    }
    m->job.progress_current = (int64_t)m->copied;
    m->job.progress_total = (int64_t)(m->copied + dirty + busy);
}

static void mirror_init_done(WorkerJob *wj)
{
    MirrorJob *m = container_of(wj, MirrorJob, init_wj);

    m->job.inflight--;
    m->init_done = true;
    if (m->init_ret < 0 && m->fail_ret == 0) {
        m->fail_ret = m->init_ret;
    }
    mirror_update_progress(m);
    mirror_run(&m->job);
}

/* Copy [off, off+n), data in the source, to the target: inside the
 * kernel when both are files (blk_copy_range), else read into the
 * chunk's buffer and write, a buffer at a time (zeroes found in the
 * data written as zeroes).  0 or -errno, ch->failed_read for a source
 * read failure. */
static int mirror_copy_data(MirrorJob *m, MirrorChunk *ch, uint64_t off,
                            uint64_t n)
{
    int ret = blk_copy_range(m->source, off, m->target, off, n,
                             BLK_REQ_NO_HOOK | BLK_REQ_STREAM);

    if (ret != -ENOTSUP) {
        ch->kernel_copy = true;
        return ret;
    }
    while (n > 0) {
        uint64_t k = MIN(n, m->chunk_size);

        ret = blk_pread(m->source, off, k, ch->buf, 0);
        if (ret < 0) {
            ch->failed_read = true;
            return ret;
        }
        if (blk_buffer_is_zero(ch->buf, k)) {
            ret = blk_pwrite_zeroes(m->target, off, k, m->zero_flags);
        } else {
            ret = blk_pwrite(m->target, off, k, ch->buf, BLK_REQ_NO_HOOK);
            if (ret == 0) {
                blk_start_writeback(m->target);  /* as BLK_REQ_STREAM */
            }
        }
        if (ret < 0) {
            return ret;
        }
        off += k;
        n -= k;
    }
    return 0;
}

/* [off, off+n) reads as zeroes in the source: leave what the target
 * itself holds as zeroes (a hole of a fresh raw target, a qcow2 zero
 * cluster: it stays sparse), zero the rest.  A range the target does
 * not allocate is zeroed all the same: its image may name a backing
 * file this node was opened without. */
static int mirror_copy_zeroes(MirrorJob *m, uint64_t off, uint64_t n)
{
    while (n > 0) {
        uint64_t pnum = n;
        int st = blk_block_status(m->target, off, n, &pnum);
        int ret;

        if (st < 0) {
            pnum = n;
        }
        if (st < 0 || !(st & BLK_STATUS_ZERO) ||
            !(st & BLK_STATUS_ALLOCATED)) {
            ret = blk_pwrite_zeroes(m->target, off, pnum, m->zero_flags);
            if (ret < 0) {
                return ret;
            }
        }
        off += pnum;
        n -= pnum;
    }
    return 0;
}

/* On a worker: copy the chunk's range extent by extent, as the
 * source's block status divides it (a status that fails: data). */
static void mirror_chunk_work(WorkerJob *wj)
{
    MirrorChunk *ch = container_of(wj, MirrorChunk, wj);
    MirrorJob *m = ch->m;
    MirrorShared *sh = m->sh;
    uint64_t pos = ch->op.start, end = ch->op.end;
    int ret = 0;

    ch->failed_read = false;
    ch->kernel_copy = false;
    while (pos < end && ret == 0) {
        uint64_t pnum = end - pos;
        int st = blk_block_status(m->source, pos, end - pos, &pnum);

        if (st >= 0 && (st & BLK_STATUS_ZERO)) {
            ret = mirror_copy_zeroes(m, pos, pnum);
        } else {
            if (st < 0) {
                pnum = end - pos;
            }
            ret = mirror_copy_data(m, ch, pos, pnum);
        }
        pos += pnum;
    }
    pthread_mutex_lock(&sh->lock);
    mirror_unlink(sh, &ch->op);
    if (ret < 0) {
        hbm_set(sh->dirty, ch->op.start, end - ch->op.start);
    }
    pthread_cond_broadcast(&sh->cond);
    pthread_mutex_unlock(&sh->lock);
    ch->ret = ret;
}

static void mirror_chunk_done(WorkerJob *wj)
{
    MirrorChunk *ch = container_of(wj, MirrorChunk, wj);
    MirrorJob *m = ch->m;
    uint64_t n = ch->op.end - ch->op.start;

    ch->busy = false;
    m->job.inflight--;
    m->kernel_copy |= ch->kernel_copy;
    if (ch->ret == 0) {
        m->copied += n;
    } else if (m->fail_ret == 0) {
        switch (job_io_error(&m->job, ch->failed_read, ch->ret)) {
        case BLOCK_ERROR_ACTION_IGNORE:
            /* Skip the range: it stays uncopied. */
            pthread_mutex_lock(&m->sh->lock);
            hbm_reset(m->sh->dirty, ch->op.start, n);
            pthread_mutex_unlock(&m->sh->lock);
            break;
        case BLOCK_ERROR_ACTION_STOP:
            break;             /* still dirty: retried on resume */
        default:
            m->fail_ret = ch->ret;
            break;
        }
    }
    mirror_update_progress(m);
    mirror_run(&m->job);
}

static void mirror_flush_done(BlockRequest *req)
{
    MirrorJob *m = req->opaque;

    m->job.inflight--;
    m->flushing = false;
    if (req->ret < 0 && m->fail_ret == 0) {
        m->fail_ret = req->ret;
    } else {
        m->flushed = true;
    }
    mirror_run(&m->job);
}

/* Bytes a chunk takes at most. */
static uint64_t mirror_take_size(const MirrorJob *m)
{
    if (!m->kernel_copy) {
        return m->chunk_size;
    }
    return MAX(m->chunk_size,
               ALIGN_DOWN((uint64_t)MIRROR_KERNEL_CHUNK,
                          (uint64_t)m->granularity));
}

/* Take the next dirty range (at most a chunk, whole granules, around
 * ranges in flight) into ch and register it; false when there is none
 * to take now. */
static bool mirror_take(MirrorJob *m, MirrorChunk *ch)
{
    MirrorShared *sh = m->sh;
    uint64_t gran = m->granularity;
    uint64_t pos = 0;

    pthread_mutex_lock(&sh->lock);
    while (pos < m->len) {
        int64_t d = hbm_next_dirty(sh->dirty, pos, m->len - pos);
        uint64_t start, lim, end;
        int64_t c;
        bool blocked = false;

        if (d < 0) {
            break;
        }
        start = ALIGN_DOWN((uint64_t)d, gran);
        lim = MIN(m->len, start + mirror_take_size(m));
        c = hbm_next_clean(sh->dirty, start, lim - start);
        end = c < 0 ? lim : (uint64_t)c;
        /* Leave what a chunk or a blocking write holds; stop before the
         * next one. */
        for (MirrorOp *o = sh->ops; o != NULL; o = o->next) {
            if (o->kind == MIRROR_OP_BG || o->end <= start ||
                o->start >= end) {
                continue;
            }
            if (ALIGN_DOWN(o->start, gran) <= start) {
                blocked = true;
                pos = MAX(pos, ALIGN_UP(o->end, gran));
            } else {
                end = ALIGN_DOWN(o->start, gran);
            }
        }
        if (blocked) {
            pos = MAX(pos, start + gran);
            continue;
        }
        ch->op.start = start;
        ch->op.end = end;
        ch->op.kind = MIRROR_OP_CHUNK;
        hbm_reset(sh->dirty, start, end - start);
        ch->op.next = sh->ops;
        sh->ops = &ch->op;
        pthread_mutex_unlock(&sh->lock);
        return true;
    }
    pthread_mutex_unlock(&sh->lock);
    return false;
}

/* Nothing dirty, and (for the drain) no guest write in flight. */
static bool mirror_synced(MirrorJob *m, bool no_writes)
{
    MirrorShared *sh = m->sh;
    bool ok;

    pthread_mutex_lock(&sh->lock);
    ok = hbm_is_empty(sh->dirty) && sh->bg_writers == 0 &&
         (!no_writes || sh->ops == NULL);
    pthread_mutex_unlock(&sh->lock);
    return ok;
}

static void mirror_set_draining(MirrorShared *sh, bool on)
{
    pthread_mutex_lock(&sh->lock);
    sh->draining = on;
    pthread_cond_broadcast(&sh->cond);
    pthread_mutex_unlock(&sh->lock);
}

/* A blocking write's target write failed: report it as the job's. */
static bool mirror_check_active_error(MirrorJob *m)
{
    int err;

    pthread_mutex_lock(&m->sh->lock);
    err = m->sh->active_err;
    m->sh->active_err = 0;
    pthread_mutex_unlock(&m->sh->lock);
    if (err == 0) {
        return true;
    }
    switch (job_io_error(&m->job, false, err)) {
    case BLOCK_ERROR_ACTION_REPORT:
        m->fail_ret = err;
        return false;
    case BLOCK_ERROR_ACTION_STOP:
        return false;          /* paused; the range is dirty */
    default:
        return true;
    }
}

static void mirror_run(Job *job)
{
    MirrorJob *m = container_of(job, MirrorJob, job);

    if (job_is_cancelled(job) || m->fail_ret < 0) {
        /* Held writes go on at once: the pool must not wait for us. */
        mirror_set_draining(m->sh, false);
        if (job->inflight == 0) {
            job_finish(job, m->fail_ret < 0 ? m->fail_ret : -ECANCELED,
                       m->fail_msg);
        }
        return;
    }
    if (!m->init_started) {
        m->init_started = true;
        int64_t tlen = blk_getlength(m->target);

        if (m->is_commit ? tlen < (int64_t)m->len
                         : tlen != (int64_t)m->len) {
            m->fail_ret = -EINVAL;
            m->fail_msg = "Source and target image have different sizes";
            job_finish(job, m->fail_ret, m->fail_msg);
            return;
        }
        job->inflight++;
        m->init_wj.run = mirror_init_work;
        m->init_wj.done = mirror_init_done;
        worker_submit(mirror_pool(m), &m->init_wj);
        return;
    }
    if (!m->init_done || m->flushing) {
        return;
    }
    if (job->cancelled && !m->should_complete) {
        /* A soft cancel of a ready mirror: converge, no pivot. */
        m->should_complete = true;
        pthread_mutex_lock(&m->sh->lock);
        m->sh->active = true;
        pthread_mutex_unlock(&m->sh->lock);
    }
    if (!mirror_check_active_error(m)) {
        mirror_set_draining(m->sh, false);
        if (m->fail_ret < 0 && job->inflight == 0) {
            job_finish(job, m->fail_ret, NULL);
        }
        return;
    }
    if (m->flushed) {
        if (job->inflight == 0) {
            job_finish(job, 0, NULL);
        }
        return;
    }
    while (job_may_issue(job) ||
           (job->cancelled && !job->force_cancel && !job->user_paused &&
            !job->finished)) {
        MirrorChunk *ch = NULL;
        uint64_t wait;
        unsigned busy = 0;

        for (unsigned i = 0; i < m->max_chunks; i++) {
            if (m->chunks[i].busy) {
                busy++;
            } else if (ch == NULL) {
                ch = &m->chunks[i];
            }
        }
        if (ch == NULL || (m->kernel_copy && busy > 0)) {
            return;            /* all in flight */
        }
        wait = job_rate_check(job, mirror_take_size(m));
        if (wait > 0) {
            job_sleep(job, wait);
            return;
        }
        if (!mirror_take(m, ch)) {
            break;
        }
        if (ch->buf == NULL) {
            ch->buf = xmalloc(m->chunk_size);
        }
        ch->m = m;
        ch->busy = true;
        ch->wj.run = mirror_chunk_work;
        ch->wj.done = mirror_chunk_done;
        job->inflight++;
        mirror_update_progress(m);
        worker_submit(mirror_pool(m), &ch->wj);
    }
    if (job->user_paused) {
        mirror_set_draining(m->sh, false);
        return;
    }
    if (job->inflight > 0) {
        return;
    }
    if (!mirror_synced(m, false)) {
        /* Dirty ranges held by blocking writes, or BG writes still in
         * flight: look again soon. */
        job_sleep(job, m->sh->draining ? MIRROR_DRAIN_POLL_US
                                       : MIRROR_POLL_US);
        return;
    }
    if (job->status == JOB_STATUS_RUNNING) {
        job_ready(job);
    }
    if (!m->should_complete) {
        job_sleep(job, MIRROR_POLL_US);
        return;
    }
    /* Completing: hold new writes, wait for the blocking ones. */
    if (!m->sh->draining) {
        mirror_set_draining(m->sh, true);
    }
    if (!mirror_synced(m, true)) {
        job_sleep(job, MIRROR_DRAIN_POLL_US);
        return;
    }
    m->flushing = true;
    job->inflight++;
    m->flush_req = (BlockRequest){
        .bs = m->target, .type = BLK_OP_FLUSH,
        .cb = mirror_flush_done, .opaque = m,
    };
    blk_aio_submit(mirror_pool(m), &m->flush_req);
}

static bool mirror_complete(Job *job, Error **errp)
{
    MirrorJob *m = container_of(job, MirrorJob, job);

    (void)errp;
    m->should_complete = true;
    pthread_mutex_lock(&m->sh->lock);
    m->sh->active = true;
    pthread_mutex_unlock(&m->sh->lock);
    return true;
}

/* Pivot: the node replaced (replaces, or the source) gives its parents
 * and exports to the target.  For the source that means those the
 * filter holds now. */
static void mirror_commit(Job *job)
{
    MirrorJob *m = container_of(job, MirrorJob, job);
    BlockNode *from = m->to_replace != NULL ? m->to_replace : m->source;

    if (job->cancelled) {
        return;                /* soft cancel: the target is a copy */
    }
    if (from == m->source && job->filter != NULL) {
        from = job->filter;
    }
    blk_replace_node(from, m->target);
}

static void mirror_clean(Job *job)
{
    MirrorJob *m = container_of(job, MirrorJob, job);

    if (m->sh != NULL) {
        MirrorShared *sh = m->sh;
        m->sh = NULL;
        /* Writes held by the drain go on (to the source they were
         * submitted to; still mirrored while inside the hook). */
        mirror_set_draining(sh, false);
        blk_write_hook_remove(m->source, &sh->hook);
    }
}

static void mirror_free(Job *job)
{
    MirrorJob *m = container_of(job, MirrorJob, job);

    for (unsigned i = 0; i < MIRROR_MAX_INFLIGHT; i++) {
        free(m->chunks[i].buf);
    }
}

static const JobDriver mirror_driver = {
    .type = JOB_TYPE_MIRROR,
    .run = mirror_run,
    .complete = mirror_complete,
    .commit = mirror_commit,
    .clean = mirror_clean,
    .free = mirror_free,
};

static const JobDriver commit_active_driver = {
    .type = JOB_TYPE_COMMIT,
    .run = mirror_run,
    .complete = mirror_complete,
    .commit = mirror_commit,
    .clean = mirror_clean,
    .free = mirror_free,
};

/* Is n in bs's backing chain (bs excluded)? */
static bool mirror_chain_contains(BlockNode *bs, BlockNode *n)
{
    for (BlockNode *p = bs->backing; p != NULL; p = p->backing) {
        if (p == n) {
            return true;
        }
    }
    return false;
}

/* The job, its claims and its hook: shared by blockdev-mirror and
 * active commit.  Returns false (errp set) with nothing left behind. */
static bool mirror_start(BlockGraph *g, const JobDriver *drv,
                         const char *id, BlockNode *source,
                         BlockNode *target, BlockNode *to_replace,
                         const char *filter_node_name, MirrorSyncMode sync,
                         int base_depth, uint32_t granularity,
                         int64_t buf_size, int64_t speed,
                         BlockdevOnError on_source_error,
                         BlockdevOnError on_target_error,
                         MirrorCopyMode copy_mode, bool auto_finalize,
                         bool auto_dismiss, Error **errp)
{
    MirrorShared *sh;
    MirrorJob *m;
    Job *job;
    int64_t len = blk_getlength(source);

    if (len < 0) {
        error_setg(errp, "Could not inquire the size of '%s'",
                   blk_node_name(source));
        return false;
    }
    job = job_create(g, drv, sizeof(MirrorJob), id, auto_finalize,
                     auto_dismiss, errp);
    if (job == NULL) {
        return false;
    }
    m = container_of(job, MirrorJob, job);
    job->on_source_error = on_source_error;
    job->on_target_error = on_target_error;
    job->speed = speed;
    if (!job_claim_node(job, source, false, errp) ||
        !job_claim_node(job, target, true, errp) ||
        (to_replace != NULL && to_replace != source &&
         !job_claim_node(job, to_replace, false, errp))) {
        job_early_fail(job);
        return false;
    }
    /* Active commit into a smaller base: QEMU grows the base. */
    if (base_depth > 0 && blk_getlength(target) < len &&
        !job_truncate_node(job, target, (uint64_t)len, errp)) {
        job_early_fail(job);
        return false;
    }
    if (filter_node_name != NULL &&
        !job_insert_filter(job, source, JOB_FILTER_MIRROR_TOP,
                           filter_node_name, errp)) {
        job_early_fail(job);
        return false;
    }
    m->to_replace = to_replace;
    if (granularity == 0) {
        granularity = MAX(blk_dirty_bitmap_default_granularity(target),
                          (uint32_t)BITMAP_DEFAULT_GRANULARITY);
    }
    if (buf_size == 0) {
        buf_size = MIRROR_BUF_DEFAULT;
    }
    m->source = source;
    m->target = target;
    m->sync = sync;
    m->is_commit = base_depth > 0;
    m->base_depth = base_depth;
    m->len = (uint64_t)len;
    m->granularity = granularity;
    /* blockdev-mirror's unmap=true (its default): zeroes may be holes
     * in the target. */
    m->zero_flags = BLK_REQ_NO_HOOK |
                    (base_depth == 0 ? BLK_REQ_MAY_UNMAP : 0);
    m->chunk_size = MAX((uint64_t)granularity,
                        ALIGN_DOWN(MIN((uint64_t)MIRROR_CHUNK_MAX,
                                       (uint64_t)buf_size),
                                   (uint64_t)granularity));
    m->max_chunks = (unsigned)MAX(1, MIN((int64_t)MIRROR_MAX_INFLIGHT,
                                         buf_size /
                                         (int64_t)m->chunk_size));

    sh = XNEW(MirrorShared);
    blk_ref(target);
    sh->target = target;
    sh->len = (uint64_t)len;
    pthread_mutex_init(&sh->lock, NULL);
    pthread_cond_init(&sh->cond, NULL);
    sh->dirty = hbm_new((uint64_t)len, granularity);
    if (sync == MIRROR_SYNC_MODE_FULL && base_depth == 0) {
        hbm_set_all(sh->dirty);
    }
    sh->active = copy_mode == MIRROR_COPY_MODE_WRITE_BLOCKING;
    sh->hook.fn = mirror_hook_before;
    sh->hook.after = mirror_hook_after;
    sh->hook.done = mirror_hook_done;
    m->sh = sh;
    job->progress_total = (int64_t)hbm_count(sh->dirty);
    blk_write_hook_add(source, &sh->hook);
    job_start(job);
    return true;
}

/* replaces: the node must exist and be the source or lie below it
 * through filters only, with the source's size (QEMU's
 * check_to_replace_node and its messages).  Returns it, or NULL with
 * errp set. */
static BlockNode *mirror_check_replaces(BlockGraph *g, BlockNode *source,
                                        const char *name, Error **errp)
{
    BlockNode *n = blk_find_node(g, name);

    if (n == NULL) {
        error_setg(errp, "Failed to find node with node-name='%s'", name);
        return NULL;
    }
    if (n != source && n->job != NULL) {
        error_setg(errp, "Node '%s' is busy: block device is in use by "
                   "block job: %s", name, JobType_str(n->job->drv->type));
        return NULL;
    }
    if (!blk_can_replace(source, n)) {
        error_setg(errp, "Cannot replace '%s' by a node mirrored from '%s', "
                   "because it cannot be guaranteed that doing so would not "
                   "lead to an abrupt change of visible data", name,
                   blk_node_name(source));
        return NULL;
    }
    if (blk_getlength(n) != blk_getlength(source)) {
        error_setg(errp, "cannot replace image with a mirror image of "
                   "different size");
        return NULL;
    }
    return n;
}

bool qmp_blockdev_mirror(QmpCtx *ctx, const QmpBlockdevMirrorArgs *args,
                         Error **errp)
{
    BlockGraph *g = ctx->graph;
    BlockNode *source, *target, *to_replace = NULL;
    MirrorSyncMode sync = args->sync;
    uint32_t gran = args->granularity;

    source = blk_lookup_bs(g, args->device, args->device, errp);
    if (source == NULL) {
        return false;
    }
    target = blk_lookup_bs(g, args->target, args->target, errp);
    if (target == NULL) {
        return false;
    }
    if (args->speed < 0) {
        error_setg(errp, "Parameter 'speed' expects a non-negative value");
        return false;
    }
    if (gran != 0 && (gran < MIRROR_GRAN_MIN || gran > MIRROR_GRAN_MAX)) {
        error_setg(errp, "Parameter 'granularity' expects a value in range "
                   "[512B, 64MB]");
        return false;
    }
    if (gran & (gran - 1)) {
        error_setg(errp, "Parameter 'granularity' expects a power of 2");
        return false;
    }
    if (source->job != NULL || target->job != NULL) {
        BlockNode *busy = source->job != NULL ? source : target;
        error_setg(errp, "Node '%s' is busy: block device is in use by "
                   "block job: %s", blk_node_name(busy),
                   JobType_str(busy->job->drv->type));
        return false;
    }
    if (source->backing == NULL && sync == MIRROR_SYNC_MODE_TOP) {
        sync = MIRROR_SYNC_MODE_FULL;
    }
    if (sync == MIRROR_SYNC_MODE_INCREMENTAL ||
        sync == MIRROR_SYNC_MODE_BITMAP) {
        error_setg(errp, "Sync mode '%s' not supported",
                   MirrorSyncMode_str(sync));
        return false;
    }
    if (args->buf_size < 0) {
        error_setg(errp, "Invalid parameter 'buf-size'");
        return false;
    }
    if (source == target) {
        error_setg(errp, "Can't mirror node into itself");
        return false;
    }
    if (mirror_chain_contains(source, target)) {
        error_setg(errp, "Cannot mirror to a filter on top of a node in the "
                   "source's backing chain");
        return false;
    }
    if (args->has_replaces) {
        to_replace = mirror_check_replaces(g, source, args->replaces, errp);
        if (to_replace == NULL) {
            return false;
        }
    }
    return mirror_start(g, &mirror_driver,
                        args->has_job_id ? args->job_id : args->device,
                        source, target, to_replace,
                        args->has_filter_node_name ? args->filter_node_name
                                                   : NULL,
                        sync, 0, gran, args->buf_size,
                        args->speed, args->on_source_error,
                        args->on_target_error, args->copy_mode,
                        args->auto_finalize, args->auto_dismiss, errp);
}

bool mirror_start_active_commit(BlockGraph *g, const char *id,
                                BlockNode *top, BlockNode *base,
                                const char *filter_node_name,
                                int64_t speed, BlockdevOnError on_error,
                                bool auto_finalize, bool auto_dismiss,
                                Error **errp)
{
    int depth = 1;

    for (BlockNode *n = top; n != NULL && n != base; n = n->backing) {
        depth++;
    }
    return mirror_start(g, &commit_active_driver, id, top, base, NULL,
                        filter_node_name, MIRROR_SYNC_MODE_TOP, depth, 0, 0, speed,
                        on_error, on_error, MIRROR_COPY_MODE_BACKGROUND,
                        auto_finalize, auto_dismiss, errp);
}
