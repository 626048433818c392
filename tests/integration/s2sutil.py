"""s2sutil.py - harness for the parley-s2s integration tests.

  ca = TestCA(dir)                         # a test CA made with openssl
  crt, key = ca.issue("a.test")            # SAN a.test and *.a.test
  net = Federation(mode="sasl")            # two routers, two parley-s2s
  with running(net, dns.close):            # a.test <-> b.test over static routes
      comp_a = await net.a.router.comp("svc.a.test")   # slixmpp components
      ...                                  # then: no sanitizer line, logs
                                           # printed on failure, dns.close(),
                                           # net.cleanup()

Each side (Side) is a parley-router whose table holds `s2s` (internal,
default route) and an external component svc.<domain>, plus a parley-s2s
with its own config, certificate, dialback secret and routes file. In mode
"sasl" both certificates come from the test CA that both sides trust, so
links authenticate with SASL EXTERNAL; in mode "dialback" each side trusts
a CA that did not issue the peer's certificate, so links fall back to
dialback.

S2SRaw is a hand-written server-to-server stream (for spoofing and policy
tests): plaintext, STARTTLS with an optional client certificate, SASL
EXTERNAL, with a fresh XML parser per stream as RFC 6120 restarts need.
Every wait is bounded.
"""

import asyncio
import base64
import contextlib
import os
import pwd
import random
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

import harness
from stack import Daemon

NS_SERVER = "jabber:server"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_DB = "jabber:server:dialback"


_used_ports = set()


def free_port():
    """A TCP port free on 127.0.0.1 and ::1, below the kernel's ephemeral
    range: harness.free_port() (bind to port 0) and every outgoing
    connection take ports from that range, so a port from here cannot be
    handed to them between the choice and the daemon's bind. Never the
    same port twice in one test process."""
    lo, _ = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    for _ in range(1000):
        port = random.randint(10000, max(lo - 1, 10001))
        if port in _used_ports:
            continue
        try:
            for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                with socket.socket(fam, socket.SOCK_STREAM) as sk:
                    sk.bind((host, port))
        except OSError:
            continue
        _used_ports.add(port)
        return port
    raise AssertionError("no free port found")


def _own(path):
    if os.geteuid() == 0:
        pw = pwd.getpwnam("nobody")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _run(args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class TestCA:
    """A certificate authority for one test, made with openssl."""

    def __init__(self, dirpath, name="Parley Test CA"):
        self.dir = dirpath
        self.key = os.path.join(dirpath, "ca-%s.key" % abs(hash(name)))
        self.cert = os.path.join(dirpath, "ca-%s.crt" % abs(hash(name)))
        _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj",
              "/CN=%s" % name, "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign",
              "-keyout", self.key, "-out", self.cert])
        os.chmod(self.cert, 0o644)

    def issue(self, domain, tag="", eku="serverAuth,clientAuth"):
        """A certificate for domain and *.domain signed by this CA, with
        the extended key usages eku."""
        base = os.path.join(self.dir, domain + tag)
        key, csr, crt, ext = base + ".key", base + ".csr", base + ".crt", base + ".ext"
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:%s,DNS:*.%s\n"
                    "extendedKeyUsage=%s\n" % (domain, domain, eku))
        _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-subj", "/CN=%s" % domain, "-keyout", key, "-out", csr])
        _run(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
              "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", crt])
        os.chmod(crt, 0o644)
        os.chmod(key, 0o600)
        _own(key)
        return crt, key


def _write_secret(path, value):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    _own(path)


