/* server.h - the NBD server: listeners, exports, connections.
 *
 *   NbdContext (one per daemon: what daemon/ hands the NBD layer)
 *    └── NbdServer      NULL until nbd-server-start
 *    ├── listeners      unix / inet / fd sockets (LoopFd watches)
 *    ├── exports[]      NbdExport: a BlockNode under an export name
 *    └── conns          NbdConn: handshake, then transmission (conn.c)
 *
 * Everything here runs on the loop thread.
 */
#ifndef BLOCKD_NBD_SERVER_H
#define BLOCKD_NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qmp/qmp.h"
#include "util/error.h"
#include "util/lathist.h"
#include "util/loop.h"
#include "util/sock.h"
#include "util/worker.h"

typedef struct NbdServer NbdServer;
typedef struct NbdExport NbdExport;
typedef struct BlockNode BlockNode;

/* What the layer above (daemon/) hands the NBD layer: QMP handlers reach
 * it as QmpCtx.nbd.  The NBD code never sees the Daemon. */
struct NbdContext {
    Loop *loop;
    WorkerPool *pool;             /* for requests that may block */
    BlockGraph *graph;            /* exports name nodes of this graph */
    MonitorSet *events;           /* BLOCK_EXPORT_DELETED; may be NULL */
    NbdServer *server;            /* NULL until nbd-server-start */
    ObjectSet *objects;           /* tls-creds and tls-authz by id */
    struct NbdKernel *kernel;     /* bound /dev/nbdN (kernel.h); NULL
                                   * until the first one */
    /* Called when a client's connection closes (not while the server
     * stops), with whether it had reached transmission (OPT_GO or
     * EXPORT_NAME: not a probe, LIST or failed TLS) and how many
     * clients are still connected.  blockd-nbd's "exit after the last
     * client" rule, as qemu-nbd's nbd_client_closed.  NULL: none. */
    void (*client_closed)(void *opaque, bool negotiated,
                          unsigned remaining);
    void *client_closed_opaque;
};

/* Server-wide settings, fixed at nbd-server-start. */
typedef struct NbdServerConfig {
    uint32_t max_connections;     /* 0 = unlimited; QEMU's default 100 */
    uint64_t handshake_limit_us;  /* 0 = none; default 10 s */
    /* While a client negotiates (and until its first request), poll
     * for its next message up to this long before sleeping: an
     * adaptive window (util/loop.h LoopPollWindow).  0 = never. */
    uint64_t handshake_poll_max_ns;
    /* TLS: the id of a tls-creds-* object with endpoint=server makes
     * TLS mandatory; tls_authz (needs tls_creds) names the authz-*
     * object every client's identity must pass.  Both are looked up in
     * ctx->objects and pinned (object_add_user "nbd-server") until the
     * server is freed.  NULL: none. */
    const char *tls_creds;
    const char *tls_authz;
} NbdServerConfig;

#define NBD_DEFAULT_MAX_CONNECTIONS 100
#define NBD_DEFAULT_HANDSHAKE_LIMIT_US (10ULL * 1000 * 1000)
#define NBD_DEFAULT_HANDSHAKE_POLL_MAX_NS 50000

/* Create a server with no listener yet.  Strings in cfg are copied.
 * NULL with errp set when a TLS object is missing or of the wrong kind
 * (crypto/tls.h's messages). */
NbdServer *nbd_server_new(NbdContext *ctx, const NbdServerConfig *cfg,
                          Error **errp);
/* Listen on addr too (util/sock.h: a unix path replaces only a stale
 * socket; inet listens on every address host:port resolves to; an fd
 * must be a listening stream socket whose ownership the caller checked,
 * and becomes the server's).  Out of descriptors, accepting backs off
 * (util/acceptor.h).  At stop, a socket file is removed only if it is
 * still the one the server bound. */
bool nbd_server_listen(NbdServer *srv, const SockAddr *addr, Error **errp);
/* Stop: close listeners, disconnect every client (negotiating ones too),
 * delete every export (BLOCK_EXPORT_DELETED is sent once each is really
 * gone) and free the server.  NULL-safe.  Call at nbd-server-stop and at
 * daemon shutdown. */
void nbd_server_free(NbdServer *srv);

/* Number of connected clients (negotiating or transmitting). */
unsigned nbd_server_client_count(const NbdServer *srv);

/* For query-nbd-server: the settings and what TLS refused.  Every
 * refusal is also logged (info level) with the client's identity when
 * it has one. */
typedef struct NbdServerStats {
    const char *tls_creds, *tls_authz;  /* ids, NULL when not set */
    unsigned clients;
    uint64_t tls_sessions;        /* handshakes done, peer accepted */
    uint64_t tls_failed;          /* TLS handshakes that failed */
    uint64_t tls_peer_refused;    /* peer check failed (certificate) */
    uint64_t tls_authz_denied;    /* identity refused by tls-authz */
    uint64_t tls_required;        /* options refused before STARTTLS */
    uint64_t handshake_poll_ns;   /* the poll window now */
} NbdServerStats;
void nbd_server_stats(const NbdServer *srv, NbdServerStats *st);

/* ---- exports -------------------------------------------------------- */

