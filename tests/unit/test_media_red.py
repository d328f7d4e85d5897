import pytest

from aiolivekit.media.red import RedBlock, RedEncoder, build_red, parse_red


def test_round_trip_two_redundant_blocks() -> None:
    blocks = (RedBlock(111, 1920, b"older"), RedBlock(111, 960, b"\x01" * 1023))
    wire = build_red(111, b"primary!", blocks)
    # headers: 2 x 4 bytes + 1, then the blocks in order, primary last
    assert len(wire) == 9 + 5 + 1023 + 8
    assert wire[0] & 0x80 and wire[4] & 0x80 and wire[8] == 111
    assert wire[9:14] == b"older" and wire.endswith(b"primary!")
    red = parse_red(wire)
    assert red.primary_payload_type == 111
    assert red.primary == b"primary!"
    assert red.redundant == blocks


def test_header_bits_match_rfc2198_example() -> None:
    # F=1, PT=0 (PCMU), offset 4 ticks... one block of 3 bytes, primary PT 0
    wire = build_red(0, b"PP", [RedBlock(0, 4, b"abc")])
    word = int.from_bytes(wire[:4], "big")
    assert word >> 31 == 1 and (word >> 24) & 0x7F == 0
    assert (word >> 10) & 0x3FFF == 4 and word & 0x3FF == 3
    assert wire[4:] == b"\x00abcPP"


def test_primary_only_and_empty_primary() -> None:
    assert parse_red(build_red(96, b"x")).redundant == ()
    red = parse_red(bytes([0x80 | 96, 0, 4, 2, 96]) + b"zz")
    assert red.primary == b"" and red.redundant[0].data == b"zz"
    assert red.redundant[0].timestamp_offset == 1


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x80",  # a redundant header cut short
        b"\xef\x00\x3c",
        bytes([0xEF, 0x00, 0x3C, 0x05]),  # headers never end (no primary header)
        bytes([0xEF, 0x00, 0x3C, 0x05, 111]) + b"abcd",  # block of 5 bytes, 4 present
        bytes([0xEF, 0x00, 0x3F, 0xFF, 111]),  # 1023-byte block, nothing present
    ],
)
def test_malformed_payloads_raise(wire: bytes) -> None:
    with pytest.raises(ValueError):
        parse_red(wire)


def test_too_many_blocks_raise() -> None:
    wire = bytes([0xEF, 0, 4, 0]) * 40 + bytes([111])
    with pytest.raises(ValueError, match="more than 32"):
        parse_red(wire)
    assert len(parse_red(wire, max_blocks=40).redundant) == 40


def test_build_rejects_fields_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        build_red(128, b"x")
    with pytest.raises(ValueError):
        build_red(111, b"x", [RedBlock(111, 16384, b"a")])
    with pytest.raises(ValueError):
        build_red(111, b"x", [RedBlock(111, 1, b"a" * 1024)])


def test_encoder_carries_previous_payload_distance_one() -> None:
    enc = RedEncoder(111)
    first = parse_red(enc.encode(b"p0", 1000))
    assert first.primary == b"p0" and first.redundant == ()
    second = parse_red(enc.encode(b"p1", 1960))
    assert second.primary == b"p1"
    assert second.redundant == (RedBlock(111, 960, b"p0"),)
    # timestamp wrap-around
    enc2 = RedEncoder(111)
    enc2.encode(b"a", 0xFFFFFF00)
    assert parse_red(enc2.encode(b"b", 0x000002C0)).redundant[0].timestamp_offset == 0x3C0
    # a DTX gap longer than 14 bits of offset: no redundancy
    assert parse_red(enc.encode(b"p2", 1960 + 20000)).redundant == ()
    assert (enc.with_redundancy, enc.without_redundancy) == (1, 2)
