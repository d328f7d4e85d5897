"""scripts/compat_table.py and the recorder behind it (tests/interop/conftest.py).

A cell is ``pass`` only when every test of it passed in setup, call and teardown; partial,
failed and skipped cells say so; an empty results file is an error; and the committed
table is compared with a fresh one ignoring only the ``Run:`` line. The last tests run a
small pytest session with the real recorder and the real ``AIOLIVEKIT_REQUIRE_PEERS``
hook to check what they record.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and friends look the module up
    spec.loader.exec_module(module)
    return module


ct = _load("compat_table", ROOT / "scripts" / "compat_table.py")

OK = {"setup": "passed", "call": "passed", "teardown": "passed"}
SKIP = {"setup": "skipped", "teardown": "passed"}
TEARDOWN_ERROR = {"setup": "passed", "call": "passed", "teardown": "failed"}


def rec(test: str, phases: dict[str, str], cap: str = "audio", client: str = "node",
        server: str = "embedded", reason: str = "") -> dict[str, Any]:
    return {"test": test, "server": server, "client": client, "capability": cap,
            "phases": phases, "reason": reason}


def data(*records: dict[str, Any], generated: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"generated": generated, "results": list(records)}


def row(text: str, client_label: str) -> list[str]:
    """The cells of the first table row whose label is ``client_label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == client_label:
            return cells[1:]
    raise AssertionError(f"no row {client_label!r} in\n{text}")


def header(text: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("| client |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


# ---- one test, one cell ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (OK, "passed"),
        ({}, "notrun"),
        (SKIP, "skipped"),
        ({"setup": "passed", "call": "skipped", "teardown": "passed"}, "skipped"),
        ({"setup": "passed", "call": "failed", "teardown": "passed"}, "failed"),
        ({"setup": "failed", "teardown": "passed"}, "error"),
        (TEARDOWN_ERROR, "error"),
        ({"setup": "skipped", "teardown": "failed"}, "error"),
        ({"setup": "passed", "call": "passed"}, "incomplete"),
        ({"setup": "passed"}, "incomplete"),
    ],
)
def test_outcome_needs_every_phase(phases: dict[str, str], expected: str) -> None:
    assert ct.outcome_of(phases) == expected


def test_outcome_rejects_unknown_phase_or_outcome() -> None:
    with pytest.raises(ct.ResultsError):
        ct.outcome_of({"setup": "passed", "cal": "passed", "teardown": "passed"})
    with pytest.raises(ct.ResultsError):
        ct.outcome_of({"setup": "ok", "call": "passed", "teardown": "passed"})


@pytest.mark.parametrize(
    ("outcomes", "cell"),
    [
        (["passed"], "pass"),
        (["passed", "passed", "passed"], "pass"),
        (["passed", "skipped"], "partial 1/2"),
        (["passed", "passed", "notrun"], "partial 2/3"),
        (["skipped", "notrun"], "skip"),
        (["passed", "skipped", "error"], "FAIL"),
        (["passed", "failed"], "FAIL"),
        (["passed", "incomplete"], "FAIL"),
    ],
)
def test_combine(outcomes: list[str], cell: str) -> None:
    assert ct.combine(outcomes) == cell


def test_combine_rejects_empty_and_unknown() -> None:
    with pytest.raises(ct.ResultsError):
        ct.combine([])
    with pytest.raises(ct.ResultsError):
        ct.combine(["passed", "xpassed"])


# ---- the page ---------------------------------------------------------------------------------


