"""test_router_limits.py - connection budgets and the pre-handshake element
limit.

max-connections applies to each listener kind on its own (TCP; the Unix
socket of our daemons), and connections that have not completed their
handshake have a smaller budget of their own (half of max-connections):
unauthenticated TCP peers can neither lock the daemons out nor
take the slots of authenticated components. Before the handshake no element
may exceed 4 KiB (policy-violation). A queue-max below the stanza-size is
a config error.
"""

import subprocess

import harness
from harness import close_all, run


def test_pending_tcp_cannot_lock_out(make_router):
    router = make_router(limits={"max-connections": "4"})

    async def main():
        conns = []
        try:
            # two TCP peers that never authenticate fill the pending budget
            for _ in range(2):
                p = await router.raw()
                await p.open_stream("a.test")
                conns.append(p)
            extra = await router.raw()
            conns.append(extra)
            await extra.expect_closed()
            await router.wait_log(r"too many connections before their handshake")
            # the daemons on the Unix socket are not affected...
            for name in ("c2s-1", "sm", "s2s"):
                conns.append(await router.raw_component(name))
            # ...and once the pending ones go, authenticated TCP components
            # fill the TCP budget, the Unix one still has room
            for p in conns[:2]:
                p.close()
            await router.wait_log(r"disconnected before the handshake", count=2)
            for name in ("a.test", "b.test", "c.test", "fresh.test"):
                conns.append(await router.raw_component(name))
            over = await router.raw()
            conns.append(over)
            await over.expect_closed()
            await router.wait_log(r"max-connections reached")
            conns.append(await router.raw_component("echo-int"))
        finally:
            await close_all(*conns)

    run(main())


def test_large_element_before_handshake(router):
    async def main():
        r = await router.raw()
        try:
            await r.open_stream("a.test")
            r.send("<handshake>%s</handshake>" % ("0" * 5000))
            await r.expect_stream_error("policy-violation")
        finally:
            r.close()
        # a handshake of normal size still works
        ok = await router.raw_component("a.test")
        ok.close()

    run(main())


def test_queue_max_below_stanza_size_refused():
    """<limits><queue-max> below <limits><stanza-size> is a config error
    (parley-router -t says so): a stanza of the largest size could never be
    queued to its target, only returned. Equal is accepted."""
    for queue, ok in (("128k", False), ("256k", True)):
        r = harness.Router(limits={"stanza-size": "256k", "queue-max": queue})
        try:
            p = subprocess.run([r.exe, "-t", "-c", r.config], capture_output=True, text=True,
                               timeout=harness.WAIT)
            assert (p.returncode == 0) == ok, (queue, p.returncode, p.stdout, p.stderr)
            if not ok:
                assert "queue-max" in p.stdout + p.stderr, p.stderr
        finally:
            r.cleanup()
