/*
 * bench_stream.c - CPU per stanza through common/stream.c when stanzas
 * travel one at a time (the paced case of issue #6).
 *
 * Two streams on one loop, connected over TCP loopback, play ping-pong
 * with a 200-byte <message/>: each side answers the stanza it parsed with
 * the next one, so every stanza is its own write, read, TLS record and
 * parse, as a lone message is in c2s at a paced rate. Prints the process
 * CPU time (user + system, getrusage) per stanza hop, once over TLS 1.3
 * (OpenSSL through the stream's BIO) and once in plaintext:
 *
 *   stream mode=tls hops=100000 cpu_us_per_hop=7.15 wall_s=0.91
 *
 * Both ends are in this process, so a hop's figure holds one side's write
 * path and the other's read path. Usage: bench_stream [hops] (100,000).
 * Single-threaded; certificates go to a temporary directory, removed at
 * exit.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "common/log.h"
#include "common/stream.h"
#include "common/tls.h"

#define STANZA                                                                                     \
    "<message from='user17@bench.test/r' to='user18@bench.test' type='chat' id='m1234567'>"        \
    "<body>0123456789012345678901234567890123456789 t=1234567890123 from=user17</body></message>"
#define HEADER                                                                                     \
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "                                   \
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"

struct bench {
    uv_loop_t loop;
    uv_tcp_t listener;
    struct stream *server, *client;
    SSL_CTX *server_ctx, *client_ctx; /* NULL: plaintext */
    long hops, left;
    double cpu0, wall0;
    int failed;
};

static double cpu_now(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_utime.tv_sec + (double)r.ru_utime.tv_usec / 1e6 +
           (double)r.ru_stime.tv_sec + (double)r.ru_stime.tv_usec / 1e6;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void finish(struct bench *b)
{
    stream_abort(b->server);
    stream_abort(b->client);
    uv_close((uv_handle_t *)&b->listener, NULL);
}

static void on_stream_open(struct stream *s, void *arg, struct xml_node *hdr)
{
    struct bench *b = arg;
    xml_free(hdr);
    if (s == b->server) {
        stream_write_str(s, HEADER);
        return;
    }
    /* The client has the server's header: the measured part starts. */
    b->cpu0 = cpu_now();
    b->wall0 = wall_now();
    stream_write_str(s, STANZA);
}

static void on_element(struct stream *s, void *arg, struct xml_node *el, const char *raw,
                       size_t rawlen)
{
    struct bench *b = arg;
    (void)raw;
    (void)rawlen;
    xml_free(el);
    if (--b->left > 0) {
        stream_write_str(s, STANZA);
        return;
    }
    printf("stream mode=%s hops=%ld cpu_us_per_hop=%.2f wall_s=%.2f\n",
           b->server_ctx != NULL ? "tls" : "plain", b->hops,
           (cpu_now() - b->cpu0) * 1e6 / (double)b->hops, wall_now() - b->wall0);
    finish(b);
}

static void on_secure(struct stream *s, void *arg)
{
    struct bench *b = arg;
    if (s == b->client)
        stream_write_str(s, HEADER);
}

static void on_error(struct stream *s, void *arg, int err, enum xml_stream_err cond,
                     const char *text)
{
    struct bench *b = arg;
    (void)s;
    (void)err;
    (void)cond;
    fprintf(stderr, "bench_stream: %s\n", text != NULL ? text : "stream error");
    b->failed = 1;
    finish(b);
}

static void on_connect(struct stream *s, void *arg)
{
    struct bench *b = arg;
    if (b->client_ctx != NULL)
        stream_starttls(s, b->client_ctx, STREAM_TLS_CLIENT, "bench.test");
    else
        stream_write_str(s, HEADER);
}

static const struct stream_cbs cbs = {
    .on_connect = on_connect,
    .on_secure = on_secure,
    .on_stream_open = on_stream_open,
    .on_element = on_element,
    .on_error = on_error,
};

static void on_connection(uv_stream_t *l, int status)
{
    struct bench *b = l->data;
    if (status < 0 || b->server != NULL || stream_accept(l, NULL, &cbs, b, &b->server) != 0) {
        b->failed = 1;
        return;
    }
    if (b->server_ctx != NULL)
        stream_starttls(b->server, b->server_ctx, STREAM_TLS_SERVER, NULL);
}

static int run(long hops, SSL_CTX *server_ctx, SSL_CTX *client_ctx)
{
    struct bench b = {.hops = hops, .left = hops};
    b.server_ctx = server_ctx;
    b.client_ctx = client_ctx;
    struct sockaddr_in addr;
    int len = sizeof(addr);
    uv_loop_init(&b.loop);
    uv_tcp_init(&b.loop, &b.listener);
    b.listener.data = &b;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    if (uv_tcp_bind(&b.listener, (struct sockaddr *)&addr, 0) != 0 ||
        uv_tcp_getsockname(&b.listener, (struct sockaddr *)&addr, &len) != 0 ||
        uv_listen((uv_stream_t *)&b.listener, 8, on_connection) != 0 ||
        stream_connect_tcp(&b.loop, (struct sockaddr *)&addr, NULL, &cbs, &b, &b.client) != 0) {
        fprintf(stderr, "bench_stream: cannot set up the connection\n");
        b.failed = 1;
        uv_close((uv_handle_t *)&b.listener, NULL);
    }
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uv_loop_close(&b.loop);
    return b.failed ? -1 : 0;
}

int main(int argc, char **argv)
{
    long hops = argc > 1 ? strtol(argv[1], NULL, 10) : 100000;
    if (hops <= 0) {
        fprintf(stderr, "usage: bench_stream [hops]\n");
        return 2;
    }
    log_init("bench_stream", 0, LOG_LVL_WARN);
    char dir[] = "/tmp/bench_stream.XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char crt[64], key[64];
    snprintf(crt, sizeof(crt), "%s/c.crt", dir);
    snprintf(key, sizeof(key), "%s/c.key", dir);
    SSL_CTX *sctx = NULL, *cctx = NULL;
    int rc = 1;
    if (tls_selfsigned_write("bench.test", 1, crt, key) != 0 ||
        tls_server_ctx_new(crt, key, NULL, &sctx) != 0 ||
        tls_client_ctx_new(crt, 1, NULL, NULL, &cctx) != 0)
        fprintf(stderr, "bench_stream: TLS set-up failed\n");
    else if (run(hops, sctx, cctx) == 0 && run(hops, NULL, NULL) == 0)
        rc = 0;
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
    unlink(crt);
    unlink(key);
    rmdir(dir);
    return rc;
}
