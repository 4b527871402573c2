/* test-framing.c - QMP input framing and QMP-shaped JSON output. */
#include <stdlib.h>
#include <string.h>

#include "cunit-main.h"
#include "qmp/framing.h"
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
    check_format("{\"a\":[1,2],\"b\":{}}",
                 "{\n    \"a\": [\n        1,\n        2\n    ],\n"
                 "    \"b\": {}\n}", true);
    check_format("[18446744073709551615, -9223372036854775808]",
                 "[18446744073709551615, -9223372036854775808]", false);
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
