"""``livekit.rtc.data_stream`` names: text and byte streams, from aiolivekit's
implementation."""

from __future__ import annotations

from ..data.streams import (
    STREAM_CHUNK_SIZE,
    BaseStreamInfo,
    ByteStreamInfo,
    ByteStreamReader,
    ByteStreamWriter,
    TextStreamInfo,
    TextStreamReader,
    TextStreamWriter,
    _BaseStreamWriter as BaseStreamWriter,
)
from ..errors import StreamError

__all__ = [
    "STREAM_CHUNK_SIZE",
    "BaseStreamInfo",
    "BaseStreamWriter",
    "ByteStreamInfo",
    "ByteStreamReader",
    "ByteStreamWriter",
    "StreamError",
    "TextStreamInfo",
    "TextStreamReader",
    "TextStreamWriter",
]
