"""test_sm_multi.py - two parley-sm instances sharing one domain
(<multi-instance>yes</multi-instance>, router multi='true'): each user's
sessions live on the instance the router picks for the bare JID, and
stanzas between users on different instances still arrive, subscriptions
included. Protocol level: the test speaks as c2s-1.
"""

import re

import harness
import stack
from smutil import FakeC2s, SmStack, is_message, is_presence, is_push, login, q


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
