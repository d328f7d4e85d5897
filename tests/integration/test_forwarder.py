"""RTP passthrough forwarder over real aiortc peer connections on 127.0.0.1.

Topology: publisher PC -> relay-in PC (receiver attached to a TrackForwarder)
-> relay-out PC(s) -> subscriber PC(s). Media is encoded at the publisher and
decoded at the subscriber by aiortc; the relay never decodes.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from aiolivekit.server import forwarder as forwarder_module
from aiolivekit.server.config import ForwardingOptions
from aiolivekit.server.downtrack import VIDEO_HISTORY_SIZE
from aiolivekit.server.forwarder import TrackForwarder
from aiolivekit.server.rtp_io import ReceiveTap
from aiolivekit.webrtc.ice import host_addresses

STEP = 5.0  # timeout of any single network wait
WIDTH, HEIGHT = 320, 240
BITS = 16  # counter bits drawn as a 2 x 8 grid of black/white blocks


# -- sources ----------------------------------------------------------------------


class SineTrack(MediaStreamTrack):
    """440 Hz mono s16 sine, 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, freq: float = 440.0) -> None:
        super().__init__()
        self.freq = freq
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(960) + self._pts) / 48000
        samples = (np.sin(2 * np.pi * self.freq * t) * 12000).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 48000)
        self._pts += 960
        return frame


def draw_counter(n: int) -> np.ndarray:
    img = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    bw, bh = WIDTH // 8, HEIGHT // 2
    for bit in range(BITS):
        if (n >> bit) & 1:
            r, c = divmod(bit, 8)
            img[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw] = 255
    return img


def read_counter(frame: VideoFrame) -> int:
    gray = frame.to_ndarray(format="gray")
    bw, bh = WIDTH // 8, HEIGHT // 2
    n = 0
    for bit in range(BITS):
        r, c = divmod(bit, 8)
        cy, cx = r * bh + bh // 2, c * bw + bw // 2
        if gray[cy - 8 : cy + 8, cx - 8 : cx + 8].mean() > 128:
            n |= 1 << bit
    return n


class CounterTrack(MediaStreamTrack):
    """Video frames whose content encodes a frame counter, 30 fps."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self.count / 30 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = VideoFrame.from_ndarray(draw_counter(self.count + 1), format="rgb24")
        frame.pts = self.count * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self.count += 1
        return frame


# -- plumbing ---------------------------------------------------------------------


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def negotiate(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> str:
    """Offer/answer on loopback only; returns the offer SDP."""
    with host_addresses(["127.0.0.1"]):
        await asyncio.wait_for(offerer.setLocalDescription(await offerer.createOffer()), STEP)
        await asyncio.wait_for(answerer.setRemoteDescription(offerer.localDescription), STEP)
        await asyncio.wait_for(answerer.setLocalDescription(await answerer.createAnswer()), STEP)
        await asyncio.wait_for(offerer.setRemoteDescription(answerer.localDescription), STEP)
    return offerer.localDescription.sdp


async def until(cond: Callable[[], bool], timeout: float = STEP, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


class Sink:
    """Drains a subscriber track, keeping (arrival time, frame)."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.frames: list[tuple[float, Any]] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.frames.append((time.monotonic(), frame))
        except MediaStreamError:
            pass

    def since(self, t: float) -> list[Any]:
        return [f for ts, f in self.frames if ts >= t]

    def stop(self) -> None:
        self.task.cancel()


