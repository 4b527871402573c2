/* daemon.h - the state of one blockd process.
 *
 * There is no global "current daemon": everything that needs the node
 * graph, the NBD server or the monitors is handed a Daemon * (QMP
 * handlers get it through QmpCtx).
 *
 *   Daemon
 *    ├── Loop          libevent loop (daemon/loop.h)
 *    ├── WorkerPool    blocking I/O threads (daemon/worker.h)
 *    ├── BlockGraph    nodes by node-name (blockdev/block.h)
 *    ├── NbdServer     listener + exports + connections (nbd/server.h)
 *    ├── ObjectTable   secret, tls-creds-*, authz-* (daemon/object.h)
 *    └── MonitorSet    QMP control sockets (qmp/monitor.h)
 */
#ifndef BLOCKD_DAEMON_DAEMON_H
#define BLOCKD_DAEMON_DAEMON_H

#include <stdbool.h>

#include "daemon/loop.h"
#include "daemon/worker.h"
#include "qapi-types.h"
#include "util/error.h"

typedef struct BlockGraph BlockGraph;
typedef struct NbdServer NbdServer;
typedef struct ObjectTable ObjectTable;
typedef struct MonitorSet MonitorSet;

typedef struct Daemon {
    Loop *loop;
    WorkerPool *pool;
    BlockGraph *graph;
    NbdServer *nbd;           /* NULL until nbd-server-start */
    ObjectTable *objects;
    MonitorSet *monitors;
    bool quitting;            /* quit requested: loop is stopping */
    ShutdownCause quit_reason;
} Daemon;

/* Create the loop, pool, graph, object table and monitor set.  NULL
 * with errp set on failure. */
Daemon *daemon_new(Error **errp);
/* Tear everything down in order: monitors, NBD, graph, pool, loop. */
void daemon_free(Daemon *d);
/* Emit SHUTDOWN and stop the loop at the next turn (once). */
void daemon_request_quit(Daemon *d, ShutdownCause reason);

#endif
