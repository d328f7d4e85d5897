"""RTP passthrough forwarding for the SFU (no decoding, no transcoding).

One :class:`TrackForwarder` per published track. On the publisher side the aiortc
receiver's class is switched to :class:`ForwardingReceiver`, which hands every RTP
packet (RTX unwrapped) to the forwarder and still runs aiortc's own pipeline so NACK,
receiver reports, REMB and PLI toward the publisher keep working; the decoder queue is
replaced by a sink, so nothing is decoded. On each subscriber PC a sendonly transceiver
is added whose sender is switched to :class:`ForwardingSender`: its RTP loop pulls
packets from a bounded queue, rewrites SSRC / sequence / timestamp / payload type /
header extensions (:mod:`.rtp_rewrite`), keeps its own history to answer NACKs,
updates the sender-report counters and SRTP-sends through the transport. Subscriber
PLI/FIR become a (rate-limited) PLI toward the publisher.

Performance: when a subscriber's transport is connected and its queue is empty, the
packet is rewritten, protected and written to the UDP socket synchronously from the
publisher's receive path (no task switch per packet and subscriber); the queue and the
RTP task take over otherwise. The publisher receiver's jitter buffer is replaced by one
that never assembles frames (nothing is decoded). See ``bench/bench_forwarder.py``.

This module depends on private names of aiortc 1.16.0; they are checked when a
forwarder is attached and a :class:`AiortcCompatibilityError` names what is missing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import random
import time
from typing import Any

import aiortc
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import (
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import RtpPacket, unwrap_rtx

from ..errors import AioLiveKitError
from .rtp_rewrite import (
    KeyframeRequestLimiter,
    RtpHeaderWriter,
    RtpMunger,
    abs_send_time,
    h264_fmtp_score,
    is_keyframe_start,
    ntp_time,
    rtx_wrap,
)

__all__ = [
    "AiortcCompatibilityError",
    "ForwardingReceiver",
    "ForwardingSender",
    "TrackForwarder",
]

logger = logging.getLogger(__name__)

SUPPORTED_AIORTC = "1.16.0"
URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

AUDIO_QUEUE_SIZE = 64
VIDEO_QUEUE_SIZE = 512
# packets kept per subscriber stream to answer NACKs (audio is rarely NACKed)
VIDEO_HISTORY_SIZE = 1024
AUDIO_HISTORY_SIZE = 128
KEYFRAME_MIN_INTERVAL = 0.5  # seconds between PLIs sent upstream
SOCKET_BUFFER_LIMIT = 1 << 20  # bytes buffered by asyncio's UDP transport before dropping
FAST_PATH = True  # send synchronously from the receive path when the transport allows
_DTLS_CONNECTED = State.CONNECTED

_RECEIVER_ATTRS = (
    "_RTCRtpReceiver__decoder_queue",
    "_RTCRtpReceiver__codecs",
    "_RTCRtpReceiver__rtx_ssrc",
    "_RTCRtpReceiver__started",
    "_RTCRtpReceiver__jitter_buffer",
)
_RECEIVER_METHODS = ("_handle_rtp_packet", "_send_rtcp_pli", "receive")
_SENDER_ATTRS = (
    "_RTCRtpSender__rtp_started",
    "_RTCRtpSender__rtp_exited",
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__rtx_payload_type",
    "_RTCRtpSender__rtx_sequence_number",
    "_RTCRtpSender__mid",
    "_RTCRtpSender__started",
)
_SENDER_METHODS = ("_run_rtp", "_retransmit", "_send_keyframe", "send", "_handle_rtcp_packet")


if getattr(aiortc, "__version__", None) != SUPPORTED_AIORTC:
    logger.warning(
        "aiortc %s installed; the RTP forwarder was written against %s private names",
        getattr(aiortc, "__version__", "?"),
        SUPPORTED_AIORTC,
    )


class AiortcCompatibilityError(AioLiveKitError):
    """The installed aiortc lacks a private hook the forwarder relies on."""


def _check_hooks(obj: object, attrs: tuple[str, ...], methods: tuple[str, ...]) -> None:
    missing = [a for a in attrs if not hasattr(obj, a)]
    missing += [m for m in methods if not callable(getattr(type(obj), m, None))]
    if missing:
        raise AiortcCompatibilityError(
            f"aiortc {getattr(aiortc, '__version__', '?')} is not supported by the RTP "
            f"forwarder (built for {SUPPORTED_AIORTC}): {type(obj).__name__} lacks "
            + ", ".join(missing)
        )


class _DecoderSink:
    """Replaces the receiver's decoder queue: frames are dropped, only the stop
    sentinel reaches the (idle) decoder thread."""

    def __init__(self) -> None:
        self._stop: queue.Queue[Any] = queue.Queue()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self._stop.put(None)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._stop.get(block, timeout)


class _NoFrameJitterBuffer:
    """Replaces the receiver's jitter buffer: the relay never decodes, so it never
    assembles frames (saves about a fifth of the receive cost per packet)."""

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        return False, None


class _PacketQueue:
    """Bounded single-consumer queue; when full the oldest packet is dropped."""

    __slots__ = ("_items", "_waiter", "dropped", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[RtpPacket] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.maxlen = maxlen
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, packet: RtpPacket) -> None:
        items = self._items
        if len(items) >= self.maxlen:
            items.popleft()
            self.dropped += 1
        items.append(packet)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._items.clear()

    async def wait(self) -> None:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None


class _ForwardedTrack(MediaStreamTrack):
    """Gives aiortc a kind and an id for the SDP; media comes from the forwarder."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id

    async def recv(self) -> Any:
        raise MediaStreamError("forwarded track carries RTP only")


