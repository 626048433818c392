/*
 * c2s_sess.c - the c2s side of the session protocol (sm/SESSION.md): start
 * and end, the sm's answers (started, failed, replaced, kick, announce),
 * client stanzas wrapped for the sm and the sm's stanzas written to the
 * clients, bounces turned into stanza errors, and re-announce rounds (the
 * announced waits for every resume start's answer; a refused one closes
 * its client).
 *
 * Every stanza that leaves is our serializer's output of the parsed tree,
 * never the client's bytes (CVE-2022-22784). Runs on the c2s loop.
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "c2s/c2s.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rand.h"

/* <r:route to from key sid> into b: the envelope's head, which the payload
 * and ROUTE_TAIL follow. reserve is room for the payload (the envelope is
 * short): one allocation for the whole envelope. */
static void route_head(struct c2s *c, const char *to, const char *key, const char *sid,
                       size_t reserve, struct buf *b)
{
    buf_reserve(b, reserve + 256);
    buf_append_str(b, "<r:route to='");
    xml_escape_attr(to, strlen(to), b);
    buf_append_str(b, "' from='");
    xml_escape_attr(c->cfg.router_name, strlen(c->cfg.router_name), b);
    buf_append_byte(b, '\'');
    if (key != NULL) {
        buf_append_str(b, " key='");
        xml_escape_attr(key, strlen(key), b);
        buf_append_byte(b, '\'');
    }
    if (sid != NULL) { /* hex, ours: no escaping, and no printf per stanza */
        buf_append_str(b, " sid='");
        buf_append_str(b, sid);
        buf_append_byte(b, '\'');
    }
    buf_append_byte(b, '>');
}

#define ROUTE_TAIL "</r:route>"

/* Marks the kept presence of a session as never delivered to the sm
 * (internal: removed before it is replayed). */
#define PRESENCE_UNSENT "parley-unsent"

static void route_send(struct c2s *c, const char *to, const char *key, const char *sid,
                       const char *payload, size_t len)
{
    struct buf b = BUF_INIT;
    route_head(c, to, key, sid, len, &b);
    buf_append(&b, payload, len);
    buf_append_str(&b, ROUTE_TAIL);
    /* What goes this way (session control: a start with the longest JID
     * is about 6.3k; errors without payload) fits the smallest
     * <router-stanza-size> (8k): a refusal is a config mismatch, and what
     * it carried is lost. */
    if (c2s_send_raw(c, b.data, b.len) == ERR_LIMIT)
        log_err("<r:route> of %zu bytes to %s lost: <limits><router-stanza-size> is too small",
                b.len, to);
    buf_free(&b);
}

/*
 * Re-announce rounds (sm/SESSION.md): per domain, the sids whose resume
 * start is not answered yet and the <announced/> owed (one per announce,
 * each with that announce's round id). The announced goes once every resume start of the round was
 * answered, so that the ends of the sessions no sm took (failed, bounced)
 * precede it. The rounds in progress: c->rounds (domain -> struct round),
 * NULL while there is none.
 */
#define ROUND_OWED_MAX 256

struct round {
    struct htab *sids; /* sid -> (void *)1 */
    char **owed;       /* per announce answered: its round id, or NULL (none) */
    size_t nowed;
};

static void round_free(void *p)
{
    struct round *r = p;
    htab_free(r->sids);
    for (size_t i = 0; i < r->nowed; i++)
        free(r->owed[i]);
    free(r->owed);
    free(r);
}

/* An announce's round id, echoed on its announced (sm/SESSION.md): hex,
 * at most 64 digits; anything else is not echoed. */
static char *round_id(const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;
    if (n == 0 || n > 64)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return NULL;
    return xstrdup(id);
}

