"""test_sm_multi.py - two parley-sm instances sharing one domain
(<multi-instance>yes</multi-instance>, router multi='true'): each user's
sessions live on the instance the router picks for the bare JID, and
stanzas between users on different instances still arrive, subscriptions
included. Protocol level: the test speaks as c2s-1.
"""

import asyncio
import contextlib
import os
import re
import secrets
import signal
import time
import xml.etree.ElementTree as ET

import pytest

import harness
import smutil
import stack
from smutil import FakeC2s, SmStack, error_of, is_message, is_presence, is_push, login, q
from stack import ClientRaw


def test_two_instances_one_domain():
    st = SmStack(extra={"sm": "<multi-instance>yes</multi-instance>"})
    d2 = None
    try:
        st.start()
        with open(st["sm"].config) as f:
            text = f.read()
        cfg2 = st._path("sm2.xml")
        with open(cfg2, "w") as f:
            f.write(re.sub(r"<pidfile>[^<]*</pidfile>",
                           "<pidfile>%s</pidfile>" % st._path("sm2.pid"), text))
        d2 = stack.Daemon("sm2", harness.binary("sm/parley-sm"), cfg2, st._path("sm2.log"),
                          lambda: "sm ready" in d2.log())
        d2.start()
        users = ["u%d" % i for i in range(12)]
        for u in users:
            st.add_user(u, "pw")

        async def go():
            c = await FakeC2s.connect(st)
            sess = {}
            for u in users:
                sess[u] = await login(c, "%s@%s/r" % (u, st.domain))
            where = {u: (1 if "started for %s@" % u in st["sm"].log() else 2) for u in users}
            ones = [u for u in users if where[u] == 1]
            twos = [u for u in users if where[u] == 2]
            assert ones and twos, "all users on one instance: %s" % where
            assert all("started for %s@" % u in d2.log() for u in twos)
            a, b = sess[ones[0]], sess[twos[0]]
            a.send("<message to='%s' type='chat'><body>across</body></message>" % b.bare)
            m = await b.recv(is_message("across"))
            assert m.get("from") == a.jid
            b.send("<message to='%s' type='chat'><body>back</body></message>" % a.jid)
            await a.recv(is_message("back"))
            # A subscription across instances: pushes on both sides.
            for s in (a, b):
                s.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
                await s.recv(lambda x: x.get("id") == "r")
            a.send("<presence to='%s' type='subscribe'/>" % b.bare)
            await b.recv(is_presence(a.bare, "subscribe"))
            b.send("<presence to='%s' type='subscribed'/>" % a.bare)
            await a.recv(is_presence(b.bare, "subscribed"))
            await a.recv(lambda x: is_push(b.bare)(x) and
                         x.find("{jabber:iq:roster}query/{jabber:iq:roster}item")
                         .get("subscription") == "to")
            await a.recv(is_presence(b.jid, None), what="b's presence after approval")
            c.close()
        harness.run(go())
        assert d2.stop() == 0
        assert not d2.sanitizer_errors(), d2.sanitizer_errors()[:5]
    finally:
        if d2 is not None and d2.running():
            d2.kill()
        st.finish()


