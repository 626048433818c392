/*
 * s2s_out.c - outgoing server-to-server connections.
 *
 * Two kinds share the connection code:
 *  - links: one per (local domain, remote domain) pair, made on the first
 *    stanza, reused until idle for idle_ms. Stanzas queue (bounded in
 *    count and bytes) while the link comes up: static route or DNS
 *    (s2s_dns.c), each target in turn (one that fails before its TLS is
 *    up, direct or STARTTLS, or whose STARTTLS handshake outlasts
 *    tls-timeout, makes way for the next), STARTTLS (or direct
 *    TLS) with SNI, then SASL EXTERNAL when the peer's certificate is valid for the
 *    domain (or matches the route's pin), else dialback (XEP-0220) if the
 *    policy allows. A route with a pin requires it: a mismatch fails the
 *    link, never dialback. If the link cannot come up every queued iq/message is
 *    bounced: remote-server-timeout after a timeout, remote-server-not-
 *    found otherwise. Presence is dropped (RFC 6121 never bounces it).
 *  - verify connections: dialback's receiving side asks the authoritative
 *    server whether a key is valid (db:verify), then closes.
 *
 * A link whose peer proved its domain by certificate asks for XEP-0288
 * (bidi): the peer may then send stanzas from that domain to ours on it.
 * A stanza for a pair that a peer's bidirectional stream already serves
 * goes there (s2s_in_send) and no link is made.
 *
 * Answers are accepted only for a request made on that connection and
 * matching it (from, to, and for db:verify the stream id): unsolicited
 * db:result/db:verify answers close the connection (CVE-2012-3525).
 *
 * Lifetime: a struct s2s_out is freed once its stream is closed, its timer
 * handle closed and no DNS query is outstanding (maybe_free). Single loop.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/stream.h"
#include "s2s/s2s.h"

enum out_state {
    OUT_RESOLVE,
    OUT_CONNECT,
    OUT_HEADER,  /* our header sent, waiting for the peer's and its features */
    OUT_PROCEED, /* <starttls/> sent */
    OUT_SASL,    /* <auth mechanism='EXTERNAL'/> sent */
    OUT_DB,      /* db:result (link) or db:verify (verify) sent */
    OUT_READY,
    OUT_CLOSING,
};

/* One connection attempt to one target, until it connects (then the
 * stream passes to the link) or fails. */
struct attempt {
    struct s2s_out *o;
    struct attempt *next;
    struct stream *st;
    size_t idx;
};

struct qitem {
    struct qitem *next;
    struct xml_node *st;
    size_t bytes;
};

struct s2s_out {
    struct s2s *s2s;
    struct s2s_out *vnext, *vprev; /* verify connections */
    bool is_verify;
    char *local, *remote, *hkey;
    enum out_state state;
    struct stream *st;
    void *dns;
    struct s2s_target *targets;
    size_t ntargets;
    size_t cur;         /* the target of st */
    size_t next_target; /* the next one to try */
    struct attempt *attempts;
    uv_timer_t he; /* happy eyeballs: start the next attempt early */
    bool he_closed;
    bool has_pin;
    unsigned char pin[32];
    bool sasl_done;
    char ace[S2S_ACE_MAX + 1]; /* remote's A-label form: DNS, SNI, certificate */
    bool heard;
    /* Token bucket for stanzas the peer sends on a bidi link, as on an
     * inbound stream (s2s_in.c). */
    double tokens;
    uint64_t refill_at;
    bool paused; /* the current target has sent a stream header */
    bool sasl_failed;
    bool bidi;    /* XEP-0288 negotiated: the peer may send to us here */
    bool retry;   /* the closed stream was an attempt: try the next target */
    int fail_err; /* why the link failed */
    char peer_id[129];
    struct qitem *qhead, *qtail;
    size_t qlen, qbytes;
    uv_timer_t timer;
    bool timer_closed;
    bool dead;
    uint64_t last_used;
    /* verify */
    char *v_id;
    char v_key[S2S_DB_KEY_HEXLEN + 257];
    uint64_t v_serial;
    char v_ip[INET6_ADDRSTRLEN];
    int v_result; /* -1 none yet */
};

/* Delay before a parallel attempt on the next target (RFC 8305 §5). */
#define S2S_HE_DELAY_MS 250

static const struct stream_cbs out_cbs;
static void out_fail(struct s2s_out *o, int err, const char *why);
static void try_next(struct s2s_out *o);
static void on_connect(struct stream *st, void *arg);
static void on_tls_timeout(uv_timer_t *t);

static void maybe_free(struct s2s_out *o)
{
    if (!o->dead || o->st != NULL || !o->timer_closed || !o->he_closed || o->dns != NULL ||
        o->attempts != NULL)
        return;
    free(o->targets);
    free(o->local);
    free(o->remote);
    free(o->hkey);
    free(o->v_id);
    mem_wipe(o->v_key, sizeof(o->v_key));
    free(o);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct s2s_out *o = h->data;
    o->timer_closed = true;
    maybe_free(o);
}

