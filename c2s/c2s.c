/*
 * c2s.c - the parley-c2s process: configuration, listeners (SO_REUSEPORT,
 * so several c2s processes share a port), TLS contexts per domain (SNI),
 * the router link, which domains are hosted (from the router's notify),
 * per-IP accounting, the sweep that pings silent clients, and the
 * certificate reload on SIGHUP.
 *
 * Runs on the daemon's loop. The struct c2s is the one object; clients are
 * in c2s_client.c, SASL in c2s_sasl.c, the sm protocol in c2s_sess.c.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "c2s/c2s.h"
#include "c2s/c2s_ipkey.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/tls.h"
#include "storage/storage.h"

static void domain_free(void *p)
{
    struct c2s_domain *d = p;
    tls_ctx_free(d->tls);
    free(d->name);
    free(d);
}

struct c2s *c2s_new(void)
{
    struct c2s *c = xcalloc(1, sizeof(*c));
    c->domains = htab_new(domain_free);
    c->sessions = htab_new(NULL);
    c->ips = htab_new(free);
    return c;
}

struct c2s_domain *c2s_domain_get(struct c2s *c, const char *name)
{
    return htab_get_str(c->domains, name);
}

static struct c2s_domain *domain_add(struct c2s *c, const char *name)
{
    struct c2s_domain *d = htab_get_str(c->domains, name);
    if (d != NULL)
        return d;
    d = xcalloc(1, sizeof(*d));
    d->name = xstrdup(name);
    d->tls_required = c->cfg.tls_required;
    htab_put_str(c->domains, name, d);
    return d;
}

/* ---- configuration ---- */

static int configure_mechs(struct c2s *c, struct config *cfg)
{
    char *copy = xstrdup(c->cfg.mechanisms);
    int rc = 0;
    for (char *save = NULL, *t = strtok_r(copy, " \t\r\n", &save); t != NULL;
         t = strtok_r(NULL, " \t\r\n", &save)) {
        if (strcmp(t, "SCRAM-SHA-1") != 0 && strcmp(t, "SCRAM-SHA-256") != 0 &&
            strcmp(t, "SCRAM-SHA-1-PLUS") != 0 && strcmp(t, "SCRAM-SHA-256-PLUS") != 0 &&
            strcmp(t, "PLAIN") != 0) {
            log_err("%s: <sasl><mechanisms>: unknown mechanism %s", config_file(cfg), t);
            rc = ERR_CONFIG;
            continue;
        }
        if (c->nmechs == sizeof(c->mechs) / sizeof(c->mechs[0]))
            break;
        c->mechs[c->nmechs++] = xstrdup(t);
    }
    free(copy);
    if (rc == 0 && c->nmechs == 0) {
        log_err("%s: <sasl><mechanisms>: none", config_file(cfg));
        rc = ERR_CONFIG;
    }
    return rc;
}

int c2s_configure(struct c2s *c, struct config *cfg)
{
    int rc = configure_mechs(c, cfg);
    for (struct xml_node *t = c->cfg.listen_tcp; t != NULL; t = xml_next(t, NULL, "tcp")) {
        const char *address = NULL, *tls = NULL;
        int port = 0;
        const struct config_entry table[] = {
            CONFIG_STRING("@address", 0, "::", &address),
            CONFIG_INT("@port", CONFIG_REQUIRED, NULL, 1, 65535, &port),
            CONFIG_STRING("@tls", 0, "starttls", &tls),
            CONFIG_END,
        };
        if (config_apply(cfg, t, table) != 0)
            rc = ERR_CONFIG;
        else if (strcmp(tls, "direct") != 0 && strcmp(tls, "starttls") != 0) {
            log_err("%s: <listen><tcp tls='%s'>: direct or starttls", config_file(cfg), tls);
            rc = ERR_CONFIG;
        }
    }
    if (c->cfg.listen_tcp == NULL) {
        log_err("%s: <listen>: no <tcp>: nothing to listen on", config_file(cfg));
        rc = ERR_CONFIG;
    }
    for (struct xml_node *t = c->cfg.tls_cert; t != NULL; t = xml_next(t, NULL, "cert")) {
        const char *domain = NULL, *cert = NULL, *key = NULL;
        const struct config_entry table[] = {
            CONFIG_STRING("@domain", CONFIG_REQUIRED, NULL, &domain),
            CONFIG_PATH("@cert", CONFIG_REQUIRED, NULL, &cert),
            CONFIG_PATH("@key", CONFIG_REQUIRED, NULL, &key),
            CONFIG_END,
        };
        if (config_apply(cfg, t, table) != 0)
            rc = ERR_CONFIG;
    }
    if (c->cfg.tls_cert == NULL) {
        log_err("%s: <tls>: no <cert>", config_file(cfg));
        rc = ERR_CONFIG;
    }
    for (struct xml_node *t = c->cfg.domain; t != NULL; t = xml_next(t, NULL, "domain")) {
        const char *name = NULL;
        bool req = true;
        const struct config_entry table[] = {
            CONFIG_STRING("@name", CONFIG_REQUIRED, NULL, &name),
            CONFIG_BOOL("@tls-required", 0, "yes", &req),
            CONFIG_END,
        };
        if (config_apply(cfg, t, table) != 0)
            rc = ERR_CONFIG;
    }
    return rc;
}

