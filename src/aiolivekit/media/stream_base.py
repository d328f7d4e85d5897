"""Shared machinery of ``AudioStream`` / ``VideoStream``: a bounded queue fed by a
remote track's pump, async iteration, and following a participant's track source.

``from_participant`` streams re-scan ``participant.track_publications`` whenever they
are woken and, as a fallback, every ``FOLLOW_INTERVAL`` seconds. Their wake-up events hang
off the participant (its ``_stream_followers`` set): the room calls
``Participant._publications_changed`` when a track is subscribed, unsubscribed or
unpublished, or the participant leaves (:func:`publications_changed` does the same for any
participant-like object). Such a stream survives re-publication and ends once
``participant.disconnect_reason`` is set.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Generic, TypeVar

from .._tasks import cancel_and_wait

__all__ = ["FrameStreamBase", "publications_changed"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

FOLLOW_INTERVAL = 0.5  # fallback period of the publication re-scan, seconds



def _followers(participant: Any) -> set[asyncio.Event]:
    """The wake-up events of the streams following ``participant`` (its
    ``_stream_followers``, created on first use for participant-like objects)."""
    followers: set[asyncio.Event] | None = getattr(participant, "_stream_followers", None)
    if followers is None:
        followers = set()
        participant._stream_followers = followers
    return followers


def publications_changed(participant: Any) -> None:
    """Tell ``from_participant`` streams of ``participant`` to re-scan its publications."""
    for event in tuple(getattr(participant, "_stream_followers", ())):
        event.set()


class FrameStreamBase(Generic[T]):
    """Bounded drop-oldest queue + async iterator. Subclasses implement ``_transform``."""

    _DEFAULT_BOUND = 100
    _TRACK_KIND = 0

    def __init__(
        self,
        track: Any,
        loop: asyncio.AbstractEventLoop | None,
        capacity: int,
        kwargs: dict[str, Any],
    ) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._loop = loop or asyncio.get_running_loop()
        self._capacity = capacity
        self._queue: collections.deque[T] = collections.deque(
            maxlen=capacity if capacity > 0 else self._DEFAULT_BOUND
        )
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._closed = False
        self._track: Any = None
        self._follow_task: asyncio.Task[None] | None = None
        self.dropped = 0
        participant = kwargs.get("participant")
        track_source = kwargs.get("track_source")
        if track is not None:
            self._attach(track)
        elif participant is not None and track_source is not None:
            self._follow_task = self._loop.create_task(self._follow(participant, track_source))
        else:
            raise ValueError("track or (participant and track_source) is required")

    # ---------------------------------------------------------------- track side

    def _attach(self, track: Any) -> None:
        add = getattr(track, "_add_stream", None)
        if add is None:
            raise TypeError(f"cannot stream from {track!r}: not a remote track")
        if getattr(track, "kind", None) != self._TRACK_KIND:
            raise TypeError(f"{type(self).__name__} needs a track of kind {self._TRACK_KIND}")
        self._track = track
        add(self)

    def _detach(self) -> None:
        track, self._track = self._track, None
        if track is not None:
            track._remove_stream(self)

    def _push(self, item: Any) -> None:
        """Called by the track's pump for each received frame."""
        for out in self._transform(item):
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(out)
        self._wake()

    def _end(self) -> None:
        """The track ended (or was closed)."""
        self._track = None
        if self._follow_task is None:
            self._ended = True
            self._wake()

    def _transform(self, item: Any) -> list[T]:
        raise NotImplementedError

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _follow(self, participant: Any, track_source: int) -> None:
        wake = asyncio.Event()
        followers = _followers(participant)
        followers.add(wake)
        try:
            while not self._closed:
                wake.clear()
                if getattr(participant, "disconnect_reason", None) is not None:
                    break  # the participant left: end after the buffered frames
                found = None
                for pub in list(getattr(participant, "track_publications", {}).values()):
                    track = getattr(pub, "track", None)
                    if (
                        getattr(pub, "source", None) == track_source
                        and track is not None
                        and getattr(track, "kind", None) == self._TRACK_KIND
                        and hasattr(track, "_add_stream")
                        and not getattr(track, "_ended", False)
                    ):
                        found = track
                        break
                if found is not self._track:
                    self._detach()
                    if found is not None:
                        self._attach(found)
                try:
                    await asyncio.wait_for(wake.wait(), FOLLOW_INTERVAL)
                except asyncio.TimeoutError:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("following %r failed", participant)
        finally:
            self._detach()
            self._ended = True
            self._wake()
            followers.discard(wake)

    # ---------------------------------------------------------------- consumer side

    def __aiter__(self) -> FrameStreamBase[T]:
        return self

    async def __anext__(self) -> T:
        while not self._queue:
            if self._ended or self._closed:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    async def aclose(self) -> None:
        """Stop receiving; iteration ends immediately."""
        self._closed = True
        self._ended = True
        self._queue.clear()
        self._detach()
        task, self._follow_task = self._follow_task, None
        await cancel_and_wait(task)
        self._wake()
