/*
 * user.c - the sm's users: loaded asynchronously, one event queue each,
 * cached while they have sessions and in an LRU of idle users afterwards.
 *
 * sm_user_get returns the user at once; a user not in memory is created in
 * state LOADING with one hold, and its account is looked up in storage.
 * When the account exists the user-load chain runs (modules start their
 * own queries, each under a hold), and once every hold is released the
 * queued events are handled in arrival order. A user whose account does
 * not exist (MISSING) or whose load failed handles its queue (errors to
 * the senders) and is forgotten at once; a failed load is tried again at
 * the next event.
 *
 * Accounts found missing are remembered for <cache><missing-ttl> seconds
 * (at most <cache><missing> of them, the oldest dropped first), so a flood
 * of stanzas to nonexistent users makes one query per name per TTL, not
 * one per stanza. Accounts are created in the database (parleyctl), unseen
 * by the sm: the TTL bounds how long a new account may still be answered
 * as missing; a login (session start) forgets the entry at once. At most
 * <limits><loads> look-ups for stanzas are in flight, shared between the
 * stanzas' origins (a local sender's bare JID, a remote sender's domain):
 * an origin may start one only while it has fewer in flight than are
 * free, so a flood from one origin (to random names, each a look-up)
 * takes at most half and the last free look-up is always for an origin
 * with none. A stanza refused that way gets resource-constraint (type
 * wait). Session starts are never refused that way (the c2s authenticated
 * them).
 *
 * An account loaded for the first time by any sm (its first-seen mark in
 * storage is not set) is claimed once its load is done, before the user's
 * first event: the user-create chain says what to store for it, and the
 * mark and those stanzas are stored in one statement (sm.h says what
 * happens when something fails).
 *
 * A user is idle when it has no session, no hold and no queued event; an
 * idle user goes to the tail of the LRU and the head is evicted past
 * <cache><users>. Any new event takes it out again. So a message to an
 * offline user, or a quick re-login, costs no roster reload.
 *
 * Several instances: after a ring change the idle users another instance
 * owns now are freed (all idle users when the new ring is not known), a
 * user another instance owns or may have changed is not cached (foreign,
 * or not ours on the ring), and a stanza of a session whose re-announced
 * start has not come yet is parked on its user until it does
 * (sm/SESSION.md).
 *
 * Runs on the sm's loop; storage callbacks arrive there too.
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "sm/sm.h"

static void lru_remove(struct sm *sm, struct sm_user *u)
{
    if (!u->in_lru)
        return;
    if (u->lru_prev)
        u->lru_prev->lru_next = u->lru_next;
    else
        sm->lru_head = u->lru_next;
    if (u->lru_next)
        u->lru_next->lru_prev = u->lru_prev;
    else
        sm->lru_tail = u->lru_prev;
    u->lru_prev = u->lru_next = NULL;
    u->in_lru = false;
    sm->lru_count--;
}

static void lru_append(struct sm *sm, struct sm_user *u)
{
    u->lru_prev = sm->lru_tail;
    u->lru_next = NULL;
    if (sm->lru_tail)
        sm->lru_tail->lru_next = u;
    else
        sm->lru_head = u;
    sm->lru_tail = u;
    u->in_lru = true;
    sm->lru_count++;
}

void sm_event_free(struct sm_event *ev)
{
    if (ev == NULL)
        return;
    xml_free(ev->stanza);
    free(ev->c2s);
    free(ev);
}

/* ---- account look-ups for stanzas (<limits><loads>), shared fairly ---- */

/* Who a stanza's look-up is charged to: the sender's bare JID when it is
 * a user of ours (c2s stamps it), else the sender's domain (a remote
 * server, as s2s verified it, or a component): each is one origin. */
static char *load_origin(struct sm *sm, const struct xml_node *st)
{
    struct jid *from = sm_jid(sm, xml_get_attr(st, "from"));
    char *o;
    if (from == NULL)
        o = xstrdup("");
    else if (sm_local_domain(sm, from) != NULL && from->node != NULL)
        o = xstrndup(from->bare, from->bare_len);
    else
        o = xstrndup(from->domain, from->domain_len);
    jid_free(from);
    return o;
}

static uintptr_t origin_count(struct sm *sm, const char *origin)
{
    return sm->load_origins ? (uintptr_t)htab_get_str(sm->load_origins, origin) : 0;
}

