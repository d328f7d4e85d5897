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

Performance (see ``bench/bench_forwarder.py`` and ``bench/bench_server.py``):

* Audio publishers' RTP is taken straight from the UDP socket by a
  :class:`~.rtp_io.ReceiveTap` once the first packet of a source went through aiortc
  (unprotect, header parse, aiortc's RR statistics updated, nothing else); RTX, video
  (aiortc's NACK generation and REMB stay) and everything else use aiortc's receiver.
* Per subscriber a :class:`_FastOut` (``__slots__``) rewrites the header straight into
  the transport's SRTP buffer, protects it in place and hands the datagram back; the
  fan-out then sends all datagrams back to back with ``socket.sendto`` (a loopback send
  wakes the subscriber, which may take this CPU and its caches before the next send).
  The sender's queue and RTP task take over whenever the fast path cannot be used.
* Subscribers whose mungers are steady for the current source are served together by
  a :class:`_Fanout`: per newer in-order packet and subscriber only two additions,
  the header write, ``srtp_protect`` and the send; mungers and report counters are
  updated in bulk. Each packet touches far fewer objects, which is what a forwarded
  packet costs on a busy machine, where the subscriber state is rarely in cache.
* Sender reports: about every 5 s for audio, 1 s for video (libwebrtc's intervals).

This module depends on private names of aiortc 1.16.0; they are checked when a
forwarder is attached and a :class:`AiortcCompatibilityError` names what is missing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import random
import struct
import time
from collections.abc import Callable
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
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RtcpByePacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    unwrap_rtx,
)

from .._compat import require_hooks
from ..errors import AioLiveKitError, AiortcCompatibilityError
from .read_batching import send_all
from ..webrtc.srtp import FastSrtp, fast_srtp_for, srtp_available
from .rtp_io import ReceiveTap
from ..webrtc.rtp import RtpHeaderWriter, abs_send_time, ntp_time, parse_rtp_header, rtx_wrap
from .rtp_rewrite import KeyframeRequestLimiter, RtpMunger, h264_fmtp_score, is_keyframe_start

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
FAST_OUT = True  # per-subscriber _FastOut: header written into the SRTP buffer, no copies
FANOUT = True  # steady subscribers of a source served in one loop (_Fanout)
FANOUT_MIN = 2  # fewest steady subscribers worth a _Fanout
FANOUT_FLUSH = 32  # packets between bulk updates of the members' mungers and counters
RTCP_INTERVAL_AUDIO = 5.0  # mean seconds between sender reports (libwebrtc's values)
RTCP_INTERVAL_VIDEO = 1.0
MAX_FAST_PAYLOAD = 1400  # larger payloads take the aiortc send path (buffer headroom)
# audio: take the publisher's packets from the UDP socket (rtp_io.ReceiveTap), not aiortc
RAW_RECEIVE = True
# RTCP of the transports the forwarder uses handled by their ReceiveTap, without aioice's
# queue and the DTLS transport's task (rtp_io.ReceiveTap.take_rtcp)
SYNC_RTCP = True
_DTLS_CONNECTED = State.CONNECTED

_RECEIVER_ATTRS = (
    "_RTCRtpReceiver__decoder_queue",
    "_RTCRtpReceiver__codecs",
    "_RTCRtpReceiver__rtx_ssrc",
    "_RTCRtpReceiver__started",
    "_RTCRtpReceiver__jitter_buffer",
)
_RECEIVER_METHODS = ("_handle_rtp_packet", "_send_rtcp_pli", "receive")
# aiortc StreamStatistics fields that TrackForwarder._on_raw updates itself
_STATS_ATTRS = ("max_seq", "base_seq", "packets_received", "cycles", "_clockrate",
                "_last_timestamp", "_last_arrival", "_jitter_q4")
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
    "_RTCRtpSender__rtcp_started",
    "_RTCRtpSender__rtcp_exited",
    "_RTCRtpSender__lsr",
)
_SENDER_METHODS = (
    "_run_rtp",
    "_run_rtcp",
    "_send_rtcp",
    "_retransmit",
    "_send_keyframe",
    "send",
    "_handle_rtcp_packet",
)


if getattr(aiortc, "__version__", None) != SUPPORTED_AIORTC:
    logger.warning(
        "aiortc %s installed; the RTP forwarder was written against %s private names",
        getattr(aiortc, "__version__", "?"),
        SUPPORTED_AIORTC,
    )


def _check_hooks(obj: object, attrs: tuple[str, ...], methods: tuple[str, ...]) -> None:
    require_hooks("aiortc", obj, attrs, methods)


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


class _InPacket:
    """One publisher RTP packet, parsed once and shared by every subscriber.

    The attribute names follow aiortc's ``RtpPacket`` where they overlap, so aiortc's
    ``StreamStatistics.add`` accepts it.
    """

    __slots__ = (
        "audio_level",
        "csrc",
        "marker",
        "padding_size",
        "payload",
        "payload_type",
        "sequence_number",
        "simple",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        marker: int,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        audio_level: tuple[bool, int] | None,
        csrc: list[int] | None = None,
        padding_size: int = 0,
    ) -> None:
        self.marker = marker
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.audio_level = audio_level
        self.csrc = csrc
        self.padding_size = padding_size
        # what the per-subscriber fast path handles: no CSRCs, no padding, room in the
        # SRTP buffer
        self.simple = not csrc and not padding_size and len(payload) <= MAX_FAST_PAYLOAD

    @classmethod
    def from_rtp(cls, packet: RtpPacket) -> _InPacket:
        return cls(
            packet.marker,
            packet.payload_type,
            packet.sequence_number,
            packet.timestamp,
            packet.ssrc,
            packet.payload,
            packet.extensions.audio_level,
            packet.csrc or None,
            packet.padding_size,
        )


class _PacketQueue:
    """Bounded single-consumer queue; when full the oldest packet is dropped."""

    __slots__ = ("_items", "_waiter", "dropped", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[_InPacket] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.maxlen = maxlen
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, packet: _InPacket) -> None:
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


class _FastOut:
    """The per-subscriber hot path, in one small object (``__slots__``).

    Per forwarded packet it touches only itself, the munger, the header writer and the
    transport's :class:`~aiolivekit.webrtc.srtp.FastSrtp` buffer: rewrite, write the header and payload
    straight into the SRTP buffer, protect in place, ``sendto`` on the UDP socket. The
    sender-report counters live here (the sender exposes them to aiortc through
    properties), so the large aiortc objects stay out of the per-packet path. Anything
    unusual (not connected yet, a queue backlog, another route, another payload type,
    CSRCs/padding) goes through :meth:`ForwardingSender._lk_deliver` instead.
    """

    __slots__ = (
        "_ready",
        "addr",
        "buf",
        "cdata",
        "count",
        "dropped_socket",
        "fast_srtp",
        "forwarder",
        "history",
        "history_size",
        "items",
        "len_p",
        "mime",
        "munger",
        "nominated",
        "ntp",
        "octets",
        "pair",
        "protect",
        "pts",
        "rtp_ts",
        "sender",
        "sendto",
        "srtp",
        "tx_bytes",
        "tx_packets",
        "writer",
    )

    def __init__(self, sender: ForwardingSender, forwarder: TrackForwarder) -> None:
        self.sender = sender
        self.forwarder = forwarder
        self.items = sender._lk_queue._items
        self._ready = False
        self.munger: Any = None  # RtpMunger once armed
        self.writer: Any = None  # RtpHeaderWriter once armed
        self.mime = ""
        self.pts: frozenset[int] = frozenset()
        self.nominated: dict[int, Any] = {}
        self.pair: Any = None
        self.sendto: Any = None
        self.addr: Any = None
        self.fast_srtp: FastSrtp | None = None  # owns the libsrtp context behind srtp
        self.srtp: Any = None
        self.protect: Any = None
        self.cdata: Any = None
        self.buf: Any = None
        self.len_p: Any = None
        self.history: dict[int, tuple[int, bytes, int]] | None = None
        self.history_size = VIDEO_HISTORY_SIZE if forwarder.kind == "video" else AUDIO_HISTORY_SIZE
        self.count = 0
        self.octets = 0
        self.ntp = 0
        self.rtp_ts = 0
        self.tx_bytes = 0
        self.tx_packets = 0
        self.dropped_socket = 0

    @property
    def ready(self) -> bool:
        """Armed: the per-packet path below may be used."""
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value
        forwarder = self.forwarder
        if forwarder is not None and forwarder._fan is not None:
            forwarder._fan_flush(dissolve=True)  # membership may change

    def forward(self, packet: _InPacket, now: float, send_time: int, ntp: int) -> bytes | None:
        """Rewrite and protect ``packet`` for this subscriber; the caller sends the
        returned datagram (``None``: dropped, or handled by the sender's own path)."""
        if (
            not self._ready
            or self.items
            or not packet.simple
            or self.nominated.get(1) is not self.pair
            or packet.payload_type not in self.pts
        ):
            self.sender._lk_deliver(packet, now, send_time, ntp)
            return None
        mapped = _map_packet(self.munger, self.mime, packet, now, self.forwarder)
        if mapped is None:
            return None
        seq, ts = mapped
        payload = packet.payload
        buf = self.buf
        n = self.writer.write_into(buf, packet.marker, seq, ts, payload, packet.audio_level,
                                   send_time)
        if self.history is not None:
            self.history[seq % self.history_size] = (seq, buf[0:n], n - len(payload))
        self.count += 1
        self.octets += len(payload)
        self.ntp = ntp
        self.rtp_ts = ts
        len_p = self.len_p
        len_p[0] = n
        if self.protect(self.srtp, self.cdata, len_p):
            return None  # libsrtp refused (e.g. key usage limit): drop
        n = len_p[0]
        self.tx_bytes += n
        self.tx_packets += 1
        if self.tx_packets & 31 == 0:
            self.sender._lk_flush_tx_stats()
        return buf[0:n]  # type: ignore[no-any-return]


class _Fanout:
    """One source's newer in-order packets to every steady subscriber in one loop.

    Built by :meth:`TrackForwarder._fan_build` from the subscribers whose mungers are in
    a steady state for the source (:meth:`RtpMunger.steady_state`): each packet then
    costs per subscriber two additions, the header write, ``srtp_protect`` and the send.
    The mungers and sender-report counters are brought up to date in bulk by
    :meth:`TrackForwarder._fan_flush` (every :data:`FANOUT_FLUSH` packets, before a
    sender report, and whenever membership or a subscriber's state changes).
    Subscribers that are not steady (``rest``) take the per-subscriber path.
    """

    __slots__ = (
        "advanced",
        "checks",
        "count",
        "entries",
        "highest",
        "last_now",
        "last_ntp",
        "last_ts",
        "level",
        "octets",
        "outs",
        "protect",
        "pt",
        "rest",
        "ssrc",
        "tx_bytes",
    )

    def __init__(
        self, ssrc: int, pt: int, highest: int, level: bool,
        members: list[tuple[_FastOut, int, int]], rest: tuple[_FastOut, ...],
    ) -> None:
        self.ssrc = ssrc
        self.pt = pt
        self.highest = highest
        self.level = level  # whether the source's packets carry an audio level
        self.outs = tuple(out for out, _, _ in members)
        self.checks = tuple((out.nominated, out.pair) for out in self.outs)
        self.protect = self.outs[0].protect  # libsrtp's srtp_protect, the same for all
        # the header write inlined (RtpHeaderWriter.fan_layout), then libsrtp and the socket
        self.entries = tuple(
            (*out.writer.fan_layout(level), out.buf, out.cdata, out.len_p, out.srtp,
             out.sendto, out.addr, seq_off, ts_off, out)
            for out, seq_off, ts_off in members
        )
        self.rest = rest
        self.tx_bytes = [0] * len(members)
        self.count = 0
        self.octets = 0
        self.advanced = 0
        self.last_ts = 0
        self.last_now = 0.0
        self.last_ntp = 0

    def take(
        self, packet: _InPacket, send_time: int, now: float, ntp: int,
        sends: list[tuple[Any, bytes, Any, _FastOut]],
    ) -> bool:
        """Rewrite and protect ``packet`` for every member, queueing the datagrams on
        ``sends``; ``False`` (nothing done) if the packet does not fit the fan-out."""
        level = packet.audio_level
        if (
            packet.ssrc != self.ssrc
            or packet.payload_type != self.pt
            or not packet.simple
            or (level is not None) is not self.level
        ):
            return False
        seq = packet.sequence_number
        diff = ((seq - self.highest + 0x8000) & 0xFFFF) - 0x8000
        if diff <= 0:
            return False  # old or repeated: the mungers' own rules decide
        for nominated, pair in self.checks:
            if nominated.get(1) is not pair:
                return False
        self.highest = seq
        self.advanced += diff
        ts = packet.timestamp
        mark = 0x80 if packet.marker else 0
        level_bits = ((0x80 if level[0] else 0) | (level[1] & 0x7F)) if level else 0
        payload = packet.payload
        n_payload = len(payload)
        tx_bytes = self.tx_bytes
        protect = self.protect
        i = 0
        for (
            kind, pack, head, ast_word, al_word, size, pt, ssrc,
            buf, cdata, len_p, srtp, sendto, addr, seq_off, ts_off, out,
        ) in self.entries:
            if kind == 4:
                pack(buf, 0, 0x90, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc, head, ast_word | send_time,
                     al_word | level_bits)
            elif kind == 3:
                pack(buf, 0, 0x90, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc, head, al_word | level_bits)
            elif kind == 2:
                pack(buf, 0, 0x90, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc, head, ast_word | send_time)
            elif kind == 1:
                pack(buf, 0, 0x90, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc, head)
            else:
                pack(buf, 0, 0x80, mark | pt, (seq + seq_off) & 0xFFFF,
                     (ts + ts_off) & 0xFFFFFFFF, ssrc)
            end = size + n_payload
            buf[size:end] = payload
            len_p[0] = end
            if not protect(srtp, cdata, len_p):  # else libsrtp refused (key limit): drop
                n = len_p[0]
                tx_bytes[i] += n
                sends.append((sendto, buf[0:n], addr, out))
            i += 1
        self.count += 1
        self.octets += n_payload
        self.last_ts = ts
        self.last_now = now
        self.last_ntp = ntp
        return True


def _map_packet(
    munger: RtpMunger, mime: str, packet: _InPacket, now: float, forwarder: TrackForwarder
) -> tuple[int, int] | None:
    """The subscriber's ``(sequence, timestamp)`` for ``packet``, or ``None`` (dropped;
    a keyframe is requested upstream while the munger waits for one)."""
    mapped = munger.rewrite(
        packet.ssrc,
        packet.sequence_number,
        packet.timestamp,
        now,
        munger.keyframe_matters(packet.ssrc) and is_keyframe_start(mime, packet.payload),
    )
    if mapped is None and munger.needs_keyframe():
        forwarder.request_keyframe()
    return mapped


def _sr_property(field: str, mask: int) -> property:
    """An aiortc sender-report counter kept in the sender's :class:`_FastOut`."""

    def get(sender: ForwardingSender) -> int:
        out = sender._lk_out
        forwarder = out.forwarder
        if forwarder is not None and forwarder._fan is not None:
            forwarder._fan_flush()  # counters of fanned-out packets are kept in bulk
        return int(getattr(out, field)) & mask

    def set_(sender: ForwardingSender, value: int) -> None:
        setattr(sender._lk_out, field, value)

    return property(get, set_)


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
    _RTCRtpSender__rtcp_started: asyncio.Event
    _RTCRtpSender__rtcp_exited: asyncio.Event
    _RTCRtpSender__lsr: int | None
    _RTCRtpSender__lsr_time: float | None
    _RTCRtpSender__cname: str | None

    # aiortc's RTCP loop reads these for its sender reports; the values live in _lk_out
    # (data descriptors win over the instance attributes aiortc's __init__ created)
    _RTCRtpSender__ntp_timestamp = _sr_property("ntp", (1 << 64) - 1)
    _RTCRtpSender__rtp_timestamp = _sr_property("rtp_ts", 0xFFFFFFFF)
    _RTCRtpSender__octet_count = _sr_property("octets", 0xFFFFFFFF)
    _RTCRtpSender__packet_count = _sr_property("count", 0xFFFFFFFF)

    @property  # type: ignore[override]
    def _enabled(self) -> bool:
        return self._lk_enabled

    @_enabled.setter
    def _enabled(self, value: bool) -> None:
        self._lk_enabled = value
        out = self.__dict__.get("_lk_out")
        if out is not None and not value:
            out.ready = False

    _lk_forwarder: TrackForwarder | None
    _lk_queue: _PacketQueue
    _lk_paused: bool
    _lk_running: bool
    _lk_fast: bool
    _lk_dtls: Any
    _lk_nominated: dict[int, Any]
    _lk_route: tuple[Any, Callable[[bytes, Any], Any], tuple[str, int]] | None
    _lk_srtp: FastSrtp | None
    _lk_munger: RtpMunger | None
    _lk_writer: RtpHeaderWriter | None
    _lk_parameters: RTCRtpSendParameters | None
    _lk_history: dict[int, tuple[int, bytes, int]]
    _lk_mime: str
    _lk_pt_ok: dict[int, bool]
    _lk_dropped_socket: int
    _lk_out: _FastOut
    _lk_enabled: bool

    def _lk_setup(self, forwarder: TrackForwarder) -> None:
        self._lk_enabled = bool(self.__dict__.pop("_enabled", True))
        self._lk_forwarder = forwarder
        self._lk_queue = _PacketQueue(
            VIDEO_QUEUE_SIZE if forwarder.kind == "video" else AUDIO_QUEUE_SIZE
        )
        self._lk_paused = False
        self._lk_running = False
        self._lk_fast = False
        self._lk_route = None
        self._lk_srtp = None
        self._lk_munger = None
        self._lk_writer = None
        self._lk_parameters = None
        self._lk_history = {}
        self._lk_mime = ""
        self._lk_pt_ok = {}
        self._lk_dropped_socket = 0
        self._lk_out = _FastOut(self, forwarder)

    def _lk_detach(self) -> None:
        forwarder = self._lk_forwarder
        self._lk_forwarder = None
        self._lk_out.ready = False
        self._lk_queue.clear()
        if forwarder is not None:
            forwarder._remove_active(self)

    def _lk_set_paused(self, paused: bool) -> None:
        self._lk_paused = paused
        if self._lk_forwarder is not None:
            self._lk_forwarder._fan_flush(dissolve=True)  # the munger changes state
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
        history = self._lk_out.history
        if history is None:
            return
        entry = history.get(sequence_number % self._lk_out.history_size)
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

    def _lk_rewrite(self, packet: _InPacket, now: float, send_time: int, ntp: int) -> bytes | None:
        """Rewrite one publisher packet for this subscriber (``None`` = drop)."""
        forwarder = self._lk_forwarder
        munger = self._lk_munger
        if forwarder is None or munger is None or self._lk_writer is None or not self._enabled:
            return None
        pt = packet.payload_type
        ok = self._lk_pt_ok.get(pt)
        if ok is None:
            in_mime = forwarder._mime_for_pt(pt)
            ok = self._lk_pt_ok[pt] = in_mime is not None and in_mime == self._lk_mime
            if ok:
                self._lk_out.pts = frozenset(p for p, good in self._lk_pt_ok.items() if good)
            else:
                logger.warning(
                    "cannot forward %s to a subscriber that negotiated %s", in_mime, self._lk_mime
                )
        if not ok:
            return None
        mapped = _map_packet(munger, self._lk_mime, packet, now, forwarder)
        if mapped is None:
            return None
        return self._lk_build(packet, mapped[0], mapped[1], send_time, ntp)

    def _lk_build(
        self, packet: _InPacket, seq: int, ts: int, send_time: int, ntp: int
    ) -> bytes:
        """Serialise a rewritten packet; record it for NACKs and sender reports."""
        writer = self._lk_writer
        assert writer is not None
        payload = packet.payload
        if packet.csrc or packet.padding_size:
            data, header_len = writer.build(
                packet.marker,
                seq,
                ts,
                payload,
                csrc=packet.csrc,
                audio_level=packet.audio_level,
                send_time=send_time,
                padding_size=packet.padding_size,
            )
        else:
            data = writer.build_simple(
                packet.marker, seq, ts, payload, packet.audio_level, send_time
            )
            header_len = len(data) - len(payload)
        out = self._lk_out
        if out.history is not None:
            out.history[seq % out.history_size] = (seq, data, header_len)
        out.octets += len(payload)
        out.count += 1
        out.ntp = ntp
        out.rtp_ts = ts
        out.forwarder.packets_forwarded += 1
        return data

    def _lk_flush_tx_stats(self) -> None:
        out = self._lk_out
        dtls = self._lk_dtls
        dtls._RTCDtlsTransport__tx_bytes += out.tx_bytes
        dtls._RTCDtlsTransport__tx_packets += out.tx_packets
        out.tx_bytes = out.tx_packets = 0

    def _lk_deliver(self, packet: _InPacket, now: float, send_time: int, ntp: int) -> None:
        """Forward now if the socket is reachable synchronously, else queue; arms the
        :class:`_FastOut` path once everything it needs is in place."""
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
                        route = self._lk_route = _route_for(pair)
                    srtp = self._lk_srtp
                    if srtp is None or srtp.session is not dtls._tx_srtp:
                        srtp = self._lk_srtp = fast_srtp_for(dtls, tx=True)
                        if srtp is None:
                            return
                    self._lk_arm(pair, route, srtp)
                    data = srtp.protect(data)
                    try:
                        route[1](data, route[2])
                    except OSError:  # includes BlockingIOError: the socket buffer is full
                        self._lk_dropped_socket += 1
                        return
                    dtls._RTCDtlsTransport__tx_bytes += len(data)
                    dtls._RTCDtlsTransport__tx_packets += 1
                    return
        self._lk_queue.put(packet)

    def _lk_arm(
        self, pair: Any, route: tuple[Any, Callable[[bytes, Any], Any], Any], srtp: FastSrtp
    ) -> None:
        out = self._lk_out
        if not FAST_OUT or not self._lk_running or not self._enabled:
            out.ready = False
            return
        out.nominated = self._lk_nominated
        out.pair = pair
        out.sendto = route[1]
        out.addr = route[2]
        out.fast_srtp = srtp
        out.srtp = srtp._srtp
        out.protect = srtp._protect
        out.cdata = srtp._cdata
        out.buf = srtp._buf
        out.len_p = srtp._len
        out.munger = self._lk_munger
        out.writer = self._lk_writer
        out.mime = self._lk_mime
        out.ready = True
        if SYNC_RTCP:  # the subscriber's reports and feedback without a task hop
            tap = ReceiveTap.for_transport(self._lk_dtls)
            if tap is not None:
                tap.take_rtcp()

    # -- RTCP task -------------------------------------------------------------------

    async def _run_rtcp(self) -> None:
        """aiortc's sender-report loop, with libwebrtc's intervals: about 1 s for video,
        5 s for audio (aiortc uses 1 s for both; 90 audio senders in a 10-person room
        then cost as much event-loop time as a tenth of the forwarding)."""
        self._RTCRtpSender__rtcp_started.set()
        interval = RTCP_INTERVAL_VIDEO if self.kind == "video" else RTCP_INTERVAL_AUDIO
        delay = 0.5 + random.random()  # the first report early, like aiortc
        try:
            while True:
                await asyncio.sleep(delay)
                delay = interval * (0.5 + random.random())
                await self._send_rtcp(self._lk_sender_report())
        except asyncio.CancelledError:
            pass
        try:
            await self._send_rtcp([RtcpByePacket(sources=[self._ssrc])])
        finally:
            self._RTCRtpSender__rtcp_exited.set()

    def _lk_sender_report(self) -> list[Any]:
        ntp = self._RTCRtpSender__ntp_timestamp
        packets: list[Any] = [
            RtcpSrPacket(
                ssrc=self._ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp,
                    rtp_timestamp=self._RTCRtpSender__rtp_timestamp,
                    packet_count=self._RTCRtpSender__packet_count,
                    octet_count=self._RTCRtpSender__octet_count,
                ),
            )
        ]
        # what aiortc's loop records to turn the receiver's LSR/DLSR into a round trip
        self._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF
        self._RTCRtpSender__lsr_time = time.time()
        cname = getattr(self, "_RTCRtpSender__cname", None)  # set by send()
        if cname is not None:
            packets.append(
                RtcpSdesPacket(
                    chunks=[RtcpSourceInfo(ssrc=self._ssrc, items=[(1, cname.encode("utf8"))])]
                )
            )
        return packets

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
            self._lk_out.ready = False
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
        # keep packets for NACKs only when the subscriber negotiated NACK for this codec
        if video or any(fb.type == "nack" and not fb.parameter for fb in codec.rtcpFeedback):
            self._lk_out.history = self._lk_history
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


