/*
 * component.h - the client side of the router protocol (XEP-0114 plus
 * urn:parley:router), used by our own daemons and test components.
 *
 * A struct component keeps one connection to the router alive: it connects
 * (Unix socket path or TCP host:port, optionally direct TLS), opens a
 * jabber:component:accept stream to its name, answers the stream id with
 * the handshake hex(SHA-1(id + secret)), and for internal components sends
 * the configured <r:bind/> requests and waits for their answers. Then it
 * reports on_ready. After any loss (or refusal) it reconnects with
 * exponential back-off and jitter, handshakes and binds again, and reports
 * on_ready again.
 *
 * Sending: component_send / component_route / component_send_raw write
 * straight to the router's stream while the component is ready. Before
 * that (or while disconnected) the stanza is queued, up to a cap in count
 * and bytes, and written in order right after the next on_ready. A send
 * larger than the router takes (opts.send_max) is refused at once
 * (ERR_LIMIT, logged): the router would end the connection for it.
 *
 * Delivery contract (the design decision for "queue up to a cap, then
 * bounce"): a send call returns 0 when the component took the stanza; a
 * stanza the component took is then either written to the router's stream
 * or handed back to the owner through on_bounce, exactly once, never
 * silently dropped. on_bounce runs later from the loop, never from inside
 * the send call, with the stanza as a tree the owner owns and a reason; the
 * owner turns it into the error reply to the original sender (see
 * component_bounce_reply) or drops it if it was itself an error. Reasons:
 * the queue was full, the stanza waited longer than queue_ms, the router's
 * stream was over its byte cap, or the component stopped. Stanzas written
 * to a stream that later broke are not bounced: the router may have
 * delivered them (the same uncertainty as any connection loss).
 *
 * Refusals: a not-authorized stream error (wrong secret, unknown name) or
 * host-unknown is a configuration problem, not a transient one: the next
 * attempt waits the maximum back-off, and the refusal is logged once per
 * episode (an episode ends with a successful handshake). Connection
 * failures are likewise logged once per episode, then at debug level.
 *
 * Lifetime: component_new, component_start, ..., component_stop (graceful:
 * closes the stream, bounces what is queued, then on_close), then
 * component_free (also from inside on_close). component_free at any other
 * time drops the connection and the queue without calling back; NULL is
 * fine. No callback runs after component_free returns.
 *
 * Reentrancy: component_* calls never call the owner's callbacks from
 * inside themselves. Callbacks run from libuv callbacks; any callback may
 * call component_send*, component_stop or component_free.
 *
 * Single-threaded: everything runs on the loop given to component_new;
 * nothing blocks (the TCP host name is resolved with uv_getaddrinfo).
 */
#ifndef PARLEY_COMPONENT_H
#define PARLEY_COMPONENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/stream.h"
#include "common/tls.h"
#include "common/xml.h"

#define COMPONENT_NS_ROUTER "urn:parley:router"

struct component;

/* A domain an internal component binds after each handshake. */
struct component_bind {
    const char *domain; /* NULL or "" with is_default: the default route only */
    int is_default;     /* sent as default='true': take the default route */
};

struct component_opts {
    const char *name;   /* stream to: the route name (required) */
    const char *secret; /* handshake secret (required; copied, wiped on free) */
    /* "unix:/path/to/router.sock" or "tcp:host:port" ("tcp:[::1]:5347"). */
    const char *router;
    int internal; /* declare urn:parley:router and send binds */
    const struct component_bind *binds;
    size_t nbinds;
    /* Direct TLS over TCP: a client context (tls_client_ctx_new) the
     * caller keeps alive; NULL for plaintext. tls_name is the name the
     * router's certificate is checked against (NULL: the host). */
    SSL_CTX *tls_ctx;
    const char *tls_name;
    /* Queue while not ready: at most this many stanzas and bytes
     * (defaults 1024 and 1 MiB); queue_ms is how long a stanza may wait
     * (default 30 s; 0 = no limit). */
    size_t queue_max;
    size_t queue_max_bytes;
    uint64_t queue_ms;
    /* Reconnect delay: backoff_min_ms doubling per failed attempt up to
     * backoff_max_ms (defaults 100 ms, 30 s), each randomised by ±20%. */
    uint64_t backoff_min_ms;
    uint64_t backoff_max_ms;
    /* The largest element the router takes (its <limits><stanza-size>,
     * default 256 KiB): a send whose bytes (with the r:route envelope) are
     * more is refused with ERR_LIMIT, since the router would end the whole
     * connection for it (policy-violation). */
    size_t send_max;
    /* The connection's options; handshake_ms bounds connect + handshake +
     * binds (default 10 s). */
    struct stream_opts stream;
};

void component_opts_default(struct component_opts *o);
/* The router takes and passes on elements up to max bytes (the daemon's
 * <limits><router-stanza-size>): sends are refused past it (send_max), and
 * the connection reads up to max and 4 KiB more (a stanza the router
 * returns carries an error attribute, a bounced one an <error/>), never
 * less than the parser's defaults. */
void component_opts_router_max(struct component_opts *o, size_t max);

/* Why a stanza came back through on_bounce. */
enum component_bounce {
    COMPONENT_BOUNCE_QUEUE_FULL, /* not ready and the queue was at its cap */
    COMPONENT_BOUNCE_EXPIRED,    /* waited longer than queue_ms */
    COMPONENT_BOUNCE_CONGESTED,  /* ready, but the router's stream was full */
    COMPONENT_BOUNCE_STOPPED,    /* component_stop with the stanza queued */
};

