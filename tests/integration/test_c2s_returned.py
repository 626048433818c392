"""test_c2s_returned.py - what parley-c2s sends back for a stanza the sm sent
to a session it does not have (sm/SESSION.md, Returned stanzas), and what it
does with such a return when the router hands it back, seen from a fake sm:
a raw internal component named sm that binds the domain and speaks the
session protocol itself (real router, real c2s, real PostgreSQL, a raw
client).

- a return that would not fit <limits><router-stanza-size> with its
  envelope: the older form instead (service-unavailable without the
  payload, no sid), never for an iq result; then the end;
- the c2s's own return handed back by the router (it names a gone sid):
  not answered to a client of this c2s that the stanza's from names.
"""

import asyncio
import secrets
import xml.etree.ElementTree as ET

import harness
import stack
from stack import ClientRaw

NS_SESSION = "urn:parley:session"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ROUTE = "{%s}route" % harness.NS_ROUTER
C = "{%s}" % harness.NS_COMPONENT


def start_without_sm(s):
    """Router and c2s only: the test is the sm."""
    s.router.start()
    for n in s.c2s_names:
        s.daemons[n].start()


async def fake_sm(s):
    sm = await s.router.raw_component("sm")
    sm.send("<r:bind name='%s'/>" % s.domain)
    el = await sm.expect(lambda e: e.tag == "{%s}bind" % harness.NS_ROUTER, what="bind answer")
    assert el.get("error") is None, ET.tostring(el)
    return sm


def to_c2s(sm, s, inner, sid=None, error=None):
    attrs = " to='c2s-1' from='%s'" % s.domain
    if sid:
        attrs += " sid='%s'" % sid
    if error:
        attrs += " error='%s'" % error
    sm.send("<r:route%s>%s</r:route>" % (attrs, inner))


def control(name, sid=None):
    def pred(el):
        return (el.tag == ROUTE and len(el) == 1 and el[0].tag == "{%s}%s" % (NS_SESSION, name)
                and (sid is None or el[0].get("sid") == sid))
    return pred


async def login(sm, s, client, user, password):
    """A session for client that the fake sm starts; its sid."""
    task = asyncio.ensure_future(client.login_plain(user, password))
    el = await sm.expect(control("start"), timeout=harness.WAIT * 2, what="start")
    sid = el[0].get("sid")
    to_c2s(sm, s, "<started xmlns='%s' sid='%s'/>" % (NS_SESSION, sid))
    await task
    return sid


def run_case(body):
    s = stack.Stack(c2s=1, extra={
        "c2s": "  <limits><router-stanza-size>8k</router-stanza-size></limits>\n"})
    try:
        start_without_sm(s)
        s.add_user("alice", "wonderland")

        async def go():
            sm = await fake_sm(s)
            # The bind answer reaches the fake sm before the notify of the
            # domain reaches the c2s, which refuses logins until then.
            await harness.apoll(lambda: "domain %s is up" % s.domain in s["c2s-1"].log(),
                                "the c2s sees the domain up")
            alice = await ClientRaw.connect_client(s)
            try:
                sid = await login(sm, s, alice, "alice", "wonderland")
                await body(s, sm, alice, sid)
            finally:
                alice.close()
                sm.close()

        asyncio.run(go())
        assert s["router"].running() and s["c2s-1"].running()
        assert "router connection lost" not in s["c2s-1"].log()
    finally:
        print(s.logs()[-8000:])  # captured: shown with a failing test's report
        try:
            codes = s.stop()
            assert codes.pop("sm") is None  # never started: the test is the sm
            problems = ["%s exited with %r" % (n, c) for n, c in codes.items() if c != 0]
            problems += s.sanitizer_errors()
            assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
        finally:
            s.cleanup()


