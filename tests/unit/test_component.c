/*
 * test_component.c - the router client against a small router written
 * here on common/stream: a real listener (a Unix socket in a temp dir, or
 * TCP on localhost) that speaks XEP-0114 with the expected digest, answers
 * r:bind, and can refuse, close, or drop connections on demand.
 *
 * Checked: the stream header and handshake digest, binds after the
 * handshake and their results, the queue before on_ready (order, caps,
 * bounces, expiry), reconnects with re-handshake and re-bind, back-off
 * growth and the maximum back-off after a refusal, r:route and r:notify,
 * TCP with name resolution, direct TLS with a checked name, stop and free (ASan checks that
 * everything is released).
 *
 * Waiting is always for an event (RUN_UNTIL); a guard timer only stops a
 * test that would otherwise hang. Back-off delays are checked against the
 * values the component chose (its stats), never against the clock.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/component.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/stream.h"
#include "common/tls.h"
#include "common/xml.h"
#include "tests/unit/tmpdir.h"

#define NAME   "sm"
#define SECRET "s3cret"
#define ID     "abc123"
/* printf 'abc123s3cret' | sha1sum */
#define DIGEST "c6b71d79e2349af2e00ebb4e78ba32f34c7fc6da"

static uv_loop_t loop;
static struct tmpdir *tmp;

static int guard_fired;

static void on_guard(uv_timer_t *t)
{
    guard_fired = 1;
}

/* Run the loop without blocking, checking cond after every iteration:
 * conditions turn true in timer callbacks too, after which a blocking
 * iteration would sleep until the next event. */
#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        uv_timer_t guard_;                                                                         \
        guard_fired = 0;                                                                           \
        uv_timer_init(&loop, &guard_);                                                             \
        uv_timer_start(&guard_, on_guard, 20000, 0);                                               \
        while (!(cond) && !guard_fired)                                                            \
            uv_run(&loop, UV_RUN_NOWAIT);                                                          \
        uv_close((uv_handle_t *)&guard_, NULL);                                                    \
        uv_run(&loop, UV_RUN_NOWAIT);                                                              \
        if (guard_fired)                                                                           \
            fail_msg("timed out waiting for %s", #cond);                                           \
    } while (0)

/* Does the log in b contain s? */
static int has(const struct buf *b, const char *s)
{
    return b->len > 0 && strstr(b->data, s) != NULL;
}

/* ---- the test router ---- */

enum acc_mode {
    ACC_OK,     /* check the digest, answer binds */
    ACC_REFUSE, /* not-authorized whatever the digest */
    ACC_HANGUP, /* close every connection as soon as it is accepted */
    ACC_NOTIFY, /* like OK, and send r:notify + a message after the handshake */
};

struct acceptor {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } h;
    enum acc_mode mode;
    const char *conflict;    /* bind name answered with error='conflict' */
    SSL_CTX *tls;            /* direct TLS on accepted connections */
    struct stream *s;        /* the current connection */
    struct component *watch; /* stats read at each accept */
    int accepted, closed, handshakes, refused;
    uint64_t delays[16]; /* the component's last delay at each accept */
    char hdr_to[64];
    char hdr_ns[64];
    char digest[64];
    struct buf log; /* what the router received, one line each */
};

static void a_on_stream_open(struct stream *s, void *arg, struct xml_node *hdr)
{
    struct acceptor *a = arg;
    const char *to = xml_get_attr(hdr, "to");
    snprintf(a->hdr_to, sizeof(a->hdr_to), "%s", to ? to : "");
    snprintf(a->hdr_ns, sizeof(a->hdr_ns), "%s", stream_content_ns(s));
    xml_free(hdr);
    assert_int_equal(stream_write_str(s,
                                      "<stream:stream xmlns='jabber:component:accept' "
                                      "xmlns:stream='http://etherx.jabber.org/streams' "
                                      "xmlns:r='urn:parley:router' from='" NAME "' id='" ID "'>"),
                     0);
}

static void a_refuse(struct acceptor *a, struct stream *s)
{
    a->refused++;
    stream_error(s, XML_SE_NOT_AUTHORIZED, NULL);
}

