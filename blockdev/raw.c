/* raw.c - the "raw" format driver: a window [offset, offset+size) over
 * its "file" child (QEMU's raw options; qemu-nbd -o uses offset).
 *
 * Every request is checked against the window by the generic layer
 * (the node's size is the window's) and shifted by offset here.  When
 * the format was probed rather than given, a write that would make
 * sector 0 look like another format is refused with -EPERM (QEMU's
 * rule: a guest must not turn a raw image into, say, qcow2).
 */
#include "blockdev/block.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "util/util.h"

#define RAW_SECTOR 512

typedef struct RawState {
    uint64_t offset;             /* bytes into the file child */
    uint64_t size;               /* bytes of the window */
    bool has_size;               /* size given: fixed */
} RawState;

static int raw_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)buf;
    (void)len;
    (void)filename;
    return 1;                   /* anything is raw, with little confidence */
}

/* blk_open_image() sets "file" through the schema base. */
_Static_assert(offsetof(BlockdevOptionsRaw, file) ==
               offsetof(BlockdevOptionsGenericFormat, file),
               "raw options begin with BlockdevOptionsGenericFormat");

static bool raw_open(BlockNode *bs, const void *opts, Error **errp)
{
    const BlockdevOptionsRaw *r = opts;
    RawState *s = bs->opaque;
    int64_t real_size;

    if (!blk_open_child(bs, "file", r->file, errp)) {
        return false;
    }
    real_size = blk_getlength(bs->file);
    if (real_size < 0) {
        error_setg_errno(errp, (int)-real_size, "Could not get the size "
                         "of '%s'", bs->file->filename);
        return false;
    }
    if (r->has_offset && r->offset < 0) {
        error_setg(errp, "Parameter 'offset' expects a non-negative number "
                   "below 2^64");
        return false;
    }
    if (r->has_size && r->size < 0) {
        error_setg(errp, "Parameter 'size' expects a non-negative number "
                   "below 2^64");
        return false;
    }
    s->offset = r->has_offset ? (uint64_t)r->offset : 0;
    if (s->offset > (uint64_t)real_size) {
        error_setg(errp, "Offset (%llu) cannot be greater than size of the "
                   "containing file (%lld)", (unsigned long long)s->offset,
                   (long long)real_size);
        return false;
    }
    if (r->has_size) {
        s->has_size = true;
        s->size = (uint64_t)r->size;
        if ((uint64_t)real_size - s->offset < s->size) {
            /* QEMU's message, double space included. */
            error_setg(errp, "The sum of offset (%llu) and size (%llu) has "
                       "to be smaller or equal to the  actual size of the "
                       "containing file (%lld)",
                       (unsigned long long)s->offset,
                       (unsigned long long)s->size, (long long)real_size);
            return false;
        }
        if (!IS_ALIGNED(s->size, (uint64_t)RAW_SECTOR)) {
            error_setg(errp, "Specified size is not multiple of %u",
                       RAW_SECTOR);
            return false;
        }
    } else {
        s->size = (uint64_t)real_size - s->offset;
    }
    bs->request_alignment = bs->file->request_alignment;
    bs->max_transfer = bs->file->max_transfer;
    return true;
}

/* Nothing of its own: blk_reopen() switches the file child. */
static bool raw_reopen(BlockNode *bs, bool read_only, Error **errp)
{
    (void)bs;
    (void)read_only;
    (void)errp;
    return true;
}

static int64_t raw_get_length(BlockNode *bs)
{
    RawState *s = bs->opaque;

    if (!s->has_size) {
        int64_t len = blk_getlength(bs->file);
        if (len < 0) {
            return len;
        }
        s->size = (uint64_t)len > s->offset ? (uint64_t)len - s->offset : 0;
    }
    return (int64_t)s->size;
}

static int raw_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                     void *buf, uint32_t flags)
{
    RawState *s = bs->opaque;

    return blk_pread(bs->file, s->offset + offset, bytes, buf, flags);
}

/* A write touching the first sector of a probed image: would the sector
 * still probe as raw afterwards? */
