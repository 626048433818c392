/*
 * proto.c - urn:parley:router elements from internal components, and the
 * notify fan-out to them.
 *
 *   <r:bind name='D'/>            D in the component's <domain> list (or its
 *   <r:bind default='true'/>      own name); default needs default-route.
 *                                 Answer: the same element, or with
 *                                 error='conflict|not-allowed|bad-request'.
 *   <r:unbind name='D'/>          give D back (idempotent); default='true'
 *                                 gives the default route back.
 *   <r:route to='N' from='F'>S</r:route>
 *                                 forwarded unchanged (the received bytes)
 *                                 to the holder of route N (a component
 *                                 name or bound domain; never the default
 *                                 route); among instances by the bare JID
 *                                 of key= or else of S's `to`; with
 *                                 neither, a session end or announced
 *                                 (urn:parley:session) to every instance,
 *                                 anything else to one. F must be a
 *                                 name the sender holds (invalid-from
 *                                 otherwise). When it
 *                                 cannot be delivered it comes back to the
 *                                 sender with to/from swapped and
 *                                 error='item-not-found' (no such route) or
 *                                 'resource-constraint' (queue full).
 *   <r:stats/>                    answered with <r:stats> (stats.c).
 *
 * Notifies (<r:notify name='N' state='up|down'/>) are written once into a
 * refcounted buffer and queued to every ready internal connection except the
 * one whose action caused them (it learns from its own answer). A
 * multi-instance route that stays up while an instance joins or leaves is
 * notified up again with instances='N': its ring changed, and the sm moves
 * sessions (sm/SESSION.md).
 *
 * The router's loop thread.
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "router/router.h"

static bool is_true(const char *v)
{
    return v != NULL && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* ---- notify ---- */

/* owner: the component name the route belongs to, so that a c2s can tell a
 * domain its sm serves from an external component's domain. */
static struct rbuf *notify_rbuf(const char *name, const char *owner, bool up)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<r:notify name='");
    xml_escape_attr(name, strlen(name), &b);
    buf_append_str(&b, "' owner='");
    xml_escape_attr(owner, strlen(owner), &b);
    buf_append_str(&b, up ? "' state='up'/>" : "' state='down'/>");
    return rbuf_from_buf(&b);
}

void proto_notify(struct router *r, const char *name, bool up, const struct conn *except)
{
    struct rbuf *rb = NULL;
    for (struct conn *c = r->conns; c != NULL; c = c->next) {
        if (c == except || c->state != CONN_READY || !c->internal)
            continue;
        if (rb == NULL)
            rb = notify_rbuf(name, except->name, up);
        if (conn_write_rbuf(c, rb) != 0)
            log_warn("component %s: notify %s %s lost: its queue is full", c->name, name,
                     up ? "up" : "down");
    }
    rbuf_unref(rb);
}

void proto_notify_ring(struct router *r, const char *name, const struct conn *except)
{
    struct route *rt = route_find(r->routes, name, strlen(name));
    if (rt == NULL || rt->ninst == 0)
        return;
    struct rbuf *rb = NULL;
    for (struct conn *c = r->conns; c != NULL; c = c->next) {
        if (c == except || c->state != CONN_READY || !c->internal)
            continue;
        if (rb == NULL) {
            struct buf b = BUF_INIT;
            buf_append_str(&b, "<r:notify name='");
            xml_escape_attr(rt->name, strlen(rt->name), &b);
            buf_append_str(&b, "' owner='");
            xml_escape_attr(rt->owner, strlen(rt->owner), &b);
            buf_printf(&b, "' state='up' instances='%zu'", rt->ninst);
            route_ring_attrs(rt, &b); /* so each instance can compute the new ring */
            buf_append_str(&b, "/>");
            rb = rbuf_from_buf(&b);
        }
        if (conn_write_rbuf(c, rb) != 0)
            log_warn("component %s: notify %s (%zu instances) lost: its queue is full", c->name,
                     name, rt->ninst);
    }
    rbuf_unref(rb);
}

