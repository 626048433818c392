/*
 * mod_roster.c - RFC 6121 §2: roster get (with versioning, §2.6), set and
 * remove, pushes to interested resources, limits and errors. The data
 * lives in roster.c; this module loads it with the user and speaks the
 * jabber:iq:roster protocol for the user's own sessions.
 *
 * Versioning: versions are the storage counter (bumped by every change).
 * A get whose ver equals the current version gets an empty result (the
 * client's copy is current); any other ver gets the whole roster. Pushes
 * carry the version they produce.
 *
 * Errors (§2.1.5, §2.3.3, §2.5.3): a set with other than one item, an
 * invalid jid, a duplicate group -> bad-request; an empty or overlong group
 * or name -> not-acceptable; past <limits><roster-items> -> not-allowed;
 * removing an item that is not there -> item-not-found; a roster query to
 * another account -> forbidden; a roster too big for one stanza (names and
 * groups up to 1023 bytes make that possible well within the item limit)
 * -> resource-constraint to the get, rather than a result that the router
 * would refuse by ending the sm's connection. Runs on the sm's loop.
 */
#include "autoconfig.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/xml.h"
#include "sm/mod.h"
#include "sm/roster.h"

#define NAME_MAX_LEN  1023
#define GROUP_MAX_LEN 1023
#define GROUPS_MAX    64

static int on_load(struct sm_mod *m, struct sm_pkt *p)
{
    sm_roster_load(p->user);
    return SM_PASS;
}

static void user_free(struct sm_mod *m, struct sm_user *u)
{
    sm_roster_free(u->roster);
    u->roster = NULL;
}

/* Whether r, sent to a session, fits sm_mod_stanza_max (len: its size). */
static bool fits_one_stanza(const struct sm *sm, const struct xml_node *r, size_t *len)
{
    struct buf b = BUF_INIT;
    xml_serialize(r, XML_NS_COMPONENT, &b);
    *len = b.len;
    buf_free(&b);
    return *len <= sm_mod_stanza_max(sm);
}

static int roster_get(struct sm_sess *s, struct xml_node *iq, struct xml_node *q)
{
    struct sm_user *u = s->user;
    char ver[24];
    snprintf(ver, sizeof(ver), "%" PRId64, u->roster->version);
    s->interested = true;
    struct xml_node *r = sm_reply(iq, "result");
    const char *have = xml_get_attr(q, "ver");
    if (have == NULL || strcmp(have, ver) != 0) {
        struct xml_node *rq = xml_add_child(r, SM_NS_ROSTER, "query");
        xml_set_attr(rq, "ver", ver);
        struct htab_iter it;
        for (htab_iter_init(&it, u->roster->items); htab_iter_next(&it);)
            sm_roster_item_xml(rq, it.val);
        size_t len;
        if (!fits_one_stanza(u->sm, r, &len)) {
            log_warn("roster of %s not sent: %zu bytes, over the stanza size", u->jid->bare, len);
            xml_free(r);
            return SM_ERROR(XML_STE_RESOURCE_CONSTRAINT);
        }
    }
    sm_deliver(u->sm, s, r);
    xml_free(r);
    return SM_HANDLED;
}

/* RFC 6121 §2.5.2: removing an item cancels both subscriptions. */
static void send_presence(struct sm_user *u, const char *to, const char *type)
{
    struct xml_node *pr = xml_new(XML_NS_COMPONENT, "presence");
    xml_set_attr(pr, "from", u->jid->bare);
    xml_set_attr(pr, "to", to);
    xml_set_attr(pr, "type", type);
    sm_route(u->sm, pr);
    xml_free(pr);
}

static int roster_remove(struct sm_user *u, struct xml_node *iq, const char *jid)
{
    struct sm_roster_item *it = sm_roster_find(u, jid);
    if (it == NULL)
        return SM_ERROR(XML_STE_ITEM_NOT_FOUND);
    if (sub_has_to(it->st.sub) || it->st.ask)
        send_presence(u, jid, "unsubscribe");
    if (sub_has_from(it->st.sub) || it->st.pending_in)
        send_presence(u, jid, "unsubscribed");
    if (sub_has_from(it->st.sub)) {
        /* As for unsubscribed (§3.2.2): the contact sees us go. */
        for (struct sm_sess *s = u->sessions; s != NULL; s = s->next) {
            if (!s->available)
                continue;
            struct xml_node *pr = xml_new(XML_NS_COMPONENT, "presence");
            xml_set_attr(pr, "from", jid_full_str(s->jid));
            xml_set_attr(pr, "to", jid);
            xml_set_attr(pr, "type", "unavailable");
            sm_route(u->sm, pr);
            xml_free(pr);
        }
    }
    if (it->st.pending_in) {
        struct sub_result r;
        sub_outbound(&it->st, SUB_UNSUBSCRIBED, &r);
        r.item_changed = false;
        sm_roster_apply(u, jid, &r, NULL);
    }
    sm_roster_remove(u, it, iq);
    return SM_HANDLED;
}

