/* test-framing.c - QMP input framing and QMP-shaped JSON output. */
#include <stdlib.h>
#include <string.h>

#include "cunit-main.h"
#include "qmp/framing.h"
#include "qmp/qmp.h"
#include "util/cleanup.h"
#include "util/json.h"
#include "util/util.h"

/* Collects what the framer produced: messages as text, errors as "!". */
typedef struct Seen {
    char *items[64];
    int n;
    int stop_after;          /* return false after this many (0: never) */
} Seen;

static bool collect(void *opaque, json_object *msg, const char *err)
{
    Seen *s = opaque;

    if (s->n < 64) {
        s->items[s->n++] = msg ? xstrdup(json_object_to_json_string_ext(
                                     msg, JSON_C_TO_STRING_PLAIN))
                               : xasprintf("!%s", err);
    }
    return s->stop_after == 0 || s->n < s->stop_after;
}

static void seen_free(Seen *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->items[i]);
    }
    s->n = 0;
}

static void feed(QmpFramer *f, Seen *s, const char *text)
{
    qmp_framer_feed(f, text, strlen(text), collect, s);
}

static void test_several_in_one_read(void)
{
    QmpFramer *f = qmp_framer_new(1024);
    Seen s = { 0 };

    feed(f, &s, "{\"a\":1}{\"b\":2}\n  {\"c\":[1,2]}\r\n");
    CU_ASSERT_EQUAL(s.n, 3);
    CU_ASSERT_STRING_EQUAL(s.items[0], "{\"a\":1}");
    CU_ASSERT_STRING_EQUAL(s.items[1], "{\"b\":2}");
    CU_ASSERT_STRING_EQUAL(s.items[2], "{\"c\":[1,2]}");
    seen_free(&s);
    qmp_framer_free(f);
}

static void test_split_byte_by_byte(void)
{
    QmpFramer *f = qmp_framer_new(1024);
    Seen s = { 0 };
    const char *msg = "{\"execute\": \"query-version\", \"id\": [1, \"x\"]}";

    for (size_t i = 0; i + 1 < strlen(msg); i++) {
        qmp_framer_feed(f, &msg[i], 1, collect, &s);
        CU_ASSERT_EQUAL(s.n, 0);
    }
    /* An object is complete at its closing brace. */
    qmp_framer_feed(f, &msg[strlen(msg) - 1], 1, collect, &s);
    CU_ASSERT_EQUAL(s.n, 1);
    CU_ASSERT_STRING_EQUAL(s.items[0],
                           "{\"execute\":\"query-version\",\"id\":[1,\"x\"]}");
    seen_free(&s);
    qmp_framer_free(f);
}

static void test_error_then_resync(void)
{
    QmpFramer *f = qmp_framer_new(1024);
    Seen s = { 0 };

    feed(f, &s, "{\"a\": x, \"more\": }}}\n{\"ok\":true}\n");
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_EQUAL(strncmp(s.items[0], "!JSON parse error", 17), 0);
    CU_ASSERT_STRING_EQUAL(s.items[1], "{\"ok\":true}");
    seen_free(&s);
    /* Garbage with no newline yet: everything is dropped until one. */
    feed(f, &s, "\x01\x02{\"lost\":1}");
    CU_ASSERT_EQUAL(s.n, 1);
    feed(f, &s, "still lost\n{\"x\":1}");
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_STRING_EQUAL(s.items[1], "{\"x\":1}");
    seen_free(&s);
    qmp_framer_free(f);
}

static void test_invalid_utf8(void)
{
    QmpFramer *f = qmp_framer_new(1024);
    Seen s = { 0 };

    feed(f, &s, "{\"a\": \"\xc3\x28\"}\n{\"b\":1}\n");
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_EQUAL(s.items[0][0], '!');
    CU_ASSERT_STRING_EQUAL(s.items[1], "{\"b\":1}");
    seen_free(&s);
    qmp_framer_free(f);
}

