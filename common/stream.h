/*
 * stream.h - one XMPP connection: socket + optional TLS + parser + write queue.
 *
 * A struct stream owns a libuv TCP or Unix-domain handle (accepted,
 * connected, or adopted from a socket), an optional OpenSSL session (server
 * or client side, from the first byte or by STARTTLS),
 * the xml stream parser that incoming (decrypted) bytes are fed to, and a
 * queue of outgoing bytes. The owner (a c2s session, an s2s link, the
 * router's component) supplies callbacks and gets stanzas as trees.
 *
 * Ownership and lifetime: the stream belongs to its owner until the owner
 * calls stream_close / stream_error / stream_abort (or the stream closes
 * itself after an error the owner did not handle, see on_error). Its memory
 * is released only in libuv's close callback, right after on_close, which
 * is called exactly once for every stream that was created; after on_close
 * the pointer is dead. Until then the pointer stays valid, even inside
 * callbacks that closed the stream.
 *
 * Reentrancy: stream_* calls never call the owner's callbacks from inside
 * themselves. Callbacks run from libuv callbacks only (reads, write
 * completions, timers, and the flush that runs once per loop iteration).
 *
 * Output: stream_write* only queue bytes; the queue is flushed once per loop
 * iteration (a uv_prepare handle, i.e. just before the loop polls), so
 * everything written during one iteration leaves in one batch: a
 * uv_try_write of up to STREAM_IOV_MAX iovecs, and a uv_write for what the
 * kernel did not take. One uv_write is in flight at a time; buffers stay
 * referenced until it completes. With TLS the queued plaintext is encrypted
 * at flush time and the ciphertext written the same way.
 *
 * Backpressure: bytes queued but not yet written are counted. Above
 * out_high the stream stops reading from the peer (a client that does not
 * read cannot make us produce more for it) and reports it (on_pressure,
 * stream_congested); below out_low reading resumes. A write that would
 * take the queue past out_max fails with ERR_AGAIN and queues nothing: the
 * caller decides whether to bounce the stanza (c2s, s2s: a stanza error to
 * the sender) or to drop the connection (stream_error with
 * XML_SE_POLICY_VIOLATION or XML_SE_RESOURCE_CONSTRAINT). The stream itself
 * never closes because of a full queue.
 *
 * Everything runs on the loop the stream was created on; nothing blocks.
 */
#ifndef PARLEY_STREAM_H
#define PARLEY_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "common/tls.h"
#include "common/xml.h"

/* Most iovecs handed to one write call. */
#define STREAM_IOV_MAX 64
/* Largest read buffer (the read cap can only make it smaller). */
#define STREAM_READ_MAX (64 * 1024)

struct stream;

struct stream_opts {
    size_t read_cap; /* bytes handed to one read callback (default 16 KiB) */
    size_t out_high; /* stop reading above this many queued bytes (256 KiB) */
    size_t out_low;  /* resume reading at or below this (64 KiB) */
    size_t out_max;  /* writes beyond this fail with ERR_AGAIN (1 MiB) */
    /* Keep reading while over out_high (default 0). For relays that bounce
     * at out_max instead (the router): two relays that both stopped reading
     * towards each other would wait for each other forever. */
    int read_while_congested;
    uint64_t handshake_ms; /* until stream_set_established; 0 = none (30 s) */
    uint64_t idle_ms;      /* no bytes received while reading; 0 = none (0) */
    uint64_t close_ms;     /* flush + wait for the peer's EOF on close (5 s) */
    /* No byte from the peer for this long: hibernate the parser (see
     * xml_parser_hibernate) and free the empty queue arrays, about 14 KB
     * per connection, until the peer sends again; 0 = never (0). */
    uint64_t hibernate_ms;
    struct xml_limits limits;
};

void stream_opts_default(struct stream_opts *o);

/*
 * The owner's callbacks; any may be NULL. arg is the owner's pointer given
 * at creation (or by stream_set_owner). Every callback may close the
 * stream; none may free it.
 */
