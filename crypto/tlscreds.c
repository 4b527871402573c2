/* tlscreds.c - TLS credentials objects (QEMU's crypto/tlscreds*.c
 * semantics) and the sessions they open.
 *
 *   tls-creds-x509   dir/ca-cert.pem (+ ca-crl.pem), server-cert.pem +
 *                    server-key.pem or client-cert.pem + client-key.pem
 *                    (a client's are optional), dh-params.pem; the key
 *                    may be encrypted under the secret passwordid
 *   tls-creds-psk    dir/keys.psk: "username:hexkey" lines (psktool)
 *   tls-creds-anon   no authentication at all
 *
 * Every file is read and checked when the object is added; afterwards
 * nothing is read again (a server's PSK keys are looked up in memory).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "crypto/internal.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

#define CREDS_FILE_MAX (4 * 1024 * 1024)
/* The default priority is gnutls's NORMAL, as QEMU's, reordered, with
 * the server's order deciding:
 * - the key exchange groups so X25519 comes first: a client offering
 *   both (gnutls clients send key shares for X25519 and SECP256R1) gets
 *   the cheaper curve, which takes a sixth of the server's CPU per
 *   handshake off (callgrind: 3.7 -> 3.1 million instructions per
 *   connection with an ECDSA certificate) and as much off the client's;
 * - the ciphers so AES-128-GCM comes first (TLS 1.3's mandatory suite,
 *   TLS_AES_128_GCM_SHA256): NORMAL's first, AES-256-GCM, brings the
 *   SHA-384 key schedule, which no x86 instruction speeds up, where
 *   SHA-256 has SHA-NI; a libnbd connect over TLS took 6% less time
 *   (bench/results/2026-12-06-tls-connect-quiet.txt).
 * The same groups, ciphers and versions as NORMAL.  Then what PSK /
 * anon add to any priority, as QEMU. */
#define TLS_DEFAULT_PRIORITY                                             \
    "NORMAL:%SERVER_PRECEDENCE:-GROUP-ALL:+GROUP-X25519:"                \
    "+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1:+GROUP-X448:"    \
    "+GROUP-FFDHE2048:+GROUP-FFDHE3072:+GROUP-FFDHE4096:"                \
    "+GROUP-FFDHE6144:+GROUP-FFDHE8192:-CIPHER-ALL:+AES-128-GCM:"        \
    "+AES-256-GCM:+CHACHA20-POLY1305:+AES-256-CCM:+AES-256-CBC:"         \
    "+AES-128-CCM:+AES-128-CBC"
#define TLS_PRIORITY_PSK ":+ECDHE-PSK:+DHE-PSK:+PSK"
#define TLS_PRIORITY_ANON ":+ANON-ECDH:+ANON-DH"
#define PSK_DEFAULT_USERNAME "qemu"

struct TlsCreds {
    Object obj;
    TlsEndpoint endpoint;
    bool verify_peer;         /* x509 only */
    gnutls_priority_t prio;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
    gnutls_anon_server_credentials_t anon_server;
    gnutls_anon_client_credentials_t anon_client;
    gnutls_dh_params_t dh;    /* NULL: gnutls's known parameters */
    PskKeys keys;             /* a PSK server's keys */
    char *passwordid;         /* the secret pinned by this object */
    char *user;               /* how it pins it: "object 'ID'" */
};

