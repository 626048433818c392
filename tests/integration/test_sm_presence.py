"""test_sm_presence.py - RFC 6121 §3-4 in parley-sm at the protocol level
(the test speaks as c2s-1/c2s-2 over the real router; real PostgreSQL):
subscription handshakes in several orders with their roster pushes,
pre-approval, requests kept for an offline contact, probes and broadcast
across accounts and resources, unavailable when a session ends, when a
c2s goes down, and to directed-presence recipients.
"""

import xml.etree.ElementTree as ET

import pytest

import harness
import smutil
import stack
from smutil import (FakeC2s, SmStack, is_presence, is_push, login, push_item, q)

R = "jabber:iq:roster"


async def remote_s2s(st):
    """A raw component as the s2s: the router's default route, so that it
    gets what the sm sends to remote domains."""
    s2s = await st.router.raw_component("s2s")
    s2s.send("<r:bind xmlns:r='%s' default='true'/>" % harness.NS_ROUTER)
    await s2s.expect(lambda el: el.tag == "{%s}bind" % harness.NS_ROUTER and
                     el.get("error") is None, what="default route bound")
    return s2s


async def before_marker(sess, s2s, remote):
    """What s2s gets before a marker message sess sends to remote now."""
    sess.send("<message to='%s' id='mark'><body>marker</body></message>" % remote)
    seen = []
    while True:
        el = await s2s.recv()
        assert el is not None, "s2s stream closed"
        if el.tag == q("message") and el.get("id") == "mark":
            return seen
        seen.append(el)


@pytest.fixture
def st():
    s = SmStack(c2s=2)
    s.start()
    for u in ("alice", "bob", "carol"):
        s.add_user(u, "pw")
    yield s
    s.finish()


def interested(sess, iq_id="rg"):
    return sess.iq("<iq type='get' id='%s'><query xmlns='%s'/></iq>" % (iq_id, R), iq_id)


def pres(to, type):
    return "<presence to='%s' type='%s'/>" % (to, type)


def state(push):
    it = push_item(push)
    return (it.get("subscription"), it.get("ask"), it.get("approved"))


async def resume(c, sess, presence):
    """After an sm restart: c asks the sm to resume sess (resume=True), sess
    sends presence, and the sm says the session started."""
    c.start(sess.jid, sid=sess.sid, resume=True)
    sess.send(presence)
    await c.control("started", sess.sid)


async def subscribe_both(st, a, b):
    """a and b end up subscribed to each other (a asks first)."""
    a.send(pres(b.bare, "subscribe"))
    await b.recv(is_presence(a.bare, "subscribe"))
    b.send(pres(a.bare, "subscribed"))
    await a.recv(is_presence(b.bare, "subscribed"))
    b.send(pres(a.bare, "subscribe"))
    await a.recv(is_presence(b.bare, "subscribe"))
    a.send(pres(b.bare, "subscribed"))
    await b.recv(is_presence(a.bare, "subscribed"))


def test_subscription_handshake_pushes(st):
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        await interested(a)
        await interested(b)
        A, B = a.bare, b.bare
        # §3.1.2: alice asks; her item is none + ask.
        a.send(pres(B, "subscribe"))
        assert state(await a.recv(is_push(B))) == ("none", "subscribe", None)
        # §3.1.3: bob (online) gets the request, stamped with alice's bare JID.
        await b.recv(is_presence(A, "subscribe"))
        # §3.1.5: bob approves: his item is from; alice gets subscribed, her
        # item becomes to, and bob's current presence follows (§3.1.5/§3.1.6).
        b.send(pres(A, "subscribed"))
        assert state(await b.recv(is_push(A))) == ("from", None, None)
        await a.recv(is_presence(B, "subscribed"))
        assert state(await a.recv(lambda s: is_push(B)(s) and
                                  push_item(s).get("subscription") == "to")) == ("to", None, None)
        await a.recv(is_presence(b.jid, None), what="bob's presence after approval")
        # Now the other way round: both.
        b.send(pres(A, "subscribe"))
        await a.recv(is_presence(B, "subscribe"))
        a.send(pres(B, "subscribed"))
        await a.recv(lambda s: is_push(B)(s) and push_item(s).get("subscription") == "both")
        await b.recv(lambda s: is_push(A)(s) and push_item(s).get("subscription") == "both")
        await b.recv(is_presence(a.jid, None), what="alice's presence after approval")
        # §3.3: alice unsubscribes from bob: alice from, bob to; bob is told,
        # and alice gets bob's unavailable (§3.3.3).
        a.send(pres(B, "unsubscribe"))
        await a.recv(lambda s: is_push(B)(s) and push_item(s).get("subscription") == "from")
        await b.recv(is_presence(A, "unsubscribe"))
        await b.recv(lambda s: is_push(A)(s) and push_item(s).get("subscription") == "to")
        await a.recv(is_presence(b.jid, "unavailable"), what="bob's unavailable (§3.3.3)")
        # §3.2: bob cancels alice's subscription from him... (he is 'to' now)
        # and alice cancels bob's: none on both sides.
        a.send(pres(B, "unsubscribed"))
        await a.recv(lambda s: is_push(B)(s) and push_item(s).get("subscription") == "none")
        await b.recv(is_presence(A, "unsubscribed"))
        await b.recv(lambda s: is_push(A)(s) and push_item(s).get("subscription") == "none")
        await b.recv(is_presence(a.jid, "unavailable"), what="unavailable after cancel (§3.2.2)")
        c.close()
    harness.run(go())


