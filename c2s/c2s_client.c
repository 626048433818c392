/*
 * c2s_client.c - one client connection: stream header checks (RFC 6120
 * §4.7), features, STARTTLS, the SASL and bind gates, stanzas to the sm,
 * the byte token bucket, pings to silent clients, and every stream error.
 *
 * A struct c2s_client is created when a connection is accepted and lives
 * until its stream's on_close, or longer while an asynchronous job (a
 * storage query, a PLAIN check in the thread pool) holds it: such a job
 * finds cl->closed set and only drops its hold. Runs on the c2s loop.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "c2s/c2s.h"
#include "common/arena.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rand.h"

static void client_free(struct c2s_client *cl)
{
    jid_free(cl->jid);
    free(cl->user);
    free(cl->bind_id);
    xml_free(cl->presence);
    c2s_sasl_free(cl);
    free(cl);
}

/* The peer's address as text, for log lines. */
static const char *peer(const struct c2s_client *cl, char *buf, size_t len)
{
    if (inet_ntop(cl->iplen == 4 ? AF_INET : AF_INET6, cl->ip, buf, len) == NULL)
        snprintf(buf, len, "?");
    return buf;
}

static void send_header(struct c2s_client *cl)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<?xml version='1.0'?><stream:stream xmlns='" XML_NS_CLIENT
                       "' xmlns:stream='" XML_NS_STREAM "'");
    if (cl->domain != NULL) {
        buf_append_str(&b, " from='");
        xml_escape_attr(cl->domain->name, strlen(cl->domain->name), &b);
        buf_append_byte(&b, '\'');
    }
    buf_printf(&b, " id='%s' version='1.0' xml:lang='en'>", cl->id);
    stream_write(cl->s, b.data, b.len);
    buf_free(&b);
    cl->header_sent = true;
}

void c2s_client_down(struct c2s_client *cl)
{
    cl->state = CL_DOWN;
    /* The sm learns at once, not when the socket is gone (up to close_ms
     * later): meanwhile its stanzas for this session would be lost, while
     * as an unknown sid they are returned to it (sm/SESSION.md). */
    c2s_sess_end(cl);
}

void c2s_client_fail(struct c2s_client *cl, enum xml_stream_err cond, const char *text)
{
    if (cl->state == CL_DOWN || cl->closed)
        return;
    char ip[INET6_ADDRSTRLEN];
    log_info("client %s %s: stream error %s%s%s", peer(cl, ip, sizeof(ip)),
             cl->jid    ? jid_full_str(cl->jid)
             : cl->user ? cl->user
                        : "-",
             xml_stream_err_name(cond), text ? ": " : "", text ? text : "");
    /* RFC 6120 §4.9.1.1: the error needs our header first. */
    if (!cl->header_sent && (!stream_is_tls(cl->s) || stream_is_secure(cl->s)))
        send_header(cl);
    c2s_client_down(cl);
    stream_error(cl->s, cond, text);
}

void c2s_client_write_node(struct c2s_client *cl, struct xml_node *stanza)
{
    struct buf b = BUF_INIT;
    xml_serialize(stanza, XML_NS_CLIENT, &b);
    if (stream_write(cl->s, b.data, b.len) == ERR_AGAIN)
        c2s_client_fail(cl, XML_SE_POLICY_VIOLATION, "not reading its stream");
    buf_free(&b);
}

/* ---- timers held only while in use ---- */

static void on_timer_closed(uv_handle_t *h)
{
    free(h);
}

static void timer_drop(uv_timer_t **t)
{
    if (*t != NULL) {
        uv_close((uv_handle_t *)*t, on_timer_closed);
        *t = NULL;
    }
}

static void on_throttle_end(uv_timer_t *t)
{
    struct c2s_client *cl = t->data;
    timer_drop(&cl->throttle);
    if (!cl->closed)
        stream_resume(cl->s);
}

/* Token bucket on the bytes the client sent: refill at rate_bytes per
 * second up to one stanza's size; a client in debt stops being read until
 * the bucket is positive again. Nothing is dropped. */