class ForwardingReceiver(RTCRtpReceiver):
    """aiortc receiver that also hands every RTP packet to a :class:`TrackForwarder`."""

    _lk_forwarder: TrackForwarder | None
    # aiortc 1.16 private state (declared for the type checker only)
    _RTCRtpReceiver__started: bool
    _RTCRtpReceiver__decoder_queue: Any
    _RTCRtpReceiver__rtx_ssrc: dict[int, int]

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        forwarder = self._lk_forwarder
        if not self._RTCRtpReceiver__started:
            if not isinstance(self._RTCRtpReceiver__decoder_queue, _DecoderSink):
                self._RTCRtpReceiver__decoder_queue = _DecoderSink()
            if forwarder is not None:
                forwarder._on_receive_parameters(parameters)
        await super().receive(parameters)

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        forwarder = self._lk_forwarder
        if forwarder is not None and self._enabled:
            try:
                forwarder._on_rtp(packet, self)
            except Exception:  # never let a forwarding bug kill the publisher's transport
                forwarder._errors += 1
                if forwarder._errors <= 5:
                    logger.exception("forwarding an RTP packet failed")
        await super()._handle_rtp_packet(packet, arrival_time_ms)


class ForwardingSender(RTCRtpSender):
    """aiortc sender whose RTP loop forwards packets instead of encoding a track.

    Packets reach it through :meth:`_lk_deliver`. When the transport is connected and
    nothing is queued they are rewritten, SRTP-protected and written to the socket
    right away (no task switch per packet and subscriber); otherwise they wait in the
    bounded queue that :meth:`_run_rtp` drains through aiortc's async send path.
    """

    # aiortc 1.16 private state (declared for the type checker only)
    _RTCRtpSender__started: bool
    _RTCRtpSender__rtx_payload_type: int | None
    _RTCRtpSender__rtx_sequence_number: int
    _RTCRtpSender__mid: str | None
    _RTCRtpSender__rtp_started: asyncio.Event
    _RTCRtpSender__rtp_exited: asyncio.Event
    _RTCRtpSender__ntp_timestamp: int
    _RTCRtpSender__rtp_timestamp: int
    _RTCRtpSender__octet_count: int
    _RTCRtpSender__packet_count: int

    _lk_forwarder: TrackForwarder | None
    _lk_queue: _PacketQueue
    _lk_paused: bool
    _lk_running: bool
    _lk_fast: bool
    _lk_dtls: Any
    _lk_nominated: dict[int, Any]
    _lk_route: tuple[Any, Any, tuple[str, int]] | None
    _lk_munger: RtpMunger | None
    _lk_writer: RtpHeaderWriter | None
    _lk_parameters: RTCRtpSendParameters | None
    _lk_history: dict[int, tuple[int, bytes, int]]
    _lk_history_size: int
    _lk_mime: str
    _lk_pt_ok: dict[int, bool]
    _lk_octets: int
    _lk_count: int
    _lk_dropped_socket: int

    def _lk_setup(self, forwarder: TrackForwarder) -> None:
        self._lk_forwarder = forwarder
        self._lk_queue = _PacketQueue(
            VIDEO_QUEUE_SIZE if forwarder.kind == "video" else AUDIO_QUEUE_SIZE
        )
        self._lk_paused = False
        self._lk_running = False
        self._lk_fast = False
        self._lk_route = None
        self._lk_munger = None
        self._lk_writer = None
        self._lk_parameters = None
        self._lk_history = {}
        self._lk_history_size = (
            VIDEO_HISTORY_SIZE if forwarder.kind == "video" else AUDIO_HISTORY_SIZE
        )
        self._lk_mime = ""
        self._lk_pt_ok = {}
        self._lk_octets = 0
        self._lk_count = 0
        self._lk_dropped_socket = 0

    def _lk_detach(self) -> None:
        forwarder = self._lk_forwarder
        self._lk_forwarder = None
        self._lk_queue.clear()
        if forwarder is not None:
            forwarder._remove_active(self)

    def _lk_set_paused(self, paused: bool) -> None:
        self._lk_paused = paused
        if self._lk_munger is not None:
            self._lk_munger.set_paused(paused)
        if paused:
            self._lk_queue.clear()

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        if not self._RTCRtpSender__started:
            self._lk_parameters = parameters
        await super().send(parameters)

    def _send_keyframe(self) -> None:
        forwarder = self._lk_forwarder
        if forwarder is not None:
            forwarder.request_keyframe()

    async def _retransmit(self, sequence_number: int) -> None:
        entry = self._lk_history.get(sequence_number % self._lk_history_size)
        if entry is None or entry[0] != sequence_number:
            return
        data = entry[1]
        rtx_pt = self._RTCRtpSender__rtx_payload_type
        if rtx_pt is not None:
            rtx_seq = self._RTCRtpSender__rtx_sequence_number
            data = rtx_wrap(data, entry[2], rtx_pt, rtx_seq, self._rtx_ssrc)
            self._RTCRtpSender__rtx_sequence_number = (rtx_seq + 1) & 0xFFFF
        await self.transport._send_rtp(data)

    def _lk_build_writer(self, codec: RTCRtpCodecParameters) -> RtpHeaderWriter:
        ids: dict[str, int] = {}
        params = self._lk_parameters
        if params is not None:
            for ext in params.headerExtensions:
                ids[ext.uri] = ext.id
        if codec.payloadType is None:
            raise AioLiveKitError("negotiated codec has no payload type")
        return RtpHeaderWriter(
            self._ssrc,
            codec.payloadType,
            mid=self._RTCRtpSender__mid,
            mid_id=ids.get(URI_MID),
            abs_send_time_id=ids.get(URI_ABS_SEND_TIME),
            audio_level_id=ids.get(URI_AUDIO_LEVEL),
        )

    # -- per packet -----------------------------------------------------------------

    def _lk_rewrite(self, packet: RtpPacket, now: float, send_time: int, ntp: int) -> bytes | None:
        """Rewrite one publisher packet for this subscriber (``None`` = drop)."""
        forwarder = self._lk_forwarder
        munger = self._lk_munger
        writer = self._lk_writer
        if forwarder is None or munger is None or writer is None or not self._enabled:
            return None
        pt = packet.payload_type
        ok = self._lk_pt_ok.get(pt)
        if ok is None:
            in_mime = forwarder._mime_for_pt(pt)
            ok = self._lk_pt_ok[pt] = in_mime is not None and in_mime == self._lk_mime
            if not ok:
                logger.warning(
                    "cannot forward %s to a subscriber that negotiated %s", in_mime, self._lk_mime
                )
        if not ok:
            return None
        payload = packet.payload
        keyframe = False
        if not munger._gate_open:
            keyframe = is_keyframe_start(self._lk_mime, payload)
        mapped = munger.rewrite(
            packet.ssrc, packet.sequence_number, packet.timestamp, now, keyframe
        )
        if mapped is None:
            if munger.needs_keyframe():
                forwarder.request_keyframe()
            return None
        seq, ts = mapped
        if packet.csrc or packet.padding_size:
            data, header_len = writer.build(
                packet.marker,
                seq,
                ts,
                payload,
                csrc=packet.csrc,
                audio_level=packet.extensions.audio_level,
                send_time=send_time,
                padding_size=packet.padding_size,
            )
        else:
            data = writer.build_simple(
                packet.marker, seq, ts, payload, packet.extensions.audio_level, send_time
            )
            header_len = len(data) - len(payload)
        self._lk_history[seq % self._lk_history_size] = (seq, data, header_len)
        self._lk_octets += len(payload)
        self._lk_count += 1
        self._RTCRtpSender__ntp_timestamp = ntp
        self._RTCRtpSender__rtp_timestamp = ts
        self._RTCRtpSender__octet_count = self._lk_octets & 0xFFFFFFFF
        self._RTCRtpSender__packet_count = self._lk_count & 0xFFFFFFFF
        forwarder.packets_forwarded += 1
        return data

    def _lk_deliver(self, packet: RtpPacket, now: float, send_time: int, ntp: int) -> None:
        """Forward now if the socket is reachable synchronously, else queue."""
        if self._lk_fast and not self._lk_queue._items:
            dtls = self._lk_dtls
            if dtls._state is _DTLS_CONNECTED:
                pair = self._lk_nominated.get(1)
                if pair is not None:
                    data = self._lk_rewrite(packet, now, send_time, ntp)
                    if data is None:
                        return
                    route = self._lk_route
                    if route is None or route[0] is not pair:
                        route = self._lk_route = (pair, pair.protocol.transport, pair.remote_addr)
                    udp = route[1]
                    if udp is None or udp.get_write_buffer_size() > SOCKET_BUFFER_LIMIT:
                        self._lk_dropped_socket += 1
                        return
                    data = dtls._tx_srtp.protect(data)
                    udp.sendto(data, route[2])
                    dtls._RTCDtlsTransport__tx_bytes += len(data)
                    dtls._RTCDtlsTransport__tx_packets += 1
                    return
        self._lk_queue.put(packet)

    # -- RTP task -------------------------------------------------------------------

    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        self._RTCRtpSender__rtp_started.set()
        try:
            await self._lk_forward_loop(codec)
        except (asyncio.CancelledError, ConnectionError):
            pass
        except Exception:  # must still set __rtp_exited or stop() hangs
            logger.exception("forwarding sender failed")
        finally:
            self._lk_running = False
            self._lk_fast = False
            if self._lk_forwarder is not None:
                self._lk_forwarder._remove_active(self)
            track = self.track
            if track is not None:
                track.stop()
            self._RTCRtpSender__rtp_exited.set()

    async def _lk_forward_loop(self, codec: RTCRtpCodecParameters) -> None:
        forwarder = self._lk_forwarder
        if forwarder is None:
            return
        self._lk_mime = codec.mimeType.lower()
        video = forwarder.kind == "video"
        munger = RtpMunger(
            codec.clockRate,
            initial_sequence=random.randrange(0, 1 << 15),
            initial_timestamp=random.getrandbits(32),
            wait_for_keyframe=video,
        )
        munger.set_paused(self._lk_paused)
        self._lk_munger = munger
        self._lk_writer = self._lk_build_writer(codec)
        rtp_queue = self._lk_queue
        items = rtp_queue._items
        send_rtp = self.transport._send_rtp
        rtp_queue.clear()
        self._lk_running = True
        self._lk_dtls = self.transport
        self._lk_fast = FAST_PATH and _fast_path_available(self._lk_dtls)
        if self._lk_fast:
            self._lk_nominated = self._lk_dtls.transport._connection._nominated
        forwarder._add_active(self)
        if video:
            forwarder.request_keyframe()
        while True:
            await rtp_queue.wait()
            now = time.time()
            send_time = abs_send_time(now)
            ntp = ntp_time(now)
            while items:
                data = self._lk_rewrite(items.popleft(), now, send_time, ntp)
                if data is not None:
                    await send_rtp(data)