static void test_oversized(void)
{
    QmpFramer *f = qmp_framer_new(64);
    Seen s = { 0 };
    char big[200];

    /* Split over reads. */
    memset(big, 'a', sizeof(big));
    feed(f, &s, "{\"k\": \"");
    qmp_framer_feed(f, big, sizeof(big), collect, &s);
    CU_ASSERT_EQUAL(s.n, 1);
    CU_ASSERT_EQUAL(strncmp(s.items[0], "!JSON message too large", 23), 0);
    feed(f, &s, "aaaa\"}\n{\"after\":1}");
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_STRING_EQUAL(s.items[1], "{\"after\":1}");
    seen_free(&s);

    /* Complete in one read but too large: refused, next one fine. */
    char *one = xasprintf("{\"k\":\"%.*s\"}{\"n\":2}", 100, big);
    feed(f, &s, one);
    free(one);
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_EQUAL(s.items[0][0], '!');
    CU_ASSERT_STRING_EQUAL(s.items[1], "{\"n\":2}");
    seen_free(&s);

    /* Whitespace between messages does not count. */
    char spaces[300];
    memset(spaces, ' ', sizeof(spaces));
    qmp_framer_feed(f, spaces, sizeof(spaces), collect, &s);
    feed(f, &s, "{\"ok\":1}");
    CU_ASSERT_EQUAL(s.n, 1);
    CU_ASSERT_STRING_EQUAL(s.items[0], "{\"ok\":1}");
    seen_free(&s);
    qmp_framer_free(f);
}

static void test_deep_nesting(void)
{
    QmpFramer *f = qmp_framer_new(1 << 20);
    Seen s = { 0 };
    char *deep = xmalloc(5001);

    memset(deep, '[', 5000);
    deep[5000] = '\0';
    feed(f, &s, deep);
    free(deep);
    CU_ASSERT_EQUAL(s.n, 1);
    CU_ASSERT_EQUAL(s.items[0][0], '!');
    seen_free(&s);
    feed(f, &s, "\n{\"ok\":1}");
    CU_ASSERT_EQUAL(s.n, 1);
    seen_free(&s);
    qmp_framer_free(f);
}

static void test_stop_callback(void)
{
    QmpFramer *f = qmp_framer_new(1024);
    Seen s = { .stop_after = 1 };

    feed(f, &s, "{\"a\":1}{\"b\":2}{\"c\":3}");
    CU_ASSERT_EQUAL(s.n, 1);
    seen_free(&s);
    qmp_framer_free(f);
}

static void test_scalars_are_messages(void)
{
    QmpFramer *f = qmp_framer_new(1024);
    Seen s = { 0 };

    /* Not objects, but valid JSON: dispatch rejects them, not framing. */
    feed(f, &s, "[1] \"s\" 42 ");
    CU_ASSERT_EQUAL(s.n, 3);
    seen_free(&s);
    qmp_framer_free(f);
}

static void check_format(const char *in, const char *want, bool pretty)
{
    json_object *o = json_tokener_parse(in);
    char *out;

    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    out = qjson_format(o, pretty);
    CU_ASSERT_STRING_EQUAL(out, want);
    free(out);
    json_object_put(o);
}

static void test_qjson_format(void)
{
    check_format("{\"return\":{},\"id\":1}", "{\"return\": {}, \"id\": 1}",
                 false);
    check_format("[1,true,null,\"x\",[]]", "[1, true, null, \"x\", []]",
                 false);
    /* Non-ASCII goes out as \u escapes, astral planes as pairs. */
    check_format("[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]",
                 "[\"\\u00e9\\u20ac\\ud83d\\ude00\"]", false);
    check_format("[\"a\\\"b\\\\c\\n\\t\\u0001\"]",
                 "[\"a\\\"b\\\\c\\n\\t\\u0001\"]", false);
    /* Runs of plain characters between escapes, at both ends. */
    check_format("[\"plain, \\\"q\\\" a\\\\b\xc3\xa9tail~\", \"~\"]",
                 "[\"plain, \\\"q\\\" a\\\\b\\u00e9tail~\", \"~\"]", false);
    check_format("{\"a\":[1,2],\"b\":{}}",
                 "{\n    \"a\": [\n        1,\n        2\n    ],\n"
                 "    \"b\": {}\n}", true);
    check_format("[18446744073709551615, -9223372036854775808]",
                 "[18446744073709551615, -9223372036854775808]", false);
}

/* The framer's verdict on one message given in one read, then again
 * byte by byte (its text then spans reads): the message as text, or
 * "!" and the error. */
