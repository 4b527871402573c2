/* test-blockctl.c - blockctl's pure parts (words → QMP request) and
 * the qmpc framing, against a scripted server in a child process. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/blockctl-opts.h"
#include "client/qmpc.h"
#include "cunit-main.h"
#include "util/cleanup.h"
#include "util/json.h"
#include "util/util.h"

/* obj as compact QMP-style text, for comparing (owned by the caller). */
static char *fmt(json_object *obj)
{
    return qjson_format(obj, false);
}

/* Split line, build the arguments of command from the words and
 * compare their JSON text with expect (NULL: must fail with a message
 * starting with err_prefix). */
static void check_args(const char *command, const char *line,
                       const char *expect, const char *err_prefix)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_JSON json_object *args = NULL;
    CLEANUP_FREE char *text = NULL;
    size_t n = 0;
    char **words = qmpc_split_words(line, &n, &err);

    CU_ASSERT_PTR_NOT_NULL_FATAL(words);
    args = qmpc_build_args(command, words, n, &err);
    qmpc_free_words(words);
    if (expect) {
        if (!args) {
            fprintf(stderr, "\n%s %s: %s\n", command, line,
                    error_get_pretty(err));
        }
        CU_ASSERT_PTR_NOT_NULL_FATAL(args);
        text = fmt(args);
        if (strcmp(text, expect) != 0) {
            fprintf(stderr, "\n%s %s:\n got %s\nwant %s\n", command, line,
                    text, expect);
        }
        CU_ASSERT_STRING_EQUAL(text, expect);
    } else {
        if (args) {
            text = fmt(args);
            fprintf(stderr, "\n%s %s: got %s, want an error\n", command,
                    line, text);
        }
        CU_ASSERT_PTR_NULL(args);
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        if (strncmp(error_get_pretty(err), err_prefix,
                    strlen(err_prefix)) != 0) {
            fprintf(stderr, "\n%s %s: error '%s', want '%s...'\n", command,
                    line, error_get_pretty(err), err_prefix);
        }
        CU_ASSERT_NSTRING_EQUAL(error_get_pretty(err), err_prefix,
                                strlen(err_prefix));
    }
}

static void check_words(const char *line, const char *const *expect,
                        size_t nexpect)
{
    CLEANUP_ERROR Error *err = NULL;
    size_t n = 99;
    char **words = qmpc_split_words(line, &n, &err);

    CU_ASSERT_PTR_NOT_NULL_FATAL(words);
    CU_ASSERT_EQUAL(n, nexpect);
    for (size_t i = 0; i < n && i < nexpect; i++) {
        CU_ASSERT_STRING_EQUAL(words[i], expect[i]);
    }
    CU_ASSERT_PTR_NULL(words[n]);
    qmpc_free_words(words);
}

static void check_words_fail(const char *line, const char *err_prefix)
{
    CLEANUP_ERROR Error *err = NULL;
    size_t n;
    char **words = qmpc_split_words(line, &n, &err);

    CU_ASSERT_PTR_NULL(words);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_NSTRING_EQUAL(error_get_pretty(err), err_prefix,
                            strlen(err_prefix));
    qmpc_free_words(words);
}

static void test_split_words(void)
{
    check_words("", NULL, 0);
    check_words("   \t ", NULL, 0);
    check_words("query-version",
                (const char *const[]){ "query-version" }, 1);
    check_words("  a=1\tb=2  ", (const char *const[]){ "a=1", "b=2" }, 2);
    check_words("s='hello world' t=\"x \\\"y\\\" \\\\\" u=a\\ b",
                (const char *const[]){ "s=hello world", "t=x \"y\" \\",
                                       "u=a b" }, 3);
    /* JSON values run to their closing bracket across blanks. */
    check_words("cmd bitmaps=[\"a b\", {\"x\": [1, 2]}] n=1",
                (const char *const[]){ "cmd",
                                       "bitmaps=[\"a b\", {\"x\": [1, 2]}]",
                                       "n=1" }, 3);
    check_words("{\"execute\": \"x\"}",
                (const char *const[]){ "{\"execute\": \"x\"}" }, 1);
    /* A bracket inside a JSON string does not count. */
    check_words("a={\"k\": \"}\"} b=2",
                (const char *const[]){ "a={\"k\": \"}\"}", "b=2" }, 2);
    /* Brackets elsewhere than a value's start are plain characters. */
    check_words("a=x{ b=]",
                (const char *const[]){ "a=x{", "b=]" }, 2);
    check_words("a='{' b=''", (const char *const[]){ "a={", "b=" }, 2);
}

