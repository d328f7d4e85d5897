"""Simulcast publishing: one encoder, one SSRC and one RTP stream per layer.

aiortc's ``RTCRtpSender`` sends one stream. For a simulcast track its RTP loop stays
parked (as the audio fast path does, see :mod:`.rtc_local`) and :class:`SimulcastSender`
sends every layer itself:

* each captured frame is converted once to I420, scaled to each due layer (libswscale)
  and encoded by that layer's encoder (in the default executor), each layer capped at
  its own frame rate and bitrate (:mod:`.simulcast_layers`);
* each layer is packetised by its own aiortc packetiser (VP8 picture ids / H264 NAL
  units) and written by a :class:`~.rtp_direct.DirectRtpWriter` with the rid in the RID
  header extension; the top layer uses the aiortc sender's SSRC (aiortc's own sender
  reports and stats keep counting it), the others their own SSRCs and sender reports;
* RTCP about a layer's SSRC is routed here: NACK resends from the layer's history (SRTP
  allows the repeat), PLI/FIR ask that layer for a key frame, receiver reports of the top
  layer go on to aiortc's sender (round-trip time, stats);
* :meth:`SimulcastSender.set_active` pauses and resumes layers (the server's
  ``SubscribedQualityUpdate`` with dynacast); a resumed layer starts with a key frame.

All layers share one RTP timestamp base, so the server can align them when it switches.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import av
from aiortc.codecs import get_encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from .._compat import aiortc as aiortc_compat
from .._compat.aiortc_direct import DirectSendHooks
from . import codecs, frame_crypto_shell as crypto_shell
from .rtp_direct import DirectRtpWriter
from .simulcast_layers import LayerSpec

__all__ = ["SimulcastLayer", "SimulcastSender"]

logger = logging.getLogger(__name__)

HISTORY = 512  # packets kept per layer for retransmission
SR_INTERVAL = 1.0  # seconds between the sender reports of the layers aiortc does not know


class SimulcastLayer:
    """One layer's encoder, packetiser, RTP writer, history and RTCP handling."""

    def __init__(self, spec: LayerSpec, top: LayerSpec, writer: DirectRtpWriter, codec: Any,
                 aiortc_sender: Any = None) -> None:
        self.spec = spec
        # the layer's size relative to the top one (frames may differ from the declared size)
        self._scale = (spec.width / top.width, spec.height / top.height)
        self.writer = writer
        self.ssrc = writer.ssrc
        self.mime = str(codec.mimeType).lower()
        self.active = True
        self.keyframe_wanted = True
        self.encoder: codecs.VideoPacketEncoder | None = None
        self.frames_sent = 0
        self.nacks = 0
        self._packer = get_encoder(codec)
        self._history: dict[int, bytes] = {}
        self._next_pts: int | None = None
        self._aiortc_sender = aiortc_sender  # the top layer's RTCP also goes to aiortc

    def due(self, pts: int) -> bool:
        """Whether the frame at ``pts`` (90 kHz) is encoded for this layer: active and at
        most ``max_framerate`` frames a second."""
        if not self.active:
            return False
        fps = self.spec.max_framerate
        if fps <= 0:
            return True
        step = int(90000 / fps)
        if self._next_pts is None or pts >= self._next_pts + step or pts < self._next_pts - step:
            self._next_pts = pts  # first frame, or a gap or a jump: start over
        if pts < self._next_pts:
            return False
        self._next_pts += step
        return True

    def encode(self, frame: Any, pts: int, force_keyframe: bool) -> list[Any]:
        """Encode the full-size I420 ``frame`` at this layer's size (executor thread)."""
        spec = self.spec
        if self._scale != (1.0, 1.0):
            width = max(2, int(frame.width * self._scale[0] + 0.5) & ~1)
            height = max(2, int(frame.height * self._scale[1] + 0.5) & ~1)
            frame = frame.reformat(width=width, height=height)
        encoder = self.encoder
        if encoder is None or encoder.mime != self.mime:
            encoder = self.encoder = codecs.VideoPacketEncoder(
                self.mime, spec.max_bitrate, spec.max_framerate or 30.0)
        return encoder.encode(frame, pts, force_keyframe)

    def send(self, data: bytes, pts: int) -> None:
        """Packetise and send one encoded frame (``pts`` on the 90 kHz clock)."""
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = codecs.VIDEO_TIME_BASE
        payloads, timestamp = self._packer.pack(packet)
        writer = self.writer
        ts = (writer.timestamp_origin + timestamp) & 0xFFFFFFFF
        now = time.time()
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            rtp = writer.build(1 if i == last else 0, ts, payload)
            self._history[int.from_bytes(rtp[2:4], "big") % HISTORY] = rtp
            writer.send_packet(rtp, now, ts, len(payload))
        self.frames_sent += 1

    def sender_report(self, cname: str | None) -> list[Any]:
        """This layer's RTCP sender report (and SDES) when aiortc does not send it."""
        writer = self.writer
        packets: list[Any] = [RtcpSrPacket(ssrc=self.ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=writer.last_ntp_time, rtp_timestamp=writer.last_rtp_timestamp,
            packet_count=writer.packets_sent & 0xFFFFFFFF,
            octet_count=writer.octets_sent & 0xFFFFFFFF))]
        if cname:
            packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(
                ssrc=self.ssrc, items=[(1, cname.encode("utf8"))])]))
        return packets

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        """aiortc's RTP router hands us the RTCP about our SSRC."""
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            for seq in packet.lost:
                rtp = self._history.get(seq % HISTORY)
                if rtp is not None and int.from_bytes(rtp[2:4], "big") == seq:
                    self.nacks += 1
                    ts = int.from_bytes(rtp[4:8], "big")
                    self.writer.send_packet(rtp, time.time(), ts, 0)
            return
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.keyframe_wanted = True
            return
        if self._aiortc_sender is not None:
            await self._aiortc_sender._handle_rtcp_packet(packet)


