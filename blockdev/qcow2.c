/* qcow2.c - the qcow2 format driver: open, read, write, block status.
 *
 * Layout and crash-safety rules: see qcow2.h and QEMU's
 * docs/interop/qcow2.txt.  Metadata parsing lives in qcow2-meta.c (pure,
 * fuzzable), the table cache in qcow2-cache.c.
 *
 * Limits of this driver (refused with a clear error, never guessed):
 * encryption, external data files.  A dirty image (lazy refcounts after
 * a crash) is repaired on a writable open, as QEMU does; read-only opens
 * use it as it is.  We never set the dirty bit ourselves: refcounts are
 * always written before the references (lazy-refcounts=on is accepted
 * and ignored).
 */
#include "blockdev/qcow2.h"

#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "config.h"
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

#include "qapi-events.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

/* ---- small helpers ---------------------------------------------------- */

/* s->lock, with a hand-over for long metadata loops.  glibc's mutex is
 * not fair: a thread that unlocks and locks again at once usually wins
 * over the waiter it woke.  A loop over a large range (zeroing or
 * discarding up to the whole image) calls qcow2_hold_step() once per
 * cluster; when it has held the lock for QCOW2_HOLD_NS and someone
 * waits, it lets go until a waiter got the lock.  Other requests (and
 * the loop thread's inline ones, blk_aio_submit) then wait about one
 * chunk, not the whole range, and two long loops take turns. */
#define QCOW2_HOLD_NS 1000000u   /* 1 ms */
#define QCOW2_HOLD_CHECK 64      /* steps between clock reads */
#define QCOW2_YIELD_NS 2000000u  /* 2 ms: the most a yield waits */

typedef struct Qcow2Hold {
    unsigned steps;
    uint64_t since_ns;           /* CLOCK_MONOTONIC */
} Qcow2Hold;

