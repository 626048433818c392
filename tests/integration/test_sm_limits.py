"""test_sm_limits.py - parley-sm's bounds on what others can make it store or
do, at the protocol level (the test speaks as c2s-1 over the real router;
real PostgreSQL): the per-user offline quota in messages and in bytes,
inbound subscription requests kept reduced, a repeated request not
delivered again while one is pending (RFC 6121 A.2.1), the memory of
missing accounts (its TTL, a login forgets it) and the cap on look-ups in
flight, the error for a stanza refused at a full user queue reaching its
own sender, bad-request for a bad presence priority, and the answers to
pending stanzas when the sm is stopped; and that nothing the sm sends is
bigger than <limits><router-stanza-size> (the router would end the sm's
link for it): offline messages refused at store or deleted at delivery,
bounces without their payload, policy-violation to the sender, the
welcome checked against it at start, room left for a return's error
attribute, a fan-out sent to all sessions or none; and that with the limit
raised the sm reads what the router passes on, and reads back rows stored
under a higher limit.
"""

import asyncio
import time
import xml.etree.ElementTree as ET

import pytest

import harness
import smutil
from smutil import (FakeC2s, SmStack, error_of, is_message, is_presence, login, offline_count,
                    offline_reaches, q, stale_roster)

NICK = "{http://jabber.org/protocol/nick}nick"


def stack(extra="", users=("alice", "bob"), router_limits=None):
    s = SmStack(extra={"sm": extra}, router_limits=router_limits)
    s.start()
    for u in users:
        s.add_user(u, "pw")
    return s


def msg(to, body, mid, type="chat"):
    return "<message to='%s' type='%s' id='%s'><body>%s</body></message>" % (to, type, mid, body)


def is_id(i):
    return lambda s: s.get("id") == i


def requests(st, owner, what="count(*)"):
    """what (an SQL expression) of owner's stored subscription requests."""
    _, out = st.pg.psql("SELECT %s FROM subscription_requests WHERE owner = '%s@%s'"
                        % (what, owner, st.domain))
    return out.strip()


