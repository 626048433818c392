"""test_sm_session.py - the sm side of the session protocol (sm/SESSION.md),
tested at the protocol level: the test speaks as c2s-1 over the real router
(a raw internal component), against a real parley-sm and PostgreSQL.
"""

import xml.etree.ElementTree as ET

import pytest

import harness
from smutil import FakeC2s, SmStack, error_of, login, offline_count, offline_reaches, q

PING = "<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
PRIO = "<presence><priority>%d</priority></presence>"


@pytest.fixture
def st():
    s = SmStack()
    s.start()
    s.add_user("alice", "pw")
    s.add_user("bob", "pw")
    yield s
    s.finish()


def test_start_existing_and_missing_account(st):
    async def go():
        c = await FakeC2s.connect(st)
        sid = c.start("alice@%s/home" % st.domain)
        await c.control("started", sid)
        bad = c.start("nobody@%s/x" % st.domain)
        f = await c.control("failed", bad)
        assert f.get("reason") == "not-authorized"
        other = c.start("alice@elsewhere.test/x")
        f = await c.control("failed", other)
        assert f.get("reason") == "not-authorized"
        # The session works: the server answers a ping inside it.
        c.send(sid, "alice@%s/home" % st.domain, PING % ("p1", st.domain))
        r = await c.recv(sid, lambda s: s.get("id") == "p1")
        assert r.get("type") == "result" and r.get("to") == "alice@%s/home" % st.domain
        c.close()
    harness.run(go())


def test_newest_session_wins(st):
    async def go():
        c = await FakeC2s.connect(st)
        jid = "alice@%s/phone" % st.domain
        first = c.start(jid)
        await c.control("started", first)
        second = c.start(jid)
        await c.control("replaced", first)
        await c.control("started", second)
        # The old sid is gone: a stanza in it gets a kick back.
        c.send(first, jid, PING % ("old", st.domain))
        k = await c.control("kick", first)
        assert k.get("reason")
        c.send(second, jid, PING % ("new", st.domain))
        await c.recv(second, lambda s: s.get("id") == "new")
        c.close()
    harness.run(go())


def test_unknown_iq_to_server_and_nonexistent_user(st):
    async def go():
        c = await FakeC2s.connect(st)
        jid = "alice@%s/r" % st.domain
        sid = c.start(jid)
        await c.control("started", sid)
        c.send(sid, jid, "<iq type='get' id='u1' to='%s'><foo xmlns='urn:example:nothing'/></iq>"
               % st.domain)
        r = await c.recv(sid, lambda s: s.get("id") == "u1")
        assert error_of(r) == ("cancel", "service-unavailable")
        c.send(sid, jid, "<message type='chat' id='m1' to='ghost@%s'><body>hi</body></message>"
               % st.domain)
        r = await c.recv(sid, lambda s: s.get("id") == "m1")
        assert r.get("type") == "error" and error_of(r)[1] == "service-unavailable"
        assert r.get("from") == "ghost@%s" % st.domain
        c.send(sid, jid, "<iq type='get' id='g1' to='ghost@%s'><ping xmlns='urn:xmpp:ping'/></iq>"
               % st.domain)
        r = await c.recv(sid, lambda s: s.get("id") == "g1")
        assert error_of(r)[1] == "service-unavailable"
        # A subscription request to no account is answered unsubscribed (§3.1.3),
        # delivered to available resources.
        c.send(sid, jid, "<presence/>")
        c.send(sid, jid, "<presence type='subscribe' to='ghost@%s'/>" % st.domain)
        r = await c.recv(sid, lambda s: s.tag == q("presence") and
                         s.get("from") == "ghost@%s" % st.domain)
        assert r.get("type") == "unsubscribed"
        # A result or an error is never answered.
        c.send(sid, jid, "<iq type='result' id='x1' to='%s'/>" % st.domain)
        await c.nothing_for(sid, sid, jid, lambda s: s.get("from") != jid)  # not the own echo
        c.close()
    harness.run(go())


def test_announce_after_sm_restart_and_resume(st):
    async def go():
        c = await FakeC2s.connect(st)
        jid = "alice@%s/r" % st.domain
        sid = c.start(jid)
        await c.control("started", sid)
        await c.control("announce")  # the sm announced itself when c2s-1 appeared
        st.restart_sm()
        await c.control("announce", timeout=harness.START_WAIT)
        c.start(jid, sid=sid, resume=True)
        await c.control("started", sid)
        c.send(sid, jid, PING % ("after", st.domain))
        await c.recv(sid, lambda s: s.get("id") == "after")
        c.close()
    harness.run(go())


