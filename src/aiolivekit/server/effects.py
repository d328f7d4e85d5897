"""The effects of room operations: what :class:`~.rooms.RoomState` asks the asyncio shell
(:class:`~.session.Hub`) to carry out, in order."""

from __future__ import annotations

from dataclasses import dataclass

from livekit.protocol import rtc as rtc_pb

__all__ = [
    "CloseSignal",
    "CloseTrack",
    "Disconnect",
    "Effect",
    "IceRestart",
    "SendData",
    "SendSignal",
    "SetPaused",
    "Subscribe",
    "Unsubscribe",
]


@dataclass
class SendSignal:
    """Send ``response`` on the signalling connection of ``participant_sid``."""

    participant_sid: str
    response: rtc_pb.SignalResponse


@dataclass
class SendData:
    """Deliver a serialized DataPacket to ``participant_sid`` on the reliable/lossy channel."""

    participant_sid: str
    payload: bytes
    reliable: bool


@dataclass
class Subscribe:
    """Forward ``track_sid`` (published by ``publisher_sid``) to ``subscriber_sid``."""

    subscriber_sid: str
    publisher_sid: str
    track_sid: str


@dataclass
class Unsubscribe:
    """Stop forwarding ``track_sid`` to ``subscriber_sid``."""

    subscriber_sid: str
    publisher_sid: str
    track_sid: str


@dataclass
class SetPaused:
    """Pause/resume forwarding of ``track_sid`` to ``subscriber_sid`` (and, for a simulcast
    track, the ``quality`` of the layer it should get, if it asked for one)."""

    subscriber_sid: str
    publisher_sid: str
    track_sid: str
    paused: bool
    quality: int | None = None


@dataclass
class CloseTrack:
    """The published track is gone: release its forwarder."""

    publisher_sid: str
    track_sid: str


@dataclass
class Disconnect:
    """Send ``LeaveRequest{reason, action}`` to ``participant_sid`` and close its session
    (``send_leave=False``: close without a Leave, like a node that went away)."""

    participant_sid: str
    reason: int
    action: int = rtc_pb.LeaveRequest.Action.DISCONNECT
    send_leave: bool = True


@dataclass
class CloseSignal:
    """Close the signalling connection of ``participant_sid`` but keep the participant (its
    peer connections and place in the room) for a resume."""

    participant_sid: str
    reason: str = ""


@dataclass
class IceRestart:
    """Send ``participant_sid`` an ICE-restart offer on its subscriber peer connection."""

    participant_sid: str


Effect = (
    SendSignal | SendData | Subscribe | Unsubscribe | SetPaused | CloseTrack | Disconnect
    | CloseSignal | IceRestart
)
