/* test-schema.c - the parsers, printers and tables generated from
 * the schema JSON files by schema/gen.py (contract: docs/schema.md). */
#include <stdlib.h>
#include <string.h>

#include "cunit-main.h"
#include "qapi-commands.h"
#include "qapi-types.h"
#include "util/cleanup.h"
#include "util/json.h"
#include "util/keyval.h"
#include "util/util.h"

static json_object *js(const char *text)
{
    json_object *o = json_tokener_parse(text);

    if (!o && strcmp(text, "null") != 0) {
        fprintf(stderr, "\nbad test JSON: %s\n", text);
        abort();
    }
    return o;
}

/* Parse text as BlockdevOptions; NULL and *msg set on failure. */
static BlockdevOptions *opts(const char *text, unsigned flags, char **msg)
{
    CLEANUP_JSON json_object *o = js(text);
    CLEANUP_ERROR Error *err = NULL;
    BlockdevOptions *v = NULL;

    *msg = NULL;
    if (!qapi_parse_BlockdevOptions(o, NULL, flags, &v, &err)) {
        CU_ASSERT_PTR_NULL(v);
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        *msg = xstrdup(err->msg);
        return NULL;
    }
    CU_ASSERT_PTR_NULL(err);
    return v;
}

/* Expect BlockdevOptions text to fail with exactly want. */
static void opts_err(const char *text, unsigned flags, const char *want)
{
    CLEANUP_FREE char *msg = NULL;
    BlockdevOptions *v = opts(text, flags, &msg);

    CU_ASSERT_PTR_NULL(v);
    qapi_free_BlockdevOptions(v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    if (strcmp(msg, want) != 0) {
        fprintf(stderr, "\n%s: '%s', want '%s'\n", text, msg, want);
    }
    CU_ASSERT_STRING_EQUAL(msg, want);
}

/* Same through keyval_parse + QAPI_PARSE_KEYVAL. */
static BlockdevOptions *kv_opts(const char *kv, char **msg)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_JSON json_object *o = keyval_parse(kv, NULL, &err);
    BlockdevOptions *v = NULL;

    *msg = NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    if (!qapi_parse_BlockdevOptions(o, NULL, QAPI_PARSE_KEYVAL, &v, &err)) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        *msg = xstrdup(err->msg);
        return NULL;
    }
    return v;
}

