"""test_c2s_stream.py - stream-level behaviour of parley-c2s on raw
sockets: each bad-input case gets its RFC 6120 stream error and a closed
stream, STARTTLS is required before SASL, PLAIN is offered only over TLS,
the host stays pinned across STARTTLS (CVE-2018-10847), the pre-auth
limits hold, SCRAM -PLUS is offered only with a certificate that has a
tls-server-end-point (not Ed25519; RSA-PSS has its hash in its
parameters), and SIGHUP reloads the certificate (a broken one keeps the
old; connections open across it go on).
"""

import asyncio
import os
import signal
import subprocess

import pytest

import harness
import stack
from stack import ClientRaw, NS_SASL, NS_TLS

OTHER = "other.test"


@pytest.fixture(scope="module")
def st():
    # other.test: a domain c2s knows (its own <domain> entry) but no sm
    # serves, so a stream to it alone would get remote-connection-failed.
    s = stack.Stack(c2s=1, extra={"c2s": "  <domain name='%s'/>\n" % OTHER})
    try:
        s.start()
        s.add_user("alice", "wonderland")
        yield s
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def error_after(st, payload, header=True, **open_kw):
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            if header:
                await raw.open(**open_kw)
            if payload:
                raw.send(payload)
            return await raw.stream_error()
        finally:
            raw.close()
    return harness.run(go())


def test_invalid_namespace(st):
    assert error_after(st, None, ns="jabber:server") == "invalid-namespace"


def test_unsupported_version(st):
    assert error_after(st, None, version="0.9") == "unsupported-version"
    assert error_after(st, None, version=None) == "unsupported-version"


def test_host_unknown(st):
    assert error_after(st, None, to="nowhere.test") == "host-unknown"
    assert error_after(st, None, to="") == "host-unknown"


def test_domain_without_sm(st):
    assert error_after(st, None, to=OTHER) == "remote-connection-failed"


def test_not_well_formed(st):
    assert error_after(st, "<message></iq>") == "not-well-formed"


def test_restricted_xml(st):
    assert error_after(st, "<!-- a comment -->") == "restricted-xml"
    assert error_after(st, "<?pi here?>") == "restricted-xml"


def test_stanza_before_auth(st):
    assert error_after(st, "<message to='alice@example.test'><body>x</body></message>") == \
        "not-authorized"


def test_plaintext_auth_when_tls_required(st):
    # PLAIN in the clear on a TLS-required stream: policy-violation and
    # close, never a stall or a password check.
    assert error_after(st, "<auth xmlns='%s' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcmxhbmQ=</auth>"
                       % NS_SASL) == "policy-violation"
    assert "authenticated" not in st["c2s-1"].log()


def test_preauth_element_cap(st):
    big = "<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, "A" * 16384)
    assert error_after(st, big) == "policy-violation"


def test_features_before_and_after_tls(st):
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            feats = await raw.open()
            tls = feats.find("{%s}starttls" % NS_TLS)
            assert tls is not None and tls.find("{%s}required" % NS_TLS) is not None
            # TLS is required: no mechanism is offered before it.
            assert feats.find("{%s}mechanisms" % NS_SASL) is None
            await raw.starttls()
            feats = await raw.open()
            mechs = [m.text for m in feats.find("{%s}mechanisms" % NS_SASL)]
            assert mechs == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
            # Offered = accepted: anything else is invalid-mechanism.
            raw.send("<auth xmlns='%s' mechanism='DIGEST-MD5'/>" % NS_SASL)
            el = await raw.recv()
            assert el.tag == "{%s}failure" % NS_SASL
            assert el.find("{%s}invalid-mechanism" % NS_SASL) is not None
        finally:
            raw.close()
    harness.run(go())


def test_host_pinned_across_starttls(st):
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            await raw.open()
            await raw.starttls()
            raw.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                     "xmlns:stream='%s' to='%s' version='1.0'>" % (harness.NS_STREAM, OTHER))
            return await raw.stream_error()
        finally:
            raw.close()
    assert harness.run(go()) == "host-unknown"
    assert "a restarted stream must name the same host" in st["c2s-1"].log()


def test_host_pinned_after_sasl(st):
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            await raw.open()
            await raw.starttls()
            await raw.open()
            el = await raw.auth_plain("alice", "wonderland")
            assert el.tag == "{%s}success" % NS_SASL
            raw.reset()
            raw.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                     "xmlns:stream='%s' to='%s' version='1.0'>" % (harness.NS_STREAM, OTHER))
            return await raw.stream_error()
        finally:
            raw.close()
    assert harness.run(go()) == "host-unknown"


