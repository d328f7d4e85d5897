"""Sans-I/O reconnection policy: which attempt comes next (resume or full) and when.

Like the official Rust core: at most :data:`RECONNECT_ATTEMPTS` attempts; the first one
runs at once, the next ones wait a random time up to 300 ms, 600 ms, ... doubling to a 7 s
cap ("full jitter": uniform in [0, nominal], which spreads the clients of a restarted
server and brings each back sooner on average). A *resume* keeps the peer connections and
only replaces the signal connection; a *full* reconnect joins again. A resume the server refuses (a LeaveRequest, an unknown
participant) or a broken peer connection turns the following attempts into full ones (the
first full one after a refusal runs at once: the server is up and answering);
an authorisation failure (401/403) ends the reconnection at once.

:class:`ReconnectPlan` holds the state of one reconnection; no clock and no I/O: the
caller sleeps :attr:`Attempt.delay` seconds, runs the attempt and reports the outcome.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FIRST_DELAY",
    "MAX_DELAY",
    "RECONNECT_ATTEMPTS",
    "Attempt",
    "Outcome",
    "ReconnectPlan",
    "RetryPolicy",
]

RECONNECT_ATTEMPTS = 10
FIRST_DELAY = 0.3
MAX_DELAY = 7.0
JITTER = 1.0  # full jitter, as the Rust core

Kind = Literal["resume", "full"]
#: ``unreachable``: the server could not be reached or did not answer (same kind again);
#: ``refused``: the server will not resume this session (full next);
#: ``broken``: local state cannot be resumed (a peer connection failed: full next);
#: ``fatal``: stop (401/403: the token is no longer accepted).
Outcome = Literal["unreachable", "refused", "broken", "fatal"]


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts and how long to wait before each."""

    attempts: int = RECONNECT_ATTEMPTS
    first_delay: float = FIRST_DELAY
    max_delay: float = MAX_DELAY
    jitter: float = JITTER

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        if self.first_delay < 0 or self.max_delay < self.first_delay:
            raise ValueError("delays must satisfy 0 <= first_delay <= max_delay")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")

    def nominal(self, attempt: int) -> float:
        """The wait before attempt number ``attempt`` (0-based) without randomisation:
        0, then ``first_delay`` doubling to ``max_delay``."""
        if attempt <= 0:
            return 0.0
        return min(self.max_delay, self.first_delay * 2.0 ** (attempt - 1))

    def delay(self, attempt: int, rand: float = 0.0) -> float:
        """Seconds to wait before attempt number ``attempt`` (0-based); ``rand`` in [0, 1)
        takes up to ``jitter`` of the nominal wait off (0: none). Attempt 0 runs at once."""
        return self.nominal(attempt) * (1.0 - self.jitter * rand)


@dataclass(frozen=True)
class Attempt:
    number: int  # 0-based
    kind: Kind
    delay: float  # seconds to wait before running it


class ReconnectPlan:
    """One reconnection: ``next()`` gives the next attempt (None: give up), ``failed()``
    reports how the last one failed."""

    def __init__(self, *, full: bool = False, policy: RetryPolicy | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.policy = policy or RetryPolicy()
        self.full = full
        self.attempts = 0
        self.gave_up = False
        self.last_outcome: Outcome | None = None
        self._refusal_answered = True  # the full attempt after a refusal went out at once
        self._rand = rand

    def next(self) -> Attempt | None:
        """The next attempt, or None when the attempts are used up or a fatal failure
        ended the reconnection."""
        if self.gave_up or self.attempts >= self.policy.attempts:
            self.gave_up = True
            return None
        number = self.attempts
        self.attempts += 1
        kind: Kind = "full" if self.full else "resume"
        delay = self.policy.delay(number, self._rand())
        if self.last_outcome == "refused" and not self._refusal_answered:
            # the server answered and does not know the session: join at once (waiting
            # gains nothing; a restarted server is back, the official SDK rejoins as fast)
            self._refusal_answered = True
            delay = 0.0
        return Attempt(number, kind, delay)

    def failed(self, outcome: Outcome) -> None:
        """The last attempt failed in the way ``outcome`` says."""
        self.last_outcome = outcome
        if outcome == "refused":
            self._refusal_answered = False
        if outcome in ("refused", "broken"):
            self.full = True
        elif outcome == "fatal":
            self.gave_up = True

    def escalate(self) -> None:
        """A full reconnect is needed from now on (server asked, peer connection failed)."""
        self.full = True
