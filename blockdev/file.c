/* file.c - the "file" protocol driver: a regular file or a block device.
 *
 * Options (QEMU's names): filename, aio, locking, and from the common
 * base cache.direct, cache.no-flush, discard, detect-zeroes.
 *
 * aio: every request runs synchronously on a worker thread of the pool
 * (blk_aio_submit); "native" and "io_uring" are accepted as aliases of
 * "threads" so that QEMU command lines keep working (QEMU's rule that
 * aio=native needs cache.direct=on is kept).
 *
 * Locking, compatible with QEMU (block/file-posix.c): open file
 * description (OFD) read locks on single bytes.  For every permission a
 * node holds it locks byte 100 + bit, for every permission it refuses to
 * share byte 200 + bit.  Bits: 0 consistent read, 1 write, 2 write
 * unchanged, 3 resize.  A writable node holds read+write and does not
 * share write and resize, so a second writer (another blockd, qemu-io,
 * qemu-img) sees our byte 201 / we see its byte 101.
 *
 * O_DIRECT (cache.direct=on): requests whose offset, length or buffer
 * are not aligned go through a per-thread aligned bounce buffer; an
 * unaligned write is a read-modify-write of the covering aligned blocks,
 * serialised per node.
 */
#include "blockdev/block.h"
#include "blockdev/create.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

enum {
    PERM_CONSISTENT_READ = 0,
    PERM_WRITE = 1,
    PERM_WRITE_UNCHANGED = 2,
    PERM_RESIZE = 3,
    PERM_COUNT = 4,
};
#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

static const char *const file_perm_names[PERM_COUNT] = {
    "consistent read", "write", "write unchanged", "resize",
};

typedef struct FileState {
    int fd;
    bool is_blockdev;
    uint32_t mem_align;          /* buffer address alignment, bytes */
    bool no_punch;               /* PUNCH_HOLE unsupported (sticky) */
    bool no_zero_range;          /* ZERO_RANGE unsupported (sticky) */
    bool no_dsync;               /* RWF_DSYNC unsupported (sticky) */
    /* Found at open for writable nodes (file_probe_caps()). */
    bool can_punch;              /* discard really releases space */
    bool can_zero_fast;          /* ZERO_RANGE / WRITE ZEROES work */
    /* A range splice_read knows to be all data, [data_lo, data_hi),
     * learnt with SEEK_HOLE (which on tmpfs walks every page up to the
     * next hole: a 1 GiB file takes ~80 ms, so it is asked once and
     * remembered) and cut back where holes are punched.  Guarded by
     * data_busy (a spinlock: a few instructions under it).  A stale
     * answer is harmless: a hole sent as data reads the same. */
    bool data_busy;
    uint64_t data_lo, data_hi;
    /* A SEEK_HOLE walk in progress starts here (0: none; offset + 1,
     * under file_walk_lock): a search from above it waits for its
     * answer instead of walking the same pages again. */
    uint64_t walk_from;
    bool locked;                 /* holds QEMU's permission locks */
} FileState;

static void file_data_lock(FileState *s)
{
    while (__atomic_exchange_n(&s->data_busy, true, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&s->data_busy, __ATOMIC_RELAXED)) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
    }
}

static void file_data_unlock(FileState *s)
{
    __atomic_store_n(&s->data_busy, false, __ATOMIC_RELEASE);
}

/* [off, off+len) may now hold holes: keep the larger known-data piece
 * on either side of it. */
static void file_data_forget(FileState *s, uint64_t off, uint64_t len)
{
    uint64_t end = off + len;

    file_data_lock(s);
    if (off < s->data_hi && end > s->data_lo) {
        if (off - MIN(off, s->data_lo) >= s->data_hi - MIN(end, s->data_hi)) {
            s->data_hi = MAX(off, s->data_lo);
        } else {
            s->data_lo = MIN(end, s->data_hi);
        }
    }
    file_data_unlock(s);
}

static void file_data_note(FileState *s, uint64_t off, uint64_t hole);

static off_t file_seek_hole(FileState *s, uint64_t off);

/* Is [off, off+len) all data (not a hole, not past the end)?  1 yes,
 * 0 no, -EAGAIN when only a search could tell and nowait is set. */
static int file_is_data(FileState *s, uint64_t off, uint64_t len,
                        bool nowait)
{
    uint64_t end = off + len;
    bool known;
    off_t hole;

    file_data_lock(s);
    known = off >= s->data_lo && end <= s->data_hi;
    file_data_unlock(s);
    if (known) {
        return 1;
    }
    if (nowait) {
        return -EAGAIN;
    }
    hole = file_seek_hole(s, off);      /* the end is a hole */
    return hole >= 0 && (uint64_t)hole >= end;
}

/* SEEK_HOLE found [off, hole) to be data: remember it. */
static void file_data_note(FileState *s, uint64_t off, uint64_t hole)
{
    file_data_lock(s);
    if (off <= s->data_hi && hole >= s->data_lo &&
        s->data_lo < s->data_hi) {
        s->data_lo = MIN(s->data_lo, off);       /* overlapping: join */
        s->data_hi = MAX(s->data_hi, hole);
    } else {
        s->data_lo = off;
        s->data_hi = hole;
    }
    file_data_unlock(s);
}

/* Bytes from off known to be data (0: not known). */
static uint64_t file_data_known(FileState *s, uint64_t off)
{
    uint64_t n = 0;

    file_data_lock(s);
    if (off >= s->data_lo && off < s->data_hi) {
        n = s->data_hi - off;
    }
    file_data_unlock(s);
    return n;
}

static pthread_mutex_t file_walk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t file_walk_cond = PTHREAD_COND_INITIALIZER;

/* lseek(SEEK_HOLE) from off, one walker at a time for searches that
 * start at or above a walk in progress: four job chunks starting
 * together at the front of a tmpfs image walked it four times.  A
 * waiter whose offset the finished walk covered takes its answer from
 * the known-data range (its end is that hole) without a search. */
