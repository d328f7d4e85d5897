"""Sans-I/O reading of the encoded frames a recording writes: Opus packet durations
(RFC 6716 3.1), VP8 key-frame dimensions (RFC 6386 9.1) and H.264 parameter sets
(ITU-T H.264 7.3.2.1.1, Annex B access units)."""

from __future__ import annotations

__all__ = [
    "H264_IDR",
    "H264_PPS",
    "H264_SPS",
    "h264_nal_units",
    "h264_sps_dimensions",
    "opus_channels",
    "opus_samples",
    "opus_silence",
    "vp8_dimensions",
]

H264_IDR = 5
H264_SPS = 7
H264_PPS = 8

# samples at 48 kHz of one frame, by TOC configuration (RFC 6716 table 2)
_SILK = (480, 960, 1920, 2880)
_HYBRID = (480, 960)
_CELT = (120, 240, 480, 960)


def _frame_samples(config: int) -> int:
    if config < 12:
        return _SILK[config % 4]
    if config < 16:
        return _HYBRID[config % 2]
    return _CELT[config % 4]


def opus_samples(packet: bytes) -> int:
    """Samples (48 kHz) an Opus packet decodes to; ``ValueError`` if malformed."""
    if not packet:
        raise ValueError("empty Opus packet")
    toc = packet[0]
    code = toc & 0x03
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        if len(packet) < 2:
            raise ValueError("Opus code 3 packet without its frame count")
        count = packet[1] & 0x3F
        if count == 0:
            raise ValueError("Opus code 3 packet with no frames")
    samples = count * _frame_samples(toc >> 3)
    if samples > 5760:
        raise ValueError(f"Opus packet of {samples} samples (over 120 ms)")
    return samples


def opus_channels(packet: bytes) -> int:
    """1 or 2: the stereo flag of the packet's TOC byte."""
    return 2 if packet and packet[0] & 0x04 else 1


def opus_silence(samples: int, channels: int = 1) -> bytes:
    """A TOC-only CELT packet of ``samples`` (120/240/480/960): a frame of zero bytes,
    which a decoder conceals (fades to silence): fills a gap in a recording."""
    config = {120: 28, 240: 29, 480: 30, 960: 31}[samples]
    return bytes([(config << 3) | (0x04 if channels == 2 else 0)])


def vp8_dimensions(frame: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a VP8 key frame; None for an inter frame or garbage."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


def h264_nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit (start codes removed)."""
    units: list[bytes] = []
    starts: list[tuple[int, int]] = []  # (start code position, payload position)
    i = access_unit.find(b"\x00\x00\x01")
    while i >= 0:
        begin = i - 1 if i > 0 and access_unit[i - 1] == 0 else i
        starts.append((begin, i + 3))
        i = access_unit.find(b"\x00\x00\x01", i + 3)
    for n, (_, payload) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(access_unit)
        if end > payload:
            units.append(access_unit[payload:end])
    return units


class _Bits:
    """MSB-first bit reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise ValueError("H.264 SPS ends early")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code in H.264 SPS")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def _skip_scaling_list(r: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + r.se() + 256) % 256
        last = nxt or last


def h264_sps_dimensions(sps: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels of an SPS NAL unit (with its header byte)."""
    if not sps or sps[0] & 0x1F != H264_SPS:
        raise ValueError("not an H.264 SPS")
    r = _Bits(sps[1:])
    profile = r.bits(8)
    r.bits(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in _HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            r.bit()  # separate_colour_plane_flag
        r.ue()  # bit depths
        r.ue()
        r.bit()  # qpprime_y_zero_transform_bypass_flag
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.bit():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()  # mb_adaptive_frame_field_flag
    r.bit()  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_units * 16 * (2 - frame_mbs_only)
    if r.bit():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_w = 1 if chroma == 3 or chroma == 0 else 2
        sub_h = 2 if chroma == 1 else 1
        crop_x = sub_w if chroma else 1
        crop_y = (sub_h if chroma else 1) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    if width <= 0 or height <= 0:
        raise ValueError("H.264 SPS with no picture")
    return width, height
