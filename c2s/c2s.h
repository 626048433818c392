/*
 * c2s.h - parley-c2s: client connections (RFC 6120 streams, STARTTLS and
 * direct TLS, SASL, resource binding) and their sessions at the sm.
 *
 * Parts, one file each, all on the daemon's one libuv loop:
 *   c2s.c         the process: config, listeners, router link, hosted
 *                 domains, per-IP accounting, the keepalive sweep
 *   c2s_client.c  one client stream: header checks, features, STARTTLS,
 *                 bind, stanzas in both directions
 *   c2s_sasl.c    SASL: Cyrus SASL for SCRAM (keys fetched before the
 *                 mechanism steps), PLAIN verified in the thread pool
 *   c2s_saslmsg.c pure parsers of SASL client messages (fuzzed)
 *   c2s_ipkey.c   the per-address accounting key (IPv6 by prefix)
 *   c2s_sess.c    the session protocol with the sm (sm/SESSION.md)
 *
 * The struct c2s owns every client; a client owns its stream until the
 * stream's on_close, and is freed there unless an asynchronous job
 * (a storage query, a PLAIN verification) still holds it (holds > 0).
 */
#ifndef PARLEY_C2S_H
#define PARLEY_C2S_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/component.h"
#include "common/config.h"
#include "common/htab.h"
#include "common/jid.h"
#include "common/stream.h"
#include "common/xml.h"

#define C2S_NS_SESSION "urn:parley:session"
#define C2S_NS_TLS     "urn:ietf:params:xml:ns:xmpp-tls"
#define C2S_NS_SASL    "urn:ietf:params:xml:ns:xmpp-sasl"
#define C2S_NS_BIND    "urn:ietf:params:xml:ns:xmpp-bind"
#define C2S_NS_SESSREQ "urn:ietf:params:xml:ns:xmpp-session"
#define C2S_NS_PING    "urn:xmpp:ping"

#define C2S_SID_LEN 32

/* The router's element nesting limit on internal links (xml_limits default):
 * a client stanza may nest C2S_ROUTER_DEPTH - 2 deep, leaving room for the
 * r:route wrapper and a margin. */
#define C2S_ROUTER_DEPTH 32

#define C2S_ACCEPT_WARN_MS 10000

/* How long a connection refused at accept may keep its socket after the
 * stream error (instead of the streams' usual close_ms). */
#define C2S_REFUSE_CLOSE_MS 500

/* Everything configurable (filled by main.c's table). */
struct c2s_config {
    const char *router_name;
    const char *router_connect;
    const char *router_secret;
    const char *sm_name;
    const char *db_dsn;
    const char *db_password;
    struct xml_node *listen_tcp; /* <listen><tcp address port [tls='direct']/> */
    struct xml_node *tls_cert;   /* <tls><cert domain cert key/> */
    struct xml_node *domain;     /* <domain name tls-required/> */
    bool tls_required;           /* default for domains without <domain> */
    const char *mechanisms;      /* offered = accepted, space-separated */
    /* limits */
    size_t stanza_size;
    size_t router_stanza_size;  /* the router's limits/stanza-size: a wrapped stanza's cap */
    size_t presence_keep;       /* a session's last presence kept up to this (else reduced) */
    size_t preauth_stanza_size; /* element size before SASL success */
    size_t preauth_bytes;       /* bytes a connection may send before SASL success */
    int max_conns;
    int max_preauth;
    int conns_per_ip;
    int ipv6_prefix;   /* IPv6 clients are accounted per prefix (default /64) */
    int ip_table_size; /* addresses accounted apart; beyond, one shared bucket */
    int connect_rate;  /* new connections per second per IP (burst 2x) */
    size_t rate_bytes; /* bytes/s per connection (burst: stanza_size) */
    int auth_attempts;
    int plain_jobs;         /* PLAIN checks fetching keys or in the thread pool at once */
    uint64_t auth_delay_ms; /* first failure's delay, doubling per failure from the IP */
    uint64_t auth_delay_max_ms;
    uint64_t handshake_ms;
    uint64_t ping_ms; /* silence before a ping */
    uint64_t ping_timeout_ms;
    uint64_t idle_ms; /* no bytes at all for this long: connection-timeout (0: never) */
};