static void a_on_element(struct stream *s, void *arg, struct xml_node *el, const char *raw,
                         size_t rawlen)
{
    struct acceptor *a = arg;
    if (strcmp(el->name, "handshake") == 0) {
        snprintf(a->digest, sizeof(a->digest), "%s", xml_text(el, NULL));
        buf_append_str(&a->log, "handshake\n");
        if (a->mode == ACC_REFUSE || strcmp(a->digest, DIGEST) != 0) {
            a_refuse(a, s);
        } else {
            a->handshakes++;
            stream_write_str(s, "<handshake/>");
            if (a->mode == ACC_NOTIFY)
                stream_write_str(s, "<r:notify name='c2s-1' owner='c2s-1' state='up'/>"
                                    "<message from='a@example.com' to='sm' id='in1'>"
                                    "<body>hi</body></message>"
                                    "<r:notify name='c2s-1' state='down'/>");
        }
    } else if (strcmp(el->ns, COMPONENT_NS_ROUTER) == 0 && strcmp(el->name, "bind") == 0) {
        const char *name = xml_get_attr(el, "name");
        const char *def = xml_get_attr(el, "default");
        /* "-" for no name at all: name='' would be logged as empty */
        buf_printf(&a->log, "bind:%s%s\n", name ? name : "-", def ? ":default" : "");
        char ans[128];
        if (name == NULL)
            snprintf(ans, sizeof(ans), "<r:bind default='true'/>");
        else if (a->conflict != NULL && strcmp(name, a->conflict) == 0)
            snprintf(ans, sizeof(ans), "<r:bind name='%s' error='conflict'/>", name);
        else
            snprintf(ans, sizeof(ans), "<r:bind name='%s'/>", name);
        stream_write_str(s, ans);
    } else if (strcmp(el->ns, COMPONENT_NS_ROUTER) == 0 && strcmp(el->name, "route") == 0) {
        struct xml_node *inner = xml_child(el, NULL, NULL);
        buf_printf(&a->log, "route:%s:%s:%s:%s\n", xml_get_attr(el, "to"), xml_get_attr(el, "from"),
                   inner ? inner->name : "-", inner ? xml_get_attr(inner, "id") : "-");
        assert_string_equal(inner->ns, XML_NS_COMPONENT);
    } else {
        /* Stanzas come in the stream's namespace, with no xmlns of their own. */
        assert_string_equal(el->ns, XML_NS_COMPONENT);
        assert_null(memmem(raw, rawlen, "xmlns", 5));
        const char *id = xml_get_attr(el, "id");
        buf_printf(&a->log, "%s:%s\n", el->name, id ? id : "");
    }
    xml_free(el);
}

static void a_on_stream_close(struct stream *s, void *arg)
{
    stream_write_str(s, "</stream:stream>");
    stream_close(s);
}

static void a_on_close(struct stream *s, void *arg)
{
    struct acceptor *a = arg;
    a->closed++;
    if (a->s == s)
        a->s = NULL;
}

static const struct stream_cbs acbs = {
    .on_stream_open = a_on_stream_open,
    .on_element = a_on_element,
    .on_stream_close = a_on_stream_close,
    .on_close = a_on_close,
};

static void a_on_connection(uv_stream_t *srv, int status)
{
    struct acceptor *a = srv->data;
    assert_int_equal(status, 0);
    struct stream *s;
    assert_int_equal(stream_accept(srv, NULL, &acbs, a, &s), 0);
    if (a->watch != NULL && a->accepted < 16) {
        struct component_stats st;
        component_stats(a->watch, &st);
        a->delays[a->accepted] = st.last_delay_ms;
    }
    a->accepted++;
    if (a->tls != NULL)
        assert_int_equal(stream_starttls(s, a->tls, STREAM_TLS_SERVER, NULL), 0);
    if (a->mode == ACC_HANGUP) {
        stream_abort(s);
        return;
    }
    /* The previous connection may still be closing (a reconnect can be
     * faster than its EOF): it is just forgotten here. */
    a->s = s;
}

static const char *sock_path(void)
{
    return tmpdir_path(tmp, "router.sock");
}

static void acc_listen_unix(struct acceptor *a, enum acc_mode mode)
{
    memset(a, 0, sizeof(*a));
    a->mode = mode;
    buf_init(&a->log);
    unlink(sock_path());
    uv_pipe_init(&loop, &a->h.pipe, 0);
    a->h.handle.data = a;
    assert_int_equal(uv_pipe_bind(&a->h.pipe, sock_path()), 0);
    assert_int_equal(uv_listen(&a->h.stream, 16, a_on_connection), 0);
}

