/*
 * component.c - the client side of the router protocol (see component.h).
 *
 * One struct component owns at most one struct stream at a time (c->s),
 * two timers (retry: the back-off before the next attempt; work: deferred
 * bounces, queue expiry, and the end of a stop) and, while a TCP host name
 * is being resolved, a struct resolve that outlives the component if it
 * has to (uv_getaddrinfo cannot be taken back synchronously).
 *
 * Every attempt ends in the stream's on_close, the one place that decides
 * what comes next: the next resolved address, a retry after the back-off,
 * or the end of a stop. Owner callbacks are only called from libuv
 * callbacks; after each one the code checks whether the owner freed or
 * stopped the component meanwhile (c->freed keeps the memory valid until
 * the timers' close callbacks).
 *
 * Runs on the loop given to component_new.
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/component.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rand.h"

/* Longest stream id we hash (XEP-0114 does not bound it; ours are 32). */
#define ID_MAX 256

enum conn_state {
    CS_NONE,    /* no stream */
    CS_OPENING, /* our header sent, waiting for the router's */
    CS_AUTH,    /* <handshake> sent */
    CS_BIND,    /* handshake accepted, binds pending */
    CS_READY,
    CS_CLOSING, /* the stream is closing; waiting for its on_close */
};

/* A stanza waiting for on_ready, or on its way to on_bounce. */
struct item {
    struct item *next;
    struct rbuf *rb;
    uint64_t deadline; /* uv_now after which it expires; 0 = never */
    enum component_bounce why;
};

struct item_list {
    struct item *head;
    struct item **tail;
    size_t count;
    size_t bytes;
};

struct resolve {
    uv_getaddrinfo_t req;
    struct component *c; /* NULL once the component no longer waits */
};

struct component {
    uv_loop_t *loop;
    struct component_opts opts; /* strings point into the copies below */
    char *name;
    char *secret;
    size_t secret_len;
    char *host; /* tcp: host (no brackets); unix: the path */
    char *port;
    int is_tcp;
    struct component_bind *binds;
    unsigned char *bind_answered;
    size_t binds_pending;

    struct component_cbs cbs;
    void *arg;

    struct stream *s;
    enum conn_state state;
    struct resolve *res;
    struct addrinfo *ai_list; /* resolved addresses of this attempt */
    struct addrinfo *ai_next; /* the one to try after a failed connect */
    int connected;            /* this stream's connect succeeded */
    int refused;              /* this attempt ended with a refusal */
    int logged_fail;          /* this failure episode's failures were logged */
    int logged_refusal;       /* and its refusals */
    char why[160];            /* what ended the last attempt, for the log */

    uv_timer_t retry;
    uv_timer_t work;
    int handles_open;

    struct item_list queue;   /* waiting for on_ready */
    struct item_list bounces; /* waiting for on_bounce */

    struct component_stats st;
    int started;
    int stopping;
    int close_reported;
    int freed;
};

/* ---- item lists ---- */

static void list_init(struct item_list *l)
{
    l->head = NULL;
    l->tail = &l->head;
    l->count = 0;
    l->bytes = 0;
}

static void list_push(struct item_list *l, struct item *it)
{
    it->next = NULL;
    *l->tail = it;
    l->tail = &it->next;
    l->count++;
    l->bytes += it->rb->len;
}

static struct item *list_pop(struct item_list *l)
{
    struct item *it = l->head;
    if (it == NULL)
        return NULL;
    l->head = it->next;
    if (l->head == NULL)
        l->tail = &l->head;
    l->count--;
    l->bytes -= it->rb->len;
    return it;
}

static void item_free(struct item *it)
{
    rbuf_unref(it->rb);
    free(it);
}

/* Drop a list without telling anyone (component_free); returns how many. */
static size_t list_drop(struct item_list *l)
{
    size_t n = 0;
    struct item *it;
    while ((it = list_pop(l)) != NULL) {
        item_free(it);
        n++;
    }
    return n;
}

/* ---- the work timer: bounces, expiry, end of stop ---- */

static void work_rearm(struct component *c);

static void bounce_later(struct component *c, struct rbuf *rb, enum component_bounce why)
{
    struct item *it = xcalloc(1, sizeof(*it));
    it->rb = rb;
    it->why = why;
    list_push(&c->bounces, it);
    work_rearm(c);
}

static const char *bounce_name(enum component_bounce why)
{
    switch (why) {
    case COMPONENT_BOUNCE_QUEUE_FULL:
        return "queue full";
    case COMPONENT_BOUNCE_EXPIRED:
        return "queued too long";
    case COMPONENT_BOUNCE_CONGESTED:
        return "router stream congested";
    case COMPONENT_BOUNCE_STOPPED:
        return "component stopped";
    }
    return "?";
}

