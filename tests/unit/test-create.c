/* test-create.c - image creation (blockdev/create.c, the layout in
 * qcow2-meta.c): the layout checked cluster by cluster in memory, the
 * option checks with QEMU's messages, and images written through the
 * block layer compared with what `qemu-img create` writes for the same
 * options (qemu-img check and info are the oracles). */
#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blockdev/block.h"
#include "blockdev/create.h"
#include "blockdev/qcow2-meta.h"
#include "config.h"
#include "cunit-main.h"
#include "unit-block.h"
#include "util/util.h"

/* ---- the layout, in memory --------------------------------------------- */

/* The whole image of p in memory (callers keep it small). */
static uint8_t *build(const Qcow2CreateParams *p, Qcow2CreateLayout *l)
{
    Error *err = NULL;
    uint8_t *img;

    if (!qcow2_create_layout(p, l, &err)) {
        fprintf(stderr, "\nlayout: %s\n", error_get_pretty(err));
        error_free(err);
        CU_FAIL_FATAL("layout failed");
    }
    CU_ASSERT_FATAL(l->total_clusters * l->cluster_size <= 128 << 20);
    img = xcalloc(l->total_clusters, l->cluster_size);
    for (uint64_t i = 0; i < qcow2_create_meta_clusters(l); i++) {
        qcow2_create_cluster(p, l, i, img + i * l->cluster_size);
    }
    return img;
}

/* Parse and check the image as the qcow2 driver does at open, then walk
 * every table: each cluster of the file is referenced exactly once
 * (header, reftable, refblocks, L1, L2, data) and has refcount 1. */
static void verify(const Qcow2CreateParams *p, const Qcow2CreateLayout *l,
                   const uint8_t *img)
{
    uint64_t cs = l->cluster_size, fsize = l->total_clusters * cs;
    uint8_t *refs = xcalloc(l->total_clusters, 1);
    Error *err = NULL;
    Qcow2Header h;

#define MARK(off) do {                                                   \
        uint64_t c_ = (off) / cs;                                        \
        CU_ASSERT_FATAL(c_ < l->total_clusters);                         \
        refs[c_]++;                                                      \
    } while (0)

    if (!qcow2_header_parse(img, cs, &h, &err) ||
        !qcow2_header_check_features(&h, true, false, &err) ||
        !qcow2_header_check_layout(&h, fsize, &err)) {
        fprintf(stderr, "\nheader: %s\n", error_get_pretty(err));
        error_free(err);
        CU_FAIL_FATAL("header rejected");
    }
    CU_ASSERT_EQUAL(h.version, p->version);
    CU_ASSERT_EQUAL(h.cluster_bits, p->cluster_bits);
    CU_ASSERT_EQUAL(h.size, p->size);
    CU_ASSERT_EQUAL(h.refcount_order, p->refcount_order);
    CU_ASSERT_EQUAL(h.extended_l2, p->extended_l2);
    CU_ASSERT_EQUAL(h.compression_type, p->compression_type);
    CU_ASSERT_EQUAL(!!(h.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS),
                    p->lazy_refcounts);
    CU_ASSERT_EQUAL(h.l1_size, l->l1_entries);
    CU_ASSERT_EQUAL(h.has_backing_file, p->backing_file != NULL);
    if (p->backing_file != NULL) {
        CU_ASSERT_STRING_EQUAL(h.backing_file, p->backing_file);
    }
    CU_ASSERT_EQUAL(h.has_backing_format, p->backing_format != NULL);
    if (p->backing_format != NULL) {
        CU_ASSERT_STRING_EQUAL(h.backing_format, p->backing_format);
    }

    MARK(0);
    for (uint64_t i = 0; i < h.refcount_table_clusters; i++) {
        MARK(h.refcount_table_offset + i * cs);
    }
    for (uint64_t i = 0; i < (h.refcount_table_clusters * cs) / 8; i++) {
        uint64_t rb = get_be64(img + h.refcount_table_offset + 8 * i);

        if (rb != 0) {
            MARK(rb);
        }
    }
    for (uint64_t i = 0; i < DIV_ROUND_UP((uint64_t)h.l1_size * 8, cs);
         i++) {
        MARK(h.l1_table_offset + i * cs);
    }
    for (uint64_t i = 0; i < h.l1_size; i++) {
        uint64_t e = get_be64(img + h.l1_table_offset + 8 * i);
        uint64_t l2;

        CU_ASSERT_EQUAL_FATAL(qcow2_l1_decode(&h, e, &l2), 0);
        CU_ASSERT_EQUAL(l2 != 0, p->preallocate);
        if (l2 == 0) {
            continue;
        }
        CU_ASSERT((e & QCOW2_OFLAG_COPIED) != 0);
        MARK(l2);
        for (uint64_t k = 0; k < (1ULL << h.l2_bits); k++) {
            uint64_t guest = (i << h.l2_bits | k) * cs;
            const uint8_t *ent = img + l2 + k * h.l2_entry_size;
            Qcow2Mapping m;

            CU_ASSERT_EQUAL_FATAL(qcow2_l2_decode(&h, get_be64(ent), &m),
                                  0);
            if (guest >= p->size) {
                CU_ASSERT_EQUAL(m.type, QCOW2_CLUSTER_UNALLOCATED);
                continue;
            }
            CU_ASSERT_EQUAL(m.type, QCOW2_CLUSTER_NORMAL);
            CU_ASSERT(m.copied);
            CU_ASSERT_EQUAL(m.host_offset, l->data_offset + guest);
            if (h.extended_l2) {
                /* Host cluster set, every subcluster unallocated. */
                CU_ASSERT_EQUAL(get_be64(ent + 8), 0);
            }
            MARK(m.host_offset);
        }
    }
    /* Refcounts: 1 for every cluster of the file, 0 past it. */
    for (uint64_t c = 0; c < l->total_clusters; c++) {
        uint64_t per = (cs * 8) >> h.refcount_order;
        uint64_t rb = get_be64(img + h.refcount_table_offset +
                               8 * (c / per));

        if (refs[c] != 1 || rb == 0 ||
            qcow2_refcount_get(img + rb, h.refcount_order, c % per) != 1) {
            fprintf(stderr, "\ncluster %llu: %u references, refcount "
                    "block 0x%llx\n", (unsigned long long)c, refs[c],
                    (unsigned long long)rb);
            CU_FAIL_FATAL("refcount mismatch");
        }
    }
    {
        uint64_t per = (cs * 8) >> h.refcount_order;
        uint64_t last = l->total_clusters - 1;
        uint64_t rb = get_be64(img + h.refcount_table_offset +
                               8 * (last / per));

        uint64_t nonzero = 0;

        for (uint64_t i = last % per + 1; i < per; i++) {
            nonzero += qcow2_refcount_get(img + rb, h.refcount_order, i) != 0;
        }
        CU_ASSERT_EQUAL(nonzero, 0);
    }
    free(refs);