def test_preapproval_and_offline_request(st):
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        await interested(a)
        await interested(b)
        A, B = a.bare, b.bare
        # §3.4: bob pre-approves alice; alice's request is answered at once.
        b.send(pres(A, "subscribed"))
        assert state(await b.recv(is_push(A))) == ("none", None, "true")
        a.send(pres(B, "subscribe"))
        await a.recv(is_presence(B, "subscribed"))
        await a.recv(lambda s: is_push(B)(s) and push_item(s).get("subscription") == "to")
        await b.recv(lambda s: is_push(A)(s) and push_item(s).get("subscription") == "from")
        await b.nothing(is_presence(A, "subscribe"))  # never asked: it was approved
        # §3.1.3: carol is offline; alice's request waits and is delivered at
        # carol's next login, and again at the one after until answered.
        C = "carol@%s" % st.domain
        a.send(pres(C, "subscribe"))
        await a.recv(lambda s: is_push(C)(s) and push_item(s).get("ask") == "subscribe")
        for i in range(2):
            cs = await login(c, C + "/c%d" % i)
            await cs.recv(is_presence(A, "subscribe"), what="stored request")
            cs.end()
        cs = await login(c, C + "/c9")
        cs.send(pres(A, "subscribed"))
        await a.recv(is_presence(C, "subscribed"))
        cs.end()
        cs = await login(c, C + "/c10")
        await cs.nothing(is_presence(A, "subscribe"))
        c.close()
    harness.run(go())


def test_probes_broadcast_resources_and_end(st):
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        await subscribe_both(st, a, b)
        b.end()
        await a.recv(is_presence(b.jid, "unavailable"), what="unavailable at session end (§4.5.2)")
        # bob comes back with two resources: his initial presence reaches
        # alice (§4.2.2), and the probe answer brings him alice's (§4.3).
        b1 = await login(c, "bob@%s/one" % st.domain,
                         "<presence><show>away</show><priority>5</priority></presence>")
        p = await a.recv(is_presence(b1.jid, None))
        assert p.find(q("show")).text == "away"
        await b1.recv(is_presence(a.jid, None), what="alice's presence (probe answer)")
        b2 = await login(c, "bob@%s/two" % st.domain)
        await a.recv(is_presence(b2.jid, None))
        await b1.recv(is_presence(b2.jid, None), what="own other resource's presence")
        await b2.recv(is_presence(b1.jid, None), what="own other resource's presence")
        await b2.recv(is_presence(a.jid, None), what="alice's presence for the new resource")
        # An update is broadcast as well (§4.4).
        b2.send("<presence><status>lunch</status></presence>")
        p = await a.recv(lambda s: is_presence(b2.jid, None)(s) and s.find(q("status")) is not None)
        assert p.find(q("status")).text == "lunch"
        # carol has no subscription: her probe is not answered with presence.
        cs = await login(c, "carol@%s/c" % st.domain)
        await cs.nothing(is_presence(b1.jid, None))
        c.close()
    harness.run(go())


