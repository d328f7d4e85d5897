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
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
    sdp as aiortc_sdp,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from google.protobuf import json_format
from livekit.protocol import models as models_pb, rtc as rtc_pb

from .._compat import aiortc as aiortc_compat
from ..webrtc import ice, sdp
from ..webrtc.pc import answer_keepalives_fast, start_late_transceivers, take_over_consent
from . import http_guard, limits
from .config import ForwardingOptions
from .rooms import (
    CloseTrack,
    Disconnect,
    Effect,
    RoomManager,
    SendData,
    SendSignal,
    SetPaused,
    Subscribe,
    Unsubscribe,
)

if TYPE_CHECKING:  # pragma: no cover
    from aiortc import RTCRtpReceiver, RTCRtpTransceiver

    from .rooms import ParticipantState, RoomState

__all__ = ["MAX_SIGNAL_MESSAGE", "ForwarderLike", "Hub", "ParticipantSession"]

logger = logging.getLogger(__name__)

MAX_SIGNAL_MESSAGE = 2 * 1024 * 1024
PC_OP_TIMEOUT = 10.0
SEND_TIMEOUT = 10.0
MAX_BUFFERED_RELIABLE = 1000
LOSSY_HIGH_WATER = 64 * 1024
JOIN_ACTIVE_TIMEOUT = 60.0
REFRESH_INTERVAL = 300.0


class ForwarderLike(Protocol):
    """The interface of ``server.forwarder.TrackForwarder`` this module relies on."""

    def add_subscriber(self, pc: RTCPeerConnection, *, stream_id: str,
                       track_id: str) -> RTCRtpTransceiver: ...

    def remove_subscriber(self, pc: RTCPeerConnection) -> None: ...

    def set_paused(self, pc: RTCPeerConnection, paused: bool) -> None: ...

    def close(self) -> None: ...


def _attach_forwarder(receiver: RTCRtpReceiver, kind: str, codecs: list[Any],
                      options: ForwardingOptions) -> ForwarderLike | None:
    try:
        from .forwarder import TrackForwarder
    except ImportError:  # the forwarder is not available: signalling only
        logger.warning("server.forwarder not available; media will not be forwarded")
        return None
    try:
        return TrackForwarder.attach(receiver, kind, codecs=codecs or None, options=options)
    except Exception:
        logger.exception("cannot forward this %s track", kind)
        return None


_RID_URIS = (
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
)


def _accept_rid_extensions(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Answer the RID header extensions of video m-lines (aiortc drops them).

    libwebrtc keeps offering only the extensions that earlier answers accepted, and refuses
    to create a simulcast offer without the RID extension ("negotiates simulcast but does
    not negotiate the RID RTP header extension"); aiortc parses RIDs, so accepting them is
    safe. The answer still has no ``a=simulcast``, so the client sends one layer.
    """
    try:
        description = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception:
        logger.debug("cannot parse the offer for RID extensions", exc_info=True)
        return
    by_mid = {m.rtp.muxId: m for m in description.media if m.kind == "video"}
    for transceiver in pc.getTransceivers():
        media = by_mid.get(transceiver.mid or "")
        if media is None or transceiver.kind != "video":
            continue
        extensions = aiortc_compat.transceiver_header_extensions(transceiver)
        have = {e.uri for e in extensions}
        for ext in media.rtp.headerExtensions:
            if ext.uri in _RID_URIS and ext.uri not in have:
                extensions.append(
                    RTCRtpHeaderExtensionParameters(id=ext.id, uri=ext.uri))


def _answer_as_dtls_server(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Make the coming answer say ``a=setup:passive`` when the offer left the choice to us
    (``actpass``), as livekit-server does (pion ``SetAnsweringDTLSRole(DTLSRoleServer)``).

    The DTLS server picks the SRTP profile from its own preference list. As server we pick
    AES-GCM, which the official clients offer, whereas libwebrtc as server picks
    AES-CM + HMAC-SHA1, whose authentication costs several times more per packet here.
    A role set by an earlier negotiation is kept.
    """
    setups = {line.strip() for line in offer_sdp.splitlines() if line.startswith("a=setup:")}
    if setups != {"a=setup:actpass"}:
        return
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        aiortc_compat.prefer_dtls_server(dtls)


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


class Hub:
    """The live sessions of one server and the executor of room effects."""

    def __init__(self, rooms: RoomManager, bind_addresses: list[str] | None,
                 forwarding: ForwardingOptions | None = None) -> None:
        self.rooms = rooms
        self.bind_addresses = bind_addresses
        self.forwarding = forwarding if forwarding is not None else ForwardingOptions()
        self.sessions: dict[str, ParticipantSession] = {}

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
        elif isinstance(e, Unsubscribe):
            sub = self.sessions.get(e.subscriber_sid)
            if sub is not None:
                sub.remove_subscription(e.track_sid)
        elif isinstance(e, SetPaused):
            sub = self.sessions.get(e.subscriber_sid)
            if sub is not None:
                sub.set_paused(e.track_sid, e.paused)
        elif isinstance(e, CloseTrack):
            pub = self.sessions.get(e.publisher_sid)
            if pub is not None:
                pub.close_track(e.track_sid)
        elif isinstance(e, Disconnect):
            s = self.sessions.get(e.participant_sid)
            if s is not None:
                s.disconnect(e.reason, e.action)

    async def close_all(self, reason: int = models_pb.DisconnectReason.SERVER_SHUTDOWN) -> None:
        sessions = list(self.sessions.values())
        for s in sessions:
            s.disconnect(reason, rtc_pb.LeaveRequest.Action.DISCONNECT)
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.closed.wait()) for s in sessions],
                               timeout=5.0)