static uint64_t qcow2_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void qcow2_lock(BDRVQcow2 *s)
{
    if (pthread_mutex_trylock(&s->lock) != 0) {
        __atomic_add_fetch(&s->lock_waiters, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_lock(&s->lock);
        __atomic_sub_fetch(&s->lock_waiters, 1, __ATOMIC_ACQ_REL);
    }
    __atomic_add_fetch(&s->lock_gen, 1, __ATOMIC_RELEASE);
    /* Odd from here on; the fence orders this before every change the
     * holder makes (a seqlock writer's begin, qcow2.h). */
    __atomic_store_n(&s->meta_seq, s->meta_seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

void qcow2_unlock(BDRVQcow2 *s)
{
    __atomic_store_n(&s->meta_seq, s->meta_seq + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&s->lock);
}

/* Lock held: let the threads waiting now take the lock (each taking
 * bumps lock_gen), then lock again.  Waits at most QCOW2_YIELD_NS. */
static void qcow2_lock_yield(BDRVQcow2 *s)
{
    unsigned waiters = __atomic_load_n(&s->lock_waiters, __ATOMIC_ACQUIRE);
    unsigned gen;
    uint64_t t0;

    if (waiters == 0) {
        return;
    }
    gen = __atomic_load_n(&s->lock_gen, __ATOMIC_ACQUIRE);
    qcow2_unlock(s);
    t0 = qcow2_now_ns();
    while (__atomic_load_n(&s->lock_gen, __ATOMIC_ACQUIRE) - gen < waiters &&
           qcow2_now_ns() - t0 < QCOW2_YIELD_NS) {
        sched_yield();
    }
    qcow2_lock(s);
}

/* Start a long loop under the lock (held). */
static void qcow2_hold_start(Qcow2Hold *h)
{
    h->steps = 0;
    h->since_ns = qcow2_now_ns();
}

/* One step of a long loop (lock held, no table pointer kept across). */
static void qcow2_hold_step(BDRVQcow2 *s, Qcow2Hold *h)
{
    if (++h->steps % QCOW2_HOLD_CHECK != 0 ||
        qcow2_now_ns() - h->since_ns < QCOW2_HOLD_NS) {
        return;
    }
    qcow2_lock_yield(s);
    h->since_ns = qcow2_now_ns();
}

static inline uint64_t cluster_of(const BDRVQcow2 *s, uint64_t off)
{
    return off >> s->h.cluster_bits;
}

static inline uint64_t offset_in_cluster(const BDRVQcow2 *s, uint64_t off)
{
    return off & (s->h.cluster_size - 1);
}

static inline uint64_t l1_index(const BDRVQcow2 *s, uint64_t off)
{
    return off >> (s->h.cluster_bits + s->h.l2_bits);
}

static inline uint64_t l2_index(const BDRVQcow2 *s, uint64_t off)
{
    return (off >> s->h.cluster_bits) & ((1ULL << s->h.l2_bits) - 1);
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b,
                           uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

/* Does [off, off+len) touch fixed metadata (header, L1, reftable,
 * snapshot table)?  Data writes there would corrupt the image. */
static bool overlaps_fixed_metadata(const BDRVQcow2 *s, uint64_t off,
                                    uint64_t len)
{
    return ranges_overlap(off, len, 0, s->h.cluster_size) ||
           ranges_overlap(off, len, s->l1_offset, (uint64_t)s->l1_size * 8) ||
           ranges_overlap(off, len, s->h.refcount_table_offset,
                          (uint64_t)s->reftable_size * 8) ||
           (s->h.nb_snapshots &&
            ranges_overlap(off, len, s->h.snapshots_offset,
                           s->snapshots_len));
}

/* ---- corruption ---------------------------------------------------------
 *
 * Metadata that contradicts itself (an L2 entry pointing into the header,
 * a refcount going below zero, ...) is reported as QEMU does: logged, a
 * BLOCK_IMAGE_CORRUPTED event, and a writable image is marked corrupt
 * (incompatible bit 1, v3) so that nothing writes to it again until
 * 'qemu-img check -r all' repairs it; the request fails with EIO. */

typedef struct CorruptEvent {
    MonitorSet *events;
    char *node;             /* NULL while the node opens */
    char *msg;
    bool fatal;
} CorruptEvent;

static void corrupt_event_cb(void *opaque)
{
    CorruptEvent *ev = opaque;

    qapi_event_send_block_image_corrupted(ev->events, "", ev->node != NULL,
                                          ev->node, ev->msg, false, 0, false,
                                          0, ev->fatal);
    free(ev->node);
    free(ev->msg);
    free(ev);
}

/* Lock held (or the node is opening). */
static void qcow2_corrupt(BDRVQcow2 *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void qcow2_corrupt(BDRVQcow2 *s, const char *fmt, ...)
{
    BlockNode *bs = s->bs;
    bool fatal = !s->read_only && !s->corrupt;
    const BlockHost *host = bs->graph != NULL ? blk_graph_host(bs->graph)
                                              : NULL;
    char *msg;
    va_list ap;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    log_error("qcow2 '%s': %s%s", bs->filename, msg,
              fatal ? "; image marked corrupt" : "");
    if (fatal) {
        s->corrupt = true;
        if (s->h.version >= 3) {
            uint64_t be = htobe64(s->h.incompatible_features |
                                  QCOW2_INCOMPAT_CORRUPT);

            if (blk_pwrite(bs->file, 72, 8, &be, 0) == 0) {
                blk_flush(bs->file);
            }
            /* qcow2_query_image reads it without the lock */
            __atomic_or_fetch(&s->h.incompatible_features,
                              QCOW2_INCOMPAT_CORRUPT, __ATOMIC_RELAXED);
        }
    }
    if (host != NULL && host->loop != NULL) {
        CorruptEvent *ev = XNEW(CorruptEvent);

        ev->events = host->events;
        ev->node = bs->node_name ? xstrdup(bs->node_name) : NULL;
        ev->msg = msg;
        ev->fatal = fatal;
        loop_post(host->loop, corrupt_event_cb, ev);
    } else {
        free(msg);
    }
}

/* ---- refcounts --------------------------------------------------------- */

/* The refcount block covering cluster ci, or *blk = NULL when the
 * reftable has no block for it (all refcounts there are 0). */
static int rb_lookup(BDRVQcow2 *s, uint64_t ci, void **blk)
{
    uint64_t idx = ci >> s->h.rb_bits;
    uint64_t off;

    *blk = NULL;
    if (idx >= s->reftable_size) {
        return 0;
    }
    off = s->reftable[idx] & QCOW2_REFT_OFFSET_MASK;
    if (off == 0) {
        return 0;
    }
    if (!IS_ALIGNED(off, s->h.cluster_size) ||
        overlaps_fixed_metadata(s, off, s->h.cluster_size)) {
        qcow2_corrupt(s, "refcount block at 0x%llx is invalid",
                      (unsigned long long)off);
        return -EIO;
    }
    return qcow2_cache_get(s->rb_cache, off, true, blk);
}

/* Add delta (+1/-1) to the refcount of every cluster that [off,
 * off+bytes) touches.  The refcount blocks must exist. */
static int update_refcounts(BDRVQcow2 *s, uint64_t off, uint64_t bytes,
                            int delta)
{
    uint64_t first = cluster_of(s, off);
    uint64_t last = cluster_of(s, off + bytes - 1);
    uint64_t max = qcow2_refcount_max(s->h.refcount_order);

    for (uint64_t ci = first; ci <= last; ci++) {
        uint64_t idx = ci & ((1ULL << s->h.rb_bits) - 1);
        uint64_t rc;
        void *blk;
        int ret = rb_lookup(s, ci, &blk);

        if (ret < 0) {
            return ret;
        }
        if (blk == NULL) {
            qcow2_corrupt(s, "cluster %llu has no refcount block",
                          (unsigned long long)ci);
            return -EIO;
        }
        rc = qcow2_refcount_get(blk, s->h.refcount_order, idx);
        if ((delta < 0 && rc == 0) || (delta > 0 && rc == max)) {
            qcow2_corrupt(s, "refcount of cluster %llu out of range",
                          (unsigned long long)ci);
            return -EIO;
        }
        rc += delta;
        qcow2_refcount_set(blk, s->h.refcount_order, idx, rc);
        qcow2_cache_mark_dirty(s->rb_cache, blk);
        if (rc == 0) {
            s->free_hint = MIN(s->free_hint, ci);
            qcow2_cache_discard(s->l2_cache, ci << s->h.cluster_bits);
            if (s->pass_discard && bytes >= s->h.cluster_size &&
                IS_ALIGNED(off, s->h.cluster_size)) {
                blk_pdiscard(s->bs->file, ci << s->h.cluster_bits,
                             s->h.cluster_size);
            }
        }
    }
    return 0;
}

/* Grow the refcount table so that it covers at least one more refcount
 * block.  New refcount blocks and the new table are placed right after
 * the area the old table covers; they describe themselves.  The header
 * is switched after the new structures are durable; then the old table
 * is freed. */
static int grow_reftable(BDRVQcow2 *s)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t rbe = 1ULL << s->h.rb_bits;
    uint64_t c0 = (uint64_t)s->reftable_size << s->h.rb_bits;
    uint64_t entries = MAX((uint64_t)s->reftable_size * 2,
                           (uint64_t)s->reftable_size + 1);
    uint64_t nrb = 1, k;
    uint64_t *nt;
    uint8_t hdr[12];
    uint64_t old_off = s->h.refcount_table_offset;
    uint64_t old_bytes = (uint64_t)s->h.refcount_table_clusters * cs;
    int ret;

    for (;;) {
        uint64_t nrb2;

        k = DIV_ROUND_UP(entries * 8, cs);
        nrb2 = DIV_ROUND_UP(nrb + k, rbe);
        if (entries < s->reftable_size + nrb2) {
            entries = s->reftable_size + nrb2;
            continue;
        }
        if (nrb2 == nrb) {
            break;
        }
        nrb = nrb2;
    }
    if (k * cs > QCOW2_MAX_REFTABLE_BYTES) {
        return -EFBIG;
    }
    entries = k * cs / 8;

    /* New refcount blocks: clusters c0 .. c0+nrb+k-1 are in use. */
    for (uint64_t j = 0; j < nrb; j++) {
        memset(s->cow_buf, 0, cs);
        for (uint64_t ci = c0 + j * rbe; ci < c0 + nrb + k &&
             ci < c0 + (j + 1) * rbe; ci++) {
            qcow2_refcount_set(s->cow_buf, s->h.refcount_order,
                               ci & (rbe - 1), 1);
        }
        ret = blk_pwrite(s->bs->file, (c0 + j) * cs, cs, s->cow_buf, 0);
        if (ret < 0) {
            return ret;
        }
    }
    nt = xzalloc(k * cs);
    for (uint32_t i = 0; i < s->reftable_size; i++) {
        put_be64(&nt[i], s->reftable[i]);
    }
    for (uint64_t j = 0; j < nrb; j++) {
        put_be64(&nt[s->reftable_size + j], (c0 + j) * cs);
    }
    ret = blk_pwrite(s->bs->file, (c0 + nrb) * cs, k * cs, nt, 0);
    if (ret == 0) {
        ret = qcow2_cache_flush(s->rb_cache);
    }
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    if (ret < 0) {
        free(nt);
        return ret;
    }
    put_be64(hdr, (c0 + nrb) * cs);
    put_be32(hdr + 8, k);
    ret = blk_pwrite(s->bs->file, 48, sizeof(hdr), hdr, 0);
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    if (ret < 0) {
        free(nt);
        return ret;
    }
    for (uint64_t i = 0; i < entries; i++) {
        nt[i] = be64toh(nt[i]);
    }
    free(s->reftable);
    s->reftable = nt;
    s->reftable_size = entries;
    s->h.refcount_table_offset = (c0 + nrb) * cs;
    s->h.refcount_table_clusters = k;
    s->refs_unsynced = false;
    return update_refcounts(s, old_off, old_bytes, -1);
}

/* Create the refcount block for reftable index idx at cluster ci (which
 * it covers, so it counts itself), durable before the reftable entry
 * that points to it. */
static int new_refblock(BDRVQcow2 *s, uint64_t idx, uint64_t ci)
{
    uint64_t off = ci << s->h.cluster_bits;
    uint64_t be;
    void *blk;
    int ret;

    ret = qcow2_cache_get(s->rb_cache, off, false, &blk);
    if (ret < 0) {
        return ret;
    }
    qcow2_refcount_set(blk, s->h.refcount_order,
                       ci & ((1ULL << s->h.rb_bits) - 1), 1);
    qcow2_cache_mark_dirty(s->rb_cache, blk);
    ret = qcow2_cache_flush(s->rb_cache);
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    if (ret < 0) {
        return ret;
    }
    be = htobe64(off);
    ret = blk_pwrite(s->bs->file, s->h.refcount_table_offset + idx * 8, 8,
                     &be, 0);
    if (ret < 0) {
        return ret;
    }
    s->reftable[idx] = off;
    s->refs_unsynced = true;
    return 0;
}

/* Allocate n contiguous clusters after the end of the file, for runs
 * too long to fit next to a self-describing refcount block (n > half a
 * refcount block's range: a big L1 table with small clusters).  The
 * refcount blocks missing for the new area are placed in front of it
 * and written, durable, before the refcount table points to them. */
static int alloc_append(BDRVQcow2 *s, uint64_t n, uint64_t *off)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t rbe = 1ULL << s->h.rb_bits;
    uint64_t e, m, end;
    int64_t flen;
    int ret;

    for (;;) {
        flen = blk_getlength(s->bs->file);
        if (flen < 0) {
            return (int)flen;
        }
        e = MAX(DIV_ROUND_UP((uint64_t)flen, cs), 1);
        /* m: refcount blocks missing for [e, e + m + n) */
        m = 0;
        for (;;) {
            uint64_t missing = 0;

            end = e + m + n;
            for (uint64_t idx = e >> s->h.rb_bits;
                 idx <= (end - 1) >> s->h.rb_bits; idx++) {
                if (idx >= s->reftable_size ||
                    (s->reftable[idx] & QCOW2_REFT_OFFSET_MASK) == 0) {
                    missing++;
                }
            }
            if (missing == m) {
                break;
            }
            m = missing;
        }
        if (end >= (1ULL << (56 - s->h.cluster_bits))) {
            return -ENOSPC;
        }
        if (((end - 1) >> s->h.rb_bits) < s->reftable_size) {
            break;
        }
        ret = grow_reftable(s);
        if (ret < 0) {
            return ret;
        }
    }

    /* New refcount blocks at e .. e+m-1, in range order. */
    {
        uint64_t pos = e;

        for (uint64_t idx = e >> s->h.rb_bits;
             idx <= (end - 1) >> s->h.rb_bits; idx++) {
            if ((s->reftable[idx] & QCOW2_REFT_OFFSET_MASK) == 0) {
                void *blk;

                ret = qcow2_cache_get(s->rb_cache, pos * cs, false, &blk);
                if (ret < 0) {
                    return ret;
                }
                qcow2_cache_mark_dirty(s->rb_cache, blk);
                s->reftable[idx] = pos * cs;   /* in memory only, yet */
                pos++;
            }
        }
    }
    for (uint64_t ci = e; ci < end; ci++) {
        void *blk;

        ret = rb_lookup(s, ci, &blk);
        if (ret < 0) {
            return ret;
        }
        if (qcow2_refcount_get(blk, s->h.refcount_order, ci & (rbe - 1))) {
            qcow2_corrupt(s, "cluster %llu past the end of the file is in "
                          "use", (unsigned long long)ci);
            return -EIO;
        }
        qcow2_refcount_set(blk, s->h.refcount_order, ci & (rbe - 1), 1);
        qcow2_cache_mark_dirty(s->rb_cache, blk);
    }
    ret = qcow2_cache_flush(s->rb_cache);
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    if (ret < 0) {
        return ret;
    }
    for (uint64_t idx = e >> s->h.rb_bits; idx <= (end - 1) >> s->h.rb_bits;
         idx++) {
        uint64_t be = htobe64(s->reftable[idx]);

        ret = blk_pwrite(s->bs->file, s->h.refcount_table_offset + idx * 8,
                         8, &be, 0);
        if (ret < 0) {
            return ret;
        }
    }
    s->refs_unsynced = true;
    *off = (e + m) * cs;
    return 0;
}

/* Allocate n contiguous free clusters (refcount set to 1, in the cache).
 * Returns 0 and the host offset in *off, or -errno. */
static int alloc_clusters(BDRVQcow2 *s, uint64_t n, uint64_t *off)
{
    uint64_t start = s->free_hint, len = 0;
    uint64_t rbe = 1ULL << s->h.rb_bits;
    int64_t flen = blk_getlength(s->bs->file);
    uint64_t used_end;
    int ret;

    if (flen < 0) {
        return (int)flen;
    }
    /* Past the end of the file and of what we allocated, every cluster
     * is free in a consistent image: a hostile refcount table that says
     * otherwise must not make the scan below run for ever. */
    used_end = MAX(DIV_ROUND_UP((uint64_t)flen, s->h.cluster_size),
                   s->alloc_end);
    if (n > rbe / 2) {
        ret = alloc_append(s, n, off);
        if (ret == 0) {
            s->alloc_end = MAX(s->alloc_end, cluster_of(s, *off) + n);
        }
        return ret;
    }

    while (len < n) {
        uint64_t ci = start + len;
        uint64_t idx = ci >> s->h.rb_bits;
        uint64_t rc;
        void *blk;

        if (ci >= (1ULL << (56 - s->h.cluster_bits))) {
            return -ENOSPC;
        }
        if (overlaps_fixed_metadata(s, ci << s->h.cluster_bits,
                                    s->h.cluster_size)) {
            start = ci + 1;
            len = 0;
            continue;
        }
        if (idx >= s->reftable_size) {
            ret = grow_reftable(s);
            if (ret < 0) {
                return ret;
            }
            continue;
        }
        ret = rb_lookup(s, ci, &blk);
        if (ret < 0) {
            return ret;
        }
        if (blk == NULL) {
            ret = new_refblock(s, idx, ci);
            if (ret < 0) {
                return ret;
            }
            start = ci + 1;
            len = 0;
            continue;
        }
        rc = qcow2_refcount_get(blk, s->h.refcount_order, ci & (rbe - 1));
        if (rc != 0) {
            if (ci >= used_end + (1ULL << s->h.rb_bits)) {
                qcow2_corrupt(s, "refcounts claim clusters past the end of "
                              "the image file (cluster %llu)",
                              (unsigned long long)ci);
                return -EIO;
            }
            start = ci + 1;
            len = 0;
            continue;
        }
        len++;
    }
    s->alloc_end = MAX(s->alloc_end, start + n);
    if (start == s->free_hint || n == 1) {
        s->free_hint = start + n;
    }
    for (uint64_t ci = start; ci < start + n; ci++) {
        void *blk;

        ret = rb_lookup(s, ci, &blk);
        if (ret < 0) {
            return ret;
        }
        qcow2_refcount_set(blk, s->h.refcount_order, ci & (rbe - 1), 1);
        qcow2_cache_mark_dirty(s->rb_cache, blk);
    }
    *off = start << s->h.cluster_bits;
    return 0;
}

/* Free [off, off+bytes) once the references to it are durable. */
static void queue_free(BDRVQcow2 *s, uint64_t off, uint64_t bytes)
{
    if (s->nb_pending == s->cap_pending) {
        s->cap_pending = s->cap_pending ? s->cap_pending * 2 : 64;
        s->pending = xrealloc(s->pending,
                              s->cap_pending * sizeof(*s->pending));
    }
    s->pending[s->nb_pending++] = (Qcow2Free){ off, bytes,
                                               s->bs->splice_epoch };
}

/* May some pending frees be applied now?  Not while a request does I/O
 * outside the lock on a mapping it looked up before (it could be one of
 * them), nor while spliced replies may still reference them (see
 * BlockSplicePin and qcow2_splice_read).  Lock held. */
static bool frees_releasable(BDRVQcow2 *s)
{
    if (s->nb_pending == 0) {
        return false;
    }
    /* A lock-free reader counts itself in inflight, then reads meta_seq;
     * we made meta_seq odd, then read inflight (Dekker's pattern): one of
     * the two must see the other's store, so a reader whose lookup ran
     * before our change is counted here, and a later one retries. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&s->inflight, __ATOMIC_ACQUIRE) != 0) {
        return false;
    }
    /* The oldest free is the first to become safe. */
    return blk_splice_reusable(s->bs, s->pending[0].epoch);
}

/* Write all metadata in the safe order and make it durable. */
static int flush_locked(BDRVQcow2 *s)
{
    int ret;

    if (s->read_only) {
        return 0;
    }
    ret = qcow2_cache_flush(s->rb_cache);
    if (ret == 0 && s->refs_unsynced) {
        ret = blk_flush(s->bs->file);
        s->refs_unsynced = false;
    }
    if (ret == 0) {
        ret = qcow2_cache_flush(s->l2_cache);
    }
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    if (ret < 0) {
        return ret;
    }
    /* Freed clusters become reusable only when frees_releasable() says
     * so; the others wait for a later flush.  The epoch moves on first,
     * so that frees of the current epoch become safe once the pins
     * taken until now are released. */
    if (s->nb_pending > 0) {
        blk_splice_epoch_advance(s->bs);
    }
    if (frees_releasable(s)) {
        size_t keep = 0;

        for (size_t i = 0; i < s->nb_pending; i++) {
            if (ret == 0 && blk_splice_reusable(s->bs, s->pending[i].epoch)) {
                ret = update_refcounts(s, s->pending[i].offset,
                                       s->pending[i].bytes, -1);
            } else if (ret == 0) {
                s->pending[keep++] = s->pending[i];
            }
        }
        s->nb_pending = keep;
        if (ret == 0) {
            ret = qcow2_cache_flush(s->rb_cache);
        }
        if (ret == 0) {
            ret = blk_flush(s->bs->file);
            s->refs_unsynced = false;
        }
    }
    return ret;
}

int qcow2_alloc(BDRVQcow2 *s, uint64_t n, uint64_t *off)
{
    return alloc_clusters(s, n, off);
}

int qcow2_unref(BDRVQcow2 *s, uint64_t off, uint64_t bytes)
{
    return bytes == 0 ? 0 : update_refcounts(s, off, bytes, -1);
}

int qcow2_flush_meta(BDRVQcow2 *s)
{
    return flush_locked(s);
}

/* ---- L2 access ---------------------------------------------------------- */

/* The L2 table for guest offset off (read path): *table = NULL when the
 * L1 entry is empty. */
static int l2_get(BDRVQcow2 *s, uint64_t off, uint64_t **table)
{
    uint64_t idx = l1_index(s, off);
    uint64_t l2_off;
    int ret;

    *table = NULL;
    if (idx >= s->l1_size) {
        return 0;
    }
    ret = qcow2_l1_decode(&s->h, s->l1[idx], &l2_off);
    if (ret < 0) {
        qcow2_corrupt(s, "L1 entry %llu is misaligned",
                      (unsigned long long)idx);
        return ret;
    }
    if (l2_off == 0) {
        return 0;
    }
    if (overlaps_fixed_metadata(s, l2_off, s->h.cluster_size)) {
        qcow2_corrupt(s, "L2 table at 0x%llx overlaps metadata",
                      (unsigned long long)l2_off);
        return -EIO;
    }
    return qcow2_cache_get(s->l2_cache, l2_off, true, (void **)table);
}

/* Make sure the L2 table for guest offset off exists and may be written
 * in place (COPIED), allocating or copying it.  Returns its offset. */
static int l2_get_for_write(BDRVQcow2 *s, uint64_t off, uint64_t *l2_out)
{
    uint64_t idx = l1_index(s, off);
    uint64_t old, new_off, be;
    void *t;
    int ret;

    if (idx >= s->l1_size) {
        return -EIO;
    }
    ret = qcow2_l1_decode(&s->h, s->l1[idx], &old);
    if (ret < 0) {
        qcow2_corrupt(s, "L1 entry %llu is misaligned",
                      (unsigned long long)idx);
        return ret;
    }
    if (old != 0 && (s->l1[idx] & QCOW2_OFLAG_COPIED)) {
        if (overlaps_fixed_metadata(s, old, s->h.cluster_size)) {
            qcow2_corrupt(s, "L2 table at 0x%llx overlaps metadata",
                          (unsigned long long)old);
            return -EIO;
        }
        *l2_out = old;
        return 0;
    }
    ret = alloc_clusters(s, 1, &new_off);
    if (ret < 0) {
        return ret;
    }
    if (old != 0) {
        ret = qcow2_cache_get(s->l2_cache, old, true, &t);
        if (ret < 0) {
            return ret;
        }
        memcpy(s->cow_buf, t, s->h.cluster_size);
    }
    ret = qcow2_cache_get(s->l2_cache, new_off, false, &t);
    if (ret < 0) {
        return ret;
    }
    if (old != 0) {
        memcpy(t, s->cow_buf, s->h.cluster_size);
    }
    qcow2_cache_mark_dirty(s->l2_cache, t);
    /* The new table (and the refcounts under it) must be durable before
     * the L1 entry points to it. */
    ret = qcow2_cache_flush(s->l2_cache);
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    if (ret < 0) {
        return ret;
    }
    s->refs_unsynced = false;
    be = htobe64(new_off | QCOW2_OFLAG_COPIED);
    ret = blk_pwrite(s->bs->file, s->l1_offset + idx * 8, 8, &be, 0);
    if (ret < 0) {
        return ret;
    }
    s->l1[idx] = new_off | QCOW2_OFLAG_COPIED;
    if (old != 0) {
        queue_free(s, old, s->h.cluster_size);
    }
    *l2_out = new_off;
    return 0;
}

/* ---- mapping ------------------------------------------------------------ */

/* Mapping of guest offset off for up to *bytes bytes: fills m (host
 * offset adjusted to off) and shortens *bytes to the run that has the
 * same type and contiguous host offsets.  Lock held. */
static int get_mapping(BDRVQcow2 *s, uint64_t off, uint64_t *bytes,
                       Qcow2Mapping *m)
{
    uint64_t unit = 1ULL << s->h.subcluster_bits;
    uint64_t max = *bytes;
    uint64_t run;
    uint64_t *t;
    int ret;

    ret = l2_get(s, off, &t);
    if (ret < 0) {
        return ret;
    }
    if (t == NULL) {
        /* Skip every consecutive empty L1 entry at once. */
        uint64_t span = 1ULL << (s->h.cluster_bits + s->h.l2_bits);
        uint64_t idx = l1_index(s, off);
        uint64_t end = (idx + 1) * span;

        while (end - off < max && idx + 1 < s->l1_size &&
               (s->l1[idx + 1] & QCOW2_L1E_OFFSET_MASK) == 0) {
            idx++;
            end += span;
        }
        memset(m, 0, sizeof(*m));
        m->type = QCOW2_CLUSTER_UNALLOCATED;
        *bytes = MIN(max, end - off);
        return 0;
    }

    {
        uint64_t i = l2_index(s, off);
        uint64_t nent = 1ULL << s->h.l2_bits;
        uint64_t in_unit = off & (unit - 1);
        uint64_t first_host = 0;
        Qcow2ClusterType type = QCOW2_CLUSTER_UNALLOCATED;
        uint64_t cur = off - in_unit;      /* start of the current unit */
        bool first = true;

        run = 0;
        for (; i < nent && run < in_unit + max; i++) {
            Qcow2Mapping cm;
            uint64_t e, bm = 0;
            unsigned sc0 = 0, nsc = 1;

            if (s->h.extended_l2) {
                e = be64toh(t[2 * i]);
                bm = be64toh(t[2 * i + 1]);
                nsc = 32;
                sc0 = (cur >> s->h.subcluster_bits) & 31;
            } else {
                e = be64toh(t[i]);
            }
            /* A bad entry fails only the request that reaches it. */
            ret = qcow2_l2_decode(&s->h, e, &cm);
            if (ret < 0) {
                if (first) {
                    goto bad;
                }
                goto done;
            }
            for (unsigned sc = sc0; sc < nsc && run < in_unit + max; sc++) {
                int st = cm.type;
                uint64_t host = cm.host_offset;

                if (s->h.extended_l2) {
                    st = qcow2_subcluster_type(&cm, bm, sc);
                    if (st < 0) {
                        if (first) {
                            goto bad;
                        }
                        goto done;
                    }
                    if (st != QCOW2_CLUSTER_COMPRESSED) {
                        host += (uint64_t)sc << s->h.subcluster_bits;
                    }
                    if (st == QCOW2_CLUSTER_UNALLOCATED_ALLOC) {
                        st = QCOW2_CLUSTER_UNALLOCATED;
                    }
                }
                if (first) {
                    type = st;
                    first_host = host;
                    *m = cm;
                    m->type = st;
                    first = false;
                } else {
                    if ((int)type != st || type == QCOW2_CLUSTER_COMPRESSED) {
                        goto done;
                    }
                    if ((type == QCOW2_CLUSTER_NORMAL ||
                         type == QCOW2_CLUSTER_ZERO_ALLOC) &&
                        (host != first_host + run ||
                         cm.copied != m->copied)) {
                        goto done;
                    }
                }
                run += unit;
                cur += unit;
                if (st == QCOW2_CLUSTER_COMPRESSED) {
                    /* A compressed cluster is one unit of cluster size. */
                    run = s->h.cluster_size;
                    in_unit = offset_in_cluster(s, off);
                    goto done;
                }
            }
        }
    done:
        if (type == QCOW2_CLUSTER_NORMAL || type == QCOW2_CLUSTER_ZERO_ALLOC) {
            m->host_offset = first_host + in_unit;
        } else if (type != QCOW2_CLUSTER_COMPRESSED) {
            m->host_offset = 0;
        }
        *bytes = MIN(max, run - in_unit);
        return 0;
    }

bad:
    qcow2_corrupt(s, "invalid L2 entry for guest offset 0x%llx",
                  (unsigned long long)off);
    return -EIO;
}

/* The data path's fast lookup: when [off, off+*bytes) starts in a
 * plain allocated cluster (NORMAL; no extended L2, no compression, no
 * zero flag) whose L2 table is already cached, set *host to its host
 * offset, shorten *bytes to the run of host-contiguous clusters with the
 * same COPIED flag (*copied), and return true.  False: anything else
 * (an L1 or L2 entry to load, decode or report as corrupt), for
 * get_mapping() to decide.  A cached table was checked against the
 * fixed metadata when l2_get() loaded it or allocated by us.  No
 * allocation, no I/O: a few dozen instructions.
 *
 * Lock held, or inside fast_map_unlocked()'s meta_seq check: then a
 * lock holder may change what it reads meanwhile, so each shared word is
 * loaded once and every index stays inside the arrays whatever the
 * values (l1_size before l1: an L1 is replaced, never shrunk, before
 * l1_size grows, and the old one stays allocated). */
static inline __attribute__((always_inline)) bool
fast_map(BDRVQcow2 *s, uint64_t off, uint64_t *bytes, uint64_t *host,
         bool *copied)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t idx = l1_index(s, off);
    uint64_t nent = 1ULL << s->h.l2_bits;
    uint64_t l2_off, e, first, run, flag;
    const uint64_t *t, *l1;

    if (s->h.extended_l2 ||
        idx >= __atomic_load_n(&s->l1_size, __ATOMIC_ACQUIRE)) {
        return false;
    }
    l1 = __atomic_load_n(&s->l1, __ATOMIC_RELAXED);
    l2_off = __atomic_load_n(&l1[idx], __ATOMIC_RELAXED) &
             QCOW2_L1E_OFFSET_MASK;
    if (l2_off == 0 || !IS_ALIGNED(l2_off, cs)) {
        return false;
    }
    t = qcow2_cache_peek(s->l2_cache, l2_off);
    if (t == NULL) {
        return false;
    }
    e = be64toh(__atomic_load_n(&t[l2_index(s, off)], __ATOMIC_RELAXED));
    first = e & QCOW2_L2E_OFFSET_MASK;
    if ((e & (QCOW2_OFLAG_COMPRESSED | QCOW2_OFLAG_ZERO)) || first == 0 ||
        !IS_ALIGNED(first, cs)) {
        return false;
    }
    flag = e & QCOW2_OFLAG_COPIED;
    run = cs - offset_in_cluster(s, off);
    for (uint64_t i = l2_index(s, off) + 1, next = first + cs;
         run < *bytes && i < nent; i++, next += cs) {
        /* Same flags (COPIED or not, nothing else) and the next host
         * cluster. */
        if (be64toh(__atomic_load_n(&t[i], __ATOMIC_RELAXED)) !=
            (next | flag)) {
            break;
        }
        run += cs;
    }
    *host = first + offset_in_cluster(s, off);
    *bytes = MIN(*bytes, run);
    *copied = flag != 0;
    return true;
}

/* fast_map() without the lock, for the data path: a seqlock reader
 * (qcow2.h).  True: [off, off+*bytes) (shortened) maps to *host as it
 * did at a moment no thread held the lock; for a write (want_copied)
 * also COPIED (written in place) and clear of the fixed metadata.
 * False: ask again under the lock.  The caller counted itself in
 * s->inflight first, so the clusters found stay allocated until it
 * leaves (frees_releasable()). */
static inline __attribute__((always_inline)) bool
fast_map_unlocked(BDRVQcow2 *s, uint64_t off, uint64_t *bytes,
                  uint64_t *host, bool want_copied)
{
    unsigned seq = __atomic_load_n(&s->meta_seq, __ATOMIC_SEQ_CST);
    uint64_t n = *bytes;
    bool copied, ok;

    if (seq & 1) {
        return false;
    }
    ok = fast_map(s, off, &n, host, &copied) &&
         (!want_copied || (copied && !overlaps_fixed_metadata(s, *host, n)));
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (!ok || __atomic_load_n(&s->meta_seq, __ATOMIC_RELAXED) != seq) {
        return false;
    }
    *bytes = n;
    return true;
}

/* ---- compressed clusters ----------------------------------------------- */

static int inflate_zlib(BDRVQcow2 *s, const uint8_t *in, size_t in_len,
                        uint8_t *out, size_t out_len)
{
    z_stream *zs = s->zstream;
    int zr;

    if (zs == NULL) {
        zs = XNEW(z_stream);
        if (inflateInit2(zs, -12) != Z_OK) {
            free(zs);
            return -ENOMEM;
        }
        s->zstream = zs;
    } else if (inflateReset(zs) != Z_OK) {
        return -EIO;
    }
    zs->next_in = (Bytef *)in;
    zs->avail_in = in_len;
    zs->next_out = out;
    zs->avail_out = out_len;
    zr = inflate(zs, Z_FINISH);
    /* Z_BUF_ERROR with a full output: the sector padding remains. */
    if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || zs->avail_out != 0) {
        return -EIO;
    }
    return 0;
}

static int inflate_zstd(BDRVQcow2 *s, const uint8_t *in, size_t in_len,
                        uint8_t *out, size_t out_len)
{
#ifdef HAVE_ZSTD
    ZSTD_inBuffer ib = { in, in_len, 0 };
    ZSTD_outBuffer ob = { out, out_len, 0 };

    if (s->zstd_dctx == NULL) {
        s->zstd_dctx = ZSTD_createDCtx();
        if (s->zstd_dctx == NULL) {
            return -ENOMEM;
        }
    }
    ZSTD_DCtx_reset(s->zstd_dctx, ZSTD_reset_session_only);
    while (ob.pos < ob.size) {
        size_t last = ib.pos;
        size_t r = ZSTD_decompressStream(s->zstd_dctx, &ob, &ib);

        if (ZSTD_isError(r) || (ib.pos == last && ob.pos < ob.size &&
                                ib.pos == ib.size)) {
            return -EIO;
        }
    }
    return 0;
#else
    (void)s;
    (void)in;
    (void)in_len;
    (void)out;
    (void)out_len;
    log_error("qcow2: zstd compressed cluster but blockd was built "
              "without libzstd");
    return -ENOTSUP;
#endif
}

/* Decompress the cluster described by m into s->dbuf.  Lock held. */
static int read_compressed(BDRVQcow2 *s, const Qcow2Mapping *m)
{
    uint64_t csize = MIN(m->compressed_size, 2 * s->h.cluster_size);
    int64_t flen = blk_getlength(s->bs->file);
    int ret;

    if (s->dbuf_host == m->host_offset) {
        return 0;
    }
    if (flen < 0) {
        return (int)flen;
    }
    if (m->host_offset >= (uint64_t)flen) {
        return -EIO;
    }
    csize = MIN(csize, (uint64_t)flen - m->host_offset);
    ret = blk_pread(s->bs->file, m->host_offset, csize, s->cbuf, 0);
    if (ret < 0) {
        return ret;
    }
    s->dbuf_host = 0;
    if (s->h.compression_type == 1) {
        ret = inflate_zstd(s, s->cbuf, csize, s->dbuf, s->h.cluster_size);
    } else {
        ret = inflate_zlib(s, s->cbuf, csize, s->dbuf, s->h.cluster_size);
    }
    if (ret < 0) {
        if (ret == -EIO) {
            log_error("qcow2 '%s': bad compressed data at 0x%llx",
                      s->bs->filename, (unsigned long long)m->host_offset);
        }
        return ret;
    }
    s->dbuf_host = m->host_offset;
    return 0;
}

/* ---- read --------------------------------------------------------------- */

/* Read [off, off+bytes) of the backing chain (zeroes past its end). */
static int read_backing(BDRVQcow2 *s, uint64_t off, uint64_t bytes,
                        uint8_t *buf)
{
    BlockNode *b = s->bs->backing;
    int64_t blen;
    uint64_t n = 0;
    int ret;

    if (b != NULL) {
        blen = blk_getlength(b);
        if (blen < 0) {
            return (int)blen;
        }
        if (off < (uint64_t)blen) {
            n = MIN(bytes, (uint64_t)blen - off);
            ret = blk_pread(b, off, n, buf, 0);
            if (ret < 0) {
                return ret;
            }
        }
    }
    memset(buf + n, 0, bytes - n);
    return 0;
}

static int qcow2_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                       void *vbuf, uint32_t flags)
{
    BDRVQcow2 *s = bs->opaque;
    uint8_t *buf = vbuf;
    int ret;

    (void)flags;
    while (bytes > 0) {
        uint64_t n = bytes;
        uint64_t host;
        Qcow2Mapping m;
        bool copied, hit;

        /* Allocated clusters, L2 table cached: no lock at all; else an
         * L2 cache hit on allocated clusters under the lock.  Either way
         * straight to the file, counted in inflight, outside the lock. */
        __atomic_add_fetch(&s->inflight, 1, __ATOMIC_SEQ_CST);
        hit = fast_map_unlocked(s, offset, &n, &host, false);
        if (!hit) {
            __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_RELEASE);
            n = bytes;
            qcow2_lock(s);
            hit = fast_map(s, offset, &n, &host, &copied);
            if (hit) {
                __atomic_add_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
                qcow2_unlock(s);
            }
        }
        if (hit) {
            ret = blk_pread(bs->file, host, n, buf, 0);
            __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
            if (ret < 0) {
                return ret;
            }
            offset += n;
            buf += n;
            bytes -= n;
            continue;
        }
        ret = get_mapping(s, offset, &n, &m);
        if (ret == 0 && m.type == QCOW2_CLUSTER_COMPRESSED) {
            ret = read_compressed(s, &m);
            if (ret == 0) {
                memcpy(buf, s->dbuf + offset_in_cluster(s, offset), n);
            }
        }
        if (ret == 0 && m.type == QCOW2_CLUSTER_NORMAL) {
            __atomic_add_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
        }
        qcow2_unlock(s);
        if (ret < 0) {
            return ret;
        }
        switch (m.type) {
        case QCOW2_CLUSTER_NORMAL:
            ret = blk_pread(bs->file, m.host_offset, n, buf, 0);
            __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
            break;
        case QCOW2_CLUSTER_UNALLOCATED:
        case QCOW2_CLUSTER_UNALLOCATED_ALLOC:
            ret = read_backing(s, offset, n, buf);
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            break;
        default:
            memset(buf, 0, n);
            break;
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        buf += n;
        bytes -= n;
    }
    return 0;
}

