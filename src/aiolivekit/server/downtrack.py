"""One subscriber's copy of a forwarded track (the down-track).

:class:`DownTrack` holds everything one subscriber needs: the munger (SSRC / sequence /
timestamp mapping, :mod:`.rtpmunger`), the header writer, the SRTP context, the
UDP route, the NACK history and the sender-report counters. Its :meth:`DownTrack.forward`
is the per-subscriber hot path (``__slots__``, no aiortc object touched per packet):
rewrite, write the header and payload straight into the transport's SRTP buffer,
protect in place, hand the datagram back for the fan-out to send. Anything unusual
(not connected yet, a queue backlog, another route, another payload type, CSRCs or
padding) takes :meth:`DownTrack.deliver`, which forwards at once when it can and
otherwise queues for the sender's RTP task.

:class:`ForwardingSender` is the aiortc side: an ``RTCRtpSender`` (its class swapped in
by the forwarder) whose RTP loop forwards instead of encoding, whose RTCP loop keeps
libwebrtc's report intervals, and whose NACK / PLI handling uses the down-track.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtp import RtcpByePacket, RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

from .._compat import aioice as ice_compat, aiortc as aiortc_compat
from .._compat.asyncio_transport import direct_sendto
from ..errors import AioLiveKitError
from ..webrtc.red import parse_red
from ..webrtc.rtp import RtpHeaderWriter, abs_send_time, ntp_time, rtx_wrap
from ..webrtc.srtp import FastSrtp, fast_srtp_for, srtp_available
from .config import ForwardingOptions
from .receiver import InPacket, TrackReceiver
from .rtp_io import ReceiveTap
from .rtpmunger import RtpMunger, is_keyframe_start

__all__ = ["DownTrack", "ForwardedTrack", "ForwardingSender", "PacketQueue"]

logger = logging.getLogger(__name__)


def _red_primary(packet: InPacket) -> InPacket | None:
    """``packet`` (RED, RFC 2198) reduced to its primary block, or None if malformed."""
    try:
        red = parse_red(packet.payload)
    except ValueError:
        return None
    if not red.primary:
        return None
    return InPacket(packet.marker, red.primary_payload_type, packet.sequence_number,
                    packet.timestamp, packet.ssrc, red.primary, packet.audio_level,
                    packet.csrc)


class FanoutLink(Protocol):
    """What a down-track needs of its track's :class:`~.fanout.Fanout`."""

    packets_forwarded: int

    @property
    def fan(self) -> object | None: ...

    def add(self, down: DownTrack) -> None: ...

    def remove(self, down: DownTrack) -> None: ...

    def flush(self, dissolve: bool = False) -> None: ...


class ForwarderLink(Protocol):
    """What a down-track needs of its :class:`~.forwarder.TrackForwarder`."""

    @property
    def kind(self) -> str: ...

    @property
    def options(self) -> ForwardingOptions: ...

    @property
    def fanout(self) -> FanoutLink: ...

    @property
    def receiver(self) -> TrackReceiver: ...

    def request_keyframe(self) -> None: ...

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

AUDIO_QUEUE_SIZE = 64
VIDEO_QUEUE_SIZE = 512
# packets kept per subscriber stream to answer NACKs (audio is rarely NACKed)
VIDEO_HISTORY_SIZE = 1024
AUDIO_HISTORY_SIZE = 128
RTCP_INTERVAL_AUDIO = 5.0  # mean seconds between sender reports (libwebrtc's values)
RTCP_INTERVAL_VIDEO = 1.0


class PacketQueue:
    """Bounded single-consumer queue; when full the oldest packet is dropped."""

    __slots__ = ("_waiter", "dropped", "items", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self.items: collections.deque[InPacket] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.maxlen = maxlen
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.items)

    def put(self, packet: InPacket) -> None:
        items = self.items
        if len(items) >= self.maxlen:
            items.popleft()
            self.dropped += 1
        items.append(packet)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self.items.clear()

    async def wait(self) -> None:
        while not self.items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None


