"""ctlharness.py - helpers for the parleyctl integration tests.

Instance: one parleyctl instance directory (DIR) in a fresh temporary
directory, driven through the parleyctl binary of the build tree
(PARLEY_BUILD). as_user=None runs parleyctl as the caller (root in CI: the
per-daemon system users); as_user=NAME runs it through `runuser -u NAME`
with a DIR that user owns (the ordinary-user case). The database rows are
read with psql as parley_admin, the password from DIR/etc/secrets.
Every port init gives out (router, c2s, c2s direct TLS, s2s, s2s direct
TLS) is a free one below the ephemeral range (free_port); datadir= passes -T (templates and schema/ from there).

fake_datadir() makes such a data directory: the tree's etc/*.xml.in, and
for each of sm, c2s, s2s whose template the tree lacks (a daemon not
merged yet) a stand-in that uses every placeholder init fills.
"""

import glob
import hashlib
import hmac
import os
import pwd
import random
import re
import shutil
import socket
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


def _local_port_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_given = set()


def free_port():
    """A TCP port nothing listens on, below the kernel's ephemeral range:
    an instance binds its ports again at each start, and a port from that
    range (harness.free_port) may meanwhile be the local port of some
    outgoing connection, which a listener cannot bind."""
    lo, _ = _local_port_range()
    for _ in range(200):
        port = random.randrange(10000, max(lo, 10001))
        if port in _given:  # nothing listens yet on one given out before
            continue
        ok = True
        for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            try:
                with socket.socket(fam, socket.SOCK_STREAM) as s:
                    s.bind((addr, port))
            except OSError:
                ok = False
                break
        if ok:
            _given.add(port)
            return port
    return harness.free_port()


def psql_bin():
    return shutil.which("psql") or "/usr/bin/psql"


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.out = proc.stdout.decode("utf-8", "replace")
        self.err = proc.stderr.decode("utf-8", "replace")

    def __repr__(self):
        return "exit %d\nstdout: %s\nstderr: %s" % (self.code, self.out, self.err)


# Every placeholder `parleyctl init` fills (the brief's list plus the router's).
PLACEHOLDERS = ("domain", "sysconfdir", "runstatedir", "router_socket", "router_user",
                "c2s_user", "sm_user", "s2s_user", "sm_uid", "c2s_uid", "s2s_uid",
                "router_port", "c2s_port", "c2s_tls_port", "s2s_port", "s2s_tls_port",
                "db_dsn", "parley_group", "c2s_name")

# The daemon templates and the config file init writes from each.
DAEMON_TEMPLATES = {"sm.xml.in": "sm.xml", "c2s.xml.in": "c2s-1.xml", "s2s.xml.in": "s2s.xml"}


def _standin(root):
    """A template for daemon root that names every placeholder once, in the
    packaged paths init folds into DIR."""
    vals = "".join("  <v name='%s'>@%s@</v>\n" % (p, p) for p in PLACEHOLDERS)
    return ("<?xml version='1.0'?>\n"
            "<!-- %s.xml - a stand-in; @placeholders@ in comments stay. -->\n"
            "<%s>\n"
            "  <user>@%s_user@</user>\n"
            "  <pidfile>@runstatedir@/parley/%s.pid</pidfile>\n"
            "  <router name='x' connect='unix:@router_socket@'>"
            "<secret file='@sysconfdir@/parley/secrets/%s'/></router>\n"
            "  <db><dsn>@db_dsn@ user=parley_sm</dsn>"
            "<password file='@sysconfdir@/parley/secrets/db-parley_sm'/></db>\n"
            "%s</%s>\n" % (root, root, root, root, root, vals, root))


def fake_datadir(base, extra=None):
    """A data directory under base: see the module comment. extra: {file
    name: text} written over what is there. Returns its path."""
    d = os.path.join(base, "data")
    os.makedirs(d)
    os.chmod(base, 0o755)
    os.chmod(d, 0o755)
    for f in glob.glob(os.path.join(harness.REPO, "etc", "*.xml.in")):
        shutil.copy(f, d)
    for tmpl in DAEMON_TEMPLATES:
        path = os.path.join(d, tmpl)
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(_standin(tmpl.split(".")[0]))
    for name, text in (extra or {}).items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    os.symlink(os.path.join(harness.REPO, "storage", "schema"), os.path.join(d, "schema"))
    return d


def uncommented(text):
    """text without its XML comments."""
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def placeholders_left(text):
    """The @name@ left outside comments."""
    return re.findall(r"@[a-z0-9_]+@", uncommented(text))


class Instance:
    def __init__(self, as_user=None, datadir=None):
        self.exe = harness.binary("tools/parleyctl")
        self.as_user = as_user
        self.datadir = datadir
        self.base = tempfile.mkdtemp(prefix="parleyctl-")
        os.chmod(self.base, 0o755)
        self.dir = os.path.join(self.base, "inst")
        if as_user:
            pw = pwd.getpwnam(as_user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.c2s_port = free_port()
        self.c2s_tls_port = free_port()
        self.s2s_port = free_port()
        self.s2s_tls_port = free_port()
        self.outputs = []  # every parleyctl stderr, for the sanitizer check

    def env(self):
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        return env

    def ctl(self, *args, stdin=None, timeout=120):
        cmd = [self.exe, "-d", self.dir] + (["-T", self.datadir] if self.datadir else []) + \
            list(args)
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
        assert r.code == 0, "parleyctl %s failed: %r\n%s" % (" ".join(args), r, self.log_tails())
        return r

    def log_tails(self, lines=30):
        """The last lines of every log in DIR/log, for failure reports."""
        out = []
        logdir = os.path.join(self.dir, "log")
        for n in sorted(os.listdir(logdir)) if os.path.isdir(logdir) else ():
            tail = self.log(n[:-4]).splitlines()[-lines:]
            out.append("---- %s\n%s" % (n, "\n".join(tail)))
        return "\n".join(out)

    def init(self, domain="localhost", *extra):
        return self.ok("init", "--domain", domain, "--router-port", str(self.port),
                       "--c2s-port", str(self.c2s_port), "--c2s-tls-port", str(self.c2s_tls_port),
                       "--s2s-port", str(self.s2s_port), "--s2s-tls-port", str(self.s2s_tls_port),
                       *extra)

    def etc(self, rel):
        with open(os.path.join(self.dir, "etc", rel)) as f:
            return f.read()

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