def test_end_and_c2s_down(st):
    async def go():
        c = await FakeC2s.connect(st)
        a = "alice@%s/r" % st.domain
        sid = c.start(a)
        await c.control("started", sid)
        c.end(sid, a)
        # After end the sid is unknown: a stanza in it is kicked.
        c.send(sid, a, PING % ("gone", st.domain))
        await c.control("kick", sid)
        sid2 = c.start(a)
        await c.control("started", sid2)
        c.close()
        # The router notifies c2s-1 down; the sm ends its session.
        await harness.apoll(lambda: "session %s of %s ended" % (sid2, a) in st["sm"].log(),
                            lambda: st["sm"].log()[-3000:])
        # A new c2s-1 starts from nothing and can log in again.
        c = await FakeC2s.connect(st)
        sid3 = c.start(a)
        await c.control("started", sid3)
        c.close()
    harness.run(go())


def test_resource_limit(st):
    async def go():
        c = await FakeC2s.connect(st)
        sids = []
        for i in range(10):
            sids.append(c.start("bob@%s/r%d" % (st.domain, i)))
        for s in sids:
            await c.control("started", s)
        extra = c.start("bob@%s/r10" % st.domain)
        f = await c.control("failed", extra)
        assert f.get("reason") == "resource-constraint"
        c.close()
    harness.run(go())


def test_deleted_account_is_kicked(st):
    async def go():
        c = await FakeC2s.connect(st)
        old = c.start("bob@%s/old" % st.domain)
        await c.control("started", old)
        st.del_user("bob")
        # The next login finds the account gone: refused, and the live
        # session is kicked with not-authorized (SESSION.md).
        new = c.start("bob@%s/new" % st.domain)
        f = await c.control("failed", new)
        assert f.get("reason") == "not-authorized"
        k = await c.control("kick", old)
        assert k.get("reason") == "not-authorized"
        c.close()
    harness.run(go())


def test_c2s_error_for_unknown_session_reaches_sender(st):
    """SESSION.md, Returned stanzas (the older form, still accepted): a c2s
    that answers a stanza for a sid it does not know with service-unavailable
    (an r:route without sid) and ends the session; the sm routes the error to
    the original sender and forgets the session."""
    async def go():
        c = await FakeC2s.connect(st)
        a = "alice@%s/a" % st.domain
        b = "bob@%s/b" % st.domain
        sa = c.start(a)
        sb = c.start(b)
        await c.control("started", sa)
        await c.control("started", sb)
        c.send(sa, a, "<message to='%s' id='m1' type='chat'><body>hi</body></message>" % b)
        await c.recv(sb, lambda s: s.get("id") == "m1")
        # As if the c2s had lost bob's session: its error, then its end.
        c.route("<message xmlns='jabber:component:accept' to='%s' from='%s' id='m1' "
                "type='error'><error type='cancel'><service-unavailable "
                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>" % (a, b),
                key="bob@%s" % st.domain)
        c.end(sb, b)
        e = await c.recv(sa, lambda s: s.get("id") == "m1" and s.get("type") == "error")
        assert error_of(e)[1] == "service-unavailable"
        c.close()
    harness.run(go())


def test_end_while_start_pending_leaves_no_session(st):
    """An end that arrives while the start's account check is under way ends
    the session the start then creates: no ghost keeps taking messages."""
    async def go():
        c = await FakeC2s.connect(st)
        a = c.start("alice@%s/a" % st.domain)
        await c.control("started", a)
        ghost = "bob@%s/ghost" % st.domain
        sid = c.start(ghost)  # bob is not loaded: the start waits for storage
        c.end(sid, ghost)
        await c.control("started", sid)
        c.send(a, "alice@%s/a" % st.domain,
               "<message to='%s' type='chat' id='g1'><body>hi</body></message>" % ghost)
        # No session for the full JID: the chat goes by the bare rules, offline.
        await offline_reaches(st, 1)
        await c.nothing_for(sid, a, "alice@%s/a" % st.domain)
        c.close()
    harness.run(go())


