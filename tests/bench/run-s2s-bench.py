#!/usr/bin/python3
"""run-s2s-bench.py - messages/s between the users of two Parley services over
one s2s link (issue #7).

Starts two whole services, a.test and b.test (PostgreSQL + router + sm +
c2s-1 each, from tests/integration/stack.py, with the raised limits and the
info log level of run-xmpp-bench.py's Parley target), each with its
parley-s2s (tests/integration/s2sutil.Side, certificates from one test CA, so
the link authenticates with SASL EXTERNAL) and a static route to the other,
as tests/integration/test_s2s_users.py does. --users users are created on
each side in one SQL statement. Then one xmppload process logs in --users
users on each side and user i@a.test sends to user i+1@b.test:

  1. as fast as the servers take them (window 2 per sender) for --seconds
     after 2 s of warm-up (s2s's inbound rate limit raised to --s2s-rate,
     default 1,000,000/s: its default of 200/s would be measured otherwise):
     messages/s a.test -> b.test over the one link,
     CPU per message of each daemon on both sides (/proc/PID/stat), latency;
  2. the same at half that rate: latency p50/p90/p99/max.

Binaries from PARLEY_BUILD, a release build (configure without
--enable-sanitizers; a sanitizer build is refused). Builds nothing. The
driver is pinned to the last CPU; the daemons are left to the scheduler.

  PARLEY_BUILD=$PWD/build/rel tests/bench/run-s2s-bench.py
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

A, B = "a.test", "b.test"


def load_xmpp_bench():
    """run-xmpp-bench.py as a module (its name is not an identifier): its
    Parley target, user creation, output parser and limits are reused."""
    spec = importlib.util.spec_from_file_location("run_xmpp_bench",
                                                  os.path.join(HERE, "run-xmpp-bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


xb = load_xmpp_bench()
import s2sutil  # noqa: E402  (after the path is set)


class Side(s2sutil.Side):
    """s2sutil.Side at the log level the other daemons run at here."""

    def write(self):
        super().write()
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace("<level>debug</level>", "<level>info</level>"))


class Net:
    """a.test and b.test: two run-xmpp-bench Parley services, each with its
    parley-s2s, joined by static routes."""

    def __init__(self, users, s2s_rate):
        self.dir = tempfile.mkdtemp(prefix="parley-s2s-bench-")
        os.chmod(self.dir, 0o755)
        self.srv, self.sides = [], []
        # parley-s2s reads at most <rate> stanzas/s (default 200) from each
        # inbound stream: a per-peer policy limit, raised here so that the
        # link and the daemons are measured rather than the policy
        extra = ("  <limits><rate>%d</rate><burst>%d</burst></limits>\n" %
                 (s2s_rate, s2s_rate)) if s2s_rate else ""
        try:
            ca = s2sutil.TestCA(self.dir, "Parley Bench CA")
            for d in (A, B):
                # Parley() takes its domain from the module (one service per
                # domain, created one after the other)
                xb.DOMAIN = d
                p = xb.Parley(users)
                self.srv.append(p)
                crt, key = ca.issue(d)
                self.sides.append(Side(d, self.dir, crt, key, ca.cert, extra=extra,
                                       router=p.st.router))
        except BaseException:
            self.cleanup()
            raise
        a, b = self.sides
        a.add_route(B, b.port)
        b.add_route(A, a.port)

    def start(self):
        for p, side in zip(self.srv, self.sides):
            p.start()
            side.start()

    def pids(self):
        """--pid/--cpu-pid arguments for every daemon (and PostgreSQL) of
        both sides, named a-router, b-s2s, ..."""
        out = []
        for p, side, tag in zip(self.srv, self.sides, "ab"):
            args = p.pids() + ["--pid", "s2s=%d" % side.daemon.pid]
            for i in range(1, len(args), 2):
                args[i] = "%s-%s" % (tag, args[i])
            out += args
        return out

    def cleanup(self):
        errs = []
        for side in self.sides:
            try:
                errs += side.sanitizer_errors()
                side.cleanup()
            except Exception as e:
                errs.append("%s: %s" % (side.domain, e))
        for p in self.srv:
            p.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
        if errs:
            print("s2s problems:\n" + "\n".join(errs))


def driver(args, net, extra, label):
    a, b = net.srv
    cmd = ["taskset", "-c", str(os.cpu_count() - 1), args.xmppload,
           "--domain", A, "--port", str(a.port), "--peer-domain", B,
           "--peer-port", str(b.port), "--password", xb.PASSWORD, "--count", str(args.users),
           "--sources", str(args.sources), "--concurrency", str(args.concurrency),
           "--settle", "1", "--duration", str(args.seconds), "--warmup", "2"]
    cmd += net.pids() + extra
    print("## %s: %s" % (label, " ".join(cmd[3:])), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(p.stdout, end="", flush=True)
    if p.returncode not in (0, 1):
        raise SystemExit("xmppload failed (%d)" % p.returncode)
    return xb.parse(p.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=200, help="users logged in on each side")
    ap.add_argument("--s2s-rate", type=int, default=1000000,
                    help="parley-s2s <limits><rate> (stanzas/s per inbound stream; "
                    "0: the daemon's default, 200)")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--sources", type=int, default=16,
                    help="spread connections over 127.0.0.1..127.0.0.N")
    ap.add_argument("--xmppload", default=None,
                    help="driver binary (default: PARLEY_BUILD's)")
    args = ap.parse_args()
    if "PARLEY_BUILD" not in os.environ:
        raise SystemExit("set PARLEY_BUILD to a release build tree")
    args.xmppload = args.xmppload or os.path.join(os.environ["PARLEY_BUILD"], "tests", "bench",
                                                  "xmppload")
    if not os.access(args.xmppload, os.X_OK):
        raise SystemExit("no driver at %s: build it (make) or pass --xmppload" % args.xmppload)
    xb.raise_nofile()

    net = Net(args.users, args.s2s_rate)
    summary = []
    try:
        net.start()
        r = driver(args, net, ["--rate", "0"], "messages a.test -> b.test, max rate")
        rate = float(xb.first(r, "messages", "rate") or 0)
        summary.append(("messages/s a.test -> b.test (%d + %d users, one s2s link)" %
                        (args.users, args.users), "%.0f" % rate))
        summary.append(("lost / errors at max rate", "%s / %s" % (
            xb.first(r, "messages", "lost"), xb.first(r, "messages", "errors"))))
        for kv in r.get("cpu", []):
            if kv.get("phase") == "msg":
                summary.append(("CPU per message, %s (util)" % kv["proc"],
                                "%s us (%s)" % (kv["per_msg_us"], kv["util"])))
        summary.append(("latency at max rate p50/p99 ms",
                        "%s / %s" % (xb.first(r, "latency_ms", "p50"),
                                     xb.first(r, "latency_ms", "p99"))))
        if rate > 0:
            r = driver(args, net, ["--rate", "%.0f" % (rate / 2)], "latency at half rate")
            summary.append(("latency at %.0f msgs/s p50/p90/p99/max ms" % (rate / 2),
                            "/".join(str(xb.first(r, "latency_ms", k))
                                     for k in ("p50", "p90", "p99", "max"))))
            summary.append(("skipped / lost at half rate", "%s / %s" % (
                xb.first(r, "messages", "skipped"), xb.first(r, "messages", "lost"))))
    finally:
        net.cleanup()
    print("## summary (parley s2s)")
    for k, v in summary:
        print("%-60s %s" % (k, v))


if __name__ == "__main__":
    main()
