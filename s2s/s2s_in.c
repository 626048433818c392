/*
 * s2s_in.c - listeners and inbound server-to-server streams.
 *
 * A peer connects to a <listen><tcp/> (STARTTLS, 5269) or a tls='direct'
 * one (XEP-0368, 5270), gets our certificate for the domain it asked for
 * (SNI, else the stream's to), and authenticates the domains it sends from:
 *  - SASL EXTERNAL (RFC 6120 §6, XEP-0178) when its certificate is valid
 *    for its domain: the whole stream then speaks for that domain;
 *  - dialback (XEP-0220): each db:result (from, to) is checked with the
 *    authoritative server over a verify connection (s2s_out.c) before it
 *    counts; only that (from, to) pair is authenticated.
 * As the authoritative server it answers db:verify for links it has
 * waiting on exactly that stream id (and key). A peer that asks for
 * XEP-0288 (bidi, before authenticating) gets its authenticated pairs
 * used for our stanzas to it too (s2s->bidi), instead of a link of ours.
 *
 * Every stanza: its from domain must be authenticated on this stream
 * (else invalid-from, closed), its to domain one we host (else
 * host-unknown); then it is re-serialised by the router connection
 * (component_send) and never passed on as received. A stream that must
 * use TLS (policy) and sends anything but <starttls/> before it gets
 * policy-violation. Limits: stanza size (parser), a token bucket of
 * stanzas per second (reading pauses when it is empty), connections in
 * total and per address, pending dialback requests per stream.
 *
 * Runs on the daemon's loop. A struct s2s_in is freed after its stream and
 * its rate timer are both closed.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rand.h"
#include "common/stream.h"
#include "s2s/s2s.h"

#define SASL_MAX 1024
/* Domain pairs one stream may authenticate by dialback: each costs memory
 * and a lookup per stanza. */
#define IN_MAX_PAIRS 256

struct pair {
    char *remote, *local;
};

struct s2s_in {
    struct s2s *s2s;
    uint64_t serial;
    struct stream *st;
    bool direct_tls;
    bool header_sent;
    char id[RAND_ID_HEXLEN + 1];
    char local[S2S_DOMAIN_MAX + 1];  /* the header's to */
    char remote[S2S_DOMAIN_MAX + 1]; /* the header's from, "" if none */
    char *sasl_domain;               /* authenticated by SASL EXTERNAL */
    struct pair *pairs;              /* authenticated by dialback */
    size_t npairs;
    int pending;
    int db_invalid; /* dialback results found invalid on this stream */
    bool bidi;      /* the peer asked for XEP-0288 */
    size_t nshared; /* entries of s2s->bidi pointing here */
    char ip[INET6_ADDRSTRLEN];
    double tokens;
    uint64_t refill_at;
    uv_timer_t rate_timer;
    bool paused;
    bool timer_closed;
    bool stream_closed;
};

/* ---- bookkeeping ---- */

static void ip_count(struct s2s *s, const char *ip, int delta)
{
    uintptr_t n = (uintptr_t)htab_get_str(s->per_ip, ip);
    n = (uintptr_t)((intptr_t)n + delta);
    if (n == 0)
        htab_del_str(s->per_ip, ip);
    else
        htab_set(s->per_ip, ip, strlen(ip), (void *)n);
}

static void in_maybe_free(struct s2s_in *in)
{
    if (!in->stream_closed || !in->timer_closed)
        return;
    for (size_t i = 0; i < in->npairs; i++) {
        free(in->pairs[i].remote);
        free(in->pairs[i].local);
    }
    free(in->pairs);
    free(in->sasl_domain);
    free(in);
}

static void on_rate_timer_closed(uv_handle_t *h)
{
    struct s2s_in *in = h->data;
    in->timer_closed = true;
    in_maybe_free(in);
}

static int authenticated(const struct s2s_in *in, const char *remote, const char *local)
{
    if (in->sasl_domain != NULL && strcmp(in->sasl_domain, remote) == 0)
        return 1;
    for (size_t i = 0; i < in->npairs; i++)
        if (strcmp(in->pairs[i].remote, remote) == 0 && strcmp(in->pairs[i].local, local) == 0)
            return 1;
    return 0;
}

