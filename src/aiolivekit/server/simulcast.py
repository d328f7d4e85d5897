"""Simulcast in the embedded SFU: each subscriber gets one layer of a simulcast track.

A simulcast publisher sends up to three layers (rids ``q``, ``h``, ``f``: low, medium and
high quality), each on its own SSRC, named by the RID header extension. The
:class:`LayerRouter` of a track sits between its receiver and its fan-outs:

* it learns each layer's SSRC from the RID extension (:meth:`LayerRouter.learn`);
* each layer has its own :class:`~.fanout.Fanout`; a down-track is in the fan-out of the
  layer it currently gets, and starts parked (in the track's own fan-out, which is never
  fed) until the layer it should get starts a key frame;
* what a subscriber should get is its wish (``UpdateTrackSettings``: a quality, or a size
  mapped to one by the room), or the highest layer by default, clipped to the layers
  that arrive: the highest live layer at or below the wish, else the lowest live one;
* a switch up waits until the layer has arrived for :data:`UPGRADE_AFTER` (a layer that
  just started may be a probe); a switch waits for a key frame of the new layer (a PLI asks for one), then moves the
  down-track to that layer's fan-out; its munger continues the subscriber's sequence
  numbers and timestamps (:meth:`~.rtpmunger.RtpMunger.switch_to`);
* the qualities up to the highest any subscriber wants are reported
  (``SubscribedQualityUpdate`` toward a dynacast publisher) whenever they change.

Bandwidth is not estimated per subscriber here: a layer changes on request or when the
one a subscriber gets stops arriving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from livekit.protocol import models as models_pb

from .config import ForwardingOptions
from .fanout import Fanout
from .rtpmunger import KeyframeRequestLimiter, is_keyframe_start

if TYPE_CHECKING:  # pragma: no cover
    from .downtrack import DownTrack
    from .receiver import InPacket, TrackReceiver

__all__ = ["LAYER_TIMEOUT", "LayerRouter", "quality_of_rid"]

logger = logging.getLogger(__name__)

LAYER_TIMEOUT = 0.5  # seconds without packets after which a layer is not selected
UPGRADE_AFTER = 3.0  # seconds a (re)started layer arrives before subscribers move up to it
CHECK_INTERVAL = 0.25  # seconds between two looks at silent layers
_QUALITY = {"q": models_pb.VideoQuality.LOW, "h": models_pb.VideoQuality.MEDIUM,
            "f": models_pb.VideoQuality.HIGH}
HIGH = int(models_pb.VideoQuality.HIGH)


def quality_of_rid(rid: str, rids: list[str]) -> int:
    """The quality a layer stands for: by its usual name, else by its rank."""
    if rid in _QUALITY:
        return int(_QUALITY[rid])
    return min(rids.index(rid), HIGH) if rid in rids else HIGH


class LayerRouter:
    """Routes a simulcast track's layers to its subscribers (one per track)."""

    def __init__(self, receiver: TrackReceiver, parking: Fanout, options: ForwardingOptions,
                 send_pli: Callable[[int], None]) -> None:
        self._receiver = receiver
        self._parking = parking  # down-tracks not in a layer yet (never fed)
        self._options = options
        self._send_pli = send_pli
        self.rid_of: dict[int, str] = {}
        self.ssrc_of: dict[str, int] = {}
        self.fanouts: dict[str, Fanout] = {}
        self.seen: dict[str, float] = {}
        self.started: dict[str, float] = {}  # when each layer last (re)started
        self.wish: dict[DownTrack, int] = {}  # down-track -> quality wanted
        self.target: dict[DownTrack, str] = {}  # down-track -> rid it should get
        self.current: dict[DownTrack, str] = {}  # down-track -> rid it gets
        self._limiters: dict[int, KeyframeRequestLimiter] = {}
        self._next_check = 0.0
        self.switches = 0
        self.on_qualities: Callable[[dict[int, bool]], None] | None = None
        self._reported: dict[int, bool] | None = None

    # -- layers ------------------------------------------------------------------------

    def learn(self, ssrc: int, rid: str) -> None:
        """``ssrc`` carries the layer ``rid``."""
        if self.rid_of.get(ssrc) == rid:
            return
        old = self.ssrc_of.get(rid)
        if old is not None:
            self.rid_of.pop(old, None)
        self.rid_of[ssrc] = rid
        self.ssrc_of[rid] = ssrc
        if rid not in self.fanouts:
            fanout = Fanout(self._options)
            fanout.receiver = self._receiver
            self.fanouts[rid] = fanout
            logger.debug("simulcast layer %s on SSRC %d", rid, ssrc)

    def rids(self) -> list[str]:
        """The layers known so far, lowest quality first."""
        known = list(self.ssrc_of)
        return sorted(known, key=lambda r: quality_of_rid(r, known))

    def _live(self, now: float) -> list[str]:
        return [r for r in self.rids() if now - self.seen.get(r, -1e9) < LAYER_TIMEOUT]

    def _choose(self, quality: int, now: float, current: str | None = None) -> str | None:
        live = self._live(now)
        if not live:
            return None
        rids = self.rids()
        if current in live:
            # up only to a layer that has been arriving for a while: one that (re)started
            # just now may be a publisher's probe, paused again a moment later
            held = quality_of_rid(current, rids)  # type: ignore[arg-type]
            live = [r for r in live if quality_of_rid(r, rids) <= held
                    or now - self.started.get(r, now) >= UPGRADE_AFTER]
        below = [r for r in live if quality_of_rid(r, rids) <= quality]
        return below[-1] if below else live[0]

    # -- subscribers ---------------------------------------------------------------------

    def set_quality(self, down: DownTrack, quality: int) -> None:
        """The subscriber of ``down`` wants ``quality`` (a ``VideoQuality``)."""
        self.wish[down] = max(0, min(int(quality), HIGH))
        self._retarget(down, time.time())
        logger.debug("a subscriber wants quality %d: layer %s (layers seen %s)", quality,
                     self.target.get(down) or self.current.get(down), self.seen)
        self._report()

    def _retarget(self, down: DownTrack, now: float) -> None:
        rid = self._choose(self.wish.get(down, HIGH), now, self.current.get(down))
        if rid is None:
            return
        if self.current.get(down) == rid:
            self.target.pop(down, None)
            return
        if self.target.get(down) != rid:
            self.target[down] = rid
            self._request_keyframe(rid, now)

    def _request_keyframe(self, rid: str, now: float) -> None:
        ssrc = self.ssrc_of.get(rid)
        if ssrc is None:
            return
        limiter = self._limiters.setdefault(ssrc, KeyframeRequestLimiter(0.5))
        if limiter.allow(now):
            self._send_pli(ssrc)

    def request_keyframes(self) -> None:
        """A subscriber needs a key frame: ask each layer some subscriber waits on."""
        now = time.time()
        for rid in {*self.target.values(), *self.current.values()}:
            self._request_keyframe(rid, now)

    def forget(self, down: DownTrack) -> None:
        for table in (self.wish, self.target, self.current):
            table.pop(down, None)
        self._report()

    def _check(self, now: float) -> None:
        """Adopt new down-tracks, drop ended ones, follow the layers that arrive."""
        self._next_check = now + CHECK_INTERVAL
        for down in list(self.current) + list(self.target) + list(self.wish):
            if down.forwarder is None:
                self.forget(down)
        # the layer each should get moves with the layers that arrive (one starts, or
        # the one a subscriber gets stops)
        for down in {*self._parking.active, *self.current, *self.target}:
            self._retarget(down, now)
        for rid in set(self.target.values()):  # still waiting: ask again (rate-limited)
            self._request_keyframe(rid, now)
        self._report()

    def _report(self) -> None:
        """Tell the publisher side which qualities are wanted, when that changes: every
        quality up to the highest any subscriber wants (as livekit-server's dynacast)."""
        callback = self.on_qualities
        if callback is None or not self.ssrc_of:
            return
        downs = {*self.wish, *self.current, *self.target, *self._parking.active}
        top = max((self.wish.get(d, HIGH) for d in downs), default=-1)
        qualities = {q: q <= top for q in range(HIGH + 1)}
        if qualities != self._reported:
            self._reported = qualities
            callback(qualities)

    # -- packets -------------------------------------------------------------------------

    def dispatch(self, packet: InPacket, now: float | None = None) -> None:
        """One publisher packet: switch the down-tracks waiting for this layer's key
        frame, then forward it to the layer's subscribers."""
        rid = self.rid_of.get(packet.ssrc)
        if rid is None:
            return  # a layer not named yet: nobody can be given it
        if now is None:
            now = time.time()
        if now - self.seen.get(rid, -1e9) >= LAYER_TIMEOUT:
            self._next_check = 0.0  # a layer (re)starts: look at the choices now
            self.started[rid] = now
        self.seen[rid] = now
        if now >= self._next_check:
            self._check(now)
        if self.target and rid in self.target.values():
            mime = self._receiver.mime_type or ""
            if is_keyframe_start(mime, packet.payload):
                for down, want in list(self.target.items()):
                    if want == rid:
                        self._move(down, rid, packet.ssrc, now)
        fanout = self.fanouts.get(rid)
        if fanout is not None and fanout.active:
            fanout.dispatch(packet, now)

    def _move(self, down: DownTrack, rid: str, ssrc: int, now: float) -> None:
        del self.target[down]
        if down.forwarder is None or down.munger is None:
            return
        old = down.fanout
        old.remove(down)  # type: ignore[arg-type]
        new = self.fanouts[rid]
        down.fanout = new
        new.add(down)
        down.munger.switch_to(ssrc, now)
        self.current[down] = rid
        self.switches += 1
        logger.debug("a subscriber switched to layer %s", rid)
        self._report()
