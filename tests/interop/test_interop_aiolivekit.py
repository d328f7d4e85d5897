"""aiolivekit against each official client, through both servers.

One side is an aiolivekit ``Room`` in this process; the other is an official client in a
subprocess (official Python SDK, @livekit/rtc-node, livekit-client in Chromium), driven by
the step language of ``tests/interop/drivers``. Every capability is a separate test so that
the compatibility matrix (docs/compat.md) shows it per client and server.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from aiolivekit import (
    AudioFrame,
    AudioSource,
    AudioStream,
    LocalAudioTrack,
    LocalVideoTrack,
    Room,
    RpcError,
    TrackKind,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoFrame,
    VideoSource,
    VideoStream,
)
from aiolivekit.testing.servers import ServerInfo

from .official import (
    DriverProcess,
    events_of,
    official_available,
    ready_steps,
    start_driver,
    step,
    steps,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

CLIENTS = ["official_py", "node", "browser"]
OURS = "ours"
THEIRS = "theirs"
TIMEOUT = 20.0


_READERS: set[asyncio.Future[Any]] = set()


def _spawn_reader(coro: Any) -> None:
    """Run a stream reader in the background, keeping a reference until it ends."""
    task = asyncio.ensure_future(coro)
    _READERS.add(task)
    task.add_done_callback(_READERS.discard)


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    reason = official_available(request.param)
    if reason:
        pytest.skip(reason)
    return str(request.param)


@pytest.fixture
async def ours(any_server: ServerInfo) -> AsyncIterator[Room]:
    room = Room()
    await asyncio.wait_for(room.connect(any_server.url, any_server.token(OURS)), TIMEOUT)
    try:
        yield room
    finally:
        await asyncio.wait_for(room.disconnect(), TIMEOUT)


async def _wait(
    pred: Callable[[], bool],
    timeout: float = TIMEOUT,
    what: str = "",
    proc: DriverProcess | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what or pred}"
            raise AssertionError(proc.describe(msg) if proc is not None else msg)
        await asyncio.sleep(0.05)


async def _start_synced(room: Room, proc: DriverProcess) -> None:
    """Start the driver, wait until both sides see each other, then release it."""
    await proc.start()
    await proc.wait_for(lambda e: e.get("label") == "ready", timeout=60)
    await _wait(
        lambda: THEIRS in room.remote_participants, what="official peer in our room", proc=proc
    )
    proc.signal("go")


def _driver(
    client: str, server: ServerInfo, body: list[dict[str, Any]], **connect: Any
) -> DriverProcess:
    return start_driver(
        client,
        [
            {"op": "connect", "url": server.url, "token": server.token(THEIRS), **connect},
            *ready_steps(OURS),
            *body,
        ],
        timeout=90,
    )


def _dominant(pcm: np.ndarray, rate: int) -> float:
    x = pcm.astype(np.float64)
    x -= x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spec[0] = 0
    k = int(np.argmax(spec))
    return k * rate / len(x)


@pytest.mark.compat("connect", "data")
async def test_data_both_ways(any_server: ServerInfo, client: str, ours: Room) -> None:
    got: list[Any] = []
    ours.on("data_received", lambda pkt: got.append(pkt))
    proc = _driver(
        client,
        any_server,
        [
            {"op": "send_data", "payload": "from-official", "topic": "o2a", "count": 3},
            {"op": "expect_data", "topic": "a2o", "count": 2, "timeout": TIMEOUT},
        ],
    )
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: len(got) >= 3, what="3 packets from the official client", proc=proc)
        await ours.local_participant.publish_data(b"from-aiolivekit-1", topic="a2o")
        await ours.local_participant.publish_data("from-aiolivekit-2", topic="a2o")
        events = await proc.finish()
    assert [(p.data, p.topic, p.participant.identity) for p in got] == [
        (b"from-official", "o2a", THEIRS)
    ] * 3
    items = step(events, "expect_data")["items"]
    assert [(i["payload"], i["topic"], i["sender"]) for i in items] == [
        ("from-aiolivekit-1", "a2o", OURS),
        ("from-aiolivekit-2", "a2o", OURS),
    ]


@pytest.mark.compat("rpc")
async def test_rpc_both_ways(any_server: ServerInfo, client: str, ours: Room) -> None:
    calls: list[tuple[str, str]] = []

    async def echo(data: Any) -> str:
        calls.append((data.caller_identity, data.payload))
        return "echo:" + data.payload

    async def fail(data: Any) -> str:
        raise RpcError(2002, "aiolivekit says no", "some-data")

    ours.local_participant.register_rpc_method("echo", echo)
    ours.local_participant.register_rpc_method("fail", fail)
    proc = _driver(
        client,
        any_server,
        [
            {"op": "register_rpc", "method": "upper", "behaviour": {"type": "echo"}},
            {
                "op": "register_rpc",
                "method": "boom",
                "behaviour": {
                    "type": "error",
                    "code": 2003,
                    "message": "official says no",
                    "data": "d",
                },
            },
            {"op": "perform_rpc", "dest": OURS, "method": "echo", "payload": "hello"},
            {"op": "perform_rpc", "dest": OURS, "method": "fail", "payload": "x"},
            {
                "op": "perform_rpc",
                "dest": OURS,
                "method": "nope",
                "payload": "x",
                "label": "calls-done",
            },
            {"op": "wait_signal", "name": "done", "timeout": 40},
        ],
    )
    async with proc:
        await _start_synced(ours, proc)
        await proc.wait_for(lambda e: e.get("label") == "calls-done", timeout=40)
        result = await ours.local_participant.perform_rpc(
            destination_identity=THEIRS, method="upper", payload="ping"
        )
        with pytest.raises(RpcError) as err:
            await ours.local_participant.perform_rpc(
                destination_identity=THEIRS, method="boom", payload="x"
            )
        proc.signal("done")
        events = await proc.finish()
    echo_res, fail_res, missing = steps(events, "perform_rpc")
    assert echo_res.get("result") == "echo:hello", echo_res
    assert fail_res.get("error") == {
        "code": 2002,
        "message": "aiolivekit says no",
        "data": "some-data",
    }, fail_res
    assert missing.get("error", {}).get("code") == 1400, missing
    assert calls == [(THEIRS, "hello")]
    assert result == "ping"
    assert (err.value.code, err.value.message, err.value.data) == (2003, "official says no", "d")
    assert [(i["method"], i["caller"]) for i in events_of(events, "rpc_invocation")] == [
        ("upper", OURS),
        ("boom", OURS),
    ]


@pytest.mark.compat("text_stream")
async def test_text_stream_both_ways(any_server: ServerInfo, client: str, ours: Room) -> None:
    received: list[tuple[str, str, str]] = []

    def on_text(reader: Any, sender: str) -> None:
        async def read() -> None:
            received.append((sender, reader.info.topic, await reader.read_all()))

        _spawn_reader(read())

    ours.register_text_stream_handler("chat", on_text)
    long_text = "0123456789abcdef" * 1000  # 16 KB: several chunks
    proc = _driver(
        client,
        any_server,
        [
            {"op": "send_text", "topic": "chat", "text": "hello from official \u00e9"},
            {"op": "send_text", "topic": "chat", "text": "0123456789abcdef", "repeat": 1000},
            {"op": "expect_text", "topic": "reply", "count": 1, "timeout": TIMEOUT},
        ],
        stream_topics=["reply"],
    )
    async with proc:
        await _start_synced(ours, proc)
        await _wait(
            lambda: len(received) >= 2, what="2 text streams from the official client", proc=proc
        )
        await ours.local_participant.send_text("reply from aiolivekit \u00fc", topic="reply")
        events = await proc.finish()
    assert sorted(received, key=lambda r: len(r[2])) == [
        (THEIRS, "chat", "hello from official \u00e9"),
        (THEIRS, "chat", long_text),
    ]
    item = step(events, "expect_text")["items"][0]
    assert (item["text"], item["sender"], item["topic"]) == (
        "reply from aiolivekit \u00fc",
        OURS,
        "reply",
    )


@pytest.mark.compat("audio")
async def test_audio_tone_official_to_aiolivekit(
    any_server: ServerInfo, client: str, ours: Room
) -> None:
    tracks: list[Any] = []
    ours.on("track_subscribed", lambda track, pub, p: tracks.append(track))
    proc = _driver(
        client,
        any_server,
        [
            {"op": "publish_tone", "freq": 600, "seconds": 8},
            {"op": "wait_signal", "name": "done", "timeout": 40},
        ],
    )
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: bool(tracks), what="official audio track subscribed", proc=proc)
        assert tracks[0].kind == TrackKind.KIND_AUDIO
        stream = AudioStream(tracks[0], sample_rate=48000, num_channels=1)
        chunks: list[np.ndarray] = []

        async def collect() -> None:
            n = 0
            async for ev in stream:
                pcm = np.frombuffer(bytes(ev.frame.data), dtype=np.int16)
                n += len(pcm)
                if n > 24000:  # skip the first 0.5 s (jitter buffer, fade in)
                    chunks.append(pcm)
                if n > 24000 + 72000:
                    return

        try:
            await asyncio.wait_for(collect(), TIMEOUT)
        finally:
            await stream.aclose()
        proc.signal("done")
        await proc.finish()
    pcm = np.concatenate(chunks)
    assert abs(_dominant(pcm, 48000) - 600) < 8
    assert float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 500


@pytest.mark.compat("audio")
async def test_audio_tone_aiolivekit_to_official(
    any_server: ServerInfo, client: str, ours: Room
) -> None:
    rate, freq = 48000, 750.0
    source = AudioSource(rate, 1)
    track = LocalAudioTrack.create_audio_track("ours-tone", source)
    stop = asyncio.Event()

    async def pump() -> None:
        n = 0
        start = time.monotonic()
        for i in range(1500):  # at most 15 s
            if stop.is_set():
                return
            t = (np.arange(480) + n) / rate
            n += 480
            pcm = (0.3 * 32767 * np.sin(2 * math.pi * freq * t)).astype(np.int16)
            await source.capture_frame(AudioFrame(pcm.tobytes(), rate, 1, 480))
            ahead = start + (i + 1) / 100 - time.monotonic()
            if ahead > 0.02:
                await asyncio.sleep(ahead - 0.02)

    proc = _driver(
        client,
        any_server,
        [
            {"op": "subscribe_detect_tone", "identity": OURS, "seconds": 1.5, "timeout": 25},
        ],
    )
    task = None
    try:
        async with proc:
            await _start_synced(ours, proc)
            opts = TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE)
            await asyncio.wait_for(ours.local_participant.publish_track(track, opts), TIMEOUT)
            task = asyncio.ensure_future(pump())
            events = await proc.finish()
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 5)
    res = step(events, "subscribe_detect_tone")
    assert abs(res["freq"] - freq) < 8, res
    assert res["rms"] > 500, res


@pytest.mark.compat("dtmf")
async def test_dtmf_both_ways(any_server: ServerInfo, client: str, ours: Room) -> None:
    got: list[Any] = []
    ours.on("sip_dtmf_received", lambda d: got.append(d))
    proc = _driver(
        client,
        any_server,
        [
            {"op": "publish_dtmf", "code": 3, "digit": "3"},
            {"op": "expect_dtmf", "timeout": TIMEOUT},
        ],
    )
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: bool(got), what="DTMF from the official client", proc=proc)
        await ours.local_participant.publish_dtmf(code=11, digit="#")
        events = await proc.finish()
    assert (got[0].code, got[0].digit, got[0].participant.identity) == (3, "3", THEIRS)
    item = step(events, "expect_dtmf")["items"][0]
    assert (item["code"], item["digit"], item["sender"]) == (11, "#", OURS)


COLOR = (200, 40, 40)


def _close_to(rgb: list[float], want: tuple[int, int, int], tol: float = 45) -> bool:
    """Same colour within ``tol`` per channel (codecs and colour-range conversions shift it)."""
    return all(abs(a - b) <= tol for a, b in zip(rgb, want, strict=True))


@pytest.mark.compat("video")
async def test_video_official_to_aiolivekit(
    any_server: ServerInfo, client: str, ours: Room
) -> None:
    tracks: list[Any] = []
    ours.on("track_subscribed", lambda track, pub, p: tracks.append(track))
    proc = _driver(
        client,
        any_server,
        [
            {
                "op": "publish_video",
                "width": 320,
                "height": 240,
                "color": list(COLOR),
                "seconds": 10,
                "fps": 15,
            },
            {"op": "wait_signal", "name": "done", "timeout": 40},
        ],
    )
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: bool(tracks), what="official video track subscribed", proc=proc)
        assert tracks[0].kind == TrackKind.KIND_VIDEO
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


@pytest.mark.compat("video")
async def test_video_aiolivekit_to_official(
    any_server: ServerInfo, client: str, ours: Room
) -> None:
    w, h = 320, 240
    source = VideoSource(w, h)
    track = LocalVideoTrack.create_video_track("ours-video", source)
    rgba = np.empty((h, w, 4), dtype=np.uint8)
    rgba[:] = (*COLOR, 255)
    stop = asyncio.Event()

    async def pump() -> None:
        for _ in range(300):  # at most 20 s at 15 fps
            if stop.is_set():
                return
            source.capture_frame(VideoFrame(w, h, VideoBufferType.RGBA, rgba.tobytes()))
            await asyncio.sleep(1 / 15)

    proc = _driver(
        client,
        any_server,
        [
            {"op": "subscribe_video", "identity": OURS, "frames": 10, "timeout": 25},
        ],
    )
    task = None
    try:
        async with proc:
            await _start_synced(ours, proc)
            opts = TrackPublishOptions(source=TrackSource.SOURCE_CAMERA)
            await asyncio.wait_for(ours.local_participant.publish_track(track, opts), TIMEOUT)
            task = asyncio.ensure_future(pump())
            events = await proc.finish()
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 5)
    res = step(events, "subscribe_video")
    assert (res["width"], res["height"]) == (w, h), res
    assert res["frames"] >= 10 or client == "browser", res
    assert _close_to(res["mean_rgb"], COLOR), res


@pytest.mark.compat("byte_stream")
async def test_byte_stream_both_ways(any_server: ServerInfo, client: str, ours: Room) -> None:
    received: list[tuple[str, str, bytes]] = []

    def on_bytes(reader: Any, sender: str) -> None:
        async def read() -> None:
            chunks = [c async for c in reader]
            received.append((sender, reader.info.name, b"".join(chunks)))

        _spawn_reader(read())

    ours.register_byte_stream_handler("files", on_bytes)
    blob = bytes(range(256)) * 200  # 51 200 bytes: several chunks
    proc = _driver(
        client,
        any_server,
        [
            {
                "op": "send_bytes",
                "topic": "files",
                "name": "blob.bin",
                "payload_b64": base64.b64encode(blob).decode(),
            },
            {"op": "expect_bytes", "topic": "back", "count": 1, "timeout": TIMEOUT},
        ],
        stream_topics=["back"],
    )
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: bool(received), what="byte stream from the official client", proc=proc)
        await ours.local_participant.send_bytes(
            b"\x00\x01binary\xff" * 3, topic="back", name="reply.bin"
        )
        events = await proc.finish()
    assert received == [(THEIRS, "blob.bin", blob)]
    item = step(events, "expect_bytes")["items"][0]
    assert (item["sender"], item["topic"], item["name"]) == (OURS, "back", "reply.bin")
    assert base64.b64decode(item["payload_b64"]) == b"\x00\x01binary\xff" * 3


@pytest.mark.compat("data_lossy", "data_targeted")
async def test_data_lossy_and_targeted(any_server: ServerInfo, client: str, ours: Room) -> None:
    third = Room()
    await asyncio.wait_for(third.connect(any_server.url, any_server.token("third")), TIMEOUT)
    got: list[Any] = []
    got_third: list[Any] = []
    ours.on("data_received", lambda pkt: got.append(pkt))
    third.on("data_received", lambda pkt: got_third.append(pkt))
    try:
        proc = _driver(
            client,
            any_server,
            [
                {"op": "wait_participant", "identity": "third", "timeout": TIMEOUT},
                {
                    "op": "send_data",
                    "payload": "lossy",
                    "topic": "l",
                    "reliable": False,
                    "count": 5,
                },
                {"op": "send_data", "payload": "only-ours", "topic": "dm", "destinations": [OURS]},
                {"op": "expect_data", "topic": "dm", "count": 1, "timeout": TIMEOUT},
                {"op": "expect_data", "topic": "l", "count": 1, "timeout": TIMEOUT},
            ],
        )
        async with proc:
            await _start_synced(ours, proc)
            await _wait(
                lambda: any(p.topic == "dm" for p in got), what="targeted packet", proc=proc
            )
            await ours.local_participant.publish_data(
                b"only-theirs", topic="dm", destination_identities=[THEIRS]
            )
            for _ in range(5):
                await ours.local_participant.publish_data(b"lossy-back", topic="l", reliable=False)
            events = await proc.finish()
        await asyncio.sleep(0.5)  # anything misrouted to the third participant arrives by now
    finally:
        await asyncio.wait_for(third.disconnect(), TIMEOUT)
    lossy = [p for p in got if p.topic == "l"]
    assert lossy and all(p.data == b"lossy" and p.kind == 0 for p in lossy), lossy
    assert [(p.data, p.participant.identity) for p in got if p.topic == "dm"] == [
        (b"only-ours", THEIRS)
    ]
    assert [p.topic for p in got_third] == ["l"] * len(got_third)  # no "dm" for the third
    dm = step(events, "expect_data", 0)["items"]
    assert [(i["payload"], i["sender"]) for i in dm] == [("only-theirs", OURS)]
    assert step(events, "expect_data", 1)["items"][0]["payload"] == "lossy-back"


@pytest.mark.compat("fake_devices", client="browser")
async def test_browser_fake_mic_and_camera_to_aiolivekit(
    any_server: ServerInfo, ours: Room
) -> None:
    reason = official_available("browser")
    if reason:
        pytest.skip(reason)
    tracks: dict[int, Any] = {}
    ours.on("track_subscribed", lambda track, pub, p: tracks.setdefault(int(track.kind), track))
    proc = _driver(
        "browser",
        any_server,
        [
            {"op": "publish_mic"},
            {"op": "publish_camera", "width": 320, "height": 240},
            {"op": "wait_signal", "name": "done", "timeout": 40},
        ],
    )
    async with proc:
        await _start_synced(ours, proc)
        await _wait(lambda: len(tracks) == 2, what="fake mic and camera subscribed", proc=proc)
        video = VideoStream(tracks[int(TrackKind.KIND_VIDEO)])
        audio = AudioStream(tracks[int(TrackKind.KIND_AUDIO)], sample_rate=48000, num_channels=1)
        frames: list[Any] = []
        pcm: list[np.ndarray] = []

        async def read_video() -> None:
            async for ev in video:
                frames.append(ev.frame)
                if len(frames) >= 10:
                    return

        async def read_audio() -> None:
            n = 0
            async for ev in audio:
                pcm.append(np.frombuffer(bytes(ev.frame.data), dtype=np.int16))
                n += len(pcm[-1])
                if n >= 48000 * 2:
                    return

        try:
            await asyncio.wait_for(asyncio.gather(read_video(), read_audio()), TIMEOUT)
        finally:
            await video.aclose()
            await audio.aclose()
        proc.signal("done")
        await proc.finish()
    assert len(frames) >= 10 and frames[-1].width > 0 and frames[-1].height > 0
    # Chromium's fake microphone beeps: two seconds of it are not silence
    assert float(np.abs(np.concatenate(pcm).astype(np.int32)).max()) > 1000
