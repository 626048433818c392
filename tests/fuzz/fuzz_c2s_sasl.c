/*
 * fuzz_c2s_sasl.c - libFuzzer target for c2s's parsers of SASL client
 * messages (c2s/c2s_saslmsg.c): base64, SCRAM client-first, PLAIN. The
 * first byte picks the parser; the rest is the input.
 */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "c2s/c2s_saslmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const unsigned char *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: {
        unsigned char out[C2S_SASLMSG_MAX];
        size_t len = 0;
        if (c2s_saslmsg_b64_decode((const char *)p, n, out, sizeof(out), &len) == 0 && n > 0) {
            /* Decoding then encoding gives the input back (canonical);
             * "" and "=" both mean the empty message. */
            struct buf b = BUF_INIT;
            c2s_saslmsg_b64_encode(out, len, &b);
            if (b.len != n || memcmp(b.data, p, n) != 0)
                abort();
            buf_free(&b);
        }
        break;
    }
    case 1: {
        struct c2s_scram_first f;
        c2s_saslmsg_scram_first(p, n, &f);
        c2s_saslmsg_scram_first_free(&f);
        break;
    }
    default: {
        struct c2s_plain pl;
        if (c2s_saslmsg_plain(p, n, &pl) == 0 &&
            pl.authzid_len + pl.authcid_len + pl.passwd_len + 2 != n)
            abort();
        break;
    }
    }
    return 0;
}
