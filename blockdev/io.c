/* io.c - the data path wrappers: bounds checks, detect-zeroes,
 * statistics, block status across a backing chain, and the
 * asynchronous submit on the worker pool.  See block.h.
 *
 * Every function here may run on any thread (workers run several at
 * once for one node) except blk_aio_submit() and its completion.
 */
#include "blockdev/block.h"
#include "blockdev/bitmap.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "util/log.h"
#include "util/trace.h"
#include "util/util.h"

/* A buffer of zeroes for the write_zeroes fallback. */
#define BLK_ZERO_BUF_SIZE (256 * 1024)
static const uint8_t blk_zero_buf[BLK_ZERO_BUF_SIZE]
    __attribute__((aligned(4096)));

#define STAT_ADD(field, v) \
    __atomic_fetch_add(&(field), (v), __ATOMIC_RELAXED)
#define STAT_SUB(field, v) \
    __atomic_fetch_sub(&(field), (v), __ATOMIC_RELAXED)

static uint64_t blk_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- statistics ---------------------------------------------------
 *
 * Per node and kind of request: a request is in flight from
 * blk_stat_begin() to blk_stat_end(), and its latency goes into the
 * kind's histogram when it succeeded.  Relaxed atomics only (several
 * workers run one node's requests at once): two adds and a subtract
 * per request beside the counters below, no lock. */

/* A request of kind op starts on bs; returns its start time. */
static uint64_t blk_stat_begin(BlockNode *bs, BlockStatsOp op)
{
    STAT_ADD(bs->in_flight[op], 1);
    return blk_now_ns();
}

/* The request of kind op that started at t0 is over (ok: it succeeded
 * and its latency counts). */
static void blk_stat_end(BlockNode *bs, BlockStatsOp op, uint64_t t0,
                         bool ok)
{
    if (ok) {
        lathist_record(&bs->lat[op], blk_now_ns() - t0);
    }
    STAT_SUB(bs->in_flight[op], 1);
}

/* A request of kind op was refused before it ran. */
static void blk_stat_invalid(BlockNode *bs, BlockStatsOp op)
{
    STAT_ADD(bs->invalid_ops[op], 1);
}

/* The statistics kind of a request type; -1 for CACHE (not counted). */
static int blk_stat_op(BlockRequestType type)
{
    switch (type) {
    case BLK_OP_READ:
        return BLOCK_STATS_OP_READ;
    case BLK_OP_WRITE:
        return BLOCK_STATS_OP_WRITE;
    case BLK_OP_WRITE_ZEROES:
        return BLOCK_STATS_OP_WRITE_ZEROES;
    case BLK_OP_DISCARD:
        return BLOCK_STATS_OP_DISCARD;
    case BLK_OP_FLUSH:
        return BLOCK_STATS_OP_FLUSH;
    case BLK_OP_BLOCK_STATUS:
        return BLOCK_STATS_OP_BLOCK_STATUS;
    case BLK_OP_CACHE:
        break;
    }
    return -1;
}

int64_t blk_getlength(BlockNode *bs)
{
    return __atomic_load_n(&bs->total_size, __ATOMIC_ACQUIRE);
}

/* Check [offset, offset+bytes) for a request; write says which error a
 * range past the end gets (see block.h "Bounds"). */
static int blk_check_request(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             bool write)
{
    uint64_t size;

    if (bytes > INT64_MAX || offset > INT64_MAX - bytes) {
        return -EINVAL;
    }
    if (bs->drv->is_protocol) {
        return 0;
    }
    size = (uint64_t)blk_getlength(bs);
    if (offset > size || bytes > size - offset) {
        return write ? -ENOSPC : -EINVAL;
    }
    return 0;
}

/* A protocol node grew by a write: raise the cached size. */
static void blk_grow_to(BlockNode *bs, uint64_t end)
{
    int64_t cur = __atomic_load_n(&bs->total_size, __ATOMIC_RELAXED);

    while ((uint64_t)cur < end &&
           !__atomic_compare_exchange_n(&bs->total_size, &cur,
                                        (int64_t)end, true, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED)) {
        /* cur was reloaded */
    }
    /* QEMU's rule: a file grown by a write grows its bitmaps. */
    blk_dirty_bitmaps_grow(bs, end);
}

