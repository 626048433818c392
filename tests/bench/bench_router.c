/*
 * bench_router.c - throughput of parley-router between two internal components.
 *
 * Connects two components to a running router (Unix socket or TCP), does
 * the XEP-0114 handshake for both, then pumps stanzas of a fixed size from
 * the first ("from") to the second ("to") for a fixed time, keeping at most
 * --window stanzas in flight (sent, not yet received). It reports stanzas
 * per second received, and the router's CPU time per stanza from
 * /proc/<router pid>/stat (utime + stime) read at the start and at the end
 * of the measured interval.
 *
 * Stanzas are plain <message/>s addressed to the receiving component's name
 * (routed by name), or with --route the same message inside an
 * <r:route to='B' from='A'> envelope: the two hot paths between our daemons.
 * Both components are internal, so the router forwards received bytes
 * without re-serialising them.
 *
 * The tool itself must cost less than the router: it never parses what it
 * receives; after the handshake it only counts "</message>" occurrences in
 * the byte stream (r:notify and other router elements never contain one).
 * Everything runs on one libuv loop in one thread; pin it to another core
 * than the router's (run-router-bench.sh uses taskset).
 *
 * Usage: see usage() below or tests/bench/README.md.
 */
#include "autoconfig.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

/* Received bytes kept while looking for the header and the handshake answer. */
#define PRE_MAX 8192
#define END_TAG "</message>"
#define END_LEN (sizeof(END_TAG) - 1)

enum conn_state { CONN_CONNECTING, CONN_HEADER, CONN_HANDSHAKE, CONN_READY };

struct bench;

struct conn {
    union {
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_connect_t connect_req;
    struct bench *b;
    const char *name;
    char secret[256];
    enum conn_state state;
    char pre[PRE_MAX + 1]; /* bytes before READY, NUL-terminated */
    size_t prelen;
    char carry[END_LEN]; /* tail of the last read: END_TAG may straddle reads */
    size_t carrylen;
    uint64_t messages; /* END_TAG occurrences after READY */
    char rbuf[64 * 1024];
};

struct bench {
    uv_loop_t *loop;
    struct conn from, to;
    int ready;

    /* options */
    const char *router;
    const char *secrets_dir;
    size_t size;
    double seconds, warmup;
    uint64_t window;
    unsigned batch;
    int route;
    long router_pid;

    /* the batch of stanzas written by one uv_write */
    char *payload;
    size_t payload_len;

