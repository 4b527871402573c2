/* bitmap.c - dirty bitmaps: the sparse HBitmap and named DirtyBitmaps.
 *
 * HBitmap layout: a radix tree over granule numbers.
 *
 *   level 0   a leaf: 4 KiB of bits, 2^15 granules
 *   level L   a node: 512 child pointers, 2^(15 + 9 L) granules
 *
 *   root (level = depth)
 *     +-- child[0] -- ... -- leaf [bits for granules 0 .. 32767]
 *     +-- child[1] = NULL          (all clean: nothing allocated)
 *     +-- child[2] = HBM_FULL      (all dirty: nothing allocated)
 *     ...
 *
 * A slot is NULL (every granule under it clean), HBM_FULL (every one
 * dirty) or a pointer to a leaf or node.  Leaves and nodes that become
 * all clean or all dirty are freed and replaced by the marker, so the
 * memory follows the number of *mixed* regions, not the image size:
 * a clean 16 TiB bitmap at 512 B is one NULL root, a fully dirty one is
 * one HBM_FULL root.
 *
 * Granules at or past the bitmap's end (the tree's capacity is rounded
 * up) are always clean; a HBM_FULL slot therefore lies wholly inside
 * [0, granules).  Every operation below clips to the end first.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "util/util.h"

#define HBM_LEAF_SHIFT 15                      /* granules per leaf */
#define HBM_LEAF_BITS (1ull << HBM_LEAF_SHIFT)
#define HBM_LEAF_WORDS (HBM_LEAF_BITS / 64)
#define HBM_NODE_SHIFT 9                       /* children per node */
#define HBM_NODE_FANOUT (1u << HBM_NODE_SHIFT)

typedef struct HbmLeaf {
    uint64_t count;                   /* set bits in w */
    uint64_t w[HBM_LEAF_WORDS];       /* granule i is bit i % 64 of w[i/64] */
} HbmLeaf;

typedef struct HbmNode {
    uint32_t nonempty;                /* children that are not NULL */
    uint32_t nfull;                   /* children that are HBM_FULL */
    void *child[HBM_NODE_FANOUT];
} HbmNode;

struct HBitmap {
    uint64_t size;          /* bytes */
    uint32_t granularity;   /* bytes, a power of two */
    unsigned gran_shift;    /* log2(granularity) */
    uint64_t granules;      /* DIV_ROUND_UP(size, granularity) */
    unsigned depth;         /* level of the root */
    void *root;             /* NULL, HBM_FULL, a leaf or a node */
    uint64_t count;         /* dirty granules */
    size_t nleaves;         /* allocated leaves */
    size_t nnodes;          /* allocated nodes */
};

static const char hbm_full_marker;
#define HBM_FULL ((void *)&hbm_full_marker)

/* Granules under one slot of the given level. */
static inline uint64_t hbm_span(unsigned level)
{
    return 1ull << (HBM_LEAF_SHIFT + HBM_NODE_SHIFT * level);
}

static unsigned hbm_depth_for(uint64_t granules)
{
    unsigned depth = 0;

    while (depth < 5 && hbm_span(depth) < granules) {
        depth++;
    }
    return depth;
}

/* ---- freeing and counting whole subtrees ---------------------------- */

static uint64_t hbm_subtree_count(void *p, unsigned level)
{
    if (p == NULL) {
        return 0;
    }
    if (p == HBM_FULL) {
        return hbm_span(level);
    }
    if (level == 0) {
        return ((HbmLeaf *)p)->count;
    }
    HbmNode *n = p;
    uint64_t sum = 0;
    for (unsigned i = 0; i < HBM_NODE_FANOUT; i++) {
        sum += hbm_subtree_count(n->child[i], level - 1);
    }
    return sum;
}

static void hbm_subtree_free(HBitmap *hb, void *p, unsigned level)
{
    if (p == NULL || p == HBM_FULL) {
        return;
    }
    if (level == 0) {
        hb->nleaves--;
        free(p);
        return;
    }
    HbmNode *n = p;
    for (unsigned i = 0; i < HBM_NODE_FANOUT; i++) {
        hbm_subtree_free(hb, n->child[i], level - 1);
    }
    hb->nnodes--;
    free(n);
}

