"""The sans-I/O parts of ``aiolivekit.record``: Opus/VP8/H.264 bitstream reading, RTP
timelines, the Ogg Opus writer (decoded back with PyAV), the mix, file names, the clock,
the command's token arguments; and PyAV's muxing of recorded VP8/H.264 frames."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from aiolivekit.record.bitstream import (
    h264_nal_units,
    h264_sps_dimensions,
    opus_channels,
    opus_samples,
    opus_silence,
    vp8_dimensions,
)
from aiolivekit.record.command import resolve_token
from aiolivekit.record.files import AvFile, OggOpusFile, RecordError
from aiolivekit.record.mixdown import Mixdown
from aiolivekit.record.naming import FileNamer, container_for, format_progress, safe_part
from aiolivekit.record.ogg import OggOpusWriter, ogg_crc
from aiolivekit.record.timeline import (
    AudioTimeline,
    RecordingClock,
    RtpUnwrapper,
    TimedFrame,
    VideoTimeline,
)

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

RATE = 48000


def opus_packets(seconds: float, freq: float = 440.0, channels: int = 1) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = RATE
    enc.layout = "mono" if channels == 1 else "stereo"
    enc.format = "s16"
    enc.time_base = Fraction(1, RATE)
    enc.open()
    t = np.arange(int(RATE * seconds)) / RATE
    pcm = (np.sin(2 * np.pi * freq * t) * 12000).astype(np.int16)
    out: list[bytes] = []
    for i in range(0, len(pcm) - 959, 960):
        data = np.repeat(pcm[i:i + 960], channels).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout=enc.layout.name)
        frame.sample_rate = RATE
        frame.pts = i
        out += [bytes(p) for p in enc.encode(frame)]
    return out


def decode_file(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray()[0] for f in c.decode(audio=0)]
    return np.concatenate(frames) * 32767


def peak(x: np.ndarray) -> float:
    x = x[-16384:].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[int(np.argmax(spectrum))])


# ----------------------------------------------------------------------------- bitstream


def test_opus_packet_durations() -> None:
    assert opus_samples(bytes([31 << 3])) == 960  # CELT FB 20 ms, one frame
    assert opus_samples(bytes([(28 << 3) | 1])) == 240  # 2 x 2.5 ms
    assert opus_samples(bytes([(3 << 3) | 2])) == 5760  # SILK 60 ms x 2
    assert opus_samples(bytes([(15 << 3) | 3, 3])) == 2880  # hybrid 20 ms x 3
    assert opus_samples(bytes([1 << 3])) == 960  # SILK NB 20 ms
    for bad in (b"", bytes([(31 << 3) | 3]), bytes([(31 << 3) | 3, 0]),
                bytes([(3 << 3) | 3, 3])):
        with pytest.raises(ValueError):
            opus_samples(bad)
    assert opus_channels(bytes([0x04])) == 2 and opus_channels(bytes([0])) == 1
    for size in (120, 240, 480, 960):
        assert opus_samples(opus_silence(size)) == size
        assert opus_channels(opus_silence(size, 2)) == 2


def test_real_opus_packets_parse() -> None:
    packets = opus_packets(0.2)
    assert packets and all(opus_samples(p) == 960 for p in packets)


def _encode_video(codec: str, width: int, height: int, n: int = 3) -> list[av.Packet]:
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, 30)
    if codec == "libx264":
        enc.max_b_frames = 0  # as WebRTC's H.264: decode order is presentation order
    out = []
    for i in range(n):
        img = np.full((height, width, 3), (i * 40) % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += list(enc.encode(frame))
    out += list(enc.encode(None))
    return out


@pytest.mark.parametrize("size", [(320, 240), (642, 362), (1280, 720)])
def test_vp8_and_h264_dimensions(size: tuple[int, int]) -> None:
    vp8 = _encode_video("libvpx", *size)
    assert vp8_dimensions(bytes(vp8[0])) == size
    assert vp8_dimensions(bytes(vp8[1])) is None  # an inter frame
    h264 = _encode_video("libx264", *size)
    units = h264_nal_units(bytes(h264[0]))
    types = [u[0] & 0x1F for u in units]
    assert 7 in types and 8 in types and 5 in types
    sps = next(u for u in units if u[0] & 0x1F == 7)
    assert h264_sps_dimensions(sps) == size
    with pytest.raises(ValueError):
        h264_sps_dimensions(units[types.index(8)])


def test_h264_nal_units_three_and_four_byte_start_codes() -> None:
    au = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x01\x65\xcc\xdd"
    assert h264_nal_units(au) == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc\xdd"]
    assert h264_nal_units(b"no start code") == []


# ----------------------------------------------------------------------------- timelines


def test_rtp_unwrapper_across_the_wrap_and_late_packets() -> None:
    u = RtpUnwrapper()
    assert u.unwrap(0xFFFFFC40) == 0xFFFFFC40
    assert u.unwrap(0x00000000) == 0x100000000  # wrapped forward
    assert u.unwrap(0xFFFFFC40) == 0xFFFFFC40  # late, before the wrap
    assert u.unwrap(960) == 0x100000000 + 960


def _pkt(samples: int = 960) -> bytes:
    config = {960: 31, 480: 30}[samples]
    return bytes([config << 3, 1, 2, 3])


def test_audio_timeline_orders_drops_duplicates_and_fills_gaps() -> None:
    tl = AudioTimeline()
    out: list[TimedFrame] = []
    base = 0xFFFFF000  # wraps during the run
    order = [0, 2, 1, 3, 3, 4, 8, 9]  # 2 before 1 (reordered), 3 twice (RED), 5-7 lost
    for i in order:
        out += tl.push(_pkt(), (base + i * 960) & 0xFFFFFFFF, ssrc=7, arrival=i * 0.02)
    out += tl.flush()
    assert [f.pts for f in out] == [i * 960 for i in range(10)]
    filled = [f for f in out if len(f.data) == 1]
    assert [f.pts for f in filled] == [5 * 960, 6 * 960, 7 * 960]
    assert tl.dropped == 1 and tl.filled == 3 and tl.packets == 7
    # a packet older than what was written is dropped
    assert tl.push(_pkt(), (base + 2 * 960) & 0xFFFFFFFF, 7, 1.0) == []
    assert tl.flush() == [] and tl.dropped == 2


def test_audio_timeline_new_ssrc_continues_on_the_wall_clock() -> None:
    tl = AudioTimeline()
    out = []
    for i in range(4):
        out += tl.push(_pkt(), 1000 + i * 960, ssrc=1, arrival=10.0 + i * 0.02)
    # the sender restarted 0.5 s after its last packet, with another SSRC and clock
    for i in range(4):
        out += tl.push(_pkt(), 777777 + i * 960, ssrc=2, arrival=10.56 + i * 0.02)
    out += tl.flush()
    real = [f.pts for f in out if len(f.data) > 1]
    assert real[:4] == [0, 960, 1920, 2880]
    assert real[4] == 3840 + round(0.5 * RATE)
    assert real[4:] == [real[4] + i * 960 for i in range(4)]
    pts = [f.pts for f in out]
    assert pts == sorted(pts)
    ends = [f.pts + f.duration for f in out]
    assert all(b.pts == a_end for a_end, b in zip(ends, out[1:], strict=False))


def test_audio_timeline_drops_malformed_packets() -> None:
    tl = AudioTimeline()
    assert tl.push(b"", 0, 1, 0.0) == [] and tl.dropped == 1


def test_video_timeline_waits_for_a_key_frame() -> None:
    tl = VideoTimeline()
    assert tl.push(b"d", 1000, 5, 0.0, keyframe=False) is None
    assert tl.keyframe_request(0.0) and not tl.keyframe_request(0.2)
    assert tl.keyframe_request(0.6)
    key = tl.push(b"k", 4000, 5, 0.1, keyframe=True)
    assert key is not None and key.pts == 0 and key.keyframe
    assert not tl.keyframe_request(5.0)
    f = tl.push(b"d", 7000, 5, 0.13, keyframe=False)
    assert f is not None and f.pts == 3000
    assert tl.push(b"d", 7000, 5, 0.14, keyframe=False) is None  # same timestamp
    assert tl.dropped == 1
    # frames were lost: wait for a key frame again
    assert tl.push(b"d", 10000, 5, 0.2, False, discontinuity=True) is None
    assert tl.waiting_for_keyframe and tl.skipped == 2
    f = tl.push(b"k", 13000, 5, 0.23, keyframe=True)
    assert f is not None and f.pts == 9000
    # a new SSRC: placed by the wall clock, after a key frame
    assert tl.push(b"d", 50, 6, 1.23, keyframe=False) is None
    f = tl.push(b"k", 50, 6, 1.23, keyframe=True)
    assert f is not None and f.pts == 9001 + 90000
    assert tl.frames == 4


def test_recording_clock() -> None:
    with pytest.raises(ValueError):
        RecordingClock(0)
    c = RecordingClock(5.0)
    assert c.deadline() is None
    c.joined(100.0)
    assert c.deadline() == 105.0 and c.elapsed(101.0) == 0.0
    assert c.media(101.5) and not c.media(102.0)
    assert c.deadline() == 106.5 and c.elapsed(103.5) == 2.0
    late = RecordingClock(5.0)
    late.joined(100.0)
    late.media(106.0)  # no media within the duration: ends empty-handed at 105
    assert late.deadline() == 105.0
    assert RecordingClock(None).deadline() is None


# ----------------------------------------------------------------------------- Ogg


def _crc_bitwise(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def test_ogg_crc_matches_the_bitwise_definition() -> None:
    assert ogg_crc(b"") == 0
    for data in (b"123456789", b"OggS" + bytes(range(256)), b"\xff" * 33):
        assert ogg_crc(data) == _crc_bitwise(data)


def test_ogg_opus_file_decodes_to_the_tone(tmp_path: Path) -> None:
    packets = opus_packets(2.0)
    tl = AudioTimeline()
    path = tmp_path / "a.ogg"
    f = OggOpusFile(path, 1, {"TITLE": "alice TR_x"}, serial=1234)
    for i, p in enumerate(packets):
        if i in (40, 41, 42):
            continue  # lost: filled with silence packets
        for out in tl.push(p, 5000 + i * 960, 1, i * 0.02):
            f.write(out)
    for out in tl.flush():
        f.write(out)
    f.close()
    assert f.duration == len(packets) * 960 / RATE
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        assert stream.codec_context.name == "opus" and stream.channels == 1
        tags = {k.lower(): v for k, v in {**c.metadata, **stream.metadata}.items()}
        assert tags["title"] == "alice TR_x"
    pcm = decode_file(path)
    assert len(pcm) == len(packets) * 960
    assert abs(peak(pcm) - 440) < 5
    data = path.read_bytes()
    assert data.startswith(b"OggS\x00\x02") and b"OpusHead" in data[:64]
    last = data.rfind(b"OggS")
    assert data[last + 5] == 0x04  # end of stream
    granule = int.from_bytes(data[last + 6:last + 14], "little")
    assert granule == len(packets) * 960
    with pytest.raises(RecordError, match="cannot create"):
        OggOpusFile(path, 1, {}, 1)  # never overwrites


def test_ogg_writer_pages() -> None:
    w = OggOpusWriter(9, 2)
    head = w.headers()
    assert head.count(b"OggS") == 2 and head[head.index(b"OpusHead") + 9] == 2
    chunks = [w.packet(b"\xfc" + bytes(300), i * 960, 960) for i in range(30)]
    assert sum(1 for c in chunks if c) == 1  # cut after PAGE_PACKETS packets
    page = next(c for c in chunks if c)
    assert int.from_bytes(page[6:14], "little") == 25 * 960
    # a 301-byte packet laced as 255 + 46
    assert page[27:29] == bytes([255, 46]) and page[26] == 50
    crc = int.from_bytes(page[22:26], "little")
    assert ogg_crc(page[:22] + b"\0\0\0\0" + page[26:]) == crc
    end = w.close()
    assert end[5] == 0x04 and w.close() == b""
    with pytest.raises(ValueError):
        w.packet(b"\xfc", 0, 960)
    with pytest.raises(ValueError):
        OggOpusWriter(1, 3)


# ----------------------------------------------------------------------------- PyAV muxing


@pytest.mark.parametrize(("codec", "encoder", "fmt", "ext"), [
    ("vp8", "libvpx", "webm", "webm"), ("vp8", "libvpx", "matroska", "mkv"),
    ("h264", "libx264", "mp4", "mp4"), ("h264", "libx264", "matroska", "mkv")])
def test_av_file_muxes_without_reencoding(tmp_path: Path, codec: str, encoder: str, fmt: str,
                                          ext: str) -> None:
    packets = _encode_video(encoder, 320, 240, n=30)
    path = tmp_path / f"v.{ext}"
    f = AvFile(path, fmt, codec, 320, 240)
    for i, p in enumerate(packets):
        f.write(TimedFrame(i * 3000, 0, bytes(p), bool(p.is_keyframe)))
    f.close()
    assert abs(f.duration - 1.0) < 1e-6
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == codec
        got = [bytes(p) for p in c.demux(video=0) if p.size]
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 30 and (frames[0].width, frames[0].height) == (320, 240)
    assert [round(float(fr.time) * 30) for fr in frames] == list(range(30))
    if codec == "vp8":
        assert got == [bytes(p) for p in packets]  # the very bytes written


# ----------------------------------------------------------------------------- mix


def test_mixdown_places_tracks_by_arrival() -> None:
    m = Mixdown(start=10.0, rate=1000, latency=0.1)
    ones = np.full(20, 100, np.int16)
    for i in range(10):  # track a: 20 ms frames from t=0
        m.add("a", ones, 10.0 + (i + 1) * 0.02)
    for i in range(5):  # track b: starts 0.1 s later, jittered arrivals
        m.add("b", ones * 2, 10.1 + (i + 1) * 0.02 + (0.005 if i % 2 else 0))
    early = m.take(10.15)
    assert len(early) == 50 and (early == 100).all()
    rest = m.finish(10.3)
    assert len(early) + len(rest) == 300
    mix = np.concatenate([early, rest])
    assert (mix[:100] == 100).all() and (mix[100:200] == 300).all()
    assert (mix[200:] == 0).all()


def test_mixdown_resync_clip_and_late_frames() -> None:
    m = Mixdown(start=0.0, rate=1000, latency=0.0)
    m.add("a", np.full(10, 30000, np.int16), 0.01)
    m.add("b", np.full(10, 30000, np.int16), 0.01)
    out = m.take(0.01)
    assert (out == 32767).all()  # clipped
    m.add("a", np.full(10, 5, np.int16), 0.5)  # paused: placed at its arrival again
    out = m.finish(0.5)
    assert len(out) == 490 and (out[-10:] == 5).all() and (out[:-10] == 0).all()
    m.add("b", np.full(10, 7, np.int16), 0.02)  # its place went out already
    assert m.late_samples == 10 and m.samples_out == 500
    cut = Mixdown(start=0.0, rate=1000)
    cut.add("a", np.full(50, 9, np.int16), 0.1)  # samples 50..99
    out = cut.finish(0.08)  # the recording ended at 80 ms: nothing after it
    assert len(out) == 80 and (out[:50] == 0).all() and (out[50:] == 9).all()
    assert len(cut.finish(0.2)) == 120 and cut.samples_out == 200


# ----------------------------------------------------------------------------- names


def test_file_names_are_safe_and_unique() -> None:
    namer = FileNamer({"alice_TR_1.ogg"})
    assert namer.name("alice", "TR_1", "ogg") == "alice_TR_1-2.ogg"
    assert namer.name("alice", "TR_1", "ogg") == "alice_TR_1-3.ogg"
    assert namer.name("../etc/passwd", "TR_2", "webm") == "_._etc_passwd_TR_2.webm"
    assert namer.name(".hidden", "TR_3", "mp4") == "_hidden_TR_3.mp4"
    assert namer.name("", "", "ogg") == "participant_track.ogg"
    assert namer.name("Zoë 🎤", "TR_4", "ogg") == "Zoë___TR_4.ogg"
    assert namer.plain("mix.wav") == "mix.wav" and namer.plain("mix.wav") == "mix-2.wav"
    assert len(safe_part("x" * 500, "f")) == 80
    assert container_for("opus", "ogg") == ("ogg", "ogg")
    assert container_for("h264", "mkv") == ("matroska", "mkv")
    with pytest.raises(ValueError):
        container_for("vp9", "webm")
    with pytest.raises(ValueError):
        container_for("h264", "webm")


def test_progress_line() -> None:
    assert format_progress(3.24, 1, 1, 2, 41_300, 5.0) == (
        "recording 0:03.2 / 0:05.0  tracks 1 audio, 1 video  files 2  41.3 kB")
    assert format_progress(75.0, 0, 2, 2, 999) == (
        "recording 1:15.0  tracks 0 audio, 2 video  files 2  999 B")


# ----------------------------------------------------------------------------- CLI


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"token": None, "api_key": None, "api_secret": None,
                               "room": "r1", "identity": None}
    base.update(kw)
    return argparse.Namespace(**base)


def test_record_token_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import jwt

    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    token, room = resolve_token(_args(identity="rec"))
    claims = jwt.decode(token, "secret", algorithms=["HS256"])
    assert room == "r1" and claims["iss"] == "devkey" and claims["sub"] == "rec"
    video = claims["video"]
    assert video["hidden"] and video["recorder"] and video["roomJoin"]
    assert video["room"] == "r1" and video["canSubscribe"]
    assert not video["canPublish"] and not video["canPublishData"]
    monkeypatch.setenv("LIVEKIT_API_KEY", "k1")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "s1-long-enough-for-hs256-keys-ok!")
    token, _ = resolve_token(_args())
    claims = jwt.decode(token, "s1-long-enough-for-hs256-keys-ok!", algorithms=["HS256"])
    assert claims["iss"] == "k1" and claims["sub"].startswith("recorder-")
    monkeypatch.delenv("LIVEKIT_API_SECRET")
    with pytest.raises(ValueError, match="needs --api-secret"):
        resolve_token(_args())
    # a token: its room, and no keys next to it
    assert resolve_token(_args(token=token, room=None)) == (token, "r1")
    with pytest.raises(ValueError, match="token is for room 'r1'"):
        resolve_token(_args(token=token, room="other"))
    with pytest.raises(ValueError, match="not both"):
        resolve_token(_args(token=token, api_key="k"))
    with pytest.raises(ValueError, match="not a JWT"):
        resolve_token(_args(token="garbage"))
    with pytest.raises(ValueError, match="--room is required"):
        resolve_token(_args(room=None))
