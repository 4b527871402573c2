/* bitmap.h - dirty bitmaps: which parts of a node were written.
 *
 * Two levels:
 *
 *   HBitmap      a sparse set of granules over [0, size) bytes, one bit
 *                per `granularity` bytes (a power of two, 512 B .. 2 GiB).
 *                Pure data, no locking, no node: tests, the qcow2
 *                persistence code and the fuzzers use it directly.
 *                Sparse: a mostly clean 16 TiB bitmap at 64 KiB costs
 *                little (pages of bits are allocated when a bit in them is
 *                first set; a full page may be replaced by a marker).
 *
 *   DirtyBitmap  a named HBitmap on a BlockNode, with QEMU's state:
 *                recording (enabled), persistent, inconsistent, busy.
 *                Every write, write-zeroes and discard that reaches the
 *                node (by any path: NBD, a job, a qcow2 parent writing
 *                its file child) marks the node's recording bitmaps
 *                through blk_dirty_mark(), called by blockdev/io.c.  A
 *                write through an overlay does not mark the backing node
 *                (it never reaches it).
 *
 * Threads: bitmaps are created, removed, enabled, merged and queried on
 * the loop thread (QMP); blk_dirty_mark() runs on any thread (workers
 * write).  The node's bitmap list and every HBitmap on it are guarded by
 * bs's bitmap lock; blk_dirty_bitmap_lock()/unlock() take it for readers
 * on other threads (an export answering block status on a worker, the
 * qcow2 driver storing bitmaps at close).  A node without bitmaps pays
 * one relaxed atomic load per write.
 *
 * Persistence lives in the format driver (qcow2): it creates the
 * bitmaps it finds at open with blk_dirty_bitmap_create() and fills
 * them with hbm_deserialize(), and stores the persistent ones when the
 * node closes or is inactivated (see the BlockDriver bitmap callbacks in
 * block.h).
 */
#ifndef BLOCKD_BLOCKDEV_BITMAP_H
#define BLOCKD_BLOCKDEV_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

typedef struct BlockNode BlockNode;
typedef struct HBitmap HBitmap;
typedef struct DirtyBitmap DirtyBitmap;

#define BITMAP_GRANULARITY_MIN 512u
#define BITMAP_GRANULARITY_MAX (2u * 1024 * 1024 * 1024)  /* 2 GiB */
#define BITMAP_DEFAULT_GRANULARITY (64 * 1024)
#define BITMAP_NAME_MAX 1023     /* bytes, without the NUL (qcow2's limit) */

/* ---- HBitmap: the bits ------------------------------------------------
 *
 * Offsets and lengths are bytes.  Setting rounds the range out to whole
 * granules (a byte written dirties its granule); resetting rounds it in
 * (only granules wholly inside the range become clean), so neither ever
 * claims a written byte is clean.  Ranges are clipped to [0, size). */

HBitmap *hbm_new(uint64_t size, uint32_t granularity);
void hbm_free(HBitmap *hb);
uint64_t hbm_size(const HBitmap *hb);
uint32_t hbm_granularity(const HBitmap *hb);
void hbm_set(HBitmap *hb, uint64_t offset, uint64_t bytes);
void hbm_reset(HBitmap *hb, uint64_t offset, uint64_t bytes);
void hbm_set_all(HBitmap *hb);
void hbm_reset_all(HBitmap *hb);
bool hbm_get(const HBitmap *hb, uint64_t offset);
/* Dirty bytes: dirty granules times the granularity, the last granule
 * clipped to size (QEMU's "count"). */
uint64_t hbm_count(const HBitmap *hb);
bool hbm_is_empty(const HBitmap *hb);
/* The extent starting at offset (< size): *dirty says whether it is
 * dirty; returns its length in bytes (>= 1), stopping at offset+bytes
 * (clipped to size).  The answer at a granule boundary never splits a
 * granule, except where offset or the end do. */
uint64_t hbm_extent(const HBitmap *hb, uint64_t offset, uint64_t bytes,
                    bool *dirty);
/* First dirty (or clean) byte offset in [offset, offset+bytes), or -1. */
int64_t hbm_next_dirty(const HBitmap *hb, uint64_t offset, uint64_t bytes);
int64_t hbm_next_clean(const HBitmap *hb, uint64_t offset, uint64_t bytes);
/* dst |= src.  Granularities may differ: each dirty granule of src
 * dirties every dst granule it touches.  Sizes must be equal (the
 * caller checks; returns false otherwise). */
bool hbm_merge(HBitmap *dst, const HBitmap *src);
/* Change the size: bits past the new end are dropped; a grown tail is
 * clean. */
void hbm_resize(HBitmap *hb, uint64_t size);
/* A copy (for merges, jobs and tests). */
HBitmap *hbm_copy(const HBitmap *hb);

/* Serialization, qcow2's bit order: granule i is bit (i % 8) of byte
 * i / 8.  Bytes for the granules [first, first + count); first is a
 * multiple of 8.  hbm_serialize_size() is the byte count for count
 * granules. */
size_t hbm_serialize_size(uint64_t count);
void hbm_serialize(const HBitmap *hb, uint64_t first, uint64_t count,
                   uint8_t *buf);
void hbm_deserialize(HBitmap *hb, uint64_t first, uint64_t count,
                     const uint8_t *buf);
/* Number of granules (bits). */
uint64_t hbm_granules(const HBitmap *hb);
/* Memory the bitmap holds, bytes (tests check sparseness). */
size_t hbm_memory(const HBitmap *hb);