static void *hbm_subtree_copy(HBitmap *dst, const void *p, unsigned level)
{
    if (p == NULL || p == HBM_FULL) {
        return (void *)p;
    }
    if (level == 0) {
        HbmLeaf *l = xmalloc(sizeof(*l));
        memcpy(l, p, sizeof(*l));
        dst->nleaves++;
        return l;
    }
    const HbmNode *n = p;
    HbmNode *c = xmalloc(sizeof(*c));
    c->nonempty = n->nonempty;
    c->nfull = n->nfull;
    for (unsigned i = 0; i < HBM_NODE_FANOUT; i++) {
        c->child[i] = hbm_subtree_copy(dst, n->child[i], level - 1);
    }
    dst->nnodes++;
    return c;
}

/* ---- the one mutating walk ------------------------------------------ */

typedef enum {
    HBM_OP_SET,
    HBM_OP_RESET,
    HBM_OP_ASSIGN,          /* copy bits from a qcow2-order buffer */
} HbmOpKind;

typedef struct HbmOp {
    HbmOpKind kind;
    const uint8_t *buf;     /* ASSIGN: bit (g - first) is granule g */
    uint64_t first;         /* ASSIGN: a multiple of 8 */
} HbmOp;

/* Mask of bits [a, b) of a 64-bit word, 0 <= a < b <= 64. */
static inline uint64_t hbm_word_mask(unsigned a, unsigned b)
{
    uint64_t hi = b == 64 ? ~0ull : (1ull << b) - 1;
    return hi & ~((1ull << a) - 1);
}

/* The 64 buffer bits for granules [g, g + 64), g a multiple of 8; bytes
 * before the buffer read as 0 (the caller masks them out). */
static uint64_t hbm_op_word(const HbmOp *op, uint64_t g, uint64_t lo,
                            uint64_t hi)
{
    uint64_t v = 0;

    for (unsigned k = 0; k < 8; k++) {
        uint64_t gk = g + 8 * k;
        if (gk + 8 <= lo || gk >= hi) {
            continue;
        }
        v |= (uint64_t)op->buf[(gk - op->first) / 8] << (8 * k);
    }
    return v;
}

/* Apply op to the granules [lo, hi) of a leaf whose first granule is
 * base. */
static void hbm_leaf_apply(HBitmap *hb, HbmLeaf *l, uint64_t base,
                           uint64_t lo, uint64_t hi, const HbmOp *op)
{
    uint64_t a = lo - base, b = hi - base;

    for (uint64_t wi = a / 64; wi * 64 < b; wi++) {
        unsigned from = wi * 64 < a ? a - wi * 64 : 0;
        unsigned to = (wi + 1) * 64 > b ? b - wi * 64 : 64;
        uint64_t mask = hbm_word_mask(from, to);
        uint64_t old = l->w[wi], nw;

        switch (op->kind) {
        case HBM_OP_SET:
            nw = old | mask;
            break;
        case HBM_OP_RESET:
            nw = old & ~mask;
            break;
        default:
            nw = (old & ~mask) |
                 (hbm_op_word(op, base + wi * 64, lo, hi) & mask);
            break;
        }
        l->w[wi] = nw;
        l->count += __builtin_popcountll(nw);
        l->count -= __builtin_popcountll(old);
        hb->count += __builtin_popcountll(nw);
        hb->count -= __builtin_popcountll(old);
    }
}

/* 0 empty, 1 mixed, 2 full */
static inline int hbm_slot_class(const void *p)
{
    return p == NULL ? 0 : p == HBM_FULL ? 2 : 1;
}

/* Apply op to the granules [lo, hi) under *slot, a subtree of the given
 * level whose first granule is base; [lo, hi) lies inside it and inside
 * [0, hb->granules).  Leaves *slot normalised (NULL, HBM_FULL or a
 * mixed leaf/node). */
