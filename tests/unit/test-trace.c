/* test-trace.c - util/trace.c: named trace points, glob patterns,
 * events files and the trace output file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit-main.h"
#include "util/cleanup.h"
#include "util/trace.h"

static void all_off(void)
{
    trace_enable_pattern("-*");
    CU_ASSERT_FALSE(trace_any_enabled());
}

static void test_names(void)
{
    CU_ASSERT_STRING_EQUAL(trace_event_name(TRACE_nbd_negotiate_begin),
                           "nbd_negotiate_begin");
    CU_ASSERT_STRING_EQUAL(trace_event_name(TRACE_blk_aio_complete),
                           "blk_aio_complete");
}

static void test_patterns(void)
{
    all_off();
    /* A name, a glob, '-' to turn off, a glob matching nothing. */
    CU_ASSERT_EQUAL(trace_enable_pattern("nbd_trip"), 1);
    CU_ASSERT_TRUE(trace_event_state[TRACE_nbd_trip]);
    CU_ASSERT_TRUE(trace_enable_pattern("blk_co_*") >= 7);
    CU_ASSERT_TRUE(trace_event_state[TRACE_blk_co_preadv]);
    CU_ASSERT_TRUE(trace_event_state[TRACE_blk_co_flush]);
    CU_ASSERT_FALSE(trace_event_state[TRACE_blk_aio_complete]);
    CU_ASSERT_EQUAL(trace_enable_pattern("-blk_co_p*"), 4);
    CU_ASSERT_FALSE(trace_event_state[TRACE_blk_co_preadv]);
    CU_ASSERT_TRUE(trace_event_state[TRACE_blk_co_flush]);
    CU_ASSERT_EQUAL(trace_enable_pattern("no_such_*"), 0);
    CU_ASSERT_EQUAL(trace_enable_pattern("no_such_point"), 0);
    CU_ASSERT_EQUAL(trace_enable_pattern(""), 0);
    CU_ASSERT_TRUE(trace_pattern_is_glob("a*"));
    CU_ASSERT_TRUE(trace_pattern_is_glob("a?"));
    CU_ASSERT_TRUE(trace_pattern_is_glob("[ab]"));
    CU_ASSERT_FALSE(trace_pattern_is_glob("nbd_trip"));
    all_off();
}

static void note_unknown(const char *name, void *opaque)
{
    char *seen = opaque;

    strcat(seen, name);
    strcat(seen, ";");
}

static void test_events_file(void)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE char *path = NULL;
    char seen[256] = "";
    FILE *f;

    all_off();
    CU_ASSERT_TRUE(asprintf(&path, "%s/events", unit_tmpdir()) > 0);
    f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("# comment\n\nnbd_negotiate_*\n-nbd_negotiate_send_rep_*\n"
          "missing_point\n-gone_too\nno_glob_*\nnbd_trip", f);
    fclose(f);
    CU_ASSERT_TRUE(trace_enable_events_file(path, note_unknown, seen,
                                            &err));
    CU_ASSERT_PTR_NULL(err);
    CU_ASSERT_STRING_EQUAL(seen, "missing_point;gone_too;");
    CU_ASSERT_TRUE(trace_event_state[TRACE_nbd_negotiate_begin]);
    CU_ASSERT_FALSE(trace_event_state[TRACE_nbd_negotiate_send_rep_len]);
    CU_ASSERT_TRUE(trace_event_state[TRACE_nbd_trip]);
    all_off();

    CU_ASSERT_FALSE(trace_enable_events_file("/nonexistent/events", NULL,
                                             NULL, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "/nonexistent/events: No such file or directory");
}

static void test_output_file(void)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE char *path = NULL;
    char buf[256] = "";
    FILE *f;

    CU_ASSERT_FALSE(trace_set_output("/nonexistent/dir/trace", &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "Error opening logfile /nonexistent/dir/trace: "
                           "No such file or directory");
    CU_ASSERT_TRUE(asprintf(&path, "%s/trace", unit_tmpdir()) > 0);
    CU_ASSERT_TRUE_FATAL(trace_set_output(path, NULL));
    all_off();
    TRACE(nbd_trip, "not printed %d", 1);
    trace_enable_pattern("nbd_trip");
    TRACE(nbd_trip, "reading request %d", 2);
    all_off();
    f = fopen(path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fread(buf, 1, sizeof(buf) - 1, f),
                    strlen("nbd_trip reading request 2\n"));
    fclose(f);
    CU_ASSERT_STRING_EQUAL(buf, "nbd_trip reading request 2\n");
}

static CU_TestInfo trace_tests[] = {
    { "names", test_names },
    { "patterns", test_patterns },
    { "events_file", test_events_file },
    { "output_file", test_output_file },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "trace", .pTests = trace_tests },
    CU_SUITE_INFO_NULL,
};