static void notify_one(void *arg, struct route *rt)
{
    struct conn *c = arg;
    if (route_has(rt, c))
        return;
    struct rbuf *rb = notify_rbuf(rt->name, rt->owner, true);
    conn_write_rbuf(c, rb);
    rbuf_unref(rb);
}

void proto_notify_all(struct conn *c)
{
    route_foreach(c->r->routes, notify_one, c);
}

/* ---- bind / unbind ---- */

static void reply(struct conn *c, const char *elem, const char *name, bool def, const char *error)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "<r:%s", elem);
    if (name != NULL) {
        buf_append_str(&b, " name='");
        xml_escape_attr(name, strlen(name), &b);
        buf_append_byte(&b, '\'');
    }
    if (def)
        buf_append_str(&b, " default='true'");
    if (error != NULL)
        buf_printf(&b, " error='%s'", error);
    buf_append_str(&b, "/>");
    conn_write(c, b.data, b.len);
    buf_free(&b);
}

/* A multi-instance component's bind of a domain: its slot and the
 * domain's ring as it is now (router/PROTOCOL.md), so that the instance can
 * follow the ring changes notified from then on. */
static void reply_ring(struct conn *c, const char *raw, bool def, const struct route *rt)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<r:bind name='");
    xml_escape_attr(raw, strlen(raw), &b);
    buf_append_byte(&b, '\'');
    if (def)
        buf_append_str(&b, " default='true'");
    buf_printf(&b, " slot='%u'", c->slot);
    if (rt != NULL)
        route_ring_attrs(rt, &b);
    buf_append_str(&b, "/>");
    conn_write(c, b.data, b.len);
    buf_free(&b);
}

static bool holds(const struct conn *c, const char *name)
{
    for (size_t i = 0; i < c->nbound; i++)
        if (strcmp(c->bound[i], name) == 0)
            return true;
    return false;
}

static void on_bind(struct conn *c, struct xml_node *el)
{
    struct router *r = c->r;
    const char *raw = xml_get_attr(el, "name");
    if (raw != NULL && raw[0] == '\0')
        raw = NULL; /* name='' names nothing: as if absent */
    bool def = is_true(xml_get_attr(el, "default"));
    const struct users_entry *e = users_find(r->users, c->name);
    char *name = NULL;
    if (raw == NULL && !def) {
        reply(c, "bind", NULL, false, "bad-request");
        return;
    }
    if (raw != NULL && jid_prep_domain(raw, strlen(raw), &name, NULL) != 0) {
        reply(c, "bind", raw, def, "not-allowed");
        return;
    }
    bool own = name != NULL && strcmp(name, c->name) == 0;
    if (e == NULL || (name != NULL && !own && !users_has_domain(e, name)) ||
        (def && !e->default_route)) {
        log_notice("component %s: bind %s%s refused: not allowed", c->name, name ? name : "",
                   def ? " (default)" : "");
        reply(c, "bind", raw, def, "not-allowed");
        free(name);
        return;
    }
    int added = 0;
    if (name != NULL && !own && !holds(c, name)) {
        added = route_add(r->routes, name, c->name, c->multi, c, c->slot);
        if (added < 0) {
            log_notice("component %s: bind %s refused: held by another component", c->name, name);
            reply(c, "bind", raw, def, "conflict");
            free(name);
            return;
        }
    }
    if (def && !c->default_bound) {
        if (route_add(r->routes, NULL, c->name, c->multi, c, c->slot) < 0) {
            if (added != 0 || (name != NULL && !own && !holds(c, name)))
                route_del(r->routes, name, c);
            log_notice("component %s: default route refused: held by another component", c->name);
            reply(c, "bind", raw, def, "conflict");
            free(name);
            return;
        }
        c->default_bound = true;
        log_info("component %s: default route bound", c->name);
    }
    if (name != NULL && !own && !holds(c, name)) {
        c->bound = xreallocarray(c->bound, c->nbound + 1, sizeof(*c->bound));
        c->bound[c->nbound++] = xstrdup(name);
        log_info("component %s: bound %s", c->name, name);
        if (added == 1)
            proto_notify(r, name, true, c);
        else
            proto_notify_ring(r, name, c);
    }
    if (c->multi && name != NULL && !own)
        reply_ring(c, raw, def, route_find(r->routes, name, strlen(name)));
    else
        reply(c, "bind", raw, def, NULL);
    free(name);
}