/* The round of domain is over once no start is waiting: its announced. */
static void round_check(struct c2s *c, const char *domain)
{
    struct round *r = c->rounds != NULL ? htab_get_str(c->rounds, domain) : NULL;
    if (r == NULL || htab_count(r->sids) > 0)
        return;
    htab_del_str(c->rounds, domain);
    if (htab_count(c->rounds) == 0) {
        htab_free(c->rounds);
        c->rounds = NULL;
    }
    for (size_t i = 0; i < r->nowed; i++) {
        struct buf p = BUF_INIT;
        buf_append_str(&p, "<announced xmlns='" C2S_NS_SESSION "'");
        if (r->owed[i] != NULL)
            buf_printf(&p, " round='%s'", r->owed[i]);
        buf_append_str(&p, "/>");
        route_send(c, domain, NULL, NULL, p.data, p.len);
        buf_free(&p);
    }
    round_free(r);
}

/* Was sid's resume start waiting for an answer in domain's round? It is
 * not any more (the caller runs round_check). */
static bool round_answered(struct c2s *c, const char *domain, const char *sid)
{
    struct round *r = c->rounds != NULL ? htab_get_str(c->rounds, domain) : NULL;
    return r != NULL && htab_del_str(r->sids, sid) != NULL;
}

static void send_start(struct c2s_client *cl, bool resume, bool changed)
{
    struct buf p = BUF_INIT;
    buf_printf(&p, "<start xmlns='" C2S_NS_SESSION "' sid='%s' jid='", cl->sid);
    xml_escape_attr(jid_full_str(cl->jid), cl->jid->full_len, &p);
    buf_append_str(&p, !resume   ? "'/>"
                       : changed ? "' resume='true' changed='true'/>"
                                 : "' resume='true'/>");
    route_send(cl->c2s, cl->jid->domain, cl->jid->bare, NULL, p.data, p.len);
    buf_free(&p);
}

/* Set every element of the tree in namespace from to namespace to. */
static void renamespace(struct xml_node *n, const char *from, const char *to)
{
    if (n->type != XML_ELEM)
        return;
    if (strcmp(n->ns, from) == 0)
        n->ns = to;
    for (struct xml_node *ch = n->children; ch != NULL; ch = ch->next)
        renamespace(ch, from, to);
}

static void bind_error(struct c2s_client *cl, const char *cond, const char *type)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<iq type='error' id='");
    xml_escape_attr(cl->bind_id, strlen(cl->bind_id), &b);
    buf_printf(&b,
               "'><bind xmlns='" C2S_NS_BIND "'/><error type='%s'><%s xmlns='" XML_NS_STANZAS
               "'/></error></iq>",
               type, cond);
    stream_write(cl->s, b.data, b.len);
    buf_free(&b);
}

static void forget(struct c2s_client *cl)
{
    if (cl->has_session) {
        htab_del_str(cl->c2s->sessions, cl->sid);
        cl->has_session = false;
    }
    jid_free(cl->jid);
    cl->jid = NULL;
    free(cl->bind_id);
    cl->bind_id = NULL;
}

void c2s_sess_start(struct c2s_client *cl, const char *resource, const char *iq_id)
{
    struct c2s *c = cl->c2s;
    char gen[17];
    if (resource == NULL) {
        unsigned char rnd[8];
        rand_bytes(rnd, sizeof(rnd));
        for (size_t i = 0; i < sizeof(rnd); i++)
            snprintf(gen + 2 * i, 3, "%02x", rnd[i]);
        resource = gen;
    }
    struct jid *bare = NULL, *full = NULL;
    free(cl->bind_id);
    cl->bind_id = xstrdup(iq_id);
    if (jid_from_parts(cl->user, cl->domain->name, NULL, &bare) != 0 ||
        jid_with_resource(bare, resource, strlen(resource), &full) != 0) {
        jid_free(bare);
        bind_error(cl, "bad-request", "modify");
        return;
    }
    jid_free(bare);
    cl->jid = full;
    do
        rand_id_hex(cl->sid);
    while (htab_get_str(c->sessions, cl->sid) != NULL);
    htab_put_str(c->sessions, cl->sid, cl);
    cl->has_session = true;
    cl->state = CL_BINDING;
    send_start(cl, false, false);
}