def _fast_path_available(dtls: Any) -> bool:
    """Whether the private names the synchronous send path uses exist (aiortc 1.16)."""
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    ok = (
        hasattr(dtls, "_state")
        and hasattr(dtls, "_tx_srtp")
        and hasattr(dtls, "_RTCDtlsTransport__tx_bytes")
        and hasattr(dtls, "_RTCDtlsTransport__tx_packets")
        and isinstance(getattr(connection, "_nominated", None), dict)
    )
    if not ok:
        logger.warning("aiortc/aioice internals changed: forwarding through the async path")
    return ok


class _Subscription:
    __slots__ = ("pc", "sender", "transceiver")

    def __init__(
        self, pc: RTCPeerConnection, transceiver: RTCRtpTransceiver, sender: ForwardingSender
    ) -> None:
        self.pc = pc
        self.transceiver = transceiver
        self.sender = sender


class TrackForwarder:
    """Forwards one published track's RTP to any number of subscriber PCs."""

    def __init__(self, receiver: RTCRtpReceiver, kind: str) -> None:
        self.kind = kind
        self._receiver = receiver
        self._subscriptions: dict[RTCPeerConnection, _Subscription] = {}
        self._active: tuple[ForwardingSender, ...] = ()
        self._codecs: dict[int, RTCRtpCodecParameters] = {}
        self._rtx_apt: dict[int, int] = {}
        self._codec: RTCRtpCodecParameters | None = None
        self._last_pt: int | None = None
        self._publisher_ssrc: int | None = None
        self._limiter = KeyframeRequestLimiter(KEYFRAME_MIN_INTERVAL)
        self._keyframe_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.mime_type: str | None = None
        self.packets_received = 0
        self.packets_forwarded = 0
        self.keyframe_requests_sent = 0
        self._errors = 0

    # -- construction -------------------------------------------------------------

    @classmethod
    def attach(
        cls,
        receiver: RTCRtpReceiver,
        kind: str,
        *,
        codecs: list[RTCRtpCodecParameters] | None = None,
    ) -> TrackForwarder:
        """Turn ``receiver`` into a forwarding receiver (call inside ``pc.on("track")``).

        ``codecs`` (optional, e.g. ``transceiver._codecs``) makes :attr:`mime_type`
        known before the publisher's transport connects.
        """
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', got {kind!r}")
        if not isinstance(receiver, RTCRtpReceiver):
            raise TypeError(f"expected an aiortc RTCRtpReceiver, got {type(receiver).__name__}")
        _check_hooks(receiver, _RECEIVER_ATTRS, _RECEIVER_METHODS)
        if isinstance(receiver, ForwardingReceiver) and receiver._lk_forwarder is not None:
            raise ValueError("receiver already has a TrackForwarder")
        if receiver._RTCRtpReceiver__started:  # type: ignore[attr-defined]
            raise ValueError("receiver already started: attach the forwarder inside pc.on('track')")
        forwarder = cls(receiver, kind)
        receiver._RTCRtpReceiver__decoder_queue = _DecoderSink()  # type: ignore[attr-defined]
        receiver._RTCRtpReceiver__jitter_buffer = _NoFrameJitterBuffer()  # type: ignore[attr-defined]
        receiver.__class__ = ForwardingReceiver
        receiver._lk_forwarder = forwarder  # type: ignore[attr-defined]
        if codecs:
            forwarder._set_codecs(codecs)
        return forwarder

    def _set_codecs(self, codecs: list[RTCRtpCodecParameters]) -> None:
        self._codecs = {c.payloadType: c for c in codecs if c.payloadType is not None}
        self._rtx_apt = {}
        for c in codecs:
            if c.payloadType is not None and c.name.lower() == "rtx":
                apt = c.parameters.get("apt")
                if isinstance(apt, int):
                    self._rtx_apt[c.payloadType] = apt
        if self._codec is None:
            media = [c for c in codecs if c.name.lower() != "rtx"]
            if media:
                self._codec = media[0]
                self.mime_type = _canonical_mime(media[0].mimeType)

    def _on_receive_parameters(self, parameters: RTCRtpReceiveParameters) -> None:
        self._set_codecs(list(parameters.codecs))
        # subscribers added before the codec was known: restrict their next offer
        try:
            preferences = self._codec_preferences()
        except AioLiveKitError as exc:
            logger.warning("%s", exc)
            return
        for sub in self._subscriptions.values():
            if preferences and not sub.transceiver._preferred_codecs:
                sub.transceiver.setCodecPreferences(preferences)

    def _mime_for_pt(self, pt: int) -> str | None:
        codec = self._codecs.get(pt)
        return codec.mimeType.lower() if codec is not None else None

    # -- receive side -------------------------------------------------------------

    def _on_rtp(self, packet: RtpPacket, receiver: ForwardingReceiver) -> None:
        pt = packet.payload_type
        apt = self._rtx_apt.get(pt)
        if apt is not None:
            original = receiver._RTCRtpReceiver__rtx_ssrc.get(packet.ssrc)
            if original is None or len(packet.payload) < 2:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original)
            pt = apt
        elif pt not in self._codecs:
            return
        self.packets_received += 1
        if pt != self._last_pt:
            self._last_pt = pt
            codec = self._codecs[pt]
            self._codec = codec
            self.mime_type = _canonical_mime(codec.mimeType)
        if packet.ssrc != self._publisher_ssrc:
            self._publisher_ssrc = packet.ssrc
            if self._keyframe_pending:
                self._keyframe_pending = False
                self.request_keyframe()
        active = self._active
        if active:
            now = time.time()
            send_time = abs_send_time(now)
            ntp = ntp_time(now)
            for sender in active:
                sender._lk_deliver(packet, now, send_time, ntp)

    def _add_active(self, sender: ForwardingSender) -> None:
        if sender not in self._active:
            self._active = (*self._active, sender)

    def _remove_active(self, sender: ForwardingSender) -> None:
        self._active = tuple(s for s in self._active if s is not sender)

    # -- subscriber side ----------------------------------------------------------

    def _codec_preferences(self) -> list[RTCRtpCodecCapability]:
        codec = self._codec
        if codec is None:
            return []
        caps = RTCRtpSender.getCapabilities(self.kind).codecs
        mime = codec.mimeType.lower()
        same = [c for c in caps if c.mimeType.lower() == mime]
        if not same:
            raise AioLiveKitError(f"subscribers cannot receive codec {codec.mimeType}")
        if mime == "video/h264":
            same.sort(key=lambda c: -h264_fmtp_score(dict(codec.parameters), dict(c.parameters)))
        rtx = [c for c in caps if c.mimeType.lower().endswith("/rtx")]
        return same + rtx

    def add_subscriber(
        self, pc: RTCPeerConnection, *, stream_id: str, track_id: str
    ) -> RTCRtpTransceiver:
        """Add a sendonly transceiver to ``pc`` that forwards this track.

        Call before creating the offer for ``pc``; its m-line carries
        ``a=msid:<stream_id> <track_id>``.
        """
        if self._closed:
            raise AioLiveKitError("track forwarder is closed")
        if pc in self._subscriptions:
            raise ValueError("this peer connection already subscribes to the track")
        if not stream_id or not track_id:
            raise ValueError("stream_id and track_id must be non-empty")
        transceiver = pc.addTransceiver(_ForwardedTrack(self.kind, track_id), direction="sendonly")
        preferences = self._codec_preferences()
        if preferences:
            transceiver.setCodecPreferences(preferences)
        else:
            logger.debug("publisher codec not known yet: offering every %s codec", self.kind)
        sender = transceiver.sender
        _check_hooks(sender, _SENDER_ATTRS, _SENDER_METHODS)
        sender.__class__ = ForwardingSender
        assert isinstance(sender, ForwardingSender)
        sender._lk_setup(self)
        sender._stream_id = stream_id
        sender._track_id = track_id
        self._subscriptions[pc] = _Subscription(pc, transceiver, sender)
        if self.kind == "video":
            self.request_keyframe()
        return transceiver

    def remove_subscriber(self, pc: RTCPeerConnection) -> None:
        """Stop forwarding to ``pc`` (its transceiver becomes inactive); no-op if unknown."""
        sub = self._subscriptions.pop(pc, None)
        if sub is None:
            return
        sub.sender._lk_detach()
        if not sub.transceiver.stopped:
            sub.transceiver.direction = "inactive"

    def set_paused(self, pc: RTCPeerConnection, paused: bool) -> None:
        """Pause or resume forwarding to ``pc`` (UpdateTrackSettings.disabled)."""
        sub = self._subscriptions.get(pc)
        if sub is None:
            raise ValueError("this peer connection does not subscribe to the track")
        was_paused = sub.sender._lk_paused
        sub.sender._lk_set_paused(paused)
        if was_paused and not paused and self.kind == "video":
            self.request_keyframe()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    # -- keyframes ----------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Send a PLI to the publisher (rate limited; video only)."""
        if self.kind != "video" or self._closed:
            return
        ssrc = self._publisher_ssrc
        if ssrc is None:
            self._keyframe_pending = True
            return
        if not self._limiter.allow(time.monotonic()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            logger.debug("request_keyframe outside the event loop ignored")
            return
        self.keyframe_requests_sent += 1
        task = loop.create_task(self._send_pli(ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_pli(self, ssrc: int) -> None:
        try:
            await asyncio.wait_for(self._receiver._send_rtcp_pli(ssrc), timeout=5.0)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            logger.debug("PLI upstream failed: %s", exc)

    # -- teardown -----------------------------------------------------------------

    def close(self) -> None:
        """The publisher is gone: stop forwarding to every subscriber."""
        if self._closed:
            return
        for pc in list(self._subscriptions):
            self.remove_subscriber(pc)
        self._closed = True
        self._active = ()
        receiver = self._receiver
        if isinstance(receiver, ForwardingReceiver):
            receiver._lk_forwarder = None


def _canonical_mime(mime: str) -> str:
    kind, _, name = mime.partition("/")
    upper = {"vp8": "VP8", "vp9": "VP9", "h264": "H264", "av1": "AV1"}
    if kind.lower() == "audio":
        return f"audio/{name.lower()}"
    return f"{kind.lower()}/{upper.get(name.lower(), name)}"