def test_raw_login_and_bind(st):
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            jid = await raw.login_plain("alice", "wonderland", resource="Raw Res")
            assert jid == "alice@%s/Raw Res" % st.domain
            # A second bind on the same stream is refused.
            raw.send("<iq type='set' id='b2'><bind xmlns='%s'/></iq>" % stack.NS_BIND)
            el = await raw.recv()
            assert el.get("type") == "error" and el.get("id") == "b2"
            # Whitespace keepalives are fine.
            raw.send("   \n  ")
            raw.send("<iq type='get' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
            el = await raw.recv()
            assert el.get("type") == "result" and el.get("id") == "s1"
        finally:
            raw.close()
    harness.run(go())


def plus_stack():
    mechs = "SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-1"
    s = stack.Stack(c2s=1, extra={"c2s": "  <sasl><mechanisms>%s</mechanisms></sasl>\n" % mechs})
    s.start()
    s.add_user("alice", "wonderland")
    return s


def test_scram_plus_channel_binding():
    s = plus_stack()
    try:
        async def session():
            raw = await ClientRaw.connect_client(s)
            await raw.open()
            await raw.starttls()
            feats = await raw.open()
            return raw, feats

        async def go():
            raw, feats = await session()
            try:
                mechs = [m.text for m in feats.find("{%s}mechanisms" % NS_SASL)]
                assert mechs == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
                                 "SCRAM-SHA-1"]
                cb = feats.find("{urn:xmpp:sasl-cb:0}sasl-channel-binding")
                assert cb is not None and cb[0].get("type") == "tls-server-end-point"
                assert await raw.auth_scram("alice", "wonderland", "sha256", plus=True) == \
                    "success"
            finally:
                raw.close()
            raw, _ = await session()
            try:
                assert await raw.auth_scram("alice", "wonderland", "sha1", plus=True) == "success"
            finally:
                raw.close()
            # Binding data that is not our certificate's: refused.
            raw, _ = await session()
            try:
                assert await raw.auth_scram("alice", "wonderland", plus=True,
                                            cbdata=b"\0" * 32) == "not-authorized"
            finally:
                raw.close()
            # "y": the client can bind but believes we cannot, while we offered
            # -PLUS: a downgrade, refused (RFC 5802 §6).
            raw, _ = await session()
            try:
                assert await raw.auth_scram("alice", "wonderland", flag="y") == "not-authorized"
            finally:
                raw.close()
            # Without binding ("n") plain SCRAM still works.
            raw, _ = await session()
            try:
                assert await raw.auth_scram("alice", "wonderland", flag="n") == "success"
            finally:
                raw.close()
        harness.run(go())
        log = s["c2s-1"].log()
        assert "Channel bindings mismatch" in log
        assert "client incorrectly assumed server had no channel binding" in log
        assert not s.stop_and_check()
    finally:
        s.cleanup()


def test_y_flag_fine_without_plus(st):
    # No -PLUS configured: a client that can bind and says "y" is right.
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            await raw.open()
            await raw.starttls()
            await raw.open()
            return await raw.auth_scram("alice", "wonderland", flag="y")
        finally:
            raw.close()
    assert harness.run(go()) == "success"


def test_scram_unprepped_name_and_own_authzid(st):
    async def scram(user, **kw):
        raw = await ClientRaw.connect_client(st)
        try:
            await raw.open()
            await raw.starttls()
            await raw.open()
            got = await raw.auth_scram(user, "wonderland", **kw)
            if got != "success":
                return got
            # Logged in as the prepped account.
            raw.reset()
            await raw.open()
            raw.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                     "</iq>")
            el = await raw.recv(harness.WAIT * 2)
            assert el is not None and el.get("type") == "result", el
            return el.find("{urn:ietf:params:xml:ns:xmpp-bind}bind/"
                           "{urn:ietf:params:xml:ns:xmpp-bind}jid").text.split("/")[0]
        finally:
            raw.close()

    bare = "alice@%s" % st.domain
    # Nodeprep folds case: n=Alice is alice.
    assert harness.run(scram("Alice")) == bare
    assert harness.run(scram("Alice", hname="sha1")) == bare
    # An authzid equal to the user's own bare JID is fine (RFC 6120 §6.4.6).
    assert harness.run(scram("alice", authzid=bare)) == bare
    assert harness.run(scram("alice", authzid="mallory@%s" % st.domain)) == "invalid-authzid"


