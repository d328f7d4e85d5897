"""Sans-I/O RTP header parsing and writing, shared by the client and the server.

Plain arithmetic on integers and bytes: :func:`parse_rtp_header` reads a packet's
header without copying its payload, :class:`RtpHeaderWriter` serialises an outgoing
header with the negotiated extension ids in front of an untouched payload, and the
send-time helpers turn a Unix time into abs-send-time and NTP values.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

__all__ = [
    "Buffer",
    "RtpHeaderWriter",
    "abs_send_time",
    "ntp_time",
    "parse_rtp_header",
    "rtx_wrap",
    "seq_newer",
]

_NTP_EPOCH_OFFSET = 2208988800  # seconds between 1900-01-01 and 1970-01-01

_pack_header = struct.Struct("!BBHII").pack_into
_pack_header_bytes = struct.Struct("!BBHII").pack
_unpack_header = struct.Struct("!BBHII").unpack_from

Buffer = bytes | bytearray | memoryview


def parse_rtp_header(
    data: Buffer, audio_level_id: int | None = None, length: int | None = None
) -> tuple[int, int, int, int, int, int, int, tuple[bool, int] | None]:
    """Parse a plaintext RTP packet's header without copying its payload.

    ``data`` is any indexable buffer (bytes, bytearray, memoryview) whose first
    ``length`` bytes (all by default) are the packet. Returns ``(marker, payload_type,
    seq, timestamp, ssrc, payload_start, payload_end, audio_level)``: the payload is
    ``data[payload_start:payload_end]`` (CSRCs, the header extension block and padding
    excluded) and ``audio_level`` is the ``(voice, level)`` of the ``ssrc-audio-level``
    element with id ``audio_level_id`` (one-byte or two-byte extension form), ``None``
    if absent. Raises ``ValueError`` for a truncated or non-version-2 packet.
    """
    n = len(data) if length is None else length
    if n < 12:
        raise ValueError(f"RTP packet too short ({n} bytes)")
    first, second, seq, ts, ssrc = _unpack_header(data, 0)
    if first >> 6 != 2:
        raise ValueError("RTP packet is not version 2")
    pos = 12 + 4 * (first & 0x0F)
    end = n
    level: tuple[bool, int] | None = None
    if first & 0x10:
        if pos + 4 > n:
            raise ValueError("RTP header extension truncated")
        profile = (data[pos] << 8) | data[pos + 1]
        ext_end = pos + 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
        if ext_end > n:
            raise ValueError("RTP header extension truncated")
        if audio_level_id is not None:
            i = pos + 4
            if profile == 0xBEDE:
                while i < ext_end:
                    b = data[i]
                    if b == 0:  # padding
                        i += 1
                        continue
                    ext_id = b >> 4
                    if ext_id == 15:
                        break
                    if ext_id == audio_level_id and i + 1 < ext_end:
                        v = data[i + 1]
                        level = (bool(v & 0x80), v & 0x7F)
                        break
                    i += 2 + (b & 0x0F)
            elif profile & 0xFFF0 == 0x1000:
                while i + 1 < ext_end:
                    ext_id = data[i]
                    if ext_id == 0:
                        i += 1
                        continue
                    length = data[i + 1]
                    if ext_id == audio_level_id and length >= 1 and i + 2 < ext_end:
                        v = data[i + 2]
                        level = (bool(v & 0x80), v & 0x7F)
                        break
                    i += 2 + length
        pos = ext_end
    if first & 0x20:
        pad = data[n - 1] if n > pos else 0
        if pad == 0 or pos + pad > n:
            raise ValueError("RTP padding length invalid")
        end = n - pad
    if pos > end:
        raise ValueError("RTP header longer than the packet")
    return second >> 7, second & 0x7F, seq, ts, ssrc, pos, end, level


def seq_newer(a: int, b: int) -> bool:
    """``True`` when 16-bit sequence number ``a`` is after ``b`` (RFC 3550 arithmetic)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


def abs_send_time(now: float) -> int:
    """24-bit abs-send-time (6.18 fixed point seconds) for a Unix time."""
    return int(now * 262144.0) & 0xFFFFFF


def ntp_time(now: float) -> int:
    """64-bit NTP timestamp for a Unix time."""
    return int((now + _NTP_EPOCH_OFFSET) * 4294967296.0)


@functools.lru_cache(maxsize=64)
def _shared_struct(fmt: str) -> struct.Struct:
    """One :class:`struct.Struct` per header layout, shared by every writer using it
    (fewer distinct objects touched per forwarded packet)."""
    return struct.Struct(fmt)


