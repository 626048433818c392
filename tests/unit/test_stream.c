/*
 * test_stream.c - streams over real sockets (127.0.0.1 port 0, a Unix
 * socket in a temp dir), both ends in this process on one libuv loop:
 * plaintext and TLS exchanges, STARTTLS (with injected plaintext), SNI,
 * ALPN, certificate checks, backpressure, timeouts, flushing close,
 * write batching, error paths.
 *
 * Waiting is always for an event (RUN_UNTIL); a guard timer only stops a
 * test that would otherwise hang. No sleeps, no assertions on time.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/stream.h"
#include "common/tls.h"
#include "common/xml.h"
#include "tests/unit/tmpdir.h"

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define CLIENT_HDR                                                                                 \
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "        \
    "to='a.example' version='1.0'>"
#define SERVER_HDR                                                                                 \
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "        \
    "from='a.example' id='s1' version='1.0'>"
#define STREAM_END "</stream:stream>"

static uv_loop_t loop;
static struct tmpdir *tmp;
static const char *a_cert, *a_key, *b_cert, *b_key;

/* ---- one end of a connection, recording what happens to it ---- */

struct peer {
    struct stream *s;
    int is_server;
    int connected, secured, opens, stream_closes, closed;
    int errors, last_err;
    enum xml_stream_err last_cond;
    char last_text[64];
    int elements;
    int elements_at_eof; /* elements seen when ERR_CLOSED came, -1 before */
    int pressure_on, pressure_off;
    struct buf log; /* one line per element: name[:id] */
    /* test-specific behaviour */
    void (*on_connect)(struct peer *p);
    void (*on_open)(struct peer *p, struct xml_node *hdr);
    void (*on_elem)(struct peer *p, struct xml_node *el);
    SSL_CTX *tls_ctx; /* client: for STARTTLS on <proceed/> */
    const char *servername;
};

static void peer_init(struct peer *p, int is_server)
{
    memset(p, 0, sizeof(*p));
    p->is_server = is_server;
    p->elements_at_eof = -1;
    buf_init(&p->log);
}

static void peer_done(struct peer *p)
{
    buf_free(&p->log);
}

static void g_on_connect(struct stream *s, void *arg)
{
    struct peer *p = arg;
    p->connected++;
    if (p->on_connect)
        p->on_connect(p);
}

static void g_on_secure(struct stream *s, void *arg)
{
    struct peer *p = arg;
    assert_true(stream_is_secure(s));
    p->secured++;
}

static void g_on_stream_open(struct stream *s, void *arg, struct xml_node *hdr)
{
    struct peer *p = arg;
    p->opens++;
    assert_string_equal(hdr->name, "stream");
    assert_string_equal(hdr->ns, XML_NS_STREAM);
    assert_string_equal(stream_content_ns(p->s), XML_NS_CLIENT);
    if (p->on_open)
        p->on_open(p, hdr);
    else if (p->is_server)
        assert_int_equal(stream_write_str(s, SERVER_HDR), 0);
    xml_free(hdr);
}

static void g_on_element(struct stream *s, void *arg, struct xml_node *el, const char *raw,
                         size_t rawlen)
{
    struct peer *p = arg;
    assert_non_null(raw);
    assert_true(rawlen > 0);
    p->elements++;
    const char *id = xml_get_attr(el, "id");
    buf_append_str(&p->log, el->name);
    if (id != NULL)
        buf_printf(&p->log, ":%s", id);
    if (strcmp(el->name, "error") == 0 && strcmp(el->ns, XML_NS_STREAM) == 0) {
        struct xml_node *cond = xml_child(el, XML_NS_STREAMS_ERR, NULL);
        if (cond != NULL)
            buf_printf(&p->log, "/%s", cond->name);
    }
    buf_append_str(&p->log, "\n");
    if (p->on_elem)
        p->on_elem(p, el);
    xml_free(el);
}

static void g_on_stream_close(struct stream *s, void *arg)
{
    struct peer *p = arg;
    p->stream_closes++;
    stream_write_str(s, STREAM_END);
    stream_close(s);
}

static void g_on_error(struct stream *s, void *arg, int err, enum xml_stream_err cond,
                       const char *text)
{
    struct peer *p = arg;
    p->errors++;
    p->last_err = err;
    p->last_cond = cond;
    snprintf(p->last_text, sizeof(p->last_text), "%s", text ? text : "");
    if (err == ERR_CLOSED)
        p->elements_at_eof = p->elements;
}

static void g_on_pressure(struct stream *s, void *arg, int congested)
{
    struct peer *p = arg;
    if (congested)
        p->pressure_on++;
    else
        p->pressure_off++;
    assert_int_equal(stream_congested(s), congested);
}

static void g_on_close(struct stream *s, void *arg)
{
    struct peer *p = arg;
    assert_ptr_equal(s, p->s);
    p->closed++;
    p->s = NULL;
}

static const struct stream_cbs gcbs = {
    .on_connect = g_on_connect,
    .on_secure = g_on_secure,
    .on_stream_open = g_on_stream_open,
    .on_element = g_on_element,
    .on_stream_close = g_on_stream_close,
    .on_error = g_on_error,
    .on_pressure = g_on_pressure,
    .on_close = g_on_close,
};

