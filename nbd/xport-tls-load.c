/* xport-tls-load.c - the executables' forwarders to the server's TLS
 * transport in the module crypto-tls.so (tls-module.h).  Linked into
 * blockd and blockd-nbd only. */
#include <stdlib.h>

#include "nbd/internal.h"
#include "nbd/tls-module.h"

/* The module's nbd_xport_tls_ops: set once, read from any thread. */
static const NbdXportTlsOps *xport_tls_table;

static const NbdXportTlsOps *xport_tls(void)
{
    const NbdXportTlsOps *ops = __atomic_load_n(&xport_tls_table,
                                                __ATOMIC_ACQUIRE);

    if (ops == NULL) {
        ops = crypto_tls_module_symbol("nbd_xport_tls_ops", NULL);
        if (ops == NULL) {
            abort();            /* loaded with the credentials */
        }
        __atomic_store_n(&xport_tls_table, ops, __ATOMIC_RELEASE);
    }
    return ops;
}

void xport_tls_start(Xport *xp, struct gnutls_session_int *session)
{
    xport_tls()->start(xp, session);
}

int xport_tls_handshake(Xport *xp, bool *want_write, Error **errp)
{
    return xport_tls()->handshake(xp, want_write, errp);
}

struct gnutls_session_int *xport_tls_session(Xport *xp)
{
    return crypto_tls_module_loaded() ? xport_tls()->session(xp) : NULL;
}
