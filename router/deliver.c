/*
 * deliver.c - plain stanzas (message, presence, iq): checks, routing,
 * forwarding, bounces, backpressure.
 *
 * A stanza goes to the owner of its `to` domain (an exact bound domain or
 * component name), else to the default route, else back to its sender as
 * remote-server-not-found. Among several instances of one owner the ring
 * picks by the bare JID of `to`. Stanzas of internal components are
 * forwarded as the bytes received; those of external components are first
 * re-serialised from the tree (parser differentials are an attack), once,
 * into the router's scratch buffer. Every stanza must come `from` a domain
 * its sender may speak for (else invalid-from: the stream is closed): its
 * name and bound domains; for an internal component also the <domain>s of
 * its entry, and for the default-route holder any domain that is not local.
 * External components may not address an internal component's own name.
 *
 * Addressing errors: a stanza with no or an unpreppable `to` bounces with
 * jid-malformed, from internal and external senders alike (a stanza error
 * rather than RFC 6120 §4.9.3.7's improper-addressing stream error: one bad
 * address should not cost a component its other traffic). A stanza from an
 * external component with no `from` cannot be answered: that is
 * improper-addressing. Presence is never bounced and errors never are.
 *
 * Nothing is allocated per stanza here beyond what the JID cache may keep.
 * The router's loop thread.
 */
#include "autoconfig.h"

#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "router/router.h"

static const struct xml_attr *attr(const struct xml_node *el, const char *name)
{
    for (const struct xml_attr *a = el->attrs; a != NULL; a = a->next)
        if (a->ns == NULL && strcmp(a->name, name) == 0)
            return a;
    return NULL;
}

void deliver_bounce(struct conn *c, struct xml_node *st, enum xml_stanza_err cond)
{
    c->comp->dropped++;
    if (strcmp(st->name, "presence") == 0)
        return; /* RFC 6121: presence to nowhere is dropped, not bounced */
    const char *type = cond == XML_STE_RESOURCE_CONSTRAINT ? "wait" : NULL;
    if (xml_make_error(st, cond, type, NULL) != 0)
        return; /* an error is never answered with an error */
    struct buf b = BUF_INIT;
    xml_serialize(st, XML_NS_COMPONENT, &b);
    if (conn_write(c, b.data, b.len) != 0)
        log_debug("component %s: bounce dropped: its own queue is full", c->name);
    buf_free(&b);
}

int deliver_to(struct conn *c, struct conn *target, struct xml_node *st, const char *p, size_t len)
{
    int rc = conn_write(target, p, len);
    if (rc == 0) {
        target->comp->stanzas_out++;
        target->comp->bytes_out += len;
        return 0;
    }
    if (rc == ERR_AGAIN) {
        if (!target->full_logged) {
            target->full_logged = true;
            log_warn("component %s: over queue-max (%zu bytes): bouncing what is sent to it "
                     "until it reads",
                     target->name, c->r->cfg.queue_max);
        }
        deliver_bounce(c, st, XML_STE_RESOURCE_CONSTRAINT);
    } else {
        deliver_bounce(c, st, XML_STE_SERVICE_UNAVAILABLE);
    }
    return rc;
}

/* Is domain one the router serves locally: a route held now, or a name or
 * <domain> of any entry in the component table? */
static bool local_domain(const struct router *r, const char *domain, size_t len)
{
    if (route_find(r->routes, domain, len) != NULL || users_find(r->users, domain) != NULL)
        return true;
    for (size_t i = 0; i < users_count(r->users); i++)
        if (users_has_domain(users_at(r->users, i), domain))
            return true;
    return false;
}

/* May c send a stanza from this prepped domain? Its own name and bound
 * domains always; an internal component also the <domain>s its entry lists
 * (bound or not: sm answers for a domain it is about to bind); the holder
 * of the default route (s2s) also every domain that is not local, since it
 * carries remote servers' traffic. */
static bool from_allowed(const struct conn *c, const char *domain, size_t len)
{
    if (conn_owns(c, domain))
        return true;
    if (!c->internal)
        return false;
    const struct users_entry *e = users_find(c->r->users, c->name);
    if (e != NULL && users_has_domain(e, domain))
        return true;
    return c->default_bound && !local_domain(c->r, domain, len);
}

void deliver_stanza(struct conn *c, struct xml_node *st, const char *raw, size_t rawlen)
{
    struct router *r = c->r;
    c->comp->stanzas_in++;
    c->comp->bytes_in += rawlen;
    const struct xml_attr *to = attr(st, "to");
    const struct xml_attr *from = attr(st, "from");
    if (from == NULL) {
        conn_fail(c, XML_SE_IMPROPER_ADDRESSING, "stanza without 'from'");
        return;
    }
    struct jid *fj;
    bool ok = jid_cache_prep(r->jids, from->value, from->value_len, &fj) == 0;
    if (ok) {
        ok = from_allowed(c, fj->domain, fj->domain_len);
        jid_free(fj);
    }
    if (!ok) {
        /* From an internal component this is a bug or a compromise: say
         * so louder than for an external one. */
        if (c->internal)
            log_warn("component %s (internal): stanza from '%.200s' refused", c->name, from->value);
        else
            log_notice("component %s: stanza from '%.200s' refused", c->name, from->value);
        conn_fail(c, XML_SE_INVALID_FROM, NULL);
        return;
    }
    struct jid *tj;
    if (to == NULL || jid_cache_prep(r->jids, to->value, to->value_len, &tj) != 0) {
        deliver_bounce(c, st, XML_STE_JID_MALFORMED);
        return;
    }
    struct route *rt = route_find(r->routes, tj->domain, tj->domain_len);
    if (rt == NULL)
        rt = route_default(r->routes);
    if (rt == NULL) {
        jid_free(tj);
        deliver_bounce(c, st, XML_STE_REMOTE_SERVER_NOT_FOUND);
        return;
    }
    struct conn *t = route_pick(rt, tj->bare, tj->bare_len);
    jid_free(tj);
    /* An internal component's own name (sm, c2s-1) is an address for the
     * other daemons only: an external component must not reach c2s or sm
     * behind the session manager's back. */
    if (!c->internal && t->internal && strcmp(rt->name, rt->owner) == 0) {
        log_notice("component %s: stanza to internal component %s refused", c->name, rt->name);
        deliver_bounce(c, st, XML_STE_SERVICE_UNAVAILABLE);
        return;
    }
    if (c->internal) {
        deliver_to(c, t, st, raw, rawlen);
        return;
    }
    buf_reset(&r->scratch);
    xml_serialize(st, XML_NS_COMPONENT, &r->scratch);
    deliver_to(c, t, st, r->scratch.data, r->scratch.len);
}
