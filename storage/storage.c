/*
 * storage.c - the connection pool and query engine behind storage.h.
 *
 * Ownership: a struct storage owns its connections (struct conn, one libpq
 * PGconn each, with a uv_poll on its socket and a reconnect timer), the
 * wait queue and every query (struct query) from the moment a storage_*
 * call takes it until its callback has returned. A query holds a copy of
 * its parameters, so callers' buffers need not outlive the call.
 *
 * Life of a connection: DOWN -> CONNECTING (PQconnectStart/PQconnectPoll
 * driven by uv_poll) -> SETUP (statement_timeout, then every statement is
 * prepared once, one round trip each, in plain mode) -> READY (pipeline
 * mode unless disabled). Any failure -> DOWN: in-flight queries fail, the
 * socket's poll handle is closed before PQfinish closes the socket, and a
 * timer reconnects with jittered exponential back-off.
 *
 * Acknowledgement: each query is its own implicit transaction, ended by a
 * Sync (PQpipelineSync per query in pipeline mode; PQsendQueryPrepared
 * sends one itself in plain mode). A query completes only once the end of
 * that transaction has been seen (PGRES_PIPELINE_SYNC, or the NULL after
 * its result in plain mode), so "acknowledged" means "committed".
 *
 * Reentrancy: storage_* calls only queue (and arm a zero timer, the kick,
 * that sends from the loop), so no callback ever runs inside them. Entry
 * points from libuv count their depth; storage_free from inside a callback
 * is finished when the outermost entry point returns.
 *
 * The typed statements are in storage_sql.c.
 */
#include "autoconfig.h"

#include "storage/storage.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rand.h"
#include "storage/storage_int.h"

#define POOL_MAX 64

enum conn_state { C_DOWN, C_CONNECTING, C_SETUP, C_READY };

/* Where the oldest in-flight query is in its answer. */
enum phase { PH_RESULT, PH_END, PH_SYNC };

/* A FIFO of queries linked through query->next: the waiting queue, and
 * each connection's in-flight list. */
struct qfifo {
    struct query *head, *tail;
    unsigned n;
};

static void qfifo_push(struct qfifo *f, struct query *q)
{
    q->next = NULL;
    if (f->tail)
        f->tail->next = q;
    else
        f->head = q;
    f->tail = q;
    f->n++;
}

static void qfifo_push_front(struct qfifo *f, struct query *q)
{
    q->next = f->head;
    f->head = q;
    if (f->tail == NULL)
        f->tail = q;
    f->n++;
}

/* The oldest query, unlinked; NULL when empty. */
static struct query *qfifo_pop(struct qfifo *f)
{
    struct query *q = f->head;
    if (q == NULL)
        return NULL;
    f->head = q->next;
    if (f->head == NULL)
        f->tail = NULL;
    f->n--;
    q->next = NULL;
    return q;
}

struct pollh {
    uv_poll_t h;
    struct conn *c; /* NULL once closing */
};

struct conn {
    struct storage *st;
    int idx;
    enum conn_state state;
    PGconn *pg;
    struct pollh *ph;
    int fd;
    int events;     /* uv_poll events currently asked for */
    int setup_step; /* SETUP: -1 statement_timeout, then statement index */
    bool pipeline;
    struct qfifo flight; /* sent, not yet answered; oldest first */
    enum phase phase;    /* of flight.head */
    PGresult *res;       /* flight.head's result, kept until its Sync */
    uv_timer_t retry;
    unsigned backoff;
    uint64_t started; /* when the current connection attempt began */
    bool in_episode;  /* a loss was logged and the connection is not back yet */
    bool ever_ready;
};

struct storage {
    uv_loop_t *loop;
    struct storage_opts opts;
    char *dsn;
    char **kw, **vals; /* the DSN as libpq parameters, plus hostaddr (dsn_prepare) */
    struct conn *conns;
    struct qfifo wait; /* not yet sent; oldest first */
    size_t bytes;      /* size of every query taken and not finished */
    uv_timer_t sweep;
    uv_timer_t kick;
    bool kick_armed;
    bool closing;
    bool free_pending;
    unsigned depth;
    unsigned open_handles;
    struct storage_stats stats;
};

struct bytea_buf {
    struct bytea_buf *next;
    unsigned char *p;
    size_t len;
};

static void conn_start(struct conn *c);
static void conn_lost(struct conn *c, int err, const char *why);
static void dispatch(struct storage *st);
static void teardown(struct storage *st);

/* ---- results ---- */

int storage_result_rows(const struct storage_result *res)
{
    return res ? res->nrows : 0;
}

