/* secret-decode.c - a secret's input to its bytes (internal.h's
 * secret_decode): base64 and AES-256-CBC with gnutls.  Part of the TLS
 * module, crypto-tls.so (tls-module.h). */
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "crypto/internal.h"
#include "util/cleanup.h"
#include "util/util.h"

#define SECRET_AES_KEY_LEN 32
#define SECRET_AES_BLOCK 16

/* Decode base64 with gnutls into a new NUL-terminated buffer. */
static bool b64_decode(const uint8_t *in, size_t inlen, const char *what,
                       uint8_t **out, size_t *outlen, Error **errp)
{
    gnutls_datum_t src = { .data = (unsigned char *)in,
                           .size = (unsigned int)inlen };
    gnutls_datum_t dst = { 0 };
    int r;

    if (inlen == 0) {
        *out = xzalloc(1);
        *outlen = 0;
        return true;
    }
    if (inlen > UINT32_MAX || memchr(in, '\0', inlen)) {
        error_setg(errp, "Invalid base64 in %s", what);
        return false;
    }
    r = gnutls_base64_decode2(&src, &dst);
    if (r < 0) {
        error_setg(errp, "Invalid base64 in %s: %s", what,
                   gnutls_strerror(r));
        return false;
    }
    *out = xmalloc(dst.size + 1);
    memcpy(*out, dst.data, dst.size);
    (*out)[dst.size] = '\0';
    *outlen = dst.size;
    gnutls_free(dst.data);
    return true;
}

static bool secret_decrypt(const uint8_t *ct, size_t ctlen,
                           const uint8_t *key, size_t keylen,
                           const char *iv_b64, uint8_t **out,
                           size_t *outlen, Error **errp)
{
    CLEANUP_FREE uint8_t *iv = NULL;
    CLEANUP_FREE uint8_t *pt = NULL;
    size_t ivlen;
    gnutls_cipher_hd_t h;
    gnutls_datum_t k, ivd;
    unsigned pad;
    int r;

    if (keylen != SECRET_AES_KEY_LEN) {
        error_setg(errp, "Key should be %d bytes in length not %zu",
                   SECRET_AES_KEY_LEN, keylen);
        return false;
    }
    if (!iv_b64) {
        error_setg(errp, "IV is required to decrypt secret");
        return false;
    }
    if (!b64_decode((const uint8_t *)iv_b64, strlen(iv_b64), "'iv'", &iv,
                    &ivlen, errp)) {
        return false;
    }
    if (ivlen != SECRET_AES_BLOCK) {
        error_setg(errp, "IV should be %d bytes in length not %zu",
                   SECRET_AES_BLOCK, ivlen);
        return false;
    }
    if (ctlen == 0 || ctlen % SECRET_AES_BLOCK) {
        error_setg(errp, "Encrypted secret length %zu is not a multiple "
                   "of %d bytes", ctlen, SECRET_AES_BLOCK);
        return false;
    }
    k = (gnutls_datum_t) { .data = (unsigned char *)key,
                           .size = SECRET_AES_KEY_LEN };
    ivd = (gnutls_datum_t) { .data = iv, .size = SECRET_AES_BLOCK };
    r = gnutls_cipher_init(&h, GNUTLS_CIPHER_AES_256_CBC, &k, &ivd);
    if (r < 0) {
        error_setg(errp, "Cannot initialize AES-256-CBC: %s",
                   gnutls_strerror(r));
        return false;
    }
    pt = xmalloc(ctlen + 1);
    r = gnutls_cipher_decrypt2(h, ct, ctlen, pt, ctlen);
    gnutls_cipher_deinit(h);
    if (r < 0) {
        error_setg(errp, "Cannot decrypt secret: %s", gnutls_strerror(r));
        return false;
    }
    /* PKCS#7: every padding byte holds the padding length, 1..16.  A
     * wrong key almost always breaks this. */
    pad = pt[ctlen - 1];
    if (pad == 0 || pad > SECRET_AES_BLOCK) {
        error_setg(errp, "Incorrect number of padding bytes (%u) found on "
                   "decrypted data", pad);
        return false;
    }
    for (size_t i = ctlen - pad; i < ctlen; i++) {
        if (pt[i] != pad) {
            error_setg(errp, "Incorrect padding found on decrypted data");
            return false;
        }
    }
    *outlen = ctlen - pad;
    pt[*outlen] = '\0';
    *out = TAKE_PTR(pt);
    return true;
}

bool secret_decode(const uint8_t *in, size_t inlen,
                   QCryptoSecretFormat format,
                   const uint8_t *key, size_t keylen, const char *iv_b64,
                   uint8_t **out, size_t *outlen, Error **errp)
{
    CLEANUP_FREE uint8_t *ct = NULL;
    size_t ctlen;

    if (!key) {
        if (format == QCRYPTO_SECRET_FORMAT_BASE64) {
            return b64_decode(in, inlen, "secret", out, outlen, errp);
        }
        *out = xmalloc(inlen + 1);
        memcpy(*out, in, inlen);
        (*out)[inlen] = '\0';
        *outlen = inlen;
        return true;
    }
    if (format == QCRYPTO_SECRET_FORMAT_BASE64) {
        if (!b64_decode(in, inlen, "secret", &ct, &ctlen, errp)) {
            return false;
        }
        return secret_decrypt(ct, ctlen, key, keylen, iv_b64, out, outlen,
                              errp);
    }
    return secret_decrypt(in, inlen, key, keylen, iv_b64, out, outlen,
                          errp);
}

