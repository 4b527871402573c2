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

/* How many steps below the daemon's CPU priority block jobs copy
 * (worker_pool_new_nice) unless --job-nice says otherwise: under
 * contention a job gets about a tenth of what a client's work gets, and
 * all of a core nobody else wants.  --job-nice takes 0 (jobs run at the
 * daemon's own priority) to DAEMON_JOB_NICE_MAX. */
#define DAEMON_JOB_NICE 10
#define DAEMON_JOB_NICE_MAX 19

typedef struct Daemon {
    Loop *loop;
    WorkerPool *pool;
    WorkerPool *job_pool;        /* block jobs: job_nice steps lower CPU
                                  * priority; NULL: they share pool */
    MonitorSet *monitors;
    ObjectSet *objects;
    BlockGraph *graph;
    NbdContext nbd;
    QmpCtx qmp;               /* every command's context (mon = NULL) */
    ConfigLog *config;        /* what x-blockd-save-config writes */
    bool quitting;            /* quit requested: loop is stopping */
    QmpPending **quit_replies;  /* quit commands answered at the end */
    size_t nquit_replies;
} Daemon;

/* Create the loop, pools, monitor set and graph; block jobs' pool runs
 * job_nice (0..DAEMON_JOB_NICE_MAX) steps below the calling thread's CPU
 * priority, 0: at the same.  NULL with errp set on failure. */
Daemon *daemon_new(int job_nice, Error **errp);
/* Tear everything down in order, as qemu-storage-daemon does: exports
 * (BLOCK_EXPORT_DELETED), jobs (cancelled, their events sent), quit's
 * replies, monitors, pool, graph, loop. */
void daemon_free(Daemon *d);
/* Stop the loop at the next turn.  reply (may be NULL) is a quit
 * command's deferred reply, which daemon_free() sends; taken.  No
 * SHUTDOWN event: qemu-storage-daemon has none (its schema leaves out
 * QEMU's run-state.json). */
void daemon_request_quit(Daemon *d, QmpPending *reply);

#endif