class Side:
    """One Parley domain: a router (s2s + svc.<domain>) and a parley-s2s."""

    def __init__(self, domain, dirpath, cert, key, ca_file, extra="", router=None, ipv6=False):
        self.domain = domain
        self.svc = "svc." + domain
        self.dir = dirpath
        self.port = free_port()
        self.tls_port = free_port()
        self.cert, self.key, self.ca_file = cert, key, ca_file
        self.extra = extra
        self.ipv6 = ipv6  # also listen on [::1], same ports
        self.routes = os.path.join(dirpath, "routes-%s.xml" % domain)
        self.routes_lines = []
        # A router of our own, or one that is started elsewhere (a
        # stack.Stack's, whose table already has s2s).
        self.own_router = router is None
        self.router = router or harness.Router(components={
            "s2s": {"secret": os.urandom(16).hex(), "internal": True,
                    "default_route": True},
            self.svc: {"secret": os.urandom(16).hex()},
            "svc2." + domain: {"secret": os.urandom(16).hex()},
        })
        self.dbsecret = os.path.join(dirpath, "dialback-%s.secret" % domain)
        _write_secret(self.dbsecret, os.urandom(32).hex())
        self.config = os.path.join(dirpath, "s2s-%s.xml" % domain)
        self.daemon = Daemon("s2s-" + domain, harness.binary("s2s/parley-s2s"), self.config,
                             os.path.join(dirpath, "s2s-%s.log" % domain),
                             lambda: "s2s ready" in self.daemon.log())

    def add_route(self, domain, port, host="127.0.0.1", extra=""):
        self.routes_lines.append("  <route domain='%s' host='%s' port='%d'%s/>" %
                                 (domain, host, port, extra))

    def write(self):
        with open(self.routes, "w") as f:
            f.write("<routes>\n%s\n</routes>\n" % "\n".join(self.routes_lines))
        os.chmod(self.routes, 0o644)
        user = "  <user>nobody</user>\n" if os.geteuid() == 0 else ""
        with open(self.config, "w") as f:
            f.write(
                "<s2s>\n%s"
                "  <pidfile>%s</pidfile>\n"
                "  <log><level>debug</level></log>\n"
                "  <router name='s2s' connect='unix:%s'><secret file='%s'/></router>\n"
                "  <domain>%s</domain>\n"
                "  <dialback-secret file='%s'/>\n"
                "  <routes file='%s'/>\n"
                "  <listen>\n"
                "    <tcp address='127.0.0.1' port='%d'/>\n"
                "    <tcp address='127.0.0.1' port='%d' tls='direct'/>\n"
                "%s"
                "  </listen>\n"
                "  <tls><ca file='%s'/><cert domain='%s' cert='%s' key='%s'/></tls>\n"
                "%s"
                "</s2s>\n" % (user, os.path.join(self.dir, "s2s-%s.pid" % self.domain),
                              self.router.sock, self.router.secret_file("s2s"), self.domain,
                              self.dbsecret, self.routes, self.port, self.tls_port,
                              "    <tcp address='::1' port='%d'/>\n" % self.port
                              if self.ipv6 else "", self.ca_file, self.domain, self.cert, self.key, self.extra))
        os.chmod(self.config, 0o644)

    def start(self):
        self.write()
        if self.own_router:
            self.router.start()
        self.daemon.start()

    def log(self):
        return self.daemon.log()

    async def wait_log(self, text, timeout=harness.WAIT):
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError("%s: no log line with %r within %.1fs" %
                                     (self.domain, text, timeout))
            await asyncio.sleep(0.05)

    def sanitizer_errors(self):
        errs = ["s2s: " + l for l in self.daemon.sanitizer_errors()]
        if self.own_router:
            errs += ["router: " + l for l in self.router.sanitizer_errors()]
        return errs

    def stop(self):
        codes = {"s2s": self.daemon.stop()}
        if self.own_router:
            codes["router"] = self.router.stop()
        return codes

    def cleanup(self):
        try:
            self.stop()
        finally:
            if self.own_router:
                self.router.cleanup()


class Federation:
    """a.test and b.test, each with its router and parley-s2s, joined by
    static routes. mode: "sasl" (one CA trusted by both) or "dialback"
    (each side trusts a CA that did not sign the other's certificate)."""

    def __init__(self, mode="sasl", extra_a="", extra_b="", direct_tls=False, routes_a=True,
                 ipv6=False, eku_a="serverAuth,clientAuth"):
        self.dir = tempfile.mkdtemp(prefix="parley-s2s-")
        os.chmod(self.dir, 0o755)
        ca = TestCA(self.dir, "Parley Test CA")
        self.ca = ca
        ca_a = ca_b = ca.cert
        if mode == "dialback":
            other = TestCA(self.dir, "Unrelated CA")
            ca_a = ca_b = other.cert
        crt_a, key_a = ca.issue("a.test", eku=eku_a)
        crt_b, key_b = ca.issue("b.test")
        self.a = Side("a.test", self.dir, crt_a, key_a, ca_a, extra_a, ipv6=ipv6)
        self.b = Side("b.test", self.dir, crt_b, key_b, ca_b, extra_b, ipv6=ipv6)
        tls = " tls='direct'" if direct_tls else ""
        for me, peer in ((self.a, self.b), (self.b, self.a)):
            if me is self.a and not routes_a:
                continue
            port = peer.tls_port if direct_tls else peer.port
            for d in (peer.domain, peer.svc, "svc2." + peer.domain):
                me.add_route(d, port, host="[::1]" if ipv6 else "127.0.0.1", extra=tls)

    def start(self):
        self.a.start()
        self.b.start()
        return self

    def sides(self):
        return (self.a, self.b)

    def sanitizer_errors(self):
        return self.a.sanitizer_errors() + self.b.sanitizer_errors()

    def logs(self):
        return "---- s2s a\n%s\n---- s2s b\n%s\n---- router a\n%s\n---- router b\n%s" % (
            self.a.log(), self.b.log(), self.a.router.log(), self.b.router.log())

    def stop(self):
        return {"a": self.a.stop(), "b": self.b.stop()}

    def cleanup(self):
        try:
            self.a.cleanup()
            self.b.cleanup()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(net, *cleanups, start=True):
    """The run/check/cleanup wrapper of a test on net (a Federation, or any
    object with start, sanitizer_errors, logs and cleanup): net.start()
    (unless start=False: the body starts it), the body, then no sanitizer
    line in any daemon log. If any of it fails, net.logs() is printed.
    Whatever happened, last: each of cleanups (callables, in order), then
    net.cleanup()."""
    try:
        if start:
            net.start()
        yield net
        errs = net.sanitizer_errors()
        assert not errs, "\n".join(errs)
    except BaseException:
        print(net.logs())
        raise
    finally:
        for f in cleanups:
            f()
        net.cleanup()


