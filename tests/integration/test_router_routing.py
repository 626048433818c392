"""test_router_routing.py - external components (slixmpp) through parley-router.

Two real XEP-0114 components exchange messages, iqs and presence; stanzas
to a domain nobody owns come back as the right errors (or, for presence and
errors, do not come back); a component sending from a domain that is not its
own is disconnected with invalid-from.
"""

import xml.etree.ElementTree as ET

import pytest

from harness import NS_COMPONENT, NS_STANZA_ERR, close_all, ping_iq, run, stanza_error


def is_kind(kind, sid=None):
    return lambda s: s.name == kind and (sid is None or s["id"] == sid)


def test_message_iq_presence_between_components(router):
    async def main():
        a = await router.comp("a.test")
        b = await router.comp("b.test")
        try:
            # message a -> b, addressing and body intact
            m = a.make_message(mto="bob@b.test/desk", mbody="hello b <&>",
                               mfrom="alice@a.test/x")
            m["id"] = "m1"
            m.send()
            got = await b.expect(is_kind("message", "m1"), what="message m1")
            assert got["body"] == "hello b <&>"
            assert str(got["from"]) == "alice@a.test/x"
            assert str(got["to"]) == "bob@b.test/desk"

            # to b's other domain, and b answering from it
            m = a.make_message(mto="carol@b-alias.test", mbody="alias", mfrom="alice@a.test/x")
            m["id"] = "m2"
            m.send()
            got = await b.expect(is_kind("message", "m2"), what="message m2")
            assert got["body"] == "alias"

            # iq get b -> a, answered with a result a -> b
            iq = ping_iq(b, "a.test", "carol@b-alias.test/r", "iq1")
            b.send(iq)
            req = await a.expect(is_kind("iq", "iq1"), what="iq get")
            assert req["type"] == "get"
            assert str(req["from"]) == "carol@b-alias.test/r"
            assert req.xml.find("{urn:xmpp:ping}ping") is not None
            req.reply().send()
            res = await b.expect(is_kind("iq", "iq1"), what="iq result")
            assert res["type"] == "result"
            assert str(res["from"]) == "a.test"
            assert str(res["to"]) == "carol@b-alias.test/r"

            # presence a -> b, available then unavailable
            p = a.make_presence(pto="bob@b.test", pfrom="alice@a.test/x", pstatus="here")
            p.send()
            got = await b.expect(is_kind("presence"), what="presence")
            assert got["type"] == "available"
            assert got["status"] == "here"
            assert str(got["from"]) == "alice@a.test/x"
            p = a.make_presence(pto="bob@b.test", pfrom="alice@a.test/x", ptype="unavailable")
            p.send()
            got = await b.expect(is_kind("presence"), what="unavailable presence")
            assert got["type"] == "unavailable"

            # and the other way round, b -> a
            m = b.make_message(mto="alice@a.test", mbody="back", mfrom="bob@b.test/desk")
            m["id"] = "m3"
            m.send()
            got = await a.expect(is_kind("message", "m3"), what="message m3")
            assert got["body"] == "back"
        finally:
            await close_all(a, b)

    run(main())


def test_external_stanzas_are_reserialised(router):
    """A raw external sender's CDATA and character references arrive as the
    same text, re-serialised (no CDATA section passes through)."""
    async def main():
        a = await router.raw_component("a.test")
        b = await router.raw_component("b.test")
        try:
            a.send("<message to='bob@b.test' from='alice@a.test' id='r1'>"
                   "<body><![CDATA[<x/>&]]>&#x41;&amp;</body></message>")
            got = await b.expect(lambda e: e.get("id") == "r1", what="message r1")
            body = got.find("{%s}body" % NS_COMPONENT)
            assert body is not None and body.text == "<x/>&A&"
            assert b"CDATA" not in bytes(b.received)
        finally:
            await close_all(a, b)

    run(main())


