/*
 * sess.c - the sm side of the session protocol (sm/SESSION.md): start,
 * end, replaced, kick, announce/announced (sessions a c2s did not start
 * again after an announce are ended), and the end of every session of a
 * c2s that went down. With several instances, a ring change (another
 * instance joined or left) asks every c2s to re-announce, and the sessions
 * not started again here moved: they are dropped without a broadcast.
 * Each announce names its round (round='ID'): only the announced with
 * that ID ends it, or <limits><round-timeout> (a wedged c2s). While a
 * round lasts, stanzas to a user whose session is not here are held for
 * it (sm_sess_deliver). It also clears a session's kept mark when
 * something may have been lost for it (router loss, unconfirmed at a ring
 * change, a start changed='true'): its next replay re-probes (SESSION.md).
 * And it follows each domain's ring (the router's bind answer, then each
 * ring notify: router/PROTOCOL.md), so that a ring change forgets only the
 * cached users another instance owns now (sm_sess_ring).
 *
 * Control elements from a c2s are turned into events on the user's queue,
 * so that a start, the stanzas that follow it and the end are handled in
 * the order the c2s sent them, even while the user is still loading.
 * A start is answered only after storage confirmed the account (a cached
 * user might have been deleted since); an end that arrives meanwhile
 * (no session yet) is queued on the user named by the route's key, behind
 * the start, so that the session it creates is ended, not left a ghost.
 *
 * Sessions are indexed by "c2s\nsid" in sm->sessions and listed on their
 * user. Runs on the sm's loop.
 */
#include "autoconfig.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rand.h"
#include "sm/sm.h"

static char *sess_key(const char *c2s, const char *sid)
{
    size_t a = strlen(c2s), b = strlen(sid);
    char *k = xmalloc(a + b + 2);
    memcpy(k, c2s, a);
    k[a] = '\n';
    memcpy(k + a + 1, sid, b + 1);
    return k;
}

struct sm_sess *sm_sess_find(struct sm *sm, const char *c2s, const char *sid)
{
    char *k = sess_key(c2s, sid);
    struct sm_sess *s = htab_get_str(sm->sessions, k);
    free(k);
    return s;
}

