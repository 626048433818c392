"""test_s2s_prosody.py - interop with a real peer: Prosody (p.test, started
by prosody.py) and a Parley service (a.test: parley-router + parley-s2s with
the component svc.a.test). A Prosody user (slixmpp client) and the Parley
component exchange messages, directed presence and iq both ways, once
with certificate authentication (SASL EXTERNAL both ways: both trust the
test CA, Prosody with s2s_secure_auth), once with dialback (neither
trusts the other's certificate), and once with Prosody's mod_s2s_bidi
(XEP-0288: one stream carries both directions).
"""

import asyncio
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET

import pytest
import slixmpp

import harness
import prosody
import s2sutil
from harness import run


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cafile):
        super().__init__(jid, password)
        loop = asyncio.get_running_loop()
        self.ca_certs = cafile
        self.inbox = asyncio.Queue()
        self.started = loop.create_future()
        self.register_plugin("xep_0199")
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self.inbox.put_nowait)
        self.add_event_handler("presence_available", self.inbox.put_nowait)
        self.add_event_handler("failed_auth", lambda _: self.started.done() or
                               self.started.set_exception(AssertionError("auth failed")))

    def _on_start(self, _):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    async def expect(self, pred, timeout=20):
        while True:
            st = await asyncio.wait_for(self.inbox.get(), timeout)
            if pred(st):
                return st


@pytest.fixture(params=["cert", "dialback", "cert-bidi"])
def peers(request):
    mode = request.param
    d = tempfile.mkdtemp(prefix="parley-s2s-prosody-")
    os.chmod(d, 0o755)
    ca = s2sutil.TestCA(d, "Parley Test CA")
    other = s2sutil.TestCA(d, "Unrelated CA")
    crt_a, key_a = ca.issue("a.test")
    crt_p, key_p = ca.issue("p.test")
    trust = other.cert if mode == "dialback" else ca.cert
    side = s2sutil.Side("a.test", d, crt_a, key_a, trust)
    pro = prosody.Prosody("p.test", crt_p, key_p, trust,
                          routes={"a.test": side.port, "svc.a.test": side.port},
                          secure_auth=(mode != "dialback"), bidi=(mode == "cert-bidi"))
    side.add_route("p.test", pro.s2s_port)
    try:
        side.start()
        pro.register("pat", "patsecret")
        pro.start()
        yield mode, side, pro, ca
        assert side.stop() == {"s2s": 0, "router": 0}, side.log()
        errs = side.sanitizer_errors()
        assert not errs, "\n".join(errs)
    except BaseException:
        print("---- parley s2s\n" + side.log())
        print("---- prosody\n" + pro.log())
        raise
    finally:
        pro.cleanup()
        side.cleanup()
        shutil.rmtree(d, ignore_errors=True)


def test_prosody_interop(peers):
    mode, side, pro, ca = peers

    async def go():
        comp = await s2sutil.comp(side)
        cl = Client("pat@p.test/t", "patsecret", ca.cert)
        cl.connect(("127.0.0.1", pro.c2s_port))
        try:
            await asyncio.wait_for(cl.started, 20)
            # Prosody user -> Parley component: message and directed presence.
            cl.send_message(mto="svc.a.test", mbody="hi from prosody")
            m = await comp.expect(lambda s: s.name == "message", timeout=20)
            assert m["from"] == "pat@p.test/t" and m["body"] == "hi from prosody"
            cl.send_presence(pto="svc.a.test")
            p = await comp.expect(lambda s: s.name == "presence", timeout=20)
            assert p["from"] == "pat@p.test/t"
            # Parley component -> Prosody user: message, then an iq answered
            # by the client (XEP-0199).
            comp.send_message(mto="pat@p.test/t", mfrom="svc.a.test", mbody="hi from parley")
            m = await cl.expect(lambda s: s["body"] == "hi from parley")
            assert m["from"] == "svc.a.test"
            harness.ping_iq(comp, "pat@p.test/t", "svc.a.test", "ping1").send()
            r = await comp.expect(lambda s: s.name == "iq", timeout=20)
            assert r["type"] == "result" and r["id"] == "ping1" and r["from"] == "pat@p.test/t"
            # An unknown user on Prosody: Prosody's error comes back.
            comp.send_message(mto="nobody@p.test", mfrom="svc.a.test", mbody="x")
            e = await comp.expect(lambda s: s["type"] == "error", timeout=20)
            assert e["from"] == "nobody@p.test"
        finally:
            cl.disconnect()
            await harness.close_all(comp)

    run(go())
    log = side.log()
    if mode == "cert":
        assert "link svc.a.test -> p.test ready (TLS, SASL EXTERNAL)" in log
        assert "p.test (127.0.0.1): authenticated by certificate (SASL EXTERNAL)" in log
    elif mode == "cert-bidi":
        # Prosody connected first and asked for bidi: our answers use its stream.
        assert "p.test (127.0.0.1): authenticated by certificate (SASL EXTERNAL)" in log
        assert "bidirectional stream: svc.a.test -> p.test uses the stream" in log
        assert "link svc.a.test -> p.test ready" not in log
    else:
        assert "link svc.a.test -> p.test ready (TLS, dialback)" in log
        assert "inbound p.test -> svc.a.test (127.0.0.1): dialback valid" in log
