"""End-to-end encryption between aiolivekit and the official Python SDK and @livekit/rtc-node
(the native frame cryptor of the Rust SDK), through both servers (issue 17): with the same shared key the tone (FFT) and
video frames decode in both directions (PBKDF2 and HKDF keys, VP8 and H.264); with a
wrong key nothing decodes and both sides report the failure. Key rotation, ratchets and
per-participant keys mid-call: test_interop_e2ee_keys.py."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from aiolivekit import (
    AudioFrame,
    AudioSource,
    AudioStream,
    E2EEOptions,
    KeyProviderOptions,
    LocalAudioTrack,
    LocalVideoTrack,
    Room,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoCodec,
    VideoFrame,
    VideoSource,
    VideoStream,
)
from aiolivekit.testing.servers import ServerInfo
from aiolivekit.types import EncryptionState, EncryptionType, RoomOptions
from aiolivekit.types_ext import KeyDerivationFunction

from .official import DriverProcess, events_of, official_available, step
from .test_interop_aiolivekit import (
    COLOR,
    OURS,
    TIMEOUT,
    _close_to,
    _dominant,
    _driver,
    _start_synced,
    _wait,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

KEY = "interop-e2ee-shared-key-0123456789"


@pytest.fixture(params=["official_py", "node", "browser"])
def client(request: pytest.FixtureRequest) -> str:
    reason = official_available(request.param)
    if reason:
        pytest.skip(reason)
    return str(request.param)


@pytest.fixture(params=["pbkdf2", "hkdf"])
def kdf(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _options(key: str, kdf: str = "pbkdf2") -> RoomOptions:
    kpo = KeyProviderOptions(shared_key=key.encode())
    if kdf == "hkdf":
        kpo.key_derivation_function = KeyDerivationFunction.HKDF
    return RoomOptions(encryption=E2EEOptions(key_provider_options=kpo))


async def _room(server: ServerInfo, options: RoomOptions) -> Room:
    room = Room()
    await asyncio.wait_for(room.connect(server.url, server.token(OURS), options), TIMEOUT)
    return room


@pytest.fixture
async def rooms() -> AsyncIterator[list[Room]]:
    made: list[Room] = []
    yield made
    for room in made:
        await asyncio.wait_for(room.disconnect(), TIMEOUT)


def _theirs(client: str, server: ServerInfo, body: list[dict[str, Any]], key: str = KEY,
            kdf: str = "pbkdf2", **extra: Any) -> DriverProcess:
    connect: dict[str, Any] = {"e2ee_key": key, **extra}
    if kdf == "hkdf":
        connect["e2ee_kdf"] = "hkdf"
    return _driver(client, server, body, **connect)


async def _collect_audio(track: Any, seconds: float, skip: float = 0.5,
                         timeout: float = TIMEOUT) -> np.ndarray:
    stream = AudioStream(track, sample_rate=48000, num_channels=1)
    chunks: list[np.ndarray] = []

    async def collect() -> None:
        n = 0
        async for ev in stream:
            pcm = np.frombuffer(bytes(ev.frame.data), dtype=np.int16)
            n += len(pcm)
            if n > skip * 48000:
                chunks.append(pcm)
            if n > (skip + seconds) * 48000:
                return
    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        await stream.aclose()
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


async def _listen_until(track: Any, pred: Any, *, at_least: float, timeout: float, what: str,
                        proc: DriverProcess, skip: float = 0.5) -> np.ndarray:
    """Read ``track`` for ``at_least`` seconds and then until ``pred()`` (up to ``timeout``
    more); its PCM after the first ``skip`` seconds. A track nobody reads is neither
    decoded nor decrypted, so a state is only reported while this reads."""
    stream = AudioStream(track, sample_rate=48000, num_channels=1)
    chunks: list[np.ndarray] = []
    skipped = 0

    async def read() -> None:
        nonlocal skipped
        async for ev in stream:
            pcm = np.frombuffer(bytes(ev.frame.data), dtype=np.int16)
            if skipped < skip * 48000:
                skipped += len(pcm)
            else:
                chunks.append(pcm)
    task = asyncio.ensure_future(read())
    try:
        await asyncio.sleep(at_least)
        await _wait(pred, timeout=timeout, what=what, proc=proc)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.wait_for(stream.aclose(), 5)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@pytest.mark.compat("e2ee")
async def test_audio_official_to_aiolivekit(any_server: ServerInfo, client: str, rooms: list[Room],
                                            kdf: str) -> None:
    ours = await _room(any_server, _options(KEY, kdf))
    rooms.append(ours)
    tracks: list[Any] = []
    states: list[EncryptionState] = []
    ours.on("track_subscribed", lambda track, pub, p: tracks.append((track, pub)))
    ours.on("e2ee_state_changed", lambda p, state: states.append(state))
    proc = _theirs(client, any_server, [
        {"op": "publish_tone", "freq": 600, "seconds": 8},
        {"op": "wait_signal", "name": "done", "timeout": 40},
    ], kdf=kdf)
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: bool(tracks), what="official audio track", proc=proc)
        track, pub = tracks[0]
        assert pub.encryption_type == EncryptionType.GCM
        pcm = await _collect_audio(track, 1.5)
        proc.signal("done")
        await proc.finish()
    assert len(pcm) > 48000
    assert abs(_dominant(pcm, 48000) - 600) < 8
    assert float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 500
    assert states and states[0] == EncryptionState.OK
    assert EncryptionState.DECRYPTION_FAILED not in states


async def _tone_pump(source: AudioSource, freq: float, stop: asyncio.Event) -> None:
    rate, n = 48000, 0
    start = time.monotonic()
    for i in range(1500):
        if stop.is_set():
            return
        t = (np.arange(480) + n) / rate
        n += 480
        pcm = (0.3 * 32767 * np.sin(2 * math.pi * freq * t)).astype(np.int16)
        await source.capture_frame(AudioFrame(pcm.tobytes(), rate, 1, 480))
        ahead = start + (i + 1) / 100 - time.monotonic()
        if ahead > 0.02:
            await asyncio.sleep(ahead - 0.02)


async def _publish_tone_to_official(server: ServerInfo, ours: Room, proc: DriverProcess,
                                    freq: float) -> list[dict[str, Any]]:
    source = AudioSource(48000, 1)
    track = LocalAudioTrack.create_audio_track("ours-tone", source)
    stop = asyncio.Event()
    task = None
    try:
        async with proc:
            await _start_synced(ours, proc)
            pub = await asyncio.wait_for(ours.local_participant.publish_track(
                track, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE)), TIMEOUT)
            assert pub.encryption_type == EncryptionType.GCM
            task = asyncio.ensure_future(_tone_pump(source, freq, stop))
            return await proc.finish()
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 5)
        await source.aclose()


@pytest.mark.compat("e2ee")
async def test_audio_aiolivekit_to_official(any_server: ServerInfo, client: str, rooms: list[Room],
                                            kdf: str) -> None:
    ours = await _room(any_server, _options(KEY, kdf))
    rooms.append(ours)
    proc = _theirs(client, any_server, [
        {"op": "subscribe_detect_tone", "identity": OURS, "seconds": 1.5, "timeout": 25},
    ], kdf=kdf)
    events = await _publish_tone_to_official(any_server, ours, proc, 750.0)
    res = step(events, "subscribe_detect_tone")
    assert abs(res["freq"] - 750.0) < 8, res
    assert res["rms"] > 500, res
    states = [e["state"] for e in events_of(events, "e2ee_state") if e["identity"] == OURS]
    if client == "official_py":
        assert states and states[0] == int(EncryptionState.OK), events_of(events, "e2ee_state")


@pytest.mark.compat("e2ee")
async def test_video_official_to_aiolivekit(any_server: ServerInfo, client: str, rooms: list[Room]) -> None:
    ours = await _room(any_server, _options(KEY))
    rooms.append(ours)
    tracks: list[Any] = []
    ours.on("track_subscribed", lambda track, pub, p: tracks.append(track))
    proc = _theirs(client, any_server, [
        {"op": "publish_video", "width": 320, "height": 240, "color": list(COLOR),
         "seconds": 10, "fps": 15},
        {"op": "wait_signal", "name": "done", "timeout": 40},
    ])
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: bool(tracks), what="official video track", proc=proc)
        stream = VideoStream(tracks[0])
        frames: list[Any] = []

        async def collect() -> None:
            async for ev in stream:
                frames.append(ev.frame)
                if len(frames) >= 10:
                    return
        try:
            await asyncio.wait_for(collect(), TIMEOUT)
        finally:
            await stream.aclose()
        proc.signal("done")
        await proc.finish()
    last = frames[-1].convert(VideoBufferType.RGBA)
    assert (last.width, last.height) == (320, 240)
    arr = np.frombuffer(bytes(last.data), dtype=np.uint8).reshape(240, 320, 4)
    mean = arr[60:180, 80:240, :3].reshape(-1, 3).mean(axis=0).tolist()
    assert _close_to(mean, COLOR), mean


@pytest.mark.compat("e2ee")
@pytest.mark.parametrize("codec", [VideoCodec.VP8, VideoCodec.H264])
async def test_video_aiolivekit_to_official(any_server: ServerInfo, client: str, rooms: list[Room],
                                            codec: VideoCodec) -> None:
    ours = await _room(any_server, _options(KEY))
    rooms.append(ours)
    w, h = 320, 240
    source = VideoSource(w, h)
    track = LocalVideoTrack.create_video_track("ours-video", source)
    rgba = np.empty((h, w, 4), dtype=np.uint8)
    rgba[:] = (*COLOR, 255)
    stop = asyncio.Event()

    async def pump() -> None:
        for _ in range(300):
            if stop.is_set():
                return
            source.capture_frame(VideoFrame(w, h, VideoBufferType.RGBA, rgba.tobytes()))
            await asyncio.sleep(1 / 15)

    proc = _theirs(client, any_server, [
        {"op": "subscribe_video", "identity": OURS, "frames": 10, "timeout": 25},
    ])
    task = None
    try:
        async with proc:
            await _start_synced(ours, proc)
            opts = TrackPublishOptions(source=TrackSource.SOURCE_CAMERA, video_codec=codec)
            await asyncio.wait_for(ours.local_participant.publish_track(track, opts), TIMEOUT)
            task = asyncio.ensure_future(pump())
            events = await proc.finish()
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 5)
        await source.aclose()
    res = step(events, "subscribe_video")
    assert (res["width"], res["height"]) == (w, h), res
    assert res["frames"] >= 10, res
    assert _close_to(res["mean_rgb"], COLOR), res


@pytest.mark.compat("e2ee")
async def test_wrong_key_official_to_aiolivekit(any_server: ServerInfo, client: str,
                                                rooms: list[Room]) -> None:
    ours = await _room(any_server, _options("a-different-key"))
    rooms.append(ours)
    tracks: list[Any] = []
    states: list[EncryptionState] = []
    ours.on("track_subscribed", lambda track, pub, p: tracks.append(track))
    ours.on("e2ee_state_changed", lambda p, state: states.append(state))
    proc = _theirs(client, any_server, [
        {"op": "publish_tone", "freq": 600, "seconds": 8},
        {"op": "wait_signal", "name": "done", "timeout": 40},
    ])
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: bool(tracks), what="official audio track", proc=proc)
        pcm = await _listen_until(tracks[0], lambda: EncryptionState.DECRYPTION_FAILED in states,
                                  at_least=4.0, timeout=10, what="DECRYPTION_FAILED reported",
                                  proc=proc)
        proc.signal("done")
        await proc.finish()
    assert len(pcm) == 0 or int(np.abs(pcm).max()) < 500
    assert EncryptionState.OK not in states
    assert ours.isconnected()


@pytest.mark.compat("e2ee")
async def test_wrong_key_aiolivekit_to_official(any_server: ServerInfo, client: str,
                                                rooms: list[Room]) -> None:
    """The official SDK (failure_tolerance 0 so that it reports) decodes nothing and
    reports DECRYPTION_FAILED for our track (rtc-node's driver reports no states)."""
    ours = await _room(any_server, _options(KEY))
    rooms.append(ours)
    proc = _theirs(client, any_server, [
        {"op": "subscribe_detect_tone", "identity": OURS, "seconds": 1.0, "timeout": 8,
         "optional": True},
        {"op": "sleep", "seconds": 1},
    ], key="a-different-key", e2ee_failure_tolerance=0)
    events = await _publish_tone_to_official(any_server, ours, proc, 750.0)
    res = step(events, "subscribe_detect_tone")
    assert not res["ok"] or res["rms"] < 500, res
    states = [e["state"] for e in events_of(events, "e2ee_state") if e["identity"] == OURS]
    if client == "official_py":
        assert int(EncryptionState.DECRYPTION_FAILED) in states, events_of(events, "e2ee_state")
    assert int(EncryptionState.OK) not in states


@pytest.mark.compat("e2ee_data")
async def test_encrypted_data_and_rpc_both_ways(any_server: ServerInfo, client: str,
                                                rooms: list[Room]) -> None:
    """User packets, text streams and RPC between aiolivekit and the official SDK, both
    with the shared key: whatever the official SDK sends encrypted (``encrypted_packet``)
    we decrypt, and it decrypts ours."""
    from aiolivekit.data import packets as packets_mod

    ours = await _room(any_server, _options(KEY))
    rooms.append(ours)
    got: list[Any] = []
    ours.on("data_received", lambda pkt: got.append(pkt))
    wire: list[str | None] = []
    original = packets_mod.decode_packet

    def spy(data: bytes) -> Any:
        packet = original(data)
        wire.append(packet.WhichOneof("value"))
        return packet
    calls: list[str] = []

    async def echo(data: Any) -> str:
        calls.append(data.payload)
        return "echo:" + data.payload
    ours.local_participant.register_rpc_method("echo", echo)
    proc = _theirs(client, any_server, [
        {"op": "register_rpc", "method": "upper", "behaviour": {"type": "echo"}},
        {"op": "send_data", "payload": "from-official", "topic": "o2a", "count": 2},
        {"op": "perform_rpc", "dest": OURS, "method": "echo", "payload": "hello",
         "label": "calls-done"},
        {"op": "expect_data", "topic": "a2o", "count": 2, "timeout": TIMEOUT},
        {"op": "expect_text", "topic": "chat", "count": 1, "timeout": TIMEOUT},
        {"op": "wait_signal", "name": "done", "timeout": 40},
    ], stream_topics=["chat"])
    import aiolivekit.room as room_mod
    room_mod.packets.decode_packet = spy  # type: ignore[attr-defined]
    try:
        async with proc:
            await _start_synced(ours, proc)
            await proc.wait_for(lambda e: e.get("label") == "calls-done", timeout=40)
            await _wait(lambda: len(got) >= 2, what="2 packets from the official SDK", proc=proc)
            await ours.local_participant.publish_data(b"from-aiolivekit-1", topic="a2o")
            await ours.local_participant.publish_data(b"from-aiolivekit-2", topic="a2o")
            await ours.local_participant.send_text("encrypted text", topic="chat")
            result = await ours.local_participant.perform_rpc(
                destination_identity="theirs", method="upper", payload="ping")
            proc.signal("done")
            events = await proc.finish()
    finally:
        room_mod.packets.decode_packet = original  # type: ignore[attr-defined]
    assert [(p.data, p.topic) for p in got] == [(b"from-official", "o2a")] * 2
    assert calls == ["hello"] and result == "ping"
    assert step(events, "perform_rpc")["result"] == "echo:hello"
    items = step(events, "expect_data")["items"]
    assert [(i["payload"], i["sender"]) for i in items] == [
        ("from-aiolivekit-1", OURS), ("from-aiolivekit-2", OURS)]
    assert [i["text"] for i in step(events, "expect_text")["items"]] == ["encrypted text"]
    assert "user" not in wire and "encrypted_packet" in wire, wire
