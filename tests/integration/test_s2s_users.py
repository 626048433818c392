"""test_s2s_users.py - users of two whole Parley services (stack.Stack:
PostgreSQL, router, sm, c2s; domains a.test and b.test), each with its
parley-s2s, talk to each other with real slixmpp clients: messages both
ways, a presence subscription (request, approval, presence), and an iq
answered by the remote client; over SASL EXTERNAL and over dialback.
And a Parley user with a Prosody user (p.test), both ways.
"""

import asyncio
import os
import shutil
import tempfile

import pytest

import harness
import prosody
import s2sutil
import stack
from harness import run


class Users:
    """Two stacks joined by their s2s daemons (static routes)."""

    def __init__(self, mode="sasl", with_prosody=False):
        self.dir = tempfile.mkdtemp(prefix="parley-s2s-users-")
        os.chmod(self.dir, 0o755)
        ca = s2sutil.TestCA(self.dir, "Parley Test CA")
        self.ca = ca
        trust = ca.cert
        if mode == "dialback":
            trust = s2sutil.TestCA(self.dir, "Unrelated CA").cert
        self.stacks = []
        self.sides = []
        self.prosody = None
        domains = ("a.test",) if with_prosody else ("a.test", "b.test")
        for d in domains:
            st = stack.Stack(domain=d)
            self.stacks.append(st)
            crt, key = ca.issue(d)
            self.sides.append(s2sutil.Side(d, self.dir, crt, key, trust, router=st.router))
        if with_prosody:
            crt, key = ca.issue("p.test")
            self.prosody = prosody.Prosody("p.test", crt, key, trust,
                                           routes={"a.test": self.sides[0].port},
                                           secure_auth=(mode == "sasl"))
            self.sides[0].add_route("p.test", self.prosody.s2s_port)
        else:
            a, b = self.sides
            a.add_route("b.test", b.port)
            b.add_route("a.test", a.port)

    def start(self):
        for st, side in zip(self.stacks, self.sides):
            st.start()
            side.start()
        if self.prosody:
            self.prosody.register("pat", "patsecret")
            self.prosody.start()
        return self

    def logs(self):
        """The last 80,000 characters of every log (five daemons each)."""
        out = ""
        for st, side in zip(self.stacks, self.sides):
            out += "==== %s\n%s\n---- s2s\n%s\n" % (st.domain, st.logs(), side.log())
        if self.prosody:
            out += "==== prosody\n" + self.prosody.log()
        return out[-80000:]

    def sanitizer_errors(self):
        errs = []
        for st, side in zip(self.stacks, self.sides):
            errs += side.sanitizer_errors() + st.sanitizer_errors()
        return errs[:10]

    def finish(self):
        """Stop the s2s daemons: each exits 0."""
        codes = [side.stop() for side in self.sides]
        assert all(c == {"s2s": 0} for c in codes), codes

    def cleanup(self):
        try:
            if self.prosody:
                self.prosody.cleanup()
            for side in self.sides:
                side.cleanup()
        finally:
            for st in self.stacks:
                st.cleanup()
            shutil.rmtree(self.dir, ignore_errors=True)


async def client(domain, port, user, password, resource, cafile=None):
    """A logged-in slixmpp client with queues for messages and presences,
    answering pings (XEP-0199)."""
    xmpp = stack.client("%s@%s" % (user, domain), password, resource=resource)
    if cafile:
        import ssl
        xmpp.ssl_context.check_hostname = True
        xmpp.ssl_context.verify_mode = ssl.CERT_REQUIRED
        xmpp.ssl_context.load_verify_locations(cafile)
    loop = asyncio.get_running_loop()
    started = loop.create_future()
    xmpp.inbox = asyncio.Queue()
    xmpp.presences = asyncio.Queue()
    xmpp.register_plugin("xep_0199")
    xmpp.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    xmpp.add_event_handler("failed_auth", lambda _: started.done() or
                           started.set_exception(AssertionError("%s: auth failed" % user)))
    xmpp.add_event_handler("message", xmpp.inbox.put_nowait)
    xmpp.add_event_handler("presence", xmpp.presences.put_nowait)
    xmpp.connect(("127.0.0.1", port), force_starttls=True)
    await asyncio.wait_for(started, harness.WAIT * 3)
    await xmpp.get_roster(timeout=harness.WAIT * 2)
    xmpp.send_presence()
    return xmpp


