/* test-bitmap.c - the sparse HBitmap: rounding, extents, searches,
 * counts with a clipped last granule, merges across granularities,
 * resizes, qcow2-order serialization, memory sparseness, and random
 * operations checked against a dense one-byte-per-granule model. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "cunit-main.h"
#include "unit-block.h"
#include "util/cleanup.h"
#include "util/util.h"

#define KiB 1024ull
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)
#define TiB (1024 * GiB)

static void test_new_bad(void)
{
    CU_ASSERT_PTR_NULL(hbm_new(1 * MiB, 256));
    CU_ASSERT_PTR_NULL(hbm_new(1 * MiB, 3000));
    CU_ASSERT_PTR_NULL(hbm_new(1 * MiB, 0));
    HBitmap *hb = hbm_new(0, 512);
    CU_ASSERT_PTR_NOT_NULL_FATAL(hb);
    CU_ASSERT_EQUAL(hbm_granules(hb), 0);
    hbm_set(hb, 0, 100);
    hbm_set_all(hb);
    CU_ASSERT_EQUAL(hbm_count(hb), 0);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 0, 100), -1);
    hbm_free(hb);
    hb = hbm_new(1 * MiB, BITMAP_GRANULARITY_MAX);
    CU_ASSERT_PTR_NOT_NULL_FATAL(hb);
    CU_ASSERT_EQUAL(hbm_granules(hb), 1);
    hbm_set(hb, 5, 1);
    CU_ASSERT_EQUAL(hbm_count(hb), 1 * MiB);
    hbm_free(hb);
}

static void test_rounding(void)
{
    /* 1 MiB + 100: 17 granules of 64 KiB, the last one 100 bytes */
    uint64_t size = 1 * MiB + 100;
    HBitmap *hb = hbm_new(size, 64 * KiB);

    CU_ASSERT_EQUAL(hbm_granules(hb), 17);
    CU_ASSERT_TRUE(hbm_is_empty(hb));
    /* set rounds out: one byte dirties its granule */
    hbm_set(hb, 100, 1);
    CU_ASSERT_TRUE(hbm_get(hb, 0));
    CU_ASSERT_TRUE(hbm_get(hb, 64 * KiB - 1));
    CU_ASSERT_FALSE(hbm_get(hb, 64 * KiB));
    CU_ASSERT_EQUAL(hbm_count(hb), 64 * KiB);
    /* a range straddling a boundary dirties both */
    hbm_set(hb, 128 * KiB - 1, 2);
    CU_ASSERT_EQUAL(hbm_count(hb), 3 * 64 * KiB);
    /* reset rounds in: nothing wholly inside [1, 64 KiB + 1) */
    hbm_reset(hb, 1, 64 * KiB);
    CU_ASSERT_TRUE(hbm_get(hb, 0));
    CU_ASSERT_EQUAL(hbm_count(hb), 3 * 64 * KiB);
    hbm_reset(hb, 0, 64 * KiB);
    CU_ASSERT_FALSE(hbm_get(hb, 0));
    /* [64 KiB - 1, 192 KiB + 1) holds granules 1 and 2 wholly */
    hbm_reset(hb, 64 * KiB - 1, 128 * KiB + 2);
    CU_ASSERT_TRUE(hbm_is_empty(hb));

    /* count clips the last granule to the size */
    hbm_set(hb, size - 1, 1);
    CU_ASSERT_EQUAL(hbm_count(hb), 100);
    CU_ASSERT_TRUE(hbm_get(hb, 1 * MiB));
    CU_ASSERT_FALSE(hbm_get(hb, size));
    /* a reset that runs to the end clears the partial granule, one
     * that stops short or starts inside it does not */
    hbm_reset(hb, 1 * MiB, 99);
    hbm_reset(hb, 1 * MiB + 50, 50);
    CU_ASSERT_EQUAL(hbm_count(hb), 100);
    hbm_reset(hb, 1 * MiB, 100);
    CU_ASSERT_TRUE(hbm_is_empty(hb));
    hbm_set(hb, size - 1, 1);
    /* past the end: clipped, no effect */
    hbm_reset(hb, size, 1000);
    hbm_set(hb, size, 1000);
    CU_ASSERT_EQUAL(hbm_count(hb), 100);
    hbm_reset(hb, 1 * MiB, UINT64_MAX);
    CU_ASSERT_TRUE(hbm_is_empty(hb));

    hbm_set_all(hb);
    CU_ASSERT_EQUAL(hbm_count(hb), size);
    hbm_reset_all(hb);
    CU_ASSERT_EQUAL(hbm_count(hb), 0);
    CU_ASSERT_EQUAL(hbm_memory(hb), hbm_memory(hb));
    hbm_free(hb);
}

