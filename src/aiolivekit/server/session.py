"""One participant's connection to the dev server: the signalling WebSocket and two aiortc
peer connections (publisher: the client offers; subscriber: the server offers).

The session only moves bytes: every decision about the room is made by
:class:`~aiolivekit.server.rooms.RoomState`, whose effects the :class:`Hub` carries out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from aiortc import (
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from google.protobuf import json_format
from livekit.protocol import models as models_pb, rtc as rtc_pb

from .._compat import aiortc as aiortc_compat
from ..webrtc import ice, ice_restart, sdp
from ..webrtc.pc import answer_keepalives_fast, start_late_transceivers, take_over_consent
from . import limits
from .data_out import DownstreamData
from .hub import ForwarderLike, Hub, SignalLink
from .pc_setup import answer_publisher, attach_forwarder, limit_sctp, new_pc
from .rooms import Effect

if TYPE_CHECKING:  # pragma: no cover
    from aiortc import RTCRtpTransceiver

    from .rooms import ParticipantState, RoomState

__all__ = ["MAX_SIGNAL_MESSAGE", "ForwarderLike", "Hub", "ParticipantSession"]

logger = logging.getLogger(__name__)

MAX_SIGNAL_MESSAGE = 2 * 1024 * 1024
PC_OP_TIMEOUT = 10.0
JOIN_ACTIVE_TIMEOUT = 60.0
REFRESH_INTERVAL = 300.0
TRANSPORT_FAILED_GRACE = 5.0  # livekit-server's disconnectCleanupDuration


class _Negotiation:
    """Subscriber-side offer state: never two offers outstanding."""

    def __init__(self) -> None:
        self.offer_id = 0
        self.outstanding = False
        self.dirty = False
        self.running = False
        self.ice_restart = False  # the next offer restarts ICE (new credentials)
        self.restarting = False   # an ICE-restart offer waits for its answer


class ParticipantSession:
    """The asyncio shell around one participant."""

    def __init__(self, hub: Hub, room: RoomState, participant: ParticipantState,
                 refresh: Callable[[], str] | None = None) -> None:
        self.hub = hub
        self.room = room
        self.sid = participant.sid
        self.identity = participant.identity
        self.can_subscribe = participant.permission.can_subscribe
        self.forwarders: dict[str, ForwarderLike] = {}
        self.closed = asyncio.Event()
        self._refresh = refresh
        self._closing = False  # the participant is leaving for good
        self._left = False     # the room state knows it left
        self._link: SignalLink | None = None  # the attached signal connection, if any
        self._finish_started = False
        self._connected_once: set[bool] = set()  # PCs (is_subscriber) that connected once
        self._json = False  # answer in JSON text frames after a JSON request (like Go)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pub = new_pc()
        self._sub = self.subscriber_pc = new_pc()  # subscriber_pc: the inspector's view
        self._pub_lock = asyncio.Lock()
        self._sub_lock = asyncio.Lock()
        self._pending_remote: dict[int, list[str]] = {0: [], 1: []}
        self._neg = _Negotiation()
        # subscriptions: track sid -> forwarder; transceiver -> track sid for mid_to_track_id
        self._subs: dict[str, ForwarderLike] = {}
        self._pending_adds: dict[str, tuple[str, ForwarderLike]] = {}
        self._sub_transceivers: dict[str, RTCRtpTransceiver] = {}
        self._paused: dict[str, bool] = {}
        # publisher media: mid -> track sid; unmatched media waiting for an AddTrackRequest
        self._mid_track: dict[str, str] = {}
        self._unmatched: list[tuple[str, str, str, ForwarderLike | None, str]] = []
        self._offer_sections: list[sdp.MediaSection] = []
        # S->C data: server-created channels on the subscriber PC when it is primary, else
        # the client-created channels of the publisher PC (adopted in _on_datachannel)
        self._data_out = DownstreamData(self.sid)
        if self.can_subscribe:
            self._data_out.create_on(self._sub)
            limit_sctp(self._sub, self._oversized_data)
        self._pub.on("datachannel", self._on_datachannel)
        self._pub.on("track", self._on_track)
        self._pub.on("connectionstatechange", lambda: self._on_pc_state(self._pub, False))
        self._sub.on("connectionstatechange", lambda: self._on_pc_state(self._sub, True))

    # ------------------------------------------------------------------ lifecycle

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # failures while the session is closing (PC already closed) are expected
            log = logger.debug if self._closing else logger.warning
            # a string: a handler keeping records must not keep the traceback (and self)
            log("session %s task failed: %s", self.sid, repr(task.exception()))

    @property
    def ws(self) -> web.WebSocketResponse | None:
        """The attached signal WebSocket (``None`` while the signal is lost)."""
        return self._link.ws if self._link is not None else None

    @property
    def signal_attached(self) -> bool:
        return self._link is not None

    @property
    def resumable(self) -> bool:
        """Whether a resume can attach to this session (it is not leaving)."""
        return not self._closing and not self._finish_started and self.sid in self.room.participants

    async def run(self, ws: web.WebSocketResponse, join: rtc_pb.SignalResponse,
                  effects: list[Effect]) -> None:
        """First connection: send the JoinResponse, start the subscriber negotiation,
        read the signal until it closes (the session may outlive it, see :meth:`resume`)."""
        link = self._attach(ws)
        self.send_signal(join)
        self.hub.dispatch(effects)
        if self.can_subscribe:
            self._request_negotiation()
        self._spawn(self._active_watchdog(), "watchdog")
        if self._refresh is not None:
            self._spawn(self._refresh_loop(), "refresh")
        await self._serve(link)

    async def resume(self, ws: web.WebSocketResponse) -> None:
        """``reconnect=1``: attach a new WebSocket to this live session (the old one, if
        still open, is closed without a Leave), send the resume messages, read it."""
        old = self._link
        if old is not None:
            logger.info("participant %s: new signal connection replaces the open one",
                        self.identity)
            self._link = None
            old.close_soon()
        link = self._attach(ws)
        self.hub.dispatch(self.room.resume(self.sid, time.time()))
        self.hub.departures_changed()
        if self._link is link and self._refresh is not None:
            self.send_signal(rtc_pb.SignalResponse(refresh_token=self._refresh()))
        await self._serve(link)

    def _attach(self, ws: web.WebSocketResponse) -> SignalLink:
        link = SignalLink(ws, self.sid, self._slow_reader)
        self._link = link
        return link

    async def _serve(self, link: SignalLink) -> None:
        try:
            await self._read_loop(link)
        finally:
            await self._signal_ended(link)

    async def _signal_ended(self, link: SignalLink) -> None:
        """The read loop of ``link`` ended: a leave, a removal, or a lost signal."""
        if self._link is link:
            self._link = None
            if not self._closing:
                self._signal_lost()
        if not link.ws.closed:
            await link.close_soon()
        else:
            link.out.put_nowait(None)
        if self._closing:
            await self._finish()

    def _signal_lost(self) -> None:
        """Keep the participant for a resume (livekit-server keeps it while its media
        transport lives; here for the room's departure timeout); one whose primary peer
        connection never connected leaves at once, as in livekit-server."""
        primary = self._sub if self.can_subscribe else self._pub
        if primary.connectionState != "connected":
            logger.info("participant %s: signal closed before its media connected; it "
                        "leaves", self.identity)
            self._left = True
            self._closing = True
            self.hub.dispatch(self.room.leave(self.sid, models_pb.DisconnectReason.SIGNAL_CLOSE))
            return
        logger.info("participant %s (%s): signal lost, kept %ss for a resume", self.identity,
                    self.sid, self.room.departure_timeout)
        self.hub.dispatch(self.room.signal_lost(self.sid, time.time()))
        self.hub.departures_changed()

    def close_signal(self, reason: str) -> None:
        """Close the signal connection (no Leave) and keep the session for a resume."""
        link = self._link
        if link is None or self._closing:
            return
        logger.info("participant %s: closing its signal connection (%s)", self.identity, reason)
        self._link = None
        link.close_soon()
        self._signal_lost()
        if self._closing:
            self._finish_soon()

    async def _active_watchdog(self) -> None:
        await asyncio.sleep(JOIN_ACTIVE_TIMEOUT)
        p = self.room.participants.get(self.sid)
        if p is not None and p.state != models_pb.ParticipantInfo.State.ACTIVE:
            logger.info("participant %s did not connect within %ss", self.identity,
                        JOIN_ACTIVE_TIMEOUT)
            self.hub.dispatch(self.room.remove(self.sid, models_pb.DisconnectReason.JOIN_FAILURE))

    async def _refresh_loop(self) -> None:
        """``refresh_token`` after the join and every 5 minutes (clients reconnect with it)."""
        assert self._refresh is not None
        while not self._closing:
            self.send_signal(rtc_pb.SignalResponse(refresh_token=self._refresh()))
            await asyncio.sleep(REFRESH_INTERVAL)

    async def _read_loop(self, link: SignalLink) -> None:
        ws = link.ws
        while not self._closing and self._link is link and not link.failed:
            try:
                # every client pings each ping_interval (5 s): silence for ping_timeout
                # means the signal is gone even if TCP has not noticed
                msg = await ws.receive(timeout=self.hub.ping_timeout)
            except asyncio.TimeoutError:
                logger.info("participant %s: no signal message for %ss (ping timeout)",
                            self.identity, self.hub.ping_timeout)
                self._send_leave_on(link, models_pb.DisconnectReason.SIGNAL_CLOSE,
                                    rtc_pb.LeaveRequest.Action.RESUME)
                break
            if msg.type == WSMsgType.BINARY:
                data: bytes = msg.data
                req = rtc_pb.SignalRequest()
                if len(data) > MAX_SIGNAL_MESSAGE:
                    self._bad_frame(f"oversized signal message ({len(data)} bytes)")
                    break
                try:
                    req.ParseFromString(data)
                except Exception as exc:  # noqa: BLE001 - reported, connection closed
                    self._bad_frame(f"malformed signal message: {exc!r}")
                    break
                self._json = False
            elif msg.type == WSMsgType.TEXT:
                if len(msg.data) > MAX_SIGNAL_MESSAGE:
                    self._bad_frame("oversized signal message")
                    break
                req = rtc_pb.SignalRequest()
                try:
                    json_format.Parse(msg.data, req, ignore_unknown_fields=True)
                except Exception as exc:  # noqa: BLE001 - reported, connection closed
                    self._bad_frame(f"malformed JSON signal message: {exc!r}")
                    break
                self._json = True
            else:
                break
            if self._link is not link:
                break
            try:
                self._handle(req)
            except Exception:
                logger.exception("session %s: error handling %s", self.sid,
                                 req.WhichOneof("message"))

    def _send_leave_on(self, link: SignalLink, reason: int, action: int) -> None:
        p = self.room.participants.get(self.sid)
        leave = (self.room.leave_request(p, reason, action) if p is not None
                 else rtc_pb.LeaveRequest(reason=reason, action=action))  # type: ignore[arg-type]
        self._put(link, rtc_pb.SignalResponse(leave=leave))

    def _bad_frame(self, why: str) -> None:
        logger.warning("participant %s (%s): %s; closing its connection", self.identity,
                       self.sid, why)
        self.hub.dispatch(self.room.leave(self.sid, models_pb.DisconnectReason.SIGNAL_CLOSE))
        self._left = True
        self.disconnect(models_pb.DisconnectReason.SIGNAL_CLOSE,
                        rtc_pb.LeaveRequest.Action.DISCONNECT)

    def _slow_reader(self) -> None:
        self._bad_frame(f"more than {limits.MAX_OUT_QUEUE_BYTES} signal bytes not read")

    def _oversized_data(self, size: int) -> None:
        if not self._closing:
            asyncio.get_running_loop().call_soon(self._bad_frame, (
                f"data-channel message of {size}+ bytes (max {limits.MAX_SCTP_MESSAGE_SIZE})"))

    def disconnect(self, reason: int, action: int, *, send_leave: bool = True) -> None:
        """Leave for good: send a LeaveRequest (unless ``send_leave`` is False) if the
        signal is attached, close it and the peer connections (the room state is updated
        by the caller)."""
        if self._closing:
            return
        self._closing = True
        self._left = True
        link, self._link = self._link, None
        if link is None:
            self._finish_soon()
            return
        if send_leave:
            self._send_leave_on(link, reason, action)
        # the read loop may sit in a receive until the ping timeout: finish once closed
        link.close_soon().add_done_callback(lambda _: self._finish_soon())

    def _finish_soon(self) -> None:
        if not self._finish_started:
            self.hub.spawn(self._finish())

    async def _finish(self) -> None:
        """Close the session once (later callers wait for it)."""
        if self._finish_started:
            await asyncio.wait_for(self.closed.wait(), 10.0)
            return
        self._finish_started = True
        await self._shutdown()

    async def _shutdown(self) -> None:
        if not self._left:
            self._left = True
            self.hub.dispatch(self.room.leave(self.sid,
                                              models_pb.DisconnectReason.CLIENT_INITIATED))
        if self.hub.sessions.get(self.sid) is self:
            del self.hub.sessions[self.sid]
        self._closing = True
        link, self._link = self._link, None
        if link is not None:
            await link.close_soon()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for fwd in self.forwarders.values():
            try:
                fwd.close()
            except Exception:
                logger.debug("forwarder close failed", exc_info=True)
        self.forwarders.clear()
        for pc in (self._pub, self._sub):
            try:
                await asyncio.wait_for(pc.close(), 5.0)
            except Exception:
                logger.debug("pc close failed", exc_info=True)
        self._release()
        self.closed.set()

    def _release(self) -> None:
        """Drop the listeners and queued state that would keep this closed session in
        reference cycles: it is freed by reference counting, not at the next full gc."""
        for pc in (self._pub, self._sub):
            pc.remove_all_listeners()
        self._data_out.release()
        for held in (self._subs, self._pending_adds, self._sub_transceivers, self._tasks):
            held.clear()
        self._unmatched, self._offer_sections = [], []
        self._pending_remote = {0: [], 1: []}

    # ------------------------------------------------------------------ outgoing

    def _put(self, link: SignalLink, response: rtc_pb.SignalResponse) -> None:
        self.hub.announce_candidates(response, self.identity)  # test hook (docs/faults.md)
        link.out.put_nowait(json_format.MessageToJson(response, indent=None) if self._json
                            else response.SerializeToString())

    def send_signal(self, response: rtc_pb.SignalResponse) -> None:
        """Queue ``response`` on the attached signal; dropped while the signal is lost
        (a resume resends the state: participants, room, a new subscriber offer)."""
        link = self._link
        if link is None or self.closed.is_set():
            logger.debug("session %s: no signal, dropping %s", self.sid,
                         response.WhichOneof("message"))
            return
        self._put(link, response)

    def send_data(self, payload: bytes, reliable: bool) -> None:
        if not self._closing:
            self._data_out.send(payload, reliable)

    def _send_local_candidates(self, pc: RTCPeerConnection, target: int) -> None:
        desc = pc.localDescription
        if desc is None:
            return
        seen: set[str] = set()
        for mid, index, line in sdp.local_candidates(desc.sdp):
            if line in seen:
                continue
            seen.add(line)
            init = json.dumps({"candidate": line, "sdpMid": mid or "0", "sdpMLineIndex": index})
            self.send_signal(rtc_pb.SignalResponse(trickle=rtc_pb.TrickleRequest(
                candidateInit=init, target=target)))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ incoming signals

    def _handle(self, req: rtc_pb.SignalRequest) -> None:
        which = req.WhichOneof("message")
        room = self.room
        if which == "ping":
            self.send_signal(rtc_pb.SignalResponse(pong=int(time.time() * 1000)))
        elif which == "ping_req":
            self.send_signal(rtc_pb.SignalResponse(pong_resp=rtc_pb.Pong(
                last_ping_timestamp=req.ping_req.timestamp, timestamp=int(time.time() * 1000))))
        elif which == "offer":
            self._spawn(self._on_publisher_offer(req.offer), "offer")
        elif which == "answer":
            self._spawn(self._on_subscriber_answer(req.answer), "answer")
        elif which == "trickle":
            self._spawn(self._on_trickle(req.trickle), "trickle")
        elif which == "add_track":
            self.hub.dispatch(room.add_track(self.sid, req.add_track, time.time()))
            self._retry_unmatched()
        elif which == "mute":
            self.hub.dispatch(room.mute_track(self.sid, req.mute.sid, req.mute.muted))
        elif which == "subscription":
            sids = list(req.subscription.track_sids)
            for pt in req.subscription.participant_tracks:
                sids.extend(pt.track_sids)
            self.hub.dispatch(room.update_subscription(self.sid, sids, req.subscription.subscribe))
        elif which == "subscription_permission":
            self.hub.dispatch(room.set_subscription_permission(
                self.sid, req.subscription_permission))
        elif which == "track_setting":
            setting = req.track_setting
            self.hub.dispatch(room.update_track_settings(
                self.sid, setting.track_sids, setting.disabled, setting))
        elif which == "update_metadata":
            self.hub.dispatch(room.update_metadata(self.sid, req.update_metadata))
        elif which == "leave":
            logger.debug("participant %s left", self.identity)
            self._left = True
            self.hub.dispatch(room.leave(self.sid, models_pb.DisconnectReason.CLIENT_INITIATED))
            self.disconnect(models_pb.DisconnectReason.CLIENT_INITIATED,
                            rtc_pb.LeaveRequest.Action.DISCONNECT)
        elif which == "simulate":
            self._simulate(req.simulate)
        elif which == "sync_state":
            self._sync_state(req.sync_state)
        elif which in ("publish_data_track_request",):
            self.send_signal(rtc_pb.SignalResponse(request_response=rtc_pb.RequestResponse(
                reason=rtc_pb.RequestResponse.Reason.UNSUPPORTED_TYPE,
                message="data tracks are not supported")))
        else:
            logger.debug("ignoring signal request %s", which)

    async def subscriber_reports(self) -> tuple[list[float], float | None]:
        """The receiver reports of this participant about its subscriptions: fraction
        lost of each (0..1) and the mean round-trip time (seconds), from aiortc's stats."""
        report = await self._sub.getStats()
        fractions: list[float] = []
        rtts: list[float] = []
        for st in report.values():
            if getattr(st, "type", "") != "remote-inbound-rtp":
                continue
            fractions.append((getattr(st, "fractionLost", 0) or 0) / 256.0)
            rtt = getattr(st, "roundTripTime", None)
            if rtt:
                rtts.append(float(rtt))
        return fractions, (sum(rtts) / len(rtts) if rtts else None)

    def _sync_state(self, state: rtc_pb.SyncState) -> None:
        """C->S SyncState after a resume (livekit-server ``Room.onSyncState``): every
        track the client says it publishes must be known here, else a full reconnect is
        asked for; disabled tracks and the subscription list are applied again."""
        p = self.room.participants.get(self.sid)
        if p is None:
            return
        for published in state.publish_tracks:
            if not published.HasField("track") or published.track.sid not in p.tracks:
                logger.warning("participant %s resumed with a track this server does not "
                               "know (%s): full reconnect", self.identity,
                               published.track.sid or published.cid)
                self.hub.dispatch(self.room.remove(
                    self.sid, models_pb.DisconnectReason.STATE_MISMATCH,
                    rtc_pb.LeaveRequest.Action.RECONNECT))
                return
        if state.track_sids_disabled:
            self.hub.dispatch(self.room.update_track_settings(
                self.sid, state.track_sids_disabled, True))
        if state.HasField("subscription"):
            sub = state.subscription
            sids = list(sub.track_sids)
            for pt in sub.participant_tracks:
                sids.extend(pt.track_sids)
            if sids:
                self.hub.dispatch(self.room.update_subscription(self.sid, sids, sub.subscribe))

    def _simulate(self, scenario: rtc_pb.SimulateScenario) -> None:
        """C->S SimulateScenario (see :meth:`RoomState.simulate`; speaker updates here)."""
        which = scenario.WhichOneof("scenario")
        logger.info("participant %s simulates %s", self.identity, which)
        if which == "speaker_update":
            self.hub.simulate_speaker(self.room, self.sid, float(scenario.speaker_update))
            return
        self.hub.dispatch(self.room.simulate(self.sid, scenario, time.time()))

    # ------------------------------------------------------------------ publisher PC

    async def _on_publisher_offer(self, offer: rtc_pb.SessionDescription) -> None:
        async with self._pub_lock:
            sections = sdp.parse_media_sections(offer.sdp)
            self._offer_sections = sections
            logger.debug("publisher offer %d from %s: %s", offer.id, self.identity,
                         [(m.mid, m.kind, m.direction, m.track_id, m.rids) for m in sections])
            restartable = ice_restart.restartable(self._pub)
            await asyncio.wait_for(self._pub.setRemoteDescription(
                RTCSessionDescription(sdp=offer.sdp, type="offer")), PC_OP_TIMEOUT)
            if ice_restart.apply_remote_credentials(self._pub, offer.sdp):
                if not restartable:
                    logger.info("participant %s: publisher ICE is closed, asking for a full "
                                "reconnect", self.identity)
                    self.hub.dispatch(self.room.remove(
                        self.sid, models_pb.DisconnectReason.STATE_MISMATCH,
                        rtc_pb.LeaveRequest.Action.RECONNECT))
                    return
                logger.info("participant %s restarts ICE on its publisher PC", self.identity)
                ice_restart.new_local_credentials(self._pub)
            limit_sctp(self._pub, self._oversized_data)
            await self._apply_pending_candidates(0)
            answer_sdp = await answer_publisher(self._pub, offer.sdp, self._tasks,
                                                self.hub.forwarding, self.hub.bind_addresses,
                                                PC_OP_TIMEOUT)
            self.send_signal(rtc_pb.SignalResponse(answer=rtc_pb.SessionDescription(
                type="answer", sdp=answer_sdp, id=offer.id)))
            self._send_local_candidates(self._pub, rtc_pb.SignalTarget.PUBLISHER)
            self._detect_unpublished(sections)

    def _detect_unpublished(self, sections: list[sdp.MediaSection]) -> None:
        for s in sections:
            if s.direction in ("sendonly", "sendrecv") and s.port != 0:
                continue
            track_sid = self._mid_track.pop(s.mid, None)
            if track_sid is not None:
                logger.debug("participant %s unpublished %s (mid %s)", self.identity,
                             track_sid, s.mid)
                self.hub.dispatch(self.room.unpublish_track(self.sid, track_sid))

    def _on_track(self, track: MediaStreamTrack) -> None:
        transceiver = next((t for t in self._pub.getTransceivers()
                            if t.receiver.track is track), None)
        if transceiver is None:
            return
        mid = transceiver.mid or ""
        logger.debug("participant %s: incoming %s media on mid %s", self.identity, track.kind,
                     mid)
        section = next((s for s in self._offer_sections if s.mid == mid), None)
        msid_track = section.track_id if section is not None else ""
        codecs = aiortc_compat.transceiver_codecs(transceiver)
        fwd = attach_forwarder(transceiver.receiver, track.kind, codecs, self.hub.forwarding)
        mime = getattr(fwd, "mime_type", None) or ""
        if not mime:
            media = [c for c in codecs if c.name.lower() != "rtx"]
            mime = media[0].mimeType if media else ""
        self._publish_media(mid, track.kind, msid_track, fwd, mime)

    def _publish_media(self, mid: str, kind: str, msid_track: str,
                       fwd: ForwarderLike | None, mime: str) -> bool:
        t = self.room.match_pending_track(self.sid, kind, msid_track)
        if t is None:
            self._unmatched.append((mid, kind, msid_track, fwd, mime))
            return False
        track_sid = t.info.sid
        self._mid_track[mid] = track_sid
        if fwd is not None:
            self.forwarders[track_sid] = fwd
        self.hub.dispatch(self.room.publish_track(self.sid, track_sid, mid=mid,
                                                  mime_type=mime, sdp_cid=msid_track))
        return True

    def _retry_unmatched(self) -> None:
        waiting, self._unmatched = self._unmatched, []
        for item in waiting:
            self._publish_media(*item)

    def close_track(self, track_sid: str) -> None:
        fwd = self.forwarders.pop(track_sid, None)
        if fwd is not None:
            try:
                fwd.close()
            except Exception:
                logger.debug("forwarder close failed", exc_info=True)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        label = channel.label
        if label not in ("_reliable", "_lossy"):
            logger.debug("ignoring data channel %r from %s", label, self.identity)
            return
        reliable = label == "_reliable"
        if not self.can_subscribe:  # no subscriber PC: send downstream data on these
            self._data_out.adopt(channel, reliable)

        def on_message(message: bytes | str) -> None:
            data = message.encode() if isinstance(message, str) else message
            self.hub.dispatch(self.room.receive_data(self.sid, data, reliable))

        channel.on("message", on_message)

    def _on_pc_state(self, pc: RTCPeerConnection, is_subscriber: bool) -> None:
        state = pc.connectionState
        logger.debug("participant %s %s PC: %s", self.identity,
                     "subscriber" if is_subscriber else "publisher", state)
        if state == "connected":
            self._connected_once.add(is_subscriber)
            # a track negotiated while this PC was still connecting (the subscriber PC of a
            # participant joining a room with published tracks) would never start
            start_late_transceivers(pc, self._tasks)
            take_over_consent(pc)  # RFC 7675 checks timed with the client's keepalives
        primary = is_subscriber if self.can_subscribe else not is_subscriber
        if state == "connected" and primary:
            self.hub.dispatch(self.room.set_active(self.sid))
        elif (state in ("failed", "closed") and not self._closing
              and is_subscriber in self._connected_once):
            self._spawn(self._transport_failed(pc, is_subscriber), "transport-failed")

    async def _transport_failed(self, pc: RTCPeerConnection, is_subscriber: bool) -> None:
        """A media transport that worked has failed or closed. livekit-server answers with
        Leave{CONNECTION_TIMEOUT, RESUME} and restarts ICE; an aiortc PC whose ICE agent
        closed cannot be restarted, so after livekit-server's cleanup delay (the clients
        notice a dead transport themselves and reconnect within it) a participant still
        here is asked for a full reconnect."""
        await asyncio.sleep(TRANSPORT_FAILED_GRACE)
        if self._closing or pc.connectionState == "connected":
            return
        logger.info("participant %s: %s PC %s; asking for a full reconnect", self.identity,
                    "subscriber" if is_subscriber else "publisher", pc.connectionState)
        self.hub.dispatch(self.room.remove(
            self.sid, models_pb.DisconnectReason.CONNECTION_TIMEOUT,
            rtc_pb.LeaveRequest.Action.RECONNECT))

    # ------------------------------------------------------------------ trickle

    async def _on_trickle(self, trickle: rtc_pb.TrickleRequest) -> None:
        target = 1 if trickle.target == rtc_pb.SignalTarget.SUBSCRIBER else 0
        pc = self._sub if target == 1 else self._pub
        if len(trickle.candidateInit) > limits.MAX_CANDIDATE_SIZE or (
                pc.remoteDescription is None
                and len(self._pending_remote[target]) >= limits.MAX_PENDING_CANDIDATES):
            logger.debug("participant %s: candidate dropped (%d bytes)", self.identity,
                         len(trickle.candidateInit))
            return
        if pc.remoteDescription is None:
            self._pending_remote[target].append(trickle.candidateInit)
            return
        await self._add_candidate(pc, trickle.candidateInit)

    async def _apply_pending_candidates(self, target: int) -> None:
        pc = self._sub if target == 1 else self._pub
        pending, self._pending_remote[target] = self._pending_remote[target], []
        for init in pending:
            await self._add_candidate(pc, init)

    async def _add_candidate(self, pc: RTCPeerConnection, init: str) -> None:
        await ice.add_remote_candidate(pc, init, timeout=PC_OP_TIMEOUT)

    # ------------------------------------------------------------------ subscriber PC

    def add_subscription(self, track_sid: str, publisher_sid: str, fwd: ForwarderLike) -> None:
        if track_sid in self._subs or track_sid in self._pending_adds:
            return
        self._pending_adds[track_sid] = (publisher_sid, fwd)
        self._request_negotiation()

    def remove_subscription(self, track_sid: str) -> None:
        if self._pending_adds.pop(track_sid, None) is not None:
            return
        fwd = self._subs.pop(track_sid, None)
        transceiver = self._sub_transceivers.pop(track_sid, None)
        self._paused.pop(track_sid, None)
        if fwd is None:
            return
        try:
            fwd.remove_subscriber(self._sub)
        except Exception:
            logger.debug("remove_subscriber failed", exc_info=True)
        if transceiver is not None:
            # the dead m-line keeps its a=msid in later offers; a second subscription to the
            # same track must not repeat it (libwebrtc rejects duplicate msid lines)
            aiortc_compat.set_sender_msid(transceiver.sender, "-", uuid.uuid4().hex)
        self._request_negotiation()

    def set_paused(self, track_sid: str, paused: bool, quality: int | None = None) -> None:
        self._paused[track_sid] = paused
        fwd = self._subs.get(track_sid)
        if fwd is not None:
            try:
                fwd.set_paused(self._sub, paused)
                if quality is not None:  # a simulcast layer
                    fwd.set_quality(self._sub, quality)
            except Exception:
                logger.debug("set_paused failed", exc_info=True)

    def restart_ice(self) -> None:
        """Send an ICE-restart offer on the subscriber PC (after a resume, as
        livekit-server's ``ICERestart``). An offer sent before the signal was lost may
        never be answered: it is superseded by this one."""
        if not self.can_subscribe or self._closing:
            return
        self._neg.ice_restart = True
        self._neg.outstanding = False
        self._request_negotiation()

    def _request_negotiation(self) -> None:
        self._neg.dirty = True
        if self._link is None:
            return  # no signal: the offer is made when one is attached (resume)
        if not self._neg.outstanding and not self._neg.running and not self._closing:
            self._neg.running = True
            self._spawn(self._negotiate(), "negotiate")

    async def _negotiate(self) -> None:
        try:
            async with self._sub_lock:
                if self._closing or self._neg.outstanding:
                    return
                self._neg.dirty = False
                # The first offer carries only the data channels: with MAX_BUNDLE, aiortc
                # stops the shared transport when a media m-line precedes the application
                # m-line in the first negotiation. Tracks follow in the next offer.
                first_offer = self._neg.offer_id == 0 and self.can_subscribe
                for track_sid, (publisher_sid, fwd) in list(self._pending_adds.items()):
                    if first_offer:
                        break
                    del self._pending_adds[track_sid]
                    try:
                        transceiver = fwd.add_subscriber(
                            self._sub, stream_id=f"{publisher_sid}|{track_sid}", track_id=track_sid)
                    except Exception:
                        logger.exception("add_subscriber failed for %s", track_sid)
                        continue
                    self._subs[track_sid] = fwd
                    self._sub_transceivers[track_sid] = transceiver
                    if self._paused.get(track_sid):
                        fwd.set_paused(self._sub, True)
                restart = self._neg.ice_restart and ice_restart.restartable(self._sub)
                if self._neg.ice_restart and not restart:
                    logger.info("participant %s: subscriber ICE is closed, asking for a full "
                                "reconnect", self.identity)
                    self._neg.ice_restart = False
                    self.hub.dispatch(self.room.remove(
                        self.sid, models_pb.DisconnectReason.STATE_MISMATCH,
                        rtc_pb.LeaveRequest.Action.RECONNECT))
                    return
                if restart:
                    ice_restart.new_local_credentials(self._sub)
                    self._neg.ice_restart = False
                    self._neg.restarting = True
                offer = await asyncio.wait_for(self._sub.createOffer(), PC_OP_TIMEOUT)
                with ice.host_addresses(self.hub.bind_addresses):
                    await asyncio.wait_for(self._sub.setLocalDescription(offer), PC_OP_TIMEOUT)
                answer_keepalives_fast(self._sub)
                self._neg.offer_id += 1
                self._neg.outstanding = True
                mid_map = {t.mid: sid for sid, t in self._sub_transceivers.items() if t.mid}
                self.send_signal(rtc_pb.SignalResponse(offer=rtc_pb.SessionDescription(
                    type="offer", sdp=self._sub.localDescription.sdp, id=self._neg.offer_id,
                    mid_to_track_id=mid_map)))
                self._send_local_candidates(self._sub, rtc_pb.SignalTarget.SUBSCRIBER)
        finally:
            self._neg.running = False

    async def _on_subscriber_answer(self, answer: rtc_pb.SessionDescription) -> None:
        async with self._sub_lock:
            if not self._neg.outstanding:
                logger.debug("unexpected subscriber answer from %s", self.identity)
                return
            await asyncio.wait_for(self._sub.setRemoteDescription(
                RTCSessionDescription(sdp=answer.sdp, type="answer")), PC_OP_TIMEOUT)
            if self._neg.restarting:
                self._neg.restarting = False
                ice_restart.apply_remote_credentials(self._sub, answer.sdp)
            self._neg.outstanding = False
            await self._apply_pending_candidates(1)
        if self._neg.dirty or self._pending_adds:
            self._request_negotiation()


SessionFactory = Callable[..., ParticipantSession]
