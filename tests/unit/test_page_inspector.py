"""The room inspector's snapshots (sans-I/O), the dev token minting rules and the page's
package data (issue 18)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from livekit.protocol import models as models_pb

import aiolivekit.server as server_pkg
from aiolivekit.cli import build_parser
from aiolivekit.demo import open_browser
from aiolivekit.server.auth import VideoGrant, verify_token
from aiolivekit.server.config import ServerConfig
from aiolivekit.server.inspector import Inspector, RateMeter
from aiolivekit.server.page import STATIC, mint_dev_token, static_files
from aiolivekit.server.rooms import RoomManager

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

ROOT = Path(__file__).resolve().parents[2]


def test_rate_meter_rates_over_the_window() -> None:
    meter = RateMeter(window=2.0)
    assert meter.update("k", 100.0, (0, 10)) == (0.0, 0.0)  # first sample: no rate yet
    assert meter.update("k", 101.0, (1000, 20)) == (1000.0, 10.0)  # only 1 s of history
    # 2 s later: compared with the sample taken at 100 (the newest >= 2 s old)
    assert meter.update("k", 102.0, (3000, 30)) == (1500.0, 10.0)
    assert meter.update("k", 104.5, (3000, 30)) == (0.0, 0.0)  # nothing new since 102
    assert meter.update("k", 105.0, (0, 0)) == (0.0, 0.0)  # a counter reset is no negative rate
    meter.prune(set())
    assert meter.update("k", 106.0, (5, 5)) == (0.0, 0.0)  # forgotten: a first sample again
    with pytest.raises(ValueError):
        RateMeter(window=0)


@dataclass
class FakeSub:
    pc: object
    packets: int
    octets: int
    dropped_queue: int = 0
    dropped_socket: int = 0
    paused: bool = False


@dataclass
class FakeForwarder:
    mime_type: str | None = "audio/opus"
    packets_received: int = 0
    bytes_received: int = 0
    packets_forwarded: int = 0
    keyframe_requests_sent: int = 0
    expected: int = 0
    subs: list[FakeSub] = field(default_factory=list)

    def receive_counts(self) -> tuple[int, int]:
        return self.expected, self.packets_received

    def subscriber_stats(self) -> list[FakeSub]:
        return self.subs


@dataclass
class FakeSession:
    forwarders: dict[str, Any]
    subscriber_pc: object = field(default_factory=object)


def _room_with_track(now: float) -> tuple[RoomManager, str, str, str]:
    from livekit.protocol import rtc as rtc_pb

    rooms = RoomManager()
    room = rooms.get_or_create("r", now)
    grant = VideoGrant(room_join=True, room="r")
    alice, _, _ = room.join("alice", grant, now, name="Alice", attributes={"role": "bot"})
    bob, _, _ = room.join("bob", grant, now)
    room.add_track(alice.sid, rtc_pb.AddTrackRequest(
        cid="c1", name="mic", type=models_pb.TrackType.AUDIO,
        source=models_pb.TrackSource.MICROPHONE), now)
    track_sid = next(iter(alice.tracks.values())).info.sid
    return rooms, alice.sid, bob.sid, track_sid


def test_inspector_snapshot_reports_counters_rates_and_subscribers() -> None:
    now = 1000.0
    rooms, alice, bob, track = _room_with_track(now)
    bob_session = FakeSession({})
    fwd = FakeForwarder(subs=[FakeSub(bob_session.subscriber_pc, 0, 0)])
    inspector = Inspector(rooms, {alice: FakeSession({track: fwd}), bob: bob_session})
    first = inspector.snapshot(now)
    [room] = first["rooms"]
    assert room["name"] == "r" and room["num_participants"] == 2
    people = {p["identity"]: p for p in room["participants"]}
    assert people["alice"]["attributes"] == {"role": "bot"} and people["alice"]["name"] == "Alice"
    [t] = people["alice"]["tracks"]
    assert (t["sid"], t["kind"], t["source"], t["bitrate"]) == (track, "audio", "microphone", 0)
    assert people["bob"]["tracks"] == []
    # 2 s of media: 100 packets expected, 90 arrived, 20 kB in, 16 kB out to bob
    fwd.packets_received, fwd.expected, fwd.bytes_received = 90, 100, 20_000
    fwd.packets_forwarded = 80
    fwd.subs = [FakeSub(bob_session.subscriber_pc, 80, 16_000, dropped_queue=3)]
    second = inspector.snapshot(now + 2.0)
    [t] = next(p for p in second["rooms"][0]["participants"] if p["identity"] == "alice")["tracks"]
    assert t["codec"] == "audio/opus"
    assert t["bitrate"] == 80_000  # 20 kB in 2 s
    assert (t["packets_received"], t["packets_expected"], t["packets_lost"]) == (90, 100, 10)
    assert t["loss"] == pytest.approx(0.1)
    assert t["packets_forwarded"] == 80
    assert t["subscribers"] == [{"sid": bob, "identity": "bob", "packets": 80, "bytes": 16_000,
                                 "bitrate": 64_000, "dropped_queue": 3, "dropped_socket": 0,
                                 "paused": False}]
    assert inspector.snapshot(now + 3.0, room="other")["rooms"] == []
    json.dumps(second)  # JSON-ready


def test_dev_token_join_and_admin_grants() -> None:
    now = time.time()
    keys = {"devkey": "secret"}
    join = verify_token(mint_dev_token({"room": "r", "identity": "web", "name": "Web",
                                        "attributes": {"a": "1"}}), keys, now)
    assert (join.identity, join.name, join.attributes) == ("web", "Web", {"a": "1"})
    assert join.video is not None and join.video.room_join and join.video.room == "r"
    assert not join.video.room_admin and join.video.can_publish
    admin = verify_token(mint_dev_token({"room": "r", "admin": True}), keys, now)
    assert admin.video is not None and admin.video.room_admin and admin.video.room_list
    assert not admin.video.room_join and admin.identity == "inspector"
    for bad in ({"room": "r"}, {"identity": "x"}, {"room": 1, "identity": "x"},
                {"room": "r", "identity": "x", "admin": "yes"},
                {"room": "r" * 300, "identity": "x"},
                {"room": "r", "identity": "x", "attributes": {"a": 1}}, ["r"]):
        with pytest.raises(ValueError):
            mint_dev_token(bad)


def test_page_defaults_follow_the_keys() -> None:
    assert ServerConfig().dev_mode and ServerConfig().page_enabled
    real = {"key": "a-secret-of-at-least-thirty-two-bytes"}
    assert not ServerConfig(keys=real).page_enabled
    assert ServerConfig(keys=real, page=True).page_enabled
    assert not ServerConfig(keys=real, page=True).dev_mode
    assert not ServerConfig(page=False).page_enabled
    with pytest.raises(TypeError):
        ServerConfig(page="yes")  # type: ignore[arg-type]


def test_static_files_and_package_data() -> None:
    files = static_files()
    assert set(files) == {"index.html", "inspect.html", *STATIC}
    record = json.loads(files["vendor/livekit-client.json"])
    bundle = files["vendor/livekit-client.umd.js"]
    assert record["version"] == "2.23.0"
    assert hashlib.sha256(bundle).hexdigest() == record["sha256"]
    assert b"Apache License" in files["vendor/livekit-client.LICENSE"]
    assert "/static/vendor/livekit-client.umd.js" in files["index.html"].decode()
    for name in ("index.html", "inspect.html", "page.js", "inspect.js", "page.css"):
        assert not re.search(r"https?://", files[name].decode()), name  # nothing from outside
    # every file under server/static is matched by pyproject's package-data globs
    tomllib = pytest.importorskip("tomllib")
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["aiolivekit.server"]
    pkg = Path(server_pkg.__file__).parent
    on_disk = {p.relative_to(pkg).as_posix() for p in (pkg / "static").rglob("*") if p.is_file()}
    matched = {p.relative_to(pkg).as_posix() for g in globs for p in pkg.glob(g)}
    assert on_disk and on_disk == matched
    assert "recursive-include src/aiolivekit/server/static *" in (ROOT / "MANIFEST.in").read_text()


def test_cli_flags() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "--dev"]).page is None
    assert parser.parse_args(["serve", "--page"]).page is True
    assert parser.parse_args(["serve", "--no-page"]).page is False
    assert parser.parse_args(["demo", "--browser"]).browser is True


def test_open_browser_without_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, new=0: opened.append(url) or True)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert open_browser("http://127.0.0.1:1/") is False and opened == []
    monkeypatch.setenv("DISPLAY", ":0")
    assert open_browser("http://127.0.0.1:1/") is True and opened == ["http://127.0.0.1:1/"]
