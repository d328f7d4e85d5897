"""The sans-I/O frame cryptor (issue 17): LiveKit's frame format byte for byte.

Known answers come from tests/unit/fixtures/e2ee_webcrypto_vectors.json, made once with
WebCrypto in node (the primitives livekit-client's E2EE worker uses: PBKDF2/HKDF with the
ratchet salt, AES-GCM with the clear header as additional data, the trailer)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from aiolivekit.media import frame_crypto as fc

VECTORS = json.loads((Path(__file__).parent / "fixtures" / "e2ee_webcrypto_vectors.json").read_text())
SECRET = b"aiolivekit-shared-secret"
KDFS = {"PBKDF2": fc.KDF_PBKDF2, "HKDF": fc.KDF_HKDF}


def _store(kdf: int = fc.KDF_PBKDF2, shared: bool = True, **kw: int) -> fc.KeyStore:
    return fc.KeyStore(fc.KeyStoreOptions(shared_key=shared, key_derivation_function=kdf, **kw))


@pytest.mark.parametrize("name", ["PBKDF2", "HKDF"])
def test_key_derivation_matches_webcrypto(name: str) -> None:
    v = VECTORS[name]
    assert fc.derive(SECRET, fc.DEFAULT_RATCHET_SALT, KDFS[name], 128).hex() == v["key"]
    assert fc.derive(SECRET, fc.DEFAULT_RATCHET_SALT, KDFS[name], 256).hex() == v["ratcheted"]
    ratcheted = bytes.fromhex(v["ratcheted"])
    assert fc.derive(ratcheted, fc.DEFAULT_RATCHET_SALT, KDFS[name], 128).hex() == v["key2"]


@pytest.mark.parametrize("name", ["PBKDF2", "HKDF"])
def test_encrypt_is_byte_identical_to_reference(name: str) -> None:
    v = VECTORS[name]
    store = _store(KDFS[name])
    store.set_shared_key(bytes.fromhex(v["ratcheted"]), 0)
    cryptor = fc.FrameCryptorCore(store, "alice")
    wire = cryptor.encrypt(bytes.fromhex(v["frame"]), "vp8", 0x11223344, 90000)
    assert wire is not None and wire.hex() == v["wire_ratcheted_once"]
    assert cryptor.state == fc.STATE_OK


@pytest.mark.parametrize("name", ["PBKDF2", "HKDF"])
def test_decrypt_reference_frame_by_ratcheting(name: str) -> None:
    """The reference frame was sealed with the once-ratcheted key: the receiver holding
    the original key ratchets, decrypts, keeps the new key and reports KEY_RATCHETED."""
    v = VECTORS[name]
    store = _store(KDFS[name])
    store.set_shared_key(SECRET, 0)
    states: list[int] = []
    cryptor = fc.FrameCryptorCore(store, "bob", on_state=states.append)
    assert cryptor.decrypt(bytes.fromhex(v["wire_ratcheted_once"]), "vp8") == bytes.fromhex(v["frame"])
    assert states == [fc.STATE_KEY_RATCHETED]
    ring = store.ring_for("bob")
    assert ring is not None and ring.get(0).material.hex() == v["ratcheted"]  # type: ignore[union-attr]
    # the shared ring itself is untouched (only bob's copy ratcheted)
    assert store.export_shared_key(0) == SECRET
    assert cryptor.decrypt(bytes.fromhex(v["wire_ratcheted_once"]), "vp8") == bytes.fromhex(v["frame"])
    assert states == [fc.STATE_KEY_RATCHETED, fc.STATE_OK]


def test_layout_vp8_key_and_delta_opus() -> None:
    store = _store()
    store.set_shared_key(SECRET, 3)
    enc = fc.FrameCryptorCore(store, "alice", key_index=3)
    dec = fc.FrameCryptorCore(store, "bob")
    key = bytes([0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01]) + bytes(range(40))
    delta = bytes([0x31, 0x05, 0x00]) + bytes(range(40))
    opus = bytes([0xFC]) + bytes(range(60))
    for frame, codec, clear in ((key, "vp8", 10), (delta, "vp8", 3), (opus, "opus", 1)):
        wire = enc.encrypt(frame, codec, 1234, 5678)
        assert wire is not None
        assert wire[:clear] == frame[:clear]  # the header stays in clear
        assert wire[clear:clear + 8] != frame[clear:clear + 8]
        assert len(wire) == len(frame) + 16 + 12 + 2
        assert wire[-2:] == bytes((12, 3))
        assert wire[-14:-10] == (1234).to_bytes(4, "big")
        assert wire[-10:-6] == (5678).to_bytes(4, "big")
        assert dec.decrypt(wire, codec) == frame


def test_iv_counter_differs_per_frame() -> None:
    store = _store()
    store.set_shared_key(SECRET, 0)
    enc = fc.FrameCryptorCore(store, "alice", rng=random.Random(7))
    ivs = {enc.encrypt(b"\xfc" + bytes(20), "opus", 9, 960)[-14:-2] for _ in range(5)}  # type: ignore[index]
    assert len(ivs) == 5


def test_h264_header_and_emulation_prevention() -> None:
    sps = b"\x00\x00\x00\x01\x67\x42\xc0\x1f\x0f\xd9"
    pps = b"\x00\x00\x01\x68\x87\xcb"  # a 3-byte start code: sent as a 4-byte one
    idr = b"\x00\x00\x00\x01\x65\x88" + bytes(64) + b"\x01\x02"
    frame = sps + pps + idr
    assert fc.h264_unencrypted_bytes(frame) == len(sps) + len(pps) + 4 + 2
    store = _store()
    store.set_shared_key(SECRET, 0)
    enc = fc.FrameCryptorCore(store, "alice")
    dec = fc.FrameCryptorCore(store, "bob")
    found = False
    for ts in range(0, 90000 * 400, 3000):  # until a ciphertext needs escaping
        wire = enc.encrypt(frame, "h264", 0, ts)
        assert wire is not None
        header = sps + b"\x00" + pps + idr[:6]
        assert wire.startswith(header)
        body = wire[len(header):]
        for i in range(len(body) - 2):  # no start code, no unescaped 00 00 0x (x <= 3)
            assert not (body[i] == 0 and body[i + 1] == 0 and body[i + 2] <= 3
                        and not (body[i + 2] == 3))
        # the receiver sees the 4-byte start codes its depacketizer rebuilds
        assert dec.decrypt(wire, "h264") == sps + b"\x00" + pps + idr
        if b"\x00\x00\x03" in body:
            found = True
            break
    assert found


def _write_rbsp_reference(data: bytes) -> bytes:
    """H.264's emulation prevention written as the standard states it (byte by byte)."""
    out = bytearray()
    zeros = 0
    for byte in data:
        if byte <= 3 and zeros >= 2:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def test_rbsp_round_trip() -> None:
    rng = random.Random(3)
    for _ in range(3000):
        data = bytes(rng.choice((0, 0, 0, 1, 2, 3, 4, 255)) for _ in range(rng.randrange(40)))
        escaped = fc.write_rbsp(data)
        assert escaped == _write_rbsp_reference(data), data.hex()
        assert b"\x00\x00\x00" not in escaped and b"\x00\x00\x01" not in escaped
        assert b"\x00\x00\x02" not in escaped
        assert fc.parse_rbsp(escaped) == data