static void hbm_apply(HBitmap *hb, void **slot, unsigned level,
                      uint64_t base, uint64_t lo, uint64_t hi,
                      const HbmOp *op)
{
    uint64_t span = hbm_span(level);
    void *p = *slot;

    if (op->kind == HBM_OP_SET && p == HBM_FULL) {
        return;
    }
    if (op->kind == HBM_OP_RESET && p == NULL) {
        return;
    }
    if (op->kind != HBM_OP_ASSIGN && lo == base && hi == base + span) {
        uint64_t old = hbm_subtree_count(p, level);
        hbm_subtree_free(hb, p, level);
        if (op->kind == HBM_OP_SET) {
            *slot = HBM_FULL;
            hb->count += span - old;
        } else {
            *slot = NULL;
            hb->count -= old;
        }
        return;
    }

    if (level == 0) {
        HbmLeaf *l = p;
        if (p == NULL || p == HBM_FULL) {
            l = xmalloc(sizeof(*l));
            l->count = p == NULL ? 0 : HBM_LEAF_BITS;
            memset(l->w, p == NULL ? 0 : 0xff, sizeof(l->w));
            hb->nleaves++;
        }
        hbm_leaf_apply(hb, l, base, lo, hi, op);
        if (l->count == 0 || l->count == HBM_LEAF_BITS) {
            *slot = l->count == 0 ? NULL : HBM_FULL;
            hb->nleaves--;
            free(l);
        } else {
            *slot = l;
        }
        return;
    }

    HbmNode *n = p;
    if (p == NULL || p == HBM_FULL) {
        n = xmalloc(sizeof(*n));
        for (unsigned i = 0; i < HBM_NODE_FANOUT; i++) {
            n->child[i] = p;
        }
        n->nonempty = p == NULL ? 0 : HBM_NODE_FANOUT;
        n->nfull = n->nonempty;
        hb->nnodes++;
    }
    uint64_t cspan = hbm_span(level - 1);
    for (uint64_t i = (lo - base) / cspan; i < HBM_NODE_FANOUT; i++) {
        uint64_t cbase = base + i * cspan;
        if (cbase >= hi) {
            break;
        }
        int before = hbm_slot_class(n->child[i]);
        hbm_apply(hb, &n->child[i], level - 1, cbase, MAX(lo, cbase),
                  MIN(hi, cbase + cspan), op);
        int after = hbm_slot_class(n->child[i]);
        n->nonempty += (after != 0) - (before != 0);
        n->nfull += (after == 2) - (before == 2);
    }
    if (n->nonempty == 0 || n->nfull == HBM_NODE_FANOUT) {
        *slot = n->nonempty == 0 ? NULL : HBM_FULL;
        hb->nnodes--;
        free(n);
    } else {
        *slot = n;
    }
}

static void hbm_apply_range(HBitmap *hb, uint64_t lo, uint64_t hi,
                            const HbmOp *op)
{
    hi = MIN(hi, hb->granules);
    if (lo >= hi) {
        return;
    }
    hbm_apply(hb, &hb->root, hb->depth, 0, lo, hi, op);
}

/* ---- the read-only walks -------------------------------------------- */

/* First granule in [lo, hi) whose bit is `dirty`, or UINT64_MAX. */
static uint64_t hbm_find(const void *p, unsigned level, uint64_t base,
                         uint64_t lo, uint64_t hi, bool dirty)
{
    if (p == NULL) {
        return dirty ? UINT64_MAX : lo;
    }
    if (p == HBM_FULL) {
        return dirty ? lo : UINT64_MAX;
    }
    if (level == 0) {
        const HbmLeaf *l = p;
        uint64_t a = lo - base, b = hi - base;
        for (uint64_t wi = a / 64; wi * 64 < b; wi++) {
            unsigned from = wi * 64 < a ? a - wi * 64 : 0;
            unsigned to = (wi + 1) * 64 > b ? b - wi * 64 : 64;
            uint64_t w = dirty ? l->w[wi] : ~l->w[wi];
            w &= hbm_word_mask(from, to);
            if (w) {
                return base + wi * 64 + __builtin_ctzll(w);
            }
        }
        return UINT64_MAX;
    }
    const HbmNode *n = p;
    uint64_t cspan = hbm_span(level - 1);
    for (uint64_t i = (lo - base) / cspan; i < HBM_NODE_FANOUT; i++) {
        uint64_t cbase = base + i * cspan;
        if (cbase >= hi) {
            break;
        }
        uint64_t r = hbm_find(n->child[i], level - 1, cbase,
                              MAX(lo, cbase), MIN(hi, cbase + cspan), dirty);
        if (r != UINT64_MAX) {
            return r;
        }
    }
    return UINT64_MAX;
}