static off_t file_seek_hole(FileState *s, uint64_t off)
{
    off_t hole;
    bool mine;

    pthread_mutex_lock(&file_walk_lock);
    for (;;) {
        /* A walk that finished since the caller last looked (it notes
         * its answer before it lets go) may have answered this one. */
        uint64_t known = file_data_known(s, off);

        if (known > 0) {
            pthread_mutex_unlock(&file_walk_lock);
            return (off_t)(off + known);
        }
        if (s->walk_from == 0 || s->walk_from - 1 > off) {
            break;
        }
        pthread_cond_wait(&file_walk_cond, &file_walk_lock);
    }
    mine = s->walk_from == 0;
    if (mine) {
        s->walk_from = off + 1;
    }
    pthread_mutex_unlock(&file_walk_lock);
    hole = lseek(s->fd, (off_t)off, SEEK_HOLE);
    if (hole > 0 && (uint64_t)hole > off) {
        file_data_note(s, off, (uint64_t)hole);
    }
    if (mine) {
        pthread_mutex_lock(&file_walk_lock);
        s->walk_from = 0;
        pthread_cond_broadcast(&file_walk_cond);
        pthread_mutex_unlock(&file_walk_lock);
    }
    return hole;
}

/* ---- locking ------------------------------------------------------ */

static int file_lock_byte(int fd, off_t byte, short type)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = type,
    };

    return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
}

/* 1 when another open file description holds a lock on byte, 0 if
 * not, -errno. */
static int file_test_byte(int fd, off_t byte)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = F_WRLCK,
    };

    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) {
        return -errno;
    }
    return fl.l_type != F_UNLCK;
}

/* Take the lock bytes for perm/shared (bit masks) and check that no
 * other user conflicts.  Returns 0, -EAGAIN with errp set on a
 * conflict, or another -errno (locking unsupported). */
static int file_lock(int fd, unsigned perm, unsigned shared,
                     const char *filename, Error **errp)
{
    int ret;

    for (int i = 0; i < PERM_COUNT; i++) {
        if (perm & (1u << i)) {
            ret = file_lock_byte(fd, LOCK_PERM_BASE + i, F_RDLCK);
            if (ret < 0) {
                goto lock_fail;
            }
        }
        if (!(shared & (1u << i))) {
            ret = file_lock_byte(fd, LOCK_SHARED_BASE + i, F_RDLCK);
            if (ret < 0) {
                goto lock_fail;
            }
        }
    }
    for (int i = 0; i < PERM_COUNT; i++) {
        if (perm & (1u << i)) {
            ret = file_test_byte(fd, LOCK_SHARED_BASE + i);
            if (ret < 0) {
                return ret;
            }
            if (ret > 0) {
                error_setg(errp, "Failed to get \"%s\" lock: Is another "
                           "process using the image [%s]?",
                           file_perm_names[i], filename);
                return -EAGAIN;
            }
        }
        if (!(shared & (1u << i))) {
            ret = file_test_byte(fd, LOCK_PERM_BASE + i);
            if (ret < 0) {
                return ret;
            }
            if (ret > 0) {
                error_setg(errp, "Failed to get shared \"%s\" lock: Is "
                           "another process using the image [%s]?",
                           file_perm_names[i], filename);
                return -EAGAIN;
            }
        }
    }
    return 0;

lock_fail:
    if (ret == -EAGAIN || ret == -EACCES) {
        /* Someone holds a write lock on the byte (not QEMU's scheme,
         * but a conflict all the same). */
        error_setg(errp, "Failed to lock byte %d: Is another process "
                   "using the image [%s]?", LOCK_PERM_BASE, filename);
        return -EAGAIN;
    }
    return ret;
}

/* ---- alignment ---------------------------------------------------- */

/* Find the O_DIRECT request and memory alignment: statx(STATX_DIOALIGN)
 * where the kernel knows it, else the sector size of a block device,
 * else (as QEMU does) the smallest power of two from 512 that a read
 * accepts. */
static void file_probe_alignment(BlockNode *bs, FileState *s)
{
    static const uint32_t sizes[] = { 512, 1024, 2048, 4096 };
    struct statx stx;
    void *buf = NULL;
    uint32_t req = 0, mem = 0;

#ifdef STATX_DIOALIGN
    if (statx(s->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align > 0) {
        req = stx.stx_dio_offset_align;
        mem = stx.stx_dio_mem_align;
    }
#else
    (void)stx;
#endif
    if (req == 0 && s->is_blockdev) {
        int sector = 0;
        if (ioctl(s->fd, BLKSSZGET, &sector) == 0 && sector > 0) {
            req = (uint32_t)sector;
        }
    }
    if (req == 0 || mem == 0) {
        if (posix_memalign(&buf, 4096, 2 * 4096) != 0) {
            buf = NULL;
        }
    }
    if (buf != NULL && req == 0) {
        for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
            if (pread(s->fd, buf, sizes[i], 0) >= 0) {
                req = sizes[i];
                break;
            }
        }
    }
    if (buf != NULL && mem == 0) {
        uint32_t len = req ? req : 4096;
        for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
            if (pread(s->fd, (uint8_t *)buf + sizes[i], len, 0) >= 0) {
                mem = sizes[i];
                break;
            }
        }
    }
    free(buf);
    bs->request_alignment = req && IS_POWER_OF_2(req) ? req : 4096;
    s->mem_align = mem && IS_POWER_OF_2(mem) ? mem : 4096;
}

/* ---- bounce buffers ------------------------------------------------ */

/* One aligned bounce buffer per worker thread, grown on demand and kept
 * for the thread's life: no allocation per request once warm.  A
 * pthread key frees it when the thread exits. */
#define FILE_BOUNCE_MAX (4u * 1024 * 1024)

typedef struct FileBounce {
    void *buf;
    size_t size;
} FileBounce;

