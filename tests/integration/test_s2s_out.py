"""test_s2s_out.py - outgoing links of parley-s2s, as a peer sees them:
a STARTTLS target that says <proceed/> and then stalls the handshake makes
way for the next SRV target after tls-timeout (not after the whole
link-timeout), also when that next target's attempt had been dropped
because the stalling one connected first (happy eyeballs), and stanzas to
one remote domain share one link per domain pair: many messages, one TCP
connection (counted by a proxy in between).
"""

import asyncio
import socket
import threading
import time

import harness
import s2sutil
from harness import run


BOUND = 20.0  # seconds: the longest any step of a peer of ours waits


def _send(comp, to, frm, body):
    comp.send_message(mto=to, mfrom=frm, mbody=body)


def test_starttls_stall_then_next_target():
    """The first _xmpp-server target offers STARTTLS, says <proceed/>, reads
    the ClientHello and never answers. With tls-timeout 1s and link-timeout
    60s, the next target is tried once the handshake timed out and the
    message arrives well within the link's time (it would bounce with
    remote-server-timeout after 60 s otherwise)."""
    net = s2sutil.Federation(routes_a=False)
    stall = s2sutil.FakeTarget("stall", "stalls")
    dns = s2sutil.two_targets(stall.port, net.b.port)
    net.a.extra = ("  <dns servers='127.0.0.1:%d'/>\n"
                   "  <limits><tls-timeout>1s</tls-timeout>"
                   "<link-timeout>60s</link-timeout></limits>\n" % dns.port)
    with s2sutil.running(net, stall.close, dns.close):
        s2sutil.deliver(net, "after the stall", 20)
        assert stall.hellos, "the first target never got a ClientHello"
        assert "TLS handshake with target 0 timed out" in net.a.log()
        assert "link svc.a.test -> svc.b.test ready" in net.a.log()


def _full_listener():
    """A listener whose accept queue is full (listen(0) and one connection
    nobody accepts): a connection attempt's SYN is dropped and retried by
    the kernel (after 1 s, 3 s, ...) until the filler is accepted. Returns
    (listener, filler)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    filler = socket.create_connection(lst.getsockname(), timeout=5)
    return lst, filler


def _pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_happy_eyeballs_loser_is_tried_after_a_stall():
    """Two SRV targets: the first STARTTLS one connects only after the
    happy-eyeballs delay (its accept queue is full until s2s has started on
    the second target too), says <proceed/> and stalls the handshake; the
    second, the real one (through a proxy whose queue stays full until the
    first has won), was dropped when the first connected. After the TLS
    timeout that second target is tried again and the message arrives (it
    bounced before: the dropped target counted as tried)."""
    net = s2sutil.Federation(routes_a=False)
    stall, filler0 = _full_listener()
    front, filler1 = _full_listener()
    held = [filler0, filler1]
    proxied = []
    running = [True]
    steps = []

    def serve():
        try:
            end = time.monotonic() + BOUND
            while "connecting to target 1" not in net.a.log():
                if time.monotonic() > end or not running[0]:
                    return
                time.sleep(0.05)
            steps.append("both started")
            stall.settimeout(BOUND)
            held.append(stall.accept()[0])  # the filler: s2s's retried SYN gets in
            c, _ = stall.accept()
            held.append(c)
            c.settimeout(BOUND)
            s2sutil.read_stream_header(c)
            steps.append("target 0 won")
            # The header came after the other attempt was dropped: the
            # real target may accept from now on.
            front.settimeout(BOUND)
            held.append(front.accept()[0])
            s2sutil.offer_starttls(c, "stalls")  # the ClientHello: no answer
            steps.append("stalled")
            front.settimeout(0.2)
            while running[0]:
                try:
                    d, _ = front.accept()
                except OSError:
                    continue
                held.append(d)
                try:
                    u = socket.create_connection(("127.0.0.1", net.b.port), timeout=5)
                except OSError:
                    continue
                u.settimeout(None)
                d.settimeout(None)
                held.append(u)
                proxied.append(True)
                for a, b in ((d, u), (u, d)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()
        except OSError as e:
            steps.append("error: %s" % e)

    dns = s2sutil.two_targets(stall.getsockname()[1], front.getsockname()[1])
    net.a.extra = ("  <dns servers='127.0.0.1:%d'/>\n"
                   "  <limits><tls-timeout>1s</tls-timeout><connect-timeout>30s</connect-timeout>"
                   "<link-timeout>60s</link-timeout></limits>\n" % dns.port)
    th = threading.Thread(target=serve, daemon=True)

    def stop_serving():
        print(steps)  # pytest shows it when the test fails
        running[0] = False
        if th.is_alive():
            th.join(BOUND)
        for c in held:
            c.close()

    with s2sutil.running(net, stop_serving, dns.close, stall.close, front.close):
        th.start()
        s2sutil.deliver(net, "after the stall", 30)
        assert steps[:3] == ["both started", "target 0 won", "stalled"], steps
        assert proxied, "the second target was never tried again"
        log = net.a.log()
        assert "TLS handshake with target 0 timed out" in log
        assert "link svc.a.test -> svc.b.test ready" in log


class _CountingProxy:
    """TCP from a port of ours to 127.0.0.1:target, counting connections.
    The port is bound at once, so that no one else takes it before the
    daemons that are told about it start."""

    def __init__(self, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._on_client, sock=self.sock)

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
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            cw.close()  # the peer sees the connection end, as with no proxy
            return
        await asyncio.gather(self._pipe(cr, sw), self._pipe(sr, cw))

    def close(self):
        if self.server is not None:
            self.server.close()
        else:
            self.sock.close()


def test_links_reused_per_domain_pair():
    """30 messages svc.a.test -> svc.b.test, in bursts before and after the
    link is up, then 5 svc2.a.test -> svc.b.test: b's port sees exactly two
    connections (one per domain pair; SASL EXTERNAL, so no dialback verify
    connections) and every message arrives, in order per pair."""
    net = s2sutil.Federation(routes_a=False)
    proxy = _CountingProxy(net.b.port)
    for d in ("b.test", "svc.b.test"):
        net.a.add_route(d, proxy.port)
    with s2sutil.running(net):
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
