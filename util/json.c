/* json.c - see json.h. */
#include "util/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* The userdata of a json-c string that holds JSON text (qjson_new_raw). */
static char qjson_raw_tag;

typedef struct Out {
    char **buf;
    size_t *len, *cap;
} Out;

static void out_bytes(Out *o, const char *s, size_t n)
{
    if (*o->len + n + 1 > *o->cap) {
        size_t cap = *o->cap ? *o->cap : 256;
        while (cap < *o->len + n + 1) {
            cap *= 2;
        }
        *o->buf = xrealloc(*o->buf, cap);
        *o->cap = cap;
    }
    memcpy(*o->buf + *o->len, s, n);
    *o->len += n;
    (*o->buf)[*o->len] = '\0';
}

static void out_str(Out *o, const char *s)
{
    out_bytes(o, s, strlen(s));
}

static void out_indent(Out *o, int depth)
{
    out_str(o, "\n");
    for (int i = 0; i < depth; i++) {
        out_str(o, "    ");
    }
}

/* Decode one UTF-8 sequence; returns its length, or 0 if invalid (the
 * byte is then escaped as U+FFFD). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len, i;
    uint32_t c = s[0];

    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2;
        c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        c &= 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        c = (c << 6) | (s[i] & 0x3f);
    }
    if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) ||
        (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
        (c >= 0xd800 && c <= 0xdfff)) {
        return 0;
    }
    *cp = c;
    return len;
}

static void out_string(Out *o, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    char tmp[16];
    size_t i = 0;

    out_str(o, "\"");
    while (i < n) {
        unsigned char c = p[i];
        uint32_t cp;
        size_t l;

        switch (c) {
        case '"': out_str(o, "\\\""); i++; continue;
        case '\\': out_str(o, "\\\\"); i++; continue;
        case '\b': out_str(o, "\\b"); i++; continue;
        case '\f': out_str(o, "\\f"); i++; continue;
        case '\n': out_str(o, "\\n"); i++; continue;
        case '\r': out_str(o, "\\r"); i++; continue;
        case '\t': out_str(o, "\\t"); i++; continue;
        default:
            break;
        }
        if (c >= 0x20 && c < 0x7f) {
            /* A run of characters that stand for themselves, at once. */
            size_t j = i + 1;

            while (j < n && p[j] >= 0x20 && p[j] < 0x7f && p[j] != '"' &&
                   p[j] != '\\') {
                j++;
            }
            out_bytes(o, (const char *)&p[i], j - i);
            i = j;
            continue;
        }
        l = utf8_decode(&p[i], n - i, &cp);
        if (l == 0) {
            cp = 0xfffd;
            l = 1;
        }
        if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            snprintf(tmp, sizeof(tmp), "\\u%04x\\u%04x",
                     0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
        } else {
            snprintf(tmp, sizeof(tmp), "\\u%04x", cp);
        }
        out_str(o, tmp);
        i += l;
    }
    out_str(o, "\"");
}

static void out_value(Out *o, json_object *obj, bool pretty, int depth)
{
    char tmp[64];

    switch (json_object_get_type(obj)) {
    case json_type_null:
        out_str(o, "null");
        break;
    case json_type_boolean:
        out_str(o, json_object_get_boolean(obj) ? "true" : "false");
        break;
    case json_type_int:
        if (json_object_get_int64(obj) == INT64_MAX) {
            /* json-c keeps large unsigned values separately */
            snprintf(tmp, sizeof(tmp), "%llu",
                     (unsigned long long)json_object_get_uint64(obj));
        } else {
            snprintf(tmp, sizeof(tmp), "%lld",
                     (long long)json_object_get_int64(obj));
        }
        out_str(o, tmp);
        break;
    case json_type_double:
        out_str(o, json_object_to_json_string(obj));
        break;
    case json_type_string:
        if (json_object_get_userdata(obj) == &qjson_raw_tag) {
            out_bytes(o, json_object_get_string(obj),
                      json_object_get_string_len(obj));
            break;
        }
        out_string(o, json_object_get_string(obj),
                   json_object_get_string_len(obj));
        break;
    case json_type_array: {
        size_t n = json_object_array_length(obj);
        out_str(o, "[");
        for (size_t i = 0; i < n; i++) {
            if (i > 0) {
                out_str(o, pretty ? "," : ", ");
            }
            if (pretty) {
                out_indent(o, depth + 1);
            }
            out_value(o, json_object_array_get_idx(obj, i), pretty,
                      depth + 1);
        }
        if (pretty && n > 0) {
            out_indent(o, depth);
        }
        out_str(o, "]");
        break;
    }
    case json_type_object: {
        bool first = true;
        out_str(o, "{");
        json_object_object_foreach(obj, key, val) {
            if (!first) {
                out_str(o, pretty ? "," : ", ");
            }
            first = false;
            if (pretty) {
                out_indent(o, depth + 1);
            }
            out_string(o, key, strlen(key));
            out_str(o, ": ");
            out_value(o, val, pretty, depth + 1);
        }
        if (pretty && !first) {
            out_indent(o, depth);
        }
        out_str(o, "}");
        break;
    }
    }
}

void qjson_append(char **buf, size_t *len, size_t *cap, json_object *obj,
                  bool pretty)
{
    Out o = { .buf = buf, .len = len, .cap = cap };

    out_value(&o, obj, pretty, 0);
}

char *qjson_format(json_object *obj, bool pretty)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;

    qjson_append(&buf, &len, &cap, obj, pretty);
    return buf;
}

json_object *qjson_new_raw(QText *t)
{
    json_object *obj = json_object_new_string_len(t->buf ? t->buf : "null",
                                                  t->buf ? (int)t->len : 4);

    json_object_set_userdata(obj, &qjson_raw_tag, NULL);
    free(t->buf);
    t->buf = NULL;
    t->len = t->cap = 0;
    return obj;
}

static Out text_out(QText *t)
{
    return (Out) { .buf = &t->buf, .len = &t->len, .cap = &t->cap };
}

void qtext_raw(QText *t, const char *s)
{
    Out o = text_out(t);

    out_str(&o, s);
}

void qtext_str(QText *t, const char *s)
{
    Out o = text_out(t);

    out_string(&o, s, strlen(s));
}

void qtext_key(QText *t, bool *first, const char *key)
{
    Out o = text_out(t);

    if (!*first) {
        out_str(&o, ", ");
    }
    *first = false;
    out_string(&o, key, strlen(key));
    out_str(&o, ": ");
}

void qtext_int(QText *t, int64_t v)
{
    char tmp[32];

    snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
    qtext_raw(t, tmp);
}

void qtext_uint(QText *t, uint64_t v)
{
    char tmp[32];

    snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
    qtext_raw(t, tmp);
}

void qtext_value(QText *t, json_object *obj)
{
    Out o = text_out(t);

    out_value(&o, obj, false, 0);
}

void qtext_double(QText *t, double v)
{
    json_object *obj = json_object_new_double(v);

    qtext_value(t, obj);
    json_object_put(obj);
}
