#!/usr/bin/python3
"""run-xmpp-bench.py - XMPP server benchmarks with tests/bench/xmppload.

Starts a server, creates users fast, runs the load driver and prints the
figures of issues #5 and #6:

  1. logins + memory: --sessions users (default 10,000) log in with
     STARTTLS + SCRAM-SHA-1 + bind + roster get + presence; login rate, and
     RSS summed over the server processes per idle authenticated TLS session
     (on a fresh server, measured after the logins settle);
  2. PLAIN logins: --plain-users users with STARTTLS + PLAIN;
  3. messages: --msg-users users (default 1,000), user i -> user i+1, as fast
     as the server takes them; messages/s and CPU time per message of each
     server process;
  4. latency: the same at half the rate found in 3; p50/p90/p99/max;
  5. latency at a low rate (--low-rate, 1,000 messages/s).

Targets:
  parley   (default) PG + router + sm + c2s from tests/integration/stack.py,
           binaries from PARLEY_BUILD (a release build: configure without
           --enable-sanitizers). Builds nothing.
  prosody  /usr/bin/prosody (Debian package) with its own config in a temp
           dir, on a free loopback port, as the `prosody` user when root
           (setpriv, so that the raised RLIMIT_NOFILE holds).

--phases picks a subset (login = 1, plain = 2, msg = 3, latency = 4 and 5;
latency needs msg), e.g. --phases login,msg for memory and CPU per message.

The driver is pinned to the last CPU (taskset), Prosody to CPU 0; Parley's
daemons are left to the scheduler (several processes). Run as root so that
RLIMIT_NOFILE can be raised for 10,000 sessions.

  PARLEY_BUILD=$PWD/build/rel tests/bench/run-xmpp-bench.py
  tests/bench/run-xmpp-bench.py --target prosody --sessions 10000
"""

import argparse
import os
import pwd
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

PASSWORD = "bench-secret"
DOMAIN = "bench.test"
NOFILE = 65536


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    """Children (daemons, driver) inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_port(port, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit("%s exited with %d at start-up" % (what, proc.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("%s did not listen on port %d within %ds" % (what, port, timeout))


# ---- targets


class Prosody:
    """Prosody with a private config, data dir and certificate."""

    name = "prosody"

    def __init__(self, users):
        self.dir = tempfile.mkdtemp(prefix="xmppbench-prosody-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.cfg = os.path.join(self.dir, "prosody.cfg.lua")
        self.data = os.path.join(self.dir, "data")
        os.makedirs(os.path.join(self.dir, "certs"))
        crt, key = os.path.join(self.dir, DOMAIN + ".crt"), os.path.join(self.dir, DOMAIN + ".key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                        "-subj", "/CN=" + DOMAIN, "-addext", "subjectAltName=DNS:" + DOMAIN,
                        "-keyout", key, "-out", crt], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(self.cfg, "w") as f:
            f.write("""-- written by run-xmpp-bench.py
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ warn = "{d}/prosody.log" }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = true
authentication = "internal_hashed"
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "posix" }}
modules_disabled = {{ "s2s" }}
certificates = "{d}/certs"
VirtualHost "{dom}"
  ssl = {{ certificate = "{crt}", key = "{key}" }}
