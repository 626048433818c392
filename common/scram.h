/*
 * scram.h - SCRAM key derivation (RFC 5802 for SHA-1, RFC 7677 for SHA-256).
 *
 * What the server stores for a user is, per mechanism, a salt, an iteration
 * count, StoredKey and ServerKey (never the password):
 *
 *   SaltedPassword = PBKDF2-HMAC-H(password, salt, iterations)
 *   ClientKey      = HMAC(SaltedPassword, "Client Key")
 *   StoredKey      = H(ClientKey)
 *   ServerKey      = HMAC(SaltedPassword, "Server Key")
 *
 * parleyctl derives these when it adds a user or changes a password; c2s
 * will verify SCRAM exchanges (and PLAIN, with scram_keys_verify) against
 * them. The password is used as the UTF-8 bytes it is given: SASLprep is
 * not applied yet (a password that differs only in its Unicode
 * normalisation is a different password).
 *
 * Pure computation on the caller's memory; no state. PBKDF2 with 4096
 * iterations costs milliseconds, so a daemon must not call the derivation
 * on its loop thread (c2s will run it in the libuv thread pool).
 * Intermediate secrets are wiped before returning.
 */
#ifndef PARLEY_SCRAM_H
#define PARLEY_SCRAM_H

#include <stddef.h>

enum scram_hash {
    SCRAM_SHA1,   /* SCRAM-SHA-1, RFC 5802 */
    SCRAM_SHA256, /* SCRAM-SHA-256, RFC 7677 */
};

#define SCRAM_HASH_COUNT   2
#define SCRAM_KEY_MAX      32   /* longest digest (SHA-256) */
#define SCRAM_SALT_LEN     16   /* salt length of new keys */
#define SCRAM_SALT_MAX     64   /* longest salt accepted */
#define SCRAM_ITER_DEFAULT 4096 /* RFC 7677 §4: at least 4096 */
#define SCRAM_ITER_MIN     4096
#define SCRAM_ITER_MAX     10000000
/* Longest password accepted, in bytes (a bound on work, not a policy). */
#define SCRAM_PASSWORD_MAX 1024

/* The stored credential of one user for one mechanism. */
struct scram_keys {
    enum scram_hash hash;
    unsigned char salt[SCRAM_SALT_MAX];
    size_t salt_len;
    unsigned iterations;
    unsigned char stored_key[SCRAM_KEY_MAX];
    unsigned char server_key[SCRAM_KEY_MAX];
    size_t key_len; /* scram_hash_len(hash) */
};

/* "SCRAM-SHA-1" / "SCRAM-SHA-256". */
const char *scram_mech_name(enum scram_hash hash);
/* The reverse; 0 or ERR_NOTFOUND. */
int scram_mech_parse(const char *name, enum scram_hash *out);
/* Digest length: 20 or 32. */
size_t scram_hash_len(enum scram_hash hash);

/* H(data) into out (scram_hash_len bytes). */
void scram_h(enum scram_hash hash, const void *data, size_t len, unsigned char *out);
/* HMAC-H(key, data) into out (scram_hash_len bytes). */
void scram_hmac(enum scram_hash hash, const void *key, size_t keylen, const void *data, size_t len,
                unsigned char *out);

/* SaltedPassword into out (scram_hash_len bytes). ERR_INVAL for an empty
 * or too long password, a bad salt length or an iteration count outside
 * SCRAM_ITER_MIN..SCRAM_ITER_MAX. */
int scram_salted_password(enum scram_hash hash, const char *password, size_t pwlen,
                          const unsigned char *salt, size_t salt_len, unsigned iterations,
                          unsigned char *out);

/* Keys for a given salt (test vectors, and re-deriving to verify). */
int scram_keys_derive(enum scram_hash hash, const char *password, size_t pwlen,
                      const unsigned char *salt, size_t salt_len, unsigned iterations,
                      struct scram_keys *out);
/* Keys with a fresh random salt of SCRAM_SALT_LEN bytes. */
int scram_keys_new(enum scram_hash hash, const char *password, size_t pwlen, unsigned iterations,
                   struct scram_keys *out);
/* Does password match keys (PLAIN against stored SCRAM keys)? Compares
 * StoredKey and ServerKey in constant time. 0 or ERR_AUTH (ERR_INVAL for
 * malformed keys or password). */
int scram_keys_verify(const struct scram_keys *keys, const char *password, size_t pwlen);

#endif
