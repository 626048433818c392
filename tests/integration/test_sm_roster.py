"""test_sm_roster.py - RFC 6121 §2 rosters in parley-sm, at the protocol
level (the test speaks as c2s-1 over the real router; real PostgreSQL):
get, set, remove, pushes to interested resources, versioning (§2.6),
limits and errors, persistence across an sm restart.
"""

import pytest

import harness
from smutil import FakeC2s, SmStack, error_of, is_push, login, push_item, q

R = "jabber:iq:roster"


@pytest.fixture
def st():
    s = SmStack(extra={"sm": "<limits><roster-items>3</roster-items></limits>"})
    s.start()
    for u in ("alice", "bob"):
        s.add_user(u, "pw")
    yield s
    s.finish()


def items(iq):
    query = iq.find("{%s}query" % R)
    return {} if query is None else {i.get("jid"): i for i in query}


def get(ver=None, iq_id="g"):
    v = "" if ver is None else " ver='%s'" % ver
    return "<iq type='get' id='%s'><query xmlns='%s'%s/></iq>" % (iq_id, R, v)


def set_item(jid, iq_id="s", name=None, groups=(), extra=""):
    n = "" if name is None else " name='%s'" % name
    g = "".join("<group>%s</group>" % x for x in groups)
    return ("<iq type='set' id='%s'><query xmlns='%s'><item jid='%s'%s%s>%s</item></query></iq>"
            % (iq_id, R, jid, n, extra, g))


def test_get_set_push_versioning(st):
    async def go():
        c = await FakeC2s.connect(st)
        a1 = await login(c, "alice@%s/one" % st.domain, presence=None)
        a2 = await login(c, "alice@%s/two" % st.domain, presence=None)
        r = await a1.iq(get(iq_id="g0"), "g0")
        assert r.get("type") == "result" and items(r) == {}
        v0 = r.find("{%s}query" % R).get("ver")
        assert v0 is not None
        await a2.iq(get(iq_id="g0b"), "g0b")  # a2 is interested too
        r = await a1.iq(set_item("carol@example.org", "s1", name="Carol", groups=("Friends", "Work")),
                        "s1")
        assert r.get("type") == "result"
        for s in (a1, a2):  # §2.1.6: pushed to every interested resource
            p = await s.recv(is_push("carol@example.org"), what="push")
            it = push_item(p)
            assert it.get("name") == "Carol" and it.get("subscription") == "none"
            assert sorted(g.text for g in it) == ["Friends", "Work"]
            v1 = p.find("{%s}query" % R).get("ver")
            assert v1 != v0
        # §2.6: the current version gets an empty result; an old one the roster.
        r = await a1.iq(get(v1, "g1"), "g1")
        assert r.get("type") == "result" and r.find("{%s}query" % R) is None
        r = await a1.iq(get(v0, "g2"), "g2")
        assert list(items(r)) == ["carol@example.org"]
        assert r.find("{%s}query" % R).get("ver") == v1
        # Update: name and groups replaced.
        await a1.iq(set_item("carol@example.org", "s2", groups=("Work",)), "s2")
        p = await a1.recv(is_push("carol@example.org"))
        assert push_item(p).get("name") is None and [g.text for g in push_item(p)] == ["Work"]
        # Remove (§2.5): a push with subscription='remove'.
        r = await a1.iq(set_item("carol@example.org", "s3", extra=" subscription='remove'"), "s3")
        assert r.get("type") == "result"
        p = await a2.recv(lambda s: is_push("carol@example.org")(s) and
                          push_item(s).get("subscription") == "remove", what="remove push")
        r = await a1.iq(get(iq_id="g3"), "g3")
        assert items(r) == {}
        c.close()
    harness.run(go())