static void on_he_closed(uv_handle_t *h)
{
    struct s2s_out *o = h->data;
    o->he_closed = true;
    maybe_free(o);
}

static void bounce_queue(struct s2s_out *o, enum xml_stanza_err cond)
{
    struct qitem *q = o->qhead;
    o->qhead = o->qtail = NULL;
    o->qlen = o->qbytes = 0;
    while (q) {
        struct qitem *n = q->next;
        s2s_rens(q->st, XML_NS_SERVER, XML_NS_COMPONENT);
        s2s_bounce(o->s2s, q->st, cond, NULL);
        free(q);
        q = n;
    }
}

/* Unlink from the tables and release everything; the memory goes in
 * maybe_free once the handles are closed. */
static void out_destroy(struct s2s_out *o)
{
    if (o->dead)
        return;
    o->dead = true;
    struct s2s *s = o->s2s;
    if (o->is_verify) {
        if (o->vprev)
            o->vprev->vnext = o->vnext;
        else
            s->verifies = o->vnext;
        if (o->vnext)
            o->vnext->vprev = o->vprev;
        s->nverifies--;
        if (o->v_result < 0)
            s2s_in_verified(s, o->v_serial, o->local, o->remote, 0);
    } else if (htab_get_str(s->out, o->hkey) == o) {
        htab_del_str(s->out, o->hkey);
    }
    bounce_queue(o, o->fail_err == ERR_TIMEOUT ? XML_STE_REMOTE_SERVER_TIMEOUT
                                               : XML_STE_REMOTE_SERVER_NOT_FOUND);
    if (o->dns != NULL)
        s2s_dns_cancel(s->dns, o->dns);
    uv_close((uv_handle_t *)&o->timer, on_timer_closed);
    uv_close((uv_handle_t *)&o->he, on_he_closed);
    for (struct attempt *a = o->attempts; a; a = a->next)
        stream_abort(a->st);
    if (o->st != NULL)
        stream_abort(o->st);
    maybe_free(o);
}

static void out_fail(struct s2s_out *o, int err, const char *why)
{
    if (o->dead)
        return;
    log_info("%s %s -> %s failed: %s", o->is_verify ? "dialback verify" : "link", o->local,
             o->remote, why);
    o->fail_err = err;
    o->retry = false;
    out_destroy(o);
}

static void write_header(struct s2s_out *o)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                       "xmlns:stream='http://etherx.jabber.org/streams' "
                       "xmlns:db='jabber:server:dialback' from='");
    xml_escape_attr(o->local, strlen(o->local), &b);
    buf_append_str(&b, "' to='");
    xml_escape_attr(o->remote, strlen(o->remote), &b);
    buf_append_str(&b, "' version='1.0'>");
    stream_write(o->st, b.data, b.len);
    buf_free(&b);
    o->state = OUT_HEADER;
}

static void flush_queue(struct s2s_out *o)
{
    struct buf b = BUF_INIT;
    while (o->qhead != NULL) {
        struct qitem *q = o->qhead;
        o->qhead = q->next;
        if (o->qhead == NULL)
            o->qtail = NULL;
        o->qlen--;
        o->qbytes -= q->bytes;
        buf_reset(&b);
        xml_serialize(q->st, XML_NS_SERVER, &b);
        if (stream_write(o->st, b.data, b.len) != 0) {
            s2s_rens(q->st, XML_NS_SERVER, XML_NS_COMPONENT);
            s2s_bounce(o->s2s, q->st, XML_STE_RESOURCE_CONSTRAINT, NULL);
        } else {
            xml_free(q->st);
        }
        free(q);
    }
    buf_free(&b);
}

static void on_idle_timer(uv_timer_t *t)
{
    struct s2s_out *o = t->data;
    if (o->state != OUT_READY)
        return;
    uint64_t now = uv_now(o->s2s->loop);
    if (now - o->last_used < o->s2s->cfg->idle_ms)
        return;
    log_info("link %s -> %s idle: closed", o->local, o->remote);
    o->state = OUT_CLOSING;
    htab_del_str(o->s2s->out, o->hkey);
    stream_write_str(o->st, "</stream:stream>");
    stream_close(o->st);
    uv_timer_stop(&o->timer);
}

static void link_ready(struct s2s_out *o)
{
    o->state = OUT_READY;
    stream_set_established(o->st);
    log_info("link %s -> %s ready (%s, %s)", o->local, o->remote,
             stream_is_tls(o->st) ? "TLS" : "plaintext",
             o->sasl_done ? "SASL EXTERNAL" : "dialback");
    o->last_used = uv_now(o->s2s->loop);
    uv_timer_stop(&o->timer);
    uint64_t every = o->s2s->cfg->idle_ms / 2 ? o->s2s->cfg->idle_ms / 2 : 1;
    uv_timer_start(&o->timer, on_idle_timer, every, every);
    flush_queue(o);
}