static void test_split_words_bad(void)
{
    check_words_fail("a='open", "Unterminated ' quote");
    check_words_fail("a=\"open", "Unterminated \" quote");
    check_words_fail("a=\"open\\\"", "Unterminated \" quote");
    check_words_fail("a=b\\", "Trailing backslash");
    check_words_fail("a={\"k\": 1", "Unterminated JSON value");
    check_words_fail("a=[[[]]", "Unterminated JSON value");
    check_words_fail("a={\"k\": \"}", "Unterminated JSON value");
}

static void test_args_schema_conversion(void)
{
    /* bool and int members converted by the schema. */
    check_args("blockdev-add",
               "driver=null-co node-name=n0 size=4096 read-only=on",
               "{\"driver\": \"null-co\", \"node-name\": \"n0\", "
               "\"read-only\": true, \"size\": 4096}", NULL);
    check_args("blockdev-add",
               "driver=null-co node-name=n0 read-only=off size=0x1000",
               "{\"driver\": \"null-co\", \"node-name\": \"n0\", "
               "\"read-only\": false, \"size\": 4096}", NULL);
    /* uint64 and enum members. */
    check_args("blockdev-add",
               "driver=null-co node-name=n0 latency-ns=18446744073709551615",
               "{\"driver\": \"null-co\", \"node-name\": \"n0\", "
               "\"latency-ns\": 18446744073709551615}", NULL);
    check_args("blockdev-add",
               "driver=file node-name=f filename=a.img locking=off",
               "{\"driver\": \"file\", \"node-name\": \"f\", "
               "\"filename\": \"a.img\", \"locking\": \"off\"}",
               NULL);
    /* Nested objects from dotted keys; commas in values survive. */
    check_args("blockdev-add",
               "driver=raw node-name=r file.driver=file "
               "file.filename=a,b.img",
               "{\"driver\": \"raw\", \"node-name\": \"r\", "
               "\"file\": {\"driver\": \"file\", "
               "\"filename\": \"a,b.img\"}}", NULL);
    /* Arrays from numeric keys. */
    check_args("block-dirty-bitmap-merge",
               "node=n0 target=t bitmaps.0=b0 bitmaps.1=b1",
               "{\"node\": \"n0\", \"target\": \"t\", "
               "\"bitmaps\": [\"b0\", \"b1\"]}", NULL);
    check_args("block-dirty-bitmap-merge",
               "node=n0 target=t bitmaps.1=b1 bitmaps.0=b0",
               "{\"node\": \"n0\", \"target\": \"t\", "
               "\"bitmaps\": [\"b0\", \"b1\"]}", NULL);
    /* JSON values are used as they are. */
    check_args("block-dirty-bitmap-merge",
               "node=n0 target=t "
               "bitmaps=[\"b0\", {\"node\": \"n1\", \"name\": \"b1\"}]",
               "{\"node\": \"n0\", \"target\": \"t\", "
               "\"bitmaps\": [\"b0\", {\"node\": \"n1\", "
               "\"name\": \"b1\"}]}", NULL);
    check_args("blockdev-add",
               "driver=raw node-name=r "
               "file={\"driver\": \"null-co\", \"size\": 512}",
               "{\"driver\": \"raw\", \"node-name\": \"r\", "
               "\"file\": {\"driver\": \"null-co\", \"size\": 512}}", NULL);
    /* No arguments. */
    check_args("query-version", "", "{}", NULL);
}

static void test_args_unknown_command(void)
{
    /* Not in the schema: strings stay strings, structure is built. */
    check_args("x-unknown", "a=1 b.c=on d.0=x d.1=y e=[1, true]",
               "{\"a\": \"1\", \"b\": {\"c\": \"on\"}, "
               "\"d\": [\"x\", \"y\"], \"e\": [1, true]}", NULL);
    check_args("x-unknown", "a=", "{\"a\": \"\"}", NULL);
    check_args("x-unknown", "a=x=y", "{\"a\": \"x=y\"}", NULL);
}

