"""test_storage_schema.py - storage/migrate.c (the storage_migrate driver,
the calls parleyctl makes): applying twice is a no-op, a failing migration
rolls back whole and stops, bad file names are refused, status reports the
versions."""

import os
import shutil

from pg import SCHEMA_DIR, pg  # noqa: F401  (fixture)

import harness
import subprocess


def status(pg, db, schema_dir=SCHEMA_DIR):
    p = subprocess.run([harness.binary("tests/integration/storage_migrate"),
                        pg.dsn("postgres", db), "status", schema_dir],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout
    words = p.stdout.split()
    return int(words[1]), int(words[3])


def new_db(pg, name):
    pg.psql("CREATE DATABASE %s" % name, db="postgres")


def latest():
    return max(int(f[:3]) for f in os.listdir(SCHEMA_DIR) if f.endswith(".sql"))


def test_fresh_database_status_then_migrate_twice(pg):
    new_db(pg, "m_twice")
    assert status(pg, "m_twice") == (0, latest())
    rc, out = pg.migrate(db="m_twice")
    assert rc == 0 and out == "applied %d" % latest()
    assert status(pg, "m_twice") == (latest(), latest())
    _, before = pg.psql("SELECT version, name, applied_at FROM parley_schema", db="m_twice")
    rc, out = pg.migrate(db="m_twice")
    assert rc == 0 and out == "applied 0"
    _, after = pg.psql("SELECT version, name, applied_at FROM parley_schema", db="m_twice")
    assert before == after


def test_first_seen_marks_the_accounts_that_existed(pg, tmp_path):
    # 003 adds the sm's first-seen mark: accounts made before it count as
    # seen (no welcome for them), accounts made after it do not.
    new_db(pg, "m_seen")
    d = tmp_path / "schema"
    d.mkdir()
    for f in os.listdir(SCHEMA_DIR):
        if f.endswith(".sql") and int(f[:3]) < 3:
            shutil.copy(os.path.join(SCHEMA_DIR, f), d)
    rc, out = pg.migrate(schema_dir=str(d), db="m_seen")
    assert out == "applied 2"
    pg.psql("INSERT INTO users (jid, domain) VALUES ('old@example.org', 'example.org')",
            db="m_seen")
    rc, out = pg.migrate(db="m_seen")
    assert rc == 0 and out == "applied %d" % (latest() - 2)
    pg.psql("INSERT INTO users (jid, domain) VALUES ('new@example.org', 'example.org')",
            db="m_seen")
    _, out = pg.psql("SELECT jid, sm_seen_at IS NOT NULL FROM users ORDER BY jid", db="m_seen")
    assert out.splitlines() == ["new@example.org|f", "old@example.org|t"]


def test_failing_migration_rolls_back_whole(pg, tmp_path):
    new_db(pg, "m_fail")
    d = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, d)
    bad = d / "900-half-done.sql"
    bad.write_text("SET LOCAL ROLE parley_admin;\n"
                   "CREATE TABLE half_done (x int);\n"
                   "INSERT INTO users (jid, domain) VALUES ('mig@example.org', 'example.org');\n"
                   "SELECT 1 / 0;\n")
    (d / "901-after.sql").write_text("SET LOCAL ROLE parley_admin;\n"
                                     "CREATE TABLE after_bad (x int);\n")
    rc, out = pg.migrate(schema_dir=str(d), db="m_fail", check=False)
    assert rc != 0
    assert "900-half-done" in out and "division by zero" in out, out
    # The good ones before it stay applied; nothing of the bad one is left;
    # nothing after it ran.
    assert "applied %d" % latest() in out.splitlines()
    assert status(pg, "m_fail", str(d)) == (latest(), 901)
    _, out = pg.psql("SELECT to_regclass('half_done') IS NULL, to_regclass('after_bad') IS NULL,"
                     " (SELECT count(*) FROM users)", db="m_fail")
    assert out == "t|t|0"
    # Fixed, the run goes on from there.
    bad.write_text("SET LOCAL ROLE parley_admin;\nCREATE TABLE half_done (x int);\n")
    rc, out = pg.migrate(schema_dir=str(d), db="m_fail")
    assert out == "applied 2"
    assert status(pg, "m_fail", str(d)) == (901, 901)
    _, out = pg.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'after_bad'",
                     db="m_fail")
    assert out == "parley_admin"


def test_bad_file_names_are_refused(pg, tmp_path):
    new_db(pg, "m_names")
    for i, name in enumerate(("1-short.sql", "002 space.sql", "003-x.sql.sql", "abc-x.sql")):
        d = tmp_path / ("s%d" % i)
        shutil.copytree(SCHEMA_DIR, d)
        (d / name).write_text("SELECT 1;\n")
        rc, out = pg.migrate(schema_dir=str(d), db="m_names", check=False)
        assert rc != 0 and "NNN-name.sql" in out, (name, out)
    d = tmp_path / "dup"
    shutil.copytree(SCHEMA_DIR, d)
    (d / "001-again.sql").write_text("SELECT 1;\n")
    rc, out = pg.migrate(schema_dir=str(d), db="m_names", check=False)
    assert rc != 0 and "two schema files for version 001" in out, out
    assert status(pg, "m_names") == (0, latest())
    rc, out = pg.migrate(schema_dir=str(tmp_path / "missing"), db="m_names", check=False)
    assert rc != 0 and "cannot open schema directory" in out