static void blk_note_highest(BlockNode *bs, uint64_t end)
{
    uint64_t cur = __atomic_load_n(&bs->wr_highest_offset, __ATOMIC_RELAXED);

    while (cur < end &&
           !__atomic_compare_exchange_n(&bs->wr_highest_offset, &cur, end,
                                        true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
        /* cur was reloaded */
    }
}

bool blk_buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    size_t head = MIN(len, (size_t)16);

    for (size_t i = 0; i < head; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    /* The first 16 bytes are zero and every byte equals the one 16
     * before it: all are zero. */
    return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

/* ---- write hooks (copy-before-write) ------------------------------- */

static Loop *blk_node_loop(BlockNode *bs);

static void blk_write_hook_done_posted(void *opaque)
{
    BlockWriteHook *hook = opaque;

    hook->done(hook);
}

void blk_write_hook_add(BlockNode *bs, BlockWriteHook *hook)
{
    pthread_mutex_lock(&bs->hook_lock);
    hook->users = 0;
    hook->removed = false;
    __atomic_store_n(&bs->before_write, hook, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&bs->hook_lock);
}

void blk_write_hook_remove(BlockNode *bs, BlockWriteHook *hook)
{
    bool idle;

    pthread_mutex_lock(&bs->hook_lock);
    if (bs->before_write == hook) {
        __atomic_store_n(&bs->before_write, NULL, __ATOMIC_RELEASE);
    }
    hook->removed = true;
    idle = hook->users == 0;
    pthread_mutex_unlock(&bs->hook_lock);
    if (idle) {
        hook->done(hook);
    }
}

/* A request leaves hook (it was counted in users). */
static void blk_write_hook_leave(BlockNode *bs, BlockWriteHook *hook)
{
    bool last;

    pthread_mutex_lock(&bs->hook_lock);
    last = --hook->users == 0 && hook->removed;
    pthread_mutex_unlock(&bs->hook_lock);
    if (last) {
        Loop *loop = blk_node_loop(bs);
        if (loop != NULL) {
            loop_post(loop, blk_write_hook_done_posted, hook);
        } else {
            hook->done(hook);
        }
    }
}

/* bs's hook, counted in its users, or NULL. */
static BlockWriteHook *blk_write_hook_enter(BlockNode *bs)
{
    BlockWriteHook *hook;

    if (__atomic_load_n(&bs->before_write, __ATOMIC_ACQUIRE) == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&bs->hook_lock);
    hook = bs->before_write;
    if (hook != NULL) {
        hook->users++;
    }
    pthread_mutex_unlock(&bs->hook_lock);
    return hook;
}

/* Run bs's write hook, if any, for a write to [offset, offset+bytes)
 * (any thread): 0 or -errno.  *held gets the hook, still counted in its
 * users, for blk_after_write() (NULL: none, or fn failed). */
static int blk_before_write(BlockNode *bs, uint64_t offset, uint64_t bytes,
                            BlockWriteHook **held)
{
    BlockWriteHook *hook = blk_write_hook_enter(bs);
    int ret = 0;

    *held = NULL;
    if (hook == NULL) {
        return 0;
    }
    if (hook->fn != NULL) {
        ret = hook->fn(hook, bs, offset, bytes);
    }
    if (ret < 0) {
        blk_write_hook_leave(bs, hook);
        return ret;
    }
    *held = hook;
    return 0;
}

/* The driver ran a write (ret: its result): the hook's after part, for
 * held (from blk_before_write) or, when that is NULL, for a hook
 * installed meanwhile.  Returns the request's result. */
static int blk_after_write(BlockNode *bs, BlockWriteHook *held,
                           uint64_t offset, uint64_t bytes, const void *buf,
                           bool discard, int ret)
{
    BlockWriteHook *hook = held != NULL ? held : blk_write_hook_enter(bs);

    if (hook == NULL) {
        return ret;
    }
    if (hook->after != NULL) {
        ret = hook->after(hook, bs, offset, bytes, buf, discard, ret,
                          held != NULL);
    }
    blk_write_hook_leave(bs, hook);
    return ret;
}

int blk_pread(BlockNode *bs, uint64_t offset, uint64_t bytes, void *buf,
              uint32_t flags)
{
    uint64_t t0, done = 0;
    int ret = blk_check_request(bs, offset, bytes, false);

    if (ret < 0) {
        blk_stat_invalid(bs, BLOCK_STATS_OP_READ);
        return ret;
    }
    if (bytes == 0) {
        return 0;
    }
    t0 = blk_stat_begin(bs, BLOCK_STATS_OP_READ);
    while (done < bytes) {
        uint64_t n = bytes - done;
        if (bs->max_transfer != 0 && n > bs->max_transfer) {
            n = bs->max_transfer;
        }
        ret = bs->drv->pread(bs, offset + done, n, (uint8_t *)buf + done,
                             flags);
        if (ret < 0) {
            STAT_ADD(bs->failed_ops, 1);
            STAT_ADD(bs->failed_rd_ops, 1);
            blk_stat_end(bs, BLOCK_STATS_OP_READ, t0, false);
            return ret;
        }
        done += n;
    }
    STAT_ADD(bs->rd_ops, 1);
    STAT_ADD(bs->rd_bytes, bytes);
    blk_stat_end(bs, BLOCK_STATS_OP_READ, t0, true);
    return 0;
}

static int blk_do_write_zeroes(BlockNode *bs, uint64_t offset,
                               uint64_t bytes, uint32_t flags);

/* The checks a write, write-zeroes or discard starts with: 1 to go on,
 * 0 when there is nothing to do (no bytes), or -errno for a request
 * refused before it ran (a read-only node, out of range: counted as
 * invalid for op). */
static int blk_modify_check(BlockNode *bs, BlockStatsOp op, uint64_t offset,
                            uint64_t bytes)
{
    int ret;

    if (bs->read_only) {
        blk_stat_invalid(bs, op);
        return -EPERM;
    }
    ret = blk_check_request(bs, offset, bytes, true);
    if (ret < 0) {
        blk_stat_invalid(bs, op);
        return ret;
    }
    return bytes > 0;
}


int blk_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
               const void *buf, uint32_t flags)
{
    uint64_t t0, done = 0;
    int ret;

    ret = blk_modify_check(bs, BLOCK_STATS_OP_WRITE, offset, bytes);
    if (ret <= 0) {
        return ret;
    }
    if (!(flags & BLK_REQ_NO_HOOK)) {
        BlockWriteHook *hook;

        ret = blk_before_write(bs, offset, bytes, &hook);
        if (ret < 0) {
            return ret;
        }
        ret = blk_pwrite(bs, offset, bytes, buf, flags | BLK_REQ_NO_HOOK);
        return blk_after_write(bs, hook, offset, bytes, buf, false, ret);
    }
    flags &= ~(uint32_t)BLK_REQ_NO_HOOK;
    t0 = blk_stat_begin(bs, BLOCK_STATS_OP_WRITE);
    if (bs->detect_zeroes != BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF &&
        blk_buffer_is_zero(buf, bytes)) {
        uint32_t zflags = flags & BLK_REQ_FUA;
        if (bs->detect_zeroes == BLOCKDEV_DETECT_ZEROES_OPTIONS_UNMAP) {
            zflags |= BLK_REQ_MAY_UNMAP;
        }
        ret = blk_do_write_zeroes(bs, offset, bytes, zflags);
        if (ret == 0) {
            STAT_ADD(bs->wr_ops, 1);
            STAT_ADD(bs->wr_bytes, bytes);
            blk_note_highest(bs, offset + bytes);
        }
        blk_stat_end(bs, BLOCK_STATS_OP_WRITE, t0, ret == 0);
        return ret;
    }
    while (done < bytes) {
        uint64_t n = bytes - done;
        if (bs->max_transfer != 0 && n > bs->max_transfer) {
            n = bs->max_transfer;
        }
        ret = bs->drv->pwrite(bs, offset + done, n,
                              (const uint8_t *)buf + done, flags);
        if (ret < 0) {
            STAT_ADD(bs->failed_ops, 1);
            STAT_ADD(bs->failed_wr_ops, 1);
            /* a failed write may have changed part of the range */
            blk_dirty_mark(bs, offset, done + n);
            blk_stat_end(bs, BLOCK_STATS_OP_WRITE, t0, false);
            return ret;
        }
        done += n;
    }
    if (bs->drv->is_protocol) {
        blk_grow_to(bs, offset + bytes);
    }
    blk_dirty_mark(bs, offset, bytes);
    STAT_ADD(bs->wr_ops, 1);
    STAT_ADD(bs->wr_bytes, bytes);
    blk_stat_end(bs, BLOCK_STATS_OP_WRITE, t0, true);
    blk_note_highest(bs, offset + bytes);
    return 0;
}

/* Where [offset, offset+*bytes) of bs lives on a protocol node,
 * through the format layers' OFFSET_VALID answers: that node, with
 * *leaf_off its offset there and *bytes cut to what maps in one piece;
 * NULL when a layer holds no plain data for offset (a hole, a zero or
 * compressed cluster, a range of the backing file).  Only format
 * drivers are followed: a filter (blkdebug) must see its reads. */
static BlockNode *blk_copy_source(BlockNode *bs, uint64_t offset,
                                  uint64_t *bytes, uint64_t *leaf_off)
{
    for (int i = 0; i < BLK_BACKING_CHAIN_MAX; i++) {
        uint64_t n = 0, map = 0;
        BlockNode *file = NULL;
        int ret;

        if (bs->drv->is_protocol) {
            *leaf_off = offset;
            return bs;
        }
        if (!bs->drv->is_format || bs->drv->block_status == NULL) {
            return NULL;
        }
        ret = bs->drv->block_status(bs, offset, *bytes, &n, &map, &file);
        if (ret < 0 || !(ret & BLK_STATUS_DATA) ||
            !(ret & BLK_STATUS_OFFSET_VALID) || file == NULL ||
            file == bs) {
            return NULL;
        }
        if (n > 0 && n < *bytes) {
            *bytes = n;
        }
        offset = map;
        bs = file;
    }
    return NULL;
}

int blk_copy_range(BlockNode *src, uint64_t src_off, BlockNode *dst,
                   uint64_t dst_off, uint64_t bytes, uint32_t flags)
{
    uint64_t t0, done = 0;
    int ret = blk_check_request(src, src_off, bytes, false);

    if (ret < 0) {
        blk_stat_invalid(src, BLOCK_STATS_OP_READ);
        return ret;
    }
    ret = blk_modify_check(dst, BLOCK_STATS_OP_WRITE, dst_off, bytes);
    if (ret <= 0) {
        return ret;
    }
    if (dst->drv->copy_range_to == NULL ||
        dst->detect_zeroes != BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF ||
        (!(flags & BLK_REQ_NO_HOOK) &&
         __atomic_load_n(&dst->before_write, __ATOMIC_ACQUIRE) != NULL)) {
        return -ENOTSUP;
    }
    flags &= BLK_REQ_FUA | BLK_REQ_STREAM;
    t0 = blk_stat_begin(dst, BLOCK_STATS_OP_WRITE);
    while (done < bytes) {
        uint64_t n = bytes - done, leaf_off = 0;
        BlockNode *leaf;

        if (dst->max_transfer != 0 && n > dst->max_transfer) {
            n = dst->max_transfer;
        }
        leaf = blk_copy_source(src, src_off + done, &n, &leaf_off);
        ret = leaf == NULL ? -ENOTSUP
              : dst->drv->copy_range_to(dst, dst_off + done, n, leaf,
                                        leaf_off, flags);
        if (ret < 0) {
            if (ret != -ENOTSUP) {
                STAT_ADD(dst->failed_ops, 1);
                STAT_ADD(dst->failed_wr_ops, 1);
            }
            /* part of the range may have changed */
            blk_dirty_mark(dst, dst_off, done + n);
            blk_stat_end(dst, BLOCK_STATS_OP_WRITE, t0, false);
            return ret;
        }
        done += n;
    }
    if (dst->drv->is_protocol) {
        blk_grow_to(dst, dst_off + bytes);
    }
    blk_dirty_mark(dst, dst_off, bytes);
    STAT_ADD(src->rd_ops, 1);
    STAT_ADD(src->rd_bytes, bytes);
    STAT_ADD(dst->wr_ops, 1);
    STAT_ADD(dst->wr_bytes, bytes);
    blk_stat_end(dst, BLOCK_STATS_OP_WRITE, t0, true);
    blk_note_highest(dst, dst_off + bytes);
    return 0;
}

/* Write zeroes with plain writes from the static zero buffer. */
static int blk_write_zero_buffer(BlockNode *bs, uint64_t offset,
                                 uint64_t bytes, uint32_t flags)
{
    while (bytes > 0) {
        uint64_t n = MIN(bytes, (uint64_t)BLK_ZERO_BUF_SIZE);
        int ret;
        if (bs->max_transfer != 0 && n > bs->max_transfer) {
            n = bs->max_transfer;
        }
        ret = bs->drv->pwrite(bs, offset, n, blk_zero_buf, flags);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int blk_do_write_zeroes(BlockNode *bs, uint64_t offset,
                               uint64_t bytes, uint32_t flags)
{
    int ret = -ENOTSUP;

    /* MAY_UNMAP only where discard=unmap allows holes (QEMU's
     * BDRV_O_UNMAP rule). */
    if (bs->discard != BLOCKDEV_DISCARD_OPTIONS_UNMAP) {
        flags &= ~(uint32_t)BLK_REQ_MAY_UNMAP;
    }
    if (bs->drv->pwrite_zeroes != NULL) {
        ret = bs->drv->pwrite_zeroes(bs, offset, bytes, flags);
    }
    if (ret == -ENOTSUP && !(flags & BLK_REQ_NO_FALLBACK)) {
        ret = blk_write_zero_buffer(bs, offset, bytes,
                                    flags & BLK_REQ_FUA);
    }
    if (ret == 0) {
        STAT_ADD(bs->zero_ops, 1);
        if (bs->drv->is_protocol) {
            blk_grow_to(bs, offset + bytes);
        }
    }
    /* Whatever it returned, the driver may have changed the range (as
     * QEMU, which marks every write request that reached a driver). */
    blk_dirty_mark(bs, offset, bytes);
    if (ret != 0 && ret != -ENOTSUP) {
        STAT_ADD(bs->failed_ops, 1);
        STAT_ADD(bs->failed_wr_ops, 1);
    }
    return ret;
}

int blk_pwrite_zeroes(BlockNode *bs, uint64_t offset, uint64_t bytes,
                      uint32_t flags)
{
    uint64_t t0;
    int ret;

    ret = blk_modify_check(bs, BLOCK_STATS_OP_WRITE_ZEROES, offset, bytes);
    if (ret <= 0) {
        return ret;
    }
    if (!(flags & BLK_REQ_NO_HOOK)) {
        BlockWriteHook *hook;

        ret = blk_before_write(bs, offset, bytes, &hook);
        if (ret < 0) {
            return ret;
        }
        ret = blk_pwrite_zeroes(bs, offset, bytes, flags | BLK_REQ_NO_HOOK);
        return blk_after_write(bs, hook, offset, bytes, NULL, false, ret);
    }
    flags &= ~(uint32_t)BLK_REQ_NO_HOOK;
    t0 = blk_stat_begin(bs, BLOCK_STATS_OP_WRITE_ZEROES);
    ret = blk_do_write_zeroes(bs, offset, bytes, flags);
    if (ret == 0) {
        blk_note_highest(bs, offset + bytes);
    }
    blk_stat_end(bs, BLOCK_STATS_OP_WRITE_ZEROES, t0, ret == 0);
    return ret;
}

int blk_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    BlockWriteHook *hook;
    uint64_t t0;
    int ret;

    ret = blk_modify_check(bs, BLOCK_STATS_OP_DISCARD, offset, bytes);
    if (ret <= 0) {
        return ret;
    }
    /* discard=ignore: a discard is only a hint, and it is dropped. */
    if (bs->discard != BLOCKDEV_DISCARD_OPTIONS_UNMAP ||
        bs->drv->pdiscard == NULL) {
        return 0;
    }
    ret = blk_before_write(bs, offset, bytes, &hook);
    if (ret < 0) {
        return ret;
    }
    t0 = blk_stat_begin(bs, BLOCK_STATS_OP_DISCARD);
    ret = bs->drv->pdiscard(bs, offset, bytes);
    blk_dirty_mark(bs, offset, bytes);
    ret = blk_after_write(bs, hook, offset, bytes, NULL, true, ret);
    if (ret == 0) {
        STAT_ADD(bs->discard_ops, 1);
        STAT_ADD(bs->discard_bytes, bytes);
    } else {
        STAT_ADD(bs->failed_ops, 1);
        STAT_ADD(bs->failed_discard_ops, 1);
    }
    blk_stat_end(bs, BLOCK_STATS_OP_DISCARD, t0, ret == 0);
    return ret;
}

int blk_flush(BlockNode *bs)
{
    uint64_t t0;
    int ret = 0;

    if (bs->read_only) {
        return 0;
    }
    /* cache.no-flush skips only what reaches the device (a leaf node's
     * flush: fdatasync, NBD_CMD_FLUSH).  A node over a file child still
     * writes what it caches (qcow2's L2 and refcount tables) to that
     * child, as QEMU's flush_to_os does, or a flushed write would be
     * lost when the daemon dies. */
    if (bs->cache_no_flush && bs->file == NULL) {
        return 0;
    }
    t0 = blk_stat_begin(bs, BLOCK_STATS_OP_FLUSH);
    if (bs->drv->flush != NULL) {
        ret = bs->drv->flush(bs);
    }
    /* A format's metadata and data live in its file: flush it too,
     * after the driver wrote out what it caches. */
    if (ret == 0 && bs->file != NULL) {
        ret = blk_flush(bs->file);
    }
    if (ret == 0) {
        STAT_ADD(bs->flush_ops, 1);
    } else {
        STAT_ADD(bs->failed_ops, 1);
        STAT_ADD(bs->failed_flush_ops, 1);
    }
    blk_stat_end(bs, BLOCK_STATS_OP_FLUSH, t0, ret == 0);
    return ret;
}

/* ---- capabilities ------------------------------------------------- */

void blk_get_caps(BlockNode *bs, BlockCaps *caps)
{
    memset(caps, 0, sizeof(*caps));
    if (bs->drv->get_caps != NULL) {
        bs->drv->get_caps(bs, caps);
    } else {
        caps->zero = true;
    }
    /* blk_pdiscard() drops discards unless discard=unmap. */
    if (bs->discard != BLOCKDEV_DISCARD_OPTIONS_UNMAP) {
        caps->discard = false;
    }
    if (bs->read_only) {
        caps->fua = caps->zero = caps->fast_zero = caps->discard = false;
    }
    if (!caps->zero) {
        caps->fast_zero = false;
    }
}

/* ---- block status ------------------------------------------------- */

/* Status of one layer for [offset, offset+bytes), bytes >= 1. */
static int blk_layer_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum)
{
    uint64_t n = 0, map = 0;
    BlockNode *file = NULL;
    int ret;

    if (bs->drv->block_status == NULL) {
        *pnum = bytes;
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
    }
    if (bs->drv->is_protocol) {
        uint64_t size = (uint64_t)blk_getlength(bs);
        if (offset >= size) {
            *pnum = bytes;
            return BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
        }
        bytes = MIN(bytes, size - offset);
    }
    ret = bs->drv->block_status(bs, offset, bytes, &n, &map, &file);
    if (ret < 0) {
        return ret;
    }
    if (n == 0 || n > bytes) {
        n = bytes;             /* a driver bug must not loop forever */
    }
    *pnum = n;
    return ret;
}

/* Walk the backing chain from bs.  Returns the merged flags, *pnum, and
 * *depth (1 = bs, 2 = its backing, ...; 0 = no layer allocates). */
static int blk_chain_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, int *depth)
{
    BlockNode *cur = bs;
    int d = 1;
    int ret;

    ret = blk_check_request(bs, offset, bytes, false);
    if (ret == -EINVAL && bytes > 0 && !bs->drv->is_protocol &&
        offset < (uint64_t)blk_getlength(bs)) {
        bytes = (uint64_t)blk_getlength(bs) - offset;   /* clamp */
        ret = 0;
    }
    if (ret < 0) {
        return ret;
    }
    if (bytes == 0) {
        return -EINVAL;
    }
    for (;;) {
        uint64_t n;
        /* A transparent filter (mirror_top) is no layer: its child is. */
        while (cur->drv->is_filter && cur->drv->block_status == NULL &&
               cur->file != NULL) {
            cur = cur->file;
        }
        ret = blk_layer_status(cur, offset, bytes, &n);
        if (ret < 0) {
            return ret;
        }
        bytes = n;
        if (ret & BLK_STATUS_ALLOCATED) {
            *pnum = n;
            *depth = d;
            return ret & (BLK_STATUS_DATA | BLK_STATUS_ZERO |
                          BLK_STATUS_ALLOCATED);
        }
        if ((ret & (BLK_STATUS_DATA | BLK_STATUS_ZERO)) ||
            cur->backing == NULL) {
            /* Answered without allocation.  An unallocated range of a
             * format with backing support and no backing file reads as
             * zeroes (QEMU's rule); any other driver keeps its answer,
             * even "neither data nor zero" (null-co without
             * read-zeroes: a hole of undefined content). */
            *pnum = n;
            *depth = 0;
            ret &= BLK_STATUS_DATA | BLK_STATUS_ZERO;
            if (ret == 0 && cur->drv->supports_backing) {
                ret = BLK_STATUS_ZERO;
            }
            return ret;
        }
        cur = cur->backing;
        d++;
        {
            uint64_t blen = (uint64_t)blk_getlength(cur);
            if (offset >= blen) {
                /* Past the end of a shorter backing file: zeroes. */
                *pnum = bytes;
                *depth = 0;
                return BLK_STATUS_ZERO;
            }
            bytes = MIN(bytes, blen - offset);
        }
    }
}

