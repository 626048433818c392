/*
 * s2s.c - the core of parley-s2s: configuration (local domains, TLS
 * contexts, policy, the routes file), the router connection holding the
 * default route, and the dispatch of stanzas between the router and the
 * links (s2s_out.c, s2s_in.c).
 *
 * Local domains are the configured <domain>s plus, with <learn-domains>
 * on, every name with a dot that the router announces up (r:notify): the
 * sm's domains and the components' names. A stanza for a local domain
 * never leaves over s2s, and a peer may only address local domains.
 *
 * Runs on the daemon's loop; struct s2s is owned by main.c.
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include <idna.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/config.h"
#include "common/err.h"
#include "common/jid.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rand.h"
#include "s2s/s2s.h"

#define LOCAL_CONFIGURED ((void *)1)
#define LOCAL_LEARNED    ((void *)2)

struct s2s *s2s_new(struct s2s_config *cfg)
{
    struct s2s *s = xcalloc(1, sizeof(*s));
    s->cfg = cfg;
    s->local = htab_new(NULL);
    s->out = htab_new(NULL);
    s->bidi = htab_new(NULL);
    s->in_by_serial = htab_new(NULL);
    s->per_ip = htab_new(NULL);
    s->next_serial = 1;
    s->default_policy.require_tls = true;
    s->default_policy.dialback = true;
    return s;
}

/* ---- configuration ---- */

static int load_policies(struct s2s *s, struct config *c)
{
    for (struct xml_node *n = s->cfg->policies; n; n = xml_next(n, NULL, "policy")) {
        struct s2s_policy p = s->default_policy;
        const char *domain = NULL;
        const struct config_entry t[] = {
            CONFIG_STRING("@domain", 0, NULL, &domain),
            CONFIG_BOOL("@deny", 0, "false", &p.deny),
            CONFIG_BOOL("@require-tls", 0, "true", &p.require_tls),
            CONFIG_BOOL("@require-valid-cert", 0, "false", &p.require_cert),
            CONFIG_BOOL("@dialback", 0, "true", &p.dialback),
            CONFIG_END,
        };
        if (config_apply(c, n, t) != 0)
            return ERR_CONFIG;
        if (domain == NULL) {
            s->default_policy = p;
            continue;
        }
        char dom[S2S_DOMAIN_MAX + 1];
        if (s2s_db_domain_prep(domain, dom) != 0) {
            log_err("<policy domain='%s'>: not a domain name", domain);
            return ERR_CONFIG;
        }
        p.domain = xstrdup(dom);
        s->policies = xreallocarray(s->policies, s->npolicies + 1, sizeof(*s->policies));
        s->policies[s->npolicies++] = p;
    }
    return 0;
}

static int load_domains(struct s2s *s, struct config *c)
{
    for (struct xml_node *n = s->cfg->domains; n; n = xml_next(n, NULL, "domain")) {
        const char *d = xml_text(n, NULL);
        char dom[S2S_DOMAIN_MAX + 1];
        if (s2s_db_domain_prep(d, dom) != 0) {
            log_err("<domain>%s</domain>: not a domain name", d);
            return ERR_CONFIG;
        }
        htab_set(s->local, dom, strlen(dom), LOCAL_CONFIGURED);
    }
    return 0;
}

static int load_certs(struct s2s *s, struct config *c)
{
    for (struct xml_node *n = s->cfg->certs; n; n = xml_next(n, NULL, "cert")) {
        struct s2s_cert ce = {0};
        const struct config_entry t[] = {
            CONFIG_STRING("@domain", CONFIG_REQUIRED, NULL, &ce.domain),
            CONFIG_PATH("@cert", CONFIG_REQUIRED, NULL, &ce.cert),
            CONFIG_PATH("@key", CONFIG_REQUIRED, NULL, &ce.key),
            CONFIG_END,
        };
        if (config_apply(c, n, t) != 0)
            return ERR_CONFIG;
        s->certs = xreallocarray(s->certs, s->ncerts + 1, sizeof(*s->certs));
        s->certs[s->ncerts++] = ce;
    }
    return 0;
}

int s2s_configure(struct s2s *s, struct config *c)
{
    int rc = load_domains(s, c);
    if (rc == 0)
        rc = load_certs(s, c);
    if (rc == 0)
        rc = load_policies(s, c);
    if (rc == 0 && s->cfg->routes_file != NULL)
        rc = s2s_routes_load(s->cfg->routes_file, &s->routes);
    if (rc == 0 && s->routes == NULL)
        s->routes = htab_new(s2s_routes_free_route);
    return rc;
}

