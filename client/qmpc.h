/* qmpc.h - a small blocking QMP client library.
 *
 * Used by blockctl, and reusable by tests and blockd-nbd.  One QmpClient
 * is one connection to a QMP server:
 *
 *     QmpClient *c = qmpc_connect("unix:/run/blockd.sock", errp);
 *     qmpc_negotiate(c, errp);              greeting already read
 *     json_object *reply;
 *     qmpc_execute(c, "query-version", NULL, &reply, errp);
 *     ... reply is {"return": ...} or {"error": {...}} ...
 *     qmpc_close(c);
 *
 * The server sends one JSON object per line; qmpc reads them with an
 * incremental json_tokener so a message may arrive in any number of
 * pieces and several may arrive in one read.  Events that arrive while
 * waiting for a reply are queued and handed out by qmpc_next_event().
 *
 * The second half of this header is pure (no sockets): turning
 * "command key=value ..." words into a QMP request, for blockctl's
 * command line, its shell and its unit tests.
 */
#ifndef BLOCKD_CLIENT_QMPC_H
#define BLOCKD_CLIENT_QMPC_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/error.h"

/* One message larger than this (bytes of JSON) is a protocol error:
 * a sane server never sends it, a hostile one must not exhaust memory.
 * query-qmp-schema is a few hundred KiB. */
#define QMPC_MAX_MESSAGE (64 * 1024 * 1024)

/* Events queued while waiting for replies, at most; past this the
 * oldest are dropped (a client that never asks for events). */
#define QMPC_MAX_QUEUED_EVENTS 10000

typedef struct QmpClient QmpClient;

/* Connect to addr: "unix:PATH", "tcp:HOST:PORT" ("tcp:[::1]:4444" for
 * IPv6) or a bare PATH (a unix socket), then read the greeting.  The
 * TCP connection and the greeting each get at most timeout_ms
 * milliseconds (-1 = no limit of ours).  Returns NULL with
 * errp set when the address is bad, the connection fails, or what the
 * server sent is not a QMP greeting. */
QmpClient *qmpc_connect(const char *addr, int timeout_ms, Error **errp);
/* Close the connection and free everything (NULL-safe). */
void qmpc_close(QmpClient *c);

/* The greeting object {"QMP": {...}}; borrowed, lives as long as c. */
json_object *qmpc_greeting(const QmpClient *c);
/* The socket, for poll()/select() loops.  Before waiting on it, check
 * qmpc_pending(): messages may already be buffered. */
int qmpc_fd(const QmpClient *c);
/* True when a message (or queued event) can be had without blocking. */
bool qmpc_pending(QmpClient *c);
/* True once the server closed the connection. */
bool qmpc_eof(const QmpClient *c);

/* Send qmp_capabilities and check the answer: true once the
 * connection is in command mode. */
bool qmpc_negotiate(QmpClient *c, Error **errp);

/* Send one request object (not consumed), serialised on one line. */
bool qmpc_send(QmpClient *c, json_object *request, Error **errp);
/* Send raw bytes as they are (tests of the server's framing). */
bool qmpc_send_raw(QmpClient *c, const char *buf, size_t len, Error **errp);

/* Read the next message the server sends, event or reply.
 * Returns 1 with *msg set (owned by the caller), 0 when timeout_ms
 * passed first (0 = do not wait, -1 = forever), -1 on error or end of
 * stream (errp set; qmpc_eof() tells which).  Queued events are not
 * looked at: see qmpc_next_event(). */
int qmpc_read(QmpClient *c, int timeout_ms, json_object **msg,
              Error **errp);

/* Send request and wait for its reply ({"return"} or {"error"}),
 * queueing the events that arrive meanwhile.  *reply is owned by the
 * caller.  False only on connection or protocol failures: an error
 * reply is a successful exchange. */
bool qmpc_call(QmpClient *c, json_object *request, json_object **reply,
               Error **errp);
/* Same with a request built from a command name and its arguments
 * (NULL: none; not consumed). */
bool qmpc_execute(QmpClient *c, const char *command, json_object *args,
                  json_object **reply, Error **errp);

/* The next event: a queued one, or one read within timeout_ms (same
 * return values as qmpc_read; replies read meanwhile are dropped). */
int qmpc_next_event(QmpClient *c, int timeout_ms, json_object **event,
                    Error **errp);

/* If reply is an error reply, return true and point *cls and *desc at
 * its strings (borrowed from reply; "GenericError"/"" when missing). */
bool qmpc_reply_is_error(json_object *reply, const char **cls,
                         const char **desc);

/*
 * Building requests from words (pure functions).
 */

/* Split a shell line into words.  Words are separated by blanks;
 * '...' and "..." quote (no escapes inside '...'; \\ and \" inside
 * "..."), a backslash outside quotes escapes the next character.  A
 * word whose value part (after the first '=') or which itself starts
 * with '{' or '[' runs to the matching bracket even across blanks, so
 * `bitmaps=["a", "b"]` is one word.  Returns a NULL-terminated array
 * (free with qmpc_free_words) and its length in *count; NULL with errp
 * set on an unterminated quote or bracket. */
char **qmpc_split_words(const char *line, size_t *count, Error **errp);
void qmpc_free_words(char **words);

/* Build the arguments object of command from "key=value" words.
 *
 * Keys are dotted paths: "file.driver=file" makes {"file": {"driver":
 * "file"}}; numeric path components make arrays ("bitmaps.0=b0").
 * Values are strings, unless they start with '{' or '[': then they are
 * parsed as JSON and inserted as they are.  When the command is in our
 * schema, the result is converted by the schema's types (the generated
 * normalize function with QAPI_PARSE_KEYVAL): "size=4096" becomes an
 * integer, "read-only=on" a boolean; a value that does not fit is an
 * error naming the parameter.  Unknown commands keep string values
 * (the server will answer CommandNotFound).  Returns a new object
 * ({} when n == 0), or NULL with errp set. */
json_object *qmpc_build_args(const char *command, char *const *words,
                             size_t n, Error **errp);

/* Turn one line of blockctl input into a request object:
 * "command key=value ..." or raw JSON ("{...}" is a whole request;
 * a JSON string is a command name without arguments).  Returns NULL
 * with errp set on bad input, and NULL without error for an empty or
 * comment ('#') line, telling which through *empty. */
json_object *qmpc_parse_line(const char *line, bool *empty, Error **errp);

/* A raw request given as text: a JSON object ({"execute": ...}), or a
 * bare command name without arguments.  NULL with errp set. */
json_object *qmpc_parse_raw(const char *text, Error **errp);

#endif