int blk_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                     uint64_t *pnum)
{
    int depth;

    return blk_chain_status(bs, offset, bytes, pnum, &depth);
}

int blk_allocation_depth(BlockNode *bs, uint64_t offset, uint64_t bytes,
                         uint64_t *pnum)
{
    int depth = 0;
    int ret = blk_chain_status(bs, offset, bytes, pnum, &depth);

    return ret < 0 ? ret : depth;
}

uint32_t blk_get_request_alignment(BlockNode *bs)
{
    return bs->request_alignment ? bs->request_alignment : 1;
}

const char *blk_node_name(const BlockNode *bs)
{
    return bs->node_name;
}

/* ---- asynchronous requests ---------------------------------------- */

static int blk_status_walk(BlockRequest *req)
{
    BlockNode *bs = req->bs;
    uint64_t pos = req->offset;
    uint64_t end, t0;

    if (req->bytes > INT64_MAX || pos > INT64_MAX - req->bytes ||
        (!bs->drv->is_protocol && pos >= (uint64_t)blk_getlength(bs))) {
        blk_stat_invalid(bs, BLOCK_STATS_OP_BLOCK_STATUS);
        return -EINVAL;
    }
    t0 = blk_stat_begin(bs, BLOCK_STATS_OP_BLOCK_STATUS);
    end = pos + req->bytes;
    while (pos < end) {
        uint64_t pnum = 0;
        int ret = req->status_fn(bs, pos, end - pos, &pnum,
                                 req->status_opaque);

        if (ret < 0) {
            blk_stat_end(bs, BLOCK_STATS_OP_BLOCK_STATUS, t0, false);
            return ret;
        }
        if (pnum == 0 || pnum > end - pos) {
            pnum = end - pos;  /* a status bug must not loop forever */
        }
        pos += pnum;
        if (!req->extent_cb(req, pnum, (uint32_t)ret)) {
            break;
        }
    }
    blk_stat_end(bs, BLOCK_STATS_OP_BLOCK_STATUS, t0, true);
    return 0;
}

