/* test-crypto.c - crypto/: the parsers of keys.psk, secrets (base64,
 * AES-256-CBC) and authz rules, authz-listfile's refresh, and the
 * ObjectSet's ids and users.  Certificates are tested with certtool in
 * tests/integration/test-objects.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "crypto/internal.h"
#include "crypto/tls.h"
#include "cunit-main.h"
#include "util/cleanup.h"
#include "util/util.h"

/* Expect err set with a message starting with prefix. */
static void check_msg(Error *err, const char *prefix)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (strncmp(err->msg, prefix, strlen(prefix)) != 0) {
        fprintf(stderr, "\n got '%s'\nwant '%s...'\n", err->msg, prefix);
    }
    CU_ASSERT_EQUAL(strncmp(err->msg, prefix, strlen(prefix)), 0);
}

/* ---- keys.psk ----------------------------------------------------- */

static void test_psk_good(void)
{
    CLEANUP_ERROR Error *err = NULL;
    const char text[] = "alice:0001ff\r\n\nbob:ABCDEF0123\nalice:ee\ncarol:00";
    PskKeys keys = { 0 };
    const PskKey *k;

    CU_ASSERT_TRUE_FATAL(psk_keys_parse(text, strlen(text), &keys, &err));
    CU_ASSERT_EQUAL(keys.len, 3);
    k = psk_keys_find(&keys, "alice");
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_EQUAL(k->keylen, 3);       /* the first line wins */
    CU_ASSERT_EQUAL(memcmp(k->key, "\x00\x01\xff", 3), 0);
    k = psk_keys_find(&keys, "bob");
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_EQUAL(k->keylen, 5);
    CU_ASSERT_EQUAL(memcmp(k->key, "\xab\xcd\xef\x01\x23", 5), 0);
    k = psk_keys_find(&keys, "carol");     /* no final newline */
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_EQUAL(k->keylen, 1);
    CU_ASSERT_PTR_NULL(psk_keys_find(&keys, "dave"));
    CU_ASSERT_PTR_NULL(psk_keys_find(&keys, "alic"));
    psk_keys_clear(&keys);
}

static void psk_bad(const char *text, size_t len, const char *msg)
{
    CLEANUP_ERROR Error *err = NULL;
    PskKeys keys = { 0 };

    CU_ASSERT_FALSE(psk_keys_parse(text, len, &keys, &err));
    check_msg(err, msg);
    CU_ASSERT_EQUAL(keys.len, 0);
}

static void test_psk_malformed(void)
{
    psk_bad("", 0, "no keys");
    psk_bad("\n\r\n\n", 4, "no keys");
    psk_bad("alice\n", 6, "line 1: no ':' between username and key");
    psk_bad("a:00\nbob 0011\n", 14,
            "line 2: no ':' between username and key");
    psk_bad(":0011\n", 6, "line 1: empty username");
    psk_bad("alice:\n", 7, "line 1: empty key");
    psk_bad("alice:001\n", 10, "line 1: the key has an odd number");
    psk_bad("alice:00zz\n", 11, "line 1: the key is not hexadecimal");
    psk_bad("alice:00 1\n", 11, "line 1: the key is not hexadecimal");
    psk_bad("alice:0011 \n", 12, "line 1: the key has an odd number");
    psk_bad("al\0ce:0011\n", 11, "line 1: a NUL byte");
}

/* ---- secrets ------------------------------------------------------ */

