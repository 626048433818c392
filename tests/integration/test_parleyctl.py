"""test_parleyctl.py - parleyctl end to end: init, start/stop/status with the
supervisor (crash restart), users with their SCRAM rows, components (a real
slixmpp component completes its handshake), db migrate/status, each
daemon's own TLS key, `upgrade` of an instance an older parleyctl made, and
the errors, both as root (per-daemon system users) and as an ordinary user.
Each test gets its own instance directory, private PostgreSQL cluster and
router port; parleyctl and the daemons are the ASan build (PARLEY_BUILD).
"""

import errno
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import time

import pytest

import ctlharness
import harness

MODES = ["root", "user"]


@pytest.fixture(params=MODES)
def inst(request):
    if request.param == "root":
        if os.geteuid() != 0:
            pytest.skip("needs root (CI runs as root)")
        i = ctlharness.Instance()
    else:
        user = ctlharness.ensure_test_user() if os.geteuid() == 0 else None
        i = ctlharness.Instance(as_user=user)
    request.node.parley_ctl = i
    yield i
    problems = i.sanitizer_errors()
    i.cleanup()
    assert not problems, "sanitizer reports: %s" % problems[:5]


def wait_for(pred, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def router_pid(inst):
    code, st = inst.status()
    m = re.match(r"up \(pid (\d+)", st.get("router", ""))
    return int(m.group(1)) if m else None


def test_init_layout_and_refusal(inst):
    r = inst.init()
    assert "initialised" in r.out
    etc = os.path.join(inst.dir, "etc")
    for f in ("parley.xml", "router.xml", "router-users.xml", "tls/localhost.crt",
              "tls/localhost.key", "tls/s2s/localhost.crt", "tls/s2s/localhost.key",
              "secrets/sm", "secrets/c2s-1", "secrets/s2s",
              "secrets/db-parley_admin", "secrets/db-parley_c2s", "secrets/db-parley_sm"):
        assert os.path.exists(os.path.join(etc, f)), f
    router_xml = open(os.path.join(etc, "router.xml")).read()
    assert "port='%d'" % inst.port in router_xml
    assert "@" not in router_xml.split("-->", 2)[-1]
    users_xml = open(os.path.join(etc, "router-users.xml")).read()
    assert "<domain>localhost</domain>" in users_xml
    # Secrets are never readable by everyone; as root they belong to the daemons.
    for name, owner in (("sm", "parley-sm"), ("c2s-1", "parley-c2s"),
                        ("db-parley_sm", "parley-sm"), ("db-parley_c2s", "parley-c2s")):
        st = os.stat(os.path.join(etc, "secrets", name))
        assert st.st_mode & 0o007 == 0, name
        if inst.as_user is None and os.geteuid() == 0:
            assert pwd.getpwuid(st.st_uid).pw_name == owner
        elif inst.as_user:
            assert pwd.getpwuid(st.st_uid).pw_name == inst.as_user
    if inst.as_user is None and os.geteuid() == 0:
        assert pwd.getpwuid(os.stat(os.path.join(inst.dir, "pg", "data")).st_uid).pw_name == \
            "parley-db"
    # A second init refuses and changes nothing.
    before = open(os.path.join(etc, "parley.xml")).read()
    r = inst.ctl("init", "--domain", "other.example")
    assert r.code != 0 and "already initialised" in r.err
    assert open(os.path.join(etc, "parley.xml")).read() == before
    # Schema present and current; the stopped cluster runs for the command only.
    r = inst.ok("db", "status")
    assert "up to date" in r.out
    assert inst.status()[1]["postgresql"] == "stopped"


def test_bad_init_and_uninitialised(inst):
    r = inst.ctl("init", "--domain", "bad domain!")
    assert r.code != 0 and "not a valid domain" in r.err
    r = inst.ctl("init", "--domain", "localhost", "--router-port", "70000")
    assert r.code == 2 and "port" in r.err
    r = inst.ctl("init")
    assert r.code == 2
    for args in (("start",), ("status",), ("user", "list"), ("component", "list"),
                 ("db", "status")):
        r = inst.ctl(*args)
        assert r.code != 0 and "not initialised" in r.err, args
    r = inst.ctl("frobnicate")
    assert r.code == 2 and "unknown command" in r.err


def test_start_component_crash_stop(inst):
    inst.init()
    r = inst.ok("start")
    assert "parley-router: up" in r.out
    code, st = inst.status()
    assert code == 0, st
    assert st["router"].startswith("up (pid")
    assert st["postgresql"].startswith("running")
    r = inst.ctl("start")
    assert r.code != 0 and "already running" in r.err

    # A component added while the router runs: HUP, then a real handshake.
    r = inst.ok("component", "add", "muc.localhost")
    secret = r.out.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert secret not in r.err
    assert inst.ok("component", "list").out.split() == ["muc.localhost"]
    inst.ok("component", "add", "bot.localhost", "--secret", "s3cret-bot")
    r = inst.ctl("component", "add", "muc.localhost")
    assert r.code != 0 and "exists" in r.err
    r = inst.ctl("component", "add", "sm")
    assert r.code != 0 and "reserved" in r.err

    async def handshake(name, sec):
        wait_for(lambda: "reloaded" in inst.log("router"), "the router's reload")
        c = harness.Comp(name, sec, inst.port)
        c.connect()
        await c.wait_started(harness.START_WAIT)
        await c.close()

    harness.run(handshake("muc.localhost", secret))
    harness.run(handshake("bot.localhost", "s3cret-bot"))

    # kill -9: the supervisor logs the crash and starts a new router.
    old = router_pid(inst)
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: (router_pid(inst) or old) != old and router_pid(inst),
                   "a restarted router")
    assert new != old
    log = inst.log("parleyctl")
    assert re.search(r"parley-router \(pid %d\) crashed: killed by signal 9" % old, log), log
    assert "restarts 1" in inst.status()[1]["router"]
    wait_for(lambda: harness.free_port and _accepts(inst.port), "the restarted router's port")
    harness.run(handshake("muc.localhost", secret))

    # A deleted component is refused from then on.
    inst.ok("component", "del", "bot.localhost")
    assert inst.ok("component", "list").out.split() == ["muc.localhost"]
    r = inst.ctl("component", "del", "bot.localhost")
    assert r.code != 0 and "no component" in r.err

    r = inst.ok("stop")
    code, st = inst.status()
    assert code != 0
    assert st["router"] == "stopped" and st["postgresql"] == "stopped"
    assert not _pid_alive(new)
    assert "exited" not in st["supervisor"]
    # stop when stopped is fine.
    inst.ok("stop")


