"""The forwarder's fan-out (steady subscribers served in one loop) against the
per-subscriber path: byte-identical datagrams, counters and munger states.

Two forwarders get the same packets at the same (fake) times; one may build a
``SteadyGroup`` (``ForwardingOptions.fanout``), the other never does. Each has three subscribers with real mungers,
header writers and libsrtp sessions (same keys in both worlds, so SRTP output is
deterministic); their ``sendto`` records datagrams. Only the down-track's slow path
and transport counters (the aiortc sender's side) are replaced by a recorder.
"""

from __future__ import annotations

import os
from typing import Any

import pylibsrtp
import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from aiolivekit.server import fanout as fanout_module, receiver as receiver_module
from aiolivekit.server.config import ForwardingOptions
from aiolivekit.server.downtrack import DownTrack
from aiolivekit.server.forwarder import TrackForwarder
from aiolivekit.server.receiver import InPacket
from aiolivekit.server.rtpmunger import RtpMunger
from aiolivekit.webrtc.rtp import RtpHeaderWriter
from aiolivekit.webrtc.srtp import FastSrtp

KEYS = [os.urandom(28) for _ in range(3)]
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                             payloadType=111)


class _Clock:
    now = 1000.0

    @classmethod
    def time(cls) -> float:
        return cls.now

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


class _Down(DownTrack):
    """A down-track whose slow path (the aiortc sender's queue and send) and transport
    counters only record."""

    __slots__ = ("slow", "tx_flushes")

    def __init__(self, forwarder: TrackForwarder) -> None:
        super().__init__(None, forwarder, True)  # type: ignore[arg-type]
        self.slow: list[int] = []
        self.tx_flushes = 0

    def deliver(self, packet: InPacket, now: float, send_time: int, ntp: int) -> None:
        self.slow.append(packet.sequence_number)

    def flush_tx_stats(self) -> None:
        self.tx_flushes += 1


class _World:
    def __init__(self, fanout: bool = True) -> None:
        self.fw = TrackForwarder(None, "audio",  # type: ignore[arg-type]
                                 ForwardingOptions(fanout=fanout))
        self.fw.receiver.codecs = {111: OPUS}
        self.sent: list[list[bytes]] = [[], [], []]
        self.outs: list[_Down] = []
        self.keep: list[Any] = []
        for i, key in enumerate(KEYS):
            out = _Down(self.fw)
            session = pylibsrtp.Session(policy=pylibsrtp.Policy(
                key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM))
            srtp = FastSrtp(session)
            self.keep.append(srtp)
            pair = object()
            out.nominated, out.pair = {1: pair}, pair
            out.sendto = lambda data, addr, box=self.sent[i]: box.append(bytes(data))
            out.addr = ("127.0.0.1", 9000 + i)
            out.fast_srtp, out.srtp, out.protect = srtp, srtp._srtp, srtp._protect
            out.cdata, out.buf, out.len_p = srtp._cdata, srtp._buf, srtp._len
            out.munger = RtpMunger(48000, initial_sequence=1000 * i + 7,
                                   initial_timestamp=12345 * i)
            # every header layout: mid + audio level, mid + abs-send-time + audio level,
            # no extension at all
            out.writer = RtpHeaderWriter(0xABC0 + i, 111, mid=str(i) if i < 2 else None,
                                         mid_id=4,
                                         abs_send_time_id=3 if i == 1 else None,
                                         audio_level_id=1 if i != 2 else None)
            out.mime, out.pts = "audio/opus", frozenset({111})
            out.ready = True
            self.outs.append(out)
        self.fw.fanout.active = tuple(self.outs)
        self.fans_seen = 0

    def feed(self, seq: int, ts: int, ssrc: int = 0x5EED, *, simple: bool = True,
             level: tuple[bool, int] | None = (True, 42)) -> None:
        payload = bytes([seq & 0xFF]) * (20 + seq % 7)
        packet = InPacket(seq & 1, 111, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, level)
        packet.simple = simple
        self.fw.receiver.dispatch(packet)
        if self.fw.fanout.fan is not None:
            self.fans_seen += 1

    def pause(self, index: int, paused: bool) -> None:
        # what DownTrack.set_paused does
        self.fw.fanout.flush(dissolve=True)
        self.outs[index].munger.set_paused(paused)

    def state(self) -> list[tuple[Any, ...]]:
        self.fw.fanout.flush()
        return [
            (out.count, out.octets, out.rtp_ts, out.ntp, out.tx_bytes + 0, out.tx_packets,
             out.slow, {k: getattr(out.munger, k) for k in RtpMunger.__slots__})
            for out in self.outs
        ]


