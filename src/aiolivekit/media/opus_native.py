"""A direct ``ctypes`` binding to libopus' encoder (the library PyAV already ships).

Encoding through PyAV costs an ``av.AudioFrame`` and an ``av.Packet`` per 20 ms frame,
about as much CPU as libopus itself. :class:`OpusEncoder` hands the PCM bytes straight to
``opus_encode`` and returns the payload bytes. The library is looked up next to PyAV's
bundled libraries first (the copy libavcodec uses), then on the system search path.

``available()`` is False when no libopus is found, on platforms where a variadic C call
through ``ctypes`` is not safe (``opus_encoder_ctl``; Apple arm64), or when the
environment variable ``AIOLIVEKIT_NATIVE_OPUS=0`` is set: callers then use PyAV.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os
import platform
import sys
import weakref
from typing import Any

__all__ = ["OpusEncoder", "OpusError", "available", "version"]

logger = logging.getLogger(__name__)

APPLICATION_VOIP = 2048
APPLICATION_AUDIO = 2049
_SET_BITRATE = 4002
_SET_VBR = 4006
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_DTX = 4016
_SET_VBR_CONSTRAINT = 4020
_RATES = (8000, 12000, 16000, 24000, 48000)
_MAX_PACKET = 1500

_lib: Any = None
_loaded = False


class OpusError(RuntimeError):
    """libopus returned an error code."""


def _candidates() -> list[str]:
    paths: list[str] = []
    try:
        import av

        base = os.path.dirname(os.path.abspath(av.__file__))
        for d in (base + ".libs", os.path.join(base, ".dylibs"), os.path.join(base, "..", "av.libs")):
            paths += sorted(glob.glob(os.path.join(d, "*opus*")))
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - PyAV is a dependency
        logger.debug("PyAV's bundled libraries not found", exc_info=True)
    found = ctypes.util.find_library("opus")
    if found:
        paths.append(found)
    return paths


def _variadic_ok() -> bool:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return True
    # AAPCS64 passes int variadic arguments like fixed ones, except on Apple platforms
    return machine in ("aarch64", "arm64") and sys.platform.startswith("linux")


def _load() -> Any:
    global _lib, _loaded
    if _loaded:
        return _lib
    _loaded = True
    if os.environ.get("AIOLIVEKIT_NATIVE_OPUS", "1") == "0" or not _variadic_ok():
        return None
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.opus_get_version_string.restype = ctypes.c_char_p
            lib.opus_encoder_create.restype = ctypes.c_void_p
            lib.opus_encoder_create.argtypes = [
                ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
            ]
            lib.opus_encoder_destroy.restype = None
            lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_encoder_ctl.restype = ctypes.c_int
            lib.opus_encoder_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int32]
            lib.opus_encode.restype = ctypes.c_int32
            lib.opus_encode.argtypes = [
                ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int32
            ]
            lib.opus_strerror.restype = ctypes.c_char_p
            lib.opus_strerror.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            continue
        _lib = lib
        logger.debug("native libopus: %s (%s)", path, lib.opus_get_version_string().decode())
        break
    return _lib


def available() -> bool:
    """True when :class:`OpusEncoder` can be used."""
    return _load() is not None


def version() -> str | None:
    lib = _load()
    return lib.opus_get_version_string().decode() if lib is not None else None


class OpusEncoder:
    """One libopus encoder: ``encode(pcm)`` takes exactly one frame of int16 PCM.

    Settings match what ``codecs.OpusPacketEncoder`` asks of PyAV's ``libopus``:
    constrained VBR at ``bitrate``, complexity 10, in-band FEC, optional DTX.
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        bitrate: int,
        *,
        voip: bool = True,
        dtx: bool = False,
        frame_ms: int = 20,
    ) -> None:
        lib = _load()
        if lib is None:
            raise OpusError("native libopus is not available")
        if sample_rate not in _RATES:
            raise ValueError(f"Opus does not encode at {sample_rate} Hz")
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        err = ctypes.c_int(0)
        app = APPLICATION_VOIP if voip else APPLICATION_AUDIO
        handle = lib.opus_encoder_create(sample_rate, channels, app, ctypes.byref(err))
        if err.value != 0 or not handle:
            raise OpusError(f"opus_encoder_create: {lib.opus_strerror(err.value).decode()}")
        self._lib = lib
        self._handle = ctypes.c_void_p(handle)
        self._finalizer = weakref.finalize(self, lib.opus_encoder_destroy, self._handle)
        for ctl, value in (
            (_SET_BITRATE, int(bitrate)),
            (_SET_VBR, 1),
            (_SET_VBR_CONSTRAINT, 1),
            (_SET_COMPLEXITY, 10),
            (_SET_INBAND_FEC, 1),
            (_SET_PACKET_LOSS_PERC, 0),
            (_SET_DTX, 1 if dtx else 0),
        ):
            rc = lib.opus_encoder_ctl(self._handle, ctl, value)
            if rc != 0:
                raise OpusError(f"opus_encoder_ctl({ctl}): {lib.opus_strerror(rc).decode()}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_samples = sample_rate * frame_ms // 1000
        self.frame_bytes = self.frame_samples * 2 * channels
        self._out = ctypes.create_string_buffer(_MAX_PACKET)
        self._encode = lib.opus_encode

    def set_packet_loss(self, percent: int) -> None:
        """The loss rate the encoder expects (0-100): above 0, with in-band FEC on, libopus
        adds FEC data (a low-rate copy of the previous frame) when the bitrate allows."""
        value = max(0, min(100, int(percent)))
        rc = self._lib.opus_encoder_ctl(self._handle, _SET_PACKET_LOSS_PERC, value)
        if rc != 0:
            raise OpusError(f"opus_encoder_ctl(packet loss): {self._lib.opus_strerror(rc).decode()}")

    def encode(self, pcm: bytes) -> bytes:
        """Encode one frame (``frame_bytes`` of interleaved int16); returns the payload."""
        if len(pcm) != self.frame_bytes:
            raise ValueError(f"expected {self.frame_bytes} bytes of PCM, got {len(pcm)}")
        n = self._encode(self._handle, pcm, self.frame_samples, self._out, _MAX_PACKET)
        if n < 0:
            raise OpusError(f"opus_encode: {self._lib.opus_strerror(n).decode()}")
        return ctypes.string_at(self._out, n)

    def close(self) -> None:
        self._finalizer()