static void test_extents(void)
{
    uint64_t size = 10 * MiB;
    HBitmap *hb = hbm_new(size, 64 * KiB);
    bool dirty = true;

    /* empty: one clean extent, clipped to the request and the size */
    CU_ASSERT_EQUAL(hbm_extent(hb, 0, size, &dirty), size);
    CU_ASSERT_FALSE(dirty);
    CU_ASSERT_EQUAL(hbm_extent(hb, 5, 1000, &dirty), 1000);
    CU_ASSERT_EQUAL(hbm_extent(hb, size - 10, 1000, &dirty), 10);

    hbm_set(hb, 1 * MiB + 10, 200 * KiB);   /* granules 16..19 */
    CU_ASSERT_EQUAL(hbm_extent(hb, 0, size, &dirty), 1 * MiB);
    CU_ASSERT_FALSE(dirty);
    CU_ASSERT_EQUAL(hbm_extent(hb, 1 * MiB, size, &dirty), 256 * KiB);
    CU_ASSERT_TRUE(dirty);
    /* unaligned start inside a dirty granule */
    CU_ASSERT_EQUAL(hbm_extent(hb, 1 * MiB + 100, size, &dirty),
                    256 * KiB - 100);
    CU_ASSERT_TRUE(dirty);
    /* clipped to the request */
    CU_ASSERT_EQUAL(hbm_extent(hb, 1 * MiB + 100, 7, &dirty), 7);
    CU_ASSERT_TRUE(dirty);
    CU_ASSERT_EQUAL(hbm_extent(hb, 1 * MiB + 256 * KiB, size, &dirty),
                    size - 1 * MiB - 256 * KiB);
    CU_ASSERT_FALSE(dirty);
    /* a clean extent ending at a dirty one, from an unaligned start */
    CU_ASSERT_EQUAL(hbm_extent(hb, 3, size, &dirty), 1 * MiB - 3);

    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 0, size), 1 * MiB);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 1 * MiB + 5, size), 1 * MiB + 5);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 0, 1 * MiB), -1);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 0, 1 * MiB + 1), 1 * MiB);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 2 * MiB, size), -1);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, size, 10), -1);
    CU_ASSERT_EQUAL(hbm_next_clean(hb, 0, size), 0);
    CU_ASSERT_EQUAL(hbm_next_clean(hb, 1 * MiB + 1, size),
                    1 * MiB + 256 * KiB);
    CU_ASSERT_EQUAL(hbm_next_clean(hb, 1 * MiB, 256 * KiB), -1);
    hbm_set_all(hb);
    CU_ASSERT_EQUAL(hbm_next_clean(hb, 0, size), -1);
    CU_ASSERT_EQUAL(hbm_extent(hb, 7, size, &dirty), size - 7);
    CU_ASSERT_TRUE(dirty);
    hbm_free(hb);
}

static void test_merge(void)
{
    uint64_t size = 8 * MiB + 512;
    HBitmap *a = hbm_new(size, 4 * KiB);
    HBitmap *b = hbm_new(size, 64 * KiB);
    HBitmap *c = hbm_new(size, 512);
    HBitmap *d = hbm_new(size + 512, 512);

    /* fine into coarse: one 4 KiB granule dirties its 64 KiB granule */
    hbm_set(a, 5000, 1);                         /* [4 KiB, 8 KiB) */
    hbm_set(a, 200 * KiB, 4 * KiB);              /* [200, 204) KiB */
    CU_ASSERT_TRUE(hbm_merge(b, a));
    CU_ASSERT_EQUAL(hbm_count(b), 2 * 64 * KiB);
    CU_ASSERT_TRUE(hbm_get(b, 0));
    CU_ASSERT_TRUE(hbm_get(b, 192 * KiB));
    CU_ASSERT_FALSE(hbm_get(b, 64 * KiB));
    /* coarse into fine: the whole 64 KiB granules */
    CU_ASSERT_TRUE(hbm_merge(c, b));
    CU_ASSERT_EQUAL(hbm_count(c), 2 * 64 * KiB);
    CU_ASSERT_EQUAL(hbm_next_dirty(c, 64 * KiB, size), 192 * KiB);
    /* the clipped last granule */
    hbm_set(b, size - 1, 1);
    CU_ASSERT_TRUE(hbm_merge(c, b));
    CU_ASSERT_EQUAL(hbm_count(c), 2 * 64 * KiB + 512);
    CU_ASSERT_TRUE(hbm_merge(a, c));
    CU_ASSERT_EQUAL(hbm_count(a), 2 * 64 * KiB + 512);
    /* sizes must match */
    CU_ASSERT_FALSE(hbm_merge(d, a));
    CU_ASSERT_TRUE(hbm_is_empty(d));
    /* merge into itself changes nothing */
    CU_ASSERT_TRUE(hbm_merge(a, a));
    CU_ASSERT_EQUAL(hbm_count(a), 2 * 64 * KiB + 512);
    hbm_free(a);
    hbm_free(b);
    hbm_free(c);
    hbm_free(d);
}