static const uint8_t aes_key[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t aes_iv[16] = "fedcba9876543210";
#define AES_IV_B64 "ZmVkY2JhOTg3NjU0MzIxMA=="

/* Encrypt pt (PKCS#7 padded) as a secret's keyid would have it. */
static size_t aes_encrypt(const char *pt, uint8_t *out)
{
    size_t n = strlen(pt), padded = (n / 16 + 1) * 16;
    gnutls_datum_t k = { .data = (unsigned char *)aes_key, .size = 32 };
    gnutls_datum_t iv = { .data = (unsigned char *)aes_iv, .size = 16 };
    gnutls_cipher_hd_t h;

    memcpy(out, pt, n);
    memset(out + n, (int)(padded - n), padded - n);
    CU_ASSERT_EQUAL_FATAL(gnutls_cipher_init(&h, GNUTLS_CIPHER_AES_256_CBC,
                                             &k, &iv), 0);
    CU_ASSERT_EQUAL(gnutls_cipher_encrypt(h, out, padded), 0);
    gnutls_cipher_deinit(h);
    return padded;
}

static char *b64(const uint8_t *d, size_t n)
{
    gnutls_datum_t in = { .data = (unsigned char *)d, .size = (unsigned)n };
    gnutls_datum_t out = { 0 };
    char *s;

    CU_ASSERT_EQUAL_FATAL(gnutls_base64_encode2(&in, &out), 0);
    s = xstrndup((char *)out.data, out.size);
    gnutls_free(out.data);
    return s;
}

static void secret_ok(const char *in, QCryptoSecretFormat f,
                      const uint8_t *key, size_t keylen, const char *iv,
                      const char *want, size_t wantlen)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE uint8_t *out = NULL;
    size_t outlen = 99;

    CU_ASSERT_TRUE(secret_decode((const uint8_t *)in, strlen(in), f, key,
                                 keylen, iv, &out, &outlen, &err));
    if (err) {
        fprintf(stderr, "\nsecret_decode: %s\n", err->msg);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(outlen, wantlen);
    CU_ASSERT_EQUAL(memcmp(out, want, wantlen), 0);
    CU_ASSERT_EQUAL(out[outlen], 0);
}

static void secret_bad(const uint8_t *in, size_t inlen,
                       QCryptoSecretFormat f, const uint8_t *key,
                       size_t keylen, const char *iv, const char *msg)
{
    CLEANUP_ERROR Error *err = NULL;
    uint8_t *out = NULL;
    size_t outlen;

    CU_ASSERT_FALSE(secret_decode(in, inlen, f, key, keylen, iv, &out,
                                  &outlen, &err));
    CU_ASSERT_PTR_NULL(out);
    check_msg(err, msg);
}

static void test_secret_plain(void)
{
    secret_ok("hello", QCRYPTO_SECRET_FORMAT_RAW, NULL, 0, NULL,
              "hello", 5);
    secret_ok("", QCRYPTO_SECRET_FORMAT_RAW, NULL, 0, NULL, "", 0);
    secret_ok("aGVsbG8=", QCRYPTO_SECRET_FORMAT_BASE64, NULL, 0, NULL,
              "hello", 5);
    secret_ok("AAEC", QCRYPTO_SECRET_FORMAT_BASE64, NULL, 0, NULL,
              "\0\1\2", 3);
    secret_bad((const uint8_t *)"!!!!", 4, QCRYPTO_SECRET_FORMAT_BASE64,
               NULL, 0, NULL, "Invalid base64 in secret");
    secret_bad((const uint8_t *)"aGVsbG8", 7, QCRYPTO_SECRET_FORMAT_BASE64,
               NULL, 0, NULL, "Invalid base64 in secret");
    secret_bad((const uint8_t *)"aG\0sbG8=", 8,
               QCRYPTO_SECRET_FORMAT_BASE64, NULL, 0, NULL,
               "Invalid base64 in secret");
}

static void test_secret_aes(void)
{
    uint8_t ct[64];
    size_t n = aes_encrypt("the password", ct);
    CLEANUP_FREE char *ct64 = b64(ct, n);
    uint8_t wrong_key[32];
    uint8_t raw[64];
    size_t n16 = aes_encrypt("0123456789abcdef", raw);  /* a full pad */

    CU_ASSERT_EQUAL(n, 16);
    secret_ok(ct64, QCRYPTO_SECRET_FORMAT_BASE64, aes_key, 32, AES_IV_B64,
              "the password", 12);
    CU_ASSERT_EQUAL(n16, 32);
    {
        CLEANUP_FREE char *raw64 = b64(raw, n16);

        secret_ok(raw64, QCRYPTO_SECRET_FORMAT_BASE64, aes_key, 32,
                  AES_IV_B64, "0123456789abcdef", 16);
    }
    /* format=raw: the ciphertext bytes themselves */
    {
        CLEANUP_ERROR Error *err = NULL;
        CLEANUP_FREE uint8_t *out = NULL;
        size_t outlen;

        CU_ASSERT_TRUE(secret_decode(ct, n, QCRYPTO_SECRET_FORMAT_RAW,
                                     aes_key, 32, AES_IV_B64, &out, &outlen,
                                     &err));
        CU_ASSERT_EQUAL(outlen, 12);
    }
    secret_bad((const uint8_t *)ct64, strlen(ct64),
               QCRYPTO_SECRET_FORMAT_BASE64, aes_key, 16, AES_IV_B64,
               "Key should be 32 bytes in length not 16");
    secret_bad((const uint8_t *)ct64, strlen(ct64),
               QCRYPTO_SECRET_FORMAT_BASE64, aes_key, 32, NULL,
               "IV is required to decrypt secret");
    secret_bad((const uint8_t *)ct64, strlen(ct64),
               QCRYPTO_SECRET_FORMAT_BASE64, aes_key, 32, "AAEC",
               "IV should be 16 bytes in length not 3");
    secret_bad((const uint8_t *)ct64, strlen(ct64),
               QCRYPTO_SECRET_FORMAT_BASE64, aes_key, 32, "@@@@",
               "Invalid base64 in 'iv'");
    secret_bad(ct, 15, QCRYPTO_SECRET_FORMAT_RAW, aes_key, 32, AES_IV_B64,
               "Encrypted secret length 15 is not a multiple of 16");
    secret_bad(ct, 0, QCRYPTO_SECRET_FORMAT_RAW, aes_key, 32, AES_IV_B64,
               "Encrypted secret length 0");
    /* The wrong key: the padding is garbage (deterministic here). */
    memcpy(wrong_key, aes_key, 32);
    wrong_key[0] ^= 1;
    secret_bad(ct, n, QCRYPTO_SECRET_FORMAT_RAW, wrong_key, 32, AES_IV_B64,
               "Incorrect");
}

/* ---- authz rules ---------------------------------------------------- */

static AuthzRules rules_from_json(const char *json)
{
    CLEANUP_JSON json_object *obj = json_tokener_parse(json);
    CLEANUP_ERROR Error *err = NULL;
    AuthZListProperties *props = NULL;
    AuthzRules r = { 0 };

    CU_ASSERT_PTR_NOT_NULL_FATAL(obj);
    CU_ASSERT_TRUE_FATAL(qapi_parse_AuthZListProperties(obj, NULL, 0,
                                                        &props, &err));
    authz_rules_from_props(props, &r);
    qapi_free_AuthZListProperties(props);
    return r;
}

static void test_authz_rules(void)
{
    AuthzRules r = rules_from_json(
        "{\"policy\": \"deny\", \"rules\": ["
        " {\"match\": \"CN=bad,O=Example\", \"policy\": \"deny\"},"
        " {\"match\": \"CN=*,O=Example\", \"policy\": \"allow\","
        "  \"format\": \"glob\"},"
        " {\"match\": \"fred\", \"policy\": \"allow\", \"format\": \"exact\"},"
        " {\"match\": \"user[0-9]\", \"policy\": \"allow\","
        "  \"format\": \"glob\"}]}");

    CU_ASSERT_FALSE(r.allow);
    CU_ASSERT_EQUAL(r.rules.len, 4);
    CU_ASSERT_FALSE(authz_rules_check(&r, "CN=bad,O=Example"));  /* first */
    CU_ASSERT_TRUE(authz_rules_check(&r, "CN=good,O=Example"));
    CU_ASSERT_TRUE(authz_rules_check(&r, "CN=,O=Example"));
    CU_ASSERT_FALSE(authz_rules_check(&r, "CN=good,O=Other"));
    CU_ASSERT_FALSE(authz_rules_check(&r, "CN=good,O=Example,C=GB"));
    CU_ASSERT_TRUE(authz_rules_check(&r, "fred"));
    CU_ASSERT_FALSE(authz_rules_check(&r, "fre*"));     /* exact is exact */
    CU_ASSERT_FALSE(authz_rules_check(&r, "Fred"));
    CU_ASSERT_TRUE(authz_rules_check(&r, "user7"));
    CU_ASSERT_FALSE(authz_rules_check(&r, "user77"));
    CU_ASSERT_FALSE(authz_rules_check(&r, ""));
    authz_rules_clear(&r);

    r = rules_from_json("{\"policy\": \"allow\"}");
    CU_ASSERT_TRUE(r.allow);
    CU_ASSERT_TRUE(authz_rules_check(&r, "anyone"));
    authz_rules_clear(&r);
    r = rules_from_json("{}");           /* QEMU's default: deny */
    CU_ASSERT_FALSE(authz_rules_check(&r, "anyone"));
    authz_rules_clear(&r);
}

static char *write_tmp(const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", unit_tmpdir(), name);
    char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    CU_ASSERT_EQUAL(fclose(f), 0);
    /* Replace, as editors do: a new inode every time. */
    CU_ASSERT_EQUAL(rename(tmp, path), 0);
    free(tmp);
    return path;
}

static void listfile_bad(const char *text, const char *msg)
{
    CLEANUP_FREE char *path = write_tmp("bad.json", text);
    CLEANUP_ERROR Error *err = NULL;
    AuthzRules r = { 0 };

    CU_ASSERT_FALSE(authz_rules_load_file(path, &r, &err));
    check_msg(err, msg);
    CU_ASSERT_EQUAL(r.rules.len, 0);
}

static void test_authz_listfile_parse(void)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE char *path = write_tmp(
        "ok.json", "{\"policy\": \"allow\", \"rules\": "
                   "[{\"match\": \"eve\", \"policy\": \"deny\"}]}\n");
    AuthzRules r = { 0 };
    char *missing = xasprintf("%s/missing.json", unit_tmpdir());

    CU_ASSERT_TRUE_FATAL(authz_rules_load_file(path, &r, &err));
    CU_ASSERT_FALSE(authz_rules_check(&r, "eve"));
    CU_ASSERT_TRUE(authz_rules_check(&r, "bob"));
    authz_rules_clear(&r);

    CU_ASSERT_FALSE(authz_rules_load_file(missing, &r, &err));
    check_msg(err, "Unable to read '");
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "No such file"));
    free(missing);

    listfile_bad("", "Unable to parse '");
    listfile_bad("{\"policy\": ", "Unable to parse '");
    listfile_bad("[1, 2]", "Unable to parse '");
    listfile_bad("{} {}", "Unable to parse '");
    listfile_bad("{\"policy\": \"maybe\"}", "In '");
    listfile_bad("{\"rules\": {}}", "In '");
    listfile_bad("{\"rules\": [{\"match\": \"x\"}]}", "In '");
    listfile_bad("{\"rules\": [{\"match\": \"x\", \"policy\": \"allow\","
                 " \"format\": \"regex\"}]}", "In '");
    listfile_bad("{\"policy\": \"allow\", \"extra\": 1}", "In '");
}

