"""test_parleyctl_service.py - parleyctl for the whole service: init fills
every daemon template (sm, c2s-1, s2s) with no placeholder left and gives
the secrets, key and run directories the right owners and modes; the s2s
static routes (`route add|del|list`: validation, duplicates, atomic
rewrite); `reload`; and, once the tree has the daemons, the whole service
from parleyctl alone: a client logs in over STARTTLS, route changes reload
s2s only, two instances federate over their routes. Both as root
(per-daemon system users) and as an ordinary user. The daemons' templates may not be in the tree yet: the
filling is checked with stand-ins that name every placeholder
(ctlharness.fake_datadir), the real templates when they exist.
"""

import os
import pwd
import re
import stat
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

import ctlharness
import harness

MODES = ["root", "user"]


def _make(mode, datadir_extra=None):
    if mode == "root":
        if os.geteuid() != 0:
            pytest.skip("needs root (CI runs as root)")
        user = None
    else:
        user = ctlharness.ensure_test_user() if os.geteuid() == 0 else None
    i = ctlharness.Instance(as_user=user)
    if datadir_extra is not None:
        i.datadir = ctlharness.fake_datadir(i.base, datadir_extra)
    return i


def _finish(i):
    problems = i.sanitizer_errors()
    i.cleanup()
    assert not problems, "sanitizer reports: %s" % problems[:5]


@pytest.fixture(params=MODES)
def inst(request):
    i = _make(request.param)
    yield i
    _finish(i)


@pytest.fixture(params=MODES)
def standin(request):
    """An instance whose data dir has stand-ins for the three daemon
    templates, each naming every placeholder."""
    extra = {t: ctlharness._standin(t.split(".")[0]) for t in ctlharness.DAEMON_TEMPLATES}
    i = _make(request.param, extra)
    yield i
    _finish(i)


def _as_root(inst):
    return inst.as_user is None and os.geteuid() == 0


def _owner(path):
    return pwd.getpwuid(os.stat(path).st_uid).pw_name


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def _me(inst):
    return inst.as_user or pwd.getpwuid(os.geteuid()).pw_name


def test_init_fills_every_placeholder(standin):
    inst = standin
    r = inst.init()
    assert "s2s %d" % inst.s2s_port in r.out and "s2s direct TLS %d" % inst.s2s_tls_port in r.out
    d = inst.dir
    users = {"sm": "parley-sm", "c2s": "parley-c2s", "s2s": "parley-s2s"}
    for tmpl, out in ctlharness.DAEMON_TEMPLATES.items():
        root = tmpl.split(".")[0]
        name = out[:-4]
        text = inst.etc(out)
        assert ctlharness.placeholders_left(text) == [], (out, text)
        # Comments keep what is not a placeholder of init's.
        assert "@placeholders@" in text
        doc = ET.fromstring(text.split("?>", 1)[1])
        v = {e.get("name"): e.text for e in doc.findall("v")}
        assert set(v) == set(ctlharness.PLACEHOLDERS)
        assert v["domain"] == "localhost"
        assert v["sysconfdir"] == os.path.join(d, "etc")
        # Each daemon's own run directory, the one it may write.
        assert v["runstatedir"] == os.path.join(d, "run", name)
        assert v["router_socket"] == os.path.join(d, "run", "router", "router.sock")
        assert v["c2s_port"] == str(inst.c2s_port)
        assert v["c2s_tls_port"] == str(inst.c2s_tls_port)
        assert v["s2s_port"] == str(inst.s2s_port)
        assert v["s2s_tls_port"] == str(inst.s2s_tls_port)
        assert v["router_port"] == str(inst.port)
        assert v["db_dsn"] == "host=%s port=5432 dbname=parley" % os.path.join(d, "pg", "run")
        assert v["c2s_name"] == "c2s-1"  # the instance in c2s-1.xml; c2s-1 elsewhere
        for k, u in users.items():
            assert v[k + "_user"] == (u if _as_root(inst) else _me(inst))
            assert v[k + "_uid"] == str(pwd.getpwnam(v[k + "_user"]).pw_uid)
        # The packaged paths are folded into DIR.
        assert doc.find("pidfile").text == os.path.join(d, "run", name, root + ".pid")
        assert doc.find("router/secret").get("file") == os.path.join(d, "etc", "secrets", root)
        assert doc.find("user").text == v[root + "_user"]
        # Readable by the daemon's user, written by the invoking one.
        assert _mode(os.path.join(d, "etc", out)) == 0o644
    for f in ("router.xml", "router-users.xml"):
        assert ctlharness.placeholders_left(inst.etc(f)) == [], f
    # The ports init was given are what parleyctl reads back.
    ports = ET.fromstring(inst.etc("parley.xml").split("?>", 1)[1]).find("ports")
    assert ports.get("s2s-tls") == str(inst.s2s_tls_port)
    assert ports.get("c2s-tls") == str(inst.c2s_tls_port)


