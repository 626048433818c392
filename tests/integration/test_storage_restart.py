"""test_storage_restart.py - PostgreSQL goes away in the middle of a
stream of queries. The storage_check driver issues numbered offline_store
calls at a steady pace and prints one line per callback; meanwhile the test
restarts (or stops, then later starts) the cluster. Afterwards: every
query has exactly one outcome; every acknowledged one is in the table with
the sequence number it was acknowledged with; everything in the table was
either acknowledged or failed with an error (never re-sent: no
duplicates); queries after the restart succeed again (reconnect); and
queries issued while the server was down waited and were sent after it
came back."""

import subprocess
import time

import harness
from pg import pg_fresh  # noqa: F401  (fixture)

OWNER = "stream@example.org"
N = 600
INTERVAL_MS = 5


def start_stream(pg):
    pg.psql("INSERT INTO users (jid, domain) VALUES ('%s', 'example.org')" % OWNER)
    return subprocess.Popen([harness.binary("tests/integration/storage_check"), "stream",
                             pg.dsn("parley_sm"), OWNER, str(N), str(INTERVAL_MS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc, done, lines):
    """Read the driver's lines until done() (bounded)."""
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, "driver too slow: %r" % lines[-5:]
        line = proc.stdout.readline()
        assert line, "driver ended early: %r" % lines[-5:]
        lines.append(line.strip())


def read_until_acks(proc, count, lines):
    read_until(proc, lambda: sum(l.startswith("ack ") for l in lines) >= count, lines)


def finish(proc, lines):
    out, err = proc.communicate(timeout=120)
    lines += out.splitlines()
    assert proc.returncode == 0, "\n".join(lines[-20:]) + err
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in err, err
    assert lines[-1] == "done"
    return err


def check_outcomes(pg, lines):
    acked, failed = {}, {}
    for line in lines:
        w = line.split(" ", 3)
        if w[0] == "ack":
            i = int(w[1])
            assert i not in acked and i not in failed, "two outcomes for %d" % i
            acked[i] = int(w[2])
        elif w[0] == "err":
            i = int(w[1])
            assert i not in acked and i not in failed, "two outcomes for %d" % i
            # A clear error: connection lost (maybe applied) or a timeout.
            assert w[2] in ("-16", "-6"), line
            assert "connection lost" in w[3] or "timeout" in w[3], line
            failed[i] = w[3]
        else:
            assert w[0] in ("issued", "reconnects", "done"), line
    assert sorted(list(acked) + list(failed)) == list(range(N)), "an outcome per query"
    _, out = pg.psql("SELECT seq, stanza FROM offline WHERE owner = '%s'" % OWNER)
    in_table = {}
    for row in out.splitlines():
        seq, stanza = row.split("|", 1)
        i = int(stanza.split("'n")[1].split("'")[0])
        assert i not in in_table, "stored twice: %d" % i
        in_table[i] = int(seq)
    for i, seq in acked.items():
        assert in_table.get(i) == seq, "acknowledged %d (seq %d) is not stored" % (i, seq)
    for i in in_table:
        assert i in acked or i in failed
    # After the server came back, everything succeeded again.
    assert all(i in acked for i in range(N - 100, N)), "queries after the restart fail"
    reconnects = [l for l in lines if l.startswith("reconnects ")]
    assert reconnects and int(reconnects[0].split()[1]) >= 1
    return acked, failed


def test_restart_mid_stream(pg_fresh):
    pg = pg_fresh
    proc = start_stream(pg)
    lines = []
    try:
        read_until_acks(proc, 100, lines)
        pg.restart()
        err = finish(proc, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check_outcomes(pg, lines)
    assert "is back" in err


def test_queries_wait_while_down(pg_fresh):
    pg = pg_fresh
    proc = start_stream(pg)
    lines = []
    try:
        read_until_acks(proc, 50, lines)
        pg.stop()
        # Queries issued once the driver has seen both connections go must
        # wait for the server.
        mark = len(lines)
        read_until(proc, lambda: sum(l.endswith(" down") for l in lines[mark:]) >= 100, lines)
        while_down = [int(l.split()[1]) for l in lines[mark:] if l.endswith(" down")]
        pg.start()
        finish(proc, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    acked, failed = check_outcomes(pg, lines)
    # Only what was in flight when the server stopped can have failed; what
    # was issued while it was down waited and went through.
    assert all(i in acked for i in while_down), failed
