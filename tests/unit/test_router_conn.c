/*
 * test_router_conn.c - the router's connection state machine, without
 * sockets: memory connections fed through a real stream parser, with
 * their output collected. Covers the handshake digest and its refusals
 * (wrong secret, unknown name, uid, conflict), routing of plain stanzas
 * (raw from internal, re-serialised from external, from checks, bounces,
 * the default route, backpressure), the urn:parley:router elements (bind,
 * unbind, route, notify, stats) and reloading the component table.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "router/router.h"

static const char users_xml[] =
    "<components>"
    "<component name='sm' internal='true' multi='true'><secret>smsecret</secret>"
    "<domain>example.com</domain><domain>other.example</domain></component>"
    "<component name='c2s-1' internal='true' uid='1000'><secret>c2s</secret></component>"
    "<component name='s2s' internal='true' default-route='true'><secret>s2s</secret>"
    "</component>"
    "<component name='muc.example.com'><secret>muc</secret>"
    "<domain>rooms.example.com</domain></component>"
    "<component name='bot.example.com'><secret>bot</secret></component>"
    "</components>";

struct peer {
    struct conn *c;
    struct buf out;
};

static struct router *new_router(const char *xml, size_t queue_max)
{
    struct users *u;
    char err[256];
    assert_int_equal(users_parse("users.xml", xml, strlen(xml), &u, err, sizeof(err)), 0);
    struct router_config cfg = {.stanza_size = 65536, .queue_max = queue_max, .max_conns = 10};
    return router_new(&cfg, u);
}

static void feed(struct peer *pe, const char *s)
{
    conn_feed_memory(pe->c, s, strlen(s));
}

static bool has(struct peer *pe, const char *s)
{
    return pe->out.data != NULL && strstr(pe->out.data, s) != NULL;
}

/* Open a stream to name and send the handshake for secret. */
static struct peer *peer_new(struct router *r, const char *name, const char *secret, bool is_unix,
                             uid_t uid)
{
    struct peer *pe = calloc(1, sizeof(*pe));
    pe->c = conn_new_memory(r, &pe->out, is_unix, is_unix, uid);
    char hdr[512];
    snprintf(hdr, sizeof(hdr),
             "<stream:stream xmlns='jabber:component:accept' "
             "xmlns:stream='http://etherx.jabber.org/streams' xmlns:r='urn:parley:router' "
             "to='%s'>",
             name);
    feed(pe, hdr);
    if (secret != NULL && pe->c->state == CONN_HANDSHAKE) {
        char digest[41], hs[128];
        conn_digest(pe->c->id, secret, strlen(secret), digest);
        snprintf(hs, sizeof(hs), "<handshake>%s</handshake>", digest);
        feed(pe, hs);
    }
    return pe;
}

static bool ready(struct peer *pe)
{
    return pe->c->state == CONN_READY && has(pe, "<handshake/>");
}

static void peer_free(struct peer *pe)
{
    conn_free_memory(pe->c);
    buf_free(&pe->out);
    free(pe);
}

static void clear(struct peer *pe)
{
    buf_reset(&pe->out);
    if (pe->out.data)
        pe->out.data[0] = '\0';
}

static void test_digest(void **state)
{
    char out[41];
    conn_digest("3f2a1b", "secret", 6, out);
    assert_string_equal(out, "5c68138d0da96dc3bca833b8bfbc14589058959c");
}

