"""Sans-I/O transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

The receiver of a media stream that carries the transport-wide sequence number header
extension reports, for every sequence number, whether the packet arrived and when.
libwebrtc's send-side bandwidth estimation (GoogCC: delay-based with probing, plus loss)
runs on these reports; without them a libwebrtc publisher that negotiated transport-cc
never ramps up. :class:`TwccRecorder` takes arrivals (sequence number, time in seconds)
and :meth:`TwccRecorder.build` returns the RTCP transport-feedback packets (RTPFB,
FMT 15) covering everything recorded since the last call, ready to be SRTCP-protected.

Also here: :func:`transport_sequence_number`, reading the extension out of a plaintext
RTP packet (one-byte or two-byte header extension form) without parsing the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

__all__ = [
    "TWCC_URI",
    "TwccRecorder",
    "parse_feedback",
    "transport_sequence_number",
]

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

_RTPFB = 205
_FMT_TWCC = 15
_DELTA_US = 250  # receive deltas are in 250 µs ticks
_REF_US = 64_000  # the reference time is in 64 ms ticks
_MAX_STATUS = 0x1FFF  # a run-length chunk counts at most 8191 packets
_MAX_PER_PACKET = 2000  # packets described by one feedback packet (keeps it < 4 kB)
_KEEP_SPAN = 1 << 14  # sequence numbers this far behind the newest are forgotten

# packet status symbols
_NOT_RECEIVED, _SMALL, _LARGE = 0, 1, 2


def transport_sequence_number(data: bytes | bytearray | memoryview, ext_id: int) -> int | None:
    """The 16-bit transport-wide sequence number of a plaintext RTP packet, ``None`` if
    it has no element ``ext_id`` (or is malformed)."""
    n = len(data)
    if n < 12 or not data[0] & 0x10:
        return None
    pos = 12 + 4 * (data[0] & 0x0F)
    if pos + 4 > n:
        return None
    profile = (data[pos] << 8) | data[pos + 1]
    end = pos + 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
    if end > n:
        return None
    i = pos + 4
    if profile == 0xBEDE:
        while i < end:
            b = data[i]
            if b == 0:
                i += 1
                continue
            eid, length = b >> 4, (b & 0x0F) + 1
            if eid == 15:
                return None
            if eid == ext_id:
                return (data[i + 1] << 8) | data[i + 2] if length == 2 and i + 3 <= end else None
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while i + 1 < end:
            eid = data[i]
            if eid == 0:
                i += 1
                continue
            length = data[i + 1]
            if eid == ext_id:
                return (data[i + 2] << 8) | data[i + 3] if length == 2 and i + 4 <= end else None
            i += 2 + length
    return None


class TwccRecorder:
    """Arrival times of transport-wide sequence numbers -> RTCP transport-feedback.

    ``sender_ssrc`` is the feedback's sender SSRC; the media SSRC field carries the SSRC
    of the latest packet recorded (receivers ignore it). Packets arriving after their
    sequence number was already reported (as lost) are dropped, as in libwebrtc.
    """

    def __init__(self, sender_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc & 0xFFFFFFFF
        self.media_ssrc = 0
        self._arrivals: dict[int, int] = {}  # extended sequence number -> arrival (µs)
        self._highest: int | None = None  # highest extended sequence number seen
        self._next: int | None = None  # first extended sequence number not reported yet
        self._fb_count = 0
        self.feedback_sent = 0
        self.packets_recorded = 0

    def _unwrap(self, seq: int) -> int:
        if self._highest is None:
            return seq
        delta = (seq - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self._highest + delta

    def record(self, seq: int, arrival: float, media_ssrc: int = 0) -> None:
        """Packet ``seq`` (16 bits) arrived at ``arrival`` (seconds, any monotonic clock)."""
        ext = self._unwrap(seq & 0xFFFF)
        if self._next is not None and ext < self._next:
            return  # already reported
        if self._highest is None or ext > self._highest:
            self._highest = ext
        self._arrivals.setdefault(ext, int(arrival * 1_000_000))
        if media_ssrc:
            self.media_ssrc = media_ssrc
        self.packets_recorded += 1
        if len(self._arrivals) > _KEEP_SPAN:  # nobody asks for feedback: forget the oldest
            floor = self._highest - _KEEP_SPAN
            for k in [k for k in self._arrivals if k < floor]:
                del self._arrivals[k]
            self._next = floor if self._next is None else max(self._next, floor)

    def build(self) -> list[bytes]:
        """Feedback packets for every sequence number from the last reported one to the
        highest recorded (missing ones as not received); empty when nothing is new."""
        if not self._arrivals or self._highest is None:
            return []
        start = min(self._arrivals) if self._next is None else self._next
        end = self._highest
        # a sender whose numbers jump (or a long outage) is reported over the last
        # _KEEP_SPAN numbers only: the work per round stays bounded
        start = max(start, end - _KEEP_SPAN)
        out = []
        while start <= end:
            packet, start = self._one(start, end)
            if packet:
                out.append(packet)
        self._arrivals.clear()
        self._next = end + 1
        return out

    def _one(self, start: int, end: int) -> tuple[bytes, int]:
        """One feedback packet from ``start``: the packet and the next unreported number."""
        arrivals = self._arrivals
        # the reference time: the first received packet of this feedback
        seq = start
        while seq <= end and seq not in arrivals:
            seq += 1
        if seq > end:  # only losses left (cannot happen: ``end`` was received)
            return b"", end + 1
        ref = arrivals[seq] // _REF_US
        last = ref * _REF_US
        symbols: list[int] = []
        deltas: list[int] = []
        seq = start
        while seq <= end and len(symbols) < _MAX_PER_PACKET:
            t = arrivals.get(seq)
            if t is None:
                symbols.append(_NOT_RECEIVED)
            else:
                d = (t - last) // _DELTA_US
                if not -0x8000 <= d <= 0x7FFF:
                    break  # too far from the previous one: a new feedback packet
                symbols.append(_SMALL if 0 <= d <= 0xFF else _LARGE)
                deltas.append(d)
                last += d * _DELTA_US
            seq += 1
        return self._pack(start, symbols, deltas, ref), seq

    def _pack(self, base: int, symbols: list[int], deltas: list[int], ref: int) -> bytes:
        body = bytearray(struct.pack(
            "!IIHHI", self.sender_ssrc, self.media_ssrc, base & 0xFFFF, len(symbols),
            ((ref & 0xFFFFFF) << 8) | (self._fb_count & 0xFF)))
        self._fb_count += 1
        self.feedback_sent += 1
        for chunk in _chunks(symbols):
            body += struct.pack("!H", chunk)
        for d in deltas:
            body += struct.pack("!B", d) if 0 <= d <= 0xFF else struct.pack("!h", d)
        pad = -len(body) % 4
        if pad:
            body += bytes(pad - 1) + bytes((pad,))
        words = (len(body) + 4) // 4 - 1
        first = 0x80 | (0x20 if pad else 0) | _FMT_TWCC
        return struct.pack("!BBH", first, _RTPFB, words) + bytes(body)


def _chunks(symbols: list[int]) -> Iterator[int]:
    """Packet status chunks: run-length for runs of 7 or more, else 2-bit vectors of 7."""
    i, n = 0, len(symbols)
    while i < n:
        s = symbols[i]
        run = 1
        while i + run < n and symbols[i + run] == s and run < _MAX_STATUS:
            run += 1
        if run >= 7:
            yield (s << 13) | run
            i += run
            continue
        chunk = 0xC000  # status vector chunk, two-bit symbols
        for k in range(7):
            sym = symbols[i + k] if i + k < n else _NOT_RECEIVED
            chunk |= sym << (12 - 2 * k)
        yield chunk
        i += 7


def parse_feedback(packet: bytes) -> tuple[int, int, list[int | None]]:
    """``(base_seq, fb_count, arrival_us_or_None per sequence number)`` of one feedback
    packet built by :class:`TwccRecorder` (arrivals relative to the reference time's
    zero); for tests and tools. Raises ``ValueError`` on a malformed packet."""
    if len(packet) < 20 or packet[1] != _RTPFB or packet[0] & 0x1F != _FMT_TWCC:
        raise ValueError("not a transport-cc feedback packet")
    size = (struct.unpack_from("!H", packet, 2)[0] + 1) * 4
    if size > len(packet):
        raise ValueError("truncated feedback packet")
    if packet[0] & 0x20:
        size -= packet[size - 1]
    base, count, word = struct.unpack_from("!HHI", packet, 12)
    ref, fb_count = word >> 8, word & 0xFF
    if ref & 0x800000:
        ref -= 1 << 24
    pos = 20
    symbols: list[int] = []
    while len(symbols) < count:
        if pos + 2 > size:
            raise ValueError("truncated status chunks")
        (chunk,) = struct.unpack_from("!H", packet, pos)
        pos += 2
        if chunk & 0x8000 == 0:
            symbols += [(chunk >> 13) & 0x3] * (chunk & 0x1FFF)
        elif chunk & 0x4000:
            symbols += [(chunk >> (12 - 2 * k)) & 0x3 for k in range(7)]
        else:
            symbols += [(chunk >> (13 - k)) & 0x1 for k in range(14)]
    t = ref * _REF_US
    out: list[int | None] = []
    for s in symbols[:count]:
        if s == _NOT_RECEIVED:
            out.append(None)
            continue
        if s == _SMALL:
            d = packet[pos]
            pos += 1
        else:
            (d,) = struct.unpack_from("!h", packet, pos)
            pos += 2
        if pos > size:
            raise ValueError("truncated receive deltas")
        t += d * _DELTA_US
        out.append(t)
    return base, fb_count, out
