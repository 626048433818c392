"""test_s2s_federation.py - two Parley services (a.test, b.test), each a
parley-router and a parley-s2s, joined by static routes; slixmpp components
svc.a.test and svc.b.test on the two routers exchange stanzas through the
two s2s daemons, authenticated by SASL EXTERNAL (certificates from a test
CA both trust) or by dialback (certificates neither trusts).
"""

import asyncio
import socket
import ssl
import threading
import xml.etree.ElementTree as ET

import pytest

import harness
import s2sutil
from harness import run, ping_iq, stanza_error


@pytest.fixture
def fed(request):
    params = getattr(request, "param", {})
    net = s2sutil.Federation(**params)
    with s2sutil.running(net):
        yield net
        codes = net.stop()
        assert codes == {"a": {"s2s": 0, "router": 0}, "b": {"s2s": 0, "router": 0}}, \
            "exit codes %s\n%s" % (codes, net.logs())


def send_msg(comp, to, frm, body, mid):
    m = comp.make_message(mto=to, mfrom=frm, mbody=body)
    m["id"] = mid
    m.send()


async def exchange(net):
    """svc.a.test and svc.b.test: message both ways, an iq and its result."""
    ca = await s2sutil.comp(net.a)
    cb = await s2sutil.comp(net.b)
    try:
        ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody="hello b", mtype="chat")
        m = await cb.expect(lambda s: s.name == "message", timeout=15)
        assert m["from"] == "svc.a.test" and m["body"] == "hello b"
        cb.send_message(mto="alice@svc.a.test", mfrom="bob@svc.b.test", mbody="hello a")
        m = await ca.expect(lambda s: s.name == "message", timeout=15)
        assert m["from"] == "bob@svc.b.test" and m["to"] == "alice@svc.a.test"
        assert m["body"] == "hello a"
        ping_iq(ca, "svc.b.test", "svc.a.test", "p1").send()
        iq = await cb.expect(lambda s: s.name == "iq", timeout=15)
        assert iq["type"] == "get" and iq["id"] == "p1"
        cb.make_iq_result(id="p1", ito="svc.a.test", ifrom="svc.b.test").send()
        res = await ca.expect(lambda s: s.name == "iq", timeout=15)
        assert res["type"] == "result" and res["id"] == "p1" and res["from"] == "svc.b.test"
    finally:
        await harness.close_all(ca, cb)


def test_sasl_external_bidi(fed):
    """Valid certificates: a.test's link authenticates with SASL EXTERNAL
    and negotiates XEP-0288, so b.test answers over the same stream and
    opens no link of its own."""
    run(exchange(fed))
    assert "link svc.a.test -> svc.b.test ready (TLS, SASL EXTERNAL)" in fed.a.log()
    assert "bidirectional stream: svc.b.test -> svc.a.test uses the stream" in fed.b.log()
    assert "link svc.b.test -> svc.a.test ready" not in fed.b.log()


@pytest.mark.parametrize("fed", [{"eku_a": "serverAuth"}], indirect=True)
def test_sasl_external_server_only_cert(fed):
    """a.test's certificate is for serverAuth only (as many public server
    certificates are): b.test still accepts it for SASL EXTERNAL."""
    run(exchange(fed))
    assert "link svc.a.test -> svc.b.test ready (TLS, SASL EXTERNAL)" in fed.a.log()


NO_BIDI = "  <bidi>false</bidi>\n"


@pytest.mark.parametrize("fed", [{"extra_a": NO_BIDI, "extra_b": NO_BIDI}], indirect=True)
def test_sasl_external(fed):
    """Without bidi each side makes its own link, both with SASL EXTERNAL."""
    run(exchange(fed))
    assert "link svc.a.test -> svc.b.test ready (TLS, SASL EXTERNAL)" in fed.a.log()
    assert "link svc.b.test -> svc.a.test ready (TLS, SASL EXTERNAL)" in fed.b.log()


@pytest.mark.parametrize("fed", [{"mode": "dialback"}], indirect=True)
def test_dialback(fed):
    """Untrusted certificates: dialback both ways, and no bidi (the peer's
    identity on our own link rests on the certificate)."""
    run(exchange(fed))
    assert "ready (TLS, dialback)" in fed.a.log()
    assert "ready (TLS, dialback)" in fed.b.log()
    assert "bidirectional" not in fed.a.log() + fed.b.log()
    assert "SASL EXTERNAL" not in fed.a.log()


@pytest.mark.parametrize("fed", [{"direct_tls": True}], indirect=True)
def test_direct_tls(fed):
    run(exchange(fed))