def test_render_cells_columns_and_failures() -> None:
    text = ct.render(
        data(
            rec("t.py::a[embedded-node]", OK, "audio"),
            rec("t.py::b[embedded-node]", SKIP, "audio", reason="setup: Skipped: no node"),
            rec("t.py::c[embedded-node]", TEARDOWN_ERROR, "video", reason="teardown: boom"),
            rec("t.py::d[embedded-node]", OK, "transcription"),
            rec("t.py::e[embedded-official_py]", SKIP, "audio", client="official_py"),
            rec("t.py::f[embedded-official_py]", OK, "video", client="official_py"),
        )
    )
    # columns in CAP_ORDER, only those some test records
    assert header(text) == ["transcription", "audio", "video"]
    assert row(text, "aiolivekit ↔ `@livekit/rtc-node` 1.1.0") == ["pass", "partial 1/2", "FAIL"]
    assert row(text, "aiolivekit ↔ official Python SDK `livekit` 1.2.1") == ["", "skip", "pass"]
    failures = text.split("## Tests that did not pass", 1)[1].split("##", 1)[0]
    assert "`t.py::c[embedded-node]` error: `teardown: boom`" in failures
    assert "`t.py::b[embedded-node]` skipped: `setup: Skipped: no node`" in failures
    assert "t.py::a[" not in failures
    assert "- `t.py::c[embedded-node]`: video: error" in text
    assert "<summary>6 tests</summary>" in text


def test_render_all_pass_has_no_failure_section() -> None:
    text = ct.render(data(rec("t.py::a", OK), rec("t.py::a", OK, cap="video")))
    assert "did not pass" not in text
    assert "- `t.py::a`: audio, video: passed" in text


def test_render_refuses_a_run_that_recorded_nothing() -> None:
    with pytest.raises(ct.ResultsError, match="records no test"):
        ct.render({"generated": "x", "results": []})
    with pytest.raises(ct.ResultsError):
        ct.render({})


def test_render_refuses_records_without_phases() -> None:
    old = {"test": "t", "server": "embedded", "client": "node", "capability": "audio",
           "outcome": "passed"}
    with pytest.raises(ct.ResultsError, match="no phases"):
        ct.render(data(old))


def test_never_run_test_is_named_with_a_reason() -> None:
    text = ct.render(data(rec("t.py::a", OK), rec("t.py::b", {})))
    assert row(text, "aiolivekit ↔ `@livekit/rtc-node` 1.1.0") == ["partial 1/2"]
    assert "`t.py::b` notrun: `collected but never ran" in text


def test_table_is_deterministic_apart_from_the_run_line() -> None:
    records = [rec("t.py::b", OK, "video"), rec("t.py::a", OK), rec("t.py::c", OK, "data")]
    one = ct.render(data(*records, generated="2026-01-01T00:00:00Z"))
    two = ct.render(data(*reversed(records), generated="2026-02-02T00:00:00Z"))
    assert one != two  # the Run: line differs
    assert ct.stale_diff(one, two, "docs/compat.md") == []
    three = ct.render(data(rec("t.py::b", SKIP, "video"), *records[1:]))
    diff = ct.stale_diff(three, one, "docs/compat.md")
    assert any(line.startswith("+| aiolivekit") and "skip" in line for line in diff), diff


# ---- the command line -------------------------------------------------------------------------


def _write(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload))
    return path


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "compat.md"
    assert ct.main([str(tmp_path / "missing.json"), "-o", str(out)]) == 1
    empty = _write(tmp_path / "empty.json", {"generated": "x", "results": []})
    assert ct.main([str(empty), "-o", str(out)]) == 1
    assert not out.exists()
    assert "records no test" in capsys.readouterr().err

    good = _write(tmp_path / "good.json", data(rec("t.py::a", OK)))
    assert ct.main([str(good), "-o", str(out), "--require-pass"]) == 0
    doc = tmp_path / "doc.md"
    doc.write_text(out.read_text().replace("Run: 2026-01-01", "Run: 2025-05-05"))
    assert ct.main([str(good), "-o", str(out), "--check", str(doc)]) == 0

    partial = _write(tmp_path / "partial.json", data(rec("t.py::a", OK), rec("t.py::b", SKIP)))
    capsys.readouterr()
    assert ct.main([str(partial), "-o", str(out), "--require-pass"]) == 2
    assert "embedded / node / audio: partial 1/2" in capsys.readouterr().err
    assert ct.main([str(partial), "-o", str(out), "--check", str(doc)]) == 3
    err = capsys.readouterr().err
    assert f"copy {out} to {doc}" in err and "+| aiolivekit" in err
    assert ct.main([str(good), "-o", str(out), "--check", str(tmp_path / "nodoc.md")]) == 3


