/* xport-tls-module.c - the server transport's table in the TLS module
 * crypto-tls.so (tls-module.h).  Built into the module only. */
#include "nbd/internal.h"
#include "nbd/tls-module.h"

const NbdXportTlsOps nbd_xport_tls_ops
    __attribute__((visibility("default"))) = {
    .start = xport_tls_start,
    .handshake = xport_tls_handshake,
    .session = xport_tls_session,
};