/* Connections and failures from one IP address. */
struct c2s_ip {
    int conns;
    double tokens; /* connect token bucket */
    uint64_t stamp;
    unsigned failures; /* auth failures, decays after auth_delay_max_ms * 8 */
    uint64_t fail_stamp;
};

struct c2s_listener {
    uv_tcp_t tcp;
    struct c2s *c2s;
    bool direct_tls;
    char desc[80];
    struct c2s_listener *next;
};

struct c2s_domain {
    char *name;
    bool up;
    bool tls_required;
    SSL_CTX *tls; /* certificate for the domain, or NULL: the default one */
};

struct c2s_client;

/* A warning logged at most once per C2S_ACCEPT_WARN_MS, with the count of
 * the events since the last line. */
struct c2s_warn_rate {
    uint64_t warned; /* when last logged; 0: never */
    uint64_t count;
};

struct c2s {
    uv_loop_t *loop;
    struct c2s_config cfg;
    struct component *comp;
    struct storage *st;
    struct c2s_listener *listeners;
    struct htab *domains;  /* name -> struct c2s_domain (known from config or notify) */
    struct htab *sessions; /* sid -> struct c2s_client */
    struct htab *rounds;   /* domain -> re-announce round (c2s_sess.c); NULL: none */
    struct htab *ips;      /* address bytes -> struct c2s_ip */
    SSL_CTX *tls_default;
    struct c2s_client *clients; /* every live client */
    size_t nclients, npreauth, nplain_jobs;
    uv_timer_t sweep;
    bool sm_up;
    bool stopping;
    bool ready_logged;
    bool full_logged;
    struct c2s_warn_rate accept_warn; /* failed accepts */
    struct c2s_warn_rate peer_warn;   /* accepted connections without a peer address */
    struct stream_opts sopts;
    char *mechs[8]; /* configured mechanisms */
    size_t nmechs;
};

enum c2s_state {
    CL_HEADER,  /* waiting for the (next) stream header */
    CL_OPEN,    /* features sent, before SASL success */
    CL_AUTHING, /* SASL exchange in progress */
    CL_AUTHED,  /* SASL done, stream restarted or about to */
    CL_BINDING, /* start sent to the sm */
    CL_BOUND,   /* sm answered started */
    CL_DOWN,    /* stream error sent or closing */
};

struct c2s_sasl;

struct c2s_client {
    struct c2s *c2s;
    struct stream *s;
    struct c2s_client *prev, *next;
    struct c2s_domain *domain; /* pinned by the first header (CVE-2018-10847) */
    char *user;                /* authenticated node */
    struct jid *jid;           /* full JID once bound */
    char *bind_id;             /* id of the bind iq waiting for the sm */
    struct xml_node *presence; /* last available broadcast presence (for announce) */
    struct c2s_sasl *sasl;     /* during the SASL exchange */
    uv_timer_t *delay;         /* failure delay timer, only while delaying */
    uv_timer_t *throttle;      /* token bucket resume timer, only while paused */
    unsigned char ip[16];
    unsigned char iplen;
    unsigned char ipkey[16]; /* the accounting key (c2s_ip_key), fixed at accept */
    unsigned char ipkeylen;
    enum c2s_state state;
    unsigned holds; /* async jobs holding the struct */
    unsigned auth_failures;
    bool direct_tls;
    bool header_sent;
    bool closed;      /* on_close seen */
    bool admitted;    /* counted in c2s->nclients (not refused at accept) */
    bool preauth;     /* counted in c2s->npreauth */
    bool counted;     /* counted in the ip's conns */
    bool has_session; /* sid in c2s->sessions */
    bool pinged;
    double tokens; /* byte token bucket */
    uint64_t tb_stamp;
    uint64_t tb_bytes; /* bytes_in already charged to the bucket */
    uint64_t last_rx_bytes;
    uint64_t last_rx_time;
    char sid[C2S_SID_LEN + 1];
    char id[C2S_SID_LEN + 1]; /* stream id */
};