/* Runs of host clusters one spliced read may cover: a request of a
 * preallocated or sequentially written image is one or two runs. */
#define QCOW2_SPLICE_RUNS 8

/* A read spliced from the page cache of the file child (see
 * BlockSplicePin in block.h for why it pins).  Only when the whole range
 * is allocated data clusters (NORMAL): anything else (holes, zeroes,
 * compressed, backing, too many runs) is -ENOTSUP before the pipe is
 * touched, and the caller reads it the ordinary way.
 *
 * The safety argument: the pin is taken under s->lock before the
 * mapping is looked up, so any cluster this read can reference is
 * freed (queue_free, under s->lock) after the pin exists, at an epoch
 * >= the pin's.  flush_locked() gives freed clusters back only when
 * blk_splice_reusable() says no pin of that epoch or older is left,
 * and the reader releases the pin only once no pipe or socket holds
 * the pages (nbd/conn.c: the socket's peer consumed the reply).  Until
 * then the cluster stays allocated, so nothing else is written into
 * its pages.  A write of the same guest offset (same cluster, in place)
 * may still change the bytes of a reply in flight, as with raw: that is
 * a read racing a write of the same range, whose result NBD leaves
 * undefined. */
static int qcow2_splice_read(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             int pipe_fd, uint32_t flags, BlockSplicePin *pin)
{
    BDRVQcow2 *s = bs->opaque;
    uint64_t host[QCOW2_SPLICE_RUNS], len[QCOW2_SPLICE_RUNS];
    unsigned nruns = 0;
    uint64_t pos = offset, left = bytes;
    int ret = 0;

    if (!(flags & BLK_REQ_PIN_OK) || pin == NULL) {
        return -ENOTSUP;            /* nobody would watch the pin */
    }
    qcow2_lock(s);
    blk_splice_pin_take(bs, pin);
    while (left > 0) {
        uint64_t n = left;
        Qcow2Mapping m;
        bool copied;

        if (nruns == QCOW2_SPLICE_RUNS) {
            ret = -ENOTSUP;
            break;
        }
        if (!fast_map(s, pos, &n, &host[nruns], &copied)) {
            ret = get_mapping(s, pos, &n, &m);
            if (ret == 0 && m.type != QCOW2_CLUSTER_NORMAL) {
                ret = -ENOTSUP;
            }
            if (ret < 0) {
                break;
            }
            host[nruns] = m.host_offset;
        }
        len[nruns++] = n;
        pos += n;
        left -= n;
    }
    if (ret < 0) {
        qcow2_unlock(s);
        blk_splice_unpin(pin);      /* nothing in the pipe */
        return ret;
    }
    __atomic_add_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
    qcow2_unlock(s);
    /* NORMAL clusters are data: no hole search below (which could
     * also refuse a later run after an earlier one is in the pipe). */
    flags &= ~(uint32_t)BLK_REQ_DATA_ONLY;
    for (unsigned i = 0; i < nruns && ret == 0; i++) {
        ret = blk_splice_read(bs->file, host[i], len[i], pipe_fd, flags,
                              NULL);
        if (ret == -ENOTSUP && i > 0) {
            ret = -EIO;             /* part of it is in the pipe */
        }
    }
    __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
    if (ret == -ENOTSUP) {
        blk_splice_unpin(pin);
    }
    return ret;
}

