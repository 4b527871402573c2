/* null.c - the "null-co" and "null-aio" drivers: no storage at all.
 *
 * Writes vanish; reads return zeroes.  read-zeroes (QEMU's default is
 * off) only changes what block status says: without it a range is "no
 * defined content" (neither data nor zero, as QEMU reports it), yet the
 * buffer is still zeroed.  QEMU leaves it untouched, but here a read
 * buffer may be memory freed by another client's request (NBD slot
 * buffers come from malloc), so an untouched buffer would hand one
 * client another's data.  Zeroing costs one memset per read, about 10%
 * of the server CPU of a null-co seqread (issue 9, item 1).
 * latency-ns delays every request on its worker thread.  null-aio is
 * the same driver under QEMU's other name.
 */
#include "blockdev/block.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

#define NULL_DEFAULT_SIZE (1ull << 30)

typedef struct NullState {
    uint64_t size;               /* bytes */
    uint64_t latency_ns;
    bool read_zeroes;
} NullState;

static bool null_open(BlockNode *bs, const void *opts, Error **errp)
{
    /* null-co and null-aio share their options struct. */
    const BlockdevOptionsNull *n = opts;
    NullState *s = bs->opaque;

    s->size = NULL_DEFAULT_SIZE;
    if (n->has_size) {
        if (n->size < 0) {
            error_setg(errp, "Parameter 'size' expects a non-negative "
                       "number below 2^64");
            return false;
        }
        s->size = (uint64_t)n->size;
    }
    s->latency_ns = n->has_latency_ns ? n->latency_ns : 0;
    bs->aio_inline = s->latency_ns == 0;
    s->read_zeroes = n->has_read_zeroes && n->read_zeroes;
    bs->filename = xstrdup(bs->drv == &blk_drv_null_aio ? "null-aio://"
                                                       : "null-co://");
    return true;
}

static void null_delay(NullState *s)
{
    if (s->latency_ns != 0) {
        struct timespec ts = {
            .tv_sec = (time_t)(s->latency_ns / 1000000000u),
            .tv_nsec = (long)(s->latency_ns % 1000000000u),
        };
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            /* sleep the rest */
        }
    }
}

static int64_t null_get_length(BlockNode *bs)
{
    NullState *s = bs->opaque;

    return (int64_t)s->size;
}

static int null_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                      void *buf, uint32_t flags)
{
    NullState *s = bs->opaque;

    (void)offset;
    (void)flags;
    null_delay(s);
    /* Always: the caller's buffer may hold someone else's bytes. */
    memset(buf, 0, bytes);
    return 0;
}

static int null_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                       const void *buf, uint32_t flags)
{
    (void)offset;
    (void)bytes;
    (void)buf;
    (void)flags;
    null_delay(bs->opaque);
    return 0;
}

static int null_pwrite_zeroes(BlockNode *bs, uint64_t offset, uint64_t bytes,
                              uint32_t flags)
{
    return null_pwrite(bs, offset, bytes, NULL, flags);
}

static int null_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    return null_pwrite(bs, offset, bytes, NULL, 0);
}

static int null_flush(BlockNode *bs)
{
    null_delay(bs->opaque);
    return 0;
}

static int null_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             uint64_t *pnum, uint64_t *map, BlockNode **file)
{
    NullState *s = bs->opaque;

    *pnum = bytes;
    *map = offset;
    *file = bs;
    /* As QEMU: with read-zeroes a zero range of this node (depth 1),
     * without it unallocated and of no defined content (depth 0, not
     * even zero). */
    return BLK_STATUS_OFFSET_VALID |
           (s->read_zeroes ? BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED : 0);
}

static bool null_truncate(BlockNode *bs, uint64_t size, Error **errp)
{
    NullState *s = bs->opaque;

    (void)errp;
    s->size = size;
    return true;
}

/* Nothing is stored, so everything is trivially honoured: writes,
 * zeroes and discards all do nothing at once, there is nothing to
 * fetch, and every user sees the same (no) data. */
static void null_get_caps(BlockNode *bs, BlockCaps *caps)
{
    (void)bs;
    *caps = (BlockCaps){
        .fua = true, .zero = true, .fast_zero = true, .discard = true,
        .cache = true, .multi_conn = true,
    };
}

const BlockDriver blk_drv_null_co = {
    .format_name = "null-co",
    .iothread_ok = true,
    .instance_size = sizeof(NullState),
    .open = null_open,
    .get_length = null_get_length,
    .pread = null_pread,
    .pwrite = null_pwrite,
    .pwrite_zeroes = null_pwrite_zeroes,
    .pdiscard = null_pdiscard,
    .flush = null_flush,
    .block_status = null_block_status,
    .truncate = null_truncate,
    .get_caps = null_get_caps,
};

const BlockDriver blk_drv_null_aio = {
    .format_name = "null-aio",
    .iothread_ok = true,
    .instance_size = sizeof(NullState),
    .open = null_open,
    .get_length = null_get_length,
    .pread = null_pread,
    .pwrite = null_pwrite,
    .pwrite_zeroes = null_pwrite_zeroes,
    .pdiscard = null_pdiscard,
    .flush = null_flush,
    .block_status = null_block_status,
    .truncate = null_truncate,
    .get_caps = null_get_caps,
};
