/*
 * fuzz_jid.c - libFuzzer target for jid_parse and the JID cache.
 *
 * Arbitrary bytes go to jid_parse. When they parse, the result must be a
 * fixed point (parsing its full string gives the same full string, and its
 * parts prep to themselves), every part must be within JID_PART_MAX and
 * non-empty, and the cache and jid_check must give the same answer as a
 * direct parse.
 * ASCII input also goes to each prep helper twice: as it is (the fast path
 * that skips libidn) and behind a SOFT HYPHEN, which every profile maps to
 * nothing, so that libidn does the work; the answers must agree. Any
 * violation aborts. Inputs over JID_INPUT_MAX are refused by jid_parse
 * before libidn is called, so they cost nothing here either.
 */
#include "autoconfig.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/jid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_part(const char *p, size_t len,
                       int (*prep)(const char *, size_t, char **, size_t *))
{
    char *again;
    size_t alen;

    if (len == 0 || len > JID_PART_MAX || strlen(p) != len)
        abort();
    if (prep(p, len, &again, &alen) != 0 || alen != len || memcmp(again, p, len) != 0)
        abort();
    free(again);
}

typedef int (*prep_fn)(const char *, size_t, char **, size_t *);

static void check_fast_path(prep_fn prep, const char *s, size_t len)
{
    char slow[JID_INPUT_MAX + 2];
    char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;

    memcpy(slow, "\xc2\xad", 2);
    memcpy(slow + 2, s, len);
    int ra = prep(s, len, &a, &al);
    int rb = prep(slow, len + 2, &b, &bl);
    if (ra != rb || al != bl || (ra == 0 && memcmp(a, b, al) != 0))
        abort();
    free(a);
    free(b);
}

/* The domain fast path leaves A-labels and IP literals to other code. */
static int fast_domain_candidate(const char *s, size_t len)
{
    if (len > 0 && s[0] == '[')
        return 0;
    for (size_t i = 0; i + 4 <= len; i++) {
        if (tolower((unsigned char)s[i]) == 'x' && tolower((unsigned char)s[i + 1]) == 'n' &&
            s[i + 2] == '-' && s[i + 3] == '-')
            return 0;
    }
    return 1;
}

static void check_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] >= 0x80)
            return;
    }
    if (len == 0 || len > JID_INPUT_MAX - 2)
        return;
    check_fast_path(jid_prep_node, s, len);
    check_fast_path(jid_prep_resource, s, len);
    if (fast_domain_candidate(s, len))
        check_fast_path(jid_prep_domain, s, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct jid_cache *cache;
    struct jid *j, *k, *c;
    int rc, crc;

    if (cache == NULL)
        cache = jid_cache_new(8);
    check_ascii((const char *)data, size);

    rc = jid_parse((const char *)data, size, &j);
    crc = jid_cache_prep(cache, (const char *)data, size, &c);
    if (rc != crc || jid_check((const char *)data, size) != rc)
        abort();
    if (rc != 0) {
        if (j != NULL || c != NULL || (rc != ERR_INVAL && rc != ERR_LIMIT))
            abort();
        return 0;
    }
    if (!jid_eq_full(j, c))
        abort();
    jid_free(c);

    if (j->node != NULL)
        check_part(j->node, j->node_len, jid_prep_node);
    check_part(j->domain, j->domain_len, jid_prep_domain);
    if (j->resource != NULL)
        check_part(j->resource, j->resource_len, jid_prep_resource);
    if (j->full_len > JID_FULL_MAX || strlen(j->full) != j->full_len)
        abort();

    if (jid_parse(j->full, j->full_len, &k) != 0)
        abort();
    if (!jid_eq_full(j, k) || strcmp(jid_full_str(j), jid_full_str(k)) != 0)
        abort();
    jid_free(k);

    k = jid_bare(j);
    if (k->resource != NULL || !jid_eq_bare(j, k) || strcmp(k->full, j->bare) != 0)
        abort();
    jid_free(k);

    jid_free(j);
    return 0;
}
