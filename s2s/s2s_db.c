/*
 * s2s_db.c - server dialback (XEP-0220) keys and element checks.
 *
 * Keys follow XEP-0185: hex(HMAC-SHA256(K, receiving ' ' originating ' '
 * stream-id)) where K = SHA-256 of the dialback secret, a CSPRNG secret
 * that lives only in s2s. The three fields are domain names and a stream
 * id, none of which may contain a space, so the input is unambiguous
 * (CVE-2016-1232 / CVE-2016-0756 came from keys guessable across fields or
 * from weak secrets). Fields that could break this are refused.
 *
 * s2s_db_parse is the one place that reads dialback elements from the
 * network; it has no state and no I/O, and is the fuzz target's entry.
 * Pure functions, any thread; no allocation that outlives a call.
 */
#include "autoconfig.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/err.h"
#include "common/jid.h"
#include "common/mem.h"
#include "s2s/s2s.h"

#define DB_ID_MAX  128
#define DB_KEY_MAX 256

static int field_ok(const char *f)
{
    if (f == NULL || *f == '\0')
        return 0;
    for (const unsigned char *p = (const unsigned char *)f; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return 0;
    return 1;
}

void s2s_db_secret(const char *secret, size_t len, unsigned char key[32])
{
    unsigned int n = 32;
    EVP_Digest(secret, len, key, &n, EVP_sha256(), NULL);
}

int s2s_db_key(const unsigned char key[32], const char *receiving, const char *originating,
               const char *id, char *out)
{
    static const char hex[] = "0123456789abcdef";
    if (!field_ok(receiving) || !field_ok(originating) || !field_ok(id))
        return ERR_INVAL;
    size_t lr = strlen(receiving), lo = strlen(originating), li = strlen(id);
    size_t n = lr + 1 + lo + 1 + li;
    char *msg = xmalloc(n);
    memcpy(msg, receiving, lr);
    msg[lr] = ' ';
    memcpy(msg + lr + 1, originating, lo);
    msg[lr + 1 + lo] = ' ';
    memcpy(msg + lr + 1 + lo + 1, id, li);
    unsigned char mac[32];
    unsigned int maclen = sizeof(mac);
    HMAC(EVP_sha256(), key, 32, (const unsigned char *)msg, n, mac, &maclen);
    free(msg);
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[S2S_DB_KEY_HEXLEN] = '\0';
    mem_wipe(mac, sizeof(mac));
    return 0;
}

int s2s_db_key_equal(const char *got, size_t gotlen, const char *want)
{
    if (gotlen != S2S_DB_KEY_HEXLEN || strlen(want) != S2S_DB_KEY_HEXLEN)
        return 0;
    return CRYPTO_memcmp(got, want, S2S_DB_KEY_HEXLEN) == 0;
}

int s2s_db_domain_prep(const char *in, char *buf)
{
    if (in == NULL || *in == '\0' || strlen(in) > S2S_DOMAIN_MAX)
        return ERR_INVAL;
    /* A domain, not a JID: no node, no resource. */
    if (strchr(in, '@') != NULL || strchr(in, '/') != NULL)
        return ERR_INVAL;
    char *p = NULL;
    size_t len = 0;
    int rc = jid_prep_domain(in, strlen(in), &p, &len);
    if (rc != 0)
        return rc;
    if (len > S2S_DOMAIN_MAX) {
        free(p);
        return ERR_LIMIT;
    }
    memcpy(buf, p, len + 1);
    free(p);
    return 0;
}

static int id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > DB_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

int s2s_db_parse(struct xml_node *el, struct s2s_db_elem *out, char *from_buf, char *to_buf)
{
    memset(out, 0, sizeof(*out));
    if (el == NULL || el->type != XML_ELEM || strcmp(el->ns, S2S_NS_DIALBACK) != 0)
        return ERR_INVAL;
    if (strcmp(el->name, "verify") == 0)
        out->is_verify = 1;
    else if (strcmp(el->name, "result") != 0)
        return ERR_INVAL;
    if (xml_child_count(el) != 0 && xml_get_attr(el, "type") == NULL)
        return ERR_INVAL; /* a request holds only the key */
    if (s2s_db_domain_prep(xml_get_attr(el, "from"), from_buf) != 0 ||
        s2s_db_domain_prep(xml_get_attr(el, "to"), to_buf) != 0)
        return ERR_INVAL;
    out->from = from_buf;
    out->to = to_buf;
    const char *type = xml_get_attr(el, "type");
    if (type != NULL) {
        if (strcmp(type, "valid") != 0 && strcmp(type, "invalid") != 0 &&
            strcmp(type, "error") != 0)
            return ERR_INVAL;
        out->type = type;
    }
    if (out->is_verify) {
        const char *id = xml_get_attr(el, "id");
        if (id == NULL || !id_ok(id))
            return ERR_INVAL;
        out->id = id;
    }
    if (type == NULL) {
        size_t len = 0;
        const char *key = xml_text(el, &len);
        if (len == 0 || len > DB_KEY_MAX)
            return ERR_INVAL;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)key[i] <= ' ' || (unsigned char)key[i] == 0x7f)
                return ERR_INVAL;
        out->key = key;
        out->keylen = len;
    }
    return 0;
}