/* A pair this bidirectional stream is authenticated for: our stanzas from
 * local to remote may use it (XEP-0288) instead of a link of our own. */
static void bidi_share(struct s2s_in *in, const char *local, const char *remote)
{
    if (!in->bidi)
        return;
    char *key = s2s_pair_key(local, remote);
    if (htab_get_str(in->s2s->bidi, key) == NULL) {
        htab_set(in->s2s->bidi, key, strlen(key), in);
        in->nshared++;
        log_info("bidirectional stream: %s -> %s uses the stream from %s", local, remote, in->ip);
    }
    free(key);
}

static void bidi_unshare(struct s2s_in *in)
{
    struct htab_iter it;
    if (in->nshared == 0)
        return;
    for (htab_iter_init(&it, in->s2s->bidi); htab_iter_next(&it);)
        if (it.val == in)
            htab_iter_del(&it);
    in->nshared = 0;
}

int s2s_in_send(struct s2s_in *in, const char *data, size_t len)
{
    int rc = in->stream_closed ? ERR_CLOSED : stream_write(in->st, data, len);
    if (rc == ERR_CLOSED)
        bidi_unshare(in); /* the next stanzas go by a link at once */
    return rc;
}

static const struct s2s_policy *in_policy(const struct s2s_in *in)
{
    return s2s_policy_for(in->s2s, in->remote[0] ? in->remote : "");
}

/* ---- output ---- */

static void send_header(struct s2s_in *in)
{
    struct buf b = BUF_INIT;
    rand_id_hex(in->id);
    buf_append_str(&b, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                       "xmlns:stream='http://etherx.jabber.org/streams' "
                       "xmlns:db='jabber:server:dialback'");
    if (in->local[0]) {
        buf_append_str(&b, " from='");
        xml_escape_attr(in->local, strlen(in->local), &b);
        buf_append_str(&b, "'");
    }
    if (in->remote[0]) {
        buf_append_str(&b, " to='");
        xml_escape_attr(in->remote, strlen(in->remote), &b);
        buf_append_str(&b, "'");
    }
    buf_printf(&b, " id='%s' version='1.0'>", in->id);
    stream_write(in->st, b.data, b.len);
    buf_free(&b);
    in->header_sent = true;
}

static void in_error(struct s2s_in *in, enum xml_stream_err cond, const char *text)
{
    if (!in->header_sent)
        send_header(in);
    log_info("inbound from %s (%s): %s%s%s", in->remote[0] ? in->remote : "?", in->ip,
             xml_stream_err_name(cond), text ? ": " : "", text ? text : "");
    /* Our stanzas must not go to a stream being closed. */
    bidi_unshare(in);
    stream_error(in->st, cond, text);
}

static void send_features(struct s2s_in *in)
{
    const struct s2s_policy *pol = in_policy(in);
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<stream:features>");
    if (!stream_is_tls(in->st)) {
        buf_printf(&b, "<starttls xmlns='%s'>%s</starttls>", S2S_NS_TLS,
                   pol->require_tls ? "<required/>" : "");
        if (!pol->require_tls && pol->dialback && !pol->require_cert)
            buf_printf(&b, "<dialback xmlns='%s'><errors/></dialback>", S2S_NS_DIALBACK_FEATURES);
    } else if (in->sasl_domain == NULL) {
        SSL *ssl = stream_ssl(in->st);
        if (in->s2s->cfg->bidi && !in->bidi)
            buf_printf(&b, "<bidi xmlns='%s'/>", S2S_NS_BIDI_FEATURES);
        char ace[S2S_ACE_MAX + 1];
        if (in->remote[0] && ssl != NULL && s2s_ace(in->remote, ace) == 0 &&
            tls_peer_verify(ssl, ace) == 0)
            buf_printf(&b, "<mechanisms xmlns='%s'><mechanism>EXTERNAL</mechanism></mechanisms>",
                       S2S_NS_SASL);
        if (pol->dialback && !pol->require_cert)
            buf_printf(&b, "<dialback xmlns='%s'><errors/></dialback>", S2S_NS_DIALBACK_FEATURES);
    }
    buf_append_str(&b, "</stream:features>");
    stream_write(in->st, b.data, b.len);
    buf_free(&b);
}

