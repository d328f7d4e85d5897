"""Data tracks (``LocalParticipant.publish_data_track``, ``RemoteDataTrack``): the
records are real; the track and stream objects raise ``UnsupportedOptionError`` when
constructed or used, until aiolivekit carries data tracks (issue 15, later step)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

from .errors import UnsupportedOptionError

__all__ = [
    "DataTrackFrame",
    "DataTrackInfo",
    "DataTrackStream",
    "LocalDataTrack",
    "PublishDataTrackError",
    "PushFrameError",
    "RemoteDataTrack",
    "SubscribeDataTrackError",
]

logger = logging.getLogger(__name__)

ISSUE_DATA_TRACKS = 15


def _unsupported(what: str) -> NoReturn:
    raise UnsupportedOptionError(what, "used", issue=ISSUE_DATA_TRACKS,
                                 detail="data tracks are not implemented yet")


@dataclass
class DataTrackFrame:
    payload: bytes
    user_timestamp: int | None = None


@dataclass
class DataTrackInfo:
    sid: str
    name: str
    uses_e2ee: bool


class PushFrameError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PublishDataTrackError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SubscribeDataTrackError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LocalDataTrack:
    """A published data track; raises: data tracks are not implemented yet."""

    def __init__(self, owned_info: Any) -> None:
        _unsupported("LocalDataTrack")

    @property
    def info(self) -> DataTrackInfo:
        _unsupported("LocalDataTrack.info")

    def try_push(self, frame: DataTrackFrame) -> None:
        _unsupported("LocalDataTrack.try_push")

    def is_published(self) -> bool:
        _unsupported("LocalDataTrack.is_published")

    async def unpublish(self) -> None:
        _unsupported("LocalDataTrack.unpublish")


class RemoteDataTrack:
    """A remote participant's data track; raises: data tracks are not implemented yet."""

    def __init__(self, owned_info: Any) -> None:
        _unsupported("RemoteDataTrack")

    @property
    def info(self) -> DataTrackInfo:
        _unsupported("RemoteDataTrack.info")

    @property
    def publisher_identity(self) -> str:
        _unsupported("RemoteDataTrack.publisher_identity")

    def is_published(self) -> bool:
        _unsupported("RemoteDataTrack.is_published")

    def subscribe(self, *, buffer_size: int | None = None) -> DataTrackStream:
        _unsupported("RemoteDataTrack.subscribe")

    def set_pipeline_options(self, *, max_partial_frames: int | None = None) -> None:
        _unsupported("RemoteDataTrack.set_pipeline_options")


class DataTrackStream:
    """Frames of a subscribed data track; raises: data tracks are not implemented yet."""

    def __init__(self, owned_info: Any) -> None:
        _unsupported("DataTrackStream")

    def __aiter__(self) -> AsyncIterator[DataTrackFrame]:
        _unsupported("DataTrackStream")

    async def __anext__(self) -> DataTrackFrame:
        _unsupported("DataTrackStream")

    async def read(self) -> DataTrackFrame | None:
        _unsupported("DataTrackStream.read")

    def close(self) -> None:
        _unsupported("DataTrackStream.close")

    async def aclose(self) -> None:
        _unsupported("DataTrackStream.aclose")
