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
 * own metadata (qcow2 has a mutex).  The graph (its node list, node
 * names, reservations, users) is only read and changed on the loop
 * thread.  open and truncate run on a worker when started with
 * blk_open_async() / blk_truncate_async() (QMP does), else on the loop
 * thread; close runs where the last reference goes; query on the loop
 * thread.  An open on a worker sees only a private copy of the graph
 * holding the nodes its options name, each referenced on the loop
 * thread before the open starts (see block.c); several opens may run
 * at once, each in its own stage.  Reference counts are atomic, so a worker may take and drop
 * references, but never the last one of a node in the graph.
 *
 * Data path returns 0 or -errno, never allocates per request and never
 * takes an Error **: NBD only carries an errno.
 */
#ifndef BLOCKD_BLOCKDEV_BLOCK_H
#define BLOCKD_BLOCKDEV_BLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "crypto/object.h"
#include "qapi-types.h"
#include "qmp/qmp.h"
#include "util/error.h"
#include "util/lathist.h"
#include "util/loop.h"
#include "util/worker.h"

typedef struct BlockNode BlockNode;
typedef struct BlockDriver BlockDriver;
typedef struct BlockRequest BlockRequest;

/* Request flags (data path). */
enum {
    BLK_REQ_FUA = 1 << 0,        /* durable before completion */
    BLK_REQ_MAY_UNMAP = 1 << 1,  /* write_zeroes may punch a hole */
    BLK_REQ_NO_FALLBACK = 1 << 2,/* write_zeroes: fail -ENOTSUP unless fast */
    /* READ into the pipe req->pipe_fd instead of req->buf, see
     * blk_splice_read(). */
    BLK_REQ_PIPE = 1 << 3,
    /* With BLK_REQ_PIPE: only when the whole range is data (no hole
     * the reader would rather learn about), else -ENOTSUP. */
    BLK_REQ_DATA_ONLY = 1 << 4,
    /* Set by the generic layer when it runs a BLK_REQ_PIPE read on the
     * loop thread: return -EAGAIN rather than wait (e.g. for a slow
     * hole search); the request then goes to the pool. */
    BLK_REQ_NOWAIT = 1 << 5,
    BLK_REQ_NO_HOOK = 1 << 6,    /* a job's own write: skip the node's
                                  * write hook (never reaches drivers) */
    /* With BLK_REQ_PIPE: the reader watches a BlockSplicePin until its
     * pages are no longer referenced; without it, a node that needs
     * pins (BlockCaps.splice_pin) answers -ENOTSUP. */
    BLK_REQ_PIN_OK = 1 << 8,
    /* blk_copy_range() of a bulk copy the caller flushes at its end (a
     * job): the driver may allocate the range first and start writing
     * it back at once, so the disk works while the copy goes on and
     * the final flush finds little left.  A hint: no effect on what
     * the range reads, nor on its durability before the flush. */
    BLK_REQ_STREAM = 1 << 9,
};

/* Block status flags, as returned by block_status callbacks and
 * blk_block_status(). */
enum {
    BLK_STATUS_DATA = 1 << 0,      /* reads data (not a hole) */
    BLK_STATUS_ZERO = 1 << 1,      /* reads as zeroes */
    BLK_STATUS_ALLOCATED = 1 << 2, /* this layer answers (not backing) */
    BLK_STATUS_OFFSET_VALID = 1 << 3, /* *map holds the offset in *file */
};

/* What a node does with each kind of request, as its driver and its
 * children make it (blk_get_caps()).  An export advertises exactly this
 * (NBD transmission flags).  false never makes a request fail: it says
 * the request is emulated or dropped, so a client should not count on
 * it.  Every write capability is false on a read-only node. */
typedef struct BlockCaps {
    /* BLK_REQ_FUA on write/write_zeroes makes that data durable before
     * the request completes (by a write through or a flush). */
    bool fua;
    /* write_zeroes works at all (possibly by writing zero buffers). */
    bool zero;
    /* write_zeroes with BLK_REQ_NO_FALLBACK zeroes without writing data
     * (a hole, a zero cluster, ZERO_RANGE) at least for some aligned
     * ranges; where it cannot, it fails -ENOTSUP at once. */
    bool fast_zero;
    /* discard releases storage; false: discards are dropped (the node
     * has discard=ignore, or nothing below can release space). */
    bool discard;
    /* a CACHE request (prefetch) makes later reads of the range
     * cheaper (page cache readahead), or there is nothing to fetch;
     * false: it would do nothing. */
    bool cache;
    /* Several users (NBD connections) of this node see each other's
     * completed writes, and a flush by one makes the writes completed
     * by all durable: there is no per-user state. */
    bool multi_conn;
    /* READ with BLK_REQ_PIPE moves the data into a pipe without copying
     * it through user space (page cache references: blk_splice_read). */
    bool splice_read;
    /* With splice_read: the node may give storage it freed to other
     * data (qcow2 reuses freed clusters), so a spliced read hands back
     * a BlockSplicePin that its reader must keep until no pipe or
     * socket references the spliced pages any more (see
     * BlockSplicePin).  A reader that cannot tell must not splice. */
    bool splice_pin;
} BlockCaps;

/* A spliced read of a node that reuses freed storage (BlockCaps.
 * splice_pin): the pipe, then the socket it is spliced into, hold
 * references to page cache pages of the node's file, and a write into
 * a page changes what those references read.  If the node freed the
 * storage and gave it to other data (another guest offset, metadata)
 * while a reply still held its pages, that reply would carry the new
 * data.  So storage the node frees while pins are taken is quarantined
 * (blk_splice_reusable()) until every pin taken before the free is
 * released.  node == NULL: nothing to release.  The node is referenced
 * while pinned. */