class Room:
    """One publisher, one relay, N subscribers (all aiortc, one process)."""

    def __init__(self, options: ForwardingOptions | None = None) -> None:
        self.options = options
        self.pcs: list[RTCPeerConnection] = []
        self.forwarder: TrackForwarder | None = None
        self.pub_sender: RTCRtpSender | None = None
        self.subs: list[tuple[RTCPeerConnection, RTCPeerConnection, Sink, str]] = []

    def pc(self) -> RTCPeerConnection:
        pc = new_pc()
        self.pcs.append(pc)
        return pc

    async def publish(self, track: MediaStreamTrack, mime: str | None = None) -> TrackForwarder:
        pub, relay_in = self.pc(), self.pc()
        transceiver = pub.addTransceiver(track, direction="sendonly")
        if mime is not None:
            caps = RTCRtpSender.getCapabilities(track.kind).codecs
            transceiver.setCodecPreferences([c for c in caps if c.mimeType == mime])
        self.pub_sender = transceiver.sender

        @relay_in.on("track")
        def on_track(remote: MediaStreamTrack) -> None:
            receiver = next(
                t.receiver for t in relay_in.getTransceivers() if t.receiver.track is remote
            )
            self.forwarder = TrackForwarder.attach(receiver, remote.kind, options=self.options)

        await negotiate(pub, relay_in)
        await until(
            lambda: self.forwarder is not None and self.forwarder.packets_received > 0,
            what="media at relay",
        )
        assert self.forwarder is not None
        return self.forwarder

    async def subscribe(self, n: int) -> tuple[RTCPeerConnection, Sink, RTCRtpTransceiver, str]:
        assert self.forwarder is not None
        relay_out, sub = self.pc(), self.pc()
        transceiver = self.forwarder.add_subscriber(
            relay_out, stream_id=f"PA_pub|TR_{n}", track_id=f"TR_{n}"
        )
        sinks: list[Sink] = []
        sub.on("track", lambda t: sinks.append(Sink(t)))
        offer = await negotiate(relay_out, sub)
        await until(lambda: bool(sinks), what="subscriber track")
        self.subs.append((relay_out, sub, sinks[0], offer))
        return relay_out, sinks[0], transceiver, offer

    async def close(self) -> None:
        for _, _, sink, _ in self.subs:
            sink.stop()
        if self.forwarder is not None:
            self.forwarder.close()
        await asyncio.gather(
            *(asyncio.wait_for(pc.close(), STEP) for pc in self.pcs), return_exceptions=True
        )


def dominant_frequency(frames: list[AudioFrame]) -> float:
    rate = frames[0].sample_rate
    chans = len(frames[0].layout.channels)
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64)
    mono = pcm.reshape(-1, chans)[:, 0] if frames[0].format.is_packed else pcm
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / rate)[int(np.argmax(spectrum))])


async def run_bounded(coro: Awaitable[None], timeout: float = 40.0) -> None:
    await asyncio.wait_for(coro, timeout)


# -- tests ------------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["direct-send", "queue-task"])
async def test_opus_sine_forwarded_with_440hz_dominant(fast_path: bool) -> None:
    room = Room(ForwardingOptions(fast_path=fast_path, raw_receive=fast_path))

    async def body() -> None:
        fw = await room.publish(SineTrack())
        assert fw.mime_type == "audio/opus"
        _relay_out, sink, transceiver, offer = await room.subscribe(1)
        assert "a=msid:PA_pub|TR_1 TR_1" in offer
        await until(lambda: len(sink.frames) >= 100, what="100 audio frames")
        frames = [f for _, f in sink.frames[25:100]]  # skip the start-up transient
        freq = dominant_frequency(frames)
        assert abs(freq - 440.0) < 5.0, freq
        assert fw.packets_forwarded >= 100
        assert transceiver.sender._lk_down.fast is fast_path
        # the forwarding sender's own sender reports reach the subscriber (first one
        # 0.5-1.5 s after the start) with its SSRC and a plausible packet count
        sub_pc = room.subs[0][1]
        sub_receiver = next(t.receiver for t in sub_pc.getTransceivers() if t.kind == "audio")
        lsr = sub_receiver._RTCRtpReceiver__lsr
        await until(lambda: transceiver.sender._ssrc in lsr, timeout=3, what="a sender report")
        report = next(
            st for st in (await sub_receiver.getStats()).values()
            if st.type == "remote-outbound-rtp"
        )
        assert report.ssrc == transceiver.sender._ssrc
        assert 0 < report.packetsSent <= fw.packets_forwarded
        tap = fw.receiver.tap
        if fast_path:  # the publisher's packets came straight from the UDP socket
            assert tap is not None and tap.packets >= 50 and fw.receiver.raw_ssrc in tap.routes
            assert tap.reads_sockets  # read by the tap itself, decrypted in its buffer
            # the subscriber's receiver reports reach the forwarding sender through the
            # subscriber transport's tap (handled at once, no task hop): remote stats
            sub_tap = ReceiveTap.of(transceiver.sender._lk_down.dtls)
            assert sub_tap is not None
            await until(lambda: sub_tap.rtcp_packets > 0, timeout=4, what="an RR")
            remote = [st for st in (await transceiver.sender.getStats()).values()
                      if st.type == "remote-inbound-rtp"]
            assert remote and remote[0].packetsReceived > 0
        else:
            assert tap is None

    try:
        await run_bounded(body())
    finally:
        await room.close()