/* The owner's callbacks; any may be NULL. Trees handed over are the
 * callee's (xml_free). */
struct component_cbs {
    /* Handshake done and every bind answered: the queue has just been
     * written, sends go straight out. Called again after each reconnect. */
    void (*on_ready)(struct component *c, void *arg);
    /* The connection of a ready component was lost (routes and binds are
     * gone until the next on_ready). Not called for failed attempts. */
    void (*on_down)(struct component *c, void *arg);
    /* An element from the router after the handshake that the component
     * does not handle itself: stanzas, <r:route> envelopes (the owner
     * unwraps), <r:stats>. May come before on_ready while binds are
     * pending. raw/rawlen: the exact bytes, valid during the call. */
    void (*on_stanza)(struct component *c, void *arg, struct xml_node *stanza, const char *raw,
                      size_t rawlen);
    /* The answer to one configured bind: 0, ERR_EXISTS (conflict),
     * ERR_PERM (not-allowed) or ERR_INVAL (other error). domain is "" for
     * a default-route-only bind. */
    void (*on_bind_result)(struct component *c, void *arg, const char *domain, int err);
    /* <r:notify name=… owner=… state='up|down'/>: a route appeared or
     * vanished. owner is the component name the route belongs to (name
     * itself for a component's own name; "" if the router sent none). */
    void (*on_notify)(struct component *c, void *arg, const char *name, const char *owner, int up);
    /* Optional: each <r:bind> answer and <r:notify> as the router sent it,
     * just before on_bind_result / on_notify, for the attributes those do
     * not pass (a multi-instance route's ring: router/PROTOCOL.md). */
    void (*on_router_info)(struct component *c, void *arg, const struct xml_node *el);
    /* A stanza the component took but could not deliver (see above).
     * stanza is the stanza itself (unwrapped from <r:route>, whose to is
     * in route_to; NULL for a plain stanza). */
    void (*on_bounce)(struct component *c, void *arg, struct xml_node *stanza, const char *route_to,
                      enum component_bounce why);
    /* After component_stop: everything is closed; the last callback. */
    void (*on_close)(struct component *c, void *arg);
};

struct component_stats {
    uint64_t attempts;      /* connection attempts started */
    uint64_t handshakes;    /* successful handshakes */
    uint64_t refusals;      /* stream errors not-authorized / host-unknown */
    uint64_t failures;      /* attempts failed since the last handshake */
    uint64_t last_delay_ms; /* the last reconnect delay chosen (with jitter) */
    uint64_t sent;          /* stanzas written to the router's stream */
    uint64_t bounced;       /* stanzas handed to on_bounce (or dropped by free) */
    uint64_t refused;       /* sends refused as larger than send_max */
    size_t queued;          /* stanzas waiting for on_ready */
    size_t queued_bytes;
    int ready;
};

/*
 * A component on loop; opts is copied (strings too). Returns 0 and *out,
 * or ERR_CONFIG when opts is incomplete or the router address is not
 * "unix:…"/"tcp:host:port" (logged). Nothing happens until component_start.
 */
int component_new(uv_loop_t *loop, const struct component_opts *opts,
                  const struct component_cbs *cbs, void *arg, struct component **out);
/* Start connecting. Returns 0, or ERR_BADSTATE if started already. */
int component_start(struct component *c);

/*
 * Send a stanza (the caller keeps the tree): serialised in the
 * jabber:component:accept scope. Returns 0 (written or queued; may still
 * come back through on_bounce), ERR_CLOSED after component_stop, or
 * ERR_LIMIT when the bytes are more than opts.send_max: then nothing is
 * sent or queued, nothing comes back through on_bounce, and a warning with
 * the size and the limit is logged; the caller answers the sender.
 */
int component_send(struct component *c, const struct xml_node *stanza);
/* Send bytes that are one or more complete elements as the router's stream
 * scope expects them (our own serializer's output, e.g. an r:route received
 * and passed on). Same returns (send_max applies to all the bytes: send
 * one element per call). */
int component_send_raw(struct component *c, const void *p, size_t len);
/* Send stanza inside <r:route to='to' from='NAME'>: delivered to the
 * component named to. Internal components only: ERR_BADSTATE otherwise.
 * send_max applies to the envelope with the stanza (ERR_LIMIT). */
int component_route(struct component *c, const char *to, const struct xml_node *stanza);

/* 1 when ready (handshake and binds done, connection up). */
int component_is_ready(const struct component *c);
void component_stats(const struct component *c, struct component_stats *out);
const char *component_name(const struct component *c);

/*
 * Turn a bounced stanza into its error reply in place: service-unavailable
 * (type wait) for QUEUE_FULL and STOPPED, remote-server-timeout for
 * EXPIRED, resource-constraint (wait) for CONGESTED. Returns ERR_INVAL for
 * a stanza that must not be answered (an error itself); see xml_make_error.
 */
int component_bounce_reply(struct xml_node *stanza, enum component_bounce why);

/* Graceful stop: close the stream (</stream:stream>, flush), stop the
 * timers, bounce the queue (STOPPED), then on_close. Idempotent. */
void component_stop(struct component *c);
void component_free(struct component *c);

#endif
