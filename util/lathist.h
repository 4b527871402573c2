/* lathist.h - a fixed log2 latency histogram in nanoseconds, cheap
 * enough for every request of the data path.
 *
 * Bins (LATHIST_BINS of them) and their boundaries:
 *
 *   bin 0        [0, 2^10) ns            (under ~1 us)
 *   bin k        [2^(9+k), 2^(10+k)) ns  (1 <= k <= LATHIST_BINS - 2)
 *   last bin     [2^(8+LATHIST_BINS), +inf)
 *
 * i.e. the boundaries are 2^10, 2^11, ..., 2^(8+LATHIST_BINS) ns, in
 * the shape of QEMU's BlockLatencyHistogramInfo (bins = boundaries + 1,
 * interval [b(i-1), b(i))).  Recording is one relaxed atomic add on a
 * bin and one on the sum: no lock, any thread.  Readers sum nothing;
 * they load each field (a reader racing a writer may see the bin before
 * the sum: the figures are monitoring, not accounting).
 */
#ifndef BLOCKD_UTIL_LATHIST_H
#define BLOCKD_UTIL_LATHIST_H

#include <stdint.h>

#define LATHIST_BINS 28          /* last finite boundary 2^36 ns ~ 69 s */
#define LATHIST_MIN_SHIFT 10     /* first boundary 2^10 ns */

typedef struct LatHist {
    uint64_t bins[LATHIST_BINS]; /* requests per bin */
    uint64_t sum_ns;             /* total of the recorded latencies */
} LatHist;

/* The bin a latency of ns nanoseconds falls in. */
static inline unsigned lathist_bin(uint64_t ns)
{
    unsigned b;

    if (ns < (1ull << LATHIST_MIN_SHIFT)) {
        return 0;
    }
    b = (unsigned)(63 - __builtin_clzll(ns)) - (LATHIST_MIN_SHIFT - 1);
    return b < LATHIST_BINS ? b : LATHIST_BINS - 1;
}

/* Upper boundary of bin i in ns (0 <= i < LATHIST_BINS - 1); the last
 * bin has none (+inf). */
static inline uint64_t lathist_boundary(unsigned i)
{
    return 1ull << (LATHIST_MIN_SHIFT + i);
}

/* Count one request that took ns nanoseconds.  Any thread. */
static inline void lathist_record(LatHist *h, uint64_t ns)
{
    __atomic_fetch_add(&h->bins[lathist_bin(ns)], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum_ns, ns, __ATOMIC_RELAXED);
}

/* A consistent-enough copy of h for a query (each field loaded once);
 * *count gets the sum of the bins.  Any thread. */
static inline void lathist_read(const LatHist *h, LatHist *out,
                                uint64_t *count)
{
    uint64_t n = 0;

    for (unsigned i = 0; i < LATHIST_BINS; i++) {
        out->bins[i] = __atomic_load_n(&h->bins[i], __ATOMIC_RELAXED);
        n += out->bins[i];
    }
    out->sum_ns = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);
    if (count != NULL) {
        *count = n;
    }
}

#endif