static void test_resize(void)
{
    HBitmap *hb = hbm_new(1 * MiB, 512);
    HBitmap *copy;

    hbm_set(hb, 0, 512);
    hbm_set(hb, 1 * MiB - 512, 512);
    CU_ASSERT_EQUAL(hbm_count(hb), 1024);
    /* grow across a tree level (2^15 granules per leaf): clean tail */
    hbm_resize(hb, 100 * MiB);
    CU_ASSERT_EQUAL(hbm_size(hb), 100 * MiB);
    CU_ASSERT_EQUAL(hbm_count(hb), 1024);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 1 * MiB, 100 * MiB), -1);
    hbm_set(hb, 99 * MiB, 1);
    CU_ASSERT_EQUAL(hbm_count(hb), 1536);
    copy = hbm_copy(hb);
    /* shrink: bits past the new end are gone, also after growing back */
    hbm_resize(hb, 1 * MiB - 100);
    CU_ASSERT_EQUAL(hbm_count(hb), 512 + 412);
    hbm_resize(hb, 100 * MiB);
    CU_ASSERT_EQUAL(hbm_count(hb), 1024);
    CU_ASSERT_FALSE(hbm_get(hb, 99 * MiB));
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 512, 100 * MiB), 1 * MiB - 512);
    /* the copy is independent */
    CU_ASSERT_EQUAL(hbm_count(copy), 1536);
    CU_ASSERT_TRUE(hbm_get(copy, 99 * MiB));
    /* full, then shrunk and grown: the tail stays clean */
    hbm_set_all(copy);
    hbm_resize(copy, 3 * MiB);
    CU_ASSERT_EQUAL(hbm_count(copy), 3 * MiB);
    hbm_resize(copy, 200 * MiB);
    CU_ASSERT_EQUAL(hbm_count(copy), 3 * MiB);
    CU_ASSERT_EQUAL(hbm_next_clean(copy, 0, 200 * MiB), 3 * MiB);
    hbm_resize(copy, 0);
    CU_ASSERT_EQUAL(hbm_count(copy), 0);
    hbm_resize(copy, 10 * MiB);
    CU_ASSERT_TRUE(hbm_is_empty(copy));
    hbm_free(copy);
    hbm_free(hb);
}

static void test_serialize(void)
{
    /* granule i is bit i % 8 of byte i / 8 (qcow2.txt, "Bitmap table") */
    HBitmap *hb = hbm_new(100 * 512 + 1, 512);    /* 101 granules */
    uint8_t buf[16], want[16];

    CU_ASSERT_EQUAL(hbm_serialize_size(101), 13);
    CU_ASSERT_EQUAL(hbm_serialize_size(8), 1);
    CU_ASSERT_EQUAL(hbm_serialize_size(0), 0);
    hbm_set(hb, 0, 1);            /* granule 0 */
    hbm_set(hb, 9 * 512, 512);    /* granule 9 */
    hbm_set(hb, 16 * 512, 8 * 512);   /* granules 16..23 */
    hbm_set(hb, 100 * 512, 1);    /* granule 100, the clipped last */
    memset(buf, 0xcc, sizeof(buf));
    hbm_serialize(hb, 0, 101, buf);
    memset(want, 0, sizeof(want));
    want[0] = 0x01;
    want[1] = 0x02;
    want[2] = 0xff;
    want[12] = 0x10;
    CU_ASSERT_EQUAL(memcmp(buf, want, 13), 0);
    CU_ASSERT_EQUAL(buf[13], 0xcc);
    /* from granule 8, 9 granules: bit 1 (granule 9) of byte 0 and
     * nothing of granules 17.. */
    memset(buf, 0, sizeof(buf));
    hbm_serialize(hb, 8, 9, buf);
    CU_ASSERT_EQUAL(buf[0], 0x02);
    CU_ASSERT_EQUAL(buf[1], 0x01);
    /* past the end reads clean */
    hbm_serialize(hb, 96, 64, buf);
    CU_ASSERT_EQUAL(buf[0], 0x10);
    CU_ASSERT_EQUAL(buf[1], 0);

    /* deserialize assigns (clears what the buffer says is clean) */
    HBitmap *other = hbm_new(100 * 512 + 1, 512);
    hbm_set_all(other);
    hbm_deserialize(other, 0, 101, want);
    CU_ASSERT_EQUAL(hbm_count(other), hbm_count(hb));
    hbm_serialize(other, 0, 101, buf);
    CU_ASSERT_EQUAL(memcmp(buf, want, 13), 0);
    /* a partial range leaves the rest alone; bits past the end are
     * ignored */
    uint8_t ones[2] = { 0xff, 0xff };
    hbm_deserialize(other, 96, 16, ones);
    CU_ASSERT_EQUAL(hbm_count(other), hbm_count(hb) + 4 * 512);
    CU_ASSERT_EQUAL(hbm_next_dirty(other, 25 * 512, 101 * 512), 96 * 512);
    hbm_free(other);
    hbm_free(hb);
}

