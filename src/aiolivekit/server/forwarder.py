"""RTP passthrough forwarding for the SFU (no decoding, no transcoding).

One :class:`TrackForwarder` per published track ties together:

* :class:`~.receiver.TrackReceiver` (:mod:`.receiver`): the publisher's packets, from
  aiortc's receiver (its class swapped to :class:`~.receiver.ForwardingReceiver`) or
  straight from the UDP socket (:mod:`.rtp_io`), parsed once;
* :class:`~.fanout.Fanout` (:mod:`.fanout`): each packet to every active subscriber,
  steady ones in one loop, sends back to back (or at the end of a read batch);
* one :class:`~.downtrack.DownTrack` per subscriber (:mod:`.downtrack`): munger
  (:mod:`.rtpmunger`), header writer, SRTP, send, NACK history, behind a
  :class:`~.downtrack.ForwardingSender` on a sendonly transceiver of the subscriber's PC.

The forwarder itself keeps the subscriptions, pauses and key-frame requests: subscriber
PLI/FIR become a (rate-limited) PLI toward the publisher. Which fast paths are used is
set by :class:`~.config.ForwardingOptions`. Performance notes: ``bench/bench_forwarder.py``
and ``bench/bench_server.py``; sender reports are sent about every 5 s for audio, 1 s for
video (libwebrtc's intervals).

aiortc's private names are reached through :mod:`aiolivekit._compat` only; they are
checked when a forwarder is attached and an :class:`AiortcCompatibilityError` names
what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from .._compat import aiortc as aiortc_compat
from ..errors import AioLiveKitError, AiortcCompatibilityError
from .config import ForwardingOptions
from .downtrack import DownTrack, ForwardedTrack, ForwardingSender
from .fanout import Fanout
from .receiver import ForwardingReceiver, TrackReceiver
from .rtpmunger import KeyframeRequestLimiter, h264_fmtp_score
from .simulcast import LayerRouter

__all__ = [
    "AiortcCompatibilityError",
    "ForwardingOptions",
    "ForwardingReceiver",
    "ForwardingSender",
    "SubscriberStats",
    "TrackForwarder",
]

logger = logging.getLogger(__name__)

KEYFRAME_MIN_INTERVAL = 0.5  # seconds between PLIs sent upstream


@dataclass
class SubscriberStats:
    """One subscriber's down-track counters (the room inspector's view)."""

    pc: RTCPeerConnection
    packets: int
    octets: int
    dropped_queue: int
    dropped_socket: int
    paused: bool


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

    def __init__(self, receiver: RTCRtpReceiver, kind: str,
                 options: ForwardingOptions | None = None) -> None:
        self.kind = kind
        self.options = options if options is not None else ForwardingOptions()
        self.fanout = Fanout(self.options)
        self.receiver = TrackReceiver(receiver, kind, self.options, self.fanout,
                                      self._on_new_source, self._on_codecs)
        self.fanout.receiver = self.receiver
        self.receiver.on_rid = self._on_rid
        # simulcast: the layers' router once a RID arrives; the qualities wished so far
        self.layers: LayerRouter | None = None
        self._wishes: dict[DownTrack, int] = {}
        self.on_subscribed_qualities: Callable[[dict[int, bool]], None] | None = None
        self._subscriptions: dict[RTCPeerConnection, _Subscription] = {}
        self._limiter = KeyframeRequestLimiter(KEYFRAME_MIN_INTERVAL)
        self._keyframe_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.keyframe_requests_sent = 0

    # -- construction -------------------------------------------------------------

    @classmethod
    def attach(
        cls,
        receiver: RTCRtpReceiver,
        kind: str,
        *,
        codecs: list[RTCRtpCodecParameters] | None = None,
        options: ForwardingOptions | None = None,
    ) -> TrackForwarder:
        """Turn ``receiver`` into a forwarding receiver (call inside ``pc.on("track")``).

        ``codecs`` (optional, the transceiver's negotiated codecs) makes
        :attr:`mime_type` known before the publisher's transport connects; ``options``
        (default: every fast path) is usually the server configuration's.
        """
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', got {kind!r}")
        if not isinstance(receiver, RTCRtpReceiver):
            raise TypeError(f"expected an aiortc RTCRtpReceiver, got {type(receiver).__name__}")
        if options is not None and not isinstance(options, ForwardingOptions):
            raise TypeError(f"options must be ForwardingOptions, not {type(options).__name__}")
        aiortc_compat.check_receiver(receiver)
        if isinstance(receiver, ForwardingReceiver) and receiver._lk_track is not None:
            raise ValueError("receiver already has a TrackForwarder")
        if aiortc_compat.receiver_started(receiver):
            raise ValueError("receiver already started: attach the forwarder inside pc.on('track')")
        forwarder = cls(receiver, kind, options)
        ForwardingReceiver.adopt(receiver, forwarder.receiver)
        if codecs:
            forwarder.receiver.set_codecs(codecs)
        return forwarder

    # -- what the receiver and the fan-out count ------------------------------------

    @property
    def mime_type(self) -> str | None:
        """The publisher's current codec (``audio/opus``, ``video/VP8``...), if known."""
        return self.receiver.mime_type

    @property
    def packets_received(self) -> int:
        return self.receiver.packets_received

    @property
    def bytes_received(self) -> int:
        """RTP payload bytes received from the publisher."""
        return self.receiver.bytes_received

    @property
    def packets_forwarded(self) -> int:
        total = self.fanout.packets_forwarded
        if self.layers is not None:  # simulcast: each layer's fan-out counts its own
            total += sum(f.packets_forwarded for f in self.layers.fanouts.values())
        return total

    def receive_counts(self) -> tuple[int, int]:
        """``(packets expected, packets received)`` so far from the current source (the
        statistics the server's receiver reports carry; ``(0, 0)`` before media)."""
        ssrc = self.receiver.publisher_ssrc
        stats = aiortc_compat.receiver_remote_streams(self.receiver.receiver).get(ssrc or 0)
        if stats is None:
            return 0, 0
        return int(stats.packets_expected), int(stats.packets_received)

    def _on_rid(self, ssrc: int, rid: str) -> None:
        """A simulcast layer (``rid``) arrives on ``ssrc``: from the first one on, the
        packets go through a :class:`~.simulcast.LayerRouter`."""
        layers = self.layers
        if layers is None:
            layers = self.layers = LayerRouter(self.receiver, self.fanout, self.options,
                                               self._send_layer_pli)
            layers.on_qualities = self._qualities_wanted
            self.receiver._deliver = layers.dispatch
            for down, quality in self._wishes.items():
                layers.set_quality(down, quality)
        layers.learn(ssrc, rid)

    def _qualities_wanted(self, qualities: dict[int, bool]) -> None:
        callback = self.on_subscribed_qualities
        if callback is not None:
            callback(qualities)

    def set_quality(self, pc: RTCPeerConnection, quality: int) -> None:
        """The subscriber ``pc`` wants this simulcast quality (a ``VideoQuality``)."""
        sub = self._subscriptions.get(pc)
        if sub is None:
            raise ValueError("this peer connection does not subscribe to the track")
        down = sub.sender._lk_down
        self._wishes[down] = quality
        if self.layers is not None:
            self.layers.set_quality(down, quality)

    def _on_new_source(self) -> None:
        """The publisher's SSRC changed: a key frame asked for earlier can go now."""
        if self._keyframe_pending:
            self._keyframe_pending = False
            self.request_keyframe()

    def _on_codecs(self) -> None:
        """The codecs are known: restrict the next offer of subscribers added before."""
        try:
            preferences = self._codec_preferences()
        except AioLiveKitError as exc:
            logger.warning("%s", exc)
            return
        for sub in self._subscriptions.values():
            if preferences and not aiortc_compat.transceiver_has_codec_preferences(
                sub.transceiver
            ):
                sub.transceiver.setCodecPreferences(preferences)

    # -- subscriber side ----------------------------------------------------------

    def _codec_preferences(self) -> list[RTCRtpCodecCapability]:
        codec = self.receiver.codec
        if codec is None:
            return []
        caps = RTCRtpSender.getCapabilities(self.kind).codecs
        mime = codec.mimeType.lower()
        same = [c for c in caps if c.mimeType.lower() == mime]
        if not same:
            raise AioLiveKitError(f"subscribers cannot receive codec {codec.mimeType}")
        if mime == "video/h264":
            same.sort(key=lambda c: -h264_fmtp_score(dict(codec.parameters), dict(c.parameters)))
        if mime == "audio/red":
            # as livekit-server: RED with Opus next to it, so that a subscriber without
            # RED can answer Opus (its down-track then gets the primary blocks)
            same += [c for c in caps if c.mimeType.lower() == "audio/opus"]
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
        transceiver = pc.addTransceiver(ForwardedTrack(self.kind, track_id), direction="sendonly")
        preferences = self._codec_preferences()
        if preferences:
            transceiver.setCodecPreferences(preferences)
        else:
            logger.debug("publisher codec not known yet: offering every %s codec", self.kind)
        sender = ForwardingSender.adopt(transceiver.sender, self, stream_id=stream_id,
                                        track_id=track_id)
        self._subscriptions[pc] = _Subscription(pc, transceiver, sender)
        # no key frame asked for here: nothing reaches the subscriber before its
        # down-track runs (DownTrack.run asks then), and a PLI now would hold that one
        # back for the rate limit (up to KEYFRAME_MIN_INTERVAL without video)
        return transceiver

    def remove_subscriber(self, pc: RTCPeerConnection) -> None:
        """Stop forwarding to ``pc`` (its transceiver becomes inactive); no-op if unknown."""
        sub = self._subscriptions.pop(pc, None)
        if sub is None:
            return
        down = sub.sender._lk_down
        down.detach()
        self._wishes.pop(down, None)
        if self.layers is not None:
            self.layers.forget(down)
        if not sub.transceiver.stopped:
            sub.transceiver.direction = "inactive"

    def set_paused(self, pc: RTCPeerConnection, paused: bool) -> None:
        """Pause or resume forwarding to ``pc`` (UpdateTrackSettings.disabled)."""
        sub = self._subscriptions.get(pc)
        if sub is None:
            raise ValueError("this peer connection does not subscribe to the track")
        down = sub.sender._lk_down
        was_paused = down.paused
        down.set_paused(paused)
        if was_paused and not paused and self.kind == "video":
            self.request_keyframe()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def down_tracks(self) -> list[DownTrack]:
        """The subscribers' down-tracks (their counters: ``queue.dropped``,
        ``dropped_socket``, ``count``...)."""
        return [sub.sender._lk_down for sub in self._subscriptions.values()]

    def subscriber_stats(self) -> list[SubscriberStats]:
        """Each subscriber's counters (the fan-out's bulk counters brought up to date)."""
        fanouts = [self.fanout, *(self.layers.fanouts.values() if self.layers else ())]
        for fanout in fanouts:
            if fanout.fan is not None:
                fanout.flush()
        out = []
        for pc, sub in self._subscriptions.items():
            down = sub.sender._lk_down
            out.append(SubscriberStats(pc, down.count, down.octets, down.queue.dropped,
                                       down.dropped_socket, down.paused))
        return out

    # -- keyframes ----------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Send a PLI to the publisher (rate limited; video only)."""
        if self.kind != "video" or self._closed:
            return
        if self.layers is not None:
            self.layers.request_keyframes()  # of the layers someone gets or waits for
            return
        ssrc = self.receiver.publisher_ssrc
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

    def _send_layer_pli(self, ssrc: int) -> None:
        """A PLI for one simulcast layer (the router rate-limits per layer)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.keyframe_requests_sent += 1
        task = loop.create_task(self._send_pli(ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_pli(self, ssrc: int) -> None:
        try:
            await asyncio.wait_for(aiortc_compat.send_pli(self.receiver.receiver, ssrc),
                                   timeout=5.0)
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
        self.fanout.clear()
        self.receiver.close()
        # the callbacks hold the publisher's session: no cycle outlives the track
        self.on_subscribed_qualities = None
        self.receiver.on_rid = None
        if self.layers is not None:
            for fanout in self.layers.fanouts.values():
                fanout.clear()
            self.layers.on_qualities = None
            self.layers = None
        self._wishes.clear()
