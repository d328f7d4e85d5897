"""A small synchronous event emitter with the semantics of ``livekit.rtc.EventEmitter``."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["EventEmitter"]

logger = logging.getLogger(__name__)

T_contra = TypeVar("T_contra", bound=str, contravariant=True)
Handler = Callable[..., Any]


def _positional_arity(fn: Handler) -> int | None:
    """Number of positional parameters ``fn`` accepts, ``None`` if unbounded (``*args``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    count = 0
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


class EventEmitter(Generic[T_contra]):
    """Register callbacks per event name and call them in registration order.

    Handlers are synchronous; an ``async def`` handler is refused with ``ValueError``
    (start a task from a sync handler instead). A handler that accepts fewer positional
    arguments than the event carries gets only the first ones. An exception raised by a
    handler is logged and the remaining handlers still run.
    """

    def __init__(self) -> None:
        self._events: dict[str, dict[Handler, Handler]] = {}

    def on(self, event: T_contra, callback: Handler | None = None) -> Handler:
        """Register ``callback`` for ``event``; usable as a decorator when ``callback`` is None."""
        if callback is None:

            def decorator(fn: Handler) -> Handler:
                self.on(event, fn)
                return fn

            return decorator
        self._check_sync(callback)
        self._events.setdefault(event, {})[callback] = callback
        return callback

    def once(self, event: T_contra, callback: Handler | None = None) -> Handler:
        """Like :meth:`on`, but the callback is removed before its first call."""
        if callback is None:

            def decorator(fn: Handler) -> Handler:
                self.once(event, fn)
                return fn

            return decorator
        self._check_sync(callback)
        original = callback

        def wrapper(*args: Any) -> Any:
            self.off(event, original)
            return _call(original, args)

        self._events.setdefault(event, {})[original] = wrapper
        return callback

    def off(self, event: T_contra, callback: Handler) -> None:
        """Remove ``callback`` (registered with ``on`` or ``once``); silent if absent."""
        handlers = self._events.get(event)
        if handlers is not None:
            handlers.pop(callback, None)

    def emit(self, event: T_contra, *args: Any) -> None:
        """Call every handler of ``event`` with ``args`` (truncated to each handler's arity)."""
        handlers = self._events.get(event)
        if not handlers:
            return
        for handler in list(handlers.values()):
            try:
                _call(handler, args)
            except Exception:
                logger.exception("error in handler for event %r", event)

    @staticmethod
    def _check_sync(callback: Handler) -> None:
        if asyncio.iscoroutinefunction(callback):
            raise ValueError(
                "Cannot register an async callback with `.on()`. "
                "Use `asyncio.create_task` within your synchronous callback instead."
            )


def _call(fn: Handler, args: tuple[Any, ...]) -> Any:
    arity = _positional_arity(fn)
    if arity is not None and arity < len(args):
        args = args[:arity]
    return fn(*args)