@pytest.mark.parametrize("mime", ["video/VP8", "video/H264"])
async def test_video_counter_frames_forwarded(mime: str) -> None:
    room = Room()

    async def body() -> None:
        fw = await room.publish(CounterTrack(), mime=mime)
        assert fw.mime_type == mime
        _relay_out, sink, transceiver, offer = await room.subscribe(1)
        assert "a=msid:PA_pub|TR_1 TR_1" in offer
        assert mime.split("/")[1] in offer
        await until(lambda: len(sink.frames) >= 45, timeout=15, what="45 video frames")
        frames = [f for _, f in sink.frames[:45]]
        assert all((f.width, f.height) == (WIDTH, HEIGHT) for f in frames)
        counters = [read_counter(f) for f in frames]
        # strictly increasing, no garbage values, steady stream (few skips)
        assert all(b > a for a, b in itertools.pairwise(counters)), counters
        assert counters[-1] - counters[0] < 45 + 15, counters
        assert transceiver.sender._ssrc != 0

    try:
        await run_bounded(body())
    finally:
        await room.close()


async def test_two_subscribers_then_remove_one() -> None:
    room = Room()

    async def body() -> None:
        fw = await room.publish(SineTrack())
        pc1, sink1, _, _ = await room.subscribe(1)
        _pc2, sink2, _, _ = await room.subscribe(2)
        await until(
            lambda: len(sink1.frames) >= 25 and len(sink2.frames) >= 25, what="both subscribers"
        )
        assert fw.subscriber_count == 2
        fw.remove_subscriber(pc1)
        fw.remove_subscriber(pc1)  # idempotent
        assert fw.subscriber_count == 1
        t0 = time.monotonic() + 0.3  # let in-flight packets and the jitter buffer drain
        await asyncio.sleep(1.3)
        assert len(sink1.since(t0)) == 0
        assert len(sink2.since(t0)) >= 35  # ~50 frames/s keep flowing to the other one
        freq = dominant_frequency(sink2.since(t0))
        assert abs(freq - 440.0) < 5.0, freq

    try:
        await run_bounded(body())
    finally:
        await room.close()


async def test_set_paused_stops_and_resumes_packets() -> None:
    room = Room()

    async def body() -> None:
        fw = await room.publish(SineTrack())
        pc1, sink1, _, _ = await room.subscribe(1)
        await until(lambda: len(sink1.frames) >= 25, what="audio before pause")
        fw.set_paused(pc1, True)
        await asyncio.sleep(0.3)
        forwarded = fw.packets_forwarded
        t0 = time.monotonic()
        await asyncio.sleep(1.0)
        assert fw.packets_forwarded == forwarded
        assert len(sink1.since(t0)) == 0
        fw.set_paused(pc1, False)
        t1 = time.monotonic()
        await until(lambda: len(sink1.since(t1)) >= 25, what="audio after resume")
        assert fw.packets_forwarded > forwarded
        with pytest.raises(ValueError):
            fw.set_paused(new_pc(), True)

    try:
        await run_bounded(body())
    finally:
        await room.close()


async def test_subscriber_pli_reaches_publisher() -> None:
    room = Room()
    requests: list[float] = []

    async def body() -> None:
        fw = await room.publish(CounterTrack())
        assert room.pub_sender is not None
        original = room.pub_sender._send_keyframe

        def counting_send_keyframe() -> None:  # observe the real publisher sender
            requests.append(time.monotonic())
            original()

        room.pub_sender._send_keyframe = counting_send_keyframe  # type: ignore[method-assign]
        _relay_out, sink, transceiver, _ = await room.subscribe(1)
        await until(lambda: len(sink.frames) >= 10, timeout=10, what="video frames")
        # subscriber join asked the publisher for a keyframe
        assert len(requests) >= 1
        await asyncio.sleep(1.0)  # beyond the PLI rate limit
        before = len(requests)
        sub_pc = room.subs[0][1]
        sub_receiver = next(t.receiver for t in sub_pc.getTransceivers() if t.kind == "video")
        await sub_receiver._send_rtcp_pli(transceiver.sender._ssrc)
        await until(lambda: len(requests) > before, timeout=3, what="PLI at publisher")
        assert fw.keyframe_requests_sent >= 2
        # the PLI went through the subscriber transport's tap (feedback: in a task)
        sub_tap = ReceiveTap.of(transceiver.sender._lk_down.dtls)
        assert sub_tap is not None
        assert sub_tap.reads_sockets and sub_tap.rtcp_packets >= 1

    try:
        await run_bounded(body())
    finally:
        await room.close()


