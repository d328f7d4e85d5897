"""A direct ``ctypes`` binding to libopus' decoder: normal decode, in-band FEC, PLC.

The library is the one :mod:`.opus_native` loads for the encoder (PyAV's bundled libopus
first, then the system's); its loader is reused, so the same conditions apply: no libopus,
a platform where variadic ``ctypes`` calls are unsafe (``opus_decoder_ctl``), or
``AIOLIVEKIT_NATIVE_OPUS=0``. There is no fallback: PyAV's decoder can neither decode the
FEC data of a packet nor run the concealment on demand, so :class:`OpusDecoder` raises
:class:`OpusDecoderUnavailable` in those cases.

All PCM is interleaved native-endian int16 ``bytes``; sample counts are per channel.
"""

from __future__ import annotations

import ctypes
import logging
import os
import weakref
from typing import Any

from . import opus_native
from .opus_native import OpusError

__all__ = [
    "OpusDecoder",
    "OpusDecoderUnavailable",
    "OpusError",
    "available",
    "is_dtx",
    "packet_has_fec",
    "packet_samples",
]

logger = logging.getLogger(__name__)

_RATES = (8000, 12000, 16000, 24000, 48000)
_RESET_STATE = 4028
_GET_LAST_PACKET_DURATION = 4039
_MAX_FRAME_MS = 120  # the longest Opus packet
_MAX_PAYLOAD = 1275 * 3 + 7  # RFC 6716 bound on one packet (code 3, 120 ms)

_decoder_lib: Any = None
_bound = False


class OpusDecoderUnavailable(OpusError):
    """libopus' decoder cannot be loaded (see the module docstring for why)."""


def _bind() -> Any:
    """The libopus handle with the decoder entry points declared, or None."""
    global _decoder_lib, _bound
    if _bound:
        return _decoder_lib
    _bound = True
    lib = opus_native._load()  # the shared finder/loader of the encoder binding
    if lib is None:
        return None
    try:
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int, ctypes.c_int
        ]
        lib.opus_decoder_ctl.restype = ctypes.c_int
        lib.opus_decoder_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.opus_packet_get_nb_samples.restype = ctypes.c_int
        lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    except AttributeError:
        logger.warning("libopus lacks the decoder entry points", exc_info=True)
        return None
    has_lbrr = getattr(lib, "opus_packet_has_lbrr", None)  # libopus >= 1.5
    if has_lbrr is not None:
        has_lbrr.restype = ctypes.c_int
        has_lbrr.argtypes = [ctypes.c_char_p, ctypes.c_int32]
    _decoder_lib = lib
    return lib


def available() -> bool:
    """True when :class:`OpusDecoder` can be created."""
    return _bind() is not None


def _require() -> Any:
    lib = _bind()
    if lib is None:
        if os.environ.get("AIOLIVEKIT_NATIVE_OPUS", "1") == "0":
            why = "AIOLIVEKIT_NATIVE_OPUS=0 disables native libopus"
        elif not opus_native._variadic_ok():
            why = "variadic ctypes calls are not safe on this platform"
        else:
            why = "no libopus found next to PyAV or on the library path"
        raise OpusDecoderUnavailable(f"libopus' decoder is unavailable: {why}")
    return lib


def _strerror(lib: Any, rc: int) -> str:
    return str(lib.opus_strerror(rc).decode())


def packet_samples(payload: bytes, sample_rate: int = 48000) -> int:
    """Samples per channel in an Opus packet at ``sample_rate``; ValueError if malformed."""
    lib = _require()
    if not payload:
        raise ValueError("empty Opus packet")
    n = int(lib.opus_packet_get_nb_samples(payload, len(payload), sample_rate))
    if n < 0:
        raise ValueError(f"malformed Opus packet: {_strerror(lib, n)}")
    return n


def _first_frame(payload: bytes) -> tuple[int, int]:
    """(offset, length) of the first frame of an Opus packet (RFC 6716 3.2); (0, 0) if
    the packet is too short to tell."""
    n = len(payload)
    code = payload[0] & 3

    def size_at(pos: int) -> tuple[int, int]:  # a frame length: (value, bytes used)
        if pos >= n:
            return -1, 0
        b = payload[pos]
        if b < 252:
            return b, 1
        if pos + 1 >= n:
            return -1, 0
        return b + 4 * payload[pos + 1], 2

    if code == 0:
        return 1, n - 1
    if code == 1:
        return 1, (n - 1) // 2
    if code == 2:
        size, used = size_at(1)
        return (1 + used, size) if size >= 0 else (0, 0)
    if n < 2:
        return 0, 0
    count = payload[1] & 0x3F
    pos, padding = 2, 0
    if count == 0:
        return 0, 0
    if payload[1] & 0x40:
        while True:
            if pos >= n:
                return 0, 0
            b = payload[pos]
            pos += 1
            padding += 254 if b == 255 else b
            if b != 255:
                break
    if payload[1] & 0x80:  # VBR: count - 1 lengths, then the frames
        first = -1
        for i in range(count - 1):
            size, used = size_at(pos)
            if size < 0:
                return 0, 0
            if i == 0:
                first = size
            pos += used
        if count == 1:
            first = n - pos - padding
        return pos, first
    return pos, (n - pos - padding) // count


