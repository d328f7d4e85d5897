"""Sans-I/O active-speaker detection from the RFC 6464 audio level of published audio.

Every official client puts the ``urn:ietf:params:rtp-hdrext:ssrc-audio-level`` header
extension on its audio packets: the level in -dBov (0 loudest, 127 silence). The
forwarder's receive path hands each packet's level to the track's
:class:`AudioLevelMeter`; every :data:`SPEAKER_INTERVAL` the room's
:class:`SpeakerObserver` turns the participants' meters into ``SpeakerInfo`` deltas
(livekit-server's defaults: a packet counts as loud at <= 35 dBov, a participant speaks
when at least 40 % of its packets in the interval are loud; the level sent is the mean
linear level ``10^(-dBov/20)`` of the loud packets, 0..1). Only changes are sent
(started, stopped, or a level moved by more than :data:`LEVEL_STEP`), as livekit-server
sends deltas. Simulated speakers (SimulateScenario) are forced in until a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from livekit.protocol import models as models_pb

__all__ = [
    "ACTIVE_LEVEL",
    "LEVEL_STEP",
    "MIN_ACTIVE_SHARE",
    "SPEAKER_INTERVAL",
    "AudioLevelMeter",
    "SpeakerObserver",
    "linear_level",
]

SPEAKER_INTERVAL = 0.5
ACTIVE_LEVEL = 35          # -dBov at or below which a packet counts as loud
MIN_ACTIVE_SHARE = 0.4     # share of loud packets in an interval to count as speaking
LEVEL_STEP = 0.05          # smaller level changes of an active speaker are not sent


def linear_level(dbov: int) -> float:
    """RFC 6464 level (-dBov, 0..127) -> linear amplitude 0..1."""
    return float(10.0 ** (-max(0, min(127, dbov)) / 20.0))


class AudioLevelMeter:
    """Levels of one audio track since the last :meth:`take` (one call per packet)."""

    __slots__ = ("loud", "loud_sum", "total")

    def __init__(self) -> None:
        self.total = 0
        self.loud = 0
        self.loud_sum = 0.0

    def add(self, dbov: int) -> None:
        self.total += 1
        if dbov <= ACTIVE_LEVEL:
            self.loud += 1
            self.loud_sum += linear_level(dbov)

    def take(self) -> tuple[int, int, float]:
        """``(packets, loud packets, sum of loud linear levels)``, then reset."""
        out = (self.total, self.loud, self.loud_sum)
        self.total = self.loud = 0
        self.loud_sum = 0.0
        return out


@dataclass
class SpeakerObserver:
    """Speaking state of a room's participants; :meth:`update` gives the deltas."""

    active: dict[str, float] = field(default_factory=dict)   # sid -> level last sent
    forced: dict[str, tuple[float, float]] = field(default_factory=dict)  # sid -> (until, level)

    def force(self, sid: str, now: float, seconds: float, level: float = 0.9) -> None:
        """SimulateScenario speaker_update: ``sid`` speaks at ``level`` for ``seconds``."""
        self.forced[sid] = (now + seconds, level)

    def update(self, now: float,
               levels: dict[str, list[tuple[int, int, float]]]) -> list[models_pb.SpeakerInfo]:
        """``levels``: per participant sid present in the room, the :meth:`AudioLevelMeter.
        take` of each of its audio tracks. Returns the SpeakerInfo deltas."""
        current: dict[str, float] = {}
        for sid, tracks in levels.items():
            total = sum(t[0] for t in tracks)
            loud = sum(t[1] for t in tracks)
            if total and loud / total >= MIN_ACTIVE_SHARE:
                current[sid] = sum(t[2] for t in tracks) / loud
        for sid, (until, level) in list(self.forced.items()):
            if now >= until:
                del self.forced[sid]
            elif sid in levels:
                current[sid] = level
        out: list[models_pb.SpeakerInfo] = []
        for sid, level in sorted(current.items(), key=lambda kv: -kv[1]):
            before = self.active.get(sid)
            if before is None or abs(before - level) >= LEVEL_STEP:
                self.active[sid] = level
                out.append(models_pb.SpeakerInfo(sid=sid, level=round(level, 2), active=True))
        for sid in [s for s in self.active if s not in current]:
            del self.active[sid]
            out.append(models_pb.SpeakerInfo(sid=sid, level=0.0, active=False))
        return out