void c2s_sess_end(struct c2s_client *cl)
{
    if (!cl->has_session)
        return;
    /* No key: with several sm instances the router gives it to every one,
     * so that the one holding the session ends it (during a move that may
     * not be the one the ring names now: sm/SESSION.md); jid lets an
     * instance find the user whose start of that session is still pending. */
    struct buf p = BUF_INIT;
    buf_printf(&p, "<end xmlns='" C2S_NS_SESSION "' sid='%s' jid='", cl->sid);
    xml_escape_attr(cl->jid->bare, cl->jid->bare_len, &p);
    buf_append_str(&p, "'/>");
    route_send(cl->c2s, cl->jid->domain, NULL, NULL, p.data, p.len);
    buf_free(&p);
    /* Its resume start, if one is waiting, needs no answer any more. */
    char *domain = xstrdup(cl->jid->domain);
    bool waited = round_answered(cl->c2s, domain, cl->sid);
    forget(cl);
    if (waited)
        round_check(cl->c2s, domain);
    free(domain);
}

/* Nesting depth of the tree under n, n itself counted as 1. */
static unsigned tree_depth(const struct xml_node *n)
{
    unsigned max = 0;
    for (const struct xml_node *ch = n->children; ch != NULL; ch = ch->next)
        if (ch->type == XML_ELEM) {
            unsigned d = tree_depth(ch);
            if (d > max)
                max = d;
        }
    return max + 1;
}

/* The envelope of a stanza of cl's session (in the component namespace,
 * its from set) to the sm: what c2s_send_raw returns. */
static int route_stanza(struct c2s_client *cl, const struct xml_node *stanza)
{
    /* Serialised straight into the envelope: one buffer per stanza, with
     * room for what the serializer reserves up front (1,000 bytes). */
    struct buf r = BUF_INIT;
    route_head(cl->c2s, cl->jid->domain, cl->jid->bare, cl->sid, 1024, &r);
    xml_serialize(stanza, XML_NS_COMPONENT, &r);
    buf_append_str(&r, ROUTE_TAIL);
    int rc = c2s_send_raw(cl->c2s, r.data, r.len);
    buf_free(&r);
    return rc;
}

/*
 * A stanza the router would refuse (it ends the whole link for an element
 * over its limits, and with it every client of this c2s) gets
 * policy-violation (type modify), without the payload (the thing that was
 * too big). The client gets it, except for an iq result, which nothing may
 * answer (RFC 6120 §8.2.3): its requester gets it instead, from the
 * client, as the sm does for its own results. The client gets nothing:
 * an error to its result could match a request of its own with that id,
 * and a stream error would end a session for a large but lawful answer.
 * Logged by the caller (or by the router client, for the size).
 */
static void refuse_oversized(struct c2s_client *cl, struct xml_node *stanza, const char *why)
{
    while (stanza->children != NULL)
        xml_detach(stanza->children);
    const char *type = xml_get_attr(stanza, "type");
    if (strcmp(stanza->name, "iq") == 0 && type != NULL && strcmp(type, "result") == 0) {
        const char *to = xml_get_attr(stanza, "to");
        if (to == NULL) /* to the server itself: no one waits for it */
            return;
        /* xml_make_error swaps them: from the client to the requester. */
        xml_set_attr(stanza, "from", to);
        xml_set_attr(stanza, "to", jid_full_str(cl->jid));
        renamespace(stanza, XML_NS_CLIENT, XML_NS_COMPONENT);
        if (xml_make_error(stanza, XML_STE_POLICY_VIOLATION, "modify", why) == 0)
            route_stanza(cl, stanza);
        return;
    }
    renamespace(stanza, XML_NS_COMPONENT, XML_NS_CLIENT);
    if (xml_make_error(stanza, XML_STE_POLICY_VIOLATION, "modify", why) == 0)
        c2s_client_write_node(cl, stanza);
}

