/* test-qcow2.c - the qcow2 metadata parser (pure, from buffers) and the
 * driver through the block layer, against images made by qemu-img and
 * qemu-io (the oracles). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "blockdev/qcow2-meta.h"
#include "cunit-main.h"
#include "unit-block.h"
#include "util/util.h"

/* ---- building headers by hand ------------------------------------------ */

#define HBUF 65536
#define FSIZE (1ULL << 30)

/* A valid v3 image header: 64 KiB clusters, 1 GiB virtual, L1 at
 * cluster 3, reftable at cluster 1, refcount_order 4. */
static void make_v3(uint8_t *b)
{
    memset(b, 0, HBUF);
    put_be32(b, QCOW2_MAGIC);
    put_be32(b + 4, 3);
    put_be32(b + 20, 16);
    put_be64(b + 24, 1ULL << 30);
    put_be32(b + 36, 2);              /* 1 GiB / 512 MiB per L2 */
    put_be64(b + 40, 3 * 65536);
    put_be64(b + 48, 65536);
    put_be32(b + 56, 1);
    put_be32(b + 96, 4);
    put_be32(b + 100, 112);
    /* extensions at 112: end marker (zeroes) */
}

static bool parse_ok(const uint8_t *b, size_t len, Qcow2Header *h)
{
    Error *err = NULL;
    bool ok = qcow2_header_parse(b, len, h, &err) &&
              qcow2_header_check_features(h, true, false, &err) &&
              qcow2_header_check_layout(h, FSIZE, &err);

    if (!ok) {
        CU_ASSERT_PTR_NOT_NULL(err);
        error_free(err);
    }
    return ok;
}

/* Expect failure with a message that contains needle. */
static void expect_fail(const uint8_t *b, size_t len, bool writable,
                        const char *needle)
{
    Qcow2Header h;
    Error *err = NULL;
    bool ok = qcow2_header_parse(b, len, &h, &err) &&
              qcow2_header_check_features(&h, writable, false, &err) &&
              qcow2_header_check_layout(&h, FSIZE, &err);

    CU_ASSERT_FALSE(ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (strstr(error_get_pretty(err), needle) == NULL) {
        fprintf(stderr, "\nerror '%s' lacks '%s'\n", error_get_pretty(err),
                needle);
        CU_FAIL("unexpected message");
    }
    error_free(err);
}

static void test_header_valid(void)
{
    static uint8_t b[HBUF];
    Qcow2Header h;

    make_v3(b);
    CU_ASSERT_TRUE_FATAL(parse_ok(b, HBUF, &h));
    CU_ASSERT_EQUAL(h.version, 3);
    CU_ASSERT_EQUAL(h.cluster_size, 65536);
    CU_ASSERT_EQUAL(h.l2_bits, 13);
    CU_ASSERT_EQUAL(h.refcount_bits, 16);
    CU_ASSERT_EQUAL(h.rb_bits, 15);
    CU_ASSERT_FALSE(h.has_backing_file);

    /* v2: 72-byte header, refcount order implied. */
    make_v3(b);
    put_be32(b + 4, 2);
    memset(b + 72, 0, 40);
    CU_ASSERT_TRUE(parse_ok(b, HBUF, &h));
    CU_ASSERT_EQUAL(h.header_length, 72);
    CU_ASSERT_EQUAL(h.refcount_order, 4);

    /* Backing file name and format extension. */
    make_v3(b);
    put_be32(b + 112, QCOW2_EXT_BACKING_FORMAT);
    put_be32(b + 116, 5);
    memcpy(b + 120, "qcow2", 5);
    put_be64(b + 8, 512);
    put_be32(b + 16, 8);
    memcpy(b + 512, "base.img", 8);
    CU_ASSERT_TRUE_FATAL(parse_ok(b, HBUF, &h));
    CU_ASSERT_STRING_EQUAL(h.backing_file, "base.img");
    CU_ASSERT_STRING_EQUAL(h.backing_format, "qcow2");
}

static void test_header_truncated(void)
{
    static uint8_t b[HBUF];

    make_v3(b);
    expect_fail(b, 0, true, "too short");
    expect_fail(b, 10, true, "too short");
    expect_fail(b, 71, true, "too short");
    expect_fail(b, 100, true, "too short");
    /* header_length beyond the buffer */
    put_be32(b + 100, 4096);
    expect_fail(b, 1024, true, "truncated");
    /* extensions running off the end of the buffer */
    make_v3(b);
    put_be32(b + 112, 0x12345678);
    put_be32(b + 116, 8);
    expect_fail(b, 124, true, "header extension");
}

static void test_header_bad_fields(void)
{
    static uint8_t b[HBUF];

    make_v3(b);
    put_be32(b, 0x514649fa);
    expect_fail(b, HBUF, true, "bad magic");
    make_v3(b);
    put_be32(b + 4, 4);
    expect_fail(b, HBUF, true, "version");
    for (uint32_t cb = 0; cb < 64; cb++) {
        Qcow2Header h;

        make_v3(b);
        put_be32(b + 20, cb);
        put_be32(b + 36, 1u << 20);   /* enough L1 for small clusters */
        if (cb < 9 || cb > 21) {
            expect_fail(b, HBUF, true, "cluster size");
        } else {
            Error *err = NULL;

            CU_ASSERT_TRUE(qcow2_header_parse(b, HBUF, &h, &err));
            error_free(err);
        }
    }
    make_v3(b);
    put_be32(b + 20, 0xffffffff);
    expect_fail(b, HBUF, true, "cluster size");
    make_v3(b);
    put_be32(b + 96, 7);
    expect_fail(b, HBUF, true, "refcount width");
    make_v3(b);
    put_be32(b + 96, 0xffffffff);
    expect_fail(b, HBUF, true, "refcount width");
    make_v3(b);
    put_be32(b + 100, 100);
    expect_fail(b, HBUF, true, "header length");
    make_v3(b);
    put_be32(b + 100, 108);
    expect_fail(b, HBUF, true, "header length");
    make_v3(b);
    put_be32(b + 100, 0x80000000);
    expect_fail(b, HBUF, true, "header length");
    make_v3(b);
    put_be64(b + 24, 1ULL << 63);
    expect_fail(b, HBUF, true, "too large");
    /* extended L2 with small clusters */
    make_v3(b);
    put_be32(b + 20, 12);
    put_be64(b + 72, QCOW2_INCOMPAT_EXTL2);
    expect_fail(b, HBUF, true, "extended L2");
}

static void test_header_l1(void)
{
    static uint8_t b[HBUF];

    make_v3(b);
    put_be32(b + 36, 0xffffffff);
    expect_fail(b, HBUF, true, "L1 table too large");
    make_v3(b);
    put_be32(b + 36, 1);              /* 1 GiB needs 2 entries */
    expect_fail(b, HBUF, true, "too small");
    make_v3(b);
    put_be64(b + 24, 1ULL << 62);     /* virtual size beyond any L1 */
    put_be32(b + 36, 4u << 20);
    expect_fail(b, HBUF, true, "L1 table");
    make_v3(b);
    put_be64(b + 40, 0);              /* L1 in the header */
    expect_fail(b, HBUF, true, "overlaps the image header");
    make_v3(b);
    put_be64(b + 40, 3 * 65536 + 512);
    expect_fail(b, HBUF, true, "not cluster aligned");
    make_v3(b);
    put_be64(b + 40, FSIZE);          /* past EOF */
    expect_fail(b, HBUF, true, "past the end");
    make_v3(b);
    put_be64(b + 40, 0xfffffffffff00000ULL);
    expect_fail(b, HBUF, true, "past the end");
}

static void test_header_reftable(void)
{
    static uint8_t b[HBUF];

    make_v3(b);
    put_be64(b + 48, 0);
    expect_fail(b, HBUF, true, "overlaps the image header");
    make_v3(b);
    put_be32(b + 56, 0);
    expect_fail(b, HBUF, true, "no refcount table");
    make_v3(b);
    put_be32(b + 56, 0xffffffff);
    expect_fail(b, HBUF, true, "refcount table too large");
    make_v3(b);
    put_be64(b + 48, FSIZE - 65536);
    put_be32(b + 56, 2);
    expect_fail(b, HBUF, true, "past the end");
    make_v3(b);
    put_be64(b + 48, 3 * 65536);      /* same cluster as the L1 */
    expect_fail(b, HBUF, true, "overlaps the refcount table");
    make_v3(b);
    put_be64(b + 48, 65536 + 8);
    expect_fail(b, HBUF, true, "not cluster aligned");
}

static void test_header_snapshots(void)
{
    static uint8_t b[HBUF];

    make_v3(b);
    put_be32(b + 60, 100000);
    put_be64(b + 64, 5 * 65536);
    expect_fail(b, HBUF, true, "too many snapshots");
    make_v3(b);
    put_be32(b + 60, 0xffffffff);
    put_be64(b + 64, 5 * 65536);
    expect_fail(b, HBUF, true, "too many snapshots");
    make_v3(b);
    put_be32(b + 60, 2);
    put_be64(b + 64, 0);
    expect_fail(b, HBUF, true, "overlaps the image header");
    make_v3(b);
    put_be32(b + 60, 2);
    put_be64(b + 64, 65536);          /* on the reftable */
    expect_fail(b, HBUF, true, "overlaps other metadata");
    make_v3(b);
    put_be32(b + 60, 2);
    put_be64(b + 64, FSIZE);
    expect_fail(b, HBUF, true, "past the end");
}

static void test_header_features(void)
{
    static uint8_t b[HBUF];
    Qcow2Header h;

    make_v3(b);
    put_be64(b + 72, 1ULL << 40);
    expect_fail(b, HBUF, false, "Unknown incompatible feature: 40");
    /* named through the feature table */
    make_v3(b);
    put_be64(b + 72, 1ULL << 9);
    put_be32(b + 112, QCOW2_EXT_FEATURE_TABLE);
    put_be32(b + 116, 48);
    b[120] = 0;
    b[121] = 9;
    memcpy(b + 122, "teleportation", 13);
    expect_fail(b, HBUF, false, "teleportation");

    make_v3(b);
    put_be64(b + 72, QCOW2_INCOMPAT_DIRTY);
    expect_fail(b, HBUF, true, "dirty");
    {
        Error *err = NULL;

        CU_ASSERT_TRUE(qcow2_header_parse(b, HBUF, &h, &err) &&
                       qcow2_header_check_features(&h, false, false, &err));
        error_free(err);
    }
    make_v3(b);
    put_be64(b + 72, QCOW2_INCOMPAT_CORRUPT);
    expect_fail(b, HBUF, true, "corrupt");
    make_v3(b);
    put_be64(b + 72, QCOW2_INCOMPAT_DATA_FILE);
    expect_fail(b, HBUF, false, "external data file");
    make_v3(b);
    put_be32(b + 32, 1);
    expect_fail(b, HBUF, false, "encrypted");
    make_v3(b);
    b[104] = 2;
    put_be64(b + 72, QCOW2_INCOMPAT_COMPRESSION);
    expect_fail(b, HBUF, false, "compression type");
    make_v3(b);
    b[104] = 1;                       /* zstd without the feature bit */
    expect_fail(b, HBUF, false, "compression");
}

static void test_header_extensions(void)
{
    static uint8_t b[HBUF];

    make_v3(b);
    put_be32(b + 112, QCOW2_EXT_BACKING_FORMAT);
    put_be32(b + 116, 0x7fffffff);
    expect_fail(b, HBUF, true, "too large");
    make_v3(b);
    put_be32(b + 112, QCOW2_EXT_BACKING_FORMAT);
    put_be32(b + 116, 2000);
    expect_fail(b, HBUF, true, "too long");
    make_v3(b);
    put_be32(b + 112, QCOW2_EXT_BACKING_FORMAT);
    put_be32(b + 116, 3);
    memcpy(b + 120, "raw", 3);
    put_be32(b + 128, QCOW2_EXT_BACKING_FORMAT);
    put_be32(b + 132, 3);
    memcpy(b + 136, "raw", 3);
    expect_fail(b, HBUF, true, "duplicate");
    make_v3(b);
    put_be32(b + 112, QCOW2_EXT_BITMAPS);
    put_be32(b + 116, 16);
    expect_fail(b, HBUF, true, "bitmaps extension");
    /* backing name: too long, in the header, outside cluster 0, NUL */
    make_v3(b);
    put_be64(b + 8, 512);
    put_be32(b + 16, 5000);
    expect_fail(b, HBUF, true, "backing file name length");
    make_v3(b);
    put_be64(b + 8, 16);
    put_be32(b + 16, 8);
    expect_fail(b, HBUF, true, "outside the header cluster");
    make_v3(b);
    put_be64(b + 8, 65530);
    put_be32(b + 16, 100);
    expect_fail(b, HBUF, true, "outside the header cluster");
    make_v3(b);
    put_be64(b + 8, 512);
    put_be32(b + 16, 4);
    memcpy(b + 512, "a\0b", 4);
    expect_fail(b, HBUF, true, "NUL");
    /* the backing name cuts off the extension area */
    make_v3(b);
    put_be64(b + 8, 128);
    put_be32(b + 16, 4);
    memcpy(b + 128, "base", 4);
    put_be32(b + 112, QCOW2_EXT_BACKING_FORMAT);
    put_be32(b + 116, 16);
    expect_fail(b, HBUF, true, "header extension");
}

/* Random byte flips of a valid header never crash the parser. */
static void test_header_mutations(void)
{
    static uint8_t b[HBUF];
    unsigned seed = 12345;
    unsigned ok = 0;

    for (int iter = 0; iter < 20000; iter++) {
        Qcow2Header h;
        Error *err = NULL;
        size_t len = HBUF;

        make_v3(b);
        for (int k = 0; k < 1 + iter % 6; k++) {
            size_t pos = rand_r(&seed) % 160;
            b[pos] ^= 1u << (rand_r(&seed) % 8);
        }
        if (iter % 7 == 0) {
            len = rand_r(&seed) % 200;
        }
        if (qcow2_header_parse(b, len, &h, &err) &&
            qcow2_header_check_features(&h, iter & 1, false, &err) &&
            qcow2_header_check_layout(&h, FSIZE, &err)) {
            ok++;
            CU_ASSERT_TRUE(h.cluster_bits >= 9 && h.cluster_bits <= 21);
            CU_ASSERT_TRUE(h.refcount_order <= 6);
            CU_ASSERT_TRUE((uint64_t)h.l1_size * 8 <= QCOW2_MAX_L1_BYTES);
        } else {
            CU_ASSERT_PTR_NOT_NULL(err);
        }
        error_free(err);
    }
    CU_ASSERT_TRUE(ok > 0);
}

static void test_l2_decode(void)
{
    static uint8_t b[HBUF];
    Qcow2Header h, h2;
    Qcow2Mapping m;
    Error *err = NULL;
    uint64_t l2;

    make_v3(b);
    CU_ASSERT_TRUE_FATAL(qcow2_header_parse(b, HBUF, &h, &err));
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, 0, &m), 0);
    CU_ASSERT_EQUAL(m.type, QCOW2_CLUSTER_UNALLOCATED);
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, QCOW2_OFLAG_COPIED | 0x50000, &m), 0);
    CU_ASSERT_EQUAL(m.type, QCOW2_CLUSTER_NORMAL);
    CU_ASSERT_EQUAL(m.host_offset, 0x50000);
    CU_ASSERT_TRUE(m.copied);
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, 1, &m), 0);
    CU_ASSERT_EQUAL(m.type, QCOW2_CLUSTER_ZERO_PLAIN);
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, 0x70000 | 1, &m), 0);
    CU_ASSERT_EQUAL(m.type, QCOW2_CLUSTER_ZERO_ALLOC);
    CU_ASSERT_EQUAL(m.host_offset, 0x70000);
    /* misaligned host offset */
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, 0x50200, &m), -EIO);
    /* COPIED on an unallocated entry */
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, QCOW2_OFLAG_COPIED, &m), -EIO);
    /* compressed: 64 KiB clusters: x = 62 - 8 = 54 */
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, QCOW2_OFLAG_COMPRESSED |
                                        (3ULL << 54) | 0x12345, &m), 0);
    CU_ASSERT_EQUAL(m.type, QCOW2_CLUSTER_COMPRESSED);
    CU_ASSERT_EQUAL(m.host_offset, 0x12345);
    CU_ASSERT_EQUAL(m.compressed_size, 4 * 512 - 0x145);
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, QCOW2_OFLAG_COMPRESSED, &m), -EIO);
    /* L1 */
    CU_ASSERT_EQUAL(qcow2_l1_decode(&h, QCOW2_OFLAG_COPIED | 0x40000, &l2), 0);
    CU_ASSERT_EQUAL(l2, 0x40000);
    CU_ASSERT_EQUAL(qcow2_l1_decode(&h, 0x40200, &l2), -EIO);

    /* v2 has no zero flag */
    make_v3(b);
    put_be32(b + 4, 2);
    memset(b + 72, 0, 40);
    CU_ASSERT_TRUE_FATAL(qcow2_header_parse(b, HBUF, &h2, &err));
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h2, 1, &m), -EIO);

    /* 2 MiB clusters: x = 62 - 13 = 49 */
    make_v3(b);
    put_be32(b + 20, 21);
    CU_ASSERT_TRUE_FATAL(qcow2_header_parse(b, HBUF, &h2, &err));
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h2, QCOW2_OFLAG_COMPRESSED |
                                         (9ULL << 49) | 0x200200, &m), 0);
    CU_ASSERT_EQUAL(m.host_offset, 0x200200);
    CU_ASSERT_EQUAL(m.compressed_size, 10 * 512);
    error_free(err);
}

