"""test_sm_e2e_presence.py - RFC 6121 rosters (§2), subscriptions (§3) and
presence (§4) end to end: real python3-slixmpp clients through parley-c2s,
the router and parley-sm on a real PostgreSQL.

test_sm_roster.py and test_sm_presence.py test the same rules at the
session-protocol level (a fake c2s); here every assertion is something a
client sees on its stream: answers, error conditions, roster pushes and
presence stanzas.

One stack serves the whole module; each test logs in accounts of its own,
so the tests do not see each other. To assert that nothing arrives, a
client pings the server after the event that would have caused it was seen
to complete elsewhere: the sm sends its output to the c2s in order, so a
stray stanza would come before the ping's answer (quiet()).
"""

import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

import harness
import stack
from smutil import avail, befriend, client, jid, logout_all, wait_for

R = "jabber:iq:roster"


@pytest.fixture(scope="module")
def st():
    s = stack.Stack(c2s=1)
    s.start()
    yield s
    try:
        codes = s.stop()
        print(s.logs()[-60000:])
        assert codes["sm"] == 0, codes
        assert not s.sanitizer_errors(), s.sanitizer_errors()[:5]
    finally:
        s.cleanup()


@pytest.fixture(autouse=True)
def each_test(st):
    """The daemons' log lines written during the test are printed (pytest
    shows them with a failing test's report); a sanitizer report fails the
    test during which it appeared."""
    names = ["router"] + list(st.daemons)
    start = {n: len(st[n].log()) for n in names}
    yield
    for n in names:
        print("---- %s\n%s" % (n, st[n].log()[start[n]:][-20000:]))
    assert not st.sanitizer_errors(), st.sanitizer_errors()[:5]


def accounts(st, *users):
    for u in users:
        st.add_user(u, "pw")
    return [jid(st, u) for u in users]


# ---- what a client sends and sees

async def iq(x, type, payload, to=None):
    """Send an iq carrying payload (XML text); its answer, result or error."""
    i = x.Iq(stype=type)
    if to is not None:
        i["to"] = to
    i.xml.append(ET.fromstring(payload))
    try:
        return await i.send(timeout=harness.WAIT)
    except IqError as e:
        return e.iq


def condition(answer):
    assert answer["type"] == "error", "expected an error, got %s" % answer
    return answer["error"]["condition"]


async def roster_get(x, ver=None):
    return await iq(x, "get", "<query xmlns='%s'%s/>" % (R, "" if ver is None else
                                                       " ver='%s'" % ver))


def item_xml(item_jid, name=None, groups=(), sub=None):
    el = ET.Element("item", jid=item_jid)
    if name is not None:
        el.set("name", name)
    if sub is not None:
        el.set("subscription", sub)
    for g in groups:
        ET.SubElement(el, "group").text = g
    return ET.tostring(el, encoding="unicode")


async def roster_set(x, item_jid, name=None, groups=(), sub=None, to=None):
    return await iq(x, "set", "<query xmlns='%s'>%s</query>" %
                    (R, item_xml(item_jid, name, groups, sub)), to=to)


def query(answer):
    return answer.xml.find("{%s}query" % R)


def items(answer):
    """{jid: <item/>} of a roster result or push."""
    q = query(answer)
    return {} if q is None else {i.get("jid"): i for i in q.findall("{%s}item" % R)}


def ver(answer):
    return query(answer).get("ver")


def state(item):
    return (item.get("subscription"), item.get("ask"), item.get("approved"))


def groups(item):
    return sorted(g.text for g in item.findall("{%s}group" % R))


async def push(x, item_jid, what=None):
    """The next roster push x got about item_jid (others stay queued)."""
    return await wait_for(x.pushes, lambda p: item_jid in items(p),
                          what or "push of %s at %s" % (item_jid, x.boundjid))


async def pushed(x, item_jid):
    """(subscription, ask, approved) of the next push at x about item_jid."""
    return state(items(await push(x, item_jid))[item_jid])


