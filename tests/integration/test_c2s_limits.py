"""test_c2s_limits.py - parley-c2s limits, each on a stack configured with a
small value: new connections per second per IP (a flood from 127.0.0.1 is
refused while 127.0.0.2 logs in), connections per process, unauthenticated
connections in total, the pre-auth byte cap, the handshake timeout, the
bytes/s token bucket (reading pauses, nothing is dropped), pings to a
silent client, the PLAIN slots (taken before the key fetch, given back
once when the client leaves), connections reset in the accept queue,
refusals (a plain close on direct TLS, a connect token charged, the short
close wait) and IPv6 keying on ::1.
"""

import asyncio
import base64
import os
import resource
import signal
import socket
import struct
import subprocess
import time

import pytest

import harness
import stack
from stack import ClientRaw, NS_SASL


def limits_stack(**limits):
    body = "".join("<%s>%s</%s>" % (k.replace("_", "-"), v, k.replace("_", "-"))
                   for k, v in limits.items())
    s = stack.Stack(c2s=1, extra={"c2s": "  <limits>%s</limits>\n" % body})
    s.start()
    s.add_user("alice", "wonderland")
    return s


def finish(s):
    try:
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


async def refused(s, source="127.0.0.1"):
    """Connect and send a header: the stream error, or None if served."""
    raw = await ClientRaw.connect_client(s, source=source)
    try:
        feats = await raw.open()
        if feats is not None:
            return None
        return await raw.stream_error()
    finally:
        raw.close()


async def until_served(s, source, login=False):
    """A connection from source that gets features (and logs in), retried
    while the server is still counting closed connections."""
    deadline = time.monotonic() + harness.WAIT * 2
    while True:
        raw = await ClientRaw.connect_client(s, source=source)
        try:
            if login:
                await raw.login_plain("alice", "wonderland")
                return raw
            if await raw.open() is not None:
                return raw
        except AssertionError:
            pass
        raw.close()
        assert time.monotonic() < deadline, "never served from %s" % source
        await asyncio.sleep(0.1)


def test_flood_from_one_ip_throttled_other_ip_fine():
    s = limits_stack(connect_rate=1)
    try:
        async def go():
            conds = []
            for _ in range(20):
                conds.append(await refused(s))
            assert conds[0] is None  # the burst allowance lets the first ones in
            assert "policy-violation" in conds, conds
            # Another address is not affected by 127.0.0.1's flood.
            raw = await ClientRaw.connect_client(s, source="127.0.0.2")
            try:
                jid = await raw.login_plain("alice", "wonderland")
                assert jid == "alice@%s/raw" % s.domain
            finally:
                raw.close()
        harness.run(go())
        assert "connecting too fast" in s["c2s-1"].log()
    finally:
        finish(s)


def test_connections_per_ip():
    s = limits_stack(connections_per_ip=2, connect_rate=100)
    try:
        async def go():
            held = [await ClientRaw.connect_client(s) for _ in range(2)]
            for r in held:
                assert await r.open() is not None
            assert await refused(s) == "policy-violation"
            assert await refused(s, source="127.0.0.2") is None
            for r in held:
                r.close()
        harness.run(go())
    finally:
        finish(s)


def test_refused_connections_hold_no_slots():
    # 127.0.0.1 holds its two connections and keeps five refused ones open
    # (never closing its side): they must not count as unauthenticated
    # connections, or 127.0.0.2 would be locked out by them.
    s = limits_stack(connections_per_ip=2, max_unauthenticated=4, connect_rate=100)
    try:
        async def go():
            held = [await ClientRaw.connect_client(s) for _ in range(2)]
            for r in held:
                assert await r.open() is not None
            kept = []
            for _ in range(5):
                r = await ClientRaw.connect_client(s)
                kept.append(r)
                assert await r.open() is None  # the stream error instead
            assert await refused(s, source="127.0.0.2") is None
            for r in held + kept:
                r.close()
        harness.run(go())
    finally:
        finish(s)


