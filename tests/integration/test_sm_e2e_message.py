"""test_sm_e2e_message.py - issue #6's message, iq and disco rules end to
end with real clients: python3-slixmpp through parley-c2s, the router and
parley-sm on a real PostgreSQL (stack.Stack(c2s=1)).

test_sm_message.py checks the same rules at the protocol level (a fake c2s);
here each assertion is what a client sees on its stream: RFC 6121 §8
delivery (full JID, bare JID by priority with the older session ahead,
headlines to every non-negative resource, ties to the newest presence,
priority updates, negative priorities), offline storage (XEP-0203 delay
stamps, delivered once at the next initial presence, in order, headline
dropped, groupchat and the quota bounced), a full JID that is not online
(§8.5.3), a nonexistent account, error stanzas never answered, iq to
accounts and to the server, disco (XEP-0030), ping (XEP-0199) and version
(XEP-0092).

Every client keeps every stanza it receives, in order (x.stanzas, a
filter ahead of slixmpp's own handlers). That nothing arrives is shown by
the answer to a later ping arriving first (the sm handles one user's
stanzas in order, and its output to one session keeps that order), then a
short bounded wait.
"""

import asyncio
import copy
import datetime
import os
import re
import secrets
import xml.etree.ElementTree as ET

import pytest

import harness
import stack
from smutil import client, jid, logout_all

NS = "jabber:client"
NS_STANZAS = harness.NS_STANZA_ERR
INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
DELAY = "{urn:xmpp:delay}delay"
# After a marker proved order: how long more to watch for a stray stanza.
GRACE = 0.3


def c(tag):
    return "{%s}%s" % (NS, tag)


@pytest.fixture
def st():
    s = stack.Stack(c2s=1, extra={"sm": "<limits><offline>3</offline></limits>"})
    try:
        s.start()
        for u in ("alice", "bob", "carol"):
            s.add_user(u, "pw")
    except BaseException:
        s.cleanup()
        raise
    yield s
    try:
        codes = s.stop()
        print(s.logs()[-60000:])
        assert codes["sm"] == 0, codes
        assert not s.sanitizer_errors(), s.sanitizer_errors()[:5]
    finally:
        s.cleanup()


# ---- a client that keeps every stanza

async def person(st, user, res, priority=None, presence=True):
    """A logged-in slixmpp client; x.stanzas gets a copy of every stanza it
    receives from now on, in order. With presence, its initial presence
    (with priority) is sent and its echo awaited (the sm has it then)."""
    x = await client(st, user, res, presence=False)
    x.stanzas = asyncio.Queue()
    x.st = st

    def keep(stanza):
        x.stanzas.put_nowait(copy.deepcopy(stanza.xml))
        return stanza
    x.add_filter("in", keep)
    if presence:
        await set_presence(x, priority)
    return x


async def set_presence(x, priority=None):
    """Send available presence (a fresh status to recognise it) and wait for
    its echo (RFC 6121 §4.2.2: the server sends it back to the sender)."""
    status = "s-" + secrets.token_hex(4)
    prio = "" if priority is None else "<priority>%d</priority>" % priority
    x.send_raw("<presence>%s<status>%s</status></presence>" % (prio, status))
    me = x.boundjid.full
    await expect(x, lambda el: el.tag == c("presence") and el.get("from") == me and
                 el.get("type") is None and el.findtext(c("status")) == status,
                 "echo of %s's presence" % me)


async def take(x, timeout):
    return await asyncio.wait_for(x.stanzas.get(), max(timeout, 0.001))


