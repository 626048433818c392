/*
 * stream.c - a connection: libuv handle + TLS through our own BIO + xml
 * parser + batched write queue (see stream.h for the contract).
 *
 * Layout of the output path. Two queues of byte items (a referenced rbuf,
 * or an owned chunk that small copied writes are appended to):
 *   wire  - bytes that go to the socket as they are: plaintext without
 *           TLS, ciphertext with it. The first `inflight` items belong to
 *           the uv_write in flight and are not touched until it completes.
 *   plain - with TLS only: plaintext waiting to be encrypted, which happens
 *           at flush time once the handshake is done (so that the stream
 *           header a STARTTLS client queues right away waits for it).
 * Bytes queued before stream_starttls sit in wire and leave in plaintext,
 * ahead of any TLS record: that is what makes <proceed/> safe to queue just
 * before the call.
 *
 * TLS I/O: OpenSSL reads and writes through one BIO of ours (stream_bio)
 * instead of a pair of memory BIOs. Reading, it takes ciphertext straight
 * from the buffer of the current read callback (tls_in); OpenSSL keeps a
 * partial record in its own read buffer. Writing, it appends ciphertext
 * straight to wire. That saves a copy each way and the two memory BIOs'
 * buffers, which stayed allocated for the life of the connection.
 *
 * Idle streams (opts.hibernate_ms without a byte from the peer) hibernate
 * their parser (xml_parser_hibernate) and free their empty queue arrays;
 * the next read wakes them. Together with SSL_MODE_RELEASE_BUFFERS this is
 * what keeps an idle authenticated connection small.
 *
 * The flush runs from a uv_prepare handle started by any write, so the
 * whole output of one loop iteration goes out together; it is also run
 * from the write callback. Owner callbacks are only ever called from libuv
 * callbacks (read, write, connect, timer, prepare), never from stream_*
 * entry points, so an owner never sees itself re-entered.
 *
 * Closing: stream_close flushes, sends close_notify, shuts the socket down
 * for writing and keeps reading (and discarding) until the peer's EOF, so
 * that unread input never turns our FIN into an RST that could destroy
 * data the peer has not read yet; close_ms bounds the wait. hard_close
 * closes the three handles; the last close callback calls on_close and
 * frees everything.
 */
#include "autoconfig.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/stream.h"
#include "common/tls.h"

/* Copied writes are appended to one owned chunk up to this size. */
#define WQ_CHUNK_MAX (64 * 1024)
#define WQ_CHUNK_MIN 2048
/* Plaintext out of one SSL_read: one TLS record at most. */
#define TLS_PLAIN_MAX (16 * 1024)

enum stream_state { ST_CONNECTING, ST_OPEN, ST_CLOSING, ST_CLOSED };

struct wq_item {
    struct rbuf *rb; /* either a reference ... */
    char *own;       /* ... or an owned chunk */
    size_t len;      /* bytes in the item */
    size_t cap;      /* own only */
    size_t off;      /* bytes already written (wire) or encrypted (plain) */
};

struct wq {
    struct wq_item *items; /* ring */
    size_t head, count, cap;
};

struct stream {
    uv_loop_t *loop;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } io;
    uv_timer_t timer;
    uv_prepare_t flusher;
    uv_write_t *wreq; /* the uv_write in flight (allocated for it: most output
                         leaves by uv_try_write, and idle streams need none) */
    /* A connect completes before a shutdown can start (closing while
     * connecting is an abort), so the two requests share memory. */
    union {
        uv_connect_t creq;
        uv_shutdown_t sreq;
    };
    int is_unix;
    enum stream_state state;
    unsigned pending_closes;

    struct stream_opts opts;
    struct stream_cbs cbs;
    void *arg;
    struct xml_parser *parser;

    SSL *ssl;
    const char *tls_in; /* ciphertext OpenSSL may read, during tls_input */
    size_t tls_in_len;
    enum stream_tls_role role;

    struct wq wire, plain;
    size_t inflight; /* items of wire in the current uv_write */
    size_t queued;   /* bytes in wire (unwritten) + plain (unencrypted) */

    uint64_t hs_deadline;    /* 0: none */
    uint64_t close_deadline; /* while closing */
    uint64_t last_rx;        /* loop time of the last read (or resume) */
    struct stream_stats stats;

    unsigned reading : 1;      /* uv_read_start in force */
    unsigned owner_paused : 1; /* stream_pause */
    unsigned congested : 1;
    unsigned reported : 1; /* congested state the owner was told */
    unsigned failed : 1;   /* on_error delivered (or being delivered) */
    unsigned draining : 1; /* closing by stream_close: input still delivered */
    unsigned eof : 1;
    unsigned writing : 1;
    unsigned flush_on : 1;
    unsigned hs_started : 1; /* client: first handshake step made */
    unsigned secure : 1;     /* handshake done */
    unsigned notify_sent : 1;
    unsigned shutdown_sent : 1;
    unsigned shutdown_done : 1;
    unsigned tls_out : 1;       /* OpenSSL wrote ciphertext to wire since the last flush */
    unsigned asleep : 1;        /* quiet: hibernation done (or tried) until the next read */
    unsigned parser_asleep : 1; /* ... and the parser did hibernate */
};