def test_init_secrets_key_and_run_dirs(standin):
    inst = standin
    inst.init()
    d = inst.dir
    root = _as_root(inst)
    me = _me(inst)
    dialback = os.path.join(d, "etc", "secrets", "dialback")
    assert _mode(dialback) == 0o600
    assert _owner(dialback) == ("parley-s2s" if root else me)
    assert len(open(dialback).read().strip()) == 64
    # Router secrets: the daemon's, readable by the router's group only.
    for name, owner in (("sm", "parley-sm"), ("c2s-1", "parley-c2s"), ("s2s", "parley-s2s")):
        p = os.path.join(d, "etc", "secrets", name)
        assert _mode(p) == 0o640, name
        assert _owner(p) == (owner if root else me)
        if root:
            assert os.stat(p).st_gid == pwd.getpwnam("parley-router").pw_gid
    # c2s's key is root's: c2s reads it before it drops root; its group may
    # read it too, for the certificate reload on SIGHUP. s2s has its own
    # (test_parleyctl.py: test_init_own_key_per_daemon).
    key = os.path.join(d, "etc", "tls", "localhost.key")
    crt = os.path.join(d, "etc", "tls", "localhost.crt")
    assert _mode(key) == 0o640 and _owner(key) == ("root" if root else me)
    assert _mode(crt) == 0o644
    if root:
        assert os.stat(key).st_gid == pwd.getpwnam("parley-c2s").pw_gid
        for u in ("parley-c2s", "parley-s2s", "parley-sm", "parley-router"):
            r = subprocess.run(["runuser", "-u", u, "--", "cat", key], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            if u == "parley-c2s":
                assert r.returncode == 0, "c2s cannot read the key again on SIGHUP"
            else:
                assert r.returncode != 0, "%s can read the key" % u
        r = subprocess.run(["runuser", "-u", "parley-s2s", "--", "cat", dialback],
                           stdout=subprocess.PIPE)
        assert r.returncode == 0
        r = subprocess.run(["runuser", "-u", "parley-c2s", "--", "cat", dialback],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert r.returncode != 0, "c2s can read the dialback secret"
    for name, owner in (("router", "parley-router"), ("sm", "parley-sm"),
                        ("c2s-1", "parley-c2s"), ("s2s", "parley-s2s")):
        p = os.path.join(d, "run", name)
        assert os.path.isdir(p) and not os.path.islink(p)
        assert _owner(p) == (owner if root else me), name
        assert _mode(p) == 0o755
    if root:
        _check_router_socket_reach(d)
    routes = os.path.join(d, "etc", "s2s-routes.xml")
    assert _mode(routes) == 0o644 and _owner(routes) == me
    assert ET.parse(routes).getroot().tag == "routes"
    assert list(ET.parse(routes).getroot()) == []


def _connects(user, path):
    code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
            "try:\n s.connect(sys.argv[1])\nexcept OSError:\n sys.exit(1)\n")
    return subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-c", code, path],
                          timeout=30).returncode == 0


