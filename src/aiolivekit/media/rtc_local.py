"""aiortc ``MediaStreamTrack`` s of local tracks (what the engine adds to the publisher PC).

``recv()`` returns pre-encoded ``av.Packet`` s (see :mod:`.codecs`) once a sender is
attached; aiortc then only packetizes them. Without a sender (a plain ``addTrack`` in
tests) raw ``av`` frames are returned and aiortc's own encoder is used.

``attach_sender`` wraps two methods of that one sender instance (through
:func:`aiolivekit._compat.aiortc.hook_sender`):

* ``_next_encoded_frame(codec)``: learns the negotiated codec before each ``recv()``
  and puts the RFC 6464 audio level on audio packets (aiortc omits it on the
  ``pack()`` path);
* ``_send_keyframe()`` (PLI/FIR): forces a keyframe on the next video encode.

Audio fast path: once the sender's RTP loop asks for the first frame of a negotiated
Opus codec, the wrapper parks that loop (it waits until the track stops or is detached)
and arms a :class:`.rtp_direct.DirectRtpWriter`. From then on every chunk the
``AudioSource`` plays out is encoded (libopus through ``ctypes``) and sent as one RTP
packet synchronously, inside the source's playout call: no queue, no task switch, no
``RtpPacket``. When ``audio/red`` was negotiated (``TrackPublishOptions.red``), each Opus
payload is wrapped in RED (RFC 2198) with the previous one as its redundant block
(:class:`.red.RedEncoder`). aiortc's RTCP loop still sends the sender reports from counters the
writer keeps up to date. Without a sender, or for another codec, the queue + ``recv()``
path below is used.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import time
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .._compat import aiortc as aiortc_compat
from ..webrtc.simulcast_sdp import AnsweredSimulcast
from . import codecs, frame_crypto_shell as crypto_shell, send_rate
from .audio_source import AudioSource
from .red import RedEncoder
from .rtp_direct import DirectRtpWriter
from .simulcast_layers import LayerSpec
from .simulcast_send import SimulcastSender
from .video_source import CapturedFrame, VideoSource

__all__ = ["LocalAudioRtcTrack", "LocalVideoRtcTrack"]

logger = logging.getLogger(__name__)

_AUDIO_BACKLOG = 5  # 20 ms packets kept when the sender is slower than the clock
_LOSS_POLL = 25  # chunks (20 ms) between two looks at the receivers' loss reports
_ADAPT_INTERVAL = 0.25  # s between two looks at a video stream's uplink loss


class _LocalRtcTrack(MediaStreamTrack):
    def __init__(self) -> None:
        super().__init__()
        self.muted = False
        self.sender: Any = None
        self.codec_mime: str | None = None
        self.force_keyframe = False
        self.audio_level: int | None = None
        # end-to-end encryption (issue 17): every encoded frame goes through it
        self.frame_cryptor: Any = None
        self._unencryptable_reported = False
        self._parked: asyncio.Future[None] | None = None  # what a parked RTP loop awaits

    def _ssrc(self) -> int:
        sender = self.sender
        if sender is None:
            return 0
        try:
            return int(aiortc_compat.sender_ssrcs(sender)[0])
        except (AttributeError, TypeError, ValueError):
            return 0

    def _encrypt_packet(self, packet: Any, codec: str) -> Any:
        """``packet`` (an ``av.Packet``) encrypted by ``frame_cryptor``; None: drop it."""
        cryptor = self.frame_cryptor
        if cryptor is None:
            return packet
        data = crypto_shell.encrypt_frame(cryptor, bytes(packet), codec, self._ssrc(),
                                          int(packet.pts or 0))
        if data is None:
            return None
        out = av.Packet(data)
        out.pts = packet.pts
        out.time_base = packet.time_base
        return out

    def _report_unencryptable(self) -> None:
        if not self._unencryptable_reported:
            self._unencryptable_reported = True
            logger.error("end-to-end encryption is on but this track's frames are encoded "
                         "by aiortc (codec %s, or no sender hooks): they are dropped, "
                         "not sent in clear", self.codec_mime)

    def _park(self, sender: Any, codec: Any) -> asyncio.Future[None] | None:
        """Take over the sending of ``sender`` (fast path): a future to park its loop on."""
        return None

    def _park_future(self) -> asyncio.Future[None]:
        parked = self._parked
        if parked is None or parked.done():
            parked = self._parked = asyncio.get_running_loop().create_future()
        return parked

    def _unpark(self) -> None:
        parked, self._parked = self._parked, None
        if parked is not None and not parked.done():
            parked.set_result(None)

    def attach_sender(self, sender: Any) -> None:
        if self.sender is sender:
            return
        self.sender = sender
        self._sender_changed()
        if sender is None:
            return
        track = self

        async def next_encoded_frame(original: Any, codec: Any) -> Any:
            track.codec_mime = codec.mimeType.lower()
            if track.sender is sender:
                parked = track._park(sender, codec)
                if parked is not None:
                    await parked  # until the track stops or the fast path is disarmed
                    if track.readyState != "live":
                        raise MediaStreamError
                    return None
            enc = await original(codec)
            if enc is not None and track.kind == "audio" and track.audio_level is not None:
                enc.audio_level = -track.audio_level  # aiortc negates it
            return enc

        def send_keyframe(original: Any) -> None:
            track.force_keyframe = True
            original()

        aiortc_compat.hook_sender(sender, next_encoded_frame, send_keyframe,
                                  self._nacked if self.kind == "video" else None)

    def _nacked(self, sequence_number: int) -> None:
        """A NACK asked for this packet (the uplink lost it): counted once."""

    def _sender_changed(self) -> None:
        """Hook: the attached sender changed (fast-path state must follow)."""


class LocalAudioRtcTrack(_LocalRtcTrack):
    """Audio from an :class:`AudioSource`, Opus-encoded here."""

    kind = "audio"

    def __init__(self, source: AudioSource) -> None:
        super().__init__()
        self._source = source
        self.config = codecs.audio_config(None, source.num_channels)
        self._encoder: codecs.OpusPacketEncoder | None = None
        self._queue: collections.deque[tuple[Any, int]] = collections.deque(maxlen=_AUDIO_BACKLOG)
        self._waiter: asyncio.Future[None] | None = None
        self._consuming = False
        self._layout = "stereo" if source.num_channels == 2 else "mono"
        # fast path: (sender, writer) of the attached sender, and the future its loop parks on
        self._writer: DirectRtpWriter | None = None
        self._writer_of: Any = None
        self._red: RedEncoder | None = None  # RED negotiated: wraps each Opus payload
        self._chunks = 0
        self.expected_loss = 0.0  # what the encoder was told (RTCP receiver reports)
        source._add_sink(self._on_chunk)

    @property
    def direct(self) -> bool:
        """True while packets go out through the direct RTP writer."""
        return self._parked is not None

    def configure(self, config: codecs.AudioEncoderConfig) -> None:
        self.config = config
        self._encoder = None  # re-created with the new settings on the next chunk

    def _park(self, sender: Any, codec: Any) -> asyncio.Future[None] | None:
        mime = codec.mimeType.lower()
        if self.readyState != "live" or mime not in ("audio/opus", "audio/red"):
            return None
        if self._writer_of is not sender:
            self._writer = DirectRtpWriter.create(sender, codec)
            self._writer_of = sender
            self._red = None
            if mime == "audio/red":
                # RED negotiated (TrackPublishOptions.red): each packet carries the one before
                inner = aiortc_compat.red_inner_payload_type(codec)
                self._red = RedEncoder(inner if inner is not None
                                       else aiortc_compat.OPUS_PAYLOAD_TYPE)
        if self._writer is None:
            if mime == "audio/red":
                logger.error("RED was negotiated but aiortc's sender hooks are missing: "
                             "aiortc cannot encode RED, nothing is sent")
            return None
        return self._park_future()

    def _sender_changed(self) -> None:
        self._unpark()

    def _follow_loss(self, encoder: codecs.OpusPacketEncoder) -> None:
        """In-band FEC follows the loss the receivers report (RTCP receiver reports; the
        SFU's reports for its own uplink, livekit-server folds its subscribers' audio loss
        into them): libopus adds FEC data only when told to expect loss. Up at once,
        down slowly (a loss burst is often followed by another)."""
        lost = aiortc_compat.sender_fraction_lost(self.sender)
        if lost is None:
            return
        want = max(lost, self.expected_loss * 0.8)
        if want < 0.005:
            want = 0.0
        if abs(want - self.expected_loss) >= 0.01 or (want == 0.0) != (self.expected_loss == 0.0):
            if encoder.set_expected_loss(want):
                self.expected_loss = want

    def _on_chunk(self, pcm: bytes, pts: int) -> None:
        if self.muted:
            return
        self._chunks += 1
        if self._chunks % _LOSS_POLL == 0 and self._encoder is not None:
            self._follow_loss(self._encoder)
        if self._parked is not None:
            writer = self._writer
            encoder = self._encoder
            if encoder is None:
                encoder = self._encoder = codecs.OpusPacketEncoder(
                    self._source.sample_rate, self._source.num_channels, self.config
                )
                if self.expected_loss:
                    encoder.set_expected_loss(self.expected_loss)
            level = codecs.audio_level_dbov(pcm)
            self.audio_level = level
            red = self._red
            cryptor = self.frame_cryptor
            for payload, packet_pts in encoder.encode_payloads(pcm, pts):
                if red is not None:
                    payload = red.encode(payload, packet_pts)
                if cryptor is not None:
                    sealed = crypto_shell.encrypt_frame(
                        cryptor, payload, "opus", writer.ssrc,  # type: ignore[union-attr]
                        packet_pts)
                    if sealed is None:
                        continue
                    payload = sealed
                writer.send(payload, packet_pts, level)  # type: ignore[union-attr]
            return
        if not self._consuming:
            return
        level = codecs.audio_level_dbov(pcm)
        if self.sender is None or self.codec_mime not in (None, "audio/opus"):
            # aiortc encodes (no sender hooks, or a non-Opus codec was negotiated)
            if self.frame_cryptor is not None:
                self._report_unencryptable()
                return
            import numpy as np

            frame = av.AudioFrame.from_ndarray(
                np.frombuffer(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout=self._layout
            )
            frame.sample_rate = self._source.sample_rate
            frame.pts = pts * self._source.sample_rate // 48000
            frame.time_base = fractions.Fraction(1, self._source.sample_rate)
            self._queue.append((frame, level))
        else:
            if self._encoder is None:
                self._encoder = codecs.OpusPacketEncoder(
                    self._source.sample_rate, self._source.num_channels, self.config
                )
            for packet in self._encoder.encode(pcm, pts):
                packet = self._encrypt_packet(packet, "opus")
                if packet is not None:
                    self._queue.append((packet, level))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv(self) -> Any:
        self._consuming = True
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.readyState != "live":
            raise MediaStreamError
        data, self.audio_level = self._queue.popleft()
        return data

    def stop(self) -> None:
        self._source._remove_sink(self._on_chunk)
        super().stop()
        self._unpark()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class LocalVideoRtcTrack(_LocalRtcTrack):
    """Video from a :class:`VideoSource`, VP8/H264-encoded here (in the default executor)."""

    kind = "video"

    def __init__(self, source: VideoSource) -> None:
        super().__init__()
        self._source = source
        self.config = codecs.VideoEncoderConfig()
        self._encoder: codecs.VideoPacketEncoder | None = None
        self._converter = codecs.VideoConverter()
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_seq = 0
        self._last_sent: float | None = None
        self._last_pts: int | None = None
        self._parked_codec: Any = None
        # one layer: the send rate follows the uplink's loss (media.send_rate)
        self._rate: send_rate.LossBasedRate | None = None
        self._last_report: Any = None
        self._adapted = 0.0
        self._scale = 1.0  # the size sent, relative to the source's
        self._sent_before = 0
        self._interval_nacked = 0
        self._nacked_before: dict[int, None] = {}
        self._t0 = time.monotonic()
        self.frames_encoded = 0
        # simulcast: the layers asked for, what the answer decided (None: not yet) and the
        # sender of the layers once the sender's RTP loop is parked
        self.simulcast_specs: list[LayerSpec] = []
        self._simulcast_answer: AnsweredSimulcast | bool | None = None
        self.simulcast: SimulcastSender | None = None

    def configure(self, config: codecs.VideoEncoderConfig) -> None:
        self.config = config
        self._encoder = None
        source = self._source
        self.simulcast_specs = codecs.simulcast_specs(config, source.width, source.height)

    @property
    def simulcast_rids(self) -> list[str]:
        """The rids this track offers (low to high); empty for one layer (or once an
        answer refused simulcast)."""
        if self._simulcast_answer is False:
            return []
        return [spec.rid for spec in self.simulcast_specs]

    def start_simulcast(self, answered: AnsweredSimulcast | None) -> bool:
        """After negotiation: send the layers the answer took (``answered``), or one layer
        when it took none; True when simulcast is on."""
        if not self.simulcast_specs:
            return False
        if answered is None:
            self._simulcast_answer = False
            self._unpark()  # the sender's own loop sends the single layer
            return False
        self.simulcast_specs = [s for s in self.simulcast_specs if s.rid in answered.rids]
        self._simulcast_answer = answered
        codec = self._parked_codec
        if self._parked is not None and codec is not None and self.sender is not None:
            self._start_simulcast(self.sender, codec)
        return bool(self._simulcast_answer)

    def _park(self, sender: Any, codec: Any) -> asyncio.Future[None] | None:
        mime = codec.mimeType.lower()
        if (not self.simulcast_specs or self._simulcast_answer is False
                or self.readyState != "live" or mime not in ("video/vp8", "video/h264")):
            return None
        self._parked_codec = codec
        parked = self._park_future()
        if self._simulcast_answer is not None:
            self._start_simulcast(sender, codec)
        return parked

    def _start_simulcast(self, sender: Any, codec: Any) -> None:
        answered = self._simulcast_answer
        if self.simulcast is not None or not isinstance(answered, AnsweredSimulcast):
            return
        cname = aiortc_compat.sender_cname(sender)
        self.simulcast = SimulcastSender.create(self, sender, codec, self.simulcast_specs,
                                                answered.rid_extension_id, cname)
        if self.simulcast is None:
            logger.error("simulcast was negotiated but aiortc's sender internals moved: "
                         "one layer is sent")
            self._simulcast_answer = False
            self._unpark()
            return
        self.simulcast.start()

    def _sender_changed(self) -> None:
        if self.simulcast is not None:
            self.simulcast.close()
            self.simulcast = None
        self._simulcast_answer = None
        self._parked_codec = None
        self._unpark()

    def _wake(self) -> None:
        self._event.set()

    def _pts(self, captured: CapturedFrame) -> int:
        if captured.timestamp_us > 0:
            pts = captured.timestamp_us * 9 // 100
        else:
            pts = int((time.monotonic() - self._t0) * 90000)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    async def _next_frame(self) -> CapturedFrame:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._source._add_sink(self._wake, loop)
        fps = self.config.max_framerate
        if fps > 0 and self._last_sent is not None:
            delay = self._last_sent + 1.0 / fps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # frames captured meanwhile collapse to the latest
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            captured = self._source._take_latest(self._last_seq)
            if captured is not None and not self.muted:
                self._last_seq = captured.seq
                self._last_sent = loop.time()
                return captured
            if captured is not None:
                self._last_seq = captured.seq  # muted: drop
            self._event.clear()
            await self._event.wait()

    async def recv(self) -> Any:
        while True:
            captured = await self._next_frame()
            pts = self._pts(captured)
            loop = asyncio.get_running_loop()
            if self.sender is None or self.codec_mime not in ("video/vp8", "video/h264"):
                if self.sender is not None and self.codec_mime is not None:
                    logger.warning("codec %s is encoded by aiortc", self.codec_mime)
                if self.frame_cryptor is not None:
                    self._report_unencryptable()
                    continue
                try:
                    frame = await loop.run_in_executor(
                        None, self._converter.convert, captured.frame
                    )
                except Exception:
                    logger.exception("video frame conversion failed; frame dropped")
                    continue
                frame.pts = pts
                frame.time_base = codecs.VIDEO_TIME_BASE
                return frame
            encoder = self._encoder
            if encoder is None or encoder.mime != self.codec_mime:
                f = captured.frame
                fps = self.config.max_framerate or 30.0
                bitrate = self.config.max_bitrate or codecs.default_video_bitrate(f.width, f.height, fps)
                if self._rate is None or self._rate.max_rate != bitrate:
                    self._rate = send_rate.LossBasedRate(bitrate)
                encoder = self._encoder = codecs.VideoPacketEncoder(
                    self.codec_mime, self._rate.target, fps)
            elif self._rate is not None:
                target = self._follow_loss()
                if target is not None and abs(target - encoder.bitrate) >= 0.15 * encoder.bitrate:
                    # libvpx/x264 take a new rate only when opened: a new encoder
                    encoder = self._encoder = codecs.VideoPacketEncoder(
                        self.codec_mime, target, encoder.fps)
                    f = captured.frame
                    self._scale = scale_for_rate(f.width, f.height, target)
            force = self.force_keyframe
            self.force_keyframe = False
            try:
                packets = await loop.run_in_executor(
                    None, _encode_video, encoder, self._converter, captured.frame, pts, force,
                    self._scale
                )
            except Exception:
                logger.exception("video encode failed; frame dropped")
                self._encoder = None  # start over (with a keyframe) on the next frame
                continue
            if not packets:
                self.force_keyframe |= force  # rate control dropped it: retry the keyframe
                continue
            self.frames_encoded += 1
            if len(packets) == 1:
                merged = packets[0]
            else:
                merged = av.Packet(b"".join(bytes(p) for p in packets))
                merged.pts = pts
                merged.time_base = codecs.VIDEO_TIME_BASE
            if self.frame_cryptor is not None:
                merged = self._encrypt_packet(
                    merged, crypto_shell.codec_of_mime(self.codec_mime))
                if merged is None:
                    continue
            return merged

    def _nacked(self, sequence_number: int) -> None:
        if sequence_number not in self._nacked_before:
            self._nacked_before[sequence_number] = None
            self._interval_nacked += 1
            if len(self._nacked_before) > 1024:
                del self._nacked_before[next(iter(self._nacked_before))]

    def _follow_loss(self) -> int | None:
        """The send rate after the uplink's loss (None: nothing new): the packets NACKed
        since the last look and the latest receiver report, every ``_ADAPT_INTERVAL``."""
        now = time.monotonic()
        if self._rate is None or now - self._adapted < _ADAPT_INTERVAL:
            return None
        self._adapted = now
        sent = aiortc_compat.sender_report_counters(self.sender)[2]
        sent_now, self._sent_before = sent - self._sent_before, sent
        nacked, self._interval_nacked = self._interval_nacked, 0
        losses = [nacked / sent_now] if sent_now >= 10 else []
        report = aiortc_compat.sender_loss_report(self.sender)
        if report is not None and report[1] != self._last_report:
            self._last_report = report[1]
            losses.append(report[0])
        if not losses:
            return None
        return self._rate.on_loss(min(1.0, max(losses)), now)

    def stop(self) -> None:
        self._source._remove_sink(self._wake)
        super().stop()
        self._event.set()
        if self.simulcast is not None:
            self.simulcast.close()
            self.simulcast = None
        self._unpark()


def _encode_video(
    encoder: codecs.VideoPacketEncoder,
    converter: codecs.VideoConverter,
    frame: Any,
    pts: int,
    force: bool,
    scale: float = 1.0,
) -> list[Any]:
    i420 = converter.convert(frame)
    if scale < 1.0:  # a send rate too low for the full size (libwebrtc scales down too)
        i420 = i420.reformat(width=max(2, int(i420.width * scale) & ~1),
                             height=max(2, int(i420.height * scale) & ~1))
    return encoder.encode(i420, pts, force)


def scale_for_rate(width: int, height: int, rate: int) -> float:
    """The largest of 1, 3/4, 1/2, 1/4 whose size ``rate`` can carry (its minimum)."""
    for scale in (1.0, 0.75, 0.5):
        if send_rate.min_bitrate(int(width * scale), int(height * scale)) <= rate:
            return scale
    return 0.25


