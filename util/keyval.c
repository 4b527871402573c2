/* keyval.c - QEMU's key=value,... option syntax to JSON (see keyval.h). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/cleanup.h"
#include "util/keyval.h"
#include "util/util.h"

#define KEYVAL_MAX_FRAGMENT 127
/* Deeper keys make no sense for any schema type; the limit keeps the
 * recursion of json-c and of keyval_listify() shallow. */
#define KEYVAL_MAX_DEPTH 32

/* A growable string. */
typedef struct KvBuf {
    char *s;
    size_t len;
    size_t cap;
} KvBuf;

static void kvbuf_add(KvBuf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;

        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        b->s = xrealloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static bool key_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* Read a value starting at *ps up to an unescaped ',' (consumed) or the
 * end; ",," is a literal comma.  Returns a new string. */
static char *parse_value(const char **ps)
{
    const char *s = *ps;
    KvBuf b = { 0 };

    kvbuf_add(&b, "", 0);
    for (;;) {
        const char *comma = strchr(s, ',');

        if (!comma) {
            kvbuf_add(&b, s, strlen(s));
            s += strlen(s);
            break;
        }
        kvbuf_add(&b, s, comma - s);
        if (comma[1] == ',') {
            kvbuf_add(&b, ",", 1);
            s = comma + 2;
            continue;
        }
        s = comma + 1;
        break;
    }
    *ps = s;
    return b.s;
}

/* Store value (a string) under the dotted key in root. */
static bool keyval_put(json_object *root, const char *key, const char *value,
                       Error **errp)
{
    json_object *cur = root;
    const char *frag = key;
    int depth = 0;

    for (;;) {
        const char *dot = strchr(frag, '.');
        size_t n = dot ? (size_t)(dot - frag) : strlen(frag);
        CLEANUP_FREE char *name = NULL;
        json_object *old = NULL;

        if (n == 0) {
            error_setg(errp, "Invalid parameter '%s'", key);
            return false;
        }
        for (size_t i = 0; i < n; i++) {
            if (!key_char_ok(frag[i])) {
                error_setg(errp, "Invalid parameter '%s'", key);
                return false;
            }
        }
        if (n > KEYVAL_MAX_FRAGMENT) {
            error_setg(errp, "Parameter '%.*s' is too long", (int)n, frag);
            return false;
        }
        if (++depth > KEYVAL_MAX_DEPTH) {
            error_setg(errp, "Parameter '%.64s...' is nested too deeply",
                       key);
            return false;
        }
        name = xstrndup(frag, n);
        if (!dot) {
            if (json_object_object_get_ex(cur, name, &old)) {
                if (json_object_is_type(old, json_type_object)) {
                    error_setg(errp, "Parameters '%s.*' used inconsistently",
                               key);
                } else {
                    error_setg(errp, "Parameter '%s' is duplicated", key);
                }
                return false;
            }
            json_object_object_add(cur, name, json_object_new_string(value));
            return true;
        }
        if (json_object_object_get_ex(cur, name, &old)) {
            if (!json_object_is_type(old, json_type_object)) {
                error_setg(errp, "Parameters '%.*s.*' used inconsistently",
                           (int)(dot - key), key);
                return false;
            }
        } else {
            old = json_object_new_object();
            json_object_object_add(cur, name, old);
        }
        cur = old;
        frag = dot + 1;
    }
}

/* The array index a key stands for, or -1 if it is not one. */
static long key_index(const char *k)
{
    long v = 0;

    if (k[0] == '\0' || (k[0] == '0' && k[1] != '\0')) {
        return -1;
    }
    for (const char *p = k; *p; p++) {
        if (*p < '0' || *p > '9' || v > 100000000) {
            return -1;
        }
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* Replace, bottom-up, every object of obj whose keys are all indexes by
 * an array.  path is the dotted key of obj ("" at the top).  Returns a
 * new reference to the result (obj itself or a new array). */
static json_object *keyval_listify(json_object *obj, const char *path,
                                   Error **errp)
{
    size_t n = 0;
    size_t nidx = 0;
    json_object *arr;

    /* First the children, in place. */
    json_object_object_foreach(obj, key, val) {
        if (json_object_is_type(val, json_type_object)) {
            CLEANUP_FREE char *sub = *path ? xasprintf("%s.%s", path, key)
                                           : xstrdup(key);
            json_object *nv = keyval_listify(val, sub, errp);

            if (!nv) {
                return NULL;
            }
            if (nv != val) {
                /* Replaces (and drops) the old value; the key is kept,
                 * so the iteration stays valid. */
                json_object_object_add(obj, key, nv);
            } else {
                json_object_put(nv);
            }
        }
        n++;
        if (key_index(key) >= 0) {
            nidx++;
        }
    }
    if (nidx == 0 || *path == '\0') {
        /* The top level is always an object. */
        return json_object_get(obj);
    }
    if (nidx != n) {
        error_setg(errp, "Parameters '%s.*' used inconsistently", path);
        return NULL;
    }
    arr = json_object_new_array_ext((int)n);
    for (size_t i = 0; i < n; i++) {
        char idx[32];
        json_object *e;

        snprintf(idx, sizeof(idx), "%zu", i);
        if (!json_object_object_get_ex(obj, idx, &e)) {
            error_setg(errp, "Parameter '%s.%zu' missing", path, i);
            json_object_put(arr);
            return NULL;
        }
        json_object_array_add(arr, json_object_get(e));
    }
    return arr;
}

json_object *keyval_parse(const char *s, const char *implied_key,
                          Error **errp)
{
    CLEANUP_JSON json_object *root = json_object_new_object();
    bool first = true;

    if (!s) {
        s = "";
    }
    while (*s) {
        size_t klen = strcspn(s, "=,");
        CLEANUP_FREE char *key = NULL;
        CLEANUP_FREE char *value = NULL;

        if (s[klen] != '=') {
            if (!first || !implied_key) {
                if (klen == 0) {
                    error_setg(errp, "Invalid parameter ''");
                } else if (implied_key) {
                    error_setg(errp, "Expected '=' after parameter '%.*s'",
                               (int)MIN(klen, 128), s);
                } else {
                    error_setg(errp, "No implicit parameter name for value "
                               "'%.*s'", (int)MIN(klen, 128), s);
                }
                return NULL;
            }
            key = xstrdup(implied_key);
        } else {
            key = xstrndup(s, klen);
            s += klen + 1;
        }
        value = parse_value(&s);
        if (!keyval_put(root, key, value, errp)) {
            return NULL;
        }
        first = false;
    }
    return keyval_listify(root, "", errp);
}
