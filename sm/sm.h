/*
 * sm.h - parley-sm, the session manager: the core's structures and the
 * interface its modules (sm/mod_*.c) are written against.
 *
 * The parts:
 *   sm.c    the daemon object: config, the router connection, the packet
 *           path (from sessions, from the router, local delivery) and the
 *           output to c2s processes (r:route, serialised once per fan-out);
 *   sess.c  the session protocol with c2s (sm/SESSION.md);
 *   user.c  users: asynchronous load, a per-user event queue, the cache
 *           (live users, then an LRU of idle ones);
 *   mod.c   the static module table and the hook chains;
 *   sub.c   the RFC 6121 subscription state machine (pure);
 *   mod_*.c the modules.
 *
 * Everything runs on the daemon's one libuv loop. Storage is asynchronous;
 * while a user is loading, or a module holds it (sm_user_hold) across a
 * query whose answer decides what comes next, the user's events wait in
 * its queue, so a user's stanzas are handled in arrival order.
 */
#ifndef PARLEY_SM_H
#define PARLEY_SM_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "common/component.h"
#include "common/config.h"
#include "common/htab.h"
#include "common/jid.h"
#include "common/ring.h"
#include "common/xml.h"
#include "storage/storage.h"

#define SM_NS_SESSION "urn:parley:session"
#define SM_SID_LEN    32
#define SM_MAX_MODS   16
/* Room every envelope the sm sends keeps below <router-stanza-size>: a
 * c2s returns one for a session that is gone with error='item-not-found'
 * added, the router one it cannot deliver with error='resource-constraint'
 * (the longer), and neither may then be over the limit. */
#define SM_RETURN_ROOM (sizeof(" error='resource-constraint'") - 1)
/* Sessions per user at most (<limits><sessions> is bounded by it): fan-out
 * to one user's sessions uses arrays of this size on the stack. */
#define SM_MAX_SESSIONS 64
/* Full JIDs one session may have sent directed presence to (each gets
 * unavailable when it ends, RFC 6121 §4.6.3). */
#define SM_MAX_DIRECTED 1000

/* ---- configuration (filled by main.c's table) ---- */

struct sm_config {
    const char *router_name;
    const char *router_connect;
    const char *router_secret;
    struct xml_node *domains; /* first <domain>; siblings follow */
    const char *db_dsn;
    const char *db_password;
    int db_pool;
    struct xml_node *modules; /* <modules>, or NULL: the default list */
    const char *c2s_prefix;
    bool multi;              /* several sm instances share the domains (router multi='true') */
    int max_sessions;        /* per user */
    int roster_max;          /* items per roster */
    int offline_quota;       /* queued messages per user */
    int offline_quota_bytes; /* bytes of queued messages per user */
    size_t router_stanza_size; /* the router's limits/stanza-size: no send is larger */
    int user_cache;          /* idle users kept loaded */
    int miss_cache;          /* accounts found missing, remembered (0: none) */
    int miss_ttl;            /* seconds a missing account is remembered */
    int max_loads;           /* account look-ups in flight for stanzas */
    int queue_max;           /* events waiting per user */
    int round_timeout;       /* seconds a c2s may take to re-announce (announced) */
    int user_held;           /* deliveries held for moving sessions, per user */
    int held_max;            /* deliveries held for moving sessions, all users */
    const char *version_name;
    bool version_os;
    const char *welcome_subject; /* mod_welcome; NULL: none */
    const char *welcome_body;    /* NULL: no welcome */
};

/* ---- hooks and modules ---- */

enum sm_hook {
    SM_HOOK_SESS_START,     /* a session began (pkt: sess, user) */
    SM_HOOK_SESS_END,       /* a session is ending (pkt: sess, user) */
    SM_HOOK_IN_SESS,        /* a stanza from a session (pkt: stanza, sess, user) */
    SM_HOOK_OUT_SESS,       /* a stanza about to go to a session */
    SM_HOOK_PKT_SM,         /* a stanza to the server's domain */
    SM_HOOK_PKT_USER,       /* a stanza to a local user (bare or full JID) */
    SM_HOOK_USER_LOAD,      /* load the user's data (pkt: user); hold it while loading */
    SM_HOOK_USER_CREATE,    /* a new account (pkt: user): see below */
    SM_HOOK_USER_DELETE,    /* an account is gone (found missing at a login; its
                               sessions were kicked) */
    SM_HOOK_DISCO_FEATURES, /* add <feature/>s to pkt->stanza (a disco#info query);
                               pkt->user: an account's info, NULL: the server's */
    SM_HOOK_ROUND_END,      /* the re-announce round is over (pkt: user with
                               round_wait set; from its queue, behind the starts) */
    SM_HOOK_SESS_AVAILABLE, /* a session's presence became available with a
                               non-negative priority where it was unavailable or
                               negative (pkt: sess, user, stanza: the presence;
                               run by mod_presence once it recorded it) */
    SM_HOOK_COUNT
};