def test_stanza_returned_by_congested_instance_is_bounced():
    """A stanza the sm hands to the instance that holds its user comes back
    from the router (that instance, here a raw one that stopped reading, is
    congested): the sender gets resource-constraint, nothing is lost
    silently."""
    st = SmStack(extra={"sm": "<multi-instance>yes</multi-instance>"})
    try:
        st.start()
        users = ["u%d" % i for i in range(16)]
        for u in users:
            st.add_user(u, "pw")
        R = "{%s}" % harness.NS_ROUTER

        async def go():
            other = await st.router.raw_component("sm")  # a second instance, by hand
            other.send("<r:bind xmlns:r='%s' name='%s'/>" % (harness.NS_ROUTER, st.domain))
            await other.expect(lambda el: el.tag == R + "bind" and el.get("error") is None,
                               what="bind of the second instance")
            c = await FakeC2s.connect(st)
            here, there = None, None
            for u in users:  # where does each user go? the sm answers, or the raw instance
                jid = "%s@%s/r" % (u, st.domain)
                sid = c.start(jid)
                got = asyncio.ensure_future(c.control("started", sid))
                moved = asyncio.ensure_future(other.expect(
                    lambda el: el.tag == R + "route" and len(el) and el[0].get("sid") == sid,
                    what="start at the raw instance"))
                done, pending = await asyncio.wait({got, moved}, timeout=harness.WAIT,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for f in pending:
                    f.cancel()
                assert done, "start of %s answered nowhere" % u
                if got in done and here is None:
                    here = smutil.Sess(c, jid, sid)
                elif moved in done and there is None:
                    there = jid.split("/")[0]
                if here and there:
                    break
            assert here and there, "users all on one instance"
            other.stop_reading()
            body = "x" * 8192
            e = None
            # Paced (a ping round trip every 10): the raw instance's queue at
            # the router (256 KiB) fills, not the sm's.
            for step in range(60):
                for i in range(10):
                    here.send("<message to='%s' type='chat' id='m%d-%d'><body>%s</body>"
                              "</message>" % (there, step, i, body))
                r = await here.iq("<iq type='get' id='p%d' to='%s'><ping xmlns='urn:xmpp:ping'/>"
                                  "</iq>" % (step, st.domain), "p%d" % step)
                assert r.get("type") == "result"
                errs = [el[0] for el in c.pending if el.tag == R + "route" and
                        el.get("sid") == here.sid and len(el) and el[0].get("type") == "error"]
                if errs:
                    e = errs[0]
                    break
            assert e is not None, "no message came back as undelivered"
            assert error_of(e) == ("wait", "resource-constraint"), error_of(e)
            assert "stanza for another instance returned" in st["sm"].log()
            c.close()
            other.close()
        harness.run(go())
    finally:
        st.finish()


def test_probe_during_round_answered_at_its_end():
    """While a c2s re-announces (here after an sm restart), bob's session is
    back first and probes alice, whose session is not: the probe is not
    answered unavailable then (her start may be on its way: after a ring
    change it always is). Alice's session is not re-announced: once the
    round is over (<announced/>), bob gets her unavailable."""
    st = SmStack()
    try:
        st.start()
        for u in ("alice", "bob"):
            st.add_user(u, "pw")

        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            b = await login(c, "bob@%s/b" % st.domain)
            await subscribed(a, b)
            st.restart_sm()
            await c.control("announce", timeout=harness.START_WAIT)
            c.pending.clear()
            c.start(b.jid, sid=b.sid, resume=True)
            b.send("<presence/>")
            await c.control("started", b.sid)
            unavailable = is_presence(a.bare, "unavailable")
            await c.nothing_for(b.sid, b.sid, b.jid, unavailable)
            c.route("<announced xmlns='%s'/>" % smutil.NS_SESSION)
            await b.recv(unavailable, what="alice's unavailable at the round's end")
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_ring_change_of_one_domain_keeps_the_other_domains_sessions():
    """The sm serves two domains; another instance joins the first one only
    (its ring changes): the sm asks c2s-1 to re-announce that domain's
    sessions (the announce comes from that domain, the c2s answers for it).
    The session of the second domain is not part of that round: it is not
    ended at the announced and still works."""
    second = "second.test"
    st = SmStack(extra={"sm": "<multi-instance>yes</multi-instance><domain>%s</domain>" % second})
    st.router.components["sm"]["domains"].append(second)
    st.router.write_config()
    R = "{%s}" % harness.NS_ROUTER
    try:
        st.start()
        st.add_user("a", "pw")
        st.pg.psql("INSERT INTO users (jid, domain) VALUES (:'jid', :'dom')",
                   variables={"jid": "x@" + second, "dom": second})

        async def go():
            c = await FakeC2s.connect(st)
            c.domains.append(second)
            for d in (st.domain, second):  # c2s-1 came up: an announce per domain
                await c.control("announce", frm=d)
                c.route("<announced xmlns='%s'/>" % smutil.NS_SESSION, to=d)
            x = await login(c, "x@%s/r" % second)
            other = await st.router.raw_component("sm")  # a second instance of st.domain
            other.send("<r:bind xmlns:r='%s' name='%s'/>" % (harness.NS_ROUTER, st.domain))
            await other.expect(lambda el: el.tag == R + "bind" and el.get("error") is None,
                               what="bind of the second instance")
            await c.control("announce", frm=st.domain)
            c.route("<announced xmlns='%s'/>" % smutil.NS_SESSION)
            # The round is over when the sm answers a ping sent after it.
            x.send("<iq type='get' id='p1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % second)
            r = await x.recv(lambda s: s.get("id") == "p1", what="ping answer in x's session")
            assert r.get("type") == "result", r.attrib
            log = st["sm"].log()
            assert "session %s not re-announced" % x.sid not in log, "x's session ended"
            assert "%s moved" % x.sid not in log
            kicks = [el for el in c.pending if len(el) and el[0].tag == q("kick", smutil.NS_SESSION)]
            assert not kicks, kicks
            c.close()
            other.close()
        harness.run(go())
    finally:
        st.finish()


# ---- instances joining and leaving (the ring changes) ----

async def subscribed(a, b):
    """b subscribes to a's presence, a approves, and b gets a's presence."""
    b.send("<presence to='%s' type='subscribe'/>" % a.bare)
    await a.recv(is_presence(b.bare, "subscribe"))
    a.send("<presence to='%s' type='subscribed'/>" % b.bare)
    await b.recv(is_presence(a.bare, "subscribed"))
    await b.recv(is_presence(a.jid, None), what="alice's presence")


def sm_instance(st, name):
    """Another parley-sm instance with the sm's config (its own pidfile, log)."""
    with open(st["sm"].config) as f:
        text = f.read()
    cfg = st._path(name + ".xml")
    with open(cfg, "w") as f:
        f.write(re.sub(r"<pidfile>[^<]*</pidfile>",
                       "<pidfile>%s</pidfile>" % st._path(name + ".pid"), text))
    d = stack.Daemon(name, harness.binary("sm/parley-sm"), cfg, st._path(name + ".log"),
                     lambda: "sm ready" in d.fresh_log())
    return d


STATS = re.compile(r"users \d+ \(idle \d+\), sessions (\d+)")


async def sessions_held(d):
    """The sessions instance d holds now (its SIGUSR1 counters)."""
    n = len(STATS.findall(d.log()))
    d.signal(signal.SIGUSR1)
    deadline = asyncio.get_running_loop().time() + harness.WAIT
    while len(STATS.findall(d.log())) <= n:
        assert asyncio.get_running_loop().time() < deadline, "no stats from " + d.name
        await asyncio.sleep(0.02)
    return int(STATS.findall(d.log())[-1])


async def users_in(d):
    """The users instance d has in memory (loading ones too) now."""
    n = len(USERS.findall(d.log()))
    d.signal(signal.SIGUSR1)
    deadline = asyncio.get_running_loop().time() + harness.WAIT
    while len(USERS.findall(d.log())) <= n:
        assert asyncio.get_running_loop().time() < deadline, "no stats from " + d.name
        await asyncio.sleep(0.02)
    return int(USERS.findall(d.log())[-1])


USERS = re.compile(r"users (\d+) \(idle \d+\), sessions")


def rounds(d):
    """How many re-announce rounds of c2s-1 instance d has seen end."""
    return d.log().count("c2s-1 re-announced its sessions")


async def rounds_done(insts, before, n, what):
    """Wait (bounded) until every instance saw n more rounds of c2s-1 end
    than in before (each its own: parley-c2s answers each announce with
    an announced that carries its round id, and every instance gets every
    announced but ends only its own round)."""
    deadline = asyncio.get_running_loop().time() + harness.WAIT
    while any(rounds(d) < before.get(d.name, 0) + n for d in insts):
        assert asyncio.get_running_loop().time() < deadline, \
            "%s: rounds of c2s-1 %s, before %s, want %d more" % (
                what, [rounds(d) for d in insts], before, n)
        await asyncio.sleep(0.05)


async def held_by(insts, want, what):
    """Wait (bounded) until the instances together hold exactly want sessions:
    no stale copy of a moved session is left anywhere, none is missing."""
    deadline = asyncio.get_running_loop().time() + harness.WAIT
    while True:
        counts = [await sessions_held(d) for d in insts]
        if sum(counts) == want:
            return counts
        assert asyncio.get_running_loop().time() < deadline, \
            "%s: sessions held %s, want %d in all" % (what, counts, want)
        await asyncio.sleep(0.1)


def test_instances_join_and_leave():
    """Real clients on parley-c2s (users u0..u7) and a watcher w subscribed to
    all of them (a protocol-level session on c2s-2). A third sm instance
    joins, then leaves (SIGTERM), then the second is killed: after each
    change every session is held by exactly one instance, messages to and
    from every user arrive, w never sees a false unavailable and no client
    is kicked. At the end c2s-1 dies: w gets every user's unavailable."""
    st = stack.Stack(c2s=2, extra={"sm": "<multi-instance>yes</multi-instance>"})
    sm2 = sm_instance(st, "sm2")
    sm3 = sm_instance(st, "sm3")
    users = ["u%d" % i for i in range(8)]
    try:
        st.router.start()
        st["sm"].start()
        sm2.start()
        st["c2s-1"].start()
        for u in users + ["w"]:
            st.add_user(u, "pw")

        async def go():
            c2 = await FakeC2s.connect(st, "c2s-2")
            w = await login(c2, "w@%s/watch" % st.domain)
            xs = {}
            kicked = []
            for u in users:
                x = await smutil.client(st, u, "r")
                x.add_event_handler("disconnected", lambda ev, u=u: kicked.append(u))
                xs[u] = x
            for u in users:  # w subscribes to every user, who approves
                bare = "%s@%s" % (u, st.domain)
                w.send("<presence to='%s' type='subscribe'/>" % bare)
                await smutil.wait_for(xs[u].presences, lambda p: p["type"] == "subscribe",
                                      "subscribe at " + u)
                xs[u].send_presence(pto=w.bare, ptype="subscribed")
                await w.recv(is_presence("%s/r" % bare, None), what="presence of " + u)
            insts = [st["sm"], sm2]
            assert all(c > 0 for c in await held_by(insts, 9, "two instances")), \
                "users all on one instance"

            async def all_talk(tag):
                for u in users:
                    bare = "%s@%s" % (u, st.domain)
                    body = "%s to %s" % (tag, u)
                    w.send("<message to='%s' type='chat'><body>%s</body></message>" % (bare, body))
                    await smutil.wait_for(xs[u].inbox, lambda m: m["body"] == body,
                                          "message to %s %s" % (u, tag))
                    xs[u].send_message(mto=w.bare, mbody="%s from %s" % (tag, u), mtype="chat")
                    await w.recv(is_message("%s from %s" % (tag, u)), what="from %s %s" % (u, tag))
                false = [el for el in c2.pending if len(el) and el[0].tag == q("presence")
                         and el[0].get("type") == "unavailable"]
                assert not false, "false unavailable at w: %s" % false
                assert not kicked, "clients disconnected: %s" % kicked

            await all_talk("before")
            # A third instance joins: the two others and it ask for a re-announce.
            before = {d.name: rounds(d) for d in insts}
            sm3.start()
            insts.append(sm3)
            # Sent while the sessions move: a stanza that reaches the new
            # owner before its session's start waits for it (no kick).
            for u in users:
                xs[u].send_message(mto=w.bare, mbody="moving from " + u, mtype="chat")
            for _ in range(3):
                await c2.reannounce([w])
            await rounds_done(insts, before, 1, "the join")
            for u in users:
                await w.recv(is_message("moving from " + u), what="message of %s in the move" % u)
            counts = await held_by(insts, 9, "after the join")
            assert counts[2] > 0, "no session moved to the new instance: %s" % counts
            await all_talk("joined")
            # It leaves (SIGTERM): the two others take its users back.
            before = {d.name: rounds(d) for d in insts}
            assert sm3.stop() == 0
            insts.pop()
            for _ in range(2):
                await c2.reannounce([w])
            await rounds_done(insts, before, 1, "the leave")
            await held_by(insts, 9, "after the leave")
            await all_talk("left")
            # The second is killed: the first takes everyone.
            before = {d.name: rounds(d) for d in insts}
            sm2.kill()
            insts.pop()
            await c2.reannounce([w])
            await rounds_done(insts, before, 1, "the kill")
            await held_by(insts, 9, "after the kill")
            await all_talk("killed")
            # c2s-1 goes: w gets each user's unavailable, and only w's
            # session remains.
            st.kill("c2s-1")
            for u in users:
                await w.recv(is_presence("%s@%s/r" % (u, st.domain), "unavailable"),
                             what="unavailable of " + u)
            await held_by(insts, 1, "after c2s-1 died")
            c2.close()
        harness.run(go())
        codes = st.stop()
        assert codes["sm"] == 0 and codes["router"] == 0, codes
        errs = st.sanitizer_errors() + sm2.sanitizer_errors() + sm3.sanitizer_errors()
        assert not errs, errs[:5]
    finally:
        for d in (sm2, sm3):
            if d.running():
                d.kill()
        print(st.logs()[-60000:])
        for d in (sm2, sm3):
            print(d.log()[-30000:])
        st.stop()
        st.cleanup()


@contextlib.contextmanager
def moving_stack(users, add=None, router_name="sm"):
    """Two instances of a multi-instance sm with the users (add(st, u) also
    run for each), and a third, sm3, for the test to start; at the end the
    two extra instances must stop cleanly with no sanitizer output. The
    instances name themselves router_name in their handshake (the router
    preps it: 'SM' is the component sm)."""
    st = SmStack(extra={"sm": "<multi-instance>yes</multi-instance>"})
    sm2 = sm_instance(st, "sm2")
    sm3 = sm_instance(st, "sm3")
    for d in (st["sm"], sm2, sm3):
        with open(d.config) as f:
            text = f.read()
        with open(d.config, "w") as f:
            f.write(text.replace("<router name='sm' ", "<router name='%s' " % router_name))
    try:
        st.start()
        sm2.start()
        for u in users:
            st.add_user(u, "pw")
            if add is not None:
                add(st, u)
        yield st, sm2, sm3
        for d in (sm2, sm3):
            assert d.proc is None or d.stop() == 0  # sm3 is the test's to start
            assert not d.sanitizer_errors(), d.sanitizer_errors()[:5]
    finally:
        for d in (sm2, sm3):
            if d.running():
                d.kill()
            print(d.log()[-30000:])  # captured: shown with a failing test's report
        st.finish()


@contextlib.contextmanager
def one_instance(limits="", users=("alice", "bob")):
    """A multi-instance sm running alone, with <limits> given as limits
    (markup) and the users (password pw); finished at the end."""
    st = SmStack(extra={"sm": "<multi-instance>yes</multi-instance>" + limits})
    try:
        st.start()
        for u in users:
            st.add_user(u, "pw")
        yield st
    finally:
        st.finish()


async def announced_c2s(st):
    """A FakeC2s past the (one) instance's announce when it came up."""
    c = await FakeC2s.connect(st)
    await c.reannounce([])
    return c


async def logged_in(st, users):
    """A FakeC2s past both instances' first announces, and a session per
    user (same order)."""
    c = await FakeC2s.connect(st)
    for _ in range(2):  # each instance's announce when c2s-1 came up
        await c.reannounce([])
    return c, [await login(c, "%s@%s/%s" % (u, st.domain, "watch" if u == "w" else "r"))
               for u in users]


def test_stanza_before_its_moved_start_waits():
    """A third instance joins; before the c2s re-announces, each user sends a
    message (keyed: it reaches the instance the new ring names, which does
    not know the session yet). It waits for the session's start instead of
    getting the session kicked: every message arrives, no kick is sent, and
    every session is held by exactly one instance. A message to each user
    sent then arrives too (at its session, or, if it reaches the new
    instance before the session's start, from the offline store when the
    session's presence is replayed there: this test does not force that
    order)."""
    users = ["u%d" % i for i in range(8)]
    with moving_stack(users + ["w"]) as (st, sm2, sm3):

        async def go():
            c, ss = await logged_in(st, ["w"] + users)
            w, ss = ss[0], ss[1:]
            insts = [st["sm"], sm2]
            await held_by(insts, 9, "two instances")
            sm3.start()
            insts.append(sm3)
            for s in ss:
                s.send("<message to='%s' type='chat'><body>from %s</body></message>"
                       % (w.bare, s.bare))
                # To each user while its session may be moving.
                w.send("<message to='%s' type='chat'><body>to %s</body></message>"
                       % (s.bare, s.bare))
            for _ in range(3):
                await c.reannounce([w] + ss)
            for s in ss:
                await w.recv(is_message("from " + s.bare), what="message of " + s.bare)
                await s.recv(is_message("to " + s.bare), what="message to " + s.bare)
            kicks = [el for el in c.pending if len(el) and el[0].tag == q("kick", smutil.NS_SESSION)]
            assert not kicks, "sessions kicked: %s" % [k[0].attrib for k in kicks]
            counts = await held_by(insts, 9, "after the join")
            assert counts[2] > 0, "no session moved to the new instance: %s" % counts
            c.close()
        harness.run(go())


def test_presence_sent_while_moving_is_broadcast():
    """A third instance joins; before the c2s re-announces, each user sends a
    new presence (keyed: a moved user's reaches the new instance before its
    session's start, and waits there). It is the client's live presence, not
    a replay: a remote contact subscribed to every user (it does not probe:
    it sees only what is broadcast, on the s2s route) gets it from each."""
    users = ["u%d" % i for i in range(8)]
    remote = "rem@remote.test"
    live = "<presence><status>live</status></presence>"
    R = "{%s}" % harness.NS_ROUTER

    def live_to_remote(el):
        s = el.find(q("status"))
        return (el.tag == q("presence") and el.get("to") == remote and el.get("type") is None
                and s is not None and s.text == "live")

    def remote_contact(st, u):
        st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES "
                   "('%s@%s', '%s', 'from')" % (u, st.domain, remote))

    with moving_stack(users, remote_contact) as (st, sm2, sm3):

        async def go():
            s2s = await st.router.raw_component("s2s")
            s2s.send("<r:bind xmlns:r='%s' default='true'/>" % harness.NS_ROUTER)
            await s2s.expect(lambda el: el.tag == R + "bind" and el.get("error") is None,
                             what="default route bound")
            c, ss = await logged_in(st, users)
            insts = [st["sm"], sm2]
            await held_by(insts, 8, "two instances")
            sm3.start()
            insts.append(sm3)
            for s in ss:
                s.send(live)
            for _ in range(3):
                await c.reannounce(ss, presence=live)
            got = set()
            while len(got) < len(ss):
                el = await s2s.expect(live_to_remote,
                                      what="live presences at the remote contact, got %s" % got)
                got.add(el.get("from"))
            counts = await held_by(insts, 8, "after the join")
            assert counts[2] > 0, "no session moved to the new instance: %s" % counts
            c.close()
            s2s.close()
        harness.run(go())


def test_client_leaving_while_moving_is_ended_with_a_broadcast():
    """A third instance joins; before the c2s re-announces, every user's
    client leaves (the c2s's end, with no key, reaches every instance, also
    the one that still holds the session while the new ring names another)
    and is not re-announced: the watcher, subscribed to every user, gets an
    unavailable from each; no instance keeps a session of theirs."""
    users = ["u%d" % i for i in range(8)]
    with moving_stack(users + ["w"]) as (st, sm2, sm3):

        async def go():
            c, ss = await logged_in(st, ["w"] + users)
            w, ss = ss[0], ss[1:]
            for s in ss:
                w.send("<presence to='%s' type='subscribe'/>" % s.bare)
                await s.recv(is_presence(w.bare, "subscribe"), what="request of w")
                s.send("<presence to='%s' type='subscribed'/>" % w.bare)
                await w.recv(is_presence(s.jid, None), what="presence of " + s.bare)
            insts = [st["sm"], sm2]
            await held_by(insts, 9, "two instances")
            sm3.start()
            insts.append(sm3)
            for s in ss:
                s.end()
            for _ in range(3):
                await c.reannounce([w])
            for s in ss:
                await w.recv(is_presence(s.jid, "unavailable"), what="unavailable of " + s.bare)
            await held_by(insts, 1, "after the join")
            c.close()
        harness.run(go())


# ---- the c2s's side of a re-announce round ----

def test_resume_start_refused_closes_the_client():
    """While the sm is away alice's account is deleted; the restarted sm
    answers the c2s's resume start of her session failed (not-authorized):
    parley-c2s closes her stream with that error (no session is left that no
    sm holds) and finishes the round; bob's session is resumed."""
    s = stack.Stack(c2s=1)
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")

        def wait_log(d, text, count=1):
            deadline = time.monotonic() + harness.START_WAIT
            while d.log().count(text) < count:
                assert time.monotonic() < deadline, "no %r in %s's log" % (text, d.name)
                time.sleep(0.05)

        async def go():
            a = await ClientRaw.connect_client(s)
            b = await ClientRaw.connect_client(s)
            try:
                await a.login_plain("alice", "wonderland", resource="a")
                await b.login_plain("bob", "builder", resource="b")
                loop = asyncio.get_running_loop()
                rounds = s["sm"].log().count("c2s-1 re-announced its sessions")
                s["sm"].stop()
                await loop.run_in_executor(None, wait_log, s["c2s-1"], "sm sm is down")
                s.del_user("alice")
                s["sm"].start()
                assert await a.stream_error() == "not-authorized"
                await loop.run_in_executor(None, wait_log, s["sm"],
                                           "c2s-1 re-announced its sessions", rounds + 1)
                log = s["sm"].log()
                assert "(resumed)" in log and "bob@%s/b" % s.domain in log
                b.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
                el = await b.recv(harness.WAIT)
                assert el is not None and el.get("id") == "p1" and el.get("type") == "result", el
            finally:
                a.close()
                b.close()
        harness.run(go())
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def test_delivery_to_a_moving_user_waits_for_its_session():
    """A third instance joins; before the c2s re-announces, a remote contact
    (on the s2s route) sends each user a headline to the bare JID, an iq and
    a directed presence to the full JID. For a user the new ring moved, they
    reach the new instance before the session's start: they wait there for
    it (instead of being dropped, or the iq answered service-unavailable)
    and arrive, in order, once the session is back; the sender gets no
    error."""
    users = ["u%d" % i for i in range(8)]
    remote = "rem@remote.test/x"
    R = "{%s}" % harness.NS_ROUTER
    with moving_stack(users) as (st, sm2, sm3):

        async def go():
            s2s = await st.router.raw_component("s2s")
            s2s.send("<r:bind xmlns:r='%s' default='true'/>" % harness.NS_ROUTER)
            await s2s.expect(lambda el: el.tag == R + "bind" and el.get("error") is None,
                             what="default route bound")
            c, ss = await logged_in(st, users)
            insts = [st["sm"], sm2]
            await held_by(insts, 8, "two instances")
            sm3.start()
            insts.append(sm3)
            for s in ss:
                s2s.send("<message xmlns='jabber:component:accept' from='%s' to='%s' "
                         "type='headline'><body>news for %s</body></message>"
                         % (remote, s.bare, s.bare))
                s2s.send("<iq xmlns='jabber:component:accept' from='%s' to='%s' type='get' "
                         "id='v-%s'><query xmlns='jabber:iq:version'/></iq>"
                         % (remote, s.jid, s.bare))
                s2s.send("<presence xmlns='jabber:component:accept' from='%s' to='%s'>"
                         "<status>hi %s</status></presence>" % (remote, s.jid, s.bare))

            def arrived(s):
                return any(el.tag == smutil.ROUTE and el.get("sid") == s.sid and len(el) and
                           el[0].tag == q("message") for el in c.pending)

            # Each user's headline reached its session (it did not move), or
            # the new instance holds it for the session on its way.
            deadline = asyncio.get_running_loop().time() + harness.WAIT
            while True:
                held = [s for s in ss if "to %s held" % s.bare in sm3.log()]
                await c.pump(0.05)
                if all(s in held or arrived(s) for s in ss):
                    break
                assert asyncio.get_running_loop().time() < deadline, \
                    "deliveries neither arrived nor held: %s" % [
                        s.bare for s in ss if s not in held and not arrived(s)]
            assert held, "no delivery reached the new instance before its session"
            for _ in range(3):
                await c.reannounce(ss)
            for s in ss:
                await s.recv(is_message("news for " + s.bare), what="headline to " + s.bare)
                iq = await s.recv(lambda x: x.tag == q("iq") and x.get("id") == "v-" + s.bare,
                                  what="iq to " + s.jid)
                assert iq.get("type") == "get", iq.attrib
                await s.recv(lambda x: x.tag == q("presence") and x.get("from") == remote and
                             x.findtext(q("status")) == "hi " + s.bare,
                             what="directed presence to " + s.jid)
            counts = await held_by(insts, 8, "after the join")
            assert counts[2] > 0, "no session moved to the new instance: %s" % counts
            errors = []
            while not s2s.queue.empty():
                el = s2s.queue.get_nowait()
                if el is not None and el.get("type") == "error":
                    errors.append(ET.tostring(el)[:300])
            assert not errors, errors
            c.close()
            s2s.close()
        harness.run(go())


def test_announced_of_another_round_does_not_end_the_round():
    """Round ids: the sm restarts and announces (round R); before c2s-1's
    answer, an announced of another round arrives (the answer to another
    instance's announce, or to an earlier one: keyless, every instance gets
    it). It does not end round R: bob's session is back first and probes
    alice, whose start is still to come; she is not answered unavailable
    (the round is not over); her session then resumes, R's announced ends
    the round, and bob never sees her unavailable."""
    with one_instance() as st:

        async def go():
            c = await announced_c2s(st)
            a = await login(c, "alice@%s/a" % st.domain)
            b = await login(c, "bob@%s/b" % st.domain)
            await subscribed(a, b)
            st.restart_sm()
            ann = await c.control("announce", timeout=harness.START_WAIT)
            assert ann.get("round"), "announce without a round id: %s" % ann.attrib
            c.pending.clear()
            c.announced("0123456789abcdef0123456789abcdef")  # another round's
            c.start(b.jid, sid=b.sid, resume=True)
            b.send("<presence/>")
            await c.control("started", b.sid)
            unavailable = is_presence(a.bare, "unavailable")
            await c.nothing_for(b.sid, b.sid, b.jid, unavailable)
            c.start(a.jid, sid=a.sid, resume=True)
            a.send("<presence/>")
            await c.control("started", a.sid)
            c.announced(ann.get("round"))
            await b.nothing(unavailable)
            assert "c2s-1 re-announced its sessions" in st["sm"].fresh_log()
            c.close()
        harness.run(go())


def test_c2s_echoes_the_round_id():
    """parley-c2s answers an announce with round='R' (here from a second,
    hand-written instance of the sm) with <announced round='R'/>, keyless:
    the announcing instance gets it; the real sm, whose round it is not,
    does not end a round on it."""
    st = stack.Stack(c2s=1, extra={"sm": "<multi-instance>yes</multi-instance>"})
    R = "{%s}" % harness.NS_ROUTER
    try:
        st.start()
        st.add_user("alice", "pw")

        async def go():
            x = await smutil.client(st, "alice", "r")
            other = await st.router.raw_component("sm")
            other.send("<r:bind xmlns:r='%s' name='%s'/>" % (harness.NS_ROUTER, st.domain))
            await other.expect(lambda el: el.tag == R + "bind" and el.get("error") is None,
                               what="bind of the second instance")
            rid = "fedcba9876543210fedcba9876543210"
            other.send("<r:route xmlns:r='%s' to='c2s-1' from='%s'><announce xmlns='%s' "
                       "round='%s'/></r:route>" % (harness.NS_ROUTER, st.domain,
                                                   smutil.NS_SESSION, rid))
            # Alice's start may land here (the ring): answer it as an sm would.
            while True:
                el = await other.expect(lambda e: e.tag == R + "route" and len(e),
                                        what="the announced of round %s" % rid)
                inner = el[0]
                if inner.tag == q("start", smutil.NS_SESSION):
                    other.send("<r:route xmlns:r='%s' to='c2s-1' from='%s'><started xmlns='%s' "
                               "sid='%s'/></r:route>" % (harness.NS_ROUTER, st.domain,
                                                         smutil.NS_SESSION, inner.get("sid")))
                if inner.tag == q("announced", smutil.NS_SESSION) and inner.get("round") == rid:
                    assert el.get("key") is None, el.attrib
                    break
            other.close()
            deadline = time.monotonic() + harness.WAIT
            while "announced from c2s-1 for another round ignored" not in st["sm"].log():
                assert time.monotonic() < deadline, "the sm took another round's announced"
                await asyncio.sleep(0.05)
            await smutil.logout_all(x)
        harness.run(go())
        problems = st.stop_and_check()
        assert not problems, problems[:5]
    finally:
        st.cleanup()


def test_round_of_a_wedged_c2s_ends_after_the_timeout():
    """<limits><round-timeout>: the sm restarts and announces; c2s-1
    re-announces bob's session but never sends its announced (wedged).
    Bob probes alice (not re-announced): the round does not wait forever:
    after the timeout it ends as if announced (logged), and bob gets
    alice's unavailable."""
    with one_instance("<limits><round-timeout>1</round-timeout></limits>") as st:

        async def go():
            c = await announced_c2s(st)
            a = await login(c, "alice@%s/a" % st.domain)
            b = await login(c, "bob@%s/b" % st.domain)
            await subscribed(a, b)
            st.restart_sm()
            await c.control("announce", timeout=harness.START_WAIT)
            c.pending.clear()
            c.start(b.jid, sid=b.sid, resume=True)
            b.send("<presence/>")
            await c.control("started", b.sid)
            await b.recv(is_presence(a.bare, "unavailable"), timeout=harness.START_WAIT,
                         what="alice's unavailable at the round's timeout")
            assert "did not re-announce its sessions of %s within 1 s: round ended" % st.domain \
                in st["sm"].fresh_log()
            # Bob's session is still there.
            r = await b.iq("<iq type='get' id='p1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                           % st.domain, "p1")
            assert r.get("type") == "result", r.attrib
            c.close()
        harness.run(go())


# ---- what the clients see of a ring change ----

def started_count(insts, sid):
    """How many times the instances created session sid (a move creates it
    again on the instance the new ring names; a repeated start does not)."""
    return sum(d.log().count("session %s started" % sid) for d in insts)


async def round_trip(a, b, tag):
    """a asks b (full JID) an iq and gets b's answer: everything b's instance
    sent a's user before it handled the iq (e.g. the answer to a probe, on b's
    queue before the iq) has reached a's session before the result."""
    iq_id = "rt-%s-%s" % (tag, a.sid[:6])
    a.send("<iq type='get' id='%s' to='%s'><query xmlns='jabber:iq:version'/></iq>" % (iq_id, b.jid))
    await b.recv(lambda s: s.get("id") == iq_id, what="iq of %s at %s" % (a.bare, b.bare))
    b.send("<iq type='result' id='%s' to='%s'/>" % (iq_id, a.jid))
    await a.recv(lambda s: s.get("id") == iq_id and s.get("type") == "result",
                 what="answer of %s to %s" % (b.bare, a.bare))


def test_ring_change_kept_session_gets_no_duplicate_presence():
    """Every user has w as a contact (subscription both ways). A third
    instance joins, then leaves: each time every instance asks c2s-1 to
    re-announce (three rounds, then two), and each round replays every
    session's presence. A session that stayed where it was gets no
    presence from w at all (nothing was lost: no re-probe, the replays are
    not news); a session that moved is an initial presence on its new
    instance: it gets w's presence (the probe's answer), once."""
    users = ["u%d" % i for i in range(8)]

    def contact_w(st, u):
        if u == "w":
            return
        for owner, jid in ((u, "w"), ("w", u)):
            st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES "
                       "('%s@%s', '%s@%s', 'both')" % (owner, st.domain, jid, st.domain))

    with moving_stack(["w"] + users, contact_w) as (st, sm2, sm3):

        async def go():
            c, ss = await logged_in(st, ["w"] + users)
            w, ss = ss[0], ss[1:]
            insts = [st["sm"], sm2]
            await held_by(insts, 9, "two instances")
            for s in ss:
                await s.recv(is_presence(w.jid, None), what="w's presence at login of " + s.bare)
                await round_trip(s, w, "login")
            c.pending.clear()

            async def change(n, what):
                """The ring changed: n rounds; then (moved, kept) sessions
                and the presences from w each got in the rounds."""
                before = {d.name: rounds(d) for d in insts}
                created = {s.sid: started_count([st["sm"], sm2, sm3], s.sid) for s in ss}
                for _ in range(n):
                    await c.reannounce([w] + ss)
                await rounds_done(insts, before, 1, what)
                await held_by(insts, 9, what)
                for s in ss:
                    await round_trip(s, w, what)
                got = {s.sid: sum(1 for el in c.pending if el.get("sid") == s.sid and len(el) == 1
                                  and is_presence(w.jid, None)(el[0])) for s in ss}
                c.pending.clear()
                moved = [s for s in ss if started_count([st["sm"], sm2, sm3], s.sid) > created[s.sid]]
                kept = [s for s in ss if s not in moved]
                assert moved and kept, "%s: moved %s, kept %s" % (
                    what, [s.bare for s in moved], [s.bare for s in kept])
                dup = {s.bare: got[s.sid] for s in kept if got[s.sid]}
                assert not dup, "%s: w's presence again at sessions that did not move: %s" % (
                    what, dup)
                once = {s.bare: got[s.sid] for s in moved if got[s.sid] != 1}
                assert not once, "%s: w's presence at moved sessions, want once: %s" % (what, once)

            sm3.start()
            insts.append(sm3)
            await change(3, "the join")
            assert sm3.stop() == 0
            insts.pop()
            await change(2, "the leave")
            c.close()
        harness.run(go())



# ---- what clears the kept mark (SESSION.md): each replay re-probes once ----

def contact_w(st, u):
    """u and w have each other as contacts (subscription both)."""
    if u == "w":
        return
    for owner, jid in ((u, "w"), ("w", u)):
        st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES "
                   "('%s@%s', '%s@%s', 'both')" % (owner, st.domain, jid, st.domain))