/* ---- keys.psk ----------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool psk_keys_parse(const char *text, size_t len, PskKeys *out,
                    Error **errp)
{
    PskKeys keys = { 0 };
    size_t pos = 0;
    unsigned lineno = 0;

    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        const char *colon, *hex;
        size_t ulen, hlen;
        PskKey k = { 0 };

        pos += n + (nl ? 1 : 0);
        lineno++;
        if (n && line[n - 1] == '\r') {
            n--;
        }
        if (n == 0) {
            continue;
        }
        if (memchr(line, '\0', n)) {
            error_setg(errp, "line %u: a NUL byte", lineno);
            goto fail;
        }
        colon = memchr(line, ':', n);
        if (!colon) {
            error_setg(errp, "line %u: no ':' between username and key",
                       lineno);
            goto fail;
        }
        ulen = (size_t)(colon - line);
        hex = colon + 1;
        hlen = n - ulen - 1;
        if (ulen == 0) {
            error_setg(errp, "line %u: empty username", lineno);
            goto fail;
        }
        if (hlen == 0) {
            error_setg(errp, "line %u: empty key", lineno);
            goto fail;
        }
        if (hlen % 2) {
            error_setg(errp, "line %u: the key has an odd number of hex "
                       "digits", lineno);
            goto fail;
        }
        k.keylen = hlen / 2;
        k.key = xmalloc(k.keylen);
        for (size_t i = 0; i < k.keylen; i++) {
            int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

            if (hi < 0 || lo < 0) {
                free(k.key);
                error_setg(errp, "line %u: the key is not hexadecimal",
                           lineno);
                goto fail;
            }
            k.key[i] = (uint8_t)(hi << 4 | lo);
        }
        k.username = xstrndup(line, ulen);
        /* psktool rewrites a user's line in place: the first wins. */
        if (psk_keys_find(&keys, k.username)) {
            free(k.username);
            gnutls_memset(k.key, 0, k.keylen);
            free(k.key);
            continue;
        }
        PskKeys_append(&keys, k);
    }
    if (keys.len == 0) {
        error_setg(errp, "no keys");
        goto fail;
    }
    *out = keys;
    return true;

fail:
    psk_keys_clear(&keys);
    return false;
}

const PskKey *psk_keys_find(const PskKeys *keys, const char *username)
{
    for (size_t i = 0; i < keys->len; i++) {
        if (strcmp(keys->ptr[i].username, username) == 0) {
            return &keys->ptr[i];
        }
    }
    return NULL;
}

void psk_keys_clear(PskKeys *keys)
{
    for (size_t i = 0; i < keys->len; i++) {
        free(keys->ptr[i].username);
        gnutls_memset(keys->ptr[i].key, 0, keys->ptr[i].keylen);
        free(keys->ptr[i].key);
    }
    PskKeys_reset(keys);
}

/* ---- files -------------------------------------------------------- */

/* dir/name, or NULL when it does not exist and is not required. */
static bool creds_path(const char *dir, const char *name, bool required,
                       char **out, Error **errp)
{
    CLEANUP_FREE char *path = xasprintf("%s/%s", dir, name);
    struct stat st;

    if (access(path, R_OK) < 0) {
        if (errno == ENOENT && !required) {
            *out = NULL;
            return true;
        }
        error_setg_errno(errp, errno, "Unable to access credentials %s",
                         path);
        return false;
    }
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
        error_setg(errp, "Unable to access credentials %s: not a regular "
                   "file", path);
        return false;
    }
    *out = TAKE_PTR(path);
    return true;
}

static bool load_dh(const char *path, gnutls_dh_params_t *dh, Error **errp)
{
    CLEANUP_FREE char *text = NULL;
    gnutls_datum_t d;
    size_t len;
    int r;

    if (!crypto_read_file(path, CREDS_FILE_MAX, &text, &len, errp)) {
        return false;
    }
    d = (gnutls_datum_t) { .data = (unsigned char *)text,
                           .size = (unsigned)len };
    gnutls_dh_params_init(dh);
    r = gnutls_dh_params_import_pkcs3(*dh, &d, GNUTLS_X509_FMT_PEM);
    if (r < 0) {
        gnutls_dh_params_deinit(*dh);
        *dh = NULL;
        error_setg(errp, "Unable to load DH parameters from %s: %s", path,
                   gnutls_strerror(r));
        return false;
    }
    return true;
}

/* ---- x509 sanity checks ----------------------------------------------- */

static bool check_times(gnutls_x509_crt_t crt, const char *what,
                        const char *path, Error **errp)
{
    time_t now = time(NULL);
    time_t t;

    t = gnutls_x509_crt_get_expiration_time(crt);
    if (t == (time_t)-1) {
        error_setg(errp, "Cannot get the %s %s expiration time", what,
                   path);
        return false;
    }
    if (t < now) {
        error_setg(errp, "The %s %s has expired", what, path);
        return false;
    }
    t = gnutls_x509_crt_get_activation_time(crt);
    if (t == (time_t)-1) {
        error_setg(errp, "Cannot get the %s %s activation time", what,
                   path);
        return false;
    }
    if (t > now) {
        error_setg(errp, "The %s %s is not yet active", what, path);
        return false;
    }
    return true;
}