/* user-create: accounts are made in the database (parleyctl), unseen by
 * the sm, so the sm claims each account the first time one of its
 * instances loads it: after the user-load chain is done, from the user's
 * queue, before its first event (the start or stanza that loaded it) is
 * handled, the chain runs with pkt->user and pkt->stanza, an empty
 * container element: a handler appends the self-contained stanzas (with
 * their xmlns) to store offline for the new account, and does nothing
 * else (no storage work of its own, no state: the chain runs on every
 * instance that finds the account unclaimed, and may run again). The core
 * then sets the account's first-seen mark and stores those stanzas in one
 * transaction (storage_user_claim: atomic, one instance wins), so they are
 * stored exactly once, or not at all and the account stays unclaimed. If
 * the claim fails (storage down, answer lost before the commit) it is
 * tried again at the user's next session start while the user is cached,
 * else at its next load; an answer lost after the commit is harmless.
 * Stanzas over the offline quotas are dropped (the mark is set: an account
 * with a full offline store is not new). Accounts that existed when the
 * mark was introduced count as seen. */

/* What a handler returns: SM_PASS (next handler), SM_HANDLED (stop), or
 * SM_ERROR(cond): stop, and the core bounces the stanza with cond. */
enum { SM_PASS = 0, SM_HANDLED = 1 };
#define SM_ERROR(cond)   (2 + (int)(cond))
#define SM_IS_ERROR(r)   ((r) >= 2)
#define SM_ERROR_COND(r) ((enum xml_stanza_err)((r)-2))

struct sm;
struct sm_user;
struct sm_sess;
struct sm_mod;

/* What a handler gets. The core owns stanza; a handler that keeps it sets
 * pkt->stanza to NULL (and must return SM_HANDLED). */
struct sm_pkt {
    struct xml_node *stanza;
    const char *kind; /* "message" | "presence" | "iq" (NULL for non-stanza hooks) */
    const char *type; /* the type attribute, or NULL */
    struct jid *from; /* NULL for non-stanza hooks */
    struct jid *to;   /* NULL when the stanza had none */
    struct sm_sess *sess;
    struct sm_user *user;
};

typedef int (*sm_handler)(struct sm_mod *m, struct sm_pkt *p);

struct sm_module_def {
    const char *name;
    int (*init)(struct sm_mod *m); /* registers handlers; 0 or an error */
    void (*free)(struct sm_mod *m);
    /* Free what the module keeps in u->mdata[m->index] (may be NULL). */
    void (*user_free)(struct sm_mod *m, struct sm_user *u);
    /* Free what the module keeps in s->mdata[m->index] (may be NULL). */
    void (*sess_free)(struct sm_mod *m, struct sm_sess *s);
    /* The module keeps data in sm_user.mdata / sm_sess.mdata: it gets a
     * slot there (only such modules do: every user and session has one
     * pointer per slot). */
    bool mdata;
};

struct sm_mod {
    const struct sm_module_def *def;
    struct sm *sm;
    int index; /* slot in sm_user.mdata / sm_sess.mdata; -1: none (def->mdata) */
    void *data;
};

/* m's slot in a user's or session's mdata (u->mdata, s->mdata): only a
 * module with def->mdata has one (asserted; index -1 would be before the
 * slots). */
static inline void **sm_mod_slot(void **mdata, const struct sm_mod *m)
{
    assert(m->index >= 0);
    return &mdata[m->index];
}

/* mod.c: register a handler; chains run in module order. */
void sm_hook_add(struct sm_mod *m, enum sm_hook h, sm_handler fn);
/* Run a chain: SM_PASS if every handler passed. */
int sm_hook_run(struct sm *sm, enum sm_hook h, struct sm_pkt *p);
/* Load the modules named in cfg (or the default list); ERR_CONFIG. */
int sm_mods_init(struct sm *sm, const struct xml_node *list);
void sm_mods_free(struct sm *sm);
/* A zeroed struct sm_user or sm_sess of size bytes followed by its
 * sm->nslots module data slots, which the caller points mdata at
 * ((void **)(obj + 1): size, rounded up to pointer alignment, is already
 * aligned for these two structs, asserted in mod.c): sized to the modules
 * configured. */
