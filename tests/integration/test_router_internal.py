"""test_router_internal.py - the urn:parley:router protocol on the Unix socket.

Raw component streams written by hand, as our internal daemons speak it:
r:bind (success, not-allowed, conflict, multi-instance, default route),
r:unbind, r:route delivery (bytes unchanged) and its consistent hashing over
the instances of a multi-instance name, r:notify up/down, r:stats, and
plain stanzas routed to and from internal components by bound domain.
"""

import asyncio
import xml.etree.ElementTree as ET

from harness import (NS_COMPONENT, NS_ROUTER, close_all, run, stanza_error,
                     stream_error_condition)

R = "{%s}" % NS_ROUTER


def r_el(kind, **attrs):
    """Predicate: an r:<kind> element with these attribute values."""
    def pred(e):
        return e.tag == R + kind and all(e.get(k) == v for k, v in attrs.items())
    return pred


async def bind(conn, name, default=False):
    """Send r:bind, return the answer's error attribute (None: bound)."""
    conn.send("<r:bind name='%s'%s/>" % (name, " default='true'" if default else ""))
    el = await conn.expect(r_el("bind", name=name), what="r:bind answer for " + name)
    return el.get("error")


def notified(name, state, owner=None):
    return r_el("notify", name=name, state=state, owner=owner or name)


def test_bind_success_not_allowed_conflict(router):
    async def main():
        sm = await router.raw_component("sm")
        other = await router.raw_component("sm-other")
        sm2 = None
        try:
            assert await bind(sm, "example.test") is None
            assert await bind(sm, "other.test") == "not-allowed"
            # the same domain by another name: never taken over
            assert await bind(other, "example.test") == "conflict"
            # a second instance of the multi-instance sm shares it
            sm2 = await router.raw_component("sm")
            assert await bind(sm2, "example.test") is None
            # the default route only for a name that has default-route
            assert await bind(sm, "anything.test", default=True) == "not-allowed"
            s2s = await router.raw_component("s2s")
            assert await bind(s2s, "s2s.test", default=True) is None
            sm.send("<r:unbind name='example.test'/>")
            await sm.expect(r_el("unbind", name="example.test"), what="r:unbind answer")
            await close_all(s2s)
        finally:
            await close_all(sm, other, sm2)

    run(main())


def test_route_delivers_bytes_unchanged(router):
    async def main():
        c1 = await router.raw_component("c2s-1")
        c2 = await router.raw_component("c2s-2")
        try:
            # odd but well-formed bytes: internal stanzas are not re-serialised
            payload = ("<r:route to='c2s-2' from='c2s-1'>"
                       "<message to=\"u@example.test/r\" from='v@example.test/s'  id='x1'>"
                       "<body>hi &amp; &#x263A;</body><x xmlns='urn:test'  a=\"1\"/>"
                       "</message></r:route>")
            c1.send(payload)
            got = await c2.expect(r_el("route", to="c2s-2", **{"from": "c2s-1"}),
                                  what="r:route at c2s-2")
            msg = got.find("{%s}message" % NS_COMPONENT)
            assert msg is not None and msg.get("id") == "x1"
            assert msg.find("{%s}body" % NS_COMPONENT).text == "hi & \u263a"
            assert payload.encode() in bytes(c2.received), \
                "r:route bytes were changed on the way"
        finally:
            await close_all(c1, c2)

    run(main())


def test_route_to_multi_instances_is_consistent(router):
    """Bare JIDs stick to one sm instance; when an instance leaves, only its
    own users move (consistent hashing, not hash mod N)."""
    async def main():
        c1 = await router.raw_component("c2s-1")
        sms = [await router.raw_component("sm") for _ in range(3)]
        users = ["user%d@example.test" % i for i in range(60)]

        async def where(targets):
            """Route one stanza per user; which instance got each."""
            for i, u in enumerate(users):
                c1.send("<r:route to='sm' from='c2s-1'><message to='%s/res%d' id='%s'/>"
                        "</r:route>" % (u, i % 3, u))
            owner = {}
            pending = set(users)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while pending:
                assert loop.time() < deadline, "undelivered: %s" % sorted(pending)[:5]
                for k, s in enumerate(targets):
                    if s is None:
                        continue
                    try:
                        el = await s.recv(0.05)
                    except asyncio.TimeoutError:
                        continue
                    assert el is not None, "an sm instance was disconnected"
                    if el.tag != R + "route":
                        continue
                    m = el.find("{%s}message" % NS_COMPONENT)
                    assert m.get("id") not in owner, "delivered twice: " + m.get("id")
                    owner[m.get("id")] = k
                    pending.discard(m.get("id"))
            return owner

        try:
            first = await where(sms)
            again = await where(sms)
            assert first == again, "the same users went to different instances"
            assert len(set(first.values())) >= 2, "every user went to one instance"
            sms[2].close()
            # wait until the router has dropped the instance (a stanza routed
            # to it meanwhile would be lost)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while True:
                c1.send("<r:stats/>")
                st = await c1.expect(lambda e: e.tag == R + "stats", what="r:stats")
                inst = [c.get("instances") for c in st.findall(R + "component")
                        if c.get("name") == "sm"]
                if inst == ["2"]:
                    break
                assert loop.time() < deadline, "sm instances still %s" % inst
            after = await where([sms[0], sms[1], None])
            for u in users:
                if first[u] != 2:
                    assert after[u] == first[u], "%s moved from a live instance" % u
        finally:
            await close_all(c1, *sms)

    run(main())