class ForwardedTrack(MediaStreamTrack):
    """Gives aiortc a kind and an id for the SDP; media comes from the forwarder."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id

    async def recv(self) -> Any:
        raise MediaStreamError("forwarded track carries RTP only")


def map_packet(
    munger: RtpMunger, mime: str, packet: InPacket, now: float, forwarder: ForwarderLink
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


class DownTrack:
    """One subscriber of one published track: munger, writer, SRTP, send, NACK history.

    Per forwarded packet :meth:`forward` touches only this object, the munger, the
    header writer and the transport's :class:`~aiolivekit.webrtc.srtp.FastSrtp` buffer.
    The sender-report counters live here (the sender exposes them to aiortc through
    properties), so the large aiortc objects stay out of the per-packet path.
    """

    __slots__ = (
        "_history",
        "_ready",
        "addr",
        "buf",
        "cdata",
        "count",
        "dropped_socket",
        "dtls",
        "enabled",
        "fanout",
        "fast",
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
        "options",
        "pair",
        "parameters",
        "paused",
        "protect",
        "pt_ok",
        "pts",
        "queue",
        "route",
        "rtp_ts",
        "running",
        "sender",
        "sendto",
        "srtp",
        "tx_bytes",
        "tx_packets",
        "writer",
    )

    def __init__(self, sender: ForwardingSender, forwarder: ForwarderLink,
                 enabled: bool) -> None:
        self.sender = sender
        self.forwarder: ForwarderLink | None = forwarder
        self.fanout: FanoutLink = forwarder.fanout
        self.options: ForwardingOptions = forwarder.options
        video = forwarder.kind == "video"
        self.queue = PacketQueue(VIDEO_QUEUE_SIZE if video else AUDIO_QUEUE_SIZE)
        self.items = self.queue.items
        self.enabled = enabled
        self.paused = False
        self.running = False
        self.fast = False  # synchronous sends possible (the private names exist)
        self.dtls: Any = None
        self.route: tuple[Any, Callable[[bytes, Any], Any], Any] | None = None
        self.parameters: RTCRtpSendParameters | None = None
        self.pt_ok: dict[int, bool] = {}
        self._history: dict[int, tuple[int, bytes, int]] = {}
        self._ready = False
        self.munger: Any = None  # RtpMunger once the RTP task runs
        self.writer: Any = None  # RtpHeaderWriter likewise
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
        self.history_size = VIDEO_HISTORY_SIZE if video else AUDIO_HISTORY_SIZE
        self.count = 0
        self.octets = 0
        self.ntp = 0
        self.rtp_ts = 0
        self.tx_bytes = 0
        self.tx_packets = 0
        self.dropped_socket = 0

    @property
    def ready(self) -> bool:
        """Armed: the per-packet path of :meth:`forward` may be used."""
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value
        if self.fanout.fan is not None:
            self.fanout.flush(dissolve=True)  # membership may change

    # -- per packet -----------------------------------------------------------------

    def forward(self, packet: InPacket, now: float, send_time: int, ntp: int) -> bytes | None:
        """Rewrite and protect ``packet`` for this subscriber; the caller sends the
        returned datagram (``None``: dropped, or handled by :meth:`deliver`)."""
        if (
            not self._ready
            or self.items
            or not packet.simple
            or self.nominated.get(1) is not self.pair
            or packet.payload_type not in self.pts
        ):
            self.deliver(packet, now, send_time, ntp)
            return None
        mapped = map_packet(self.munger, self.mime, packet, now, self.forwarder)  # type: ignore[arg-type]
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
            self.flush_tx_stats()
        return buf[0:n]  # type: ignore[no-any-return]

    def deliver(self, packet: InPacket, now: float, send_time: int, ntp: int) -> None:
        """Forward now if the socket is reachable synchronously, else queue; arms the
        :meth:`forward` path once everything it needs is in place."""
        if self.fast and not self.items:
            dtls = self.dtls
            session = aiortc_compat.dtls_send_session(dtls)
            if session is not None:
                pair = self.nominated.get(1)
                if pair is not None:
                    data = self.rewrite(packet, now, send_time, ntp)
                    if data is None:
                        return
                    route = self.route
                    if route is None or route[0] is not pair:
                        route = self.route = (pair, direct_sendto(pair.protocol.transport),
                                              pair.remote_addr)
                    srtp = self.fast_srtp
                    if srtp is None or srtp.session is not session:
                        srtp = self.fast_srtp = fast_srtp_for(dtls, tx=True)
                        if srtp is None:
                            return
                    self.arm(pair, route, srtp)
                    data = srtp.protect(data)
                    try:
                        route[1](data, route[2])
                    except OSError:  # includes BlockingIOError: the socket buffer is full
                        self.dropped_socket += 1
                        return
                    aiortc_compat.add_dtls_tx(dtls, len(data), 1)
                    return
        self.queue.put(packet)

    def rewrite(self, packet: InPacket, now: float, send_time: int, ntp: int) -> bytes | None:
        """Rewrite one publisher packet for this subscriber (``None`` = drop)."""
        forwarder = self.forwarder
        munger = self.munger
        if forwarder is None or munger is None or self.writer is None or not self.enabled:
            return None
        pt = packet.payload_type
        ok = self.pt_ok.get(pt)
        if ok is None:
            in_mime = forwarder.receiver.mime_for_pt(pt)
            ok = self.pt_ok[pt] = in_mime is not None and in_mime == self.mime
            if ok:
                self.pts = frozenset(p for p, good in self.pt_ok.items() if good)
            elif in_mime == "audio/red" and self.mime == "audio/opus":
                logger.debug("forwarding RED's primary blocks to a subscriber without RED")
            else:
                logger.warning(
                    "cannot forward %s to a subscriber that negotiated %s", in_mime, self.mime
                )
        if not ok:
            if self.mime != "audio/opus" or forwarder.receiver.mime_for_pt(pt) != "audio/red":
                return None
            primary = _red_primary(packet)  # a subscriber without RED: plain Opus
            if primary is None:
                return None
            packet = primary
        mapped = map_packet(munger, self.mime, packet, now, forwarder)
        if mapped is None:
            return None
        return self.build(packet, mapped[0], mapped[1], send_time, ntp)

    def build(self, packet: InPacket, seq: int, ts: int, send_time: int, ntp: int) -> bytes:
        """Serialise a rewritten packet; record it for NACKs and sender reports."""
        writer: RtpHeaderWriter = self.writer
        payload = packet.payload
        data: bytes
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
        if self.history is not None:
            self.history[seq % self.history_size] = (seq, data, header_len)
        self.octets += len(payload)
        self.count += 1
        self.ntp = ntp
        self.rtp_ts = ts
        self.fanout.packets_forwarded += 1
        return data

    def flush_tx_stats(self) -> None:
        """Add the datagrams sent since the last flush to the transport's statistics."""
        aiortc_compat.add_dtls_tx(self.dtls, self.tx_bytes, self.tx_packets)
        self.tx_bytes = self.tx_packets = 0

    def arm(
        self, pair: Any, route: tuple[Any, Callable[[bytes, Any], Any], Any], srtp: FastSrtp
    ) -> None:
        """Take the :meth:`forward` path from the next packet on."""
        if not self.options.fast_out or not self.running or not self.enabled:
            self.ready = False
            return
        self.pair = pair
        self.sendto = route[1]
        self.addr = route[2]
        self.fast_srtp = srtp
        self.srtp = srtp._srtp
        self.protect = srtp._protect
        self.cdata = srtp._cdata
        self.buf = srtp._buf
        self.len_p = srtp._len
        self.ready = True
        if self.options.sync_rtcp:  # the subscriber's reports and feedback without a task hop
            tap = ReceiveTap.for_transport(self.dtls, self.options)
            if tap is not None:
                tap.take_rtcp()

    # -- control ----------------------------------------------------------------------

    def set_enabled(self, value: bool) -> None:
        self.enabled = value
        if not value:
            self.ready = False

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.fanout.flush(dissolve=True)  # the munger changes state
        if self.munger is not None:
            self.munger.set_paused(paused)
        if paused:
            self.queue.clear()

    def detach(self) -> None:
        """The subscription ended: forward nothing more."""
        forwarder = self.forwarder
        self.forwarder = None
        self.ready = False
        self.queue.clear()
        if forwarder is not None:
            self.fanout.remove(self)

    def retransmission(self, sequence_number: int, rtx: tuple[int, int, int] | None
                       ) -> bytes | None:
        """The packet with ``sequence_number`` from the NACK history (RTX-wrapped when
        ``rtx`` = ``(payload type, sequence, ssrc)``), or ``None``."""
        history = self.history
        if history is None:
            return None
        entry = history.get(sequence_number % self.history_size)
        if entry is None or entry[0] != sequence_number:
            return None
        if rtx is None:
            return entry[1]
        data: bytes = rtx_wrap(entry[1], entry[2], rtx[0], rtx[1], rtx[2])
        return data

    def build_writer(self, codec: RTCRtpCodecParameters, ssrc: int, mid: str | None
                     ) -> RtpHeaderWriter:
        ids: dict[str, int] = {}
        params = self.parameters
        if params is not None:
            for ext in params.headerExtensions:
                ids[ext.uri] = ext.id
        if codec.payloadType is None:
            raise AioLiveKitError("negotiated codec has no payload type")
        return RtpHeaderWriter(
            ssrc,
            codec.payloadType,
            mid=mid,
            mid_id=ids.get(URI_MID),
            abs_send_time_id=ids.get(URI_ABS_SEND_TIME),
            audio_level_id=ids.get(URI_AUDIO_LEVEL),
        )

    async def run(self, codec: RTCRtpCodecParameters, ssrc: int, mid: str | None,
                  dtls: Any) -> None:
        """The sender's RTP task: set the down-track up, then drain the queue through
        aiortc's async send path."""
        forwarder = self.forwarder
        if forwarder is None:
            return
        self.mime = codec.mimeType.lower()
        video = forwarder.kind == "video"
        munger = RtpMunger(
            codec.clockRate,
            initial_sequence=random.randrange(0, 1 << 15),
            initial_timestamp=random.getrandbits(32),
            wait_for_keyframe=video,
        )
        munger.set_paused(self.paused)
        self.munger = munger
        self.writer = self.build_writer(codec, ssrc, mid)
        # keep packets for NACKs only when the subscriber negotiated NACK for this codec
        if video or any(fb.type == "nack" and not fb.parameter for fb in codec.rtcpFeedback):
            self.history = self._history
        rtp_queue = self.queue
        items = self.items
        send_rtp = aiortc_compat.dtls_send_rtp(dtls)
        rtp_queue.clear()
        self.running = True
        self.dtls = dtls
        self.fast = self.options.fast_path and _fast_path_available(dtls)
        if self.fast:
            nominated = ice_compat.nominated_pair_map(dtls)
            assert nominated is not None
            self.nominated = nominated
        self.fanout.add(self)
        if video:
            forwarder.request_keyframe()
        while True:
            await rtp_queue.wait()
            now = time.time()
            send_time = abs_send_time(now)
            ntp = ntp_time(now)
            while items:
                data = self.rewrite(items.popleft(), now, send_time, ntp)
                if data is not None:
                    await send_rtp(data)

    def stopped(self) -> None:
        """The sender's RTP task ended."""
        self.running = False
        self.fast = False
        self.ready = False
        if self.forwarder is not None:
            self.fanout.remove(self)


