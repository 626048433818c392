"""stack.py - a whole Parley service for the end-to-end tests: a throwaway
PostgreSQL cluster, parley-router, parley-sm and one or more parley-c2s
processes, each with its config in one private directory.

  st = Stack(domain="example.test", c2s=2)   # configs written, nothing runs
  st.start()                                  # PG is up already; router, sm, c2s-N
  st.add_user("alice", "secret")              # SCRAM-SHA-1 and -256 keys in the db
  ... slixmpp clients connect to 127.0.0.1:st.c2s_port (STARTTLS)
      or st.c2s_tls_port (direct TLS); the certificate is self-signed
  st.kill("c2s-1"); st.restart("sm"); st.pg.restart()
  st.cleanup()                                # stops everything, removes files

Several c2s processes share one pair of ports (SO_REUSEPORT), as in
production. Each daemon is a Daemon (start/kill/stop/restart/log/
sanitizer_errors). Extra config XML for a daemon goes in through
Stack(extra={"c2s": "<limits>...</limits>", "sm": "..."}) and is placed
before the closing root tag, so tests set knobs without editing this file.

The config formats are the daemons' own (etc/c2s.xml.in, etc/sm.xml.in);
what this file writes is the minimal set each daemon needs.
"""

import hashlib
import hmac
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import harness
import pg as pgmod


def scram_keys(password, salt, iterations, hname):
    salted = hashlib.pbkdf2_hmac(hname, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hname).digest()
    stored_key = hashlib.new(hname, client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hname).digest()
    return stored_key, server_key


def selfsigned(dirpath, domain):
    """A self-signed certificate for domain (and *.domain): (cert, key)."""
    crt = os.path.join(dirpath, domain + ".crt")
    key = os.path.join(dirpath, domain + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                    "-subj", "/CN=%s" % domain, "-addext",
                    "subjectAltName=DNS:%s,DNS:*.%s" % (domain, domain),
                    "-keyout", key, "-out", crt], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