int blk_prefetch(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    int ret = blk_check_request(bs, offset, bytes, false);

    if (ret < 0 || bytes == 0 || bs->drv->prefetch == NULL) {
        return ret;
    }
    /* A hint: a failed prefetch does not fail the request. */
    (void)bs->drv->prefetch(bs, offset, bytes);
    return 0;
}

void blk_start_writeback(BlockNode *bs)
{
    while (bs != NULL && bs->drv->start_writeback == NULL) {
        bs = bs->file;
    }
    if (bs != NULL) {
        bs->drv->start_writeback(bs);
    }
}

int blk_splice_read(BlockNode *bs, uint64_t offset, uint64_t bytes,
                    int pipe_fd, uint32_t flags, BlockSplicePin *pin)
{
    uint64_t t0;
    int ret = blk_check_request(bs, offset, bytes, false);

    if (ret < 0) {
        blk_stat_invalid(bs, BLOCK_STATS_OP_READ);
        return ret;
    }
    if (bytes == 0) {
        return 0;
    }
    if (bs->drv->splice_read == NULL) {
        return -ENOTSUP;
    }
    t0 = blk_stat_begin(bs, BLOCK_STATS_OP_READ);
    ret = bs->drv->splice_read(bs, offset, bytes, pipe_fd, flags, pin);
    if (ret == -ENOTSUP || (ret == -EAGAIN && (flags & BLK_REQ_NOWAIT))) {
        /* not a failure: read another way (and counted then) */
        blk_stat_end(bs, BLOCK_STATS_OP_READ, t0, false);
        return ret;
    }
    if (ret < 0) {
        STAT_ADD(bs->failed_ops, 1);
        STAT_ADD(bs->failed_rd_ops, 1);
        blk_stat_end(bs, BLOCK_STATS_OP_READ, t0, false);
        return ret;
    }
    STAT_ADD(bs->rd_ops, 1);
    STAT_ADD(bs->rd_bytes, bytes);
    blk_stat_end(bs, BLOCK_STATS_OP_READ, t0, true);
    return 0;
}