/* ---- SASL EXTERNAL ---- */

static void sasl_failure(struct s2s_in *in, const char *cond)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "<failure xmlns='%s'><%s/></failure>", S2S_NS_SASL, cond);
    stream_write(in->st, b.data, b.len);
    buf_free(&b);
}

static void on_auth(struct s2s_in *in, struct xml_node *el)
{
    const char *mech = xml_get_attr(el, "mechanism");
    if (strcmp(el->name, "auth") != 0 || in->sasl_domain != NULL || !stream_is_secure(in->st)) {
        in_error(in, XML_SE_POLICY_VIOLATION, "unexpected SASL element");
        return;
    }
    if (mech == NULL || strcmp(mech, "EXTERNAL") != 0) {
        sasl_failure(in, "invalid-mechanism");
        return;
    }
    size_t len;
    const char *text = xml_text(el, &len);
    char authz[S2S_DOMAIN_MAX + 1] = "";
    if (len > 0 && !(len == 1 && text[0] == '=')) {
        unsigned char dec[SASL_MAX];
        if (len > SASL_MAX || len % 4 != 0) {
            sasl_failure(in, "incorrect-encoding");
            return;
        }
        int n = EVP_DecodeBlock(dec, (const unsigned char *)text, (int)len);
        if (n < 0) {
            sasl_failure(in, "incorrect-encoding");
            return;
        }
        while (n > 0 && len > 0 && text[len - 1] == '=') {
            n--;
            len--;
        }
        if (n == 0 || n > S2S_DOMAIN_MAX || memchr(dec, '\0', (size_t)n) != NULL) {
            sasl_failure(in, "invalid-authzid");
            return;
        }
        char raw[S2S_DOMAIN_MAX + 1];
        memcpy(raw, dec, (size_t)n);
        raw[n] = '\0';
        if (s2s_db_domain_prep(raw, authz) != 0) {
            sasl_failure(in, "invalid-authzid");
            return;
        }
    }
    const char *domain = authz[0] ? authz : in->remote;
    if (domain[0] == '\0' || (in->remote[0] && strcmp(domain, in->remote) != 0)) {
        sasl_failure(in, "invalid-authzid");
        return;
    }
    char ace[S2S_ACE_MAX + 1];
    /* A peer never speaks for one of our own domains, certificate or not. */
    if (s2s_is_local(in->s2s, domain) || s2s_policy_for(in->s2s, domain)->deny ||
        s2s_ace(domain, ace) != 0 || tls_peer_verify(stream_ssl(in->st), ace) != 0) {
        sasl_failure(in, "not-authorized");
        return;
    }
    in->sasl_domain = xstrdup(domain);
    log_info("inbound %s (%s): authenticated by certificate (SASL EXTERNAL)", domain, in->ip);
    stream_write_str(in->st, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    stream_restart(in->st);
    in->header_sent = false;
    stream_set_established(in->st);
}

/* ---- dialback ---- */

static void db_reply(struct s2s_in *in, const char *name, const char *from, const char *to,
                     const char *id, const char *type)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "<db:%s from='", name);
    xml_escape_attr(from, strlen(from), &b);
    buf_append_str(&b, "' to='");
    xml_escape_attr(to, strlen(to), &b);
    if (id != NULL) {
        buf_append_str(&b, "' id='");
        xml_escape_attr(id, strlen(id), &b);
    }
    /* type "wait": an error the peer may retry later (a limit of ours). */
    int wait = strcmp(type, "wait") == 0;
    buf_printf(&b, "' type='%s'", wait ? "error" : type);
    if (wait)
        buf_printf(&b, "><error type='wait'><resource-constraint xmlns='%s'/></error></db:%s>",
                   XML_NS_STANZAS, name);
    else if (strcmp(type, "error") == 0)
        buf_printf(&b, "><error type='cancel'><item-not-found xmlns='%s'/></error></db:%s>",
                   XML_NS_STANZAS, name);
    else
        buf_append_str(&b, "/>");
    stream_write(in->st, b.data, b.len);
    buf_free(&b);
}

