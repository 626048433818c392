/*
 * xmppload.h - shared state of xmppload, the XMPP client load driver.
 *
 * xmppload.c owns the run (options, phases, statistics, the report);
 * xmppload_session.c owns one client connection: TCP, STARTTLS through
 * OpenSSL memory BIOs, SASL (PLAIN or SCRAM-SHA-1), resource bind, roster
 * get, initial presence, then stanza I/O. Sessions call back into the run
 * through the xmppload_on_* functions. Everything runs on one libuv loop in
 * one thread: the driver is meant to be pinned to its own core.
 */
#ifndef PARLEY_XMPPLOAD_H
#define PARLEY_XMPPLOAD_H

#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "common/buf.h"
#include "common/htab.h"
#include "common/xml.h"

enum xmppload_mech { MECH_PLAIN, MECH_SCRAM_SHA1 };

enum session_state {
    SS_NEW,
    SS_CONNECTING,
    SS_FEATURES_PLAIN, /* waiting for the first <stream:features> (STARTTLS) */
    SS_PROCEED,        /* <starttls/> sent */
    SS_HANDSHAKE,      /* TLS handshake */
    SS_FEATURES_TLS,   /* waiting for the features with the SASL mechanisms */
    SS_AUTH,           /* SASL exchange */
    SS_FEATURES_AUTHED,
    SS_BIND,
    SS_SESSION, /* legacy session establishment, only when the server requires it */
    SS_ROSTER,
    SS_ONLINE,
    SS_DEAD, /* failed or closed: handles are closing */
};

struct xmppload_opts {
    const char *host;
    int port;
    const char *domain;
    /* --peer-domain: as many users again log in to the peer server, and
     * messages go from the users of domain to those of peer_domain
     * (through the servers' s2s link) */
    const char *peer_host;
    int peer_port;
    const char *peer_domain;
    const char *user_fmt; /* printf pattern with one %u, e.g. "user%u" */
    const char *password;
    const char *resource;
    unsigned first, count, concurrency;
    enum xmppload_mech mech;
    double timeout;       /* seconds for one login */
    unsigned sources;     /* spread over 127.0.0.1 .. 127.0.0.<sources>; 0: no bind */
    uint32_t source_base; /* host order */
    double settle;        /* seconds between the last login and the RSS reading */
    double hold;          /* seconds to hold the sessions idle */
    int pause;            /* wait for a line on stdin with all sessions open */
    double duration;      /* seconds of message exchange (measured) */
    double warmup;        /* seconds of message exchange before measuring */
    double rate;          /* messages/s in total; 0: as fast as possible */
    unsigned window;      /* messages in flight per sender when rate is 0 */
    unsigned body_size;   /* pad message bodies to this many bytes */
    int spread;           /* rate mode: also send what is due before every poll */
    size_t out_cap;       /* bytes queued per connection before it counts as congested */
    long nofile;          /* RLIMIT_NOFILE wanted; 0: enough for count */
    int verbose;
};

struct session {
    uv_tcp_t tcp;
    uv_timer_t timer; /* login timeout */
    uv_connect_t connect_req;
    uv_write_t write_req;
    struct xmppload *ld;
    unsigned idx; /* position in ld->sessions */
    int peer;     /* logged in to the peer server (a receiver) */
    const char *domain;
    const struct sockaddr *server;
    enum session_state state;
    int handles_open;
    char user[128];

    SSL *ssl;
    BIO *rbio; /* memory BIO: ciphertext read from the socket, for SSL_read */
    BIO *wbio; /* memory BIO: ciphertext from SSL_write, for the socket */
    struct xml_parser *parser;
    int session_required;

    struct buf ptx; /* plaintext not yet given to SSL_write */
    struct buf out; /* bytes for the socket not yet written */
    char *inflight; /* bytes of the uv_write in flight (one at a time) */
    size_t inflight_len;
    struct session *next_dirty;
    int dirty;

    uint64_t t_start; /* ns, login start */
    /* SCRAM: client nonce, client-first-message-bare, expected ServerSignature */
    char cnonce[32];
    char *client_first_bare;
    unsigned char server_sig[20];

    unsigned outstanding; /* messages sent by this session not yet delivered */
};

/* Cached SCRAM keys for one (password, salt, iterations), RFC 5802 §5.1. */
struct scram_cache_entry {
    unsigned char client_key[20];
    unsigned char server_key[20];
};

struct u32vec {
    uint32_t *v;
    size_t len, cap;
};

struct failure {
    char reason[96]; /* a category, without per-session detail */
    char example[256];
    unsigned count;
};

#define FAILURE_KINDS 32

struct xmppload {
    uv_loop_t *loop;
    struct xmppload_opts o;
    struct sockaddr_storage server;
    SSL_CTX *ssl_ctx;
    struct htab *scram_cache;
    uv_check_t flush_check;
    uv_prepare_t pace_prepare; /* rate mode: sends due before each poll */
    uint64_t rx_ns;            /* when the read callback being handled began */
    uv_idle_t flush_idle;      /* keeps the poll from blocking while sessions are dirty */
    struct session *dirty_head;

    struct sockaddr_storage peer_server;
    struct session *sessions; /* total of them: o.count, twice that with a peer */
    unsigned total;
    unsigned started, in_flight, online, failed, dropped, done;
    uint64_t t_login0, t_login1;
    struct u32vec login_us;
    struct failure failures[FAILURE_KINDS];
    unsigned nfailures;

    /* message phase */
    struct session **ring; /* online senders in index order */
    unsigned nring;
    struct session **pring; /* online receivers on the peer server */
    unsigned npring;
    int sending, measuring;
    uint64_t t_msg0, t_meas0, t_meas1;
    uint64_t sent, delivered, msg_errors, skipped;
    uint64_t delivered_meas0, delivered_meas1;
    unsigned cursor;
    uint64_t scheduled; /* rate mode: sends due so far (sent or skipped) */
    struct u32vec lat_us;
    struct u32vec lag_us; /* rate mode: how late each send left after its due time */
    struct buf scratch;
};

/* ---- xmppload_session.c ---- */

/* Start logging s in (connect). */
void xmppload_session_start(struct session *s);
/* Queue a stanza (plaintext); it is written when the loop iteration ends. */
void xmppload_session_send(struct session *s, const char *data, size_t len);
/* Bytes queued for the socket (for congestion checks). */
size_t xmppload_session_queued(const struct session *s);
/* Close the stream politely and the connection with it. */
void xmppload_session_close(struct session *s);
/* Write out every dirty session (the flush check runs this). */
void xmppload_session_flush_all(struct xmppload *ld);
/* Queue a stanza and encrypt and write it (with anything queued before)
 * now, rather than at the end of the loop iteration. */
void xmppload_session_send_now(struct session *s, const char *data, size_t len);

/* ---- xmppload.c: events from sessions ---- */

void xmppload_on_online(struct session *s);
/* A login failed (reason: category; detail: this session's specifics). */
void xmppload_on_failed(struct session *s, const char *reason, const char *detail);
/* An online session was closed by the server or the network. */
void xmppload_on_dropped(struct session *s, const char *reason, const char *detail);
/* A <message/> arrived for an online session. */
void xmppload_on_message(struct session *s, struct xml_node *msg);

uint64_t xmppload_now_ns(void);

#endif
