"""test_s2s_bidi.py - XEP-0288 from the side of a hostile receiving server.

a.test's s2s connects to "c.test" (a static route to a server written here
by hand, with a valid certificate for c.test from the test CA). It offers
bidi and SASL EXTERNAL; a.test asks for bidi (the certificate is valid) and
authenticates. On that stream the peer may then send stanzas from c.test to
a.test's domains; one from any other domain ends the stream with
invalid-from, and is not delivered.
"""

import asyncio
import ssl

import harness
import s2sutil
from harness import run

HDR = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
       "xmlns:stream='http://etherx.jabber.org/streams' from='c.test' to='svc.a.test' "
       "id='%s' version='1.0'>")


async def serve_c(reader, writer, crt, key, ready, control):
    peer = s2sutil.S2SRaw(reader, writer)
    try:
        await asyncio.wait_for(peer.header_seen.wait(), harness.WAIT)
        peer.send(HDR % "s1" + "<stream:features><starttls xmlns='%s'><required/></starttls>"
                  "</stream:features>" % s2sutil.NS_TLS)
        el = await peer.recv()
        assert el.tag == "{%s}starttls" % s2sutil.NS_TLS, el
        # Stop reading before <proceed/>: the ClientHello that follows it
        # must reach TLS, not the XML reader.
        peer.task.cancel()
        try:
            await peer.task
        except asyncio.CancelledError:
            pass
        peer.send("<proceed xmlns='%s'/>" % s2sutil.NS_TLS)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        peer.reset()
        await asyncio.wait_for(writer.start_tls(ctx), harness.WAIT)
        peer.queue = asyncio.Queue()
        peer.task = asyncio.ensure_future(peer._read())
        await asyncio.wait_for(peer.header_seen.wait(), harness.WAIT)
        peer.send(HDR % "s2" + "<stream:features><bidi xmlns='urn:xmpp:features:bidi'/>"
                  "<mechanisms xmlns='%s'><mechanism>EXTERNAL</mechanism></mechanisms>"
                  "</stream:features>" % s2sutil.NS_SASL)
        el = await peer.recv()
        assert el.tag == "{urn:xmpp:bidi}bidi", el
        el = await peer.recv()
        assert el.tag == "{%s}auth" % s2sutil.NS_SASL, el
        peer.reset()
        peer.send("<success xmlns='%s'/>" % s2sutil.NS_SASL)
        await asyncio.wait_for(peer.header_seen.wait(), harness.WAIT)
        peer.send(HDR % "s3" + "<stream:features/>")
        el = await peer.recv()
        assert el.tag == "{jabber:server}message", el
        ready.set_result(peer)
        await control  # the test drives the rest
    except BaseException as e:
        if not ready.done():
            ready.set_exception(e)
        raise


def test_bidi_peer_may_only_send_from_its_domain():
    net = s2sutil.Federation()
    crt, key = net.ca.issue("c.test")

    async def go():
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        control = loop.create_future()
        server = await asyncio.start_server(
            lambda r, w: serve_c(r, w, crt, key, ready, control), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        net.a.add_route("c.test", port)
        net.start()
        ca = await s2sutil.comp(net.a)
        try:
            ca.send_message(mto="x@c.test", mfrom="svc.a.test", mbody="to c")
            peer = await asyncio.wait_for(ready, 15)
            peer.send("<message from='x@c.test' to='svc.a.test' id='ok'><body>back</body>"
                      "</message>")
            m = await ca.expect(lambda s: s.name == "message", timeout=10)
            assert m["id"] == "ok" and m["from"] == "x@c.test"
            peer.send("<message from='boss@svc.b.test' to='svc.a.test' id='spoof'>"
                      "<body>trust me</body></message>")
            await peer.expect_stream_error("invalid-from")
            # Nothing of it reached the component; the next thing it gets
            # is a marker over a good link.
            await s2sutil.marker_first(net.b, ca, "svc.b.test", "svc.a.test")
        finally:
            control.set_result(None)
            await harness.close_all(ca)
            server.close()

    with s2sutil.running(net, start=False):
        run(go())