/* ---- running the loop ---- */

/* Conditions can turn true in any phase of an iteration (a flush runs
 * just before the poll), so the loop is run without blocking and the
 * condition checked after every iteration. */

static int guard_fired;

static void on_guard(uv_timer_t *t)
{
    guard_fired = 1;
}

#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        uv_timer_t guard_;                                                                         \
        guard_fired = 0;                                                                           \
        uv_timer_init(&loop, &guard_);                                                             \
        guard_.data = &guard_fired;                                                                \
        uv_timer_start(&guard_, on_guard, 20000, 0);                                               \
        while (!(cond) && !guard_fired)                                                            \
            uv_run(&loop, UV_RUN_NOWAIT);                                                          \
        uv_close((uv_handle_t *)&guard_, NULL);                                                    \
        uv_run(&loop, UV_RUN_NOWAIT);                                                              \
        if (guard_fired)                                                                           \
            fail_msg("timed out waiting for %s", #cond);                                           \
    } while (0)

/* ---- listeners ---- */

struct listener {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    struct peer *server;
    struct stream_opts opts;
    SSL_CTX *direct_tls;
    struct sockaddr_in addr;
    const char *path;
};

static void on_connection(uv_stream_t *srv, int status)
{
    struct listener *l = srv->data;
    assert_int_equal(status, 0);
    assert_null(l->server->s);
    assert_int_equal(stream_accept(srv, &l->opts, &gcbs, l->server, &l->server->s), 0);
    if (l->direct_tls != NULL)
        assert_int_equal(stream_starttls(l->server->s, l->direct_tls, STREAM_TLS_SERVER, NULL), 0);
}

static void listen_tcp(struct listener *l, struct peer *server)
{
    memset(l, 0, sizeof(*l));
    l->server = server;
    stream_opts_default(&l->opts);
    uv_tcp_init(&loop, &l->h.tcp);
    l->h.handle.data = l;
    uv_ip4_addr("127.0.0.1", 0, &l->addr);
    assert_int_equal(uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&l->addr, 0), 0);
    int len = sizeof(l->addr);
    assert_int_equal(uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&l->addr, &len), 0);
    assert_int_equal(uv_listen(&l->h.stream, 8, on_connection), 0);
}

static void listen_unix(struct listener *l, struct peer *server, const char *path)
{
    memset(l, 0, sizeof(*l));
    l->server = server;
    l->path = path;
    stream_opts_default(&l->opts);
    uv_pipe_init(&loop, &l->h.pipe, 0);
    l->h.handle.data = l;
    assert_int_equal(uv_pipe_bind(&l->h.pipe, path), 0);
    assert_int_equal(uv_listen(&l->h.stream, 8, on_connection), 0);
}

static void listener_close(struct listener *l)
{
    uv_close(&l->h.handle, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static void connect_client(struct listener *l, struct peer *c, const struct stream_opts *opts)
{
    assert_int_equal(stream_connect_tcp(&loop, (struct sockaddr *)&l->addr, opts, &gcbs, c, &c->s),
                     0);
}

/* ---- behaviours ---- */

static void write_client_header(struct peer *p)
{
    assert_int_equal(stream_write_str(p->s, CLIENT_HDR), 0);
}

/* A TCP listener l for srv and a client cli to connect to it (not yet
 * connected: options first), which writes its header once connected. */
static void tcp_pair(struct listener *l, struct peer *srv, struct peer *cli)
{
    peer_init(srv, 1);
    peer_init(cli, 0);
    listen_tcp(l, srv);
    cli->on_connect = write_client_header;
}

static void pair_done(struct listener *l, struct peer *srv, struct peer *cli)
{
    listener_close(l);
    peer_done(srv);
    peer_done(cli);
}

static void starttls_and_header(struct peer *p)
{
    assert_int_equal(stream_starttls(p->s, p->tls_ctx, STREAM_TLS_CLIENT, p->servername), 0);
    assert_int_equal(stream_write_str(p->s, CLIENT_HDR), 0);
}

static void write_messages(struct stream *s, const char *prefix, int n)
{
    char m[128];
    for (int i = 0; i < n; i++) {
        snprintf(m, sizeof(m), "<message id='%s%d' to='x@a.example'><body>hi</body></message>",
                 prefix, i);
        assert_int_equal(stream_write_str(s, m), 0);
    }
}

/* A message with that id and a body of digits, about size bytes. */
static struct rbuf *big_message(const char *id, size_t size)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "<message id='%s'><body>", id);
    while (b.len < size - 20)
        buf_append_str(&b, "0123456789");
    buf_append_str(&b, "</body></message>");
    return rbuf_from_buf(&b);
}

/* Server answers the header with its own and three messages. */
static void server_open_and_send(struct peer *p, struct xml_node *hdr)
{
    assert_int_equal(stream_write_str(p->s, SERVER_HDR), 0);
    write_messages(p->s, "s", 3);
}

/* Client answers the server's header with three messages and ends. */
static void client_send_and_end(struct peer *p, struct xml_node *hdr)
{
    write_messages(p->s, "c", 3);
    assert_int_equal(stream_write_str(p->s, STREAM_END), 0);
    stream_close(p->s);
    /* Closing is final: no more writes. */
    assert_int_equal(stream_write_str(p->s, "<x/>"), ERR_CLOSED);
}