/*
 * Give one undeliverable item back to the owner, as trees: the bytes are
 * our own serialisation in the stream's scope, so they are parsed inside
 * a wrapper that declares that scope (the default namespace and r:).
 */
static void deliver_bounce(struct component *c, struct item *it)
{
    static const char wrap[] = "<w xmlns='" XML_NS_COMPONENT "' xmlns:r='" COMPONENT_NS_ROUTER "'>";
    struct buf b = BUF_INIT;
    buf_append_str(&b, wrap);
    buf_append(&b, it->rb->data, it->rb->len);
    buf_append_str(&b, "</w>");
    /* The bytes are our own and already held: the limits only have to let
     * through anything the stream's limits let through, one or two levels
     * deeper (<w>, and <r:route> around a routed stanza) and with the
     * wrapper's nodes on top, so that no bounce is lost to them. */
    struct xml_limits lim = c->opts.stream.limits;
    lim.max_depth += 2;
    lim.max_attrs += 2;
    if (lim.max_stanza_bytes < b.len)
        lim.max_stanza_bytes = b.len;
    if (lim.max_text_len < b.len)
        lim.max_text_len = b.len;
    lim.max_tree_bytes += lim.max_tree_bytes / 4 + 4096;
    char err[128];
    struct xml_node *w = xml_parse_document(b.data, b.len, &lim, err, sizeof(err));
    buf_free(&b);
    c->st.bounced++;
    if (w == NULL) {
        log_warn("%s: undeliverable bytes (%s) are not XML (%s); dropped", c->name,
                 bounce_name(it->why), err);
        return;
    }
    for (struct xml_node *el = xml_child(w, NULL, NULL); el != NULL && !c->freed;
         el = xml_next(el, NULL, NULL)) {
        const char *route_to = NULL;
        struct xml_node *stanza = el;
        if (strcmp(el->ns, COMPONENT_NS_ROUTER) == 0 && strcmp(el->name, "route") == 0) {
            route_to = xml_get_attr(el, "to");
            stanza = xml_child(el, NULL, NULL);
            if (stanza == NULL)
                continue;
        }
        if (c->cbs.on_bounce == NULL) {
            log_info("%s: undeliverable <%s/> (%s) dropped: no bounce handler", c->name,
                     stanza->name, bounce_name(it->why));
            continue;
        }
        c->cbs.on_bounce(c, c->arg, xml_copy(stanza), route_to, it->why);
    }
    xml_free(w);
}

static void on_work(uv_timer_t *t)
{
    struct component *c = t->data;
    uint64_t now = uv_now(c->loop);
    /* Expiry only matters while the queue waits for a connection. */
    while (c->state != CS_READY && c->queue.head != NULL && c->queue.head->deadline != 0 &&
           c->queue.head->deadline <= now) {
        struct item *it = list_pop(&c->queue);
        it->why = COMPONENT_BOUNCE_EXPIRED;
        list_push(&c->bounces, it);
    }
    /* Bounces made by on_bounce itself wait for the next round. */
    struct item_list batch = c->bounces;
    if (batch.head == NULL)
        list_init(&batch);
    list_init(&c->bounces);
    struct item *it;
    while ((it = list_pop(&batch)) != NULL) {
        if (!c->freed)
            deliver_bounce(c, it);
        item_free(it);
    }
    if (c->freed)
        return;
    if (c->stopping && c->s == NULL && c->bounces.head == NULL && c->queue.head == NULL &&
        !c->close_reported) {
        c->close_reported = 1;
        if (c->cbs.on_close != NULL)
            c->cbs.on_close(c, c->arg);
        return;
    }
    work_rearm(c);
}

static void work_rearm(struct component *c)
{
    if (c->freed)
        return;
    if (c->bounces.head != NULL || (c->stopping && c->s == NULL && !c->close_reported)) {
        uv_timer_start(&c->work, on_work, 0, 0);
    } else if (c->state != CS_READY && c->queue.head != NULL && c->queue.head->deadline != 0) {
        uint64_t now = uv_now(c->loop);
        uint64_t d = c->queue.head->deadline;
        uv_timer_start(&c->work, on_work, d > now ? d - now : 0, 0);
    } else {
        uv_timer_stop(&c->work);
    }
}

/* ---- writing ---- */

static void write_str(struct component *c, const char *s)
{
    /* Protocol elements are small and go first on an empty or near-empty
     * queue; a failure means the stream is going away, which its own
     * callbacks report. */
    if (stream_write_str(c->s, s) != 0)
        log_debug("%s: write to the router failed", c->name);
}

