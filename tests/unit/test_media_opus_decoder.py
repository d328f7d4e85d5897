import ctypes

import numpy as np
import pytest

from aiolivekit.media import opus_decoder, opus_native
from aiolivekit.media.opus_decoder import OpusDecoder, OpusDecoderUnavailable, OpusError

pytestmark = pytest.mark.skipif(not opus_decoder.available(), reason="no native libopus")

_SET_PACKET_LOSS_PERC = 4014


def _encoder(channels: int = 1, frame_ms: int = 20, loss_perc: int = 10) -> opus_native.OpusEncoder:
    enc = opus_native.OpusEncoder(48000, channels, 32000 * channels, frame_ms=frame_ms)
    # our encoder fixes the expected loss at 0 %, where libopus sends no FEC data
    assert enc._lib.opus_encoder_ctl(enc._handle, _SET_PACKET_LOSS_PERC, loss_perc) == 0
    return enc


def _tone(n: int, channels: int = 1, hz: float = 440.0) -> bytes:
    t = np.arange(n) / 48000
    x = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return np.repeat(x[:, None], channels, axis=1).tobytes()


def _packets(count: int, channels: int = 1, frame_ms: int = 20, loss_perc: int = 10) -> list[bytes]:
    enc = _encoder(channels, frame_ms, loss_perc)
    step = 48 * frame_ms
    pcm = _tone(step * count, channels)
    size = step * 2 * channels
    return [enc.encode(pcm[i * size : (i + 1) * size]) for i in range(count)]


def test_decode_fec_and_plc_lengths() -> None:
    pk = _packets(6)
    dec = OpusDecoder(48000, 1)
    assert len(dec.decode(pk[0])) == 960 * 2
    assert dec.last_packet_duration == 960 == dec.packet_samples(pk[1])
    assert len(dec.conceal(480)) == 480 * 2 and dec.last_packet_duration == 480
    assert len(dec.decode_fec(pk[2], 960)) == 960 * 2
    for p in pk[2:5]:
        dec.decode(p)
    out = np.frombuffer(dec.decode(pk[5]), dtype=np.int16)
    assert np.abs(out).max() > 4000  # the tone, not silence
    stereo = OpusDecoder(24000, 2)
    assert len(stereo.decode(_packets(1, channels=2)[0])) == 480 * 2 * 2


def test_fec_decode_differs_from_plc_and_tracks_the_tone() -> None:
    pk = _packets(12)
    ref = OpusDecoder()
    fec = OpusDecoder()
    plc = OpusDecoder()
    for p in pk[:5]:
        ref.decode(p), fec.decode(p), plc.decode(p)
    truth = np.frombuffer(ref.decode(pk[5]), dtype=np.int16).astype(float)
    from_fec = np.frombuffer(fec.decode_fec(pk[6], 960), dtype=np.int16).astype(float)
    from_plc = np.frombuffer(plc.conceal(960), dtype=np.int16).astype(float)
    err_fec = np.sqrt(np.mean((truth - from_fec) ** 2))
    err_plc = np.sqrt(np.mean((truth - from_plc) ** 2))
    assert err_fec < err_plc
    assert err_fec < 0.3 * np.sqrt(np.mean(truth**2))


def test_bad_input_raises() -> None:
    dec = OpusDecoder()
    with pytest.raises(ValueError):
        dec.decode(b"")
    with pytest.raises(ValueError):
        dec.conceal(100)  # not a multiple of 2.5 ms
    with pytest.raises(ValueError):
        dec.decode_fec(b"\x78\x00", 960 * 7)  # beyond 120 ms
    with pytest.raises(OpusError):
        dec.decode(bytes([0x7B, 0xFF]))  # code 3 with 63 frames: invalid
    with pytest.raises(ValueError):
        opus_decoder.packet_samples(bytes([0x7B]))
    with pytest.raises(ValueError):
        OpusDecoder(44100, 1)
    dec.close()
    with pytest.raises(OpusError, match="closed"):
        dec.decode(b"\x78\x00")


def test_unavailable_raises_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opus_decoder, "_bound", True)
    monkeypatch.setattr(opus_decoder, "_decoder_lib", None)
    monkeypatch.setenv("AIOLIVEKIT_NATIVE_OPUS", "0")
    assert not opus_decoder.available()
    with pytest.raises(OpusDecoderUnavailable, match="AIOLIVEKIT_NATIVE_OPUS=0"):
        OpusDecoder()


def _repacketize(frames: list[bytes], pad: int = 0) -> bytes:
    lib = opus_decoder._require()
    lib.opus_repacketizer_create.restype = ctypes.c_void_p
    lib.opus_repacketizer_cat.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32]
    lib.opus_repacketizer_out.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32]
    lib.opus_repacketizer_destroy.argtypes = [ctypes.c_void_p]
    rp = lib.opus_repacketizer_create()
    try:
        for f in frames:
            assert lib.opus_repacketizer_cat(rp, f, len(f)) == 0
        out = ctypes.create_string_buffer(4000)
        n = lib.opus_repacketizer_out(rp, out, 4000)
        assert n > 0
        packet = out.raw[:n]
    finally:
        lib.opus_repacketizer_destroy(rp)
    if pad:
        lib.opus_packet_pad.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
        buf = ctypes.create_string_buffer(packet, len(packet) + pad)
        assert lib.opus_packet_pad(buf, len(packet), len(packet) + pad) == 0
        packet = buf.raw
    return packet


@pytest.mark.parametrize(("channels", "frame_ms"), [(1, 10), (1, 20), (2, 20), (1, 40), (2, 60)])
def test_own_lbrr_reading_matches_libopus(channels: int, frame_ms: int) -> None:
    lib = opus_decoder._require()
    if getattr(lib, "opus_packet_has_lbrr", None) is None:
        pytest.skip("libopus < 1.5 has no opus_packet_has_lbrr to compare with")
    pk = _packets(30, channels, frame_ms) + _packets(4, channels, frame_ms, loss_perc=0)
    packets = list(pk)
    packets.append(_repacketize(pk[5:7]))  # code 1 or 2
    packets.append(_repacketize(pk[7:9], pad=40))  # code 3, padded
    packets.append(_repacketize(pk[9:10], pad=300))  # code 3, one frame, long padding
    if frame_ms <= 20:
        packets.append(_repacketize(pk[10:13]))  # code 3, three frames
    codes = {p[0] & 3 for p in packets}
    assert 3 in codes and len(codes) >= 2
    truth = [opus_decoder.packet_has_fec(p) for p in packets]
    assert any(truth) and not all(truth)
    assert [opus_decoder._lbrr_bits(p) for p in packets] == truth


def test_dtx_packets() -> None:
    assert opus_decoder.is_dtx(b"\x78") and opus_decoder.is_dtx(b"\x78\x00\x01")
    assert not opus_decoder.is_dtx(b"") and not opus_decoder.is_dtx(b"\x78abc")
    # libopus in DTX on silence: 1-byte frames (and a comfort-noise update every 400 ms)
    enc = opus_native.OpusEncoder(48000, 1, 32000, dtx=True)
    packets = [enc.encode(bytes(1920)) for _ in range(40)]
    assert sum(opus_decoder.is_dtx(p) for p in packets) >= 25
    assert not opus_decoder.is_dtx(packets[0])
