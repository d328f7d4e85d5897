"""The audio publish fast path: native Opus, the shared playout clock, direct RTP output."""

from __future__ import annotations

import asyncio
import itertools
import time
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from aioice.ice import StunProtocol
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from aiolivekit import (
    AudioFrame,
    AudioSource,
    LocalAudioTrack,
    RemoteAudioTrack,
    TrackPublishOptions,
)
from aiolivekit.media import codecs, opus_native, playout_clock, rtp_direct
from aiolivekit.media.rtp_direct import DirectRtpWriter
from aiolivekit.webrtc.ice import host_addresses

RATE = 48000
N = 960


def tone(freq: float, start: int, n: int = N, amp: int = 10000) -> bytes:
    t = np.arange(start, start + n) / RATE
    return (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16).tobytes()


def dominant(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


# ---------------------------------------------------------------- native Opus


@pytest.mark.skipif(not opus_native.available(), reason="no loadable libopus")
@pytest.mark.parametrize("rate,channels", [(48000, 1), (48000, 2), (16000, 1)])
def test_native_opus_decodes_back(rate: int, channels: int) -> None:
    enc = opus_native.OpusEncoder(rate, channels, 32000 * channels)
    dec = av.CodecContext.create("libopus", "r")
    n = rate // 50
    out = []
    sizes = []
    for i in range(60):
        t = np.arange(i * n, (i + 1) * n) / rate
        x = (np.sin(2 * np.pi * 700 * t) * 8000).astype(np.int16)
        payload = enc.encode(np.repeat(x, channels).tobytes())
        sizes.append(len(payload))
        assert (payload[0] >> 2) & 1 == (1 if channels == 2 else 0)  # TOC stereo flag
        assert payload[0] & 3 == 0 and payload[0] >> 3 in (1, 5, 9, 13, 15, 19, 23, 27, 31)  # one 20 ms frame
        for f in dec.decode(av.Packet(payload)):
            a = f.to_ndarray()
            out.append((a[0] if f.format.is_planar else a.reshape(-1, len(f.layout.channels))[:, 0]).astype(np.float64))
    y = np.concatenate(out)[-24000:]
    assert dominant(y, 48000) == pytest.approx(700, abs=5)
    kbps = sum(sizes[10:]) * 8 / (len(sizes[10:]) * 0.02) / 1000
    assert 0.7 * 32 * channels < kbps < 1.3 * 32 * channels
    with pytest.raises(ValueError):
        enc.encode(b"\x00" * 10)
    with pytest.raises(ValueError):
        opus_native.OpusEncoder(44100, 1, 32000)


def test_payload_encoder_pts_and_dtx() -> None:
    enc = codecs.OpusPacketEncoder(48000, 1, codecs.AudioEncoderConfig(1, 32000, dtx=True))
    got: list[tuple[int, int]] = []
    for i in range(50):  # 1 s tone, 2 s silence, then a jump of the source clock
        got += [(len(p), pts) for p, pts in enc.encode_payloads(tone(440, i * N), i * N)]
    for i in range(50, 150):
        got += [(len(p), pts) for p, pts in enc.encode_payloads(bytes(2 * N), i * N)]
    for i in range(400, 410):
        got += [(len(p), pts) for p, pts in enc.encode_payloads(tone(440, i * N), i * N)]
    pts = [p for _, p in got]
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert pts[:50] == [i * N for i in range(50)]
    silent = [(n, p) for n, p in got if 50 * N <= p < 150 * N]
    # DTX: a handful of tiny keep-alive frames (one per 400 ms) instead of 100 frames
    assert 3 <= len(silent) <= 12 and all(n <= 3 for n, _ in silent[2:])
    assert pts[-10:] == [i * N for i in range(400, 410)]


# ---------------------------------------------------------------- AudioSource pacing


async def test_realtime_producer_plays_inside_capture_without_clock_wakeups() -> None:
    loop = asyncio.get_running_loop()
    clock = playout_clock.clock_for(loop)
    wake0 = clock.wakeups
    src = AudioSource(RATE, 1, queue_size_ms=100)
    got: list[tuple[int, float]] = []
    got_pcm: list[tuple[int, bytes]] = []
    src._add_sink(lambda pcm, pts: (got.append((pts, loop.time())),
                                    got_pcm.append((pts, pcm))))
    start = loop.time()
    for i in range(25):  # 0.5 s of 20 ms frames paced by the wall clock
        t_cap = loop.time()
        await src.capture_frame(AudioFrame(tone(300, i * N), RATE, 1, N))
        assert got[-1][1] - t_cap < 0.02  # played out inside capture_frame (no wait)
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
    assert [p for p, _ in got] == [i * N for i in range(25)]  # continuous pts
    assert clock.wakeups == wake0
    # the producer stops: the stream ends in silence (three chunks, a tick late each,
    # continuous pts), then the pause shows up as a pts jump of the elapsed time
    last = loop.time()
    await asyncio.sleep(0.3)
    pcm_of = {pts: pcm for pts, pcm in got_pcm}
    assert [p for p, _ in got[25:]] == [25 * N, 26 * N, 27 * N]
    assert all(pcm_of[p] == bytes(2 * N) for p, _ in got[25:])
    assert all(0.015 <= t - last <= 0.3 for _, t in got[25:])
    await src.capture_frame(AudioFrame(tone(300, 0), RATE, 1, N))
    jump = got[-1][0] - got[-2][0]
    assert 10 * N <= jump <= 40 * N, jump / N
    await src.aclose()


async def test_catch_up_after_stall_is_not_held_back_but_bounded() -> None:
    loop = asyncio.get_running_loop()
    src = AudioSource(RATE, 1, queue_size_ms=2000)
    got: list[tuple[int, bytes]] = []
    src._add_sink(lambda pcm, pts: got.append((pts, pcm)))
    start = loop.time()
    for i in range(10):
        await src.capture_frame(AudioFrame(tone(300, i * N), RATE, 1, N))
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
    time.sleep(0.15)  # noqa: ASYNC251  (the event loop stalls: a blocking call)
    for i in range(10, 18):
        await src.capture_frame(AudioFrame(tone(300, i * N), RATE, 1, N))
    assert len(got) == 18 and src.queued_duration == 0  # no standing queue: latency kept
    assert all(pcm != bytes(2 * N) for _, pcm in got)  # no silence: nothing could run
    # a long burst after a stall goes out at most _CREDIT (250 ms) faster than real time
    await src.wait_for_playout()
    time.sleep(1.0)  # noqa: ASYNC251  (a stall again: no silence tail can run)
    for i in range(50):
        await src.capture_frame(AudioFrame(tone(300, i * N), RATE, 1, N))
    assert 18 + 12 <= len(got) <= 18 + 20, len(got) - 18
    assert src.queued_duration == pytest.approx((50 - (len(got) - 18)) * 0.02)
    await src.aclose()


async def test_a_talkspurt_after_a_pause_is_paced_from_its_first_chunk() -> None:
    """A producer that pushes a whole answer at once after a pause (livekit-agents' TTS
    does): the source sent its silence tail during the pause, so the new audio is not
    late; it goes out in real time, not as a catch-up burst a receiver would take for
    250 ms of jitter."""
    loop = asyncio.get_running_loop()
    src = AudioSource(RATE, 1, queue_size_ms=2000)
    got: list[tuple[int, float, bytes]] = []
    src._add_sink(lambda pcm, pts: got.append((pts, loop.time(), pcm)))
    await src.capture_frame(AudioFrame(tone(300, 0, 5 * N), RATE, 1, 5 * N))
    await src.wait_for_playout()
    await asyncio.sleep(0.5)  # the pause: three silence chunks end the first talkspurt
    assert [pcm == bytes(2 * N) for _, _, pcm in got] == [False] * 5 + [True] * 3
    assert [p for p, _, _ in got] == [i * N for i in range(8)]
    t0 = loop.time()
    await src.capture_frame(AudioFrame(tone(300, 0, 20 * N), RATE, 1, 20 * N))
    first = len(got)
    assert first == 9  # the first chunk at once, the rest paced
    await src.wait_for_playout()
    spurt = got[8:]
    assert len(spurt) == 20
    assert spurt[0][0] - got[7][0] >= 20 * N  # the pause shows in pts
    assert [b[0] - a[0] for a, b in itertools.pairwise(spurt)] == [N] * 19
    assert spurt[-1][1] - t0 >= 19 * 0.02 - 0.03  # real time, not at once
    await src.aclose()


async def test_partial_chunk_padded_after_one_tick() -> None:
    loop = asyncio.get_running_loop()
    src = AudioSource(RATE, 1)
    got: list[tuple[bytes, float]] = []
    src._add_sink(lambda pcm, pts: got.append((pcm, loop.time())))
    t0 = loop.time()
    await src.capture_frame(AudioFrame(tone(300, 0, 480), RATE, 1, 480))  # 10 ms
    assert got == []
    await src.wait_for_playout()
    assert len(got) == 1 and len(got[0][0]) == 2 * N
    assert got[0][0][960:] == bytes(960)  # padded with silence
    assert 0.015 <= got[0][1] - t0 <= 0.15
    # 10 ms frames: each chunk goes out when its second half arrives, unpadded
    got.clear()
    for i in range(5):
        await src.capture_frame(AudioFrame(tone(300, 2 * i * 480, 480), RATE, 1, 480))
        assert len(got) == i
        await src.capture_frame(AudioFrame(tone(300, (2 * i + 1) * 480, 480), RATE, 1, 480))
        assert len(got) == i + 1 and got[-1][0] == tone(300, 2 * i * 480, 960)
        await asyncio.sleep(0.02)
    await src.aclose()


async def test_backlogged_sources_share_clock_wakeups() -> None:
    loop = asyncio.get_running_loop()
    clock = playout_clock.clock_for(loop)
    sources = [AudioSource(RATE, 1, queue_size_ms=1000) for _ in range(8)]
    counts = [0] * len(sources)
    for k, s in enumerate(sources):
        s._add_sink(lambda pcm, pts, k=k: counts.__setitem__(k, counts[k] + any(pcm)))
    for s in sources:  # 0.3 s each at once: a backlog the clock must pace
        await s.capture_frame(AudioFrame(tone(300, 0, 15 * N), RATE, 1, 15 * N))
    w0, t0 = clock.wakeups, time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(s.wait_for_playout() for s in sources)), 2)
    elapsed = time.monotonic() - t0
    assert counts == [15] * len(sources)
    assert 0.22 <= elapsed <= 0.8, elapsed  # paced (14 chunks after the first), not bursted
    assert clock.wakeups - w0 <= 20  # one wake-up per tick for all 8 sources, not 8
    for s in sources:
        await s.aclose()


