"""Sans-I/O connection-quality scoring from RTCP receiver reports (simple, stated here).

Inputs per participant and interval (:data:`QUALITY_INTERVAL`), all from RTCP the server
already has:

* as a subscriber: the receiver reports it sends about the server's down-tracks
  (fraction lost, 0..255, and the round-trip time the server derives from them);
* as a publisher: the server's own receive statistics of its media (packets expected
  and lost in the interval, what the server's receiver reports carry).

Score (a MOS-like 1..5): start from 5, minus 25 x the loss ratio (4 % loss -> -1), minus
1 per 200 ms of round-trip time above 150 ms; clamped to 1..5. Quality: EXCELLENT
>= 4.1, GOOD >= 3.3, else POOR; LOST when a publisher's media stopped arriving (expected
packets but none received). These are our own thresholds: livekit-server's scorer
(``pkg/sfu/connectionquality``) also weighs bitrate, layers and jitter. A
participant with no media either way is EXCELLENT (nothing is wrong). Updates are sent
when a participant's quality changes (and once at first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from livekit.protocol import models as models_pb, rtc as rtc_pb

__all__ = ["QUALITY_INTERVAL", "LinkSample", "QualityScorer", "quality_for", "score"]

QUALITY_INTERVAL = 5.0
EXCELLENT_SCORE = 4.1
GOOD_SCORE = 3.3


@dataclass
class LinkSample:
    """One participant's media in one interval."""

    expected: int = 0        # publisher packets expected (sequence numbers advanced)
    lost: int = 0            # of which lost
    fraction_lost: list[float] = field(default_factory=list)  # subscriber RRs, 0..1 each
    rtt: float | None = None  # seconds


def score(sample: LinkSample) -> float:
    """The 1..5 score of :class:`LinkSample` (see the module docstring)."""
    losses = list(sample.fraction_lost)
    if sample.expected > 0:
        losses.append(max(0.0, sample.lost) / sample.expected)
    loss = max(losses) if losses else 0.0
    value = 5.0 - 25.0 * loss
    if sample.rtt is not None and sample.rtt > 0.150:
        value -= (sample.rtt - 0.150) / 0.200
    return max(1.0, min(5.0, value))


def quality_for(sample: LinkSample) -> tuple[int, float]:
    """``(ConnectionQuality, score)`` of one sample."""
    if sample.expected > 0 and sample.lost >= sample.expected:
        return models_pb.ConnectionQuality.LOST, 1.0
    value = score(sample)
    if value >= EXCELLENT_SCORE:
        return models_pb.ConnectionQuality.EXCELLENT, value
    if value >= GOOD_SCORE:
        return models_pb.ConnectionQuality.GOOD, value
    return models_pb.ConnectionQuality.POOR, value


@dataclass
class QualityScorer:
    """Last quality sent per participant; :meth:`update` gives what changed."""

    sent: dict[str, int] = field(default_factory=dict)

    def update(self, samples: dict[str, LinkSample]) -> list[rtc_pb.ConnectionQualityInfo]:
        out: list[rtc_pb.ConnectionQualityInfo] = []
        for sid, sample in samples.items():
            quality, value = quality_for(sample)
            if self.sent.get(sid) != quality:
                self.sent[sid] = quality
                out.append(rtc_pb.ConnectionQualityInfo(
                    participant_sid=sid, quality=quality,  # type: ignore[arg-type]
                    score=round(value, 2)))
        for sid in [s for s in self.sent if s not in samples]:
            del self.sent[sid]
        return out
