"""Run the official LiveKit clients as subprocesses driven by a JSON step script.

Three drivers share one step language (see ``tests/interop/README.md``):

* ``drivers/official_py.py``    the official Python SDK ``livekit`` 1.2.1 (own venv)
* ``drivers/node_driver.mjs``   ``@livekit/rtc-node`` 1.1.0
* ``drivers/browser_driver.mjs`` ``livekit-client`` 2.23.0 in Debian Chromium (playwright-core)

Each driver prints one JSON object per line: step results (``{"op": ..., "ok": ...}``) and
events (``{"event": ...}``), ending with ``{"event": "done"}``. This module starts them with a
hard timeout, parses the lines, keeps stderr for failure messages, and never hangs::

    events = await run_official_py([{"op": "connect", "url": url, "token": tok}, ...])
    assert step(events, "connect")["ok"]

For tests that need to act while a driver runs, use ``start_official_py(...)`` (a
:class:`DriverProcess`): ``await proc.wait_for(op="connect")``, ``proc.signal("go")`` (resolves
a ``wait_signal`` step), ``events = await proc.finish()``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiolivekit.testing.netns import in_private_netns

HERE = Path(__file__).resolve().parent
DRIVERS = HERE / "drivers"
JS_DIR = HERE / "js"
CACHE = Path(os.environ.get("AIOLIVEKIT_CACHE") or Path.home() / ".cache" / "aiolivekit")
OFFICIAL_VENV = Path(os.environ.get("AIOLIVEKIT_OFFICIAL_VENV") or CACHE / "official-venv")
OFFICIAL_PYTHON = OFFICIAL_VENV / "bin" / "python"
CHROMIUM = os.environ.get("AIOLIVEKIT_CHROMIUM", "/usr/bin/chromium")

Step = dict[str, Any]
Event = dict[str, Any]

__all__ = [
    "DRIVER_KINDS",
    "DriverError",
    "DriverProcess",
    "browser_available",
    "events_of",
    "node_available",
    "official_available",
    "official_py_available",
    "ready_steps",
    "run_browser",
    "run_driver",
    "run_node",
    "run_official_py",
    "run_together",
    "start_browser",
    "start_driver",
    "start_node",
    "start_official_py",
    "step",
    "steps",
]

DRIVER_KINDS = ("official_py", "node", "browser")


class DriverError(AssertionError):
    """A driver failed a step, crashed, or ran out of time (message has its output)."""


# ---- availability (reasons for pytest.skip) ----------------------------------------------


def official_py_available() -> str | None:
    """``None`` when the official Python SDK venv is usable, else the reason it is not."""
    if not OFFICIAL_PYTHON.is_file():
        return f"official SDK venv missing ({OFFICIAL_PYTHON}); run scripts/install-deps"
    if not list(OFFICIAL_VENV.glob("lib/python*/site-packages/livekit/rtc/__init__.py")):
        return f"livekit (official SDK) not installed in {OFFICIAL_VENV}"
    return None


def _node_modules_reason(*packages: str) -> str | None:
    if shutil.which("node") is None:
        return "node not installed"
    for pkg in packages:
        if not (JS_DIR / "node_modules" / pkg / "package.json").is_file():
            return f"npm package {pkg} missing in {JS_DIR}; run scripts/install-deps"
    return None


def node_available() -> str | None:
    return _node_modules_reason("@livekit/rtc-node")


def browser_available() -> str | None:
    reason = _node_modules_reason("livekit-client", "playwright-core")
    if reason:
        return reason
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} missing (apt-get install chromium; scripts/install-deps does)"
    return None


def official_available(kind: str) -> str | None:
    """Skip reason for driver ``kind`` (``official_py``/``node``/``browser``), or ``None``.

    All three use libwebrtc, which needs a private network namespace with a veth pair.
    """
    reason = {
        "official_py": official_py_available,
        "node": node_available,
        "browser": browser_available,
    }[kind]()
    if reason:
        return reason
    if not in_private_netns():
        return "official clients run only inside a private network namespace (scripts/netns-run)"
    return None


# ---- result helpers -------------------------------------------------------------------------


def steps(events: Iterable[Event], op: str) -> list[Event]:
    return [e for e in events if e.get("op") == op]


def step(events: Iterable[Event], op: str, index: int = 0) -> Event:
    """The ``index``-th result of step ``op`` (raises DriverError if missing)."""
    found = steps(events, op)
    if len(found) <= index:
        raise DriverError(f"no result #{index} for step {op!r} in {list(events)!r}")
    return found[index]


def events_of(events: Iterable[Event], name: str) -> list[Event]:
    return [e for e in events if e.get("event") == name]


# ---- processes --------------------------------------------------------------------------------


class DriverProcess:
    """One running driver: collects its JSON lines as they arrive."""

    def __init__(
        self,
        kind: str,
        argv: list[str],
        script: dict[str, Any],
        timeout: float,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.kind = kind
        self.argv = argv
        self.script = script
        self.timeout = timeout
        self.env = env
        self.cwd = cwd
        self.events: list[Event] = []
        self.stderr = b""
        self.noise: list[str] = []
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._err_reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._loop_deadline = 0.0

    async def start(self) -> DriverProcess:
        """Spawn the driver (idempotent) and send it the script."""
        if self._proc is not None:
            return self
        env = dict(os.environ)
        env.update(self.env or {})
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(self.cwd) if self.cwd else None,
            limit=16 * 1024 * 1024,
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(self.script) + "\n").encode())
        await self._proc.stdin.drain()
        self._loop_deadline = asyncio.get_running_loop().time() + self.timeout
        self._reader = asyncio.ensure_future(self._read_stdout())
        self._err_reader = asyncio.ensure_future(self._read_stderr())
        return self

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                self.noise.append(line)
                continue
            if isinstance(obj, dict) and ("op" in obj or "event" in obj):
                self.events.append(obj)
                self._changed.set()
            else:
                self.noise.append(line)
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        chunks = []
        size = 0
        async for raw in self._proc.stderr:
            if size < 1_000_000:
                chunks.append(raw)
                size += len(raw)
        self.stderr = b"".join(chunks)

    def signal(self, name: str = "go") -> None:
        """Resolve the driver's pending ``wait_signal`` step named ``name``."""
        if self._proc is None or self._proc.stdin is None or self._proc.stdin.is_closing():
            return
        self._proc.stdin.write((name + "\n").encode())

    def _match(
        self, pred: Callable[[Event], bool] | None, op: str | None, event: str | None
    ) -> Event | None:
        for e in self.events:
            if op is not None and e.get("op") != op:
                continue
            if event is not None and e.get("event") != event:
                continue
            if pred is not None and not pred(e):
                continue
            return e
        return None

    async def wait_for(
        self,
        pred: Callable[[Event], bool] | None = None,
        *,
        op: str | None = None,
        event: str | None = None,
        timeout: float = 30.0,
    ) -> Event:
        """First line that matches; raises DriverError on timeout or driver exit."""
        loop = asyncio.get_running_loop()
        deadline = min(loop.time() + timeout, self._loop_deadline)
        while True:
            found = self._match(pred, op, event)
            if found is not None:
                if op is not None and found.get("ok") is False:
                    raise DriverError(self.describe(f"step {op!r} failed: {found.get('error')}"))
                return found
            if self._reader is not None and self._reader.done():
                raise DriverError(self.describe(f"driver exited before op={op} event={event}"))
            left = deadline - loop.time()
            if left <= 0:
                raise DriverError(self.describe(f"timed out waiting for op={op} event={event}"))
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def finish(self, *, check: bool = True) -> list[Event]:
        """Wait for the driver to end by itself (killing it at the hard timeout)."""
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        left = max(0.1, self._loop_deadline - loop.time())
        try:
            await asyncio.wait_for(self._proc.wait(), left)
        except asyncio.TimeoutError:
            self.kill()
            await self._proc.wait()
            self.noise.append(f"<killed after {self.timeout}s hard timeout>")
        self.returncode = self._proc.returncode
        if self._reader:
            await asyncio.wait_for(self._reader, 5)
        if self._err_reader:
            try:
                await asyncio.wait_for(self._err_reader, 5)
            except asyncio.TimeoutError:
                self._err_reader.cancel()
        if check:
            self.check()
        return self.events

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            try:
                self._proc.kill()
            except ProcessLookupError:
                pass

    def check(self) -> None:
        """Raise DriverError unless the script ran to ``done`` with every step ok."""
        failed = [e for e in self.events if e.get("ok") is False]
        done = events_of(self.events, "done")
        if failed or not done:
            why = f"step failed: {failed[0]}" if failed else "driver did not finish"
            raise DriverError(self.describe(why))

    def describe(self, why: str) -> str:
        lines = "\n".join(json.dumps(e)[:600] for e in self.events[-40:])
        err = self.stderr.decode(errors="replace")[-4000:]
        noise = "\n".join(self.noise[-20:])[-3000:]
        return (
            f"{self.kind} driver: {why}\n--- events ---\n{lines}\n--- other stdout ---\n"
            f"{noise}\n--- stderr (tail) ---\n{err}"
        )

    async def __aenter__(self) -> DriverProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            if exc[0] is not None:
                self.kill()
            await self.finish(check=False)