void *sm_mods_calloc(const struct sm *sm, size_t size);

/* ---- users and sessions ---- */

enum sm_user_state { SM_USER_LOADING, SM_USER_READY, SM_USER_MISSING };

struct sm_event;
struct sm_roster;
struct sm_miss;

struct sm_user {
    struct sm *sm;
    struct jid *jid; /* bare */
    enum sm_user_state state;
    unsigned holds;   /* loads and modules' pending queries */
    bool running;     /* an event is being handled: new ones queue */
    bool load_failed; /* storage error while loading */
    char *load_origin;   /* loading for a stanza: counted in sm->loading and
                            for this origin in sm->load_origins */
    bool create_pending; /* never seen before: user-create, then claim it */
    bool create_retry;   /* a claim failed: try again at a session start */
    struct sm_event *qhead, *qtail;
    unsigned qlen;
    struct sm_sess *sessions;
    unsigned nsess;
    struct sm_user *lru_prev, *lru_next;
    bool in_lru;
    struct sm_roster *roster; /* roster.c; NULL until loaded */
    /* Multi-instance, while a c2s re-announces after a ring change:
     * stanzas of a session not started here yet, waiting for its start. */
    struct sm_event *parked;
    unsigned nparked; /* held deliveries included */
    unsigned nheld;   /* held deliveries (SM_EV_DELIVER) on parked */
    bool held_full;   /* a held budget was reached this round: logged */
    bool moved; /* its last session moved to another instance: not cached */
    bool foreign;    /* multi-instance: another instance may have changed it since
                        it was read (a ring named another owner, a ring change missed,
                        the router lost): never cached (sess.c, SESSION.md) */
    bool round_wait; /* a module waits for the end of the re-announce round */
    struct sm_event *current; /* the event being handled, or NULL */
    bool requeue;             /* put current back at the head (sm_user_requeue) */
    void **mdata;             /* sm->nslots slots, right after the struct */
};

struct sm_sess {
    struct sm_user *user;
    struct sm_sess *next; /* in user->sessions */
    char sid[SM_SID_LEN + 1];
    char *c2s;       /* the c2s name that holds it */
    struct jid *jid; /* full */
    char *key;       /* "c2s\nsid": the key in sm->sessions */
    /* presence state (mod_presence keeps it; the core reads it to route) */
    bool available;   /* sent available broadcast presence */
    bool initial;     /* has ever been available */
    bool resumed;     /* just re-announced (SESSION.md): the next stanza may be
                         the c2s replaying the last presence */
    bool interested;  /* asked for the roster: gets roster pushes */
    bool unconfirmed; /* announce sent to its c2s, no start resume='true' since */
    bool moving;      /* unconfirmed since the ring changed: if it is not started
                         again, another instance holds it now (dropped silently) */
    bool restored;    /* created by a resume start: this sm never had its presence
                         (it restarted), its contacts had */
    bool kept;        /* multi-instance: held here with nothing lost since it was
                         created or last probed (no router loss, not moving at a ring
                         change): its resumed replays do not re-probe (SESSION.md) */
    int priority;
    uint64_t active_seq;       /* when it last sent presence: tie-break */
    struct xml_node *presence; /* last broadcast presence (a copy), or NULL */
    void **mdata;              /* sm->nslots slots, right after the struct */
};

/* user.c */
/* The user, loaded if needed, for a session (start, a session's stanza):
 * never refused, and a remembered missing account is looked up again (a
 * login proves the account exists now). */
struct sm_user *sm_user_get(struct sm *sm, struct jid *bare);
/* The user for st, a stanza addressed to it: an account remembered
 * missing (<cache><missing>) is MISSING at once, without a query; NULL
 * when a look-up would be needed and the stanza's origin (its sender's
 * bare JID if a user of ours, else its sender's domain) may not start one
 * now: <limits><loads> look-ups for stanzas are shared so that an origin
 * may start one only while it has fewer in flight than are free, so one
 * origin's flood leaves room for the others (the caller answers
 * resource-constraint). Loads for sessions (sm_user_get) are not
 * counted. */