static void run_exchange(struct peer *srv, struct peer *cli)
{
    srv->on_open = server_open_and_send;
    cli->on_open = client_send_and_end;
    RUN_UNTIL(srv->closed && cli->closed);
    assert_int_equal(srv->opens, 1);
    assert_int_equal(cli->opens, 1);
    assert_string_equal(cli->log.data, "message:s0\nmessage:s1\nmessage:s2\n");
    assert_string_equal(srv->log.data, "message:c0\nmessage:c1\nmessage:c2\n");
    assert_int_equal(srv->stream_closes, 1);
    assert_int_equal(srv->closed, 1);
    assert_int_equal(cli->closed, 1);
    assert_int_equal(srv->errors, 0);
}

/* ---- tests ---- */

static void test_plain_tcp(void **state)
{
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    connect_client(&l, &cli, NULL);
    assert_false(stream_is_tls(cli.s));
    run_exchange(&srv, &cli);
    assert_int_equal(cli.connected, 1);
    assert_int_equal(srv.secured + cli.secured, 0);
    pair_done(&l, &srv, &cli);
}

static void test_plain_unix(void **state)
{
    struct peer srv, cli;
    struct listener l;
    peer_init(&srv, 1);
    peer_init(&cli, 0);
    listen_unix(&l, &srv, tmpdir_path(tmp, "s.sock"));
    cli.on_connect = write_client_header;
    assert_int_equal(stream_connect_unix(&loop, l.path, NULL, &gcbs, &cli, &cli.s), 0);
    run_exchange(&srv, &cli);
    pair_done(&l, &srv, &cli);
}

static SSL_CTX *sni_b;
static int sni_calls;

static SSL_CTX *pick_ctx(void *arg, const char *name)
{
    sni_calls++;
    return strcmp(name, "b.example") == 0 ? sni_b : NULL;
}

/* A listener on direct TLS with server context sa, and a client with
 * context cb that checks the name servername and sends its header once the
 * handshake is done; the client is not connected yet (options first). */
static void direct_tls_pair(struct listener *l, struct peer *srv, struct peer *cli, SSL_CTX *sa,
                            SSL_CTX *cb, const char *servername)
{
    tcp_pair(l, srv, cli);
    l->direct_tls = sa;
    cli->tls_ctx = cb;
    cli->servername = servername;
    cli->on_connect = starttls_and_header;
}

/* Direct TLS (XEP-0368): SNI picks b.example's certificate, ALPN agrees on
 * xmpp-client, the client checks the certificate. */
static void test_tls_direct(void **state)
{
    static const char *const alpn[] = {"xmpp-client"};
    SSL_CTX *sa, *cb;
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, NULL, &sa), 0);
    assert_int_equal(tls_server_ctx_new(b_cert, b_key, NULL, &sni_b), 0);
    assert_int_equal(tls_ctx_set_sni(sa, pick_ctx, NULL), 0);
    assert_int_equal(tls_ctx_set_alpn(sa, 1, alpn, 1), 0);
    assert_int_equal(tls_ctx_set_alpn(sni_b, 1, alpn, 1), 0);
    assert_int_equal(tls_client_ctx_new(b_cert, 1, NULL, NULL, &cb), 0);
    assert_int_equal(tls_ctx_set_alpn(cb, 0, alpn, 1), 0);

    struct peer srv, cli;
    struct listener l;
    direct_tls_pair(&l, &srv, &cli, sa, cb, "b.example");
    connect_client(&l, &cli, NULL);

    /* Stop once both are secure and have the other's header. */
    srv.on_open = server_open_and_send;
    RUN_UNTIL(srv.secured && cli.secured && cli.elements == 3);
    assert_int_equal(sni_calls, 1);
    assert_string_equal(stream_tls_servername(srv.s), "b.example");
    assert_null(stream_tls_servername(cli.s));
    char name[TLS_ALPN_MAX + 1];
    assert_int_equal(stream_alpn(cli.s, name, sizeof(name)), 0);
    assert_string_equal(name, "xmpp-client");
    assert_int_equal(stream_alpn(srv.s, name, sizeof(name)), 0);
    assert_string_equal(name, "xmpp-client");
    assert_int_equal(tls_peer_verify(stream_ssl(cli.s), "b.example"), 0);
    assert_int_equal(tls_peer_verify(stream_ssl(cli.s), "a.example"), ERR_AUTH);
    assert_int_equal(tls_peer_verify(stream_ssl(srv.s), "b.example"), ERR_NOTFOUND);

    /* Client to server, then a clean close (with close_notify). */
    write_messages(cli.s, "c", 3);
    assert_int_equal(stream_write_str(cli.s, STREAM_END), 0);
    stream_close(cli.s);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_string_equal(srv.log.data, "message:c0\nmessage:c1\nmessage:c2\n");
    assert_int_equal(srv.stream_closes, 1);
    assert_int_equal(srv.errors, 0);
    assert_int_equal(cli.errors, 0);

    pair_done(&l, &srv, &cli);
    tls_ctx_free(sa);
    tls_ctx_free(sni_b);
    tls_ctx_free(cb);
}