static void test_handshake(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *muc = peer_new(r, "muc.example.com", "muc", false, 0);
    assert_true(ready(muc));
    assert_true(has(muc, "from='muc.example.com'"));
    assert_true(has(muc, "xmlns:r='urn:parley:router'"));
    assert_int_equal(strlen(muc->c->id), 32);

    struct peer *p = peer_new(r, "muc.example.com", "wrong", false, 0);
    assert_true(has(p, "<not-authorized"));
    assert_int_equal(p->c->state, CONN_DOWN);
    peer_free(p);
    /* an unknown name gets the same answer as a wrong secret */
    p = peer_new(r, "nobody.example.com", "muc", false, 0);
    assert_true(has(p, "<not-authorized"));
    peer_free(p);
    /* a second external connection for a name that is up */
    p = peer_new(r, "MUC.example.com", "muc", false, 0);
    assert_true(has(p, "<conflict"));
    peer_free(p);
    /* no to, or not a domain */
    p = peer_new(r, "", NULL, false, 0);
    assert_true(has(p, "<host-unknown"));
    assert_true(has(p, "<stream:stream"));
    peer_free(p);
    p = peer_new(r, "a b", NULL, false, 0);
    assert_true(has(p, "<host-unknown"));
    peer_free(p);
    /* something else than a handshake */
    p = peer_new(r, "bot.example.com", NULL, false, 0);
    feed(p, "<message to='x'/>");
    assert_true(has(p, "<not-authorized"));
    peer_free(p);
    /* a wrong content namespace */
    p = calloc(1, sizeof(*p));
    p->c = conn_new_memory(r, &p->out, false, false, 0);
    feed(p, "<stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='bot.example.com'>");
    assert_true(has(p, "<invalid-namespace"));
    peer_free(p);
    /* the digest in capitals is the same digest */
    p = peer_new(r, "bot.example.com", NULL, false, 0);
    char digest[41], hs[128];
    conn_digest(p->c->id, "bot", 3, digest);
    for (char *q = digest; *q; q++)
        if (*q >= 'a' && *q <= 'f')
            *q = (char)(*q - 'a' + 'A');
    snprintf(hs, sizeof(hs), "<handshake> %s </handshake>", digest);
    feed(p, hs);
    assert_true(ready(p));
    peer_free(p);
    peer_free(muc);
    router_free(r);
}

static void test_uid_and_multi(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *p = peer_new(r, "c2s-1", "c2s", false, 0);
    assert_true(has(p, "<not-authorized")); /* uid-checked names: Unix socket only */
    peer_free(p);
    p = peer_new(r, "c2s-1", "c2s", true, 1001);
    assert_true(has(p, "<not-authorized"));
    peer_free(p);
    p = peer_new(r, "c2s-1", "c2s", true, 1000);
    assert_true(ready(p));
    struct peer *q = peer_new(r, "c2s-1", "c2s", true, 1000);
    assert_true(has(q, "<conflict"));
    peer_free(q);
    /* multi: several instances, each with its own slot */
    struct peer *sm1 = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *sm2 = peer_new(r, "sm", "smsecret", false, 0);
    assert_true(ready(sm1));
    assert_true(ready(sm2));
    assert_int_equal(sm1->c->slot, 0);
    assert_int_equal(sm2->c->slot, 1);
    assert_int_equal(sm1->c->comp->ninst, 2);
    /* c2s heard of sm once, when the name came up */
    assert_true(has(p, "<r:notify name='sm' owner='sm' state='up'/>"));
    peer_free(sm1);
    struct peer *sm3 = peer_new(r, "sm", "smsecret", false, 0);
    assert_int_equal(sm3->c->slot, 0);
    clear(p);
    peer_free(sm2);
    peer_free(sm3);
    assert_true(has(p, "<r:notify name='sm' owner='sm' state='down'/>"));
    peer_free(p);
    router_free(r);
}

/* A multi-instance component's bind answer says its slot and the domain's
 * ring; each change of the ring is notified with the new one, numbered. */
static void test_ring_notify(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *sm1 = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *sm2 = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *c2s = peer_new(r, "c2s-1", "c2s", true, 1000);
    feed(sm1, "<r:bind name='example.com'/>");
    assert_true(has(sm1, "<r:bind name='example.com' slot='0' gen='0' slots='0'/>"));
    clear(sm1);
    feed(sm2, "<r:bind name='example.com'/>");
    assert_true(has(sm2, "<r:bind name='example.com' slot='1' gen='1' slots='0 1'/>"));
    assert_true(has(sm1, "<r:notify name='example.com' owner='sm' state='up' instances='2' "
                         "gen='1' slots='0 1'/>"));
    clear(sm2);
    peer_free(sm1);
    assert_true(has(sm2, "<r:notify name='example.com' owner='sm' state='up' instances='1' "
                         "gen='2' slots='1'/>"));
    /* a component that only tracks up/down (c2s) reads it as one more up */
    assert_true(has(c2s, "instances='1' gen='2' slots='1'/>"));
    /* a single-instance component's bind answer is unchanged */
    feed(c2s, "<r:bind name='c2s-1'/>");
    assert_true(has(c2s, "<r:bind name='c2s-1'/>"));
    peer_free(sm2);
    peer_free(c2s);
    router_free(r);
}