static char *frame_one(const char *text)
{
    QmpFramer *f = qmp_framer_new(4096);
    Seen s = { 0 }, s2 = { 0 };
    char *out;

    feed(f, &s, text);
    feed(f, &s, "\n");
    for (size_t i = 0; text[i]; i++) {
        qmp_framer_feed(f, &text[i], 1, collect, &s2);
    }
    feed(f, &s2, "\n");
    CU_ASSERT_EQUAL_FATAL(s.n, 1);
    CU_ASSERT_EQUAL_FATAL(s2.n, 1);
    CU_ASSERT_STRING_EQUAL(s.items[0], s2.items[0]);
    out = xstrdup(s.items[0]);
    seen_free(&s);
    seen_free(&s2);
    qmp_framer_free(f);
    return out;
}

static void expect_frame(const char *text, const char *want)
{
    CLEANUP_FREE char *got = frame_one(text);

    if (strcmp(got, want) != 0) {
        fprintf(stderr, "\n%s: got %s, want %s\n", text, got, want);
    }
    CU_ASSERT_STRING_EQUAL(got, want);
}

#define DUP "!JSON parse error, duplicate key"

/* json-c keeps the last of two equal keys; QEMU refuses them. */
static void test_duplicate_keys(void)
{
    expect_frame("{\"execute\":\"quit\",\"execute\":\"query-version\"}",
                 DUP);
    expect_frame("{\"execute\":\"blockdev-add\",\"arguments\":"
                 "{\"driver\":\"null-co\",\"node-name\":\"a\","
                 "\"node-name\":\"b\"}}", DUP);
    expect_frame("{\"a\":{\"b\":{\"c\":1,\"d\":2,\"c\":3}}}", DUP);
    expect_frame("{\"l\":[{\"a\":1},{\"a\":1,\"a\":1}]}", DUP);
    expect_frame("[{\"a\":1,\"a\":2}]", DUP);
    /* equal once decoded */
    expect_frame("{\"a\":1,\"\\u0061\":2}", DUP);
    /* the first pair shifted: the walk goes on and still says why */
    expect_frame("{\"a\":[1],\"b\":{},\"a\":2,\"c\":[3]}", DUP);
    /* the same key in different objects is fine */
    expect_frame("{\"a\":{\"a\":1},\"b\":[{\"a\":2},{\"a\":3}]}",
                 "{\"a\":{\"a\":1},\"b\":[{\"a\":2},{\"a\":3}]}");
    expect_frame("{\"a\\\"\":1,\"a\":2}", "{\"a\\\"\":1,\"a\":2}");
    /* after the error the next message is read */
    {
        QmpFramer *f = qmp_framer_new(1024);
        Seen s = { 0 };

        feed(f, &s, "{\"a\":1,\"a\":1}{\"b\":1}");
        CU_ASSERT_EQUAL(s.n, 2);
        CU_ASSERT_STRING_EQUAL(s.items[0], DUP);
        CU_ASSERT_STRING_EQUAL(s.items[1], "{\"b\":1}");
        seen_free(&s);
        qmp_framer_free(f);
    }
}

/* json-c cuts a key at \u0000: "node-name\u0000x" would be node-name. */
static void test_nul_in_key(void)
{
    expect_frame("{\"node-name\\u0000x\":1}",
                 "!JSON parse error, object key contains \\u0000");
    expect_frame("{\"a\":{\"\\u0000\":1}}",
                 "!JSON parse error, object key contains \\u0000");
    /* an escaped backslash before u0000 is no NUL */
    expect_frame("{\"a\\\\u0000\":1}", "{\"a\\\\u0000\":1}");
    /* in a value it is the schema parsers' business */
    expect_frame("{\"a\":\"x\\u0000y\"}", "{\"a\":\"x\\u0000y\"}");
}

/* json-c saturates integers beyond 64 bits; QEMU reads them as
 * floating-point numbers, and so do we. */
