/* cbw.c - pull-mode backup: the "copy-before-write" filter and the
 * "snapshot-access" driver (QEMU 7.x's recipe, QEMU's option names).
 *
 *   guest export ──> [copy-before-write "cbw"] ──file──> [source]
 *                         │        ^
 *                       target     │ file
 *                         v        │
 *                    [target]   [snapshot-access "acc"] <── backup export
 *
 * The filter passes every request to its file child (the source).  A
 * write, write-zeroes or discard first copies the old data of the
 * clusters it touches that are still in "todo" to the target and marks
 * them "done".  snapshot-access reads the point-in-time view: done
 * clusters from the target, the others from the source.
 *
 * Per cluster (CBW_CLUSTER bytes) the filter keeps, under its lock:
 *   todo    old data not copied yet (all, or the bitmap's dirty bits);
 *   done    old data is in the target;
 *   access  readable through snapshot-access (todo's start value; a
 *           discard through snapshot-access drops clusters from it).
 * and a list of ranges in flight: a copier (a guest write copying old
 * data) or a reader (snapshot-access reading the source).  A copier
 * waits for every range in flight over its clusters; a reader waits
 * only for copiers.  So a guest write never lands in a cluster while a
 * snapshot reader reads its old data from the source, and a reader
 * never sees a cluster half copied.  Entries live on the stack of a
 * worker doing I/O, so every wait ends.
 *
 * cbw-timeout: a copy then runs on a thread of its own and the guest's
 * write waits for it at most that long; past it the copy counts as
 * failed (-ETIMEDOUT, then on-cbw-error decides) and its late result is
 * dropped: its clusters are neither done nor, with break-guest-write,
 * taken out of todo.
 *
 * Threads: the data path runs on workers (neither node is aio_inline);
 * open and close as block.h says.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "util/cleanup.h"
#include "util/util.h"

#define CBW_CLUSTER (64 * 1024)          /* copy unit, bytes */
#define CBW_COPY_MAX (1024 * 1024)       /* bytes per copy request */
#define SNAP_STATUS_MAX ((uint64_t)1 << 30)  /* bytes per status answer */

/* A range some worker is working on (on its stack). */
typedef struct CbwRange {
    uint64_t start, end;         /* bytes, cluster-aligned */
    bool reader;                 /* snapshot read, not a copy */
    struct CbwRange *next;
} CbwRange;

typedef struct CbwState {
    uint64_t len;                /* bytes of the source at open */
    OnCbwError on_error;
    uint32_t timeout_s;          /* cbw-timeout: seconds, 0 = none */
    pthread_mutex_t lock;
    pthread_cond_t cond;         /* a range left the list */
    HBitmap *todo, *done, *access;   /* under lock, see above */
    CbwRange *inflight;          /* under lock */
    int snapshot_ret;            /* under lock: break-snapshot's error */
} CbwState;

static bool cbw_busy(const CbwState *s, uint64_t start, uint64_t end,
                     bool readers_too)
{
    for (const CbwRange *r = s->inflight; r != NULL; r = r->next) {
        if (r->start < end && start < r->end && (readers_too || !r->reader)) {
            return true;
        }
    }
    return false;
}

static void cbw_range_remove(CbwState *s, CbwRange *me)
{
    for (CbwRange **p = &s->inflight; *p != NULL; p = &(*p)->next) {
        if (*p == me) {
            *p = me->next;
            break;
        }
    }
    pthread_cond_broadcast(&s->cond);
}

/* Copy [start, end) of the source to the target (a worker; blocks). */
static int cbw_copy(BlockNode *bs, uint64_t start, uint64_t end,
                    uint8_t *buf)
{
    int ret = blk_pread(bs->file, start, end - start, buf, 0);

    if (ret < 0) {
        return ret;
    }
    if (blk_buffer_is_zero(buf, end - start)) {
        return blk_pwrite_zeroes(bs->target, start, end - start, 0);
    }
    return blk_pwrite(bs->target, start, end - start, buf, 0);
}

/* A copy with a time limit (cbw-timeout) runs on its own thread, so the
 * guest's write can stop waiting for it.  The thread holds a reference
 * to the node; whoever of the thread and the waiter comes last frees
 * the copy (under the node's lock). */