async def expect(x, pred, what, timeout=harness.WAIT):
    """The first stanza with pred(stanza); the others stay queued, in order."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = []
    try:
        while True:
            try:
                el = await take(x, deadline - loop.time())
            except asyncio.TimeoutError:
                raise AssertionError("%s: no %s within %.1fs; saw %s" % (
                    x.boundjid.full, what, timeout, [short(e) for e in seen]))
            if pred(el):
                return el
            seen.append(el)
    finally:
        rest = []
        while not x.stanzas.empty():
            rest.append(x.stanzas.get_nowait())
        for el in seen + rest:
            x.stanzas.put_nowait(el)


def short(el):
    return ET.tostring(el, encoding="unicode")[:300]


def ping(to, iq_id):
    return "<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % (iq_id, to)


def answer_to(iq_id):
    return lambda el: (el.tag == c("iq") and el.get("id") == iq_id and
                       el.get("type") in ("result", "error"))


async def iq(x, xml, iq_id):
    """Send an iq (xml, whose id is iq_id) and return its answer."""
    x.send_raw(xml)
    return await expect(x, answer_to(iq_id), "answer to iq " + iq_id)


async def settled(x, to):
    """A ping to `to` answered: what x sent to `to` before was handled (the sm
    handles one user's, or the server's, stanzas in order)."""
    mid = "settle-" + secrets.token_hex(4)
    await iq(x, ping(to, mid), mid)


async def nothing(x, pred, what, to=None):
    """Nothing with pred(stanza) reaches x before the answer to a ping sent
    now to `to` (the server by default), nor within GRACE after it. What
    else arrived stays queued."""
    mid = "mark-" + secrets.token_hex(4)
    x.send_raw(ping(to or x.st.domain, mid))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + harness.WAIT
    got = []
    while True:
        try:
            el = await take(x, deadline - loop.time())
        except asyncio.TimeoutError:
            raise AssertionError("%s: no answer to the marker ping" % x.boundjid.full)
        if answer_to(mid)(el):
            break
        got.append(el)
    try:
        while True:
            got.append(await take(x, GRACE))
    except asyncio.TimeoutError:
        pass
    bad = [short(el) for el in got if pred(el)]
    assert not bad, "%s got %s: %s" % (x.boundjid.full, what, bad)
    for el in got:
        x.stanzas.put_nowait(el)


def msg(to, body, type="chat", mid=None):
    return "<message to='%s' type='%s' id='%s'><body>%s</body></message>" % (
        to, type, mid or "m-" + secrets.token_hex(4), body)


def is_msg(body=None):
    return lambda el: (el.tag == c("message") and el.get("type") != "error" and
                       (body is None or el.findtext(c("body")) == body))


def any_msg(el):
    return el.tag == c("message")


def with_id(i):
    return lambda el: el.get("id") == i


def err_of(el):
    """(type, condition) of a stanza's error child, or None."""
    e = el.find(c("error"))
    if e is None:
        return None
    cond = [ch.tag.split("}", 1)[1] for ch in e
            if ch.tag.startswith("{%s}" % NS_STANZAS) and not ch.tag.endswith("}text")]
    return e.get("type"), (cond[0] if cond else None)


async def bounced(x, mid, frm, cond="service-unavailable"):
    """x gets its stanza mid back as an error from frm with condition cond."""
    el = await expect(x, with_id(mid), "error for " + mid)
    assert el.get("type") == "error", short(el)
    assert el.get("from") == frm, short(el)
    assert err_of(el)[1] == cond, short(el)
    return el


