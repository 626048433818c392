/*
 * xmppload_session.c - one client connection of the load driver.
 *
 * A session walks the client side of an RFC 6120 login: TCP connect (from a
 * chosen source address), stream header, <starttls/>, TLS handshake,
 * stream header, SASL PLAIN or SCRAM-SHA-1 (RFC 5802, checking the server's
 * signature), stream header, resource bind, legacy session only if the
 * server requires it, roster get (RFC 6121 §2.1.3), initial presence. Then
 * it is online: received <message/>s go to the run (xmppload.c), iq
 * requests get an answer, everything else is dropped.
 *
 * TLS runs through two OpenSSL memory BIOs: received ciphertext is written
 * into rbio, SSL_write output is taken from wbio. Outgoing stanzas collect
 * in a plaintext buffer and are encrypted and written once per loop
 * iteration (the run's check handle calls xmppload_session_flush_all), so a
 * burst of stanzas costs one TLS record and one write. One uv_write in
 * flight per connection, uv_try_write first.
 *
 * SCRAM: PBKDF2 would dominate the driver's CPU, so the ClientKey and
 * ServerKey for a (password, salt, iteration count) are cached, as RFC 5802
 * §5.1 allows a client to do.
 *
 * Errors never stop the run: a failing session reports why (a category
 * plus its own detail) and closes; memory is freed when both its handles
 * are closed. Single-threaded: the run's loop.
 */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/mem.h"
#include "common/scram.h"
#include "tests/bench/xmppload.h"

#define NS_TLS     "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL    "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND    "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_ROSTER  "jabber:iq:roster"
#define NS_PING    "urn:xmpp:ping"

/* One static read buffer: data is consumed inside the read callback. */
static char read_buf[64 * 1024];
static char plain_buf[64 * 1024];

static const char *state_name(enum session_state st)
{
    static const char *names[] = {"new",       "connect",      "features", "starttls",
                                  "handshake", "features-tls", "sasl",     "features-authed",
                                  "bind",      "session",      "roster",   "online",
                                  "dead"};
    return names[st];
}

static void on_handle_closed(uv_handle_t *h)
{
    struct session *s = h->data;
    if (--s->handles_open > 0)
        return;
    xml_parser_free(s->parser);
    s->parser = NULL;
    SSL_free(s->ssl); /* frees both BIOs */
    s->ssl = NULL;
    buf_free(&s->ptx);
    buf_free(&s->out);
    free(s->inflight);
    s->inflight = NULL;
    free(s->client_first_bare);
    s->client_first_bare = NULL;
}

/* Close the handles; the session must already have been reported. */
static void session_teardown(struct session *s)
{
    if (s->state == SS_DEAD)
        return;
    s->state = SS_DEAD;
    if (!uv_is_closing((uv_handle_t *)&s->timer))
        uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&s->tcp))
        uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
}

/* Something went wrong: report it (as a login failure or a dropped session)
 * and close. */
static void session_fail(struct session *s, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void session_fail(struct session *s, const char *reason, const char *fmt, ...)
{
    if (s->state == SS_DEAD)
        return;
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    char cat[96];
    snprintf(cat, sizeof(cat), "%s: %s", state_name(s->state), reason);
    if (s->state == SS_ONLINE)
        xmppload_on_dropped(s, cat, detail);
    else
        xmppload_on_failed(s, cat, detail);
    session_teardown(s);
}

static const char *ssl_err_string(char *out, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e)
        snprintf(out, len, "(no OpenSSL error)");
    else
        ERR_error_string_n(e, out, len);
    ERR_clear_error();
    return out;
}

/* ---- output ---- */

static void on_idle(uv_idle_t *h)
{
    (void)h;
}

static void mark_dirty(struct session *s)
{
    if (s->dirty || s->state == SS_DEAD)
        return;
    s->dirty = 1;
    struct xmppload *ld = s->ld;
    if (!ld->dirty_head)
        uv_idle_start(&ld->flush_idle, on_idle);
    s->next_dirty = ld->dirty_head;
    ld->dirty_head = s;
}

static void socket_write(struct session *s);

static void on_write(uv_write_t *req, int status)
{
    struct session *s = req->data;
    free(s->inflight);
    s->inflight = NULL;
    s->inflight_len = 0;
    if (s->state == SS_DEAD)
        return;
    if (status < 0) {
        session_fail(s, "write error", "%s", uv_strerror(status));
        return;
    }
    socket_write(s);
}

