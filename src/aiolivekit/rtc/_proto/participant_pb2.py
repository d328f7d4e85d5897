"""``livekit.rtc._proto.participant_pb2``: participant enums."""

from __future__ import annotations

from typing import NoReturn

from ...types import DisconnectReason, ParticipantKind, ParticipantState
from ...types_ext import ParticipantKindDetail
from . import export, missing

__all__ = export(globals(), DisconnectReason=DisconnectReason, ParticipantKind=ParticipantKind,  # noqa: PLE0605
                 ParticipantKindDetail=ParticipantKindDetail, ParticipantState=ParticipantState)


def __getattr__(name: str) -> NoReturn:
    missing("participant_pb2", name)