static void throttle_check(struct c2s_client *cl, uint64_t now)
{
    struct c2s *c = cl->c2s;
    if (c->cfg.rate_bytes == 0 || cl->throttle != NULL || cl->closed)
        return;
    struct stream_stats st;
    stream_stats(cl->s, &st);
    double rate = (double)c->cfg.rate_bytes;
    cl->tokens += (double)(now - cl->tb_stamp) * rate / 1000.0;
    if (cl->tokens > (double)c->cfg.stanza_size)
        cl->tokens = (double)c->cfg.stanza_size;
    cl->tb_stamp = now;
    cl->tokens -= (double)(st.bytes_in - cl->tb_bytes);
    cl->tb_bytes = st.bytes_in;
    if (cl->tokens >= 0)
        return;
    uint64_t wait = (uint64_t)(-cl->tokens * 1000.0 / rate) + 1;
    cl->throttle = xmalloc(sizeof(*cl->throttle));
    uv_timer_init(c->loop, cl->throttle);
    cl->throttle->data = cl;
    uv_timer_start(cl->throttle, on_throttle_end, wait, 0);
    stream_pause(cl->s);
    log_debug("client throttled for %llu ms", (unsigned long long)wait);
}

/* ---- accepting ---- */

static const struct stream_cbs client_cbs;

static void refuse_log(struct c2s *c, const char *why)
{
    if (!c->full_logged) {
        c->full_logged = true;
        log_warn("refusing connections: %s", why);
    }
}