async def w_presences(c, ss, w, what):
    """How many presences from w each session got since c.pending was last
    cleared (round_trip first: the answers to its probes have arrived)."""
    for s in ss:
        await round_trip(s, w, what)
    got = {s.bare: sum(1 for el in c.pending if el.get("sid") == s.sid and len(el) == 1
                       and is_presence(w.jid, None)(el[0])) for s in ss}
    c.pending.clear()
    return got


async def logged_in_with_w(st, users):
    """A FakeC2s with w's session and one per user, each user having had
    w's presence at login; c.pending cleared."""
    c, ss = await logged_in(st, ["w"] + users)
    w, ss = ss[0], ss[1:]
    for s in ss:
        await s.recv(is_presence(w.jid, None), what="w's presence at login of " + s.bare)
        await round_trip(s, w, "login")
    c.pending.clear()
    return c, w, ss


def test_router_loss_reprobes_each_session_once():
    """Two instances lose the router (it is killed and comes back; the second
    instance is held stopped until the first is ready again, so that each
    gets its old slot and no session moves). Stanzas to the sessions may
    have been lost with it: in the rounds that follow (one per instance) each
    session's replay re-probes, once: every user gets w's presence again,
    exactly once (not once per round)."""
    users = ["u%d" % i for i in range(8)]
    with moving_stack(["w"] + users, contact_w) as (st, sm2, sm3):

        async def go():
            c, w, ss = await logged_in_with_w(st, users)
            insts = [st["sm"], sm2]
            await held_by(insts, 9, "two instances")
            before = {d.name: rounds(d) for d in insts}
            ready = [d.log().count("sm ready") for d in insts]
            sm2.signal(signal.SIGSTOP)
            try:
                st.router.kill()  # no down notification: both keep their sessions
                c.close()
                st.router.start()
                await logged(st["sm"], "sm ready", ready[0] + 1, harness.START_WAIT)
            finally:
                sm2.signal(signal.SIGCONT)
            await logged(sm2, "sm ready", ready[1] + 1, harness.START_WAIT)
            c2 = await FakeC2s.connect(st)
            for s in [w] + ss:
                s.c2s = c2
            for _ in range(2):  # each instance's announce when c2s-1 came up
                await c2.reannounce([w] + ss)
            await rounds_done(insts, before, 1, "after the router loss")
            await held_by(insts, 9, "after the router loss")
            got = await w_presences(c2, ss, w, "router loss")
            assert all(n == 1 for n in got.values()), \
                "w's presence after the router loss, want once each: %s" % got
            c2.close()
        harness.run(go())


