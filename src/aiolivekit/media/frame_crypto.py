"""LiveKit's end-to-end frame encryption, sans-I/O (issue 17).

The wire format of the official frame cryptor (livekit-client's E2EE worker and the
native ``FrameCryptorTransformer`` of the Rust/Python SDKs), byte for byte::

    clear header | AES-GCM ciphertext + 16-byte tag | IV (12) | IV length (12) | key index

* the clear header (also the AES-GCM additional data) is 10 bytes of a VP8 key frame,
  3 of a VP8 delta frame, 1 of an Opus frame (its TOC byte), and for H.264 everything up
  to and including the first two bytes of the first slice NAL unit (IDR or non-IDR);
  for H.264 the part after the header carries emulation prevention (RBSP escaping) so
  that no start code appears in it;
* the IV is ``ssrc (u32) | rtp timestamp (u32) | timestamp - send count % 0xFFFF (u32)``;
  the receiver only reads it from the trailer;
* keys: the user's key material goes through PBKDF2-HMAC-SHA256 (100000 iterations) or
  HKDF-SHA256 (128 zero bytes of info), salted with the ratchet salt, to a 128-bit AES
  key; a ratchet derives 256 bits of new material the same way;
* a frame that does not decrypt is retried with up to ``ratchet_window_size`` ratcheted
  keys (a sender that ratcheted); ``failure_tolerance`` failures in a row (a negative value:
  never) mark the key invalid until a new key is set;
* a frame ending in the server-injected-frame trailer (``JoinResponse.sif_trailer``) is
  passed on without it, unencrypted.

Everything here is plain computation: keys and frames in, frames and states out. The one
concession to the event loop is :class:`KeyDeriver`'s ``background`` hook: a ratchet
window (2 x ``ratchet_window_size`` PBKDF2 runs, about a second) can be computed off the
loop while the frames that need it are dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DEFAULT_RATCHET_SALT",
    "IV_LENGTH",
    "KDF_HKDF",
    "KDF_PBKDF2",
    "STATE_DECRYPTION_FAILED",
    "STATE_ENCRYPTION_FAILED",
    "STATE_INTERNAL_ERROR",
    "STATE_KEY_RATCHETED",
    "STATE_MISSING_KEY",
    "STATE_NEW",
    "STATE_OK",
    "DataCryptorCore",
    "FrameCryptorCore",
    "KeyDeriver",
    "KeyRing",
    "KeyStore",
    "KeyStoreOptions",
    "derive",
    "h264_unencrypted_bytes",
    "parse_rbsp",
    "unencrypted_bytes",
    "write_rbsp",
]

logger = logging.getLogger(__name__)

DEFAULT_RATCHET_SALT = b"LKFrameEncryptionKey"
IV_LENGTH = 12
TAG_LENGTH = 16
TRAILER_LENGTH = 2
PBKDF2_ITERATIONS = 100_000
HKDF_INFO = bytes(128)
KEY_BITS = 128  # the AES key derived from a key's material
RATCHET_BITS = 256  # the material a ratchet produces
MAX_KEY_RING_SIZE = 256
DEFAULT_KEY_RING_SIZE = 16

KDF_PBKDF2 = 0
KDF_HKDF = 1

# EncryptionState values (the official enum; aiolivekit.types.EncryptionState)
STATE_NEW = 0
STATE_OK = 1
STATE_ENCRYPTION_FAILED = 2
STATE_DECRYPTION_FAILED = 3
STATE_MISSING_KEY = 4
STATE_KEY_RATCHETED = 5
STATE_INTERNAL_ERROR = 6

_IV = struct.Struct(">III")
_TRAILERS = [bytes((IV_LENGTH, index)) for index in range(256)]

# unencrypted header lengths (RFC 6386 9.1 for VP8, the TOC byte of RFC 6716 for Opus)
VP8_KEY_HEADER = 10
VP8_DELTA_HEADER = 3
AUDIO_HEADER = 1


# ---------------------------------------------------------------------------- keys


def _hkdf_sha256(secret: bytes, salt: bytes, length: int) -> bytes:
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + HKDF_INFO + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def derive(material: bytes, salt: bytes, kdf: int, bits: int) -> bytes:
    """``bits`` of key derived from ``material`` (PBKDF2 or HKDF, SHA-256, ``salt``)."""
    length = bits // 8
    if kdf == KDF_PBKDF2:
        return hashlib.pbkdf2_hmac("sha256", material, salt, PBKDF2_ITERATIONS, length)
    if kdf == KDF_HKDF:
        return _hkdf_sha256(material, salt, length)
    raise ValueError(f"unknown key derivation function {kdf!r}")


class KeyDeriver:
    """Cached key derivation for one (salt, function) pair, safe to call from a thread.

    ``background``: when set (by the asyncio shell), a ratchet window not computed yet is
    handed to it (``background(material, window)``) instead of being computed inline.
    """

    CACHE = 512

    def __init__(self, salt: bytes, kdf: int) -> None:
        if kdf not in (KDF_PBKDF2, KDF_HKDF):
            raise ValueError(f"unknown key derivation function {kdf!r}")
        self.salt = bytes(salt)
        self.kdf = kdf
        self._cache: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.background: Callable[[bytes, int], None] | None = None

    def derive(self, material: bytes, bits: int) -> bytes:
        key = (material, bits)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        out = derive(material, self.salt, self.kdf, bits)
        with self._lock:
            self._cache[key] = out
            while len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
        return out

    def cached(self, material: bytes, bits: int) -> bytes | None:
        with self._lock:
            return self._cache.get((material, bits))

    def ratchet(self, material: bytes) -> bytes:
        """The next key material after ``material``."""
        return self.derive(material, RATCHET_BITS)

    def chain_ready(self, material: bytes, window: int) -> bool:
        """Whether the ``window`` ratchets after ``material`` (and their keys) are cached."""
        for _ in range(window):
            nxt = self.cached(material, RATCHET_BITS)
            if nxt is None or self.cached(nxt, KEY_BITS) is None:
                return False
            material = nxt
        return True

    def compute_chain(self, material: bytes, window: int) -> None:
        """Compute (into the cache) the ``window`` ratchets after ``material``."""
        for _ in range(window):
            material = self.ratchet(material)
            self.derive(material, KEY_BITS)


@dataclass(eq=False)
class KeySet:
    """One key of a key ring: the user's material and the AES key derived from it."""

    material: bytes
    key: bytes
    aead: AESGCM = field(repr=False)

    @classmethod
    def from_material(cls, material: bytes, deriver: KeyDeriver) -> KeySet:
        key = deriver.derive(material, KEY_BITS)
        return cls(material, key, AESGCM(key))