def is_sub(type, frm):
    return lambda p: p["type"] == type and str(p["from"]) == frm


def has_status(frm, text):
    return lambda p: str(p["from"]) == frm and p["status"] == text


def unavailable(frm):
    return lambda p: str(p["from"]) == frm and p["type"] == "unavailable"


def drain(queue):
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def ping(x):
    r = await iq(x, "get", "<ping xmlns='urn:xmpp:ping'/>", to=x.boundjid.domain)
    assert r["type"] == "result", r


async def quiet(x, queue, pred, what):
    """Nothing matching pred reached x before the answer to a ping x sends
    now (which is behind anything the sm sent x before it; the queue is
    emptied)."""
    await ping(x)
    stray = [str(s)[:300] for s in drain(queue) if pred(s)]
    assert not stray, "%s at %s: %s" % (what, x.boundjid, stray)


async def settle(*xs):
    """Forget what each client got so far (behind a ping of its own)."""
    for x in xs:
        await ping(x)
        drain(x.pushes)
        drain(x.presences)


async def friends(st, a, b):
    """Mutual subscription (a asks first), each having seen the other's
    presence; then both clients' queues are emptied."""
    await befriend(st, a, b)
    await wait_for(a.presences, avail(str(b.boundjid)), "%s's presence" % b.boundjid)
    await wait_for(b.presences, avail(str(a.boundjid)), "%s's presence" % a.boundjid)
    await settle(a, b)


# ---- roster (§2)

def test_roster_get_set_push_update_remove(st):
    A, = accounts(st, "ro_a")
    C = "carol@example.org"

    async def go():
        a1 = await client(st, "ro_a", "one")
        a2 = await client(st, "ro_a", "two")
        a3 = await client(st, "ro_a", "three")  # never asks for the roster
        try:
            r = await roster_get(a1)
            assert r["type"] == "result" and items(r) == {}
            v0 = ver(r)
            assert v0
            await roster_get(a2)
            r = await roster_set(a1, C, name="Carol", groups=("Work", "Friends"))
            assert r["type"] == "result"
            # §2.1.6: pushed to every resource that asked for the roster...
            for x in (a1, a2):
                it = items(p := await push(x, C))[C]
                assert (it.get("name"), groups(it), state(it)) == \
                    ("Carol", ["Friends", "Work"], ("none", None, None))
                assert ver(p) not in (None, v0)
            # ...and not to the one that never did.
            await quiet(a3, a3.pushes, lambda p: True, "roster push")
            r = await roster_get(a2)
            it = items(r)[C]
            assert list(items(r)) == [C] and it.get("name") == "Carol"
            assert groups(it) == ["Friends", "Work"] and state(it) == ("none", None, None)
            # Update: name gone, groups replaced.
            assert (await roster_set(a2, C, groups=("Home",)))["type"] == "result"
            for x in (a1, a2):
                it = items(await push(x, C))[C]
                assert it.get("name") is None and groups(it) == ["Home"]
            # Remove (§2.5): subscription='remove' pushed; the roster is empty.
            assert (await roster_set(a1, C, sub="remove"))["type"] == "result"
            for x in (a1, a2):
                assert state(items(await push(x, C))[C]) == ("remove", None, None)
            assert items(await roster_get(a1)) == {}
            await quiet(a3, a3.pushes, lambda p: True, "roster push")
        finally:
            await logout_all(a1, a2, a3)
    harness.run(go())