def _accepts(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


CRED_SQL = ("SELECT mechanism, encode(salt, 'hex'), iterations, encode(stored_key, 'hex'), "
            "encode(server_key, 'hex') FROM credentials WHERE jid = :'v1' ORDER BY mechanism")


def test_users(inst):
    inst.init()
    inst.ok("start")
    r = inst.ok("user", "add", "Alice@LocalHost", "pencil")
    assert "pencil" not in r.out + r.err
    inst.ok("user", "add", "bob@localhost", stdin="from stdin\n")
    assert inst.ok("user", "list").out.split() == ["alice@localhost", "bob@localhost"]
    assert inst.ok("user", "list", "localhost").out.split() == ["alice@localhost",
                                                                "bob@localhost"]
    assert inst.psql("SELECT jid, domain FROM users ORDER BY jid") == [
        ["alice@localhost", "localhost"], ["bob@localhost", "localhost"]]

    rows = inst.psql(CRED_SQL, "alice@localhost")
    assert [r[0] for r in rows] == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
    for row in rows:
        assert len(bytes.fromhex(row[1])) == 16 and int(row[2]) >= 4096
        assert ctlharness.scram_check(row, "pencil")
        assert not ctlharness.scram_check(row, "Pencil")
    assert all(ctlharness.scram_check(r, "from stdin") for r in inst.psql(CRED_SQL,
                                                                          "bob@localhost"))

    inst.ok("user", "passwd", "alice@localhost", "newpass")
    rows2 = inst.psql(CRED_SQL, "alice@localhost")
    assert len(rows2) == 2
    assert all(ctlharness.scram_check(r, "newpass") for r in rows2)
    assert not any(ctlharness.scram_check(r, "pencil") for r in rows2)
    assert {r[1] for r in rows2}.isdisjoint({r[1] for r in rows})  # fresh salts

    # Errors: non-zero exit and a clear message, nothing changed.
    for args, msg in (
            (("user", "add", "alice@localhost", "x"), "exists"),
            (("user", "add", "carol@example.org", "x"), "unknown domain"),
            (("user", "add", "bad user@localhost", "x"), "not a valid JID"),
            (("user", "add", "localhost", "x"), "user@domain"),
            (("user", "add", "carol@localhost/res", "x"), "without a resource"),
            (("user", "passwd", "nobody@localhost", "x"), "no such user"),
            (("user", "del", "nobody@localhost"), "no such user"),
            (("user", "list", "example.org"), "unknown domain"),
            (("user", "add", "carol@localhost"), "password"),  # empty stdin
    ):
        r = inst.ctl(*args, stdin="")
        assert r.code != 0, (args, r)
        assert msg in r.err, (args, r)
        assert "x" != r.out.strip()
    assert inst.ok("user", "list").out.split() == ["alice@localhost", "bob@localhost"]

    inst.ok("user", "del", "bob@localhost")
    assert inst.ok("user", "list").out.split() == ["alice@localhost"]
    assert inst.psql(CRED_SQL, "bob@localhost") == []

    r = inst.ok("db", "status")
    assert "up to date" in r.out
    r = inst.ok("db", "migrate")
    assert "0 migrations applied" in r.out

    # Database down while the service runs (parleyctl then leaves the
    # cluster to the service): a clear error, non-zero.
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]
    data = os.path.join(inst.dir, "pg", "data")
    cmd = [pg_ctl, "-D", data, "-m", "fast", "-w", "-s", "stop"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", _owner(data), "--"] + cmd
    subprocess.run(cmd, check=True, timeout=60)
    for args in (("user", "add", "dave@localhost", "x"), ("user", "list"), ("db", "status")):
        r = inst.ctl(*args)
        assert r.code != 0 and "cannot connect to the database" in r.err, (args, r)
    inst.ok("stop")


def _owner(path):
    return pwd.getpwuid(os.lstat(path).st_uid).pw_name


def _me(inst):
    return inst.as_user or pwd.getpwuid(os.geteuid()).pw_name


def _as(user, *cmd):
    import subprocess
    return subprocess.run(["runuser", "-u", user, "--"] + list(cmd), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30)


def test_supervisor_files_out_of_daemons_reach(inst):
    inst.init()
    ctl = os.path.join(inst.dir, "ctl")
    run = os.path.join(inst.dir, "run")
    # The supervisor's directory and run/ belong to the invoking user and
    # nobody else writes them; the router has its own run/router.
    for d in (ctl, run):
        st = os.lstat(d)
        assert _owner(d) == _me(inst) and st.st_mode & 0o022 == 0, d
    if inst.as_user is None and os.geteuid() == 0:
        assert _owner(os.path.join(run, "router")) == "parley-router"
        for d in (ctl, run):
            r = _as("parley-router", "ln", "-s", "/etc/passwd", os.path.join(d, "planted"))
            assert r.returncode != 0 and not os.path.lexists(os.path.join(d, "planted")), d
        assert _as("parley-router", "touch", os.path.join(run, "router", "x")).returncode == 0

    # Links planted where the supervisor writes are never followed.
    victim = os.path.join(inst.base, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.symlink(victim, os.path.join(ctl, "parleyctl.state.tmp"))
    os.symlink(victim, os.path.join(ctl, "parleyctl.pid"))
    r = inst.ctl("start")
    assert r.code != 0 and "parleyctl.pid" in r.err, r
    assert open(victim).read() == "precious\n"
    assert inst.status()[1]["postgresql"] == "stopped"  # the failed start stopped its cluster
    os.unlink(os.path.join(ctl, "parleyctl.pid"))
    r = inst.ok("start")
    assert open(victim).read() == "precious\n"
    assert not os.path.islink(os.path.join(ctl, "parleyctl.state"))
    assert os.path.exists(os.path.join(run, "router", "router.pid"))
    assert os.path.exists(os.path.join(run, "router", "router.sock"))
    assert inst.status()[0] == 0

    # The daemons' users reach the private cluster's socket (pg/ is 0711).
    if inst.as_user is None and os.geteuid() == 0:
        import subprocess
        env = dict(os.environ)
        env["PGPASSWORD"] = inst.secret("db-parley_sm")
        r = subprocess.run(["runuser", "-u", "parley-sm", "--", ctlharness.psql_bin(), "-X",
                            "-A", "-t", "-h", os.path.join(inst.dir, "pg", "run"), "-p", "5432",
                            "-U", "parley_sm", "-d", "parley", "-c", "select 1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=30)
        assert r.returncode == 0 and r.stdout.decode().strip() == "1", r.stderr
    inst.ok("stop")


def test_concurrent_starts(inst):
    import threading
    inst.init()
    for _ in range(2):
        results = [None, None]

        def one(i):
            results[i] = inst.ctl("start")
        ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        codes = sorted(r.code for r in results)
        assert codes == [0, 1], results
        loser = [r for r in results if r.code != 0][0]
        assert "already running" in loser.err or "another" in loser.err, loser
        code, st = inst.status()
        assert code == 0, st
        assert st["postgresql"].startswith("running") and st["router"].startswith("up")
        assert len(inst.psql("SELECT 1")) == 1
        inst.ok("stop")


def test_stop_after_supervisor_killed(inst):
    inst.init()
    inst.ok("start")
    code, st = inst.status()
    sup = int(re.match(r"running \(pid (\d+)", st["supervisor"]).group(1))
    router = router_pid(inst)
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: inst.status()[1]["supervisor"] == "stopped", "the supervisor's end")
    assert _pid_alive(router)
    inst.ok("stop")
    wait_for(lambda: not _pid_alive(router), "the orphaned router's end")
    code, st = inst.status()
    assert code != 0 and st["postgresql"] == "stopped" and st["router"] == "stopped", st
    # It starts again cleanly.
    inst.ok("start")
    assert inst.status()[0] == 0
    inst.ok("stop")


def test_init_refuses_symlinks_and_unreachable_dir(inst):
    os.mkdir(inst.dir)
    elsewhere = os.path.join(inst.base, "elsewhere")
    os.mkdir(elsewhere, 0o700)
    os.symlink(elsewhere, os.path.join(inst.dir, "etc"))
    if inst.as_user:
        pw = pwd.getpwnam(inst.as_user)
        for p in (inst.dir, elsewhere):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    r = inst.ctl("init", "--domain", "localhost", "--router-port", str(inst.port))
    assert r.code != 0 and "symlink" in r.err, r
    assert os.stat(elsewhere).st_mode & 0o777 == 0o700 and os.listdir(elsewhere) == []
    if inst.as_user is None and os.geteuid() == 0:
        os.unlink(os.path.join(inst.dir, "etc"))
        # A DIR owned by someone else is refused.
        os.chown(inst.dir, pwd.getpwnam("parley-router").pw_uid, -1)
        r = inst.ctl("init", "--domain", "localhost", "--router-port", str(inst.port))
        assert r.code != 0 and "belongs to" in r.err, r
        os.chown(inst.dir, 0, 0)
        # An ancestor the daemons cannot pass is named, not changed.
        os.chmod(inst.base, 0o700)
        r = inst.ctl("init", "--domain", "localhost", "--router-port", str(inst.port))
        assert r.code != 0 and inst.base in r.err and "o+x" in r.err, r
        assert os.stat(inst.base).st_mode & 0o777 == 0o700
        os.chmod(inst.base, 0o755)


def _tls_files(inst, config):
    """(cert, key) that DIR/etc/<config> names in its <tls><cert>."""
    import xml.etree.ElementTree as ET
    cert = ET.fromstring(inst.etc(config).split("?>", 1)[1]).find("tls/cert")
    return cert.get("cert"), cert.get("key")


def test_init_own_key_per_daemon(inst):
    """c2s and s2s each get their own certificate and key (DESIGN.md: no
    daemon shares a key), named by their configs; each key is readable by
    its daemon's group only (as root: root's, group of parley-c2s or
    parley-s2s, 0640; so neither daemon's user can read the other's)."""
    inst.init()
    c2s_crt, c2s_key = _tls_files(inst, "c2s-1.xml")
    s2s_crt, s2s_key = _tls_files(inst, "s2s.xml")
    assert c2s_key == os.path.join(inst.dir, "etc", "tls", "localhost.key")
    assert s2s_key == os.path.join(inst.dir, "etc", "tls", "s2s", "localhost.key")
    assert c2s_crt != s2s_crt
    with open(c2s_key, "rb") as a, open(s2s_key, "rb") as b:
        assert a.read() != b.read()
    # Two certificates with the domain's name over different public keys.
    pubs = []
    for crt in (c2s_crt, s2s_crt):
        r = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-pubkey", "-ext",
                            "subjectAltName"], stdout=subprocess.PIPE, check=True)
        assert b"DNS:localhost" in r.stdout
        pubs.append(r.stdout.split(b"-----END PUBLIC KEY-----")[0])
    assert pubs[0] != pubs[1]
    for crt, key in ((c2s_crt, c2s_key), (s2s_crt, s2s_key)):
        assert os.stat(key).st_mode & 0o777 == 0o640, key
        assert os.stat(crt).st_mode & 0o777 == 0o644, crt
    if not (inst.as_user is None and os.geteuid() == 0):
        for key in (c2s_key, s2s_key):
            assert _owner(key) == _me(inst)
        return
    for key, group in ((c2s_key, "parley-c2s"), (s2s_key, "parley-s2s")):
        assert _owner(key) == "root"
        assert os.stat(key).st_gid == pwd.getpwnam(group).pw_gid, key
    for user in ("parley-c2s", "parley-s2s", "parley-sm", "parley-router"):
        for key, owner in ((c2s_key, "parley-c2s"), (s2s_key, "parley-s2s")):
            readable = _as(user, "cat", key).returncode == 0
            assert readable == (user == owner), "%s reading %s: %s" % (user, key, readable)


CONFIGS = ("router.xml", "sm.xml", "c2s-1.xml", "s2s.xml")


def _make_old(inst):
    """Turn a fresh instance into one as parleyctl made it before session 3:
    no <groups> in the daemons' configs, no group on the router's socket,
    as root the default ACL on run/router that let the daemons' users reach
    it by uid; c2s's key root's 0600; s2s using c2s's certificate and key."""
    etc = os.path.join(inst.dir, "etc")
    for name in ("sm.xml", "c2s-1.xml", "s2s.xml"):
        p = os.path.join(etc, name)
        text = open(p).read()
        assert "<groups>" in ctlharness.uncommented(text), name
        with open(p, "w") as f:
            f.write(re.sub(r"\n  <groups>[^<]*</groups>", "", text))
    p = os.path.join(etc, "router.xml")
    text = open(p).read()
    with open(p, "w") as f:
        f.write(re.sub(r"(<unix [^>]*?) group='[^']*'", r"\1", text))
    p = os.path.join(etc, "s2s.xml")
    text = open(p).read()
    with open(p, "w") as f:
        f.write(text.replace("/tls/s2s/localhost.", "/tls/localhost."))
    for ext in ("crt", "key"):
        os.unlink(os.path.join(etc, "tls", "s2s", "localhost." + ext))
    key = os.path.join(etc, "tls", "localhost.key")
    os.chmod(key, 0o600)
    if inst.as_user is None and os.geteuid() == 0:
        os.chown(key, 0, 0)
        # The kernel's POSIX ACL xattr (linux/posix_acl_xattr.h), as the
        # old init wrote it: owner rwx, the daemons' users rw, group r-x,
        # mask rwx, other r-x.
        import struct
        uids = sorted(pwd.getpwnam(u).pw_uid for u in ("parley-sm", "parley-c2s", "parley-s2s"))
        ents = [(0x01, 7, 0xffffffff)] + [(0x02, 6, u) for u in uids] + \
            [(0x04, 5, 0xffffffff), (0x10, 7, 0xffffffff), (0x20, 5, 0xffffffff)]
        acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in ents)
        os.setxattr(os.path.join(inst.dir, "run", "router"), "system.posix_acl_default", acl)