/* Write s->out: try first, then one uv_write for the rest. */
static void socket_write(struct session *s)
{
    if (s->inflight || s->out.len == 0 || s->state == SS_DEAD)
        return;
    uv_buf_t b = uv_buf_init(s->out.data, (unsigned)s->out.len);
    int n = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
    if (n == UV_EAGAIN)
        n = 0;
    if (n < 0) {
        session_fail(s, "write error", "%s", uv_strerror(n));
        return;
    }
    buf_consume(&s->out, (size_t)n);
    if (s->out.len == 0)
        return;
    s->inflight = buf_detach(&s->out, &s->inflight_len);
    b = uv_buf_init(s->inflight, (unsigned)s->inflight_len);
    s->write_req.data = s;
    int rc = uv_write(&s->write_req, (uv_stream_t *)&s->tcp, &b, 1, on_write);
    if (rc < 0) {
        free(s->inflight);
        s->inflight = NULL;
        session_fail(s, "write error", "%s", uv_strerror(rc));
    }
}

/* Move ciphertext SSL produced into s->out. */
static void drain_wbio(struct session *s)
{
    size_t pending;
    while ((pending = BIO_ctrl_pending(s->wbio)) > 0) {
        buf_reserve(&s->out, pending);
        int n = BIO_read(s->wbio, s->out.data + s->out.len, (int)pending);
        if (n <= 0)
            break;
        s->out.len += (size_t)n;
        s->out.data[s->out.len] = '\0';
    }
}

static void session_flush(struct session *s)
{
    if (s->state == SS_DEAD)
        return;
    if (s->ptx.len && s->ssl && SSL_is_init_finished(s->ssl)) {
        int n = SSL_write(s->ssl, s->ptx.data, (int)s->ptx.len);
        if (n <= 0) {
            char e[160];
            session_fail(s, "TLS write failed", "%s", ssl_err_string(e, sizeof(e)));
            return;
        }
        buf_consume(&s->ptx, (size_t)n);
    } else if (s->ptx.len && !s->ssl) {
        buf_append(&s->out, s->ptx.data, s->ptx.len);
        buf_reset(&s->ptx);
    }
    if (s->ssl)
        drain_wbio(s);
    socket_write(s);
}

void xmppload_session_flush_all(struct xmppload *ld)
{
    while (ld->dirty_head) {
        struct session *s = ld->dirty_head;
        ld->dirty_head = s->next_dirty;
        s->next_dirty = NULL;
        s->dirty = 0;
        session_flush(s);
    }
    uv_idle_stop(&ld->flush_idle);
}

void xmppload_session_send_now(struct session *s, const char *data, size_t len)
{
    if (s->state == SS_DEAD)
        return;
    buf_append(&s->ptx, data, len);
    /* not marked dirty: nothing is left for the flush check to write, and
     * the loop need not spin once more for it */
    session_flush(s);
}

void xmppload_session_send(struct session *s, const char *data, size_t len)
{
    if (s->state == SS_DEAD)
        return;
    buf_append(&s->ptx, data, len);
    mark_dirty(s);
}

size_t xmppload_session_queued(const struct session *s)
{
    return s->ptx.len + s->out.len + s->inflight_len;
}

static void send_str(struct session *s, const char *str)
{
    xmppload_session_send(s, str, strlen(str));
}

static void send_stream_header(struct session *s)
{
    struct buf *b = &s->ld->scratch;
    buf_reset(b);
    buf_printf(b,
               "<?xml version='1.0'?><stream:stream to='%s' version='1.0' "
               "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
               s->domain);
    xmppload_session_send(s, b->data, b->len);
}

void xmppload_session_close(struct session *s)
{
    if (s->state == SS_DEAD)
        return;
    send_str(s, "</stream:stream>");
    session_flush(s);
    s->state = SS_NEW; /* not online any more: a close now is no "drop" */
    session_teardown(s);
}

/* ---- base64 ---- */

static void b64_encode(const unsigned char *in, size_t len, struct buf *out)
{
    buf_reserve(out, 4 * ((len + 2) / 3) + 1);
    int n = EVP_EncodeBlock((unsigned char *)out->data + out->len, in, (int)len);
    out->len += (size_t)n;
    out->data[out->len] = '\0';
}

