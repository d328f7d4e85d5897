"""Remote tracks of the subscriber PC: which track each m-line of the server's offers
carries, reported to the engine's listener as :class:`TrackReceived` / :class:`TrackRemoved`.

aiortc fires ``track`` for a new receiver only; the server (pion) also recycles
transceivers for other streams and turns m-lines inactive on unsubscribe. Each applied
offer is therefore diffed against the previous one (:meth:`SubscriberTracks.offer_applied`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver, RTCRtpTransceiver

from .._compat import aiortc as aiortc_compat
from ..media.jitter import install_audio_jitter_buffer
from ..media.video_jitter import install_video_jitter_buffer
from ..webrtc import sdp
from . import signal as sig

__all__ = ["SubscriberTracks", "TrackReceived", "TrackRemoved"]

logger = logging.getLogger(__name__)


@dataclass
class TrackReceived:
    """The subscriber PC produced a remote media track."""

    track: MediaStreamTrack
    receiver: RTCRtpReceiver
    transceiver: RTCRtpTransceiver
    participant_sid: str
    track_sid: str
    mid: str


@dataclass
class TrackRemoved:
    """A subscribed track's m-line stopped carrying it (unsubscribed or unpublished)."""

    track_sid: str
    mid: str


@dataclass
class _MidState:
    track_sid: str = ""
    participant_sid: str = ""
    active: bool = False


def section_ids(section: sdp.MediaSection, mid_map: dict[str, str]) -> tuple[str, str]:
    """``(participant sid, track sid)`` an offer's m-line carries (msid, else the offer's
    mid -> track id map)."""
    stream, track_id = section.stream_id, section.track_id
    psid, tsid = "", ""
    if "|" in stream:
        psid, _, rest = stream.partition("|")
        if rest.startswith("TR"):
            tsid = rest
    if not tsid and track_id.startswith("TR"):
        tsid = track_id
    if not tsid:
        tsid = mid_map.get(section.mid, "")
    return psid, tsid


class SubscriberTracks:
    """Per-mid state of the subscriber PC's remote tracks."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self._emit = emit
        self._mids: dict[str, _MidState] = {}
        self._fired: set[str] = set()
        self._offer_sdp = ""
        self._mid_map: dict[str, str] = {}

    def offer_applying(self, offer: sig.OfferReceived) -> None:
        """``offer`` is about to be applied: its ``track`` events refer to it."""
        self._offer_sdp = offer.sdp
        self._mid_map = offer.mid_to_track_id
        self._fired = set()

    def on_track(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        """aiortc's ``track`` event of the subscriber PC."""
        transceiver = next((t for t in pc.getTransceivers() if t.receiver.track is track), None)
        if transceiver is None or transceiver.mid is None:
            logger.warning("remote track without a transceiver")
            return
        mid = transceiver.mid
        section = next((s for s in sdp.parse_media_sections(self._offer_sdp)
                        if s.mid == mid), None)
        if section is None:
            logger.warning("remote track on unknown mid %s", mid)
            return
        psid, tsid = section_ids(section, self._mid_map)
        if not tsid:
            logger.warning("remote track on mid %s without a track sid", mid)
            return
        self._fired.add(mid)
        if track.kind == "audio":
            install_audio_jitter_buffer(transceiver.receiver)
        else:
            install_video_jitter_buffer(transceiver.receiver)
        self._emit(TrackReceived(track, transceiver.receiver, transceiver, psid, tsid, mid))

    def offer_applied(self, pc: RTCPeerConnection, offer: sig.OfferReceived) -> None:
        """Diff the m-lines of an applied subscriber offer against the previous ones.

        An m-line that stopped carrying its track yields :class:`TrackRemoved`. An m-line
        that starts carrying a track without aiortc firing a ``track`` event (pion recycles
        transceivers; aiortc keeps the old receiver) yields :class:`TrackReceived` for the
        existing receiver, after routing the new SSRCs to it.
        """
        fired, self._fired = self._fired, set()
        for section in sdp.parse_media_sections(offer.sdp):
            if section.kind not in ("audio", "video"):
                continue
            psid, tsid = section_ids(section, offer.mid_to_track_id)
            active = (section.direction in ("sendonly", "sendrecv") and section.port != 0
                      and bool(tsid))
            prev = self._mids.get(section.mid)
            if prev is not None and prev.active and (not active or prev.track_sid != tsid):
                self._emit(TrackRemoved(prev.track_sid, section.mid))
            if (active and section.mid not in fired
                    and (prev is None or not prev.active or prev.track_sid != tsid)):
                self._recycled_track(pc, section, psid, tsid)
            self._mids[section.mid] = _MidState(tsid, psid, active)

    def _recycled_track(self, pc: RTCPeerConnection, section: sdp.MediaSection, psid: str,
                        tsid: str) -> None:
        for t in pc.getTransceivers():
            if t.mid == section.mid:
                track = aiortc_compat.revive_receiver(t.receiver, section.ssrcs)
                if track is not None:
                    if track.kind == "audio":
                        install_audio_jitter_buffer(t.receiver)
                    else:
                        install_video_jitter_buffer(t.receiver)
                    self._emit(TrackReceived(track, t.receiver, t, psid, tsid, section.mid))
                return