static pthread_key_t file_bounce_key;
static pthread_once_t file_bounce_once = PTHREAD_ONCE_INIT;

static void file_bounce_free(void *opaque)
{
    FileBounce *b = opaque;

    free(b->buf);
    free(b);
}

static void file_bounce_init(void)
{
    pthread_key_create(&file_bounce_key, file_bounce_free);
}

static void *file_get_bounce(size_t len)
{
    FileBounce *b;

    pthread_once(&file_bounce_once, file_bounce_init);
    b = pthread_getspecific(file_bounce_key);
    if (b == NULL) {
        b = XNEW(FileBounce);
        pthread_setspecific(file_bounce_key, b);
    }
    if (len > b->size) {
        void *p = NULL;
        size_t size = MAX(len, (size_t)64 * 1024);
        if (posix_memalign(&p, 4096, size) != 0) {
            return NULL;
        }
        free(b->buf);
        b->buf = p;
        b->size = size;
    }
    return b->buf;
}

/* ---- raw I/O ---------------------------------------------------------- */

/* pread all of [off, off+len): short reads mean end of file and the rest
 * reads as zeroes. */
static int file_pread_raw(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (r == 0) {
            memset(p, 0, len);
            return 0;
        }
        p += r;
        off += (uint64_t)r;
        len -= (size_t)r;
        if (len > 0 && ((uintptr_t)p | off | len) & 511) {
            /* Short unaligned read under O_DIRECT: end of file. */
            memset(p, 0, len);
            return 0;
        }
    }
    return 0;
}

static int file_pwrite_raw(FileState *s, const void *buf, size_t len,
                           uint64_t off, bool dsync)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t r;
        if (dsync && !s->no_dsync) {
            struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
            r = pwritev2(s->fd, &iov, 1, (off_t)off, RWF_DSYNC);
            if (r < 0 && (errno == EOPNOTSUPP || errno == ENOSYS)) {
                s->no_dsync = true;
                continue;
            }
        } else {
            r = pwrite(s->fd, p, len, (off_t)off);
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += r;
        off += (uint64_t)r;
        len -= (size_t)r;
    }
    if (dsync && s->no_dsync && fdatasync(s->fd) != 0) {
        return -errno;
    }
    return 0;
}

static bool file_aligned(BlockNode *bs, FileState *s, uint64_t off,
                         uint64_t bytes, const void *buf)
{
    if (!bs->cache_direct) {
        return true;
    }
    return IS_ALIGNED(off, (uint64_t)bs->request_alignment) &&
           IS_ALIGNED(bytes, (uint64_t)bs->request_alignment) &&
           IS_ALIGNED((uintptr_t)buf, (uintptr_t)s->mem_align);
}