typedef struct NbdExportConfig {
    const char *id;               /* block-export id, unique */
    const char *name;             /* NBD export name; NULL = node name */
    const char *description;      /* NULL = none */
    BlockNode *node;
    bool writable;
    bool writethrough;            /* every write is FUA */
    bool allocation_depth;        /* offer qemu:allocation-depth */
    /* Dirty bitmaps offered as qemu:dirty-bitmap:NAME (already checked
     * by the caller with nbd_export_resolve_bitmaps()); n_bitmaps
     * entries, names unique.  The export keeps them busy (and their
     * nodes referenced and in use) until it goes. */
    struct DirtyBitmap *const *bitmaps;
    size_t n_bitmaps;
    /* The iothread objects whose loops serve the clients in
     * transmission, n_iothreads of them (0: the main loop; several:
     * each new client goes to the next in turn); with fixed_iothread
     * (one iothread only) a node that cannot move fails the export
     * instead of staying on the main loop. */
    const char *const *iothreads;
    size_t n_iothreads;
    bool fixed_iothread;
} NbdExportConfig;

/* Add an export; errors: duplicate id/name, node not writable... */
NbdExport *nbd_export_add(NbdServer *srv, const NbdExportConfig *cfg,
                          Error **errp);
NbdExport *nbd_export_find_id(NbdServer *srv, const char *id);
NbdExport *nbd_export_find_name(NbdServer *srv, const char *name);
/* Delete: hard disconnects clients, safe fails while any are connected
 * ("export 'x' is in use"? QEMU: "export '%s' still in use").  The export
 * stays visible as shutting-down until its last request completes. */
bool nbd_export_del(NbdExport *exp, bool hard, Error **errp);
/* A job's pivot (blk_replace_node): every export of from serves to from
 * now on; requests already running on from finish there. */
void nbd_exports_replace_node(NbdContext *ctx, BlockNode *from,
                              BlockNode *to);

/* ---- connections that skip the handshake --------------------------- */

typedef struct NbdConn NbdConn;

/* What a handshake elsewhere negotiated, for
 * nbd_conn_start_transmission(). */
typedef struct NbdConnOptions {
    bool structured;              /* structured replies */
    bool extended;                /* extended headers (implies structured) */
    bool read_only;               /* refuse writes even on a writable
                                   * export */
    /* Meta context names to select (each must be in the export's table,
     * e.g. "base:allocation"); needs structured replies.  Copied. */
    const char *const *contexts;
    size_t ncontexts;
    /* Called once when the connection closes (either end), on the loop
     * thread, from inside the close: don't free the connection there.
     * NULL: nothing to call. */
    void (*on_close)(void *opaque, NbdConn *c);
    void *close_opaque;
} NbdConnOptions;

/* Start serving fd (a connected stream socket, non-blocking; taken on
 * success) in the transmission phase on exp, as if the client had
 * negotiated opts and done NBD_OPT_GO: no greeting, no options, no
 * handshake limit.  The Linux kernel's /dev/nbdX speaks no handshake:
 * the daemon negotiates with itself and hands the kernel the other end
 * of a socketpair.  The connection counts as a client of srv and of exp
 * and is closed like any other.  NULL with errp set when exp is going
 * away or a context is unknown (fd is then the caller's).  Loop
 * thread. */
NbdConn *nbd_conn_start_transmission(NbdServer *srv, int fd, NbdExport *exp,
                                     const NbdConnOptions *opts,
                                     Error **errp);

/* An export's requests by kind (the schema's BlockStatsOp; CACHE is
 * not counted), as its clients see them: from the request read to its
 * reply queued.  Loop thread. */
typedef struct NbdOpCounters {
    LatHist lat[BLOCK_STATS_OP__MAX];     /* those that succeeded */
    uint64_t failed[BLOCK_STATS_OP__MAX];
    uint64_t invalid[BLOCK_STATS_OP__MAX]; /* refused by the checks */
    uint64_t in_flight[BLOCK_STATS_OP__MAX];
} NbdOpCounters;

/* For query-block-exports. */
typedef struct NbdExportInfo {
    const char *id, *name, *node_name;
    bool shutting_down;
    bool writable;
    unsigned clients;
    uint64_t rd_bytes, wr_bytes, rd_ops, wr_ops, other_ops;
    const NbdOpCounters *ops;    /* the export's; valid for the call */
} NbdExportInfo;
/* One client in transmission on an export; strings borrowed. */
typedef struct NbdClientInfo {
    uint64_t serial;             /* unique among the server's clients */
    const char *addr;
    const char *tls_identity;    /* NULL if none */
    uint64_t rd_bytes, wr_bytes, rd_ops, wr_ops, other_ops;
} NbdClientInfo;
/* The clients in transmission on export id, oldest first: calls fn with
 * each one, borrowed for the call.  Loop thread. */
void nbd_export_each_client(const NbdServer *srv, const char *id,
                            void (*fn)(void *opaque,
                                       const NbdClientInfo *ci),
                            void *opaque);
/* Number of exports, and the i-th one (0 <= i < count). */
size_t nbd_export_count(const NbdServer *srv);
void nbd_export_info(const NbdServer *srv, size_t i, NbdExportInfo *info);

#endif