static int roster_set(struct sm_sess *s, struct xml_node *iq, struct xml_node *q)
{
    struct sm_user *u = s->user;
    struct xml_node *item = xml_child(q, SM_NS_ROSTER, "item");
    if (item == NULL || xml_next(item, SM_NS_ROSTER, "item") != NULL)
        return SM_ERROR(XML_STE_BAD_REQUEST);
    struct jid *j = sm_jid(u->sm, xml_get_attr(item, "jid"));
    if (j == NULL)
        return SM_ERROR(XML_STE_BAD_REQUEST);
    char *jid = xstrdup(jid_full_str(j));
    jid_free(j);
    const char *sub = xml_get_attr(item, "subscription");
    int ret;
    if (sub != NULL && strcmp(sub, "remove") == 0) {
        ret = roster_remove(u, iq, jid);
        free(jid);
        return ret;
    }
    const char *name = xml_get_attr(item, "name");
    if (name != NULL && strlen(name) > NAME_MAX_LEN) {
        free(jid);
        return SM_ERROR(XML_STE_NOT_ACCEPTABLE);
    }
    /* Groups: checked before anything changes. */
    const char *groups[GROUPS_MAX];
    size_t ng = 0;
    for (struct xml_node *g = xml_child(item, SM_NS_ROSTER, "group"); g != NULL;
         g = xml_next(g, SM_NS_ROSTER, "group")) {
        size_t len;
        const char *t = xml_text(g, &len);
        if (len == 0 || len > GROUP_MAX_LEN || ng == GROUPS_MAX || strlen(t) != len) {
            free(jid);
            return SM_ERROR(XML_STE_NOT_ACCEPTABLE);
        }
        for (size_t i = 0; i < ng; i++) {
            if (strcmp(groups[i], t) == 0) {
                free(jid);
                return SM_ERROR(XML_STE_BAD_REQUEST);
            }
        }
        groups[ng++] = t;
    }
    struct sm_roster_item *it = sm_roster_find(u, jid);
    if (it == NULL)
        it = sm_roster_add(u, jid);
    free(jid);
    if (it == NULL)
        return SM_ERROR(XML_STE_NOT_ALLOWED);
    free(it->name);
    it->name = name && *name ? xstrdup(name) : NULL;
    for (size_t i = 0; i < it->ngroups; i++)
        free(it->groups[i]);
    free(it->groups);
    it->groups = ng ? xcalloc(ng, sizeof(char *)) : NULL;
    for (size_t i = 0; i < ng; i++)
        it->groups[i] = xstrdup(groups[i]);
    it->ngroups = ng;
    sm_roster_commit(u, it, iq);
    return SM_HANDLED;
}

static int on_in_sess(struct sm_mod *m, struct sm_pkt *p)
{
    if (strcmp(p->kind, "iq") != 0 || p->type == NULL)
        return SM_PASS;
    struct xml_node *q = xml_child(p->stanza, SM_NS_ROSTER, "query");
    if (q == NULL)
        return SM_PASS;
    if (p->to != NULL && (p->to->resource != NULL || !jid_eq_bare(p->to, p->user->jid)))
        return strcmp(p->type, "get") == 0 || strcmp(p->type, "set") == 0
                   ? SM_ERROR(XML_STE_FORBIDDEN)
                   : SM_PASS;
    if (!sm_roster_usable(p->user))
        return sm_roster_wait(p->user);
    if (strcmp(p->type, "get") == 0) {
        if (xml_child(q, NULL, NULL) != NULL)
            return SM_ERROR(XML_STE_BAD_REQUEST);
        return roster_get(p->sess, p->stanza, q);
    }
    if (strcmp(p->type, "set") == 0)
        return roster_set(p->sess, p->stanza, q);
    return SM_HANDLED; /* a result/error for a push: nothing to do */
}

/* A roster query to a user's bare JID from anyone else. */
static int on_pkt_user(struct sm_mod *m, struct sm_pkt *p)
{
    if (strcmp(p->kind, "iq") != 0 || p->to->resource != NULL ||
        xml_child(p->stanza, SM_NS_ROSTER, "query") == NULL)
        return SM_PASS;
    if (p->type != NULL && (strcmp(p->type, "get") == 0 || strcmp(p->type, "set") == 0))
        return SM_ERROR(XML_STE_FORBIDDEN);
    return SM_HANDLED;
}

static int init(struct sm_mod *m)
{
    sm_hook_add(m, SM_HOOK_USER_LOAD, on_load);
    sm_hook_add(m, SM_HOOK_IN_SESS, on_in_sess);
    sm_hook_add(m, SM_HOOK_PKT_USER, on_pkt_user);
    return 0;
}

const struct sm_module_def sm_mod_roster_def = {
    .name = "roster",
    .init = init,
    .user_free = user_free,
};
