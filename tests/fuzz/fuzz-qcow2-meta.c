/* fuzz-qcow2-meta.c - libFuzzer target for the pure qcow2 metadata
 * parsers (blockdev/qcow2-meta.c) over a memory buffer: no file, no
 * block layer, so it runs far faster than fuzz-qcow2-open and reaches
 * deeper into each parser.  The input is the start of an image file
 * (its size is the input's size).  The target parses the header and its
 * extensions, checks the layout and the feature bits both ways, then
 * walks whatever tables lie inside the input: the L1 table and each L2
 * table it points to (extended L2 subclusters too), the refcount table
 * and its refcount blocks, and the snapshot table (then looks a
 * snapshot up by id and by name).  Invariants checked on the way:
 * refcount set/get round trip at the image's refcount width, and an L2
 * entry re-encoded from its decoded NORMAL mapping decodes the same.
 *
 *   build-asan/tests/fuzz/fuzz-qcow2-meta -max_total_time=60 \
 *       tests/fuzz/corpus/fuzz-qcow2-meta
 *
 * Seeds: images made by qemu-img (small clusters so that the tables fit
 * in 64 KiB), see tests/fuzz/corpus/README.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/qcow2-meta.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Bounds on the work per input (tables can name millions of entries). */
#define MAX_L1_WALK 16
#define MAX_L2_WALK 1024
#define MAX_REFT_WALK 16
#define MAX_REFBLOCK_WALK 1024

static bool inside(uint64_t off, uint64_t len, size_t size)
{
    return off <= size && len <= size - off;
}

static void walk_l2(const Qcow2Header *h, const uint8_t *data, size_t size,
                    uint64_t l2_off)
{
    uint64_t entries = h->cluster_size / h->l2_entry_size;

    if (!inside(l2_off, h->cluster_size, size)) {
        return;
    }
    for (uint64_t i = 0; i < entries && i < MAX_L2_WALK; i++) {
        const uint8_t *p = data + l2_off + i * h->l2_entry_size;
        Qcow2Mapping m, m2;

        if (qcow2_l2_decode(h, get_be64(p), &m) < 0) {
            continue;
        }
        if (m.type == QCOW2_CLUSTER_NORMAL && !h->extended_l2) {
            uint64_t e = qcow2_l2_entry_normal(m.host_offset, m.copied);

            if (qcow2_l2_decode(h, e, &m2) < 0 ||
                m2.type != QCOW2_CLUSTER_NORMAL ||
                m2.host_offset != m.host_offset || m2.copied != m.copied) {
                abort();
            }
        }
        if (h->extended_l2) {
            uint64_t bitmap = get_be64(p + 8);

            for (unsigned sc = 0; sc < 32; sc++) {
                (void)qcow2_subcluster_type(&m, bitmap, sc);
            }
        }
    }
}

static void walk_l1(const Qcow2Header *h, const uint8_t *data, size_t size)
{
    for (uint64_t i = 0; i < h->l1_size && i < MAX_L1_WALK; i++) {
        uint64_t off = h->l1_table_offset + i * 8, l2_off;

        if (!inside(off, 8, size)) {
            return;
        }
        if (qcow2_l1_decode(h, get_be64(data + off), &l2_off) == 0 &&
            l2_off) {
            walk_l2(h, data, size, l2_off);
        }
    }
}