def test_wrong_key_reports_failure_and_never_raises() -> None:
    a = _store(ratchet_window_size=2)
    a.set_shared_key(b"right", 0)
    b = _store(ratchet_window_size=2)
    b.set_shared_key(b"wrong", 0)
    enc = fc.FrameCryptorCore(a, "alice")
    states: list[int] = []
    dec = fc.FrameCryptorCore(b, "bob", on_state=states.append)
    wire = enc.encrypt(b"\xfc" + bytes(30), "opus", 1, 2)
    assert wire is not None
    assert dec.decrypt(wire, "opus") is None
    assert states == [fc.STATE_DECRYPTION_FAILED]
    assert b.export_shared_key(0) == b"wrong"  # the ring went back to the initial key
    for junk in (b"\x01", b"\xfc\x0c\x00", bytes(40), wire[:-1] + b"\x0f", wire[:20]):
        assert dec.decrypt(junk, "opus") is None
        assert dec.decrypt(junk, "vp8") is None
        assert dec.decrypt(junk, "h264") is None
    assert dec.frames_dropped >= 1


def test_failure_tolerance_invalidates_key_until_a_new_one() -> None:
    a = _store(ratchet_window_size=0)
    a.set_shared_key(b"right", 0)
    b = _store(ratchet_window_size=0, failure_tolerance=2)
    b.set_shared_key(b"wrong", 0)
    enc = fc.FrameCryptorCore(a, "alice")
    states: list[int] = []
    dec = fc.FrameCryptorCore(b, "bob", on_state=states.append)
    frames = [enc.encrypt(b"\xfc" + bytes([i]) * 30, "opus", 1, i) for i in range(5)]
    assert [dec.decrypt(f, "opus") for f in frames[:3]] == [None] * 3  # type: ignore[arg-type]
    assert states == [fc.STATE_DECRYPTION_FAILED]
    ring = b.ring_for("bob")
    assert ring is not None and not ring.has_valid_key
    b.set_shared_key(b"right", 0)  # rotation: every participant's copy gets it
    assert dec.decrypt(frames[3], "opus") == b"\xfc" + bytes([3]) * 30  # type: ignore[arg-type]
    assert states[-1] == fc.STATE_OK