static void on_unbind(struct conn *c, struct xml_node *el)
{
    struct router *r = c->r;
    const char *raw = xml_get_attr(el, "name");
    if (raw != NULL && raw[0] == '\0')
        raw = NULL; /* name='' names nothing: as if absent */
    bool def = is_true(xml_get_attr(el, "default"));
    char *name = NULL;
    if (raw == NULL && !def) {
        reply(c, "unbind", NULL, false, "bad-request");
        return;
    }
    if (raw != NULL && jid_prep_domain(raw, strlen(raw), &name, NULL) != 0) {
        reply(c, "unbind", raw, def, "item-not-found");
        return;
    }
    if (name != NULL && strcmp(name, c->name) == 0) {
        reply(c, "unbind", raw, def, "not-allowed");
        free(name);
        return;
    }
    if (def && c->default_bound) {
        route_del(r->routes, NULL, c);
        c->default_bound = false;
        log_info("component %s: default route unbound", c->name);
    }
    for (size_t i = 0; name != NULL && i < c->nbound; i++) {
        if (strcmp(c->bound[i], name) != 0)
            continue;
        free(c->bound[i]);
        c->bound[i] = c->bound[--c->nbound];
        log_info("component %s: unbound %s", c->name, name);
        int rc = route_del(r->routes, name, c);
        if (rc == 1)
            proto_notify(r, name, false, c);
        else if (rc == 0)
            proto_notify_ring(r, name, c);
        break;
    }
    reply(c, "unbind", raw, def, NULL);
    free(name);
}

/* ---- route ---- */

/* Send an undeliverable r:route back to its sender. */
static void route_back(struct conn *c, struct xml_node *el, const char *error)
{
    c->comp->dropped++;
    char *to = xstrdup(xml_get_attr(el, "to"));
    char *from = xstrdup(xml_get_attr(el, "from"));
    xml_set_attr(el, "to", from);
    xml_set_attr(el, "from", to);
    xml_set_attr(el, "error", error);
    free(to);
    free(from);
    struct buf b = BUF_INIT;
    xml_serialize(el, XML_NS_COMPONENT, &b);
    if (conn_write(c, b.data, b.len) != 0)
        log_debug("component %s: returned r:route dropped: its own queue is full", c->name);
    buf_free(&b);
}

/* The received bytes to one instance, counted; 0 or conn_write's error. */
static int route_write(struct conn *t, const char *raw, size_t rawlen)
{
    int rc = conn_write(t, raw, rawlen);
    if (rc == 0) {
        t->comp->stanzas_out++;
        t->comp->bytes_out += rawlen;
        return 0;
    }
    if (rc == ERR_AGAIN && !t->full_logged) {
        t->full_logged = true;
        log_warn("component %s: over queue-max (%zu bytes): returning what is sent to it "
                 "until it reads",
                 t->name, t->r->cfg.queue_max);
    }
    return rc;
}

/* A copy to every instance of rt; the sender gets it back (once) if an
 * instance could not take it. */
static void route_all(struct conn *c, struct route *rt, struct xml_node *el, const char *raw,
                      size_t rawlen)
{
    int failed = 0;
    for (size_t i = 0; i < rt->ninst; i++) {
        int rc = route_write(rt->inst[i], raw, rawlen);
        if (rc != 0 && failed != ERR_AGAIN)
            failed = rc;
    }
    if (failed != 0)
        route_back(c, el, failed == ERR_AGAIN ? "resource-constraint" : "item-not-found");
}