def _check_router_socket_reach(d):
    """A socket made in run/router as the router makes its own (then
    chmod 0660, owned by parley-router, group parley as router.xml says)
    is reachable by the users of sm, c2s and s2s, members of the group
    parley init made, and by no other user."""
    import grp
    import socket
    assert "group='parley'" in open(os.path.join(d, "etc", "router.xml")).read()
    members = set(grp.getgrnam("parley").gr_mem)
    assert {"parley-router", "parley-sm", "parley-c2s", "parley-s2s"} <= members, members
    path = os.path.join(d, "run", "router", "probe.sock")
    old = os.umask(0o077)
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.listen(8)
    finally:
        os.umask(old)
    try:
        pw = pwd.getpwnam("parley-router")
        os.chown(path, pw.pw_uid, grp.getgrnam("parley").gr_gid)
        os.chmod(path, 0o660)
        for u in ("parley-sm", "parley-c2s", "parley-s2s"):
            assert _connects(u, path), u
        assert not _connects(ctlharness.ensure_test_user(), path)
    finally:
        s.close()
        os.unlink(path)


def test_init_refuses_unknown_placeholder():
    inst = _make("root" if os.geteuid() == 0 else "user", {"s2s.xml.in": "<?xml version='1.0'?>\n<!-- @fine@ -->\n"
                                         "<s2s><x>@domain@ @nonsense@</x></s2s>\n"})
    try:
        r = inst.ctl("init", "--domain", "localhost", "--router-port", str(inst.port))
        assert r.code == 1 and "uses @nonsense@" in r.err, r
        assert not os.path.exists(os.path.join(inst.dir, "etc", "parley.xml"))
    finally:
        _finish(inst)


def test_init_real_templates(inst):
    """The tree's own templates: every one there is filled completely and
    the daemon accepts the result (-t); one not there yet is left out with
    a note, and init still works."""
    r = inst.init()
    for tmpl, out in ctlharness.DAEMON_TEMPLATES.items():
        path = os.path.join(inst.dir, "etc", out)
        if not os.path.exists(os.path.join(harness.REPO, "etc", tmpl)):
            assert "no template" in r.err and tmpl in r.err
            assert not os.path.exists(path)
            continue
        text = inst.etc(out)
        assert ctlharness.placeholders_left(text) == [], (out, text)
        sub = tmpl.split(".")[0]
        exe = os.path.join(harness.build_dir(), sub, "parley-" + sub)
        if os.path.exists(exe):
            cmd = [exe, "-t", "-c", path]
            if inst.as_user:
                cmd = ["runuser", "-u", inst.as_user, "--"] + cmd
            t = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=inst.env(), timeout=60)
            assert t.returncode == 0, "%s -t: %s" % (out, t.stdout.decode())


def _routes(inst):
    root = ET.parse(os.path.join(inst.dir, "etc", "s2s-routes.xml")).getroot()
    return [dict(e.attrib) for e in root.findall("route")]


PIN = "sha256:" + "AB" * 32