void c2s_sess_forward(struct c2s_client *cl, struct xml_node *stanza)
{
    if (tree_depth(stanza) > C2S_ROUTER_DEPTH - 2) {
        log_info("session %s: stanza nested too deep for the router refused", cl->sid);
        refuse_oversized(cl, stanza, "stanza nested too deep");
        return;
    }
    xml_set_attr(stanza, "from", jid_full_str(cl->jid));
    renamespace(stanza, XML_NS_CLIENT, XML_NS_COMPONENT);
    /* The router client refuses more than <limits><router-stanza-size>,
     * and logs it. */
    if (route_stanza(cl, stanza) == ERR_LIMIT)
        refuse_oversized(cl, stanza, "stanza too large once re-serialised");
}

/* ---- from the sm ---- */

static enum xml_stream_err stream_cond(const char *name)
{
    for (int i = XML_SE_BAD_FORMAT; i <= XML_SE_UNSUPPORTED_VERSION; i++)
        if (name != NULL && strcmp(xml_stream_err_name((enum xml_stream_err)i), name) == 0)
            return (enum xml_stream_err)i;
    return XML_SE_UNDEFINED_CONDITION;
}

static bool stanza_cond_ok(const char *name)
{
    for (int i = XML_STE_BAD_REQUEST; i <= XML_STE_UNEXPECTED_REQUEST; i++)
        if (name != NULL && strcmp(xml_stanza_err_name((enum xml_stanza_err)i), name) == 0)
            return true;
    return false;
}

static void on_started(struct c2s_client *cl)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<iq type='result' id='");
    xml_escape_attr(cl->bind_id, strlen(cl->bind_id), &b);
    buf_append_str(&b, "'><bind xmlns='" C2S_NS_BIND "'><jid>");
    xml_escape_text(jid_full_str(cl->jid), cl->jid->full_len, &b);
    buf_append_str(&b, "</jid></bind></iq>");
    stream_write(cl->s, b.data, b.len);
    buf_free(&b);
    free(cl->bind_id);
    cl->bind_id = NULL;
    cl->state = CL_BOUND;
    stream_set_established(cl->s);
    log_info("session %s started for %s", cl->sid, jid_full_str(cl->jid));
}

/* c2s_sess_resume for an announce with that round id (NULL: none). */
static void resume(struct c2s *c, const char *domain, const char *round, bool presence)
{
    if (c->rounds == NULL)
        c->rounds = htab_new(round_free);
    struct round *r = htab_get_str(c->rounds, domain);
    if (r == NULL) {
        r = xcalloc(1, sizeof(*r));
        r->sids = htab_new(NULL);
        htab_put_str(c->rounds, domain, r);
    }
    /* One announced owed per announce, up to a bound: the announces come
     * from the sm instances (one each per ring change), and past it the
     * sm's round ends by its own timeout (<limits><round-timeout>). */
    if (r->nowed < ROUND_OWED_MAX) {
        r->owed = xreallocarray(r->owed, r->nowed + 1, sizeof(*r->owed));
        r->owed[r->nowed++] = round_id(round);
    } else {
        log_warn("%s: %d announces unanswered: this one gets no announced", domain, ROUND_OWED_MAX);
    }
    for (struct c2s_client *cl = c->clients; cl != NULL; cl = cl->next) {
        if (cl->state != CL_BOUND || strcmp(cl->jid->domain, domain) != 0)
            continue;
        htab_set(r->sids, cl->sid, strlen(cl->sid), (void *)1);
        if (!presence || cl->presence == NULL) {
            send_start(cl, true, false);
            continue;
        }
        /* A presence the sm never got (its envelope came back) is news to
         * the contacts: changed (sm/SESSION.md). */
        bool unsent = xml_get_attr(cl->presence, PRESENCE_UNSENT) != NULL;
        xml_del_attr(cl->presence, PRESENCE_UNSENT);
        send_start(cl, true, unsent);
        struct xml_node *p = xml_copy(cl->presence);
        c2s_sess_forward(cl, p);
        xml_free(p);
        /* An unsent unavailable is kept only until replayed (or until it
         * came back again). */
        if (cl->presence != NULL && xml_get_attr(cl->presence, "type") != NULL &&
            xml_get_attr(cl->presence, PRESENCE_UNSENT) == NULL) {
            xml_free(cl->presence);
            cl->presence = NULL;
        }
    }
    /* After the last one is answered: the sm may end the sessions it still
     * has from us that were not announced again (sm/SESSION.md). */
    round_check(c, domain);
}

