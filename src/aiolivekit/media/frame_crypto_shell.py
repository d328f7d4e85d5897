"""Where frame encryption meets the media path (issue 17).

* sending: the local aiortc tracks (:mod:`.rtc_local`, :mod:`.encoded_track`) carry a
  ``frame_cryptor``; each encoded frame (Opus payload, VP8/H.264 access unit) is passed
  through :func:`encrypt_frame` after our encoder and before aiortc's packetizer (or the
  direct Opus writer);
* receiving: audio payloads are decrypted by the playout jitter buffer
  (:mod:`.jitter`, ``decryptor``) before the Opus decoder; video frames by a
  :class:`DecryptingJitterBuffer` wrapped around aiortc's video jitter buffer, after the
  frame is reassembled from its packets and before aiortc's decoder thread gets it;
* the ratchet window of a key that fails is derived in the default executor
  (:func:`derive_in_background`), not on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from .._compat import aiortc as aiortc_compat
from . import frame_crypto as fc
from .encoded_receive import own_jitter_buffer, replace_own_jitter_buffer

__all__ = [
    "DecryptingJitterBuffer",
    "codec_of_mime",
    "derive_in_background",
    "encrypt_frame",
    "install_decryptor",
]

logger = logging.getLogger(__name__)


def codec_of_mime(mime: str | None) -> str:
    """``video/vp8`` -> ``vp8``; audio codecs -> ``opus`` (one clear byte)."""
    mime = (mime or "").lower()
    if mime.startswith("audio/"):
        return "opus"
    return mime.partition("/")[2]


def encrypt_frame(cryptor: fc.FrameCryptorCore, data: bytes, codec: str, ssrc: int,
                  timestamp: int) -> bytes | None:
    """``data`` encrypted by ``cryptor``; None: drop the frame (no key yet, failure)."""
    try:
        return cryptor.encrypt(data, codec, ssrc, timestamp)
    except Exception:  # never let a crypto error kill the sender's loop
        logger.exception("frame encryption failed; frame dropped")
        cryptor._set_state(fc.STATE_ENCRYPTION_FAILED)
        return None


def _decrypt(cryptor: fc.FrameCryptorCore, data: bytes, codec: str) -> bytes | None:
    try:
        return cryptor.decrypt(data, codec)
    except Exception:
        logger.exception("frame decryption failed; frame dropped")
        cryptor._set_state(fc.STATE_INTERNAL_ERROR)
        return None


class DecryptingJitterBuffer:
    """aiortc's video jitter buffer with every reassembled frame decrypted (or dropped)."""

    def __init__(self, inner: Any, receiver: Any, cryptor: fc.FrameCryptorCore) -> None:
        self.inner = inner
        self.cryptor = cryptor
        self._receiver = receiver
        self._codecs: dict[int, str] = {}

    def _codec(self, pt: int) -> str:
        codec = self._codecs.get(pt)
        if codec is None:
            mime = getattr(aiortc_compat.receiver_codecs(self._receiver).get(pt), "mimeType", "")
            codec = self._codecs[pt] = codec_of_mime(str(mime) or "video/vp8")
        return codec

    def add(self, packet: Any) -> tuple[bool, Any]:
        pli, frame = self.inner.add(packet)
        if frame is None:
            return pli, None
        data = _decrypt(self.cryptor, frame.data, self._codec(int(packet.payload_type)))
        if data is None:
            return pli, None
        frame.data = data
        return pli, frame

    def remove(self, count: int) -> None:
        self.inner.remove(count)

    def smart_remove(self, count: int) -> bool:
        return bool(self.inner.smart_remove(count))

    def __getattr__(self, name: str) -> Any:  # capacity, counters...
        return getattr(self.inner, name)


def install_decryptor(receiver: Any, kind: str, cryptor: fc.FrameCryptorCore | None) -> bool:
    """Decrypt what ``receiver`` receives with ``cryptor`` (None: stop decrypting);
    False when the receiver has no jitter buffer of ours / aiortc's to hook."""
    buffer = own_jitter_buffer(receiver)  # under an encoded-frame tap, if any
    if buffer is None:
        return False
    if kind == "audio":
        if not hasattr(buffer, "decryptor"):
            logger.error("received audio cannot be decrypted: aiortc's own jitter buffer "
                         "is in place")
            return False
        if cryptor is None:
            buffer.decryptor = None
        else:
            def decryptor(data: bytes, core: fc.FrameCryptorCore = cryptor) -> bytes | None:
                return _decrypt(core, data, "opus")
            buffer.decryptor = decryptor
        return True
    if isinstance(buffer, DecryptingJitterBuffer):
        if cryptor is None:
            return replace_own_jitter_buffer(receiver, buffer.inner)
        buffer.cryptor = cryptor
        return True
    if cryptor is None:
        return True
    return replace_own_jitter_buffer(
        receiver, DecryptingJitterBuffer(buffer, receiver, cryptor))


def derive_in_background(store: fc.KeyStore, loop: asyncio.AbstractEventLoop) -> None:
    """Derive ratchet windows of ``store`` in the default executor (PBKDF2 is slow)."""
    deriver = store.deriver
    pending: set[bytes] = set()

    def done(material: bytes, fut: asyncio.Future[None]) -> None:
        pending.discard(material)
        if not fut.cancelled() and fut.exception() is not None:
            logger.error("deriving a ratchet window failed: %s", fut.exception())

    def background(material: bytes, window: int) -> None:
        if material in pending or loop.is_closed():
            return
        pending.add(material)
        fut = loop.run_in_executor(None, deriver.compute_chain, material, window)
        fut.add_done_callback(functools.partial(done, material))

    deriver.background = background
