/*
 * buf.c - growable and refcounted byte buffers (see buf.h).
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/mem.h"

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_reserve(struct buf *b, size_t n)
{
    if (n > SIZE_MAX - b->len - 1)
        abort();
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_append_str(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_append_byte(struct buf *b, char c)
{
    buf_append(b, &c, 1);
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *buf_detach(struct buf *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    if (p == NULL)
        p = xcalloc(1, 1);
    buf_init(b);
    return p;
}

struct rbuf *rbuf_new(const void *p, size_t n)
{
    if (n > SIZE_MAX - sizeof(struct rbuf) - 1)
        abort();
    struct rbuf *r = xmalloc(sizeof(*r) + n + 1);
    r->refs = 1;
    r->len = n;
    if (n)
        memcpy(r->data, p, n);
    r->data[n] = '\0';
    return r;
}

struct rbuf *rbuf_from_buf(struct buf *b)
{
    struct rbuf *r = rbuf_new(b->data, b->len);
    buf_free(b);
    return r;
}

struct rbuf *rbuf_ref(struct rbuf *r)
{
    r->refs++;
    return r;
}

void rbuf_unref(struct rbuf *r)
{
    if (r != NULL && --r->refs == 0)
        free(r);
}
