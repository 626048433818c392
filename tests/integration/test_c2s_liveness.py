"""test_c2s_liveness.py - what clients see when a part of the service goes:
kill -9 of c2s (the sm ends its sessions: a message to such a session is
answered with an error), the sm gone (new logins get
remote-connection-failed, and work again once it is back), the router gone
(every client stream ends with internal-server-error; c2s reconnects and
serves again), the last presence replayed after an sm restart (capped at
limits/presence-keep), and no start in a chroot without /dev/urandom
(unless PLAIN alone is configured).
"""

import asyncio
import os
import select
import subprocess
import time

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

import harness
import stack
from stack import ClientRaw


def new_stack():
    s = stack.Stack(c2s=1)
    s.start()
    s.add_user("alice", "wonderland")
    s.add_user("bob", "builder")
    return s


def wait_log(d, text, count=1, timeout=harness.START_WAIT):
    harness.poll(lambda: d.log().count(text) >= count,
                 lambda: "no %r in the log:\n%s" % (text, d.log()[-4000:]), timeout)


def test_kill_c2s_ends_its_sessions():
    """alice on one c2s, bob on the other, subscribed to each other; kill -9
    of alice's c2s: the sm ends her session and bob sees her unavailable."""
    s = stack.Stack(c2s=2)
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")
        alice_jid = "alice@%s" % s.domain

        def home(full):
            return [n for n in s.c2s_names if "started for " + full in s[n].log()]

        async def go():
            a, oa = await stack.login(s, "alice", "wonderland", resource="gone")
            assert oa == "session"
            a_home = home(alice_jid + "/gone")
            b = None
            for i in range(40):  # until the kernel puts bob on the other c2s
                b, ob = await stack.login(s, "bob", "builder", resource="b%d" % i)
                assert ob == "session"
                if home("bob@%s/b%d" % (s.domain, i)) not in ([], a_home):
                    break
                await stack.logout(b)
                b = None
            assert b is not None, "every login landed on one c2s process"
            loop = asyncio.get_event_loop()
            online, offline = loop.create_future(), loop.create_future()

            def on_avail(p):
                if p["from"].bare == alice_jid and not online.done():
                    online.set_result(True)

            def on_unavail(p):
                if p["from"].bare == alice_jid and not offline.done():
                    offline.set_result(str(p["from"]))
            b.add_event_handler("presence_available", on_avail)
            b.add_event_handler("presence_unavailable", on_unavail)
            a.send_presence()
            b.send_presence()
            b.send_presence_subscription(pto=alice_jid)  # alice's client approves
            await asyncio.wait_for(online, harness.WAIT * 2)
            await loop.run_in_executor(None, s.kill, a_home[0])
            assert await asyncio.wait_for(offline, harness.WAIT * 2) == alice_jid + "/gone"
            await stack.logout(b)
            a.abort()
        harness.run(go())
        wait_log(s["sm"], "%s is down: ending its 1 session" % home(alice_jid + "/gone")[0])
        s[home(alice_jid + "/gone")[0]].start()  # so that it stops cleanly below
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def test_sm_gone_then_back():
    s = new_stack()
    try:
        s["sm"].stop()
        wait_log(s["c2s-1"], "sm sm is down")

        async def refused():
            raw = await ClientRaw.connect_client(s)
            try:
                assert await raw.open() is None
                return await raw.stream_error()
            finally:
                raw.close()
        assert harness.run(refused()) == "remote-connection-failed"
        s["sm"].start()
        wait_log(s["c2s-1"], "domain %s is up" % s.domain, count=2)

        async def works():
            a, oa = await stack.login(s, "alice", "wonderland")
            assert oa == "session"
            await stack.logout(a)
        harness.run(works())
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def test_router_gone_closes_clients_and_c2s_comes_back():
    s = new_stack()
    try:
        async def go():
            raw = await ClientRaw.connect_client(s)
            try:
                await raw.login_plain("alice", "wonderland")
                s.router.kill()
                assert await raw.stream_error() == "internal-server-error"
            finally:
                raw.close()
        harness.run(go())
        s.router.start()
        wait_log(s["c2s-1"], "connected to the router again")
        wait_log(s["c2s-1"], "domain %s is up" % s.domain, count=2)

        async def works():
            a, oa = await stack.login(s, "alice", "wonderland")
            assert oa == "session"
            await stack.logout(a)
        harness.run(works())
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def test_sm_restart_keeps_sessions():
    """Bound clients stay while the sm is away: their stanzas bounce with a
    stanza error; after the sm's announce their sessions are resumed and
    messages flow again."""
    s = new_stack()
    try:
        async def go():
            a, oa = await stack.login(s, "alice", "wonderland", resource="a")
            b, ob = await stack.login(s, "bob", "builder", resource="b")
            assert (oa, ob) == ("session", "session")
            try:
                s["sm"].stop()
                await asyncio.get_event_loop().run_in_executor(
                    None, wait_log, s["c2s-1"], "sm sm is down")
                got = asyncio.get_event_loop().create_future()
                b.add_event_handler("message_error", lambda m: got.done() or got.set_result(m))
                iq_errors = []
                b.register_handler(Callback("iq errors", MatchXPath("{jabber:client}iq"),
                                            lambda iq: iq["type"] == "error" and
                                            iq_errors.append(iq["id"])))
                # An iq result is never answered, not even when undeliverable
                # (RFC 6120 §8.2.3); the message after it gets its error.
                b.send_raw("<iq type='result' id='r1' to='alice@%s/a'/>" % s.domain)
                b.send_message(mto="alice@%s/a" % s.domain, mbody="anyone?")
                err = await asyncio.wait_for(got, harness.WAIT)
                assert err["error"]["condition"] == "remote-server-timeout"
                assert iq_errors == [], iq_errors
                s["sm"].start()
                # The restarted sm's announce (its first run logged one too).
                await asyncio.get_event_loop().run_in_executor(
                    None, wait_log, s["sm"], "announce to c2s-1", 2)
                # Resumed: a message reaches alice again.
                deadline = time.monotonic() + harness.WAIT * 3
                while True:
                    b.send_message(mto="alice@%s/a" % s.domain, mbody="back")
                    try:
                        m = await asyncio.wait_for(a.inbox.get(), 0.5)
                        assert m["body"] == "back"
                        break
                    except asyncio.TimeoutError:
                        assert time.monotonic() < deadline, s.logs()[-5000:]
            finally:
                await stack.logout(a)
                await stack.logout(b)
        harness.run(go())
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def test_sigterm_system_shutdown_clean_exit():
    s = new_stack()
    try:
        async def go():
            raw = await ClientRaw.connect_client(s)
            try:
                await raw.login_plain("alice", "wonderland")
                s["c2s-1"].signal(15)
                assert await raw.stream_error() == "system-shutdown"
            finally:
                raw.close()
        harness.run(go())
        code = s["c2s-1"].proc.wait(harness.STOP_WAIT)  # the first TERM's orderly stop
        assert code == 0, "exit %r: %s" % (code, s["c2s-1"].log()[-3000:])
        wait_log(s["sm"], "ended")
        assert not s.sanitizer_errors(), s["c2s-1"].log()[-3000:]
    finally:
        s.cleanup()


