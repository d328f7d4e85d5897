"""Test servers: tokens, and the official livekit-server binary run as a subprocess.

``LiveKitServerProcess`` starts ``livekit-server`` on loopback with free ports and
``rtc.enable_loopback_candidate`` so it can be used inside a private network namespace
(see ``scripts/netns-run``). The binary is looked up in ``$LIVEKIT_SERVER_BIN``, then
``$AIOLIVEKIT_CACHE/bin/server`` (default ``~/.cache/aiolivekit``, where
``scripts/install-deps`` builds it), then ``livekit-server`` on PATH.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..server.auth import make_token

__all__ = ["LiveKitServerProcess", "ServerInfo", "find_livekit_server", "free_port", "make_token"]

DEFAULT_KEY = "devkey"
DEFAULT_SECRET = "secret"


@dataclass
class ServerInfo:
    """What a test needs to reach a LiveKit server."""

    kind: str
    url: str
    api_key: str = DEFAULT_KEY
    api_secret: str = DEFAULT_SECRET

    @property
    def http_url(self) -> str:
        return self.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)

    def token(self, identity: str, room: str = "test-room", **kw: Any) -> str:
        return make_token(self.api_key, self.api_secret, identity, room, **kw)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_livekit_server() -> str | None:
    env = os.environ.get("LIVEKIT_SERVER_BIN")
    if env and Path(env).is_file():
        return env
    cache = os.environ.get("AIOLIVEKIT_CACHE") or Path.home() / ".cache" / "aiolivekit"
    cached = Path(cache) / "bin" / "server"
    if cached.is_file():
        return str(cached)
    return shutil.which("livekit-server")


class LiveKitServerProcess:
    """The official livekit-server, started with dev keys on loopback ports."""

    def __init__(self, binary: str, *, api_key: str = DEFAULT_KEY, api_secret: str = DEFAULT_SECRET,
                 log_path: str | None = None, node_ip: str | None = None,
                 ice_tcp: bool = True, ice_ips: tuple[str, ...] | None = None) -> None:
        """``node_ip``: the address announced in every ICE candidate (a ``UdpRelay``'s
        front, ``docs/faults.md``); ``ice_tcp=False`` turns ICE/TCP off (it would listen
        on every address, bypassing such a relay); ``ice_ips``: the only networks ICE
        gathers on (``rtc.ips.includes``). With ``node_ip`` it defaults to
        ``("127.0.0.1/32",)``: on every local address (loopback and the namespace's
        veth) the UDP port is bound, each becomes the one candidate ``node_ip:port``, and
        which socket backs it is a coin toss per session; a relay forwards to
        127.0.0.1, and when the veth socket won, the server dropped the relayed checks
        (pion's ``udp_mux``: "Dropping packet from 127.0.0.3") and the join failed."""
        self.binary = binary
        self.node_ip = node_ip
        if ice_ips is None:
            ice_ips = ("127.0.0.1/32",) if node_ip else ()
        self.ice_ips = ice_ips
        self.ice_tcp = ice_tcp
        self.api_key = api_key
        self.api_secret = api_secret
        self.port = free_port()
        self.tcp_port = free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def info(self) -> ServerInfo:
        return ServerInfo("livekit-server", self.url, self.api_key, self.api_secret)

    def config_body(self) -> str:
        return "\n".join([
            f"port: {self.port}",
            "bind_addresses: [127.0.0.1]",
            "rtc:",
            f"  tcp_port: {self.tcp_port if self.ice_tcp else 0}",
            f"  udp_port: {self.udp_port}",
            "  use_external_ip: false",
            *([f"  node_ip: {self.node_ip}"] if self.node_ip else []),
            *(["  ips:", f"    includes: [{', '.join(self.ice_ips)}]"] if self.ice_ips else []),
            "  enable_loopback_candidate: true",
            "keys:",
            f"  {self.api_key}: {self.api_secret}",
            "logging:",
            "  level: info",
            "",
        ])

    async def start(self, timeout: float = 20.0) -> None:
        # the log file is closed in stop()
        self._log = (await asyncio.to_thread(open, self.log_path, "wb") if self.log_path
                     else subprocess.DEVNULL)
        self._proc = await asyncio.to_thread(
            subprocess.Popen,
            [self.binary, "--config-body", self.config_body()],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"livekit-server exited with {self._proc.returncode}")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), timeout=1.0)
                writer.close()
                return
            except (OSError, asyncio.TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    await self.stop()
                    raise RuntimeError(
                        "livekit-server did not start listening in time") from None
                await asyncio.sleep(0.1)

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    async def stop(self, grace: float = 2.0) -> None:
        """SIGTERM (livekit-server drains: it waits for its rooms to empty); after
        ``grace`` s a second SIGTERM (it closes the rooms at once); SIGKILL 8 s later."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            for signal_again, timeout in ((True, grace), (False, 8.0)):
                try:
                    await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=timeout)
                    break
                except asyncio.TimeoutError:
                    if signal_again:
                        proc.terminate()
            else:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    async def __aenter__(self) -> LiveKitServerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