def test_changed_start_reprobes_only_its_session():
    """With two instances the c2s starts its sessions again (resume) on its
    own, u0's and u1's with changed='true' (a forward of theirs came back
    undeliverable: so may have stanzas to them). Their replays re-probe: they
    get w's presence again, once; the other sessions lost nothing and get
    none (their replays are not news, and they are kept)."""
    users = ["u%d" % i for i in range(6)]
    with moving_stack(["w"] + users, contact_w) as (st, sm2, sm3):

        async def go():
            c, w, ss = await logged_in_with_w(st, users)
            insts = [st["sm"], sm2]
            await held_by(insts, 7, "two instances")
            changed = ss[:2]
            for again in (False, True):  # the second time with no changed: kept again
                for s in ss:
                    c.start(s.jid, sid=s.sid, resume=True, changed=s in changed and not again)
                    s.send("<presence/>")
                c.announced(secrets.token_hex(16))  # a round of its own
                for s in ss:
                    await c.control("started", s.sid)
            got = await w_presences(c, ss, w, "changed")
            want = {s.bare: 1 if s in changed else 0 for s in ss}
            assert got == want, "w's presence after the starts: %s, want %s" % (got, want)
            c.close()
        harness.run(go())


def test_user_moved_and_back_is_reprobed_once():
    """A third instance joins and, before c2s-1 answers any announce, leaves
    again: each session is unconfirmed at the second change, its user's
    stanzas having gone to the third instance meanwhile. There, a remote
    contact's new presence to a moved user waited for a session that never
    came and is gone with the instance. The replays that follow (five rounds)
    re-probe each session once: a moved user gets the contact's new presence
    (once), and every user's instance probes the contact once, not once per
    round."""
    users = ["u%d" % i for i in range(8)]
    rem = "rem@remote.test"
    R = "{%s}" % harness.NS_ROUTER

    def remote_both(st, u):
        st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES "
                   "('%s@%s', '%s', 'both')" % (u, st.domain, rem))

    with moving_stack(users, remote_both) as (st, sm2, sm3):

        async def go():
            s2s = await st.router.raw_component("s2s")
            s2s.send("<r:bind xmlns:r='%s' default='true'/>" % harness.NS_ROUTER)
            await s2s.expect(lambda el: el.tag == R + "bind" and el.get("error") is None,
                             what="default route bound")
            status = ["here"]
            probes = {}
            marks = set()

            async def remote():
                """The remote contact: answers each probe with its presence now."""
                while True:
                    el = await s2s.queue.get()
                    if el is None:
                        return
                    if el.tag == q("presence", "jabber:component:accept") and \
                            el.get("type") == "probe":
                        probes[el.get("from")] = probes.get(el.get("from"), 0) + 1
                        s2s.send("<presence xmlns='jabber:component:accept' from='%s/x' to='%s'>"
                                 "<status>%s</status></presence>"
                                 % (rem, el.get("from"), status[0]))
                    elif el.tag == q("message", "jabber:component:accept"):
                        marks.add(el.findtext(q("body", "jabber:component:accept")))
            task = asyncio.ensure_future(remote())

            def from_rem(s, text):
                return [el for el in c.pending if el.get("sid") == s.sid and len(el) == 1
                        and el[0].tag == q("presence") and el[0].get("from") == rem + "/x"
                        and el[0].findtext(q("status")) == text]

            c, ss = await logged_in(st, users)
            for s in ss:
                await s.recv(lambda x: x.tag == q("presence") and x.get("from") == rem + "/x",
                             what="the contact's presence at login of " + s.bare)
            insts = [st["sm"], sm2]
            await held_by(insts, 8, "two instances")
            before = {d.name: rounds(d) for d in insts}
            sm3.start()
            announces = [await c.control("announce") for _ in range(3)]
            status[0] = "away"
            for s in ss:
                s2s.send("<presence xmlns='jabber:component:accept' from='%s/x' to='%s'>"
                         "<status>away</status></presence>" % (rem, s.bare))
            # Each reached its session (its user did not move) or waits at sm3.
            deadline = asyncio.get_running_loop().time() + harness.WAIT
            while True:
                moved = [s for s in ss if "to %s held" % s.bare in sm3.log()]
                await c.pump(0.05)
                if all(s in moved or from_rem(s, "away") for s in ss):
                    break
                assert asyncio.get_running_loop().time() < deadline, "presences neither " \
                    "arrived nor held: %s" % [s.bare for s in ss if s not in moved]
            assert moved, "no user moved to the new instance"
            assert not any(from_rem(s, "away") for s in moved)
            probed = dict(probes)
            assert sm3.stop() == 0
            announces += [await c.control("announce") for _ in range(2)]
            for a in announces:
                for s in ss:
                    c.start(s.jid, sid=s.sid, resume=True)
                    s.send("<presence/>")
                c.announced(a.get("round"))
            await rounds_done(insts, before, 1, "the join and leave")
            await held_by(insts, 8, "after the leave")
            # What each instance sent the contact before has reached it.
            for s in ss:
                s.send("<message to='%s'><body>mark %s</body></message>" % (rem, s.bare))
            deadline = asyncio.get_running_loop().time() + harness.WAIT
            while len(marks) < len(ss):
                assert asyncio.get_running_loop().time() < deadline, "marks %s" % marks
                await asyncio.sleep(0.02)
            again = {s.bare: probes.get(s.bare, 0) - probed.get(s.bare, 0) for s in ss}
            assert all(n == 1 for n in again.values()), \
                "probes of the contact after the rounds, want one per user: %s" % again
            for s in ss:
                s2s.send("<message xmlns='jabber:component:accept' from='%s/x' to='%s'>"
                         "<body>done</body></message>" % (rem, s.jid))
                await s.recv(is_message("done"), what="marker to " + s.bare)
            got = {s.bare: len(from_rem(s, "away")) for s in moved}
            assert all(n == 1 for n in got.values()), \
                "the contact's new presence at moved users, want once: %s" % got
            c.close()
            task.cancel()
            s2s.close()
        harness.run(go())