def test_closing_client_session_ended_at_once():
    """alice's stream ends with a stream error but her socket stays open
    (the c2s waits for her EOF; plaintext, so no TLS close_notify makes the
    client close): her session ends at the sm at once, so an iq bob sends
    to her is answered with an error instead of vanishing."""
    s = stack.Stack(c2s=1, extra={"c2s": "  <domain name='example.test' tls-required='no'/>\n"})
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")

        async def go():
            alice = await ClientRaw.connect_client(s)
            bob = await ClientRaw.connect_client(s)
            try:
                await alice.open()
                assert await alice.auth_scram("alice", "wonderland") == "success"
                alice.reset()
                await alice.open()
                alice.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:"
                           "xmpp-bind'><resource>raw</resource></bind></iq>")
                el = await alice.recv(harness.WAIT * 2)
                assert el is not None and el.get("type") == "result", el
                ajid = "alice@%s/raw" % s.domain
                await bob.login_plain("bob", "builder")
                alice.send("<a><b></a>")  # not well-formed
                got = None
                while got is None or got.tag != "{%s}error" % harness.NS_STREAM:
                    got = await alice.recv()
                    assert got is not None, "no stream error"
                bob.send("<iq type='get' id='v1' to='%s'><query xmlns='jabber:iq:version'/>"
                         "</iq>" % ajid)
                el = await bob.recv(harness.WAIT)
                while el is not None and el.get("id") != "v1":
                    el = await bob.recv(harness.WAIT)
                assert el is not None and el.get("type") == "error", el
            finally:
                alice.close()
                bob.close()
        harness.run(go())
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def test_starttls_during_sasl_refused():
    s = stack.Stack(c2s=1, extra={"c2s": "  <domain name='example.test' tls-required='no'/>\n"})
    try:
        s.start()
        s.add_user("alice", "wonderland")

        async def go():
            import base64
            raw = await ClientRaw.connect_client(s)
            try:
                await raw.open()
                first = base64.b64encode(b"n,,n=alice,r=abcdefgh").decode()
                raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                         "mechanism='SCRAM-SHA-256'>%s</auth>" % first)
                el = await raw.recv(harness.WAIT * 2)
                assert el is not None and el.tag.endswith("}challenge"), el
                raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                got = await raw.expect_closed(harness.WAIT * 2)
                assert any(e.tag == "{urn:ietf:params:xml:ns:xmpp-tls}failure" for e in got), got
            finally:
                raw.close()
        harness.run(go())
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def test_sm_restart_replays_presence_capped():
    """A session's last presence is replayed to a restarted sm; one larger
    than limits/presence-keep (8k by default) was routed in full, but what
    c2s kept of it (and so what a contact learns after the restart) is its
    show, priority and status only (the status in the stanza's xml:lang,
    both keeping theirs). A small one comes back whole."""
    s = new_stack()
    C = "{jabber:client}"
    LANG = "{http://www.w3.org/XML/1998/namespace}lang"
    try:
        async def go():
            d = s.domain
            a1 = await ClientRaw.connect_client(s)
            a2 = await ClientRaw.connect_client(s)
            b = await ClientRaw.connect_client(s)
            try:
                await a1.login_plain("alice", "wonderland", resource="big")
                await a2.login_plain("alice", "wonderland", resource="small")
                await b.login_plain("bob", "builder", resource="b")
                # bob subscribes to alice, alice approves (from one resource:
                # requests go to available resources).
                for r in (a1, a2, b):
                    r.send("<presence/>")
                b.send("<presence to='alice@%s' type='subscribe'/>" % d)
                await a1.expect(lambda e: e.tag == C + "presence" and
                                e.get("type") == "subscribe", what="bob's request")
                a1.send("<presence to='bob@%s' type='subscribed'/>" % d)
                await b.expect(lambda e: e.tag == C + "presence" and
                               e.get("type") == "subscribed", what="alice's approval")
                big = "A" * 16000
                a1.send("<presence xml:lang='en'><show>away</show><priority>5</priority>"
                        "<status xml:lang='de'>Mittag</status><status xml:lang='en'>lunch"
                        "</status><x xmlns='urn:example:big'>%s</x></presence>" % big)
                a2.send("<presence><show>dnd</show><x xmlns='urn:example:small'>s</x>"
                        "</presence>")
                # Routed in full before the restart.
                got = await b.expect(lambda e: e.tag == C + "presence" and
                                     e.get("from") == "alice@%s/big" % d and
                                     e.find("{urn:example:big}x") is not None,
                                     what="alice/big's presence")
                assert got.find("{urn:example:big}x").text == big
                await b.expect(lambda e: e.tag == C + "presence" and
                               e.get("from") == "alice@%s/small" % d and
                               e.find(C + "show") is not None,
                               what="alice/small's presence")
                s["sm"].stop()
                loop = asyncio.get_event_loop()
                await loop.run_in_executor(None, wait_log, s["c2s-1"], "sm sm is down")
                s["sm"].start()
                await loop.run_in_executor(None, wait_log, s["sm"], "(resumed)", 3)
                # bob's replayed (or next initial) presence makes the sm probe
                # alice: it answers with what c2s replayed. bob goes
                # unavailable and back (bounded) in case alice's replay
                # came after his.
                deadline = time.monotonic() + harness.WAIT * 3
                seen = {}
                while len(seen) < 2:
                    assert time.monotonic() < deadline, (seen, s.logs()[-5000:])
                    try:
                        while len(seen) < 2:
                            e = await b.expect(lambda e: e.tag == C + "presence" and
                                               e.get("type") is None and
                                               (e.get("from") or "").startswith("alice@"),
                                               timeout=1.0, what="alice's presence")
                            seen[e.get("from")] = e
                    except AssertionError:
                        b.send("<presence type='unavailable'/><presence/>")
                kept = seen["alice@%s/big" % d]
                assert kept.find(C + "show").text == "away"
                assert kept.find(C + "priority").text == "5"
                # One status, the one in the stanza's language, with it.
                assert kept.get(LANG) == "en"
                assert [(st.text, st.get(LANG)) for st in kept.findall(C + "status")] == \
                    [("lunch", "en")]
                assert kept.find("{urn:example:big}x") is None
                whole = seen["alice@%s/small" % d]
                assert whole.find(C + "show").text == "dnd"
                assert whole.find("{urn:example:small}x").text == "s"
            finally:
                for r in (a1, a2, b):
                    r.close()
        harness.run(go())
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def _jailed_stack(more=""):
    """A stack, not started, whose c2s config (with the elements in more)
    chroots c2s to an empty directory: no /dev/urandom there. Returns the
    stack and the path of c2s's config."""
    s = stack.Stack(c2s=1, extra={"c2s": "  <chroot>@JAIL@</chroot>\n" + more})
    try:
        jail = os.path.join(s.dir, "jail")
        os.mkdir(jail, 0o755)
        cfg = s["c2s-1"].config
        with open(cfg) as f:
            text = f.read().replace("@JAIL@", jail)
        with open(cfg, "w") as f:
            f.write(text)
    except BaseException:
        s.cleanup()
        raise
    return s, cfg


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root (CI runs the tests as root)")
def test_chroot_without_urandom_refused():
    """Cyrus SASL seeds its SCRAM nonces from /dev/urandom and quietly falls
    back to the pid and time when it cannot open it: chrooted where it is
    missing, c2s refuses to start and says why."""
    s, cfg = _jailed_stack()
    try:
        p = subprocess.run([harness.binary("c2s/parley-c2s"), "-f", "-c", cfg],
                           capture_output=True, text=True, timeout=harness.START_WAIT,
                           env=s["c2s-1"].env())
        assert p.returncode == 1, p.stderr[-3000:]
        assert "/dev/urandom, which cannot be read here" in p.stderr, p.stderr[-3000:]
        assert "mknod -m 444" in p.stderr
        assert "ERROR: AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr
    finally:
        s.cleanup()


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root (CI runs the tests as root)")
def test_chroot_without_urandom_fine_with_plain_only():
    """With PLAIN alone (no SCRAM, so Cyrus makes no nonces) the random
    source is not needed: c2s starts in a jail without /dev/urandom."""
    s, cfg = _jailed_stack("  <sasl><mechanisms>PLAIN</mechanisms></sasl>\n")
    p = None
    try:
        p = subprocess.Popen([harness.binary("c2s/parley-c2s"), "-f", "-c", cfg],
                             stderr=subprocess.PIPE, env=s["c2s-1"].env())
        # "started" comes after the jail and the checks that follow it.
        out = b""
        deadline = time.monotonic() + harness.START_WAIT
        while b"started" not in out:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([p.stderr], [], [], left)[0], out[-3000:]
            chunk = os.read(p.stderr.fileno(), 65536)
            assert chunk, "c2s exited: %s" % out[-3000:]
            out += chunk
        assert b"cannot be read here" not in out
    finally:
        if p is not None:
            p.kill()
            p.wait()
            p.stderr.close()
        s.cleanup()
