/*
 * sm.c - the session manager's daemon object: configuration, the router
 * connection (common/component), the packet path and the output to c2s.
 *
 * Input arrives from the router in two forms. <r:route from='c2s-N'>
 * envelopes carry session control (urn:parley:session, handed to sess.c)
 * or a client's stanza, which goes on its user's queue (user.c) and then
 * through the in-sess chain. Plain stanzas come from other components and
 * from remote servers via s2s. A stanza for one of our domains is handled
 * here, never sent back through the router: to the server itself through
 * the pkt-sm chain, to a user on that user's queue (pkt-user chain, then
 * the default rules); with <multi-instance>, a stanza for a user goes
 * through the router (r:route to the domain, key = the bare JID) to the
 * instance that holds that user (if the router hands it back, that instance
 * being congested or gone, its sender gets an error: another instance owns
 * the user, so it is not handled here). Everything else goes to the
 * router. Output to a
 * session is <r:route to='c2s-N' from='DOMAIN' sid='S'>; a stanza for
 * several sessions is serialised once (sm_deliver_many).
 *
 * Runs on the daemon's loop; the only blocking work (reading the config)
 * happens before it runs.
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "sm/mod.h"
#include "sm/sm.h"
#include "sm/sub.h"

struct sm *sm_new(struct sm_config *cfg)
{
    struct sm *sm = xcalloc(1, sizeof(*sm));
    sm->cfg = cfg;
    sm->users = htab_new(NULL);
    sm->sessions = htab_new(NULL);
    sm->c2s = htab_new(NULL);
    sm->missing = htab_new(NULL);
    sm->resuming = htab_new(free);
    sm->jids = jid_cache_new(4096);
    return sm;
}

/* Trimmed text of a config element, copied. */
static char *node_text(struct xml_node *n)
{
    size_t len;
    const char *t = xml_text(n, &len);
    while (len > 0 && (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r')) {
        t++;
        len--;
    }
    while (len > 0 &&
           (t[len - 1] == ' ' || t[len - 1] == '\t' || t[len - 1] == '\n' || t[len - 1] == '\r'))
        len--;
    return xstrndup(t, len);
}

int sm_configure(struct sm *sm, struct config *cfg)
{
    for (struct xml_node *d = sm->cfg->domains; d != NULL; d = xml_next(d, NULL, "domain")) {
        char *raw = node_text(d);
        char *dom = NULL;
        int rc = *raw ? jid_prep_domain(raw, strlen(raw), &dom, NULL) : ERR_INVAL;
        if (rc != 0) {
            log_err("%s: <domain>%s</domain> is not a domain name", config_file(cfg), raw);
            free(raw);
            return ERR_CONFIG;
        }
        free(raw);
        for (size_t i = 0; i < sm->ndomains; i++) {
            if (strcmp(sm->domains[i], dom) == 0) {
                log_err("%s: <domain>%s</domain> given twice", config_file(cfg), dom);
                free(dom);
                return ERR_CONFIG;
            }
        }
        sm->domains = xreallocarray(sm->domains, sm->ndomains + 1, sizeof(char *));
        sm->domains[sm->ndomains++] = dom;
    }
    if (sm->ndomains == 0) {
        log_err("%s: no <domain>", config_file(cfg));
        return ERR_CONFIG;
    }
    return sm_mods_init(sm, sm->cfg->modules);
}

const char *sm_local_domain(struct sm *sm, const struct jid *j)
{
    for (size_t i = 0; i < sm->ndomains; i++)
        if (strcmp(sm->domains[i], j->domain) == 0)
            return sm->domains[i];
    return NULL;
}

bool sm_domain_name(struct sm *sm, const char *name)
{
    for (size_t i = 0; i < sm->ndomains; i++)
        if (strcmp(sm->domains[i], name) == 0)
            return true;
    return false;
}

const char *sm_default_domain(struct sm *sm)
{
    return sm->domains[0];
}

int sm_priority(struct xml_node *st)
{
    struct xml_node *p = xml_child(st, NULL, "priority");
    if (p == NULL)
        return 0;
    size_t len;
    const char *t = xml_text(p, &len);
    char *end = NULL;
    long v = strtol(t, &end, 10);
    if (len == 0 || end == t || *end != '\0' || v < -128 || v > 127)
        return SM_PRIORITY_BAD;
    return (int)v;
}

struct jid *sm_jid(struct sm *sm, const char *s)
{
    struct jid *j = NULL;
    if (s == NULL || jid_cache_prep(sm->jids, s, strlen(s), &j) != 0)
        return NULL;
    return j;
}

/* sm_pkt_init with the sender already known: from is st's from attribute
 * prepped (a new reference, or NULL for no from). */
static int pkt_init_from(struct sm *sm, struct sm_pkt *p, struct xml_node *st, struct jid *from)
{
    memset(p, 0, sizeof(*p));
    p->stanza = st;
    p->kind = st->name;
    p->type = xml_get_attr(st, "type");
    p->from = from;
    const char *to = xml_get_attr(st, "to");
    if (to != NULL) {
        p->to = sm_jid(sm, to);
        if (p->to == NULL)
            return ERR_INVAL;
    }
    return 0;
}

int sm_pkt_init(struct sm *sm, struct sm_pkt *p, struct xml_node *st)
{
    /* A stanza the sm made for one of its own sessions (an iq result to a
     * request that had no to) may have no from. */
    const char *from = xml_get_attr(st, "from");
    struct jid *j = from != NULL ? sm_jid(sm, from) : NULL;
    if (from != NULL && j == NULL) {
        memset(p, 0, sizeof(*p));
        return ERR_INVAL;
    }
    return pkt_init_from(sm, p, st, j);
}

void sm_pkt_clear(struct sm_pkt *p)
{
    jid_free(p->from);
    jid_free(p->to);
    p->from = p->to = NULL;
}

struct xml_node *sm_reply(const struct xml_node *st, const char *type)
{
    struct xml_node *r = xml_new(XML_NS_COMPONENT, st->name);
    const char *from = xml_get_attr(st, "from"), *to = xml_get_attr(st, "to");
    const char *id = xml_get_attr(st, "id");
    if (from != NULL)
        xml_set_attr(r, "to", from);
    if (to != NULL)
        xml_set_attr(r, "from", to);
    if (id != NULL)
        xml_set_attr(r, "id", id);
    if (type != NULL)
        xml_set_attr(r, "type", type);
    return r;
}

/* Stanzas from a c2s may be in jabber:client; the sm works in the
 * component namespace so that its output carries no stray xmlns. */
static void normalise_ns(struct xml_node *n)
{
    for (; n != NULL; n = n->next) {
        if (n->type != XML_ELEM)
            continue;
        if (strcmp(n->ns, XML_NS_CLIENT) == 0 || strcmp(n->ns, XML_NS_SERVER) == 0)
            n->ns = XML_NS_COMPONENT;
        normalise_ns(n->children);
    }
}

static bool is_stanza(const struct xml_node *st)
{
    return strcmp(st->ns, XML_NS_COMPONENT) == 0 &&
           (strcmp(st->name, "message") == 0 || strcmp(st->name, "presence") == 0 ||
            strcmp(st->name, "iq") == 0);
}

static bool type_is(const struct xml_node *st, const char *t)
{
    const char *v = xml_get_attr(st, "type");
    return v != NULL && strcmp(v, t) == 0;
}

bool sm_answerable(const struct xml_node *st)
{
    if (type_is(st, "error") || type_is(st, "result"))
        return false;
    return strcmp(st->name, "iq") != 0 || type_is(st, "get") || type_is(st, "set");
}

static void strip_payload(struct xml_node *st)
{
    while (st->children != NULL)
        xml_detach(st->children);
}

/* The payload goes back with the error (RFC 6120 §8.3.1) unless the error
 * would then not fit the router's stanza size once wrapped: then without
 * it, rather than not at all. */
void sm_bounce(struct sm *sm, const struct xml_node *st, enum xml_stanza_err cond)
{
    if (!sm_answerable(st) || xml_get_attr(st, "from") == NULL)
        return;
    struct xml_node *e = xml_copy(st);
    if (xml_make_error(e, cond, NULL, NULL) == 0) {
        struct buf b = BUF_INIT;
        xml_serialize(e, XML_NS_COMPONENT, &b);
        if (b.len > sm_mod_stanza_max(sm)) {
            xml_free(e);
            e = xml_copy(st);
            strip_payload(e);
            xml_make_error(e, cond, NULL, NULL);
        }
        buf_free(&b);
        sm_route(sm, e);
    }
    xml_free(e);
}

/* policy-violation (RFC 6120 §8.3.3.12, type modify): the size is the
 * service's policy and only a smaller stanza gets through, where
 * resource-constraint (wait) would invite the sender to try the same
 * stanza again. No payload: it is what did not fit. An iq result that does
 * not fit is answered to its requester, who would otherwise wait for an
 * answer forever (RFC 6120 §8.2.3). */
void sm_bounce_oversized(struct sm *sm, const struct xml_node *st)
{
    bool result = strcmp(st->name, "iq") == 0 && type_is(st, "result");
    if ((!result && !sm_answerable(st)) || xml_get_attr(st, result ? "to" : "from") == NULL)
        return;
    struct xml_node *e = xml_copy(st);
    strip_payload(e);
    if (result) {
        /* xml_make_error swaps to and from: the error goes to the requester. */
        const char *from = xml_get_attr(st, "from");
        if (from != NULL)
            xml_set_attr(e, "to", from);
        else
            xml_del_attr(e, "to");
        xml_set_attr(e, "from", xml_get_attr(st, "to"));
    }
    log_info("<%s/> from %s to %s too large for the router: answered with policy-violation",
             st->name, xml_get_attr(st, "from") ? xml_get_attr(st, "from") : "(none)",
             xml_get_attr(st, "to") ? xml_get_attr(st, "to") : "(none)");
    if (xml_make_error(e, XML_STE_POLICY_VIOLATION, "modify", "stanza too large for the router") ==
        0)
        sm_route(sm, e);
    xml_free(e);
}

/* ---- output to sessions ---- */

/* <r:route to from sid> for s into h (emptied first): the head of an
 * envelope to s's c2s. */
static void route_head(struct sm_sess *s, struct buf *h)
{
    buf_reset(h);
    buf_append_str(h, "<r:route to='");
    xml_escape_attr(s->c2s, strlen(s->c2s), h);
    buf_append_str(h, "' from='");
    xml_escape_attr(s->jid->domain, s->jid->domain_len, h);
    buf_append_str(h, "' sid='");
    buf_append_str(h, s->sid);
    buf_append_str(h, "'>");
}

/* Put head h in front of env's payload in place of the head of *head_len
 * bytes that is there now. */
static void route_rehead(struct buf *env, size_t *head_len, const struct buf *h)
{
    if (h->len > *head_len)
        buf_reserve(env, h->len - *head_len);
    memmove(env->data + h->len, env->data + *head_len, env->len - *head_len + 1);
    memcpy(env->data, h->data, h->len);
    env->len = env->len - *head_len + h->len;
    *head_len = h->len;
}

/* The out-sess chain: true when the stanza may go to s. */
static bool out_sess_ok(struct sm *sm, struct sm_sess *s, const struct xml_node *st)
{
    if (sm->nhooks[SM_HOOK_OUT_SESS] == 0)
        return true;
    struct sm_pkt p;
    memset(&p, 0, sizeof(p));
    p.stanza = (struct xml_node *)st;
    p.kind = st->name;
    p.type = xml_get_attr(st, "type");
    p.sess = s;
    p.user = s->user;
    return sm_hook_run(sm, SM_HOOK_OUT_SESS, &p) == SM_PASS;
}

int sm_deliver(struct sm *sm, struct sm_sess *s, const struct xml_node *st)
{
    return sm_deliver_many(sm, &s, 1, st);
}

/* The stanza is serialised once, into the first envelope; each further
 * session gets that buffer with its own head put in front of the same
 * bytes (the stream copies what it is given, so the buffer is free to
 * change after each send). Heads differ in length (c2s names): the size
 * is checked with the longest before anything is sent, so that either
 * every session gets the stanza or none does and its sender is answered
 * once. */
int sm_deliver_many(struct sm *sm, struct sm_sess **ss, size_t n, const struct xml_node *st)
{
    /* The sessions the out-sess chain lets it go to (run once each). */
    struct sm_sess *on_stack[SM_MAX_SESSIONS];
    struct sm_sess **to = n <= SM_MAX_SESSIONS ? on_stack : xcalloc(n, sizeof(*to));
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (out_sess_ok(sm, ss[i], st))
            to[m++] = ss[i];
    struct buf env = BUF_INIT, h = BUF_INIT;
    int rc = 0;
    if (m > 0 && sm->comp != NULL) {
        buf_reserve(&env, 128 + 1024); /* the serializer reserves 1,000 */
        route_head(to[0], &env);
        size_t head_len = env.len, head_max = env.len;
        xml_serialize(st, XML_NS_COMPONENT, &env);
        buf_append_str(&env, "</r:route>");
        for (size_t i = 1; i < m; i++) {
            route_head(to[i], &h);
            if (h.len > head_max)
                head_max = h.len;
        }
        if (env.len - head_len + head_max + SM_RETURN_ROOM > sm->cfg->router_stanza_size)
            rc = ERR_LIMIT;
        for (size_t i = 0; i < m && rc == 0; i++) {
            if (i > 0) {
                route_head(to[i], &h);
                route_rehead(&env, &head_len, &h);
            }
            component_send_raw(sm->comp, env.data, env.len);
        }
    }
    buf_free(&h);
    buf_free(&env);
    if (to != on_stack)
        free(to);
    if (rc == ERR_LIMIT)
        sm_bounce_oversized(sm, st);
    return rc;
}

void sm_send_control(struct sm *sm, const char *c2s, const char *domain, const char *name,
                     const char *sid, const char *reason)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<r:route to='");
    xml_escape_attr(c2s, strlen(c2s), &b);
    buf_append_str(&b, "' from='");
    xml_escape_attr(domain, strlen(domain), &b);
    buf_printf(&b, "'><%s xmlns='" SM_NS_SESSION "'", name);
    if (sid != NULL) {
        buf_append_str(&b, " sid='");
        xml_escape_attr(sid, strlen(sid), &b);
        buf_append_str(&b, "'");
    }
    if (reason != NULL) {
        buf_append_str(&b, " reason='");
        xml_escape_attr(reason, strlen(reason), &b);
        buf_append_str(&b, "'");
    }
    buf_append_str(&b, "/></r:route>");
    if (sm->comp != NULL)
        component_send_raw(sm->comp, b.data, b.len);
    buf_free(&b);
}

