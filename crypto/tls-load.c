/* tls-load.c - the executables' side of the TLS module (tls-module.h):
 * loading crypto-tls.so on first use, and forwarders with the names of
 * the functions it holds.  Linked into blockd and blockd-nbd only (unit
 * tests and fuzz targets link the module's sources instead). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/tls-module.h"
#include "util/module.h"
#include "util/util.h"

static pthread_mutex_t tls_module_lock = PTHREAD_MUTEX_INITIALIZER;
/* The handle, once loaded: set under the lock, read from any thread. */
static void *tls_module;
/* crypto_tls_ops of the module: set once, read from any thread. */
static const CryptoTlsOps *tls_crypto_ops;

const void *crypto_tls_module_symbol(const char *symbol, Error **errp)
{
    const void *p = NULL;

    pthread_mutex_lock(&tls_module_lock);
    if (tls_module == NULL) {
        __atomic_store_n(&tls_module, module_open(CRYPTO_TLS_MODULE, errp),
                         __ATOMIC_RELEASE);
    }
    if (tls_module != NULL) {
        p = module_symbol(tls_module, CRYPTO_TLS_MODULE, symbol, errp);
    }
    pthread_mutex_unlock(&tls_module_lock);
    if (p == NULL) {
        error_prepend(errp, "TLS is not available: ");
    }
    return p;
}

bool crypto_tls_module_loaded(void)
{
    return __atomic_load_n(&tls_module, __ATOMIC_ACQUIRE) != NULL;
}

/* The table, loading the module when this is the first use. */
static const CryptoTlsOps *tls_ops_load(Error **errp)
{
    const CryptoTlsOps *ops = __atomic_load_n(&tls_crypto_ops,
                                              __ATOMIC_ACQUIRE);

    if (ops == NULL) {
        ops = crypto_tls_module_symbol("crypto_tls_ops", errp);
        if (ops != NULL) {
            __atomic_store_n(&tls_crypto_ops, ops, __ATOMIC_RELEASE);
        }
    }
    return ops;
}

/* The table where a TLS object, session or transport already exists:
 * the module is loaded. */
static const CryptoTlsOps *tls_ops(void)
{
    const CryptoTlsOps *ops = __atomic_load_n(&tls_crypto_ops,
                                              __ATOMIC_ACQUIRE);

    if (ops == NULL) {
        abort();
    }
    return ops;
}

/* ---- forwarders: internal.h ------------------------------------------ */

Object *tls_creds_new(ObjectSet *set, const ObjectOptions *opts,
                      Error **errp)
{
    const CryptoTlsOps *ops = tls_ops_load(errp);

    return ops != NULL ? ops->creds_new(set, opts, errp) : NULL;
}

void tls_creds_free(Object *obj)
{
    tls_ops()->creds_free(obj);
}

bool secret_decode(const uint8_t *in, size_t inlen,
                   QCryptoSecretFormat format,
                   const uint8_t *key, size_t keylen, const char *iv_b64,
                   uint8_t **out, size_t *outlen, Error **errp)
{
    const CryptoTlsOps *ops;

    /* Raw bytes without a key are taken as they are: no module. */
    if (key == NULL && format == QCRYPTO_SECRET_FORMAT_RAW) {
        *out = xmalloc(inlen + 1);
        memcpy(*out, in, inlen);
        (*out)[inlen] = '\0';
        *outlen = inlen;
        return true;
    }
    ops = tls_ops_load(errp);
    return ops != NULL && ops->secret_decode(in, inlen, format, key, keylen,
                                             iv_b64, out, outlen, errp);
}

/* ---- forwarders: tls.h ----------------------------------------------- */

TlsCreds *object_get_tls_creds(ObjectSet *set, const char *id,
                               TlsEndpoint want, Error **errp)
{
    const CryptoTlsOps *ops = tls_ops_load(errp);

    return ops != NULL ? ops->get_tls_creds(set, id, want, errp) : NULL;
}

const char *tls_creds_id(const TlsCreds *creds)
{
    return tls_ops()->creds_id(creds);
}

TlsEndpoint tls_creds_endpoint(const TlsCreds *creds)
{
    return tls_ops()->creds_endpoint(creds);
}

bool tls_creds_session_new(TlsCreds *creds, TlsEndpoint endpoint,
                           const char *hostname, gnutls_session_t *out,
                           Error **errp)
{
    return tls_ops()->session_new(creds, endpoint, hostname, out, errp);
}

bool tls_creds_check_peer(TlsCreds *creds, gnutls_session_t session,
                          const char *hostname, char **identity,
                          Error **errp)
{
    return tls_ops()->check_peer(creds, session, hostname, identity, errp);
}

char *tls_session_peer_name(gnutls_session_t session)
{
    return tls_ops()->peer_name(session);
}