static int file_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                      void *buf, uint32_t flags)
{
    FileState *s = bs->opaque;
    uint64_t align = bs->request_alignment;

    (void)flags;
    if (file_aligned(bs, s, offset, bytes, buf)) {
        return file_pread_raw(s->fd, buf, bytes, offset);
    }
    /* Bounce, one aligned chunk at a time. */
    while (bytes > 0) {
        uint64_t start = ALIGN_DOWN(offset, align);
        uint64_t head = offset - start;
        uint64_t n = MIN(bytes, (uint64_t)FILE_BOUNCE_MAX - align);
        uint64_t len = ALIGN_UP(head + n, align);
        uint8_t *b;
        int ret;

        if (len > FILE_BOUNCE_MAX) {
            len = FILE_BOUNCE_MAX;
            n = len - head;
        }
        b = file_get_bounce(len);
        if (b == NULL) {
            return -ENOMEM;
        }
        ret = file_pread_raw(s->fd, b, len, start);
        if (ret < 0) {
            return ret;
        }
        memcpy(buf, b + head, n);
        buf = (uint8_t *)buf + n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

/* Unaligned O_DIRECT write: read-modify-write of the aligned blocks that
 * cover each chunk, under the node's rmw_lock. */
static int file_pwrite_bounce(BlockNode *bs, FileState *s, uint64_t offset,
                              uint64_t bytes, const uint8_t *buf, bool dsync)
{
    uint64_t align = bs->request_alignment;
    uint64_t end = offset + bytes;
    struct stat st;
    int ret = 0;

    pthread_mutex_lock(&bs->rmw_lock);
    while (bytes > 0) {
        uint64_t start = ALIGN_DOWN(offset, align);
        uint64_t head = offset - start;
        uint64_t n = MIN(bytes, (uint64_t)FILE_BOUNCE_MAX - align);
        uint64_t len = ALIGN_UP(head + n, align);
        uint8_t *b;

        if (len > FILE_BOUNCE_MAX) {
            len = FILE_BOUNCE_MAX;
            n = len - head;
        }
        b = file_get_bounce(len);
        if (b == NULL) {
            ret = -ENOMEM;
            break;
        }
        if (head != 0 || n != len) {
            ret = file_pread_raw(s->fd, b, len, start);
            if (ret < 0) {
                break;
            }
        }
        memcpy(b + head, buf, n);
        if (fstat(s->fd, &st) != 0) {
            ret = -errno;
            break;
        }
        ret = file_pwrite_raw(s, b, len, start, dsync);
        if (ret < 0) {
            break;
        }
        /* The aligned write may have grown the file past the request:
         * cut it back to what a plain write would have left, unless
         * someone else has grown it further meanwhile. */
        if (!s->is_blockdev && start + len > (uint64_t)st.st_size &&
            start + len > end) {
            uint64_t old_size = (uint64_t)st.st_size;
            if (fstat(s->fd, &st) == 0 &&
                (uint64_t)st.st_size == start + len &&
                ftruncate(s->fd, (off_t)MAX(old_size, MIN(end, start + len)))
                != 0) {
                ret = -errno;
                break;
            }
        }
        buf += n;
        offset += n;
        bytes -= n;
    }
    pthread_mutex_unlock(&bs->rmw_lock);
    return ret;
}

static int file_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                       const void *buf, uint32_t flags)
{
    FileState *s = bs->opaque;
    bool dsync = (flags & BLK_REQ_FUA) && !bs->cache_no_flush;

    if (file_aligned(bs, s, offset, bytes, buf)) {
        return file_pwrite_raw(s, buf, bytes, offset, dsync);
    }
    return file_pwrite_bounce(bs, s, offset, bytes, buf, dsync);
}

static int file_size_now(FileState *s, uint64_t *size)
{
    struct stat st;

    if (s->is_blockdev) {
        uint64_t b;
        if (ioctl(s->fd, BLKGETSIZE64, &b) != 0) {
            return -errno;
        }
        *size = b;
        return 0;
    }
    if (fstat(s->fd, &st) != 0) {
        return -errno;
    }
    *size = (uint64_t)st.st_size;
    return 0;
}

static int file_fallocate(FileState *s, int mode, uint64_t off,
                          uint64_t len)
{
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        /* holes, or unwritten extents SEEK_DATA may skip */
        file_data_forget(s, off, len);
    }
    while (fallocate(s->fd, mode, (off_t)off, (off_t)len) != 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

static bool file_unsupported(int ret)
{
    return ret == -EOPNOTSUPP || ret == -ENOTSUP || ret == -ENOSYS ||
           ret == -EINVAL;
}

/* Zeroes on a block device: BLKDISCARD when unmapping is allowed and
 * the device guarantees zeroes after it is not something we can know,
 * so BLKZEROOUT (which the kernel may do with WRITE ZEROES / UNMAP) on
 * sector-aligned ranges; the generic layer writes zero buffers for the
 * rest. */
static int file_blockdev_zeroes(BlockNode *bs, FileState *s, uint64_t offset,
                                uint64_t bytes, uint32_t flags)
{
    uint64_t range[2] = { offset, bytes };

    (void)bs;
    if (s->no_zero_range || !IS_ALIGNED(offset, 512) ||
        !IS_ALIGNED(bytes, 512)) {
        return -ENOTSUP;
    }
    if (ioctl(s->fd, BLKZEROOUT, range) != 0) {
        int ret = -errno;
        if (file_unsupported(ret) || ret == -ENOTTY) {
            s->no_zero_range = true;
            return -ENOTSUP;
        }
        return ret;
    }
    if ((flags & BLK_REQ_FUA) && !bs->cache_no_flush &&
        fdatasync(s->fd) != 0) {
        return -errno;
    }
    return 0;
}

static int file_pwrite_zeroes(BlockNode *bs, uint64_t offset, uint64_t bytes,
                              uint32_t flags)
{
    FileState *s = bs->opaque;
    uint64_t size, inside;
    int ret = -ENOTSUP;

    if (s->is_blockdev) {
        return file_blockdev_zeroes(bs, s, offset, bytes, flags);
    }
    ret = file_size_now(s, &size);
    if (ret < 0) {
        return ret;
    }
    inside = offset >= size ? 0 : MIN(bytes, size - offset);
    ret = -ENOTSUP;
    if (inside > 0 && (flags & BLK_REQ_MAY_UNMAP) && !s->no_punch) {
        ret = file_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             offset, inside);
        if (file_unsupported(ret)) {
            s->no_punch = true;
            ret = -ENOTSUP;
        }
    }
    if (inside > 0 && ret == -ENOTSUP && !s->no_zero_range) {
        ret = file_fallocate(s, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                             offset, inside);
        if (file_unsupported(ret)) {
            s->no_zero_range = true;
            ret = -ENOTSUP;
        }
    }
    if (inside == 0) {
        ret = 0;
    }
    if (ret < 0) {
        return ret;
    }
    /* Past the end: growing the file reads back as zeroes. */
    if (offset + bytes > size &&
        ftruncate(s->fd, (off_t)(offset + bytes)) != 0) {
        return -errno;
    }
    if ((flags & BLK_REQ_FUA) && !bs->cache_no_flush &&
        fdatasync(s->fd) != 0) {
        return -errno;
    }
    return 0;
}

static int file_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    FileState *s = bs->opaque;
    uint64_t size;
    int ret;

    if (s->no_punch) {
        return 0;               /* discard is a hint */
    }
    if (s->is_blockdev) {
        uint64_t range[2] = { offset, bytes };
        if (!IS_ALIGNED(offset, 512) || !IS_ALIGNED(bytes, 512) ||
            ioctl(s->fd, BLKDISCARD, range) != 0) {
            return 0;           /* unaligned or unsupported: ignored */
        }
        return 0;
    }
    ret = file_size_now(s, &size);
    if (ret < 0 || offset >= size) {
        return ret;
    }
    ret = file_fallocate(s, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         offset, MIN(bytes, size - offset));
    if (file_unsupported(ret)) {
        s->no_punch = true;
        return 0;
    }
    return ret;
}

static int file_flush(BlockNode *bs)
{
    FileState *s = bs->opaque;

    if (bs->cache_no_flush) {
        return 0;
    }
    return fdatasync(s->fd) == 0 ? 0 : -errno;
}

/* Data or hole from SEEK_DATA / SEEK_HOLE.  A protocol node allocates
 * everything (allocation depth 1); holes read as zeroes. */