""".format(d=self.dir, port=self.port, dom=DOMAIN, crt=crt, key=key))
        self.as_root = os.geteuid() == 0
        self.owner = "prosody" if self.as_root else None
        self._chown()
        # One account through prosodyctl (salt, iteration count and keys as
        # Prosody makes them), copied for the others: one PBKDF2 per run in
        # the driver thanks to its key cache, and no cost the server would
        # not have anyway.
        self._run(["prosodyctl", "--config", self.cfg, "register", "user1", DOMAIN, PASSWORD])
        acc = os.path.join(self.data, DOMAIN.replace(".", "%2e"), "accounts")
        with open(os.path.join(acc, "user1.dat"), "rb") as f:
            first = f.read()
        for i in range(2, users + 1):
            with open(os.path.join(acc, "user%d.dat" % i), "wb") as f:
                f.write(first)
        self._chown()
        self.proc = None

    def _chown(self):
        if not self.owner:
            return
        pw = pwd.getpwnam(self.owner)
        for root, dirs, files in os.walk(self.dir):
            for n in dirs + files:
                os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _cmd(self, args):
        # setpriv rather than runuser: no PAM session, which would reset
        # RLIMIT_NOFILE to 1024
        if not self.owner:
            return args
        return ["setpriv", "--reuid", self.owner, "--regid", self.owner, "--init-groups"] + args

    def _run(self, args):
        subprocess.run(self._cmd(args), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def start(self):
        log = open(os.path.join(self.dir, "stdout.log"), "ab")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0"] + self._cmd(["prosody", "--config", self.cfg, "-F"]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        wait_port(self.port, self.proc, "prosody")

    def pids(self):
        """--pid name=pid of the server process."""
        with open(os.path.join(self.dir, "prosody.pid")) as f:
            return ["--pid", "prosody=%s" % f.read().strip()]

    def restart(self):
        self.stop()
        self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            with open(os.path.join(self.dir, "prosody.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 15)
            self.proc.wait(30)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Parley:
    """PG + router + sm + c2s-1 (tests/integration/stack.py), release binaries."""

    name = "parley"
    # Raised limits for 10,000 sessions from a few addresses at full speed
    # (the daemons' own config elements, see etc/c2s.xml.in and
    # etc/sm.xml.in). Per-connection byte rates stay at their defaults.
    EXTRA = {
        "c2s": ("  <max-open-files>20000</max-open-files>\n"
                "  <limits><max-connections>15000</max-connections>"
                "<max-unauthenticated>15000</max-unauthenticated>"
                "<connections-per-ip>15000</connections-per-ip>"
                "<connect-rate>1000000</connect-rate></limits>\n"),
        "sm": "  <cache><users>20000</users></cache>\n",
    }
    ROUTER_LIMITS = {"queue-max": str(64 << 20), "max-connections": "1024"}

    def __init__(self, users):
        if "PARLEY_BUILD" not in os.environ:
            raise SystemExit("set PARLEY_BUILD to a release build tree (configure without "
                             "--enable-sanitizers)")
        with open(os.path.join(os.environ["PARLEY_BUILD"], "config.log")) as f:
            if "--enable-sanitizers" in f.read(4096):
                raise SystemExit("PARLEY_BUILD is a sanitizer build: figures would be "
                                 "meaningless")
        import stack
        self.st = stack.Stack(domain=DOMAIN, extra=self.EXTRA,
                              router_limits=self.ROUTER_LIMITS)
        # stack.py writes debug logging for the tests; a benchmark measures
        # the daemons at the level they run in production.
        for path in [self.st.router.config] + [d.config for d in self.st.daemons.values()]:
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text.replace("<level>debug</level>", "<level>info</level>"))
        self.port = self.st.c2s_port
        self._users(users)

    def _users(self, n):
        """n users in two statements: one salt and one set of SCRAM keys for all
        (the driver caches its PBKDF2 by salt, and c2s never runs PBKDF2 for
        SCRAM, so sharing a salt saves only set-up time)."""
        import stack
        salt = os.urandom(16)
        rows = []
        for mech, h in (("SCRAM-SHA-1", "sha1"), ("SCRAM-SHA-256", "sha256")):
            stored, server = stack.scram_keys(PASSWORD, salt, 4096, h)
            rows.append("('%s', decode('%s', 'hex'), 4096, decode('%s', 'hex'), "
                        "decode('%s', 'hex'))" % (mech, salt.hex(), stored.hex(), server.hex()))
        sql = ("BEGIN;\n"
               "INSERT INTO users (jid, domain) SELECT 'user' || i || '@{d}', '{d}' "
               "FROM generate_series(1, {n}) AS i;\n"
               "INSERT INTO credentials SELECT 'user' || i || '@{d}', k.* "
               "FROM generate_series(1, {n}) AS i, (VALUES {rows}) AS k;\n"
               "COMMIT;\n").format(d=DOMAIN, n=n, rows=", ".join(rows))
        self.st.pg.psql(sql)

    def start(self):
        self.st.start()

    def pids(self):
        out = ["--pid", "router=%d" % self.st.router.pid]
        for name, d in self.st.daemons.items():
            out += ["--pid", "%s=%d" % (name, d.pid)]
        # PostgreSQL works for logins too (credentials, roster, presence
        # state): its CPU time counts, its RSS is not the daemons'.
        with open(os.path.join(self.st.pg.data, "postmaster.pid")) as f:
            master = int(f.readline())
        out += ["--cpu-pid", "pg=%d" % master]
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                out += ["--cpu-pid", "pg=%s" % pid]
        return out

    def restart(self):
        self.st.stop()
        self.st.start()

    def cleanup(self):
        errs = self.st.sanitizer_errors()
        self.st.cleanup()
        if errs:
            print("sanitizer errors in daemon logs:\n" + "\n".join(errs))


# ---- driver


def driver(args, port, pids, extra, label):
    cmd = ["taskset", "-c", str(os.cpu_count() - 1), args.xmppload,
           "--domain", DOMAIN, "--port", str(port), "--password", PASSWORD,
           "--sources", str(args.sources), "--concurrency", str(args.concurrency)]
    cmd += pids + extra
    print("## %s: %s" % (label, " ".join(cmd[3:])), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(p.stdout, end="", flush=True)
    if p.returncode not in (0, 1):
        raise SystemExit("xmppload failed (%d)" % p.returncode)
    return parse(p.stdout)


def parse(out):
    """{line name: [ {key: value}, ... ]} from the driver's output."""
    res = {}
    for line in out.splitlines():
        parts = line.split()
        if not parts or "=" not in line:
            continue
        kv = {}
        for tok in parts[1:]:
            if "=" in tok:
                k, v = tok.split("=", 1)
                kv[k] = v
        res.setdefault(parts[0], []).append(kv)
    return res