static void test_subclusters(void)
{
    static uint8_t b[HBUF];
    Qcow2Header h;
    Qcow2Mapping m;
    Error *err = NULL;

    make_v3(b);
    put_be64(b + 72, QCOW2_INCOMPAT_EXTL2);
    CU_ASSERT_TRUE_FATAL(qcow2_header_parse(b, HBUF, &h, &err));
    CU_ASSERT_EQUAL(h.l2_entry_size, 16);
    CU_ASSERT_EQUAL(h.l2_bits, 12);
    CU_ASSERT_EQUAL(h.subcluster_bits, 11);
    /* zero flag is not a zero cluster with extended L2 */
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, 0x50000, &m), 0);
    CU_ASSERT_EQUAL(qcow2_subcluster_type(&m, 1, 0), QCOW2_CLUSTER_NORMAL);
    CU_ASSERT_EQUAL(qcow2_subcluster_type(&m, 1, 1),
                    QCOW2_CLUSTER_UNALLOCATED_ALLOC);
    CU_ASSERT_EQUAL(qcow2_subcluster_type(&m, 1ULL << 33, 1),
                    QCOW2_CLUSTER_ZERO_ALLOC);
    CU_ASSERT_EQUAL(qcow2_subcluster_type(&m, (1ULL << 33) | 2, 1), -EIO);
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, 0, &m), 0);
    CU_ASSERT_EQUAL(qcow2_subcluster_type(&m, 1ULL << 63, 31),
                    QCOW2_CLUSTER_ZERO_PLAIN);
    CU_ASSERT_EQUAL(qcow2_subcluster_type(&m, 0, 31),
                    QCOW2_CLUSTER_UNALLOCATED);
    CU_ASSERT_EQUAL(qcow2_subcluster_type(&m, 1u << 31, 31), -EIO);
    CU_ASSERT_EQUAL(qcow2_l2_decode(&h, QCOW2_OFLAG_COMPRESSED | 0x12345,
                                    &m), 0);
    CU_ASSERT_EQUAL(qcow2_subcluster_type(&m, 0, 5),
                    QCOW2_CLUSTER_COMPRESSED);
    CU_ASSERT_EQUAL(qcow2_subcluster_type(&m, 4, 5), -EIO);
    error_free(err);
}

static void test_refcounts(void)
{
    uint8_t blk[512];

    for (uint32_t order = 0; order <= 6; order++) {
        uint64_t n = 512 * 8 >> order;
        uint64_t max = qcow2_refcount_max(order);

        memset(blk, 0, sizeof(blk));
        for (uint64_t i = 0; i < n; i++) {
            qcow2_refcount_set(blk, order, i, (i * 7 + 3) & max);
        }
        for (uint64_t i = 0; i < n; i++) {
            CU_ASSERT_EQUAL(qcow2_refcount_get(blk, order, i),
                            (i * 7 + 3) & max);
        }
        /* set one entry to max and back; neighbours untouched */
        qcow2_refcount_set(blk, order, 5, max);
        CU_ASSERT_EQUAL(qcow2_refcount_get(blk, order, 5), max);
        CU_ASSERT_EQUAL(qcow2_refcount_get(blk, order, 4), (4 * 7 + 3) & max);
        CU_ASSERT_EQUAL(qcow2_refcount_get(blk, order, 6), (6 * 7 + 3) & max);
    }
    CU_ASSERT_EQUAL(qcow2_refcount_max(0), 1);
    CU_ASSERT_EQUAL(qcow2_refcount_max(4), 65535);
    CU_ASSERT_EQUAL(qcow2_refcount_max(6), UINT64_MAX);
    /* 1-bit refcounts: bit 0 is the LSB of byte 0 */
    memset(blk, 0, sizeof(blk));
    qcow2_refcount_set(blk, 0, 0, 1);
    qcow2_refcount_set(blk, 0, 9, 1);
    CU_ASSERT_EQUAL(blk[0], 1);
    CU_ASSERT_EQUAL(blk[1], 2);
    qcow2_refcount_set(blk, 4, 1, 0x1234);
    CU_ASSERT_EQUAL(blk[2], 0x12);
    CU_ASSERT_EQUAL(blk[3], 0x34);
}

static size_t put_snapshot(uint8_t *p, uint64_t l1off, uint32_t l1n,
                           const char *id, const char *name,
                           uint32_t extra, uint64_t disk)
{
    size_t off;

    memset(p, 0, 40);
    put_be64(p, l1off);
    put_be32(p + 8, l1n);
    put_be16(p + 12, strlen(id));
    put_be16(p + 14, strlen(name));
    put_be32(p + 36, extra);
    memset(p + 40, 0, extra);
    if (extra >= 16) {
        put_be64(p + 48, disk);
    }
    off = 40 + extra;
    memcpy(p + off, id, strlen(id));
    off += strlen(id);
    memcpy(p + off, name, strlen(name));
    off += strlen(name);
    return ALIGN_UP(off, (size_t)8);
}

static void test_snapshot_table(void)
{
    static uint8_t b[HBUF];
    static uint8_t t[4096];
    Qcow2Header h;
    Qcow2Snapshot *sn = NULL;
    Error *err = NULL;
    size_t len = 0, tl;

    make_v3(b);
    put_be32(b + 60, 2);
    put_be64(b + 64, 5 * 65536);
    CU_ASSERT_TRUE_FATAL(parse_ok(b, HBUF, &h));
    len += put_snapshot(t, 6 * 65536, 2, "1", "first", 16, 1ULL << 30);
    len += put_snapshot(t + len, 7 * 65536, 2, "2", "second", 16,
                        1ULL << 29);
    CU_ASSERT_TRUE_FATAL(qcow2_snapshots_parse(&h, t, len, FSIZE, &sn, &tl,
                                               &err));
    CU_ASSERT_EQUAL(tl, len);
    CU_ASSERT_STRING_EQUAL(sn[1].name, "second");
    CU_ASSERT_EQUAL(sn[1].disk_size, 1ULL << 29);
    CU_ASSERT_PTR_EQUAL(qcow2_snapshot_find(sn, 2, "first"), &sn[0]);
    CU_ASSERT_PTR_EQUAL(qcow2_snapshot_find(sn, 2, "2"), &sn[1]);
    CU_ASSERT_PTR_NULL(qcow2_snapshot_find(sn, 2, "third"));
    qcow2_snapshots_free(sn, 2);

    /* every truncation fails cleanly */
    for (size_t cut = 0; cut < len - 8; cut++) {
        sn = NULL;
        CU_ASSERT_FALSE(qcow2_snapshots_parse(&h, t, cut, FSIZE, &sn, &tl,
                                              &err));
        CU_ASSERT_PTR_NOT_NULL(err);
        error_free(err);
        err = NULL;
    }
    /* hostile L1 of a snapshot */
    len = put_snapshot(t, 0, 2, "1", "a", 16, 1ULL << 30);
    len += put_snapshot(t + len, 7 * 65536, 2, "2", "b", 16, 1ULL << 30);
    CU_ASSERT_FALSE(qcow2_snapshots_parse(&h, t, len, FSIZE, &sn, &tl,
                                          &err));
    error_free(err);
    err = NULL;
    len = put_snapshot(t, 6 * 65536, 0xffffffff, "1", "a", 16, 1ULL << 30);
    len += put_snapshot(t + len, 7 * 65536, 2, "2", "b", 16, 1ULL << 30);
    CU_ASSERT_FALSE(qcow2_snapshots_parse(&h, t, len, FSIZE, &sn, &tl,
                                          &err));
    error_free(err);
    err = NULL;
    len = put_snapshot(t, 6 * 65536, 1, "1", "a", 16, 1ULL << 40);
    len += put_snapshot(t + len, 7 * 65536, 2, "2", "b", 16, 1ULL << 30);
    CU_ASSERT_FALSE(qcow2_snapshots_parse(&h, t, len, FSIZE, &sn, &tl,
                                          &err));
    error_free(err);
    err = NULL;
    /* extra data size absurd */
    len = put_snapshot(t, 6 * 65536, 2, "1", "a", 16, 1ULL << 30);
    put_be32(t + 36, 0xfffffff0);
    CU_ASSERT_FALSE(qcow2_snapshots_parse(&h, t, 4096, FSIZE, &sn, &tl,
                                          &err));
    error_free(err);
}

/* ---- the driver through the block layer, against qemu-img ---------------- */

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