def test_routes(inst):
    inst.init()
    path = os.path.join(inst.dir, "etc", "s2s-routes.xml")
    assert inst.ok("route", "list").out == ""

    ino = os.stat(path).st_ino
    r = inst.ok("route", "add", "example.org", "[::1]:5269", "--pin", PIN)
    assert "example.org [::1]:5269" in r.out
    # Rewritten whole under another name and renamed over: a new inode.
    assert os.stat(path).st_ino != ino
    assert not os.path.exists(path + ".tmp")
    inst.ok("route", "add", "--pin", PIN.lower(), "Other.Example", "xmpp.other.example:15269")
    inst.ok("route", "add", "third.example", "192.0.2.7:5270", "--tls", "direct")
    assert _routes(inst) == [
        {"domain": "example.org", "host": "::1", "port": "5269", "pin": PIN.lower()},
        {"domain": "other.example", "host": "xmpp.other.example", "port": "15269",
         "pin": PIN.lower()},
        {"domain": "third.example", "host": "192.0.2.7", "port": "5270", "tls": "direct"},
    ]
    assert inst.ok("route", "list").out.splitlines() == [
        "example.org [::1]:5269 pin=" + PIN.lower(),
        "other.example xmpp.other.example:15269 pin=" + PIN.lower(),
        "third.example 192.0.2.7:5270 tls=direct",
    ]
    assert _mode(path) == 0o644

    before = open(path).read()
    r = inst.ctl("route", "add", "EXAMPLE.org", "10.0.0.1:5269")
    assert r.code == 1 and "has a route already" in r.err and "[::1]:5269" in r.err
    bad = [
        ("route", "add", "bad..example", "1.2.3.4:5269"),
        ("route", "add", "[::1]", "1.2.3.4:5269"),
        ("route", "add", "localhost", "1.2.3.4:5269"),  # our own domain
        ("route", "add", "x.example", "1.2.3.4"),
        ("route", "add", "x.example", "1.2.3.4:0"),
        ("route", "add", "x.example", "1.2.3.4:65536"),
        ("route", "add", "x.example", "1.2.3.4:52x"),
        ("route", "add", "x.example", "::1:5269"),
        ("route", "add", "x.example", "[::1]5269"),
        ("route", "add", "x.example", "[not:v6]:5269"),
        ("route", "add", "x.example", "[1.2.3.4]:5269"),
        ("route", "add", "x.example", "host_name:5269"),
        ("route", "add", "x.example", "host-.example:5269"),
        ("route", "add", "x.example", "a..b:5269"),
        ("route", "add", "x.example", "a.b'c:5269"),
        ("route", "add", "x.example", "h:5269", "--pin", "sha1:" + "ab" * 20),
        ("route", "add", "x.example", "h:5269", "--pin", "sha256:" + "ab" * 31),
        ("route", "add", "x.example", "h:5269", "--pin", "sha256:" + "zz" * 32),
    ]
    assert inst.ctl("route", "add", "x.example", "h:5269", "--tls", "plain").code == 2
    for args in bad:
        r = inst.ctl(*args)
        assert r.code == 1, (args, r)
        assert "parleyctl: " in r.err
    for args in (("route", "add", "x.example"), ("route", "del"), ("route", "list", "x"),
                 ("route", "del", "x.example", "--pin", PIN), ("route", "frob")):
        assert inst.ctl(*args).code == 2, args
    assert open(path).read() == before, "a refused change touched the file"

    r = inst.ok("route", "del", "Other.Example")
    assert "other.example" in r.out
    assert [x["domain"] for x in _routes(inst)] == ["example.org", "third.example"]
    r = inst.ctl("route", "del", "other.example")
    assert r.code == 1 and "no route for other.example" in r.err
    inst.ok("route", "del", "example.org")
    inst.ok("route", "del", "third.example")
    assert _routes(inst) == [] and inst.ok("route", "list").out == ""


def test_routes_hand_edits(inst):
    """What the file holds that parleyctl does not understand is never
    rewritten away: such a file is refused until fixed by hand."""
    inst.init()
    path = os.path.join(inst.dir, "etc", "s2s-routes.xml")
    with open(path, "w") as f:
        f.write("<routes><route domain='a.example' host='h' port='1' tls='direct'/></routes>\n")
    inst.ok("route", "add", "b.example", "h2:2")
    assert _routes(inst)[0] == {"domain": "a.example", "host": "h", "port": "1", "tls": "direct"}
    text = "<routes><route domain='a.example' host='h' port='1' weight='3'/></routes>\n"
    with open(path, "w") as f:
        f.write(text)
    r = inst.ctl("route", "add", "b.example", "h2:2")
    assert r.code == 1 and "fix it by hand" in r.err
    assert open(path).read() == text


def test_routes_never_follow_a_planted_temp_file(inst):
    inst.init()
    path = os.path.join(inst.dir, "etc", "s2s-routes.xml")
    victim = os.path.join(inst.base, "victim")
    with open(victim, "w") as f:
        f.write("untouched\n")
    os.symlink(victim, path + ".tmp")
    inst.ok("route", "add", "example.org", "127.0.0.1:5269")
    assert open(victim).read() == "untouched\n"
    assert not os.path.islink(path) and _routes(inst)[0]["domain"] == "example.org"