@pytest.mark.parametrize("fed", [{"ipv6": True}], indirect=True)
def test_ipv6(fed):
    run(exchange(fed))
    assert "inbound svc.a.test (::1): authenticated by certificate" in fed.b.log()


def test_one_link_reused(fed):
    async def go():
        ca = await s2sutil.comp(fed.a)
        cb = await s2sutil.comp(fed.b)
        try:
            for i in range(20):
                ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody="m%d" % i)
            got = []
            for i in range(20):
                m = await cb.expect(lambda s: s.name == "message", timeout=15)
                got.append(m["body"])
            assert got == ["m%d" % i for i in range(20)]
        finally:
            await harness.close_all(ca, cb)
    run(go())
    assert fed.a.log().count("link svc.a.test -> svc.b.test ready") == 1


@pytest.fixture
def dead_port():
    return s2sutil.free_port()


def test_unreachable_bounces(dead_port):
    net = s2sutil.Federation()
    net.a.add_route("dead.test", dead_port)
    with s2sutil.running(net):
        async def go():
            ca = await s2sutil.comp(net.a)
            try:
                send_msg(ca, "x@dead.test", "svc.a.test", "hi", "m1")
                ping_iq(ca, "dead.test", "svc.a.test", "i1").send()
                got = {}
                for _ in range(2):
                    st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                    got[st["id"]] = stanza_error(st.xml)
                assert got["m1"][1] == "remote-server-not-found", got
                assert got["i1"][1] == "remote-server-not-found", got
            finally:
                await harness.close_all(ca)
        run(go())
        assert net.stop()["a"] == {"s2s": 0, "router": 0}