int storage_result_cols(const struct storage_result *res)
{
    return res && res->pg ? PQnfields(res->pg) : 0;
}

int64_t storage_result_affected(const struct storage_result *res)
{
    return res ? res->affected : 0;
}

const char *storage_result_error(const struct storage_result *res)
{
    return res && res->errmsg ? res->errmsg : "";
}

int64_t storage_roster_version(const struct storage_result *res)
{
    return res ? res->version : 0;
}

static bool in_range(const struct storage_result *res, int row, int col)
{
    return res != NULL && res->pg != NULL && row >= 0 && row < res->nrows && col >= 0 &&
           col < PQnfields(res->pg);
}

bool storage_result_null(const struct storage_result *res, int row, int col)
{
    return !in_range(res, row, col) || PQgetisnull(res->pg, row, col);
}

const char *storage_result_text(const struct storage_result *res, int row, int col)
{
    if (storage_result_null(res, row, col))
        return NULL;
    return PQgetvalue(res->pg, row, col);
}

const unsigned char *storage_result_bytea(const struct storage_result *res, int row, int col,
                                          size_t *len)
{
    *len = 0;
    const char *t = storage_result_text(res, row, col);
    if (t == NULL || PQftype(res->pg, col) != STORAGE_BYTEAOID)
        return NULL;
    size_t n = 0;
    unsigned char *p = PQunescapeBytea((const unsigned char *)t, &n);
    if (p == NULL)
        fatal("out of memory decoding a bytea");
    /* The decoded copy lives as long as the result: the result is ours,
     * only const towards the callback. */
    struct storage_result *mut = (struct storage_result *)res;
    struct bytea_buf *b = xmalloc(sizeof(*b));
    b->p = p;
    b->len = n;
    b->next = mut->decoded;
    mut->decoded = b;
    *len = n;
    return p;
}

void storage_result_release(struct storage_result *res)
{
    while (res->decoded) {
        struct bytea_buf *b = res->decoded;
        res->decoded = b->next;
        if (res->secret)
            mem_wipe(b->p, b->len);
        PQfreemem(b->p);
        free(b);
    }
}

int storage_result_int64(const struct storage_result *res, int row, int col, int64_t *out)
{
    const char *t = storage_result_text(res, row, col);
    if (t == NULL)
        return ERR_NOTFOUND;
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (errno != 0 || end == t || *end != '\0')
        return ERR_PARSE;
    *out = v;
    return 0;
}

int storage_result_bool(const struct storage_result *res, int row, int col, bool *out)
{
    const char *t = storage_result_text(res, row, col);
    if (t == NULL)
        return ERR_NOTFOUND;
    if (strcmp(t, "t") == 0)
        *out = true;
    else if (strcmp(t, "f") == 0)
        *out = false;
    else
        return ERR_PARSE;
    return 0;
}

/* ---- queries ---- */

static void query_free(struct query *q)
{
    if (storage_sql_secret(q->stmt))
        mem_wipe(q->data, q->data_len);
    free(q->data);
    free(q);
}

/*
 * Wipe the values of a result that holds credentials before PQclear frees
 * it (PQgetvalue points into the result's own storage, which is writable).
 * libpq's input buffer, which the bytes passed through, cannot be reached
 * from here; it is reused by the next answers on the connection and freed
 * by PQfinish.
 */
static void wipe_result(PGresult *pg)
{
    int rows = PQntuples(pg), cols = PQnfields(pg);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            mem_wipe(PQgetvalue(pg, r, c), (size_t)PQgetlength(pg, r, c));
}

static int map_sqlstate(const char *state)
{
    if (state == NULL)
        return ERR_DB;
    if (strcmp(state, "23503") == 0) /* foreign_key_violation: no such owner */
        return ERR_NOTFOUND;
    if (strcmp(state, "23505") == 0) /* unique_violation */
        return ERR_EXISTS;
    if (strcmp(state, "42501") == 0) /* insufficient_privilege */
        return ERR_PERM;
    if (strcmp(state, "57014") == 0) /* query_canceled: statement_timeout */
        return ERR_TIMEOUT;
    return ERR_DB;
}

/* Run q's callback once with err (and pg's rows when err == 0), then free
 * q. q must be off every list. Takes pg. */