class _Negotiation:
    """Subscriber-side offer state: never two offers outstanding."""

    def __init__(self) -> None:
        self.offer_id = 0
        self.outstanding = False
        self.dirty = False
        self.running = False


class ParticipantSession:
    """The asyncio shell around one participant."""

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, room: RoomState,
                 participant: ParticipantState,
                 refresh: Callable[[], str] | None = None) -> None:
        self.hub = hub
        self.ws = ws
        self.room = room
        self.sid = participant.sid
        self.identity = participant.identity
        self.can_subscribe = participant.permission.can_subscribe
        self.forwarders: dict[str, ForwarderLike] = {}
        self.closed = asyncio.Event()
        self._refresh = refresh
        self._closing = False
        self._left = False
        self._out: asyncio.Queue[bytes | str | None] = limits.SignalQueue(self._slow_reader)
        self._json = False  # answer in JSON text frames after a JSON request (like Go)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pub = _pc()
        self._sub = _pc()
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
        self._reliable_out: list[bytes] = []
        # S->C data: server-created channels on the subscriber PC when it is primary, else
        # the client-created channels of the publisher PC (adopted in _on_datachannel)
        self._dc_reliable: RTCDataChannel | None = None
        self._dc_lossy: RTCDataChannel | None = None
        if self.can_subscribe:
            self._dc_reliable = self._sub.createDataChannel("_reliable", ordered=True)
            self._dc_lossy = self._sub.createDataChannel("_lossy", ordered=False,
                                                         maxRetransmits=0)
            self._dc_reliable.on("open", self._flush_reliable)
            self._limit_sctp(self._sub)
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

    async def run(self, join: rtc_pb.SignalResponse, effects: list[Effect]) -> None:
        """Send the JoinResponse, start the subscriber negotiation, read until closed."""
        writer = asyncio.ensure_future(self._writer())
        try:
            self.send_signal(join)
            self.hub.dispatch(effects)
            if self.can_subscribe:
                self._request_negotiation()
            self._spawn(self._active_watchdog(), "watchdog")
            if self._refresh is not None:
                self._spawn(self._refresh_loop(), "refresh")
            await self._read_loop()
        finally:
            await self._shutdown(writer)

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

    async def _writer(self) -> None:
        while True:
            data = await self._out.get()
            if data is None:
                return
            try:
                if isinstance(data, str):
                    await asyncio.wait_for(self.ws.send_str(data), SEND_TIMEOUT)
                else:
                    await asyncio.wait_for(self.ws.send_bytes(data), SEND_TIMEOUT)
            except Exception as exc:  # includes asyncio.TimeoutError
                logger.debug("session %s: send failed: %r", self.sid, exc, exc_info=True)
                exc.__traceback__ = None  # its frames (and this session) must not outlive it
                self._closing = True
                return

    async def _read_loop(self) -> None:
        async for msg in self.ws:
            if self._closing:
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
            try:
                self._handle(req)
            except Exception:
                logger.exception("session %s: error handling %s", self.sid,
                                 req.WhichOneof("message"))
            if self._closing:
                break

    def _bad_frame(self, why: str) -> None:
        logger.warning("participant %s (%s): %s; closing its connection", self.identity,
                       self.sid, why)
        self.hub.dispatch(self.room.leave(self.sid, models_pb.DisconnectReason.SIGNAL_CLOSE))
        self._left = True
        self.disconnect(models_pb.DisconnectReason.SIGNAL_CLOSE,
                        rtc_pb.LeaveRequest.Action.DISCONNECT)

    def _slow_reader(self) -> None:
        self._bad_frame(f"more than {limits.MAX_OUT_QUEUE_BYTES} signal bytes not read")

    def _limit_sctp(self, pc: RTCPeerConnection) -> None:
        aiortc_compat.limit_sctp_message_size(pc.sctp, limits.MAX_SCTP_MESSAGE_SIZE,
                                              self._oversized_data)

    def _oversized_data(self, size: int) -> None:
        if not self._closing:
            asyncio.get_running_loop().call_soon(self._bad_frame, (
                f"data-channel message of {size}+ bytes (max {limits.MAX_SCTP_MESSAGE_SIZE})"))

    def disconnect(self, reason: int, action: int) -> None:
        """Send a LeaveRequest then close (the room state is updated by the caller)."""
        if self._closing:
            return
        self._closing = True
        self._left = True
        self.send_signal(rtc_pb.SignalResponse(leave=rtc_pb.LeaveRequest(
            reason=reason, action=action)))  # type: ignore[arg-type]
        self._out.put_nowait(None)
        self._spawn(self._close_ws_soon(), "close")

    async def _close_ws_soon(self) -> None:
        # let the writer flush the Leave first
        for _ in range(50):
            if self._out.empty():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        try:
            await asyncio.wait_for(self.ws.close(), 2.0)
        except Exception:
            logger.debug("session %s: closing the WebSocket failed", self.sid, exc_info=True)
            http_guard.abort_websocket(self.ws)

    async def _shutdown(self, writer: asyncio.Task[None]) -> None:
        if not self._left:
            self._left = True
            self.hub.dispatch(self.room.leave(self.sid,
                                              models_pb.DisconnectReason.CLIENT_INITIATED))
        if self.hub.sessions.get(self.sid) is self:
            del self.hub.sessions[self.sid]
        if not self._closing:
            self._closing = True
            self.send_signal(rtc_pb.SignalResponse(leave=rtc_pb.LeaveRequest(
                reason=models_pb.DisconnectReason.CLIENT_INITIATED,
                action=rtc_pb.LeaveRequest.Action.DISCONNECT)))  # type: ignore[arg-type]
            self._out.put_nowait(None)
        try:
            await asyncio.wait_for(writer, 2.0)
        except Exception:
            logger.debug("session %s: writer did not finish", self.sid, exc_info=True)
            writer.cancel()
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
        if not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(), 2.0)
            except Exception:
                logger.debug("session %s: closing the WebSocket failed", self.sid,
                             exc_info=True)
                http_guard.abort_websocket(self.ws)
        self._release()
        self.closed.set()

    def _release(self) -> None:
        """Drop the listeners and queued state that would keep this closed session in
        reference cycles: it is freed by reference counting, not at the next full gc."""
        for emitter in (self._pub, self._sub, self._dc_reliable, self._dc_lossy):
            if emitter is not None:
                emitter.remove_all_listeners()
        for held in (self._subs, self._pending_adds, self._sub_transceivers, self._tasks):
            held.clear()
        self._unmatched, self._reliable_out, self._offer_sections = [], [], []
        self._pending_remote = {0: [], 1: []}

    # ------------------------------------------------------------------ outgoing

    def send_signal(self, response: rtc_pb.SignalResponse) -> None:
        if self.closed.is_set():
            return
        if self._json:
            self._out.put_nowait(json_format.MessageToJson(response, indent=None))
        else:
            self._out.put_nowait(response.SerializeToString())

    def send_data(self, payload: bytes, reliable: bool) -> None:
        if self._closing:
            return
        channel = self._dc_reliable if reliable else self._dc_lossy
        if channel is None or channel.readyState != "open":
            if reliable and len(self._reliable_out) < MAX_BUFFERED_RELIABLE:
                self._reliable_out.append(payload)
            return
        if not reliable and channel.bufferedAmount > LOSSY_HIGH_WATER:
            return
        try:
            channel.send(payload)
        except Exception:
            logger.debug("data send to %s failed (reliable=%s), packet dropped", self.sid,
                         reliable, exc_info=True)

    def _flush_reliable(self) -> None:
        pending, self._reliable_out = self._reliable_out, []
        if self._dc_reliable is None:
            return
        for payload in pending:
            try:
                self._dc_reliable.send(payload)
            except Exception:
                logger.debug("buffered reliable data send to %s failed, packet dropped",
                             self.sid, exc_info=True)

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
            self.hub.dispatch(room.update_track_settings(
                self.sid, req.track_setting.track_sids, req.track_setting.disabled))
        elif which == "update_metadata":
            self.hub.dispatch(room.update_metadata(self.sid, req.update_metadata))
        elif which == "leave":
            logger.debug("participant %s left", self.identity)
            self._left = True
            self.hub.dispatch(room.leave(self.sid, models_pb.DisconnectReason.CLIENT_INITIATED))
            self.disconnect(models_pb.DisconnectReason.CLIENT_INITIATED,
                            rtc_pb.LeaveRequest.Action.DISCONNECT)
        elif which in ("publish_data_track_request",):
            self.send_signal(rtc_pb.SignalResponse(request_response=rtc_pb.RequestResponse(
                reason=rtc_pb.RequestResponse.Reason.UNSUPPORTED_TYPE,
                message="data tracks are not supported")))
        else:
            logger.debug("ignoring signal request %s", which)

    # ------------------------------------------------------------------ publisher PC

    async def _on_publisher_offer(self, offer: rtc_pb.SessionDescription) -> None:
        async with self._pub_lock:
            sections = sdp.parse_media_sections(offer.sdp)
            self._offer_sections = sections
            logger.debug("publisher offer %d from %s: %s", offer.id, self.identity,
                         [(m.mid, m.kind, m.direction, m.track_id, m.rids) for m in sections])
            await asyncio.wait_for(self._pub.setRemoteDescription(
                RTCSessionDescription(sdp=offer.sdp, type="offer")), PC_OP_TIMEOUT)
            self._limit_sctp(self._pub)
            await self._apply_pending_candidates(0)
            _accept_rid_extensions(self._pub, offer.sdp)
            _answer_as_dtls_server(self._pub, offer.sdp)
            answer = await asyncio.wait_for(self._pub.createAnswer(), PC_OP_TIMEOUT)
            with ice.host_addresses(self.hub.bind_addresses):
                await asyncio.wait_for(self._pub.setLocalDescription(answer), PC_OP_TIMEOUT)
            answer_keepalives_fast(self._pub)
            local = self._pub.localDescription
            self.send_signal(rtc_pb.SignalResponse(answer=rtc_pb.SessionDescription(
                type="answer", sdp=local.sdp, id=offer.id)))
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
        fwd = _attach_forwarder(transceiver.receiver, track.kind, codecs, self.hub.forwarding)
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
            if reliable and self._dc_reliable is None:
                self._dc_reliable = channel
                if channel.readyState == "open":
                    self._flush_reliable()
                else:
                    channel.on("open", self._flush_reliable)
            elif not reliable and self._dc_lossy is None:
                self._dc_lossy = channel

        def on_message(message: bytes | str) -> None:
            data = message.encode() if isinstance(message, str) else message
            self.hub.dispatch(self.room.receive_data(self.sid, data, reliable))

        channel.on("message", on_message)

    def _on_pc_state(self, pc: RTCPeerConnection, is_subscriber: bool) -> None:
        state = pc.connectionState
        logger.debug("participant %s %s PC: %s", self.identity,
                     "subscriber" if is_subscriber else "publisher", state)
        if state == "connected":
            # a track negotiated while this PC was still connecting (the subscriber PC of a
            # participant joining a room with published tracks) would never start
            start_late_transceivers(pc, self._tasks)
            take_over_consent(pc)  # RFC 7675 checks timed with the client's keepalives
        primary = is_subscriber if self.can_subscribe else not is_subscriber
        if state == "connected" and primary:
            self.hub.dispatch(self.room.set_active(self.sid))

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

    def set_paused(self, track_sid: str, paused: bool) -> None:
        self._paused[track_sid] = paused
        fwd = self._subs.get(track_sid)
        if fwd is not None:
            try:
                fwd.set_paused(self._sub, paused)
            except Exception:
                logger.debug("set_paused failed", exc_info=True)

    def _request_negotiation(self) -> None:
        self._neg.dirty = True
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
            self._neg.outstanding = False
            await self._apply_pending_candidates(1)
        if self._neg.dirty or self._pending_adds:
            self._request_negotiation()


SessionFactory = Callable[..., ParticipantSession]
