/*
 * router.h - parley-router's shared state: the router, its connections,
 * per-component counters.
 *
 * One struct router per process, owned by router.c (created from the config
 * in on_config, given a loop in pre_jail, freed after the loop ended). It
 * holds the component table (users.c), the route table (route.c), the JID
 * cache used to find the domain of every `to`, the list of connections,
 * and the counters of every component name seen.
 *
 * A struct conn is one component connection (conn.c): a common/stream, or
 * for unit tests and the fuzz target a memory sink that collects what the
 * router writes (no socket, no loop). Its life: header -> handshake ->
 * ready (routes held) -> down (routes released, stream closing) -> freed in
 * the stream's on_close.
 *
 * Who does what:
 *   conn.c    stream callbacks, stream header, handshake, errors, output
 *   deliver.c plain stanzas: addressing checks, route lookup, forwarding,
 *             bounces, backpressure
 *   proto.c   urn:parley:router elements (bind, unbind, route, stats) and
 *             the notify fan-out
 *   stats.c   per-component counters, <r:stats/>, SIGUSR1
 *   router.c  config, listeners, accept, reload (HUP), stop
 *
 * Everything runs on the router's one loop thread.
 */
#ifndef PARLEY_ROUTER_ROUTER_H
#define PARLEY_ROUTER_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/jid.h"
#include "common/rand.h"
#include "common/stream.h"
#include "common/xml.h"
#include "router/route.h"
#include "router/users.h"

#define ROUTER_NS "urn:parley:router"
/* sm/SESSION.md: the session control the router fans out (proto.c). */
#define ROUTER_NS_SESSION "urn:parley:session"
/* JIDs kept prepped in the cache; their memory is capped by jid.c's byte
 * budget (JID_CACHE_ENTRY_BYTES each: 32 MiB) and inputs over
 * JID_CACHE_KEY_MAX are never kept. */
#define ROUTER_JID_CACHE 65536
/* Largest element before the handshake succeeds: <handshake> is 40 hex
 * digits, anything much larger is not a component talking. */
#define ROUTER_PREAUTH_MAX 4096

/* What etc/router.xml says (filled by the config table in main.c). */
struct router_config {
    const char *users_file;
    const char *unix_path; /* NULL: no Unix socket */
    const char *unix_mode; /* octal text, e.g. "0660" */
    const char *unix_group; /* the socket's group; NULL: the <user>'s/<group> */
    struct xml_node *tcp;  /* first <listen><tcp>, NULL if none */
    size_t stanza_size;
    size_t queue_max;
    uint64_t handshake_ms;
    int max_conns;
};

/* One <listen><tcp> (copied out of the config). */
struct router_tcp {
    char *address;
    int port;
    char *cert, *key; /* both or neither: direct TLS */
};

struct router_listener;

/* Counters of one component name, kept across its reconnects. */
struct comp {
    char *name;
    unsigned ninst;  /* instances up now */
    bool *slot_used; /* ring slots of the live instances */
    unsigned nslots;
    uint64_t stanzas_in;  /* stanzas received from it */
    uint64_t stanzas_out; /* stanzas delivered to it */
    uint64_t bytes_in, bytes_out;
    uint64_t dropped; /* its stanzas that were bounced or dropped */
};

enum conn_state {
    CONN_HEADER,    /* waiting for the stream header */
    CONN_HANDSHAKE, /* header answered, waiting for <handshake> */
    CONN_READY,     /* authenticated: holds routes */
    CONN_DOWN,      /* closing: holds nothing, ignores input */
};

struct router;

struct conn {
    struct router *r;
    struct stream *s;              /* NULL for a memory connection */
    struct buf *sink;              /* memory connection: what the router wrote */
    struct xml_parser *mem_parser; /* memory connection: parses conn_feed_memory */
    struct conn *prev, *next;
    enum conn_state state;
    char id[RAND_ID_HEXLEN + 1]; /* stream id */
    char peer[80];               /* for the log */
    char *name;                  /* prepped `to` of the header; NULL if none */
    struct comp *comp;           /* from the handshake on */
    unsigned slot;
    bool internal, multi, default_route;
    bool header_sent;
    bool is_unix, has_cred;
    uid_t peer_uid;
    bool pending;     /* counted in the router's pre-handshake connections */
    bool full_logged; /* over queue-max: logged for this episode */
    bool default_bound;
    char **bound; /* domains held besides the name */
    size_t nbound;
};

struct router {
    struct router_config cfg;
    uv_loop_t *loop; /* NULL in tests and fuzzing */
    struct users *users;
    struct route_table *routes;
    struct htab *comps; /* name -> struct comp */
    struct jid_cache *jids;
    struct conn *conns; /* every connection, newest first */
    size_t nconns;
    /* By listener kind ([1]: the Unix socket, our own daemons; [0]: TCP):
     * max-connections applies to each kind on its own, so a TCP flood
     * cannot lock the daemons out. */
    size_t nconns_by[2];
    size_t npending_by[2]; /* of those, not past the handshake yet */
    struct stream_opts sopts;
    struct buf scratch; /* serializer output, reused per stanza */
    bool stopping;
    bool refusing_logged; /* max-connections reached: logged for this episode */
    struct router_tcp *tcp;
    size_t ntcp;
    struct router_listener *listeners;
};

