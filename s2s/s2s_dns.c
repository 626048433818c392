/*
 * s2s_dns.c - DNS for outgoing links: c-ares on the libuv loop.
 *
 * c-ares tells us which sockets it wants watched (sock_state_cb): each gets
 * a uv_poll_t; its events and a timer for c-ares' own timeouts drive
 * ares_process_fd. Nothing blocks the loop.
 *
 * A lookup for a domain asks for the SRV records _xmpps-server._tcp
 * (XEP-0368: direct TLS) and _xmpp-server._tcp (RFC 6120 §3.2) at once,
 * orders them by priority and, within a priority, by weighted random
 * choice (RFC 2782), then resolves every target's A/AAAA records. Without
 * SRV records the domain itself is resolved on port 5269; a single "."
 * target means the service is decidedly not available (ERR_NOTFOUND).
 * Addresses of one target are interleaved IPv6/IPv4 so that a dead
 * family costs one attempt, not all of them (connection attempts are
 * sequential: happy eyeballs without the parallel race).
 *
 * Results are cached for the smallest TTL of the SRV and address records
 * used (at most 5 minutes), up to 4096 names: a full cache evicts the
 * expired entries, else the one closest to expiry.
 * Results are always delivered from a timer callback, never from inside
 * s2s_dns_resolve, so callers need not guard against reentrancy.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/nameser.h>
#include <ares.h>

#include "common/err.h"
#include "common/htab.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rand.h"
#include "s2s/s2s.h"

#define DNS_MAX_SRV     16
#define DNS_MAX_TARGETS 32
#define DNS_CACHE_MAX_S 300
#define DNS_CACHE_MAX_N 4096

struct dpoll {
    uv_poll_t h;
    struct s2s_dns *d;
    ares_socket_t fd;
};

struct srv {
    char *host;
    int port;
    int prio, weight;
    bool direct_tls;
};

struct dquery;

struct dhost {
    struct dquery *q;
    size_t idx;
};

struct dquery {
    struct s2s_dns *d;
    struct dquery *next, *prev;
    void (*cb)(void *arg, int err, struct s2s_target *t, size_t n);
    void *arg;
    char *name;
    char *ckey;
    int port;
    int pending;
    bool cancelled;
    bool done;
    bool timed_out;
    bool dot; /* a "." SRV target */
    struct srv srv[DNS_MAX_SRV];
    size_t nsrv;
    struct s2s_target *per_host[DNS_MAX_SRV];
    size_t per_host_n[DNS_MAX_SRV];
    struct dhost hosts[DNS_MAX_SRV];
    uint32_t min_ttl;
    int err;
    struct s2s_target *result;
    size_t nresult;
};

struct centry {
    struct s2s_target *t;
    size_t n;
    uint64_t expires;
};

struct s2s_dns {
    uv_loop_t *loop;
    ares_channel ch;
    uv_timer_t timer;
    uv_timer_t deliver;
    struct htab *polls; /* fd -> struct dpoll */
    struct htab *cache; /* "name port srv" -> struct centry */
    struct dquery *queries;
    int closing_handles;
    bool freeing;
};

static void centry_free(void *p)
{
    struct centry *c = p;
    free(c->t);
    free(c);
}

static void on_poll_closed(uv_handle_t *h)
{
    struct dpoll *p = h->data;
    struct s2s_dns *d = p->d;
    free(p);
    if (--d->closing_handles == 0 && d->freeing)
        free(d);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct s2s_dns *d = h->data;
    if (--d->closing_handles == 0 && d->freeing)
        free(d);
}

