"""test_storage_connect.py - storage/ follows libpq when it changes sockets
while connecting. libpq closes a socket and opens the next one inside
PQconnectPoll (next address or socket directory, SSL fallback); the new
socket usually has the old fd number, and must still be watched, or the
attempt stalls until the connect timeout."""

import os
import socket
import struct
import subprocess
import threading

import harness
from pg import pg  # noqa: F401  (fixture)

# Far below the driver's connect timeout (600 s): a stalled attempt fails
# the test here.
WAIT = 60
SSL_REQUEST = struct.pack("!II", 8, 80877103)


def no_sanitizer_report(text):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in text, text


class SslRefusingProxy:
    """TCP on 127.0.0.1 in front of the cluster's Unix socket. A connection
    that opens with an SSLRequest gets 'S' and is closed, so that libpq's
    handshake fails and sslmode=prefer makes it reconnect without SSL, on a
    new socket; any other connection is relayed to the server."""

    def __init__(self, unix_path):
        self.unix_path = unix_path
        self.ssl_requests = 0
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        head = b""
        while len(head) < 8:
            chunk = c.recv(8 - len(head))
            if not chunk:
                c.close()
                return
            head += chunk
        if head == SSL_REQUEST:
            self.ssl_requests += 1
            c.sendall(b"S")
            c.close()
            return
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.connect(self.unix_path)
        u.sendall(head)
        threading.Thread(target=self._pump, args=(u, c), daemon=True).start()
        self._pump(c, u)

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.lsock.close()


def run_connect(dsn):
    p = subprocess.run([harness.binary("tests/integration/storage_check"), "connect", dsn],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=WAIT)
    no_sanitizer_report(p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("ok "), p.stdout


def test_ssl_fallback_reconnect_is_watched(pg):
    proxy = SslRefusingProxy(os.path.join(pg.run, ".s.PGSQL.%d" % pg.port))
    try:
        dsn = pg.dsn("parley_c2s").replace("host=%s port=%d" % (pg.run, pg.port),
                                           "host=127.0.0.1 port=%d" % proxy.port)
        run_connect(dsn + " sslmode=prefer gssencmode=disable")
        # Each of the two connections went through the SSL fallback.
        assert proxy.ssl_requests >= 2
    finally:
        proxy.close()


def test_next_host_after_a_refused_session_is_watched(pg):
    # prefer-standby: libpq connects to each host (both are this primary),
    # asks whether it is a standby, hangs up and goes on, then takes the
    # first host on a second pass: three sockets, each opened right after
    # the last one closed, each first waited on for reading as the last.
    dsn = pg.dsn("parley_c2s").replace("host=%s" % pg.run, "host=%s,%s" % (pg.run, pg.run))
    run_connect(dsn + " target_session_attrs=prefer-standby")


def test_second_socket_directory(pg):
    dsn = pg.dsn("parley_c2s").replace("host=%s" % pg.run,
                                       "host=/nonexistent-parley-socket-dir,%s" % pg.run)
    run_connect(dsn)
