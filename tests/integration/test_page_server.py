"""The room page's server side (issue 18): who gets the page, the dev token endpoint (dev
mode only), the inspector's JSON and event feed over real media through the embedded
server, inspector actions through Twirp, and ``aiolivekit demo --browser``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import numpy as np
import pytest
from livekit import api

from aiolivekit import (
    AudioFrame,
    AudioSource,
    LocalAudioTrack,
    LocalVideoTrack,
    Room,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoFrame,
    VideoSource,
)
from aiolivekit.demo import run_browser_demo
from aiolivekit.server import DevServer
from aiolivekit.server.auth import verify_token

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TIMEOUT = 20.0
REAL_KEYS = {"prodkey": "a-production-secret-of-32-bytes-or-more"}
HTML = {"Accept": "text/html,application/xhtml+xml"}


async def _until(pred: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


async def test_dev_mode_serves_page_static_files_and_tokens(
        http: aiohttp.ClientSession) -> None:
    async with DevServer(port=0) as server:
        base = server.http_url
        async with http.get(base + "/", headers=HTML) as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert "/static/vendor/livekit-client.umd.js" in await r.text()
        async with http.get(base + "/") as r:  # health checks still get OK
            assert (r.status, await r.text()) == (200, "OK")
        async with http.get(base + "/static/vendor/livekit-client.umd.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
            body = await r.read()
        async with http.get(base + "/static/vendor/livekit-client.json") as r:
            record = await r.json()
        import hashlib

        assert hashlib.sha256(body).hexdigest() == record["sha256"]
        for path in ("/static/page.py", "/static/inspector.py", "/static/vendor/",
                     "/static/index.html"):  # only the listed files, not the directory
            async with http.get(base + path) as r:
                assert r.status == 404, path
        async with http.get(base + "/inspect", headers=HTML) as r:
            assert r.status == 200 and "/static/inspect.js" in await r.text()

        async with http.post(base + "/dev/token", json={"room": "r1", "identity": "web",
                                                        "name": "Web"}) as r:
            assert r.status == 200
            out = await r.json()
        assert out["url"] == server.url and out["room"] == "r1"
        claims = verify_token(out["token"], {server.api_key: server.api_secret}, time.time())
        assert claims.identity == "web" and claims.video is not None
        assert claims.video.room_join and claims.video.room == "r1"
        room = Room()  # the minted token joins
        await asyncio.wait_for(room.connect(out["url"], out["token"]), TIMEOUT)
        assert room.local_participant.identity == "web" and room.name == "r1"
        await room.disconnect()
        for bad in (b"not json", b'{"room": "r"}', b'{"room": "r", "identity": 5}', b"[]"):
            async with http.post(base + "/dev/token", data=bad) as r:
                assert r.status == 400, bad
                assert (await r.json())["error"]


async def test_production_mode_page_off_or_without_token_minting(
        http: aiohttp.ClientSession) -> None:
    async with DevServer(port=0, keys=REAL_KEYS) as server:  # page off by default
        base = server.http_url
        async with http.get(base + "/", headers=HTML) as r:
            assert (r.status, await r.text()) == (200, "OK")
        for path in ("/inspect", "/inspect/state", "/inspect/events",
                     "/static/vendor/livekit-client.umd.js"):
            async with http.get(base + path) as r:
                assert r.status == 404, path
        async with http.post(base + "/dev/token", json={"room": "r", "identity": "x"}) as r:
            assert r.status == 404

    async with DevServer(port=0, keys=REAL_KEYS, page=True) as server:
        base = server.http_url
        async with http.get(base + "/", headers=HTML) as r:
            assert r.status == 200 and r.content_type == "text/html"
        async with http.post(base + "/dev/token", json={"room": "r", "identity": "x"}) as r:
            assert r.status == 403 and "dev mode" in (await r.json())["error"]
        async with http.get(base + "/inspect/state") as r:
            assert r.status == 401
        async with http.get(base + "/inspect/state",
                            params={"access_token": server.token("a", "r")}) as r:
            assert r.status == 403  # a join token: no roomList
        devkey = api.AccessToken("devkey", "secret").with_identity("x").with_grants(
            api.VideoGrants(room_list=True)).to_jwt()
        async with http.get(base + "/inspect/state", params={"access_token": devkey}) as r:
            assert r.status == 401  # the public dev key is not accepted here
        admin = api.AccessToken(*next(iter(REAL_KEYS.items()))).with_identity("ops") \
            .with_grants(api.VideoGrants(room_list=True)).to_jwt()
        async with http.get(base + "/inspect/state",
                            headers={"Authorization": f"Bearer {admin}"}) as r:
            assert r.status == 200 and (await r.json())["rooms"] == []

    async with DevServer(port=0, page=False) as server:  # dev keys, page switched off
        async with http.post(server.http_url + "/dev/token",
                             json={"room": "r", "identity": "x"}) as r:
            assert r.status == 404


async def _tone(source: AudioSource, stop: asyncio.Event) -> None:
    n = 480
    t0 = 0
    while not stop.is_set():
        t = (np.arange(n) + t0) / 48000
        t0 += n
        pcm = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
        await source.capture_frame(AudioFrame(pcm.tobytes(), 48000, 1, n))


async def _pattern(source: VideoSource, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        rgba = np.zeros((240, 320, 4), dtype=np.uint8)
        rgba[:, (i * 8) % 288:(i * 8) % 288 + 32, :] = 255
        source.capture_frame(VideoFrame(320, 240, VideoBufferType.RGBA, rgba.tobytes()))
        i += 1
        await asyncio.sleep(1 / 15)


async def test_inspector_feed_shows_tracks_bitrates_and_subscribers(
        http: aiohttp.ClientSession) -> None:
    async with DevServer(port=0) as server:
        alice, bob = Room(), Room()
        await asyncio.wait_for(alice.connect(server.url, server.token(
            "alice", "insp", attributes={"role": "tone"})), TIMEOUT)
        await asyncio.wait_for(bob.connect(server.url, server.token("bob", "insp")), TIMEOUT)
        audio, video = AudioSource(48000, 1), VideoSource(320, 240)
        await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("tone", audio),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        await alice.local_participant.publish_track(
            LocalVideoTrack.create_video_track("pattern", video),
            TrackPublishOptions(source=TrackSource.SOURCE_CAMERA))
        stop = asyncio.Event()
        media = [asyncio.ensure_future(_tone(audio, stop)),
                 asyncio.ensure_future(_pattern(video, stop))]
        state_url = server.http_url + "/inspect/state"
        try:
            async def flowing() -> dict[str, Any] | None:
                async with http.get(state_url, params={"room": "insp"}) as r:
                    snap = await r.json()
                people = {p["identity"]: p for p in snap["rooms"][0]["participants"]}
                tracks = {t["kind"]: t for t in people["alice"]["tracks"]}
                if set(tracks) != {"audio", "video"}:
                    return None
                ok = all(t.get("bitrate", 0) > 0 and t["subscribers"]
                         and t["subscribers"][0]["bitrate"] > 0 for t in tracks.values())
                return people if ok else None

            people = await _until(flowing, "alice's media through the server")
            tracks = {t["kind"]: t for t in people["alice"]["tracks"]}
            assert people["alice"]["attributes"] == {"role": "tone"}
            assert people["bob"]["tracks"] == []
            assert tracks["audio"]["codec"] == "audio/opus"
            assert tracks["audio"]["source"] == "microphone"
            assert tracks["video"]["codec"] == "video/VP8" and tracks["video"]["source"] == "camera"
            assert (tracks["video"]["width"], tracks["video"]["height"]) == (320, 240)
            # rates of real streams (Opus ~32 kbit/s; a simple VP8 pattern from ~10 kbit/s)
            assert 8_000 < tracks["audio"]["bitrate"] < 200_000, tracks["audio"]
            assert tracks["video"]["bitrate"] > 5_000, tracks["video"]
            for t in tracks.values():
                assert t["packets_forwarded"] > 0 and t["packets_received"] > 0
                assert t["packets_lost"] == 0 and t["loss"] == 0.0
                [sub] = t["subscribers"]
                assert sub["identity"] == "bob" and sub["bytes"] > 0 and not sub["paused"]

            # the event feed: snapshots at the interval asked for, until the server stops
            got: list[dict[str, Any]] = []
            async with http.get(server.http_url + "/inspect/events",
                                params={"interval": "0.2"}) as r:
                assert r.status == 200 and r.content_type == "text/event-stream"
                while len(got) < 3:
                    line = (await asyncio.wait_for(r.content.readline(), 5)).decode()
                    if line.startswith("data: "):
                        got.append(json.loads(line[6:]))
            times = [g["time"] for g in got]
            assert times == sorted(times) and times[-1] - times[0] >= 0.3
            assert [p["identity"] for p in got[-1]["rooms"][0]["participants"]] == ["alice", "bob"]

            # inspector actions: the Twirp RoomService with a dev admin token
            async with http.post(server.http_url + "/dev/token",
                                 json={"room": "insp", "admin": True}) as r:
                admin = (await r.json())["token"]
            muted = asyncio.Event()
            alice.on("track_muted", lambda participant, pub: muted.set())
            async with http.post(
                    server.http_url + "/twirp/livekit.RoomService/MutePublishedTrack",
                    headers={"Authorization": f"Bearer {admin}"},
                    json={"room": "insp", "identity": "alice", "track_sid": tracks["audio"]["sid"],
                          "muted": True}) as r:
                assert r.status == 200, await r.text()
            await asyncio.wait_for(muted.wait(), TIMEOUT)
            async with http.get(state_url) as r:
                snap = await r.json()
            [audio_row] = [t for p in snap["rooms"][0]["participants"] if p["identity"] == "alice"
                           for t in p["tracks"] if t["kind"] == "audio"]
            assert audio_row["muted"] is True
        finally:
            stop.set()
            await asyncio.gather(*media, return_exceptions=True)
            await alice.disconnect()
            await bob.disconnect()
            await audio.aclose()
            await video.aclose()


async def test_event_stream_ends_when_the_server_stops(http: aiohttp.ClientSession) -> None:
    server = await DevServer(port=0).start()
    try:
        async with http.get(server.http_url + "/inspect/events") as r:
            assert r.status == 200
            assert (await asyncio.wait_for(r.content.readline(), 5)).startswith(b"data: ")
            started = time.monotonic()
            await asyncio.wait_for(server.aclose(), 10)
            assert time.monotonic() - started < 3.0  # not aiohttp's 5 s shutdown timeout
    finally:
        await server.aclose()


async def test_demo_browser_opens_the_page_with_the_bots_in_the_room(
        http: aiohttp.ClientSession) -> None:
    opened: list[str] = []
    demo = asyncio.ensure_future(run_browser_demo(port=0, seconds=30, opener=opened.append))
    try:
        async def url() -> str | None:
            if demo.done():
                demo.result()
            return opened[0] if opened else None

        link = await _until(url, "the demo to open its page")
        parts = urlsplit(link)
        assert parse_qs(parts.query) == {"room": ["demo"], "identity": ["you"], "autojoin": ["1"]}
        origin = f"{parts.scheme}://{parts.netloc}"
        async with http.get(origin + parts.path, headers=HTML) as r:
            assert r.status == 200 and "livekit-client.umd.js" in await r.text()

        async def bots() -> dict[str, Any] | None:
            async with http.get(origin + "/inspect/state", params={"room": "demo"}) as r:
                snap = await r.json()
            if not snap["rooms"]:
                return None
            people = {p["identity"]: p for p in snap["rooms"][0]["participants"]}
            alice = people.get("alice", {"tracks": []})
            kinds = {t["kind"] for t in alice["tracks"] if t.get("bitrate", 0) > 0}
            return people if "bob" in people and kinds == {"audio", "video"} else None

        await _until(bots, "alice's tone and pattern and bob in the demo room")
    finally:
        demo.cancel()
        await asyncio.gather(demo, return_exceptions=True)


async def test_serve_dev_prints_and_serves_the_page(http: aiohttp.ClientSession) -> None:
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiolivekit", "serve", "--dev", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 20)
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith(f"room page: http://127.0.0.1:{port}/ "), line
        async with http.get(f"http://127.0.0.1:{port}/", headers=HTML) as r:
            assert r.status == 200 and "aiolivekit room" in await r.text()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
