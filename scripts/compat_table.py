#!/usr/bin/env python3
"""Turn ``build/compat-results.json`` (written by tests/interop/conftest.py) into a Markdown table.

    python scripts/compat_table.py [build/compat-results.json] [-o docs/compat.md]
                                   [--require-pass] [--check docs/compat.md]

One table per server: a row per client, a column per capability that some test records.
A cell combines every test recorded for it; a test counts as passed only if its setup,
call and teardown all passed. Cells: ``pass`` (every test passed), ``partial p/n`` (p of
n passed, the others were skipped or not run), ``FAIL`` (a test failed or errored in some
phase, or never finished), ``skip`` (none ran), empty (no test).

A results file that is missing, empty or from an older recorder (no phases) is an error
(exit 1). ``--require-pass`` exits 2 unless every cell is ``pass`` (CI). ``--check DOC``
exits 3 when DOC differs from the rendered table, ignoring only the ``Run:`` line (the
timestamp), so a committed table that no longer matches the suite fails CI.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLIENT_NAMES = {
    "official_py": "official Python SDK `livekit` 1.2.1",
    "node": "`@livekit/rtc-node` 1.1.0",
    "browser": "`livekit-client` 2.23.0 (Chromium)",
    "aiolivekit": "aiolivekit",
}
SERVER_NAMES = {"embedded": "aiolivekit DevServer", "livekit-server": "livekit-server v1.13.5"}
CAP_ORDER = [
    "connect",
    "data",
    "data_lossy",
    "data_targeted",
    "rpc",
    "text_stream",
    "byte_stream",
    "dtmf",
    "transcription",
    "audio",
    "video",
    "resume",
    "e2ee",
    "e2ee_data",
]
PHASES = ("setup", "call", "teardown")
OUTCOMES = ("passed", "failed", "error", "skipped", "incomplete", "notrun")
BROKEN = ("failed", "error", "incomplete")
RUN_PREFIX = "Run: "


class ResultsError(ValueError):
    """The results file cannot back a table (missing, empty, malformed or outdated)."""


def outcome_of(phases: dict[str, str]) -> str:
    """One test's outcome from its phase outcomes (same rule as the recorder).

    ``passed`` only if setup, call and teardown all passed; ``failed`` if the call failed;
    ``error`` if setup or teardown failed; ``skipped``; ``incomplete`` (no teardown report);
    ``notrun`` (no phase at all).
    """
    bad = {w: o for w, o in phases.items() if w not in PHASES or o not in OUTCOMES}
    if bad:
        raise ResultsError(f"unknown phase or outcome in {phases!r}")
    if not phases:
        return "notrun"
    if phases.get("call") == "failed":
        return "failed"
    if "failed" in phases.values():
        return "error"
    if "teardown" not in phases:
        return "incomplete"
    if "skipped" in phases.values():
        return "skipped"
    if all(phases.get(w) == "passed" for w in PHASES):
        return "passed"
    return "incomplete"


def combine(outcomes: list[str]) -> str:
    """A cell from the outcomes of its tests: ``pass``, ``partial p/n``, ``FAIL`` or ``skip``."""
    if not outcomes:
        raise ResultsError("a cell with no tests")
    unknown = [o for o in outcomes if o not in OUTCOMES]
    if unknown:
        raise ResultsError(f"unknown outcome(s) {unknown!r}")
    if any(o in BROKEN for o in outcomes):
        return "FAIL"
    passed = outcomes.count("passed")
    if passed == len(outcomes):
        return "pass"
    if passed:
        return f"partial {passed}/{len(outcomes)}"
    return "skip"


def client_label(client: str) -> str:
    parts = client.split("+")
    if len(parts) == 1:
        return f"aiolivekit ↔ {CLIENT_NAMES.get(client, client)}"
    return " ↔ ".join(CLIENT_NAMES.get(p, p) for p in parts) + " (harness check)"


def _records(data: dict[str, Any]) -> list[dict[str, Any]]:
    results = data.get("results")
    if not isinstance(results, list) or not results:
        raise ResultsError(
            "the results file records no test: the interop tests did not run (or collected "
            "no compat-marked test)"
        )
    out = []
    for r in results:
        missing = {"test", "server", "client", "capability"} - set(r)
        if missing:
            raise ResultsError(f"record without {sorted(missing)}: {r!r}")
        if not isinstance(r.get("phases"), dict):
            raise ResultsError(
                f"record for {r['test']} has no phases (written by an older recorder?): "
                "run the tests again"
            )
        outcome = outcome_of(r["phases"])
        reason = r.get("reason") or {
            "notrun": "collected but never ran (session stopped early?)",
            "incomplete": "no teardown report (session interrupted?)",
        }.get(outcome, "")
        out.append({**r, "outcome": outcome, "reason": reason})
    return out


def cells_of(data: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    """``(server, client, capability) -> cell`` for every recorded cell."""
    outcomes: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for r in _records(data):
        outcomes[(r["server"], r["client"], r["capability"])].append(r["outcome"])
    return {key: combine(v) for key, v in outcomes.items()}


def render(data: dict[str, Any]) -> str:
    """The Markdown page; raises :class:`ResultsError` when ``data`` cannot back it."""
    records = _records(data)
    cells = cells_of(data)
    caps_seen = {k[2] for k in cells}
    caps = [c for c in CAP_ORDER if c in caps_seen] + sorted(caps_seen - set(CAP_ORDER))
    servers = sorted({k[0] for k in cells}, key=lambda s: (s != "embedded", s))
    strict = " with `AIOLIVEKIT_REQUIRE_PEERS=1`" if data.get("require_peers") else ""
    out = [
        "# Compatibility matrix",
        "",
        "Generated by `scripts/compat_table.py` from `build/compat-results.json`, which the",
        "interop recorder (tests/interop/conftest.py) writes on every run of `scripts/test`.",
        "Do not edit by hand: CI (`.ci/run`) renders a fresh table into `build/compat.md` on",
        "every run and fails if it differs from this file (apart from the `Run:` line).",
        f"{RUN_PREFIX}{data.get('generated', '?')}{strict}.",
        "",
        "`pass`: every test of the cell ran and passed (setup, call and teardown);",
        "`partial p/n`: p of its n tests passed, the others were skipped or not run;",
        "`FAIL`: a test failed or errored in some phase; `skip`: none of its tests ran;",
        "empty: no test. Rows `aiolivekit ↔ X`: an aiolivekit Room in one process, official",
        "client X in another, each capability tested in both directions where the client",
        "supports it (tests/interop/test_interop_aiolivekit.py,",
        "tests/integration/test_data_streams_rpc.py); `aiolivekit ↔ aiolivekit`: the",
        "integration tests. Rows marked *harness check* pair two official clients",
        "(tests/interop/test_interop_official_peers.py). `resume`: a cut signal resumed",
        "without loss and a full reconnect that republishes once (tests/integration/",
        "test_reconnect.py); the official clients resuming against both servers and the",
        "injected faults are in docs/reconnect.md.",
        "",
    ]
    for server in servers:
        out += [f"## Server: {SERVER_NAMES.get(server, server)}", ""]
        out.append("| client | " + " | ".join(caps) + " |")
        out.append("|---|" + "---|" * len(caps))
        # aiolivekit rows first, then official-to-official harness checks
        clients = sorted({k[1] for k in cells if k[0] == server}, key=lambda c: ("+" in c, c))
        for client in clients:
            row = [cells.get((server, client, c), "") for c in caps]
            out.append(f"| {client_label(client)} | " + " | ".join(row) + " |")
        out.append("")
    not_passed = sorted(
        {(r["server"], r["client"], r["test"], r["outcome"], r["reason"]) for r in records
         if r["outcome"] != "passed"}
    )
    if not_passed:
        out += ["## Tests that did not pass", ""]
        for server, client, test, outcome, reason in not_passed:
            why = f": `{reason}`" if reason else ""
            out.append(f"- {server} / {client}: `{test}` {outcome}{why}")
        out.append("")
    by_test: dict[str, tuple[list[str], str]] = {}
    for r in records:
        caps_of, _ = by_test.get(r["test"], ([], ""))
        by_test[r["test"]] = ([*caps_of, r["capability"]], r["outcome"])
    out += [
        "## Tests behind the table",
        "",
        f"<details><summary>{len(by_test)} test{'s' if len(by_test) != 1 else ''}</summary>",
        "",
    ]
    for test in sorted(by_test):
        caps_of, outcome = by_test[test]
        out.append(f"- `{test}`: {', '.join(caps_of)}: {outcome}")
    out += ["", "</details>", ""]
    return "\n".join(out)


def comparable(text: str) -> list[str]:
    """The lines that must match between the committed and the fresh table."""
    return [ln for ln in text.splitlines() if not ln.startswith(RUN_PREFIX)]


def stale_diff(fresh: str, committed: str, committed_name: str) -> list[str]:
    """A unified diff (empty when the tables agree apart from the ``Run:`` line)."""
    return list(
        difflib.unified_diff(
            comparable(committed), comparable(fresh), committed_name, "fresh table", lineterm=""
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("results", nargs="?", default=str(ROOT / "build" / "compat-results.json"))
    ap.add_argument("-o", "--output", default=str(ROOT / "docs" / "compat.md"))
    ap.add_argument(
        "--require-pass", action="store_true", help="exit 2 unless every cell is pass (CI)"
    )
    ap.add_argument(
        "--check", metavar="DOC", help="exit 3 if DOC differs from the table (the Run: line aside)"
    )
    args = ap.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        print(f"compat_table: {path} not found; run the interop tests first", file=sys.stderr)
        return 1
    try:
        data = json.loads(path.read_text())
        text = render(data)
        cells = cells_of(data)
    except (ResultsError, json.JSONDecodeError) as exc:
        print(f"compat_table: {path}: {exc}", file=sys.stderr)
        return 1
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(f"compat_table: wrote {args.output}")
    rc = 0
    if args.check:
        doc = Path(args.check)
        committed = doc.read_text() if doc.is_file() else ""
        diff = stale_diff(text, committed, str(doc))
        if diff:
            print("\n".join(diff[:80]), file=sys.stderr)
            print(
                f"compat_table: {doc} does not match this run's table: copy {args.output} "
                f"to {doc} and commit it (cp {args.output} {doc})",
                file=sys.stderr,
            )
            rc = 3
        else:
            print(f"compat_table: {doc} matches this run")
    if args.require_pass:
        bad = sorted((k, v) for k, v in cells.items() if v != "pass")
        for (server, client, cap), cell in bad:
            print(f"compat_table: {server} / {client} / {cap}: {cell}", file=sys.stderr)
        if bad:
            print(f"compat_table: {len(bad)} cell(s) are not pass", file=sys.stderr)
            rc = 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
