"""``aiolivekit serve`` / ``aiolivekit token`` as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from typing import Any

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

    out = subprocess.run([sys.executable, "-m", "aiolivekit", "serve", "--dev",
                          "--read-batch-ms", "-1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--read-batch-ms must be between 0 and 100" in out.stderr
    seen: list[float | None] = []

    async def fake_serve(host: str, port: int, keys: dict[str, str],
                         forwarding: ForwardingOptions | None = None, **_: float) -> None:
        seen.append(None if forwarding is None else forwarding.read_batch_window)

    monkeypatch.setattr(cli, "_serve", fake_serve)
    assert cli.main(["serve", "--dev", "--read-batch-ms", "2.5"]) == 0
    assert cli.main(["serve", "--dev", "--read-batch-ms", "0"]) == 0
    assert cli.main(["serve", "--dev"]) == 0  # the default: AIOLIVEKIT_READ_BATCH_MS or 5 ms
    assert seen == [0.0025, 0.0, None]
    monkeypatch.setenv("AIOLIVEKIT_READ_BATCH_MS", "7")
    assert ForwardingOptions().read_batch_window == read_batching.window_seconds(7)


def test_serve_departure_and_ping_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiolivekit import cli

    out = subprocess.run([sys.executable, "-m", "aiolivekit", "serve", "--dev",
                          "--departure-timeout", "-1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--departure-timeout must be >= 0" in out.stderr
    out = subprocess.run([sys.executable, "-m", "aiolivekit", "serve", "--dev", "--ping-timeout", "0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--ping-timeout must be > 0" in out.stderr
    seen: list[tuple[float, float, bool | None]] = []

    async def fake_serve(host: str, port: int, keys: dict[str, str], forwarding: object = None,
                         *, departure_timeout: float, ping_timeout: float,
                         page: bool | None = None) -> None:
        seen.append((departure_timeout, ping_timeout, page))

    monkeypatch.setattr(cli, "_serve", fake_serve)
    assert cli.main(["serve", "--dev"]) == 0
    assert cli.main(["serve", "--dev", "--departure-timeout", "2.5", "--ping-timeout", "6"]) == 0
    assert cli.main(["serve", "--dev", "--no-page"]) == 0  # the room page (docs/page.md)
    assert seen == [(20.0, 15.0, None), (2.5, 6.0, None), (20.0, 15.0, False)]


# ---------------------------------------------------------------- safe defaults (issue 14)

LONG = "s" * 32
_KEY_ENV = ("LIVEKIT_KEYS", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


def _env_without_keys() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _KEY_ENV}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, dict[str, str]]]:
    """cli._serve replaced: what ``serve`` would have started (host, port, keys)."""
    from aiolivekit import cli

    for name in _KEY_ENV:
        monkeypatch.delenv(name, raising=False)
    seen: list[tuple[str, int, dict[str, str]]] = []

    async def fake_serve(host: str, port: int, keys: dict[str, str],
                         forwarding: object = None, **_: float) -> None:
        seen.append((host, port, keys))

    monkeypatch.setattr(cli, "_serve", fake_serve)
    return seen


def test_serve_refuses_to_start_without_keys() -> None:
    out = subprocess.run([sys.executable, "-m", "aiolivekit", "serve", "--port", "0"],
                         capture_output=True, text=True, timeout=30, env=_env_without_keys())
    assert out.returncode == 2
    assert "no API keys" in out.stderr and "--dev" in out.stderr
    assert "listening" not in out.stdout


def test_serve_dev_refuses_a_public_bind(served: list[Any],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--dev", "--bind", "0.0.0.0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "only served on loopback" in err and "--insecure-dev-keys" in err
    assert served == []
    assert main(["serve", "--dev", "--bind", "0.0.0.0", "--insecure-dev-keys"]) == 0
    assert "WARNING: the public development key devkey is served on 0.0.0.0" in \
        capsys.readouterr().err
    assert main(["serve", "--dev", "--bind", "::1"]) == 0  # loopback: fine
    assert main(["serve", "--dev", "--bind", "0.0.0.0", "--keys", f"k:{LONG}"]) == 0
    assert served == [("0.0.0.0", 7880, {"devkey": "secret"}), ("::1", 7880, {"devkey": "secret"}),
                      ("0.0.0.0", 7880, {"k": LONG})]


def test_serve_reads_keys_like_livekit_server(served: list[Any], tmp_path: Any,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", "apikey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", LONG)
    assert main(["serve"]) == 0
    monkeypatch.setenv("LIVEKIT_KEYS", f"k1: {LONG}1\nk2: {LONG}2")  # livekit-server's format
    assert main(["serve"]) == 0
    key_file = tmp_path / "keys.yaml"
    key_file.write_text(f"# comment\nfile-key: \"{LONG}f\"\n")
    key_file.chmod(0o600)
    assert main(["serve", "--key-file", str(key_file)]) == 0
    assert main(["serve", "--keys", f"a:{LONG}a,b:{LONG}b", "--key-file", str(key_file)]) == 0
    assert [keys for _, _, keys in served] == [
        {"apikey": LONG}, {"k1": LONG + "1", "k2": LONG + "2"}, {"file-key": LONG + "f"},
        {"a": LONG + "a", "b": LONG + "b"}]
    assert "WARNING" not in capsys.readouterr().err
    key_file.chmod(0o644)  # readable by others: refused, as livekit-server does
    with pytest.raises(SystemExit):
        main(["serve", "--key-file", str(key_file)])
    assert "accessible by others" in capsys.readouterr().err
    monkeypatch.delenv("LIVEKIT_KEYS")
    monkeypatch.delenv("LIVEKIT_API_SECRET")
    with pytest.raises(SystemExit):
        main(["serve"])
    assert "must be set together" in capsys.readouterr().err


def test_serve_warns_on_short_secrets(served: list[Any],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--keys", f"short:abc,long:{LONG}"]) == 0
    err = capsys.readouterr().err
    assert "secret of API key 'short' is shorter than 32 bytes" in err
    assert "'long'" not in err


@pytest.mark.skipif(os.environ.get("AIOLIVEKIT_NETNS") != "1",
                    reason="binds 0.0.0.0: only inside the private namespace (scripts/netns-run)")
async def test_serve_prints_the_address_actually_bound() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiolivekit", "serve", "--bind", "0.0.0.0", "--port", "0",
        "--keys", f"k:{LONG}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=_env_without_keys())
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = re.search(r"listening on ws://0\.0\.0\.0:(\d+) ", line)
        assert match, line
        port = int(match.group(1))
        assert port != 0
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 200
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