def test_silent_peer_times_out():
    """A peer that accepts the connection and never speaks: the queued
    stanzas bounce with remote-server-timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    net = s2sutil.Federation(extra_a="  <limits><connect-timeout>1s</connect-timeout>"
                                     "<link-timeout>2s</link-timeout></limits>\n")
    net.a.add_route("silent.test", silent.getsockname()[1])
    with s2sutil.running(net, silent.close):
        async def go():
            ca = await s2sutil.comp(net.a)
            try:
                send_msg(ca, "x@silent.test", "svc.a.test", "hi", "m1")
                st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                assert st["id"] == "m1"
                assert stanza_error(st.xml)[1] == "remote-server-timeout"
            finally:
                await harness.close_all(ca)
        run(go())


def test_denied_domain_bounces():
    net = s2sutil.Federation(extra_a="  <policy domain='svc.b.test' deny='true'/>\n")
    with s2sutil.running(net):
        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                send_msg(ca, "svc.b.test", "svc.a.test", "no", "m1")
                st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                assert stanza_error(st.xml)[1] == "remote-server-not-found"
                # svc2.b.test is not denied: delivered; the denied one never was.
                cb2 = await s2sutil.comp(net.b, "svc2.b.test")
                try:
                    ca.send_message(mto="svc2.b.test", mfrom="svc.a.test", mbody="yes")
                    m = await cb2.expect(lambda s: s.name == "message", timeout=15)
                    assert m["body"] == "yes"
                finally:
                    await harness.close_all(cb2)
                assert cb.inbox.empty()
            finally:
                await harness.close_all(ca, cb)
        run(go())


def test_dns_srv_targets_in_order():
    """No static route: svc.b.test is found through SRV records served by
    a test DNS server. The xmpps target (priority 0) is dead, the xmpp one
    (priority 10) is b.test's s2s: the link comes up on the second target.
    An unknown domain (NXDOMAIN) bounces with remote-server-not-found."""
    dead = s2sutil.free_port()
    net = s2sutil.Federation(routes_a=False)
    dns = s2sutil.DNSServer({
        "_xmpps-server._tcp.svc.b.test": [("SRV", 0, 5, dead, "host.b.test")],
        "_xmpp-server._tcp.svc.b.test": [("SRV", 10, 5, net.b.port, "host.b.test")],
        "host.b.test": [("A", "127.0.0.1")],
    })
    net.a.extra = "  <dns servers='127.0.0.1:%d'/>\n" % dns.port
    with s2sutil.running(net, dns.close):
        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody="via srv")
                m = await cb.expect(lambda s: s.name == "message", timeout=15)
                assert m["body"] == "via srv"
                send_msg(ca, "x@nxdomain.test", "svc.a.test", "hi", "nx")
                st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                assert st["id"] == "nx"
                assert stanza_error(st.xml)[1] == "remote-server-not-found"
            finally:
                await harness.close_all(ca, cb)
        run(go())
        assert ("_xmpps-server._tcp.svc.b.test", "SRV") in dns.queries
        assert ("host.b.test", "A") in dns.queries
        assert net.stop()["a"] == {"s2s": 0, "router": 0}


def test_routes_reload_on_hup():
    """A domain without a route (and no DNS answer) bounces; after the
    route is added to the routes file and s2s gets SIGHUP, it is reached."""
    import signal
    dns = s2sutil.DNSServer({})
    net = s2sutil.Federation(routes_a=False)
    net.a.extra = "  <dns servers='127.0.0.1:%d'/>\n" % dns.port
    with s2sutil.running(net, dns.close):
        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                send_msg(ca, "svc.b.test", "svc.a.test", "before", "m1")
                st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                assert stanza_error(st.xml)[1] == "remote-server-not-found"
                net.a.add_route("svc.b.test", net.b.port)
                net.a.write()
                net.a.daemon.signal(signal.SIGHUP)
                await net.a.wait_log("routes reloaded: 1")
                send_msg(ca, "svc.b.test", "svc.a.test", "after", "m2")
                m = await cb.expect(lambda s: s.name == "message", timeout=15)
                assert m["body"] == "after"
            finally:
                await harness.close_all(ca, cb)
        run(go())


async def idle_link_remade(net):
    """A message from svc.a.test to svc.b.test, a's link closed idle, and
    a second message (over a new link) arriving too."""
    ca = await s2sutil.comp(net.a)
    cb = await s2sutil.comp(net.b)
    try:
        ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody="one")
        assert (await cb.expect(lambda s: s.name == "message", timeout=15))["body"] == "one"
        await net.a.wait_log("link svc.a.test -> svc.b.test idle: closed", timeout=10)
        ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody="two")
        assert (await cb.expect(lambda s: s.name == "message", timeout=15))["body"] == "two"
    finally:
        await harness.close_all(ca, cb)


def test_idle_link_closed_and_remade():
    net = s2sutil.Federation(extra_a="  <limits><idle-timeout>500ms</idle-timeout></limits>\n")
    with s2sutil.running(net):
        run(idle_link_remade(net))
        assert net.a.log().count("link svc.a.test -> svc.b.test ready") == 2


def test_queue_bound_while_link_comes_up():
    """While a link comes up at most <queue> stanzas wait; more bounce at
    once with resource-constraint, the waiting ones with a timeout later."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    net = s2sutil.Federation(extra_a="  <limits><queue>3</queue>"
                                     "<link-timeout>2s</link-timeout></limits>\n")
    net.a.add_route("silent.test", silent.getsockname()[1])
    with s2sutil.running(net, silent.close):
        async def go():
            ca = await s2sutil.comp(net.a)
            try:
                for i in range(5):
                    send_msg(ca, "x@silent.test", "svc.a.test", "hi", "q%d" % i)
                got = []
                for _ in range(5):
                    st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                    got.append((st["id"], stanza_error(st.xml)[1]))
                assert got[:2] == [("q3", "resource-constraint"), ("q4", "resource-constraint")]
                assert sorted(got[2:]) == [("q%d" % i, "remote-server-timeout") for i in range(3)]
            finally:
                await harness.close_all(ca)
        run(go())


def test_require_valid_cert_refuses_dialback():
    """Certificates neither side trusts and a policy that wants a valid
    one: no dialback fallback, the stanza bounces."""
    net = s2sutil.Federation(mode="dialback",
                             extra_a="  <policy domain='svc.b.test' require-valid-cert='true'/>\n")
    with s2sutil.running(net):
        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                send_msg(ca, "svc.b.test", "svc.a.test", "no", "m1")
                st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                assert stanza_error(st.xml)[1] == "remote-server-not-found"
                assert cb.inbox.empty()
            finally:
                await harness.close_all(ca, cb)
        run(go())
        assert "peer certificate not valid (policy)" in net.a.log()


