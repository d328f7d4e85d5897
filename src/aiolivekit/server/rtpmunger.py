"""Sans-I/O RTP rewriting for the SFU forwarder.

Everything here is plain arithmetic on integers and bytes; the current time is passed
in. One :class:`RtpMunger` exists per (published track, subscriber) pair and maps the
publisher's SSRC / sequence number / timestamp space onto the subscriber's, keeping
gaps (so the subscriber can NACK real losses) and continuing seamlessly when the
source changes (new publisher SSRC, resume after pause). Key-frame detection and the
upstream PLI limiter live here too; header parsing and writing are in
:mod:`aiolivekit.webrtc.rtp`.
"""

from __future__ import annotations

import logging

__all__ = [
    "KeyframeRequestLimiter",
    "RtpMunger",
    "h264_fmtp_score",
    "is_keyframe_start",
]

logger = logging.getLogger(__name__)

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


class RtpMunger:
    """Maps one incoming RTP stream onto one outgoing stream.

    ``rewrite()`` returns ``(seq, ts)`` for the outgoing packet or ``None`` when the
    packet must be dropped (paused, too old after a switch, waiting for a keyframe).

    * Within one source the offsets are constant, so gaps and reordering are kept.
    * One source SSRC at a time: a packet with another SSRC is dropped unless the
      current source has been silent for ``source_timeout`` seconds, then it becomes
      the source.
    * On a new source SSRC, or the first packet after ``set_paused(False)``, new
      offsets are chosen so the outgoing sequence continues at ``last + 1`` and the
      timestamp advances by the wall-clock time elapsed since the last sent packet.
    * ``wait_for_keyframe`` (video): after a (re)start only a packet that starts a
      keyframe opens the gate, unless ``keyframe_timeout`` seconds pass.
    """

    # slots: an SFU keeps one munger per subscription and touches it per packet
    __slots__ = (
        "_ext_highest",
        "_gate_open",
        "_gate_since",
        "_highest_in_seq",
        "_last_out_seq",
        "_last_out_time",
        "_last_out_ts",
        "_resync",
        "_seq_offset",
        "_source_seen",
        "_source_ssrc",
        "_started",
        "_ts_offset",
        "clock_rate",
        "dropped",
        "keyframe_timeout",
        "paused",
        "source_timeout",
        "wait_for_keyframe",
    )

    def __init__(
        self,
        clock_rate: int,
        *,
        initial_sequence: int = 0,
        initial_timestamp: int = 0,
        wait_for_keyframe: bool = False,
        keyframe_timeout: float = 2.0,
        source_timeout: float = 0.5,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.clock_rate = clock_rate
        self.wait_for_keyframe = wait_for_keyframe
        self.keyframe_timeout = keyframe_timeout
        self.source_timeout = source_timeout
        self.paused = False
        self._started = False
        self._resync = True
        self._source_ssrc: int | None = None
        self._source_seen = 0.0
        self._seq_offset = 0
        self._ts_offset = 0
        self._highest_in_seq = 0
        self._ext_highest = 0
        self._last_out_seq = (initial_sequence - 1) & 0xFFFF
        self._last_out_ts = initial_timestamp & 0xFFFFFFFF
        self._last_out_time: float | None = None
        self._gate_open = not wait_for_keyframe
        self._gate_since: float | None = None
        self.dropped = 0

    @property
    def gate_open(self) -> bool:
        """``False`` while waiting for a keyframe."""
        return self._gate_open

    @property
    def last_sequence(self) -> int:
        return self._last_out_seq

    @property
    def last_timestamp(self) -> int:
        return self._last_out_ts

    def set_paused(self, paused: bool) -> None:
        """Pause drops everything; resuming re-syncs (and re-waits for a keyframe)."""
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            self._resync = True
            if self.wait_for_keyframe:
                self._gate_open = False
                self._gate_since = None

    def switch_to(self, ssrc: int, now: float) -> None:
        """Take ``ssrc`` as the source from its next packet on (a simulcast layer switch,
        made at that layer's key frame): the output continues at ``last + 1``, and
        packets of the previous source are dropped from now on."""
        if ssrc == self._source_ssrc:
            return
        self._source_ssrc = ssrc
        self._source_seen = now
        self._resync = True
        if self.wait_for_keyframe:
            self._gate_open = False
            self._gate_since = None

    def needs_keyframe(self) -> bool:
        """``True`` while the gate is closed (the owner should ask upstream)."""
        return not self.paused and not self._gate_open

    def keyframe_matters(self, ssrc: int) -> bool:
        """Whether :meth:`rewrite` looks at ``keyframe_start`` for a packet of ``ssrc``:
        while the gate is closed, or when ``ssrc`` would become a new source."""
        return not self._gate_open or ssrc != self._source_ssrc

    def steady_state(self, ssrc: int) -> tuple[int, int, int] | None:
        """``(seq_offset, ts_offset, highest_seq)`` while newer in-order packets of
        ``ssrc`` map by constant offsets (started, not paused, gate open, no pending
        re-sync); else ``None``. A caller may then map such packets itself, for many
        mungers at once, and report them with :meth:`catch_up`."""
        if (
            ssrc != self._source_ssrc
            or self.paused
            or self._resync
            or not self._gate_open
            or not self._started
        ):
            return None
        return self._seq_offset, self._ts_offset, self._highest_in_seq

    def catch_up(self, seq: int, ts: int, advanced: int, now: float) -> None:
        """Account for newer in-order packets mapped through :meth:`steady_state`'s
        offsets without :meth:`rewrite`: ``seq``/``ts`` are the newest input packet's,
        ``advanced`` how far the input sequence moved forward since the state was read.
        The munger ends as if :meth:`rewrite` had seen every one of them."""
        if advanced <= 0:
            return
        self._source_seen = now
        self._highest_in_seq = seq
        self._ext_highest += advanced
        self._last_out_seq = (seq + self._seq_offset) & 0xFFFF
        self._last_out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        self._last_out_time = now

    def rewrite(
        self, ssrc: int, seq: int, ts: int, now: float, keyframe_start: bool = False
    ) -> tuple[int, int] | None:
        """Map one incoming packet; ``keyframe_start`` only matters while gated."""
        if ssrc != self._source_ssrc:
            # another SSRC: take it over only once the current source went quiet, so
            # interleaved streams (e.g. unsupported simulcast layers) cannot thrash
            if self._source_ssrc is not None and now - self._source_seen < self.source_timeout:
                self.dropped += 1
                return None
            self._source_ssrc = ssrc
            self._resync = True
            if self.wait_for_keyframe:
                self._gate_open = False
                self._gate_since = None
        self._source_seen = now

        if self.paused:
            self.dropped += 1
            return None

        if not self._gate_open:
            if self._gate_since is None:
                self._gate_since = now
            if keyframe_start or now - self._gate_since >= self.keyframe_timeout:
                self._gate_open = True
                self._gate_since = None
            else:
                self.dropped += 1
                return None

        if self._resync:
            self._resync = False
            next_seq = (self._last_out_seq + 1) & 0xFFFF
            if self._started and self._last_out_time is not None:
                elapsed = max(now - self._last_out_time, 0.0)
                delta = max(int(elapsed * self.clock_rate), 1)
            else:
                delta = 0 if not self._started else 1
            next_ts = (self._last_out_ts + delta) & 0xFFFFFFFF
            self._seq_offset = (next_seq - seq) & 0xFFFF
            self._ts_offset = (next_ts - ts) & 0xFFFFFFFF
            self._highest_in_seq = seq
            self._ext_highest = 0  # extended numbers count from the switch point
            self._started = True
            self._last_out_seq = next_seq
            self._last_out_ts = next_ts
            self._last_out_time = now
            return next_seq, next_ts

        # same source: extended (wrap-free) input numbering, relative to the newest
        diff = ((seq - self._highest_in_seq + 0x8000) & 0xFFFF) - 0x8000
        ext = self._ext_highest + diff
        if ext < 0:
            # from before the switch point: would collide with sequence numbers
            # already used for the previous source
            self.dropped += 1
            return None
        out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        if diff > 0:
            self._highest_in_seq = seq
            self._ext_highest = ext
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_out_time = now
        return out_seq, out_ts


def _vp8_keyframe_start(payload: bytes) -> bool:
    # RFC 7741 payload descriptor, then the VP8 payload header (P bit 0 = key frame)
    n = len(payload)
    if n < 1:
        return False
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x0F != 0:  # S bit set and partition index 0
        return False
    pos = 1
    if b0 & 0x80:  # X
        if n < 2:
            return False
        x = payload[1]
        pos = 2
        if x & 0x80:  # I
            if n <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if x & 0x40:  # L
            pos += 1
        if x & 0x30:  # T or K
            pos += 1
    if n <= pos:
        return False
    return payload[pos] & 0x01 == 0


def _h264_keyframe_start(payload: bytes) -> bool:
    # RFC 6184: single NAL, STAP-A (24), FU-A (28); IDR=5, SPS=7
    n = len(payload)
    if n < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (5, 7):
        return True
    if nal_type == 24:
        pos = 1
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if pos >= n:
                break
            if payload[pos] & 0x1F in (5, 7):
                return True
            pos += size
        return False
    if nal_type == 28 and n >= 2:
        fu = payload[1]
        return bool(fu & 0x80) and (fu & 0x1F) in (5, 7)
    return False


def is_keyframe_start(mime_type: str, payload: bytes) -> bool:
    """Whether an RTP payload starts a key frame (VP8, H264); ``True`` for other codecs."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return _vp8_keyframe_start(payload)
    if mime == "video/h264":
        return _h264_keyframe_start(payload)
    return True


class KeyframeRequestLimiter:
    """Rate limit for PLIs sent upstream (many subscribers, one publisher)."""

    def __init__(self, min_interval: float = 0.5) -> None:
        self.min_interval = min_interval
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.min_interval:
            return False
        self._last = now
        return True


def _h264_params(parameters: dict[str, object]) -> tuple[str, str]:
    profile = str(parameters.get("profile-level-id", "42e01f")).lower()
    mode = str(parameters.get("packetization-mode", "0"))
    return profile[:4], mode


def h264_fmtp_score(publisher: dict[str, object], candidate: dict[str, object]) -> int:
    """How well a subscriber H264 codec matches the publisher's (higher is better).

    2 = same packetization-mode and profile (profile_idc + constraint flags),
    1 = same packetization-mode, 0 = otherwise.
    """
    p_profile, p_mode = _h264_params(publisher)
    c_profile, c_mode = _h264_params(candidate)
    if p_mode != c_mode:
        return 0
    return 2 if p_profile == c_profile else 1