/* ---- the packet path ---- */

/* A stanza to the server's own domain. */
static void pkt_server(struct sm *sm, struct xml_node *st)
{
    struct sm_pkt p;
    if (sm_pkt_init(sm, &p, st) != 0) {
        sm_pkt_clear(&p);
        return;
    }
    int r = sm_hook_run(sm, SM_HOOK_PKT_SM, &p);
    if (SM_IS_ERROR(r))
        sm_bounce(sm, st, SM_ERROR_COND(r));
    else if (r == SM_PASS && strcmp(st->name, "presence") != 0)
        sm_bounce(sm, st, XML_STE_SERVICE_UNAVAILABLE);
    sm_pkt_clear(&p);
}

/* Presence that a user's data is needed for even with no session: the
 * subscription types (stored, or the roster changes) and probes (answered
 * from the roster). */
static bool presence_needs_user(const struct xml_node *st)
{
    static const char *const types[] = {"subscribe", "subscribed", "unsubscribe", "unsubscribed",
                                        "probe"};
    const char *type = xml_get_attr(st, "type");
    for (size_t i = 0; type != NULL && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(type, types[i]) == 0)
            return true;
    return false;
}

/* A stanza for a user of ours, handled by this instance. */
static void to_user_here(struct sm *sm, struct jid *j, struct xml_node *st)
{
    struct jid *bare = jid_bare(j);
    bool presence = strcmp(st->name, "presence") == 0;
    if (presence && !presence_needs_user(st) && !(sm->cfg->multi && sm_sess_resuming(sm)) &&
        htab_get(sm->users, bare->bare, bare->bare_len) == NULL) {
        /* A user not in memory has no sessions: nothing to deliver it to,
         * no account look-up for it. (While sessions move here one may be
         * on its way: the presence waits for it, sm_sess_deliver.) */
        jid_free(bare);
        return;
    }
    struct sm_user *u = sm_user_get_for_stanza(sm, bare, st);
    jid_free(bare);
    if (u != NULL)
        sm_deliver_user(sm, u, xml_copy(st));
    else if (presence) /* too many look-ups at once; presence gets no error (RFC 6121 §4.3) */
        log_debug("presence for %s dropped: too many account look-ups", xml_get_attr(st, "to"));
    else
        sm_bounce(sm, st, XML_STE_RESOURCE_CONSTRAINT);
}

