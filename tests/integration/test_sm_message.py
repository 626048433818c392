"""test_sm_message.py - RFC 6121 §8 delivery and offline storage in
parley-sm, at the protocol level (the test speaks as c2s-1 over the real
router; real PostgreSQL): full and bare JIDs, the priority policy,
offline storage with XEP-0203 delay stamps delivered once and surviving an
sm restart and a PostgreSQL restart, the quota, errors; iq handling, disco,
ping and version of the server.
"""

import asyncio
import re
import signal
import xml.etree.ElementTree as ET

import pytest

import harness
import stack
from smutil import (FakeC2s, SmStack, error_of, is_message, login, offline_count,
                    offline_reaches, q, real_stack, stale_roster)

DELAY = "{urn:xmpp:delay}delay"


@pytest.fixture
def st():
    s = SmStack(extra={"sm": "<limits><offline>3</offline></limits>"})
    s.start()
    for u in ("alice", "bob"):
        s.add_user(u, "pw")
    yield s
    s.finish()


def msg(to, body, type="chat", mid=None):
    i = "" if mid is None else " id='%s'" % mid
    return "<message to='%s' type='%s'%s><body>%s</body></message>" % (to, type, i, body)


def prio(n):
    return "<presence><priority>%d</priority></presence>" % n


def test_full_bare_and_priority(st):
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b1 = await login(c, "bob@%s/one" % st.domain, prio(1))
        b2 = await login(c, "bob@%s/two" % st.domain, prio(5))
        B = b1.bare
        # Full JID: that session, whatever its priority.
        a.send(msg(b1.jid, "to one"))
        m = await b1.recv(is_message("to one"))
        assert m.get("from") == a.jid
        # Bare JID: the highest priority.
        a.send(msg(B, "bare1"))
        await b2.recv(is_message("bare1"))
        # A tie: the resource that sent presence last.
        b1.send(prio(5))
        a.send(msg(B, "bare2"))
        await b1.recv(is_message("bare2"))
        b2.send(prio(5))
        a.send(msg(B, "bare3"))
        await b2.recv(is_message("bare3"))
        await b1.nothing(is_message("bare3"))
        # Headline: every non-negative resource.
        a.send(msg(B, "news", type="headline"))
        await b1.recv(is_message("news"))
        await b2.recv(is_message("news"))
        # A full JID that is not online: chat goes by the bare rules (§8.5.3.2.1),
        # groupchat bounces.
        a.send(msg(B + "/gone", "lost"))
        await b2.recv(is_message("lost"))
        a.send(msg(B + "/gone", "gc", type="groupchat", mid="gc1"))
        e = await a.recv(lambda s: s.get("id") == "gc1")
        assert error_of(e)[1] == "service-unavailable"
        # ... and so do normal and headline (§8.5.3.2.1: only chat goes by the bare rules).
        for t in ("normal", "headline"):
            a.send(msg(B + "/gone", "not " + t, type=t, mid="x" + t))
            e = await a.recv(lambda s: s.get("id") == "x" + t, what="error for " + t)
            assert e.get("type") == "error" and error_of(e)[1] == "service-unavailable"
        await b1.nothing(is_message("not normal"))
        await b2.nothing(is_message("not normal"))
        # A bare JID with only negative priorities: stored offline (§8.5.2.1.1).
        b1.send(prio(-1))
        b2.send(prio(-1))
        a.send(msg(B, "later"))
        await b1.nothing(is_message("later"))
        await b2.nothing(is_message("later"))
        b1.send(prio(0))
        m = await b1.recv(is_message("later"), what="offline message at priority >= 0")
        assert m.find(DELAY) is not None
        c.close()
    harness.run(go())