static void query_finish(struct storage *st, struct query *q, int err, PGresult *pg,
                         const char *msg)
{
    struct storage_result res = {0};
    char ebuf[512];
    if (err == 0 && pg == NULL) {
        err = ERR_DB;
        msg = "no result from the server";
    } else if (err == 0) {
        ExecStatusType s = PQresultStatus(pg);
        if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
            res.pg = pg;
            res.nrows = PQntuples(pg);
            const char *aff = PQcmdTuples(pg);
            res.affected = aff[0] ? strtoll(aff, NULL, 10) : 0;
            err = storage_sql_post(q->stmt, &res, &msg);
        } else {
            const char *m = PQresultErrorField(pg, PG_DIAG_MESSAGE_PRIMARY);
            err = map_sqlstate(PQresultErrorField(pg, PG_DIAG_SQLSTATE));
            snprintf(ebuf, sizeof(ebuf), "%s: %s", storage_sql_name(q->stmt),
                     m ? m : PQresStatus(s));
            msg = ebuf;
        }
    }
    if (err != 0) {
        res.pg = NULL;
        res.nrows = 0;
        if (msg != NULL && msg != ebuf) {
            snprintf(ebuf, sizeof(ebuf), "%s: %s", storage_sql_name(q->stmt), msg);
            msg = ebuf;
        }
        res.errmsg = msg ? msg : err_str(err);
        st->stats.failed++;
    } else {
        st->stats.completed++;
    }
    st->bytes -= q->size; /* before the callback, which may queue again */
    res.secret = storage_sql_secret(q->stmt);
    q->cb(q->arg, err, &res);
    storage_result_release(&res);
    if (pg != NULL && res.secret)
        wipe_result(pg);
    PQclear(pg);
    query_free(q);
}

static void kick(struct storage *st);

int storage_submit(struct storage *st, int stmt, const struct storage_params *p, storage_cb cb,
                   void *arg)
{
    if (st == NULL || cb == NULL)
        return ERR_INVAL;
    if (st->closing)
        return ERR_CLOSED;
    if (p->err != 0)
        return p->err;
    if (st->wait.n >= st->opts.queue_max)
        return ERR_LIMIT;
    size_t total = 0;
    for (int i = 0; i < p->n; i++)
        total += p->v[i] ? (size_t)p->len[i] + 1 : 0;
    /* Counting only queries would let 10000 of them hold 12 parameters of
     * STORAGE_PARAM_MAX each: the bytes are bounded too. */
    size_t size = total + sizeof(struct query);
    if (size > st->opts.queue_max_bytes || st->bytes > st->opts.queue_max_bytes - size)
        return ERR_LIMIT;
    struct query *q = xcalloc(1, sizeof(*q));
    q->size = size;
    q->data_len = total;
    st->bytes += size;
    q->data = xmalloc(total ? total : 1);
    char *w = q->data;
    for (int i = 0; i < p->n; i++) {
        q->fmt[i] = p->fmt[i];
        q->len[i] = p->len[i];
        if (p->v[i] == NULL) {
            q->v[i] = NULL;
            continue;
        }
        memcpy(w, p->v[i], (size_t)p->len[i]);
        w[p->len[i]] = '\0';
        q->v[i] = w;
        w += p->len[i] + 1;
    }
    q->n = p->n;
    q->stmt = stmt;
    q->cb = cb;
    q->arg = arg;
    q->deadline = uv_now(st->loop) + st->opts.query_timeout_ms;
    qfifo_push(&st->wait, q);
    kick(st);
    return 0;
}

/* ---- entry points and teardown ---- */

static void enter(struct storage *st)
{
    st->depth++;
}

static void leave(struct storage *st)
{
    if (--st->depth == 0 && st->free_pending) {
        st->free_pending = false;
        teardown(st);
    }
}

static void free_params(struct storage *st)
{
    for (size_t i = 0; st->kw != NULL && st->kw[i] != NULL; i++) {
        free(st->kw[i]);
        mem_freezero(st->vals[i], strlen(st->vals[i])); /* may hold a password */
    }
    free(st->kw);
    free(st->vals);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct storage *st = h->data;
    if (--st->open_handles == 0) {
        free(st->conns);
        free_params(st);
        mem_freezero(st->dsn, strlen(st->dsn));
        free(st);
    }
}

static bool is_ip_literal(const char *s)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

/*
 * libpq resolves a host *name* inside PQconnectStart, on the loop. So a DSN
 * naming its host by name is resolved here, once, when storage_new runs at
 * start-up (before the loop does), and every connection and reconnect gets
 * the address as hostaddr (host stays, for TLS and the password file).
 * Reconnects therefore keep the start-up address. Unix socket directories
 * and IP addresses need nothing. Several host names (libpq's failover list)
 * cannot be pinned this way and are refused. The host may also come from
 * the environment (PGHOST, PGHOSTADDR, PGSERVICE): see below.
 */
