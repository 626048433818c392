/*
 * stats.c - per-component counters: kept per name across reconnects,
 * answered to <r:stats/> and logged on SIGUSR1.
 *
 * A struct comp exists for every name that completed a handshake since the
 * router started (so at most one per entry the component table ever had);
 * it also holds the ring slots of the name's live instances.
 *
 * The router's loop thread.
 */
#include "autoconfig.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/htab.h"
#include "common/log.h"
#include "common/mem.h"
#include "router/router.h"

static void comp_free(void *p)
{
    struct comp *k = p;
    free(k->name);
    free(k->slot_used);
    free(k);
}

struct comp *stats_comp(struct router *r, const char *name)
{
    if (r->comps == NULL)
        r->comps = htab_new(comp_free);
    struct comp *k = htab_get_str(r->comps, name);
    if (k == NULL) {
        k = xcalloc(1, sizeof(*k));
        k->name = xstrdup(name);
        htab_put_str(r->comps, name, k);
    }
    return k;
}

static int cmp_comp(const void *a, const void *b)
{
    const struct comp *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* The comps sorted by name (free the array), for stable output. */
static struct comp **sorted(struct router *r, size_t *n)
{
    *n = r->comps ? htab_count(r->comps) : 0;
    struct comp **v = xcalloc(*n ? *n : 1, sizeof(*v));
    if (*n == 0)
        return v;
    struct htab_iter it;
    size_t i = 0;
    for (htab_iter_init(&it, r->comps); htab_iter_next(&it);)
        v[i++] = it.val;
    qsort(v, *n, sizeof(*v), cmp_comp);
    return v;
}

void stats_element(struct router *r, struct buf *out)
{
    size_t n;
    struct comp **v = sorted(r, &n);
    buf_append_str(out, "<r:stats>");
    for (size_t i = 0; i < n; i++) {
        const struct comp *k = v[i];
        buf_append_str(out, "<r:component name='");
        xml_escape_attr(k->name, strlen(k->name), out);
        buf_printf(out,
                   "' instances='%u' stanzas-in='%" PRIu64 "' stanzas-out='%" PRIu64
                   "' bytes-in='%" PRIu64 "' bytes-out='%" PRIu64 "' dropped='%" PRIu64 "'/>",
                   k->ninst, k->stanzas_in, k->stanzas_out, k->bytes_in, k->bytes_out, k->dropped);
    }
    buf_append_str(out, "</r:stats>");
    free(v);
}

void stats_log(struct router *r)
{
    size_t n;
    struct comp **v = sorted(r, &n);
    log_notice("stats: %zu connections, %zu routes%s", r->nconns, route_count(r->routes),
               route_default(r->routes) ? " and the default route" : "");
    for (size_t i = 0; i < n; i++) {
        const struct comp *k = v[i];
        log_notice("stats: %s instances=%u stanzas-in=%" PRIu64 " stanzas-out=%" PRIu64
                   " bytes-in=%" PRIu64 " bytes-out=%" PRIu64 " dropped=%" PRIu64,
                   k->name, k->ninst, k->stanzas_in, k->stanzas_out, k->bytes_in, k->bytes_out,
                   k->dropped);
    }
    struct jid_cache_stats js;
    jid_cache_stats(r->jids, &js);
    log_notice("stats: jid cache %zu/%zu, %zu/%zu bytes, hits=%" PRIu64 " misses=%" PRIu64
               " invalid=%" PRIu64,
               js.count, js.capacity, js.bytes, js.max_bytes, js.hits, js.misses, js.invalid);
    free(v);
}

void stats_free(struct router *r)
{
    htab_free(r->comps);
    r->comps = NULL;
}
