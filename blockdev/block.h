/* block.h - the block layer: nodes, drivers, I/O.
 *
 * A BlockNode is one open driver instance with a unique node-name.
 * Format drivers (raw, qcow2) sit on a "file" child; qcow2 may have a
 * "backing" child.  Exports and parent nodes hold references.
 *
 *     export "disk" ──> [qcow2 "fmt0"] ──file──> [file "file0"]
 *                              │
 *                           backing
 *                              v
 *                       [qcow2 "base"] ──file──> [file "#block3"]
 *
 * Threads: the driver data-path callbacks (pread ... block_status) run on
 * worker threads, several at once for one node; a driver protects its
 * own metadata (qcow2 has a mutex).  open/close/truncate/query and the
 * graph functions run on the loop thread.
 *
 * Data path returns 0 or -errno, never allocates per request and never
 * takes an Error **: NBD only carries an errno.
 */
#ifndef BLOCKD_BLOCKDEV_BLOCK_H
#define BLOCKD_BLOCKDEV_BLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/daemon.h"
#include "daemon/worker.h"
#include "qapi-types.h"
#include "util/error.h"

typedef struct BlockNode BlockNode;
typedef struct BlockDriver BlockDriver;

/* Request flags (data path). */
enum {
    BLK_REQ_FUA = 1 << 0,        /* durable before completion */
    BLK_REQ_MAY_UNMAP = 1 << 1,  /* write_zeroes may punch a hole */
    BLK_REQ_NO_FALLBACK = 1 << 2,/* write_zeroes: fail -ENOTSUP unless fast */
};

/* Block status flags, as returned by block_status callbacks and
 * blk_block_status(). */
enum {
    BLK_STATUS_DATA = 1 << 0,      /* reads data (not a hole) */
    BLK_STATUS_ZERO = 1 << 1,      /* reads as zeroes */
    BLK_STATUS_ALLOCATED = 1 << 2, /* this layer answers (not backing) */
    BLK_STATUS_OFFSET_VALID = 1 << 3, /* *map holds the offset in *file */
};

struct BlockDriver {
    const char *format_name;     /* "file", "raw", "qcow2", "null-co" */
    size_t instance_size;        /* bytes of driver state (bs->opaque) */
    bool is_format;              /* opens a "file" child */
    bool supports_backing;

    /* Score how well buf (the first bytes of a file) matches the format:
     * 0 no, 100 certain.  Used for probing when no driver is given. */
    int (*probe)(const uint8_t *buf, size_t len, const char *filename);
    /* Open: bs->file / bs->backing are already set for format drivers
     * (backing: see supports_backing).  Sets bs->total_size-ready state. */
    bool (*open)(BlockNode *bs, const BlockdevOptions *opts, Error **errp);
    void (*close)(BlockNode *bs);

    int64_t (*get_length)(BlockNode *bs);
    int (*pread)(BlockNode *bs, uint64_t offset, uint64_t bytes, void *buf,
                 uint32_t flags);
    int (*pwrite)(BlockNode *bs, uint64_t offset, uint64_t bytes,
                  const void *buf, uint32_t flags);
    int (*pwrite_zeroes)(BlockNode *bs, uint64_t offset, uint64_t bytes,
                         uint32_t flags);
    int (*pdiscard)(BlockNode *bs, uint64_t offset, uint64_t bytes);
    int (*flush)(BlockNode *bs);
    /* Status of [offset, offset+bytes) in this layer only: returns
     * BLK_STATUS_* flags (>= 0) for the first *pnum bytes (1 <= *pnum <=
     * bytes), or -errno.  When the range is not allocated here and the
     * node has a backing child, return 0 (neither DATA nor ALLOCATED);
     * the generic layer then asks the backing node.  *map and *file may
     * be set with OFFSET_VALID for format drivers. */
    int (*block_status)(BlockNode *bs, uint64_t offset, uint64_t bytes,
                        uint64_t *pnum, uint64_t *map, BlockNode **file);
    /* Resize (loop thread). */
    bool (*truncate)(BlockNode *bs, uint64_t size, Error **errp);
    /* Fill the format-specific parts of the image info (loop thread). */
    void (*query_image)(BlockNode *bs, ImageInfo *info);
};