class Daemon:
    """One daemon process: exe, config file, log file; started with -f."""

    def __init__(self, name, exe, config, logpath, ready):
        self.name = name
        self.exe = exe
        self.config = config
        self.logpath = logpath
        self.ready = ready  # callable: True once the daemon is up
        self.proc = None
        self.exits = []

    def env(self):
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:quarantine_size_mb=16:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        return env

    def start(self, wait=True):
        assert self.proc is None or self.proc.poll() is not None
        self.log_offset = len(self.log())  # ready means ready in this run
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-f", "-c", self.config],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self.env())
        if not wait:
            return
        deadline = time.monotonic() + harness.START_WAIT
        while not self.ready():
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %d at start-up:\n%s" %
                                     (self.name, self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                raise AssertionError("%s not ready within %.0fs:\n%s" %
                                     (self.name, harness.START_WAIT, self.log()))
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(harness.STOP_WAIT)
        self.exits.append(self.proc.returncode)

    def signal(self, signum):
        self.proc.send_signal(signum)

    def stop(self):
        """SIGTERM and the exit code (None: it did not exit in time, killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(harness.STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self.exits.append(code)
        return code

    def restart(self):
        if self.running():
            self.stop()
        self.start()

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def fresh_log(self):
        """The log written since the last start()."""
        return self.log()[getattr(self, "log_offset", 0):]

    def sanitizer_errors(self):
        return [l for l in self.log().splitlines()
                if "ERROR: AddressSanitizer" in l or "ERROR: LeakSanitizer" in l
                or "Sanitizer has encountered a fatal error" in l or "runtime error:" in l]

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)


def _listening(port):
    """Something listens on TCP port, on any address, IPv4 or IPv6. Read
    from /proc/net/tcp and tcp6, not by connecting: a probe connection would
    count at c2s as an unauthenticated connection until c2s saw it close, and
    so race with a test's first connections under a small limit. c2s binds
    its listeners (pre_jail) before it logs "c2s ready", so this only
    confirms what the ready line says."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for line in lines:
            fields = line.split()
            # local_address is ADDR:PORT, the port in hex (big-endian as
            # printed); the address's byte order does not matter here.
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                return True
    return False


class Stack:
    def __init__(self, domain="example.test", c2s=1, extra=None, router_limits=None,
                 pg=None, start_pg=True, ipv6=False, more_certs=()):
        self.domain = domain
        self.ipv6 = ipv6  # c2s also listens on [::1], same ports
        self.more_certs = more_certs  # more domains with a certificate each (SNI)
        self.extra = extra or {}
        self.dir = tempfile.mkdtemp(prefix="parley-stack-")
        os.chmod(self.dir, 0o755)
        self.as_root = os.geteuid() == 0
        self.user = "nobody" if self.as_root else None
        self.own_pg = pg is None
        self.pg = pg if pg is not None else (pgmod.Cluster() if start_pg else None)
        self.c2s_port = harness.free_port()
        self.c2s_tls_port = harness.free_port()
        self.cert, self.key = selfsigned(self.dir, domain)
        self._own(self.key)
        os.chmod(self.key, 0o600)
        self.certs = {}
        for d in more_certs:
            self.certs[d] = selfsigned(self.dir, d)
            self._own(self.certs[d][1])
            os.chmod(self.certs[d][1], 0o600)
        self.secrets = {}
        components = {
            "sm": {"secret": os.urandom(16).hex(), "internal": True, "multi": True,
                   "domains": [domain]},
            "s2s": {"secret": os.urandom(16).hex(), "internal": True, "default_route": True},
        }
        self.c2s_names = ["c2s-%d" % (i + 1) for i in range(c2s)]
        for n in self.c2s_names:
            components[n] = {"secret": os.urandom(16).hex(), "internal": True}
        self.router = harness.Router(limits=router_limits, components=components)
        self.daemons = {}
        self._write_sm()
        for n in self.c2s_names:
            self._write_c2s(n)

    # ---- helpers

    def _own(self, path):
        if self.as_root:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _db(self, role):
        pwfile = self._path("db-%s.secret" % role)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.pg.password[role] + "\n")
        self._own(pwfile)
        return ("  <db><dsn>host=%s port=%d dbname=%s user=%s</dsn>"
                "<password file='%s'/></db>\n" % (self.pg.run, self.pg.port, self.pg.dbname,
                                                   role, pwfile))

    def _common(self, name):
        user = "  <user>%s</user>\n" % self.user if self.user else ""
        return (user +
                "  <pidfile>%s</pidfile>\n"
                "  <log><level>debug</level></log>\n"
                "  <router name='%s' connect='unix:%s'><secret file='%s'/></router>\n" %
                (self._path(name + ".pid"), name, self.router.sock,
                 self.router.secret_file(name)))

    def _write(self, name, root, body):
        path = self._path(name + ".xml")
        with open(path, "w") as f:
            f.write("<%s>\n%s%s</%s>\n" % (root, body, self.extra.get(root, ""), root))
        os.chmod(path, 0o644)
        return path

    def _write_sm(self):
        body = (self._common("sm") +
                "  <domain>%s</domain>\n" % self.domain +
                self._db("parley_sm"))
        cfg = self._write("sm", "sm", body)
        self.daemons["sm"] = Daemon(
            "sm", harness.binary("sm/parley-sm"), cfg, self._path("sm.log"),
            lambda: "sm ready" in self.daemons["sm"].fresh_log())

    def _write_c2s(self, name):
        body = (self._common(name) +
                "  <sm>sm</sm>\n" +
                self._db("parley_c2s") +
                "  <listen>\n"
                "    <tcp address='127.0.0.1' port='%d'/>\n"
                "    <tcp address='127.0.0.1' port='%d' tls='direct'/>\n"
                "%s"
                "  </listen>\n"
                "  <tls><cert domain='%s' cert='%s' key='%s'/>%s</tls>\n" %
                (self.c2s_port, self.c2s_tls_port,
                 "    <tcp address='::1' port='%d'/>\n"
                 "    <tcp address='::1' port='%d' tls='direct'/>\n" %
                 (self.c2s_port, self.c2s_tls_port) if self.ipv6 else "",
                 self.domain, self.cert, self.key,
                 "".join("<cert domain='%s' cert='%s' key='%s'/>" % (d, c, k)
                         for d, (c, k) in self.certs.items())))
        cfg = self._write(name, "c2s", body)
        self.daemons[name] = Daemon(
            name, harness.binary("c2s/parley-c2s"), cfg, self._path(name + ".log"),
            lambda: "c2s ready" in self.daemons[name].fresh_log() and _listening(self.c2s_port))

    # ---- lifecycle

    def start(self):
        """Router, then sm, then every c2s; each waits for its "ready" log line.
        A c2s port taken meanwhile by another process (free_port can only
        say it was free) gets new ports and another try."""
        self.router.start()
        self.daemons["sm"].start()
        for attempt in range(3):
            try:
                for n in self.c2s_names:
                    self.daemons[n].start()
                return self
            except AssertionError as e:
                if "Address already in use" not in str(e) or attempt == 2:
                    raise
                for n in self.c2s_names:
                    self.daemons[n].stop()
                self.c2s_port = harness.free_port()
                self.c2s_tls_port = harness.free_port()
                for n in self.c2s_names:
                    self._write_c2s(n)
        return self

    def __getitem__(self, name):
        return self.router if name == "router" else self.daemons[name]

    def kill(self, name):
        self[name].kill()

    def restart(self, name):
        self[name].restart()

    def add_user(self, user, password, iterations=4096):
        """An account user@domain with SCRAM-SHA-1 and SCRAM-SHA-256 keys."""
        jid = "%s@%s" % (user, self.domain)
        sql = ["INSERT INTO users (jid, domain) VALUES (:'jid', :'dom');"]
        for mech, hname in (("SCRAM-SHA-1", "sha1"), ("SCRAM-SHA-256", "sha256")):
            salt = os.urandom(16)
            stored, server = scram_keys(password, salt, iterations, hname)
            sql.append("INSERT INTO credentials VALUES (:'jid', '%s', decode('%s', 'hex'), %d, "
                       "decode('%s', 'hex'), decode('%s', 'hex'));" %
                       (mech, salt.hex(), iterations, stored.hex(), server.hex()))
        self.pg.psql("\n".join(sql), variables={"jid": jid, "dom": self.domain})
        return jid

    def del_user(self, user):
        self.pg.psql("DELETE FROM users WHERE jid = :'jid'",
                     variables={"jid": "%s@%s" % (user, self.domain)})

    def sanitizer_errors(self):
        errs = ["router: " + l for l in self.router.sanitizer_errors()]
        for n, d in self.daemons.items():
            errs += ["%s: %s" % (n, l) for l in d.sanitizer_errors()]
        return errs

    def logs(self):
        out = "---- router\n" + self.router.log()
        for n, d in self.daemons.items():
            out += "\n---- %s\n%s" % (n, d.log())
        return out

    def stop(self):
        """SIGTERM to every daemon (c2s first); returns {name: exit code}."""
        codes = {}
        for n in self.c2s_names + ["sm"]:
            codes[n] = self.daemons[n].stop()
        codes["router"] = self.router.stop()
        return codes

    def stop_and_check(self):
        """Stop everything (SIGTERM); the problems seen: a daemon that did not
        exit 0, or any sanitizer line (leaks are reported at exit)."""
        codes = self.stop()
        bad = ["%s exited with %r" % (n, c) for n, c in codes.items() if c != 0]
        return bad + self.sanitizer_errors()

    def cleanup(self):
        try:
            self.stop()
        finally:
            self.router.cleanup()
            if self.own_pg and self.pg is not None:
                self.pg.cleanup()
            shutil.rmtree(self.dir, ignore_errors=True)