/* First granule in [lo, hi) (clipped to the end) that is `dirty`, else
 * UINT64_MAX. */
static uint64_t hbm_find_range(const HBitmap *hb, uint64_t lo, uint64_t hi,
                               bool dirty)
{
    hi = MIN(hi, hb->granules);
    if (lo >= hi) {
        return UINT64_MAX;
    }
    return hbm_find(hb->root, hb->depth, 0, lo, hi, dirty);
}

static bool hbm_get_granule(const HBitmap *hb, uint64_t g)
{
    const void *p = hb->root;
    unsigned level = hb->depth;

    if (g >= hb->granules) {
        return false;
    }
    while (p != NULL && p != HBM_FULL && level > 0) {
        const HbmNode *n = p;
        p = n->child[(g >> (HBM_LEAF_SHIFT + HBM_NODE_SHIFT * (level - 1))) &
                     (HBM_NODE_FANOUT - 1)];
        level--;
    }
    if (p == NULL || p == HBM_FULL) {
        return p == HBM_FULL;
    }
    const HbmLeaf *l = p;
    uint64_t i = g & (HBM_LEAF_BITS - 1);
    return (l->w[i / 64] >> (i % 64)) & 1;
}

/* ---- the public HBitmap API ----------------------------------------- */

HBitmap *hbm_new(uint64_t size, uint32_t granularity)
{
    if (!IS_POWER_OF_2(granularity) || granularity < BITMAP_GRANULARITY_MIN ||
        granularity > BITMAP_GRANULARITY_MAX || size > INT64_MAX) {
        return NULL;
    }
    HBitmap *hb = XNEW(HBitmap);
    hb->granularity = granularity;
    hb->gran_shift = __builtin_ctz(granularity);
    hb->size = size;
    hb->granules = DIV_ROUND_UP(size, (uint64_t)granularity);
    hb->depth = hbm_depth_for(hb->granules);
    return hb;
}

void hbm_free(HBitmap *hb)
{
    if (hb == NULL) {
        return;
    }
    hbm_subtree_free(hb, hb->root, hb->depth);
    free(hb);
}

uint64_t hbm_size(const HBitmap *hb)
{
    return hb->size;
}

uint32_t hbm_granularity(const HBitmap *hb)
{
    return hb->granularity;
}

uint64_t hbm_granules(const HBitmap *hb)
{
    return hb->granules;
}

size_t hbm_memory(const HBitmap *hb)
{
    return sizeof(*hb) + hb->nleaves * sizeof(HbmLeaf) +
           hb->nnodes * sizeof(HbmNode);
}

/* [offset, offset + bytes) clipped to the size; false when empty. */
static bool hbm_clip(const HBitmap *hb, uint64_t offset, uint64_t bytes,
                     uint64_t *end)
{
    if (offset >= hb->size || bytes == 0) {
        return false;
    }
    *end = offset + MIN(bytes, hb->size - offset);
    return true;
}

void hbm_set(HBitmap *hb, uint64_t offset, uint64_t bytes)
{
    HbmOp op = { .kind = HBM_OP_SET };
    uint64_t end;

    if (!hbm_clip(hb, offset, bytes, &end)) {
        return;
    }
    hbm_apply_range(hb, offset >> hb->gran_shift,
                    DIV_ROUND_UP(end, (uint64_t)hb->granularity), &op);
}

void hbm_reset(HBitmap *hb, uint64_t offset, uint64_t bytes)
{
    HbmOp op = { .kind = HBM_OP_RESET };
    uint64_t end;

    if (!hbm_clip(hb, offset, bytes, &end)) {
        return;
    }
    /* Round in; the clipped last granule is whole when the range runs
     * to the end of the bitmap. */
    uint64_t lo = DIV_ROUND_UP(offset, (uint64_t)hb->granularity);
    uint64_t hi = end == hb->size ? hb->granules : end >> hb->gran_shift;
    hbm_apply_range(hb, lo, hi, &op);
}

void hbm_set_all(HBitmap *hb)
{
    HbmOp op = { .kind = HBM_OP_SET };

    hbm_apply_range(hb, 0, hb->granules, &op);
}

void hbm_reset_all(HBitmap *hb)
{
    hbm_subtree_free(hb, hb->root, hb->depth);
    hb->root = NULL;
    hb->count = 0;
}

