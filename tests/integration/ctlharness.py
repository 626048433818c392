"""ctlharness.py - helpers for the parleyctl integration tests.

Instance: one parleyctl instance directory (DIR) in a fresh temporary
directory, driven through the parleyctl binary of the build tree
(PARLEY_BUILD). as_user=None runs parleyctl as the caller (root in CI: the
per-daemon system users); as_user=NAME runs it through `runuser -u NAME`
with a DIR that user owns (the ordinary-user case). The database rows are
read with psql as parley_admin, the password from DIR/etc/secrets.
"""

import hashlib
import hmac
import os
import pwd
import shutil
import subprocess
import tempfile

import harness

TEST_USER = "parley-ctltest"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "Sanitizer has encountered a fatal error", "runtime error:")


def ensure_test_user():
    """An ordinary (non-root) user for the tests, created when missing."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", TEST_USER], check=True)
    return TEST_USER


def psql_bin():
    return shutil.which("psql") or "/usr/bin/psql"


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.out = proc.stdout.decode("utf-8", "replace")
        self.err = proc.stderr.decode("utf-8", "replace")

    def __repr__(self):
        return "exit %d\nstdout: %s\nstderr: %s" % (self.code, self.out, self.err)


class Instance:
    def __init__(self, as_user=None):
        self.exe = harness.binary("tools/parleyctl")
        self.as_user = as_user
        self.base = tempfile.mkdtemp(prefix="parleyctl-")
        os.chmod(self.base, 0o755)
        self.dir = os.path.join(self.base, "inst")
        if as_user:
            pw = pwd.getpwnam(as_user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.port = harness.free_port()
        self.outputs = []  # every parleyctl stderr, for the sanitizer check

    def env(self):
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        return env

    def ctl(self, *args, stdin=None, timeout=120):
        cmd = [self.exe, "-d", self.dir] + list(args)
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--"] + cmd
        proc = subprocess.run(cmd, input=stdin.encode() if stdin is not None else None,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=self.env(), timeout=timeout)
        r = Result(proc)
        self.outputs.append(r.err)
        return r

    def ok(self, *args, **kw):
        r = self.ctl(*args, **kw)
        assert r.code == 0, "parleyctl %s failed: %r" % (" ".join(args), r)
        return r

    def init(self, domain="localhost"):
        return self.ok("init", "--domain", domain, "--router-port", str(self.port))

    def log(self, name):
        try:
            with open(os.path.join(self.dir, "log", name + ".log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def secret(self, rel):
        with open(os.path.join(self.dir, "etc", "secrets", rel)) as f:
            return f.read().strip()

    def status(self):
        """(exit code, {name: line}) of `parleyctl status`."""
        r = self.ctl("status")
        lines = {}
        for line in r.out.splitlines():
            name, _, rest = line.partition(": ")
            lines[name] = rest
        return r.code, lines

    def psql(self, sql, *params):
        """Rows (lists of text) of a query as parley_admin; params are
        passed as psql variables :'v1', :'v2', ... (quoted by psql)."""
        env = dict(os.environ)
        env["PGPASSWORD"] = self.secret("db-parley_admin")
        cmd = [psql_bin(), "-h", os.path.join(self.dir, "pg", "run"), "-p", "5432",
               "-U", "parley_admin", "-d", "parley", "-X", "-A", "-t", "-F", "\t",
               "-v", "ON_ERROR_STOP=1"]
        for i, p in enumerate(params, 1):
            cmd += ["-v", "v%d=%s" % (i, p)]
        proc = subprocess.run(cmd, input=sql.encode(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, timeout=30)
        assert proc.returncode == 0, proc.stderr.decode()
        return [l.split("\t") for l in proc.stdout.decode().splitlines() if l]

    def sanitizer_errors(self):
        found = []
        logdir = os.path.join(self.dir, "log")
        texts = list(self.outputs)
        if os.path.isdir(logdir):
            for n in os.listdir(logdir):
                with open(os.path.join(logdir, n), "rb") as f:
                    texts.append(f.read().decode("utf-8", "replace"))
        for t in texts:
            found += [l for l in t.splitlines() if any(m in l for m in SANITIZER_MARKS)]
        return found

    def cleanup(self):
        if os.path.exists(os.path.join(self.dir, "ctl", "parleyctl.pid")) or \
                os.path.exists(os.path.join(self.dir, "ctl", "parleyctl.state")):
            self.ctl("stop")
        shutil.rmtree(self.base, ignore_errors=True)


def scram_check(row, password):
    """row: mechanism, salt hex, iterations, stored_key hex, server_key hex.
    True if password yields the stored keys (RFC 5802 / RFC 7677)."""
    mech, salt, iters, stored, server = row
    h = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech]
    salted = hashlib.pbkdf2_hmac(h, password.encode(), bytes.fromhex(salt), int(iters))
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored_key = hashlib.new(h, client_key).digest()
    server_key = hmac.new(salted, b"Server Key", h).digest()
    return stored_key.hex() == stored and server_key.hex() == server