# ---- clients for the c2s tests

def client(jid, password, mech=None, resource=None):
    """A slixmpp client for jid that trusts our self-signed certificate."""
    import ssl
    import slixmpp

    full = jid + ("/" + resource if resource else "")
    xmpp = slixmpp.ClientXMPP(full, password, sasl_mech=mech)
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
    xmpp.inbox = None
    return xmpp


async def login(st, user, password, mech=None, direct=False, resource=None, port=None):
    """Log user in (STARTTLS, or direct TLS); returns (client, outcome) where
    outcome is "session" (bound), "failed_auth" or "disconnected"."""
    import asyncio

    xmpp = client("%s@%s" % (user, st.domain), password, mech, resource)
    loop = asyncio.get_event_loop()
    done = loop.create_future()
    xmpp.inbox = asyncio.Queue()

    def settle(what):
        if not done.done():
            done.set_result(what)

    xmpp.add_event_handler("session_start", lambda ev: settle("session"))
    xmpp.add_event_handler("failed_auth", lambda ev: settle("failed_auth"))
    xmpp.add_event_handler("disconnected", lambda ev: settle("disconnected"))
    xmpp.add_event_handler("message", lambda m: xmpp.inbox.put_nowait(m))
    if port is None:
        port = st.c2s_tls_port if direct else st.c2s_port
    xmpp.connect(("127.0.0.1", port), use_ssl=direct, force_starttls=not direct)
    outcome = await asyncio.wait_for(done, harness.WAIT * 3)
    return xmpp, outcome