typedef struct BlockSplicePin {
    BlockNode *node;
    uint64_t epoch;              /* the node's splice_epoch when taken */
} BlockSplicePin;

struct BlockDriver {
    const char *format_name;     /* "file", "raw", "qcow2", "null-co" */
    size_t instance_size;        /* bytes of driver state (bs->opaque) */
    /* Opens a "file" child.  Its options (the BlockdevOptions union
     * member) begin with BlockdevOptionsGenericFormat's members, the
     * schema base of every format: blk_open_image() sets "file"
     * through that base (each format checks it with a static assert). */
    bool is_format;
    bool supports_backing;
    /* Protocol node whose size follows its storage (file): reads past
     * the end return zeroes and writes past the end grow it, as format
     * drivers above need (qcow2 appends clusters).  Other nodes refuse
     * requests past their end (see "Bounds" below). */
    bool is_protocol;
    /* A filter (QEMU's is_filter): its data is its file child's,
     * unchanged.  blockdev-mirror's replaces may name a node below it
     * (QEMU's bdrv_recurse_can_replace).  A filter without block_status
     * is transparent there too: block status and allocation depth are
     * its file child's (the filter is no layer of its own). */
    bool is_filter;
    /* Its request callbacks may run from any thread at once and it has
     * no aio_submit: a node of it (over children that are too) takes
     * requests from an I/O thread's loop (blk_node_iothread_ok). */
    bool iothread_ok;

    /* Score how well buf (the first bytes of a file) matches the format:
     * 0 no, 100 certain.  Used for probing when no driver is given. */
    int (*probe)(const uint8_t *buf, size_t len, const char *filename);
    /* Open from opts, the driver's own member of the BlockdevOptions
     * union (BlockdevOptionsFile for file and host_device,
     * BlockdevOptionsRaw for raw, ...; bs->drv tells which when two
     * drivers share a type); the common options are already in bs
     * (read_only, auto_read_only, force_share, discard, cache_*).  A
     * format opens its children itself with blk_open_child(), which
     * stores them in bs->file / bs->backing.  Leaves the node ready for
     * get_length.  On failure the generic layer drops the children.
     * May run on a worker (blk_open_async): blocking I/O is fine, the
     * loop only through loop_post(). */
    bool (*open)(BlockNode *bs, const void *opts, Error **errp);
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
    /* What the driver does with requests (see BlockCaps), given its
     * children's blk_get_caps(); caps is zeroed before the call and the
     * generic layer then removes what the node's options rule out
     * (read-only, discard=ignore).  NULL: write_zeroes (the generic
     * fallback) and nothing else.  Any thread; must not block. */
    void (*get_caps)(BlockNode *bs, BlockCaps *caps);
    /* Prefetch [offset, offset+bytes) into a cache later reads hit
     * (CACHE requests): 0 or -errno.  NULL: CACHE does nothing. */
    int (*prefetch)(BlockNode *bs, uint64_t offset, uint64_t bytes);
    /* Start writing back what the node holds in a cache (page cache)
     * without waiting for it: see blk_start_writeback().  NULL: the
     * request goes on to bs->file, if any. */
    void (*start_writeback)(BlockNode *bs);
    /* Put [offset, offset+bytes) into the pipe pipe_fd (its write end,
     * non-blocking, with room for every byte) by splice(2): 0 when all
     * of it is there, -ENOTSUP when the driver cannot or, with
     * BLK_REQ_DATA_ONLY in flags, the range is not all data (the pipe
     * untouched), other -errno with part of the range possibly in the
     * pipe.  NULL: never (get_caps says splice_read only when it can). */
    /* A driver with BlockCaps.splice_pin takes *pin (blk_splice_pin_take,
     * under the lock that orders it with its frees) before it looks up
     * where the data lives, and leaves it taken whenever the pipe may
     * hold some of the range (success or failure); -ENOTSUP leaves no
     * pin.  Others never touch *pin. */
    int (*splice_read)(BlockNode *bs, uint64_t offset, uint64_t bytes,
                       int pipe_fd, uint32_t flags, BlockSplicePin *pin);
    /* Write [offset, offset+bytes) of bs with the bytes at src_off of
     * src, a protocol node (blk_copy_range() found them there), without
     * passing them through user space: copy_file_range(2) between two
     * files, through raw's window.  0, -ENOTSUP when this pair cannot
     * (src of another driver, another file system; part of the range
     * may be written: the caller reads and writes all of it instead),
     * other -errno.  Worker thread.  NULL: never. */
    int (*copy_range_to)(BlockNode *bs, uint64_t offset, uint64_t bytes,
                         BlockNode *src, uint64_t src_off, uint32_t flags);
    /* Asynchronous drivers (nbd): take req (READ, WRITE, WRITE_ZEROES,
     * DISCARD, FLUSH or CACHE) and complete it later, from any thread,
     * with blk_aio_complete(req, ret) -- exactly once, possibly inside
     * this call (req->cb still runs later, on the loop).
     * blk_aio_submit() calls it on the loop thread after the generic
     * checks (see "asynchronous I/O" below), instead of running the
     * synchronous callback on the pool, so no worker waits for the
     * device.  Must not block.  NULL: the pool runs the synchronous
     * callbacks (which the driver must still provide: block status,
     * qcow2 on top and the command line use them). */
    void (*aio_submit)(BlockNode *bs, BlockRequest *req);
    /* Fail every request queued or in flight with -EIO now, without
     * waiting for a remote server (blk_node_abort_requests(): the
     * node's last user goes hard).  Completions still come through
     * blk_aio_complete() / the synchronous callbacks' returns, but
     * soon, and no buffer is touched after them.  The node stays
     * usable.  Loop thread; must not block.  NULL: requests end on
     * their own. */
    void (*abort_requests)(BlockNode *bs);
    /* Persistent dirty bitmaps (blockdev/bitmap.h).  A driver that can
     * store them loads them in open (blk_dirty_bitmap_create, then the
     * bits) and stores the persistent ones in close, before its
     * metadata goes.  NULL: the node cannot store bitmaps, and
     * block-dirty-bitmap-add with persistent=true fails.
     * bitmap_can_store: may bs store one more bitmap called name with
     * this granularity (image version, name length, count, space)?
     * bitmap_remove_persistent: delete the stored copy of name from the
     * image now (block-dirty-bitmap-remove), true when it was not
     * stored.  Both on the loop thread. */
    bool (*bitmap_can_store)(BlockNode *bs, const char *name,
                             uint32_t granularity, Error **errp);
    bool (*bitmap_remove_persistent)(BlockNode *bs, const char *name,
                                     Error **errp);
    /* Record name (NULL: none) with format fmt (NULL: none) as the
     * image's backing file (loop thread; block-stream, block-commit).
     * NULL: the format cannot change its backing file. */
    bool (*change_backing_file)(BlockNode *bs, const char *name,
                                const char *fmt, Error **errp);
    /* Switch the open node to read-only or read-write (loop thread;
     * bs->read_only still has the old value; reads may be in flight,
     * no writes).  blk_reopen() switches the file child first when
     * going read-write and after when going read-only.  NULL: the
     * node cannot switch. */
    bool (*reopen)(BlockNode *bs, bool read_only, Error **errp);
};

