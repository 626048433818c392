/*
 * roster.c - a user's roster in memory, its storage and its pushes (see
 * roster.h). Runs on the sm's loop.
 */
#include "autoconfig.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "sm/roster.h"

static void item_free(void *p)
{
    struct sm_roster_item *it = p;
    if (it == NULL)
        return;
    for (size_t i = 0; i < it->ngroups; i++)
        free(it->groups[i]);
    free(it->groups);
    free(it->name);
    free(it->jid);
    free(it);
}

void sm_roster_free(struct sm_roster *r)
{
    if (r == NULL)
        return;
    htab_free(r->items);
    htab_free(r->pending);
    htab_free(r->next_items);
    htab_free(r->next_pending);
    free(r);
}

static enum storage_sub sub_parse(const char *s)
{
    if (s == NULL)
        return STORAGE_SUB_NONE;
    if (strcmp(s, "to") == 0)
        return STORAGE_SUB_TO;
    if (strcmp(s, "from") == 0)
        return STORAGE_SUB_FROM;
    if (strcmp(s, "both") == 0)
        return STORAGE_SUB_BOTH;
    return STORAGE_SUB_NONE;
}

static const char *sub_str(enum storage_sub s)
{
    static const char *const names[] = {"none", "to", "from", "both"};
    return names[s];
}

/* ---- loading ---- */

/* A first load that fails fails the user (user.c forgets it once idle); a
 * reload leaves the roster stale, to be loaded again (sm_roster_usable). */
static void load_failed(struct sm_user *u)
{
    if (u->roster->reloading)
        u->roster->next_failed = true;
    else
        u->load_failed = true;
}

/* Both reload queries answered (or could not be sent): the new reading
 * replaces memory only if it is whole. */
static void reload_finish(struct sm_user *u)
{
    struct sm_roster *r = u->roster;
    r->reloading = false;
    if (!r->next_failed) {
        htab_free(r->items);
        htab_free(r->pending);
        r->items = r->next_items;
        r->pending = r->next_pending;
        r->version = r->next_version;
        r->stale = false;
        r->failures = 0;
    } else {
        log_warn("roster of %s not read again: memory kept, still stale", u->jid->bare);
        r->failures++;
        r->failed_at = uv_now(u->sm->loop);
        htab_free(r->next_items);
        htab_free(r->next_pending);
    }
    r->next_items = NULL;
    r->next_pending = NULL;
}

static void load_done(struct sm_user *u)
{
    if (--u->roster->loading == 0 && u->roster->reloading)
        reload_finish(u);
    sm_user_release(u);
}

static void on_roster(void *arg, int err, const struct storage_result *res)
{
    struct sm_user *u = arg;
    struct sm_roster *r = u->roster;
    struct htab *items = r->reloading ? r->next_items : r->items;
    struct htab *pending = r->reloading ? r->next_pending : r->pending;
    if (err != 0) {
        log_warn("roster of %s: %s", u->jid->bare, storage_result_error(res));
        load_failed(u);
    } else {
        *(r->reloading ? &r->next_version : &r->version) = storage_roster_version(res);
        int n = storage_result_rows(res);
        for (int row = 0; row < n; row++) {
            const char *jid = storage_result_text(res, row, STORAGE_COL_ROSTER_JID);
            if (jid == NULL)
                continue;
            struct sm_roster_item *it = htab_get_str(items, jid);
            if (it == NULL) {
                it = xcalloc(1, sizeof(*it));
                it->jid = xstrdup(jid);
                const char *name = storage_result_text(res, row, STORAGE_COL_ROSTER_NAME);
                it->name = name ? xstrdup(name) : NULL;
                it->st.sub = sub_parse(storage_result_text(res, row, STORAGE_COL_ROSTER_SUB));
                it->st.ask = !storage_result_null(res, row, STORAGE_COL_ROSTER_ASK);
                bool approved = false;
                storage_result_bool(res, row, STORAGE_COL_ROSTER_APPROVED, &approved);
                it->st.approved = approved;
                it->st.pending_in = htab_get_str(pending, jid) != NULL;
                htab_put_str(items, jid, it);
            }
            const char *grp = storage_result_text(res, row, STORAGE_COL_ROSTER_GROUP);
            if (grp != NULL) {
                it->groups = xreallocarray(it->groups, it->ngroups + 1, sizeof(char *));
                it->groups[it->ngroups++] = xstrdup(grp);
            }
        }
    }
    load_done(u);
}