def test_c2s_down_and_directed_presence(st):
    async def go():
        c1 = await FakeC2s.connect(st, "c2s-1")
        c2 = await FakeC2s.connect(st, "c2s-2")
        a = await login(c1, "alice@%s/a" % st.domain)
        b = await login(c2, "bob@%s/b" % st.domain)
        cs = await login(c1, "carol@%s/c" % st.domain)
        await subscribe_both(st, a, b)
        # §4.6: bob sends directed presence to carol (no subscription).
        b.send("<presence to='%s'/>" % cs.jid)
        await cs.recv(is_presence(b.jid, None))
        # c2s-2 vanishes: its sessions end; alice and carol get unavailable.
        c2.close()
        await a.recv(is_presence(b.jid, "unavailable"), what="unavailable after c2s-2 went down")
        await cs.recv(is_presence(b.jid, "unavailable"), what="unavailable to directed recipient")
        c1.close()
    harness.run(go())


def test_resumed_sessions_after_sm_restart(st):
    """After an sm restart the c2s re-announces its sessions (resume) and
    replays their last presence: the sm knows them again, answers probes
    with them, and a session that had sent no presence broadcasts its
    first one as an initial presence."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        await subscribe_both(st, a, b)
        b.send("<presence type='unavailable'/>")
        await a.recv(is_presence(b.jid, "unavailable"))
        st.restart_sm()
        await c.control("announce", timeout=harness.START_WAIT)
        c.start(a.jid, sid=a.sid, resume=True)
        a.send("<presence><status>replayed</status></presence>")
        c.start(b.jid, sid=b.sid, resume=True)  # unavailable: no replay
        await c.control("started", a.sid)
        await c.control("started", b.sid)
        # bob's first presence after the restart is news to alice.
        b.send("<presence><status>here again</status></presence>")
        await a.recv(lambda s: is_presence(b.jid, None)(s) and s.find(q("status")) is not None
                     and s.find(q("status")).text == "here again",
                     what="bob's presence after the restart")
        # alice's replayed presence is known: bob's initial presence probed it.
        await b.recv(lambda s: is_presence(a.jid, None)(s) and s.find(q("status")) is not None
                     and s.find(q("status")).text == "replayed",
                     what="alice's replayed presence (probe answer)")
        c.close()
    harness.run(go())


def test_crossed_requests_and_denial(st):
    """Both ask before either answers (crossed requests), then both approve:
    both; and a denied request (§3.2.1): ask cleared, nothing subscribed."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        cs = await login(c, "carol@%s/c" % st.domain)
        for s in (a, b, cs):
            await interested(s)
        A, B, C = a.bare, b.bare, cs.bare
        a.send(pres(B, "subscribe"))
        b.send(pres(A, "subscribe"))
        await b.recv(is_presence(A, "subscribe"))
        await a.recv(is_presence(B, "subscribe"))
        # Each side: none + ask + pending in.
        a.send(pres(B, "subscribed"))
        b.send(pres(A, "subscribed"))
        for me, other in ((a, B), (b, A)):
            await me.recv(lambda s, o=other: is_push(o)(s) and
                          push_item(s).get("subscription") == "both" and
                          push_item(s).get("ask") is None, what="both after crossed requests")
        # carol denies alice.
        a.send(pres(C, "subscribe"))
        await cs.recv(is_presence(A, "subscribe"))
        cs.send(pres(A, "unsubscribed"))
        await a.recv(is_presence(C, "unsubscribed"))
        await a.recv(lambda s: is_push(C)(s) and push_item(s).get("ask") is None and
                     push_item(s).get("subscription") == "none", what="ask cleared by denial")
        # The request is no longer pending at carol: not redelivered at login.
        cs.end()
        cs2 = await login(c, C + "/again")
        await cs2.nothing(is_presence(A, "subscribe"))
        c.close()
    harness.run(go())