struct BlockNode {
    char *node_name;             /* unique; "#blockN" when auto-named */
    const BlockDriver *drv;
    void *opaque;                /* drv->instance_size bytes, zeroed */
    BlockNode *file;             /* "file" child or NULL */
    BlockNode *backing;          /* "backing" child or NULL */
    BlockNode *target;           /* "target" child (copy-before-write's:
                                  * where old data goes) or NULL */
    char *filename;              /* for messages and query; never NULL */
    bool read_only;
    bool auto_read_only;         /* may fall back to read-only on EACCES */
    bool force_share;            /* share every permission (read-only) */
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

    /* Added by the block layer (blockdev/block.c). */
    BlockGraph *graph;           /* the graph the node lives in (set
                                  * before drv->open runs) */
    int64_t total_size;          /* bytes; cached, updated by truncate and
                                  * by writes that grow a protocol node
                                  * (atomic) */
    bool write_perm;             /* opened writable */
    bool opened;                 /* drv->open succeeded: close runs */
    bool aio_inline;             /* requests never wait for a device
                                  * (null-co without latency, a file in
                                  * memory, formats over those): blk_aio_submit
                                  * runs small ones on the loop thread,
                                  * skipping the pool */
    char *driver_filename;       /* "json:" style or plain; may be NULL */
    /* While this node opens (drv->open runs): the node that is opening
     * it as a child or backing file, NULL for a top node; NULL once
     * open.  The open chain walked by the backing loop check. */
    BlockNode *opening_parent;
    uint64_t wr_highest_offset;  /* bytes, for query-blockstats */
    uint64_t discard_bytes;
    /* Per kind of request (the schema's BlockStatsOp; a CACHE hint is
     * not counted), atomic, from any thread: the latencies of those
     * that succeeded (their sum is the total time), those running now
     * (in the driver: not those waiting for a worker), and those
     * refused before they ran (range, read-only). */
    LatHist lat[BLOCK_STATS_OP__MAX];
    uint64_t in_flight[BLOCK_STATS_OP__MAX];
    uint64_t invalid_ops[BLOCK_STATS_OP__MAX];
    uint64_t failed_rd_ops, failed_wr_ops, failed_flush_ops,
        failed_discard_ops;      /* failed_ops counts them all */
    pthread_mutex_t rmw_lock;    /* serialises read-modify-write cycles
                                  * of unaligned requests (O_DIRECT) */
    /* Dirty bitmaps (blockdev/bitmap.h).  The list and every bitmap's
     * bits are guarded by bitmap_lock; bitmap_count (atomic) lets a
     * write to a node without bitmaps skip the lock. */
    pthread_mutex_t bitmap_lock;
    struct DirtyBitmap *bitmaps; /* creation order; NULL = none */
    unsigned bitmap_count;       /* bitmaps on the list */
    /* Isolation (under pool_lock: the main loop and I/O threads
     * submit): requests of this node on the worker pool, and those
     * waiting for a share (blk_aio_submit). */
    pthread_mutex_t pool_lock;
    /* Spliced reads that may still reference this node's pages
     * (BlockSplicePin): the epoch (under the driver's lock), the pins
     * by epoch parity (atomic), and whether a pin was lost (atomic). */
    uint64_t splice_epoch;
    unsigned splice_pins[2];
    bool splice_lost;
    unsigned pool_inflight;
    BlockRequest *pool_wait_head, *pool_wait_tail;
    /* The job working on this node (blockdev/job.h), NULL if none: a
     * node takes part in one job at a time (loop thread). */
    struct Job *job;
    /* Exports whose clients run on iothreads and reach this node (it
     * or a parent is exported): a job refuses it (main loop). */
    unsigned iothread_users;
    /* Copy-before-write (a backup's hook): when set, every write,
     * write-zeroes and discard that reaches this node first calls
     * before_write->fn on the worker running it, which copies the old
     * data it must keep; a failure fails the write.  Set and cleared on
     * the loop thread under hook_lock; a worker holds hook_users while
     * it calls the hook (see blk_write_hook_*() in io.c). */
    pthread_mutex_t hook_lock;
    struct BlockWriteHook *before_write;
    /* blk_reopen() made this read-only node read-write (loop thread):
     * blk_reopen(bs, true) switches it back. */
    bool reopened_rw;
};