class SimulcastSender:
    """Sends a video track's frames as simulcast layers on one aiortc sender."""

    def __init__(self, track: Any, sender: Any, hooks: DirectSendHooks, codec: Any,
                 layers: list[SimulcastLayer], cname: str | None) -> None:
        self._track = track
        self._sender = sender
        self._hooks = hooks
        self.codec = codec
        self.layers = layers
        self._cname = cname
        self._task: asyncio.Task[None] | None = None
        self._rtcp_task: asyncio.Task[None] | None = None
        for layer in layers:
            hooks.route_rtcp(layer.ssrc, layer)

    @classmethod
    def create(cls, track: Any, sender: Any, codec: Any, specs: list[LayerSpec],
               rid_id: int, cname: str | None = None) -> SimulcastSender | None:
        """The sender of ``specs`` (low to high) on ``sender``; None when aiortc's
        internals this needs moved (the caller then sends one layer)."""
        hooks = DirectSendHooks.create(sender)
        if hooks is None or not hooks.can_route_rtcp():
            return None
        layers: list[SimulcastLayer] = []
        origin = random.getrandbits(32)
        used = {hooks.ssrc}
        for i, spec in enumerate(specs):
            top = i == len(specs) - 1
            ssrc = hooks.ssrc
            if not top:
                ssrc = random.getrandbits(32)
                while ssrc in used or ssrc == 0:
                    ssrc = random.getrandbits(32)
                used.add(ssrc)
            writer = DirectRtpWriter.create_layer(hooks, codec, ssrc, spec.rid, rid_id)
            if writer is None:
                return None
            writer.timestamp_origin = origin
            layers.append(SimulcastLayer(spec, specs[-1], writer, codec,
                                         sender if top else None))
        return cls(track, sender, hooks, codec, layers, cname)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._run())
            self._rtcp_task = loop.create_task(self._run_rtcp())

    def set_active(self, rids: set[str]) -> None:
        """Send only the layers in ``rids``; a layer resumed starts with a key frame."""
        for layer in self.layers:
            active = layer.spec.rid in rids
            if active and not layer.active:
                layer.keyframe_wanted = True
            layer.active = active

    def close(self) -> None:
        for task in (self._task, self._rtcp_task):
            if task is not None:
                task.cancel()
        self._task = self._rtcp_task = None
        for layer in self.layers:
            self._hooks.unroute_rtcp(layer.ssrc, layer)

    async def _run(self) -> None:
        track = self._track
        loop = asyncio.get_running_loop()
        try:
            while True:
                captured = await track._next_frame()
                pts = track._pts(captured)
                force_all = track.force_keyframe
                track.force_keyframe = False
                due = [layer for layer in self.layers if layer.due(pts)]
                if not due:
                    continue
                jobs = []
                for layer in due:
                    jobs.append((layer, force_all or layer.keyframe_wanted))
                    layer.keyframe_wanted = False
                try:
                    results = await loop.run_in_executor(
                        None, _encode_layers, track._converter, captured.frame, pts, jobs)
                except Exception:
                    logger.exception("simulcast encode failed; frame dropped")
                    for layer, _ in jobs:
                        layer.encoder = None
                        layer.keyframe_wanted = True
                    continue
                if not self._hooks.connected():
                    continue
                for (layer, force), packets in zip(jobs, results, strict=True):
                    if not packets:
                        layer.keyframe_wanted |= force  # rate control dropped it
                        continue
                    encoded = b"".join(bytes(p) for p in packets)
                    data: bytes | None = encoded
                    if track.frame_cryptor is not None:
                        data = crypto_shell.encrypt_frame(
                            track.frame_cryptor, encoded,
                            crypto_shell.codec_of_mime(layer.mime), layer.ssrc, pts)
                    if data is not None:
                        layer.send(data, pts)
                track.frames_encoded += 1
        except (asyncio.CancelledError, MediaStreamError):
            pass
        except Exception:
            logger.exception("simulcast sending stopped")

    async def _run_rtcp(self) -> None:
        others = [layer for layer in self.layers if layer.ssrc != self._hooks.ssrc]
        try:
            while True:
                await asyncio.sleep(SR_INTERVAL * (0.5 + random.random()))
                if not self._hooks.connected():
                    continue
                reports = [packet for layer in others if layer.writer.packets_sent
                           for packet in layer.sender_report(self._cname)]
                if reports:
                    try:
                        await aiortc_compat.send_rtcp(self._sender, reports)
                    except ConnectionError:
                        pass
        except asyncio.CancelledError:
            pass


def _encode_layers(converter: codecs.VideoConverter, frame: Any, pts: int,
                   jobs: list[tuple[SimulcastLayer, bool]]) -> list[list[Any]]:
    """Convert once, encode each layer (executor thread)."""
    i420 = converter.convert(frame)
    return [layer.encode(i420, pts, force) for layer, force in jobs]