bool hbm_get(const HBitmap *hb, uint64_t offset)
{
    if (offset >= hb->size) {
        return false;
    }
    return hbm_get_granule(hb, offset >> hb->gran_shift);
}

uint64_t hbm_count(const HBitmap *hb)
{
    uint64_t bytes = hb->count << hb->gran_shift;

    if (hb->count && hbm_get_granule(hb, hb->granules - 1)) {
        bytes -= (hb->granules << hb->gran_shift) - hb->size;
    }
    return bytes;
}

bool hbm_is_empty(const HBitmap *hb)
{
    return hb->count == 0;
}

uint64_t hbm_extent(const HBitmap *hb, uint64_t offset, uint64_t bytes,
                    bool *dirty)
{
    uint64_t end;

    assert(offset < hb->size);
    if (!hbm_clip(hb, offset, bytes, &end)) {
        *dirty = false;
        return 1;   /* bytes == 0: callers never ask; still >= 1 */
    }
    uint64_t g = offset >> hb->gran_shift;
    bool d = hbm_get_granule(hb, g);
    uint64_t next = hbm_find_range(hb, g + 1,
                                   DIV_ROUND_UP(end, (uint64_t)hb->granularity),
                                   !d);
    *dirty = d;
    if (next == UINT64_MAX) {
        return end - offset;
    }
    return MIN(next << hb->gran_shift, end) - offset;
}

static int64_t hbm_next(const HBitmap *hb, uint64_t offset, uint64_t bytes,
                        bool dirty)
{
    uint64_t end;

    if (!hbm_clip(hb, offset, bytes, &end)) {
        return -1;
    }
    uint64_t g = hbm_find_range(hb, offset >> hb->gran_shift,
                                DIV_ROUND_UP(end, (uint64_t)hb->granularity),
                                dirty);
    if (g == UINT64_MAX) {
        return -1;
    }
    return MAX(g << hb->gran_shift, offset);
}

int64_t hbm_next_dirty(const HBitmap *hb, uint64_t offset, uint64_t bytes)
{
    return hbm_next(hb, offset, bytes, true);
}

int64_t hbm_next_clean(const HBitmap *hb, uint64_t offset, uint64_t bytes)
{
    return hbm_next(hb, offset, bytes, false);
}

bool hbm_merge(HBitmap *dst, const HBitmap *src)
{
    uint64_t g = 0;

    if (dst->size != src->size) {
        return false;
    }
    if (dst == src) {
        return true;
    }
    /* Walk src's dirty runs; hbm_set() rounds each out to dst's
     * granules. */
    while (g < src->granules) {
        uint64_t start = hbm_find_range(src, g, src->granules, true);
        if (start == UINT64_MAX) {
            break;
        }
        uint64_t stop = hbm_find_range(src, start, src->granules, false);
        if (stop == UINT64_MAX) {
            stop = src->granules;
        }
        hbm_set(dst, start << src->gran_shift,
                (stop - start) << src->gran_shift);
        g = stop;
    }
    return true;
}

void hbm_resize(HBitmap *hb, uint64_t size)
{
    uint64_t granules;
    unsigned depth;

    assert(size <= INT64_MAX);
    granules = DIV_ROUND_UP(size, (uint64_t)hb->granularity);
    if (granules < hb->granules) {
        HbmOp op = { .kind = HBM_OP_RESET };
        hbm_apply_range(hb, granules, hb->granules, &op);
    }
    depth = hbm_depth_for(granules);
    while (hb->depth < depth) {
        if (hb->root != NULL) {
            HbmNode *n = xzalloc(sizeof(*n));
            n->child[0] = hb->root;
            n->nonempty = 1;
            n->nfull = hb->root == HBM_FULL;
            hb->nnodes++;
            hb->root = n;
        }
        hb->depth++;
    }
    while (hb->depth > depth) {
        /* Everything past child 0 is beyond the end: clean, NULL. */
        if (hb->root != NULL) {
            HbmNode *n = hb->root;
            assert(hb->root != HBM_FULL);
            hb->root = n->child[0];
            hb->nnodes--;
            free(n);
        }
        hb->depth--;
    }
    hb->size = size;
    hb->granules = granules;
}