def first(res, name, key, **match):
    for kv in res.get(name, []):
        if key in kv and all(kv.get(k) == v for k, v in match.items()):
            return kv.get(key)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", choices=("parley", "prosody"), default="parley")
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--plain-users", type=int, default=2000)
    ap.add_argument("--msg-users", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--low-rate", type=float, default=1000,
                    help="also measure latency at this rate (0: skip)")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--sources", type=int, default=16,
                    help="spread connections over 127.0.0.1..127.0.0.N")
    ap.add_argument("--phases", default="login,plain,msg,latency",
                    help="comma-separated subset of login (1: SCRAM logins and RSS), "
                    "plain (2), msg (3), latency (4 and 5); default all")
    ap.add_argument("--xmppload", default=None,
                    help="driver binary (default: PARLEY_BUILD or build/rel)")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    unknown = phases - {"login", "plain", "msg", "latency"}
    if unknown:
        raise SystemExit("unknown phase(s): %s" % ", ".join(sorted(unknown)))
    build = os.environ.get("PARLEY_BUILD", os.path.join(REPO, "build", "rel"))
    args.xmppload = args.xmppload or os.path.join(build, "tests", "bench", "xmppload")
    if not os.access(args.xmppload, os.X_OK):
        raise SystemExit("no driver at %s: build it (make) or pass --xmppload" % args.xmppload)
    raise_nofile()

    users = max(args.sessions, args.plain_users, args.msg_users)
    srv = Prosody(users) if args.target == "prosody" else Parley(users)
    summary = []
    try:
        srv.start()
        fresh = True
        if "login" in phases:
            r = driver(args, srv.port, srv.pids(), ["--count", str(args.sessions),
                                                      "--mech", "SCRAM-SHA-1", "--settle", "5"],
                       "SCRAM-SHA-1 logins and RSS at %d sessions" % args.sessions)
            fresh = False
            summary.append(("SCRAM-SHA-1 logins/s (%d users)" % args.sessions,
                            first(r, "login", "rate")))
            for kv in r.get("cpu", []):
                summary.append(("CPU per SCRAM login, %s (util)" % kv["proc"],
                                "%s us (%s)" % (kv["per_login_us"], kv["util"])))
            summary.append(("RSS per idle TLS session, KiB (delta / total over %s)" %
                            first(r, "rss", "sessions"),
                            "%s / %s" % (first(r, "rss", "per_session_kib"),
                                         first(r, "rss", "total_per_session_kib"))))
        if not fresh:
            srv.restart()
        if "plain" in phases:
            r = driver(args, srv.port, srv.pids(), ["--count", str(args.plain_users),
                                                      "--mech", "PLAIN", "--settle", "0"],
                       "PLAIN logins")
            summary.append(("PLAIN logins/s (%d users)" % args.plain_users,
                            first(r, "login", "rate")))
        msg = ["--count", str(args.msg_users), "--settle", "3", "--duration",
               str(args.seconds), "--warmup", "2"]
        rate = 0.0
        if "msg" in phases:
            r = driver(args, srv.port, srv.pids(), msg + ["--rate", "0"], "messages, max rate")
            rate = float(first(r, "messages", "rate") or 0)
            summary.append(("messages/s (%d users, i -> i+1)" % args.msg_users, "%.0f" % rate))
            for kv in r.get("cpu", []):
                if kv.get("phase") == "msg":
                    summary.append(("CPU per message, %s (util)" % kv["proc"],
                                    "%s us (%s)" % (kv["per_msg_us"], kv["util"])))
            summary.append(("latency at max rate p50/p99 ms",
                            "%s / %s" % (first(r, "latency_ms", "p50"),
                                         first(r, "latency_ms", "p99"))))
        if "latency" in phases and rate > 0:
            r = driver(args, srv.port, srv.pids(), msg + ["--rate", "%.0f" % (rate / 2)],
                       "latency at half rate")
            summary.append(("latency at %.0f msgs/s p50/p90/p99/max ms" % (rate / 2),
                            "/".join(str(first(r, "latency_ms", k))
                                     for k in ("p50", "p90", "p99", "max"))))
        if "latency" in phases and args.low_rate > 0:
            r = driver(args, srv.port, srv.pids(), msg + ["--rate", "%.0f" % args.low_rate],
                       "latency at a low rate")
            summary.append(("latency at %.0f msgs/s p50/p90/p99/max ms" % args.low_rate,
                            "/".join(str(first(r, "latency_ms", k))
                                     for k in ("p50", "p90", "p99", "max"))))
    finally:
        srv.cleanup()
    print("## summary (%s)" % srv.name)
    for k, v in summary:
        print("%-60s %s" % (k, v))


if __name__ == "__main__":
    main()