void c2s_client_accept(struct c2s *c, struct c2s_listener *l)
{
    struct stream *s;
    if (stream_accept((uv_stream_t *)&l->tcp, &c->sopts, &client_cbs, NULL, &s) != 0) {
        c2s_accept_failed(c, l->desc, "uv_accept failed");
        return;
    }
    struct c2s_client *cl = xcalloc(1, sizeof(*cl));
    cl->c2s = c;
    cl->s = s;
    cl->direct_tls = l->direct_tls;
    stream_set_owner(s, &client_cbs, cl);
    rand_id_hex(cl->id);
    cl->next = c->clients;
    if (c->clients != NULL)
        c->clients->prev = cl;
    c->clients = cl;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    int prc = stream_peer_addr(s, &ss);
    if (prc == 0 && ss.ss_family == AF_INET) {
        memcpy(cl->ip, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        cl->iplen = 4;
    } else if (prc == 0 && ss.ss_family == AF_INET6) {
        memcpy(cl->ip, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        cl->iplen = 16;
    } else {
        /* Reset before we got to it (ENOTCONN): with no address there is
         * nothing to key the per-IP limits on, and no one to answer. It
         * counts nowhere; the log line is rate-limited (apart from
         * accept's). */
        c2s_peerless(c, l->desc, prc != 0 ? "no peer address (reset?)" : "not IP");
        cl->state = CL_DOWN;
        stream_abort(s);
        return;
    }
    uint64_t now = uv_now(c->loop);
    cl->tb_stamp = cl->last_rx_time = now;
    cl->tokens = (double)c->cfg.stanza_size;

    /* A refused connection takes no slot in the totals (one address could
     * otherwise fill them with refusals) and spends a connect token like
     * any other, so a flood stays refused until it slows down. */
    enum xml_stream_err cond = XML_SE_NONE;
    const char *why = NULL;
    c2s_ip_key(c, cl);
    struct c2s_ip *ip = c2s_ip_get(c, cl);
    ip->tokens += (double)(now - ip->stamp) * c->cfg.connect_rate / 1000.0;
    if (ip->tokens > 2.0 * c->cfg.connect_rate)
        ip->tokens = 2.0 * c->cfg.connect_rate;
    ip->stamp = now;
    if (c->stopping) {
        cond = XML_SE_SYSTEM_SHUTDOWN;
    } else if (c->nclients >= (size_t)c->cfg.max_conns) {
        cond = XML_SE_RESOURCE_CONSTRAINT;
        why = "too many connections";
    } else if (c->npreauth >= (size_t)c->cfg.max_preauth) {
        cond = XML_SE_RESOURCE_CONSTRAINT;
        why = "too many unauthenticated connections";
    } else if (ip->conns >= c->cfg.conns_per_ip) {
        cond = XML_SE_POLICY_VIOLATION;
        why = "too many connections from your address";
    } else if (ip->tokens < 1.0) {
        cond = XML_SE_POLICY_VIOLATION;
        why = "connecting too fast";
    }
    /* The debt is bounded: a flood that stops is served again within
     * about two seconds. */
    if (ip->tokens > -2.0 * c->cfg.connect_rate)
        ip->tokens -= 1.0;
    if (cond == XML_SE_NONE) {
        c->nclients++;
        c->npreauth++;
        cl->admitted = true;
        cl->preauth = true;
        ip->conns++;
        cl->counted = true;
        if (c->full_logged) {
            c->full_logged = false;
            log_notice("accepting connections again");
        }
    } else {
        if (why != NULL)
            refuse_log(c, why);
        /* The error is written, then the socket closed soon whether or not
         * the peer closes its side. */
        stream_set_close_ms(s, C2S_REFUSE_CLOSE_MS);
    }
    if (cl->direct_tls) {
        if (cond != XML_SE_NONE ||
            stream_starttls(s, c->tls_default, STREAM_TLS_SERVER, NULL) != 0) {
            /* Refused on a direct TLS port: a plain close, no reason.
             * A stream error would need the TLS handshake first, and
             * refusals are what a connection flood gets: finishing a
             * handshake for each (a private-key operation) would spend
             * the CPU the limits are there to protect. A client sees the
             * handshake fail and retries later, as for any failure. */
            cl->state = CL_DOWN;
            stream_abort(s);
        }
        return;
    }
    if (cond != XML_SE_NONE)
        c2s_client_fail(cl, cond, why);
}

/* ---- the stream header ---- */

static void send_features(struct c2s_client *cl)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<stream:features>");
    if (cl->user != NULL) {
        /* The sm implements roster versioning and subscription
         * pre-approval (RFC 6121 §2.6.1, §3.4.1). */
        buf_append_str(&b, "<bind xmlns='" C2S_NS_BIND "'/><session xmlns='" C2S_NS_SESSREQ
                           "'><optional/></session><ver xmlns='urn:xmpp:features:rosterver'/>"
                           "<sub xmlns='urn:xmpp:features:pre-approval'/>");
    } else {
        bool tls = stream_is_tls(cl->s);
        if (!tls)
            buf_printf(&b, "<starttls xmlns='" C2S_NS_TLS "'>%s</starttls>",
                       cl->domain->tls_required ? "<required/>" : "");
        if (tls || !cl->domain->tls_required)
            c2s_sasl_features(cl, &b);
    }
    buf_append_str(&b, "</stream:features>");
    stream_write(cl->s, b.data, b.len);
    buf_free(&b);
}

static void on_stream_open(struct stream *s, void *arg, struct xml_node *hdr)
{
    struct c2s_client *cl = arg;
    struct c2s *c = cl->c2s;
    (void)s;
    const char *to = xml_get_attr(hdr, "to");
    const char *version = xml_get_attr(hdr, "version");
    char *dom = NULL;
    enum xml_stream_err cond = XML_SE_NONE;
    const char *why = NULL;
    struct c2s_domain *d = NULL;
    if (to != NULL && jid_prep_domain(to, strlen(to), &dom, NULL) == 0)
        d = c2s_domain_get(c, dom);
    free(dom);
    if (strcmp(stream_content_ns(cl->s), XML_NS_CLIENT) != 0) {
        cond = XML_SE_INVALID_NAMESPACE;
        why = "the content namespace must be jabber:client";
    } else if (version == NULL || strncmp(version, "1.", 2) != 0) {
        cond = XML_SE_UNSUPPORTED_VERSION;
        why = "version 1.0 is required";
    } else if (cl->domain != NULL && d != cl->domain) {
        /* CVE-2018-10847: the host chosen first stays, across STARTTLS and
         * SASL restarts. */
        cond = XML_SE_HOST_UNKNOWN;
        why = "a restarted stream must name the same host";
    } else if (d == NULL) {
        cond = XML_SE_HOST_UNKNOWN;
    }
    if (cond == XML_SE_NONE && cl->domain == NULL)
        cl->domain = d;
    xml_free(hdr);
    if (cond != XML_SE_NONE) {
        c2s_client_fail(cl, cond, why);
        return;
    }
    if (!d->up || !c->sm_up) {
        /* Hosted, but its sm is gone (or not up yet): come back later. */
        c2s_client_fail(cl, XML_SE_REMOTE_CONNECTION_FAILED, "the session manager is unavailable");
        return;
    }
    send_header(cl);
    send_features(cl);
    cl->state = cl->user != NULL ? CL_AUTHED : CL_OPEN;
}

/* ---- elements ---- */

static bool is_stanza(const struct xml_node *el)
{
    return strcmp(el->ns, XML_NS_CLIENT) == 0 &&
           (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 ||
            strcmp(el->name, "iq") == 0);
}

/* Answer an iq of the client's with a stanza error. */
static void reply_error(struct c2s_client *cl, struct xml_node *el, enum xml_stanza_err cond)
{
    if (xml_make_error(el, cond, NULL, NULL) != 0)
        return;
    xml_del_attr(el, "to");
    if (cl->jid != NULL)
        xml_set_attr(el, "to", jid_full_str(cl->jid));
    c2s_client_write_node(cl, el);
}

static void reply_result(struct c2s_client *cl, const char *id, const char *payload)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<iq type='result' id='");
    xml_escape_attr(id, strlen(id), &b);
    buf_append_str(&b, "'");
    if (cl->jid != NULL) {
        buf_append_str(&b, " to='");
        xml_escape_attr(jid_full_str(cl->jid), cl->jid->full_len, &b);
        buf_append_str(&b, "'");
    }
    if (payload != NULL)
        buf_printf(&b, ">%s</iq>", payload);
    else
        buf_append_str(&b, "/>");
    stream_write(cl->s, b.data, b.len);
    buf_free(&b);
}