static void test_serialize_big(void)
{
    /* across leaves and markers: 3 leaves and a bit of 512 B granules */
    uint64_t n = 3 * 32768 + 77;
    HBitmap *hb = hbm_new(n * 512, 512);
    HBitmap *back = hbm_new(n * 512, 512);
    size_t len = hbm_serialize_size(n);
    uint8_t *buf = xmalloc(len), *buf2 = xmalloc(len);

    hbm_set(hb, 0, 32768 * 512);               /* leaf 0 full */
    hbm_set(hb, 40000 * 512, 3 * 512);         /* leaf 1 mixed */
    hbm_set(hb, (n - 1) * 512, 512);           /* the last granule */
    hbm_serialize(hb, 0, n, buf);
    for (size_t i = 0; i < 4096; i++) {
        CU_ASSERT_EQUAL_FATAL(buf[i], 0xff);
    }
    CU_ASSERT_EQUAL(buf[40000 / 8], 0x07);
    CU_ASSERT_EQUAL(buf[len - 1], 1u << ((n - 1) % 8));
    hbm_deserialize(back, 0, n, buf);
    CU_ASSERT_EQUAL(hbm_count(back), hbm_count(hb));
    /* a full leaf read back costs no leaf */
    CU_ASSERT_TRUE(hbm_memory(back) < 3 * 4096 + 8192);
    hbm_serialize(back, 0, n, buf2);
    CU_ASSERT_EQUAL(memcmp(buf, buf2, len), 0);
    /* in pieces, as the qcow2 driver reads cluster by cluster */
    HBitmap *pieces = hbm_new(n * 512, 512);
    for (uint64_t first = 0; first < n; first += 8 * 1000) {
        uint64_t cnt = MIN(8 * 1000, n - first);
        hbm_deserialize(pieces, first, cnt, buf + first / 8);
    }
    hbm_serialize(pieces, 0, n, buf2);
    CU_ASSERT_EQUAL(memcmp(buf, buf2, len), 0);
    hbm_free(pieces);
    free(buf);
    free(buf2);
    hbm_free(hb);
    hbm_free(back);
}

static void test_sparse(void)
{
    /* 16 TiB at 64 KiB: 2^28 granules, a dense array would be 32 MiB */
    HBitmap *hb = hbm_new(16 * TiB, 64 * KiB);

    CU_ASSERT_TRUE(hbm_memory(hb) < 1024);
    hbm_set(hb, 0, 1);
    hbm_set(hb, 8 * TiB, 10 * MiB);
    hbm_set(hb, 16 * TiB - 1, 1);
    CU_ASSERT_EQUAL(hbm_count(hb), 2 * 64 * KiB + 10 * MiB);
    CU_ASSERT_TRUE(hbm_memory(hb) < 64 * KiB);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 1, 16 * TiB), 1);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 64 * KiB, 16 * TiB), 8 * TiB);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 8 * TiB + 10 * MiB, 16 * TiB),
                    16 * TiB - 64 * KiB);
    /* all dirty is a marker, not 32 MiB of ones */
    hbm_set_all(hb);
    CU_ASSERT_EQUAL(hbm_count(hb), 16 * TiB);
    CU_ASSERT_TRUE(hbm_memory(hb) < 8 * KiB);
    hbm_reset(hb, 1 * TiB, 64 * KiB);
    CU_ASSERT_EQUAL(hbm_count(hb), 16 * TiB - 64 * KiB);
    CU_ASSERT_TRUE(hbm_memory(hb) < 64 * KiB);
    hbm_reset_all(hb);
    CU_ASSERT_TRUE(hbm_memory(hb) < 1024);
    hbm_free(hb);

    /* 16 TiB at 512 B: 2^35 granules (4 GiB dense); a radix of
     * pointers, not a dense top-level table */
    hb = hbm_new(16 * TiB, 512);
    CU_ASSERT_TRUE(hbm_memory(hb) < 1024);
    hbm_set(hb, 3 * TiB + 7, 1);
    hbm_set(hb, 15 * TiB, 1 * MiB);
    CU_ASSERT_TRUE(hbm_memory(hb) < 64 * KiB);
    CU_ASSERT_EQUAL(hbm_count(hb), 512 + 1 * MiB);
    hbm_set_all(hb);
    CU_ASSERT_TRUE(hbm_memory(hb) < 16 * KiB);
    CU_ASSERT_EQUAL(hbm_count(hb), 16 * TiB);
    /* an odd size: the last granule clipped, still no dense tail */
    hbm_resize(hb, 16 * TiB + 100);
    hbm_set_all(hb);
    CU_ASSERT_EQUAL(hbm_count(hb), 16 * TiB + 100);
    CU_ASSERT_TRUE(hbm_memory(hb) < 64 * KiB);
    HBitmap *copy = hbm_copy(hb);
    CU_ASSERT_EQUAL(hbm_memory(copy), hbm_memory(hb));
    hbm_free(copy);
    hbm_free(hb);

    /* the largest sizes a node can have */
    hb = hbm_new(INT64_MAX, 512);
    CU_ASSERT_PTR_NOT_NULL_FATAL(hb);
    hbm_set(hb, INT64_MAX - 1, 1);
    CU_ASSERT_EQUAL(hbm_count(hb), 511);
    CU_ASSERT_EQUAL(hbm_next_dirty(hb, 0, INT64_MAX),
                    (int64_t)ALIGN_DOWN((uint64_t)INT64_MAX, 512));
    hbm_set_all(hb);
    CU_ASSERT_EQUAL(hbm_count(hb), INT64_MAX);
    hbm_free(hb);
}