struct sm_user *sm_user_get_for_stanza(struct sm *sm, struct jid *bare, const struct xml_node *st);
/* Forget the accounts remembered missing. */
void sm_users_miss_free(struct sm *sm);
/* Keep the user's queue waiting until sm_user_release (async work whose
 * answer decides how the following events are handled). */
void sm_user_hold(struct sm_user *u);
void sm_user_release(struct sm_user *u);
/* From a handler of the stanza u's queue is handling now: that event goes
 * back to the head of the queue, to be handled again, from the start of
 * its chain, once u's holds are released (the caller has u held, e.g. by
 * a reload its stanza needs; the caller returns SM_HANDLED and changes
 * nothing). The handlers before the caller have run and run again: one
 * with side effects checks current->requeued and does them once. Once
 * per event: false when it was requeued already, or when no queued event
 * is being handled (the caller answers the stanza itself then). */
bool sm_user_requeue(struct sm_user *u);
void sm_users_free(struct sm *sm);
/* The session that gets a message to the bare JID: the available session
 * with the highest non-negative priority; on a tie the one that sent
 * presence last. NULL if none. */
struct sm_sess *sm_user_top_sess(struct sm_user *u);
/* The answer to a request of one of u's own sessions, made when storage
 * answered: to that session directly when st's to is one (not through
 * u's queue, which may be full of the requests that followed), else
 * routed. sm_user_bounce: the same for the error for st. */
void sm_user_answer(struct sm_user *u, struct xml_node *st);
void sm_user_bounce(struct sm_user *u, const struct xml_node *st, enum xml_stanza_err cond);

/* Events: what waits in a user's queue. */
enum sm_event_kind { SM_EV_START, SM_EV_END, SM_EV_IN_SESS, SM_EV_DELIVER };
struct sm_event {
    struct sm_event *next;
    enum sm_event_kind kind;
    struct xml_node *stanza; /* IN_SESS, DELIVER; START: the start element */
    char *c2s;               /* START, END, IN_SESS */
    bool if_unconfirmed;     /* END: only if still unconfirmed (announced) */
    bool moved;              /* END, if_unconfirmed: the session was moving: silent */
    bool parked;             /* IN_SESS: waited for its session's start */
    bool unpark;             /* END: the re-announce of c2s is over: its parked
                                stanzas have no session (kicked) */
    bool round_end;          /* END: the re-announce round is over (ROUND_END hook) */
    bool requeued;           /* IN_SESS, DELIVER: handled once already (sm_user_requeue) */
    bool create_tried;       /* a claim of the new account ran before it */
    bool at_once;            /* DELIVER: not held (a held budget was full) */
    char sid[SM_SID_LEN + 1];
};
void sm_user_post(struct sm_user *u, struct sm_event *ev);
/* The session (c2s, sid) just started here (run): its parked stanzas go
 * to the front of its user's queue, in the order they came; or its start
 * failed (!run): they are dropped. */
void sm_user_unpark(struct sm_user *u, const char *c2s, const char *sid, bool run);
/* The announce round of c2s for domain (NULL: all) is over: its parked
 * stanzas of users there have no session here; each such session is
 * kicked (once), unless !kick (dropped quietly). */
void sm_users_unpark_c2s(struct sm *sm, const char *c2s, const char *domain, bool kick);
/* Free every idle (cached, sessionless) user: after a ring change of
 * unknown extent some of them belong to another instance, which may change
 * them meanwhile. */
void sm_users_flush_idle(struct sm *sm);
/* domain's ring changed and this instance knows the new one (sess.c): the
 * users of domain that another instance owns now are marked foreign, and
 * the idle ones among them freed; the others stay cached. */
void sm_users_ring_moved(struct sm *sm, const char *domain);
/* Mark every user in memory foreign (of domain; NULL: all). */
void sm_users_foreign(struct sm *sm, const char *domain);
/* No c2s re-announces any more: each user with round_wait gets a round-end
 * event on its queue, behind the starts and replays still pending there. */
void sm_users_round_end(struct sm *sm);
void sm_event_free(struct sm_event *ev);

/* sess.c */
/* A control element from c2s; key: the r:route's key (the bare JID), or NULL. */
/* to: the r:route's to (the domain an announced is for). */
void sm_sess_control(struct sm *sm, const char *c2s, const char *to, const char *key,
                     struct xml_node *ctl);
void sm_sess_start(struct sm_user *u, struct sm_event *ev); /* from the user's queue */
/* End s now: notify (NULL, "kick" or "replaced") goes to its c2s, then the
 * sess-end chain runs (unavailable broadcast) and s is freed. */
