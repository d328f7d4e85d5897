"""Shared convention for the benchmark scripts in ``bench/`` (run them all with ``bench/run.py``).

Every ``bench/bench_*.py`` defines::

    async def run(ctx: BenchContext) -> list[dict]

returning rows ``{"benchmark": str, "impl": "aiolivekit" | "official", "metric": str,
"value": float, "unit": str}`` (extra keys are kept). ``row(...)`` builds one. A script may
return several rows for the same (benchmark, impl, metric): ``run.py`` reports the median.
Keep each script bounded (``ctx.seconds`` of load per measurement, hard timeouts), and use
``ctx.room()`` for room names so runs never collide.

``ctx`` gives the servers, started once by ``run.py`` inside the private namespace:
``ctx.servers["embedded"]`` (our DevServer) and ``ctx.servers["livekit-server"]`` (the
official binary, absent if not installed), each a :class:`ServerInfo` with ``url`` and
``token(identity, room)``; ``ctx.official_python`` (the official SDK venv's python, or None)
and ``ctx.run_official_py(steps, timeout)`` (the interop driver, see tests/interop/README.md).
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from aiolivekit.testing.servers import ServerInfo  # noqa: E402

__all__ = ["BenchContext", "ServerInfo", "Timer", "row"]

_counter = itertools.count(1)


def row(
    benchmark: str, impl: str, metric: str, value: float, unit: str, **extra: Any
) -> dict[str, Any]:
    """One result row (``impl`` is "aiolivekit" or "official")."""
    if impl not in ("aiolivekit", "official"):
        raise ValueError(f"impl must be 'aiolivekit' or 'official', not {impl!r}")
    return {
        "benchmark": benchmark,
        "impl": impl,
        "metric": metric,
        "value": float(value),
        "unit": unit,
        **extra,
    }


@dataclass
class BenchContext:
    """What a benchmark gets from ``bench/run.py``."""

    servers: dict[str, ServerInfo] = field(default_factory=dict)
    seconds: float = 5.0
    repeat: int = 3
    quick: bool = False
    official_python: str | None = None
    log_lines: list[str] = field(default_factory=list)

    @property
    def embedded(self) -> ServerInfo:
        return self.servers["embedded"]

    @property
    def livekit(self) -> ServerInfo | None:
        return self.servers.get("livekit-server")

    def room(self, prefix: str = "bench") -> str:
        return f"{prefix}-{next(_counter)}-{int(time.time() * 1000) % 100000}"

    def log(self, msg: str) -> None:
        line = f"[bench {time.strftime('%H:%M:%S')}] {msg}"
        self.log_lines.append(line)
        print(line, file=sys.stderr, flush=True)

    async def run_official_py(
        self, steps: list[dict[str, Any]], timeout: float = 60.0, **extra: Any
    ) -> list[dict[str, Any]]:
        """Run the official Python SDK driver (tests/interop/drivers/official_py.py)."""
        from interop.official import run_official_py

        return await run_official_py(steps, timeout, **extra)


class Timer:
    """``with Timer() as t: ...; t.elapsed`` (seconds, monotonic)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
