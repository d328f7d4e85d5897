"""In-memory wiring for data-layer tests: DataManagers connected through a fake SFU.

The fake SFU serialises every packet (as the data channel would), stamps the sender
identity, and delivers to every other participant or to the named destinations, in
order, after one event-loop turn. It records what went over the wire.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from livekit.protocol import models as models_pb

from aiolivekit.data.manager import DataManager
from aiolivekit.errors import PublishDataError


@dataclass
class FakeParticipant:
    identity: str
    track_publications: dict[str, Any] = field(default_factory=dict)


class Hub:
    """A fake room: identity -> (DataManager, announced client protocol)."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.wire: list[tuple[str, models_pb.DataPacket]] = []
        self.drop_from: set[str] = set()  # senders whose packets vanish

    def join(self, identity: str, protocol: int = 2, **kwargs: Any) -> Member:
        member = Member(self, identity, protocol, **kwargs)
        self.members[identity] = member
        member.manager.attach(member)
        return member

    def leave(self, identity: str) -> None:
        member = self.members.pop(identity)
        member.connected = False
        member.manager.close()
        for other in self.members.values():
            other.manager.on_participant_disconnected(identity)

    def sent_by(self, identity: str) -> list[models_pb.DataPacket]:
        return [p for who, p in self.wire if who == identity]

    def deliver(self, sender: str, raw: bytes) -> None:
        packet = models_pb.DataPacket.FromString(raw)
        # a sender-set identity (a stream written on another's behalf) is kept, as
        # livekit-server keeps it; otherwise the hub stamps the sender, as a server does
        packet.participant_identity = packet.participant_identity or sender
        self.wire.append((sender, packet))
        if sender in self.drop_from:
            return
        targets = list(packet.destination_identities) or [
            i for i in self.members if i != sender
        ]
        for identity in targets:
            member = self.members.get(identity)
            if member is not None and identity != sender:
                member.manager.handle_packet(models_pb.DataPacket.FromString(
                    packet.SerializeToString()))


class Member:
    """One participant: its DataManager, the DataSender it is attached to, its events."""

    def __init__(self, hub: Hub, identity: str, protocol: int, *,
                 capabilities: tuple[int, ...] = (), **kwargs: Any) -> None:
        self.hub = hub
        self.capabilities = capabilities
        self.identity = identity
        self.protocol = protocol
        self.connected = True
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.participant = FakeParticipant(identity)
        self.manager = DataManager(self._emit, self._lookup, **kwargs)
        self.manager.local_client_protocol = protocol  # behave like a client of that level

    def _emit(self, event: str, *args: Any) -> None:
        self.events.append((event, args))

    def _lookup(self, identity: str) -> Any:
        member = self.hub.members.get(identity)
        return None if member is None else member.participant

    # DataSender
    @property
    def local_identity(self) -> str:
        return self.identity

    async def send_packet(self, packet: models_pb.DataPacket, *, reliable: bool = True) -> None:
        if not self.connected:
            raise PublishDataError("not connected")
        raw = packet.SerializeToString()
        await asyncio.sleep(0)
        self.hub.deliver(self.identity, raw)

    def remote_client_protocol(self, identity: str) -> int | None:
        member = self.hub.members.get(identity)
        return None if member is None else member.protocol

    # optional DataSender extras
    def remote_identities(self) -> list[str]:
        return [i for i in self.hub.members if i != self.identity]

    def remote_capabilities(self, identity: str) -> list[int] | None:
        member = self.hub.members.get(identity)
        return None if member is None else list(member.capabilities)