def test_offline_quota_bytes_and_count():
    """<limits><offline-bytes>: a message that would take the stored bytes
    past it gets service-unavailable and is not stored; so does one past
    <limits><offline> messages; bob later gets exactly the stored ones."""
    st = stack("<limits><offline>3</offline><offline-bytes>4096</offline-bytes></limits>")
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            bob = "bob@%s" % st.domain
            big = "x" * 1500
            for i in range(2):  # about 1.6 KiB each as stored: both fit
                a.send(msg(bob, "b%d-" % i + big, "b%d" % i))
            a.send(msg(bob, "b2-" + big, "b2"))  # past 4096 bytes
            e = await a.recv(is_id("b2"), what="error for the third big message")
            assert e.get("type") == "error" and error_of(e) == ("cancel", "service-unavailable")
            a.send(msg(bob, "y" * 5000, "huge"))  # alone past the quota
            e = await a.recv(is_id("huge"), what="error for a message over the quota")
            assert error_of(e)[1] == "service-unavailable"
            a.send(msg(bob, "small", "s1"))  # room in bytes, the third message
            a.send(msg(bob, "one too many", "s2"))  # past 3 messages
            e = await a.recv(is_id("s2"), what="error past the count")
            assert error_of(e)[1] == "service-unavailable"
            await a.nothing(lambda s: s.get("id") in ("b0", "b1", "s1"))
            assert offline_count(st) == 3
            b = await login(c, "bob@%s/b" % st.domain)
            got = []
            for _ in range(3):
                m = await b.recv(lambda s: s.tag == q("message"), what="offline message")
                got.append(m.get("id"))
            assert got == ["b0", "b1", "s1"]
            await b.nothing(lambda s: s.tag == q("message"))
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_subscription_request_kept_reduced():
    """A subscription request with a 200 KB status and a bulky extension is
    stored as from/to/type, the status cut to 1 KiB and the nick: small in
    the database, and still delivered (reduced) at bob's next login."""
    st = stack()
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            status = "a" + "\u00e9" * 60000  # the 1024-byte cut falls inside a character
            junk = "<blob xmlns='urn:example:junk'>%s</blob>" % ("z" * 50000)
            a.send("<presence to='bob@%s' type='subscribe' id='sub1'><status>%s</status>"
                   "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>%s</presence>" %
                   (st.domain, status, junk))
            await a.nothing(lambda s: s.get("type") == "error")
            await harness.apoll(lambda: requests(st, "bob", "octet_length(stanza)"),
                                "no request stored")
            size = requests(st, "bob", "octet_length(stanza)")
            assert int(size) < 2048, "stored request is %s bytes" % size
            b = await login(c, "bob@%s/b" % st.domain)
            r = await b.recv(is_presence(a.bare, "subscribe"), what="the stored request")
            s = r.find(q("status")).text
            assert len(s.encode()) == 1023 and status.startswith(s)
            assert r.find(NICK).text == "Alice"
            assert r.find("{urn:example:junk}blob") is None
            assert r.get("id") == "sub1"
            # Approving it works as ever.
            b.send("<presence to='%s' type='subscribed'/>" % a.bare)
            await a.recv(is_presence(b.bare, "subscribed"))
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_subscription_request_keeps_status_in_its_language():
    """A request with several <status/>: the one in the stanza's language
    (xml:lang on the stanza, inherited by a status without its own) is
    kept, and delivered with that language; without a match the first,
    with its own."""
    st = stack(users=("alice", "bob", "carol"))
    XL = "{http://www.w3.org/XML/1998/namespace}lang"
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            a.send("<presence to='bob@%s' type='subscribe' xml:lang='de'>"
                   "<status xml:lang='en'>hello</status><status>hallo</status></presence>"
                   % st.domain)
            a.send("<presence to='carol@%s' type='subscribe' xml:lang='de'>"
                   "<status xml:lang='fr'>salut</status><status xml:lang='en'>hi</status>"
                   "</presence>" % st.domain)
            await a.nothing(lambda s: s.get("type") == "error")
            for user, text, lang in (("bob", "hallo", "de"), ("carol", "salut", "fr")):
                await harness.apoll(lambda: requests(st, user) == "1",
                                    "no request stored for " + user)
                s = await login(c, "%s@%s/r" % (user, st.domain))
                r = await s.recv(is_presence(a.bare, "subscribe"), what="the stored request")
                got = [(x.text, x.get(XL)) for x in r.findall(q("status"))]
                assert got == [(text, lang)], got
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_repeated_subscribe_not_delivered_again():
    """RFC 6121 A.2.1: a subscribe while the same contact's request is
    pending changes nothing and is not delivered; the pending request is
    still delivered at a new login, once."""
    st = stack()
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            b = await login(c, "bob@%s/b" % st.domain)
            sub = "<presence to='%s' type='subscribe'/>" % b.bare
            a.send(sub)
            await b.recv(is_presence(a.bare, "subscribe"), what="the first request")
            a.send(sub)
            a.send(sub)
            await b.nothing(is_presence(a.bare, "subscribe"))
            b2 = await login(c, "bob@%s/b2" % st.domain)
            await b2.recv(is_presence(a.bare, "subscribe"), what="the pending request")
            await b2.nothing(is_presence(a.bare, "subscribe"))
            await b.nothing(is_presence(a.bare, "subscribe"))
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_bad_priority_gets_bad_request():
    """A presence whose priority is not an integer in -128..127 (RFC 6121
    §4.7.2.3) is answered with bad-request (RFC 6120 §8.3.3.1), from the
    account, to the session that sent it; the session stays unavailable."""
    st = stack()
    try:
        async def go():
            c = await FakeC2s.connect(st)
            b = await login(c, "bob@%s/b" % st.domain, None)
            for pid, val in (("p1", "1000"), ("p2", "-129"), ("p3", "high"), ("p4", "")):
                b.send("<presence id='%s'><priority>%s</priority></presence>" % (pid, val))
                e = await b.recv(is_id(pid), what="error for priority %r" % val)
                assert e.get("type") == "error" and error_of(e) == ("modify", "bad-request")
                assert e.get("from") == b.bare and e.get("to") == b.jid
            a = await login(c, "alice@%s/a" % st.domain)
            a.send(msg(b.bare, "stored", "m1"))  # bob is not available: stored
            await offline_reaches(st, 1, "message not stored offline")
            await b.nothing(is_message("stored"))
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_missing_account_remembered_until_login():
    """A stanza to a nonexistent user is answered service-unavailable, and
    the miss is remembered (<cache><missing-ttl>): an account created
    meanwhile in the database is still answered as missing, until it logs
    in (a session start looks it up again)."""
    st = stack("<cache><missing-ttl>600</missing-ttl></cache>")
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            ghost = "ghost@%s" % st.domain
            for i in range(3):
                a.send(msg(ghost, "hello", "g%d" % i))
                e = await a.recv(is_id("g%d" % i), what="error for the missing user")
                assert error_of(e)[1] == "service-unavailable"
            st.add_user("ghost", "pw")
            a.send(msg(ghost, "hello", "g3"))
            e = await a.recv(is_id("g3"), what="error from the remembered miss")
            assert error_of(e)[1] == "service-unavailable"
            g = await login(c, ghost + "/r")  # the login is not refused
            a.send(msg(ghost, "welcome", "g4"))
            m = await g.recv(is_message("welcome"), what="the message after the login")
            assert m.get("from") == a.jid
            await a.nothing(is_id("g4"))
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_missing_account_found_after_ttl():
    """After <cache><missing-ttl> a new account is found: a message to it is
    stored offline instead of answered with an error."""
    st = stack("<cache><missing-ttl>1</missing-ttl></cache>")
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            a.send(msg("carol@%s" % st.domain, "early", "c1"))
            e = await a.recv(is_id("c1"), what="error for the missing user")
            assert error_of(e)[1] == "service-unavailable"
            st.add_user("carol", "pw")
            await asyncio.sleep(1.5)  # past the TTL (not an assertion)
            a.send(msg("carol@%s" % st.domain, "later", "c2"))
            await a.nothing(is_id("c2"))
            await offline_reaches(st, 1, "message to carol not stored", owner="carol")
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_lookups_in_flight_capped():
    """A burst of messages to 60 nonexistent users with <limits><loads>1:
    every sender gets an answer, service-unavailable for the users looked
    up and resource-constraint (wait) for those refused meanwhile."""
    st = stack("<limits><loads>1</loads></limits><cache><missing>0</missing></cache>")
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            n = 60
            c.batch(lambda: [a.send(msg("nobody%d@%s" % (i, st.domain), "hi", "n%d" % i))
                             for i in range(n)])
            conds = {}
            for i in range(n):
                e = await a.recv(is_id("n%d" % i), what="answer to n%d" % i)
                conds[i] = error_of(e)
            assert set(conds.values()) <= {("cancel", "service-unavailable"),
                                           ("wait", "resource-constraint")}, conds
            assert ("cancel", "service-unavailable") in conds.values()
            assert ("wait", "resource-constraint") in conds.values()
            # Once the burst is over, look-ups work again.
            a.send(msg("nobody@%s" % st.domain, "hi", "later"))
            e = await a.recv(is_id("later"), what="answer after the burst")
            assert error_of(e)[1] == "service-unavailable"
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_lookup_flood_from_one_origin_leaves_room_for_others():
    """<limits><loads>4: mallory floods messages to 60 nonexistent names
    (each a look-up); alice's message to bob (offline, not in memory), in
    the same burst behind the flood, still gets a look-up: it is stored
    offline, not refused, while part of the flood is refused."""
    st = stack("<limits><loads>4</loads></limits><cache><missing>0</missing></cache>",
               users=("alice", "bob", "mallory"))
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain, presence=None)
            m = await login(c, "mallory@%s/m" % st.domain, presence=None)
            n = 60

            def burst():
                for i in range(n):
                    m.send(msg("nobody%d@%s" % (i, st.domain), "x", "n%d" % i))
                a.send(msg("bob@%s" % st.domain, "hello", "m1"))
            c.batch(burst)
            conds = []
            for i in range(n):
                e = await m.recv(is_id("n%d" % i), what="answer to n%d" % i)
                conds.append(error_of(e))
            assert ("wait", "resource-constraint") in conds, conds
            await a.nothing(is_id("m1"))
            await offline_reaches(st, 1, "alice's message was not stored offline")
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_session_loads_do_not_count_against_lookup_cap():
    """<limits><loads>1: many sessions starting at once (as when a c2s
    re-announces its sessions after an sm restart) each load their user,
    but those loads are not look-ups for stanzas: a message sent meanwhile
    to a user not in memory is stored offline, not refused; available
    presence to such a user is dropped quietly (no session could get it),
    with no error back."""
    users = ["u%d" % i for i in range(12)]
    st = stack("<limits><loads>1</loads></limits>", users=("alice", "bob", "carol") + tuple(users))
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain, presence=None)

            def burst():
                for u in users:
                    c.start("%s@%s/r" % (u, st.domain))
                a.send(msg("bob@%s" % st.domain, "while loading", "m1"))
                a.send("<presence to='carol@%s/x' id='p1'/>" % st.domain)
            c.batch(burst)
            a.send("<iq type='get' id='ping' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                   % st.domain)
            await a.recv(is_id("ping"), what="ping answer")
            stray = [el for el in c.pending if el.tag == smutil.ROUTE and
                     el.get("sid") == a.sid and len(el) and el[0].get("id") in ("m1", "p1")]
            assert not stray, "refused: %s" % [ET.tostring(e)[:900] for e in stray]
            await offline_reaches(st, 1, "the message was not stored offline")
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_refused_at_full_queue_sender_gets_error():
    """The user's queue is full (a roster set holds it while stored): the
    user's own stanzas refused then get resource-constraint back; before,
    the error went to that same full queue and was lost."""
    st = stack("<limits><user-queue>2</user-queue></limits>")
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            await a.recv(is_presence(a.jid, None), what="own presence")
            n = 8

            def burst():
                a.send("<iq type='set' id='rs'><query xmlns='jabber:iq:roster'>"
                       "<item jid='carol@%s'/></query></iq>" % st.domain)
                for i in range(n):
                    a.send("<iq type='get' id='p%d' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                           % (i, st.domain))
            c.batch(burst)
            r = await a.recv(is_id("rs"), what="roster set result")
            assert r.get("type") == "result"
            types = []
            for i in range(n):
                p = await a.recv(is_id("p%d" % i), what="answer to ping p%d" % i)
                types.append(p.get("type") if p.get("type") == "result" else error_of(p))
            assert ("wait", "resource-constraint") in types, types
            assert set(types) <= {"result", ("wait", "resource-constraint")}, types
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_stop_answers_pending_stanzas():
    """SIGTERM while a message waits for storage (PostgreSQL down): the sm
    fails it and answers the sender before it closes its router connection,
    instead of dropping it silently."""
    st = stack()
    stopped = [False]
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            a.send(msg("bob@%s" % st.domain, "first", "m0"))  # loads bob
            await offline_reaches(st, 1, "first message not stored")
            st.pg.stop()
            stopped[0] = True
            # Both connections (the default pool) seen lost: the next store
            # waits for a connection instead of failing on a dead one.
            await harness.apoll(lambda: all("database connection %d: " % i in st["sm"].log()
                                            for i in range(2)), "sm did not see PostgreSQL go")
            a.send(msg("bob@%s" % st.domain, "pending", "m1"))
            await a.nothing(is_id("m1"))  # handled: its store waits for the database
            code = await asyncio.get_running_loop().run_in_executor(None, st.daemons["sm"].stop)
            assert code == 0
            e = await a.recv(is_id("m1"), what="error for the message pending at the stop")
            assert e.get("type") == "error" and error_of(e)[1] == "internal-server-error"
            c.close()
        harness.run(go())
    finally:
        if stopped[0]:
            st.pg.start()
        st.finish()


def test_failed_roster_store_leaves_memory_as_database():
    """A roster set that the database refuses (the sm's role loses INSERT
    and UPDATE on roster_items) is answered internal-server-error, and the
    roster the sm then serves is the one the database has: neither the new
    item nor the changed name shows up in a roster get."""
    st = stack()
    R = "jabber:iq:roster"

    def rset(jid, iq_id, name=None):
        n = "" if name is None else " name='%s'" % name
        return ("<iq type='set' id='%s'><query xmlns='%s'><item jid='%s'%s/></query></iq>" %
                (iq_id, R, jid, n))

    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            r = await a.iq("<iq type='get' id='g0'><query xmlns='%s'/></iq>" % R, "g0")
            assert r.get("type") == "result"
            carol, dave = "carol@%s" % st.domain, "dave@%s" % st.domain
            r = await a.iq(rset(carol, "s1"), "s1")
            assert r.get("type") == "result"
            st.pg.psql("REVOKE INSERT, UPDATE ON roster_items FROM parley_sm")
            for iq_id, jid, name in (("s2", dave, None), ("s3", carol, "Carol")):
                r = await a.iq(rset(jid, iq_id, name), iq_id)
                assert r.get("type") == "error", iq_id
                assert error_of(r) == ("cancel", "internal-server-error"), error_of(r)
            st.pg.psql("GRANT INSERT, UPDATE ON roster_items TO parley_sm")
            r = await a.iq("<iq type='get' id='g1'><query xmlns='%s'/></iq>" % R, "g1")
            items = r.findall("{%s}query/{%s}item" % (R, R))
            assert [(i.get("jid"), i.get("name")) for i in items] == [(carol, None)], \
                [i.attrib for i in items]
            r = await a.iq(rset(dave, "s4"), "s4")  # works again
            assert r.get("type") == "result"
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_stale_roster_keeps_memory_for_unavailable():
    """A roster store fails and so does the read that follows (the sm's role
    loses write and read on roster_items): the roster in memory is kept, not
    emptied, and the client's unavailable still reaches its contact (it is
    not answered internal-server-error)."""
    st = stack(users=("alice", "bob"))
    alice, bob = "alice@%s" % st.domain, "bob@%s" % st.domain
    st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES "
               "('%s', '%s', 'both'), ('%s', '%s', 'both')" % (alice, bob, bob, alice))
    try:
        async def go():
            c = await FakeC2s.connect(st)
            b = await login(c, bob + "/b")
            a = await login(c, alice + "/a")
            await b.recv(is_presence(a.jid, None), what="alice's presence at bob")
            await stale_roster(st, a)
            a.send("<presence type='unavailable' id='u1'/>")
            await b.recv(is_presence(a.jid, "unavailable"), what="alice's unavailable at bob")
            st.pg.psql("GRANT SELECT, INSERT, UPDATE ON roster_items TO parley_sm")
            await c.nothing_for(a.sid, a.sid, a.jid, lambda s: s.get("id") == "u1")
            c.close()
        harness.run(go())
    finally:
        st.finish()


@pytest.mark.parametrize("what", ["roster-get", "inbound-subscribe"])
def test_stanzas_wait_for_the_stale_roster_read(what):
    """A roster store fails and so does the read that follows: the roster is
    stale. Once the database lets the sm read again, the next stanza that
    needs the roster waits for the read it starts and is then handled, not
    answered with internal-server-error: alice's roster get gets the
    roster; carol's subscription request reaches alice."""
    st = stack(users=("alice", "bob", "carol"))
    R = "jabber:iq:roster"
    alice, bob, carol = ("%s@%s" % (u, st.domain) for u in ("alice", "bob", "carol"))
    st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES "
               "('%s', '%s', 'both'), ('%s', '%s', 'both')" % (alice, bob, bob, alice))
    try:
        async def go():
            c = await FakeC2s.connect(st)
            k = await login(c, carol + "/k", presence=None)
            a = await login(c, alice + "/a")  # available: gets subscription requests
            await stale_roster(st, a)
            st.pg.psql("GRANT SELECT, INSERT, UPDATE ON roster_items TO parley_sm")
            if what == "roster-get":
                r = await a.iq("<iq type='get' id='g1'><query xmlns='%s'/></iq>" % R, "g1")
                assert r.get("type") == "result", error_of(r)
                items = r.findall("{%s}query/{%s}item" % (R, R))
                assert [(i.get("jid"), i.get("subscription")) for i in items] == [(bob, "both")]
            else:
                k.send("<presence type='subscribe' to='%s' id='sub1'/>" % alice)
                p = await a.recv(is_presence(carol, "subscribe"), what="carol's request at alice")
                assert p.get("id") == "sub1"
                await k.nothing(is_id("sub1"))
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_failing_roster_reads_back_off():
    """The database refuses the roster of alice (store, then reads): a
    stanza that needs it waits for one read, and when that fails too it is
    answered internal-server-error without starting another (one read per
    stanza, not two); the next ones are answered at once while the reads
    back off. Once the database is back, a roster get gets the roster."""
    st = stack(users=("alice", "bob"))
    R = "jabber:iq:roster"
    alice, bob = "alice@%s" % st.domain, "bob@%s" % st.domain
    st.pg.psql("INSERT INTO roster_items (owner, jid, subscription) VALUES "
               "('%s', '%s', 'both')" % (alice, bob))
    get = "<iq type='get' id='%s'><query xmlns='" + R + "'/></iq>"

    def reads():
        return st["sm"].log().count("roster of %s read again" % alice)

    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, alice + "/a")
            await stale_roster(st, a)
            assert reads() == 1
            r = await a.iq(get % "g1", "g1")  # waits for a second read, which fails
            assert error_of(r) == ("cancel", "internal-server-error"), error_of(r)
            assert reads() == 2, reads()  # not a third on its second pass
            for i in range(2, 6):
                r = await a.iq(get % ("g%d" % i), "g%d" % i)
                assert error_of(r) == ("cancel", "internal-server-error"), error_of(r)
            st.pg.psql("GRANT SELECT, INSERT, UPDATE ON roster_items TO parley_sm")
            deadline = time.monotonic() + harness.WAIT
            i = 10
            while True:  # answered at once while backing off, then read again
                r = await a.iq(get % ("g%d" % i), "g%d" % i)
                if r.get("type") == "result":
                    break
                assert time.monotonic() < deadline, "the roster is not read again"
                await asyncio.sleep(0.1)
                i += 1
            items = r.findall("{%s}query/{%s}item" % (R, R))
            assert [x.get("jid") for x in items] == [bob]
            c.close()
        harness.run(go())
    finally:
        st.finish()