def test_full_ip_table_shares_one_bucket():
    # A table of one address: 127.0.0.1 has its own entry, 127.0.0.2 and
    # 127.0.0.3 arrive when it is full and share one bucket (so one
    # connection between them), while 127.0.0.1 keeps its own.
    s = limits_stack(ip_table_size=1, connections_per_ip=1, connect_rate=100)
    try:
        async def go():
            first = await ClientRaw.connect_client(s)
            assert await first.open() is not None
            second = await ClientRaw.connect_client(s, source="127.0.0.2")
            assert await second.open() is not None
            assert await refused(s, source="127.0.0.3") == "policy-violation"
            for r in (first, second):
                r.close()
        harness.run(go())
    finally:
        finish(s)


def open_files_soft(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open files limit for %d" % pid)


def test_open_files_follow_max_connections():
    # Started with a soft limit of 1024 descriptors and configured for 4000
    # connections, the c2s raises its soft limit (up to the hard one) to
    # hold them all.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4200:
        pytest.skip("hard open files limit %d is too low for this test" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        s = limits_stack(max_connections=4000)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert open_files_soft(s["c2s-1"].pid) >= 4000
    finally:
        finish(s)
    # Beyond what the kernel allows any process: refused at start-up, with
    # a message that says why.
    with open("/proc/sys/fs/nr_open") as f:
        too_many = int(f.read()) + 1
    s = stack.Stack(c2s=1, extra={"c2s": "  <limits><max-connections>%d</max-connections>"
                                         "</limits>\n" % too_many})
    try:
        with pytest.raises(AssertionError) as e:
            s.start()
        assert "exited" in str(e.value) and "RLIMIT_NOFILE" in str(e.value)
        assert "max-connections" in str(e.value)
    finally:
        s.stop()
        s.cleanup()


def test_max_connections_and_unauthenticated():
    s = limits_stack(max_connections=3, max_unauthenticated=2, connect_rate=100)
    try:
        async def go():
            held = [await ClientRaw.connect_client(s) for _ in range(2)]
            for r in held:
                assert await r.open() is not None
            # Two unauthenticated already: the third is refused clearly.
            assert await refused(s) == "resource-constraint"
            held[0].close()
            held.pop(0)
            # The slot is free once c2s has seen the close: retry (bounded),
            # since each refused attempt holds a slot until it closes too.
            a = await until_served(s, "127.0.0.2", login=True)
            held.append(a)
            # One authenticated and two waiting: the process is full.
            b = await until_served(s, "127.0.0.3")
            held.append(b)
            assert await refused(s, source="127.0.0.4") == "resource-constraint"
            for r in held:
                r.close()
        harness.run(go())
        log = s["c2s-1"].log()
        assert "too many unauthenticated connections" in log
        assert "too many connections" in log
    finally:
        finish(s)


def test_handshake_timeout_and_preauth_bytes():
    s = limits_stack(handshake_timeout="1s", preauth_bytes="4k")
    try:
        async def go():
            raw = await ClientRaw.connect_client(s)
            try:
                await raw.open()
                assert await raw.stream_error(harness.WAIT * 2) == "connection-timeout"
            finally:
                raw.close()
            raw = await ClientRaw.connect_client(s)
            try:
                await raw.open()
                await raw.starttls()
                await raw.open()
                for _ in range(100):
                    raw.send("<abort xmlns='%s'/>" % NS_SASL)
                assert await raw.stream_error() == "policy-violation"
            finally:
                raw.close()
        harness.run(go())
        assert "too much data before authentication" in s["c2s-1"].log()
    finally:
        finish(s)


def test_whitespace_flood_before_auth_cut_at_cap():
    # Whitespace is no element: the cap must hold between elements too.
    s = limits_stack(preauth_bytes="8k")
    try:
        async def go():
            raw = await ClientRaw.connect_client(s)
            try:
                assert await raw.open() is not None
                for _ in range(16):
                    raw.send(" " * 4096)
                assert await raw.stream_error() == "policy-violation"
            finally:
                raw.close()
        harness.run(go())
    finally:
        finish(s)


def test_rate_pauses_reading_and_drops_nothing():
    s = limits_stack(rate="8k", stanza_size="4k")
    try:
        async def go():
            a, oa = await stack.login(s, "alice", "wonderland", resource="r")
            assert oa == "session"
            try:
                body = "x" * 1000
                for i in range(40):  # 40 KiB at 8 KiB/s
                    a.send_message(mto=str(a.boundjid), mbody="%d %s" % (i, body))
                for i in range(40):
                    m = await asyncio.wait_for(a.inbox.get(), harness.WAIT * 4)
                    assert m["body"].startswith("%d " % i)
            finally:
                await stack.logout(a)
        harness.run(go())
        assert "client throttled" in s["c2s-1"].log()
    finally:
        finish(s)


def test_ping_to_silent_client():
    s = limits_stack(ping_after="1s", ping_timeout="1s")
    try:
        async def go():
            raw = await ClientRaw.connect_client(s)
            try:
                await raw.login_plain("alice", "wonderland")
                el = await raw.recv(harness.WAIT * 2)
                assert el.tag == "{jabber:client}iq" and el.get("type") == "get"
                assert el.find("{urn:xmpp:ping}ping") is not None
                # No answer: the stream ends.
                assert await raw.stream_error(harness.WAIT * 2) == "connection-timeout"
            finally:
                raw.close()
        harness.run(go())
    finally:
        finish(s)


def test_idle_timeout():
    s = limits_stack(idle_timeout="1s", ping_after="0s")
    try:
        async def go():
            raw = await ClientRaw.connect_client(s)
            try:
                await raw.login_plain("alice", "wonderland")
                assert await raw.stream_error(harness.WAIT * 2) == "connection-timeout"
            finally:
                raw.close()
        harness.run(go())
    finally:
        finish(s)


class _CredentialsLocker:
    """A psql session on s's database that takes and releases a lock on the
    credentials table, so that c2s's PLAIN key fetches wait."""

    def __init__(self, s):
        self.s = s
        self.proc = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-d", s.pg.dsn()],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def sql(self, sql):
        """Runs sql and waits until psql has done it."""
        self.proc.stdin.write(sql + "\n\\echo done\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"

    def lock(self):
        self.sql("BEGIN;\nLOCK TABLE credentials IN ACCESS EXCLUSIVE MODE;")

    def commit(self):
        self.sql("COMMIT;")

    def fetch_waiting(self):
        """Returns once one c2s query waits on the lock (bounded)."""
        harness.poll(lambda: self.s.pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE "
            "usename = 'parley_c2s' AND wait_event_type = 'Lock'")[1] == "1",
            "c2s's fetch never waited on the lock", harness.WAIT * 2)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.kill()
            self.proc.wait()


async def _tls_stream(s):
    """A raw client stream to s's c2s after STARTTLS, its features read."""
    raw = await ClientRaw.connect_client(s)
    await raw.open()
    await raw.starttls()
    await raw.open()
    return raw


def _send_plain(raw):
    raw.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" %
             (NS_SASL, base64.b64encode(b"\0alice\0wonderland").decode()))


def test_plain_slots_taken_before_the_fetch():
    """limits/plain-jobs=1: while one PLAIN login waits for its keys (the
    credentials table is locked), a second gets temporary-auth-failure at
    once, with a text; once the first is through, logins work again."""
    s = limits_stack(plain_jobs=1)
    locker = _CredentialsLocker(s)
    try:
        locker.lock()

        async def go():
            first = await _tls_stream(s)
            second = await _tls_stream(s)
            try:
                _send_plain(first)
                await asyncio.get_event_loop().run_in_executor(None, locker.fetch_waiting)
                # The one slot is taken by a login still fetching its keys.
                el = await second.auth_plain("alice", "wonderland")
                assert el.tag == "{%s}failure" % NS_SASL, el
                assert el.find("{%s}temporary-auth-failure" % NS_SASL) is not None, el
                assert "try again" in el.find("{%s}text" % NS_SASL).text
                locker.commit()
                el = await first.recv(harness.WAIT * 2)
                assert el is not None and el.tag == "{%s}success" % NS_SASL, el
                # The slot is back: the refused client logs in now.
                el = await second.auth_plain("alice", "wonderland")
                assert el is not None and el.tag == "{%s}success" % NS_SASL, el
            finally:
                first.close()
                second.close()
        harness.run(go())
    finally:
        locker.close()
        finish(s)


def test_plain_slot_released_once_when_the_client_leaves():
    """limits/plain-jobs=1: a client that closes while its PLAIN fetch waits
    on the locked credentials table gives its slot back once the fetch
    ends, exactly once: afterwards one login gets through (a slot never
    given back, or given back twice and the count wrapped, would refuse
    every login), and of two at once under the lock, exactly one gets
    temporary-auth-failure at once and the other logs in."""
    s = limits_stack(plain_jobs=1)
    locker = _CredentialsLocker(s)

    def answer(el):
        assert el is not None and el.tag in ("{%s}success" % NS_SASL,
                                             "{%s}failure" % NS_SASL), el
        return "success" if el.tag.endswith("}success") else el[0].tag.split("}")[1]

    try:
        async def go():
            run = asyncio.get_running_loop().run_in_executor
            locker.lock()
            leaver = await _tls_stream(s)
            _send_plain(leaver)
            await run(None, locker.fetch_waiting)
            leaver.close()
            locker.commit()
            # The slot comes back when the leaver's fetch ends, soon after
            # the COMMIT: until then a login may be refused, never after.
            deadline = time.monotonic() + harness.WAIT * 2
            while True:
                raw = await _tls_stream(s)
                try:
                    _send_plain(raw)
                    got = answer(await raw.recv(harness.WAIT * 2))
                finally:
                    raw.close()
                if got == "success":
                    break
                assert got == "temporary-auth-failure", got
                assert time.monotonic() < deadline, "the leaver's PLAIN slot never came back"
                await asyncio.sleep(0.1)
            # Two at once while the table is locked: one slot, one refusal.
            locker.lock()
            a, b = await _tls_stream(s), await _tls_stream(s)
            try:
                _send_plain(a)
                _send_plain(b)
                await run(None, locker.fetch_waiting)
                # The refusal comes while the other's fetch still waits.
                tasks = {asyncio.ensure_future(r.recv(harness.WAIT * 2)): r for r in (a, b)}
                done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                assert len(done) == 1, "both answered while the table was locked"
                assert answer(done.pop().result()) == "temporary-auth-failure"
                locker.commit()
                assert answer(await pending.pop()) == "success"
            finally:
                a.close()
                b.close()
        harness.run(go())
    finally:
        locker.close()
        finish(s)


def test_connection_reset_before_accept_dropped_and_logged():
    """A connection reset while still in the accept queue has no peer
    address (getpeername: ENOTCONN): c2s drops it with a log line instead
    of keying the per-IP limits on garbage, and goes on serving."""
    s = limits_stack()
    try:
        c2s = s["c2s-1"]
        c2s.signal(signal.SIGSTOP)  # nothing is accepted meanwhile
        try:
            sock = socket.create_connection(("127.0.0.1", s.c2s_port), timeout=harness.WAIT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST
        finally:
            c2s.signal(signal.SIGCONT)
        harness.poll(lambda: "no peer address" in c2s.log(), lambda: c2s.log()[-3000:],
                     harness.WAIT * 2)

        async def go():
            raw = await until_served(s, "127.0.0.1", login=True)
            raw.close()
        harness.run(go())
    finally:
        finish(s)


def test_direct_tls_refused_is_a_plain_close():
    """At max-connections a direct TLS connection is closed before any TLS:
    the client's handshake fails (no certificate, no stream error: c2s does
    not spend a handshake on a refusal, see c2s_client_accept), the refusal
    is logged, and a STARTTLS client still gets resource-constraint."""
    import ssl

    s = limits_stack(max_connections=1)
    try:
        async def go():
            held = await ClientRaw.connect_client(s)
            try:
                assert await held.open() is not None
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    r, w = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", s.c2s_tls_port, ssl=ctx,
                                                server_hostname=s.domain), harness.WAIT)
                    w.close()
                # Logged at the refusal, before the close the client saw
                # (and only once while full: the STARTTLS one below adds none).
                assert "too many connections" in s["c2s-1"].log()
                assert await refused(s) == "resource-constraint"
            finally:
                held.close()
        harness.run(go())
    finally:
        finish(s)


