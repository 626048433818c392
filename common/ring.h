/*
 * ring.h - the consistent-hashing ring that spreads the keys (bare JIDs)
 * of a multi-instance route over its instances (router/PROTOCOL.md).
 *
 * Each instance has RING_VNODES points on a 64-bit ring, placed by hashing
 * "owner#slot#i": owner is the component name of every instance, slot the
 * small number the router gives each live instance of a name (the lowest
 * free one, so that an instance that reconnects takes back its old points
 * and its old users). A key belongs to the instance of the first point at
 * or after the key's hash, wrapping around. The hash key is fixed, so the
 * ring depends only on the owner and the slots: a restarted router spreads
 * users the same way, and an sm instance told the slots of a domain's
 * instances computes the very ring the router routes by (so it knows which
 * of its cached users it still owns after a change, sm/SESSION.md).
 * Adding or removing one of N instances moves about 1/N of the keys, all
 * to or from that instance.
 *
 * One copy of this computation: the router and the sm both use it.
 * Pure computation, no I/O; the caller's thread.
 */
#ifndef PARLEY_COMMON_RING_H
#define PARLEY_COMMON_RING_H

#include <stddef.h>
#include <stdint.h>

/* Points per instance on the ring. */
#define RING_VNODES 160

struct ring_point {
    uint64_t hash;
    unsigned slot; /* the instance's slot */
    unsigned idx;  /* index of the instance in the slots given to ring_build */
};

struct ring {
    struct ring_point *points; /* sorted by hash; none with fewer than 2 instances */
    size_t n;
};

/* The ring hash of a key (len bytes, any bytes). */
uint64_t ring_hash(const char *key, size_t len);
/* (Re)build r for the n instances of owner whose slots are slots[0..n-1];
 * their order does not change which slot a key goes to. With fewer than two
 * instances the ring is left empty (ring_pick answers 0). r starts zeroed. */
void ring_build(struct ring *r, const char *owner, const unsigned *slots, size_t n);
/* Free the points; r is empty again. */
void ring_clear(struct ring *r);
/* The index (into the slots given to ring_build) of key's instance: 0 for
 * an empty ring (one instance, or none). */
size_t ring_pick(const struct ring *r, const char *key, size_t len);

#endif