async def test_close_stops_everything_and_attach_checks() -> None:
    room = Room()

    async def body() -> None:
        fw = await room.publish(SineTrack())
        pc1, sink1, transceiver, _ = await room.subscribe(1)
        await until(lambda: len(sink1.frames) >= 10, what="audio")
        with pytest.raises(ValueError):
            fw.add_subscriber(pc1, stream_id="x", track_id="y")
        fw.close()
        assert transceiver.direction == "inactive"
        forwarded = fw.packets_forwarded
        await asyncio.sleep(0.5)
        assert fw.packets_forwarded == forwarded
        with pytest.raises(Exception, match="closed"):
            fw.add_subscriber(new_pc(), stream_id="x", track_id="y")
        with pytest.raises(ValueError):
            TrackForwarder.attach(room.pcs[1].getTransceivers()[0].receiver, "audio")
        with pytest.raises(ValueError):
            TrackForwarder.attach(room.pcs[1].getTransceivers()[0].receiver, "data")

    try:
        await run_bounded(body())
    finally:
        await room.close()


async def test_subscriber_nack_served_from_relay_history_over_rtx() -> None:
    room = Room()

    async def body() -> None:
        await room.publish(CounterTrack())
        _relay_out, sink, transceiver, offer = await room.subscribe(1)
        assert "rtx" in offer
        await until(lambda: len(sink.frames) >= 10, timeout=10, what="video frames")
        sender = transceiver.sender
        last = sender._lk_down.munger.last_sequence
        lost = sorted((last - k) & 0xFFFF for k in (5, 4, 3))
        assert all(
            sender._lk_down.history[s % VIDEO_HISTORY_SIZE][0] == s for s in lost
        )
        sub_pc = room.subs[0][1]
        sub_receiver = next(t.receiver for t in sub_pc.getTransceivers() if t.kind == "video")
        streams = sub_receiver._RTCRtpReceiver__remote_streams
        assert sender._rtx_ssrc not in streams  # nothing retransmitted yet
        await sub_receiver._send_rtcp_nack(sender._ssrc, lost)
        await until(
            lambda: sender._rtx_ssrc in streams and streams[sender._rtx_ssrc].packets_received == 3,
            timeout=3,
            what="3 RTX packets at the subscriber",
        )
        await sub_receiver._send_rtcp_nack(sender._ssrc, [(last + 30000) & 0xFFFF])  # unknown
        await asyncio.sleep(0.3)
        assert streams[sender._rtx_ssrc].packets_received == 3

    try:
        await run_bounded(body())
    finally:
        await room.close()


async def test_subscriber_added_before_codec_known_gets_publisher_codec() -> None:
    room = Room()

    async def body() -> None:
        pub, relay_in, relay_out, sub = room.pc(), room.pc(), room.pc(), room.pc()
        transceiver = pub.addTransceiver(CounterTrack(), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == "video/H264"])
        early: list[TrackForwarder] = []

        @relay_in.on("track")
        def on_track(remote: MediaStreamTrack) -> None:
            receiver = next(
                t.receiver for t in relay_in.getTransceivers() if t.receiver.track is remote
            )
            fw = TrackForwarder.attach(receiver, remote.kind)
            assert fw.mime_type is None  # receiver not started yet
            fw.add_subscriber(relay_out, stream_id="PA_a|TR_v", track_id="TR_v")
            early.append(fw)

        await negotiate(pub, relay_in)
        await until(lambda: bool(early) and early[0].mime_type is not None, what="codec")
        fw = early[0]
        room.forwarder = fw
        assert fw.mime_type == "video/H264"
        sinks: list[Sink] = []
        sub.on("track", lambda t: sinks.append(Sink(t)))
        offer = await negotiate(relay_out, sub)
        assert "H264" in offer and "VP8" not in offer
        await until(lambda: bool(sinks) and len(sinks[0].frames) >= 15, timeout=10, what="frames")
        counters = [read_counter(f) for _, f in sinks[0].frames[:15]]
        assert all(b > a for a, b in itertools.pairwise(counters)), counters
        sinks[0].stop()

    try:
        await run_bounded(body())
    finally:
        await room.close()


