"""Sans-I/O DataPacket codec: encoding with reliable sequencing, decoding, duplicate drop.

Every message on the ``_reliable`` / ``_lossy`` data channels is one serialized
``livekit.protocol.models.DataPacket``. Reliable packets a client sends carry a per-session
``sequence`` starting at 1; receivers drop a reliable packet whose sequence is not above the
last one seen from the same sender sid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from livekit.protocol import models as models_pb

from ..errors import PublishDataError

__all__ = [
    "DEFAULT_RELIABLE_MAX_BYTES",
    "LOSSY_MAX_BYTES",
    "RELIABLE_MAX_MESSAGE_CAP",
    "DuplicateFilter",
    "PacketEncoder",
    "check_size",
    "decode_packet",
]

logger = logging.getLogger(__name__)

#: Largest encoded lossy packet we send (one SCTP message that stays unfragmented enough).
LOSSY_MAX_BYTES = 15 * 1024
#: Reliable packet limit when the remote did not advertise ``a=max-message-size``.
DEFAULT_RELIABLE_MAX_BYTES = 65536
#: Never send reliable messages larger than this, whatever the remote advertises.
RELIABLE_MAX_MESSAGE_CAP = 256 * 1024


def check_size(size: int, *, reliable: bool, reliable_max: int = DEFAULT_RELIABLE_MAX_BYTES) -> None:
    """Raise :class:`PublishDataError` when an encoded packet of ``size`` bytes is too big."""
    if reliable:
        limit = min(reliable_max, RELIABLE_MAX_MESSAGE_CAP)
        if size > limit:
            raise PublishDataError(
                f"data packet of {size} bytes exceeds the reliable channel limit of {limit} bytes"
            )
    elif size > LOSSY_MAX_BYTES:
        raise PublishDataError(
            f"data packet of {size} bytes exceeds the lossy limit of {LOSSY_MAX_BYTES} bytes"
        )


@dataclass
class PacketEncoder:
    """Stamps outgoing packets with the sender's identity/sid and reliable sequence numbers."""

    identity: str = ""
    sid: str = ""
    next_sequence: int = 1

    def stamp(self, packet: models_pb.DataPacket, *, reliable: bool) -> models_pb.DataPacket:
        """Fill sender fields, ``kind`` and (reliable only) the next ``sequence`` in place."""
        packet.participant_identity = self.identity
        packet.participant_sid = self.sid
        packet.kind = models_pb.DataPacket.RELIABLE if reliable else models_pb.DataPacket.LOSSY
        if reliable:
            packet.sequence = self.next_sequence
            self.next_sequence += 1
        return packet

    def encode(
        self,
        packet: models_pb.DataPacket,
        *,
        reliable: bool,
        reliable_max: int = DEFAULT_RELIABLE_MAX_BYTES,
    ) -> bytes:
        """Stamp and serialize ``packet``; size-check before consuming a sequence number."""
        packet.participant_identity = self.identity
        packet.participant_sid = self.sid
        if reliable:
            packet.sequence = self.next_sequence
        data = packet.SerializeToString()
        check_size(len(data), reliable=reliable, reliable_max=reliable_max)
        self.stamp(packet, reliable=reliable)
        return packet.SerializeToString()

    def user_packet(
        self,
        payload: bytes,
        *,
        topic: str = "",
        destination_identities: Iterable[str] = (),
    ) -> models_pb.DataPacket:
        """A ``user`` DataPacket (not yet stamped)."""
        dests = list(destination_identities)
        user = models_pb.UserPacket(payload=payload, destination_identities=dests)
        if topic:
            user.topic = topic
        return models_pb.DataPacket(user=user, destination_identities=dests)


def decode_packet(data: bytes) -> models_pb.DataPacket:
    """Parse one data-channel message; ``ValueError`` if it is not a DataPacket."""
    packet = models_pb.DataPacket()
    try:
        packet.ParseFromString(bytes(data))
    except Exception as exc:  # protobuf raises DecodeError (a subclass of Exception)
        raise ValueError(f"invalid DataPacket: {exc}") from exc
    return packet


@dataclass
class DuplicateFilter:
    """Drops reliable packets already seen, by ``(participant_sid, sequence)``."""

    last: dict[str, int] = field(default_factory=dict)

    def accept(self, packet: models_pb.DataPacket, *, reliable: bool = True) -> bool:
        """True if ``packet`` is new (and records it); lossy or unsequenced packets always pass."""
        if not reliable or packet.sequence <= 0 or not packet.participant_sid:
            return True
        sid = packet.participant_sid
        seen = self.last.get(sid, 0)
        if packet.sequence <= seen:
            logger.debug("dropping duplicate packet %s#%d", sid, packet.sequence)
            return False
        self.last[sid] = packet.sequence
        return True

    def forget(self, participant_sid: str) -> None:
        """Drop the state of a participant that left."""
        self.last.pop(participant_sid, None)
