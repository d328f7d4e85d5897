"""RFC 2198 redundant audio (``audio/red``), sans-I/O.

A RED payload is a list of block headers followed by the blocks::

    redundant header (4 bytes): F=1 | block PT (7) | timestamp offset (14) | length (10)
    primary header   (1 byte):  F=0 | block PT (7)

then the redundant blocks in header order and the primary block (the rest of the payload).
A redundant block is an earlier encoding, ``timestamp offset`` RTP ticks before the
packet's timestamp. :func:`parse_red` checks every bound and raises ``ValueError`` on
malformed input; :class:`RedEncoder` sends as libwebrtc does for Opus: each packet carries
the previous payload as its one redundant block (distance 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RedBlock", "RedEncoder", "RedPayload", "build_red", "parse_red"]

logger = logging.getLogger(__name__)

MAX_TIMESTAMP_OFFSET = (1 << 14) - 1
MAX_BLOCK_LENGTH = (1 << 10) - 1


@dataclass(frozen=True)
class RedBlock:
    """One redundant block: ``timestamp_offset`` ticks before the packet's timestamp."""

    payload_type: int
    timestamp_offset: int
    data: bytes


@dataclass(frozen=True)
class RedPayload:
    primary_payload_type: int
    primary: bytes
    redundant: tuple[RedBlock, ...]  # oldest first, as on the wire


def parse_red(payload: bytes, *, max_blocks: int = 32) -> RedPayload:
    """Split a RED payload; ``ValueError`` when it is malformed."""
    n = len(payload)
    if n == 0:
        raise ValueError("empty RED payload")
    pos = 0
    headers: list[tuple[int, int, int]] = []
    while True:
        if pos >= n:
            raise ValueError("RED payload ends inside its block headers")
        first = payload[pos]
        if not first & 0x80:  # the primary's one-byte header
            primary_pt = first & 0x7F
            pos += 1
            break
        if pos + 4 > n:
            raise ValueError("RED payload ends inside a redundant block header")
        if len(headers) >= max_blocks:
            raise ValueError(f"RED payload has more than {max_blocks} redundant blocks")
        word = int.from_bytes(payload[pos : pos + 4], "big")
        headers.append(((word >> 24) & 0x7F, (word >> 10) & 0x3FFF, word & 0x3FF))
        pos += 4
    blocks = []
    for pt, offset, length in headers:
        if pos + length > n:
            raise ValueError(
                f"RED block of {length} bytes at offset {pos} overruns the {n}-byte payload"
            )
        blocks.append(RedBlock(pt, offset, bytes(payload[pos : pos + length])))
        pos += length
    return RedPayload(primary_pt, bytes(payload[pos:]), tuple(blocks))


def build_red(primary_payload_type: int, primary: bytes, redundant: Sequence[RedBlock] = ()) -> bytes:
    """Assemble a RED payload; ``ValueError`` when a field does not fit its bits."""
    _check_pt(primary_payload_type)
    head = bytearray()
    body = bytearray()
    for block in redundant:
        _check_pt(block.payload_type)
        if not 0 <= block.timestamp_offset <= MAX_TIMESTAMP_OFFSET:
            raise ValueError(f"RED timestamp offset {block.timestamp_offset} is not 0..16383")
        if len(block.data) > MAX_BLOCK_LENGTH:
            raise ValueError(f"RED block of {len(block.data)} bytes exceeds 1023")
        word = 0x80000000 | block.payload_type << 24 | block.timestamp_offset << 10 | len(block.data)
        head += word.to_bytes(4, "big")
        body += block.data
    head.append(primary_payload_type)
    return bytes(head + body + primary)


def _check_pt(pt: int) -> None:
    if not 0 <= pt <= 127:
        raise ValueError(f"payload type {pt} is not 0..127")


class RedEncoder:
    """Wraps consecutive payloads of one codec (``payload_type``: Opus' PT, which goes in
    the block headers; the RTP packet carries RED's own PT) in RED, each packet carrying
    the previous payload.

    The previous payload is left out (primary only) when it cannot be expressed: its
    timestamp is more than 16383 ticks back (a DTX gap), it is longer than 1023 bytes, or
    it is not earlier than the new one (a restarted clock).
    """

    def __init__(self, payload_type: int) -> None:
        _check_pt(payload_type)
        self.payload_type = payload_type
        self._previous: tuple[bytes, int] | None = None
        self.with_redundancy = 0
        self.without_redundancy = 0

    def encode(self, payload: bytes, timestamp: int) -> bytes:
        """The RED payload for an Opus ``payload`` sent with RTP ``timestamp``."""
        blocks: list[RedBlock] = []
        prev = self._previous
        if prev is not None:
            data, prev_ts = prev
            offset = (timestamp - prev_ts) & 0xFFFFFFFF
            if 0 < offset <= MAX_TIMESTAMP_OFFSET and len(data) <= MAX_BLOCK_LENGTH and data:
                blocks.append(RedBlock(self.payload_type, offset, data))
        if blocks:
            self.with_redundancy += 1
        else:
            self.without_redundancy += 1
        self._previous = (bytes(payload), timestamp & 0xFFFFFFFF)
        return build_red(self.payload_type, payload, blocks)

    def reset(self) -> None:
        self._previous = None