/* ---- TLS ---- */

static SSL_CTX *on_sni(void *arg, const char *name)
{
    struct c2s *c = arg;
    char *prepped = NULL;
    if (jid_prep_domain(name, strlen(name), &prepped, NULL) != 0)
        return NULL;
    struct c2s_domain *d = c2s_domain_get(c, prepped);
    free(prepped);
    return d != NULL ? d->tls : NULL;
}

static int load_tls(struct c2s *c, struct config *cfg)
{
    for (struct xml_node *t = c->cfg.tls_cert; t != NULL; t = xml_next(t, NULL, "cert")) {
        const char *domain = NULL, *cert = NULL, *key = NULL;
        const struct config_entry table[] = {
            CONFIG_STRING("@domain", CONFIG_REQUIRED, NULL, &domain),
            CONFIG_PATH("@cert", CONFIG_REQUIRED, NULL, &cert),
            CONFIG_PATH("@key", CONFIG_REQUIRED, NULL, &key),
            CONFIG_END,
        };
        if (config_apply(cfg, t, table) != 0)
            return ERR_CONFIG;
        char *prepped = NULL;
        if (jid_prep_domain(domain, strlen(domain), &prepped, NULL) != 0) {
            log_err("%s: <tls><cert domain='%s'>: not a domain", config_file(cfg), domain);
            return ERR_CONFIG;
        }
        struct c2s_domain *d = domain_add(c, prepped);
        free(prepped);
        if (d->tls != NULL) {
            log_err("%s: <tls><cert domain='%s'>: given twice", config_file(cfg), domain);
            return ERR_CONFIG;
        }
        if (tls_server_ctx_new(cert, key, NULL, &d->tls) != 0)
            return ERR_CONFIG;
        /* Resumption by tickets only: a server-side session cache would
         * hold every TLS 1.2 client's session for minutes; one TLS 1.3
         * ticket per handshake is enough for a client to come back. */
        SSL_CTX_set_session_cache_mode(d->tls, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_num_tickets(d->tls, 1);
        /* XEP-0368: direct TLS clients ask for "xmpp-client" by ALPN. */
        static const char *const alpn[] = {"xmpp-client"};
        tls_ctx_set_alpn(d->tls, 1, alpn, 1);
        if (c->tls_default == NULL) {
            /* The first certificate is the one for clients without SNI;
             * the others are chosen by name. */
            c->tls_default = d->tls;
            SSL_CTX_up_ref(d->tls);
            tls_ctx_set_sni(c->tls_default, on_sni, c);
        }
    }
    for (struct xml_node *t = c->cfg.domain; t != NULL; t = xml_next(t, NULL, "domain")) {
        const char *name = NULL;
        bool req = true;
        const struct config_entry table[] = {
            CONFIG_STRING("@name", CONFIG_REQUIRED, NULL, &name),
            CONFIG_BOOL("@tls-required", 0, "yes", &req),
            CONFIG_END,
        };
        config_apply(cfg, t, table);
        char *prepped = NULL;
        if (jid_prep_domain(name, strlen(name), &prepped, NULL) != 0) {
            log_err("%s: <domain name='%s'>: not a domain", config_file(cfg), name);
            return ERR_CONFIG;
        }
        domain_add(c, prepped)->tls_required = req;
        free(prepped);
    }
    return 0;
}

/*
 * SIGHUP: the certificates and keys are read again from the files the
 * configuration named at start (the configuration file itself is not
 * reread). load_tls builds them into a scratch struct, so a certificate
 * that does not load leaves every context in use untouched; only when all
 * loaded are they swapped in. Connections keep the context they started
 * with (an SSL holds a reference); new handshakes get the new ones.
 */
void c2s_reload(struct c2s *c, struct config *cfg)
{
    struct c2s tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.cfg = c->cfg;
    tmp.domains = htab_new(domain_free);
    if (load_tls(&tmp, cfg) != 0) {
        log_err("SIGHUP: certificates not reloaded: serving with the old ones (each must load; "
                "a reload reads them as the user c2s runs as, inside any chroot, so they must "
                "be readable by it, e.g. the key root:<c2s group> 0640; otherwise restart the "
                "c2s instances one by one)");
        tls_ctx_free(tmp.tls_default);
        htab_free(tmp.domains);
        return;
    }
    size_t n = 0;
    struct htab_iter it;
    for (htab_iter_init(&it, tmp.domains); htab_iter_next(&it);) {
        struct c2s_domain *nd = it.val;
        if (nd->tls == NULL)
            continue;
        struct c2s_domain *d = domain_add(c, nd->name);
        tls_ctx_free(d->tls);
        d->tls = nd->tls;
        nd->tls = NULL;
        n++;
    }
    tls_ctx_free(c->tls_default);
    c->tls_default = tmp.tls_default;
    tls_ctx_set_sni(c->tls_default, on_sni, c);
    htab_free(tmp.domains);
    log_notice("SIGHUP: %zu certificate%s reloaded", n, n == 1 ? "" : "s");
}

/* ---- open files ---- */

/* Every client is one descriptor; the rest (listeners, the router link,
 * the database pool, logs, Cyrus's files) fit in this reserve. */
#define C2S_FD_RESERVE 128

/* Raise RLIMIT_NOFILE to what max-connections needs: the hard limit too
 * when privileged, else the soft one as far as the hard one allows. */
static void fd_raise(const struct c2s *c)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)c->cfg.max_conns + C2S_FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    struct rlimit want = {need, rl.rlim_max};
    if (want.rlim_max != RLIM_INFINITY && want.rlim_max < need)
        want.rlim_max = need;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0)
        return;
    want.rlim_max = rl.rlim_max;
    if (want.rlim_max != RLIM_INFINITY && want.rlim_cur > want.rlim_max)
        want.rlim_cur = want.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) != 0)
        log_warn("setrlimit NOFILE: %s", strerror(errno));
}

