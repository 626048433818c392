/*
 * mod_presence.c - RFC 6121 §3-4: subscriptions (through sub.c's state
 * machine, persisted by roster.c) and presence: initial presence (probes
 * to the contacts the user is subscribed to, broadcast to those subscribed
 * to the user and to the user's other resources, pending subscription
 * requests delivered again), updates, unavailable (also when a session
 * ends, also to directed-presence recipients), directed presence, and
 * probes answered on the user's behalf.
 *
 * Per session (mdata): the set of full JIDs that got directed available
 * presence and are not subscribed, or got it while the session was not
 * available (subscribed or not: no broadcast covers them then), so that
 * they get unavailable at the end (§4.6.3, §4.6.4), once: those the
 * broadcast unavailable reaches (their bare JID) are skipped. The
 * session's last broadcast presence, priority and availability live in
 * struct sm_sess, where the core's message routing reads them.
 *
 * Addressing choices: subscription stanzas and probes go out from the
 * user's bare JID (§3.1.2, §4.3.1); a probe is answered with the last
 * presence of each available resource (from its full JID), or with
 * unavailable from the bare JID when none is; a probe from someone
 * without a subscription gets unsubscribed (§4.3.2: nothing revealed).
 * A re-announced (resumed) session's replayed presence (SESSION.md) is not
 * broadcast to the contacts again: they saw it before the router loss or
 * the sm restart. After a router loss this sm still has the presence and
 * sends it if it changed; after an sm restart it takes the replay for
 * what the contacts have, unless the c2s says the presence never reached
 * an sm (start changed='true': then it is broadcast, an unavailable one
 * too). Its contacts are probed again
 * either way, unless the session is kept (several instances: nothing was
 * lost for it since it was created or last probed; sess.c clears the mark,
 * SESSION.md says when): then each instance's round after a ring change
 * would send the contacts' presence to the client once more. Pending
 * subscription requests are not delivered again.
 * One gap is closed by hand: while the c2s processes re-announce, a local
 * contact's probe may reach a user whose sessions are not back yet (their
 * starts are on their way, e.g. to this new instance after a ring change);
 * it is not answered unavailable then: those probers (per user, mdata, at
 * most <limits><roster-items>) get each session's replayed presence once
 * until the round is over, and those that got none then get the answer
 * (unavailable, or the current presence), from the user's queue behind the
 * pending starts.
 * Runs on the sm's loop.
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "common/mem.h"
#include "sm/mod.h"
#include "sm/roster.h"

static struct htab *directed(struct sm_mod *m, struct sm_sess *s, bool create)
{
    void **slot = sm_mod_slot(s->mdata, m);
    if (*slot == NULL && create)
        *slot = htab_new(NULL);
    return *slot;
}

static void sess_free(struct sm_mod *m, struct sm_sess *s)
{
    void **slot = sm_mod_slot(s->mdata, m);
    htab_free(*slot);
    *slot = NULL;
}

/* Per user: full JIDs that probed while the sessions were being
 * re-announced (value PROBE_WAITING: not answered yet, PROBE_ANSWERED: got
 * a presence), kept until the user's round-end event (u->round_wait). */
enum { PROBE_WAITING = 1, PROBE_ANSWERED = 2 };
struct probed {
    struct htab *jids;
    struct htab *told; /* sessions (key) whose quiet replay they had: one each */
};

static void user_free(struct sm_mod *m, struct sm_user *u)
{
    void **slot = sm_mod_slot(u->mdata, m);
    struct probed *pr = *slot;
    if (pr != NULL) {
        htab_free(pr->jids);
        htab_free(pr->told);
        free(pr);
    }
    *slot = NULL;
}

/* u's probers of the current re-announce round (create: only while a
 * round lasts). */
static struct probed *probed(struct sm_mod *m, struct sm_user *u, bool create)
{
    void **slot = sm_mod_slot(u->mdata, m);
    struct probed *pr = *slot;
    if (pr == NULL && create && sm_sess_resuming(u->sm)) {
        pr = xcalloc(1, sizeof(*pr));
        pr->jids = htab_new(NULL);
        pr->told = htab_new(NULL);
        *slot = pr;
        u->round_wait = true;
    }
    return pr;
}