static bool load_crt_list(const char *path, gnutls_x509_crt_t **crts,
                          unsigned *n, Error **errp)
{
    CLEANUP_FREE char *text = NULL;
    gnutls_datum_t d;
    size_t len;
    int r;

    if (!crypto_read_file(path, CREDS_FILE_MAX, &text, &len, errp)) {
        return false;
    }
    d = (gnutls_datum_t) { .data = (unsigned char *)text,
                           .size = (unsigned)len };
    r = gnutls_x509_crt_list_import2(crts, n, &d, GNUTLS_X509_FMT_PEM, 0);
    if (r < 0 || *n == 0) {
        error_setg(errp, "Unable to import certificates from %s: %s", path,
                   r < 0 ? gnutls_strerror(r) : "none found");
        return false;
    }
    return true;
}

static void free_crt_list(gnutls_x509_crt_t *crts, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        gnutls_x509_crt_deinit(crts[i]);
    }
    gnutls_free(crts);
}

/* Whether crt may serve as purpose (a key purpose OID): a certificate
 * without the extended key usage extension may serve as anything. */
static bool crt_allows_purpose(gnutls_x509_crt_t crt, const char *purpose)
{
    bool any = false;

    for (unsigned i = 0;; i++) {
        char oid[256];
        size_t len = sizeof(oid);
        int r = gnutls_x509_crt_get_key_purpose_oid(crt, i, oid, &len,
                                                    NULL);

        if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
            return !any;
        }
        if (r < 0) {
            return false;
        }
        any = true;
        if (strcmp(oid, purpose) == 0 ||
            strcmp(oid, GNUTLS_KP_ANY) == 0) {
            return true;
        }
    }
}

/* The CA certificates are CAs in their validity period; the own
 * certificate (if any) is in its validity period, not a CA, and chains
 * to the CA (and is not revoked by the CRL). */
/* gnutls's text for a verification status, without the space it ends
 * its sentences with (the message would end in one). */
static const char *status_text(gnutls_datum_t *why)
{
    char *s = (char *)why->data;
    size_t n = strlen(s);

    while (n > 0 && s[n - 1] == ' ') {
        s[--n] = '\0';
    }
    return s;
}

static bool x509_sanity_check(const char *cacert, const char *cacrl,
                              const char *cert, TlsEndpoint endpoint,
                              Error **errp)
{
    gnutls_x509_crt_t *cas = NULL, *crts = NULL;
    gnutls_x509_crl_t crl = NULL;
    unsigned ncas = 0, ncrts = 0, status = 0;
    unsigned int critical;
    bool ok = false;
    int r;

    if (!load_crt_list(cacert, &cas, &ncas, errp)) {
        goto out;
    }
    for (unsigned i = 0; i < ncas; i++) {
        if (!check_times(cas[i], "CA certificate", cacert, errp)) {
            goto out;
        }
        r = gnutls_x509_crt_get_basic_constraints(cas[i], &critical, NULL,
                                                  NULL);
        if (r <= 0) {
            error_setg(errp, "The certificate %s basic constraints do not "
                       "show a CA", cacert);
            goto out;
        }
    }
    if (!cert) {
        ok = true;
        goto out;
    }
    if (!load_crt_list(cert, &crts, &ncrts, errp)) {
        goto out;
    }
    if (!check_times(crts[0], "certificate", cert, errp)) {
        goto out;
    }
    if (gnutls_x509_crt_get_basic_constraints(crts[0], &critical, NULL,
                                              NULL) > 0) {
        error_setg(errp, "The certificate %s basic constraints show a CA",
                   cert);
        goto out;
    }
    if (!crt_allows_purpose(crts[0], endpoint == TLS_ENDPOINT_SERVER
                                         ? GNUTLS_KP_TLS_WWW_SERVER
                                         : GNUTLS_KP_TLS_WWW_CLIENT)) {
        error_setg(errp, "The certificate %s purpose does not allow use as "
                   "a TLS %s", cert,
                   endpoint == TLS_ENDPOINT_SERVER ? "server" : "client");
        goto out;
    }
    if (cacrl) {
        CLEANUP_FREE char *text = NULL;
        gnutls_datum_t d;
        size_t len;

        if (!crypto_read_file(cacrl, CREDS_FILE_MAX, &text, &len, errp)) {
            goto out;
        }
        d = (gnutls_datum_t) { .data = (unsigned char *)text,
                               .size = (unsigned)len };
        gnutls_x509_crl_init(&crl);
        r = gnutls_x509_crl_import(crl, &d, GNUTLS_X509_FMT_PEM);
        if (r < 0) {
            error_setg(errp, "Unable to import CRL %s: %s", cacrl,
                       gnutls_strerror(r));
            goto out;
        }
    }
    r = gnutls_x509_crt_list_verify(crts, ncrts, cas, ncas,
                                    crl ? &crl : NULL, crl ? 1 : 0, 0,
                                    &status);
    if (r < 0 || status) {
        gnutls_datum_t why = { 0 };

        if (r >= 0 &&
            gnutls_certificate_verification_status_print(
                status, GNUTLS_CRT_X509, &why, 0) >= 0) {
            error_setg(errp, "The certificate %s does not verify against "
                       "the CA %s: %s", cert, cacert,
                       status_text(&why));
            gnutls_free(why.data);
        } else {
            error_setg(errp, "The certificate %s does not verify against "
                       "the CA %s: %s", cert, cacert,
                       r < 0 ? gnutls_strerror(r) : "invalid");
        }
        goto out;
    }
    ok = true;

out:
    if (crl) {
        gnutls_x509_crl_deinit(crl);
    }
    free_crt_list(cas, ncas);
    free_crt_list(crts, ncrts);
    return ok;
}