static int file_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             uint64_t *pnum, uint64_t *map,
                             BlockNode **file)
{
    FileState *s = bs->opaque;
    uint64_t known = s->is_blockdev ? 0 : file_data_known(s, offset);
    off_t data, hole;

    *map = offset;
    *file = bs;
    if (known > 0) {
        /* Asked before (SEEK_HOLE walks every page of a tmpfs file up
         * to the next hole: a job asking chunk by chunk would walk the
         * image once per chunk). */
        *pnum = MIN(bytes, known);
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED |
               BLK_STATUS_OFFSET_VALID;
    }
    data = lseek(s->fd, (off_t)offset, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) {
            /* No data after offset: a hole up to (and past) the end. */
            *pnum = bytes;
            return BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED |
                   BLK_STATUS_OFFSET_VALID;
        }
        *pnum = bytes;          /* no SEEK_DATA: say data */
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED |
               BLK_STATUS_OFFSET_VALID;
    }
    if ((uint64_t)data > offset) {
        *pnum = MIN(bytes, (uint64_t)data - offset);
        return BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED |
               BLK_STATUS_OFFSET_VALID;
    }
    hole = s->is_blockdev ? lseek(s->fd, (off_t)offset, SEEK_HOLE)
                          : file_seek_hole(s, offset);
    if (hole < 0 || (uint64_t)hole <= offset) {
        *pnum = hole < 0 ? bytes : 1;   /* raced with a writer */
    } else {
        *pnum = MIN(bytes, (uint64_t)hole - offset);
    }
    return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
}

static int64_t file_get_length(BlockNode *bs)
{
    FileState *s = bs->opaque;
    uint64_t size;
    int ret = file_size_now(s, &size);

    return ret < 0 ? ret : (int64_t)size;
}

static bool file_truncate(BlockNode *bs, uint64_t size, Error **errp)
{
    FileState *s = bs->opaque;

    if (s->is_blockdev) {
        uint64_t cur;
        if (file_size_now(s, &cur) == 0 && size <= cur) {
            return true;        /* a device cannot shrink, QEMU allows */
        }
        error_setg(errp, "Cannot grow device files");
        return false;
    }
    file_data_forget(s, size, UINT64_MAX - size);
    if (ftruncate(s->fd, (off_t)size) != 0) {
        error_setg_errno(errp, errno, "Failed to resize the file");
        return false;
    }
    return true;
}

/* Prefetch into the page cache (NBD_CMD_CACHE): the kernel reads the
 * range ahead without us waiting for it. */
/* Whole file: a format's writes land at host offsets its caller does
 * not know.  Nothing to do without a page cache or when flushes are
 * ignored (cache.no-flush: nobody waits for the disk). */
static void file_start_writeback(BlockNode *bs)
{
    FileState *s = bs->opaque;

    if (!bs->cache_direct && !bs->cache_no_flush) {
        (void)sync_file_range(s->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    }
}

static int file_prefetch(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    FileState *s = bs->opaque;
    int ret;

    if (bs->cache_direct) {
        return 0;               /* no page cache to fill */
    }
    ret = posix_fadvise(s->fd, (off_t)offset, (off_t)bytes,
                        POSIX_FADV_WILLNEED);
    return -ret;
}

/* A block device's queue limit from sysfs (a partition has its
 * disk's queue one directory up); 0 when unknown. */
static uint64_t file_queue_limit(FileState *s, const char *name)
{
    struct stat st;
    unsigned long long v = 0;

    if (fstat(s->fd, &st) != 0) {
        return 0;
    }
    for (int up = 0; up < 2; up++) {
        CLEANUP_FREE char *path = xasprintf(
            "/sys/dev/block/%u:%u/%squeue/%s", major(st.st_rdev),
            minor(st.st_rdev), up ? "../" : "", name);
        FILE *f = fopen(path, "re");

        if (f != NULL) {
            if (fscanf(f, "%llu", &v) != 1) {
                v = 0;
            }
            fclose(f);
            return v;
        }
    }
    return 0;
}

/* What the kernel can do for this file without writing data: try
 * PUNCH_HOLE and ZERO_RANGE on a range past the end with KEEP_SIZE,
 * which nobody reads (the node holds the write lock; the size stays).
 * ZERO_RANGE goes first since it may preallocate that range; the punch
 * releases it again. */
static void file_probe_caps(BlockNode *bs, FileState *s)
{
    uint64_t size, off;

    if (bs->read_only) {
        return;                 /* no write capability to offer */
    }
    if (s->is_blockdev) {
        s->can_punch = file_queue_limit(s, "discard_max_bytes") > 0;
        s->can_zero_fast = file_queue_limit(s, "write_zeroes_max_bytes") > 0;
        return;
    }
    if (file_size_now(s, &size) < 0) {
        return;
    }
    off = ALIGN_UP(size, (uint64_t)1 << 20) + ((uint64_t)1 << 20);
    s->can_zero_fast = file_fallocate(s, FALLOC_FL_ZERO_RANGE |
                                      FALLOC_FL_KEEP_SIZE, off, 4096) == 0;
    s->can_punch = file_fallocate(s, FALLOC_FL_PUNCH_HOLE |
                                  FALLOC_FL_KEEP_SIZE, off, 4096) == 0;
}

/* FUA by RWF_DSYNC or fdatasync; zeroes fast where the kernel zeroes
 * without writing (ZERO_RANGE, or PUNCH_HOLE when unmapping is
 * allowed); discard by PUNCH_HOLE / BLKDISCARD; prefetch through the
 * page cache (none with O_DIRECT); one fd shared by every user. */
static void file_get_caps(BlockNode *bs, BlockCaps *caps)
{
    FileState *s = bs->opaque;

    caps->fua = true;
    caps->zero = true;
    caps->fast_zero = s->can_zero_fast ||
                      (!s->is_blockdev && s->can_punch &&
                       bs->discard == BLOCKDEV_DISCARD_OPTIONS_UNMAP);
    caps->discard = s->can_punch;
    caps->cache = !bs->cache_direct;
    caps->multi_conn = true;
    caps->splice_read = !bs->cache_direct;
}

/* splice(2) from the page cache into a pipe: the pipe holds references
 * to the cached pages, and the NBD server splices them on into its
 * socket, so the data is never copied by the daemon.  Not under
 * O_DIRECT (no page cache to share). */
static int file_splice_read(BlockNode *bs, uint64_t offset, uint64_t bytes,
                            int pipe_fd, uint32_t flags, BlockSplicePin *pin)
{
    static const uint8_t zeroes[4096];
    FileState *s = bs->opaque;
    loff_t pos = (loff_t)offset;
    uint64_t left = bytes;

    (void)pin;                   /* a file never reuses its own pages */
    if (bs->cache_direct) {
        return -ENOTSUP;
    }
    if ((flags & BLK_REQ_DATA_ONLY) && !s->is_blockdev) {
        int data = file_is_data(s, offset, bytes,
                                (flags & BLK_REQ_NOWAIT) != 0);

        if (data <= 0) {
            return data < 0 ? data : -ENOTSUP;
        }
    }
    while (left > 0) {
        ssize_t n = splice(s->fd, &pos, pipe_fd, NULL, left,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return left == bytes && (errno == EINVAL || errno == ENOSYS)
                   ? -ENOTSUP : -errno;
        }
        if (n == 0) {
            break;               /* end of file: zeroes from here */
        }
        left -= (uint64_t)n;
    }
    while (left > 0) {
        ssize_t n = write(pipe_fd, zeroes, MIN(left, sizeof(zeroes)));

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -EIO;
        }
        left -= (uint64_t)n;
    }
    return 0;
}

