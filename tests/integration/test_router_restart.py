"""test_router_restart.py - a component on common/component survives the
router being killed (-9) and started again on the same socket and port.

parley-echo (tests/integration/echo.c) reconnects by itself, logs "ready"
after each handshake (and binds), and traffic through it flows again: a
slixmpp component's message comes back as "echo: ...". Run once with echo as
an external component over TCP and once as an internal one over the Unix
socket, bound to a domain of its own (the bind must be redone after the
restart).
"""

import pytest

from harness import close_all, ping_iq, run

VARIANTS = {
    "external-tcp": dict(name="echo.test", internal=False, binds=(), via="tcp",
                         address="echo.test"),
    "internal-unix": dict(name="echo-int", internal=True, binds=("echo-int.test",),
                          via="unix", address="echo-int.test"),
}


async def echo_once(a, text, address=None):
    m = a.make_message(mto="bot@" + address, mbody=text, mfrom="alice@a.test/x")
    m["id"] = "e-" + text
    m.send()
    got = await a.expect(lambda s: s["id"] == "e-" + text, what="echo of " + text)
    assert got["type"] != "error", "bounced: %s" % got
    assert got["body"] == "echo: " + text
    assert str(got["to"]) == "alice@a.test/x"
    assert str(got["from"]) == "bot@" + address


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_echo_survives_router_restart(router, echo_procs, variant):
    v = VARIANTS[variant]

    async def main():
        echo = echo_procs(router, v["name"], internal=v["internal"], binds=v["binds"],
                          via=v["via"])
        await echo.wait_ready(1)
        a = await router.comp("a.test")
        try:
            await echo_once(a, "before", v["address"])
        finally:
            await close_all(a)

        router.kill()
        router.start()
        await echo.wait_ready(2)
        a = await router.comp("a.test")
        try:
            await echo_once(a, "after", v["address"])
            # an iq ping is answered too
            iq = ping_iq(a, v["address"], "alice@a.test/x", "ping1")
            a.send(iq)
            got = await a.expect(lambda s: s["id"] == "ping1", what="ping result")
            assert got["type"] == "result"
        finally:
            await close_all(a)
        assert echo.proc.poll() is None, "parley-echo exited"

    run(main())