/* ---- write -------------------------------------------------------------- */

/* Fill s->cow_buf with the current content of the guest cluster at
 * coff (cluster aligned), as described by m. */
static int read_cluster_for_cow(BDRVQcow2 *s, uint64_t coff,
                                const Qcow2Mapping *m)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t n = MIN(cs, s->size > coff ? s->size - coff : 0);
    int ret;

    switch (m->type) {
    case QCOW2_CLUSTER_NORMAL:
        return blk_pread(s->bs->file, m->host_offset, cs, s->cow_buf, 0);
    case QCOW2_CLUSTER_COMPRESSED:
        ret = read_compressed(s, m);
        if (ret == 0) {
            memcpy(s->cow_buf, s->dbuf, cs);
        }
        return ret;
    case QCOW2_CLUSTER_UNALLOCATED:
        ret = read_backing(s, coff, n, s->cow_buf);
        memset(s->cow_buf + n, 0, cs - n);
        return ret;
    default:
        memset(s->cow_buf, 0, cs);
        return 0;
    }
}

/* Does the guest cluster described by m read as zeroes (so a copy on
 * write has nothing to copy)? */
static bool cow_source_is_zero(const BDRVQcow2 *s, const Qcow2Mapping *m)
{
    return m->type == QCOW2_CLUSTER_ZERO_PLAIN ||
           m->type == QCOW2_CLUSTER_ZERO_ALLOC ||
           (m->type == QCOW2_CLUSTER_UNALLOCATED && s->bs->backing == NULL);
}

/* Release the host cluster an L2 entry referenced (after the new entry is
 * durable). */
static void free_entry(BDRVQcow2 *s, const Qcow2Mapping *m)
{
    if (m->type == QCOW2_CLUSTER_COMPRESSED) {
        uint64_t start = m->host_offset & ~511ULL;

        queue_free(s, start, m->compressed_size + (m->host_offset - start));
        if (s->dbuf_host == m->host_offset) {
            s->dbuf_host = 0;
        }
    } else if ((m->type == QCOW2_CLUSTER_NORMAL ||
                m->type == QCOW2_CLUSTER_ZERO_ALLOC) && m->host_offset) {
        queue_free(s, m->host_offset, s->h.cluster_size);
    }
}

static int maybe_flush_pending(BDRVQcow2 *s)
{
    /* Bound the pending list: frees wait for an L2 flush. */
    if (s->nb_pending >= 4096 && frees_releasable(s)) {
        return flush_locked(s);
    }
    return 0;
}

/* The cached L2 table that maps guest offset off, made writable first
 * (allocated, or copied if shared with a snapshot); *l2_off is where it
 * lives in the file, to get it again after the lock was dropped.  Lock
 * held. */
static int l2_table_for_write(BDRVQcow2 *s, uint64_t off, uint64_t *l2_off,
                              uint64_t **t)
{
    int ret = l2_get_for_write(s, off, l2_off);

    if (ret < 0) {
        return ret;
    }
    return qcow2_cache_get(s->l2_cache, *l2_off, true, (void **)t);
}

/* Write n bytes (within one cluster) at guest offset off; when buf is
 * NULL, write zeroes.  Lock held on entry; released and retaken around
 * an in-place data write. */
static int write_cluster(BDRVQcow2 *s, uint64_t off, uint64_t n,
                         const uint8_t *buf)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t coff = off - offset_in_cluster(s, off);
    uint64_t l2_off, host, e;
    uint64_t *t;
    Qcow2Mapping m;
    int ret;

    ret = l2_table_for_write(s, off, &l2_off, &t);
    if (ret < 0) {
        return ret;
    }
    e = be64toh(t[l2_index(s, off)]);
    ret = qcow2_l2_decode(&s->h, e, &m);
    if (ret < 0) {
        return ret;
    }
    if (m.type == QCOW2_CLUSTER_NORMAL && m.copied) {
        host = m.host_offset + offset_in_cluster(s, off);
        if (overlaps_fixed_metadata(s, host, n)) {
            qcow2_corrupt(s, "data cluster 0x%llx overlaps metadata",
                          (unsigned long long)m.host_offset);
            return -EIO;
        }
        __atomic_add_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
        qcow2_unlock(s);
        ret = blk_pwrite(s->bs->file, host, n, buf ? buf : s->cow_buf + cs,
                         0);
        qcow2_lock(s);
        __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
        return ret;
    }

    ret = alloc_clusters(s, 1, &host);
    if (ret < 0) {
        return ret;
    }
    if (n < cs && cow_source_is_zero(s, &m) && s->bs->file->drv->is_protocol &&
        host >= (uint64_t)blk_getlength(s->bs->file)) {
        /* A new cluster past the end of the file reads as zeroes
         * already: write the new bytes and the cluster's last block (so
         * that the file covers the whole cluster), not the zero head and
         * tail. */
        uint64_t in = offset_in_cluster(s, off);
        uint64_t tail = MAX(in + n, cs - MIN(cs, 4096));

        ret = blk_pwrite(s->bs->file, host + in, n,
                         buf ? buf : s->cow_buf + cs, 0);
        if (ret == 0 && tail < cs) {
            ret = blk_pwrite(s->bs->file, host + tail, cs - tail,
                             s->cow_buf + cs, 0);
        }
    } else if (n < cs) {
        ret = read_cluster_for_cow(s, coff, &m);
        if (ret < 0) {
            goto undo;
        }
        if (buf != NULL) {
            memcpy(s->cow_buf + offset_in_cluster(s, off), buf, n);
        } else {
            memset(s->cow_buf + offset_in_cluster(s, off), 0, n);
        }
        ret = blk_pwrite(s->bs->file, host, cs, s->cow_buf, 0);
    } else {
        ret = blk_pwrite(s->bs->file, host, cs, buf ? buf : s->cow_buf + cs,
                         0);
    }
    if (ret < 0) {
        goto undo;
    }
    ret = qcow2_cache_get(s->l2_cache, l2_off, true, (void **)&t);
    if (ret < 0) {
        goto undo;
    }
    t[l2_index(s, off)] = htobe64(host | QCOW2_OFLAG_COPIED);
    qcow2_cache_mark_dirty(s->l2_cache, t);
    free_entry(s, &m);
    return maybe_flush_pending(s);

undo:
    /* The new cluster is unreferenced: give it back at once. */
    update_refcounts(s, host, cs, -1);
    return ret;
}

/* ---- extended L2 entries (subclusters) ---------------------------------
 *
 * Each L2 entry is two words: the standard one (bit 0 reserved) and a
 * bitmap with an "allocated" bit (0..31) and a "reads as zero" bit
 * (32..63) per subcluster (qcow2.txt "Extended L2 Entries").  Writes
 * allocate whole subclusters: the untouched head and tail of a partly
 * written subcluster are filled from what it read before. */

#define QCOW2_EXTL2_ALL_ALLOC 0x00000000ffffffffULL
#define QCOW2_EXTL2_ALL_ZERO 0xffffffff00000000ULL

/* Fill s->cow_buf[a, b) (byte offsets in the cluster, subcluster
 * aligned) with what the guest cluster at coff reads there now. */
static int fill_subclusters(BDRVQcow2 *s, uint64_t coff,
                            const Qcow2Mapping *cm, uint64_t bm,
                            uint64_t a, uint64_t b)
{
    uint64_t scs = 1ULL << s->h.subcluster_bits;
    int ret = 0;

    if (cm->type == QCOW2_CLUSTER_COMPRESSED) {
        ret = read_compressed(s, cm);
        if (ret == 0) {
            memcpy(s->cow_buf + a, s->dbuf + a, b - a);
        }
        return ret;
    }
    for (uint64_t x = a; x < b && ret == 0; x += scs) {
        int st = qcow2_subcluster_type(cm, bm, x / scs);
        uint64_t g = coff + x;
        uint64_t n = MIN(scs, s->size > g ? s->size - g : 0);

        switch (st) {
        case QCOW2_CLUSTER_NORMAL:
            ret = blk_pread(s->bs->file, cm->host_offset + x, scs,
                            s->cow_buf + x, 0);
            break;
        case QCOW2_CLUSTER_UNALLOCATED:
        case QCOW2_CLUSTER_UNALLOCATED_ALLOC:
            ret = read_backing(s, g, n, s->cow_buf + x);
            memset(s->cow_buf + x + n, 0, scs - n);
            break;
        case QCOW2_CLUSTER_ZERO_PLAIN:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            memset(s->cow_buf + x, 0, scs);
            break;
        default:
            ret = -EIO;
            break;
        }
    }
    return ret;
}

/* Bits of subclusters [sa, sb) in the "allocated" half of a bitmap. */
static uint64_t sc_mask(uint64_t sa, uint64_t sb)
{
    return ((sb - sa == 32) ? 0xffffffffULL : ((1ULL << (sb - sa)) - 1))
           << sa;
}

/* Write n bytes (within one cluster) at guest offset off of an image
 * with extended L2 entries; buf NULL writes zeroes.  Lock held. */
