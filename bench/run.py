#!/usr/bin/env python3
"""Run every ``bench/bench_*.py``, write ``build/bench.json`` and ``docs/bench.md``.

    scripts/netns-run python bench/run.py [--only connect,data] [--seconds 5] [--repeat 3] [--quick]

Must run inside a private network namespace (it re-executes itself under
``scripts/netns-run`` when it is not in one). Starts our DevServer and the official
livekit-server once, hands them to each script's ``async def run(ctx)`` (see
bench/common.py), and reports medians per (benchmark, metric) with the ratio
aiolivekit / official. A script without ``run(ctx)`` is run as a subprocess and each JSON
object it prints becomes rows (numeric keys as metrics, impl "aiolivekit" unless the object
has "impl"). Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import BenchContext  # noqa: E402

from aiolivekit.testing.netns import in_private_netns  # noqa: E402
from aiolivekit.testing.servers import (  # noqa: E402
    LiveKitServerProcess,
    ServerInfo,
    find_livekit_server,
)

SCRIPT_TIMEOUT = 600.0


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        info["nproc_cmd"] = int(
            subprocess.run(["nproc"], capture_output=True, text=True, timeout=5).stdout.strip()
        )
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    return info


def load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _takes_ctx(fn: Any) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(params) >= 1 and len(required) <= 1 and params[0].name in ("ctx", "context")


def rows_from_json(stem: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows from one JSON object printed by a script without ``run(ctx)``.

    Numeric keys become metrics; other scalar keys (e.g. ``"mode": "opus"``) label the
    benchmark so that different configurations are not merged; ``"setup"`` (what the
    benchmark did) is kept on every row instead.
    """
    if {"benchmark", "impl", "metric", "value"} <= obj.keys():
        return [obj]
    impl = str(obj.get("impl", "aiolivekit"))
    labels = [
        f"{k}={v}"
        for k, v in obj.items()
        if k not in ("impl", "benchmark", "unit", "setup") and isinstance(v, (str, bool))
    ]
    bench = str(obj.get("benchmark", stem)) + (f" [{' '.join(labels)}]" if labels else "")
    extra = {"setup": str(obj["setup"])} if obj.get("setup") else {}
    return [
        {"benchmark": bench, "impl": impl, "metric": k, "value": float(v), "unit": "", **extra}
        for k, v in obj.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


async def run_subprocess(path: Path) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SCRIPT_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise TimeoutError(f"{path.name} did not finish in {SCRIPT_TIMEOUT}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{path.name} exited {proc.returncode}: {err.decode()[-2000:]}")
    rows: list[dict[str, Any]] = []
    for line in out.decode().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows += rows_from_json(path.stem, json.loads(line))
            except ValueError:
                pass
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    units: dict[tuple[str, str], str] = {}
    setups: dict[str, list[str]] = {}
    runs: dict[str, list[str]] = {}
    for r in rows:
        run = r.get("run")
        if run and run not in runs.setdefault(r["benchmark"], []):
            runs[r["benchmark"]].append(str(run))
        key = (r["benchmark"], r["metric"])
        groups.setdefault(key, {}).setdefault(r["impl"], []).append(float(r["value"]))
        units[key] = r.get("unit", "")
        text = r.get("setup")
        if text and text not in setups.setdefault(r["benchmark"], []):
            setups[r["benchmark"]].append(str(text))
    out = []
    for (bench, metric), by_impl in sorted(groups.items()):
        ours = statistics.median(by_impl["aiolivekit"]) if by_impl.get("aiolivekit") else None
        theirs = statistics.median(by_impl["official"]) if by_impl.get("official") else None
        ratio = ours / theirs if ours is not None and theirs not in (None, 0) else None
        out.append(
            {
                "benchmark": bench,
                "metric": metric,
                "unit": units[(bench, metric)],
                "aiolivekit": ours,
                "official": theirs,
                "ratio": ratio,
                "samples": {k: len(v) for k, v in by_impl.items()},
                "setup": setups.get(bench, []),
                "runs": runs.get(bench, []),
            }
        )
    return out


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.4g}"


