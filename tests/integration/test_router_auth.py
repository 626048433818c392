"""test_router_auth.py - who may connect to parley-router as what.

A wrong secret and an unknown name get the same stream error
(not-authorized) and a closed connection; a missing stream `to` gets
host-unknown; a second connection for a name that is up gets conflict and
leaves the first one working; an internal name whose uid does not match
the Unix socket peer is refused.
"""

import pytest

from harness import Comp, NS_COMPONENT, close_all, run, stream_error_condition


@pytest.mark.parametrize("name,secret", [("a.test", "not-the-secret"),
                                         ("unknown.test", "whatever")])
def test_refused_with_not_authorized(router, name, secret):
    async def main():
        c = Comp(name, secret, router.port)
        c.connect()
        try:
            await c.wait_gone()
            assert not c.started.done(), "handshake accepted"
            assert c.stream_errors == ["not-authorized"]
        finally:
            await close_all(c)
        # the same on a raw stream: the error, then the connection closes
        r = await router.raw()
        try:
            await r.open_stream(name)
            el = await r.handshake(secret)
            assert stream_error_condition(el) == "not-authorized", el
            await r.expect_closed()
        finally:
            r.close()

    run(main())


def test_unknown_and_wrong_secret_look_the_same(router):
    """No name probing: the router's answers differ in nothing but the id."""
    async def main():
        answers = []
        for name in ("a.test", "unknown.test"):
            r = await router.raw()
            try:
                hdr = await r.open_stream(name)
                el = await r.handshake("wrong")
                answers.append((sorted(k for k in hdr.attrib if k != "id"),
                                stream_error_condition(el)))
                await r.expect_closed()
            finally:
                r.close()
        assert answers[0] == answers[1] == (answers[0][0], "not-authorized")

    run(main())


def test_missing_to_is_host_unknown(router):
    async def main():
        r = await router.raw()
        try:
            r.send("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                   "xmlns:stream='http://etherx.jabber.org/streams'>")
            await r.expect_stream_error("host-unknown")
        finally:
            r.close()

    run(main())


def test_second_connection_for_a_name_is_conflict(router):
    async def main():
        a = await router.comp("a.test")
        b = await router.comp("b.test")
        r = await router.raw()
        try:
            await r.open_stream("a.test")
            el = await r.handshake(router.secret("a.test"))
            assert stream_error_condition(el) == "conflict", el
            await r.expect_closed()
            # the first a.test still gets its traffic
            m = b.make_message(mto="alice@a.test", mbody="still you", mfrom="bob@b.test")
            m["id"] = "still"
            m.send()
            got = await a.expect(lambda s: s["id"] == "still", what="message")
            assert got["body"] == "still you"
        finally:
            r.close()
            await close_all(a, b)

    run(main())


def test_internal_uid_mismatch_is_refused(router):
    async def main():
        r = await router.raw(router.unix())
        try:
            await r.open_stream("wrong-uid", internal=True)
            el = await r.handshake(router.secret("wrong-uid"))
            assert el.tag != "{%s}handshake" % NS_COMPONENT, "handshake accepted"
            # router/PROTOCOL.md: the same answer as a wrong secret
            assert stream_error_condition(el) == "not-authorized", el
            await r.expect_closed()
        finally:
            r.close()
        # the matching uid on the same socket is accepted
        ok = await router.raw_component("c2s-1", router.unix())
        ok.close()

    run(main())