static int dsn_prepare(struct storage *st)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(st->dsn, &errmsg);
    if (opts == NULL) {
        log_err("database DSN: %s", errmsg ? errmsg : "cannot be parsed");
        PQfreemem(errmsg);
        return ERR_INVAL;
    }
    const char *host = NULL, *hostaddr = NULL, *service = NULL;
    bool gss_set = false;
    size_t n = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        n++;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
        else if (strcmp(o->keyword, "gssencmode") == 0)
            gss_set = true;
    }
    /* PQconninfoParse applies no defaults, but PQconnectStart does: a host
     * missing from the DSN may come from PGHOST, PGHOSTADDR or the service
     * file named by PGSERVICE. PQconndefaults shows what libpq would take
     * from those. A service= in the DSN would be read only inside
     * PQconnectStart, so it must come with host= or hostaddr=. */
    PQconninfoOption *defs = NULL;
    char *def_host = NULL;
    if (host == NULL && hostaddr == NULL) {
        if (service != NULL) {
            log_err("database DSN: service=%s without host= or hostaddr= (name the host in the "
                    "DSN, so that it is resolved at start-up)",
                    service);
            PQconninfoFree(opts);
            return ERR_INVAL;
        }
        defs = PQconndefaults();
        if (defs == NULL)
            fatal("out of memory reading the libpq defaults");
        for (PQconninfoOption *o = defs; o->keyword != NULL; o++) {
            if (o->val == NULL || o->val[0] == '\0')
                continue;
            if (strcmp(o->keyword, "host") == 0)
                host = o->val;
            else if (strcmp(o->keyword, "hostaddr") == 0)
                hostaddr = o->val;
        }
        if (host != NULL && hostaddr == NULL)
            def_host = xstrdup(host); /* passed explicitly with the address */
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (host != NULL && hostaddr == NULL && host[0] != '/' && host[0] != '@' && host[0] != '\0' &&
        !is_ip_literal(host)) {
        if (strchr(host, ',') != NULL) {
            log_err("database DSN: several host names (%s): give IP addresses or hostaddr=", host);
            goto refuse;
        }
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
        int rc = getaddrinfo(host, NULL, &hints, &res);
        if (rc != 0) {
            log_err("database host %s: %s", host, gai_strerror(rc));
            goto refuse;
        }
        const void *a =
            res->ai_family == AF_INET6
                ? (const void *)&((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr
                : (const void *)&((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr;
        inet_ntop(res->ai_family, a, ip, sizeof(ip));
        freeaddrinfo(res);
        log_info("database host %s is %s", host, ip);
    }
    st->kw = xcalloc(n + 4, sizeof(*st->kw));
    st->vals = xcalloc(n + 4, sizeof(*st->vals));
    size_t i = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        st->kw[i] = xstrdup(o->keyword);
        st->vals[i++] = xstrdup(o->val);
    }
    if (ip[0] != '\0') {
        if (def_host != NULL) {
            /* The name from the environment, for TLS and the password
             * file, as libpq would have used it. */
            st->kw[i] = xstrdup("host");
            st->vals[i++] = def_host;
            def_host = NULL;
        }
        st->kw[i] = xstrdup("hostaddr");
        st->vals[i++] = xstrdup(ip);
    }
    /* libpq's default gssencmode=prefer has Kerberos look for credentials
     * at every connect over TCP: file and keyring reads on the loop, and
     * system calls (keyctl) outside the daemons' seccomp allow-lists. We
     * never use GSSAPI encryption; a DSN that asks for it keeps it. */
    if (!gss_set) {
        st->kw[i] = xstrdup("gssencmode");
        st->vals[i] = xstrdup("disable");
    }
    free(def_host);
    if (defs != NULL)
        PQconninfoFree(defs);
    PQconninfoFree(opts);
    return 0;

refuse:
    free(def_host);
    if (defs != NULL)
        PQconninfoFree(defs);
    PQconninfoFree(opts);
    return ERR_INVAL;
}

static void on_poll_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Stop watching the socket, then close it (in that order: epoll must
 * forget the fd before libpq closes it). */
static void conn_drop(struct conn *c)
{
    if (c->ph != NULL) {
        c->ph->c = NULL;
        uv_close((uv_handle_t *)&c->ph->h, on_poll_closed);
        c->ph = NULL;
    }
    PQclear(c->res);
    c->res = NULL;
    c->phase = PH_RESULT;
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->fd = -1;
    c->events = 0;
    c->state = C_DOWN;
}

static void fail_flight(struct conn *c, int err, const char *why)
{
    struct query *q;
    while ((q = qfifo_pop(&c->flight)) != NULL)
        query_finish(c->st, q, err, NULL, why);
}

static void teardown(struct storage *st)
{
    enter(st);
    for (unsigned i = 0; i < st->opts.pool_size; i++) {
        struct conn *c = &st->conns[i];
        conn_drop(c);
        fail_flight(c, ERR_CLOSED, "storage closed before the answer");
        uv_timer_stop(&c->retry);
        c->retry.data = st;
        uv_close((uv_handle_t *)&c->retry, on_handle_closed);
    }
    struct query *q;
    while ((q = qfifo_pop(&st->wait)) != NULL)
        query_finish(st, q, ERR_CLOSED, NULL, "storage closed before the query was sent");
    uv_close((uv_handle_t *)&st->sweep, on_handle_closed);
    uv_close((uv_handle_t *)&st->kick, on_handle_closed);
    st->depth--;
}

void storage_free(struct storage *st)
{
    if (st == NULL || st->closing)
        return;
    st->closing = true;
    if (st->depth > 0)
        st->free_pending = true;
    else
        teardown(st);
}

/* ---- connections ---- */

static void on_poll(uv_poll_t *h, int status, int events);

static void conn_watch(struct conn *c, int events)
{
    if (c->ph == NULL || c->events == events)
        return;
    c->events = events;
    uv_poll_start(&c->ph->h, events, on_poll);
}

/*
 * Watch libpq's current socket with a new poll handle. While connecting,
 * this runs after every PQconnectPoll: libpq may have closed its socket and
 * opened the next one (next address or socket directory, an SSL or GSS
 * fallback) inside that call, and the new socket usually gets the same fd
 * number. epoll forgot the old registration when the socket closed, but a
 * handle kept for "the same fd" would still count as registered in libuv,
 * so the new socket would never be watched and the attempt would stall
 * until the connect timeout. libpq does not say whether it reconnected, so
 * the handle is always replaced (a few times per connection attempt).
 */
static int conn_open_poll(struct conn *c)
{
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return ERR_IO;
    if (c->ph != NULL) {
        /* Close first: libuv drops the fd from epoll before the new
         * handle registers it. */
        c->ph->c = NULL;
        uv_close((uv_handle_t *)&c->ph->h, on_poll_closed);
        c->ph = NULL;
    }
    struct pollh *ph = xcalloc(1, sizeof(*ph));
    if (uv_poll_init(c->st->loop, &ph->h, fd) != 0) {
        free(ph);
        return ERR_IO;
    }
    ph->h.data = ph;
    ph->c = c;
    c->ph = ph;
    c->fd = fd;
    c->events = 0;
    return 0;
}

static void on_retry(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct storage *st = c->st;
    enter(st);
    if (!st->closing)
        conn_start(c);
    leave(st);
}

static void schedule_retry(struct conn *c)
{
    struct storage_opts *o = &c->st->opts;
    unsigned d = c->backoff ? c->backoff : o->backoff_min_ms;
    c->backoff = d >= o->backoff_max_ms / 2 ? o->backoff_max_ms : d * 2;
    /* Jitter in [d/2, d]: pools of several daemons do not reconnect in step. */
    uint64_t delay = d / 2 + rand_uniform(d / 2 + 1);
    uv_timer_start(&c->retry, on_retry, delay, 0);
}

/* The connection failed or broke: log once per episode, fail what was in
 * flight, reconnect later. */
static void conn_lost(struct conn *c, int err, const char *why)
{
    struct storage *st = c->st;
    char msg[400];
    const char *pgmsg = c->pg ? PQerrorMessage(c->pg) : "";
    snprintf(msg, sizeof(msg), "%s%s%s", why, pgmsg[0] ? ": " : "", pgmsg);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = p[1] ? ' ' : '\0';
    if (!c->in_episode) {
        log_warn("database connection %d: %s", c->idx, msg);
        c->in_episode = true;
    } else {
        log_debug("database connection %d: %s", c->idx, msg);
    }
    conn_drop(c);
    if (!st->closing)
        schedule_retry(c);
    if (c->flight.n > 0) {
        char qmsg[480];
        snprintf(qmsg, sizeof(qmsg),
                 "connection lost before the answer (the query may or may not have been "
                 "applied): %s",
                 msg);
        fail_flight(c, err, qmsg);
    }
}

static void conn_flush(struct conn *c)
{
    int r = PQflush(c->pg);
    if (r < 0) {
        conn_lost(c, ERR_DB, "sending failed");
        return;
    }
    conn_watch(c, UV_READABLE | (r == 1 ? UV_WRITABLE : 0));
}

/* SETUP: send the next step, or become READY. */
static void setup_next(struct conn *c)
{
    struct storage *st = c->st;
    int ok;
    if (c->setup_step < 0) {
        char v[16];
        snprintf(v, sizeof(v), "%u", st->opts.query_timeout_ms);
        const char *p[1] = {v};
        ok = PQsendQueryParams(c->pg, "SELECT set_config('statement_timeout', $1, false)", 1, NULL,
                               p, NULL, NULL, 0);
    } else if (c->setup_step < storage_sql_count()) {
        ok = PQsendPrepare(c->pg, storage_sql_name(c->setup_step), storage_sql_text(c->setup_step),
                           0, NULL);
    } else {
        if (c->pipeline && !PQenterPipelineMode(c->pg)) {
            conn_lost(c, ERR_DB, "cannot enter pipeline mode");
            return;
        }
        c->state = C_READY;
        c->backoff = 0;
        if (c->ever_ready)
            st->stats.reconnects++;
        if (c->in_episode)
            log_notice("database connection %d is back", c->idx);
        c->in_episode = false;
        c->ever_ready = true;
        conn_watch(c, UV_READABLE);
        dispatch(st);
        return;
    }
    if (!ok) {
        conn_lost(c, ERR_DB, "setting up the connection failed");
        return;
    }
    conn_flush(c);
}

static void setup_read(struct conn *c)
{
    while (c->state == C_SETUP && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r != NULL) {
            ExecStatusType s = PQresultStatus(r);
            if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
                char why[300];
                const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
                /* Usually a schema that is missing or older than this build. */
                snprintf(why, sizeof(why), "preparing %s failed: %s",
                         c->setup_step < 0 ? "the session" : storage_sql_name(c->setup_step),
                         m ? m : PQresStatus(s));
                PQclear(r);
                conn_lost(c, ERR_DB, why);
                return;
            }
            PQclear(r);
            continue;
        }
        c->setup_step++;
        setup_next(c);
    }
}

static void conn_complete_head(struct conn *c, PGresult *r)
{
    struct query *q = qfifo_pop(&c->flight);
    c->phase = PH_RESULT;
    c->res = NULL;
    query_finish(c->st, q, 0, r, NULL);
}

/* READY: take every answer that is complete. */
static void ready_read(struct conn *c)
{
    /* Stop when a callback called storage_free: the rest fail with
     * ERR_CLOSED, as storage.h promises. */
    while (c->state == C_READY && c->flight.head != NULL && !c->st->closing) {
        if (PQisBusy(c->pg))
            break;
        PGresult *r = PQgetResult(c->pg);
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            PQclear(r);
            conn_lost(c, ERR_DB, "connection lost");
            return;
        }
        switch (c->phase) {
        case PH_RESULT:
            if (r == NULL) {
                /* Every statement has a result; none means libpq gave up
                 * on the connection (seen while a server shuts down). */
                conn_lost(c, ERR_DB, "connection lost (no result)");
                return;
            }
            c->res = r;
            c->phase = PH_END;
            break;
        case PH_END:
            if (r != NULL) {
                PQclear(r); /* one statement has one result; ignore extras */
                break;
            }
            if (c->pipeline)
                c->phase = PH_SYNC;
            else
                conn_complete_head(c, c->res);
            break;
        case PH_SYNC:
            if (r == NULL)
                return; /* the Sync has not arrived yet */
            if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
                PQclear(r);
                conn_complete_head(c, c->res);
            } else {
                PQclear(r);
            }
            break;
        }
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct pollh *ph = h->data;
    struct conn *c = ph->c;
    if (c == NULL)
        return;
    struct storage *st = c->st;
    enter(st);
    if (c->state == C_CONNECTING) {
        PostgresPollingStatusType ps = PQconnectPoll(c->pg);
        if (ps == PGRES_POLLING_FAILED) {
            conn_lost(c, ERR_DB, "cannot connect");
        } else if (conn_open_poll(c) != 0) {
            conn_lost(c, ERR_DB, "cannot watch the socket");
        } else if (ps == PGRES_POLLING_READING) {
            conn_watch(c, UV_READABLE);
        } else if (ps == PGRES_POLLING_WRITING) {
            conn_watch(c, UV_WRITABLE);
        } else if (ps == PGRES_POLLING_OK) {
            if (PQsetnonblocking(c->pg, 1) != 0) {
                conn_lost(c, ERR_DB, "cannot set non-blocking mode");
            } else {
                c->state = C_SETUP;
                c->setup_step = -1;
                setup_next(c);
            }
        }
        leave(st);
        return;
    }
    if (status < 0) {
        /* Typically EBADF: libpq dropped the socket of a dead server. */
        conn_lost(c, ERR_DB, "connection lost");
        leave(st);
        return;
    }
    if (events & UV_WRITABLE) {
        conn_flush(c);
        if (c->state == C_DOWN) {
            leave(st);
            return;
        }
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(c->pg)) {
            conn_lost(c, ERR_DB, "connection lost");
            leave(st);
            return;
        }
        if (c->state == C_SETUP)
            setup_read(c);
        else if (c->state == C_READY)
            ready_read(c);
        if (c->state != C_DOWN && PQstatus(c->pg) == CONNECTION_BAD)
            conn_lost(c, ERR_DB, "connection lost");
        if (c->state == C_READY)
            dispatch(st);
    }
    leave(st);
}

