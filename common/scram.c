/*
 * scram.c - SCRAM key derivation over OpenSSL (see scram.h).
 */
#include "autoconfig.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/err.h"
#include "common/mem.h"
#include "common/rand.h"
#include "common/scram.h"

static const EVP_MD *scram_md(enum scram_hash hash)
{
    return hash == SCRAM_SHA1 ? EVP_sha1() : EVP_sha256();
}

const char *scram_mech_name(enum scram_hash hash)
{
    return hash == SCRAM_SHA1 ? "SCRAM-SHA-1" : "SCRAM-SHA-256";
}

int scram_mech_parse(const char *name, enum scram_hash *out)
{
    if (strcmp(name, "SCRAM-SHA-1") == 0)
        *out = SCRAM_SHA1;
    else if (strcmp(name, "SCRAM-SHA-256") == 0)
        *out = SCRAM_SHA256;
    else
        return ERR_NOTFOUND;
    return 0;
}

size_t scram_hash_len(enum scram_hash hash)
{
    return hash == SCRAM_SHA1 ? 20 : 32;
}

void scram_h(enum scram_hash hash, const void *data, size_t len, unsigned char *out)
{
    unsigned int n = 0;
    /* Digests of memory cannot fail short of an OpenSSL bug: abort then. */
    if (EVP_Digest(data, len, out, &n, scram_md(hash), NULL) != 1)
        abort();
}

void scram_hmac(enum scram_hash hash, const void *key, size_t keylen, const void *data, size_t len,
                unsigned char *out)
{
    unsigned int n = 0;
    if (HMAC(scram_md(hash), key, (int)keylen, data, len, out, &n) == NULL)
        abort();
}

int scram_salted_password(enum scram_hash hash, const char *password, size_t pwlen,
                          const unsigned char *salt, size_t salt_len, unsigned iterations,
                          unsigned char *out)
{
    if (password == NULL || pwlen == 0 || pwlen > SCRAM_PASSWORD_MAX || salt == NULL ||
        salt_len == 0 || salt_len > SCRAM_SALT_MAX || iterations < SCRAM_ITER_MIN ||
        iterations > SCRAM_ITER_MAX)
        return ERR_INVAL;
    if (PKCS5_PBKDF2_HMAC(password, (int)pwlen, salt, (int)salt_len, (int)iterations,
                          scram_md(hash), (int)scram_hash_len(hash), out) != 1)
        abort();
    return 0;
}

int scram_keys_derive(enum scram_hash hash, const char *password, size_t pwlen,
                      const unsigned char *salt, size_t salt_len, unsigned iterations,
                      struct scram_keys *out)
{
    unsigned char salted[SCRAM_KEY_MAX], client_key[SCRAM_KEY_MAX];
    size_t n = scram_hash_len(hash);
    int rc = scram_salted_password(hash, password, pwlen, salt, salt_len, iterations, salted);
    if (rc < 0)
        return rc;
    memset(out, 0, sizeof(*out));
    out->hash = hash;
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    out->iterations = iterations;
    out->key_len = n;
    scram_hmac(hash, salted, n, "Client Key", 10, client_key);
    scram_h(hash, client_key, n, out->stored_key);
    scram_hmac(hash, salted, n, "Server Key", 10, out->server_key);
    mem_wipe(salted, sizeof(salted));
    mem_wipe(client_key, sizeof(client_key));
    return 0;
}

int scram_keys_new(enum scram_hash hash, const char *password, size_t pwlen, unsigned iterations,
                   struct scram_keys *out)
{
    unsigned char salt[SCRAM_SALT_LEN];
    rand_bytes(salt, sizeof(salt));
    return scram_keys_derive(hash, password, pwlen, salt, sizeof(salt), iterations, out);
}

int scram_keys_verify(const struct scram_keys *keys, const char *password, size_t pwlen)
{
    struct scram_keys again;
    if (keys->key_len != scram_hash_len(keys->hash))
        return ERR_INVAL;
    int rc = scram_keys_derive(keys->hash, password, pwlen, keys->salt, keys->salt_len,
                               keys->iterations, &again);
    if (rc < 0)
        return rc;
    int differ = CRYPTO_memcmp(again.stored_key, keys->stored_key, keys->key_len) |
                 CRYPTO_memcmp(again.server_key, keys->server_key, keys->key_len);
    mem_wipe(&again, sizeof(again));
    return differ ? ERR_AUTH : 0;
}
