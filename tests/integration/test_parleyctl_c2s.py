"""test_parleyctl_c2s.py - several c2s processes from parleyctl alone:
`init --c2s 2` makes c2s-1 and c2s-2 (own configs, router names, secrets,
run directories, router-users.xml entries), `start` runs both on the one
client port (SO_REUSEPORT), clients logging in through that port land on
both and message each other across them, `c2s add` on the running
instance starts c2s-3, `c2s del` then `c2s add` while it is still
stopping leaves a new c2s-3 running, `c2s del` stops and removes it again
while the others run on, and `stop` stops every one. As root (per-daemon
system users) and as an ordinary user.
"""

import asyncio
import grp
import os
import re
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest

import ctlharness
import harness
from test_parleyctl_service import MODES, _Client, _finish, _make, _service_daemons


@pytest.fixture(params=MODES)
def inst(request):
    i = _make(request.param)
    yield i
    _finish(i)


def _status_pid(line):
    return int(line.split()[2].rstrip(","))


def _placement(inst, names, jid):
    """The c2s (of names) whose log says a session started for jid, waiting
    a bounded time for the line; None if none did."""
    end = time.monotonic() + harness.WAIT
    while True:
        for n in names:
            if re.search(r"session \S+ started for %s$" % re.escape(jid), inst.log(n), re.M):
                return n
        if time.monotonic() > end:
            return None
        time.sleep(0.05)


def test_init_makes_c2s_instances(inst):
    # A domain holding "c2s-1" stays itself in every instance's config.
    inst.init("c2s-1.example.org", "--c2s", "2")
    d = inst.dir
    users = ET.fromstring(inst.etc("router-users.xml").split("?>", 1)[1])
    comps = {c.get("name"): c for c in users.findall("component")}
    for n in ("c2s-1", "c2s-2"):
        doc = ET.fromstring(inst.etc(n + ".xml").split("?>", 1)[1])
        assert doc.find("router").get("name") == n
        assert doc.find("router/secret").get("file") == os.path.join(d, "etc", "secrets", n)
        assert doc.find("pidfile").text == os.path.join(d, "run", n, n + ".pid")
        assert ctlharness.placeholders_left(inst.etc(n + ".xml")) == []
        assert os.path.isdir(os.path.join(d, "run", n))
        assert len(inst.secret(n)) == 64
        assert comps[n].get("internal") == "true"
        assert comps[n].get("uid") == comps["c2s-1"].get("uid")
        assert comps[n].find("secret").get("file") == os.path.join(d, "etc", "secrets", n)
    assert inst.secret("c2s-1") != inst.secret("c2s-2")
    for n in ("c2s-1", "c2s-2"):
        doc = ET.fromstring(inst.etc(n + ".xml").split("?>", 1)[1])
        assert doc.find("tls/cert").get("domain") == "c2s-1.example.org"
        assert doc.find("tls/cert").get("cert") == os.path.join(
            d, "etc", "tls", "c2s-1.example.org.crt")
    # Same ports: the kernel spreads the connections.
    strip = lambda t: re.sub(r"c2s-[12]", "c2s-K", t)
    assert strip(inst.etc("c2s-1.xml")) == strip(inst.etc("c2s-2.xml"))
    r = inst.ok("c2s", "list")
    assert [l.split()[0] for l in r.out.splitlines()] == ["c2s-1", "c2s-2"]
    # Out of range is refused before anything is made.
    other = ctlharness.Instance(as_user=inst.as_user)
    try:
        r = other.ctl("init", "--domain", "localhost", "--c2s", "0")
        assert r.code == 2 and "--c2s" in r.err, r
    finally:
        other.cleanup()


