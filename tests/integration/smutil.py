"""smutil.py - helpers for the sm's integration tests (test_sm_*.py).

  SmStack: a stack.Stack whose c2s processes are not started, so a test can
      speak as c2s-1 itself over the real router protocol (harness.Raw):
      PG + router + parley-sm only. start() starts them; finish() stops them
      and fails on a non-zero exit or a sanitizer report.
  FakeC2s: a raw internal component named c2s-N speaking sm/SESSION.md:
      start()/end() sessions, send() a client's stanza in a session, and
      wait for what the sm sends to a session (recv) or as control (control).

Everything waits with a bound (harness.WAIT unless told).
"""

import asyncio
import contextlib
import os
import secrets
import subprocess
import time
import xml.etree.ElementTree as ET

import harness
import stack

NS_SESSION = "urn:parley:session"
NS_ROUTER = harness.NS_ROUTER
NS_C = harness.NS_COMPONENT
ROUTE = "{%s}route" % NS_ROUTER


def q(name, ns=NS_C):
    return "{%s}%s" % (ns, name)


class SmStack(stack.Stack):
    def __init__(self, **kw):
        kw.setdefault("c2s", 1)
        super().__init__(**kw)

    def _write_c2s(self, name):
        """No c2s process: the name is only in the router's table."""

    def stop(self):
        return {"sm": self.daemons["sm"].stop(), "router": self.router.stop()}

    def start(self):
        """Router and sm only: the tests are the c2s."""
        self.router.start()
        self.daemons["sm"].start()
        return self

    def sm_ready_count(self):
        return self.daemons["sm"].log().count("sm ready")

    def restart_sm(self, kill=False):
        """Stop (or kill) the sm and start it again, waiting for a new "sm
        ready" line (Daemon.start's check would see the old one)."""
        restart_sm(self, kill)

    def finish(self):
        """Stop everything; raise if the sm did not exit 0 or a sanitizer spoke."""
        try:
            codes = self.stop()
            # Captured by pytest: shown only with a failing test's report.
            print(self.logs()[-60000:])
            errs = self.sanitizer_errors()
            assert codes["sm"] == 0, "sm exit %r:\n%s" % (codes["sm"], self.daemons["sm"].log()[-5000:])
            assert not errs, "sanitizer reports: %s" % errs[:5]
        finally:
            self.cleanup()


def restart_sm(st, kill=False):
    """For a stack.Stack too: restart its sm and wait for its next "sm ready"."""
    sm = st.daemons["sm"]
    n = sm.log().count("sm ready")
    if kill:
        sm.kill()
    else:
        assert sm.stop() == 0, sm.log()[-3000:]
    sm.start(wait=False)
    deadline = time.monotonic() + harness.START_WAIT
    while sm.log().count("sm ready") <= n:
        assert sm.running(), "sm exited at start-up:\n" + sm.log()[-3000:]
        assert time.monotonic() < deadline, "sm not ready again:\n" + sm.log()[-3000:]
        time.sleep(0.02)


