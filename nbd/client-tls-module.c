/* client-tls-module.c - the client transport's table in the TLS module
 * crypto-tls.so (tls-module.h).  Built into the module only. */
#include "nbd/client-tls.h"
#include "nbd/tls-module.h"

const NbdClientTlsOps nbd_client_tls_ops
    __attribute__((visibility("default"))) = {
    .starttls = nbd_client_starttls,
    .start = nbd_client_xport_tls_start,
    .session = nbd_client_xport_tls_session,
    .set_nonblocking = nbd_client_xport_tls_set_nonblocking,
    .moved = nbd_client_xport_tls_moved,
    .recv = nbd_client_xport_tls_recv,
    .sendv = nbd_client_xport_tls_sendv,
    .pending = nbd_client_xport_tls_pending,
};