static void on_requests(void *arg, int err, const struct storage_result *res)
{
    struct sm_user *u = arg;
    struct sm_roster *r = u->roster;
    struct htab *items = r->reloading ? r->next_items : r->items;
    struct htab *pending = r->reloading ? r->next_pending : r->pending;
    if (err != 0) {
        log_warn("subscription requests of %s: %s", u->jid->bare, storage_result_error(res));
        load_failed(u);
    } else {
        int n = storage_result_rows(res);
        for (int row = 0; row < n; row++) {
            const char *jid = storage_result_text(res, row, STORAGE_COL_SUBREQ_JID);
            const char *st = storage_result_text(res, row, STORAGE_COL_SUBREQ_STANZA);
            if (jid == NULL || st == NULL)
                continue;
            htab_set(pending, jid, strlen(jid), xstrdup(st));
            struct sm_roster_item *it = htab_get_str(items, jid);
            if (it != NULL)
                it->st.pending_in = true;
        }
    }
    load_done(u);
}

/* Both queries, each under a hold on u. */
static void load_queries(struct sm_user *u)
{
    struct sm *sm = u->sm;
    struct sm_roster *r = u->roster;
    /* The requests first: the items read pending_in from them when both
     * have arrived in either order (on_requests marks existing items). */
    if (storage_subreq_list(sm->st, u->jid->bare, on_requests, u) == 0) {
        sm_user_hold(u);
        r->loading++;
    } else {
        load_failed(u);
    }
    if (storage_roster_get(sm->st, u->jid->bare, on_roster, u) == 0) {
        sm_user_hold(u);
        r->loading++;
    } else {
        load_failed(u);
    }
    if (r->loading == 0 && r->reloading)
        reload_finish(u);
}

void sm_roster_load(struct sm_user *u)
{
    struct sm_roster *r = xcalloc(1, sizeof(*r));
    r->items = htab_new(item_free);
    r->pending = htab_new(free);
    u->roster = r;
    load_queries(u);
}

/* Memory may differ from the database (a store failed, or its outcome is
 * unknown: connection lost): read it all again, holding u meanwhile. Only
 * from a storage callback or at the start of a handler, never while a
 * handler holds item pointers. */
static void reload(struct sm_user *u)
{
    struct sm_roster *r = u->roster;
    log_notice("roster of %s read again: a change was not stored", u->jid->bare);
    r->next_items = htab_new(item_free);
    r->next_pending = htab_new(free);
    r->next_version = 0;
    r->next_failed = false;
    r->reloading = true;
    load_queries(u);
}

/* Reads of the stale roster failed lately (roster.h): start none now. */
static bool backing_off(struct sm_user *u)
{
    struct sm_roster *r = u->roster;
    if (r->failures < 2)
        return false;
    uint64_t wait = SM_ROSTER_BACKOFF_MS;
    for (unsigned i = 2; i < r->failures && wait < SM_ROSTER_BACKOFF_MAX_MS; i++)
        wait *= 2;
    if (wait > SM_ROSTER_BACKOFF_MAX_MS)
        wait = SM_ROSTER_BACKOFF_MAX_MS;
    return uv_now(u->sm->loop) - r->failed_at < wait;
}

bool sm_roster_usable(struct sm_user *u)
{
    struct sm_roster *r = u->roster;
    if (r == NULL)
        return false;
    if (!r->stale)
        return true;
    if (r->stores == 0 && !r->reloading && !(u->current && u->current->requeued) && !backing_off(u))
        reload(u);
    return false;
}

int sm_roster_wait(struct sm_user *u)
{
    struct sm_roster *r = u->roster;
    if (r != NULL && (r->reloading || r->stores > 0) && sm_user_requeue(u))
        return SM_HANDLED;
    return SM_ERROR(XML_STE_INTERNAL_SERVER_ERROR);
}

/* A store answered (failed: the roster is stale); once none is in flight a
 * stale roster is read again. */