def test_roster_versioning(st):
    """§2.6: a get with the current version is answered empty, and that
    resource then gets the changes as pushes carrying the new version; an
    old version gets the whole roster with the current version."""
    accounts(st, "rv_a")
    X, Y = "x@example.org", "y@example.org"

    async def go():
        a = await client(st, "rv_a", "one")
        a2 = None
        try:
            assert "rosterver" in a.features  # advertised (§2.6.1)
            v0 = ver(await roster_get(a))
            await roster_set(a, X, name="X")
            v1 = ver(await push(a, X))
            assert v1 and v1 != v0
            # A second resource whose cached copy is current.
            a2 = await client(st, "rv_a", "two")
            r = await roster_get(a2, v1)
            assert r["type"] == "result" and query(r) is None  # up to date: empty
            await roster_set(a, Y)
            p = await push(a2, Y, "the push after a versioned get")
            v2 = ver(p)
            assert v2 and v2 not in (v0, v1)
            assert ver(await push(a, Y)) == v2
            r = await roster_get(a2, v1)  # an old version: everything
            assert sorted(items(r)) == [X, Y] and ver(r) == v2
            assert items(r)[X].get("name") == "X"
            r = await roster_get(a, v0)
            assert sorted(items(r)) == [X, Y] and ver(r) == v2
            r = await roster_get(a, v2)
            assert r["type"] == "result" and query(r) is None
        finally:
            await logout_all(a, a2)
    harness.run(go())


def test_roster_errors(st):
    """§2.3.3 and sm/mod_roster.c's limits (name and group at most 1023
    bytes, at most 64 groups): each bad set is refused and changes
    nothing."""
    A, B = accounts(st, "re_a", "re_b")
    X = "x@example.org"

    async def go():
        a = await client(st, "re_a", "one")
        try:
            await roster_get(a)
            two = "<query xmlns='%s'>%s%s</query>" % (R, item_xml(X), item_xml("y@example.org"))
            assert condition(await iq(a, "set", two)) == "bad-request"
            assert condition(await roster_set(a, "bad@@jid")) == "bad-request"
            assert condition(await roster_set(a, X, groups=("G", "G"))) == "bad-request"
            assert condition(await roster_set(a, X, name="n" * 1024)) == "not-acceptable"
            assert condition(await roster_set(a, X, groups=("",))) == "not-acceptable"
            assert condition(await roster_set(a, X, groups=("g" * 1024,))) == "not-acceptable"
            assert condition(await roster_set(
                a, X, groups=["g%d" % i for i in range(65)])) == "not-acceptable"
            assert items(await roster_get(a)) == {}, "a refused set changed the roster"
            # At the limits: accepted.
            r = await roster_set(a, X, name="n" * 1023,
                                 groups=["g" * 1023] + ["g%d" % i for i in range(63)])
            assert r["type"] == "result"
            it = items(await push(a, X))[X]
            assert len(it.get("name")) == 1023 and len(groups(it)) == 64
            # §2.1.5: a client cannot set the subscription: the item stays none.
            Z = "z@example.org"
            assert (await roster_set(a, Z, sub="both"))["type"] == "result"
            assert await pushed(a, Z) == ("none", None, None)
            assert state(items(await roster_get(a))[Z]) == ("none", None, None)
            # Removing an item that is not there.
            assert condition(await roster_set(a, "nobody@example.org", sub="remove")) == \
                "item-not-found"
            # Another user's roster: neither set nor get.
            assert condition(await roster_set(a, X, to=B)) == "forbidden"
            assert condition(await iq(a, "get", "<query xmlns='%s'/>" % R, to=B)) == "forbidden"
            assert sorted(items(await roster_get(a))) == [X, Z]
        finally:
            await logout_all(a)
    harness.run(go())


# ---- subscriptions (§3)

