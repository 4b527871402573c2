/* internal.h - the objects of crypto/ inside: what object.c, secret.c,
 * tlscreds.c and authz.c share, and the pure parsers the unit tests
 * drive from memory (keys.psk, secrets, authz rules).
 *
 *   Object            id, type, users (every object starts with one)
 *    ├── Secret        bytes
 *    ├── TlsCreds      gnutls credentials + priority (tlscreds.c)
 *    └── Authz         identity or rules (authz.c)
 */
#ifndef BLOCKD_CRYPTO_INTERNAL_H
#define BLOCKD_CRYPTO_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "crypto/object.h"
#include "crypto/tls.h"
#include "qapi-types.h"
#include "util/error.h"
#include "util/vector.h"

DEFINE_VECTOR_TYPE(StrVec, char *);

typedef struct Object {
    char *id;
    ObjectType type;
    StrVec users;             /* who pins it (object_add_user), owned */
    ObjectSet *set;           /* the set it belongs to */
} Object;

DEFINE_VECTOR_TYPE(ObjectVec, Object *);

struct ObjectSet {
    ObjectVec objs;           /* in the order added */
    /* Recursive: taken by the entry points an nbd node's open or close
     * may call from a worker or its I/O thread (object.h). */
    pthread_mutex_t lock;
};

/* Look an object up by id (NULL when absent). */
Object *object_find(ObjectSet *set, const char *id);

/* ---- secrets (secret.c) --------------------------------------------- */

typedef struct Secret {
    Object obj;
    uint8_t *data;            /* NUL-terminated beyond len */
    size_t len;
} Secret;

/* Turn a secret's input (data, or the contents of file) into its bytes:
 * without keyid, format base64 decodes it (gnutls); with keyid, the
 * input (base64-decoded first when format is base64) is AES-256-CBC
 * ciphertext under key (32 bytes) and iv_b64 (16 bytes, base64), with
 * PKCS#7 padding.  *out is a new NUL-terminated buffer. */
bool secret_decode(const uint8_t *in, size_t inlen,
                   QCryptoSecretFormat format,
                   const uint8_t *key, size_t keylen, const char *iv_b64,
                   uint8_t **out, size_t *outlen, Error **errp);
Object *secret_new(ObjectSet *set, const ObjectOptions *opts,
                   Error **errp);
void secret_free(Object *obj);

/* ---- TLS credentials (tlscreds.c) ------------------------------------ */

/* One line of keys.psk: "username:hexkey" (psktool's format). */
typedef struct PskKey {
    char *username;
    uint8_t *key;
    size_t keylen;
} PskKey;
DEFINE_VECTOR_TYPE(PskKeys, PskKey);

/* Parse keys.psk (text of len bytes; blank lines are skipped).  Errors
 * name the line: "line 3: no ':' between username and key", "line 3:
 * the key is not hexadecimal", ... and an empty file ("no keys"). */
bool psk_keys_parse(const char *text, size_t len, PskKeys *out,
                    Error **errp);
const PskKey *psk_keys_find(const PskKeys *keys, const char *username);
void psk_keys_clear(PskKeys *keys);

Object *tls_creds_new(ObjectSet *set, const ObjectOptions *opts,
                      Error **errp);
void tls_creds_free(Object *obj);

/* ---- authorization (authz.c) ----------------------------------------- */

typedef struct AuthzRule {
    char *match;
    bool allow;
    bool glob;                /* fnmatch(3) pattern, else exact */
} AuthzRule;
DEFINE_VECTOR_TYPE(AuthzRuleVec, AuthzRule);

typedef struct AuthzRules {
    bool allow;               /* when no rule matches */
    AuthzRuleVec rules;       /* first match wins */
} AuthzRules;

void authz_rules_from_props(const AuthZListProperties *props,
                            AuthzRules *out);
/* An authz-listfile's file: JSON with authz-list's properties. */
bool authz_rules_load_file(const char *filename, AuthzRules *out,
                           Error **errp);
/* The decision for identity (not NULL). */
bool authz_rules_check(const AuthzRules *r, const char *identity);
void authz_rules_clear(AuthzRules *r);

/* ---- iothreads (iothread.c) ------------------------------------------ */

/* Start the thread and its loop; iothread_free stops and joins it. */
Object *iothread_new(ObjectSet *set, const ObjectOptions *opts,
                     Error **errp);
void iothread_free(Object *obj);

Object *authz_new(ObjectSet *set, const ObjectOptions *opts,
                  Error **errp);
void authz_free(Object *obj);

/* Read a whole file (at most max bytes) into a new NUL-terminated
 * buffer: "Unable to read 'F': ...". */
bool crypto_read_file(const char *path, size_t max, char **out,
                      size_t *len, Error **errp);

#endif