HBitmap *hbm_copy(const HBitmap *hb)
{
    HBitmap *c = XNEW(HBitmap);

    *c = *hb;
    c->nleaves = 0;
    c->nnodes = 0;
    c->root = hbm_subtree_copy(c, hb->root, hb->depth);
    return c;
}

/* ---- serialization (qcow2 bit order) -------------------------------- */

size_t hbm_serialize_size(uint64_t count)
{
    return DIV_ROUND_UP(count, 8);
}

/* Set the buffer bits for granules [lo, hi) (buffer bit 0 = first). */
static void hbm_buf_set(uint8_t *buf, uint64_t first, uint64_t lo,
                        uint64_t hi)
{
    uint64_t a = lo - first, b = hi - first;

    while (a < b && a % 8) {
        buf[a / 8] |= 1u << (a % 8);
        a++;
    }
    if (b - a >= 8) {
        memset(buf + a / 8, 0xff, (b - a) / 8);
        a += (b - a) / 8 * 8;
    }
    while (a < b) {
        buf[a / 8] |= 1u << (a % 8);
        a++;
    }
}

static void hbm_ser(const void *p, unsigned level, uint64_t base,
                    uint64_t lo, uint64_t hi, uint8_t *buf, uint64_t first)
{
    if (p == NULL) {
        return;
    }
    if (p == HBM_FULL) {
        hbm_buf_set(buf, first, lo, hi);
        return;
    }
    if (level == 0) {
        const HbmLeaf *l = p;
        uint64_t a = lo - base, b = hi - base;
        for (uint64_t wi = a / 64; wi * 64 < b; wi++) {
            unsigned from = wi * 64 < a ? a - wi * 64 : 0;
            unsigned to = (wi + 1) * 64 > b ? b - wi * 64 : 64;
            uint64_t w = l->w[wi] & hbm_word_mask(from, to);
            if (w == 0) {
                continue;
            }
            for (unsigned k = 0; k < 8; k++) {
                uint8_t byte = w >> (8 * k);
                uint64_t g = base + wi * 64 + 8 * k;
                if (byte) {
                    /* bits outside [lo, hi) are masked out above, so a
                     * byte with bits set lies at least partly inside */
                    buf[(g - first) / 8] |= byte;
                }
            }
        }
        return;
    }
    const HbmNode *n = p;
    uint64_t cspan = hbm_span(level - 1);
    for (uint64_t i = (lo - base) / cspan; i < HBM_NODE_FANOUT; i++) {
        uint64_t cbase = base + i * cspan;
        if (cbase >= hi) {
            break;
        }
        hbm_ser(n->child[i], level - 1, cbase, MAX(lo, cbase),
                MIN(hi, cbase + cspan), buf, first);
    }
}

void hbm_serialize(const HBitmap *hb, uint64_t first, uint64_t count,
                   uint8_t *buf)
{
    assert(first % 8 == 0);
    memset(buf, 0, hbm_serialize_size(count));
    uint64_t hi = MIN(first + count, hb->granules);
    if (first < hi) {
        hbm_ser(hb->root, hb->depth, 0, first, hi, buf, first);
    }
}

void hbm_deserialize(HBitmap *hb, uint64_t first, uint64_t count,
                     const uint8_t *buf)
{
    HbmOp op = { .kind = HBM_OP_ASSIGN, .buf = buf, .first = first };
    HbmOp set = { .kind = HBM_OP_SET };
    HbmOp reset = { .kind = HBM_OP_RESET };
    uint64_t hi = MIN(first + count, hb->granules);

    assert(first % 8 == 0);
    /* Leaf by leaf: an all-clean or all-dirty stretch becomes a marker
     * without allocating a leaf first. */
    for (uint64_t lo = first; lo < hi;) {
        uint64_t stop = MIN(hi, ALIGN_DOWN(lo, HBM_LEAF_BITS) + HBM_LEAF_BITS);
        uint64_t a = lo - first, b = stop - first;
        bool zero = true, ones = true;
        for (uint64_t i = a; i < b && (zero || ones); i++) {
            bool bit = (buf[i / 8] >> (i % 8)) & 1;
            if (i % 8 == 0 && i + 8 <= b) {
                zero = zero && buf[i / 8] == 0;
                ones = ones && buf[i / 8] == 0xff;
                i += 7;
                continue;
            }
            zero = zero && !bit;
            ones = ones && bit;
        }
        hbm_apply_range(hb, lo, stop, zero ? &reset : ones ? &set : &op);
        lo = stop;
    }
}

