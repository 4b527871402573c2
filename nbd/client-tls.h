/* client-tls.h - TLS for the NBD client (nbd/client.h): the blocking
 * TLS transport and the STARTTLS hook that sets it up from a
 * tls-creds-* object.
 *
 *   NbdClientTls tls = { .creds = creds, .hostname = "server.example" };
 *   NbdClientOpts o = { ..., .starttls = nbd_client_starttls,
 *                       .starttls_opaque = &tls };
 *   nbd_client_connect(addr, &o, &xp, &info, errp);   // TLS inside
 *
 * Server-side code (it uses crypto/): the nbd block driver and whoever
 * else has an ObjectSet; blockctl (client/) does not link it.
 */
#ifndef BLOCKD_NBD_CLIENT_TLS_H
#define BLOCKD_NBD_CLIENT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <gnutls/gnutls.h>

#include "crypto/tls.h"
#include "nbd/client.h"
#include "util/error.h"

/* What nbd_client_starttls needs; lives as long as the handshake. */
typedef struct NbdClientTls {
    /* tls-creds-* with endpoint=client (object_get_tls_creds with
     * TLS_ENDPOINT_CLIENT), pinned by the caller for as long as any
     * connection made with it is open. */
    TlsCreds *creds;
    /* The name the server's x509 certificate must carry (the nbd
     * driver's tls-hostname, else the host of an inet address); NULL:
     * the certificate is checked against the CA only (a unix socket
     * with no tls-hostname). */
    const char *hostname;
} NbdClientTls;

/* The NbdClientOpts.starttls hook (opaque: an NbdClientTls): a session
 * from the credentials, the TLS handshake on xp->fd within
 * xp->timeout_ms per step, then the server's credentials checked
 * (tls_creds_check_peer with hostname).  On success xp is a TLS stream;
 * on failure xp is closed or left for the caller to close. */
bool nbd_client_starttls(NbdClientXport *xp, void *opaque, Error **errp);

/* The transport alone: run a client TLS handshake with session (taken
 * over: freed on failure, else at xp's close) on xp->fd, a blocking
 * socket, and make xp a TLS stream.  False with errp set ("TLS
 * handshake failed: ...") and xp unchanged on failure. */
bool nbd_client_xport_tls_start(NbdClientXport *xp, gnutls_session_t session,
                                Error **errp);

/* The session of a TLS transport, NULL for a plain one (borrowed). */
gnutls_session_t nbd_client_xport_tls_session(NbdClientXport *xp);

/* For an event-driven transmission engine (client-io.c polls its
 * sockets and must not use read_full/writev_full): with nonblocking on,
 * a TLS transport never waits.  Use these instead of recv()/sendmsg()
 * on xp->fd when nbd_client_xport_tls_session(xp) is not NULL:
 *  - recv: > 0 bytes, 0 on EOF (close_notify), -EAGAIN, -errno;
 *  - sendv: >= 0 bytes sent (may be short), -EAGAIN, -errno.  After a
 *    short send or -EAGAIN the next call must start with the same
 *    unsent bytes (gnutls has that record encrypted and buffered);
 *  - pending: decrypted bytes gnutls holds that poll() cannot see:
 *    while it is not 0, read again before polling.
 * The engine thread only; blocking read_full/writev_full may be used
 * again after nonblocking is turned off. */
void nbd_client_xport_tls_set_nonblocking(NbdClientXport *xp, bool on);
/* The transport struct was copied to xp (the engine copies the link it
 * takes over): the TLS stream now reads and writes through xp.  The old
 * copy must not be used again. */
void nbd_client_xport_tls_moved(NbdClientXport *xp);
ssize_t nbd_client_xport_tls_recv(NbdClientXport *xp, void *buf, size_t len);
ssize_t nbd_client_xport_tls_sendv(NbdClientXport *xp,
                                   const struct iovec *iov, int iovcnt);
size_t nbd_client_xport_tls_pending(NbdClientXport *xp);

#endif