static void on_starttls(struct c2s_client *cl)
{
    /* Only in the open state: not during a SASL exchange (its state would
     * carry across the TLS layer) nor after one. */
    if (stream_is_tls(cl->s) || cl->user != NULL || cl->state != CL_OPEN || cl->sasl != NULL) {
        /* RFC 6120 §5.4.2.2: <failure/> and close. */
        stream_write_str(cl->s, "<failure xmlns='" C2S_NS_TLS "'/></stream:stream>");
        c2s_client_down(cl);
        stream_close(cl->s);
        return;
    }
    stream_write_str(cl->s, "<proceed xmlns='" C2S_NS_TLS "'/>");
    if (stream_starttls(cl->s, cl->c2s->tls_default, STREAM_TLS_SERVER, NULL) != 0) {
        cl->state = CL_DOWN;
        stream_abort(cl->s);
        return;
    }
    cl->header_sent = false;
    cl->state = CL_HEADER;
}

/* Before the session exists: only bind (and the legacy session iq). */
static void before_bind(struct c2s_client *cl, struct xml_node *el)
{
    const char *type = xml_get_attr(el, "type");
    const char *id = xml_get_attr(el, "id");
    struct xml_node *bind = xml_child(el, C2S_NS_BIND, "bind");
    if (cl->state == CL_AUTHED && strcmp(el->ns, XML_NS_CLIENT) == 0 &&
        strcmp(el->name, "iq") == 0 && bind != NULL && type != NULL && strcmp(type, "set") == 0 &&
        id != NULL) {
        struct xml_node *res = xml_child(bind, C2S_NS_BIND, "resource");
        const char *r = res != NULL ? xml_text(res, NULL) : NULL;
        c2s_sess_start(cl, r != NULL && r[0] != '\0' ? r : NULL, id);
        return;
    }
    /* RFC 6120 §7.1: no stanza is processed before a resource is bound. */
    c2s_client_fail(cl, XML_SE_NOT_AUTHORIZED, "bind a resource first");
}

/* Bytes each byte of text (attr: of an attribute value) takes once
 * escaped, as xml_serialize writes it: references for markup, U+FFFD for C0
 * controls XML cannot carry, else itself. */
static size_t escaped_len(const char *p, size_t len, bool attr)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '&' || ch == '\r' || (attr && ch == '\n'))
            n += 5;
        else if (ch == '<' || ch == '>' || (attr && ch == '\t'))
            n += 4;
        else if (attr && (ch == '"' || ch == '\''))
            n += 6;
        else if (ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r')
            n += 3;
        else
            n += 1;
    }
    return n;
}

/* A namespace declaration: " xmlns='uri'", or " xmlns:p='uri'" for a
 * prefix of prefix_len bytes. */
static size_t decl_len(size_t prefix_len, const char *uri)
{
    return 9 + (prefix_len > 0 ? prefix_len + 1 : 0) + escaped_len(uri, strlen(uri), true);
}