/* Every available session of u but skip, and how many. */
static size_t available(struct sm_user *u, struct sm_sess *skip, struct sm_sess **out)
{
    size_t n = 0;
    for (struct sm_sess *s = u->sessions; s != NULL && n < SM_MAX_SESSIONS; s = s->next)
        if (s->available && s != skip)
            out[n++] = s;
    return n;
}

/* st to every contact subscribed to the user (from/both), one 'to' at a time. */
static void to_subscribers(struct sm_user *u, struct xml_node *st)
{
    if (u->roster == NULL)
        return;
    struct htab_iter it;
    for (htab_iter_init(&it, u->roster->items); htab_iter_next(&it);) {
        struct sm_roster_item *item = it.val;
        if (!sub_has_from(item->st.sub))
            continue;
        xml_set_attr(st, "to", item->jid);
        sm_route(u->sm, st);
    }
    xml_del_attr(st, "to");
}

/* st to the user's available resources but skip (NULL: all). */
static void to_own(struct sm_user *u, struct sm_sess *from, struct xml_node *st)
{
    struct sm_sess *ss[SM_MAX_SESSIONS];
    size_t n = available(u, from, ss);
    if (n == 0)
        return;
    xml_set_attr(st, "to", u->jid->bare);
    sm_deliver_many(u->sm, ss, n, st);
    xml_del_attr(st, "to");
}

static void send_type(struct sm *sm, const char *from, const char *to, const char *type)
{
    struct xml_node *pr = xml_new(XML_NS_COMPONENT, "presence");
    xml_set_attr(pr, "from", from);
    xml_set_attr(pr, "to", to);
    if (type != NULL)
        xml_set_attr(pr, "type", type);
    sm_route(sm, pr);
    xml_free(pr);
}

/* The last presence of every available resource of u, to 'to'. */
static void current_presence_to(struct sm_user *u, const char *to)
{
    for (struct sm_sess *s = u->sessions; s != NULL; s = s->next) {
        if (!s->available || s->presence == NULL)
            continue;
        xml_set_attr(s->presence, "to", to);
        sm_route(u->sm, s->presence);
        xml_del_attr(s->presence, "to");
    }
}

static void unavailable_from(struct sm_user *u, const char *from_full, const char *to)
{
    send_type(u->sm, from_full, to, "unavailable");
}

/* Does the contact of full (or bare) JID jid get u's presence (from/both)? */
/* Whether the broadcast unavailable reached to already: a subscriber's
 * bare JID, or an available session here of a local subscriber. A full JID
 * elsewhere may be a resource that is not available, which the broadcast
 * to its bare JID misses (§4.6.3: it must still be told): it gets its own
 * unavailable, a duplicate at worst. */
static bool reached_by_broadcast(struct sm_user *u, const char *to)
{
    struct jid *j = sm_jid(u->sm, to);
    struct sm_roster_item *item = j != NULL ? sm_roster_find(u, j->bare) : NULL;
    bool reached = false;
    if (item != NULL && sub_has_from(item->st.sub)) {
        if (j->resource == NULL) {
            reached = true;
        } else if (sm_local_domain(u->sm, j) != NULL) {
            struct sm_user *c = htab_get(u->sm->users, j->bare, j->bare_len);
            for (struct sm_sess *s = c != NULL ? c->sessions : NULL; s != NULL; s = s->next)
                if (s->available && strcmp(s->jid->resource, j->resource) == 0)
                    reached = true;
        }
    }
    jid_free(j);
    return reached;
}

/* The session's presence ends: unavailable to subscribers, directed
 * recipients and own resources (§4.5.2). st: the client's unavailable,
 * or NULL when the session ended without one. */