def test_user_add_while_stopped(inst):
    """The private cluster runs for the command's time when nothing runs."""
    inst.init()
    inst.ok("user", "add", "carol@localhost", "pw")
    assert inst.status()[1]["postgresql"] == "stopped"
    assert inst.ok("user", "list").out.split() == ["carol@localhost"]
    assert inst.ok("db", "status").out.startswith("schema version")
    assert inst.status()[1]["postgresql"] == "stopped"
    inst.ok("start")
    # While the service runs its cluster is left running.
    inst.ok("user", "add", "dave@localhost", "pw")
    assert inst.status()[1]["postgresql"].startswith("running")
    assert inst.ok("user", "list").out.split() == ["carol@localhost", "dave@localhost"]
    inst.ok("stop")


def test_reload(inst):
    inst.init()
    r = inst.ctl("reload")
    assert r.code == 1 and "not running" in r.err
    r = inst.ctl("reload", "nosuch")
    assert r.code == 1 and "no daemon nosuch" in r.err
    assert inst.ctl("reload", "a", "b").code == 2
    inst.ok("start")
    before = inst.log("router").count("component table reloaded")
    r = inst.ok("reload", "router")
    assert "parley-router" in r.out
    end = time.monotonic() + harness.WAIT
    while inst.log("router").count("component table reloaded") == before:
        assert time.monotonic() < end, "the router did not reload"
        time.sleep(0.05)
    # The request was taken by the supervisor.
    end = time.monotonic() + harness.WAIT
    while os.listdir(os.path.join(inst.dir, "ctl", "reload")):
        assert time.monotonic() < end, "the reload request was left behind"
        time.sleep(0.05)
    inst.ok("stop")


# ---------------------------------------------------------------------------
# The whole service: init + user add + start, a real client logs in.

SERVICE = [("router", "router/parley-router"), ("sm", "sm/parley-sm"),
           ("c2s-1", "c2s/parley-c2s"), ("s2s", "s2s/parley-s2s")]


def _service_daemons():
    """The daemons this tree has (template and binary), in start order."""
    have = []
    for name, rel in SERVICE:
        tmpl = {"c2s-1": "c2s"}.get(name, name) + ".xml.in"
        if os.path.exists(os.path.join(harness.REPO, "etc", tmpl)) and \
                os.path.exists(os.path.join(harness.build_dir(), rel)):
            have.append(name)
    return have