/*
 * Serialised size of el (in the default namespace scope) added to total,
 * counted without building it and given up once past cap: a presence as
 * large as a stanza may be is not written out only to be measured. Exact
 * but for prefixed names, counted as if each declared its prefix (the
 * serialiser declares it once), so at most a little more, never less.
 */
static size_t size_upto(const struct xml_node *el, const char *scope, size_t total, size_t cap)
{
    if (el->type == XML_TEXT)
        return total + escaped_len(el->text, el->text_len, false);
    size_t plen = el->prefix != NULL ? strlen(el->prefix) : 0;
    size_t qname = strlen(el->name) + (plen > 0 ? plen + 1 : 0);
    total += 1 + qname;
    if (plen > 0) {
        total += decl_len(plen, el->ns);
    } else if (strcmp(el->ns, scope) != 0) {
        total += decl_len(0, el->ns);
        scope = el->ns;
    }
    for (const struct xml_attr *at = el->attrs; at != NULL; at = at->next) {
        total += 4 + strlen(at->name) + escaped_len(at->value, at->value_len, true);
        if (at->ns == NULL)
            continue;
        if (strcmp(at->ns, XML_NS_XML) == 0) {
            total += 4; /* "xml:", never declared */
        } else {
            /* Its own prefix, or one made up ("ns" and a counter). */
            size_t alen = at->prefix != NULL && at->prefix[0] != '\0' ? strlen(at->prefix) : 12;
            total += alen + 1 + decl_len(alen, at->ns);
        }
    }
    if (el->children == NULL)
        return total + 2;
    total += 1 + 3 + qname;
    for (const struct xml_node *c = el->children; c != NULL && total <= cap; c = c->next)
        total = size_upto(c, scope, total, cap);
    return total;
}

static void set_lang(struct xml_node *el, const char *lang)
{
    if (lang == NULL)
        return;
    struct xml_attr *at = arena_zalloc(el->arena, sizeof(*at));
    at->ns = XML_NS_XML;
    at->prefix = "xml";
    at->name = "lang";
    at->value_len = strlen(lang);
    at->value = arena_strndup(el->arena, lang, at->value_len);
    at->next = el->attrs;
    el->attrs = at;
}

/* The <status> to keep: the first in the stanza's own language (one
 * without xml:lang has it), else the first. */
static struct xml_node *status_of(const struct xml_node *el, const char *lang)
{
    struct xml_node *first = xml_child(el, XML_NS_CLIENT, "status");
    for (struct xml_node *st = first; st != NULL; st = xml_next(st, XML_NS_CLIENT, "status")) {
        const char *l = xml_get_attr_ns(st, XML_NS_XML, "lang");
        if (l == NULL || (lang != NULL && strcmp(l, lang) == 0))
            return st;
    }
    return first;
}

/*
 * What a session keeps of its broadcast presence for the replay after an
 * sm restart: the presence itself up to limits/presence-keep bytes. A
 * larger one (routed in full all the same) is kept reduced to its RFC 6121
 * §4.7 children, <show>, <priority> and one <status> (in the stanza's
 * xml:lang if there is one such), each only while the total stays within
 * the cap, with the xml:lang of the presence and of that status: after
 * the restart the user is still available with the same show and
 * priority, without the bulk (avatars, caps extensions) that a thousand
 * idle sessions would otherwise hold.
 */
static struct xml_node *presence_keep(const struct c2s_client *cl, const struct xml_node *el)
{
    size_t cap = cl->c2s->cfg.presence_keep;
    if (size_upto(el, XML_NS_CLIENT, 0, cap) <= cap)
        return xml_copy(el);
    const char *lang = xml_get_attr_ns(el, XML_NS_XML, "lang");
    struct xml_node *p = xml_new(XML_NS_CLIENT, "presence");
    set_lang(p, lang);
    size_t total = size_upto(p, XML_NS_CLIENT, 0, cap);
    struct xml_node *keep[] = {xml_child(el, XML_NS_CLIENT, "show"),
                               xml_child(el, XML_NS_CLIENT, "priority"), status_of(el, lang)};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        struct xml_node *ch = keep[i];
        /* Measured as sent (at least the size of its text alone), before
         * any of it is copied. */
        size_t n = ch != NULL ? size_upto(ch, XML_NS_CLIENT, 0, cap) : 0;
        if (ch == NULL || total + n > cap)
            continue;
        size_t len = 0;
        const char *text = xml_text(ch, &len);
        struct xml_node *kept = xml_add_child(p, XML_NS_CLIENT, ch->name);
        set_lang(kept, xml_get_attr_ns(ch, XML_NS_XML, "lang"));
        xml_add_text(kept, text, len);
        total += n;
    }
    char ip[INET6_ADDRSTRLEN];
    log_debug("client %s %s: presence larger than limits/presence-keep, kept reduced",
              peer(cl, ip, sizeof(ip)), jid_full_str(cl->jid));
    return p;
}

