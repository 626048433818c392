/*
 * c2s_ipkey.c - keys for per-address accounting (see c2s_ipkey.h). Pure;
 * called on the c2s loop.
 */
#include "autoconfig.h"

#include <string.h>

#include "c2s/c2s_ipkey.h"

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

size_t c2s_ipkey_make(const unsigned char *addr, size_t len, unsigned prefix,
                      unsigned char out[C2S_IPKEY_MAX])
{
    if (len == 4 || (len == 16 && memcmp(addr, v4mapped, sizeof(v4mapped)) == 0)) {
        memcpy(out, addr + len - 4, 4);
        return 4;
    }
    if (len != 16)
        return 0;
    if (prefix > 128)
        prefix = 128;
    memset(out, 0, 16);
    memcpy(out, addr, prefix / 8);
    if (prefix % 8 != 0)
        out[prefix / 8] = (unsigned char)(addr[prefix / 8] & (0xff00 >> (prefix % 8)));
    return 16;
}
