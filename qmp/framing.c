/* framing.c - see framing.h.
 *
 * json-c's tokener keeps its state between calls, so a message may be
 * split over any number of reads, and JSON_TOKENER_ALLOW_TRAILING_CHARS
 * lets one read hold several messages: parse_end says where each ends.
 * The text of a message that spans reads is kept, because json-c hides
 * some things QMP refuses (qmp_json_check()).
 */
#include "qmp/framing.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/cleanup.h"
#include "util/util.h"

/* Nesting deeper than this is refused (QEMU allows 1024). */
#define FRAMER_MAX_DEPTH 1024

struct QmpFramer {
    struct json_tokener *tok;
    size_t max_message;
    size_t msg_bytes;         /* bytes of the message being parsed */
    bool skipping;            /* after an error: drop input up to '\n' */
    char *text;               /* the message's earlier reads (text_len
                               * bytes, text_cap allocated; NULL: none) */
    size_t text_len, text_cap;
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
        free(f->text);
        free(f);
    }
}

static bool framer_error(QmpFramer *f, const char *msg, QmpFrameFn *fn,
                         void *opaque)
{
    json_tokener_reset(f->tok);
    f->msg_bytes = 0;
    f->text_len = 0;
    f->skipping = true;
    return fn(opaque, NULL, msg);
}

/* Keep n more bytes of the message being parsed. */
static void framer_keep(QmpFramer *f, const char *buf, size_t n)
{
    if (f->text_len + n > f->text_cap) {
        f->text_cap = MAX(f->text_len + n, 2 * f->text_cap);
        f->text = xrealloc(f->text, f->text_cap);
    }
    memcpy(f->text + f->text_len, buf, n);
    f->text_len += n;
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
        const char *bad;
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
            } else {
                framer_keep(f, buf + off, n - off);
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
        if (f->msg_bytes + end > f->max_message) {
            snprintf(msg, sizeof(msg), "JSON message too large (limit is "
                     "%zu bytes)", f->max_message);
            bad = msg;
        } else if (f->text_len == 0) {
            bad = qmp_json_check(buf + off, end, obj);
        } else {
            framer_keep(f, buf + off, end);
            bad = qmp_json_check(f->text, f->text_len, obj);
        }
        off += end;
        if (bad != NULL) {
            json_object_put(obj);
            /* The message ended here: no need to skip to a newline. */
            go_on = framer_error(f, bad, fn, opaque);
            f->skipping = false;
        } else {
            json_tokener_reset(f->tok);
            f->msg_bytes = 0;
            f->text_len = 0;
            go_on = fn(opaque, obj, NULL);
            json_object_put(obj);
        }
        if (!go_on) {
            return;
        }
    }
}

/* ---- qmp_json_check ------------------------------------------------ */

/* A walk over JSON text that json-c accepted, beside the json_object it
 * made: object members pair up in order (json-c keeps insertion order,
 * and a text without duplicate keys has one member per key), array
 * elements by index.  Where the pairing breaks (a duplicate key shifts
 * it) the walk goes on over the text alone; the duplicate is reported
 * when the object ends.  Defensive: never reads past end. */
typedef struct JsonCheck {
    const char *p, *end;
    const char *err;          /* the first error, or NULL */
} JsonCheck;

static json_object *check_value(JsonCheck *c, json_object *obj,
                                unsigned depth);

static void check_space(JsonCheck *c)
{
    while (c->p < c->end && is_space(*c->p)) {
        c->p++;
    }
}

static bool check_fail(JsonCheck *c, const char *err)
{
    if (c->err == NULL) {
        c->err = err;
    }
    return false;
}

/* After a member or element: true if a ',' follows (and skip it). */
static bool check_comma(JsonCheck *c)
{
    check_space(c);
    if (c->p < c->end && *c->p == ',') {
        c->p++;
        return true;
    }
    return false;
}

static bool check_char(JsonCheck *c, char ch)
{
    check_space(c);
    if (c->p == c->end || *c->p != ch) {
        return check_fail(c, "JSON parse error, invalid input");
    }
    c->p++;
    return true;
}

/* Skip a string at c->p; *has_nul: it holds \u0000. */
static bool check_string(JsonCheck *c, bool *has_nul)
{
    *has_nul = false;
    if (!check_char(c, '"')) {
        return false;
    }
    while (c->p < c->end) {
        char ch = *c->p++;

        if (ch == '"') {
            return true;
        }
        if (ch == '\0') {
            *has_nul = true;
        } else if (ch == '\\' && c->p < c->end) {
            if (c->end - c->p >= 5 && memcmp(c->p, "u0000", 5) == 0) {
                *has_nul = true;
            }
            c->p++;
        }
    }
    return check_fail(c, "JSON parse error, invalid input");
}

