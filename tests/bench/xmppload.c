/*
 * xmppload.c - XMPP client load driver: logins, idle sessions, messages.
 *
 * Logs in --count users (STARTTLS, SASL PLAIN or SCRAM-SHA-1, bind, roster
 * get, initial presence; see xmppload_session.c) with at most
 * --concurrency logins in flight, then optionally reads the RSS of the
 * server processes named with --pid, holds the sessions (--hold seconds,
 * or --pause until a line arrives on stdin), and exchanges messages for
 * --duration seconds: online user i sends to online user i+1 (a ring),
 * either as fast as the server takes them (--rate 0: --window messages in
 * flight per sender, the next one sent when one arrives) or at a fixed
 * total --rate (open loop; a sender whose connection is congested skips
 * its turn and the skip is counted). Each body carries the send time and
 * the sender, so the receiver measures end-to-end latency. With
 * --peer-domain the same users of a second domain log in to its server
 * (--peer-host, --peer-port) too, and user i of --domain sends to user i+1
 * of the peer domain instead: messages cross the two servers' s2s link, and
 * both ends are in this process, so latency and the closed loop work as
 * before.
 *
 * Output: one line per figure, "name key=value ...", for people and for
 * run-xmpp-bench.py alike (see tests/bench/README.md). Exit status: 0 if
 * every login succeeded and no message was lost, 1 otherwise, 2 for a
 * usage error.
 *
 * One libuv loop, one thread; the run state lives in struct xmppload.
 * Session-level work is in xmppload_session.c.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common/mem.h"
#include "tests/bench/xmppload.h"

#define MAX_PIDS 32

struct watched {
    char name[32];
    long pid;
    uint64_t ticks0, ticks1;
    long rss0_kib, rss_kib;
    int cpu_only; /* --cpu-pid: not part of the RSS sum */
};

static struct xmppload g;
static struct watched pids[MAX_PIDS];
static unsigned npids;
static uv_timer_t phase_timer, rate_timer;
static uv_pipe_t stdin_pipe;
static uv_tty_t stdin_tty;
static uv_stream_t *stdin_stream;
static int step;
static uint64_t drain_deadline;
static struct rusage ru0, ru1;
static uint64_t delivered_at_end;

static void next_step(void);

uint64_t xmppload_now_ns(void)
{
    return uv_hrtime();
}