/* Peers that present a certificate get it checked (SASL EXTERNAL); its
 * chain is judged afterwards (tls_peer_verify), never during the
 * handshake, so that peers without a valid one can still use dialback. */
static int on_verify_any(int ok, X509_STORE_CTX *ctx)
{
    (void)ok;
    (void)ctx;
    return 1;
}

static SSL_CTX *on_sni(void *arg, const char *name)
{
    struct s2s *s = arg;
    char dom[S2S_DOMAIN_MAX + 1];
    if (s2s_db_domain_prep(name, dom) != 0)
        return NULL;
    return s2s_server_ctx(s, dom);
}

/* Client contexts come in pairs: for STARTTLS, and for direct TLS
 * (XEP-0368), which offers the ALPN protocol "xmpp-server". */
static int client_ctx_pair(struct s2s *s, const char *cert, const char *key, SSL_CTX **plain,
                           SSL_CTX **direct)
{
    static const char *const alpn[] = {"xmpp-server"};
    int rc = tls_client_ctx_new(s->cfg->ca_file, 0, cert, key, plain);
    if (rc == 0)
        rc = tls_client_ctx_new(s->cfg->ca_file, 0, cert, key, direct);
    if (rc == 0)
        rc = tls_ctx_set_alpn(*direct, 0, alpn, 1);
    return rc;
}

static int tls_setup(struct s2s *s)
{
    int rc = client_ctx_pair(s, NULL, NULL, &s->client_anon, &s->client_anon_direct);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < s->ncerts; i++) {
        struct s2s_cert *ce = &s->certs[i];
        rc = tls_server_ctx_new(ce->cert, ce->key, NULL, &ce->server);
        if (rc == 0)
            rc = client_ctx_pair(s, ce->cert, ce->key, &ce->client, &ce->client_direct);
        if (rc != 0)
            return rc;
        SSL_CTX *sv = ce->server;
        int ok = s->cfg->ca_file ? SSL_CTX_load_verify_locations(sv, s->cfg->ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(sv);
        if (ok != 1) {
            tls_log_errors("CA store");
            return ERR_CONFIG;
        }
        /* The peer's certificate says who it is, whichever way the
         * connection goes: servers commonly carry serverAuth-only
         * certificates, which the default purpose for a client
         * (ssl_client) would refuse. Chain and name are still checked. */
        if (SSL_CTX_set_purpose(sv, X509_PURPOSE_ANY) != 1 ||
            SSL_CTX_set_purpose(ce->client, X509_PURPOSE_ANY) != 1 ||
            SSL_CTX_set_purpose(ce->client_direct, X509_PURPOSE_ANY) != 1) {
            tls_log_errors("certificate purpose");
            return ERR_CONFIG;
        }
        SSL_CTX_set_verify(sv, SSL_VERIFY_PEER, on_verify_any);
        tls_ctx_set_sni(sv, on_sni, s);
    }
    return 0;
}

int s2s_listen(struct s2s *s, uv_loop_t *loop)
{
    s->loop = loop;
    int rc = tls_setup(s);
    if (rc != 0)
        return rc;
    rc = s2s_dns_new(loop, s->cfg->dns_ms, s->cfg->dns_servers, &s->dns);
    if (rc != 0)
        return rc;
    return s2s_in_listen(s);
}

/* ---- lookups ---- */

int s2s_is_local(const struct s2s *s, const char *domain)
{
    return htab_get_str(s->local, domain) != NULL;
}

const struct s2s_policy *s2s_policy_for(const struct s2s *s, const char *domain)
{
    for (size_t i = 0; i < s->npolicies; i++)
        if (strcmp(s->policies[i].domain, domain) == 0)
            return &s->policies[i];
    return &s->default_policy;
}

/* The certificate entry for a local domain: its own, else one for a parent
 * domain (a wildcard certificate), else the first. */
static struct s2s_cert *cert_for(struct s2s *s, const char *local)
{
    struct s2s_cert *best = NULL;
    size_t best_len = 0, ll = strlen(local);
    for (size_t i = 0; i < s->ncerts; i++) {
        const char *d = s->certs[i].domain;
        size_t dl = strlen(d);
        if (strcmp(d, local) == 0)
            return &s->certs[i];
        if (ll > dl && local[ll - dl - 1] == '.' && strcmp(local + ll - dl, d) == 0 &&
            dl > best_len) {
            best = &s->certs[i];
            best_len = dl;
        }
    }
    if (best == NULL && s->ncerts > 0)
        best = &s->certs[0];
    return best;
}