static void test_routing(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *sm = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *muc = peer_new(r, "muc.example.com", "muc", false, 0);
    feed(sm, "<r:bind name='example.com'/>");
    assert_true(has(sm, "<r:bind name='example.com' slot='0' gen='0' slots='0'/>"));
    clear(sm);
    clear(muc);

    /* external -> internal: re-serialised, not the bytes received */
    feed(muc, "<message from=\"room@rooms.example.com/n\"   to=\"alice@example.com\"><body>a&gt;b"
              "</body></message>");
    assert_true(has(sm, "<message from='room@rooms.example.com/n' to='alice@example.com'>"
                        "<body>a&gt;b</body></message>"));
    /* internal -> external: the bytes as received */
    feed(sm, "<message  to=\"room@muc.example.com\" from=\"alice@example.com/r\"/>");
    assert_true(has(muc, "<message  to=\"room@muc.example.com\" from=\"alice@example.com/r\"/>"));
    assert_int_equal(sm->c->comp->stanzas_in, 1);
    assert_int_equal(sm->c->comp->stanzas_out, 1);

    /* unknown domain: iq bounces, presence is dropped, errors are not bounced */
    clear(sm);
    feed(sm, "<iq type='get' id='1' from='alice@example.com/r' to='x@nowhere.example'/>");
    assert_true(has(sm, "type='error'"));
    assert_true(has(sm, "<remote-server-not-found"));
    clear(sm);
    feed(sm, "<presence from='alice@example.com/r' to='x@nowhere.example'/>");
    feed(sm, "<message type='error' from='alice@example.com/r' to='x@nowhere.example'/>");
    assert_int_equal(sm->out.len, 0);
    /* no to, or a bad one */
    feed(sm, "<message from='alice@example.com/r'/>");
    assert_true(has(sm, "<jid-malformed"));
    clear(sm);
    feed(sm, "<message from='alice@example.com/r' to='a@b@c'/>");
    assert_true(has(sm, "<jid-malformed"));

    /* the default route takes unowned domains */
    struct peer *s2s = peer_new(r, "s2s", "s2s", false, 0);
    /* name='' is no name: a default-route-only bind */
    feed(s2s, "<r:bind name='' default='true'/>");
    assert_true(has(s2s, "<r:bind default='true'/>"));
    clear(s2s);
    feed(sm, "<message from='alice@example.com/r' to='bob@remote.example'/>");
    assert_true(has(s2s, "to='bob@remote.example'"));
    /* the muc may not take the default route */
    clear(muc);
    feed(muc, "<r:bind default='true'/>");
    assert_true(has(muc, "<unsupported-stanza-type"));
    assert_int_equal(muc->c->state, CONN_DOWN);
    peer_free(muc);
    peer_free(s2s);
    peer_free(sm);
    router_free(r);
}

static void test_from_checks(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *sm = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *bot = peer_new(r, "bot.example.com", "bot", false, 0);
    struct peer *muc = peer_new(r, "muc.example.com", "muc", false, 0);
    feed(muc, "<message from='muc.example.com' to='bot.example.com'/>");
    feed(muc, "<message from='a@rooms.example.com/x' to='bot.example.com'/>");
    assert_int_equal(muc->c->state, CONN_READY);
    assert_int_equal(bot->c->comp->stanzas_out, 2);
    feed(muc, "<message from='a@sub.rooms.example.com' to='bot.example.com'/>");
    assert_true(has(muc, "<invalid-from"));
    assert_int_equal(muc->c->state, CONN_DOWN);
    peer_free(muc);
    muc = peer_new(r, "muc.example.com", "muc", false, 0);
    feed(muc, "<message to='bot.example.com'/>");
    assert_true(has(muc, "<improper-addressing"));
    peer_free(muc);
    peer_free(bot);
    peer_free(sm);
    router_free(r);
}

/* Pre-handshake connections are counted per listener kind; before the
 * handshake no element may exceed ROUTER_PREAUTH_MAX. */