static void flush(struct stream *s);
static void hard_close(struct stream *s);
static void timer_rearm(struct stream *s);

/* ---- the queues ---- */

/*
 * Spare chunks of WQ_CHUNK_MIN bytes, per thread. When messages arrive one
 * by one, every stanza finds its stream's queues empty, takes a new chunk
 * for its plaintext and one for its ciphertext, and frees both once
 * written: two allocations of 2 KiB per stanza and hop, too large for
 * glibc's per-thread cache, so each went through the main allocator. At
 * most WQ_POOL_MAX chunks (64 KiB) wait here.
 */
#define WQ_POOL_MAX 32
/* Under AddressSanitizer a pooled chunk is poisoned, so that a use after
 * chunk_free is still reported as it would be after free(). */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WQ_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(WQ_ASAN)
#include <sanitizer/asan_interface.h>
#define WQ_POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define WQ_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define WQ_POISON(p, n)   ((void)(p), (void)(n))
#define WQ_UNPOISON(p, n) ((void)(p), (void)(n))
#endif
static _Thread_local struct {
    char *chunks[WQ_POOL_MAX];
    size_t n;
} pool;

static char *chunk_new(size_t cap)
{
    if (cap == WQ_CHUNK_MIN && pool.n > 0) {
        char *p = pool.chunks[--pool.n];
        WQ_UNPOISON(p, cap);
        return p;
    }
    return xmalloc(cap);
}

static void chunk_free(char *p, size_t cap)
{
    if (p != NULL && cap == WQ_CHUNK_MIN && pool.n < WQ_POOL_MAX) {
        WQ_POISON(p, cap);
        pool.chunks[pool.n++] = p;
    } else
        free(p);
}

static struct wq_item *wq_at(struct wq *q, size_t i)
{
    return &q->items[(q->head + i) % q->cap];
}

static const char *item_data(const struct wq_item *it)
{
    return it->rb ? it->rb->data : it->own;
}

static struct wq_item *wq_push(struct wq *q)
{
    if (q->count == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 8;
        struct wq_item *n = xreallocarray(NULL, ncap, sizeof(*n));
        for (size_t i = 0; i < q->count; i++)
            n[i] = *wq_at(q, i);
        free(q->items);
        q->items = n;
        q->head = 0;
        q->cap = ncap;
    }
    struct wq_item *it = wq_at(q, q->count++);
    memset(it, 0, sizeof(*it));
    return it;
}

static void wq_pop(struct wq *q)
{
    struct wq_item *it = wq_at(q, 0);
    rbuf_unref(it->rb);
    chunk_free(it->own, it->cap);
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

static void wq_free(struct wq *q)
{
    while (q->count)
        wq_pop(q);
    free(q->items);
    memset(q, 0, sizeof(*q));
}

/*
 * Room for n more bytes at the end of q, appended to the last owned chunk
 * when it is not among the first `keep` items (those in flight) and the
 * chunk stays under WQ_CHUNK_MAX. The caller fills all n bytes.
 */
static char *wq_reserve(struct wq *q, size_t keep, size_t n)
{
    if (q->count > keep) {
        struct wq_item *t = wq_at(q, q->count - 1);
        if (t->own != NULL && t->len + n <= WQ_CHUNK_MAX) {
            if (t->len + n > t->cap) {
                size_t ncap = t->cap * 2;
                if (ncap < t->len + n)
                    ncap = t->len + n;
                if (ncap > WQ_CHUNK_MAX)
                    ncap = WQ_CHUNK_MAX;
                t->own = xrealloc(t->own, ncap);
                t->cap = ncap;
            }
            char *p = t->own + t->len;
            t->len += n;
            return p;
        }
    }
    struct wq_item *it = wq_push(q);
    it->cap = n < WQ_CHUNK_MIN ? WQ_CHUNK_MIN : n;
    it->own = chunk_new(it->cap);
    it->len = n;
    return it->own;
}

/* The queue new output goes to, and the items of it that must stay put. */
static struct wq *out_queue(struct stream *s, size_t *keep)
{
    if (s->ssl != NULL) {
        *keep = 0;
        return &s->plain;
    }
    *keep = s->writing ? s->inflight : 0;
    return &s->wire;
}

/* ---- reading, timers, pressure ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    /* One loop per thread, and a read buffer is consumed before the next
     * is asked for: one buffer per thread serves every stream. */
    static _Thread_local char read_buf[STREAM_READ_MAX];
    struct stream *s = h->data;
    buf->base = read_buf;
    buf->len = s->opts.read_cap;
}

static void on_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf);

static void update_reading(struct stream *s)
{
    int want;
    if (s->state == ST_OPEN)
        want = !s->eof && !s->failed && !s->owner_paused &&
               !(s->congested && !s->opts.read_while_congested);
    else
        want = s->state == ST_CLOSING && !s->eof;
    if (want && !s->reading) {
        if (uv_read_start(&s->io.stream, on_alloc, on_read) == 0) {
            s->reading = 1;
            /* Time spent not reading is not idleness of the peer. */
            s->last_rx = uv_now(s->loop);
            if (s->opts.idle_ms)
                timer_rearm(s);
        }
    } else if (!want && s->reading) {
        uv_read_stop(&s->io.stream);
        s->reading = 0;
    }
}