# ---------------------------------------------------------------- direct RTP writer


class _FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


class _FakeSender:
    """The aiortc RTCRtpSender attributes the writer relies on (plain protect)."""

    def __init__(self, exts: list[tuple[int, str]], mid: str = "0") -> None:
        params = RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for i, u in exts]
        )
        self.ext_map = HeaderExtensionsMap()
        self.ext_map.configure(params)
        self._RTCRtpSender__rtp_header_extensions_map = self.ext_map
        self._RTCRtpSender__mid = mid
        self._ssrc = 0x11223344
        self._RTCRtpSender__ntp_timestamp = 0
        self._RTCRtpSender__rtp_timestamp = 0
        self._RTCRtpSender__octet_count = 0
        self._RTCRtpSender__packet_count = 0
        self.udp = _FakeTransport()
        protocol = StunProtocol.__new__(StunProtocol)
        protocol.transport = self.udp  # type: ignore[assignment]
        pair = SimpleNamespace(protocol=protocol, remote_addr=("127.0.0.1", 5000))
        ice = SimpleNamespace(_connection=SimpleNamespace(_nominated={1: pair}))
        self.transport = SimpleNamespace(
            _state=State.CONNECTED,
            _tx_srtp=SimpleNamespace(protect=lambda b: b),
            transport=ice,
            _RTCDtlsTransport__tx_bytes=0,
            _RTCDtlsTransport__tx_packets=0,
        )


