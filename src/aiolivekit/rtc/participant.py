"""``livekit.rtc.participant`` names: participants and their errors, from aiolivekit's implementation."""

from __future__ import annotations

from ..data_track import PublishDataTrackError
from ..errors import (
    PublishDataError,
    PublishDTMFError,
    PublishTrackError,
    PublishTranscriptionError,
    UnpublishTrackError,
)
from ..participant import (
    LocalParticipant,
    Participant,
    RemoteParticipant,
)
from ..types import ConnectionQuality
from ..types_ext import (
    DegradationPreference,
    ProtoDegradationPreference,
)

ProtoConnectionQuality = ConnectionQuality  # the official module's name for the proto enum

__all__ = [
    "ConnectionQuality",
    "DegradationPreference",
    "LocalParticipant",
    "Participant",
    "ProtoConnectionQuality",
    "ProtoDegradationPreference",
    "PublishDTMFError",
    "PublishDataError",
    "PublishDataTrackError",
    "PublishTrackError",
    "PublishTranscriptionError",
    "RemoteParticipant",
    "UnpublishTrackError",
]
