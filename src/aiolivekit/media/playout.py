"""An adaptive playout (jitter) buffer for received Opus audio, sans-I/O (NetEq's job).

Packets go in with :meth:`AudioPlayoutBuffer.insert`; frames of 10 ms (or 20 ms) come out
of :meth:`AudioPlayoutBuffer.pull` on a steady grid (the caller asks at ``next_due()`` and
whenever a packet arrives), every slot filled: the output timeline has no holes. Nothing
here reads a clock or touches a socket. Design notes: ``docs/audio-playout.md``.

* **Order**: by unwrapped sequence number; duplicates and packets older than what was
  played are dropped (and counted).
* **Delay**: the target is the 95th percentile of the transits ``arrival - timestamp /
  clock`` over a 2 s window minus their minimum (~0 on a clean network: a packet plays as
  it arrives). Where RED copies repair losses, a loss adds one packet to it for ``window``
  seconds (the copy rides the next packet); FEC and retransmissions are not waited for. A
  late packet's frame is held up to ``max_hold`` past its slot.
* **Loss**: a missing packet is waited for (concealment, timeline held) while playing it
  would be earlier than the target; then it is declared lost and filled from a RED copy,
  the next packet's FEC, or concealment (libopus' PLC, then the pitch extension), which
  also covers the decoder's first 10 ms after skipped packets.
* **DTX**: silence after a DTX packet, or a timestamp jump without a sequence gap.
* **Adaptation**: the delay grows by concealment while waiting and silence before quiet
  frames; it shrinks by dropping quiet frames, removing pitch periods (:meth:`_accelerate`)
  and, above ``max_delay``, dropping frames, no further than the next packet's *lead*
  allows (:meth:`_spare`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from . import timescale
from .playout_delay import DelayEstimator
from .playout_expand import PitchExtension
from .playout_stats import PlayoutStats
from .playout_types import PlayoutDecoder, PlayoutFrame, PlayoutKind
from .red import parse_red

__all__ = [
    "AudioPlayoutBuffer",
    "PlayoutDecoder",
    "PlayoutFrame",
    "PlayoutKind",
    "PlayoutStats",
]

logger = logging.getLogger(__name__)

_SETTLE_MS = 10  # ms the decoder settles after skipped packets (joined over)
_RESYNC = 3000  # a sequence jump this far (either way) is a new stream
_EPS = 1e-6  # seconds: slot arithmetic is in floats
_CONCEALED = (PlayoutKind.PLC, PlayoutKind.EXPAND)


@dataclass(slots=True)
class _Packet:
    seq: int
    ts: int
    payload: bytes
    arrival: float
    redundant: bool


@dataclass(slots=True)
class _Chunk:
    pcm: bytes
    kind: PlayoutKind
    ts: int | None  # timeline position (RTP ticks, unwrapped) of its first sample


def _unwrap(value: int, last: int, bits: int) -> int:
    mod = 1 << bits
    delta = (value - last) % mod
    if delta >= mod >> 1:
        delta -= mod
    return last + delta


class AudioPlayoutBuffer:
    """Adaptive jitter buffer + loss concealment for one Opus stream (see module doc)."""

    def __init__(
        self,
        decoder: PlayoutDecoder,
        *,
        frame_ms: int = 10,
        clock_rate: int = 48000,
        min_delay: float = 0.0,
        max_delay: float = 0.4,
        window: float = 2.0,
        percentile: float = 0.95,
        max_packets: int = 250,
        quiet_level: int = 64,
        max_concealment: float = 0.5,
        max_hold: float = 0.005,
        extend_after: float | None = 0.02,
    ) -> None:
        if frame_ms not in (10, 20):
            raise ValueError("frame_ms must be 10 or 20")
        if clock_rate % decoder.sample_rate:
            raise ValueError("the decoder rate must divide the RTP clock rate")
        if not 0 <= min_delay <= max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")
        if not 0 < percentile <= 1 or window <= 0 or max_packets < 2:
            raise ValueError("bad percentile, window or max_packets")
        self.decoder = decoder
        self.clock = clock_rate
        self.rate = decoder.sample_rate
        self.channels = decoder.channels
        self._tick = clock_rate // decoder.sample_rate  # RTP ticks per sample
        self.frame_ticks = clock_rate * frame_ms // 1000
        self.frame_samples = self.frame_ticks // self._tick
        self._frame_bytes = self.frame_samples * self.channels * 2
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.max_packets = max_packets
        self.quiet_level = quiet_level
        self.max_concealment_ticks = int(max_concealment * clock_rate)
        if not 0 <= max_hold < frame_ms / 1000:
            raise ValueError("max_hold must be below one frame")
        self.max_hold = max_hold
        # concealment past this (s) repeats the last pitch period (None: libopus' PLC only)
        self.extend_after = extend_after
        self._ext = PitchExtension(decoder.sample_rate, decoder.channels, quiet_level)
        # optional decoder method: whether a loss after a packet begins with its own PLC
        self._plc_first_of = getattr(decoder, "plc_first", None)
        if extend_after is not None and extend_after < 0:
            raise ValueError("extend_after must be >= 0 (or None)")
        # a timestamp jump beyond this is the sender's clock moving, not silence to play
        self._max_gap = int(clock_rate * max(1.0, 2 * max_delay))
        # frames dropped in one pull at most (the rest of a backlog goes in later pulls)
        self._max_drops = int(max_delay * 1000) // frame_ms + 2
        self._est = DelayEstimator(clock_rate, window, percentile)
        self._window = window
        self.stats = PlayoutStats()
        self._pkts: dict[int, _Packet] = {}
        self._max_seq: int | None = None
        self._max_ts: int | None = None
        self._loss_times: deque[float] = deque()
        self._reset_playout()

    # ------------------------------------------------------------------ state

    def _reset_playout(self) -> None:
        self._ext.reset()
        self._playing = False
        self._last_seq: int | None = None
        self._ts_play = 0
        self._slot = self._slot_anchor = 0.0
        self._slot_index = 0
        self._pending: deque[_Chunk] = deque()
        self._pending_bytes = 0
        self._last_dtx = False
        self._last_ticks = 960  # duration of the last packet decoded
        self._conceal_run = 0
        self._in_concealment = False
        self._expanded = 0  # ticks concealed while waiting since the last decoded packet
        self._plc_first = True  # a loss begins with libopus' PLC (decoder.plc_first)
        self._loss: tuple[int, int, int] | None = None  # (start, end, FEC ticks) being filled
        self._awaited: int | None = None  # see take_awaited

    def _restart(self) -> None:
        """A new stream: forget packets, timing and decoder state."""
        self._pkts.clear()
        self._max_seq = self._max_ts = None
        self._est = DelayEstimator(self.clock, self._est.window, self._est.percentile)
        self._loss_times.clear()
        self._reset_playout()
        self.decoder.reset()
        self.stats.stream_restarts += 1

    @property
    def playing(self) -> bool:
        return self._playing

    def target_delay(self, now: float | None = None) -> float:
        """The delay the buffer aims at (seconds)."""
        target = self._est.spread() if not self._est.empty else 0.0
        while now is not None and self._loss_times and now - self._loss_times[0] > self._window:
            self._loss_times.popleft()
        if self._loss_times and self.stats.red_blocks_received:
            # what repairs a loss (the next packet's RED copy) comes a packet later, as
            # jittered as any packet. FEC and retransmissions are not waited for: they
            # repair what comes within the window (NetEq's rule too)
            target += self._last_ticks / self.clock
        return min(self.max_delay, max(self.min_delay, target))

    def note_loss(self, now: float) -> None:
        """A gap was seen (and NACKed): a loss for the target, as a declared one."""
        self._loss_times.append(now)

    def deadline(self, seq: int) -> float | None:
        """When the missing packet ``seq`` (16-bit) would be declared lost (caller's
        clock; a past time once its slot is played), None when the buffer holds it (or a
        RED copy of it) or knows no timing yet. What a NACK must arrive before."""
        if self._max_seq is None or self._max_ts is None or self._est.empty:
            return None
        ext = _unwrap(seq, self._max_seq, 16)
        if ext in self._pkts:
            return None
        if self._last_seq is not None and ext <= self._last_seq:
            return float("-inf")
        later = min((s for s in self._pkts if s > ext), default=None)
        if later is not None:
            ts = self._pkts[later].ts - (later - ext) * self._last_ticks
        else:
            ts = self._max_ts + (ext - self._max_seq) * self._last_ticks
        due = self._expected(ts) + self.target_delay()
        if self._playing:  # not before the slot of the frame it starts in (delay > target)
            ahead = self._pending_time() + (ts - self._ts_play) / self.clock
            frame = self.frame_ticks / self.clock
            due = max(due, self._slot + math.floor(ahead / frame + _EPS) * frame)
        if later is None:  # no later packet shows it missing: the buffer waits for one
            due = max(due, self._expected(ts + self._last_ticks))
        return due + self.max_hold

    def take_awaited(self) -> int | None:
        """The packet (16-bit seq) a frame was concealed waiting for before a later one
        showed it missing (once; else None): a retransmission may still beat that one."""
        seq, self._awaited = self._awaited, None
        return None if seq is None else seq & 0xFFFF

    def _expected(self, ts: int) -> float:
        return self._est.expected(ts)

    def next_due(self) -> float | None:
        """When the next frame is due (caller's clock), or None before the first packet."""
        if self._playing:
            if self.max_hold and self._waiting():
                return self._slot + self.max_hold
            return self._slot
        if not self._pkts or self._est.empty:
            return None
        first = self._pkts[min(self._pkts)]
        return self._expected(first.ts) + self.target_delay()

    # ------------------------------------------------------------------ input

    def insert(
        self,
        seq: int,
        rtp_timestamp: int,
        payload: bytes,
        arrival_time: float,
        *,
        is_red_redundant: bool = False,
        requested: bool = False,
    ) -> bool:
        """Add one packet (or a RED redundant copy); False when it is dropped. A ``requested``
        (NACKed) one is left out of the delay estimate: its lateness may be the repair's."""
        if not 0 <= seq <= 0xFFFF or not 0 <= rtp_timestamp <= 0xFFFFFFFF:
            raise ValueError("sequence number or timestamp out of range")
        if not payload:
            raise ValueError("empty audio payload")
        if self._max_seq is not None and self._max_ts is not None:
            ext_seq = _unwrap(seq, self._max_seq, 16)
            if abs(ext_seq - self._max_seq) > _RESYNC:
                if is_red_redundant:
                    return False
                logger.debug("sequence jump %d -> %d: new stream", self._max_seq, ext_seq)
                self._restart()
        if self._max_seq is None or self._max_ts is None:
            if is_red_redundant:
                return False  # a copy cannot start a stream: its sequence number is inferred
            ext_seq, ext_ts = seq + (1 << 16), rtp_timestamp + (1 << 32)
            self._max_seq, self._max_ts = ext_seq, ext_ts
        else:
            ext_seq = _unwrap(seq, self._max_seq, 16)
            ext_ts = _unwrap(rtp_timestamp, self._max_ts, 32)
        existing = self._pkts.get(ext_seq)
        if is_red_redundant:
            self.stats.red_blocks_received += 1
        elif existing is not None and not existing.redundant:
            self.stats.packets_duplicated += 1
            return False
        else:
            self.stats.packets_received += 1
            if not requested:
                self._est.add(arrival_time, ext_ts)  # late packets too: they raise the target
            if ext_seq > self._max_seq:
                self._max_seq, self._max_ts = ext_seq, max(ext_ts, self._max_ts)
        if self._last_seq is not None and ext_seq <= self._last_seq:
            if not is_red_redundant:
                self.stats.packets_discarded += 1
                if self._loss_times:  # late, not lost: the delay estimate has its lateness
                    self._loss_times.pop()
            return False
        if existing is not None and is_red_redundant:
            return False
        if len(self._pkts) >= self.max_packets and existing is None:
            logger.debug("playout buffer full (%d packets): flushed", len(self._pkts))
            self.stats.buffer_flushes += 1
            self._pkts.clear()
            self._reset_playout()
        self._pkts[ext_seq] = _Packet(
            ext_seq, ext_ts, bytes(payload), arrival_time, is_red_redundant
        )
        return True

    def insert_red(
        self, seq: int, rtp_timestamp: int, payload: bytes, arrival_time: float, *,
        payload_type: int | None,
    ) -> int:
        """Insert a RED packet's primary and redundant blocks of ``payload_type`` (Opus;
        None: every block, when RED can carry nothing else); returns how many were taken.
        ``ValueError`` for a malformed RED payload."""
        red = parse_red(payload)
        taken = 0
        if payload_type in (None, red.primary_payload_type) and red.primary:
            taken += self.insert(seq, rtp_timestamp, red.primary, arrival_time)
        count = len(red.redundant)
        for i, block in enumerate(red.redundant):
            if payload_type not in (None, block.payload_type) or not block.data:
                continue
            taken += self.insert(
                (seq - (count - i)) & 0xFFFF,
                (rtp_timestamp - block.timestamp_offset) & 0xFFFFFFFF,
                block.data,
                arrival_time,
                is_red_redundant=True,
            )
        return taken

    # ------------------------------------------------------------------ output

    def pull(self, now: float) -> PlayoutFrame | None:
        """The frame due at ``now``, or None when none is due (see :meth:`next_due`)."""
        if not self._playing:
            due = self.next_due()
            if due is None or now < due:
                return None
            first = self._pkts[min(self._pkts)]
            self._playing = True
            self._last_seq = first.seq - 1
            self._ts_play = first.ts
            self._slot = self._slot_anchor = due
            self._slot_index = 0
        if now < self._slot - _EPS:
            return None
        if self.max_hold and now < self._slot + self.max_hold - _EPS and self._waiting():
            return None  # hold the frame a little for a packet that is just late
        if now - self._slot > self.max_delay:
            # the caller stopped pulling for a while: restart the pace from now (the delay
            # this leaves is then taken back by dropping frames, see _adapt)
            self.stats.slot_resyncs += 1
            self._slot = self._slot_anchor = now
            self._slot_index = 0
        slot = self._slot
        self._slot_index += 1
        self._slot = self._slot_anchor + self._slot_index * self.frame_ticks / self.clock
        target = self.target_delay(now)
        for drops in range(self._max_drops + 1):  # each extra round drops a frame
            chunks = self._take_frame(slot, now)
            frame = self._adapt(chunks, slot, target, drops < self._max_drops, now)
            if frame is not None:
                break
        assert frame is not None
        self._account(frame, slot, target)
        return frame

    def _take_frame(self, slot: float, now: float) -> list[_Chunk]:
        while self._pending_bytes < self._frame_bytes:
            self._produce(slot, now)
        out: list[_Chunk] = []
        need = self._frame_bytes
        while need:
            c = self._pending[0]
            if len(c.pcm) <= need:
                self._pending.popleft()
                out.append(c)
                need -= len(c.pcm)
            else:
                head = _Chunk(c.pcm[:need], c.kind, c.ts)
                c.pcm = c.pcm[need:]
                if c.ts is not None:
                    c.ts += need // (2 * self.channels) * self._tick
                out.append(head)
                need = 0
        self._pending_bytes -= self._frame_bytes
        return out

    def _frame_delay(self, chunks: list[_Chunk], slot: float) -> float | None:
        ts = chunks[0].ts
        if ts is None or self._est.empty:
            return None
        return slot - self._expected(ts)

    def _adapt(
        self, chunks: list[_Chunk], slot: float, target: float, may_drop: bool,
        now: float | None = None,
    ) -> PlayoutFrame | None:
        """Accelerate (drop this frame: None) or decelerate (insert silence before it)."""
        if len(chunks) == 1:
            kinds = {chunks[0].kind}
            data, kind = chunks[0].pcm, chunks[0].kind
        else:
            kinds = {c.kind for c in chunks}
            data = b"".join(c.pcm for c in chunks)
            kind = max(kinds, key=lambda k: sum(len(c.pcm) for c in chunks if c.kind is k))
        frame = PlayoutFrame(
            data, self.rate, self.channels, self.frame_samples, kind, None, slot
        )
        if chunks[0].ts is not None:
            frame.rtp_timestamp = chunks[0].ts & 0xFFFFFFFF
        if not kinds <= {PlayoutKind.NORMAL, PlayoutKind.SILENCE}:
            return frame
        delay = self._frame_delay(chunks, slot)
        if delay is None:
            return frame
        self.stats.current_delay = delay
        frame_time = self.frame_ticks / self.clock
        excess = delay - target
        ready = may_drop and (
            self._pending_bytes >= self._frame_bytes
            or (self._last_seq is not None and (self._last_seq + 1) in self._pkts)
        )
        too_late = delay > self.max_delay + frame_time
        floor = self._lead_floor(target)
        spare = self._spare(slot, self._pending_samples(), floor)
        if ready and (too_late or (excess > frame_time + _EPS and spare >= self.frame_samples
                                   and self._quiet(data))):
            self.stats.removed_samples_for_acceleration += self.frame_samples
            return None
        if ready and excess > frame_time / 2 + _EPS and now is not None:
            sped = self._accelerate(frame, chunks, slot, now, excess, floor)
            if sped is not None:
                return sped
        if (excess < -frame_time - _EPS or spare < 0) and self._quiet(data):
            # give the frame back and play silence first
            for c in reversed(chunks):
                self._pending.appendleft(c)
            self._pending_bytes += self._frame_bytes
            self.stats.inserted_samples_for_deceleration += self.frame_samples
            return PlayoutFrame(
                bytes(self._frame_bytes), self.rate, self.channels, self.frame_samples,
                PlayoutKind.INSERTED, None, slot,
            )
        return frame

    def _accelerate(
        self, frame: PlayoutFrame, chunks: list[_Chunk], slot: float, now: float, excess: float,
        floor: float,
    ) -> PlayoutFrame | None:
        """Shorten periodic audio by whole pitch periods (NetEq's accelerate): this frame
        and the next are spliced at the lag (2.5 ms .. ``excess``, and no more than
        :meth:`_spare` allows) where the signal best matches itself
        (:func:`.timescale.accelerate`). None (nothing removed) when the audio is not
        periodic enough or the next frame is not decoded audio."""
        nxt = self._take_frame(slot, now)
        if any(c.kind is not PlayoutKind.NORMAL for c in nxt) or any(
            c.kind is not PlayoutKind.NORMAL for c in chunks
        ):
            self._give_back(nxt)
            return None
        ch, fs = self.channels, self.frame_samples
        spare = self._spare(slot, fs + self._pending_samples(), floor)
        x = np.frombuffer(frame.data + b"".join(c.pcm for c in nxt), dtype=np.int16)
        done = timescale.accelerate(x.reshape(-1, ch).astype(np.float64),
                                    max(1, self.rate // 400),
                                    min(fs, int(excess * self.rate), spare))
        if done is None:
            self._give_back(nxt)
            return None
        y, lag = done
        out = timescale.to_int16(y)
        head, rest = out[:fs].tobytes(), out[fs:].tobytes()
        if rest:
            ts = nxt[0].ts + lag * self._tick if nxt[0].ts is not None else None
            self._pending.appendleft(_Chunk(rest, PlayoutKind.NORMAL, ts))
            self._pending_bytes += len(rest)
        self.stats.removed_samples_for_acceleration += lag
        frame.data = head
        return frame

    def _lead_floor(self, target: float) -> float:
        """How early, at the least, the next packet may be needed: its slot minus its
        expected arrival. A packet that misses its slot is held for ``max_hold``, so the
        latest transit seen in the window (the target plus the tail above the
        percentile) still makes it."""
        return target + self._est.tail() - self.max_hold

    def _pending_samples(self) -> int:
        return self._pending_bytes // (2 * self.channels)

    def _spare(self, slot: float, remaining: int, floor: float) -> int:
        """Samples that may be taken out of the ``remaining`` decoded ones after the frame
        at ``slot`` while the next packet stays needed no earlier than ``floor`` after
        its expected arrival (negative: it is needed that much too early). Frames are
        pulled whole, so the next packet is needed at the slot of the frame its first
        sample falls in: taking out samples moves that slot only when the packet's start
        crosses into an earlier frame (the packets' phase on the frame grid)."""
        if self._est.empty:
            return remaining
        fs, frame_time = self.frame_samples, self.frame_ticks / self.clock
        # lead(r) = slot + (r // fs + 1) * frame_time - expected >= floor  <=>  r >= m * fs
        m = math.ceil((floor - slot + self._expected(self._ts_play)) / frame_time - _EPS) - 1
        return remaining - m * fs

    def _give_back(self, chunks: list[_Chunk]) -> None:
        for c in reversed(chunks):
            self._pending.appendleft(c)
            self._pending_bytes += len(c.pcm)

    def _quiet(self, data: bytes) -> bool:
        x = np.frombuffer(data, dtype=np.int16)
        return bool(x.size == 0 or int(np.abs(x.astype(np.int32)).max()) <= self.quiet_level)

    def _account(self, frame: PlayoutFrame, slot: float, target: float) -> None:
        s = self.stats
        s.total_samples_received += frame.samples_per_channel
        s.target_delay = target
        s.jitter = self._est.jitter

    # ------------------------------------------------------------------ production

    def _push(self, pcm: bytes, kind: PlayoutKind, ts: int | None) -> None:
        if not pcm:
            return
        if kind not in _CONCEALED:
            if kind is not PlayoutKind.SILENCE and self._ext.period:
                pcm, extra = self._ext.join(pcm)
                self.stats.inserted_samples_for_deceleration += extra
            self._ext.period = self._ext.settle = 0
        self._ext.remember(pcm)
        self._pending.append(_Chunk(pcm, kind, ts))
        self._pending_bytes += len(pcm)
        n = len(pcm) // (2 * self.channels)
        s = self.stats
        if kind in _CONCEALED:
            s.concealed_samples += n
            if not self._in_concealment:
                s.concealment_events += 1
            self._in_concealment = True
            self._conceal_run += n * self._tick
            return
        self._in_concealment = False
        if kind is PlayoutKind.SILENCE:
            s.silent_samples += n
            return
        self._conceal_run = 0
        if kind is PlayoutKind.FEC:
            s.fec_samples += n
        elif kind is PlayoutKind.RED:
            s.red_samples += n

    def _pending_time(self) -> float:
        return self._pending_bytes / (2 * self.channels) / self.rate

    def _plc(self, samples: int) -> bytes:
        size = samples * self.channels * 2
        try:
            pcm = self.decoder.conceal(samples)
            if len(pcm) != size:
                raise ValueError(f"concealment returned {len(pcm)} bytes, not {size}")
        except (ValueError, RuntimeError):
            logger.debug("concealment failed; silence instead", exc_info=True)
            self.stats.decode_errors += 1
            pcm = bytes(size)
        return pcm

    def _conceal(self, ticks: int, kind: PlayoutKind, ts: int | None) -> None:
        """Fill ``ticks``: libopus' PLC for the first ``extend_after`` of a concealment run
        (it fades out within ~30 ms), then, for periodic audio, the last pitch period
        repeated fading 1 dB per 10 ms (NetEq's expand). The decoder is not run for that
        part: the next packet decodes at full level, joined in phase."""
        ticks = max(self._tick, min(ticks, self.clock * 120 // 1000))  # libopus: <= 120 ms
        samples = ticks // self._tick
        quantum = self.rate // 400
        samples = max(quantum, samples - samples % quantum)
        keep = samples
        hold = 0
        if self.extend_after is not None:
            start = int(self.extend_after * self.clock)
            if kind is PlayoutKind.PLC and (self._ext.period or not self._plc_first):
                start = 0  # a wait turned into a loss (no second continuation), or SILK
            elif kind is PlayoutKind.EXPAND:
                # waiting for a late packet leaves the decoder alone where the audio is
                # periodic: libopus' PLC would move its state (CELT's band energies decay)
                # and the packet, when it came, would fade in over hundreds of ms; the
                # extension holds its level for as long as that PLC would have run
                hold = max(0, start - self._conceal_run) // self._tick
                start = 0
            keep = max(0, min(samples, (start - self._conceal_run) // self._tick))
            keep -= keep % quantum
        pcm = self._plc(keep) if keep else b""
        if keep < samples:
            if not self._ext.period:
                self._ext.remember(pcm)
                self._ext.start(hold)
            elif pcm:
                self._ext.remember(pcm)
            if self._ext.period:
                pcm += self._ext.samples(samples - keep)
                if kind is PlayoutKind.PLC:
                    self._decoder_skips()
            else:
                pcm += self._plc(samples - keep)
        self._push(pcm, kind, ts)
        if ts is not None:
            self._ts_play += samples * self._tick
        elif kind is PlayoutKind.EXPAND:
            self._expanded += samples * self._tick

    def _decoder_skips(self) -> None:
        """The running extension stands for audio the decoder never decodes: the next
        decoded audio's first ``_SETTLE_MS`` are joined over (the decoder settles)."""
        self._ext.settle = self.rate * _SETTLE_MS // 1000

    def _silence(self, ticks: int) -> None:
        samples = max(1, min(ticks, self.frame_ticks) // self._tick)
        self._push(bytes(samples * self.channels * 2), PlayoutKind.SILENCE, self._ts_play)
        self._ts_play += samples * self._tick

    def _decode(self, p: _Packet, slot: float) -> None:
        kind = PlayoutKind.RED if p.redundant else PlayoutKind.NORMAL
        wait = slot + self._pending_time() - p.arrival
        del self._pkts[p.seq]
        self._last_seq = p.seq
        self._ts_play = p.ts
        try:
            pcm = self.decoder.decode(p.payload)
        except (ValueError, RuntimeError):
            logger.debug("undecodable packet %d: concealed", p.seq, exc_info=True)
            self.stats.decode_errors += 1
            self.stats.packets_lost += 1
            self._conceal(self._last_ticks, PlayoutKind.PLC, p.ts)
            return
        n = len(pcm) // (2 * self.channels)
        if p.redundant:
            self.stats.red_packets_recovered += 1
            self.stats.packets_lost += 1
            self._loss_times.append(slot)
        self._last_dtx = self.decoder.is_dtx(p.payload)
        self._plc_first = self._plc_first_of is None or bool(self._plc_first_of(p.payload))
        self._expanded = 0
        self._last_ticks = max(self._tick, n * self._tick)
        s = self.stats
        s.jitter_buffer_delay += max(0.0, wait) * n
        s.jitter_buffer_target_delay += self.target_delay() * n
        s.jitter_buffer_emitted_count += n
        self._push(pcm, kind, p.ts)
        self._ts_play = p.ts + n * self._tick

    def _produce(self, slot: float, now: float) -> None:
        """Append to the pending output, or take one step toward it (a state change)."""
        assert self._last_seq is not None
        n = self._last_seq + 1
        p = self._pkts.get(n)
        emit_at = slot + self._pending_time()
        delay = emit_at - self._expected(self._ts_play) if not self._est.empty else 0.0
        target = self.target_delay(now)
        if p is not None:
            if self._loss is not None:
                self._fill_loss(p)
                return
            gap = p.ts - self._ts_play
            if gap > self._max_gap:
                self._ts_play = p.ts  # the sender's clock jumped: start over from it
            elif gap > 0 and emit_at < self._expected(p.ts) + target - _EPS:
                # no sequence gap but a timestamp jump (DTX): silence until the packet is due
                self._silence(gap)
                return
            self._decode(p, slot)
            return
        later_seq = min((s for s in self._pkts if s > n), default=None)
        if later_seq is None:
            if self._last_dtx or self._conceal_run >= self.max_concealment_ticks:
                self._silence(self.frame_ticks)  # DTX, or a stream that stopped
            elif delay < self.max_delay - _EPS:
                self._expand()  # wait, the timeline held
            else:
                self._conceal(self.frame_ticks, PlayoutKind.PLC, self._ts_play)
            return
        if delay < target - _EPS:  # the missing packet may still come: wait for it
            self._expand()
            return
        self._declare_lost(n, self._pkts[later_seq], now)

    def _expand(self) -> None:
        """Conceal the rest of the frame while waiting for a packet (timeline held)."""
        missing = self._frame_bytes - self._pending_bytes
        self._conceal(missing // (2 * self.channels) * self._tick, PlayoutKind.EXPAND, None)
        if self._last_seq is not None and self._last_seq + 1 > (self._max_seq or 0):
            if self.target_delay() < self._last_ticks / self.clock:  # jitter: just late
                self._awaited = self._last_seq + 1

    def _waiting(self) -> bool:
        """True when the next frame needs a packet that has not arrived (and is not DTX)."""
        if self._pending_bytes >= self._frame_bytes or self._last_seq is None:
            return False
        if self._last_dtx or self._conceal_run >= self.max_concealment_ticks:
            return False
        return (self._last_seq + 1) not in self._pkts

    def _declare_lost(self, n: int, later: _Packet, now: float) -> None:
        """Packets ``n .. later.seq - 1`` are lost: plan how to fill up to ``later.ts``."""
        missing = later.seq - n
        self.stats.packets_lost += missing
        self._loss_times.append(now)
        self._last_seq = later.seq - 1
        region = later.ts - self._ts_play
        if region <= 0:
            return  # the timeline already covers it (silence or concealment ran past)
        try:
            has_fec = self.decoder.has_fec(later.payload)
            fec_ticks = self.decoder.packet_samples(later.payload) * self._tick if has_fec else 0
        except (ValueError, RuntimeError):  # a malformed packet: it fails to decode later
            fec_ticks = 0
        # what was concealed while waiting stands for the lost audio, so that a loss does
        # not add delay (FEC only for what is left: NetEq uses it when it is in hand)
        skip = min(self._expanded, region)
        if skip > 0 and self._ext.period:
            self._decoder_skips()
        self._expanded -= skip
        self._ts_play += skip
        region -= skip
        if not 0 < fec_ticks <= region:
            fec_ticks = 0
        # concealment covers what the missing packets can hold (at most max_concealment);
        # the rest of the region, if any, is a DTX gap before them: silence
        conceal = min(region, max(fec_ticks, missing * self._last_ticks, self.frame_ticks))
        conceal = min(conceal, max(fec_ticks, self.max_concealment_ticks))
        self._loss = (later.ts - conceal, later.ts, fec_ticks)

    def _fill_loss(self, later: _Packet) -> None:
        """One step of filling a declared loss before ``later`` (see :meth:`_declare_lost`)."""
        assert self._loss is not None
        start, end, fec_ticks = self._loss
        if later.ts != end or self._ts_play >= end:
            self._loss = None  # already covered (or the packet changed): decode it next
            return
        if self._ts_play < start:
            gap = start - self._ts_play
            if gap > self._max_gap:
                self._ts_play = start
            else:
                self._silence(gap)
            return
        head = end - fec_ticks - self._ts_play
        if head > 0:
            self._conceal(min(head, self.frame_ticks), PlayoutKind.PLC, self._ts_play)
            return
        self._loss = None
        if not fec_ticks or head < 0:
            return
        try:
            pcm = self.decoder.decode_fec(later.payload, fec_ticks // self._tick)
        except (ValueError, RuntimeError):
            logger.debug("FEC decode failed; concealed", exc_info=True)
            self.stats.decode_errors += 1
            self._conceal(fec_ticks, PlayoutKind.PLC, self._ts_play)
            return
        self.stats.fec_packets_recovered += 1
        self._push(pcm, PlayoutKind.FEC, self._ts_play)
        self._ts_play += len(pcm) // (2 * self.channels) * self._tick