EXTS = [
    (1, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    (3, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    (4, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
]


direct_only = pytest.mark.skipif(not rtp_direct.enabled(), reason="AIOLIVEKIT_DIRECT_RTP=0")


@direct_only
@pytest.mark.parametrize("exts", [EXTS, EXTS[:1], EXTS[2:], []])
def test_direct_writer_packets_parse_like_aiortc(exts: list[tuple[int, str]]) -> None:
    sender = _FakeSender(exts, mid="12")
    writer = DirectRtpWriter.create(sender, SimpleNamespace(payloadType=111))
    assert writer is not None
    seq0 = writer.sequence_number
    payloads = [bytes([0x78]) + bytes(range(i, i + 40)) for i in range(5)]
    for i, p in enumerate(payloads):
        assert writer.send(p, 1000 + i * N, 20 + i)
    assert len(sender.udp.sent) == 5
    for i, (data, addr) in enumerate(sender.udp.sent):
        assert addr == ("127.0.0.1", 5000)
        pkt = RtpPacket.parse(data, sender.ext_map)
        assert (pkt.version, pkt.payload_type, pkt.marker, pkt.ssrc) == (2, 111, 1, 0x11223344)
        assert pkt.sequence_number == (seq0 + i) & 0xFFFF
        assert pkt.timestamp == (writer.timestamp_origin + 1000 + i * N) & 0xFFFFFFFF
        assert pkt.payload == payloads[i]
        uris = {u for _, u in exts}
        assert pkt.extensions.mid == ("12" if EXTS[0][1] in uris else None)
        assert pkt.extensions.audio_level == ((False, 20 + i) if EXTS[2][1] in uris else None)
        if EXTS[1][1] in uris:
            now = (int((time.time() + 2208988800) * 2**18)) & 0xFFFFFF
            assert (now - pkt.extensions.abs_send_time) % (1 << 24) < 2**18  # within 1 s
        else:
            assert pkt.extensions.abs_send_time is None
    # RTCP sender-report counters and transport stats follow
    assert sender._RTCRtpSender__packet_count == 5
    assert sender._RTCRtpSender__octet_count == sum(map(len, payloads))
    assert sender._RTCRtpSender__rtp_timestamp == (writer.timestamp_origin + 1000 + 4 * N) & 0xFFFFFFFF
    assert abs((sender._RTCRtpSender__ntp_timestamp >> 32) - (time.time() + 2208988800)) < 2
    assert sender.transport._RTCDtlsTransport__tx_packets == 5
    # not connected: dropped, counters unchanged
    sender.transport._state = State.CLOSED
    assert not writer.send(payloads[0], 99999, 20)
    assert sender._RTCRtpSender__packet_count == 5 and len(sender.udp.sent) == 5


@direct_only
def test_direct_writer_refuses_two_byte_extensions() -> None:
    sender = _FakeSender([(15, "urn:ietf:params:rtp-hdrext:sdes:mid")])
    assert DirectRtpWriter.create(sender, SimpleNamespace(payloadType=111)) is None


# ---------------------------------------------------------------- end to end (loopback PCs)


async def test_direct_path_end_to_end_tone_sr_and_mute() -> None:
    cfg = RTCConfiguration(iceServers=[])
    pub, sub = RTCPeerConnection(cfg), RTCPeerConnection(cfg)
    remote: list[Any] = []
    got = asyncio.Event()

    @sub.on("track")
    def _on_track(track: Any) -> None:
        receiver = next(t.receiver for t in sub.getTransceivers() if t.receiver.track is track)
        remote.append(RemoteAudioTrack._from_rtc(track, sid="TR_a", name="a", receiver=receiver))
        got.set()

    src = AudioSource(RATE, 1, queue_size_ms=100)
    local = LocalAudioTrack.create_audio_track("a", src)
    local._configure(TrackPublishOptions())
    tr = pub.addTransceiver(local._rtc_track, direction="sendonly")
    local._attach_sender(tr.sender)
    packets: list[Any] = []
    stop = asyncio.Event()

    async def feed() -> None:
        i = 0
        start = time.monotonic()
        while not stop.is_set() and i < 500:
            await src.capture_frame(AudioFrame(tone(600, i * N), RATE, 1, N))
            i += 1
            await asyncio.sleep(max(0.0, start + i * 0.02 - time.monotonic()))

    feeder = asyncio.ensure_future(feed())
    try:
        with host_addresses(["127.0.0.1"]):
            await pub.setLocalDescription(await pub.createOffer())
            await sub.setRemoteDescription(pub.localDescription)
            await sub.setLocalDescription(await sub.createAnswer())
            await pub.setRemoteDescription(sub.localDescription)
        await asyncio.wait_for(got.wait(), 10)
        receiver = remote[0]._receiver
        orig = receiver._handle_rtp_packet

        async def spy(packet: Any, arrival_time_ms: int) -> None:
            packets.append(packet)
            await orig(packet, arrival_time_ms)

        receiver._handle_rtp_packet = spy
        from aiolivekit import AudioStream

        stream = AudioStream(remote[0], sample_rate=RATE, num_channels=1)
        samples: list[np.ndarray] = []

        async def read() -> None:
            async for ev in stream:
                samples.append(np.frombuffer(ev.frame.data, dtype=np.int16))
                if sum(map(len, samples)) >= RATE * 2:
                    break

        await asyncio.wait_for(read(), 10)
        # the fast path carried it (aiortc's own loop when disabled: same results below)
        assert local._rtc_track.direct == rtp_direct.enabled()
        x = np.concatenate(samples)[-RATE:]
        assert dominant(x, RATE) == pytest.approx(600, abs=5)
        seqs = [p.sequence_number for p in packets]
        assert len(seqs) > 50 and all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        assert all(b.timestamp - a.timestamp == N for a, b in itertools.pairwise(packets))
        assert all(p.extensions.audio_level is not None and 12 <= p.extensions.audio_level[1] <= 14 for p in packets)
        assert packets[-1].extensions.mid == tr.mid
        # aiortc's RTCP loop reports our counters (SR within ~1.5 s)
        deadline = time.monotonic() + 4
        sr = None
        while time.monotonic() < deadline:
            stats = await receiver.getStats()
            sr = next((s for s in stats.values() if s.type == "remote-outbound-rtp"), None)
            if sr is not None and sr.packetsSent > 50:
                break
            await asyncio.sleep(0.2)
        assert sr is not None and sr.packetsSent > 50 and sr.bytesSent > 50 * 40
        out = [s for s in await local.get_stats() if s.type == "outbound-rtp"]
        assert out[0].packetsSent >= sr.packetsSent
        # mute stops the packets, unmute resumes them with the sequence continuing
        local.mute()
        await asyncio.sleep(0.1)
        n_muted = len(packets)
        await asyncio.sleep(0.3)
        assert len(packets) == n_muted
        local.unmute()
        await asyncio.sleep(0.3)
        assert len(packets) > n_muted + 5
        assert (packets[n_muted].sequence_number - packets[n_muted - 1].sequence_number) & 0xFFFF == 1
        assert packets[n_muted].timestamp - packets[n_muted - 1].timestamp >= 10 * N  # time went on
        await stream.aclose()
    finally:
        stop.set()
        await feeder
        for t in remote:
            await t._close()
        await src.aclose()
        await pub.close()
        await sub.close()