static void go_unavailable(struct sm_mod *m, struct sm_sess *s, struct xml_node *st)
{
    struct sm_user *u = s->user;
    struct xml_node *own = st;
    if (own == NULL) {
        own = xml_new(XML_NS_COMPONENT, "presence");
        xml_set_attr(own, "type", "unavailable");
    }
    xml_set_attr(own, "from", jid_full_str(s->jid));
    xml_del_attr(own, "to");
    /* A resumed session this sm has not seen available may replay an
     * unavailable the contacts never got (SESSION.md: changed). */
    bool broadcast = s->available || (st != NULL && s->resumed && !s->restored && !s->initial);
    if (broadcast) {
        to_subscribers(u, own);
        to_own(u, s, own);
    }
    struct htab *d = directed(m, s, false);
    if (d != NULL) {
        struct htab_iter it;
        for (htab_iter_init(&it, d); htab_iter_next(&it);) {
            char to[JID_FULL_MAX + 1];
            if (it.klen > JID_FULL_MAX)
                continue;
            memcpy(to, it.key, it.klen);
            to[it.klen] = '\0';
            if (broadcast && reached_by_broadcast(u, to))
                continue;
            xml_set_attr(own, "to", to);
            sm_route(u->sm, own);
        }
        xml_del_attr(own, "to");
        sess_free(m, s);
    }
    if (own != st)
        xml_free(own);
    s->available = false;
    xml_free(s->presence);
    s->presence = NULL;
}

/* Probes to the contacts the user is subscribed to (§4.2.2). */
static void probes(struct sm_user *u)
{
    struct htab_iter it;
    for (htab_iter_init(&it, u->roster->items); htab_iter_next(&it);) {
        struct sm_roster_item *item = it.val;
        if (sub_has_to(item->st.sub))
            send_type(u->sm, u->jid->bare, item->jid, "probe");
    }
}

/* Initial presence extras: probes, the other resources' presence and (if
 * requests) the pending subscription requests (§3.1.3) to this one. */
static void initial(struct sm_sess *s, bool requests)
{
    struct sm_user *u = s->user;
    if (u->roster == NULL)
        return;
    struct htab_iter it;
    probes(u);
    for (struct sm_sess *o = u->sessions; o != NULL; o = o->next) {
        if (o == s || !o->available || o->presence == NULL)
            continue;
        xml_set_attr(o->presence, "to", jid_full_str(s->jid));
        sm_deliver(u->sm, s, o->presence);
        xml_del_attr(o->presence, "to");
    }
    for (htab_iter_init(&it, u->roster->pending); requests && htab_iter_next(&it);) {
        char err[64];
        const char *text = it.val;
        struct xml_node *req = xml_parse_document(text, strlen(text), NULL, err, sizeof(err));
        if (req == NULL)
            continue;
        xml_set_attr(req, "to", u->jid->bare);
        sm_deliver(u->sm, s, req);
        xml_free(req);
    }
}

static bool same_presence(const struct xml_node *a, const struct xml_node *b)
{
    if (a == NULL || b == NULL)
        return false;
    struct buf x = BUF_INIT, y = BUF_INIT;
    xml_serialize(a, XML_NS_COMPONENT, &x);
    xml_serialize(b, XML_NS_COMPONENT, &y);
    bool same = x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    buf_free(&x);
    buf_free(&y);
    return same;
}

/* st, s's presence, to those who probed in this re-announce round (see
 * probed): s's first quiet replay (every resource of u: one each; each
 * instance's round after a ring change replays it again, and once s is
 * available a new probe is answered at once), only to those still
 * subscribed to u's presence; quiet false: st went to the subscribers
 * already, they only count as answered. */
