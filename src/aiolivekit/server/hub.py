"""The live sessions of one server and the executor of the rooms' effects (the
:class:`Hub`), and one signal WebSocket attached to a session (:class:`SignalLink`)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from aiortc import RTCPeerConnection
from livekit.protocol import models as models_pb, rtc as rtc_pb

from . import http_guard, limits
from .announce import Announce, announce_candidates
from .config import ForwardingOptions
from .observers import RoomObservers
from .rooms import (
    PING_TIMEOUT,
    CloseSignal,
    CloseTrack,
    Disconnect,
    Effect,
    IceRestart,
    RoomManager,
    RoomState,
    SendData,
    SendSignal,
    SetPaused,
    Subscribe,
    Unsubscribe,
)

if TYPE_CHECKING:  # pragma: no cover
    from aiortc import RTCRtpTransceiver

__all__ = ["CLOSE_FLUSH_TIMEOUT", "SEND_TIMEOUT", "ForwarderLike", "Hub", "SessionLike",
           "SignalLink"]

logger = logging.getLogger(__name__)

SEND_TIMEOUT = 10.0
CLOSE_FLUSH_TIMEOUT = 0.5


class ForwarderLike(Protocol):
    """The interface of ``server.forwarder.TrackForwarder`` this module relies on."""

    def add_subscriber(self, pc: RTCPeerConnection, *, stream_id: str,
                       track_id: str) -> RTCRtpTransceiver: ...

    def remove_subscriber(self, pc: RTCPeerConnection) -> None: ...

    def set_paused(self, pc: RTCPeerConnection, paused: bool) -> None: ...

    def set_quality(self, pc: RTCPeerConnection, quality: int) -> None: ...

    def close(self) -> None: ...



class SessionLike(Protocol):
    """What the hub needs of a participant session (``session.ParticipantSession``)."""

    forwarders: dict[str, ForwarderLike]
    closed: asyncio.Event

    def send_signal(self, response: rtc_pb.SignalResponse) -> None: ...

    def send_data(self, payload: bytes, reliable: bool) -> None: ...

    def add_subscription(self, track_sid: str, publisher_sid: str,
                         fwd: ForwarderLike) -> None: ...

    def remove_subscription(self, track_sid: str) -> None: ...

    def set_paused(self, track_sid: str, paused: bool, quality: int | None = None) -> None: ...

    def close_track(self, track_sid: str) -> None: ...

    def disconnect(self, reason: int, action: int, *, send_leave: bool = True) -> None: ...

    def close_signal(self, reason: str) -> None: ...

    def restart_ice(self) -> None: ...


class Hub:
    """The live sessions of one server and the executor of room effects."""

    def __init__(self, rooms: RoomManager, bind_addresses: list[str] | None,
                 forwarding: ForwardingOptions | None = None, *,
                 ping_timeout: float = PING_TIMEOUT, announce: Announce | None = None) -> None:
        self.rooms = rooms
        self.announce = announce
        self.bind_addresses = bind_addresses
        self.forwarding = forwarding if forwarding is not None else ForwardingOptions()
        self.ping_timeout = ping_timeout
        self.sessions: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._departures: asyncio.Task[None] | None = None
        self._departures_changed = asyncio.Event()
        self.observers = RoomObservers(rooms, self.sessions, self.dispatch)
        self._observer_task: asyncio.Task[None] | None = None

    def announce_candidates(self, response: rtc_pb.SignalResponse, identity: str) -> None:
        """The test hook ``ServerConfig.announce`` applied to an outgoing signal message."""
        if self.announce is not None:
            announce_candidates(response, self.announce, identity)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """A task owned by the hub (cancelled by :meth:`close_all`)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def departures_changed(self) -> None:
        """A departure deadline was set or cleared: (re)arm the departure timer."""
        self._departures_changed.set()
        if self._departures is None or self._departures.done():
            self._departures = asyncio.ensure_future(self._departure_loop())

    async def _departure_loop(self) -> None:
        """Sleep until the next departure deadline of the rooms' sans-I/O state, then
        carry out the departures that are due (wall-clock time, as in the rooms)."""
        while True:
            self._departures_changed.clear()
            deadline = self.rooms.next_departure()
            if deadline is None:
                return
            delay = deadline - time.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._departures_changed.wait(), delay)
                    continue
                except asyncio.TimeoutError:
                    pass
            self.dispatch(self.rooms.expire_departures(time.time()))

    def dispatch(self, effects: list[Effect]) -> None:
        """Carry out ``effects`` in order."""
        for e in effects:
            try:
                self._dispatch_one(e)
            except Exception:  # one broken session must not stop the others
                logger.exception("failed to carry out %r", type(e).__name__)

    def _dispatch_one(self, e: Effect) -> None:
        if isinstance(e, SendSignal):
            s = self.sessions.get(e.participant_sid)
            if s is not None:
                s.send_signal(e.response)
        elif isinstance(e, SendData):
            s = self.sessions.get(e.participant_sid)
            if s is not None:
                s.send_data(e.payload, e.reliable)
        elif isinstance(e, Subscribe):
            sub = self.sessions.get(e.subscriber_sid)
            pub = self.sessions.get(e.publisher_sid)
            if sub is None or pub is None:
                return
            fwd = pub.forwarders.get(e.track_sid)
            if fwd is None:
                logger.debug("no forwarder for %s; subscription is signalling-only", e.track_sid)
                return
            sub.add_subscription(e.track_sid, e.publisher_sid, fwd)
            if getattr(fwd, "on_subscribed_qualities", False) is None:  # simulcast: dynacast
                fwd.on_subscribed_qualities = functools.partial(  # type: ignore[attr-defined]
                    _send_subscribed_qualities, pub, e.track_sid, fwd)
        elif isinstance(e, Unsubscribe):
            sub = self.sessions.get(e.subscriber_sid)
            if sub is not None:
                sub.remove_subscription(e.track_sid)
        elif isinstance(e, SetPaused):
            sub = self.sessions.get(e.subscriber_sid)
            if sub is not None:
                sub.set_paused(e.track_sid, e.paused, e.quality)
        elif isinstance(e, CloseTrack):
            pub = self.sessions.get(e.publisher_sid)
            if pub is not None:
                pub.close_track(e.track_sid)
        elif isinstance(e, Disconnect):
            s = self.sessions.get(e.participant_sid)
            if s is not None:
                s.disconnect(e.reason, e.action, send_leave=e.send_leave)
        elif isinstance(e, CloseSignal):
            s = self.sessions.get(e.participant_sid)
            if s is not None:
                s.close_signal(e.reason)
        elif isinstance(e, IceRestart):
            s = self.sessions.get(e.participant_sid)
            if s is not None:
                s.restart_ice()

    def start(self) -> None:
        """Start the speaker / connection-quality observers (in the running loop)."""
        if self._observer_task is None or self._observer_task.done():
            self._observer_task = asyncio.ensure_future(self.observers.run())

    def simulate_speaker(self, room: RoomState, sid: str, seconds: float) -> None:
        """SimulateScenario speaker_update: ``sid`` speaks (level 0.9) for ``seconds``."""
        self.observers.simulate_speaker(room, sid, seconds)

    async def close_all(self, reason: int = models_pb.DisconnectReason.SERVER_SHUTDOWN) -> None:
        if self._departures is not None:
            self._departures.cancel()
        if self._observer_task is not None:
            self._observer_task.cancel()
        sessions = list(self.sessions.values())
        for s in sessions:
            s.disconnect(reason, rtc_pb.LeaveRequest.Action.DISCONNECT)
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.closed.wait()) for s in sessions],
                               timeout=5.0)
        for task in list(self._tasks):
            task.cancel()