/* Decode base64 text (whitespace ignored) into out; -1 if malformed. */
static int b64_decode(const char *in, size_t len, struct buf *out)
{
    char clean[1024];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == ' ' || in[i] == '\n' || in[i] == '\r' || in[i] == '\t')
            continue;
        if (n >= sizeof(clean))
            return -1;
        clean[n++] = in[i];
    }
    if (n % 4)
        return -1;
    buf_reset(out);
    if (n == 0)
        return 0;
    buf_reserve(out, n / 4 * 3 + 1);
    int m = EVP_DecodeBlock((unsigned char *)out->data, (unsigned char *)clean, (int)n);
    if (m < 0)
        return -1;
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (clean[n - 1] == '=')
        m--;
    if (clean[n - 2] == '=')
        m--;
    out->len = (size_t)m;
    out->data[out->len] = '\0';
    return 0;
}

/* ---- SASL ---- */

static void send_auth_plain(struct session *s)
{
    struct buf raw = BUF_INIT, b = BUF_INIT;
    buf_append_byte(&raw, '\0');
    buf_append_str(&raw, s->user);
    buf_append_byte(&raw, '\0');
    buf_append_str(&raw, s->ld->o.password);
    buf_append_str(&b, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>");
    b64_encode((unsigned char *)raw.data, raw.len, &b);
    buf_append_str(&b, "</auth>");
    xmppload_session_send(s, b.data, b.len);
    mem_wipe(raw.data, raw.len);
    buf_free(&raw);
    buf_free(&b);
}

/* saslname (RFC 5802 §5.1): ',' and '=' escaped. */
static void append_saslname(struct buf *b, const char *name)
{
    for (const char *p = name; *p; p++) {
        if (*p == ',')
            buf_append_str(b, "=2C");
        else if (*p == '=')
            buf_append_str(b, "=3D");
        else
            buf_append_byte(b, *p);
    }
}

static void send_auth_scram(struct session *s)
{
    unsigned char rnd[18];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        session_fail(s, "no random bytes", "RAND_bytes failed");
        return;
    }
    struct buf nonce = BUF_INIT;
    b64_encode(rnd, sizeof(rnd), &nonce); /* 24 characters, no ',' */
    snprintf(s->cnonce, sizeof(s->cnonce), "%s", nonce.data);
    buf_free(&nonce);

    struct buf first = BUF_INIT, b = BUF_INIT;
    buf_append_str(&first, "n=");
    append_saslname(&first, s->user);
    buf_printf(&first, ",r=%s", s->cnonce);
    free(s->client_first_bare);
    s->client_first_bare = xstrdup(first.data);

    struct buf msg = BUF_INIT;
    buf_printf(&msg, "n,,%s", first.data);
    buf_append_str(&b, "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-1'>");
    b64_encode((unsigned char *)msg.data, msg.len, &b);
    buf_append_str(&b, "</auth>");
    xmppload_session_send(s, b.data, b.len);
    buf_free(&first);
    buf_free(&msg);
    buf_free(&b);
}

/* The cached keys for (password, salt, iterations), derived on a miss. */
static const struct scram_cache_entry *scram_keys_for(struct xmppload *ld, const char *salt,
                                                      size_t salt_len, unsigned iter)
{
    struct buf key = BUF_INIT;
    buf_printf(&key, "%u:%zu:", iter, salt_len);
    buf_append(&key, salt, salt_len);
    buf_append_str(&key, ld->o.password);
    struct scram_cache_entry *e = htab_get(ld->scram_cache, key.data, key.len);
    if (!e) {
        unsigned char salted[20];
        const char *pw = ld->o.password;
        if (scram_salted_password(SCRAM_SHA1, pw, strlen(pw), (const unsigned char *)salt, salt_len,
                                  iter, salted) < 0) {
            mem_wipe(key.data, key.len);
            buf_free(&key);
            return NULL;
        }
        e = xcalloc(1, sizeof(*e));
        scram_hmac(SCRAM_SHA1, salted, 20, "Client Key", 10, e->client_key);
        scram_hmac(SCRAM_SHA1, salted, 20, "Server Key", 10, e->server_key);
        mem_wipe(salted, sizeof(salted));
        htab_put(ld->scram_cache, key.data, key.len, e);
    }
    mem_wipe(key.data, key.len);
    buf_free(&key);
    return e;
}