async def comp(side, name=None):
    """A slixmpp component on side's router named name (default svc.<domain>)."""
    return await side.router.comp(name or side.svc)


# ---------------------------------------------------------------------------


class DNSServer:
    """A small authoritative DNS server on 127.0.0.1 (UDP, a thread) for the
    resolver tests: records maps a lower-case name to a list of
    ("SRV", priority, weight, port, target) / ("A", "1.2.3.4") tuples.
    Unknown names get NXDOMAIN. queries lists (name, type) as asked."""

    TYPES = {1: "A", 28: "AAAA", 33: "SRV"}

    def __init__(self, records):
        self.records = {k.lower(): v for k, v in records.items()}
        self.queries = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _name(labels):
        out = b""
        for l in labels.rstrip(".").split("."):
            out += bytes([len(l)]) + l.encode()
        return out + b"\0"

    def _answer(self, q):
        qid, flags, qd = struct.unpack(">HHH", q[:6])
        pos, labels = 12, []
        while q[pos] != 0:
            n = q[pos]
            labels.append(q[pos + 1:pos + 1 + n].decode())
            pos += 1 + n
        qtype, _ = struct.unpack(">HH", q[pos + 1:pos + 5])
        question = q[12:pos + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, self.TYPES.get(qtype, qtype)))
        rrs = self.records.get(name)
        answers = []
        for rr in rrs or ():
            if rr[0] == "SRV" and qtype == 33:
                rdata = struct.pack(">HHH", rr[1], rr[2], rr[3]) + self._name(rr[4])
            elif rr[0] == "A" and qtype == 1:
                rdata = socket.inet_aton(rr[1])
            else:
                continue
            answers.append(struct.pack(">HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata)
        rcode = 3 if rrs is None else 0
        head = struct.pack(">HHHHHH", qid, 0x8400 | (flags & 0x0100) | 0x80 | rcode, 1,
                           len(answers), 0, 0)
        return head + question + b"".join(answers)

    def _serve(self):
        while self.running:
            try:
                data, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(data), addr)
            except (IndexError, struct.error):
                pass

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


class S2SRaw(harness.Raw):
    """A server-to-server stream written by hand, on harness.Raw's reader."""

    @classmethod
    async def connect(cls, port, host="127.0.0.1"):
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), harness.WAIT)
        return cls(r, w)

    async def open(self, to, frm=None):
        self.reset()
        f = " from='%s'" % frm if frm else ""
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                  "xmlns:stream='http://etherx.jabber.org/streams' "
                  "xmlns:db='jabber:server:dialback' to='%s'%s version='1.0'>" % (to, f))
        await asyncio.wait_for(self.header_seen.wait(), harness.WAIT)
        return self.header

    async def features(self):
        el = await self.recv()
        assert el is not None and el.tag == "{%s}features" % harness.NS_STREAM, el
        return el

    async def starttls(self, server_name, cafile, cert=None, key=None):
        """STARTTLS (after the features) with an optional client certificate."""
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        el = await self.recv()
        assert el is not None and el.tag == "{%s}proceed" % NS_TLS, el
        ctx = ssl.create_default_context(cafile=cafile)
        if cert:
            ctx.load_cert_chain(cert, key)
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        await asyncio.wait_for(self.writer.start_tls(ctx, server_hostname=server_name),
                               harness.WAIT)
        self.queue = asyncio.Queue()
        self.task = asyncio.ensure_future(self._read())

    async def secure(self, to, frm, cafile, cert=None, key=None):
        """Open to 'to' as frm, STARTTLS (optional client certificate),
        open again: the features of the secured stream."""
        await self.open(to, frm)
        await self.features()
        await self.starttls(to, cafile, cert, key)
        await self.open(to, frm)
        return await self.features()

    async def sasl_external(self, authzid):
        self.send("<auth xmlns='%s' mechanism='EXTERNAL'>%s</auth>" %
                  (NS_SASL, base64.b64encode(authzid.encode()).decode()))
        return await self.recv()



