"""Known answers from the official clients (issue 17): frames that the official Python SDK,
@livekit/rtc-node (both the native frame cryptor) and livekit-client in Chromium (its
E2EE worker) encrypted, captured once (tests/fixtures/e2ee/README.md).

For each capture: our cryptor decrypts every frame to the recorded plaintext, the
decrypted Opus run decodes (PyAV's libopus) to the captured 600 Hz tone and the VP8 frames
to the captured colour; encrypting the plaintext again with the frame's own IV gives back
their bytes exactly (our encryptor writes their format); a wrong key opens nothing. That
the official clients decrypt what we encrypt is the interop tests' part
(tests/interop/test_interop_e2ee.py, test_interop_e2ee_keys.py)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from aiolivekit.media import frame_crypto as fc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "e2ee"
CAPTURES = sorted(FIXTURES.glob("*_frames.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _store(capture: dict[str, Any], key: str | None = None) -> fc.KeyStore:
    assert capture["kdf"] == "PBKDF2" and capture["salt"] == "LKFrameEncryptionKey"
    # a wrong key: no ratchet window (16 ratchets of a wrong key open nothing either)
    store = fc.KeyStore(fc.KeyStoreOptions(shared_key=True,
                                           ratchet_window_size=0 if key else 16))
    store.set_shared_key((key or capture["key"]).encode(), 0)
    return store


def _frames(capture: dict[str, Any], codec: str) -> list[tuple[bytes, bytes]]:
    return [(bytes.fromhex(f["wire"]), bytes.fromhex(f["plain"]))
            for f in capture["frames"] if f["codec"] == codec]


def test_captures_present() -> None:
    assert {p.name for p in CAPTURES} >= {"official_py_frames.json", "node_frames.json",
                                          "browser_frames.json"}


@pytest.fixture(params=CAPTURES, ids=[p.name.removesuffix("_frames.json") for p in CAPTURES])
def capture(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _load(request.param)


def test_decrypt_theirs_to_the_recorded_plaintext(capture: dict[str, Any]) -> None:
    store = _store(capture)
    dec = fc.FrameCryptorCore(store, "theirs")
    for codec in ("opus", "vp8"):
        frames = _frames(capture, codec)
        assert frames, codec
        for wire, plain in frames:
            assert dec.decrypt(wire, codec) == plain, codec
            clear = fc.unencrypted_bytes(plain, codec)
            assert wire[:clear] == plain[:clear]  # the clear header
            assert wire[-2:] == bytes((12, 0))  # IV length, key index 0
            assert len(wire) == len(plain) + 16 + 12 + 2  # tag, IV, trailer
    assert dec.state == fc.STATE_OK and dec.frames_dropped == 0


def test_decrypted_opus_is_the_tone(capture: dict[str, Any]) -> None:
    dec = fc.FrameCryptorCore(_store(capture), "theirs")
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate = 48000  # type: ignore[attr-defined]
    pcm: list[np.ndarray] = []
    for pts, (wire, _) in enumerate(_frames(capture, "opus")):
        plain = dec.decrypt(wire, "opus")
        assert plain is not None
        packet = av.Packet(plain)
        packet.pts, packet.time_base = pts * 960, Fraction(1, 48000)
        for frame in decoder.decode(packet):
            arr = frame.to_ndarray()  # planar: (channels, samples); packed: (1, samples x ch)
            first = arr[0] if frame.format.is_planar else arr.reshape(frame.samples, -1)[:, 0]
            pcm.append(first.astype(np.float64))
    x = np.concatenate(pcm)
    assert len(x) >= 0.9 * 48000
    if np.abs(x).max() <= 1.0:  # float samples
        x = x * 32767
    x = x - x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spec[0] = 0
    assert abs(int(np.argmax(spec)) * 48000 / len(x) - capture["tone_hz"]) < 8
    assert float(np.sqrt(np.mean(x**2))) > 1000


def test_decrypted_vp8_is_the_picture(capture: dict[str, Any]) -> None:
    dec = fc.FrameCryptorCore(_store(capture), "theirs")
    decoder = av.CodecContext.create("vp8", "r")
    frames = _frames(capture, "vp8")
    assert fc.is_vp8_key_frame(frames[0][0])
    images = []
    for wire, _ in frames:
        plain = dec.decrypt(wire, "vp8")
        assert plain is not None
        images += [f.to_ndarray(format="rgb24") for f in decoder.decode(av.Packet(plain))]
    assert len(images) == len(frames)
    img = images[-1]
    assert img.shape[:2] == (capture["height"], capture["width"])
    h, w = img.shape[:2]
    mean = img[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3).mean(axis=0)
    assert all(abs(float(m) - c) <= 45 for m, c in zip(mean, capture["color"], strict=True)), mean


def test_encrypting_their_plaintext_with_their_iv_gives_their_bytes(
        capture: dict[str, Any]) -> None:
    store = _store(capture)
    for codec in ("opus", "vp8"):
        for wire, plain in _frames(capture, codec):
            enc = fc.FrameCryptorCore(store, "ours")
            iv = wire[-14:-2]
            enc.make_iv = lambda ssrc, ts, iv=iv: iv  # type: ignore[method-assign]
            assert enc.encrypt(plain, codec, 0, 0) == wire, codec


def test_ours_round_trips_and_a_wrong_key_opens_nothing(capture: dict[str, Any]) -> None:
    sender = fc.FrameCryptorCore(_store(capture), "ours")
    receiver = fc.FrameCryptorCore(_store(capture), "ours")
    wrong = fc.FrameCryptorCore(_store(capture, key="not-the-key"), "ours")
    for codec in ("opus", "vp8"):
        for n, (wire, plain) in enumerate(_frames(capture, codec)):
            sealed = sender.encrypt(plain, codec, 0x1234, 960 * n)
            assert sealed is not None and sealed != wire  # a fresh IV
            assert receiver.decrypt(sealed, codec) == plain
            assert wrong.decrypt(wire, codec) is None
    assert wrong.state == fc.STATE_DECRYPTION_FAILED and wrong.frames_decrypted == 0