static void on_link_timeout(uv_timer_t *t)
{
    struct s2s_out *o = t->data;
    out_fail(o, ERR_TIMEOUT, "timed out");
}

/* ---- authentication ---- */

static int cert_ok(struct s2s_out *o)
{
    SSL *ssl = stream_ssl(o->st);
    if (ssl == NULL || !stream_is_secure(o->st))
        return 0;
    if (o->has_pin) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        X509 *cert = SSL_get1_peer_certificate(ssl);
#else
        X509 *cert = SSL_get_peer_certificate(ssl);
#endif
        if (cert == NULL)
            return 0;
        unsigned char md[32];
        unsigned int n = sizeof(md);
        int ok = X509_digest(cert, EVP_sha256(), md, &n) == 1 && n == 32 &&
                 CRYPTO_memcmp(md, o->pin, 32) == 0;
        X509_free(cert);
        if (!ok)
            log_info("certificate of %s does not match the route's pin", o->remote);
        return ok;
    }
    return tls_peer_verify(ssl, o->ace) == 0;
}

/* A pinned route is require-valid-cert: the pin is the only identity the
 * operator accepts for it, and dialback would let anyone who controls the
 * peer's DNS or the path past a mismatching pin. */
static bool dialback_allowed(const struct s2s_out *o, const struct s2s_policy *pol)
{
    return pol->dialback && !pol->require_cert && !o->has_pin;
}

static int has_mech(struct xml_node *features, const char *mech)
{
    struct xml_node *m = xml_child(features, S2S_NS_SASL, "mechanisms");
    for (struct xml_node *c = m ? xml_child(m, S2S_NS_SASL, "mechanism") : NULL; c;
         c = xml_next(c, S2S_NS_SASL, "mechanism"))
        if (strcmp(xml_text(c, NULL), mech) == 0)
            return 1;
    return 0;
}

static void send_db_result(struct s2s_out *o)
{
    char key[S2S_DB_KEY_HEXLEN + 1];
    if (s2s_db_key(o->s2s->db_key, o->remote, o->local, o->peer_id, key) != 0) {
        out_fail(o, ERR_INVAL, "cannot make a dialback key");
        return;
    }
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<db:result from='");
    xml_escape_attr(o->local, strlen(o->local), &b);
    buf_append_str(&b, "' to='");
    xml_escape_attr(o->remote, strlen(o->remote), &b);
    buf_printf(&b, "'>%s</db:result>", key);
    stream_write(o->st, b.data, b.len);
    mem_wipe(key, sizeof(key));
    mem_wipe(b.data, b.len);
    buf_free(&b);
    o->state = OUT_DB;
}

static void send_db_verify(struct s2s_out *o)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<db:verify from='");
    xml_escape_attr(o->local, strlen(o->local), &b);
    buf_append_str(&b, "' to='");
    xml_escape_attr(o->remote, strlen(o->remote), &b);
    buf_append_str(&b, "' id='");
    xml_escape_attr(o->v_id, strlen(o->v_id), &b);
    buf_append_str(&b, "'>");
    xml_escape_text(o->v_key, strlen(o->v_key), &b);
    buf_append_str(&b, "</db:verify>");
    stream_write(o->st, b.data, b.len);
    buf_free(&b);
    o->state = OUT_DB;
}