async def offline_round(st, bodies, stop=None):
    """alice sends bodies to offline bob; stop() runs; bob logs in and gets
    them once, in order, with delay stamps."""
    c = await FakeC2s.connect(st)
    a = await login(c, "alice@%s/a" % st.domain)
    for i, b in enumerate(bodies):
        a.send(msg("bob@%s" % st.domain, b, mid="m%d" % i))
    a.send(msg("bob@%s" % st.domain, "hl", type="headline"))  # not stored
    await a.nothing(lambda s: s.get("type") == "error")
    await offline_reaches(st, len(bodies))
    c.close()
    if stop:
        stop()
    c = await FakeC2s.connect(st)
    b = await login(c, "bob@%s/b" % st.domain)
    for i, body in enumerate(bodies):
        m = await b.recv(lambda s: s.tag == q("message"), what="offline message %d" % i)
        assert m.find(q("body")).text == body
        d = m.find(DELAY)
        assert d is not None and d.get("from") == st.domain and d.get("stamp").endswith("Z")
        assert m.get("from") == "alice@%s/a" % st.domain
    await b.nothing(lambda s: s.tag == q("message"))
    b.end()
    b = await login(c, "bob@%s/b2" % st.domain)
    await b.nothing(lambda s: s.tag == q("message"))  # delivered once
    c.close()


def test_offline_delivered_once(st):
    harness.run(offline_round(st, ["one", "two"]))


def test_offline_survives_sm_restart(st):
    harness.run(offline_round(st, ["before restart"], stop=lambda: st.restart_sm()))


def test_offline_survives_pg_restart(st):
    harness.run(offline_round(st, ["before pg restart"], stop=lambda: st.pg.restart()))


def test_offline_quota(st):
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        for i in range(3):
            a.send(msg("bob@%s" % st.domain, "q%d" % i, mid="q%d" % i))
        a.send(msg("bob@%s" % st.domain, "over", mid="over"))
        e = await a.recv(lambda s: s.get("id") == "over")
        assert e.get("type") == "error" and error_of(e)[1] == "service-unavailable"
        await a.nothing(lambda s: s.get("id") in ("q0", "q1", "q2"))
        c.close()
    harness.run(go())