/* A formatted string valid until the next call (tests only). */
static const char *xasprintf_tmp(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static const char *xasprintf_tmp(const char *fmt, ...)
{
    static char *last;
    va_list ap;

    free(last);
    va_start(ap, fmt);
    last = xvasprintf(fmt, ap);
    va_end(ap);
    return last;
}

static char *tpath(const char *name)
{
    return xasprintf("%s/%s", unit_tmpdir(), name);
}

static BlockGraph *graph;

static BlockNode *open_json(const char *json, Error **errp)
{
    json_object *obj = json_tokener_parse(json);
    BlockdevOptions *o = NULL;
    BlockNode *bs = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(obj);
    if (qapi_parse_BlockdevOptions(obj, NULL, 0, &o, errp)) {
        bs = blk_open(graph, o, errp);
        qapi_free_BlockdevOptions(o);
    }
    json_object_put(obj);
    return bs;
}

/* Open a qcow2 image; extra is appended to the options ("" or
 * ", \"backing\": null", ...). */
static BlockNode *open_qcow2(const char *path, bool ro, const char *extra,
                             Error **errp)
{
    char *json = xasprintf("{\"driver\": \"qcow2\", \"read-only\": %s, "
                           "\"file\": {\"driver\": \"file\", \"filename\": "
                           "\"%s\"}%s}", ro ? "true" : "false", path,
                           extra);
    BlockNode *bs = open_json(json, errp);

    free(json);
    return bs;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = xmalloc(n ? n : 1);
    CU_ASSERT_EQUAL(fread(buf, 1, n, f), (size_t)n);
    fclose(f);
    *len = n;
    return buf;
}

/* Compare what the node reads with a raw file, in chunks of odd sizes. */
static bool node_equals_raw(BlockNode *bs, const char *raw)
{
    size_t len;
    uint8_t *ref = slurp(raw, &len);
    uint8_t *buf = xmalloc(1 << 20);
    uint64_t off = 0;
    size_t step = 12345;
    bool same = true;

    CU_ASSERT_EQUAL(blk_getlength(bs), (int64_t)len);
    while (off < len && same) {
        uint64_t n = MIN((uint64_t)step, len - off);
        int ret = blk_pread(bs, off, n, buf, 0);

        CU_ASSERT_EQUAL(ret, 0);
        if (ret != 0 || memcmp(buf, ref + off, n) != 0) {
            fprintf(stderr, "\nmismatch in [%llu, +%llu)\n",
                    (unsigned long long)off, (unsigned long long)n);
            same = false;
        }
        off += n;
        step = step * 3 % (1 << 20) + 1;
    }
    free(ref);
    free(buf);
    return same;
}

/* Writes done with qemu-io on every image kind (a mix of data, zeroes,
 * discards, unaligned ranges). */
static const char *qemu_io_script =
    "-c 'write -P 0x5a 0 64k' -c 'write -P 0xa5 100k 3k' "
    "-c 'write -P 0x11 1m 2m' -c 'write -z 1536k 64k' "
    "-c 'write -P 0x22 5m 7' -c 'discard 2m 1m' "
    "-c 'write -P 0x33 15m 1m' -c 'write -z 15872k 4k'";

static void check_read_image(const char *opts)
{
    char *img = tpath("r.qcow2"), *raw = tpath("r.raw");
    BlockNode *bs;
    Error *err = NULL;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o %s %s 16M",
                              opts, img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 %s %s >/dev/null",
                              qemu_io_script, img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -O raw %s %s", img, raw), 0);
    bs = open_qcow2(img, true, "", &err);
    if (bs == NULL) {
        fprintf(stderr, "\n%s: %s\n", opts, error_get_pretty(err));
        error_free(err);
        CU_FAIL_FATAL("open failed");
    }
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    blk_unref(bs);
    free(img);
    free(raw);
}

static void test_read_cluster_sizes(void)
{
    check_read_image("cluster_size=4096");
    check_read_image("cluster_size=65536");
    check_read_image("cluster_size=2M");
    check_read_image("cluster_size=512");
}

static void test_read_refcount_compat(void)
{
    check_read_image("refcount_bits=1");
    check_read_image("refcount_bits=16");
    check_read_image("refcount_bits=64,cluster_size=4k");
    check_read_image("compat=0.10");
    check_read_image("compat=1.1,lazy_refcounts=on");
    check_read_image("extended_l2=on,cluster_size=64k");
    check_read_image("preallocation=metadata");
}

static void test_read_compressed(void)
{
    char *raw = tpath("c.raw"), *img = tpath("c.qcow2");
    char *src = tpath("c-src.raw");
    BlockNode *bs;
    Error *err = NULL;

    /* compressible patterns and incompressible random data */
    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f raw %s 16M", src), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f raw %s %s >/dev/null",
                              qemu_io_script, src), 0);
    CU_ASSERT_EQUAL_FATAL(run("dd if=/dev/urandom of=%s bs=64k seek=160 "
                              "count=20 conv=notrunc status=none", src), 0);
    for (int cs = 0; cs < 2; cs++) {
        CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -c -f raw -O qcow2 -o "
                                  "cluster_size=%s %s %s",
                                  cs ? "4k" : "64k", src, img), 0);
        CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -O raw %s %s", img, raw),
                              0);
        bs = open_qcow2(img, true, "", &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        CU_ASSERT_TRUE(node_equals_raw(bs, raw));
        blk_unref(bs);
    }
    free(raw);
    free(img);
    free(src);
}

static void test_read_backing_and_status(void)
{
    char *base = tpath("base.qcow2"), *top = tpath("top.qcow2");
    char *raw = tpath("top.raw");
    BlockNode *bs;
    Error *err = NULL;
    uint64_t pnum;
    int depth;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 %s 8M", base), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 0x61 0 4m' "
                              "%s >/dev/null", base), 0);
    /* relative backing name, with its format */
    CU_ASSERT_EQUAL_FATAL(run("cd %s && qemu-img create -q -f qcow2 -b "
                              "base.qcow2 -F qcow2 top.qcow2 16M",
                              unit_tmpdir()), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 0x62 64k 64k' "
                              "-c 'write -z 1m 64k' -c 'write -P 0x63 9m 1k' "
                              "%s >/dev/null", top), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -O raw %s %s", top, raw), 0);
    bs = open_qcow2(top, true, "", &err);
    if (bs == NULL) {
        fprintf(stderr, "\n%s\n", error_get_pretty(err));
        CU_FAIL_FATAL("open");
    }
    CU_ASSERT_PTR_NOT_NULL(bs->backing);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    {
        ImageInfo *info = XNEW(ImageInfo);

        bs->drv->query_image(bs, info);
        CU_ASSERT_STRING_EQUAL(info->backing_filename, "base.qcow2");
        CU_ASSERT_STRING_EQUAL(info->full_backing_filename, base);
        CU_ASSERT_STRING_EQUAL(info->backing_filename_format, "qcow2");
        CU_ASSERT_FALSE(info->has_snapshots);
        qapi_free_ImageInfo(info);
    }

    /* allocation depth: base only, top, none */
    depth = blk_allocation_depth(bs, 0, 64 * 1024, &pnum);
    CU_ASSERT_EQUAL(depth, 2);
    CU_ASSERT_EQUAL(pnum, 64 * 1024);
    depth = blk_allocation_depth(bs, 64 * 1024, 1 << 20, &pnum);
    CU_ASSERT_EQUAL(depth, 1);
    CU_ASSERT_EQUAL(pnum, 64 * 1024);
    depth = blk_allocation_depth(bs, 1 << 20, 64 * 1024, &pnum);
    CU_ASSERT_EQUAL(depth, 1);
    depth = blk_allocation_depth(bs, 12 << 20, 4 << 20, &pnum);
    CU_ASSERT_EQUAL(depth, 0);
    CU_ASSERT_EQUAL(pnum, 4 << 20);
    /* block status: zero cluster in top reads as zero */
    {
        int st = blk_block_status(bs, 1 << 20, 64 * 1024, &pnum);

        CU_ASSERT_TRUE(st >= 0 && (st & BLK_STATUS_ZERO));
        st = blk_block_status(bs, 64 * 1024, 64 * 1024, &pnum);
        CU_ASSERT_TRUE(st >= 0 && (st & BLK_STATUS_DATA));
    }
    blk_unref(bs);

    /* backing: null: the top alone, unallocated reads as zeroes */
    bs = open_qcow2(top, true, ", \"backing\": null", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_PTR_NULL(bs->backing);
    {
        uint8_t buf[512];

        CU_ASSERT_EQUAL(blk_pread(bs, 0, sizeof(buf), buf, 0), 0);
        CU_ASSERT_EQUAL(buf[0], 0);
        CU_ASSERT_EQUAL(buf[511], 0);
    }
    blk_unref(bs);
    free(base);
    free(top);
    free(raw);
}

static void test_backing_loop(void)
{
    char *a = tpath("loop-a.qcow2"), *b = tpath("loop-b.qcow2");
    BlockNode *bs;
    Error *err = NULL;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 %s 1M", a), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -b %s -F qcow2 "
                              "%s 1M", a, b), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img rebase -u -b %s -F qcow2 %s", b, a),
                          0);
    bs = open_qcow2(a, true, "", &err);
    CU_ASSERT_PTR_NULL(bs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "loop"));
    error_free(err);
    err = NULL;

    /* a backing "file" that is a FIFO: refused, not opened (which would
     * block) */
    CU_ASSERT_EQUAL_FATAL(run("rm -f %s.fifo && mkfifo %s.fifo && "
                              "qemu-img rebase -u -b %s.fifo -F raw %s",
                              a, a, a, b), 0);
    bs = open_qcow2(b, true, "", &err);
    CU_ASSERT_PTR_NULL(bs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "not a regular"));
    error_free(err);
    free(a);
    free(b);
}

static void test_snapshots(void)
{
    char *img = tpath("snap.qcow2"), *raw = tpath("snap.raw");
    BlockNode *bs;
    Error *err = NULL;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 %s 4M", img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 1 0 1m' %s "
                              ">/dev/null", img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img snapshot -c first %s", img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 2 512k 1m' %s "
                              ">/dev/null", img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img snapshot -c second %s", img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 3 0 64k' %s "
                              ">/dev/null", img), 0);

    /* active layer */
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -O raw %s %s", img, raw), 0);
    bs = open_qcow2(img, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    {
        /* the snapshot list as query-named-block-nodes shows it */
        ImageInfo *info = XNEW(ImageInfo);
        ImageInfoSpecificQCow2 *q;

        bs->drv->query_image(bs, info);
        CU_ASSERT_TRUE_FATAL(info->has_snapshots);
        CU_ASSERT_EQUAL_FATAL(info->snapshots->n, 2);
        CU_ASSERT_STRING_EQUAL(info->snapshots->v[0]->name, "first");
        CU_ASSERT_STRING_EQUAL(info->snapshots->v[1]->name, "second");
        CU_ASSERT_STRING_EQUAL(info->snapshots->v[1]->id, "2");
        CU_ASSERT_TRUE(info->snapshots->v[0]->date_sec > 1000000000);
        CU_ASSERT_EQUAL(info->cluster_size, 65536);
        CU_ASSERT_TRUE_FATAL(info->has_format_specific);
        q = info->format_specific->u.qcow2.data;
        CU_ASSERT_STRING_EQUAL(q->compat, "1.1");
        CU_ASSERT_EQUAL(q->refcount_bits, 16);
        CU_ASSERT_FALSE(q->corrupt);
        qapi_free_ImageInfo(info);
    }
    blk_unref(bs);
    /* by name and by id */
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -l snapshot.name=first "
                              "-O raw %s %s", img, raw), 0);
    bs = open_qcow2(img, true, ", \"snapshot\": \"first\"", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    blk_unref(bs);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -l snapshot.id=2 "
                              "-O raw %s %s", img, raw), 0);
    bs = open_qcow2(img, true, ", \"snapshot\": \"2\"", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    blk_unref(bs);
    /* unknown snapshot, writable snapshot view */
    bs = open_qcow2(img, true, ", \"snapshot\": \"nope\"", &err);
    CU_ASSERT_PTR_NULL(bs);
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
    err = NULL;
    bs = open_qcow2(img, false, ", \"snapshot\": \"first\"", &err);
    CU_ASSERT_PTR_NULL(bs);
    error_free(err);
    err = NULL;
    /* a snapshot keeps its own size after the image grows */
    CU_ASSERT_EQUAL_FATAL(run("qemu-img resize -q %s 16M", img), 0);
    bs = open_qcow2(img, true, ", \"snapshot\": \"first\"", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_getlength(bs), 4 << 20);
    blk_unref(bs);
    bs = open_qcow2(img, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_getlength(bs), 16 << 20);
    blk_unref(bs);
    free(img);
    free(raw);
}

/* ---- writes: qemu-img check and compare ------------------------------- */

static void pattern(uint8_t *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
    }
}

/* -U: the image may still be open (consistent after a flush). */
static void check_image(const char *img, const char *raw)
{
    CU_ASSERT_EQUAL(run("qemu-img check -U -q %s", img), 0);
    CU_ASSERT_EQUAL(run("qemu-img compare -U -q -f qcow2 -F raw %s %s", img,
                        raw), 0);
}

/* Apply the same writes to our qcow2 node and to a raw reference. */
static void write_both(BlockNode *bs, FILE *ref, uint64_t off, size_t n,
                       unsigned seed)
{
    uint8_t *buf = xmalloc(n);

    pattern(buf, n, seed);
    CU_ASSERT_EQUAL(blk_pwrite(bs, off, n, buf, 0), 0);
    fseek(ref, off, SEEK_SET);
    CU_ASSERT_EQUAL(fwrite(buf, 1, n, ref), n);
    free(buf);
}

static void zero_both(BlockNode *bs, FILE *ref, uint64_t off, size_t n,
                      uint32_t flags)
{
    uint8_t *buf = xzalloc(n);

    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, off, n, flags), 0);
    fseek(ref, off, SEEK_SET);
    CU_ASSERT_EQUAL(fwrite(buf, 1, n, ref), n);
    free(buf);
}

static void check_write_image(const char *opts)
{
    char *img = tpath("w.qcow2"), *raw = tpath("w.raw");
    BlockNode *bs;
    Error *err = NULL;
    FILE *ref;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o %s %s 64M",
                              opts, img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 0x5a 0 256k' "
                              "%s >/dev/null", img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -O raw %s %s", img, raw), 0);
    ref = fopen(raw, "r+b");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    bs = open_qcow2(img, false, ", \"discard\": \"unmap\"", &err);
    if (bs == NULL) {
        fprintf(stderr, "\n%s: %s\n", opts, error_get_pretty(err));
        CU_FAIL_FATAL("open");
    }
    write_both(bs, ref, 0, 512, 1);                 /* in place */
    write_both(bs, ref, 300 * 1024, 5000, 2);       /* new, partial */
    write_both(bs, ref, 1 << 20, 3 << 20, 3);       /* many clusters */
    write_both(bs, ref, (40 << 20) - 100, 300, 4);  /* across clusters */
    write_both(bs, ref, (64 << 20) - 4096, 4096, 5);/* the last bytes */
    zero_both(bs, ref, 1 << 20, 1 << 20, BLK_REQ_MAY_UNMAP);
    zero_both(bs, ref, (2 << 20) + 1000, 70000, 0);
    zero_both(bs, ref, 10 << 20, 2 << 20, 0);
    CU_ASSERT_EQUAL(blk_pdiscard(bs, 2 << 20, 2 << 20), 0);
    {
        /* discarded whole clusters: zeroes without a backing file */
        uint8_t *z = xzalloc(2 << 20);

        fseek(ref, 2 << 20, SEEK_SET);
        CU_ASSERT_EQUAL(fwrite(z, 1, 2 << 20, ref), 2u << 20);
        free(z);
    }
    CU_ASSERT_EQUAL(blk_flush(bs), 0);
    fflush(ref);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    /* qemu-img reads the image while we hold it: it is consistent
     * after a flush */
    check_image(img, raw);
    blk_unref(bs);
    fclose(ref);
    check_image(img, raw);
    free(img);
    free(raw);
}

/* O_DIRECT on the file: metadata updates of a few bytes go through the
 * block layer's read-modify-write.  Skipped where O_DIRECT is refused
 * (tmpfs). */
