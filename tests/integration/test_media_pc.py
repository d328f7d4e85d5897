"""Local tracks -> aiortc -> remote tracks -> streams, over two loopback peer connections."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

from aiolivekit import (
    AudioEncoding,
    AudioFrame,
    AudioSource,
    AudioStream,
    LocalAudioTrack,
    LocalVideoTrack,
    RemoteAudioTrack,
    RemoteVideoTrack,
    TrackPublishOptions,
    VideoBufferType,
    VideoCodec,
    VideoEncoding,
    VideoFrame,
    VideoSource,
    VideoStream,
)
from aiolivekit.media.stream_base import publications_changed
from aiolivekit.webrtc.ice import host_addresses


class Link:
    """pub PC (sendonly) -> sub PC, loopback only, no ICE servers."""

    def __init__(self) -> None:
        cfg = RTCConfiguration(iceServers=[])
        self.pub = RTCPeerConnection(cfg)
        self.sub = RTCPeerConnection(cfg)
        self.remote: list[Any] = []
        self.got_track = asyncio.Event()

        @self.sub.on("track")
        def _on_track(track: Any) -> None:
            receiver = next(t.receiver for t in self.sub.getTransceivers() if t.receiver.track is track)
            cls = RemoteAudioTrack if track.kind == "audio" else RemoteVideoTrack
            self.remote.append(cls._from_rtc(track, sid=f"TR_{len(self.remote)}", name="r", receiver=receiver))
            self.got_track.set()

    def add(self, local: Any, options: TrackPublishOptions, codec: str | None = None) -> Any:
        local._configure(options)
        tr = self.pub.addTransceiver(local._rtc_track, direction="sendonly")
        if codec:
            caps = RTCRtpSender.getCapabilities("video")
            tr.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() in (codec, "video/rtx")])
        local._attach_sender(tr.sender)
        return tr.sender

    async def connect(self) -> None:
        with host_addresses(["127.0.0.1"]):
            await self.pub.setLocalDescription(await self.pub.createOffer())
            await self.sub.setRemoteDescription(self.pub.localDescription)
            await self.sub.setLocalDescription(await self.sub.createAnswer())
            await self.pub.setRemoteDescription(self.sub.localDescription)
        for c in self.pub.localDescription.sdp.splitlines():
            if c.startswith("a=candidate"):
                assert " 127.0.0.1 " in c, c
        await asyncio.wait_for(self.got_track.wait(), 10)

    async def close(self) -> None:
        for t in self.remote:
            await t._close()
        await self.pub.close()
        await self.sub.close()


async def feed_tone(src: AudioSource, freq: float, seconds: float, stop: asyncio.Event | None = None) -> None:
    rate, ch = src.sample_rate, src.num_channels
    n = rate // 100
    t = 0
    end = int(seconds * rate)
    while t < end and not (stop and stop.is_set()):
        x = (np.sin(2 * np.pi * freq * (np.arange(t, t + n) / rate)) * 12000).astype(np.int16)
        await src.capture_frame(AudioFrame(np.repeat(x, ch).tobytes(), rate, ch, n))
        t += n


def dominant(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


async def bytes_sent(sender: Any) -> int:
    report = await sender.getStats()
    return sum(s.bytesSent for s in report.values() if s.type == "outbound-rtp")


@pytest.mark.parametrize("channels,expect_kbps", [(1, 32), (2, 64)])
async def test_audio_tone_and_bitrate(channels: int, expect_kbps: int) -> None:
    link = Link()
    src = AudioSource(48000, channels, queue_size_ms=200)
    local = LocalAudioTrack.create_audio_track("mic", src)
    sender = link.add(local, TrackPublishOptions())
    feeder = asyncio.ensure_future(feed_tone(src, 440, 6.0))
    try:
        await link.connect()
        remote = link.remote[0]
        assert isinstance(remote, RemoteAudioTrack)
        levels: list[Any] = []
        stereo_flags: set[int] = set()
        orig_handle = remote._receiver._handle_rtp_packet

        async def spy(packet: Any, arrival_time_ms: int) -> None:
            levels.append(packet.extensions.audio_level)
            stereo_flags.add((packet.payload[0] >> 2) & 1)  # Opus TOC "s" bit
            await orig_handle(packet, arrival_time_ms)
        remote._receiver._handle_rtp_packet = spy
        stream = AudioStream(remote, sample_rate=16000, num_channels=1)
        samples: list[np.ndarray] = []
        await asyncio.sleep(1.0)  # let the encoder and jitter buffer settle
        b0, t0 = await bytes_sent(sender), time.monotonic()
        async def read() -> None:
            async for ev in stream:
                assert ev.frame.sample_rate == 16000 and ev.frame.num_channels == 1
                samples.append(np.frombuffer(ev.frame.data, dtype=np.int16))
                if sum(len(s) for s in samples) >= 16000 * 2:
                    break
        await asyncio.wait_for(read(), 10)
        b1, t1 = await bytes_sent(sender), time.monotonic()
        x = np.concatenate(samples)[-16000:]
        assert np.abs(x).max() > 3000
        assert dominant(x, 16000) == pytest.approx(440, abs=5)
        kbps = (b1 - b0) * 8 / (t1 - t0) / 1000
        # payload bytes only (no RTP/SRTP overhead): near the configured Opus rate, far below aiortc's 96k
        assert expect_kbps * 0.7 < kbps < expect_kbps * 1.3, kbps
        enc = local._rtc_track._encoder
        assert enc is not None and enc.channels == channels
        # RFC 6464 level of a 12000-peak sine: -20*log10(12000/sqrt(2)/32768) = 11.7 dBov
        assert stereo_flags == {1 if channels == 2 else 0}  # on the wire: mono stays mono
        assert len(levels) > 50 and all(lv is not None and 10 <= lv[1] <= 13 for lv in levels[-50:]), levels[-5:]
        out = [s for s in await local.get_stats() if s.type == "outbound-rtp"]
        assert out and out[0].bytesSent > 0 and out[0].kind == "audio"
        inb = [s for s in await remote.get_stats() if s.type == "inbound-rtp"]
        assert inb and inb[0].packetsReceived > 50
        await stream.aclose()
    finally:
        feeder.cancel()
        await src.aclose()
        await link.close()


async def test_audio_max_bitrate_and_dtx() -> None:
    link = Link()
    src = AudioSource(16000, 1, queue_size_ms=100)
    local = LocalAudioTrack.create_audio_track("mic", src)
    sender = link.add(local, TrackPublishOptions(audio_encoding=AudioEncoding(max_bitrate=16000), dtx=True))
    stop = asyncio.Event()

    async def feed() -> None:  # 2 s tone then 2 s silence, paced
        await feed_tone(src, 440, 2.0)
        for _ in range(200):
            await src.capture_frame(AudioFrame.create(16000, 1, 160))
    feeder = asyncio.ensure_future(feed())
    try:
        await link.connect()
        await asyncio.sleep(0.5)
        b0, t0 = await bytes_sent(sender), time.monotonic()
        await asyncio.sleep(1.0)
        b1, t1 = await bytes_sent(sender), time.monotonic()
        tone_kbps = (b1 - b0) * 8 / 1000 / (t1 - t0)
        assert 7 < tone_kbps < 24, tone_kbps  # 16k configured (aiortc alone: ~100k)
        await asyncio.wait_for(feeder, 10)  # 1 s of silence left in flight
        await asyncio.sleep(0.5)
        b2 = await bytes_sent(sender)
        await asyncio.sleep(1.0)
        b3 = await bytes_sent(sender)
        assert b3 - b2 < 30, b3 - b2  # DTX: only tiny keep-alive frames during silence
    finally:
        stop.set()
        feeder.cancel()
        await src.aclose()
        await link.close()


def pattern(w: int, h: int, counter: int) -> VideoFrame:
    """RGBA frame: the counter's 8 bits as black/white blocks on the top row."""
    img = np.zeros((h, w, 4), dtype=np.uint8)
    img[..., 3] = 255
    img[h // 2 :, :, 1] = 120
    bw = w // 8
    for bit in range(8):
        if counter >> bit & 1:
            img[: h // 4, bit * bw : (bit + 1) * bw, :3] = 255
    return VideoFrame(w, h, VideoBufferType.RGBA, img.tobytes())


def read_counter(frame: VideoFrame) -> int:
    w, h = frame.width, frame.height
    img = np.frombuffer(frame.data, dtype=np.uint8).reshape(h, w, 4)
    bw = w // 8
    value = 0
    for bit in range(8):
        block = img[h // 16 : h // 8, bit * bw + bw // 4 : (bit + 1) * bw - bw // 4, :3]
        if block.mean() > 128:
            value |= 1 << bit
    return value


@pytest.mark.parametrize("codec", ["video/vp8", "video/h264"])
async def test_video_counter(codec: str) -> None:
    link = Link()
    w, h = 320, 240
    src = VideoSource(w, h)
    local = LocalVideoTrack.create_video_track("cam", src)
    vc = VideoCodec.VP8 if codec == "video/vp8" else VideoCodec.H264
    sender = link.add(local, TrackPublishOptions(video_codec=vc, video_encoding=VideoEncoding(max_bitrate=300_000, max_framerate=15)), codec)
    stop = asyncio.Event()

    async def produce() -> None:
        i = 0
        while not stop.is_set() and i < 600:
            src.capture_frame(pattern(w, h, i % 256))
            i += 1
            await asyncio.sleep(1 / 30)
    producer = asyncio.ensure_future(produce())
    try:
        await link.connect()
        remote = link.remote[0]
        stream = VideoStream(remote, format=VideoBufferType.RGBA)
        counters: list[int] = []
        stamps: list[int] = []

        async def read() -> None:
            async for ev in stream:
                assert (ev.frame.width, ev.frame.height, ev.frame.type) == (w, h, VideoBufferType.RGBA)
                counters.append(read_counter(ev.frame))
                stamps.append(ev.timestamp_us)
                if len(counters) >= 30:
                    break
        t0 = time.monotonic()
        b0 = await bytes_sent(sender)
        await asyncio.wait_for(read(), 15)
        elapsed = time.monotonic() - t0
        kbps = (await bytes_sent(sender) - b0) * 8 / elapsed / 1000
        assert 10 < kbps < 300 * 1.3, kbps  # max_bitrate=300k is honoured
        diffs = [(b - a) % 256 for a, b in itertools.pairwise(counters)]
        assert all(0 < d < 10 for d in diffs), counters
        # max_framerate=15 with a 30 fps source: about every second frame
        assert sum(diffs) / len(diffs) == pytest.approx(2, abs=0.6), counters
        assert elapsed > 1.5  # 30 frames at <= 15 fps
        assert all(b > a for a, b in itertools.pairwise(stamps))
        assert local._rtc_track._encoder.mime == codec
        # a PLI from the receiver side forces a keyframe
        kf = local._rtc_track._encoder.keyframes
        sender._send_keyframe()
        await asyncio.sleep(0.5)
        assert local._rtc_track._encoder.keyframes == kf + 1
        await stream.aclose()
    finally:
        stop.set()
        producer.cancel()
        await src.aclose()
        await link.close()


async def test_unread_remote_track_stays_bounded() -> None:
    link = Link()
    w, h = 320, 240
    src = VideoSource(w, h)
    local = LocalVideoTrack.create_video_track("cam", src)
    link.add(local, TrackPublishOptions())
    stop = asyncio.Event()

    async def produce() -> None:
        i = 0
        while not stop.is_set() and i < 600:
            src.capture_frame(pattern(w, h, i % 256))
            i += 1
            await asyncio.sleep(1 / 30)
    producer = asyncio.ensure_future(produce())
    try:
        await link.connect()
        remote = link.remote[0]
        stream = VideoStream(remote, capacity=0)  # registered but never read
        small = VideoStream(remote, capacity=3)
        await asyncio.sleep(5.0)
        assert remote.frames_received > 60
        assert remote._rtc_track._queue.qsize() <= 2  # aiortc's unbounded queue is drained
        assert len(stream._queue) <= VideoStream.DEFAULT_CAPACITY
        assert len(small._queue) == 3 and small.dropped > 50
        # the newest frames are kept
        last = [ev.timestamp_us for ev in list(small._queue)]
        assert last == sorted(last)
        await stream.aclose()
        await small.aclose()
    finally:
        stop.set()
        producer.cancel()
        await src.aclose()
        await link.close()


async def test_remote_close_ends_streams() -> None:
    link = Link()
    src = AudioSource(48000, 1)
    local = LocalAudioTrack.create_audio_track("mic", src)
    link.add(local, TrackPublishOptions())
    feeder = asyncio.ensure_future(feed_tone(src, 300, 5.0))
    try:
        await link.connect()
        remote = link.remote[0]
        stream = AudioStream.from_track(track=remote, frame_size_ms=10, num_channels=2)
        first = await asyncio.wait_for(stream.__anext__(), 5)
        assert first.frame.samples_per_channel == 480 and first.frame.num_channels == 2
        await remote._close()
        n = 0
        async for _ in stream:  # drains what is buffered, then stops
            n += 1
            assert n < 1000
        assert repr(remote) == "rtc.RemoteAudioTrack(sid=TR_0, name=r)"
    finally:
        feeder.cancel()
        await src.aclose()
        await link.close()


class _Pub:
    def __init__(self, source: int, track: Any) -> None:
        self.source = source
        self.track = track


class _Participant:
    """Just the attribute AudioStream.from_participant reads."""

    def __init__(self) -> None:
        self.track_publications: dict[str, _Pub] = {}


async def test_mute_and_from_participant() -> None:
    from aiolivekit import TrackSource

    link = Link()
    src = AudioSource(48000, 1, queue_size_ms=100)
    local = LocalAudioTrack.create_audio_track("mic", src)
    sender = link.add(local, TrackPublishOptions())
    changes: list[bool] = []
    local._on_mute_changed = changes.append
    feeder = asyncio.ensure_future(feed_tone(src, 600, 8.0))
    try:
        await link.connect()
        remote = link.remote[0]
        participant = _Participant()
        stream = AudioStream.from_participant(participant=participant, track_source=TrackSource.SOURCE_MICROPHONE)
        await asyncio.sleep(0.3)
        assert not stream._queue  # nothing published for that source yet
        participant.track_publications["TR_0"] = _Pub(TrackSource.SOURCE_MICROPHONE, remote)
        t0 = time.monotonic()
        publications_changed(participant)
        ev = await asyncio.wait_for(stream.__anext__(), 5)
        assert time.monotonic() - t0 < 0.3  # woken by the notification, not the fallback scan
        assert ev.frame.sample_rate == 48000
        await asyncio.sleep(0.5)
        local.mute()
        assert local.muted and changes == [True]
        await asyncio.sleep(0.3)
        b0 = await bytes_sent(sender)
        await asyncio.sleep(0.5)
        assert await bytes_sent(sender) == b0  # muted: nothing sent
        local.unmute()
        assert changes == [True, False] and not local.muted
        await asyncio.sleep(0.5)
        assert await bytes_sent(sender) > b0
        # the publication goes away: the stream keeps waiting instead of ending
        participant.track_publications.clear()
        await asyncio.sleep(0.8)  # fallback re-scan (no notification)
        assert stream._track is None and not stream._ended
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
    finally:
        feeder.cancel()
        await src.aclose()
        await link.close()