def test_ipv6_clients_keyed_per_address():
    """IPv6 clients are accounted like IPv4 ones, per /64 (limits/
    ipv6-prefix): ::1 at connections-per-ip is refused while 127.0.0.1 is
    served. (This machine's loopback has ::1 only, so two addresses of one
    /64 and another /64 cannot be told apart end to end here; the keying
    itself is unit-tested in tests/unit/test_c2s_ipkey.c.)"""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        pytest.skip("::1 cannot be bound here: %s" % e)
    s = stack.Stack(c2s=1, ipv6=True, extra={"c2s": "  <limits><connections-per-ip>1"
                                             "</connections-per-ip><connect-rate>100"
                                             "</connect-rate></limits>\n"})
    try:
        s.start()

        async def go():
            held = await ClientRaw.connect_client(s, host="::1")
            try:
                assert await held.open() is not None
                raw = await ClientRaw.connect_client(s, host="::1")
                try:
                    assert await raw.open() is None
                    assert await raw.stream_error() == "policy-violation"
                finally:
                    raw.close()
                assert await refused(s, source="127.0.0.1") is None
            finally:
                held.close()
        harness.run(go())
    finally:
        finish(s)


def test_refused_connections_spend_connect_tokens():
    """A refused connection is charged to its address like a served one
    (a connect token): 127.0.0.1, refused again and again while it holds
    its one connection, is still refused once that connection is closed,
    now for connecting too fast. (That the debt ends once the flood stops
    is test_flood_from_one_ip_throttled_other_ip_fine's.)"""
    s = limits_stack(connections_per_ip=1, connect_rate=1)

    async def why_refused():
        # The stream error's text, read and then closed at once: waiting for
        # c2s's own close (C2S_REFUSE_CLOSE_MS) would make each attempt last
        # about as long as a token takes to come back.
        raw = await ClientRaw.connect_client(s)
        try:
            if await raw.open() is not None:
                return None
            el = await raw.recv(harness.WAIT * 2)
            assert harness.stream_error_condition(el), el
            return " ".join(t.text or "" for t in el)
        finally:
            raw.close()
    try:
        async def go():
            held = await ClientRaw.connect_client(s)
            assert await held.open() is not None
            for _ in range(4):  # a burst of 2 tokens, then into debt
                assert "too many connections from your address" in await why_refused()
            held.close()
            # Each attempt keeps the debt (it is bounded at two seconds' worth
            # of tokens): until c2s has seen the close, the reason is the
            # connection count; then it must be the rate, never a welcome.
            deadline = time.monotonic() + harness.WAIT * 2
            while True:
                why = await why_refused()
                assert why is not None, "served: refused connections cost no token"
                if "too many connections from your address" not in why:
                    break
                assert time.monotonic() < deadline, why
            assert "connecting too fast" in why, why
        harness.run(go())
    finally:
        finish(s)