def _socket_group(inst):
    import grp
    if inst.as_user is None and os.geteuid() == 0:
        return "parley"
    user = inst.as_user or pwd.getpwuid(os.geteuid()).pw_name
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def test_upgrade_old_instance(inst):
    """An instance made before session 3 (see _make_old) runs as it is;
    `upgrade` is refused while it runs; stopped, upgrade gives it the
    socket group in router.xml and <groups> in every daemon config
    (comments and all else kept), drops the ACL, gives c2s's key its group
    and s2s a key of its own; a second upgrade changes nothing; the
    upgraded instance starts and its socket belongs to the group."""
    import xml.etree.ElementTree as ET
    inst.init()
    _make_old(inst)
    root = inst.as_user is None and os.geteuid() == 0
    group = _socket_group(inst)
    inst.ok("start")
    assert inst.status()[0] == 0
    r = inst.ctl("upgrade")
    assert r.code == 1 and "stop" in r.err, r
    inst.ok("stop")

    before = {n: inst.etc(n) for n in CONFIGS}
    r = inst.ok("upgrade")
    assert "upgraded" in r.out, r
    for n in CONFIGS:
        text = inst.etc(n)
        assert text.count("<!--") == before[n].count("<!--"), n
        doc = ET.fromstring(text.split("?>", 1)[1])
        if n == "router.xml":
            assert doc.find("listen/unix").get("group") == group
        else:
            assert doc.find("groups").text == group, n
    if root:
        try:
            os.getxattr(os.path.join(inst.dir, "run", "router"), "system.posix_acl_default")
            raise AssertionError("run/router still has its default ACL")
        except OSError as e:
            assert e.errno == errno.ENODATA, e
    c2s_crt, c2s_key = _tls_files(inst, "c2s-1.xml")
    s2s_crt, s2s_key = _tls_files(inst, "s2s.xml")
    assert s2s_key == os.path.join(inst.dir, "etc", "tls", "s2s", "localhost.key")
    assert s2s_crt == os.path.join(inst.dir, "etc", "tls", "s2s", "localhost.crt")
    assert open(c2s_key, "rb").read() != open(s2s_key, "rb").read()
    for key, g in ((c2s_key, "parley-c2s"), (s2s_key, "parley-s2s")):
        assert os.stat(key).st_mode & 0o777 == 0o640, key
        if root:
            assert _owner(key) == "root" and os.stat(key).st_gid == pwd.getpwnam(g).pw_gid

    after = {n: inst.etc(n) for n in CONFIGS}
    r = inst.ok("upgrade")
    assert "up to date" in r.out, r
    assert {n: inst.etc(n) for n in CONFIGS} == after

    inst.ok("start")
    assert inst.status()[0] == 0
    if root:
        import grp
        sock = os.stat(os.path.join(inst.dir, "run", "router", "router.sock"))
        assert sock.st_gid == grp.getgrnam("parley").gr_gid
        assert sock.st_mode & 0o777 == 0o660
    inst.ok("stop")