class FakeC2s:
    """Speaks as c2s-N to the sm through the real router."""

    def __init__(self, raw, name, domain):
        self.raw = raw
        self.name = name
        self.domain = domain
        self.domains = [domain]  # the sm's domains (control elements come from one)
        self.pending = []  # elements received but not yet consumed

    @classmethod
    async def connect(cls, st, name="c2s-1"):
        raw = await st.router.raw_component(name)
        return cls(raw, name, st.domain)

    def domain_of(self, jid):
        """Where a c2s routes a session's traffic: its JID's domain if the sm
        serves it (self.domains), else ours (a test of a foreign JID)."""
        d = jid.split("/", 1)[0].split("@")[-1]
        return d if d in self.domains else self.domain

    def route(self, inner, key=None, sid=None, to=None):
        attrs = " to='%s' from='%s'" % (to or self.domain, self.name)
        if key:
            attrs += " key='%s'" % key
        if sid:
            attrs += " sid='%s'" % sid
        self.raw.send("<r:route%s>%s</r:route>" % (attrs, inner))

    def start(self, jid, sid=None, resume=False, changed=False):
        """changed: the replay that follows never reached an sm (SESSION.md)."""
        sid = sid or secrets.token_hex(16)
        bare = jid.split("/", 1)[0]
        self.route("<start xmlns='%s' sid='%s' jid='%s'%s%s/>" %
                   (NS_SESSION, sid, jid, " resume='true'" if resume else "",
                    " changed='true'" if changed else ""), key=bare, to=self.domain_of(jid))
        return sid

    def end(self, sid, jid):
        """As parley-c2s: no key (every instance gets it), the bare JID in jid."""
        bare = jid.split("/")[0]
        self.route("<end xmlns='%s' sid='%s' jid='%s'/>" % (NS_SESSION, sid, bare),
                   to=self.domain_of(jid))

    async def reannounce(self, sessions, presence="<presence/>"):
        """Answer the next <announce/> as parley-c2s does (sm/SESSION.md): a
        start resume='true' per session (keyed by its user), its presence
        again, then <announced/> with the announce's round id (no key: every
        instance gets it)."""
        a = await self.control("announce")
        for s in sessions:
            self.start(s.jid, sid=s.sid, resume=True)
            if presence is not None:
                s.send(presence)
        self.announced(a.get("round"))

    def announced(self, round_id=None, to=None):
        """<announced/> (with round='round_id'), as parley-c2s sends it."""
        self.route("<announced xmlns='%s'%s/>" % (
            NS_SESSION, "" if round_id is None else " round='%s'" % round_id), to=to)

    def batch(self, fn):
        """Run fn() with every send held back, then write them all at once
        (one write: the router reads them together and the sm handles them
        one after the other, with no database answer in between)."""
        out = []
        send = self.raw.send
        self.raw.send = out.append
        try:
            fn()
        finally:
            self.raw.send = send
        send("".join(out))

    def send(self, sid, jid, stanza):
        """A client's stanza (XML text, no namespace) in session sid of jid."""
        el = ET.fromstring(stanza)
        el.set("from", jid)
        self.route(ET.tostring(el, encoding="unicode"),
                   key=jid.split("/")[0], sid=sid, to=self.domain_of(jid))

    async def _next(self, pred, timeout, what):
        for i, el in enumerate(self.pending):
            if pred(el):
                return self.pending.pop(i)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                el = await self.raw.recv(max(left, 0.001))
            except asyncio.TimeoutError:
                raise AssertionError("no %s within %.1fs; pending %s" %
                                     (what, timeout, [ET.tostring(e)[:300] for e in self.pending]))
            if el is None:
                raise AssertionError("router closed the stream while waiting for %s" % what)
            if pred(el):
                return el
            self.pending.append(el)

    async def pump(self, timeout):
        """Move what arrives within timeout to self.pending (for a test
        that looks at pending itself)."""
        with contextlib.suppress(AssertionError):
            await self._next(lambda el: False, timeout, "nothing")

    async def control(self, name, sid=None, timeout=harness.WAIT, frm=None):
        """The next control element <name sid=sid/> the sm sent us (from
        domain frm, if given)."""
        def pred(el):
            if el.tag != ROUTE or len(el) != 1 or (frm is not None and el.get("from") != frm):
                return False
            c = el[0]
            return c.tag == "{%s}%s" % (NS_SESSION, name) and (sid is None or c.get("sid") == sid)
        el = await self._next(pred, timeout, "<%s sid=%s/>" % (name, sid))
        assert el.get("from") in self.domains, el.attrib
        return el[0]

    async def recv(self, sid, pred=lambda s: True, timeout=harness.WAIT, what="stanza"):
        """The next stanza for session sid that satisfies pred."""
        def match(el):
            return (el.tag == ROUTE and el.get("sid") == sid and len(el) == 1 and
                    not el[0].tag.startswith("{%s}" % NS_SESSION) and pred(el[0]))
        return (await self._next(match, timeout, "%s for %s" % (what, sid)))[0]

    async def nothing_for(self, sid, marker_sid, marker_jid, pred=lambda s: True):
        """Assert the sm sent nothing to sid before answering a ping sent now
        in marker_sid (the sm handles a c2s's input in order, and its output
        to one c2s keeps that order)."""
        mid = "marker-" + secrets.token_hex(4)
        self.send(marker_sid, marker_jid,
                  "<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" %
                  (mid, self.domain))
        await self.recv(marker_sid, lambda s: s.get("id") == mid, what="ping marker")
        stray = [ET.tostring(e)[:300] for e in self.pending
                 if e.tag == ROUTE and e.get("sid") == sid and len(e) == 1 and pred(e[0])]
        assert not stray, "unexpected stanzas for %s: %s" % (sid, stray)

    def close(self):
        self.raw.close()