/* Hand serialised bytes to the stream when ready (it copies them into its
 * queue), else to our queue, which keeps its own copy. */
static void submit(struct component *c, const void *p, size_t len)
{
    if (len == 0)
        return;
    if (c->state == CS_READY) {
        int rc = stream_write(c->s, p, len);
        if (rc == 0) {
            c->st.sent++;
            return;
        }
        if (rc == ERR_AGAIN) {
            bounce_later(c, rbuf_new(p, len), COMPONENT_BOUNCE_CONGESTED);
            return;
        }
        /* ERR_CLOSED: the stream broke; its on_close follows. Queue. */
    }
    struct rbuf *rb = rbuf_new(p, len);
    if (c->queue.count >= c->opts.queue_max || rb->len > c->opts.queue_max_bytes ||
        c->queue.bytes > c->opts.queue_max_bytes - rb->len) {
        bounce_later(c, rb, COMPONENT_BOUNCE_QUEUE_FULL);
        return;
    }
    struct item *it = xcalloc(1, sizeof(*it));
    it->rb = rb;
    if (c->opts.queue_ms != 0)
        it->deadline = uv_now(c->loop) + c->opts.queue_ms;
    list_push(&c->queue, it);
    if (c->queue.count == 1)
        work_rearm(c);
}

/* Write the queue in order; what the stream cannot take bounces. */
static void flush_queue(struct component *c)
{
    struct item *it;
    while ((it = list_pop(&c->queue)) != NULL) {
        if (stream_write_rbuf(c->s, it->rb) == 0) {
            c->st.sent++;
            item_free(it);
        } else {
            it->why = COMPONENT_BOUNCE_CONGESTED;
            list_push(&c->bounces, it);
        }
    }
    work_rearm(c);
}

/* Whether len bytes fit the router's stanza size; logged when not (the
 * router would end the connection, and with it every stanza on it). At
 * info: a client or a peer can cause it at will, the caller answers it,
 * and stats count it. */
static bool fits(struct component *c, const void *p, size_t len)
{
    if (len <= c->opts.send_max)
        return true;
    c->st.refused++;
    const char *s = p;
    size_t n = 0;
    while (n < len && n < 16 && s[n] != ' ' && s[n] != '>' && s[n] != '/')
        n++;
    log_info("%s: %.*s> of %zu bytes not sent: the router takes at most %zu", c->name, (int)n, s,
             len, c->opts.send_max);
    return false;
}

int component_send(struct component *c, const struct xml_node *stanza)
{
    if (c->stopping || c->freed)
        return ERR_CLOSED;
    struct buf b = BUF_INIT;
    xml_serialize(stanza, XML_NS_COMPONENT, &b);
    int rc = fits(c, b.data, b.len) ? 0 : ERR_LIMIT;
    if (rc == 0)
        submit(c, b.data, b.len);
    buf_free(&b);
    return rc;
}

int component_send_raw(struct component *c, const void *p, size_t len)
{
    if (c->stopping || c->freed)
        return ERR_CLOSED;
    if (!fits(c, p, len))
        return ERR_LIMIT;
    submit(c, p, len);
    return 0;
}

int component_route(struct component *c, const char *to, const struct xml_node *stanza)
{
    if (c->stopping || c->freed)
        return ERR_CLOSED;
    if (!c->opts.internal)
        return ERR_BADSTATE;
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<r:route to='");
    xml_escape_attr(to, strlen(to), &b);
    buf_append_str(&b, "' from='");
    xml_escape_attr(c->name, strlen(c->name), &b);
    buf_append_str(&b, "'>");
    xml_serialize(stanza, XML_NS_COMPONENT, &b);
    buf_append_str(&b, "</r:route>");
    int rc = fits(c, b.data, b.len) ? 0 : ERR_LIMIT;
    if (rc == 0)
        submit(c, b.data, b.len);
    buf_free(&b);
    return rc;
}

/* ---- connecting ---- */

static void attempt(struct component *c);
static const struct stream_cbs stream_cbs;

static void on_retry(uv_timer_t *t)
{
    attempt(t->data);
}

/*
 * An attempt is over without a ready connection (or a ready one was lost):
 * wait before the next. A refusal waits the maximum; otherwise the delay
 * doubles per consecutive failure. Either way ±20% jitter, so that many
 * daemons restarted together do not reconnect in step.
 */
