/* test-lathist.c - util/lathist.h: the log2 latency histogram. */
#include "cunit-main.h"
#include "util/lathist.h"

/* Every latency falls in the bin whose interval holds it:
 * [boundary(b-1), boundary(b)), the first from 0, the last to +inf. */
static void test_bins_match_boundaries(void)
{
    static const uint64_t samples[] = {
        0, 1, 1023, 1024, 1025, 2047, 2048, 4095, 4096, 1000000,
        (1ull << 35) - 1, 1ull << 35, (1ull << 36) - 1, 1ull << 36,
        1ull << 40, UINT64_MAX,
    };

    for (unsigned i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        uint64_t ns = samples[i];
        unsigned b = lathist_bin(ns);

        CU_ASSERT_TRUE_FATAL(b < LATHIST_BINS);
        if (b > 0) {
            CU_ASSERT_TRUE(ns >= lathist_boundary(b - 1));
        }
        if (b < LATHIST_BINS - 1) {
            CU_ASSERT_TRUE(ns < lathist_boundary(b));
        }
    }
    CU_ASSERT_EQUAL(lathist_bin(1023), 0);
    CU_ASSERT_EQUAL(lathist_bin(1024), 1);
    CU_ASSERT_EQUAL(lathist_bin(UINT64_MAX), LATHIST_BINS - 1);
    CU_ASSERT_EQUAL(lathist_boundary(0), 1024);
    CU_ASSERT_EQUAL(lathist_boundary(LATHIST_BINS - 2), 1ull << 36);
}

static void test_record_and_read(void)
{
    LatHist h = { 0 }, copy;
    uint64_t n = 0;

    lathist_record(&h, 10);
    lathist_record(&h, 1500);
    lathist_record(&h, 1600);
    lathist_record(&h, 1ull << 50);
    lathist_read(&h, &copy, &n);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_EQUAL(copy.bins[0], 1);
    CU_ASSERT_EQUAL(copy.bins[1], 2);
    CU_ASSERT_EQUAL(copy.bins[LATHIST_BINS - 1], 1);
    CU_ASSERT_EQUAL(copy.sum_ns, 10 + 1500 + 1600 + (1ull << 50));
}

static CU_TestInfo lathist_tests[] = {
    { "bins_match_boundaries", test_bins_match_boundaries },
    { "record_and_read", test_record_and_read },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "lathist", .pTests = lathist_tests },
    CU_SUITE_INFO_NULL,
};