int s2s_ace(const char *domain, char *out)
{
    char *a = NULL;
    if (idna_to_ascii_8z(domain, &a, 0) != IDNA_SUCCESS) {
        free(a);
        return ERR_INVAL;
    }
    size_t n = strlen(a);
    int rc = n > 0 && n <= S2S_ACE_MAX ? 0 : ERR_INVAL;
    if (rc == 0)
        memcpy(out, a, n + 1);
    free(a);
    return rc;
}

SSL_CTX *s2s_client_ctx(struct s2s *s, const char *local, bool direct)
{
    struct s2s_cert *ce = cert_for(s, local);
    if (ce != NULL)
        return direct ? ce->client_direct : ce->client;
    return direct ? s->client_anon_direct : s->client_anon;
}

SSL_CTX *s2s_server_ctx(struct s2s *s, const char *local)
{
    struct s2s_cert *ce = cert_for(s, local);
    return ce ? ce->server : NULL;
}

void s2s_rens(struct xml_node *n, const char *from_ns, const char *to_ns)
{
    if (n->type != XML_ELEM || strcmp(n->ns, from_ns) != 0)
        return;
    n->ns = to_ns;
    for (struct xml_node *c = n->children; c; c = c->next)
        s2s_rens(c, from_ns, to_ns);
}

/* ---- stanzas ---- */

static int is_stanza(const struct xml_node *st)
{
    return strcmp(st->name, "message") == 0 || strcmp(st->name, "presence") == 0 ||
           strcmp(st->name, "iq") == 0;
}

/* The prepped domain of a JID attribute into buf; ERR_INVAL if absent/bad. */
static int attr_domain(const struct xml_node *st, const char *attr, char *buf)
{
    const char *v = xml_get_attr(st, attr);
    if (v == NULL)
        return ERR_INVAL;
    struct jid *j = NULL;
    if (jid_parse(v, strlen(v), &j) != 0)
        return ERR_INVAL;
    int rc = j->domain_len <= S2S_DOMAIN_MAX ? 0 : ERR_LIMIT;
    if (rc == 0)
        memcpy(buf, j->domain, j->domain_len + 1);
    jid_free(j);
    return rc;
}

enum xml_stream_err s2s_stanza_domains(const struct xml_node *st, char *from, char *to)
{
    if (attr_domain(st, "from", from) != 0)
        return XML_SE_INVALID_FROM;
    if (attr_domain(st, "to", to) != 0)
        return XML_SE_IMPROPER_ADDRESSING;
    return XML_SE_NONE;
}

char *s2s_pair_key(const char *local, const char *remote)
{
    size_t ll = strlen(local), rl = strlen(remote);
    char *key = xmalloc(ll + rl + 2);
    memcpy(key, local, ll);
    key[ll] = ' ';
    memcpy(key + ll + 1, remote, rl + 1);
    return key;
}

void s2s_bounce(struct s2s *s, struct xml_node *st, enum xml_stanza_err cond, const char *why)
{
    /* Nothing answers an error or an iq result (RFC 6120 §8.3.1, §8.2.3). */
    const char *type = xml_get_attr(st, "type");
    if (strcmp(st->name, "presence") == 0 ||
        (type && (strcmp(type, "error") == 0 || strcmp(type, "result") == 0)) ||
        xml_make_error(st, cond, NULL, why) != 0) {
        xml_free(st);
        return;
    }
    s->stats_bounced++;
    char to[S2S_DOMAIN_MAX + 1], from[S2S_DOMAIN_MAX + 1];
    if (attr_domain(st, "to", to) != 0 || attr_domain(st, "from", from) != 0) {
        xml_free(st);
        return;
    }
    if (s2s_is_local(s, to)) {
        s2s_deliver_local(s, st);
        return;
    }
    /* An error for a remote sender (a stanza a peer sent us that the
     * router could not take) goes back over s2s, if from is ours. */
    if (s2s_is_local(s, from))
        s2s_out_send(s, from, to, st);
    else
        xml_free(st);
}

/* A peer's iq result (its payload removed) that did not fit the router:
 * not answered (RFC 6120 §8.2.3), but its local requester, who would wait
 * in vain, gets policy-violation (modify) from the peer's entity in its
 * place, as the sm does for its own results. Takes st. */
static void result_too_large(struct s2s *s, struct xml_node *st)
{
    const char *from = xml_get_attr(st, "from");
    const char *to = xml_get_attr(st, "to");
    if (from == NULL || to == NULL) {
        xml_free(st);
        return;
    }
    /* xml_make_error swaps them: from the peer's entity to the requester. */
    xml_set_attr(st, "from", to);
    xml_set_attr(st, "to", from);
    if (xml_make_error(st, XML_STE_POLICY_VIOLATION, "modify", "stanza too large for the router") ==
            0 &&
        component_send(s->router, st) == 0)
        s->stats_bounced++;
    xml_free(st);
}