static void test_write_direct(void)
{
    char *img = tpath("d.qcow2"), *raw = tpath("d.raw");
    BlockNode *bs;
    Error *err = NULL;
    FILE *ref;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                              "cluster_size=4k %s 8M", img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -O raw %s %s", img, raw), 0);
    bs = open_qcow2(img, false, ", \"cache\": {\"direct\": true}", &err);
    if (bs == NULL) {
        fprintf(stderr, "\n(O_DIRECT not available: %s)\n",
                error_get_pretty(err));
        error_free(err);
        return;
    }
    ref = fopen(raw, "r+b");
    write_both(bs, ref, 1000, 10000, 1);
    write_both(bs, ref, 5 << 20, 1 << 20, 2);
    zero_both(bs, ref, 5 << 20, 8192, 0);
    CU_ASSERT_TRUE(blk_truncate(bs, 64 << 20, &err));
    fseek(ref, 0, SEEK_END);
    {
        uint8_t *z = xzalloc(56 << 20);

        CU_ASSERT_EQUAL(fwrite(z, 1, 56 << 20, ref), 56u << 20);
        free(z);
    }
    write_both(bs, ref, 60 << 20, 4096, 3);
    fflush(ref);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    blk_unref(bs);
    fclose(ref);
    check_image(img, raw);
    free(img);
    free(raw);
}

static void test_write_images(void)
{
    check_write_image("cluster_size=65536");
    check_write_image("cluster_size=4096,refcount_bits=1");
    check_write_image("cluster_size=2M");
    check_write_image("compat=0.10");
    check_write_image("cluster_size=512,refcount_bits=16");
    check_write_image("refcount_bits=64");
    check_write_image("extended_l2=on,cluster_size=64k");
    check_write_image("extended_l2=on,cluster_size=2M");
}

/* Grow the image far enough that the refcount table must grow too. */
static void test_write_reftable_growth(void)
{
    char *img = tpath("g.qcow2"), *raw = tpath("g.raw");
    BlockNode *bs;
    Error *err = NULL;
    FILE *ref;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                              "cluster_size=512,refcount_bits=64 %s 8M", img),
                          0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -O raw %s %s", img, raw), 0);
    ref = fopen(raw, "r+b");
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    for (unsigned i = 0; i < 64; i++) {
        write_both(bs, ref, (uint64_t)i * 128 * 1024, 8192, i);
    }
    CU_ASSERT_TRUE(blk_truncate(bs, 32 << 20, &err));
    {
        uint8_t z = 0;

        fseek(ref, (32 << 20) - 1, SEEK_SET);
        fwrite(&z, 1, 1, ref);
    }
    write_both(bs, ref, (32 << 20) - 65536, 65536, 99);
    fflush(ref);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    blk_unref(bs);
    fclose(ref);
    check_image(img, raw);

    /* 512-byte clusters grown to 1 GiB: an L1 table of 512 clusters,
     * longer than a refcount block's range, allocated at the end */
    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                              "cluster_size=512 %s 1M", img), 0);
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(blk_truncate(bs, 1 << 30, &err));
    {
        uint8_t *b = xmalloc(3 << 20);

        pattern(b, 3 << 20, 5);
        CU_ASSERT_EQUAL(blk_pwrite(bs, 900 << 20, 3 << 20, b, 0), 0);
        CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 3 << 20, b, 0), 0);
        free(b);
    }
    blk_unref(bs);
    CU_ASSERT_EQUAL(run("qemu-img check -q %s", img), 0);
    CU_ASSERT_EQUAL(run("qemu-img convert -O raw %s %s", img, raw), 0);
    {
        /* the data landed where it should */
        size_t len;
        uint8_t *got = slurp(raw, &len), *b = xmalloc(3 << 20);

        CU_ASSERT_EQUAL(len, 1u << 30);
        pattern(b, 3 << 20, 5);
        CU_ASSERT_EQUAL(memcmp(got + (900 << 20), b, 3 << 20), 0);
        CU_ASSERT_EQUAL(memcmp(got, b, 3 << 20), 0);
        free(got);
        free(b);
    }
    free(img);
    free(raw);
}

/* Writes over compressed clusters, internal snapshots and a backing file:
 * the copy-on-write paths. */
static void write_cow(const char *opts)
{
    char *src = tpath("cw-src.qcow2"), *img = tpath("cw.qcow2");
    char *raw = tpath("cw.raw");
    BlockNode *bs;
    Error *err = NULL;
    FILE *ref;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 %s 8M", src), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 0x41 0 4m' %s "
                              ">/dev/null", src), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -c -O qcow2 -o %s %s %s", opts,
                              src, img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img snapshot -c s1 %s", img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -O raw %s %s", img, raw), 0);
    ref = fopen(raw, "r+b");
    bs = open_qcow2(img, false, "", &err);
    if (bs == NULL) {
        fprintf(stderr, "\n%s\n", error_get_pretty(err));
        CU_FAIL_FATAL("open");
    }
    write_both(bs, ref, 1000, 3000, 7);
    write_both(bs, ref, 2 << 20, 128 * 1024, 8);
    zero_both(bs, ref, 3 << 20, 64 * 1024, BLK_REQ_MAY_UNMAP);
    fflush(ref);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    blk_unref(bs);
    fclose(ref);
    check_image(img, raw);
    /* the snapshot still reads the old data */
    CU_ASSERT_EQUAL(run("qemu-img convert -l s1 -O raw %s %s.s1 && "
                        "qemu-img compare -q -F raw %s %s.s1", img, raw,
                        src, raw), 0);
    free(src);
    free(img);
    free(raw);
}


/* ---- randomized: overlay over a qcow2 backing file, against a model ---- */

static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    /* xorshift64* */
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return rnd_state * 2685821657736338717ULL;
}

#define RSIZE (32u << 20)

/* opts: the overlay's qemu-img -o options; rcluster its cluster size
 * (discards act on whole clusters). */
static void random_overlay(const char *opts, uint64_t rcluster)
{
    char *base = tpath("rb.qcow2"), *top = tpath("rt.qcow2");
    char *raw = tpath("rt.raw");
    uint8_t *model, *buf;
    size_t len;
    BlockNode *bs;
    Error *err = NULL;
    FILE *f;
    const char *nopts = ", \"discard\": \"unmap\"";

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                              "cluster_size=64k %s 24M", base), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 0x77 0 8m' "
                              "-c 'write -P 0x78 12m 5m' -c 'write -z 4m 1m' "
                              "%s >/dev/null", base), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o %s "
                              "-b %s -F qcow2 %s 32M", opts, base, top), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-img convert -O raw %s %s", top, raw), 0);
    model = slurp(raw, &len);
    CU_ASSERT_EQUAL_FATAL(len, RSIZE);
    buf = xmalloc(256 * 1024);

    bs = open_qcow2(top, false, nopts, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    for (int op = 0; op < 4000; op++) {
        uint64_t r = rnd();
        uint64_t off = rnd() % RSIZE;
        uint64_t n = 1 + rnd() % (r % 8 == 0 ? 256 * 1024 : 9000);

        n = MIN(n, RSIZE - off);
        switch (r % 10) {
        case 0: case 1: case 2: case 3: case 4: case 5:
            for (uint64_t i = 0; i < n; i++) {
                buf[i] = (uint8_t)(op + i / 512);
            }
            CU_ASSERT_EQUAL_FATAL(blk_pwrite(bs, off, n, buf, 0), 0);
            memcpy(model + off, buf, n);
            break;
        case 6: case 7:
            CU_ASSERT_EQUAL_FATAL(blk_pwrite_zeroes(bs, off, n,
                                                    (r >> 8) & 1
                                                    ? BLK_REQ_MAY_UNMAP
                                                    : 0), 0);
            memset(model + off, 0, n);
            break;
        default: {
            /* whole clusters of the overlay become zeroes (v3 with a
             * backing file); partial ones are left alone */
            uint64_t s0 = rcluster ? ALIGN_UP(off, rcluster) : 0;
            uint64_t e0 = rcluster ? ALIGN_DOWN(off + n, rcluster) : 0;

            if (rcluster == 0) {
                break;          /* v2: no discards in this model */
            }
            CU_ASSERT_EQUAL_FATAL(blk_pdiscard(bs, off, n), 0);
            if (s0 < e0) {
                memset(model + s0, 0, e0 - s0);
            }
            break;
        }
        }
        if (op % 500 == 499) {
            uint64_t roff = rnd() % (RSIZE - 256 * 1024);

            CU_ASSERT_EQUAL(blk_flush(bs), 0);
            CU_ASSERT_EQUAL(blk_pread(bs, roff, 256 * 1024, buf, 0), 0);
            CU_ASSERT_EQUAL(memcmp(buf, model + roff, 256 * 1024), 0);
        }
        if (op == 2000) {
            /* persistence across a reopen */
            blk_unref(bs);
            CU_ASSERT_EQUAL(run("qemu-img check -q %s", top), 0);
            bs = open_qcow2(top, false, nopts, &err);
            CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        }
    }
    CU_ASSERT_EQUAL(blk_flush(bs), 0);
    f = fopen(raw, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(model, 1, RSIZE, f), RSIZE);
    fclose(f);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
    blk_unref(bs);
    check_image(top, raw);
    /* the backing file was not touched */
    CU_ASSERT_EQUAL(run("qemu-img check -q %s", base), 0);
    free(model);
    free(buf);
    free(base);
    free(top);
    free(raw);
}

static void test_random_overlay(void)
{
    random_overlay("cluster_size=4k", 4096);
}

static void test_random_overlay_extl2(void)
{
    random_overlay("cluster_size=64k,extended_l2=on", 65536);
}

static void test_random_overlay_v2(void)
{
    /* v2: no zero clusters; a discard lets the backing show through */
    random_overlay("cluster_size=4k,compat=0.10", 0);
}

/* ---- concurrency: several threads on one node ------------------------- */

typedef struct ThreadArg {
    BlockNode *bs;
    unsigned id;
    int failures;
} ThreadArg;

#define TSLOT (1u << 20)

static void *thread_main(void *opaque)
{
    ThreadArg *a = opaque;
    uint8_t *buf = xmalloc(65536), *rb = xmalloc(65536);
    uint64_t base = (uint64_t)a->id * 4 * TSLOT;

    for (unsigned i = 0; i < 600; i++) {
        uint64_t off = base + (i * 7919u % (4 * TSLOT / 4096)) * 4096;
        size_t n = 4096 * (1 + i % 16);

        n = MIN(n, base + 4 * TSLOT - off);
        memset(buf, (int)(a->id * 16 + i % 13), n);
        if (blk_pwrite(a->bs, off, n, buf, 0) != 0 ||
            blk_pread(a->bs, off, n, rb, 0) != 0 ||
            memcmp(buf, rb, n) != 0) {
            a->failures++;
        }
        if (i % 100 == 0 && blk_flush(a->bs) != 0) {
            a->failures++;
        }
    }
    free(buf);
    free(rb);
    return NULL;
}

static void test_concurrent_writers(void)
{
    char *img = tpath("mt.qcow2");
    pthread_t th[4];
    ThreadArg args[4];
    BlockNode *bs;
    Error *err = NULL;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                              "cluster_size=64k %s 16M", img), 0);
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    for (unsigned i = 0; i < 4; i++) {
        args[i] = (ThreadArg){ .bs = bs, .id = i };
        pthread_create(&th[i], NULL, thread_main, &args[i]);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(args[i].failures, 0);
    }
    blk_unref(bs);
    CU_ASSERT_EQUAL(run("qemu-img check -q %s", img), 0);
    free(img);
}

/* Reads look clusters up without the lock (fast_map_unlocked): while
 * other threads free clusters (zeroing with unmap), allocate them again
 * for other guest clusters, flush (which hands freed clusters back) and
 * grow the image (a new L1), a read must still return what its own
 * guest cluster held: never another cluster's bytes.  Every cluster's
 * bytes carry its index, so a read through a stale mapping shows. */
#define LF_CLUSTERS 64u
#define LF_CS 65536u

typedef struct LockFreeArg {
    BlockNode *bs;
    unsigned id;
    int failures;
    bool *stop;
} LockFreeArg;

static uint8_t lf_tag(unsigned c)
{
    return (uint8_t)(0x80 | c);
}

/* Odd clusters never change; even ones are zeroed (freed) and
 * rewritten over and over. */
static void *lf_reader(void *opaque)
{
    LockFreeArg *a = opaque;
    uint8_t *rb = xmalloc(LF_CS);
    unsigned long i = a->id;

    while (!__atomic_load_n(a->stop, __ATOMIC_ACQUIRE)) {
        unsigned c = (unsigned)(i * 7 % LF_CLUSTERS);

        if (blk_pread(a->bs, (uint64_t)c * LF_CS, LF_CS, rb, 0) != 0) {
            a->failures++;
            break;
        }
        for (unsigned k = 0; k < LF_CS; k++) {
            if (rb[k] != lf_tag(c) && (c % 2 == 1 || rb[k] != 0)) {
                a->failures++;
                break;
            }
        }
        i++;
    }
    free(rb);
    return NULL;
}

static void *lf_churn(void *opaque)
{
    LockFreeArg *a = opaque;
    uint8_t *buf = xmalloc(LF_CS);

    /* Free one cluster, flush (its host cluster becomes free), then
     * write the one freed before: it gets that host cluster. */
    for (unsigned i = 1; !__atomic_load_n(a->stop, __ATOMIC_ACQUIRE); i++) {
        unsigned c = (i * 2) % LF_CLUSTERS;
        unsigned prev = ((i - 1) * 2) % LF_CLUSTERS;

        memset(buf, lf_tag(prev), LF_CS);
        if (blk_pwrite_zeroes(a->bs, (uint64_t)c * LF_CS, LF_CS,
                              BLK_REQ_MAY_UNMAP) != 0 ||
            blk_flush(a->bs) != 0 ||
            blk_pwrite(a->bs, (uint64_t)prev * LF_CS, LF_CS, buf, 0) != 0) {
            a->failures++;
            break;
        }
    }
    free(buf);
    return NULL;
}

