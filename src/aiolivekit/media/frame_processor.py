"""``FrameProcessor`` (what ``AudioStream(noise_cancellation=...)`` runs on each frame),
``NoiseCancellationOptions`` and ``AudioFilter`` (the official SDK's native filter
plugins, which aiolivekit cannot load: constructing one raises)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import UnsupportedOptionError

__all__ = ["AudioFilter", "FrameProcessor", "NoiseCancellationOptions"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class FrameProcessor(ABC, Generic[T]):
    """A per-frame filter: ``_process(frame) -> frame`` while ``enabled``; ``_close()``
    when the stream that owns it closes. The optional hooks get the room context
    (``AudioStream`` calls them when it attaches to a remote track, and again when the
    room's token is refreshed)."""

    @property
    @abstractmethod
    def enabled(self) -> bool: ...

    @enabled.setter
    @abstractmethod
    def enabled(self, value: bool) -> None: ...

    def _on_stream_info_updated(self, *, room_name: str, participant_identity: str,
                                publication_sid: str) -> None:
        """The stream's room, participant and publication (default: ignored)."""

    def _on_stream_info_cleared(self) -> None:
        """The stream left its track (default: ignored)."""

    def _on_credentials_updated(self, *, token: str, url: str) -> None:
        """The room's token and URL (default: ignored)."""

    def _on_credentials_cleared(self) -> None:
        """The room disconnected (default: ignored)."""

    @abstractmethod
    def _process(self, frame: T) -> T: ...

    @abstractmethod
    def _close(self) -> None: ...


@dataclass
class NoiseCancellationOptions:
    """Names a native noise-cancellation module of the official SDK. Passing one to
    ``AudioStream`` raises ``UnsupportedOptionError`` (use a ``FrameProcessor``)."""

    module_id: str
    options: dict[str, Any]


class AudioFilter:
    """A native audio filter plugin of the official SDK (a shared library loaded into
    its native layer). aiolivekit has no native layer: constructing one raises
    ``UnsupportedOptionError``; a ``FrameProcessor`` is the pure-Python equivalent."""

    def __init__(self, module_id: str, path: str, dependencies: list[str] | None = None) -> None:
        raise UnsupportedOptionError(
            "AudioFilter", module_id, issue=None,
            detail=f"native audio filter plugins ({path!r}) cannot be loaded by aiolivekit; "
                   "pass a FrameProcessor to AudioStream(noise_cancellation=...) instead")