static void on_timer(uv_timer_t *t);

/* Arm the one timer for the earliest of the deadlines in force. Reads only
 * move last_rx; on_timer notices and re-arms, so reads cost no timer work. */
static void timer_rearm(struct stream *s)
{
    if (s->state == ST_CLOSED)
        return;
    uint64_t next = UINT64_MAX;
    if (s->state == ST_CLOSING) {
        next = s->close_deadline;
    } else {
        if (s->hs_deadline)
            next = s->hs_deadline;
        if (s->opts.idle_ms && s->reading && s->last_rx + s->opts.idle_ms < next)
            next = s->last_rx + s->opts.idle_ms;
        if (s->state == ST_OPEN && s->opts.hibernate_ms && !s->asleep &&
            s->last_rx + s->opts.hibernate_ms < next)
            next = s->last_rx + s->opts.hibernate_ms;
    }
    if (next == UINT64_MAX) {
        uv_timer_stop(&s->timer);
        return;
    }
    uint64_t now = uv_now(s->loop);
    uv_timer_start(&s->timer, on_timer, next > now ? next - now : 0, 0);
}

static void on_prepare(uv_prepare_t *h)
{
    flush(h->data);
}

static void schedule_flush(struct stream *s)
{
    if (!s->flush_on && s->state != ST_CLOSED) {
        uv_prepare_start(&s->flusher, on_prepare);
        s->flush_on = 1;
    }
}

/* Enter or leave the congested state after queued changed. Reading stops
 * at once; the owner hears of it from the flush. */
static void pressure_update(struct stream *s)
{
    if (!s->congested && s->queued > s->opts.out_high) {
        s->congested = 1;
        update_reading(s);
        schedule_flush(s);
    } else if (s->congested && s->queued <= s->opts.out_low) {
        s->congested = 0;
        update_reading(s);
    }
}

/* ---- errors ---- */

/*
 * The stream is broken: stop reading, tell the owner, and close the way
 * the error allows if the owner did not. Reported once.
 */
static void stream_fail(struct stream *s, int err, enum xml_stream_err cond, const char *text)
{
    if (s->state == ST_CLOSING) {
        /* The owner is done with the stream. Bad input only stops the
         * delivery: what is queued (stanzas already accepted, our
         * </stream:stream>) still leaves, within close_ms. */
        if (err == ERR_PARSE)
            s->failed = 1;
        else
            hard_close(s);
        return;
    }
    if ((s->state != ST_OPEN && s->state != ST_CONNECTING) || s->failed)
        return;
    s->failed = 1;
    update_reading(s);
    log_debug("stream %p: %s (%s)", (void *)s, text ? text : "", err_str(err));
    if (s->cbs.on_error != NULL)
        s->cbs.on_error(s, s->arg, err, cond, text);
    if (s->state != ST_OPEN && s->state != ST_CONNECTING)
        return;
    if (err == ERR_CLOSED)
        stream_close(s);
    else if (cond != XML_SE_NONE && s->state == ST_OPEN && err != ERR_IO && err != ERR_TLS)
        stream_error(s, cond, NULL);
    else
        stream_abort(s);
}

/* A socket write failed or the peer reset the connection. */
static void transport_error(struct stream *s, int uverr)
{
    if (s->state == ST_CLOSING)
        hard_close(s);
    else
        stream_fail(s, ERR_IO, XML_SE_NONE, uv_strerror(uverr));
}

static void tls_error(struct stream *s, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char msg[256];
    if (e != 0)
        ERR_error_string_n(e, msg, sizeof(msg));
    else
        snprintf(msg, sizeof(msg), "%s failed", what);
    ERR_clear_error();
    if (s->state == ST_CLOSING)
        hard_close(s);
    else
        stream_fail(s, ERR_TLS, XML_SE_NONE, msg);
}

static void handle_eof(struct stream *s)
{
    s->eof = 1;
    update_reading(s);
    if (s->state == ST_CLOSING) {
        if (s->shutdown_done)
            hard_close(s);
        return;
    }
    stream_fail(s, ERR_CLOSED, XML_SE_NONE, "connection closed by peer");
}

/* ---- parser callbacks: pass through while the owner listens ---- */

static int delivering(const struct stream *s)
{
    return !s->failed && (s->state == ST_OPEN || (s->state == ST_CLOSING && s->draining));
}

static void p_on_stream_open(void *arg, struct xml_node *hdr)
{
    struct stream *s = arg;
    if (delivering(s) && s->cbs.on_stream_open != NULL)
        s->cbs.on_stream_open(s, s->arg, hdr);
    else
        xml_free(hdr);
}

static void p_on_element(void *arg, struct xml_node *stanza, const char *raw, size_t rawlen)
{
    struct stream *s = arg;
    if (delivering(s) && s->cbs.on_element != NULL)
        s->cbs.on_element(s, s->arg, stanza, raw, rawlen);
    else
        xml_free(stanza);
}