static int write_cluster_ext(BDRVQcow2 *s, uint64_t off, uint64_t n,
                             const uint8_t *buf)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t scs = 1ULL << s->h.subcluster_bits;
    uint64_t coff = off - offset_in_cluster(s, off);
    uint64_t a = ALIGN_DOWN(off - coff, scs);
    uint64_t b = ALIGN_UP(off - coff + n, scs);
    uint64_t mask = sc_mask(a / scs, b / scs);
    uint64_t idx = l2_index(s, off);
    uint64_t l2_off, host, e, bm, new_bm;
    bool in_place, full;
    uint64_t *t;
    Qcow2Mapping cm;
    int ret = 0;

    ret = l2_table_for_write(s, off, &l2_off, &t);
    if (ret < 0) {
        return ret;
    }
    e = be64toh(t[2 * idx]);
    bm = be64toh(t[2 * idx + 1]);
    if (qcow2_l2_decode(&s->h, e, &cm) < 0) {
        return -EIO;
    }
    for (unsigned sc = 0; sc < 32; sc++) {
        if (qcow2_subcluster_type(&cm, bm, sc) < 0) {
            return -EIO;
        }
    }
    in_place = cm.type != QCOW2_CLUSTER_COMPRESSED && cm.host_offset != 0 &&
               cm.copied;
    /* A shared or compressed cluster is copied whole. */
    full = !in_place && cm.host_offset != 0;
    if (full) {
        a = 0;
        b = cs;
    }
    if (full) {
        ret = fill_subclusters(s, coff, &cm, bm, 0, cs);
    } else {
        /* Only the partly written first and last subclusters. */
        if (off - coff > a) {
            ret = fill_subclusters(s, coff, &cm, bm, a, a + scs);
        }
        if (ret == 0 && off - coff + n < b) {
            ret = fill_subclusters(s, coff, &cm, bm, b - scs, b);
        }
    }
    if (ret < 0) {
        return ret;
    }
    if (buf != NULL) {
        memcpy(s->cow_buf + (off - coff), buf, n);
    } else {
        memset(s->cow_buf + (off - coff), 0, n);
    }
    if (in_place) {
        host = cm.host_offset;
        if (overlaps_fixed_metadata(s, host + a, b - a)) {
            qcow2_corrupt(s, "data cluster 0x%llx overlaps metadata",
                          (unsigned long long)host);
            return -EIO;
        }
    } else {
        ret = alloc_clusters(s, 1, &host);
        if (ret < 0) {
            return ret;
        }
    }
    ret = blk_pwrite(s->bs->file, host + a, b - a, s->cow_buf + a, 0);
    if (ret == 0) {
        ret = qcow2_cache_get(s->l2_cache, l2_off, true, (void **)&t);
    }
    if (ret < 0) {
        if (!in_place) {
            update_refcounts(s, host, cs, -1);
        }
        return ret;
    }
    if (full) {
        new_bm = QCOW2_EXTL2_ALL_ALLOC;
    } else {
        new_bm = (bm | mask) & ~(mask << 32);
    }
    t[2 * idx] = htobe64(host | QCOW2_OFLAG_COPIED);
    t[2 * idx + 1] = htobe64(new_bm);
    qcow2_cache_mark_dirty(s->l2_cache, t);
    if (!in_place) {
        free_entry(s, &cm);
    }
    return maybe_flush_pending(s);
}

/* Set a whole cluster of an extended-L2 image to bitmap new_bm with no
 * allocated subcluster (zeroes or unallocated); keep_host keeps its
 * host cluster (when it is not shared). */
static int set_entry_ext(BDRVQcow2 *s, uint64_t off, uint64_t new_bm,
                         bool keep_host)
{
    uint64_t idx = l2_index(s, off);
    uint64_t l2_off, e, new_e = 0;
    uint64_t *t;
    Qcow2Mapping cm;
    int ret;

    ret = l2_table_for_write(s, off, &l2_off, &t);
    if (ret < 0) {
        return ret;
    }
    e = be64toh(t[2 * idx]);
    if (qcow2_l2_decode(&s->h, e, &cm) < 0) {
        return -EIO;
    }
    if (keep_host && cm.type != QCOW2_CLUSTER_COMPRESSED &&
        cm.host_offset != 0 && cm.copied) {
        new_e = cm.host_offset | QCOW2_OFLAG_COPIED;
    } else if (cm.type == QCOW2_CLUSTER_COMPRESSED || cm.host_offset != 0) {
        cm.type = cm.type == QCOW2_CLUSTER_COMPRESSED
                      ? QCOW2_CLUSTER_COMPRESSED : QCOW2_CLUSTER_NORMAL;
        free_entry(s, &cm);
    }
    t[2 * idx] = htobe64(new_e);
    t[2 * idx + 1] = htobe64(new_bm);
    qcow2_cache_mark_dirty(s->l2_cache, t);
    return maybe_flush_pending(s);
}

/* Write within one cluster, whatever the L2 entry format. */
static int write_any(BDRVQcow2 *s, uint64_t off, uint64_t n,
                     const uint8_t *buf)
{
    if (s->h.extended_l2) {
        return write_cluster_ext(s, off, n, buf);
    }
    return write_cluster(s, off, n, buf);
}

/* Write whole clusters at guest offset off (cluster aligned), which
 * have no host cluster yet: allocate them contiguously (within one L2
 * table) and write them in one request.  *done gets the bytes written.
 * Lock held. */
static int write_new_clusters(BDRVQcow2 *s, uint64_t off, uint64_t bytes,
                              const uint8_t *buf, uint64_t *done)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t idx = l2_index(s, off);
    uint64_t k = MIN(bytes / cs, (1ULL << s->h.l2_bits) - idx);
    uint64_t l2_off, host;
    uint64_t *t;
    int ret;

    /* Runs that fit next to a new refcount block (see alloc_clusters). */
    k = MIN(k, MAX((1ULL << s->h.rb_bits) / 2, 1));
    ret = l2_get_for_write(s, off, &l2_off);
    if (ret < 0) {
        return ret;
    }
    ret = alloc_clusters(s, k, &host);
    if (ret < 0) {
        return ret;
    }
    ret = blk_pwrite(s->bs->file, host, k * cs, buf, 0);
    if (ret == 0) {
        ret = qcow2_cache_get(s->l2_cache, l2_off, true, (void **)&t);
    }
    if (ret < 0) {
        update_refcounts(s, host, k * cs, -1);
        return ret;
    }
    for (uint64_t i = 0; i < k; i++) {
        Qcow2Mapping m;

        /* Only entries without a host cluster come here; keep it so. */
        if (qcow2_l2_decode(&s->h, be64toh(t[idx + i]), &m) == 0) {
            free_entry(s, &m);
        }
        t[idx + i] = htobe64((host + i * cs) | QCOW2_OFLAG_COPIED);
    }
    qcow2_cache_mark_dirty(s->l2_cache, t);
    *done = k * cs;
    return maybe_flush_pending(s);
}

static int qcow2_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                        const void *vbuf, uint32_t flags)
{
    BDRVQcow2 *s = bs->opaque;
    const uint8_t *buf = vbuf;
    int ret = 0;

    if (__atomic_load_n(&s->corrupt, __ATOMIC_RELAXED)) {
        return -EIO;
    }
    while (bytes > 0 && ret == 0) {
        uint64_t n = bytes;
        uint64_t host;
        Qcow2Mapping m;
        bool copied;

        __atomic_add_fetch(&s->inflight, 1, __ATOMIC_SEQ_CST);
        if (fast_map_unlocked(s, offset, &n, &host, true)) {
            /* Clusters written in place, L2 table cached: no lock. */
            ret = blk_pwrite(bs->file, host, n, buf, 0);
            __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_RELEASE);
            offset += n;
            buf += n;
            bytes -= n;
            continue;
        }
        __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_RELEASE);
        n = bytes;
        qcow2_lock(s);
        if (fast_map(s, offset, &n, &host, &copied) && copied &&
            !overlaps_fixed_metadata(s, host, n)) {
            /* An L2 cache hit on clusters written in place (refcount
             * 1): as the fast path below, without decoding. */
            __atomic_add_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
            qcow2_unlock(s);
            ret = blk_pwrite(bs->file, host, n, buf, 0);
            __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
            offset += n;
            buf += n;
            bytes -= n;
            continue;
        }
        n = bytes;
        ret = get_mapping(s, offset, &n, &m);
        if (ret < 0) {
            qcow2_unlock(s);
            break;
        }
        if (m.type == QCOW2_CLUSTER_NORMAL && m.copied &&
            !overlaps_fixed_metadata(s, m.host_offset, n)) {
            /* Fast path: a run of clusters written in place, outside
             * the lock. */
            __atomic_add_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
            qcow2_unlock(s);
            ret = blk_pwrite(bs->file, m.host_offset, n, buf, 0);
            __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
        } else {
            if (!s->h.extended_l2 &&
                (m.type == QCOW2_CLUSTER_UNALLOCATED ||
                 m.type == QCOW2_CLUSTER_ZERO_PLAIN) &&
                offset_in_cluster(s, offset) == 0 &&
                MIN(n, bytes) >= 2 * s->h.cluster_size) {
                /* Whole new clusters, allocated together. */
                ret = write_new_clusters(s, offset, MIN(n, bytes), buf, &n);
            } else {
                n = MIN(bytes,
                        s->h.cluster_size - offset_in_cluster(s, offset));
                ret = write_any(s, offset, n, buf);
            }
            qcow2_unlock(s);
        }
        offset += n;
        buf += n;
        bytes -= n;
    }
    if (ret == 0 && (flags & BLK_REQ_FUA)) {
        qcow2_lock(s);
        ret = flush_locked(s);
        qcow2_unlock(s);
    }
    return ret;
}

/* Set the L2 entry of the cluster at guest offset off (cluster aligned)
 * to new_entry, releasing what it referenced unless keep_host. */
static int set_entry(BDRVQcow2 *s, uint64_t off, uint64_t new_entry,
                     bool keep_host)
{
    uint64_t l2_off, e;
    uint64_t *t;
    Qcow2Mapping m;
    int ret;

    ret = l2_table_for_write(s, off, &l2_off, &t);
    if (ret < 0) {
        return ret;
    }
    e = be64toh(t[l2_index(s, off)]);
    ret = qcow2_l2_decode(&s->h, e, &m);
    if (ret < 0) {
        return ret;
    }
    if (keep_host && (m.type == QCOW2_CLUSTER_NORMAL ||
                      m.type == QCOW2_CLUSTER_ZERO_ALLOC) && m.copied) {
        new_entry |= m.host_offset | QCOW2_OFLAG_COPIED;
    } else {
        free_entry(s, &m);
    }
    if (e != new_entry) {
        t[l2_index(s, off)] = htobe64(new_entry);
        qcow2_cache_mark_dirty(s->l2_cache, t);
    }
    return maybe_flush_pending(s);
}

static bool mapping_is_plain_hole(BDRVQcow2 *s, const Qcow2Mapping *m)
{
    return m->type == QCOW2_CLUSTER_ZERO_PLAIN ||
           (m->type == QCOW2_CLUSTER_UNALLOCATED && m->host_offset == 0 &&
            s->bs->backing == NULL);
}

/* How many bytes from guest offset off (at most max) already read as
 * zeroes without a host cluster, so that zeroing or discarding them
 * changes nothing; *run < n when [off, off+n), the piece to handle
 * next, is not all such a hole.  The piece is looked up alone (a run
 * of mapped clusters can span a whole L2 table: asking for it at every
 * cluster would be quadratic); a hole is then followed as far as it
 * goes (up to every empty L1 entry in a row), so a huge range of a
 * fresh image is skipped in a few steps. */
static int plain_hole_run(BDRVQcow2 *s, uint64_t off, uint64_t n,
                          uint64_t max, uint64_t *run)
{
    uint64_t len = n;
    Qcow2Mapping m;
    int ret = get_mapping(s, off, &len, &m);

    *run = 0;
    if (ret < 0) {
        return ret;
    }
    if (len < n || !mapping_is_plain_hole(s, &m)) {
        return 0;
    }
    len = max;
    if (max > n) {
        ret = get_mapping(s, off, &len, &m);
        if (ret < 0) {
            return ret;
        }
        if (!mapping_is_plain_hole(s, &m)) {
            len = n;            /* cannot change under the lock */
        }
    }
    *run = MAX(len, n);
    return 0;
}

/* The bytes from off to skip when [off, off+run) is a plain hole and
 * the piece to handle next is [off, off+n): 0 unless the hole covers
 * that piece; else up to the last cluster boundary inside the hole, or
 * all of the remaining bytes. */
static uint64_t hole_skip(BDRVQcow2 *s, uint64_t off, uint64_t n,
                          uint64_t run, uint64_t bytes)
{
    if (run < n) {
        return 0;
    }
    if (run >= bytes || off + run >= s->size) {
        return bytes;
    }
    return ALIGN_DOWN(off + run, s->h.cluster_size) - off;
}

/* Zero [offset, offset+bytes): whole clusters become zero entries (v3),
 * partial ones are written.  The lock is handed over between clusters
 * (qcow2_hold_step): a request may cover the whole image, and must
 * not hold everyone else up for its duration. */
