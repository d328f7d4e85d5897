"""``AudioFrame``: interleaved signed 16-bit PCM, and ``combine_audio_frames``.

Pure Python (no numpy, no PyAV) so that importing it stays cheap.
"""

from __future__ import annotations

import io
import logging
import wave
from collections.abc import Sequence
from typing import Any

__all__ = ["AudioFrame", "combine_audio_frames"]

logger = logging.getLogger(__name__)

_Buffer = bytes | bytearray | memoryview


def _as_byte_buffer(data: Any) -> bytes | bytearray | memoryview:
    """Validate ``data`` and return a contiguous byte-addressed buffer (not copied)."""
    if isinstance(data, memoryview):
        if not data.contiguous:
            raise ValueError("data must be a contiguous buffer")
        view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        if view.obj is not None and isinstance(view.obj, (bytes, bytearray)) and len(view) == len(
            view.obj
        ):
            return view
        # A slice (or foreign exporter): keep our own copy so offsets start at zero.
        return bytearray(view) if not view.readonly else bytes(view)
    if isinstance(data, (bytes, bytearray)):
        return data
    raise TypeError(
        f"data must be bytes, bytearray or memoryview, not {type(data).__name__}"
    )


class AudioFrame:
    """A frame of interleaved int16 audio (``data`` is a ``memoryview`` cast to ``'h'``)."""

    __slots__ = ("_data", "_num_channels", "_sample_rate", "_samples_per_channel", "_userdata")

    def __init__(
        self,
        data: _Buffer,
        sample_rate: int,
        num_channels: int,
        samples_per_channel: int,
        *,
        userdata: dict[str, Any] | None = None,
    ) -> None:
        buf = _as_byte_buffer(data)
        if int(num_channels) <= 0:
            raise ValueError("num_channels must be > 0")
        if int(sample_rate) <= 0:
            raise ValueError("sample_rate must be > 0")
        if int(samples_per_channel) < 0:
            raise ValueError("samples_per_channel must be >= 0")
        min_size = int(num_channels) * int(samples_per_channel) * 2
        if len(buf) < min_size:
            raise ValueError(
                "data length must be >= num_channels * samples_per_channel * sizeof(int16)"
            )
        if len(buf) % 2 != 0:
            raise ValueError("data length must be a multiple of sizeof(int16)")
        self._data = buf
        self._sample_rate = int(sample_rate)
        self._num_channels = int(num_channels)
        self._samples_per_channel = int(samples_per_channel)
        self._userdata: dict[str, Any] = {} if userdata is None else userdata

    @staticmethod
    def create(sample_rate: int, num_channels: int, samples_per_channel: int) -> AudioFrame:
        """A zero-filled (silent) frame backed by a writable ``bytearray``."""
        size = int(num_channels) * int(samples_per_channel) * 2
        return AudioFrame(bytearray(size), sample_rate, num_channels, samples_per_channel)

    @property
    def userdata(self) -> dict[str, Any]:
        return self._userdata

    @property
    def data(self) -> memoryview:
        """The samples as a ``memoryview`` of int16 (writable when backed by a bytearray)."""
        n = self._num_channels * self._samples_per_channel * 2
        mv = memoryview(self._data)
        if mv.format != "B":
            mv = mv.cast("B")
        return mv[:n].cast("h")

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def num_channels(self) -> int:
        return self._num_channels

    @property
    def samples_per_channel(self) -> int:
        return self._samples_per_channel

    @property
    def duration(self) -> float:
        """Length of the frame in seconds."""
        return self._samples_per_channel / self._sample_rate

    def _bytes(self) -> bytes:
        n = self._num_channels * self._samples_per_channel * 2
        if isinstance(self._data, bytes) and len(self._data) == n:
            return self._data
        return bytes(memoryview(self._data).cast("B")[:n])

    def to_wav_bytes(self) -> bytes:
        """The frame as a complete 16-bit PCM WAV file."""
        with io.BytesIO() as out:
            with wave.open(out, "wb") as wav:
                wav.setnchannels(self._num_channels)
                wav.setsampwidth(2)
                wav.setframerate(self._sample_rate)
                wav.writeframes(self._bytes())
            return out.getvalue()

    @classmethod
    def __get_pydantic_core_schema__(cls, *_: Any) -> Any:
        """Pydantic support: validates ``AudioFrame`` objects or dicts with base64 ``data``;
        serialises to such a dict (needs pydantic installed)."""
        import base64

        from pydantic_core import core_schema

        def validate(value: Any) -> AudioFrame:
            if isinstance(value, AudioFrame):
                return value
            if isinstance(value, dict):
                data = value["data"]
                raw = base64.b64decode(data) if isinstance(data, str) else data
                return AudioFrame(
                    raw, value["sample_rate"], value["num_channels"], value["samples_per_channel"]
                )
            raise ValueError(f"cannot make an AudioFrame from {type(value).__name__}")

        def serialize(frame: AudioFrame) -> dict[str, Any]:
            return {
                "data": base64.b64encode(frame._bytes()).decode("ascii"),
                "sample_rate": frame.sample_rate,
                "num_channels": frame.num_channels,
                "samples_per_channel": frame.samples_per_channel,
            }

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(serialize)
        )

    def __repr__(self) -> str:
        return (
            f"rtc.AudioFrame(sample_rate={self._sample_rate}, "
            f"num_channels={self._num_channels}, "
            f"samples_per_channel={self._samples_per_channel}, "
            f"duration={self.duration:.3f})"
        )


def combine_audio_frames(buffer: AudioFrame | Sequence[AudioFrame]) -> AudioFrame:
    """Concatenate frames of the same sample rate and channel count into one frame.

    Raises ``ValueError`` for an empty list or mismatched frames.
    """
    if isinstance(buffer, AudioFrame):
        return buffer
    frames = list(buffer)
    if not frames:
        raise ValueError("buffer is empty")
    sample_rate = frames[0].sample_rate
    num_channels = frames[0].num_channels
    total = 0
    for f in frames:
        if f.sample_rate != sample_rate:
            raise ValueError(
                f"Sample rate mismatch: expected {sample_rate}, got {f.sample_rate}"
            )
        if f.num_channels != num_channels:
            raise ValueError(
                f"Channel count mismatch: expected {num_channels}, got {f.num_channels}"
            )
        total += f.samples_per_channel
    data = bytearray(b"".join(f._bytes() for f in frames))
    return AudioFrame(data, sample_rate, num_channels, total)