static void schedule_retry(struct component *c)
{
    uint64_t min = c->opts.backoff_min_ms, max = c->opts.backoff_max_ms;
    uint64_t d = min;
    c->st.failures++;
    if (c->refused) {
        d = max;
    } else {
        for (uint64_t i = 1; i < c->st.failures && d < max; i++)
            d *= 2;
        if (d > max)
            d = max;
    }
    /* d * [0.8, 1.2], in thousandths. */
    d = d * (800 + rand_uniform(401)) / 1000;
    if (d == 0)
        d = 1;
    c->st.last_delay_ms = d;

    if (c->refused && !c->logged_refusal) {
        log_err("router refused %s: %s; retrying every %llu ms", c->name, c->why,
                (unsigned long long)max);
        c->logged_refusal = 1;
    } else if (!c->refused && !c->logged_fail) {
        log_warn("%s: no connection to the router at %s: %s; retrying with back-off", c->name,
                 c->opts.router, c->why);
        c->logged_fail = 1;
    } else {
        log_debug("%s: attempt %llu failed: %s; next in %llu ms", c->name,
                  (unsigned long long)c->st.failures, c->why, (unsigned long long)d);
    }
    c->refused = 0;
    uv_timer_start(&c->retry, on_retry, d, 0);
}

/* Set up a new stream: direct TLS if configured, then our header. */
static void stream_begin(struct component *c)
{
    c->state = CS_OPENING;
    c->connected = 0;
    if (c->opts.tls_ctx != NULL) {
        const char *name = c->opts.tls_name != NULL ? c->opts.tls_name : c->host;
        if (stream_starttls(c->s, c->opts.tls_ctx, STREAM_TLS_CLIENT, name) != 0) {
            snprintf(c->why, sizeof(c->why), "cannot start TLS");
            c->state = CS_CLOSING;
            stream_abort(c->s);
            return;
        }
    }
    struct buf b = BUF_INIT;
    buf_append_str(&b,
                   "<stream:stream xmlns='" XML_NS_COMPONENT "' xmlns:stream='" XML_NS_STREAM "'");
    if (c->opts.internal)
        buf_append_str(&b, " xmlns:r='" COMPONENT_NS_ROUTER "'");
    buf_append_str(&b, " to='");
    xml_escape_attr(c->name, strlen(c->name), &b);
    buf_append_str(&b, "'>");
    write_str(c, b.data);
    buf_free(&b);
}

/* Connect to the next resolved address; 0 if a stream now exists. */
static int connect_next_addr(struct component *c)
{
    while (c->ai_next != NULL) {
        struct addrinfo *ai = c->ai_next;
        c->ai_next = ai->ai_next;
        if (stream_connect_tcp(c->loop, ai->ai_addr, &c->opts.stream, &stream_cbs, c, &c->s) == 0) {
            stream_begin(c);
            return 0;
        }
    }
    return ERR_IO;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    struct resolve *r = req->data;
    struct component *c = r->c;
    free(r);
    if (c == NULL) {
        uv_freeaddrinfo(ai);
        return;
    }
    c->res = NULL;
    if (status < 0) {
        snprintf(c->why, sizeof(c->why), "cannot resolve %s: %s", c->host, uv_strerror(status));
        schedule_retry(c);
        return;
    }
    c->ai_list = ai;
    c->ai_next = ai;
    if (connect_next_addr(c) != 0) {
        snprintf(c->why, sizeof(c->why), "cannot connect to %s", c->host);
        uv_freeaddrinfo(c->ai_list);
        c->ai_list = c->ai_next = NULL;
        schedule_retry(c);
    }
}

static void attempt(struct component *c)
{
    c->st.attempts++;
    c->refused = 0;
    if (!c->is_tcp) {
        if (stream_connect_unix(c->loop, c->host, &c->opts.stream, &stream_cbs, c, &c->s) != 0) {
            snprintf(c->why, sizeof(c->why), "cannot connect to %s", c->host);
            schedule_retry(c);
            return;
        }
        stream_begin(c);
        return;
    }
    struct resolve *r = xcalloc(1, sizeof(*r));
    r->c = c;
    r->req.data = r;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = uv_getaddrinfo(c->loop, &r->req, on_resolved, c->host, c->port, &hints);
    if (rc < 0) {
        free(r);
        snprintf(c->why, sizeof(c->why), "cannot resolve %s: %s", c->host, uv_strerror(rc));
        schedule_retry(c);
        return;
    }
    c->res = r;
}

/* ---- the protocol ---- */

static void become_ready(struct component *c)
{
    c->state = CS_READY;
    c->st.ready = 1;
    stream_set_established(c->s);
    flush_queue(c);
    if (c->cbs.on_ready != NULL)
        c->cbs.on_ready(c, c->arg);
}