# ---- the recorder and the strict switch, in a real pytest session ---------------------------

INNER_CONFTEST = f"""
import importlib.util


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_root = _load("_aiolivekit_root_conftest", {str(ROOT / "tests" / "conftest.py")!r})
_interop = _load("_aiolivekit_interop_conftest", {str(ROOT / "tests" / "interop" / "conftest.py")!r})
pytest_runtest_makereport = _root.pytest_runtest_makereport
pytest_make_collect_report = _root.pytest_make_collect_report
pytest_configure = _interop.pytest_configure
"""

INNER_TESTS = """
import pytest


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")


@pytest.mark.compat("audio", client="node")
def test_passes():
    pass


@pytest.mark.compat("video", client="node")
def test_teardown_error(broken_teardown):
    pass


@pytest.mark.compat("dtmf", client="node")
def test_peer_missing():
    pytest.skip("npm package @livekit/rtc-node missing")


@pytest.mark.compat("rpc", client="node")
@pytest.mark.skip(reason="official SDK venv missing")
def test_marked_skip():
    pass


def test_not_recorded():
    pass
"""


def _inner_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
               strict: bool) -> tuple[pytest.RunResult, dict[str, Any]]:
    results = pytester.path / "results.json"
    monkeypatch.setenv("AIOLIVEKIT_COMPAT_RESULTS", str(results))
    if strict:
        monkeypatch.setenv("AIOLIVEKIT_REQUIRE_PEERS", "1")
    else:
        monkeypatch.delenv("AIOLIVEKIT_REQUIRE_PEERS", raising=False)
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rfEs")
    return result, json.loads(results.read_text())


def test_recorder_keeps_every_phase(pytester: pytest.Pytester,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    result, recorded = _inner_run(pytester, monkeypatch, strict=False)
    result.assert_outcomes(passed=3, skipped=2, errors=1)  # teardown error: passed + error
    by_test = {r["test"].split("::")[1]: r for r in recorded["results"]}
    assert sorted(by_test) == ["test_marked_skip", "test_passes", "test_peer_missing",
                               "test_teardown_error"]
    assert by_test["test_teardown_error"]["phases"] == TEARDOWN_ERROR
    assert "teardown broke" in by_test["test_teardown_error"]["reason"]
    assert by_test["test_peer_missing"]["reason"].endswith("@livekit/rtc-node missing")
    assert recorded["require_peers"] is False
    cells = ct.cells_of(recorded)
    assert cells == {
        ("none", "node", "audio"): "pass",
        ("none", "node", "video"): "FAIL",
        ("none", "node", "dtmf"): "skip",
        ("none", "node", "rpc"): "skip",
    }


def test_require_peers_turns_every_skip_into_a_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, recorded = _inner_run(pytester, monkeypatch, strict=True)
    # the call-time skip fails the call; the marker skip (evaluated in setup) errors setup
    result.assert_outcomes(passed=3, failed=1, errors=2, skipped=0)
    for reason in ("npm package @livekit/rtc-node missing", "official SDK venv missing"):
        result.stdout.fnmatch_lines([f"AIOLIVEKIT_REQUIRE_PEERS=1:*a skip is a failure: {reason}"])
    assert recorded["require_peers"] is True
    assert ct.cells_of(recorded) == {
        ("none", "node", "audio"): "pass",
        ("none", "node", "video"): "FAIL",
        ("none", "node", "dtmf"): "FAIL",
        ("none", "node", "rpc"): "FAIL",
    }


def test_recorder_writes_nothing_without_compat_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = pytester.path / "results.json"
    monkeypatch.setenv("AIOLIVEKIT_COMPAT_RESULTS", str(results))
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_plain="def test_x():\n    pass\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not results.exists()