static void test_pending_and_preauth(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    assert_int_equal(router_max_pending(r), 5); /* half of max-connections 10 */
    struct peer *p = peer_new(r, "bot.example.com", NULL, false, 0);
    struct peer *u = peer_new(r, "sm", NULL, true, 0);
    assert_int_equal(r->npending_by[0], 1);
    assert_int_equal(r->npending_by[1], 1);
    assert_int_equal(r->nconns_by[0], 1);
    char big[ROUTER_PREAUTH_MAX + 64];
    memset(big, 'a', sizeof(big));
    memcpy(big, "<handshake>", 11);
    strcpy(big + sizeof(big) - 13, "</handshake>");
    feed(p, big);
    assert_true(has(p, "<policy-violation"));
    assert_int_equal(p->c->state, CONN_DOWN);
    assert_int_equal(r->npending_by[0], 0);
    assert_int_equal(r->nconns_by[0], 1);
    peer_free(p);
    assert_int_equal(r->nconns_by[0], 0);
    /* a handshake ends pending */
    char digest[41], hs[128];
    conn_digest(u->c->id, "smsecret", 8, digest);
    snprintf(hs, sizeof(hs), "<handshake>%s</handshake>", digest);
    feed(u, hs);
    assert_true(ready(u));
    assert_int_equal(r->npending_by[1], 0);
    assert_int_equal(r->nconns_by[1], 1);
    peer_free(u);
    assert_int_equal(r->nconns_by[1], 0);
    router_free(r);
}

/* Internal components speak for their own domains only; the default-route
 * holder also for remote ones. */
static void test_internal_from_checks(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *bot = peer_new(r, "bot.example.com", "bot", false, 0);
    struct peer *sm = peer_new(r, "sm", "smsecret", false, 0);
    /* its name, and its <domain>s whether bound or not */
    feed(sm, "<message from='sm' to='bot.example.com'/>");
    feed(sm, "<message from='a@example.com/r' to='bot.example.com'/>");
    feed(sm, "<message from='a@other.example' to='bot.example.com'/>");
    assert_int_equal(sm->c->state, CONN_READY);
    assert_int_equal(bot->c->comp->stanzas_out, 3);
    feed(sm, "<message from='a@bot.example.com' to='bot.example.com'/>");
    assert_true(has(sm, "<invalid-from"));
    assert_int_equal(sm->c->state, CONN_DOWN);
    peer_free(sm);
    sm = peer_new(r, "sm", "smsecret", false, 0);
    feed(sm, "<message to='bot.example.com'/>");
    assert_true(has(sm, "<improper-addressing"));
    peer_free(sm);

    /* c2s (no domains) may send only from its name */
    struct peer *c2s = peer_new(r, "c2s-1", "c2s", true, 1000);
    feed(c2s, "<message from='a@example.com/r' to='bot.example.com'/>");
    assert_true(has(c2s, "<invalid-from"));
    peer_free(c2s);

    /* s2s: remote domains once it holds the default route, never local ones */
    sm = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *s2s = peer_new(r, "s2s", "s2s", false, 0);
    feed(s2s, "<message from='x@remote.example' to='bot.example.com'/>");
    assert_true(has(s2s, "<invalid-from"));
    peer_free(s2s);
    s2s = peer_new(r, "s2s", "s2s", false, 0);
    feed(s2s, "<r:bind default='true'/>");
    feed(s2s, "<message from='x@remote.example' to='bot.example.com'/>");
    assert_int_equal(s2s->c->state, CONN_READY);
    /* example.com is sm's (listed, not bound), muc.example.com a name */
    feed(s2s, "<message from='x@example.com' to='bot.example.com'/>");
    assert_true(has(s2s, "<invalid-from"));
    peer_free(s2s);
    s2s = peer_new(r, "s2s", "s2s", false, 0);
    feed(s2s, "<r:bind default='true'/>");
    feed(s2s, "<message from='x@muc.example.com' to='bot.example.com'/>");
    assert_true(has(s2s, "<invalid-from"));
    peer_free(s2s);
    peer_free(sm);
    peer_free(bot);
    router_free(r);
}

