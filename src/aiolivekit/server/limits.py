"""Size and count limits of the embedded server (sans-I/O checks).

The participant limits are livekit-server's defaults (``pkg/config`` ``LimitConfig``):
metadata 512 KiB, attributes 64 KiB (keys + values), name, identity and room name 256
bytes, with its error texts, so that a client sees the same refusal from both servers.
The others bound what one connection can make the server hold: AddTrack layers and
codecs, trickle candidates waiting for a description, the signal messages queued for a
slow reader, the SCTP reassembly of one data-channel message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Callable, Mapping

from livekit.protocol import rtc as rtc_pb

__all__ = [
    "MAX_ADD_TRACK_CODECS",
    "MAX_ADD_TRACK_LAYERS",
    "MAX_ATTRIBUTES_SIZE",
    "MAX_CANDIDATE_SIZE",
    "MAX_IDENTITY_LENGTH",
    "MAX_METADATA_SIZE",
    "MAX_NAME_LENGTH",
    "MAX_OUT_QUEUE_BYTES",
    "MAX_PARTICIPANTS_EXCEEDED",
    "MAX_PENDING_CANDIDATES",
    "MAX_ROOM_NAME_LENGTH",
    "MAX_SCTP_MESSAGE_SIZE",
    "MAX_TWIRP_BODY",
    "LimitExceeded",
    "SignalQueue",
    "check_add_track",
    "check_join",
    "check_participant_fields",
    "room_full",
]

logger = logging.getLogger(__name__)

MAX_METADATA_SIZE = 512 * 1024
MAX_ATTRIBUTES_SIZE = 64 * 1024
MAX_NAME_LENGTH = 256
MAX_IDENTITY_LENGTH = 256
MAX_ROOM_NAME_LENGTH = 256

MAX_ADD_TRACK_LAYERS = 4
"""Video qualities are LOW, MEDIUM, HIGH (and OFF): more layers than this are refused."""
MAX_ADD_TRACK_CODECS = 4
"""A primary codec and its backups."""
MAX_PENDING_CANDIDATES = 64
"""Trickle candidates kept per peer connection until its remote description arrives."""
MAX_CANDIDATE_SIZE = 4096
"""A candidate line is ~100-200 bytes; a larger ``candidateInit`` is dropped."""
MAX_OUT_QUEUE_BYTES = 32 * 1024 * 1024
"""Signal bytes queued for one participant that does not read: beyond, it is disconnected."""
MAX_SCTP_MESSAGE_SIZE = 262144
"""What the server's SDP advertises (aiortc's ``a=max-message-size``): a data-channel
message being reassembled beyond it ends the participant's session."""
MAX_TWIRP_BODY = 4 * 1024 * 1024
"""A RoomService request body (the largest legitimate one, UpdateParticipant with capped
metadata and attributes in escaped JSON, stays well below)."""

MAX_PARTICIPANTS_EXCEEDED = "room has exceeded its max participants"


class LimitExceeded(ValueError):
    """A participant field over its limit. ``signal_message`` is livekit-server's
    RequestResponse text, ``twirp_message`` its Twirp ``invalid_argument`` text, ``limit``
    the number it reports."""

    def __init__(self, field: str, signal_message: str, twirp_message: str, limit: int) -> None:
        super().__init__(f"{twirp_message} {limit}")
        self.field = field
        self.signal_message = signal_message
        self.twirp_message = twirp_message
        self.limit = limit


def _attributes_size(attributes: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())


def check_participant_fields(*, name: str = "", metadata: str = "",
                             attributes: Mapping[str, str] | None = None) -> None:
    """Raise :class:`LimitExceeded` for the first field over its limit (name, metadata,
    attributes: the order livekit-server checks them in). Sizes are UTF-8 bytes."""
    if len(name.encode()) > MAX_NAME_LENGTH:
        raise LimitExceeded("name", "exceeds name length limit", "name length exceeds limits",
                            MAX_NAME_LENGTH)
    if len(metadata.encode()) > MAX_METADATA_SIZE:
        raise LimitExceeded("metadata", "exceeds metadata size limit",
                            "metadata size exceeds limits", MAX_METADATA_SIZE)
    if attributes and _attributes_size(attributes) > MAX_ATTRIBUTES_SIZE:
        raise LimitExceeded("attributes", "exceeds attributes size limit",
                            "attribute size exceeds limits", MAX_ATTRIBUTES_SIZE)