/* A hook on a node's writes (write, write-zeroes, discard): backup's
 * copy-before-write, stream's serialisation, mirror's dirty tracking
 * and write-blocking copy.  Either callback may be NULL.
 *
 * fn runs on a worker before the write reaches the driver: 0 or -errno
 * (the write then fails with it).
 *
 * after runs once the driver ran the request (ret: its result), on the
 * thread that ran it: buf is a WRITE's data, NULL for write-zeroes
 * (discard false) and discard (discard true); before_ran says fn ran
 * for this same request on this thread (false for a write that started
 * before the hook was installed, and for an asynchronous driver's
 * completion, which may run on its own thread and must not block).
 * Returns the request's result (ret, or an error of its own).
 *
 * users counts requests between fn and after (or inside after), under
 * the node's hook_lock; the owner frees the hook after
 * blk_write_hook_remove() once users is 0 (done is posted to the loop
 * then). */
typedef struct BlockWriteHook {
    int (*fn)(struct BlockWriteHook *hook, BlockNode *bs, uint64_t offset,
              uint64_t bytes);
    int (*after)(struct BlockWriteHook *hook, BlockNode *bs, uint64_t offset,
                 uint64_t bytes, const void *buf, bool discard, int ret,
                 bool before_ran);
    void *opaque;
    unsigned users;              /* under hook_lock */
    bool removed;                /* under hook_lock */
    void (*done)(struct BlockWriteHook *hook);   /* loop, after remove */
} BlockWriteHook;

/* Install hook on bs (loop thread; bs must have none). */
void blk_write_hook_add(BlockNode *bs, BlockWriteHook *hook);
/* Remove it (loop thread): no new write calls it; hook->done runs on
 * the loop once no worker is inside fn (maybe before this returns). */
void blk_write_hook_remove(BlockNode *bs, BlockWriteHook *hook);

/* The built-in drivers (one static table in block.c).  A driver file
 * defines its const BlockDriver under this name; drivers that live
 * above this layer register with blk_graph_register_driver(). */
extern const BlockDriver blk_drv_file;
extern const BlockDriver blk_drv_host_device;
extern const BlockDriver blk_drv_raw;
extern const BlockDriver blk_drv_null_co;
extern const BlockDriver blk_drv_null_aio;
extern const BlockDriver blk_drv_qcow2;   /* blockdev/qcow2.c */
extern const BlockDriver blk_drv_blkdebug; /* test tool: blkdebug.c */
extern const BlockDriver blk_drv_copy_before_write; /* cbw.c */
extern const BlockDriver blk_drv_snapshot_access;   /* cbw.c */
extern const BlockDriver blk_drv_rbd;     /* module block-rbd.so: rbd.c */

/* Drivers built as modules (blockdev/module.c): the module for driver
 * name is loaded the first time it is asked for (any thread).  1 and
 * *drv set when loaded, 0 when no module has that name, -1 with errp set
 * when the module could not be loaded (missing, from another build). */
int blk_module_load(const char *name, const BlockDriver **drv,
                    Error **errp);
/* A module also exports blockd_module_stamp (util/module.h). */

#define BLK_NODE_NAME_MAX 32     /* bytes with the NUL, as QEMU */
#define BLK_PROBE_BUF_SIZE 2048  /* bytes handed to probe() */
#define BLK_BACKING_CHAIN_MAX 64 /* nodes opening each other, at most */

/* True when the first len bytes of an image (as they would be after a
 * write) still probe as raw: the guard for probed raw images. */
bool blk_probe_is_raw(const uint8_t *buf, size_t len);

/* ---- graph (loop thread) -------------------------------------------
 *
 * Ownership: blk_open() returns a node holding one reference for the
 * caller (for blockdev-add that is the monitor's, and monitor_owned is
 * set).  A parent holds one reference on each child; a child given by
 * node-name is shared, a child given inline belongs to its parent only
 * (it gets an auto "#blockN" name unless it names itself).  The node
 * closes when its last reference goes.
 *
 * A node cannot be deleted (blockdev-del) while another node uses it as
 * a child or a user (an export) is registered.
 *
 * "Loop thread" below also admits a worker running blk_open_async()'s
 * open: there blk_open() and what it calls (children, backing files,
 * probing) see only that open's private stage graph.
 */

/* What the layer above hands the block layer: the loop completions and
 * events are posted to, the pool for blocking work, where events go.
 * Any field may be NULL (unit tests): requests then never run inline on
 * a loop, and events are dropped. */
typedef struct BlockHost {
    Loop *loop;
    WorkerPool *pool;
    WorkerPool *job_pool;        /* block jobs' copying, at a lower CPU
                                  * priority (NULL: pool) */
    MonitorSet *events;          /* BLOCK_IMAGE_CORRUPTED */
    ObjectSet *objects;          /* tls-creds of nbd nodes */
} BlockHost;

/* A new, empty graph; host (copied) may be NULL. */
BlockGraph *blk_graph_new(const BlockHost *host);
/* The graph's host; never NULL (fields may be). */
const BlockHost *blk_graph_host(const BlockGraph *g);
/* Where block jobs run their copying: the host's job pool, else its
 * pool. */
WorkerPool *blk_graph_job_pool(const BlockGraph *g);
/* Add a driver that lives above this layer (the NBD client registers
 * the "nbd" driver): blockdev-add and probing find it in this graph.
 * drv must outlive the graph. */