async def logout(xmpp):
    import asyncio

    if xmpp.is_connected():
        fut = asyncio.get_event_loop().create_future()
        xmpp.add_event_handler("disconnected",
                               lambda ev: fut.done() or fut.set_result(True))
        xmpp.disconnect()
        await asyncio.wait_for(fut, harness.WAIT)


NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"


class ClientRaw(harness.Raw):
    """A client stream written by hand (for what slixmpp will not send):
    open(), starttls(), auth_plain(), bind(), stream_error()."""

    @classmethod
    async def connect_client(cls, st, direct=False, source="127.0.0.1", host="127.0.0.1",
                             sni=None):
        import asyncio
        import ssl

        port = st.c2s_tls_port if direct else st.c2s_port
        ctx = None
        if direct:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx,
                                    local_addr=(source, 0) if ":" not in host else None,
                                    server_hostname=(sni or st.domain) if direct else None,
                                    limit=1 << 20), harness.WAIT)
        raw = cls(reader, writer)
        raw.st = st
        raw.direct = direct
        raw.sni = sni
        return raw

    async def open(self, to=None, ns=NS_CLIENT, version="1.0"):
        """Send a header; the server's header, then its features (or None)."""
        import asyncio

        to = self.st.domain if to is None else to
        attrs = (" to='%s'" % to if to else "") + (" version='%s'" % version if version else "")
        self.send("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s'%s>" %
                  (ns, harness.NS_STREAM, attrs))
        await asyncio.wait_for(self.header_seen.wait(), harness.WAIT)
        el = await self.recv()
        if el is None or el.tag != "{%s}features" % harness.NS_STREAM:
            self.pushback = [el]  # an error instead: stream_error() reads it
            return None
        return el

    async def recv(self, timeout=harness.WAIT):
        if getattr(self, "pushback", None):
            return self.pushback.pop(0)
        return await super().recv(timeout)

    async def starttls(self):
        import ssl

        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        el = await self.recv()
        assert el is not None and el.tag == "{%s}proceed" % NS_TLS, el
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.reset()
        await self.writer.start_tls(ctx, server_hostname=getattr(self, "sni", None)
                                    or self.st.domain)

    async def auth_plain(self, user, password):
        """PLAIN; the server's answer element."""
        import base64

        msg = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, msg))
        return await self.recv(harness.WAIT * 2)

    async def login_plain(self, user, password, resource="raw"):
        """STARTTLS + PLAIN + bind; the bound JID."""
        await self.open()
        if not self.direct:
            await self.starttls()
            await self.open()
        el = await self.auth_plain(user, password)
        assert el is not None and el.tag == "{%s}success" % NS_SASL, el
        self.reset()
        await self.open()
        self.send("<iq type='set' id='b1'><bind xmlns='%s'><resource>%s</resource></bind></iq>"
                  % (NS_BIND, resource))
        el = await self.recv(harness.WAIT * 2)
        assert el is not None and el.get("type") == "result", el
        return el.find("{%s}bind/{%s}jid" % (NS_BIND, NS_BIND)).text

    async def stream_error(self, timeout=None):
        """The condition of the stream error that ends the stream (and the
        stream must then close); None if it closed without one."""
        got = await self.expect_closed(timeout or harness.WAIT * 2)
        for el in got:
            if el.tag == "{%s}error" % harness.NS_STREAM:
                for ch in el:
                    if ch.tag.startswith("{%s}" % harness.NS_STREAM_ERR) and \
                            not ch.tag.endswith("}text"):
                        return ch.tag.split("}")[1]
        return None

    def close(self):
        self.task.cancel()
        self.writer.close()

    def peer_cn(self):
        """The CN of the certificate the server chose."""
        import ssl as _ssl
        import subprocess as _sp

        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        pem = _ssl.DER_cert_to_PEM_cert(der)
        out = _sp.run(["openssl", "x509", "-noout", "-subject"], input=pem.encode(),
                      capture_output=True, check=True).stdout.decode()
        return out.strip().split("CN", 1)[1].lstrip(" =")

    def server_end_point(self):
        """tls-server-end-point (RFC 5929) of the server's certificate."""
        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return hashlib.sha256(der).digest()  # our certificates are ecdsa-with-SHA256

    async def auth_scram(self, user, password, hname="sha256", plus=False, flag=None,
                         cbdata=None, authzid=None):
        """A SCRAM exchange written by hand (RFC 5802): "success" (server
        signature checked), or the failure's condition."""
        import base64

        mech = "SCRAM-SHA-%s%s" % ("1" if hname == "sha1" else "256", "-PLUS" if plus else "")
        if flag is None:
            flag = "p=tls-server-end-point" if plus else "n"
        gs2 = (flag + "," + ("a=" + authzid if authzid else "") + ",").encode()
        cnonce = base64.b64encode(os.urandom(18)).decode()
        bare = "n=%s,r=%s" % (user, cnonce)
        b64 = lambda b: base64.b64encode(b).decode()
        self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" %
                  (NS_SASL, mech, b64(gs2 + bare.encode())))
        el = await self.recv(harness.WAIT * 2)
        self.challenged = el.tag == "{%s}challenge" % NS_SASL
        if not self.challenged:
            return el[0].tag.split("}")[1]
        first = base64.b64decode(el.text).decode()
        attrs = dict(kv.split("=", 1) for kv in first.split(","))
        assert attrs["r"].startswith(cnonce)
        salted = hashlib.pbkdf2_hmac(hname, password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        cb = gs2 + (cbdata if cbdata is not None else
                    (self.server_end_point() if flag.startswith("p=") else b""))
        without = "c=%s,r=%s" % (b64(cb), attrs["r"])
        auth_msg = ("%s,%s,%s" % (bare, first, without)).encode()
        ck = hmac.new(salted, b"Client Key", hname).digest()
        sig = hmac.new(hashlib.new(hname, ck).digest(), auth_msg, hname).digest()
        proof = bytes(a ^ b for a, b in zip(ck, sig))
        self.send("<response xmlns='%s'>%s</response>" %
                  (NS_SASL, b64(("%s,p=%s" % (without, b64(proof))).encode())))
        el = await self.recv(harness.WAIT * 3)
        if el.tag != "{%s}success" % NS_SASL:
            return el[0].tag.split("}")[1]
        sk = hmac.new(salted, b"Server Key", hname).digest()
        want = b64(hmac.new(sk, auth_msg, hname).digest())
        assert base64.b64decode(el.text).decode() == "v=" + want
        return "success"
