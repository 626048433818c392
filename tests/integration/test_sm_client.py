"""test_sm_client.py - the sm end to end with real clients: python3-slixmpp
through parley-c2s, the router and parley-sm on a real PostgreSQL.

Subscriptions and roster pushes, presence across accounts and resources,
priority routing, offline messages across an sm restart and a PostgreSQL
restart (delivered once, with delay stamps), errors for a nonexistent user,
an sm restart with clients staying connected, and a c2s killed: its
sessions end with unavailable to the contacts.
"""

import asyncio
import re

import pytest

import harness
import stack
from smutil import (FakeC2s, avail, befriend, client, is_presence, jid, login, logout_all,
                    offline_reaches, real_stack, restart_sm, wait_for)


@pytest.fixture
def st():
    yield from real_stack()


def test_subscription_presence_and_priority(st):
    async def go():
        a = await client(st, "alice", "home")
        b1 = await client(st, "bob", "one", priority=1)
        try:
            await a.get_roster()
            await b1.get_roster()
            await befriend(st, a, b1)
            # Presence flows both ways now (after the approval, §3.1.5).
            await wait_for(a.presences, avail(jid(st, "bob", "one")), "bob/one's presence")
            # bob's second resource: alice gets its presence, it gets alice's (probe).
            b2 = await client(st, "bob", "two", priority=5)
            await wait_for(a.presences, avail(jid(st, "bob", "two")), "bob/two's presence")
            await wait_for(b2.presences, avail(jid(st, "alice", "home")), "probe answer")
            # A message to bob's bare JID goes to the highest priority.
            a.send_message(mto=jid(st, "bob"), mbody="to the top", mtype="chat")
            m = await asyncio.wait_for(b2.inbox.get(), harness.WAIT)
            assert m["body"] == "to the top"
            # bob/two logs out: alice sees it go.
            await logout_all(b2)
            await wait_for(a.presences, lambda p: str(p["from"]) == jid(st, "bob", "two") and
                           p["type"] == "unavailable", "unavailable of bob/two")
            a.send_message(mto=jid(st, "bob"), mbody="now one", mtype="chat")
            m = await asyncio.wait_for(b1.inbox.get(), harness.WAIT)
            assert m["body"] == "now one"
            # The roster survives on the server: a fresh get shows both.
            await a.get_roster()
            assert a.client_roster[jid(st, "bob")]["subscription"] == "both"
            # Nonexistent user: service-unavailable.
            a.send_message(mto=jid(st, "ghost"), mbody="anyone?", mtype="chat")
            err = await asyncio.wait_for(a.errors.get(), harness.WAIT)
            assert err["error"]["condition"] == "service-unavailable"
        finally:
            await logout_all(a, b1)
    harness.run(go())


def test_offline_across_sm_and_pg_restart(st):
    async def first():
        a = await client(st, "alice", "home")
        try:
            for i in range(2):
                a.send_message(mto=jid(st, "bob"), mbody="offline %d" % i, mtype="chat")
            await offline_reaches(st, 2, "messages not stored")
        finally:
            await logout_all(a)
    harness.run(first())
    restart_sm(st)
    st.pg.restart()

    async def second():
        b = await client(st, "bob", "desk")
        try:
            for i in range(2):
                m = await asyncio.wait_for(b.inbox.get(), harness.WAIT * 2)
                assert m["body"] == "offline %d" % i
                assert m["delay"]["stamp"] is not None
                assert str(m["delay"]["from"]) == st.domain
            await logout_all(b)
            # Delivered once: the next login gets only what is sent now.
            b = await client(st, "bob", "desk2")
            a = await client(st, "alice", "home")
            a.send_message(mto=jid(st, "bob", "desk2"), mbody="live", mtype="chat")
            m = await asyncio.wait_for(b.inbox.get(), harness.WAIT)
            assert m["body"] == "live" and not m["delay"]["stamp"]
            await logout_all(a)
        finally:
            await logout_all(b)
    harness.run(second())


def test_sm_restart_keeps_clients(st):
    async def go():
        a = await client(st, "alice", "home")
        b = await client(st, "bob", "desk")
        try:
            await a.get_roster()
            await b.get_roster()
            await befriend(st, a, b)
            restart_sm(st)
            # The c2s re-announced both sessions: messages flow again.
            await harness.apoll(lambda: st["sm"].log().split("sm ready")[-1].count("(resumed)") >= 2,
                                lambda: st["sm"].log()[-3000:], harness.START_WAIT)
            a.send_message(mto=jid(st, "bob", "desk"), mbody="after restart", mtype="chat")
            m = await asyncio.wait_for(b.inbox.get(), harness.WAIT)
            assert m["body"] == "after restart"
            # Presence state was rebuilt: a status change still reaches alice.
            b.send_presence(pstatus="back")
            await wait_for(a.presences, lambda p: str(p["from"]) == jid(st, "bob", "desk") and
                           p["status"] == "back", "bob's new status")
        finally:
            await logout_all(a, b)
    harness.run(go())


