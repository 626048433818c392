"""conftest.py - pytest fixtures for Parley's integration tests.

The `router` fixture starts a real parley-router (from the build tree named
by PARLEY_BUILD, default build/asan) with a config written for the test, and
stops it with SIGTERM afterwards. Teardown fails the test if the router does
not exit 0 in time, or if its log holds an AddressSanitizer, LeakSanitizer or
UBSan report. When a test fails, the router's log is attached to the report.
Tests that need a different config use the `make_router` factory.
"""

import pytest

import harness


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for r in getattr(item, "parley_routers", ()):
            rep.sections.append(("parley-router log (%s)" % r.logpath, r.log()))
        for e in getattr(item, "parley_echos", ()):
            rep.sections.append(("parley-echo log (%s)" % e.logpath, e.log()))


def _finish(routers):
    problems = []
    for r in routers:
        try:
            code = r.stop()
            if code != 0:
                problems.append("parley-router did not exit 0 on SIGTERM within %.0fs "
                                "(exit %r)" % (harness.STOP_WAIT, code))
            errs = r.sanitizer_errors()
            if errs:
                problems.append("sanitizer report in the router's log: %s" % errs[:5])
        finally:
            if not problems:
                r.cleanup()
    if problems:
        pytest.fail("\n".join(problems) + "\n---- router log:\n" +
                    "\n".join(r.log()[-20000:] for r in routers), pytrace=False)


@pytest.fixture
def make_router(request):
    """Factory: make_router(limits=..., components=...) -> started Router."""
    routers = []
    request.node.parley_routers = routers

    def make(**kw):
        r = harness.Router(**kw)
        routers.append(r)
        r.start()
        return r

    yield make
    _finish(routers)


@pytest.fixture
def router(make_router):
    return make_router()


@pytest.fixture
def echo_procs(request):
    """Start parley-echo processes; they are stopped at teardown and must
    exit 0 (and without sanitizer reports)."""
    echos = []
    request.node.parley_echos = echos

    def start(router, name, **kw):
        e = harness.Echo(router, name, **kw)
        echos.append(e)
        return e

    yield start
    problems = []
    for e in echos:
        code = e.stop()
        if code != 0:
            problems.append("parley-echo did not exit 0 on SIGTERM (exit %r)" % code)
        log = e.log()
        if "ERROR: AddressSanitizer" in log or "ERROR: LeakSanitizer" in log or \
                "runtime error:" in log:
            problems.append("sanitizer report in parley-echo's log")
    if problems:
        pytest.fail("\n".join(problems) + "\n---- echo logs:\n" +
                    "\n".join(e.log()[-10000:] for e in echos), pytrace=False)