void c2s_sess_resume(struct c2s *c, const char *domain, bool presence)
{
    /* Our own round (the domain came back) has an id no sm round has: its
     * announced ends none of theirs (sm/SESSION.md). */
    char id[RAND_ID_HEXLEN + 1];
    rand_id_hex(id);
    resume(c, domain, id, presence);
}

/* A resume start of cl was refused (failed) or bounced by the router:
 * no sm holds the session now, while the one that held it may drop it
 * silently at our announced (a move). The client is closed: its end
 * (keyless, every instance) precedes the announced, so whichever instance
 * still holds the session ends it with a broadcast. */
static void resume_refused(struct c2s_client *cl, enum xml_stream_err cond)
{
    char *domain = xstrdup(cl->jid->domain);
    c2s_client_fail(cl, cond, "the session could not be kept");
    round_check(cl->c2s, domain);
    free(domain);
}

/* <end sid/> for a session we do not have, to the sm that named it. */
static void end_unknown(struct c2s *c, const char *to, const char *sid)
{
    struct buf p = BUF_INIT;
    buf_append_str(&p, "<end xmlns='" C2S_NS_SESSION "' sid='");
    xml_escape_attr(sid, strlen(sid), &p);
    buf_append_str(&p, "'/>");
    route_send(c, to, NULL, NULL, p.data, p.len);
    buf_free(&p);
}

static void control(struct c2s *c, struct xml_node *el, const char *from)
{
    if (strcmp(el->name, "announce") == 0) {
        if (from != NULL)
            resume(c, from, xml_get_attr(el, "round"), true);
        return;
    }
    const char *sid = xml_get_attr(el, "sid");
    struct c2s_client *cl = sid != NULL ? htab_get_str(c->sessions, sid) : NULL;
    bool answer = strcmp(el->name, "started") == 0 || strcmp(el->name, "failed") == 0;
    if (answer && sid != NULL && from != NULL && round_answered(c, from, sid)) {
        if (el->name[0] == 'f' && cl != NULL && !cl->closed && cl->state == CL_BOUND) {
            const char *reason = xml_get_attr(el, "reason");
            resume_refused(cl, stanza_cond_ok(reason) ? stream_cond(reason)
                                                      : XML_SE_INTERNAL_SERVER_ERROR);
            return;
        }
        round_check(c, from);
    }
    if (cl == NULL || cl->closed) {
        log_debug("<%s/> for unknown session %s", el->name, sid ? sid : "-");
        /* The client left while the sm was starting its session (the end
         * we sent may have crossed the answer): the sm must drop it. */
        if ((strcmp(el->name, "started") == 0 || strcmp(el->name, "failed") == 0) && from != NULL &&
            sid != NULL && strlen(sid) == C2S_SID_LEN)
            end_unknown(c, from, sid);
        return;
    }
    const char *reason = xml_get_attr(el, "reason");
    if (strcmp(el->name, "started") == 0) {
        if (cl->state == CL_BINDING)
            on_started(cl);
    } else if (strcmp(el->name, "failed") == 0) {
        if (cl->state != CL_BINDING)
            return;
        const char *cond = stanza_cond_ok(reason) ? reason : "internal-server-error";
        bind_error(cl, cond,
                   strcmp(cond, "not-authorized") == 0 ? "auth"
                   : strcmp(cond, "conflict") == 0 || strcmp(cond, "resource-constraint") == 0
                       ? (strcmp(cond, "conflict") == 0 ? "cancel" : "wait")
                       : "cancel");
        forget(cl);
        cl->state = CL_AUTHED;
    } else if (strcmp(el->name, "replaced") == 0 || strcmp(el->name, "kick") == 0) {
        bool replaced = el->name[0] == 'r';
        c2s_client_fail(cl, replaced ? XML_SE_CONFLICT : stream_cond(reason),
                        replaced ? "replaced by a new session" : NULL);
        /* c2s_client_down has sent the end. */
    }
}