/* An internal component's name is not an address for external ones. */
static void test_internal_names(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *sm = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *c2s = peer_new(r, "c2s-1", "c2s", true, 1000);
    struct peer *bot = peer_new(r, "bot.example.com", "bot", false, 0);
    feed(sm, "<r:bind name='example.com'/>");
    clear(sm);
    clear(c2s);
    feed(bot, "<iq type='get' id='1' from='bot.example.com' to='c2s-1'/>");
    feed(bot, "<iq type='get' id='2' from='bot.example.com' to='x@sm/r'/>");
    assert_true(has(bot, "<service-unavailable"));
    assert_true(has(bot, "id='2'"));
    assert_int_equal(bot->c->state, CONN_READY);
    assert_int_equal(c2s->out.len, 0);
    assert_int_equal(sm->out.len, 0);
    /* a bound domain of an internal component is fine */
    feed(bot, "<message from='bot.example.com' to='a@example.com'/>");
    assert_true(has(sm, "to='a@example.com'"));
    /* internal senders may address internal names */
    feed(sm, "<message from='sm' to='c2s-1'/>");
    assert_true(has(c2s, "<message from='sm' to='c2s-1'/>"));
    peer_free(bot);
    peer_free(c2s);
    peer_free(sm);
    router_free(r);
}

static void test_backpressure(void **state)
{
    struct router *r = new_router(users_xml, 4096);
    struct peer *sm = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *bot = peer_new(r, "bot.example.com", "bot", false, 0);
    char big[1500];
    memset(big, 'x', sizeof(big));
    big[sizeof(big) - 1] = '\0';
    char msg[2048];
    snprintf(msg, sizeof(msg),
             "<message from='a@example.com' to='bot.example.com'><body>%s"
             "</body></message>",
             big);
    clear(sm);
    feed(sm, msg);
    feed(sm, msg);
    assert_false(has(sm, "<resource-constraint"));
    assert_false(bot->c->full_logged);
    feed(sm, msg);
    assert_true(has(sm, "<resource-constraint"));
    assert_true(has(sm, "type='wait'"));
    assert_true(bot->c->full_logged);
    assert_int_equal(sm->c->comp->dropped, 1);
    assert_int_equal(bot->c->comp->stanzas_out, 2);
    peer_free(bot);
    peer_free(sm);
    router_free(r);
}

static void test_bind_route_notify(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *sm = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *c2s = peer_new(r, "c2s-1", "c2s", true, 1000);
    assert_true(has(c2s, "<r:notify name='sm' owner='sm' state='up'/>"));
    clear(c2s);
    feed(sm, "<r:bind name='nope.example'/>");
    assert_true(has(sm, "<r:bind name='nope.example' error='not-allowed'/>"));
    feed(sm, "<r:bind default='true'/>");
    assert_true(has(sm, "<r:bind default='true' error='not-allowed'/>"));
    feed(sm, "<r:bind/>");
    assert_true(has(sm, "<r:bind error='bad-request'/>"));
    feed(sm, "<r:bind name='Example.com'/>");
    assert_true(has(sm, "<r:bind name='Example.com' slot='0' gen='0' slots='0'/>"));
    assert_true(has(c2s, "<r:notify name='example.com' owner='sm' state='up'/>"));
    /* a bound name is never taken over: the external muc cannot own it */
    struct users *u;
    char err[256];
    const char *more = "<components>"
                       "<component name='sm' internal='true' multi='true'><secret>smsecret"
                       "</secret><domain>example.com</domain><domain>other.example</domain>"
                       "</component>"
                       "<component name='c2s-1' internal='true' uid='1000'><secret>c2s</secret>"
                       "</component>"
                       "<component name='example.com'><secret>x</secret></component>"
                       "</components>";
    assert_int_equal(users_parse("u2", more, strlen(more), &u, err, sizeof(err)), 0);
    router_set_users(r, u);
    struct peer *thief = peer_new(r, "example.com", "x", false, 0);
    assert_true(has(thief, "<conflict"));
    peer_free(thief);

    /* r:route: the bytes, to a name or a bound domain */
    clear(sm);
    feed(c2s, "<r:route to='example.com' from='c2s-1'><message to='a@example.com'  from='b@x'/>"
              "</r:route>");
    assert_true(has(sm, "<r:route to='example.com' from='c2s-1'><message to='a@example.com'  "
                        "from='b@x'/></r:route>"));
    feed(sm, "<r:route to='c2s-1' from='example.com'><iq/></r:route>");
    assert_true(has(c2s, "<r:route to='c2s-1' from='example.com'><iq/></r:route>"));
    /* nowhere to go: back to the sender */
    clear(c2s);
    feed(c2s, "<r:route to='c2s-9' from='c2s-1'><iq/></r:route>");
    assert_true(has(c2s, "to='c2s-1' from='c2s-9' error='item-not-found'"));
    /* stats */
    clear(c2s);
    feed(c2s, "<r:stats/>");
    assert_true(has(c2s, "<r:component name='c2s-1' instances='1' stanzas-in='2' "
                         "stanzas-out='1'"));
    assert_true(has(c2s, "<r:component name='sm' instances='1'"));
    /* unbind: notify down */
    clear(c2s);
    clear(sm);
    feed(sm, "<r:unbind name='example.com'/>");
    assert_true(has(sm, "<r:unbind name='example.com'/>"));
    assert_true(has(c2s, "<r:notify name='example.com' owner='sm' state='down'/>"));
    feed(sm, "<r:unbind name='sm'/>");
    assert_true(has(sm, "<r:unbind name='sm' error='not-allowed'/>"));
    /* from on r:route must be the sender's */
    feed(c2s, "<r:route to='sm' from='sm'><iq/></r:route>");
    assert_true(has(c2s, "<invalid-from"));
    peer_free(c2s);
    peer_free(sm);
    router_free(r);
}