static void p_on_stream_close(void *arg)
{
    struct stream *s = arg;
    if (delivering(s) && s->cbs.on_stream_close != NULL)
        s->cbs.on_stream_close(s, s->arg);
}

static void p_on_error(void *arg, enum xml_stream_err cond, const char *text)
{
    stream_fail(arg, ERR_PARSE, cond, text);
}

static const struct xml_parser_cbs parser_cbs = {
    .on_stream_open = p_on_stream_open,
    .on_element = p_on_element,
    .on_stream_close = p_on_stream_close,
    .on_error = p_on_error,
};

/* ---- input ---- */

static void deliver(struct stream *s, const char *p, size_t n)
{
    if (delivering(s))
        xml_parser_feed(s->parser, p, n);
}

/* SSL_get_error needs an empty error queue before each SSL_* I/O call.
 * The queue is almost always empty already (tls_error empties it), and
 * peeking costs less than clearing all of its slots, once per record. */
static void tls_errors_clear(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* One handshake step. Returns 1 when done, 0 for more input, -1 failed. */
static int tls_handshake(struct stream *s)
{
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (s->tls_out)
        schedule_flush(s);
    if (r == 1) {
        s->secure = 1;
        schedule_flush(s); /* plaintext queued during the handshake */
        if (s->cbs.on_secure != NULL && delivering(s))
            s->cbs.on_secure(s, s->arg);
        return delivering(s) ? 1 : -1;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    tls_error(s, "TLS handshake");
    return -1;
}

static void tls_read_all(struct stream *s)
{
    static _Thread_local char plain[TLS_PLAIN_MAX];
    if (!s->secure && tls_handshake(s) != 1)
        return;
    for (;;) {
        tls_errors_clear();
        int r = SSL_read(s->ssl, plain, sizeof(plain));
        if (r > 0) {
            deliver(s, plain, (size_t)r);
            /* Shared by every stream: the plaintext (a PLAIN password,
             * say) must not stay here until some later read. */
            mem_wipe(plain, (size_t)r);
            if (!delivering(s))
                return;
            /* All ciphertext taken and nothing buffered in OpenSSL: another
             * SSL_read could only say WANT_READ, after allocating and
             * freeing a 16 KiB record buffer (SSL_MODE_RELEASE_BUFFERS):
             * a wasted call for every stanza that arrives alone. */
            if (s->tls_in_len == 0 && !SSL_has_pending(s->ssl))
                break;
            continue;
        }
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        if (e == SSL_ERROR_ZERO_RETURN)
            handle_eof(s); /* close_notify */
        else
            tls_error(s, "SSL_read");
        return;
    }
    /* TLS 1.3 tickets and key updates are written while reading. */
    if (s->tls_out)
        schedule_flush(s);
}

/* Ciphertext from the socket: OpenSSL reads it through stream_bio while
 * tls_read_all runs, and takes all of it unless the stream fails or
 * closes (then the rest does not matter). */
static void tls_input(struct stream *s, const char *p, size_t n)
{
    s->tls_in = p;
    s->tls_in_len = n;
    tls_read_all(s);
    s->tls_in = NULL;
    s->tls_in_len = 0;
}

static void on_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf)
{
    struct stream *s = h->data;
    if (n == 0)
        return;
    if (n < 0) {
        if (n == UV_EOF)
            handle_eof(s);
        else
            transport_error(s, (int)n);
        return;
    }
    s->stats.bytes_in += (uint64_t)n;
    s->last_rx = uv_now(s->loop);
    if (s->asleep) {
        /* The parser wakes by itself when fed; the timer is re-armed for
         * the next quiet spell. */
        s->asleep = 0;
        s->parser_asleep = 0;
        timer_rearm(s);
    }
    if (s->cbs.on_read != NULL && delivering(s))
        s->cbs.on_read(s, s->arg, (size_t)n);
    if (!delivering(s))
        return; /* closing: read only to see the peer's EOF */
    if (s->ssl != NULL)
        tls_input(s, buf->base, (size_t)n);
    else
        deliver(s, buf->base, (size_t)n);
}

/* Quiet for hibernate_ms: give back what an idle connection does not
 * need. Tried once per quiet spell: a peer that stopped in the middle of a
 * stanza keeps its parser until it sends again. */
static void hibernate(struct stream *s)
{
    s->asleep = 1;
    if (s->failed)
        return;
    s->parser_asleep = xml_parser_hibernate(s->parser) == 0;
    if (s->plain.count == 0)
        wq_free(&s->plain);
    if (s->wire.count == 0 && !s->writing)
        wq_free(&s->wire);
}

static void on_timer(uv_timer_t *t)
{
    struct stream *s = t->data;
    uint64_t now = uv_now(s->loop);
    if (s->state == ST_CLOSING) {
        if (now >= s->close_deadline) {
            log_debug("stream %p: close timed out", (void *)s);
            hard_close(s);
            return;
        }
    } else if (s->hs_deadline && now >= s->hs_deadline) {
        stream_fail(s, ERR_TIMEOUT, XML_SE_CONNECTION_TIMEOUT, "handshake timeout");
        return;
    } else if (s->opts.idle_ms && s->reading && now - s->last_rx >= s->opts.idle_ms) {
        stream_fail(s, ERR_TIMEOUT, XML_SE_CONNECTION_TIMEOUT, "idle timeout");
        return;
    }
    if (s->state == ST_OPEN && s->opts.hibernate_ms && !s->asleep &&
        now - s->last_rx >= s->opts.hibernate_ms)
        hibernate(s);
    timer_rearm(s);
}

/* ---- output ---- */

/* Gather up to STREAM_IOV_MAX unwritten pieces of wire; returns the count. */
static size_t build_iov(struct wq *q, uv_buf_t *iov, size_t *total)
{
    size_t k = q->count < STREAM_IOV_MAX ? q->count : STREAM_IOV_MAX;
    *total = 0;
    for (size_t i = 0; i < k; i++) {
        struct wq_item *it = wq_at(q, i);
        iov[i] = uv_buf_init((char *)item_data(it) + it->off, (unsigned)(it->len - it->off));
        *total += it->len - it->off;
    }
    return k;
}

/* n bytes of wire went to the kernel. */
static void wire_consume(struct stream *s, size_t n)
{
    s->stats.bytes_out += n;
    s->queued -= n;
    while (n > 0) {
        struct wq_item *it = wq_at(&s->wire, 0);
        size_t left = it->len - it->off;
        if (n < left) {
            it->off += n;
            return;
        }
        n -= left;
        wq_pop(&s->wire);
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct stream *s = req->data;
    size_t done = 0;
    free(req);
    s->wreq = NULL;
    s->writing = 0;
    if (s->state == ST_CLOSED)
        return; /* cancelled by hard_close; items are freed with the stream */
    if (status < 0) {
        transport_error(s, status);
        return;
    }
    for (size_t i = 0; i < s->inflight; i++) {
        struct wq_item *it = wq_at(&s->wire, i);
        done += it->len - it->off;
    }
    s->inflight = 0;
    wire_consume(s, done);
    flush(s);
}

/* Write wire: try_write while the kernel takes whole batches, then one
 * uv_write for the rest. Returns -1 if the stream failed. */
static int write_some(struct stream *s)
{
    uv_buf_t iov[STREAM_IOV_MAX];
    size_t total, k;
    for (;;) {
        k = build_iov(&s->wire, iov, &total);
        int n = uv_try_write(&s->io.stream, iov, (unsigned)k);
        s->stats.writes++;
        if (n == UV_EAGAIN)
            n = 0;
        if (n < 0) {
            transport_error(s, n);
            return -1;
        }
        wire_consume(s, (size_t)n);
        if ((size_t)n < total)
            break;
        if (s->wire.count == 0)
            return 0;
    }
    k = build_iov(&s->wire, iov, &total);
    s->wreq = xmalloc(sizeof(*s->wreq));
    s->wreq->data = s;
    int r = uv_write(s->wreq, &s->io.stream, iov, (unsigned)k, on_write);
    s->stats.writes++;
    if (r < 0) {
        free(s->wreq);
        s->wreq = NULL;
        transport_error(s, r);
        return -1;
    }
    s->writing = 1;
    s->inflight = k;
    return 0;
}

/* Encrypt everything in plain (handshake done). Returns -1 if failed. */
static int tls_encrypt(struct stream *s)
{
    while (s->plain.count > 0) {
        struct wq_item *it = wq_at(&s->plain, 0);
        size_t left = it->len - it->off;
        tls_errors_clear();
        int r = SSL_write(s->ssl, item_data(it) + it->off, left > INT_MAX ? INT_MAX : (int)left);
        if (r <= 0) {
            tls_error(s, "SSL_write");
            return -1;
        }
        s->queued -= (size_t)r;
        it->off += (size_t)r;
        if (it->off == it->len)
            wq_pop(&s->plain);
    }
    return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct stream *s = req->data;
    if (s->state == ST_CLOSED)
        return;
    s->shutdown_done = 1;
    if (status < 0 || s->eof)
        hard_close(s);
}

/* Closing: once everything is out, shut the socket down for writing. */
static void close_step(struct stream *s)
{
    if (s->writing || s->wire.count > 0 || (s->secure && s->plain.count > 0) || s->shutdown_sent)
        return;
    s->shutdown_sent = 1;
    if (uv_shutdown(&s->sreq, &s->io.stream, on_shutdown) < 0)
        hard_close(s);
}

static void flush(struct stream *s)
{
    uv_prepare_stop(&s->flusher);
    s->flush_on = 0;
    if (s->state == ST_CONNECTING || s->state == ST_CLOSED)
        return;
    if (s->ssl != NULL) {
        if (s->role == STREAM_TLS_CLIENT && !s->hs_started) {
            s->hs_started = 1;
            if (tls_handshake(s) < 0)
                return;
        }
        if (s->secure) {
            if (tls_encrypt(s) < 0)
                return;
            if (s->state == ST_CLOSING && !s->notify_sent) {
                s->notify_sent = 1;
                ERR_clear_error();
                SSL_shutdown(s->ssl);
            }
        }
        /* Whatever OpenSSL wrote (now or since the last flush) is in wire
         * and goes out below: no need for another flush because of it. */
        s->tls_out = 0;
    }
    if (!s->writing && s->wire.count > 0 && write_some(s) < 0)
        return;
    pressure_update(s);
    if (s->congested != s->reported && delivering(s)) {
        s->reported = s->congested;
        if (s->cbs.on_pressure != NULL)
            s->cbs.on_pressure(s, s->arg, s->congested);
    }
    if (s->state == ST_CLOSING)
        close_step(s);
}

static int enqueue_check(struct stream *s, size_t len)
{
    if (s->state == ST_CLOSING || s->state == ST_CLOSED || s->failed)
        return ERR_CLOSED;
    if (len > s->opts.out_max || s->queued > s->opts.out_max - len)
        return ERR_AGAIN;
    return 0;
}

/* Queue bytes, bypassing the cap (stream errors). */
static void enqueue_copy(struct stream *s, const void *p, size_t len)
{
    size_t keep;
    struct wq *q = out_queue(s, &keep);
    memcpy(wq_reserve(q, keep, len), p, len);
    s->queued += len;
    pressure_update(s);
    schedule_flush(s);
}

int stream_write(struct stream *s, const void *p, size_t len)
{
    int rc = enqueue_check(s, len);
    if (rc == 0 && len > 0)
        enqueue_copy(s, p, len);
    return rc;
}

int stream_write_str(struct stream *s, const char *str)
{
    return stream_write(s, str, strlen(str));
}

int stream_write_rbuf(struct stream *s, struct rbuf *rb)
{
    int rc = enqueue_check(s, rb->len);
    if (rc != 0 || rb->len == 0)
        return rc;
    size_t keep;
    struct wq_item *it = wq_push(out_queue(s, &keep));
    it->rb = rbuf_ref(rb);
    it->len = rb->len;
    s->queued += rb->len;
    pressure_update(s);
    schedule_flush(s);
    return 0;
}

int stream_congested(const struct stream *s)
{
    return s->congested;
}

/* ---- creation and closing ---- */

void stream_opts_default(struct stream_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->read_cap = 16 * 1024;
    o->out_high = 256 * 1024;
    o->out_low = 64 * 1024;
    o->out_max = 1024 * 1024;
    o->handshake_ms = 30000;
    o->idle_ms = 0;
    o->close_ms = 5000;
    o->hibernate_ms = 0;
    xml_limits_default(&o->limits);
}

static struct stream *stream_alloc(uv_loop_t *loop, int is_unix, const struct stream_opts *opts,
                                   const struct stream_cbs *cbs, void *arg)
{
    struct stream *s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->is_unix = is_unix;
    s->state = ST_CONNECTING;
    if (opts != NULL)
        s->opts = *opts;
    else
        stream_opts_default(&s->opts);
    if (s->opts.read_cap == 0 || s->opts.read_cap > STREAM_READ_MAX)
        s->opts.read_cap = STREAM_READ_MAX;
    if (s->opts.out_low > s->opts.out_high)
        s->opts.out_low = s->opts.out_high;
    if (cbs != NULL)
        s->cbs = *cbs;
    s->arg = arg;
    s->parser = xml_parser_new(&s->opts.limits, &parser_cbs, s);
    if (is_unix)
        uv_pipe_init(loop, &s->io.pipe, 0);
    else
        uv_tcp_init(loop, &s->io.tcp);
    uv_timer_init(loop, &s->timer);
    uv_prepare_init(loop, &s->flusher);
    s->io.handle.data = s;
    s->timer.data = s;
    s->flusher.data = s;
    s->creq.data = s;
    s->sreq.data = s;
    if (s->opts.handshake_ms)
        s->hs_deadline = uv_now(loop) + s->opts.handshake_ms;
    return s;
}

/* Creation failed after the handles were set up: close them, tell nobody. */
static void discard(struct stream *s)
{
    memset(&s->cbs, 0, sizeof(s->cbs));
    hard_close(s);
}

static void stream_opened(struct stream *s)
{
    s->state = ST_OPEN;
    if (!s->is_unix)
        uv_tcp_nodelay(&s->io.tcp, 1);
    update_reading(s);
    timer_rearm(s);
    schedule_flush(s);
}

int stream_accept(uv_stream_t *server, const struct stream_opts *opts, const struct stream_cbs *cbs,
                  void *arg, struct stream **out)
{
    struct stream *s = stream_alloc(server->loop, server->type == UV_NAMED_PIPE, opts, cbs, arg);
    int r = uv_accept(server, &s->io.stream);
    if (r < 0) {
        /* Debug only: out of descriptors this repeats for every pending
         * connection; the owner rate-limits its own warning. */
        log_debug("accept failed: %s", uv_strerror(r));
        discard(s);
        *out = NULL;
        return ERR_IO;
    }
    stream_opened(s);
    *out = s;
    return 0;
}

static void on_connected(uv_connect_t *req, int status)
{
    struct stream *s = req->data;
    if (s->state != ST_CONNECTING)
        return; /* closed while connecting */
    if (status < 0) {
        stream_fail(s, ERR_IO, XML_SE_NONE, uv_strerror(status));
        return;
    }
    stream_opened(s);
    if (s->cbs.on_connect != NULL)
        s->cbs.on_connect(s, s->arg);
}

int stream_connect_tcp(uv_loop_t *loop, const struct sockaddr *addr, const struct stream_opts *opts,
                       const struct stream_cbs *cbs, void *arg, struct stream **out)
{
    *out = NULL;
    if (addr == NULL || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return ERR_INVAL;
    struct stream *s = stream_alloc(loop, 0, opts, cbs, arg);
    int r = uv_tcp_connect(&s->creq, &s->io.tcp, addr, on_connected);
    if (r < 0) {
        log_info("connect failed: %s", uv_strerror(r));
        discard(s);
        return ERR_IO;
    }
    timer_rearm(s);
    *out = s;
    return 0;
}

int stream_connect_unix(uv_loop_t *loop, const char *path, const struct stream_opts *opts,
                        const struct stream_cbs *cbs, void *arg, struct stream **out)
{
    *out = NULL;
    if (path == NULL || *path == '\0')
        return ERR_INVAL;
    struct stream *s = stream_alloc(loop, 1, opts, cbs, arg);
    uv_pipe_connect(&s->creq, &s->io.pipe, path, on_connected);
    timer_rearm(s);
    *out = s;
    return 0;
}

int stream_adopt_fd(uv_loop_t *loop, uv_os_sock_t fd, int is_unix, const struct stream_opts *opts,
                    const struct stream_cbs *cbs, void *arg, struct stream **out)
{
    struct stream *s = stream_alloc(loop, is_unix, opts, cbs, arg);
    int r = is_unix ? uv_pipe_open(&s->io.pipe, fd) : uv_tcp_open(&s->io.tcp, fd);
    if (r < 0) {
        log_info("cannot adopt socket %d: %s", (int)fd, uv_strerror(r));
        close(fd);
        discard(s);
        *out = NULL;
        return ERR_IO;
    }
    stream_opened(s);
    *out = s;
    return 0;
}

void stream_set_owner(struct stream *s, const struct stream_cbs *cbs, void *arg)
{
    if (cbs != NULL)
        s->cbs = *cbs;
    else
        memset(&s->cbs, 0, sizeof(s->cbs));
    s->arg = arg;
}

static void on_closed(uv_handle_t *h)
{
    struct stream *s = h->data;
    if (--s->pending_closes > 0)
        return;
    if (s->cbs.on_close != NULL)
        s->cbs.on_close(s, s->arg);
    wq_free(&s->wire);
    wq_free(&s->plain);
    SSL_free(s->ssl);
    xml_parser_free(s->parser);
    free(s);
}

static void hard_close(struct stream *s)
{
    if (s->state == ST_CLOSED)
        return;
    s->state = ST_CLOSED;
    s->reading = 0;
    s->pending_closes = 3;
    /* Closing the socket cancels a pending connect, write or shutdown;
     * their callbacks run (with UV_ECANCELED) before on_closed. */
    uv_close(&s->io.handle, on_closed);
    uv_close((uv_handle_t *)&s->timer, on_closed);
    uv_close((uv_handle_t *)&s->flusher, on_closed);
}

void stream_abort(struct stream *s)
{
    if (s != NULL)
        hard_close(s);
}

void stream_close(struct stream *s)
{
    if (s == NULL || s->state == ST_CLOSING || s->state == ST_CLOSED)
        return;
    if (s->state == ST_CONNECTING) {
        hard_close(s);
        return;
    }
    s->state = ST_CLOSING;
    s->draining = 1;
    s->close_deadline = uv_now(s->loop) + s->opts.close_ms;
    update_reading(s);
    timer_rearm(s);
    schedule_flush(s);
}

void stream_error(struct stream *s, enum xml_stream_err cond, const char *text)
{
    if (s == NULL || s->state == ST_CLOSING || s->state == ST_CLOSED)
        return;
    if (s->state == ST_CONNECTING || (s->ssl != NULL && !s->secure)) {
        hard_close(s);
        return;
    }
    struct buf b = BUF_INIT;
    xml_stream_error(cond, text, &b);
    buf_append_str(&b, "</stream:stream>");
    enqueue_copy(s, b.data, b.len);
    buf_free(&b);
    stream_close(s);
    /* After a stream error nothing the peer sends matters any more. */
    s->draining = 0;
}

/* ---- TLS ---- */

/* stream_bio: OpenSSL's I/O for a stream (see the top of the file). */

static int sbio_write(BIO *b, const char *data, int len)
{
    struct stream *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    memcpy(wq_reserve(&s->wire, s->writing ? s->inflight : 0, (size_t)len), data, (size_t)len);
    s->queued += (size_t)len;
    s->tls_out = 1;
    return len;
}

static int sbio_read(BIO *b, char *out, int len)
{
    struct stream *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (s->tls_in_len == 0) {
        /* Not end of file: wait for the next read callback. */
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = (size_t)len < s->tls_in_len ? (size_t)len : s->tls_in_len;
    memcpy(out, s->tls_in, n);
    s->tls_in += n;
    s->tls_in_len -= n;
    return (int)n;
}

static long sbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    /* Writes land in wire at once, so there is never anything to flush
     * or pending inside the BIO; everything else is not supported. */
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int sbio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *sbio_method;

static void sbio_method_init(void)
{
    sbio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "parley stream");
    if (sbio_method == NULL || BIO_meth_set_write(sbio_method, sbio_write) != 1 ||
        BIO_meth_set_read(sbio_method, sbio_read) != 1 ||
        BIO_meth_set_ctrl(sbio_method, sbio_ctrl) != 1 ||
        BIO_meth_set_create(sbio_method, sbio_create) != 1)
        fatal("cannot create the stream BIO method");
}

static BIO *stream_bio(struct stream *s)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sbio_method_init);
    BIO *b = BIO_new(sbio_method);
    if (b != NULL)
        BIO_set_data(b, s);
    return b;
}

int stream_starttls(struct stream *s, SSL_CTX *ctx, enum stream_tls_role role,
                    const char *servername)
{
    if (s->ssl != NULL || s->failed || (s->state != ST_OPEN && s->state != ST_CONNECTING))
        return ERR_BADSTATE;
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    BIO *bio = stream_bio(s);
    if (ssl == NULL || bio == NULL) {
        tls_log_errors("stream_starttls");
        SSL_free(ssl);
        BIO_free(bio);
        return ERR_TLS;
    }
    /* One BIO for both directions: the SSL takes the one reference. */
    SSL_set_bio(ssl, bio, bio);
    SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    if (role == STREAM_TLS_CLIENT) {
        SSL_set_connect_state(ssl);
        if (servername != NULL && (SSL_set_tlsext_host_name(ssl, servername) != 1 ||
                                   SSL_set1_host(ssl, servername) != 1)) {
            tls_log_errors("stream_starttls");
            SSL_free(ssl);
            return ERR_TLS;
        }
    } else {
        SSL_set_accept_state(ssl);
    }
    s->ssl = ssl;
    s->role = role;
    /* The plaintext stream ends here (RFC 6120 §5.4.3.3): whatever
     * followed <starttls/> or <proceed/> in this read is dropped. */
    xml_parser_reset(s->parser);
    if (role == STREAM_TLS_CLIENT)
        schedule_flush(s); /* the ClientHello is made by the flush */
    return 0;
}

int stream_is_tls(const struct stream *s)
{
    return s->ssl != NULL;
}

int stream_is_secure(const struct stream *s)
{
    return s->secure;
}

SSL *stream_ssl(const struct stream *s)
{
    return s->ssl;
}

const char *stream_tls_servername(const struct stream *s)
{
    if (s->ssl == NULL || s->role != STREAM_TLS_SERVER)
        return NULL;
    return SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name);
}

