"""The asyncio shell of the rooms' observers: active speakers (every 0.5 s, from the
forwarders' RFC 6464 level meters, :mod:`.speakers`) and connection quality (every 5 s,
from RTCP statistics, :mod:`.quality`). Decisions are in those sans-I/O modules; this
module collects their inputs and sends ``speakers_changed`` / ``connection_quality``."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from livekit.protocol import models as models_pb, rtc as rtc_pb

from .effects import Effect, SendSignal
from .quality import QUALITY_INTERVAL, LinkSample, QualityScorer
from .speakers import SPEAKER_INTERVAL, SpeakerObserver

if TYPE_CHECKING:  # pragma: no cover
    from .rooms import RoomManager, RoomState

__all__ = ["RoomObservers"]

logger = logging.getLogger(__name__)

STATS_TIMEOUT = 2.0


def _subscribed_publishers(room: RoomState, sid: str) -> set[str]:
    """The participants ``sid`` receives at least one track of."""
    out: set[str] = set()
    for p in room.participants.values():
        if any(sid in room.subscriptions.get(t, {}) for t in p.tracks):
            out.add(p.sid)
    return out


class RoomObservers:
    """Speaker and quality observation of every room of a server."""

    def __init__(self, rooms: RoomManager, sessions: dict[str, Any],
                 dispatch: Any) -> None:
        self.rooms = rooms
        self.sessions = sessions
        self.dispatch = dispatch
        self.speakers: dict[str, SpeakerObserver] = {}     # room sid -> observer
        self.quality: dict[str, QualityScorer] = {}        # room sid -> scorer
        self._received: dict[tuple[str, str], tuple[int, int]] = {}
        self._broadcast: set[str] = set()  # simulated speakers go to everyone

    def simulate_speaker(self, room: RoomState, sid: str, seconds: float) -> None:
        """SimulateScenario speaker_update (livekit-server: level 0.9, everyone sees it)."""
        self.speakers.setdefault(room.sid, SpeakerObserver()).force(sid, time.time(), seconds)
        self._broadcast.add(sid)
        self.dispatch(self._speaker_tick(room, time.time()))

    async def run(self) -> None:
        next_quality = time.monotonic() + QUALITY_INTERVAL
        while True:
            await asyncio.sleep(SPEAKER_INTERVAL)
            now = time.time()
            for room in list(self.rooms.rooms.values()):
                try:
                    self.dispatch(self._speaker_tick(room, now))
                except Exception:
                    logger.exception("speaker update of room %s failed", room.name)
            if time.monotonic() >= next_quality:
                next_quality = time.monotonic() + QUALITY_INTERVAL
                for room in list(self.rooms.rooms.values()):
                    try:
                        self.dispatch(await self._quality_tick(room))
                    except Exception:
                        logger.exception("quality update of room %s failed", room.name)
            for key in [k for k in self.speakers if k not in
                        {r.sid for r in self.rooms.rooms.values()}]:
                self.speakers.pop(key, None)
                self.quality.pop(key, None)

    # ------------------------------------------------------------------ speakers

    def _speaker_tick(self, room: RoomState, now: float) -> list[Effect]:
        observer = self.speakers.setdefault(room.sid, SpeakerObserver())
        levels: dict[str, list[tuple[int, int, float]]] = {}
        for p in room.participants.values():
            session = self.sessions.get(p.sid)
            tracks: list[tuple[int, int, float]] = []
            if session is not None:
                for fwd in list(session.forwarders.values()):
                    receiver = getattr(fwd, "receiver", None)
                    meter = getattr(receiver, "levels", None)
                    if meter is not None and getattr(fwd, "kind", "") == "audio":
                        tracks.append(meter.take())
            levels[p.sid] = tracks
        deltas = observer.update(now, levels)
        if not deltas:
            return []
        effects: list[Effect] = []
        for o in room.participants.values():
            heard = _subscribed_publishers(room, o.sid) | {o.sid} | self._broadcast
            mine = [d for d in deltas if d.sid in heard]
            if mine:
                effects.append(SendSignal(o.sid, rtc_pb.SignalResponse(
                    speakers_changed=rtc_pb.SpeakersChanged(speakers=mine))))
        for d in deltas:
            if not d.active:
                self._broadcast.discard(d.sid)
        return effects

    # ------------------------------------------------------------------ quality

    async def _sample(self, sid: str, session: Any) -> LinkSample:
        sample = LinkSample()
        for track_sid, fwd in list(session.forwarders.items()):
            counts = getattr(fwd, "receive_counts", None)
            if counts is None:
                continue
            expected, received = counts()
            last = self._received.get((sid, track_sid), (expected, received))
            self._received[(sid, track_sid)] = (expected, received)
            d_expected = expected - last[0]
            if d_expected > 0:
                sample.expected += d_expected
                sample.lost += max(0, d_expected - (received - last[1]))
        try:
            fractions, rtt = await asyncio.wait_for(session.subscriber_reports(), STATS_TIMEOUT)
        except Exception:  # a closing PC: no reports this time
            logger.debug("no subscriber statistics for %s", sid, exc_info=True)
            fractions, rtt = [], None
        sample.fraction_lost = fractions
        sample.rtt = rtt
        return sample

    async def _quality_tick(self, room: RoomState) -> list[Effect]:
        scorer = self.quality.setdefault(room.sid, QualityScorer())
        samples: dict[str, LinkSample] = {}
        for p in list(room.participants.values()):
            session = self.sessions.get(p.sid)
            if session is not None and p.state == models_pb.ParticipantInfo.State.ACTIVE:
                samples[p.sid] = await self._sample(p.sid, session)
        for key in [k for k in self._received if k[0] not in self.sessions]:
            del self._received[key]
        infos = scorer.update(samples)
        if not infos:
            return []
        effects: list[Effect] = []
        for o in room.participants.values():
            heard = _subscribed_publishers(room, o.sid) | {o.sid}
            mine = [i for i in infos if i.participant_sid in heard]
            if mine:
                effects.append(SendSignal(o.sid, rtc_pb.SignalResponse(
                    connection_quality=rtc_pb.ConnectionQualityUpdate(updates=mine))))
        return effects
