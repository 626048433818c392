"""test_sm_modules.py - etc/sm.xml <modules>: the list's order changes
nothing a user sees (real clients: python3-slixmpp through parley-c2s, the
router and parley-sm on a real PostgreSQL), and a list that would break the
service is refused at start with an error that names the modules: a module
without one it needs, an unknown name, a name given twice.
"""

import asyncio
import subprocess

import pytest

import harness
import stack
from smutil import SmStack, client, logout_all


def jid(st, user, res=None):
    return "%s@%s%s" % (user, st.domain, "/" + res if res else "")


def modules(*names):
    return "<modules>%s</modules>" % "".join("<module>%s</module>" % n for n in names)


def test_offline_messages_delivered_whatever_the_module_order():
    """presence listed before message (and welcome before both): the
    offline messages and the welcome still reach the user at login (the
    flush used to sit behind presence's broadcast, which ended the chain,
    so they were stored and never delivered)."""
    st = stack.Stack(c2s=1, extra={"sm": modules("welcome", "presence", "message", "roster") +
                                   "<welcome><body>Hello there</body></welcome>"})
    st.start()
    try:
        for u in ("alice", "bob"):
            st.add_user(u, "pw")

        async def go():
            a = await client(st, "alice", "home")
            try:
                m = await asyncio.wait_for(a.inbox.get(), harness.WAIT)
                assert m["body"] == "Hello there"
                a.send_message(mto=jid(st, "bob"), mbody="while away", mtype="chat")
                deadline = asyncio.get_running_loop().time() + harness.WAIT
                # bob's welcome (his account is new to the sm) and alice's message
                while st.pg.psql("SELECT count(*) FROM offline WHERE owner = '%s'" %
                                 jid(st, "bob"))[1] != "2":
                    assert asyncio.get_running_loop().time() < deadline, "message not stored"
                    await asyncio.sleep(0.05)
                b = await client(st, "bob", "desk")
                try:
                    bodies = set()
                    for _ in range(2):
                        m = await asyncio.wait_for(b.inbox.get(), harness.WAIT)
                        assert m["delay"]["stamp"] is not None
                        bodies.add(m["body"])
                    assert bodies == {"Hello there", "while away"}
                finally:
                    await logout_all(b)
            finally:
                await logout_all(a)
        harness.run(go())
        codes = st.stop()
        print(st.logs()[-60000:])
        assert codes["sm"] == 0, codes
        assert not st.sanitizer_errors(), st.sanitizer_errors()[:5]
    finally:
        st.cleanup()


@pytest.fixture(scope="module")
def idle():
    """A stack whose sm is started only by the tests (with a config of
    theirs): PostgreSQL for the config's passwords, no router needed, since
    a refused config ends the sm before it connects anywhere."""
    s = SmStack()
    yield s
    s.cleanup()


def refused(st, body):
    """Start parley-sm with body added to sm.xml; it must exit non-zero at
    start, cleanly (no sanitizer report). Its log of this run."""
    st.extra["sm"] = body
    st._write_sm()
    d = st.daemons["sm"]
    d.start(wait=False)
    try:
        code = d.proc.wait(harness.START_WAIT)
    except subprocess.TimeoutExpired:
        d.stop()
        raise AssertionError("sm accepted %s:\n%s" % (body, d.fresh_log()[-3000:]))
    log = d.fresh_log()
    assert code != 0, log
    assert "sm ready" not in log
    assert not d.sanitizer_errors(), d.sanitizer_errors()[:5]
    return log


@pytest.mark.parametrize("names, needs", [
    (("presence", "message", "disco"), ("presence", "roster")),
    (("roster", "message", "disco"), ("message", "presence")),
    (("roster", "presence", "welcome"), ("welcome", "message")),
])
def test_missing_dependency_refused(idle, names, needs):
    log = refused(idle, modules(*names))
    assert "module %s needs module %s" % needs in log, log
    assert "add <module>%s</module>" % needs[1] in log, log


def test_unknown_module_refused(idle):
    log = refused(idle, modules("roster", "presence", "message", "offline"))
    assert "no module named 'offline'" in log, log
    assert "roster, message, presence, disco, ping, version, welcome" in log, log


def test_module_listed_twice_refused(idle):
    log = refused(idle, modules("roster", "presence", "message", "roster"))
    assert "roster listed twice" in log, log
