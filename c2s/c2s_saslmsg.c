/*
 * c2s_saslmsg.c - parsers of SASL client messages (see c2s_saslmsg.h).
 * No state; runs wherever it is called (the c2s loop, the fuzzer).
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "c2s/c2s_saslmsg.h"
#include "common/err.h"
#include "common/mem.h"

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int c2s_saslmsg_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                           size_t *outlen)
{
    *outlen = 0;
    if (len == 1 && in[0] == '=')
        return 0;
    if (len % 4 != 0)
        return ERR_PARSE;
    if (len / 4 * 3 > cap + 2)
        return ERR_LIMIT;
    size_t n = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char ch = (unsigned char)in[i + k];
            if (ch == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0)
                return ERR_PARSE; /* data after padding */
            v[k] = b64_val(ch);
            if (v[k] < 0)
                return ERR_PARSE;
        }
        unsigned triple =
            (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        size_t take = 3 - (size_t)pad;
        /* Canonical encoding only: the bits padding stands for are zero. */
        if ((pad == 1 && (v[2] & 0x3) != 0) || (pad == 2 && (v[1] & 0xf) != 0))
            return ERR_PARSE;
        if (n + take > cap)
            return ERR_LIMIT;
        out[n++] = (unsigned char)(triple >> 16);
        if (take > 1)
            out[n++] = (unsigned char)(triple >> 8);
        if (take > 2)
            out[n++] = (unsigned char)triple;
    }
    *outlen = n;
    return 0;
}

void c2s_saslmsg_b64_encode(const unsigned char *in, size_t len, struct buf *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len == 0) {
        buf_append_byte(out, '=');
        return;
    }
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        buf_append_byte(out, tab[(v >> 18) & 63]);
        buf_append_byte(out, tab[(v >> 12) & 63]);
        buf_append_byte(out, i + 1 < len ? tab[(v >> 6) & 63] : '=');
        buf_append_byte(out, i + 2 < len ? tab[v & 63] : '=');
    }
}

/* A saslname (RFC 5802 §5.1): ',' and '=' only as =2C and =3D; no NUL. */
static char *saslname(const unsigned char *p, size_t len)
{
    char *out = xmalloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\0' || p[i] == ',') {
            free(out);
            return NULL;
        }
        if (p[i] == '=') {
            if (i + 2 < len && p[i + 1] == '2' && p[i + 2] == 'C')
                out[n++] = ',';
            else if (i + 2 < len && p[i + 1] == '3' && p[i + 2] == 'D')
                out[n++] = '=';
            else {
                free(out);
                return NULL;
            }
            i += 2;
            continue;
        }
        out[n++] = (char)p[i];
    }
    out[n] = '\0';
    if (n == 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* The field starting at *pos up to the next ',' (or the end). */
static void field(const unsigned char *msg, size_t len, size_t *pos, size_t *start, size_t *flen)
{
    *start = *pos;
    while (*pos < len && msg[*pos] != ',')
        (*pos)++;
    *flen = *pos - *start;
}

int c2s_saslmsg_scram_first(const unsigned char *msg, size_t len, struct c2s_scram_first *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0 || len > C2S_SASLMSG_MAX)
        return ERR_PARSE;
    size_t pos = 0, st, fl;
    field(msg, len, &pos, &st, &fl);
    if (pos >= len)
        return ERR_PARSE;
    if (fl == 1 && (msg[st] == 'n' || msg[st] == 'y')) {
        out->cbflag = (char)msg[st];
    } else if (fl > 2 && msg[st] == 'p' && msg[st + 1] == '=' && fl - 2 < sizeof(out->cbname)) {
        out->cbflag = 'p';
        for (size_t i = st + 2; i < st + fl; i++) {
            unsigned char ch = msg[i];
            /* cb-name = 1*(ALPHA / DIGIT / "." / "-") */
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'))
                return ERR_PARSE;
        }
        memcpy(out->cbname, msg + st + 2, fl - 2);
    } else {
        return ERR_PARSE;
    }
    pos++;
    field(msg, len, &pos, &st, &fl);
    if (pos >= len)
        return ERR_PARSE;
    if (fl > 0) {
        if (fl < 3 || msg[st] != 'a' || msg[st + 1] != '=')
            return ERR_PARSE;
        out->authzid = saslname(msg + st + 2, fl - 2);
        if (out->authzid == NULL)
            return ERR_PARSE;
    }
    pos++;
    field(msg, len, &pos, &st, &fl);
    /* reserved-mext (m=) is mandatory-to-understand: refuse it. */
    if (fl < 3 || msg[st] != 'n' || msg[st + 1] != '=')
        return ERR_PARSE;
    out->user = saslname(msg + st + 2, fl - 2);
    if (out->user == NULL)
        return ERR_PARSE;
    if (pos >= len)
        return ERR_PARSE; /* the nonce must follow */
    pos++;
    field(msg, len, &pos, &st, &fl);
    if (fl < 3 || msg[st] != 'r' || msg[st + 1] != '=')
        return ERR_PARSE;
    return 0;
}

void c2s_saslmsg_scram_first_free(struct c2s_scram_first *f)
{
    free(f->authzid);
    free(f->user);
    f->authzid = f->user = NULL;
}

int c2s_saslmsg_plain(const unsigned char *msg, size_t len, struct c2s_plain *out)
{
    memset(out, 0, sizeof(*out));
    if (len > C2S_SASLMSG_MAX)
        return ERR_PARSE;
    const unsigned char *z1 = memchr(msg, '\0', len);
    if (z1 == NULL)
        return ERR_PARSE;
    size_t rest = len - (size_t)(z1 + 1 - msg);
    const unsigned char *z2 = memchr(z1 + 1, '\0', rest);
    if (z2 == NULL)
        return ERR_PARSE;
    out->authzid = msg;
    out->authzid_len = (size_t)(z1 - msg);
    out->authcid = z1 + 1;
    out->authcid_len = (size_t)(z2 - (z1 + 1));
    out->passwd = z2 + 1;
    out->passwd_len = len - (size_t)(z2 + 1 - msg);
    if (out->authcid_len == 0 || out->passwd_len == 0 ||
        memchr(out->passwd, '\0', out->passwd_len) != NULL)
        return ERR_PARSE;
    return 0;
}
