"""test_s2s_inbound.py - what a hostile or broken peer gets from parley-s2s:
a hand-written server stream (s2sutil.S2SRaw) against b.test's s2s.

- a peer authenticated (SASL EXTERNAL, a valid certificate for c.test)
  that sends a stanza from another domain: invalid-from, closed, nothing
  delivered;
- a stanza before any authentication: invalid-from;
- a stanza to a domain b.test does not host: host-unknown;
- no STARTTLS where TLS is required: policy-violation, not a stall;
- unsolicited dialback answers: policy-violation; a forged db:verify is
  answered invalid;
- a stanza that grows past the router's limit once re-serialised:
  policy-violation to the peer, except for an iq result (its local requester
  gets the error); <router-stanza-size> is at least 8k.
"""

import asyncio
import socket
import subprocess
import xml.etree.ElementTree as ET

import pytest

import harness
import s2sutil
from harness import run


@pytest.fixture
def fed():
    net = s2sutil.Federation()
    with s2sutil.running(net):
        yield net
        assert net.stop()["b"] == {"s2s": 0, "router": 0}


async def authenticated_c(net):
    """A raw stream to b.test's s2s authenticated as c.test by certificate."""
    crt, key = net.ca.issue("c.test")
    r = await s2sutil.S2SRaw.connect(net.b.port)
    await r.open("b.test", "c.test")
    f = await r.features()
    assert f.find("{%s}starttls" % s2sutil.NS_TLS) is not None
    await r.starttls("b.test", net.ca.cert, crt, key)
    await r.open("b.test", "c.test")
    f = await r.features()
    mechs = [m.text for m in f.iter("{%s}mechanism" % s2sutil.NS_SASL)]
    assert "EXTERNAL" in mechs, ET.tostring(f)
    el = await r.sasl_external("c.test")
    assert el.tag == "{%s}success" % s2sutil.NS_SASL, ET.tostring(el)
    await r.open("b.test", "c.test")
    await r.features()
    return r


def test_authenticated_peer_delivers(fed):
    async def go():
        cb = await s2sutil.comp(fed.b)
        r = await authenticated_c(fed)
        try:
            r.send("<message from='x@c.test' to='svc.b.test' id='ok1'><body>hi</body></message>")
            m = await cb.expect(lambda s: s.name == "message", timeout=10)
            assert m["from"] == "x@c.test" and m["id"] == "ok1"
        finally:
            r.close()
            await harness.close_all(cb)
    run(go())


def test_spoofed_from_is_cut_off(fed):
    async def go():
        cb = await s2sutil.comp(fed.b)
        r = await authenticated_c(fed)
        try:
            r.send("<message from='boss@svc.a.test' to='svc.b.test' id='spoof'>"
                   "<body>trust me</body></message>"
                   "<message from='x@c.test' to='svc.b.test' id='after'><body>x</body></message>")
            await r.expect_stream_error("invalid-from")
            # Nothing of it reached the component: a marker from a good link
            # is the first thing it gets.
            await s2sutil.marker_first(fed.a, cb, "svc.a.test", "svc.b.test")
        finally:
            r.close()
            await harness.close_all(cb)
    run(go())


def test_unauthenticated_stanza_is_invalid_from(fed):
    async def go():
        crt, key = fed.ca.issue("c.test")
        r = await s2sutil.S2SRaw.connect(fed.b.port)
        try:
            await r.secure("b.test", "c.test", fed.ca.cert, crt, key)
            r.send("<message from='x@c.test' to='b.test'><body>hi</body></message>")
            await r.expect_stream_error("invalid-from")
        finally:
            r.close()
    run(go())


def test_unknown_host(fed):
    async def go():
        r = await authenticated_c(fed)
        try:
            r.send("<message from='x@c.test' to='someone@elsewhere.test'><body>hi</body></message>")
            await r.expect_stream_error("host-unknown")
        finally:
            r.close()
    run(go())


def test_header_to_unknown_host(fed):
    async def go():
        r = await s2sutil.S2SRaw.connect(fed.b.port)
        try:
            await r.open("nobody-here.test", "c.test")
            await r.expect_stream_error("host-unknown")
        finally:
            r.close()
    run(go())