def test_c2s_add_failure_leaves_nothing(inst):
    """A `c2s add` that fails once the secret and the router-users.xml entry
    are written (here: a c2s template init cannot fill) takes both back,
    so the next add succeeds; `init --c2s 2` without a c2s template is
    refused before anything is made."""
    inst.init("localhost")
    users = inst.etc("router-users.xml")
    good = inst.datadir
    inst.datadir = ctlharness.fake_datadir(
        os.path.join(inst.base, "bad"),
        {"c2s.xml.in": "<c2s><user>@c2s_user@</user><x>@no_such_placeholder@</x></c2s>\n"})
    os.chmod(os.path.join(inst.base, "bad"), 0o755)
    try:
        r = inst.ctl("c2s", "add")
        assert r.code == 1 and "@no_such_placeholder@" in r.err, r
    finally:
        inst.datadir = good
    assert inst.etc("router-users.xml") == users
    assert not os.path.exists(os.path.join(inst.dir, "etc", "secrets", "c2s-2"))
    assert not os.path.exists(os.path.join(inst.dir, "etc", "c2s-2.xml"))
    r = inst.ok("c2s", "add")
    assert "c2s-2 added" in r.out, r
    assert "name='c2s-2'" in inst.etc("router-users.xml")
    assert len(inst.secret("c2s-2")) == 64

    base = os.path.join(inst.base, "notmpl")
    other = ctlharness.Instance(as_user=inst.as_user,
                                datadir=ctlharness.fake_datadir(base))
    try:
        os.remove(os.path.join(other.datadir, "c2s.xml.in"))
        r = other.ctl("init", "--domain", "localhost", "--c2s", "2")
        assert r.code == 1 and "no c2s template" in r.err, r
        assert not os.path.exists(other.dir)
    finally:
        other.cleanup()


