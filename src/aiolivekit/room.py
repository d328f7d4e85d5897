"""Room: the public entry point. Connects the engine and turns its events into user events.

All user-visible state (participants, publications, tracks, room info) is changed by the
Room (here and in :mod:`.room_events`, its participant and track event handlers), in the
same step as the event that announces it, so what a handler reads is consistent with the
events already emitted. Publishing is the :class:`~.participant.LocalParticipant`'s and
the engine's (``engine.publishing``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from livekit.protocol import models as models_pb

from . import options_check
from .data import packets
from .data.api import RoomDataMixin
from .data.manager import CLIENT_CAPABILITIES, CLIENT_PROTOCOL, DataManager
from .engine import engine as eng, signal as sig
from .errors import ConnectError, PublishDataError
from .events import EventEmitter
from .participant import LocalParticipant, Participant, RemoteParticipant
from .room_e2ee import RoomE2EE
from .room_events import RoomEventHandlers
from .room_reconnect import RoomReconnect
from .track_publication import RemoteTrackPublication
from .types import (
    ConnectionState,
    DataPacket,
    DataPacketKind,
    DisconnectReason,
    RoomOptions,
    SimulateScenarioKind,
)

__all__ = ["EventTypes", "Room"]

logger = logging.getLogger(__name__)

EventTypes = Literal[
    "participant_connected", "participant_disconnected", "participant_active",
    "local_track_published", "local_track_unpublished", "local_track_subscribed",
    "track_published", "track_unpublished", "track_subscribed", "track_unsubscribed",
    "track_subscription_failed", "track_muted", "track_unmuted", "active_speakers_changed",
    "room_metadata_changed", "participant_metadata_changed", "participant_name_changed",
    "participant_attributes_changed", "connection_quality_changed",
    "participant_permissions_changed", "data_received", "sip_dtmf_received",
    "transcription_received", "e2ee_state_changed", "connection_state_changed", "connected",
    "disconnected", "reconnecting", "reconnected", "room_updated", "token_refreshed",
    "local_track_republished", "moved", "participant_encryption_status_changed",
]


class _DataSender:
    """The engine side of the data layer's ``DataSender`` protocol."""

    def __init__(self, room: Room) -> None:
        self._room = room

    @property
    def local_identity(self) -> str:
        lp = self._room._local
        return lp.identity if lp is not None else ""

    async def send_packet(self, packet: models_pb.DataPacket, *, reliable: bool = True) -> None:
        await self._room._send_packet(packet, reliable=reliable)

    def remote_client_protocol(self, identity: str) -> int | None:
        p = self._room._remote.get(identity)
        return None if p is None else int(p._info.client_protocol)

    def remote_identities(self) -> list[str]:
        return list(self._room._remote)

    def remote_capabilities(self, identity: str) -> list[int] | None:
        p = self._room._remote.get(identity)
        return None if p is None else [int(c) for c in p._info.capabilities]