def test_starttls_required(fed):
    async def go():
        r = await s2sutil.S2SRaw.connect(fed.b.port)
        try:
            await r.open("b.test", "c.test")
            f = await r.features()
            st = f.find("{%s}starttls" % s2sutil.NS_TLS)
            assert st is not None and st.find("{%s}required" % s2sutil.NS_TLS) is not None
            r.send("<db:result from='c.test' to='b.test'>abcdef</db:result>")
            await r.expect_stream_error("policy-violation")
        finally:
            r.close()
    run(go())


def test_unsolicited_dialback_answer(fed):
    async def go():
        r = await s2sutil.S2SRaw.connect(fed.b.port)
        try:
            await r.secure("b.test", "c.test", fed.ca.cert)
            # b.test never asked: a "valid" answer must not authenticate anything.
            r.send("<db:result from='c.test' to='b.test' type='valid'/>")
            await r.expect_stream_error("policy-violation")
        finally:
            r.close()
    run(go())


def test_forged_verify_is_invalid(fed):
    async def go():
        r = await s2sutil.S2SRaw.connect(fed.b.port)
        try:
            await r.secure("b.test", "c.test", fed.ca.cert)
            r.send("<db:verify from='c.test' to='b.test' id='0123abcd'>%s</db:verify>" %
                   ("ab" * 32))
            el = await r.recv()
            assert el is not None and el.tag == "{%s}verify" % s2sutil.NS_DB, el
            assert el.get("type") == "invalid" and el.get("id") == "0123abcd"
        finally:
            r.close()
    run(go())


def test_connections_per_ip():
    net = s2sutil.Federation(extra_b="  <limits><connections-per-ip>2</connections-per-ip>"
                                     "</limits>\n")
    with s2sutil.running(net):
        async def go():
            first = [await s2sutil.S2SRaw.connect(net.b.port) for _ in range(2)]
            try:
                for r in first:
                    await r.open("b.test", "c.test")
                    await r.features()
                extra = await s2sutil.S2SRaw.connect(net.b.port)
                try:
                    # Closed at once: no stream header, no features.
                    got = await extra.expect_closed()
                    assert got == [], got
                    assert extra.header is None
                finally:
                    extra.close()
                # The first two still work.
                for r in first:
                    await r.starttls("b.test", net.ca.cert)
                    await r.open("b.test", "c.test")
                    await r.features()
            finally:
                for r in first:
                    r.close()
        run(go())


def test_pending_dialback_limit():
    """More unverified db:result requests on one stream than allowed:
    policy-violation (each one would cost a connection to the claimed
    authoritative server)."""
    dns = s2sutil.DNSServer({})
    net = s2sutil.Federation(extra_b="  <dns servers='127.0.0.1:%d'/>\n"
                                     "  <limits><pending-dialback>2</pending-dialback></limits>\n"
                                     % dns.port)
    with s2sutil.running(net, dns.close):
        async def go():
            r = await s2sutil.S2SRaw.connect(net.b.port)
            try:
                await r.secure("b.test", "c.test", net.ca.cert)
                r.send("".join("<db:result from='c%d.test' to='b.test'>%s</db:result>" %
                               (i, "ab" * 32) for i in range(3)))
                await r.expect_stream_error("policy-violation")
            finally:
                r.close()
        run(go())


def test_invalid_dialback_results_close_stream():
    """A peer whose dialback results keep coming back invalid (guessed keys
    for domains it does not hold) is cut off with policy-violation: each
    guess cost b.test a verify connection."""
    dns = s2sutil.DNSServer({})
    net = s2sutil.Federation(extra_b="  <dns servers='127.0.0.1:%d'/>\n"
                                     "  <limits><dialback-invalid>2</dialback-invalid></limits>\n"
                                     % dns.port)
    with s2sutil.running(net, dns.close):
        async def go():
            r = await s2sutil.S2SRaw.connect(net.b.port)
            try:
                await r.secure("b.test", "c0.test", net.ca.cert)
                r.send("".join("<db:result from='c%d.test' to='b.test'>%s</db:result>" %
                               (i, "ab" * 32) for i in range(3)))
                await r.expect_stream_error("policy-violation")
            finally:
                r.close()
        run(go())
        assert "too many invalid dialback results" in net.b.log()