typedef struct CbwTimedCopy {
    BlockNode *bs;
    uint64_t start, end;
    uint8_t *buf;
    int ret;
    bool finished;               /* under the node's lock */
    bool abandoned;              /* the waiter gave up (under the lock) */
} CbwTimedCopy;

static void *cbw_timed_copy_thread(void *opaque)
{
    CbwTimedCopy *c = opaque;
    BlockNode *bs = c->bs;
    CbwState *s = bs->opaque;
    int ret = cbw_copy(bs, c->start, c->end, c->buf);
    bool abandoned;

    pthread_mutex_lock(&s->lock);
    c->ret = ret;
    c->finished = true;
    abandoned = c->abandoned;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (abandoned) {
        free(c->buf);
        free(c);
    }
    blk_unref(bs);
    return NULL;
}

/* cbw_copy() within s->timeout_s seconds: -ETIMEDOUT when it takes
 * longer (it goes on, and its result is dropped).  Called and returns
 * with s->lock held (released while waiting). */
static int cbw_copy_timed(BlockNode *bs, uint64_t start, uint64_t end)
{
    CbwState *s = bs->opaque;
    CbwTimedCopy *c = XNEW(CbwTimedCopy);
    struct timespec deadline;
    pthread_attr_t attr;
    pthread_t th;
    int ret;

    c->bs = bs;
    c->start = start;
    c->end = end;
    c->buf = xmalloc(end - start);
    blk_ref(bs);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ret = pthread_create(&th, &attr, cbw_timed_copy_thread, c);
    pthread_attr_destroy(&attr);
    if (ret != 0) {
        blk_unref(bs);
        free(c->buf);
        free(c);
        return -ret;
    }
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += s->timeout_s;
    while (!c->finished) {
        if (pthread_cond_timedwait(&s->cond, &s->lock, &deadline) ==
            ETIMEDOUT && !c->finished) {
            c->abandoned = true;     /* the thread frees it */
            return -ETIMEDOUT;
        }
    }
    ret = c->ret;
    free(c->buf);
    free(c);
    return ret;
}

/* Before a request changes [offset, offset+bytes) of the source: copy
 * the old data of the clusters still in todo.  0, or -errno to fail the
 * guest's request (on-cbw-error=break-guest-write). */
