/* test-options.c - blockd's command line, --chardev specs and the small
 * parsers in util/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cunit-main.h"
#include "daemon/daemon.h"
#include "daemon/options.h"
#include "qmp/monitor.h"
#include "util/cleanup.h"
#include "util/util.h"
#include "util/vector.h"

static bool parse(Options *o, Error **errp, int argc, ...)
{
    char *argv[32];
    va_list ap;

    va_start(ap, argc);
    argv[0] = (char *)"blockd";
    for (int i = 1; i < argc; i++) {
        argv[i] = va_arg(ap, char *);
    }
    va_end(ap);
    argv[argc] = NULL;
    return options_parse(o, argc, argv, errp);
}

static void test_order_is_kept(void)
{
    Options o;
    Error *err = NULL;

    CU_ASSERT_TRUE_FATAL(parse(&o, &err, 9, "--blockdev", "a",
                               "--export", "b", "--blockdev", "c",
                               "--pidfile", "/p"));
    CU_ASSERT_EQUAL(o.nactions, 3);
    CU_ASSERT_EQUAL(o.actions[0].kind, OPT_BLOCKDEV);
    CU_ASSERT_STRING_EQUAL(o.actions[0].value, "a");
    CU_ASSERT_EQUAL(o.actions[1].kind, OPT_EXPORT);
    CU_ASSERT_EQUAL(o.actions[2].kind, OPT_BLOCKDEV);
    CU_ASSERT_STRING_EQUAL(o.actions[2].value, "c");
    CU_ASSERT_STRING_EQUAL(o.pidfile, "/p");
    CU_ASSERT_FALSE(o.defaults);
    CU_ASSERT_STRING_EQUAL(option_command(OPT_EXPORT), "block-export-add");
    CU_ASSERT_STRING_EQUAL(option_command(OPT_NBD_SERVER),
                           "nbd-server-start");
    CU_ASSERT_PTR_NULL(option_command(OPT_CHARDEV));
    options_free(&o);
}

static void test_no_options_means_defaults(void)
{
    Options o;

    CU_ASSERT_TRUE_FATAL(parse(&o, NULL, 1));
    CU_ASSERT_TRUE(o.defaults);
    options_free(&o);
    CU_ASSERT_TRUE_FATAL(parse(&o, NULL, 2, "-v"));
    CU_ASSERT_FALSE(o.defaults);
    CU_ASSERT_TRUE(o.verbose);
    options_free(&o);
}

static void test_bad_options(void)
{
    Options o;
    Error *err = NULL;

    CU_ASSERT_FALSE(parse(&o, &err, 2, "--nope"));
    CU_ASSERT_STRING_EQUAL(err->msg, "unrecognized option '--nope'");
    error_free(err);
    err = NULL;
    options_free(&o);

    CU_ASSERT_FALSE(parse(&o, &err, 2, "--export"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "requires an argument"));
    error_free(err);
    err = NULL;
    options_free(&o);

    CU_ASSERT_FALSE(parse(&o, &err, 3, "--daemonize", "extra"));
    CU_ASSERT_STRING_EQUAL(err->msg, "Unexpected argument: extra");
    error_free(err);
    options_free(&o);
}

/* Each option keeps its own string: --log-format once freed the
 * --metrics address given before it. */
static void test_log_format_keeps_metrics(void)
{
    Options o;

    CU_ASSERT_TRUE_FATAL(parse(&o, NULL, 5, "--metrics", "unix:/m.sock",
                               "--log-format", "json"));
    CU_ASSERT_STRING_EQUAL(o.metrics, "unix:/m.sock");
    CU_ASSERT_STRING_EQUAL(o.log_format, "json");
    options_free(&o);
}

/* --job-nice N: 0..19, default DAEMON_JOB_NICE; anything else fails
 * naming the option and the range. */
