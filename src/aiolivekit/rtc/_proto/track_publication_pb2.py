"""``livekit.rtc._proto.track_publication_pb2``: VideoQuality."""

from __future__ import annotations

from typing import NoReturn

from ...types import VideoQuality
from . import export, missing

__all__ = export(globals(), VideoQuality=VideoQuality)  # noqa: PLE0605


def __getattr__(name: str) -> NoReturn:
    missing("track_publication_pb2", name)
