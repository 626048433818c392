"""test_sandbox.py - the seccomp allow-lists (common/sandbox.c) on real
daemons: every daemon of a running service (router, sm, c2s, s2s) carries a
seccomp filter (/proc/PID/status "Seccomp: 2") and says so in its log; the
service works under it (logins with SCRAM and PLAIN, the latter through
c2s's thread pool, a message between users, two federated s2s), a SIGHUP
reload re-reads files under it, and every daemon still stops with exit 0
and no sanitizer line (LeakSanitizer runs at exit under the filter). <sandbox>log</sandbox> and <sandbox>off</sandbox>
are taken.

The rest of the integration suite runs with the default (on) too: any call
missing from an allow-list kills a daemon with SIGSYS there.
"""

import asyncio
import os
import signal

import pytest

import harness
import s2sutil
import stack


def seccomp(pid):
    """(mode, filters) from /proc/PID/status: mode 2 is filter mode."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return int(fields["Seccomp"]), int(fields.get("Seccomp_filters", "0"))


# Filters this test process runs under already (a container's): the
# daemons inherit them, so theirs are counted on top.
OWN_FILTERS = seccomp(os.getpid())[1]


def assert_filtered(pid, name):
    mode, filters = seccomp(pid)
    assert mode == 2, "%s (pid %d) has no seccomp filter" % (name, pid)
    assert filters == OWN_FILTERS + 1, "%s: %d filters, %d inherited" % (name, filters,
                                                                          OWN_FILTERS)


def assert_unfiltered(pid, name):
    assert seccomp(pid)[1] == OWN_FILTERS, "%s has a seccomp filter" % name


async def wait_log(daemon, text, count=1):
    deadline = asyncio.get_event_loop().time() + harness.WAIT
    while daemon.log().count(text) < count:
        if asyncio.get_event_loop().time() > deadline:
            raise AssertionError("%s: no %r in the log:\n%s" % (getattr(daemon, "name", "router"), text,
                                                                 daemon.log()[-3000:]))
        await asyncio.sleep(0.05)


async def chat(st):
    """alice (PLAIN: c2s's thread pool) and bob (SCRAM) log in; a message."""
    a, oa = await stack.login(st, "alice", "wonderland", mech="PLAIN", resource="a")
    b, ob = await stack.login(st, "bob", "builder", mech="SCRAM-SHA-256", resource="b")
    try:
        assert (oa, ob) == ("session", "session"), st.logs()[-6000:]
        a.send_message(mto="bob@%s/b" % st.domain, mbody="under seccomp")
        m = await asyncio.wait_for(b.inbox.get(), harness.WAIT)
        assert m["body"] == "under seccomp"
    finally:
        await stack.logout(a)
        await stack.logout(b)


@pytest.fixture
def st():
    s = stack.Stack(c2s=1)
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")
        yield s
    finally:
        s.cleanup()


def test_service_runs_under_the_filters(st):
    daemons = {"router": st.router, "sm": st["sm"], "c2s-1": st["c2s-1"]}
    for name, d in daemons.items():
        assert_filtered(d.pid, name)
        assert "sandbox on: seccomp allow-list of " in d.log(), name
    harness.run(chat(st))

    # HUP: logs reopened, configuration and certificates read again.
    async def reload():
        for d in daemons.values():
            d.signal(signal.SIGHUP)
        for d in daemons.values():
            await wait_log(d, "SIGHUP: logs reopened")
        await chat(st)
    harness.run(reload())
    for name, d in daemons.items():
        assert d.running(), "%s died after HUP:\n%s" % (name, d.log()[-3000:])

    problems = st.stop_and_check()
    assert not problems, "%s\n%s" % (problems[:5], st.logs()[-6000:])


def test_log_and_off_modes():
    s = stack.Stack(c2s=1, extra={"sm": "  <sandbox>log</sandbox>\n",
                                  "c2s": "  <sandbox>off</sandbox>\n"})
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")
        assert_filtered(s["sm"].pid, "sm")
        assert "sandbox log: seccomp allow-list of " in s["sm"].log()
        assert_unfiltered(s["c2s-1"].pid, "c2s-1")
        assert "sandbox off: no seccomp filter" in s["c2s-1"].log()
        harness.run(chat(s))
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def test_s2s_federates_under_the_filter():
    net = s2sutil.Federation(mode="dialback")
    try:
        net.start()
        for side in net.sides():
            assert_filtered(side.daemon.pid, "s2s " + side.domain)
            assert "sandbox on: seccomp allow-list of " in side.log()

        async def go():
            ca = await s2sutil.comp(net.a)
            cb = await s2sutil.comp(net.b)
            try:
                ca.send_message(mto="svc.b.test", mfrom="svc.a.test", mbody="hello b")
                m = await cb.expect(lambda s: s.name == "message", timeout=15)
                assert m["body"] == "hello b"
                for side in net.sides():
                    side.daemon.signal(signal.SIGHUP)
                for side in net.sides():
                    await wait_log(side.daemon, "SIGHUP: logs reopened")
                cb.send_message(mto="svc.a.test", mfrom="svc.b.test", mbody="hello a")
                m = await ca.expect(lambda s: s.name == "message", timeout=15)
                assert m["body"] == "hello a"
            finally:
                await harness.close_all(ca, cb)
        harness.run(go())
        codes = net.stop()
        assert codes == {"a": {"s2s": 0, "router": 0}, "b": {"s2s": 0, "router": 0}}, \
            "exit codes %s\n%s" % (codes, net.logs())
        assert not net.sanitizer_errors(), "\n".join(net.sanitizer_errors())
    except BaseException:
        print(net.logs())
        raise
    finally:
        net.cleanup()