/* After the jail (which may have set <max-open-files>): the limit in
 * force must hold max-connections, or we refuse to start rather than
 * fail accepts (and spin) under load. */
static int fd_check(const struct c2s *c)
{
    fd_raise(c);
    struct rlimit rl;
    rlim_t need = (rlim_t)c->cfg.max_conns + C2S_FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_err("getrlimit NOFILE: %s", strerror(errno));
        return ERR_SYS;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        log_err("limits/max-connections %d needs %llu open files (%d more for the rest), but "
                "RLIMIT_NOFILE allows %llu: lower max-connections, or raise the limit "
                "(<max-open-files>, or the hard limit: ulimit -Hn)",
                c->cfg.max_conns, (unsigned long long)need, C2S_FD_RESERVE,
                (unsigned long long)rl.rlim_cur);
        return ERR_CONFIG;
    }
    return 0;
}

/* ---- listeners ---- */

/* Counts one event; true when it is time to log (then *n is the count
 * since the last line, this one included). */
static bool warn_due(struct c2s *c, struct c2s_warn_rate *w, unsigned long long *n)
{
    uint64_t now = uv_now(c->loop);
    w->count++;
    if (w->warned != 0 && now - w->warned < C2S_ACCEPT_WARN_MS)
        return false;
    *n = (unsigned long long)w->count;
    w->count = 0;
    w->warned = now;
    return true;
}

void c2s_accept_failed(struct c2s *c, const char *where, const char *why)
{
    /* Out of descriptors, this fires for every pending connection: one
     * line per C2S_ACCEPT_WARN_MS, with the count of those not logged. */
    unsigned long long n;
    if (warn_due(c, &c->accept_warn, &n))
        log_warn("%s: accept failed: %s (%llu failures since the last warning)", where, why, n);
}

