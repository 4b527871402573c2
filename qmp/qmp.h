/* qmp.h - what a QMP command handler sees. */
#ifndef BLOCKD_QMP_QMP_H
#define BLOCKD_QMP_QMP_H

#include <json-c/json.h>

#include "daemon/daemon.h"
#include "util/error.h"

typedef struct Monitor Monitor;

/* The context of one command: the daemon, and the monitor it came from
 * (NULL for commands from the command line or a script). */
typedef struct QmpCtx {
    Daemon *daemon;
    Monitor *mon;
} QmpCtx;

/* Check and run one request object; returns the reply object (owned by
 * the caller), or NULL when no reply must be sent.  Never fails: errors
 * become {"error": ...} replies. */
json_object *qmp_dispatch(QmpCtx *ctx, json_object *request);

/* Run one command by name with arguments (NULL = none); flags are
 * QAPI_PARSE_* (QAPI_PARSE_KEYVAL for command-line key=value input).
 * Used by dispatch, the command line and QMP scripts.  On success *ret
 * (if ret is not NULL) is the return value, a new reference. */
bool qmp_execute(QmpCtx *ctx, const char *name, json_object *args,
                 unsigned flags, json_object **ret, Error **errp);

/* Send an event to every monitor that finished negotiation.  Takes the
 * reference to data (may be NULL for no data). */
void monitor_broadcast_event(Daemon *d, const char *name, json_object *data);

#endif