/* ---- loading ------------------------------------------------------ */

static bool x509_load(TlsCreds *c, ObjectSet *set, const char *id,
                      const TlsCredsX509Properties *p, Error **errp)
{
    bool server = c->endpoint == TLS_ENDPOINT_SERVER;
    CLEANUP_FREE char *cacert = NULL;
    CLEANUP_FREE char *cacrl = NULL;
    CLEANUP_FREE char *cert = NULL;
    CLEANUP_FREE char *key = NULL;
    CLEANUP_FREE char *dh = NULL;
    const char *password = NULL;
    int r;

    if (!creds_path(p->dir, "ca-cert.pem", true, &cacert, errp) ||
        !creds_path(p->dir, "ca-crl.pem", false, &cacrl, errp) ||
        !creds_path(p->dir, server ? "server-cert.pem" : "client-cert.pem",
                    server, &cert, errp) ||
        !creds_path(p->dir, server ? "server-key.pem" : "client-key.pem",
                    server, &key, errp)) {
        return false;
    }
    if (server && !creds_path(p->dir, "dh-params.pem", false, &dh, errp)) {
        return false;
    }
    if (!cert != !key) {
        error_setg(errp, "Unable to access credentials %s/%s: a "
                   "certificate needs its key and a key its certificate",
                   p->dir, cert ? "client-key.pem" : "client-cert.pem");
        return false;
    }
    if (p->has_passwordid) {
        password = (const char *)object_get_secret(set, p->passwordid, NULL,
                                                   errp);
        if (!password) {
            return false;
        }
    }
    if (p->sanity_check &&
        !x509_sanity_check(cacert, cacrl, cert, c->endpoint, errp)) {
        return false;
    }
    r = gnutls_certificate_allocate_credentials(&c->x509);
    if (r < 0) {
        error_setg(errp, "Cannot allocate credentials: %s",
                   gnutls_strerror(r));
        return false;
    }
    r = gnutls_certificate_set_x509_trust_file(c->x509, cacert,
                                               GNUTLS_X509_FMT_PEM);
    if (r <= 0) {
        error_setg(errp, "Cannot load CA certificate %s: %s", cacert,
                   r < 0 ? gnutls_strerror(r) : "no certificate");
        return false;
    }
    if (cacrl) {
        r = gnutls_certificate_set_x509_crl_file(c->x509, cacrl,
                                                 GNUTLS_X509_FMT_PEM);
        if (r < 0) {
            error_setg(errp, "Cannot load CA CRL %s: %s", cacrl,
                       gnutls_strerror(r));
            return false;
        }
    }
    if (cert) {
        r = gnutls_certificate_set_x509_key_file2(c->x509, cert, key,
                                                  GNUTLS_X509_FMT_PEM,
                                                  password, 0);
        if (r < 0) {
            error_setg(errp, "Cannot load certificate %s & key %s: %s",
                       cert, key, gnutls_strerror(r));
            return false;
        }
    }
    if (dh) {
        if (!load_dh(dh, &c->dh, errp)) {
            return false;
        }
        gnutls_certificate_set_dh_params(c->x509, c->dh);
    } else if (server) {
        gnutls_certificate_set_known_dh_params(c->x509,
                                               GNUTLS_SEC_PARAM_MEDIUM);
    }
    if (p->has_passwordid) {
        c->user = xasprintf("object '%s'", id);
        if (!object_add_user(set, p->passwordid, c->user, errp)) {
            return false;
        }
        c->passwordid = xstrdup(p->passwordid);
    }
    return true;
}