def test_iq_handling_disco_version(st):
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        b = await login(c, "bob@%s/b" % st.domain)
        D = st.domain
        # An iq to a bare JID is answered by the server on the user's behalf.
        r = await a.iq("<iq type='get' id='i1' to='%s'><x xmlns='urn:example:x'/></iq>" % b.bare,
                       "i1")
        assert error_of(r) == ("cancel", "service-unavailable") and r.get("from") == b.bare
        r = await a.iq("<iq type='get' id='i2' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                       % b.bare, "i2")
        assert r.get("type") == "result"
        # An iq to a full JID goes to that session, and its answer back.
        a.send("<iq type='get' id='i3' to='%s'><x xmlns='urn:example:x'/></iq>" % b.jid)
        got = await b.recv(lambda s: s.get("id") == "i3")
        assert got.get("from") == a.jid
        b.send("<iq type='result' id='i3' to='%s'/>" % a.jid)
        r = await a.recv(lambda s: s.get("id") == "i3")
        assert r.get("type") == "result" and r.get("from") == b.jid
        # To a full JID that is not online: service-unavailable.
        r = await a.iq("<iq type='get' id='i4' to='%s/none'><x xmlns='urn:example:x'/></iq>"
                       % b.bare, "i4")
        assert error_of(r)[1] == "service-unavailable"
        # Results and errors are never answered.
        a.send("<iq type='error' id='i5' to='%s'/>" % b.bare)
        a.send("<iq type='result' id='i6' to='%s'/>" % D)
        await a.nothing(lambda s: s.get("id") in ("i5", "i6"))
        # Disco of the server and of an account (XEP-0030).
        r = await a.iq("<iq type='get' id='d1' to='%s'><query "
                       "xmlns='http://jabber.org/protocol/disco#info'/></iq>" % D, "d1")
        info = r.find("{http://jabber.org/protocol/disco#info}query")
        feats = {f.get("var") for f in info.findall("{http://jabber.org/protocol/disco#info}feature")}
        assert {"urn:xmpp:ping", "jabber:iq:version", "msgoffline",
                "http://jabber.org/protocol/disco#info"} <= feats
        ident = info.find("{http://jabber.org/protocol/disco#info}identity")
        assert (ident.get("category"), ident.get("type")) == ("server", "im")
        r = await a.iq("<iq type='get' id='d2' to='%s'><query "
                       "xmlns='http://jabber.org/protocol/disco#info'/></iq>" % b.bare, "d2")
        ident = r.find("{http://jabber.org/protocol/disco#info}query/"
                       "{http://jabber.org/protocol/disco#info}identity")
        assert (ident.get("category"), ident.get("type")) == ("account", "registered")
        r = await a.iq("<iq type='get' id='d3' to='%s'><query "
                       "xmlns='http://jabber.org/protocol/disco#items'/></iq>" % D, "d3")
        assert r.get("type") == "result"
        r = await a.iq("<iq type='get' id='d4' to='%s'><query node='x' "
                       "xmlns='http://jabber.org/protocol/disco#info'/></iq>" % D, "d4")
        assert error_of(r)[1] == "item-not-found"
        # Version (XEP-0092) and ping (XEP-0199) of the server.
        r = await a.iq("<iq type='get' id='v1' to='%s'><query xmlns='jabber:iq:version'/></iq>"
                       % D, "v1")
        v = r.find("{jabber:iq:version}query")
        assert v.find("{jabber:iq:version}name").text == "Parley"
        assert v.find("{jabber:iq:version}os") is None
        r = await a.iq("<iq type='get' id='p1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % D,
                       "p1")
        assert r.get("type") == "result" and r.get("from") == D
        c.close()
    harness.run(go())


def test_large_offline_queue_delivered_once():
    """More than the sm->router stream's byte cap (1 MiB) of offline
    messages: every one reaches the session at login, once, in order
    (past the default byte quota of 1 MiB: raised here)."""
    s = SmStack(extra={"sm": "<limits><offline-bytes>4194304</offline-bytes></limits>"})
    s.start()
    try:
        for u in ("alice", "bob"):
            s.add_user(u, "pw")
        n, size = 40, 40 * 1024

        async def go():
            c = await FakeC2s.connect(s)
            a = await login(c, "alice@%s/a" % s.domain)
            for i in range(0, n, 5):  # paced: the router's queue to the sm is 256 KiB
                for k in range(i, i + 5):
                    a.send(msg("bob@%s" % s.domain, "big%02d-" % k + "x" * size, mid="b%d" % k))
                await offline_reaches(s, i + 5)
            c.close()
            c = await FakeC2s.connect(s)
            b = await login(c, "bob@%s/b" % s.domain)
            for i in range(n):
                m = await b.recv(lambda x: x.tag == q("message"), what="offline message %d" % i)
                assert m.find(q("body")).text.startswith("big%02d-" % i)
            await b.nothing(lambda x: x.tag == q("message"))
            await offline_reaches(s, 0)
            b.end()
            b = await login(c, "bob@%s/b2" % s.domain)
            await b.nothing(lambda x: x.tag == q("message"))
            c.close()

        harness.run(go())
    finally:
        s.finish()


def test_bad_priority_does_not_flush_offline(st):
    """A presence whose priority is out of range is refused (mod_presence:
    bad-request): the session did not become available, so the offline
    messages wait (one priority parser for presence and the flush)."""
    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        a.send(msg("bob@%s" % st.domain, "kept", mid="k1"))
        await offline_reaches(st, 1)
        b = await login(c, "bob@%s/b" % st.domain, None)
        b.send("<presence id='p1'><priority>1000</priority></presence>")
        # A flush would hold bob's queue until its delete: the ping behind it
        # is answered after, so nothing here means no flush.
        await b.nothing(is_message("kept"))
        await offline_reaches(st, 1)
        b.send(prio(0))
        await b.recv(is_message("kept"), what="offline message at a valid presence")
        c.close()
    harness.run(go())


def test_offline_delete_is_exact(st):
    """The flush deletes exactly the rows it delivered: a message that lands
    with a lower seq while the delete waits (a sequence value is taken
    before its insert commits) is kept and delivered at the next login.
    A psql transaction holds a SHARE lock on the table so that the sm's
    delete waits, and inserts such a row meanwhile."""
    import subprocess

    async def line(proc, want):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + harness.WAIT
        while True:
            left = deadline - loop.time()
            assert left > 0, "psql did not say %r" % want
            got = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), left)
            assert got, "psql ended before %r" % want
            if got.strip() == want:
                return

    async def go():
        # Two sequence values burnt: a gap below the rows stored next.
        st.pg.psql("SELECT nextval('offline_seq_seq'); SELECT nextval('offline_seq_seq');")
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        for i in range(2):
            a.send(msg("bob@%s" % st.domain, "on time %d" % i, mid="t%d" % i))
        await offline_reaches(st, 2)
        lock = subprocess.Popen(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                                 "-d", st.pg.dsn()], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lock.stdin.write("BEGIN;\nLOCK TABLE offline IN SHARE MODE;\n\\echo locked\n")
            lock.stdin.flush()
            await line(lock, "locked")
            b = await login(c, "bob@%s/b" % st.domain)
            for i in range(2):
                await b.recv(is_message("on time %d" % i), what="offline message %d" % i)
            # The sm's delete of those two now waits for the lock.
            lock.stdin.write(
                "INSERT INTO offline (seq, owner, stanza) VALUES (1, 'bob@%s', "
                "'<message xmlns=''jabber:component:accept'' from=''alice@%s/a'' "
                "to=''bob@%s'' type=''chat''><body>late</body></message>');\n"
                "COMMIT;\n\\echo done\n" % (st.domain, st.domain, st.domain))
            lock.stdin.flush()
            await line(lock, "done")
        finally:
            lock.stdin.close()
            lock.wait(harness.WAIT)
        await offline_reaches(st, 1)
        _, seqs = st.pg.psql("SELECT seq FROM offline")
        assert seqs.strip() == "1", seqs
        b.end()
        b = await login(c, "bob@%s/b2" % st.domain)
        await b.recv(is_message("late"), what="the message stored during the delete")
        c.close()
    harness.run(go())


