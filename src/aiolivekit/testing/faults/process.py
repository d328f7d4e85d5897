"""Freeze, thaw and restart a server subprocess (``aiolivekit serve`` or livekit-server).

:class:`ProcessControl` starts a command, waits until its TCP port accepts, and offers
:meth:`~ProcessControl.pause` (SIGSTOP: the kernel still completes TCP handshakes and queues
datagrams, nothing answers), :meth:`~ProcessControl.resume` (SIGCONT) and
:meth:`~ProcessControl.restart` (stop, then the same command again: same ports, so clients
can reconnect to the same URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING

from .addresses import check_address

if TYPE_CHECKING:
    from ..servers import LiveKitServerProcess

__all__ = ["ProcessControl"]

logger = logging.getLogger(__name__)

MAX_PAUSE = 600.0


class ProcessControl:
    """One server subprocess; ``ready`` is the TCP address that accepts once it is up."""

    def __init__(self, argv: Sequence[str], ready: tuple[str, int], *,
                 env: Mapping[str, str] | None = None, log_path: str | None = None,
                 start_timeout: float = 20.0) -> None:
        if not argv:
            raise ValueError("argv is empty")
        self.argv = list(argv)
        self.ready = (check_address(ready[0], "ready address"), int(ready[1]))
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.paused = False
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # ------------------------------------------------------------------ factories

    @classmethod
    def aiolivekit_serve(cls, port: int, *, host: str = "127.0.0.1",
                         extra_args: Sequence[str] = (), **kw: object) -> ProcessControl:
        """``python -m aiolivekit serve --dev`` on ``host:port`` (dev keys; a non-loopback
        ``host``, such as the test namespace's address, adds ``--insecure-dev-keys``)."""
        from ...server.keys import is_loopback_bind

        insecure = [] if is_loopback_bind(host) else ["--insecure-dev-keys"]
        argv = [sys.executable, "-m", "aiolivekit", "serve", "--dev", *insecure, "--bind",
                host, "--port", str(port), *extra_args]
        return cls(argv, (host, port), **kw)  # type: ignore[arg-type]

    @classmethod
    def livekit_server(cls, server: LiveKitServerProcess, **kw: object) -> ProcessControl:
        """The livekit-server that ``server`` describes (its binary, ports and config body).

        Use it instead of ``server.start()``: ``server.url`` / ``server.info()`` stay valid,
        and a restart reuses the same ports.
        """
        argv = [server.binary, "--config-body", server.config_body()]
        return cls(argv, ("127.0.0.1", server.port), **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> ProcessControl:
        if self.running:
            raise RuntimeError("already running")
        if self.log_path and self._log is None:
            self._log = await asyncio.to_thread(open, self.log_path, "ab")
        out = self._log if self._log is not None else subprocess.DEVNULL
        env = None if self.env is None else {**os.environ, **self.env}
        self._proc = await asyncio.to_thread(
            subprocess.Popen, self.argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.paused = False
        self.starts += 1
        await self._wait_ready()
        logger.debug("started %s (pid %s)", self.argv[0], self.pid)
        return self

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        attempts = int(self.start_timeout / 0.1) + 10
        for _ in range(attempts):
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc is not None else None
                raise RuntimeError(f"{self.argv[0]} exited with {code} before listening")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(*self.ready), 1.0)
                writer.close()
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
                return
            except (OSError, asyncio.TimeoutError):
                if loop.time() > deadline:
                    break
                await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(f"{self.argv[0]} did not listen on {self.ready} within "
                           f"{self.start_timeout} s")

    async def stop(self, timeout: float = 10.0, *, kill: bool = False) -> None:
        """SIGTERM (after a SIGCONT if paused), SIGKILL after ``timeout``; ``kill=True``:
        SIGKILL at once (a crash: the server says goodbye to nobody)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                if kill:
                    proc.kill()
                else:
                    proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 5.0)
        self.paused = False

    async def restart(self, down_for: float = 0.0, *, kill: bool = False) -> None:
        """Stop (``kill=True``: SIGKILL), stay down ``down_for`` seconds (at most 600),
        start the same command again."""
        if not 0 <= down_for <= MAX_PAUSE:
            raise ValueError("down_for must be within 0..600 s")
        await self.stop(kill=kill)
        await asyncio.sleep(down_for)
        await self.start()

    async def close(self) -> None:
        await self.stop()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    async def __aenter__(self) -> ProcessControl:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ freeze / thaw

    def pause(self) -> None:
        """SIGSTOP the process."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT the process."""
        self._signal(signal.SIGCONT)
        self.paused = False

    async def pause_for(self, seconds: float) -> None:
        """Frozen for ``seconds`` (at most 600), then resumed (also on cancellation)."""
        if not 0 <= seconds <= MAX_PAUSE:
            raise ValueError("a pause lasts 0..600 s")
        async with self.frozen():
            await asyncio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def frozen(self) -> AsyncIterator[None]:
        """``async with control.frozen():`` the process is stopped inside the block."""
        self.pause()
        try:
            yield
        finally:
            if self.running:
                self.resume()

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self.argv[0]} is not running")
        proc.send_signal(sig)
