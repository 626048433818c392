/*
 * buf.h - growable byte buffers, and refcounted immutable buffers.
 *
 * struct buf is the serializer's output and every daemon's scratch space:
 * bytes (always NUL-terminated past len, so text can be used as a C string)
 * that grow on demand. The owner of a struct buf frees it with buf_free.
 *
 * struct rbuf is what travels on write queues: bytes written once, then
 * shared read-only by every recipient of a fan-out (presence broadcast) and
 * freed when the last reference is dropped. Single-threaded: no atomics.
 */
#ifndef PARLEY_BUF_H
#define PARLEY_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append */
    size_t len;
    size_t cap;
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void buf_init(struct buf *b);
void buf_free(struct buf *b);
/* Forget the contents, keep the memory. */
void buf_reset(struct buf *b);
/* Make room for n more bytes (plus the trailing NUL). */
void buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_append_str(struct buf *b, const char *s);
void buf_append_byte(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Remove n bytes from the front. */
void buf_consume(struct buf *b, size_t n);
/* Hand the bytes to the caller (free() them); the buffer is left empty. */
char *buf_detach(struct buf *b, size_t *len);

struct rbuf {
    unsigned refs;
    size_t len;
    char data[]; /* NUL-terminated past len */
};

/* A new rbuf with refs = 1 holding a copy of p[0..n). */
struct rbuf *rbuf_new(const void *p, size_t n);
/* Take the contents of b as an rbuf (b is left empty). */
struct rbuf *rbuf_from_buf(struct buf *b);
struct rbuf *rbuf_ref(struct rbuf *r);
/* Drop one reference; NULL is fine. */
void rbuf_unref(struct rbuf *r);

#endif
