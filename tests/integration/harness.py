"""harness.py - helpers for Parley's integration tests (tests/integration).

What lives here:
  - Router: one parley-router process with its config in a private directory
    (router.xml, router-users.xml, secret files), started, killed, restarted,
    stopped and inspected (log, pid, VmRSS) by the tests. conftest.py wraps it
    in the `router` fixture.
  - Raw: a component connection written by hand on an asyncio socket (TCP or
    Unix), for what a library would refuse to send: internal `r:` elements,
    spoofed headers, garbage, a component that stops reading.
  - Comp: slixmpp's ComponentXMPP, the real external component, with an inbox
    queue and futures for the events the tests wait on.
  - run(): runs one test coroutine on a fresh event loop with an overall bound.

Everything a test waits for is bounded (asyncio.wait_for); no sleep is ever
an assertion. The components run on the test's event loop; the router and
parley-echo are child processes owned by the Router object / the test.
"""

import asyncio
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

NS_STREAM = "http://etherx.jabber.org/streams"
NS_COMPONENT = "jabber:component:accept"
NS_ROUTER = "urn:parley:router"
NS_STREAM_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"

# Bounds on waiting. Generous: the router runs under ASan in tests.
WAIT = 5.0
START_WAIT = 15.0
STOP_WAIT = 15.0

REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def build_dir():
    """The build tree whose binaries are tested (env PARLEY_BUILD)."""
    return os.path.abspath(os.environ.get("PARLEY_BUILD", os.path.join(REPO, "build", "asan")))


def binary(rel):
    """Path of a built program; a missing one fails loudly, never skips."""
    path = os.path.join(build_dir(), rel)
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            "%s is not built (looked for %s). Build it first (tools/run-tests, or "
            "`make` in the build dir) or point PARLEY_BUILD at a build tree." % (rel, path))
    return path


