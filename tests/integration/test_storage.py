"""test_storage.py - storage/ against a real PostgreSQL (pg.py's throwaway
cluster): every typed call round-trips through the storage_check driver
(ASan build), queries without a server time out or are refused, and each
daemon's role is kept to its own tables."""

import os
import signal
import subprocess

import harness
from pg import pg  # noqa: F401  (fixture)

RUN_WAIT = 120


def driver(*args):
    p = subprocess.run([harness.binary("tests/integration/storage_check")] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=RUN_WAIT)
    return p


def no_sanitizer_report(text):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in text, text


def test_roundtrip_every_call(pg):
    p = driver("roundtrip", pg.dsn("parley_sm"), pg.dsn("parley_c2s"))
    no_sanitizer_report(p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("ok "), p.stdout
    assert int(p.stdout.split()[1]) > 250
    # What the driver wrote is in the tables, as written.
    _, out = pg.psql("SELECT encode(salt, 'hex') FROM credentials "
                     "WHERE jid = 'alice@example.org' AND mechanism = 'SCRAM-SHA-1'")
    assert out == "0001ff5c78002722"
    _, out = pg.psql("SELECT grp FROM roster_groups WHERE owner = 'alice@example.org' "
                     "ORDER BY grp COLLATE \"C\"")
    assert out.splitlines() == ["New", 'Work "quoted" \\ back,{x}']
    _, out = pg.psql("SELECT version FROM roster_version WHERE owner = 'alice@example.org'")
    assert out == "4"
    # Deleting a user deletes its data.
    pg.psql("DELETE FROM users WHERE jid = 'alice@example.org'")
    for table in ("credentials", "roster_items", "roster_groups", "roster_version", "offline",
                  "vcards", "private_xml", "blocklist", "last_activity", "archive"):
        col = "jid" if table == "credentials" else "owner"
        _, out = pg.psql("SELECT count(*) FROM %s WHERE %s = 'alice@example.org'" % (table, col))
        assert out == "0", table


def test_no_server_times_out_queue_bounded_close_fails():
    p = driver("offline", "host=/nonexistent-parley-socket-dir dbname=parley user=nobody")
    no_sanitizer_report(p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("ok "), p.stdout
    # One line per connection for the episode, not one per attempt (two
    # pools of two connections).
    lines = [l for l in p.stderr.splitlines() if "database connection" in l]
    assert len(lines) == 4, p.stderr


def test_c2s_role_cannot_read_rosters(pg):
    for sql in ("SELECT * FROM roster_items", "SELECT * FROM offline",
                "INSERT INTO vcards (owner, vcard) VALUES ('x@y', 'v')",
                "SELECT * FROM parley_schema"):
        rc, out = pg.psql(sql, role="parley_c2s", check=False)
        assert rc != 0 and "permission denied" in out, (sql, out)
    rc, out = pg.psql("SELECT count(*) FROM credentials", role="parley_c2s")
    assert rc == 0


def test_sm_role_cannot_read_credentials(pg):
    for sql in ("SELECT * FROM credentials", "INSERT INTO users (jid, domain) VALUES ('m@x', 'x')",
                "DELETE FROM users", "SELECT * FROM parley_schema",
                "UPDATE users SET domain = 'x'", "UPDATE users SET created_at = now()",
                "UPDATE users SET jid = 'm@x'", "CREATE TABLE sneaky (x int)"):
        rc, out = pg.psql(sql, role="parley_sm", check=False)
        assert rc != 0 and "permission denied" in out, (sql, out)
    rc, out = pg.psql("SELECT count(*) FROM roster_items", role="parley_sm")
    assert rc == 0
    # Its first-seen mark is the one column of users it may change.
    rc, out = pg.psql("UPDATE users SET sm_seen_at = sm_seen_at WHERE false", role="parley_sm")
    assert rc == 0


def test_admin_role_owns_the_schema(pg):
    _, out = pg.psql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
    assert out == "parley_admin"
    _, out = pg.psql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'parley%' AND rolsuper")
    assert out == ""


def test_query_timeout_keeps_the_connection(pg):
    locker = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-d", pg.dsn()],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    drv = None
    try:
        owner = "timeout@example.org"
        pg.psql("INSERT INTO users (jid, domain) VALUES ('%s', 'example.org');"
                "INSERT INTO vcards (owner, vcard) VALUES ('%s', '<v/>')" % (owner, owner))
        locker.stdin.write("BEGIN;\nSELECT 1 FROM vcards WHERE owner = '%s' FOR UPDATE;\n"
                           "\\echo locked\n" % owner)
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "1"
        assert locker.stdout.readline().strip() == "locked"
        drv = subprocess.Popen([harness.binary("tests/integration/storage_check"), "timeout",
                                pg.dsn("parley_sm"), owner], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = drv.stdout.readline()
        assert line.strip() == "timed out", line + drv.stdout.read() + drv.stderr.read()
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(timeout=RUN_WAIT)
        out, err = drv.communicate("go\n", timeout=RUN_WAIT)
        no_sanitizer_report(err)
        assert drv.returncode == 0 and out.startswith("ok "), out + err
    finally:
        for p in (locker, drv):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_frozen_backend_is_dropped(pg):
    """A backend that stops answering (SIGSTOP) costs its queries a timeout
    error and its connection, never a hang."""
    app = "parley-frozen-test"
    drv = subprocess.Popen([harness.binary("tests/integration/storage_check"), "frozen",
                            pg.dsn("parley_sm") + " application_name=" + app,
                            "frozen@example.org"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    stopped = []
    try:
        line = drv.stdout.readline()
        assert line.strip() == "ready", line + drv.stderr.read()
        _, out = pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = '%s'" % app)
        stopped = [int(p) for p in out.split()]
        assert len(stopped) == 1, out
        os.kill(stopped[0], signal.SIGSTOP)
        out, err = drv.communicate("go\n", timeout=RUN_WAIT)
        no_sanitizer_report(err)
        assert drv.returncode == 0 and out.startswith("ok "), out + err
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if drv.poll() is None:
            drv.kill()
            drv.wait()
