/* client-tls-load.c - the executables' forwarders to the client's TLS
 * transport in the module crypto-tls.so (tls-module.h).  Linked into
 * blockd and blockd-nbd only. */
#include <stdlib.h>

#include "nbd/client-tls.h"
#include "nbd/tls-module.h"

/* The module's nbd_client_tls_ops: set once, read from any thread. */
static const NbdClientTlsOps *client_tls_table;

static const NbdClientTlsOps *client_tls(void)
{
    const NbdClientTlsOps *ops = __atomic_load_n(&client_tls_table,
                                                 __ATOMIC_ACQUIRE);

    if (ops == NULL) {
        ops = crypto_tls_module_symbol("nbd_client_tls_ops", NULL);
        if (ops == NULL) {
            abort();            /* loaded with the credentials */
        }
        __atomic_store_n(&client_tls_table, ops, __ATOMIC_RELEASE);
    }
    return ops;
}

bool nbd_client_starttls(NbdClientXport *xp, void *opaque, Error **errp)
{
    return client_tls()->starttls(xp, opaque, errp);
}

bool nbd_client_xport_tls_start(NbdClientXport *xp, gnutls_session_t session,
                                Error **errp)
{
    return client_tls()->start(xp, session, errp);
}

gnutls_session_t nbd_client_xport_tls_session(NbdClientXport *xp)
{
    return crypto_tls_module_loaded() ? client_tls()->session(xp) : NULL;
}

void nbd_client_xport_tls_set_nonblocking(NbdClientXport *xp, bool on)
{
    client_tls()->set_nonblocking(xp, on);
}

void nbd_client_xport_tls_moved(NbdClientXport *xp)
{
    client_tls()->moved(xp);
}

ssize_t nbd_client_xport_tls_recv(NbdClientXport *xp, void *buf, size_t len)
{
    return client_tls()->recv(xp, buf, len);
}

ssize_t nbd_client_xport_tls_sendv(NbdClientXport *xp,
                                   const struct iovec *iov, int iovcnt)
{
    return client_tls()->sendv(xp, iov, iovcnt);
}

size_t nbd_client_xport_tls_pending(NbdClientXport *xp)
{
    return client_tls()->pending(xp);
}