/* Twenty TLS records (one per stanza: separate queue items) written in one
 * loop iteration, read by a server whose reads hold many whole records
 * (read_cap 16 KiB) or a piece of one (read_cap 7): every stanza arrives,
 * in order, whether a read ends on a record boundary or not. */
static void tls_records(size_t read_cap)
{
    SSL_CTX *sa, *cb;
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, NULL, &sa), 0);
    assert_int_equal(tls_client_ctx_new(a_cert, 1, NULL, NULL, &cb), 0);
    struct peer srv, cli;
    struct listener l;
    direct_tls_pair(&l, &srv, &cli, sa, cb, "a.example");
    l.opts.read_cap = read_cap;
    connect_client(&l, &cli, NULL);
    srv.on_open = server_open_and_send;
    RUN_UNTIL(srv.secured && cli.secured && cli.elements == 3);

    struct buf want = BUF_INIT;
    for (int i = 0; i < 20; i++) {
        char m[128];
        snprintf(m, sizeof(m), "<message id='r%d' to='x@a.example'><body>%d</body></message>", i,
                 i);
        struct rbuf *rb = rbuf_new(m, strlen(m));
        assert_int_equal(stream_write_rbuf(cli.s, rb), 0);
        rbuf_unref(rb);
        buf_printf(&want, "message:r%d\n", i);
    }
    assert_int_equal(stream_write_str(cli.s, STREAM_END), 0);
    stream_close(cli.s);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_string_equal(srv.log.data, want.data);
    assert_int_equal(srv.stream_closes, 1);
    assert_int_equal(srv.errors, 0);
    buf_free(&want);

    pair_done(&l, &srv, &cli);
    tls_ctx_free(sa);
    tls_ctx_free(cb);
}

static void test_tls_records(void **state)
{
    tls_records(16 * 1024);
    tls_records(7);
}

/* A client that trusts another certificate: the handshake fails, both
 * ends report it and close. */
static void test_tls_verify_fail(void **state)
{
    SSL_CTX *sa, *cb;
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, NULL, &sa), 0);
    assert_int_equal(tls_client_ctx_new(b_cert, 1, NULL, NULL, &cb), 0);
    struct peer srv, cli;
    struct listener l;
    direct_tls_pair(&l, &srv, &cli, sa, cb, "a.example");
    connect_client(&l, &cli, NULL);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(cli.errors, 1);
    assert_int_equal(cli.last_err, ERR_TLS);
    assert_int_equal(srv.errors, 1);
    assert_int_equal(srv.opens + cli.opens + srv.secured + cli.secured, 0);
    pair_done(&l, &srv, &cli);
    tls_ctx_free(sa);
    tls_ctx_free(cb);
}

/* STARTTLS, RFC 6120 §5.4 */

static void starttls_server_open(struct peer *p, struct xml_node *hdr)
{
    assert_int_equal(stream_write_str(p->s, SERVER_HDR), 0);
    if (!stream_is_tls(p->s))
        assert_int_equal(stream_write_str(p->s, "<stream:features><starttls xmlns='" NS_TLS
                                                "'><required/></starttls></stream:features>"),
                         0);
    else
        write_messages(p->s, "s", 2);
}

static SSL_CTX *starttls_server_ctx;

static void starttls_server_elem(struct peer *p, struct xml_node *el)
{
    if (strcmp(el->name, "starttls") == 0) {
        assert_false(stream_is_tls(p->s));
        assert_int_equal(stream_write_str(p->s, "<proceed xmlns='" NS_TLS "'/>"), 0);
        assert_int_equal(stream_starttls(p->s, starttls_server_ctx, STREAM_TLS_SERVER, NULL), 0);
        assert_int_equal(stream_starttls(p->s, starttls_server_ctx, STREAM_TLS_SERVER, NULL),
                         ERR_BADSTATE);
    }
}

static void starttls_client_elem(struct peer *p, struct xml_node *el)
{
    if (strcmp(el->name, "features") == 0 && xml_child(el, NS_TLS, "starttls") != NULL) {
        /* The injected stanza shares the packet with <starttls/>. */
        assert_int_equal(stream_write_str(p->s, "<starttls xmlns='" NS_TLS "'/>"
                                                "<message id='injected'/>"),
                         0);
    } else if (strcmp(el->name, "proceed") == 0) {
        starttls_and_header(p);
    } else if (strcmp(el->name, "message") == 0 && stream_is_secure(p->s) &&
               strcmp(xml_get_attr(el, "id"), "s1") == 0) {
        write_messages(p->s, "c", 2);
        assert_int_equal(stream_write_str(p->s, STREAM_END), 0);
        stream_close(p->s);
    }
}

static void test_starttls(void **state)
{
    SSL_CTX *cctx;
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, NULL, &starttls_server_ctx), 0);
    assert_int_equal(tls_client_ctx_new(a_cert, 1, NULL, NULL, &cctx), 0);
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    srv.on_open = starttls_server_open;
    srv.on_elem = starttls_server_elem;
    cli.on_elem = starttls_client_elem;
    cli.tls_ctx = cctx;
    cli.servername = "a.example";
    connect_client(&l, &cli, NULL);
    RUN_UNTIL(srv.closed && cli.closed);

    assert_int_equal(srv.opens, 2);
    assert_int_equal(cli.opens, 2);
    assert_int_equal(srv.secured, 1);
    assert_int_equal(cli.secured, 1);
    /* The plaintext after <starttls/> never reached the server's owner. */
    assert_string_equal(srv.log.data, "starttls\nmessage:c0\nmessage:c1\n");
    assert_string_equal(cli.log.data, "features\nproceed\nmessage:s0\nmessage:s1\n");
    assert_int_equal(srv.errors + cli.errors, 0);

    pair_done(&l, &srv, &cli);
    tls_ctx_free(starttls_server_ctx);
    tls_ctx_free(cctx);
}

