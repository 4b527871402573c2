/* internal.h - what the nbd/ files share: the transport ops, the export
 * and server structs, and the connection entry points.
 *
 *   listener --accept--> NbdConn --GO--> NbdExport --> BlockNode
 *                         │  xport (plain fd; TLS swaps the ops)
 *                         └─ 16 NbdSlot (request + buffers + reply iov)
 *
 * Lifetimes: the server lists every connection and export.  A connection
 * holds a reference on its export; an export holds its node.  Closing a
 * connection stops its I/O at once but the struct lives until its last
 * in-flight request completes; an export is freed (and
 * BLOCK_EXPORT_DELETED sent) when the registry and all connections have
 * dropped it.
 */
#ifndef BLOCKD_NBD_INTERNAL_H
#define BLOCKD_NBD_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "util/loop.h"
#include "nbd/proto.h"
#include "nbd/server.h"
#include "util/acceptor.h"
#include "util/vector.h"

/* ---- xport: the byte stream under a connection ----------------------- */

typedef struct Xport Xport;
typedef struct XportOps {
    const char *name;                       /* "plain", "tls" */
    /* > 0 bytes read, 0 on EOF, -errno (-EAGAIN when nothing yet). */
    ssize_t (*recv)(Xport *xp, void *buf, size_t len);
    /* >= 0 bytes sent (may be short), -errno (-EAGAIN). */
    ssize_t (*sendv)(Xport *xp, const struct iovec *iov, int iovcnt);
    /* Close the transport (the fd too). */
    void (*close)(Xport *xp);
} XportOps;

struct Xport {
    const XportOps *ops;
    int fd;
    void *opaque;                           /* ops-specific (TLS session) */
};

void xport_init_plain(Xport *xp, int fd);
static inline ssize_t xport_recv(Xport *xp, void *buf, size_t len)
{
    return xp->ops->recv(xp, buf, len);
}
static inline ssize_t xport_sendv(Xport *xp, const struct iovec *iov,
                                  int iovcnt)
{
    return xp->ops->sendv(xp, iov, iovcnt);
}
static inline void xport_close(Xport *xp)
{
    if (xp->ops) {
        xp->ops->close(xp);
    }
    xp->ops = NULL;
}

/* ---- exports ---------------------------------------------------------- */

/* Meta context ids of a connection (opaque to clients). */
enum {
    NBD_META_BASE_ALLOCATION = 0,
    NBD_META_ALLOCATION_DEPTH = 1,
    NBD_META_COUNT = 2,
};

struct NbdExport {
    NbdServer *srv;              /* NULL once the server is gone */
    NbdContext *ctx;          /* what the layer above handed us */
    char *id;
    char *name;
    char *description;           /* NULL allowed */
    char *user;                  /* "export 'id'": the node user tag */
    BlockNode *node;             /* referenced */
    bool writable, writethrough, allocation_depth;
    bool shutting_down;          /* deleted: no new clients */
    bool in_registry;
    unsigned refcnt;             /* registry + connections */
    unsigned nconns;             /* connections that did GO on it */
    uint64_t rd_bytes, wr_bytes, rd_ops, wr_ops, other_ops;
};

void nbd_export_ref(NbdExport *exp);
void nbd_export_unref(NbdExport *exp);
/* Transmission flags for a connection that negotiated structured/
 * extended replies (DF depends on it). */
uint16_t nbd_export_tflags(const NbdExport *exp, bool structured);

/* ---- connections ------------------------------------------------------ */

typedef struct NbdConn NbdConn;

DEFINE_VECTOR_TYPE(NbdExportVec, NbdExport *);
DEFINE_VECTOR_TYPE(NbdConnVec, NbdConn *);

struct NbdServer {
    NbdContext *ctx;          /* what the layer above handed us */
    Acceptor *acceptor;          /* the listeners (util/acceptor.h) */
    NbdExportVec exports;        /* the registry, in creation order */
    NbdConnVec conns;            /* every live struct, closed ones too */
    unsigned nclients;           /* connections not yet closed */
    uint32_t max_connections;
    uint64_t handshake_limit_us;
    char *tls_creds, *tls_authz;
    bool stopping;
};

/* Create a connection for an accepted socket (takes the fd). */
NbdConn *nbd_conn_new(NbdServer *srv, int fd);
/* Disconnect now (in-flight requests finish in the background). */
void nbd_conn_close(NbdConn *c);
/* The export the connection is attached to, or NULL while negotiating. */
NbdExport *nbd_conn_export(const NbdConn *c);
bool nbd_conn_closed(const NbdConn *c);
/* The server is being freed: disconnect, forget the server, and free
 * the connection at once unless requests are still in flight. */
void nbd_conn_shutdown(NbdConn *c);

/* Server callbacks from conn.c. */
void nbd_server_conn_closed(NbdServer *srv, NbdConn *c);
void nbd_server_conn_freed(NbdServer *srv, NbdConn *c);

#endif