void blk_splice_pin_take(BlockNode *bs, BlockSplicePin *pin)
{
    blk_ref(bs);
    pin->node = bs;
    pin->epoch = bs->splice_epoch;
    __atomic_add_fetch(&bs->splice_pins[pin->epoch & 1], 1,
                       __ATOMIC_ACQ_REL);
}

void blk_splice_unpin(BlockSplicePin *pin)
{
    BlockNode *bs = pin->node;

    if (bs == NULL) {
        return;
    }
    pin->node = NULL;
    __atomic_sub_fetch(&bs->splice_pins[pin->epoch & 1], 1,
                       __ATOMIC_ACQ_REL);
    blk_unref(bs);
}

void blk_splice_unpin_lost(BlockSplicePin *pin)
{
    if (pin->node != NULL) {
        __atomic_store_n(&pin->node->splice_lost, true, __ATOMIC_RELEASE);
        log_debug("node '%s': a spliced reply was not seen consumed; "
                  "freed clusters are not reused until the node closes",
                  pin->node->node_name);
    }
    blk_splice_unpin(pin);
}

/* Pins are only taken under the driver's lock, which the caller holds,
 * and only released elsewhere: counts read here can only be too high,
 * which is the safe side. */
bool blk_splice_reusable(BlockNode *bs, uint64_t epoch)
{
    uint64_t cur = bs->splice_epoch;
    unsigned prev = __atomic_load_n(&bs->splice_pins[(cur - 1) & 1],
                                    __ATOMIC_ACQUIRE);
    unsigned now = __atomic_load_n(&bs->splice_pins[cur & 1],
                                   __ATOMIC_ACQUIRE);

    if (__atomic_load_n(&bs->splice_lost, __ATOMIC_ACQUIRE)) {
        return false;
    }
    return (prev == 0 && now == 0) || (epoch < cur && prev == 0);
}