void blk_graph_register_driver(BlockGraph *g, const BlockDriver *drv);
/* Confine the backing files that image headers name (a qcow2's backing
 * file; not a backing node given in the options, nor "backing": null)
 * to the directories dirs[0..n): the name is resolved with realpath(),
 * so neither ".." nor a symlink leads out, and a file outside every
 * directory is refused with an error naming it.  Each directory is
 * resolved now (fails naming one that cannot be).  n == 0: no
 * confinement, QEMU's behaviour.  Daemon-wide configuration, set once
 * at start-up (loop thread); replaces an earlier list. */
bool blk_graph_set_backing_roots(BlockGraph *g, char *const *dirs, size_t n,
                                 Error **errp);
/* Close every node (exports must be gone); jobs left are freed
 * first. */
void blk_graph_free(BlockGraph *g);
/* The head of g's job list (blockdev/job.c owns the list). */
struct Job **blk_graph_jobs(BlockGraph *g);
BlockNode *blk_find_node(BlockGraph *g, const char *node_name);
/* Resolve a node-name, with QEMU's error for a miss:
 * "Cannot find device=%s nor node-name=%s" / "Failed to find node with
 * node-name='%s'". */
BlockNode *blk_lookup_node(BlockGraph *g, const char *node_name,
                           Error **errp);
/* QEMU's bdrv_lookup_bs(): by node-name (or, blockd having no devices,
 * by the device name as a node-name), failing with "Cannot find
 * device='D' nor node-name='N'".  Either name may be NULL. */
BlockNode *blk_lookup_bs(BlockGraph *g, const char *device,
                         const char *node_name, Error **errp);
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
/* user (registered on bs) goes hard, e.g. a hard block-export-del
 * dropped its clients, and its requests would keep it until they end:
 * when no other user and no parent node needs bs, ask its driver, and
 * those of its children that nothing else needs, to fail their
 * requests now (BlockDriver.abort_requests), so a server that hangs
 * does not hold the user and the node.  Returns whether it asked.
 * Loop thread. */
bool blk_node_abort_requests(BlockNode *bs, const char *user);

/* Open parent's child for role ("file", "backing" or "target") from ref, an
 * inline definition or a node-name, and store it in parent->file /
 * parent->backing (which must be NULL; the generic close drops it).  A
 * driver's open calls this for each child.  An inline child inherits
 * the parent's read-only, cache and discard options unless it sets its
 * own (a backing child is read-only).  A "file" child also gives the
 * parent its filename.  Loop thread. */
bool blk_open_child(BlockNode *parent, const char *role,
                    const BlockdevRef *ref, Error **errp);
/* Open an image by file name: a "file" node and, on top, a node of the
 * given format ("raw", "qcow2", ...; NULL = probe, as qemu-img does, and
 * then a raw image cannot be turned into another format by writing its
 * first sector).  node_name may be NULL (auto-named).  Returns a new
 * reference (loop thread). */
BlockNode *blk_open_image(BlockGraph *g, const char *filename,
                          const char *format, const char *node_name,
                          bool read_only, Error **errp);
/* Open parent's backing file, named as in the image header: a relative
 * filename is taken relative to the directory of parent's file (QEMU's
 * rule).  Opened read-only; format NULL = probe.  Refused when the file
 * is already part of the chain being opened (a loop) or the chain is
 * deeper than BLK_BACKING_CHAIN_MAX.  Returns a new reference for
 * parent->backing (loop thread; parent is opening). */
BlockNode *blk_open_backing_file(BlockNode *parent, const char *filename,
                                 const char *format, Error **errp);
/* Combine a backing file name with the directory of base_filename;
 * returns a new string (absolute names are returned as they are). */
char *blk_path_combine(const char *base_filename, const char *filename);
/* Guess the format of bs's content: the name of the driver whose probe
 * scores highest ("raw" when nothing else matches). */
const char *blk_probe_format(BlockNode *bs, Error **errp);
/* The built-in driver for a format name, or NULL. */
const BlockDriver *blk_find_driver(const char *name);
/* The driver for a format name in g: built-in or registered; NULL if
 * none. */
const BlockDriver *blk_graph_find_driver(const BlockGraph *g,
                                         const char *name);
/* Call fn for every node, in creation order.  fn must not add or remove
 * nodes. */
void blk_foreach_node(BlockGraph *g, void (*fn)(BlockNode *bs, void *opaque),
                      void *opaque);
/* Make base (NULL: none) bs's backing node, in the image header and
 * in the graph: the old backing node loses bs's reference (loop
 * thread; base must already be in bs's chain or be safe to read
 * from).  The header records backing_file if not NULL (the jobs'
 * backing-file, not checked, as QEMU), else base's file name.  Fails
 * when the driver cannot record a backing file. */
bool blk_change_backing(BlockNode *bs, BlockNode *base,
                        const char *backing_file, Error **errp);
/* What the layers above hand the graph for a pivot: make every user
 * of from that lives above the block layer (an export) use to instead
 * (loop thread). */
typedef void BlockReplaceFn(BlockNode *from, BlockNode *to, void *opaque);
void blk_graph_set_replace_fn(BlockGraph *g, BlockReplaceFn *fn,
                              void *opaque);
/* A job's pivot (mirror, active commit; loop thread): every node that
 * has from as its file or backing child (but those below to, which
 * would make a loop) and every user above (blk_graph_set_replace_fn)
 * now uses to.  Requests already submitted to from finish there. */
void blk_replace_node(BlockNode *from, BlockNode *to);
/* Put a new node of the filter driver drv (is_filter; no open: it only
 * passes requests to its file child) named node_name (NULL: "#blockN")
 * above bs: bs's parents and the users above move to it
 * (blk_replace_node).  Returns it with a reference for the caller, who
 * removes it with blk_replace_node(filter, bs or another node) and
 * blk_unref(); NULL with errp set when the name is invalid or taken.
 * Loop thread. */
BlockNode *blk_insert_filter(BlockNode *bs, const BlockDriver *drv,
                             const char *node_name, Error **errp);