class RtpHeaderWriter:
    """Serialises outgoing RTP packets for one subscriber stream.

    Only the extensions the subscriber negotiated are written (one-byte header form,
    RFC 8285): ``mid`` (constant), ``abs-send-time`` (per packet) and the publisher's
    ``ssrc-audio-level`` value; a simulcast publisher's layer adds its ``rid`` (constant).
    """

    __slots__ = ("_al_byte", "_al_id", "_ast_id", "_into", "_mid_elem", "_simple",
                 "payload_type", "ssrc")

    def __init__(
        self,
        ssrc: int,
        payload_type: int,
        *,
        mid: str | None = None,
        mid_id: int | None = None,
        abs_send_time_id: int | None = None,
        audio_level_id: int | None = None,
        rid: str | None = None,
        rid_id: int | None = None,
    ) -> None:
        for name, ext_id in (
            ("mid", mid_id),
            ("rid", rid_id),
            ("abs-send-time", abs_send_time_id),
            ("audio-level", audio_level_id),
        ):
            if ext_id is not None and not 1 <= ext_id <= 14:
                raise ValueError(f"{name} extension id {ext_id} out of range 1..14")
        self.ssrc = ssrc & 0xFFFFFFFF
        self.payload_type = payload_type & 0x7F
        self._mid_elem = b""
        if mid is not None and mid_id is not None:
            mid_bytes = mid.encode("utf8")
            if not 1 <= len(mid_bytes) <= 16:
                raise ValueError("mid must be 1..16 bytes")
            self._mid_elem = bytes([(mid_id << 4) | (len(mid_bytes) - 1)]) + mid_bytes
        if rid is not None and rid_id is not None:
            # a simulcast layer's rid: constant like the mid, written right after it
            rid_bytes = rid.encode("utf8")
            if not 1 <= len(rid_bytes) <= 16:
                raise ValueError("rid must be 1..16 bytes")
            self._mid_elem += bytes([(rid_id << 4) | (len(rid_bytes) - 1)]) + rid_bytes
        self._ast_id = abs_send_time_id
        self._al_id = audio_level_id
        # precomputed pieces for build_simple(): index = whether audio level is present
        self._simple: list[tuple[int, bytes, bytes, bool]] = []
        for with_al in (False, True):
            size = len(self._mid_elem)
            if abs_send_time_id is not None:
                size += 4
            if with_al and audio_level_id is not None:
                size += 2
            pad = (-size) % 4
            words = (size + pad) >> 2
            head = self._mid_elem
            if abs_send_time_id is not None:
                head += bytes(((abs_send_time_id << 4) | 2,))
            first = 0x90 if size else 0x80
            prefix = (b"\xbe\xde" + words.to_bytes(2, "big") + head) if size else b""
            self._simple.append((first, prefix, bytes(pad), abs_send_time_id is not None))
        self._al_byte = (audio_level_id << 4) if audio_level_id is not None else None
        # write_into(): one struct per variant writes the fixed header and the whole
        # extension block (mid, abs-send-time, audio level, padding) in one call
        self._into: list[tuple[struct.Struct, bytes, int | None, int]] = []
        for with_al in (False, True):
            elems = len(self._mid_elem)
            fmt = "!BBHII"
            if abs_send_time_id is not None:
                elems += 4
            has_al = with_al and audio_level_id is not None
            if has_al:
                elems += 2
            pad = (-elems) % 4
            head = b""
            if elems:
                head = b"\xbe\xde" + ((elems + pad) >> 2).to_bytes(2, "big") + self._mid_elem
                fmt += f"{len(head)}s"
            ast_word = None
            if abs_send_time_id is not None:
                ast_word = ((abs_send_time_id << 4) | 2) << 24
                fmt += "I"
            if has_al:
                fmt += "H"
            fmt += "x" * pad
            st = _shared_struct(fmt)
            self._into.append((st, head, ast_word, st.size))

    def fan_layout(self, with_level: bool) -> tuple[int, Any, bytes, int, int, int, int, int]:
        """How :meth:`write_into` writes a simple packet, for callers that inline it:
        ``(kind, pack_into, head, ast_word, al_word, size, payload_type, ssrc)``.

        ``with_level`` says whether the packets carry an audio level. ``kind`` gives the
        arguments ``pack_into(buf, 0, first, second, seq, ts, ssrc, ...)`` takes after
        ``ssrc``: 0 nothing (``first`` 0x80, no extension block), 1 ``head``, 2 ``head,
        ast_word | send_time``, 3 ``head, al_word | level_bits``, 4 ``head, ast_word |
        send_time, al_word | level_bits`` (``first`` 0x90 for 1-4); ``size`` is where
        the payload starts.
        """
        use_level = with_level and self._al_byte is not None
        st, head, ast_word, size = self._into[1 if use_level else 0]
        al_word = (self._al_byte << 8) if use_level and self._al_byte is not None else 0
        if not head:
            kind = 0
        elif ast_word is None:
            kind = 3 if use_level else 1
        else:
            kind = 4 if use_level else 2
        return (kind, st.pack_into, head, ast_word or 0, al_word, size, self.payload_type,
                self.ssrc)

    def build_simple(
        self,
        marker: int,
        seq: int,
        ts: int,
        payload: bytes,
        audio_level: tuple[bool, int] | None,
        send_time: int,
    ) -> bytes:
        """Fast :meth:`build` for the common case: no CSRC, no padding."""
        al_byte = self._al_byte
        if audio_level is not None and al_byte is not None:
            first, prefix, pad, ast = self._simple[1]
            vad, level = audio_level
            tail = bytes((al_byte, (0x80 if vad else 0) | (level & 0x7F))) + pad
        else:
            first, prefix, pad, ast = self._simple[0]
            tail = pad
        header = _pack_header_bytes(first, (marker << 7) | self.payload_type, seq, ts, self.ssrc)
        if ast:
            return header + prefix + send_time.to_bytes(3, "big") + tail + payload
        return header + prefix + tail + payload

    def write_into(
        self,
        buf: Any,
        marker: int,
        seq: int,
        ts: int,
        payload: bytes,
        audio_level: tuple[bool, int] | None,
        send_time: int,
    ) -> int:
        """Write the same packet as :meth:`build_simple` at the start of ``buf`` (any
        writable buffer) and return its length; no intermediate objects."""
        al_byte = self._al_byte
        second = (marker << 7) | self.payload_type
        if audio_level is not None and al_byte is not None:
            st, head, ast_word, size = self._into[1]
            vad, level = audio_level
            al = (al_byte << 8) | (0x80 if vad else 0) | (level & 0x7F)
            first = 0x90
            if ast_word is not None:
                st.pack_into(buf, 0, first, second, seq, ts, self.ssrc, head,
                             ast_word | send_time, al)
            else:
                st.pack_into(buf, 0, first, second, seq, ts, self.ssrc, head, al)
        else:
            st, head, ast_word, size = self._into[0]
            if ast_word is not None:
                st.pack_into(buf, 0, 0x90, second, seq, ts, self.ssrc, head,
                             ast_word | send_time)
            elif head:
                st.pack_into(buf, 0, 0x90, second, seq, ts, self.ssrc, head)
            else:
                st.pack_into(buf, 0, 0x80, second, seq, ts, self.ssrc)
        end = size + len(payload)
        buf[size:end] = payload
        return end

    def build(
        self,
        marker: int,
        seq: int,
        ts: int,
        payload: bytes,
        *,
        csrc: list[int] | None = None,
        audio_level: tuple[bool, int] | None = None,
        send_time: int | None = None,
        padding_size: int = 0,
    ) -> tuple[bytes, int]:
        """Return ``(packet, header_length)``."""
        ext = self._mid_elem
        if self._ast_id is not None and send_time is not None:
            ext += bytes(
                (
                    (self._ast_id << 4) | 2,
                    (send_time >> 16) & 0xFF,
                    (send_time >> 8) & 0xFF,
                    send_time & 0xFF,
                )
            )
        if self._al_id is not None and audio_level is not None:
            vad, level = audio_level
            ext += bytes(((self._al_id << 4), (0x80 if vad else 0) | (level & 0x7F)))
        cc = len(csrc) if csrc else 0
        first = 0x80 | cc
        if padding_size:
            first |= 0x20
        if ext:
            first |= 0x10
        header = bytearray(12)
        _pack_header(header, 0, first, ((marker & 1) << 7) | self.payload_type, seq, ts, self.ssrc)
        if cc:
            header += struct.pack(f"!{cc}I", *csrc)  # type: ignore[misc]
        if ext:
            pad = (-len(ext)) % 4
            words = (len(ext) + pad) >> 2
            header += b"\xbe\xde" + bytes(((words >> 8) & 0xFF, words & 0xFF)) + ext
            if pad:
                header += bytes(pad)
        header_len = len(header)
        if padding_size:
            if not 1 <= padding_size <= 255:
                raise ValueError("padding size must be 1..255")
            return bytes(header) + payload + bytes(padding_size - 1) + bytes(
                (padding_size,)
            ), header_len
        return bytes(header) + payload, header_len


def rtx_wrap(
    packet: bytes, header_length: int, rtx_payload_type: int, rtx_sequence: int, rtx_ssrc: int
) -> bytes:
    """RFC 4588 retransmission packet from a serialised original (padding dropped)."""
    if len(packet) < header_length or header_length < 12:
        raise ValueError("packet shorter than its header")
    first = packet[0]
    original_seq = packet[2:4]
    payload_end = len(packet)
    if first & 0x20:
        payload_end -= packet[-1]
    out = bytearray(packet[:header_length])
    out[0] = first & ~0x20
    out[1] = (packet[1] & 0x80) | (rtx_payload_type & 0x7F)
    struct.pack_into("!H", out, 2, rtx_sequence & 0xFFFF)
    struct.pack_into("!I", out, 8, rtx_ssrc & 0xFFFFFFFF)
    return bytes(out) + original_seq + packet[header_length:payload_end]
