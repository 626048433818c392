/*
 * fuzz_jid.c - libFuzzer target for jid_parse and the JID cache.
 *
 * Arbitrary bytes go to jid_parse. When they parse, the result must be a
 * fixed point (parsing its full string gives the same full string, and its
 * parts prep to themselves), every part must be within JID_PART_MAX and
 * non-empty, and the cache must give the same answer as a direct parse.
 * Any violation aborts. Inputs over JID_INPUT_MAX are refused by jid_parse
 * before libidn is called, so they cost nothing here either.
 */
#include "config.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct jid_cache *cache;
    struct jid *j, *k, *c;
    int rc, crc;

    if (cache == NULL)
        cache = jid_cache_new(8);

    rc = jid_parse((const char *)data, size, &j);
    crc = jid_cache_prep(cache, (const char *)data, size, &c);
    if (rc != crc)
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