static void on_dialback(struct s2s_in *in, struct xml_node *el)
{
    struct s2s *s = in->s2s;
    char from[S2S_DOMAIN_MAX + 1], to[S2S_DOMAIN_MAX + 1];
    struct s2s_db_elem d;
    if (s2s_db_parse(el, &d, from, to) != 0) {
        in_error(in, XML_SE_INVALID_XML, "malformed dialback element");
        return;
    }
    if (d.type != NULL) {
        /* We never ask on an inbound stream: an answer here is unsolicited. */
        in_error(in, XML_SE_POLICY_VIOLATION, "unsolicited dialback answer");
        return;
    }
    if (d.is_verify) {
        /* Authoritative side: valid only for a link of ours waiting on
         * exactly that stream id, with the key we would have sent. */
        char want[S2S_DB_KEY_HEXLEN + 1];
        int valid = s2s_is_local(s, d.to) && s2s_out_pending_db(s, d.to, d.from, d.id) &&
                    s2s_db_key(s->db_key, d.from, d.to, d.id, want) == 0 &&
                    s2s_db_key_equal(d.key, d.keylen, want);
        mem_wipe(want, sizeof(want));
        log_info("dialback verify %s -> %s: %s", d.to, d.from, valid ? "valid" : "invalid");
        db_reply(in, "verify", d.to, d.from, d.id, valid ? "valid" : "invalid");
        return;
    }
    const struct s2s_policy *pol = s2s_policy_for(s, d.from);
    if (!s2s_is_local(s, d.to)) {
        db_reply(in, "result", d.to, d.from, NULL, "error");
        return;
    }
    if (s2s_is_local(s, d.from)) {
        /* Our own domain is ours to claim: never verified, never valid. */
        log_info("dialback from %s (%s): claims a local domain, refused", d.from, in->ip);
        db_reply(in, "result", d.to, d.from, NULL, "invalid");
        return;
    }
    if (in->remote[0] && strcmp(in->remote, d.from) != 0 && in->npairs == 0 &&
        in->sasl_domain == NULL) {
        /* Several domains may share a stream (XEP-0220 §2.4); fine. */
        log_debug("dialback for %s on a stream opened from %s", d.from, in->remote);
    }
    if (pol->deny || !pol->dialback || pol->require_cert ||
        (pol->require_tls && !stream_is_secure(in->st))) {
        db_reply(in, "result", d.to, d.from, NULL, "invalid");
        return;
    }
    if (authenticated(in, d.from, d.to)) {
        db_reply(in, "result", d.to, d.from, NULL, "valid");
        return;
    }
    if (in->npairs + (size_t)in->pending >= IN_MAX_PAIRS) {
        in_error(in, XML_SE_POLICY_VIOLATION, "too many domains on one stream");
        return;
    }
    if (in->pending >= s->cfg->pending_dialback) {
        in_error(in, XML_SE_POLICY_VIOLATION, "too many pending dialback requests");
        return;
    }
    char key[S2S_DB_KEY_HEXLEN + 257];
    if (d.keylen >= sizeof(key)) {
        in_error(in, XML_SE_POLICY_VIOLATION, "dialback key too long");
        return;
    }
    if (s2s_out_verify_room(s, in->ip) != 0) {
        /* Each verify is a connection we make on the peer's say-so. */
        log_info("dialback %s -> %s (%s): too many verify connections, refused", d.from, d.to,
                 in->ip);
        db_reply(in, "result", d.to, d.from, NULL, "wait");
        return;
    }
    memcpy(key, d.key, d.keylen);
    key[d.keylen] = '\0';
    in->pending++;
    log_info("dialback %s -> %s on stream %s: verifying with %s", d.from, d.to, in->id, d.from);
    s2s_out_verify(s, d.to, d.from, in->id, key, in->serial, in->ip);
    mem_wipe(key, sizeof(key));
}