void c2s_peerless(struct c2s *c, const char *where, const char *why)
{
    /* Its own limiter and count: a burst of resets must not hide (or be
     * hidden by) running out of descriptors. */
    unsigned long long n;
    if (warn_due(c, &c->peer_warn, &n))
        log_warn("%s: connection dropped: %s (%llu dropped since the last warning)", where, why, n);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct c2s_listener *l = server->data;
    if (status < 0) {
        c2s_accept_failed(l->c2s, l->desc, uv_strerror(status));
        return;
    }
    c2s_client_accept(l->c2s, l);
}

/* A listening socket with SO_REUSEPORT (libuv 1.44 sets it only on the
 * BSDs), so every c2s process binds the same port and the kernel spreads
 * new connections over them. */
static int listen_one(struct c2s *c, const char *address, int port, bool direct)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    bool v6 = strchr(address, ':') != NULL;
    if ((v6 ? uv_ip6_addr(address, port, (struct sockaddr_in6 *)&ss)
            : uv_ip4_addr(address, port, (struct sockaddr_in *)&ss)) != 0) {
        log_err("<listen><tcp address='%s'>: not an IPv4 or IPv6 address", address);
        return ERR_CONFIG;
    }
    struct c2s_listener *l = xcalloc(1, sizeof(*l));
    l->c2s = c;
    l->direct_tls = direct;
    snprintf(l->desc, sizeof(l->desc), "tcp:%s%s%s:%d%s", v6 ? "[" : "", address, v6 ? "]" : "",
             port, direct ? " (direct TLS)" : "");
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        log_err("%s: socket: %s", l->desc, strerror(errno));
        free(l);
        return ERR_SYS;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (v6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss,
             v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) != 0) {
        log_err("%s: bind: %s", l->desc, strerror(errno));
        close(fd);
        free(l);
        return ERR_SYS;
    }
    uv_tcp_init(c->loop, &l->tcp);
    l->tcp.data = l;
    l->next = c->listeners;
    c->listeners = l;
    int rc = uv_tcp_open(&l->tcp, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
    if (rc != 0) {
        log_err("%s: %s", l->desc, uv_strerror(rc));
        return ERR_SYS;
    }
    log_info("listening on %s", l->desc);
    return 0;
}

int c2s_listen(struct c2s *c, uv_loop_t *loop, struct config *cfg)
{
    c->loop = loop;
    fd_raise(c);
    stream_opts_default(&c->sopts);
    c->sopts.handshake_ms = c->cfg.handshake_ms;
    c->sopts.idle_ms = c->cfg.idle_ms;
    c->sopts.read_cap = 4096;
    /* Before SASL success a client gets the small element limit; it is
     * raised at the restart after authentication (stream_set_limits). */
    c->sopts.limits.max_stanza_bytes = c->cfg.preauth_stanza_size;
    c->sopts.limits.max_text_len = c->cfg.preauth_stanza_size;
    c->sopts.limits.max_tree_bytes = 4 * c->cfg.preauth_stanza_size;
    c->sopts.limits.max_depth = 16;
    /* A client that reads nothing may make us queue no more than this. */
    c->sopts.out_high = 128 * 1024;
    c->sopts.out_low = 32 * 1024;
    c->sopts.out_max = 512 * 1024 + c->cfg.stanza_size;
    /* Most clients are idle most of the time: after a few quiet seconds
     * their parser is freed (~13 KB each) and rebuilt on the next byte. */
    c->sopts.hibernate_ms = 3000;
    int rc = load_tls(c, cfg);
    if (rc != 0)
        return rc;
    for (struct xml_node *t = c->cfg.listen_tcp; t != NULL; t = xml_next(t, NULL, "tcp")) {
        const char *address = xml_get_attr(t, "address");
        const char *tls = xml_get_attr(t, "tls");
        int port = atoi(xml_get_attr(t, "port"));
        rc = listen_one(c, address != NULL ? address : "::", port,
                        tls != NULL && strcmp(tls, "direct") == 0);
        if (rc != 0)
            return rc;
    }
    return c2s_sasl_init(c);
}

/* ---- per-IP accounting ---- */

void c2s_ip_key(struct c2s *c, struct c2s_client *cl)
{
    cl->ipkeylen =
        (unsigned char)c2s_ipkey_make(cl->ip, cl->iplen, (unsigned)c->cfg.ipv6_prefix, cl->ipkey);
    /* A full table takes no new address: unknown ones share one bucket (a
     * key no address has), so memory stays bounded under a spray of
     * addresses while known ones keep their own accounts. */
    if (cl->ipkeylen == 0 || (htab_count(c->ips) >= (size_t)c->cfg.ip_table_size &&
                              htab_get(c->ips, cl->ipkey, cl->ipkeylen) == NULL)) {
        cl->ipkey[0] = 0;
        cl->ipkeylen = 1;
    }
}

