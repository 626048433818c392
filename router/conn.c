/*
 * conn.c - one component connection: stream header, handshake, output,
 * stream errors, teardown.
 *
 * A connection answers the component's header with its own (a fresh
 * 128-bit id; the r prefix is declared on every header, internal or not,
 * so that the header does not tell a prober which names are internal),
 * then expects <handshake>hex(SHA-1(id + secret))</handshake>. The digest
 * is compared in constant time; an unknown name is refused exactly like a
 * wrong secret, after the handshake, with not-authorized. A name whose
 * entry has a uid is accepted only on the Unix socket from that uid.
 * Then the name (and, for an external component, its listed domains) is
 * taken as a route; a route held by someone else is a conflict. Until the
 * handshake succeeds a connection counts as pending (router.c caps those
 * per listener kind) and no element may exceed ROUTER_PREAUTH_MAX.
 *
 * Output goes to the stream's queue (capped at queue-max by the stream:
 * over it a write fails and the caller bounces) or, for memory
 * connections (unit tests, the fuzz target), to a buffer with the same cap.
 *
 * Ownership: the router's list holds every connection; a stream connection
 * is freed in its stream's on_close, a memory one by conn_free_memory.
 * Nothing here frees a connection from inside one of its own callbacks.
 * The router's loop thread.
 */
#include "autoconfig.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/tls.h"
#include "router/router.h"

#define DIGEST_HEXLEN 40

/* ---- output ---- */

int conn_write(struct conn *c, const char *p, size_t len)
{
    if (c->state == CONN_DOWN)
        return ERR_CLOSED;
    if (c->s != NULL)
        return stream_write(c->s, p, len);
    if (len > c->r->cfg.queue_max || c->sink->len > c->r->cfg.queue_max - len)
        return ERR_AGAIN;
    buf_append(c->sink, p, len);
    return 0;
}

int conn_write_rbuf(struct conn *c, struct rbuf *rb)
{
    if (c->state == CONN_DOWN)
        return ERR_CLOSED;
    if (c->s != NULL)
        return stream_write_rbuf(c->s, rb);
    return conn_write(c, rb->data, rb->len);
}

static void send_header(struct conn *c)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<?xml version='1.0'?><stream:stream xmlns:stream='" XML_NS_STREAM
                       "' xmlns='" XML_NS_COMPONENT "' xmlns:r='" ROUTER_NS "'");
    if (c->name != NULL) {
        buf_append_str(&b, " from='");
        xml_escape_attr(c->name, strlen(c->name), &b);
        buf_append_byte(&b, '\'');
    }
    buf_printf(&b, " id='%s'>", c->id);
    c->header_sent = true;
    conn_write(c, b.data, b.len);
    buf_free(&b);
}

/* ---- routes held ---- */

static unsigned slot_take(struct comp *k)
{
    unsigned i = 0;
    while (i < k->nslots && k->slot_used[i])
        i++;
    if (i == k->nslots) {
        k->slot_used = xreallocarray(k->slot_used, k->nslots + 1, sizeof(*k->slot_used));
        k->nslots++;
    }
    k->slot_used[i] = true;
    return i;
}

bool conn_owns(const struct conn *c, const char *domain)
{
    if (c->name != NULL && strcmp(c->name, domain) == 0)
        return true;
    for (size_t i = 0; i < c->nbound; i++)
        if (strcmp(c->bound[i], domain) == 0)
            return true;
    return false;
}

/* The connection is past the handshake (or gone): no longer pending. */
static void unpend(struct conn *c)
{
    if (!c->pending)
        return;
    c->pending = false;
    c->r->npending_by[c->is_unix]--;
}

/* Give back every route the connection holds and tell the others. After
 * this the connection is DOWN: it writes and reads nothing more. */
static void release(struct conn *c, const char *why)
{
    unpend(c);
    if (c->state == CONN_DOWN)
        return;
    bool was_ready = c->state == CONN_READY;
    c->state = CONN_DOWN;
    if (!was_ready) {
        log_debug("%s: disconnected before the handshake (%s)", c->peer, why);
        return;
    }
    struct router *r = c->r;
    /* A route that stays up with fewer instances changed its ring: its
     * remaining holders learn it (they re-announce, sm/SESSION.md). */
    int rc = route_del(r->routes, c->name, c);
    if (rc == 1)
        proto_notify(r, c->name, false, c);
    else if (rc == 0)
        proto_notify_ring(r, c->name, c);
    for (size_t i = 0; i < c->nbound; i++) {
        rc = route_del(r->routes, c->bound[i], c);
        if (rc == 1)
            proto_notify(r, c->bound[i], false, c);
        else if (rc == 0)
            proto_notify_ring(r, c->bound[i], c);
        free(c->bound[i]);
    }
    free(c->bound);
    c->bound = NULL;
    c->nbound = 0;
    if (c->default_bound)
        route_del(r->routes, NULL, c);
    c->default_bound = false;
    c->comp->ninst--;
    c->comp->slot_used[c->slot] = false;
    log_info("component %s down (instance %u, %s): %s", c->name, c->slot, c->peer, why);
}

