"""pg.py - a throwaway PostgreSQL cluster for the storage tests.

Cluster() runs initdb (scram-sha-256 for every connection, the superuser
password from a pwfile) into a fresh temporary directory, with the server
listening only on a Unix socket inside that directory (listen_addresses='',
a free port number used only for the socket's name, fsync off for speed),
starts it with pg_ctl, creates the database `parley`, applies the schema
with the storage_migrate driver (storage/migrate.c, as the superuser), and
gives the roles parley_admin, parley_c2s and parley_sm LOGIN with random
passwords. stop() (pg_ctl stop -m fast) removes the directory; restart()
stops and starts the same cluster.

The server binaries are the newest under /usr/lib/postgresql/*/bin.
PostgreSQL refuses to run as root: as root, initdb and the server run as
the system user `parley-test-pg` (created when missing) via runuser.

Also: fixtures `pg` (one cluster per test module) and `pg_fresh` (one per
test, for tests that restart it). Import them into a test module.
"""

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile

import pytest

import harness

PG_USER = "parley-test-pg"
ROLES = ("parley_admin", "parley_c2s", "parley_sm")
SCHEMA_DIR = os.path.join(harness.REPO, "storage", "schema")


def bindir():
    dirs = glob.glob("/usr/lib/postgresql/*/bin")
    if not dirs:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql "
                           "(apt-get install postgresql)")
    return max(dirs, key=lambda d: int(os.path.basename(os.path.dirname(d))))


def _as_pg_user():
    """The runuser prefix, creating the user if needed; [] when not root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", PG_USER], check=True)
    return ["runuser", "-u", PG_USER, "--"]


class Cluster:
    def __init__(self, dbname="parley"):
        self.bin = bindir()
        self.prefix = _as_pg_user()
        self.dir = tempfile.mkdtemp(prefix="parley-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.run = os.path.join(self.dir, "run")
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.port = harness.free_port()
        self.dbname = dbname
        self.password = {"postgres": secrets.token_hex(16)}
        for r in ROLES:
            self.password[r] = secrets.token_hex(16)
        self.running = False
        self._init()

    def _pg(self, args, **kw):
        return subprocess.run(self.prefix + args, check=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, **kw)

    def _init(self):
        os.mkdir(self.run, 0o755)
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password["postgres"] + "\n")
        os.chmod(pwfile, 0o600)
        if self.prefix:
            ent = pwd.getpwnam(PG_USER)
            for p in (self.dir, self.run, pwfile):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        self._pg([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                  "-A", "scram-sha-256", "--pwfile", pwfile, "-E", "UTF8", "--locale", "C.UTF-8",
                  "--no-sync"])
        os.unlink(pwfile)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\nlisten_addresses = ''\n"
                    "unix_socket_directories = '%s'\n"
                    "port = %d\n"
                    "fsync = off\n"
                    "full_page_writes = off\n"
                    "max_connections = 50\n" % (self.run, self.port))
        self.start()
        self.psql("CREATE DATABASE %s" % self.dbname, db="postgres")
        self.migrate()
        for r in ROLES:
            # Role passwords are test data; psql's variables keep them quoted.
            self.psql("ALTER ROLE %s LOGIN PASSWORD :'pw'" % r, variables={"pw": self.password[r]})

    def start(self):
        self._pg([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.logfile,
                  "-w", "-t", "60", "start"])
        self.running = True

    def stop(self):
        if self.running:
            self._pg([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast",
                      "-w", "-t", "60", "stop"])
            self.running = False

    def restart(self):
        self.stop()
        self.start()

    def cleanup(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, role="postgres", db=None):
        return "host=%s port=%d dbname=%s user=%s password=%s connect_timeout=10" % (
            self.run, self.port, db or self.dbname, role, self.password[role])

    def psql(self, sql, role="postgres", db=None, variables=None, check=True):
        """Run sql with psql; returns (returncode, output). Unaligned, tuples only."""
        args = ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                self.dsn(role, db)]
        for k, v in (variables or {}).items():
            args += ["-v", "%s=%s" % (k, v)]
        p = subprocess.run(args, input=sql, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if check and p.returncode != 0:
            raise RuntimeError("psql failed (%d): %s\n%s" % (p.returncode, sql, p.stdout))
        return p.returncode, p.stdout.strip()

    def migrate(self, schema_dir=SCHEMA_DIR, db=None, check=True):
        p = subprocess.run([harness.binary("tests/integration/storage_migrate"),
                            self.dsn("postgres", db), "migrate", schema_dir],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and p.returncode != 0:
            raise RuntimeError("migration failed: %s" % p.stdout)
        return p.returncode, p.stdout.strip()

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


@pytest.fixture(scope="module")
def pg():
    c = Cluster()
    yield c
    c.cleanup()


@pytest.fixture
def pg_fresh():
    c = Cluster()
    yield c
    c.cleanup()
