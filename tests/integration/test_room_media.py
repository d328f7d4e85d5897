"""Media through real servers: audio tone (FFT), video counters (VP8/H264), mute, unpublish,
set_subscribed, auto_subscribe=False, wait_for_subscription, event order."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from aiolivekit import (
    AudioFrame,
    AudioSource,
    AudioStream,
    LocalAudioTrack,
    LocalVideoTrack,
    RemoteAudioTrack,
    RemoteVideoTrack,
    Room,
    TrackKind,
    TrackPublishOptions,
    TrackSource,
    VideoBufferType,
    VideoCodec,
    VideoFrame,
    VideoSource,
    VideoStream,
)
from aiolivekit.track_publication import LocalTrackPublication, RemoteTrackPublication
from aiolivekit.types import EncryptionType, RoomOptions

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TIMEOUT = 15.0
RATE = 48000


class Recorder:
    def __init__(self, room: Room, *names: str) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        for name in names:
            room.on(name, self._make(name))

    def _make(self, name: str) -> Callable[..., None]:
        def handler(*args: Any) -> None:
            self.events.append((name, args))
        return handler

    def names(self) -> list[str]:
        return [n for n, _ in self.events]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async def loop() -> None:
            while not pred():
                await asyncio.sleep(0.02)
        await asyncio.wait_for(loop(), timeout)


REMOTE_EVENTS = ("participant_connected", "participant_disconnected", "track_published",
                 "track_unpublished", "track_subscribed", "track_unsubscribed", "track_muted",
                 "track_unmuted")


async def _join(server: Any, rooms: list[Room], identity: str,
                options: RoomOptions | None = None) -> Room:
    room = Room()
    rooms.append(room)
    await asyncio.wait_for(room.connect(server.url, server.token(identity), options), 30)
    return room


class Tone:
    """Feeds a sine wave into an AudioSource in 10 ms frames (real time, paced by the source)."""

    def __init__(self, freq: float, channels: int = 1) -> None:
        self.freq = freq
        self.source = AudioSource(RATE, channels)
        self._n = 0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        ch = self.source.num_channels
        while True:
            t = (np.arange(480) + self._n * 480) / RATE
            s = (np.sin(2 * np.pi * self.freq * t) * 12000).astype(np.int16)
            data = np.repeat(s, ch) if ch > 1 else s
            await self.source.capture_frame(AudioFrame(data.tobytes(), RATE, ch, 480))
            self._n += 1

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self.source.aclose()


async def peak_frequency(track: Any, seconds: float = 0.7) -> float:
    stream = AudioStream(track, sample_rate=RATE, num_channels=1)
    chunks: list[np.ndarray] = []

    async def collect() -> None:
        async for ev in stream:
            chunks.append(np.frombuffer(ev.frame.data, dtype=np.int16).copy())
            if sum(len(c) for c in chunks) >= RATE * seconds:
                return
    try:
        await asyncio.wait_for(collect(), TIMEOUT)
    finally:
        await stream.aclose()
    x = np.concatenate(chunks)[-16384:].astype(np.float64)
    assert np.abs(x).max() > 1000, "received silence"
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[int(np.argmax(spectrum))])


async def wait_track(pub: RemoteTrackPublication) -> Any:
    for _ in range(int(TIMEOUT / 0.02)):
        if pub.track is not None:
            return pub.track
        await asyncio.sleep(0.02)
    raise AssertionError(f"no track for {pub.sid}")


async def remote_pub(room: Room, identity: str) -> RemoteTrackPublication:
    for _ in range(int(TIMEOUT / 0.02)):
        p = room.remote_participants.get(identity)
        if p is not None and p.track_publications:
            return next(iter(p.track_publications.values()))
        await asyncio.sleep(0.02)
    raise AssertionError(f"{identity} published nothing")


# ----------------------------------------------------------------------------- audio


@pytest.mark.compat('audio', 'mute', client="aiolivekit")
async def test_audio_tone_event_order_and_publication_fields(any_server: Any,
                                                              rooms: list[Room]) -> None:
    bob = await _join(any_server, rooms, "bob")
    rec = Recorder(bob, *REMOTE_EVENTS)
    alice = await _join(any_server, rooms, "alice")
    rec_a = Recorder(alice, "local_track_published", "local_track_subscribed",
                     "local_track_unpublished")
    tone = Tone(440)
    try:
        track = LocalAudioTrack.create_audio_track("mic", tone.source)
        pub = await alice.local_participant.publish_track(
            track, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        assert isinstance(pub, LocalTrackPublication) and pub.sid.startswith("TR_")
        assert (pub.name, pub.kind, pub.source, pub.mime_type) == (
            "mic", TrackKind.KIND_AUDIO, TrackSource.SOURCE_MICROPHONE, "audio/opus")
        assert pub.track is track and track.sid == pub.sid
        assert alice.local_participant.track_publications[pub.sid] is pub
        assert rec_a.events[0] == ("local_track_published", (pub, track))
        await asyncio.wait_for(pub.wait_for_subscription(), TIMEOUT)
        await rec_a.wait_for(lambda: "local_track_subscribed" in rec_a.names())
        assert rec_a.events[1] == ("local_track_subscribed", (track,))

        await rec.wait_for(lambda: "track_subscribed" in rec.names())
        assert rec.names() == ["participant_connected", "track_published", "track_subscribed"]
        rp = bob.remote_participants["alice"]
        (rpub,) = rp.track_publications.values()
        assert rec.events[1][1] == (rpub, rp)
        rtrack, rpub2, rp2 = rec.events[2][1]
        assert isinstance(rtrack, RemoteAudioTrack) and rpub2 is rpub and rp2 is rp
        assert rpub.subscribed and rpub.track is rtrack and rtrack.sid == pub.sid
        assert (rpub.sid, rpub.name, rpub.kind, rpub.source) == (
            pub.sid, "mic", TrackKind.KIND_AUDIO, TrackSource.SOURCE_MICROPHONE)
        assert rpub.encryption_type == EncryptionType.NONE and not rpub.muted
        assert rpub.mime_type.lower() in ("", "audio/opus")
        assert abs(await peak_frequency(rtrack) - 440) < 10
        a_stats = await alice.get_rtc_stats()
        assert any(s.type == "outbound-rtp" and s.kind == "audio" and s.packetsSent > 0
                   for s in a_stats.publisher_stats)
        b_stats = await bob.get_rtc_stats()
        assert any(s.type == "inbound-rtp" and s.kind == "audio" and s.packetsReceived > 0
                   for s in b_stats.subscriber_stats)

        # mute / unmute reach the other side (and the local room)
        rec_local = Recorder(alice, "track_muted", "track_unmuted")
        track.mute()
        await rec.wait_for(lambda: "track_muted" in rec.names())
        assert rec.events[-1] == ("track_muted", (rp, rpub)) and rpub.muted
        assert rtrack.muted and pub.muted
        assert rec_local.events == [("track_muted", (alice.local_participant, pub))]
        track.unmute()
        await rec.wait_for(lambda: "track_unmuted" in rec.names())
        assert rec.events[-1] == ("track_unmuted", (rp, rpub)) and not rpub.muted
        assert abs(await peak_frequency(rtrack) - 440) < 10

        # unpublish: unsubscribed before unpublished
        n = len(rec.events)
        await alice.local_participant.unpublish_track(pub.sid)
        assert rec_a.events[-1] == ("local_track_unpublished", (pub,))
        assert pub.track is None and pub.sid not in alice.local_participant.track_publications
        await rec.wait_for(lambda: "track_unpublished" in rec.names())
        assert rec.events[n:] == [("track_unsubscribed", (rtrack, rpub, rp)),
                                  ("track_unpublished", (rpub, rp))]
        assert rpub.track is None and not rpub.subscribed and not rp.track_publications
    finally:
        await tone.close()


async def _audio_packets_received(room: Room) -> int:
    stats = await room.get_rtc_stats()
    return sum(s.packetsReceived for s in stats.subscriber_stats
               if s.type == "inbound-rtp" and s.kind == "audio")


async def test_audio_nobody_reads_is_not_decoded(any_server: Any, rooms: list[Room]) -> None:
    """Packets of a subscribed track keep arriving while no AudioStream reads it, but none
    is decoded; a stream brings the decoded tone back."""
    bob = await _join(any_server, rooms, "bob")
    alice = await _join(any_server, rooms, "alice")
    tone = Tone(520)
    try:
        track = LocalAudioTrack.create_audio_track("mic", tone.source)
        await alice.local_participant.publish_track(
            track, TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        rtrack = await wait_track(await remote_pub(bob, "alice"))
        await asyncio.sleep(0.3)
        packets, frames = await _audio_packets_received(bob), rtrack.frames_received
        await asyncio.sleep(1.0)
        assert await _audio_packets_received(bob) - packets > 25  # 50 packets/s arrive
        assert rtrack.frames_received == frames  # ... and none is decoded
        assert abs(await peak_frequency(rtrack) - 520) < 10
        assert rtrack.frames_received > frames
    finally:
        await tone.close()


async def test_two_audio_tracks_published_concurrently(any_server: Any,
                                                        rooms: list[Room]) -> None:
    """Two same-kind tracks at once: each remote track carries its own tone (msid mapping
    and SSRC routing per m-line), and unpublishing one leaves the other playing."""
    bob = await _join(any_server, rooms, "bob")
    alice = await _join(any_server, rooms, "alice")
    low, high = Tone(440), Tone(1000)
    try:
        lp = alice.local_participant
        pub_low, pub_high = await asyncio.gather(
            lp.publish_track(LocalAudioTrack.create_audio_track("low", low.source)),
            lp.publish_track(LocalAudioTrack.create_audio_track("high", high.source)))
        assert pub_low.sid != pub_high.sid
        for _ in range(int(TIMEOUT / 0.02)):
            rp = bob.remote_participants.get("alice")
            if rp is not None and len(rp.track_publications) == 2:
                break
            await asyncio.sleep(0.02)
        rp = bob.remote_participants["alice"]
        r_low = await wait_track(rp.track_publications[pub_low.sid])
        r_high = await wait_track(rp.track_publications[pub_high.sid])
        assert rp.track_publications[pub_low.sid].name == "low"
        assert abs(await peak_frequency(r_low) - 440) < 10
        assert abs(await peak_frequency(r_high) - 1000) < 10
        await lp.unpublish_track(pub_low.sid)
        for _ in range(int(TIMEOUT / 0.02)):
            if pub_low.sid not in rp.track_publications:
                break
            await asyncio.sleep(0.02)
        assert list(rp.track_publications) == [pub_high.sid]
        assert abs(await peak_frequency(r_high) - 1000) < 10
    finally:
        await low.close()
        await high.close()


async def test_republish_after_unpublish_recycled_mline(any_server: Any,
                                                         rooms: list[Room]) -> None:
    """The server reuses the subscriber m-line of an unpublished track for the next one
    (new SSRC, no aiortc track event): the new track must still play."""
    bob = await _join(any_server, rooms, "bob")
    alice = await _join(any_server, rooms, "alice")
    rec = Recorder(bob, "track_subscribed", "track_unsubscribed")
    first, second = Tone(440), Tone(660)
    try:
        lp = alice.local_participant
        pub1 = await lp.publish_track(LocalAudioTrack.create_audio_track("one", first.source))
        r1 = await wait_track(await remote_pub(bob, "alice"))
        assert abs(await peak_frequency(r1) - 440) < 10
        await lp.unpublish_track(pub1.sid)
        await rec.wait_for(lambda: "track_unsubscribed" in rec.names())
        pub2 = await lp.publish_track(LocalAudioTrack.create_audio_track("two", second.source))
        for _ in range(int(TIMEOUT / 0.02)):
            rp = bob.remote_participants["alice"]
            if pub2.sid in rp.track_publications:
                break
            await asyncio.sleep(0.02)
        r2 = await wait_track(bob.remote_participants["alice"].track_publications[pub2.sid])
        assert r2 is not r1 and r2.sid == pub2.sid
        assert abs(await peak_frequency(r2) - 660) < 10
        assert rec.names() == ["track_subscribed", "track_unsubscribed", "track_subscribed"]
    finally:
        await first.close()
        await second.close()


async def test_leave_with_published_track_order(any_server: Any, rooms: list[Room]) -> None:
    bob = await _join(any_server, rooms, "bob")
    rec = Recorder(bob, *REMOTE_EVENTS)
    alice = await _join(any_server, rooms, "alice")
    tone = Tone(660)
    try:
        await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("a", tone.source))
        await rec.wait_for(lambda: "track_subscribed" in rec.names())
        await alice.disconnect()
        await rec.wait_for(lambda: "participant_disconnected" in rec.names())
        assert rec.names() == ["participant_connected", "track_published", "track_subscribed",
                               "track_unsubscribed", "track_unpublished",
                               "participant_disconnected"]
        assert "alice" not in bob.remote_participants
    finally:
        await tone.close()


@pytest.mark.compat('subscription', client="aiolivekit")
async def test_set_subscribed_and_manual_subscription(any_server: Any, rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice")
    tone = Tone(523)
    try:
        await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("a", tone.source))
        bob = await _join(any_server, rooms, "bob", RoomOptions(auto_subscribe=False))
        rec = Recorder(bob, *REMOTE_EVENTS)
        rpub = await remote_pub(bob, "alice")
        await asyncio.sleep(1.0)
        assert not rpub.subscribed and rpub.track is None and rec.events == []
        rpub.set_subscribed(False)  # no-op
        for round_ in range(3):
            rpub.set_subscribed(True)
            rpub.set_subscribed(True)  # no-op while pending
            track = await wait_track(rpub)
            assert rpub.subscribed and isinstance(track, RemoteAudioTrack)
            assert abs(await peak_frequency(track) - 523) < 10, round_
            rpub.set_subscribed(False)
            assert not rpub.subscribed and rpub.track is None
            await asyncio.sleep(0.5)
        assert rec.names() == ["track_subscribed", "track_unsubscribed"] * 3
        await bob.disconnect()
        with pytest.raises(RuntimeError):
            rpub.set_subscribed(True)
    finally:
        await tone.close()


@pytest.mark.compat('audio', client="aiolivekit")
async def test_join_room_with_existing_tracks(any_server: Any, rooms: list[Room]) -> None:
    """Tracks published before we join: publications present when connect() returns,
    no participant_connected/track_published for them, track_subscribed still fires."""
    alice = await _join(any_server, rooms, "alice")
    tone = Tone(880)
    try:
        pub = await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("a", tone.source),
            TrackPublishOptions(source=TrackSource.SOURCE_MICROPHONE))
        bob = Room()
        rooms.append(bob)
        rec = Recorder(bob, *REMOTE_EVENTS)
        await bob.connect(any_server.url, any_server.token("bob"))
        rp = bob.remote_participants["alice"]
        assert list(rp.track_publications) == [pub.sid]
        rpub = rp.track_publications[pub.sid]
        assert rpub.source == TrackSource.SOURCE_MICROPHONE and rpub.name == "a"
        track = await wait_track(rpub)
        assert rec.names() == ["track_subscribed"]
        assert rec.events[0][1] == (track, rpub, rp)
        assert abs(await peak_frequency(track) - 880) < 10
    finally:
        await tone.close()


async def test_wait_for_subscription_fails_on_unpublish(any_server: Any,
                                                       rooms: list[Room]) -> None:
    alice = await _join(any_server, rooms, "alice")
    tone = Tone(440)
    try:
        pub = await alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("a", tone.source))
        waiter = asyncio.ensure_future(pub.wait_for_subscription())
        await asyncio.sleep(0.5)
        assert not waiter.done()  # nobody else in the room
        await alice.local_participant.unpublish_track(pub.sid)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(waiter, TIMEOUT)
    finally:
        await tone.close()


# ----------------------------------------------------------------------------- video

W, H = 320, 240
BITS = 8


def counter_frame(n: int) -> VideoFrame:
    """An I420 frame whose 8 vertical bands encode ``n`` (white = 1, black = 0)."""
    y = np.full((H, W), 16, np.uint8)
    band = W // BITS
    for b in range(BITS):
        if (n >> (BITS - 1 - b)) & 1:
            y[:, b * band:(b + 1) * band] = 235
    uv = np.full((H // 2) * (W // 2) * 2, 128, np.uint8)
    return VideoFrame(W, H, VideoBufferType.I420, bytearray(y.tobytes() + uv.tobytes()))


def read_counter(frame: VideoFrame) -> int:
    y = np.frombuffer(frame.get_plane(0), np.uint8)[: frame.width * frame.height]
    y = y.reshape(frame.height, frame.width)
    band = frame.width // BITS
    n = 0
    for b in range(BITS):
        v = y[frame.height // 4: 3 * frame.height // 4,
              b * band + band // 4: (b + 1) * band - band // 4].mean()
        n = (n << 1) | int(v > 128)
    return n


@pytest.mark.compat('video', client="aiolivekit")
@pytest.mark.parametrize("codec", [VideoCodec.VP8, VideoCodec.H264])
async def test_video_counters(any_server: Any, rooms: list[Room], codec: VideoCodec) -> None:
    bob = await _join(any_server, rooms, "bob")
    alice = await _join(any_server, rooms, "alice")
    source = VideoSource(W, H)
    count = 0

    async def feed() -> None:
        nonlocal count
        while True:
            source.capture_frame(counter_frame(count % 256))
            count += 1
            await asyncio.sleep(1 / 30)
    feeder = asyncio.ensure_future(feed())
    try:
        track = LocalVideoTrack.create_video_track("cam", source)
        pub = await alice.local_participant.publish_track(
            track, TrackPublishOptions(source=TrackSource.SOURCE_CAMERA, video_codec=codec))
        assert pub.kind == TrackKind.KIND_VIDEO and pub.source == TrackSource.SOURCE_CAMERA
        assert pub.mime_type.lower() == ("video/h264" if codec == VideoCodec.H264 else "video/vp8")
        rpub = await remote_pub(bob, "alice")
        rtrack = await wait_track(rpub)
        assert isinstance(rtrack, RemoteVideoTrack) and rpub.kind == TrackKind.KIND_VIDEO
        assert (rpub.width, rpub.height) == (W, H)
        stream = VideoStream(rtrack, format=VideoBufferType.I420)
        seen: list[int] = []

        async def collect() -> None:
            async for ev in stream:
                assert (ev.frame.width, ev.frame.height) == (W, H)
                seen.append(read_counter(ev.frame))
                if len(seen) >= 45:
                    return
        try:
            await asyncio.wait_for(collect(), 30)
        finally:
            await stream.aclose()
        # counters go up (mod 256), one per frame at most skipped in bursts
        diffs = [(b - a) % 256 for a, b in itertools.pairwise(seen)]
        assert all(0 <= d < 30 for d in diffs), seen
        assert sum(diffs) >= 30, seen  # ~1.5 s of frames really advanced
        assert sum(1 for d in diffs if d == 0) < len(diffs) // 2, seen
    finally:
        feeder.cancel()
        await source.aclose()
