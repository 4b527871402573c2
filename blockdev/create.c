/* create.c - image creation (blockdev-create): see create.h.
 *
 * The option checks follow QEMU's qcow2_co_create() and
 * raw_co_create() (file-posix) in order and wording, so a tool that
 * reads QEMU's errors reads ours.  The qcow2 layout itself is computed
 * and encoded by the pure functions of qcow2-meta.c.
 */
#include "blockdev/create.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/qcow2-meta.h"
#include "config.h"
#include "util/cleanup.h"
#include "util/util.h"

/* Metadata is written in runs of at most this many bytes. */
#define CREATE_CHUNK (1024 * 1024)

struct BlockCreate {
    BlockdevCreateOptions *opts; /* a copy, owned */
    BlockNode *file;             /* raw/qcow2: the node written, one ref */
    BlockCreateProgress progress;
    Qcow2CreateParams qcow2;     /* qcow2: checked parameters (into opts) */
};

/* ---- checks ---------------------------------------------------------- */

static bool is_power_of_2(uint64_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

static uint32_t log2_u64(uint64_t v)
{
    uint32_t n = 0;

    while (v > 1) {
        v >>= 1;
        n++;
    }
    return n;
}

bool blk_create_qcow2_params(const BlockdevCreateOptionsQcow2 *o,
                             Qcow2CreateParams *p, Error **errp)
{
    uint64_t cluster_size = o->has_cluster_size ? o->cluster_size
                                                : 64 * 1024;
    PreallocMode prealloc = o->has_preallocation ? o->preallocation
                                                 : PREALLOC_MODE_OFF;
    int64_t refcount_bits = o->has_refcount_bits ? o->refcount_bits : 16;
    bool extended_l2 = o->has_extended_l2 && o->extended_l2;

    memset(p, 0, sizeof(*p));
    if (o->size % 512 != 0) {
        error_setg(errp, "Image size must be a multiple of 512 bytes");
        return false;
    }
    p->version = o->has_version && o->version == BLOCKDEV_QCOW2_VERSION_V2
                 ? 2 : 3;
    if (!is_power_of_2(cluster_size) || cluster_size < 512 ||
        cluster_size > 2 * 1024 * 1024) {
        error_setg(errp, "Cluster size must be a power of two between %d "
                   "and %dk", 512, 2048);
        return false;
    }
    if (extended_l2) {
        if (cluster_size < 16384) {
            error_setg(errp, "Extended L2 entries are only supported with "
                       "cluster sizes of at least %u bytes", 16384u);
            return false;
        }
        if (p->version < 3) {
            error_setg(errp, "Extended L2 entries are only supported with "
                       "compatibility level 1.1 and above (use version=v3 "
                       "or greater)");
            return false;
        }
    }
    if (o->has_backing_file && prealloc != PREALLOC_MODE_OFF &&
        !extended_l2) {
        error_setg(errp, "Backing file and preallocation can only be used "
                   "at the same time if extended_l2 is on");
        return false;
    }
    if (o->has_backing_fmt && !o->has_backing_file) {
        error_setg(errp, "Backing format cannot be used without backing "
                   "file");
        return false;
    }
    if (p->version < 3 && o->has_lazy_refcounts && o->lazy_refcounts) {
        error_setg(errp, "Lazy refcounts only supported with compatibility "
                   "level 1.1 and above (use version=v3 or greater)");
        return false;
    }
    if (refcount_bits > 64 || refcount_bits < 1 ||
        !is_power_of_2((uint64_t)refcount_bits)) {
        error_setg(errp, "Refcount width must be a power of two and may not "
                   "exceed 64 bits");
        return false;
    }
    if (p->version < 3 && refcount_bits != 16) {
        error_setg(errp, "Different refcount widths than 16 bits require "
                   "compatibility level 1.1 or above (use version=v3 or "
                   "greater)");
        return false;
    }
    if (o->has_data_file_raw && o->data_file_raw && !o->has_data_file) {
        error_setg(errp, "data-file-raw requires data-file");
        return false;
    }
    if (o->has_data_file) {
        error_setg(errp, "qcow2: images with an external data file are not "
                   "supported");
        return false;
    }
    if (o->has_encrypt) {
        error_setg(errp, "qcow2: encrypted images are not supported");
        return false;
    }
    if (o->has_compression_type &&
        o->compression_type != QCOW2_COMPRESSION_TYPE_ZLIB) {
        if (p->version < 3) {
            error_setg(errp, "Non-zlib compression type is only supported "
                       "with compatibility level 1.1 and above (use "
                       "version=v3 or greater)");
            return false;
        }
#ifndef HAVE_ZSTD
        error_setg(errp, "Compression type 'zstd' is not supported: blockd "
                   "was built without zstd");
        return false;
#endif
        p->compression_type = 1;
    }
    p->size = o->size;
    p->cluster_bits = log2_u64(cluster_size);
    p->refcount_order = log2_u64((uint64_t)refcount_bits);
    p->extended_l2 = extended_l2;
    p->lazy_refcounts = o->has_lazy_refcounts && o->lazy_refcounts;
    p->backing_file = o->has_backing_file ? o->backing_file : NULL;
    p->backing_format = o->has_backing_fmt
                        ? BlockdevDriver_str(o->backing_fmt) : NULL;
    p->preallocate = prealloc != PREALLOC_MODE_OFF;
    return true;
}

static bool raw_check(const BlockdevCreateOptionsRaw *o, Error **errp)
{
    PreallocMode mode = o->has_preallocation ? o->preallocation
                                             : PREALLOC_MODE_OFF;

    if (mode == PREALLOC_MODE_METADATA) {
        error_setg(errp, "Unsupported preallocation mode: %s",
                   PreallocMode_str(mode));
        return false;
    }
    if (o->size > INT64_MAX) {
        error_setg(errp, "Image size cannot be larger than %lld bytes",
                   (long long)INT64_MAX);
        return false;
    }
    return true;
}

/* ---- set-up and teardown (loop thread) ------------------------------- */

static BlockdevCreateOptions *create_opts_copy(const BlockdevCreateOptions *o)
{
    CLEANUP_JSON json_object *j = qapi_BlockdevCreateOptions_to_json(o);
    BlockdevCreateOptions *copy = NULL;

    if (!qapi_parse_BlockdevCreateOptions(j, NULL, 0, &copy, NULL)) {
        return NULL;
    }
    return copy;
}

static BlockNode *create_open_ref(BlockGraph *g, const BlockdevRef *ref,
                                  Error **errp)
{
    BlockNode *bs;

    if (ref->type == QTYPE_QSTRING) {
        bs = blk_lookup_bs(g, ref->u.reference, ref->u.reference, errp);
        if (bs != NULL) {
            blk_ref(bs);
        }
        return bs;
    }
    return blk_open(g, ref->u.definition, errp);
}

BlockCreate *blk_create_new(BlockGraph *g, const BlockdevCreateOptions *opts,
                            Error **errp)
{
    BlockCreate *c;
    const BlockdevRef *ref = NULL;

    switch (opts->driver) {
    case BLOCKDEV_DRIVER_FILE:
        break;
    case BLOCKDEV_DRIVER_RAW:
        if (!raw_check(&opts->u.raw, errp)) {
            return NULL;
        }
        ref = opts->u.raw.file;
        break;
    case BLOCKDEV_DRIVER_QCOW2: {
        Qcow2CreateParams p;

        if (!blk_create_qcow2_params(&opts->u.qcow2, &p, errp)) {
            return NULL;
        }
        ref = opts->u.qcow2.file;
        break;
    }
    default:
        error_setg(errp, "Driver does not support blockdev-create");
        return NULL;
    }
    c = XNEW(BlockCreate);
    c->opts = create_opts_copy(opts);
    if (c->opts == NULL) {
        error_setg(errp, "blockdev-create: options cannot be copied");
        free(c);
        return NULL;
    }
    if (c->opts->driver == BLOCKDEV_DRIVER_QCOW2) {
        /* Again, into the copy: the strings must live as long as c. */
        blk_create_qcow2_params(&c->opts->u.qcow2, &c->qcow2, NULL);
    }
    if (ref != NULL) {
        c->file = create_open_ref(g, ref, errp);
        if (c->file == NULL) {
            blk_create_free(c);
            return NULL;
        }
        if (c->file->read_only) {
            error_setg(errp, "Block node is read-only");
            blk_create_free(c);
            return NULL;
        }
    }
    return c;
}

void blk_create_free(BlockCreate *c)
{
    if (c == NULL) {
        return;
    }
    if (c->file != NULL) {
        blk_unref(c->file);
    }
    qapi_free_BlockdevCreateOptions(c->opts);
    free(c);
}

BlockCreateProgress *blk_create_progress(BlockCreate *c)
{
    return &c->progress;
}

/* ---- writing (a worker) ---------------------------------------------- */

static bool create_cancelled(BlockCreate *c, Error **errp)
{
    if (__atomic_load_n(&c->progress.cancel, __ATOMIC_ACQUIRE)) {
        error_setg(errp, "Operation canceled");
        return true;
    }
    return false;
}

static void create_count(BlockCreate *c, uint64_t bytes)
{
    __atomic_add_fetch(&c->progress.done, bytes, __ATOMIC_RELAXED);
}

static void create_add_total(BlockCreate *c, uint64_t bytes)
{
    __atomic_add_fetch(&c->progress.total, bytes, __ATOMIC_RELAXED);
}

/* Resize bs when its driver can (an nbd node cannot: its size is the
 * server's). */
static bool create_truncate(BlockNode *bs, uint64_t size, Error **errp)
{
    if (bs->drv->truncate == NULL) {
        return true;
    }
    return blk_truncate(bs, size, errp);
}

/* Make [offset, offset+bytes) of bs allocated per mode: a file node
 * does it itself; on another node full writes zeroes and falloc is
 * refused. */
static bool create_preallocate(BlockCreate *c, BlockNode *bs,
                               uint64_t offset, uint64_t bytes,
                               PreallocMode mode, Error **errp)
{
    CLEANUP_FREE void *zero = NULL;
    int ret;

    if (mode == PREALLOC_MODE_OFF || mode == PREALLOC_MODE_METADATA ||
        bytes == 0) {
        return true;
    }
    ret = blk_file_preallocate(bs, offset, bytes, mode, &c->progress);
    if (ret == 0) {
        return true;
    }
    if (ret == -ECANCELED) {
        error_setg(errp, "Operation canceled");
        return false;
    }
    if (ret != -ENODEV) {
        error_setg_errno(errp, -ret, "Could not preallocate new data");
        return false;
    }
    if (mode == PREALLOC_MODE_FALLOC) {
        error_setg(errp, "Unsupported preallocation mode: falloc (node "
                   "'%s' is not a regular file)", blk_node_name(bs));
        return false;
    }
    zero = xcalloc(1, CREATE_CHUNK);
    while (bytes > 0) {
        uint64_t n = MIN(bytes, (uint64_t)CREATE_CHUNK);

        if (create_cancelled(c, errp)) {
            return false;
        }
        ret = blk_pwrite(bs, offset, n, zero, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not preallocate new data");
            return false;
        }
        offset += n;
        bytes -= n;
        create_count(c, n);
    }
    return true;
}

static bool create_raw(BlockCreate *c, Error **errp)
{
    const BlockdevCreateOptionsRaw *o = &c->opts->u.raw;
    PreallocMode mode = o->has_preallocation ? o->preallocation
                                             : PREALLOC_MODE_OFF;

    if (mode != PREALLOC_MODE_OFF) {
        create_add_total(c, o->size);
    }
    if (!create_truncate(c->file, 0, errp) ||
        !create_preallocate(c, c->file, 0, o->size, mode, errp) ||
        !create_truncate(c->file, o->size, errp)) {
        return false;
    }
    if (blk_flush(c->file) < 0) {
        error_setg(errp, "Could not flush node '%s'",
                   blk_node_name(c->file));
        return false;
    }
    return true;
}

/* Bytes of a cluster up to its last non-zero byte, rounded up to 4 KiB
 * (the rest stays a hole: the node was emptied first, so it reads as
 * zeroes; a 2 MiB cluster holding a 112-byte header costs 4 KiB). */
static uint64_t create_used(const uint8_t *buf, uint64_t cs)
{
    uint64_t end = cs;

    while (end > 0 && blk_buffer_is_zero(buf + end - MIN(end, 4096),
                                         MIN(end, 4096))) {
        end -= MIN(end, 4096);
    }
    return end;
}

/* The metadata clusters [first, end): filled CREATE_CHUNK bytes at a
 * time and written in runs, skipping zero tails. */
static bool create_qcow2_meta(BlockCreate *c, const Qcow2CreateLayout *l,
                              uint64_t first, uint64_t end, Error **errp)
{
    uint64_t cs = l->cluster_size;
    uint64_t per_run = MAX(1, CREATE_CHUNK / cs);
    CLEANUP_FREE uint8_t *buf = xmalloc(per_run * cs);

    for (uint64_t i = first; i < end;) {
        uint64_t n = MIN(per_run, end - i);
        uint64_t run = 0;        /* start of the pending run in buf */

        if (create_cancelled(c, errp)) {
            return false;
        }
        for (uint64_t k = 0; k < n; k++) {
            qcow2_create_cluster(&c->qcow2, l, i + k, buf + k * cs);
        }
        for (uint64_t k = 0; k < n; k++) {
            uint64_t used = create_used(buf + k * cs, cs);
            uint64_t stop = k * cs + used;
            int ret = 0;

            if (used == cs && k + 1 < n) {
                continue;        /* the run goes on */
            }
            if (stop > run) {
                ret = blk_pwrite(c->file, i * cs + run, stop - run,
                                 buf + run, 0);
            }
            if (ret < 0) {
                error_setg_errno(errp, -ret, "Could not write qcow2 header");
                return false;
            }
            run = (k + 1) * cs;
        }
        create_count(c, n * cs);
        i += n;
    }
    return true;
}

static bool create_qcow2(BlockCreate *c, Error **errp)
{
    const BlockdevCreateOptionsQcow2 *o = &c->opts->u.qcow2;
    PreallocMode mode = o->has_preallocation ? o->preallocation
                                             : PREALLOC_MODE_OFF;
    Qcow2CreateLayout l;
    uint64_t meta, data_bytes;

    if (!qcow2_create_layout(&c->qcow2, &l, errp)) {
        return false;
    }
    meta = qcow2_create_meta_clusters(&l);
    data_bytes = l.data_clusters * l.cluster_size;
    create_add_total(c, meta * l.cluster_size +
                     (mode == PREALLOC_MODE_FALLOC ||
                      mode == PREALLOC_MODE_FULL ? data_bytes : 0));
    /* Empty the node, write the tables from the last cluster back to
     * the header, so that nothing names a table before it exists. */
    if (!create_truncate(c->file, 0, errp)) {
        return false;
    }
    if (!create_preallocate(c, c->file, l.data_offset, data_bytes, mode,
                            errp)) {
        return false;
    }
    if (!create_qcow2_meta(c, &l, 1, meta, errp)) {
        return false;
    }
    if (!create_truncate(c->file, l.total_clusters * l.cluster_size, errp)) {
        return false;
    }
    /* The header last, once what it names is durable. */
    if (blk_flush(c->file) < 0) {
        error_setg(errp, "Could not flush node '%s'", blk_node_name(c->file));
        return false;
    }
    if (!create_qcow2_meta(c, &l, 0, 1, errp)) {
        return false;
    }
    if (blk_flush(c->file) < 0) {
        error_setg(errp, "Could not flush node '%s'", blk_node_name(c->file));
        return false;
    }
    return true;
}

bool blk_create_run(BlockCreate *c, Error **errp)
{
    switch (c->opts->driver) {
    case BLOCKDEV_DRIVER_FILE:
        return blk_file_create(&c->opts->u.file, &c->progress, errp);
    case BLOCKDEV_DRIVER_RAW:
        return create_raw(c, errp);
    case BLOCKDEV_DRIVER_QCOW2:
        return create_qcow2(c, errp);
    default:
        error_setg(errp, "Driver does not support blockdev-create");
        return false;
    }
}
