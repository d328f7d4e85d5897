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
  ``SubscribedQualityUpdate`` with dynacast); a resumed layer starts with a key frame;
* the send rate follows the loss in the server's receiver reports and is split over the
  layers from the lowest up (:mod:`.send_rate`): on a link that cannot carry them all the
  top layers pause and the others' encoders get less, and they come back as it clears.

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
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from .._compat import aiortc as aiortc_compat
from .._compat.aiortc_direct import DirectSendHooks
from . import codecs, frame_crypto_shell as crypto_shell, send_rate
from .rtp_direct import DirectRtpWriter
from .simulcast_layers import LayerSpec

__all__ = ["SimulcastLayer", "SimulcastSender"]

logger = logging.getLogger(__name__)

HISTORY = 512  # packets kept per layer for retransmission
SR_INTERVAL = 1.0  # seconds between the sender reports of the layers aiortc does not know
ADAPT_INTERVAL = 0.25  # seconds between two looks at the uplink's loss
PROBE_WINDOW = 2.0  # a resumed layer paused again within this long: the probe failed
GROWTH_HEADROOM = 1.1  # the send rate stays within this factor of what the layers get
PROBE_BACKOFF_MIN, PROBE_BACKOFF_MAX = 8.0, 16.0  # seconds before a paused layer is tried


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
        self.wanted = True  # by the server (dynacast)
        self.bitrate = spec.max_bitrate  # what the send rate gives it (0: paused)
        self.min_bitrate = min(send_rate.min_bitrate(spec.width, spec.height),
                               spec.max_bitrate)
        self.loss: tuple[float, float] | None = None  # last report: (fraction lost, time)
        # this interval's packets sent and sequence numbers NACKed (the uplink's losses,
        # seen sooner and truer than receiver reports, which count recovered packets)
        self.interval_sent = 0
        self.interval_nacked: set[int] = set()
        self._nacked_before: dict[int, None] = {}  # a packet's loss counts once
        self.keyframe_wanted = True
        self.encoder: codecs.VideoPacketEncoder | None = None
        self.frames_sent = 0
        self.nacks = 0
        self._packer = get_encoder(codec)
        self._history: dict[int, bytes] = {}
        self._next_pts: int | None = None
        self._aiortc_sender = aiortc_sender  # the top layer's RTCP also goes to aiortc

    @property
    def active(self) -> bool:
        """Encoded and sent: wanted by the server and given a bitrate."""
        return self.wanted and self.bitrate > 0

    def set_bitrate(self, bitrate: int) -> None:
        """The send rate's share for this layer; the encoder follows a change of 15 % or
        more (a new encoder, from a key frame), a resumed layer starts with a key frame."""
        old = self.bitrate
        if bitrate == old:
            return
        if old == 0 or bitrate == 0 or abs(bitrate - old) >= 0.15 * old:
            if old == 0:
                self.keyframe_wanted = True
            self.bitrate = bitrate

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
        if encoder is None or encoder.mime != self.mime or encoder.bitrate != self.bitrate:
            encoder = self.encoder = codecs.VideoPacketEncoder(
                self.mime, self.bitrate, spec.max_framerate or 30.0)
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
            self.interval_sent += 1
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
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.ssrc:
                    self.loss = (report.fraction_lost / 256.0, time.monotonic())
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            for seq in packet.lost:
                rtp = self._history.get(seq % HISTORY)
                if rtp is not None and int.from_bytes(rtp[2:4], "big") == seq:
                    self.nacks += 1
                    if seq not in self._nacked_before:
                        self._nacked_before[seq] = None
                        self.interval_nacked.add(seq)
                        if len(self._nacked_before) > HISTORY:
                            del self._nacked_before[next(iter(self._nacked_before))]
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
        self.rate = send_rate.LossBasedRate(sum(layer.spec.max_bitrate for layer in layers))
        self._adapted = time.monotonic()
        self._probe_at = 0.0
        self._probing_since: float | None = None
        self._backoff = PROBE_BACKOFF_MIN
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
        """Send only the layers in ``rids`` (dynacast); a layer resumed starts with a key
        frame."""
        for layer in self.layers:
            wanted = layer.spec.rid in rids
            if wanted and not layer.wanted:
                layer.keyframe_wanted = True
            layer.wanted = wanted

    def _adapt(self, now: float) -> None:
        """Follow the uplink's loss (NACKed packets, receiver reports) of the layers being
        sent: the send rate, then each layer's share (:mod:`.send_rate`). A layer paused
        for lack of rate is tried again (a probe) only after a back-off that doubles each
        time the probe fails (8 s, then 16 s: the longer the wait, the later the layer returns once the link clears): each probe costs the link a burst of loss."""
        active = [layer for layer in self.layers if layer.active]
        sent = sum(layer.interval_sent for layer in active)
        nacked = sum(len(layer.interval_nacked) for layer in active)
        fresh = [layer.loss[0] for layer in active
                 if layer.loss is not None and layer.loss[1] > self._adapted]
        for layer in self.layers:
            layer.interval_sent = 0
            layer.interval_nacked.clear()
        self._adapted = now
        if sent < 10 and not fresh:
            return
        loss = min(1.0, max([nacked / sent if sent else 0.0, *fresh]))
        # the rate is what is sent, a little more: a cut must reach the encoders, and
        # growth beyond what the layers can use proves nothing about the link
        allocated = sum(layer.bitrate for layer in self.layers)
        self.rate.rate = min(self.rate.rate, allocated * GROWTH_HEADROOM)
        target = self.rate.on_loss(loss, now)
        limits = [(layer.min_bitrate, layer.spec.max_bitrate) for layer in self.layers]
        sending = [layer.bitrate > 0 for layer in self.layers]
        waiting = next((i for i, on in enumerate(sending) if not on), None)
        if waiting is not None and now >= self._probe_at and loss < send_rate.INCREASE_LOSS:
            # a probe: try the lowest paused layer at its minimum
            need = sum(high for _, high in limits[:waiting]) + limits[waiting][0]
            if target < need:
                self.rate.rate = float(need)
                target = self.rate.target
            self._probing_since = now
        shares = send_rate.allocate(target, limits)
        paused = [i for i, share in enumerate(shares) if not share and sending[i]]
        if paused and self._probing_since is not None:
            if now - self._probing_since < PROBE_WINDOW:  # the probe failed
                self._backoff = min(self._backoff * 2, PROBE_BACKOFF_MAX)
            self._probing_since = None
        elif self._probing_since is not None and now - self._probing_since >= PROBE_WINDOW:
            self._backoff = PROBE_BACKOFF_MIN  # it held
            self._probing_since = None
        if paused:
            self._probe_at = now + self._backoff
        for layer, share in zip(self.layers, shares, strict=True):
            layer.set_bitrate(share)
        logger.debug("send rate: loss %.3f (nacked %d of %d, reports %s) -> %d: %s", loss,
                     nacked, sent, fresh, target, [layer.bitrate for layer in self.layers])

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
                now = time.monotonic()
                if now - self._adapted >= ADAPT_INTERVAL:
                    self._adapt(now)
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