/* ---- DirtyBitmap: named bitmaps on a node -------------------------- */

struct DirtyBitmap {
    BlockNode *bs;          /* the node; the bitmap dies before it */
    char *name;             /* never NULL, never empty */
    HBitmap *bits;          /* guarded by bs->bitmap_lock */
    bool enabled;           /* "recording" */
    bool persistent;
    bool inconsistent;
    unsigned busy;          /* users (exports); > 0 is busy */
    DirtyBitmap *next;      /* bs->bitmaps, in creation order */
};

void blk_dirty_bitmap_lock(BlockNode *bs)
{
    pthread_mutex_lock(&bs->bitmap_lock);
}

void blk_dirty_bitmap_unlock(BlockNode *bs)
{
    pthread_mutex_unlock(&bs->bitmap_lock);
}

DirtyBitmap *blk_dirty_bitmap_find(BlockNode *bs, const char *name)
{
    for (DirtyBitmap *bm = bs->bitmaps; bm != NULL; bm = bm->next) {
        if (strcmp(bm->name, name) == 0) {
            return bm;
        }
    }
    return NULL;
}

DirtyBitmap *blk_dirty_bitmap_next(BlockNode *bs, DirtyBitmap *prev)
{
    return prev == NULL ? bs->bitmaps : prev->next;
}

bool blk_node_has_dirty_bitmaps(BlockNode *bs)
{
    return __atomic_load_n(&bs->bitmap_count, __ATOMIC_RELAXED) != 0;
}

uint32_t blk_dirty_bitmap_default_granularity(BlockNode *bs)
{
    ImageInfo info;

    /* QEMU's bdrv_get_default_bitmap_granularity(): the cluster size
     * clamped to [4 KiB, 64 KiB] where the format has clusters. */
    memset(&info, 0, sizeof(info));
    if (bs->drv->query_image != NULL) {
        bs->drv->query_image(bs, &info);
    }
    uint32_t gran = BITMAP_DEFAULT_GRANULARITY;
    if (info.has_cluster_size && info.cluster_size > 0) {
        gran = MIN(MAX((uint64_t)info.cluster_size, (uint64_t)4096),
                   (uint64_t)65536);
    }
    /* query_image may have allocated the rest: drop it. */
    ImageInfo *copy = xmalloc(sizeof(*copy));
    *copy = info;
    qapi_free_ImageInfo(copy);
    return gran;
}

DirtyBitmap *blk_dirty_bitmap_create(BlockNode *bs, const char *name,
                                     uint32_t granularity, Error **errp)
{
    int64_t size;

    if (name == NULL || name[0] == '\0') {
        error_setg(errp, "Bitmap name cannot be empty");
        return NULL;
    }
    if (strlen(name) > BITMAP_NAME_MAX) {
        error_setg(errp, "Bitmap name too long: %s", name);
        return NULL;
    }
    if (!IS_POWER_OF_2(granularity) || granularity < BITMAP_GRANULARITY_MIN ||
        granularity > BITMAP_GRANULARITY_MAX) {
        error_setg(errp, "Granularity must be power of 2 and at least 512");
        return NULL;
    }
    if (blk_dirty_bitmap_find(bs, name) != NULL) {
        error_setg(errp, "Bitmap already exists: %s", name);
        return NULL;
    }
    /* A driver loading its bitmaps in open runs before the generic
     * layer caches the size. */
    size = bs->opened ? blk_getlength(bs) : bs->drv->get_length(bs);
    if (size < 0) {
        error_setg_errno(errp, (int)-size, "could not get length of device");
        return NULL;
    }

    DirtyBitmap *bm = XNEW(DirtyBitmap);
    bm->bs = bs;
    bm->name = xstrdup(name);
    bm->bits = hbm_new((uint64_t)size, granularity);
    bm->enabled = true;

    blk_dirty_bitmap_lock(bs);
    DirtyBitmap **tail = &bs->bitmaps;
    while (*tail != NULL) {
        tail = &(*tail)->next;
    }
    *tail = bm;
    __atomic_add_fetch(&bs->bitmap_count, 1, __ATOMIC_RELAXED);
    blk_dirty_bitmap_unlock(bs);
    return bm;
}