def test_congested_c2s_returns_stored_past_quota():
    """bob's c2s stops reading: the messages alice sends to bob/r that the
    router returns congested are stored offline again, even past bob's
    offline quota (they were accepted already): every message is either
    received by bob's c2s, stored, or answered with an error to alice,
    and more are stored than the quota allows."""
    st = SmStack(c2s=2, extra={"sm": "<limits><offline>2</offline></limits>"})
    st.start()
    for u in ("alice", "bob"):
        st.add_user(u, "pw")
    try:
        async def go():
            c1 = await FakeC2s.connect(st, "c2s-1")
            c2 = await FakeC2s.connect(st, "c2s-2")
            b = await login(c1, "bob@%s/r" % st.domain)
            a = await login(c2, "alice@%s/a" % st.domain)
            c1.raw.stop_reading()
            body = "x" * 8192
            n = 0
            # Paced (a ping round trip every 10) until messages come back.
            for step in range(80):
                for i in range(10):
                    a.send(msg(b.jid, body, "m%d" % n))
                    n += 1
                r = await a.iq("<iq type='get' id='p%d' to='%s'><ping xmlns='urn:xmpp:ping'/>"
                               "</iq>" % (step, st.domain), "p%d" % step)
                assert r.get("type") == "result"
                if "congested" in st["sm"].log() and offline_count(st) > 2:
                    break
            assert offline_count(st) > 2, "no message stored again past the quota"
            c1.raw.resume_reading()
            a.send(msg(b.jid, "end", "end"))
            await b.recv(is_id("end"), what="the last message at bob's c2s", timeout=harness.WAIT * 2)
            got = {el[0].get("id") for el in c1.pending
                   if el.tag == smutil.ROUTE and el.get("sid") == b.sid and len(el)}
            errors = {el[0].get("id") for el in c2.pending
                      if el.tag == smutil.ROUTE and el.get("sid") == a.sid and len(el) and
                      el[0].get("type") == "error"}
            _, out = st.pg.psql("SELECT stanza FROM offline WHERE owner = 'bob@%s'" % st.domain)
            stored = {"m%d" % i for i in range(n) if "id='m%d'" % i in out or
                      'id="m%d"' % i in out}
            lost = {"m%d" % i for i in range(n)} - got - errors - stored
            assert not lost, "lost: %s" % sorted(lost)[:20]
            c1.close()
            c2.close()
        harness.run(go())
    finally:
        st.finish()