async def marker_first(src, dst_comp, frm, to):
    """What was refused reached no component: a marker from frm (a new
    component of federation member src) to 'to' over a good link is the
    first message dst_comp gets."""
    c = await comp(src)
    try:
        c.send_message(mto=to, mfrom=frm, mbody="marker")
        m = await dst_comp.expect(lambda s: s.name == "message", timeout=15)
        assert m["body"] == "marker", m
    finally:
        await harness.close_all(c)


def two_targets(first_port, second_port, service="_xmpp-server"):
    """A DNSServer whose <service>._tcp.svc.b.test SRV records list
    first_port (priority 0) then second_port (priority 10), both on
    host.b.test = 127.0.0.1: for the tests of falling back to the next
    target."""
    return DNSServer({
        "%s._tcp.svc.b.test" % service: [("SRV", 0, 5, first_port, "host.b.test"),
                                         ("SRV", 10, 5, second_port, "host.b.test")],
        "host.b.test": [("A", "127.0.0.1")],
    })


def deliver(net, body, timeout):
    """Sends a message svc.a.test -> svc.b.test through side a and asserts
    that svc.b.test receives it within timeout seconds."""
    async def go():
        ca = await comp(net.a)
        cb = await comp(net.b)
        try:
            ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody=body)
            m = await cb.expect(lambda s: s.name == "message", timeout=timeout)
            assert m["body"] == body
        finally:
            await harness.close_all(ca, cb)
    harness.run(go())


# ---------------------------------------------------------------------------
# A fake outgoing-link target that offers STARTTLS and then fails the TLS
# handshake: for the tests of how s2s moves on to the next SRV target.


def read_until(c, pred):
    """Reads from socket c until pred(everything read) holds; OSError when
    the peer closes first (c's own timeout bounds each read)."""
    buf = b""
    while not pred(buf):
        d = c.recv(4096)
        if not d:
            raise OSError("closed")
        buf += d
    return buf


def read_stream_header(c):
    """Waits for the initiating stream header of an outgoing s2s link."""
    return read_until(c, lambda b: b"<stream:stream" in b and b.endswith(b">"))


def offer_starttls(c, stream_id):
    """After the peer's stream header: answers with a header and features
    requiring STARTTLS, reads <starttls/>, says <proceed/>; returns once the
    first bytes of the ClientHello came (they are not answered)."""
    c.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              b"xmlns:stream='http://etherx.jabber.org/streams' from='b.test' "
              b"id='" + stream_id.encode() + b"' version='1.0'><stream:features>"
              b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
              b"</starttls></stream:features>")
    read_until(c, lambda b: b"starttls" in b and b"/>" in b)
    c.sendall(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(c, lambda b: len(b) > 0)


class FakeTarget:
    """A listener on 127.0.0.1 (a thread) that plays an s2s target up to
    STARTTLS <proceed/> and the peer's ClientHello, then breaks TLS as
    after_hello says: "stall" keeps each connection open and silent until
    close(); "garbage" answers with bytes that are no TLS record and closes.
    hellos counts the connections that got as far as the ClientHello."""

    def __init__(self, after_hello, stream_id="fake"):
        assert after_hello in ("stall", "garbage")
        self.after_hello = after_hello
        self.stream_id = stream_id
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hellos = []
        self.held = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            try:
                c.settimeout(5)
                read_stream_header(c)
                offer_starttls(c, self.stream_id)
                self.hellos.append(True)
                if self.after_hello == "stall":
                    self.held.append(c)
                    continue
                c.sendall(b"this is not a TLS record\r\n" * 4)
            except OSError:
                pass
            c.close()

    def close(self):
        self.running = False
        self.thread.join(5)
        for c in self.held:
            c.close()
        self.sock.close()