@dataclass
class KeyStoreOptions:
    """What the key provider was built with (``KeyProviderOptions`` of the API)."""

    shared_key: bool = False
    ratchet_salt: bytes = DEFAULT_RATCHET_SALT
    ratchet_window_size: int = 16
    failure_tolerance: int = -1
    key_ring_size: int = DEFAULT_KEY_RING_SIZE
    key_derivation_function: int = KDF_PBKDF2


class KeyRing:
    """The keys of one participant (the native ``ParticipantKeyHandler``)."""

    def __init__(self, options: KeyStoreOptions, deriver: KeyDeriver) -> None:
        size = options.key_ring_size
        if size <= 0:
            size = DEFAULT_KEY_RING_SIZE
        self.size = min(size, MAX_KEY_RING_SIZE)
        self.options = options
        self.deriver = deriver
        self.keys: list[KeySet | None] = [None] * self.size
        self.current_index = 0
        self.has_valid_key = False
        self.failures = 0

    def clone(self) -> KeyRing:
        ring = KeyRing(self.options, self.deriver)
        ring.keys = list(self.keys)
        ring.current_index = self.current_index
        ring.has_valid_key = self.has_valid_key
        return ring

    def get(self, index: int = -1) -> KeySet | None:
        idx = index if index != -1 else self.current_index
        if idx < 0 or idx >= self.size:
            return None
        return self.keys[idx]

    def set_from_material(self, material: bytes, index: int) -> None:
        if index >= 0:
            self.current_index = index % self.size
        self.keys[self.current_index] = KeySet.from_material(bytes(material), self.deriver)

    def set_key(self, material: bytes, index: int) -> None:
        self.set_from_material(material, index)
        self.set_valid()

    def set_valid(self) -> None:
        self.failures = 0
        self.has_valid_key = True

    def ratchet(self, index: int) -> bytes:
        """Ratchet the key at ``index``; its new material, ``b""`` without a key there."""
        keyset = self.get(index)
        if keyset is None:
            return b""
        new = self.deriver.ratchet(keyset.material)
        self.set_from_material(new, index if index != -1 else self.current_index)
        self.set_valid()
        return new

    def decryption_failure(self) -> bool:
        """Count one failed frame; True when the tolerance is exceeded (key now invalid)."""
        if self.options.failure_tolerance < 0:
            return False
        self.failures += 1
        if self.failures > self.options.failure_tolerance:
            self.has_valid_key = False
            return True
        return False


SHARED = "shared"


