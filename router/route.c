/*
 * route.c - route table and consistent hashing ring (see route.h).
 *
 * Routes live in a SipHash table keyed by name. The ring of a route
 * (common/ring) is rebuilt from scratch whenever its instance list changes
 * (a connect or disconnect: rare next to lookups), and its generation
 * counts those changes.
 *
 * The router's loop thread; no I/O.
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/htab.h"
#include "common/mem.h"
#include "router/route.h"

struct route_table {
    struct htab *names; /* name -> struct route */
    struct route *def;  /* NULL when nobody holds the default route */
};

static void route_free(void *p)
{
    struct route *r = p;
    if (r == NULL)
        return;
    free(r->name);
    free(r->owner);
    free(r->inst);
    free(r->slots);
    ring_clear(&r->ring);
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
    ring_build(&r->ring, r->owner, r->slots, r->ninst);
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
    r->gen++;
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
        ring_build(&r->ring, r->owner, r->slots, r->ninst);
        r->gen++;
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
    if (r->ninst == 0)
        return NULL;
    return r->inst[ring_pick(&r->ring, key, len)];
}

void route_ring_attrs(const struct route *r, struct buf *out)
{
    buf_printf(out, " gen='%llu' slots='", (unsigned long long)r->gen);
    for (size_t i = 0; i < r->ninst; i++)
        buf_printf(out, i ? " %u" : "%u", r->slots[i]);
    buf_append_byte(out, '\'');
}

void route_foreach(const struct route_table *t, void (*fn)(void *arg, struct route *r), void *arg)
{
    struct htab_iter it;
    for (htab_iter_init(&it, t->names); htab_iter_next(&it);)
        fn(arg, it.val);
}
