"""Participants: the local one (publishes tracks and data) and the remote ones."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from livekit.protocol import models as models_pb, rtc as rtc_pb

from .data.api import LocalParticipantDataMixin
from .track_publication import (
    LocalTrackPublication,
    RemoteTrackPublication,
    TrackPublication,
)
from .types import (
    ConnectionQuality,
    DisconnectReason,
    ParticipantKind,
    ParticipantState,
    ParticipantTrackPermission,
    TrackPublishOptions,
)

if TYPE_CHECKING:
    from .room import Room

__all__ = ["LocalParticipant", "Participant", "RemoteParticipant"]

logger = logging.getLogger(__name__)

_KIND: dict[int, ParticipantKind] = {
    models_pb.ParticipantInfo.STANDARD: ParticipantKind.PARTICIPANT_KIND_STANDARD,
    models_pb.ParticipantInfo.INGRESS: ParticipantKind.PARTICIPANT_KIND_INGRESS,
    models_pb.ParticipantInfo.EGRESS: ParticipantKind.PARTICIPANT_KIND_EGRESS,
    models_pb.ParticipantInfo.SIP: ParticipantKind.PARTICIPANT_KIND_SIP,
    models_pb.ParticipantInfo.AGENT: ParticipantKind.PARTICIPANT_KIND_AGENT,
}
for _name, _ours in (("CONNECTOR", ParticipantKind.PARTICIPANT_KIND_CONNECTOR),
                     ("BRIDGE", ParticipantKind.PARTICIPANT_KIND_BRIDGE)):
    if _name in models_pb.ParticipantInfo.Kind.keys():
        _KIND[models_pb.ParticipantInfo.Kind.Value(_name)] = _ours


class Participant:
    """Common read-only view of a participant (from the server's ParticipantInfo)."""

    def __init__(self, info: models_pb.ParticipantInfo) -> None:
        self._info = models_pb.ParticipantInfo()
        self._info.CopyFrom(info)
        self._track_publications: dict[str, TrackPublication] = {}
        self._disconnect_reason: DisconnectReason | None = None
        self._connection_quality = ConnectionQuality.QUALITY_UNKNOWN

    def _update_info(self, info: models_pb.ParticipantInfo) -> None:
        self._info.CopyFrom(info)

    @property
    def sid(self) -> str:
        return self._info.sid

    @property
    def identity(self) -> str:
        return self._info.identity

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def metadata(self) -> str:
        return self._info.metadata

    @property
    def attributes(self) -> dict[str, str]:
        """A copy of the participant's attributes."""
        return dict(self._info.attributes)

    @property
    def kind(self) -> ParticipantKind:
        return _KIND.get(self._info.kind, ParticipantKind.PARTICIPANT_KIND_STANDARD)

    @property
    def state(self) -> ParticipantState:
        try:
            return ParticipantState(int(self._info.state))
        except ValueError:
            return ParticipantState.PARTICIPANT_STATE_JOINING

    @property
    def joined_at(self) -> datetime | None:
        ms = self._info.joined_at_ms or self._info.joined_at * 1000
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms else None

    @property
    def permissions(self) -> models_pb.ParticipantPermission:
        out = models_pb.ParticipantPermission()
        out.CopyFrom(self._info.permission)
        return out

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        return self._disconnect_reason

    @property
    def connection_quality(self) -> ConnectionQuality:
        return self._connection_quality

    @property
    def track_publications(self) -> Mapping[str, TrackPublication]:
        return self._track_publications

    def __repr__(self) -> str:
        return f"rtc.{type(self).__name__}(sid={self.sid}, identity={self.identity}, name={self.name})"


class RemoteParticipant(Participant):
    """Another participant in the room."""

    @property
    def track_publications(self) -> Mapping[str, RemoteTrackPublication]:
        return self._track_publications  # type: ignore[return-value]


class LocalParticipant(LocalParticipantDataMixin, Participant):
    """This client's participant: publishes tracks and data, updates its own info."""

    def __init__(self, info: models_pb.ParticipantInfo, room: Room) -> None:
        Participant.__init__(self, info)
        self._room = room
        self._data = room._data

    @property
    def track_publications(self) -> Mapping[str, LocalTrackPublication]:
        return self._track_publications  # type: ignore[return-value]

    # ---------------------------------------------------------------- data

    async def publish_data(
        self,
        payload: bytes | str,
        *,
        reliable: bool = True,
        destination_identities: Sequence[str] = (),
        topic: str = "",
    ) -> None:
        """Send a user packet to everyone (or to ``destination_identities``)."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError("payload must be bytes or str")
        if isinstance(destination_identities, str):
            destination_identities = [destination_identities]
        await self._room._publish_user_data(
            bytes(payload), reliable=reliable,
            destination_identities=list(destination_identities), topic=topic)

    # ---------------------------------------------------------------- own info

    async def set_metadata(self, metadata: str) -> None:
        """Change this participant's metadata (needs canUpdateOwnMetadata)."""
        await self._room._update_own_info(metadata=metadata)

    async def set_name(self, name: str) -> None:
        """Change this participant's name (needs canUpdateOwnMetadata)."""
        await self._room._update_own_info(name=name)

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        """Set (merge) attributes; an empty value deletes a key (needs canUpdateOwnMetadata)."""
        await self._room._update_own_info(attributes=dict(attributes))

    def set_track_subscription_permissions(
        self,
        *,
        allow_all_participants: bool,
        participant_permissions: list[ParticipantTrackPermission] | None = None,
    ) -> None:
        """Restrict which participants may subscribe to this participant's tracks."""
        perms = []
        for p in participant_permissions or []:
            perms.append(rtc_pb.TrackPermission(
                participant_identity=p.participant_identity, all_tracks=p.allow_all,
                track_sids=list(p.allowed_track_sids)))
        self._room._send_subscription_permission(rtc_pb.SubscriptionPermission(
            all_participants=allow_all_participants, track_permissions=perms))

    # ---------------------------------------------------------------- tracks

    async def publish_track(
        self, track: Any, options: TrackPublishOptions | None = None
    ) -> LocalTrackPublication:
        """Publish a LocalAudioTrack / LocalVideoTrack; returns its publication."""
        return await self._room._publish_track(track, options or TrackPublishOptions())

    async def unpublish_track(self, track_sid: str) -> None:
        """Stop publishing the track with ``track_sid``."""
        await self._room._unpublish_track(track_sid)
