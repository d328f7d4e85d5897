"""Sans-I/O DataPacket codec: encoding with reliable sequencing, decoding, duplicate drop.

Every message on the ``_reliable`` / ``_lossy`` data channels is one serialized
``livekit.protocol.models.DataPacket``. Reliable packets a client sends carry a per-session
``sequence`` starting at 1; receivers drop a reliable packet whose sequence is not above the
last one seen from the same sender sid.

:class:`ResendBuffer` keeps the last reliable packets sent (bounded), so that after a
resume the ones the server did not receive (``ReconnectResponse.last_message_seq``) are
sent again with their original sequence numbers. After a full reconnect (new sender sid)
aiolivekit goes on with the same sequence and sends again the packets the old session's
server had not acknowledged; a receiver therefore carries the last sequence of an identity
over to its new sid when that sid's first packet continues the numbering (see
:class:`DuplicateFilter`).
"""

from __future__ import annotations

import logging
from collections import deque
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
    "ResendBuffer",
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
        """Fill sender fields, ``kind`` and (reliable only) the next ``sequence`` in place.
        A ``participant_identity`` already set (a stream written on another participant's
        behalf: ``stream_text(sender_identity=...)``) is kept."""
        packet.participant_identity = packet.participant_identity or self.identity
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
        packet.participant_identity = packet.participant_identity or self.identity
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


#: A sender's new sid continues its previous sid's numbering only within this time (s)
#: of the previous sid's last packet (a full reconnect takes seconds).
CONTINUATION_WINDOW = 60.0
#: Identities remembered for that carry-over.
MAX_IDENTITIES = 1024


@dataclass
class DuplicateFilter:
    """Drops reliable packets already seen, by ``(participant_sid, sequence)``.

    A sender that reconnected in full has a new sid. When the first reliable packet from a
    new sid of an identity arrives within :data:`CONTINUATION_WINDOW` of that identity's
    last packet under its previous sid and its sequence is above 1 (the numbering goes
    on: a new session of the official SDKs starts again at 1), the previous sid's last
    sequence applies to the new sid: packets sent again after the reconnect are dropped
    if they had arrived before. ``now`` is any monotonic clock (seconds).
    """

    last: dict[str, int] = field(default_factory=dict)
    #: identity -> (sid, last sequence, time of that packet)
    identities: dict[str, tuple[str, int, float]] = field(default_factory=dict)

    def accept(self, packet: models_pb.DataPacket, *, reliable: bool = True,
               now: float = 0.0) -> bool:
        """True if ``packet`` is new (and records it); lossy or unsequenced packets always pass."""
        if not reliable or packet.sequence <= 0 or not packet.participant_sid:
            return True
        sid = packet.participant_sid
        seen = self.last.get(sid)
        if seen is None:
            seen = self._carried_over(packet, now)
        if packet.sequence <= seen:
            logger.debug("dropping duplicate packet %s#%d", sid, packet.sequence)
            if seen > self.last.get(sid, 0):
                self.last[sid] = seen
            return False
        self.last[sid] = packet.sequence
        identity = packet.participant_identity
        if identity:
            self.identities.pop(identity, None)  # most recent last (bounded, oldest first out)
            self.identities[identity] = (sid, packet.sequence, now)
            if len(self.identities) > MAX_IDENTITIES:
                del self.identities[next(iter(self.identities))]
        return True

    def _carried_over(self, packet: models_pb.DataPacket, now: float) -> int:
        previous = self.identities.get(packet.participant_identity)
        if previous is None or previous[0] == packet.participant_sid:
            return 0
        _, seq, when = previous
        if packet.sequence > 1 and now - when <= CONTINUATION_WINDOW:
            logger.debug("%s: new sid %s goes on from sequence %d", packet.participant_identity,
                         packet.participant_sid, seq)
            return seq
        return 0

    def forget(self, participant_sid: str) -> None:
        """Drop the state of a participant that left."""
        self.last.pop(participant_sid, None)


#: Default bounds of the :class:`ResendBuffer`.
RESEND_MAX_PACKETS = 4096
RESEND_MAX_BYTES = 8 * 1024 * 1024


class ResendBuffer:
    """Reliable packets sent and not yet known to be received, by sequence (bounded).

    ``add`` records an encoded packet; the oldest entries are dropped beyond
    ``max_packets`` / ``max_bytes`` (counted in :attr:`evicted`: a resume that needs one
    of them cannot make up for it). ``after(last_seq)`` forgets everything up to the
    sequence the server reports and returns the rest, in order, to send again.
    """

    def __init__(self, max_packets: int = RESEND_MAX_PACKETS,
                 max_bytes: int = RESEND_MAX_BYTES) -> None:
        if max_packets < 1 or max_bytes < 1:
            raise ValueError("ResendBuffer bounds must be positive")
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self._items: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        self.evicted = 0
        self.evicted_up_to = 0  # highest sequence dropped for room

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes

    def add(self, sequence: int, data: bytes) -> None:
        """Record the encoded packet carrying ``sequence`` (increasing)."""
        if sequence <= 0:
            raise ValueError("only sequenced reliable packets are buffered")
        if self._items and sequence <= self._items[-1][0]:
            raise ValueError(f"sequence {sequence} is not above {self._items[-1][0]}")
        self._items.append((sequence, bytes(data)))
        self._bytes += len(data)
        while self._items and (len(self._items) > self.max_packets
                               or self._bytes > self.max_bytes):
            seq, old = self._items.popleft()
            self._bytes -= len(old)
            self.evicted += 1
            self.evicted_up_to = seq

    def acknowledge(self, last_seq: int) -> None:
        """Forget the packets with a sequence up to ``last_seq`` (received)."""
        while self._items and self._items[0][0] <= last_seq:
            _, old = self._items.popleft()
            self._bytes -= len(old)

    def after(self, last_seq: int) -> list[tuple[int, bytes]]:
        """Acknowledge up to ``last_seq`` and return the packets after it, in order.

        Logs a warning when packets after ``last_seq`` were already evicted (lost)."""
        if self.evicted_up_to > last_seq:
            logger.warning("reliable packets %d..%d were evicted from the resend buffer "
                           "before the server confirmed them", last_seq + 1,
                           self.evicted_up_to)
        self.acknowledge(last_seq)
        return list(self._items)

    def last(self, count: int) -> list[tuple[int, bytes]]:
        """The last ``count`` packets recorded, in order (fewer if fewer are held)."""
        if count <= 0:
            return []
        return list(self._items)[-count:]

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
