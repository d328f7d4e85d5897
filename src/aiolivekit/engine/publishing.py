"""The engine's half of publishing a local track: the AddTrackRequest round trip, the
publisher transceiver and the negotiation that carries it.

:class:`TrackPublisher` belongs to one :class:`~aiolivekit.engine.engine.RtcEngine`
(``engine.publishing``). ``LocalParticipant.publish_track`` builds the request and the
publication; this class sends the request and waits for the server's TrackInfo (or its
refusal), adds the sendonly transceiver for the track's aiortc track, renegotiates the
publisher PC and waits until it is connected, and removes the transceiver again on
unpublish.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from livekit.protocol import models as models_pb, rtc as rtc_pb

from .._compat import aiortc as aiortc_compat
from ..errors import ConnectError, PublishTrackError, SignalError
from ..types import VideoCodec
from ..webrtc import simulcast_sdp
from ..webrtc.sdp import parse_media_sections
from . import signal as sig
from .peer import PeerTransport

if TYPE_CHECKING:
    from ..track import PublishableTrack

__all__ = ["PUBLISH_TIMEOUT", "PublisherLink", "TrackPublisher"]

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0

_REFUSAL_HINTS: dict[int, str] = {
    rtc_pb.RequestResponse.NOT_ALLOWED: (
        "; publishing is not allowed for this participant or this track source "
        "(token grants canPublish / canPublishSources)"),
    rtc_pb.RequestResponse.LIMIT_EXCEEDED: "; too many tracks pending or published",
    rtc_pb.RequestResponse.UNSUPPORTED_TYPE: "; unsupported track type",
}


class PublisherLink(Protocol):
    """What :class:`TrackPublisher` needs of its engine (:class:`~.engine.RtcEngine`)."""

    session: sig.SignalSession
    publisher: PeerTransport | None

    def send_signal(self) -> None: ...

    async def ensure_publisher_negotiated(self, timeout: float | None = None) -> None: ...

    async def negotiate_publisher(self, timeout: float = ...) -> None: ...

    async def ensure_publisher_connected(self, timeout: float | None = None) -> None: ...


class TrackPublisher:
    """AddTrackRequest waiters (by cid) and publisher transceivers (by track sid)."""

    def __init__(self, engine: PublisherLink) -> None:
        self._engine = engine
        self._waiters: dict[str, asyncio.Future[models_pb.TrackInfo]] = {}
        self._transceivers: dict[str, Any] = {}

    # ------------------------------------------------------------------ signal side

    async def request(self, req: rtc_pb.AddTrackRequest,
                      timeout: float = PUBLISH_TIMEOUT) -> models_pb.TrackInfo:
        """Send ``req`` and return the server's TrackInfo; :class:`PublishTrackError` when
        it refuses, does not answer within ``timeout`` or the session ends."""
        engine = self._engine
        fut: asyncio.Future[models_pb.TrackInfo] = asyncio.get_running_loop().create_future()
        self._waiters[req.cid] = fut
        engine.session.add_track(req)
        engine.send_signal()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise PublishTrackError("the server did not acknowledge the track in time") from None
        except SignalError:
            raise PublishTrackError("disconnected while publishing") from None
        finally:
            self._waiters.pop(req.cid, None)

    def on_signal(self, ev: Any) -> None:
        """Resolve a waiter from a TrackPublished ack or an AddTrackRequest refusal."""
        if isinstance(ev, sig.TrackPublishedAck):
            waiter = self._waiters.pop(ev.cid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(ev.track)
        elif (isinstance(ev, sig.RequestAnswered) and ev.kind == "add_track" and ev.cid
              and ev.reason != rtc_pb.RequestResponse.OK):
            waiter = self._waiters.pop(ev.cid, None)
            if waiter is not None and not waiter.done():
                name = rtc_pb.RequestResponse.Reason.Name(ev.reason)
                hint = _REFUSAL_HINTS.get(ev.reason, "")
                detail = f": {ev.message}" if ev.message else ""
                waiter.set_exception(PublishTrackError(
                    f"server refused the track ({name}){detail}{hint}"))

    def close(self) -> None:
        """The session ended: pending requests fail."""
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(SignalError("disconnected"))
                fut.exception()
        self._waiters.clear()
        self._transceivers.clear()

    # ------------------------------------------------------------------ media side

    async def start_sending(self, track: PublishableTrack, track_sid: str,
                            video_codec: int, red: bool = False) -> str:
        """Add ``track``'s transceiver to the publisher PC, negotiate and wait until the PC
        is connected; returns the negotiated ``kind/codec`` mime type ("" if unknown):
        ``audio/red`` when RED was asked for (``red``) and the server accepted it; asked
        for and refused, a warning says so and it is ``audio/opus``."""
        engine = self._engine
        publisher = engine.publisher
        if publisher is None:
            raise PublishTrackError("cannot publish a track: not connected")
        is_video = track._rtc_track.kind == "video"
        try:
            # a subscriber-primary join negotiates the publisher lazily: its first offer
            # carries the data channels only, the track comes in the renegotiation below
            await engine.ensure_publisher_negotiated()
        except ConnectError as exc:
            raise PublishTrackError(f"publisher negotiation failed: {exc.message}") from None
        try:
            transceiver = publisher.pc.addTransceiver(track._rtc_track, direction="sendonly")
            _prefer_codec(transceiver, is_video, video_codec, red)
            track._attach_sender(transceiver.sender)
            await engine.negotiate_publisher()
        except asyncio.TimeoutError:
            raise PublishTrackError("publisher negotiation timed out") from None
        except PublishTrackError:
            raise
        except Exception as exc:
            raise PublishTrackError(f"publishing failed: {exc}") from exc
        try:
            # the first publication connects a lazily negotiated publisher PC: wait for it,
            # so that frames captured once publish_track returns are sent, not dropped
            await engine.ensure_publisher_connected()
        except ConnectError as exc:
            raise PublishTrackError(f"publisher did not connect: {exc.message}") from None
        self._transceivers[track_sid] = transceiver
        _start_simulcast(track, publisher.last_remote_sdp, transceiver.mid, track_sid)
        mime = negotiated_mime(publisher.last_remote_sdp, transceiver.mid, red=True)
        if not is_video and red and mime != "audio/red":
            logger.warning(
                "TrackPublishOptions.red=True: the server did not accept audio/red (%s); "
                "track %s is sent as plain Opus and publication.mime_type is audio/opus",
                "aiortc's codec table has no RED" if not aiortc_compat.RED_INSTALLED
                else "its answer keeps " + (mime or "no codec"), track_sid)
        return mime

    def stop_sending(self, track_sid: str) -> None:
        """Stop the transceiver of ``track_sid`` (renegotiate afterwards)."""
        transceiver = self._transceivers.pop(track_sid, None)
        if transceiver is None:
            return
        try:
            transceiver.sender.replaceTrack(None)
            transceiver.direction = "inactive"
        except Exception:
            logger.debug("removing sender failed", exc_info=True)

    def transceiver(self, track_sid: str) -> Any | None:
        """The publisher transceiver of a published track."""
        return self._transceivers.get(track_sid)


def _start_simulcast(track: PublishableTrack, answer_sdp: str, mid: str | None,
                     track_sid: str) -> None:
    """A simulcast track sends the layers the answer took; with none, one layer,
    reported."""
    rtc_track = track._rtc_track
    rids = getattr(rtc_track, "simulcast_rids", None)
    if not rids:
        return
    answered = simulcast_sdp.answered_simulcast(answer_sdp, mid or "")
    if not rtc_track.start_simulcast(answered):
        logger.warning("TrackPublishOptions.simulcast=True: the server's answer takes no "
                       "simulcast layers; track %s is sent as one layer and "
                       "publication.simulcasted is False", track_sid)


def negotiated_mime(answer_sdp: str, mid: str | None, *, red: bool = False) -> str:
    """``kind/codec`` of the first codec the answer kept for ``mid`` (lower case); with
    ``red``, an audio answer whose first codec is RED gives ``audio/red``."""
    for section in parse_media_sections(answer_sdp):
        if section.mid == mid:
            for i, codec in enumerate(section.codecs):
                if red and i == 0 and section.kind == "audio" and codec.lower() == "red":
                    return "audio/red"
                if codec.lower() not in ("rtx", "red", "ulpfec", "flexfec-03"):
                    return f"{section.kind}/{codec}".lower()
    return ""


def default_mime(is_video: bool, codec: int) -> str:
    """The mime type asked for, when neither the answer nor the server names one."""
    if not is_video:
        return "audio/opus"
    return "video/h264" if codec == VideoCodec.H264 else "video/vp8"


def _prefer_codec(transceiver: Any, is_video: bool, codec: int, red: bool = False) -> None:
    """Put the chosen video codec first (aiortc supports VP8 and H264); audio offers RED
    first when ``red`` asks for it, and no RED otherwise."""
    from aiortc import RTCRtpSender

    if not is_video:
        caps = RTCRtpSender.getCapabilities("audio").codecs
        reds = [c for c in caps if c.mimeType.lower() == "audio/red"]
        rest = [c for c in caps if c.mimeType.lower() != "audio/red"]
        try:
            transceiver.setCodecPreferences(reds + rest if red else rest)
        except Exception:
            logger.debug("setCodecPreferences failed", exc_info=True)
        return

    want = "video/h264" if codec == VideoCodec.H264 else "video/vp8"
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in caps if c.mimeType.lower() == want]
    if not chosen:
        return
    rest = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    try:
        transceiver.setCodecPreferences(chosen + rest)
    except Exception:
        logger.debug("setCodecPreferences failed", exc_info=True)