# ---- nothing the sm sends may be larger than the router takes

ROUTER_MAX = 256 * 1024  # the router's and the sm's default <stanza-size>
# What a returned envelope gains: the c2s adds error='item-not-found' for a
# session that is gone, the router error='resource-constraint' (the longer).
RETURN_ROOM = len(" error='resource-constraint'")
# sm_mod_stanza_max: less the largest envelope the sm puts around a stanza
# to a session (<r:route to='' from='' sid=''></r:route>, two JID parts, a
# sid) and the room for its return.
SM_STANZA_MAX = ROUTER_MAX - (40 + 2 * 1023 + 32 + RETURN_ROOM)
NS_DELAY = "{urn:xmpp:delay}delay"


def delivered_len(st, frm, to, mid, body_len):
    """The size of a chat message as the sm sends it from the offline store
    (its <delay/> stamp has a fixed width), without the envelope."""
    return len("<message to='%s' type='chat' id='%s' from='%s'><body>%s</body>"
               "<delay xmlns='urn:xmpp:delay' from='%s' stamp='1970-01-01T00:00:00.000Z'/>"
               "</message>" % (to, mid, frm, "", st.domain)) + body_len


def wire_len(sess, stanza):
    """Bytes of stanza in the envelope FakeC2s sends it in."""
    out = []
    send = sess.c2s.raw.send
    sess.c2s.raw.send = out.append
    try:
        sess.send(stanza)
    finally:
        sess.c2s.raw.send = send
    return len(out[0].encode())