def _fast_path_available(dtls: Any) -> bool:
    """Whether the private names the synchronous send path uses exist (aiortc 1.16)."""
    session = aiortc_compat.dtls_srtp_session(dtls, True)
    ok = (
        aiortc_compat.dtls_send_hooks_ok(dtls)
        and (session is None or srtp_available(session))
        and ice_compat.nominated_pair_map(dtls) is not None
    )
    if not ok:
        logger.warning("aiortc/aioice internals changed: forwarding through the async path")
    return ok


def _sr_property(field: str, mask: int) -> property:
    """An aiortc sender-report counter kept in the sender's :class:`DownTrack`."""

    def get(sender: ForwardingSender) -> int:
        down = sender._lk_down
        if down.fanout.fan is not None:
            down.fanout.flush()  # counters of fanned-out packets are kept in bulk
        return int(getattr(down, field)) & mask

    def set_(sender: ForwardingSender, value: int) -> None:
        setattr(sender._lk_down, field, value)

    return property(get, set_)


class ForwardingSender(RTCRtpSender):
    """aiortc sender whose RTP loop forwards packets instead of encoding a track.

    All forwarding state is in its :class:`DownTrack` (``_lk_down``); the methods here
    are the aiortc hooks (send, RTP and RTCP loops, NACK, PLI) that hand over to it.
    """

    _lk_down: DownTrack

    @classmethod
    def adopt(cls, sender: RTCRtpSender, forwarder: ForwarderLink, *, stream_id: str,
              track_id: str) -> ForwardingSender:
        """Turn aiortc's ``sender`` into a forwarding sender of ``forwarder``."""
        aiortc_compat.check_sender(sender)
        enabled = aiortc_compat.take_enabled(sender)
        aiortc_compat.swap_class(sender, cls)
        assert isinstance(sender, ForwardingSender)
        sender._lk_down = DownTrack(sender, forwarder, enabled)
        aiortc_compat.set_sender_msid(sender, stream_id, track_id)
        return sender

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        if not aiortc_compat.sender_started(self):
            self._lk_down.parameters = parameters
        await super().send(parameters)

    def _send_keyframe(self) -> None:
        forwarder = self._lk_down.forwarder
        if forwarder is not None:
            forwarder.request_keyframe()

    async def _retransmit(self, sequence_number: int) -> None:
        down = self._lk_down
        if down.history is None:
            return
        rtx_pt = aiortc_compat.sender_rtx_payload_type(self)
        rtx = None
        if rtx_pt is not None and down.retransmission(sequence_number, None) is not None:
            rtx = (rtx_pt, aiortc_compat.next_rtx_sequence(self),
                   aiortc_compat.sender_ssrcs(self)[1])
        data = down.retransmission(sequence_number, rtx)
        if data is not None:
            await aiortc_compat.dtls_send_rtp(self.transport)(data)

    # -- RTCP task -------------------------------------------------------------------

    async def _run_rtcp(self) -> None:
        """aiortc's sender-report loop, with libwebrtc's intervals: about 1 s for video,
        5 s for audio (aiortc uses 1 s for both; 90 audio senders in a 10-person room
        then cost as much event-loop time as a tenth of the forwarding)."""
        _, _, rtcp_started, rtcp_exited = aiortc_compat.sender_events(self)
        rtcp_started.set()
        interval = RTCP_INTERVAL_VIDEO if self.kind == "video" else RTCP_INTERVAL_AUDIO
        delay = 0.5 + random.random()  # the first report early, like aiortc
        try:
            while True:
                await asyncio.sleep(delay)
                delay = interval * (0.5 + random.random())
                await aiortc_compat.send_rtcp(self, self._lk_sender_report())
        except asyncio.CancelledError:
            pass
        try:
            ssrc = aiortc_compat.sender_ssrcs(self)[0]
            await aiortc_compat.send_rtcp(self, [RtcpByePacket(sources=[ssrc])])
        finally:
            rtcp_exited.set()

    def _lk_sender_report(self) -> list[Any]:
        ntp, rtp_ts, packets, octets = aiortc_compat.sender_report_counters(self)
        ssrc = aiortc_compat.sender_ssrcs(self)[0]
        report: list[Any] = [
            RtcpSrPacket(
                ssrc=ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp,
                    rtp_timestamp=rtp_ts,
                    packet_count=packets,
                    octet_count=octets,
                ),
            )
        ]
        aiortc_compat.record_sender_report(self, ntp)
        cname = aiortc_compat.sender_cname(self)  # set by send()
        if cname is not None:
            report.append(
                RtcpSdesPacket(
                    chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(1, cname.encode("utf8"))])]
                )
            )
        return report

    # -- RTP task -------------------------------------------------------------------

    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        rtp_started, rtp_exited, _, _ = aiortc_compat.sender_events(self)
        rtp_started.set()
        down = self._lk_down
        try:
            await down.run(codec, aiortc_compat.sender_ssrcs(self)[0],
                           aiortc_compat.sender_mid(self), self.transport)
        except (asyncio.CancelledError, ConnectionError):
            pass
        except Exception:  # must still set the exit event or stop() hangs
            logger.exception("forwarding sender failed")
        finally:
            down.stopped()
            track = self.track
            if track is not None:
                track.stop()
            rtp_exited.set()


def _get_enabled(sender: ForwardingSender) -> bool:
    return sender._lk_down.enabled


def _set_enabled(sender: ForwardingSender, value: bool) -> None:
    down = sender.__dict__.get("_lk_down")
    if down is not None:
        down.set_enabled(value)


# the transceiver's direction switches the down-track on and off
aiortc_compat.install_enabled_property(ForwardingSender, property(_get_enabled, _set_enabled))
aiortc_compat.install_sender_report_counters(
    ForwardingSender,
    ntp=_sr_property("ntp", (1 << 64) - 1),
    rtp_timestamp=_sr_property("rtp_ts", 0xFFFFFFFF),
    octets=_sr_property("octets", 0xFFFFFFFF),
    packets=_sr_property("count", 0xFFFFFFFF),
)