def check_join(identity: str, room_name: str, *, metadata: str = "",
               attributes: Mapping[str, str] | None = None) -> str | None:
    """Why a join token is refused (HTTP 400, as livekit-server), or ``None``."""
    if len(identity.encode()) > MAX_IDENTITY_LENGTH:
        return f"participant identity exceeds limits: max length {MAX_IDENTITY_LENGTH}"
    if len(room_name.encode()) > MAX_ROOM_NAME_LENGTH:
        return f"room name exceeds limits: max length {MAX_ROOM_NAME_LENGTH}"
    try:
        check_participant_fields(metadata=metadata, attributes=attributes)
    except LimitExceeded as exc:
        return exc.twirp_message
    return None


def room_full(max_participants: int, identities: list[str], joining: str) -> bool:
    """Whether ``joining`` would exceed ``max_participants`` (0: no limit). A participant
    rejoining with its identity replaces itself and is not counted twice."""
    if max_participants <= 0:
        return False
    return len([i for i in identities if i != joining]) >= max_participants


def check_add_track(req: rtc_pb.AddTrackRequest) -> str | None:
    """Why an AddTrackRequest is refused with ``LIMIT_EXCEEDED``, or ``None``."""
    if len(req.layers) > MAX_ADD_TRACK_LAYERS:
        return f"too many layers ({len(req.layers)} > {MAX_ADD_TRACK_LAYERS})"
    if len(req.simulcast_codecs) > MAX_ADD_TRACK_CODECS:
        return f"too many codecs ({len(req.simulcast_codecs)} > {MAX_ADD_TRACK_CODECS})"
    for codec in req.simulcast_codecs:
        if len(codec.layers) > MAX_ADD_TRACK_LAYERS:
            return f"too many layers ({len(codec.layers)} > {MAX_ADD_TRACK_LAYERS})"
    if len(req.name.encode()) > MAX_NAME_LENGTH or len(req.stream.encode()) > MAX_NAME_LENGTH \
            or len(req.sid) > MAX_NAME_LENGTH or len(req.cid) > MAX_NAME_LENGTH:
        return "track name, stream, sid or cid exceeds limits"
    if len(req.audio_features) > 16 or len(req.packet_trailer_features) > 16:
        return "too many track features"
    return None


class SignalQueue(asyncio.Queue):  # type: ignore[type-arg]
    """The outgoing signal queue of one session, bounded in bytes.

    Past ``max_bytes`` queued (a participant that stops reading its WebSocket) the queue
    empties itself, accepts nothing but the writer's end marker (``None``) and schedules
    ``on_overflow`` once: the session then disconnects that participant.
    """

    def __init__(self, on_overflow: Callable[[], None],
                 max_bytes: int = MAX_OUT_QUEUE_BYTES) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.overflowed = False
        self._on_overflow: Callable[[], Callable[[], None] | None]
        if inspect.ismethod(on_overflow):  # a bound method: no session <-> queue cycle
            self._on_overflow = weakref.WeakMethod(on_overflow)  # type: ignore[arg-type]
        else:
            self._on_overflow = lambda: on_overflow

    def put_nowait(self, item: bytes | str | None) -> None:
        if item is None:
            super().put_nowait(None)
            return
        if self.overflowed:
            return
        self.queued_bytes += len(item)
        if self.queued_bytes > self.max_bytes:
            self.overflowed = True
            while not self.empty():
                super().get_nowait()
            self.queued_bytes = 0
            callback = self._on_overflow()
            if callback is not None:
                asyncio.get_running_loop().call_soon(callback)
            return
        super().put_nowait(item)

    def get_nowait(self) -> bytes | str | None:
        item: bytes | str | None = super().get_nowait()
        if item is not None:
            self.queued_bytes -= len(item)
        return item