static int cbw_before_write(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    CbwState *s = bs->opaque;
    CLEANUP_FREE uint8_t *buf = NULL;
    uint64_t pos, end;
    int ret = 0;

    if (offset >= s->len || bytes == 0) {
        return 0;
    }
    pos = ALIGN_DOWN(offset, (uint64_t)CBW_CLUSTER);
    end = MIN(ALIGN_UP(offset + MIN(bytes, s->len - offset),
                       (uint64_t)CBW_CLUSTER), s->len);
    pthread_mutex_lock(&s->lock);
    while (pos < end && s->snapshot_ret == 0) {
        CbwRange me = { .reader = false };
        int64_t d, cl;

        if (cbw_busy(s, pos, end, true)) {
            pthread_cond_wait(&s->cond, &s->lock);
            continue;
        }
        d = hbm_next_dirty(s->todo, pos, end - pos);
        if (d < 0) {
            break;
        }
        me.start = (uint64_t)d;
        me.end = MIN(end, me.start + CBW_COPY_MAX);
        cl = hbm_next_clean(s->todo, me.start, me.end - me.start);
        if (cl >= 0) {
            me.end = (uint64_t)cl;
        }
        hbm_reset(s->todo, me.start, me.end - me.start);
        me.next = s->inflight;
        s->inflight = &me;
        pthread_mutex_unlock(&s->lock);

        if (s->timeout_s > 0) {
            pthread_mutex_lock(&s->lock);
            ret = cbw_copy_timed(bs, me.start, me.end);
        } else {
            if (buf == NULL) {
                buf = xmalloc(CBW_COPY_MAX);
            }
            ret = cbw_copy(bs, me.start, me.end, buf);
            pthread_mutex_lock(&s->lock);
        }
        cbw_range_remove(s, &me);
        if (ret == 0) {
            hbm_set(s->done, me.start, me.end - me.start);
        } else if (s->on_error == ON_CBW_ERROR_BREAK_SNAPSHOT) {
            /* The snapshot is lost; the guest goes on. */
            s->snapshot_ret = ret;
            ret = 0;
        } else {
            hbm_set(s->todo, me.start, me.end - me.start);
            break;
        }
        pos = me.end;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* ---- the copy-before-write filter ------------------------------------ */

/* blk_open_image() style: the schema base gives "file". */
_Static_assert(offsetof(BlockdevOptionsCbw, file) ==
               offsetof(BlockdevOptionsGenericFormat, file),
               "cbw options begin with BlockdevOptionsGenericFormat");

/* todo := the bitmap's dirty bits (at CBW_CLUSTER granularity). */
static bool cbw_init_bitmap(BlockNode *bs, const BlockDirtyBitmap *b,
                            Error **errp)
{
    CbwState *s = bs->opaque;
    BlockNode *owner;
    DirtyBitmap *bm;
    bool ok;

    owner = blk_find_node(bs->graph, b->node);
    if (owner == NULL) {
        error_setg(errp, "Node '%s' not found", b->node);
        return false;
    }
    bm = blk_dirty_bitmap_find(owner, b->name);
    if (bm == NULL) {
        error_setg(errp, "Dirty bitmap '%s' not found", b->name);
        return false;
    }
    blk_dirty_bitmap_lock(owner);
    ok = hbm_size(dirty_bitmap_bits(bm)) == s->len &&
         hbm_merge(s->todo, dirty_bitmap_bits(bm));
    blk_dirty_bitmap_unlock(owner);
    if (!ok) {
        error_setg(errp, "Bitmap '%s' does not cover the whole of '%s' "
                   "(its size differs)", b->name, bs->file->node_name);
        return false;
    }
    return true;
}

static void cbw_close(BlockNode *bs)
{
    CbwState *s = bs->opaque;

    hbm_free(s->todo);
    hbm_free(s->done);
    hbm_free(s->access);
    s->todo = s->done = s->access = NULL;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
}

static bool cbw_open(BlockNode *bs, const void *opts, Error **errp)
{
    const BlockdevOptionsCbw *o = opts;
    CbwState *s = bs->opaque;
    int64_t len, tlen;

    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->on_error = o->on_cbw_error;
    s->timeout_s = o->cbw_timeout;
    if (!blk_open_child(bs, "file", o->file, errp) ||
        !blk_open_child(bs, "target", o->target, errp)) {
        cbw_close(bs);
        return false;
    }
    if (bs->target == bs->file) {
        error_setg(errp, "Source and target cannot be the same");
        cbw_close(bs);
        return false;
    }
    if (bs->target->read_only) {
        error_setg(errp, "Target node '%s' is read-only",
                   bs->target->node_name);
        cbw_close(bs);
        return false;
    }
    len = blk_getlength(bs->file);
    tlen = blk_getlength(bs->target);
    if (len < 0 || tlen < 0) {
        error_setg_errno(errp, len < 0 ? (int)-len : (int)-tlen,
                         "Could not get the size of the %s child",
                         len < 0 ? "file" : "target");
        cbw_close(bs);
        return false;
    }
    if (tlen < len) {
        error_setg(errp, "Target node '%s' (%lld bytes) is smaller than "
                   "the source '%s' (%lld bytes)", bs->target->node_name,
                   (long long)tlen, bs->file->node_name, (long long)len);
        cbw_close(bs);
        return false;
    }
    s->len = (uint64_t)len;
    s->todo = hbm_new(s->len, CBW_CLUSTER);
    s->done = hbm_new(s->len, CBW_CLUSTER);
    if (o->bitmap != NULL) {
        if (!cbw_init_bitmap(bs, o->bitmap, errp)) {
            cbw_close(bs);
            return false;
        }
    } else {
        hbm_set_all(s->todo);
    }
    s->access = hbm_copy(s->todo);
    bs->request_alignment = bs->file->request_alignment;
    bs->max_transfer = bs->file->max_transfer;
    return true;
}

static int64_t cbw_get_length(BlockNode *bs)
{
    return blk_getlength(bs->file);
}

static int cbw_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                     void *buf, uint32_t flags)
{
    return blk_pread(bs->file, offset, bytes, buf, flags);
}

static int cbw_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                      const void *buf, uint32_t flags)
{
    int ret = cbw_before_write(bs, offset, bytes);

    return ret < 0 ? ret : blk_pwrite(bs->file, offset, bytes, buf, flags);
}

