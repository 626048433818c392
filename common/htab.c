/*
 * htab.c - chained hash table with SipHash-2-4 (see htab.h).
 *
 * Buckets are a power of two; the table doubles when the load passes 1.
 * Each entry is one allocation holding the key bytes after the header.
 * A new table shares one static empty bucket and allocates its array at
 * the first insert: many tables stay empty for their whole life (a user's
 * roster and pending requests, per-session sets), and at 10,000 sessions
 * their arrays would cost ~1.4 MB.
 */
#include "autoconfig.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/htab.h"
#include "common/mem.h"
#include "common/rand.h"

struct entry {
    struct entry *next;
    uint64_t hash;
    void *val;
    size_t klen;
    unsigned char key[];
};

/* The bucket of every table that has never held an entry; never written
 * (insert grows first). */
static struct entry *no_buckets[1];

struct htab {
    struct entry **buckets; /* no_buckets until the first insert */
    size_t nbuckets;        /* power of two */
    size_t count;
    void (*free_val)(void *);
    unsigned char sipkey[16];
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

/* One load (gcc does not turn the byte-by-byte form into one). */
static uint64_t load64le(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

uint64_t htab_siphash(const unsigned char key[16], const void *data, size_t len)
{
    const unsigned char *in = data;
    uint64_t k0 = load64le(key), k1 = load64le(key + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    size_t left = len & 7;
    const unsigned char *end = in + len - left;
    uint64_t b = ((uint64_t)len) << 56;

    for (; in != end; in += 8) {
        uint64_t m = load64le(in);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t i = left; i > 0; i--)
        b |= ((uint64_t)in[i - 1]) << (8 * (i - 1));
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

struct htab *htab_new(void (*free_val)(void *))
{
    struct htab *h = xcalloc(1, sizeof(*h));
    h->nbuckets = 1;
    h->buckets = no_buckets;
    h->free_val = free_val;
    rand_bytes(h->sipkey, sizeof(h->sipkey));
    return h;
}

void htab_free(struct htab *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->nbuckets; i++) {
        struct entry *e = h->buckets[i];
        while (e) {
            struct entry *next = e->next;
            if (h->free_val)
                h->free_val(e->val);
            free(e);
            e = next;
        }
    }
    if (h->buckets != no_buckets)
        free(h->buckets);
    free(h);
}

size_t htab_count(const struct htab *h)
{
    return h->count;
}

static struct entry **find(const struct htab *h, const void *key, size_t klen, uint64_t hash)
{
    struct entry **pp = &h->buckets[hash & (h->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next) {
        struct entry *e = *pp;
        if (e->hash == hash && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return pp;
    }
    return pp;
}

static void grow(struct htab *h)
{
    size_t n = h->buckets == no_buckets ? 16 : h->nbuckets * 2;
    struct entry **nb = xcalloc(n, sizeof(*nb));
    for (size_t i = 0; i < h->nbuckets; i++) {
        struct entry *e = h->buckets[i];
        while (e) {
            struct entry *next = e->next;
            struct entry **slot = &nb[e->hash & (n - 1)];
            e->next = *slot;
            *slot = e;
            e = next;
        }
    }
    if (h->buckets != no_buckets)
        free(h->buckets);
    h->buckets = nb;
    h->nbuckets = n;
}

void *htab_get(const struct htab *h, const void *key, size_t klen)
{
    uint64_t hash = htab_siphash(h->sipkey, key, klen);
    struct entry *e = *find(h, key, klen, hash);
    return e ? e->val : NULL;
}

void *htab_get_str(const struct htab *h, const char *key)
{
    return htab_get(h, key, strlen(key));
}

static void insert(struct htab *h, const void *key, size_t klen, uint64_t hash, void *val)
{
    if (h->buckets == no_buckets || h->count >= h->nbuckets)
        grow(h);
    struct entry *e = xmalloc(sizeof(*e) + klen);
    e->hash = hash;
    e->val = val;
    e->klen = klen;
    if (klen)
        memcpy(e->key, key, klen);
    struct entry **slot = &h->buckets[hash & (h->nbuckets - 1)];
    e->next = *slot;
    *slot = e;
    h->count++;
}

int htab_put(struct htab *h, const void *key, size_t klen, void *val)
{
    uint64_t hash = htab_siphash(h->sipkey, key, klen);
    if (*find(h, key, klen, hash))
        return ERR_EXISTS;
    insert(h, key, klen, hash, val);
    return 0;
}

int htab_put_str(struct htab *h, const char *key, void *val)
{
    return htab_put(h, key, strlen(key), val);
}

void htab_set(struct htab *h, const void *key, size_t klen, void *val)
{
    uint64_t hash = htab_siphash(h->sipkey, key, klen);
    struct entry *e = *find(h, key, klen, hash);
    if (e) {
        if (h->free_val && e->val != val)
            h->free_val(e->val);
        e->val = val;
        return;
    }
    insert(h, key, klen, hash, val);
}

void *htab_del(struct htab *h, const void *key, size_t klen)
{
    uint64_t hash = htab_siphash(h->sipkey, key, klen);
    struct entry **pp = find(h, key, klen, hash);
    struct entry *e = *pp;
    if (e == NULL)
        return NULL;
    void *val = e->val;
    *pp = e->next;
    free(e);
    h->count--;
    return val;
}

void *htab_del_str(struct htab *h, const char *key)
{
    return htab_del(h, key, strlen(key));
}

void htab_iter_init(struct htab_iter *it, struct htab *h)
{
    memset(it, 0, sizeof(*it));
    it->h = h;
    it->next = h->buckets[0];
}

int htab_iter_next(struct htab_iter *it)
{
    struct htab *h = it->h;
    while (it->next == NULL) {
        if (++it->bucket >= h->nbuckets) {
            it->entry = NULL;
            return 0;
        }
        it->next = h->buckets[it->bucket];
    }
    struct entry *e = it->next;
    it->entry = e;
    it->next = e->next;
    it->key = e->key;
    it->klen = e->klen;
    it->val = e->val;
    return 1;
}

void *htab_iter_del(struct htab_iter *it)
{
    struct entry *e = it->entry;
    if (e == NULL)
        return NULL;
    struct entry **pp = &it->h->buckets[e->hash & (it->h->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    void *val = e->val;
    free(e);
    it->h->count--;
    it->entry = NULL;
    return val;
}