/* copy_file_range(2) from src, another file node: the kernel copies
 * page cache to page cache (or shares extents, on file systems that
 * can), so the data never crosses into the daemon.  Not under
 * O_DIRECT (alignment rules of their own), nor across file systems
 * (EXDEV) or on files that do not support it: -ENOTSUP, the caller
 * reads and writes. */
static int file_copy_range_to(BlockNode *bs, uint64_t offset,
                              uint64_t bytes, BlockNode *src,
                              uint64_t src_off, uint32_t flags)
{
    FileState *s = bs->opaque;
    FileState *from;
    loff_t in = (loff_t)src_off, out = (loff_t)offset;
    uint64_t left = bytes;

    if (src->drv->copy_range_to != file_copy_range_to ||
        bs->cache_direct || src->cache_direct || s->is_blockdev) {
        return -ENOTSUP;
    }
    from = src->opaque;
    if (from->is_blockdev) {
        return -ENOTSUP;
    }
    if (flags & BLK_REQ_STREAM) {
        /* Allocate the whole range before the copy dirties it page by
         * page (ext4 allocates delayed ranges only at writeback, then
         * a piece at a time); a failure only loses the hint. */
        (void)fallocate(s->fd, FALLOC_FL_KEEP_SIZE, out, (off_t)bytes);
    }
    while (left > 0) {
        ssize_t n = copy_file_range(from->fd, &in, s->fd, &out,
                                    MIN(left, (uint64_t)SSIZE_MAX), 0);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            int ret = -errno;
            return file_unsupported(ret) || ret == -EXDEV ||
                   ret == -EBADF ? -ENOTSUP : ret;
        }
        if (n == 0) {
            return -ENOTSUP;     /* end of src: zeroes, written by hand */
        }
        left -= (uint64_t)n;
    }
    if ((flags & BLK_REQ_FUA) && !bs->cache_no_flush &&
        fdatasync(s->fd) != 0) {
        return -errno;
    }
    if ((flags & BLK_REQ_STREAM) && !bs->cache_no_flush) {
        /* Start writing the range back now, without waiting for it. */
        (void)sync_file_range(s->fd, (off_t)offset, (off_t)bytes,
                              SYNC_FILE_RANGE_WRITE);
    }
    return 0;
}

static void file_close(BlockNode *bs)
{
    FileState *s = bs->opaque;

    if (s->fd >= 0) {
        close(s->fd);           /* drops the OFD locks too */
        s->fd = -1;
    }
}

/* A regular file on tmpfs or ramfs never waits for a device: its I/O is
 * a memory copy, cheaper on the loop thread than the two thread switches
 * of the pool (blk_aio_submit, BLK_INLINE_MAX). */
static bool file_in_memory(int fd)
{
    struct statfs sfs;

    return fstatfs(fd, &sfs) == 0 &&
           (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
}

/* Open the file again with the other access mode and its locks, then
 * put the new open file description under the same fd number (dup2):
 * a read in flight on a worker finishes on the old one, and closing it
 * drops the old locks. */
static bool file_reopen(BlockNode *bs, bool read_only, Error **errp)
{
    FileState *s = bs->opaque;
    int fl = fcntl(s->fd, F_GETFL);
    int fd;

    fd = open(bs->filename, O_CLOEXEC | (fl >= 0 ? fl & O_DIRECT : 0) |
              (read_only ? O_RDONLY : O_RDWR));
    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not reopen '%s' %s",
                         bs->filename, read_only ? "read-only"
                                                 : "read-write");
        return false;
    }
    if (s->locked) {
        unsigned perm = 1u << PERM_CONSISTENT_READ;
        unsigned shared = (1u << PERM_COUNT) - 1;

        if (!read_only) {
            perm |= 1u << PERM_WRITE;
            shared &= ~((1u << PERM_WRITE) | (1u << PERM_RESIZE));
        }
        Error *lerr = NULL;
        int ret = file_lock(fd, perm, shared, bs->filename, &lerr);

        if (ret < 0) {
            if (lerr != NULL) {
                error_propagate(errp, lerr);
            } else {
                error_setg_errno(errp, -ret, "Could not lock '%s'",
                                 bs->filename);
            }
            close(fd);
            return false;
        }
        error_free(lerr);
    }
    if (dup2(fd, s->fd) < 0) {
        error_setg_errno(errp, errno, "Could not reopen '%s'",
                         bs->filename);
        close(fd);
        return false;
    }
    close(fd);
    if (!read_only) {
        bs->read_only = false;   /* file_probe_caps() asks it */
        file_probe_caps(bs, s);
        bs->read_only = true;    /* blk_reopen() sets it */
    }
    return true;
}

