/* tls-module.h - the boundary around gnutls.
 *
 * Everything that calls gnutls is built into one module,
 * crypto-tls.so (util/module.h), so that blockd and blockd-nbd neither
 * load nor relocate gnutls and its libraries (nettle, gmp, p11-kit,
 * libtasn1, idn2, unistring) nor run gnutls's constructor unless TLS is
 * used: that was two thirds of a start-up's instructions.
 *
 *   executables: crypto/tls-load.c, nbd/tls-load.c      (no gnutls)
 *       tls_creds_new() ...  xport_tls_start() ...  the names of tls.h,
 *       │                     nbd/internal.h, nbd/client-tls.h and
 *       │                     internal.h, each a forwarder
 *       ▼ dlopen on first use, then through these tables
 *   crypto-tls.so: crypto_tls_ops (crypto/tls-module.c), nbd_tls_ops
 *       (nbd/tls-module.c) over tlscreds.c, secret-decode.c,
 *       xport-tls.c, client-tls.c, linked with gnutls
 *
 * The module is loaded by the first object-add of a tls-creds-* object
 * (a --tls-creds option makes one), or of a secret that needs decoding
 * (format=base64 or keyid); everything else that touches TLS needs one
 * of those first.  Unit tests and fuzz targets link the module's
 * sources directly (the same names, with gnutls) and no forwarders.
 */
#ifndef BLOCKD_CRYPTO_TLS_MODULE_H
#define BLOCKD_CRYPTO_TLS_MODULE_H

#include "crypto/internal.h"
#include "crypto/tls.h"

#define CRYPTO_TLS_MODULE "crypto-tls.so"

/* crypto/'s functions of the module: each as tls.h / internal.h says. */
typedef struct CryptoTlsOps {
    Object *(*creds_new)(ObjectSet *set, const ObjectOptions *opts,
                         Error **errp);
    void (*creds_free)(Object *obj);
    TlsCreds *(*get_tls_creds)(ObjectSet *set, const char *id,
                               TlsEndpoint want, Error **errp);
    const char *(*creds_id)(const TlsCreds *creds);
    TlsEndpoint (*creds_endpoint)(const TlsCreds *creds);
    bool (*session_new)(TlsCreds *creds, TlsEndpoint endpoint,
                        const char *hostname, gnutls_session_t *out,
                        Error **errp);
    bool (*check_peer)(TlsCreds *creds, gnutls_session_t session,
                       const char *hostname, char **identity,
                       Error **errp);
    char *(*peer_name)(gnutls_session_t session);
    bool (*secret_decode)(const uint8_t *in, size_t inlen,
                          QCryptoSecretFormat format, const uint8_t *key,
                          size_t keylen, const char *iv_b64,
                          uint8_t **out, size_t *outlen, Error **errp);
} CryptoTlsOps;

/* Load the module (once; any thread): the address of symbol in it
 * ("crypto_tls_ops", "nbd_tls_ops"), or NULL with errp set: "TLS is not
 * available: could not load its module: ...". */
const void *crypto_tls_module_symbol(const char *symbol, Error **errp);

/* Whether the module was loaded (no TLS object, session or transport
 * exists before). */
bool crypto_tls_module_loaded(void);

#endif