void blk_splice_epoch_advance(BlockNode *bs)
{
    uint64_t cur = bs->splice_epoch;

    if (__atomic_load_n(&bs->splice_pins[(cur - 1) & 1],
                        __ATOMIC_ACQUIRE) == 0) {
        bs->splice_epoch = cur + 1;
    }
}

static void blk_aio_run(WorkerJob *job)
{
    BlockRequest *req = container_of(job, BlockRequest, job);
    BlockNode *bs = req->bs;

    switch (req->type) {
    case BLK_OP_READ:
        if (req->flags & BLK_REQ_PIPE) {
            req->ret = blk_splice_read(bs, req->offset, req->bytes,
                                       req->pipe_fd, req->flags, &req->pin);
            break;
        }
        req->ret = blk_pread(bs, req->offset, req->bytes, req->buf,
                             req->flags);
        break;
    case BLK_OP_WRITE:
        req->ret = blk_pwrite(bs, req->offset, req->bytes, req->buf,
                              req->flags);
        break;
    case BLK_OP_WRITE_ZEROES:
        req->ret = blk_pwrite_zeroes(bs, req->offset, req->bytes,
                                     req->flags);
        break;
    case BLK_OP_DISCARD:
        req->ret = blk_pdiscard(bs, req->offset, req->bytes);
        break;
    case BLK_OP_FLUSH:
        req->ret = blk_flush(bs);
        break;
    case BLK_OP_CACHE:
        req->ret = blk_prefetch(bs, req->offset, req->bytes);
        break;
    case BLK_OP_BLOCK_STATUS:
        req->ret = blk_status_walk(req);
        break;
    default:
        req->ret = -EINVAL;
        break;
    }
}

unsigned blk_pool_share(const WorkerPool *pool)
{
    size_t n = worker_pool_size(pool);
    size_t reserve = n / 4 > 0 ? n / 4 : 1;

    /* A quarter of the threads (at least one) stays for other nodes;
     * one node alone still has the rest in parallel. */
    return n > reserve ? (unsigned)(n - reserve) : 1;
}

/* Hand req to the pool within its node's share (see block.h), or queue
 * it behind the node's other requests.  Loop thread. */
static void blk_pool_submit(WorkerPool *pool, BlockRequest *req)
{
    BlockNode *bs = req->bs;

    req->pool = pool;
    pthread_mutex_lock(&bs->pool_lock);
    if (bs->pool_inflight >= blk_pool_share(pool)) {
        req->pool_next = NULL;
        if (bs->pool_wait_tail != NULL) {
            bs->pool_wait_tail->pool_next = req;
        } else {
            bs->pool_wait_head = req;
        }
        bs->pool_wait_tail = req;
        pthread_mutex_unlock(&bs->pool_lock);
        return;
    }
    bs->pool_inflight++;
    pthread_mutex_unlock(&bs->pool_lock);
    worker_submit_to(pool, &req->job, req->loop);
}

/* A counted request finished: its share goes to the next waiting one
 * (which completes to its own submitter's loop). */
static void blk_pool_release(BlockRequest *req)
{
    BlockNode *bs = req->bs;
    BlockRequest *next;

    req->pool = NULL;
    pthread_mutex_lock(&bs->pool_lock);
    bs->pool_inflight--;
    next = bs->pool_wait_head;
    if (next != NULL) {
        bs->pool_wait_head = next->pool_next;
        if (bs->pool_wait_head == NULL) {
            bs->pool_wait_tail = NULL;
        }
        bs->pool_inflight++;
    }
    pthread_mutex_unlock(&bs->pool_lock);
    if (next != NULL) {
        worker_submit_to(next->pool, &next->job, next->loop);
    }
}

static const char *const blk_op_names[] = {
    [BLK_OP_READ] = "read",
    [BLK_OP_WRITE] = "write",
    [BLK_OP_WRITE_ZEROES] = "write-zeroes",
    [BLK_OP_DISCARD] = "discard",
    [BLK_OP_FLUSH] = "flush",
    [BLK_OP_CACHE] = "cache",
    [BLK_OP_BLOCK_STATUS] = "block-status",
};

/* The blk_co_* trace point of a request entering a node. */
static void blk_trace_submit(const BlockRequest *req)
{
#define BLK_TRACE_REQ_(point)                                           \
    TRACE(point, "node '%s' offset %" PRIu64 " bytes %" PRIu64          \
          " flags 0x%x", req->bs->node_name, req->offset, req->bytes,   \
          req->flags)
    switch (req->type) {
    case BLK_OP_READ:
        BLK_TRACE_REQ_(blk_co_preadv);
        break;
    case BLK_OP_WRITE:
        BLK_TRACE_REQ_(blk_co_pwritev);
        break;
    case BLK_OP_WRITE_ZEROES:
        BLK_TRACE_REQ_(blk_co_pwrite_zeroes);
        break;
    case BLK_OP_DISCARD:
        BLK_TRACE_REQ_(blk_co_pdiscard);
        break;
    case BLK_OP_FLUSH:
        TRACE(blk_co_flush, "node '%s'", req->bs->node_name);
        break;
    case BLK_OP_CACHE:
        BLK_TRACE_REQ_(blk_co_cache);
        break;
    case BLK_OP_BLOCK_STATUS:
        BLK_TRACE_REQ_(blk_co_block_status);
        break;
    }
#undef BLK_TRACE_REQ_
}