# ---- the cache across ring changes ----

def loads(d, bare):
    """How many times instance d read bare's account from storage."""
    return d.log().count("loading %s\n" % bare)


async def until(cond, what):
    """Wait (bounded) until cond() is true."""
    deadline = asyncio.get_running_loop().time() + harness.WAIT
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("router_name", ["sm", "SM"])
def test_ring_change_keeps_the_cached_users_it_does_not_move(router_name):
    """Twelve users with no session are cached (idle) on the two instances
    after w sends each an offline message. A third instance joins: a user it
    does not take is still cached where it was (the next message to it reads
    nothing from storage), one it takes is read by the new instance. There
    w asks a moved user x for a subscription. The third instance leaves: x
    goes back to its old instance, which forgot it when it moved (another
    instance may change it meanwhile): x logs in and gets w's request.
    With the instances named 'SM', the router's ring is the prepped name's,
    and so must the instances' be to know which users moved."""
    users = ["u%d" % i for i in range(12)]
    with moving_stack(["w"] + users, router_name=router_name) as (st, sm2, sm3):

        async def go():
            c, (w,) = await logged_in(st, ["w"])
            bares = ["%s@%s" % (u, st.domain) for u in users]

            async def message_all(tag):
                for b in bares:
                    w.send("<message to='%s' type='chat'><body>%s</body></message>" % (b, tag))
                await until(lambda: all(tag in offline_bodies(st, b) for b in bares),
                            "offline messages " + tag)

            await message_all("one")
            insts = [st["sm"], sm2]
            before = {d.name: rounds(d) for d in insts}
            sm3.start()
            insts.append(sm3)
            for _ in range(3):
                await c.reannounce([w])
            await rounds_done(insts, before, 1, "the join")
            read = {b: sum(loads(d, b) for d in insts) for b in bares}
            await message_all("two")
            again = [b for b in bares if sum(loads(d, b) for d in insts) > read[b]]
            moved = [b for b in bares if loads(sm3, b) > 0]
            assert moved, "no user moved to the new instance"
            assert again == moved, "users read again: %s; moved: %s" % (again, moved)
            assert len(moved) < len(bares), "every user moved"
            x = moved[0]
            w.send("<presence to='%s' type='subscribe'/>" % x)
            await until(lambda: st.pg.psql("SELECT count(*) FROM subscription_requests "
                                           "WHERE owner = '%s'" % x)[1].strip() == "1",
                        "w's request to %s stored" % x)
            before = {d.name: rounds(d) for d in insts[:2]}
            assert sm3.stop() == 0
            insts.pop()
            for _ in range(2):
                await c.reannounce([w])
            await rounds_done(insts, before, 1, "the leave")
            xs = await login(c, x + "/r")
            await xs.recv(is_presence(w.bare, "subscribe"), what="w's request at x's login")
            c.close()
        harness.run(go())


