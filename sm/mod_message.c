/*
 * mod_message.c - RFC 6121 §8 message delivery to local users, and
 * offline storage (XEP-0160 behaviour, XEP-0203 delay stamps).
 *
 * Delivery policy (the server's choice where §8.5.2 leaves one):
 *  - to a full JID that is online: that session, whatever its priority;
 *  - to a full JID that is not online (§8.5.3.2.1): chat as if to the bare
 *    JID; normal, headline and groupchat -> service-unavailable;
 *  - to the bare JID, chat and normal: ONE session, the available one with
 *    the highest non-negative priority; on a tie, the one that sent
 *    presence most recently (where the user last was active). Copies to
 *    every resource would be Message Carbons (XEP-0280), a separate module;
 *  - headline to the bare JID: every available resource with non-negative
 *    priority; none -> dropped (§8.5.2.2.1: headlines are not stored);
 *  - groupchat to the bare JID: service-unavailable (§8.5.2.1.1);
 *  - errors: to the named online session, else dropped (never bounced);
 *  - nobody available with priority >= 0: chat and normal are stored
 *    offline, up to <limits><offline> messages and <limits><offline-bytes>
 *    bytes per user; past either, the sender gets service-unavailable
 *    (RFC 6121 §8.5.2.1.1 names it for a full offline store), if storage
 *    fails internal-server-error, and nothing is stored. A message that
 *    would not fit the router's stanza size once delivered (with its
 *    <delay/> and envelope: sm_mod_stanza_max) is not stored: its sender
 *    gets policy-violation (sm_bounce_oversized).
 *
 * Stored messages are delivered when a session of the user becomes
 * available with priority >= 0 (its initial presence, or a presence that
 * raises a negative priority), to that session, oldest first, each with a <delay/>
 * (from the domain, the time it was stored), in pages bounded in rows and
 * bytes; each page is deleted once written (exactly the rows it held: a
 * message stored meanwhile may have a lower seq than rows already seen,
 * since a sequence value is taken before its insert commits) before the
 * next is fetched (one that does not fit the router's stanza size, stored
 * before that was lowered, is answered to its sender, logged and deleted
 * with its page). A message the router's stream hands back
 * (congested) is stored again by sm.c, so none is lost. The user is
 * held during the fetch and the delete, so two sessions coming online at
 * once cannot both get them (delivered once). If the session ends before
 * the fetch answers, nothing is deleted. The flush starts on the
 * sess-available hook, which mod_presence runs once per presence that
 * makes a session available with priority >= 0 (after a roster read it
 * waited for, if any), so it starts once whatever the module order.
 * Runs on the sm's loop.
 */
#include "autoconfig.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "sm/mod.h"

#define NS_DELAY "urn:xmpp:delay"

static struct sm_sess *find_resource(struct sm_user *u, const char *res)
{
    for (struct sm_sess *s = u->sessions; s != NULL; s = s->next)
        if (strcmp(s->jid->resource, res) == 0)
            return s;
    return NULL;
}

/* ---- storing ---- */

struct store {
    struct sm_user *u;
    struct xml_node *st;
};

static void on_stored(void *arg, int err, const struct storage_result *res)
{
    struct store *c = arg;
    if (err == ERR_LIMIT) {
        log_info("offline quota of %s reached: message refused", c->u->jid->bare);
        sm_bounce(c->u->sm, c->st, XML_STE_SERVICE_UNAVAILABLE);
    } else if (err != 0) {
        log_warn("offline message for %s not stored: %s", c->u->jid->bare,
                 storage_result_error(res));
        sm_bounce(c->u->sm, c->st, XML_STE_INTERNAL_SERVER_ERROR);
    }
    struct sm_user *u = c->u;
    xml_free(c->st);
    free(c);
    sm_user_release(u);
}

static void add_delay(struct sm_user *u, struct xml_node *st, int64_t us);

/* Whether st, delivered later with its <delay/> (the stamp has a fixed
 * width) and the largest envelope, fits the router's stanza size: one that
 * does not could never be delivered, so it is refused now, while its
 * sender can still be told. */
static bool fits_later(struct sm_user *u, const struct xml_node *st)
{
    struct xml_node *d = xml_copy(st);
    add_delay(u, d, 0);
    struct buf b = BUF_INIT;
    xml_serialize(d, XML_NS_COMPONENT, &b);
    bool ok = b.len <= sm_mod_stanza_max(u->sm);
    buf_free(&b);
    xml_free(d);
    return ok;
}