/* ---- backpressure ---- */

#define BP_HIGH  (64 * 1024)
#define BP_LOW   (16 * 1024)
#define BP_MAX   (256 * 1024)
#define BP_CHUNK 8000

static int bp_client_ready;

static void bp_client_open(struct peer *p, struct xml_node *hdr)
{
    /* Stop reading: from now on the server's output piles up. */
    stream_pause(p->s);
    bp_client_ready = 1;
}

/* A connected pair whose server has the backpressure marks above (and
 * read_while_congested as given), whose client has stopped reading. */
static void bp_pair(struct listener *l, struct peer *srv, struct peer *cli,
                    int read_while_congested)
{
    tcp_pair(l, srv, cli);
    l->opts.out_high = BP_HIGH;
    l->opts.out_low = BP_LOW;
    l->opts.out_max = BP_MAX;
    l->opts.read_while_congested = read_while_congested;
    cli->on_open = bp_client_open;
    bp_client_ready = 0;
    connect_client(l, cli, NULL);
    RUN_UNTIL(bp_client_ready);
}

static void test_backpressure(void **state)
{
    struct peer srv, cli;
    struct listener l;
    bp_pair(&l, &srv, &cli, 0);
    struct rbuf *rb = big_message("big", BP_CHUNK);

    /* Write until the kernel's buffers are full and the queue stays over
     * the high-water mark after a flush. */
    struct stream_stats st;
    uint64_t written = 0;
    for (;;) {
        int rc;
        while ((rc = stream_write_rbuf(srv.s, rb)) == 0)
            written += rb->len;
        assert_int_equal(rc, ERR_AGAIN);
        stream_stats(srv.s, &st);
        assert_true(st.queued + rb->len > BP_MAX);
        assert_true(st.congested);
        assert_false(st.reading);
        uv_run(&loop, UV_RUN_NOWAIT);
        stream_stats(srv.s, &st);
        if (st.queued > BP_HIGH)
            break;
    }
    /* The owner heard of it (transient congestion that one flush cleared
     * may have come and gone unreported, or reported on and off). */
    assert_true(srv.pressure_on >= 1);
    assert_int_equal(srv.pressure_on, srv.pressure_off + 1);
    assert_true(stream_congested(srv.s));
    /* The kernel takes no more: the queue fills up to the hard cap, and
     * the caller keeps its reference on failure. */
    while (stream_write_rbuf(srv.s, rb) == 0)
        written += rb->len;
    unsigned refs = rb->refs;
    assert_int_equal(stream_write_rbuf(srv.s, rb), ERR_AGAIN);
    assert_int_equal(rb->refs, refs);
    assert_int_equal(stream_write(srv.s, rb->data, BP_MAX + 1), ERR_AGAIN);
    /* Queued items hold references. */
    assert_true(rb->refs > 1);

    /* The congested server does not read what the client sends now. */
    write_messages(cli.s, "c", 1);
    stream_stats(srv.s, &st);
    assert_false(st.reading);

    /* The client drains: the server's queue empties, reading resumes and
     * the client's message arrives. */
    stream_resume(cli.s);
    RUN_UNTIL(srv.pressure_off == srv.pressure_on && srv.elements == 1);
    stream_stats(srv.s, &st);
    assert_false(st.congested);
    assert_true(st.reading);
    assert_string_equal(srv.log.data, "message:c0\n");
    RUN_UNTIL((uint64_t)cli.elements * rb->len == written);
    assert_int_equal(rb->refs, 1);

    stream_close(cli.s);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(srv.last_err, ERR_CLOSED);
    rbuf_unref(rb);
    pair_done(&l, &srv, &cli);
}

static void test_backpressure_relay(void **state)
{
    /* With read_while_congested (the router), a stream over out_high
     * still reads from its peer: two such relays cannot deadlock. */
    struct peer srv, cli;
    struct listener l;
    bp_pair(&l, &srv, &cli, 1);
    struct rbuf *rb = big_message("big", BP_CHUNK);
    struct stream_stats st;
    for (;;) {
        while (stream_write_rbuf(srv.s, rb) == 0)
            ;
        uv_run(&loop, UV_RUN_NOWAIT);
        stream_stats(srv.s, &st);
        if (st.queued > BP_HIGH)
            break;
    }
    assert_true(st.congested);
    assert_true(st.reading);
    /* The client's message arrives although the server is congested. */
    write_messages(cli.s, "c", 1);
    RUN_UNTIL(srv.elements == 1);
    stream_stats(srv.s, &st);
    assert_true(st.congested);
    assert_string_equal(srv.log.data, "message:c0\n");

    stream_resume(cli.s);
    stream_close(cli.s);
    RUN_UNTIL(srv.closed && cli.closed);
    rbuf_unref(rb);
    pair_done(&l, &srv, &cli);
}