def test_rosterver_and_preapproval_advertised(st):
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            await raw.open()
            await raw.starttls()
            await raw.open()
            el = await raw.auth_plain("alice", "wonderland")
            assert el is not None and el.tag == "{%s}success" % NS_SASL, el
            raw.reset()
            return await raw.open()
        finally:
            raw.close()
    feats = harness.run(go())
    assert feats.find("{urn:xmpp:features:rosterver}ver") is not None
    assert feats.find("{urn:xmpp:features:pre-approval}sub") is not None


def test_bad_format_and_prefix(st):
    assert error_after(st, "some text between elements") == "bad-format"
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            raw.send("<?xml version='1.0'?><s:stream xmlns='jabber:client' "
                     "xmlns:s='http://etherx.jabber.org/streams' to='%s' version='1.0'>"
                     "<s:features/>" % st.domain)
            return await raw.stream_error()
        finally:
            raw.close()
    # Our parser's choice for an unexpected stream-namespace element.
    assert harness.run(go()) in ("unsupported-stanza-type", "not-authorized", "bad-format",
                                 "bad-namespace-prefix", "invalid-namespace")


def test_after_bind_errors(st):
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            await raw.login_plain("alice", "wonderland", resource="errs")
            raw.send("<foo xmlns='jabber:client'/>")
            return await raw.stream_error()
        finally:
            raw.close()
    assert harness.run(go()) == "unsupported-stanza-type"


def test_stanza_size_after_auth():
    s = stack.Stack(c2s=1, extra={"c2s": "  <limits><stanza-size>8k</stanza-size></limits>\n"})
    try:
        s.start()
        s.add_user("alice", "wonderland")

        async def go():
            raw = await ClientRaw.connect_client(s)
            try:
                await raw.login_plain("alice", "wonderland")
                # Within the limit (bigger than the pre-auth one): delivered.
                raw.send("<message to='alice@%s/raw'><body>%s</body></message>" %
                         (s.domain, "y" * 6000))
                el = await raw.recv()
                assert el.tag == "{jabber:client}message"
                raw.send("<message to='alice@%s/raw'><body>%s</body></message>" %
                         (s.domain, "z" * 9000))
                return await raw.stream_error()
            finally:
                raw.close()
        assert harness.run(go()) == "policy-violation"
        assert not s.stop_and_check()
    finally:
        s.cleanup()


def test_stanzas_reserialised_and_to_checked(st):
    """What a client sends leaves c2s as our serializer's output of the
    parsed tree, never its bytes (CVE-2022-22784); a bad to is answered."""
    async def go():
        a = await ClientRaw.connect_client(st)
        b = await ClientRaw.connect_client(st)
        try:
            await a.login_plain("alice", "wonderland", resource="ra")
            await b.login_plain("alice", "wonderland", resource="rb")
            b.received.clear()
            a.send("<message to='alice@%s/rb' from='evil@elsewhere'><body><![CDATA[x < y]]>"
                   "</body><x xmlns='urn:example' a=\"it's\"/></message>" % st.domain)
            el = await b.expect(lambda e: e.tag == "{jabber:client}message")
            assert el.get("from") == "alice@%s/ra" % st.domain
            assert el.find("{jabber:client}body").text == "x < y"
            raw = bytes(b.received)
            assert b"CDATA" not in raw and b"evil@" not in raw
            assert b"x &lt; y" in raw
            a.send("<message to='bad@@jid' id='m1'><body>hi</body></message>")
            err = await a.expect(lambda e: e.get("id") == "m1")
            assert err.get("type") == "error"
            assert err.find("{jabber:client}error/"
                            "{urn:ietf:params:xml:ns:xmpp-stanzas}jid-malformed") is not None
        finally:
            a.close()
            b.close()
    harness.run(go())


def test_sasl_pipelined_before_answer(st):
    """A second <auth> while the first is still being checked: refused, and
    the first exchange's job finds nothing to act on (no crash)."""
    async def go():
        raw = await ClientRaw.connect_client(st)
        try:
            await raw.open()
            await raw.starttls()
            await raw.open()
            raw.send("<auth xmlns='%s' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcmxhbmQ=</auth>"
                     "<auth xmlns='%s' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcmxhbmQ=</auth>"
                     % (NS_SASL, NS_SASL))
            return await raw.stream_error()
        finally:
            raw.close()
    assert harness.run(go()) == "policy-violation"
    assert "SASL element before the server's answer" in st["c2s-1"].log()