static int store(struct sm_user *u, struct xml_node *st)
{
    if (!fits_later(u, st)) {
        log_info("offline message for %s refused: too large for the router with its delay stamp",
                 u->jid->bare);
        sm_bounce_oversized(u->sm, st);
        return SM_HANDLED;
    }
    struct buf b = BUF_INIT;
    xml_serialize(st, "", &b); /* self-contained: xmlns on the root */
    struct store *c = xcalloc(1, sizeof(*c));
    c->u = u;
    c->st = xml_copy(st);
    int rc = storage_offline_store(u->sm->st, u->jid->bare, 0, b.data, on_stored, c);
    buf_free(&b);
    if (rc != 0) {
        xml_free(c->st);
        free(c);
        return SM_ERROR(rc == ERR_LIMIT ? XML_STE_SERVICE_UNAVAILABLE
                                        : XML_STE_INTERNAL_SERVER_ERROR);
    }
    sm_user_hold(u);
    return SM_HANDLED;
}

/* ---- delivery ---- */

static int to_bare(struct sm_user *u, struct xml_node *st, const char *type)
{
    if (strcmp(type, "groupchat") == 0)
        return SM_ERROR(XML_STE_SERVICE_UNAVAILABLE);
    if (strcmp(type, "headline") == 0) {
        struct sm_sess *ss[SM_MAX_SESSIONS];
        size_t n = 0;
        for (struct sm_sess *s = u->sessions; s != NULL && n < SM_MAX_SESSIONS; s = s->next)
            if (s->available && s->priority >= 0)
                ss[n++] = s;
        sm_deliver_many(u->sm, ss, n, st);
        return SM_HANDLED;
    }
    struct sm_sess *s = sm_user_top_sess(u);
    if (s != NULL) {
        sm_deliver(u->sm, s, st);
        return SM_HANDLED;
    }
    return store(u, st); /* chat, normal, and unknown types (read as normal, §5.2.2) */
}

static int on_pkt_user(struct sm_mod *m, struct sm_pkt *p)
{
    if (strcmp(p->kind, "message") != 0)
        return SM_PASS;
    struct sm_user *u = p->user;
    const char *type = p->type ? p->type : "normal";
    struct sm_sess *s = p->to->resource ? find_resource(u, p->to->resource) : NULL;
    if (strcmp(type, "error") == 0) {
        if (s != NULL)
            sm_deliver(u->sm, s, p->stanza);
        return SM_HANDLED;
    }
    if (s != NULL) {
        sm_deliver(u->sm, s, p->stanza);
        return SM_HANDLED;
    }
    if (p->to->resource != NULL && strcmp(type, "chat") != 0)
        return SM_ERROR(XML_STE_SERVICE_UNAVAILABLE);
    return to_bare(u, p->stanza, type);
}

/* ---- flushing at initial presence ---- */

/* The queue goes out in pages of at most FLUSH_ROWS rows and about
 * FLUSH_BYTES of stanzas; each page's rows are deleted before the next is
 * fetched. The database round trips between pages let the streams on the
 * way (sm->router, router->c2s, each capped) drain, so a queue of any size
 * never meets their byte caps at once; a stanza that still comes back
 * congested (on_bounce, or an r:route returned resource-constraint) is
 * stored again by sm.c, never lost. */
#define FLUSH_ROWS  64
#define FLUSH_BYTES (64 * 1024)

struct flush {
    struct sm_user *u;
    char *c2s;
    char sid[SM_SID_LEN + 1];
    int64_t seqs[FLUSH_ROWS]; /* the rows of this page written (or unreadable) */
    size_t nseqs;
    int more; /* the page was cut short or full: fetch again after the delete */
};

static void stamp(int64_t us, char *out, size_t len)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%s.%03dZ", base, (int)((us % 1000000) / 1000));
}

static void flush_free(struct flush *f)
{
    free(f->c2s);
    free(f);
}

static void on_fetched(void *arg, int err, const struct storage_result *res);

/* Fetch the next page; on failure the flush ends (and the user is released). */
static void fetch_page(struct flush *f)
{
    struct sm_user *u = f->u;
    f->nseqs = 0;
    f->more = 0;
    if (storage_offline_fetch(u->sm->st, u->jid->bare, FLUSH_ROWS, on_fetched, f) == 0)
        return;
    flush_free(f);
    sm_user_release(u);
}

static void on_deleted(void *arg, int err, const struct storage_result *res)
{
    struct flush *f = arg;
    struct sm_user *u = f->u;
    if (err != 0) {
        log_warn("offline messages of %s delivered but not deleted: %s", u->jid->bare,
                 storage_result_error(res));
    } else if (f->more) {
        struct sm_sess *s = sm_sess_find(u->sm, f->c2s, f->sid);
        if (s != NULL && s->user == u) {
            fetch_page(f);
            return;
        }
    }
    flush_free(f);
    sm_user_release(u);
}