struct c2s_ip *c2s_ip_get(struct c2s *c, const struct c2s_client *cl)
{
    struct c2s_ip *ip = htab_get(c->ips, cl->ipkey, cl->ipkeylen);
    if (ip == NULL) {
        ip = xcalloc(1, sizeof(*ip));
        ip->tokens = 2.0 * c->cfg.connect_rate;
        ip->stamp = uv_now(c->loop);
        htab_put(c->ips, cl->ipkey, cl->ipkeylen, ip);
    }
    return ip;
}

/* Forget addresses with no connection whose buckets are full again and
 * whose failures have decayed, so the table holds only active peers. */
static void ips_gc(struct c2s *c, uint64_t now)
{
    struct htab_iter it;
    for (htab_iter_init(&it, c->ips); htab_iter_next(&it);) {
        struct c2s_ip *ip = it.val;
        if (ip->conns == 0 && now - ip->stamp > 2000 &&
            (ip->failures == 0 || now - ip->fail_stamp > 8 * c->cfg.auth_delay_max_ms))
            free(htab_iter_del(&it));
    }
}

/* ---- the router ---- */

int c2s_send_raw(struct c2s *c, const void *p, size_t len)
{
    return c->comp != NULL ? component_send_raw(c->comp, p, len) : ERR_CLOSED;
}

static void on_ready(struct component *comp, void *arg)
{
    struct c2s *c = arg;
    (void)comp;
    if (!c->ready_logged) {
        c->ready_logged = true;
        log_info("c2s ready");
    } else {
        log_notice("connected to the router again");
    }
}

static void on_down(struct component *comp, void *arg)
{
    struct c2s *c = arg;
    (void)comp;
    log_warn("lost the router: closing every client stream");
    c->sm_up = false;
    struct htab_iter it;
    for (htab_iter_init(&it, c->domains); htab_iter_next(&it);)
        ((struct c2s_domain *)it.val)->up = false;
    /* Nothing can be delivered any more (sm/SESSION.md, Liveness). */
    for (struct c2s_client *cl = c->clients, *next; cl != NULL; cl = next) {
        next = cl->next;
        c2s_client_fail(cl, XML_SE_INTERNAL_SERVER_ERROR, "the router is gone");
    }
}

/*
 * The router's notify tells a name's owner, but common/component passes
 * only the name and state. So a notified name is a hosted domain unless it
 * is a component name: the sm's, and the c2s and s2s instances'.
 */
static void on_notify(struct component *comp, void *arg, const char *name, const char *owner,
                      int up)
{
    struct c2s *c = arg;
    (void)comp;
    if (strcmp(name, c->cfg.sm_name) == 0) {
        c->sm_up = up;
        log_info("sm %s is %s", name, up ? "up" : "down");
        return;
    }
    /* A hosted domain is a name the sm bound; anything else (a component's
     * name or domain, another c2s) is not ours to serve. */
    if (strcmp(owner, c->cfg.sm_name) != 0)
        return;
    char *prepped = NULL;
    if (jid_prep_domain(name, strlen(name), &prepped, NULL) != 0)
        return;
    struct c2s_domain *d = domain_add(c, prepped);
    free(prepped);
    bool was_up = d->up;
    if (d->up != (up != 0))
        log_info("domain %s is %s", d->name, up ? "up" : "down");
    d->up = up;
    /* The domain's sm is back: re-announce its sessions at once, ahead of
     * any stanza of theirs, rather than only on its announce; otherwise
     * a stanza sent in between reaches an sm that does not know the
     * session yet and gets it kicked. The announce repeats the starts
     * (the sm answers a repeated start with started again). */
    if (up && !was_up)
        c2s_sess_resume(c, d->name, false);
}

static void on_stanza(struct component *comp, void *arg, struct xml_node *el, const char *raw,
                      size_t rawlen)
{
    struct c2s *c = arg;
    (void)comp;
    (void)raw;
    (void)rawlen;
    if (strcmp(el->ns, COMPONENT_NS_ROUTER) == 0 && strcmp(el->name, "route") == 0)
        c2s_sess_from_router(c, el);
    else
        log_debug("ignoring <%s/> from the router", el->name);
    xml_free(el);
}