static void to_probed(struct sm_mod *m, struct sm_sess *s, struct xml_node *st, bool quiet)
{
    struct sm_user *u = s->user;
    struct probed *pr = probed(m, u, false);
    if (pr == NULL)
        return;
    if (quiet && htab_get_str(pr->told, s->key) != NULL)
        return;
    if (quiet)
        htab_put_str(pr->told, s->key, (void *)1);
    struct htab_iter it;
    for (htab_iter_init(&it, pr->jids); htab_iter_next(&it);) {
        htab_set(pr->jids, it.key, it.klen, (void *)PROBE_ANSWERED); /* no insert */
        if (!quiet)
            continue;
        char to[JID_FULL_MAX + 1];
        if (it.klen > JID_FULL_MAX)
            continue;
        memcpy(to, it.key, it.klen);
        to[it.klen] = '\0';
        struct jid *j = sm_jid(u->sm, to);
        struct sm_roster_item *item = j ? sm_roster_find(u, j->bare) : NULL;
        jid_free(j);
        if (item == NULL || !sub_has_from(item->st.sub))
            continue;
        xml_set_attr(st, "to", to);
        sm_route(u->sm, st);
    }
    xml_del_attr(st, "to");
}

static int broadcast(struct sm_mod *m, struct sm_pkt *p)
{
    struct sm_sess *s = p->sess;
    struct xml_node *st = p->stanza;
    if (p->type != NULL && strcmp(p->type, "unavailable") == 0) {
        go_unavailable(m, s, st);
        return SM_HANDLED;
    }
    if (p->type != NULL)
        return SM_HANDLED; /* probe/error/subscription without a to: nothing to do */
    int prio = sm_priority(st);
    if (prio == SM_PRIORITY_BAD)
        return SM_ERROR(XML_STE_BAD_REQUEST);
    bool first = !s->available;
    bool reachable = s->available && s->priority >= 0;
    /* A resumed session's replayed presence is not sent to the contacts
     * again: after a router loss when this sm still had it, after an sm
     * restart always (the header comment says why). */
    bool quiet = s->resumed && (s->restored || same_presence(s->presence, st));
    s->available = true;
    s->initial = true;
    s->priority = prio;
    s->active_seq = ++m->sm->seq;
    xml_free(s->presence);
    s->presence = xml_copy(st);
    xml_del_attr(s->presence, "to");
    if (!quiet)
        to_subscribers(s->user, st);
    to_probed(m, s, st, quiet);
    /* §4.2.2/§4.4.2: every available resource, the sender included (its
     * echo confirms the presence), except for a quiet replay. */
    to_own(s->user, quiet ? s : NULL, st);
    if (!reachable && prio >= 0) {
        /* Now it gets messages to the bare JID (sm.h: the offline flush). */
        struct sm_pkt ap = {.stanza = st, .kind = p->kind, .sess = s, .user = s->user};
        sm_hook_run(m->sm, SM_HOOK_SESS_AVAILABLE, &ap);
    }
    if (first)
        initial(s, !quiet);
    else if (s->resumed && !s->kept && s->user->roster != NULL)
        probes(s->user); /* SESSION.md: a resumed session re-probes unless kept */
    else
        return SM_HANDLED;
    /* The contacts answer these probes: until something is lost again,
     * another replay (each instance's round after a ring change brings
     * one) does not need more. */
    s->kept = m->sm->cfg->multi;
    return SM_HANDLED;
}

/* A subscription stanza from the user (§3.1.2 ...). */
static int outbound_sub(struct sm_user *u, struct xml_node *st, struct jid *to, enum sub_type t)
{
    struct jid *contact = jid_bare(to);
    struct sub_state cur;
    struct sub_result r;
    sm_roster_state(u, contact->bare, &cur);
    sub_outbound(&cur, t, &r);
    if (r.item_changed && sm_roster_find(u, contact->bare) == NULL &&
        htab_count(u->roster->items) >= (size_t)u->sm->cfg->roster_max) {
        jid_free(contact);
        return SM_ERROR(XML_STE_NOT_ALLOWED);
    }
    sm_roster_apply(u, contact->bare, &r, NULL);
    if (r.forward) {
        xml_set_attr(st, "from", u->jid->bare);
        xml_set_attr(st, "to", contact->bare);
        sm_route(u->sm, st);
        if (t == SUB_SUBSCRIBED)
            current_presence_to(u, contact->bare); /* §3.1.5 */
        else if (t == SUB_UNSUBSCRIBED && sub_has_from(cur.sub))
            for (struct sm_sess *s = u->sessions; s != NULL; s = s->next)
                if (s->available)
                    unavailable_from(u, jid_full_str(s->jid), contact->bare); /* §3.2.2 */
    }
    jid_free(contact);
    return SM_HANDLED;
}

