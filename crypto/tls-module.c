/* tls-module.c - what crypto-tls.so gives the executable that loads it
 * (tls-module.h): its stamp and crypto/'s table of functions.  Built
 * into the module only. */
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "config.h"
#include "crypto/tls-module.h"
#include "util/module.h"
#include "util/util.h"

#define MODULE_EXPORT __attribute__((visibility("default")))

MODULE_EXPORT const char blockd_module_stamp[] = MODULE_STAMP;

char *tls_session_peer_name(gnutls_session_t s)
{
    const gnutls_datum_t *certs;
    unsigned int n = 0;
    const char *user;
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = { NULL, 0 };
    char *name = NULL;

    if (gnutls_auth_get_type(s) == GNUTLS_CRD_PSK) {
        user = gnutls_psk_server_get_username(s);
        return user ? xstrdup(user) : NULL;
    }
    certs = gnutls_certificate_get_peers(s, &n);
    if (!certs || n == 0 || gnutls_x509_crt_init(&crt) < 0) {
        return NULL;
    }
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
        gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
        name = xstrdup((const char *)dn.data);
    }
    gnutls_free(dn.data);
    gnutls_x509_crt_deinit(crt);
    return name;
}

MODULE_EXPORT const CryptoTlsOps crypto_tls_ops = {
    .creds_new = tls_creds_new,
    .creds_free = tls_creds_free,
    .get_tls_creds = object_get_tls_creds,
    .creds_id = tls_creds_id,
    .creds_endpoint = tls_creds_endpoint,
    .session_new = tls_creds_session_new,
    .check_peer = tls_creds_check_peer,
    .peer_name = tls_session_peer_name,
    .secret_decode = secret_decode,
};