/* With several instances, a user's stanzas are handled by the instance the
 * router picks for the bare JID (the same one its c2s traffic reaches). */
static void to_user_instance(struct sm *sm, struct jid *j, const struct xml_node *st)
{
    if (sm->comp == NULL)
        return;
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<r:route to='");
    xml_escape_attr(j->domain, j->domain_len, &b);
    buf_append_str(&b, "' from='");
    xml_escape_attr(j->domain, j->domain_len, &b);
    buf_append_str(&b, "' key='");
    xml_escape_attr(j->node, j->node_len, &b);
    buf_append_byte(&b, '@');
    xml_escape_attr(j->domain, j->domain_len, &b);
    buf_append_str(&b, "'>");
    xml_serialize(st, XML_NS_COMPONENT, &b);
    buf_append_str(&b, "</r:route>");
    /* The router returns it to us with an error attribute when the
     * instance is gone: room for that. */
    if (b.len + SM_RETURN_ROOM > sm->cfg->router_stanza_size ||
        component_send_raw(sm->comp, b.data, b.len) == ERR_LIMIT)
        sm_bounce_oversized(sm, st);
    buf_free(&b);
}

/* sm_route of st, whose to attribute j is (prepped; the caller's
 * reference). */
static void route_to(struct sm *sm, struct xml_node *st, struct jid *j)
{
    if (sm_local_domain(sm, j) == NULL) {
        if (sm->comp != NULL && component_send(sm->comp, st) == ERR_LIMIT)
            sm_bounce_oversized(sm, st);
    } else if (j->node == NULL) {
        if (j->resource == NULL)
            pkt_server(sm, st);
        else
            sm_bounce(sm, st, XML_STE_SERVICE_UNAVAILABLE);
    } else if (sm->cfg->multi) {
        to_user_instance(sm, j, st);
    } else {
        to_user_here(sm, j, st);
    }
}