static void authenticate(struct s2s_out *o, struct xml_node *features)
{
    const struct s2s_policy *pol = s2s_policy_for(o->s2s, o->remote);
    if (o->is_verify) {
        /* A verify answer speaks for the domain: on a pinned route only
         * the pinned certificate may give it. */
        if (o->has_pin && !cert_ok(o))
            out_fail(o, ERR_AUTH, "peer certificate does not match the route's pin");
        else
            send_db_verify(o);
        return;
    }
    int good = cert_ok(o);
    /* Stanzas from the peer on this stream are only as trustworthy as its
     * identity: ask for bidi only when its certificate proved it. */
    if (good && o->s2s->cfg->bidi && !o->bidi &&
        xml_child(features, S2S_NS_BIDI_FEATURES, "bidi") != NULL) {
        stream_write_str(o->st, "<bidi xmlns='urn:xmpp:bidi'/>");
        o->bidi = true;
    }
    if (good && !o->sasl_failed && has_mech(features, "EXTERNAL")) {
        /* XEP-0178: the authorization identity is our domain. */
        size_t ll = strlen(o->local);
        char *b64 = xmalloc(4 * ((ll + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)o->local, (int)ll);
        struct buf b = BUF_INIT;
        buf_printf(&b, "<auth xmlns='%s' mechanism='EXTERNAL'>%s</auth>", S2S_NS_SASL, b64);
        stream_write(o->st, b.data, b.len);
        buf_free(&b);
        free(b64);
        o->state = OUT_SASL;
        return;
    }
    if (!dialback_allowed(o, pol)) {
        out_fail(o, ERR_AUTH,
                 good ? "peer offers no SASL EXTERNAL"
                      : (o->has_pin ? "peer certificate does not match the route's pin"
                                    : "peer certificate not valid (policy)"));
        return;
    }
    send_db_result(o);
}

static void on_features(struct s2s_out *o, struct xml_node *f)
{
    const struct s2s_policy *pol = s2s_policy_for(o->s2s, o->remote);
    if (o->sasl_done) {
        link_ready(o);
        return;
    }
    if (!stream_is_tls(o->st)) {
        if (xml_child(f, S2S_NS_TLS, "starttls") != NULL) {
            stream_write_str(o->st, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            o->state = OUT_PROCEED;
            return;
        }
        if (pol->require_tls || pol->require_cert || o->has_pin) {
            out_fail(o, ERR_AUTH, "peer offers no STARTTLS (policy requires TLS)");
            return;
        }
    }
    authenticate(o, f);
}

static void on_db_answer(struct s2s_out *o, struct xml_node *el)
{
    char from[S2S_DOMAIN_MAX + 1], to[S2S_DOMAIN_MAX + 1];
    struct s2s_db_elem d;
    int ok = s2s_db_parse(el, &d, from, to) == 0 && d.type != NULL && o->state == OUT_DB &&
             d.is_verify == o->is_verify && strcmp(d.from, o->remote) == 0 &&
             strcmp(d.to, o->local) == 0 && (!d.is_verify || strcmp(d.id, o->v_id) == 0);
    if (!ok) {
        /* Not the answer to our request (CVE-2012-3525). */
        log_warn("unsolicited or mismatched dialback answer from %s: closed", o->remote);
        stream_error(o->st, XML_SE_POLICY_VIOLATION, "unsolicited dialback answer");
        o->fail_err = ERR_AUTH;
        o->state = OUT_CLOSING;
        return;
    }
    int valid = strcmp(d.type, "valid") == 0;
    if (o->is_verify) {
        o->v_result = valid;
        s2s_in_verified(o->s2s, o->v_serial, o->local, o->remote, valid);
        o->state = OUT_CLOSING;
        stream_write_str(o->st, "</stream:stream>");
        stream_close(o->st);
        return;
    }
    if (!valid) {
        out_fail(o, ERR_AUTH, "dialback refused by the peer");
        return;
    }
    link_ready(o);
}

/* A stanza from the peer on a bidirectional link: the peer's certificate
 * authenticated its domain, so from must be that domain and to ours. */
static void on_rate_timer(uv_timer_t *t)
{
    struct s2s_out *o = t->data;
    if (o->paused && !o->dead && o->st != NULL) {
        o->paused = false;
        stream_resume(o->st);
    }
}

/* rate stanzas per second, up to burst at once; over that, reading pauses.
 * The happy-eyeballs timer is idle once connected and serves as the
 * bucket's timer (its handle lives as long as o). */
static void rate_take(struct s2s_out *o)
{
    struct s2s *s = o->s2s;
    uint64_t now = uv_now(s->loop);
    o->tokens += (double)(now - o->refill_at) * s->cfg->rate / 1000.0;
    if (o->tokens > s->cfg->burst)
        o->tokens = s->cfg->burst;
    o->refill_at = now;
    o->tokens -= 1.0;
    if (o->tokens < 0 && !o->paused && o->st != NULL) {
        uint64_t wait = (uint64_t)(-o->tokens * 1000.0 / s->cfg->rate) + 1;
        log_debug("bidirectional link %s -> %s: peer over its rate, reading paused", o->local,
                  o->remote);
        o->paused = true;
        stream_pause(o->st);
        uv_timer_start(&o->he, on_rate_timer, wait, 0);
    }
}

static void on_bidi_stanza(struct s2s_out *o, struct xml_node *el)
{
    char from[S2S_DOMAIN_MAX + 1], to[S2S_DOMAIN_MAX + 1];
    enum xml_stream_err cond = s2s_stanza_domains(el, from, to);
    if (cond == XML_SE_NONE && strcmp(to, o->local) != 0)
        cond = XML_SE_HOST_UNKNOWN;
    if (cond == XML_SE_NONE && strcmp(from, o->remote) != 0)
        cond = XML_SE_INVALID_FROM;
    if (cond != XML_SE_NONE) {
        log_info("bidirectional link %s -> %s: %s from the peer", o->local, o->remote,
                 xml_stream_err_name(cond));
        stream_error(o->st, cond, NULL);
        o->state = OUT_CLOSING;
        if (htab_get_str(o->s2s->out, o->hkey) == o)
            htab_del_str(o->s2s->out, o->hkey);
        xml_free(el);
        return;
    }
    o->last_used = uv_now(o->s2s->loop);
    s2s_deliver_local(o->s2s, el);
    rate_take(o);
}

/* ---- stream callbacks ---- */

static void on_connect(struct stream *st, void *arg)
{
    struct s2s_out *o = arg;
    if (o->targets[o->cur].direct_tls && stream_starttls(st, s2s_client_ctx(o->s2s, o->local, true),
                                                         STREAM_TLS_CLIENT, o->ace) != 0) {
        o->retry = o->next_target < o->ntargets;
        stream_abort(st);
        return;
    }
    write_header(o);
}

static void on_stream_open(struct stream *st, void *arg, struct xml_node *hdr)
{
    struct s2s_out *o = arg;
    const char *id = xml_get_attr(hdr, "id");
    const char *ver = xml_get_attr(hdr, "version");
    size_t idlen = id ? strlen(id) : 0;
    if (idlen == 0 || idlen >= sizeof(o->peer_id) || ver == NULL || strcmp(ver, "1.0") != 0 ||
        strcmp(stream_content_ns(st), XML_NS_SERVER) != 0) {
        xml_free(hdr);
        o->retry = false;
        out_fail(o, ERR_INVAL, "peer stream header without id or version 1.0");
        return;
    }
    memcpy(o->peer_id, id, idlen + 1);
    if (!o->heard) {
        /* connect-timeout was for reaching an XMPP server (a silent one
         * makes way for the next target); the negotiation from here on is
         * bounded by link-timeout (on_link_timeout). */
        o->heard = true;
        stream_set_established(st);
    }
    xml_free(hdr);
}

static void on_element(struct stream *st, void *arg, struct xml_node *el, const char *raw,
                       size_t rawlen)
{
    struct s2s_out *o = arg;
    if (o->dead || o->state == OUT_CLOSING) {
        xml_free(el);
        return;
    }
    if (strcmp(el->ns, XML_NS_STREAM) == 0 && strcmp(el->name, "features") == 0 &&
        o->state == OUT_HEADER && o->peer_id[0] != '\0') {
        on_features(o, el);
    } else if (strcmp(el->ns, XML_NS_STREAM) == 0 && strcmp(el->name, "error") == 0) {
        struct xml_node *c = xml_child(el, XML_NS_STREAMS_ERR, NULL);
        char why[128];
        snprintf(why, sizeof(why), "stream error from the peer: %s", c ? c->name : "?");
        out_fail(o, ERR_AUTH, why);
    } else if (strcmp(el->ns, S2S_NS_TLS) == 0 && o->state == OUT_PROCEED) {
        if (strcmp(el->name, "proceed") != 0 ||
            stream_starttls(st, s2s_client_ctx(o->s2s, o->local, false), STREAM_TLS_CLIENT,
                            o->ace) != 0) {
            out_fail(o, ERR_TLS, "STARTTLS refused");
        } else {
            o->peer_id[0] = '\0';
            /* The stream was set established when the peer spoke: a peer
             * that said <proceed/> and then stalls is bounded here. */
            uv_timer_start(&o->he, on_tls_timeout, o->s2s->cfg->tls_ms, 0);
            write_header(o);
        }
    } else if (strcmp(el->ns, S2S_NS_SASL) == 0 && o->state == OUT_SASL) {
        if (strcmp(el->name, "success") == 0) {
            o->sasl_done = true;
            o->peer_id[0] = '\0';
            stream_restart(st);
            write_header(o);
        } else {
            /* EXTERNAL refused: dialback may still do, on this stream. */
            const struct s2s_policy *pol = s2s_policy_for(o->s2s, o->remote);
            o->sasl_failed = true;
            if (!dialback_allowed(o, pol))
                out_fail(o, ERR_AUTH, "SASL EXTERNAL refused by the peer");
            else
                send_db_result(o);
        }
    } else if (strcmp(el->ns, S2S_NS_DIALBACK) == 0) {
        on_db_answer(o, el);
    } else if (o->bidi && o->state == OUT_READY && strcmp(el->ns, XML_NS_SERVER) == 0 &&
               (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 ||
                strcmp(el->name, "iq") == 0)) {
        on_bidi_stanza(o, el);
        return;
    } else {
        log_info("unexpected <%s/> from %s on an outgoing stream: closed", el->name, o->remote);
        stream_error(st, XML_SE_UNSUPPORTED_STANZA_TYPE, NULL);
        o->state = OUT_CLOSING;
    }
    xml_free(el);
}

/* A STARTTLS handshake that did not finish within tls-timeout: the
 * target's fault (as a broken handshake is, on_error), so the next target
 * gets its turn; with none left the link fails. */
static void on_tls_timeout(uv_timer_t *t)
{
    struct s2s_out *o = t->data;
    if (o->dead || o->st == NULL || !stream_is_tls(o->st) || stream_is_secure(o->st))
        return;
    log_info("%s -> %s: TLS handshake with target %zu timed out", o->local, o->remote, o->cur);
    if (o->next_target < o->ntargets) {
        o->retry = true;
        o->fail_err = ERR_TIMEOUT;
        stream_abort(o->st);
        return;
    }
    out_fail(o, ERR_TIMEOUT, "TLS handshake timed out");
}

static void on_secure(struct stream *st, void *arg)
{
    struct s2s_out *o = arg;
    (void)st;
    /* Idle until the link is ready (then it is the bidi rate timer). */
    uv_timer_stop(&o->he);
}

static void on_stream_close(struct stream *st, void *arg)
{
    struct s2s_out *o = arg;
    if (o->state != OUT_CLOSING && !o->dead) {
        o->retry = false;
        if (o->state != OUT_READY)
            out_fail(o, ERR_CLOSED, "peer closed the stream");
        else if (htab_get_str(o->s2s->out, o->hkey) == o)
            htab_del_str(o->s2s->out, o->hkey);
    }
    if (!o->dead) {
        o->state = OUT_CLOSING;
        stream_write_str(st, "</stream:stream>");
        stream_close(st);
    }
}

static void on_error(struct stream *st, void *arg, int err, enum xml_stream_err cond,
                     const char *text)
{
    struct s2s_out *o = arg;
    if (o->dead)
        return;
    log_info("%s -> %s: %s%s%s", o->local, o->remote, err_str(err), text ? ": " : "",
             text ? text : "");
    /* Before the peer spoke XMPP (a direct TLS handshake that failed, or
     * something that is not XMPP), or while a STARTTLS handshake is under
     * way (a broken TLS stack is the target's fault, not the domain's),
     * the next target may do better. Authentication failures come by
     * out_fail and never get here: they are about the domain. */
    bool handshaking = stream_is_tls(st) && !stream_is_secure(st);
    if ((o->state == OUT_CONNECT || (o->state == OUT_HEADER && (!o->heard || handshaking))) &&
        o->next_target < o->ntargets) {
        o->retry = true;
        o->fail_err = err;
        return;
    }
    if (o->state == OUT_READY || o->state == OUT_CLOSING) {
        o->state = OUT_CLOSING;
        if (htab_get_str(o->s2s->out, o->hkey) == o)
            htab_del_str(o->s2s->out, o->hkey);
        return;
    }
    out_fail(o, err == ERR_TIMEOUT ? ERR_TIMEOUT : ERR_IO, err_str(err));
}

static void on_close(struct stream *st, void *arg)
{
    struct s2s_out *o = arg;
    o->st = NULL;
    if (o->retry && !o->dead) {
        o->retry = false;
        uv_timer_stop(&o->he); /* a TLS timeout is this stream's */
        try_next(o);
        return;
    }
    if (!o->dead)
        out_destroy(o);
    maybe_free(o);
}

/* No on_connect: streams come connected from an attempt (att_cbs). */
static const struct stream_cbs out_cbs = {
    .on_secure = on_secure,
    .on_stream_open = on_stream_open,
    .on_element = on_element,
    .on_stream_close = on_stream_close,
    .on_error = on_error,
    .on_close = on_close,
};

/* ---- connecting ---- */

static void unlink_attempt(struct s2s_out *o, struct attempt *a)
{
    for (struct attempt **pp = &o->attempts; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    }
    free(a);
}

static void att_on_connect(struct stream *st, void *arg)
{
    struct attempt *a = arg;
    struct s2s_out *o = a->o;
    if (o->dead || o->st != NULL) {
        stream_abort(st);
        return;
    }
    /* The first attempt to connect wins; the others are dropped, so the
     * targets after the winner get their turn again if it fails later
     * (a stalled TLS handshake, on_tls_timeout; an error, on_error). */
    o->st = st;
    o->cur = a->idx;
    o->next_target = a->idx + 1;
    unlink_attempt(o, a);
    stream_set_owner(st, &out_cbs, o);
    uv_timer_stop(&o->he);
    for (struct attempt *b = o->attempts; b; b = b->next)
        stream_abort(b->st);
    on_connect(st, o);
}

static void att_on_error(struct stream *st, void *arg, int err, enum xml_stream_err cond,
                         const char *text)
{
    struct attempt *a = arg;
    struct s2s_out *o = a->o;
    log_debug("%s -> %s: target %zu: %s", o->local, o->remote, a->idx, err_str(err));
    if (o->fail_err != ERR_TIMEOUT)
        o->fail_err = err == ERR_TIMEOUT ? ERR_TIMEOUT : ERR_IO;
}

static void att_on_close(struct stream *st, void *arg)
{
    struct attempt *a = arg;
    struct s2s_out *o = a->o;
    unlink_attempt(o, a);
    if (o->dead) {
        maybe_free(o);
        return;
    }
    if (o->st == NULL && o->attempts == NULL)
        try_next(o);
}

static const struct stream_cbs att_cbs = {
    .on_connect = att_on_connect,
    .on_error = att_on_error,
    .on_close = att_on_close,
};

static void on_he_timer(uv_timer_t *t)
{
    struct s2s_out *o = t->data;
    if (!o->dead && o->st == NULL)
        try_next(o);
}

/* Start an attempt on the next target; while it has not connected after
 * S2S_HE_DELAY_MS the one after starts too (targets alternate IPv6/IPv4,
 * s2s_dns.c), so a dead address family costs a moment, not a timeout. */
static void try_next(struct s2s_out *o)
{
    struct s2s *s = o->s2s;
    o->state = OUT_CONNECT;
    o->peer_id[0] = '\0';
    o->heard = false;
    o->sasl_done = o->sasl_failed = false;
    while (o->next_target < o->ntargets) {
        struct stream_opts so;
        stream_opts_default(&so);
        so.handshake_ms = s->cfg->connect_ms;
        so.limits.max_stanza_bytes = s->cfg->stanza_size;
        so.limits.max_tree_bytes = 4 * s->cfg->stanza_size;
        struct attempt *a = xcalloc(1, sizeof(*a));
        a->o = o;
        a->idx = o->next_target++;
        log_debug("%s -> %s: connecting to target %zu", o->local, o->remote, a->idx);
        if (stream_connect_tcp(s->loop, (const struct sockaddr *)&o->targets[a->idx].addr, &so,
                               &att_cbs, a, &a->st) != 0) {
            free(a);
            continue;
        }
        a->next = o->attempts;
        o->attempts = a;
        if (o->next_target < o->ntargets)
            uv_timer_start(&o->he, on_he_timer, S2S_HE_DELAY_MS, 0);
        return;
    }
    if (o->attempts == NULL)
        out_fail(o, o->fail_err ? o->fail_err : ERR_NOTFOUND, "no target could be reached");
}

static void on_resolved(void *arg, int err, struct s2s_target *t, size_t n)
{
    struct s2s_out *o = arg;
    o->dns = NULL;
    if (o->dead) {
        free(t);
        maybe_free(o);
        return;
    }
    if (err != 0 || n == 0) {
        free(t);
        out_fail(o, err == ERR_TIMEOUT ? ERR_TIMEOUT : ERR_NOTFOUND, "DNS lookup failed");
        return;
    }
    o->targets = t;
    o->ntargets = n;
    o->next_target = 0;
    try_next(o);
}

static int route_target(struct s2s_out *o, const struct s2s_route *r)
{
    struct s2s_target *t = xcalloc(1, sizeof(*t));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&t->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&t->addr;
    const char *host = r->host;
    char buf[64];
    size_t hl = strlen(host);
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, hl - 2);
        buf[hl - 2] = '\0';
        host = buf;
    }
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)r->port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)r->port);
    } else {
        free(t);
        return ERR_INVAL;
    }
    t->direct_tls = r->direct_tls;
    o->targets = t;
    o->ntargets = 1;
    o->has_pin = r->has_pin;
    memcpy(o->pin, r->pin, sizeof(o->pin));
    return 0;
}