class _Pending:
    """A ratchet window is being derived off the loop (the frame is dropped)."""


_PENDING = _Pending()


class KeyStore:
    """All keys of a room (the native ``DefaultKeyProviderImpl``): with ``shared_key`` one
    shared ring that every participant starts from (each gets its own copy, which its
    own ratchets move), else one ring per participant identity."""

    def __init__(self, options: KeyStoreOptions) -> None:
        self.options = options
        self.deriver = KeyDeriver(options.ratchet_salt, options.key_derivation_function)
        self.rings: dict[str, KeyRing] = {}
        self.sif_trailer = b""

    def _new_ring(self) -> KeyRing:
        return KeyRing(self.options, self.deriver)

    def set_shared_key(self, key: bytes, index: int) -> bool:
        if not self.options.shared_key:
            return False
        shared = self.rings.get(SHARED)
        if shared is None:
            shared = self.rings[SHARED] = self._new_ring()
        shared.set_key(key, index)
        for name, ring in self.rings.items():
            if name != SHARED:
                ring.set_key(key, index)
        return True

    def ratchet_shared_key(self, index: int) -> bytes:
        shared = self.rings.get(SHARED)
        if shared is None:
            return b""
        new = shared.ratchet(index)
        if self.options.shared_key and new:
            for name, ring in self.rings.items():
                if name != SHARED:
                    ring.set_key(new, index)
        return new

    def export_shared_key(self, index: int) -> bytes:
        shared = self.rings.get(SHARED)
        keyset = shared.get(index) if shared is not None else None
        return keyset.material if keyset is not None else b""

    def shared_ring(self, identity: str) -> KeyRing | None:
        shared = self.rings.get(SHARED)
        if not self.options.shared_key or shared is None:
            return None
        ring = self.rings.get(identity)
        if ring is None:
            ring = self.rings[identity] = shared.clone()
        return ring

    def set_key(self, identity: str, key: bytes, index: int) -> bool:
        ring = self.rings.get(identity)
        if ring is None:
            ring = self.rings[identity] = self._new_ring()
        ring.set_key(key, index)
        return True

    def ring(self, identity: str) -> KeyRing | None:
        return self.rings.get(identity)

    def ratchet_key(self, identity: str, index: int) -> bytes:
        ring = self.rings.get(identity)
        return ring.ratchet(index) if ring is not None else b""

    def export_key(self, identity: str, index: int) -> bytes:
        ring = self.rings.get(identity)
        keyset = ring.get(index) if ring is not None else None
        return keyset.material if keyset is not None else b""

    def ring_for(self, identity: str) -> KeyRing | None:
        """The ring a cryptor of ``identity`` uses (shared copy or the participant's)."""
        if self.options.shared_key:
            return self.shared_ring(identity)
        return self.rings.get(identity)


# ------------------------------------------------------------------ frame helpers


_NEEDS_ESCAPE = re.compile(b"\x00\x00(?=[\x00-\x03])")


def write_rbsp(data: bytes) -> bytes:
    """H.264 emulation prevention: a 0x03 after two zeros when 0..3 follows (the zero
    count starts again after each inserted byte: the matches do not overlap)."""
    if b"\x00\x00" not in data:
        return data
    return _NEEDS_ESCAPE.sub(b"\x00\x00\x03", data)


def parse_rbsp(data: bytes) -> bytes:
    """Undo :func:`write_rbsp`: drop each 0x03 of a ``00 00 03`` sequence."""
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


def _nalu_starts(data: bytes) -> list[int]:
    """Offsets of the NAL unit payloads of an Annex B stream (after each start code)."""
    starts = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        starts.append(pos + 3)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return starts


def h264_unencrypted_bytes(data: bytes) -> int:
    """The clear header of an H.264 frame: through the first two bytes of its first
    slice NAL unit (type 1 or 5); 0 without one."""
    for start in _nalu_starts(data):
        if start < len(data) and (data[start] & 0x1F) in (1, 5):
            return start + 2
    return 0


def normalize_start_codes(header: bytes) -> bytes:
    """Every 3-byte start code of ``header`` in its 4-byte form (a receiver's
    depacketizer rebuilds NAL units with 4-byte start codes)."""
    out = bytearray()
    i = 0
    n = len(header)
    while i < n:
        if (i + 2 < n and header[i] == 0 and header[i + 1] == 0 and header[i + 2] == 1
                and (i == 0 or header[i - 1] != 0)):
            out += b"\x00\x00\x00\x01"
            i += 3
            continue
        out.append(header[i])
        i += 1
    return bytes(out)