static void test_reload(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *sm = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *muc = peer_new(r, "muc.example.com", "muc", false, 0);
    struct peer *bot = peer_new(r, "bot.example.com", "bot", false, 0);
    const char *next = "<components>"
                       "<component name='sm' internal='true' multi='true'><secret>changed"
                       "</secret><domain>example.com</domain><domain>other.example</domain>"
                       "</component>"
                       "<component name='muc.example.com'><secret>muc</secret></component>"
                       "<component name='new.example.com'><secret>n</secret></component>"
                       "</components>";
    struct users *u;
    char err[256];
    assert_int_equal(users_parse("u2", next, strlen(next), &u, err, sizeof(err)), 0);
    router_set_users(r, u);
    /* the secret alone changed: kept */
    assert_int_equal(sm->c->state, CONN_READY);
    /* its domains changed: reset */
    assert_true(has(muc, "<reset"));
    /* removed: not-authorized */
    assert_true(has(bot, "<not-authorized"));
    struct peer *n = peer_new(r, "new.example.com", "n", false, 0);
    assert_true(ready(n));
    struct peer *sm2 = peer_new(r, "sm", "smsecret", false, 0);
    assert_true(has(sm2, "<not-authorized"));
    peer_free(sm2);
    sm2 = peer_new(r, "sm", "changed", false, 0);
    assert_true(ready(sm2));
    peer_free(sm2);
    peer_free(n);
    peer_free(bot);
    peer_free(muc);
    peer_free(sm);
    router_free(r);
}

static void test_stream_end_and_errors(void **state)
{
    struct router *r = new_router(users_xml, 65536);
    struct peer *sm = peer_new(r, "sm", "smsecret", false, 0);
    struct peer *c2s = peer_new(r, "c2s-1", "c2s", true, 1000);
    clear(c2s);
    feed(sm, "</stream:stream>");
    assert_int_equal(sm->c->state, CONN_DOWN);
    assert_true(has(sm, "</stream:stream>"));
    assert_true(has(c2s, "<r:notify name='sm' owner='sm' state='down'/>"));
    feed(c2s, "<foo/>");
    assert_true(has(c2s, "<unsupported-stanza-type"));
    struct peer *p = peer_new(r, "bot.example.com", "bot", false, 0);
    feed(p, "<a><b></a>");
    assert_true(has(p, "<stream:error>"));
    assert_int_equal(p->c->state, CONN_DOWN);
    peer_free(p);
    peer_free(c2s);
    peer_free(sm);
    router_free(r);
}

int main(void)
{
    log_init("test_router_conn", 0, LOG_LVL_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest),         cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_uid_and_multi),  cmocka_unit_test(test_routing),
        cmocka_unit_test(test_from_checks),    cmocka_unit_test(test_internal_from_checks),
        cmocka_unit_test(test_internal_names), cmocka_unit_test(test_pending_and_preauth),
        cmocka_unit_test(test_backpressure),   cmocka_unit_test(test_bind_route_notify),
        cmocka_unit_test(test_reload),         cmocka_unit_test(test_stream_end_and_errors),
        cmocka_unit_test(test_ring_notify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
