"""RtcEngine: ties the signal session, the WebSocket and the two peer connections together.

The engine is the asyncio shell around :class:`~aiolivekit.engine.signal.SignalSession`:
it moves bytes between the WebSocket and the session, arms the ping timer, answers
subscriber offers in order, negotiates the publisher PC, carries data packets on the
``_reliable`` / ``_lossy`` channels and reports everything to one listener callback
(the Room) as signal events plus the engine events defined here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiortc import RTCIceServer
from aiortc.rtcdatachannel import RTCDataChannel
from livekit.protocol import models as models_pb, rtc as rtc_pb

from .. import options_check
from .._compat import aiortc_sctp
from ..errors import ConnectError, PublishDataError, SignalError
from ..types import RoomOptions
from ..webrtc import ice
from ..webrtc.pc import filter_ice_servers
from . import signal as sig
from .events import DataReceived, EngineClosed, FullReconnectNeeded, SignalLost
from .peer import PeerTransport
from .publishing import TrackPublisher
from .subscriber import SubscriberTracks, TrackReceived, TrackRemoved
from .ws import SignalTransport, check_url, signal_query

__all__ = ["DataReceived", "EngineClosed", "FullReconnectNeeded", "RtcEngine", "SignalLost",
           "TrackReceived", "TrackRemoved"]

logger = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_ICE_TIMEOUT = 15.0
NEGOTIATION_TIMEOUT = 10.0
CHANNEL_OPEN_TIMEOUT = 10.0
RELIABLE_HIGH_WATER = 1024 * 1024
LOSSY_HIGH_WATER = 64 * 1024
PC_FAULT_GRACE = 1.0


EngineEvent = Any
Listener = Callable[[EngineEvent], None]


class RtcEngine:
    """One connection to a LiveKit server (signal + publisher PC + subscriber PC)."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self.session = sig.SignalSession()
        self._ws: SignalTransport | None = None
        self.publisher: PeerTransport | None = None
        self.subscriber: PeerTransport | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recv_task: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._offer_queue: asyncio.Queue[sig.OfferReceived] = asyncio.Queue()
        self._offer_task: asyncio.Task[None] | None = None
        self._answer_waiter: asyncio.Future[sig.AnswerReceived] | None = None
        self._negotiate_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._send_tasks: set[asyncio.Task[Any]] = set()
        self._data_locks = {"_reliable": asyncio.Lock(), "_lossy": asyncio.Lock()}
        self._data_waiting = {"_reliable": 0, "_lossy": 0}
        self._wake_fut: asyncio.Future[bool] | None = None
        self._negotiated_event = asyncio.Event()  # the publisher PC was negotiated once
        self._sub_channel_added = asyncio.Event()
        self._armed_due = float("inf")  # when the timer loop wakes up next (time.time())
        self.pub_channels: dict[str, RTCDataChannel] = {}
        self.sub_channels: dict[str, RTCDataChannel] = {}
        self._subscriber_tracks = SubscriberTracks(self._emit)
        self.publishing = TrackPublisher(self)
        self.host_addresses: list[str] | None = None
        self.closed = False
        self.close_reason: int | None = None
        self.url = ""
        self.query: dict[str, str] = {}
        self.connect_timeout = DEFAULT_CONNECT_TIMEOUT

    # ------------------------------------------------------------------ helpers

    def _emit(self, event: EngineEvent) -> None:
        try:
            self._listener(event)
        except Exception:
            logger.exception("engine listener failed on %r", type(event).__name__)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _flush(self) -> None:
        """Send whatever the session queued, in order: written at once when no send is
        in progress (an idle client's ping costs no task), else from a task."""
        if not self.session.has_outgoing() or self._ws is None or self._ws.closed:
            return  # kept queued while there is no signal connection (resume sends them)
        self._rearm()
        send_now = getattr(self._ws, "try_send_now", None)
        if send_now is not None and not self._send_lock.locked() and not self._send_tasks:
            pending = self.session.drain()
            sent = 0
            try:
                while sent < len(pending) and send_now(pending[sent]):
                    sent += 1
            except SignalError as exc:  # like _send_queued: the receive loop sees the close
                logger.debug("signal send failed: %s", exc)
                return
            if sent == len(pending):
                return
            self.session._outbox[:0] = pending[sent:]  # the rest, first, from a task
        task = self._spawn(self._send_queued(), "lk-signal-send")
        self._send_tasks.add(task)
        task.add_done_callback(self._send_tasks.discard)

    async def _send_queued(self) -> None:
        async with self._send_lock:
            ws = self._ws
            if ws is None or ws.closed:
                return  # kept queued for the next signal connection
            pending = self.session.drain()
            for i, req in enumerate(pending):
                try:
                    await ws.send(req)
                except Exception as exc:
                    logger.debug("signal send failed: %s", exc, exc_info=True)
                    if ws is not self._ws or ws.closed:
                        # the connection is gone: keep the rest for the resumed one
                        self.session._outbox[:0] = pending[i:]
                    return

    # ------------------------------------------------------------------ connect

    async def connect(self, url: str, token: str, options: RoomOptions, *,
                      client_protocol: int = 0,
                      capabilities: Iterable[int] = ()) -> rtc_pb.JoinResponse:
        """Join: WebSocket, JoinResponse, then the primary PC connected.

        ``client_protocol`` and ``capabilities`` (``ClientInfo.Capability`` values) are
        announced in the signal URL: what the caller's data layer supports.

        Subscriber-primary joins (the usual case) wait for the subscriber PC only and leave
        the publisher PC unnegotiated until :meth:`ensure_publisher_connected` (first data
        packet or track), as the official SDKs do; otherwise both PCs are connected here.
        """
        check_url(url)  # a malformed URL is a ConnectError before any I/O
        self.url = url
        connect_timeout = options.connect_timeout or DEFAULT_CONNECT_TIMEOUT
        ice_timeout = options.ice_timeout or DEFAULT_ICE_TIMEOUT
        rtc_config = options.rtc_config
        self.host_addresses = ice.addresses_for_url(
            url, rtc_config.host_addresses if rtc_config is not None else None)
        try:
            query = signal_query(token, auto_subscribe=options.auto_subscribe,
                                 client_protocol=client_protocol, capabilities=capabilities)
            self.query = dict(query)  # a resume reuses it (plus reconnect=1&sid=...)
            self.connect_timeout = connect_timeout
            self._ws = await SignalTransport.connect(url, token, query, timeout=connect_timeout)
            try:
                first = await asyncio.wait_for(self._ws.recv(), connect_timeout)
            except asyncio.TimeoutError:
                raise ConnectError(
                    f"no JoinResponse from {url} within {connect_timeout:g} s",
                    reason="signal_timeout") from None
            if first is None:
                raise ConnectError("signal connection closed before the JoinResponse",
                                   reason="transport")
            which = first.WhichOneof("message")
            if which == "leave":
                reason = models_pb.DisconnectReason.Name(first.leave.reason)
                raise ConnectError(f"server refused the join: {reason}", reason="leave")
            if which != "join":
                raise ConnectError(f"expected a JoinResponse, got {which}", reason="transport")
            events = self.session.receive(first, time.time())
            join = first.join
            self._create_peers(join, options)
            for ev in events:
                self._emit(ev)
            self._recv_task = self._spawn(self._recv_loop(self._ws), "lk-signal-recv")
            self._timer_task = self._spawn(self._timer_loop(), "lk-signal-timer")
            self._offer_task = self._spawn(self._offer_loop(), "lk-subscriber-offers")
            self._flush()
            self._publisher_timeout = ice_timeout
            if join.subscriber_primary:
                # like the official SDKs: the publisher PC is negotiated on first need
                # (first data packet or track, see ensure_publisher_connected)
                await self._wait_subscriber(ice_timeout)
            else:
                await self._negotiate_publisher_initial(ice_timeout)
                await self._wait_transports(ice_timeout, join.subscriber_primary)
            return join
        except BaseException:
            await self._shutdown(send_leave=False)
            raise

    def _ice_servers(self, join: rtc_pb.JoinResponse, options: RoomOptions) -> list[RTCIceServer]:
        cfg = options.rtc_config
        servers: list[RTCIceServer] = []
        if cfg is not None and cfg.ice_servers:
            for s in cfg.ice_servers:
                servers.append(RTCIceServer(urls=list(s.urls), username=s.username or None,
                                            credential=s.password or None))
        else:
            for js in join.ice_servers:
                servers.append(RTCIceServer(urls=list(js.urls), username=js.username or None,
                                            credential=js.credential or None))
        return filter_ice_servers(servers, self.host_addresses)

    def _create_peers(self, join: rtc_pb.JoinResponse, options: RoomOptions) -> None:
        servers = self._ice_servers(join, options)
        options_check.require_relay_servers(options, servers)
        relay = options_check.relay_only(options)
        self.publisher = PeerTransport(sig.PUBLISHER, ice_servers=servers,
                                       host_addresses=self.host_addresses,
                                       on_candidate=self._local_candidate, relay_only=relay)
        self.subscriber = PeerTransport(sig.SUBSCRIBER, ice_servers=servers,
                                        host_addresses=self.host_addresses,
                                        on_candidate=self._local_candidate, relay_only=relay)
        self.subscriber.pc.on("datachannel", self._on_sub_datachannel)
        subscriber_pc = self.subscriber.pc
        subscriber_pc.on("track", lambda track: self._subscriber_tracks.on_track(subscriber_pc,
                                                                                  track))
        for pt in (self.publisher, self.subscriber):
            pt.pc.on("connectionstatechange", self._make_state_watcher(pt))
        pub = self.publisher.pc
        self.pub_channels["_reliable"] = pub.createDataChannel("_reliable", ordered=True)
        self.pub_channels["_lossy"] = pub.createDataChannel(
            "_lossy", ordered=False, maxRetransmits=0)
        for ch in self.pub_channels.values():
            # the server may also send data on our channels (non subscriber-primary mode)
            ch.on("message", self._make_channel_reader(ch.label))

    def _make_state_watcher(self, pt: PeerTransport) -> Callable[[], None]:
        def watcher() -> None:
            state = pt.pc.connectionState
            if state == "connected" and pt is self.publisher:
                self._publisher_connected_once = True
            # "closed" without close() from us: aiortc closes a PC whose ICE connection
            # ended (e.g. RFC 7675 consent expired), which is a failure too
            if state not in ("failed", "closed") or self.closed or not self._connected_once:
                return
            if pt is self.publisher and not self._publisher_connected_once:
                # a lazily negotiated publisher that never connected: the pending
                # ensure_publisher_connected() reports it; the session itself is fine
                logger.info("publisher peer connection failed before connecting")
                return
            logger.warning("peer connection %d %s", pt.target, state)
            # a server ending the session (duplicate identity, removal) closes the PCs just
            # after its Leave: the signal gets PC_FAULT_GRACE to deliver it first
            asyncio.get_running_loop().call_later(
                PC_FAULT_GRACE, self._need_full_reconnect,
                models_pb.DisconnectReason.CONNECTION_TIMEOUT, f"peer connection {state}")
        return watcher

    _connected_once = False
    _publisher_connected_once = False
    _publisher_attempt: asyncio.Task[None] | None = None
    _publisher_timeout = DEFAULT_ICE_TIMEOUT

    def _local_candidate(self, init: str, target: int) -> None:
        self.session.send_trickle(init, target)
        self._flush()

    async def _negotiate_publisher_initial(self, timeout: float) -> None:
        try:
            await self.negotiate_publisher(timeout=timeout)
        except asyncio.TimeoutError:
            raise ConnectError(f"publisher negotiation timed out after {timeout:g} s",
                               reason="signal_timeout") from None

    async def _wait_subscriber(self, timeout: float) -> None:
        """Connect in subscriber-primary mode: only the subscriber PC must be up."""
        assert self.subscriber is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await self.subscriber.wait_connected(timeout):
            raise self._not_connected("subscriber", timeout, self.subscriber.pc.connectionState)
        # the server's data channels: data it sends us right after the join must not be
        # lost (livekit-server drops packets for a subscriber channel not yet open)
        for label in ("_reliable", "_lossy"):
            while label not in self.sub_channels:
                remaining = deadline - loop.time()
                if self.closed or remaining <= 0:
                    raise ConnectError(
                        f"the server's data channel {label} did not open within {timeout:g} s",
                        reason="ice_timeout")
                self._sub_channel_added.clear()
                try:
                    await asyncio.wait_for(self._sub_channel_added.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            await self._wait_channel_open(self.sub_channels[label],
                                          max(0.1, deadline - loop.time()))
        self._connected_once = True

    def _not_connected(self, which: str, timeout: float, state: str) -> ConnectError:
        if self.closed:
            return ConnectError(f"connection closed while connecting ({self._close_error})",
                                reason="leave")
        return ConnectError(f"ICE/peer connection ({which}) did not connect within "
                            f"{timeout:g} s (state {state})", reason="ice_timeout")

    async def _wait_transports(self, timeout: float, subscriber_primary: bool) -> None:
        assert self.publisher is not None and self.subscriber is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        need = [self.publisher]
        if subscriber_primary:
            need.append(self.subscriber)
        for pt in need:
            if not await pt.wait_connected(max(0.0, deadline - loop.time())):
                which = "publisher" if pt is self.publisher else "subscriber"
                raise self._not_connected(which, timeout, pt.pc.connectionState)
        for ch in self.pub_channels.values():
            await self._wait_channel_open(ch, max(0.5, deadline - loop.time()))
        self._connected_once = True

    async def _wait_channel_open(self, ch: RTCDataChannel, timeout: float) -> None:
        if ch.readyState == "open":
            return
        opened = asyncio.Event()
        ch.once("open", opened.set)
        if ch.readyState == "open":
            return
        try:
            await asyncio.wait_for(opened.wait(), timeout)
        except asyncio.TimeoutError:
            raise ConnectError(f"data channel {ch.label} did not open within {timeout:g} s",
                               reason="ice_timeout") from None

    # ------------------------------------------------------------------ publisher

    async def negotiate_publisher(self, timeout: float = NEGOTIATION_TIMEOUT) -> None:
        """Offer on the publisher PC and apply the server's answer (serialized)."""
        async with self._negotiate_lock:
            await self._negotiate_locked(timeout)

    async def _negotiate_locked(self, timeout: float) -> None:
        if self.closed or self.publisher is None:
            raise SignalError("engine is closed")
        loop = asyncio.get_running_loop()
        self._answer_waiter = loop.create_future()
        try:
            offer = await self.publisher.create_offer()
            self.session.send_offer(offer)
            self._flush()
            answer = await asyncio.wait_for(asyncio.shield(self._answer_waiter), timeout)
            await self.publisher.set_answer(answer.sdp)
            self._negotiated_event.set()
        finally:
            self._answer_waiter = None

    def publisher_ready(self) -> bool:
        """True when the publisher PC is connected and both data channels are open."""
        pt = self.publisher
        if pt is None or not pt.connected:
            return False
        return all(ch.readyState == "open" for ch in self.pub_channels.values())

    def _publisher_connecting(self, timeout: float | None = None) -> asyncio.Task[None]:
        """The one shared attempt to bring the publisher up (started if none is running)."""
        task = self._publisher_attempt
        if task is None or task.done():
            task = self._spawn(self._connect_publisher(
                self._publisher_timeout if timeout is None else timeout), "lk-publisher-connect")
            self._publisher_attempt = task
            # a failed attempt is reported to its awaiters; a later call starts a new one
            task.add_done_callback(_consume_exception)
        return task

    async def ensure_publisher_connected(self, timeout: float | None = None) -> None:
        """Negotiate the publisher PC if needed and wait until it is connected with both
        data channels open (at most ``timeout`` s, by default the ICE timeout).

        Concurrent callers share one attempt. Raises :class:`ConnectError` on failure or
        timeout (a later call tries again).
        """
        if self.closed:
            raise ConnectError("not connected", reason="leave")
        if self.publisher_ready():
            return
        await self._await_publisher(self._publisher_connecting(timeout))

    async def ensure_publisher_negotiated(self, timeout: float | None = None) -> None:
        """Have the publisher PC negotiated once (data channels only), without waiting for
        it to connect; joins the shared attempt of :meth:`ensure_publisher_connected`.

        Call before adding the first transceiver: aiortc (1.16) tears down the shared
        transport when a PC's first offer bundles media under an earlier data channel, so
        the first publisher offer must carry the data channels alone (as in eager mode).
        Raises :class:`ConnectError` on failure or timeout.
        """
        if self._negotiated_event.is_set():
            return
        if self.closed:
            raise ConnectError("not connected", reason="leave")
        task = self._publisher_connecting(timeout)
        waiter = asyncio.ensure_future(self._negotiated_event.wait())
        try:
            # bounded: the attempt itself times out after ``timeout``
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self._negotiated_event.is_set():
            await self._await_publisher(task)  # raises the attempt's error
            if not self._negotiated_event.is_set():
                raise ConnectError("publisher negotiation failed", reason="signal_timeout")

    async def _await_publisher(self, task: asyncio.Task[None]) -> None:
        # shield: a caller giving up (cancelled) does not abort the shared attempt
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelling = getattr(asyncio.current_task(), "cancelling", None)  # 3.11+
            if task.cancelled() and not (cancelling is not None and cancelling()):
                raise ConnectError("connection closed while connecting the publisher",
                                   reason="leave") from None
            raise

    async def _negotiate_once(self, timeout: float) -> None:
        async with self._negotiate_lock:  # a publish_track negotiation may be running
            if not self._negotiated_event.is_set():
                await self._negotiate_locked(timeout)

    async def _connect_publisher(self, timeout: float) -> None:
        pt = self.publisher
        if self.closed or pt is None:
            raise ConnectError("not connected", reason="leave")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self._negotiate_once(timeout), timeout)
        except (asyncio.TimeoutError, SignalError) as exc:
            if self.closed:
                raise ConnectError(f"connection closed ({self._close_error})",
                                   reason="leave") from None
            raise ConnectError(f"publisher negotiation failed: {exc or 'timed out'} "
                               f"(after {timeout:g} s)", reason="signal_timeout") from None
        if not await pt.wait_connected(max(0.0, deadline - loop.time())):
            raise self._not_connected("publisher", timeout, pt.pc.connectionState)
        for ch in self.pub_channels.values():
            await self._wait_channel_open(ch, max(0.1, deadline - loop.time()))

    # ------------------------------------------------------------------ loops

    async def _recv_loop(self, ws: SignalTransport) -> None:
        try:
            while not self.closed and ws is self._ws:
                resp = await ws.recv()
                if ws is not self._ws:
                    return  # replaced by a resumed connection
                if resp is None:
                    if self.session.signal_down:  # a resume in progress lost its signal
                        self._fail_answer_waiter("signal connection closed during the resume")
                    elif not self.closed:
                        self._signal_lost(models_pb.ReconnectReason.RR_SIGNAL_DISCONNECTED,
                                          "signal connection closed")
                    return
                events = self.session.receive(resp, time.time())
                self._rearm()
                for ev in events:
                    await self._handle(ev)
                self._flush()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("signal receive loop failed")
            if not self.closed and ws is self._ws:
                self._signal_lost(models_pb.ReconnectReason.RR_SIGNAL_DISCONNECTED, str(exc))

    async def _handle(self, ev: sig.SignalEvent) -> None:
        if isinstance(ev, sig.OfferReceived):
            self._offer_queue.put_nowait(ev)
        elif isinstance(ev, sig.AnswerReceived):
            if self._answer_waiter is not None and not self._answer_waiter.done():
                self._answer_waiter.set_result(ev)
            else:
                logger.debug("unexpected publisher answer")
        elif isinstance(ev, sig.TrickleReceived):
            pt = self.publisher if ev.target == sig.PUBLISHER else self.subscriber
            if pt is not None:
                await pt.add_remote_candidate(ev.candidate_init, ev.final)
        elif isinstance(ev, sig.LeaveReceived):
            self._emit(ev)
            if ev.action == rtc_pb.LeaveRequest.RESUME:
                self._signal_lost(models_pb.ReconnectReason.RR_UNKNOWN,
                                  "server asked to resume")
            elif ev.action == rtc_pb.LeaveRequest.RECONNECT:
                self._need_full_reconnect(ev.reason, "server asked for a full reconnect")
            else:
                await self._fail(ev.reason, "server sent leave", send_leave=False)
        elif isinstance(ev, sig.PingTimeout):
            self._signal_lost(models_pb.ReconnectReason.RR_SIGNAL_DISCONNECTED,
                              f"ping timeout (server silent for {ev.silent_for:.1f} s)")
        elif isinstance(ev, sig.ResumeAccepted):
            self.resume_response = ev.response
        elif isinstance(ev, sig.TrackPublishedAck):
            self.publishing.on_signal(ev)
        else:
            if isinstance(ev, sig.RequestAnswered):
                self.publishing.on_signal(ev)
            self._emit(ev)

    def _rearm(self) -> None:
        """Wake the timer loop only if the session's next deadline moved earlier.

        A received message pushes the ping-timeout deadline later, which the armed
        (earlier) wake-up handles anyway: no extra wake-up per message.
        """
        fut = self._wake_fut
        if fut is None or fut.done():
            return  # the loop is not sleeping: it recomputes its deadline anyway
        due = self.session.next_timer()
        if due is not None and due < self._armed_due:
            fut.set_result(False)

    async def _timer_loop(self) -> None:
        """Run the session's timers: one future per sleep, resolved by a ``call_later``
        handle (deadline reached: True) or by :meth:`_rearm` (recompute: False)."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            due = self.session.next_timer()
            now = time.time()
            delay = 3600.0 if due is None else max(0.0, due - now)
            self._armed_due = now + delay
            fut: asyncio.Future[bool] = loop.create_future()
            self._wake_fut = fut
            handle = loop.call_later(delay, _resolve, fut, True)
            try:
                fired = await fut
            finally:
                handle.cancel()
                self._wake_fut = None
            if not fired:
                continue  # deadline moved earlier: recompute
            for ev in self.session.handle_timer(time.time()):
                await self._handle(ev)
            self._flush()

    async def _offer_loop(self) -> None:
        while not self.closed:
            offer = await self._offer_queue.get()
            if self.subscriber is None:
                return
            try:
                self._subscriber_tracks.offer_applying(offer)
                answer = await self.subscriber.answer(offer.sdp)
                self.last_offer_id = offer.id
                self.session.send_answer(answer, offer.id)
                self._flush()
                self._subscriber_tracks.offer_applied(self.subscriber.pc, offer)
            except Exception as exc:
                logger.exception("answering subscriber offer failed")
                if not self.closed:
                    await self._fail(models_pb.DisconnectReason.STATE_MISMATCH,
                                     f"subscriber negotiation failed: {exc}")
                return

    # ------------------------------------------------------------------ data

    def _on_sub_datachannel(self, channel: RTCDataChannel) -> None:
        self.sub_channels[channel.label] = channel
        self._sub_channel_added.set()
        channel.on("message", self._make_channel_reader(channel.label))

    def _make_channel_reader(self, label: str) -> Callable[[Any], None]:
        reliable = label == "_reliable"

        def on_message(message: Any) -> None:
            if label in ("_reliable", "_lossy"):
                data = message.encode() if isinstance(message, str) else bytes(message)
                self._emit(DataReceived(data, reliable))
        return on_message

    def reliable_max_message_size(self) -> int:
        """What the server's SCTP accepts in one message (64 KiB if not advertised)."""
        return aiortc_sctp.sctp_max_message_size(self.publisher and self.publisher.pc.sctp)

    async def send_data(self, data: bytes | Callable[[int], bytes], *, reliable: bool) -> None:
        """Send one encoded DataPacket on the publisher's reliable or lossy channel.

        Brings the publisher up first if it is not (subscriber-primary joins negotiate it
        lazily). Packets sent concurrently go out in call order: once one has to wait
        (publisher connecting, reliable channel congested) later ones queue behind it.
        ``data`` may be a callable that encodes the packet given the reliable size limit
        (:meth:`reliable_max_message_size`, known once the publisher is connected); it is
        called right before sending, in call order.
        """
        if self.closed:
            raise PublishDataError("not connected")
        label = "_reliable" if reliable else "_lossy"
        ch = self.pub_channels.get(label)
        if ch is None:
            raise PublishDataError("not connected")
        if (ch.readyState == "open" and not self._data_waiting[label]
                and (not reliable or ch.bufferedAmount <= RELIABLE_HIGH_WATER)):
            self._send_now(ch, _encoded(data, self), reliable)
            return
        attempt = None if self.publisher_ready() else self._publisher_connecting()
        self._data_waiting[label] += 1
        try:
            async with self._data_locks[label]:  # FIFO: keeps the call order
                if ch.readyState != "open":
                    if attempt is None:
                        attempt = self._publisher_connecting()
                    try:
                        await self._await_publisher(attempt)
                    except ConnectError as exc:
                        raise PublishDataError(
                            f"cannot send data: publisher not connected: {exc.message}") from None
                    if ch.readyState != "open":
                        raise PublishDataError(f"data channel {label} is {ch.readyState}")
                if self.closed:
                    raise PublishDataError("not connected")
                if reliable and ch.bufferedAmount > RELIABLE_HIGH_WATER:
                    low = asyncio.Event()
                    ch.bufferedAmountLowThreshold = RELIABLE_HIGH_WATER // 2
                    ch.once("bufferedamountlow", low.set)
                    try:
                        await asyncio.wait_for(low.wait(), 30.0)
                    except asyncio.TimeoutError:
                        raise PublishDataError("reliable data channel is congested") from None
                self._send_now(ch, _encoded(data, self), reliable)
        finally:
            self._data_waiting[label] -= 1

    def _send_now(self, ch: RTCDataChannel, data: bytes, reliable: bool) -> None:
        if not reliable and ch.bufferedAmount > LOSSY_HIGH_WATER:
            logger.debug("dropping lossy packet: channel congested")
            return
        try:
            ch.send(data)
        except Exception as exc:
            raise PublishDataError(f"sending data failed: {exc}") from exc

    # ------------------------------------------------------------------ signal intents

    def send_signal(self) -> None:
        """Flush requests queued on :attr:`session` by the caller."""
        self._flush()

    # ------------------------------------------------------------------ lost / resume

    resume_response: rtc_pb.ReconnectResponse | None = None
    last_offer_id = 0
    _full_reconnect_asked = False

    def _signal_lost(self, reason: int, error: str) -> None:
        """The signal connection is gone: drop it, hold requests, tell the listener once
        (a resume replaces it: :meth:`resume`)."""
        if self.closed or self.session.signal_down:
            return
        logger.info("signal connection lost: %s", error)
        self.session.signal_lost()
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.abort()
        self._emit(SignalLost(reason, error))

    def _need_full_reconnect(self, reason: int, error: str) -> None:
        if self.closed or self._full_reconnect_asked:
            return
        self._full_reconnect_asked = True
        logger.info("full reconnect needed: %s", error)
        self._emit(FullReconnectNeeded(reason, error))

    def _fail_answer_waiter(self, error: str) -> None:
        waiter = self._answer_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(SignalError(error))

    def signal_open(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def healthy(self) -> bool:
        """Signal open, both PCs usable, no full reconnect asked for (checked after a
        recovery attempt: a fault reported during it is not lost)."""
        return self.signal_open() and self.peers_alive() and not self._full_reconnect_asked

    def install_signal(self, ws: SignalTransport) -> None:
        """Use ``ws`` (a resumed signal connection) from now on."""
        self._ws = ws
        self._recv_task = self._spawn(self._recv_loop(ws), "lk-signal-recv")
        self._rearm()

    def drop_signal(self) -> None:
        """Drop the current signal connection without reporting it (a failed resume)."""
        ws, self._ws = self._ws, None
        self.session.signal_lost()
        if ws is not None:
            ws.abort()

    async def handle_signal_event(self, ev: sig.SignalEvent) -> None:
        await self._handle(ev)

    def timers_changed(self) -> None:
        """The session's timers moved (e.g. pings start again after a resume)."""
        self._rearm()

    def publisher_was_negotiated(self) -> bool:
        return self._negotiated_event.is_set()

    def close_signal(self) -> None:
        """Drop the signal connection as if the network did (a resume follows)."""
        self._signal_lost(models_pb.ReconnectReason.RR_SIGNAL_DISCONNECTED,
                          "signal connection closed by the client")

    def peers_alive(self) -> bool:
        """Whether both peer connections can be kept (a resume is possible)."""
        for pt in (self.publisher, self.subscriber):
            if pt is None or pt.closed or pt.pc.connectionState in ("failed", "closed"):
                return False
        return True

    async def abandon(self) -> None:
        """Close everything without a LeaveRequest and without :class:`EngineClosed`
        (a full reconnect replaces this engine)."""
        await self._shutdown(send_leave=False,
                             reason=models_pb.DisconnectReason.STATE_MISMATCH)

    # ------------------------------------------------------------------ close

    _close_error = ""
    unacked_reliable: int | None = 0  # reliable messages not acked by the server at close

    async def _fail(self, reason: int, error: str, *, send_leave: bool = True) -> None:
        if self.closed:
            return
        self._close_error = error
        logger.info("session ended: %s (%s)", error, models_pb.DisconnectReason.Name(reason)
                    if reason in models_pb.DisconnectReason.values() else reason)
        await self._shutdown(send_leave=send_leave, reason=reason)
        self._emit(EngineClosed(reason, error))

    async def close(self, reason: int = models_pb.DisconnectReason.CLIENT_INITIATED) -> None:
        """Leave (client initiated) and close everything."""
        await self._shutdown(send_leave=True, reason=reason)

    async def _shutdown(self, *, send_leave: bool,
                        reason: int = models_pb.DisconnectReason.CLIENT_INITIATED) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.publishing.close()
        current = asyncio.current_task()
        if self._answer_waiter is not None and not self._answer_waiter.done():
            self._answer_waiter.cancel()
        ws = self._ws
        if ws is not None and not ws.closed and send_leave and self.session.join is not None:
            self.session.leave(reason)
            try:
                async with self._send_lock:
                    for req in self.session.drain():
                        await asyncio.wait_for(ws.send(req), 2.0)
            except Exception as exc:  # includes asyncio.TimeoutError
                logger.debug("sending leave failed: %s", exc, exc_info=True)
        self.session.closed = True
        for task in list(self._tasks):
            if task is not current and not task.done():
                task.cancel()
        for task in list(self._tasks):
            if task is not current:
                try:
                    await asyncio.wait_for(asyncio.shield(task), 2.0)
                except asyncio.CancelledError:
                    pass  # the task was cancelled above: expected
                except BaseException:  # closing goes on whatever a task did
                    logger.debug("engine task %r ended with an error", task, exc_info=True)
        self.unacked_reliable = aiortc_sctp.sctp_unacked_messages(self.pub_channels.get("_reliable"))
        for pt in (self.publisher, self.subscriber):
            if pt is not None:
                await pt.close()
        if ws is not None:
            await ws.close()


def _encoded(data: bytes | Callable[[int], bytes], engine: RtcEngine) -> bytes:
    return data(engine.reliable_max_message_size()) if callable(data) else data


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def _consume_exception(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's failure as retrieved (its awaiters got it already)."""
    if not task.cancelled():
        task.exception()