async def expect(q, pred, timeout=20, what="stanza"):
    seen = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            st = await asyncio.wait_for(q.get(), max(left, 0.001))
        except asyncio.TimeoutError:
            raise AssertionError("no %s within %ss; got %s" % (what, timeout,
                                                                [str(s)[:200] for s in seen]))
        if pred(st):
            return st
        seen.append(st)


async def converse(alice, bob, bob_jid, alice_jid, subscribe=True):
    """Messages both ways, a subscription alice -> bob, an iq alice -> bob."""
    alice.send_message(mto=bob_jid, mbody="hello bob", mtype="chat")
    m = await expect(bob.inbox, lambda m: m["body"] == "hello bob", what="message at bob")
    assert m["from"].bare == alice_jid
    bob.send_message(mto=m["from"], mbody="hello alice", mtype="chat")
    m = await expect(alice.inbox, lambda m: m["body"] == "hello alice", what="message at alice")
    assert m["from"].bare == bob_jid
    if not subscribe:
        await alice["xep_0199"].ping(m["from"], timeout=20)
        return
    # Subscription: bob's client approves (slixmpp auto_authorize), alice
    # gets "subscribed" and then bob's available presence.
    alice.send_presence_subscription(pto=bob_jid)
    p = await expect(bob.presences, lambda p: p["type"] == "subscribe", what="subscribe at bob")
    assert p["from"].bare == alice_jid
    await expect(alice.presences,
                 lambda p: p["type"] == "subscribed" and p["from"].bare == bob_jid,
                 what="subscribed at alice")
    p = await expect(alice.presences,
                     lambda p: p["type"] == "available" and p["from"].bare == bob_jid,
                     what="bob's presence at alice")
    # iq: a ping to bob's full JID, answered by bob's client.
    await alice["xep_0199"].ping(p["from"], timeout=20)


async def bye(*clients):
    for c in clients:
        try:
            await stack.logout(c)
        except Exception:
            c.abort()


@pytest.mark.parametrize("mode", ["sasl", "dialback"])
def test_users_across_two_parley_services(mode):
    net = Users(mode)
    with s2sutil.running(net):
        sa, sb = net.stacks
        sa.add_user("alice", "alicepw")
        sb.add_user("bob", "bobpw")

        async def go():
            alice = await client("a.test", sa.c2s_port, "alice", "alicepw", "home")
            bob = await client("b.test", sb.c2s_port, "bob", "bobpw", "work")
            try:
                await converse(alice, bob, "bob@b.test", "alice@a.test")
                # An account b.test does not have: its sm's error comes back.
                alice.send_message(mto="ghost@b.test", mbody="anyone?")
                e = await expect(alice.inbox, lambda m: m["type"] == "error",
                                 what="error for ghost@b.test")
                assert e["from"].bare == "ghost@b.test"
            finally:
                await bye(alice, bob)
        run(go())
        how = "SASL EXTERNAL" if mode == "sasl" else "dialback"
        assert "link a.test -> b.test ready (TLS, %s)" % how in net.sides[0].log()
        net.finish()


@pytest.mark.parametrize("mode", ["sasl", "dialback"])
def test_parley_user_and_prosody_user(mode):
    net = Users(mode, with_prosody=True)
    with s2sutil.running(net):
        sa = net.stacks[0]
        sa.add_user("alice", "alicepw")

        async def go():
            alice = await client("a.test", sa.c2s_port, "alice", "alicepw", "home")
            pat = await client("p.test", net.prosody.c2s_port, "pat", "patsecret", "t",
                               cafile=net.ca.cert)
            try:
                await converse(alice, pat, "pat@p.test", "alice@a.test")
                # and the other way round (the subscription is mutual by now:
                # slixmpp subscribes back when it approves)
                await converse(pat, alice, "alice@a.test", "pat@p.test", subscribe=False)
            finally:
                await bye(alice, pat)
        run(go())
        net.finish()