static void test_job_nice(void)
{
    static const struct {
        const char *arg;
        int nice;
    } good[] = { { "0", 0 }, { "10", 10 }, { "19", 19 }, { "07", 7 } };
    static const char *const bad[] = {
        "", "abc", "-1", "20", "5x", "99999999999999999999999",
        "18446744073709551616", "+5", " 5", "5 ", "0x5", "1e1", "-0",
    };
    Options o;
    Error *err = NULL;

    CU_ASSERT_TRUE_FATAL(parse(&o, NULL, 2, "-v"));
    CU_ASSERT_EQUAL(o.job_nice, DAEMON_JOB_NICE);
    CU_ASSERT_EQUAL(o.job_nice, 10);
    options_free(&o);
    CU_ASSERT_TRUE_FATAL(parse(&o, NULL, 1));
    CU_ASSERT_EQUAL(o.job_nice, DAEMON_JOB_NICE);
    options_free(&o);

    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        CU_ASSERT_TRUE_FATAL(parse(&o, &err, 3, "--job-nice", good[i].arg));
        CU_ASSERT_EQUAL(o.job_nice, good[i].nice);
        CU_ASSERT_FALSE(o.defaults);
        options_free(&o);
    }
    /* The last one given wins, as for --pidfile. */
    CU_ASSERT_TRUE_FATAL(parse(&o, &err, 5, "--job-nice", "3",
                               "--job-nice", "0"));
    CU_ASSERT_EQUAL(o.job_nice, 0);
    options_free(&o);

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        char want[128];

        snprintf(want, sizeof(want),
                 "--job-nice: '%s' is not an integer from 0 to 19", bad[i]);
        CU_ASSERT_FALSE(parse(&o, &err, 3, "--job-nice", bad[i]));
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        CU_ASSERT_STRING_EQUAL(err->msg, want);
        error_free(err);
        err = NULL;
        options_free(&o);
    }

    CU_ASSERT_FALSE(parse(&o, &err, 2, "--job-nice"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "requires an argument"));
    error_free(err);
    options_free(&o);
}

