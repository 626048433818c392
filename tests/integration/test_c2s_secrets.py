"""test_c2s_secrets.py - a client's SASL PLAIN password does not stay in
parley-c2s's memory after use. The test logs in with PLAIN over STARTTLS
(and fails one login with a wrong password), then searches every writable
mapping of the c2s process (/proc/PID/mem; root, as in CI) for the
password and for the base64 response that carried it.

Under the sanitizer build (how the tests run) freed memory sits in ASan's
quarantine untouched, so a copy that was freed without being wiped (the
<auth/> element's text in its arena, the decoded message) is found; in a
release build malloc soon reuses it, and the test then proves less.

The base64 of the failed attempt is checked apart: c2s keeps the raw bytes
of a stream's last stanza (parser buffers) until the stream's next stanza,
reset or hibernation (3 s idle, which wipes them), so it must be gone once
that stream has been quiet a while, with the stream still open.
"""

import asyncio
import base64
import os

import pytest

import harness
import stack

# Mappings larger than this are ASan's shadow memory (terabytes, reserved).
MAX_MAPPING = 1 << 30


@pytest.fixture(scope="module")
def st():
    if os.geteuid() != 0:
        pytest.skip("reading another process's memory needs root")
    s = stack.Stack(c2s=1)
    try:
        s.start()
        yield s
        problems = s.stop_and_check()
        assert not problems, "%s\n%s" % (problems[:5], s.logs()[-6000:])
    finally:
        s.cleanup()


def found_in_memory(pid, needles):
    """The needles that occur in a writable mapping of process pid."""
    found = set()
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read().splitlines()
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if not fields[1].startswith("rw") or hi - lo > MAX_MAPPING:
                continue
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:
                continue  # e.g. a guard or device mapping
            found.update(n for n in needles if n in data)
    return found


def test_plain_password_wiped(st):
    password = "Sekrit-" + os.urandom(8).hex()
    wrong = "Wr0ng-" + os.urandom(8).hex()
    st.add_user("carol", password)
    response = base64.b64encode(b"\0carol\0" + password.encode())
    bad_response = base64.b64encode(b"\0carol\0" + wrong.encode())

    async def go():
        ok = await stack.ClientRaw.connect_client(st)
        bad = await stack.ClientRaw.connect_client(st)
        try:
            assert await ok.login_plain("carol", password) == "carol@%s/raw" % st.domain
            await bad.open()
            await bad.starttls()
            await bad.open()
            el = await bad.auth_plain("carol", wrong)
            assert el is not None and el.tag == "{%s}failure" % stack.NS_SASL, el
            # Both streams stay open: nothing was freed by closing them.
            pid = st["c2s-1"].pid
            now = found_in_memory(pid, [password.encode(), response, wrong.encode()])
            # The failed stream idles into hibernation, which wipes its
            # parser's buffers: then its response is gone too.
            left = {bad_response}
            for _ in range(40):
                left = found_in_memory(pid, [bad_response])
                if not left:
                    break
                await asyncio.sleep(0.5)
            return now | left
        finally:
            ok.close()
            bad.close()

    assert harness.run(go()) == set()
