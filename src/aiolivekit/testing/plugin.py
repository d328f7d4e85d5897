"""pytest plugin for users of aiolivekit: an in-process LiveKit dev server fixture.

Installed as the ``aiolivekit`` pytest11 entry point, so with aiolivekit installed::

    async def test_two_clients(livekit_dev_server):
        token = livekit_dev_server.token("alice", room="r")
        await room.connect(livekit_dev_server.url, token)

The fixture is async and function-scoped (needs pytest-asyncio); it yields a started
:class:`aiolivekit.server.DevServer` on 127.0.0.1 and a free port, and stops it afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

try:
    import pytest_asyncio

    _fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - pytest-asyncio missing: plain fixture
    _fixture = pytest.fixture  # type: ignore[assignment]

if TYPE_CHECKING:  # pragma: no cover
    from aiolivekit.server.devserver import DevServer

__all__ = ["livekit_dev_server"]


@_fixture
async def livekit_dev_server() -> AsyncIterator[DevServer]:
    """A started DevServer (127.0.0.1, free port, key ``devkey`` / ``secret``)."""
    from aiolivekit.server.devserver import DevServer

    async with DevServer() as server:
        yield server