/* gnutls asks a PSK server for the key of the username a client sent;
 * the session's user pointer is the TlsCreds (tls_creds_session_new). */
static int psk_server_key(gnutls_session_t session, const char *username,
                          gnutls_datum_t *key)
{
    TlsCreds *c = gnutls_session_get_ptr(session);
    const PskKey *k = c ? psk_keys_find(&c->keys, username) : NULL;

    if (!k) {
        log_info("tls-creds-psk '%s': unknown username '%s'",
                 c ? c->obj.id : "?", username);
        return -1;
    }
    key->data = gnutls_malloc(k->keylen);
    if (!key->data) {
        return -1;
    }
    memcpy(key->data, k->key, k->keylen);
    key->size = (unsigned)k->keylen;
    return 0;
}

static bool psk_load(TlsCreds *c, const TlsCredsPskProperties *p,
                     Error **errp)
{
    bool server = c->endpoint == TLS_ENDPOINT_SERVER;
    CLEANUP_FREE char *path = NULL;
    CLEANUP_FREE char *text = NULL;
    CLEANUP_FREE char *dh = NULL;
    size_t len;
    bool ok;
    int r;

    if (!creds_path(p->dir, "keys.psk", true, &path, errp)) {
        return false;
    }
    if (server && !creds_path(p->dir, "dh-params.pem", false, &dh, errp)) {
        return false;
    }
    if (!crypto_read_file(path, CREDS_FILE_MAX, &text, &len, errp)) {
        return false;
    }
    ok = psk_keys_parse(text, len, &c->keys, errp);
    gnutls_memset(text, 0, len);          /* keep one copy of the keys */
    if (!ok) {
        error_prepend(errp, "Invalid PSK file %s: ", path);
        return false;
    }
    if (server) {
        if (p->has_username) {
            error_setg(errp, "'username' is only meaningful for a client "
                       "endpoint");
            return false;
        }
        r = gnutls_psk_allocate_server_credentials(&c->psk_server);
        if (r < 0) {
            error_setg(errp, "Cannot allocate credentials: %s",
                       gnutls_strerror(r));
            return false;
        }
        gnutls_psk_set_server_credentials_function(c->psk_server,
                                                   psk_server_key);
        if (dh) {
            if (!load_dh(dh, &c->dh, errp)) {
                return false;
            }
            gnutls_psk_set_server_dh_params(c->psk_server, c->dh);
        } else {
            gnutls_psk_set_server_known_dh_params(c->psk_server,
                                                  GNUTLS_SEC_PARAM_MEDIUM);
        }
    } else {
        const char *user = p->has_username ? p->username
                                           : PSK_DEFAULT_USERNAME;
        const PskKey *k = psk_keys_find(&c->keys, user);
        gnutls_datum_t d;

        if (!k) {
            error_setg(errp, "Username %s not found in PSK file %s", user,
                       path);
            return false;
        }
        r = gnutls_psk_allocate_client_credentials(&c->psk_client);
        if (r < 0) {
            error_setg(errp, "Cannot allocate credentials: %s",
                       gnutls_strerror(r));
            return false;
        }
        d = (gnutls_datum_t) { .data = k->key, .size = (unsigned)k->keylen };
        r = gnutls_psk_set_client_credentials(c->psk_client, user, &d,
                                              GNUTLS_PSK_KEY_RAW);
        if (r < 0) {
            error_setg(errp, "Cannot set PSK client credentials: %s",
                       gnutls_strerror(r));
            return false;
        }
        /* The client's key now lives in gnutls: keep no copy. */
        psk_keys_clear(&c->keys);
    }
    return true;
}