void conn_fail(struct conn *c, enum xml_stream_err cond, const char *text)
{
    if (c->state == CONN_DOWN)
        return;
    /* RFC 6120 §4.9.1.1: a stream error needs our header first. */
    if (!c->header_sent)
        send_header(c);
    const char *name = xml_stream_err_name(cond);
    log_info("%s%s%s: stream error %s%s%s", c->peer, c->name ? " " : "", c->name ? c->name : "",
             name ? name : "?", text ? ": " : "", text ? text : "");
    release(c, name ? name : "stream error");
    if (c->s != NULL) {
        stream_error(c->s, cond, text);
        return;
    }
    xml_stream_error(cond, text, c->sink);
    buf_append_str(c->sink, "</stream:stream>");
}

void conn_down(struct conn *c, const char *why)
{
    if (c->state == CONN_DOWN)
        return;
    if (!c->header_sent)
        send_header(c);
    conn_write(c, "</stream:stream>", 16);
    release(c, why);
    if (c->s != NULL)
        stream_close(c->s);
}

/* ---- the handshake ---- */

void conn_digest(const char *id, const char *secret, size_t secret_len, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, id, strlen(id)) != 1 ||
        EVP_DigestUpdate(ctx, secret, secret_len) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 20)
        fatal("SHA-1 unavailable");
    EVP_MD_CTX_free(ctx);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[DIGEST_HEXLEN] = '\0';
    mem_wipe(md, sizeof(md));
}

/* Does the handshake text prove knowledge of e's secret? Constant time in
 * the digest; unknown names (e NULL) are checked against a dummy secret so
 * that they take the same path. */
static bool digest_ok(const struct conn *c, const struct users_entry *e, const char *text,
                      size_t len)
{
    while (len > 0 && isspace((unsigned char)text[0]))
        text++, len--;
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    char want[DIGEST_HEXLEN + 1], got[DIGEST_HEXLEN + 1] = "";
    static const char dummy[] = "no such component";
    conn_digest(c->id, e ? e->secret : dummy, e ? e->secret_len : sizeof(dummy) - 1, want);
    bool ok = len == DIGEST_HEXLEN;
    for (size_t i = 0; i < DIGEST_HEXLEN; i++)
        got[i] = ok ? (char)tolower((unsigned char)text[i]) : '\0';
    ok = CRYPTO_memcmp(want, got, DIGEST_HEXLEN) == 0 && ok && e != NULL;
    mem_wipe(want, sizeof(want));
    return ok;
}

static void refuse(struct conn *c, const char *why)
{
    log_notice("%s: handshake for '%s' refused: %s", c->peer, c->name ? c->name : "", why);
    conn_fail(c, XML_SE_NOT_AUTHORIZED, NULL);
}

/* Take the name and, for an external component, its domains. Returns 0,
 * or ERR_EXISTS with nothing taken. */
static int take_routes(struct conn *c, const struct users_entry *e, bool **isnew)
{
    struct router *r = c->r;
    size_t n = 1 + (e->internal ? 0 : e->ndomains);
    *isnew = xcalloc(n, sizeof(**isnew));
    for (size_t i = 0; i < n; i++) {
        const char *name = i == 0 ? e->name : e->domains[i - 1];
        int rc = route_add(r->routes, name, e->name, e->multi, c, c->slot);
        if (rc < 0) {
            while (i-- > 0)
                route_del(r->routes, i == 0 ? e->name : e->domains[i - 1], c);
            free(*isnew);
            *isnew = NULL;
            return ERR_EXISTS;
        }
        (*isnew)[i] = rc == 1;
    }
    return 0;
}

