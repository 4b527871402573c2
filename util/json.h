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

/* Append obj to *buf (a malloc'ed string of *len bytes, grown as
 * needed).  pretty = indented over several lines (4 spaces). */
void qjson_append(char **buf, size_t *len, size_t *cap, json_object *obj,
                  bool pretty);
/* obj as a new malloc'ed string. */
char *qjson_format(json_object *obj, bool pretty);

#endif