INTRO = HERE / "REPORT_INTRO.md"


def render(
    summary: list[dict[str, Any]],
    mach: dict[str, Any],
    errors: dict[str, str],
    args: argparse.Namespace,
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py` (do not edit by hand; the text between the header and",
        "the tables is `bench/REPORT_INTRO.md`, each benchmark's setup line comes from its",
        "script). Medians over the samples each script reported; ratio = aiolivekit /",
        "official (for times lower is better, for rates higher is better).",
        "",
        f"Machine: {mach.get('cpu', '?')}, {mach.get('nproc')} CPUs (nproc), "
        f"{mach.get('memory_gib', '?')} GiB RAM, Linux {mach.get('kernel')}, "
        f"Python {mach.get('python')}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"--seconds {args.seconds} --repeat {args.repeat}{' --quick' if args.quick else ''}"
        f"{' (--only ' + args.only + ')' if args.only and not args.merge else ''}. "
        f"Load average (1 min, the whole machine) at the start "
        f"{getattr(args, 'loadavg_start', '?')}, at the end {mach.get('loadavg_1min', '?')}: "
        f"more than about 1 means other work shared the 2 CPUs.",
        "",
    ]
    all_runs = {r for s in summary for r in s.get("runs", [])}
    if len(all_runs) > 1:
        lines += ["Rows of several runs are merged here (`--merge`): each table names its "
                  "run(s).", ""]
    if args.quick or any("--quick" in r for r in all_runs):
        lines += ["**Smoke run (`--quick`): small counts and short windows; these numbers "
                  "only show that the benchmarks work, they are not results.**", ""]
    if INTRO.is_file():
        lines += [INTRO.read_text().strip(), ""]
    by_bench: dict[str, list[dict[str, Any]]] = {}
    for s in summary:
        by_bench.setdefault(s["benchmark"], []).append(s)
    for bench, items in by_bench.items():
        lines += [f"### {bench}", ""]
        setups = [t for s in items[:1] for t in s.get("setup", [])]
        side_by_side = any("official" in s["samples"] for s in items)
        if setups:
            lines += [f"Setup: {t}" for t in setups] + [""]
        if len(all_runs) > 1:
            lines += [f"Run: {r}" for r in items[0].get("runs", [])] + [""]
        if not side_by_side:
            lines += ["aiolivekit only (no side-by-side comparison).", ""]
        lines += [
            "| metric | unit | aiolivekit | official | ratio | samples |",
            "|---|---|---|---|---|---|",
        ]
        for s in items:
            samples = ", ".join(f"{k} {v}" for k, v in sorted(s["samples"].items()))
            ratio = f"{s['ratio']:.2f}" if s["ratio"] is not None else "–"
            lines.append(
                f"| {s['metric']} | {s['unit']} | {fmt(s['aiolivekit'])} "
                f"| {fmt(s['official'])} | {ratio} | {samples} |"
            )
        lines.append("")
    if errors:
        lines += ["## Scripts that failed", ""]
        lines += [
            f"- `{name}`: {why.splitlines()[-1] if why else '?'}"
            for name, why in sorted(errors.items())
        ]
    lines.append("")
    return "\n".join(lines)


async def start_servers(stack: list[Any]) -> dict[str, ServerInfo]:
    servers: dict[str, ServerInfo] = {}
    try:
        from aiolivekit.server import DevServer

        dev = DevServer(port=0)
        await dev.__aenter__()
        stack.append(dev)
        servers["embedded"] = ServerInfo("embedded", dev.url, dev.api_key, dev.api_secret)
    except Exception as e:  # noqa: BLE001
        print(f"bench: DevServer unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    binary = find_livekit_server()
    if binary:
        log = tempfile.NamedTemporaryFile(prefix="bench-livekit-", suffix=".log", delete=False)
        log.close()
        lk = LiveKitServerProcess(binary, log_path=log.name)
        await lk.start()
        stack.append(lk)
        servers["livekit-server"] = lk.info()
    else:
        print("bench: livekit-server binary not found", file=sys.stderr)
    return servers


async def main_async(args: argparse.Namespace) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        scripts = [
            s for s in scripts if s.stem in wanted or s.stem.removeprefix("bench_") in wanted
        ]
    stack: list[Any] = []
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    args.loadavg_start = round(os.getloadavg()[0], 2)
    run_label = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, --seconds "
                 f"{args.seconds} --repeat {args.repeat}{' --quick' if args.quick else ''}, "
                 f"load average at the start {args.loadavg_start}")
    official = Path.home() / ".cache" / "aiolivekit" / "official-venv" / "bin" / "python"
    try:
        servers = await start_servers(stack)
        ctx = BenchContext(
            servers=servers,
            seconds=args.seconds,
            repeat=args.repeat,
            quick=args.quick,
            official_python=str(official) if official.is_file() else None,
        )
        for path in scripts:
            ctx.log(f"running {path.name}")
            t0 = time.monotonic()
            try:
                mod = load(path)
                fn = getattr(mod, "run", None)
                if fn is not None and _takes_ctx(fn):
                    got = await asyncio.wait_for(fn(ctx), SCRIPT_TIMEOUT)
                else:
                    got = await run_subprocess(path)
                got = [dict(r) for r in got or []]
                for r in got:
                    r.setdefault("script", path.name)
                    r.setdefault("run", run_label)
                rows += got
                ctx.log(f"{path.name}: {len(got)} rows in {time.monotonic() - t0:.1f}s")
            except Exception:  # noqa: BLE001 - one broken script must not stop the others
                errors[path.name] = traceback.format_exc(limit=3)
                ctx.log(f"{path.name} FAILED:\n{errors[path.name]}")
    finally:
        for obj in reversed(stack):
            try:
                if hasattr(obj, "__aexit__"):
                    await asyncio.wait_for(obj.__aexit__(None, None, None), 20)
                else:
                    await asyncio.wait_for(obj.stop(), 20)
            except Exception as exc:  # noqa: BLE001 - the report is still written
                print(f"bench: stopping {type(obj).__name__} failed: {exc!r}", file=sys.stderr)
    write_reports(args, scripts, rows, errors)
    return 0 if not errors else 1


def write_reports(args: argparse.Namespace, scripts: list[Path], rows: list[dict[str, Any]],
                  errors: dict[str, str]) -> None:
    """Write build/bench.json and the markdown report (with ``--merge``: keep the rows of
    the scripts not run this time)."""
    mach = machine()
    out_json = ROOT / "build" / "bench.json"
    if args.merge and out_json.is_file():
        # keep the earlier rows of the scripts not run this time
        ran = {p.name for p in scripts}
        previous = json.loads(out_json.read_text())
        rows = [r for r in previous.get("rows", []) if r.get("script") not in ran] + rows
        for name, err in previous.get("errors", {}).items():
            if name not in ran:
                errors.setdefault(name, err)
    summary = summarize(rows)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps({"machine": mach, "rows": rows, "summary": summary, "errors": errors}, indent=1)
    )
    out_md = Path(args.output)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(render(summary, mach, errors, args))
    print(f"bench: {len(rows)} rows, {len(errors)} failed scripts -> {out_json}, {out_md}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Run the aiolivekit benchmarks.")
    ap.add_argument("--only", help="comma-separated script names (bench_x or x)")
    ap.add_argument("--seconds", type=float, default=5.0, help="load duration per measurement")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per measurement")
    ap.add_argument("--quick", action="store_true", help="smaller loads (smoke run)")
    ap.add_argument("-o", "--output", default=str(ROOT / "docs" / "bench.md"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of build/bench.json from scripts not run this time")
    args = ap.parse_args()
    if not in_private_netns():
        netns_run = ROOT / "scripts" / "netns-run"
        os.execv(str(netns_run), [str(netns_run), sys.executable, *sys.argv])
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
