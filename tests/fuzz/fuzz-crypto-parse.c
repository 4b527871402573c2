/* fuzz-crypto-parse.c - libFuzzer target for the parsers of crypto/
 * that read files a user hands to object-add: keys.psk, secrets (base64,
 * and AES-256-CBC ciphertext with its padding), and authz-list rules
 * (an authz-listfile's JSON) checked against an identity.
 *
 * The first byte picks the parser; the rest is its input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/internal.h"

static const uint8_t key[32] = "0123456789abcdef0123456789abcdef";

static void fuzz_rules(const char *text, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *obj = json_tokener_parse_ex(tok, text, (int)len);
    AuthZListProperties *props = NULL;
    Error *err = NULL;

    json_tokener_free(tok);
    if (obj && json_object_is_type(obj, json_type_object) &&
        qapi_parse_AuthZListProperties(obj, NULL, 0, &props, &err)) {
        AuthzRules r = { 0 };

        authz_rules_from_props(props, &r);
        (void)authz_rules_check(&r, "O=Example,CN=client1");
        (void)authz_rules_check(&r, text);
        authz_rules_clear(&r);
        qapi_free_AuthZListProperties(props);
    }
    error_free(err);
    json_object_put(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;
    uint8_t *out = NULL;
    size_t outlen;
    Error *err = NULL;
    PskKeys keys = { 0 };

    if (size < 1) {
        return 0;
    }
    text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    switch (data[0] % 4) {
    case 0:
        if (psk_keys_parse(text, size - 1, &keys, &err)) {
            (void)psk_keys_find(&keys, "qemu");
            psk_keys_clear(&keys);
        }
        break;
    case 1:
        (void)secret_decode((const uint8_t *)text, size - 1,
                            QCRYPTO_SECRET_FORMAT_BASE64, NULL, 0, NULL,
                            &out, &outlen, &err);
        break;
    case 2:
        (void)secret_decode((const uint8_t *)text, size - 1,
                            QCRYPTO_SECRET_FORMAT_RAW, key, sizeof(key),
                            "MDEyMzQ1Njc4OWFiY2RlZg==", &out, &outlen, &err);
        break;
    default:
        fuzz_rules(text, size - 1);
        break;
    }
    free(out);
    error_free(err);
    free(text);
    return 0;
}