def test_route_key_overrides_inner_to(router):
    """r:route key= (the sender's bare JID) picks the instance, whatever the
    inner stanza's to: all of one user's traffic reaches one sm shard."""
    async def main():
        c1 = await router.raw_component("c2s-1")
        sms = [await router.raw_component("sm") for _ in range(3)]
        try:
            got = {}
            for i in range(40):
                c1.send("<r:route to='sm' from='c2s-1' key='alice@example.test'>"
                        "<message to='peer%d@example.test' id='k%d'/></r:route>" % (i, i))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len(got) < 40:
                assert loop.time() < deadline, "undelivered: %d of 40" % (40 - len(got))
                for k, s in enumerate(sms):
                    try:
                        el = await s.recv(0.05)
                    except asyncio.TimeoutError:
                        continue
                    if el is not None and el.tag == R + "route":
                        got[el.find("{%s}message" % NS_COMPONENT).get("id")] = k
            assert len(set(got.values())) == 1, "one user's stanzas were spread: %s" % got
        finally:
            await close_all(c1, *sms)

    run(main())


def test_notify_up_and_down(router):
    async def main():
        c1 = await router.raw_component("c2s-1")
        c2 = sm = a = None
        try:
            c2 = await router.raw_component("c2s-2")
            await c1.expect(notified("c2s-2", "up"), what="notify c2s-2 up")
            # a newcomer hears about every name already up
            await c2.expect(notified("c2s-1", "up"), what="notify c2s-1 up at c2s-2")

            sm = await router.raw_component("sm")
            await c1.expect(notified("sm", "up"), what="notify sm up")
            assert await bind(sm, "example.test") is None
            # owner= tells a c2s that this domain is the sm's, not a component's
            await c1.expect(notified("example.test", "up", "sm"), what="notify example.test up")
            await c2.expect(notified("example.test", "up", "sm"), what="notify example.test up")

            a = await router.comp("a.test")
            await c1.expect(notified("a.test", "up"), what="notify a.test up")

            c2.close()
            await c1.expect(notified("c2s-2", "down"), what="notify c2s-2 down")
            sm.close()
            got = []
            for _ in range(2):
                el = await c1.expect(r_el("notify", state="down"), what="notify down")
                got.append((el.get("name"), el.get("owner")))
            assert sorted(got) == [("example.test", "sm"), ("sm", "sm")]
            await a.close()
            await c1.expect(notified("a.test", "down"), what="notify a.test down")
        finally:
            await close_all(c1, c2, sm, a)

    run(main())


def test_stats(router):
    async def main():
        c1 = await router.raw_component("c2s-1")
        c2 = await router.raw_component("c2s-2")
        sm1 = await router.raw_component("sm")
        sm2 = await router.raw_component("sm")
        try:
            for i in range(3):
                c1.send("<r:route to='c2s-2' from='c2s-1'><message id='s%d'/></r:route>" % i)
            for i in range(3):
                await c2.expect(r_el("route"), what="route %d" % i)
            c1.send("<r:stats/>")
            st = await c1.expect(lambda e: e.tag == R + "stats", what="r:stats answer")
            comps = {c.get("name"): c for c in st.findall(R + "component")}
            for name in ("c2s-1", "c2s-2", "sm"):
                assert name in comps, "no stats for %s: %s" % (name, ET.tostring(st))
            for c in comps.values():
                for k in ("instances", "stanzas-in", "stanzas-out", "bytes-in", "bytes-out",
                          "dropped"):
                    assert c.get(k) is not None and c.get(k).isdigit(), \
                        "%s: bad %s in %s" % (c.get("name"), k, ET.tostring(c))
            assert comps["sm"].get("instances") == "2"
            assert comps["c2s-1"].get("instances") == "1"
            for name in ("c2s-1", "c2s-2"):
                c = comps[name]
                assert int(c.get("stanzas-in")) + int(c.get("stanzas-out")) >= 3, \
                    ET.tostring(c)
                assert int(c.get("bytes-in")) + int(c.get("bytes-out")) > 0
        finally:
            await close_all(c1, c2, sm1, sm2)

    run(main())