def test_subscribe_then_approve(st):
    A, B = accounts(st, "sa_a", "sa_b")

    async def go():
        a = await client(st, "sa_a", "a")
        b = await client(st, "sa_b", "b")
        try:
            await roster_get(a)
            await roster_get(b)
            a.send_presence(pto=B, ptype="subscribe")
            assert await pushed(a, B) == ("none", "subscribe", None)  # §3.1.2
            await wait_for(b.presences, is_sub("subscribe", A), "the request at b")  # §3.1.3
            b.send_presence(pto=A, ptype="subscribed")
            assert await pushed(b, A) == ("from", None, None)  # §3.1.5
            await wait_for(a.presences, is_sub("subscribed", B), "the approval at a")
            assert await pushed(a, B) == ("to", None, None)
            # a now gets b's presence; b, not subscribed to a, gets none of a's.
            await wait_for(a.presences, avail(jid(st, "sa_b", "b")), "b's presence")
            await quiet(b, b.presences, avail(jid(st, "sa_a", "a")), "a's presence")
            assert state(items(await roster_get(a))[B]) == ("to", None, None)
            assert state(items(await roster_get(b))[A]) == ("from", None, None)
            # §3.1.3: asking again while subscribed: b's server answers for
            # him (his presence comes again), b is not asked.
            await settle(a)
            a.send_presence(pto=B, ptype="subscribe")
            await wait_for(a.presences, avail(jid(st, "sa_b", "b")), "b's presence again")
            await quiet(b, b.presences, lambda p: p["type"] == "subscribe", "a second request")
            assert state(items(await roster_get(a))[B]) == ("to", None, None)
        finally:
            await logout_all(a, b)
    harness.run(go())


def test_preapproval(st):
    """§3.4: b approves a before any request; a's request is then
    approved at once, and b never sees it."""
    A, B = accounts(st, "pa_a", "pa_b")

    async def go():
        a = await client(st, "pa_a", "a")
        b = await client(st, "pa_b", "b")
        try:
            assert "preapproval" in b.features  # <sub xmlns='urn:xmpp:features:pre-approval'/>
            await roster_get(a)
            await roster_get(b)
            b.send_presence(pto=A, ptype="subscribed")
            assert await pushed(b, A) == ("none", None, "true")
            a.send_presence(pto=B, ptype="subscribe")
            assert await pushed(a, B) == ("none", "subscribe", None)
            await wait_for(a.presences, is_sub("subscribed", B), "the approval at a")
            assert await pushed(a, B) == ("to", None, None)
            assert await pushed(b, A) == ("from", None, None)
            await wait_for(a.presences, avail(jid(st, "pa_b", "b")), "b's presence")
            await quiet(b, b.presences, lambda p: p["type"] == "subscribe", "a request")
            assert state(items(await roster_get(b))[A]) == ("from", None, None)
        finally:
            await logout_all(a, b)
    harness.run(go())


def test_crossed_requests(st):
    """Both ask before either has seen the other's request, then both
    approve: both items end 'both' with no ask, and presence flows."""
    A, B = accounts(st, "cr_a", "cr_b")

    async def go():
        a = await client(st, "cr_a", "a")
        b = await client(st, "cr_b", "b")
        try:
            await roster_get(a)
            await roster_get(b)
            a.send_presence(pto=B, ptype="subscribe")
            b.send_presence(pto=A, ptype="subscribe")
            await wait_for(a.presences, is_sub("subscribe", B), "b's request at a")
            await wait_for(b.presences, is_sub("subscribe", A), "a's request at b")
            assert await pushed(a, B) == ("none", "subscribe", None)
            assert await pushed(b, A) == ("none", "subscribe", None)
            a.send_presence(pto=B, ptype="subscribed")
            b.send_presence(pto=A, ptype="subscribed")
            for x, other in ((a, B), (b, A)):
                await wait_for(x.pushes, lambda p, o=other: o in items(p) and
                               state(items(p)[o]) == ("both", None, None),
                               "both at %s" % x.boundjid)
            await wait_for(a.presences, avail(jid(st, "cr_b", "b")), "b's presence")
            await wait_for(b.presences, avail(jid(st, "cr_a", "a")), "a's presence")
            assert state(items(await roster_get(a))[B]) == ("both", None, None)
            assert state(items(await roster_get(b))[A]) == ("both", None, None)
        finally:
            await logout_all(a, b)
    harness.run(go())


