"""The SFU's RED -> Opus step for a subscriber that did not negotiate RED."""

from __future__ import annotations

from aiolivekit.server.downtrack import _red_primary
from aiolivekit.server.receiver import InPacket
from aiolivekit.webrtc.red import RedBlock, build_red


def _packet(payload: bytes) -> InPacket:
    return InPacket(1, 63, 4242, 96000, 0x1234, payload, (True, 30), [7])


def test_primary_block_keeps_the_packets_header_fields() -> None:
    red = build_red(111, b"primary-opus", [RedBlock(111, 960, b"previous")])
    out = _red_primary(_packet(red))
    assert out is not None
    assert (out.payload, out.payload_type) == (b"primary-opus", 111)
    assert (out.marker, out.sequence_number, out.timestamp, out.ssrc) == (1, 4242, 96000, 0x1234)
    assert out.audio_level == (True, 30) and out.csrc == [7]


def test_malformed_or_empty_red_is_dropped() -> None:
    assert _red_primary(_packet(b"\x80")) is None  # a redundant header cut short
    assert _red_primary(_packet(build_red(111, b""))) is None  # no primary data