/* ---- timeouts ---- */

static void test_idle_timeout(void **state)
{
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    /* Long enough for the header to come first even on a loaded machine;
     * the test only waits for the event. */
    l.opts.idle_ms = 200;
    connect_client(&l, &cli, NULL);
    /* The client says nothing after its header: the server times out and,
     * since its owner does nothing, sends connection-timeout and closes. */
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(srv.errors, 1);
    assert_int_equal(srv.last_err, ERR_TIMEOUT);
    assert_int_equal(srv.last_cond, XML_SE_CONNECTION_TIMEOUT);
    assert_string_equal(cli.log.data, "error/connection-timeout\n");
    assert_int_equal(cli.stream_closes, 1);
    pair_done(&l, &srv, &cli);
}

static void test_handshake_timeout(void **state)
{
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    l.opts.handshake_ms = 200;
    connect_client(&l, &cli, NULL);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(srv.opens, 1);
    assert_int_equal(srv.last_err, ERR_TIMEOUT);
    assert_string_equal(srv.last_text, "handshake timeout");
    assert_string_equal(cli.log.data, "error/connection-timeout\n");
    pair_done(&l, &srv, &cli);
}

static void count_active_timer(uv_handle_t *h, void *arg)
{
    /* The RUN_UNTIL guard does not count. */
    if (h->type == UV_TIMER && uv_is_active(h) && h->data != &guard_fired)
        ++*(int *)arg;
}

static int active_timers(void)
{
    int n = 0;
    uv_walk(&loop, count_active_timer, &n);
    return n;
}

/* Once established, a stream without an idle timeout runs no timer: the
 * server's handshake timer is the only one, and set_established stops it. */
static void established_open(struct peer *p, struct xml_node *hdr)
{
    assert_int_equal(active_timers(), 1);
    assert_int_equal(stream_write_str(p->s, SERVER_HDR), 0);
    stream_set_established(p->s);
    assert_int_equal(active_timers(), 0);
}

static void test_established(void **state)
{
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    srv.on_open = established_open;
    struct stream_opts o;
    stream_opts_default(&o);
    o.handshake_ms = 0;
    connect_client(&l, &cli, &o);
    RUN_UNTIL(srv.opens == 1 && cli.opens == 1);
    assert_int_equal(active_timers(), 0);
    /* Reading again after a pause arms no timer without an idle timeout. */
    stream_pause(srv.s);
    stream_resume(srv.s);
    assert_int_equal(active_timers(), 0);
    stream_close(cli.s);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(srv.errors, 1);
    assert_int_equal(srv.last_err, ERR_CLOSED);
    pair_done(&l, &srv, &cli);
}

/* ---- closing ---- */

#define CLOSE_N 3000

static void close_server_open(struct peer *p, struct xml_node *hdr)
{
    assert_int_equal(stream_write_str(p->s, SERVER_HDR), 0);
    write_messages(p->s, "m", CLOSE_N);
    stream_close(p->s);
}

static void close_client_open(struct peer *p, struct xml_node *hdr)
{
    stream_pause(p->s);
}

static void test_close_flushes(void **state)
{
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    l.opts.out_max = 64 * 1024 * 1024;
    l.opts.out_high = 64 * 1024 * 1024;
    srv.on_open = close_server_open;
    cli.on_open = close_client_open;
    connect_client(&l, &cli, NULL);
    /* The client reads nothing until the server has closed (so the whole
     * output was queued when stream_close was called). */
    RUN_UNTIL(cli.opens == 1 && srv.opens == 1);
    stream_resume(cli.s);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(cli.elements, CLOSE_N);
    /* EOF came after every stanza. */
    assert_int_equal(cli.elements_at_eof, CLOSE_N);
    assert_int_equal(cli.last_err, ERR_CLOSED);
    assert_int_equal(srv.errors, 0);
    pair_done(&l, &srv, &cli);
}

/* More than loopback socket buffers hold, so that some is still queued
 * when the peer's garbage arrives. */
#define BIG_N 2000

static uint64_t bytes_in_of(struct stream *s)
{
    struct stream_stats st;
    stream_stats(s, &st);
    return st.bytes_in;
}

static void big_close_server_open(struct peer *p, struct xml_node *hdr)
{
    assert_int_equal(stream_write_str(p->s, SERVER_HDR), 0);
    struct rbuf *m = big_message("big", 8000);
    for (int i = 0; i < BIG_N; i++)
        assert_int_equal(stream_write(p->s, m->data, m->len), 0);
    rbuf_unref(m);
    stream_close(p->s);
}

static void test_close_flushes_despite_bad_input(void **state)
{
    /* Garbage from the peer while we flush our close must not throw away
     * what is still queued for it. */
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    l.opts.out_max = 64 * 1024 * 1024;
    l.opts.out_high = 64 * 1024 * 1024;
    srv.on_open = big_close_server_open;
    cli.on_open = close_client_open;
    connect_client(&l, &cli, NULL);
    RUN_UNTIL(cli.opens == 1 && srv.opens == 1);
    struct stream_stats st;
    stream_stats(srv.s, &st);
    assert_true(st.queued > 0);
    uint64_t in_before = st.bytes_in;
    assert_int_equal(stream_write_str(cli.s, "<message><<not xml"), 0);
    /* Until the closing server has read (and failed to parse) it. */
    RUN_UNTIL(bytes_in_of(srv.s) > in_before);
    stream_resume(cli.s);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(cli.elements, BIG_N);
    assert_int_equal(cli.elements_at_eof, BIG_N);
    pair_done(&l, &srv, &cli);
}