def test_roster_remove_cancels_both(st):
    """§2.5.2: removing a contact with 'both' sends unsubscribe and
    unsubscribed (and our unavailable); the contact's item becomes none."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        await interested(a)
        await interested(b)
        await subscribe_both(st, a, b)
        r = await a.iq("<iq type='set' id='rm'><query xmlns='%s'><item jid='%s' "
                       "subscription='remove'/></query></iq>" % (R, b.bare), "rm")
        assert r.get("type") == "result"
        await a.recv(lambda s: is_push(b.bare)(s) and
                     push_item(s).get("subscription") == "remove", what="remove push")
        await b.recv(is_presence(a.bare, "unsubscribe"))
        await b.recv(is_presence(a.bare, "unsubscribed"))
        await b.recv(is_presence(a.jid, "unavailable"), what="alice's unavailable")
        await b.recv(lambda s: is_push(a.bare)(s) and
                     push_item(s).get("subscription") == "none", what="bob's item none")
        c.close()
    harness.run(go())


def test_own_presence_echo_and_resumed_reprobe(st):
    """§4.2.2/§4.4.2: available presence reaches every available resource,
    the sender included. SESSION.md: a re-announced (resumed) session that
    this sm still had re-probes its contacts at its replayed presence."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        await a.recv(is_presence(a.jid, None), what="alice's own presence")
        a2 = await login(c, "alice@%s/a2" % st.domain, "<presence><show>away</show></presence>")
        for s in (a, a2):
            await s.recv(lambda x: is_presence(a2.jid, None)(x) and x.find(q("show")) is not None,
                         what="a2's presence at " + s.jid)
        b = await login(c, "bob@%s/b" % st.domain)
        await subscribe_both(st, a, b)
        await a.iq("<iq type='get' id='m1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                   % st.domain, "m1")
        c.pending.clear()
        # The c2s re-announces alice/a (as after a router loss) and replays it.
        c.start(a.jid, sid=a.sid, resume=True)
        await c.control("started", a.sid)
        a.send("<presence/>")
        await a.recv(is_presence(b.jid, None), what="bob's presence after the re-probe")
        c.close()
    harness.run(go())


def test_replayed_presence_after_sm_restart_not_rebroadcast(st):
    """After an sm restart the c2s replays each session's last presence
    (SESSION.md): the contacts saw it already, so it is not broadcast to
    them again (a remote contact, seen on the s2s route, gets nothing until
    the next real change). A local contact whose probe came before the
    session came back is not answered unavailable: it gets the replayed
    presence."""
    remote = "rem@remote.test"
    st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES "
               "('bob@%s', '%s', 'from')" % (st.domain, remote))

    def to_remote(status=None, type=None):
        def pred(el):
            if el.tag != q("presence") or el.get("to") != remote or el.get("type") != type:
                return False
            s = el.find(q("status"))
            return status is None or (s is not None and s.text == status)
        return pred

    async def go():
        s2s = await remote_s2s(st)
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain, "<presence><status>here</status></presence>")
        await s2s.expect(to_remote("here"), what="bob's presence to the remote contact")
        await subscribe_both(st, a, b)
        st.restart_sm()
        await c.control("announce", timeout=harness.START_WAIT)
        c.pending.clear()
        # alice comes back first: her probe of bob waits (the round lasts).
        await resume(c, a, "<presence/>")
        await c.nothing_for(a.sid, a.sid, a.jid, is_presence(b.bare, "unavailable"))
        await resume(c, b, "<presence><status>here</status></presence>")
        # alice, whose probe waited, gets bob's presence.
        await a.recv(lambda s: is_presence(b.jid, None)(s) and s.find(q("status")) is not None,
                     what="bob's replayed presence at alice")
        # The remote contact gets nothing before bob's marker, then the change.
        seen = await before_marker(b, s2s, remote)
        assert not [e for e in seen if to_remote()(e)], \
            "replay re-broadcast: %s" % [ET.tostring(e)[:200] for e in seen]
        b.send("<presence><status>away now</status></presence>")
        await s2s.expect(to_remote("away now"), what="bob's real change to the remote contact")
        c.close()
        s2s.close()
    harness.run(go())


def test_change_after_router_loss_following_sm_restart(st):
    """After an sm restart a session is restored (its replay is quiet); a
    later router loss makes the c2s re-announce it again, and a presence it
    sends then that differs from the last one reaches the contacts."""
    def has_status(frm, text):
        return lambda s: (is_presence(frm, None)(s) and s.find(q("status")) is not None
                          and s.find(q("status")).text == text)

    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain, "<presence><status>one</status></presence>")
        b = await login(c, "bob@%s/b" % st.domain)
        await subscribe_both(st, a, b)
        st.restart_sm()
        await c.control("announce", timeout=harness.START_WAIT)
        await resume(c, b, "<presence/>")
        await resume(c, a, "<presence><status>one</status></presence>")
        await b.recv(has_status(a.jid, "one"), what="alice's replay (bob probed at his)")
        c.route("<announced xmlns='%s'/>" % smutil.NS_SESSION)
        # A router loss: the c2s announces alice/a again; she has changed.
        c.start(a.jid, sid=a.sid, resume=True)
        await c.control("started", a.sid)
        a.send("<presence><status>two</status></presence>")
        await b.recv(has_status(a.jid, "two"), what="alice's change after the router loss")
        c.close()
    harness.run(go())