def test_missing_key_and_key_index() -> None:
    a = _store()
    a.set_shared_key(b"k1", 1)
    enc = fc.FrameCryptorCore(a, "alice", key_index=0)
    assert enc.encrypt(b"\xfc\x00\x01", "opus", 1, 1) is None
    assert enc.state == fc.STATE_MISSING_KEY
    enc.key_index = 1
    wire = enc.encrypt(b"\xfc\x00\x01", "opus", 1, 1)
    assert wire is not None and wire[-1] == 1
    b = _store()
    b.set_shared_key(b"k1", 0)
    dec = fc.FrameCryptorCore(b, "bob")
    assert dec.decrypt(wire, "opus") is None and dec.state == fc.STATE_MISSING_KEY
    b.set_shared_key(b"k1", 1)
    assert dec.decrypt(wire, "opus") == b"\xfc\x00\x01"


def test_per_participant_keys() -> None:
    store = _store(shared=False)
    store.set_key("alice", b"alice-key", 0)
    store.set_key("bob", b"bob-key", 0)
    wire = fc.FrameCryptorCore(store, "alice").encrypt(b"\xfc" + bytes(9), "opus", 1, 1)
    assert wire is not None
    assert fc.FrameCryptorCore(store, "alice").decrypt(wire, "opus") == b"\xfc" + bytes(9)
    assert fc.FrameCryptorCore(store, "bob").decrypt(wire, "opus") is None
    assert fc.FrameCryptorCore(store, "carol").decrypt(wire, "opus") is None
    assert store.export_key("alice", 0) == b"alice-key"
    new = store.ratchet_key("alice", 0)
    assert new == fc.derive(b"alice-key", fc.DEFAULT_RATCHET_SALT, fc.KDF_PBKDF2, 256)
    assert store.export_key("alice", 0) == new
    assert store.ratchet_shared_key(0) == b"" and not store.set_shared_key(b"x", 0)


def test_server_injected_frame_passes_in_clear() -> None:
    store = _store()
    store.set_shared_key(SECRET, 0)
    store.sif_trailer = b"\xaa\xbb\xcc\xdd"
    dec = fc.FrameCryptorCore(store, "bob")
    assert dec.decrypt(b"\x10\x02\x00\x9d" + b"\xaa\xbb\xcc\xdd", "vp8") == b"\x10\x02\x00\x9d"


