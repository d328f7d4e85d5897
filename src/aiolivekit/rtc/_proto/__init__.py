"""``livekit.rtc._proto``: the official SDK's FFI protobuf modules, as far as code uses
them outside the SDK (mostly enums: ``rtc._proto.track_pb2.AudioTrackFeature``).

Each ``*_pb2`` module here exports aiolivekit's enums under the official enum names,
each enum's values as module constants (as protobuf does), and the option messages
aiolivekit has as records. Names of FFI requests, responses and events have no
equivalent: they raise ``AttributeError`` saying so.
"""

from __future__ import annotations

import enum
import importlib
from typing import Any, NoReturn

MODULES = frozenset({
    "audio_frame_pb2", "capture_pb2", "data_stream_pb2", "data_track_pb2", "e2ee_pb2",
    "ffi_pb2", "handle_pb2", "participant_pb2", "room_pb2", "rpc_pb2", "stats_pb2",
    "track_pb2", "track_publication_pb2", "video_frame_pb2",
})


def __getattr__(name: str) -> Any:
    """``rtc._proto.track_pb2`` works without importing the submodule first."""
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export(namespace: dict[str, Any], **enums: type[enum.IntEnum]) -> list[str]:
    """Put each enum (under the given name) and its members in ``namespace``; returns
    the names, for ``__all__``."""
    names = []
    for name, cls in enums.items():
        namespace[name] = cls
        names.append(name)
        for member in cls:
            namespace[member.name] = member
            names.append(member.name)
    return names


def missing(module: str, name: str) -> NoReturn:
    """The module ``__getattr__`` of the ``*_pb2`` modules."""
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"aiolivekit.rtc._proto.{module}.{name}: an FFI message or enum of the official "
        "SDK's native layer, which aiolivekit has no equivalent of (only the enums and "
        "option messages of the public API are provided)")