static void blk_aio_done(WorkerJob *job)
{
    BlockRequest *req = container_of(job, BlockRequest, job);
    BlockNode *bs = req->bs;

    TRACE(blk_aio_complete, "node '%s' %s offset %" PRIu64 " bytes %"
          PRIu64 " ret %d", bs->node_name, blk_op_names[req->type],
          req->offset, req->bytes, req->ret);

    if (req->pool != NULL) {
        blk_pool_release(req);
    }
    blk_write_gate_leave(req);
    if (req->loop != NULL && req->loop != blk_node_loop(bs)) {
        /* An I/O thread's request: its owner may let the main loop
         * free what holds the node (a connection, its export) from
         * inside cb, and blockdev-del there must not find this
         * reference.  The owner's own reference keeps bs through cb. */
        blk_unref(bs);
        req->cb(req);
        return;
    }
    req->cb(req);
    blk_unref(bs);
}

static void blk_aio_done_posted(void *opaque)
{
    blk_aio_done(opaque);
}

/* May req run on the loop thread of an aio_inline node?  Only when its
 * cost is bounded: every request kind with a range is capped by
 * BLK_INLINE_MAX (writes by BLK_INLINE_WRITE_MAX, see block.h), zeroes
 * and discards too (a NO_HOLE zero on tmpfs writes zero buffers, a
 * discard frees pages: both grow with the length, which extended
 * headers let reach the whole export).  A flush
 * writes out at most a driver's bounded caches; a cache hint only asks
 * for readahead (file's prefetch), which an in-memory file has nothing
 * to do for. */
static bool blk_aio_may_inline(const BlockRequest *req)
{
    switch (req->type) {
    case BLK_OP_FLUSH:
    case BLK_OP_CACHE:
        return true;
    case BLK_OP_READ:
        /* A spliced read only takes page references: cheap at any
         * size a pipe holds. */
        if (req->flags & BLK_REQ_PIPE) {
            return true;
        }
        return req->bytes <= BLK_INLINE_MAX;
    case BLK_OP_WRITE:
        return req->bytes <= BLK_INLINE_WRITE_MAX;
    case BLK_OP_WRITE_ZEROES:
    case BLK_OP_DISCARD:
        return req->bytes <= BLK_INLINE_MAX;
    case BLK_OP_BLOCK_STATUS:
        return false;          /* a walk may take many lseeks */
    }
    return false;
}

/* ---- asynchronous drivers ----------------------------------------- */

static Loop *blk_node_loop(BlockNode *bs)
{
    return bs->graph != NULL ? blk_graph_host(bs->graph)->loop : NULL;
}

/* Should req go to the driver's aio_submit?  Not what only the pool
 * path knows how to do (see block.h). */
static bool blk_aio_driver_takes(BlockNode *bs, const BlockRequest *req)
{
    uint64_t align = blk_get_request_alignment(bs);

    if (bs->drv->aio_submit == NULL || (req->flags & BLK_REQ_PIPE)) {
        return false;
    }
    /* A write hook runs on the pool path (it does blocking I/O). */
    if (__atomic_load_n(&bs->before_write, __ATOMIC_ACQUIRE) != NULL &&
        req->type != BLK_OP_READ && req->type != BLK_OP_FLUSH &&
        req->type != BLK_OP_CACHE) {
        return false;
    }
    /* Unaligned ranges need the synchronous path's read-modify-write. */
    if (align > 1 && req->type != BLK_OP_FLUSH &&
        (!IS_ALIGNED(req->offset, align) || !IS_ALIGNED(req->bytes, align))) {
        return false;
    }
    switch (req->type) {
    case BLK_OP_READ:
    case BLK_OP_DISCARD:
    case BLK_OP_FLUSH:
    case BLK_OP_CACHE:
    case BLK_OP_WRITE_ZEROES:
        return true;
    case BLK_OP_WRITE:
        return bs->detect_zeroes == BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF;
    case BLK_OP_BLOCK_STATUS:
        return false;
    }
    return false;
}

/* The synchronous wrappers' checks for a request an asynchronous driver
 * takes: < 0 fail with it, 1 complete at once with 0, 0 hand it over. */
static int blk_aio_check(BlockNode *bs, BlockRequest *req)
{
    bool write = req->type == BLK_OP_WRITE ||
                 req->type == BLK_OP_WRITE_ZEROES ||
                 req->type == BLK_OP_DISCARD;
    int ret;

    if (req->type == BLK_OP_FLUSH) {
        /* As blk_flush(): only a leaf skips the flush under no-flush. */
        return bs->read_only || (bs->cache_no_flush && bs->file == NULL)
               ? 1 : 0;
    }
    if (write && bs->read_only) {
        ret = -EPERM;
    } else {
        ret = blk_check_request(bs, req->offset, req->bytes, write);
    }
    if (ret < 0) {
        int op = blk_stat_op(req->type);

        if (op >= 0) {
            blk_stat_invalid(bs, (BlockStatsOp)op);
        }
        return ret;
    }
    if (req->bytes == 0) {
        return 1;
    }
    if (req->type == BLK_OP_DISCARD &&
        bs->discard != BLOCKDEV_DISCARD_OPTIONS_UNMAP) {
        return 1;
    }
    if (req->type == BLK_OP_WRITE_ZEROES &&
        bs->discard != BLOCKDEV_DISCARD_OPTIONS_UNMAP) {
        req->flags &= ~(uint32_t)BLK_REQ_MAY_UNMAP;
    }
    return 0;
}