def test_disabled_and_empty_pass_through() -> None:
    store = _store()
    dec = fc.FrameCryptorCore(store, "bob", enabled=False)
    assert dec.decrypt(b"abc", "vp8") == b"abc"
    assert fc.FrameCryptorCore(store, "bob").decrypt(b"", "opus") == b""


def test_background_ratchet_window() -> None:
    """With a background hook the ratchet window is not derived inline: the frame is
    dropped, the window handed over; once computed the next frame ratchets at once."""
    v = VECTORS["HKDF"]
    store = _store(fc.KDF_HKDF)
    store.set_shared_key(SECRET, 0)
    asked: list[tuple[bytes, int]] = []
    store.deriver.background = lambda m, w: asked.append((m, w))
    dec = fc.FrameCryptorCore(store, "bob")
    wire = bytes.fromhex(v["wire_ratcheted_once"])
    assert dec.decrypt(wire, "vp8") is None
    assert asked == [(SECRET, 16)]
    store.deriver.compute_chain(*asked[0])
    assert dec.decrypt(wire, "vp8") == bytes.fromhex(v["frame"])


def test_data_packet_crypto_round_trip_ratchet_and_wrong_key() -> None:
    store = _store()
    store.set_shared_key(SECRET, 2)
    sender = fc.DataCryptorCore(store, rng=random.Random(1))
    sealed = sender.encrypt("alice", 2, b"payload bytes", 123456)
    assert sealed is not None
    data, iv = sealed
    assert len(iv) == 12 and iv[4:8] == (123456).to_bytes(4, "big")
    assert len(data) == len(b"payload bytes") + 16
    other = _store()
    other.set_shared_key(SECRET, 2)
    receiver = fc.DataCryptorCore(other)
    assert receiver.decrypt("alice", 2, iv, data) == b"payload bytes"
    assert receiver.decrypt("alice", 1, iv, data) is None  # no key at that index
    assert receiver.decrypt("alice", 2, iv[:8], data) is None
    # the sender ratcheted: the receiver follows within the window
    store.ratchet_shared_key(2)
    sealed2 = sender.encrypt("alice", 2, b"after ratchet", 2)
    assert sealed2 is not None and receiver.decrypt("alice", 2, sealed2[1], sealed2[0]) == b"after ratchet"
    wrong = _store(ratchet_window_size=2)
    wrong.set_shared_key(b"nope", 2)
    assert fc.DataCryptorCore(wrong).decrypt("alice", 2, iv, data) is None
    assert fc.DataCryptorCore(_store()).encrypt("alice", 0, b"x", 1) is None  # no key


OFFICIAL = json.loads((Path(__file__).parent / "fixtures" / "e2ee_official_py_frames.json").read_text())


@pytest.mark.parametrize("index", range(len(OFFICIAL["frames"])))
def test_frames_the_official_sdk_encrypted(index: int) -> None:
    """Opus and VP8 frames the official Python SDK (its native frame cryptor) encrypted
    with a shared key, captured once: we decrypt them, and encrypting the plaintext with
    the same IV gives back exactly their bytes."""
    frame = OFFICIAL["frames"][index]
    wire, plain, codec = bytes.fromhex(frame["wire"]), bytes.fromhex(frame["plain"]), frame["codec"]
    store = _store()
    store.set_shared_key(OFFICIAL["key"].encode(), 0)
    dec = fc.FrameCryptorCore(store, "theirs")
    assert dec.decrypt(wire, codec) == plain and dec.state == fc.STATE_OK
    clear = fc.unencrypted_bytes(plain, codec)
    assert wire[:clear] == plain[:clear] and clear == {"opus": 1}.get(codec, clear)
    enc = fc.FrameCryptorCore(store, "ours")
    iv = wire[-14:-2]
    enc.make_iv = lambda ssrc, ts: iv  # type: ignore[method-assign]
    assert enc.encrypt(plain, codec, 0, 0) == wire