/* server-first-message -> client-final-message. */
static void on_scram_challenge(struct session *s, const char *text, size_t len)
{
    struct buf sf = BUF_INIT, salt = BUF_INIT;
    if (b64_decode(text, len, &sf) < 0 || sf.len == 0) {
        session_fail(s, "bad SCRAM challenge", "base64");
        goto out;
    }
    const char *r = NULL, *sb64 = NULL;
    size_t rlen = 0, slen = 0;
    unsigned long iter = 0;
    for (char *p = sf.data; p && *p;) {
        char *end = strchr(p, ',');
        size_t flen = end ? (size_t)(end - p) : strlen(p);
        if (flen >= 2 && p[1] == '=') {
            if (p[0] == 'r') {
                r = p + 2;
                rlen = flen - 2;
            } else if (p[0] == 's') {
                sb64 = p + 2;
                slen = flen - 2;
            } else if (p[0] == 'i') {
                iter = strtoul(p + 2, NULL, 10);
            } else if (p[0] == 'm') {
                session_fail(s, "bad SCRAM challenge", "mandatory extension");
                goto out;
            }
        }
        p = end ? end + 1 : NULL;
    }
    size_t clen = strlen(s->cnonce);
    if (!r || !sb64 || !iter || rlen <= clen || memcmp(r, s->cnonce, clen) != 0) {
        session_fail(s, "bad SCRAM challenge", "%.100s", sf.data);
        goto out;
    }
    if (b64_decode(sb64, slen, &salt) < 0 || salt.len == 0) {
        session_fail(s, "bad SCRAM challenge", "salt");
        goto out;
    }
    const struct scram_cache_entry *k = scram_keys_for(s->ld, salt.data, salt.len, (unsigned)iter);
    if (!k) {
        session_fail(s, "bad SCRAM challenge", "salt or iteration count (%lu) refused", iter);
        goto out;
    }

    struct buf fin = BUF_INIT, auth_msg = BUF_INIT, b = BUF_INIT;
    buf_append_str(&fin, "c=biws,r="); /* biws = base64("n,,") */
    buf_append(&fin, r, rlen);
    buf_printf(&auth_msg, "%s,%s,%s", s->client_first_bare, sf.data, fin.data);

    unsigned char stored[20], client_sig[20], proof[20];
    scram_h(SCRAM_SHA1, k->client_key, 20, stored);
    scram_hmac(SCRAM_SHA1, stored, 20, auth_msg.data, auth_msg.len, client_sig);
    for (int i = 0; i < 20; i++)
        proof[i] = k->client_key[i] ^ client_sig[i];
    scram_hmac(SCRAM_SHA1, k->server_key, 20, auth_msg.data, auth_msg.len, s->server_sig);
    buf_append_str(&fin, ",p=");
    b64_encode(proof, 20, &fin);

    buf_append_str(&b, "<response xmlns='" NS_SASL "'>");
    b64_encode((unsigned char *)fin.data, fin.len, &b);
    buf_append_str(&b, "</response>");
    xmppload_session_send(s, b.data, b.len);
    mem_wipe(proof, sizeof(proof));
    mem_wipe(client_sig, sizeof(client_sig));
    buf_free(&fin);
    buf_free(&auth_msg);
    buf_free(&b);
out:
    buf_free(&sf);
    buf_free(&salt);
}

/* <success/>: for SCRAM, the server must prove it knows the password. */
static int check_success(struct session *s, const char *text, size_t len)
{
    if (s->ld->o.mech != MECH_SCRAM_SHA1)
        return 0;
    struct buf v = BUF_INIT, want = BUF_INIT;
    int ok = 0;
    if (b64_decode(text, len, &v) == 0) {
        buf_append_str(&want, "v=");
        b64_encode(s->server_sig, 20, &want);
        ok = v.len == want.len && memcmp(v.data, want.data, v.len) == 0;
    }
    buf_free(&v);
    buf_free(&want);
    return ok ? 0 : -1;
}

/* ---- stanzas ---- */

static const char *first_child_name(const struct xml_node *e)
{
    for (const struct xml_node *c = e->children; c; c = c->next)
        if (c->type == XML_ELEM)
            return c->name;
    return "(none)";
}