def _script(steps_: list[Step], timeout: float, extra: dict[str, Any] | None) -> dict[str, Any]:
    # the driver's own deadline fires a little before our hard kill, so it can say so
    script: dict[str, Any] = {"deadline": max(1.0, timeout - 3.0), "steps": steps_}
    script.update(extra or {})
    return script


def start_driver(
    kind: str, steps_: list[Step], timeout: float = 60.0, **extra: Any
) -> DriverProcess:
    """A not-yet-started driver (use ``async with`` or ``await proc.start()``)."""
    script = _script(steps_, timeout, extra)
    if kind == "official_py":
        argv = [str(OFFICIAL_PYTHON), str(DRIVERS / "official_py.py"), "-"]
        env = {"PYTHONUNBUFFERED": "1"}
        return DriverProcess(kind, argv, script, timeout, env)
    if kind == "node":
        argv = ["node", str(DRIVERS / "node_driver.mjs"), "-"]
        return DriverProcess(kind, argv, script, timeout, {"NODE_ENV": "production"}, JS_DIR)
    if kind == "browser":
        argv = ["node", str(DRIVERS / "browser_driver.mjs"), "-"]
        return DriverProcess(kind, argv, script, timeout, {"AIOLIVEKIT_CHROMIUM": CHROMIUM}, JS_DIR)
    if kind == "page":  # the room page of `aiolivekit serve` (extra: origin=<http URL>)
        argv = ["node", str(DRIVERS / "page_driver.mjs"), "-"]
        return DriverProcess(kind, argv, script, timeout, {"AIOLIVEKIT_CHROMIUM": CHROMIUM}, JS_DIR)
    raise ValueError(f"unknown driver kind {kind!r}")


