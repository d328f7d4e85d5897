"""Sans-I/O Ogg Opus (RFC 7845 on RFC 3533 pages): packets with their pts in, file bytes
out. The identification header gives a pre-skip of 0 (a recording starts mid-stream, at a
packet boundary), the comment header names the track; each page's granule position is
the end of its last packet on the 48 kHz clock, so gaps the timeline filled keep their
place. A page is cut every ``PAGE_PACKETS`` packets (half a second at 20 ms), so a file
cut short (the process killed) loses at most that much; :meth:`OggOpusWriter.close`
writes the last page with the end-of-stream flag.
"""

from __future__ import annotations

import struct

__all__ = ["OggOpusWriter", "ogg_crc"]


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, no reflection, initial value 0)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


class OggOpusWriter:
    """One Opus stream in an Ogg file; every method returns the bytes to append."""

    PAGE_PACKETS = 25

    def __init__(self, serial: int, channels: int = 1,
                 tags: dict[str, str] | None = None, vendor: str = "aiolivekit") -> None:
        if channels not in (1, 2):
            raise ValueError("channel mapping family 0: 1 or 2 channels")
        self._serial = serial & 0xFFFFFFFF
        self._channels = channels
        self._tags = dict(tags or {})
        self._vendor = vendor
        self._sequence = 0
        self._packets: list[bytes] = []
        self._granule = 0  # end of the last packet added
        self._page_granule = 0
        self._closed = False

    def headers(self) -> bytes:
        """The identification and comment header pages (first in the file)."""
        head = (b"OpusHead" + bytes([1, self._channels]) + struct.pack("<HIhB", 0, 48000, 0, 0))
        vendor = self._vendor.encode()
        comments = [f"{k}={v}".encode() for k, v in self._tags.items()]
        tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor
        tags += struct.pack("<I", len(comments))
        for c in comments:
            tags += struct.pack("<I", len(c)) + c
        return self._page([head], 0, bos=True) + self._page([tags], 0)

    def packet(self, data: bytes, pts: int, samples: int) -> bytes:
        """Add one packet (``pts`` and ``samples`` on the 48 kHz clock)."""
        if self._closed:
            raise ValueError("the Ogg stream is closed")
        if not data:
            raise ValueError("an Opus packet has at least its TOC byte")
        self._packets.append(bytes(data))
        self._granule = max(self._granule, pts + samples)
        lacing = sum(len(p) // 255 + 1 for p in self._packets)
        if len(self._packets) >= self.PAGE_PACKETS or lacing > 200:
            return self._flush()
        return b""

    def _flush(self, eos: bool = False) -> bytes:
        packets, self._packets = self._packets, []
        return self._page(packets, self._granule, eos=eos)

    def close(self) -> bytes:
        """The last page (end of stream); b"" if closed already."""
        if self._closed:
            return b""
        self._closed = True
        return self._flush(eos=True)

    @property
    def granule(self) -> int:
        return self._granule

    def _page(self, packets: list[bytes], granule: int, *, bos: bool = False,
              eos: bool = False) -> bytes:
        lacing = bytearray()
        for p in packets:
            lacing += b"\xff" * (len(p) // 255) + bytes([len(p) % 255])
        if len(lacing) > 255:
            raise ValueError("too many segments for one Ogg page")
        flags = (0x02 if bos else 0) | (0x04 if eos else 0)
        header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, self._serial,
                             self._sequence, 0, len(lacing))
        page = bytearray(header + bytes(lacing) + b"".join(packets))
        struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
        self._sequence += 1
        return bytes(page)