/* A returned stanza that does not fit <router-stanza-size> with its
 * envelope (the sm's fitted without the sid and error attributes): the
 * older form the sm still accepts (sm/SESSION.md, Returned stanzas), the
 * stanza turned into service-unavailable without its payload, no sid,
 * which the sm routes to the sender. The sender learns it was not
 * delivered, though not stored or redelivered. Never for what gets no
 * answer: an error or result (RFC 6120 §8.3.1, §8.2.3), presence
 * (RFC 6121 §8.5.3.2), a headline to the bare JID (the other sessions
 * had their copies: the sm drops it when returned whole). */
static void return_small(struct c2s *c, struct xml_node *stanza, const char *from)
{
    const char *type = xml_get_attr(stanza, "type");
    const char *to = xml_get_attr(stanza, "to");
    if (strcmp(stanza->name, "presence") == 0 ||
        (type != NULL && (strcmp(type, "error") == 0 || strcmp(type, "result") == 0)) ||
        (strcmp(stanza->name, "message") == 0 && type != NULL && strcmp(type, "headline") == 0 &&
         to != NULL && strchr(to, '/') == NULL))
        return;
    while (stanza->children != NULL)
        xml_detach(stanza->children);
    if (xml_make_error(stanza, XML_STE_SERVICE_UNAVAILABLE, NULL, NULL) != 0)
        return;
    struct buf b = BUF_INIT;
    xml_serialize(stanza, XML_NS_COMPONENT, &b);
    route_send(c, from, NULL, NULL, b.data, b.len);
    buf_free(&b);
}

/* A stanza for a session we do not have (the client left, its end and the
 * stanza crossed): back to the sm as the router returns an undeliverable
 * r:route (sm/SESSION.md, Returned stanzas), to and from swapped,
 * error='item-not-found', the stanza intact with its type, so that the sm
 * applies the RFC 6121 §8.5 rules for it; then the end, so that the sm
 * forgets a session it still believes in. */
static void unknown_sid(struct c2s *c, struct xml_node *stanza, const char *from, const char *sid)
{
    struct buf b = BUF_INIT;
    buf_reserve(&b, 1024 + 256); /* the serializer reserves 1,000 */
    buf_append_str(&b, "<r:route to='");
    xml_escape_attr(from, strlen(from), &b);
    buf_append_str(&b, "' from='");
    xml_escape_attr(c->cfg.router_name, strlen(c->cfg.router_name), &b);
    buf_append_str(&b, "' sid='");
    xml_escape_attr(sid, strlen(sid), &b);
    buf_append_str(&b, "' error='item-not-found'>");
    xml_serialize(stanza, XML_NS_COMPONENT, &b);
    buf_append_str(&b, ROUTE_TAIL);
    int rc = c2s_send_raw(c, b.data, b.len);
    buf_free(&b);
    if (rc == ERR_LIMIT)
        return_small(c, stanza, from);
    if (strlen(sid) == C2S_SID_LEN)
        end_unknown(c, from, sid);
}

void c2s_sess_from_router(struct c2s *c, struct xml_node *route)
{
    struct xml_node *el = xml_child(route, NULL, NULL);
    const char *from = xml_get_attr(route, "from");
    const char *sid = xml_get_attr(route, "sid");
    const char *err = xml_get_attr(route, "error");
    if (el == NULL)
        return;
    if (err != NULL) {
        c2s_sess_bounced(c, el, err, sid);
        return;
    }
    if (strcmp(el->ns, C2S_NS_SESSION) == 0) {
        control(c, el, from);
        return;
    }
    struct c2s_client *cl = sid != NULL ? htab_get_str(c->sessions, sid) : NULL;
    if (cl == NULL || cl->closed || cl->state != CL_BOUND) {
        if (from != NULL && sid != NULL && (cl == NULL || cl->closed))
            unknown_sid(c, el, from, sid);
        return;
    }
    renamespace(el, XML_NS_COMPONENT, XML_NS_CLIENT);
    renamespace(el, XML_NS_SERVER, XML_NS_CLIENT);
    c2s_client_write_node(cl, el);
}