static void kv_err(const char *kv, const char *want)
{
    CLEANUP_FREE char *msg = NULL;
    BlockdevOptions *v = kv_opts(kv, &msg);

    CU_ASSERT_PTR_NULL(v);
    qapi_free_BlockdevOptions(v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    if (strcmp(msg, want) != 0) {
        fprintf(stderr, "\n%s: '%s', want '%s'\n", kv, msg, want);
    }
    CU_ASSERT_STRING_EQUAL(msg, want);
}

/* The nbd driver's options, parsed on their own: the "nbd" value of
 * BlockdevDriver is not built ("if": "NBD_CLIENT", docs/schema.md) but
 * its branch type is. */
static void nbd_err(const char *text, unsigned flags, const char *want)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_JSON json_object *o = NULL;
    BlockdevOptionsNbd *v = NULL;

    if (flags & QAPI_PARSE_KEYVAL) {
        o = keyval_parse(text, NULL, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    } else {
        o = js(text);
    }
    CU_ASSERT_FALSE(qapi_parse_BlockdevOptionsNbd(o, NULL, flags, &v, &err));
    CU_ASSERT_PTR_NULL(v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (strcmp(err->msg, want) != 0) {
        fprintf(stderr, "\n%s: '%s', want '%s'\n", text, err->msg, want);
    }
    CU_ASSERT_STRING_EQUAL(err->msg, want);
}

static void test_good_union(void)
{
    CLEANUP_FREE char *msg = NULL;
    BlockdevOptions *v = opts(
        "{\"driver\": \"qcow2\", \"node-name\": \"n0\","
        " \"file\": {\"driver\": \"file\", \"filename\": \"/x.qcow2\","
        "            \"aio\": \"native\", \"cache\": {\"direct\": true}},"
        " \"backing\": null, \"lazy-refcounts\": true}", 0, &msg);
    BlockdevOptions *f;

    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(v->driver, BLOCKDEV_DRIVER_QCOW2);
    CU_ASSERT_TRUE(v->has_node_name);
    CU_ASSERT_STRING_EQUAL(v->node_name, "n0");
    /* defaults */
    CU_ASSERT_FALSE(v->has_discard);
    CU_ASSERT_EQUAL(v->discard, BLOCKDEV_DISCARD_OPTIONS_IGNORE);
    CU_ASSERT_FALSE(v->has_read_only);
    CU_ASSERT_FALSE(v->read_only);
    CU_ASSERT_EQUAL(v->detect_zeroes, BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF);
    CU_ASSERT_FALSE(v->has_cache);
    CU_ASSERT_PTR_NULL(v->cache);
    /* branch members, embedded by value */
    CU_ASSERT_TRUE(v->u.qcow2.has_lazy_refcounts);
    CU_ASSERT_TRUE(v->u.qcow2.lazy_refcounts);
    CU_ASSERT_FALSE(v->u.qcow2.has_overlap_check);
    CU_ASSERT_TRUE_FATAL(v->u.qcow2.has_backing);
    CU_ASSERT_EQUAL(v->u.qcow2.backing->type, QTYPE_QNULL);
    CU_ASSERT_EQUAL_FATAL(v->u.qcow2.file->type, QTYPE_QDICT);
    f = v->u.qcow2.file->u.definition;
    CU_ASSERT_EQUAL(f->driver, BLOCKDEV_DRIVER_FILE);
    CU_ASSERT_FALSE(f->has_node_name);
    CU_ASSERT_STRING_EQUAL(f->u.file.filename, "/x.qcow2");
    CU_ASSERT_EQUAL(f->u.file.aio, BLOCKDEV_AIO_OPTIONS_NATIVE);
    CU_ASSERT_FALSE(f->u.file.has_locking);
    CU_ASSERT_EQUAL(f->u.file.locking, ON_OFF_AUTO_AUTO);
    CU_ASSERT_TRUE(f->u.file.drop_cache);
    CU_ASSERT_TRUE_FATAL(f->has_cache);
    CU_ASSERT_TRUE(f->cache->direct);
    CU_ASSERT_FALSE(f->cache->has_no_flush);
    CU_ASSERT_FALSE(f->cache->no_flush);
    qapi_free_BlockdevOptions(v);

    v = opts("{\"driver\": \"null-co\"}", 0, &msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(v->u.null_co.size, 1073741824);
    CU_ASSERT_FALSE(v->u.null_co.has_size);
    CU_ASSERT_FALSE(v->u.null_co.read_zeroes);
    qapi_free_BlockdevOptions(v);

    /* host_device shares file's branch type */
    v = opts("{\"driver\": \"host_device\", \"filename\": \"/dev/x\","
             " \"locking\": \"off\"}", 0, &msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(v->u.host_device.filename, "/dev/x");
    CU_ASSERT_EQUAL(v->u.host_device.locking, ON_OFF_AUTO_OFF);
    qapi_free_BlockdevOptions(v);
}

static void test_missing(void)
{
    opts_err("{\"driver\": \"qcow2\", \"node-name\": \"n\"}", 0,
             "Parameter 'file' is missing");
    opts_err("{\"driver\": \"raw\", \"file\": {\"driver\": \"file\"}}", 0,
             "Parameter 'file.filename' is missing");
    opts_err("{\"driver\": \"qcow2\", \"file\": {\"driver\": \"raw\","
             " \"file\": {\"driver\": \"file\"}}}", 0,
             "Parameter 'file.file.filename' is missing");
    nbd_err("{\"server\": {\"type\": \"unix\"}}", 0,
            "Parameter 'server.path' is missing");
    opts_err("{}", 0, "Parameter 'driver' is missing");
    opts_err("{\"node-name\": \"x\"}", 0, "Parameter 'driver' is missing");
}

static void test_unexpected(void)
{
    opts_err("{\"driver\": \"null-co\", \"foo\": 1}", 0,
             "Parameter 'foo' is unexpected");
    /* a member of another branch */
    opts_err("{\"driver\": \"null-co\", \"filename\": \"x\"}", 0,
             "Parameter 'filename' is unexpected");
    opts_err("{\"driver\": \"raw\", \"file\": {\"driver\": \"file\","
             " \"filename\": \"x\", \"bar\": true}}", 0,
             "Parameter 'file.bar' is unexpected");
    opts_err("{\"driver\": \"null-co\", \"cache\": {\"direct\": true,"
             " \"writeback\": true}}", 0,
             "Parameter 'cache.writeback' is unexpected");
    /* missing members are reported before unexpected ones */
    opts_err("{\"driver\": \"raw\", \"foo\": 1}", 0,
             "Parameter 'file' is missing");
}

static void test_wrong_types(void)
{
    opts_err("{\"driver\": 1}", 0,
             "Invalid parameter type for 'driver', expected: string");
    opts_err("{\"driver\": \"null-co\", \"node-name\": 1}", 0,
             "Invalid parameter type for 'node-name', expected: string");
    opts_err("{\"driver\": \"null-co\", \"node-name\": null}", 0,
             "Invalid parameter type for 'node-name', expected: string");
    opts_err("{\"driver\": \"null-co\", \"read-only\": \"yes\"}", 0,
             "Invalid parameter type for 'read-only', expected: boolean");
    opts_err("{\"driver\": \"null-co\", \"read-only\": 1}", 0,
             "Invalid parameter type for 'read-only', expected: boolean");
    opts_err("{\"driver\": \"null-co\", \"size\": \"1\"}", 0,
             "Invalid parameter type for 'size', expected: integer");
    opts_err("{\"driver\": \"null-co\", \"size\": 1.5}", 0,
             "Invalid parameter type for 'size', expected: integer");
    opts_err("{\"driver\": \"null-co\", \"size\": true}", 0,
             "Invalid parameter type for 'size', expected: integer");
    opts_err("{\"driver\": \"null-co\", \"cache\": 1}", 0,
             "Invalid parameter type for 'cache', expected: object");
    opts_err("{\"driver\": \"null-co\", \"cache\": []}", 0,
             "Invalid parameter type for 'cache', expected: object");
    opts_err("{\"driver\": \"null-co\", \"latency-ns\": -1}", 0,
             "Parameter 'latency-ns' expects uint64");
    opts_err("{\"driver\": \"null-co\", \"discard\": 3}", 0,
             "Invalid parameter type for 'discard', expected: string");

    /* a list and its elements */
    {
        CLEANUP_ERROR Error *err = NULL;
        CLEANUP_JSON json_object *o = js(
            "{\"node\": \"n\", \"target\": \"t\", \"bitmaps\": \"b\"}");
        BlockDirtyBitmapMerge *m = NULL;

        CU_ASSERT_FALSE(qapi_parse_BlockDirtyBitmapMerge(o, NULL, 0, &m,
                                                         &err));
        CU_ASSERT_PTR_NULL(m);
        CU_ASSERT_STRING_EQUAL(err->msg, "Invalid parameter type for "
                               "'bitmaps', expected: array");
    }
    {
        CLEANUP_ERROR Error *err = NULL;
        CLEANUP_JSON json_object *o = js(
            "{\"node\": \"n\", \"target\": \"t\", \"bitmaps\":"
            " [\"a\", {\"node\": \"m\", \"name\": \"b\"}, 7]}");
        BlockDirtyBitmapMerge *m = NULL;

        CU_ASSERT_FALSE(qapi_parse_BlockDirtyBitmapMerge(o, NULL, 0, &m,
                                                         &err));
        CU_ASSERT_STRING_EQUAL(err->msg, "Invalid parameter type for "
                               "'bitmaps[2]', expected: string or object");
    }
    {
        CLEANUP_ERROR Error *err = NULL;
        CLEANUP_JSON json_object *o = js(
            "{\"node\": \"n\", \"target\": \"t\", \"bitmaps\":"
            " [\"a\", {\"node\": \"m\"}]}");
        BlockDirtyBitmapMerge *m = NULL;

        CU_ASSERT_FALSE(qapi_parse_BlockDirtyBitmapMerge(o, NULL, 0, &m,
                                                         &err));
        CU_ASSERT_STRING_EQUAL(err->msg,
                               "Parameter 'bitmaps[1].name' is missing");
    }
    /* the top level must be an object */
    {
        CLEANUP_ERROR Error *err = NULL;
        CLEANUP_JSON json_object *o = js("[1]");
        BlockdevOptions *v = NULL;

        CU_ASSERT_FALSE(qapi_parse_BlockdevOptions(o, NULL, 0, &v, &err));
        CU_ASSERT_STRING_EQUAL(err->msg, "Invalid parameter type for "
                               "'null', expected: object");
    }
    /* embedded NUL */
    opts_err("{\"driver\": \"null-co\", \"node-name\": \"a\\u0000b\"}", 0,
             "Parameter 'node-name' must not contain a NUL character");
}

/* Run one built-in parser on JSON text; return the error or NULL. */
#define BUILTIN(fn, text, flags, out)                                      \
    ({                                                                     \
        CLEANUP_JSON json_object *o_ = js(text);                           \
        Error *e_ = NULL;                                                  \
        char *m_ = NULL;                                                   \
        if (!fn(o_, "x", flags, out, &e_)) {                               \
            m_ = xstrdup(e_->msg);                                         \
            error_free(e_);                                                \
        }                                                                  \
        m_;                                                                \
    })

static void expect_msg(char *got, const char *want)
{
    if (!want) {
        if (got) {
            fprintf(stderr, "\nunexpected error: %s\n", got);
        }
        CU_ASSERT_PTR_NULL(got);
    } else {
        CU_ASSERT_PTR_NOT_NULL_FATAL(got);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "\n'%s', want '%s'\n", got, want);
        }
        CU_ASSERT_STRING_EQUAL(got, want);
    }
    free(got);
}

static void test_int_ranges(void)
{
    int64_t i = 0;
    uint32_t u32 = 0;
    uint64_t u64 = 0;
    double d = 0;

    expect_msg(BUILTIN(qapi_parse_int8, "127", 0, &i), NULL);
    CU_ASSERT_EQUAL(i, 127);
    expect_msg(BUILTIN(qapi_parse_int8, "-128", 0, &i), NULL);
    CU_ASSERT_EQUAL(i, -128);
    expect_msg(BUILTIN(qapi_parse_int8, "128", 0, &i),
               "Parameter 'x' expects int8_t");
    expect_msg(BUILTIN(qapi_parse_int8, "-129", 0, &i),
               "Parameter 'x' expects int8_t");
    expect_msg(BUILTIN(qapi_parse_int16, "32768", 0, &i),
               "Parameter 'x' expects int16_t");
    expect_msg(BUILTIN(qapi_parse_int32, "-2147483649", 0, &i),
               "Parameter 'x' expects int32_t");
    expect_msg(BUILTIN(qapi_parse_int, "-9223372036854775808", 0, &i),
               NULL);
    CU_ASSERT_EQUAL(i, INT64_MIN);
    expect_msg(BUILTIN(qapi_parse_int, "9223372036854775808", 0, &i),
               "Parameter 'x' expects int64");
    expect_msg(BUILTIN(qapi_parse_uint8, "256", 0, &u32),
               "Parameter 'x' expects uint8_t");
    expect_msg(BUILTIN(qapi_parse_uint16, "65535", 0, &u32), NULL);
    CU_ASSERT_EQUAL(u32, 65535);
    expect_msg(BUILTIN(qapi_parse_uint32, "4294967295", 0, &u32), NULL);
    CU_ASSERT_EQUAL(u32, 4294967295U);
    expect_msg(BUILTIN(qapi_parse_uint32, "4294967296", 0, &u32),
               "Parameter 'x' expects uint32_t");
    expect_msg(BUILTIN(qapi_parse_uint32, "-1", 0, &u32),
               "Parameter 'x' expects uint32_t");
    expect_msg(BUILTIN(qapi_parse_uint64, "18446744073709551615", 0, &u64),
               NULL);
    CU_ASSERT_EQUAL(u64, UINT64_MAX);
    expect_msg(BUILTIN(qapi_parse_uint64, "9223372036854775808", 0, &u64),
               NULL);
    CU_ASSERT_EQUAL(u64, 9223372036854775808ULL);
    expect_msg(BUILTIN(qapi_parse_uint64, "-5", 0, &u64),
               "Parameter 'x' expects uint64");
    expect_msg(BUILTIN(qapi_parse_size, "-5", 0, &u64),
               "Parameter 'x' expects size");
    expect_msg(BUILTIN(qapi_parse_number, "5", 0, &d), NULL);
    CU_ASSERT_DOUBLE_EQUAL(d, 5.0, 0);
    expect_msg(BUILTIN(qapi_parse_number, "2.5", 0, &d), NULL);
    CU_ASSERT_DOUBLE_EQUAL(d, 2.5, 0);
    expect_msg(BUILTIN(qapi_parse_number, "\"2.5\"", 0, &d),
               "Invalid parameter type for 'x', expected: number");

    /* uint32 in a struct: block-dirty-bitmap-add granularity */
    {
        CLEANUP_ERROR Error *err = NULL;
        CLEANUP_JSON json_object *o = js("{\"node\": \"n\", \"name\": \"b\","
                                         " \"granularity\": 4294967296}");
        BlockDirtyBitmapAdd *a = NULL;

        CU_ASSERT_FALSE(qapi_parse_BlockDirtyBitmapAdd(o, NULL, 0, &a,
                                                       &err));
        CU_ASSERT_STRING_EQUAL(err->msg,
                               "Parameter 'granularity' expects uint32_t");
    }
}

static void test_null_any(void)
{
    bool b = false;
    json_object *a = NULL;

    expect_msg(BUILTIN(qapi_parse_null, "null", 0, &b), NULL);
    CU_ASSERT_TRUE(b);
    expect_msg(BUILTIN(qapi_parse_null, "0", 0, &b),
               "Invalid parameter type for 'x', expected: null");
    expect_msg(BUILTIN(qapi_parse_null, "\"\"", QAPI_PARSE_KEYVAL, &b),
               NULL);
    expect_msg(BUILTIN(qapi_parse_any, "{\"a\": [1, 2]}", 0, &a), NULL);
    CU_ASSERT_TRUE(json_object_is_type(a, json_type_object));
    json_object_put(a);
}

static void test_enums(void)
{
    opts_err("{\"driver\": \"foo\"}", 0,
             "Parameter 'driver' does not accept value 'foo'");
    opts_err("{\"driver\": \"vmdk\", \"file\": \"x\"}", 0,
             "Parameter 'driver' does not accept value 'vmdk'");
    opts_err("{\"driver\": \"null-co\", \"discard\": \"UNMAP\"}", 0,
             "Parameter 'discard' does not accept value 'UNMAP'");
    opts_err("{\"driver\": \"raw\", \"file\": {\"driver\": \"file\","
             " \"filename\": \"f\", \"aio\": \"posix\"}}", 0,
             "Parameter 'file.aio' does not accept value 'posix'");

    CU_ASSERT_STRING_EQUAL(BlockdevDriver_str(BLOCKDEV_DRIVER_NULL_CO),
                           "null-co");
    CU_ASSERT_STRING_EQUAL(BlockdevDriver_str(BLOCKDEV_DRIVER__MAX), "");
    CU_ASSERT_EQUAL(BlockdevDriver_lookup("host_device"),
                    BLOCKDEV_DRIVER_HOST_DEVICE);
    CU_ASSERT_EQUAL(BlockdevDriver_lookup("nope"), -1);
    CU_ASSERT_EQUAL(BlockdevDriver_lookup(NULL), -1);
    CU_ASSERT_EQUAL(BlockdevAioOptions_lookup("io_uring"),
                    BLOCKDEV_AIO_OPTIONS_IO_URING);
    CU_ASSERT_EQUAL(QCryptoTLSCredsEndpoint_lookup("server"),
                    QCRYPTO_TLS_CREDS_ENDPOINT_SERVER);
}

static void test_alternates(void)
{
    CLEANUP_FREE char *msg = NULL;
    BlockdevOptions *v;

    v = opts("{\"driver\": \"raw\", \"file\": \"base0\"}", 0, &msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(v->u.raw.file->type, QTYPE_QSTRING);
    CU_ASSERT_STRING_EQUAL(v->u.raw.file->u.reference, "base0");
    qapi_free_BlockdevOptions(v);

    opts_err("{\"driver\": \"raw\", \"file\": 1}", 0,
             "Invalid parameter type for 'file', expected: object or string");
    opts_err("{\"driver\": \"raw\", \"file\": null}", 0,
             "Invalid parameter type for 'file', expected: object or string");
    opts_err("{\"driver\": \"qcow2\", \"file\": \"f\", \"backing\": []}", 0,
             "Invalid parameter type for 'backing', expected: object, "
             "string or null");
    opts_err("{\"driver\": \"raw\", \"file\": {\"driver\": \"nope\"}}", 0,
             "Parameter 'file.driver' does not accept value 'nope'");

    v = opts("{\"driver\": \"qcow2\", \"file\": \"f\", \"backing\": \"b\","
             " \"overlap-check\": \"all\"}", 0, &msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(v->u.qcow2.backing->type, QTYPE_QSTRING);
    CU_ASSERT_EQUAL(v->u.qcow2.overlap_check->type, QTYPE_QSTRING);
    CU_ASSERT_EQUAL(v->u.qcow2.overlap_check->u.mode,
                    QCOW2_OVERLAP_CHECK_MODE_ALL);
    qapi_free_BlockdevOptions(v);

    v = opts("{\"driver\": \"qcow2\", \"file\": \"f\","
             " \"overlap-check\": {\"template\": \"none\","
             " \"main-header\": true}}", 0, &msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(v->u.qcow2.overlap_check->type, QTYPE_QDICT);
    CU_ASSERT_EQUAL(v->u.qcow2.overlap_check->u.flags->template,
                    QCOW2_OVERLAP_CHECK_MODE_NONE);
    CU_ASSERT_TRUE(v->u.qcow2.overlap_check->u.flags->main_header);
    qapi_free_BlockdevOptions(v);

    opts_err("{\"driver\": \"qcow2\", \"file\": \"f\","
             " \"overlap-check\": \"some\"}", 0,
             "Parameter 'overlap-check' does not accept value 'some'");
}

static void test_keyval(void)
{
    CLEANUP_FREE char *msg = NULL;
    BlockdevOptions *v;
    uint64_t u64 = 0;
    int64_t i = 0;
    bool b = false;
    double d = 0;

    v = kv_opts("driver=null-co,node-name=n,size=1073741824,"
                "read-zeroes=on,latency-ns=0x10,read-only=off,"
                "cache.direct=yes", &msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(v->u.null_co.size, 1073741824);
    CU_ASSERT_TRUE(v->u.null_co.read_zeroes);
    CU_ASSERT_EQUAL(v->u.null_co.latency_ns, 16);
    CU_ASSERT_TRUE(v->has_read_only);
    CU_ASSERT_FALSE(v->read_only);
    CU_ASSERT_TRUE(v->cache->direct);
    qapi_free_BlockdevOptions(v);

    /* alternates: a string is a reference, an empty one null; nested
     * keys make an inline definition */
    v = kv_opts("driver=qcow2,file.driver=file,file.filename=a,,b,"
                "backing=,overlap-check=constant", &msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL_FATAL(v->u.qcow2.file->type, QTYPE_QDICT);
    CU_ASSERT_STRING_EQUAL(
        v->u.qcow2.file->u.definition->u.file.filename, "a,b");
    CU_ASSERT_EQUAL(v->u.qcow2.backing->type, QTYPE_QSTRING);
    CU_ASSERT_STRING_EQUAL(v->u.qcow2.backing->u.reference, "");
    CU_ASSERT_EQUAL(v->u.qcow2.overlap_check->u.mode,
                    QCOW2_OVERLAP_CHECK_MODE_CONSTANT);
    qapi_free_BlockdevOptions(v);

    kv_err("driver=null-co,size=abc", "Parameter 'size' expects integer");
    kv_err("driver=null-co,size=1G", "Parameter 'size' expects integer");
    kv_err("driver=null-co,size=", "Parameter 'size' expects integer");
    kv_err("driver=null-co,latency-ns=-1",
           "Parameter 'latency-ns' expects integer");
    kv_err("driver=null-co,read-only=maybe",
           "Parameter 'read-only' expects 'on' or 'off'");
    nbd_err("server.type=inet,server.host=h,server.port=1,server.to=65536",
            QAPI_PARSE_KEYVAL, "Parameter 'server.to' expects uint16_t");
    kv_err("driver=null-co,cache=on",
           "Invalid parameter type for 'cache', expected: object");
    kv_err("driver=raw,file.driver=file,file.filename=x,file.foo=1",
           "Parameter 'file.foo' is unexpected");

    /* the scalar conversions one by one */
    expect_msg(BUILTIN(qapi_parse_size, "\"1.5k\"", QAPI_PARSE_KEYVAL,
                       &u64), NULL);
    CU_ASSERT_EQUAL(u64, 1536);
    expect_msg(BUILTIN(qapi_parse_size, "\"4G\"", QAPI_PARSE_KEYVAL, &u64),
               NULL);
    CU_ASSERT_EQUAL(u64, 4ULL << 30);
    expect_msg(BUILTIN(qapi_parse_size, "\"4X\"", QAPI_PARSE_KEYVAL, &u64),
               "Parameter 'x' expects size");
    expect_msg(BUILTIN(qapi_parse_size, "\"4G\"", 0, &u64),
               "Invalid parameter type for 'x', expected: integer");
    /* A number that is no 64-bit integer, for an unsigned type: QEMU's
     * uint64 visitor answers for all of them. */
    expect_msg(BUILTIN(qapi_parse_size, "1e26", 0, &u64),
               "Parameter 'x' expects uint64");
    expect_msg(BUILTIN(qapi_parse_uint64, "1.5", 0, &u64),
               "Parameter 'x' expects uint64");
    {
        uint32_t u32 = 0;

        expect_msg(BUILTIN(qapi_parse_uint8, "-1.0", 0, &u32),
                   "Parameter 'x' expects uint64");
        expect_msg(BUILTIN(qapi_parse_uint8, "256", 0, &u32),
                   "Parameter 'x' expects uint8_t");
    }
    expect_msg(BUILTIN(qapi_parse_int, "1e26", 0, &i),
               "Invalid parameter type for 'x', expected: integer");
    /* A NUL would cut the string: refused, not read as 4096 or on. */
    expect_msg(BUILTIN(qapi_parse_size, "\"4096\\u0000x\"",
                       QAPI_PARSE_KEYVAL, &u64),
               "Invalid parameter type for 'x', expected: integer");
    expect_msg(BUILTIN(qapi_parse_int, "\"1\\u0000\"", QAPI_PARSE_KEYVAL,
                       &i),
               "Invalid parameter type for 'x', expected: integer");
    expect_msg(BUILTIN(qapi_parse_bool, "\"on\\u0000x\"",
                       QAPI_PARSE_KEYVAL, &b),
               "Invalid parameter type for 'x', expected: boolean");
    expect_msg(BUILTIN(qapi_parse_str, "\"n0\\u0000x\"", 0, &msg),
               "Parameter 'x' must not contain a NUL character");
    expect_msg(BUILTIN(qapi_parse_int, "\"-0x10\"", QAPI_PARSE_KEYVAL, &i),
               NULL);
    CU_ASSERT_EQUAL(i, -16);
    expect_msg(BUILTIN(qapi_parse_int, "\"12abc\"", QAPI_PARSE_KEYVAL, &i),
               "Parameter 'x' expects integer");
    expect_msg(BUILTIN(qapi_parse_int, "\"99999999999999999999\"",
                       QAPI_PARSE_KEYVAL, &i),
               "Parameter 'x' expects integer");
    expect_msg(BUILTIN(qapi_parse_int8, "\"200\"", QAPI_PARSE_KEYVAL, &i),
               "Parameter 'x' expects int8_t");
    expect_msg(BUILTIN(qapi_parse_bool, "\"yes\"", QAPI_PARSE_KEYVAL, &b),
               NULL);
    CU_ASSERT_TRUE(b);
    expect_msg(BUILTIN(qapi_parse_bool, "\"off\"", QAPI_PARSE_KEYVAL, &b),
               NULL);
    CU_ASSERT_FALSE(b);
    expect_msg(BUILTIN(qapi_parse_bool, "\"On\"", QAPI_PARSE_KEYVAL, &b),
               "Parameter 'x' expects 'on' or 'off'");
    expect_msg(BUILTIN(qapi_parse_number, "\"1e3\"", QAPI_PARSE_KEYVAL, &d),
               NULL);
    CU_ASSERT_DOUBLE_EQUAL(d, 1000.0, 0);
    expect_msg(BUILTIN(qapi_parse_number, "\"1e\"", QAPI_PARSE_KEYVAL, &d),
               "Parameter 'x' expects number");
    /* KEYVAL still takes real JSON values */
    expect_msg(BUILTIN(qapi_parse_bool, "true", QAPI_PARSE_KEYVAL, &b),
               NULL);
    expect_msg(BUILTIN(qapi_parse_uint64, "7", QAPI_PARSE_KEYVAL, &u64),
               NULL);
    CU_ASSERT_EQUAL(u64, 7);
}

/* Parse JSON text as T, print it back, compare with the input. */
/* The text printer writes what the json-c printer writes for the same
 * value: the object built, on one line, and as a raw reply object. */
static void check_text(json_object *want, void (*fn)(QText *, const void *),
                       const void *v)
{
    CLEANUP_FREE char *want_text = qjson_format(want, false);
    CLEANUP_FREE char *raw_text = NULL;
    CLEANUP_JSON json_object *raw = NULL;
    QText t = { 0 };

    fn(&t, v);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t.buf);
    if (strcmp(t.buf, want_text) != 0) {
        fprintf(stderr, "\ntext   %s\n  != json %s\n", t.buf, want_text);
    }
    CU_ASSERT_STRING_EQUAL(t.buf, want_text);
    CU_ASSERT_EQUAL(t.len, strlen(want_text));
    raw = qjson_new_raw(&t);
    CU_ASSERT_PTR_NULL(t.buf);
    raw_text = qjson_format(raw, false);
    CU_ASSERT_STRING_EQUAL(raw_text, want_text);
}

#define ROUND_TRIP(T, text)                                               \
    do {                                                                  \
        CLEANUP_JSON json_object *in_ = js(text);                         \
        CLEANUP_JSON json_object *out_ = NULL;                            \
        CLEANUP_ERROR Error *e_ = NULL;                                   \
        T *v_ = NULL;                                                     \
        CU_ASSERT_TRUE_FATAL(qapi_parse_##T(in_, NULL, 0, &v_, &e_));     \
        out_ = qapi_##T##_to_json(v_);                                    \
        if (!json_object_equal(in_, out_)) {                              \
            fprintf(stderr, "\n%s\n  != %s\n", text,                      \
                    json_object_to_json_string(out_));                    \
        }                                                                 \
        CU_ASSERT_TRUE(json_object_equal(in_, out_));                     \
        check_text(out_, (void (*)(QText *, const void *))                \
                   qapi_##T##_to_text, v_);                               \
        qapi_free_##T(v_);                                                \
    } while (0)

static void test_round_trip(void)
{
    ROUND_TRIP(BlockdevOptions,
        "{\"driver\": \"qcow2\", \"node-name\": \"n0\", \"discard\":"
        " \"unmap\", \"cache\": {\"direct\": false, \"no-flush\": true},"
        " \"read-only\": true, \"detect-zeroes\": \"unmap\","
        " \"file\": {\"driver\": \"file\", \"filename\": \"/a\","
        "  \"aio\": \"io_uring\", \"aio-max-batch\": 8, \"locking\": \"on\"},"
        " \"backing\": null, \"overlap-check\": {\"template\": \"all\","
        "  \"active-l2\": false}, \"l2-cache-size\": 1048576,"
        " \"encrypt\": {\"format\": \"aes\", \"key-secret\": \"s\"},"
        " \"snapshot\": \"snap1\"}");
    ROUND_TRIP(BlockdevOptionsNbd,
        "{\"server\": {\"type\": \"inet\", \"host\":"
        " \"127.0.0.1\", \"port\": \"10809\", \"to\": 10900},"
        " \"export\": \"e\", \"reconnect-delay\": 4294967295}");
    ROUND_TRIP(BlockdevOptions,
        "{\"driver\": \"null-aio\", \"size\": -1,"
        " \"latency-ns\": 18446744073709551615}");
    ROUND_TRIP(BlockdevOptions,
        "{\"driver\": \"raw\", \"file\": \"f\", \"offset\": 512}");
    ROUND_TRIP(BlockExportOptions,
        "{\"type\": \"nbd\", \"id\": \"e0\", \"node-name\": \"n0\","
        " \"writable\": true, \"name\": \"disk\", \"bitmaps\": [\"b0\","
        " {\"node\": \"n1\", \"name\": \"b1\"}], \"allocation-depth\": true}");
    ROUND_TRIP(ObjectOptions,
        "{\"qom-type\": \"authz-list\", \"id\": \"a0\", \"policy\":"
        " \"allow\", \"rules\": [{\"match\": \"CN=*\", \"policy\": \"deny\","
        " \"format\": \"glob\"}]}");
    ROUND_TRIP(QmpNbdServerStartArgs,
        "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"/s\"}},"
        " \"max-connections\": 0}");
    ROUND_TRIP(ImageInfo,
        "{\"filename\": \"f\", \"format\": \"qcow2\", \"virtual-size\": 1,"
        " \"format-specific\": {\"type\": \"qcow2\", \"data\": {\"compat\":"
        " \"1.1\", \"refcount-bits\": 16, \"compression-type\": \"zlib\","
        " \"bitmaps\": [{\"name\": \"b\", \"granularity\": 65536, \"flags\":"
        " [\"auto\"]}]}}, \"backing-image\": {\"filename\": \"g\","
        " \"format\": \"raw\", \"virtual-size\": 2}}");

    /* Absent optional members are left out even with a default. */
    {
        CLEANUP_JSON json_object *in = js("{\"driver\": \"null-co\"}");
        CLEANUP_JSON json_object *out = NULL;
        BlockdevOptions *v = NULL;

        CU_ASSERT_TRUE_FATAL(qapi_parse_BlockdevOptions(in, NULL, 0, &v,
                                                        NULL));
        out = qapi_BlockdevOptions_to_json(v);
        CU_ASSERT_TRUE(json_object_equal(in, out));
        qapi_free_BlockdevOptions(v);
    }
    /* NULL-safe free and print */
    qapi_free_BlockdevOptions(NULL);
    qapi_free_BlockdevRef(NULL);
    qapi_free_strList(NULL);
    {
        CLEANUP_JSON json_object *o = qapi_BlockDeviceInfoList_to_json(NULL);

        CU_ASSERT_TRUE(json_object_is_type(o, json_type_array));
    }
}

/* Inputs that fail late, after much was allocated: ASan (or valgrind)
 * reports a leak if the partial result is not freed. */
static void test_partial_free(void)
{
    static const char *const bad[] = {
        "{\"driver\": \"qcow2\", \"node-name\": \"n\", \"file\": {\"driver\":"
        " \"qcow2\", \"file\": {\"driver\": \"file\", \"filename\": \"x\"},"
        " \"backing\": {\"driver\": \"raw\", \"file\": \"y\"}, \"encrypt\":"
        " {\"a\": 1}, \"overlap-check\": {\"template\": \"all\"}}, \"zzz\": 1}",
        "{\"driver\": \"qcow2\", \"node-name\": \"n\", \"file\": {\"driver\":"
        " \"raw\", \"node-name\": \"m\", \"file\": {\"driver\": \"file\","
        " \"filename\": \"x\", \"aio\": \"bad\"}}}",
        ("{\"driver\": \"qcow2\", \"node-name\": \"n\", \"file\": \"f\","
         " \"data-file\": \"d\", \"snapshot\": 1}"),
    };

    for (size_t k = 0; k < ARRAY_SIZE(bad); k++) {
        CLEANUP_FREE char *msg = NULL;
        BlockdevOptions *v = opts(bad[k], 0, &msg);

        CU_ASSERT_PTR_NULL(v);
        CU_ASSERT_PTR_NOT_NULL(msg);
    }
    nbd_err("{\"server\": {\"type\": \"inet\", \"host\": \"h\", \"port\":"
            " \"1\"}, \"export\": \"e\", \"tls-creds\": 5}", 0,
            "Invalid parameter type for 'tls-creds', expected: string");
    {
        CLEANUP_ERROR Error *err = NULL;
        CLEANUP_JSON json_object *o = js(
            "{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
            " \"bitmaps\": [\"a\", {\"node\": \"m\", \"name\": \"b\"},"
            " {\"node\": \"m\"}]}");
        BlockExportOptions *e = NULL;

        CU_ASSERT_FALSE(qapi_parse_BlockExportOptions(o, NULL, 0, &e, &err));
        CU_ASSERT_PTR_NULL(e);
        CU_ASSERT_STRING_EQUAL(err->msg,
                               "Parameter 'bitmaps[2].name' is missing");
    }
}

/* Replace every value in a valid input, one at a time, by values of
 * every JSON kind, and parse: each try must either succeed or fail with
 * a message, never crash or leak (run under ASan). */
typedef bool ParseFn(json_object *root, Error **errp);

static unsigned mutations_ok;
static unsigned mutations_failed;

static void mutate_try(json_object *root, ParseFn *fn)
{
    Error *err = NULL;

    if (fn(root, &err)) {
        CU_ASSERT_PTR_NULL(err);
        mutations_ok++;
    } else {
        CU_ASSERT_PTR_NOT_NULL(err);
        CU_ASSERT_TRUE(err && err->msg[0] != '\0');
        mutations_failed++;
        error_free(err);
    }
}

static void mutate_walk(json_object *root, json_object *node, ParseFn *fn)
{
    static const char *const subst[] = {
        "null", "0", "-1", "4294967296", "-9223372036854775808",
        "18446744073709551615", "1.5", "\"\"", "\"x\"", "true", "[]",
        "{}", "[1, \"a\"]", "{\"driver\": \"file\"}",
    };

    if (json_object_is_type(node, json_type_object)) {
        /* Deleting a member frees its key: work on copies. */
        size_t n = json_object_object_length(node);
        char **keys = xcalloc(n ? n : 1, sizeof(*keys));
        size_t i = 0;

        json_object_object_foreach(node, key, val) {
            (void)val;
            keys[i++] = xstrdup(key);
        }
        for (i = 0; i < n; i++) {
            json_object *cur = NULL;
            json_object *saved;

            CU_ASSERT_TRUE_FATAL(json_object_object_get_ex(node, keys[i],
                                                           &cur));
            saved = json_object_get(cur);
            for (size_t k = 0; k < ARRAY_SIZE(subst); k++) {
                json_object_object_add(node, keys[i], js(subst[k]));
                mutate_try(root, fn);
            }
            json_object_object_del(node, keys[i]);
            mutate_try(root, fn);
            json_object_object_add(node, keys[i], saved);
            mutate_walk(root, saved, fn);
            free(keys[i]);
        }
        free(keys);
        json_object_object_add(node, "extra", json_object_new_int(1));
        mutate_try(root, fn);
        json_object_object_del(node, "extra");
    } else if (json_object_is_type(node, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(node); i++) {
            json_object *saved =
                json_object_get(json_object_array_get_idx(node, i));

            for (size_t k = 0; k < ARRAY_SIZE(subst); k++) {
                json_object_array_put_idx(node, i, js(subst[k]));
                mutate_try(root, fn);
            }
            json_object_array_put_idx(node, i, saved);
            mutate_walk(root, saved, fn);
        }
    }
}

static bool parse_blockdev(json_object *root, Error **errp)
{
    BlockdevOptions *v = NULL;
    bool ok = qapi_parse_BlockdevOptions(root, NULL, 0, &v, errp);

    if (ok) {
        json_object_put(qapi_BlockdevOptions_to_json(v));
    }
    qapi_free_BlockdevOptions(v);
    return ok;
}

static bool parse_nbd(json_object *root, Error **errp)
{
    BlockdevOptionsNbd *v = NULL;
    bool ok = qapi_parse_BlockdevOptionsNbd(root, NULL, 0, &v, errp);

    if (ok) {
        json_object_put(qapi_BlockdevOptionsNbd_to_json(v));
    }
    qapi_free_BlockdevOptionsNbd(v);
    return ok;
}

static bool parse_export(json_object *root, Error **errp)
{
    BlockExportOptions *v = NULL;
    bool ok = qapi_parse_BlockExportOptions(root, NULL, 0, &v, errp);

    qapi_free_BlockExportOptions(v);
    return ok;
}

static bool parse_object(json_object *root, Error **errp)
{
    ObjectOptions *v = NULL;
    bool ok = qapi_parse_ObjectOptions(root, NULL, 0, &v, errp);

    qapi_free_ObjectOptions(v);
    return ok;
}

static void test_mutations(void)
{
    static const struct {
        ParseFn *fn;
        const char *text;
    } inputs[] = {
        { parse_blockdev,
          "{\"driver\": \"qcow2\", \"node-name\": \"n\", \"file\":"
          " {\"driver\": \"file\", \"filename\": \"/x\", \"cache\":"
          " {\"direct\": true}}, \"backing\": {\"driver\": \"raw\","
          " \"file\": \"b\", \"size\": 5}, \"overlap-check\":"
          " {\"template\": \"all\"}, \"encrypt\": {\"a\": [1]}}" },
        { parse_nbd,
          "{\"server\": {\"type\": \"inet\","
          " \"host\": \"h\", \"port\": \"1\", \"to\": 2},"
          " \"reconnect-delay\": 3}" },
        { parse_export,
          "{\"type\": \"nbd\", \"id\": \"e\", \"node-name\": \"n\","
          " \"bitmaps\": [\"a\", {\"node\": \"m\", \"name\": \"b\"}]}" },
        { parse_object,
          "{\"qom-type\": \"authz-list\", \"id\": \"a\", \"rules\":"
          " [{\"match\": \"x\", \"policy\": \"allow\"}]}" },
    };

    for (size_t k = 0; k < ARRAY_SIZE(inputs); k++) {
        CLEANUP_JSON json_object *root = js(inputs[k].text);

        mutate_try(root, inputs[k].fn);
        mutate_walk(root, root, inputs[k].fn);
    }
    /* Both outcomes happened many times. */
    if (getenv("TEST_VERBOSE")) {
        fprintf(stderr, "\nmutations: %u parsed, %u refused\n",
                mutations_ok, mutations_failed);
    }
    CU_ASSERT_TRUE(mutations_ok > 20);
    CU_ASSERT_TRUE(mutations_failed > 200);
}

static void test_commands(void)
{
    const QmpCommand *c;
    CLEANUP_ERROR Error *err = NULL;

    CU_ASSERT_TRUE(qmp_commands_count > 15);
    for (size_t k = 1; k < qmp_commands_count; k++) {
        CU_ASSERT_TRUE(strcmp(qmp_commands[k - 1].name,
                              qmp_commands[k].name) < 0);
    }
    for (size_t k = 0; k < qmp_commands_count; k++) {
        CU_ASSERT_PTR_EQUAL(qmp_find_command(qmp_commands[k].name),
                            &qmp_commands[k]);
    }
    CU_ASSERT_PTR_NULL(qmp_find_command("no-such-command"));
    CU_ASSERT_PTR_NULL(qmp_find_command(""));
    CU_ASSERT_PTR_NULL(qmp_find_command(NULL));
    c = qmp_find_command("blockdev-add");
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_FALSE(c->allow_oob);

    /* normalize: keyval strings become typed JSON, defaults not added */
    {
        CLEANUP_JSON json_object *kv = keyval_parse(
            "driver=qcow2,node-name=n0,file.driver=file,"
            "file.filename=/x,read-only=on,cache-size=1048576", NULL, &err);
        CLEANUP_JSON json_object *out = NULL;
        CLEANUP_JSON json_object *want = js(
            "{\"driver\": \"qcow2\", \"node-name\": \"n0\", \"read-only\":"
            " true, \"file\": {\"driver\": \"file\", \"filename\": \"/x\"},"
            " \"cache-size\": 1048576}");

        CU_ASSERT_PTR_NOT_NULL_FATAL(kv);
        CU_ASSERT_TRUE_FATAL(c->normalize(kv, QAPI_PARSE_KEYVAL, &out,
                                          &err));
        CU_ASSERT_TRUE(json_object_equal(out, want));
    }
    /* normalize fails like marshal would */
    {
        CLEANUP_JSON json_object *args = js("{\"driver\": \"file\"}");
        json_object *out = NULL;

        CU_ASSERT_FALSE(c->normalize(args, 0, &out, &err));
        CU_ASSERT_PTR_NULL(out);
        CU_ASSERT_STRING_EQUAL(err->msg, "Parameter 'filename' is missing");
        error_free(err);
        err = NULL;
    }
    /* commands without arguments: NULL or {} are fine, members are not */
    c = qmp_find_command("nbd-server-stop");
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    {
        json_object *out = NULL;
        CLEANUP_JSON json_object *args = js("{\"x\": 1}");

        CU_ASSERT_TRUE(c->normalize(NULL, 0, &out, &err));
        CU_ASSERT_EQUAL(json_object_object_length(out), 0);
        json_object_put(out);
        out = NULL;
        CU_ASSERT_FALSE(c->normalize(args, 0, &out, &err));
        CU_ASSERT_STRING_EQUAL(err->msg, "Parameter 'x' is unexpected");
    }
}

static json_object *intro_find(json_object *schema, const char *name)
{
    for (size_t k = 0; k < json_object_array_length(schema); k++) {
        json_object *e = json_object_array_get_idx(schema, k);
        json_object *n;

        if (json_object_object_get_ex(e, "name", &n) &&
            strcmp(json_object_get_string(n), name) == 0) {
            return e;
        }
    }
    return NULL;
}

static const char *intro_str(json_object *e, const char *key)
{
    json_object *v;

    if (!e || !json_object_object_get_ex(e, key, &v)) {
        return NULL;
    }
    return json_object_get_string(v);
}

static void test_introspection(void)
{
    CLEANUP_JSON json_object *schema = json_tokener_parse(
        qapi_introspect_json);
    json_object *e;
    json_object *members;
    const char *arg;
    bool found_node_name = false;

    CU_ASSERT_PTR_NOT_NULL_FATAL(schema);
    CU_ASSERT_TRUE_FATAL(json_object_is_type(schema, json_type_array));

    /* every command is there */
    for (size_t k = 0; k < qmp_commands_count; k++) {
        e = intro_find(schema, qmp_commands[k].name);
        CU_ASSERT_PTR_NOT_NULL(e);
        CU_ASSERT_STRING_EQUAL(intro_str(e, "meta-type"), "command");
    }
    /* blockdev-add: masked argument type, a union on driver */
    e = intro_find(schema, "blockdev-add");
    arg = intro_str(e, "arg-type");
    CU_ASSERT_PTR_NOT_NULL_FATAL(arg);
    CU_ASSERT_TRUE(arg[0] >= '0' && arg[0] <= '9');
    e = intro_find(schema, arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_STRING_EQUAL(intro_str(e, "meta-type"), "object");
    CU_ASSERT_STRING_EQUAL(intro_str(e, "tag"), "driver");
    CU_ASSERT_TRUE_FATAL(json_object_object_get_ex(e, "members", &members));
    for (size_t k = 0; k < json_object_array_length(members); k++) {
        json_object *m = json_object_array_get_idx(members, k);
        json_object *dflt;

        if (strcmp(intro_str(m, "name"), "node-name") == 0) {
            found_node_name = true;
            CU_ASSERT_STRING_EQUAL(intro_str(m, "type"), "str");
            CU_ASSERT_TRUE(json_object_object_get_ex(m, "default", &dflt));
            CU_ASSERT_PTR_NULL(dflt);
        }
    }
    CU_ASSERT_TRUE(found_node_name);
    /* no type name leaks out */
    CU_ASSERT_PTR_NULL(intro_find(schema, "BlockdevOptions"));
    CU_ASSERT_PTR_NULL(strstr(qapi_introspect_json, "BlockdevOptions"));
    /* built-ins, sized integers folded into int */
    CU_ASSERT_STRING_EQUAL(intro_str(intro_find(schema, "str"), "json-type"),
                           "string");
    CU_ASSERT_STRING_EQUAL(intro_str(intro_find(schema, "int"), "json-type"),
                           "int");
    CU_ASSERT_PTR_NULL(intro_find(schema, "uint32"));
    CU_ASSERT_STRING_EQUAL(intro_str(intro_find(schema, "[str]"),
                                     "element-type"), "str");
    /* events */
    e = intro_find(schema, "BLOCK_EXPORT_DELETED");
    CU_ASSERT_STRING_EQUAL(intro_str(e, "meta-type"), "event");
    /* commands without arguments share one empty object type */
    CU_ASSERT_STRING_EQUAL(intro_str(intro_find(schema, "quit"), "arg-type"),
                           intro_str(intro_find(schema, "query-version"),
                                     "arg-type"));
    /* the answer has the shape of our own SchemaInfo type */
    {
        CLEANUP_ERROR Error *err = NULL;
        SchemaInfoList *l = NULL;

        if (!qapi_parse_SchemaInfoList(schema, NULL, 0, &l, &err)) {
            fprintf(stderr, "\n%s\n", err->msg);
        }
        CU_ASSERT_PTR_NOT_NULL_FATAL(l);
        CU_ASSERT_EQUAL(l->n, json_object_array_length(schema));
        for (size_t k = 0; k < l->n; k++) {
            if (l->v[k]->meta_type == SCHEMA_META_TYPE_ENUM) {
                CU_ASSERT_EQUAL(l->v[k]->u.q_enum.members->n,
                                l->v[k]->u.q_enum.values->n);
            }
        }
        qapi_free_SchemaInfoList(l);
    }
    e = intro_find(schema, "query-qmp-schema");
    CU_ASSERT_PTR_NOT_NULL(intro_str(e, "ret-type"));
    CU_ASSERT_EQUAL(intro_str(e, "ret-type")[0], '[');
}

static CU_TestInfo schema_tests[] = {
    { "good_union", test_good_union },
    { "missing", test_missing },
    { "unexpected", test_unexpected },
    { "wrong_types", test_wrong_types },
    { "int_ranges", test_int_ranges },
    { "null_any", test_null_any },
    { "enums", test_enums },
    { "alternates", test_alternates },
    { "keyval", test_keyval },
    { "round_trip", test_round_trip },
    { "partial_free", test_partial_free },
    { "mutations", test_mutations },
    { "commands", test_commands },
    { "introspection", test_introspection },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "schema", .pTests = schema_tests },
    CU_SUITE_INFO_NULL,
};