static void test_chardev_specs(void)
{
    Error *err = NULL;
    ChardevSpec *c;

    c = chardev_spec_parse("socket,id=m,path=/run/x.sock,server=on,wait=off",
                           &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(c->id, "m");
    CU_ASSERT_STRING_EQUAL(c->path, "/run/x.sock");
    CU_ASSERT_TRUE(c->server);
    CU_ASSERT_FALSE(c->wait);
    chardev_spec_free(c);

    c = chardev_spec_parse("socket,id=t,host=127.0.0.1,port=4444,server=off",
                           &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(c->host, "127.0.0.1");
    CU_ASSERT_STRING_EQUAL(c->port, "4444");
    CU_ASSERT_FALSE(c->server);
    chardev_spec_free(c);

    /* fd=NAME: a socket passed by socket activation (or a number). */
    c = chardev_spec_parse("socket,id=q,fd=qmp,server=on", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(c->fd, "qmp");
    CU_ASSERT_PTR_NULL(c->path);
    chardev_spec_free(c);

    static const char *const bad[] = {
        "socket,id=a,fd=qmp", "socket,id=a,fd=qmp,path=/x,server=on",
        "socket,id=a,fd=3,port=1,server=on",
        "", "socket", "socket,path=/x", "file,id=a,path=/x",
        "socket,id=a", "socket,id=a,path=/x,host=h,port=1",
        "socket,id=a,path=/x,server=maybe", "socket,id=a,path=/x,junk",
        "socket,id=a,host=h", "id=a,socket,path=/x",
        "socket,id=a,path=/" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        c = chardev_spec_parse(bad[i], &err);
        CU_ASSERT_PTR_NULL(c);
        CU_ASSERT_PTR_NOT_NULL(err);
        error_free(err);
        err = NULL;
    }

    c = chardev_spec_parse_qmp("tcp:[::1]:4444", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(c->host, "::1");
    CU_ASSERT_STRING_EQUAL(c->port, "4444");
    chardev_spec_free(c);
    c = chardev_spec_parse_qmp("unix:/a/b", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(c->path, "/a/b");
    CU_ASSERT_TRUE(c->server);
    chardev_spec_free(c);
    static const char *const badq[] = { "unix:", "tcp:host", "tcp:h:",
                                        "udp:1:2", "/path" };
    for (size_t i = 0; i < ARRAY_SIZE(badq); i++) {
        CU_ASSERT_PTR_NULL(chardev_spec_parse_qmp(badq[i], &err));
        CU_ASSERT_PTR_NOT_NULL(err);
        error_free(err);
        err = NULL;
    }
}

static void test_parse_size(void)
{
    uint64_t v;

    CU_ASSERT_TRUE(parse_size("0", &v) && v == 0);
    CU_ASSERT_TRUE(parse_size("512", &v) && v == 512);
    CU_ASSERT_TRUE(parse_size("1k", &v) && v == 1024);
    CU_ASSERT_TRUE(parse_size("64M", &v) && v == 64ULL << 20);
    CU_ASSERT_TRUE(parse_size("1.5G", &v) && v == 3ULL << 29);
    CU_ASSERT_TRUE(parse_size("2T", &v) && v == 2ULL << 40);
    CU_ASSERT_TRUE(parse_size("15E", &v) && v == 15ULL << 60);
    CU_ASSERT_TRUE(parse_size("18446744073709551615", &v) &&
                   v == UINT64_MAX);
    static const char *const bad[] = {
        "", "-1", "+1", " 1", "1 ", "1x", "1KB", "16E", "1.5", "1.G",
        "18446744073709551616", "99999999999999999999k", "0x", "1.5B",
        "k",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CU_ASSERT_FALSE(parse_size(bad[i], &v));
    }
}

static void test_parse_ints_and_bools(void)
{
    uint64_t u;
    int64_t i;
    bool b;

    CU_ASSERT_TRUE(parse_uint64("0x10", &u) && u == 16);
    CU_ASSERT_FALSE(parse_uint64("-1", &u));
    CU_ASSERT_FALSE(parse_uint64("1e3", &u));
    CU_ASSERT_FALSE(parse_uint64("18446744073709551616", &u));
    CU_ASSERT_TRUE(parse_int64("-9223372036854775808", &i) &&
                   i == INT64_MIN);
    CU_ASSERT_FALSE(parse_int64("9223372036854775808", &i));
    CU_ASSERT_FALSE(parse_int64("", &i));
    CU_ASSERT_TRUE(parse_bool("on", &b) && b);
    CU_ASSERT_TRUE(parse_bool("no", &b) && !b);
    CU_ASSERT_FALSE(parse_bool("On", &b));
    CU_ASSERT_FALSE(parse_bool("", &b));
}

static void test_error_idiom(void)
{
    Error *err = NULL;

    error_setg(&err, "first %d", 1);
    error_setg(&err, "second");           /* the first error wins */
    CU_ASSERT_STRING_EQUAL(err->msg, "first 1");
    error_prepend(&err, "Could not open '%s': ", "x");
    CU_ASSERT_STRING_EQUAL(err->msg, "Could not open 'x': first 1");
    CU_ASSERT_STRING_EQUAL(error_class_name(err->cls), "GenericError");
    error_free(err);
    err = NULL;

    error_setg_errno(&err, ENOENT, "Could not open '%s'", "y");
    CU_ASSERT_STRING_EQUAL(err->msg,
                           "Could not open 'y': No such file or directory");
    error_free(err);
    err = NULL;

    error_set(&err, ERROR_CLASS_COMMAND_NOT_FOUND, "nope");
    CU_ASSERT_STRING_EQUAL(error_class_name(err->cls), "CommandNotFound");
    Error *other = NULL;
    error_propagate(&other, err);
    CU_ASSERT_PTR_EQUAL(other, err);
    error_free(other);

    error_setg(NULL, "nobody listens");   /* must not crash */
    error_propagate(NULL, NULL);
    CU_ASSERT_STRING_EQUAL(error_class_name((ErrorClass)99), "GenericError");
}

DEFINE_VECTOR_TYPE(IntVec, int);

static void test_vector_and_cleanup(void)
{
    IntVec v = { 0 };

    for (int i = 0; i < 1000; i++) {
        IntVec_append(&v, i);
    }
    CU_ASSERT_EQUAL(v.len, 1000);
    IntVec_remove(&v, 0);
    CU_ASSERT_EQUAL(v.ptr[0], 1);
    CU_ASSERT_EQUAL(v.len, 999);
    IntVec_reset(&v);
    CU_ASSERT_PTR_NULL(v.ptr);

    char *taken;
    {
        CLEANUP_FREE char *s = xstrdup("kept");
        taken = TAKE_PTR(s);
        CU_ASSERT_PTR_NULL(s);
    }
    CU_ASSERT_STRING_EQUAL(taken, "kept");
    free(taken);
}

static CU_TestInfo option_tests[] = {
    { "order_is_kept", test_order_is_kept },
    { "no_options_means_defaults", test_no_options_means_defaults },
    { "bad_options", test_bad_options },
    { "log_format_keeps_metrics", test_log_format_keeps_metrics },
    { "job_nice", test_job_nice },
    { "chardev_specs", test_chardev_specs },
    CU_TEST_INFO_NULL,
};

static CU_TestInfo util_tests[] = {
    { "parse_size", test_parse_size },
    { "parse_ints_and_bools", test_parse_ints_and_bools },
    { "error_idiom", test_error_idiom },
    { "vector_and_cleanup", test_vector_and_cleanup },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "options", .pTests = option_tests },
    { .pName = "util", .pTests = util_tests },
    CU_SUITE_INFO_NULL,
};
