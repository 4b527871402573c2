/* fuzz-keyval-cli.c - libFuzzer target for the command-line parsers:
 * util/keyval.c (QEMU's key=value,... syntax), blockd's command line
 * (daemon/options.c, then each creating option's value through keyval
 * or JSON and the schema's argument check, as daemon/main.c does before
 * running it) and blockctl's request builders (client/qmpc.c: word
 * splitting, key=value arguments converted by the schema, raw JSON
 * lines).  Parse only: nothing is started, opened or connected.
 *
 * The first byte picks the parser, the rest is its input:
 *   0  keyval_parse, no implied key        1  ... implied key "qom-type"
 *   2  blockd's argv: NUL-separated words after "blockd"
 *   3  blockctl words: qmpc_split_words, then qmpc_build_args with the
 *      first word as the command
 *   4  qmpc_parse_line                     5  qmpc_parse_raw
 *   6  blockctl's argv: NUL-separated words after "blockctl"
 *      (client/blockctl-opts.c: its options, or "list" and its
 *      options; then the request it would send)
 * Every failure must come with a message; successes must be JSON
 * objects that print.
 *
 *   build-asan/tests/fuzz/fuzz-keyval-cli -max_total_time=60 \
 *       tests/fuzz/corpus/fuzz-keyval-cli
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "client/blockctl-opts.h"
#include "client/qmpc.h"
#include "daemon/options.h"
#include "qapi-cmdtable.h"
#include "util/keyval.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 64

/* A failure must say why. */
static void check_error(Error *err)
{
    if (!err || !error_get_pretty(err)[0]) {
        abort();
    }
    error_free(err);
}

/* A result must be an object that prints. */
static void check_object(json_object *obj)
{
    if (!json_object_is_type(obj, json_type_object) ||
        !json_object_to_json_string(obj)) {
        abort();
    }
    json_object_put(obj);
}

/* As daemon/main.c: JSON when it starts with '{', else keyval with the
 * option's implied key; then the command's schema check. */
static void check_action(const OptionAction *a)
{
    const char *cmd = option_command(a->kind);
    const QmpCommand *qc = cmd ? qmp_find_command(cmd) : NULL;
    const char *implied = a->kind == OPT_OBJECT ? "qom-type"
                          : a->kind == OPT_EXPORT ? "type" : NULL;
    json_object *args, *out = NULL;
    unsigned flags = 0;
    Error *err = NULL;

    if (!qc) {
        return;                  /* chardev, monitor, qmp */
    }
    if (a->value[0] == '{') {
        args = json_tokener_parse(a->value);
        if (!args) {
            return;
        }
    } else {
        args = keyval_parse(a->value, implied, &err);
        if (!args) {
            check_error(err);
            return;
        }
        flags = QAPI_PARSE_KEYVAL;
    }
    if (json_object_is_type(args, json_type_object)) {
        if (qc->normalize(args, flags, &out, &err)) {
            json_object_put(out);
        } else {
            check_error(err);
        }
    }
    json_object_put(args);
}

static void fuzz_blockd_argv(char *s, size_t len)
{
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    Options o;
    Error *err = NULL;

    argv[argc++] = "blockd";
    for (size_t i = 0; i < len && argc <= MAX_ARGS;) {
        argv[argc++] = s + i;
        i += strlen(s + i) + 1;
    }
    argv[argc] = NULL;
    /* options_parse() restarts getopt with optind = 1, which leaves
     * glibc's position inside a short-option cluster from the previous
     * call (an input freed since): blockd parses once, the fuzzer many
     * times.  optind = 0 and one call on an empty argv reset it all. */
    {
        static char *none[] = { "x", NULL };

        optind = 0;
        opterr = 0;
        (void)getopt(1, none, "");
    }
    memset(&o, 0, sizeof(o));
    if (!options_parse(&o, argc, argv, &err)) {
        check_error(err);
    } else {
        for (size_t i = 0; i < o.nactions; i++) {
            check_action(&o.actions[i]);
        }
    }
    options_free(&o);
}

static void fuzz_blockctl_words(const char *s)
{
    Error *err = NULL;
    size_t n = 0;
    char **words = qmpc_split_words(s, &n, &err);
    json_object *args;

    if (!words) {
        check_error(err);
        return;
    }
    if (words[n] != NULL) {
        abort();
    }
    if (n > 0) {
        args = qmpc_build_args(words[0], words + 1, n - 1, &err);
        if (args) {
            check_object(args);
        } else {
            check_error(err);
        }
    }
    qmpc_free_words(words);
}

/* blockctl's main() up to connecting; its messages go to stderr. */
static void fuzz_blockctl_argv(char *s, size_t len)
{
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    BlockctlOptions o;
    BlockctlListOptions l;
    json_object *req = NULL;
    Error *err = NULL;

    argv[argc++] = "blockctl";
    for (size_t i = 0; i < len && argc <= MAX_ARGS;) {
        argv[argc++] = s + i;
        i += strlen(s + i) + 1;
    }
    argv[argc] = NULL;
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        if (blockctl_parse_list(&l, argc - 1, argv + 1) ==
            BLOCKCTL_PARSE_RUN && l.addr.type == SOCK_ADDR_UNIX &&
            !l.addr.path) {
            abort();
        }
        return;
    }
    if (blockctl_parse(&o, argc, argv) != BLOCKCTL_PARSE_RUN) {
        return;
    }
    if (!o.addr || !o.addr[0] || o.nwords < 0 || o.words[o.nwords]) {
        abort();
    }
    if (blockctl_build_request(&o, &req, &err)) {
        if (req) {
            check_object(req);
        }
    } else if (req) {
        abort();
    } else {
        check_error(err);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    json_object *obj;
    Error *err = NULL;
    bool empty = false;
    char *s;

    if (size < 1) {
        return 0;
    }
    if (!quiet) {
        /* blockctl's and getopt's messages: not the fuzzer's output
         * (libFuzzer and the sanitizers keep their own descriptor). */
        FILE *null = fopen("/dev/null", "w");

        if (null) {
            stderr = null;
        }
        quiet = true;
    }
    log_set_level(LOG_LEVEL_ERROR);
    /* NUL-terminated copy (the argv mode keeps the inner NULs). */
    s = malloc(size);
    if (!s) {
        abort();
    }
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    switch (data[0] % 7) {
    case 0:
    case 1:
        obj = keyval_parse(s, data[0] % 7 ? "qom-type" : NULL, &err);
        if (obj) {
            check_object(obj);
        } else {
            check_error(err);
        }
        break;
    case 2:
        fuzz_blockd_argv(s, size - 1);
        break;
    case 3:
        fuzz_blockctl_words(s);
        break;
    case 4:
        obj = qmpc_parse_line(s, &empty, &err);
        if (obj) {
            check_object(obj);
        } else if (!empty) {
            check_error(err);
        }
        break;
    case 6:
        fuzz_blockctl_argv(s, size - 1);
        break;
    default:
        obj = qmpc_parse_raw(s, &err);
        if (obj) {
            check_object(obj);
        } else {
            check_error(err);
        }
        break;
    }
    free(s);
    return 0;
}