/* ---- batching ---- */

#define BATCH_COPIES 1000
#define BATCH_REFS   200

static uint64_t batch_writes_before;

static void batch_server_open(struct peer *p, struct xml_node *hdr)
{
    struct stream_stats st;
    stream_stats(p->s, &st);
    batch_writes_before = st.writes;
    assert_int_equal(stream_write_str(p->s, SERVER_HDR), 0);
    write_messages(p->s, "m", BATCH_COPIES);
    struct rbuf *rb = rbuf_new("<presence/>", 11);
    for (int i = 0; i < BATCH_REFS; i++)
        assert_int_equal(stream_write_rbuf(p->s, rb), 0);
    rbuf_unref(rb);
}

static void test_batching(void **state)
{
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    srv.on_open = batch_server_open;
    connect_client(&l, &cli, NULL);
    RUN_UNTIL(cli.elements == BATCH_COPIES + BATCH_REFS);
    struct stream_stats st;
    stream_stats(srv.s, &st);
    /* The copies coalesce into a few chunks, the references go 64 to a
     * call: 1201 writes of the owner, a handful of write calls. */
    uint64_t calls = st.writes - batch_writes_before;
    assert_true(calls >= 1);
    assert_true(calls <= 12);
    assert_int_equal(st.queued, 0);
    struct stream_stats cst;
    stream_stats(cli.s, &cst);
    assert_int_equal(cst.bytes_in, st.bytes_out);
    stream_close(srv.s);
    RUN_UNTIL(srv.closed && cli.closed);
    pair_done(&l, &srv, &cli);
}

/* ---- errors ---- */

static void test_parse_error(void **state)
{
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    cli.on_open = NULL;
    connect_client(&l, &cli, NULL);
    RUN_UNTIL(cli.opens == 1);
    assert_int_equal(stream_write_str(cli.s, "<message><a></b></message>"), 0);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(srv.last_err, ERR_PARSE);
    assert_int_not_equal(srv.last_cond, XML_SE_NONE);
    assert_int_equal(strncmp(cli.log.data, "error/", 6), 0);
    assert_int_equal(srv.elements, 0);
    pair_done(&l, &srv, &cli);
}

/* ---- hibernation of idle streams ---- */

static int hibernating(struct peer *p)
{
    struct stream_stats st;
    stream_stats(p->s, &st);
    return st.hibernating;
}

static int waited;

static void on_wait(uv_timer_t *t)
{
    waited = 1;
}

/* Run the loop for ms (to let a quiet spell pass, not to assert timing). */
static void run_for(uint64_t ms)
{
    uv_timer_t t;
    waited = 0;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_wait, ms, 0);
    RUN_UNTIL(waited);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* A quiet TLS stream hibernates its parser and frees its queue arrays;
 * stanzas after that (also one split over a quiet spell, during which the
 * parser must stay awake), replies and the close work as before. */
static void test_hibernate(void **state)
{
    SSL_CTX *sa, *cb;
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, NULL, &sa), 0);
    assert_int_equal(tls_client_ctx_new(a_cert, 1, NULL, NULL, &cb), 0);
    struct peer srv, cli;
    struct listener l;
    direct_tls_pair(&l, &srv, &cli, sa, cb, "a.example");
    l.opts.hibernate_ms = 20;
    connect_client(&l, &cli, NULL);
    srv.on_open = server_open_and_send;
    RUN_UNTIL(cli.elements == 3 && srv.s != NULL && hibernating(&srv));
    /* The client has no hibernate_ms: it never hibernates. */
    assert_false(hibernating(&cli));

    /* Wake: two stanzas in, a reply out. */
    write_messages(cli.s, "c", 2);
    RUN_UNTIL(srv.elements == 2);
    assert_false(hibernating(&srv));
    write_messages(srv.s, "r", 1);
    RUN_UNTIL(cli.elements == 4);
    assert_string_equal(cli.log.data, "message:s0\nmessage:s1\nmessage:s2\nmessage:r0\n");

    /* Quiet again: asleep again. */
    RUN_UNTIL(hibernating(&srv));

    /* Half a stanza, then quiet: the parser keeps it. */
    const char head[] = "<message id='p' to='x@a.example'><body>he";
    assert_int_equal(stream_write_str(cli.s, head), 0);
    RUN_UNTIL(!hibernating(&srv));
    run_for(100);
    assert_false(hibernating(&srv));
    assert_int_equal(srv.elements, 2);
    assert_int_equal(stream_write_str(cli.s, "llo</body></message>"), 0);
    RUN_UNTIL(srv.elements == 3);
    assert_string_equal(srv.log.data, "message:c0\nmessage:c1\nmessage:p\n");

    /* The close of a hibernating stream. */
    RUN_UNTIL(hibernating(&srv));
    assert_int_equal(stream_write_str(cli.s, STREAM_END), 0);
    stream_close(cli.s);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(srv.stream_closes, 1);
    assert_int_equal(srv.errors + cli.errors, 0);

    pair_done(&l, &srv, &cli);
    tls_ctx_free(sa);
    tls_ctx_free(cb);
}