/* ---- router.c ---- */

/* A router without listeners or loop (tests, fuzzing, on_config). Takes
 * ownership of users. */
struct router *router_new(const struct router_config *cfg, struct users *users);
/* Frees the state; connections must be gone (or memory ones). NULL is fine. */
void router_free(struct router *r);
/* Read the config entries main.c could not (tcp listeners), load the
 * component table. Start-up: logs and returns ERR_CONFIG on errors. */
int router_configure(struct router *r, struct config *cfg);
/* As root: bind the listeners on loop. */
int router_listen(struct router *r, uv_loop_t *loop, struct config *cfg);
/* TERM: close listeners, end every stream with system-shutdown. */
void router_stop(struct router *r);
/* HUP: reload the component table (see router.c for what happens to
 * connections of changed components). */
void router_reload(struct router *r);
/* Swap in a new component table (reload's second half; tests use it). */
void router_set_users(struct router *r, struct users *u);
/* How many connections of one listener kind may be before their handshake:
 * half of max-connections (at least 1), so that the other half is always
 * left to authenticated components. */
size_t router_max_pending(const struct router *r);

/* ---- conn.c ---- */

/* A connection on an accepted stream (takes the stream over). */
struct conn *conn_new_stream(struct router *r, struct stream *s, bool is_unix, bool has_cred,
                             uid_t uid);
/* A memory connection (unit tests, fuzzing): input comes from
 * conn_feed_memory through its own parser, output is appended to sink
 * (capped at queue-max, like a stream's queue). Free with conn_free_memory. */
struct conn *conn_new_memory(struct router *r, struct buf *sink, bool is_unix, bool has_cred,
                             uid_t uid);
/* Parse bytes as if the peer had sent them; the xml_parser_feed result. */
int conn_feed_memory(struct conn *c, const char *data, size_t len);
void conn_free_memory(struct conn *c);
/* The events of the connection's parser (streams call these themselves). */
void conn_on_header(struct conn *c, struct xml_node *hdr, const char *content_ns);
void conn_on_element(struct conn *c, struct xml_node *el, const char *raw, size_t rawlen);
void conn_on_stream_end(struct conn *c);
void conn_on_parse_error(struct conn *c, enum xml_stream_err cond);
/* Queue bytes: 0, ERR_AGAIN (over queue-max: nothing queued), ERR_CLOSED. */
int conn_write(struct conn *c, const char *p, size_t len);
int conn_write_rbuf(struct conn *c, struct rbuf *rb);
/* Send a stream error (after our header), release routes, close. */
void conn_fail(struct conn *c, enum xml_stream_err cond, const char *text);
/* Release routes and close with </stream:stream> (or a stream error). */
void conn_down(struct conn *c, const char *why);
/* Does the connection own this prepped domain (its name or a bound one)? */
bool conn_owns(const struct conn *c, const char *domain);
/* hex(SHA-1(id + secret)) into out (41 bytes). */
void conn_digest(const char *id, const char *secret, size_t secret_len, char out[41]);

/* ---- deliver.c ---- */

/* A message, presence or iq from a ready connection. */
void deliver_stanza(struct conn *c, struct xml_node *st, const char *raw, size_t rawlen);
/* Bounce st to its sender c with a stanza error (never an error, never presence). */
void deliver_bounce(struct conn *c, struct xml_node *st, enum xml_stanza_err cond);
/* Forward bytes to target; on a full queue bounce st to c. Returns 0 if
 * delivered. */
int deliver_to(struct conn *c, struct conn *target, struct xml_node *st, const char *p, size_t len);

/* ---- proto.c ---- */

/* An element in urn:parley:router from a ready internal connection. */
void proto_element(struct conn *c, struct xml_node *el, const char *raw, size_t rawlen);
/* Tell every ready internal connection but except that name (owned by
 * except) is up/down. */
void proto_notify(struct router *r, const char *name, bool up, const struct conn *except);
/* A multi-instance route that stays up gained or lost an instance (its
 * ring changed): tell every ready internal connection but except, with
 * state='up' and instances='N'. */
void proto_notify_ring(struct router *r, const char *name, const struct conn *except);
/* Send c one up notify per route now up. */
void proto_notify_all(struct conn *c);

/* ---- stats.c ---- */

/* The counters of a name (created on first use). */
struct comp *stats_comp(struct router *r, const char *name);
/* <r:stats> with one <r:component/> per name, appended to out. */
void stats_element(struct router *r, struct buf *out);
/* One log line per component (SIGUSR1). */
void stats_log(struct router *r);
void stats_free(struct router *r);

#endif