static struct s2s_out *out_new(struct s2s *s, const char *local, const char *remote)
{
    struct s2s_out *o = xcalloc(1, sizeof(*o));
    o->s2s = s;
    o->local = xstrdup(local);
    o->remote = xstrdup(remote);
    /* Once per link: IDNA is not cheap. Empty when remote has none. */
    if (s2s_ace(remote, o->ace) != 0)
        o->ace[0] = '\0';
    o->hkey = s2s_pair_key(local, remote);
    o->v_result = -1;
    o->tokens = s->cfg->burst;
    o->refill_at = uv_now(s->loop);
    uv_timer_init(s->loop, &o->timer);
    o->timer.data = o;
    uv_timer_init(s->loop, &o->he);
    o->he.data = o;
    o->state = OUT_RESOLVE;
    return o;
}

/* Resolve (static route or DNS) and connect. May fail at once: then o is
 * dead on return (its memory stays valid until the loop runs). */
static void out_begin(struct s2s_out *o)
{
    struct s2s *s = o->s2s;
    uv_timer_start(&o->timer, on_link_timeout, s->cfg->link_ms, 0);
    if (o->ace[0] == '\0') {
        out_fail(o, ERR_NOTFOUND, "domain has no A-label form");
        return;
    }
    const struct s2s_route *r = htab_get_str(s->routes, o->remote);
    if (r != NULL) {
        o->has_pin = r->has_pin;
        memcpy(o->pin, r->pin, sizeof(o->pin));
        if (route_target(o, r) == 0) {
            try_next(o);
            return;
        }
        /* A route to a host name: resolved like a domain (A/AAAA). */
        o->dns = s2s_dns_resolve(s->dns, r->host, r->port, 0, on_resolved, o);
        return;
    }
    o->dns = s2s_dns_resolve(s->dns, o->ace, 5269, 1, on_resolved, o);
}