struct stream_cbs {
    /* An outgoing connect succeeded (a failed one reports on_error). */
    void (*on_connect)(struct stream *s, void *arg);
    /* The TLS handshake completed (stream_ssl now tells the peer's
     * certificate, SNI and ALPN). */
    void (*on_secure)(struct stream *s, void *arg);
    /* n bytes arrived from the socket (ciphertext with TLS), before they
     * are parsed: the place for byte budgets and rate limits that must
     * hold between elements too (whitespace, an element that never ends).
     * May close or pause the stream; bytes already read are still parsed
     * unless it closed. */
    void (*on_read)(struct stream *s, void *arg, size_t n);
    /* The parser's events (see xml.h for ownership of hdr and stanza). */
    void (*on_stream_open)(struct stream *s, void *arg, struct xml_node *hdr);
    void (*on_element)(struct stream *s, void *arg, struct xml_node *stanza, const char *raw,
                       size_t rawlen);
    void (*on_stream_close)(struct stream *s, void *arg);
    /*
     * The stream is broken; reading has stopped and nothing more will be
     * delivered. err says how: ERR_PARSE (bad XML or a parser limit; cond
     * is the stream error the parser chose), ERR_TIMEOUT
     * (handshake or idle timeout; cond is XML_SE_CONNECTION_TIMEOUT),
     * ERR_CLOSED (the peer closed the connection), ERR_IO (socket error or
     * failed connect), ERR_TLS (handshake or record failure). text is for
     * the log. If the owner has not closed the stream when on_error
     * returns, the stream does what fits the error: stream_error(cond) when
     * there is a condition and the transport is usable, stream_close after
     * ERR_CLOSED (flushes what is queued), stream_abort otherwise.
     */
    void (*on_error)(struct stream *s, void *arg, int err, enum xml_stream_err cond,
                     const char *text);
    /* The output queue crossed out_high (congested 1) or fell back to
     * out_low (congested 0). Called from the flush, never from a write. */
    void (*on_pressure)(struct stream *s, void *arg, int congested);
    /* The connection is gone; the last callback. */
    void (*on_close)(struct stream *s, void *arg);
};

struct stream_stats {
    uint64_t bytes_in;  /* from the socket (ciphertext with TLS) */
    uint64_t bytes_out; /* to the socket */
    uint64_t writes;    /* write calls issued: uv_try_write + uv_write */
    size_t queued;      /* bytes queued, not yet written */
    int congested;      /* over out_high, not yet back to out_low */
    int reading;        /* reading from the socket right now */
    int hibernating;    /* the parser is hibernating (see hibernate_ms) */
};

/*
 * Create a stream for the next connection on a listening TCP or pipe
 * handle (call from its connection callback). opts NULL: defaults. The
 * stream starts reading at once. Returns 0 and *out, or ERR_IO.
 */
int stream_accept(uv_stream_t *server, const struct stream_opts *opts, const struct stream_cbs *cbs,
                  void *arg, struct stream **out);

/*
 * Connect to a TCP address or a Unix socket path. On success *out is the
 * new stream, which reports on_connect or on_error later; on failure to
 * even start (ERR_INVAL, ERR_IO) no stream exists.
 */
int stream_connect_tcp(uv_loop_t *loop, const struct sockaddr *addr, const struct stream_opts *opts,
                       const struct stream_cbs *cbs, void *arg, struct stream **out);
int stream_connect_unix(uv_loop_t *loop, const char *path, const struct stream_opts *opts,
                        const struct stream_cbs *cbs, void *arg, struct stream **out);

/*
 * Adopt a connected socket (TCP when is_unix is 0, else Unix-domain); the
 * stream owns it from now on, also on failure (it is closed then).
 */
int stream_adopt_fd(uv_loop_t *loop, uv_os_sock_t fd, int is_unix, const struct stream_opts *opts,
                    const struct stream_cbs *cbs, void *arg, struct stream **out);

/* Hand the stream to another owner (a listener passing it to a session). */
void stream_set_owner(struct stream *s, const struct stream_cbs *cbs, void *arg);

/* ---- TLS ---- */

enum stream_tls_role { STREAM_TLS_SERVER, STREAM_TLS_CLIENT };