/* ---- random operations against a dense model ------------------------ */

typedef struct Model {
    uint64_t size;
    uint32_t gran;
    uint64_t n;
    uint8_t *bits;          /* one byte per granule */
} Model;

static uint64_t rnd64(void)
{
    return ((uint64_t)random() << 33) ^ ((uint64_t)random() << 11) ^
           (uint64_t)random();
}

/* A random offset, often near a granule or leaf boundary. */
static uint64_t rnd_offset(const Model *m)
{
    uint64_t g;

    switch (random() % 4) {
    case 0:
        return rnd64() % (m->size + 1);
    case 1:
        g = (rnd64() % (m->n / 32768 + 1)) * 32768;
        break;
    default:
        g = rnd64() % (m->n + 1);
        break;
    }
    uint64_t off = g * m->gran;
    off += (uint64_t)(random() % 3) - 1;        /* -1, 0, +1 bytes */
    return MIN(off, m->size);
}

static uint64_t rnd_len(const Model *m)
{
    switch (random() % 4) {
    case 0:
        return random() % 4 + 1;
    case 1:
        return (random() % 100 + 1) * m->gran;
    case 2:
        return rnd64() % (m->size + 1);
    default:
        return random() % (70000ull * m->gran);
    }
}

static void model_set(Model *m, uint64_t off, uint64_t len, bool dirty)
{
    if (off >= m->size || len == 0) {
        return;
    }
    uint64_t end = off + MIN(len, m->size - off);
    uint64_t lo, hi;
    if (dirty) {
        lo = off / m->gran;
        hi = DIV_ROUND_UP(end, m->gran);
    } else {
        lo = DIV_ROUND_UP(off, m->gran);
        hi = end == m->size ? m->n : end / m->gran;
    }
    if (lo < hi) {
        memset(m->bits + lo, dirty, hi - lo);
    }
}

static uint64_t model_count(const Model *m)
{
    uint64_t c = 0;

    for (uint64_t i = 0; i < m->n; i++) {
        if (m->bits[i]) {
            c += MIN((uint64_t)m->gran, m->size - i * m->gran);
        }
    }
    return c;
}

static int64_t model_next(const Model *m, uint64_t off, uint64_t len,
                          bool dirty)
{
    if (off >= m->size || len == 0) {
        return -1;
    }
    uint64_t end = off + MIN(len, m->size - off);
    for (uint64_t g = off / m->gran; g * m->gran < end; g++) {
        if (m->bits[g] == dirty) {
            return MAX(g * m->gran, off);
        }
    }
    return -1;
}

static void check_against_model(HBitmap *hb, const Model *m, bool full)
{
    uint64_t off = rnd_offset(m) % m->size, len = rnd_len(m) + 1;
    bool dirty;

    CU_ASSERT_EQUAL_FATAL(hbm_get(hb, off), m->bits[off / m->gran]);
    CU_ASSERT_EQUAL_FATAL(hbm_next_dirty(hb, off, len),
                          model_next(m, off, len, true));
    CU_ASSERT_EQUAL_FATAL(hbm_next_clean(hb, off, len),
                          model_next(m, off, len, false));
    uint64_t e = hbm_extent(hb, off, len, &dirty);
    CU_ASSERT_EQUAL_FATAL(dirty, m->bits[off / m->gran]);
    int64_t other = model_next(m, off, len, !dirty);
    uint64_t want = other < 0 ? MIN(len, m->size - off) : other - off;
    CU_ASSERT_EQUAL_FATAL(e, want);
    if (full) {
        CU_ASSERT_EQUAL_FATAL(hbm_count(hb), model_count(m));
        size_t blen = hbm_serialize_size(m->n);
        uint8_t *buf = xmalloc(blen);
        hbm_serialize(hb, 0, m->n, buf);
        for (uint64_t g = 0; g < m->n; g++) {
            CU_ASSERT_EQUAL_FATAL((buf[g / 8] >> (g % 8)) & 1, m->bits[g]);
        }
        HBitmap *back = hbm_new(m->size, m->gran);
        hbm_deserialize(back, 0, m->n, buf);
        CU_ASSERT_EQUAL_FATAL(hbm_count(back), hbm_count(hb));
        CU_ASSERT_TRUE_FATAL(hbm_memory(back) <= hbm_memory(hb));
        hbm_free(back);
        free(buf);
    }
}