static void test_args_bad(void)
{
    check_args("blockdev-add", "driver=null-co node-name=n size=1x", NULL,
               "Parameter 'size'");
    check_args("blockdev-add", "driver=null-co node-name=n read-only=2",
               NULL, "Parameter 'read-only'");
    check_args("blockdev-add", "driver=nope node-name=n", NULL,
               "Parameter 'driver' does not accept value 'nope'");
    check_args("blockdev-add", "driver=null-co node-name=n bogus=1", NULL,
               "Parameter 'bogus' is unexpected");
    check_args("blockdev-del", "", NULL, "Parameter 'node-name' is missing");
    check_args("x-unknown", "novalue", NULL, "Expected key=value");
    check_args("x-unknown", "=v", NULL, "Expected key=value");
    check_args("x-unknown", "a,b=1", NULL, "Invalid parameter name");
    check_args("x-unknown", "a.=1", NULL, "");
    check_args("x-unknown", "a=1 a.b=2", NULL,
               "Parameters 'a.*' used inconsistently");
    check_args("x-unknown", "a=1 a=2", NULL, "Parameter 'a' is duplicated");
    check_args("x-unknown", "a.1=x", NULL, "");
    check_args("x-unknown", "a={\"k\": 1}}", NULL,
               "Invalid JSON value for 'a'");
    check_args("x-unknown", "a=[1,]", NULL, "Invalid JSON value for 'a'");
    check_args("x-unknown", "a={k: 1}", NULL, "Invalid JSON value");
    check_args("x-unknown", "a=[1] b={\"x\": nul}", NULL,
               "Invalid JSON value for 'b'");
}

static void check_line(const char *line, const char *expect,
                       const char *err_prefix)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_JSON json_object *req = NULL;
    CLEANUP_FREE char *text = NULL;
    bool empty = true;

    req = qmpc_parse_line(line, &empty, &err);
    CU_ASSERT_FALSE(empty);
    if (expect) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(req);
        text = fmt(req);
        if (strcmp(text, expect) != 0) {
            fprintf(stderr, "\n'%s': got %s\n", line, text);
        }
        CU_ASSERT_STRING_EQUAL(text, expect);
    } else {
        CU_ASSERT_PTR_NULL(req);
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        CU_ASSERT_NSTRING_EQUAL(error_get_pretty(err), err_prefix,
                                strlen(err_prefix));
    }
}

static void test_parse_line(void)
{
    bool empty = false;
    Error *err = NULL;

    CU_ASSERT_PTR_NULL(qmpc_parse_line("   ", &empty, &err));
    CU_ASSERT_TRUE(empty);
    CU_ASSERT_PTR_NULL(err);
    CU_ASSERT_PTR_NULL(qmpc_parse_line(" # a comment {", &empty, &err));
    CU_ASSERT_TRUE(empty);
    CU_ASSERT_PTR_NULL(err);

    check_line("query-version", "{\"execute\": \"query-version\"}", NULL);
    check_line("  blockdev-del node-name=n0  ",
               "{\"execute\": \"blockdev-del\", "
               "\"arguments\": {\"node-name\": \"n0\"}}", NULL);
    check_line("{\"execute\": \"x\", \"id\": [1]}",
               "{\"execute\": \"x\", \"id\": [1]}", NULL);
    check_line("\"query-version\"", "{\"execute\": \"query-version\"}",
               NULL);
    check_line("{\"execute\": ", NULL, "Invalid JSON value");
    check_line("{} {}", NULL, "Invalid JSON value");
    check_line("\"x\" 1", NULL, "Invalid JSON value");
    check_line("bad!name a=1", NULL, "Invalid command name");
    check_line("blockdev-del node-name", NULL, "Expected key=value");
}