def error_of(stanza):
    """(type, condition) of a stanza's error child, or None."""
    return harness.stanza_error(stanza)


class Sess:
    """One session of a FakeC2s: what a client would do, at the protocol level."""

    def __init__(self, c2s, jid, sid):
        self.c2s = c2s
        self.jid = jid
        self.bare = jid.split("/", 1)[0]
        self.sid = sid

    def send(self, stanza):
        self.c2s.send(self.sid, self.jid, stanza)

    async def recv(self, pred=lambda s: True, what="stanza", timeout=harness.WAIT):
        return await self.c2s.recv(self.sid, pred, timeout=timeout, what=what)

    async def iq(self, xml, iq_id):
        """Send an iq (xml has id=iq_id) and return its answer."""
        self.send(xml)
        return await self.recv(lambda s: s.tag == q("iq") and s.get("id") == iq_id and
                               s.get("type") in ("result", "error"), what="answer to " + iq_id)

    async def nothing(self, pred=lambda s: True):
        """Nothing matching pred arrived for this session before the answer to
        a ping sent now (the sm's output to one session keeps its order)."""
        await self.c2s.nothing_for(self.sid, self.sid, self.jid, pred)

    def end(self):
        self.c2s.end(self.sid, self.jid)


async def login(c2s, jid, presence="<presence/>"):
    sid = c2s.start(jid)
    await c2s.control("started", sid)
    s = Sess(c2s, jid, sid)
    if presence is not None:
        s.send(presence)
    return s


def is_presence(frm=None, type=None):
    def pred(s):
        return (s.tag == q("presence") and (frm is None or s.get("from") == frm) and
                s.get("type") == type)
    return pred


def is_push(jid=None):
    def pred(s):
        if s.tag != q("iq") or s.get("type") != "set":
            return False
        query = s.find("{jabber:iq:roster}query")
        if query is None:
            return False
        item = query.find("{jabber:iq:roster}item")
        return item is not None and (jid is None or item.get("jid") == jid)
    return pred


def push_item(iq):
    return iq.find("{jabber:iq:roster}query/{jabber:iq:roster}item")


def is_message(body=None):
    def pred(s):
        if s.tag != q("message"):
            return False
        b = s.find(q("body"))
        return body is None or (b is not None and b.text == body)
    return pred


# ---- real clients (python3-slixmpp through parley-c2s)

async def client(st, user, resource, password="pw", presence=True, priority=None):
    """A logged-in slixmpp client with queues: inbox (messages), presences
    (every presence stanza) and pushes (roster pushes). Subscription
    requests are left to the test (no automatic answers). Sends initial
    presence unless presence=False."""
    import stack
    x, outcome = await stack.login(st, user, password, resource=resource)
    assert outcome == "session", "login of %s/%s: %s" % (user, resource, outcome)
    x.register_plugin("xep_0203")  # delay stamps on offline messages
    x.roster.auto_authorize = None
    x.roster.auto_subscribe = False
    x.presences = asyncio.Queue()
    x.pushes = asyncio.Queue()
    x.errors = asyncio.Queue()
    x.add_event_handler("presence", lambda p: x.presences.put_nowait(p))
    x.add_event_handler("roster_update", lambda iq: x.pushes.put_nowait(iq))
    x.add_event_handler("message_error", lambda m: x.errors.put_nowait(m))
    if presence:
        x.send_presence(ppriority=priority)
    return x


async def wait_for(queue, pred, what, timeout=harness.WAIT):
    """The first item of queue with pred(item); the others stay queued, in order."""
    deadline = asyncio.get_running_loop().time() + timeout
    seen = []
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            item = await asyncio.wait_for(queue.get(), max(left, 0.001))
        except asyncio.TimeoutError:
            raise AssertionError("no %s within %.1fs; saw %s" %
                                 (what, timeout, [str(s)[:200] for s in seen]))
        if pred(item):
            rest = []
            while not queue.empty():
                rest.append(queue.get_nowait())
            for x in seen + rest:
                queue.put_nowait(x)
            return item
        seen.append(item)


