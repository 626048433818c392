/*
 * roster.h - a user's roster in memory (items, version, pending inbound
 * subscription requests), its storage and its pushes. Shared by
 * mod_roster (the jabber:iq:roster protocol, loading) and mod_presence
 * (subscriptions change items).
 *
 * The memory copy is changed at once; the store runs under a hold on the
 * user (sm_user_hold), and the push with the new version (RFC 6121
 * §2.1.6) goes out when storage answers, so pushes carry versions in
 * order. A store that fails is answered with internal-server-error (a
 * roster set) and the roster is read again from the database, so memory
 * never keeps a change the database does not have; the stanzas that need
 * the roster meanwhile wait for that read (sm_roster_wait). Runs on the
 * sm's loop.
 */
#ifndef PARLEY_SM_ROSTER_H
#define PARLEY_SM_ROSTER_H

#include "sm/sm.h"
#include "sm/sub.h"

#define SM_NS_ROSTER "jabber:iq:roster"

struct sm_roster_item {
    char *jid; /* bare, prepped */
    char *name;
    struct sub_state st; /* st.pending_in mirrors roster->pending */
    char **groups;
    size_t ngroups;
};

struct sm_roster {
    struct htab *items;   /* jid -> struct sm_roster_item */
    struct htab *pending; /* jid -> char * (the subscribe stanza as XML) */
    int64_t version;
    unsigned stores;  /* stores in flight */
    unsigned loading; /* load queries in flight */
    bool stale;       /* a store failed: memory may not be what the database has */
    bool reloading;   /* being read again after that */
    /* A reload reads into these; they replace items, pending and version
     * only when both queries succeeded (else memory is kept, still stale:
     * better than an empty roster for the broadcasts meanwhile). */
    struct htab *next_items, *next_pending;
    int64_t next_version;
    bool next_failed;
    unsigned failures;  /* reads of the stale roster failed in a row */
    uint64_t failed_at; /* uv_now ms of the last one */
};

/* Back-off after reads of a stale roster failed in a row: the first
 * failure lets the next stanza that needs the roster try again at once;
 * after the second none is started for SM_ROSTER_BACKOFF_MS, doubled at
 * each further one up to SM_ROSTER_BACKOFF_MAX_MS. Meanwhile those stanzas
 * get internal-server-error at once: while the database keeps failing
 * they do not each wait for a read. */
#define SM_ROSTER_BACKOFF_MS     1000
#define SM_ROSTER_BACKOFF_MAX_MS 30000

/* Load u's roster and requests (user-load); holds u until both answered. */
void sm_roster_load(struct sm_user *u);
/* True when u's roster is loaded and agrees with the database. A store
 * that failed makes it stale: it is read again (u held meanwhile) once no
 * store is in flight, at once from the failed store's callback, or, if
 * that read failed too, from here, past the back-off above and never for
 * a stanza handled again (sm_user_requeue: it waited for a read already;
 * call it before touching the roster, at the start of a handler; on false
 * the handler returns sm_roster_wait). A
 * stale roster keeps its memory until a read succeeds: the unavailable
 * broadcasts of ending sessions still reach the contacts it has. */
bool sm_roster_usable(struct sm_user *u);
/* What a handler of a stanza from u's queue returns when sm_roster_usable
 * said false: the stanza goes back to the head of the queue, behind the
 * store or read in flight that makes the roster usable again
 * (SM_HANDLED); if none is (reads failed lately: the database refuses
 * us), if it waited once already, or if it is not from the queue,
 * internal-server-error. */
int sm_roster_wait(struct sm_user *u);
void sm_roster_free(struct sm_roster *r);

/* The item for jid (bare, prepped), or NULL. */
struct sm_roster_item *sm_roster_find(struct sm_user *u, const char *jid);
/* The state of jid (none if no item), pending_in included. */
void sm_roster_state(struct sm_user *u, const char *jid, struct sub_state *out);
/*
 * Apply a subscription transition for jid: items created or updated,
 * stored and pushed; the pending request stored (request: the subscribe
 * stanza) or deleted.
 */
void sm_roster_apply(struct sm_user *u, const char *jid, const struct sub_result *r,
                     const struct xml_node *request);
/* Store item (new or changed) and push it; iq, if not NULL, is answered
 * with a result once stored (an error if storing failed). */
void sm_roster_commit(struct sm_user *u, struct sm_roster_item *item, const struct xml_node *iq);
/* Delete item (freed here), push subscription='remove', answer iq. */
void sm_roster_remove(struct sm_user *u, struct sm_roster_item *item, const struct xml_node *iq);
/* A new item (not stored until committed); NULL at the roster limit. */
struct sm_roster_item *sm_roster_add(struct sm_user *u, const char *jid);
/* <item/> for it under parent. */
struct xml_node *sm_roster_item_xml(struct xml_node *parent, const struct sm_roster_item *it);

#endif
