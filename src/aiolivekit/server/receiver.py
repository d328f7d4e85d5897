"""The publisher side of a forwarded track: receive, decrypt hand-off, statistics.

:class:`TrackReceiver` takes one published track's RTP from two places and hands each
packet, parsed once into an :class:`InPacket`, to the track's fan-out:

* aiortc's receive path, through :class:`ForwardingReceiver` (the class swapped onto
  aiortc's ``RTCRtpReceiver``): RTX (unwrapped here), the first packets of a source,
  video (aiortc's NACK generation and REMB stay) and everything when the raw path is
  unavailable. aiortc's own pipeline still runs, so NACKs, receiver reports, REMB and
  PLI toward the publisher keep working; nothing is decoded.
* the raw path: once the first packet of an audio source went through aiortc, its later
  packets come straight from the UDP socket through the transport's
  :class:`~.rtp_io.ReceiveTap` (decrypted in place); :meth:`TrackReceiver.on_raw`
  parses the header and updates aiortc's receiver statistics itself.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtp import RtpPacket, unwrap_rtx

from .._compat import aiortc as aiortc_compat
from ..webrtc.rtp import parse_rtp_header
from .config import ForwardingOptions
from .rtp_io import ReceiveTap
from .speakers import AudioLevelMeter

__all__ = ["MAX_FAST_PAYLOAD", "ForwardingReceiver", "InPacket", "PacketSink", "TrackReceiver"]

logger = logging.getLogger(__name__)


class PacketSink(Protocol):
    """Where the receiver hands each packet (the track's :class:`~.fanout.Fanout`)."""

    tap: ReceiveTap | None

    def dispatch(self, packet: InPacket, now: float | None = None) -> None: ...

URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
MAX_FAST_PAYLOAD = 1400  # larger payloads take the aiortc send path (buffer headroom)


class InPacket:
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
    def from_rtp(cls, packet: RtpPacket) -> InPacket:
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


class ForwardingReceiver(RTCRtpReceiver):
    """aiortc receiver that also hands every RTP packet to a :class:`TrackReceiver`."""

    _lk_track: TrackReceiver | None
    _lk_enabled: bool

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        track = self._lk_track
        if not aiortc_compat.receiver_started(self):
            aiortc_compat.ensure_decoder_sink(self)
            if track is not None:
                track.on_receive_parameters(parameters)
        await super().receive(parameters)

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        track = self._lk_track
        if track is not None and track.enabled:
            try:
                track.on_rtp(packet, self)
            except Exception:  # never let a forwarding bug kill the publisher's transport
                track.errors += 1
                if track.errors <= 5:
                    logger.exception("forwarding an RTP packet failed")
        await super()._handle_rtp_packet(packet, arrival_time_ms)

    @classmethod
    def adopt(cls, receiver: RTCRtpReceiver, track: TrackReceiver) -> None:
        """Turn aiortc's ``receiver`` (not started yet) into a forwarding receiver that
        decodes nothing."""
        aiortc_compat.stop_decoding(receiver)
        aiortc_compat.nack_per_ssrc(receiver)
        enabled = aiortc_compat.take_enabled(receiver)
        aiortc_compat.swap_class(receiver, cls)
        assert isinstance(receiver, ForwardingReceiver)
        receiver._lk_track = track
        receiver._lk_enabled = track.enabled = enabled

    def release(self) -> None:
        """Hand no more packets to the track."""
        self._lk_track = None


class TrackReceiver:
    """The receive side of one :class:`~.forwarder.TrackForwarder`: codecs, source
    changes, the raw receive path and its statistics."""

    def __init__(self, receiver: RTCRtpReceiver, kind: str, options: ForwardingOptions,
                 fanout: PacketSink, on_new_source: Callable[[], None],
                 on_codecs: Callable[[], None]) -> None:
        self.kind = kind
        self.receiver = receiver
        self.options = options
        self._fanout = fanout
        self._deliver = fanout.dispatch
        self._on_new_source = on_new_source  # a source (SSRC) starts
        self._on_codecs = on_codecs  # the negotiated codecs are known
        self.on_rid: Callable[[int, str], None] | None = None  # a simulcast layer's SSRC
        self.ssrc_of_rid: dict[str, int] = {}
        self.codecs: dict[int, RTCRtpCodecParameters] = {}
        self._rtx_apt: dict[int, int] = {}
        self.codec: RTCRtpCodecParameters | None = None
        self.mime_type: str | None = None
        self._last_pt: int | None = None
        self.publisher_ssrc: int | None = None
        self._in_audio_level_id: int | None = None
        self.tap: ReceiveTap | None = None
        self.raw_ssrc: int | None = None
        self.raw_stats: dict[int, Any] = {}
        self.inline_stats = False
        self.enabled = True  # the transceiver's direction lets the publisher's media in
        self.packets_received = 0
        self.bytes_received = 0  # RTP payload bytes (the inspector's bit rate)
        self.errors = 0
        self.levels = AudioLevelMeter()  # RFC 6464 levels for the speaker observer

    # -- codecs -------------------------------------------------------------------

    def set_codecs(self, codecs: list[RTCRtpCodecParameters]) -> None:
        self.codecs = {c.payloadType: c for c in codecs if c.payloadType is not None}
        self._rtx_apt = {}
        for c in codecs:
            if c.payloadType is not None and c.name.lower() == "rtx":
                apt = c.parameters.get("apt")
                if isinstance(apt, int):
                    self._rtx_apt[c.payloadType] = apt
        if self.codec is None:
            media = [c for c in codecs if c.name.lower() != "rtx"]
            if media:
                self.codec = media[0]
                self.mime_type = canonical_mime(media[0].mimeType)

    def on_receive_parameters(self, parameters: RTCRtpReceiveParameters) -> None:
        """aiortc's receiver starts with the negotiated parameters."""
        self.set_codecs(list(parameters.codecs))
        for ext in parameters.headerExtensions:
            if ext.uri == URI_AUDIO_LEVEL:
                self._in_audio_level_id = ext.id
        self._on_codecs()

    def mime_for_pt(self, pt: int) -> str | None:
        codec = self.codecs.get(pt)
        return codec.mimeType.lower() if codec is not None else None

    # -- packets ------------------------------------------------------------------

    def on_rtp(self, packet: RtpPacket, receiver: ForwardingReceiver) -> None:
        """A packet parsed by aiortc's receive path (RTX, the first packets of a source,
        video, or every packet when the raw path is unavailable)."""
        pt = packet.payload_type
        apt = self._rtx_apt.get(pt)
        ext = packet.extensions
        if apt is not None:
            original = aiortc_compat.rtx_original_ssrc(receiver, packet.ssrc)
            if original is None and ext.repaired_rtp_stream_id:
                # a simulcast layer's RTX stream names the layer it repairs
                original = self.ssrc_of_rid.get(ext.repaired_rtp_stream_id)
            if original is None or len(packet.payload) < 2:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original)
        elif pt not in self.codecs:
            return
        elif self.raw_ssrc != packet.ssrc and self.options.raw_receive and self.kind == "audio":
            self.enable_raw_receive(receiver, packet.ssrc)
        elif ext.rtp_stream_id and self.ssrc_of_rid.get(ext.rtp_stream_id) != packet.ssrc:
            self.ssrc_of_rid[ext.rtp_stream_id] = packet.ssrc
            if self.on_rid is not None:
                self.on_rid(packet.ssrc, ext.rtp_stream_id)
        self.dispatch(InPacket.from_rtp(packet))

    def enable_raw_receive(self, receiver: ForwardingReceiver, ssrc: int) -> None:
        """Take this source's later packets straight from the UDP socket (:mod:`.rtp_io`)."""
        tap = ReceiveTap.for_transport(receiver.transport, self.options)
        if tap is None:
            return
        if self.raw_ssrc is not None and self.tap is not None:
            self.tap.remove_route(self.raw_ssrc, self.on_raw)
        self.tap = self._fanout.tap = tap
        self.raw_ssrc = ssrc
        # aiortc's receiver reports read these (empty dict if the private name moved)
        self.raw_stats = aiortc_compat.receiver_remote_streams(receiver)
        self.inline_stats = aiortc_compat.stats_inline_ok()
        tap.add_route(ssrc, self.on_raw)
        if self.options.sync_rtcp:
            tap.take_rtcp()

    def on_raw(self, data: memoryview, n: int) -> None:
        """A plaintext RTP packet of the current source (the first ``n`` bytes of
        ``data``) from the raw receive path."""
        if not self.enabled:
            return
        marker, pt, seq, ts, ssrc, start, end, level = parse_rtp_header(
            data, self._in_audio_level_id, n
        )
        if pt not in self.codecs:
            return
        if level is not None:
            self.levels.add(level[1])
        packet = InPacket(
            marker, pt, seq, ts, ssrc, data[start:end].tobytes(), level, None, n - end
        )
        if data[0] & 0x0F:  # CSRCs (rare): keep them
            packet.csrc = list(struct.unpack_from(f"!{data[0] & 0x0F}I", data, 12))
            packet.simple = False
        now = time.time()
        stats = self.raw_stats.get(ssrc)
        if stats is not None:  # aiortc's receiver reports (RR) read these statistics
            if self.inline_stats:
                aiortc_compat.update_stream_statistics(stats, seq, ts, now)
            else:
                stats.add(packet)
        # what dispatch() does, inline (the hot path)
        self.packets_received += 1
        self.bytes_received += end - start
        if pt != self._last_pt:
            self._set_payload_type(pt)
        if ssrc != self.publisher_ssrc:
            self.publisher_ssrc = ssrc
            self._on_new_source()
        self._deliver(packet, now)

    def dispatch(self, packet: InPacket, now: float | None = None) -> None:
        """Count ``packet``, follow payload type and source changes, and hand it to the
        fan-out."""
        self.packets_received += 1
        self.bytes_received += len(packet.payload)
        if packet.audio_level is not None:
            self.levels.add(packet.audio_level[1])
        pt = packet.payload_type
        if pt != self._last_pt:
            self._set_payload_type(pt)
        if packet.ssrc != self.publisher_ssrc:
            self.publisher_ssrc = packet.ssrc
            self._on_new_source()
        self._deliver(packet, now)

    def _set_payload_type(self, pt: int) -> None:
        self._last_pt = pt
        codec = self.codecs[pt]
        self.codec = codec
        self.mime_type = canonical_mime(codec.mimeType)

    def close(self) -> None:
        if self.tap is not None and self.raw_ssrc is not None:
            self.tap.remove_route(self.raw_ssrc, self.on_raw)
        self.tap = self._fanout.tap = None
        receiver = self.receiver
        if isinstance(receiver, ForwardingReceiver):
            receiver.release()


def _get_enabled(receiver: ForwardingReceiver) -> bool:
    return receiver._lk_enabled


def _set_enabled(receiver: ForwardingReceiver, value: bool) -> None:
    receiver._lk_enabled = value
    track = receiver.__dict__.get("_lk_track")
    if track is not None:
        track.enabled = value


# the transceiver's direction (``_enabled``) is mirrored in the TrackReceiver, which reads
# it per packet
aiortc_compat.install_enabled_property(ForwardingReceiver, property(_get_enabled, _set_enabled))


def canonical_mime(mime: str) -> str:
    kind, _, name = mime.partition("/")
    upper = {"vp8": "VP8", "vp9": "VP9", "h264": "H264", "av1": "AV1"}
    if kind.lower() == "audio":
        return f"audio/{name.lower()}"
    return f"{kind.lower()}/{upper.get(name.lower(), name)}"
