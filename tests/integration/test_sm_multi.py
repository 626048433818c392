"""test_sm_multi.py - two parley-sm instances sharing one domain
(<multi-instance>yes</multi-instance>, router multi='true'): each user's
sessions live on the instance the router picks for the bare JID, and
stanzas between users on different instances still arrive, subscriptions
included. Protocol level: the test speaks as c2s-1.
"""

import asyncio
import re

import harness
import smutil
import stack
from smutil import FakeC2s, SmStack, error_of, is_message, is_presence, is_push, login, q


def test_two_instances_one_domain():
    st = SmStack(extra={"sm": "<multi-instance>yes</multi-instance>"})
    d2 = None
    try:
        st.start()
        with open(st["sm"].config) as f:
            text = f.read()
        cfg2 = st._path("sm2.xml")
        with open(cfg2, "w") as f:
            f.write(re.sub(r"<pidfile>[^<]*</pidfile>",
                           "<pidfile>%s</pidfile>" % st._path("sm2.pid"), text))
        d2 = stack.Daemon("sm2", harness.binary("sm/parley-sm"), cfg2, st._path("sm2.log"),
                          lambda: "sm ready" in d2.log())
        d2.start()
        users = ["u%d" % i for i in range(12)]
        for u in users:
            st.add_user(u, "pw")

        async def go():
            c = await FakeC2s.connect(st)
            sess = {}
            for u in users:
                sess[u] = await login(c, "%s@%s/r" % (u, st.domain))
            where = {u: (1 if "started for %s@" % u in st["sm"].log() else 2) for u in users}
            ones = [u for u in users if where[u] == 1]
            twos = [u for u in users if where[u] == 2]
            assert ones and twos, "all users on one instance: %s" % where
            assert all("started for %s@" % u in d2.log() for u in twos)
            a, b = sess[ones[0]], sess[twos[0]]
            a.send("<message to='%s' type='chat'><body>across</body></message>" % b.bare)
            m = await b.recv(is_message("across"))
            assert m.get("from") == a.jid
            b.send("<message to='%s' type='chat'><body>back</body></message>" % a.jid)
            await a.recv(is_message("back"))
            # A subscription across instances: pushes on both sides.
            for s in (a, b):
                s.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
                await s.recv(lambda x: x.get("id") == "r")
            a.send("<presence to='%s' type='subscribe'/>" % b.bare)
            await b.recv(is_presence(a.bare, "subscribe"))
            b.send("<presence to='%s' type='subscribed'/>" % a.bare)
            await a.recv(is_presence(b.bare, "subscribed"))
            await a.recv(lambda x: is_push(b.bare)(x) and
                         x.find("{jabber:iq:roster}query/{jabber:iq:roster}item")
                         .get("subscription") == "to")
            await a.recv(is_presence(b.jid, None), what="b's presence after approval")
            c.close()
        harness.run(go())
        assert d2.stop() == 0
        assert not d2.sanitizer_errors(), d2.sanitizer_errors()[:5]
    finally:
        if d2 is not None and d2.running():
            d2.kill()
        st.finish()


def test_stanza_returned_by_congested_instance_is_bounced():
    """A stanza the sm hands to the instance that holds its user comes back
    from the router (that instance, here a raw one that stopped reading, is
    congested): the sender gets resource-constraint, nothing is lost
    silently."""
    st = SmStack(extra={"sm": "<multi-instance>yes</multi-instance>"})
    try:
        st.start()
        users = ["u%d" % i for i in range(16)]
        for u in users:
            st.add_user(u, "pw")
        R = "{%s}" % harness.NS_ROUTER

        async def go():
            other = await st.router.raw_component("sm")  # a second instance, by hand
            other.send("<r:bind xmlns:r='%s' name='%s'/>" % (harness.NS_ROUTER, st.domain))
            await other.expect(lambda el: el.tag == R + "bind" and el.get("error") is None,
                               what="bind of the second instance")
            c = await FakeC2s.connect(st)
            here, there = None, None
            for u in users:  # where does each user go? the sm answers, or the raw instance
                jid = "%s@%s/r" % (u, st.domain)
                sid = c.start(jid)
                got = asyncio.ensure_future(c.control("started", sid))
                moved = asyncio.ensure_future(other.expect(
                    lambda el: el.tag == R + "route" and len(el) and el[0].get("sid") == sid,
                    what="start at the raw instance"))
                done, pending = await asyncio.wait({got, moved}, timeout=harness.WAIT,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for f in pending:
                    f.cancel()
                assert done, "start of %s answered nowhere" % u
                if got in done and here is None:
                    here = smutil.Sess(c, jid, sid)
                elif moved in done and there is None:
                    there = jid.split("/")[0]
                if here and there:
                    break
            assert here and there, "users all on one instance"
            other.stop_reading()
            body = "x" * 8192
            e = None
            # Paced (a ping round trip every 10): the raw instance's queue at
            # the router (256 KiB) fills, not the sm's.
            for step in range(60):
                for i in range(10):
                    here.send("<message to='%s' type='chat' id='m%d-%d'><body>%s</body>"
                              "</message>" % (there, step, i, body))
                r = await here.iq("<iq type='get' id='p%d' to='%s'><ping xmlns='urn:xmpp:ping'/>"
                                  "</iq>" % (step, st.domain), "p%d" % step)
                assert r.get("type") == "result"
                errs = [el[0] for el in c.pending if el.tag == R + "route" and
                        el.get("sid") == here.sid and len(el) and el[0].get("type") == "error"]
                if errs:
                    e = errs[0]
                    break
            assert e is not None, "no message came back as undelivered"
            assert error_of(e) == ("wait", "resource-constraint"), error_of(e)
            assert "stanza for another instance returned" in st["sm"].log()
            c.close()
            other.close()
        harness.run(go())
    finally:
        st.finish()