static void test_big_integers(void)
{
    static const struct {
        const char *text;
        bool is_int;
    } nums[] = {
        { "9223372036854775807", true },
        { "-9223372036854775808", true },
        { "18446744073709551615", true },
        { "999999999999999999", true },
        { "-999999999999999999", true },
        { "0", true },
        { "18446744073709551616", false },
        { "-9223372036854775809", false },
        { "100000000000000000000000", false },
        { "-100000000000000000000000", false },
        { "1e26", false },
    };

    for (size_t i = 0; i < ARRAY_SIZE(nums); i++) {
        CLEANUP_FREE char *text = xasprintf("{\"a\":[{\"size\":%s}]}",
                                            nums[i].text);
        CLEANUP_JSON json_object *o = json_tokener_parse(text);
        json_object *v;

        CU_ASSERT_PTR_NULL(qmp_json_check(text, strlen(text), o));
        v = json_object_object_get(json_object_array_get_idx(
                json_object_object_get(o, "a"), 0), "size");
        CU_ASSERT_EQUAL(json_object_is_type(v, json_type_int),
                        nums[i].is_int);
        if (!nums[i].is_int) {
            CU_ASSERT_TRUE(json_object_is_type(v, json_type_double));
            CU_ASSERT_DOUBLE_EQUAL(json_object_get_double(v),
                                   strtod(nums[i].text, NULL), 1e-3);
        }
    }
    expect_frame("[18446744073709551616,1,-100000000000000000000]",
                 "[1.8446744073709552e+19,1,-1e+20]");
    /* top level: left alone (a scalar message is refused anyway) */
    expect_frame("100000000000000000000000", "18446744073709551615");
}

static void test_check_is_defensive(void)
{
    /* Text that does not match the object, or is cut short: an error,
     * never a read past the end. */
    static const char *const bad[] = {
        "", "{", "{\"a\"", "{\"a\":", "{\"a\":1", "[1,", "\"abc",
        "{\"a\\", "{1:2}", "[1 2]", "@",
    };
    CLEANUP_JSON json_object *o = json_tokener_parse("{\"a\":[1,2]}");

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CLEANUP_FREE char *copy = xstrdup(bad[i]);

        CU_ASSERT_PTR_NOT_NULL(qmp_json_check(copy, strlen(copy), o));
    }
    CU_ASSERT_PTR_NULL(qmp_json_check("{\"a\":[1,2]}", 11, o));
    CU_ASSERT_PTR_NULL(qmp_json_check(" [ ] ", 5, NULL));
}

static json_object *dispatch_text(const char *text)
{
    CLEANUP_JSON json_object *req = json_tokener_parse(text);
    QmpCtx ctx = { 0 };

    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    return qmp_dispatch(&ctx, req);
}

/* "query-version\u0000junk" is not query-version: CommandNotFound, with
 * the NUL shown as the six characters \u0000 (names[] holds them as
 * text, and the JSON request decodes them to a NUL). */
static void test_dispatch_nul_in_name(void)
{
    static const char *const names[] = {
        "query-version\\u0000junk", "query-version\\u0000",
        "qmp_capabilities\\u0000", "\\u0000",
    };

    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        CLEANUP_FREE char *req = xasprintf("{\"execute\": \"%s\", "
                                           "\"id\": 7}", names[i]);
        CLEANUP_FREE char *desc = xasprintf("The command %s has not been "
                                            "found", names[i]);
        CLEANUP_JSON json_object *reply = dispatch_text(req);
        json_object *e = json_object_object_get(reply, "error");

        CU_ASSERT_STRING_EQUAL(json_object_get_string(
            json_object_object_get(e, "class")), "CommandNotFound");
        CU_ASSERT_STRING_EQUAL(json_object_get_string(
            json_object_object_get(e, "desc")), desc);
        CU_ASSERT_EQUAL(json_object_get_int(
            json_object_object_get(reply, "id")), 7);
    }
}

static CU_TestInfo framing_tests[] = {
    { "several_in_one_read", test_several_in_one_read },
    { "split_byte_by_byte", test_split_byte_by_byte },
    { "error_then_resync", test_error_then_resync },
    { "invalid_utf8", test_invalid_utf8 },
    { "oversized", test_oversized },
    { "deep_nesting", test_deep_nesting },
    { "stop_callback", test_stop_callback },
    { "scalars_are_messages", test_scalars_are_messages },
    { "duplicate_keys", test_duplicate_keys },
    { "nul_in_key", test_nul_in_key },
    { "big_integers", test_big_integers },
    { "check_is_defensive", test_check_is_defensive },
    { "dispatch_nul_in_name", test_dispatch_nul_in_name },
    CU_TEST_INFO_NULL,
};

static CU_TestInfo json_tests[] = {
    { "qjson_format", test_qjson_format },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "framing", .pTests = framing_tests },
    { .pName = "qjson", .pTests = json_tests },
    CU_SUITE_INFO_NULL,
};