static void conn_start(struct conn *c)
{
    c->started = uv_now(c->st->loop);
    c->pg =
        PQconnectStartParams((const char *const *)c->st->kw, (const char *const *)c->st->vals, 0);
    if (c->pg == NULL)
        fatal("out of memory starting a database connection");
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_lost(c, ERR_DB, "cannot connect");
        return;
    }
    c->state = C_CONNECTING;
    if (conn_open_poll(c) != 0) {
        conn_lost(c, ERR_DB, "cannot watch the socket");
        return;
    }
    /* Before the first PQconnectPoll, libpq wants a writable socket. */
    conn_watch(c, UV_WRITABLE);
}

/* ---- sending ---- */

static int conn_send(struct conn *c, struct query *q)
{
    if (!PQsendQueryPrepared(c->pg, storage_sql_name(q->stmt), q->n, q->v, q->len, q->fmt, 0))
        return ERR_DB;
    if (c->pipeline && !PQpipelineSync(c->pg))
        return ERR_DB;
    return 0;
}

static struct conn *pick(struct storage *st)
{
    unsigned room = st->opts.no_pipeline ? 1 : st->opts.pipeline_depth;
    struct conn *best = NULL;
    for (unsigned i = 0; i < st->opts.pool_size; i++) {
        struct conn *c = &st->conns[i];
        if (c->state == C_READY && c->flight.n < room && (!best || c->flight.n < best->flight.n))
            best = c;
    }
    return best;
}