def test_return_too_large_falls_back_to_sidless_error():
    """A stanza for a gone session whose return does not fit the c2s's
    <router-stanza-size> (the sm's envelope did, without the sid and error
    attributes) is not lost: the sm gets the older form, service-unavailable
    without the payload and without a sid (it routes that to the sender),
    then the end. A small one is returned whole, and an iq result too large
    to return gets no error (nothing answers a result)."""
    async def body(s, sm, alice, _):
        a = "alice@%s/raw" % s.domain
        gone = "bob@%s/gone" % s.domain
        limit = 8 * 1024

        def envelope(sid, inner):
            return "<r:route to='c2s-1' from='%s' sid='%s'>%s</r:route>" % (s.domain, sid, inner)

        def filled(sid, head, tail):
            """head + padding + tail whose envelope from the sm is just
            under the limit: the return (error and swapped names) is over."""
            n = limit - 8 - len(envelope(sid, head + tail))
            return head + "x" * n + tail

        # Too large to return: the older form, then the end.
        sid1 = secrets.token_hex(16)
        msg = filled(sid1, "<message from='%s' to='%s' id='m1' type='chat'><body>" % (a, gone),
                     "</body></message>")
        assert len(envelope(sid1, msg)) <= limit
        to_c2s(sm, s, msg, sid1)
        el = await sm.expect(lambda e: e.tag == ROUTE and (
            control("end", sid1)(e) or (len(e) == 1 and e[0].get("id") == "m1")),
            what="the return of m1")
        assert el.get("sid") is None and el.get("error") is None, ET.tostring(el)[:300]
        assert el.get("to") == s.domain, el.attrib
        m = el[0]
        assert m.tag == C + "message" and m.get("type") == "error", ET.tostring(m)[:300]
        assert m.get("to") == a and m.get("from") == gone, m.attrib
        assert m.find(C + "body") is None
        assert m.find("%serror/{%s}service-unavailable" % (C, NS_STANZAS)) is not None, \
            ET.tostring(m)
        await sm.expect(control("end", sid1), what="end of %s" % sid1)

        # Small: returned whole, with the sid and error='item-not-found'.
        sid2 = secrets.token_hex(16)
        to_c2s(sm, s, "<message from='%s' to='%s' id='m2' type='chat'><body>hi</body>"
               "</message>" % (a, gone), sid2)
        el = await sm.expect(lambda e: e.tag == ROUTE and len(e) == 1 and e[0].get("id") == "m2",
                             what="the return of m2")
        assert el.get("sid") == sid2 and el.get("error") == "item-not-found", el.attrib
        assert el[0].findtext(C + "body") == "hi"
        await sm.expect(control("end", sid2), what="end of %s" % sid2)

        # An iq result too large: only the end.
        sid3 = secrets.token_hex(16)
        res = filled(sid3, "<iq from='%s' to='%s' id='r3' type='result'><q xmlns='urn:x'>" %
                     (a, gone), "</q></iq>")
        to_c2s(sm, s, res, sid3)
        el = await sm.expect(lambda e: e.tag == ROUTE and (
            control("end", sid3)(e) or (len(e) == 1 and e[0].get("id") == "r3")),
            what="the end of %s" % sid3)
        assert control("end", sid3)(el), ET.tostring(el)[:300]

    run_case(body)


def test_own_return_handed_back_not_answered_to_sender_here():
    """The router hands the c2s its own return back (no sm took it): the
    envelope names the gone session's sid, and the stanza's from is the
    original sender, here a client of this c2s. That client gets no error
    for it (for an iq result it would be an error answering a result)."""
    async def body(s, sm, alice, sid):
        a = "alice@%s/raw" % s.domain
        gone = "bob@%s/gone" % s.domain
        for i, inner in enumerate((
                "<message from='%s' to='%s' id='back0' type='chat'><body>hi</body></message>",
                "<iq from='%s' to='%s' id='back1' type='result'/>")):
            to_c2s(sm, s, inner % (a, gone), secrets.token_hex(16), error="item-not-found")
            # A marker in alice's session: the first of the two she gets.
            to_c2s(sm, s, "<message from='%s' to='%s' id='mark%d'><body>m</body></message>" %
                   (gone, a, i), sid)
            el = await alice.expect(lambda e: e.get("id") in ("back%d" % i, "mark%d" % i),
                                    what="the marker")
            assert el.get("id") == "mark%d" % i, ET.tostring(el)

    run_case(body)