#undef MARK
}

static void check_params(Qcow2CreateParams p)
{
    Qcow2CreateLayout l;
    uint8_t *img = build(&p, &l);

    verify(&p, &l, img);
    free(img);
}

static void test_layout_defaults(void)
{
    Qcow2CreateParams p = {
        .size = 64 << 20, .version = 3, .cluster_bits = 16,
        .refcount_order = 4,
    };
    Qcow2CreateLayout l;
    uint8_t *img = build(&p, &l);

    /* qemu-img create's layout: header, reftable, one refblock, L1. */
    CU_ASSERT_EQUAL(l.reftable_offset, 65536);
    CU_ASSERT_EQUAL(l.refblocks_offset, 2 * 65536);
    CU_ASSERT_EQUAL(l.l1_offset, 3 * 65536);
    CU_ASSERT_EQUAL(l.total_clusters, 4);
    CU_ASSERT_EQUAL(l.l1_entries, 1);
    verify(&p, &l, img);
    free(img);
}

static void test_layout_combinations(void)
{
    static const uint32_t bits[] = { 9, 12, 16, 21 };
    static const uint64_t sizes[] = {
        0, 512, 1 << 20, (64 << 20) + 512, 1ULL << 30,
    };

    for (size_t b = 0; b < sizeof(bits) / sizeof(bits[0]); b++) {
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            for (uint32_t order = 0; order <= 6; order++) {
                check_params((Qcow2CreateParams) {
                    .size = sizes[s], .version = 3,
                    .cluster_bits = bits[b], .refcount_order = order,
                });
            }
            check_params((Qcow2CreateParams) {
                .size = sizes[s], .version = 2, .cluster_bits = bits[b],
                .refcount_order = 4,
            });
        }
    }
}