/* Whether to_replace is bs or lies below it through filters only, so
 * that replacing it shows the same data (QEMU's
 * bdrv_recurse_can_replace). */
bool blk_can_replace(BlockNode *bs, BlockNode *to_replace);
/* Reopen bs read-write (read_only false) or back read-only, as QEMU
 * does for block-commit's base: read-write switches the file child too
 * when it is read-only; read-only undoes only what an earlier
 * read-write switch did (bs->reopened_rw).  Loop thread.  Fails with
 * "Could not reopen 'F' read-write: ..." (e.g. an immutable file, a
 * lock held by another process). */
bool blk_reopen(BlockNode *bs, bool read_only, Error **errp);
/* Resize (loop thread): for block_resize.  Fails on read-only nodes. */
bool blk_truncate(BlockNode *bs, uint64_t size, Error **errp);
/* blk_truncate() for the user named user (a job that claimed bs): the
 * other users still refuse it. */
bool blk_truncate_for_user(BlockNode *bs, uint64_t size, const char *user,
                           Error **errp);

/* ---- long graph work on the pool (loop thread) ----------------------
 *
 * The driver I/O (reading headers and metadata, repairing a dirty qcow2,
 * opening a backing chain, growing an image) runs on the graph's pool
 * (which must exist); the callback runs on the loop thread.  A false
 * return (errp set) means the quick checks failed and cb is never
 * called.  Graph teardown must drain the pool and run posted work first
 * (daemon_free does). */

/* bs: the opened node (a reference for the caller, already in the graph
 * under its name), or NULL and err (the callback's to free). */
typedef void BlockOpenCb(BlockNode *bs, Error *err, void *opaque);
/* NULL err = success; else the callback's to free. */
typedef void BlockDoneCb(Error *err, void *opaque);

/* blk_open() on the pool.  At once: opts is copied, the node-names it
 * defines are checked and reserved (a second open of the same name
 * fails with "Duplicate nodes with node-name='N'"), and the nodes it
 * refers to by name are referenced until the open ends (blockdev-del
 * finds them busy).  The new nodes join the graph only when cb runs. */
bool blk_open_async(BlockGraph *g, const BlockdevOptions *opts,
                    BlockOpenCb *cb, void *opaque, Error **errp);
/* blk_truncate() on the pool: checked at once; meanwhile the node is
 * referenced and has the user "block_resize" (so it is busy for
 * blockdev-del and a second resize, and blk_node_add_user() fails:
 * no export starts on it until the new size is set). */
bool blk_truncate_async(BlockNode *bs, uint64_t size, BlockDoneCb *cb,
                        void *opaque, Error **errp);
/* Delete a monitor-owned node (blockdev-del): fails with QEMU's
 * messages when the node is unknown, not monitor-owned, or in use. */
bool blk_node_delete(BlockGraph *g, const char *node_name, Error **errp);
/* Name of the first user registered with write access (an export
 * that is writable, a job writing it), or NULL.  Returns a new
 * string. */
char *blk_node_writer(BlockNode *bs);
/* Name of the user or parent that keeps bs busy, or NULL when only the
 * caller's reference remains.  Returns a new string. */
char *blk_node_busy_reason(BlockNode *bs);

/* ---- synchronous I/O (any thread; blocks) ---------------------------
 *
 * Bounds: every request is checked before it reaches the driver:
 *   offset + bytes overflowing, or above INT64_MAX       -> -EINVAL
 *   a read crossing the end, or block status starting at
 *   or past the end (status crossing it is clamped)       -> -EINVAL
 *   a write/write_zeroes/discard crossing the end         -> -ENOSPC
 *   a write to a read-only node                           -> -EPERM
 * (NBD maps these to NBD_EINVAL / NBD_ENOSPC / NBD_EPERM.)  Protocol
 * nodes (file) are the exception: reads past the end fill zeroes and
 * writes past the end grow the file.  bytes == 0 succeeds and does
 * nothing.  flush is a no-op on read-only nodes; with cache.no-flush
 * a leaf node (no file child) skips it, while a node over a file
 * child still writes its caches to that child (only the device flush
 * below is skipped).
 * A write of all zeroes becomes write_zeroes when the node has
 * detect-zeroes=on (MAY_UNMAP too with detect-zeroes=unmap).
 */

int64_t blk_getlength(BlockNode *bs);
int blk_pread(BlockNode *bs, uint64_t offset, uint64_t bytes, void *buf,
              uint32_t flags);
int blk_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
               const void *buf, uint32_t flags);
int blk_pwrite_zeroes(BlockNode *bs, uint64_t offset, uint64_t bytes,
                      uint32_t flags);
int blk_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes);
int blk_flush(BlockNode *bs);
/* Prefetch hint (NBD_CMD_CACHE): bounds are checked as for a read; the
 * driver's prefetch, if any, runs and its failure is ignored. */
int blk_prefetch(BlockNode *bs, uint64_t offset, uint64_t bytes);
/* A hint from a bulk writer that flushes at its end (a job): start
 * writing back what bs's files hold dirty now, without waiting, so the
 * disk works while the copy goes on and the flush finds little left.
 * Goes down bs->file to the first driver with start_writeback.  Worker
 * thread (may block briefly while the disk queue is full). */
void blk_start_writeback(BlockNode *bs);
/* Read [offset, offset+bytes) into the pipe pipe_fd without a copy
 * through user space, when blk_get_caps() says splice_read: the
 * driver's splice_read (see BlockDriver) after the bounds checks, and
 * counted as a read when it succeeds.  A BLK_OP_READ request with
 * BLK_REQ_PIPE runs this with req->pipe_fd (never an asynchronous
 * driver's aio_submit).  -ENOTSUP leaves the pipe untouched; any other
 * failure may leave part of the range in it.  *pin (zeroed by the
 * caller) may be taken (see BlockSplicePin): release it with
 * blk_splice_unpin() once the pipe's pages are no longer referenced
 * (the pipe closed, or its bytes consumed by the socket's peer). */
