"""test_router_badinput.py - hostile input leaves parley-router serving.

Garbage bytes, a 10 MB stanza, a billion-laughs document and 500 half-open
TCP connections: after each, the router is still running and a fresh
slixmpp component completes its handshake within one second (the issue's
functional requirement: bad input costs the sender, not the server).
"""

import random
import socket

import pytest

from harness import Comp, close_all, run, stream_error_condition

FRESH_WITHIN = 1.0


async def fresh_component_answers(router):
    assert router.running(), "router is gone"
    c = Comp("fresh.test", router.secret("fresh.test"), router.port)
    c.connect()
    try:
        await c.wait_started(FRESH_WITHIN)
    finally:
        await close_all(c)
    assert router.running(), "router is gone"


async def send_until_closed(r, data, chunk=64 * 1024):
    """Write data in chunks until done or the router closed the connection."""
    for off in range(0, len(data), chunk):
        if r.eof:
            return
        try:
            r.send(data[off:off + chunk])
            await r.drain(timeout=10)
        except (ConnectionError, OSError):
            return


@pytest.mark.parametrize("when", ["before-header", "after-handshake"])
def test_garbage_bytes(router, when):
    async def main():
        garbage = random.Random(3).randbytes(8192)
        if when == "before-header":
            r = await router.raw()
            await send_until_closed(r, garbage)
        else:
            r = await router.raw_component("a.test")
            await send_until_closed(r, b"<message>" + garbage)
        try:
            got = await r.expect_closed()
            conds = [stream_error_condition(e) for e in got if stream_error_condition(e)]
            # a stream error is what RFC 6120 asks for; if one came, it names
            # bad XML (expat may see it as either)
            assert all(c in ("not-well-formed", "invalid-xml", "bad-format",
                             "restricted-xml", "policy-violation") for c in conds), conds
        finally:
            r.close()
        await fresh_component_answers(router)
        if when == "after-handshake":
            # the name was released with the connection
            a = await router.comp("a.test")
            await close_all(a)

    run(main())


def test_ten_megabyte_stanza(router):
    async def main():
        r = await router.raw_component("a.test")
        start_kb = router.rss_kb()
        try:
            big = (b"<message to='bob@b.test' from='alice@a.test'><body>" +
                   b"x" * (10 * 1024 * 1024) + b"</body></message>")
            await send_until_closed(r, big)
            await r.expect_stream_error("policy-violation")
        finally:
            r.close()
        grown_mb = (router.rss_kb() - start_kb) / 1024
        assert grown_mb < 8, "router grew %.1f MB for one refused stanza" % grown_mb
        await fresh_component_answers(router)

    run(main())


def billion_laughs():
    ents = ["<!ENTITY lol0 'lol'>"]
    for i in range(1, 10):
        ents.append("<!ENTITY lol%d '%s'>" % (i, ("&lol%d;" % (i - 1)) * 10))
    return ("<?xml version='1.0'?><!DOCTYPE stream:stream [%s]>"
            "<stream:stream xmlns='jabber:component:accept' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='a.test'>"
            "<message to='bob@b.test' from='alice@a.test'><body>&lol9;</body></message>"
            % "".join(ents)).encode()


@pytest.mark.parametrize("when", ["prolog", "after-handshake"])
def test_billion_laughs(router, when):
    async def main():
        start_kb = router.rss_kb()
        if when == "prolog":
            r = await router.raw()
            await send_until_closed(r, billion_laughs())
        else:
            # a DOCTYPE cannot come mid-stream; the entity is then undefined
            r = await router.raw_component("a.test")
            doc = billion_laughs()
            await send_until_closed(r, doc[doc.index(b"<!DOCTYPE"):])
        try:
            got = await r.expect_closed()
            assert not [e for e in got if e.tag.endswith("}message")], "a message got through"
        finally:
            r.close()
        grown_mb = (router.rss_kb() - start_kb) / 1024
        assert grown_mb < 8, "router grew %.1f MB" % grown_mb
        await fresh_component_answers(router)

    run(main())


def test_half_open_connections(router):
    async def main():
        socks = []
        try:
            for _ in range(500):
                # blocking connects: nothing else runs on the loop yet
                socks.append(socket.create_connection(("127.0.0.1", router.port), timeout=5))
            await fresh_component_answers(router)
            # and it still routes
            a = await router.comp("a.test")
            b = await router.comp("b.test")
            try:
                m = a.make_message(mto="bob@b.test", mbody="through", mfrom="alice@a.test")
                m["id"] = "t1"
                m.send()
                got = await b.expect(lambda s: s["id"] == "t1", what="message")
                assert got["body"] == "through"
            finally:
                await close_all(a, b)
        finally:
            for s in socks:
                s.close()
        await fresh_component_answers(router)

    run(main())