static void dispatch(struct storage *st)
{
    struct conn *c;
    /* closing is checked per query: a callback run from conn_lost (via
     * fail_flight) may call storage_free, and nothing may be sent after
     * that (it could commit, yet be reported ERR_CLOSED). */
    while (!st->closing && st->wait.head != NULL && (c = pick(st)) != NULL) {
        struct query *q = qfifo_pop(&st->wait);
        if (conn_send(c, q) != 0) {
            /* Never reached the server: back to the front of the queue. */
            qfifo_push_front(&st->wait, q);
            conn_lost(c, ERR_DB, "sending failed");
            continue;
        }
        qfifo_push(&c->flight, q);
        /* Flush per query: in pipeline mode PQpipelineSync already pushed
         * the bytes; this arms UV_WRITABLE when the socket was full. */
        conn_flush(c);
    }
}

static void on_kick(uv_timer_t *t)
{
    struct storage *st = t->data;
    enter(st);
    st->kick_armed = false;
    dispatch(st);
    leave(st);
}

static void kick(struct storage *st)
{
    if (!st->kick_armed) {
        st->kick_armed = true;
        uv_timer_start(&st->kick, on_kick, 0, 0);
    }
}

/* Periodic: fail queries that waited too long; drop connections that gave
 * no answer within twice the timeout (the server's own statement_timeout
 * answers long queries before that), or that take longer than the timeout
 * to connect and set up. */