def test_unknown_domain_bounces(router):
    async def main():
        a = await router.comp("a.test")
        try:
            iq = ping_iq(a, "nowhere.test", "alice@a.test/x", "bq1")
            a.send(iq)
            got = await a.expect(is_kind("iq", "bq1"), what="iq bounce")
            assert got["type"] == "error"
            assert stanza_error(got.xml) == ("cancel", "remote-server-not-found")
            assert str(got["from"]) == "nowhere.test"
            assert str(got["to"]) == "alice@a.test/x"

            m = a.make_message(mto="someone@nowhere.test", mbody="hi", mfrom="alice@a.test/x")
            m["id"] = "bm1"
            m.send()
            got = await a.expect(is_kind("message", "bm1"), what="message bounce")
            assert got["type"] == "error"
            assert stanza_error(got.xml) == ("cancel", "remote-server-not-found")
            assert str(got["from"]) == "someone@nowhere.test"
            assert str(got["to"]) == "alice@a.test/x"

            # Presence and error stanzas to nowhere get no answer. The router
            # handles one connection's stanzas in order, so the first thing
            # to come back must be the bounce of the marker sent after them.
            a.make_presence(pto="someone@nowhere.test", pfrom="alice@a.test/x").send()
            a.make_presence(pto="someone@nowhere.test", pfrom="alice@a.test/x",
                            ptype="subscribe").send()
            e = a.make_message(mto="someone@nowhere.test", mfrom="alice@a.test/x",
                               mtype="error")
            e["id"] = "err1"
            # (slixmpp's error plugin is in jabber:client: write it by hand)
            e.xml.append(ET.fromstring(
                "<error xmlns='%s' type='cancel'><item-not-found xmlns='%s'/></error>" %
                (NS_COMPONENT, NS_STANZA_ERR)))
            e.send()
            ie = a.make_iq_error("err2", ito="nowhere.test", ifrom="alice@a.test/x")
            a.send(ie)
            m = a.make_message(mto="someone@nowhere.test", mbody="marker", mfrom="alice@a.test/x")
            m["id"] = "marker"
            m.send()
            got = await a.recv()
            assert got.name == "message" and got["id"] == "marker", \
                "expected only the marker's bounce, got %s" % got
            assert stanza_error(got.xml) == ("cancel", "remote-server-not-found")
        finally:
            await close_all(a)

    run(main())


@pytest.mark.parametrize("spoofed", ["evil.test", "user@evil.test/r", "user@sub.a.test"])
def test_spoofed_from_is_refused(router, spoofed):
    async def main():
        a = await router.comp("a.test")
        b = await router.comp("b.test")
        c = await router.comp("c.test")
        try:
            m = a.make_message(mto="bob@b.test", mbody="spoof", mfrom=spoofed)
            m["id"] = "spoof"
            m.send()
            await a.wait_gone()
            assert a.stream_errors == ["invalid-from"]
            # Had the router forwarded the spoofed stanza, b would have it
            # before anything sent after a was cut off.
            m = c.make_message(mto="bob@b.test", mbody="after", mfrom="carol@c.test")
            m["id"] = "after"
            m.send()
            got = await b.recv()
            assert got["id"] == "after", "b got %s" % got
            # a may come back and is served again
            a2 = await router.comp("a.test")
            await close_all(a2)
        finally:
            await close_all(a, b, c)

    run(main())


def test_keyless_route_fans_out_only_session_control(router):
    """An r:route to a multi-instance name with neither key nor inner to:
    a session end or announced (urn:parley:session) reaches every instance;
    anything else (another session element, a foreign element) exactly one,
    as with a key."""
    NS_S = "urn:parley:session"
    R = "{urn:parley:router}"

    async def main():
        c1 = await router.raw_component("c2s-1")
        sms = [await router.raw_component("sm") for _ in range(2)]
        try:
            for s in sms:
                s.send("<r:bind name='example.test'/>")
                el = await s.expect(lambda e: e.tag == R + "bind", what="bind answer")
                assert el.get("error") is None, el.attrib
            routes = ["<end xmlns='%s' sid='s1' jid='u@example.test'/>" % NS_S,
                      "<start xmlns='%s' sid='s2' jid='u@example.test/r'/>" % NS_S,
                      "<foo xmlns='urn:example:other'/>",
                      "<announced xmlns='%s'/>" % NS_S]
            c1.send("".join("<r:route to='example.test' from='c2s-1'>%s</r:route>" % x
                            for x in routes))
            got = {}
            for s in sms:  # the announced is the last: every instance gets it
                while True:
                    el = await s.expect(lambda e: e.tag == R + "route", what="a route")
                    name = el[0].tag.split("}")[1]
                    got[name] = got.get(name, 0) + 1
                    if name == "announced":
                        break
            assert got == {"end": 2, "start": 1, "foo": 1, "announced": 2}, got
        finally:
            await close_all(c1, *sms)

    run(main())
