/*
 * arena.h - bump allocator: one per stanza (or other short-lived tree).
 *
 * Everything a stanza tree needs (nodes, names, attribute values, text) is
 * carved from its arena; the whole tree is freed at once with arena_free.
 * arena_used() reports the bytes handed out so far, which is what stanza
 * size limits are checked against.
 */
#ifndef PARLEY_ARENA_H
#define PARLEY_ARENA_H

#include <stddef.h>

struct arena;

/* first_chunk: size of the first block (0 picks a default). */
struct arena *arena_new(size_t first_chunk);
/* NULL is fine. */
void arena_free(struct arena *a);
/* Memory aligned for any object; never NULL (aborts on OOM). */
void *arena_alloc(struct arena *a, size_t n);
void *arena_zalloc(struct arena *a, size_t n);
/* Copy of s[0..n) plus a NUL. */
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_strdup(struct arena *a, const char *s);
void *arena_memdup(struct arena *a, const void *p, size_t n);
/* Bytes handed out (payload only). */
size_t arena_used(const struct arena *a);
/* What one arena_alloc(a, n) takes from its chunk (n rounded up to the
 * alignment): for sizing a first chunk to what will go in it. */
size_t arena_need(size_t n);

#endif