static void handshake(struct conn *c, struct xml_node *el)
{
    struct router *r = c->r;
    if (strcmp(el->ns, XML_NS_COMPONENT) != 0 || strcmp(el->name, "handshake") != 0) {
        conn_fail(c, XML_SE_NOT_AUTHORIZED, "expected <handshake>");
        return;
    }
    const struct users_entry *e = c->name ? users_find(r->users, c->name) : NULL;
    size_t len;
    const char *text = xml_text(el, &len);
    if (!digest_ok(c, e, text, len)) {
        refuse(c, e ? "wrong secret" : "unknown name");
        return;
    }
    if (e->has_uid) {
        if (!c->is_unix || !c->has_cred) {
            refuse(c, "its uid is checked: Unix socket only");
            return;
        }
        if (c->peer_uid != e->uid) {
            char why[64];
            snprintf(why, sizeof(why), "peer uid %ld, expected %ld", (long)c->peer_uid,
                     (long)e->uid);
            refuse(c, why);
            return;
        }
    }
    struct comp *k = stats_comp(r, e->name);
    if (k->ninst > 0 && !e->multi) {
        log_notice("%s: '%s' is already connected", c->peer, e->name);
        conn_fail(c, XML_SE_CONFLICT, "already connected");
        return;
    }
    c->slot = slot_take(k);
    bool *isnew;
    if (take_routes(c, e, &isnew) != 0) {
        k->slot_used[c->slot] = false;
        log_notice("%s: a route of '%s' is held by another component", c->peer, e->name);
        conn_fail(c, XML_SE_CONFLICT, "name or domain held by another component");
        return;
    }
    c->comp = k;
    k->ninst++;
    c->internal = e->internal;
    c->multi = e->multi;
    c->default_route = e->default_route;
    if (!e->internal && e->ndomains > 0) {
        c->bound = xreallocarray(NULL, e->ndomains, sizeof(*c->bound));
        for (size_t i = 0; i < e->ndomains; i++)
            c->bound[i] = xstrdup(e->domains[i]);
        c->nbound = e->ndomains;
    }
    c->state = CONN_READY;
    unpend(c);
    conn_write(c, "<handshake/>", 12);
    if (c->s != NULL)
        stream_set_established(c->s);
    log_info("component %s up (%s, instance %u, %s)", c->name,
             c->internal ? "internal" : "external", c->slot, c->peer);
    if (c->internal)
        proto_notify_all(c);
    for (size_t i = 0; i < 1 + c->nbound; i++)
        if (isnew[i])
            proto_notify(r, i == 0 ? c->name : c->bound[i - 1], true, c);
        else
            proto_notify_ring(r, i == 0 ? c->name : c->bound[i - 1], c);
    free(isnew);
}

/* ---- parser events ---- */

void conn_on_header(struct conn *c, struct xml_node *hdr, const char *content_ns)
{
    if (c->state != CONN_HEADER) {
        xml_free(hdr);
        return;
    }
    const char *to = xml_get_attr(hdr, "to");
    char *name = NULL;
    if (to != NULL && to[0] == '\0')
        to = NULL;
    if (to != NULL && jid_prep_domain(to, strlen(to), &name, NULL) != 0)
        name = NULL;
    c->name = name;
    xml_free(hdr);
    if (strcmp(content_ns, XML_NS_COMPONENT) != 0) {
        conn_fail(c, XML_SE_INVALID_NAMESPACE, "expected " XML_NS_COMPONENT);
        return;
    }
    if (c->name == NULL) {
        conn_fail(c, XML_SE_HOST_UNKNOWN, to ? "invalid 'to'" : "no 'to' on the stream header");
        return;
    }
    send_header(c);
    c->state = CONN_HANDSHAKE;
}

void conn_on_element(struct conn *c, struct xml_node *el, const char *raw, size_t rawlen)
{
    switch (c->state) {
    case CONN_HANDSHAKE:
        /* The parser's limits are the stanza-size ones (they cannot change
         * mid-stream), so what it buffered is already spent; refusing here
         * keeps a large first element from going any further. */
        if (rawlen > ROUTER_PREAUTH_MAX)
            conn_fail(c, XML_SE_POLICY_VIOLATION, "element too large before the handshake");
        else
            handshake(c, el);
        break;
    case CONN_READY:
        if (strcmp(el->ns, ROUTER_NS) == 0) {
            if (c->internal)
                proto_element(c, el, raw, rawlen);
            else
                conn_fail(c, XML_SE_UNSUPPORTED_STANZA_TYPE,
                          ROUTER_NS " is for internal components");
        } else if (strcmp(el->ns, XML_NS_COMPONENT) == 0 &&
                   (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 ||
                    strcmp(el->name, "iq") == 0)) {
            deliver_stanza(c, el, raw, rawlen);
        } else {
            conn_fail(c, XML_SE_UNSUPPORTED_STANZA_TYPE, NULL);
        }
        break;
    case CONN_HEADER:
    case CONN_DOWN:
        break;
    }
    xml_free(el);
}

void conn_on_stream_end(struct conn *c)
{
    conn_down(c, "stream closed by the component");
}

void conn_on_parse_error(struct conn *c, enum xml_stream_err cond)
{
    conn_fail(c, cond, NULL);
}

/* ---- stream callbacks ---- */

static void on_stream_open(struct stream *s, void *arg, struct xml_node *hdr)
{
    conn_on_header(arg, hdr, stream_content_ns(s));
}

