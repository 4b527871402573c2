/* test-keyval.c - util/keyval.c: QEMU's key=value syntax to JSON. */
#include <stdlib.h>
#include <string.h>

#include "cunit-main.h"
#include "util/cleanup.h"
#include "util/keyval.h"
#include "util/util.h"

/* Parse s and compare with the JSON text want. */
static void check_ok(const char *s, const char *implied, const char *want)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_JSON json_object *got = keyval_parse(s, implied, &err);
    CLEANUP_JSON json_object *exp = json_tokener_parse(want);

    CU_ASSERT_PTR_NOT_NULL_FATAL(exp);
    if (!got) {
        fprintf(stderr, "\nkeyval_parse(\"%s\"): %s\n", s, err->msg);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_PTR_NULL(err);
    if (!json_object_equal(got, exp)) {
        fprintf(stderr, "\nkeyval_parse(\"%s\") = %s, want %s\n", s,
                json_object_to_json_string(got), want);
    }
    CU_ASSERT_TRUE(json_object_equal(got, exp));
}

/* Parse s, expect a failure with exactly message msg. */
static void check_err(const char *s, const char *implied, const char *msg)
{
    CLEANUP_ERROR Error *err = NULL;
    json_object *got = keyval_parse(s, implied, &err);

    CU_ASSERT_PTR_NULL(got);
    json_object_put(got);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (strcmp(err->msg, msg) != 0) {
        fprintf(stderr, "\nkeyval_parse(\"%s\"): '%s', want '%s'\n", s,
                err->msg, msg);
    }
    CU_ASSERT_STRING_EQUAL(err->msg, msg);
}

static void test_simple(void)
{
    check_ok("", NULL, "{}");
    check_ok(NULL, NULL, "{}");
    check_ok("a=1", NULL, "{\"a\": \"1\"}");
    check_ok("a=1,b=two,c=", NULL, "{\"a\": \"1\", \"b\": \"two\", \"c\": \"\"}");
    check_ok("node-name=n0,read-only=on", NULL,
             "{\"node-name\": \"n0\", \"read-only\": \"on\"}");
    /* A value may contain '=' and '.' */
    check_ok("a=x=y.z", NULL, "{\"a\": \"x=y.z\"}");
}

static void test_escaped_commas(void)
{
    check_ok("filename=a,,b.qcow2", NULL, "{\"filename\": \"a,b.qcow2\"}");
    check_ok("a=,,,b=1", NULL, "{\"a\": \",\", \"b\": \"1\"}");
    check_ok("a=x,,,,y", NULL, "{\"a\": \"x,,y\"}");
    check_ok("a=1,,", NULL, "{\"a\": \"1,\"}");
}

static void test_trailing_comma(void)
{
    check_ok("a=1,", NULL, "{\"a\": \"1\"}");
    check_ok("a=1,,,", NULL, "{\"a\": \"1,\"}");
    check_err("a=1,,,=2", NULL, "Invalid parameter ''");
    check_err(",a=1", NULL, "Invalid parameter ''");
}

static void test_nesting(void)
{
    check_ok("driver=qcow2,file.driver=file,file.filename=/x.img", NULL,
             "{\"driver\": \"qcow2\", \"file\": {\"driver\": \"file\","
             " \"filename\": \"/x.img\"}}");
    check_ok("a.b.c=1,a.b.d=2,a.e=3", NULL,
             "{\"a\": {\"b\": {\"c\": \"1\", \"d\": \"2\"}, \"e\": \"3\"}}");
    check_ok("addr.type=unix,addr.path=/tmp/s", NULL,
             "{\"addr\": {\"type\": \"unix\", \"path\": \"/tmp/s\"}}");
}

static void test_arrays(void)
{
    check_ok("bitmaps.0=a,bitmaps.1=b", NULL,
             "{\"bitmaps\": [\"a\", \"b\"]}");
    /* Order of the keys does not matter. */
    check_ok("bitmaps.1=b,bitmaps.0=a", NULL,
             "{\"bitmaps\": [\"a\", \"b\"]}");
    check_ok("rules.0.match=x,rules.0.policy=allow,rules.1.match=y", NULL,
             "{\"rules\": [{\"match\": \"x\", \"policy\": \"allow\"},"
             " {\"match\": \"y\"}]}");
    check_ok("m.0.0=a,m.0.1=b,m.1.0=c", NULL,
             "{\"m\": [[\"a\", \"b\"], [\"c\"]]}");
    /* An index with a leading zero is a plain key. */
    check_ok("a.01=x", NULL, "{\"a\": {\"01\": \"x\"}}");
    /* The top level is always an object. */
    check_ok("0=a", NULL, "{\"0\": \"a\"}");
    check_err("b.0=a,b.2=c", NULL, "Parameter 'b.1' missing");
    check_err("b.1=a", NULL, "Parameter 'b.0' missing");
    check_err("b.0=a,b.x=c", NULL, "Parameters 'b.*' used inconsistently");
    check_err("x.b.0=a,x.b.y=c", NULL,
              "Parameters 'x.b.*' used inconsistently");
}