void sm_sess_end(struct sm_sess *s, const char *notify, const char *reason);
/* Queue the end of a session on its user's queue (in order with its stanzas). */
void sm_sess_post_end(struct sm *sm, const char *c2s, const char *sid);
/* Free s without running any hook (sm shutdown: the c2s keeps the client). */
void sm_sess_drop(struct sm_sess *s);
struct sm_sess *sm_sess_find(struct sm *sm, const char *c2s, const char *sid);
void sm_sess_c2s_down(struct sm *sm, const char *c2s);
/* Ask c2s to re-announce its sessions of domain (the announce comes from
 * domain, the c2s re-announces that domain's sessions); ring: because the
 * ring changed (sm_sess_ring marked the moving sessions), else no session
 * of c2s in domain is moving. */
void sm_sess_announce(struct sm *sm, const char *c2s, const char *domain, bool ring);
/* sm_sess_announce for each of our domains (c2s up, sm ready). */
void sm_sess_announce_all(struct sm *sm, const char *c2s);
/* Does c2s owe an <announced/> for domain? */
bool sm_sess_resuming_c2s(struct sm *sm, const char *c2s, const char *domain);
/* The router connection is lost: no round goes on, nothing is moving. */
void sm_sess_router_down(struct sm *sm);
/* Another instance joined or left domain's ring (multi-instance; el: the
 * router's notify, with the new ring or, from an older router, without):
 * the idle users another instance owns now are forgotten (all of them when
 * the new ring is not known, or a change was missed); if ready, every c2s is
 * asked to re-announce, and the sessions of that domain not started again
 * here before a c2s's <announced/> moved: dropped without a broadcast. */
void sm_sess_ring(struct sm *sm, const char *domain, const struct xml_node *el, bool ready);
/* The router answered our bind of domain (multi-instance): our slot and the
 * domain's ring then, if it says (router/PROTOCOL.md). */
void sm_sess_ring_bound(struct sm *sm, const char *domain, const struct xml_node *el);
/* Is u ours on its domain's ring as this instance knows it? True when the
 * ring is not known (one instance, an older router). */
bool sm_sess_owns(struct sm *sm, const struct sm_user *u);
/* Forget the rings (the router connection is lost; sm_free). */
void sm_sess_rings_free(struct sm *sm);
/* A stanza for u from its queue (SM_EV_DELIVER): handled (sm_pkt_user), or,
 * multi-instance, held while a round lasts and the session it is for is
 * not here (its start may be on its way, SESSION.md): ev->stanza is then
 * taken. sm_sess_release tries the held ones again, first on u's queue. */
void sm_sess_deliver(struct sm_user *u, struct sm_event *ev);
void sm_sess_release(struct sm_user *u);
/* Start and stop the rounds' timeout timer (sm_start, sm_stop). */
void sm_sess_timer_init(struct sm *sm);
void sm_sess_timer_close(struct sm *sm);
/* True while some c2s has not finished re-announcing its sessions. */
bool sm_sess_resuming(struct sm *sm);
/* The error for st, a stanza from session s, straight to s (not through
 * its user's queue, which may be the reason for the error): from st's to,
 * or the user's bare JID when st had none. Nothing for errors and results. */
void sm_sess_bounce(struct sm_sess *s, const struct xml_node *st, enum xml_stanza_err cond);

/* ---- the daemon object (sm.c) ---- */

struct sm {
    uv_loop_t *loop;
    struct sm_config *cfg;
    struct component *comp;
    struct storage *st;
    struct jid_cache *jids;
    char **domains;
    size_t ndomains;
    struct htab *users;                  /* bare JID -> struct sm_user */
    struct htab *sessions;               /* "c2s\nsid" -> struct sm_sess */
    struct htab *c2s;                    /* c2s names up -> (void *)1 announced, 2 not yet */
    struct htab *resuming;  /* "c2s\ndomain" sent announce, no announced yet -> round */
    uv_timer_t round_timer; /* the oldest round's timeout (sess.c) */
    bool round_timer_init;
    struct sm_user *lru_head, *lru_tail; /* idle users, oldest first */
    size_t lru_count;
    struct htab *missing;                  /* bare JID -> struct sm_miss */
    struct sm_miss *miss_head, *miss_tail; /* oldest (first to expire) first */
    unsigned loading;                      /* account look-ups in flight for stanzas */
    struct htab *load_origins;             /* origin -> its share of them (user.c) */
    uint64_t seq;                          /* a counter for sm_sess.active_seq */
    size_t nheld;                          /* deliveries held, all users (sess.c) */
    struct htab *rings; /* multi-instance: domain -> struct sm_ring (sess.c); NULL: none */
    bool stopping;
    uv_timer_t drain; /* sm_stop: waits for storage to settle */
    uint64_t drain_deadline;
    /* modules */
    struct sm_mod mods[SM_MAX_MODS];
    size_t nmods;
    size_t nslots; /* modules with def->mdata: slots per user and session */
    struct sm_hook_entry {
        sm_handler fn;
        struct sm_mod *mod;
    } hooks[SM_HOOK_COUNT][SM_MAX_MODS * 2];
    size_t nhooks[SM_HOOK_COUNT];
};