static void test_connect_refused(void **state)
{
    /* A port that was just free: bind, learn it, close. */
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    listener_close(&l);
    connect_client(&l, &cli, NULL);
    RUN_UNTIL(cli.closed);
    assert_int_equal(cli.connected, 0);
    assert_int_equal(cli.errors, 1);
    assert_int_equal(cli.last_err, ERR_IO);
    assert_int_equal(cli.closed, 1);
    struct stream *s;
    assert_int_equal(stream_connect_unix(&loop, "", NULL, &gcbs, &cli, &s), ERR_INVAL);
    assert_null(s);
    peer_done(&srv);
    peer_done(&cli);
}

/* Abort and close are idempotent; on_close comes once. */
static void test_abort(void **state)
{
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    connect_client(&l, &cli, NULL);
    RUN_UNTIL(cli.opens == 1);
    struct sockaddr_storage ss;
    assert_int_equal(stream_peer_addr(srv.s, &ss), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    write_messages(cli.s, "c", 5);
    stream_close(cli.s);
    stream_abort(cli.s);
    stream_abort(cli.s);
    stream_close(cli.s);
    stream_error(cli.s, XML_SE_CONFLICT, NULL);
    RUN_UNTIL(srv.closed && cli.closed);
    assert_int_equal(cli.closed, 1);
    assert_int_equal(srv.closed, 1);
    assert_int_equal(cli.errors, 0);
    stream_abort(NULL);
    stream_close(NULL);
    pair_done(&l, &srv, &cli);
}

static int all_written(struct stream *s)
{
    struct stream_stats st;
    stream_stats(s, &st);
    return st.queued == 0 && st.bytes_out > 0;
}

/* An owner pause stops reading until resume; the idle timer does not run
 * while paused. */
static void test_pause_resume(void **state)
{
    struct peer srv, cli;
    struct listener l;
    tcp_pair(&l, &srv, &cli);
    connect_client(&l, &cli, NULL);
    RUN_UNTIL(cli.opens == 1);
    struct stream_stats st;
    stream_pause(srv.s);
    stream_stats(srv.s, &st);
    assert_false(st.reading);
    write_messages(cli.s, "c", 2);
    RUN_UNTIL(all_written(cli.s));
    uv_run(&loop, UV_RUN_NOWAIT);
    stream_stats(srv.s, &st);
    assert_false(st.reading);
    assert_int_equal(srv.elements, 0);
    stream_resume(srv.s);
    RUN_UNTIL(srv.elements == 2);
    assert_string_equal(srv.log.data, "message:c0\nmessage:c1\n");
    stream_close(cli.s);
    RUN_UNTIL(srv.closed && cli.closed);
    pair_done(&l, &srv, &cli);
}

/* Both ends of a socketpair adopted as Unix streams; a 7-byte read cap
 * splits every stanza over many reads. */
static void test_adopt_small_reads(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct peer srv, cli;
    peer_init(&srv, 1);
    peer_init(&cli, 0);
    struct stream_opts o;
    stream_opts_default(&o);
    o.read_cap = 7;
    assert_int_equal(stream_adopt_fd(&loop, sv[0], 1, &o, &gcbs, &srv, &srv.s), 0);
    assert_int_equal(stream_adopt_fd(&loop, sv[1], 1, &o, &gcbs, &cli, &cli.s), 0);
    struct sockaddr_storage ss;
    assert_int_equal(stream_peer_addr(srv.s, &ss), ERR_INVAL);
    assert_int_equal(stream_write_str(cli.s, CLIENT_HDR), 0);
    run_exchange(&srv, &cli);
    struct stream *s;
    assert_int_equal(stream_adopt_fd(&loop, -1, 0, NULL, &gcbs, &cli, &s), ERR_IO);
    assert_null(s);
    peer_done(&srv);
    peer_done(&cli);
}

static int setup(void **state)
{
    log_init("test_stream", 0, LOG_LVL_WARN);
    if (uv_loop_init(&loop) != 0)
        return -1;
    tmp = tmpdir_new();
    a_cert = tmpdir_path(tmp, "a.crt");
    a_key = tmpdir_path(tmp, "a.key");
    b_cert = tmpdir_path(tmp, "b.crt");
    b_key = tmpdir_path(tmp, "b.key");
    if (tls_selfsigned_write("a.example", 2, a_cert, a_key) != 0 ||
        tls_selfsigned_write("b.example", 2, b_cert, b_key) != 0)
        return -1;
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
        cmocka_unit_test(test_plain_tcp),
        cmocka_unit_test(test_plain_unix),
        cmocka_unit_test(test_tls_direct),
        cmocka_unit_test(test_tls_verify_fail),
        cmocka_unit_test(test_tls_records),
        cmocka_unit_test(test_starttls),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_backpressure_relay),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_established),
        cmocka_unit_test(test_close_flushes),
        cmocka_unit_test(test_close_flushes_despite_bad_input),
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_parse_error),
        cmocka_unit_test(test_hibernate),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_adopt_small_reads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