/* A number: a double for an integer json-c saturated, else NULL. */
static json_object *check_number(JsonCheck *c)
{
    const char *start = c->p;
    bool is_int = true;
    CLEANUP_FREE char *s = NULL;
    size_t digits;

    while (c->p < c->end && (isdigit((unsigned char)*c->p) ||
                             strchr("+-.eE", *c->p) != NULL)) {
        if (*c->p == '.' || *c->p == 'e' || *c->p == 'E') {
            is_int = false;
        }
        c->p++;
    }
    digits = c->p - start - (*start == '-');
    /* 18 digits fit in int64; only longer integers can overflow. */
    if (!is_int || digits <= 18) {
        return NULL;
    }
    s = xstrndup(start, c->p - start);
    errno = 0;
    if (*s == '-') {
        (void)strtoll(s, NULL, 10);
    } else {
        (void)strtoull(s, NULL, 10);
    }
    if (errno != ERANGE) {
        return NULL;
    }
    return json_object_new_double(strtod(s, NULL));
}

static void check_object(JsonCheck *c, json_object *obj, unsigned depth)
{
    bool paired = json_object_is_type(obj, json_type_object);
    struct json_object_iterator it, it_end;
    size_t n = 0;

    if (paired) {
        it = json_object_iter_begin(obj);
        it_end = json_object_iter_end(obj);
    }
    c->p++;
    check_space(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return;
    }
    do {
        const char *key = NULL;
        json_object *child = NULL, *repl;
        bool has_nul;

        if (!check_string(c, &has_nul)) {
            return;
        }
        if (has_nul) {
            check_fail(c, "JSON parse error, object key contains \\u0000");
            return;
        }
        n++;
        if (paired && !json_object_iter_equal(&it, &it_end)) {
            key = json_object_iter_peek_name(&it);
            child = json_object_iter_peek_value(&it);
            json_object_iter_next(&it);
        }
        if (!check_char(c, ':')) {
            return;
        }
        repl = check_value(c, child, depth + 1);
        if (repl != NULL && key != NULL && c->err == NULL) {
            /* Replaces the value in place: the iterator stays valid. */
            json_object_object_add(obj, key, repl);
        } else {
            json_object_put(repl);
        }
        if (c->err != NULL) {
            return;
        }
    } while (check_comma(c));
    if (!check_char(c, '}')) {
        return;
    }
    if (paired && n != (size_t)json_object_object_length(obj)) {
        check_fail(c, "JSON parse error, duplicate key");
    }
}

static void check_array(JsonCheck *c, json_object *obj, unsigned depth)
{
    size_t len = json_object_is_type(obj, json_type_array)
                 ? json_object_array_length(obj) : 0;
    size_t i = 0;

    c->p++;
    check_space(c);
    if (c->p < c->end && *c->p == ']') {
        c->p++;
        return;
    }
    do {
        json_object *child = i < len ? json_object_array_get_idx(obj, i)
                                     : NULL;
        json_object *repl = check_value(c, child, depth + 1);

        if (repl != NULL && i < len && c->err == NULL) {
            json_object_array_put_idx(obj, i, repl);   /* frees child */
        } else {
            json_object_put(repl);
        }
        if (c->err != NULL) {
            return;
        }
        i++;
    } while (check_comma(c));
    check_char(c, ']');
}

/* Walk one value; returns a replacement for obj (a new reference) or
 * NULL to keep it. */
static json_object *check_value(JsonCheck *c, json_object *obj,
                                unsigned depth)
{
    bool has_nul;

    check_space(c);
    if (c->p == c->end || depth > FRAMER_MAX_DEPTH) {
        check_fail(c, "JSON parse error, invalid input");
        return NULL;
    }
    switch (*c->p) {
    case '{':
        check_object(c, obj, depth);
        return NULL;
    case '[':
        check_array(c, obj, depth);
        return NULL;
    case '"':
        /* A NUL in a string value is the schema parsers' to refuse. */
        check_string(c, &has_nul);
        return NULL;
    default:
        break;
    }
    if (*c->p == '-' || isdigit((unsigned char)*c->p)) {
        return check_number(c);
    }
    if (!isalpha((unsigned char)*c->p)) {
        check_fail(c, "JSON parse error, invalid input");
        return NULL;
    }
    while (c->p < c->end && isalpha((unsigned char)*c->p)) {
        c->p++;                         /* true, false, null */
    }
    return NULL;
}

const char *qmp_json_check(const char *text, size_t len, json_object *msg)
{
    JsonCheck c = { .p = text, .end = text + len };

    json_object_put(check_value(&c, msg, 0));
    return c.err;
}