static void send_bind(struct session *s)
{
    struct buf *b = &s->ld->scratch;
    buf_reset(b);
    buf_printf(
        b, "<iq type='set' id='bind'><bind xmlns='" NS_BIND "'><resource>%s</resource></bind></iq>",
        s->ld->o.resource);
    xmppload_session_send(s, b->data, b->len);
    s->state = SS_BIND;
}

static void send_roster_get(struct session *s)
{
    send_str(s, "<iq type='get' id='roster'><query xmlns='" NS_ROSTER "'/></iq>");
    s->state = SS_ROSTER;
}

static void on_features(struct session *s, struct xml_node *f)
{
    switch (s->state) {
    case SS_FEATURES_PLAIN:
        if (!xml_child(f, NS_TLS, "starttls")) {
            session_fail(s, "no STARTTLS offered", "%s", "");
            return;
        }
        send_str(s, "<starttls xmlns='" NS_TLS "'/>");
        s->state = SS_PROCEED;
        return;
    case SS_FEATURES_TLS: {
        const char *want = s->ld->o.mech == MECH_PLAIN ? "PLAIN" : "SCRAM-SHA-1";
        struct xml_node *mechs = xml_child(f, NS_SASL, "mechanisms");
        int found = 0;
        for (struct xml_node *m = mechs ? xml_child(mechs, NS_SASL, "mechanism") : NULL;
             m && !found; m = xml_next(m, NS_SASL, "mechanism")) {
            const char *t = xml_text(m, NULL);
            found = t && strcmp(t, want) == 0;
        }
        if (!found) {
            session_fail(s, "mechanism not offered", "%s", want);
            return;
        }
        s->state = SS_AUTH;
        if (s->ld->o.mech == MECH_PLAIN)
            send_auth_plain(s);
        else
            send_auth_scram(s);
        return;
    }
    case SS_FEATURES_AUTHED: {
        if (!xml_child(f, NS_BIND, "bind")) {
            session_fail(s, "no resource binding offered", "%s", "");
            return;
        }
        struct xml_node *sess = xml_child(f, NS_SESSION, "session");
        s->session_required = sess && !xml_child(sess, NS_SESSION, "optional");
        send_bind(s);
        return;
    }
    default:
        session_fail(s, "unexpected stream features", "%s", "");
    }
}

static int start_tls(struct session *s)
{
    s->ssl = SSL_new(s->ld->ssl_ctx);
    if (!s->ssl)
        return -1;
    s->rbio = BIO_new(BIO_s_mem());
    s->wbio = BIO_new(BIO_s_mem());
    if (!s->rbio || !s->wbio) {
        BIO_free(s->rbio);
        BIO_free(s->wbio);
        s->rbio = s->wbio = NULL;
        return -1;
    }
    /* An empty memory BIO means "try again", not end of file. */
    BIO_set_mem_eof_return(s->rbio, -1);
    SSL_set_bio(s->ssl, s->rbio, s->wbio);
    SSL_set_connect_state(s->ssl);
    SSL_set_tlsext_host_name(s->ssl, s->domain);
    return 0;
}

/* Run the handshake as far as the received bytes allow. */
static void handshake_step(struct session *s)
{
    int rc = SSL_do_handshake(s->ssl);
    if (rc == 1) {
        s->state = SS_FEATURES_TLS;
        xml_parser_reset(s->parser);
        send_stream_header(s);
        mark_dirty(s);
        return;
    }
    int err = SSL_get_error(s->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        mark_dirty(s); /* the handshake may have produced bytes to send */
        return;
    }
    char e[160];
    session_fail(s, "TLS handshake failed", "%s", ssl_err_string(e, sizeof(e)));
}