def handshake_digest(stream_id, secret):
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro, timeout=120):
    """Run one test coroutine on a new loop; the whole test is bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _why(what):
    return what() if callable(what) else what


def poll(cond, what, timeout=WAIT, step=0.05):
    """Wait (bounded) until cond() is true, looking every step seconds;
    past timeout an AssertionError saying what (a string, or a callable
    that gives one when it fails, e.g. a log's tail)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, _why(what)
        time.sleep(step)


async def apoll(cond, what, timeout=WAIT, step=0.05):
    """poll() for a coroutine: the loop runs while it waits."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, _why(what)
        await asyncio.sleep(step)


def stream_error_condition(el):
    """The condition name of a <stream:error>, or None if el is not one."""
    if el is None or el.tag != "{%s}error" % NS_STREAM:
        return None
    for child in el:
        if child.tag.startswith("{%s}" % NS_STREAM_ERR) and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return ""


def stanza_error(el):
    """(type, condition) of a stanza's <error/> child, or None."""
    err = el.find("{%s}error" % NS_COMPONENT)
    if err is None:
        err = el.find("error")
    if err is None:
        return None
    cond = None
    for child in err:
        if child.tag.startswith("{%s}" % NS_STANZA_ERR) and not child.tag.endswith("}text"):
            cond = child.tag.split("}", 1)[1]
    return err.get("type"), cond


# ---------------------------------------------------------------------------
# The router process


class Router:
    """A parley-router with its own config directory.

    components: dict name -> dict with keys secret, internal, multi, domains,
    default_route, uid, secret_in_file. The default table (see default_table)
    holds every name the tests use.
    """

    def __init__(self, limits=None, components=None):
        self.exe = binary("router/parley-router")
        # Our own directory rather than pytest's tmp_path: as root the router
        # drops to `nobody`, which must reach its files, and pytest's base
        # directory is mode 0700.
        self.dir = tempfile.mkdtemp(prefix="parley-router-")
        os.chmod(self.dir, 0o755)
        self.as_root = os.geteuid() == 0
        self.user = "nobody" if self.as_root else None
        self.port = free_port()
        self.sock = os.path.join(self.dir, "router.sock")
        self.config = os.path.join(self.dir, "router.xml")
        self.users = os.path.join(self.dir, "router-users.xml")
        self.pidfile = os.path.join(self.dir, "router.pid")
        self.logpath = os.path.join(self.dir, "router.log")
        self.limits = {
            "stanza-size": "262144",
            "queue-max": "262144",
            "handshake-timeout": "10s",
            "max-connections": "1024",
        }
        self.limits.update(limits or {})
        self.components = components if components is not None else default_table()
        self.proc = None
        self.exits = []  # return codes of earlier processes (restart)
        self.write_config()

    # ---- config

    def secret(self, name):
        return self.components[name]["secret"]

    def secret_file(self, name):
        """A 0600 file holding name's secret (written for every component,
        so parley-echo can use --secret-file whatever the table says)."""
        return os.path.join(self.dir, "secrets", name + ".secret")

    def _own(self, path):
        """Make a file the dropped router must read belong to it."""
        if self.as_root:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def write_config(self):
        sdir = os.path.join(self.dir, "secrets")
        os.makedirs(sdir, exist_ok=True)
        os.chmod(sdir, 0o755)
        lines = ["<components>"]
        for name, c in self.components.items():
            path = self.secret_file(name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(c["secret"] + "\n")
            self._own(path)
            attrs = " name='%s'" % name
            if c.get("internal"):
                attrs += " internal='true'"
            if c.get("multi"):
                attrs += " multi='true'"
            if c.get("default_route"):
                attrs += " default-route='true'"
            if c.get("uid") is not None:
                attrs += " uid='%d'" % c["uid"]
            lines.append("  <component%s>" % attrs)
            if c.get("secret_in_file", True):
                lines.append("    <secret file='%s'/>" % path)
            else:
                lines.append("    <secret>%s</secret>" % c["secret"])
            for d in c.get("domains", ()):
                lines.append("    <domain>%s</domain>" % d)
            lines.append("  </component>")
        lines.append("</components>")
        with open(self.users, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.users, 0o644)

        limits = "".join("    <%s>%s</%s>\n" % (k, v, k) for k, v in self.limits.items())
        user = "  <user>%s</user>\n" % self.user if self.user else ""
        with open(self.config, "w") as f:
            f.write(
                "<router>\n%s"
                "  <pidfile>%s</pidfile>\n"
                "  <log><level>debug</level></log>\n"
                "  <max-open-files>4096</max-open-files>\n"
                "  <users>%s</users>\n"
                "  <listen>\n"
                "    <unix path='%s' mode='0660'/>\n"
                "    <tcp address='127.0.0.1' port='%d'/>\n"
                "  </listen>\n"
                "  <limits>\n%s  </limits>\n"
                "</router>\n" % (user, self.pidfile, self.users, self.sock, self.port, limits))
        os.chmod(self.config, 0o644)

    # ---- process

    def env(self):
        env = dict(os.environ)
        # Leak checks at exit. A small quarantine: ASan otherwise keeps up to
        # 256 MB of freed memory resident, which would hide (or fake) growth
        # in the backpressure test's VmRSS bound.
        env["ASAN_OPTIONS"] = "detect_leaks=1:quarantine_size_mb=16:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        return env

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.logpath, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.exe, "-f", "-c", self.config], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, env=self.env())
        finally:
            log.close()
        deadline = time.monotonic() + START_WAIT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("parley-router exited with %d at start-up:\n%s" %
                                     (self.proc.returncode, self.log()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if os.path.exists(self.sock):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("parley-router did not listen on 127.0.0.1:%d within "
                                     "%.0fs:\n%s" % (self.port, START_WAIT, self.log()))
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: the crash a restart must survive."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_WAIT)
        self.exits.append(self.proc.returncode)

    def restart(self):
        if self.running():
            self.kill()
        self.start()

    def signal(self, signum):
        self.proc.send_signal(signum)

    def stop(self):
        """SIGTERM and the exit code (None: it did not exit in time, killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    async def wait_log(self, pattern, count=1, timeout=WAIT):
        """Wait until the log has count lines matching the regex (bounded)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [l for l in self.log().splitlines() if rx.search(l)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError("no log line matching %r within %.1fs" % (pattern, timeout))
            await asyncio.sleep(0.02)

    def sanitizer_errors(self):
        text = self.log()
        return [l for l in text.splitlines()
                if "ERROR: AddressSanitizer" in l or "ERROR: LeakSanitizer" in l
                or "Sanitizer has encountered a fatal error" in l or "runtime error:" in l]

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- connections

    def tcp(self):
        return ("tcp", "127.0.0.1", self.port)

    def unix(self):
        return ("unix", self.sock)

    async def raw(self, addr=None):
        return await Raw.connect(addr or self.tcp())

    async def raw_component(self, name, addr=None, secret=None):
        """A raw connection through a successful handshake as name."""
        internal = bool(self.components.get(name, {}).get("internal"))
        r = await self.raw(addr or (self.unix() if internal else self.tcp()))
        await r.open_stream(name, internal=internal)
        el = await r.handshake(self.secret(name) if secret is None else secret)
        assert el.tag == "{%s}handshake" % NS_COMPONENT, \
            "handshake of %s refused: %s" % (name, ET.tostring(el))
        return r

    async def comp(self, name, secret=None, timeout=WAIT):
        """A slixmpp component for name that has completed its handshake."""
        c = Comp(name, self.secret(name) if secret is None else secret, self.port)
        c.connect()
        await c.wait_started(timeout)
        return c


def default_table():
    """Every component name the tests use, with a fresh random secret."""
    me = os.getuid()

    def sec():
        return secrets.token_hex(16)

    return {
        # external components (slixmpp)
        "a.test": {"secret": sec()},
        "b.test": {"secret": sec(), "domains": ["b-alias.test"], "secret_in_file": False},
        "c.test": {"secret": sec()},
        "fresh.test": {"secret": sec()},
        "flood.test": {"secret": sec()},
        "sink.test": {"secret": sec()},
        "echo.test": {"secret": sec()},
        # internal daemons
        "sm": {"secret": sec(), "internal": True, "multi": True, "uid": me,
               "domains": ["example.test"]},
        "sm-other": {"secret": sec(), "internal": True, "domains": ["example.test"]},
        "c2s-1": {"secret": sec(), "internal": True, "uid": me},
        "c2s-2": {"secret": sec(), "internal": True, "secret_in_file": False},
        "s2s": {"secret": sec(), "internal": True, "default_route": True,
                "domains": ["s2s.test"]},
        "echo-int": {"secret": sec(), "internal": True, "domains": ["echo-int.test"]},
        "wrong-uid": {"secret": sec(), "internal": True, "uid": 54321},
    }


# ---------------------------------------------------------------------------
# Raw component connections


class Raw:
    """A component stream written by hand.

    A reader task feeds every byte to an incremental XML parser and queues
    the stream's top-level elements; EOF queues None. stop_reading() cancels
    the reader, after which the kernel buffers fill and the peer sees a
    component that does not read.
    """

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.parser = ET.XMLPullParser(("start", "end"))
        self.depth = 0
        self.root = None
        self.header = None  # the peer's stream header (an Element, no children)
        self.header_seen = asyncio.Event()
        self.queue = asyncio.Queue()
        self.received = bytearray()  # every byte received, for byte-level checks
        self.keep_bytes = True
        self.eof = False
        self.parse_error = None
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, addr):
        if addr[0] == "unix":
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(addr[1], limit=1 << 20), WAIT)
        else:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(addr[1], addr[2], limit=1 << 20), WAIT)
        return cls(reader, writer)

    async def _read(self):
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                if self.keep_bytes:
                    self.received += data
                if self.parse_error is None:
                    self._feed(data)
        except asyncio.CancelledError:
            raise  # stop_reading(), not the end of the connection
        except (ConnectionError, OSError):
            pass
        self.eof = True
        self.header_seen.set()
        self.queue.put_nowait(None)

    def _feed(self, data):
        try:
            self.parser.feed(data)
            for event, el in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                    if self.depth == 1:
                        self.root = el
                        self.header = el
                        self.header_seen.set()
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.queue.put_nowait(el)
                        self.root.remove(el)
        except ET.ParseError as e:
            self.parse_error = e

    def reset(self):
        """A fresh parser for a restarted stream (after STARTTLS or SASL):
        the next header is the peer's new one."""
        self.parser = ET.XMLPullParser(("start", "end"))
        self.depth = 0
        self.root = None
        self.header = None
        self.header_seen.clear()
        self.parse_error = None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.writer.write(data)

    async def drain(self, timeout=WAIT):
        await asyncio.wait_for(self.writer.drain(), timeout)

    async def open_stream(self, to, internal=False, timeout=WAIT):
        """Send a component stream header (declaring the r: prefix for an
        internal component), wait for the router's."""
        to_attr = "" if to is None else " to='%s'" % to
        if internal:
            to_attr += " xmlns:r='%s'" % NS_ROUTER
        self.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s'%s>" %
                  (NS_COMPONENT, NS_STREAM, to_attr))
        try:
            await asyncio.wait_for(self.header_seen.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("no stream header from the router within %.1fs" % timeout)
        return self.header

    async def handshake(self, secret, timeout=WAIT):
        """Send the handshake for the header's id; the router's answer."""
        assert self.header is not None, "no stream header from the router"
        sid = self.header.get("id")
        assert sid, "router header without id: %r" % self.header.attrib
        self.send("<handshake>%s</handshake>" % handshake_digest(sid, secret))
        try:
            el = await self.recv(timeout)
        except asyncio.TimeoutError:
            raise AssertionError("no answer to the handshake within %.1fs" % timeout)
        assert el is not None, "router closed the stream instead of answering the handshake"
        return el

    async def recv(self, timeout=WAIT):
        """The next top-level element, or None at EOF."""
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def expect(self, pred, timeout=WAIT, what="element"):
        """Skip elements until pred(el) holds; the matching element."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            try:
                el = await self.recv(max(left, 0.001))
            except asyncio.TimeoutError:
                raise AssertionError("no %s within %.1fs; got %s" %
                                     (what, timeout, [ET.tostring(e)[:300] for e in seen]))
            if el is None:
                raise AssertionError("stream closed while waiting for %s; got %s" %
                                     (what, [ET.tostring(e)[:300] for e in seen]))
            if pred(el):
                return el
            seen.append(el)

    async def expect_closed(self, timeout=WAIT):
        """Wait for EOF; every element received on the way."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                el = await self.recv(max(left, 0.001))
            except asyncio.TimeoutError:
                raise AssertionError("connection still open after %.1fs; got %s" %
                                     (timeout, [ET.tostring(e)[:300] for e in got]))
            if el is None:
                return got
            got.append(el)

    async def expect_stream_error(self, cond, timeout=WAIT):
        """The peer sends <stream:error><cond/> and closes the connection."""
        got = await self.expect_closed(timeout)
        conds = [stream_error_condition(e) for e in got]
        assert cond in conds, "expected stream error %s, got %s" % (
            cond, [ET.tostring(e)[:300] for e in got])
        return got

    def stop_reading(self):
        self.task.cancel()

    def resume_reading(self):
        self.task = asyncio.ensure_future(self._read())

    def close(self):
        self.task.cancel()
        try:
            self.writer.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# slixmpp components


class Comp(slixmpp.ComponentXMPP):
    """An external component on slixmpp with what the tests observe:
    inbox (every message/iq/presence), stream_errors, and futures for
    the handshake and the disconnection. It answers nothing by itself: an
    iq a test leaves unanswered stays unanswered.
    """

    def __init__(self, jid, secret, port):
        super().__init__(jid, secret, "127.0.0.1", port)
        loop = asyncio.get_running_loop()
        self.inbox = asyncio.Queue()
        self.stream_errors = []
        self.started = loop.create_future()
        self.gone = loop.create_future()
        for kind in ("message", "iq", "presence"):
            self.register_handler(Callback(
                "parley-%s" % kind, MatchXPath("{%s}%s" % (NS_COMPONENT, kind)),
                self.inbox.put_nowait))
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("stream_error", self._on_stream_error)
        self.add_event_handler("disconnected", self._on_gone)
        # slixmpp retries a refused connect forever; one try is what we test.
        self.add_event_handler("connection_failed", self._on_gone)

    def _on_start(self, _):
        if not self.started.done():
            self.started.set_result(True)

    def _on_stream_error(self, err):
        self.stream_errors.append(err["condition"])

    def _on_gone(self, reason):
        if not self.gone.done():
            self.gone.set_result(reason)

    async def wait_started(self, timeout=WAIT):
        done, _ = await asyncio.wait({self.started, self.gone}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self.started in done:
            return
        self.cancel_connection_attempt()
        if self.gone in done:
            raise AssertionError("%s: connection ended before the handshake completed "
                                 "(stream errors %s, reason %r)" %
                                 (self.boundjid, self.stream_errors, self.gone.result()))
        raise AssertionError("%s: no handshake within %.1fs" % (self.boundjid, timeout))

    async def wait_gone(self, timeout=WAIT):
        """Wait until the connection ended; the reason slixmpp gave."""
        done, _ = await asyncio.wait({self.gone}, timeout=timeout)
        if not done:
            raise AssertionError("%s: still connected after %.1fs (stream errors %s)" %
                                 (self.boundjid, timeout, self.stream_errors))
        return self.gone.result()

    async def recv(self, timeout=WAIT):
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def expect(self, pred, timeout=WAIT, what="stanza"):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            try:
                st = await self.recv(max(left, 0.001))
            except asyncio.TimeoutError:
                raise AssertionError("%s: no %s within %.1fs; got %s" %
                                     (self.boundjid, what, timeout, [str(s)[:300] for s in seen]))
            if pred(st):
                return st
            seen.append(st)

    async def close(self, timeout=WAIT):
        self.cancel_connection_attempt()
        if self.transport is not None and not self.gone.done():
            self.disconnect(wait=1.0)
            try:
                await self.wait_gone(timeout)
            except asyncio.TimeoutError:
                self.abort()


def ping_iq(comp, ito, ifrom, iq_id):
    """An <iq type='get'><ping xmlns='urn:xmpp:ping'/></iq> ready to send."""
    iq = comp.make_iq(id=iq_id, ito=ito, ifrom=ifrom, itype="get")
    iq.xml.append(ET.Element("{urn:xmpp:ping}ping"))
    return iq


async def close_all(*conns):
    for c in conns:
        if c is None:
            continue
        if isinstance(c, Comp):
            await c.close()
        else:
            c.close()


# ---------------------------------------------------------------------------
# parley-echo


class Echo:
    """A parley-echo process (common/component) with its stderr in a file."""

    def __init__(self, router, name, internal=False, binds=(), via="tcp"):
        self.exe = binary("tests/integration/parley-echo")
        self.logpath = os.path.join(router.dir, "echo-%s.log" % name)
        where = ("tcp:127.0.0.1:%d" % router.port) if via == "tcp" else ("unix:" + router.sock)
        args = [self.exe, "--router", where, "--name", name,
                "--secret-file", router.secret_file(name)]
        if internal:
            args.append("--internal")
        for b in binds:
            args += ["--bind", b]
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        log = open(self.logpath, "wb")
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=env)
        finally:
            log.close()

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def ready_count(self):
        return len(re.findall(r"\bready\b", self.log()))

    async def wait_ready(self, count, timeout=START_WAIT):
        """Wait until the log says "ready" count times (bounded poll)."""
        deadline = time.monotonic() + timeout
        while self.ready_count() < count:
            if self.proc.poll() is not None:
                raise AssertionError("parley-echo exited with %d:\n%s" %
                                     (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                raise AssertionError("parley-echo logged 'ready' %d times, not %d, within "
                                     "%.0fs:\n%s" % (self.ready_count(), count, timeout,
                                                     self.log()))
            await asyncio.sleep(0.02)

    def stop(self):
        """SIGTERM; the exit code (None if it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
