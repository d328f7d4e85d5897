"""Interop test plumbing: the ``netns`` skip rule and the compatibility-matrix recorder.

* Tests marked ``netns`` (or ``official_sdk``/``node``/``browser``/``livekit_server``) are
  skipped, with the reason shown, unless pytest runs inside a private network namespace
  (``scripts/netns-run``; ``scripts/test`` always does). This applies to every collected
  test, not only those in this folder.
* Tests marked ``compat(capability, ...)`` are recorded in ``build/compat-results.json``
  (test id, server, client, capability, outcome, and the outcome of each phase: setup, call,
  teardown); ``scripts/compat_table.py`` turns that into ``docs/compat.md``. A collected
  test that never ran is recorded with no phases; a run that collects no ``compat`` test
  writes nothing. The server comes from the ``any_server`` parameter or from the
  ``livekit_server``/``embedded_server`` fixtures; the client from a ``client`` parameter
  or the ``compat(client=...)`` keyword.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from aiolivekit.testing.netns import netns_skip_reason

NETNS_MARKERS = ("netns", "official_sdk", "node", "browser", "livekit_server")


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "netns: needs a private network namespace (scripts/netns-run)",
        "compat(*capabilities, client=None): record the outcome in the compatibility matrix",
        "official_sdk: drives the official livekit Python SDK in its own virtualenv",
        "node: drives @livekit/rtc-node",
        "browser: drives livekit-client in Debian's Chromium",
        "livekit_server: runs against the official livekit-server binary",
    ):
        config.addinivalue_line("markers", line)
    if not config.pluginmanager.has_plugin("aiolivekit-compat-recorder"):
        config.pluginmanager.register(CompatRecorder(), "aiolivekit-compat-recorder")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = netns_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if any(item.get_closest_marker(m) for m in NETNS_MARKERS):
            item.add_marker(skip)


def _server_of(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for name in ("any_server", "server"):
            if name in callspec.params:
                return str(callspec.params[name])
    names = getattr(item, "fixturenames", ())
    if "livekit_server" in names:
        return "livekit-server"
    if "embedded_server" in names:
        return "embedded"
    return "none"


def _client_of(item: pytest.Item, marker: pytest.Mark) -> str:
    if marker.kwargs.get("client"):
        return str(marker.kwargs["client"])
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for name in ("client", "kind", "peer"):
            if name in callspec.params:
                return str(callspec.params[name])
    return "unknown"


class CompatRecorder:
    """Registered as a plugin so that ``compat``-marked tests anywhere are recorded.

    Every phase (setup, call, teardown) of every collected ``compat`` test is kept, so a
    teardown error or a test that never ran is visible to ``scripts/compat_table.py``.
    """

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}  # nodeid -> server, client, capabilities
        self.phases: dict[str, dict[str, str]] = {}  # nodeid -> {when: outcome}
        self.reasons: dict[str, str] = {}  # nodeid -> first non-passing phase's reason

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            marker = item.get_closest_marker("compat")
            if marker is not None:
                self.items[item.nodeid] = {
                    "capabilities": [str(c) for c in marker.args] or ["connect"],
                    "server": _server_of(item),
                    "client": _client_of(item, marker),
                }

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self.items:
            return
        self.phases.setdefault(report.nodeid, {})[report.when] = report.outcome
        if report.outcome != "passed" and report.nodeid not in self.reasons:
            self.reasons[report.nodeid] = f"{report.when}: {_short_reason(report)}"

    def results(self) -> list[dict[str, Any]]:
        """One record per collected test and capability (no phases: it never ran)."""
        return [
            {
                "test": nodeid,
                "server": info["server"],
                "client": info["client"],
                "capability": cap,
                "phases": self.phases.get(nodeid, {}),
                "reason": self.reasons.get(nodeid, ""),
            }
            for nodeid, info in self.items.items()
            for cap in info["capabilities"]
        ]

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        _write(session, self.results())


def _short_reason(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])[:200]
    text = getattr(report, "longreprtext", "") or ""
    lines = [ln for ln in text.splitlines() if ln.startswith("E ")]
    return (lines[0][1:].strip() if lines else text[-200:].strip())[:200]


def _write(session: pytest.Session, results: list[dict[str, Any]]) -> None:
    """Write the results file; nothing when no ``compat`` test was collected."""
    if not results:
        return
    out = Path(
        os.environ.get(
            "AIOLIVEKIT_COMPAT_RESULTS",
            Path(str(session.config.rootpath)) / "build" / "compat-results.json",
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "require_peers": os.environ.get("AIOLIVEKIT_REQUIRE_PEERS") == "1",
                "results": results,
            },
            indent=1,
        )
    )