static void bound(struct c2s_client *cl, struct xml_node *el)
{
    if (!is_stanza(el)) {
        c2s_client_fail(cl, XML_SE_UNSUPPORTED_STANZA_TYPE, NULL);
        return;
    }
    const char *type = xml_get_attr(el, "type");
    const char *id = xml_get_attr(el, "id");
    const char *to = xml_get_attr(el, "to");
    if (strcmp(el->name, "iq") == 0) {
        if (type == NULL || id == NULL) {
            c2s_client_fail(cl, XML_SE_INVALID_XML, "an iq needs a type and an id");
            return;
        }
        bool to_server = to == NULL || strcmp(to, cl->domain->name) == 0;
        if (to_server && xml_child(el, C2S_NS_SESSREQ, "session") != NULL) {
            reply_result(cl, id, NULL); /* RFC 3921 §3: a no-op now */
            return;
        }
        if (to_server && xml_child(el, C2S_NS_BIND, "bind") != NULL) {
            reply_error(cl, el, XML_STE_NOT_ALLOWED); /* one resource per stream */
            return;
        }
        if (to_server && strcmp(id, "c2s-ping") == 0 &&
            (strcmp(type, "result") == 0 || strcmp(type, "error") == 0))
            return; /* the answer to our ping: its bytes already count */
    }
    if (to != NULL && jid_check(to, strlen(to)) != 0) {
        reply_error(cl, el, XML_STE_JID_MALFORMED);
        return;
    }
    if (strcmp(el->name, "presence") == 0 && to == NULL &&
        (type == NULL || strcmp(type, "unavailable") == 0)) {
        /* The last broadcast presence, sent again on announce. */
        xml_free(cl->presence);
        cl->presence = type == NULL ? presence_keep(cl, el) : NULL;
    }
    c2s_sess_forward(cl, el);
}

/* Every read, so that whitespace or an element that never ends meets the
 * pre-auth byte cap and the byte-rate bucket as well. */
static void on_read(struct stream *s, void *arg, size_t n)
{
    struct c2s_client *cl = arg;
    struct c2s *c = cl->c2s;
    (void)n;
    if (cl->state == CL_DOWN)
        return;
    if (cl->user == NULL) {
        struct stream_stats st;
        stream_stats(s, &st);
        if (st.bytes_in > c->cfg.preauth_bytes) {
            c2s_client_fail(cl, XML_SE_POLICY_VIOLATION, "too much data before authentication");
            return;
        }
    }
    throttle_check(cl, uv_now(c->loop));
}

static void on_element(struct stream *s, void *arg, struct xml_node *el, const char *raw,
                       size_t rawlen)
{
    struct c2s_client *cl = arg;
    (void)s;
    (void)raw;
    (void)rawlen;
    if (cl->state == CL_DOWN) {
        xml_free(el);
        return;
    }
    if (strcmp(el->ns, C2S_NS_TLS) == 0 && strcmp(el->name, "starttls") == 0) {
        on_starttls(cl);
    } else if (strcmp(el->ns, C2S_NS_SASL) == 0) {
        if (cl->user != NULL)
            c2s_client_fail(cl, XML_SE_POLICY_VIOLATION, "already authenticated");
        else if (!stream_is_tls(cl->s) && cl->domain->tls_required)
            c2s_client_fail(cl, XML_SE_POLICY_VIOLATION, "TLS is required before authentication");
        else
            c2s_sasl_element(cl, el);
    } else if (cl->user == NULL) {
        c2s_client_fail(cl, XML_SE_NOT_AUTHORIZED, "authenticate first");
    } else if (cl->state != CL_BOUND) {
        before_bind(cl, el);
    } else {
        bound(cl, el);
    }
    xml_free(el);
}