/* ---- DirtyBitmap: named bitmaps on a node --------------------------- */

/* A new bitmap on bs, recording, not persistent (loop thread, or the
 * driver's open).  Fails when the name is empty, longer than
 * BITMAP_NAME_MAX, or already used on bs ("Bitmap already exists:
 * NAME"), or the granularity is not a power of two in range
 * ("Granularity must be power of 2 and at least 512", QEMU's words).
 * The size is the node's (during the driver's open, its get_length). */
DirtyBitmap *blk_dirty_bitmap_create(BlockNode *bs, const char *name,
                                     uint32_t granularity, Error **errp);
/* Remove bm from its node and free it (not its persistent copy: the
 * QMP handler asks the driver for that first). */
void blk_dirty_bitmap_release(DirtyBitmap *bm);
DirtyBitmap *blk_dirty_bitmap_find(BlockNode *bs, const char *name);
/* Iterate bs's bitmaps in creation order: NULL starts, NULL ends. */
DirtyBitmap *blk_dirty_bitmap_next(BlockNode *bs, DirtyBitmap *prev);
bool blk_node_has_dirty_bitmaps(BlockNode *bs);
/* Default granularity for a new bitmap on bs: qcow2's cluster size
 * clamped to [4 KiB, 64 KiB] (QEMU's rule), else 64 KiB. */
uint32_t blk_dirty_bitmap_default_granularity(BlockNode *bs);

const char *dirty_bitmap_name(const DirtyBitmap *bm);
BlockNode *dirty_bitmap_node(const DirtyBitmap *bm);
uint32_t dirty_bitmap_granularity(const DirtyBitmap *bm);
/* The bits; hold blk_dirty_bitmap_lock(node) when another thread may
 * mark them. */
HBitmap *dirty_bitmap_bits(DirtyBitmap *bm);

bool dirty_bitmap_enabled(const DirtyBitmap *bm);      /* "recording" */
void dirty_bitmap_set_enabled(DirtyBitmap *bm, bool enabled);
bool dirty_bitmap_persistent(const DirtyBitmap *bm);
void dirty_bitmap_set_persistent(DirtyBitmap *bm, bool persistent);
/* Found marked in-use in an image: listed, removable, nothing else. */
bool dirty_bitmap_inconsistent(const DirtyBitmap *bm);
void dirty_bitmap_set_inconsistent(DirtyBitmap *bm);
/* Busy: some user (an export, a job) reads it; it cannot be removed,
 * cleared, enabled, disabled or merged into.  Counted. */
bool dirty_bitmap_busy(const DirtyBitmap *bm);
void dirty_bitmap_set_busy(DirtyBitmap *bm, bool busy);

/* Mark [offset, offset+bytes) dirty in every recording bitmap of bs.
 * Any thread; blockdev/io.c calls it for each write, write-zeroes and
 * discard that reaches bs (after the driver ran, whatever it returned:
 * a failed write may have changed part of the range). */
void blk_dirty_mark(BlockNode *bs, uint64_t offset, uint64_t bytes);
/* The node grew or shrank: every bitmap follows. */
void blk_dirty_bitmaps_resize(BlockNode *bs, uint64_t size);
/* A protocol node grew by a write past its end (any thread): bitmaps
 * smaller than size grow to it, none shrinks (writers race). */
void blk_dirty_bitmaps_grow(BlockNode *bs, uint64_t size);
/* Free every bitmap of bs (node close, after the driver stored them). */
void blk_dirty_bitmaps_release_all(BlockNode *bs);

void blk_dirty_bitmap_lock(BlockNode *bs);
void blk_dirty_bitmap_unlock(BlockNode *bs);

/* ---- for QMP and exports (blockdev/qmp-bitmap.c, loop thread) ------- */

typedef struct BlockGraph BlockGraph;
typedef struct BlockDirtyInfoList BlockDirtyInfoList;

/* QEMU's bdrv_dirty_bitmap_check() flags: which states refuse a use. */
enum {
    BM_CHECK_BUSY = 1 << 0,          /* exported: "... is currently in use
                                      * by another operation ..." */
    BM_CHECK_RO = 1 << 1,            /* persistent on a read-only node */
    BM_CHECK_INCONSISTENT = 1 << 2,  /* found in-use in its image */
};
#define BM_CHECK_DEFAULT (BM_CHECK_BUSY | BM_CHECK_RO | BM_CHECK_INCONSISTENT)
#define BM_CHECK_ALLOW_RO (BM_CHECK_BUSY | BM_CHECK_INCONSISTENT)

/* block-dirty-bitmap-remove's checks and the removal of the stored
 * copy (qmp-bitmap.c): the bitmap, still in memory, for the caller to
 * release (blk_dirty_bitmap_release), or NULL with errp set. */
DirtyBitmap *blk_dirty_bitmap_remove_prepare(BlockGraph *g, const char *node,
                                             const char *name, Error **errp);

/* False with QEMU's message when bm is in a state flags refuse. */
bool dirty_bitmap_check(const DirtyBitmap *bm, unsigned flags, Error **errp);
/* The bitmap name on node, with QEMU's messages: "Node 'N' not found",
 * "Dirty bitmap 'B' not found". */
DirtyBitmap *blk_dirty_bitmap_lookup(BlockGraph *g, const char *node,
                                     const char *name, Error **errp);
/* query-named-block-nodes' dirty-bitmaps of bs (a new list). */
BlockDirtyInfoList *blk_dirty_bitmap_query(BlockNode *bs);

#endif