static bool file_open(BlockNode *bs, const void *opts, Error **errp)
{
    const BlockdevOptionsFile *f = opts;
    bool host_device = bs->drv == &blk_drv_host_device;
    FileState *s = bs->opaque;
    /* O_NONBLOCK: opening a FIFO must not hang the loop; it is refused
     * below and cleared for what we keep. */
    int flags = O_CLOEXEC | O_NONBLOCK;
    OnOffAuto locking = f->has_locking ? f->locking : ON_OFF_AUTO_AUTO;
    struct stat st;
    int ret;

    s->fd = -1;
    if (f->has_aio && f->aio == BLOCKDEV_AIO_OPTIONS_NATIVE &&
        !bs->cache_direct) {
        error_setg(errp, "aio=native was specified, but it requires "
                   "cache.direct=on, which was not specified.");
        return false;
    }
    if (f->filename[0] == '\0') {
        error_setg(errp, "The 'file' block driver requires a file name");
        return false;
    }
    bs->filename = xstrdup(f->filename);
    if (bs->cache_direct) {
        flags |= O_DIRECT;
    }
    s->fd = open(f->filename, flags | (bs->read_only ? O_RDONLY : O_RDWR));
    if (s->fd < 0 && !bs->read_only && bs->auto_read_only &&
        (errno == EACCES || errno == EROFS ||
                              errno == EPERM)) {
        s->fd = open(f->filename, flags | O_RDONLY);
        if (s->fd >= 0) {
            bs->read_only = true;
        }
    }
    if (s->fd < 0) {
        if (errno == EINVAL && bs->cache_direct) {
            error_setg(errp, "Could not open '%s': filesystem does not "
                       "support O_DIRECT", f->filename);
            return false;
        }
        error_setg_errno(errp, errno, "Could not open '%s'", f->filename);
        return false;
    }
    if (fstat(s->fd, &st) != 0) {
        error_setg_errno(errp, errno, "Could not stat '%s'", f->filename);
        goto fail;
    }
    s->is_blockdev = S_ISBLK(st.st_mode);
    if (host_device && !s->is_blockdev) {
        /* (character devices are not supported, but QEMU's message
         * names them) */
        error_setg(errp, "'host_device' driver requires '%s' to be either "
                   "a character or block device", f->filename);
        goto fail;
    }
    if (!S_ISREG(st.st_mode) && !s->is_blockdev) {
        error_setg(errp, "'file' driver requires '%s' to be a regular file",
                   f->filename);
        goto fail;
    }
    if (fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) & ~O_NONBLOCK) < 0) {
        error_setg_errno(errp, errno, "Could not open '%s'", f->filename);
        goto fail;
    }

    if (locking != ON_OFF_AUTO_OFF) {
        unsigned perm = 1u << PERM_CONSISTENT_READ;
        unsigned shared = (1u << PERM_COUNT) - 1;
        Error *lerr = NULL;

        if (!bs->read_only) {
            perm |= 1u << PERM_WRITE;
            shared &= ~((1u << PERM_WRITE) | (1u << PERM_RESIZE));
        }
        if (bs->force_share) {
            shared = (1u << PERM_COUNT) - 1;
        }
        ret = file_lock(s->fd, perm, shared, f->filename, &lerr);
        if (ret == -EAGAIN) {
            error_propagate(errp, lerr);
            goto fail;
        }
        error_free(lerr);
        s->locked = ret == 0;
        if (ret < 0 && locking == ON_OFF_AUTO_ON) {
            error_setg_errno(errp, -ret, "Failed to lock '%s' (locking=on)",
                             f->filename);
            goto fail;
        }
        /* locking=auto on a filesystem without OFD locks: go on. */
    }

    if (bs->cache_direct) {
        file_probe_alignment(bs, s);
    } else {
        s->mem_align = 1;
    }
    bs->aio_inline = file_in_memory(s->fd);
    file_probe_caps(bs, s);
    if (f->has_aio && f->aio != BLOCKDEV_AIO_OPTIONS_THREADS) {
        log_debug("%s: aio=%s runs on the thread pool", f->filename,
                  BlockdevAioOptions_str(f->aio));
    }
    return true;

fail:
    close(s->fd);
    s->fd = -1;
    return false;
}

static void file_query_image(BlockNode *bs, ImageInfo *info)
{
    FileState *s = bs->opaque;
    struct stat st;

    if (fstat(s->fd, &st) == 0) {
        info->has_actual_size = true;
        info->actual_size = (int64_t)st.st_blocks * 512;
    }
}

/* ---- creating a file (blockdev-create) ------------------------------- */

#define FILE_ZERO_CHUNK (1024 * 1024)

static bool file_create_cancelled(BlockCreateProgress *pr)
{
    return pr != NULL && __atomic_load_n(&pr->cancel, __ATOMIC_ACQUIRE);
}

static void file_create_count(BlockCreateProgress *pr, uint64_t bytes)
{
    if (pr != NULL) {
        __atomic_add_fetch(&pr->done, bytes, __ATOMIC_RELAXED);
    }
}

/* Allocate [offset, offset+bytes) of fd (QEMU's raw_regular_truncate
 * for the grown part): falloc reserves blocks, full writes zeroes. */
static int file_fd_preallocate(int fd, uint64_t offset, uint64_t bytes,
                               PreallocMode mode, BlockCreateProgress *pr)
{
    CLEANUP_FREE void *zero = NULL;

    if (bytes == 0 || mode == PREALLOC_MODE_OFF) {
        return 0;
    }
    if (mode == PREALLOC_MODE_FALLOC) {
        while (fallocate(fd, 0, (off_t)offset, (off_t)bytes) != 0) {
            if (errno != EINTR) {
                return errno == EOPNOTSUPP ? -ENOTSUP : -errno;
            }
        }
        file_create_count(pr, bytes);
        return 0;
    }
    if (mode != PREALLOC_MODE_FULL) {
        return -ENOTSUP;
    }
    zero = xcalloc(1, FILE_ZERO_CHUNK);
    while (bytes > 0) {
        size_t n = (size_t)MIN(bytes, (uint64_t)FILE_ZERO_CHUNK);
        ssize_t r;

        if (file_create_cancelled(pr)) {
            return -ECANCELED;
        }
        r = pwrite(fd, zero, n, (off_t)offset);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        offset += (uint64_t)r;
        bytes -= (uint64_t)r;
        file_create_count(pr, (uint64_t)r);
    }
    return 0;
}