def test_sessions_not_reannounced_after_router_loss_end(st):
    """After a router loss the sm keeps its sessions and announces itself;
    the c2s starts again (resume) those it still has, then says announced:
    the others (their clients left meanwhile) are ended, not kept as ghosts."""
    async def go():
        c = await FakeC2s.connect(st)
        A, B = "alice@%s/a" % st.domain, "bob@%s/b" % st.domain
        a = c.start(A)
        await c.control("started", a)
        b = c.start(B)
        await c.control("started", b)
        n = st.sm_ready_count()
        st.router.kill()  # no down notification: the sm keeps both sessions
        c.close()
        st.router.start()
        await harness.apoll(lambda: st.sm_ready_count() != n, "the sm did not reconnect",
                            harness.START_WAIT)
        c = await FakeC2s.connect(st)
        await c.control("announce", timeout=harness.START_WAIT)
        c.start(A, sid=a, resume=True)  # bob's client left while the router was away
        await c.control("started", a)
        c.route("<announced xmlns='urn:parley:session'/>")
        c.send(a, A, "<message to='%s' type='chat' id='g2'><body>hi</body></message>" % B)
        await offline_reaches(st, 1)
        await c.nothing_for(b, a, A)
        c.close()
    harness.run(go())


def test_message_returned_by_older_c2s_goes_to_sender(st):
    """SESSION.md, Returned stanzas: an older c2s answers a message for a sid
    it no longer has with service-unavailable carrying the payload (its
    type lost); the sm routes that error to the sender, as any stanza error
    (no delivery again as a normal message, nothing stored offline)."""
    async def go():
        c = await FakeC2s.connect(st)
        a = "alice@%s/a" % st.domain
        b = "bob@%s/b" % st.domain
        sa = c.start(a)
        sb = c.start(b)
        await c.control("started", sa)
        await c.control("started", sb)
        c.send(sa, a, "<message to='%s' id='m2' type='chat'><body>again</body></message>" % b)
        await c.recv(sb, lambda s: s.get("id") == "m2")
        c.end(sb, b)
        c.route("<message xmlns='jabber:component:accept' to='%s' from='%s' id='m2' "
                "type='error'><body>again</body><error type='cancel'><service-unavailable "
                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>" % (a, b),
                key="bob@%s" % st.domain)
        e = await c.recv(sa, lambda s: s.get("id") == "m2")
        assert e.get("type") == "error" and error_of(e)[1] == "service-unavailable"
        assert e.get("from") == b
        await c.nothing_for(sa, sa, a, lambda s: s.get("id") == "m2")
        assert offline_count(st) == 0
        c.close()
    harness.run(go())


def returned(c, sid, stanza):
    """The envelope parley-c2s sends back for a stanza to a sid it does not
    have (SESSION.md, Returned stanzas): as the router returns one."""
    c.raw.send("<r:route to='%s' from='%s' sid='%s' error='item-not-found'>%s</r:route>" %
               (c.domain, c.name, sid,
                ET.tostring(stanza, encoding="unicode")))


def test_returned_chat_goes_to_other_session_headline_not_again(st):
    """bob's best session is gone as the sm delivers to it: the c2s returns
    the chat to the bare JID (its type with it) and the headline that went
    to every session. The chat reaches bob's other session as a chat; the
    headline is not delivered again (the other session had its copy)."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        phone = await login(c, "bob@%s/phone" % st.domain, PRIO % 5)
        desk = await login(c, "bob@%s/desk" % st.domain, PRIO % 1)
        a.send("<message to='%s' type='headline' id='h1'><body>news</body></message>" % phone.bare)
        a.send("<message to='%s' type='chat' id='c1'><body>hi</body></message>" % phone.bare)
        h = await phone.recv(lambda s: s.get("id") == "h1")
        m = await phone.recv(lambda s: s.get("id") == "c1")
        await desk.recv(lambda s: s.get("id") == "h1")
        returned(c, phone.sid, h)
        returned(c, phone.sid, m)
        phone.end()
        r = await desk.recv(lambda s: s.get("id") == "c1")
        assert r.get("type") == "chat" and r.findtext(q("body")) == "hi"
        await desk.nothing(lambda s: s.get("id") in ("h1", "c1"))
        await a.nothing(lambda s: s.get("id") in ("h1", "c1"))
        assert offline_count(st) == 0
        c.close()
    harness.run(go())
