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
    s = stack.Stack(c2s=1)
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")
        yield s
        errs = s.sanitizer_errors()
        assert not errs, "sanitizer reports: %s\n%s" % (errs[:5], s.logs()[-8000:])
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
