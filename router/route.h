/*
 * route.h - the route table: names and bound domains -> instance lists.
 *
 * A route is a name the router delivers to: a component's name (owned from
 * its handshake on) or a domain a component bound. Each route has an owner
 * (the component name it belongs to) and one or more instances (opaque
 * pointers: the router's connections). Several instances are allowed only
 * when they are instances of the same multi-instance owner; any other
 * second claim on a name is a conflict, so a bound name is never taken
 * over silently. The default route (where stanzas for unowned domains go)
 * is one more route, outside the name table.
 *
 * With several instances, a stanza's instance is picked by consistent
 * hashing of a key (the bare JID): each instance has ROUTE_VNODES points on
 * a 64-bit ring, placed by hashing "owner#slot#i", where slot is a small
 * number that the router gives each live instance of a name (the lowest
 * free one), so an instance that reconnects takes back its old points and
 * its old users. Adding or removing one of N instances moves about 1/N of
 * the keys. The hash key is fixed, so a restarted router spreads users the
 * same way.
 *
 * Pure data structure: no I/O, no logging. The router's loop thread.
 */
#ifndef PARLEY_ROUTER_ROUTE_H
#define PARLEY_ROUTER_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Points per instance on the ring. */
#define ROUTE_VNODES 160

struct route_point {
    uint64_t hash;
    unsigned slot; /* the instance's slot */
    unsigned inst; /* index into the route's instances */
};

struct route {
    char *name;  /* "" for the default route */
    char *owner; /* component name of every instance */
    bool multi;
    void **inst;
    unsigned *slots; /* parallel to inst */
    size_t ninst, capinst;
    struct route_point *ring; /* sorted by hash; built when ninst > 1 */
    size_t nring;
};

struct route_table;

struct route_table *route_table_new(void);
/* Frees every route (instances are not the table's). NULL is fine. */
void route_table_free(struct route_table *t);

/*
 * Add inst (with its slot) to the route name (NULL: the default route),
 * owned by owner. Returns 1 if the route is new (it came up), 0 if inst
 * joined an existing route of the same multi-instance owner or was on it
 * already, ERR_EXISTS if another owner (or, for a non-multi owner, another
 * instance) holds it.
 */
int route_add(struct route_table *t, const char *name, const char *owner, bool multi, void *inst,
              unsigned slot);
/* Remove inst from the route. Returns 1 if the route vanished (its last
 * instance left), 0 if it remains, ERR_NOTFOUND if inst was not on it. */
int route_del(struct route_table *t, const char *name, void *inst);

/* The route of an exact name (len bytes), or NULL. */
struct route *route_find(const struct route_table *t, const char *name, size_t len);
struct route *route_default(const struct route_table *t);
/* Is inst one of the route's instances? */
bool route_has(const struct route *r, const void *inst);
size_t route_count(const struct route_table *t);

/* The instance for key (len bytes; any bytes): the only one, or by the ring. */
void *route_pick(const struct route *r, const char *key, size_t len);
/* The ring hash of a key (exposed for tests). */
uint64_t route_hash(const char *key, size_t len);

/* Every route with a name (not the default), for notifies and stats. */
void route_foreach(const struct route_table *t, void (*fn)(void *arg, struct route *r), void *arg);

#endif
