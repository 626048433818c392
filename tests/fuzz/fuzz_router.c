/*
 * fuzz_router.c - libFuzzer target for the router's framing, handshake and
 * urn:parley:router handling, without sockets.
 *
 * Each input builds a router with a fixed component table and memory
 * connections (their output goes to buffers). The first byte picks the
 * connection the rest of the input is fed to, through a real stream
 * parser, as the component's side of the stream:
 *   0  a fresh connection: stream header, handshake and all from the input
 *   1  'sm', internal, multi, already authenticated (a second instance of sm,
 *      c2s-1 and s2s with the default route are up too)
 *   2  'muc.example.com', external, already authenticated
 *   3  'c2s-1', internal, already authenticated
 * The second byte splits the rest into two feeds, so that element
 * boundaries fall anywhere. Checks: no crash, leak or sanitizer report;
 * and, for inputs from an external component (0 and 2), everything the
 * router wrote to the other connections parses cleanly, since those bytes
 * were re-serialised by the router and must never carry a parse problem
 * onward (stanza smuggling). Internal components are trusted to send
 * well-formed stanzas, so their output is not checked.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "router/router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char users_xml[] =
    "<components>"
    "<component name='sm' internal='true' multi='true'><secret>smsecret</secret>"
    "<domain>example.com</domain><domain>other.example</domain></component>"
    "<component name='c2s-1' internal='true'><secret>c2s</secret></component>"
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

static void feed(struct peer *pe, const char *s, size_t n)
{
    conn_feed_memory(pe->c, s, n);
}

static void peer_open(struct router *r, struct peer *pe, const char *name, const char *secret)
{
    pe->c = conn_new_memory(r, &pe->out, true, true, 0);
    if (name == NULL)
        return;
    struct buf b = BUF_INIT;
    buf_printf(&b,
               "<stream:stream xmlns='jabber:component:accept' "
               "xmlns:stream='http://etherx.jabber.org/streams' xmlns:r='urn:parley:router' "
               "to='%s'>",
               name);
    feed(pe, b.data, b.len);
    char digest[41];
    conn_digest(pe->c->id, secret, strlen(secret), digest);
    buf_reset(&b);
    buf_printf(&b, "<handshake>%s</handshake>", digest);
    feed(pe, b.data, b.len);
    buf_free(&b);
    if (pe->c->state != CONN_READY)
        abort();
}

static void peer_close(struct peer *pe)
{
    conn_free_memory(pe->c);
    buf_free(&pe->out);
}

/* What the router wrote to a connection must parse without error. */
static int check_failed;

static void c_open(void *arg, struct xml_node *hdr)
{
    xml_free(hdr);
}

static void c_element(void *arg, struct xml_node *el, const char *raw, size_t rawlen)
{
    xml_free(el);
}

static void c_close(void *arg)
{
}

static void c_error(void *arg, enum xml_stream_err cond, const char *text)
{
    check_failed = 1;
}

static const struct xml_parser_cbs ccbs = {c_open, c_element, c_close, c_error};

static void check_output(const struct peer *pe)
{
    struct xml_limits lim;
    xml_limits_default(&lim);
    lim.max_stanza_bytes = 1 << 20;
    struct xml_parser *p = xml_parser_new(&lim, &ccbs, NULL);
    check_failed = 0;
    xml_parser_feed(p, pe->out.data ? pe->out.data : "", pe->out.len);
    xml_parser_free(p);
    if (check_failed)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        log_init("fuzz_router", 0, LOG_LVL_ERR);
        init = 1;
    }
    if (size < 2)
        return 0;
    unsigned mode = data[0] % 4;
    size_t rest = size - 2;
    size_t split = rest ? (data[1] * rest) / 255 : 0;
    const char *in = (const char *)data + 2;

    struct users *u;
    char err[256];
    if (users_parse("fuzz", users_xml, strlen(users_xml), &u, err, sizeof(err)) != 0)
        abort();
    struct router_config cfg = {.stanza_size = 65536, .queue_max = 65536, .max_conns = 100};
    struct router *r = router_new(&cfg, u);

    struct peer sm = {0}, sm2 = {0}, c2s = {0}, s2s = {0}, muc = {0}, fresh = {0};
    peer_open(r, &sm, "sm", "smsecret");
    peer_open(r, &sm2, "sm", "smsecret");
    peer_open(r, &c2s, "c2s-1", "c2s");
    peer_open(r, &s2s, "s2s", "s2s");
    feed(&s2s, "<r:bind default='true'/>", 24);
    feed(&sm, "<r:bind name='example.com'/>", 28);
    feed(&sm2, "<r:bind name='example.com'/>", 28);
    if (mode == 2)
        peer_open(r, &muc, "muc.example.com", "muc");
    struct peer *target;
    switch (mode) {
    case 1:
        target = &sm;
        break;
    case 2:
        target = &muc;
        break;
    case 3:
        target = &c2s;
        break;
    default:
        peer_open(r, &fresh, NULL, NULL);
        target = &fresh;
        break;
    }
    feed(target, in, split);
    feed(target, in + split, rest - split);
    if (mode == 0 || mode == 2) {
        check_output(&sm);
        check_output(&sm2);
        check_output(&c2s);
        check_output(&s2s);
    }
    if (mode == 2)
        peer_close(&muc);
    if (mode == 0)
        peer_close(&fresh);
    peer_close(&sm);
    peer_close(&sm2);
    peer_close(&c2s);
    peer_close(&s2s);
    router_free(r);
    return 0;
}
