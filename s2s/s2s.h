/*
 * s2s.h - parley-s2s: the parts of the federation daemon and what they share.
 *
 * parley-s2s holds the router's default route: every stanza for a domain no
 * local component owns comes here and leaves over a server-to-server link;
 * every stanza a remote server sends us is checked and handed to the router.
 *
 *   s2s.c         the core: config, local domains, policy, the router
 *                 connection, dispatch of stanzas to links, bounces
 *   s2s_out.c     outgoing links (one per local/remote domain pair) and the
 *                 short-lived dialback verify connections
 *   s2s_in.c      listeners and inbound streams (STARTTLS, SASL EXTERNAL,
 *                 dialback, stanza checks, limits)
 *   s2s_db.c      dialback keys (XEP-0185) and the checks on dialback
 *                 elements, free of I/O so that they can be fuzzed
 *   s2s_routes.c  the static routes file
 *   s2s_dns.c     c-ares on the libuv loop: SRV, then A/AAAA
 *
 * Everything runs on the daemon's one libuv loop. struct s2s is the only
 * global state and belongs to main.c's hooks.
 */
#ifndef PARLEY_S2S_H
#define PARLEY_S2S_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "common/component.h"
#include "common/config.h"
#include "common/htab.h"
#include "common/tls.h"
#include "common/xml.h"

#define S2S_NS_DIALBACK          "jabber:server:dialback"
#define S2S_NS_DIALBACK_FEATURES "urn:xmpp:features:dialback"
#define S2S_NS_TLS               "urn:ietf:params:xml:ns:xmpp-tls"
#define S2S_NS_SASL              "urn:ietf:params:xml:ns:xmpp-sasl"
#define S2S_NS_BIDI              "urn:xmpp:bidi"
#define S2S_NS_BIDI_FEATURES     "urn:xmpp:features:bidi"
#define S2S_DOMAIN_MAX           1023
#define S2S_DB_KEY_HEXLEN        64 /* hex HMAC-SHA256 */

/* Per remote domain policy (the <policy> element without domain= is the
 * default for every domain not listed). */
struct s2s_policy {
    const char *domain; /* NULL: the default */
    bool deny;          /* no links to or from this domain */
    bool require_tls;
    bool require_cert; /* a valid certificate; no dialback */
    bool dialback;     /* dialback allowed when the certificate is not valid */
};

/* One local certificate (SNI on inbound, client certificate outbound). */
struct s2s_cert {
    const char *domain;
    const char *cert, *key;
    SSL_CTX *server;
    SSL_CTX *client;
    SSL_CTX *client_direct; /* direct TLS: ALPN xmpp-server */
};

/* A static route: remote domain -> host:port (loaded from the routes file). */
struct s2s_route {
    char *domain;
    char *host;
    int port;
    bool direct_tls;
    unsigned char pin[32]; /* SHA-256 of the peer's certificate (DER) */
    bool has_pin;
};

struct s2s_config {
    const char *router_name;
    const char *router_connect;
    const char *router_secret;
    const char *dialback_secret;
    const char *routes_file;
    const char *ca_file;
    const char *dns_servers;  /* "ip:port,..."; NULL: /etc/resolv.conf */
    struct xml_node *domains; /* <domain> elements: local domains */
    bool learn;               /* names the router announces are local */
    bool bidi;                /* XEP-0288 bidirectional streams */
    struct xml_node *listen;  /* <listen><tcp address port [tls='direct']/></listen> */
    struct xml_node *certs;   /* <tls><cert domain cert key/> */
    struct xml_node *policies;
    size_t stanza_size;
    size_t router_stanza_size; /* the router's limits/stanza-size: no send is larger */
    size_t queue_max_bytes;
    int queue_max;
    int rate;  /* stanzas per second per inbound stream */
    int burst; /* bucket size */
    int conns_per_ip;
    int max_conns;
    int pending_dialback; /* per inbound stream */
    int verify_max;       /* dialback verify connections, in all */
    int verify_per_ip;    /* ... asked for by inbound streams from one address */
    int db_invalid_max;   /* invalid dialback results before a stream is closed */
    uint64_t connect_ms;  /* one connection attempt */
    uint64_t tls_ms;      /* a STARTTLS handshake, from <proceed/> */
    uint64_t link_ms;     /* a link from the first stanza to ready */
    uint64_t idle_ms;     /* an unused link is closed after this */
    uint64_t dns_ms;
};

