"""test_c2s_login.py - logins through parley-c2s end to end: a real stack
(PostgreSQL, router, sm, c2s) and slixmpp clients. Each mechanism over
STARTTLS and direct TLS, wrong password, unknown user, resource conflict,
two resources of one account, a message between users on two c2s
processes sharing one port.
"""

import asyncio

import pytest

import harness
import stack


@pytest.fixture(scope="module")
def st():
    s = stack.Stack(c2s=1, ipv6=True)
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")
        yield s
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"])
@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "directtls"])
def test_login_each_mechanism(st, mech, direct):
    async def go():
        xmpp, outcome = await stack.login(st, "alice", "wonderland", mech=mech, direct=direct)
        try:
            assert outcome == "session", st.logs()[-6000:]
            assert str(xmpp.boundjid).startswith("alice@%s/" % st.domain)
        finally:
            await stack.logout(xmpp)
    harness.run(go())
    assert "authenticated as alice@%s (%s)" % (st.domain, mech) in st["c2s-1"].log()


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "directtls"])
def test_login_over_ipv6(st, direct):
    async def go():
        raw = await stack.ClientRaw.connect_client(st, direct=direct, host="::1")
        try:
            jid = await raw.login_plain("bob", "builder", resource="v6")
            assert jid == "bob@%s/v6" % st.domain
        finally:
            raw.close()
    harness.run(go())
    assert "client ::1: authenticated as bob@" in st["c2s-1"].log()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"])
def test_wrong_password(st, mech):
    async def go():
        xmpp, outcome = await stack.login(st, "alice", "rabbit-hole", mech=mech)
        xmpp.abort()
        return outcome
    assert harness.run(go()) in ("failed_auth", "disconnected")
    log = st["c2s-1"].log()
    assert "authentication failed" in log
    # No password, key or proof in any log line.
    assert "rabbit-hole" not in log and "wonderland" not in log


def test_unknown_user(st):
    async def go():
        xmpp, outcome = await stack.login(st, "nobody-here", "whatever", mech="SCRAM-SHA-1")
        xmpp.abort()
        return outcome
    assert harness.run(go()) in ("failed_auth", "disconnected")
    assert "authentication failed: no such user" in st["c2s-1"].log()


def test_unknown_user_looks_like_wrong_password(st):
    # SCRAM answers an unknown user with a normal challenge (made-up salt,
    # the same one each time) and fails only at the proof.
    async def attempt(user):
        raw = await stack.ClientRaw.connect_client(st)
        try:
            await raw.open()
            await raw.starttls()
            await raw.open()
            cond = await raw.auth_scram(user, "guess", "sha256")
            return cond, raw.challenged
        finally:
            raw.close()
    assert harness.run(attempt("ghost")) == ("not-authorized", True)
    assert harness.run(attempt("alice")) == ("not-authorized", True)


def test_failures_close_the_stream(st):
    """auth-attempts (3) failures on one stream: not-authorized each time,
    then the stream ends with policy-violation."""
    async def go():
        raw = await stack.ClientRaw.connect_client(st)
        try:
            await raw.open()
            await raw.starttls()
            await raw.open()
            for i in range(3):
                el = await raw.auth_plain("alice", "wrong%d" % i)
                assert el is not None and el.tag == "{%s}failure" % stack.NS_SASL, el
                assert el.find("{%s}not-authorized" % stack.NS_SASL) is not None
            assert await raw.stream_error(harness.WAIT * 3) == "policy-violation"
        finally:
            raw.close()
    harness.run(go())


def test_two_resources_and_conflict(st):
    async def go():
        a1, o1 = await stack.login(st, "alice", "wonderland", resource="one")
        a2, o2 = await stack.login(st, "alice", "wonderland", resource="two")
        b, ob = await stack.login(st, "bob", "builder", resource="desk")
        assert (o1, o2, ob) == ("session", "session", "session")
        try:
            # Both resources of one account get their own messages.
            for res, cl in (("one", a1), ("two", a2)):
                b.send_message(mto="alice@%s/%s" % (st.domain, res), mbody="hi " + res)
                m = await asyncio.wait_for(cl.inbox.get(), harness.WAIT)
                assert m["body"] == "hi " + res
                assert str(m["from"]) == "bob@%s/desk" % st.domain
            # A new session for alice/one replaces the old: conflict.
            errs = asyncio.get_event_loop().create_future()
            a1.add_event_handler("stream_error",
                                 lambda e: errs.done() or errs.set_result(e["condition"]))
            a3, o3 = await stack.login(st, "alice", "wonderland", resource="one")
            assert o3 == "session"
            assert await asyncio.wait_for(errs, harness.WAIT) == "conflict"
            b.send_message(mto="alice@%s/one" % st.domain, mbody="to the new one")
            m = await asyncio.wait_for(a3.inbox.get(), harness.WAIT)
            assert m["body"] == "to the new one"
            await stack.logout(a3)
        finally:
            for cl in (a1, a2, b):
                await stack.logout(cl)
    harness.run(go())


def test_from_is_stamped(st):
    """Whatever from a client writes, the recipient sees the session's JID."""
    async def go():
        a, _ = await stack.login(st, "alice", "wonderland", resource="r1")
        b, _ = await stack.login(st, "bob", "builder", resource="r2")
        try:
            m = a.make_message(mto="bob@%s/r2" % st.domain, mbody="spoof?")
            m["from"] = "mallory@%s/x" % st.domain
            m.send()
            got = await asyncio.wait_for(b.inbox.get(), harness.WAIT)
            assert str(got["from"]) == "alice@%s/r1" % st.domain
        finally:
            await stack.logout(a)
            await stack.logout(b)
    harness.run(go())


def which_c2s(s, marker):
    return [n for n in s.c2s_names if marker in s[n].log()]


def test_message_between_two_c2s_processes():
    s = stack.Stack(c2s=2)
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")

        async def go():
            a, oa = await stack.login(s, "alice", "wonderland", resource="a")
            assert oa == "session"
            # The kernel spreads connections over the processes sharing the
            # port; log bob in until he lands on the other one (bounded).
            b = None
            for i in range(40):
                b, ob = await stack.login(s, "bob", "builder", resource="b%d" % i)
                assert ob == "session"
                where = which_c2s(s, "for bob@%s/b%d" % (s.domain, i))
                if where and where != which_c2s(s, "for alice@%s/a" % s.domain):
                    break
                await stack.logout(b)
                b = None
            assert b is not None, "every login landed on one c2s process"
            a.send_message(mto=str(b.boundjid), mbody="across")
            m = await asyncio.wait_for(b.inbox.get(), harness.WAIT)
            assert m["body"] == "across"
            b.send_message(mto=str(a.boundjid), mbody="and back")
            m = await asyncio.wait_for(a.inbox.get(), harness.WAIT)
            assert m["body"] == "and back"
            await stack.logout(a)
            await stack.logout(b)
        harness.run(go())
        assert not s.stop_and_check()
    finally:
        s.cleanup()