static void random_run(uint64_t size, uint32_t gran, int ops, unsigned seed)
{
    Model m = { .size = size, .gran = gran };
    HBitmap *hb = hbm_new(size, gran);

    srandom(seed);
    m.n = DIV_ROUND_UP(size, gran);
    m.bits = xcalloc(m.n, 1);
    for (int i = 0; i < ops; i++) {
        uint64_t off = rnd_offset(&m), len = rnd_len(&m);
        switch (random() % 10) {
        case 0 ... 3:
            hbm_set(hb, off, len);
            model_set(&m, off, len, true);
            break;
        case 4 ... 6:
            hbm_reset(hb, off, len);
            model_set(&m, off, len, false);
            break;
        case 7: {
            /* merge from another granularity */
            uint32_t g2 = 512u << (random() % 10);
            HBitmap *o = hbm_new(size, g2);
            uint64_t o_off = rnd_offset(&m), o_len = rnd_len(&m);
            hbm_set(o, o_off, o_len);
            CU_ASSERT_TRUE_FATAL(hbm_merge(hb, o));
            /* what o's granules cover, rounded out to ours */
            if (o_off < size && o_len) {
                uint64_t end = o_off + MIN(o_len, size - o_off);
                uint64_t lo = ALIGN_DOWN(o_off, (uint64_t)g2);
                uint64_t hi = MIN(ALIGN_UP(end, (uint64_t)g2), size);
                model_set(&m, lo, hi - lo, true);
            }
            hbm_free(o);
            break;
        }
        case 8:
            if (random() % 20 == 0) {
                hbm_set_all(hb);
                memset(m.bits, 1, m.n);
            }
            break;
        default:
            if (random() % 20 == 0) {
                hbm_reset_all(hb);
                memset(m.bits, 0, m.n);
            }
            break;
        }
        check_against_model(hb, &m, i % 50 == 0 || i == ops - 1);
    }
    free(m.bits);
    hbm_free(hb);
}

static void test_random_small(void)
{
    /* within one leaf, an odd size */
    random_run(1000 * 512 + 3, 512, 2000, 1);
    random_run(10 * MiB + 4096 + 1, 64 * KiB, 2000, 2);
}

static void test_random_leaves(void)
{
    /* several leaves under one node: 100000 granules */
    random_run(100000ull * 4096 - 1000, 4096, 2000, 3);
}

static void test_random_levels(void)
{
    /* two node levels: just over 2^24 granules */
    random_run(((1ull << 24) + 40000) * 512 + 17, 512, 300, 4);
}

static void test_random_resize(void)
{
    Model m = { .gran = 512 };
    HBitmap *hb = hbm_new(1 * MiB, 512);

    srandom(5);
    m.size = 1 * MiB;
    m.n = m.size / 512;
    m.bits = xcalloc(m.n, 1);
    for (int i = 0; i < 300; i++) {
        uint64_t off = rnd_offset(&m), len = rnd_len(&m);
        if (random() % 2) {
            hbm_set(hb, off, len);
            model_set(&m, off, len, true);
        } else {
            hbm_reset(hb, off, len);
            model_set(&m, off, len, false);
        }
        if (random() % 5 == 0) {
            uint64_t size = rnd64() % (40 * MiB) + 1;
            uint64_t n = DIV_ROUND_UP(size, 512);
            hbm_resize(hb, size);
            /* a clipped last granule that grows keeps its bit */
            m.bits = xrealloc(m.bits, n);
            if (n > m.n) {
                memset(m.bits + m.n, 0, n - m.n);
            }
            m.size = size;
            m.n = n;
        }
        check_against_model(hb, &m, i % 20 == 0);
    }
    free(m.bits);
    hbm_free(hb);
}

/* ---- named bitmaps on nodes ----------------------------------------- */