class SignalLink:
    """One WebSocket attached to a session: its send queue and writer task."""

    def __init__(self, ws: web.WebSocketResponse, sid: str,
                 on_overflow: Callable[[], None]) -> None:
        self.ws = ws
        self.sid = sid
        # bounded in bytes: a participant that stops reading is disconnected (on_overflow)
        self.out: asyncio.Queue[bytes | str | None] = limits.SignalQueue(on_overflow)
        self.failed = False
        self.writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        while True:
            data = await self.out.get()
            if data is None:
                return
            try:
                if isinstance(data, str):
                    await asyncio.wait_for(self.ws.send_str(data), SEND_TIMEOUT)
                else:
                    await asyncio.wait_for(self.ws.send_bytes(data), SEND_TIMEOUT)
            except Exception as exc:  # includes asyncio.TimeoutError
                logger.debug("session %s: send failed: %r", self.sid, exc, exc_info=True)
                exc.__traceback__ = None  # its frames (and the session) must not outlive it
                self.failed = True
                return

    def close_soon(self) -> asyncio.Task[None]:
        """Flush what is queued (bounded), then close the WebSocket."""
        self.out.put_nowait(None)

        async def close() -> None:
            try:
                await asyncio.wait_for(asyncio.shield(self.writer), CLOSE_FLUSH_TIMEOUT)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self.writer.cancel()
            try:
                await asyncio.wait_for(self.ws.close(), 2.0)
            except Exception:
                logger.debug("session %s: closing the WebSocket failed", self.sid,
                             exc_info=True)
                http_guard.abort_websocket(self.ws)

        return asyncio.ensure_future(close())


def _send_subscribed_qualities(pub: SessionLike, track_sid: str, fwd: ForwarderLike,
                               qualities: dict[int, bool]) -> None:
    """SubscribedQualityUpdate: which layers of a simulcast track anyone wants."""
    wanted = [rtc_pb.SubscribedQuality(quality=q, enabled=on)  # type: ignore[arg-type]
              for q, on in sorted(qualities.items())]
    mime = str(getattr(fwd, "mime_type", None) or "video/vp8")
    codec = rtc_pb.SubscribedCodec(codec=mime.split("/")[-1].lower(), qualities=wanted)
    pub.send_signal(rtc_pb.SignalResponse(subscribed_quality_update=rtc_pb.SubscribedQualityUpdate(
        track_sid=track_sid, subscribed_qualities=wanted, subscribed_codecs=[codec])))