void s2s_in_verified(struct s2s *s, uint64_t serial, const char *local, const char *remote,
                     int valid)
{
    struct s2s_in *in = htab_get(s->in_by_serial, &serial, sizeof(serial));
    if (in == NULL || in->stream_closed)
        return;
    if (in->pending > 0)
        in->pending--;
    if (valid && !authenticated(in, remote, local)) {
        in->pairs = xreallocarray(in->pairs, in->npairs + 1, sizeof(*in->pairs));
        in->pairs[in->npairs].remote = xstrdup(remote);
        in->pairs[in->npairs].local = xstrdup(local);
        in->npairs++;
        stream_set_established(in->st);
        bidi_share(in, local, remote);
    }
    log_info("inbound %s -> %s (%s): dialback %s", remote, local, in->ip,
             valid ? "valid" : "invalid");
    db_reply(in, "result", local, remote, NULL, valid ? "valid" : "invalid");
    /* Guessing keys costs the peer nothing but us a connection each. */
    if (!valid && ++in->db_invalid >= in->s2s->cfg->db_invalid_max)
        in_error(in, XML_SE_POLICY_VIOLATION, "too many invalid dialback results");
}

/* ---- stanzas ---- */

static void on_rate_timer(uv_timer_t *t)
{
    struct s2s_in *in = t->data;
    if (in->paused && !in->stream_closed) {
        in->paused = false;
        stream_resume(in->st);
    }
}

/* Token bucket: rate stanzas per second, up to burst at once. */
static void rate_take(struct s2s_in *in)
{
    struct s2s *s = in->s2s;
    uint64_t now = uv_now(s->loop);
    in->tokens += (double)(now - in->refill_at) * s->cfg->rate / 1000.0;
    if (in->tokens > s->cfg->burst)
        in->tokens = s->cfg->burst;
    in->refill_at = now;
    in->tokens -= 1.0;
    if (in->tokens < 0 && !in->paused) {
        uint64_t wait = (uint64_t)(-in->tokens * 1000.0 / s->cfg->rate) + 1;
        in->paused = true;
        stream_pause(in->st);
        uv_timer_start(&in->rate_timer, on_rate_timer, wait, 0);
    }
}

static void on_stanza(struct s2s_in *in, struct xml_node *st)
{
    char from[S2S_DOMAIN_MAX + 1], to[S2S_DOMAIN_MAX + 1];
    enum xml_stream_err cond = s2s_stanza_domains(st, from, to);
    if (cond == XML_SE_NONE && !s2s_is_local(in->s2s, to))
        cond = XML_SE_HOST_UNKNOWN;
    if (cond == XML_SE_NONE && !authenticated(in, from, to))
        cond = XML_SE_INVALID_FROM;
    if (cond != XML_SE_NONE) {
        in_error(in, cond,
                 cond == XML_SE_INVALID_FROM ? "sender domain not authenticated on this stream"
                                             : NULL);
        xml_free(st);
        return;
    }
    rate_take(in);
    /* The tree goes to the router through our serializer (re-serialised,
     * never the received bytes). */
    s2s_deliver_local(in->s2s, st);
}

/* ---- stream callbacks ---- */

static void on_stream_open(struct stream *st, void *arg, struct xml_node *hdr)
{
    struct s2s_in *in = arg;
    const char *to = xml_get_attr(hdr, "to"), *from = xml_get_attr(hdr, "from");
    char dom[S2S_DOMAIN_MAX + 1];
    in->remote[0] = '\0';
    if (from != NULL && s2s_db_domain_prep(from, dom) == 0)
        memcpy(in->remote, dom, strlen(dom) + 1);
    int to_ok = to != NULL && s2s_db_domain_prep(to, dom) == 0 && s2s_is_local(in->s2s, dom);
    if (to_ok)
        memcpy(in->local, dom, strlen(dom) + 1);
    xml_free(hdr);
    if (strcmp(stream_content_ns(st), XML_NS_SERVER) != 0) {
        in_error(in, XML_SE_INVALID_NAMESPACE, NULL);
        return;
    }
    if (!to_ok) {
        in_error(in, XML_SE_HOST_UNKNOWN, NULL);
        return;
    }
    if (in->remote[0] && s2s_policy_for(in->s2s, in->remote)->deny) {
        in_error(in, XML_SE_POLICY_VIOLATION, "federation with this domain is off");
        return;
    }
    send_header(in);
    send_features(in);
    if (in->sasl_domain != NULL)
        bidi_share(in, in->local, in->sasl_domain);
}