static bool valid_sid(const char *sid)
{
    if (sid == NULL || strlen(sid) != SM_SID_LEN)
        return false;
    for (const char *p = sid; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

void sm_sess_post_end(struct sm *sm, const char *c2s, const char *sid)
{
    struct sm_sess *s = sm_sess_find(sm, c2s, sid);
    if (s == NULL)
        return;
    struct sm_event *ev = xcalloc(1, sizeof(*ev));
    ev->kind = SM_EV_END;
    ev->c2s = xstrdup(c2s);
    snprintf(ev->sid, sizeof(ev->sid), "%s", sid);
    sm_user_post(s->user, ev);
}

/* An end for a session not (yet) known: its start may still be pending on
 * the user's queue (the account check), so the end goes on that queue too,
 * behind it; the user named by the route's key, if it is loaded at all (a
 * start in progress keeps it loaded). */
static void post_end_key(struct sm *sm, const char *c2s, const char *sid, const char *key)
{
    struct jid *j = key ? sm_jid(sm, key) : NULL;
    struct sm_user *u = NULL;
    if (j != NULL && j->node != NULL && j->resource == NULL && sm_local_domain(sm, j) != NULL)
        u = htab_get(sm->users, j->bare, j->bare_len);
    jid_free(j);
    if (u == NULL)
        return;
    struct sm_event *ev = xcalloc(1, sizeof(*ev));
    ev->kind = SM_EV_END;
    ev->c2s = xstrdup(c2s);
    snprintf(ev->sid, sizeof(ev->sid), "%s", sid);
    sm_user_post(u, ev);
}

/* The sessions of c2s (NULL: every c2s) in domain (NULL: all) are no
 * longer moving: their round is over, or was not caused by a ring change,
 * or cannot end any more. */
static void settle(struct sm *sm, const char *c2s, const char *domain)
{
    struct htab_iter it;
    for (htab_iter_init(&it, sm->sessions); htab_iter_next(&it);) {
        struct sm_sess *s = it.val;
        if ((c2s == NULL || strcmp(s->c2s, c2s) == 0) &&
            (domain == NULL || strcmp(s->jid->domain, domain) == 0))
            s->moving = false;
    }
}

bool sm_sess_resuming_c2s(struct sm *sm, const char *c2s, const char *domain)
{
    char *k = sess_key(c2s, domain);
    bool r = htab_get_str(sm->resuming, k) != NULL;
    free(k);
    return r;
}

/* The sessions of c2s in domain the sm announced to it and that it did not
 * start again (resume) before its <announced/>: their clients are gone. The
 * ends go on the users' queues, behind any resume start still pending there. */
static void end_unconfirmed(struct sm *sm, const char *c2s, const char *domain)
{
    /* Posting may end sessions at once: collect first, then post. */
    struct htab_iter it;
    char **sids = NULL;
    size_t count = 0;
    for (htab_iter_init(&it, sm->sessions); htab_iter_next(&it);) {
        struct sm_sess *s = it.val;
        if (s->unconfirmed && strcmp(s->c2s, c2s) == 0 && strcmp(s->jid->domain, domain) == 0) {
            sids = xreallocarray(sids, count + 1, sizeof(char *));
            sids[count++] = xstrdup(s->sid);
        }
    }
    for (size_t i = 0; i < count; i++) {
        struct sm_sess *s = sm_sess_find(sm, c2s, sids[i]);
        if (s != NULL) {
            struct sm_event *ev = xcalloc(1, sizeof(*ev));
            ev->kind = SM_EV_END;
            ev->if_unconfirmed = true;
            ev->moved = s->moving; /* the round decided: the mark is cleared below */
            ev->c2s = xstrdup(c2s);
            snprintf(ev->sid, sizeof(ev->sid), "%s", sids[i]);
            sm_user_post(s->user, ev);
        }
        free(sids[i]);
    }
    free(sids);
    settle(sm, c2s, domain);
}

/* A round: an announce sent to a c2s for a domain, no announced yet. */
struct round {
    char id[RAND_ID_HEXLEN + 1];
    uint64_t deadline; /* uv_now ms: ended then as if announced */
};

/* The round of c2s for domain is over (its announced, or its timeout): the
 * sessions it did not re-announce are ended (or dropped, moved), the
 * stanzas waiting for them handled. */
static void round_over(struct sm *sm, const char *c2s, const char *domain)
{
    char *k = sess_key(c2s, domain);
    free(htab_del_str(sm->resuming, k));
    free(k);
    end_unconfirmed(sm, c2s, domain);
    sm_users_unpark_c2s(sm, c2s, domain, true);
    if (!sm_sess_resuming(sm))
        sm_users_round_end(sm);
}

static void on_round_timeout(uv_timer_t *t);

/* The timer fires at the earliest deadline of the rounds open. */
static void arm_timer(struct sm *sm)
{
    if (!sm->round_timer_init || sm->stopping)
        return;
    uint64_t first = UINT64_MAX;
    struct htab_iter it;
    for (htab_iter_init(&it, sm->resuming); htab_iter_next(&it);) {
        const struct round *r = it.val;
        if (r->deadline < first)
            first = r->deadline;
    }
    if (first == UINT64_MAX) {
        uv_timer_stop(&sm->round_timer);
        return;
    }
    uint64_t now = uv_now(sm->loop);
    uv_timer_start(&sm->round_timer, on_round_timeout, first > now ? first - now : 0, 0);
}

/* A c2s that does not answer an announce in time (wedged) must not keep
 * the sessions it did not re-announce, and the stanzas waiting for the
 * round, forever. */
static void on_round_timeout(uv_timer_t *t)
{
    struct sm *sm = t->data;
    uint64_t now = uv_now(sm->loop);
    for (;;) {
        /* A copy of the key (c2s name and domain: any length), taken
         * before round_over changes the table. */
        char *key = NULL;
        struct htab_iter it;
        for (htab_iter_init(&it, sm->resuming); htab_iter_next(&it);) {
            const struct round *r = it.val;
            if (r->deadline <= now) {
                key = xstrndup(it.key, it.klen);
                break;
            }
        }
        if (key == NULL)
            break;
        char *nl = strchr(key, '\n');
        if (nl == NULL) { /* not a key of ours: cannot happen */
            free(htab_del_str(sm->resuming, key));
            free(key);
            if (!sm_sess_resuming(sm))
                sm_users_round_end(sm);
            continue;
        }
        *nl = '\0';
        log_warn("%s did not re-announce its sessions of %s within %d s: round ended", key, nl + 1,
                 sm->cfg->round_timeout);
        round_over(sm, key, nl + 1);
        free(key);
    }
    arm_timer(sm);
}

void sm_sess_timer_init(struct sm *sm)
{
    uv_timer_init(sm->loop, &sm->round_timer);
    sm->round_timer.data = sm;
    sm->round_timer_init = true;
}

void sm_sess_timer_close(struct sm *sm)
{
    if (!sm->round_timer_init)
        return;
    sm->round_timer_init = false;
    uv_timer_stop(&sm->round_timer);
    uv_close((uv_handle_t *)&sm->round_timer, NULL);
}

void sm_sess_control(struct sm *sm, const char *c2s, const char *to, const char *key,
                     struct xml_node *ctl)
{
    const char *sid = xml_get_attr(ctl, "sid");
    if (strcmp(ctl->name, "end") == 0) {
        if (!valid_sid(sid))
            return;
        if (sm_sess_find(sm, c2s, sid) != NULL)
            sm_sess_post_end(sm, c2s, sid);
        else /* a keyless end (to every instance) names the user in jid */
            post_end_key(sm, c2s, sid, key != NULL ? key : xml_get_attr(ctl, "jid"));
        return;
    }
    if (strcmp(ctl->name, "announced") == 0) {
        /* For the domain the announce came from (the c2s answers to it). */
        if (to == NULL || !sm_domain_name(sm, to)) {
            log_warn("announced from %s for no domain of ours ignored", c2s);
            return;
        }
        /* With a round id, only the announced of our round ends it: the
         * c2s's announced goes to every instance (the other instances'
         * rounds too) and may answer an earlier announce of ours. */
        const char *round = xml_get_attr(ctl, "round");
        char *k = sess_key(c2s, to);
        const struct round *ours = htab_get_str(sm->resuming, k);
        free(k);
        if (round != NULL && (ours == NULL || strcmp(ours->id, round) != 0)) {
            log_debug("announced from %s for another round ignored", c2s);
            return;
        }
        log_info("%s re-announced its sessions", c2s);
        round_over(sm, c2s, to);
        return;
    }
    if (strcmp(ctl->name, "start") != 0) {
        log_warn("unknown session element <%s/> from %s ignored", ctl->name, c2s);
        return;
    }
    if (!valid_sid(sid)) {
        log_warn("start from %s with a bad sid ignored", c2s);
        return;
    }
    struct jid *j = sm_jid(sm, xml_get_attr(ctl, "jid"));
    const char *dom = j ? sm_local_domain(sm, j) : NULL;
    if (j == NULL || j->node == NULL || j->resource == NULL || dom == NULL) {
        log_warn("start from %s for jid '%s' refused", c2s,
                 xml_get_attr(ctl, "jid") ? xml_get_attr(ctl, "jid") : "");
        sm_send_control(sm, c2s, dom ? dom : sm_default_domain(sm), "failed", sid,
                        "not-authorized");
        jid_free(j);
        return;
    }
    struct jid *bare = jid_bare(j);
    struct sm_user *u = sm_user_get(sm, bare);
    jid_free(bare);
    jid_free(j);
    /* A re-announced start in a round: the user's round-end event goes
     * behind it. Deliveries queued before it while the user loads (a new
     * instance: its storage may still be connecting) are then held for the
     * session it creates, though the announced ends the round first. */
    const char *resume = xml_get_attr(ctl, "resume");
    if (sm->cfg->multi && sm_sess_resuming(sm) && resume != NULL && strcmp(resume, "true") == 0)
        u->round_wait = true;
    struct sm_event *ev = xcalloc(1, sizeof(*ev));
    ev->kind = SM_EV_START;
    ev->stanza = xml_copy(ctl);
    ev->c2s = xstrdup(c2s);
    snprintf(ev->sid, sizeof(ev->sid), "%s", sid);
    sm_user_post(u, ev);
}

/* A start whose account check is under way. */
struct pending_start {
    struct sm_user *u;
    char *c2s;
    char sid[SM_SID_LEN + 1];
    struct jid *jid;
    bool resume;
    bool changed; /* resume: the presence replayed never reached an sm */
};

static void failed(struct pending_start *ps, const char *cond)
{
    log_info("session %s for %s refused: %s", ps->sid, jid_full_str(ps->jid), cond);
    sm_send_control(ps->u->sm, ps->c2s, ps->jid->domain, "failed", ps->sid, cond);
    sm_user_unpark(ps->u, ps->c2s, ps->sid, false);
}

static void create(struct pending_start *ps)
{
    struct sm_user *u = ps->u;
    struct sm *sm = u->sm;
    struct sm_sess *old = NULL;
    for (struct sm_sess *s = u->sessions; s != NULL; s = s->next)
        if (strcmp(s->jid->resource, ps->jid->resource) == 0)
            old = s;
    if (old == NULL && u->nsess >= (unsigned)sm->cfg->max_sessions) {
        failed(ps, "resource-constraint");
        return;
    }
    if (old != NULL) {
        /* RFC 6120 §7.7.2.2: the newest session wins. */
        log_info("session %s of %s replaced by %s", old->sid, jid_full_str(old->jid), ps->sid);
        sm_sess_end(old, "replaced", NULL);
    }
    struct sm_sess *s = sm_mods_calloc(sm, sizeof(*s));
    s->mdata = (void **)(s + 1);
    s->user = u;
    memcpy(s->sid, ps->sid, sizeof(s->sid));
    s->c2s = xstrdup(ps->c2s);
    s->jid = jid_dup(ps->jid);
    s->key = sess_key(s->c2s, s->sid);
    s->resumed = ps->resume;
    s->restored = ps->resume && !ps->changed;
    s->kept = sm->cfg->multi;
    htab_put_str(sm->sessions, s->key, s);
    s->next = u->sessions;
    u->sessions = s;
    u->nsess++;
    struct sm_pkt p;
    memset(&p, 0, sizeof(p));
    p.sess = s;
    p.user = u;
    sm_hook_run(sm, SM_HOOK_SESS_START, &p);
    log_info("session %s started for %s on %s%s", s->sid, jid_full_str(s->jid), s->c2s,
             s->resumed ? " (resumed)" : "");
    sm_send_control(sm, s->c2s, s->jid->domain, "started", s->sid, NULL);
    u->moved = false;
    /* Held deliveries are tried again behind the session's own parked
     * stanzas (a presence it sent while moving goes first). */
    sm_sess_release(u);
    sm_user_unpark(u, s->c2s, s->sid, true);
}

static void pending_free(struct pending_start *ps)
{
    jid_free(ps->jid);
    free(ps->c2s);
    free(ps);
}

/* The account was deleted while loaded: its sessions are kicked
 * (SESSION.md: not-authorized) and the modules forget its data. */
static void account_gone(struct sm_user *u)
{
    log_notice("account %s no longer exists: ending its %u session%s", u->jid->bare, u->nsess,
               u->nsess == 1 ? "" : "s");
    while (u->sessions != NULL)
        sm_sess_end(u->sessions, "kick", "not-authorized");
    struct sm_pkt p;
    memset(&p, 0, sizeof(p));
    p.user = u;
    sm_hook_run(u->sm, SM_HOOK_USER_DELETE, &p);
    u->state = SM_USER_MISSING;
}

static void on_checked(void *arg, int err, const struct storage_result *res)
{
    struct pending_start *ps = arg;
    struct sm_user *u = ps->u;
    bool exists = false;
    if (err != 0 || storage_result_bool(res, 0, 0, &exists) != 0) {
        failed(ps, "internal-server-error");
    } else if (!exists) {
        failed(ps, "not-authorized");
        if (u->state == SM_USER_READY)
            account_gone(u);
    } else
        create(ps);
    pending_free(ps);
    sm_user_release(u);
}

void sm_sess_start(struct sm_user *u, struct sm_event *ev)
{
    struct sm *sm = u->sm;
    const char *jid = xml_get_attr(ev->stanza, "jid");
    const char *resume = xml_get_attr(ev->stanza, "resume");
    struct sm_sess *dup = sm_sess_find(sm, ev->c2s, ev->sid);
    struct jid *j = sm_jid(sm, jid);
    if (j == NULL)
        return;
    if (dup != NULL) {
        /* A repeated start (an announce answered after the router came
         * back, while this sm kept its sessions): same answer; the presence
         * the c2s sends again is not news to the contacts. */
        if (jid_eq_full(dup->jid, j)) {
            dup->resumed = resume != NULL && strcmp(resume, "true") == 0;
            /* The replay that follows never reached an sm: news (the c2s
             * may have started it once already, with no replay, when the
             * domain came back). */
            const char *changed = xml_get_attr(ev->stanza, "changed");
            if (changed != NULL && strcmp(changed, "true") == 0) {
                dup->restored = false;
                dup->kept = false; /* a forward bounced: so may have stanzas to it */
            }
            dup->unconfirmed = false;
            dup->moving = false;
            sm_send_control(sm, ev->c2s, j->domain, "started", ev->sid, NULL);
        } else
            sm_send_control(sm, ev->c2s, j->domain, "failed", ev->sid, "conflict");
        jid_free(j);
        return;
    }
    struct pending_start *ps = xcalloc(1, sizeof(*ps));
    ps->u = u;
    ps->c2s = xstrdup(ev->c2s);
    memcpy(ps->sid, ev->sid, sizeof(ps->sid));
    ps->jid = j;
    ps->resume = resume != NULL && strcmp(resume, "true") == 0;
    const char *changed = xml_get_attr(ev->stanza, "changed");
    ps->changed = changed != NULL && strcmp(changed, "true") == 0;
    if (u->state == SM_USER_MISSING || u->load_failed) {
        /* A failed load is forgotten once the user is idle: the client's
         * next attempt loads it again. */
        failed(ps, u->load_failed ? "internal-server-error" : "not-authorized");
        pending_free(ps);
        return;
    }
    int rc = sm->st ? storage_user_exists(sm->st, u->jid->bare, on_checked, ps) : ERR_CLOSED;
    if (rc != 0) {
        failed(ps, "internal-server-error");
        pending_free(ps);
        return;
    }
    sm_user_hold(u);
}

static void unlink_sess(struct sm_sess *s)
{
    struct sm_user *u = s->user;
    for (struct sm_sess **pp = &u->sessions; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            u->nsess--;
            break;
        }
    }
    htab_del_str(u->sm->sessions, s->key);
}

void sm_sess_drop(struct sm_sess *s)
{
    struct sm *sm = s->user->sm;
    for (size_t i = 0; i < sm->nmods; i++)
        if (sm->mods[i].def->sess_free != NULL)
            sm->mods[i].def->sess_free(&sm->mods[i], s);
    unlink_sess(s);
    xml_free(s->presence);
    jid_free(s->jid);
    free(s->key);
    free(s->c2s);
    free(s);
}

void sm_sess_end(struct sm_sess *s, const char *notify, const char *reason)
{
    struct sm *sm = s->user->sm;
    if (notify != NULL)
        sm_send_control(sm, s->c2s, s->jid->domain, notify, s->sid, reason);
    struct sm_pkt p;
    memset(&p, 0, sizeof(p));
    p.sess = s;
    p.user = s->user;
    sm_hook_run(sm, SM_HOOK_SESS_END, &p);
    log_info("session %s of %s ended", s->sid, jid_full_str(s->jid));
    sm_sess_drop(s);
}

void sm_sess_c2s_down(struct sm *sm, const char *c2s)
{
    bool was = sm_sess_resuming(sm);
    struct htab_iter it;
    size_t n = strlen(c2s);
    for (htab_iter_init(&it, sm->resuming); htab_iter_next(&it);)
        if (it.klen > n && memcmp(it.key, c2s, n) == 0 && ((const char *)it.key)[n] == '\n')
            free(htab_iter_del(&it));
    sm_users_unpark_c2s(sm, c2s, NULL, false);
    /* Its sessions end with a broadcast, also those an announced of the
     * round has queued an end for. */
    settle(sm, c2s, NULL);
    if (was && !sm_sess_resuming(sm))
        sm_users_round_end(sm);
    char **sids = NULL;
    size_t count = 0;
    for (htab_iter_init(&it, sm->sessions); htab_iter_next(&it);) {
        struct sm_sess *s = it.val;
        if (strlen(s->c2s) == n && memcmp(s->c2s, c2s, n) == 0) {
            sids = xreallocarray(sids, count + 1, sizeof(char *));
            sids[count++] = xstrdup(s->sid);
        }
    }
    if (count > 0)
        log_info("%s is down: ending its %zu session%s", c2s, count, count == 1 ? "" : "s");
    for (size_t i = 0; i < count; i++) {
        sm_sess_post_end(sm, c2s, sids[i]);
        free(sids[i]);
    }
    free(sids);
}

void sm_sess_router_down(struct sm *sm)
{
    /* The starts on their way may be lost with the router: the stanzas
     * waiting for them are dropped, and the next round (the router
     * re-notifies every c2s) ends unconfirmed sessions with a broadcast. */
    struct htab_iter it;
    for (htab_iter_init(&it, sm->resuming); htab_iter_next(&it);) {
        const char *nl = memchr(it.key, '\n', it.klen);
        size_t len = nl != NULL ? (size_t)(nl - (const char *)it.key) : it.klen;
        char *name = xstrndup(it.key, len); /* a c2s name may be long */
        sm_users_unpark_c2s(sm, name, NULL, false);
        free(name);
    }
    htab_free(sm->resuming);
    sm->resuming = htab_new(free);
    settle(sm, NULL, NULL);
    /* Stanzas to the sessions may be lost with the router: each replay
     * re-probes the contacts. */
    struct htab_iter si;
    for (htab_iter_init(&si, sm->sessions); htab_iter_next(&si);)
        ((struct sm_sess *)si.val)->kept = false;
    sm_users_round_end(sm);
    if (sm->cfg->multi) {
        /* Meanwhile the router gave our users to the other instances, which
         * may change them: nothing in memory is cached any more, and the
         * rings are learnt again from the binds. */
        sm_sess_rings_free(sm);
        sm_users_foreign(sm, NULL);
        sm_users_flush_idle(sm);
    }
}

void sm_sess_announce(struct sm *sm, const char *c2s, const char *domain, bool ring)
{
    log_info("announce to %s for %s", c2s, domain);
    if (!ring)
        settle(sm, c2s, domain);
    /* Its sessions of domain count as gone unless it starts them again
     * before its <announced/> for domain (SESSION.md); sessions created
     * later are confirmed. */
    struct htab_iter it;
    for (htab_iter_init(&it, sm->sessions); htab_iter_next(&it);) {
        struct sm_sess *s = it.val;
        if (strcmp(s->c2s, c2s) == 0 && strcmp(s->jid->domain, domain) == 0)
            s->unconfirmed = true;
    }
    htab_set(sm->c2s, c2s, strlen(c2s), (void *)1);
    /* A new round id: an announced that answers an earlier announce (of
     * ours or of another instance) does not end this round. */
    struct round *round = xcalloc(1, sizeof(*round));
    rand_id_hex(round->id);
    round->deadline = uv_now(sm->loop) + (uint64_t)sm->cfg->round_timeout * 1000;
    char *k = sess_key(c2s, domain);
    htab_set(sm->resuming, k, strlen(k), round);
    free(k);
    arm_timer(sm);
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<r:route to='");
    xml_escape_attr(c2s, strlen(c2s), &b);
    buf_append_str(&b, "' from='");
    xml_escape_attr(domain, strlen(domain), &b);
    buf_printf(&b, "'><announce xmlns='" SM_NS_SESSION "' round='%s'/></r:route>", round->id);
    if (sm->comp != NULL)
        component_send_raw(sm->comp, b.data, b.len);
    buf_free(&b);
}

void sm_sess_announce_all(struct sm *sm, const char *c2s)
{
    for (size_t i = 0; i < sm->ndomains; i++)
        sm_sess_announce(sm, c2s, sm->domains[i], false);
}

/*
 * What this instance knows of a domain's ring (multi-instance,
 * router/PROTOCOL.md): our slot, from the bind answer, and the ring (its
 * generation and the slots of its instances), from the bind answer and then
 * from each ring notify. The ring is computed as the router computes it
 * (common/ring), so this instance knows which users it owns.
 */
struct sm_ring {
    bool has_slot;
    bool known; /* the ring below is the one the router routes by */
    unsigned slot;
    uint64_t gen;
    unsigned *slots;
    size_t n;
    struct ring ring;
};

/* Far more instances than any sm runs: a bound on what is parsed. */
#define SM_RING_SLOTS_MAX 1024

static void ring_state_free(void *p)
{
    struct sm_ring *r = p;
    if (r == NULL)
        return;
    free(r->slots);
    ring_clear(&r->ring);
    free(r);
}

static struct sm_ring *ring_of(struct sm *sm, const char *domain)
{
    if (sm->rings == NULL)
        sm->rings = htab_new(ring_state_free);
    struct sm_ring *r = htab_get_str(sm->rings, domain);
    if (r == NULL) {
        r = xcalloc(1, sizeof(*r));
        htab_put_str(sm->rings, domain, r);
    }
    return r;
}

/* A decimal number, all of text; false if not (or out of range). */
static bool parse_u64(const char *text, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        unsigned d = (unsigned)(text[i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* el's gen='G' slots='S S ...' into r, its ring rebuilt: true if both are
 * there, well-formed, and our slot is among the slots (we hold the domain:
 * we are on its ring). Else r's ring is unknown. */
static bool ring_parse(struct sm *sm, struct sm_ring *r, const struct xml_node *el)
{
    const char *g = xml_get_attr(el, "gen"), *sl = xml_get_attr(el, "slots");
    uint64_t gen, v;
    r->known = false;
    if (!r->has_slot || g == NULL || sl == NULL || !parse_u64(g, strlen(g), UINT64_MAX, &gen))
        return false;
    unsigned *slots = NULL;
    size_t n = 0;
    bool ours = false;
    for (const char *p = sl; *p != '\0';) {
        size_t len = strcspn(p, " ");
        if (len > 0) {
            if (n == SM_RING_SLOTS_MAX || !parse_u64(p, len, UINT_MAX, &v)) {
                free(slots);
                return false;
            }
            slots = xreallocarray(slots, n + 1, sizeof(*slots));
            slots[n++] = (unsigned)v;
            ours = ours || v == r->slot;
        }
        p += len + (p[len] == ' ');
    }
    if (!ours) {
        free(slots);
        return false;
    }
    /* The router builds the ring with the name it prepped from our
     * handshake (router/conn.c): so must we, or 'SM' and 'sm' would name
     * different owners for half the users. */
    const char *name = sm->cfg->router_name;
    char *owner;
    if (jid_prep_domain(name, strlen(name), &owner, NULL) != 0) {
        free(slots);
        return false;
    }
    free(r->slots);
    r->slots = slots;
    r->n = n;
    r->gen = gen;
    ring_build(&r->ring, owner, slots, n);
    free(owner);
    r->known = true;
    return true;
}

void sm_sess_ring_bound(struct sm *sm, const char *domain, const struct xml_node *el)
{
    struct sm_ring *r = ring_of(sm, domain);
    const char *slot = xml_get_attr(el, "slot");
    uint64_t v;
    r->has_slot = slot != NULL && parse_u64(slot, strlen(slot), UINT_MAX, &v);
    r->slot = r->has_slot ? (unsigned)v : 0;
    if (ring_parse(sm, r, el))
        log_info("%s bound as instance %u of %zu (ring generation %llu)", domain, r->slot, r->n,
                 (unsigned long long)r->gen);
    else
        log_info("%s bound; the router does not say its ring: every ring change forgets all "
                 "idle users",
                 domain);
}

bool sm_sess_owns(struct sm *sm, const struct sm_user *u)
{
    const struct sm_ring *r = sm->rings ? htab_get_str(sm->rings, u->jid->domain) : NULL;
    if (r == NULL || !r->known)
        return true;
    return r->slots[ring_pick(&r->ring, u->jid->bare, u->jid->bare_len)] == r->slot;
}

void sm_sess_rings_free(struct sm *sm)
{
    htab_free(sm->rings);
    sm->rings = NULL;
}

void sm_sess_ring(struct sm *sm, const char *domain, const struct xml_node *el, bool ready)
{
    /* Idle users another instance owns now may be changed there meanwhile:
     * they are read again when needed. A user whose owner did not change
     * was this instance's all along (the notify of each change reaches
     * this instance behind every stanza the router routed by the ring
     * before it, ahead of every one after it): it stays cached. When the
     * new ring is not known (an older router) or a change was missed (the
     * generation skipped: a notify lost to a full queue), every idle user
     * is forgotten, and every user in memory is marked foreign. */
    struct sm_ring *r = ring_of(sm, domain);
    bool was = r->known;
    uint64_t prev = r->gen;
    if (ring_parse(sm, r, el) && was && r->gen == prev + 1) {
        sm_users_ring_moved(sm, domain);
    } else {
        if (r->known && was)
            log_notice("ring of %s: generation %llu follows %llu: a change was missed", domain,
                       (unsigned long long)r->gen, (unsigned long long)prev);
        if (r->known || was)
            sm_users_foreign(sm, domain);
        sm_users_flush_idle(sm);
    }
    if (!ready) /* before ready the binds are not all done: on_ready announces */
        return;
    log_notice("the instances serving %s changed: every c2s re-announces", domain);
    struct htab_iter it;
    for (htab_iter_init(&it, sm->sessions); htab_iter_next(&it);) {
        struct sm_sess *s = it.val;
        if (strcmp(s->jid->domain, domain) != 0)
            continue;
        /* Unconfirmed, it may have been moving at an earlier change: its
         * user's stanzas may have gone to another instance meanwhile. */
        if (s->unconfirmed)
            s->kept = false;
        s->moving = true;
    }
    for (htab_iter_init(&it, sm->c2s); htab_iter_next(&it);) {
        char *name = xstrndup(it.key, it.klen);
        sm_sess_announce(sm, name, domain, true);
        free(name);
    }
}

bool sm_sess_resuming(struct sm *sm)
{
    return htab_count(sm->resuming) > 0;
}

void sm_sess_bounce(struct sm_sess *s, const struct xml_node *st, enum xml_stanza_err cond)
{
    if (!sm_answerable(st))
        return;
    struct xml_node *e = xml_copy(st);
    if (xml_make_error(e, cond, NULL, NULL) == 0) {
        /* A stanza without to was for the account itself (RFC 6120 §10.3). */
        if (xml_get_attr(e, "from") == NULL)
            xml_set_attr(e, "from", jid_bare_str(s->user->jid));
        xml_set_attr(e, "to", jid_full_str(s->jid));
        sm_deliver(s->user->sm, s, e);
    }
    xml_free(e);
}

/*
 * Deliveries held while a user's sessions may be moving (multi-instance,
 * sm/SESSION.md): while some c2s owes this instance an <announced/>, a
 * stanza for a user whose addressed session is not here (a full JID: no
 * session with that resource; a bare JID: no available session) may be
 * for a session whose re-announced start is on its way here. It waits on
 * the user's parked list (c2s and sid empty: no session's stanza has
 * those) until a session of the user is created or sends its presence,
 * then is tried again; once no c2s owes an announced and the user's
 * round-end event (behind the round's starts) was handled, it is handled
 * as usual (offline, error); a re-announced start in a round sets
 * round_wait (sm_sess_control), so that this also holds for deliveries
 * queued while the user loaded. A stanza that follows a held one is held too,
 * so that a user's deliveries keep their order. Probes are not held
 * (mod_presence answers them at the round's end), nor anything once the sm
 * stops (sm_stop ends the rounds). Held deliveries have their own budgets,
 * apart from the parked stanzas of sessions (which they never crowd out):
 * <limits><user-held> per user and <limits><held> in all. Past one, the
 * user's held deliveries are handled at once, in order, then the new one,
 * as they would be with no round.
 */
#define HELD_C2S ""

static bool reachable(struct sm_user *u, const struct xml_node *st)
{
    struct jid *to = sm_jid(u->sm, xml_get_attr(st, "to"));
    bool found = to == NULL; /* malformed: sm_pkt_user answers it */
    for (struct sm_sess *s = u->sessions; s != NULL && !found; s = s->next)
        found = to->resource != NULL ? strcmp(s->jid->resource, to->resource) == 0 : s->available;
    jid_free(to);
    return found;
}

/* A held budget is full: u's held deliveries go to the front of its queue,
 * in order, then st, each to be handled at once (not held again). */
static void release_at_once(struct sm_user *u, struct xml_node *st)
{
    struct sm_event *head = NULL, **tail = &head;
    for (struct sm_event **pp = &u->parked; *pp != NULL;) {
        struct sm_event *ev = *pp;
        if (ev->kind != SM_EV_DELIVER) {
            pp = &ev->next;
            continue;
        }
        *pp = ev->next;
        ev->next = NULL;
        ev->at_once = true;
        u->nparked--;
        u->nheld--;
        u->sm->nheld--;
        *tail = ev;
        tail = &ev->next;
        u->qlen++;
    }
    struct sm_event *p = xcalloc(1, sizeof(*p));
    p->kind = SM_EV_DELIVER;
    p->stanza = st;
    p->at_once = true;
    *tail = p;
    u->qlen++;
    p->next = u->qhead;
    if (u->qhead == NULL)
        u->qtail = p;
    u->qhead = head;
}

void sm_sess_deliver(struct sm_user *u, struct sm_event *ev)
{
    struct sm *sm = u->sm;
    struct xml_node *st = ev->stanza;
    const char *type = xml_get_attr(st, "type");
    /* round_wait: the user's round-end event is still on its queue, behind
     * the starts and replays of the round (the announced may come before
     * the account checks of the starts are done). */
    bool hold = sm->cfg->multi && !sm->stopping && !ev->at_once &&
                (sm_sess_resuming(sm) || u->round_wait) && u->state == SM_USER_READY &&
                !u->load_failed && !(type != NULL && strcmp(type, "probe") == 0) &&
                (u->nheld > 0 || !reachable(u, st));
    if (!hold) {
        sm_pkt_user(u, st);
        return;
    }
    if (u->nheld >= (unsigned)sm->cfg->user_held || sm->nheld >= (size_t)sm->cfg->held_max) {
        /* Once per user and round: a flood must not flood the log too. */
        if (!u->held_full)
            log_warn("%u stanzas held for %s (%zu in all): handled now, in order", u->nheld,
                     u->jid->bare, sm->nheld);
        u->held_full = true;
        ev->stanza = NULL;
        release_at_once(u, st);
        return;
    }
    log_debug("<%s/> to %s held: its session may be on its way here", st->name,
              xml_get_attr(st, "to"));
    struct sm_event *p = xcalloc(1, sizeof(*p));
    p->kind = SM_EV_DELIVER;
    p->stanza = st;
    p->c2s = xstrdup(HELD_C2S);
    ev->stanza = NULL;
    struct sm_event **pp = &u->parked;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = p;
    u->nparked++;
    u->nheld++;
    sm->nheld++;
    /* The round's end tries them again (ROUND_END, sm_sess_release). */
    u->round_wait = true;
}

void sm_sess_release(struct sm_user *u)
{
    if (u->nparked > 0)
        sm_user_unpark(u, HELD_C2S, "", true);
}