class OpaquePacketTrack(MediaStreamTrack):
    """Pre-encoded 'audio' packets with opaque (e.g. end-to-end encrypted) payloads."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[int, bytes] = {}
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        import av

        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n * 0.02 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        body = self._n.to_bytes(4, "big") + os.urandom(60) + b"\x0c\x00"  # trailer-like tail
        self.sent[self._n] = body
        packet = av.Packet(body)
        packet.pts = self._n * 960
        packet.time_base = fractions.Fraction(1, 48000)
        self._n += 1
        return packet


async def test_opaque_payloads_pass_through_byte_identical() -> None:
    room = Room()
    received: list[bytes] = []

    async def body() -> None:
        source = OpaquePacketTrack()
        fw = await room.publish(source)
        relay_out, sub = room.pc(), room.pc()
        fw.add_subscriber(relay_out, stream_id="PA_e|TR_e", track_id="TR_e")

        @sub.on("track")
        def on_track(remote: MediaStreamTrack) -> None:
            receiver = next(t.receiver for t in sub.getTransceivers() if t.receiver.track is remote)
            # no decoding of opaque bytes; the payloads are captured where the sub-side
            # forwarder would fan them out (raw receive path or aiortc's, whichever ran)
            tap = TrackForwarder.attach(receiver, remote.kind)
            tap.receiver._deliver = (  # type: ignore[method-assign]
                lambda p, now=None: received.append(bytes(p.payload)))

        await negotiate(relay_out, sub)
        await until(lambda: len(received) >= 50, what="50 opaque packets")
        counters = [int.from_bytes(p[:4], "big") for p in received[:50]]
        assert all(b == a + 1 for a, b in itertools.pairwise(counters)), counters
        assert all(p == source.sent[c] for p, c in zip(received[:50], counters, strict=True))

    try:
        await run_bounded(body())
    finally:
        await room.close()


async def test_subscriber_pc_closed_without_remove_keeps_others_flowing() -> None:
    room = Room()

    async def body() -> None:
        fw = await room.publish(SineTrack())
        _pc1, sink1, _, _ = await room.subscribe(1)
        pc2, sink2, _, _ = await room.subscribe(2)
        await until(lambda: len(sink2.frames) >= 10 and len(sink1.frames) >= 10, what="audio")
        assert len(fw.fanout.active) == 2
        await asyncio.wait_for(pc2.close(), STEP)
        await until(lambda: len(fw.fanout.active) == 1, what="closed sender leaves the fan-out")
        t0 = time.monotonic()
        await asyncio.sleep(0.6)
        assert len(sink1.since(t0)) >= 20
        assert fw.receiver.errors == 0
        fw.remove_subscriber(pc2)
        assert fw.subscriber_count == 1

    try:
        await run_bounded(body())
    finally:
        await room.close()


def test_missing_aiortc_hooks_fail_loudly() -> None:
    class NotAReceiver(forwarder_module.RTCRtpReceiver):
        def __init__(self) -> None:  # skips aiortc's __init__: no private state
            pass

    with pytest.raises(forwarder_module.AiortcCompatibilityError, match="__decoder_queue"):
        TrackForwarder.attach(NotAReceiver(), "audio")
    with pytest.raises(TypeError):
        TrackForwarder.attach(object(), "audio")  # type: ignore[arg-type]


async def test_three_subscribers_share_one_fanout_with_pause_and_reports() -> None:
    """With several steady subscribers the forwarder serves them in one loop
    (``SteadyGroup``); tone, loss-free sequence numbers and sender reports hold for each,
    and pausing one takes it out of the loop and back."""
    room = Room()

    async def body() -> None:
        fw = await room.publish(SineTrack())
        subs = [await room.subscribe(i + 1) for i in range(3)]
        sinks = [s[1] for s in subs]
        await until(lambda: all(len(s.frames) >= 60 for s in sinks), what="three subscribers")
        fan = fw.fanout.fan
        assert fan is not None and len(fan.outs) == 3 and not fan.rest
        for sink in sinks:
            assert abs(dominant_frequency([f for _, f in sink.frames[25:60]]) - 440.0) < 5.0
        for _pc, _sink, transceiver, _ in subs:  # sender reports carry the fanned-out counts
            sender = transceiver.sender
            assert sender._RTCRtpSender__packet_count == sender._lk_down.count >= 60
        pc1 = subs[0][0]
        fw.set_paused(pc1, True)
        await asyncio.sleep(0.5)
        # while a subscriber waits outside, each bulk flush (every FANOUT_FLUSH packets)
        # ends the fan-out and the next packet rebuilds it: it can be None for one packet
        await until(lambda: fw.fanout.fan is not None and len(fw.fanout.fan.outs) == 2
                    and len(fw.fanout.fan.rest) == 1, timeout=2, what="a two-member fan-out")
        t0 = time.monotonic()
        await asyncio.sleep(0.5)
        assert len(sinks[0].since(t0)) == 0 and len(sinks[1].since(t0)) >= 15
        fw.set_paused(pc1, False)
        t1 = time.monotonic()
        await until(lambda: len(sinks[0].since(t1)) >= 25, what="audio after resume")
        await until(lambda: fw.fanout.fan is not None and len(fw.fanout.fan.outs) == 3,
                    what="the resumed subscriber back in the fan-out")
        for i, (_pc, sink, _, _) in enumerate(subs):
            assert abs(dominant_frequency(sink.since(t1)[-25:]) - 440.0) < 5.0, i
        for i in range(3):  # the pause did not open a gap in anyone's sequence numbers
            receiver = next(t.receiver for t in room.subs[i][1].getTransceivers()
                            if t.kind == "audio")
            inbound = next(st for st in (await receiver.getStats()).values()
                           if st.type == "inbound-rtp")
            assert inbound.packetsLost == 0, (i, inbound)
            assert inbound.packetsReceived >= 80, (i, inbound)

    try:
        await run_bounded(body())
    finally:
        await room.close()


async def test_options_turn_single_fast_paths_off() -> None:
    """``ForwardingOptions`` reach every part: without ``fast_out`` no down-track arms
    its in-place path (so no fan-out group either), without ``sync_rtcp`` the raw
    receive tap leaves SRTCP to aiortc; the tone still arrives at both subscribers."""
    options = ForwardingOptions(fast_out=False, sync_rtcp=False)
    room = Room(options)

    async def body() -> None:
        fw = await room.publish(SineTrack())
        assert fw.options is options and fw.fanout.options is options
        subs = [await room.subscribe(i + 1) for i in range(2)]
        await until(lambda: all(len(s[1].frames) >= 60 for s in subs), what="two subscribers")
        for _pc, sink, transceiver, _ in subs:
            assert abs(dominant_frequency([f for _, f in sink.frames[25:60]]) - 440.0) < 5.0
            down = transceiver.sender._lk_down
            assert down.options is options and down.fast and not down.ready
            assert down.count >= 60  # forwarded synchronously by deliver(), one by one
            assert ReceiveTap.of(down.dtls) is None  # no tap for the subscriber's RTCP
        assert fw.fanout.fan is None and len(fw.fanout.active) == 2
        tap = fw.receiver.tap  # raw receive still on: the publisher's RTP only
        assert tap is not None and tap.packets >= 50 and tap.rtcp_packets == 0
        assert tap.options is options

    try:
        await run_bounded(body())
    finally:
        await room.close()


def test_attach_rejects_what_is_not_forwarding_options() -> None:
    class BareReceiver(forwarder_module.RTCRtpReceiver):
        def __init__(self) -> None:  # skips aiortc's __init__
            pass

    with pytest.raises(TypeError, match="options must be ForwardingOptions"):
        TrackForwarder.attach(BareReceiver(), "audio",
                              options={"fanout": False})  # type: ignore[arg-type]


async def test_fanout_members_that_negotiated_nack_keep_their_history() -> None:
    """Opus offers ``nack`` (audio NACK): a subscriber that accepts it keeps a NACK history,
    and the steady fan-out fills it too (it used to leave such subscribers out): each
    member's history holds its own consecutive sequence numbers, and a retransmission
    is the packet with that number."""
    room = Room()

    async def body() -> None:
        fw = await room.publish(SineTrack())
        subs = [await room.subscribe(i + 1) for i in range(2)]
        sinks = [s[1] for s in subs]
        await until(lambda: all(len(s.frames) >= 80 for s in sinks), what="two subscribers")
        fan = fw.fanout.fan
        assert fan is not None and len(fan.outs) == 2 and not fan.rest
        assert "nack" in subs[0][3]  # the offer carries a=rtcp-fb:<opus> nack
        for _pc, _sink, transceiver, _ in subs:
            down = transceiver.sender._lk_down
            assert down.history is not None
            seqs = sorted(seq for seq, _, _ in down.history.values())
            assert len(seqs) >= 60
            tail = seqs[-40:]
            assert all(b == a + 1 for a, b in itertools.pairwise(tail)), tail
            data = down.retransmission(tail[-1], None)
            assert data is not None and int.from_bytes(data[2:4], "big") == tail[-1]

    try:
        await run_bounded(body())
    finally:
        await room.close()