static void store_done(struct sm_user *u, bool failed)
{
    struct sm_roster *r = u->roster;
    if (r != NULL) {
        r->stores--;
        if (failed)
            r->stale = true;
        if (r->stale && r->stores == 0 && !r->reloading)
            reload(u);
    }
    sm_user_release(u);
}

/* ---- lookups ---- */

struct sm_roster_item *sm_roster_find(struct sm_user *u, const char *jid)
{
    return u->roster ? htab_get_str(u->roster->items, jid) : NULL;
}

void sm_roster_state(struct sm_user *u, const char *jid, struct sub_state *out)
{
    struct sm_roster_item *it = sm_roster_find(u, jid);
    memset(out, 0, sizeof(*out));
    if (it != NULL)
        *out = it->st;
    out->pending_in = u->roster && htab_get_str(u->roster->pending, jid) != NULL;
}

struct sm_roster_item *sm_roster_add(struct sm_user *u, const char *jid)
{
    if (u->roster == NULL || htab_count(u->roster->items) >= (size_t)u->sm->cfg->roster_max)
        return NULL;
    struct sm_roster_item *it = xcalloc(1, sizeof(*it));
    it->jid = xstrdup(jid);
    it->st.pending_in = htab_get_str(u->roster->pending, jid) != NULL;
    htab_put_str(u->roster->items, jid, it);
    return it;
}

struct xml_node *sm_roster_item_xml(struct xml_node *parent, const struct sm_roster_item *it)
{
    struct xml_node *x = xml_add_child(parent, NULL, "item");
    xml_set_attr(x, "jid", it->jid);
    if (it->name != NULL)
        xml_set_attr(x, "name", it->name);
    xml_set_attr(x, "subscription", sub_str(it->st.sub));
    if (it->st.ask)
        xml_set_attr(x, "ask", "subscribe");
    if (it->st.approved)
        xml_set_attr(x, "approved", "true");
    for (size_t i = 0; i < it->ngroups; i++) {
        struct xml_node *g = xml_add_child(x, NULL, "group");
        xml_add_text(g, it->groups[i], strlen(it->groups[i]));
    }
    return x;
}

/* ---- storing and pushing ---- */

struct commit {
    struct sm_user *u;
    struct xml_node *push; /* the push iq, ver and id set once stored */
    struct xml_node *iq;   /* to answer, or NULL */
};

/* RFC 6121 §2.1.6: a push to every interested resource, with the new
 * version; serialised once for all of them. */
static void push(struct sm_user *u, struct xml_node *iq)
{
    struct sm_sess *ss[SM_MAX_SESSIONS];
    size_t n = 0;
    for (struct sm_sess *s = u->sessions; s != NULL && n < SM_MAX_SESSIONS; s = s->next)
        if (s->interested)
            ss[n++] = s;
    if (n == 0)
        return;
    char id[40], ver[24];
    snprintf(id, sizeof(id), "push-%" PRIu64, ++u->sm->seq);
    snprintf(ver, sizeof(ver), "%" PRId64, u->roster->version);
    xml_set_attr(iq, "id", id);
    xml_set_attr(xml_child(iq, SM_NS_ROSTER, "query"), "ver", ver);
    sm_deliver_many(u->sm, ss, n, iq);
}

static void commit_free(struct commit *c)
{
    xml_free(c->push);
    xml_free(c->iq);
    free(c);
}

static void on_stored(void *arg, int err, const struct storage_result *res)
{
    struct commit *c = arg;
    struct sm_user *u = c->u;
    int64_t ver = 0;
    bool ok = err == 0 && storage_result_int64(res, 0, 0, &ver) == 0;
    if (ok) {
        if (u->roster != NULL && ver > u->roster->version)
            u->roster->version = ver;
        if (c->iq != NULL) {
            struct xml_node *r = sm_reply(c->iq, "result");
            sm_user_answer(u, r);
            xml_free(r);
        }
        if (u->roster != NULL)
            push(u, c->push);
    } else {
        log_warn("roster of %s not stored: %s", u->jid->bare,
                 err ? storage_result_error(res) : "no version");
        if (c->iq != NULL)
            sm_user_bounce(u, c->iq, XML_STE_INTERNAL_SERVER_ERROR);
    }
    commit_free(c);
    store_done(u, !ok);
}

