/* daemon.h - the state of one blockd process: the top layer that wires
 * the layers below together.
 *
 * There is no global "current daemon".  The layers below never see a
 * Daemon: each is handed what it needs — the block graph a BlockHost
 * (loop, pool, event sink), the NBD layer an NbdContext, QMP handlers a
 * QmpCtx (the template kept here).
 *
 *   Daemon
 *    ├── Loop          libevent loop (util/loop.h)
 *    ├── WorkerPool    blocking I/O threads (util/worker.h)
 *    ├── MonitorSet    QMP control sockets, the event sink (qmp/monitor.h)
 *    ├── ObjectSet     secrets, TLS credentials, authz (crypto/object.h)
 *    ├── BlockGraph    nodes by node-name (blockdev/block.h)
 *    └── NbdContext    the NBD server, once started (nbd/server.h)
 */
#ifndef BLOCKD_DAEMON_DAEMON_H
#define BLOCKD_DAEMON_DAEMON_H

#include <stdbool.h>

#include "daemon/config-log.h"
#include "nbd/server.h"
#include "qapi-types.h"
#include "qmp/qmp.h"
#include "util/error.h"
#include "util/loop.h"
#include "util/worker.h"

typedef struct Daemon {
    Loop *loop;
    WorkerPool *pool;
    MonitorSet *monitors;
    ObjectSet *objects;
    BlockGraph *graph;
    NbdContext nbd;
    QmpCtx qmp;               /* every command's context (mon = NULL) */
    ConfigLog *config;        /* what x-blockd-save-config writes */
    bool quitting;            /* quit requested: loop is stopping */
    ShutdownCause quit_reason;
} Daemon;

/* Create the loop, pool, monitor set and graph.  NULL with errp set on
 * failure. */
Daemon *daemon_new(Error **errp);
/* Tear everything down in order: NBD, monitors, pool, graph, loop. */
void daemon_free(Daemon *d);
/* Emit SHUTDOWN and stop the loop at the next turn (once). */
void daemon_request_quit(Daemon *d, ShutdownCause reason);

#endif