def test_errors_and_limit(st):
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/one" % st.domain, presence=None)
        two = ("<iq type='set' id='e1'><query xmlns='%s'><item jid='x@example.org'/>"
               "<item jid='y@example.org'/></query></iq>" % R)
        assert error_of(await a.iq(two, "e1"))[1] == "bad-request"
        assert error_of(await a.iq(set_item("x@example.org", "e2", groups=("A", "A")),
                                   "e2"))[1] == "bad-request"
        assert error_of(await a.iq(set_item("x@example.org", "e3", groups=("",)),
                                   "e3"))[1] == "not-acceptable"
        assert error_of(await a.iq(set_item("bad@@jid", "e4"), "e4"))[1] == "bad-request"
        assert error_of(await a.iq(set_item("nobody@example.org", "e5",
                                            extra=" subscription='remove'"),
                                   "e5"))[1] == "item-not-found"
        assert error_of(await a.iq(
            "<iq type='get' id='e6' to='bob@%s'><query xmlns='%s'/></iq>" % (st.domain, R),
            "e6"))[1] == "forbidden"
        for i in range(3):
            r = await a.iq(set_item("u%d@example.org" % i, "l%d" % i), "l%d" % i)
            assert r.get("type") == "result"
        assert error_of(await a.iq(set_item("u3@example.org", "l3"), "l3"))[1] == "not-allowed"
        c.close()
    harness.run(go())


def test_roster_survives_sm_restart(st):
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/one" % st.domain, presence=None)
        await a.iq(set_item("carol@example.org", "s1", name="C"), "s1")
        r = await a.iq(get(iq_id="g1"), "g1")
        ver = r.find("{%s}query" % R).get("ver")
        c.close()
        st.restart_sm()
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/one" % st.domain, presence=None)
        r = await a.iq(get(iq_id="g2"), "g2")
        assert items(r)["carol@example.org"].get("name") == "C"
        assert r.find("{%s}query" % R).get("ver") == ver
        c.close()
    harness.run(go())


def test_pending_requests_limit(st):
    """Waiting subscription requests are capped like roster items (3 here):
    the next one bounces with resource-constraint."""
    async def go():
        for i in range(4):
            st.add_user("fan%d" % i, "pw")
        c = await FakeC2s.connect(st)
        A = "alice@%s" % st.domain
        for i in range(4):
            f = await login(c, "fan%d@%s/r" % (i, st.domain))
            f.send("<presence to='%s' type='subscribe' id='sub%d'/>" % (A, i))
            if i < 3:
                await f.nothing(lambda s: s.get("type") == "error")
            else:
                e = await f.recv(lambda s: s.get("id") == "sub3")
                assert e.get("type") == "error" and error_of(e)[1] == "resource-constraint"
        a = await login(c, A + "/one")
        for i in range(3):
            await a.recv(lambda s, i=i: s.get("from") == "fan%d@%s" % (i, st.domain) and
                         s.get("type") == "subscribe", what="request %d" % i)
        c.close()
    harness.run(go())


def test_roster_too_big_for_one_stanza():
    """Names and groups may each take 1023 bytes, so a roster well within
    <limits><roster-items> can outgrow one stanza (256 KiB at the router).
    Its get is answered resource-constraint (and logged) instead of with a
    result the router would refuse by ending the sm's connection: the
    router link stays up (a ping right after is answered, the sm logs no
    lost stream), and a versioned get that needs no items still works."""
    st = SmStack()
    st.start()
    st.add_user("alice", "pw")
    groups = ["%s%02d" % ("g" * 1000, i) for i in range(30)]

    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        for i in range(10):  # about 32 KB each
            r = await a.iq(set_item("c%d@x.test" % i, "s%d" % i, name="n" * 1000, groups=groups),
                           "s%d" % i)
            assert r.get("type") == "result", error_of(r)
        r = await a.iq(get(), "g")
        assert error_of(r) == ("wait", "resource-constraint"), error_of(r)
        r = await a.iq("<iq type='get' id='p' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                       % st.domain, "p")
        assert r.get("type") == "result"
        # The refused get made the session interested: a change is pushed,
        # and a get with the pushed version needs no items.
        r = await a.iq(set_item("c0@x.test", "s10", name="short"), "s10")
        assert r.get("type") == "result", error_of(r)
        push = await a.recv(is_push("c0@x.test"))
        ver = push.find("{%s}query" % R).get("ver")
        r = await a.iq(get(ver, "g2"), "g2")
        assert r.get("type") == "result" and r.find("{%s}query" % R) is None
        c.close()

    try:
        harness.run(go())
        log = st["sm"].log()
        assert "roster of alice@%s not sent" % st.domain in log
        assert "router ended the stream" not in log
    finally:
        st.finish()