def test_concurrent_edits(inst):
    """`c2s add`, `component add` and `route add` run at once: each waits
    for the edit lock, so every one succeeds, the c2s get distinct names,
    and no entry is lost from router-users.xml or s2s-routes.xml."""
    inst.init("localhost")
    cmds = [("c2s", "add")] * 3
    cmds += [("component", "add", "comp%d.localhost" % i) for i in range(3)]
    cmds += [("route", "add", "r%d.example" % i, "127.0.0.1:%d" % (5300 + i)) for i in range(3)]
    results = [None] * len(cmds)

    def run_one(i):
        results[i] = inst.ctl(*cmds[i])

    threads = [threading.Thread(target=run_one, args=(i,)) for i in range(len(cmds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for cmd, r in zip(cmds, results):
        assert r is not None and r.code == 0, (cmd, r)
    added = sorted(re.search(r"(c2s-\d+) added", r.out).group(1) for r in results[:3])
    assert added == ["c2s-2", "c2s-3", "c2s-4"], added
    users = ET.fromstring(inst.etc("router-users.xml").split("?>", 1)[1])
    names = {c.get("name") for c in users.findall("component")}
    for n in ["c2s-1", "c2s-2", "c2s-3", "c2s-4"] + ["comp%d.localhost" % i for i in range(3)]:
        assert n in names, (n, names)
    routes = inst.ok("route", "list").out
    for i in range(3):
        assert "r%d.example" % i in routes, routes


def test_foreign_member_of_parley_group_refused():
    """As root, a parley group that holds someone besides the daemons'
    users is refused (by `c2s add`, as by init), naming the member and the
    fix, instead of giving them the router's socket. The group file with
    that member is bind-mounted over /etc/group in a mount namespace of
    the command alone: the machine's group is never touched."""
    i = _make("root")
    try:
        i.init("localhost")
        with open("/etc/group") as f:
            lines = f.read().splitlines()
        lines = [l + (",nobody" if l.split(":")[3] else "nobody")
                 if l.startswith("parley:") else l for l in lines]
        assert any(l.startswith("parley:") for l in lines)  # init made it
        fake = os.path.join(i.base, "group")
        with open(fake, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(fake, 0o644)
        cmd = "mount --bind %s /etc/group && exec %s -d %s c2s add" % (fake, i.exe, i.dir)
        r = subprocess.run(["unshare", "--mount", "sh", "-c", cmd], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=i.env(), timeout=60)
        err = r.stderr.decode()
        i.outputs.append(err)
        if "mount" in err and r.returncode != 1:
            pytest.skip("no mount namespace here: %s" % err)
        assert r.returncode == 1, err
        assert "members besides parley's daemons: nobody" in err and "gpasswd -d" in err, err
        assert not os.path.exists(os.path.join(i.dir, "etc", "c2s-2.xml"))
        assert "nobody" not in grp.getgrnam("parley").gr_mem
    finally:
        _finish(i)


def test_two_c2s_share_the_port(inst):
    have = _service_daemons()
    if "sm" not in have or "c2s-1" not in have:
        pytest.skip("this tree has no parley-sm or parley-c2s yet (have %s)" % have)
    inst.init("localhost", "--c2s", "2")
    r = inst.ok("start", timeout=240)
    assert "parley-c2s: up (pid" in r.out and "c2s-2)" in r.out, r
    code, st = inst.status()
    assert code == 0, st
    c2s = ["c2s-1", "c2s-2"]
    pids = {n: _status_pid(st[n]) for n in c2s}
    for n in c2s:
        assert st[n].startswith("up (pid"), st
    assert pids["c2s-1"] != pids["c2s-2"]
    inst.ok("user", "add", "alice@localhost", "alice-pw")
    inst.ok("user", "add", "bob@localhost", "bob-pw")

    async def go():
        clients = []
        where = {}  # full JID -> c2s name
        try:
            pair = None
            # SO_REUSEPORT hashes each connection to one of the two: log in
            # (alternately alice and bob) until alice has a session on one
            # and bob on the other; 40 tries miss with odds of 2^-39.
            for i in range(40):
                user = "alice" if i % 2 == 0 else "bob"
                jid = "%s@localhost/r%d" % (user, i)
                cl = _Client(jid, user + "-pw", inst.c2s_port)
                clients.append(cl)
                assert await cl.login() is True, "%s could not log in:\n%s" % (
                    jid, inst.log_tails())
                where[jid] = _placement(inst, c2s, jid)
                assert where[jid] is not None, "no c2s logged %s:\n%s" % (jid, inst.log_tails())
                alices = [(j, c) for j, c in zip(where, clients) if j.startswith("alice")]
                bobs = [(j, c) for j, c in zip(where, clients) if j.startswith("bob")]
                for aj, ac in alices:
                    for bj, bc in bobs:
                        if where[aj] != where[bj]:
                            pair = (aj, ac, bj, bc)
                if pair:
                    break
            assert pair, "every session landed on one c2s: %s" % where
            aj, ac, bj, bc = pair
            ac.xmpp.send_message(mto=bj, mbody="hello bob", mtype="chat")
            m = await asyncio.wait_for(bc.inbox.get(), harness.WAIT)
            assert m["body"] == "hello bob" and m["from"] == aj
            bc.xmpp.send_message(mto=aj, mbody="hello alice", mtype="chat")
            m = await asyncio.wait_for(ac.inbox.get(), harness.WAIT)
            assert m["body"] == "hello alice" and m["from"] == bj
        finally:
            for cl in clients:
                await cl.close()

    harness.run(go())

    # A third on the running instance: the router learns its name, the
    # supervisor starts it.
    r = inst.ok("c2s", "add")
    assert "c2s-3 added" in r.out, r
    end = time.monotonic() + harness.START_WAIT
    while True:
        code, st = inst.status()
        if st.get("c2s-3", "").startswith("up (pid"):
            break
        assert time.monotonic() < end, "c2s-3 did not come up: %s\n%s" % (st, inst.log_tails())
        time.sleep(0.1)
    assert code == 0, st
    pids["c2s-3"] = _status_pid(st["c2s-3"])
    assert "c2s-3: handshake with the router done" in inst.log("c2s-3")
    for n in c2s:  # the others ran on
        assert _status_pid(st[n]) == pids[n]

    # `c2s del` then `c2s add` of the same name while the old c2s-3 is
    # still stopping (held with SIGSTOP, so its TERM waits): once it has
    # stopped the new c2s-3 runs, it is not left stopped.
    old = pids["c2s-3"]

    def wait_sup_log(text, count):
        end = time.monotonic() + harness.START_WAIT
        while inst.log("parleyctl").count(text) < count:
            assert time.monotonic() < end, "no %r in the supervisor's log:\n%s" % (
                text, inst.log("parleyctl"))
            time.sleep(0.05)

    stopping = "c2s-3 is no longer configured: stopping"
    reloads = inst.log("parleyctl").count("reloading parley-router")
    os.kill(old, signal.SIGSTOP)
    try:
        inst.ok("c2s", "del")
        wait_sup_log(stopping, 1)
        r = inst.ok("c2s", "add")
        assert "c2s-3 added" in r.out, r
        wait_sup_log("reloading parley-router", reloads + 2)
        assert os.path.exists("/proc/%d" % old)  # still stopping
    finally:
        os.kill(old, signal.SIGCONT)
    end = time.monotonic() + harness.START_WAIT
    while True:
        code, st = inst.status()
        line = st.get("c2s-3", "")
        if line.startswith("up (pid") and _status_pid(line) != old:
            break
        assert time.monotonic() < end, "c2s-3 was not started again: %s\n%s" % (
            st, inst.log_tails())
        time.sleep(0.1)
    pids["c2s-3"] = _status_pid(st["c2s-3"])
    assert not os.path.exists("/proc/%d" % old)
    assert "c2s-3 is configured again: starting it" in inst.log("parleyctl")

    # And out again: stopped for good, the others untouched.
    r = inst.ok("c2s", "del")
    assert "c2s-3 removed" in r.out, r
    end = time.monotonic() + harness.START_WAIT
    while os.path.exists("/proc/%d" % pids["c2s-3"]) or "c2s-3" in inst.status()[1]:
        assert time.monotonic() < end, "c2s-3 still there: %s\n%s" % (inst.status(),
                                                                      inst.log_tails())
        time.sleep(0.1)
    assert "c2s-3" not in inst.etc("router-users.xml")
    assert not os.path.exists(os.path.join(inst.dir, "etc", "c2s-3.xml"))
    # Only the router was reloaded: c2s-3 got its TERM, no HUP first.
    assert "reloading parley-c2s (pid %d)" % pids["c2s-3"] not in inst.log("parleyctl")
    code, st = inst.status()
    assert code == 0, st
    for n in c2s:
        assert _status_pid(st[n]) == pids[n]
    assert "crashed" not in inst.log("parleyctl"), inst.log("parleyctl")
    # Only c2s-2 and up are stopped for a missing config: the sm and
    # c2s-1 without theirs (a hand edit half-way) run on through a reload.
    moved = [os.path.join(inst.dir, "etc", n + ".xml") for n in ("sm", "c2s-1")]
    for p in moved:
        os.rename(p, p + ".away")
    try:
        inst.ok("reload", "router")
        end = time.monotonic() + harness.START_WAIT
        while "etc/c2s-1.xml is missing" not in inst.log("parleyctl"):
            assert time.monotonic() < end, inst.log("parleyctl")
            time.sleep(0.05)
    finally:
        for p in moved:
            os.rename(p + ".away", p)
    assert "etc/sm.xml is missing" in inst.log("parleyctl")
    code, st = inst.status()
    assert code == 0, st
    for n in c2s:
        assert _status_pid(st[n]) == pids[n]
    assert st["sm"].startswith("up (pid"), st
    r = inst.ctl("c2s", "del", "c2s-1")
    assert r.code == 1 and "c2s-1 stays" in r.err, r
    assert [l.split()[0] for l in inst.ok("c2s", "list").out.splitlines()] == c2s
    del pids["c2s-3"]

    inst.ok("stop", timeout=120)
    code, st = inst.status()
    assert code != 0
    for n, pid in pids.items():
        assert st[n] == "stopped", st
        assert not os.path.exists("/proc/%d" % pid), n
    assert "crashed" not in inst.log("parleyctl"), inst.log("parleyctl")