def test_verify_connections_per_ip_limit():
    """With one verify connection allowed per peer address, a second
    db:result while the first is being verified is answered at once with
    a resource-constraint error, and no second connection is made."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    net = s2sutil.Federation(extra_b="  <limits><verify-per-ip>1</verify-per-ip></limits>\n")
    for d in ("c0.test", "c1.test"):
        net.b.add_route(d, silent.getsockname()[1])
    with s2sutil.running(net, silent.close):
        async def go():
            r = await s2sutil.S2SRaw.connect(net.b.port)
            try:
                await r.secure("b.test", "c0.test", net.ca.cert)
                r.send("<db:result from='c0.test' to='b.test'>%s</db:result>" % ("ab" * 32))
                await net.b.wait_log("verifying with c0.test")
                r.send("<db:result from='c1.test' to='b.test'>%s</db:result>" % ("ab" * 32))
                el = await r.recv(15)
                assert el is not None and el.tag == "{%s}result" % s2sutil.NS_DB, el
                assert el.get("from") == "b.test" and el.get("to") == "c1.test"
                assert el.get("type") == "error"
                assert el.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}resource-constraint") \
                    is not None, ET.tostring(el)
            finally:
                r.close()
        run(go())
        assert "verifying with c1.test" not in net.b.log()


def test_failed_bidi_stream_not_used_for_our_stanzas():
    """c.test authenticates by certificate on a bidirectional stream, which
    b.test then uses for its stanzas to c.test. Once that stream fails (a
    parse error) a stanza to c.test goes by a link of b.test's own (here
    to a dead port: remote-server-not-found), not into the dying stream
    (which bounced it with resource-constraint)."""
    dead = s2sutil.free_port()
    net = s2sutil.Federation()
    net.b.add_route("c.test", dead)
    crt, key = net.ca.issue("c.test")
    with s2sutil.running(net):
        async def go():
            cb = await s2sutil.comp(net.b)
            r = await s2sutil.S2SRaw.connect(net.b.port)
            try:
                await r.secure("svc.b.test", "c.test", net.ca.cert, crt, key)
                r.send("<bidi xmlns='urn:xmpp:bidi'/>")
                el = await r.sasl_external("c.test")
                assert el.tag == "{%s}success" % s2sutil.NS_SASL, ET.tostring(el)
                await r.open("svc.b.test", "c.test")
                await r.features()
                await net.b.wait_log("bidirectional stream: svc.b.test -> c.test uses the stream")
                r.send("<message><<<")
                await net.b.wait_log("not well-formed")
                m = cb.make_message(mto="x@c.test", mfrom="svc.b.test", mbody="hi")
                m["id"] = "m1"
                m.send()
                st = await cb.expect(lambda s: s["type"] == "error", timeout=15)
                assert st["id"] == "m1"
                assert harness.stanza_error(st.xml)[1] == "remote-server-not-found"
            finally:
                r.close()
                await harness.close_all(cb)
        run(go())


def test_dialback_claiming_our_own_domain_is_invalid(fed):
    """A db:result whose from is one of b.test's own domains is answered
    invalid at once: no verify connection is made for it."""
    async def go():
        r = await s2sutil.S2SRaw.connect(fed.b.port)
        try:
            await r.secure("b.test", "b.test", fed.ca.cert)
            r.send("<db:result from='b.test' to='b.test'>%s</db:result>" % ("ab" * 32))
            el = await r.recv(15)
            assert el is not None and el.tag == "{%s}result" % s2sutil.NS_DB, el
            assert el.get("type") == "invalid"
        finally:
            r.close()
    run(go())
    assert "verifying with b.test" not in fed.b.log()


def test_sasl_external_as_our_own_domain_refused(fed):
    """A peer holding a valid certificate for b.test itself (a copy, or a
    sibling host) cannot authenticate to b.test as b.test."""
    crt, key = fed.ca.issue("b.test", tag="-stolen")

    async def go():
        r = await s2sutil.S2SRaw.connect(fed.b.port)
        try:
            await r.secure("b.test", "b.test", fed.ca.cert, crt, key)
            el = await r.sasl_external("b.test")
            assert el.tag == "{%s}failure" % s2sutil.NS_SASL, ET.tostring(el)
        finally:
            r.close()
    run(go())


def test_dialback_for_unreachable_domain_is_invalid():
    """A db:result for a domain whose authoritative server cannot be found
    is answered invalid, and stanzas from it stay refused."""
    dns = s2sutil.DNSServer({})
    net = s2sutil.Federation(extra_b="  <dns servers='127.0.0.1:%d'/>\n" % dns.port)
    with s2sutil.running(net, dns.close):
        async def go():
            r = await s2sutil.S2SRaw.connect(net.b.port)
            try:
                await r.secure("b.test", "c.test", net.ca.cert)
                r.send("<db:result from='c.test' to='b.test'>%s</db:result>" % ("ab" * 32))
                el = await r.recv(15)
                assert el is not None and el.tag == "{%s}result" % s2sutil.NS_DB, el
                assert el.get("type") == "invalid" and el.get("from") == "b.test"
                r.send("<message from='x@c.test' to='b.test'><body>hi</body></message>")
                await r.expect_stream_error("invalid-from")
            finally:
                r.close()
        run(go())


def test_dialback_spoof_refused_by_authoritative_server(fed):
    """A peer claims svc.a.test by dialback with a made-up key: b.test asks
    a.test (the authoritative server), which has no such pending link, so
    the result is invalid and the claimed domain stays unauthenticated."""
    async def go():
        ca = await s2sutil.comp(fed.a)
        cb = await s2sutil.comp(fed.b)
        r = await s2sutil.S2SRaw.connect(fed.b.port)
        try:
            await r.secure("svc.b.test", "svc.a.test", fed.ca.cert)
            r.send("<db:result from='svc.a.test' to='svc.b.test'>%s</db:result>" % ("cd" * 32))
            el = await r.recv(15)
            assert el is not None and el.tag == "{%s}result" % s2sutil.NS_DB, el
            assert el.get("type") == "invalid"
            r.send("<message from='boss@svc.a.test' to='svc.b.test'><body>x</body></message>")
            await r.expect_stream_error("invalid-from")
            assert "dialback verify svc.a.test -> svc.b.test: invalid" in fed.a.log()
            assert cb.inbox.empty()
        finally:
            r.close()
            await harness.close_all(ca, cb)
    run(go())


def test_stanza_size_limit():
    net = s2sutil.Federation(extra_b="  <limits><stanza-size>8k</stanza-size></limits>\n")
    with s2sutil.running(net):
        async def go():
            r = await authenticated_c(net)
            try:
                r.send("<message from='x@c.test' to='b.test'><body>%s</body></message>" %
                       ("x" * 20000))
                await r.expect_stream_error("policy-violation")
            finally:
                r.close()
        run(go())


ROUTER_MAX = 256 * 1024  # the router's and s2s's default <stanza-size>


def test_stanza_too_large_once_reserialised_bounced():
    """A peer's stanza within s2s's <stanza-size> as received but over the
    router's once re-serialised (each '>' in text becomes '&gt;') is not
    passed on, which would cost s2s its router link: the peer gets
    policy-violation (modify, without the payload). One just under what
    fits is delivered, and so is a later ordinary one."""
    net = s2sutil.Federation()
    crt, key = net.ca.issue("c.test")
    with s2sutil.running(net):
        async def go():
            cb = await s2sutil.comp(net.b)
            r = await s2sutil.S2SRaw.connect(net.b.port)
            try:
                # A bidirectional stream: b.test's answers to c.test come on it.
                await r.secure("svc.b.test", "c.test", net.ca.cert, crt, key)
                r.send("<bidi xmlns='urn:xmpp:bidi'/>")
                el = await r.sasl_external("c.test")
                assert el.tag == "{%s}success" % s2sutil.NS_SASL, ET.tostring(el)
                await r.open("svc.b.test", "c.test")
                await r.features()

                def stanza(mid, n):
                    return ("<message from='x@c.test' to='svc.b.test' id='%s'><body>%s</body>"
                            "</message>" % (mid, ">" * n))
                # As s2s sends it to the router: '>' is written '&gt;'.
                head = len(stanza("over", 0))
                over = (ROUTER_MAX - head) // 4 + 10
                under = (ROUTER_MAX - head) // 4 - 10
                assert len(stanza("over", over)) < ROUTER_MAX  # s2s takes it from the peer
                r.send(stanza("over", over))
                e = await r.expect(lambda el: el.get("id") == "over", what="the bounce")
                assert e.get("type") == "error" and e.get("to") == "x@c.test"
                err = e.find("{jabber:server}error")
                assert err is not None and err.get("type") == "modify", ET.tostring(e)
                assert err.find("{urn:ietf:params:xml:ns:xmpp-stanzas}policy-violation") \
                    is not None, ET.tostring(e)
                assert e.find("{jabber:server}body") is None
                r.send(stanza("under", under))
                m = await cb.expect(lambda s: s.name == "message", timeout=15)
                assert m["id"] == "under" and len(m["body"]) == under
                r.send("<message from='x@c.test' to='svc.b.test' id='later'><body>hi</body>"
                       "</message>")
                m = await cb.expect(lambda s: s.name == "message", timeout=15)
                assert m["id"] == "later"
            finally:
                r.close()
                await harness.close_all(cb)
        run(go())
        assert "router connection lost" not in net.b.log(), net.b.log()[-3000:]
        assert "not sent: the router takes at most" in net.b.log()


def test_result_too_large_once_reserialised_goes_to_requester():
    """A peer's iq result that grows past the router's limit once
    re-serialised is not answered (RFC 6120 §8.2.3: nothing answers a
    result): the peer gets nothing, and the local requester, who would wait
    in vain, gets policy-violation (modify, without the payload) from the
    entity that answered."""
    net = s2sutil.Federation()
    crt, key = net.ca.issue("c.test")
    with s2sutil.running(net):
        async def go():
            cb = await s2sutil.comp(net.b)
            r = await s2sutil.S2SRaw.connect(net.b.port)
            try:
                await r.secure("svc.b.test", "c.test", net.ca.cert, crt, key)
                r.send("<bidi xmlns='urn:xmpp:bidi'/>")
                el = await r.sasl_external("c.test")
                assert el.tag == "{%s}success" % s2sutil.NS_SASL, ET.tostring(el)
                await r.open("svc.b.test", "c.test")
                await r.features()
                head = ("<iq type='result' from='x@c.test' to='svc.b.test' id='res1'>"
                        "<query xmlns='urn:example:big'></query></iq>")
                n = (ROUTER_MAX - len(head)) // 4 + 10  # '>' is written '&gt;'
                big = head.replace("</query>", ">" * n + "</query>")
                assert len(big) < ROUTER_MAX
                r.send(big)
                e = await cb.expect(lambda s: s["id"] == "res1", timeout=15)
                assert e.name == "iq" and e["type"] == "error", e
                assert str(e["from"]) == "x@c.test" and str(e["to"]) == "svc.b.test", e
                # The error as received (slixmpp's own handling of an iq it
                # does not know may append to the object: read its first).
                err = e.xml.find("{jabber:component:accept}error")
                assert err is not None and err.get("type") == "modify", e
                assert err.find("{urn:ietf:params:xml:ns:xmpp-stanzas}policy-violation") \
                    is not None, e
                assert e.xml.find("{urn:example:big}query") is None, e
                # Over the same stream, after whatever s2s sent for res1.
                cb.send_message(mto="x@c.test", mfrom="svc.b.test", mbody="after", mtype="chat")
                got = await r.expect(lambda el: el.get("id") == "res1" or
                                     el.findtext("{jabber:server}body") == "after",
                                     what="the marker")
                assert got.get("id") != "res1", ET.tostring(got)
            finally:
                r.close()
                await harness.close_all(cb)
        run(go())
        assert "router connection lost" not in net.b.log(), net.b.log()[-3000:]


def test_router_stanza_size_at_least_8k():
    """<limits><router-stanza-size> below 8k is a config error (parley-s2s -t
    says so): s2s could not even send its session traffic through the
    router under it. 8k is accepted."""
    for size, ok in (("4k", False), ("8k", True)):
        net = s2sutil.Federation(
            extra_b="  <limits><router-stanza-size>%s</router-stanza-size></limits>\n" % size)
        try:
            net.b.write()
            p = subprocess.run([harness.binary("s2s/parley-s2s"), "-t", "-c", net.b.config],
                               capture_output=True, text=True, timeout=harness.WAIT)
            assert (p.returncode == 0) == ok, (size, p.returncode, p.stdout, p.stderr)
            if not ok:
                assert "router-stanza-size" in p.stdout + p.stderr, p.stderr
        finally:
            net.cleanup()