def test_requeued_initial_presence_flushes_once(st):
    """alice's initial presence meets a stale roster (a store failed, the
    read after it too): mod_presence sends it back to the queue behind a
    new read, after mod_message (earlier in the chain) started the offline
    flush. The database refuses the flush's delete, so the rows stay: the
    presence handled again must not flush them a second time (each stored
    message arrives once)."""

    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain, presence=None)
        b = await login(c, "bob@%s/b" % st.domain)
        b.send(msg("alice@%s" % st.domain, "stored one", mid="m1"))
        b.send(msg("alice@%s" % st.domain, "stored two", mid="m2"))
        await b.nothing(lambda s: s.get("type") == "error")
        await stale_roster(st, a)
        st.pg.psql("GRANT SELECT, INSERT, UPDATE ON roster_items TO parley_sm")
        st.pg.psql("REVOKE DELETE ON offline FROM parley_sm")
        a.send("<presence/>")
        for body in ("stored one", "stored two"):
            await a.recv(is_message(body), what=body)
        await a.nothing(lambda s: s.tag == q("message"))
        st.pg.psql("GRANT DELETE ON offline TO parley_sm")
        c.close()
    harness.run(go())


def test_welcome_once_per_new_account():
    """user-create (mod_welcome): a new account gets the configured welcome
    at its first login, stored offline (from the domain, delay stamp),
    exactly once: not at the next login, nor after an sm restart. A
    stanza that loads a new account is handled after the welcome is
    stored (it comes second). A welcome the database refuses is not lost:
    the account stays unmarked (mark and welcome are one transaction) and
    its next login, the user still cached, stores and sends it, once."""
    st = SmStack(extra={"sm": "<welcome><subject>Hi</subject><body>Welcome aboard</body>"
                              "</welcome>"})
    st.start()
    for u in ("alice", "bob", "carol"):
        st.add_user(u, "pw")

    def seen_null(user):
        _, out = st.pg.psql("SELECT sm_seen_at IS NULL FROM users WHERE jid = '%s@%s'"
                            % (user, st.domain))
        return out.strip() == "t"

    async def welcome(s):
        m = await s.recv(lambda x: x.tag == q("message"), what="welcome")
        assert m.get("from") == st.domain and m.find(q("body")).text == "Welcome aboard"
        assert m.find(q("subject")).text == "Hi"
        d = m.find(DELAY)
        assert d is not None and d.get("from") == st.domain

    async def go():
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a" % st.domain)
        await welcome(a)
        a.send(msg("carol@%s" % st.domain, "hello carol", mid="m1"))  # loads carol: new
        await a.nothing(lambda s: s.get("type") == "error")
        a.end()
        a = await login(c, "alice@%s/a2" % st.domain)
        await a.nothing(lambda s: s.tag == q("message"))
        a.end()
        st.pg.psql("REVOKE INSERT ON offline FROM parley_sm")
        b = await login(c, "bob@%s/b" % st.domain)
        await b.nothing(lambda s: s.tag == q("message"))
        b.end()
        await harness.apoll(lambda: "new account bob@%s not claimed" % st.domain
                            in st["sm"].log(), "bob's claim not answered")
        assert seen_null("bob")  # neither the mark nor the welcome
        st.pg.psql("GRANT INSERT ON offline TO parley_sm")
        b = await login(c, "bob@%s/b2" % st.domain)
        await welcome(b)  # at the next login
        b.end()
        c.close()
        st.restart_sm()
        c = await FakeC2s.connect(st)
        a = await login(c, "alice@%s/a3" % st.domain)
        await a.nothing(lambda s: s.tag == q("message"))
        b = await login(c, "bob@%s/b3" % st.domain)
        await b.nothing(lambda s: s.tag == q("message"))
        k = await login(c, "carol@%s/k" % st.domain)
        await welcome(k)
        m = await k.recv(lambda x: x.tag == q("message"), what="alice's message")
        assert m.find(q("body")).text == "hello carol"
        await k.nothing(lambda s: s.tag == q("message"))
        c.close()

    try:
        harness.run(go())
        log = st.daemons["sm"].log()
        for u in ("alice", "bob", "carol"):
            assert log.count("account %s@%s seen for the first time" % (u, st.domain)) == 1
    finally:
        st.finish()