int blk_splice_read(BlockNode *bs, uint64_t offset, uint64_t bytes,
                    int pipe_fd, uint32_t flags, BlockSplicePin *pin);
/* Release a pin (no-op when pin->node is NULL) and clear it.  Any
 * thread. */
void blk_splice_unpin(BlockSplicePin *pin);
/* Release a pin whose pages may still be referenced and can no longer
 * be watched (a connection closed with spliced bytes its peer had not
 * read): the node then never reuses storage freed from now on until
 * it is closed (those clusters leak, which qemu-img check reports and
 * repairs, rather than leak data).  Any thread. */
void blk_splice_unpin_lost(BlockSplicePin *pin);
/* For drivers, under the lock that orders their lookups and frees:
 * take a pin on bs; may storage freed at splice epoch `epoch` (bs's
 * splice_epoch when it was freed) be reused now?  The epoch only
 * advances (blk_splice_epoch_advance) when no pin of the one before is
 * left, so pins are of the current epoch or the one before: a free of
 * epoch e is safe once no pin is left, or once e is past and the
 * previous epoch's pins are gone. */
void blk_splice_pin_take(BlockNode *bs, BlockSplicePin *pin);
bool blk_splice_reusable(BlockNode *bs, uint64_t epoch);
void blk_splice_epoch_advance(BlockNode *bs);
/* Copy [src_off, src_off+bytes) of src to dst_off in dst inside the
 * kernel (a job's copy between two image files): src is followed down
 * its format layers (raw, qcow2 data clusters) to the file holding the
 * bytes, and dst's driver copies them from there (copy_range_to).
 * Counted as a read of src and a write of dst; the bounds and
 * read-only checks of blk_pread() and blk_pwrite().  -ENOTSUP when
 * the range cannot be copied this way (a hole, a zero, compressed or
 * backing range in src, a driver without copy_range_to, dst with
 * detect-zeroes or a write hook not skipped by BLK_REQ_NO_HOOK): part
 * of it may be written, so the caller reads and writes it all.  Only
 * BLK_REQ_FUA, BLK_REQ_NO_HOOK and BLK_REQ_STREAM are allowed in
 * flags.  Any thread;
 * blocks. */
int blk_copy_range(BlockNode *src, uint64_t src_off, BlockNode *dst,
                   uint64_t dst_off, uint64_t bytes, uint32_t flags);
/* Status over the whole backing chain: BLK_STATUS_DATA/ZERO for the
 * first *pnum bytes as a reader sees them (unallocated at the bottom of
 * a chain of formats reads as ZERO, not DATA).  ALLOCATED says whether
 * any layer allocates it.  0 (neither DATA nor ZERO) is possible: a hole
 * of undefined content (null-co without read-zeroes), as in QEMU. */
int blk_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                     uint64_t *pnum);
/* Allocation depth of the first *pnum bytes: 0 = no layer allocates
 * them, 1 = bs itself, 2 = its backing node, ... (qemu:allocation-depth). */
int blk_allocation_depth(BlockNode *bs, uint64_t offset, uint64_t bytes,
                         uint64_t *pnum);

/* The shape of a status question over [offset, offset+bytes): flags
 * (>= 0, the asker's own) for the first *pnum bytes, or -errno.  Any
 * thread.  opaque is the asker's. */
typedef int BlockStatusFn(BlockNode *bs, uint64_t offset, uint64_t bytes,
                          uint64_t *pnum, void *opaque);

/* Smallest request alignment the node needs, bytes (1 = any). */
uint32_t blk_get_request_alignment(BlockNode *bs);
/* The node's node-name; valid while the node lives. */
const char *blk_node_name(const BlockNode *bs);
/* A histogram (bs->lat[op], an export's) in QEMU's shape for
 * query-blockstats (allocated, the caller frees it with the result);
 * *count gets its number of requests, *sum_ns their total time.  Any
 * thread. */
BlockLatencyHistogramInfo *blk_lathist_info(const LatHist *h,
                                            uint64_t *count,
                                            uint64_t *sum_ns);

/* What bs does with each kind of request (see BlockCaps): its driver's
 * answer over its children, less what the node's options rule out.
 * Any thread; cheap (no I/O). */
void blk_get_caps(BlockNode *bs, BlockCaps *caps);

/* True when len bytes at buf are all zero (fast; any thread). */
bool blk_buffer_is_zero(const void *buf, size_t len);

/* ---- asynchronous I/O (loop thread) -------------------------------- */

typedef enum BlockRequestType {
    BLK_OP_READ,
    BLK_OP_WRITE,
    BLK_OP_WRITE_ZEROES,
    BLK_OP_DISCARD,
    BLK_OP_FLUSH,
    BLK_OP_CACHE,                /* prefetch hint: a read into nowhere */
    BLK_OP_BLOCK_STATUS,         /* a status walk over the range */
} BlockRequestType;