    uint64_t sent;
    int writes_pending;
    int measuring, finished;
    uint64_t t0_ns, recv0, bounced0, cpu0_ticks;
    uv_timer_t timer;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_router --router unix:PATH|tcp:HOST:PORT --from NAME --to NAME\n"
               "                    --secrets DIR --pid PID [--size BYTES] [--seconds S]\n"
               "                    [--warmup S] [--window N] [--batch N] [--route]\n"
               "  Both NAMEs are internal components of the router; DIR/NAME.secret holds\n"
               "  each one's secret. PID is the router's (for its CPU time).\n"
               "  defaults: --size 200 --seconds 10 --warmup 1 --window 1000 --batch 50\n"
               "  Keep window * size below the router's queue-max, or stanzas bounce.\n");
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_router: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

/* utime + stime of a process in clock ticks, from /proc/PID/stat. */
static uint64_t proc_cpu_ticks(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot open", path);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm (field 2) may hold spaces and parentheses: fields restart after
     * the last ')'. utime and stime are fields 14 and 15. */
    char *p = strrchr(buf, ')');
    if (!p)
        die("cannot parse", path);
    unsigned long long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        die("cannot parse", path);
    return utime + stime;
}

static void read_secret(struct conn *c, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.secret", dir, c->name);
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot open secret file", path);
    if (!fgets(c->secret, sizeof(c->secret), f))
        die("empty secret file", path);
    fclose(f);
    c->secret[strcspn(c->secret, "\r\n")] = '\0';
}

static void on_write(uv_write_t *req, int status)
{
    struct bench *b = req->data;
    free(req);
    b->writes_pending--;
    if (status < 0 && !b->finished)
        die("write", uv_strerror(status));
}

static void write_bytes(struct conn *c, const char *data, size_t len)
{
    uv_write_t *req = malloc(sizeof(*req));
    if (!req)
        die("out of memory", NULL);
    req->data = c->b;
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    c->b->writes_pending++;
    int rc = uv_write(req, &c->h.stream, &buf, 1, on_write);
    if (rc < 0)
        die("uv_write", uv_strerror(rc));
}

/* Keep the window full: whole batches while there is room for one. */
static void pump(struct bench *b)
{
    if (!b->ready || b->finished)
        return;
    /* Few outstanding writes: the kernel's socket buffer is the queue. */
    /* bounces (messages coming back to the sender) leave the window too */
    while (b->sent - b->to.messages - b->from.messages + b->batch <= b->window &&
           b->writes_pending < 4) {
        write_bytes(&b->from, b->payload, b->payload_len);
        b->sent += b->batch;
    }
}

static void report(struct bench *b)
{
    uint64_t ns = uv_hrtime() - b->t0_ns;
    uint64_t got = b->to.messages - b->recv0;
    uint64_t bounced = b->from.messages - b->bounced0;
    uint64_t ticks = proc_cpu_ticks(b->router_pid) - b->cpu0_ticks;
    double secs = (double)ns / 1e9;
    double cpu = (double)ticks / (double)sysconf(_SC_CLK_TCK);
    printf("size=%zu mode=%s window=%" PRIu64 " seconds=%.2f stanzas=%" PRIu64 " bounced=%" PRIu64
           " rate=%.0f/s MB/s=%.1f router_cpu=%.2fs router_util=%.0f%% cpu_per_stanza=%.2fus\n",
           b->size, b->route ? "route" : "plain", b->window, secs, got, bounced, (double)got / secs,
           (double)got * (double)b->size / secs / 1e6, cpu, 100.0 * cpu / secs,
           got ? cpu * 1e6 / (double)got : 0.0);
    if (bounced)
        printf("warning: %" PRIu64 " stanzas bounced (window * size above queue-max?): "
               "the figures above are not a clean measurement\n",
               bounced);
    fflush(stdout);
}

static void on_timer(uv_timer_t *t)
{
    struct bench *b = t->data;
    if (!b->measuring) {
        /* warm-up over: start measuring */
        b->measuring = 1;
        b->t0_ns = uv_hrtime();
        b->recv0 = b->to.messages;
        b->bounced0 = b->from.messages;
        b->cpu0_ticks = proc_cpu_ticks(b->router_pid);
        uv_timer_start(&b->timer, on_timer, (uint64_t)(b->seconds * 1000), 0);
        return;
    }
    report(b);
    b->finished = 1;
    uv_stop(b->loop);
}

static void start_pumping(struct bench *b)
{
    b->ready = 1;
    uv_timer_init(b->loop, &b->timer);
    b->timer.data = b;
    uv_timer_start(&b->timer, on_timer, (uint64_t)(b->warmup * 1000), 0);
    pump(b);
}

static void count_messages(struct conn *c, const char *data, size_t len)
{
    /* matches that begin in the tail kept from earlier reads */
    char joint[2 * END_LEN];
    size_t take = len < END_LEN - 1 ? len : END_LEN - 1;
    memcpy(joint, c->carry, c->carrylen);
    memcpy(joint + c->carrylen, data, take);
    size_t jl = c->carrylen + take;
    for (size_t i = 0; i < c->carrylen && i + END_LEN <= jl; i++) {
        if (memcmp(joint + i, END_TAG, END_LEN) == 0)
            c->messages++;
    }
    const char *p = data, *end = data + len;
    while ((p = memmem(p, (size_t)(end - p), END_TAG, END_LEN)) != NULL) {
        c->messages++;
        p += END_LEN;
    }
    /* keep the stream's last END_LEN-1 bytes (no whole match fits in them) */
    if (len >= END_LEN - 1) {
        memcpy(c->carry, end - (END_LEN - 1), END_LEN - 1);
        c->carrylen = END_LEN - 1;
    } else {
        size_t keep = jl < END_LEN - 1 ? jl : END_LEN - 1;
        memmove(c->carry, joint + jl - keep, keep);
        c->carrylen = keep;
    }
}

static void send_handshake(struct conn *c, const char *id)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char input[512];
    int n = snprintf(input, sizeof(input), "%s%s", id, c->secret);
    if (n < 0 || (size_t)n >= sizeof(input))
        die("stream id + secret too long", NULL);
    if (!EVP_Digest(input, (size_t)n, md, &mdlen, EVP_sha1(), NULL))
        die("EVP_Digest failed", NULL);
    static char msg[2][128];
    char *out = msg[c == &c->b->to];
    int len = snprintf(out, 128, "<handshake>");
    for (unsigned int i = 0; i < mdlen; i++)
        len += snprintf(out + len, 128 - (size_t)len, "%02x", md[i]);
    len += snprintf(out + len, 128 - (size_t)len, "</handshake>");
    write_bytes(c, out, (size_t)len);
}