/* An origin may start a look-up while it has fewer in flight than are
 * free: one origin alone takes at most half of <limits><loads>, each
 * further one at most half of what is left, and the last free one is
 * always for an origin with none in flight. */
static bool load_allowed(struct sm *sm, const char *origin)
{
    unsigned max = (unsigned)sm->cfg->max_loads;
    unsigned avail = sm->loading < max ? max - sm->loading : 0;
    return origin_count(sm, origin) < avail;
}

static void load_count(struct sm_user *u, char *origin)
{
    struct sm *sm = u->sm;
    if (sm->load_origins == NULL)
        sm->load_origins = htab_new(NULL);
    htab_set(sm->load_origins, origin, strlen(origin), (void *)(origin_count(sm, origin) + 1));
    u->load_origin = origin;
    sm->loading++;
}

static void load_uncount(struct sm_user *u)
{
    struct sm *sm = u->sm;
    if (u->load_origin == NULL)
        return;
    uintptr_t k = origin_count(sm, u->load_origin);
    if (k <= 1)
        htab_del_str(sm->load_origins, u->load_origin);
    else
        htab_set(sm->load_origins, u->load_origin, strlen(u->load_origin), (void *)(k - 1));
    free(u->load_origin);
    u->load_origin = NULL;
    sm->loading--;
}

static void user_free(struct sm_user *u)
{
    struct sm *sm = u->sm;
    lru_remove(sm, u);
    htab_del(sm->users, u->jid->bare, u->jid->bare_len);
    load_uncount(u);
    for (size_t i = 0; i < sm->nmods; i++)
        if (sm->mods[i].def->user_free != NULL)
            sm->mods[i].def->user_free(&sm->mods[i], u);
    while (u->qhead != NULL) {
        struct sm_event *ev = u->qhead;
        u->qhead = ev->next;
        sm_event_free(ev);
    }
    while (u->parked != NULL) {
        struct sm_event *ev = u->parked;
        u->parked = ev->next;
        sm_event_free(ev);
    }
    sm->nheld -= u->nheld;
    jid_free(u->jid);
    free(u);
}

static void maybe_idle(struct sm_user *u)
{
    struct sm *sm = u->sm;
    if (u->nsess > 0 || u->holds > 0 || u->qhead != NULL || u->parked != NULL || u->running ||
        u->round_wait || u->in_lru)
        return;
    /* Multi-instance: a user another instance owns now, or may have
     * changed since it was read, is not cached (sess.c, SESSION.md). */
    if (u->state != SM_USER_READY || u->load_failed || u->moved || sm->stopping || u->foreign ||
        (sm->cfg->multi && !sm_sess_owns(sm, u))) {
        user_free(u);
        return;
    }
    lru_append(sm, u);
    while (sm->lru_count > (size_t)sm->cfg->user_cache)
        user_free(sm->lru_head);
}

/* ---- accounts remembered missing ---- */

struct sm_miss {
    struct sm_miss *prev, *next;
    uint64_t expires; /* uv_now ms */
    size_t klen;
    char key[];
};

static void miss_unlink(struct sm *sm, struct sm_miss *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        sm->miss_head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        sm->miss_tail = m->prev;
    htab_del(sm->missing, m->key, m->klen);
    free(m);
}

/* Entries expire in insertion order (one TTL for all): from the head. */
static void miss_expire(struct sm *sm)
{
    uint64_t now = uv_now(sm->loop);
    while (sm->miss_head != NULL && sm->miss_head->expires <= now)
        miss_unlink(sm, sm->miss_head);
}

static void miss_forget(struct sm *sm, const struct jid *bare)
{
    struct sm_miss *m = htab_get(sm->missing, bare->bare, bare->bare_len);
    if (m != NULL)
        miss_unlink(sm, m);
}

