/* fuzz-qmp-input.c - libFuzzer target for everything a QMP client's bytes
 * reach before a handler runs: stream framing, then every command's
 * argument parser (the generated normalize functions, which parse and
 * check exactly as dispatch does, without side effects), and the
 * key=value parser of the command line.
 *
 *   meson setup build-fuzz -Dfuzzing=true --native-file ... (CC=clang)
 *   build-fuzz/tests/fuzz/fuzz-qmp-input -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qapi-commands.h"
#include "qmp/framing.h"
#include "util/keyval.h"

static bool on_frame(void *opaque, json_object *msg, const char *err)
{
    json_object *exec = NULL, *args = NULL, *out = NULL;
    Error *e = NULL;
    const QmpCommand *cmd;

    (void)opaque;
    (void)err;
    if (msg == NULL || !json_object_is_type(msg, json_type_object) ||
        !json_object_object_get_ex(msg, "execute", &exec) ||
        !json_object_is_type(exec, json_type_string)) {
        return true;
    }
    cmd = qmp_find_command(json_object_get_string(exec));
    if (cmd == NULL) {
        return true;
    }
    json_object_object_get_ex(msg, "arguments", &args);
    for (unsigned flags = 0; flags <= QAPI_PARSE_KEYVAL; flags++) {
        if (cmd->normalize(args, flags, &out, &e)) {
            json_object_put(out);
            out = NULL;
        } else {
            error_free(e);
            e = NULL;
        }
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    QmpFramer *f = qmp_framer_new(1 << 20);
    char *s;
    Error *e = NULL;
    json_object *kv;

    /* Split the input in two reads to exercise partial messages. */
    qmp_framer_feed(f, (const char *)data, size / 2, on_frame, NULL);
    qmp_framer_feed(f, (const char *)data + size / 2, size - size / 2,
                    on_frame, NULL);
    qmp_framer_free(f);

    s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    kv = keyval_parse(s, "type", &e);
    json_object_put(kv);
    error_free(e);
    free(s);
    return 0;
}
