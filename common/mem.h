/*
 * mem.h - allocation that never returns NULL, and wiping of secrets.
 *
 * Running out of memory is not a condition Parley tries to survive: the
 * x*alloc functions abort with a log line. Input limits, not allocation
 * failures, are how untrusted input is kept small.
 */
#ifndef PARLEY_MEM_H
#define PARLEY_MEM_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
/* Array reallocation with overflow check of nmemb * size. */
void *xreallocarray(void *p, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);

/* Overwrite n bytes in a way the compiler cannot optimise away. */
void mem_wipe(void *p, size_t n);
/* Wipe then free; NULL is fine. */
void mem_freezero(void *p, size_t n);

#endif