static void send_binds(struct component *c)
{
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < c->opts.nbinds; i++) {
        /* A default-route-only bind has no name: name='' is no domain. */
        buf_append_str(&b, "<r:bind");
        if (c->binds[i].domain[0] != '\0') {
            buf_append_str(&b, " name='");
            xml_escape_attr(c->binds[i].domain, strlen(c->binds[i].domain), &b);
            buf_append_byte(&b, '\'');
        }
        buf_append_str(&b, c->binds[i].is_default ? " default='true'/>" : "/>");
        c->bind_answered[i] = 0;
    }
    write_str(c, b.data);
    buf_free(&b);
    c->binds_pending = c->opts.nbinds;
}

static void handshake_ok(struct component *c)
{
    c->st.handshakes++;
    if (c->logged_fail || c->logged_refusal)
        log_notice("%s: connected to the router again after %llu attempts", c->name,
                   (unsigned long long)c->st.failures);
    else
        log_info("%s: handshake with the router done", c->name);
    c->logged_fail = 0;
    c->logged_refusal = 0;
    c->st.failures = 0;
    if (c->opts.internal && c->opts.nbinds > 0) {
        c->state = CS_BIND;
        send_binds(c);
    } else {
        become_ready(c);
    }
}

static void on_bind_answer(struct component *c, struct xml_node *el)
{
    const char *name = xml_get_attr(el, "name");
    if (name == NULL)
        name = ""; /* the answer to a default-route-only bind */
    size_t i;
    for (i = 0; i < c->opts.nbinds; i++)
        if (!c->bind_answered[i] && strcmp(c->binds[i].domain, name) == 0)
            break;
    if (c->state != CS_BIND || i == c->opts.nbinds) {
        log_info("%s: unexpected bind answer for '%s'", c->name, name);
        return;
    }
    c->bind_answered[i] = 1;
    const char *e = xml_get_attr(el, "error");
    int err = 0;
    if (e != NULL) {
        err = strcmp(e, "conflict") == 0      ? ERR_EXISTS
              : strcmp(e, "not-allowed") == 0 ? ERR_PERM
                                              : ERR_INVAL;
        log_warn("%s: bind %s refused: %s", c->name, name[0] ? name : "(default route)", e);
    } else {
        log_info("%s: bound %s", c->name, name[0] ? name : "(default route)");
    }
    if (c->cbs.on_bind_result != NULL) {
        c->cbs.on_bind_result(c, c->arg, c->binds[i].domain, err);
        if (c->freed || c->state != CS_BIND)
            return;
    }
    if (--c->binds_pending == 0)
        become_ready(c);
}

/* Elements from the router in our namespace; 1 if handled here. */
static int router_element(struct component *c, struct xml_node *el)
{
    if (strcmp(el->ns, COMPONENT_NS_ROUTER) != 0 || !c->opts.internal)
        return 0;
    if ((strcmp(el->name, "bind") == 0 || strcmp(el->name, "notify") == 0) &&
        c->cbs.on_router_info != NULL) {
        c->cbs.on_router_info(c, c->arg, el);
        if (c->freed)
            return 1;
    }
    if (strcmp(el->name, "bind") == 0) {
        on_bind_answer(c, el);
        return 1;
    }
    if (strcmp(el->name, "notify") == 0) {
        const char *name = xml_get_attr(el, "name");
        const char *owner = xml_get_attr(el, "owner");
        const char *state = xml_get_attr(el, "state");
        if (name != NULL && state != NULL && c->cbs.on_notify != NULL)
            c->cbs.on_notify(c, c->arg, name, owner != NULL ? owner : "", strcmp(state, "up") == 0);
        return 1;
    }
    if (strcmp(el->name, "unbind") == 0)
        return 1; /* we never unbind; nothing to match it with */
    return 0;
}

static void stream_ended(struct component *c, struct xml_node *err)
{
    struct xml_node *cond = xml_child(err, XML_NS_STREAMS_ERR, NULL);
    const char *name = cond != NULL ? cond->name : "undefined-condition";
    if (strcmp(name, "not-authorized") == 0 || strcmp(name, "host-unknown") == 0) {
        c->refused = 1;
        c->st.refusals++;
        snprintf(c->why, sizeof(c->why), "%s (wrong secret or name not configured)", name);
    } else {
        snprintf(c->why, sizeof(c->why), "stream error %s", name);
        if (c->state == CS_READY)
            log_warn("%s: the router ended the stream: %s", c->name, name);
    }
    write_str(c, "</stream:stream>");
    c->state = CS_CLOSING;
    stream_close(c->s);
}

static void s_on_connect(struct stream *s, void *arg)
{
    struct component *c = arg;
    c->connected = 1;
}