static void test_node_create(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\","
                                   "\"size\":1048577}", NULL);
    Error *err = NULL;
    char longname[BITMAP_NAME_MAX + 2];

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_FALSE(blk_node_has_dirty_bitmaps(bs));
    CU_ASSERT_EQUAL(blk_dirty_bitmap_default_granularity(bs), 64 * KiB);
    DirtyBitmap *a = blk_dirty_bitmap_create(bs, "a", 4096, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_TRUE(blk_node_has_dirty_bitmaps(bs));
    CU_ASSERT_EQUAL(hbm_size(dirty_bitmap_bits(a)), 1048577);
    CU_ASSERT_TRUE(dirty_bitmap_enabled(a));
    CU_ASSERT_FALSE(dirty_bitmap_persistent(a));
    CU_ASSERT_FALSE(dirty_bitmap_busy(a));
    CU_ASSERT_PTR_EQUAL(dirty_bitmap_node(a), bs);

    CU_ASSERT_PTR_NULL(blk_dirty_bitmap_create(bs, "a", 4096, &err));
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err), "Bitmap already exists: a");
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(blk_dirty_bitmap_create(bs, "", 4096, &err));
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "Bitmap name cannot be empty");
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(blk_dirty_bitmap_create(bs, "b", 1000, &err));
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "Granularity must be power of 2 and at least 512");
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(blk_dirty_bitmap_create(bs, "b", 256, NULL));
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CU_ASSERT_PTR_NULL(blk_dirty_bitmap_create(bs, longname, 4096, NULL));
    longname[BITMAP_NAME_MAX] = '\0';
    DirtyBitmap *b = blk_dirty_bitmap_create(bs, longname, 512, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    DirtyBitmap *c = blk_dirty_bitmap_create(bs, "c", 65536, NULL);

    /* creation order */
    CU_ASSERT_PTR_EQUAL(blk_dirty_bitmap_next(bs, NULL), a);
    CU_ASSERT_PTR_EQUAL(blk_dirty_bitmap_next(bs, a), b);
    CU_ASSERT_PTR_EQUAL(blk_dirty_bitmap_next(bs, b), c);
    CU_ASSERT_PTR_NULL(blk_dirty_bitmap_next(bs, c));
    CU_ASSERT_PTR_EQUAL(blk_dirty_bitmap_find(bs, "c"), c);
    blk_dirty_bitmap_release(b);
    CU_ASSERT_PTR_NULL(blk_dirty_bitmap_find(bs, longname));
    CU_ASSERT_PTR_EQUAL(blk_dirty_bitmap_next(bs, a), c);

    dirty_bitmap_set_busy(a, true);
    dirty_bitmap_set_busy(a, true);
    dirty_bitmap_set_busy(a, false);
    CU_ASSERT_TRUE(dirty_bitmap_busy(a));
    dirty_bitmap_set_busy(a, false);
    CU_ASSERT_FALSE(dirty_bitmap_busy(a));
    dirty_bitmap_set_inconsistent(c);
    CU_ASSERT_TRUE(dirty_bitmap_inconsistent(c));
    CU_ASSERT_FALSE(dirty_bitmap_enabled(c));
    CU_ASSERT_TRUE(dirty_bitmap_persistent(c));
    /* QEMU's check flags: an inconsistent bitmap may only be removed */
    CU_ASSERT_FALSE(dirty_bitmap_check(c, BM_CHECK_DEFAULT, &err));
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "Bitmap 'c' is inconsistent and cannot be used");
    error_free(err);
    err = NULL;
    CU_ASSERT_FALSE(dirty_bitmap_check(c, BM_CHECK_ALLOW_RO, NULL));
    CU_ASSERT_TRUE(dirty_bitmap_check(c, BM_CHECK_BUSY | BM_CHECK_RO,
                                      NULL));
    dirty_bitmap_set_busy(a, true);
    CU_ASSERT_FALSE(dirty_bitmap_check(a, BM_CHECK_BUSY, &err));
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "Bitmap 'a' is currently in use by another "
                           "operation and cannot be used");
    error_free(err);
    err = NULL;
    dirty_bitmap_set_busy(a, false);
    /* read-only: a persistent bitmap of a read-only node */
    CU_ASSERT_TRUE(dirty_bitmap_check(a, BM_CHECK_DEFAULT, NULL));
    dirty_bitmap_set_persistent(a, true);
    bs->read_only = true;
    CU_ASSERT_FALSE(dirty_bitmap_check(a, BM_CHECK_RO, &err));
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "Bitmap 'a' is readonly and cannot be modified");
    error_free(err);
    err = NULL;
    CU_ASSERT_TRUE(dirty_bitmap_check(a, BM_CHECK_ALLOW_RO, NULL));
    bs->read_only = false;
    /* the node's close frees what is left (ASan checks) */
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_node_marking(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\","
                                   "\"size\":4194304}", NULL);
    uint8_t buf[4096];

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    DirtyBitmap *on = blk_dirty_bitmap_create(bs, "on", 65536, NULL);
    DirtyBitmap *off = blk_dirty_bitmap_create(bs, "off", 512, NULL);
    dirty_bitmap_set_enabled(off, false);
    memset(buf, 1, sizeof(buf));
    CU_ASSERT_EQUAL(blk_pwrite(bs, 70000, 10, buf, 0), 0);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 1 * MiB, 1, 0), 0);
    CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(on)), 2 * 64 * KiB);
    CU_ASSERT_TRUE(hbm_get(dirty_bitmap_bits(on), 65536));
    CU_ASSERT_TRUE(hbm_get(dirty_bitmap_bits(on), 1 * MiB));
    CU_ASSERT_TRUE(hbm_is_empty(dirty_bitmap_bits(off)));
    /* failed requests (past the end) reach no driver: nothing marked */
    CU_ASSERT_EQUAL(blk_pwrite(bs, 4 * MiB, 10, buf, 0), -ENOSPC);
    CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(on)), 2 * 64 * KiB);
    /* reads mark nothing */
    CU_ASSERT_EQUAL(blk_pread(bs, 0, sizeof(buf), buf, 0), 0);
    CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(on)), 2 * 64 * KiB);
    /* enabled again: records */
    dirty_bitmap_set_enabled(off, true);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 513, 1, buf, 0), 0);
    CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(off)), 512);
    CU_ASSERT_EQUAL(hbm_next_dirty(dirty_bitmap_bits(off), 0, 4 * MiB), 512);
    blk_unref(bs);
    blk_graph_free(g);
}

