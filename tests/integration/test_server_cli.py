"""``aiolivekit serve`` / ``aiolivekit token`` as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import aiohttp
import pytest
from livekit import api

from aiolivekit.cli import main
from aiolivekit.server.auth import join_grant, verify_token

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def test_token_command_prints_a_verifiable_jwt(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["token", "--identity", "alice", "--room", "r1", "--name", "Alice",
               "--metadata", "m", "--ttl", "600", "--grant", "room_admin",
               "--grant", "can_publish=false", "--grant", "can_publish_sources=camera",
               "--attributes", '{"a": "1"}'])
    assert rc == 0
    token = capsys.readouterr().out.strip()
    claims = verify_token(token, {"devkey": "secret"}, time.time())
    grant = join_grant(claims)
    assert (claims.identity, claims.name, claims.metadata) == ("alice", "Alice", "m")
    assert claims.attributes == {"a": "1"}
    assert grant.room == "r1" and grant.room_admin and not grant.can_publish
    assert grant.can_publish_sources == ["camera"]
    assert 590 <= claims.expires_at - time.time() <= 610


def test_token_command_rejects_unknown_grant() -> None:
    with pytest.raises(SystemExit):
        main(["token", "--identity", "a", "--room", "r", "--grant", "fly=true"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_subprocess_with_custom_keys() -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiolivekit", "serve", "--dev", "--port", str(port),
        "--keys", "k1:s1-long-enough,k2:s2-long-enough",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert f"ws://127.0.0.1:{port}" in line.decode()
        lk = api.LiveKitAPI(f"http://127.0.0.1:{port}", "k2", "s2-long-enough")
        try:
            room = await lk.room.create_room(api.CreateRoomRequest(name="cli-room"))
            assert room.name == "cli-room"
            rooms = await lk.room.list_rooms(api.ListRoomsRequest())
            assert [r.name for r in rooms.rooms] == ["cli-room"]
        finally:
            await lk.aclose()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 200
            bad = api.AccessToken("devkey", "secret").with_identity("a").with_grants(
                api.VideoGrants(room_join=True, room="r")).to_jwt()
            async with http.get(f"http://127.0.0.1:{port}/rtc/validate",
                                headers={"Authorization": f"Bearer {bad}"}) as r:
                assert r.status == 401 and await r.text() == "invalid API key: devkey"
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0


def test_serve_rejects_bad_keys() -> None:
    out = subprocess.run([sys.executable, "-m", "aiolivekit", "serve", "--keys", "nocolon"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "key:secret" in out.stderr


def test_serve_read_batch_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiolivekit import cli
    from aiolivekit.server import read_batching
    from aiolivekit.server.config import ForwardingOptions

    out = subprocess.run([sys.executable, "-m", "aiolivekit", "serve", "--read-batch-ms", "-1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--read-batch-ms must be between 0 and 100" in out.stderr
    seen: list[float | None] = []

    async def fake_serve(host: str, port: int, keys: dict[str, str],
                         forwarding: ForwardingOptions | None = None, **_: float) -> None:
        seen.append(None if forwarding is None else forwarding.read_batch_window)

    monkeypatch.setattr(cli, "_serve", fake_serve)
    assert cli.main(["serve", "--read-batch-ms", "2.5"]) == 0
    assert cli.main(["serve", "--read-batch-ms", "0"]) == 0
    assert cli.main(["serve"]) == 0  # the default: AIOLIVEKIT_READ_BATCH_MS or 5 ms
    assert seen == [0.0025, 0.0, None]
    monkeypatch.setenv("AIOLIVEKIT_READ_BATCH_MS", "7")
    assert ForwardingOptions().read_batch_window == read_batching.window_seconds(7)


def test_serve_departure_and_ping_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiolivekit import cli

    out = subprocess.run([sys.executable, "-m", "aiolivekit", "serve", "--departure-timeout",
                          "-1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--departure-timeout must be >= 0" in out.stderr
    out = subprocess.run([sys.executable, "-m", "aiolivekit", "serve", "--ping-timeout", "0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--ping-timeout must be > 0" in out.stderr
    seen: list[tuple[float, float]] = []

    async def fake_serve(host: str, port: int, keys: dict[str, str], forwarding: object = None,
                         *, departure_timeout: float, ping_timeout: float) -> None:
        seen.append((departure_timeout, ping_timeout))

    monkeypatch.setattr(cli, "_serve", fake_serve)
    assert cli.main(["serve"]) == 0
    assert cli.main(["serve", "--departure-timeout", "2.5", "--ping-timeout", "6"]) == 0
    assert seen == [(20.0, 15.0), (2.5, 6.0)]