/*
 * Start TLS on this connection with a new SSL from ctx. For direct TLS
 * call it right after creation (or in on_connect). For STARTTLS:
 *  - server: in the on_element handler of <starttls/>, queue <proceed/>
 *    with stream_write, then call stream_starttls. The <proceed/> bytes
 *    were queued first and leave in plaintext; everything queued after
 *    this call is encrypted. The parser is reset, so plaintext that
 *    followed <starttls/> in the same read is discarded (never parsed);
 *    later bytes go to TLS (where injected plaintext fails the handshake).
 *  - client: in the on_element handler of <proceed/>; queue the new stream
 *    header right after, it is held until the handshake is done.
 * servername (client: SNI and the name the chain is checked against;
 * server: ignored) may be NULL. Returns 0, ERR_BADSTATE if TLS is already on
 * or the stream is closing, ERR_TLS.
 */
int stream_starttls(struct stream *s, SSL_CTX *ctx, enum stream_tls_role role,
                    const char *servername);
int stream_is_tls(const struct stream *s);
/* 1 once the handshake completed. */
int stream_is_secure(const struct stream *s);
/* The SSL of the connection (peer certificate, channel binding), or NULL. */
SSL *stream_ssl(const struct stream *s);
/* Server side: the SNI name the client sent, or NULL. */
const char *stream_tls_servername(const struct stream *s);
/* The negotiated ALPN protocol; see tls_alpn_get. */
int stream_alpn(const struct stream *s, char *out, size_t outlen);

/* ---- parser and timers ---- */

/* Expect a new stream header (after SASL success); see xml_parser_reset. */
void stream_restart(struct stream *s);
/* The same with other parser limits from now on (c2s keeps small limits
 * before authentication and raises them at the restart after SASL). */
void stream_restart_limits(struct stream *s, const struct xml_limits *lim);
/* The default namespace of the peer's current stream header ("" if none
 * yet), e.g. "jabber:client"; see xml_parser_content_ns. */
const char *stream_content_ns(const struct stream *s);
/* The stream is set up (authenticated, bound): stop the handshake timer. */
void stream_set_established(struct stream *s);
/* This stream's close_ms from now on (e.g. short for a refused peer). */
void stream_set_close_ms(struct stream *s, uint64_t ms);

/* ---- input ---- */

/*
 * Stop / resume reading (rate limiting). Elements already read in the
 * current chunk (at most read_cap bytes) are still delivered after a
 * pause called from a callback. Pauses nest with backpressure: reading
 * runs only when neither holds it.
 */
void stream_pause(struct stream *s);
void stream_resume(struct stream *s);

/* ---- output ---- */

/* Queue a copy of p[0..len). Returns 0, ERR_AGAIN (over out_max, nothing
 * queued), ERR_CLOSED (closing or closed). */
int stream_write(struct stream *s, const void *p, size_t len);
int stream_write_str(struct stream *s, const char *str);
/* Queue a reference to rb (the stream takes its own reference; the
 * caller keeps and drops its own). Same returns as stream_write. */
int stream_write_rbuf(struct stream *s, struct rbuf *rb);
/* 1 when over out_high (see on_pressure). */
int stream_congested(const struct stream *s);

/* ---- closing ---- */

/*
 * Flush what is queued (TLS: then close_notify), shut the socket down for
 * writing, then close once the peer closes its side or close_ms passed.
 * Writes fail from now on, but what the peer still sends is delivered
 * (on_element, on_stream_close) until it closes, as RFC 6120 §4.4 asks of
 * the side that closed first; errors then end the connection without
 * on_error. The owner writes </stream:stream> itself before this if its
 * stream is open. Before a connect completed this is stream_abort.
 * Idempotent.
 */
void stream_close(struct stream *s);
/*
 * Queue <stream:error><cond/>[<text/>]</stream:error></stream:stream> and
 * stream_close, delivering nothing more to the owner. The owner must already have sent its stream
 * header (RFC 6120 §4.9.1.1 wants a header before the error). Closes without writing when TLS is
 * not up yet on a TLS stream.
 */
void stream_error(struct stream *s, enum xml_stream_err cond, const char *text);
/* Close now; queued output is dropped. Idempotent, also during stream_close. */
void stream_abort(struct stream *s);

/* ---- information ---- */

void stream_stats(const struct stream *s, struct stream_stats *out);
uv_loop_t *stream_loop(const struct stream *s);
/* Peer address of a TCP stream; ERR_INVAL for Unix sockets. */
int stream_peer_addr(const struct stream *s, struct sockaddr_storage *addr);

#endif