def test_route_pin_mismatch_refuses_dialback():
    """A route with a pin that the peer's certificate does not match: the
    link fails and the stanza bounces, although dialback (which b.test
    offers and would pass) could have authenticated the link."""
    net = s2sutil.Federation(mode="dialback", routes_a=False)
    wrong = " pin='sha256:%s'" % ("ab" * 32)
    for d in ("b.test", "svc.b.test", "svc2.b.test"):
        net.a.add_route(d, net.b.port, extra=wrong)
    with s2sutil.running(net):
        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                send_msg(ca, "svc.b.test", "svc.a.test", "no", "m1")
                st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                assert st["id"] == "m1"
                assert stanza_error(st.xml)[1] in ("remote-server-not-found",
                                                   "remote-server-timeout")
                assert cb.inbox.empty()
            finally:
                await harness.close_all(ca, cb)
        run(go())
        assert "does not match the route's pin" in net.a.log()
        assert "ready (TLS, dialback)" not in net.a.log()


def test_route_pin_mismatch_fails_dialback_verify():
    """b.test's route to a.test carries a pin a.test's certificate does not
    match: the verify connection b.test makes to check a.test's dialback
    key is refused like a link would be, so a.test's dialback is not
    accepted and its stanza bounces instead of being delivered."""
    net = s2sutil.Federation(mode="dialback")
    net.b.routes_lines = []
    wrong = " pin='sha256:%s'" % ("cd" * 32)
    for d in ("a.test", "svc.a.test", "svc2.a.test"):
        net.b.add_route(d, net.a.port, extra=wrong)
    with s2sutil.running(net):
        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                send_msg(ca, "svc.b.test", "svc.a.test", "no", "m1")
                st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                assert st["id"] == "m1"
                assert cb.inbox.empty()
            finally:
                await harness.close_all(ca, cb)
        run(go())
        assert "dialback verify svc.b.test -> svc.a.test failed" in net.b.log()


def test_rate_limited_peer_still_delivers():
    """A peer over its stanza rate is slowed down (reading pauses), never
    dropped: every message arrives, in order."""
    net = s2sutil.Federation(extra_b="  <limits><rate>20</rate><burst>5</burst></limits>\n")
    with s2sutil.running(net):
        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                for i in range(30):
                    ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody="r%d" % i)
                got = []
                for _ in range(30):
                    got.append((await cb.expect(lambda s: s.name == "message",
                                                timeout=15))["body"])
                assert got == ["r%d" % i for i in range(30)]
            finally:
                await harness.close_all(ca, cb)
        run(go())


def test_rate_limited_bidi_peer_still_delivers():
    """The same token bucket applies to stanzas b.test sends over a.test's
    bidirectional link: reading pauses, every message arrives, in order."""
    net = s2sutil.Federation(extra_a="  <limits><rate>20</rate><burst>5</burst></limits>\n")
    with s2sutil.running(net):
        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody="open")
                await cb.expect(lambda s: s.name == "message", timeout=15)
                for i in range(30):
                    cb.send_message(mto="svc.a.test", mfrom="svc.b.test", mbody="r%d" % i)
                got = []
                for _ in range(30):
                    got.append((await ca.expect(lambda s: s.name == "message",
                                                timeout=15))["body"])
                assert got == ["r%d" % i for i in range(30)]
            finally:
                await harness.close_all(ca, cb)
        run(go())
        assert "bidirectional stream: svc.b.test -> svc.a.test uses the stream" in net.b.log()
        assert "peer over its rate, reading paused" in net.a.log()