static int acc_listen_tcp(struct acceptor *a, enum acc_mode mode)
{
    memset(a, 0, sizeof(*a));
    a->mode = mode;
    buf_init(&a->log);
    uv_tcp_init(&loop, &a->h.tcp);
    a->h.handle.data = a;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&a->h.tcp, (struct sockaddr *)&addr, 0), 0);
    int len = sizeof(addr);
    assert_int_equal(uv_tcp_getsockname(&a->h.tcp, (struct sockaddr *)&addr, &len), 0);
    assert_int_equal(uv_listen(&a->h.stream, 16, a_on_connection), 0);
    return ntohs(addr.sin_port);
}

/* Drop the current connection from the router's side (a router restart). */
static void acc_drop(struct acceptor *a)
{
    assert_non_null(a->s);
    stream_write_str(a->s, "</stream:stream>");
    stream_close(a->s);
}

static void acc_close(struct acceptor *a)
{
    if (a->s != NULL)
        stream_abort(a->s);
    uv_close(&a->h.handle, NULL);
    RUN_UNTIL(a->s == NULL);
    buf_free(&a->log);
}

/* ---- the owner of the component ---- */

struct owner {
    struct component *c;
    int ready, down, closed;
    int free_on_close;
    int bind_before_ready; /* bind results that came while not ready */
    struct buf binds;      /* domain:err */
    struct buf stanzas;    /* name:id */
    struct buf notifies;   /* name:up|down */
    struct buf bounces;    /* name:id:why[:route_to] */
    struct buf replies;    /* error condition of component_bounce_reply */
};

static void o_on_ready(struct component *c, void *arg)
{
    struct owner *o = arg;
    assert_true(component_is_ready(c));
    o->ready++;
}

static void o_on_down(struct component *c, void *arg)
{
    struct owner *o = arg;
    assert_false(component_is_ready(c));
    o->down++;
}

static void o_on_stanza(struct component *c, void *arg, struct xml_node *st, const char *raw,
                        size_t rawlen)
{
    struct owner *o = arg;
    assert_non_null(raw);
    assert_true(rawlen > 0);
    const char *id = xml_get_attr(st, "id");
    buf_printf(&o->stanzas, "%s:%s\n", st->name, id ? id : "");
    xml_free(st);
}

static void o_on_bind_result(struct component *c, void *arg, const char *domain, int err)
{
    struct owner *o = arg;
    if (!component_is_ready(c))
        o->bind_before_ready++;
    buf_printf(&o->binds, "%s:%d\n", domain, err);
}

static void o_on_notify(struct component *c, void *arg, const char *name, const char *owner, int up)
{
    struct owner *o = arg;
    buf_printf(&o->notifies, "%s(%s):%s\n", name, owner, up ? "up" : "down");
}

static const char *why_str(enum component_bounce why)
{
    switch (why) {
    case COMPONENT_BOUNCE_QUEUE_FULL:
        return "full";
    case COMPONENT_BOUNCE_EXPIRED:
        return "expired";
    case COMPONENT_BOUNCE_CONGESTED:
        return "congested";
    case COMPONENT_BOUNCE_STOPPED:
        return "stopped";
    }
    return "?";
}

static void o_on_bounce(struct component *c, void *arg, struct xml_node *st, const char *route_to,
                        enum component_bounce why)
{
    struct owner *o = arg;
    const char *id = xml_get_attr(st, "id");
    buf_printf(&o->bounces, "%s:%s:%s%s%s\n", st->name, id ? id : "", why_str(why),
               route_to ? ":" : "", route_to ? route_to : "");
    /* The tree is a stanza in the component namespace the owner can answer. */
    assert_string_equal(st->ns, XML_NS_COMPONENT);
    if (component_bounce_reply(st, why) == 0) {
        struct xml_node *err = xml_child(st, NULL, "error");
        assert_non_null(err);
        struct xml_node *cond = xml_child(err, XML_NS_STANZAS, NULL);
        buf_printf(&o->replies, "%s:%s:%s\n", xml_get_attr(st, "to"), xml_get_attr(err, "type"),
                   cond->name);
    }
    xml_free(st);
}