static void on_sweep(uv_timer_t *t)
{
    struct storage *st = t->data;
    enter(st);
    uint64_t now = uv_now(st->loop);
    while (st->wait.head != NULL && st->wait.head->deadline <= now && !st->closing) {
        struct query *q = qfifo_pop(&st->wait);
        char msg[120];
        snprintf(msg, sizeof(msg), "no database connection within %u ms",
                 st->opts.query_timeout_ms);
        query_finish(st, q, ERR_TIMEOUT, NULL, msg);
    }
    for (unsigned i = 0; i < st->opts.pool_size && !st->closing; i++) {
        struct conn *c = &st->conns[i];
        if (c->flight.head != NULL && c->flight.head->deadline + st->opts.query_timeout_ms <= now)
            conn_lost(c, ERR_TIMEOUT, "no answer from the database within the timeout");
        /* libpq leaves connect_timeout to the caller of PQconnectPoll. */
        else if ((c->state == C_CONNECTING || c->state == C_SETUP) &&
                 c->started + st->opts.query_timeout_ms <= now)
            conn_lost(c, ERR_TIMEOUT, "connecting timed out");
    }
    leave(st);
}

/* ---- the pool ---- */

int storage_new(uv_loop_t *loop, const struct storage_opts *opts, struct storage **out)
{
    if (loop == NULL || opts == NULL || opts->dsn == NULL || out == NULL ||
        opts->pool_size > POOL_MAX)
        return ERR_INVAL;
    struct storage *st = xcalloc(1, sizeof(*st));
    st->loop = loop;
    st->opts = *opts;
    if (opts->password != NULL) {
        /* libpq's conninfo value quoting: '...' with \ and ' escaped. */
        struct buf b = BUF_INIT;
        buf_append_str(&b, opts->dsn);
        buf_append_str(&b, " password='");
        for (const char *v = opts->password; *v != '\0'; v++) {
            if (*v == '\\' || *v == '\'')
                buf_append_byte(&b, '\\');
            buf_append_byte(&b, *v);
        }
        buf_append(&b, "'", 2); /* with the terminating NUL */
        st->dsn = xstrdup(b.data);
        mem_wipe(b.data, b.len);
        buf_free(&b);
    } else {
        st->dsn = xstrdup(opts->dsn);
    }
    st->opts.dsn = st->dsn;
    st->opts.password = NULL;
    if (dsn_prepare(st) != 0) {
        free_params(st);
        mem_freezero(st->dsn, strlen(st->dsn));
        free(st);
        return ERR_INVAL;
    }
    struct storage_opts *o = &st->opts;
    if (o->pool_size == 0)
        o->pool_size = 2;
    if (o->query_timeout_ms == 0)
        o->query_timeout_ms = 10000;
    if (o->queue_max == 0)
        o->queue_max = 10000;
    if (o->queue_max_bytes == 0)
        o->queue_max_bytes = 64 * 1024 * 1024;
    if (o->pipeline_depth == 0)
        o->pipeline_depth = 128;
    if (o->backoff_min_ms == 0)
        o->backoff_min_ms = 100;
    if (o->backoff_max_ms < o->backoff_min_ms)
        o->backoff_max_ms = o->backoff_min_ms > 5000 ? o->backoff_min_ms : 5000;
    if (o->offline_quota == 0)
        o->offline_quota = 1000;
    if (o->offline_quota_bytes == 0)
        o->offline_quota_bytes = 1024 * 1024;
    st->conns = xcalloc(o->pool_size, sizeof(*st->conns));
    uv_timer_init(loop, &st->sweep);
    uv_timer_init(loop, &st->kick);
    st->sweep.data = st;
    st->kick.data = st;
    st->open_handles = 2 + o->pool_size;
    unsigned period = o->query_timeout_ms / 10;
    period = period < 10 ? 10 : period > 1000 ? 1000 : period;
    uv_timer_start(&st->sweep, on_sweep, period, period);
    /* The sweep alone must not keep a loop alive. */
    uv_unref((uv_handle_t *)&st->sweep);
    for (unsigned i = 0; i < o->pool_size; i++) {
        struct conn *c = &st->conns[i];
        c->st = st;
        c->idx = (int)i;
        c->fd = -1;
        c->pipeline = !o->no_pipeline;
        uv_timer_init(loop, &c->retry);
        c->retry.data = c;
    }
    for (unsigned i = 0; i < o->pool_size; i++)
        conn_start(&st->conns[i]);
    *out = st;
    return 0;
}

void storage_get_stats(const struct storage *st, struct storage_stats *out)
{
    *out = st->stats;
    out->conns_ready = 0;
    out->in_flight = 0;
    for (unsigned i = 0; i < st->opts.pool_size; i++) {
        out->conns_ready += st->conns[i].state == C_READY;
        out->in_flight += st->conns[i].flight.n;
    }
    out->waiting = st->wait.n;
}

unsigned storage_offline_quota(const struct storage *st)
{
    return st->opts.offline_quota;
}

size_t storage_offline_quota_bytes(const struct storage *st)
{
    return st->opts.offline_quota_bytes;
}
