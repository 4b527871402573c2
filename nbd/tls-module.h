/* tls-module.h - nbd/'s part of the TLS module crypto-tls.so
 * (crypto/tls-module.h): the TLS transports of the server
 * (xport-tls.c, nbd/internal.h) and of the client (client-tls.c,
 * nbd/client-tls.h), each reached from the executables through a table
 * the module exports:
 *
 *   module:      xport-tls-module.c   nbd_xport_tls_ops
 *                client-tls-module.c  nbd_client_tls_ops
 *   executables: xport-tls-load.c, client-tls-load.c: the forwarders
 *
 * Two of each because nbd/internal.h (the server) and nbd/client.h
 * cannot be included together.  A TLS transport exists only once a
 * tls-creds-* object does, so the module is loaded by then; the
 * questions "is this transport TLS?" answer no without loading it.
 */
#ifndef BLOCKD_NBD_TLS_MODULE_H
#define BLOCKD_NBD_TLS_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "crypto/tls-module.h"

struct Xport;
struct NbdClientXport;

/* Each as nbd/internal.h says (xport_tls_*). */
typedef struct NbdXportTlsOps {
    void (*start)(struct Xport *xp, struct gnutls_session_int *session);
    int (*handshake)(struct Xport *xp, bool *want_write, Error **errp);
    struct gnutls_session_int *(*session)(struct Xport *xp);
} NbdXportTlsOps;

/* Each as nbd/client-tls.h says (nbd_client_starttls,
 * nbd_client_xport_tls_*). */
typedef struct NbdClientTlsOps {
    bool (*starttls)(struct NbdClientXport *xp, void *opaque,
                     Error **errp);
    bool (*start)(struct NbdClientXport *xp, gnutls_session_t session,
                  Error **errp);
    gnutls_session_t (*session)(struct NbdClientXport *xp);
    void (*set_nonblocking)(struct NbdClientXport *xp, bool on);
    void (*moved)(struct NbdClientXport *xp);
    ssize_t (*recv)(struct NbdClientXport *xp, void *buf, size_t len);
    ssize_t (*sendv)(struct NbdClientXport *xp, const struct iovec *iov,
                     int iovcnt);
    size_t (*pending)(struct NbdClientXport *xp);
} NbdClientTlsOps;

#endif