static void o_on_close(struct component *c, void *arg)
{
    struct owner *o = arg;
    o->closed++;
    if (o->free_on_close) {
        component_free(c);
        o->c = NULL;
    }
}

static const struct component_cbs ocbs = {
    .on_ready = o_on_ready,
    .on_down = o_on_down,
    .on_stanza = o_on_stanza,
    .on_bind_result = o_on_bind_result,
    .on_notify = o_on_notify,
    .on_bounce = o_on_bounce,
    .on_close = o_on_close,
};

static void owner_init(struct owner *o)
{
    memset(o, 0, sizeof(*o));
    buf_init(&o->binds);
    buf_init(&o->stanzas);
    buf_init(&o->notifies);
    buf_init(&o->bounces);
    buf_init(&o->replies);
}

static void owner_done(struct owner *o)
{
    buf_free(&o->binds);
    buf_free(&o->stanzas);
    buf_free(&o->notifies);
    buf_free(&o->bounces);
    buf_free(&o->replies);
}

static void opts_init(struct component_opts *co, char *addr, size_t addrlen)
{
    component_opts_default(co);
    snprintf(addr, addrlen, "unix:%s", sock_path());
    co->name = NAME;
    co->secret = SECRET;
    co->router = addr;
    co->internal = 1;
    co->backoff_min_ms = 1;
    co->backoff_max_ms = 8;
}

static void new_component(struct owner *o, const struct component_opts *co)
{
    assert_int_equal(component_new(&loop, co, &ocbs, o, &o->c), 0);
}

/* Graceful stop, free from on_close. */
static void stop_and_free(struct owner *o)
{
    o->free_on_close = 1;
    component_stop(o->c);
    RUN_UNTIL(o->closed == 1);
    assert_null(o->c);
}

static void send_msg(struct owner *o, const char *id)
{
    struct xml_node *m = xml_new(XML_NS_COMPONENT, "message");
    xml_set_attr(m, "to", "bob@example.com");
    xml_set_attr(m, "from", "alice@example.com/r");
    xml_set_attr(m, "id", id);
    xml_add_text(xml_add_child(m, NULL, "body"), "hi", 2);
    assert_int_equal(component_send(o->c, m), 0);
    xml_free(m);
}

/* ---- tests ---- */

static void test_handshake(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    acc_listen_unix(&a, ACC_NOTIFY);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    new_component(&o, &co);
    assert_string_equal(component_name(o.c), NAME);
    assert_false(component_is_ready(o.c));
    assert_int_equal(component_start(o.c), 0);
    assert_int_equal(component_start(o.c), ERR_BADSTATE);
    RUN_UNTIL(o.ready == 1 && o.notifies.len > 0 && has(&o.notifies, "down"));
    assert_string_equal(a.hdr_to, NAME);
    assert_string_equal(a.hdr_ns, XML_NS_COMPONENT);
    assert_string_equal(a.digest, DIGEST);
    assert_string_equal(a.log.data, "handshake\n");
    /* owner= passed on; an absent one (the second) as "" */
    assert_string_equal(o.notifies.data, "c2s-1(c2s-1):up\nc2s-1():down\n");
    assert_string_equal(o.stanzas.data, "message:in1\n");
    struct component_stats st;
    component_stats(o.c, &st);
    assert_int_equal(st.attempts, 1);
    assert_int_equal(st.handshakes, 1);
    assert_int_equal(st.ready, 1);
    assert_int_equal(st.failures, 0);
    stop_and_free(&o);
    /* The router saw a closed stream (ours ends it). */
    RUN_UNTIL(a.closed == 1);
    assert_int_equal(o.down, 0);
    acc_close(&a);
    owner_done(&o);
}

static void test_binds(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    static const struct component_bind binds[] = {
        {"example.com", 1},
        {"other.example", 0},
        {NULL, 1},
    };
    acc_listen_unix(&a, ACC_OK);
    a.conflict = "other.example";
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    co.binds = binds;
    co.nbinds = 3;
    new_component(&o, &co);
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(o.ready == 1);
    /* Binds follow the handshake, in order, r: declared on the stream; a
     * default-route-only bind goes without a name. */
    assert_string_equal(a.log.data, "handshake\nbind:example.com:default\nbind:other.example\n"
                                    "bind:-:default\n");
    assert_string_equal(o.binds.data, "example.com:0\nother.example:-8\n:0\n");
    assert_int_equal(o.bind_before_ready, 3);
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
}