static void answer_iq(struct session *s, struct xml_node *iq)
{
    const char *type = xml_get_attr(iq, "type");
    if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
        return;
    const char *id = xml_get_attr(iq, "id");
    const char *from = xml_get_attr(iq, "from");
    struct buf *b = &s->ld->scratch;
    buf_reset(b);
    buf_append_str(b, "<iq id='");
    xml_escape_attr(id ? id : "", id ? strlen(id) : 0, b);
    buf_append_byte(b, '\'');
    if (from) {
        buf_append_str(b, " to='");
        xml_escape_attr(from, strlen(from), b);
        buf_append_byte(b, '\'');
    }
    if (xml_child(iq, NS_PING, "ping"))
        buf_append_str(b, " type='result'/>");
    else
        buf_append_str(b, " type='error'><error type='cancel'><service-unavailable "
                          "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
    xmppload_session_send(s, b->data, b->len);
}

static void on_iq(struct session *s, struct xml_node *iq)
{
    const char *type = xml_get_attr(iq, "type");
    const char *id = xml_get_attr(iq, "id");
    type = type ? type : "";
    id = id ? id : "";
    int result = strcmp(type, "result") == 0;
    int error = strcmp(type, "error") == 0;
    if (!result && !error) {
        answer_iq(s, iq);
        return;
    }
    struct xml_node *err = error ? xml_child(iq, XML_NS_CLIENT, "error") : NULL;
    if (s->state == SS_BIND && strcmp(id, "bind") == 0) {
        if (error) {
            session_fail(s, "bind refused", "%s", err ? first_child_name(err) : "");
            return;
        }
        if (s->session_required) {
            send_str(s, "<iq type='set' id='sess'><session xmlns='" NS_SESSION "'/></iq>");
            s->state = SS_SESSION;
        } else {
            send_roster_get(s);
        }
    } else if (s->state == SS_SESSION && strcmp(id, "sess") == 0) {
        if (error) {
            session_fail(s, "session refused", "%s", err ? first_child_name(err) : "");
            return;
        }
        send_roster_get(s);
    } else if (s->state == SS_ROSTER && strcmp(id, "roster") == 0) {
        if (error) {
            session_fail(s, "roster get refused", "%s", err ? first_child_name(err) : "");
            return;
        }
        send_str(s, "<presence/>");
        s->state = SS_ONLINE;
        uv_timer_stop(&s->timer);
        xmppload_on_online(s);
    }
}

static void on_sasl(struct session *s, struct xml_node *e)
{
    size_t len = 0;
    const char *text = xml_text(e, &len);
    if (!text)
        text = "";
    if (strcmp(e->name, "challenge") == 0 && s->ld->o.mech == MECH_SCRAM_SHA1 &&
        s->client_first_bare[0]) {
        on_scram_challenge(s, text, len);
    } else if (strcmp(e->name, "success") == 0) {
        if (check_success(s, text, len) < 0) {
            session_fail(s, "server signature wrong", "%s", "");
            return;
        }
        s->state = SS_FEATURES_AUTHED;
        xml_parser_reset(s->parser);
        send_stream_header(s);
    } else if (strcmp(e->name, "failure") == 0) {
        session_fail(s, "SASL failure", "%s", first_child_name(e));
    } else {
        session_fail(s, "unexpected SASL element", "%s", e->name);
    }
}

static void on_element(void *arg, struct xml_node *e, const char *raw, size_t rawlen)
{
    struct session *s = arg;
    (void)raw;
    (void)rawlen;
    if (s->state == SS_DEAD)
        goto out;
    if (strcmp(e->ns, XML_NS_STREAM) == 0) {
        if (strcmp(e->name, "features") == 0)
            on_features(s, e);
        else if (strcmp(e->name, "error") == 0)
            session_fail(s, "stream error", "%s", first_child_name(e));
        else
            session_fail(s, "unexpected stream element", "%s", e->name);
    } else if (s->state == SS_PROCEED && strcmp(e->ns, NS_TLS) == 0) {
        if (strcmp(e->name, "proceed") != 0) {
            session_fail(s, "STARTTLS refused", "%s", e->name);
            goto out;
        }
        if (start_tls(s) < 0) {
            char err[160];
            session_fail(s, "TLS setup failed", "%s", ssl_err_string(err, sizeof(err)));
            goto out;
        }
        s->state = SS_HANDSHAKE;
        xml_parser_reset(s->parser);
        handshake_step(s);
    } else if (s->state == SS_AUTH && strcmp(e->ns, NS_SASL) == 0) {
        on_sasl(s, e);
    } else if (strcmp(e->ns, XML_NS_CLIENT) == 0 && strcmp(e->name, "message") == 0) {
        if (s->state == SS_ONLINE)
            xmppload_on_message(s, e);
    } else if (strcmp(e->ns, XML_NS_CLIENT) == 0 && strcmp(e->name, "iq") == 0) {
        on_iq(s, e);
    }
    /* presence and anything else: not what we measure */
out:
    xml_free(e);
}

static void on_stream_open(void *arg, struct xml_node *hdr)
{
    (void)arg;
    xml_free(hdr);
}

static void on_stream_close(void *arg)
{
    struct session *s = arg;
    session_fail(s, "server closed the stream", "%s", "");
}

static void on_parse_error(void *arg, enum xml_stream_err cond, const char *text)
{
    struct session *s = arg;
    session_fail(s, "unparsable data from server", "%s: %s", xml_stream_err_name(cond),
                 text ? text : "");
}

static const struct xml_parser_cbs parser_cbs = {
    .on_stream_open = on_stream_open,
    .on_element = on_element,
    .on_stream_close = on_stream_close,
    .on_error = on_parse_error,
};

/* ---- input ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    *b = uv_buf_init(read_buf, sizeof(read_buf));
}

static void feed(struct session *s, const char *data, size_t len)
{
    /* a parse error or a close is reported through the callbacks */
    (void)xml_parser_feed(s->parser, data, len);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct session *s = stream->data;
    if (s->state == SS_DEAD)
        return;
    if (nread < 0) {
        session_fail(s, nread == UV_EOF ? "connection closed by server" : "read error", "%s",
                     uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    /* the arrival time of every stanza in these bytes: the time spent on
     * the stanzas before them (TLS, parsing) is the driver's, not the
     * server's */
    s->ld->rx_ns = xmppload_now_ns();
    if (!s->ssl) {
        feed(s, b->base, (size_t)nread);
        return;
    }
    BIO_write(s->rbio, b->base, (int)nread);
    if (s->state == SS_HANDSHAKE) {
        handshake_step(s);
        if (s->state != SS_FEATURES_TLS)
            return;
    }
    while (s->state != SS_DEAD) {
        int n = SSL_read(s->ssl, plain_buf, sizeof(plain_buf));
        if (n > 0) {
            feed(s, plain_buf, (size_t)n);
            continue;
        }
        int err = SSL_get_error(s->ssl, n);
        if (err == SSL_ERROR_WANT_READ)
            break;
        if (err == SSL_ERROR_ZERO_RETURN) {
            session_fail(s, "server closed TLS", "%s", "close_notify");
        } else {
            char e[160];
            session_fail(s, "TLS read failed", "%s", ssl_err_string(e, sizeof(e)));
        }
        break;
    }
    /* TLS 1.3 may answer (key updates) inside SSL_read */
    if (s->state != SS_DEAD && BIO_ctrl_pending(s->wbio))
        mark_dirty(s);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct session *s = req->data;
    if (s->state == SS_DEAD)
        return;
    if (status < 0) {
        session_fail(s, "connect failed", "%s", uv_strerror(status));
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
    if (rc < 0) {
        session_fail(s, "read start failed", "%s", uv_strerror(rc));
        return;
    }
    s->state = SS_FEATURES_PLAIN;
    send_stream_header(s);
}

static void on_timeout(uv_timer_t *t)
{
    struct session *s = t->data;
    session_fail(s, "timeout", "no login within %.0f s", s->ld->o.timeout);
}

void xmppload_session_start(struct session *s)
{
    struct xmppload *ld = s->ld;
    s->t_start = xmppload_now_ns();
    s->parser = xml_parser_new(NULL, &parser_cbs, s);
    buf_init(&s->ptx);
    buf_init(&s->out);
    s->client_first_bare = xstrdup("");
    uv_tcp_init(ld->loop, &s->tcp);
    uv_timer_init(ld->loop, &s->timer);
    s->tcp.data = s;
    s->timer.data = s;
    s->handles_open = 2;
    s->state = SS_CONNECTING;
    uv_timer_start(&s->timer, on_timeout, (uint64_t)(ld->o.timeout * 1000), 0);
    uv_tcp_nodelay(&s->tcp, 1);
    int rc = 0;
    if (ld->o.sources) {
        struct sockaddr_in src;
        memset(&src, 0, sizeof(src));
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(ld->o.source_base + s->idx % ld->o.sources);
        rc = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&src, 0);
        if (rc < 0) {
            session_fail(s, "bind to source address failed", "%s", uv_strerror(rc));
            return;
        }
    }
    s->connect_req.data = s;
    rc = uv_tcp_connect(&s->connect_req, &s->tcp, s->server, on_connect);
    if (rc < 0)
        session_fail(s, "connect failed", "%s", uv_strerror(rc));
}