def test_request_to_offline_user_then_denial(st):
    """§3.1.3: a request to an offline user reaches her at her next login
    (and the one after, until answered); §3.2.1: she denies it, the
    requester's ask is cleared and the request is not delivered again."""
    A, C = accounts(st, "od_a", "od_c")

    async def go():
        a = await client(st, "od_a", "a")
        c = None
        try:
            await roster_get(a)
            a.send_presence(pto=C, ptype="subscribe")
            assert await pushed(a, C) == ("none", "subscribe", None)
            for i in range(2):
                c = await client(st, "od_c", "c%d" % i)
                await wait_for(c.presences, is_sub("subscribe", A), "the stored request")
                await logout_all(c)
            c = await client(st, "od_c", "c2")
            c.send_presence(pto=A, ptype="unsubscribed")
            await wait_for(a.presences, is_sub("unsubscribed", C), "the denial at a")
            assert await pushed(a, C) == ("none", None, None)
            await logout_all(c)
            c = await client(st, "od_c", "c3")
            await quiet(c, c.presences, is_sub("subscribe", A), "a denied request")
            assert state(items(await roster_get(a))[C]) == ("none", None, None)
            # A request to an account that does not exist is denied for it.
            G = jid(st, "od_ghost")
            a.send_presence(pto=G, ptype="subscribe")
            assert await pushed(a, G) == ("none", "subscribe", None)
            await wait_for(a.presences, is_sub("unsubscribed", G), "the denial for no account")
            assert await pushed(a, G) == ("none", None, None)
        finally:
            await logout_all(a, c)
    harness.run(go())


def test_unsubscribe_and_unsubscribed_both_sides(st):
    """From 'both', each side cancels in turn (§3.2 unsubscribed, §3.3
    unsubscribe): after each step both items as pushed, the stanza at the
    other side, and the presence that stops flowing ends with unavailable."""
    A, B = accounts(st, "us_a", "us_b")
    Afull, Bfull = jid(st, "us_a", "a"), jid(st, "us_b", "b")

    async def step(sender, to, type, mine, theirs, receiver, back, gone):
        """sender sends type to `to`; the pushes at both sides; the stanza at
        receiver; the unavailable of `gone` at `back`."""
        sender.send_presence(pto=to, ptype=type)
        assert await pushed(sender, to) == mine
        frm = sender.boundjid.bare
        await wait_for(receiver.presences, is_sub(type, frm),
                       "%s at %s" % (type, receiver.boundjid))
        assert await pushed(receiver, frm) == theirs
        await wait_for(back.presences, unavailable(gone), "unavailable of %s at %s" %
                       (gone, back.boundjid))

    async def go():
        a = await client(st, "us_a", "a")
        b = await client(st, "us_b", "b")
        try:
            await roster_get(a)
            await roster_get(b)
            await friends(st, a, b)
            # a stops b's presence (unsubscribe), then cancels b's (unsubscribed).
            await step(a, B, "unsubscribe", ("from", None, None), ("to", None, None), b, a, Bfull)
            await step(a, B, "unsubscribed", ("none", None, None), ("none", None, None), b, b,
                       Afull)
            await friends(st, a, b)
            # The other way round, from b's side: unsubscribed first.
            await step(b, A, "unsubscribed", ("to", None, None), ("from", None, None), a, a, Bfull)
            await step(b, A, "unsubscribe", ("none", None, None), ("none", None, None), a, b,
                       Afull)
            assert state(items(await roster_get(a))[B]) == ("none", None, None)
            assert state(items(await roster_get(b))[A]) == ("none", None, None)
            # No presence flows any more: a's update does not reach b.
            a.send_presence(pstatus="alone")
            await wait_for(a.presences, has_status(Afull, "alone"), "a's own update")
            await quiet(b, b.presences, lambda p: str(p["from"]) == Afull, "a's presence")
        finally:
            await logout_all(a, b)
    harness.run(go())