static void s_on_stream_open(struct stream *s, void *arg, struct xml_node *hdr)
{
    struct component *c = arg;
    const char *id = xml_get_attr(hdr, "id");
    if (c->state != CS_OPENING || id == NULL || id[0] == '\0' || strlen(id) > ID_MAX) {
        snprintf(c->why, sizeof(c->why), "bad stream header from the router");
        xml_free(hdr);
        c->state = CS_CLOSING;
        stream_error(s, XML_SE_INVALID_XML, NULL);
        return;
    }
    if (strcmp(stream_content_ns(s), XML_NS_COMPONENT) != 0) {
        snprintf(c->why, sizeof(c->why), "router stream is not %s", XML_NS_COMPONENT);
        xml_free(hdr);
        c->state = CS_CLOSING;
        stream_error(s, XML_SE_INVALID_NAMESPACE, NULL);
        return;
    }
    /* hex(SHA-1(id + secret)), XEP-0114 §3. */
    size_t idlen = strlen(id);
    size_t n = idlen + c->secret_len;
    unsigned char *in = xmalloc(n);
    memcpy(in, id, idlen);
    memcpy(in + idlen, c->secret, c->secret_len);
    xml_free(hdr);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int ok = EVP_Digest(in, n, md, &mdlen, EVP_sha1(), NULL) == 1;
    mem_freezero(in, n);
    if (!ok) {
        tls_log_errors("component handshake");
        snprintf(c->why, sizeof(c->why), "SHA-1 failed");
        c->state = CS_CLOSING;
        stream_abort(s);
        return;
    }
    char msg[sizeof("<handshake></handshake>") + 2 * EVP_MAX_MD_SIZE];
    size_t off = (size_t)snprintf(msg, sizeof(msg), "<handshake>");
    for (unsigned i = 0; i < mdlen; i++)
        off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%02x", md[i]);
    snprintf(msg + off, sizeof(msg) - off, "</handshake>");
    write_str(c, msg);
    mem_wipe(msg, sizeof(msg));
    mem_wipe(md, sizeof(md));
    c->state = CS_AUTH;
}

static void s_on_element(struct stream *s, void *arg, struct xml_node *el, const char *raw,
                         size_t rawlen)
{
    struct component *c = arg;
    if (strcmp(el->ns, XML_NS_STREAM) == 0 && strcmp(el->name, "error") == 0) {
        stream_ended(c, el);
    } else if (c->state == CS_AUTH) {
        if (strcmp(el->ns, XML_NS_COMPONENT) == 0 && strcmp(el->name, "handshake") == 0) {
            handshake_ok(c);
        } else {
            snprintf(c->why, sizeof(c->why), "<%s/> from the router before the handshake",
                     el->name);
            c->state = CS_CLOSING;
            stream_error(s, XML_SE_NOT_AUTHORIZED, NULL);
        }
    } else if (c->state == CS_BIND || c->state == CS_READY) {
        if (!router_element(c, el) && c->cbs.on_stanza != NULL) {
            c->cbs.on_stanza(c, c->arg, el, raw, rawlen);
            return;
        }
    }
    xml_free(el);
}

static void s_on_stream_close(struct stream *s, void *arg)
{
    struct component *c = arg;
    if (c->state == CS_CLOSING)
        return; /* the answer to our own close, or after a stream error */
    snprintf(c->why, sizeof(c->why), "the router closed the stream");
    if (c->state == CS_READY)
        log_warn("%s: the router closed the stream", c->name);
    write_str(c, "</stream:stream>");
    c->state = CS_CLOSING;
    stream_close(s);
}

static void s_on_error(struct stream *s, void *arg, int err, enum xml_stream_err cond,
                       const char *text)
{
    struct component *c = arg;
    if (c->state == CS_CLOSING)
        return; /* already ended, with its reason noted */
    snprintf(c->why, sizeof(c->why), "%s", text != NULL ? text : err_str(err));
    if (c->state == CS_READY)
        log_warn("%s: connection to the router lost: %s", c->name, c->why);
    c->state = CS_CLOSING;
}