static int qcow2_pwrite_zeroes(BlockNode *bs, uint64_t offset,
                               uint64_t bytes, uint32_t flags)
{
    BDRVQcow2 *s = bs->opaque;
    uint64_t cs = s->h.cluster_size;
    Qcow2Hold hold;
    int ret = 0;

    if (s->h.version < 3 && (flags & BLK_REQ_NO_FALLBACK)) {
        return -ENOTSUP;
    }
    if (__atomic_load_n(&s->corrupt, __ATOMIC_RELAXED)) {
        return -EIO;
    }
    qcow2_lock(s);
    qcow2_hold_start(&hold);
    while (bytes > 0) {
        uint64_t n = MIN(bytes, cs - offset_in_cluster(s, offset));
        bool whole = n == cs || (offset_in_cluster(s, offset) == 0 &&
                                 offset + n >= s->size);
        uint64_t run = 0, skip;

        qcow2_hold_step(s, &hold);
        ret = plain_hole_run(s, offset, n, bytes, &run);
        if (ret < 0) {
            break;
        }
        skip = hole_skip(s, offset, n, run, bytes);
        if (skip > 0) {
            /* Already zero. */
            n = skip;
        } else if (!(whole && s->h.version >= 3) &&
                   (flags & BLK_REQ_NO_FALLBACK)) {
            ret = -ENOTSUP;     /* would write zeroes as data */
        } else if (whole && s->h.extended_l2) {
            ret = set_entry_ext(s, offset, QCOW2_EXTL2_ALL_ZERO,
                                !(flags & BLK_REQ_MAY_UNMAP));
        } else if (whole && s->h.version >= 3) {
            ret = set_entry(s, offset, QCOW2_OFLAG_ZERO,
                            !(flags & BLK_REQ_MAY_UNMAP));
        } else {
            ret = write_any(s, offset, n, NULL);
        }
        if (ret < 0) {
            break;
        }
        offset += n;
        bytes -= n;
    }
    if (ret == 0 && (flags & BLK_REQ_FUA)) {
        ret = flush_locked(s);
    }
    qcow2_unlock(s);
    return ret;
}

static int qcow2_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    BDRVQcow2 *s = bs->opaque;
    uint64_t cs = s->h.cluster_size;
    uint64_t end = offset + bytes;
    uint64_t start = ALIGN_UP(offset, cs);
    Qcow2Hold hold;
    int ret = 0;

    if (__atomic_load_n(&s->corrupt, __ATOMIC_RELAXED)) {
        return -EIO;
    }
    /* Only whole clusters (the tail cluster may end at the disk's end). */
    end = end >= s->size ? ALIGN_UP(end, cs) : ALIGN_DOWN(end, cs);
    qcow2_lock(s);
    qcow2_hold_start(&hold);
    for (uint64_t off = start; off < end;) {
        uint64_t n = MIN(cs, s->size - off);
        uint64_t run = 0, skip;

        qcow2_hold_step(s, &hold);
        ret = plain_hole_run(s, off, n, MIN(end, s->size) - off, &run);
        if (ret < 0) {
            break;
        }
        skip = hole_skip(s, off, n, run, end - off);
        if (skip > 0) {
            off += skip;
            continue;
        }
        /* With a backing file a v3 image records zeroes, so that the
         * backing data does not show through again. */
        if (s->h.extended_l2) {
            ret = set_entry_ext(s, off, s->bs->backing ? QCOW2_EXTL2_ALL_ZERO
                                                       : 0, false);
        } else {
            ret = set_entry(s, off,
                            (s->bs->backing && s->h.version >= 3)
                                ? QCOW2_OFLAG_ZERO : 0,
                            false);
        }
        if (ret < 0) {
            break;
        }
        off += cs;
    }
    qcow2_unlock(s);
    return ret;
}

static int qcow2_flush(BlockNode *bs)
{
    BDRVQcow2 *s = bs->opaque;
    int ret;

    qcow2_lock(s);
    ret = flush_locked(s);
    qcow2_unlock(s);
    return ret;
}

static int qcow2_block_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                              uint64_t *pnum, uint64_t *map,
                              BlockNode **file)
{
    BDRVQcow2 *s = bs->opaque;
    uint64_t n = bytes;
    Qcow2Mapping m;
    int ret;

    qcow2_lock(s);
    ret = get_mapping(s, offset, &n, &m);
    qcow2_unlock(s);
    if (ret < 0) {
        return ret;
    }
    *pnum = n;
    switch (m.type) {
    case QCOW2_CLUSTER_NORMAL:
        *map = m.host_offset;
        *file = bs->file;
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED |
               BLK_STATUS_OFFSET_VALID;
    case QCOW2_CLUSTER_COMPRESSED:
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
    case QCOW2_CLUSTER_ZERO_PLAIN:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        return BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
    default:
        return bs->backing ? 0 : BLK_STATUS_ZERO;
    }
}

static int64_t qcow2_get_length(BlockNode *bs)
{
    BDRVQcow2 *s = bs->opaque;

    return (int64_t)s->size;
}

/* ---- resize ------------------------------------------------------------- */

static bool qcow2_truncate_locked(BlockNode *bs, uint64_t size,
                                  Error **errp)
{
    BDRVQcow2 *s = bs->opaque;
    uint64_t need = qcow2_l1_entries_for_size(&s->h, size);
    uint8_t hdr[24];
    int ret;

    if (s->read_only || s->snapshot_view) {
        error_setg(errp, "qcow2: image is read-only");
        return false;
    }
    if (s->corrupt) {
        error_setg(errp, "qcow2: image is marked corrupt");
        return false;
    }
    if (size < s->size) {
        error_setg(errp, "qcow2: shrinking images is not supported");
        return false;
    }
    if (!IS_ALIGNED(size, 512)) {
        error_setg(errp, "qcow2: image size must be a multiple of 512 "
                   "bytes");
        return false;
    }
    if (need > QCOW2_MAX_L1_BYTES / 8) {
        error_setg(errp, "qcow2: image size too large for the cluster "
                   "size");
        return false;
    }
    ret = flush_locked(s);
    if (ret < 0) {
        goto io_error;
    }
    put_be64(hdr, size);
    put_be32(hdr + 8, s->h.crypt_method);
    if (need > s->l1_size) {
        uint64_t bytes = ALIGN_UP(need * 8, s->h.cluster_size);
        uint64_t new_off, old_off = s->l1_offset;
        uint64_t old_bytes = ALIGN_UP((uint64_t)s->l1_size * 8,
                                      s->h.cluster_size);
        uint64_t *nl1, *disk;

        ret = alloc_clusters(s, bytes / s->h.cluster_size, &new_off);
        if (ret < 0) {
            goto io_error;
        }
        nl1 = xzalloc(bytes);
        disk = xzalloc(bytes);
        memcpy(nl1, s->l1, (size_t)s->l1_size * 8);
        for (uint64_t i = 0; i < need; i++) {
            put_be64(&disk[i], nl1[i]);
        }
        ret = qcow2_cache_flush(s->rb_cache);
        if (ret == 0) {
            ret = blk_pwrite(bs->file, new_off, bytes, disk, 0);
        }
        if (ret == 0) {
            ret = blk_flush(bs->file);
        }
        free(disk);
        if (ret < 0) {
            free(nl1);
            goto io_error;
        }
        put_be32(hdr + 12, need);
        put_be64(hdr + 16, new_off);
        ret = blk_pwrite(bs->file, 24, 24, hdr, 0);
        if (ret == 0) {
            ret = blk_flush(bs->file);
        }
        if (ret < 0) {
            free(nl1);
            goto io_error;
        }
        /* Lock-free readers may still be looking at the old copy
         * (fast_map()): keep it until close, and publish the new one
         * before its size. */
        s->l1_old = xrealloc(s->l1_old,
                             (s->nb_l1_old + 1) * sizeof(*s->l1_old));
        s->l1_old[s->nb_l1_old++] = s->l1;
        __atomic_store_n(&s->l1, nl1, __ATOMIC_RELEASE);
        __atomic_store_n(&s->l1_size, (uint32_t)need, __ATOMIC_RELEASE);
        s->l1_offset = new_off;
        s->h.l1_size = need;
        s->h.l1_table_offset = new_off;
        if (old_bytes > 0) {
            ret = update_refcounts(s, old_off, old_bytes, -1);
        }
    } else {
        ret = blk_pwrite(bs->file, 24, 8, hdr, 0);
    }
    if (ret == 0) {
        ret = flush_locked(s);
    }
    if (ret < 0) {
        goto io_error;
    }
    s->size = size;
    s->h.size = size;
    return true;

io_error:
    error_setg_errno(errp, -ret, "qcow2: could not resize '%s'",
                     bs->filename);
    return false;
}

static int qcow2_pwrite_zeroes(BlockNode *bs, uint64_t offset,
                               uint64_t bytes, uint32_t flags);

/* Grow the image (loop thread).  The new area reads as zeroes even when
 * the backing file is longer than the old size (as QEMU does it). */
static bool qcow2_truncate(BlockNode *bs, uint64_t size, Error **errp)
{
    BDRVQcow2 *s = bs->opaque;
    uint64_t old = s->size;
    int64_t blen;
    int ret;

    if (!qcow2_bitmaps_can_resize(bs, errp)) {
        return false;
    }
    qcow2_lock(s);
    if (!qcow2_truncate_locked(bs, size, errp)) {
        qcow2_unlock(s);
        return false;
    }
    qcow2_unlock(s);
    if (bs->backing != NULL && size > old) {
        blen = blk_getlength(bs->backing);
        if (blen > (int64_t)old) {
            ret = qcow2_pwrite_zeroes(bs, old, MIN((uint64_t)blen, size) - old,
                                      BLK_REQ_MAY_UNMAP);
            if (ret == 0) {
                ret = qcow2_flush(bs);
            }
            if (ret < 0) {
                error_setg_errno(errp, -ret, "qcow2: could not zero the new "
                                 "area of '%s'", bs->filename);
                return false;
            }
        }
    }
    return true;
}

/* ---- open / close ----------------------------------------------------- */

static int qcow2_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len >= 8 && get_be32(buf) == QCOW2_MAGIC &&
        (get_be32(buf + 4) == 2 || get_be32(buf + 4) == 3)) {
        return 100;
    }
    return 0;
}

static int read_table(BlockNode *bs, uint64_t off, uint32_t entries,
                      uint64_t **out)
{
    uint64_t *t = xcalloc(entries ? entries : 1, 8);
    int ret = 0;

    if (entries > 0) {
        ret = blk_pread(bs->file, off, (uint64_t)entries * 8, t, 0);
    }
    if (ret < 0) {
        free(t);
        return ret;
    }
    for (uint32_t i = 0; i < entries; i++) {
        t[i] = be64toh(t[i]);
    }
    *out = t;
    return 0;
}

static bool load_snapshots(BlockNode *bs, BDRVQcow2 *s, uint64_t file_size,
                           Error **errp)
{
    uint64_t avail, len = 64 * 1024;
    int ret;

    if (s->h.nb_snapshots == 0) {
        return true;
    }
    avail = MIN(file_size - s->h.snapshots_offset,
                (uint64_t)QCOW2_MAX_SNAPSHOTS_BYTES);
    for (;;) {
        CLEANUP_FREE uint8_t *buf = NULL;
        Error *local = NULL;

        len = MIN(len, avail);
        buf = xmalloc(len);
        ret = blk_pread(bs->file, s->h.snapshots_offset, len, buf, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not read the "
                             "snapshot table");
            return false;
        }
        if (qcow2_snapshots_parse(&s->h, buf, len, file_size, &s->snapshots,
                                  &s->snapshots_len, &local)) {
            return true;
        }
        if (len >= avail) {
            error_propagate(errp, local);
            return false;
        }
        error_free(local);
        len *= 4;
    }
}


/* ---- repair of dirty images ------------------------------------------ */

/* Count one reference to every cluster [off, off+bytes) touches. */
static bool count_ref(BDRVQcow2 *s, uint32_t *refs, uint64_t n,
                      uint64_t off, uint64_t bytes, const char *what,
                      Error **errp)
{
    uint64_t last;

    if (bytes == 0) {
        return true;
    }
    last = cluster_of(s, off + bytes - 1);
    if (off + bytes < off || last >= n) {
        error_setg(errp, "qcow2: cannot repair '%s': %s at 0x%llx is past "
                   "the end of the file", s->bs->filename, what,
                   (unsigned long long)off);
        return false;
    }
    for (uint64_t ci = cluster_of(s, off); ci <= last; ci++) {
        if (refs[ci] == UINT32_MAX) {
            error_setg(errp, "qcow2: cannot repair '%s': refcount overflow",
                       s->bs->filename);
            return false;
        }
        refs[ci]++;
    }
    return true;
}

/* Count the references of one L1 table and everything under it.
 * *budget bounds the L2 tables read over the whole repair, so that a
 * hostile image (every L1 entry of every snapshot naming the same L2
 * table) cannot keep the open busy for hours. */
static bool count_l1_tree(BDRVQcow2 *s, uint32_t *refs, uint64_t n,
                          uint64_t l1_off, uint32_t l1_size,
                          uint64_t *budget, Error **errp)
{
    uint64_t cs = s->h.cluster_size;
    CLEANUP_FREE uint64_t *l1 = NULL;
    uint64_t *l2 = (uint64_t *)s->cow_buf;
    int ret;

    if (!count_ref(s, refs, n, l1_off, (uint64_t)l1_size * 8, "L1 table",
                   errp)) {
        return false;
    }
    ret = read_table(s->bs, l1_off, l1_size, &l1);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: cannot read an L1 table");
        return false;
    }
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2_off;

        if (qcow2_l1_decode(&s->h, l1[i], &l2_off) < 0) {
            error_setg(errp, "qcow2: cannot repair: invalid L1 entry");
            return false;
        }
        if (l2_off == 0) {
            continue;
        }
        if (!count_ref(s, refs, n, l2_off, cs, "L2 table", errp)) {
            return false;
        }
        if (*budget == 0) {
            error_setg(errp, "qcow2: cannot repair '%s': too many L2 table "
                       "references", s->bs->filename);
            return false;
        }
        (*budget)--;
        ret = blk_pread(s->bs->file, l2_off, cs, l2, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: cannot read an L2 table");
            return false;
        }
        for (uint64_t j = 0; j < (1ULL << s->h.l2_bits); j++) {
            uint64_t e = be64toh(l2[j * (s->h.l2_entry_size / 8)]);
            Qcow2Mapping m;
            bool ok = true;

            if (qcow2_l2_decode(&s->h, e, &m) < 0) {
                error_setg(errp, "qcow2: cannot repair: invalid L2 entry");
                return false;
            }
            if (m.type == QCOW2_CLUSTER_COMPRESSED) {
                uint64_t start = m.host_offset & ~511ULL;

                ok = count_ref(s, refs, n, start, m.compressed_size +
                               (m.host_offset - start), "compressed data",
                               errp);
            } else if (m.host_offset != 0) {
                ok = count_ref(s, refs, n, m.host_offset, cs, "data cluster",
                               errp);
            }
            if (!ok) {
                return false;
            }
        }
    }
    return true;
}

