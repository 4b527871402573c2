/* qmp.h - what a QMP command handler sees.
 *
 * qmp/ knows no feature: the state a handler works on belongs to the
 * layers above (the block graph to blockdev/, the NBD server to nbd/)
 * and reaches the handler through QmpCtx, which the top (daemon/) fills
 * in.  Here those states are only names of incomplete types; qmp/ never
 * looks inside them.
 */
#ifndef BLOCKD_QMP_QMP_H
#define BLOCKD_QMP_QMP_H

#include <json-c/json.h>

#include "qapi-types.h"
#include "util/error.h"

typedef struct Monitor Monitor;
typedef struct MonitorSet MonitorSet;
typedef struct QmpPending QmpPending;
typedef struct QmpDeferSlot QmpDeferSlot;
typedef struct BlockGraph BlockGraph;     /* blockdev/block.h */
typedef struct NbdContext NbdContext;     /* nbd/server.h */
typedef struct ObjectSet ObjectSet;       /* crypto/object.h */

/* The context of one command.  Everything but mon is the same for every
 * command of a process: daemon/ keeps one QmpCtx as the template and
 * each monitor copies it, setting mon. */
typedef struct QmpCtx {
    MonitorSet *monitors;     /* where events go; NULL = nowhere */
    BlockGraph *graph;        /* the node graph (blockdev/ commands) */
    NbdContext *nbd;          /* the NBD layer (nbd/ commands) */
    ObjectSet *objects;       /* user-creatable objects (object-add) */
    /* quit: ask the process to stop.  reply is quit's deferred reply
     * (NULL: none to send, e.g. from the command line): the host
     * completes it once exports and jobs are gone, just before the
     * monitors close, as qemu-storage-daemon answers quit last. */
    void (*request_quit)(void *host, QmpPending *reply);
    void *host;               /* request_quit's and committed's argument */
    /* Called after a command succeeded (for a deferred one, when it
     * completes without error), with its name, arguments (borrowed; NULL
     * when none) and the QAPI_PARSE_* flags they were given with; NULL:
     * not called.  daemon/ keeps its saved configuration with it. */
    void (*committed)(void *host, const char *name, json_object *args,
                      unsigned flags);
    Monitor *mon;             /* the monitor the command came from, NULL
                               * for the command line and scripts */
    QmpDeferSlot *defer;      /* private to qmp/: set by dispatch when the
                               * handler may answer later (qmp_defer) */
    /* The reply goes out as one line (a monitor without pretty=on): a
     * command's return value may be JSON text already (qjson_new_raw),
     * written straight from the C types instead of through json-c
     * objects.  Callers that read the value leave it false. */
    bool text_replies;
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

/* Descriptors passed by a client (getfd/closefd, QEMU's named fds).
 * monitor_getfd keeps the oldest descriptor received with SCM_RIGHTS
 * and not kept yet under name (replacing one kept under it); one that
 * no getfd claims is closed when the next ones arrive or the monitor
 * closes.  monitor_closefd closes one.  False with errp set when mon
 * is NULL, name starts with a digit (numbers are inherited
 * descriptors), nothing was passed, or (closefd) nothing is kept under
 * name.  Loop thread. */
bool monitor_getfd(Monitor *mon, const char *name, Error **errp);
bool monitor_closefd(Monitor *mon, const char *name, Error **errp);
/* The descriptor kept under name on mon (NULL-safe), or -1: borrowed
 * (find) or handed over to the caller, who then owns it (take). */
int monitor_fd_find(const Monitor *mon, const char *name);
int monitor_fd_take(Monitor *mon, const char *name);

/* Deferred replies: a handler whose work is long (opening an image,
 * growing one) hands it to the worker pool and answers when it is done,
 * so the loop keeps serving NBD clients and the other monitors:
 *
 *   handler (loop)          pool                 loop
 *   p = qmp_defer(ctx) ──> the work ──done()──> qmp_complete(p, ...)
 *   return true                                  └─> the reply
 *
 * The handler returns true without setting a return value; dispatch
 * sends nothing.  The monitor runs no further command until the
 * reply is sent (it queues them), so one monitor's replies stay in the
 * order of its commands (exec-oob still runs at once).  A monitor that closes
 * meanwhile only loses the reply: the work completes.  Commands that
 * return data cannot defer (their marshal code converts the return
 * value right after the handler).
 *
 * qmp_defer() returns NULL when the caller needs the answer before the
 * call returns (the command line at start-up, scripts: no monitor);
 * the handler then does the work itself, synchronously.  Loop thread;
 * at most once per command. */
QmpPending *qmp_defer(QmpCtx *ctx);
/* Answer a deferred command (loop thread): with ret (reference taken;
 * NULL = {}) when err is NULL, else with err (taken).  Frees p.  May be
 * called before the handler returns (a failure found at once). */
void qmp_complete(QmpPending *p, json_object *ret, Error *err);

/* Send an event to every monitor of ms that finished negotiation.  Takes
 * the reference to data (may be NULL for no data).  ms may be NULL: the
 * event goes nowhere.  Loop thread. */
void monitor_broadcast_event(MonitorSet *ms, const char *name,
                             json_object *data);

#endif