def _route_for(pair: Any) -> tuple[Any, Callable[[bytes, Any], Any], tuple[str, int]]:
    """``(pair, sendto, address)`` for a nominated aioice candidate pair.

    ``sendto`` is the UDP socket's own method when the asyncio transport has nothing
    buffered (it only buffers after EAGAIN): it skips asyncio's checks; a full socket
    buffer then raises and the packet is dropped, as a real network would.
    """
    udp = pair.protocol.transport
    sock = getattr(udp, "_sock", None)
    if sock is not None and not getattr(udp, "_buffer", None):
        return pair, sock.sendto, pair.remote_addr
    return pair, udp.sendto, pair.remote_addr


def _fast_path_available(dtls: Any) -> bool:
    """Whether the private names the synchronous send path uses exist (aiortc 1.16)."""
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    ok = (
        hasattr(dtls, "_state")
        and hasattr(dtls, "_tx_srtp")
        and (dtls._tx_srtp is None or srtp_available(dtls._tx_srtp))
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
        self._active: tuple[_FastOut, ...] = ()
        self._fan: _Fanout | None = None
        self._fan_retry_at = 0  # packets_received value before which no build is tried
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
        self._in_audio_level_id: int | None = None
        self._tap: ReceiveTap | None = None
        self._raw_ssrc: int | None = None
        self._raw_stats: dict[int, Any] = {}
        self._inline_stats = False
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
        for ext in parameters.headerExtensions:
            if ext.uri == URI_AUDIO_LEVEL:
                self._in_audio_level_id = ext.id
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
        """A packet parsed by aiortc's receive path (RTX, the first packets of a source,
        video, or every packet when the raw path is unavailable)."""
        pt = packet.payload_type
        apt = self._rtx_apt.get(pt)
        if apt is not None:
            original = receiver._RTCRtpReceiver__rtx_ssrc.get(packet.ssrc)
            if original is None or len(packet.payload) < 2:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original)
        elif pt not in self._codecs:
            return
        elif self._raw_ssrc != packet.ssrc and RAW_RECEIVE and self.kind == "audio":
            self._enable_raw_receive(receiver, packet.ssrc)
        self._dispatch(_InPacket.from_rtp(packet))

    def _enable_raw_receive(self, receiver: ForwardingReceiver, ssrc: int) -> None:
        """Take this source's later packets straight from the UDP socket (:mod:`.rtp_io`)."""
        tap = ReceiveTap.for_transport(receiver.transport)
        if tap is None:
            return
        if self._raw_ssrc is not None and self._tap is not None:
            self._tap.remove_route(self._raw_ssrc, self._on_raw)
        self._tap = tap
        self._raw_ssrc = ssrc
        # aiortc's receiver reports read these (empty dict if the private name moved)
        self._raw_stats = getattr(receiver, "_RTCRtpReceiver__remote_streams", {})
        probe = StreamStatistics(48000)
        self._inline_stats = all(hasattr(probe, name) for name in _STATS_ATTRS)
        tap.add_route(ssrc, self._on_raw)
        if SYNC_RTCP:
            tap.take_rtcp()

    def _on_raw(self, data: memoryview, n: int) -> None:
        """A plaintext RTP packet of the current source (the first ``n`` bytes of
        ``data``) from the raw receive path."""
        if not self._receiver._enabled:
            return
        marker, pt, seq, ts, ssrc, start, end, level = parse_rtp_header(
            data, self._in_audio_level_id, n
        )
        if pt not in self._codecs:
            return
        packet = _InPacket(
            marker, pt, seq, ts, ssrc, data[start:end].tobytes(), level, None, n - end
        )
        if data[0] & 0x0F:  # CSRCs (rare): keep them
            packet.csrc = list(struct.unpack_from(f"!{data[0] & 0x0F}I", data, 12))
            packet.simple = False
        now = time.time()
        stats = self._raw_stats.get(ssrc)
        if stats is not None:  # aiortc's receiver reports (RR) read these statistics
            if self._inline_stats:
                # what aiortc's StreamStatistics.add does (RFC 3550 A.1, A.8), inline
                max_seq = stats.max_seq
                stats.packets_received += 1
                if max_seq is None:
                    stats.base_seq = seq
                if max_seq is None or (seq != max_seq and ((seq - max_seq) & 0xFFFF) < 0x8000):
                    arrival = int(now * stats._clockrate)
                    if max_seq is not None and seq < max_seq:
                        stats.cycles += 0x10000
                    stats.max_seq = seq
                    last_ts = stats._last_timestamp
                    if ts != last_ts and stats.packets_received > 1:
                        diff = abs((arrival - stats._last_arrival) - (ts - last_ts))
                        stats._jitter_q4 += diff - ((stats._jitter_q4 + 8) >> 4)
                    stats._last_arrival = arrival
                    stats._last_timestamp = ts
            else:
                stats.add(packet)
        self._dispatch(packet, now)

    def _dispatch(self, packet: _InPacket, now: float | None = None) -> None:
        self.packets_received += 1
        pt = packet.payload_type
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
            if now is None:
                now = time.time()
            send_time = abs_send_time(now)
            ntp = ntp_time(now)
            # all the CPU work first, then the system calls back to back: on a busy
            # machine each loopback send wakes a subscriber, which may take this CPU
            # (and its caches) before the next send. Inside a read batch, the sends
            # wait for the end of the whole batch (see read_batching).
            batcher = self._tap.batcher if self._tap is not None else None
            if batcher is not None and batcher.batching:
                sends: list[Any] = batcher.sends
                deferred = True
            else:
                sends = []
                deferred = False
            before = len(sends)
            fan = self._fan
            if (
                fan is None
                and FANOUT
                and len(active) >= FANOUT_MIN
                and self.packets_received >= self._fan_retry_at
            ):
                fan = self._fan_build(packet)
            if fan is not None:
                if fan.take(packet, send_time, now, ntp, sends):
                    active = fan.rest
                    if fan.count >= FANOUT_FLUSH:
                        self._fan_flush()
                else:
                    self._fan_flush(dissolve=True)
            for out in active:
                datagram = out.forward(packet, now, send_time, ntp)
                if datagram is not None:
                    sends.append((out.sendto, datagram, out.addr, out))
            self.packets_forwarded += len(sends) - before
            if not deferred:
                send_all(sends)

    def _add_active(self, sender: ForwardingSender) -> None:
        out = sender._lk_out
        if out not in self._active:
            self._fan_flush(dissolve=True)
            self._active = (*self._active, out)

    def _remove_active(self, sender: ForwardingSender) -> None:
        self._fan_flush(dissolve=True)
        self._active = tuple(o for o in self._active if o.sender is not sender)

    # -- fan-out (steady subscribers in one loop) -----------------------------------

    def _fan_build(self, packet: _InPacket) -> _Fanout | None:
        """A :class:`_Fanout` of the subscribers steady for ``packet``'s source, or
        ``None`` (fewer than :data:`FANOUT_MIN`; retried after :data:`FANOUT_FLUSH`
        packets)."""
        self._fan_retry_at = self.packets_received + FANOUT_FLUSH
        if not packet.simple:
            return None
        ssrc, pt = packet.ssrc, packet.payload_type
        members: list[tuple[_FastOut, int, int]] = []
        rest: list[_FastOut] = []
        highest: int | None = None
        for out in self._active:
            state = None
            if (
                out._ready
                and not out.items
                and out.history is None
                and pt in out.pts
                and out.nominated.get(1) is out.pair
            ):
                state = out.munger.steady_state(ssrc)
            if state is not None and (highest is None or state[2] == highest):
                highest = state[2]
                members.append((out, state[0], state[1]))
            else:
                rest.append(out)
        if highest is None or len(members) < FANOUT_MIN:
            return None
        self._fan = _Fanout(ssrc, pt, highest, packet.audio_level is not None, members,
                            tuple(rest))
        return self._fan

    def _fan_flush(self, dissolve: bool = False) -> None:
        """Bring the members' mungers, sender-report and transport counters up to date
        (the fan-out keeps them in bulk); ``dissolve`` (or non-members waiting to
        join) also ends the fan-out, rebuilt at the next packet."""
        fan = self._fan
        if fan is None:
            return
        if fan.count:
            count, octets, seq, ts = fan.count, fan.octets, fan.highest, fan.last_ts
            for out, tx_bytes in zip(fan.outs, fan.tx_bytes, strict=True):
                munger = out.munger
                munger.catch_up(seq, ts, fan.advanced, fan.last_now)
                out.count += count
                out.octets += octets
                out.ntp = fan.last_ntp
                out.rtp_ts = munger.last_timestamp
                out.tx_bytes += tx_bytes
                out.tx_packets += count
                out.sender._lk_flush_tx_stats()
            fan.count = fan.octets = fan.advanced = 0
            fan.tx_bytes = [0] * len(fan.outs)
        if dissolve or fan.rest:
            self._fan = None
            self._fan_retry_at = 0

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
        self._fan_flush(dissolve=True)
        self._active = ()
        if self._tap is not None and self._raw_ssrc is not None:
            self._tap.remove_route(self._raw_ssrc, self._on_raw)
        self._tap = None
        receiver = self._receiver
        if isinstance(receiver, ForwardingReceiver):
            receiver._lk_forwarder = None


def _canonical_mime(mime: str) -> str:
    kind, _, name = mime.partition("/")
    upper = {"vp8": "VP8", "vp9": "VP9", "h264": "H264", "av1": "AV1"}
    if kind.lower() == "audio":
        return f"audio/{name.lower()}"
    return f"{kind.lower()}/{upper.get(name.lower(), name)}"