async def logout_all(*clients):
    import stack
    for c in clients:
        try:
            await stack.logout(c)
        except Exception:
            pass


class TableLock:
    """An open transaction (psql as postgres) holding LOCK TABLE name IN
    ACCESS EXCLUSIVE MODE: every query of the daemons on that table waits
    until release() (or close(), which also ends a lock still held)."""

    def __init__(self, st, table):
        self.st = st
        self.table = table
        self.proc = None

    async def take(self):
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.st.pg.dsn("postgres")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.proc.stdin.write("BEGIN;\nLOCK TABLE %s IN ACCESS EXCLUSIVE MODE;\n\\echo locked\n"
                              % self.table)
        self.proc.stdin.flush()
        line = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline),
            harness.WAIT)
        assert line.strip() == "locked", "LOCK TABLE %s: %s" % (self.table, line)

    def release(self):
        self.proc.stdin.write("COMMIT;\n")
        self.proc.stdin.close()
        assert self.proc.wait(harness.WAIT) == 0

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---- helpers for the tests with real clients (test_sm_client, test_sm_e2e_*)

def jid(st, user, res=None):
    """user@domain of st, with /res if given."""
    return "%s@%s%s" % (user, st.domain, "/" + res if res else "")


def avail(frm):
    """A predicate for an available presence from the full JID frm."""
    return lambda p: str(p["from"]) == frm and p["type"] in ("available", "")


async def befriend(st, a, b):
    """Mutual subscription between the clients a and b (a asks first), both
    of which have requested their roster (so they get the pushes)."""
    A, B = a.boundjid.bare, b.boundjid.bare
    a.send_presence(pto=B, ptype="subscribe")
    await wait_for(b.presences, lambda p: p["type"] == "subscribe", "subscribe at " + B)
    b.send_presence(pto=A, ptype="subscribed")
    b.send_presence(pto=A, ptype="subscribe")
    await wait_for(a.presences, lambda p: p["type"] == "subscribe", "subscribe at " + A)
    a.send_presence(pto=B, ptype="subscribed")
    await wait_for(a.pushes, lambda iq: a.client_roster[B]["subscription"] == "both",
                   A + "'s item both")
    await wait_for(b.pushes, lambda iq: b.client_roster[A]["subscription"] == "both",
                   B + "'s item both")


# ---- offline rows and the stale roster (bounded waits)

def offline_count(st, owner="bob"):
    """How many messages owner (a local part) has stored offline."""
    _, out = st.pg.psql("SELECT count(*) FROM offline WHERE owner = '%s@%s'" % (owner, st.domain))
    return int(out.strip())


async def offline_reaches(st, n, what=None, owner="bob"):
    """Wait (bounded) until owner has n messages stored offline."""
    await harness.apoll(lambda: offline_count(st, owner) == n,
                        what or (lambda: "offline count %d, not %d" % (offline_count(st, owner), n)))


async def stale_roster(st, a):
    """Make a's roster stale: the database refuses roster_items to the sm,
    a roster set fails (internal-server-error) and so does the read that
    follows (logged); the grant is the caller's to give back."""
    st.pg.psql("REVOKE SELECT, INSERT, UPDATE ON roster_items FROM parley_sm")
    r = await a.iq("<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='carol@%s'/>"
                   "</query></iq>" % st.domain, "s1")
    assert error_of(r) == ("cancel", "internal-server-error"), error_of(r)
    await harness.apoll(lambda: "not read again" in st["sm"].log(), "no failed roster read")


def real_stack():
    """For a fixture (yield from): a whole service with one c2s and the
    users alice and bob (password pw); at the end the sm must exit 0 and
    no daemon may have printed a sanitizer report (the logs are printed:
    pytest shows them with a failing test)."""
    s = stack.Stack(c2s=1)
    s.start()
    for u in ("alice", "bob"):
        s.add_user(u, "pw")
    yield s
    try:
        codes = s.stop()
        print(s.logs()[-60000:])
        assert codes["sm"] == 0, codes
        assert not s.sanitizer_errors(), s.sanitizer_errors()[:5]
    finally:
        s.cleanup()