/* The one place an attempt ends: decide what comes next. */
static void s_on_close(struct stream *s, void *arg)
{
    struct component *c = arg;
    int was_ready = c->st.ready;
    int connected = c->connected;
    c->s = NULL;
    c->state = CS_NONE;
    c->st.ready = 0;
    if (c->stopping) {
        if (c->ai_list != NULL)
            uv_freeaddrinfo(c->ai_list);
        c->ai_list = c->ai_next = NULL;
        work_rearm(c);
        return;
    }
    /* A refused connect tries the host's next address at once. */
    if (!connected && c->ai_next != NULL && connect_next_addr(c) == 0)
        return;
    if (c->ai_list != NULL)
        uv_freeaddrinfo(c->ai_list);
    c->ai_list = c->ai_next = NULL;
    if (was_ready) {
        c->logged_fail = 1; /* the loss itself was logged */
        if (c->cbs.on_down != NULL) {
            c->cbs.on_down(c, c->arg);
            if (c->freed || c->stopping)
                return;
        }
    }
    schedule_retry(c);
    /* The queue may hold stanzas again: their expiry runs now. */
    work_rearm(c);
}

static const struct stream_cbs stream_cbs = {
    .on_connect = s_on_connect,
    .on_stream_open = s_on_stream_open,
    .on_element = s_on_element,
    .on_stream_close = s_on_stream_close,
    .on_error = s_on_error,
    .on_close = s_on_close,
};

/* ---- creation and end ---- */

void component_opts_default(struct component_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->queue_max = 1024;
    o->queue_max_bytes = 1024 * 1024;
    o->queue_ms = 30000;
    o->backoff_min_ms = 100;
    o->backoff_max_ms = 30000;
    o->send_max = 256 * 1024;
    stream_opts_default(&o->stream);
    o->stream.handshake_ms = 10000;
}

void component_opts_router_max(struct component_opts *o, size_t max)
{
    o->send_max = max;
    struct xml_limits *l = &o->stream.limits;
    size_t in = max + 4096;
    if (l->max_stanza_bytes < in)
        l->max_stanza_bytes = in;
    if (l->max_text_len < in)
        l->max_text_len = in;
    if (l->max_tree_bytes < 4 * in)
        l->max_tree_bytes = 4 * in;
}

/* "unix:/path" or "tcp:host:port" / "tcp:[v6]:port". */
static int parse_router(struct component *c, const char *addr)
{
    if (strncmp(addr, "unix:", 5) == 0) {
        if (addr[5] == '\0')
            return ERR_CONFIG;
        c->host = xstrdup(addr + 5);
        return 0;
    }
    if (strncmp(addr, "tcp:", 4) != 0)
        return ERR_CONFIG;
    const char *h = addr + 4;
    const char *colon = strrchr(h, ':');
    if (colon == NULL || colon == h)
        return ERR_CONFIG;
    const char *port = colon + 1;
    char *end;
    unsigned long p = strtoul(port, &end, 10);
    if (*port < '0' || *port > '9' || *end != '\0' || p == 0 || p > 65535)
        return ERR_CONFIG;
    size_t hlen = (size_t)(colon - h);
    if (h[0] == '[') {
        if (hlen < 3 || h[hlen - 1] != ']')
            return ERR_CONFIG;
        h++;
        hlen -= 2;
    } else if (memchr(h, ':', hlen) != NULL) {
        return ERR_CONFIG; /* an IPv6 address needs its brackets */
    }
    c->host = xstrndup(h, hlen);
    c->port = xstrdup(port);
    c->is_tcp = 1;
    return 0;
}

static int is_ip_literal(const char *host)
{
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    return uv_ip4_addr(host, 0, &a4) == 0 || uv_ip6_addr(host, 0, &a6) == 0;
}

static void component_release(struct component *c)
{
    if (c->ai_list != NULL)
        uv_freeaddrinfo(c->ai_list);
    if (c->binds != NULL)
        for (size_t i = 0; i < c->opts.nbinds; i++)
            free((char *)c->binds[i].domain);
    free(c->binds);
    free(c->bind_answered);
    mem_freezero(c->secret, c->secret_len);
    free(c->name);
    free(c->host);
    free(c->port);
    free((char *)c->opts.router);
    free((char *)c->opts.tls_name);
    free(c);
}