void sm_route(struct sm *sm, struct xml_node *st)
{
    const char *to = xml_get_attr(st, "to");
    struct jid *j = sm_jid(sm, to);
    if (j == NULL) {
        if (to == NULL)
            log_debug("<%s/> without to dropped", st->name);
        else
            sm_bounce(sm, st, XML_STE_JID_MALFORMED);
        return;
    }
    route_to(sm, st, j);
    jid_free(j);
}

void sm_deliver_user(struct sm *sm, struct sm_user *u, struct xml_node *st)
{
    struct sm_event *ev = xcalloc(1, sizeof(*ev));
    ev->kind = SM_EV_DELIVER;
    ev->stanza = st;
    sm_user_post(u, ev);
}

static struct sm_sess *find_resource(struct sm_user *u, const struct jid *to)
{
    for (struct sm_sess *s = u->sessions; s != NULL; s = s->next)
        if (strcmp(s->jid->resource, to->resource) == 0)
            return s;
    return NULL;
}

/* A stanza for a user that has no account. */
static void to_missing_user(struct sm *sm, struct sm_user *u, struct xml_node *st)
{
    const char *type = xml_get_attr(st, "type");
    if (strcmp(st->name, "presence") != 0) {
        sm_bounce(sm, st, XML_STE_SERVICE_UNAVAILABLE);
        return;
    }
    /* RFC 6121 §3.1.3 / §4.3: a subscription request or probe to no
     * account is answered with unsubscribed, on the account's behalf. */
    if (type != NULL && (strcmp(type, "subscribe") == 0 || strcmp(type, "probe") == 0) &&
        xml_get_attr(st, "from") != NULL) {
        struct xml_node *r = xml_new(XML_NS_COMPONENT, "presence");
        xml_set_attr(r, "to", xml_get_attr(st, "from"));
        xml_set_attr(r, "from", jid_bare_str(u->jid));
        xml_set_attr(r, "type", "unsubscribed");
        sm_route(sm, r);
        xml_free(r);
    }
}

