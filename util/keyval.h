/* keyval.h - QEMU's key=value,key2=value2 option syntax as JSON.
 *
 *     driver=qcow2,file.driver=file,file.filename=a,,b.qcow2
 *     -> {"driver": "qcow2", "file": {"driver": "file",
 *                                     "filename": "a,b.qcow2"}}
 *     bitmaps.0=b0,bitmaps.1=b1  ->  {"bitmaps": ["b0", "b1"]}
 *
 * Every value is a JSON string; the schema parsers convert them with
 * QAPI_PARSE_KEYVAL (docs/schema.md).  The syntax follows QEMU's
 * util/keyval.c:
 *   - ",," inside a value is a literal comma; a trailing "," is allowed;
 *   - key fragments are separated by "." and build nested objects; each
 *     fragment is non-empty, made of [A-Za-z0-9_-], at most 127 bytes;
 *   - an object whose keys are all decimal indexes (0, 1, ... without
 *     gaps or leading zeroes) becomes an array;
 *   - a key given twice is an error ("Parameter 'a' is duplicated"), and
 *     so is using one key both as a value and as an object
 *     ("Parameters 'a.*' used inconsistently").
 */
#ifndef BLOCKD_UTIL_KEYVAL_H
#define BLOCKD_UTIL_KEYVAL_H

#include <json-c/json.h>

#include "util/error.h"

/* Parse s into a new JSON object (owned by the caller), or return NULL
 * with errp set.  implied_key, if not NULL, names the key of a first
 * item given without "=" (qemu-nbd style "file.qcow2,format=..." would
 * use "filename"); with NULL such an item is an error. */
json_object *keyval_parse(const char *s, const char *implied_key,
                          Error **errp);

#endif
