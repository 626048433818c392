/*
 * rand.c - CSPRNG helpers over OpenSSL's RAND_bytes (see rand.h).
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/rand.h>

#include "common/rand.h"

void rand_bytes(void *out, size_t n)
{
    while (n > 0) {
        int chunk = n > 0x10000000 ? 0x10000000 : (int)n;
        if (RAND_bytes(out, chunk) != 1) {
            fprintf(stderr, "parley: RAND_bytes failed\n");
            abort();
        }
        out = (unsigned char *)out + chunk;
        n -= (size_t)chunk;
    }
}

uint64_t rand_u64(void)
{
    uint64_t v;
    rand_bytes(&v, sizeof(v));
    return v;
}

uint64_t rand_uniform(uint64_t bound)
{
    /* Rejection sampling: no modulo bias. */
    uint64_t min = -bound % bound;
    for (;;) {
        uint64_t r = rand_u64();
        if (r >= min)
            return r % bound;
    }
}

void rand_id_hex(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[RAND_ID_HEXLEN / 2];
    rand_bytes(raw, sizeof(raw));
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[RAND_ID_HEXLEN] = '\0';
}