def _lbrr_bits(payload: bytes) -> bool:
    """Our own reading of the LBRR flags (RFC 6716 4.2.3-4.2.4), for libopus < 1.5.

    The SILK header flags are each coded with probability 1/2, so they are the leading
    bits of the first frame: one VAD flag per 20 ms SILK frame, then the LBRR flag, for
    the mid channel and (stereo) again for the side channel.
    """
    toc = payload[0]
    config = toc >> 3
    if config >= 16:  # CELT-only: no SILK layer, no LBRR
        return False
    start, length = _first_frame(payload)
    if length <= 0 or start >= len(payload):
        return False
    duration = (10, 20, 40, 60)[config & 3] if config < 12 else (10, 20)[config & 1]
    n_silk = max(1, duration // 20)
    first = payload[start]
    lbrr = (first >> (7 - n_silk)) & 1
    if toc & 0x4:  # stereo
        lbrr |= (first >> (6 - 2 * n_silk)) & 1
    return bool(lbrr)


def packet_has_fec(payload: bytes) -> bool:
    """True when the packet carries in-band FEC (LBRR) data for the packet before it."""
    if not payload:
        return False
    lib = _require()
    fn = getattr(lib, "opus_packet_has_lbrr", None)
    if fn is not None:
        rc = int(fn(payload, len(payload)))
        return rc > 0
    return _lbrr_bits(payload)


def celt_only(payload: bytes) -> bool:
    """A CELT-only packet (TOC configurations 16-31). libopus' PLC carries these on well;
    after SILK or hybrid packets it fades a steady tone out within one packet and the next
    packets fade back in over ~40 ms (the playout buffer then conceals by itself)."""
    return bool(payload) and payload[0] >> 3 >= 16


def is_dtx(payload: bytes) -> bool:
    """A DTX (silence) packet: at most 3 bytes. libopus' DTX frames are 1-2 bytes and the
    frame that starts DTX (SILK, no voice activity) 3; the sender side
    (``codecs.OpusPacketEncoder``) leaves out the same <= 3-byte frames."""
    return 0 < len(payload) <= 3


class OpusDecoder:
    """One libopus decoder. ``decode`` for packets, ``decode_fec`` for the FEC copy of
    the packet before ``payload``, ``conceal`` for loss concealment (PLC)."""

    def __init__(self, sample_rate: int = 48000, channels: int = 1) -> None:
        lib = _require()
        if sample_rate not in _RATES:
            raise ValueError(f"Opus does not decode at {sample_rate} Hz")
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        err = ctypes.c_int(0)
        handle = lib.opus_decoder_create(sample_rate, channels, ctypes.byref(err))
        if err.value != 0 or not handle:
            raise OpusError(f"opus_decoder_create: {_strerror(lib, err.value)}")
        self._lib = lib
        self._handle = ctypes.c_void_p(handle)
        self._finalizer = weakref.finalize(self, lib.opus_decoder_destroy, self._handle)
        self.sample_rate = sample_rate
        self.channels = channels
        self.max_frame_samples = sample_rate * _MAX_FRAME_MS // 1000
        self._pcm = (ctypes.c_int16 * (self.max_frame_samples * channels))()

    def _run(self, data: bytes | None, frame_size: int, fec: int) -> bytes:
        if not self._finalizer.alive:
            raise OpusError("decoder is closed")
        size = len(data) if data is not None else 0
        n = self._lib.opus_decode(self._handle, data, size, self._pcm, frame_size, fec)
        if n < 0:
            raise OpusError(f"opus_decode: {_strerror(self._lib, n)}")
        return ctypes.string_at(self._pcm, n * self.channels * 2)

    def _check_frame_size(self, frame_size: int) -> None:
        quantum = self.sample_rate // 400  # 2.5 ms
        if frame_size <= 0 or frame_size % quantum or frame_size > self.max_frame_samples:
            raise ValueError(
                f"frame_size must be a positive multiple of 2.5 ms up to 120 ms, got {frame_size}"
            )

    def decode(self, payload: bytes) -> bytes:
        """Decode one packet; returns all of its samples."""
        if not payload:
            raise ValueError("empty Opus packet (use conceal() for a lost one)")
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError(f"Opus packet of {len(payload)} bytes is too long")
        return self._run(payload, self.max_frame_samples, 0)

    def decode_fec(self, payload: bytes, frame_size: int) -> bytes:
        """Recover the ``frame_size`` samples before ``payload`` from its FEC data.

        libopus runs the PLC for what the FEC does not cover (all of it when the packet has
        no FEC data, or when the previous packet was CELT-only), so ``frame_size`` samples
        always come back. ``payload`` must still be decoded normally afterwards.
        """
        if not payload:
            raise ValueError("empty Opus packet")
        self._check_frame_size(frame_size)
        return self._run(payload, frame_size, 1)

    def conceal(self, frame_size: int) -> bytes:
        """``frame_size`` samples of packet-loss concealment (decoding with no data)."""
        self._check_frame_size(frame_size)
        return self._run(None, frame_size, 0)

    def packet_samples(self, payload: bytes) -> int:
        return packet_samples(payload, self.sample_rate)

    def has_fec(self, payload: bytes) -> bool:
        return packet_has_fec(payload)

    def is_dtx(self, payload: bytes) -> bool:
        return is_dtx(payload)

    def plc_first(self, payload: bytes) -> bool:
        """Whether a loss after ``payload`` is best begun with libopus' PLC."""
        return celt_only(payload)

    @property
    def last_packet_duration(self) -> int:
        """Samples per channel of the last decode call (``OPUS_GET_LAST_PACKET_DURATION``)."""
        value = ctypes.c_int32(0)
        rc = self._lib.opus_decoder_ctl(
            self._handle, _GET_LAST_PACKET_DURATION, ctypes.addressof(value)
        )
        if rc != 0:
            raise OpusError(f"opus_decoder_ctl: {_strerror(self._lib, rc)}")
        return int(value.value)

    def reset(self) -> None:
        """Forget all decoder state (a new stream)."""
        rc = self._lib.opus_decoder_ctl(self._handle, _RESET_STATE, None)
        if rc != 0:
            raise OpusError(f"opus_decoder_ctl: {_strerror(self._lib, rc)}")

    def close(self) -> None:
        self._finalizer()
