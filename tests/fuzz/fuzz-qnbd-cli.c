/* fuzz-qnbd-cli.c - libFuzzer target for blockd-nbd's command line:
 * qemu-nbd's options (daemon/qnbd-options.c: qnbd_parse, then
 * qnbd_check's cross-checks) and, when parsing succeeds, the QMP script
 * built from them (daemon/qnbd-script.c: --object and --image-opts
 * strings through keyval and the schema, -B, -l, -o, -s, --cache...)
 * and its --print-qmp text.  Nothing is started, opened or connected:
 * the script is built only when no image would be probed (-f given,
 * null-co://, or --image-opts naming its driver), so no input opens a
 * file.
 *
 * The input is the argv after "blockd-nbd", NUL-separated.  Every
 * failure must return a non-zero exit status (qemu-nbd's message goes
 * to stderr, sent to /dev/null here), every script must print.
 *
 *   build-asan/tests/fuzz/fuzz-qnbd-cli -max_total_time=60 \
 *       /tmp/corpus tests/fuzz/corpus/fuzz-qnbd-cli
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "daemon/qnbd.h"
#include "util/keyval.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 64

/* Would qnbd_build_script() open o->filename to probe its format? */
static bool would_probe(const QnbdOptions *o)
{
    json_object *raw, *file, *f;
    bool probe;

    if (!o->image_opts) {
        return o->format == NULL && strcmp(o->filename, "null-co://") != 0 &&
               strcmp(o->filename, "null-aio://") != 0;
    }
    raw = keyval_parse(o->filename, "file", NULL);
    if (!raw) {
        return false;           /* fails before any probe */
    }
    probe = !json_object_object_get_ex(raw, "driver", NULL) &&
            json_object_object_get_ex(raw, "file", &file);
    if (probe && json_object_is_type(file, json_type_object)) {
        probe = json_object_object_get_ex(file, "filename", &f);
    }
    json_object_put(raw);
    return probe;
}

static void check_script(const QnbdOptions *o)
{
    QnbdScript s;
    Error *err = NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    if (!qnbd_build_script(o, false, &s, &err)) {
        if (!err || !error_get_pretty(err)[0]) {
            abort();
        }
        error_free(err);
    } else {
        if (s.n == 0 || !s.export_node) {
            abort();
        }
        f = open_memstream(&text, &len);
        if (!f) {
            abort();
        }
        qnbd_script_print(&s, o, f);
        if (fclose(f) != 0 || len == 0) {
            abort();
        }
        free(text);
    }
    qnbd_script_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    char *argv[MAX_ARGS + 2];
    int argc = 0, status;
    QnbdOptions o;
    char *s;

    if (!quiet) {
        /* qemu-nbd's messages and getopt's: not the fuzzer's output
         * (libFuzzer and the sanitizers keep their own descriptor). */
        FILE *null = fopen("/dev/null", "w");

        if (null) {
            stderr = null;
        }
        log_set_level(LOG_LEVEL_ERROR);
        quiet = true;
    }
    s = malloc(size + 1);
    if (!s) {
        abort();
    }
    memcpy(s, data, size);
    s[size] = '\0';
    argv[argc++] = "blockd-nbd";
    for (size_t i = 0; i < size && argc <= MAX_ARGS;) {
        argv[argc++] = s + i;
        i += strlen(s + i) + 1;
    }
    argv[argc] = NULL;

    status = qnbd_parse(&o, argc, argv);
    if (status == 0) {
        status = qnbd_check(&o);
    }
    if (status == 0 && o.action == QNBD_SERVE && !(o.image_opts && o.format)
        && !would_probe(&o)) {
        check_script(&o);
    }
    if (status < 0) {
        abort();
    }
    qnbd_options_free(&o);
    free(s);
    return 0;
}
