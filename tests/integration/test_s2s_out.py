"""test_s2s_out.py - outgoing links of parley-s2s, as a peer sees them:
a STARTTLS target that says <proceed/> and then stalls the handshake makes
way for the next SRV target after tls-timeout (not after the whole
link-timeout), and stanzas to one remote domain share one link per domain
pair: many messages, one TCP connection (counted by a proxy in between).
"""

import asyncio
import socket
import threading

import harness
import s2sutil
from harness import run


def _send(comp, to, frm, body):
    comp.send_message(mto=to, mfrom=frm, mbody=body)


def test_starttls_stall_then_next_target():
    """The first _xmpp-server target offers STARTTLS, says <proceed/>, reads
    the ClientHello and never answers. With tls-timeout 1s and link-timeout
    60s, the next target is tried once the handshake timed out and the
    message arrives well within the link's time (it would bounce with
    remote-server-timeout after 60 s otherwise)."""
    net = s2sutil.Federation(routes_a=False)
    stall = socket.socket()
    stall.bind(("127.0.0.1", 0))
    stall.listen(8)
    stall.settimeout(0.2)
    hellos = []
    held = []
    running = [True]

    def read_until(c, pred):
        buf = b""
        while not pred(buf):
            d = c.recv(4096)
            if not d:
                raise OSError("closed")
            buf += d
        return buf

    def serve():
        while running[0]:
            try:
                c, _ = stall.accept()
            except OSError:
                continue
            try:
                c.settimeout(5)
                read_until(c, lambda b: b"<stream:stream" in b and b.endswith(b">"))
                c.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                          b"xmlns:stream='http://etherx.jabber.org/streams' from='b.test' "
                          b"id='stalls' version='1.0'><stream:features>"
                          b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
                          b"</starttls></stream:features>")
                read_until(c, lambda b: b"starttls" in b and b"/>" in b)
                c.sendall(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                read_until(c, lambda b: len(b) > 0)  # the ClientHello: no answer
                hellos.append(True)
                held.append(c)  # kept open, silent, until the test ends
                continue
            except OSError:
                pass
            c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    dns = s2sutil.DNSServer({
        "_xmpp-server._tcp.svc.b.test": [("SRV", 0, 5, stall.getsockname()[1], "host.b.test"),
                                         ("SRV", 10, 5, net.b.port, "host.b.test")],
        "host.b.test": [("A", "127.0.0.1")],
    })
    net.a.extra = ("  <dns servers='127.0.0.1:%d'/>\n"
                   "  <limits><tls-timeout>1s</tls-timeout>"
                   "<link-timeout>60s</link-timeout></limits>\n" % dns.port)
    try:
        net.start()

        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                _send(ca, "svc.b.test", "svc.a.test", "after the stall")
                m = await cb.expect(lambda s: s.name == "message", timeout=20)
                assert m["body"] == "after the stall"
            finally:
                await harness.close_all(ca, cb)
        run(go())
        assert hellos, "the first target never got a ClientHello"
        assert "TLS handshake with target 0 timed out" in net.a.log()
        assert "link svc.a.test -> svc.b.test ready" in net.a.log()
        assert not net.sanitizer_errors()
    except BaseException:
        print(net.logs())
        raise
    finally:
        running[0] = False
        th.join(5)
        for c in held:
            c.close()
        dns.close()
        stall.close()
        net.cleanup()


class _CountingProxy:
    """TCP from a port of ours to 127.0.0.1:target, counting connections."""

    def __init__(self, target):
        self.target = target
        self.port = s2sutil.free_port()
        self.accepted = 0
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", self.port)

    async def _pipe(self, r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _on_client(self, cr, cw):
        self.accepted += 1
        sr, sw = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(self._pipe(cr, sw), self._pipe(sr, cw))

    def close(self):
        if self.server is not None:
            self.server.close()


def test_links_reused_per_domain_pair():
    """30 messages svc.a.test -> svc.b.test, in bursts before and after the
    link is up, then 5 svc2.a.test -> svc.b.test: b's port sees exactly two
    connections (one per domain pair; SASL EXTERNAL, so no dialback verify
    connections) and every message arrives, in order per pair."""
    net = s2sutil.Federation(routes_a=False)
    proxy = _CountingProxy(net.b.port)
    for d in ("b.test", "svc.b.test"):
        net.a.add_route(d, proxy.port)
    try:
        net.start()

        async def go():
            await proxy.start()
            ca = await s2sutil.comp(net.a)
            ca2 = await s2sutil.comp(net.a, "svc2.a.test")
            cb = await s2sutil.comp(net.b)
            try:
                async def receive(n):
                    got = []
                    for _ in range(n):
                        m = await cb.expect(lambda s: s.name == "message", timeout=15)
                        got.append((str(m["from"]), m["body"]))
                    return got

                for i in range(10):  # queued while the link comes up
                    _send(ca, "svc.b.test", "svc.a.test", "m%d" % i)
                got = await receive(10)
                for i in range(10, 30):  # on the link that is up
                    _send(ca, "svc.b.test", "svc.a.test", "m%d" % i)
                got += await receive(20)
                assert got == [("svc.a.test", "m%d" % i) for i in range(30)]
                assert proxy.accepted == 1, proxy.accepted
                for i in range(5):
                    _send(ca2, "svc.b.test", "svc2.a.test", "n%d" % i)
                got = await receive(5)
                assert got == [("svc2.a.test", "n%d" % i) for i in range(5)]
                assert proxy.accepted == 2, proxy.accepted
            finally:
                await harness.close_all(ca, ca2, cb)
                proxy.close()
        run(go())
        log = net.a.log()
        assert log.count("link svc.a.test -> svc.b.test ready") == 1, log
        assert log.count("link svc2.a.test -> svc.b.test ready") == 1, log
        assert not net.sanitizer_errors()
    except BaseException:
        print(net.logs())
        raise
    finally:
        net.cleanup()