def test_c2s_kill_sends_unavailable():
    """alice is a protocol-level session on a second c2s name; bob a real
    client on parley-c2s, which is killed: alice gets bob's unavailable."""
    s = stack.Stack(c2s=2)
    try:
        s.router.start()
        s["sm"].start()
        s["c2s-1"].start()
        s.add_user("alice", "pw")
        s.add_user("bob", "pw")

        async def go():
            c2 = await FakeC2s.connect(s, "c2s-2")
            a = await login(c2, jid(s, "alice", "raw"))
            b = await client(s, "bob", "desk")
            await b.get_roster()
            # Mutual subscription, alice's side spoken by hand.
            A, B = jid(s, "alice"), jid(s, "bob")
            b.send_presence(pto=A, ptype="subscribe")
            await a.recv(is_presence(B, "subscribe"))
            a.send("<presence to='%s' type='subscribed'/>" % B)
            a.send("<presence to='%s' type='subscribe'/>" % B)
            await wait_for(b.presences, lambda p: p["type"] == "subscribe", "subscribe at bob")
            b.send_presence(pto=A, ptype="subscribed")
            await a.recv(is_presence(jid(s, "bob", "desk"), None), what="bob's presence")
            s.kill("c2s-1")
            await a.recv(is_presence(jid(s, "bob", "desk"), "unavailable"),
                         what="unavailable after the c2s was killed")
            c2.close()
        harness.run(go())
        assert s["sm"].stop() == 0
        assert not s.sanitizer_errors(), s.sanitizer_errors()[:5]
    finally:
        s.router.stop()
        s.cleanup()


def test_presence_sent_while_sm_down_reaches_contacts(st):
    """alice changes her presence while the sm is stopped (the c2s's
    forward comes back undeliverable): when the sm is back, the c2s replays
    it as changed and her contact (remote, seen on the s2s route) gets it;
    the same for an unavailable sent while the sm is down."""
    remote = "rem@remote.test"
    A = jid(st, "alice", "home")
    st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES ('%s', '%s', 'from')"
               % (jid(st, "alice"), remote))
    R = "{%s}" % harness.NS_ROUTER

    def to_remote(type=None, status=None):
        def pred(el):
            if el.tag != "{%s}presence" % harness.NS_COMPONENT or el.get("to") != remote or \
                    el.get("from") != A or el.get("type") != type:
                return False
            s = el.find("{%s}status" % harness.NS_COMPONENT)
            return status is None or (s is not None and s.text == status)
        return pred

    async def while_down(a, send):
        sm = st["sm"]
        n = sm.log().count("sm ready")
        assert sm.stop() == 0
        send()
        # In order behind it: a message's error says the presence came back too.
        a.send_message(mto=jid(st, "bob"), mbody="marker", mtype="chat")
        await asyncio.wait_for(a.errors.get(), harness.WAIT)
        sm.start(wait=False)
        await harness.apoll(lambda: sm.log().count("sm ready") > n, lambda: sm.log()[-3000:],
                            harness.START_WAIT)

    async def go():
        s2s = await st.router.raw_component("s2s")
        s2s.send("<r:bind xmlns:r='%s' default='true'/>" % harness.NS_ROUTER)
        await s2s.expect(lambda el: el.tag == R + "bind" and el.get("error") is None,
                         what="default route bound")
        a = await client(st, "alice", "home")
        try:
            await s2s.expect(to_remote(), what="alice's initial presence at the remote contact")
            await while_down(a, lambda: a.send_presence(pstatus="while down"))
            await s2s.expect(to_remote(status="while down"), timeout=harness.START_WAIT,
                             what="the presence sent while the sm was down")
            await while_down(a, lambda: a.send_presence(ptype="unavailable"))
            await s2s.expect(to_remote(type="unavailable"), timeout=harness.START_WAIT,
                             what="the unavailable sent while the sm was down")
        finally:
            await logout_all(a)
            s2s.close()
    harness.run(go())


def test_welcome_size_checked_at_start():
    """A <welcome> too big to be stored offline (<limits><offline-bytes>) or
    delivered (the 256 KiB stanza size the sm reads stored messages with,
    the router's default) stops the sm at start-up with an error naming the
    element and the limit, instead of being lost at each new account. One
    byte under both limits, it starts, and the welcome reaches a real
    client intact: markup characters, quotes and non-ASCII included."""
    st = stack.Stack(c2s=1)
    special = "<b> & 'single' \"double\" é ✓ 😀"
    in_config = (special.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))

    def configure(filler, quota):
        st.extra["sm"] = ("<welcome><subject>Hi &amp; welcome</subject>"
                          "<body>%s%s</body></welcome>"
                          "<limits><offline-bytes>%d</offline-bytes></limits>"
                          % (in_config, "x" * filler, quota))
        st._write_sm()

    def refused(filler, quota, limit):
        """The sm exits non-zero at start-up; the number the error gives."""
        configure(filler, quota)
        sm = st.daemons["sm"]
        sm.start(wait=False)
        code = sm.proc.wait(harness.WAIT)
        log = sm.fresh_log()
        assert code != 0, log
        line = [l for l in log.splitlines() if "<welcome> is too big" in l]
        assert line and limit in line[0], log
        return line[0]

    try:
        # Over the stanza size: the error says by how much.
        line = refused(300000, 1073741824, "stanza size limit")
        over = int(re.search(r"\((\d+) bytes over", line).group(1))
        filler = 300000 - over  # exactly at the stanza size
        # Over the offline quota: the error says how big it is as stored.
        line = refused(filler, 1024, "<limits><offline-bytes> (1024)")
        stored = int(re.search(r"up to (\d+) bytes as stored", line).group(1))
        refused(filler, stored - 1, "<limits><offline-bytes> (%d)" % (stored - 1))
        refused(filler + 1, stored + 1, "stanza size limit (1 bytes over")
        configure(filler, stored)
        st.start()
        st.add_user("alice", "pw")

        async def go():
            a = await client(st, "alice", "home")
            try:
                m = await asyncio.wait_for(a.inbox.get(), harness.WAIT)
                assert str(m["from"]) == st.domain
                assert m["subject"] == "Hi & welcome"
                assert m["body"] == special + "x" * filler
                assert str(m["delay"]["from"]) == st.domain
            finally:
                await logout_all(a)
        harness.run(go())
        assert st["sm"].stop() == 0
        assert not st.sanitizer_errors(), st.sanitizer_errors()[:5]
    finally:
        st.cleanup()