static void on_bounce(struct component *comp, void *arg, struct xml_node *stanza,
                      const char *route_to, enum component_bounce why)
{
    struct c2s *c = arg;
    (void)comp;
    (void)route_to;
    c2s_sess_bounced(c, stanza,
                     why == COMPONENT_BOUNCE_CONGESTED ? "resource-constraint" : "item-not-found",
                     NULL);
    xml_free(stanza);
}

static void on_comp_close(struct component *comp, void *arg)
{
    struct c2s *c = arg;
    /* Freed here, while the loop still runs its handles' closes. */
    component_free(comp);
    c->comp = NULL;
}

static void on_sweep(uv_timer_t *t)
{
    struct c2s *c = t->data;
    uint64_t now = uv_now(c->loop);
    for (struct c2s_client *cl = c->clients, *next; cl != NULL; cl = next) {
        next = cl->next;
        c2s_client_sweep(cl, now);
    }
    ips_gc(c, now);
}

int c2s_start(struct c2s *c)
{
    static const struct component_cbs cbs = {
        .on_ready = on_ready,
        .on_down = on_down,
        .on_stanza = on_stanza,
        .on_notify = on_notify,
        .on_bounce = on_bounce,
        .on_close = on_comp_close,
    };
    int rc = fd_check(c);
    if (rc == 0)
        rc = c2s_sasl_check_random();
    if (rc != 0)
        return rc;
    struct component_opts o;
    component_opts_default(&o);
    o.name = c->cfg.router_name;
    o.secret = c->cfg.router_secret;
    o.router = c->cfg.router_connect;
    o.internal = 1;
    component_opts_router_max(&o, c->cfg.router_stanza_size);
    if (component_new(c->loop, &o, &cbs, c, &c->comp) != 0)
        return ERR_CONFIG;

    struct storage_opts so = {
        .dsn = c->cfg.db_dsn,
        .password = c->cfg.db_password,
        .pool_size = 2,
        .query_timeout_ms = 5000,
    };
    rc = storage_new(c->loop, &so, &c->st);
    if (rc != 0) {
        log_err("<db><dsn>: not usable");
        return ERR_CONFIG;
    }
    uv_timer_init(c->loop, &c->sweep);
    c->sweep.data = c;
    uint64_t period = c->cfg.ping_ms / 4;
    if (period < 250)
        period = 250;
    if (period > 30000)
        period = 30000;
    uv_timer_start(&c->sweep, on_sweep, period, period);
    return component_start(c->comp);
}

static void on_listener_closed(uv_handle_t *h)
{
    free(h->data);
}

void c2s_stop(struct c2s *c)
{
    if (c->stopping)
        return;
    c->stopping = true;
    for (struct c2s_listener *l = c->listeners, *next; l != NULL; l = next) {
        next = l->next;
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
    }
    c->listeners = NULL;
    /* The sessions end now, not when each client's close completes: the
     * router link closes first, and component_stop writes what is queued. */
    for (struct c2s_client *cl = c->clients, *next; cl != NULL; cl = next) {
        next = cl->next;
        c2s_sess_end(cl);
        c2s_client_fail(cl, XML_SE_SYSTEM_SHUTDOWN, NULL);
    }
    if (c->sweep.data != NULL)
        uv_close((uv_handle_t *)&c->sweep, NULL);
    if (c->comp != NULL)
        component_stop(c->comp);
    storage_free(c->st);
    c->st = NULL;
}

void c2s_stats(struct c2s *c)
{
    struct component_stats cs;
    component_stats(c->comp, &cs);
    log_notice("clients %zu (before auth %zu), sessions %zu, addresses %zu, to router %llu "
               "stanzas",
               c->nclients, c->npreauth, htab_count(c->sessions), htab_count(c->ips),
               (unsigned long long)cs.sent);
}

void c2s_free(struct c2s *c)
{
    if (c == NULL)
        return;
    /* Listeners left by a failed start: the daemon closed their handles. */
    for (struct c2s_listener *l = c->listeners, *next; l != NULL; l = next) {
        next = l->next;
        free(l);
    }
    component_free(c->comp);
    storage_free(c->st);
    c2s_sasl_done();
    tls_ctx_free(c->tls_default);
    htab_free(c->domains);
    htab_free(c->sessions);
    htab_free(c->rounds);
    htab_free(c->ips);
    for (size_t i = 0; i < c->nmechs; i++)
        free(c->mechs[i]);
    free(c);
}