def test_sni_picks_the_domain_certificate():
    s = stack.Stack(c2s=1, more_certs=("chat.test",))
    try:
        s.start()

        async def cn(direct, sni):
            raw = await ClientRaw.connect_client(s, direct=direct, sni=sni)
            try:
                if not direct:
                    await raw.open()
                    await raw.starttls()
                await raw.open()  # also completes the handshake
                return raw.peer_cn()
            finally:
                raw.close()

        async def go():
            assert await cn(True, "chat.test") == "chat.test"
            assert await cn(True, s.domain) == s.domain
            assert await cn(False, "chat.test") == "chat.test"
            assert await cn(False, s.domain) == s.domain
        harness.run(go())
        assert not s.stop_and_check()
    finally:
        s.cleanup()


def _stack_with_own_cert(mechs, *req_args):
    """A started stack (user alice) whose c2s offers the SASL mechanisms
    mechs and serves a fresh self-signed certificate for its domain, made
    by `openssl req -x509 ... req_args` (the key type, hash, options)."""
    s = stack.Stack(c2s=1, extra={"c2s": "  <sasl><mechanisms>%s</mechanisms></sasl>\n" % mechs})
    try:
        subprocess.run(["openssl", "req", "-x509", *req_args, "-nodes", "-days", "30",
                        "-subj", "/CN=%s" % s.domain, "-addext",
                        "subjectAltName=DNS:%s" % s.domain, "-keyout", s.key, "-out", s.cert],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        s._own(s.key)
        os.chmod(s.key, 0o600)
        s.start()
        s.add_user("alice", "wonderland")
    except BaseException:
        s.cleanup()
        raise
    return s


async def _starttls_session(s):
    """A raw client stream to s's c2s after STARTTLS: (raw, its features,
    the DER of the certificate c2s served)."""
    raw = await ClientRaw.connect_client(s)
    await raw.open()
    await raw.starttls()
    feats = await raw.open()
    der = raw.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return raw, feats, der


def test_no_plus_with_ed25519_certificate():
    """tls-server-end-point is undefined for a certificate signed with
    Ed25519 (RFC 5929 §4.1: no single hash): with -PLUS configured, c2s
    offers only the plain SCRAM mechanisms and no binding type, refuses
    -PLUS, and a client that could bind and says "y" is right."""
    s = _stack_with_own_cert("SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-1",
                             "-newkey", "ed25519")
    try:
        async def go():
            raw, feats, der = await _starttls_session(s)
            try:
                assert b"\x06\x03\x2b\x65\x70" in der  # the Ed25519 OID: our certificate
                mechs = [m.text for m in feats.find("{%s}mechanisms" % NS_SASL)]
                assert mechs == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
                assert feats.find("{urn:xmpp:sasl-cb:0}sasl-channel-binding") is None
                assert await raw.auth_scram("alice", "wonderland", plus=True,
                                            cbdata=b"\0" * 32) == "invalid-mechanism"
            finally:
                raw.close()
            raw, _, _ = await _starttls_session(s)
            try:
                assert await raw.auth_scram("alice", "wonderland", flag="y") == "success"
            finally:
                raw.close()
        harness.run(go())
        assert not s.stop_and_check()
    finally:
        s.cleanup()


def test_plus_with_rsa_pss_sha384_certificate():
    """An RSA-PSS certificate names its hash in the signature's parameters,
    not in its OID: with SHA-384 there, c2s offers -PLUS and binds to the
    certificate's SHA-384 hash (RFC 5929 §4.1); a SHA-256 one is refused."""
    import hashlib

    s = _stack_with_own_cert("SCRAM-SHA-256-PLUS SCRAM-SHA-256", "-newkey", "rsa:2048",
                             "-sha384", "-sigopt", "rsa_padding_mode:pss", "-sigopt",
                             "rsa_pss_saltlen:-1")
    try:
        text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", s.cert], check=True,
                              capture_output=True, text=True).stdout
        assert "rsassaPss" in text and "sha384" in text

        async def go():
            raw, feats, der = await _starttls_session(s)
            try:
                mechs = [m.text for m in feats.find("{%s}mechanisms" % NS_SASL)]
                assert mechs == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
                cb = feats.find("{urn:xmpp:sasl-cb:0}sasl-channel-binding")
                assert cb is not None and cb[0].get("type") == "tls-server-end-point"
                assert await raw.auth_scram("alice", "wonderland", plus=True,
                                            cbdata=hashlib.sha384(der).digest()) == "success"
            finally:
                raw.close()
            raw, _, der = await _starttls_session(s)
            try:
                assert await raw.auth_scram("alice", "wonderland", plus=True,
                                            cbdata=hashlib.sha256(der).digest()) == \
                    "not-authorized"
            finally:
                raw.close()
        harness.run(go())
        assert not s.stop_and_check()
    finally:
        s.cleanup()