void s2s_out_send(struct s2s *s, const char *local, const char *remote, struct xml_node *st)
{
    if (s->stopping) {
        s2s_rens(st, XML_NS_SERVER, XML_NS_COMPONENT);
        s2s_bounce(s, st, XML_STE_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    char *key = s2s_pair_key(local, remote);
    struct s2s_in *in = htab_get_str(s->bidi, key);
    if (in != NULL) {
        /* The peer's own stream, bidirectional (XEP-0288). */
        struct buf b = BUF_INIT;
        xml_serialize(st, XML_NS_SERVER, &b);
        int rc = s2s_in_send(in, b.data, b.len);
        buf_free(&b);
        if (rc == 0) {
            free(key);
            xml_free(st);
            return;
        }
        if (rc != ERR_CLOSED) {
            free(key);
            s2s_rens(st, XML_NS_SERVER, XML_NS_COMPONENT);
            s2s_bounce(s, st, XML_STE_RESOURCE_CONSTRAINT, NULL);
            return;
        }
        /* That stream is closing: a link of ours takes the stanza. */
    }
    struct s2s_out *o = htab_get_str(s->out, key);
    if (o == NULL) {
        o = out_new(s, local, remote);
        htab_set(s->out, key, strlen(key), o);
        out_begin(o);
    }
    free(key);
    if (o->dead) {
        /* Failed at once (no target could even be tried). */
        s2s_rens(st, XML_NS_SERVER, XML_NS_COMPONENT);
        s2s_bounce(s, st, XML_STE_REMOTE_SERVER_NOT_FOUND, NULL);
        return;
    }
    struct buf b = BUF_INIT;
    xml_serialize(st, XML_NS_SERVER, &b);
    if (o->state == OUT_READY) {
        o->last_used = uv_now(s->loop);
        int rc = stream_write(o->st, b.data, b.len);
        buf_free(&b);
        if (rc != 0) {
            s2s_rens(st, XML_NS_SERVER, XML_NS_COMPONENT);
            s2s_bounce(s, st, XML_STE_RESOURCE_CONSTRAINT, NULL);
        } else {
            xml_free(st);
        }
        return;
    }
    size_t bytes = b.len;
    buf_free(&b);
    if (o->qlen >= (size_t)s->cfg->queue_max || o->qbytes + bytes > s->cfg->queue_max_bytes) {
        s2s_rens(st, XML_NS_SERVER, XML_NS_COMPONENT);
        s2s_bounce(s, st, XML_STE_RESOURCE_CONSTRAINT, "s2s queue full");
        return;
    }
    struct qitem *q = xcalloc(1, sizeof(*q));
    q->st = st;
    q->bytes = bytes;
    if (o->qtail)
        o->qtail->next = q;
    else
        o->qhead = q;
    o->qtail = q;
    o->qlen++;
    o->qbytes += bytes;
}

void s2s_out_verify(struct s2s *s, const char *local, const char *remote, const char *id,
                    const char *key, uint64_t serial, const char *ip)
{
    struct s2s_out *o = out_new(s, local, remote);
    o->is_verify = true;
    o->v_id = xstrdup(id);
    size_t kl = strlen(key);
    if (kl >= sizeof(o->v_key))
        kl = sizeof(o->v_key) - 1;
    memcpy(o->v_key, key, kl);
    o->v_key[kl] = '\0';
    o->v_serial = serial;
    snprintf(o->v_ip, sizeof(o->v_ip), "%s", ip);
    s->nverifies++;
    o->vnext = s->verifies;
    if (s->verifies)
        s->verifies->vprev = o;
    s->verifies = o;
    out_begin(o);
}

int s2s_out_verify_room(struct s2s *s, const char *ip)
{
    if (s->nverifies >= (size_t)s->cfg->verify_max)
        return ERR_LIMIT;
    /* The list is bounded by verify_max: a walk is cheap enough. */
    int n = 0;
    for (struct s2s_out *o = s->verifies; o; o = o->vnext)
        if (strcmp(o->v_ip, ip) == 0 && ++n >= s->cfg->verify_per_ip)
            return ERR_LIMIT;
    return 0;
}

int s2s_out_pending_db(struct s2s *s, const char *local, const char *remote, const char *id)
{
    char *key = s2s_pair_key(local, remote);
    struct s2s_out *o = htab_get_str(s->out, key);
    free(key);
    return o != NULL && o->state == OUT_DB && strcmp(o->peer_id, id) == 0;
}

void s2s_out_close_all(struct s2s *s)
{
    struct htab_iter it;
    for (htab_iter_init(&it, s->out); htab_iter_next(&it);) {
        struct s2s_out *o = htab_iter_del(&it);
        o->fail_err = ERR_CLOSED;
        if (o->state == OUT_READY && o->st != NULL) {
            o->state = OUT_CLOSING;
            stream_write_str(o->st, "</stream:stream>");
            stream_close(o->st);
            o->dead = true;
            uv_close((uv_handle_t *)&o->timer, on_timer_closed);
            uv_close((uv_handle_t *)&o->he, on_he_closed);
        } else {
            out_destroy(o);
        }
    }
    while (s->verifies != NULL)
        out_destroy(s->verifies);
}

size_t s2s_out_count(struct s2s *s)
{
    return htab_count(s->out);
}
