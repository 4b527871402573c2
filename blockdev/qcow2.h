/* qcow2.h - the qcow2 format driver (internal to blockdev/).
 *
 * State of one open image.  All metadata (L1 copy, reftable copy, the
 * L2 and refcount block caches, the list of pending frees, the scratch
 * buffers) is protected by lock; data I/O to clusters that are already
 * allocated in place runs outside it.
 *
 * Crash safety (qcow2.txt, "Host cluster management"): the order of
 * writes to the image file is
 *
 *     refcount blocks / reftable entries   (new clusters counted)
 *         -- flush --
 *     L2 tables                            (new references)
 *         -- flush --
 *     refcount decrements of freed clusters (pending_frees)
 *
 * and a new L2 table is written and flushed before the L1 entry that
 * points to it.  A crash at any instant leaves at worst leaked clusters.
 */
#ifndef BLOCKD_BLOCKDEV_QCOW2_H
#define BLOCKD_BLOCKDEV_QCOW2_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "blockdev/block.h"
#include "blockdev/qcow2-meta.h"



/* Default cache sizes: enough L2 for 256 GiB of 64 KiB clusters. */
#define QCOW2_DEFAULT_L2_CACHE (32u * 1024 * 1024)
#define QCOW2_DEFAULT_RB_CACHE (4u * 1024 * 1024)

typedef struct Qcow2Cache Qcow2Cache;
typedef struct BDRVQcow2 BDRVQcow2;

/* Take and release BDRVQcow2.lock (qcow2.c); every holder goes through
 * these, which keep meta_seq odd while it is held. */
void qcow2_lock(BDRVQcow2 *s);
void qcow2_unlock(BDRVQcow2 *s);

/* A write-back cache of cluster-sized tables (L2 or refcount blocks),
 * keyed by host offset.  Callers hold s->lock.  Table pointers are valid
 * until the next call on the same cache. */
Qcow2Cache *qcow2_cache_new(BDRVQcow2 *s, unsigned nb_entries, bool is_l2);
void qcow2_cache_free(Qcow2Cache *c);
/* Get the table at offset, reading it if absent (read=true) or zeroing
 * it (read=false, for a freshly allocated table).  0 or -errno. */
int qcow2_cache_get(Qcow2Cache *c, uint64_t offset, bool read,
                    void **table);
/* The table at offset if it is cached (counted as a use), else NULL;
 * never reads or evicts.  The data path's fast lookup, also without
 * the lock (then the answer may be stale or wrong, and the caller's
 * meta_seq check says so; what it reads stays inside the cache). */
void *qcow2_cache_peek(Qcow2Cache *c, uint64_t offset);
void qcow2_cache_mark_dirty(Qcow2Cache *c, const void *table);
/* Write every dirty table (no flush of the file).  0 or -errno. */
int qcow2_cache_flush(Qcow2Cache *c);
/* Drop a table (its cluster was freed) without writing it. */
void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset);

typedef struct Qcow2Free {
    uint64_t offset;        /* host byte offset */
    uint64_t bytes;         /* clusters covered: [offset, offset+bytes) */
    uint64_t epoch;         /* bs->splice_epoch when freed */
} Qcow2Free;

struct BDRVQcow2 {
    pthread_mutex_t lock;       /* taken with qcow2_lock() (qcow2.c) */
    unsigned lock_waiters;      /* threads blocked on lock (atomic) */
    unsigned lock_gen;          /* bumped by every qcow2_lock() (atomic) */
    unsigned meta_seq;          /* odd while lock is held (atomic; see
                                 * above) */
    BlockNode *bs;
    Qcow2Header h;
    uint64_t size;              /* virtual size, bytes */
    uint64_t *l1;               /* host-endian copy of the L1 in use;
                                 * replaced (grown) before l1_size */
    uint32_t l1_size;           /* entries */
    uint64_t **l1_old;          /* L1 copies a resize replaced: lock-free
                                 * readers may still look at them; freed
                                 * at close */
    size_t nb_l1_old;
    uint64_t l1_offset;         /* host offset of that L1 */
    uint64_t *reftable;         /* host-endian copy */
    uint32_t reftable_size;     /* entries */
    Qcow2Cache *l2_cache;
    Qcow2Cache *rb_cache;
    uint64_t free_hint;         /* cluster index: lowest maybe-free */
    uint64_t alloc_end;         /* cluster index past the highest one we
                                 * allocated (maybe not written yet) */
    bool refs_unsynced;         /* refcount writes not yet flushed */
    unsigned inflight;          /* requests doing data I/O outside the
                                 * lock (atomic) */
    bool read_only;
    bool corrupt;               /* marked corrupt: no more writes */
    bool pass_discard;          /* discard=unmap: punch freed clusters */

    Qcow2Free *pending;         /* frees waiting for the next L2 flush */
    size_t nb_pending, cap_pending;

    Qcow2Snapshot *snapshots;   /* h.nb_snapshots entries */
    size_t snapshots_len;       /* bytes of the table */
    char *snapshot_view;        /* opened at this snapshot (id), or NULL */

    uint8_t *cow_buf;           /* one cluster, under lock */
    uint8_t *cbuf;              /* compressed input, 2 clusters */
    uint8_t *dbuf;              /* decompressed cluster */
    uint64_t dbuf_host;         /* compressed offset held in dbuf; 0 none */
    void *zstream;              /* z_stream, lazily created */
    void *zstd_dctx;            /* ZSTD_DCtx, lazily created */

    /* The bitmap directory as it is on disk (h.nb_bitmaps entries),
     * NULL when the image has no valid bitmaps extension; loop thread
     * (qcow2-bitmap.c). */
    Qcow2BitmapEntry *bm;
};

/* qcow2.c, for qcow2-bitmap.c; s->lock held (or the node not shared
 * yet, at open). */
int qcow2_alloc(BDRVQcow2 *s, uint64_t n, uint64_t *off);
/* Drop one reference of every cluster [off, off+bytes) touches. */
int qcow2_unref(BDRVQcow2 *s, uint64_t off, uint64_t bytes);
/* Write and flush all metadata in the safe order (refcounts first). */
int qcow2_flush_meta(BDRVQcow2 *s);

/* qcow2-bitmap.c: persistent dirty bitmaps (qcow2.txt "Bitmaps
 * extension").  Load at open (after the tables; creates the node's
 * DirtyBitmaps and, writable, marks them in use in the file); store at
 * close (writable; s->lock held); the BlockDriver callbacks; the
 * format-specific info (NULL without bitmaps; caller owns it). */
bool qcow2_bitmaps_load(BDRVQcow2 *s, uint64_t file_size, Error **errp);
void qcow2_bitmaps_store(BDRVQcow2 *s);
void qcow2_bitmaps_free(BDRVQcow2 *s);
bool qcow2_bitmap_can_store(BlockNode *bs, const char *name,
                            uint32_t granularity, Error **errp);
bool qcow2_bitmap_remove_persistent(BlockNode *bs, const char *name,
                                    Error **errp);
Qcow2BitmapInfoList *qcow2_bitmaps_info(BDRVQcow2 *s);
/* An inconsistent bitmap is kept in the image as it is, sized for the
 * old length: refuse to resize until it is removed (QEMU's rule). */
bool qcow2_bitmaps_can_resize(BlockNode *bs, Error **errp);

#endif