def test_plain_stanzas_to_and_from_internal(router):
    """By bound domain to an internal component, to the default route when
    one is bound, and from an internal component to an external one."""
    async def main():
        sm = await router.raw_component("sm")
        s2s = None
        a = await router.comp("a.test")
        try:
            assert await bind(sm, "example.test") is None
            m = a.make_message(mto="u@example.test", mbody="to sm", mfrom="alice@a.test")
            m["id"] = "p1"
            m.send()
            got = await sm.expect(lambda e: e.get("id") == "p1", what="message at sm")
            assert got.tag == "{%s}message" % NS_COMPONENT

            # no default route yet: a bounce
            m = a.make_message(mto="x@remote.example", mbody="far", mfrom="alice@a.test")
            m["id"] = "p2"
            m.send()
            got = await a.expect(lambda s: s["id"] == "p2", what="bounce p2")
            assert stanza_error(got.xml) == ("cancel", "remote-server-not-found")

            # an internal sender is bounced too
            sm.send("<iq type='get' to='nowhere.test' from='u@example.test' id='p5'>"
                    "<ping xmlns='urn:xmpp:ping'/></iq>")
            got = await sm.expect(lambda e: e.get("id") == "p5", what="bounce p5")
            assert got.get("type") == "error"
            assert stanza_error(got) == ("cancel", "remote-server-not-found")

            s2s = await router.raw_component("s2s")
            assert await bind(s2s, "s2s.test", default=True) is None
            m = a.make_message(mto="x@remote.example", mbody="far", mfrom="alice@a.test")
            m["id"] = "p3"
            m.send()
            got = await s2s.expect(lambda e: e.get("id") == "p3", what="message at s2s")
            assert got.get("to") == "x@remote.example"

            sm.send("<message to='alice@a.test/x' from='u@example.test' id='p4'>"
                    "<body>from sm</body></message>")
            got = await a.expect(lambda s: s["id"] == "p4", what="message from sm")
            assert got["body"] == "from sm"
        finally:
            await close_all(sm, s2s, a)

    run(main())


def test_external_cannot_use_router_namespace(router):
    """An external component sending r:bind loses its stream (the router
    says unsupported-stanza-type) and binds nothing."""
    async def main():
        a = await router.raw_component("a.test")
        b = await router.comp("b.test")
        try:
            a.send("<r:bind xmlns:r='%s' name='example.test'/>" % NS_ROUTER)
            await a.expect_stream_error("unsupported-stanza-type")
            m = b.make_message(mto="u@example.test", mbody="x", mfrom="bob@b.test")
            m["id"] = "nb"
            m.send()
            got = await b.expect(lambda s: s["id"] == "nb", what="bounce")
            assert stanza_error(got.xml) == ("cancel", "remote-server-not-found")
        finally:
            await close_all(a, b)

    run(main())


def test_internal_single_instance_conflict(router):
    async def main():
        c1 = await router.raw_component("c2s-1")
        r = await router.raw(router.unix())
        try:
            await r.open_stream("c2s-1", internal=True)
            el = await r.handshake(router.secret("c2s-1"))
            assert stream_error_condition(el) == "conflict", ET.tostring(el)
            await r.expect_closed()
            # the first instance still receives its routes
            c2 = await router.raw_component("c2s-2")
            c2.send("<r:route to='c2s-1' from='c2s-2'><message id='k'/></r:route>")
            await c1.expect(r_el("route", to="c2s-1"), what="route to the first c2s-1")
            c2.close()
        finally:
            await close_all(c1, r)

    run(main())


def test_ring_change_notified_and_keyless_route_to_every_instance(router):
    """A multi-instance route that gains or loses an instance while it stays
    up is notified up again with instances='N' (its ring changed), to every
    other internal component; an r:route with neither key nor inner to (a
    c2s's <announced/>) reaches every instance, a keyed one exactly one."""
    NS_S = "urn:parley:session"

    async def main():
        c1 = await router.raw_component("c2s-1")
        a = await router.raw_component("sm")
        b = None
        try:
            assert await bind(a, "example.test") is None
            await c1.expect(notified("example.test", "up", owner="sm"), what="domain up")
            b = await router.raw_component("sm")
            await a.expect(r_el("notify", name="sm", state="up", instances="2"),
                           what="sm has 2 instances, at a")
            assert await bind(b, "example.test") is None
            for x in (a, c1):
                await x.expect(r_el("notify", name="example.test", owner="sm", state="up",
                                    instances="2"), what="the domain's ring changed")
            c1.send("<r:route to='example.test' from='c2s-1' key='u1@example.test'>"
                    "<start xmlns='%s' sid='s1' jid='u1@example.test/r'/></r:route>"
                    "<r:route to='example.test' from='c2s-1'><announced xmlns='%s'/></r:route>"
                    % (NS_S, NS_S))
            starts = 0
            for x in (a, b):
                while True:
                    el = await x.expect(r_el("route", to="example.test"), what="a route")
                    if el.find("{%s}announced" % NS_S) is not None:
                        break
                    starts += el.find("{%s}start" % NS_S) is not None
            assert starts == 1, "a keyed route reached %d instances" % starts
            b.close()
            for x in (a, c1):
                await x.expect(r_el("notify", name="example.test", owner="sm", state="up",
                                    instances="1"), what="the domain's ring changed back")
        finally:
            await close_all(a, b, c1)

    run(main())