def test_prober_gets_every_resource_replayed_after_sm_restart(st):
    """After an sm restart bob's session comes back first: his probe of
    alice is not answered unavailable (her sessions are not back yet, the
    round lasts). Each of alice's two resources then replays its presence:
    bob gets both, not only the first, and no unavailable before them."""
    def has_status(frm, text):
        return lambda s: (is_presence(frm, None)(s) and s.find(q("status")) is not None
                          and s.find(q("status")).text == text)

    async def go():
        c = await FakeC2s.connect(st)
        a1 = await login(c, "alice@%s/a1" % st.domain, "<presence><status>one</status></presence>")
        a2 = await login(c, "alice@%s/a2" % st.domain, "<presence><status>two</status></presence>")
        b = await login(c, "bob@%s/b" % st.domain)
        await subscribe_both(st, a1, b)
        st.restart_sm()
        await c.control("announce", timeout=harness.START_WAIT)
        c.pending.clear()
        await resume(c, b, "<presence/>")
        for s, text in ((a1, "one"), (a2, "two")):
            await resume(c, s, "<presence><status>%s</status></presence>" % text)
        await b.recv(has_status(a1.jid, "one"), what="a1's replay at bob")
        await b.recv(has_status(a2.jid, "two"), what="a2's replay at bob")
        await c.nothing_for(b.sid, b.sid, b.jid, is_presence("alice@%s" % st.domain, "unavailable"))
        c.close()
    harness.run(go())


def test_directed_presence_before_initial_presence_gets_unavailable(st):
    """§4.6.3: a session that is not available (no initial presence yet)
    sends directed presence to a contact subscribed to it (both): no
    broadcast will tell the contact anything, so the session's end sends
    it unavailable. A bare-JID target likewise."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        await subscribe_both(st, a, b)
        a2 = await login(c, "alice@%s/a2" % st.domain, None)
        a2.send("<presence to='%s'><status>hi</status></presence>" % b.jid)
        await b.recv(is_presence(a2.jid, None), what="directed presence to bob/b")
        a3 = await login(c, "alice@%s/a3" % st.domain, None)
        a3.send("<presence to='%s'/>" % b.bare)
        await b.recv(is_presence(a3.jid, None), what="directed presence to bob's bare JID")
        a2.end()
        await b.recv(is_presence(a2.jid, "unavailable"), what="unavailable at a2's end")
        a3.end()
        await b.recv(is_presence(a3.jid, "unavailable"), what="unavailable at a3's end")
        c.close()
    harness.run(go())


def test_directed_then_initial_presence_one_unavailable(st):
    """Directed presence to a subscribed contact before the initial
    presence, then the initial presence and a broadcast unavailable: the
    contact gets unavailable once (the broadcast), not again for the
    directed presence, and nothing at the session's end."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        await subscribe_both(st, a, b)
        a2 = await login(c, "alice@%s/a2" % st.domain, None)
        a2.send("<presence to='%s'/>" % b.jid)
        await b.recv(is_presence(a2.jid, None), what="directed presence")
        a2.send("<presence><status>in</status></presence>")
        await b.recv(lambda s: is_presence(a2.jid, None)(s) and s.find(q("status")) is not None,
                     what="a2's initial presence")
        a2.send("<presence type='unavailable'/>")
        await b.recv(is_presence(a2.jid, "unavailable"), what="a2's broadcast unavailable")
        a2.end()
        await b.nothing(is_presence(a2.jid, "unavailable"))
        c.close()
    harness.run(go())