def test_router_loss_forgets_the_cached_users():
    """Twelve users with no session are cached (idle) on the two instances.
    The router is lost and the first instance stays away (stopped) while the
    second comes back alone and takes every user: x, once cached on the
    first, gets w's subscription request there. The second instance goes;
    the first comes back alone (no notify tells an instance of its own
    leaving or return, nor of what happened meanwhile): it forgot its cached
    users at the loss, so x logs in and gets w's request."""
    users = ["u%d" % i for i in range(12)]
    with moving_stack(["w"] + users) as (st, sm2, sm3):

        async def go():
            c, (w,) = await logged_in(st, ["w"])
            bares = ["%s@%s" % (u, st.domain) for u in users]
            for b in bares:
                w.send("<message to='%s' type='chat'><body>one</body></message>" % b)
            await until(lambda: all("one" in offline_bodies(st, b) for b in bares),
                        "offline messages")
            first = [b for b in bares if loads(st["sm"], b) > 0]
            assert first, "no user cached on the first instance"
            ready = [d.log().count("sm ready") for d in (st["sm"], sm2)]
            st["sm"].signal(signal.SIGSTOP)
            try:
                st.router.kill()
                c.close()
                st.router.start()
                await logged(sm2, "sm ready", ready[1] + 1, harness.START_WAIT)
                c = await FakeC2s.connect(st)
                w = await login(c, w.jid)
                await c.reannounce([w])  # the second instance's, when c2s-1 came up
                x = first[0]
                w.send("<presence to='%s' type='subscribe'/>" % x)
                await until(lambda: st.pg.psql("SELECT count(*) FROM subscription_requests "
                                               "WHERE owner = '%s'" % x)[1].strip() == "1",
                            "w's request to %s stored" % x)
                assert loads(sm2, x) > 0, "%s not read by the second instance" % x
                assert sm2.stop() == 0
            finally:
                st["sm"].signal(signal.SIGCONT)
            await logged(st["sm"], "sm ready", ready[0] + 1, harness.START_WAIT)
            await c.reannounce([w])  # the first instance's, when it came back
            xs = await login(c, x + "/r")
            await xs.recv(is_presence(w.bare, "subscribe"), what="w's request at x's login")
            c.close()
        harness.run(go())


