/*
 * route.c - route table and consistent hashing ring (see route.h).
 *
 * Routes live in a SipHash table keyed by name. The ring of a route is
 * rebuilt from scratch whenever its instance list changes (a connect or
 * disconnect: rare next to lookups); a lookup is one hash of the key and a
 * binary search over ninst * ROUTE_VNODES points.
 *
 * The router's loop thread; no I/O.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/htab.h"
#include "common/mem.h"
#include "router/route.h"

struct route_table {
    struct htab *names; /* name -> struct route */
    struct route *def;  /* NULL when nobody holds the default route */
};

/* Fixed, so that ring positions survive a router restart. Keys are not
 * secret: a user who picks JIDs can only choose which instance serves them. */
static const unsigned char ring_key[16] = "parley-ring-v1!";

uint64_t route_hash(const char *key, size_t len)
{
    return htab_siphash(ring_key, key, len);
}

static void route_free(void *p)
{
    struct route *r = p;
    if (r == NULL)
        return;
    free(r->name);
    free(r->owner);
    free(r->inst);
    free(r->slots);
    free(r->ring);
    free(r);
}

struct route_table *route_table_new(void)
{
    struct route_table *t = xcalloc(1, sizeof(*t));
    t->names = htab_new(route_free);
    return t;
}

void route_table_free(struct route_table *t)
{
    if (t == NULL)
        return;
    htab_free(t->names);
    route_free(t->def);
    free(t);
}

static int cmp_point(const void *a, const void *b)
{
    const struct route_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    /* Equal hashes (astronomically rare) are ordered by slot, not by the
     * order instances joined in, so the ring depends on the slots only. */
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

static void ring_build(struct route *r)
{
    free(r->ring);
    r->ring = NULL;
    r->nring = 0;
    if (r->ninst < 2)
        return;
    r->ring = xreallocarray(NULL, r->ninst * ROUTE_VNODES, sizeof(*r->ring));
    char key[512];
    for (size_t i = 0; i < r->ninst; i++) {
        for (unsigned v = 0; v < ROUTE_VNODES; v++) {
            int n = snprintf(key, sizeof(key), "%s#%u#%u", r->owner, r->slots[i], v);
            if (n < 0 || (size_t)n >= sizeof(key))
                n = (int)sizeof(key) - 1; /* owner names are domains: short */
            struct route_point *p = &r->ring[r->nring++];
            p->hash = route_hash(key, (size_t)n);
            p->slot = r->slots[i];
            p->inst = (unsigned)i;
        }
    }
    qsort(r->ring, r->nring, sizeof(*r->ring), cmp_point);
}

static struct route *route_new(const char *name, const char *owner, bool multi)
{
    struct route *r = xcalloc(1, sizeof(*r));
    r->name = xstrdup(name);
    r->owner = xstrdup(owner);
    r->multi = multi;
    return r;
}

static void inst_push(struct route *r, void *inst, unsigned slot)
{
    if (r->ninst == r->capinst) {
        r->capinst = r->capinst ? r->capinst * 2 : 2;
        r->inst = xreallocarray(r->inst, r->capinst, sizeof(*r->inst));
        r->slots = xreallocarray(r->slots, r->capinst, sizeof(*r->slots));
    }
    r->inst[r->ninst] = inst;
    r->slots[r->ninst] = slot;
    r->ninst++;
    ring_build(r);
}

bool route_has(const struct route *r, const void *inst)
{
    for (size_t i = 0; i < r->ninst; i++)
        if (r->inst[i] == inst)
            return true;
    return false;
}

int route_add(struct route_table *t, const char *name, const char *owner, bool multi, void *inst,
              unsigned slot)
{
    struct route *r = name ? htab_get_str(t->names, name) : t->def;
    if (r == NULL) {
        r = route_new(name ? name : "", owner, multi);
        inst_push(r, inst, slot);
        if (name)
            htab_put_str(t->names, name, r);
        else
            t->def = r;
        return 1;
    }
    if (route_has(r, inst))
        return 0;
    if (!r->multi || !multi || strcmp(r->owner, owner) != 0)
        return ERR_EXISTS;
    inst_push(r, inst, slot);
    return 0;
}

int route_del(struct route_table *t, const char *name, void *inst)
{
    struct route *r = name ? htab_get_str(t->names, name) : t->def;
    if (r == NULL)
        return ERR_NOTFOUND;
    size_t i = 0;
    while (i < r->ninst && r->inst[i] != inst)
        i++;
    if (i == r->ninst)
        return ERR_NOTFOUND;
    r->ninst--;
    memmove(&r->inst[i], &r->inst[i + 1], (r->ninst - i) * sizeof(*r->inst));
    memmove(&r->slots[i], &r->slots[i + 1], (r->ninst - i) * sizeof(*r->slots));
    if (r->ninst > 0) {
        ring_build(r);
        return 0;
    }
    if (name)
        route_free(htab_del_str(t->names, name));
    else {
        route_free(t->def);
        t->def = NULL;
    }
    return 1;
}

struct route *route_find(const struct route_table *t, const char *name, size_t len)
{
    return htab_get(t->names, name, len);
}

struct route *route_default(const struct route_table *t)
{
    return t->def;
}

size_t route_count(const struct route_table *t)
{
    return htab_count(t->names);
}

void *route_pick(const struct route *r, const char *key, size_t len)
{
    if (r->ninst == 1)
        return r->inst[0];
    if (r->ninst == 0)
        return NULL;
    uint64_t h = route_hash(key, len);
    /* First point at or after h, wrapping to the first point. */
    size_t lo = 0, hi = r->nring;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->ring[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == r->nring)
        lo = 0;
    return r->inst[r->ring[lo].inst];
}

void route_foreach(const struct route_table *t, void (*fn)(void *arg, struct route *r), void *arg)
{
    struct htab_iter it;
    for (htab_iter_init(&it, t->names); htab_iter_next(&it);)
        fn(arg, it.val);
}