static void test_queue_until_ready(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    static const struct component_bind binds[] = {{"example.com", 0}};
    acc_listen_unix(&a, ACC_OK);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    co.binds = binds;
    co.nbinds = 1;
    new_component(&o, &co);
    send_msg(&o, "q1");
    assert_int_equal(component_start(o.c), 0);
    send_msg(&o, "q2");
    struct component_stats st;
    component_stats(o.c, &st);
    assert_int_equal(st.queued, 2);
    assert_true(st.queued_bytes > 0);
    RUN_UNTIL(o.ready == 1);
    send_msg(&o, "d3");
    component_stats(o.c, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.sent, 3);
    RUN_UNTIL(has(&a.log, "d3"));
    /* Queued stanzas leave after the binds are answered, in order. */
    assert_string_equal(a.log.data,
                        "handshake\nbind:example.com\nmessage:q1\nmessage:q2\nmessage:d3\n");
    assert_int_equal(o.bounces.len, 0);
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
}

static void test_queue_cap_bounces(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    acc_listen_unix(&a, ACC_OK);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    co.queue_max = 2;
    new_component(&o, &co);
    send_msg(&o, "k1");
    send_msg(&o, "k2");
    send_msg(&o, "over3");
    struct xml_node *m = xml_new(XML_NS_COMPONENT, "iq");
    xml_set_attr(m, "type", "get");
    xml_set_attr(m, "id", "over4");
    xml_set_attr(m, "from", "sm");
    xml_set_attr(m, "to", "alice@example.com/r");
    xml_add_child(m, "urn:xmpp:ping", "ping");
    assert_int_equal(component_route(o.c, "c2s-1", m), 0);
    xml_free(m);
    /* Never reported from inside the send call. */
    assert_int_equal(o.bounces.len, 0);
    RUN_UNTIL(o.bounces.len > 0 && has(&o.bounces, "over4"));
    assert_string_equal(o.bounces.data, "message:over3:full\n"
                                        "iq:over4:full:c2s-1\n");
    assert_string_equal(o.replies.data, "alice@example.com/r:wait:service-unavailable\n"
                                        "sm:wait:service-unavailable\n");
    struct component_stats st;
    component_stats(o.c, &st);
    assert_int_equal(st.bounced, 2);
    assert_int_equal(st.queued, 2);

    /* A stanza as deep as the limits allow still comes back, though the
     * bounce parse wraps it (and an r:route) in one more element. */
    component_free(o.c);
    new_component(&o, &co);
    buf_reset(&o.bounces);
    buf_reset(&o.replies);
    send_msg(&o, "d1");
    send_msg(&o, "d2");
    m = xml_new(XML_NS_COMPONENT, "iq");
    xml_set_attr(m, "type", "get");
    xml_set_attr(m, "id", "deep");
    xml_set_attr(m, "from", "sm");
    xml_set_attr(m, "to", "alice@example.com/r");
    struct xml_limits dl;
    xml_limits_default(&dl);
    struct xml_node *n = m;
    for (unsigned i = 1; i < dl.max_depth; i++)
        n = xml_add_child(n, "urn:example:deep", "d");
    assert_int_equal(component_route(o.c, "c2s-1", m), 0);
    xml_free(m);
    RUN_UNTIL(has(&o.bounces, "deep"));
    assert_string_equal(o.bounces.data, "iq:deep:full:c2s-1\n");

    /* The byte cap counts too. */
    component_free(o.c);
    co.queue_max = 100;
    co.queue_max_bytes = 150;
    new_component(&o, &co);
    buf_reset(&o.bounces);
    send_msg(&o, "b1"); /* about 85 bytes */
    send_msg(&o, "b2");
    RUN_UNTIL(o.bounces.len > 0);
    assert_string_equal(o.bounces.data, "message:b2:full\n");
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(has(&a.log, "b1"));
    assert_false(has(&a.log, "b2"));
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
}

