/* fuzz-bitmap.c - libFuzzer target for the sparse HBitmap: the input is a
 * program of operations (set, reset, set/reset all, merge from another
 * granularity, resize, deserialize) run on an HBitmap and on a dense
 * one-byte-per-granule model; after each one the answers (get, count,
 * extents, next dirty/clean, serialize) must agree.  A bitmap wrong by
 * one bit loses a backup's data, so any disagreement aborts.
 *
 * Sizes stay up to ~3 leaves of 512 B granules (the leaf and node
 * boundaries are where a radix tree goes wrong) so the model is cheap.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/bitmap.h"
#include "util/util.h"

#define MAX_GRANULES (3 * 32768 + 1000)

typedef struct Model {
    uint64_t size;
    uint32_t gran;
    uint64_t n;
    uint8_t bits[MAX_GRANULES + 8];
} Model;

static Model m;

typedef struct Input {
    const uint8_t *p;
    size_t left;
} Input;

static uint64_t take(Input *in, unsigned bytes)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < bytes; i++) {
        v <<= 8;
        if (in->left > 0) {
            v |= *in->p++;
            in->left--;
        }
    }
    return v;
}

#define CHECK(c)                                                        \
    do {                                                                \
        if (!(c)) {                                                     \
            fprintf(stderr, "fuzz-bitmap: %s:%d: %s\n", __FILE__,       \
                    __LINE__, #c);                                      \
            abort();                                                    \
        }                                                               \
    } while (0)

static void model_range(uint64_t off, uint64_t len, bool dirty)
{
    if (off >= m.size || len == 0) {
        return;
    }
    uint64_t end = off + MIN(len, m.size - off);
    uint64_t lo, hi;
    if (dirty) {
        lo = off / m.gran;
        hi = DIV_ROUND_UP(end, m.gran);
    } else {
        /* round in; the clipped last granule is whole at the end */
        lo = DIV_ROUND_UP(off, m.gran);
        hi = end == m.size ? m.n : end / m.gran;
    }
    if (lo < hi) {
        memset(m.bits + lo, dirty, hi - lo);
    }
}

static int64_t model_next(uint64_t off, uint64_t len, bool dirty)
{
    if (off >= m.size || len == 0) {
        return -1;
    }
    uint64_t end = off + MIN(len, m.size - off);
    for (uint64_t g = off / m.gran; g * m.gran < end; g++) {
        if (m.bits[g] == dirty) {
            return MAX(g * m.gran, off);
        }
    }
    return -1;
}

static void check(HBitmap *hb, uint64_t off, uint64_t len)
{
    uint64_t count = 0;
    bool dirty;

    for (uint64_t g = 0; g < m.n; g++) {
        if (m.bits[g]) {
            count += MIN((uint64_t)m.gran, m.size - g * m.gran);
        }
    }
    CHECK(hbm_count(hb) == count);
    CHECK(hbm_is_empty(hb) == (count == 0));
    if (m.size == 0) {
        return;
    }
    off %= m.size;
    len = len % (m.size + 1) + 1;
    CHECK(hbm_get(hb, off) == m.bits[off / m.gran]);
    CHECK(hbm_next_dirty(hb, off, len) == model_next(off, len, true));
    CHECK(hbm_next_clean(hb, off, len) == model_next(off, len, false));
    uint64_t e = hbm_extent(hb, off, len, &dirty);
    CHECK(dirty == m.bits[off / m.gran]);
    int64_t other = model_next(off, len, !dirty);
    CHECK(e == (other < 0 ? MIN(len, m.size - off) : (uint64_t)other - off));

    uint8_t *buf = xmalloc(hbm_serialize_size(m.n) + 1);
    hbm_serialize(hb, 0, m.n, buf);
    for (uint64_t g = 0; g < m.n; g++) {
        CHECK(((buf[g / 8] >> (g % 8)) & 1) == m.bits[g]);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Input in = { data, size };
    HBitmap *hb;

    m.gran = 512u << (take(&in, 1) % 8);
    m.size = (take(&in, 3) * 8 + take(&in, 1)) %
             ((uint64_t)MAX_GRANULES * 512 + 1);
    m.n = DIV_ROUND_UP(m.size, m.gran);
    memset(m.bits, 0, sizeof(m.bits));
    hb = hbm_new(m.size, m.gran);
    CHECK(hb != NULL);

    for (int steps = 0; in.left > 0 && steps < 64; steps++) {
        unsigned op = take(&in, 1) % 7;
        uint64_t off = take(&in, 3) * 7 % (m.size + 2);
        uint64_t len = take(&in, 3) * 5;

        switch (op) {
        case 0:
            hbm_set(hb, off, len);
            model_range(off, len, true);
            break;
        case 1:
            hbm_reset(hb, off, len);
            model_range(off, len, false);
            break;
        case 2:
            if (len & 1) {
                hbm_set_all(hb);
                memset(m.bits, 1, m.n);
            } else {
                hbm_reset_all(hb);
                memset(m.bits, 0, m.n);
            }
            break;
        case 3: {
            /* merge a one-range bitmap of another granularity */
            uint32_t g2 = 512u << (len % 10);
            HBitmap *o = hbm_new(m.size, g2);
            hbm_set(o, off, len / 3);
            CHECK(hbm_merge(hb, o));
            if (off < m.size && len / 3 > 0) {
                uint64_t end = off + MIN(len / 3, m.size - off);
                uint64_t lo = ALIGN_DOWN(off, (uint64_t)g2);
                uint64_t hi = MIN(ALIGN_UP(end, (uint64_t)g2), m.size);
                model_range(lo, hi - lo, true);
            }
            hbm_free(o);
            break;
        }
        case 4: {
            uint64_t nsize = MIN(off * 3 + len % 512,
                                 (uint64_t)MAX_GRANULES * 512);
            uint64_t nn = DIV_ROUND_UP(nsize, m.gran);
            hbm_resize(hb, nsize);
            if (nn > m.n) {
                memset(m.bits + m.n, 0, nn - m.n);
            }
            m.size = nsize;
            m.n = nn;
            break;
        }
        case 5: {
            /* deserialize a run of bytes taken from the input */
            uint64_t first = ALIGN_DOWN(off / m.gran, 8);
            uint64_t cnt = MIN(len % 4096, m.n > first ? m.n - first : 0);
            size_t nb = hbm_serialize_size(cnt);
            uint8_t *buf = xmalloc(nb + 1);
            for (size_t i = 0; i < nb; i++) {
                buf[i] = (uint8_t)take(&in, 1);
            }
            if ((len >> 12) & 1) {
                memset(buf, 0xff, nb / 2);
            }
            hbm_deserialize(hb, first, cnt, buf);
            for (uint64_t g = 0; g < cnt; g++) {
                m.bits[first + g] = (buf[g / 8] >> (g % 8)) & 1;
            }
            free(buf);
            break;
        }
        default: {
            HBitmap *c = hbm_copy(hb);
            hbm_free(hb);
            hb = c;
            break;
        }
        }
        check(hb, take(&in, 3) * 13, take(&in, 3) * 11);
    }
    hbm_free(hb);
    return 0;
}
