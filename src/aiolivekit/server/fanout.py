"""Fan-out: one published packet to every down-track of its track.

:class:`Fanout` keeps the track's active :class:`~.downtrack.DownTrack` objects and
runs, per packet, all the CPU work first and the system calls back to back: on a busy
machine each loopback send wakes a subscriber, which may take this CPU (and its
caches) before the next send. Inside a read batch the sends wait for the end of the
whole batch (:mod:`.read_batching`).

Down-tracks whose mungers are steady for the current source are served together by a
:class:`SteadyGroup`: per newer in-order packet and subscriber only two additions, the
header write, ``srtp_protect`` and the send; mungers and report counters are updated in
bulk. Each packet touches far fewer objects, which is what a forwarded packet costs on
a busy machine, where the subscriber state is rarely in cache.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..webrtc.rtp import abs_send_time, ntp_time
from .config import ForwardingOptions
from .read_batching import send_all

if TYPE_CHECKING:  # pragma: no cover
    from .downtrack import DownTrack
    from .receiver import InPacket, TrackReceiver
    from .rtp_io import ReceiveTap

__all__ = ["FANOUT_FLUSH", "FANOUT_MIN", "Fanout", "SteadyGroup"]

FANOUT_MIN = 2  # fewest steady subscribers worth a SteadyGroup
FANOUT_FLUSH = 32  # packets between bulk updates of the members' mungers and counters


class SteadyGroup:
    """One source's newer in-order packets to every steady down-track in one loop.

    Built by :meth:`Fanout.build` from the down-tracks whose mungers are in a steady
    state for the source (:meth:`RtpMunger.steady_state`). The mungers and
    sender-report counters are brought up to date in bulk by :meth:`Fanout.flush`
    (every :data:`FANOUT_FLUSH` packets, before a sender report, and whenever
    membership or a subscriber's state changes). Down-tracks that are not steady
    (``rest``) take the per-subscriber path.
    """

    __slots__ = (
        "advanced",
        "checks",
        "count",
        "entries",
        "highest",
        "last_now",
        "last_ntp",
        "last_ts",
        "level",
        "octets",
        "outs",
        "protect",
        "pt",
        "rest",
        "ssrc",
        "tx_bytes",
    )

    def __init__(
        self, ssrc: int, pt: int, highest: int, level: bool,
        members: list[tuple[DownTrack, int, int]], rest: tuple[DownTrack, ...],
    ) -> None:
        self.ssrc = ssrc
        self.pt = pt
        self.highest = highest
        self.level = level  # whether the source's packets carry an audio level
        self.outs = tuple(out for out, _, _ in members)
        self.checks = tuple((out.nominated, out.pair) for out in self.outs)
        self.protect = self.outs[0].protect  # libsrtp's srtp_protect, the same for all
        # the header write inlined (RtpHeaderWriter.fan_layout), then libsrtp and the socket
        # a member that negotiated NACK keeps its NACK history here too (its history)
        self.entries = tuple(
            (*out.writer.fan_layout(level), out.buf, out.cdata, out.len_p, out.srtp,
             out.sendto, out.addr, seq_off, ts_off, out, out.history, out.history_size)
            for out, seq_off, ts_off in members
        )
        self.rest = rest
        self.tx_bytes = [0] * len(members)
        self.count = 0
        self.octets = 0
        self.advanced = 0
        self.last_ts = 0
        self.last_now = 0.0
        self.last_ntp = 0

    def take(
        self, packet: InPacket, send_time: int, now: float, ntp: int,
        sends: list[tuple[Any, bytes, Any, DownTrack]],
    ) -> bool:
        """Rewrite and protect ``packet`` for every member, queueing the datagrams on
        ``sends``; ``False`` (nothing done) if the packet does not fit the group."""
        level = packet.audio_level
        if (
            packet.ssrc != self.ssrc
            or packet.payload_type != self.pt
            or not packet.simple
            or (level is not None) is not self.level
        ):
            return False
        seq = packet.sequence_number
        diff = ((seq - self.highest + 0x8000) & 0xFFFF) - 0x8000
        if diff <= 0:
            return False  # old or repeated: the mungers' own rules decide
        for nominated, pair in self.checks:
            if nominated.get(1) is not pair:
                return False
        self.highest = seq
        self.advanced += diff
        ts = packet.timestamp
        mark = 0x80 if packet.marker else 0
        level_bits = ((0x80 if level[0] else 0) | (level[1] & 0x7F)) if level else 0
        payload = packet.payload
        n_payload = len(payload)
        tx_bytes = self.tx_bytes
        protect = self.protect
        i = 0
        for (
            kind, pack, head, ast_word, al_word, size, pt, ssrc,
            buf, cdata, len_p, srtp, sendto, addr, seq_off, ts_off, out, history, hsize,
        ) in self.entries:
            if kind == 4:
                pack(buf, 0, 0x90, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc, head, ast_word | send_time,
                     al_word | level_bits)
            elif kind == 3:
                pack(buf, 0, 0x90, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc, head, al_word | level_bits)
            elif kind == 2:
                pack(buf, 0, 0x90, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc, head, ast_word | send_time)
            elif kind == 1:
                pack(buf, 0, 0x90, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc, head)
            else:
                pack(buf, 0, 0x80, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc)
            end = size + n_payload
            buf[size:end] = payload
            if history is not None:
                out_seq = (seq + seq_off) & 0xFFFF
                history[out_seq % hsize] = (out_seq, buf[0:end], size)
            len_p[0] = end
            if not protect(srtp, cdata, len_p):  # else libsrtp refused (key limit): drop
                n = len_p[0]
                tx_bytes[i] += n
                sends.append((sendto, buf[0:n], addr, out))
            i += 1
        self.count += 1
        self.octets += n_payload
        self.last_ts = ts
        self.last_now = now
        self.last_ntp = ntp
        return True


class Fanout:
    """The active down-tracks of one track, and the per-packet loop over them."""

    def __init__(self, options: ForwardingOptions) -> None:
        self.options = options
        self.active: tuple[DownTrack, ...] = ()
        self.fan: SteadyGroup | None = None
        self._fan_on = options.fanout
        self._retry_at = 0  # receiver.packets_received value before which no build is tried
        self.receiver: TrackReceiver | None = None  # set by the forwarder
        self.tap: ReceiveTap | None = None  # the raw receive path's, set by the receiver
        self.packets_forwarded = 0

    def dispatch(self, packet: InPacket, now: float | None = None) -> None:
        """Rewrite, protect and send ``packet`` for every active down-track."""
        active = self.active
        if active:
            if now is None:
                now = time.time()
            send_time = abs_send_time(now)
            ntp = ntp_time(now)
            tap = self.tap
            batcher = tap.batcher if tap is not None else None
            if batcher is not None and batcher.batching:
                sends: list[Any] = batcher.sends
                deferred = True
            else:
                sends = []
                deferred = False
            before = len(sends)
            fan = self.fan
            if (
                fan is None
                and self._fan_on
                and len(active) >= FANOUT_MIN
                and self.receiver is not None
                and self.receiver.packets_received >= self._retry_at
            ):
                fan = self.build(packet)
            if fan is not None:
                if fan.take(packet, send_time, now, ntp, sends):
                    active = fan.rest
                    if fan.count >= FANOUT_FLUSH:
                        self.flush()
                else:
                    self.flush(dissolve=True)
            for out in active:
                datagram = out.forward(packet, now, send_time, ntp)
                if datagram is not None:
                    sends.append((out.sendto, datagram, out.addr, out))
            self.packets_forwarded += len(sends) - before
            if not deferred:
                send_all(sends)

    def add(self, down: DownTrack) -> None:
        if down not in self.active:
            self.flush(dissolve=True)
            self.active = (*self.active, down)

    def remove(self, down: DownTrack) -> None:
        self.flush(dissolve=True)
        self.active = tuple(o for o in self.active if o is not down)

    def clear(self) -> None:
        self.flush(dissolve=True)
        self.active = ()

    def build(self, packet: InPacket) -> SteadyGroup | None:
        """A :class:`SteadyGroup` of the down-tracks steady for ``packet``'s source, or
        ``None`` (fewer than :data:`FANOUT_MIN`; retried after :data:`FANOUT_FLUSH`
        packets)."""
        receiver = self.receiver
        self._retry_at = (receiver.packets_received if receiver is not None else 0) + FANOUT_FLUSH
        if not packet.simple:
            return None
        ssrc, pt = packet.ssrc, packet.payload_type
        members: list[tuple[DownTrack, int, int]] = []
        rest: list[DownTrack] = []
        highest: int | None = None
        for out in self.active:
            state = None
            if (
                out._ready
                and not out.items
                and pt in out.pts
                and out.nominated.get(1) is out.pair
            ):
                state = out.munger.steady_state(ssrc)
            if state is not None and (highest is None or state[2] == highest):
                highest = state[2]
                members.append((out, state[0], state[1]))
            else:
                rest.append(out)
        if highest is None or len(members) < FANOUT_MIN:
            return None
        self.fan = SteadyGroup(ssrc, pt, highest, packet.audio_level is not None, members,
                               tuple(rest))
        return self.fan

    def flush(self, dissolve: bool = False) -> None:
        """Bring the members' mungers, sender-report and transport counters up to date
        (the group keeps them in bulk); ``dissolve`` (or non-members waiting to join)
        also ends the group, rebuilt at the next packet."""
        fan = self.fan
        if fan is None:
            return
        if fan.count:
            count, octets, seq, ts = fan.count, fan.octets, fan.highest, fan.last_ts
            for out, tx_bytes in zip(fan.outs, fan.tx_bytes, strict=True):
                munger = out.munger
                munger.catch_up(seq, ts, fan.advanced, fan.last_now)
                out.count += count
                out.octets += octets
                out.ntp = fan.last_ntp
                out.rtp_ts = munger.last_timestamp
                out.tx_bytes += tx_bytes
                out.tx_packets += count
                out.flush_tx_stats()
            fan.count = fan.octets = fan.advanced = 0
            fan.tx_bytes = [0] * len(fan.outs)
        if dissolve or fan.rest:
            self.fan = None
            self._retry_at = 0
