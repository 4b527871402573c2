/* secret.c - the secret object (QEMU's crypto/secret.c semantics):
 * data or file, raw or base64, optionally AES-256-CBC encrypted under
 * another secret (keyid) with a base64 iv.  Decoding and decryption
 * (secret-decode.c) are gnutls's: they live in the TLS module, which a
 * raw secret without keyid does not need (tls-module.h). */
#include <stdlib.h>
#include <string.h>

#include "crypto/internal.h"
#include "util/cleanup.h"
#include "util/util.h"

#define SECRET_FILE_MAX (1024 * 1024)

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
        explicit_bzero(filebuf, inlen);     /* keep one copy only */
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
        explicit_bzero(s->data, s->len);
    }
    free(s->data);
    free(s);
}
