/*
 * rand.h - cryptographically secure random bytes and identifiers.
 *
 * Everything an attacker must not guess (stream ids, session ids, dialback
 * secrets, hash table keys) comes from here, i.e. from OpenSSL's CSPRNG.
 * A CSPRNG failure is fatal: there is no safe fallback.
 */
#ifndef PARLEY_RAND_H
#define PARLEY_RAND_H

#include <stddef.h>
#include <stdint.h>

/* 128 random bits as 32 lowercase hex digits plus NUL. */
#define RAND_ID_HEXLEN 32

void rand_bytes(void *out, size_t n);
uint64_t rand_u64(void);
/* Uniform in [0, bound); bound > 0. */
uint64_t rand_uniform(uint64_t bound);
/* out must hold RAND_ID_HEXLEN + 1 bytes. */
void rand_id_hex(char *out);

#endif
