"""test_c2s_router_limits.py - a client stanza that the router would refuse
on the c2s link (larger than its stanza size once re-serialised and wrapped,
or nested deeper than its depth limit with the wrapper) gets a
policy-violation stanza error to that client only: the link, and every
other client of the c2s, stays up. An iq result is not answered: its
requester gets the error. <router-stanza-size> is at least 8k.
"""

import asyncio
import subprocess

import harness
import stack
from stack import ClientRaw

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


async def wait_for(raw, pred):
    """The first element pred accepts (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + harness.WAIT * 2
    while True:
        left = deadline - loop.time()
        assert left > 0, "nothing matching arrived"
        el = await raw.recv(left)
        assert el is not None, "stream closed"
        if pred(el):
            return el


def error_cond(el):
    err = el.find("{jabber:client}error")
    if err is None:
        return None
    for ch in err:
        if ch.tag.startswith("{%s}" % NS_STANZAS) and not ch.tag.endswith("}text"):
            return ch.tag.split("}")[1]
    return None


def test_grown_or_deep_stanza_refused_others_stay():
    s = stack.Stack(c2s=1)
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")

        async def go():
            alice = await ClientRaw.connect_client(s)
            bob = await ClientRaw.connect_client(s)
            carol = await ClientRaw.connect_client(s)
            try:
                await alice.login_plain("alice", "wonderland")
                await bob.login_plain("bob", "builder")
                await carol.login_plain("bob", "builder", resource="carol")
                to = "bob@%s/raw" % s.domain
                # 70,000 '>' are 70 kB from the client and 280 kB escaped.
                alice.send("<message to='%s' id='big'><body>%s</body></message>" %
                           (to, ">" * 70000))
                el = await wait_for(alice, lambda e: e.get("id") == "big")
                assert el.get("type") == "error"
                assert error_cond(el) == "policy-violation"
                # 32 deep: with the router's wrapper it would be 33.
                deep = "<x xmlns='urn:example:deep'>" * 31 + "</x>" * 31
                alice.send("<message to='%s' id='deep'>%s</message>" % (to, deep))
                el = await wait_for(alice, lambda e: e.get("id") == "deep")
                assert el.get("type") == "error"
                assert error_cond(el) == "policy-violation"
                # Everyone is still connected and served.
                for who, raw in (("bob/raw", bob), ("bob/carol", carol)):
                    alice.send("<message to='%s@%s' id='ok-%s'><body>hi</body></message>" %
                               (who.split("/")[0], s.domain + "/" + who.split("/")[1],
                                who.split("/")[1]))
                    el = await wait_for(raw, lambda e: e.tag == "{jabber:client}message")
                    assert el.findtext("{jabber:client}body") == "hi"
            finally:
                for r in (alice, bob, carol):
                    r.close()

        asyncio.run(go())
        assert s["router"].running() and s["c2s-1"].running()
    finally:
        try:
            problems = s.stop_and_check()
            assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
        finally:
            s.cleanup()


def test_grown_iq_result_refused_to_its_requester():
    """A client's iq result that the router would refuse (grown once
    re-serialised, or nested too deep) is not answered (RFC 6120 §8.2.3:
    nothing answers a result): the client gets nothing, and the requester,
    who would wait in vain, gets policy-violation (modify, without the
    payload) from that client."""
    s = stack.Stack(c2s=1)
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")

        async def go():
            alice = await ClientRaw.connect_client(s)
            bob = await ClientRaw.connect_client(s)
            try:
                await alice.login_plain("alice", "wonderland")
                await bob.login_plain("bob", "builder")
                a, b = "alice@%s/raw" % s.domain, "bob@%s/raw" % s.domain
                deep = "<x xmlns='urn:example:deep'>" * 31 + "</x>" * 31
                for rid, payload in (("big", "<q xmlns='urn:example:big'>%s</q>" % (">" * 70000)),
                                     ("deep", deep)):
                    bob.send("<iq type='get' to='%s' id='%s'><q xmlns='urn:example:q'/></iq>" %
                             (a, rid))
                    el = await wait_for(alice, lambda e: e.get("id") == rid)
                    assert el.get("type") == "get" and el.get("from") == b
                    alice.send("<iq type='result' to='%s' id='%s'>%s</iq>" % (b, rid, payload))
                    el = await wait_for(bob, lambda e: e.get("id") == rid)
                    assert el.get("type") == "error" and el.get("from") == a, el.attrib
                    assert error_cond(el) == "policy-violation"
                    assert el.find("{jabber:client}error").get("type") == "modify"
                    assert len(el) == 1  # the error only: no payload
                    # alice got nothing for it: the marker is the next thing
                    # she gets about it.
                    bob.send("<message to='%s' id='m-%s'><body>marker</body></message>" % (a, rid))
                    el = await wait_for(alice, lambda e: e.get("id") in (rid, "m-" + rid))
                    assert el.get("id") == "m-" + rid, el.attrib
            finally:
                for r in (alice, bob):
                    r.close()

        asyncio.run(go())
        assert s["router"].running() and s["c2s-1"].running()
    finally:
        try:
            problems = s.stop_and_check()
            assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
        finally:
            s.cleanup()


def test_router_stanza_size_at_least_8k():
    """<limits><router-stanza-size> below 8k is a config error (parley-c2s -t
    says so): a session start with a long JID would not fit under it. 8k is
    accepted."""
    for size, ok in (("4k", False), ("8k", True)):
        s = stack.Stack(c2s=1, extra={
            "c2s": "  <limits><router-stanza-size>%s</router-stanza-size></limits>\n" % size})
        try:
            d = s["c2s-1"]
            p = subprocess.run([d.exe, "-t", "-c", d.config], capture_output=True, text=True,
                               timeout=harness.WAIT, env=d.env())
            assert (p.returncode == 0) == ok, (size, p.returncode, p.stdout, p.stderr)
            if not ok:
                assert "router-stanza-size" in p.stdout + p.stderr, p.stderr
        finally:
            s.cleanup()


def test_raised_router_stanza_size_big_message_delivered():
    """Router, c2s and sm all at 512k: a message of 300 kB (one text run
    over the parser's 256 KiB default) reaches its recipient through the
    c2s's router link, which the c2s reads at its router-stanza-size, and
    the link stays (a later small message arrives too; a c2s that could
    not read it would lose the link and close its clients)."""
    big = "<limits><router-stanza-size>512k</router-stanza-size></limits>"
    s = stack.Stack(c2s=1, router_limits={"stanza-size": "512k", "queue-max": "2M"},
                    extra={"c2s": "<limits><stanza-size>512k</stanza-size>"
                                  "<router-stanza-size>512k</router-stanza-size></limits>",
                           "sm": big})
    try:
        s.start()
        s.add_user("alice", "wonderland")
        s.add_user("bob", "builder")

        async def go():
            alice = await ClientRaw.connect_client(s)
            bob = await ClientRaw.connect_client(s)
            try:
                await alice.login_plain("alice", "wonderland")
                await bob.login_plain("bob", "builder")
                to = "bob@%s/raw" % s.domain
                alice.send("<message to='%s' id='big'><body>%s</body></message>" %
                           (to, "z" * 300000))
                alice.send("<message to='%s' id='small'><body>after</body></message>" % to)
                m = await wait_for(bob, lambda el: el.get("id") == "big")
                assert len(m.find("{jabber:client}body").text) == 300000
                m = await wait_for(bob, lambda el: el.get("id") == "small")
                assert m.find("{jabber:client}body").text == "after"
            finally:
                alice.close()
                bob.close()

        asyncio.run(go())
        assert s["router"].running() and s["c2s-1"].running()
    finally:
        print(s.logs()[-8000:])  # captured: shown with a failing test's report
        try:
            problems = s.stop_and_check()
            assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
        finally:
            s.cleanup()