/* Count a finished driver request as the synchronous wrappers do. */
static void blk_aio_account(BlockNode *bs, const BlockRequest *req, int ret)
{
    int op = blk_stat_op(req->type);

    if (op >= 0) {
        blk_stat_end(bs, (BlockStatsOp)op, req->start_ns, ret >= 0);
    }
    if (ret < 0) {
        STAT_ADD(bs->failed_ops, 1);
        switch (req->type) {
        case BLK_OP_READ:
            STAT_ADD(bs->failed_rd_ops, 1);
            break;
        case BLK_OP_WRITE:
        case BLK_OP_WRITE_ZEROES:
            STAT_ADD(bs->failed_wr_ops, 1);
            break;
        case BLK_OP_FLUSH:
            STAT_ADD(bs->failed_flush_ops, 1);
            break;
        case BLK_OP_DISCARD:
            STAT_ADD(bs->failed_discard_ops, 1);
            break;
        default:
            break;
        }
        return;
    }
    switch (req->type) {
    case BLK_OP_READ:
        STAT_ADD(bs->rd_ops, 1);
        STAT_ADD(bs->rd_bytes, req->bytes);
        break;
    case BLK_OP_WRITE:
        STAT_ADD(bs->wr_ops, 1);
        STAT_ADD(bs->wr_bytes, req->bytes);
        blk_note_highest(bs, req->offset + req->bytes);
        break;
    case BLK_OP_WRITE_ZEROES:
        STAT_ADD(bs->zero_ops, 1);
        blk_note_highest(bs, req->offset + req->bytes);
        break;
    case BLK_OP_FLUSH:
        STAT_ADD(bs->flush_ops, 1);
        break;
    case BLK_OP_DISCARD:
        STAT_ADD(bs->discard_ops, 1);
        STAT_ADD(bs->discard_bytes, req->bytes);
        break;
    default:
        break;
    }
}

/* Post req's completion to its submitter's loop (or, with none, run it
 * now). */
static void blk_aio_finish(BlockRequest *req, int ret)
{
    req->ret = ret;
    if (req->loop != NULL) {
        loop_post(req->loop, blk_aio_done_posted, &req->job);
    } else {
        blk_aio_done(&req->job);
    }
}

void blk_aio_complete(BlockRequest *req, int ret)
{
    WorkerPool *pool = req->bs->graph != NULL
                       ? blk_graph_host(req->bs->graph)->pool : NULL;

    /* The driver cannot zero: the pool path writes zero buffers (and
     * counts the request itself). */
    if (req->type == BLK_OP_WRITE_ZEROES && ret == -ENOTSUP &&
        !(req->flags & BLK_REQ_NO_FALLBACK) && pool != NULL) {
        /* no longer in the driver; the pool path counts it again */
        STAT_SUB(req->bs->in_flight[BLOCK_STATS_OP_WRITE_ZEROES], 1);
        if (req->loop != NULL) {
            worker_submit_to(pool, &req->job, req->loop);
        } else {
            worker_submit(pool, &req->job);
        }
        return;
    }
    /* A CACHE request is a hint: its failure fails nothing. */
    if (req->type == BLK_OP_CACHE) {
        ret = 0;
    }
    /* The driver ran the request: its range may have changed. */
    if (req->type == BLK_OP_WRITE || req->type == BLK_OP_WRITE_ZEROES ||
        req->type == BLK_OP_DISCARD) {
        blk_dirty_mark(req->bs, req->offset, req->bytes);
        /* A hook installed after the request went to the driver still
         * learns of it (it must not block here). */
        ret = blk_after_write(req->bs, NULL, req->offset, req->bytes,
                              req->type == BLK_OP_WRITE ? req->buf : NULL,
                              req->type == BLK_OP_DISCARD, ret);
    }
    blk_aio_account(req->bs, req, ret);
    blk_aio_finish(req, ret);
}

bool blk_node_iothread_ok(const BlockNode *bs)
{
    if (bs == NULL) {
        return true;
    }
    return bs->drv->iothread_ok && bs->drv->aio_submit == NULL &&
           bs->job == NULL && blk_node_iothread_ok(bs->file) &&
           blk_node_iothread_ok(bs->backing) &&
           blk_node_iothread_ok(bs->target);
}

void blk_node_iothread_use(BlockNode *bs, int delta)
{
    if (bs == NULL) {
        return;
    }
    bs->iothread_users += delta;
    blk_node_iothread_use(bs->file, delta);
    blk_node_iothread_use(bs->backing, delta);
    blk_node_iothread_use(bs->target, delta);
}

void blk_aio_submit(WorkerPool *pool, BlockRequest *req)
{
    blk_aio_submit_on(pool, req, blk_node_loop(req->bs));
}

void blk_aio_submit_on(WorkerPool *pool, BlockRequest *req, Loop *loop)
{
    BlockNode *bs = req->bs;
    int op;

    req->gated = false;
    if (blk_write_gate_enter(req, pool, loop)) {
        return;                  /* a transaction runs: later */
    }
    blk_trace_submit(req);
    blk_ref(bs);
    req->ret = 0;
    req->pool = NULL;
    req->loop = loop;
    req->job.run = blk_aio_run;
    req->job.done = blk_aio_done;
    if (blk_aio_driver_takes(bs, req)) {
        int ret = blk_aio_check(bs, req);

        if (ret != 0) {
            blk_aio_finish(req, ret < 0 ? ret : 0);
            return;
        }
        op = blk_stat_op(req->type);
        req->start_ns = op >= 0 ? blk_stat_begin(bs, (BlockStatsOp)op)
                                : blk_now_ns();
        bs->drv->aio_submit(bs, req);
        return;
    }
    if (bs->aio_inline && loop != NULL && blk_aio_may_inline(req) &&
        (__atomic_load_n(&bs->before_write, __ATOMIC_ACQUIRE) == NULL ||
         req->type == BLK_OP_READ || req->type == BLK_OP_FLUSH ||
         req->type == BLK_OP_CACHE)) {
        /* Nothing can block: do it now, complete on the next loop turn
         * (the callback never runs inside submit). */
        if (req->flags & BLK_REQ_PIPE) {
            req->flags |= BLK_REQ_NOWAIT;
            blk_aio_run(&req->job);
            req->flags &= ~(uint32_t)BLK_REQ_NOWAIT;
            if (req->ret == -EAGAIN) {
                blk_pool_submit(pool, req);      /* it would wait */
                return;
            }
        } else {
            blk_aio_run(&req->job);
        }
        loop_post(loop, blk_aio_done_posted, &req->job);
        return;
    }
    blk_pool_submit(pool, req);
}