static void on_element(struct stream *s, void *arg, struct xml_node *el, const char *raw,
                       size_t rawlen)
{
    conn_on_element(arg, el, raw, rawlen);
}

static void on_stream_close(struct stream *s, void *arg)
{
    conn_on_stream_end(arg);
}

static void on_error(struct stream *s, void *arg, int err, enum xml_stream_err cond,
                     const char *text)
{
    struct conn *c = arg;
    if ((err == ERR_PARSE || err == ERR_TIMEOUT) && cond != XML_SE_NONE) {
        conn_fail(c, cond, text);
        return;
    }
    /* The transport is gone or closing: nothing more can be said. */
    release(c, text ? text : err_str(err));
}

static void on_pressure(struct stream *s, void *arg, int congested)
{
    struct conn *c = arg;
    if (!congested && c->full_logged) {
        log_info("component %s: queue drained, delivering again", c->name);
        c->full_logged = false;
    }
}

static void conn_unlink(struct conn *c)
{
    struct router *r = c->r;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        r->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    r->nconns--;
    r->nconns_by[c->is_unix]--;
    unpend(c);
    free(c->name);
    free(c);
}

static void on_close(struct stream *s, void *arg)
{
    struct conn *c = arg;
    release(c, "connection closed");
    conn_unlink(c);
}

static const struct stream_cbs conn_cbs = {
    .on_stream_open = on_stream_open,
    .on_element = on_element,
    .on_stream_close = on_stream_close,
    .on_error = on_error,
    .on_pressure = on_pressure,
    .on_close = on_close,
};

/* ---- creation ---- */

static struct conn *conn_alloc(struct router *r, bool is_unix, bool has_cred, uid_t uid)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->r = r;
    c->state = CONN_HEADER;
    c->is_unix = is_unix;
    c->has_cred = has_cred;
    c->peer_uid = uid;
    c->pending = true;
    r->npending_by[is_unix]++;
    r->nconns_by[is_unix]++;
    rand_id_hex(c->id);
    c->next = r->conns;
    if (r->conns != NULL)
        r->conns->prev = c;
    r->conns = c;
    r->nconns++;
    return c;
}

struct conn *conn_new_stream(struct router *r, struct stream *s, bool is_unix, bool has_cred,
                             uid_t uid)
{
    struct conn *c = conn_alloc(r, is_unix, has_cred, uid);
    c->s = s;
    if (is_unix) {
        if (has_cred)
            snprintf(c->peer, sizeof(c->peer), "unix uid %ld", (long)uid);
        else
            snprintf(c->peer, sizeof(c->peer), "unix");
    } else {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        char ip[64] = "?";
        int port = 0;
        if (stream_peer_addr(s, &ss) == 0) {
            if (ss.ss_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
                uv_ip6_name(a, ip, sizeof(ip));
                port = ntohs(a->sin6_port);
            } else {
                const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
                uv_ip4_name(a, ip, sizeof(ip));
                port = ntohs(a->sin_port);
            }
        }
        snprintf(c->peer, sizeof(c->peer), "tcp %s%s%s:%d", ss.ss_family == AF_INET6 ? "[" : "", ip,
                 ss.ss_family == AF_INET6 ? "]" : "", port);
    }
    stream_set_owner(s, &conn_cbs, c);
    log_info("%s: connected", c->peer);
    return c;
}

static void on_mem_header(void *arg, struct xml_node *hdr)
{
    struct conn *c = arg;
    conn_on_header(c, hdr, xml_parser_content_ns(c->mem_parser));
}

static void on_mem_element(void *arg, struct xml_node *el, const char *raw, size_t rawlen)
{
    conn_on_element(arg, el, raw, rawlen);
}

static void on_mem_end(void *arg)
{
    conn_on_stream_end(arg);
}

static void on_mem_error(void *arg, enum xml_stream_err cond, const char *text)
{
    conn_on_parse_error(arg, cond);
}

static const struct xml_parser_cbs mem_parser_cbs = {on_mem_header, on_mem_element, on_mem_end,
                                                     on_mem_error};

struct conn *conn_new_memory(struct router *r, struct buf *sink, bool is_unix, bool has_cred,
                             uid_t uid)
{
    struct conn *c = conn_alloc(r, is_unix, has_cred, uid);
    c->sink = sink;
    c->mem_parser = xml_parser_new(&r->sopts.limits, &mem_parser_cbs, c);
    snprintf(c->peer, sizeof(c->peer), "memory");
    return c;
}

int conn_feed_memory(struct conn *c, const char *data, size_t len)
{
    return xml_parser_feed(c->mem_parser, data, len);
}

void conn_free_memory(struct conn *c)
{
    if (c == NULL)
        return;
    release(c, "freed");
    xml_parser_free(c->mem_parser);
    conn_unlink(c);
}