static struct commit *commit_new(struct sm_user *u, const struct sm_roster_item *it,
                                 const struct xml_node *iq, bool remove)
{
    struct commit *c = xcalloc(1, sizeof(*c));
    c->u = u;
    c->iq = iq ? xml_copy(iq) : NULL;
    c->push = xml_new(XML_NS_COMPONENT, "iq");
    xml_set_attr(c->push, "type", "set");
    xml_set_attr(c->push, "from", u->jid->bare);
    struct xml_node *x = sm_roster_item_xml(xml_add_child(c->push, SM_NS_ROSTER, "query"), it);
    if (remove) {
        xml_set_attr(x, "subscription", "remove");
        xml_del_attr(x, "ask");
        xml_del_attr(x, "approved");
    }
    return c;
}

static void commit_failed(struct commit *c, int rc)
{
    log_warn("roster of %s not stored: %s", c->u->jid->bare, err_str(rc));
    c->u->roster->stale = true; /* read again at the next use */
    if (c->iq != NULL)
        sm_user_bounce(c->u, c->iq, XML_STE_INTERNAL_SERVER_ERROR);
    commit_free(c);
}

void sm_roster_commit(struct sm_user *u, struct sm_roster_item *item, const struct xml_node *iq)
{
    struct commit *c = commit_new(u, item, iq, false);
    struct storage_roster_item si = {
        .jid = item->jid,
        .name = item->name,
        .sub = item->st.sub,
        .ask = item->st.ask,
        .approved = item->st.approved,
        .groups = (const char *const *)item->groups,
        .ngroups = item->ngroups,
    };
    int rc = storage_roster_set_item(u->sm->st, u->jid->bare, &si, on_stored, c);
    if (rc != 0) {
        commit_failed(c, rc);
    } else {
        sm_user_hold(u);
        u->roster->stores++;
    }
}

void sm_roster_remove(struct sm_user *u, struct sm_roster_item *item, const struct xml_node *iq)
{
    struct commit *c = commit_new(u, item, iq, true);
    int rc = storage_roster_del_item(u->sm->st, u->jid->bare, item->jid, on_stored, c);
    htab_del_str(u->roster->items, item->jid);
    item_free(item);
    if (rc != 0) {
        commit_failed(c, rc);
    } else {
        sm_user_hold(u);
        u->roster->stores++;
    }
}

static void on_request_stored(void *arg, int err, const struct storage_result *res)
{
    struct sm_user *u = arg;
    if (err != 0)
        log_warn("subscription request for %s not stored: %s", u->jid->bare,
                 storage_result_error(res));
    store_done(u, err != 0);
}

void sm_roster_apply(struct sm_user *u, const char *jid, const struct sub_result *r,
                     const struct xml_node *request)
{
    if (u->roster == NULL)
        return;
    if (r->pending_changed) {
        int rc;
        if (r->next.pending_in && request != NULL) {
            struct buf b = BUF_INIT;
            xml_serialize(request, "", &b); /* self-contained: xmlns on the root */
            htab_set(u->roster->pending, jid, strlen(jid), xstrdup(b.data));
            rc = storage_subreq_set(u->sm->st, u->jid->bare, jid, b.data, on_request_stored, u);
            buf_free(&b);
        } else {
            free(htab_del_str(u->roster->pending, jid));
            rc = storage_subreq_del(u->sm->st, u->jid->bare, jid, on_request_stored, u);
        }
        if (rc == 0) {
            sm_user_hold(u);
            u->roster->stores++;
        } else {
            log_warn("subscription request for %s not stored: %s", u->jid->bare, err_str(rc));
            u->roster->stale = true; /* read again at the next use */
        }
    }
    struct sm_roster_item *it = sm_roster_find(u, jid);
    if (it != NULL)
        it->st.pending_in = r->next.pending_in;
    if (!r->item_changed)
        return;
    if (it == NULL) {
        it = sm_roster_add(u, jid);
        if (it == NULL) {
            log_info("roster of %s full: %s not added", u->jid->bare, jid);
            return;
        }
    }
    it->st = r->next;
    sm_roster_commit(u, it, NULL);
}