struct BlockRequest {
    WorkerJob job;               /* private */
    BlockNode *bs;
    BlockRequestType type;
    uint32_t flags;              /* BLK_REQ_* */
    uint64_t offset, bytes;
    void *buf;                   /* READ/WRITE: bytes long, caller-owned */
    int pipe_fd;                 /* READ with BLK_REQ_PIPE: see below */
    BlockSplicePin pin;          /* READ with BLK_REQ_PIPE: the caller's
                                  * to release (blk_splice_unpin) */
    int ret;                     /* 0 or -errno, valid in cb */
    void (*cb)(BlockRequest *req);   /* loop thread */
    void *opaque;
    /* BLK_OP_BLOCK_STATUS: on a worker, walk [offset, offset+bytes):
     * each step asks status_fn(bs, pos, end - pos, &pnum,
     * status_opaque) and hands the answer to extent_cb(req, pnum,
     * flags) (1 <= pnum <= end - pos).  The walk ends at the end of the
     * range, when extent_cb returns false, or when status_fn fails
     * (ret = its -errno).  A range starting at or past the end of the
     * node fails with -EINVAL.  Both run on a worker thread, never
     * inline on the loop. */
    BlockStatusFn *status_fn;
    void *status_opaque;
    bool (*extent_cb)(BlockRequest *req, uint64_t len, uint32_t flags);
    uint64_t start_ns;           /* private: for the statistics */
    WorkerPool *pool;            /* private: counted in the node's share */
    Loop *loop;                  /* private: where cb runs (submitter's) */
    BlockRequest *pool_next;     /* private: waiting for that share */
    bool gated;                  /* private: counted by the write gate */
};

/* Requests up to this size on an aio_inline node run on the loop thread
 * (reads, writes, zeroes and discards alike; flushes always); larger
 * ones go to the pool, so big copies for several clients run in
 * parallel and the loop stays responsive. */
#define BLK_INLINE_MAX (128 * 1024)

/* Writes up to this size run inline too.  A write's payload was just
 * received by the loop thread (one kernel copy of the same bytes), so
 * the write's copy into the page cache at most doubles what the loop
 * spends on it, while a hand-off to the pool costs a futex wake, an
 * eventfd write and read and two context switches per request: on a
 * 256 KiB sequential write that hand-off was most of the server's CPU.
 * 1 MiB on tmpfs is a few hundred microseconds of loop time at most. */
#define BLK_INLINE_WRITE_MAX (1024 * 1024)

/* Isolation: one node has at most this many requests on the pool at
 * once (all its threads but a quarter, at least 1 kept back); more wait, in order, for one of
 * the node's own to finish.  So a node whose requests hang (a stalled
 * disk, a blkdebug stall) never holds every worker, and the other
 * exports keep serving. */
unsigned blk_pool_share(const WorkerPool *pool);

/* Run req on the worker pool; req->cb runs on the loop thread when done.
 * The node is referenced for the duration.  No allocation: req (and buf)
 * belong to the caller until cb.  Requests on one node run
 * concurrently and complete in any order; a FLUSH covers the writes that
 * completed before it was submitted. */
void blk_aio_submit(WorkerPool *pool, BlockRequest *req);
/* The same from the thread running loop (an I/O thread's): req->cb runs
 * there.  Only for a node that blk_node_iothread_ok() accepts when loop
 * is not the graph's. */
void blk_aio_submit_on(WorkerPool *pool, BlockRequest *req, Loop *loop);
/* Whether bs may take requests from another loop than the graph's: its
 * driver and every child's are iothread_ok (file, raw, null-co) and no
 * job works on it.  Loop thread (the graph's). */
bool blk_node_iothread_ok(const BlockNode *bs);
/* An export on iothreads starts (+1) or stops (-1) using bs and its
 * children: job_claim_node() refuses them meanwhile, since a job's
 * pivot and drain only see requests of the main loop.  Main loop. */
void blk_node_iothread_use(BlockNode *bs, int delta);

/* ---- the write gate (transaction) ---------------------------------
 *
 * While a graph's gate is closed, the writes (write, write-zeroes,
 * discard) that blk_aio_submit() gets on the graph's loop wait, in
 * order, and are submitted when it opens; reads, flushes and the jobs'
 * own I/O go on.  So a transaction's actions run with no guest write
 * between them, as QEMU's drained section gives.  Requests of an I/O
 * thread's loop do not pass the gate: callers refuse nodes such
 * exports use (BlockNode.iothread_users).  Loop thread. */

/* Close the gate; drained(opaque) runs on the loop (maybe before this
 * returns) once no write submitted before it is still in flight.  A
 * gate already closed fails (false). */
bool blk_write_gate_close(BlockGraph *g, void (*drained)(void *opaque),
                          void *opaque);
/* Open it: the writes that waited are submitted, in order. */
void blk_write_gate_open(BlockGraph *g);
/* For blockdev/io.c: at submit, true when req waits at the gate (it is
 * then the gate's); at completion, before req's callback. */
bool blk_write_gate_enter(BlockRequest *req, WorkerPool *pool, Loop *loop);
void blk_write_gate_leave(BlockRequest *req);

/* Asynchronous drivers (BlockDriver.aio_submit).  blk_aio_submit()
 * first applies what the synchronous wrappers do: the bounds (see
 * "Bounds"), -EPERM for writes to a read-only node, bytes == 0 and
 * flushes on read-only or cache.no-flush leaf nodes complete at once,
 * discards are dropped unless discard=unmap, MAY_UNMAP is cleared
 * unless discard=unmap.  Requests the driver cannot take whole stay on
 * the pool: BLOCK_STATUS, writes on a node with detect-zeroes, and
 * ranges not aligned to the node's request_alignment (the synchronous
 * callbacks do the read-modify-write).
 * Everything else goes to drv->aio_submit.  A WRITE_ZEROES the driver
 * completes with -ENOTSUP (and no BLK_REQ_NO_FALLBACK) goes on to the
 * pool, where the synchronous path writes zero buffers.
 *
 * Complete req with ret (0 or -errno) from any thread: counts the
 * statistics as the synchronous path does and posts req->cb to the
 * loop thread (with no loop, a unit test's graph, cb runs here). */
void blk_aio_complete(BlockRequest *req, int ret);

#endif