static void test_lockfree_reads(void)
{
    /* In memory where there is some (tmpfs): on a disk the churn's
     * metadata I/O under the lock leaves the readers little lock-free
     * time. */
    char *img = access("/dev/shm", W_OK) == 0
                ? xasprintf("/dev/shm/blockd-lockfree-%d.qcow2",
                            (int)getpid())
                : tpath("lockfree.qcow2");
    uint8_t *buf = xmalloc(LF_CS);
    pthread_t th[4];
    LockFreeArg args[4];
    bool stop = false;
    Error *err = NULL;
    BlockNode *bs;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                              "cluster_size=64k %s 4M", img), 0);
    bs = open_qcow2(img, false, ", \"discard\": \"unmap\"", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    for (unsigned c = 0; c < LF_CLUSTERS; c++) {
        memset(buf, lf_tag(c), LF_CS);
        CU_ASSERT_EQUAL_FATAL(blk_pwrite(bs, (uint64_t)c * LF_CS, LF_CS,
                                         buf, 0), 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        args[i] = (LockFreeArg){ .bs = bs, .id = i, .stop = &stop };
        pthread_create(&th[i], NULL, i == 0 ? lf_churn : lf_reader,
                       &args[i]);
    }
    /* Each step needs more L1 entries (512 MiB each): a new L1 table
     * replaces the one the readers look at. */
    for (unsigned g = 1; g <= 24; g++) {
        CU_ASSERT_TRUE(blk_truncate(bs, (uint64_t)g << 29, &err));
        usleep(20000);
    }
    __atomic_store_n(&stop, true, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(args[i].failures, 0);
    }
    blk_unref(bs);
    CU_ASSERT_EQUAL(run("qemu-img check -q %s", img), 0);
    unlink(img);
    free(buf);
    free(img);
}

/* ---- crash safety: kill -9 during writes -------------------------------- */

#define CSLOTS 2048u
#define CSLOT 65536u

static uint32_t slot_of(uint32_t i)
{
    return (i * 1103u + 17u) % CSLOTS;     /* a permutation (1103 odd) */
}

static void slot_data(uint32_t i, uint8_t *buf, size_t *off, size_t *n)
{
    *off = (i * 4099u) % (CSLOT / 2);
    *n = 512 + (i * 7771u) % (CSLOT / 2 - 512);
    for (size_t k = 0; k < *n; k++) {
        buf[k] = (uint8_t)(i ^ (k >> 8) ^ 0x5a);
    }
}

/* Op i writes slot_of(i); every fourth op (i % 4 == 3) instead zeroes
 * (with unmap: clusters are freed) the slot op i - 3 wrote. */
static bool crash_op_is_zero(uint32_t i)
{
    return i % 4 == 3;
}

static void crash_child(const char *img, int fd)
{
    BlockGraph *g = blk_graph_new(NULL);
    uint8_t *buf = xmalloc(CSLOT);
    Error *err = NULL;
    BlockNode *bs;

    graph = g;
    bs = open_qcow2(img, false, ", \"discard\": \"unmap\"", &err);
    if (bs == NULL) {
        _exit(2);
    }
    for (uint32_t i = 0; i < CSLOTS; i++) {
        size_t off, n;
        int ret;

        if (crash_op_is_zero(i)) {
            ret = blk_pwrite_zeroes(bs, (uint64_t)slot_of(i - 3) * CSLOT,
                                    CSLOT, BLK_REQ_MAY_UNMAP);
        } else {
            slot_data(i, buf, &off, &n);
            ret = blk_pwrite(bs, (uint64_t)slot_of(i) * CSLOT + off, n, buf,
                             0);
        }
        if (ret != 0) {
            _exit(3);
        }
        if (i % 16 == 15) {
            if (blk_flush(bs) != 0) {
                _exit(4);
            }
            if (write(fd, &i, sizeof(i)) != sizeof(i)) {
                _exit(5);
            }
        }
    }
    _exit(0);
}

static void test_crash_kill9(void)
{
    char *img = tpath("crash.qcow2");
    char *raw = tpath("crash.raw");
    int pfd[2];
    pid_t pid;
    uint32_t last = UINT32_MAX, v;
    uint8_t *want = xmalloc(CSLOT), *got;
    size_t len;
    int st;

    for (int round = 0; round < 3; round++) {
        last = UINT32_MAX;
        CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                                  "cluster_size=%s %s 128M",
                                  round == 1 ? "4k" : "64k", img), 0);
        CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
        pid = fork();
        CU_ASSERT_TRUE_FATAL(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            crash_child(img, pfd[1]);
        }
        close(pfd[1]);
        /* Let it run a while, then kill it in the middle. */
        for (int k = 0; k < 20 + round * 30; k++) {
            if (read(pfd[0], &v, sizeof(v)) != sizeof(v)) {
                break;
            }
            last = v;
        }
        kill(pid, SIGKILL);
        while (read(pfd[0], &v, sizeof(v)) == sizeof(v)) {
            last = v;
        }
        close(pfd[0]);
        waitpid(pid, &st, 0);
        /* No corruption (leaks allowed: exit status 3). */
        st = run("qemu-img check -q %s >/dev/null 2>&1", img);
        CU_ASSERT_TRUE(st == 0 || st == 3);
        CU_ASSERT_EQUAL(run("qemu-img convert -O raw %s %s", img, raw), 0);
        got = slurp(raw, &len);
        CU_ASSERT_EQUAL_FATAL(len, (size_t)CSLOTS * CSLOT);
        /* Every write acknowledged before a completed flush is there,
         * and every zeroing: slots touched by ops after the last
         * acknowledged flush (up to the next one) may hold either. */
        for (uint32_t i = 0; last != UINT32_MAX && i <= last; i++) {
            size_t off, n;
            uint32_t zi = i + 3;
            bool zeroed;

            if (crash_op_is_zero(i)) {
                continue;
            }
            if (crash_op_is_zero(zi) && zi > last && zi <= last + 16) {
                continue;               /* zeroing maybe done, maybe not */
            }
            zeroed = crash_op_is_zero(zi) && zi <= last;
            slot_data(i, want, &off, &n);
            if (zeroed) {
                memset(want, 0, CSLOT);
                off = 0;
                n = CSLOT;
            }
            if (memcmp(got + (uint64_t)slot_of(i) * CSLOT + off, want,
                       n) != 0) {
                fprintf(stderr, "\nslot %u (%s) lost (last flushed %u)\n",
                        i, zeroed ? "zeroed" : "data", last);
                CU_FAIL("flushed write lost");
                break;
            }
        }
        CU_ASSERT_TRUE(last != UINT32_MAX);
        free(got);
    }
    free(want);
    free(img);
    free(raw);
}


/* ---- hostile images: clean errors, never a crash ---------------------- */

static uint64_t file_get64(const char *path, uint64_t off)
{
    FILE *f = fopen(path, "rb");
    uint8_t b[8] = { 0 };

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, off, SEEK_SET);
    CU_ASSERT_EQUAL(fread(b, 1, 8, f), 8);
    fclose(f);
    return get_be64(b);
}

static void file_put(const char *path, uint64_t off, const void *data,
                     size_t n)
{
    FILE *f = fopen(path, "r+b");

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, off, SEEK_SET);
    CU_ASSERT_EQUAL(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void file_put64(const char *path, uint64_t off, uint64_t v)
{
    uint8_t b[8];

    put_be64(b, v);
    file_put(path, off, b, 8);
}

/* A 4 MiB image with data in the first two clusters; returns the host
 * offset of its first L2 table. */
static uint64_t make_victim(const char *img, const char *opts)
{
    uint64_t l1;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 %s %s 4M",
                              opts, img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 0x5a 0 128k' "
                              "%s >/dev/null", img), 0);
    l1 = file_get64(img, 40);
    return file_get64(img, l1) & QCOW2_L1E_OFFSET_MASK;
}

static void expect_open_error(const char *img, bool ro, const char *needle)
{
    Error *err = NULL;
    BlockNode *bs = open_qcow2(img, ro, "", &err);

    CU_ASSERT_PTR_NULL(bs);
    if (bs != NULL) {
        blk_unref(bs);
        return;
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (strstr(error_get_pretty(err), needle) == NULL) {
        fprintf(stderr, "\nerror '%s' lacks '%s'\n", error_get_pretty(err),
                needle);
        CU_FAIL("unexpected open error");
    }
    error_free(err);
}

static void test_hostile_tables(void)
{
    char *img = tpath("h.qcow2");
    uint8_t buf[65536];
    uint64_t l2, l1;
    BlockNode *bs;
    Error *err = NULL;

    /* L2 entry pointing into the header: reads fail, writes do not
     * touch the header */
    l2 = make_victim(img, "");
    file_put64(img, l2, QCOW2_OFLAG_COPIED | 0);
    file_put64(img, l2 + 8, QCOW2_OFLAG_COPIED | 0x10200);  /* misaligned */
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pread(bs, 65536, 512, buf, 0), -EIO);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 65536, 512, buf, 0), -EIO);
    /* marked corrupt: even good clusters refuse writes now */
    CU_ASSERT_EQUAL(blk_pwrite(bs, 2 << 20, 512, buf, 0), -EIO);
    blk_unref(bs);
    CU_ASSERT_TRUE((file_get64(img, 72) & QCOW2_INCOMPAT_CORRUPT) != 0);
    expect_open_error(img, false, "corrupt");

    /* L2 entry pointing at the L1 table: an in-place write is refused */
    l2 = make_victim(img, "");
    l1 = file_get64(img, 40);
    file_put64(img, l2, QCOW2_OFLAG_COPIED | l1);
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    memset(buf, 0xee, sizeof(buf));
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 4096, buf, 0), -EIO);
    blk_unref(bs);
    CU_ASSERT_EQUAL(file_get64(img, l1) & QCOW2_L1E_OFFSET_MASK, l2);

    /* L1 entry pointing into the header */
    make_victim(img, "");
    l1 = file_get64(img, 40);
    file_put64(img, l1, QCOW2_OFLAG_COPIED);
    file_put64(img, l1, QCOW2_OFLAG_COPIED | 0x200);
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 512, buf, 0), -EIO);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 512, buf, 0), -EIO);
    blk_unref(bs);

    /* L2 entry far past the end of the file: reads zeroes (like QEMU's
     * file driver), never a crash */
    l2 = make_victim(img, "");
    file_put64(img, l2, QCOW2_OFLAG_COPIED | (1ULL << 40));
    bs = open_qcow2(img, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 512, buf, 0), 0);
    blk_unref(bs);

    /* refcount table entry pointing into the header: allocation fails
     * with EIO */
    make_victim(img, "");
    file_put64(img, file_get64(img, 48), 0x200);
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 1 << 20, 512, buf, 0), -EIO);
    blk_unref(bs);

    /* every refcount claims "in use", for the whole refcount table:
     * allocation fails quickly instead of scanning 2^28 clusters */
    make_victim(img, "");
    {
        uint64_t rt = file_get64(img, 48);
        uint64_t rb = file_get64(img, rt);
        uint8_t *ff = xmalloc(65536), *t = xmalloc(65536);

        memset(ff, 0xff, 65536);
        for (int i = 0; i < 8192; i++) {
            put_be64(t + i * 8, rb);
        }
        file_put(img, rb, ff, 65536);
        file_put(img, rt, t, 65536);
        free(ff);
        free(t);
    }
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 2 << 20, 512, buf, 0), -EIO);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 512, buf, 0), 0);
    blk_unref(bs);

    /* tables past the end of the file: open fails */
    make_victim(img, "");
    file_put64(img, 40, 1ULL << 40);
    expect_open_error(img, true, "past the end");
    make_victim(img, "");
    file_put64(img, 48, 0);
    expect_open_error(img, true, "overlaps the image header");
    /* truncated file */
    make_victim(img, "");
    CU_ASSERT_EQUAL(truncate(img, 50), 0);
    expect_open_error(img, true, "too short");
    CU_ASSERT_EQUAL(truncate(img, 0), 0);
    expect_open_error(img, true, "too short");
    free(img);
}

static void test_hostile_compressed(void)
{
    char *src = tpath("hc.raw"), *img = tpath("hc.qcow2");
    uint8_t buf[65536];
    uint64_t l2, e, host;
    BlockNode *bs;
    Error *err = NULL;
    uint8_t junk[512];

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f raw %s 1M && "
                              "qemu-io -f raw -c 'write -P 0x33 0 1m' %s "
                              ">/dev/null && qemu-img convert -c -f raw "
                              "-O qcow2 %s %s", src, src, src, img), 0);
    l2 = file_get64(img, file_get64(img, 40)) & QCOW2_L1E_OFFSET_MASK;
    e = file_get64(img, l2);
    CU_ASSERT_TRUE_FATAL((e & QCOW2_OFLAG_COMPRESSED) != 0);
    host = e & ((1ULL << 54) - 1);
    memset(junk, 0xff, sizeof(junk));
    file_put(img, host, junk, 64);
    bs = open_qcow2(img, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 4096, buf, 0), -EIO);
    blk_unref(bs);
    /* compressed descriptor pointing past the end of the file */
    file_put64(img, l2, QCOW2_OFLAG_COMPRESSED | (1ULL << 50));
    bs = open_qcow2(img, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 4096, buf, 0), -EIO);
    blk_unref(bs);
    free(src);
    free(img);
}

