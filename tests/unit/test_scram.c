/*
 * test_scram.c - SCRAM key derivation against the RFC 5802 (SHA-1) and
 * RFC 7677 (SHA-256) example exchanges: from the password, salt and
 * iteration count of each example, the derived keys must reproduce the
 * client proof and server signature printed in the RFC.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/err.h"
#include "common/scram.h"

/* Base64 into out; the decoded length. */
static size_t b64(const char *in, unsigned char *out)
{
    size_t len = strlen(in);
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    assert_true(n >= 0);
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    while (len > 0 && in[len - 1] == '=') {
        len--;
        n--;
    }
    return (size_t)n;
}

struct vector {
    enum scram_hash hash;
    const char *salt_b64;
    const char *client_first_bare;
    const char *server_first;
    const char *client_final_no_proof;
    const char *proof_b64;
    const char *server_sig_b64;
};

static const struct vector rfc5802 = {
    SCRAM_SHA1,
    "QSXCR+Q6sek8bf92",
    "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
    "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

static const struct vector rfc7677 = {
    SCRAM_SHA256,
    "W22ZaJ0SNY7soEsUEjb6gQ==",
    "n=user,r=rOprNGfwEbeRWgbNEkqO",
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

static void check_vector(const struct vector *v)
{
    unsigned char salt[64], want_proof[64], want_sig[64];
    size_t salt_len = b64(v->salt_b64, salt);
    size_t n = scram_hash_len(v->hash);
    assert_int_equal(b64(v->proof_b64, want_proof), n);
    assert_int_equal(b64(v->server_sig_b64, want_sig), n);

    struct scram_keys k;
    assert_int_equal(scram_keys_derive(v->hash, "pencil", 6, salt, salt_len, 4096, &k), 0);
    assert_int_equal(k.key_len, n);
    assert_int_equal(k.iterations, 4096);
    assert_memory_equal(k.salt, salt, salt_len);

    char auth[512];
    int alen = snprintf(auth, sizeof(auth), "%s,%s,%s", v->client_first_bare, v->server_first,
                        v->client_final_no_proof);
    assert_true(alen > 0 && (size_t)alen < sizeof(auth));

    /* The client's side, to get ClientKey: from SaltedPassword. */
    unsigned char salted[SCRAM_KEY_MAX], client_key[SCRAM_KEY_MAX], stored[SCRAM_KEY_MAX];
    unsigned char client_sig[SCRAM_KEY_MAX], proof[SCRAM_KEY_MAX], server_sig[SCRAM_KEY_MAX];
    assert_int_equal(scram_salted_password(v->hash, "pencil", 6, salt, salt_len, 4096, salted), 0);
    scram_hmac(v->hash, salted, n, "Client Key", 10, client_key);
    scram_h(v->hash, client_key, n, stored);
    assert_memory_equal(stored, k.stored_key, n);

    scram_hmac(v->hash, k.stored_key, n, auth, (size_t)alen, client_sig);
    for (size_t i = 0; i < n; i++)
        proof[i] = client_key[i] ^ client_sig[i];
    assert_memory_equal(proof, want_proof, n);

    /* The server's side needs only the stored keys. */
    scram_hmac(v->hash, k.server_key, n, auth, (size_t)alen, server_sig);
    assert_memory_equal(server_sig, want_sig, n);

    /* And the server recovers ClientKey from the proof, whose hash is StoredKey. */
    unsigned char recovered[SCRAM_KEY_MAX], check[SCRAM_KEY_MAX];
    for (size_t i = 0; i < n; i++)
        recovered[i] = want_proof[i] ^ client_sig[i];
    scram_h(v->hash, recovered, n, check);
    assert_memory_equal(check, k.stored_key, n);
}

static void test_rfc5802_sha1(void **state)
{
    check_vector(&rfc5802);
}

static void test_rfc7677_sha256(void **state)
{
    check_vector(&rfc7677);
}

static void test_new_and_verify(void **state)
{
    for (int h = 0; h < SCRAM_HASH_COUNT; h++) {
        struct scram_keys a, b;
        assert_int_equal(scram_keys_new((enum scram_hash)h, "secret", 6, 4096, &a), 0);
        assert_int_equal(scram_keys_new((enum scram_hash)h, "secret", 6, 4096, &b), 0);
        assert_int_equal(a.salt_len, SCRAM_SALT_LEN);
        /* Fresh salts: same password, different keys. */
        assert_memory_not_equal(a.salt, b.salt, SCRAM_SALT_LEN);
        assert_memory_not_equal(a.stored_key, b.stored_key, a.key_len);
        assert_int_equal(scram_keys_verify(&a, "secret", 6), 0);
        assert_int_equal(scram_keys_verify(&b, "secret", 6), 0);
        assert_int_equal(scram_keys_verify(&a, "Secret", 6), ERR_AUTH);
        assert_int_equal(scram_keys_verify(&a, "secret!", 7), ERR_AUTH);
        /* Non-ASCII passwords are their UTF-8 bytes. */
        assert_int_equal(scram_keys_new((enum scram_hash)h, "p\xc3\xa4ss", 5, 5000, &a), 0);
        assert_int_equal(a.iterations, 5000);
        assert_int_equal(scram_keys_verify(&a, "p\xc3\xa4ss", 5), 0);
        assert_int_equal(scram_keys_verify(&a, "pass", 4), ERR_AUTH);
    }
}

static void test_bad_input(void **state)
{
    struct scram_keys k;
    unsigned char salt[SCRAM_SALT_MAX + 1] = {0};
    assert_int_equal(scram_keys_new(SCRAM_SHA256, "", 0, 4096, &k), ERR_INVAL);
    assert_int_equal(scram_keys_new(SCRAM_SHA256, "x", 1, SCRAM_ITER_MIN - 1, &k), ERR_INVAL);
    assert_int_equal(scram_keys_new(SCRAM_SHA256, "x", 1, SCRAM_ITER_MAX + 1, &k), ERR_INVAL);
    assert_int_equal(scram_keys_new(SCRAM_SHA256, "x", SCRAM_PASSWORD_MAX + 1, 4096, &k),
                     ERR_INVAL);
    assert_int_equal(scram_keys_derive(SCRAM_SHA1, "x", 1, salt, 0, 4096, &k), ERR_INVAL);
    assert_int_equal(scram_keys_derive(SCRAM_SHA1, "x", 1, salt, sizeof(salt), 4096, &k),
                     ERR_INVAL);
    assert_int_equal(scram_keys_new(SCRAM_SHA1, "x", 1, 4096, &k), 0);
    k.key_len = 32; /* inconsistent with SHA-1 */
    assert_int_equal(scram_keys_verify(&k, "x", 1), ERR_INVAL);
}

static void test_names(void **state)
{
    enum scram_hash h;
    assert_string_equal(scram_mech_name(SCRAM_SHA1), "SCRAM-SHA-1");
    assert_string_equal(scram_mech_name(SCRAM_SHA256), "SCRAM-SHA-256");
    assert_int_equal(scram_mech_parse("SCRAM-SHA-256", &h), 0);
    assert_int_equal(h, SCRAM_SHA256);
    assert_int_equal(scram_mech_parse("SCRAM-SHA-1", &h), 0);
    assert_int_equal(h, SCRAM_SHA1);
    assert_int_equal(scram_mech_parse("SCRAM-SHA-1-PLUS", &h), ERR_NOTFOUND);
    assert_int_equal(scram_hash_len(SCRAM_SHA1), 20);
    assert_int_equal(scram_hash_len(SCRAM_SHA256), 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc5802_sha1),   cmocka_unit_test(test_rfc7677_sha256),
        cmocka_unit_test(test_new_and_verify), cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