static void test_reconnect(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    static const struct component_bind binds[] = {{"example.com", 0}};
    acc_listen_unix(&a, ACC_OK);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    co.binds = binds;
    co.nbinds = 1;
    new_component(&o, &co);
    a.watch = o.c;
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(o.ready == 1);
    send_msg(&o, "m1");
    RUN_UNTIL(has(&a.log, "m1"));
    /* The router goes away: the component reports down, queues, and comes back. */
    acc_drop(&a);
    RUN_UNTIL(o.down == 1);
    assert_false(component_is_ready(o.c));
    send_msg(&o, "m2");
    RUN_UNTIL(o.ready == 2);
    RUN_UNTIL(has(&a.log, "m2"));
    assert_string_equal(a.log.data, "handshake\nbind:example.com\nmessage:m1\n"
                                    "handshake\nbind:example.com\nmessage:m2\n");
    assert_string_equal(o.binds.data, "example.com:0\nexample.com:0\n");
    assert_int_equal(a.accepted, 2);
    /* The reconnect waited the minimum back-off, with jitter. */
    assert_in_range(a.delays[1], 1, 2);
    struct component_stats st;
    component_stats(o.c, &st);
    assert_int_equal(st.attempts, 2);
    assert_int_equal(st.handshakes, 2);
    assert_int_equal(st.failures, 0);
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
}

static void test_backoff_grows(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    acc_listen_unix(&a, ACC_HANGUP);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    co.backoff_min_ms = 2;
    co.backoff_max_ms = 16;
    new_component(&o, &co);
    a.watch = o.c;
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(a.accepted == 7);
    /* Attempt k waited min * 2^(k-2), capped at max, ±20%. */
    static const uint64_t base[] = {0, 2, 4, 8, 16, 16, 16};
    for (int k = 1; k < 7; k++)
        assert_in_range(a.delays[k], base[k] * 8 / 10, base[k] * 12 / 10);
    assert_int_equal(o.ready, 0);
    assert_int_equal(o.down, 0);
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
}

static void test_wrong_secret(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    acc_listen_unix(&a, ACC_OK);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    co.secret = "wrong";
    co.backoff_min_ms = 1;
    co.backoff_max_ms = 40;
    new_component(&o, &co);
    a.watch = o.c;
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(a.accepted == 4 && a.s == NULL);
    assert_int_equal(a.refused, 4);
    assert_string_not_equal(a.digest, DIGEST);
    /* Every refusal is followed by the maximum back-off, not the minimum:
     * one attempt per max delay, not a tight loop. */
    for (int k = 1; k < 4; k++)
        assert_in_range(a.delays[k], 32, 48);
    struct component_stats st;
    component_stats(o.c, &st);
    RUN_UNTIL((component_stats(o.c, &st), st.refusals == 4));
    assert_int_equal(st.attempts, 4);
    assert_int_equal(st.handshakes, 0);
    assert_int_equal(o.ready, 0);
    stop_and_free(&o);

    /* The right secret gets through the same router. */
    co.secret = SECRET;
    owner_done(&o);
    owner_init(&o);
    new_component(&o, &co);
    a.watch = NULL;
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(o.ready == 1);
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
}