int blk_file_preallocate(BlockNode *bs, uint64_t offset, uint64_t bytes,
                         PreallocMode mode, BlockCreateProgress *pr)
{
    FileState *s;
    uint64_t size;
    int ret;

    if (bs->drv != &blk_drv_file) {
        return -ENODEV;
    }
    s = bs->opaque;
    if (s->is_blockdev) {
        return -ENODEV;
    }
    ret = file_fd_preallocate(s->fd, offset, bytes, mode, pr);
    if (ret < 0) {
        return ret;
    }
    ret = file_size_now(s, &size);
    if (ret == 0) {
        __atomic_store_n(&bs->total_size, (int64_t)size, __ATOMIC_RELEASE);
    }
    return ret;
}

/* Best effort, as QEMU: FS_NOCOW_FL on btrfs, an extent size hint on
 * XFS (file systems without them are not an error). */
static void file_create_hints(int fd, const BlockdevCreateOptionsFile *o)
{
    if (o->has_nocow && o->nocow) {
        int attr;

        if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
            attr |= FS_NOCOW_FL;
            (void)ioctl(fd, FS_IOC_SETFLAGS, &attr);
        }
    }
    {
        struct fsxattr attr;
        uint64_t hint = o->has_extent_size_hint ? o->extent_size_hint
                                                : 1024 * 1024;

        if (hint != 0 && hint <= UINT32_MAX &&
            ioctl(fd, FS_IOC_FSGETXATTR, &attr) == 0) {
            attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
            attr.fsx_extsize = (uint32_t)hint;
            (void)ioctl(fd, FS_IOC_FSSETXATTR, &attr);
        }
    }
}

bool blk_file_create(const BlockdevCreateOptionsFile *o,
                     BlockCreateProgress *pr, Error **errp)
{
    PreallocMode mode = o->has_preallocation ? o->preallocation
                                             : PREALLOC_MODE_OFF;
    CLEANUP_CLOSE int fd = -1;
    struct stat st;
    int ret;

    if (mode != PREALLOC_MODE_OFF && mode != PREALLOC_MODE_FALLOC &&
        mode != PREALLOC_MODE_FULL) {
        error_setg(errp, "Unsupported preallocation mode: %s",
                   PreallocMode_str(mode));
        return false;
    }
    if (o->size > INT64_MAX) {
        error_setg(errp, "Image size cannot be larger than %lld bytes",
                   (long long)INT64_MAX);
        return false;
    }
    fd = open(o->filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not create '%s'", o->filename);
        return false;
    }
    file_create_hints(fd, o);
    /* Write and resize, sharing all but resize (QEMU's raw_co_create):
     * a user that does not share writes (a writable blockd or QEMU
     * node) or holds resize fails us, as it fails QEMU. */
    ret = file_lock(fd, (1u << PERM_WRITE) | (1u << PERM_RESIZE),
                    (1u << PERM_CONSISTENT_READ) | (1u << PERM_WRITE) |
                    (1u << PERM_WRITE_UNCHANGED),
                    o->filename, errp);
    if (ret == -EAGAIN) {
        return false;
    }
    if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* A device keeps its size: nothing to clear or grow. */
        return true;
    }
    if (ftruncate(fd, 0) != 0) {
        error_setg_errno(errp, errno, "Could not clear '%s'", o->filename);
        return false;
    }
    if (pr != NULL) {
        __atomic_store_n(&pr->total, mode == PREALLOC_MODE_OFF ? 0 : o->size,
                         __ATOMIC_RELAXED);
    }
    ret = file_fd_preallocate(fd, 0, o->size, mode, pr);
    if (ret == -ECANCELED) {
        error_setg(errp, "Operation canceled");
        return false;
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not preallocate new data");
        return false;
    }
    if (ftruncate(fd, (off_t)o->size) != 0) {
        error_setg_errno(errp, errno, "Could not resize file");
        return false;
    }
    return true;
}

const BlockDriver blk_drv_file = {
    .format_name = "file",
    .iothread_ok = true,
    .instance_size = sizeof(FileState),
    .is_protocol = true,
    .open = file_open,
    .close = file_close,
    .get_length = file_get_length,
    .pread = file_pread,
    .pwrite = file_pwrite,
    .pwrite_zeroes = file_pwrite_zeroes,
    .pdiscard = file_pdiscard,
    .flush = file_flush,
    .block_status = file_block_status,
    .truncate = file_truncate,
    .reopen = file_reopen,
    .query_image = file_query_image,
    .get_caps = file_get_caps,
    .prefetch = file_prefetch,
    .start_writeback = file_start_writeback,
    .splice_read = file_splice_read,
    .copy_range_to = file_copy_range_to,
};

/* host_device: the same driver under QEMU's name for block devices. */
const BlockDriver blk_drv_host_device = {
    .format_name = "host_device",
    .iothread_ok = true,
    .instance_size = sizeof(FileState),
    .is_protocol = true,
    .open = file_open,
    .close = file_close,
    .get_length = file_get_length,
    .pread = file_pread,
    .pwrite = file_pwrite,
    .pwrite_zeroes = file_pwrite_zeroes,
    .pdiscard = file_pdiscard,
    .flush = file_flush,
    .block_status = file_block_status,
    .truncate = file_truncate,
    .reopen = file_reopen,
    .query_image = file_query_image,
    .get_caps = file_get_caps,
    .prefetch = file_prefetch,
    .start_writeback = file_start_writeback,
    .splice_read = file_splice_read,
    .copy_range_to = file_copy_range_to,
};