/* ---- objects ------------------------------------------------------ */

static bool add_json(ObjectSet *set, const char *json, Error **errp)
{
    CLEANUP_JSON json_object *obj = json_tokener_parse(json);
    ObjectOptions *opts = NULL;
    bool ok;

    CU_ASSERT_PTR_NOT_NULL_FATAL(obj);
    if (!qapi_parse_ObjectOptions(obj, NULL, 0, &opts, errp)) {
        return false;
    }
    ok = object_add(set, opts, errp);
    qapi_free_ObjectOptions(opts);
    return ok;
}

static void test_authz_listfile_refresh(void)
{
    ObjectSet *set = object_set_new();
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE char *path = write_tmp(
        "live.json", "{\"rules\": [{\"match\": \"alice\", "
                     "\"policy\": \"allow\"}]}");
    CLEANUP_FREE char *json = xasprintf(
        "{\"qom-type\": \"authz-listfile\", \"id\": \"az\", "
        "\"filename\": \"%s\"}", path);
    CLEANUP_FREE char *json_norefresh = xasprintf(
        "{\"qom-type\": \"authz-listfile\", \"id\": \"az2\", "
        "\"filename\": \"%s\", \"refresh\": false}", path);
    Authz *a, *a2;

    CU_ASSERT_TRUE_FATAL(add_json(set, json, &err));
    CU_ASSERT_TRUE_FATAL(add_json(set, json_norefresh, &err));
    a = object_get_authz(set, "az", &err);
    a2 = object_get_authz(set, "az2", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a2);
    CU_ASSERT_TRUE(authz_is_allowed(a, "alice"));
    CU_ASSERT_FALSE(authz_is_allowed(a, "bob"));
    CU_ASSERT_FALSE(authz_is_allowed(a, NULL));

    free(write_tmp("live.json", "{\"rules\": [{\"match\": \"bob\", "
                                "\"policy\": \"allow\"}]}"));
    CU_ASSERT_FALSE(authz_is_allowed(a, "alice"));
    CU_ASSERT_TRUE(authz_is_allowed(a, "bob"));
    CU_ASSERT_TRUE(authz_is_allowed(a2, "alice"));   /* refresh=off */
    CU_ASSERT_FALSE(authz_is_allowed(a2, "bob"));

    /* Broken: the last good rules stay. */
    free(write_tmp("live.json", "{\"rules\": [{\"match\": "));
    CU_ASSERT_TRUE(authz_is_allowed(a, "bob"));
    CU_ASSERT_FALSE(authz_is_allowed(a, "alice"));
    /* Gone: likewise. */
    CU_ASSERT_EQUAL(unlink(path), 0);
    CU_ASSERT_TRUE(authz_is_allowed(a, "bob"));
    /* Back, fixed. */
    free(write_tmp("live.json", "{\"policy\": \"allow\"}"));
    CU_ASSERT_TRUE(authz_is_allowed(a, "alice"));
    CU_ASSERT_TRUE(authz_is_allowed(a, "carol"));
    object_set_free(set);
}