def start_official_py(steps_: list[Step], timeout: float = 60.0, **extra: Any) -> DriverProcess:
    return start_driver("official_py", steps_, timeout, **extra)


def start_node(steps_: list[Step], timeout: float = 60.0, **extra: Any) -> DriverProcess:
    return start_driver("node", steps_, timeout, **extra)


def start_browser(steps_: list[Step], timeout: float = 90.0, **extra: Any) -> DriverProcess:
    return start_driver("browser", steps_, timeout, **extra)


async def run_driver(
    kind: str, steps_: list[Step], timeout: float = 60.0, *, check: bool = True, **extra: Any
) -> list[Event]:
    """Run a driver to completion; with ``check`` raise DriverError unless every step passed."""
    proc = start_driver(kind, steps_, timeout, **extra)
    await proc.start()
    return await proc.finish(check=check)


async def run_official_py(
    steps_: list[Step], timeout: float = 60.0, *, check: bool = True, **extra: Any
) -> list[Event]:
    return await run_driver("official_py", steps_, timeout, check=check, **extra)


async def run_node(
    steps_: list[Step], timeout: float = 60.0, *, check: bool = True, **extra: Any
) -> list[Event]:
    return await run_driver("node", steps_, timeout, check=check, **extra)


async def run_browser(
    steps_: list[Step], timeout: float = 90.0, *, check: bool = True, **extra: Any
) -> list[Event]:
    return await run_driver("browser", steps_, timeout, check=check, **extra)


def ready_steps(*others: str, timeout: float = 30.0) -> list[Step]:
    """Steps for a barrier: wait until every ``other`` is seen, then wait for the "go" signal.

    Use with :func:`run_together`, which signals "go" once every driver printed its
    ``ready`` step. (livekit-server announces a newcomer to earlier participants only after
    a few seconds, so a participant seeing the other is not enough on its own.)
    """
    out: list[Step] = [
        {"op": "wait_participant", "identity": o, "timeout": timeout} for o in others
    ]
    out.append({"op": "sleep", "seconds": 0, "label": "ready"})
    out.append({"op": "wait_signal", "name": "go", "timeout": timeout + 30})
    return out


async def run_together(
    *procs: DriverProcess,
    barrier: str | None = "ready",
    barrier_timeout: float = 60.0,
    check: bool = True,
) -> list[list[Event]]:
    """Start drivers, release them together at ``barrier``, wait for all; events per driver."""
    try:
        for p in procs:
            await p.start()
        if barrier is not None:
            await asyncio.gather(
                *(
                    p.wait_for(lambda e: e.get("label") == barrier, timeout=barrier_timeout)
                    for p in procs
                )
            )
            for p in procs:
                p.signal("go")
        results = await asyncio.gather(*(p.finish(check=False) for p in procs))
    finally:
        for p in procs:
            p.kill()
    if check:
        for p in procs:
            p.check()
    return list(results)


if __name__ == "__main__":  # tiny manual runner: python official.py KIND '<json steps>'
    print(
        json.dumps(
            asyncio.run(run_driver(sys.argv[1], json.loads(sys.argv[2]), check=False)), indent=1
        )
    )
