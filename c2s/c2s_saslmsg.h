/*
 * c2s_saslmsg.h - parsers of what a client sends in SASL elements: strict
 * base64 (RFC 4648 §4, as RFC 6120 §6.4.2 asks), the SCRAM client-first
 * message's GS2 header and username (RFC 5802 §7), and the PLAIN message
 * (RFC 4616). Pure functions on the caller's memory (fuzzed by
 * tests/fuzz/fuzz_c2s_sasl.c); every limit is checked before copying.
 */
#ifndef PARLEY_C2S_SASLMSG_H
#define PARLEY_C2S_SASLMSG_H

#include <stddef.h>

#include "common/buf.h"

/* Largest decoded SASL message accepted from a client. */
#define C2S_SASLMSG_MAX 4096

/* Decode len bytes of base64; "=" alone is the empty message. At most cap
 * bytes are written. 0, ERR_PARSE (bad alphabet, padding, or trailing
 * bits) or ERR_LIMIT. */
int c2s_saslmsg_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                           size_t *outlen);
void c2s_saslmsg_b64_encode(const unsigned char *in, size_t len, struct buf *out);

struct c2s_scram_first {
    char cbflag;     /* 'n', 'y' or 'p' */
    char cbname[32]; /* with 'p' */
    char *authzid;   /* decoded, or NULL */
    char *user;      /* decoded username (not prepped) */
};

/* Parse a client-first message. 0 or ERR_PARSE; free with
 * c2s_saslmsg_scram_first_free (also after an error). */
int c2s_saslmsg_scram_first(const unsigned char *msg, size_t len, struct c2s_scram_first *out);
void c2s_saslmsg_scram_first_free(struct c2s_scram_first *f);

/* Split a PLAIN message into its three parts (pointers into msg, not
 * NUL-terminated). The authcid and password must not be empty; no part may
 * hold a NUL. 0 or ERR_PARSE. */
struct c2s_plain {
    const unsigned char *authzid, *authcid, *passwd;
    size_t authzid_len, authcid_len, passwd_len;
};
int c2s_saslmsg_plain(const unsigned char *msg, size_t len, struct c2s_plain *out);

#endif