struct s2s_out;
struct s2s_in;
struct s2s_dns;

struct s2s {
    uv_loop_t *loop;
    struct s2s_config *cfg;
    struct component *router;
    struct htab *local;  /* domain -> (void *)1 configured, 2 learned */
    struct htab *routes; /* domain -> struct s2s_route */
    struct htab *out;    /* "local remote" -> struct s2s_out (links only) */
    struct htab *bidi;   /* "local remote" -> struct s2s_in usable for sending */
    struct s2s_out *verifies;
    size_t nverifies;
    struct htab *in_by_serial; /* serial (8 bytes) -> struct s2s_in */
    struct htab *per_ip;       /* address text -> count (uintptr_t) */
    size_t nin;
    uint64_t next_serial;
    struct s2s_policy *policies;
    size_t npolicies;
    struct s2s_policy default_policy;
    struct s2s_cert *certs;
    size_t ncerts;
    SSL_CTX *client_anon; /* client context without a certificate */
    SSL_CTX *client_anon_direct;
    unsigned char db_key[32];
    uv_tcp_t *listeners;
    bool *listener_tls;
    size_t nlisteners;
    struct s2s_dns *dns;
    bool stopping;
    bool ready_logged;
    uint64_t stats_in, stats_out, stats_bounced;
};

/* ---- s2s.c ---- */
struct s2s *s2s_new(struct s2s_config *cfg);
int s2s_configure(struct s2s *s, struct config *cfg);
int s2s_listen(struct s2s *s, uv_loop_t *loop);
int s2s_start(struct s2s *s);
void s2s_stop(struct s2s *s);
void s2s_reload(struct s2s *s);
void s2s_log_stats(struct s2s *s);
void s2s_free(struct s2s *s);

int s2s_is_local(const struct s2s *s, const char *domain);
const struct s2s_policy *s2s_policy_for(const struct s2s *s, const char *domain);
/* The A-label (ASCII, IDNA) form of domain, for DNS, SNI and certificate
 * checks; the Unicode form stays for addressing and dialback keys.
 * S2S_ACE_MAX + 1 bytes at out. Returns 0 or ERR_INVAL. */
#define S2S_ACE_MAX 253
int s2s_ace(const char *domain, char *out);
SSL_CTX *s2s_client_ctx(struct s2s *s, const char *local, bool direct);
SSL_CTX *s2s_server_ctx(struct s2s *s, const char *local);
/* A stanza from a peer, checked: to the router (the tree is the callee's). */
void s2s_deliver_local(struct s2s *s, struct xml_node *stanza);
/* Turn stanza into an error reply and send it where it belongs (the tree
 * is the callee's; never answers an error or a presence). */
void s2s_bounce(struct s2s *s, struct xml_node *stanza, enum xml_stanza_err cond, const char *why);
/* The domains of a stanza's from and to (prepped) into bufs of
 * S2S_DOMAIN_MAX + 1: XML_SE_NONE, or the stream error for a missing or
 * malformed from (invalid-from) or to (improper-addressing). */
enum xml_stream_err s2s_stanza_domains(const struct xml_node *st, char *from, char *to);
/* "local remote": the key of a domain pair (free() it). */
char *s2s_pair_key(const char *local, const char *remote);
/* Rewrite every element in from_ns (and its subtree) to to_ns. */
void s2s_rens(struct xml_node *n, const char *from_ns, const char *to_ns);

/* ---- s2s_out.c ---- */
/* Send a stanza (tree is the callee's) from local domain to remote domain. */
void s2s_out_send(struct s2s *s, const char *local, const char *remote, struct xml_node *stanza);
/* Ask the authoritative server of remote whether key is valid for the
 * stream id (dialback, receiving side). The answer goes to the inbound
 * stream with that serial through s2s_in_verified. ip is the inbound
 * stream's peer address, counted against limits/verify-per-ip. */
void s2s_out_verify(struct s2s *s, const char *local, const char *remote, const char *id,
                    const char *key, uint64_t in_serial, const char *ip);