struct BlockNode {
    char *node_name;             /* unique; "#blockN" when auto-named */
    const BlockDriver *drv;
    void *opaque;                /* drv->instance_size bytes, zeroed */
    BlockNode *file;             /* "file" child or NULL */
    BlockNode *backing;          /* "backing" child or NULL */
    char *filename;              /* for messages and query; never NULL */
    bool read_only;
    bool monitor_owned;          /* created by blockdev-add at top level */
    unsigned refcnt;             /* graph + parents + exports + requests */
    uint32_t request_alignment;  /* bytes; 1, or 512/4096 with O_DIRECT */
    uint32_t max_transfer;       /* bytes per driver call; 0 = no limit */
    BlockdevDetectZeroesOptions detect_zeroes;
    BlockdevDiscardOptions discard;
    bool cache_direct, cache_no_flush;
    bool probed_raw;             /* format was probed as raw: guard sector 0 */
    /* Users that forbid deletion (exports, parents): a description each,
     * e.g. "export 'e0'"; see blk_node_add_user(). */
    void *users;
    /* Statistics, updated atomically from workers. */
    uint64_t rd_bytes, wr_bytes, rd_ops, wr_ops, flush_ops, discard_ops,
        zero_ops, failed_ops;
    void *dirty_bitmaps;         /* owned by blockdev/bitmap.c (later) */
};

/* ---- graph (loop thread) ------------------------------------------- */

BlockGraph *blk_graph_new(Daemon *d);
/* Close every node (exports must be gone). */
void blk_graph_free(BlockGraph *g);
BlockNode *blk_find_node(BlockGraph *g, const char *node_name);
/* Resolve a node-name, with QEMU's error for a miss:
 * "Cannot find device=%s nor node-name=%s" / "Failed to find node with
 * node-name='%s'". */
BlockNode *blk_lookup_node(BlockGraph *g, const char *node_name,
                           Error **errp);
/* Open a node graph from options (as blockdev-add). */
BlockNode *blk_open(BlockGraph *g, const BlockdevOptions *opts,
                    Error **errp);
void blk_ref(BlockNode *bs);
void blk_unref(BlockNode *bs);
/* Register a user that makes the node undeletable until removed;
 * write = the user needs write access (fails on read-only nodes). */
bool blk_node_add_user(BlockNode *bs, const char *user, bool write,
                       Error **errp);
void blk_node_remove_user(BlockNode *bs, const char *user);

/* ---- synchronous I/O (any thread; blocks) --------------------------- */

int64_t blk_getlength(BlockNode *bs);
int blk_pread(BlockNode *bs, uint64_t offset, uint64_t bytes, void *buf,
              uint32_t flags);
int blk_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
               const void *buf, uint32_t flags);
int blk_pwrite_zeroes(BlockNode *bs, uint64_t offset, uint64_t bytes,
                      uint32_t flags);
int blk_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes);
int blk_flush(BlockNode *bs);
/* Status over the whole backing chain: BLK_STATUS_DATA/ZERO for the
 * first *pnum bytes as a reader sees them (unallocated at the bottom of
 * the chain reads as ZERO, not DATA).  ALLOCATED says whether any layer
 * allocates it. */
int blk_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                     uint64_t *pnum);
/* Allocation depth of the first *pnum bytes: 0 = no layer allocates
 * them, 1 = bs itself, 2 = its backing node, ... (qemu:allocation-depth). */
int blk_allocation_depth(BlockNode *bs, uint64_t offset, uint64_t bytes,
                         uint64_t *pnum);

/* ---- asynchronous I/O (loop thread) -------------------------------- */

typedef enum BlockRequestType {
    BLK_OP_READ,
    BLK_OP_WRITE,
    BLK_OP_WRITE_ZEROES,
    BLK_OP_DISCARD,
    BLK_OP_FLUSH,
    BLK_OP_CACHE,                /* prefetch hint: a read into nowhere */
} BlockRequestType;

typedef struct BlockRequest BlockRequest;
struct BlockRequest {
    WorkerJob job;               /* private */
    BlockNode *bs;
    BlockRequestType type;
    uint32_t flags;              /* BLK_REQ_* */
    uint64_t offset, bytes;
    void *buf;                   /* READ/WRITE: bytes long, caller-owned */
    int ret;                     /* 0 or -errno, valid in cb */
    void (*cb)(BlockRequest *req);   /* loop thread */
    void *opaque;
};

/* Run req on the worker pool; req->cb runs on the loop thread when done.
 * The node is referenced for the duration. */
void blk_aio_submit(WorkerPool *pool, BlockRequest *req);

#endif