static void test_layout_features(void)
{
    check_params((Qcow2CreateParams) {
        .size = 8 << 20, .version = 3, .cluster_bits = 16,
        .refcount_order = 4, .extended_l2 = true, .lazy_refcounts = true,
        .compression_type = 1,
    });
    check_params((Qcow2CreateParams) {
        .size = 8 << 20, .version = 3, .cluster_bits = 16,
        .refcount_order = 4, .backing_file = "../base image.raw",
        .backing_format = "raw",
    });
    check_params((Qcow2CreateParams) {
        .size = 8 << 20, .version = 2, .cluster_bits = 9,
        .refcount_order = 4, .backing_file = "base.qcow2",
    });
}

static void test_layout_preallocated(void)
{
    /* Many L2 tables and refcount blocks: 512-byte clusters, 1-bit
     * refcounts (4096 per block) and 64-bit ones (64 per block). */
    static const struct { uint32_t bits, order; uint64_t size; } c[] = {
        { 9, 0, 4 << 20 }, { 9, 6, 4 << 20 }, { 9, 4, (4 << 20) + 512 },
        { 12, 4, 16 << 20 }, { 16, 4, 64 << 20 }, { 16, 6, 1 << 20 },
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        check_params((Qcow2CreateParams) {
            .size = c[i].size, .version = 3, .cluster_bits = c[i].bits,
            .refcount_order = c[i].order, .preallocate = true,
        });
        check_params((Qcow2CreateParams) {
            .size = c[i].size, .version = 2, .cluster_bits = c[i].bits,
            .refcount_order = 4, .preallocate = true,
        });
    }
    check_params((Qcow2CreateParams) {
        .size = 16 << 20, .version = 3, .cluster_bits = 14,
        .refcount_order = 4, .preallocate = true, .extended_l2 = true,
        .backing_file = "b.qcow2", .backing_format = "qcow2",
    });
}