/* Count the references of the bitmap directory, the bitmap tables and
 * their data clusters (qcow2.txt "Bitmaps extension"). */
static bool count_bitmaps(BDRVQcow2 *s, uint32_t *refs, uint64_t n,
                          Error **errp)
{
    uint64_t size = s->h.bitmap_directory_size;
    CLEANUP_FREE uint8_t *dir = NULL;
    size_t off = 0;
    int ret;

    if (!(s->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) ||
        !s->h.has_bitmaps_ext || s->h.nb_bitmaps == 0) {
        return true;
    }
    if (size > 64 * 1024 * 1024) {
        error_setg(errp, "qcow2: invalid bitmap directory");
        return false;
    }
    if (!count_ref(s, refs, n, s->h.bitmap_directory_offset, size,
                   "bitmap directory", errp)) {
        return false;
    }
    dir = xmalloc(size ? size : 1);
    ret = blk_pread(s->bs->file, s->h.bitmap_directory_offset, size, dir, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the bitmap "
                         "directory");
        return false;
    }
    for (uint32_t i = 0; i < s->h.nb_bitmaps; i++) {
        CLEANUP_FREE uint64_t *table = NULL;
        uint64_t toff;
        uint32_t tsize, extra;
        uint16_t name_size;

        if (size - off < 24) {
            error_setg(errp, "qcow2: bitmap directory truncated");
            return false;
        }
        toff = get_be64(dir + off);
        tsize = get_be32(dir + off + 8);
        name_size = get_be16(dir + off + 18);
        extra = get_be32(dir + off + 20);
        if ((uint64_t)tsize * 8 > QCOW2_MAX_L1_BYTES) {
            error_setg(errp, "qcow2: invalid bitmap table");
            return false;
        }
        if (!count_ref(s, refs, n, toff, (uint64_t)tsize * 8,
                       "bitmap table", errp)) {
            return false;
        }
        ret = read_table(s->bs, toff, tsize, &table);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not read a bitmap "
                             "table");
            return false;
        }
        for (uint32_t j = 0; j < tsize; j++) {
            uint64_t doff = table[j] & 0x00fffffffffffe00ULL;

            if (doff != 0 && !count_ref(s, refs, n, doff, s->h.cluster_size,
                                        "bitmap data", errp)) {
                return false;
            }
        }
        if ((uint64_t)extra + name_size > size - off - 24) {
            error_setg(errp, "qcow2: bitmap directory entry truncated");
            return false;
        }
        off = ALIGN_UP(off + 24 + extra + name_size, (size_t)8);
        if (off > size) {
            off = size;
        }
    }
    return true;
}

/* Rebuild the refcount structure of a dirty image (lazy refcounts left
 * stale by a crash), as 'qemu-img check -r all' does: count every
 * reference from the header, the active and snapshot L1 trees and the
 * snapshot table and the persistent bitmaps; write new refcount blocks
 * and a new refcount table after the end of the file; then switch the
 * header in one sector write, which also clears the dirty bit (and the
 * autoclear bits other than "bitmaps").  A crash
 * before the switch leaves the old (dirty) image as it was. */
static bool repair_refcounts(BDRVQcow2 *s, uint64_t file_size, Error **errp)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t rbe = 1ULL << s->h.rb_bits;
    uint64_t e = DIV_ROUND_UP(file_size, cs);
    uint64_t r = 1, t = 1, entries = 0;
    uint64_t max = qcow2_refcount_max(s->h.refcount_order);
    CLEANUP_FREE uint32_t *refs = NULL;
    CLEANUP_FREE uint64_t *table = NULL;
    uint64_t budget = 4 * e + 1024;
    uint8_t hdr[48];
    int ret;

    log_warn("qcow2 '%s': image is dirty (lazy refcounts); rebuilding the "
             "refcount structure", s->bs->filename);
    for (;;) {
        uint64_t total, r2, t2;

        total = e + r + t;
        entries = DIV_ROUND_UP(total, rbe);
        r2 = entries;
        t2 = DIV_ROUND_UP(entries * 8, cs);
        if (r2 == r && t2 == t) {
            break;
        }
        r = r2;
        t = t2;
    }
    if (t * cs > QCOW2_MAX_REFTABLE_BYTES) {
        error_setg(errp, "qcow2: cannot repair '%s': image too large",
                   s->bs->filename);
        return false;
    }
    refs = xcalloc(e + r + t, sizeof(*refs));
    if (!count_ref(s, refs, e, 0, cs, "header", errp) ||
        !count_l1_tree(s, refs, e, s->h.l1_table_offset, s->h.l1_size,
                       &budget, errp) ||
        !count_ref(s, refs, e, s->h.snapshots_offset,
                   s->h.nb_snapshots ? s->snapshots_len : 0,
                   "snapshot table", errp)) {
        return false;
    }
    for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
        if (!count_l1_tree(s, refs, e, s->snapshots[i].l1_table_offset,
                           s->snapshots[i].l1_size, &budget, errp)) {
            return false;
        }
    }
    if (!count_bitmaps(s, refs, e, errp)) {
        return false;
    }
    for (uint64_t ci = e; ci < e + r + t; ci++) {
        refs[ci] = 1;
    }
    table = xzalloc(t * cs);
    for (uint64_t j = 0; j < r; j++) {
        memset(s->cow_buf, 0, cs);
        for (uint64_t k = 0; k < rbe && j * rbe + k < e + r + t; k++) {
            if (refs[j * rbe + k] > max) {
                error_setg(errp, "qcow2: cannot repair '%s': refcount "
                           "overflow", s->bs->filename);
                return false;
            }
            qcow2_refcount_set(s->cow_buf, s->h.refcount_order, k,
                               refs[j * rbe + k]);
        }
        ret = blk_pwrite(s->bs->file, (e + j) * cs, cs, s->cow_buf, 0);
        if (ret < 0) {
            goto io_error;
        }
        put_be64(&table[j], (e + j) * cs);
    }
    ret = blk_pwrite(s->bs->file, (e + r) * cs, t * cs, table, 0);
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    if (ret < 0) {
        goto io_error;
    }
    /* Header bytes 48..95 in one write. */
    put_be64(hdr, (e + r) * cs);
    put_be32(hdr + 8, t);
    put_be32(hdr + 12, s->h.nb_snapshots);
    put_be64(hdr + 16, s->h.snapshots_offset);
    put_be64(hdr + 24, s->h.incompatible_features & ~QCOW2_INCOMPAT_DIRTY);
    put_be64(hdr + 32, s->h.compatible_features);
    put_be64(hdr + 40, s->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
    ret = blk_pwrite(s->bs->file, 48, sizeof(hdr), hdr, 0);
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    if (ret < 0) {
        goto io_error;
    }
    for (uint64_t j = 0; j < t * cs / 8; j++) {
        table[j] = be64toh(table[j]);
    }
    free(s->reftable);
    s->reftable = TAKE_PTR(table);
    s->reftable_size = t * cs / 8;
    s->h.refcount_table_offset = (e + r) * cs;
    s->h.refcount_table_clusters = t;
    s->h.incompatible_features &= ~(uint64_t)QCOW2_INCOMPAT_DIRTY;
    s->h.autoclear_features &= QCOW2_AUTOCLEAR_BITMAPS;
    s->free_hint = 0;
    return true;

io_error:
    error_setg_errno(errp, -ret, "qcow2: could not repair '%s'",
                     s->bs->filename);
    return false;
}


/* Open the backing file named in the header, unless the options said
 * "backing": null or gave one.  blk_open_backing_file() refuses loops
 * (A -> B -> A) by walking the nodes being opened. */
static bool open_backing(BlockNode *bs, BDRVQcow2 *s, Error **errp)
{
    CLEANUP_FREE char *path = NULL;
    const char *fmt = s->h.has_backing_format ? s->h.backing_format : NULL;

    path = blk_path_combine(bs->file->filename, s->h.backing_file);
    if (fmt != NULL && strcmp(fmt, "raw") != 0 && strcmp(fmt, "qcow2") != 0 &&
        strcmp(fmt, "file") != 0) {
        error_setg(errp, "qcow2: unsupported backing format '%s'", fmt);
        return false;
    }
    {
        /* A hostile name must not make us open a FIFO (which blocks the
         * loop) or a character device. */
        struct stat st;

        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) &&
            !S_ISBLK(st.st_mode)) {
            error_setg(errp, "qcow2: backing file '%s' is not a regular "
                       "file or block device", path);
            return false;
        }
    }
    bs->backing = blk_open_backing_file(bs, s->h.backing_file, fmt, errp);
    return bs->backing != NULL;
}

static void qcow2_close(BlockNode *bs);

/* We do not maintain what autoclear bits other than the bitmaps' promise:
 * clear them before the first write, as qcow2.txt requires. */
static bool qcow2_clear_autoclear(BlockNode *bs, BDRVQcow2 *s, Error **errp)
{
    uint8_t be[8];
    int ret;

    if (!(s->h.autoclear_features & ~(uint64_t)QCOW2_AUTOCLEAR_BITMAPS)) {
        return true;
    }
    put_be64(be, s->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
    ret = blk_pwrite(bs->file, 88, 8, be, 0);
    if (ret == 0) {
        ret = blk_flush(bs->file);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not update the header");
        return false;
    }
    s->h.autoclear_features &= QCOW2_AUTOCLEAR_BITMAPS;
    return true;
}

/* Read-only <-> read-write, for block-commit's base (loop thread; no
 * write in flight).  Going read-only writes the cached metadata out.
 * Read-write is refused where an open read-write would have had more
 * to do (repair a dirty image, mark stored bitmaps in use). */
static bool qcow2_reopen(BlockNode *bs, bool read_only, Error **errp)
{
    BDRVQcow2 *s = bs->opaque;
    int ret;

    if (read_only) {
        qcow2_lock(s);
        ret = flush_locked(s);
        if (ret == 0) {
            s->read_only = true;
        }
        qcow2_unlock(s);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not write the "
                             "metadata of '%s'", bs->filename);
            return false;
        }
        return true;
    }
    if (s->snapshot_view != NULL || s->h.nb_bitmaps > 0 ||
        (s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        error_setg(errp, "Could not reopen '%s' read-write: the image %s",
                   bs->filename, s->snapshot_view != NULL
                   ? "is opened at a snapshot"
                   : s->h.nb_bitmaps > 0 ? "stores dirty bitmaps"
                                         : "needs a repair (dirty)");
        return false;
    }
    if (!qcow2_header_check_features(&s->h, true, true, errp) ||
        !qcow2_clear_autoclear(bs, s, errp)) {
        return false;
    }
    qcow2_lock(s);
    s->read_only = false;
    qcow2_unlock(s);
    return true;
}

static bool qcow2_open_inner(BlockNode *bs, BDRVQcow2 *s,
                             const BlockdevOptionsQcow2 *o, Error **errp);

/* blk_open_image() sets "file" through the schema base. */
_Static_assert(offsetof(BlockdevOptionsQcow2, file) ==
               offsetof(BlockdevOptionsGenericFormat, file),
               "qcow2 options begin with BlockdevOptionsGenericFormat");

/* The children named in the options: "file", and "backing" unless it
 * is absent (then the header's backing file opens later) or null. */
static bool qcow2_open_children(BlockNode *bs, const BlockdevOptionsQcow2 *o,
                                Error **errp)
{
    const BlockdevRefOrNull *b = o->has_backing ? o->backing : NULL;
    BlockdevRef ref;

    if (!blk_open_child(bs, "file", o->file, errp)) {
        return false;
    }
    if (b == NULL || b->type == QTYPE_QNULL) {
        return true;
    }
    ref.type = b->type;
    if (b->type == QTYPE_QSTRING) {
        ref.u.reference = b->u.reference;
    } else {
        ref.u.definition = b->u.definition;
    }
    return blk_open_child(bs, "backing", &ref, errp);
}

static bool qcow2_open(BlockNode *bs, const void *opts, Error **errp)
{
    const BlockdevOptionsQcow2 *o = opts;
    BDRVQcow2 *s = bs->opaque;

    if (!qcow2_open_children(bs, o, errp)) {
        return false;
    }
    if (!qcow2_open_inner(bs, s, o, errp)) {
        qcow2_close(bs);
        return false;
    }
    return true;
}