void blk_dirty_bitmap_release(DirtyBitmap *bm)
{
    BlockNode *bs;

    if (bm == NULL) {
        return;
    }
    bs = bm->bs;
    blk_dirty_bitmap_lock(bs);
    for (DirtyBitmap **p = &bs->bitmaps; *p != NULL; p = &(*p)->next) {
        if (*p == bm) {
            *p = bm->next;
            break;
        }
    }
    __atomic_sub_fetch(&bs->bitmap_count, 1, __ATOMIC_RELAXED);
    blk_dirty_bitmap_unlock(bs);
    hbm_free(bm->bits);
    free(bm->name);
    free(bm);
}

const char *dirty_bitmap_name(const DirtyBitmap *bm)
{
    return bm->name;
}

BlockNode *dirty_bitmap_node(const DirtyBitmap *bm)
{
    return bm->bs;
}

uint32_t dirty_bitmap_granularity(const DirtyBitmap *bm)
{
    return hbm_granularity(bm->bits);
}

HBitmap *dirty_bitmap_bits(DirtyBitmap *bm)
{
    return bm->bits;
}

bool dirty_bitmap_enabled(const DirtyBitmap *bm)
{
    return __atomic_load_n(&bm->enabled, __ATOMIC_RELAXED);
}

void dirty_bitmap_set_enabled(DirtyBitmap *bm, bool enabled)
{
    /* Under the lock: a writer marking now either sees the old state
     * or the new one, never half an update. */
    blk_dirty_bitmap_lock(bm->bs);
    __atomic_store_n(&bm->enabled, enabled, __ATOMIC_RELAXED);
    blk_dirty_bitmap_unlock(bm->bs);
}

bool dirty_bitmap_persistent(const DirtyBitmap *bm)
{
    return bm->persistent;
}

void dirty_bitmap_set_persistent(DirtyBitmap *bm, bool persistent)
{
    bm->persistent = persistent;
}

bool dirty_bitmap_inconsistent(const DirtyBitmap *bm)
{
    return bm->inconsistent;
}

void dirty_bitmap_set_inconsistent(DirtyBitmap *bm)
{
    /* QEMU's rule: an inconsistent bitmap is persistent (it lives in an
     * image) and never records. */
    bm->inconsistent = true;
    bm->persistent = true;
    dirty_bitmap_set_enabled(bm, false);
}

bool dirty_bitmap_busy(const DirtyBitmap *bm)
{
    return bm->busy > 0;
}

void dirty_bitmap_set_busy(DirtyBitmap *bm, bool busy)
{
    if (busy) {
        bm->busy++;
    } else {
        assert(bm->busy > 0);
        bm->busy--;
    }
}

void blk_dirty_mark(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    if (!blk_node_has_dirty_bitmaps(bs) || bytes == 0) {
        return;
    }
    blk_dirty_bitmap_lock(bs);
    for (DirtyBitmap *bm = bs->bitmaps; bm != NULL; bm = bm->next) {
        if (bm->enabled) {
            hbm_set(bm->bits, offset, bytes);
        }
    }
    blk_dirty_bitmap_unlock(bs);
}

void blk_dirty_bitmaps_resize(BlockNode *bs, uint64_t size)
{
    blk_dirty_bitmap_lock(bs);
    for (DirtyBitmap *bm = bs->bitmaps; bm != NULL; bm = bm->next) {
        hbm_resize(bm->bits, size);
    }
    blk_dirty_bitmap_unlock(bs);
}

void blk_dirty_bitmaps_grow(BlockNode *bs, uint64_t size)
{
    if (!blk_node_has_dirty_bitmaps(bs)) {
        return;
    }
    blk_dirty_bitmap_lock(bs);
    for (DirtyBitmap *bm = bs->bitmaps; bm != NULL; bm = bm->next) {
        if (hbm_size(bm->bits) < size) {
            hbm_resize(bm->bits, size);
        }
    }
    blk_dirty_bitmap_unlock(bs);
}

void blk_dirty_bitmaps_release_all(BlockNode *bs)
{
    while (bs->bitmaps != NULL) {
        blk_dirty_bitmap_release(bs->bitmaps);
    }
}