struct sm *sm_new(struct sm_config *cfg);
/* Domains and modules from the config; ERR_CONFIG. */
int sm_configure(struct sm *sm, struct config *cfg);
/* Storage and the router connection (post_jail). */
int sm_start(struct sm *sm, uv_loop_t *loop);
void sm_stop(struct sm *sm);
void sm_free(struct sm *sm);
void sm_log_stats(struct sm *sm);

/* The domain string if jid's domain is one of ours, else NULL. */
const char *sm_local_domain(struct sm *sm, const struct jid *j);
const char *sm_default_domain(struct sm *sm);
/* True if name is one of our domains, as written in the config. */
bool sm_domain_name(struct sm *sm, const char *name);
/* Route a stanza built or received by the sm to its 'to': a local user or
 * the server itself (through the packet path), or the router. The caller
 * keeps st. */
void sm_route(struct sm *sm, struct xml_node *st);
/* RFC 6120 §8.3.1: false for an error and an iq result (never answered
 * with an error). */
bool sm_answerable(const struct xml_node *st);
/* Bounce st (the caller keeps it) with cond, unless it is an error or an
 * iq result. */
void sm_bounce(struct sm *sm, const struct xml_node *st, enum xml_stanza_err cond);
/* Answer st (the caller keeps it), which does not fit the router's stanza
 * size once wrapped, with policy-violation and no payload; an iq result
 * becomes that error to its requester. Nothing for an error. */
void sm_bounce_oversized(struct sm *sm, const struct xml_node *st);
/* Deliver st to one session (out-sess chain, then r:route to its c2s).
 * Returns 0, or ERR_LIMIT when the envelope with SM_RETURN_ROOM would be
 * larger than the router takes: nothing was sent and st was answered
 * (sm_bounce_oversized). */
int sm_deliver(struct sm *sm, struct sm_sess *s, const struct xml_node *st);
/* The same stanza to many sessions: serialised once.
 * Same returns: with ERR_LIMIT (the longest session's envelope, with
 * SM_RETURN_ROOM, would be larger than the router takes) no session got
 * it and st was answered once. */
int sm_deliver_many(struct sm *sm, struct sm_sess **ss, size_t n, const struct xml_node *st);
/* Send a session control element <name sid reason/> to c2s. */
void sm_send_control(struct sm *sm, const char *c2s, const char *domain, const char *name,
                     const char *sid, const char *reason);
/* Process a stanza addressed to a local user, on that user's queue. */
void sm_deliver_user(struct sm *sm, struct sm_user *u, struct xml_node *st);
/* Handle a stanza for a local user now (from its queue): pkt-user chain and
 * the default delivery rules (RFC 6121 §8). */
void sm_pkt_user(struct sm_user *u, struct xml_node *st);
/* Handle a stanza from a session now (from its user's queue). */
void sm_pkt_sess(struct sm_sess *s, struct xml_node *st);
/* A parsed jid through the cache, or NULL. */
/* A presence's <priority> (RFC 6121 §4.7.2.3): 0 if absent, SM_PRIORITY_BAD
 * if not an integer in -128..127. The one parser of it. */
#define SM_PRIORITY_BAD (-1000)
int sm_priority(struct xml_node *st);
struct jid *sm_jid(struct sm *sm, const char *s);
/* Fill a pkt for a stanza: kind, type, from, to (references: sm_pkt_clear). */
int sm_pkt_init(struct sm *sm, struct sm_pkt *p, struct xml_node *st);
void sm_pkt_clear(struct sm_pkt *p);
/* A stanza answer skeleton: <kind to=from from=to id type/> in the
 * component namespace. */
struct xml_node *sm_reply(const struct xml_node *st, const char *type);

#endif