def _script(world: _World) -> None:
    seq, ts = 65500, 4_294_900_000  # both wrap during the run
    def step(n: int = 1, **kw: Any) -> None:
        nonlocal seq, ts
        for _ in range(n):
            seq, ts = seq + 1, ts + 960
            _Clock.now += 0.02
            world.feed(seq, ts, **kw)

    step(60)
    seq += 2  # two packets lost
    step(5)
    world.feed(seq - 3, ts - 3 * 960)  # a late one (reordered)
    world.feed(seq, ts)  # a duplicate
    step(40, level=None)
    world.pause(1, True)
    step(10)
    world.pause(1, False)
    step(40)
    step(1, simple=False)  # CSRCs/padding: the slow path for everyone
    step(40)
    world.outs[2].nominated[1] = object()  # another ICE pair for one subscriber
    step(3)
    world.outs[2].nominated[1] = world.outs[2].pair
    _Clock.now += 1.0  # the source goes quiet, another SSRC takes over
    for k in range(40):
        _Clock.now += 0.02
        world.feed(300 + k, 777 + 960 * k, ssrc=0xBEEF)


@pytest.mark.parametrize("seed", [0, 1])
def test_fanout_matches_per_subscriber_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout_module, "time", _Clock)
    results = []
    for fanout in (True, False):
        _Clock.now = 1000.0 + seed
        world = _World(fanout)
        _script(world)
        results.append((world, world.state()))
    (fan_world, fan_state), (plain_world, plain_state) = results
    assert fan_world.fans_seen > 150 and plain_world.fans_seen == 0
    for i in range(3):
        assert len(fan_world.sent[i]) > 200
        assert fan_world.sent[i] == plain_world.sent[i], f"subscriber {i}"
    assert fan_state == plain_state
    assert fan_world.fw.packets_forwarded == plain_world.fw.packets_forwarded
    # the paused subscriber missed exactly the ten packets of its pause
    assert len(fan_world.sent[1]) == len(fan_world.sent[0]) - 10


def test_fanout_keeps_counters_for_sender_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout_module, "time", _Clock)
    world = _World()
    for k in range(100):
        _Clock.now += 0.02
        world.feed(k + 1, 960 * (k + 1))
    fanout = world.fw.fanout
    assert fanout.fan is not None and fanout.fan.count > 0  # some still in bulk
    fanout.flush()
    assert [out.count for out in world.outs] == [len(box) for box in world.sent]
    assert all(out.tx_bytes + out.tx_flushes for out in world.outs)
    # a membership change ends the fan-out, the next packet rebuilds it
    world.outs[0].ready = False
    assert fanout.fan is None
    world.outs[0].ready = True
    world.feed(101, 960 * 101)
    assert fanout.fan is not None and len(fanout.fan.outs) == 3


def test_raw_receive_statistics_match_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    """The raw receive path keeps aiortc's receiver statistics (read by its receiver
    reports) itself: same fields as ``StreamStatistics.add`` after wraps, losses,
    reordering and duplicates."""
    import random
    import struct

    import aiortc.rtcrtpreceiver as aiortc_receiver

    monkeypatch.setattr(receiver_module, "time", _Clock)
    monkeypatch.setattr(aiortc_receiver, "time", _Clock)
    fw = TrackForwarder(None, "audio")  # type: ignore[arg-type]
    receiver = fw.receiver
    receiver.codecs = {111: OPUS}
    ours = aiortc_receiver.StreamStatistics(48000)
    reference = aiortc_receiver.StreamStatistics(48000)
    receiver.raw_stats = {0x5EED: ours}
    receiver.inline_stats = True
    rng = random.Random(7)
    seq, ts = 65400, 4_294_000_000
    order: list[tuple[int, int]] = []
    for _ in range(400):
        seq, ts = (seq + 1) & 0xFFFF, (ts + 960) & 0xFFFFFFFF
        if rng.random() < 0.05:
            continue  # lost
        order.append((seq, ts))
        if rng.random() < 0.05 and len(order) > 3:
            order.append(order[-3])  # late duplicate
    for i in range(0, len(order) - 1, 17):
        order[i], order[i + 1] = order[i + 1], order[i]  # reordered pairs
    for seq, ts in order:
        _Clock.now += 0.02 + rng.random() * 0.004
        packet = struct.pack("!BBHII", 0x80, 111, seq, ts, 0x5EED) + b"opus"
        receiver.on_raw(memoryview(packet), len(packet))
        reference.add(InPacket(0, 111, seq, ts, 0x5EED, b"opus", None))  # type: ignore[arg-type]
        assert vars(ours) == vars(reference)
    assert ours.packets_lost == reference.packets_lost > 0
    assert ours.jitter == reference.jitter > 0 and ours.cycles == 0x10000
