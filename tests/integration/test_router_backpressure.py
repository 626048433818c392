"""test_router_backpressure.py - a component that stops reading costs the
router a bounded amount of memory.

sink.test completes its handshake (raw socket, SHA-1 computed here) and
never reads again; flood.test sends it more than 100 MB of stanzas. The
router's VmRSS must stay within a bound far below what was sent, and the
sender gets resource-constraint (type wait) bounces for what did not fit
in sink's queue. When sink reads again, what was queued is delivered.
"""

import asyncio

from harness import NS_COMPONENT, close_all, run, stanza_error

STANZA_BODY = 32 * 1024
TOTAL = 100 * 1024 * 1024 + 1
BOUND_KB = 64 * 1024


def test_stalled_reader_bounded_memory(router):
    async def main():
        sink = await router.raw_component("sink.test")
        sink.stop_reading()
        flood = await router.raw_component("flood.test")
        flood.keep_bytes = False
        start_kb = router.rss_kb()
        peak_kb = start_kb
        bounces = {"wait-resource-constraint": 0, "other": []}
        marker = asyncio.Event()

        async def count_bounces():
            try:
                while not marker.is_set():
                    el = await flood.recv(timeout=60)
                    if el is None:
                        raise AssertionError("router closed flood.test's stream")
                    err = stanza_error(el)
                    if el.get("id") == "end":
                        assert err == ("cancel", "remote-server-not-found"), err
                        marker.set()
                    elif err == ("wait", "resource-constraint"):
                        bounces["wait-resource-constraint"] += 1
                    else:
                        bounces["other"].append(el.tag + repr(el.attrib) + repr(err))
            finally:
                marker.set()

        counter = asyncio.ensure_future(count_bounces())
        try:
            body = "x" * STANZA_BODY
            sent = 0
            i = 0
            while sent < TOTAL:
                chunk = []
                for _ in range(32):
                    chunk.append("<message to='x@sink.test' from='f@flood.test' id='f%d'>"
                                 "<body>%s</body></message>" % (i, body))
                    i += 1
                data = "".join(chunk).encode()
                flood.send(data)
                await flood.drain(timeout=30)
                sent += len(data)
                peak_kb = max(peak_kb, router.rss_kb())
                assert router.running(), "router died"
                if counter.done():
                    counter.result()
            # The router handles flood's stanzas in order: once the bounce of
            # a marker to an unknown domain is back, every stanza before it
            # was delivered, queued or bounced.
            flood.send("<message to='x@nowhere.test' from='f@flood.test' id='end'/>")
            await asyncio.wait_for(counter, 90)
            peak_kb = max(peak_kb, router.rss_kb())
            growth_mb = (peak_kb - start_kb) / 1024
            assert peak_kb - start_kb < BOUND_KB, \
                "router grew by %.0f MB while %.0f MB were sent" % (growth_mb, sent / 2**20)
            assert bounces["wait-resource-constraint"] > 0, "no resource-constraint bounce"
            assert not bounces["other"], "unexpected answers: %s" % bounces["other"][:3]
            print("sent %.0f MB in %d stanzas; router grew %.1f MB; %d bounces" %
                  (sent / 2**20, i, growth_mb, bounces["wait-resource-constraint"]))

            # sink reads again: its queue is delivered, not thrown away
            sink.keep_bytes = False
            sink.resume_reading()
            got = await sink.expect(lambda e: e.tag == "{%s}message" % NS_COMPONENT,
                                    timeout=30, what="a queued message")
            assert got.get("from") == "f@flood.test"
        finally:
            counter.cancel()
            await close_all(sink, flood)

    run(main(), timeout=240)