def no_router_loss(st):
    log = st["sm"].log()
    assert "router connection lost" not in log, log[-3000:]
    assert st.sm_ready_count() == 1


def test_offline_message_too_large_to_deliver_refused_at_store():
    """A chat message that fits the router on its way in, but not once the
    sm adds its delay stamp and envelope at delivery from the offline store,
    is refused when it is to be stored: its sender gets policy-violation
    (modify) and the sm keeps its router link (it would lose it at bob's
    login). One just under what fits is stored and delivered; bob gets
    nothing else; traffic to others flows on."""
    st = stack(users=("alice", "bob", "carol"))
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            carol = await login(c, "carol@%s/c" % st.domain)
            bob = "bob@%s" % st.domain
            big = msg(bob, "x" * (ROUTER_MAX - 250), "big")
            assert wire_len(a, big) <= ROUTER_MAX  # the router takes it from the c2s
            a.send(big)
            e = await a.recv(is_id("big"), what="error for the message too large to store")
            assert error_of(e) == ("modify", "policy-violation"), error_of(e)
            assert e.find(q("body")) is None  # without the payload
            over = SM_STANZA_MAX + 40 - delivered_len(st, a.jid, bob, "over", 0)
            under = SM_STANZA_MAX - 40 - delivered_len(st, a.jid, bob, "under", 0)
            a.send(msg(bob, "o" * over, "over"))
            e = await a.recv(is_id("over"), what="error for the message just over")
            assert error_of(e) == ("modify", "policy-violation"), error_of(e)
            a.send(msg(bob, "u" * under, "under"))
            await offline_reaches(st, 1)
            await a.nothing(lambda s: s.get("id") == "under")
            b = await login(c, "bob@%s/b" % st.domain)
            m = await b.recv(lambda s: s.tag == q("message"), what="the stored message")
            assert m.get("id") == "under" and len(m.find(q("body")).text) == under
            assert m.find(NS_DELAY) is not None
            await b.nothing(lambda s: s.tag == q("message"))
            a.send(msg(carol.bare, "still here", "later"))
            m = await carol.recv(is_id("later"), what="a later message to carol")
            assert m.find(q("body")).text == "still here"
            await offline_reaches(st, 0)  # the delivered page is deleted
            c.close()
        harness.run(go())
        no_router_loss(st)
    finally:
        st.finish()


