"""test_router_ops.py - what an operator and a component author notice:
addressing errors, reloading the component table on SIGHUP, stats on SIGUSR1.

Addressing (documented in router/deliver.c): a stanza with no or an
unpreppable `to` bounces with jid-malformed; a stanza from an external
component without `from` cannot be answered and ends the stream with
improper-addressing.
"""

import os
import signal

import pytest

from harness import NS_COMPONENT, Comp, close_all, run, stanza_error


@pytest.mark.parametrize("to_attr", ["", " to='a@b@c'", " to=''"])
def test_bad_to_bounces_jid_malformed(router, to_attr):
    async def main():
        a = await router.raw_component("a.test")
        try:
            a.send("<message id='bad'%s from='alice@a.test'><body>x</body></message>" % to_attr)
            got = await a.expect(lambda e: e.get("id") == "bad", what="bounce")
            assert got.tag == "{%s}message" % NS_COMPONENT
            assert got.get("type") == "error"
            assert stanza_error(got)[1] == "jid-malformed"
        finally:
            a.close()

    run(main())


def test_external_without_from_is_improper_addressing(router):
    async def main():
        a = await router.raw_component("a.test")
        try:
            a.send("<message id='nofrom' to='bob@b.test'><body>x</body></message>")
            await a.expect_stream_error("improper-addressing")
        finally:
            a.close()

    run(main())


def test_hup_reloads_component_table(router):
    async def main():
        old = router.secret("a.test")
        router.components["a.test"]["secret"] = "changed-" + old
        router.components["late.test"] = {"secret": "late-secret-0123456789"}
        router.write_config()
        router.signal(signal.SIGHUP)
        await router.wait_log(r"component table reloaded")
        # the old secret is refused now, the new one and the new name work
        c = Comp("a.test", old, router.port)
        c.connect()
        await c.wait_gone()
        assert c.stream_errors == ["not-authorized"]
        for name in ("a.test", "late.test"):
            x = await router.comp(name)
            await close_all(x)

        # a broken table on HUP keeps the one in force
        with open(router.users, "w") as f:
            f.write("<components><component name='x'></components>")
        router.signal(signal.SIGHUP)
        await router.wait_log(r"reload failed")
        x = await router.comp("late.test")
        await close_all(x)

    run(main())


def test_usr1_logs_stats(router):
    async def main():
        a = await router.comp("a.test")
        b = await router.comp("b.test")
        try:
            for i in range(3):
                m = a.make_message(mto="bob@b.test", mbody="n%d" % i, mfrom="alice@a.test")
                m["id"] = "n%d" % i
                m.send()
            for i in range(3):
                await b.expect(lambda s: s.name == "message", what="message %d" % i)
            os.kill(router.pid, signal.SIGUSR1)
            lines = await router.wait_log(r"stats: a\.test ")
            line = lines[-1]
            assert "stanzas-in=3" in line or "stanzas-out=3" in line, line
        finally:
            await close_all(a, b)

    run(main())
