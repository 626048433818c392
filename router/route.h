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
 * hashing of a key (the bare JID) on the ring of common/ring.h, built from
 * the owner and the slots of the instances (a slot is a small number the
 * router gives each live instance of a name, the lowest free one, so an
 * instance that reconnects takes back its old points and its old users).
 * A route's generation counts the changes of its instance list while it
 * stays up, so that an instance told of each change (router/PROTOCOL.md)
 * can tell whether it missed one.
 *
 * Pure data structure: no I/O, no logging. The router's loop thread.
 */
#ifndef PARLEY_ROUTER_ROUTE_H
#define PARLEY_ROUTER_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ring.h"

struct buf;

struct route {
    char *name;  /* "" for the default route */
    char *owner; /* component name of every instance */
    bool multi;
    void **inst;
    unsigned *slots; /* parallel to inst */
    size_t ninst, capinst;
    struct ring ring; /* of the slots; built when ninst > 1 */
    uint64_t gen;     /* instances joined or left since the route came up */
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
/* Append the route's ring as attributes: " gen='G' slots='S S ...'" (the
 * generation and the slots of its instances, router/PROTOCOL.md). */
void route_ring_attrs(const struct route *r, struct buf *out);

/* Every route with a name (not the default), for notifies and stats. */
void route_foreach(const struct route_table *t, void (*fn)(void *arg, struct route *r), void *arg);

#endif