static void test_parse_raw(void)
{
    CLEANUP_ERROR Error *err = NULL;
    json_object *req;
    char *text;

    req = qmpc_parse_raw(" query-commands\n", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    text = fmt(req);
    CU_ASSERT_STRING_EQUAL(text, "{\"execute\": \"query-commands\"}");
    free(text);
    json_object_put(req);

    req = qmpc_parse_raw("{\"execute\": \"a\", \"arguments\": {\"x\": 1}}",
                         &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    json_object_put(req);

    CU_ASSERT_PTR_NULL(qmpc_parse_raw("[1, 2]", &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(TAKE_PTR(err));
    CU_ASSERT_PTR_NULL(qmpc_parse_raw("", &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(TAKE_PTR(err));
    CU_ASSERT_PTR_NULL(qmpc_parse_raw("two words", &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(TAKE_PTR(err));
    CU_ASSERT_PTR_NULL(qmpc_parse_raw("\"\\u0000\"", &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(TAKE_PTR(err));
    CU_ASSERT_PTR_NULL(qmpc_parse_raw("{\"a\": 1", &err));
    CU_ASSERT_PTR_NOT_NULL(err);
}

/* Hostile and deep input must fail cleanly, not crash. */
static void test_args_hostile(void)
{
    CLEANUP_FREE char *deep = xmalloc(20000);
    CLEANUP_FREE char *line = NULL;
    CLEANUP_ERROR Error *err = NULL;
    json_object *args;
    size_t n;
    char **words;

    memset(deep, '[', 19999);
    deep[19999] = '\0';
    line = xasprintf("a=%s", deep);
    words = qmpc_split_words(line, &n, &err);
    CU_ASSERT_PTR_NULL(words);
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(TAKE_PTR(err));

    /* Balanced but too deep for the JSON parser. */
    free(line);
    line = xmalloc(4 * 1000 + 8);
    strcpy(line, "a=");
    for (int i = 0; i < 1000; i++) {
        strcat(line, "[");
    }
    for (int i = 0; i < 1000; i++) {
        strcat(line, "]");
    }
    words = qmpc_split_words(line, &n, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(words);
    args = qmpc_build_args("x-unknown", words, n, &err);
    CU_ASSERT_PTR_NULL(args);
    CU_ASSERT_PTR_NOT_NULL(err);
    qmpc_free_words(words);
}

/*
 * Framing: a child process plays a QMP server from a script of writes.
 */

typedef struct Step {
    const char *data;       /* bytes to send, or NULL: read a request */
    unsigned delay_ms;      /* before sending */
} Step;

static char sock_path[108];

static pid_t start_server(const Step *steps, size_t nsteps, int *lfd_out)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    char dir[] = "/tmp/tbctl-XXXXXX";
    int lfd;
    pid_t pid;

    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(sock_path, sizeof(sock_path), "%s/s", dir);
    strcpy(sun.sun_path, sock_path);
    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(lfd >= 0);
    CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
    CU_ASSERT_FATAL(listen(lfd, 1) == 0);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        int fd = accept(lfd, NULL, NULL);
        char buf[4096];

        if (fd < 0) {
            _exit(1);
        }
        for (size_t i = 0; i < nsteps; i++) {
            usleep(steps[i].delay_ms * 1000);
            if (steps[i].data) {
                if (write_full(fd, steps[i].data,
                               strlen(steps[i].data)) < 0) {
                    _exit(1);
                }
            } else if (read(fd, buf, sizeof(buf)) <= 0) {
                _exit(1);
            }
        }
        /* Linger so the client sees the data before the close. */
        usleep(100 * 1000);
        _exit(0);
    }
    *lfd_out = lfd;
    return pid;
}

static void stop_server(pid_t pid, int lfd)
{
    int status;

    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    close(lfd);
    unlink(sock_path);
    *strrchr(sock_path, '/') = '\0';
    rmdir(sock_path);
}

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"major\": 10, " \
                 "\"minor\": 1, \"micro\": 0}, \"package\": \"\"}, " \
                 "\"capabilities\": [\"oob\"]}}\r\n"

static void test_framing_split_and_batched(void)
{
    /* The greeting in three pieces, the capabilities reply in one,
     * then an event and a reply in a single write, then a reply one
     * byte-group at a time. */
    static const Step steps[] = {
        { "{\"QMP\": {\"vers", 0 },
        { "ion\": {\"qemu\": {\"major\": 10, \"minor\": 1, \"micro\": 0}, ",
          10 },
        { "\"package\": \"\"}, \"capabilities\": []}}\r\n", 10 },
        { NULL, 0 },
        { "{\"return\": {}, \"id\": 1}\r\n", 0 },
        { NULL, 0 },
        { "{\"event\": \"E1\", \"data\": {}}\r\n"
          "{\"return\": {\"x\": 1}, \"id\": 2}\r\n", 0 },
        { NULL, 0 },
        { "{\"ret", 0 },
        { "urn\": [1", 20 },
        { ", 2]}", 20 },
        { "\r\n{\"event\": \"E2\"}\r\n", 20 },
    };
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_JSON json_object *reply = NULL;
    CLEANUP_FREE char *text = NULL;
    json_object *ev;
    QmpClient *c;
    int lfd;
    pid_t pid = start_server(steps, ARRAY_SIZE(steps), &lfd);

    c = qmpc_connect(sock_path, 5000, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_TRUE(json_object_object_get_ex(qmpc_greeting(c), "QMP",
                                             NULL));
    CU_ASSERT_TRUE(qmpc_negotiate(c, &err));
    CU_ASSERT_TRUE(qmpc_execute(c, "a", NULL, &reply, &err));
    text = fmt(reply);
    CU_ASSERT_STRING_EQUAL(text, "{\"return\": {\"x\": 1}, \"id\": 2}");
    /* The event that came first was queued. */
    CU_ASSERT_TRUE(qmpc_pending(c));
    CU_ASSERT_EQUAL(qmpc_next_event(c, 0, &ev, &err), 1);
    CU_ASSERT_STRING_EQUAL(
        json_object_get_string(json_object_object_get(ev, "event")), "E1");
    json_object_put(ev);
    json_object_put(TAKE_PTR(reply));
    free(TAKE_PTR(text));
    CU_ASSERT_TRUE(qmpc_execute(c, "b", NULL, &reply, &err));
    text = fmt(reply);
    CU_ASSERT_STRING_EQUAL(text, "{\"return\": [1, 2]}");
    CU_ASSERT_EQUAL(qmpc_next_event(c, 2000, &ev, &err), 1);
    CU_ASSERT_STRING_EQUAL(
        json_object_get_string(json_object_object_get(ev, "event")), "E2");
    json_object_put(ev);
    /* Then the server goes away: end of stream. */
    CU_ASSERT_EQUAL(qmpc_next_event(c, 2000, &ev, &err), -1);
    CU_ASSERT_TRUE(qmpc_eof(c));
    qmpc_close(c);
    stop_server(pid, lfd);
}

/* Run a client against steps and expect qmpc_connect or the first
 * command to fail with a message containing what. */
static void expect_failure(const Step *steps, size_t nsteps,
                           const char *what)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_JSON json_object *reply = NULL;
    QmpClient *c;
    int lfd;
    pid_t pid = start_server(steps, nsteps, &lfd);

    c = qmpc_connect(sock_path, 2000, &err);
    if (c) {
        CU_ASSERT_FALSE(qmpc_execute(c, "a", NULL, &reply, &err));
        if (reply) {
            CLEANUP_FREE char *text = fmt(reply);
            fprintf(stderr, "\ngot reply %s, want '%s'\n", text, what);
        }
        qmpc_close(c);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (!strstr(error_get_pretty(err), what)) {
        fprintf(stderr, "\nerror '%s', want '%s'\n", error_get_pretty(err),
                what);
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), what));
    stop_server(pid, lfd);
}

static void test_framing_bad(void)
{
    expect_failure((const Step[]){ { "hello\r\n", 0 } }, 1, "malformed");
    expect_failure((const Step[]){ { "[1, 2]\r\n", 0 } }, 1,
                   "not an object");
    expect_failure((const Step[]){ { "null\r\n", 0 } }, 1,
                   "not an object");
    expect_failure((const Step[]){ { "42\r\n", 0 } }, 1, "not an object");
    expect_failure((const Step[]){ { "{\"hello\": 1}\r\n", 0 } }, 1,
                   "Not a QMP greeting");
    expect_failure((const Step[]){ { "", 0 } }, 1, "closed");
    expect_failure((const Step[]){ { "{\"QMP\": {", 0 } }, 1,
                   "middle of a message");
    expect_failure((const Step[]){ { "", 3000 } }, 1, "Timed out");
    expect_failure((const Step[]){ { GREETING, 0 }, { NULL, 0 },
                                   { "{\"return\": {]}\r\n", 0 } },
                   3, "malformed");
    expect_failure((const Step[]){ { GREETING, 0 }, { NULL, 0 },
                                   { "{\"return\": tru}\r\n", 0 } },
                   3, "malformed");
}

/* A hostile server nesting arrays without end: the parser's depth
 * limit stops it, nothing overflows. */
static void test_framing_deep(void)
{
    CLEANUP_FREE char *deep = xmalloc(100001);
    Step steps[3] = { { GREETING, 0 }, { NULL, 0 }, { NULL, 0 } };

    strcpy(deep, "{\"return\": ");
    memset(deep + strlen(deep), '[', 100000 - strlen(deep));
    deep[100000] = '\0';
    steps[2].data = deep;
    expect_failure(steps, 3, "malformed");
}

static void test_connect_bad(void)
{
    CLEANUP_ERROR Error *err = NULL;
    char longpath[300];

    CU_ASSERT_PTR_NULL(qmpc_connect("/nonexistent/qmp.sock", 100, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "Failed to connect"));
    error_free(TAKE_PTR(err));
    CU_ASSERT_PTR_NULL(qmpc_connect("unix:", 100, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(TAKE_PTR(err));
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    CU_ASSERT_PTR_NULL(qmpc_connect(longpath, 100, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "too long"));
    error_free(TAKE_PTR(err));
    CU_ASSERT_PTR_NULL(qmpc_connect("tcp:nocolon", 100, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(TAKE_PTR(err));
    CU_ASSERT_PTR_NULL(qmpc_connect("tcp:[::1", 100, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(TAKE_PTR(err));
    CU_ASSERT_PTR_NULL(qmpc_connect("tcp:127.0.0.1:", 100, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
}

/* blockctl's command line returns instead of exiting, and may be
 * parsed again: an error in the middle of "-pZe" must not leave getopt
 * inside that cluster for the next argv. */
static void test_parse_argv(void)
{
    char *bad[] = { "blockctl", "-pZe", NULL };
    char *one[] = { "blockctl", "-ps", "q.sock", "blockdev-del", "node-name=a",
                    NULL };
    char *help[] = { "blockctl", "-h", NULL };
    char *json[] = { "blockctl", "-s", "q", "--json", "{\"execute\": \"x\"}",
                     NULL };
    char *list[] = { "list", "--host", "h", "--timeout", "1.5", NULL };
    char *listbad[] = { "list", "-s", "a", "--fd", "3", NULL };
    BlockctlOptions o;
    BlockctlListOptions l;
    json_object *req = NULL;
    Error *err = NULL;
    FILE *saved = stderr;

    stderr = fopen("/dev/null", "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(stderr);
    CU_ASSERT_EQUAL(blockctl_parse(&o, 2, bad), BLOCKCTL_PARSE_ERROR);
    CU_ASSERT_EQUAL(blockctl_parse(&o, 5, one), BLOCKCTL_PARSE_RUN);
    CU_ASSERT_EQUAL(blockctl_parse(&o, 2, help), BLOCKCTL_PARSE_HELP);
    CU_ASSERT_EQUAL(blockctl_parse_list(&l, 5, listbad),
                    BLOCKCTL_PARSE_ERROR);
    fclose(stderr);
    stderr = saved;

    CU_ASSERT_EQUAL_FATAL(blockctl_parse(&o, 5, one), BLOCKCTL_PARSE_RUN);
    CU_ASSERT(o.pretty);
    CU_ASSERT_STRING_EQUAL(o.addr, "q.sock");
    CU_ASSERT_EQUAL_FATAL(o.nwords, 2);
    CU_ASSERT_STRING_EQUAL(o.words[0], "blockdev-del");
    CU_ASSERT(blockctl_build_request(&o, &req, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    json_object_put(TAKE_PTR(req));

    CU_ASSERT_EQUAL_FATAL(blockctl_parse(&o, 5, json), BLOCKCTL_PARSE_RUN);
    CU_ASSERT(blockctl_build_request(&o, &req, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(req);
    json_object_put(TAKE_PTR(req));

    CU_ASSERT_EQUAL_FATAL(blockctl_parse_list(&l, 5, list),
                          BLOCKCTL_PARSE_RUN);
    CU_ASSERT_EQUAL(l.addr.type, SOCK_ADDR_INET);
    CU_ASSERT_STRING_EQUAL(l.addr.host, "h");
    CU_ASSERT_STRING_EQUAL(l.addr.port, "10809");
    CU_ASSERT_EQUAL(l.nbd.timeout_ms, 1500);
}

static CU_TestInfo blockctl_tests[] = {
    { "split_words", test_split_words },
    { "split_words_bad", test_split_words_bad },
    { "args_schema_conversion", test_args_schema_conversion },
    { "args_unknown_command", test_args_unknown_command },
    { "args_bad", test_args_bad },
    { "args_hostile", test_args_hostile },
    { "parse_line", test_parse_line },
    { "parse_raw", test_parse_raw },
    { "framing_split_and_batched", test_framing_split_and_batched },
    { "framing_bad", test_framing_bad },
    { "framing_deep", test_framing_deep },
    { "connect_bad", test_connect_bad },
    { "parse_argv", test_parse_argv },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "blockctl", .pTests = blockctl_tests },
    CU_SUITE_INFO_NULL,
};