static void u32vec_push(struct u32vec *v, uint32_t x)
{
    if (v->len == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 1024;
        v->v = xreallocarray(v->v, v->cap, sizeof(*v->v));
    }
    v->v[v->len++] = x;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The p-th percentile (0 < p <= 100) of a sorted vector, nearest rank. */
static double pct_ms(const struct u32vec *v, double p)
{
    if (v->len == 0)
        return 0;
    size_t rank = (size_t)((p / 100.0) * (double)v->len + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > v->len)
        rank = v->len;
    return v->v[rank - 1] / 1000.0;
}

static void print_pcts(const char *name, struct u32vec *v)
{
    if (v->len)
        qsort(v->v, v->len, sizeof(*v->v), cmp_u32);
    printf("%s n=%zu p50=%.2f p90=%.2f p99=%.2f max=%.2f\n", name, v->len, pct_ms(v, 50),
           pct_ms(v, 90), pct_ms(v, 99), pct_ms(v, 100));
}

/* ---- /proc ---- */

/* utime + stime of a process in clock ticks; 0 if it is gone. */
static uint64_t proc_cpu_ticks(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm may hold spaces and parentheses: fields restart after the last ')' */
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return ut + st;
}

static long proc_rss_kib(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void cpu_mark(int end)
{
    for (unsigned i = 0; i < npids; i++) {
        if (end)
            pids[i].ticks1 = proc_cpu_ticks(pids[i].pid);
        else
            pids[i].ticks0 = proc_cpu_ticks(pids[i].pid);
    }
    getrusage(RUSAGE_SELF, end ? &ru1 : &ru0);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* CPU time of every watched process and of the driver per unit of work. */
static void print_cpu(const char *what, uint64_t units, double wall_s)
{
    double tck = (double)sysconf(_SC_CLK_TCK), sum = 0;
    unsigned names = 0;
    for (unsigned i = 0; i < npids; i++) {
        /* processes given under one name (a database's backends) add up */
        int seen = 0;
        for (unsigned j = 0; j < i && !seen; j++)
            seen = strcmp(pids[j].name, pids[i].name) == 0;
        if (seen)
            continue;
        double s = 0;
        for (unsigned j = i; j < npids; j++)
            if (strcmp(pids[j].name, pids[i].name) == 0)
                s += (double)(pids[j].ticks1 - pids[j].ticks0) / tck;
        sum += s;
        names++;
        printf("cpu phase=%s proc=%s cpu_s=%.2f util=%.0f%% per_%s_us=%.1f\n", what, pids[i].name,
               s, 100.0 * s / wall_s, what, units ? s * 1e6 / (double)units : 0);
    }
    if (names > 1)
        printf("cpu phase=%s proc=server cpu_s=%.2f util=%.0f%% per_%s_us=%.1f\n", what, sum,
               100.0 * sum / wall_s, what, units ? sum * 1e6 / (double)units : 0);
    double d = tv_s(ru1.ru_utime) + tv_s(ru1.ru_stime) - tv_s(ru0.ru_utime) - tv_s(ru0.ru_stime);
    printf("cpu phase=%s proc=driver cpu_s=%.2f util=%.0f%% per_%s_us=%.1f\n", what, d,
           100.0 * d / wall_s, what, units ? d * 1e6 / (double)units : 0);
}

/* ---- login phase ---- */

static void start_more(void)
{
    while (g.started < g.total && g.in_flight < g.o.concurrency) {
        struct session *s = &g.sessions[g.started];
        s->idx = g.started++;
        g.in_flight++;
        xmppload_session_start(s);
    }
}

static void login_finished(void)
{
    g.in_flight--;
    g.done++;
    if (step == 0) {
        start_more();
        if (g.done == g.total)
            next_step();
    }
}

void xmppload_on_online(struct session *s)
{
    g.online++;
    u32vec_push(&g.login_us, (uint32_t)((xmppload_now_ns() - s->t_start) / 1000));
    login_finished();
}

static void record_failure(const char *reason, const char *detail)
{
    unsigned i;
    for (i = 0; i < g.nfailures; i++)
        if (strcmp(g.failures[i].reason, reason) == 0)
            break;
    if (i == g.nfailures) {
        if (g.nfailures == FAILURE_KINDS)
            i = FAILURE_KINDS - 1; /* lump the rare rest together */
        else
            g.nfailures++;
        if (!g.failures[i].count) {
            snprintf(g.failures[i].reason, sizeof(g.failures[i].reason), "%s", reason);
            snprintf(g.failures[i].example, sizeof(g.failures[i].example), "%s", detail);
        }
    }
    g.failures[i].count++;
    if (g.o.verbose)
        fprintf(stderr, "xmppload: %s: %s\n", reason, detail);
}

void xmppload_on_failed(struct session *s, const char *reason, const char *detail)
{
    char r[128];
    snprintf(r, sizeof(r), "login %s", reason);
    record_failure(r, detail);
    (void)s;
    g.failed++;
    login_finished();
}

void xmppload_on_dropped(struct session *s, const char *reason, const char *detail)
{
    char r[128];
    snprintf(r, sizeof(r), "dropped %s", reason);
    record_failure(r, detail);
    (void)s;
    g.online--;
    g.dropped++;
}

static void print_failures(void)
{
    for (unsigned i = 0; i < g.nfailures; i++)
        printf("failure count=%u reason=\"%s\" example=\"%s\"\n", g.failures[i].count,
               g.failures[i].reason, g.failures[i].example);
}

static void report_logins(void)
{
    double secs = (double)(g.t_login1 - g.t_login0) / 1e9;
    unsigned ok = (unsigned)g.login_us.len;
    printf("login mech=%s users=%u ok=%u failed=%u seconds=%.2f rate=%.1f\n",
           g.o.mech == MECH_PLAIN ? "PLAIN" : "SCRAM-SHA-1", g.total, ok, g.failed, secs,
           secs > 0 ? ok / secs : 0);
    print_pcts("login_ms", &g.login_us);
    print_cpu("login", ok, secs);
    print_failures();
    fflush(stdout);
}

static void report_rss(void)
{
    long total = 0, total0 = 0;
    for (unsigned i = 0; i < npids; i++) {
        if (pids[i].cpu_only)
            continue;
        pids[i].rss_kib = proc_rss_kib(pids[i].pid);
        printf("rss proc=%s before_kib=%ld kib=%ld\n", pids[i].name, pids[i].rss0_kib,
               pids[i].rss_kib);
        total += pids[i].rss_kib;
        total0 += pids[i].rss0_kib;
    }
    if (npids && g.online)
        printf("rss total_kib=%ld before_kib=%ld sessions=%u per_session_kib=%.1f "
               "total_per_session_kib=%.1f\n",
               total, total0, g.online, (double)(total - total0) / g.online,
               (double)total / g.online);
    printf("rss proc=driver kib=%ld\n", proc_rss_kib((long)getpid()));
    fflush(stdout);
}

/* ---- message phase ---- */

/* Message number g.sent from ring[k] to its successor; the body carries
 * the send time. now: encrypt and write it at once (rate mode: the send
 * time is then when it leaves), else at the end of the loop iteration
 * (closed loop: the stanzas of one iteration share a record and a write). */
static void send_msg(unsigned k, int now)
{
    struct session *s = g.ring[k];
    struct session *dst = g.npring ? g.pring[(k + 1) % g.npring] : g.ring[(k + 1) % g.nring];
    struct buf *b = &g.scratch;
    buf_reset(b);
    buf_printf(b, "<message to='%s@%s' type='chat' id='m%" PRIu64 "'><body>%" PRIu64 " %u",
               dst->user, dst->domain, g.sent, xmppload_now_ns(), k);
    if (g.o.body_size) {
        buf_append_byte(b, ' ');
        for (unsigned i = 0; i < g.o.body_size; i++)
            buf_append_byte(b, 'x');
    }
    buf_append_str(b, "</body></message>");
    if (now)
        xmppload_session_send_now(s, b->data, b->len);
    else
        xmppload_session_send(s, b->data, b->len);
    s->outstanding++;
    g.sent++;
}

void xmppload_on_message(struct session *s, struct xml_node *msg)
{
    if (!g.ring)
        return; /* not exchanging messages yet (offline messages from a past run) */
    const char *type = xml_get_attr(msg, "type");
    struct xml_node *body = xml_child(msg, XML_NS_CLIENT, "body");
    const char *text = body ? xml_text(body, NULL) : NULL;
    uint64_t ts = 0;
    unsigned k = 0;
    if (!text || sscanf(text, "%" SCNu64 " %u", &ts, &k) != 2 || k >= g.nring || ts < g.t_msg0)
        return; /* not one of this run's */
    if (type && strcmp(type, "error") == 0) {
        g.msg_errors++;
        if (g.ring[k]->outstanding)
            g.ring[k]->outstanding--;
        if (g.sending && g.o.rate == 0)
            send_msg(k, 0);
        return;
    }
    (void)s;
    /* received when its bytes were read, not when the driver got round to
     * parsing them */
    uint64_t now = g.rx_ns > ts ? g.rx_ns : ts;
    g.delivered++;
    if (g.measuring)
        u32vec_push(&g.lat_us, (uint32_t)((now - ts) / 1000));
    if (g.ring[k]->outstanding)
        g.ring[k]->outstanding--;
    if (g.sending && g.o.rate == 0 && g.ring[k]->state == SS_ONLINE)
        send_msg(k, 0);
}

/*
 * Open loop: message n is due at t_msg0 + n / rate. Whatever is due goes
 * out at once, each message encrypted and written by itself right after
 * its send time is taken (not at the end of the loop iteration, after the
 * reads of this iteration: that wait would be the driver's, not the
 * server's). This runs from a 1 ms timer: every millisecond, rate / 1000
 * clients send one message each at once. With --spread it also runs
 * before every poll, so that when the loop is busy the sends are spread
 * finer than the timer's millisecond (closer to evenly spaced; each
 * message then reaches the server alone, which costs it more per message:
 * see tests/bench/README.md).
 */
static void pace(void)
{
    if (!g.sending || g.o.rate <= 0)
        return;
    uint64_t now = xmppload_now_ns();
    uint64_t target = (uint64_t)(g.o.rate * (double)(now - g.t_msg0) / 1e9);
    /* more than 100 ms behind: the driver or the server cannot keep up;
     * count the gap as skipped rather than sending a burst */
    uint64_t burst_max = (uint64_t)(g.o.rate / 10) + 1;
    if (target > g.scheduled + burst_max) {
        g.skipped += target - g.scheduled - burst_max;
        g.scheduled = target - burst_max;
    }
    while (g.scheduled < target) {
        uint64_t due = g.t_msg0 + (uint64_t)((double)g.scheduled * 1e9 / g.o.rate);
        g.scheduled++;
        unsigned k = g.cursor++ % g.nring;
        struct session *s = g.ring[k];
        if (s->state != SS_ONLINE || xmppload_session_queued(s) > g.o.out_cap) {
            g.skipped++;
            continue;
        }
        send_msg(k, 1);
        if (g.measuring) {
            uint64_t t = xmppload_now_ns();
            u32vec_push(&g.lag_us, (uint32_t)(t > due ? (t - due) / 1000 : 0));
        }
    }
}

static void on_rate_tick(uv_timer_t *t)
{
    (void)t;
    pace();
}

static void on_pace_prepare(uv_prepare_t *p)
{
    (void)p;
    pace();
}

static void start_messages(void)
{
    g.ring = xcalloc(g.o.count, sizeof(*g.ring));
    g.pring = xcalloc(g.o.count, sizeof(*g.pring));
    for (unsigned i = 0; i < g.total; i++) {
        struct session *s = &g.sessions[i];
        if (s->state != SS_ONLINE)
            continue;
        if (s->peer)
            g.pring[g.npring++] = s;
        else
            g.ring[g.nring++] = s;
    }
    if (g.o.peer_domain ? (g.nring < 1 || g.npring < 1) : g.nring < 2) {
        printf("messages skipped=\"too few sessions online\"\n");
        g.nring = 0;
        g.npring = 0;
        next_step();
        return;
    }
    g.t_msg0 = xmppload_now_ns();
    g.sending = 1;
    if (g.o.rate > 0) {
        uv_timer_start(&rate_timer, on_rate_tick, 1, 1);
        if (g.o.spread)
            uv_prepare_start(&g.pace_prepare, on_pace_prepare);
    } else {
        for (unsigned w = 0; w < g.o.window; w++)
            for (unsigned k = 0; k < g.nring; k++)
                send_msg(k, 0);
    }
}

static uint64_t in_flight_msgs(void)
{
    return g.sent - g.delivered - g.msg_errors;
}

static void report_messages(void)
{
    double secs = (double)(g.t_meas1 - g.t_meas0) / 1e9;
    uint64_t n = g.delivered_meas1 - g.delivered_meas0;
    printf("messages mode=%s target_rate=%.0f senders=%u window=%u sent=%" PRIu64
           " delivered=%" PRIu64 " errors=%" PRIu64 " lost=%" PRIu64 " skipped=%" PRIu64
           " receivers=%u measured_s=%.2f rate=%.1f\n",
           g.o.rate > 0 ? "rate" : "max", g.o.rate, g.nring, g.o.rate > 0 ? 0 : g.o.window, g.sent,
           g.delivered, g.msg_errors, in_flight_msgs(), g.skipped, g.npring, secs,
           secs > 0 ? (double)n / secs : 0);
    print_pcts("latency_ms", &g.lat_us);
    if (g.o.rate > 0)
        print_pcts("send_lag_ms", &g.lag_us);
    print_cpu("msg", n, secs);
    fflush(stdout);
}

/* ---- phases ---- */

static void on_stdin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char buf[256];
    (void)h;
    (void)suggested;
    *b = uv_buf_init(buf, sizeof(buf));
}

static void stdin_done(void)
{
    uv_read_stop(stdin_stream);
    uv_close((uv_handle_t *)stdin_stream, NULL);
    stdin_stream = NULL;
    next_step();
}

static void on_stdin(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    (void)st;
    if (nread < 0 || (nread > 0 && memchr(b->base, '\n', (size_t)nread)))
        stdin_done();
}

static void wait_stdin(void)
{
    printf("paused sessions=%u\n", g.online);
    fflush(stdout);
    fprintf(stderr, "xmppload: %u sessions open; press Enter (or close stdin) to go on\n",
            g.online);
    uv_handle_type t = uv_guess_handle(0);
    int rc = -1, inited = 0;
    if (t == UV_TTY) {
        stdin_stream = (uv_stream_t *)&stdin_tty;
        inited = (rc = uv_tty_init(g.loop, &stdin_tty, 0, 1)) == 0;
    } else if (t == UV_NAMED_PIPE || t == UV_TCP) {
        stdin_stream = (uv_stream_t *)&stdin_pipe;
        inited = (rc = uv_pipe_init(g.loop, &stdin_pipe, 0)) == 0;
        if (rc == 0)
            rc = uv_pipe_open(&stdin_pipe, 0);
    }
    if (rc == 0)
        rc = uv_read_start(stdin_stream, on_stdin_alloc, on_stdin);
    if (rc != 0) {
        /* e.g. stdin is a regular file or /dev/null */
        fprintf(stderr, "xmppload: cannot wait on stdin; not pausing\n");
        if (inited)
            uv_close((uv_handle_t *)stdin_stream, NULL);
        stdin_stream = NULL;
        next_step();
    }
}

static void on_phase_timer(uv_timer_t *t)
{
    (void)t;
    next_step();
}

static void after(double secs)
{
    uv_timer_start(&phase_timer, on_phase_timer, (uint64_t)(secs * 1000), 0);
}

static void on_drain_tick(uv_timer_t *t)
{
    if (in_flight_msgs() == 0 || xmppload_now_ns() > drain_deadline) {
        uv_timer_stop(t);
        next_step();
    }
}

static void close_all(void)
{
    for (unsigned i = 0; i < g.started; i++)
        xmppload_session_close(&g.sessions[i]);
    uv_close((uv_handle_t *)&phase_timer, NULL);
    uv_close((uv_handle_t *)&rate_timer, NULL);
    uv_close((uv_handle_t *)&g.pace_prepare, NULL);
    uv_close((uv_handle_t *)&g.flush_check, NULL);
    uv_close((uv_handle_t *)&g.flush_idle, NULL);
}

/*
 * The run as a sequence of steps: 0 logins, 1 settle, 2 RSS, 3 hold or
 * pause, 4 message warm-up, 5 measured messages, 6 drain, 7 report and
 * close. Each step ends by arranging for next_step to be called.
 */
static void next_step(void)
{
    step++;
    switch (step) {
    case 1:
        g.t_login1 = xmppload_now_ns();
        cpu_mark(1);
        report_logins();
        after(g.o.settle);
        return;
    case 2:
        report_rss();
        next_step();
        return;
    case 3:
        if (g.o.pause)
            wait_stdin();
        else
            after(g.o.hold);
        return;
    case 4:
        if (g.o.duration <= 0) {
            step = 6;
            next_step();
            return;
        }
        start_messages();
        if (g.nring)
            after(g.o.warmup);
        return;
    case 5:
        g.measuring = 1;
        g.t_meas0 = xmppload_now_ns();
        g.delivered_meas0 = g.delivered;
        cpu_mark(0);
        after(g.o.duration);
        return;
    case 6:
        g.measuring = 0;
        g.t_meas1 = xmppload_now_ns();
        g.delivered_meas1 = g.delivered;
        cpu_mark(1);
        g.sending = 0;
        uv_timer_stop(&rate_timer);
        uv_prepare_stop(&g.pace_prepare);
        drain_deadline = xmppload_now_ns() + 5000000000ull;
        uv_timer_start(&phase_timer, on_drain_tick, 10, 10);
        return;
    case 7:
        if (g.nring) {
            delivered_at_end = g.delivered;
            report_messages();
        }
        if (g.dropped)
            printf("dropped sessions=%u\n", g.dropped);
        if (g.dropped)
            print_failures();
        close_all();
        return;
    default:
        return;
    }
}

/* ---- set-up ---- */

static void on_flush_check(uv_check_t *c)
{
    xmppload_session_flush_all(c->data);
}

static int on_cert_verify(X509_STORE_CTX *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: xmppload --domain D [options]\n"
               "  --host H            server address (default 127.0.0.1)\n"
               "  --port P            c2s port, STARTTLS (default 5222)\n"
               "  --peer-domain D     also log in as many users of D, and send messages\n"
               "                      from the users of --domain to them (user i -> i+1)\n"
               "  --peer-host H       D's server address (default: --host)\n"
               "  --peer-port P       D's c2s port (required with --peer-domain)\n"
               "  --user FMT          user name pattern with one %%u (default user%%u)\n"
               "  --password PW       every user's password (default secret)\n"
               "  --first I           first user number (default 1)\n"
               "  --count N           users to log in (default 100)\n"
               "  --concurrency C     logins in flight (default 100)\n"
               "  --mech M            PLAIN or SCRAM-SHA-1 (default SCRAM-SHA-1)\n"
               "  --timeout S         seconds allowed per login (default 30)\n"
               "  --sources K         connect from 127.0.0.1 .. 127.0.0.K (per-IP limits)\n"
               "  --pid NAME=PID      a server process to measure (RSS, CPU); repeatable\n"
               "  --cpu-pid NAME=PID  a process whose CPU time counts, not its RSS (database);\n"
               "                      processes given under one NAME add up\n"
               "  --settle S          seconds after the logins before reading RSS (default 2)\n"
               "  --hold S            seconds to hold the sessions idle (default 0)\n"
               "  --pause             wait for a line on stdin with all sessions open\n"
               "  --duration S        measured seconds of messages; 0: no messages (default 0)\n"
               "  --warmup S          seconds of messages before measuring (default 2)\n"
               "  --rate R            messages/s in total; 0: as fast as possible (default 0)\n"
               "  --window W          messages in flight per sender at --rate 0 (default 2)\n"
               "  --body-size B       pad each body with B bytes (default 0)\n"
               "  --spread            with --rate: send what is due before every poll too,\n"
               "                      not only on the 1 ms timer (finer spacing)\n"
               "  --nofile N          RLIMIT_NOFILE to set (default: count + 256)\n"
               "  --resource R        resource to bind (default load)\n"
               "  -v                  log every failure to stderr\n");
}

static void raise_nofile(long want)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur >= want)
        return;
    if ((long)rl.rlim_max < want) {
        rl.rlim_max = (rlim_t)want; /* works as root */
        rl.rlim_cur = (rlim_t)want;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            return;
        getrlimit(RLIMIT_NOFILE, &rl);
        fprintf(stderr, "xmppload: RLIMIT_NOFILE hard limit %ld < %ld: raise it (ulimit -Hn)\n",
                (long)rl.rlim_max, want);
        exit(2);
    }
    rl.rlim_cur = (rlim_t)want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("xmppload: setrlimit");
        exit(2);
    }
}

