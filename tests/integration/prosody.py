"""prosody.py - a real Prosody (the Debian package's /usr/bin/prosody) as the
federation peer of the s2s tests: its own config, data and log in a temp
dir, on free loopback ports, never the system service.

  p = Prosody("p.test", cert, key, cafile, routes={"svc.a.test": 5269})
  p.start(); p.register("pat", "secret")
  ... slixmpp ClientXMPP to 127.0.0.1:p.c2s_port
  p.stop(); p.cleanup()

As root it runs as `nobody` (prosody_user; its files are given to it).
Prosody has no static s2s routes, so a small test plugin written here
(mod_parley_routes) answers its connection resolver for the listed domains
with 127.0.0.1:port, the way Parley's static routes do; every other part
of Prosody's s2s (streams, STARTTLS, SASL EXTERNAL, dialback) is its own.
secure_auth=True makes Prosody require valid certificates (no dialback);
False lets it use dialback with peers whose certificate it does not trust.
bidi=True loads Prosody's mod_s2s_bidi (XEP-0288).
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import harness
import s2sutil

PLUGIN = """-- mod_parley_routes: static s2s routes for Parley's tests (written by
-- tests/integration/prosody.py). Answers the s2s resolver for the listed
-- domains with 127.0.0.1:port; everything else resolves as usual.
local service = require "net.resolvers.service";
local manual = require "net.resolvers.manual";
local routes = module:get_option("parley_routes", {});
if not service.parley_orig_new then
	service.parley_orig_new = service.new;
	service.new = function (hostname, service_name, proto, extra)
		local port = routes[hostname];
		if port then
			if service_name == "xmpps-server" then
				return manual.new({}, proto, extra);
			end
			return manual.new({ { proto .. "4", "127.0.0.1", port, extra } }, proto, extra);
		end
		return service.parley_orig_new(hostname, service_name, proto, extra);
	end
end
"""


class Prosody:
    def __init__(self, domain, cert, key, cafile, routes, secure_auth=False, bidi=False):
        self.domain = domain
        self.dir = tempfile.mkdtemp(prefix="parley-prosody-")
        os.chmod(self.dir, 0o755)
        self.as_root = os.geteuid() == 0
        self.c2s_port = s2sutil.free_port()
        self.s2s_port = s2sutil.free_port()
        self.data = os.path.join(self.dir, "data")
        self.plugins = os.path.join(self.dir, "plugins")
        os.makedirs(self.data)
        os.makedirs(self.plugins)
        os.makedirs(os.path.join(self.dir, "certs"))
        with open(os.path.join(self.plugins, "mod_parley_routes.lua"), "w") as f:
            f.write(PLUGIN)
        self.cert = os.path.join(self.dir, domain + ".crt")
        self.key = os.path.join(self.dir, domain + ".key")
        shutil.copy(cert, self.cert)
        shutil.copy(key, self.key)
        self.cafile = os.path.join(self.dir, "ca.crt")
        shutil.copy(cafile, self.cafile)
        self.logpath = os.path.join(self.dir, "prosody.log")
        self.config = os.path.join(self.dir, "prosody.cfg.lua")
        user = 'prosody_user = "nobody"\nprosody_group = "nogroup"\n' if self.as_root else ""
        route_lines = "".join('\t["%s"] = %d;\n' % (d, p) for d, p in routes.items())
        with open(self.config, "w") as f:
            f.write(
                '%s'
                'pidfile = "%s/prosody.pid"\n'
                'data_path = "%s"\n'
                'plugin_paths = { "%s" }\n'
                'certificates = "certs"\n'
                'log = { { levels = { min = "debug" }, to = "file", filename = "%s" } }\n'
                'modules_enabled = { "roster"; "saslauth"; "tls"; "dialback"; "disco"; '
                '"ping"; "presence"; "parley_routes"%s }\n'
                'modules_disabled = { "posix" }\n'
                'authentication = "internal_hashed"\n'
                'interfaces = { "127.0.0.1" }\n'
                'c2s_ports = { %d }\n'
                's2s_ports = { %d }\n'
                'c2s_direct_tls_ports = { }\n'
                's2s_direct_tls_ports = { }\n'
                'http_ports = { }\n'
                'https_ports = { }\n'
                'c2s_require_encryption = true\n'
                's2s_require_encryption = true\n'
                's2s_secure_auth = %s\n'
                'ssl = { cafile = "%s" }\n'
                'parley_routes = {\n%s}\n'
                'VirtualHost "%s"\n'
                '\tssl = { certificate = "%s"; key = "%s"; cafile = "%s" }\n' %
                (user, self.dir, self.data, self.plugins, self.logpath,
                 '; "s2s_bidi"' if bidi else "", self.c2s_port,
                 self.s2s_port, "true" if secure_auth else "false", self.cafile, route_lines,
                 domain, self.cert, self.key, self.cafile))
        if self.as_root:
            pw = pwd.getpwnam("nobody")
            for root, dirs, files in os.walk(self.dir):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.key, 0o600)
        self.proc = None

    def _env(self):
        env = dict(os.environ)
        env["HOME"] = self.dir
        return env

    def register(self, user, password):
        subprocess.run(["prosodyctl", "--config", self.config, "register", user, self.domain,
                        password], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self._env(),
                       timeout=30)

    def start(self):
        log = open(os.path.join(self.dir, "stdout.log"), "ab")
        try:
            self.proc = subprocess.Popen(["/usr/bin/prosody", "--config", self.config, "-F"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self._env())
        finally:
            log.close()
        deadline = time.monotonic() + harness.START_WAIT
        import socket
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("prosody exited with %d:\n%s" % (self.proc.returncode,
                                                                     self.log()))
            try:
                with socket.create_connection(("127.0.0.1", self.c2s_port), timeout=1):
                    pass
                with socket.create_connection(("127.0.0.1", self.s2s_port), timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("prosody not listening within %.0fs:\n%s" %
                                     (harness.START_WAIT, self.log()))
            time.sleep(0.05)

    def log(self):
        out = ""
        for n in ("stdout.log", "prosody.log"):
            try:
                with open(os.path.join(self.dir, n), "rb") as f:
                    out += "--- %s\n%s" % (n, f.read().decode("utf-8", "replace"))
            except FileNotFoundError:
                pass
        return out

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(harness.STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
