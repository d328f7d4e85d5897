"""RFC 7675 consent freshness checks that ride on wake-ups the process has anyway.

aioice checks consent on a nominated pair from its own task every 4-6 s: a timer
wake-up to send, another for the response, for an otherwise idle participant. The
server meanwhile sends its own keepalive checks (pion: every 2 s), which
:mod:`.stun_keepalive` answers. :class:`ConsentSchedule` (sans-I/O, time passed in)
lets a check go out up to ``early`` seconds before it is due when the process is awake
to answer such a keepalive, so the check costs no wake-up of its own; its own timer
remains for when nothing else happens. Consent expires, and the ICE connection is
closed as aioice would, when no authenticated response arrived for ``expiry`` seconds.

:class:`ConsentKeeper` is the asyncio shell for one aioice ``Connection``: it takes
the checks over from aioice's task (aioice internals, through
:mod:`aiolivekit._compat.aioice`) and builds and
verifies the STUN bytes itself (:func:`.stun_keepalive.seal_message`).
``AIOLIVEKIT_FAST_CONSENT=0`` leaves consent to aioice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import weakref
from collections.abc import Callable
from typing import Any

from .._compat import aioice as aioice_compat
from .stun_keepalive import binding_response_ok, seal_message

__all__ = [
    "ConsentKeeper",
    "ConsentSchedule",
    "enabled",
    "keepalive_answered",
    "keeper_of",
    "response_received",
    "take_over",
]

logger = logging.getLogger(__name__)

CONSENT_INTERVAL = 5.0  # RFC 7675: randomised 0.8-1.2 x 5 s
CONSENT_EARLY = 2.0  # a check may go out this much early when the process is awake anyway
#: seconds after an ICE restart at which a check goes out while none was answered
RESTART_CHECKS = (0.0, 0.1, 0.3, 0.7, 1.5)
CONSENT_EXPIRY = 30.0  # RFC 7675: consent expires 30 s after the last response
_BINDING_REQUEST_TYPE = 0x0001
MAX_TAKE_OVER_TRIES = 50
# per aioice Connection (weakly held): its keeper, and the failed take-over tries
_keepers: weakref.WeakKeyDictionary[Any, ConsentKeeper] = weakref.WeakKeyDictionary()
_tries: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def enabled() -> bool:
    """Whether consent checks are taken over from aioice (``AIOLIVEKIT_FAST_CONSENT``)."""
    return os.environ.get("AIOLIVEKIT_FAST_CONSENT", "1") != "0"


def take_over(conn: Any) -> ConsentKeeper | None:
    """The :class:`ConsentKeeper` of an aioice ``Connection``, taking consent checks over
    from aioice if that is possible now (``None``: aioice keeps them; after
    :data:`MAX_TAKE_OVER_TRIES` failed tries, or when disabled, for good)."""
    keeper = _keepers.get(conn)
    if keeper is not None:
        return keeper
    tried = _tries.get(conn, 0)
    if tried >= MAX_TAKE_OVER_TRIES:
        return None
    if not enabled():
        _tries[conn] = MAX_TAKE_OVER_TRIES
        return None
    _tries[conn] = tried + 1
    keeper = ConsentKeeper.take_over(conn)
    if keeper is not None:
        _keepers[conn] = keeper
    return keeper


def keeper_of(conn: Any) -> ConsentKeeper | None:
    """The keeper checking consent on ``conn`` (``None`` while aioice does)."""
    return _keepers.get(conn)


def keepalive_answered(conn: Any) -> None:
    """The server's keepalive on ``conn`` was just answered: a due check goes out now."""
    keeper = take_over(conn)
    if keeper is not None:
        keeper.awake()


def response_received(conn: Any, data: bytes) -> bool:
    """Consume ``data`` if it answers ``conn``'s outstanding consent check."""
    keeper = _keepers.get(conn)
    return keeper is not None and keeper.response(data)


class ConsentSchedule:
    """When to send the next consent check and whether consent has expired."""

    def __init__(self, now: float, *, interval: float = CONSENT_INTERVAL,
                 early: float = CONSENT_EARLY, expiry: float = CONSENT_EXPIRY,
                 rng: Callable[[], float] = random.random) -> None:
        self.interval = interval
        self.early = early
        self.expiry = expiry
        self._rng = rng
        self.last_ok = now
        self.pending: bytes | None = None  # transaction id of the outstanding check
        self.due = now + self._next_interval()
        self.sent_count = 0
        self.ok_count = 0

    def _next_interval(self) -> float:
        return self.interval * (0.8 + 0.4 * self._rng())

    def should_send(self, now: float, *, awake: bool) -> bool:
        """A check is due (``awake``: the process runs anyway, so up to ``early`` s early)."""
        return now >= self.due - (self.early if awake else 0.0)

    def sent(self, now: float, transaction_id: bytes) -> None:
        """A check went out now; the next one is due one randomised interval later."""
        self.pending = transaction_id
        self.due = now + self._next_interval()
        self.sent_count += 1

    def response(self, now: float, transaction_id: bytes) -> bool:
        """An authenticated success response arrived; ``True`` if it answers our check."""
        if self.pending is None or transaction_id != self.pending:
            return False
        self.pending = None
        self.last_ok = now
        self.ok_count += 1
        return True

    def expired(self, now: float) -> bool:
        return now - self.last_ok >= self.expiry