class _Client:
    """A slixmpp client that logs in over STARTTLS (the certificate is
    self-signed: not verified) and reports how it went."""

    def __init__(self, jid, password, port):
        import asyncio
        import ssl
        import slixmpp
        self.asyncio = asyncio
        self.xmpp = slixmpp.ClientXMPP(jid, password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.xmpp.ssl_context = ctx
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.failed = loop.create_future()
        self.inbox = asyncio.Queue()
        self.xmpp.add_event_handler("message", self.inbox.put_nowait)
        self.xmpp.add_event_handler("session_start", self._on_start)
        self.xmpp.add_event_handler("failed_auth", lambda _: self._set(self.failed, "auth"))
        self.xmpp.add_event_handler("disconnected", lambda r: self._set(self.failed, r))
        self.xmpp.add_event_handler("connection_failed", lambda r: self._set(self.failed, r))
        self.xmpp.connect(address=("127.0.0.1", port), force_starttls=True,
                          disable_starttls=False)

    def _on_start(self, _):
        # Available, so that messages to the bare JID reach this session.
        self.xmpp.send_presence()
        self._set(self.started, True)

    @staticmethod
    def _set(fut, v):
        if not fut.done():
            fut.set_result(v)

    async def login(self, timeout=harness.START_WAIT):
        done, _ = await self.asyncio.wait({self.started, self.failed}, timeout=timeout,
                                          return_when=self.asyncio.FIRST_COMPLETED)
        if self.started in done:
            return True
        self.xmpp.cancel_connection_attempt()
        return self.failed.result() if self.failed in done else "timeout"

    async def close(self):
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is not None:
            self.xmpp.disconnect(wait=1.0)
            await self.asyncio.wait({self.failed}, timeout=harness.WAIT)


def _hup_count(inst, name):
    return inst.log(name).count("SIGHUP")


def test_service_start_login_status_stop(inst):
    have = _service_daemons()
    if "sm" not in have or "c2s-1" not in have:
        pytest.skip("this tree has no parley-sm or parley-c2s yet (have %s)" % have)
    inst.init()
    inst.ok("user", "add", "alice@localhost", "alice-pw")
    r = inst.ok("start", timeout=240)
    for name in have:
        exe = "parley-" + name.split("-")[0]
        assert "%s: up (pid" % exe in r.out, r
    code, st = inst.status()
    assert code == 0, st
    pids = {}
    for name in have:
        assert st[name].startswith("up (pid"), st
        pids[name] = int(st[name].split()[2].rstrip(","))
    # Started in order, each once the one before was ready.
    log = inst.log("parleyctl")
    order = [log.index("started parley-%s (pid %d)" % (n.split("-")[0], pids[n])) for n in have]
    ready = [log.index("parley-%s (pid %d) is ready" % (n.split("-")[0], pids[n]))
             for n in have]
    for i in range(1, len(have)):
        assert ready[i - 1] < order[i], log

    async def logins():
        good = _Client("alice@localhost", "alice-pw", inst.c2s_port)
        try:
            assert await good.login() is True, "alice could not log in:\n" + inst.log("c2s-1")
            assert "starttls" in good.xmpp.features
        finally:
            await good.close()
        bad = _Client("alice@localhost", "wrong", inst.c2s_port)
        try:
            assert await bad.login() is not True
        finally:
            await bad.close()

    harness.run(logins())

    if _as_root(inst):
        # The router's socket: group parley, 0660; the daemons reach it
        # through that group (the one their <groups> keeps when they drop
        # root: no other supplementary group survives), a user outside it
        # cannot connect. The router owns the socket and keeps no group.
        import grp
        sock = os.path.join(inst.dir, "run", "router", "router.sock")
        gid = grp.getgrnam("parley").gr_gid
        assert os.stat(sock).st_gid == gid and _mode(sock) == 0o660
        assert _owner(sock) == "parley-router"
        assert not _connects(ctlharness.ensure_test_user(), sock)
        for name in have:
            with open("/proc/%d/status" % pids[name]) as f:
                groups = re.search(r"^Groups:(.*)$", f.read(), re.M).group(1).split()
            assert groups == ([] if name == "router" else [str(gid)]), (name, groups)

    if "s2s" in have:
        # A route change reloads s2s, and only s2s.
        before = {n: _hup_count(inst, n) for n in have}
        inst.ok("route", "add", "remote.example", "127.0.0.1:%d" % harness.free_port())
        end = time.monotonic() + harness.WAIT
        while _hup_count(inst, "s2s") == before["s2s"]:
            assert time.monotonic() < end, "s2s got no HUP:\n" + inst.log("s2s")
            time.sleep(0.05)
        for n in have:
            if n != "s2s":
                assert _hup_count(inst, n) == before[n], n
        end = time.monotonic() + harness.WAIT
        while "routes reloaded: 1" not in inst.log("s2s"):
            assert time.monotonic() < end, "s2s did not reload its routes:\n" + inst.log("s2s")
            time.sleep(0.05)

    # c2s, which has dropped root, can read init's key again: a renewed
    # certificate is taken on `reload` without a restart.
    inst.ok("reload", "c2s-1")
    end = time.monotonic() + harness.WAIT
    while "SIGHUP: 1 certificate reloaded" not in inst.log("c2s-1"):
        assert "certificates not reloaded" not in inst.log("c2s-1"), inst.log("c2s-1")
        assert time.monotonic() < end, "c2s did not reload:\n" + inst.log("c2s-1")
        time.sleep(0.05)

    inst.ok("stop", timeout=120)
    code, st = inst.status()
    assert code != 0
    for name in have:
        assert st[name] == "stopped", st
        assert not os.path.exists("/proc/%d" % pids[name]), name
    assert st["postgresql"] == "stopped"
    assert "crashed" not in inst.log("parleyctl"), inst.log("parleyctl")


def test_federation_two_instances():
    """Two instances made by parleyctl alone (a.test, b.test), each with a
    route to the other: a message from a user of one reaches a user of the
    other over s2s (self-signed certificates: dialback with the secrets
    init wrote), both ways."""
    have = _service_daemons()
    if have != [n for n, _ in SERVICE]:
        pytest.skip("this tree lacks a daemon of the service (have %s)" % have)
    mode = "root" if os.geteuid() == 0 else "user"
    a, b = _make(mode), _make(mode)
    try:
        a.init("a.test")
        b.init("b.test")
        a.ok("route", "add", "b.test", "127.0.0.1:%d" % b.s2s_port)
        b.ok("route", "add", "a.test", "127.0.0.1:%d" % a.s2s_port)
        a.ok("user", "add", "alice@a.test", "alice-pw")
        b.ok("user", "add", "bob@b.test", "bob-pw")
        a.ok("start", timeout=240)
        b.ok("start", timeout=240)

        async def talk():
            alice = _Client("alice@a.test", "alice-pw", a.c2s_port)
            bob = _Client("bob@b.test", "bob-pw", b.c2s_port)
            try:
                assert await alice.login() is True, a.log("c2s-1")
                assert await bob.login() is True, b.log("c2s-1")
                for src, dst, jid, text in ((alice, bob, "bob@b.test", "hello from a"),
                                            (bob, alice, "alice@a.test", "hello from b")):
                    src.xmpp.send_message(mto=jid, mbody=text, mtype="chat")
                    deadline = time.monotonic() + 30
                    while True:
                        left = deadline - time.monotonic()
                        assert left > 0, "no message %r:\n%s\n%s" % (
                            text, a.log("s2s")[-4000:], b.log("s2s")[-4000:])
                        try:
                            msg = await harness.asyncio.wait_for(dst.inbox.get(), left)
                        except harness.asyncio.TimeoutError:
                            continue
                        if msg["body"] == text:
                            break
            finally:
                await alice.close()
                await bob.close()

        harness.run(talk())
        a.ok("stop", timeout=120)
        b.ok("stop", timeout=120)
    finally:
        _finish(a)
        _finish(b)


def test_init_external_db():
    """--db DSN: the daemons' configs get it without its user and password
    (each adds its own role), quoted as libpq reads it; parley.xml, which
    keeps the DSN with the admin's password, is 0600."""
    import pg as pgmod
    cluster = pgmod.Cluster()
    extra = {t: ctlharness._standin(t.split(".")[0]) for t in ctlharness.DAEMON_TEMPLATES}
    inst = _make("root" if os.geteuid() == 0 else "user", extra)
    try:
        # As the superuser: init gives the daemons' roles their passwords.
        pw = cluster.password["postgres"]
        dsn = "host=%s port=%d dbname=%s user=postgres password=%s application_name='a b'" % (
            cluster.run, cluster.port, cluster.dbname, pw)
        inst.init("localhost", "--db", dsn)
        for out in ctlharness.DAEMON_TEMPLATES.values():
            text = inst.etc(out)
            assert pw not in text and "postgres" not in text, out
            got = ET.fromstring(text.split("?>", 1)[1]).find("v[@name='db_dsn']").text
            params = dict(re.findall(r"(\w+)='((?:[^'\\]|\\.)*)'", got))
            assert params == {"host": cluster.run, "port": str(cluster.port),
                              "dbname": cluster.dbname, "application_name": "a b"}, got
        assert _mode(os.path.join(inst.dir, "etc", "parley.xml")) == 0o600
        assert not os.path.exists(os.path.join(inst.dir, "pg"))
        # The daemons' roles got fresh passwords, in their own files.
        for role in ("parley_c2s", "parley_sm"):
            assert len(inst.secret("db-" + role)) == 64
    finally:
        _finish(inst)
        cluster.cleanup()


def test_start_refuses_a_log_level_that_hides_ready(inst):
    if "sm" not in _service_daemons():
        pytest.skip("this tree has no parley-sm yet")
    inst.init()
    path = os.path.join(inst.dir, "etc", "sm.xml")
    text = inst.etc("sm.xml")
    assert "<log><level>info</level></log>" in text
    with open(path, "w") as f:
        f.write(text.replace("<log><level>info</level></log>", "<log><level>warn</level></log>"))
    r = inst.ctl("start")
    assert r.code == 1 and "hides the line" in r.err and "sm ready" in r.err, r
    assert inst.status()[1]["postgresql"] == "stopped"