static void walk_refblock(const Qcow2Header *h, const uint8_t *data,
                          size_t size, uint64_t off)
{
    static uint8_t copy[1u << QCOW2_MAX_CLUSTER_BITS];
    uint64_t entries = (h->cluster_size * 8) >> h->refcount_order;
    uint64_t max = qcow2_refcount_max(h->refcount_order);
    uint64_t walk = entries < MAX_REFBLOCK_WALK ? entries : MAX_REFBLOCK_WALK;
    /* Only the bytes the walk touches (and the next entry). */
    uint64_t bytes = (((walk + 1) << h->refcount_order) + 7) / 8;

    if (bytes > h->cluster_size) {
        bytes = h->cluster_size;
    }
    if (!inside(off, h->cluster_size, size)) {
        return;
    }
    memcpy(copy, data + off, bytes);
    for (uint64_t i = 0; i < walk; i++) {
        uint64_t v = qcow2_refcount_get(copy, h->refcount_order, i);
        uint64_t nv = v == max ? 0 : v + 1;

        if (v > max) {
            abort();
        }
        qcow2_refcount_set(copy, h->refcount_order, i, nv);
        if (qcow2_refcount_get(copy, h->refcount_order, i) != nv) {
            abort();
        }
        /* Neighbours are untouched. */
        if (i + 1 < entries &&
            qcow2_refcount_get(copy, h->refcount_order, i + 1) !=
            qcow2_refcount_get(data + off, h->refcount_order, i + 1)) {
            abort();
        }
        qcow2_refcount_set(copy, h->refcount_order, i, v);
    }
    if (memcmp(copy, data + off, bytes) != 0) {
        abort();
    }
}

static void walk_refcounts(const Qcow2Header *h, const uint8_t *data,
                           size_t size)
{
    uint64_t n = (uint64_t)h->refcount_table_clusters * h->cluster_size / 8;

    for (uint64_t i = 0; i < n && i < MAX_REFT_WALK; i++) {
        uint64_t off = h->refcount_table_offset + i * 8;

        if (!inside(off, 8, size)) {
            return;
        }
        off = get_be64(data + off) & QCOW2_REFT_OFFSET_MASK;
        if (off) {
            walk_refblock(h, data, size, off);
        }
    }
}

static void walk_snapshots(const Qcow2Header *h, const uint8_t *data,
                           size_t size)
{
    Qcow2Snapshot *s = NULL;
    size_t table_len = 0;
    Error *err = NULL;

    if (h->nb_snapshots == 0 || h->snapshots_offset >= size) {
        return;
    }
    if (!qcow2_snapshots_parse(h, data + h->snapshots_offset,
                               size - h->snapshots_offset, size, &s,
                               &table_len, &err)) {
        if (!err || !error_get_pretty(err)[0]) {
            abort();             /* a failure always says why */
        }
        error_free(err);
        return;
    }
    if (table_len > size - h->snapshots_offset) {
        abort();
    }
    if (qcow2_snapshot_find(s, h->nb_snapshots, s[0].id) == NULL ||
        qcow2_snapshot_find(s, h->nb_snapshots, s[0].name) == NULL) {
        abort();
    }
    (void)qcow2_snapshot_find(s, h->nb_snapshots, "no such snapshot");
    qcow2_snapshots_free(s, h->nb_snapshots);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static Qcow2Header h;
    Error *err = NULL;

    if (!qcow2_header_parse(data, size, &h, &err)) {
        if (!err || !error_get_pretty(err)[0]) {
            abort();
        }
        error_free(err);
        return 0;
    }
    /* backing_file_size means nothing without backing_file_offset
     * (QEMU ignores it then too). */
    if (h.cluster_size != 1ULL << h.cluster_bits ||
        (h.has_backing_file &&
         h.backing_file_size > QCOW2_MAX_BACKING_NAME) ||
        h.nb_feature_names > QCOW2_MAX_FEATURE_NAMES) {
        abort();
    }
    for (int rw = 0; rw < 2; rw++) {
        if (!qcow2_header_check_features(&h, rw, rw, &err)) {
            error_free(err);
            err = NULL;
        }
    }
    (void)qcow2_l1_entries_for_size(&h, h.size);
    if (!qcow2_header_check_layout(&h, size, &err)) {
        error_free(err);
        /* Walk anyway: the parsers below must not trust the layout
         * check to have run. */
    }
    walk_l1(&h, data, size);
    walk_refcounts(&h, data, size);
    walk_snapshots(&h, data, size);
    return 0;
}