static void test_feature_bits(void)
{
    char *img = tpath("fb.qcow2");
    BlockNode *bs;
    Error *err = NULL;
    uint8_t buf[512];

    /* dirty: lazy refcounts left unflushed by an aborted qemu-io */
    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                              "lazy_refcounts=on %s 4M", img), 0);
    /* (exits through abort(): no core file, and a non-zero status) */
    CU_ASSERT_NOT_EQUAL(system(xasprintf_tmp("ulimit -c 0; qemu-io -f qcow2 "
                                             "-c 'write -P 0x42 0 64k' -c "
                                             "abort %s >/dev/null 2>&1",
                                             img)), 0);
    CU_ASSERT_TRUE_FATAL((file_get64(img, 72) & QCOW2_INCOMPAT_DIRTY) != 0);
    /* qemu-img sees the stale refcounts */
    CU_ASSERT_NOT_EQUAL(system(xasprintf_tmp("qemu-img check -q %s "
                                             ">/dev/null 2>&1", img)), 0);
    bs = open_qcow2(img, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, sizeof(buf), buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0x42);
    blk_unref(bs);
    /* a writable open repairs the refcounts and clears the dirty bit */
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(file_get64(img, 72) & QCOW2_INCOMPAT_DIRTY, 0);
    memset(buf, 0x43, sizeof(buf));
    CU_ASSERT_EQUAL(blk_pwrite(bs, 1 << 20, sizeof(buf), buf, 0), 0);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, sizeof(buf), buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0x42);
    blk_unref(bs);
    CU_ASSERT_EQUAL(run("qemu-img check -q %s", img), 0);
    CU_ASSERT_EQUAL(run("qemu-io -f qcow2 -c 'read -P 0x42 0 64k' "
                        "-c 'read -P 0x43 1m 512' %s >/dev/null", img), 0);

    /* a dirty image with snapshots and compressed clusters */
    {
        char *src = tpath("fb-src.raw");

        CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f raw %s 4M && "
                                  "qemu-io -f raw -c 'write -P 9 0 2m' %s "
                                  ">/dev/null && qemu-img convert -c -f raw "
                                  "-O qcow2 -o lazy_refcounts=on %s %s && "
                                  "qemu-img snapshot -c s %s", src, src, src,
                                  img, img), 0);
        system(xasprintf_tmp("ulimit -c 0; qemu-io -f qcow2 -c 'write -P 3 "
                             "1m 1m' -c 'write -P 4 3m 8k' -c abort %s "
                             ">/dev/null 2>&1", img));
        CU_ASSERT_TRUE((file_get64(img, 72) & QCOW2_INCOMPAT_DIRTY) != 0);
        bs = open_qcow2(img, false, "", &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        blk_unref(bs);
        CU_ASSERT_EQUAL(run("qemu-img check -q %s", img), 0);
        CU_ASSERT_EQUAL(run("qemu-io -f qcow2 -c 'read -P 9 0 1m' "
                            "-c 'read -P 3 1m 1m' -c 'read -P 4 3m 8k' %s "
                            ">/dev/null", img), 0);
        CU_ASSERT_EQUAL(run("qemu-img convert -l s -O raw %s %s.s && "
                            "qemu-img compare -q -f raw -F raw %s %s.s",
                            img, src, src, src), 0);
        free(src);
    }

    /* dirty and hostile: every L1 entry names the same L2 table; the
     * repair gives up with an error instead of reading it for ever */
    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                              "lazy_refcounts=on,cluster_size=512 %s 1G",
                              img), 0);
    CU_ASSERT_EQUAL_FATAL(run("qemu-io -f qcow2 -c 'write -P 1 0 512' %s "
                              ">/dev/null", img), 0);
    {
        uint64_t l1 = file_get64(img, 40);
        uint32_t l1n = file_get64(img, 32) & 0xffffffff;
        uint64_t e0 = file_get64(img, l1);
        uint8_t *t = xmalloc((size_t)l1n * 8);

        for (uint32_t i = 0; i < l1n; i++) {
            put_be64(t + i * 8, e0);
        }
        file_put(img, l1, t, (size_t)l1n * 8);
        file_put64(img, 72, QCOW2_INCOMPAT_DIRTY);
        free(t);
    }
    expect_open_error(img, false, "cannot repair");

    /* corrupt: read-only only */
    make_victim(img, "");
    file_put64(img, 72, QCOW2_INCOMPAT_CORRUPT);
    expect_open_error(img, false, "corrupt");
    bs = open_qcow2(img, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    blk_unref(bs);
    /* unknown incompatible bit */
    make_victim(img, "");
    file_put64(img, 72, 1ULL << 20);
    expect_open_error(img, true, "unsupported qcow2 feature");
    /* refcount_order 7 */
    make_victim(img, "");
    {
        uint8_t b[4];

        put_be32(b, 7);
        file_put(img, 96, b, 4);
    }
    expect_open_error(img, true, "refcount width");
    /* v2 images stay v2 and readable */
    make_victim(img, "-o compat=0.10");
    bs = open_qcow2(img, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    blk_unref(bs);
    free(img);
}


/* Format probing, and a backing file without a format extension. */
static void test_probe(void)
{
    char *img = tpath("p.qcow2"), *top = tpath("p-top.qcow2");
    BlockNode *bs;
    Error *err = NULL;
    uint8_t buf[512];

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 %s 1M && "
                              "qemu-io -f qcow2 -c 'write -P 0x71 0 4k' %s "
                              ">/dev/null", img, img), 0);
    bs = blk_open_image(graph, img, NULL, NULL, true, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_STRING_EQUAL(bs->drv->format_name, "qcow2");
    CU_ASSERT_EQUAL(blk_getlength(bs), 1 << 20);
    blk_unref(bs);

    /* backing format not recorded: probed */
    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -b %s -F qcow2 "
                              "%s 1M", img, top), 0);
    {
        /* turn the backing format extension into an unknown one */
        uint64_t hl = file_get64(top, 96) & 0xffffffff;
        uint8_t magic[4];

        CU_ASSERT_EQUAL_FATAL(file_get64(top, hl) >> 32,
                              QCOW2_EXT_BACKING_FORMAT);
        put_be32(magic, 0x12345678);
        file_put(top, hl, magic, 4);
    }
    bs = open_qcow2(top, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs->backing);
    CU_ASSERT_STRING_EQUAL(bs->backing->drv->format_name, "qcow2");
    CU_ASSERT_EQUAL(blk_pread(bs, 0, sizeof(buf), buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0x71);
    blk_unref(bs);

    /* the probe function itself */
    memset(buf, 0, sizeof(buf));
    memcpy(buf, "QFI\xfb\0\0\0\3", 8);
    CU_ASSERT_EQUAL(blk_find_driver("qcow2")->probe(buf, 8, NULL), 100);
    CU_ASSERT_EQUAL(blk_find_driver("qcow2")->probe(buf, 4, NULL), 0);
    buf[7] = 9;
    CU_ASSERT_EQUAL(blk_find_driver("qcow2")->probe(buf, 8, NULL), 0);
    free(img);
    free(top);
}

/* zstd-compressed clusters: read when built with libzstd, else a clear
 * -ENOTSUP (with a log line). */
static void test_zstd(void)
{
    char *raw = tpath("z.raw"), *img = tpath("z.qcow2");
    BlockNode *bs;
    Error *err = NULL;
    uint8_t buf[4096];
    int ret;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f raw %s 1M && "
                              "qemu-io -f raw -c 'write -P 0x29 0 1m' %s "
                              ">/dev/null && qemu-img convert -c -f raw -O "
                              "qcow2 -o compression_type=zstd %s %s",
                              raw, raw, raw, img), 0);
    bs = open_qcow2(img, true, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    ret = blk_pread(bs, 4096, sizeof(buf), buf, 0);
#ifdef HAVE_ZSTD
    CU_ASSERT_EQUAL(ret, 0);
    CU_ASSERT_EQUAL(buf[0], 0x29);
    CU_ASSERT_TRUE(node_equals_raw(bs, raw));
#else
    CU_ASSERT_EQUAL(ret, -ENOTSUP);
#endif
    {
        ImageInfo *info = XNEW(ImageInfo);

        bs->drv->query_image(bs, info);
        CU_ASSERT_EQUAL(info->format_specific->u.qcow2.data->compression_type,
                        QCOW2_COMPRESSION_TYPE_ZSTD);
        qapi_free_ImageInfo(info);
    }
    blk_unref(bs);
    free(raw);
    free(img);
}


/* Persistent bitmaps made by qemu-img: a writable open flags them in-use
 * (we do not track writes in them yet) and keeps the image clean; a
 * dirty image with bitmaps keeps their clusters through the repair. */
/* Bitmaps made by qemu-img: loaded (persistent, recording), marked in
 * use in the file while the image is open writable, stored with the
 * new writes at close, in_use cleared; qemu-img check stays clean.  A
 * crash of the writer (qemu-io abort, with lazy refcounts: the image is
 * also dirty) leaves them in use: loaded inconsistent, kept so, and
 * removable by qemu-img. */
static void test_bitmaps_kept_consistent(void)
{
    char *img = tpath("bm.qcow2");
    BlockNode *bs;
    Error *err = NULL;
    uint8_t buf[4096];

    for (int dirty = 0; dirty < 2; dirty++) {
        DirtyBitmap *b0, *b1;

        CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 %s%s 16M && "
                                  "qemu-io -f qcow2 -c 'write -P 1 0 1m' %s "
                                  ">/dev/null && qemu-img bitmap --add %s b0 "
                                  "&& qemu-img bitmap --add -g 512k %s b1",
                                  dirty ? "-o lazy_refcounts=on " : "",
                                  img, img, img, img), 0);
        if (dirty) {
            system(xasprintf_tmp("ulimit -c 0; qemu-io -f qcow2 -c 'write "
                                 "-P 2 4m 1m' -c abort %s >/dev/null 2>&1",
                                 img));
            CU_ASSERT_TRUE((file_get64(img, 72) & QCOW2_INCOMPAT_DIRTY)
                           != 0);
        }
        bs = open_qcow2(img, false, "", &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        b0 = blk_dirty_bitmap_find(bs, "b0");
        b1 = blk_dirty_bitmap_find(bs, "b1");
        CU_ASSERT_PTR_NOT_NULL_FATAL(b0);
        CU_ASSERT_PTR_NOT_NULL_FATAL(b1);
        CU_ASSERT_TRUE(dirty_bitmap_persistent(b0));
        CU_ASSERT_EQUAL(dirty_bitmap_inconsistent(b0), dirty);
        CU_ASSERT_EQUAL(dirty_bitmap_enabled(b0), !dirty);
        CU_ASSERT_EQUAL(dirty_bitmap_granularity(b1), 512 * 1024);
        CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(b0)), 0);
        /* Open writable: in use in the file right away. */
        CU_ASSERT_EQUAL(run("qemu-img info -U %s | grep -c in-use | "
                            "grep -qx 2", img), 0);
        memset(buf, 3, sizeof(buf));
        CU_ASSERT_EQUAL(blk_pwrite(bs, 8 << 20, sizeof(buf), buf, 0), 0);
        CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(b0)),
                        dirty ? 0 : 64 * 1024);
        blk_unref(bs);
        CU_ASSERT_EQUAL(run("qemu-img check -q %s", img), 0);
        CU_ASSERT_EQUAL(run("qemu-img info %s | grep -c in-use | "
                            "grep -qx %d", img, dirty ? 2 : 0), 0);
        CU_ASSERT_EQUAL(run("qemu-io -f qcow2 -c 'read -P 1 0 1m' -c "
                            "'read -P 3 8m 4k' %s >/dev/null", img), 0);
        if (!dirty) {
            /* Read back: exactly the granule written, in each. */
            bs = open_qcow2(img, true, "", &err);
            CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
            b0 = blk_dirty_bitmap_find(bs, "b0");
            b1 = blk_dirty_bitmap_find(bs, "b1");
            CU_ASSERT_PTR_NOT_NULL_FATAL(b0);
            CU_ASSERT_PTR_NOT_NULL_FATAL(b1);
            CU_ASSERT_FALSE(dirty_bitmap_inconsistent(b0));
            CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(b0)), 64 * 1024);
            CU_ASSERT_TRUE(hbm_get(dirty_bitmap_bits(b0), 8 << 20));
            CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(b1)), 512 * 1024);
            CU_ASSERT_TRUE(hbm_get(dirty_bitmap_bits(b1), 8 << 20));
            blk_unref(bs);
        }
        /* The bitmaps can be removed by qemu-img. */
        CU_ASSERT_EQUAL(run("qemu-img bitmap --remove %s b0 && "
                            "qemu-img check -q %s", img, img), 0);
    }
    free(img);
}

/* Bitmaps blockd creates: stored at close with their bits, listed by
 * qemu-img with flags [auto] (or none, disabled); removal takes one
 * out of the image at once; refcounts exact all along. */
static void test_bitmaps_store_remove(void)
{
    char *img = tpath("bs.qcow2");
    BlockNode *bs;
    Error *err = NULL;
    uint8_t buf[4096];
    DirtyBitmap *a, *b, *c;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 %s 64M", img),
                          0);
    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(blk_drv_qcow2.bitmap_can_store(bs, "a", 65536, &err));
    a = blk_dirty_bitmap_create(bs, "a", 65536, &err);
    b = blk_dirty_bitmap_create(bs, "b", 4096, &err);
    c = blk_dirty_bitmap_create(bs, "c", 1 << 20, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    dirty_bitmap_set_persistent(a, true);
    dirty_bitmap_set_persistent(b, true);
    dirty_bitmap_set_persistent(c, true);
    memset(buf, 7, sizeof(buf));
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(blk_pwrite(bs, (40 << 20) - 512, 1024, buf, 0), 0);
    dirty_bitmap_set_enabled(c, false);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 20 << 20, 4096, buf, 0), 0);
    /* Not stored yet: removing "c" from the image is a no-op. */
    CU_ASSERT_TRUE(blk_drv_qcow2.bitmap_remove_persistent(bs, "c", &err));
    blk_unref(bs);
    CU_ASSERT_EQUAL(run("qemu-img check -q %s", img), 0);
    CU_ASSERT_EQUAL(run("qemu-img info --output=json %s | python3 -c '"
                        "import json,sys; b=json.load(sys.stdin)"
                        "[\"format-specific\"][\"data\"][\"bitmaps\"]; "
                        "assert b == [{\"flags\": [\"auto\"], \"name\": "
                        "\"a\", \"granularity\": 65536}, {\"flags\": "
                        "[\"auto\"], \"name\": \"b\", \"granularity\": "
                        "4096}, {\"flags\": [], \"name\": \"c\", "
                        "\"granularity\": 1048576}], b'", img), 0);

    bs = open_qcow2(img, false, "", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    a = blk_dirty_bitmap_find(bs, "a");
    b = blk_dirty_bitmap_find(bs, "b");
    c = blk_dirty_bitmap_find(bs, "c");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(a)), 4 * 65536);
    CU_ASSERT_TRUE(hbm_get(dirty_bitmap_bits(a), 0));
    CU_ASSERT_TRUE(hbm_get(dirty_bitmap_bits(a), (40 << 20) - 1));
    CU_ASSERT_TRUE(hbm_get(dirty_bitmap_bits(a), 40 << 20));
    CU_ASSERT_TRUE(hbm_get(dirty_bitmap_bits(a), 20 << 20));
    CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(b)), 4 * 4096);
    CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(c)), 3 << 20);
    CU_ASSERT_FALSE(dirty_bitmap_enabled(c));
    CU_ASSERT_TRUE(dirty_bitmap_enabled(a));
    /* Remove "b": gone from the image at once. */
    CU_ASSERT_TRUE(blk_drv_qcow2.bitmap_remove_persistent(bs, "b", &err));
    blk_dirty_bitmap_release(b);
    CU_ASSERT_EQUAL(run("qemu-img info -U %s | grep -q 'name: b'", img), 1);
    CU_ASSERT_EQUAL(run("qemu-img info -U %s | grep -q 'name: a'", img), 0);
    CU_ASSERT_TRUE(blk_drv_qcow2.bitmap_remove_persistent(bs, "a", &err));
    CU_ASSERT_TRUE(blk_drv_qcow2.bitmap_remove_persistent(bs, "c", &err));
    blk_dirty_bitmap_release(a);
    blk_dirty_bitmap_release(c);
    CU_ASSERT_EQUAL(run("qemu-img check -q -U %s", img), 0);
    blk_unref(bs);
    CU_ASSERT_EQUAL(run("qemu-img check -q %s", img), 0);
    CU_ASSERT_EQUAL(run("qemu-img info %s | grep -q bitmaps", img), 1);
    free(img);
}