def test_roster_remove_cancels_both_subscriptions(st):
    """§2.5.2: removing a contact with 'both' is seen by the contact as
    unsubscribe and unsubscribed: its item becomes none, the user's
    presence ends there (unavailable), and the user's own resources get
    the remove push."""
    A, B = accounts(st, "rm_a", "rm_b")
    Afull = jid(st, "rm_a", "a")

    async def go():
        a = await client(st, "rm_a", "a")
        b = await client(st, "rm_b", "b")
        try:
            await roster_get(a)
            await roster_get(b)
            await friends(st, a, b)
            assert (await roster_set(a, B, sub="remove"))["type"] == "result"
            assert await pushed(a, B) == ("remove", None, None)
            await wait_for(b.presences, is_sub("unsubscribe", A), "unsubscribe at b")
            await wait_for(b.presences, is_sub("unsubscribed", A), "unsubscribed at b")
            await wait_for(b.presences, unavailable(Afull), "a's unavailable at b")
            await wait_for(b.pushes, lambda p: A in items(p) and
                           state(items(p)[A]) == ("none", None, None), "b's item none")
            assert B not in items(await roster_get(a))
            assert state(items(await roster_get(b))[A]) == ("none", None, None)
            # Nothing flows any more: a's update does not reach b.
            a.send_presence(pstatus="gone")
            await wait_for(a.presences, has_status(Afull, "gone"), "a's own update")
            await quiet(b, b.presences, lambda p: str(p["from"]) == Afull, "a's presence")
        finally:
            await logout_all(a, b)
    harness.run(go())


# ---- presence (§4)

async def online(st, user, res, status, show=None):
    x = await client(st, user, res, presence=False)
    x.send_presence(pstatus=status, pshow=show)
    return x


def test_probes_broadcast_updates_and_unavailable(st):
    """§4.2-4.5: an initial presence gets each available resource of a
    contact (probe), with its own status; updates reach the contacts and
    not carol, who is in alice's roster but not subscribed to her ('to'); a
    new resource sees the contact's current presence, a resource that sent
    no presence sees none; unavailable at logout (with its status) and when
    the TCP connection just drops; a probe of a contact with no available
    resource gets unavailable."""
    A, B, C = accounts(st, "pr_a", "pr_b", "pr_c")
    B1, B2 = jid(st, "pr_b", "one"), jid(st, "pr_b", "two")

    async def go():
        a = await online(st, "pr_a", "home", "at home")
        b1 = await online(st, "pr_b", "one", "at desk")
        b2 = await online(st, "pr_b", "two", "on phone", show="away")
        c = await online(st, "pr_c", "c", "curious")
        xs = [a, b1, b2, c]
        try:
            for x in (a, b1, c):
                await roster_get(x)
            await friends(st, a, b1)
            # carol lets alice see her presence, not the other way round.
            a.send_presence(pto=C, ptype="subscribe")
            await wait_for(c.presences, is_sub("subscribe", A), "alice's request at carol")
            c.send_presence(pto=A, ptype="subscribed")
            await wait_for(a.presences, has_status(jid(st, "pr_c", "c"), "curious"),
                           "carol's presence at alice")
            # A second resource of alice: her initial presence is answered
            # with both of bob's resources, each with its status.
            a2 = await online(st, "pr_a", "work", "at work")
            xs.append(a2)
            await wait_for(a2.presences, has_status(B1, "at desk"), "bob/one's presence")
            # (and her own other resource's, §4.2.2)
            await wait_for(a2.presences, has_status(jid(st, "pr_a", "home"), "at home"),
                           "alice/home's presence at alice/work")
            p = await wait_for(a2.presences, has_status(B2, "on phone"), "bob/two's presence")
            assert p["show"] == "away"
            # ...and it is broadcast to bob's resources, not to carol.
            for x in (b1, b2):
                await wait_for(x.presences, has_status(jid(st, "pr_a", "work"), "at work"),
                               "alice/work's presence at %s" % x.boundjid)
            # An update reaches the contact's resources, not carol.
            a.send_presence(pstatus="lunch")
            for x in (b1, b2):
                await wait_for(x.presences, has_status(jid(st, "pr_a", "home"), "lunch"),
                               "alice's update at %s" % x.boundjid)
            await quiet(c, c.presences, lambda p: p["from"].bare == A, "alice's presence")
            # bob changes; a third resource of alice sees his current presence.
            silent = await client(st, "pr_a", "silent", presence=False)
            xs.append(silent)
            b1.send_presence(pstatus="busy", pshow="dnd")
            await wait_for(a.presences, has_status(B1, "busy"), "bob's change at alice")
            # A resource that never sent initial presence gets none.
            await quiet(silent, silent.presences, lambda p: p["from"].bare == B, "bob's presence")
            a3 = await online(st, "pr_a", "phone", "on the go")
            xs.append(a3)
            p = await wait_for(a3.presences, lambda p: str(p["from"]) == B1, "bob/one at a3")
            assert (p["status"], p["show"]) == ("busy", "dnd")
            # Logout: unavailable (§4.5.2).
            await logout_all(a2)
            for x in (b1, b2):
                await wait_for(x.presences, unavailable(jid(st, "pr_a", "work")),
                               "alice/work's unavailable at %s" % x.boundjid)
            # The TCP connection just drops: unavailable too.
            a3.transport.abort()
            for x in (b1, b2):
                await wait_for(x.presences, unavailable(jid(st, "pr_a", "phone")),
                               "alice/phone's unavailable after the drop at %s" % x.boundjid)
            await quiet(c, c.presences, lambda p: p["from"].bare == A, "alice's presence")
            # bob leaves: an unavailable with a status carries it; then,
            # none of his resources available, a probe gets unavailable
            # from his bare JID (§4.3.2).
            b2.send_presence(ptype="unavailable", pstatus="bye")
            p = await wait_for(a.presences, unavailable(B2), "bob/two's unavailable")
            assert p["status"] == "bye"
            await logout_all(b1)
            await wait_for(a.presences, unavailable(B1), "bob/one's unavailable")
            a4 = await online(st, "pr_a", "later", "back")
            xs.append(a4)
            await wait_for(a4.presences, unavailable(B), "unavailable from bob's bare JID")
        finally:
            await logout_all(*xs)
    harness.run(go())