/* A format over a file: the format node's bitmap sees guest offsets,
 * the file node's own bitmap host offsets (QEMU does the same). */
static void test_node_chain(void)
{
    CLEANUP_FREE char *base = xasprintf("%s/base.raw", unit_tmpdir());
    CLEANUP_FREE char *json = NULL;
    BlockGraph *g = blk_graph_new(NULL);
    uint8_t buf[512];
    int fd;

    fd = open(base, O_CREAT | O_RDWR | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0 && ftruncate(fd, 8 * MiB) == 0);
    close(fd);
    json = xasprintf("{\"driver\":\"raw\",\"node-name\":\"r\","
                     "\"offset\":1048576,\"file\":{\"driver\":\"file\","
                     "\"node-name\":\"f\",\"filename\":\"%s\"}}", base);
    BlockNode *r = unit_open_json(g, json, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    BlockNode *f = r->file;
    DirtyBitmap *br = blk_dirty_bitmap_create(r, "b", 4096, NULL);
    DirtyBitmap *bf = blk_dirty_bitmap_create(f, "b", 4096, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(br);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bf);
    CU_ASSERT_EQUAL(hbm_size(dirty_bitmap_bits(br)), 7 * MiB);
    memset(buf, 7, sizeof(buf));
    CU_ASSERT_EQUAL(blk_pwrite(r, 0, sizeof(buf), buf, 0), 0);
    /* raw with an offset: the file sees the host offset */
    CU_ASSERT_EQUAL(hbm_next_dirty(dirty_bitmap_bits(br), 0, 8 * MiB), 0);
    CU_ASSERT_EQUAL(hbm_next_dirty(dirty_bitmap_bits(bf), 0, 8 * MiB),
                    1 * MiB);
    CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(bf)), 4096);
    /* a file grown by a write past its end grows its bitmaps */
    CU_ASSERT_EQUAL(blk_pwrite(f, 9 * MiB, sizeof(buf), buf, 0), 0);
    CU_ASSERT_EQUAL(hbm_size(dirty_bitmap_bits(bf)), 9 * MiB + 512);
    CU_ASSERT_TRUE(hbm_get(dirty_bitmap_bits(bf), 9 * MiB));
    blk_unref(r);
    blk_graph_free(g);
}

static void test_node_truncate(void)
{
    CLEANUP_FREE char *path = xasprintf("%s/trunc.raw", unit_tmpdir());
    CLEANUP_FREE char *json = NULL;
    BlockGraph *g = blk_graph_new(NULL);
    int fd;

    fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0 && ftruncate(fd, 2 * MiB) == 0);
    close(fd);
    json = xasprintf("{\"driver\":\"file\",\"filename\":\"%s\"}", path);
    BlockNode *bs = unit_open_json(g, json, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    DirtyBitmap *bm = blk_dirty_bitmap_create(bs, "t", 65536, NULL);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 2 * MiB - 1, 1, 0), 0);
    CU_ASSERT_EQUAL(hbm_count(dirty_bitmap_bits(bm)), 64 * KiB);
    CU_ASSERT_TRUE(blk_truncate(bs, 1 * MiB, NULL));
    CU_ASSERT_EQUAL(hbm_size(dirty_bitmap_bits(bm)), 1 * MiB);
    CU_ASSERT_TRUE(hbm_is_empty(dirty_bitmap_bits(bm)));
    CU_ASSERT_TRUE(blk_truncate(bs, 3 * MiB, NULL));
    CU_ASSERT_EQUAL(hbm_size(dirty_bitmap_bits(bm)), 3 * MiB);
    CU_ASSERT_TRUE(hbm_is_empty(dirty_bitmap_bits(bm)));
    blk_unref(bs);
    blk_graph_free(g);
}

static CU_TestInfo bitmap_tests[] = {
    { "new_bad", test_new_bad },
    { "rounding", test_rounding },
    { "extents", test_extents },
    { "merge", test_merge },
    { "resize", test_resize },
    { "serialize", test_serialize },
    { "serialize_big", test_serialize_big },
    { "sparse", test_sparse },
    { "random_small", test_random_small },
    { "random_leaves", test_random_leaves },
    { "random_levels", test_random_levels },
    { "random_resize", test_random_resize },
    { "node_create", test_node_create },
    { "node_marking", test_node_marking },
    { "node_chain", test_node_chain },
    { "node_truncate", test_node_truncate },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "bitmap", .pTests = bitmap_tests },
    CU_SUITE_INFO_NULL,
};