def test_prober_of_a_moving_contact_gets_its_replay_once():
    """A third instance joins; before c2s-1 answers any announce, w logs in:
    its initial presence probes each user, and a moved user's probe reaches
    the new instance before the user's session does (it waits there for the
    replay). Three rounds replay every session's presence: w gets each
    user's presence once, not once per round."""
    users = ["u%d" % i for i in range(8)]
    with moving_stack(["w"] + users, contact_w) as (st, sm2, sm3):

        async def go():
            c, ss = await logged_in(st, users)
            insts = [st["sm"], sm2]
            await held_by(insts, 8, "two instances")
            before = {d.name: rounds(d) for d in insts}
            sm3.start()
            insts.append(sm3)
            announces = [await c.control("announce") for _ in range(3)]
            w = await login(c, "w@%s/watch" % st.domain)
            # w's probes reach the new instance before the starts: it has a
            # user (loading, the probe on its queue) per moved user.
            seen = []
            deadline = asyncio.get_running_loop().time() + harness.WAIT
            while len(seen) < 3 or seen[-1] == 0 or seen[-1] != seen[-3]:
                assert asyncio.get_running_loop().time() < deadline, "users at sm3: %s" % seen
                seen.append(await users_in(sm3))
            for a in announces:
                for s in [w] + ss:
                    c.start(s.jid, sid=s.sid, resume=True)
                    s.send("<presence/>")
                c.announced(a.get("round"))
            await rounds_done(insts, before, 1, "the join")
            await held_by(insts, 9, "after the join")
            for s in ss:
                await round_trip(w, s, "after the join")
            got = {s.bare: sum(1 for el in c.pending if el.get("sid") == w.sid and len(el) == 1
                               and is_presence(s.jid, None)(el[0])) for s in ss}
            assert all(n == 1 for n in got.values()), \
                "each user's presence at w, want once: %s" % got
            assert [s for s in ss if "started for %s" % s.jid in sm3.log()], \
                "no user moved to the new instance"
            c.close()
        harness.run(go())


def test_messages_to_a_user_loading_on_a_new_instance_wait_for_its_session():
    """A third instance joins. While its storage is busy (the users table
    locked), a remote contact sends every user chat messages (bare JID):
    for a moved user they reach the new instance, which starts loading the
    user, and the c2s re-announces meanwhile, so the round is over (its
    announced came) before the user is loaded and its start handled. The
    messages still wait for the session the start creates: every message
    arrives at the live session, none from the offline store (no delay
    stamp), and the sender gets no error."""
    users = ["u%d" % i for i in range(8)]
    remote = "rem@remote.test/x"
    R = "{%s}" % harness.NS_ROUTER
    with moving_stack(users) as (st, sm2, sm3):
        lock = smutil.TableLock(st, "users")

        async def go():
            s2s = await st.router.raw_component("s2s")
            s2s.send("<r:bind xmlns:r='%s' default='true'/>" % harness.NS_ROUTER)
            await s2s.expect(lambda el: el.tag == R + "bind" and el.get("error") is None,
                             what="default route bound")
            c, ss = await logged_in(st, users)
            insts = [st["sm"], sm2]
            await held_by(insts, 8, "two instances")
            before = {d.name: rounds(d) for d in insts}
            sm3.start()
            insts.append(sm3)
            await lock.take()
            for i in range(3):
                for s in ss:
                    s2s.send("<message xmlns='jabber:component:accept' from='%s' to='%s' "
                             "type='chat'><body>m%d</body></message>" % (remote, s.bare, i))
            # The messages reach the new instance before the starts: it
            # has a user (loading) per moved user, and no more come.
            seen = []
            deadline = asyncio.get_running_loop().time() + harness.WAIT
            while len(seen) < 3 or seen[-1] == 0 or seen[-1] != seen[-3]:
                assert asyncio.get_running_loop().time() < deadline, "users at sm3: %s" % seen
                seen.append(await users_in(sm3))
            for _ in range(3):
                await c.reannounce(ss)
            await rounds_done(insts, before, 1, "the join")
            lock.release()
            counts = await held_by(insts, 8, "after the join")
            assert counts[2] > 0, "no session moved to the new instance: %s" % counts
            for s in ss:
                got = []
                while len(got) < 3:
                    m = await s.recv(is_message(), what="message %d to %s" % (len(got), s.bare))
                    assert m.find("{urn:xmpp:delay}delay") is None, \
                        "%s: message from the offline store: %s" % (s.bare, ET.tostring(m)[:300])
                    got.append(m.findtext(q("body")))
                assert got == ["m0", "m1", "m2"], (s.bare, got)
            errors = []
            while not s2s.queue.empty():
                el = s2s.queue.get_nowait()
                if el is not None and el.get("type") == "error":
                    errors.append(ET.tostring(el)[:300])
            assert not errors, errors
            c.close()
            s2s.close()
        try:
            harness.run(go())
        finally:
            lock.close()