static void test_layout_limits(void)
{
    Qcow2CreateParams p = {
        .size = 1ULL << 62, .version = 3, .cluster_bits = 9,
        .refcount_order = 4,
    };
    Qcow2CreateLayout l;
    Error *err = NULL;
    char name[1100];

    CU_ASSERT_FALSE(qcow2_create_layout(&p, &l, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err), "Could not resize image: "
                           "Failed to grow the L1 table: File too large");
    error_free(err);
    err = NULL;
    /* The largest L1 QEMU allows: 32 MiB of entries. */
    p.cluster_bits = 16;
    p.size = (32ULL << 20) / 8 * (65536ULL / 8) * 65536;
    CU_ASSERT_TRUE(qcow2_create_layout(&p, &l, NULL));
    CU_ASSERT_EQUAL(l.l1_entries, (32u << 20) / 8);
    p.size += 65536;
    CU_ASSERT_FALSE(qcow2_create_layout(&p, &l, NULL));
    /* A backing file name longer than qcow2 allows. */
    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    p.size = 1 << 20;
    p.backing_file = name;
    CU_ASSERT_FALSE(qcow2_create_layout(&p, &l, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
}

/* ---- option checks, with QEMU's messages ------------------------------- */

static BlockdevCreateOptions *parse_opts(const char *json)
{
    json_object *obj = json_tokener_parse(json);
    BlockdevCreateOptions *o = NULL;
    Error *err = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(obj);
    if (!qapi_parse_BlockdevCreateOptions(obj, NULL, 0, &o, &err)) {
        fprintf(stderr, "\n%s: %s\n", json, error_get_pretty(err));
        error_free(err);
    }
    json_object_put(obj);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    return o;
}

static void expect_qcow2_error(const char *extra, const char *msg)
{
    char *json = xasprintf("{\"driver\": \"qcow2\", \"file\": \"f\", %s}",
                           extra);
    BlockdevCreateOptions *o = parse_opts(json);
    Qcow2CreateParams p;
    Error *err = NULL;

    CU_ASSERT_FALSE(blk_create_qcow2_params(&o->u.qcow2, &p, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (strcmp(error_get_pretty(err), msg) != 0) {
        fprintf(stderr, "\n%s:\n  got  '%s'\n  want '%s'\n", extra,
                error_get_pretty(err), msg);
        CU_FAIL("unexpected message");
    }
    error_free(err);
    qapi_free_BlockdevCreateOptions(o);
    free(json);
}

static void test_qcow2_option_errors(void)
{
    /* The messages of qemu-storage-daemon 7.2 for the same options. */
    expect_qcow2_error("\"size\": 1000",
                       "Image size must be a multiple of 512 bytes");
    expect_qcow2_error("\"size\": 9223372036854775807",
                       "Image size must be a multiple of 512 bytes");
    expect_qcow2_error("\"size\": 1048576, \"cluster-size\": 1000",
                       "Cluster size must be a power of two between 512 "
                       "and 2048k");
    expect_qcow2_error("\"size\": 1048576, \"cluster-size\": 256",
                       "Cluster size must be a power of two between 512 "
                       "and 2048k");
    expect_qcow2_error("\"size\": 1048576, \"cluster-size\": 4194304",
                       "Cluster size must be a power of two between 512 "
                       "and 2048k");
    expect_qcow2_error("\"size\": 1048576, \"backing-fmt\": \"raw\"",
                       "Backing format cannot be used without backing "
                       "file");
    expect_qcow2_error("\"size\": 1048576, \"extended-l2\": true, "
                       "\"cluster-size\": 4096",
                       "Extended L2 entries are only supported with "
                       "cluster sizes of at least 16384 bytes");
    expect_qcow2_error("\"size\": 1048576, \"version\": \"v2\", "
                       "\"extended-l2\": true",
                       "Extended L2 entries are only supported with "
                       "compatibility level 1.1 and above (use version=v3 "
                       "or greater)");
    expect_qcow2_error("\"size\": 1048576, \"version\": \"v2\", "
                       "\"lazy-refcounts\": true",
                       "Lazy refcounts only supported with compatibility "
                       "level 1.1 and above (use version=v3 or greater)");
    expect_qcow2_error("\"size\": 1048576, \"refcount-bits\": 3",
                       "Refcount width must be a power of two and may not "
                       "exceed 64 bits");
    expect_qcow2_error("\"size\": 1048576, \"refcount-bits\": 128",
                       "Refcount width must be a power of two and may not "
                       "exceed 64 bits");
    expect_qcow2_error("\"size\": 1048576, \"refcount-bits\": 0",
                       "Refcount width must be a power of two and may not "
                       "exceed 64 bits");
    expect_qcow2_error("\"size\": 1048576, \"version\": \"v2\", "
                       "\"refcount-bits\": 8",
                       "Different refcount widths than 16 bits require "
                       "compatibility level 1.1 or above (use version=v3 "
                       "or greater)");
    expect_qcow2_error("\"size\": 1048576, \"version\": \"v2\", "
                       "\"compression-type\": \"zstd\"",
                       "Non-zlib compression type is only supported with "
                       "compatibility level 1.1 and above (use version=v3 "
                       "or greater)");
    expect_qcow2_error("\"size\": 1048576, \"backing-file\": \"/x\", "
                       "\"preallocation\": \"metadata\"",
                       "Backing file and preallocation can only be used at "
                       "the same time if extended_l2 is on");
    expect_qcow2_error("\"size\": 1048576, \"data-file-raw\": true",
                       "data-file-raw requires data-file");
    /* blockd's own limits. */
    expect_qcow2_error("\"size\": 1048576, \"data-file\": \"g\"",
                       "qcow2: images with an external data file are not "
                       "supported");
    expect_qcow2_error("\"size\": 1048576, \"encrypt\": {\"format\": "
                       "\"luks\"}",
                       "qcow2: encrypted images are not supported");
#ifndef HAVE_ZSTD
    expect_qcow2_error("\"size\": 1048576, \"compression-type\": \"zstd\"",
                       "Compression type 'zstd' is not supported: blockd "
                       "was built without zstd");
#endif
}

static void test_qcow2_option_defaults(void)
{
    BlockdevCreateOptions *o = parse_opts("{\"driver\": \"qcow2\", "
                                          "\"file\": \"f\", \"size\": 0}");
    Qcow2CreateParams p;

    CU_ASSERT_TRUE_FATAL(blk_create_qcow2_params(&o->u.qcow2, &p, NULL));
    CU_ASSERT_EQUAL(p.version, 3);
    CU_ASSERT_EQUAL(p.cluster_bits, 16);
    CU_ASSERT_EQUAL(p.refcount_order, 4);
    CU_ASSERT_FALSE(p.extended_l2);
    CU_ASSERT_FALSE(p.lazy_refcounts);
    CU_ASSERT_EQUAL(p.compression_type, 0);
    CU_ASSERT_PTR_NULL(p.backing_file);
    CU_ASSERT_FALSE(p.preallocate);
    qapi_free_BlockdevCreateOptions(o);
}

static void test_other_drivers(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockdevCreateOptions *o = parse_opts("{\"driver\": \"null-co\"}");
    Error *err = NULL;

    CU_ASSERT_PTR_NULL(blk_create_new(g, o, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "Driver does not support blockdev-create");
    error_free(err);
    err = NULL;
    qapi_free_BlockdevCreateOptions(o);
    o = parse_opts("{\"driver\": \"qcow2\", \"file\": \"nope\", "
                   "\"size\": 1048576}");
    CU_ASSERT_PTR_NULL(blk_create_new(g, o, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "Cannot find device='nope' nor node-name='nope'");
    error_free(err);
    qapi_free_BlockdevCreateOptions(o);
    o = parse_opts("{\"driver\": \"file\", \"filename\": \"/nonexistent/x\","
                   " \"size\": 0}");
    {
        BlockCreate *c = blk_create_new(g, o, NULL);

        err = NULL;
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        CU_ASSERT_FALSE(blk_create_run(c, &err));
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        CU_ASSERT_STRING_EQUAL(error_get_pretty(err), "Could not create "
                               "'/nonexistent/x': No such file or directory");
        error_free(err);
        blk_create_free(c);
    }
    qapi_free_BlockdevCreateOptions(o);
    o = parse_opts("{\"driver\": \"file\", \"filename\": \"/tmp/x\","
                   " \"size\": 0, \"preallocation\": \"metadata\"}");
    {
        BlockCreate *c = blk_create_new(g, o, NULL);

        err = NULL;
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        CU_ASSERT_FALSE(blk_create_run(c, &err));
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                               "Unsupported preallocation mode: metadata");
        error_free(err);
        blk_create_free(c);
    }
    qapi_free_BlockdevCreateOptions(o);
    blk_graph_free(g);
}

/* ---- through the block layer, against qemu-img ------------------------- */

static BlockGraph *graph;

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    st = system(cmd);
    if (st != 0) {
        fprintf(stderr, "\ncommand failed (%d): %s\n", st, cmd);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Create from JSON options; true on success (a failure is printed). */
static bool create_json(const char *json)
{
    BlockdevCreateOptions *o = parse_opts(json);
    Error *err = NULL;
    BlockCreate *c = blk_create_new(graph, o, &err);
    bool ok = c != NULL && blk_create_run(c, &err);

    if (!ok) {
        fprintf(stderr, "\ncreate %s: %s\n", json, error_get_pretty(err));
        error_free(err);
    }
    if (c != NULL) {
        BlockCreateProgress *pr = blk_create_progress(c);

        if (ok) {
            CU_ASSERT_EQUAL(pr->done, pr->total);
        }
        blk_create_free(c);
    }
    qapi_free_BlockdevCreateOptions(o);
    return ok;
}

static void read_header(const char *path, Qcow2Header *h)
{
    uint8_t buf[65536] = { 0 };
    FILE *f = fopen(path, "rb");
    size_t n;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    CU_ASSERT_TRUE_FATAL(qcow2_header_parse(buf, n, h, NULL));
}

/* The qcow2 options of blockdev-create (JSON members) and the same for
 * qemu-img create -o. */
typedef struct Combo {
    const char *json;
    const char *qemu_img;
} Combo;

static const Combo combos[] = {
    { "", "" },
    { ", \"version\": \"v2\"", "compat=0.10" },
    { ", \"cluster-size\": 512", "cluster_size=512" },
    { ", \"cluster-size\": 2097152", "cluster_size=2M" },
    { ", \"refcount-bits\": 1", "refcount_bits=1" },
    { ", \"refcount-bits\": 64", "refcount_bits=64" },
    { ", \"lazy-refcounts\": true", "lazy_refcounts=on" },
    { ", \"extended-l2\": true", "extended_l2=on" },
    { ", \"extended-l2\": true, \"cluster-size\": 16384",
      "extended_l2=on,cluster_size=16k" },
#ifdef HAVE_ZSTD
    { ", \"compression-type\": \"zstd\"", "compression_type=zstd" },
#endif
    { ", \"backing-file\": \"base.raw\", \"backing-fmt\": \"raw\"",
      "backing_file=base.raw,backing_fmt=raw" },
    { ", \"preallocation\": \"metadata\"", "preallocation=metadata" },
    { ", \"preallocation\": \"falloc\"", "preallocation=falloc" },
    { ", \"preallocation\": \"full\"", "preallocation=full" },
    { ", \"preallocation\": \"metadata\", \"version\": \"v2\", "
      "\"cluster-size\": 4096", "preallocation=metadata,compat=0.10,"
      "cluster_size=4k" },
    { ", \"preallocation\": \"full\", \"extended-l2\": true, "
      "\"backing-file\": \"base.raw\", \"backing-fmt\": \"raw\"",
      "preallocation=full,extended_l2=on,backing_file=base.raw,"
      "backing_fmt=raw" },
};

/* qemu-img map's extents with the host offsets dropped and neighbours
 * of the same kind merged: where QEMU puts a cluster may differ. */
#define MERGE_MAP                                                       \
    "import json, sys\n"                                               \
    "out = []\n"                                                       \
    "for e in json.load(sys.stdin):\n"                                 \
    "    k = (e[\"depth\"], e[\"present\"], e[\"zero\"], e[\"data\"])\n" \
    "    if out and out[-1][0] == k:\n"                                \
    "        out[-1][2] += e[\"length\"]\n"                          \
    "    else:\n"                                                      \
    "        out.append([k, e[\"start\"], e[\"length\"]])\n"       \
    "print(out)\n"

static void test_qcow2_vs_qemu_img(void)
{
    const char *dir = unit_tmpdir();
    char *ours = xasprintf("%s/ours.qcow2", dir);
    char *theirs = xasprintf("%s/theirs.qcow2", dir);
    char *base = xasprintf("%s/base.raw", dir);

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f raw %s 3M", base), 0);
    for (size_t i = 0; i < sizeof(combos) / sizeof(combos[0]); i++) {
        const Combo *c = &combos[i];
        char *json;
        Qcow2Header a, b;
        BlockNode *bs;

        json = xasprintf("{\"driver\": \"file\", \"filename\": \"%s\", "
                         "\"size\": 0}", ours);
        CU_ASSERT_TRUE_FATAL(create_json(json));
        free(json);
        json = xasprintf("{\"driver\": \"file\", \"filename\": \"%s\", "
                         "\"node-name\": \"f%zu\"}", ours, i);
        bs = unit_open_json(graph, json, NULL);
        free(json);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        json = xasprintf("{\"driver\": \"qcow2\", \"file\": \"f%zu\", "
                         "\"size\": 3145728%s}", i, c->json);
        CU_ASSERT_TRUE_FATAL(create_json(json));
        free(json);
        blk_unref(bs);

        CU_ASSERT_EQUAL(run("qemu-img create -q -f qcow2 %s%s %s 3M",
                            c->qemu_img[0] ? "-o " : "", c->qemu_img,
                            theirs), 0);
        CU_ASSERT_EQUAL(run("qemu-img check -q %s", ours), 0);
        read_header(ours, &a);
        read_header(theirs, &b);
        CU_ASSERT_EQUAL(a.version, b.version);
        CU_ASSERT_EQUAL(a.cluster_bits, b.cluster_bits);
        CU_ASSERT_EQUAL(a.size, b.size);
        CU_ASSERT_EQUAL(a.l1_size, b.l1_size);
        CU_ASSERT_EQUAL(a.refcount_order, b.refcount_order);
        CU_ASSERT_EQUAL(a.incompatible_features, b.incompatible_features);
        CU_ASSERT_EQUAL(a.compatible_features, b.compatible_features);
        CU_ASSERT_EQUAL(a.autoclear_features, b.autoclear_features);
        CU_ASSERT_EQUAL(a.compression_type, b.compression_type);
        CU_ASSERT_STRING_EQUAL(a.backing_file, b.backing_file);
        CU_ASSERT_STRING_EQUAL(a.backing_format, b.backing_format);
        /* The same guest view and allocation map. */
        CU_ASSERT_EQUAL(run("qemu-img compare -q %s %s", ours, theirs), 0);
        CU_ASSERT_EQUAL(run("cd %s && for f in ours theirs; do qemu-img map "
                            "--output=json $f.qcow2 | python3 -c '%s' > "
                            "$f.map; done && diff ours.map theirs.map", dir,
                            MERGE_MAP), 0);
        /* And blockd's driver writes to it. */
        json = xasprintf("{\"driver\": \"qcow2\", \"node-name\": \"q%zu\", "
                         "\"file\": {\"driver\": \"file\", \"filename\": "
                         "\"%s\"}, \"backing\": null}", i, ours);
        bs = unit_open_json(graph, json, NULL);
        free(json);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        {
            uint8_t buf[4096];

            memset(buf, 0xa5, sizeof(buf));
            CU_ASSERT_EQUAL(blk_pwrite(bs, 1 << 20, sizeof(buf), buf, 0), 0);
            CU_ASSERT_EQUAL(blk_flush(bs), 0);
        }
        blk_unref(bs);
        CU_ASSERT_EQUAL(run("qemu-img check -q %s", ours), 0);
        CU_ASSERT_EQUAL(run("qemu-io -c 'read -P 0xa5 1M 4k' -c "
                            "'read -P 0 0 1M' %s >/dev/null", ours), 0);
    }
    free(ours);
    free(theirs);
    free(base);
}

static void test_file_and_raw(void)
{
    const char *dir = unit_tmpdir();
    char *path = xasprintf("%s/f.raw", dir);
    char *json;
    struct stat st;
    BlockNode *bs;

    /* full: every byte written; falloc: allocated; off: sparse. */
    json = xasprintf("{\"driver\": \"file\", \"filename\": \"%s\", "
                     "\"size\": 4194304, \"preallocation\": \"full\"}",
                     path);
    CU_ASSERT_TRUE_FATAL(create_json(json));
    free(json);
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 4194304);
    CU_ASSERT(st.st_blocks * 512 >= 4194304);
    json = xasprintf("{\"driver\": \"file\", \"filename\": \"%s\", "
                     "\"size\": 1000}", path);
    CU_ASSERT_TRUE_FATAL(create_json(json));
    free(json);
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 1000);
    CU_ASSERT_EQUAL(st.st_blocks, 0);

    /* raw over the file node: resized and preallocated. */
    json = xasprintf("{\"driver\": \"file\", \"filename\": \"%s\", "
                     "\"node-name\": \"rawfile\"}", path);
    bs = unit_open_json(graph, json, NULL);
    free(json);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(create_json("{\"driver\": \"raw\", \"file\": "
                               "\"rawfile\", \"size\": 2097152, "
                               "\"preallocation\": \"falloc\"}"));
    CU_ASSERT_EQUAL(blk_getlength(bs), 2097152);
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 2097152);
    CU_ASSERT(st.st_blocks * 512 >= 2097152);
    CU_ASSERT_TRUE(create_json("{\"driver\": \"raw\", \"file\": "
                               "\"rawfile\", \"size\": 1048576}"));
    CU_ASSERT_EQUAL(blk_getlength(bs), 1048576);
    blk_unref(bs);
    CU_ASSERT_EQUAL(run("qemu-img info %s | grep -q 'virtual size: 1 MiB'",
                        path), 0);
    free(path);
}

static int images_init(void)
{
    return unit_qemu_graph_init(&graph);
}

static int images_cleanup(void)
{
    return unit_graph_cleanup(&graph);
}

static CU_TestInfo layout_tests[] = {
    { "defaults", test_layout_defaults },
    { "combinations", test_layout_combinations },
    { "features", test_layout_features },
    { "preallocated", test_layout_preallocated },
    { "limits", test_layout_limits },
    { "qcow2_option_errors", test_qcow2_option_errors },
    { "qcow2_option_defaults", test_qcow2_option_defaults },
    { "other_drivers", test_other_drivers },
    CU_TEST_INFO_NULL,
};

static CU_TestInfo image_tests[] = {
    { "qcow2_vs_qemu_img", test_qcow2_vs_qemu_img },
    { "file_and_raw", test_file_and_raw },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "create-layout", .pTests = layout_tests },
    { .pName = "create-images", .pTests = image_tests,
      .pInitFunc = images_init, .pCleanupFunc = images_cleanup },
    CU_SUITE_INFO_NULL,
};