void s2s_deliver_local(struct s2s *s, struct xml_node *st)
{
    s2s_rens(st, XML_NS_SERVER, XML_NS_COMPONENT);
    s->stats_in++;
    int rc = component_send(s->router, st);
    if (rc == ERR_LIMIT) {
        /* Within our <stanza-size> as received but larger re-serialised
         * (escaping, namespace declarations): the router would end this
         * link for it. policy-violation (modify), as the c2s and the sm
         * answer it, without the payload, which is what did not fit. */
        while (st->children != NULL)
            xml_detach(st->children);
        const char *type = xml_get_attr(st, "type");
        if (strcmp(st->name, "iq") == 0 && type != NULL && strcmp(type, "result") == 0) {
            result_too_large(s, st);
            return;
        }
        s2s_rens(st, XML_NS_COMPONENT, XML_NS_SERVER);
        s2s_bounce(s, st, XML_STE_POLICY_VIOLATION, "stanza too large for the router");
        return;
    }
    if (rc != 0)
        log_info("router connection stopped: stanza dropped");
    xml_free(st);
}

/* A stanza from the router, for a remote domain. */
static void from_router(struct s2s *s, struct xml_node *st)
{
    char to[S2S_DOMAIN_MAX + 1], from[S2S_DOMAIN_MAX + 1];
    if (!is_stanza(st)) {
        log_info("unexpected <%s/> from the router", st->name);
        xml_free(st);
        return;
    }
    if (attr_domain(st, "to", to) != 0) {
        s2s_bounce(s, st, XML_STE_JID_MALFORMED, NULL);
        return;
    }
    if (attr_domain(st, "from", from) != 0 || !s2s_is_local(s, from)) {
        /* The router only lets local senders reach the default route with
         * a local from; anything else is a config mismatch. */
        log_warn("stanza to %s from a domain that is not local (%s): refused", to,
                 xml_get_attr(st, "from") ? xml_get_attr(st, "from") : "none");
        s2s_bounce(s, st, XML_STE_NOT_ALLOWED, "sender domain not served by s2s");
        return;
    }
    if (s2s_is_local(s, to)) {
        s2s_bounce(s, st, XML_STE_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    if (s2s_policy_for(s, to)->deny) {
        s2s_bounce(s, st, XML_STE_REMOTE_SERVER_NOT_FOUND, "federation with this domain is off");
        return;
    }
    s2s_rens(st, XML_NS_COMPONENT, XML_NS_SERVER);
    s2s_rens(st, XML_NS_CLIENT, XML_NS_SERVER);
    s->stats_out++;
    s2s_out_send(s, from, to, st);
}

static void on_ready(struct component *c, void *arg)
{
    struct s2s *s = arg;
    if (!s->ready_logged) {
        s->ready_logged = true;
        log_info("s2s ready");
    } else {
        log_notice("router connection back");
    }
}

static void on_down(struct component *c, void *arg)
{
    log_warn("router connection lost");
}

static void on_stanza(struct component *c, void *arg, struct xml_node *st, const char *raw,
                      size_t rawlen)
{
    struct s2s *s = arg;
    if (strcmp(st->ns, COMPONENT_NS_ROUTER) == 0) {
        /* r:route envelopes are not for s2s; others are answered by the
         * component itself. */
        log_debug("router element <r:%s/> ignored", st->name);
        xml_free(st);
        return;
    }
    from_router(s, st);
}

static void on_bind_result(struct component *c, void *arg, const char *domain, int err)
{
    /* Without the default route nothing reaches s2s: say so loudly; the
     * component binds again after its next reconnect. */
    if (err != 0)
        log_err("could not take the router's default route: %s", err_str(err));
}

static void on_notify(struct component *c, void *arg, const char *name, const char *owner, int up)
{
    /* A name the router routes is served here, so peers may address it,
     * whoever owns it: the sm's domains and external components' domains
     * (a MUC service) alike. Only names with a dot: internal component
     * names (sm, c2s-1) are router addresses for internal senders, never
     * for peers. */
    (void)owner;
    struct s2s *s = arg;
    char dom[S2S_DOMAIN_MAX + 1];
    if (!s->cfg->learn || strchr(name, '.') == NULL || s2s_db_domain_prep(name, dom) != 0)
        return;
    if (htab_get_str(s->local, dom) == LOCAL_CONFIGURED)
        return;
    if (up) {
        htab_set(s->local, dom, strlen(dom), LOCAL_LEARNED);
        log_debug("local domain %s (from the router)", dom);
    } else {
        htab_del_str(s->local, dom);
        log_debug("domain %s gone from the router", dom);
    }
}

static void on_bounce(struct component *c, void *arg, struct xml_node *st, const char *route_to,
                      enum component_bounce why)
{
    struct s2s *s = arg;
    if (route_to != NULL) {
        xml_free(st);
        return;
    }
    /* A stanza from a peer the router could not take: the error goes back
     * to the peer. */
    s2s_rens(st, XML_NS_COMPONENT, XML_NS_SERVER);
    s2s_bounce(s, st,
               why == COMPONENT_BOUNCE_EXPIRED ? XML_STE_REMOTE_SERVER_TIMEOUT
                                               : XML_STE_SERVICE_UNAVAILABLE,
               NULL);
}

static void on_close(struct component *c, void *arg)
{
    struct s2s *s = arg;
    component_free(c);
    s->router = NULL;
}

static const struct component_cbs router_cbs = {
    .on_ready = on_ready,
    .on_down = on_down,
    .on_stanza = on_stanza,
    .on_bind_result = on_bind_result,
    .on_notify = on_notify,
    .on_bounce = on_bounce,
    .on_close = on_close,
};

int s2s_start(struct s2s *s)
{
    static const struct component_bind def = {.domain = NULL, .is_default = 1};
    if (s->cfg->dialback_secret != NULL && *s->cfg->dialback_secret != '\0') {
        s2s_db_secret(s->cfg->dialback_secret, strlen(s->cfg->dialback_secret), s->db_key);
    } else {
        /* Keys then change on restart: links being set up at that moment
         * fail dialback once and are retried. */
        log_warn("no <dialback-secret>: using a random one for this run");
        rand_bytes(s->db_key, sizeof(s->db_key));
    }
    struct component_opts o;
    component_opts_default(&o);
    o.name = s->cfg->router_name;
    o.secret = s->cfg->router_secret;
    o.router = s->cfg->router_connect;
    o.internal = 1;
    o.binds = &def;
    o.nbinds = 1;
    component_opts_router_max(&o, s->cfg->router_stanza_size);
    int rc = component_new(s->loop, &o, &router_cbs, s, &s->router);
    if (rc == 0)
        rc = component_start(s->router);
    return rc;
}

void s2s_stop(struct s2s *s)
{
    s->stopping = true;
    for (size_t i = 0; i < s->nlisteners; i++)
        if (!uv_is_closing((uv_handle_t *)&s->listeners[i]))
            uv_close((uv_handle_t *)&s->listeners[i], NULL);
    s2s_in_close_all(s);
    s2s_out_close_all(s);
    if (s->dns != NULL) {
        s2s_dns_free(s->dns);
        s->dns = NULL;
    }
    if (s->router != NULL)
        component_stop(s->router);
}

void s2s_reload(struct s2s *s)
{
    if (s->cfg->routes_file == NULL)
        return;
    struct htab *t;
    if (s2s_routes_load(s->cfg->routes_file, &t) != 0) {
        log_err("routes file %s not reloaded: keeping %zu routes", s->cfg->routes_file,
                htab_count(s->routes));
        return;
    }
    htab_free(s->routes);
    s->routes = t;
    log_notice("routes reloaded: %zu", htab_count(t));
}

void s2s_log_stats(struct s2s *s)
{
    log_notice("stanzas in %llu out %llu bounced %llu; links out %zu, streams in %zu",
               (unsigned long long)s->stats_in, (unsigned long long)s->stats_out,
               (unsigned long long)s->stats_bounced, s2s_out_count(s), s->nin);
}

void s2s_free(struct s2s *s)
{
    if (s == NULL)
        return;
    component_free(s->router);
    for (size_t i = 0; i < s->ncerts; i++) {
        tls_ctx_free(s->certs[i].server);
        tls_ctx_free(s->certs[i].client);
        tls_ctx_free(s->certs[i].client_direct);
    }
    free(s->certs);
    tls_ctx_free(s->client_anon);
    tls_ctx_free(s->client_anon_direct);
    for (size_t i = 0; i < s->npolicies; i++)
        free((char *)s->policies[i].domain);
    free(s->policies);
    htab_free(s->local);
    htab_free(s->routes);
    htab_free(s->out);
    htab_free(s->bidi);
    htab_free(s->in_by_serial);
    htab_free(s->per_ip);
    free(s->listeners);
    free(s->listener_tls);
    mem_wipe(s->db_key, sizeof(s->db_key));
    free(s);
}