/* anon: a server takes dir/dh-params.pem when there is a dir. */
static bool anon_load(TlsCreds *c, const TlsCredsAnonProperties *p,
                      Error **errp)
{
    CLEANUP_FREE char *dh = NULL;
    int r;

    if (c->endpoint == TLS_ENDPOINT_SERVER) {
        if (p->has_dir &&
            !creds_path(p->dir, "dh-params.pem", false, &dh, errp)) {
            return false;
        }
        if (dh && !load_dh(dh, &c->dh, errp)) {
            return false;
        }
        r = gnutls_anon_allocate_server_credentials(&c->anon_server);
        if (r >= 0 && c->dh) {
            gnutls_anon_set_server_dh_params(c->anon_server, c->dh);
        } else if (r >= 0) {
            gnutls_anon_set_server_known_dh_params(c->anon_server,
                                                   GNUTLS_SEC_PARAM_MEDIUM);
        }
    } else {
        r = gnutls_anon_allocate_client_credentials(&c->anon_client);
    }
    if (r < 0) {
        error_setg(errp, "Cannot allocate credentials: %s",
                   gnutls_strerror(r));
        return false;
    }
    return true;
}

static bool set_priority(TlsCreds *c, ObjectType type, const char *base,
                         Error **errp)
{
    CLEANUP_FREE char *prio = NULL;
    const char *err_pos = NULL;
    int r;

    prio = xasprintf("%s%s", base,
                     type == OBJECT_TYPE_TLS_CREDS_PSK ? TLS_PRIORITY_PSK :
                     type == OBJECT_TYPE_TLS_CREDS_ANON ? TLS_PRIORITY_ANON :
                     "");
    r = gnutls_priority_init(&c->prio, prio, &err_pos);
    if (r < 0) {
        c->prio = NULL;
        error_setg(errp, "Unable to set TLS session priority %s: %s "
                   "(at '%s')", prio, gnutls_strerror(r),
                   err_pos ? err_pos : "");
        return false;
    }
    return true;
}

/* The members every tls-creds-* type has (its schema base), copied out
 * of the type's own struct. */
#define TLS_CREDS_COMMON(p)                                              \
    ((TlsCredsProperties) {                                              \
        .has_verify_peer = (p)->has_verify_peer,                         \
        .verify_peer = (p)->verify_peer,                                 \
        .has_dir = (p)->has_dir, .dir = (p)->dir,                        \
        .has_endpoint = (p)->has_endpoint, .endpoint = (p)->endpoint,    \
        .has_priority = (p)->has_priority, .priority = (p)->priority,    \
    })

Object *tls_creds_new(ObjectSet *set, const ObjectOptions *opts,
                      Error **errp)
{
    TlsCreds *c = xzalloc(sizeof(*c));
    TlsCredsProperties common;
    bool ok;

    switch (opts->qom_type) {
    case OBJECT_TYPE_TLS_CREDS_X509:
        common = TLS_CREDS_COMMON(&opts->u.tls_creds_x509);
        break;
    case OBJECT_TYPE_TLS_CREDS_PSK:
        common = TLS_CREDS_COMMON(&opts->u.tls_creds_psk);
        break;
    default:
        common = TLS_CREDS_COMMON(&opts->u.tls_creds_anon);
        break;
    }
    c->obj.set = set;
    c->endpoint = common.endpoint == QCRYPTO_TLS_CREDS_ENDPOINT_SERVER
                      ? TLS_ENDPOINT_SERVER : TLS_ENDPOINT_CLIENT;
    c->verify_peer = common.verify_peer;
    if (opts->qom_type != OBJECT_TYPE_TLS_CREDS_ANON && !common.has_dir) {
        error_setg(errp, "Missing 'dir' property value");
        free(c);
        return NULL;
    }
    ok = set_priority(c, opts->qom_type,
                      common.has_priority ? common.priority
                                          : TLS_DEFAULT_PRIORITY, errp);
    if (ok) {
        switch (opts->qom_type) {
        case OBJECT_TYPE_TLS_CREDS_X509:
            ok = x509_load(c, set, opts->id, &opts->u.tls_creds_x509, errp);
            break;
        case OBJECT_TYPE_TLS_CREDS_PSK:
            ok = psk_load(c, &opts->u.tls_creds_psk, errp);
            break;
        default:
            ok = anon_load(c, &opts->u.tls_creds_anon, errp);
            break;
        }
    }
    if (!ok) {
        c->obj.type = opts->qom_type;
        tls_creds_free(&c->obj);
        return NULL;
    }
    return &c->obj;
}

