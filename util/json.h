/* json.h - JSON output in QMP's shape.
 *
 * QMP replies are one JSON text per line: members separated by ", ",
 * names by ": ", and only ASCII on the wire (anything else as \uXXXX),
 * as QEMU prints them.  json-c's own printer differs in spacing and
 * sends raw UTF-8, so QMP output goes through here.
 */
#ifndef BLOCKD_UTIL_JSON_H
#define BLOCKD_UTIL_JSON_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Append obj to *buf (a malloc'ed string of *len bytes, grown as
 * needed).  pretty = indented over several lines (4 spaces). */
void qjson_append(char **buf, size_t *len, size_t *cap, json_object *obj,
                  bool pretty);
/* obj as a new malloc'ed string. */
char *qjson_format(json_object *obj, bool pretty);

/* JSON text written directly, in the same shape as qjson_append's
 * one-line output, without building json-c objects first (the schema's
 * generated qapi_T_to_text(); a large reply costs a third).  Start from
 * a zeroed QText; buf is malloc'ed and NUL-terminated. */
typedef struct QText {
    char *buf;
    size_t len, cap;
} QText;
void qtext_raw(QText *t, const char *s);        /* s as it is */
void qtext_str(QText *t, const char *s);        /* s as a JSON string */
void qtext_int(QText *t, int64_t v);
void qtext_uint(QText *t, uint64_t v);
void qtext_double(QText *t, double v);
void qtext_value(QText *t, json_object *obj);   /* NULL: null */
/* ", " unless *first, then "key": (and *first = false). */
void qtext_key(QText *t, bool *first, const char *key);
/* A json-c string holding t's text, which qjson_append writes as it is
 * (not as a string) when the output is not pretty; t is emptied.  An
 * empty t stands for null. */
json_object *qjson_new_raw(QText *t);

#endif