def test_dns_silent_first_target_then_next():
    """The first SRV target accepts TCP but never speaks: after the
    connect timeout the next target is used and the stanza arrives."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    net = s2sutil.Federation(routes_a=False)
    dns = s2sutil.two_targets(silent.getsockname()[1], net.b.port)
    net.a.extra = ("  <dns servers='127.0.0.1:%d'/>\n"
                   "  <limits><connect-timeout>1s</connect-timeout></limits>\n" % dns.port)
    with s2sutil.running(net, dns.close, silent.close):
        s2sutil.deliver(net, "second", 15)


def test_direct_tls_failure_then_next_target():
    """The first _xmpps-server target completes a TLS handshake (offered
    ALPN recorded) and closes without a word of XMPP: the next target is
    tried and the stanza arrives; the failed target was offered ALPN
    "xmpp-server" (XEP-0368)."""
    net = s2sutil.Federation(routes_a=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(net.b.cert, net.b.key)
    ctx.set_alpn_protocols(["xmpp-server"])
    bad = socket.socket()
    bad.bind(("127.0.0.1", 0))
    bad.listen(8)
    bad.settimeout(0.2)
    alpn = []
    running = [True]

    def serve():
        while running[0]:
            try:
                c, _ = bad.accept()
            except OSError:
                continue
            try:
                c.settimeout(5)
                with ctx.wrap_socket(c, server_side=True) as t:
                    alpn.append(t.selected_alpn_protocol())
            except (OSError, ssl.SSLError):
                c.close()
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    dns = s2sutil.two_targets(bad.getsockname()[1], net.b.tls_port, "_xmpps-server")
    net.a.extra = "  <dns servers='127.0.0.1:%d'/>\n" % dns.port

    def stop_serving():
        running[0] = False
        th.join(5)

    with s2sutil.running(net, stop_serving, dns.close, bad.close):
        s2sutil.deliver(net, "second", 15)
        assert alpn and alpn[0] == "xmpp-server", alpn


def test_starttls_failure_then_next_target():
    """The first _xmpp-server target speaks XMPP and offers STARTTLS, says
    <proceed/>, then answers the TLS handshake with garbage: the link does
    not end there, the next target is tried and the stanza arrives."""
    net = s2sutil.Federation(routes_a=False)
    bad = s2sutil.FakeTarget("garbage", "broken-tls")
    dns = s2sutil.two_targets(bad.port, net.b.port)
    net.a.extra = "  <dns servers='127.0.0.1:%d'/>\n" % dns.port
    with s2sutil.running(net, bad.close, dns.close):
        s2sutil.deliver(net, "second", 15)
        assert bad.hellos, "the first target was never asked for STARTTLS"


def test_idn_domain_resolved_by_a_label():
    """A stanza to an internationalized domain: DNS is asked for its
    A-label form (xn--...), and with no such server the stanza bounces."""
    net = s2sutil.Federation(routes_a=False)
    dns = s2sutil.DNSServer({})
    net.a.extra = "  <dns servers='127.0.0.1:%d'/>\n" % dns.port
    with s2sutil.running(net, dns.close):
        async def go():
            ca = await s2sutil.comp(net.a)
            try:
                send_msg(ca, "x@b\u00fccher.test", "svc.a.test", "hi", "m1")
                st = await ca.expect(lambda s: s["type"] == "error", timeout=15)
                assert st["id"] == "m1"
                assert stanza_error(st.xml)[1] == "remote-server-not-found"
            finally:
                await harness.close_all(ca)
        run(go())
        names = [q[0] for q in dns.queries]
        assert "_xmpp-server._tcp.xn--bcher-kva.test" in names, names


def test_slow_negotiation_bounded_by_link_timeout():
    """A peer that answers its header at once but then takes longer than
    connect-timeout (not link-timeout) to go on negotiating: the link still
    comes up and the message arrives."""
    net = s2sutil.Federation(routes_a=False)
    proxy_port = s2sutil.free_port()
    for d in ("b.test", "svc.b.test"):
        net.a.add_route(d, proxy_port)
    net.a.extra = ("  <limits><connect-timeout>500ms</connect-timeout>"
                   "<link-timeout>20s</link-timeout></limits>\n")
    with s2sutil.running(net):
        async def pipe(r, w, delay_after_first):
            first = True
            try:
                while True:
                    data = await r.read(65536)
                    if not data:
                        break
                    if not first and delay_after_first:
                        await asyncio.sleep(1.5)
                        delay_after_first = False
                    first = False
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        async def on_client(cr, cw):
            sr, sw = await asyncio.open_connection("127.0.0.1", net.b.port)
            await asyncio.gather(pipe(cr, sw, False), pipe(sr, cw, True))

        async def go():
            server = await asyncio.start_server(on_client, "127.0.0.1", proxy_port)
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody="slow")
                m = await cb.expect(lambda s: s.name == "message", timeout=15)
                assert m["body"] == "slow"
            finally:
                await harness.close_all(ca, cb)
                server.close()
        run(go())


def test_dns_answers_cached():
    """A second link to the same domain within the records' TTL (60 s here)
    uses the cached targets: the DNS server is asked once."""
    net = s2sutil.Federation(routes_a=False)
    dns = s2sutil.DNSServer({
        "_xmpp-server._tcp.svc.b.test": [("SRV", 0, 5, net.b.port, "host.b.test")],
        "host.b.test": [("A", "127.0.0.1")],
    })
    net.a.extra = ("  <dns servers='127.0.0.1:%d'/>\n"
                   "  <limits><idle-timeout>500ms</idle-timeout></limits>\n" % dns.port)
    with s2sutil.running(net, dns.close):
        run(idle_link_remade(net))
        assert net.a.log().count("link svc.a.test -> svc.b.test ready") == 2
        assert dns.queries.count(("_xmpp-server._tcp.svc.b.test", "SRV")) == 1
        assert dns.queries.count(("host.b.test", "A")) == 1