/* A relative filename names the file in the directory of object-add,
 * even after the daemon changed directory (--daemonize goes to /). */
static void test_authz_listfile_relative(void)
{
    ObjectSet *set = object_set_new();
    CLEANUP_ERROR Error *err = NULL;
    char old[4096];
    Authz *a;

    free(write_tmp("rel.json", "{\"rules\": [{\"match\": \"alice\", "
                               "\"policy\": \"allow\"}]}"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(getcwd(old, sizeof(old)));
    CU_ASSERT_EQUAL_FATAL(chdir(unit_tmpdir()), 0);
    CU_ASSERT_TRUE(add_json(set, "{\"qom-type\": \"authz-listfile\", "
                            "\"id\": \"az\", \"filename\": \"rel.json\"}",
                            &err));
    CU_ASSERT_EQUAL_FATAL(chdir("/"), 0);
    a = object_get_authz(set, "az", &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_TRUE(authz_is_allowed(a, "alice"));
    free(write_tmp("rel.json", "{\"rules\": [{\"match\": \"bob\", "
                               "\"policy\": \"allow\"}]}"));
    CU_ASSERT_TRUE(authz_is_allowed(a, "bob"));
    CU_ASSERT_FALSE(authz_is_allowed(a, "alice"));
    CU_ASSERT_EQUAL(chdir(old), 0);
    object_set_free(set);
}

static void test_objects_ids_and_users(void)
{
    ObjectSet *set = object_set_new();
    CLEANUP_ERROR Error *err = NULL;
    const uint8_t *data;
    size_t len;

    CU_ASSERT_TRUE_FATAL(add_json(set, "{\"qom-type\": \"secret\", "
                                  "\"id\": \"s0\", \"data\": \"pw\"}", &err));
    CU_ASSERT_FALSE(add_json(set, "{\"qom-type\": \"authz-simple\", "
                             "\"id\": \"s0\", \"identity\": \"x\"}", &err));
    check_msg(err, "attempt to add duplicate property 's0' to object "
                   "(type 'container')");
    error_free(err);
    err = NULL;
    CU_ASSERT_FALSE(add_json(set, "{\"qom-type\": \"authz-simple\", "
                             "\"id\": \"0bad\", \"identity\": \"x\"}", &err));
    check_msg(err, "Parameter 'id' expects an identifier");
    error_free(err);
    err = NULL;
    CU_ASSERT_FALSE(add_json(set, "{\"qom-type\": \"secret\", "
                             "\"id\": \"s1\"}", &err));
    check_msg(err, "Either 'data' or 'file' must be provided");
    error_free(err);
    err = NULL;
    CU_ASSERT_FALSE(add_json(set, "{\"qom-type\": \"secret\", "
                             "\"id\": \"s1\", \"data\": \"x\", "
                             "\"file\": \"/dev/null\"}", &err));
    check_msg(err, "'data' and 'file' are mutually exclusive");
    error_free(err);
    err = NULL;
    CU_ASSERT_TRUE_FATAL(add_json(set, "{\"qom-type\": \"authz-simple\", "
                                  "\"id\": \"a0\", \"identity\": \"CN=x\"}",
                                  &err));

    /* Lookups by kind, in QEMU's words. */
    CU_ASSERT_PTR_NULL(object_get_tls_creds(set, "nope",
                                            TLS_ENDPOINT_SERVER, &err));
    check_msg(err, "No TLS credentials with id 'nope'");
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(object_get_tls_creds(set, "s0", TLS_ENDPOINT_SERVER,
                                            &err));
    check_msg(err, "Object with id 's0' is not TLS credentials");
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(object_get_authz(set, "s0", &err));
    check_msg(err, "Object 's0' is not a QAuthZ subclass");
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(object_get_authz(set, "nope", &err));
    check_msg(err, "Cannot find QAuthZ object ID nope");
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(object_get_secret(set, "a0", NULL, &err));
    check_msg(err, "Object 'a0' is not a secret");
    error_free(err);
    err = NULL;
    data = object_get_secret(set, "s0", &len, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    CU_ASSERT_EQUAL(len, 2);
    CU_ASSERT_STRING_EQUAL((const char *)data, "pw");

    /* Users pin an object. */
    CU_ASSERT_TRUE(object_add_user(set, "a0", "nbd-server", &err));
    CU_ASSERT_FALSE(object_add_user(set, "a0", "nbd-server", &err));
    check_msg(err, "object 'a0' is already used by nbd-server");
    error_free(err);
    err = NULL;
    CU_ASSERT_FALSE(object_add_user(set, "zz", "nbd-server", &err));
    check_msg(err, "object 'zz' not found");
    error_free(err);
    err = NULL;
    CU_ASSERT_FALSE(object_del(set, "a0", &err));
    check_msg(err, "object 'a0' is in use, can not be deleted");
    error_free(err);
    err = NULL;
    object_remove_user(set, "a0", "someone-else");   /* no-op */
    object_remove_user(set, "a0", "nbd-server");
    CU_ASSERT_TRUE(object_del(set, "a0", &err));
    CU_ASSERT_FALSE(object_del(set, "a0", &err));
    check_msg(err, "object 'a0' not found");
    error_free(err);
    err = NULL;
    /* The id is free again. */
    CU_ASSERT_TRUE(add_json(set, "{\"qom-type\": \"authz-simple\", "
                            "\"id\": \"a0\", \"identity\": \"CN=y\"}", &err));
    {
        ObjectInfoList *l = object_set_list(set);

        CU_ASSERT_EQUAL_FATAL(l->n, 2);
        CU_ASSERT_STRING_EQUAL(l->v[0]->id, "s0");
        CU_ASSERT_EQUAL(l->v[0]->qom_type, OBJECT_TYPE_SECRET);
        CU_ASSERT_STRING_EQUAL(l->v[1]->id, "a0");
        qapi_free_ObjectInfoList(l);
    }
    /* Freed with a user still registered (shutdown). */
    CU_ASSERT_TRUE(object_add_user(set, "a0", "nbd-server", &err));
    object_set_free(set);
}

static void test_objects_secret_keyid(void)
{
    ObjectSet *set = object_set_new();
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE char *key64 = b64(aes_key, 32);
    uint8_t ct[64];
    size_t n = aes_encrypt("s3cret", ct);
    CLEANUP_FREE char *ct64 = b64(ct, n);
    CLEANUP_FREE char *kjson = xasprintf(
        "{\"qom-type\": \"secret\", \"id\": \"master\", \"data\": \"%s\", "
        "\"format\": \"base64\"}", key64);
    CLEANUP_FREE char *sjson = xasprintf(
        "{\"qom-type\": \"secret\", \"id\": \"pw\", \"data\": \"%s\", "
        "\"format\": \"base64\", \"keyid\": \"master\", \"iv\": \"%s\"}",
        ct64, AES_IV_B64);
    CLEANUP_FREE char *nokey = xasprintf(
        "{\"qom-type\": \"secret\", \"id\": \"pw2\", \"data\": \"%s\", "
        "\"format\": \"base64\", \"keyid\": \"nope\", \"iv\": \"%s\"}",
        ct64, AES_IV_B64);
    const uint8_t *data;
    size_t len;

    CU_ASSERT_TRUE_FATAL(add_json(set, kjson, &err));
    CU_ASSERT_TRUE_FATAL(add_json(set, sjson, &err));
    data = object_get_secret(set, "pw", &len, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    CU_ASSERT_EQUAL(len, 6);
    CU_ASSERT_EQUAL(memcmp(data, "s3cret", 6), 0);
    CU_ASSERT_FALSE(add_json(set, nokey, &err));
    check_msg(err, "No secret with id 'nope'");
    CU_ASSERT_PTR_NULL(object_find(set, "pw2"));
    object_set_free(set);
}

static CU_TestInfo crypto_tests[] = {
    { "psk_good", test_psk_good },
    { "psk_malformed", test_psk_malformed },
    { "secret_plain", test_secret_plain },
    { "secret_aes", test_secret_aes },
    { "authz_rules", test_authz_rules },
    { "authz_listfile_parse", test_authz_listfile_parse },
    { "authz_listfile_refresh", test_authz_listfile_refresh },
    { "authz_listfile_relative", test_authz_listfile_relative },
    { "objects_ids_and_users", test_objects_ids_and_users },
    { "objects_secret_keyid", test_objects_secret_keyid },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "crypto", .pTests = crypto_tests },
    CU_SUITE_INFO_NULL,
};