/* c2s.c */
struct c2s *c2s_new(void);
int c2s_configure(struct c2s *c, struct config *cfg);
int c2s_listen(struct c2s *c, uv_loop_t *loop, struct config *cfg);
int c2s_start(struct c2s *c);
void c2s_stop(struct c2s *c);
/* SIGHUP: certificates and keys read again; on any error the old ones stay. */
void c2s_reload(struct c2s *c, struct config *cfg);
void c2s_stats(struct c2s *c);
void c2s_free(struct c2s *c);
struct c2s_domain *c2s_domain_get(struct c2s *c, const char *name);
/* Fix the client's accounting key: its address (IPv6 cut to
 * limits/ipv6-prefix), or the shared bucket when the table is full. */
void c2s_ip_key(struct c2s *c, struct c2s_client *cl);
/* The accounting entry for the client's key (created if missing). */
struct c2s_ip *c2s_ip_get(struct c2s *c, const struct c2s_client *cl);
/* A failed accept: logged at most once per C2S_ACCEPT_WARN_MS. */
void c2s_accept_failed(struct c2s *c, const char *where, const char *why);
/* An accepted connection dropped for having no peer address (reset while
 * queued): logged at most once per C2S_ACCEPT_WARN_MS, counted apart from
 * failed accepts. */
void c2s_peerless(struct c2s *c, const char *where, const char *why);
/* Send bytes that are complete elements to the router. */
int c2s_send_raw(struct c2s *c, const void *p, size_t len);

/* c2s_client.c */
void c2s_client_accept(struct c2s *c, struct c2s_listener *l);
/* The client's stream is ending: no more input, and its session (if any)
 * ended at the sm now. */
void c2s_client_down(struct c2s_client *cl);
/* End the client's stream with a stream error (header first if needed). */
void c2s_client_fail(struct c2s_client *cl, enum xml_stream_err cond, const char *text);
void c2s_client_write_node(struct c2s_client *cl, struct xml_node *stanza);
void c2s_client_authed(struct c2s_client *cl, const char *user);
void c2s_client_release(struct c2s_client *cl);
/* Drop an async job's hold; false if the client is gone (maybe freed). */
bool c2s_client_unhold(struct c2s_client *cl);
void c2s_client_sweep(struct c2s_client *cl, uint64_t now);

/* c2s_sasl.c */
int c2s_sasl_init(struct c2s *c);
/* After the jail: Cyrus's random source is readable (else ERR_CONFIG). */
int c2s_sasl_check_random(void);
void c2s_sasl_done(void);
/* Append <mechanisms/> for this client (PLAIN only with TLS). */
void c2s_sasl_features(struct c2s_client *cl, struct buf *out);
void c2s_sasl_element(struct c2s_client *cl, struct xml_node *el);
void c2s_sasl_free(struct c2s_client *cl);

/* c2s_sess.c */
void c2s_sess_start(struct c2s_client *cl, const char *resource, const char *iq_id);
void c2s_sess_end(struct c2s_client *cl);
/* start resume='true' for every bound session of domain (and the last
 * presence, for an announce), then <announced/>. */
void c2s_sess_resume(struct c2s *c, const char *domain, bool presence);
/* Wrap for the sm and send; a stanza the router would refuse (too large
 * once re-serialised and wrapped, or too deep) gets a policy-violation
 * error to the client instead. */
void c2s_sess_forward(struct c2s_client *cl, struct xml_node *stanza);
void c2s_sess_from_router(struct c2s *c, struct xml_node *el);
/* A stanza of ours came back undelivered; sid from the envelope, or NULL. */
void c2s_sess_bounced(struct c2s *c, struct xml_node *stanza, const char *why, const char *sid);

#endif