def test_upgrade_keeps_a_ca_certificate(inst):
    """An old instance whose certificate came from a CA: upgrade does not
    give s2s a self-signed one instead (it says where s2s's own goes);
    once the operator put one there, upgrade points s2s.xml at it."""
    import s2sutil
    inst.init()
    _make_old(inst)
    etc = os.path.join(inst.dir, "etc")
    ca = s2sutil.TestCA(inst.base, "Upgrade Test CA")

    def put(files, where):
        for ext, src in zip(("crt", "key"), files):
            dst = os.path.join(etc, where, "localhost." + ext)
            shutil.copy(src, dst)
            if inst.as_user:
                pw = pwd.getpwnam(inst.as_user)
                os.chown(dst, pw.pw_uid, pw.pw_gid)

    put(ca.issue("localhost"), "tls")
    r = inst.ok("upgrade")
    assert "not self-signed" in r.err and "tls/s2s/localhost.crt" in r.err, r
    assert _tls_files(inst, "s2s.xml") == tuple(
        os.path.join(etc, "tls", "localhost." + ext) for ext in ("crt", "key"))
    assert not os.path.exists(os.path.join(etc, "tls", "s2s", "localhost.key"))
    put(ca.issue("localhost", tag="-s2s"), "tls/s2s")
    r = inst.ok("upgrade")
    assert "upgraded" in r.out, r
    s2s_crt, s2s_key = _tls_files(inst, "s2s.xml")
    assert s2s_key == os.path.join(etc, "tls", "s2s", "localhost.key")
    assert os.stat(s2s_key).st_mode & 0o777 == 0o640
    if inst.as_user is None and os.geteuid() == 0:
        assert os.stat(s2s_key).st_gid == pwd.getpwnam("parley-s2s").pw_gid