/* Random bits survive store and load exactly: 512-byte clusters, so a
 * data cluster holds 4096 granules and a 9 MiB image at 512 B needs
 * five of them (the last one partial); whole clean clusters get no
 * data cluster; an all-ones table entry (bit 0, which QEMU does not
 * write but the spec allows) reads as a fully dirty cluster. */
static void test_bitmaps_random_roundtrip(void)
{
    char *img = tpath("rt-bm.qcow2");
    uint64_t size = 9 << 20, granules = size / 512;
    size_t bytes = hbm_serialize_size(granules);
    uint8_t *want = xzalloc(bytes), *got = xzalloc(bytes);
    BlockNode *bs;
    Error *err = NULL;
    DirtyBitmap *bm;
    unsigned seed = 12345;

    CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 -o "
                              "cluster_size=512 %s %llu", img,
                              (unsigned long long)size), 0);
    for (int round = 0; round < 3; round++) {
        bs = open_qcow2(img, false, "", &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        bm = blk_dirty_bitmap_find(bs, "r");
        if (bm == NULL) {
            bm = blk_dirty_bitmap_create(bs, "r", 512, &err);
            CU_ASSERT_PTR_NOT_NULL_FATAL(bm);
            dirty_bitmap_set_persistent(bm, true);
        }
        for (int i = 0; i < 40; i++) {
            uint64_t off = rand_r(&seed) % size;
            uint64_t n = 1 + rand_r(&seed) % (64 * 1024);

            hbm_set(dirty_bitmap_bits(bm), off, n);
        }
        /* Clear the second data cluster's range entirely. */
        hbm_reset(dirty_bitmap_bits(bm), 4096 * 512, 4096 * 512);
        hbm_serialize(dirty_bitmap_bits(bm), 0, granules, want);
        blk_unref(bs);
        CU_ASSERT_EQUAL(run("qemu-img check -q %s", img), 0);
        bs = open_qcow2(img, true, "", &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        bm = blk_dirty_bitmap_find(bs, "r");
        CU_ASSERT_PTR_NOT_NULL_FATAL(bm);
        memset(got, 0, bytes);
        hbm_serialize(dirty_bitmap_bits(bm), 0, granules, got);
        CU_ASSERT_EQUAL(memcmp(got, want, bytes), 0);
        blk_unref(bs);
    }
    /* The clean cluster has no data cluster: table entry 1 is 0. */
    {
        uint64_t ext = 0, doff, toff;
        char *cmd = xasprintf("qemu-img info %s | grep -q 'name: r'", img);

        CU_ASSERT_EQUAL(system(cmd), 0);
        free(cmd);
        /* Extension right after the 104-byte header (+ compression
         * type padding): find it. */
        for (uint64_t off = 104; off < 512; off += 8) {
            if ((file_get64(img, off) >> 32) == QCOW2_EXT_BITMAPS) {
                ext = off;
                break;
            }
        }
        CU_ASSERT_NOT_EQUAL_FATAL(ext, 0);
        doff = file_get64(img, ext + 24);
        toff = file_get64(img, doff);
        CU_ASSERT_EQUAL(file_get64(img, toff + 8), 0);
        /* Make entry 1 "all ones": that cluster's 4096 granules load
         * dirty. */
        file_put64(img, toff + 8, 1);
        bs = open_qcow2(img, true, "", &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        bm = blk_dirty_bitmap_find(bs, "r");
        CU_ASSERT_PTR_NOT_NULL_FATAL(bm);
        CU_ASSERT_EQUAL(hbm_next_clean(dirty_bitmap_bits(bm), 4096 * 512,
                                       4096 * 512), -1);
        blk_unref(bs);
    }
    free(want);
    free(got);
    free(img);
}

static void test_write_cow(void)
{
    write_cow("cluster_size=64k");
    write_cow("cluster_size=64k,extended_l2=on");
}


/* Growing an overlay shorter than its backing file: the new area reads
 * as zeroes, not as the backing file's data (v3 and v2). */
static void test_grow_over_backing(void)
{
    char *base = tpath("gb-base.qcow2"), *top = tpath("gb-top.qcow2");
    char *raw = tpath("gb.raw");
    uint8_t *buf = xmalloc(1 << 20);

    for (int v2 = 0; v2 < 2; v2++) {
        BlockNode *bs;
        Error *err = NULL;

        CU_ASSERT_EQUAL_FATAL(run("qemu-img create -q -f qcow2 %s 8M && "
                                  "qemu-io -f qcow2 -c 'write -P 0x55 0 8m' "
                                  "%s >/dev/null && qemu-img create -q -f "
                                  "qcow2 -o compat=%s -b %s -F qcow2 %s 3M",
                                  base, base, v2 ? "0.10" : "1.1", base, top),
                              0);
        bs = open_qcow2(top, false, "", &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
        CU_ASSERT_TRUE(blk_truncate(bs, 12 << 20, &err));
        CU_ASSERT_EQUAL(blk_pread(bs, 3 << 20, 1 << 20, buf, 0), 0);
        CU_ASSERT_EQUAL(buf[0], 0);
        CU_ASSERT_EQUAL(buf[(1 << 20) - 1], 0);
        CU_ASSERT_EQUAL(blk_pread(bs, (3 << 20) - 4096, 4096, buf, 0), 0);
        CU_ASSERT_EQUAL(buf[0], 0x55);
        blk_unref(bs);
        CU_ASSERT_EQUAL(run("qemu-img check -q %s", top), 0);
        CU_ASSERT_EQUAL(run("qemu-io -f qcow2 -c 'read -P 0x55 0 3m' "
                            "-c 'read -P 0 3m 9m' %s >/dev/null", top), 0);
    }
    free(buf);
    free(base);
    free(top);
    free(raw);
}


/* ---- bitmap directory (qcow2.txt "Bitmaps extension") ------------------ */

#define CS 65536ULL
#define BM_DIR_OFF (5 * CS)

static uint64_t bm_fsize = FSIZE;   /* file size bm_parse() checks with */

/* make_v3() plus a bitmaps extension (nb bitmaps, dir_size bytes at
 * cluster 5) and autoclear bit 0. */
static void make_bm_header(uint8_t *b, uint32_t nb, uint64_t dir_size)
{
    make_v3(b);
    put_be64(b + 88, QCOW2_AUTOCLEAR_BITMAPS);
    put_be32(b + 112, QCOW2_EXT_BITMAPS);
    put_be32(b + 116, 24);
    put_be32(b + 120, nb);
    put_be32(b + 124, 0);
    put_be64(b + 128, dir_size);
    put_be64(b + 136, BM_DIR_OFF);
    /* end marker at 144 */
}

/* Append one directory entry at *off. */
static void put_bme(uint8_t *d, size_t *off, uint64_t toff, uint32_t tsize,
                    uint32_t flags, uint8_t type, uint8_t gbits,
                    const char *name, size_t name_size, uint32_t extra)
{
    uint8_t *e = d + *off;

    put_be64(e, toff);
    put_be32(e + 8, tsize);
    put_be32(e + 12, flags);
    e[16] = type;
    e[17] = gbits;
    put_be16(e + 18, name_size);
    put_be32(e + 20, extra);
    for (uint32_t i = 0; i < extra; i++) {
        e[24 + i] = 0xa0 + i;
    }
    memcpy(e + 24 + extra, name, name_size);
    *off += (24 + extra + name_size + 7) & ~7u;
}

/* Parse header b and directory d (len bytes); on failure the message
 * must contain needle (NULL: must succeed). */
static Qcow2BitmapEntry *bm_parse(const uint8_t *b, const uint8_t *d,
                                  size_t len, const char *needle)
{
    Qcow2Header h;
    Qcow2BitmapEntry *e = NULL;
    Error *err = NULL;
    bool ok = qcow2_header_parse(b, HBUF, &h, &err) &&
              qcow2_header_check_layout(&h, bm_fsize, &err) &&
              qcow2_bitmap_dir_parse(&h, d, len, bm_fsize, &e, &err);

    if (needle == NULL) {
        if (!ok) {
            fprintf(stderr, "\nunexpected error '%s'\n",
                    error_get_pretty(err));
            error_free(err);
        }
        CU_ASSERT_TRUE(ok);
        return e;
    }
    CU_ASSERT_FALSE(ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (strstr(error_get_pretty(err), needle) == NULL) {
        fprintf(stderr, "\nerror '%s' lacks '%s'\n", error_get_pretty(err),
                needle);
        CU_FAIL("unexpected message");
    }
    error_free(err);
    return NULL;
}

/* One bitmap "b0" with the given fields, parsed, expecting needle. */
static void bm_one(uint64_t toff, uint32_t tsize, uint32_t flags,
                   uint8_t type, uint8_t gbits, const char *name,
                   size_t name_size, uint32_t extra, const char *needle)
{
    static uint8_t b[HBUF], d[4096];
    size_t len = 0;
    Qcow2BitmapEntry *e;

    memset(d, 0, sizeof(d));
    put_bme(d, &len, toff, tsize, flags, type, gbits, name, name_size,
            extra);
    make_bm_header(b, 1, len);
    e = bm_parse(b, d, len, needle);
    qcow2_bitmap_dir_free(e, 1);
}

static void test_bitmap_dir_valid(void)
{
    static uint8_t b[HBUF], d[4096], enc[4096];
    size_t len = 0;
    Qcow2BitmapEntry *e;
    Qcow2Header h;
    Error *err = NULL;

    memset(d, 0, sizeof(d));
    put_bme(d, &len, 6 * CS, 1, QCOW2_BME_AUTO, 1, 16, "b0", 2, 0);
    put_bme(d, &len, 7 * CS, 4, QCOW2_BME_IN_USE, 1, 9, "second", 6, 0);
    put_bme(d, &len, 8 * CS, 1, QCOW2_BME_EXTRA_DATA_COMPATIBLE, 1, 31,
            "x", 1, 5);
    make_bm_header(b, 3, len);
    e = bm_parse(b, d, len, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_STRING_EQUAL(e[0].name, "b0");
    CU_ASSERT_EQUAL(e[0].table_offset, 6 * CS);
    CU_ASSERT_EQUAL(e[0].table_size, 1);
    CU_ASSERT_EQUAL(e[0].flags, QCOW2_BME_AUTO);
    CU_ASSERT_EQUAL(e[0].granularity_bits, 16);
    CU_ASSERT_STRING_EQUAL(e[1].name, "second");
    CU_ASSERT_EQUAL(e[1].granularity_bits, 9);
    CU_ASSERT_EQUAL(e[2].extra_data_size, 5);
    CU_ASSERT_EQUAL(e[2].extra_data[4], 0xa4);
    /* Encoding gives back the same bytes. */
    CU_ASSERT_EQUAL(qcow2_bitmap_dir_size(e, 3), len);
    memset(enc, 0xff, sizeof(enc));
    qcow2_bitmap_dir_encode(e, 3, enc);
    CU_ASSERT_EQUAL(memcmp(enc, d, len), 0);
    qcow2_bitmap_dir_free(e, 3);

    /* Needed table sizes: 1 GiB at 64 KiB = 2 KiB of bits, 1 cluster;
     * at 512 B = 256 KiB of bits, 4 clusters. */
    CU_ASSERT_TRUE(qcow2_header_parse(b, HBUF, &h, &err));
    CU_ASSERT_EQUAL(qcow2_bitmap_table_entries(&h, 1ULL << 30, 16), 1);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_entries(&h, 1ULL << 30, 9), 4);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_entries(&h, (1ULL << 30) + 1, 9), 5);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_entries(&h, 0, 9), 0);

    /* Without autoclear bit 0 the extension is ignored, even when it is
     * nonsense. */
    make_bm_header(b, 0, 3);
    put_be64(b + 88, 0);
    CU_ASSERT_TRUE(qcow2_header_parse(b, HBUF, &h, &err) &&
                   qcow2_header_check_layout(&h, FSIZE, &err));
}

static void test_bitmap_dir_hostile_fields(void)
{
    char name[1100];

    memset(name, 'n', sizeof(name));
    /* Tables. */
    bm_one(6 * CS + 512, 1, 0, 1, 16, "b", 1, 0, "not cluster aligned");
    bm_one(FSIZE, 1, 0, 1, 16, "b", 1, 0, "past the end");
    bm_one(0, 1, 0, 1, 16, "b", 1, 0, "overlaps the image header");
    bm_one(6 * CS, 0, 0, 1, 16, "b", 1, 0, "table size 0");
    bm_one(6 * CS, 0x100000, 0, 1, 16, "b", 1, 0, "invalid bitmap table");
    /* 1 GiB at 512 B granularity needs 4 data clusters. */
    bm_one(6 * CS, 3, 0, 1, 9, "b", 1, 0, "too small");
    bm_one(6 * CS, 3, QCOW2_BME_IN_USE, 1, 9, "b", 1, 0, NULL);
    /* Fields. */
    bm_one(6 * CS, 1, 0, 1, 8, "b", 1, 0, "granularity 2^8 out of range");
    bm_one(6 * CS, 1, 0, 1, 32, "b", 1, 0, "granularity 2^32 out of range");
    bm_one(6 * CS, 1, 0, 1, 255, "b", 1, 0, "out of range");
    bm_one(6 * CS, 1, 8, 1, 16, "b", 1, 0, "unknown flags 0x8");
    bm_one(6 * CS, 1, 0x80000000u, 1, 16, "b", 1, 0, "unknown flags");
    bm_one(6 * CS, 1, 0, 0, 16, "b", 1, 0, "unknown type 0");
    bm_one(6 * CS, 1, 0, 2, 16, "b", 1, 0, "unknown type 2");
    /* Names. */
    bm_one(6 * CS, 1, 0, 1, 16, "a\0b", 3, 0, "NUL");
    bm_one(6 * CS, 1, 0, 1, 16, "", 0, 0, "invalid name length 0");
    bm_one(6 * CS, 1, 0, 1, 16, name, 1024, 0, "invalid name length 1024");
    bm_one(6 * CS, 1, 0, 1, 16, name, 1023, 0, NULL);
    /* Extra data: kept; larger than the directory is refused. */
    bm_one(6 * CS, 1, 0, 1, 16, "b", 1, 16, NULL);
    {
        static uint8_t b[HBUF], d[64];
        size_t len = 0;

        memset(d, 0, sizeof(d));
        put_bme(d, &len, 6 * CS, 1, 0, 1, 16, "b", 1, 0);
        put_be32(d + 20, 0xffffffffu);
        make_bm_header(b, 1, len);
        bm_parse(b, d, len, "runs past the end of the directory");
    }
}

static void test_bitmap_dir_hostile_layout(void)
{
    static uint8_t b[HBUF], d[4096];
    size_t len;
    Qcow2BitmapEntry *e;

    /* Two tables in one cluster. */
    len = 0;
    memset(d, 0, sizeof(d));
    put_bme(d, &len, 6 * CS, 1, 0, 1, 16, "a", 1, 0);
    put_bme(d, &len, 6 * CS, 1, 0, 1, 16, "b", 1, 0);
    make_bm_header(b, 2, len);
    bm_parse(b, d, len, "the tables of bitmaps");
    /* A table over the directory, the reftable, the L1 table. */
    bm_one(BM_DIR_OFF, 1, 0, 1, 16, "b", 1, 0,
           "overlaps the bitmap directory");
    bm_one(CS, 1, 0, 1, 16, "b", 1, 0, "overlaps the refcount table");
    bm_one(3 * CS, 1, 0, 1, 16, "b", 1, 0, "overlaps the L1 table");
    /* Duplicate names, also far apart. */
    len = 0;
    put_bme(d, &len, 6 * CS, 1, 0, 1, 16, "dup", 3, 0);
    put_bme(d, &len, 7 * CS, 1, 0, 1, 16, "other", 5, 0);
    put_bme(d, &len, 8 * CS, 1, 0, 1, 16, "dup", 3, 0);
    make_bm_header(b, 3, len);
    bm_parse(b, d, len, "duplicate bitmap name 'dup'");
    /* Count mismatches and trailing bytes. */
    len = 0;
    put_bme(d, &len, 6 * CS, 1, 0, 1, 16, "a", 1, 0);
    make_bm_header(b, 2, len);
    bm_parse(b, d, len, "holds 1 bitmaps, the header says 2");
    make_bm_header(b, 1, len + 8);
    bm_parse(b, d, len + 8, "8 bytes after its 1 entries");
    make_bm_header(b, 1, len - 8);
    bm_parse(b, d, len - 8, "runs past the end");
    /* Extension fields. */
    make_bm_header(b, 0, len);
    bm_parse(b, d, len, "zero bitmaps");
    make_bm_header(b, 65536, len);
    bm_parse(b, d, len, "65536 bitmaps, more than the 65535 allowed");
    make_bm_header(b, 1, len);
    put_be32(b + 124, 1);
    bm_parse(b, d, len, "reserved field");
    make_bm_header(b, 1, 64ULL * 1024 * 1024 + 8);
    bm_parse(b, d, len, "invalid bitmap directory size");
    make_bm_header(b, 1, len);
    put_be64(b + 136, BM_DIR_OFF + 8);
    bm_parse(b, d, len, "not cluster aligned");
    make_bm_header(b, 1, len);
    put_be64(b + 136, FSIZE);
    bm_parse(b, d, len, "past the end");
    make_bm_header(b, 1, len);
    put_be32(b + 4, 2);
    put_be32(b + 96, 4);
    {
        Qcow2Header h;
        Error *err = NULL;

        /* v2 has no extension area parsed as v3; build it by hand. */
        memset(&h, 0, sizeof(h));
        h.version = 2;
        h.has_bitmaps_ext = true;
        h.autoclear_features = QCOW2_AUTOCLEAR_BITMAPS;
        h.nb_bitmaps = 1;
        CU_ASSERT_FALSE(qcow2_bitmap_ext_check(&h, FSIZE, &err));
        CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "version 2"));
        error_free(err);
    }
    /* In use with a too small table is fine (contents are not read). */
    len = 0;
    put_bme(d, &len, 6 * CS, 1, QCOW2_BME_IN_USE | QCOW2_BME_AUTO, 1, 9,
            "u", 1, 0);
    make_bm_header(b, 1, len);
    e = bm_parse(b, d, len, NULL);
    qcow2_bitmap_dir_free(e, 1);
}