def test_directed_to_a_subscribers_unavailable_resource_gets_unavailable(st):
    """§4.6.3: directed presence before the initial presence to a full JID
    of a subscribed contact whose resource is not available (it sent no
    presence): the broadcast unavailable to the contact's bare JID misses
    that resource, so it gets an unavailable of its own."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        await subscribe_both(st, a, b)
        b2 = await login(c, "bob@%s/b2" % st.domain, None)
        a2 = await login(c, "alice@%s/a2" % st.domain, None)
        a2.send("<presence to='%s'/>" % b2.jid)
        await b2.recv(is_presence(a2.jid, None), what="directed presence to bob/b2")
        a2.send("<presence/>")
        await b.recv(is_presence(a2.jid, None), what="a2's initial presence at bob/b")
        a2.send("<presence type='unavailable'/>")
        await b.recv(is_presence(a2.jid, "unavailable"), what="a2's broadcast unavailable")
        await b2.recv(is_presence(a2.jid, "unavailable"), what="a2's unavailable at bob/b2")
        c.close()
    harness.run(go())


def test_directed_presence_after_broadcast_unavailable_gets_unavailable(st):
    """§4.6.3: directed presence sent after the session's broadcast
    unavailable (active, not available) to a subscribed contact: the
    session's end sends that contact unavailable."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        await subscribe_both(st, a, b)
        a.send("<presence type='unavailable'/>")
        await b.recv(is_presence(a.jid, "unavailable"), what="alice's broadcast unavailable")
        a.send("<presence to='%s'/>" % b.jid)
        await b.recv(is_presence(a.jid, None), what="directed presence after unavailable")
        a.end()
        await b.recv(is_presence(a.jid, "unavailable"), what="unavailable at alice's end")
        c.close()
    harness.run(go())


def test_directed_presence_before_initial_real_clients():
    """The same as a user sees it, with python3-slixmpp clients through
    parley-c2s: alice (subscribed both ways with bob) logs in without
    initial presence, sends bob directed presence and logs out; bob's client
    learns she is unavailable."""
    st = stack.Stack(c2s=1)
    st.start()
    try:
        A, B = st.add_user("alice", "pw"), st.add_user("bob", "pw")
        st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES "
                   "('%s', '%s', 'both'), ('%s', '%s', 'both')" % (A, B, B, A))

        async def go():
            b = await smutil.client(st, "bob", "desk")
            a = await smutil.client(st, "alice", "home", presence=False)
            try:
                a.send_presence(pto=B + "/desk", pstatus="just you")
                await smutil.wait_for(b.presences, lambda p: str(p["from"]) == A + "/home" and
                                      p["type"] in ("available", ""), "alice's directed presence")
                await smutil.logout_all(a)
                await smutil.wait_for(b.presences, lambda p: str(p["from"]) == A + "/home" and
                                      p["type"] == "unavailable", "alice's unavailable at logout")
            finally:
                await smutil.logout_all(a, b)
        harness.run(go())
        codes = st.stop()
        print(st.logs()[-60000:])
        assert codes["sm"] == 0, codes
        assert not st.sanitizer_errors(), st.sanitizer_errors()[:5]
    finally:
        st.cleanup()


def test_preapproval_cancel_not_routed(st):
    """§3.2.2: an unsubscribed that only cancels a pre-approval removes it
    (a roster push without 'approved') and is not routed (item 2: MUST
    NOT), nor was the pre-approval (§3.4.2); an unsubscribed that denies a
    pending request is routed (item 3). Seen at the remote domain's s2s:
    nothing for the pre-approved contact before a marker behind both."""
    x, y = "x@remote.test", "y@remote.test"

    async def go():
        s2s = await remote_s2s(st)
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        await interested(a)
        a.send(pres(x, "subscribed"))
        assert state(await a.recv(is_push(x))) == ("none", None, "true")
        a.send(pres(x, "unsubscribed"))
        assert state(await a.recv(is_push(x))) == ("none", None, None)
        s2s.send("<presence xmlns='jabber:component:accept' from='%s' to='%s' type='subscribe'/>"
                 % (y, a.bare))
        await a.recv(is_presence(y, "subscribe"), what="y's request")
        a.send(pres(y, "unsubscribed"))
        seen = await before_marker(a, s2s, x)
        to = [(e.get("to"), e.get("type")) for e in seen if e.tag == q("presence")]
        assert (y, "unsubscribed") in to, to
        assert not [t for t in to if t[0] == x], to
        c.close()
        s2s.close()
    harness.run(go())