def test_refused_connection_closed_before_an_ordinary_one():
    """A refused client that never closes its side holds its socket at c2s
    only briefly (C2S_REFUSE_CLOSE_MS): c2s drops it (a later write of the
    client's is answered with a reset) well before an ordinary stream
    error's connection, sent earlier, whose close waits for the client up
    to the streams' usual 5 s. Both end without the client closing."""
    s = limits_stack(connections_per_ip=1, connect_rate=100)
    header = ("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' to='%s' "
              "version='1.0'>")
    socks = []
    try:
        def connect(source, ns, until):
            sock = socket.create_connection(("127.0.0.1", s.c2s_port), timeout=harness.WAIT,
                                            source_address=(source, 0))
            socks.append(sock)
            sock.sendall((header % (ns, harness.NS_STREAM, s.domain)).encode())
            got = b""
            while until not in got:
                b = sock.recv(4096)
                assert b, got
                got += b
            return sock, got

        held, _ = connect("127.0.0.1", "jabber:client", b"</stream:features>")
        ordinary, got = connect("127.0.0.2", "jabber:server", b"</stream:stream>")
        assert b"invalid-namespace" in got
        refused_, got = connect("127.0.0.1", "jabber:client", b"</stream:stream>")
        assert b"policy-violation" in got

        def dropped(sock):
            """True once c2s closed the socket: a write gets a reset."""
            try:
                sock.send(b" ")
                return False
            except OSError:
                return True

        harness.poll(lambda: dropped(refused_), "the refused connection was never dropped",
                     harness.WAIT * 2)
        assert not dropped(ordinary)  # still within its close wait
        harness.poll(lambda: dropped(ordinary), "the ordinary connection was never dropped",
                     harness.WAIT * 2)
    finally:
        for sock in socks:
            sock.close()
        finish(s)