def test_fan_out_to_c2s_names_of_different_lengths():
    """The sm serialises a stanza once and puts each session's envelope in
    front of the same bytes: sessions behind c2s processes whose names (and
    so envelopes) differ in length each get the whole stanza, intact."""
    st = SmStack(c2s=10)
    st.start()
    for u in ("alice", "bob"):
        st.add_user(u, "pw")

    async def go():
        short = await FakeC2s.connect(st, "c2s-1")
        long_ = await FakeC2s.connect(st, "c2s-10")
        a = await login(short, "alice@%s/a" % st.domain)
        b1 = await login(long_, "bob@%s/one" % st.domain)
        b2 = await login(short, "bob@%s/two" % st.domain)
        b3 = await login(long_, "bob@%s/three" % st.domain)
        body = "news &amp; more " + "x" * 3000
        a.send(msg(b1.bare, body, type="headline"))
        for s in (b1, b2, b3):
            m = await s.recv(is_message(body.replace("&amp;", "&")))
            assert m.get("from") == a.jid and m.get("to") == s.bare
        short.close()
        long_.close()

    try:
        harness.run(go())
    finally:
        st.finish()


# ---- stanzas the c2s returns: the session ended as the sm delivered to it
# (sm/SESSION.md, Returned stanzas), with real clients through parley-c2s.
# The race is made certain: the sm is stopped (SIGSTOP) while alice's
# stanzas and then the end of bob's session reach its socket, in that
# order (the router's counters say when); so it delivers them to a
# session the c2s no longer has, and the c2s returns them.