def test_directed_presence_and_offline_full_jid(st):
    """§4.6: directed presence reaches a non-subscriber, who gets the
    sender's unavailable at logout. Presence to a full JID that is not
    online is dropped without an error (§8.5.3.2.3), whether the account
    never logged in, is online with another resource, or has just logged
    out; an iq sent behind it to the same full JID is answered with an
    error (§8.5.3.2.1) and so marks the point by which an error for the
    presence would have come."""
    A, B, C = accounts(st, "dp_a", "dp_b", "dp_c")
    Afull, Cfull = jid(st, "dp_a", "a"), jid(st, "dp_c", "c")

    async def dropped(a, to, b=None):
        a.send_presence(pto=to, pstatus="anyone?")
        r = await iq(a, "get", "<ping xmlns='urn:xmpp:ping'/>", to=to)
        assert condition(r) == "service-unavailable"
        stray = [str(p)[:300] for p in drain(a.presences) if p["type"] == "error"]
        assert not stray, "presence to %s bounced: %s" % (to, stray)
        if b is not None:
            await quiet(b, b.presences, lambda p: p["from"].bare == A, "alice's presence")

    async def go():
        a = await online(st, "dp_a", "a", "here")
        c = await online(st, "dp_c", "c", "there")
        b = None
        try:
            a.send_presence(pto=Cfull, pstatus="just for you")
            await wait_for(c.presences, has_status(Afull, "just for you"), "directed presence")
            await dropped(a, jid(st, "dp_b", "gone"))  # bob never logged in
            b = await online(st, "dp_b", "desk", "in")
            await dropped(a, jid(st, "dp_b", "other"), b)  # not that resource
            await logout_all(b)
            await dropped(a, jid(st, "dp_b", "desk"))  # just gone
            # alice leaves: carol, who got her directed presence, is told.
            await logout_all(a)
            await wait_for(c.presences, unavailable(Afull), "alice's unavailable at carol")
        finally:
            await logout_all(a, b, c)
    harness.run(go())