static void on_element(struct stream *st, void *arg, struct xml_node *el, const char *raw,
                       size_t rawlen)
{
    struct s2s_in *in = arg;
    if (!in->header_sent) {
        xml_free(el);
        return;
    }
    int is_starttls = strcmp(el->ns, S2S_NS_TLS) == 0 && strcmp(el->name, "starttls") == 0;
    if (!stream_is_tls(st) && !is_starttls && in_policy(in)->require_tls &&
        !(strcmp(el->ns, XML_NS_STREAM) == 0 && strcmp(el->name, "error") == 0)) {
        in_error(in, XML_SE_POLICY_VIOLATION, "STARTTLS required");
    } else if (is_starttls) {
        if (stream_is_tls(st)) {
            in_error(in, XML_SE_POLICY_VIOLATION, "TLS already on");
        } else {
            stream_write_str(st, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            if (stream_starttls(st, s2s_server_ctx(in->s2s, in->local), STREAM_TLS_SERVER, NULL) !=
                0)
                stream_abort(st);
            in->header_sent = false;
        }
    } else if (strcmp(el->ns, S2S_NS_BIDI) == 0 && strcmp(el->name, "bidi") == 0) {
        /* Before authentication only (XEP-0288 §2). */
        if (!in->s2s->cfg->bidi || in->sasl_domain != NULL || in->npairs > 0)
            in_error(in, XML_SE_POLICY_VIOLATION, "bidi after authentication");
        else
            in->bidi = true;
    } else if (strcmp(el->ns, S2S_NS_SASL) == 0) {
        on_auth(in, el);
    } else if (strcmp(el->ns, S2S_NS_DIALBACK) == 0) {
        on_dialback(in, el);
    } else if (strcmp(el->ns, XML_NS_STREAM) == 0 && strcmp(el->name, "error") == 0) {
        struct xml_node *c = xml_child(el, XML_NS_STREAMS_ERR, NULL);
        log_info("stream error from %s (%s): %s", in->remote[0] ? in->remote : "?", in->ip,
                 c ? c->name : "?");
        stream_close(st);
    } else if (strcmp(el->ns, XML_NS_SERVER) == 0 &&
               (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 ||
                strcmp(el->name, "iq") == 0)) {
        on_stanza(in, el);
        return;
    } else {
        in_error(in, XML_SE_UNSUPPORTED_STANZA_TYPE, NULL);
    }
    xml_free(el);
}

static void on_stream_close(struct stream *st, void *arg)
{
    bidi_unshare(arg);
    stream_write_str(st, "</stream:stream>");
    stream_close(st);
}

static void on_error(struct stream *st, void *arg, int err, enum xml_stream_err cond,
                     const char *text)
{
    struct s2s_in *in = arg;
    log_info("inbound from %s (%s): %s%s%s", in->remote[0] ? in->remote : "?", in->ip, err_str(err),
             text ? ": " : "", text ? text : "");
    /* A failing stream takes no more of our stanzas: a link does. */
    bidi_unshare(in);
    if (cond != XML_SE_NONE && !in->header_sent && err == ERR_PARSE) {
        send_header(in);
    }
}

static void on_close(struct stream *st, void *arg)
{
    struct s2s_in *in = arg;
    struct s2s *s = in->s2s;
    in->stream_closed = true;
    bidi_unshare(in);
    htab_del(s->in_by_serial, &in->serial, sizeof(in->serial));
    s->nin--;
    ip_count(s, in->ip, -1);
    uv_close((uv_handle_t *)&in->rate_timer, on_rate_timer_closed);
}

static const struct stream_cbs in_cbs = {
    .on_stream_open = on_stream_open,
    .on_element = on_element,
    .on_stream_close = on_stream_close,
    .on_error = on_error,
    .on_close = on_close,
};

/* ---- listeners ---- */

static void on_connection(uv_stream_t *server, int status)
{
    struct s2s *s = server->data;
    if (status < 0 || s->stopping)
        return;
    size_t idx = (size_t)((uv_tcp_t *)server - s->listeners);
    struct s2s_in *in = xcalloc(1, sizeof(*in));
    in->s2s = s;
    struct stream_opts so;
    stream_opts_default(&so);
    so.handshake_ms = s->cfg->link_ms;
    /* Peers keep links open with whitespace pings; a silent one is gone. */
    so.idle_ms = s->cfg->idle_ms;
    so.limits.max_stanza_bytes = s->cfg->stanza_size;
    so.limits.max_tree_bytes = 4 * s->cfg->stanza_size;
    if (stream_accept(server, &so, &in_cbs, in, &in->st) != 0) {
        free(in);
        return;
    }
    struct sockaddr_storage ss;
    in->ip[0] = '\0';
    if (stream_peer_addr(in->st, &ss) == 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, in->ip, sizeof(in->ip));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, in->ip, sizeof(in->ip));
    }
    in->serial = s->next_serial++;
    uv_timer_init(s->loop, &in->rate_timer);
    in->rate_timer.data = in;
    in->tokens = s->cfg->burst;
    in->refill_at = uv_now(s->loop);
    s->nin++;
    ip_count(s, in->ip, +1);
    htab_set(s->in_by_serial, &in->serial, sizeof(in->serial), in);
    uintptr_t from_ip = (uintptr_t)htab_get_str(s->per_ip, in->ip);
    if (s->nin > (size_t)s->cfg->max_conns || from_ip > (uintptr_t)s->cfg->conns_per_ip) {
        log_info("connection from %s refused: over the connection limit", in->ip);
        stream_abort(in->st);
        return;
    }
    in->direct_tls = s->listener_tls[idx];
    if (in->direct_tls && stream_starttls(in->st, s->ncerts ? s->certs[0].server : NULL,
                                          STREAM_TLS_SERVER, NULL) != 0)
        stream_abort(in->st);
}