static int cbw_pwrite_zeroes(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             uint32_t flags)
{
    int ret = cbw_before_write(bs, offset, bytes);

    return ret < 0 ? ret : blk_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int cbw_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    int ret = cbw_before_write(bs, offset, bytes);

    return ret < 0 ? ret : blk_pdiscard(bs->file, offset, bytes);
}

/* The generic blk_flush() flushes the file child after this: the
 * target holds old data a snapshot reader may need after a crash too. */
static int cbw_flush(BlockNode *bs)
{
    return blk_flush(bs->target);
}

static int cbw_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BlockNode **file)
{
    int ret = blk_block_status(bs->file, offset, bytes, pnum);

    if (ret < 0) {
        return ret;
    }
    *map = offset;
    *file = bs->file;
    return (ret & (BLK_STATUS_DATA | BLK_STATUS_ZERO)) |
           BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
}

/* A filter: what the source does, without splicing (a read goes
 * through cbw_pread). */
static void cbw_get_caps(BlockNode *bs, BlockCaps *caps)
{
    blk_get_caps(bs->file, caps);
    caps->splice_read = false;
}

const BlockDriver blk_drv_copy_before_write = {
    .format_name = "copy-before-write",
    .instance_size = sizeof(CbwState),
    .is_filter = true,
    .open = cbw_open,
    .close = cbw_close,
    .get_length = cbw_get_length,
    .pread = cbw_pread,
    .pwrite = cbw_pwrite,
    .pwrite_zeroes = cbw_pwrite_zeroes,
    .pdiscard = cbw_pdiscard,
    .flush = cbw_flush,
    .block_status = cbw_block_status,
    .get_caps = cbw_get_caps,
};

/* ---- snapshot-access ------------------------------------------------- */

/* Register a reader over [offset, offset+bytes) of cbw's clusters once
 * no copier works there, after checking the range is readable: 0, or
 * -EACCES (not in the snapshot: outside the bitmap, discarded, or the
 * snapshot broke) with nothing registered. */
static int cbw_reader_begin(CbwState *s, uint64_t offset, uint64_t bytes,
                            CbwRange *me)
{
    me->start = ALIGN_DOWN(offset, (uint64_t)CBW_CLUSTER);
    me->end = MIN(ALIGN_UP(offset + bytes, (uint64_t)CBW_CLUSTER), s->len);
    me->reader = true;
    pthread_mutex_lock(&s->lock);
    while (s->snapshot_ret == 0 && cbw_busy(s, me->start, me->end, false)) {
        pthread_cond_wait(&s->cond, &s->lock);
    }
    if (s->snapshot_ret < 0 ||
        hbm_next_clean(s->access, offset, bytes) >= 0) {
        pthread_mutex_unlock(&s->lock);
        return -EACCES;
    }
    me->next = s->inflight;
    s->inflight = me;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static void cbw_reader_end(CbwState *s, CbwRange *me)
{
    pthread_mutex_lock(&s->lock);
    cbw_range_remove(s, me);
    pthread_mutex_unlock(&s->lock);
}

/* The first extent of [pos, pos+bytes) that is (*done) or is not yet
 * in the target. */
static uint64_t cbw_done_extent(CbwState *s, uint64_t pos, uint64_t bytes,
                                bool *done)
{
    uint64_t n;

    pthread_mutex_lock(&s->lock);
    n = hbm_extent(s->done, pos, bytes, done);
    pthread_mutex_unlock(&s->lock);
    return n;
}

static bool snap_open(BlockNode *bs, const void *opts, Error **errp)
{
    const BlockdevOptionsGenericFormat *o = opts;

    if (!blk_open_child(bs, "file", o->file, errp)) {
        return false;
    }
    if (bs->file->drv != &blk_drv_copy_before_write) {
        error_setg(errp, "The file child of a snapshot-access node must be "
                   "a copy-before-write filter; '%s' is a %s node",
                   bs->file->node_name, bs->file->drv->format_name);
        return false;
    }
    return true;
}

static int64_t snap_get_length(BlockNode *bs)
{
    CbwState *s = bs->file->opaque;

    return (int64_t)s->len;
}

static int snap_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                      void *buf, uint32_t flags)
{
    BlockNode *cbw = bs->file;
    CbwState *s = cbw->opaque;
    CbwRange me;
    uint64_t pos = offset, end = offset + bytes;
    int ret = cbw_reader_begin(s, offset, bytes, &me);

    (void)flags;
    if (ret < 0) {
        return ret;
    }
    while (pos < end && ret == 0) {
        bool done;
        uint64_t n = cbw_done_extent(s, pos, end - pos, &done);

        ret = blk_pread(done ? cbw->target : cbw->file, pos, n,
                        (uint8_t *)buf + (pos - offset), 0);
        pos += n;
    }
    cbw_reader_end(s, &me);
    return ret;
}