void tls_creds_free(Object *obj)
{
    TlsCreds *c = (TlsCreds *)obj;

    if (c->passwordid) {
        object_remove_user(c->obj.set, c->passwordid, c->user);
    }
    free(c->passwordid);
    free(c->user);
    if (c->x509) {
        gnutls_certificate_free_credentials(c->x509);
    }
    if (c->psk_server) {
        gnutls_psk_free_server_credentials(c->psk_server);
    }
    if (c->psk_client) {
        gnutls_psk_free_client_credentials(c->psk_client);
    }
    if (c->anon_server) {
        gnutls_anon_free_server_credentials(c->anon_server);
    }
    if (c->anon_client) {
        gnutls_anon_free_client_credentials(c->anon_client);
    }
    if (c->dh) {
        gnutls_dh_params_deinit(c->dh);
    }
    if (c->prio) {
        gnutls_priority_deinit(c->prio);
    }
    psk_keys_clear(&c->keys);
    free(c);
}

/* ---- the interface of tls.h ------------------------------------------ */

static const char *endpoint_name(TlsEndpoint e)
{
    return e == TLS_ENDPOINT_SERVER ? "server" : "client";
}

TlsCreds *object_get_tls_creds(ObjectSet *set, const char *id,
                               TlsEndpoint want, Error **errp)
{
    Object *obj = object_find(set, id);
    TlsCreds *c;

    if (!obj) {
        error_setg(errp, "No TLS credentials with id '%s'", id);
        return NULL;
    }
    if (obj->type != OBJECT_TYPE_TLS_CREDS_X509 &&
        obj->type != OBJECT_TYPE_TLS_CREDS_PSK &&
        obj->type != OBJECT_TYPE_TLS_CREDS_ANON) {
        error_setg(errp, "Object with id '%s' is not TLS credentials", id);
        return NULL;
    }
    c = (TlsCreds *)obj;
    if (c->endpoint != want) {
        error_setg(errp, "Expected TLS credentials for a %s endpoint",
                   endpoint_name(want));
        return NULL;
    }
    return c;
}

const char *tls_creds_id(const TlsCreds *creds)
{
    return creds->obj.id;
}

TlsEndpoint tls_creds_endpoint(const TlsCreds *creds)
{
    return creds->endpoint;
}

static bool is_ip_address(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, s, buf) == 1 ||
           inet_pton(AF_INET6, s, buf) == 1;
}

bool tls_creds_session_new(TlsCreds *c, TlsEndpoint endpoint,
                           const char *hostname, gnutls_session_t *out,
                           Error **errp)
{
    gnutls_session_t s;
    int r;

    if (endpoint != c->endpoint) {
        error_setg(errp, "Expected TLS credentials for a %s endpoint",
                   endpoint_name(endpoint));
        return false;
    }
    r = gnutls_init(&s, endpoint == TLS_ENDPOINT_SERVER ? GNUTLS_SERVER
                                                        : GNUTLS_CLIENT);
    if (r < 0) {
        error_setg(errp, "Cannot initialize TLS session: %s",
                   gnutls_strerror(r));
        return false;
    }
    r = gnutls_priority_set(s, c->prio);
    if (r >= 0) {
        if (c->x509) {
            r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->x509);
        } else if (c->psk_server) {
            r = gnutls_credentials_set(s, GNUTLS_CRD_PSK, c->psk_server);
        } else if (c->psk_client) {
            r = gnutls_credentials_set(s, GNUTLS_CRD_PSK, c->psk_client);
        } else if (c->anon_server) {
            r = gnutls_credentials_set(s, GNUTLS_CRD_ANON, c->anon_server);
        } else {
            r = gnutls_credentials_set(s, GNUTLS_CRD_ANON, c->anon_client);
        }
    }
    if (r >= 0 && c->x509 && endpoint == TLS_ENDPOINT_SERVER &&
        c->verify_peer) {
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUEST);
    }
    if (r >= 0 && endpoint == TLS_ENDPOINT_CLIENT && hostname &&
        *hostname && !is_ip_address(hostname)) {
        r = gnutls_server_name_set(s, GNUTLS_NAME_DNS, hostname,
                                   strlen(hostname));
    }
    if (r < 0) {
        gnutls_deinit(s);
        error_setg(errp, "Cannot set up TLS session: %s",
                   gnutls_strerror(r));
        return false;
    }
    gnutls_session_set_ptr(s, c);
    *out = s;
    return true;
}

