/*
 * htab.h - hash table from byte-string keys to pointers.
 *
 * Keys are copied into the table; values are owned by the caller unless a
 * free_val function is given, in which case the table frees values it
 * drops (htab_free, replacement by htab_set). Keys are hashed with SipHash
 * under a per-table random key, so untrusted keys (JIDs, domain names)
 * cannot be chosen to collide. Iteration order is unspecified; do not
 * insert or delete while iterating, except htab_iter_del on the current item.
 */
#ifndef PARLEY_HTAB_H
#define PARLEY_HTAB_H

#include <stddef.h>
#include <stdint.h>

struct htab;

struct htab *htab_new(void (*free_val)(void *));
/* Frees every entry (and value, if free_val was given); NULL is fine. */
void htab_free(struct htab *h);
size_t htab_count(const struct htab *h);

void *htab_get(const struct htab *h, const void *key, size_t klen);
void *htab_get_str(const struct htab *h, const char *key);
/* Insert; ERR_EXISTS (and nothing changed) if the key is present. */
int htab_put(struct htab *h, const void *key, size_t klen, void *val);
int htab_put_str(struct htab *h, const char *key, void *val);
/* Insert or replace (the old value is freed with free_val, if any). */
void htab_set(struct htab *h, const void *key, size_t klen, void *val);
/* Remove and return the value (not freed), or NULL if absent. */
void *htab_del(struct htab *h, const void *key, size_t klen);
void *htab_del_str(struct htab *h, const char *key);

struct htab_iter {
    struct htab *h;
    size_t bucket;
    void *entry;
    void *next;
    const void *key;
    size_t klen;
    void *val;
};

/* for (htab_iter_init(&it, h); htab_iter_next(&it);) use it.key, it.val */
void htab_iter_init(struct htab_iter *it, struct htab *h);
int htab_iter_next(struct htab_iter *it);
/* Remove the item the iterator is on; returns its value (not freed). */
void *htab_iter_del(struct htab_iter *it);

/* SipHash-2-4 of data under a 16-byte key (exposed for other keyed hashing). */
uint64_t htab_siphash(const unsigned char key[16], const void *data, size_t len);

#endif