int stream_alpn(const struct stream *s, char *out, size_t outlen)
{
    if (s->ssl == NULL || !s->secure)
        return ERR_NOTFOUND;
    return tls_alpn_get(s->ssl, out, outlen);
}

/* ---- the rest ---- */

void stream_restart(struct stream *s)
{
    s->parser_asleep = 0;
    xml_parser_reset(s->parser);
}

void stream_restart_limits(struct stream *s, const struct xml_limits *lim)
{
    /* A new parser, since the limits are fixed at its creation. Freeing
     * the old one from inside its callback stops its feed there, which
     * drops the rest of the chunk just as xml_parser_reset does. */
    s->opts.limits = *lim;
    s->parser_asleep = 0;
    xml_parser_free(s->parser);
    s->parser = xml_parser_new(&s->opts.limits, &parser_cbs, s);
}

const char *stream_content_ns(const struct stream *s)
{
    return xml_parser_content_ns(s->parser);
}

void stream_set_established(struct stream *s)
{
    s->hs_deadline = 0;
    timer_rearm(s);
}

void stream_set_close_ms(struct stream *s, uint64_t ms)
{
    s->opts.close_ms = ms;
}

void stream_pause(struct stream *s)
{
    s->owner_paused = 1;
    update_reading(s);
}

void stream_resume(struct stream *s)
{
    s->owner_paused = 0;
    update_reading(s);
}

void stream_stats(const struct stream *s, struct stream_stats *out)
{
    *out = s->stats;
    out->queued = s->queued;
    out->congested = s->congested;
    out->reading = s->reading;
    out->hibernating = s->parser_asleep;
}

uv_loop_t *stream_loop(const struct stream *s)
{
    return s->loop;
}

int stream_peer_addr(const struct stream *s, struct sockaddr_storage *addr)
{
    if (s->is_unix || s->state == ST_CLOSED)
        return ERR_INVAL;
    int len = (int)sizeof(*addr);
    return uv_tcp_getpeername(&s->io.tcp, (struct sockaddr *)addr, &len) == 0 ? 0 : ERR_IO;
}