@pytest.fixture
def real():
    yield from real_stack()


def cq(name):
    return "{jabber:client}%s" % name


def client_error(el):
    """(type, condition) of a client stanza's error child, or None."""
    err = el.find(cq("error"))
    if err is None:
        return None
    conds = [c.tag.split("}", 1)[1] for c in err
             if c.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}") and
             not c.tag.endswith("}text")]
    return err.get("type"), conds[0] if conds else None


async def upto(r, pred, what):
    """What the raw client r receives up to the first element with pred:
    (that element, the ones before it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + harness.WAIT
    seen = []
    while True:
        try:
            el = await r.recv(max(deadline - loop.time(), 0.001))
        except asyncio.TimeoutError:
            raise AssertionError("no %s within %.1fs; got %s" %
                                 (what, harness.WAIT, [ET.tostring(e)[:300] for e in seen]))
        assert el is not None, "stream closed while waiting for %s" % what
        if pred(el):
            return el, seen
        seen.append(el)


async def raw_ping(st, r, mid):
    """A ping to the server and its answer; what came before it."""
    r.send("<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % (mid, st.domain))
    return (await upto(r, lambda el: el.get("id") == mid, "answer to " + mid))[1]


async def raw_login(st, user, resource, priority):
    r = await stack.ClientRaw.connect_client(st)
    await r.login_plain(user, "pw", resource)
    r.send(prio(priority))
    await raw_ping(st, r, "login")  # the sm has the presence
    return r


async def c2s_routed(st):
    """How many r:route the router has taken from c2s-1 (its SIGUSR1 stats)."""
    rx = r"stats: c2s-1 instances"
    n = len(re.findall(rx, st.router.log()))
    st.router.signal(signal.SIGUSR1)
    lines = await st.router.wait_log(rx, n + 1)
    return int(re.search(r"stanzas-in=(\d+)", lines[-1]).group(1))


async def routed_reaches(st, n, what):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + harness.WAIT
    while (got := await c2s_routed(st)) < n:
        assert loop.time() < deadline, "%s: the router has %d r:route from c2s-1, not %d" % (
            what, got, n)


async def race(st, sender, stanzas, gone):
    """sender's stanzas reach the sm, then the end of the raw client gone's
    session, while the sm is stopped: it delivers them to gone's session."""
    n = await c2s_routed(st)
    st["sm"].signal(signal.SIGSTOP)
    try:
        for s in stanzas:
            sender.send(s)
        await routed_reaches(st, n + len(stanzas), "alice's stanzas")
        gone.close()
        await routed_reaches(st, n + len(stanzas) + 1, "the end of the closed session")
    finally:
        st["sm"].signal(signal.SIGCONT)


def test_returned_by_c2s_keeps_its_type_and_a_headline_is_not_duplicated(real):
    """A chat to the bare JID that went to bob's best session, gone, reaches
    his other session as a chat; the headline that went to both sessions is
    not delivered a second time (no duplicate), and alice gets no error."""
    st = real

    async def go():
        a = await raw_login(st, "alice", "a", 0)
        phone = await raw_login(st, "bob", "phone", 5)
        desk = await raw_login(st, "bob", "desk", 1)
        B = "bob@%s" % st.domain
        try:
            await race(st, a, [msg(B, "news", "headline", "h1"), msg(B, "hello", "chat", "c1")],
                       phone)
            m, before = await upto(desk, lambda el: el.get("id") == "c1", "the chat at bob/desk")
            assert m.get("type") == "chat", ET.tostring(m)
            assert m.findtext(cq("body")) == "hello"
            heads = [e for e in before if e.get("id") == "h1"]
            assert len(heads) == 1, [ET.tostring(e)[:300] for e in before]
            later = await raw_ping(st, desk, "d-end")
            assert not [e for e in later if e.get("id") in ("h1", "c1")], later
            got = await raw_ping(st, a, "a-end")
            assert not [e for e in got if e.get("id") in ("h1", "c1")], got
            assert offline_count(st) == 0
        finally:
            a.close()
            desk.close()
    harness.run(go())


