/* qcow2-cache.c - write-back cache of L2 tables and refcount blocks.
 *
 * Fixed number of slots, a hash from host offset to slot and LRU
 * eviction (a linear scan on a miss, which costs an I/O anyway).  The
 * memory is one allocation made at open; untouched slots cost nothing.
 *
 * Write ordering: before a dirty L2 table is written, every dirty
 * refcount block is written and, if any refcount write is not yet
 * durable, the file is flushed (see qcow2.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/qcow2.h"
#include "util/log.h"
#include "util/util.h"

typedef struct CacheEntry {
    uint64_t offset;        /* 0: slot unused */
    uint64_t lru;
    int32_t hnext;          /* next slot in the hash chain, -1 end */
    bool dirty;
} CacheEntry;

struct Qcow2Cache {
    BDRVQcow2 *s;
    bool is_l2;
    size_t table_size;
    unsigned n, used;
    uint8_t *mem;
    CacheEntry *e;
    int32_t *hash;
    uint32_t hash_mask;
    uint64_t clock;
    unsigned nb_dirty;
};

Qcow2Cache *qcow2_cache_new(BDRVQcow2 *s, unsigned nb_entries, bool is_l2)
{
    Qcow2Cache *c = XNEW(Qcow2Cache);
    uint32_t hs = 16;

    c->s = s;
    c->is_l2 = is_l2;
    c->table_size = s->h.cluster_size;
    c->n = MAX(nb_entries, 2u);
    c->mem = xmalloc(c->n * c->table_size);
    c->e = xcalloc(c->n, sizeof(*c->e));
    while (hs < 2 * c->n) {
        hs *= 2;
    }
    c->hash = xmalloc(hs * sizeof(*c->hash));
    memset(c->hash, 0xff, hs * sizeof(*c->hash));
    c->hash_mask = hs - 1;
    return c;
}

void qcow2_cache_free(Qcow2Cache *c)
{
    if (c != NULL) {
        free(c->mem);
        free(c->e);
        free(c->hash);
        free(c);
    }
}

static uint32_t hash_of(const Qcow2Cache *c, uint64_t offset)
{
    uint64_t x = offset >> c->s->h.cluster_bits;

    x *= 0x9e3779b97f4a7c15ULL;
    return (uint32_t)(x >> 32) & c->hash_mask;
}

static int32_t lookup(const Qcow2Cache *c, uint64_t offset)
{
    for (int32_t i = c->hash[hash_of(c, offset)]; i >= 0; i = c->e[i].hnext) {
        if (c->e[i].offset == offset) {
            return i;
        }
    }
    return -1;
}

static void unhash(Qcow2Cache *c, int32_t slot)
{
    int32_t *p = &c->hash[hash_of(c, c->e[slot].offset)];

    while (*p >= 0) {
        if (*p == slot) {
            *p = c->e[slot].hnext;
            return;
        }
        p = &c->e[*p].hnext;
    }
}

static uint8_t *slot_mem(const Qcow2Cache *c, int32_t slot)
{
    return c->mem + (size_t)slot * c->table_size;
}

static int write_slot(Qcow2Cache *c, int32_t slot)
{
    BDRVQcow2 *s = c->s;
    int ret;

    if (!c->e[slot].dirty) {
        return 0;
    }
    if (c->is_l2) {
        /* New references only after the refcounts that cover them. */
        ret = qcow2_cache_flush(s->rb_cache);
        if (ret < 0) {
            return ret;
        }
        if (s->refs_unsynced) {
            ret = blk_flush(s->bs->file);
            if (ret < 0) {
                return ret;
            }
            s->refs_unsynced = false;
        }
    }
    ret = blk_pwrite(s->bs->file, c->e[slot].offset, c->table_size,
                     slot_mem(c, slot), 0);
    if (ret < 0) {
        return ret;
    }
    if (!c->is_l2) {
        s->refs_unsynced = true;
    }
    c->e[slot].dirty = false;
    c->nb_dirty--;
    return 0;
}

int qcow2_cache_get(Qcow2Cache *c, uint64_t offset, bool read, void **table)
{
    int32_t slot = lookup(c, offset);
    int ret;

    if (slot >= 0) {
        c->e[slot].lru = ++c->clock;
        if (!read) {
            memset(slot_mem(c, slot), 0, c->table_size);
        }
        *table = slot_mem(c, slot);
        return 0;
    }
    if (c->used < c->n) {
        slot = c->used++;
    } else {
        uint64_t best = UINT64_MAX;

        for (unsigned i = 0; i < c->n; i++) {
            if (c->e[i].lru < best) {
                best = c->e[i].lru;
                slot = i;
            }
        }
        ret = write_slot(c, slot);
        if (ret < 0) {
            return ret;
        }
        unhash(c, slot);
        c->e[slot].offset = 0;
    }
    if (read) {
        ret = blk_pread(c->s->bs->file, offset, c->table_size,
                        slot_mem(c, slot), 0);
        if (ret < 0) {
            return ret;
        }
    } else {
        memset(slot_mem(c, slot), 0, c->table_size);
    }
    c->e[slot].offset = offset;
    c->e[slot].dirty = false;
    c->e[slot].lru = ++c->clock;
    c->e[slot].hnext = c->hash[hash_of(c, offset)];
    c->hash[hash_of(c, offset)] = slot;
    *table = slot_mem(c, slot);
    return 0;
}

/* Safe without the lock: a lock holder may be rehashing or refilling
 * slots meanwhile, so every shared word is loaded once (relaxed), a
 * slot index is checked before use and the chain walk is bounded (a
 * chain changed under us could loop).  The use is recorded as newer
 * than every table got so far (the clock plus one) without advancing
 * the clock, which only lock holders do; a racing store can only make
 * the LRU order slightly less exact. */
void *qcow2_cache_peek(Qcow2Cache *c, uint64_t offset)
{
    int32_t slot = __atomic_load_n(&c->hash[hash_of(c, offset)],
                                   __ATOMIC_RELAXED);
    uint64_t now;

    for (unsigned steps = 0; ; steps++) {
        if (slot < 0 || (uint32_t)slot >= c->n || steps >= c->n) {
            return NULL;
        }
        if (__atomic_load_n(&c->e[slot].offset, __ATOMIC_RELAXED) ==
            offset) {
            break;
        }
        slot = __atomic_load_n(&c->e[slot].hnext, __ATOMIC_RELAXED);
    }
    now = __atomic_load_n(&c->clock, __ATOMIC_RELAXED) + 1;
    if (__atomic_load_n(&c->e[slot].lru, __ATOMIC_RELAXED) != now) {
        __atomic_store_n(&c->e[slot].lru, now, __ATOMIC_RELAXED);
    }
    return slot_mem(c, slot);
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, const void *table)
{
    size_t slot = ((const uint8_t *)table - c->mem) / c->table_size;

    if (!c->e[slot].dirty) {
        c->e[slot].dirty = true;
        c->nb_dirty++;
    }
}

int qcow2_cache_flush(Qcow2Cache *c)
{
    int ret;

    if (c->nb_dirty == 0) {
        return 0;
    }
    for (unsigned i = 0; i < c->used; i++) {
        ret = write_slot(c, i);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset)
{
    int32_t slot = lookup(c, offset);

    if (slot < 0) {
        return;
    }
    if (c->e[slot].dirty) {
        c->e[slot].dirty = false;
        c->nb_dirty--;
    }
    unhash(c, slot);
    c->e[slot].offset = 0;
    c->e[slot].lru = 0;
}