def test_sighup_reloads_certificate_and_keeps_old_on_error():
    """SIGHUP: c2s reads its certificate and key again; new TLS connections
    (direct and STARTTLS) get the new certificate. Connections open across
    the HUP go on: one whose TLS was done on the SNI domain's certificate,
    one that had its <proceed/> but no handshake yet (its TLS object made
    from the old default context), and a direct TLS one accepted but not
    yet handshaken: all log in afterwards (the old contexts live as long
    as their connections; ASan would see a use after free). A broken
    certificate and HUP: an error in the log, and c2s keeps serving with
    the one it had."""
    import ssl

    s = stack.Stack(c2s=1, more_certs=("chat.test",))
    try:
        s.start()
        s.add_user("alice", "wonderland")
        c2s = s["c2s-1"]
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        async def across_hup(renew):
            # Connected first: c2s has accepted it (and made its TLS object)
            # by the time the two streams below have had their answers.
            reader, writer = await asyncio.open_connection("127.0.0.1", s.c2s_tls_port)
            direct = ClientRaw(reader, writer)
            direct.st, direct.direct, direct.sni = s, True, None
            done = await ClientRaw.connect_client(s, sni="chat.test")
            await done.open()
            await done.starttls()
            assert await done.open() is not None
            assert done.peer_cn() == "chat.test"
            proceeded = await ClientRaw.connect_client(s)
            await proceeded.open()
            proceeded.send("<starttls xmlns='%s'/>" % NS_TLS)
            el = await proceeded.recv()
            assert el is not None and el.tag == "{%s}proceed" % NS_TLS, el
            try:
                await asyncio.get_running_loop().run_in_executor(None, renew)
                # TLS done before the HUP: SASL and bind on it now.
                el = await done.auth_plain("alice", "wonderland")
                assert el is not None and el.tag == "{%s}success" % NS_SASL, el
                done.reset()
                await done.open()
                done.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                          "<resource>held</resource></bind></iq>")
                el = await done.recv(harness.WAIT * 2)
                assert el is not None and el.get("type") == "result", el
                # The handshakes begin only now, after the HUP.
                proceeded.reset()
                await proceeded.writer.start_tls(ctx, server_hostname=s.domain)
                proceeded.direct = True  # TLS done: login_plain goes on from the header
                await direct.writer.start_tls(ctx, server_hostname=s.domain)
                for raw, res in ((proceeded, "proceeded"), (direct, "direct")):
                    der = raw.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                    assert der == file_der()  # SNI chose the reloaded one
                    assert (await raw.login_plain("alice", "wonderland", resource=res)
                            ).startswith("alice@")
            finally:
                for raw in (done, proceeded, direct):
                    raw.close()

        def file_der():
            with open(s.cert) as f:
                return ssl.PEM_cert_to_DER_cert(f.read())

        async def served_der(direct):
            raw = await ClientRaw.connect_client(s, direct=direct)
            try:
                await raw.open()
                if not direct:
                    await raw.starttls()
                    assert await raw.open() is not None
                return raw.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            finally:
                raw.close()

        def hup_and_wait(text, count):
            c2s.signal(signal.SIGHUP)
            harness.poll(lambda: c2s.log().count(text) >= count, lambda: c2s.log()[-3000:],
                         harness.WAIT * 2)

        old = file_der()
        assert harness.run(served_der(True)) == old

        def renew():
            # A new certificate and key, put in place as a renewal would.
            crt, key = stack.selfsigned(s.dir, "renewed-" + s.domain)
            s._own(key)
            os.chmod(key, 0o600)
            os.rename(key, s.key)
            os.rename(crt, s.cert)
            assert file_der() != old
            hup_and_wait("2 certificates reloaded", 1)
        harness.run(across_hup(renew))
        new = file_der()
        assert harness.run(served_der(True)) == new
        assert harness.run(served_der(False)) == new
        # A broken certificate: the one in use stays.
        with open(s.cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        hup_and_wait("certificates not reloaded: serving with the old ones", 1)
        assert harness.run(served_der(True)) == new
        assert harness.run(served_der(False)) == new

        async def login():
            raw = await ClientRaw.connect_client(s, direct=True)
            try:
                return await raw.login_plain("alice", "wonderland")
            finally:
                raw.close()
        assert harness.run(login()).startswith("alice@")
        assert not s.stop_and_check()
    finally:
        s.cleanup()