class ConsentKeeper:
    """Consent checks of one aioice ``Connection`` (component 1), in place of aioice's task."""

    def __init__(self, conn: Any, loop: asyncio.AbstractEventLoop, attributes: bytes,
                 schedule: ConsentSchedule) -> None:
        # weak: the keeper is the value of a WeakKeyDictionary keyed by ``conn``; a strong
        # reference would keep every closed connection (sockets, PC) alive for ever
        self._conn_ref = weakref.ref(conn)
        self._loop = loop
        self._attributes = attributes  # USERNAME, PRIORITY, ICE-CONTROLL(ED|ING)
        self._key = conn.remote_password.encode("utf8")
        self.schedule = schedule
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self.stopped = False
        self._arm()

    @classmethod
    def take_over(cls, conn: Any) -> ConsentKeeper | None:
        """Stop aioice's consent task and check consent here; ``None`` (aioice keeps
        doing it) if its task is not running yet or the internals are not as expected.
        Use the module's :func:`take_over`, which keeps one keeper per connection."""
        try:
            aioice_compat.check_connection(conn)
        except Exception:  # aioice internals moved: aioice keeps its checks
            logger.debug("cannot take consent checks over", exc_info=True)
            return None
        pair = aioice_compat.nominated_pair(conn)
        if (not aioice_compat.consent_task_running(conn) or pair is None
                or not getattr(conn, "remote_password", None)
                or aioice_compat.is_closing(conn)):
            return None
        request = conn.build_request(pair, nominate=False)
        attributes = bytes(request)[20:]  # aioice adds no integrity/fingerprint here
        aioice_compat.stop_consent_task(conn)
        loop = asyncio.get_running_loop()
        schedule = ConsentSchedule(loop.time(), interval=CONSENT_INTERVAL, early=CONSENT_EARLY,
                                   expiry=CONSENT_EXPIRY)
        keeper = cls(conn, loop, attributes, schedule)
        logger.debug("consent checks taken over from aioice")
        return keeper

    def rekey(self) -> bool:
        """The remote ICE credentials changed (an ICE restart by the peer): sign the
        next checks with the new ones. False if the connection has no nominated pair."""
        conn = self._conn_ref()
        if conn is None:
            return False
        pair = aioice_compat.nominated_pair(conn)
        if pair is None or not getattr(conn, "remote_password", None):
            return False
        request = conn.build_request(pair, nominate=False)
        self._attributes = bytes(request)[20:]
        self._key = conn.remote_password.encode("utf8")
        self.schedule.pending = None  # an answer to the old check cannot be verified now
        return True

    def checks_after_restart(self) -> None:
        """After an ICE restart: checks at once and at RESTART_CHECKS (until one is
        answered), not at the next scheduled one (up to 5 s). A peer that cannot reach our
        candidates directly (NAT, relay) learns our address only from our checks, and it
        may drop those that arrive before it has our answer."""
        since = self._loop.time()
        for delay in RESTART_CHECKS:
            self._loop.call_later(delay, self._restart_check, since)

    def _restart_check(self, since: float) -> None:
        if not self.stopped and self.schedule.last_ok < since:
            self._check()

    def awake(self) -> None:
        """The process is running anyway (a keepalive was just answered)."""
        if not self.stopped and self.schedule.should_send(self._loop.time(), awake=True):
            self._check()

    def response(self, data: bytes) -> bool:
        """Consume ``data`` if it is the authenticated answer to the outstanding check."""
        pending = self.schedule.pending
        if pending is None or not binding_response_ok(data, pending, self._key):
            return False
        return self.schedule.response(self._loop.time(), pending)

    def refresh_credentials(self) -> None:
        """The connection's ICE credentials changed (ICE restart): sign the next checks
        with the new ones, and count the restart as fresh consent."""
        conn = self._conn_ref()
        if conn is None:
            return
        pair = aioice_compat.nominated_pair(conn)
        if pair is not None:
            self._attributes = bytes(conn.build_request(pair, nominate=False))[20:]
        self._key = conn.remote_password.encode("utf8")
        self.schedule.pending = None
        self.schedule.last_ok = self._loop.time()

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self.schedule.due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.stopped:
            self._check()

    def _check(self) -> None:
        conn = self._conn_ref()
        now = self._loop.time()
        if conn is None or aioice_compat.is_closing(conn):
            self.stop()
            return
        if self.schedule.expired(now):
            logger.info("ICE consent expired (no response for %.0f s)", self.schedule.expiry)
            self.stop()
            self._closing = self._loop.create_task(conn.close())
            return
        pair = aioice_compat.nominated_pair(conn)
        if pair is None or pair.protocol.transport is None:
            self.stop()
            return
        transaction_id = os.urandom(12)
        data = seal_message(_BINDING_REQUEST_TYPE, transaction_id, self._attributes, self._key)
        try:
            pair.protocol.transport.sendto(data, pair.remote_addr)
        except Exception:  # a closed transport: the connection is going away
            logger.debug("sending a consent check failed", exc_info=True)
        self.schedule.sent(now, transaction_id)
        self._arm()