static void test_bitmap_dir_many(void)
{
    /* 65535 bitmaps, tables in distinct clusters, unique names: parsed
     * (and quickly: names and tables are sorted, not compared pairwise). */
    uint32_t n = QCOW2_MAX_BITMAPS;
    uint8_t *b = xzalloc(HBUF);
    uint8_t *d = xzalloc((size_t)n * 32);
    size_t len = 0;
    Qcow2BitmapEntry *e;

    for (uint32_t i = 0; i < n; i++) {
        char name[8];

        snprintf(name, sizeof(name), "%05x", i);
        put_bme(d, &len, (40 + (uint64_t)i) * CS, 1, 0, 1, 16, name, 5, 0);
    }
    make_bm_header(b, n, len);
    bm_fsize = 8 * FSIZE;
    e = bm_parse(b, d, len, NULL);
    bm_fsize = FSIZE;
    CU_ASSERT_PTR_NOT_NULL(e);
    qcow2_bitmap_dir_free(e, n);
    free(b);
    free(d);
}

static void test_bitmap_table_entry(void)
{
    static uint8_t b[HBUF];
    Qcow2Header h;
    Error *err = NULL;
    uint64_t off;
    bool ones;

    make_v3(b);
    CU_ASSERT_TRUE_FATAL(qcow2_header_parse(b, HBUF, &h, &err));
    CU_ASSERT_EQUAL(qcow2_bitmap_table_decode(&h, 0, FSIZE, &off, &ones), 0);
    CU_ASSERT_EQUAL(off, 0);
    CU_ASSERT_FALSE(ones);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_decode(&h, 1, FSIZE, &off, &ones), 0);
    CU_ASSERT_EQUAL(off, 0);
    CU_ASSERT_TRUE(ones);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_decode(&h, 9 * CS, FSIZE, &off,
                                              &ones), 0);
    CU_ASSERT_EQUAL(off, 9 * CS);
    /* Reserved bits, misaligned, header cluster, past the end, bit 0
     * with an offset. */
    CU_ASSERT_EQUAL(qcow2_bitmap_table_decode(&h, 2, FSIZE, &off, &ones),
                    -EIO);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_decode(&h, 1ULL << 63 | 9 * CS,
                                              FSIZE, &off, &ones), -EIO);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_decode(&h, 9 * CS + 512, FSIZE, &off,
                                              &ones), -EIO);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_decode(&h, 512 * 128, 512 * 128,
                                              &off, &ones), -EIO);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_decode(&h, FSIZE, FSIZE, &off,
                                              &ones), -EIO);
    CU_ASSERT_EQUAL(qcow2_bitmap_table_decode(&h, 9 * CS | 1, FSIZE, &off,
                                              &ones), -EIO);
}

static void test_bitmap_header_update(void)
{
    static uint8_t b[HBUF], before[HBUF];
    Qcow2Header h;
    Error *err = NULL;
    size_t end;

    /* Add the extension to a header with a backing file and an unknown
     * extension: both survive, the name moves after the extensions. */
    make_v3(b);
    put_be32(b + 112, 0x12345678);       /* unknown extension, 5 bytes */
    put_be32(b + 116, 5);
    memcpy(b + 120, "hello", 5);
    /* end marker at 128 */
    put_be64(b + 8, 136);
    put_be32(b + 16, 4);
    memcpy(b + 136, "base", 4);
    put_be64(b + 88, 1ULL << 1 | 1ULL << 5);
    memcpy(before, b, HBUF);
    CU_ASSERT_TRUE_FATAL(qcow2_header_update_bitmaps(b, HBUF, 3, 48,
                                                     7 * CS, &end, &err));
    CU_ASSERT_TRUE_FATAL(qcow2_header_parse(b, HBUF, &h, &err));
    CU_ASSERT_TRUE(h.has_bitmaps_ext);
    CU_ASSERT_EQUAL(h.nb_bitmaps, 3);
    CU_ASSERT_EQUAL(h.bitmap_directory_size, 48);
    CU_ASSERT_EQUAL(h.bitmap_directory_offset, 7 * CS);
    CU_ASSERT_EQUAL(h.autoclear_features, 1 | 1ULL << 1 | 1ULL << 5);
    CU_ASSERT_STRING_EQUAL(h.backing_file, "base");
    CU_ASSERT_EQUAL(memcmp(b + 112, before + 112, 16), 0);
    CU_ASSERT_TRUE(end >= h.backing_file_offset + 4);
    CU_ASSERT_EQUAL(memcmp(b, before, 8), 0);
    CU_ASSERT_EQUAL(memcmp(b + 16, before + 16, 72), 0);
    CU_ASSERT_EQUAL(memcmp(b + end, before + end, HBUF - end), 0);

    /* Replace in place, then remove. */
    CU_ASSERT_TRUE_FATAL(qcow2_header_update_bitmaps(b, HBUF, 1, 24,
                                                     9 * CS, &end, &err));
    CU_ASSERT_TRUE_FATAL(qcow2_header_parse(b, HBUF, &h, &err));
    CU_ASSERT_EQUAL(h.nb_bitmaps, 1);
    CU_ASSERT_EQUAL(h.bitmap_directory_offset, 9 * CS);
    CU_ASSERT_TRUE_FATAL(qcow2_header_update_bitmaps(b, HBUF, 0, 0, 0, &end,
                                                     &err));
    CU_ASSERT_TRUE_FATAL(qcow2_header_parse(b, HBUF, &h, &err));
    CU_ASSERT_FALSE(h.has_bitmaps_ext);
    CU_ASSERT_EQUAL(h.autoclear_features, 1ULL << 1 | 1ULL << 5);
    CU_ASSERT_STRING_EQUAL(h.backing_file, "base");
    /* Back to the original layout, byte for byte. */
    CU_ASSERT_EQUAL(memcmp(b, before, HBUF), 0);

    /* No room: extensions filling the cluster. */
    make_v3(b);
    put_be32(b + 20, 9);                  /* 512-byte clusters */
    put_be32(b + 112, 0x12345678);
    put_be32(b + 116, 512 - 112 - 16);
    put_be32(b + 100, 112);
    CU_ASSERT_TRUE(qcow2_header_parse(b, 512, &h, &err));
    CU_ASSERT_FALSE(qcow2_header_update_bitmaps(b, 512, 1, 24, 1024, &end,
                                                &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
}

static CU_TestInfo qcow2_meta_tests[] = {
    { "header_valid", test_header_valid },
    { "bitmap_dir_valid", test_bitmap_dir_valid },
    { "bitmap_dir_hostile_fields", test_bitmap_dir_hostile_fields },
    { "bitmap_dir_hostile_layout", test_bitmap_dir_hostile_layout },
    { "bitmap_dir_many", test_bitmap_dir_many },
    { "bitmap_table_entry", test_bitmap_table_entry },
    { "bitmap_header_update", test_bitmap_header_update },
    { "header_truncated", test_header_truncated },
    { "header_bad_fields", test_header_bad_fields },
    { "header_l1", test_header_l1 },
    { "header_reftable", test_header_reftable },
    { "header_snapshots", test_header_snapshots },
    { "header_features", test_header_features },
    { "header_extensions", test_header_extensions },
    { "header_mutations", test_header_mutations },
    { "l2_decode", test_l2_decode },
    { "subclusters", test_subclusters },
    { "refcounts", test_refcounts },
    { "snapshot_table", test_snapshot_table },
    CU_TEST_INFO_NULL,
};

static CU_TestInfo qcow2_driver_tests[] = {
    { "read_cluster_sizes", test_read_cluster_sizes },
    { "read_refcount_compat", test_read_refcount_compat },
    { "read_compressed", test_read_compressed },
    { "read_backing_and_status", test_read_backing_and_status },
    { "backing_loop", test_backing_loop },
    { "snapshots", test_snapshots },
    { "write_images", test_write_images },
    { "write_direct", test_write_direct },
    { "write_reftable_growth", test_write_reftable_growth },
    { "grow_over_backing", test_grow_over_backing },
    { "write_cow", test_write_cow },
    { "random_overlay", test_random_overlay },
    { "random_overlay_extl2", test_random_overlay_extl2 },
    { "random_overlay_v2", test_random_overlay_v2 },
    { "concurrent_writers", test_concurrent_writers },
    { "lockfree_reads", test_lockfree_reads },
    { "crash_kill9", test_crash_kill9 },
    { "hostile_tables", test_hostile_tables },
    { "hostile_compressed", test_hostile_compressed },
    { "feature_bits", test_feature_bits },
    { "probe", test_probe },
    { "bitmaps_kept_consistent", test_bitmaps_kept_consistent },
    { "bitmaps_store_remove", test_bitmaps_store_remove },
    { "bitmaps_random_roundtrip", test_bitmaps_random_roundtrip },
    { "zstd", test_zstd },
    CU_TEST_INFO_NULL,
};

static int driver_init(void)
{
    return unit_qemu_graph_init(&graph);
}

static int driver_cleanup(void)
{
    return unit_graph_cleanup(&graph);
}

const CU_SuiteInfo unit_suites[] = {
    { .pName = "qcow2-meta", .pTests = qcow2_meta_tests },
    { .pName = "qcow2-driver", .pTests = qcow2_driver_tests,
      .pInitFunc = driver_init, .pCleanupFunc = driver_cleanup },
    CU_SUITE_INFO_NULL,
};
