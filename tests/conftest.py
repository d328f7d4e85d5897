"""Shared fixtures: the embedded server, the official livekit-server, and both as a matrix.

``any_server`` is parametrised over ``embedded`` (our DevServer) and ``livekit-server``
(the official binary); client tests written against it run on both. The official server
needs a private network namespace (``scripts/netns-run``) so that its ICE stays off the
machine's real interfaces; outside one it is skipped with a visible reason.

``AIOLIVEKIT_REQUIRE_PEERS=1`` (set by ``.ci/run``) makes every skip a failure: CI must run
every test against every peer (official SDK venv, npm clients, Chromium, livekit-server,
the private namespace), so a peer that is missing fails the run with the skip's reason
instead of leaving a green log with a skip count. Without it, local runs skip and
``scripts/test`` prints why (``-rfEs``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiolivekit.testing.servers import LiveKitServerProcess, ServerInfo, find_livekit_server

IN_NETNS = os.environ.get("AIOLIVEKIT_NETNS") == "1"
REQUIRE_PEERS_ENV = "AIOLIVEKIT_REQUIRE_PEERS"


def require_peers() -> bool:
    """True when a skipped test must fail instead (CI: ``AIOLIVEKIT_REQUIRE_PEERS=1``)."""
    return os.environ.get(REQUIRE_PEERS_ENV) == "1"


def _strict_message(reason: str) -> str:
    return (
        f"{REQUIRE_PEERS_ENV}=1: this test would have been skipped, and under this switch "
        f"(CI) a skip is a failure: {reason}"
    )


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under ``AIOLIVEKIT_REQUIRE_PEERS=1`` a skipped setup or call is reported as failed."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and require_peers() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = _strict_message(_skip_reason(report.longrepr))


#: Every phase over 1 s and every failure, appended as it happens (a run killed by its time
#: budget still says where the time went and what failed): ``build/test-times.log``.
TIMES_LOG = os.environ.get("AIOLIVEKIT_TEST_TIMES", "build/test-times.log")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.duration < 1.0 and not report.failed:
        return
    line = f"{report.duration:7.2f}s {report.when:8} {report.outcome:7} {report.nodeid}\n"
    try:
        with open(TIMES_LOG, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError:
        return
    if report.failed:
        print(f"\nFAILED ({report.when}, {report.duration:.1f} s): {report.nodeid}", flush=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    """The same for a whole module skipped at collection (``allow_module_level``)."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and require_peers():
        report.outcome = "failed"
        report.longrepr = _strict_message(_skip_reason(report.longrepr))


def _skip_reason_livekit_server() -> str | None:
    if find_livekit_server() is None:
        return (
            "livekit-server binary not found ($LIVEKIT_SERVER_BIN, "
            "$AIOLIVEKIT_CACHE/bin/server or PATH); scripts/install-deps builds it with go"
        )
    if not IN_NETNS:
        return "livekit-server runs only inside a private network namespace (scripts/netns-run)"
    return None


@pytest.fixture
async def embedded_server() -> AsyncIterator[ServerInfo]:
    from aiolivekit.server import DevServer

    async with DevServer(port=0) as server:
        yield ServerInfo("embedded", server.url, server.api_key, server.api_secret)


@pytest.fixture
async def livekit_server() -> AsyncIterator[ServerInfo]:
    reason = _skip_reason_livekit_server()
    if reason:
        pytest.skip(reason)
    binary = find_livekit_server()
    assert binary is not None
    log = tempfile.NamedTemporaryFile(prefix="livekit-server-", suffix=".log", delete=False)
    log.close()
    async with LiveKitServerProcess(binary, log_path=log.name) as proc:
        yield proc.info()


@pytest.fixture(params=["embedded", "livekit-server"])
async def any_server(request: pytest.FixtureRequest) -> AsyncIterator[ServerInfo]:
    if request.param == "embedded":
        from aiolivekit.server import DevServer

        async with DevServer(port=0) as server:
            yield ServerInfo("embedded", server.url, server.api_key, server.api_secret)
    else:
        reason = _skip_reason_livekit_server()
        if reason:
            pytest.skip(reason)
        binary = find_livekit_server()
        assert binary is not None
        async with LiveKitServerProcess(binary) as proc:
            yield proc.info()


@pytest.fixture
async def rooms() -> AsyncIterator[list[Any]]:
    """Rooms a test creates (append them); all disconnected at the end."""
    created: list[Any] = []
    yield created
    for room in created:
        await room.disconnect()
