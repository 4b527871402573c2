/* daemon.c - create and tear down the parts of one blockd process. */
#include "daemon/daemon.h"

#include <assert.h>
#include <stdlib.h>
#include <unistd.h>

#include "blockdev/block.h"
#include "blockdev/job.h"
#include "crypto/object.h"
#include "nbd/nbd-driver.h"
#include "qapi-commands.h"
#include "qapi-events.h"
#include "qmp/monitor.h"
#include "util/util.h"

/* A job pivots: the exports follow (blk_replace_node). */
static void daemon_replace_node(BlockNode *from, BlockNode *to, void *opaque)
{
    nbd_exports_replace_node(opaque, from, to);
}

static void daemon_quit_cb(void *host, QmpPending *reply)
{
    daemon_request_quit(host, reply);
}

static void daemon_committed_cb(void *host, const char *name,
                                json_object *args, unsigned flags)
{
    Daemon *d = host;

    config_log_commit(d->config, name, args, flags);
}

bool qmp_x_blockd_save_config(QmpCtx *ctx,
                              const QmpXBlockdSaveConfigArgs *args,
                              Error **errp)
{
    Daemon *d = ctx->host;

    return config_log_save(d->config, ctx, args->filename, errp);
}

Daemon *daemon_new(int job_nice, Error **errp)
{
    Daemon *d = XNEW(Daemon);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    d->loop = loop_new();
    if (d->loop == NULL) {
        error_setg(errp, "Could not create the event loop");
        free(d);
        return NULL;
    }
    /* Enough threads to keep a queue of requests busy on every core and
     * to overlap disk waits; I/O threads mostly sleep in the kernel. */
    d->pool = worker_pool_new(d->loop, ncpu > 0 ? MIN(ncpu * 4, 64) : 4);
    if (d->pool == NULL) {
        error_setg(errp, "Could not start worker threads");
        loop_free(d->loop);
        free(d);
        return NULL;
    }
    /* Block jobs copy at a lower CPU priority than the clients of the
     * nodes they copy (docs/architecture.md, "Block jobs"), unless
     * job_nice is 0; if it cannot start, jobs share the pool.  A pool of
     * their own even at 0: a long copy does not queue ahead of clients'
     * requests. */
    assert(job_nice >= 0 && job_nice <= DAEMON_JOB_NICE_MAX);
    d->job_pool = worker_pool_new_nice(d->loop,
                                       ncpu > 0 ? MIN(ncpu * 4, 64) : 4,
                                       job_nice);
    d->monitors = monitor_set_new(d->loop, &d->qmp);
    d->objects = object_set_new();
    d->graph = blk_graph_new(&(BlockHost) {
        .loop = d->loop, .pool = d->pool, .job_pool = d->job_pool,
        .events = d->monitors, .objects = d->objects,
    });
    nbd_driver_register(d->graph);
    d->nbd = (NbdContext) {
        .loop = d->loop, .pool = d->pool, .graph = d->graph,
        .events = d->monitors, .objects = d->objects,
    };
    blk_graph_set_replace_fn(d->graph, daemon_replace_node, &d->nbd);
    d->qmp = (QmpCtx) {
        .monitors = d->monitors, .graph = d->graph, .nbd = &d->nbd,
        .objects = d->objects,
        .request_quit = daemon_quit_cb, .host = d,
        .committed = daemon_committed_cb,
    };
    d->config = config_log_new();
    return d;
}

void daemon_free(Daemon *d)
{
    if (d == NULL) {
        return;
    }
    nbd_server_free(d->nbd.server);
    d->nbd.server = NULL;
    nbd_driver_shutdown(d->graph);
    /* Jobs stop issuing I/O; each aborts once its requests drain. */
    job_cancel_all(d->graph);
    /* Requests still on the pool hold node references: drain first, then
     * run their completions (the jobs conclude: BLOCK_JOB_CANCELLED)
     * and the deferred frees of exports (BLOCK_EXPORT_DELETED), which
     * drop node references, before the graph goes.  The monitors are
     * still open: qemu-storage-daemon sends these events, then quit's
     * reply, then closes them (QEMU's qsd-jobs iotest).  Jobs' own
     * work first: it may wait for requests on the pool. */
    worker_pool_free(d->job_pool);
    d->job_pool = NULL;
    worker_pool_free(d->pool);
    d->pool = NULL;
    loop_run_posted(d->loop);
    for (size_t i = 0; i < d->nquit_replies; i++) {
        qmp_complete(d->quit_replies[i], NULL, NULL);
    }
    free(d->quit_replies);
    d->quit_replies = NULL;
    d->nquit_replies = 0;
    /* Closed now, freed last: what runs below may still emit events (to
     * nobody). */
    monitor_set_close(d->monitors);
    blk_graph_free(d->graph);
    /* What nbd nodes' I/O threads posted before they were joined
     * (events) still sees the monitor set. */
    loop_run_posted(d->loop);
    /* Last of the users' layers: the server and the nodes held
     * credentials. */
    object_set_free(d->objects);
    monitor_set_free(d->monitors);
    config_log_free(d->config);
    loop_free(d->loop);
    free(d);
}

static void daemon_quit_now(void *opaque)
{
    Daemon *d = opaque;

    loop_stop(d->loop);
}

void daemon_request_quit(Daemon *d, QmpPending *reply)
{
    if (reply != NULL) {
        d->quit_replies = xrealloc(d->quit_replies,
                                   (d->nquit_replies + 1) *
                                   sizeof(*d->quit_replies));
        d->quit_replies[d->nquit_replies++] = reply;
    }
    if (d->quitting) {
        return;
    }
    d->quitting = true;
    /* After the current callback. */
    loop_post(d->loop, daemon_quit_now, d);
}
