/* framing.h - cut a QMP input byte stream into JSON messages.
 *
 * Bytes go in as they arrive; each complete JSON value comes out through
 * a callback, with an error text instead for malformed or oversized
 * input.  After an error the stream resynchronises at the next newline
 * (clients send one command per line, or a newline to reset), so one bad
 * message does not poison the ones after it.  Pure: no sockets, so it is
 * unit-tested on its own.
 */
#ifndef BLOCKD_QMP_FRAMING_H
#define BLOCKD_QMP_FRAMING_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct QmpFramer QmpFramer;

/* One message (msg != NULL, borrowed for the call) or one error (msg ==
 * NULL, err a human-readable text).  Return false to stop feeding: the
 * rest of the buffer is dropped (the connection is going away). */
typedef bool QmpFrameFn(void *opaque, json_object *msg, const char *err);

/* max_message: the largest message in bytes (whitespace between
 * messages does not count). */
QmpFramer *qmp_framer_new(size_t max_message);
void qmp_framer_free(QmpFramer *f);
void qmp_framer_feed(QmpFramer *f, const char *buf, size_t n,
                     QmpFrameFn *fn, void *opaque);

/* What json-c accepts but QMP must not, checked on the text of one
 * value that json-c parsed into msg (the framer calls it on every
 * message; text[0..len) is exactly msg's text):
 *  - an object with the same key twice (json-c keeps the last value;
 *    QEMU refuses it, at any depth): "JSON parse error, duplicate key";
 *  - an object key holding \u0000 (json-c cuts the key there, so
 *    "node-name\u0000x" would become "node-name"): refused;
 *  - an integer outside both int64 and uint64 (json-c saturates it
 *    silently): replaced in msg by a double, as QEMU's parser reads it,
 *    so that the schema's integer members refuse it.  Not at the top
 *    level (a scalar message is refused anyway).
 * Returns NULL, or the error text (static). */
const char *qmp_json_check(const char *text, size_t len, json_object *msg);

#endif
