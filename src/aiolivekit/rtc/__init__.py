"""``from aiolivekit import rtc``: the public names as one namespace, like ``livekit.rtc``.

The submodules of ``livekit.rtc`` are here too (``aiolivekit.rtc.room``,
``aiolivekit.rtc.audio_stream``, ``aiolivekit.rtc._proto.track_pb2`` ...): thin modules
that re-export aiolivekit's implementations under the official module names, so that
``from livekit.rtc.participant import PublishTrackError`` style imports have an
equivalent. ``rtc.stats`` is a module too.
"""

from __future__ import annotations

import importlib
from typing import Any

import aiolivekit as _pkg

__all__ = [n for n in _pkg.__all__ if n != "rtc"]

# submodules of livekit.rtc 1.2.1 with an aiolivekit equivalent here
SUBMODULES = frozenset({
    "_proto", "apm", "audio_filter", "audio_frame", "audio_mixer", "audio_resampler",
    "audio_source", "audio_stream", "data_stream", "data_track", "e2ee", "encoded_video",
    "event_emitter", "frame_processor", "log", "media_devices", "participant",
    "platform_audio", "room", "rpc", "stats", "synchronizer", "track", "track_publication",
    "transcription", "utils", "version", "video_frame", "video_source", "video_stream",
})


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in __all__:
        return getattr(_pkg, name)
    raise AttributeError(f"module 'aiolivekit.rtc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | SUBMODULES)