def test_returned_by_c2s_by_type_with_no_other_session(real):
    """bob's only session is gone as the sm delivers to it: the returned chat
    is stored offline as a chat, the headline is neither stored nor
    answered, the groupchat and the iq give alice service-unavailable."""
    st = real

    async def go():
        a = await raw_login(st, "alice", "a", 0)
        phone = await raw_login(st, "bob", "phone", 0)
        B, P = "bob@%s" % st.domain, "bob@%s/phone" % st.domain
        try:
            await race(st, a, [msg(B, "news", "headline", "h2"), msg(B, "later", "chat", "c2"),
                               msg(P, "room", "groupchat", "g2"),
                               "<iq type='get' id='i2' to='%s'><query xmlns='urn:example:q'/>"
                               "</iq>" % P], phone)
            errors = {}
            while set(errors) != {"g2", "i2"}:
                e, _ = await upto(a, lambda el: el.get("type") == "error",
                                  "alice's errors (has %s)" % sorted(errors))
                errors[e.get("id")] = (e.tag, e.get("from"), client_error(e))
            assert errors == {"g2": (cq("message"), P, ("cancel", "service-unavailable")),
                              "i2": (cq("iq"), P, ("cancel", "service-unavailable"))}, errors
            await offline_reaches(st, 1)
            _, out = st.pg.psql("SELECT stanza FROM offline WHERE owner = '%s'" % B)
            assert "type='chat'" in out or 'type="chat"' in out, out
            assert "later" in out and "news" not in out, out
            got = await raw_ping(st, a, "a-end")
            assert not [e for e in got if e.get("id") in ("h2", "c2")], got
        finally:
            a.close()
    harness.run(go())


def test_c2s_returns_stanza_for_unknown_sid_as_the_router_would(real):
    """parley-c2s sends a stanza for a sid it does not have back to whoever
    routed it as the router returns an undeliverable r:route: to and from
    swapped, error='item-not-found', the same sid, the stanza intact with
    its type; then <end sid/> (SESSION.md, Returned stanzas)."""
    st = real
    R = "{%s}route" % harness.NS_ROUTER

    async def go():
        comp = await st.router.raw_component("s2s")  # no s2s daemon in this stack
        sid = "0123456789abcdef0123456789abcdef"
        comp.send("<r:route to='c2s-1' from='s2s' sid='%s'><message xmlns='jabber:component:accept'"
                  " to='bob@%s/gone' from='carol@remote.test/r' type='headline' id='x1'>"
                  "<body>b</body></message></r:route>" % (sid, st.domain))
        back = await comp.expect(lambda el: el.tag == R and len(el) == 1 and
                                 el[0].tag == "{jabber:component:accept}message", what="the return")
        assert (back.get("to"), back.get("from"), back.get("sid"), back.get("error")) == \
            ("s2s", "c2s-1", sid, "item-not-found"), back.attrib
        m = back[0]
        assert (m.get("type"), m.get("id"), m.get("to"), m.get("from")) == \
            ("headline", "x1", "bob@%s/gone" % st.domain, "carol@remote.test/r"), m.attrib
        assert m.findtext("{jabber:component:accept}body") == "b"
        end = await comp.expect(lambda el: el.tag == R and len(el) == 1 and
                                el[0].tag == "{urn:parley:session}end", what="the end")
        assert end[0].get("sid") == sid
        comp.close()
    harness.run(go())
