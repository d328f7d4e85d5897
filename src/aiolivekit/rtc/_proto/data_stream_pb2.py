"""``livekit.rtc._proto.data_stream_pb2``: FFI messages of the official native layer; no aiolivekit equivalent (every name raises AttributeError saying so)."""

from __future__ import annotations

from typing import NoReturn

from . import missing

__all__: list[str] = []


def __getattr__(name: str) -> NoReturn:
    missing("data_stream_pb2", name)
