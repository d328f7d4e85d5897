"""Shared fixtures: the embedded server, the official livekit-server, and both as a matrix.

``any_server`` is parametrised over ``embedded`` (our DevServer) and ``livekit-server``
(the official binary); client tests written against it run on both. The official server
needs a private network namespace (``scripts/netns-run``) so that its ICE stays off the
machine's real interfaces; outside one it is skipped with a visible reason.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiolivekit.testing.servers import LiveKitServerProcess, ServerInfo, find_livekit_server

IN_NETNS = os.environ.get("AIOLIVEKIT_NETNS") == "1"


def _skip_reason_livekit_server() -> str | None:
    if find_livekit_server() is None:
        return "livekit-server binary not installed (scripts/test installs it with go)"
    if not IN_NETNS:
        return "livekit-server runs only inside a private network namespace (scripts/netns-run)"
    return None


@pytest.fixture
async def embedded_server() -> AsyncIterator[ServerInfo]:
    from aiolivekit.server import DevServer

    async with DevServer(port=0) as server:
        yield ServerInfo("embedded", server.url, server.api_key, server.api_secret)


@pytest.fixture
async def livekit_server() -> AsyncIterator[ServerInfo]:
    reason = _skip_reason_livekit_server()
    if reason:
        pytest.skip(reason)
    binary = find_livekit_server()
    assert binary is not None
    log = tempfile.NamedTemporaryFile(prefix="livekit-server-", suffix=".log", delete=False)
    log.close()
    async with LiveKitServerProcess(binary, log_path=log.name) as proc:
        yield proc.info()


@pytest.fixture(params=["embedded", "livekit-server"])
async def any_server(request: pytest.FixtureRequest) -> AsyncIterator[ServerInfo]:
    if request.param == "embedded":
        from aiolivekit.server import DevServer

        async with DevServer(port=0) as server:
            yield ServerInfo("embedded", server.url, server.api_key, server.api_secret)
    else:
        reason = _skip_reason_livekit_server()
        if reason:
            pytest.skip(reason)
        binary = find_livekit_server()
        assert binary is not None
        async with LiveKitServerProcess(binary) as proc:
            yield proc.info()


@pytest.fixture
async def rooms() -> AsyncIterator[list[Any]]:
    """Rooms a test creates (append them); all disconnected at the end."""
    created: list[Any] = []
    yield created
    for room in created:
        await room.disconnect()