async def logged(d, text, count=1, wait=harness.WAIT):
    """Wait (bounded) until d's log has text count times."""
    deadline = time.monotonic() + wait
    while d.log().count(text) < count:
        assert time.monotonic() < deadline, "%r not logged %d times" % (text, count)
        await asyncio.sleep(0.02)


def offline_bodies(st, owner):
    """The bodies of owner's offline messages, in the order stored."""
    _, out = st.pg.psql("SELECT stanza FROM offline WHERE owner = '%s' ORDER BY seq" % owner)
    return re.findall(r"<body>([^<]*)</body>", out)


async def round_open_with(c, st, sessions):
    """Restart the sm: it announces to c2s-1 (a round opens); the sessions
    start again, the round stays open (no announced yet). Its round id."""
    st.restart_sm()
    ann = await c.control("announce", timeout=harness.START_WAIT)
    c.pending.clear()
    for s in sessions:
        c.start(s.jid, sid=s.sid, resume=True)
        await c.control("started", s.sid)
    return ann.get("round")


def test_held_delivery_is_stored_when_the_sm_stops():
    """A chat message to bob (offline) while a round is open is held (his
    session may be on its way); c2s-1 never answers the announce. The sm is
    stopped (SIGTERM) meanwhile: it ends the round first, so the message is
    stored offline (bob gets it at his next login), not dropped at exit."""
    with one_instance() as st:

        async def go():
            c = await announced_c2s(st)
            a = await login(c, "alice@%s/a" % st.domain)
            await round_open_with(c, st, [a])
            a.send("<message to='bob@%s' type='chat'><body>while moving</body></message>"
                   % st.domain)
            await logged(st["sm"], "to bob@%s held" % st.domain)
            assert offline_bodies(st, "bob@" + st.domain) == []
            st.restart_sm()
            assert offline_bodies(st, "bob@" + st.domain) == ["while moving"]
            c.close()
        harness.run(go())


def test_held_deliveries_keep_their_order_past_the_budget():
    """<limits><user-held>4</user-held>: during a round, alice (offline)
    gets ten chat messages from bob. Four are held; the fifth finds the
    budget full: the four are handled (stored offline), then it; and so on.
    Every message is stored, in the order sent, and the budget is logged
    once, not per message."""
    with one_instance("<limits><user-held>4</user-held></limits>") as st:

        async def go():
            c = await announced_c2s(st)
            b = await login(c, "bob@%s/b" % st.domain)
            rid = await round_open_with(c, st, [b])
            for i in range(10):
                b.send("<message to='alice@%s' type='chat'><body>m%d</body></message>"
                       % (st.domain, i))
            await logged(st["sm"], "to alice@%s held" % st.domain, 8)
            c.announced(rid)
            want = ["m%d" % i for i in range(10)]
            deadline = time.monotonic() + harness.WAIT
            while offline_bodies(st, "alice@" + st.domain) != want:
                assert time.monotonic() < deadline, offline_bodies(st, "alice@" + st.domain)
                await asyncio.sleep(0.05)
            assert st["sm"].log().count("stanzas held for alice@") == 1, st["sm"].log()[-3000:]
            c.close()
        harness.run(go())


def test_held_deliveries_do_not_crowd_out_a_moving_session():
    """<limits><user-queue>3</user-queue>: during a round, bob sends three
    messages to alice's session, which is not here yet: they are held.
    Alice's client then sends two pings before her re-announced start: they
    are parked for it (the deliveries do not count against her own
    stanzas), not refused with a kick. Once she starts, her pings are
    answered and bob's messages reach her, in order."""
    with one_instance("<limits><user-queue>3</user-queue></limits>") as st:

        async def go():
            c = await announced_c2s(st)
            a = await login(c, "alice@%s/a" % st.domain)
            b = await login(c, "bob@%s/b" % st.domain)
            rid = await round_open_with(c, st, [b])
            for i in range(3):
                b.send("<message to='%s' type='chat'><body>m%d</body></message>" % (a.jid, i))
            await logged(st["sm"], "to %s held" % a.jid, 3)
            for i in range(2):
                a.send("<iq type='get' id='p%d' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                       % (i, st.domain))
            c.start(a.jid, sid=a.sid, resume=True)
            await c.control("started", a.sid)
            for i in range(2):
                r = await a.recv(lambda x, i=i: x.tag == q("iq") and x.get("id") == "p%d" % i,
                                 what="ping p%d answered" % i)
                assert r.get("type") == "result", r.attrib
            for i in range(3):
                await a.recv(is_message("m%d" % i), what="message m%d" % i)
            c.announced(rid)
            assert "kick" not in [el[0].tag.split("}")[-1] for el in c.pending if len(el)]
            assert "kicked" not in st["sm"].log()
            c.close()
        harness.run(go())


def test_round_timeout_of_a_c2s_with_a_long_name():
    """A round's key is the c2s name and the domain (up to 1023 bytes
    each): a c2s named with 616 characters connects, gets its announce and
    never answers. The round still ends at <limits><round-timeout> (logged)
    and the sm keeps serving: a ping through c2s-1 is answered."""
    st = SmStack(extra={"sm": "<multi-instance>yes</multi-instance>"
                              "<limits><round-timeout>1</round-timeout></limits>"})
    name = "c2s-9." + ".".join(["x" * 60] * 10)
    st.router.components[name] = {"secret": secrets.token_hex(16), "internal": True}
    # Secret files named by the component would be too long a file name.
    names = list(st.router.components)
    st.router.secret_file = lambda n: os.path.join(st.router.dir, "secrets",
                                                   "%d.secret" % names.index(n))
    try:
        st.router.write_config()
        st.start()
        st.add_user("alice", "pw")

        async def go():
            c = await announced_c2s(st)
            a = await login(c, "alice@%s/a" % st.domain)
            long = await FakeC2s.connect(st, name)
            await long.control("announce")
            await logged(st["sm"], "%s did not re-announce its sessions of %s within 1 s"
                         % (name, st.domain))
            r = await a.iq("<iq type='get' id='p1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                           % st.domain, "p1")
            assert r.get("type") == "result", r.attrib
            long.close()
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_held_deliveries_have_a_global_budget():
    """<limits><held>3</held>: during a round, alice and carol (offline)
    get chat messages from bob. Two to alice and one to carol are held;
    the next one to carol finds the global budget full: carol's held
    message is handled (stored offline), then it, in order. At the round's
    end alice's are stored too, in order."""
    with one_instance("<limits><held>3</held></limits>", users=("alice", "bob", "carol")) as st:

        async def go():
            c = await announced_c2s(st)
            b = await login(c, "bob@%s/b" % st.domain)
            rid = await round_open_with(c, st, [b])
            for to, body in (("alice", "a0"), ("alice", "a1"), ("carol", "c0")):
                b.send("<message to='%s@%s' type='chat'><body>%s</body></message>"
                       % (to, st.domain, body))
            await logged(st["sm"], "to carol@%s held" % st.domain)
            await logged(st["sm"], "to alice@%s held" % st.domain, 2)
            b.send("<message to='carol@%s' type='chat'><body>c1</body></message>" % st.domain)
            await logged(st["sm"], "stanzas held for carol@%s" % st.domain)
            deadline = time.monotonic() + harness.WAIT
            while offline_bodies(st, "carol@" + st.domain) != ["c0", "c1"]:
                assert time.monotonic() < deadline, offline_bodies(st, "carol@" + st.domain)
                await asyncio.sleep(0.05)
            assert offline_bodies(st, "alice@" + st.domain) == []
            c.announced(rid)
            while offline_bodies(st, "alice@" + st.domain) != ["a0", "a1"]:
                assert time.monotonic() < deadline, offline_bodies(st, "alice@" + st.domain)
                await asyncio.sleep(0.05)
            c.close()
        harness.run(go())
