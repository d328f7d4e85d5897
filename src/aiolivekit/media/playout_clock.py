"""One shared timer per event loop for every ``AudioSource`` that has audio not yet due.

A source whose producer keeps up with real time never needs it: its chunks are played out
from ``capture_frame`` itself. Sources holding a backlog (a producer ahead of real time, a
partial chunk waiting for the rest) ask the clock to call them back at a loop time; the
clock keeps a single ``loop.call_at`` handle for the earliest request and, when it fires,
serves every source due within ``COALESCE`` seconds, so sources ticking on nearby phases
share one wake-up instead of one task and one sleep each.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from typing import Protocol

__all__ = ["COALESCE", "PlayoutClock", "clock_for"]

logger = logging.getLogger(__name__)

COALESCE = 0.002  # requests this close to the earliest one are served by the same wake-up


class Serviced(Protocol):
    def _service(self, now: float) -> None: ...


class PlayoutClock:
    """Calls ``source._service(now)`` at (or up to ``COALESCE`` before) requested loop times."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wants: dict[Serviced, float] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = math.inf
        self.wakeups = 0

    def schedule(self, source: Serviced, when: float) -> None:
        """Call ``source._service`` once at ``when`` (replaces an earlier request)."""
        self._wants[source] = when
        if when < self._handle_at:
            self._arm(when)
        elif len(self._wants) == 1 and when > self._handle_at:
            # the only source moved its request later (a producer keeping pace pushes its
            # silence deadline on at every chunk): no wake-up before it is due
            self._arm(when)

    def cancel(self, source: Serviced) -> None:
        self._wants.pop(source, None)
        if not self._wants and self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._handle_at = math.inf

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle_at = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._handle_at = math.inf
        self.wakeups += 1
        now = self._loop.time()
        horizon = now + COALESCE
        due = [s for s, t in self._wants.items() if t <= horizon]
        for s in due:
            del self._wants[s]
        for s in due:
            try:
                s._service(now)
            except Exception:  # one broken source must not stop the others
                logger.exception("audio source service failed")
        if self._wants and self._handle is None:
            self._arm(min(self._wants.values()))


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PlayoutClock] = (
    weakref.WeakKeyDictionary()
)


def clock_for(loop: asyncio.AbstractEventLoop) -> PlayoutClock:
    """The clock of ``loop`` (created on first use)."""
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = PlayoutClock(loop)
    return clock
