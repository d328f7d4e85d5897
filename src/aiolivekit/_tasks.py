"""Small asyncio task helpers shared by the media and track classes."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended, swallowing its ``CancelledError``.

    Does nothing for ``None`` or for the task that is running this coroutine (a task
    cannot wait for itself). A task that ended with another exception re-raises it here.
    """
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