def test_stored_message_over_a_lowered_limit_deleted_at_delivery():
    """A stored message larger than <router-stanza-size> allows (stored
    before it was lowered) is not sent at bob's login: its sender gets
    policy-violation, it is logged and deleted (not tried at every login);
    the small one stored after it is delivered; the sm keeps its link."""
    st = stack("<limits><router-stanza-size>64k</router-stanza-size></limits>")
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            bob = "bob@%s" % st.domain
            row = ("INSERT INTO offline (owner, stanza) VALUES ('%s', '<message xmlns=''"
                   "jabber:component:accept'' from=''%s'' to=''%s'' type=''chat'' id=''%s''>"
                   "<body>' || repeat('y', %d) || '</body></message>');")
            st.pg.psql(row % (bob, a.jid, bob, "old", 100000) + row % (bob, a.jid, bob, "new", 10))
            b = await login(c, "bob@%s/b" % st.domain)
            e = await a.recv(is_id("old"), what="error for the stored message")
            assert error_of(e) == ("modify", "policy-violation"), error_of(e)
            m = await b.recv(lambda s: s.tag == q("message"), what="the small stored message")
            assert m.get("id") == "new"
            await b.nothing(lambda s: s.tag == q("message"))
            await offline_reaches(st, 0)
            assert "too large for the router: deleted" in st["sm"].log()
            b.end()
            b = await login(c, "bob@%s/b2" % st.domain)
            await b.nothing(lambda s: s.tag == q("message"))
            c.close()
        harness.run(go())
        no_router_loss(st)
    finally:
        st.finish()


def test_bounce_of_near_limit_stanza_keeps_router_link():
    """A normal message just within the router's limit to a resource that is
    not online gets service-unavailable (RFC 6121 §8.5.3.2.1); with its
    payload and <error/> the answer would be over the limit, so it goes
    without the payload, and the sm keeps its router link."""
    st = stack()
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            to = "bob@%s/nowhere" % st.domain
            base = msg(to, "", "near", type="normal")
            pad = ROUTER_MAX - 20 - wire_len(a, base)
            near = msg(to, "n" * pad, "near", type="normal")
            assert ROUTER_MAX - 40 < wire_len(a, near) <= ROUTER_MAX
            a.send(near)
            e = await a.recv(is_id("near"), what="the error for the near-limit message")
            assert error_of(e) == ("cancel", "service-unavailable"), error_of(e)
            assert e.find(q("body")) is None
            a.send(msg(to, "small", "small", type="normal"))
            e = await a.recv(is_id("small"), what="the error for a small message")
            assert error_of(e)[1] == "service-unavailable"
            assert e.find(q("body")).text == "small"  # the payload when it fits
            c.close()
        harness.run(go())
        no_router_loss(st)
    finally:
        st.finish()


