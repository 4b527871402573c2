/* secret.c - the secret object (QEMU's crypto/secret.c semantics):
 * data or file, raw or base64, optionally AES-256-CBC encrypted under
 * another secret (keyid) with a base64 iv. */
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "crypto/internal.h"
#include "util/cleanup.h"
#include "util/util.h"

#define SECRET_FILE_MAX (1024 * 1024)
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

Object *secret_new(ObjectSet *set, const ObjectOptions *opts, Error **errp)
{
    const SecretProperties *p = &opts->u.secret;
    CLEANUP_FREE char *filebuf = NULL;
    const uint8_t *in, *key = NULL;
    size_t inlen, keylen = 0;
    Secret *s;
    bool ok;

    if (p->has_data && p->has_file) {
        error_setg(errp, "'data' and 'file' are mutually exclusive");
        return NULL;
    }
    if (!p->has_data && !p->has_file) {
        error_setg(errp, "Either 'data' or 'file' must be provided");
        return NULL;
    }
    if (p->has_iv && !p->has_keyid) {
        error_setg(errp, "'iv' is only meaningful with 'keyid'");
        return NULL;
    }
    if (p->has_keyid) {
        key = object_get_secret(set, p->keyid, &keylen, errp);
        if (!key) {
            return NULL;
        }
    }
    if (p->has_file) {
        if (!crypto_read_file(p->file, SECRET_FILE_MAX, &filebuf, &inlen,
                              errp)) {
            return NULL;
        }
        in = (const uint8_t *)filebuf;
    } else {
        in = (const uint8_t *)p->data;
        inlen = strlen(p->data);
    }
    s = xzalloc(sizeof(*s));
    ok = secret_decode(in, inlen, p->format, key, keylen,
                       p->has_iv ? p->iv : NULL, &s->data, &s->len, errp);
    if (filebuf) {
        gnutls_memset(filebuf, 0, inlen);     /* keep one copy only */
    }
    if (!ok) {
        free(s);
        return NULL;
    }
    return &s->obj;
}

void secret_free(Object *obj)
{
    Secret *s = (Secret *)obj;

    if (s->data) {
        gnutls_memset(s->data, 0, s->len);
    }
    free(s->data);
    free(s);
}