static void test_expiry_and_stop(void **state)
{
    struct owner o;
    char addr[256];
    struct component_opts co;
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    unlink(sock_path()); /* no router at all */
    co.queue_ms = 5;
    co.internal = 0;
    new_component(&o, &co);
    assert_int_equal(component_start(o.c), 0);
    send_msg(&o, "e1");
    RUN_UNTIL(o.bounces.len > 0);
    assert_string_equal(o.bounces.data, "message:e1:expired\n");
    assert_string_equal(o.replies.data, "alice@example.com/r:wait:remote-server-timeout\n");
    struct component_stats st;
    component_stats(o.c, &st);
    assert_true(st.attempts >= 1);
    assert_int_equal(st.handshakes, 0);
    /* External components cannot use r:route. */
    struct xml_node *m = xml_new(XML_NS_COMPONENT, "message");
    assert_int_equal(component_route(o.c, "c2s-1", m), ERR_BADSTATE);

    /* Stopping bounces what is still queued, then on_close. */
    buf_reset(&o.bounces);
    component_free(o.c);
    co.queue_ms = 0;
    new_component(&o, &co);
    assert_int_equal(component_start(o.c), 0);
    send_msg(&o, "s1");
    assert_int_equal(component_send_raw(o.c, "<presence id='s2'/>", 19), 0);
    o.free_on_close = 1;
    component_stop(o.c);
    assert_int_equal(component_send(o.c, m), ERR_CLOSED);
    assert_int_equal(component_send_raw(o.c, "<x/>", 4), ERR_CLOSED);
    assert_int_equal(o.bounces.len, 0);
    RUN_UNTIL(o.closed == 1);
    assert_string_equal(o.bounces.data, "message:s1:stopped\npresence:s2:stopped\n");
    xml_free(m);

    /* Stop before start; free of a running component without stop. */
    owner_done(&o);
    owner_init(&o);
    new_component(&o, &co);
    o.free_on_close = 1;
    component_stop(o.c);
    component_stop(o.c);
    RUN_UNTIL(o.closed == 1);
    new_component(&o, &co);
    assert_int_equal(component_start(o.c), 0);
    send_msg(&o, "f1");
    component_free(o.c);
    component_free(NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(o.closed, 1);
    owner_done(&o);
}

static void test_free_while_ready(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    acc_listen_unix(&a, ACC_OK);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    new_component(&o, &co);
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(o.ready == 1);
    component_free(o.c);
    RUN_UNTIL(a.closed == 1);
    assert_int_equal(o.down, 0);
    assert_int_equal(o.closed, 0);
    acc_close(&a);
    owner_done(&o);
}

static void test_route(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    acc_listen_unix(&a, ACC_OK);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    new_component(&o, &co);
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(o.ready == 1);
    struct xml_node *m = xml_new(XML_NS_COMPONENT, "message");
    xml_set_attr(m, "id", "r1");
    xml_set_attr(m, "to", "a@example.com/x");
    assert_int_equal(component_route(o.c, "c2s-1", m), 0);
    const char raw[] = "<presence id='raw1'/>";
    assert_int_equal(component_send_raw(o.c, raw, sizeof(raw) - 1), 0);
    xml_free(m);
    RUN_UNTIL(has(&a.log, "raw1"));
    assert_string_equal(a.log.data, "handshake\nroute:c2s-1:sm:message:r1\npresence:raw1\n");
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
}

/* A send larger than send_max is refused whole (the router would end the
 * connection for it): ERR_LIMIT, nothing written, queued or bounced; one
 * of exactly send_max bytes goes, and so does what follows. */
static void test_send_max(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    acc_listen_unix(&a, ACC_OK);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    const char fits[] = "<presence id='fits'/>";
    co.send_max = sizeof(fits) - 1;
    new_component(&o, &co);
    const char big[] = "<presence id='big1'/>x";
    /* Refused before the connection too: never queued. */
    assert_int_equal(component_send_raw(o.c, big, sizeof(big) - 1), ERR_LIMIT);
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(o.ready == 1);
    struct xml_node *m = xml_new(XML_NS_COMPONENT, "message");
    xml_set_attr(m, "id", "big2");
    xml_add_text(xml_add_child(m, NULL, "body"), "too long", 8);
    assert_int_equal(component_send(o.c, m), ERR_LIMIT);
    assert_int_equal(component_route(o.c, "c2s-1", m), ERR_LIMIT);
    xml_free(m);
    assert_int_equal(component_send_raw(o.c, fits, sizeof(fits) - 1), 0);
    RUN_UNTIL(has(&a.log, "fits"));
    assert_string_equal(a.log.data, "handshake\npresence:fits\n");
    struct component_stats st;
    component_stats(o.c, &st);
    assert_int_equal(st.refused, 3);
    assert_int_equal(st.bounced, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(o.bounces.len, 0);
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
}

static void test_tcp(void **state)
{
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    int port = acc_listen_tcp(&a, ACC_OK);
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    /* localhost may resolve to ::1 first; the next address is tried. */
    snprintf(addr, sizeof(addr), "tcp:localhost:%d", port);
    new_component(&o, &co);
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(o.ready == 1);
    send_msg(&o, "t1");
    RUN_UNTIL(has(&a.log, "t1"));
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
}

/* Direct TLS to a router whose certificate is checked against tls_name;
 * the wrong name never gets to the handshake. */
static void test_tls(void **state)
{
    const char *cert = tmpdir_path(tmp, "router.crt");
    const char *key = tmpdir_path(tmp, "router.key");
    assert_int_equal(tls_selfsigned_write("router.example", 2, cert, key), 0);
    SSL_CTX *sctx, *cctx;
    assert_int_equal(tls_server_ctx_new(cert, key, NULL, &sctx), 0);
    assert_int_equal(tls_client_ctx_new(cert, 1, NULL, NULL, &cctx), 0);
    struct acceptor a;
    struct owner o;
    char addr[256];
    struct component_opts co;
    int port = acc_listen_tcp(&a, ACC_OK);
    a.tls = sctx;
    owner_init(&o);
    opts_init(&co, addr, sizeof(addr));
    snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", port);
    co.tls_ctx = cctx;
    /* An IP address cannot be checked against a certificate name. */
    assert_int_equal(component_new(&loop, &co, &ocbs, &o, &o.c), ERR_CONFIG);
    co.tls_name = "router.example";
    new_component(&o, &co);
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(o.ready == 1);
    assert_string_equal(a.digest, DIGEST);
    stop_and_free(&o);
    owner_done(&o);

    owner_init(&o);
    co.tls_name = "other.example";
    new_component(&o, &co);
    a.watch = o.c;
    assert_int_equal(component_start(o.c), 0);
    RUN_UNTIL(a.accepted == 3);
    assert_int_equal(o.ready, 0);
    assert_int_equal(a.handshakes, 1);
    stop_and_free(&o);
    acc_close(&a);
    owner_done(&o);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_bad_opts(void **state)
{
    static const char *const bad[] = {
        "",
        "foo",
        "unix:",
        "tcp:",
        "tcp:host",
        "tcp::5347",
        "tcp:host:0",
        "tcp:host:65536",
        "tcp:host:x1",
        "tcp:::1:5347",
        "tcp:[]:5347",
        "tcp:[::1:5347",
    };
    static const char *const good[] = {"tcp:localhost:5347", "tcp:[::1]:5347", "tcp:127.0.0.1:1",
                                       "unix:/run/parley/router.sock"};
    struct component_opts co;
    struct component *c;
    struct owner o;
    owner_init(&o);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        component_opts_default(&co);
        co.name = NAME;
        co.secret = SECRET;
        co.router = bad[i];
        assert_int_equal(component_new(&loop, &co, &ocbs, &o, &c), ERR_CONFIG);
        assert_null(c);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        component_opts_default(&co);
        co.name = NAME;
        co.secret = SECRET;
        co.router = good[i];
        assert_int_equal(component_new(&loop, &co, &ocbs, &o, &c), 0);
        component_free(c);
    }
    component_opts_default(&co);
    co.name = NAME;
    co.router = good[0];
    assert_int_equal(component_new(&loop, &co, &ocbs, &o, &c), ERR_CONFIG); /* no secret */
    co.secret = SECRET;
    static const struct component_bind b[] = {{"example.com", 0}};
    co.binds = b;
    co.nbinds = 1;
    assert_int_equal(component_new(&loop, &co, &ocbs, &o, &c), ERR_CONFIG); /* not internal */
    co.nbinds = 0;
    co.send_max = 0;
    assert_int_equal(component_new(&loop, &co, &ocbs, &o, &c), ERR_CONFIG); /* no send_max */
    uv_run(&loop, UV_RUN_NOWAIT);
    owner_done(&o);
}

static int setup(void **state)
{
    /* A daemon ignores SIGPIPE (common/daemon); the test router hangs up
     * on components that are still writing. */
    signal(SIGPIPE, SIG_IGN);
    log_init("test_component", 0, LOG_LVL_ERR + (getenv("TEST_VERBOSE") ? 4 : 0));
    if (uv_loop_init(&loop) != 0)
        return -1;
    tmp = tmpdir_new();
    return 0;
}

static int teardown(void **state)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop);
    tmpdir_free(tmp);
    return rc == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_binds),
        cmocka_unit_test(test_queue_until_ready),
        cmocka_unit_test(test_queue_cap_bounces),
        cmocka_unit_test(test_reconnect),
        cmocka_unit_test(test_backoff_grows),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_expiry_and_stop),
        cmocka_unit_test(test_free_while_ready),
        cmocka_unit_test(test_route),
        cmocka_unit_test(test_send_max),
        cmocka_unit_test(test_tcp),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_bad_opts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