def test_welcome_checked_against_router_stanza_size():
    """mod_welcome's start-up check uses <limits><router-stanza-size>: a
    welcome well within the default but over a lowered limit (with its
    delay stamp and envelope) stops the sm at start-up."""
    st = SmStack(extra={"sm": "<welcome><body>%s</body></welcome>"
                              "<limits><router-stanza-size>8k</router-stanza-size></limits>"
                              % ("w" * 7000)})
    try:
        st.router.start()
        sm = st.daemons["sm"]
        sm.start(wait=False)
        code = sm.proc.wait(harness.WAIT)
        log = sm.log()
        assert code != 0, log
        assert "<welcome> is too big" in log and "stanza size limit" in log, log
        assert "sm ready" not in log
        assert not st.sanitizer_errors(), st.sanitizer_errors()[:5]
    finally:
        st.router.stop()
        st.cleanup()


def test_sm_sends_nothing_over_its_router_stanza_size():
    """With <limits><router-stanza-size> below what the router took in, a
    stanza that would go out bigger is not sent: a message's sender gets
    policy-violation (modify, no payload); an iq result's requester gets
    that error instead of waiting for an answer; a stanza that fits flows."""
    st = stack("<limits><router-stanza-size>64k</router-stanza-size></limits>")
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            b = await login(c, "bob@%s/b" % st.domain)
            a.send(msg(b.jid, "z" * 100000, "m1"))
            e = await a.recv(is_id("m1"), what="error for the big message")
            assert error_of(e) == ("modify", "policy-violation"), error_of(e)
            assert e.find(q("body")) is None
            a.send("<iq type='result' to='%s' id='r1'><query xmlns='urn:example:big'>%s</query>"
                   "</iq>" % (b.jid, "z" * 100000))
            e = await b.recv(is_id("r1"), what="error instead of the big result")
            assert e.get("type") == "error" and e.get("from") == a.jid, e.attrib
            assert error_of(e) == ("modify", "policy-violation"), error_of(e)
            # To another domain (the router's to route): the same answer.
            a.send(msg("someone@elsewhere.test", "z" * 100000, "m3"))
            e = await a.recv(is_id("m3"), what="error for the big message to elsewhere")
            assert error_of(e) == ("modify", "policy-violation"), error_of(e)
            a.send(msg(b.jid, "z" * 60000, "m2"))
            m = await b.recv(is_id("m2"), what="a message that fits")
            assert len(m.find(q("body")).text) == 60000
            await b.nothing(lambda s: s.get("id") in ("m1", "r1") and s.get("type") != "error")
            assert "not sent: the router takes at most 65536" in st["sm"].log()
            c.close()
        harness.run(go())
        no_router_loss(st)
    finally:
        st.finish()


def raised(size):
    """The router's and the sm's stanza size both at size bytes (the
    router's queue room for a few such stanzas)."""
    return ({"stanza-size": str(size), "queue-max": str(8 * size)},
            "<limits><router-stanza-size>%d</router-stanza-size></limits>" % size)


def test_raised_limit_big_message_delivered_and_link_kept():
    """With the router and the sm at 512 KiB, a 300 KB message between two
    online users (well over the 256 KiB parser default) reaches bob whole,
    and the sm keeps its router link (it reads the router at its
    <router-stanza-size>, not at the default)."""
    router, sm = raised(512 * 1024)
    st = stack(sm, router_limits=router)
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            b = await login(c, "bob@%s/b" % st.domain)
            a.send(msg(b.jid, "w" * 300000, "big"))
            m = await b.recv(is_id("big"), what="the 300 KB message")
            assert m.get("type") == "chat" and len(m.find(q("body")).text) == 300000
            a.send(msg(b.jid, "after", "after"))
            m = await b.recv(is_id("after"), what="a later message")
            assert m.find(q("body")).text == "after"
            await a.nothing(lambda s: s.get("type") == "error")
            c.close()
        harness.run(go())
        no_router_loss(st)
    finally:
        st.finish()


def test_row_stored_over_a_lowered_limit_answered_at_delivery():
    """A 600 KB message stored offline while the router and the sm took
    1 MiB; the sm restarted at 512 KiB: at bob's login the row (our own
    output) is still read, its sender gets policy-violation (modify), and
    it is deleted, not dropped unanswered as unreadable."""
    router, sm = raised(1024 * 1024)
    st = stack(sm, router_limits=router)
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            a.send(msg("bob@%s" % st.domain, "v" * 600000, "old"))
            await offline_reaches(st, 1, "the 600 KB message was not stored")
            await a.nothing(is_id("old"))
            c.close()
            assert st["sm"].stop() == 0
            st.extra["sm"] = "<limits><router-stanza-size>512k</router-stanza-size></limits>"
            st._write_sm()  # a new Daemon for the same log: waits for its own "sm ready"
            st["sm"].start()
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            b = await login(c, "bob@%s/b" % st.domain)
            e = await a.recv(is_id("old"), what="the answer for the stored message")
            assert error_of(e) == ("modify", "policy-violation"), error_of(e)
            assert e.find(q("body")) is None
            await b.nothing(lambda s: s.tag == q("message"))
            await offline_reaches(st, 0)
            log = st["sm"].log()
            assert "too large for the router: deleted" in log and "unreadable" not in log
            c.close()
        harness.run(go())
    finally:
        st.finish()