class Room(RoomReconnect, RoomEventHandlers, RoomE2EE, RoomDataMixin, EventEmitter[EventTypes]):
    """A LiveKit room: ``await room.connect(url, token)``, then events and participants."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """A room to :meth:`connect` to; ``loop``, when given, must be the event loop
        that later awaits :meth:`connect` (``ValueError`` otherwise)."""
        EventEmitter.__init__(self)
        self._loop = loop
        self._engine: eng.RtcEngine | None = None
        self._state = ConnectionState.CONN_DISCONNECTED
        self._info = models_pb.Room()
        self._local: LocalParticipant | None = None
        self._remote: dict[str, RemoteParticipant] = {}
        self._by_sid: dict[str, RemoteParticipant] = {}
        self._sid_waiters: list[asyncio.Future[str]] = []
        self._connecting = False
        self._encoder = packets.PacketEncoder()
        self._dup = packets.DuplicateFilter()
        self._pending_tracks: dict[str, tuple[float, eng.TrackReceived]] = {}
        self._active_speakers: list[Participant] = []
        self._token = ""
        self._url = ""
        self._options = RoomOptions()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._data = DataManager(emit=self.emit, lookup_participant=self._participant_by_identity)
        self._rejoining = False
        self._init_reconnect()
        self._init_e2ee()

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def metadata(self) -> str:
        return self._info.metadata

    @property
    def sid(self) -> Any:
        """Awaitable: ``await room.sid`` (waits for the server's room sid while connecting)."""
        return self._get_sid()

    async def _get_sid(self) -> str:
        if not self._connecting and self._state == ConnectionState.CONN_DISCONNECTED:
            raise RuntimeError("cannot get sid of a disconnected room")
        if self._info.sid:
            return self._info.sid
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._sid_waiters.append(fut)
        return await asyncio.shield(fut)

    def _resolve_sid(self) -> None:
        if self._info.sid:
            for fut in self._sid_waiters:
                if not fut.done():
                    fut.set_result(self._info.sid)
            self._sid_waiters.clear()

    def _fail_sid_waiters(self) -> None:
        for fut in self._sid_waiters:
            if not fut.done():
                fut.set_exception(RuntimeError("room disconnected before its sid was known"))
                fut.exception()
        self._sid_waiters.clear()

    @property
    def connection_state(self) -> ConnectionState:
        return self._state

    def isconnected(self) -> bool:
        return self._engine is not None and self._state != ConnectionState.CONN_DISCONNECTED

    @property
    def local_participant(self) -> LocalParticipant:
        if self._local is None:
            raise Exception("cannot access local participant before connecting")
        return self._local

    @property
    def remote_participants(self) -> Mapping[str, RemoteParticipant]:
        return self._remote

    @property
    def num_participants(self) -> int:
        return int(self._info.num_participants)

    @property
    def num_publishers(self) -> int:
        return int(self._info.num_publishers)

    @property
    def creation_time(self) -> datetime:
        ms = self._info.creation_time_ms or self._info.creation_time * 1000
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

    @property
    def is_recording(self) -> bool:
        return bool(self._info.active_recording)

    @property
    def departure_timeout(self) -> float:
        return float(self._info.departure_timeout)

    @property
    def empty_timeout(self) -> float:
        return float(self._info.empty_timeout)

    async def get_rtc_stats(self) -> Any:
        """Stats of both peer connections (``.publisher_stats``, ``.subscriber_stats``: lists
        of aiortc stats objects, each with ``.type``); RuntimeError when not connected."""
        engine = self._engine
        if engine is None or not self.isconnected():
            raise RuntimeError("the room isn't connected")
        out: dict[str, list[Any]] = {}
        for name, pt in (("publisher", engine.publisher), ("subscriber", engine.subscriber)):
            if pt is None:
                out[name] = []
                continue
            report = await asyncio.wait_for(pt.pc.getStats(), 5.0)
            out[name] = list(report.values())
        return _RtcStats(out["publisher"], out["subscriber"])

    # ------------------------------------------------------------------ connect

    async def connect(self, url: str, token: str, options: RoomOptions | None = None) -> None:
        """Join the room at ``url`` with ``token``.

        Returns once signalling is up and the primary peer connection is connected (the
        publisher PC of a subscriber-primary join connects on first publish); participants
        already in the room are then in :attr:`remote_participants`. Raises
        :class:`ConnectError` (``status``/``reason`` from the server, or ``signal_timeout``
        after ``options.connect_timeout`` (10 s) / ``ice_timeout`` after
        ``options.ice_timeout`` (15 s)). Cancelling it closes everything it opened.
        """
        options = options if options is not None else RoomOptions()
        if self._engine is not None and self._state != ConnectionState.CONN_DISCONNECTED:
            raise ConnectError("already connected", reason="bad_request")
        if self._connecting:
            raise ConnectError("already connecting", reason="bad_request")
        options_check.check_loop(self._loop, "Room")
        options_check.check_room_options(options)
        self._setup_e2ee(options)
        self._reset_state()
        self._data.set_stream_payload_limit(options_check.stream_payload_limit(options))
        self._connecting = True
        self._options = options
        self._token = token
        self._url = url
        self._pending_trigger = None
        self._gone.clear()
        engine = self._new_engine()
        self._engine = engine
        try:
            await self._connect_engine(engine)
        except BaseException:
            self._abandon_connect()
            raise
        self._connecting = False
        if engine.closed:
            # the server ended the session while we were finishing the connect
            self._abandon_connect()
            raise ConnectError("the session ended while connecting", reason="leave")
        self._data.attach(_DataSender(self))
        self._set_state(ConnectionState.CONN_CONNECTED)
        self._ready.set()
        self.emit("connected")
        self._after_connect()

    def _new_engine(self) -> eng.RtcEngine:
        """An engine whose events reach the Room only while it is the Room's engine."""
        holder: list[eng.RtcEngine] = []

        def listener(ev: Any) -> None:
            if holder and holder[0] is self._engine:
                self._on_engine_event(ev)
        engine = eng.RtcEngine(listener)
        holder.append(engine)
        return engine

    async def _connect_engine(self, engine: eng.RtcEngine) -> None:
        await engine.connect(self._url, self._token, self._options,
                             client_protocol=CLIENT_PROTOCOL, capabilities=CLIENT_CAPABILITIES)

    def _abandon_connect(self) -> None:
        self._connecting = False
        self._engine = None
        self._fail_sid_waiters()
        self._close_remote_tracks()
        self._data.close()
        self._local = None
        self._remote = {}
        self._by_sid = {}

    def _reset_state(self) -> None:
        self._info = models_pb.Room()
        self._local = None
        self._remote = {}
        self._by_sid = {}
        self._encoder = packets.PacketEncoder()
        self._dup = packets.DuplicateFilter()
        self._pending_tracks.clear()
        self._active_speakers = []
        self._subscription_prefs.clear()
        self._quality_prefs.clear()
        self._resend.clear()

    def _set_state(self, state: ConnectionState) -> None:
        if state != self._state:
            self._state = state
            self.emit("connection_state_changed", state)

    async def disconnect(self, *, reason: DisconnectReason = DisconnectReason.CLIENT_INITIATED) -> None:
        """Leave the room (no-op when not connected); stops a reconnection in progress.
        :meth:`isconnected` is False once it returns."""
        await self._stop_reconnect()
        engine = self._engine
        if engine is None:
            return
        await engine.close(int(reason))
        self._finish(int(reason))

    async def simulate_scenario(self, scenario: SimulateScenarioKind | int) -> None:
        """Trigger a fault for testing, as the official SDK does.

        ``SIMULATE_SIGNAL_RECONNECT`` drops the signal connection (a resume follows);
        ``SIMULATE_FULL_RECONNECT`` starts a full reconnect; ``SPEAKER``, ``NODE_FAILURE``,
        ``SERVER_LEAVE``, ``MIGRATION`` are SimulateScenario requests to the server;
        ``DISCONNECT_SIGNAL_ON_RESUME`` asks the server to drop the next resume's signal
        and drops the signal. ``FORCE_TCP`` / ``FORCE_TLS`` raise UnsupportedOptionError
        (aiortc gathers UDP candidates only). RuntimeError when not connected.
        """
        from .errors import UnsupportedOptionError

        engine = self._engine
        if engine is None or engine.closed or self._state != ConnectionState.CONN_CONNECTED:
            raise RuntimeError("simulate_scenario requires a connected room")
        try:
            kind = SimulateScenarioKind(int(scenario))
        except ValueError:
            raise ValueError(f"unknown SimulateScenarioKind {scenario!r}") from None
        K = SimulateScenarioKind
        if kind in (K.SIMULATE_FORCE_TCP, K.SIMULATE_FORCE_TLS):
            raise UnsupportedOptionError(
                "simulate_scenario", kind.name,
                detail="aiortc's ICE agent gathers UDP candidates only (no ICE-TCP/TLS)")
        if kind == K.SIMULATE_SIGNAL_RECONNECT:
            engine.close_signal()
            return
        if kind == K.SIMULATE_FULL_RECONNECT:
            self._trigger(full=True, reconnect_reason=0, error="simulated full reconnect",
                          reason=models_pb.DisconnectReason.STATE_MISMATCH)
            return
        from livekit.protocol import rtc as rtc_pb

        request = {
            K.SIMULATE_SPEAKER: rtc_pb.SimulateScenario(speaker_update=5),
            K.SIMULATE_NODE_FAILURE: rtc_pb.SimulateScenario(node_failure=True),
            K.SIMULATE_SERVER_LEAVE: rtc_pb.SimulateScenario(server_leave=True),
            K.SIMULATE_MIGRATION: rtc_pb.SimulateScenario(migration=True),
            K.SIMULATE_DISCONNECT_SIGNAL_ON_RESUME:
                rtc_pb.SimulateScenario(disconnect_signal_on_resume=True),
        }[kind]
        engine.session.simulate(request)
        engine.send_signal()
        if kind == K.SIMULATE_DISCONNECT_SIGNAL_ON_RESUME:
            await asyncio.sleep(0.05)  # let the request reach the server first
            engine.close_signal()

    def _finish(self, reason: int) -> None:
        """The session is over: clean up and emit the disconnect events once."""
        if self._engine is None:
            return
        self._engine = None
        self._ready.clear()
        self._gone.set()
        self._resend.clear()
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._data.close()
        self._fail_sid_waiters()
        self._close_remote_tracks()
        self._e2ee._clear()
        if self._local is not None:
            self._local._session_ended(reason)
        was_connected = self._state != ConnectionState.CONN_DISCONNECTED
        self._state = ConnectionState.CONN_DISCONNECTED
        if was_connected:
            self.emit("connection_state_changed", ConnectionState.CONN_DISCONNECTED)
            try:
                self.emit("disconnected", DisconnectReason(reason))
            except ValueError:
                self.emit("disconnected", DisconnectReason.UNKNOWN_REASON)

    # ------------------------------------------------------------------ engine events

    def _on_engine_event(self, ev: Any) -> None:
        handler = getattr(self, "_ev_" + type(ev).__name__, None)
        if handler is not None:
            handler(ev)

    def _ev_Joined(self, ev: sig.Joined) -> None:
        join = ev.join
        self._info.CopyFrom(join.room)
        self._e2ee_joined(join)
        rejoin = self._local is not None and self._state == ConnectionState.CONN_RECONNECTING
        if rejoin:
            # a full reconnect: same LocalParticipant (its publications are republished),
            # new sid; the reliable sequence goes on
            assert self._local is not None
            self._local._update_info(join.participant)
            self._encoder = packets.PacketEncoder(identity=join.participant.identity,
                                                  sid=join.participant.sid,
                                                  next_sequence=self._encoder.next_sequence)
        else:
            self._local = LocalParticipant(join.participant, self)
            self._encoder = packets.PacketEncoder(identity=join.participant.identity,
                                                  sid=join.participant.sid)
        for info in join.other_participants:
            p = self._add_remote(info)
            if rejoin:
                self.emit("participant_connected", p)
            for t in info.tracks:
                pub = self._add_publication(p, t)
                if rejoin:
                    self.emit("track_published", pub, p)
            self._e2ee_status(p)
        self._resolve_sid()

    def _drop_remote_participants(self) -> None:
        """Before a full reconnect: every remote participant leaves (events included);
        the new session's JoinResponse brings them back. The duplicate filter keeps
        their last sequences (their sids stay: a replay must not deliver twice)."""
        seen = dict(self._dup.last)
        for p in list(self._by_sid.values()):
            for pub in list(p._track_publications.values()):
                if isinstance(pub, RemoteTrackPublication):
                    self._unsubscribe_publication(p, pub)
            self._ev_ParticipantLeft(sig.ParticipantLeft(p._info, int(
                DisconnectReason.UNKNOWN_REASON)))
        self._dup.last.update(seen)
        self._pending_tracks.clear()
        self._active_speakers = []

    def _ev_RoomMoved(self, ev: sig.RoomMoved) -> None:
        """The server moved us to another room: new room info, token and participants."""
        self._info.CopyFrom(ev.room)
        if ev.token:
            self._token = ev.token
        if self._local is not None:
            self._local._update_info(ev.participant)
        self._drop_remote_participants()
        for info in ev.joined:
            p = self._add_remote(info)
            self.emit("participant_connected", p)
            for t in info.tracks:
                self.emit("track_published", self._add_publication(p, t), p)
            self._e2ee_status(p)
        self.emit("moved")


    def _ev_EngineClosed(self, ev: eng.EngineClosed) -> None:
        if self._connecting:
            return  # connect() reports the failure itself
        self._finish(ev.reason)

    # ------------------------------------------------------------------ data

    def _participant_by_identity(self, identity: str) -> Participant | None:
        """The remote participant with ``identity``, or the local one for our own identity."""
        remote = self._remote.get(identity)
        if remote is not None:
            return remote
        local = self._local
        return local if local is not None and local.identity == identity else None

    def _ev_DataReceived(self, ev: eng.DataReceived) -> None:
        try:
            packet = packets.decode_packet(ev.data)
        except ValueError as exc:
            logger.warning("%s", exc)
            return
        if not self._dup.accept(packet, reliable=ev.reliable, now=time.monotonic()):
            return
        if packet.HasField("encrypted_packet") and not self._e2ee_open(packet):
            return
        which = packet.WhichOneof("value")
        if which == "user":
            user = packet.user
            identity = packet.participant_identity or user.participant_identity
            participant = self._remote.get(identity) if identity else None
            if participant is None and packet.participant_sid:
                participant = self._by_sid.get(packet.participant_sid)
            topic = user.topic if user.HasField("topic") else None
            kind = DataPacketKind.KIND_RELIABLE if ev.reliable else DataPacketKind.KIND_LOSSY
            self.emit("data_received", DataPacket(data=bytes(user.payload), kind=kind,
                                                  participant=participant, topic=topic))
        elif which is not None:
            try:
                self._data.handle_packet(packet)
            except Exception:
                logger.exception("data layer failed on a %s packet", which)

    async def _send_packet(self, packet: models_pb.DataPacket, *, reliable: bool) -> None:
        if not self._ready.is_set():
            await self._wait_ready()  # a reconnection in progress: wait (bounded)
        engine = self._engine
        if engine is None or engine.closed or self._local is None:
            raise PublishDataError("cannot send data: not connected")
        self._e2ee_seal(packet)
        room = self

        def encode(reliable_max: int) -> bytes:
            # run by the engine right before sending (in call order): the size limit is
            # the one the server advertised once the (lazily connected) publisher is up
            data = room._encoder.encode(packet, reliable=reliable, reliable_max=reliable_max)
            if reliable:
                room._resend.add(packet.sequence, data)
            return data
        await engine.send_data(encode, reliable=reliable)

    async def _publish_user_data(self, payload: bytes, *, reliable: bool,
                                 destination_identities: list[str], topic: str) -> None:
        packet = self._encoder.user_packet(payload, topic=topic,
                                           destination_identities=destination_identities)
        await self._send_packet(packet, reliable=reliable)

    # ------------------------------------------------------------------ the local participant's link

    def _live_engine(self, closed_ok: bool = False) -> eng.RtcEngine | None:
        """The engine of the current session (``None`` when not connected; a closed one
        only with ``closed_ok``)."""
        engine = self._engine
        if engine is None or (engine.closed and not closed_ok):
            return None
        return engine


class _RtcStats:
    """``publisher_stats`` / ``subscriber_stats`` lists of aiortc stats objects."""

    def __init__(self, publisher: list[Any], subscriber: list[Any]) -> None:
        self.publisher_stats = publisher
        self.subscriber_stats = subscriber

    def __repr__(self) -> str:
        return (f"RtcStats(publisher_stats={len(self.publisher_stats)} entries, "
                f"subscriber_stats={len(self.subscriber_stats)} entries)")