static void arm_timer(struct s2s_dns *d);

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct dpoll *p = h->data;
    struct s2s_dns *d = p->d;
    ares_socket_t r = ARES_SOCKET_BAD, w = ARES_SOCKET_BAD;
    if (status < 0 || (events & UV_READABLE))
        r = p->fd;
    if (status < 0 || (events & UV_WRITABLE))
        w = p->fd;
    ares_process_fd(d->ch, r, w);
    arm_timer(d);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct s2s_dns *d = data;
    struct dpoll *p = htab_get(d->polls, &fd, sizeof(fd));
    if (!readable && !writable) {
        if (p != NULL) {
            htab_del(d->polls, &fd, sizeof(fd));
            uv_poll_stop(&p->h);
            d->closing_handles++;
            uv_close((uv_handle_t *)&p->h, on_poll_closed);
        }
        return;
    }
    if (p == NULL) {
        p = xcalloc(1, sizeof(*p));
        p->d = d;
        p->fd = fd;
        if (uv_poll_init_socket(d->loop, &p->h, fd) != 0) {
            free(p);
            return;
        }
        p->h.data = p;
        htab_set(d->polls, &fd, sizeof(fd), p);
    }
    uv_poll_start(&p->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

static void on_timer(uv_timer_t *t)
{
    struct s2s_dns *d = t->data;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timer(d);
}

static void arm_timer(struct s2s_dns *d)
{
    struct timeval tv, *tvp = ares_timeout(d->ch, NULL, &tv);
    if (tvp == NULL) {
        uv_timer_stop(&d->timer);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + (uint64_t)tvp->tv_usec / 1000;
    uv_timer_start(&d->timer, on_timer, ms ? ms : 1, 0);
}

int s2s_dns_new(uv_loop_t *loop, uint64_t timeout_ms, const char *servers, struct s2s_dns **out)
{
    struct s2s_dns *d = xcalloc(1, sizeof(*d));
    d->loop = loop;
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = d;
    o.timeout = (int)(timeout_ms / 2 ? timeout_ms / 2 : 1);
    o.tries = 2;
    int rc =
        ares_init_options(&d->ch, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        log_err("c-ares: %s", ares_strerror(rc));
        free(d);
        return ERR_CONFIG;
    }
    if (servers != NULL && (rc = ares_set_servers_ports_csv(d->ch, servers)) != ARES_SUCCESS) {
        log_err("<dns servers='%s'>: %s", servers, ares_strerror(rc));
        ares_destroy(d->ch);
        free(d);
        return ERR_CONFIG;
    }
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_timer_init(loop, &d->deliver);
    d->deliver.data = d;
    d->polls = htab_new(NULL);
    d->cache = htab_new(centry_free);
    *out = d;
    return 0;
}

/* ---- completion ---- */

static void query_unlink(struct dquery *q)
{
    struct s2s_dns *d = q->d;
    if (q->prev)
        q->prev->next = q->next;
    else
        d->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
}

static void query_free(struct dquery *q)
{
    for (size_t i = 0; i < q->nsrv; i++)
        free(q->srv[i].host);
    for (size_t i = 0; i < DNS_MAX_SRV; i++)
        free(q->per_host[i]);
    free(q->name);
    free(q->ckey);
    free(q->result);
    free(q);
}

static void on_deliver(uv_timer_t *t)
{
    struct s2s_dns *d = t->data;
    struct dquery *q = d->queries;
    while (q != NULL) {
        struct dquery *next = q->next;
        if (q->done && q->pending == 0) {
            query_unlink(q);
            struct s2s_target *res = q->result;
            q->result = NULL;
            q->cb(q->arg, q->cancelled ? ERR_CLOSED : q->err, res, q->nresult);
            query_free(q);
        }
        q = next;
    }
}

static void finish(struct dquery *q, int err)
{
    q->done = true;
    q->err = err;
    uv_timer_start(&q->d->deliver, on_deliver, 0, 0);
}

/* A full cache drops what has expired, else the entry closest to expiry,
 * so that new domains keep being cached. O(n) only when full. */
static void cache_make_room(struct s2s_dns *d)
{
    if (htab_count(d->cache) < DNS_CACHE_MAX_N)
        return;
    uint64_t now = uv_now(d->loop);
    struct htab_iter it;
    for (htab_iter_init(&it, d->cache); htab_iter_next(&it);) {
        struct centry *c = it.val;
        if (c->expires <= now)
            centry_free(htab_iter_del(&it));
    }
    if (htab_count(d->cache) < DNS_CACHE_MAX_N)
        return;
    const void *oldest = NULL;
    size_t oldest_len = 0;
    uint64_t soonest = UINT64_MAX;
    for (htab_iter_init(&it, d->cache); htab_iter_next(&it);) {
        struct centry *c = it.val;
        if (c->expires < soonest) {
            soonest = c->expires;
            oldest = it.key;
            oldest_len = it.klen;
        }
    }
    if (oldest != NULL) {
        /* The key lives in the entry that htab_del frees. */
        void *k = xmemdup(oldest, oldest_len);
        centry_free(htab_del(d->cache, k, oldest_len));
        free(k);
    }
}

static void build_result(struct dquery *q)
{
    struct s2s_target *t = xcalloc(DNS_MAX_TARGETS, sizeof(*t));
    size_t n = 0;
    for (size_t h = 0; h < q->nsrv && n < DNS_MAX_TARGETS; h++)
        for (size_t i = 0; i < q->per_host_n[h] && n < DNS_MAX_TARGETS; i++)
            t[n++] = q->per_host[h][i];
    if (n == 0) {
        free(t);
        finish(q, ERR_NOTFOUND);
        return;
    }
    q->result = t;
    q->nresult = n;
    cache_make_room(q->d);
    struct centry *c = xcalloc(1, sizeof(*c));
    c->t = xmemdup(t, n * sizeof(*t));
    c->n = n;
    uint32_t ttl = q->min_ttl < DNS_CACHE_MAX_S ? q->min_ttl : DNS_CACHE_MAX_S;
    c->expires = uv_now(q->d->loop) + (uint64_t)ttl * 1000;
    htab_set(q->d->cache, q->ckey, strlen(q->ckey), c);
    finish(q, 0);
}

static void on_addr(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct dhost *dh = arg;
    struct dquery *q = dh->q;
    q->pending--;
    if (status == ARES_ETIMEOUT)
        q->timed_out = true;
    if (status == ARES_SUCCESS && res != NULL && !q->cancelled) {
        struct s2s_target v4[DNS_MAX_TARGETS], v6[DNS_MAX_TARGETS];
        size_t n4 = 0, n6 = 0;
        for (struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) {
            struct s2s_target t;
            memset(&t, 0, sizeof(t));
            t.direct_tls = q->srv[dh->idx].direct_tls;
            if (n->ai_ttl >= 0 && (uint32_t)n->ai_ttl < q->min_ttl)
                q->min_ttl = (uint32_t)n->ai_ttl;
            if (n->ai_family == AF_INET && n4 < DNS_MAX_TARGETS) {
                memcpy(&t.addr, n->ai_addr, sizeof(struct sockaddr_in));
                ((struct sockaddr_in *)&t.addr)->sin_port = htons((uint16_t)q->srv[dh->idx].port);
                v4[n4++] = t;
            } else if (n->ai_family == AF_INET6 && n6 < DNS_MAX_TARGETS) {
                memcpy(&t.addr, n->ai_addr, sizeof(struct sockaddr_in6));
                ((struct sockaddr_in6 *)&t.addr)->sin6_port = htons((uint16_t)q->srv[dh->idx].port);
                v6[n6++] = t;
            }
        }
        struct s2s_target *all = xcalloc(n4 + n6 + 1, sizeof(*all));
        size_t k = 0;
        for (size_t i = 0; i < n4 || i < n6; i++) {
            if (i < n6)
                all[k++] = v6[i];
            if (i < n4)
                all[k++] = v4[i];
        }
        q->per_host[dh->idx] = all;
        q->per_host_n[dh->idx] = k;
    }
    if (res != NULL)
        ares_freeaddrinfo(res);
    if (q->pending > 0)
        return;
    if (q->cancelled || q->d->freeing) {
        finish(q, ERR_CLOSED);
        return;
    }
    if (q->per_host_n[0] == 0 && q->nsrv == 1 && q->timed_out) {
        finish(q, ERR_TIMEOUT);
        return;
    }
    build_result(q);
}

static void resolve_hosts(struct dquery *q)
{
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    q->pending = (int)q->nsrv;
    for (size_t i = 0; i < q->nsrv; i++) {
        q->hosts[i].q = q;
        q->hosts[i].idx = i;
    }
    /* c-ares may answer from /etc/hosts inside the call: all callbacks
     * count down q->pending, so start them all before any can finish. */
    for (size_t i = 0; i < q->nsrv; i++)
        ares_getaddrinfo(q->d->ch, q->srv[i].host, NULL, &hints, on_addr, &q->hosts[i]);
    arm_timer(q->d);
}

/* Order SRV records: priority ascending, weighted random within one. */
static void order_srv(struct dquery *q)
{
    for (size_t i = 0; i < q->nsrv; i++) {
        size_t lo = i;
        for (size_t j = i + 1; j < q->nsrv; j++)
            if (q->srv[j].prio < q->srv[lo].prio)
                lo = j;
        struct srv tmp = q->srv[i];
        q->srv[i] = q->srv[lo];
        q->srv[lo] = tmp;
        /* Among the records of this priority from i on, pick by weight. */
        unsigned total = 0;
        size_t end = i;
        while (end < q->nsrv && q->srv[end].prio == q->srv[i].prio) {
            total += (unsigned)q->srv[end].weight + 1;
            end++;
        }
        unsigned pick = (unsigned)rand_uniform(total), acc = 0;
        for (size_t j = i; j < end; j++) {
            acc += (unsigned)q->srv[j].weight + 1;
            if (pick < acc) {
                tmp = q->srv[i];
                q->srv[i] = q->srv[j];
                q->srv[j] = tmp;
                break;
            }
        }
    }
}

/* The smallest TTL of the SRV records in a reply (c-ares' SRV parser does
 * not report TTLs); UINT32_MAX if none could be read. */
static uint32_t srv_min_ttl(const unsigned char *abuf, int alen)
{
    uint32_t min = UINT32_MAX;
    if (alen < 12)
        return min;
    unsigned qd = (unsigned)(abuf[4] << 8 | abuf[5]), an = (unsigned)(abuf[6] << 8 | abuf[7]);
    long pos = 12;
    for (unsigned i = 0; i < qd + an; i++) {
        char *name = NULL;
        long len = 0;
        if (pos >= alen || ares_expand_name(abuf + pos, abuf, alen, &name, &len) != ARES_SUCCESS)
            return min;
        ares_free_string(name);
        pos += len;
        if (i < qd) {
            pos += 4;
            continue;
        }
        if (pos + 10 > alen)
            return min;
        const unsigned char *p = abuf + pos;
        unsigned type = (unsigned)(p[0] << 8 | p[1]);
        uint32_t ttl = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
        unsigned rdlen = (unsigned)(p[8] << 8 | p[9]);
        if (type == T_SRV && ttl < min)
            min = ttl;
        pos += 10 + rdlen;
    }
    return min;
}

struct srvq {
    struct dquery *q;
    bool direct_tls;
};

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct srvq *sq = arg;
    struct dquery *q = sq->q;
    bool direct = sq->direct_tls;
    free(sq);
    q->pending--;
    if (status == ARES_ETIMEOUT)
        q->timed_out = true;
    struct ares_srv_reply *rep = NULL;
    if (status == ARES_SUCCESS && !q->cancelled && ares_parse_srv_reply(abuf, alen, &rep) == 0) {
        uint32_t ttl = srv_min_ttl(abuf, alen);
        if (ttl < q->min_ttl)
            q->min_ttl = ttl;
        for (struct ares_srv_reply *r = rep; r; r = r->next) {
            if (strcmp(r->host, ".") == 0 || r->host[0] == '\0') {
                q->dot = true;
                continue;
            }
            if (q->nsrv == DNS_MAX_SRV)
                break;
            struct srv *s = &q->srv[q->nsrv++];
            s->host = xstrdup(r->host);
            s->port = r->port;
            s->prio = r->priority;
            s->weight = r->weight;
            s->direct_tls = direct;
        }
        ares_free_data(rep);
    }
    if (q->pending > 0)
        return;
    if (q->cancelled || q->d->freeing) {
        finish(q, ERR_CLOSED);
        return;
    }
    if (q->nsrv == 0) {
        if (q->dot) {
            finish(q, ERR_NOTFOUND);
            return;
        }
        /* No SRV: the domain itself on the default port (RFC 6120 §3.2.2). */
        q->srv[0].host = xstrdup(q->name);
        q->srv[0].port = q->port;
        q->nsrv = 1;
    }
    order_srv(q);
    resolve_hosts(q);
}

void *s2s_dns_resolve(struct s2s_dns *d, const char *name, int port, int srv,
                      void (*cb)(void *arg, int err, struct s2s_target *targets, size_t n),
                      void *arg)
{
    struct dquery *q = xcalloc(1, sizeof(*q));
    q->d = d;
    q->cb = cb;
    q->arg = arg;
    q->name = xstrdup(name);
    q->port = port;
    q->min_ttl = DNS_CACHE_MAX_S;
    struct buf k = BUF_INIT;
    buf_printf(&k, "%s %d %d", name, port, srv);
    q->ckey = buf_detach(&k, NULL);
    q->next = d->queries;
    if (d->queries)
        d->queries->prev = q;
    d->queries = q;
    struct centry *c = htab_get_str(d->cache, q->ckey);
    if (c != NULL && c->expires > uv_now(d->loop)) {
        q->result = xmemdup(c->t, c->n * sizeof(*c->t));
        q->nresult = c->n;
        finish(q, 0);
        return q;
    }
    if (c != NULL)
        centry_free(htab_del_str(d->cache, q->ckey));
    if (!srv) {
        q->srv[0].host = xstrdup(name);
        q->srv[0].port = port;
        q->nsrv = 1;
        resolve_hosts(q);
        return q;
    }
    static const char *const prefixes[2] = {"_xmpps-server._tcp.", "_xmpp-server._tcp."};
    q->pending = 2;
    for (int i = 0; i < 2; i++) {
        struct srvq *sq = xcalloc(1, sizeof(*sq));
        sq->q = q;
        sq->direct_tls = i == 0;
        struct buf b = BUF_INIT;
        buf_printf(&b, "%s%s", prefixes[i], name);
        ares_query(d->ch, b.data, C_IN, T_SRV, on_srv, sq);
        buf_free(&b);
    }
    arm_timer(d);
    return q;
}

void s2s_dns_cancel(struct s2s_dns *d, void *handle)
{
    struct dquery *q = handle;
    q->cancelled = true;
    (void)d;
}

void s2s_dns_free(struct s2s_dns *d)
{
    if (d == NULL)
        return;
    d->freeing = true;
    /* Every outstanding query completes with ARES_EDESTRUCTION. */
    ares_destroy(d->ch);
    struct dquery *q = d->queries;
    while (q != NULL) {
        struct dquery *next = q->next;
        query_unlink(q);
        q->cb(q->arg, ERR_CLOSED, NULL, 0);
        query_free(q);
        q = next;
    }
    struct htab_iter it;
    for (htab_iter_init(&it, d->polls); htab_iter_next(&it);) {
        struct dpoll *p = htab_iter_del(&it);
        d->closing_handles++;
        uv_close((uv_handle_t *)&p->h, on_poll_closed);
    }
    htab_free(d->polls);
    htab_free(d->cache);
    d->closing_handles += 2;
    uv_close((uv_handle_t *)&d->timer, on_handle_closed);
    uv_close((uv_handle_t *)&d->deliver, on_handle_closed);
}