static void miss_add(struct sm *sm, const struct jid *bare)
{
    if (sm->cfg->miss_cache <= 0 || sm->loop == NULL)
        return;
    miss_forget(sm, bare);
    miss_expire(sm);
    if (htab_count(sm->missing) >= (size_t)sm->cfg->miss_cache)
        miss_unlink(sm, sm->miss_head);
    struct sm_miss *m = xcalloc(1, sizeof(*m) + bare->bare_len + 1);
    m->klen = bare->bare_len;
    memcpy(m->key, bare->bare, bare->bare_len);
    m->expires = uv_now(sm->loop) + (uint64_t)sm->cfg->miss_ttl * 1000;
    m->prev = sm->miss_tail;
    if (sm->miss_tail)
        sm->miss_tail->next = m;
    else
        sm->miss_head = m;
    sm->miss_tail = m;
    htab_put(sm->missing, m->key, m->klen, m);
}

static bool miss_hit(struct sm *sm, const struct jid *bare)
{
    if (sm->miss_head == NULL)
        return false;
    miss_expire(sm);
    return htab_get(sm->missing, bare->bare, bare->bare_len) != NULL;
}

void sm_users_miss_free(struct sm *sm)
{
    while (sm->miss_head != NULL)
        miss_unlink(sm, sm->miss_head);
}

/* ---- loading ---- */

static void on_exists(void *arg, int err, const struct storage_result *res)
{
    struct sm_user *u = arg;
    bool seen = false;
    load_uncount(u);
    if (err != 0 || (storage_result_rows(res) > 0 && storage_result_bool(res, 0, 0, &seen) != 0)) {
        log_warn("loading %s: %s", u->jid->bare, err ? storage_result_error(res) : "bad row");
        u->load_failed = true;
        u->state = SM_USER_READY;
    } else if (storage_result_rows(res) == 0) {
        u->state = SM_USER_MISSING;
        miss_add(u->sm, u->jid);
    } else {
        u->state = SM_USER_READY;
        u->create_pending = !seen;
        struct sm_pkt p;
        memset(&p, 0, sizeof(p));
        p.user = u;
        sm_hook_run(u->sm, SM_HOOK_USER_LOAD, &p);
    }
    sm_user_release(u);
}

/* ---- new accounts (user-create, sm.h) ---- */

static void on_claimed(void *arg, int err, const struct storage_result *res)
{
    struct sm_user *u = arg;
    int64_t stored = 0;
    if (err != 0) {
        log_warn("new account %s not claimed: %s (again at its next login)", u->jid->bare,
                 storage_result_error(res));
        u->create_pending = true;
        u->create_retry = true;
    } else if (storage_result_rows(res) == 1) {
        storage_result_int64(res, 0, 0, &stored);
        log_info("account %s seen for the first time: %lld stanza(s) stored for it", u->jid->bare,
                 (long long)stored);
    }
    sm_user_release(u);
}

/* Is it time to claim u (a new account) before ev? At its first event, or
 * after a failed claim at a session start, once per event. */
static bool claim_due(const struct sm_user *u, const struct sm_event *ev)
{
    return u->create_pending && u->state == SM_USER_READY && !u->load_failed && u->sm->st != NULL &&
           !ev->create_tried && (!u->create_retry || ev->kind == SM_EV_START);
}

/* Run user-create and claim the account with what it gave; true when the
 * claim is in flight (u held: ev waits for it). */