async def stored(st, owner, n):
    """Wait (bounded) until owner has n offline rows: a client cannot see a
    store end, and the next step needs it done. Not an assertion of its own."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + harness.WAIT
    while True:
        out = st.pg.psql("SELECT count(*) FROM offline WHERE owner = :'o'",
                         variables={"o": owner})[1].strip()
        if out == str(n):
            return
        assert loop.time() < deadline, "%s has %s offline messages, not %d" % (owner, out, n)
        await asyncio.sleep(0.05)


STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\Z")


def check_delay(st, m, since):
    """XEP-0203: <delay from=DOMAIN stamp=UTC/>, stamp in [since, now]."""
    d = m.find(DELAY)
    assert d is not None, "no delay: " + short(m)
    assert d.get("from") == st.domain, short(m)
    s = d.get("stamp") or ""
    assert STAMP.match(s), "stamp %r is not a UTC time" % s
    t = datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert since - datetime.timedelta(seconds=1) <= t <= now, (s, since, now)


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


# ---- delivery (RFC 6121 §8.5.2, §8.5.3)

def test_full_jid_and_bare_jid_to_the_older_higher_priority(st):
    """A full JID: that session only. The bare JID: the highest priority,
    here the OLDER session (a server sending to the newest would fail)."""
    async def go():
        a = await person(st, "alice", "home")
        b1 = await person(st, "bob", "one", priority=5)
        b2 = await person(st, "bob", "two", priority=1)
        try:
            a.send_raw(msg(jid(st, "bob", "two"), "to two"))
            m = await expect(b2, is_msg("to two"), "message to bob/two")
            assert m.get("from") == jid(st, "alice", "home")
            await nothing(b1, is_msg("to two"), "the message to bob/two")
            a.send_raw(msg(jid(st, "bob"), "to bare"))
            m = await expect(b1, is_msg("to bare"), "bare message at priority 5")
            assert m.get("from") == jid(st, "alice", "home")
            await nothing(b2, is_msg("to bare"), "the bare message (priority 1)")
            # A headline to the bare JID: every non-negative resource (the policy).
            a.send_raw(msg(jid(st, "bob"), "news", "headline"))
            await expect(b1, is_msg("news"), "the headline at bob/one")
            await expect(b2, is_msg("news"), "the headline at bob/two")
            await nothing(a, lambda el: el.get("type") == "error", "an error")
        finally:
            await logout_all(a, b1, b2)
    harness.run(go())


def test_tie_newest_presence_and_priority_updates(st):
    """Ties go to the session whose presence is newest (mod_message.c's
    policy); a presence update moves the target; with only negative
    priorities the message is stored, and comes with a delay stamp when a
    session turns non-negative."""
    async def go():
        a = await person(st, "alice", "home")
        b1 = await person(st, "bob", "one", priority=3)
        b2 = await person(st, "bob", "two", priority=3)
        B = jid(st, "bob")
        try:
            async def to_bare(body, got, other):
                a.send_raw(msg(B, body))
                await expect(got, is_msg(body), "%r at %s" % (body, got.boundjid.full))
                await nothing(other, is_msg(body), repr(body))
            await to_bare("tie", b2, b1)  # b2's presence is the newer
            await set_presence(b1, 3)  # same priority, newer presence
            await to_bare("tie again", b1, b2)
            await set_presence(b2, 10)
            await to_bare("b2 higher", b2, b1)
            await set_presence(b2, -1)
            await to_bare("b2 negative", b1, b2)
            await set_presence(b1, -2)
            since = utcnow()
            a.send_raw(msg(B, "all negative"))
            await settled(a, B)
            await nothing(b1, is_msg("all negative"), "a message at priority -2")
            await nothing(b2, is_msg("all negative"), "a message at priority -1")
            await nothing(a, lambda el: el.get("type") == "error", "an error")
            await set_presence(b2, 0)
            m = await expect(b2, is_msg("all negative"), "the stored message at priority 0")
            check_delay(st, m, since)
            await nothing(b1, is_msg("all negative"), "the stored message")
        finally:
            await logout_all(a, b1, b2)
    harness.run(go())


def test_offline_stored_and_delivered_once_at_initial_presence(st):
    async def go():
        a = await person(st, "alice", "home")
        B = jid(st, "bob")
        since = utcnow()
        try:
            # chat and normal to the bare JID, chat to a full JID not online
            # (§8.5.3.2.1: as to the bare JID): stored, in this order.
            a.send_raw(msg(B, "first", "chat"))
            a.send_raw(msg(B, "second", "normal"))
            a.send_raw(msg(jid(st, "bob", "gone"), "third", "chat"))
            # headline: not stored, and no error (§8.5.2.2.1).
            a.send_raw(msg(B, "news", "headline", mid="hl"))
            # groupchat to the bare JID: service-unavailable (§8.5.2.2.1).
            a.send_raw(msg(B, "room", "groupchat", mid="gc"))
            await bounced(a, "gc", B)
            await nothing(a, with_id("hl"), "an answer to the headline", to=B)
            await stored(st, B, 3)
            await logout_all(a)
            # A session without presence gets nothing (§8.5.2.2.1: only an
            # available resource gets messages).
            b = await person(st, "bob", "desk", presence=False)
            await nothing(b, any_msg, "a message before its initial presence", to=B)
            assert b.inbox.empty(), b.inbox.get_nowait()
            await set_presence(b)
            for body in ("first", "second", "third"):
                m = await expect(b, any_msg, "offline message %r" % body)
                assert m.findtext(c("body")) == body, short(m)
                assert m.get("from") == jid(st, "alice", "home"), short(m)
                check_delay(st, m, since)
            await nothing(b, any_msg, "another message (the headline?)")
            await logout_all(b)
            # Delivered once: the next session gets none of them.
            b = await person(st, "bob", "desk2")
            await nothing(b, any_msg, "an offline message again", to=B)
            await logout_all(b)
        finally:
            await logout_all(a)
    harness.run(go())


def test_offline_quota(st):
    """<limits><offline>3</offline>: the fourth message to an offline user
    bounces with service-unavailable and is not stored."""
    async def go():
        a = await person(st, "alice", "home")
        C = jid(st, "carol")
        try:
            for i in range(3):
                a.send_raw(msg(C, "q%d" % i, mid="q%d" % i))
            await stored(st, C, 3)
            a.send_raw(msg(C, "over", mid="over"))
            await bounced(a, "over", C)
            await nothing(a, lambda el: el.get("id") in ("q0", "q1", "q2"),
                          "an error for a message within the quota", to=C)
            await logout_all(a)
            cl = await person(st, "carol", "desk")
            for i in range(3):
                m = await expect(cl, any_msg, "offline message q%d" % i)
                assert m.findtext(c("body")) == "q%d" % i, short(m)
            await nothing(cl, any_msg, "the message over the quota")
            await logout_all(cl)
        finally:
            await logout_all(a)
    harness.run(go())


def test_full_jid_not_online(st):
    """§8.5.3.2: bob is online as bob/desk; stanzas to bob/gone."""
    async def go():
        a = await person(st, "alice", "home")
        b = await person(st, "bob", "desk")
        B, gone = jid(st, "bob"), jid(st, "bob", "gone")
        try:
            a.send_raw(msg(gone, "as to bare", "chat"))
            m = await expect(b, is_msg("as to bare"), "chat to bob/gone at bob/desk")
            assert m.get("from") == jid(st, "alice", "home")
            # normal, headline, groupchat: service-unavailable (the policy in
            # mod_message.c's header; §8.5.3.2.1 allows it or silence).
            for t in ("groupchat", "headline", "normal"):
                a.send_raw(msg(gone, "t " + t, t, mid="x" + t))
                await bounced(a, "x" + t, gone)
            # An iq to the online full JID reaches that client, and its
            # answer comes back from it (slixmpp answers this one itself).
            r = await iq(a, "<iq type='get' id='iq0' to='%s'><x xmlns='urn:example:none'/>"
                         "</iq>" % jid(st, "bob", "desk"), "iq0")
            assert r.get("from") == jid(st, "bob", "desk"), short(r)
            await expect(b, with_id("iq0"), "the iq at bob/desk")
            r = await iq(a, "<iq type='get' id='iq1' to='%s'><query xmlns='jabber:iq:version'/>"
                         "</iq>" % gone, "iq1")
            assert r.get("from") == gone and err_of(r)[1] == "service-unavailable", short(r)
            # Presence to it: dropped (§8.5.3.2.3), no error, not at bob/desk.
            a.send_raw("<presence to='%s' id='pr1'><status>directed</status></presence>" % gone)
            await nothing(a, with_id("pr1"), "an answer to the directed presence", to=B)
            await nothing(b, lambda el: el.get("from", "").startswith(jid(st, "alice")),
                          "anything from alice but the chat")
        finally:
            await logout_all(a, b)
    harness.run(go())


def test_nonexistent_user(st):
    async def go():
        a = await person(st, "alice", "home")
        G = jid(st, "ghost")
        try:
            a.send_raw(msg(G, "anyone?", mid="g1"))
            await bounced(a, "g1", G)
            r = await iq(a, "<iq type='get' id='g2' to='%s'><query xmlns='%s'/></iq>" % (G, INFO),
                         "g2")
            assert r.get("from") == G and err_of(r) == ("cancel", "service-unavailable"), short(r)
            # A subscription request: unsubscribed back (§3.1.3).
            a.send_raw("<presence to='%s' type='subscribe'/>" % G)
            p = await expect(a, lambda el: el.tag == c("presence") and el.get("from") == G,
                             "presence from ghost")
            assert p.get("type") == "unsubscribed", short(p)
        finally:
            await logout_all(a)
    harness.run(go())


def test_error_stanzas_never_answered(st):
    """A message of type error reaches an online full JID; to an offline or
    a nonexistent user it is dropped: nothing back, nothing stored."""
    async def go():
        a = await person(st, "alice", "home")
        b = await person(st, "bob", "desk")
        C, G = jid(st, "carol"), jid(st, "ghost")

        def error_msg(to, mid):
            return ("<message type='error' to='%s' id='%s'><error type='cancel'>"
                    "<item-not-found xmlns='%s'/></error></message>" % (to, mid, NS_STANZAS))
        try:
            a.send_raw(error_msg(jid(st, "bob", "desk"), "e1"))
            m = await expect(b, with_id("e1"), "the error message at bob/desk")
            assert m.get("type") == "error" and m.get("from") == jid(st, "alice", "home")
            assert err_of(m)[1] == "item-not-found", short(m)
            a.send_raw(error_msg(C, "e2"))
            a.send_raw(error_msg(jid(st, "carol", "x"), "e3"))
            a.send_raw(error_msg(G, "e4"))
            await nothing(a, with_id("e1"), "an answer to an error at bob", to=jid(st, "bob"))
            await nothing(a, lambda el: el.get("id") in ("e2", "e3"),
                          "an answer to an error to offline carol", to=C)
            await nothing(a, with_id("e4"), "an answer to an error to a ghost", to=G)
            await logout_all(a)
            cl = await person(st, "carol", "desk")
            await nothing(cl, any_msg, "an error message stored offline", to=C)
            await logout_all(cl)
        finally:
            await logout_all(a, b)
    harness.run(go())


# ---- iq, disco, ping, version (RFC 6120 §10.5.3, XEP-0030, -0199, -0092)

def features(r):
    q = r.find("{%s}query" % INFO)
    assert q is not None, short(r)
    return [f.get("var") for f in q.findall("{%s}feature" % INFO)]


def identities(r):
    return [(i.get("category"), i.get("type"), i.get("name"))
            for i in r.find("{%s}query" % INFO).findall("{%s}identity" % INFO)]


def test_disco_of_server_and_account(st):
    async def go():
        a = await person(st, "alice", "home")
        D, B = st.domain, jid(st, "bob")
        try:
            def get(to, ns, i, node=""):
                return iq(a, "<iq type='get' id='%s' to='%s'><query xmlns='%s'%s/></iq>" %
                          (i, to, ns, " node='%s'" % node if node else ""), i)
            r = await get(D, INFO, "d1")
            assert r.get("type") == "result" and r.get("from") == D, short(r)
            assert identities(r) == [("server", "im", "Parley")]
            # mod_disco's own two, then each module's disco-features hook in
            # module order: message (msgoffline), ping, version; the roster
            # adds none (its versioning is a stream feature, c2s's).
            assert features(r) == [INFO, ITEMS, "msgoffline", "urn:xmpp:ping",
                                   "jabber:iq:version"], features(r)
            # An account (bob is offline): answered by the server for him.
            r = await get(B, INFO, "d2")
            assert r.get("type") == "result" and r.get("from") == B, short(r)
            assert identities(r) == [("account", "registered", None)]
            assert features(r) == [INFO, ITEMS, "urn:xmpp:ping"], features(r)
            for to, i in ((D, "d3"), (B, "d4")):
                r = await get(to, ITEMS, i)
                assert r.get("type") == "result" and r.get("from") == to, short(r)
                q = r.find("{%s}query" % ITEMS)
                assert q is not None and len(q) == 0, short(r)
            for to, ns, i in ((D, INFO, "d5"), (D, ITEMS, "d6"), (B, INFO, "d7")):
                r = await get(to, ns, i, node="no-such-node")
                assert err_of(r) == ("cancel", "item-not-found"), short(r)
        finally:
            await logout_all(a)
    harness.run(go())


def package_version():
    with open(os.path.join(harness.build_dir(), "autoconfig.h")) as f:
        return re.search(r'#define PACKAGE_VERSION "([^"]*)"', f.read()).group(1)


def test_ping_version_unknown_and_results_unanswered(st):
    async def go():
        a = await person(st, "alice", "home")
        D, B = st.domain, jid(st, "bob")
        try:
            r = await iq(a, ping(D, "p1"), "p1")
            assert r.get("type") == "result" and r.get("from") == D, short(r)
            r = await iq(a, ping(B, "p2"), "p2")  # on bob's behalf
            assert r.get("type") == "result" and r.get("from") == B, short(r)
            r = await iq(a, "<iq type='get' id='v1' to='%s'><query xmlns='jabber:iq:version'/>"
                         "</iq>" % D, "v1")
            assert r.get("type") == "result", short(r)
            v = r.find("{jabber:iq:version}query")
            assert v.findtext("{jabber:iq:version}name") == "Parley", short(r)
            assert v.findtext("{jabber:iq:version}version") == package_version(), short(r)
            assert v.find("{jabber:iq:version}os") is None, short(r)  # <os>no</os> by default
            for to, i in ((D, "u1"), (B, "u2")):
                r = await iq(a, "<iq type='get' id='%s' to='%s'><x xmlns='urn:example:none'/>"
                             "</iq>" % (i, to), i)
                assert r.get("from") == to, short(r)
                assert err_of(r) == ("cancel", "service-unavailable"), short(r)
            # Results and errors are never answered (RFC 6120 §8.2.3).
            for to, i in ((D, "r1"), (B, "r2")):
                a.send_raw("<iq type='result' id='%s' to='%s'/>" % (i, to))
                a.send_raw("<iq type='error' id='%s-e' to='%s'><error type='cancel'>"
                           "<service-unavailable xmlns='%s'/></error></iq>" % (i, to, NS_STANZAS))
                await nothing(a, lambda el: el.get("id", "").startswith(i),
                              "an answer to an iq result or error", to=to)
        finally:
            await logout_all(a)
    harness.run(go())