void sm_pkt_user(struct sm_user *u, struct xml_node *st)
{
    struct sm *sm = u->sm;
    if (u->state == SM_USER_MISSING || u->load_failed) {
        if (u->load_failed)
            sm_bounce(sm, st, XML_STE_INTERNAL_SERVER_ERROR);
        else
            to_missing_user(sm, u, st);
        return;
    }
    struct sm_pkt p;
    if (sm_pkt_init(sm, &p, st) != 0 || p.to == NULL) {
        sm_pkt_clear(&p);
        sm_bounce(sm, st, XML_STE_JID_MALFORMED);
        return;
    }
    if (p.from == NULL && strcmp(st->name, "presence") == 0) {
        sm_pkt_clear(&p);
        return;
    }
    p.user = u;
    int r = sm_hook_run(sm, SM_HOOK_PKT_USER, &p);
    if (SM_IS_ERROR(r)) {
        sm_bounce(sm, st, SM_ERROR_COND(r));
    } else if (r == SM_PASS) {
        struct sm_sess *s = p.to->resource ? find_resource(u, p.to) : NULL;
        if (s != NULL)
            sm_deliver(sm, s, st);
        else if (strcmp(st->name, "presence") != 0)
            sm_bounce(sm, st, XML_STE_SERVICE_UNAVAILABLE);
    }
    sm_pkt_clear(&p);
}

void sm_pkt_sess(struct sm_sess *s, struct xml_node *st)
{
    struct sm *sm = s->user->sm;
    /* The c2s stamped from already; the sm does not rely on it. */
    xml_set_attr(st, "from", jid_full_str(s->jid));
    const char *to = xml_get_attr(st, "to");
    struct sm_pkt p;
    /* That from is the session's JID, prepped already: no look-up. */
    if (pkt_init_from(sm, &p, st, jid_dup(s->jid)) != 0) {
        sm_pkt_clear(&p);
        sm_bounce(sm, st, XML_STE_JID_MALFORMED);
        return;
    }
    p.sess = s;
    p.user = s->user;
    int r = sm_hook_run(sm, SM_HOOK_IN_SESS, &p);
    /* Only the stanza right after a resumed start can be the c2s's replay
     * of the session's presence (SESSION.md); what follows is news, also
     * to the contacts of a session this sm restored after a restart. */
    s->resumed = false;
    s->restored = false;
    if (SM_IS_ERROR(r)) {
        sm_sess_bounce(s, st, SM_ERROR_COND(r));
    } else if (r == SM_PASS) {
        if (p.to != NULL) {
            /* A hook that readdressed st set a new string (xml_set_attr
             * always copies): the same one is still p.to's. */
            if (xml_get_attr(st, "to") == to)
                route_to(sm, st, p.to);
            else
                sm_route(sm, st);
        } else if (strcmp(st->name, "presence") != 0) {
            /* RFC 6120 §10.3: no to means the account itself. */
            xml_set_attr(st, "to", jid_bare_str(s->user->jid));
            sm_pkt_user(s->user, st);
        }
    }
    /* A broadcast presence may make the user reachable for the stanzas
     * held while its sessions moved here (sm_sess_deliver). */
    if (p.to == NULL && strcmp(st->name, "presence") == 0)
        sm_sess_release(s->user);
    sm_pkt_clear(&p);
}

/* ---- router callbacks ---- */

static bool is_c2s(struct sm *sm, const char *name)
{
    size_t n = strlen(sm->cfg->c2s_prefix);
    return strncmp(name, sm->cfg->c2s_prefix, n) == 0;
}

static void on_ready(struct component *c, void *arg)
{
    struct sm *sm = arg;
    log_info("sm ready (%zu domain%s, %zu module%s)", sm->ndomains, sm->ndomains == 1 ? "" : "s",
             sm->nmods, sm->nmods == 1 ? "" : "s");
    struct htab_iter it;
    for (htab_iter_init(&it, sm->c2s); htab_iter_next(&it);) {
        if (it.val == (void *)1)
            continue;
        char *name = xstrndup(it.key, it.klen);
        sm_sess_announce_all(sm, name);
        free(name);
    }
}

static void on_down(struct component *c, void *arg)
{
    struct sm *sm = arg;
    log_warn("router connection lost; sessions kept until the c2s processes say otherwise");
    /* The router re-notifies every c2s after the reconnect: announce again then. */
    htab_free(sm->c2s);
    sm->c2s = htab_new(NULL);
    sm_sess_router_down(sm);
}

/* Multi-instance: the router's answer to our bind of a domain, and each
 * notify for it, say our slot and the domain's ring (router/PROTOCOL.md). */
static void on_router_info(struct component *c, void *arg, const struct xml_node *el)
{
    struct sm *sm = arg;
    const char *name = xml_get_attr(el, "name");
    if (!sm->cfg->multi || name == NULL || !sm_domain_name(sm, name))
        return;
    if (strcmp(el->name, "bind") == 0) {
        if (xml_get_attr(el, "error") == NULL)
            sm_sess_ring_bound(sm, name, el);
        return;
    }
    /* Our own domain, bound here, is up again: another instance joined or
     * left it (instances=): its ring changed. */
    const char *state = xml_get_attr(el, "state");
    if (state != NULL && strcmp(state, "up") == 0)
        sm_sess_ring(sm, name, el, component_is_ready(c));
}