/* Before READY: find the header's id, then the handshake answer. Returns
 * the number of bytes of data consumed (the rest is stanza traffic). */
static size_t handshake_input(struct conn *c, const char *data, size_t len)
{
    size_t take = len;
    if (c->prelen + take > PRE_MAX)
        die("no handshake in the first bytes from the router", c->name);
    memcpy(c->pre + c->prelen, data, take);
    c->prelen += take;
    c->pre[c->prelen] = '\0';

    if (strstr(c->pre, "<stream:error") || strstr(c->pre, ":error>"))
        die("stream error from the router", c->pre);
    if (c->state == CONN_HEADER) {
        char *h = strstr(c->pre, "<stream:stream");
        char *gt = h ? strchr(h, '>') : NULL;
        if (!gt)
            return len;
        char *id = strstr(h, " id=");
        if (!id || id > gt)
            die("router header without id", c->pre);
        char q = id[4];
        char *idend = strchr(id + 5, q);
        if (!idend || idend > gt)
            die("bad id in router header", c->pre);
        char sid[256];
        size_t sl = (size_t)(idend - (id + 5));
        if (sl >= sizeof(sid))
            die("stream id too long", NULL);
        memcpy(sid, id + 5, sl);
        sid[sl] = '\0';
        send_handshake(c, sid);
        c->state = CONN_HANDSHAKE;
        /* drop the header from the buffer */
        size_t rest = c->prelen - (size_t)(gt + 1 - c->pre);
        memmove(c->pre, gt + 1, rest + 1);
        c->prelen = rest;
    }
    if (c->state == CONN_HANDSHAKE) {
        char *ok = strstr(c->pre, "<handshake/>");
        size_t oklen = 12;
        if (!ok) {
            ok = strstr(c->pre, "<handshake></handshake>");
            oklen = 23;
        }
        if (!ok)
            return len;
        c->state = CONN_READY;
        /* bytes after the answer that came in this read are traffic */
        size_t after = c->prelen - (size_t)(ok + oklen - c->pre);
        if (after > len)
            after = len;
        struct bench *b = c->b;
        if (b->from.state == CONN_READY && b->to.state == CONN_READY)
            start_pumping(b);
        return len - after;
    }
    return len;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    buf->base = c->rbuf;
    buf->len = sizeof(c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread < 0) {
        if (c->b->finished)
            return;
        fprintf(stderr, "bench_router: %s: connection lost: %s\n", c->name,
                uv_strerror((int)nread));
        if (c->prelen)
            fprintf(stderr, "bench_router: last bytes: %s\n", c->pre);
        exit(1);
    }
    size_t off = 0;
    if (c->state != CONN_READY)
        off = handshake_input(c, buf->base, (size_t)nread);
    if (c->state == CONN_READY && off < (size_t)nread) {
        count_messages(c, buf->base + off, (size_t)nread - off);
        pump(c->b);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (status < 0)
        die("connect", uv_strerror(status));
    char hdr[512];
    int n = snprintf(hdr, sizeof(hdr),
                     "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                     "xmlns:stream='http://etherx.jabber.org/streams' "
                     "xmlns:r='urn:parley:router' to='%s'>",
                     c->name);
    static char hdrs[2][512];
    char *out = hdrs[c == &c->b->to];
    memcpy(out, hdr, (size_t)n);
    c->state = CONN_HEADER;
    write_bytes(c, out, (size_t)n);
    int rc = uv_read_start(&c->h.stream, on_alloc, on_read);
    if (rc < 0)
        die("uv_read_start", uv_strerror(rc));
}

static void conn_open(struct bench *b, struct conn *c)
{
    c->b = b;
    c->state = CONN_CONNECTING;
    c->connect_req.data = c;
    read_secret(c, b->secrets_dir);
    if (strncmp(b->router, "unix:", 5) == 0) {
        uv_pipe_init(b->loop, &c->h.pipe, 0);
        c->h.pipe.data = c;
        uv_pipe_connect(&c->connect_req, &c->h.pipe, b->router + 5, on_connect);
        return;
    }
    if (strncmp(b->router, "tcp:", 4) != 0)
        die("--router must be unix:PATH or tcp:HOST:PORT", b->router);
    char host[256];
    const char *colon = strrchr(b->router + 4, ':');
    if (!colon || (size_t)(colon - (b->router + 4)) >= sizeof(host))
        die("bad --router", b->router);
    memcpy(host, b->router + 4, (size_t)(colon - (b->router + 4)));
    host[colon - (b->router + 4)] = '\0';
    struct sockaddr_storage ss;
    int port = atoi(colon + 1);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        die("bad address", host);
    uv_tcp_init(b->loop, &c->h.tcp);
    c->h.tcp.data = c;
    uv_tcp_nodelay(&c->h.tcp, 1);
    int rc = uv_tcp_connect(&c->connect_req, &c->h.tcp, (struct sockaddr *)&ss, on_connect);
    if (rc < 0)
        die("uv_tcp_connect", uv_strerror(rc));
}

/* batch copies of one stanza of exactly size bytes */
static void build_payload(struct bench *b)
{
    char head[512], tail[64];
    int hl;
    if (b->route)
        hl = snprintf(head, sizeof(head),
                      "<r:route to='%s' from='%s'><message to='user@%s' from='bench@%s' "
                      "id='b'><body>",
                      b->to.name, b->from.name, b->to.name, b->from.name);
    else
        hl = snprintf(head, sizeof(head), "<message to='user@%s' from='bench@%s' id='b'><body>",
                      b->to.name, b->from.name);
    int tl = snprintf(tail, sizeof(tail), "</body></message>%s", b->route ? "</r:route>" : "");
    if ((size_t)(hl + tl) > b->size)
        die("--size is smaller than the stanza's markup", NULL);
    b->payload_len = b->size * b->batch;
    b->payload = malloc(b->payload_len);
    if (!b->payload)
        die("out of memory", NULL);
    for (unsigned i = 0; i < b->batch; i++) {
        char *p = b->payload + i * b->size;
        memcpy(p, head, (size_t)hl);
        memset(p + hl, 'x', b->size - (size_t)hl - (size_t)tl);
        memcpy(p + b->size - tl, tail, (size_t)tl);
    }
}

int main(int argc, char **argv)
{
    static struct bench b;
    static const struct option opts[] = {
        {"router", required_argument, NULL, 'r'},
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},
        {"secrets", required_argument, NULL, 'S'},
        {"pid", required_argument, NULL, 'p'},
        {"size", required_argument, NULL, 's'},
        {"seconds", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"window", required_argument, NULL, 'W'},
        {"batch", required_argument, NULL, 'b'},
        {"route", no_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    b.size = 200;
    b.seconds = 10;
    b.warmup = 1;
    b.window = 1000;
    b.batch = 50;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'r':
            b.router = optarg;
            break;
        case 'f':
            b.from.name = optarg;
            break;
        case 't':
            b.to.name = optarg;
            break;
        case 'S':
            b.secrets_dir = optarg;
            break;
        case 'p':
            b.router_pid = strtol(optarg, NULL, 10);
            break;
        case 's':
            b.size = strtoul(optarg, NULL, 10);
            break;
        case 'd':
            b.seconds = strtod(optarg, NULL);
            break;
        case 'w':
            b.warmup = strtod(optarg, NULL);
            break;
        case 'W':
            b.window = strtoull(optarg, NULL, 10);
            break;
        case 'b':
            b.batch = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'R':
            b.route = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!b.router || !b.from.name || !b.to.name || !b.secrets_dir || b.router_pid <= 0 ||
        b.batch == 0 || b.window < b.batch || b.seconds <= 0) {
        usage(stderr);
        return 2;
    }
    build_payload(&b);
    b.loop = uv_default_loop();
    conn_open(&b, &b.from);
    conn_open(&b, &b.to);
    uv_run(b.loop, UV_RUN_DEFAULT);
    if (!b.finished)
        die("the loop ended before the run finished", NULL);
    return 0;
}