static void parse_pid(const char *arg, int cpu_only)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || npids == MAX_PIDS) {
        fprintf(stderr, "xmppload: --pid wants NAME=PID (at most %d)\n", MAX_PIDS);
        exit(2);
    }
    struct watched *w = &pids[npids++];
    snprintf(w->name, sizeof(w->name), "%.*s", (int)(eq - arg), arg);
    w->pid = strtol(eq + 1, NULL, 10);
    w->cpu_only = cpu_only;
    w->rss0_kib = proc_rss_kib(w->pid);
    if (w->pid <= 0 || w->rss0_kib < 0) {
        fprintf(stderr, "xmppload: no process %s\n", eq + 1);
        exit(2);
    }
}

static void parse_args(int argc, char **argv)
{
    struct xmppload_opts *o = &g.o;
    o->host = "127.0.0.1";
    o->port = 5222;
    o->user_fmt = "user%u";
    o->password = "secret";
    o->resource = "load";
    o->first = 1;
    o->count = 100;
    o->concurrency = 100;
    o->mech = MECH_SCRAM_SHA1;
    o->timeout = 30;
    o->source_base = 0x7f000001;
    o->settle = 2;
    o->warmup = 2;
    o->window = 2;
    o->out_cap = 256 * 1024;
    enum {
        O_HOST = 256,
        O_PORT,
        O_DOMAIN,
        O_PEER_DOMAIN,
        O_PEER_HOST,
        O_PEER_PORT,
        O_USER,
        O_PASSWORD,
        O_FIRST,
        O_COUNT,
        O_CONC,
        O_MECH,
        O_TIMEOUT,
        O_SOURCES,
        O_PID,
        O_CPU_PID,
        O_SETTLE,
        O_HOLD,
        O_PAUSE,
        O_DURATION,
        O_WARMUP,
        O_RATE,
        O_WINDOW,
        O_BODY,
        O_SPREAD,
        O_NOFILE,
        O_RESOURCE,
        O_HELP
    };
    static const struct option opts[] = {
        {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT},
        {"domain", required_argument, NULL, O_DOMAIN},
        {"peer-domain", required_argument, NULL, O_PEER_DOMAIN},
        {"peer-host", required_argument, NULL, O_PEER_HOST},
        {"peer-port", required_argument, NULL, O_PEER_PORT},
        {"user", required_argument, NULL, O_USER},
        {"password", required_argument, NULL, O_PASSWORD},
        {"first", required_argument, NULL, O_FIRST},
        {"count", required_argument, NULL, O_COUNT},
        {"concurrency", required_argument, NULL, O_CONC},
        {"mech", required_argument, NULL, O_MECH},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"sources", required_argument, NULL, O_SOURCES},
        {"pid", required_argument, NULL, O_PID},
        {"cpu-pid", required_argument, NULL, O_CPU_PID},
        {"settle", required_argument, NULL, O_SETTLE},
        {"hold", required_argument, NULL, O_HOLD},
        {"pause", no_argument, NULL, O_PAUSE},
        {"duration", required_argument, NULL, O_DURATION},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"rate", required_argument, NULL, O_RATE},
        {"window", required_argument, NULL, O_WINDOW},
        {"body-size", required_argument, NULL, O_BODY},
        {"spread", no_argument, NULL, O_SPREAD},
        {"nofile", required_argument, NULL, O_NOFILE},
        {"resource", required_argument, NULL, O_RESOURCE},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "v", opts, NULL)) != -1) {
        switch (c) {
        case O_HOST:
            o->host = optarg;
            break;
        case O_PORT:
            o->port = atoi(optarg);
            break;
        case O_DOMAIN:
            o->domain = optarg;
            break;
        case O_PEER_DOMAIN:
            o->peer_domain = optarg;
            break;
        case O_PEER_HOST:
            o->peer_host = optarg;
            break;
        case O_PEER_PORT:
            o->peer_port = atoi(optarg);
            break;
        case O_USER:
            o->user_fmt = optarg;
            break;
        case O_PASSWORD:
            o->password = optarg;
            break;
        case O_FIRST:
            o->first = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_COUNT:
            o->count = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_CONC:
            o->concurrency = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_MECH:
            if (strcmp(optarg, "PLAIN") == 0)
                o->mech = MECH_PLAIN;
            else if (strcmp(optarg, "SCRAM-SHA-1") == 0)
                o->mech = MECH_SCRAM_SHA1;
            else {
                fprintf(stderr, "xmppload: --mech PLAIN or SCRAM-SHA-1\n");
                exit(2);
            }
            break;
        case O_TIMEOUT:
            o->timeout = atof(optarg);
            break;
        case O_SOURCES:
            o->sources = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_PID:
            parse_pid(optarg, 0);
            break;
        case O_CPU_PID:
            parse_pid(optarg, 1);
            break;
        case O_SETTLE:
            o->settle = atof(optarg);
            break;
        case O_HOLD:
            o->hold = atof(optarg);
            break;
        case O_PAUSE:
            o->pause = 1;
            break;
        case O_DURATION:
            o->duration = atof(optarg);
            break;
        case O_WARMUP:
            o->warmup = atof(optarg);
            break;
        case O_RATE:
            o->rate = atof(optarg);
            break;
        case O_WINDOW:
            o->window = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_BODY:
            o->body_size = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_SPREAD:
            o->spread = 1;
            break;
        case O_NOFILE:
            o->nofile = atol(optarg);
            break;
        case O_RESOURCE:
            o->resource = optarg;
            break;
        case 'v':
            o->verbose = 1;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc || !o->domain || o->count == 0 || o->concurrency == 0 || o->port <= 0 ||
        o->port > 65535 || o->timeout <= 0 ||
        (o->peer_domain && (o->peer_port <= 0 || o->peer_port > 65535)) || o->window == 0 ||
        o->sources > 65535 || o->rate < 0) {
        usage(stderr);
        exit(2);
    }
    const char *pct = strchr(o->user_fmt, '%');
    if (!pct || pct[1] != 'u' || strchr(pct + 1, '%')) {
        fprintf(stderr, "xmppload: --user needs exactly one %%u\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    struct xmppload_opts *o = &g.o;
    g.total = o->peer_domain ? 2 * o->count : o->count;
    if (!o->peer_host)
        o->peer_host = o->host;
    raise_nofile(o->nofile ? o->nofile : (long)g.total + 256);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&g.server) != 0 &&
        uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&g.server) != 0) {
        fprintf(stderr, "xmppload: --host wants a numeric address: %s\n", o->host);
        return 2;
    }
    if (o->peer_domain &&
        uv_ip4_addr(o->peer_host, o->peer_port, (struct sockaddr_in *)&g.peer_server) != 0 &&
        uv_ip6_addr(o->peer_host, o->peer_port, (struct sockaddr_in6 *)&g.peer_server) != 0) {
        fprintf(stderr, "xmppload: --peer-host wants a numeric address: %s\n", o->peer_host);
        return 2;
    }
    g.ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!g.ssl_ctx) {
        fprintf(stderr, "xmppload: SSL_CTX_new failed\n");
        return 2;
    }
    /* a benchmark against test servers with self-signed certificates: no
     * verification, not even the chain building OpenSSL does regardless */
    SSL_CTX_set_verify(g.ssl_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_cert_verify_callback(g.ssl_ctx, on_cert_verify, NULL);
    SSL_CTX_set_mode(g.ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    g.scram_cache = htab_new(free);
    buf_init(&g.scratch);

    g.loop = uv_default_loop();
    uv_check_init(g.loop, &g.flush_check);
    g.flush_check.data = &g;
    uv_check_start(&g.flush_check, on_flush_check);
    uv_idle_init(g.loop, &g.flush_idle);
    uv_timer_init(g.loop, &phase_timer);
    uv_timer_init(g.loop, &rate_timer);
    uv_prepare_init(g.loop, &g.pace_prepare);

    g.sessions = xcalloc(g.total, sizeof(*g.sessions));
    for (unsigned i = 0; i < g.total; i++) {
        struct session *s = &g.sessions[i];
        s->ld = &g;
        /* with a peer, sessions count .. total-1 are the same users of the peer domain */
        s->peer = i >= o->count;
        s->domain = s->peer ? o->peer_domain : o->domain;
        s->server = (const struct sockaddr *)(s->peer ? &g.peer_server : &g.server);
        /* the pattern was checked to hold exactly one %u */
        const char *pct = strstr(o->user_fmt, "%u");
        int n = snprintf(s->user, sizeof(s->user), "%.*s%u%s", (int)(pct - o->user_fmt),
                         o->user_fmt, o->first + i % o->count, pct + 2);
        if (n < 0 || (size_t)n >= sizeof(s->user)) {
            fprintf(stderr, "xmppload: user name too long\n");
            return 2;
        }
    }

    g.t_login0 = xmppload_now_ns();
    cpu_mark(0);
    start_more();
    uv_run(g.loop, UV_RUN_DEFAULT);

    int status =
        (g.failed || g.dropped || (g.nring && delivered_at_end + g.msg_errors < g.sent)) ? 1 : 0;
    uv_loop_close(g.loop);
    free(g.sessions);
    free(g.ring);
    free(g.pring);
    free(g.login_us.v);
    free(g.lat_us.v);
    free(g.lag_us.v);
    buf_free(&g.scratch);
    htab_free(g.scram_cache);
    SSL_CTX_free(g.ssl_ctx);
    return status;
}