/* 0 if one more verify connection for a stream from ip fits the limits,
 * else ERR_LIMIT. */
int s2s_out_verify_room(struct s2s *s, const char *ip);
/* Authoritative side: is there an outgoing link local->remote waiting for
 * its dialback result on the peer's stream id? */
int s2s_out_pending_db(struct s2s *s, const char *local, const char *remote, const char *id);
void s2s_out_close_all(struct s2s *s);
size_t s2s_out_count(struct s2s *s);

/* ---- s2s_in.c ---- */
int s2s_in_listen(struct s2s *s);
void s2s_in_verified(struct s2s *s, uint64_t serial, const char *local, const char *remote,
                     int valid);
void s2s_in_close_all(struct s2s *s);
/* Send serialised stanza bytes over a bidirectional inbound stream
 * (XEP-0288). Returns 0 or the stream_write error; ERR_CLOSED (a stream
 * closing) also unshares it: the caller then uses a link. */
int s2s_in_send(struct s2s_in *in, const char *data, size_t len);

/* ---- s2s_db.c ---- */
/* hex(HMAC-SHA256(key, receiving ' ' originating ' ' id)), out has
 * S2S_DB_KEY_HEXLEN + 1 bytes. Returns 0 or ERR_INVAL for a field with a
 * space or control character (it would make the input ambiguous). */
int s2s_db_key(const unsigned char key[32], const char *receiving, const char *originating,
               const char *id, char *out);
/* Constant-time comparison of a received key with the expected one. */
int s2s_db_key_equal(const char *got, size_t gotlen, const char *want);
/* Derive the HMAC key from the configured secret. */
void s2s_db_secret(const char *secret, size_t len, unsigned char key[32]);

/* What a dialback element from the network is, after checks. */
struct s2s_db_elem {
    int is_verify;    /* db:verify, else db:result */
    const char *from; /* prepped domain (pointer into the tree or static buffer) */
    const char *to;
    const char *id;   /* db:verify only */
    const char *type; /* NULL for a request, "valid"/"invalid"/"error" */
    const char *key;  /* text, for requests */
    size_t keylen;
};
/* Check and decompose a db:result/db:verify element. Domains are checked
 * as domain names (jid_parse, no node or resource), ids as 1..128 chars
 * of [A-Za-z0-9_.-], keys as at most 256 printable characters. Returns 0,
 * ERR_INVAL. from_buf/to_buf (S2S_DOMAIN_MAX + 1) receive the prepped
 * domains. */
int s2s_db_parse(struct xml_node *el, struct s2s_db_elem *out, char *from_buf, char *to_buf);
/* Prep a domain name (no node, no resource) into buf (S2S_DOMAIN_MAX+1). */
int s2s_db_domain_prep(const char *in, char *buf);

/* ---- s2s_routes.c ---- */
/* Parse the routes file text into a new table (domain -> struct s2s_route). */
int s2s_routes_parse(const char *name, const char *data, size_t len, struct htab **out);
int s2s_routes_load(const char *file, struct htab **out);
void s2s_routes_free_route(void *r);

/* ---- s2s_dns.c ---- */
struct s2s_target {
    struct sockaddr_storage addr;
    bool direct_tls;
};
/* servers: c-ares' "host:port,..." list, or NULL for the system's. */
int s2s_dns_new(uv_loop_t *loop, uint64_t timeout_ms, const char *servers, struct s2s_dns **out);
/* Resolve name to connection targets: with srv, the SRV records
 * _xmpps-server._tcp (direct TLS) and _xmpp-server._tcp in priority and
 * weight order, else (or without srv) A/AAAA on port. cb runs later, never
 * from inside this call, with err 0 and the targets (the callee frees the
 * array), or ERR_NOTFOUND / ERR_TIMEOUT / ERR_CLOSED. Returns a handle. */
void *s2s_dns_resolve(struct s2s_dns *d, const char *name, int port, int srv,
                      void (*cb)(void *arg, int err, struct s2s_target *targets, size_t n),
                      void *arg);
/* The callback will still run, with ERR_CLOSED. */
void s2s_dns_cancel(struct s2s_dns *d, void *handle);
void s2s_dns_free(struct s2s_dns *d);

#endif