/* A broadcast presence of cl came back undeliverable (no sm): if it is
 * still the last one, it is replayed at the next announce as changed; an
 * unavailable is kept for that (cl->presence holds the presence to replay). */
static void presence_unsent(struct c2s_client *cl, const struct xml_node *pr)
{
    const char *type = xml_get_attr(pr, "type");
    if (xml_get_attr(pr, "to") != NULL)
        return;
    if (type == NULL && cl->presence != NULL && xml_get_attr(cl->presence, "type") == NULL) {
        xml_set_attr(cl->presence, PRESENCE_UNSENT, "1");
    } else if (type != NULL && strcmp(type, "unavailable") == 0) {
        if (cl->presence == NULL) {
            cl->presence = xml_new(XML_NS_CLIENT, "presence");
            xml_set_attr(cl->presence, "type", "unavailable");
        }
        if (xml_get_attr(cl->presence, "type") != NULL)
            xml_set_attr(cl->presence, PRESENCE_UNSENT, "1");
    }
}

void c2s_sess_bounced(struct c2s *c, struct xml_node *stanza, const char *why, const char *sid)
{
    struct c2s_client *cl = NULL;
    if (strcmp(stanza->ns, C2S_NS_SESSION) == 0) {
        const char *s = xml_get_attr(stanza, "sid");
        cl = s != NULL ? htab_get_str(c->sessions, s) : NULL;
        if (cl != NULL && strcmp(stanza->name, "start") == 0 && cl->state == CL_BINDING) {
            bind_error(cl, "remote-server-timeout", "wait");
            forget(cl);
            cl->state = CL_AUTHED;
        } else if (cl != NULL && !cl->closed && strcmp(stanza->name, "start") == 0 &&
                   cl->state == CL_BOUND && round_answered(c, cl->jid->domain, cl->sid)) {
            /* No sm at all (item-not-found): the session waits for the
             * sm's return, as every other; refused by a congested
             * instance: as failed. */
            if (strcmp(why, "resource-constraint") == 0)
                resume_refused(cl, XML_SE_RESOURCE_CONSTRAINT);
            else
                round_check(c, cl->jid->domain);
        }
        return;
    }
    if (sid != NULL)
        cl = htab_get_str(c->sessions, sid);
    /* By from only without a sid: an envelope with one is of that session
     * alone (our own return of a stanza for a gone session has the gone
     * sid, and its from is the original sender, maybe a client here). */
    const char *from = sid == NULL ? xml_get_attr(stanza, "from") : NULL;
    for (struct c2s_client *k = c->clients; cl == NULL && k != NULL && from != NULL; k = k->next)
        if (k->jid != NULL && strcmp(jid_full_str(k->jid), from) == 0)
            cl = k;
    if (cl == NULL || cl->closed || cl->state != CL_BOUND)
        return;
    if (strcmp(stanza->name, "presence") == 0) {
        presence_unsent(cl, stanza);
        return;
    }
    /* RFC 6120 §8.2.3: a result is never answered, not even by an error
     * for its delivery (xml_make_error refuses only errors). */
    const char *type = xml_get_attr(stanza, "type");
    if (strcmp(stanza->name, "iq") == 0 && type != NULL && strcmp(type, "result") == 0)
        return;
    enum xml_stanza_err cond = strcmp(why, "resource-constraint") == 0
                                   ? XML_STE_RESOURCE_CONSTRAINT
                                   : XML_STE_REMOTE_SERVER_TIMEOUT;
    if (xml_make_error(stanza, cond, "wait", NULL) != 0)
        return;
    renamespace(stanza, XML_NS_COMPONENT, XML_NS_CLIENT);
    c2s_client_write_node(cl, stanza);
}