def envelope(st, c2s, sid, stanza):
    """The r:route the sm sends stanza (as it serialises it: attributes in
    the order the client gave them, from last) in to session sid on c2s."""
    return "<r:route to='%s' from='%s' sid='%s'>%s</r:route>" % (c2s, st.domain, sid, stanza)


def sized(st, c2s, sid, frm, to, mid, type, env_len):
    """The message text (as the sm serialises it) whose envelope to sid on
    c2s has env_len bytes."""
    def text(n):
        return "<message to='%s' type='%s' id='%s' from='%s'><body>%s</body></message>" % (
            to, type, mid, frm, "r" * n)
    n = env_len - len(envelope(st, c2s, sid, text(0)))
    assert n > 0
    return text(n)


def client_form(stanza):
    """A stanza as the sm sends it, as its client sent it (without from)."""
    el = ET.fromstring(stanza)
    del el.attrib["from"]
    return ET.tostring(el, encoding="unicode")


def test_delivery_keeps_room_for_its_return():
    """What the sm delivers leaves room under <router-stanza-size> for the
    error attribute of its return: a message whose envelope would be within
    that room of the limit is answered with policy-violation, not sent; one
    at the largest size that leaves the room is delivered, and when its
    session turns out gone the c2s's return of it (error='item-not-found')
    is taken by the router, and the message reaches bob's other session."""
    LIMIT = 64 * 1024
    router, sm = raised(LIMIT)
    st = stack(sm, router_limits=router)
    try:
        async def go():
            c = await FakeC2s.connect(st)
            a = await login(c, "alice@%s/a" % st.domain)
            b = await login(c, "bob@%s/b" % st.domain, presence=None)
            b2 = await login(c, "bob@%s/b2" % st.domain)
            over = sized(st, c.name, b.sid, a.jid, b.jid, "over", "chat", LIMIT - RETURN_ROOM + 1)
            a.send(client_form(over))
            e = await a.recv(is_id("over"), what="the answer for the message too near the limit")
            assert error_of(e) == ("modify", "policy-violation"), error_of(e)
            fits = sized(st, c.name, b.sid, a.jid, b.jid, "fits", "chat", LIMIT - RETURN_ROOM)
            a.send(client_form(fits))
            m = await b.recv(is_id("fits"), what="the largest message that leaves the room")
            assert ET.tostring(m, encoding="unicode").count("r") >= len(fits) - 200
            # bob/b was gone when it arrived: returned as parley-c2s does.
            c.raw.send("<r:route to='%s' from='%s' sid='%s' error='item-not-found'>%s</r:route>"
                       % (st.domain, c.name, b.sid, fits))
            b.end()
            m = await b2.recv(is_id("fits"), what="the returned message at bob's other session")
            assert len(m.find(q("body")).text) == len(ET.fromstring(fits).find("body").text)
            await a.nothing(is_id("fits"))
            await b2.nothing(is_id("over"))
            c.close()
        harness.run(go())
        no_router_loss(st)
    finally:
        st.finish()


def test_fan_out_checked_against_the_longest_envelope():
    """A headline to bob's bare JID goes to both his sessions, on c2s-1 and
    on c2s-10 (whose envelope is a byte longer): sized to fit only the
    shorter, it goes to neither, and alice gets one policy-violation; one a
    byte smaller reaches both."""
    LIMIT = 64 * 1024
    router, sm = raised(LIMIT)
    st = SmStack(c2s=10, extra={"sm": sm}, router_limits=router)
    st.start()
    for u in ("alice", "bob"):
        st.add_user(u, "pw")
    try:
        async def go():
            c1 = await FakeC2s.connect(st, "c2s-1")
            c10 = await FakeC2s.connect(st, "c2s-10")
            a = await login(c1, "alice@%s/a" % st.domain)
            b1 = await login(c1, "bob@%s/b1" % st.domain)
            b10 = await login(c10, "bob@%s/b10" % st.domain)
            bob = "bob@%s" % st.domain
            for mid, room in (("h-over", RETURN_ROOM), ("h-fits", RETURN_ROOM + 1)):
                h = sized(st, "c2s-1", b1.sid, a.jid, bob, mid, "headline", LIMIT - room)
                assert len(envelope(st, "c2s-10", b10.sid, h)) == LIMIT - room + 1
                a.send(client_form(h))
            e = await a.recv(is_id("h-over"), what="the answer for the headline")
            assert error_of(e) == ("modify", "policy-violation"), error_of(e)
            for s in (b1, b10):
                await s.recv(is_id("h-fits"), what="the headline that fits both")
                await s.nothing(is_id("h-over"))
            await a.nothing(is_id("h-over"))
            await a.nothing(is_id("h-fits"))
            c1.close()
            c10.close()
        harness.run(go())
        no_router_loss(st)
    finally:
        st.finish()
