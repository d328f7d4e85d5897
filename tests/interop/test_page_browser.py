"""The room page of ``aiolivekit serve`` in Chromium, driven like a user (issue 18).

Chromium (the Debian build, fake camera and microphone, inside the test namespace) loads the
page and livekit-client from the embedded server itself, joins with a token the dev server
mints, and meets an aiolivekit participant: the participant's 440 Hz tone reaches the page
(WebAudio analyser level and peak frequency) and its video pattern is drawn (canvas pixels);
the Python side receives the browser's microphone and camera and a chat message typed in
the page, and sees the page's camera button stop the camera and its screen-share button
share Chromium's fake screen; the inspector tab lists both participants with live bit
rates, mutes a track, sends data to the room and removes the bot.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import numpy as np
import pytest

from aiolivekit import (
    AudioFrame,
    AudioSource,
    AudioStream,
    DisconnectReason,
    LocalAudioTrack,
    LocalVideoTrack,
    Room,
    TrackKind,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoFrame,
    VideoSource,
    VideoStream,
)
from aiolivekit.demo import run_browser_demo
from aiolivekit.server import DevServer

from .official import events_of, official_available, start_driver, step

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]

ROOM = "page-room"
TONE_HZ = 440.0
TIMEOUT = 30.0


async def _tone(source: AudioSource, stop: asyncio.Event) -> None:
    n, t0 = 480, 0
    while not stop.is_set():
        t = (np.arange(n) + t0) / 48000
        t0 += n
        pcm = (np.sin(2 * np.pi * TONE_HZ * t) * 12000).astype(np.int16)
        await source.capture_frame(AudioFrame(pcm.tobytes(), 48000, 1, n))


async def _pattern(source: VideoSource, stop: asyncio.Event) -> None:
    """A white bar (32 of 320 columns) moving over black."""
    i = 0
    while not stop.is_set():
        rgba = np.zeros((240, 320, 4), dtype=np.uint8)
        x = (i * 8) % 288
        rgba[:, x:x + 32, :] = 255
        source.capture_frame(VideoFrame(320, 240, VideoBufferType.RGBA, rgba.tobytes()))
        i += 1
        await asyncio.sleep(1 / 15)


async def _wait(pred: Any, what: str, proc: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(proc.describe(f"timed out waiting for {what}"))
        await asyncio.sleep(0.05)


async def test_room_page_in_chromium_with_an_aiolivekit_participant() -> None:
    reason = official_available("browser")
    if reason:
        pytest.skip(reason)
    async with DevServer(port=0) as server:
        bot = Room()
        chats: list[tuple[str, str]] = []
        readers: set[asyncio.Task[None]] = set()

        def on_chat(reader: Any, identity: str) -> None:
            async def read() -> None:
                chats.append((identity, await reader.read_all()))

            task = asyncio.ensure_future(read())
            readers.add(task)
            task.add_done_callback(readers.discard)

        bot.register_text_stream_handler("lk.chat", on_chat)
        tracks: dict[int, Any] = {}
        sources: list[int] = []  # every subscription's source, in order

        def on_track(track: Any, pub: Any, p: Any) -> None:
            if p.identity == "browser":
                sources.append(int(pub.source))
                tracks.setdefault(int(track.kind), track)

        bot.on("track_subscribed", on_track)
        data: list[tuple[str, bytes]] = []
        bot.on("data_received", lambda packet: data.append((packet.topic, packet.data)))
        left: list[Any] = []
        bot.on("disconnected", left.append)
        muted: list[tuple[str, int]] = []
        bot.on("track_muted", lambda p, pub: muted.append((p.identity, int(pub.kind))))
        await asyncio.wait_for(bot.connect(server.url, server.token(
            "bot", ROOM, name="Bot", attributes={"role": "tone bot"})), TIMEOUT)
        audio, video = AudioSource(48000, 1), VideoSource(320, 240)
        await bot.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("tone", audio),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        await bot.local_participant.publish_track(
            LocalVideoTrack.create_video_track("pattern", video),
            TrackPublishOptions(source=TrackSource.SOURCE_CAMERA))
        stop = asyncio.Event()
        media = [asyncio.ensure_future(_tone(audio, stop)),
                 asyncio.ensure_future(_pattern(video, stop))]
        steps = [
            {"op": "open", "url": server.page_url},
            {"op": "join", "room": ROOM, "identity": "browser", "name": "Browser"},
            {"op": "expect_attributes", "identity": "bot", "attributes": {"role": "tone bot"}},
            {"op": "audio_level", "identity": "bot", "min": 0.02, "timeout": 20},
            {"op": "video_pixels", "identity": "bot", "timeout": 20},
            {"op": "send_chat", "text": "hello from the page"},
            {"op": "wait_signal", "name": "bot-sent", "timeout": 60},
            {"op": "expect_log", "text": "hello from python", "from": "bot", "kind": "chat"},
            {"op": "expect_log", "text": "a data packet", "from": "bot", "kind": "data"},
            {"op": "inspect", "url": server.http_url + "/inspect",
             "identities": ["bot", "browser"], "min_bps": 1000, "timeout": 20},
            {"op": "inspect_action", "action": "mute", "identity": "browser", "kind": "audio"},
            {"op": "inspect_send_data", "room": ROOM, "topic": "ops", "text": "from the inspector"},
            {"op": "expect_log", "text": "from the inspector", "from": "(server)", "kind": "data"},
            {"op": "toggle", "button": "camera", "expect": "off"},
            {"op": "toggle", "button": "screen", "expect": "on"},
            {"op": "wait_signal", "name": "leave", "timeout": 60},
            {"op": "inspect_action", "action": "remove", "identity": "bot"},
            {"op": "expect_log", "text": "left", "from": "bot", "kind": "event"},
            {"op": "leave"},
        ]
        proc = start_driver("page", steps, timeout=150, origin=server.http_url)
        received: dict[str, Any] = {}
        try:
            async with proc:
                await proc.wait_for(op="join", timeout=60)
                await _wait(lambda: len(tracks) == 2, "the browser's microphone and camera", proc)
                astream = AudioStream(tracks[int(TrackKind.KIND_AUDIO)], sample_rate=48000,
                                      num_channels=1)
                vstream = VideoStream(tracks[int(TrackKind.KIND_VIDEO)])
                pcm: list[np.ndarray] = []
                frames: list[Any] = []

                async def read_audio() -> None:
                    n = 0
                    async for ev in astream:
                        pcm.append(np.frombuffer(bytes(ev.frame.data), dtype=np.int16))
                        n += len(pcm[-1])
                        if n >= 2 * 48000:
                            return

                async def read_video() -> None:
                    async for ev in vstream:
                        frames.append(ev.frame)
                        if len(frames) >= 10:
                            return

                try:
                    await asyncio.wait_for(asyncio.gather(read_audio(), read_video()), TIMEOUT)
                finally:
                    await astream.aclose()
                    await vstream.aclose()
                received["pcm"] = np.concatenate(pcm)
                received["frames"] = frames

                await _wait(lambda: chats, "the chat message typed in the page", proc)
                await bot.local_participant.send_text("hello from python", topic="lk.chat")
                await bot.local_participant.publish_data(b"a data packet", topic="news")
                proc.signal("bot-sent")

                # the inspector's JSON, fetched by us while the page runs
                await proc.wait_for(op="inspect", timeout=60)
                async with aiohttp.ClientSession() as http, http.get(
                        server.http_url + "/inspect/state", params={"room": ROOM}) as r:
                    received["snapshot"] = await r.json()
                await _wait(lambda: muted, "the inspector's mute", proc)
                await _wait(lambda: len(muted) >= 2, "the camera stopped in the page", proc)
                await _wait(lambda: int(TrackSource.SOURCE_SCREENSHARE) in sources,
                            "the page's screen share", proc)
                proc.signal("leave")
                events = await proc.finish()
        finally:
            stop.set()
            await asyncio.gather(*media, return_exceptions=True)
            await bot.disconnect()
            await audio.aclose()
            await video.aclose()

    assert step(events, "open")["livekit_client"] == "2.23.0"
    assert events_of(events, "foreign_request") == []  # nothing loaded from outside
    # the bot's tone and pattern in the page
    level = step(events, "audio_level")
    assert level["level"] >= 0.02 and abs(level["peak_hz"] - TONE_HZ) < 30, level
    pixels = step(events, "video_pixels")
    assert (pixels["width"], pixels["height"]) == (320, 240), pixels
    assert 0.03 < pixels["bright_fraction"] < 0.3, pixels  # the bar, over black
    # the browser's fake devices at the bot: Chromium's microphone beeps, its camera draws
    beeps = received["pcm"]
    assert float(np.abs(beeps.astype(np.int32)).max()) > 1000
    frames = received["frames"]
    assert len(frames) >= 10 and frames[-1].width > 0 and frames[-1].height > 0
    argb = np.frombuffer(bytes(frames[-1].convert(VideoBufferType.RGBA).data), np.uint8)
    assert argb.reshape(-1, 4)[:, :3].std() > 10  # a picture, not a flat colour
    # microphone and camera at join, the screen share from its button (Chromium's fake screen)
    assert sorted(sources[:2]) == sorted([int(TrackSource.SOURCE_MICROPHONE),
                                          int(TrackSource.SOURCE_CAMERA)])
    assert sources[2:] == [int(TrackSource.SOURCE_SCREENSHARE)]
    # the inspector's send-data form reached both; its remove button removed the bot
    assert ("ops", b"from the inspector") in data
    assert left == [DisconnectReason.PARTICIPANT_REMOVED]
    # the chat typed in the page, as a text stream on lk.chat
    assert chats == [("browser", "hello from the page")]
    # the inspector: both participants with bit rates, in the page and in the JSON
    seen = step(events, "inspect")
    assert {"bot", "browser"} <= set(seen["participants"])
    for who in ("bot", "browser"):
        for kind in ("audio", "video"):
            assert any(t["identity"] == who and t["kind"] == kind and t["bitrate"] > 1000
                       for t in seen["tracks"]), (who, kind, seen["tracks"])
    people = {p["identity"]: p for p in received["snapshot"]["rooms"][0]["participants"]}
    assert set(people) == {"bot", "browser"}
    for p in people.values():
        kinds = {t["kind"]: t for t in p["tracks"]}
        assert set(kinds) == {"audio", "video"}
        assert all(t["bitrate"] > 0 and t["packets_forwarded"] > 0 for t in kinds.values())
    # the inspector's mute of the browser's microphone, then the page's camera button
    assert muted[:2] == [("browser", int(TrackKind.KIND_AUDIO)),
                         ("browser", int(TrackKind.KIND_VIDEO))], muted


async def test_demo_browser_page_joins_the_bots() -> None:
    """``aiolivekit demo --browser``: the URL it opens joins by itself; Alice's tone and
    pattern play in the page and Bob answers the chat."""
    reason = official_available("browser")
    if reason:
        pytest.skip(reason)
    opened: list[str] = []
    demo = asyncio.ensure_future(run_browser_demo(port=0, seconds=120, opener=opened.append))
    try:
        deadline = time.monotonic() + TIMEOUT
        while not opened:
            if demo.done():
                demo.result()
            assert time.monotonic() < deadline, "the demo opened no page"
            await asyncio.sleep(0.1)
        url = opened[0]
        origin = url.split("/?", 1)[0]
        steps = [
            {"op": "open", "url": url},
            {"op": "wait_connected"},
            {"op": "expect_attributes", "identity": "alice", "attributes": {"role": "tone bot"}},
            {"op": "audio_level", "identity": "alice", "min": 0.02, "timeout": 20},
            {"op": "video_pixels", "identity": "alice", "timeout": 20},
            {"op": "expect_log", "contains": "type in the chat", "from": "bob", "kind": "data"},
            {"op": "send_chat", "text": "hi bob"},
            {"op": "expect_log", "text": "Bob heard you: hi bob", "from": "bob", "kind": "chat",
             "timeout": 15},
            {"op": "leave"},
        ]
        proc = start_driver("page", steps, timeout=90, origin=origin)
        await proc.start()
        events = await proc.finish()
    finally:
        demo.cancel()
        await asyncio.gather(demo, return_exceptions=True)
    assert "identity=you" in url and "autojoin=1" in url
    assert step(events, "wait_connected")["status"] == "in room demo as you"
    level = step(events, "audio_level")
    assert abs(level["peak_hz"] - TONE_HZ) < 30, level
    # the demo's bar is 32 of 320 columns, cut at the right edge: 8 to 32 columns bright
    assert 0.015 < step(events, "video_pixels")["bright_fraction"] < 0.3
    assert events_of(events, "foreign_request") == []