static int raw_check_sector0(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             const void *buf)
{
    RawState *s = bs->opaque;
    uint8_t sector[RAW_SECTOR];
    uint64_t n = MIN(bytes, (uint64_t)RAW_SECTOR - offset);
    int ret;

    if (offset != 0 || n != RAW_SECTOR) {
        ret = blk_pread(bs->file, s->offset, RAW_SECTOR, sector, 0);
        if (ret < 0) {
            return ret;
        }
    }
    memcpy(sector + offset, buf, n);
    return blk_probe_is_raw(sector, RAW_SECTOR) ? 0 : -EPERM;
}

static int raw_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                      const void *buf, uint32_t flags)
{
    RawState *s = bs->opaque;

    if (bs->probed_raw && offset < RAW_SECTOR) {
        int ret = raw_check_sector0(bs, offset, bytes, buf);
        if (ret < 0) {
            return ret;
        }
    }
    return blk_pwrite(bs->file, s->offset + offset, bytes, buf, flags);
}

static int raw_pwrite_zeroes(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             uint32_t flags)
{
    RawState *s = bs->opaque;

    return blk_pwrite_zeroes(bs->file, s->offset + offset, bytes, flags);
}

static int raw_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    RawState *s = bs->opaque;

    return blk_pdiscard(bs->file, s->offset + offset, bytes);
}

static int raw_copy_range_to(BlockNode *bs, uint64_t offset,
                             uint64_t bytes, BlockNode *src,
                             uint64_t src_off, uint32_t flags)
{
    RawState *s = bs->opaque;

    if (bs->probed_raw && offset < RAW_SECTOR) {
        return -ENOTSUP;        /* the guard needs to see the data */
    }
    return blk_copy_range(src, src_off, bs->file, s->offset + offset,
                          bytes, flags);
}

static int raw_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BlockNode **file)
{
    RawState *s = bs->opaque;
    int ret = blk_block_status(bs->file, s->offset + offset, bytes, pnum);

    if (ret < 0) {
        return ret;
    }
    *map = s->offset + offset;
    *file = bs->file;
    return (ret & (BLK_STATUS_DATA | BLK_STATUS_ZERO)) |
           BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
}

static bool raw_truncate(BlockNode *bs, uint64_t size, Error **errp)
{
    RawState *s = bs->opaque;

    if (s->has_size) {
        error_setg(errp, "Cannot resize fixed-size raw disks");
        return false;
    }
    if (size > (uint64_t)INT64_MAX - s->offset) {
        error_setg(errp, "Disk size too large for the chosen offset");
        return false;
    }
    return blk_truncate(bs->file, s->offset + size, errp);
}

static int raw_prefetch(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    RawState *s = bs->opaque;

    return blk_prefetch(bs->file, s->offset + offset, bytes);
}

static int raw_splice_read(BlockNode *bs, uint64_t offset, uint64_t bytes,
                           int pipe_fd, uint32_t flags, BlockSplicePin *pin)
{
    RawState *s = bs->opaque;

    return blk_splice_read(bs->file, s->offset + offset, bytes, pipe_fd,
                           flags, pin);
}

/* A window over the child: requests only shift, so the child's answers
 * hold as they are. */
static void raw_get_caps(BlockNode *bs, BlockCaps *caps)
{
    blk_get_caps(bs->file, caps);
}

static void raw_query_image(BlockNode *bs, ImageInfo *info)
{
    if (bs->file->drv->query_image != NULL) {
        bs->file->drv->query_image(bs->file, info);
    }
}

const BlockDriver blk_drv_raw = {
    .format_name = "raw",
    .iothread_ok = true,
    .instance_size = sizeof(RawState),
    .is_format = true,
    .probe = raw_probe,
    .open = raw_open,
    .get_length = raw_get_length,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .pdiscard = raw_pdiscard,
    .copy_range_to = raw_copy_range_to,
    .block_status = raw_block_status,
    .truncate = raw_truncate,
    .query_image = raw_query_image,
    .get_caps = raw_get_caps,
    .prefetch = raw_prefetch,
    .splice_read = raw_splice_read,
    .reopen = raw_reopen,
};