static char *x509_dn(gnutls_x509_crt_t crt)
{
    size_t len = 0;
    char *dn;

    if (gnutls_x509_crt_get_dn(crt, NULL, &len) !=
        GNUTLS_E_SHORT_MEMORY_BUFFER) {
        return NULL;
    }
    dn = xmalloc(len + 1);
    if (gnutls_x509_crt_get_dn(crt, dn, &len) < 0) {
        free(dn);
        return NULL;
    }
    dn[len] = '\0';
    return dn;
}

static bool x509_check_peer(TlsCreds *c, gnutls_session_t s,
                            const char *hostname, char **identity,
                            Error **errp)
{
    /* The peer's certificate must be one for the other end's role (when
     * it names purposes at all). */
    gnutls_typed_vdata_st purpose = {
        .type = GNUTLS_DT_KEY_PURPOSE_OID,
        .data = (unsigned char *)(c->endpoint == TLS_ENDPOINT_SERVER
                                  ? GNUTLS_KP_TLS_WWW_CLIENT
                                  : GNUTLS_KP_TLS_WWW_SERVER),
    };
    const gnutls_datum_t *certs;
    unsigned ncerts = 0, status = 0;
    gnutls_x509_crt_t crt;
    char *dn;
    int r;

    r = gnutls_certificate_verify_peers(s, &purpose, 1, &status);
    if (r < 0) {
        error_setg(errp, "Verify failed: %s", gnutls_strerror(r));
        return false;
    }
    if (status) {
        gnutls_datum_t why = { 0 };

        if (gnutls_certificate_verification_status_print(
                status, GNUTLS_CRT_X509, &why, 0) >= 0) {
            error_setg(errp, "Invalid certificate: %s", status_text(&why));
            gnutls_free(why.data);
        } else {
            error_setg(errp, "Invalid certificate");
        }
        return false;
    }
    certs = gnutls_certificate_get_peers(s, &ncerts);
    if (!certs || ncerts == 0) {
        error_setg(errp, "No certificate peer");
        return false;
    }
    if (gnutls_x509_crt_init(&crt) < 0) {
        error_setg(errp, "Cannot initialize x509 certificate");
        return false;
    }
    r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
    if (r < 0) {
        gnutls_x509_crt_deinit(crt);
        error_setg(errp, "Cannot import the peer certificate: %s",
                   gnutls_strerror(r));
        return false;
    }
    /* A client checks whom it talks to, as QEMU's TLS sessions do: a
     * certificate proves nothing about a peer without a name to match
     * (a unix socket without tls-hostname is refused, not trusted). */
    if (c->endpoint == TLS_ENDPOINT_CLIENT && hostname == NULL) {
        gnutls_x509_crt_deinit(crt);
        error_setg(errp, "No hostname for certificate validation");
        return false;
    }
    if (c->endpoint == TLS_ENDPOINT_CLIENT &&
        !gnutls_x509_crt_check_hostname(crt, hostname)) {
        gnutls_x509_crt_deinit(crt);
        error_setg(errp, "Certificate does not match the hostname %s",
                   hostname);
        return false;
    }
    dn = x509_dn(crt);
    gnutls_x509_crt_deinit(crt);
    if (!dn) {
        error_setg(errp, "Cannot get the peer certificate's distinguished "
                   "name");
        return false;
    }
    if (identity) {
        *identity = dn;
    } else {
        free(dn);
    }
    return true;
}

bool tls_creds_check_peer(TlsCreds *c, gnutls_session_t s,
                          const char *hostname, char **identity,
                          Error **errp)
{
    if (identity) {
        *identity = NULL;
    }
    if (c->x509) {
        if (!c->verify_peer) {
            return true;
        }
        return x509_check_peer(c, s, hostname, identity, errp);
    }
    if (c->psk_server) {
        const char *user = gnutls_psk_server_get_username(s);

        if (!user) {
            error_setg(errp, "No PSK username");
            return false;
        }
        if (identity) {
            *identity = xstrdup(user);
        }
    }
    return true;
}