/* A keyless r:route with no inner to that concerns every instance: the
 * session control an instance may have to act on whichever instance the
 * ring names (sm/SESSION.md: a session's end, which may reach the one
 * still holding it in a move; a round's announced). */
static bool fan_out(const struct xml_node *inner)
{
    return inner != NULL && strcmp(inner->ns, ROUTER_NS_SESSION) == 0 &&
           (strcmp(inner->name, "end") == 0 || strcmp(inner->name, "announced") == 0);
}

static void on_route(struct conn *c, struct xml_node *el, const char *raw, size_t rawlen)
{
    struct router *r = c->r;
    c->comp->stanzas_in++;
    c->comp->bytes_in += rawlen;
    /* The bytes go on unchanged: the prefix must be the one every router
     * stream header declares. */
    if (el->prefix == NULL || strcmp(el->prefix, "r") != 0) {
        conn_fail(c, XML_SE_BAD_NAMESPACE_PREFIX, "r:route must use the prefix r");
        return;
    }
    const char *to = xml_get_attr(el, "to"), *from = xml_get_attr(el, "from");
    if (to == NULL || from == NULL) {
        conn_fail(c, XML_SE_IMPROPER_ADDRESSING, "r:route needs to and from");
        return;
    }
    if (!conn_owns(c, from)) {
        log_notice("component %s: r:route from '%.200s' refused", c->name, from);
        conn_fail(c, XML_SE_INVALID_FROM, NULL);
        return;
    }
    struct route *rt = route_find(r->routes, to, strlen(to));
    if (rt == NULL) {
        route_back(c, el, "item-not-found");
        return;
    }
    struct conn *t;
    if (rt->ninst > 1) {
        /* key= (a bare JID) wins over the inner stanza's to: c2s keys its
         * traffic to the sm by the session's user, whoever it writes to. */
        const char *ito = xml_get_attr(el, "key");
        struct xml_node *inner = NULL;
        if (ito == NULL) {
            inner = xml_child(el, NULL, NULL);
            ito = inner ? xml_get_attr(inner, "to") : NULL;
        }
        struct jid *j = NULL;
        if (ito == NULL && fan_out(inner)) {
            route_all(c, rt, el, raw, rawlen);
            return;
        }
        if (ito == NULL) {
            /* Nothing to pick by: the instance the empty key names. */
            t = route_pick(rt, "", 0);
        } else if (jid_cache_prep(r->jids, ito, strlen(ito), &j) == 0) {
            t = route_pick(rt, j->bare, j->bare_len);
            jid_free(j);
        } else {
            t = route_pick(rt, "", 0);
        }
    } else {
        t = rt->inst[0];
    }
    int rc = route_write(t, raw, rawlen);
    if (rc != 0)
        route_back(c, el, rc == ERR_AGAIN ? "resource-constraint" : "item-not-found");
}

/* ---- dispatch ---- */

void proto_element(struct conn *c, struct xml_node *el, const char *raw, size_t rawlen)
{
    if (strcmp(el->name, "route") == 0) {
        on_route(c, el, raw, rawlen);
    } else if (strcmp(el->name, "bind") == 0) {
        on_bind(c, el);
    } else if (strcmp(el->name, "unbind") == 0) {
        on_unbind(c, el);
    } else if (strcmp(el->name, "stats") == 0) {
        struct buf b = BUF_INIT;
        stats_element(c->r, &b);
        if (conn_write(c, b.data, b.len) != 0)
            log_debug("component %s: stats dropped: its queue is full", c->name);
        buf_free(&b);
    } else {
        conn_fail(c, XML_SE_UNSUPPORTED_STANZA_TYPE, "unknown " ROUTER_NS " element");
    }
}
