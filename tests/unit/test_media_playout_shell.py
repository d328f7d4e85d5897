"""PlayoutJitterBuffer: the asyncio shell between aiortc's receiver and the playout buffer
(real libopus, real event loop; the receiver and track are stand-ins for aiortc's)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from aiolivekit.media import opus_decoder, opus_native
from aiolivekit.media.jitter import PlayoutJitterBuffer, attach_listener, playout_stats
from aiolivekit.media.red import RedEncoder

pytestmark = pytest.mark.skipif(not opus_decoder.available(), reason="no native libopus")

OPUS, RED = 111, 63


class _Receiver:
    def __init__(self) -> None:
        self._RTCRtpReceiver__codecs = {
            OPUS: RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                                        payloadType=OPUS),
            RED: RTCRtpCodecParameters(mimeType="audio/red", clockRate=48000, channels=2,
                                       payloadType=RED),
        }
        self._RTCRtpReceiver__jitter_buffer: Any = None


class _Track:
    def __init__(self) -> None:
        self._streams: list[object] = [object()]
        self._ended = False
        self.frames: list[tuple[float, Any]] = []

    def _deliver_audio(self, frame: Any) -> None:
        self.frames.append((asyncio.get_running_loop().time(), frame))


def _packets(count: int, loss_perc: int = 0) -> list[bytes]:
    enc = opus_native.OpusEncoder(48000, 1, 32000)
    if loss_perc:
        assert enc._lib.opus_encoder_ctl(enc._handle, 4014, loss_perc) == 0
    t = np.arange(960 * count) / 48000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).tobytes()
    return [enc.encode(pcm[i * 1920:(i + 1) * 1920]) for i in range(count)]


def _rtp(seq: int, ts: int, payload: bytes, pt: int = OPUS) -> RtpPacket:
    p = RtpPacket(payload_type=pt, sequence_number=seq & 0xFFFF, timestamp=ts & 0xFFFFFFFF)
    p.payload = payload
    p._data = payload  # what aiortc's receiver stores for the decoder
    return p


def _setup(**options: Any) -> tuple[_Receiver, _Track, PlayoutJitterBuffer]:
    receiver = _Receiver()
    jb = PlayoutJitterBuffer(receiver, channels=2, **options)
    receiver._RTCRtpReceiver__jitter_buffer = jb
    track = _Track()
    assert attach_listener(receiver, track)
    return receiver, track, jb


async def _send(jb: PlayoutJitterBuffer, packets: list[tuple[int, int, bytes, int]],
                order: list[int] | None = None) -> None:
    """One packet every 20 ms (in ``order``), then 60 ms for the buffer to drain."""
    for i in order if order is not None else range(len(packets)):
        seq, ts, payload, pt = packets[i]
        assert jb.add(_rtp(seq, ts, payload, pt)) == (False, None)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.06)


async def test_frames_are_20_ms_on_a_steady_pace_in_order() -> None:
    _, track, jb = _setup()
    pk = _packets(25)
    # packets 5 and 6 swap places (arrive 20 ms apart, the later one first)
    order = list(range(25))
    order[5], order[6] = 6, 5
    await _send(jb, [(1000 + i, 960 * i, p, OPUS) for i, p in enumerate(pk)], order)
    frames = track.frames
    assert all(f.samples_per_channel == 960 and f.num_channels == 2 for _, f in frames)
    # 25, then concealment while the drain waits (60 ms, longer when the loop wakes late)
    assert 24 <= len(frames) <= 33
    times = np.array([t for t, _ in frames])
    gaps = np.diff(times)
    # the pace is a 20 ms grid (the loop is late sometimes on a loaded machine)
    assert np.median(gaps) == pytest.approx(0.02, abs=0.003)
    s = jb.buffer.stats
    assert s.packets_received >= 0 and s.jitter_buffer_emitted_count >= 23 * 960
    # the swapped packet was lost to the buffer once (target ~0 at first), or reordered:
    # either way every slot was filled and nothing is left out of the timeline
    pcm = np.frombuffer(b"".join(bytes(f.data) for _, f in frames), dtype=np.int16)
    assert len(pcm) == len(frames) * 1920
    assert np.abs(pcm[960 * 4:]).max() > 4000


async def test_nobody_listening_takes_nothing_and_stops_the_timer() -> None:
    _, track, jb = _setup()
    pk = _packets(10)
    track._streams.clear()
    await _send(jb, [(1 + i, 960 * i, p, OPUS) for i, p in enumerate(pk[:5])])
    assert track.frames == [] and jb.unheard == 5 and jb._timer is None
    track._streams.append(object())
    await _send(jb, [(1 + i, 960 * i, p, OPUS) for i, p in enumerate(pk)][5:])
    # 5 packets of 20 ms from the first one heard, then concealment while the drain waits
    assert 5 <= len(track.frames) <= 9
    jb.close()
    n = len(track.frames)
    assert jb.add(_rtp(11, 9600, pk[0])) == (False, None)
    await asyncio.sleep(0.03)
    assert len(track.frames) == n and jb._timer is None


async def test_red_packets_fill_a_loss_and_show_in_stats() -> None:
    # a 20 ms floor: the copy (in the next packet) is there when the loss is decided;
    # without it the first loss of a window is concealed while waiting (next test)
    receiver, track, jb = _setup(min_delay=0.02)
    pk = _packets(20)
    red = RedEncoder(OPUS)
    wire = [(500 + i, 960 * i, red.encode(p, 960 * i), RED) for i, p in enumerate(pk)]
    lost = 8
    await _send(jb, wire, [i for i in range(20) if i != lost])
    # the copy filled the loss (bit-exactness: test_media_playout, on a simulated clock;
    # here a late wake-up of the loop may make the buffer shorten the audio elsewhere):
    # nothing was concealed before the stream ended (the tail after the last packet is)
    s = jb.buffer.stats
    assert (s.red_packets_recovered, s.red_samples, s.packets_lost) == (1, 960, 1)
    assert s.concealment_events == 1 and s.decode_errors == 0
    tail = np.frombuffer(b"".join(bytes(f.data) for _, f in track.frames), dtype=np.int16)
    assert np.abs(tail[2 * 960 * 2 : 2 * 960 * 18]).max() > 6000
    stats = playout_stats(receiver)
    assert stats is not None
    assert stats["redPacketsRecovered"] == 1 and stats["concealedSamples"] >= 0
    assert stats["jitterBufferEmittedCount"] == 20 * 960


async def test_first_red_loss_without_a_floor_is_recovered_late() -> None:
    _, track, jb = _setup()
    pk = _packets(20)
    red = RedEncoder(OPUS)
    wire = [(500 + i, 960 * i, red.encode(p, 960 * i), RED) for i, p in enumerate(pk)]
    await _send(jb, wire, [i for i in range(20) if i != 8])
    s = jb.buffer.stats
    # waited for (concealed) while due, then played from its copy: no audio is skipped
    assert s.red_packets_recovered == 1 and s.packets_discarded == 0
    assert s.concealed_samples >= 480 and s.target_delay >= 0.02
    pcm = np.frombuffer(b"".join(bytes(f.data) for _, f in track.frames), dtype=np.int16)
    assert np.abs(pcm[2 * 960 * 2 : 2 * 960 * 18]).max() > 6000


async def test_malformed_red_and_unknown_payload_types_are_dropped() -> None:
    _, track, jb = _setup()
    assert jb.add(_rtp(1, 0, b"\x80", RED)) == (False, None)  # a header cut short
    assert jb.add(_rtp(2, 960, b"xyz", 99)) == (False, None)  # not a codec we receive
    assert jb.dropped == 2 and track.frames == []
    jb.close()


class _NackReceiver(_Receiver):
    """A receiver whose Opus codec negotiated ``nack``; records the NACKs it is asked to
    send (aiortc's ``_send_rtcp_nack``)."""

    def __init__(self, nack: bool = True) -> None:
        from aiortc.rtcrtpparameters import RTCRtcpFeedback

        super().__init__()
        if nack:
            self._RTCRtpReceiver__codecs[OPUS].rtcpFeedback = [RTCRtcpFeedback(type="nack")]
        self.nacks: list[tuple[float, int, list[int]]] = []

    async def _send_rtcp_nack(self, media_ssrc: int, lost: list[int]) -> None:
        self.nacks.append((asyncio.get_running_loop().time(), media_ssrc, list(lost)))


async def _lossy_run(receiver: _NackReceiver, *, resend_after: float | None
                     ) -> PlayoutJitterBuffer:
    """Packets 0..29 every 20 ms, 10 lost; when NACKed it comes back ``resend_after``
    later (the SFU's answer). A 60 ms minimum delay: the event loop of a loaded machine
    runs timers late by tens of ms, which is not what these tests are about."""
    jb = PlayoutJitterBuffer(receiver, channels=2, min_delay=0.06)
    receiver._RTCRtpReceiver__jitter_buffer = jb
    track = _Track()
    assert attach_listener(receiver, track)
    payloads = _packets(30)
    loop = asyncio.get_running_loop()
    answered: set[int] = set()

    def pkt(i: int) -> RtpPacket:
        p = _rtp(1000 + i, 960 * i, payloads[i])
        p.ssrc = 4242
        return p

    start = loop.time()
    for i in range(30):
        if i != 10:
            jb.add(pkt(i))
        for _, _, lost in receiver.nacks:
            for seq in lost:
                if resend_after is not None and seq not in answered:
                    answered.add(seq)
                    loop.call_later(resend_after, jb.add, pkt(seq - 1000))
        # on a fixed 20 ms grid (relative sleeps drift late on a loaded machine)
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
    await asyncio.sleep(0.1)
    jb.close()
    return jb


async def test_a_missing_packet_is_nacked_and_the_retransmission_fills_it() -> None:
    receiver = _NackReceiver()
    jb = await _lossy_run(receiver, resend_after=0.005)
    assert receiver.nacks and receiver.nacks[0][1:] == (4242, [1010])
    stats = playout_stats(receiver)
    assert stats is not None
    assert stats["nackCount"] >= 1 and stats["nackPacketsRecovered"] == 1, stats
    assert stats["nackPacketsLate"] == 0
    s = jb.buffer.stats
    # decoded from the retransmission, not concealed as lost (the only concealment: the
    # end of input)
    assert s.packets_lost == 0 and s.concealment_events <= 1, s


async def test_an_unanswered_nack_is_retried_a_bounded_number_of_times() -> None:
    receiver = _NackReceiver()
    jb = await _lossy_run(receiver, resend_after=None)
    assert [lost for _, _, lost in receiver.nacks] == [[1010]] * len(receiver.nacks)
    assert 1 <= len(receiver.nacks) <= 3
    assert jb.buffer.stats.packets_lost == 1  # concealed in the end


async def test_no_nack_without_negotiated_feedback() -> None:
    receiver = _NackReceiver(nack=False)
    jb = await _lossy_run(receiver, resend_after=0.005)
    assert receiver.nacks == [] and jb.nack is None
    stats = playout_stats(receiver)
    assert stats is not None and stats["nackCount"] == 0