static int on_in_sess(struct sm_mod *m, struct sm_pkt *p)
{
    if (strcmp(p->kind, "presence") != 0)
        return SM_PASS;
    /* Unavailable goes out from the roster in memory even when it is
     * stale: the contacts it has are the best guess, and the session's
     * end would send the same. */
    if (p->to == NULL && p->type != NULL && strcmp(p->type, "unavailable") == 0)
        return broadcast(m, p);
    if (!sm_roster_usable(p->user))
        return sm_roster_wait(p->user);
    if (p->to == NULL)
        return broadcast(m, p);
    int t = sub_type_parse(p->type);
    if (t >= 0)
        return outbound_sub(p->user, p->stanza, p->to, (enum sub_type)t);
    if (p->type != NULL && strcmp(p->type, "probe") == 0)
        return SM_HANDLED; /* probes are the server's business */
    /* Directed presence (§4.6): remember who must get our unavailable:
     * every target while the session is not available (before its
     * initial presence or after its broadcast unavailable, §4.6.3: no
     * broadcast would tell a subscriber), else those not subscribed. */
    struct jid *bare = jid_bare(p->to);
    struct sm_roster_item *it = sm_roster_find(p->user, bare->bare);
    bool subscribed = it != NULL && sub_has_from(it->st.sub);
    jid_free(bare);
    if (p->type == NULL && (!subscribed || !p->sess->available)) {
        struct htab *d = directed(m, p->sess, true);
        if (htab_count(d) >= SM_MAX_DIRECTED && htab_get(d, p->to->full, p->to->full_len) == NULL)
            return SM_ERROR(XML_STE_RESOURCE_CONSTRAINT);
        htab_set(d, p->to->full, p->to->full_len, (void *)1);
    } else if (p->type != NULL && strcmp(p->type, "unavailable") == 0) {
        struct htab *d = directed(m, p->sess, false);
        if (d != NULL)
            htab_del(d, p->to->full, p->to->full_len);
    }
    return SM_PASS;
}

/* What is kept of an inbound subscription request (stored until the user
 * answers, delivered at each login): from, to, type, a short id, one
 * <status/> (the stanza's language, else the first) and a XEP-0172 <nick/>, each cut to a few
 * hundred bytes. Not the whole stanza: a contact could otherwise park up to a stanza's size (and
 * every extension it likes) per request in the user's storage. */
#define SUBREQ_ID_MAX     128
#define SUBREQ_STATUS_MAX 1024
#define SUBREQ_NICK_MAX   256
#define NS_NICK           "http://jabber.org/protocol/nick"

/* len cut to at most max bytes, at a UTF-8 character boundary. */
static size_t utf8_cut(const char *t, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)t[n] & 0xC0) == 0x80)
        n--;
    return n;
}

static void copy_short(struct xml_node *to, struct xml_node *from, const char *ns, const char *name,
                       size_t max)
{
    struct xml_node *c = xml_child(from, ns, name);
    if (c == NULL)
        return;
    size_t len;
    const char *t = xml_text(c, &len);
    len = utf8_cut(t, strnlen(t, len), max);
    if (len > 0)
        xml_add_text(xml_add_child(to, ns, name), t, len);
}

/* The <status/> in the stanza's language (its xml:lang, which a status
 * without one inherits), else the first, with its language: the reduced
 * request has no xml:lang of its own. */