static void test_duplicates(void)
{
    check_err("a=1,a=2", NULL, "Parameter 'a' is duplicated");
    check_err("a.b=1,a.b=2", NULL, "Parameter 'a.b' is duplicated");
    check_err("a=1,a.b=2", NULL, "Parameters 'a.*' used inconsistently");
    check_err("a.b=2,a=1", NULL, "Parameters 'a.*' used inconsistently");
    check_err("a.b.c=1,a.b=2", NULL,
              "Parameters 'a.b.*' used inconsistently");
}

static void test_bad_keys(void)
{
    check_err("=1", NULL, "Invalid parameter ''");
    check_err("a..b=1", NULL, "Invalid parameter 'a..b'");
    check_err(".a=1", NULL, "Invalid parameter '.a'");
    check_err("a.=1", NULL, "Invalid parameter 'a.'");
    check_err("a b=1", NULL, "Invalid parameter 'a b'");
    check_err("a!=1", NULL, "Invalid parameter 'a!'");
    check_err("abc", NULL, "No implicit parameter name for value 'abc'");
    check_err("a=1,b", NULL, "No implicit parameter name for value 'b'");
    check_err("a=1,b", "file", "Expected '=' after parameter 'b'");
}

static void test_implied(void)
{
    check_ok("disk.img", "filename", "{\"filename\": \"disk.img\"}");
    check_ok("a,,b.img,format=raw", "filename",
             "{\"filename\": \"a,b.img\", \"format\": \"raw\"}");
    check_ok("x,y=1", "file.filename",
             "{\"file\": {\"filename\": \"x\"}, \"y\": \"1\"}");
    /* With an explicit key the implied one is not used. */
    check_ok("filename=a", "filename", "{\"filename\": \"a\"}");
    check_err("a,filename=b", "filename",
              "Parameter 'filename' is duplicated");
}

static void test_long(void)
{
    /* A long value, many keys, a too long key, too deep nesting. */
    size_t n = 1 << 20;
    CLEANUP_FREE char *s = xmalloc(n + 16);
    CLEANUP_ERROR Error *err = NULL;
    json_object *o;
    json_object *v;
    char key[200];

    strcpy(s, "a=");
    memset(s + 2, 'x', n);
    s[n + 2] = '\0';
    o = keyval_parse(s, NULL, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_TRUE(json_object_object_get_ex(o, "a", &v));
    CU_ASSERT_EQUAL(json_object_get_string_len(v), (int)n);
    json_object_put(o);

    /* 5000 array elements */
    {
        size_t len = 0;
        char *p = s;

        for (int i = 0; i < 5000; i++) {
            len += sprintf(p + len, "%sl.%d=%d", i ? "," : "", i, i);
        }
        o = keyval_parse(s, NULL, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(o);
        CU_ASSERT_TRUE(json_object_object_get_ex(o, "l", &v));
        CU_ASSERT_TRUE(json_object_is_type(v, json_type_array));
        CU_ASSERT_EQUAL(json_object_array_length(v), 5000);
        CU_ASSERT_STRING_EQUAL(
            json_object_get_string(json_object_array_get_idx(v, 4999)),
            "4999");
        json_object_put(o);
    }

    memset(key, 'k', 128);
    strcpy(key + 128, "=1");
    o = keyval_parse(key, NULL, &err);
    CU_ASSERT_PTR_NULL(o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_NSTRING_EQUAL(err->msg, "Parameter 'kkkk", 15);
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "is too long"));
    error_free(err);
    err = NULL;
    key[127] = '\0';
    strcat(key, "=1");
    o = keyval_parse(key, NULL, &err);
    CU_ASSERT_PTR_NOT_NULL(o);
    json_object_put(o);

    /* a.a.a....=1 with 100000 levels is refused, not recursed into */
    {
        size_t len = 0;

        for (int i = 0; i < 100000; i++) {
            s[len++] = 'a';
            s[len++] = '.';
        }
        strcpy(s + len, "a=1");
        o = keyval_parse(s, NULL, &err);
        CU_ASSERT_PTR_NULL(o);
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "nested too deeply"));
    }
}

static CU_TestInfo keyval_tests[] = {
    { "simple", test_simple },
    { "escaped_commas", test_escaped_commas },
    { "trailing_comma", test_trailing_comma },
    { "nesting", test_nesting },
    { "arrays", test_arrays },
    { "duplicates", test_duplicates },
    { "bad_keys", test_bad_keys },
    { "implied", test_implied },
    { "long", test_long },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "keyval", .pTests = keyval_tests },
    CU_SUITE_INFO_NULL,
};