static bool qcow2_open_inner(BlockNode *bs, BDRVQcow2 *s,
                             const BlockdevOptionsQcow2 *o, Error **errp)
{
    CLEANUP_FREE uint8_t *hbuf = NULL;
    int64_t flen = blk_getlength(bs->file);
    uint64_t hlen, l2_bytes = QCOW2_DEFAULT_L2_CACHE;
    uint64_t rb_bytes = QCOW2_DEFAULT_RB_CACHE;
    bool writable = !bs->read_only;
    int ret;

    pthread_mutex_init(&s->lock, NULL);
    s->bs = bs;
    if (flen < 0) {
        error_setg_errno(errp, (int)-flen, "qcow2: could not get the size "
                         "of '%s'", bs->file->filename);
        return false;
    }
    hlen = MIN((uint64_t)flen, 2u * 1024 * 1024);
    hbuf = xzalloc(2u * 1024 * 1024);
    ret = hlen ? blk_pread(bs->file, 0, hlen, hbuf, 0) : 0;
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the header");
        return false;
    }
    if (!qcow2_header_parse(hbuf, hlen, &s->h, errp) ||
        !qcow2_header_check_features(&s->h, writable, true, errp) ||
        !qcow2_header_check_layout(&s->h, flen, errp)) {
        return false;
    }
    if (o->has_data_file) {
        error_setg(errp, "qcow2: external data files are not supported");
        return false;
    }
    if (o->has_snapshot && o->snapshot != NULL && writable) {
        error_setg(errp, "qcow2: an image opened at a snapshot must be "
                   "read-only");
        return false;
    }
    s->read_only = !writable;
    s->size = s->h.size;
    s->l1_size = s->h.l1_size;
    s->l1_offset = s->h.l1_table_offset;
    s->reftable_size = s->h.refcount_table_clusters << (s->h.cluster_bits - 3);
    s->pass_discard = bs->discard == BLOCKDEV_DISCARD_OPTIONS_UNMAP;

    ret = read_table(bs, s->l1_offset, s->l1_size, &s->l1);
    if (ret == 0) {
        ret = read_table(bs, s->h.refcount_table_offset, s->reftable_size,
                         &s->reftable);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the L1 or "
                         "refcount table");
        return false;
    }
    if (!load_snapshots(bs, s, flen, errp)) {
        return false;
    }
    if (o->has_snapshot && o->snapshot != NULL) {
        const Qcow2Snapshot *sn = qcow2_snapshot_find(s->snapshots,
                                                      s->h.nb_snapshots,
                                                      o->snapshot);
        if (sn == NULL) {
            error_setg(errp, "qcow2: snapshot '%s' not found in '%s'",
                       o->snapshot, bs->filename);
            return false;
        }
        free(s->l1);
        s->l1 = NULL;
        s->l1_size = sn->l1_size;
        s->l1_offset = sn->l1_table_offset;
        s->size = sn->has_disk_size ? sn->disk_size : s->h.size;
        if (qcow2_l1_entries_for_size(&s->h, s->size) > s->l1_size) {
            error_setg(errp, "qcow2: snapshot '%s' L1 table too small",
                       o->snapshot);
            return false;
        }
        ret = read_table(bs, s->l1_offset, s->l1_size, &s->l1);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not read the "
                             "snapshot L1 table");
            return false;
        }
        s->snapshot_view = xstrdup(sn->id);
    }

    if ((o->has_cache_size && o->cache_size < 0) ||
        (o->has_l2_cache_size && o->l2_cache_size < 0) ||
        (o->has_refcount_cache_size && o->refcount_cache_size < 0)) {
        error_setg(errp, "qcow2: cache sizes must not be negative");
        return false;
    }
    if (o->has_cache_size) {
        l2_bytes = MIN((uint64_t)o->cache_size, l2_bytes);
        rb_bytes = MAX((uint64_t)o->cache_size / 4, s->h.cluster_size * 4);
    }
    if (o->has_l2_cache_size) {
        l2_bytes = o->l2_cache_size;
    }
    if (o->has_refcount_cache_size) {
        rb_bytes = o->refcount_cache_size;
    }
    {
        /* No more L2 slots than L2 tables the image can have. */
        uint64_t nl2 = MIN(l2_bytes / s->h.cluster_size,
                           (uint64_t)MAX(s->l1_size, 1u) + 8);
        uint64_t nrb = MIN(rb_bytes / s->h.cluster_size, 65536u);

        s->l2_cache = qcow2_cache_new(s, MAX(nl2, 4u), true);
        s->rb_cache = qcow2_cache_new(s, MAX(nrb, 4u), false);
    }
    /* cow_buf holds one cluster, then one cluster of zeroes. */
    s->cow_buf = xzalloc(2 * s->h.cluster_size);
    s->cbuf = xmalloc(2 * s->h.cluster_size);
    s->dbuf = xmalloc(s->h.cluster_size);

    if (writable && (s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY) &&
        !repair_refcounts(s, flen, errp)) {
        return false;
    }
    if (!qcow2_bitmaps_load(s, flen, errp)) {
        return false;
    }
    if (writable && !qcow2_clear_autoclear(bs, s, errp)) {
        return false;
    }

    if (bs->backing == NULL && s->h.has_backing_file &&
        !(o->has_backing && o->backing != NULL &&
          o->backing->type == QTYPE_QNULL) &&
        !open_backing(bs, s, errp)) {
        return false;
    }
    return true;
}

static void qcow2_close(BlockNode *bs)
{
    BDRVQcow2 *s = bs->opaque;

    if (s == NULL || s->bs == NULL) {
        return;
    }
    qcow2_lock(s);
    if (s->l2_cache != NULL && s->rb_cache != NULL && !s->read_only) {
        int ret;

        qcow2_bitmaps_store(s);
        ret = flush_locked(s);

        if (ret < 0) {
            log_error("qcow2 '%s': could not write metadata on close: %s",
                      bs->filename, strerror(-ret));
        }
    }
    qcow2_unlock(s);
    qcow2_cache_free(s->l2_cache);
    qcow2_cache_free(s->rb_cache);
    free(s->l1);
    for (size_t i = 0; i < s->nb_l1_old; i++) {
        free(s->l1_old[i]);
    }
    free(s->l1_old);
    free(s->reftable);
    free(s->pending);
    qcow2_snapshots_free(s->snapshots, s->h.nb_snapshots);
    free(s->snapshot_view);
    qcow2_bitmaps_free(s);
    free(s->cow_buf);
    free(s->cbuf);
    free(s->dbuf);
    if (s->zstream != NULL) {
        inflateEnd(s->zstream);
        free(s->zstream);
    }
#ifdef HAVE_ZSTD
    ZSTD_freeDCtx(s->zstd_dctx);
#endif
    pthread_mutex_destroy(&s->lock);
    memset(s, 0, sizeof(*s));
}

/* ---- query ------------------------------------------------------------ */

/* Fill the qcow2 parts of ImageInfo as QEMU's query-named-block-nodes
 * does: cluster size, dirty flag, recorded backing file, snapshots and
 * the format-specific block (loop thread).
 *
 * Without s->lock: the loop thread must not wait behind a request that
 * holds it (issue 9).  Everything read here is set at open and changed
 * only on the loop thread, except the incompatible features, which
 * qcow2_corrupt() sets from a worker: read them once, atomically. */
static void qcow2_query_image(BlockNode *bs, ImageInfo *info)
{
    BDRVQcow2 *s = bs->opaque;
    ImageInfoSpecificQCow2 *q;
    uint64_t incompat = __atomic_load_n(&s->h.incompatible_features,
                                        __ATOMIC_RELAXED);

    info->has_cluster_size = true;
    info->cluster_size = (int64_t)s->h.cluster_size;
    info->has_dirty_flag = true;
    info->dirty_flag = incompat & QCOW2_INCOMPAT_DIRTY;
    if (s->h.has_backing_file) {
        info->has_backing_filename = true;
        info->backing_filename = xstrdup(s->h.backing_file);
        info->has_full_backing_filename = true;
        info->full_backing_filename = blk_path_combine(bs->file->filename,
                                                       s->h.backing_file);
        if (s->h.has_backing_format) {
            info->has_backing_filename_format = true;
            info->backing_filename_format = xstrdup(s->h.backing_format);
        }
    }
    if (s->h.nb_snapshots > 0 && s->snapshots != NULL) {
        SnapshotInfoList *l = XNEW(SnapshotInfoList);

        l->v = xcalloc(s->h.nb_snapshots, sizeof(*l->v));
        for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
            const Qcow2Snapshot *sn = &s->snapshots[i];
            SnapshotInfo *si = XNEW(SnapshotInfo);

            si->id = xstrdup(sn->id);
            si->name = xstrdup(sn->name);
            si->vm_state_size = (int64_t)sn->vm_state_size;
            si->date_sec = sn->date_sec;
            si->date_nsec = sn->date_nsec;
            si->vm_clock_sec = (int64_t)(sn->vm_clock_nsec / 1000000000);
            si->vm_clock_nsec = (int64_t)(sn->vm_clock_nsec % 1000000000);
            l->v[l->n++] = si;
        }
        info->has_snapshots = true;
        info->snapshots = l;
    }

    q = XNEW(ImageInfoSpecificQCow2);
    q->compat = xstrdup(s->h.version >= 3 ? "1.1" : "0.10");
    q->refcount_bits = s->h.refcount_bits;
    q->compression_type = s->h.compression_type == 1
                              ? QCOW2_COMPRESSION_TYPE_ZSTD
                              : QCOW2_COMPRESSION_TYPE_ZLIB;
    if (s->h.version >= 3) {
        q->has_lazy_refcounts = true;
        q->lazy_refcounts = s->h.compatible_features &
                            QCOW2_COMPAT_LAZY_REFCOUNTS;
        q->has_corrupt = true;
        q->corrupt = incompat & QCOW2_INCOMPAT_CORRUPT;
        q->has_extended_l2 = true;
        q->extended_l2 = s->h.extended_l2;
        q->bitmaps = qcow2_bitmaps_info(s);
        q->has_bitmaps = q->bitmaps != NULL;
    }
    if (info->has_format_specific) {
        qapi_free_ImageInfoSpecific(info->format_specific);
    }
    info->has_format_specific = true;
    info->format_specific = XNEW(ImageInfoSpecific);
    info->format_specific->type = IMAGE_INFO_SPECIFIC_KIND_QCOW2;
    info->format_specific->u.qcow2.data = q;
}

/* FUA flushes the metadata cache and the file; v3 zero clusters make
 * whole-cluster zeroes fast (v2 has none: NO_FALLBACK fails); discard
 * frees clusters; no prefetch (reads are mapped cluster by cluster);
 * one metadata cache for every user. */
static void qcow2_get_caps(BlockNode *bs, BlockCaps *caps)
{
    BDRVQcow2 *s = bs->opaque;
    BlockCaps file;

    blk_get_caps(bs->file, &file);
    caps->fua = true;
    caps->zero = true;
    caps->fast_zero = s->h.version >= 3;
    caps->discard = true;
    caps->cache = false;
    caps->multi_conn = file.multi_conn;
    /* Data clusters straight from the file's page cache; freed clusters
     * wait for the readers' pins (qcow2_splice_read). */
    caps->splice_read = file.splice_read && !file.splice_pin &&
                        !s->h.extended_l2;
    caps->splice_pin = caps->splice_read;
    if (bs->backing != NULL) {
        BlockCaps b;

        blk_get_caps(bs->backing, &b);
        caps->multi_conn = caps->multi_conn && b.multi_conn;
    }
}

/* Record a new backing file in the header (block-stream, block-commit):
 * name NULL = none.  Loop thread; blocks for one header write and a
 * flush, as QEMU's bdrv_change_backing_file does. */
static bool qcow2_change_backing(BlockNode *bs, const char *name,
                                 const char *fmt, Error **errp)
{
    BDRVQcow2 *s = bs->opaque;
    uint64_t cs = s->h.cluster_size;
    CLEANUP_FREE uint8_t *hdr = NULL;
    Qcow2Header nh;
    int64_t flen;
    size_t end = 0;
    int ret;
    bool ok = false;

    if (s->read_only || s->snapshot_view) {
        error_setg(errp, "qcow2: image is read-only");
        return false;
    }
    qcow2_lock(s);
    flen = blk_getlength(bs->file);
    if (flen < 0) {
        error_setg_errno(errp, (int)-flen, "qcow2: could not get the file "
                         "size");
        goto out;
    }
    hdr = xzalloc(cs);
    ret = blk_pread(bs->file, 0, MIN((uint64_t)flen, cs), hdr, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the header");
        goto out;
    }
    if (!qcow2_header_set_backing(hdr, MIN((uint64_t)flen, cs), name, fmt,
                                  &end, errp)) {
        goto out;
    }
    ret = blk_pwrite(bs->file, 0, end, hdr, 0);
    if (ret == 0) {
        ret = blk_flush(bs->file);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not update the header");
        goto out;
    }
    if (qcow2_header_parse(hdr, end, &nh, NULL)) {
        s->h.backing_file_offset = nh.backing_file_offset;
        s->h.backing_file_size = nh.backing_file_size;
        s->h.has_backing_file = nh.has_backing_file;
        memcpy(s->h.backing_file, nh.backing_file, sizeof(nh.backing_file));
        s->h.has_backing_format = nh.has_backing_format;
        memcpy(s->h.backing_format, nh.backing_format,
               sizeof(nh.backing_format));
    }
    ok = true;
out:
    qcow2_unlock(s);
    return ok;
}

const BlockDriver blk_drv_qcow2 = {
    .format_name = "qcow2",
    .instance_size = sizeof(BDRVQcow2),
    .is_format = true,
    .supports_backing = true,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .get_length = qcow2_get_length,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite,
    .pwrite_zeroes = qcow2_pwrite_zeroes,
    .pdiscard = qcow2_pdiscard,
    .flush = qcow2_flush,
    .block_status = qcow2_block_status,
    .truncate = qcow2_truncate,
    .query_image = qcow2_query_image,
    .get_caps = qcow2_get_caps,
    .bitmap_can_store = qcow2_bitmap_can_store,
    .bitmap_remove_persistent = qcow2_bitmap_remove_persistent,
    .change_backing_file = qcow2_change_backing,
    .splice_read = qcow2_splice_read,
    .reopen = qcow2_reopen,
};