static void copy_status(struct xml_node *to, struct xml_node *from)
{
    const char *lang = xml_get_attr_ns(from, XML_NS_XML, "lang");
    struct xml_node *pick = NULL;
    for (struct xml_node *c = xml_child(from, XML_NS_COMPONENT, "status"); c != NULL;
         c = xml_next(c, XML_NS_COMPONENT, "status")) {
        const char *l = xml_get_attr_ns(c, XML_NS_XML, "lang");
        if (l == NULL || (lang != NULL && strcmp(l, lang) == 0)) {
            pick = c;
            break;
        }
        if (pick == NULL)
            pick = c;
    }
    if (pick == NULL)
        return;
    const char *l = xml_get_attr_ns(pick, XML_NS_XML, "lang");
    if (l == NULL)
        l = lang;
    size_t len;
    const char *t = xml_text(pick, &len);
    len = utf8_cut(t, strnlen(t, len), SUBREQ_STATUS_MAX);
    if (len == 0)
        return;
    struct xml_node *n = xml_add_child(to, XML_NS_COMPONENT, "status");
    if (l != NULL && strlen(l) <= 64) /* the xml prefix is bound in every document */
        xml_set_attr(n, "xml:lang", l);
    xml_add_text(n, t, len);
}

static struct xml_node *reduced_request(struct xml_node *st, const char *from, const char *to)
{
    struct xml_node *r = xml_new(XML_NS_COMPONENT, "presence");
    xml_set_attr(r, "from", from);
    xml_set_attr(r, "to", to);
    xml_set_attr(r, "type", "subscribe");
    const char *id = xml_get_attr(st, "id");
    if (id != NULL && strlen(id) <= SUBREQ_ID_MAX)
        xml_set_attr(r, "id", id);
    copy_status(r, st);
    copy_short(r, st, NS_NICK, "nick", SUBREQ_NICK_MAX);
    return r;
}

/* A subscription stanza to the user (§3.1.3 ...). */
static void inbound_sub(struct sm_user *u, struct xml_node *st, struct jid *from, enum sub_type t)
{
    struct jid *contact = jid_bare(from);
    struct sub_state cur;
    struct sub_result r;
    sm_roster_state(u, contact->bare, &cur);
    sub_inbound(&cur, t, &r);
    if (r.pending_changed && r.next.pending_in &&
        htab_count(u->roster->pending) >= (size_t)u->sm->cfg->roster_max) {
        /* As many waiting requests as a roster may hold items: refuse more. */
        sm_bounce(u->sm, st, XML_STE_RESOURCE_CONSTRAINT);
        jid_free(contact);
        return;
    }
    xml_set_attr(st, "from", contact->bare);
    xml_set_attr(st, "to", u->jid->bare);
    /* A request is stored and delivered reduced, the same now as at the
     * next logins. */
    struct xml_node *req = NULL;
    if (t == SUB_SUBSCRIBE) {
        req = reduced_request(st, contact->bare, u->jid->bare);
        st = req;
    }
    sm_roster_apply(u, contact->bare, &r, st);
    if (r.auto_subscribed) {
        send_type(u->sm, u->jid->bare, contact->bare, "subscribed");
        current_presence_to(u, contact->bare);
    }
    if (t == SUB_UNSUBSCRIBE && sub_has_from(cur.sub) && !sub_has_from(r.next.sub)) {
        /* §3.3.3: the contact no longer gets our presence: it learns that
         * from an unavailable from each available resource. */
        for (struct sm_sess *s = u->sessions; s != NULL; s = s->next)
            if (s->available)
                unavailable_from(u, jid_full_str(s->jid), contact->bare);
    }
    if (r.forward) {
        struct sm_sess *ss[SM_MAX_SESSIONS];
        size_t n = available(u, NULL, ss);
        sm_deliver_many(u->sm, ss, n, st);
    }
    xml_free(req);
    jid_free(contact);
}