def is_vp8_key_frame(data: bytes) -> bool:
    """A VP8 frame tag's inverse key-frame bit (RFC 6386 9.1)."""
    return bool(data) and not data[0] & 1


def unencrypted_bytes(data: bytes, codec: str) -> int:
    """The clear header length of a frame of ``codec`` (``opus``, ``vp8``, ``h264``...)."""
    if codec in ("opus", "red", "audio"):
        return AUDIO_HEADER
    if codec == "vp8":
        return VP8_KEY_HEADER if is_vp8_key_frame(data) else VP8_DELTA_HEADER
    if codec == "h264":
        return h264_unencrypted_bytes(data)
    return 0


# ------------------------------------------------------------------ the cryptor


class FrameCryptorCore:
    """Encrypts the frames of one local track, or decrypts those of one remote track.

    ``participant`` is the identity whose keys are used. ``on_state`` is called with each
    new :data:`STATE_* <STATE_OK>` value (a change, never a repeat).
    """

    def __init__(self, store: KeyStore, participant: str, *, key_index: int = 0,
                 enabled: bool = True,
                 on_state: Callable[[int], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.participant = participant
        self.key_index = key_index
        self.enabled = enabled
        self.on_state = on_state
        self.state = STATE_NEW
        self._send_counts: dict[int, int] = {}
        self._rng = rng or random.SystemRandom()
        self.frames_encrypted = 0
        self.frames_decrypted = 0
        self.frames_dropped = 0

    def _set_state(self, state: int) -> None:
        if state != self.state:
            self.state = state
            if self.on_state is not None:
                self.on_state(state)

    def make_iv(self, ssrc: int, timestamp: int) -> bytes:
        count = self._send_counts.get(ssrc)
        if count is None:
            # the first IV of a stream uses count 0; later ones continue from a random start
            self._send_counts[ssrc] = self._rng.randrange(0xFFFF)
            count = 0
        else:
            self._send_counts[ssrc] = count + 1
        timestamp &= 0xFFFFFFFF
        return _IV.pack(ssrc & 0xFFFFFFFF, timestamp, (timestamp - count % 0xFFFF) & 0xFFFFFFFF)

    # -- sending

    def encrypt(self, data: bytes, codec: str, ssrc: int, timestamp: int) -> bytes | None:
        """The encrypted frame, ``data`` itself when disabled or empty, None to drop."""
        if not data or not self.enabled:
            return data
        ring = self.store.ring_for(self.participant)
        keyset = ring.get(self.key_index) if ring is not None else None
        if keyset is None:
            self._set_state(STATE_MISSING_KEY)
            self.frames_dropped += 1
            return None
        clear = AUDIO_HEADER if codec == "opus" else unencrypted_bytes(data, codec)
        if clear > len(data):
            self._set_state(STATE_ENCRYPTION_FAILED)
            self.frames_dropped += 1
            return None
        view = memoryview(data)
        header = bytes(view[:clear])
        if codec == "h264":
            header = normalize_start_codes(header)
        iv = self.make_iv(ssrc, timestamp)
        body = b"".join((keyset.aead.encrypt(iv, view[clear:], header), iv,
                         _TRAILERS[self.key_index & 0xFF]))
        if codec == "h264":
            body = write_rbsp(body)
        if self.state != STATE_OK:
            self._set_state(STATE_OK)
        self.frames_encrypted += 1
        return header + body

    # -- receiving

    def decrypt(self, data: bytes, codec: str) -> bytes | None:
        """The decrypted frame, ``data`` itself when disabled or empty, None to drop."""
        if not data or not self.enabled:
            return data
        sif = self.store.sif_trailer
        if sif and len(data) >= len(sif) and data.endswith(sif):
            return bytes(data[: len(data) - len(sif)])  # injected by the server, in clear
        out = self._decrypt(bytes(data), codec)
        if out is None:
            self.frames_dropped += 1
        else:
            self.frames_decrypted += 1
        return out

    def _fail(self) -> None:
        self._set_state(STATE_DECRYPTION_FAILED)

    def _decrypt(self, data: bytes, codec: str) -> bytes | None:
        clear = unencrypted_bytes(data, codec)
        if clear > len(data):
            self._fail()
            return None
        header = data[:clear]
        body = data[clear:]
        if codec == "h264" and b"\x00\x00\x03" in body:
            body = parse_rbsp(body)
        if len(body) < TRAILER_LENGTH:
            self._fail()
            return None
        iv_length = body[-2]
        key_index = body[-1]
        if iv_length != IV_LENGTH or len(body) < TRAILER_LENGTH + IV_LENGTH + TAG_LENGTH:
            self._fail()
            return None
        ring = self.store.ring_for(self.participant)
        if (key_index >= self.store.options.key_ring_size or ring is None
                or ring.get(key_index) is None):
            self._set_state(STATE_MISSING_KEY)
            return None
        if self.state == STATE_DECRYPTION_FAILED and not ring.has_valid_key:
            return None  # the key failed too often: wait for a new one
        keyset = ring.get(key_index)
        assert keyset is not None
        iv = body[-TRAILER_LENGTH - IV_LENGTH:-TRAILER_LENGTH]
        sealed = body[:-TRAILER_LENGTH - IV_LENGTH]
        try:
            plain = keyset.aead.decrypt(iv, sealed, header)
        except InvalidTag:
            ratcheted = self._ratchet_and_decrypt(ring, keyset, key_index, iv, sealed, header)
            if isinstance(ratcheted, _Pending):
                return None  # dropped while the ratchet window is derived off the loop
            if ratcheted is None:
                if ring.decryption_failure() or self.store.options.failure_tolerance < 0:
                    self._fail()
                return None
            self._set_state(STATE_KEY_RATCHETED)
            return header + ratcheted
        self._set_state(STATE_OK)
        return header + plain

    def _ratchet_and_decrypt(self, ring: KeyRing, keyset: KeySet, key_index: int, iv: bytes,
                             sealed: bytes, header: bytes) -> bytes | _Pending | None:
        return open_with_ratchet(self.store, ring, keyset, key_index, iv, sealed, header)


def open_with_ratchet(store: KeyStore, ring: KeyRing, keyset: KeySet, key_index: int,
                      iv: bytes, sealed: bytes, aad: bytes) -> bytes | _Pending | None:
    """Try the ``ratchet_window_size`` keys after ``keyset``; on success the ring keeps
    the ratcheted key. ``_PENDING`` when the window is being derived in the background."""
    window = store.options.ratchet_window_size
    if window <= 0:
        return None
    deriver = store.deriver
    if deriver.background is not None and not deriver.chain_ready(keyset.material, window):
        deriver.background(keyset.material, window)
        return _PENDING
    material = keyset.material
    for _ in range(window):
        material = deriver.ratchet(material)
        candidate = KeySet.from_material(material, deriver)
        try:
            plain = candidate.aead.decrypt(iv, sealed, aad)
        except InvalidTag:
            continue
        ring.set_from_material(material, key_index)
        ring.set_valid()
        return plain
    return None


# ------------------------------------------------------------------ data packets


class DataCryptorCore:
    """Encrypts / decrypts data packets' payloads (``DataPacket.encrypted_packet``): AES-GCM
    without additional data, the IV ``random u32 | time ms u32 | time - count % 0xFFFF``,
    the sender's key ring (its identity), the ratchet window on failure."""

    def __init__(self, store: KeyStore, rng: random.Random | None = None) -> None:
        self.store = store
        self._rng = rng or random.SystemRandom()
        self._count = 0

    def make_iv(self, now_ms: int) -> bytes:
        if self._count == 0:
            self._count = self._rng.randrange(1, 0xFFFF)
        now_ms &= 0xFFFFFFFF
        iv = (self._rng.getrandbits(32).to_bytes(4, "big") + now_ms.to_bytes(4, "big")
              + ((now_ms - self._count % 0xFFFF) & 0xFFFFFFFF).to_bytes(4, "big"))
        self._count += 1
        return iv

    def encrypt(self, identity: str, key_index: int, data: bytes, now_ms: int
                ) -> tuple[bytes, bytes] | None:
        """``(sealed, iv)`` for ``data`` with ``identity``'s key; None without a key."""
        ring = self.store.ring_for(identity)
        keyset = ring.get(key_index) if ring is not None else None
        if keyset is None:
            return None
        iv = self.make_iv(now_ms)
        return keyset.aead.encrypt(iv, bytes(data), None), iv

    def decrypt(self, identity: str, key_index: int, iv: bytes, sealed: bytes) -> bytes | None:
        """The payload ``identity`` sealed, or None (no key, wrong key, malformed)."""
        if len(iv) != IV_LENGTH or len(sealed) < TAG_LENGTH:
            return None
        ring = self.store.ring_for(identity)
        keyset = ring.get(key_index) if ring is not None else None
        if ring is None or keyset is None:
            return None
        try:
            return keyset.aead.decrypt(bytes(iv), bytes(sealed), None)
        except InvalidTag:
            out = open_with_ratchet(self.store, ring, keyset, key_index, bytes(iv),
                                    bytes(sealed), b"")
            return out if isinstance(out, bytes) else None