static int snap_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                       const void *buf, uint32_t flags)
{
    (void)bs;
    (void)offset;
    (void)bytes;
    (void)buf;
    (void)flags;
    return -ENOTSUP;             /* the snapshot is read-only (QEMU's) */
}

static int snap_pwrite_zeroes(BlockNode *bs, uint64_t offset, uint64_t bytes,
                              uint32_t flags)
{
    (void)bs;
    (void)offset;
    (void)bytes;
    (void)flags;
    return -ENOTSUP;
}

/* A backup tool done with a region drops it: it leaves the snapshot (no
 * more copies of it, reads fail) and the target may free its space.
 * Whole clusters only (the rest stays). */
static int snap_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    BlockNode *cbw = bs->file;
    CbwState *s = cbw->opaque;
    uint64_t start = ALIGN_UP(offset, (uint64_t)CBW_CLUSTER);
    uint64_t end = offset + bytes >= s->len
                   ? s->len
                   : ALIGN_DOWN(offset + bytes, (uint64_t)CBW_CLUSTER);

    if (start >= end) {
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    while (cbw_busy(s, start, end, false)) {
        pthread_cond_wait(&s->cond, &s->lock);
    }
    hbm_reset(s->access, start, end - start);
    hbm_reset(s->todo, start, end - start);
    pthread_mutex_unlock(&s->lock);
    return blk_pdiscard(cbw->target, start, end - start);
}

/* The snapshot's status: a copied extent as the target has it, the rest
 * as the source has it; -EACCES outside the snapshot. */
static int snap_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             uint64_t *pnum, uint64_t *map, BlockNode **file)
{
    BlockNode *cbw = bs->file;
    CbwState *s = cbw->opaque;
    CbwRange me;
    bool done;
    uint64_t n;
    int ret;

    (void)map;
    (void)file;
    /* The readable extent at offset, at most SNAP_STATUS_MAX bytes. */
    pthread_mutex_lock(&s->lock);
    n = hbm_extent(s->access, offset, MIN(bytes, SNAP_STATUS_MAX), &done);
    pthread_mutex_unlock(&s->lock);
    if (!done) {
        return -EACCES;
    }
    ret = cbw_reader_begin(s, offset, n, &me);
    if (ret < 0) {
        return ret;
    }
    n = cbw_done_extent(s, offset, n, &done);
    ret = blk_block_status(done ? cbw->target : cbw->file, offset, n, pnum);
    cbw_reader_end(s, &me);
    if (ret < 0) {
        return ret;
    }
    return (ret & (BLK_STATUS_DATA | BLK_STATUS_ZERO)) |
           BLK_STATUS_ALLOCATED;
}

/* Reads and discards; no writes. */
static void snap_get_caps(BlockNode *bs, BlockCaps *caps)
{
    (void)bs;
    caps->discard = true;
}

const BlockDriver blk_drv_snapshot_access = {
    .format_name = "snapshot-access",
    .open = snap_open,
    .get_length = snap_get_length,
    .pread = snap_pread,
    .pwrite = snap_pwrite,
    .pwrite_zeroes = snap_pwrite_zeroes,
    .pdiscard = snap_pdiscard,
    .block_status = snap_block_status,
    .get_caps = snap_get_caps,
};