static void on_notify(struct component *c, void *arg, const char *name, const char *owner, int up)
{
    (void)owner;
    struct sm *sm = arg;
    if (sm->cfg->multi && up && sm_domain_name(sm, name))
        return; /* a ring change: on_router_info */
    if (!is_c2s(sm, name))
        return;
    if (up) {
        if (htab_get_str(sm->c2s, name) == NULL)
            htab_put_str(sm->c2s, name, (void *)2);
        if (component_is_ready(c))
            sm_sess_announce_all(sm, name);
    } else {
        htab_del_str(sm->c2s, name);
        sm_sess_c2s_down(sm, name);
    }
}

/* A client's stanza from a c2s: on its user's queue, in order. */
static void from_session(struct sm *sm, const char *c2s, const char *sid, struct xml_node *st)
{
    struct jid *from = sm_jid(sm, xml_get_attr(st, "from"));
    if (from == NULL || from->node == NULL || sm_local_domain(sm, from) == NULL) {
        log_warn("stanza from %s sid %s without a local from: dropped", c2s, sid);
        jid_free(from);
        xml_free(st);
        return;
    }
    struct jid *bare = jid_bare(from);
    struct sm_user *u = sm_user_get(sm, bare);
    jid_free(bare);
    jid_free(from);
    struct sm_event *ev = xcalloc(1, sizeof(*ev));
    ev->kind = SM_EV_IN_SESS;
    ev->stanza = st;
    ev->c2s = xstrdup(c2s);
    /* on_route checked sid's length (SM_SID_LEN): no formatting needed. */
    memcpy(ev->sid, sid, SM_SID_LEN + 1);
    sm_user_post(u, ev);
}

struct restoring {
    struct sm *sm;
    struct xml_node *msg; /* a copy */
};

static void on_restored(void *arg, int err, const struct storage_result *res)
{
    struct restoring *r = arg;
    if (err != 0) {
        log_warn("a returned message for %s not stored again: %s", xml_get_attr(r->msg, "to"),
                 storage_result_error(res));
        sm_bounce(r->sm, r->msg, XML_STE_INTERNAL_SERVER_ERROR);
    }
    xml_free(r->msg);
    free(r);
}

/* A message to a session that came back from the router's stream (over its
 * byte cap): chat and normal go to the addressee's offline store, where
 * they came from or would have gone. Past the quota: it was accepted
 * already (RFC 6120 §8.3.1: never dropped without an answer); when it
 * cannot be stored at all, its sender gets internal-server-error. */
