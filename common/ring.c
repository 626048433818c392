/*
 * ring.c - the consistent-hashing ring of multi-instance routes (see
 * ring.h). A ring is rebuilt from scratch whenever its instances change
 * (rare next to lookups); a lookup is one SipHash of the key and a binary
 * search over n * RING_VNODES points.
 *
 * Pure computation; the caller's thread.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/htab.h"
#include "common/jid.h"
#include "common/mem.h"
#include "common/ring.h"

/* Fixed, so that ring positions survive a router restart and every process
 * computes the same ring. Keys are not secret: a user who picks JIDs can
 * only choose which instance serves them. */
static const unsigned char ring_key[16] = "parley-ring-v1!";

uint64_t ring_hash(const char *key, size_t len)
{
    return htab_siphash(ring_key, key, len);
}

static int cmp_point(const void *a, const void *b)
{
    const struct ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    /* Equal hashes (astronomically rare) are ordered by slot, not by the
     * order instances joined in, so the ring depends on the slots only. */
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

void ring_clear(struct ring *r)
{
    free(r->points);
    r->points = NULL;
    r->n = 0;
}

void ring_build(struct ring *r, const char *owner, const unsigned *slots, size_t n)
{
    ring_clear(r);
    if (n < 2)
        return;
    r->points = xreallocarray(NULL, n * RING_VNODES, sizeof(*r->points));
    /* Owner names are domain names (at most JID_PART_MAX bytes): the key
     * always fits whole, or long names would all hash alike. */
    char key[JID_PART_MAX + sizeof("#4294967295#4294967295")];
    for (size_t i = 0; i < n; i++) {
        for (unsigned v = 0; v < RING_VNODES; v++) {
            int len = snprintf(key, sizeof(key), "%s#%u#%u", owner, slots[i], v);
            if (len < 0 || (size_t)len >= sizeof(key))
                len = (int)sizeof(key) - 1; /* longer than any preparable name */
            struct ring_point *p = &r->points[r->n++];
            p->hash = ring_hash(key, (size_t)len);
            p->slot = slots[i];
            p->idx = (unsigned)i;
        }
    }
    qsort(r->points, r->n, sizeof(*r->points), cmp_point);
}

size_t ring_pick(const struct ring *r, const char *key, size_t len)
{
    if (r->n == 0)
        return 0;
    uint64_t h = ring_hash(key, len);
    /* First point at or after h, wrapping to the first point. */
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == r->n)
        lo = 0;
    return r->points[lo].idx;
}
