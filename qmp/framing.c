/* framing.c - see framing.h.
 *
 * json-c's tokener keeps its state between calls, so a message may be
 * split over any number of reads, and JSON_TOKENER_ALLOW_TRAILING_CHARS
 * lets one read hold several messages: parse_end says where each ends.
 */
#include "qmp/framing.h"

#include <stdio.h>
#include <string.h>

#include "util/util.h"

/* Nesting deeper than this is refused (QEMU allows 1024). */
#define FRAMER_MAX_DEPTH 1024

struct QmpFramer {
    struct json_tokener *tok;
    size_t max_message;
    size_t msg_bytes;         /* bytes of the message being parsed */
    bool skipping;            /* after an error: drop input up to '\n' */
};

QmpFramer *qmp_framer_new(size_t max_message)
{
    QmpFramer *f = XNEW(QmpFramer);

    f->max_message = max_message;
    f->tok = json_tokener_new_ex(FRAMER_MAX_DEPTH);
    json_tokener_set_flags(f->tok, JSON_TOKENER_STRICT |
                           JSON_TOKENER_ALLOW_TRAILING_CHARS |
                           JSON_TOKENER_VALIDATE_UTF8);
    return f;
}

void qmp_framer_free(QmpFramer *f)
{
    if (f != NULL) {
        json_tokener_free(f->tok);
        free(f);
    }
}

static bool framer_error(QmpFramer *f, const char *msg, QmpFrameFn *fn,
                         void *opaque)
{
    json_tokener_reset(f->tok);
    f->msg_bytes = 0;
    f->skipping = true;
    return fn(opaque, NULL, msg);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

void qmp_framer_feed(QmpFramer *f, const char *buf, size_t n,
                     QmpFrameFn *fn, void *opaque)
{
    char msg[128];
    size_t off = 0;

    while (off < n) {
        json_object *obj;
        enum json_tokener_error err;
        size_t end;
        bool go_on;

        if (f->skipping) {
            const char *nl = memchr(buf + off, '\n', n - off);
            if (nl == NULL) {
                return;
            }
            off = nl - buf + 1;
            f->skipping = false;
            continue;
        }
        if (f->msg_bytes == 0) {
            while (off < n && is_space(buf[off])) {
                off++;
            }
            if (off == n) {
                return;
            }
        }
        obj = json_tokener_parse_ex(f->tok, buf + off, n - off);
        err = json_tokener_get_error(f->tok);
        end = json_tokener_get_parse_end(f->tok);
        if (err == json_tokener_continue) {
            f->msg_bytes += n - off;
            if (f->msg_bytes > f->max_message) {
                snprintf(msg, sizeof(msg), "JSON message too large (limit "
                         "is %zu bytes)", f->max_message);
                framer_error(f, msg, fn, opaque);
            }
            return;
        }
        if (err != json_tokener_success) {
            snprintf(msg, sizeof(msg), "JSON parse error, %s",
                     json_tokener_error_desc(err));
            off += end;
            if (!framer_error(f, msg, fn, opaque)) {
                return;
            }
            continue;
        }
        off += end;
        if (f->msg_bytes + end > f->max_message) {
            json_object_put(obj);
            snprintf(msg, sizeof(msg), "JSON message too large (limit is "
                     "%zu bytes)", f->max_message);
            /* The message ended here: no need to skip to a newline. */
            go_on = framer_error(f, msg, fn, opaque);
            f->skipping = false;
        } else {
            json_tokener_reset(f->tok);
            f->msg_bytes = 0;
            go_on = fn(opaque, obj, NULL);
            json_object_put(obj);
        }
        if (!go_on) {
            return;
        }
    }
}