static void answer_probe(struct sm_mod *m, struct sm_user *u, struct sm_pkt *p)
{
    struct jid *contact = jid_bare(p->from);
    struct sm_roster_item *it = sm_roster_find(u, contact->bare);
    bool self = jid_eq_bare(contact, u->jid);
    jid_free(contact);
    const char *to = p->from->full;
    if (!self && (it == NULL || !sub_has_from(it->st.sub))) {
        send_type(u->sm, u->jid->bare, to, "unsubscribed");
        return;
    }
    bool any = false;
    for (struct sm_sess *s = u->sessions; s != NULL; s = s->next)
        if (s->available && s->presence != NULL)
            any = true;
    if (any) {
        current_presence_to(u, to);
        return;
    }
    /* A session's start may be on its way (header comment): answered when
     * it comes, or at the round's end. */
    struct probed *pr = probed(m, u, true);
    if (pr != NULL && htab_count(pr->jids) < (size_t)u->sm->cfg->roster_max) {
        if (htab_get(pr->jids, to, strlen(to)) == NULL)
            htab_set(pr->jids, to, strlen(to), (void *)PROBE_WAITING);
        return;
    }
    unavailable_from(u, u->jid->bare, to);
}

/* The re-announce round is over: those who probed and got no presence get
 * the answer now. */
static int on_round_end(struct sm_mod *m, struct sm_pkt *p)
{
    struct sm_user *u = p->user;
    struct probed *pr = *sm_mod_slot(u->mdata, m);
    if (pr == NULL)
        return SM_PASS;
    bool any = false;
    for (struct sm_sess *s = u->sessions; s != NULL; s = s->next)
        if (s->available && s->presence != NULL)
            any = true;
    struct htab_iter it;
    for (htab_iter_init(&it, pr->jids); htab_iter_next(&it);) {
        char to[JID_FULL_MAX + 1];
        if (it.val != (void *)PROBE_WAITING || it.klen > JID_FULL_MAX)
            continue;
        memcpy(to, it.key, it.klen);
        to[it.klen] = '\0';
        if (any)
            current_presence_to(u, to);
        else
            unavailable_from(u, u->jid->bare, to);
    }
    user_free(m, u);
    return SM_PASS;
}

static int on_pkt_user(struct sm_mod *m, struct sm_pkt *p)
{
    if (strcmp(p->kind, "presence") != 0)
        return SM_PASS;
    struct sm_user *u = p->user;
    int t = sub_type_parse(p->type);
    if (t >= 0) {
        if (!sm_roster_usable(u))
            return sm_roster_wait(u);
        inbound_sub(u, p->stanza, p->from, (enum sub_type)t);
        return SM_HANDLED;
    }
    if (p->type != NULL && strcmp(p->type, "probe") == 0) {
        /* Not from a roster that may be wrong: it waits for the roster to
         * be read again, and gets no answer rather than a false one if
         * that fails. */
        if (p->to->resource == NULL && !sm_roster_usable(u))
            sm_roster_wait(u);
        else if (p->to->resource == NULL)
            answer_probe(m, u, p);
        return SM_HANDLED;
    }
    /* available / unavailable / error: to that resource, or to all (§4.3). */
    if (p->to->resource != NULL) {
        for (struct sm_sess *s = u->sessions; s != NULL; s = s->next)
            if (strcmp(s->jid->resource, p->to->resource) == 0)
                sm_deliver(u->sm, s, p->stanza);
        return SM_HANDLED;
    }
    struct sm_sess *ss[SM_MAX_SESSIONS];
    size_t n = available(u, NULL, ss);
    sm_deliver_many(u->sm, ss, n, p->stanza);
    return SM_HANDLED;
}

static int on_sess_end(struct sm_mod *m, struct sm_pkt *p)
{
    go_unavailable(m, p->sess, NULL);
    return SM_PASS;
}

static int init(struct sm_mod *m)
{
    sm_hook_add(m, SM_HOOK_IN_SESS, on_in_sess);
    sm_hook_add(m, SM_HOOK_PKT_USER, on_pkt_user);
    sm_hook_add(m, SM_HOOK_SESS_END, on_sess_end);
    sm_hook_add(m, SM_HOOK_ROUND_END, on_round_end);
    return 0;
}

const struct sm_module_def sm_mod_presence_def = {
    .name = "presence",
    .init = init,
    .user_free = user_free,
    .sess_free = sess_free,
    .mdata = true,
};