int s2s_in_listen(struct s2s *s)
{
    size_t n = 0;
    for (struct xml_node *t = s->cfg->listen ? xml_child(s->cfg->listen, NULL, "tcp") : NULL; t;
         t = xml_next(t, NULL, "tcp"))
        n++;
    s->listeners = xcalloc(n ? n : 1, sizeof(*s->listeners));
    s->listener_tls = xcalloc(n ? n : 1, sizeof(*s->listener_tls));
    if (n > 0 && s->ncerts == 0) {
        log_err("<listen> needs at least one <tls><cert/>");
        return ERR_CONFIG;
    }
    for (struct xml_node *t = s->cfg->listen ? xml_child(s->cfg->listen, NULL, "tcp") : NULL; t;
         t = xml_next(t, NULL, "tcp")) {
        const char *addr = xml_get_attr(t, "address"), *port = xml_get_attr(t, "port");
        const char *tls = xml_get_attr(t, "tls");
        struct sockaddr_storage ss;
        int p = port ? atoi(port) : 0;
        if (addr == NULL || p < 1 || p > 65535 ||
            (uv_ip4_addr(addr, p, (struct sockaddr_in *)&ss) != 0 &&
             uv_ip6_addr(addr, p, (struct sockaddr_in6 *)&ss) != 0) ||
            (tls != NULL && strcmp(tls, "direct") != 0 && strcmp(tls, "starttls") != 0)) {
            log_err("<listen><tcp address='%s' port='%s'>: invalid", addr ? addr : "",
                    port ? port : "");
            return ERR_CONFIG;
        }
        uv_tcp_t *h = &s->listeners[s->nlisteners];
        uv_tcp_init(s->loop, h);
        h->data = s;
        s->listener_tls[s->nlisteners] = tls != NULL && strcmp(tls, "direct") == 0;
        s->nlisteners++;
        int rc = uv_tcp_bind(h, (struct sockaddr *)&ss, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)h, 128, on_connection);
        if (rc != 0) {
            log_err("cannot listen on %s port %d: %s", addr, p, uv_strerror(rc));
            return ERR_SYS;
        }
        log_info("listening on %s port %d (%s)", addr, p,
                 s->listener_tls[s->nlisteners - 1] ? "direct TLS" : "STARTTLS");
    }
    return 0;
}

void s2s_in_close_all(struct s2s *s)
{
    struct htab_iter it;
    for (htab_iter_init(&it, s->in_by_serial); htab_iter_next(&it);) {
        struct s2s_in *in = it.val;
        if (in->header_sent)
            stream_error(in->st, XML_SE_SYSTEM_SHUTDOWN, NULL);
        else
            stream_abort(in->st);
    }
}