/* A stored stanza with its XEP-0203 stamp (once: a message stored again
 * after a failed delivery keeps the first). */
static void add_delay(struct sm_user *u, struct xml_node *st, int64_t us)
{
    for (struct xml_node *d = xml_child(st, NS_DELAY, "delay"); d != NULL;
         d = xml_next(d, NS_DELAY, "delay"))
        if (strcmp(xml_get_attr(d, "from") ? xml_get_attr(d, "from") : "", u->jid->domain) == 0)
            return;
    char when[48];
    stamp(us, when, sizeof(when));
    struct xml_node *d = xml_add_child(st, NS_DELAY, "delay");
    xml_set_attr(d, "from", u->jid->domain);
    xml_set_attr(d, "stamp", when);
}

static void on_fetched(void *arg, int err, const struct storage_result *res)
{
    struct flush *f = arg;
    struct sm_user *u = f->u;
    struct sm_sess *s = sm_sess_find(u->sm, f->c2s, f->sid);
    if (err != 0) {
        log_warn("offline messages of %s not fetched: %s", u->jid->bare, storage_result_error(res));
    } else if (s != NULL && s->user == u) {
        int n = storage_result_rows(res);
        size_t bytes = 0;
        f->more = n == FLUSH_ROWS;
        for (int row = 0; row < n; row++) {
            if (bytes >= FLUSH_BYTES) {
                f->more = 1; /* the rest of the page comes with the next fetch */
                break;
            }
            int64_t seq = 0, us = 0;
            const char *text = storage_result_text(res, row, STORAGE_COL_OFFLINE_STANZA);
            if (storage_result_int64(res, row, STORAGE_COL_OFFLINE_SEQ, &seq) != 0 ||
                storage_result_int64(res, row, STORAGE_COL_OFFLINE_STAMP, &us) != 0 || text == NULL)
                continue;
            f->seqs[f->nseqs++] = seq;
            size_t len = strlen(text);
            bytes += len;
            /* The rows are our own output, stored under whatever
             * <router-stanza-size> was then (store): sized from the row, so
             * that one stored under a higher limit is still read and
             * answered below rather than dropped as unreadable. */
            struct xml_limits lim;
            xml_limits_default(&lim);
            if (lim.max_stanza_bytes < len)
                lim.max_stanza_bytes = lim.max_text_len = len;
            if (lim.max_tree_bytes < 4 * len + 4096)
                lim.max_tree_bytes = 4 * len + 4096;
            char e[64];
            struct xml_node *st = xml_parse_document(text, len, &lim, e, sizeof(e));
            if (st == NULL) {
                log_warn("offline message %" PRId64 " of %s unreadable: %s", seq, u->jid->bare, e);
                continue;
            }
            add_delay(u, st, us);
            /* One stored before <router-stanza-size> was lowered: answered
             * (sm_deliver) and deleted with the page, not tried again at
             * every login. */
            if (sm_deliver(u->sm, s, st) == ERR_LIMIT)
                log_warn("offline message %" PRId64 " of %s (%zu bytes stored) too large for the "
                         "router: deleted",
                         seq, u->jid->bare, len);
            xml_free(st);
        }
        if (f->nseqs > 0 && storage_offline_delete_seqs(u->sm->st, u->jid->bare, f->seqs, f->nseqs,
                                                        on_deleted, f) == 0)
            return; /* still held: released by on_deleted */
    }
    flush_free(f);
    sm_user_release(u);
}

/* The session became available with a non-negative priority (sm.h: run
 * by mod_presence once, after it recorded the presence, so neither the
 * module order nor a presence handled again after a roster read matters). */
static int on_available(struct sm_mod *m, struct sm_pkt *p)
{
    struct sm_user *u = p->user;
    struct flush *f = xcalloc(1, sizeof(*f));
    f->u = u;
    f->c2s = xstrdup(p->sess->c2s);
    memcpy(f->sid, p->sess->sid, sizeof(f->sid));
    sm_user_hold(u);
    fetch_page(f);
    return SM_PASS;
}

static int on_features(struct sm_mod *m, struct sm_pkt *p)
{
    if (p->user == NULL)
        xml_set_attr(xml_add_child(p->stanza, NULL, "feature"), "var", "msgoffline");
    return SM_PASS;
}

static int init(struct sm_mod *m)
{
    sm_hook_add(m, SM_HOOK_SESS_AVAILABLE, on_available);
    sm_hook_add(m, SM_HOOK_PKT_USER, on_pkt_user);
    sm_hook_add(m, SM_HOOK_DISCO_FEATURES, on_features);
    return 0;
}

const struct sm_module_def sm_mod_message_def = {.name = "message", .init = init};