static void restore(struct sm *sm, const struct xml_node *st)
{
    const char *type = xml_get_attr(st, "type");
    if (type != NULL && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
        return;
    struct jid *j = sm_jid(sm, xml_get_attr(st, "to"));
    if (j == NULL || j->node == NULL || sm_local_domain(sm, j) == NULL || sm->st == NULL) {
        jid_free(j);
        sm_bounce(sm, st, XML_STE_INTERNAL_SERVER_ERROR);
        return;
    }
    struct jid *bare = jid_bare(j);
    jid_free(j);
    struct buf b = BUF_INIT;
    xml_serialize(st, "", &b);
    struct restoring *r = xcalloc(1, sizeof(*r));
    r->sm = sm;
    r->msg = xml_copy(st);
    if (storage_offline_restore(sm->st, bare->bare, 0, b.data, on_restored, r) != 0) {
        log_warn("a returned message for %s not stored again", bare->bare);
        sm_bounce(sm, st, XML_STE_INTERNAL_SERVER_ERROR);
        xml_free(r->msg);
        free(r);
    }
    jid_free(bare);
    buf_free(&b);
}

/* A stanza our own envelope carried to a session that is gone, back with
 * error='item-not-found' (returned by the router, or by the c2s that no
 * longer has the sid: SESSION.md, Returned stanzas), whole and with its
 * type. It is handled behind the session's end (on the user's queue) as if
 * it arrived just after it, by the delivery policy (mod_message.c, RFC 6121
 * §8.5), with one exception: a headline to the bare JID was one copy of a
 * fan-out to every available resource (§8.5.2.1.1), so the others have
 * theirs and it is dropped (a second delivery would duplicate it; with none
 * left, §8.5.2.2.1 drops it too). So: chat to a full JID and chat or normal
 * to the bare JID go to the user's best session now, or offline
 * (§8.5.3.2.1, §8.5.2.1.1, §8.5.2.2.1); normal, headline and groupchat to a
 * full JID and groupchat to the bare JID give the sender
 * service-unavailable (§8.5.3.2.1, §8.5.2.1.1); an iq get or set gives
 * service-unavailable, errors, results and presence are dropped (§8.5.3.2;
 * RFC 6120 §8.3.1: an error is never answered). */
static void returned(struct sm *sm, struct xml_node *st)
{
    if (strcmp(st->name, "iq") == 0) {
        sm_bounce(sm, st, XML_STE_SERVICE_UNAVAILABLE);
        return;
    }
    if (strcmp(st->name, "message") != 0 || type_is(st, "error"))
        return;
    if (type_is(st, "headline")) {
        struct jid *to = sm_jid(sm, xml_get_attr(st, "to"));
        bool copy = to != NULL && to->resource == NULL;
        jid_free(to);
        if (copy)
            return;
    }
    sm_route(sm, st);
}

static void on_route(struct sm *sm, struct xml_node *env)
{
    const char *from = xml_get_attr(env, "from");
    const char *sid = xml_get_attr(env, "sid");
    const char *error = xml_get_attr(env, "error");
    struct xml_node *inner = xml_child(env, NULL, NULL);
    if (error != NULL) {
        const char *to = xml_get_attr(env, "to");
        if (sid == NULL && from != NULL && sm_domain_name(sm, from) && inner != NULL &&
            is_stanza(inner)) {
            /* A stanza handed to the instance that holds its user came
             * back (multi-instance: that instance congested, or gone while
             * the router moves its users): the sender learns it was not
             * delivered. Not handled here: another instance owns the user. */
            log_info("stanza for another instance returned (%s)", error);
            normalise_ns(inner);
            /* Presence but the subscription types is not worth an error
             * (RFC 6121 §4.3: none for presence). */
            if (strcmp(inner->name, "presence") == 0 &&
                sub_type_parse(xml_get_attr(inner, "type")) < 0)
                return;
            if (strcmp(error, "resource-constraint") == 0) {
                sm_bounce(sm, inner, XML_STE_RESOURCE_CONSTRAINT);
            } else if (sm_answerable(inner) && xml_get_attr(inner, "from") != NULL) {
                /* Its instance went away while the router moves its
                 * users: a moment later another one has it (wait). */
                struct xml_node *e = xml_copy(inner);
                if (xml_make_error(e, XML_STE_SERVICE_UNAVAILABLE, "wait", NULL) == 0)
                    sm_route(sm, e);
                xml_free(e);
            }
            return;
        }
        if (strcmp(error, "resource-constraint") == 0) {
            /* The c2s is congested, the session lives: a message it did
             * not take goes back to the offline store. */
            log_info("route to %s congested", from ? from : "?");
            if (inner != NULL && sid != NULL && is_stanza(inner)) {
                normalise_ns(inner);
                if (strcmp(inner->name, "message") == 0)
                    restore(sm, inner);
                else if (strcmp(inner->name, "iq") == 0)
                    sm_bounce(sm, inner, XML_STE_RESOURCE_CONSTRAINT);
            }
            return;
        }
        /* Our own envelope came back (from the router: that c2s is gone;
         * from the c2s: it no longer has the session). The session ends,
         * and its stanza is handled behind the end on the user's queue. */
        log_info("route to %s undeliverable (%s)", from ? from : "?", error);
        if (from != NULL && sid != NULL && to != NULL)
            sm_sess_post_end(sm, from, sid);
        if (inner != NULL && sid != NULL && is_stanza(inner)) {
            normalise_ns(inner);
            returned(sm, inner);
        }
        return;
    }
    if (from != NULL && inner != NULL && sm->cfg->multi && sm_domain_name(sm, from)) {
        /* From an instance of ours (possibly this one): ours to handle. */
        normalise_ns(inner);
        struct jid *j = is_stanza(inner) ? sm_jid(sm, xml_get_attr(inner, "to")) : NULL;
        if (j != NULL && j->node != NULL && sm_local_domain(sm, j) != NULL)
            to_user_here(sm, j, inner);
        else
            log_warn("r:route from %s without a stanza for a user ignored", from);
        jid_free(j);
        return;
    }
    if (from == NULL || inner == NULL || !is_c2s(sm, from)) {
        log_warn("r:route from %s ignored", from ? from : "?");
        return;
    }
    if (strcmp(inner->ns, SM_NS_SESSION) == 0) {
        sm_sess_control(sm, from, xml_get_attr(env, "to"), xml_get_attr(env, "key"), inner);
        return;
    }
    normalise_ns(inner);
    if (sid == NULL && is_stanza(inner)) {
        /* Not from a session: a c2s older than the returned envelope
         * answering a stanza for a sid it no longer has with an error
         * (SESSION.md, Returned stanzas: kept for an upgrade); the error
         * goes to the original sender. */
        sm_route(sm, inner);
        return;
    }
    if (sid == NULL || strlen(sid) != SM_SID_LEN || !is_stanza(inner)) {
        log_warn("r:route from %s without a session stanza ignored", from);
        return;
    }
    from_session(sm, from, sid, xml_copy(inner));
}

static void on_stanza(struct component *c, void *arg, struct xml_node *st, const char *raw,
                      size_t rawlen)
{
    struct sm *sm = arg;
    if (strcmp(st->ns, COMPONENT_NS_ROUTER) == 0) {
        if (strcmp(st->name, "route") == 0)
            on_route(sm, st);
        xml_free(st);
        return;
    }
    normalise_ns(st);
    if (!is_stanza(st)) {
        log_debug("<%s/> from the router ignored", st->name);
        xml_free(st);
        return;
    }
    sm_route(sm, st);
    xml_free(st);
}

static void on_bind_result(struct component *c, void *arg, const char *domain, int err)
{
    if (err != 0)
        log_err("binding %s failed: %s", domain, err_str(err));
}

static void on_bounce(struct component *c, void *arg, struct xml_node *st, const char *route_to,
                      enum component_bounce why)
{
    struct sm *sm = arg;
    /* Only plain stanzas are worth an error: session output and control
     * to a c2s that is unreachable is settled by its down notification,
     * except a message a session did not get: stored offline again. */
    if (route_to == NULL) {
        if (component_bounce_reply(st, why) == 0)
            sm_route(sm, st);
    } else if (strcmp(st->name, "message") == 0) {
        restore(sm, st);
    }
    xml_free(st);
}

static void on_close(struct component *c, void *arg)
{
    struct sm *sm = arg;
    component_free(c);
    sm->comp = NULL;
}

static const struct component_cbs comp_cbs = {
    .on_ready = on_ready,
    .on_down = on_down,
    .on_stanza = on_stanza,
    .on_bind_result = on_bind_result,
    .on_notify = on_notify,
    .on_router_info = on_router_info,
    .on_bounce = on_bounce,
    .on_close = on_close,
};

#define SM_OUT_MAX (16 * 1024 * 1024)

int sm_start(struct sm *sm, uv_loop_t *loop)
{
    sm->loop = loop;
    sm_sess_timer_init(sm);
    struct storage_opts so = {
        .dsn = sm->cfg->db_dsn,
        .password = sm->cfg->db_password,
        .pool_size = (unsigned)sm->cfg->db_pool,
        .offline_quota = (unsigned)sm->cfg->offline_quota,
        .offline_quota_bytes = (size_t)sm->cfg->offline_quota_bytes,
    };
    int rc = storage_new(loop, &so, &sm->st);
    if (rc != 0) {
        log_err("storage: the <db><dsn> does not work: %s", err_str(rc));
        return rc;
    }

    struct component_bind *binds = xcalloc(sm->ndomains, sizeof(*binds));
    for (size_t i = 0; i < sm->ndomains; i++)
        binds[i].domain = sm->domains[i];
    struct component_opts o;
    component_opts_default(&o);
    o.name = sm->cfg->router_name;
    o.secret = sm->cfg->router_secret;
    o.router = sm->cfg->router_connect;
    o.internal = 1;
    o.binds = binds;
    o.nbinds = sm->ndomains;
    o.backoff_max_ms = 2000;
    o.queue_max = 100000;
    o.queue_max_bytes = 64 * 1024 * 1024;
    component_opts_router_max(&o, sm->cfg->router_stanza_size);
    /* Offline flushes and presence fan-out write in bursts: room for them
     * on the router's stream beyond the 1 MiB default. */
    o.stream.out_max = SM_OUT_MAX;
    rc = component_new(loop, &o, &comp_cbs, sm, &sm->comp);
    free(binds);
    if (rc == 0)
        rc = component_start(sm->comp);
    return rc;
}

#define DRAIN_MS      5000
#define DRAIN_POLL_MS 20

/* Storage goes first, while the router connection is still up: the
 * queries it fails (ERR_CLOSED) answer their senders from their callbacks
 * (a message not stored: internal-server-error), and the users they held
 * handle the events queued behind them, which now fail the same way. So
 * no stanza taken is dropped without an answer (RFC 6120 §8.3.1: the
 * sender learns it was not delivered); presence and errors get none, as
 * always. Only then is the router connection closed. */
static void finish_stop(struct sm *sm)
{
    uv_timer_stop(&sm->drain);
    uv_close((uv_handle_t *)&sm->drain, NULL);
    sm_sess_timer_close(sm);
    storage_free(sm->st);
    sm->st = NULL;
    if (sm->comp != NULL)
        component_stop(sm->comp);
}

/* Stop only once storage has answered what was asked (offline messages
 * being stored, roster changes): their outcome can still reach the
 * sender or the session while the router connection is up. Bounded. */
static void on_drain(uv_timer_t *t)
{
    struct sm *sm = t->data;
    struct storage_stats ss;
    storage_get_stats(sm->st, &ss);
    if ((ss.waiting == 0 && ss.in_flight == 0) || uv_now(sm->loop) >= sm->drain_deadline) {
        if (ss.waiting + ss.in_flight > 0)
            log_warn("stopping with %u storage queries unanswered", ss.waiting + ss.in_flight);
        finish_stop(sm);
    }
}

void sm_stop(struct sm *sm)
{
    if (sm->stopping)
        return;
    sm->stopping = true;
    if (sm->st == NULL) {
        sm_sess_timer_close(sm);
        if (sm->comp != NULL)
            component_stop(sm->comp);
        return;
    }
    /* The rounds open end now, while storage and the router are up: the
     * deliveries held for sessions that may be on their way are handled as
     * with no round (stored offline, answered), not dropped at exit. */
    sm_sess_router_down(sm);
    uv_timer_init(sm->loop, &sm->drain);
    sm->drain.data = sm;
    sm->drain_deadline = uv_now(sm->loop) + DRAIN_MS;
    uv_timer_start(&sm->drain, on_drain, 0, DRAIN_POLL_MS);
}

void sm_log_stats(struct sm *sm)
{
    struct storage_stats ss = {0};
    if (sm->st != NULL)
        storage_get_stats(sm->st, &ss);
    log_notice("users %zu (idle %zu), sessions %zu, c2s %zu; storage ready %u waiting %u",
               htab_count(sm->users), sm->lru_count, htab_count(sm->sessions), htab_count(sm->c2s),
               ss.conns_ready, ss.waiting);
}

void sm_free(struct sm *sm)
{
    if (sm == NULL)
        return;
    sm_users_free(sm);
    sm_users_miss_free(sm);
    sm_mods_free(sm);
    component_free(sm->comp);
    htab_free(sm->users);
    htab_free(sm->sessions);
    htab_free(sm->c2s);
    htab_free(sm->missing);
    htab_free(sm->resuming);
    sm_sess_rings_free(sm);
    jid_cache_free(sm->jids);
    for (size_t i = 0; i < sm->ndomains; i++)
        free(sm->domains[i]);
    free(sm->domains);
    free(sm);
}