static bool claim(struct sm_user *u, struct sm_event *ev)
{
    ev->create_tried = true;
    u->create_pending = false;
    struct sm_pkt p;
    memset(&p, 0, sizeof(p));
    p.user = u;
    p.stanza = xml_new(NULL, "user-create");
    sm_hook_run(u->sm, SM_HOOK_USER_CREATE, &p);
    size_t n = xml_child_count(p.stanza), i = 0;
    char **texts = xcalloc(n ? n : 1, sizeof(*texts));
    for (struct xml_node *c = xml_child(p.stanza, NULL, NULL); c != NULL && i < n;
         c = xml_next(c, NULL, NULL), i++) {
        struct buf b = BUF_INIT;
        xml_serialize(c, "", &b); /* self-contained: xmlns on the root */
        texts[i] = buf_detach(&b, NULL);
    }
    xml_free(p.stanza);
    int rc =
        storage_user_claim(u->sm->st, u->jid->bare, (const char *const *)texts, n, on_claimed, u);
    for (i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    if (rc != 0) {
        log_warn("new account %s not claimed: %s (again at its next login)", u->jid->bare,
                 err_str(rc));
        u->create_pending = true;
        u->create_retry = true;
        return false;
    }
    sm_user_hold(u);
    return true;
}

static struct sm_user *user_new(struct sm *sm, struct jid *bare)
{
    struct sm_user *u = sm_mods_calloc(sm, sizeof(*u));
    u->mdata = (void **)(u + 1);
    u->sm = sm;
    u->jid = jid_dup(bare);
    htab_put(sm->users, bare->bare, bare->bare_len, u);
    return u;
}

/* origin (taken): a stanza's, counted against <limits><loads>; NULL for
 * a session's own load, which is not (after an sm restart every
 * re-announced session loads its user, and stanzas to the others must not
 * be refused for that). */
static struct sm_user *load(struct sm *sm, struct jid *bare, char *origin)
{
    log_debug("loading %s", bare->bare);
    struct sm_user *u = user_new(sm, bare);
    u->state = SM_USER_LOADING;
    u->holds = 1;
    int rc = sm->st ? storage_user_seen(sm->st, bare->bare, on_exists, u) : ERR_CLOSED;
    if (rc != 0) {
        log_warn("loading %s: %s", bare->bare, err_str(rc));
        u->load_failed = true;
        u->state = SM_USER_READY;
        u->holds = 0;
        free(origin);
    } else if (origin != NULL) {
        load_count(u, origin);
    }
    return u;
}

struct sm_user *sm_user_get(struct sm *sm, struct jid *bare)
{
    struct sm_user *u = htab_get(sm->users, bare->bare, bare->bare_len);
    if (u != NULL) {
        lru_remove(sm, u);
        return u;
    }
    miss_forget(sm, bare);
    return load(sm, bare, NULL);
}

struct sm_user *sm_user_get_for_stanza(struct sm *sm, struct jid *bare, const struct xml_node *st)
{
    struct sm_user *u = htab_get(sm->users, bare->bare, bare->bare_len);
    if (u != NULL) {
        lru_remove(sm, u);
        return u;
    }
    if (miss_hit(sm, bare)) {
        /* Handles its queue (errors to the senders) and is freed at once. */
        u = user_new(sm, bare);
        u->state = SM_USER_MISSING;
        return u;
    }
    char *origin = load_origin(sm, st);
    if (!load_allowed(sm, origin)) {
        log_debug("%u account look-ups in flight (%u of %s): stanza for %s refused", sm->loading,
                  (unsigned)origin_count(sm, origin), origin, bare->bare);
        free(origin);
        return NULL;
    }
    return load(sm, bare, origin);
}

void sm_user_hold(struct sm_user *u)
{
    u->holds++;
}

bool sm_user_requeue(struct sm_user *u)
{
    struct sm_event *ev = u->current;
    if (ev == NULL || ev->requeued || (ev->kind != SM_EV_IN_SESS && ev->kind != SM_EV_DELIVER))
        return false;
    ev->requeued = true;
    u->requeue = true;
    return true;
}

/* Is the start of ev's session waiting behind it on u's queue? (The whole
 * re-announce round may have come while u was loading.) */
static bool start_queued(const struct sm_user *u, const struct sm_event *ev)
{
    for (const struct sm_event *q = u->qhead; q != NULL; q = q->next)
        if (q->kind == SM_EV_START && strcmp(q->c2s, ev->c2s) == 0 && strcmp(q->sid, ev->sid) == 0)
            return true;
    return false;
}

/* A stanza of a session this instance does not know while its c2s
 * re-announces (the ring moved the user here): its start is on the way
 * (sm/SESSION.md, Several instances). ev's contents move to the list. */
static void park(struct sm_user *u, struct sm_event *ev)
{
    struct sm_event *p = xcalloc(1, sizeof(*p));
    *p = *ev;
    p->next = NULL;
    p->parked = true;
    ev->stanza = NULL;
    ev->c2s = NULL;
    struct sm_event **pp = &u->parked;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = p;
    u->nparked++;
}

void sm_user_unpark(struct sm_user *u, const char *c2s, const char *sid, bool run)
{
    struct sm_event *head = NULL, *last = NULL;
    for (struct sm_event **pp = &u->parked; *pp != NULL;) {
        struct sm_event *ev = *pp;
        if (strcmp(ev->c2s, c2s) != 0 || strcmp(ev->sid, sid) != 0) {
            pp = &ev->next;
            continue;
        }
        *pp = ev->next;
        ev->next = NULL;
        if (ev->kind == SM_EV_DELIVER) {
            u->nheld--;
            u->sm->nheld--;
        }
        if (!run) {
            u->nparked--;
            sm_event_free(ev);
            continue;
        }
        if (last != NULL)
            last->next = ev;
        else
            head = ev;
        last = ev;
        u->nparked--;
        u->qlen++;
    }
    if (head == NULL)
        return;
    last->next = u->qhead;
    if (u->qhead == NULL)
        u->qtail = last;
    u->qhead = head;
}

/* Drop u's parked stanzas of c2s; kick: each of their sessions is kicked
 * (once). */
static void unpark_drop(struct sm_user *u, const char *c2s, bool kick)
{
    struct sm *sm = u->sm;
    char(*kicked)[SM_SID_LEN + 1] = NULL;
    size_t nkicked = 0;
    for (struct sm_event **pp = &u->parked; *pp != NULL;) {
        struct sm_event *ev = *pp;
        if (strcmp(ev->c2s, c2s) != 0) {
            pp = &ev->next;
            continue;
        }
        *pp = ev->next;
        u->nparked--;
        size_t k = 0;
        while (k < nkicked && strcmp(kicked[k], ev->sid) != 0)
            k++;
        if (kick && k == nkicked) {
            kicked = xreallocarray(kicked, nkicked + 1, sizeof(*kicked));
            memcpy(kicked[nkicked++], ev->sid, sizeof(*kicked));
            log_info("stanza from unknown session %s/%s: kicked", c2s, ev->sid);
            sm_send_control(sm, c2s, u->jid->domain, "kick", ev->sid, "undefined-condition");
        }
        sm_event_free(ev);
    }
    free(kicked);
}

void sm_users_unpark_c2s(struct sm *sm, const char *c2s, const char *domain, bool kick)
{
    /* Collected first: posting may run the queue and free an idle user. */
    size_t n = 0;
    struct sm_user **us = NULL;
    struct htab_iter it;
    for (htab_iter_init(&it, sm->users); htab_iter_next(&it);) {
        struct sm_user *u = it.val;
        if (u->nparked > 0 && (domain == NULL || strcmp(u->jid->domain, domain) == 0)) {
            us = xreallocarray(us, n + 1, sizeof(*us));
            us[n++] = u;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!kick) {
            unpark_drop(us[i], c2s, false);
            maybe_idle(us[i]);
            continue;
        }
        /* Behind any start still pending on the queue (the account check):
         * the session it creates takes its stanzas first. */
        struct sm_event *ev = xcalloc(1, sizeof(*ev));
        ev->kind = SM_EV_END;
        ev->unpark = true;
        ev->c2s = xstrdup(c2s);
        sm_user_post(us[i], ev);
    }
    free(us);
}

void sm_users_flush_idle(struct sm *sm)
{
    size_t n = sm->lru_count;
    while (sm->lru_head != NULL)
        user_free(sm->lru_head);
    if (n > 0)
        log_info("%zu idle users forgotten: another instance may own them now", n);
}

void sm_users_foreign(struct sm *sm, const char *domain)
{
    struct htab_iter it;
    for (htab_iter_init(&it, sm->users); htab_iter_next(&it);) {
        struct sm_user *u = it.val;
        if (domain == NULL || strcmp(u->jid->domain, domain) == 0)
            u->foreign = true;
    }
}

void sm_users_ring_moved(struct sm *sm, const char *domain)
{
    struct htab_iter it;
    for (htab_iter_init(&it, sm->users); htab_iter_next(&it);) {
        struct sm_user *u = it.val;
        if (strcmp(u->jid->domain, domain) == 0 && !sm_sess_owns(sm, u))
            u->foreign = true;
    }
    size_t kept = 0, dropped = 0;
    for (struct sm_user *u = sm->lru_head, *next; u != NULL; u = next) {
        next = u->lru_next;
        if (!u->foreign) {
            kept += strcmp(u->jid->domain, domain) == 0;
            continue;
        }
        log_debug("%s is another instance's now: forgotten", u->jid->bare);
        user_free(u);
        dropped++;
    }
    log_info("ring of %s changed: %zu idle users kept, %zu forgotten (another instance's now)",
             domain, kept, dropped);
}

void sm_users_round_end(struct sm *sm)
{
    /* Collected first: posting may run the queue and free an idle user. */
    size_t n = 0;
    struct sm_user **us = NULL;
    struct htab_iter it;
    for (htab_iter_init(&it, sm->users); htab_iter_next(&it);) {
        struct sm_user *u = it.val;
        if (u->round_wait) {
            us = xreallocarray(us, n + 1, sizeof(*us));
            us[n++] = u;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct sm_event *ev = xcalloc(1, sizeof(*ev));
        ev->kind = SM_EV_END;
        ev->round_end = true;
        sm_user_post(us[i], ev);
    }
    free(us);
}

static void handle(struct sm_user *u, struct sm_event *ev)
{
    struct sm *sm = u->sm;
    switch (ev->kind) {
    case SM_EV_START:
        sm_sess_start(u, ev);
        break;
    case SM_EV_END: {
        if (ev->round_end) {
            if (u->round_wait && !sm_sess_resuming(sm)) {
                u->round_wait = false;
                u->held_full = false;
                struct sm_pkt p;
                memset(&p, 0, sizeof(p));
                p.user = u;
                sm_hook_run(sm, SM_HOOK_ROUND_END, &p);
                sm_sess_release(u);
            }
            break;
        }
        if (ev->unpark) {
            unpark_drop(u, ev->c2s, true);
            break;
        }
        struct sm_sess *s = sm_sess_find(sm, ev->c2s, ev->sid);
        if (s != NULL && s->user == u && ev->if_unconfirmed && s->unconfirmed && ev->moved) {
            /* Re-announced to the instance the new ring names: it holds
             * the session now, and the contacts have its presence. */
            log_info("session %s of %s moved to another instance: dropped here", s->sid,
                     jid_full_str(s->jid));
            u->moved = true;
            sm_sess_drop(s);
        } else if (s != NULL && s->user == u && (!ev->if_unconfirmed || s->unconfirmed)) {
            if (ev->if_unconfirmed)
                log_info("session %s not re-announced by %s: ended", s->sid, s->c2s);
            sm_sess_end(s, NULL, NULL);
        }
        break;
    }
    case SM_EV_IN_SESS: {
        struct sm_sess *s = sm_sess_find(sm, ev->c2s, ev->sid);
        if (s != NULL && s->user == u) {
            /* Handled again if requeued: as if it had not been yet. */
            bool was_resumed = s->resumed, was_restored = s->restored;
            /* A parked stanza came before the resumed start: the c2s's
             * replay of the presence still follows it. A parked presence
             * is the client's, live: broadcast; the replay that follows is
             * then news only if it differs from it. */
            bool resumed = ev->parked && s->resumed;
            if (resumed && strcmp(ev->stanza->name, "presence") == 0) {
                s->resumed = false;
                s->restored = false;
            }
            sm_pkt_sess(s, ev->stanza);
            if (resumed)
                s->resumed = true;
            if (u->requeue) {
                s->resumed = was_resumed;
                s->restored = was_restored;
            }
        } else if (sm->cfg->multi && u->nparked - u->nheld < (unsigned)sm->cfg->queue_max &&
                   (sm_sess_resuming_c2s(sm, ev->c2s, u->jid->domain) || start_queued(u, ev))) {
            park(u, ev);
        } else {
            /* The c2s believes in a session the sm does not know (it ended
             * here first): tell it, so that it closes the client's stream. */
            log_info("stanza from unknown session %s/%s: kicked", ev->c2s, ev->sid);
            sm_send_control(sm, ev->c2s, u->jid->domain, "kick", ev->sid, "undefined-condition");
        }
        break;
    }
    case SM_EV_DELIVER:
        sm_sess_deliver(u, ev);
        break;
    }
}

static void drain(struct sm_user *u)
{
    if (u->running)
        return;
    u->running = true;
    while (u->holds == 0 && u->state != SM_USER_LOADING && u->qhead != NULL) {
        struct sm_event *ev = u->qhead;
        if (claim_due(u, ev) && claim(u, ev))
            continue; /* ev waits for the claim */
        u->qhead = ev->next;
        if (u->qhead == NULL)
            u->qtail = NULL;
        u->qlen--;
        u->current = ev;
        handle(u, ev);
        u->current = NULL;
        if (u->requeue) {
            u->requeue = false;
            ev->next = u->qhead;
            if (u->qhead == NULL)
                u->qtail = ev;
            u->qhead = ev;
            u->qlen++;
            continue;
        }
        sm_event_free(ev);
    }
    u->running = false;
    maybe_idle(u);
}

void sm_user_release(struct sm_user *u)
{
    if (u->holds > 0)
        u->holds--;
    if (u->holds == 0)
        drain(u);
}

/* A full queue refuses new work with resource-constraint. */
static void refuse(struct sm_user *u, struct sm_event *ev)
{
    struct sm *sm = u->sm;
    log_warn("queue of %s full (%u events): refusing", u->jid->bare, u->qlen);
    if (ev->kind == SM_EV_START) {
        const char *sid = xml_get_attr(ev->stanza, "sid");
        if (sid != NULL)
            sm_send_control(sm, ev->c2s, u->jid->domain, "failed", sid, "resource-constraint");
    } else if (ev->kind == SM_EV_IN_SESS) {
        /* Not through sm_bounce: the error would come back to this very
         * queue, full, and be dropped there. */
        struct sm_sess *s = sm_sess_find(sm, ev->c2s, ev->sid);
        if (s != NULL && s->user == u)
            sm_sess_bounce(s, ev->stanza, XML_STE_RESOURCE_CONSTRAINT);
    } else if (ev->stanza != NULL && ev->kind != SM_EV_END) {
        sm_bounce(sm, ev->stanza, XML_STE_RESOURCE_CONSTRAINT);
    }
    sm_event_free(ev);
}

void sm_user_post(struct sm_user *u, struct sm_event *ev)
{
    lru_remove(u->sm, u);
    if (u->qlen >= (unsigned)u->sm->cfg->queue_max && ev->kind != SM_EV_END) {
        refuse(u, ev);
        maybe_idle(u);
        return;
    }
    ev->next = NULL;
    if (u->qtail)
        u->qtail->next = ev;
    else
        u->qhead = ev;
    u->qtail = ev;
    u->qlen++;
    drain(u);
}

struct sm_sess *sm_user_top_sess(struct sm_user *u)
{
    struct sm_sess *best = NULL;
    for (struct sm_sess *s = u->sessions; s != NULL; s = s->next) {
        if (!s->available || s->priority < 0)
            continue;
        if (best == NULL || s->priority > best->priority ||
            (s->priority == best->priority && s->active_seq > best->active_seq))
            best = s;
    }
    return best;
}

void sm_users_free(struct sm *sm)
{
    /* Collected first: freeing while iterating is not allowed. */
    size_t n = htab_count(sm->users), i = 0;
    struct sm_user **all = xcalloc(n ? n : 1, sizeof(*all));
    struct htab_iter it;
    for (htab_iter_init(&it, sm->users); htab_iter_next(&it) && i < n;)
        all[i++] = it.val;
    for (size_t k = 0; k < i; k++) {
        struct sm_user *u = all[k];
        while (u->sessions != NULL)
            sm_sess_drop(u->sessions);
        u->holds = 0;
        user_free(u);
    }
    free(all);
    htab_free(sm->load_origins);
    sm->load_origins = NULL;
}

/* The session of u whose full JID is jid, or NULL. */
static struct sm_sess *own_sess(struct sm_user *u, const char *jid)
{
    struct jid *j = sm_jid(u->sm, jid);
    struct sm_sess *found = NULL;
    if (j != NULL && j->resource != NULL && jid_eq_bare(j, u->jid))
        for (struct sm_sess *s = u->sessions; s != NULL && found == NULL; s = s->next)
            if (strcmp(s->jid->resource, j->resource) == 0)
                found = s;
    jid_free(j);
    return found;
}

void sm_user_answer(struct sm_user *u, struct xml_node *st)
{
    struct sm_sess *s = own_sess(u, xml_get_attr(st, "to"));
    if (s != NULL)
        sm_deliver(u->sm, s, st);
    else
        sm_route(u->sm, st);
}

void sm_user_bounce(struct sm_user *u, const struct xml_node *st, enum xml_stanza_err cond)
{
    struct sm_sess *s = own_sess(u, xml_get_attr(st, "from"));
    if (s != NULL)
        sm_sess_bounce(s, st, cond);
    else
        sm_bounce(u->sm, st, cond);
}