int component_new(uv_loop_t *loop, const struct component_opts *opts,
                  const struct component_cbs *cbs, void *arg, struct component **out)
{
    *out = NULL;
    if (opts->name == NULL || opts->name[0] == '\0' || opts->secret == NULL ||
        opts->secret[0] == '\0' || opts->router == NULL) {
        log_err("component: name, secret and router address are required");
        return ERR_CONFIG;
    }
    if ((opts->nbinds > 0 && (!opts->internal || opts->binds == NULL)) ||
        opts->queue_max_bytes == 0 || opts->send_max == 0 || opts->backoff_min_ms == 0 ||
        opts->backoff_max_ms < opts->backoff_min_ms) {
        log_err("component %s: binds need internal; queue and back-off bounds must be set",
                opts->name);
        return ERR_CONFIG;
    }
    struct component *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->opts = *opts;
    c->opts.router = xstrdup(opts->router);
    c->opts.tls_name = opts->tls_name != NULL ? xstrdup(opts->tls_name) : NULL;
    c->name = xstrdup(opts->name);
    c->opts.name = c->name;
    c->secret_len = strlen(opts->secret);
    c->secret = xmemdup(opts->secret, c->secret_len + 1);
    c->opts.secret = NULL; /* only c->secret holds it */
    if (opts->nbinds > 0) {
        c->binds = xcalloc(opts->nbinds, sizeof(*c->binds));
        c->bind_answered = xcalloc(opts->nbinds, 1);
        for (size_t i = 0; i < opts->nbinds; i++) {
            c->binds[i].domain = xstrdup(opts->binds[i].domain ? opts->binds[i].domain : "");
            c->binds[i].is_default = opts->binds[i].is_default;
        }
    }
    c->opts.binds = c->binds;
    int rc = parse_router(c, opts->router);
    if (rc == 0 && opts->tls_ctx != NULL &&
        (!c->is_tcp || (opts->tls_name == NULL && is_ip_literal(c->host))))
        rc = ERR_CONFIG;
    if (rc != 0) {
        log_err("component %s: bad router address '%s' (unix:PATH or tcp:HOST:PORT; TLS needs "
                "tcp and, for an IP address, a tls_name)",
                c->name, opts->router);
        component_release(c);
        return rc;
    }
    c->cbs = *cbs;
    c->arg = arg;
    list_init(&c->queue);
    list_init(&c->bounces);
    uv_timer_init(loop, &c->retry);
    uv_timer_init(loop, &c->work);
    c->retry.data = c;
    c->work.data = c;
    c->handles_open = 2;
    *out = c;
    return 0;
}

int component_start(struct component *c)
{
    if (c->started || c->stopping)
        return ERR_BADSTATE;
    c->started = 1;
    attempt(c);
    return 0;
}

int component_is_ready(const struct component *c)
{
    return c->state == CS_READY;
}

void component_stats(const struct component *c, struct component_stats *out)
{
    *out = c->st;
    out->queued = c->queue.count;
    out->queued_bytes = c->queue.bytes;
    out->ready = c->state == CS_READY;
}

const char *component_name(const struct component *c)
{
    return c->name;
}

int component_bounce_reply(struct xml_node *stanza, enum component_bounce why)
{
    switch (why) {
    case COMPONENT_BOUNCE_EXPIRED:
        return xml_make_error(stanza, XML_STE_REMOTE_SERVER_TIMEOUT, NULL, NULL);
    case COMPONENT_BOUNCE_CONGESTED:
        return xml_make_error(stanza, XML_STE_RESOURCE_CONSTRAINT, "wait", NULL);
    case COMPONENT_BOUNCE_QUEUE_FULL:
    case COMPONENT_BOUNCE_STOPPED:
        break;
    }
    return xml_make_error(stanza, XML_STE_SERVICE_UNAVAILABLE, "wait", NULL);
}

void component_stop(struct component *c)
{
    if (c == NULL || c->stopping || c->freed)
        return;
    c->stopping = 1;
    uv_timer_stop(&c->retry);
    if (c->res != NULL) {
        /* on_resolved frees the request whenever libuv returns it. */
        c->res->c = NULL;
        uv_cancel((uv_req_t *)&c->res->req);
        c->res = NULL;
    }
    struct item *it;
    while ((it = list_pop(&c->queue)) != NULL) {
        it->why = COMPONENT_BOUNCE_STOPPED;
        list_push(&c->bounces, it);
    }
    if (c->s != NULL) {
        if (c->state != CS_CLOSING)
            write_str(c, "</stream:stream>");
        c->state = CS_CLOSING;
        stream_close(c->s);
    }
    work_rearm(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct component *c = h->data;
    if (--c->handles_open == 0)
        component_release(c);
}

void component_free(struct component *c)
{
    if (c == NULL || c->freed)
        return;
    c->freed = 1;
    if (c->res != NULL) {
        c->res->c = NULL;
        uv_cancel((uv_req_t *)&c->res->req);
        c->res = NULL;
    }
    if (c->s != NULL) {
        stream_set_owner(c->s, NULL, NULL);
        stream_abort(c->s);
        c->s = NULL;
    }
    size_t dropped = list_drop(&c->queue) + list_drop(&c->bounces);
    if (dropped > 0)
        log_warn("%s: %zu undelivered stanzas dropped at exit", c->name, dropped);
    uv_close((uv_handle_t *)&c->retry, on_handle_closed);
    uv_close((uv_handle_t *)&c->work, on_handle_closed);
}