void c2s_client_authed(struct c2s_client *cl, const char *user)
{
    struct c2s *c = cl->c2s;
    cl->user = xstrdup(user);
    cl->state = CL_HEADER;
    if (cl->preauth) {
        cl->preauth = false;
        c->npreauth--;
    }
    struct xml_limits lim = c->sopts.limits;
    lim.max_stanza_bytes = c->cfg.stanza_size;
    lim.max_text_len = c->cfg.stanza_size;
    lim.max_tree_bytes = 4 * c->cfg.stanza_size;
    lim.max_depth = 32;
    stream_restart_limits(cl->s, &lim);
    cl->header_sent = false;
}

static void on_stream_close(struct stream *s, void *arg)
{
    struct c2s_client *cl = arg;
    if (cl->state != CL_DOWN) {
        stream_write_str(s, "</stream:stream>");
        c2s_client_down(cl);
    }
    stream_close(s);
}

static void on_error(struct stream *s, void *arg, int err, enum xml_stream_err cond,
                     const char *text)
{
    struct c2s_client *cl = arg;
    (void)s;
    if ((err == ERR_PARSE || err == ERR_TIMEOUT) && cond != XML_SE_NONE) {
        c2s_client_fail(cl, cond, text);
        return;
    }
    c2s_client_down(cl);
}

static void on_close(struct stream *s, void *arg)
{
    struct c2s_client *cl = arg;
    (void)s;
    c2s_client_release(cl);
}

static const struct stream_cbs client_cbs = {
    .on_read = on_read,
    .on_stream_open = on_stream_open,
    .on_element = on_element,
    .on_stream_close = on_stream_close,
    .on_error = on_error,
    .on_close = on_close,
};

void c2s_client_release(struct c2s_client *cl)
{
    struct c2s *c = cl->c2s;
    cl->closed = true;
    cl->state = CL_DOWN;
    cl->s = NULL;
    if (cl->prev != NULL)
        cl->prev->next = cl->next;
    else
        c->clients = cl->next;
    if (cl->next != NULL)
        cl->next->prev = cl->prev;
    if (cl->admitted)
        c->nclients--;
    if (cl->preauth)
        c->npreauth--;
    if (cl->counted)
        c2s_ip_get(c, cl)->conns--;
    if (cl->has_session)
        c2s_sess_end(cl);
    timer_drop(&cl->throttle);
    timer_drop(&cl->delay);
    if (cl->holds == 0)
        client_free(cl);
}

bool c2s_client_unhold(struct c2s_client *cl)
{
    cl->holds--;
    if (!cl->closed)
        return true;
    if (cl->holds == 0)
        client_free(cl);
    return false;
}

/* The sweep: bytes count as activity; silence gets a ping (XEP-0199),
 * and silence after the ping ends the stream. */
void c2s_client_sweep(struct c2s_client *cl, uint64_t now)
{
    struct c2s *c = cl->c2s;
    if (cl->closed || cl->state == CL_DOWN)
        return;
    throttle_check(cl, now);
    struct stream_stats st;
    stream_stats(cl->s, &st);
    if (st.bytes_in != cl->last_rx_bytes) {
        cl->last_rx_bytes = st.bytes_in;
        cl->last_rx_time = now;
        cl->pinged = false;
        return;
    }
    if (cl->state != CL_BOUND || c->cfg.ping_ms == 0)
        return;
    if (!cl->pinged && now - cl->last_rx_time >= c->cfg.ping_ms) {
        struct buf b = BUF_INIT;
        buf_append_str(&b, "<iq type='get' id='c2s-ping' from='");
        xml_escape_attr(cl->domain->name, strlen(cl->domain->name), &b);
        buf_append_str(&b, "' to='");
        xml_escape_attr(jid_full_str(cl->jid), cl->jid->full_len, &b);
        buf_append_str(&b, "'><ping xmlns='" C2S_NS_PING "'/></iq>");
        stream_write(cl->s, b.data, b.len);
        buf_free(&b);
        cl->pinged = true;
    } else if (cl->pinged && now - cl->last_rx_time >= c->cfg.ping_ms + c->cfg.ping_timeout_ms) {
        c2s_client_fail(cl, XML_SE_CONNECTION_TIMEOUT, "no answer to a ping");
    }
}
