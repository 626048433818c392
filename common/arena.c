/*
 * arena.c - bump allocator over a list of chunks (see arena.h).
 *
 * The arena header lives inside its first chunk, so a small stanza costs one
 * malloc. Chunks grow geometrically; a request larger than half a chunk gets
 * a chunk of its own so that one big text node does not waste a whole block.
 */
#include "autoconfig.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"
#include "common/mem.h"

#define ARENA_ALIGN     alignof(max_align_t)
#define ARENA_DEFAULT   1024
#define ARENA_MAX_CHUNK (64 * 1024)

struct chunk {
    struct chunk *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    alignas(max_align_t) unsigned char mem[];
};

struct arena {
    struct chunk *head; /* chunk being carved */
    size_t used;        /* payload bytes handed out */
    size_t next_size;
};

static size_t align_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
}

static struct chunk *chunk_new(size_t size)
{
    if (size > SIZE_MAX - sizeof(struct chunk))
        abort();
    struct chunk *c = xmalloc(sizeof(*c) + size);
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

struct arena *arena_new(size_t first_chunk)
{
    size_t size = align_up(first_chunk ? first_chunk : ARENA_DEFAULT);
    struct chunk *c = chunk_new(size + align_up(sizeof(struct arena)));
    struct arena *a = (void *)c->mem; /* chunk memory is max-aligned */
    c->used = align_up(sizeof(struct arena));
    a->head = c;
    a->used = 0;
    a->next_size = size * 2;
    return a;
}

void arena_free(struct arena *a)
{
    if (a == NULL)
        return;
    /* The arena struct lives inside one of the chunks: read a->head once,
     * then walk the list without touching *a again. */
    struct chunk *c = a->head;
    while (c) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
}

void *arena_alloc(struct arena *a, size_t n)
{
    size_t need = align_up(n ? n : 1);
    struct chunk *c = a->head;
    if (c->size - c->used < need) {
        if (need > a->next_size / 2) {
            /* Dedicated chunk, linked behind the head so the head's free
             * space stays usable. */
            struct chunk *big = chunk_new(need);
            big->used = need;
            big->next = c->next;
            c->next = big;
            a->used += n;
            return big->mem;
        }
        c = chunk_new(a->next_size);
        c->next = a->head;
        a->head = c;
        if (a->next_size < ARENA_MAX_CHUNK)
            a->next_size *= 2;
    }
    void *p = c->mem + c->used;
    c->used += need;
    a->used += n;
    return p;
}

void *arena_zalloc(struct arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

void *arena_memdup(struct arena *a, const void *p, size_t n)
{
    void *q = arena_alloc(a, n);
    if (n)
        memcpy(q, p, n);
    return q;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

size_t arena_need(size_t n)
{
    return align_up(n ? n : 1);
}

size_t arena_used(const struct arena *a)
{
    return a->used;
}
