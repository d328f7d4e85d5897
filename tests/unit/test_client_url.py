"""Every malformed server URL, bad scheme or port is a ConnectError before any I/O (issue 14)."""

from __future__ import annotations

import asyncio

import pytest

from aiolivekit import ConnectError, Room

BAD_URLS = [
    "ws://[::1",               # unclosed IPv6 bracket (urllib: bare ValueError)
    "ws://127.0.0.1:99999",    # port out of range
    "ws://[::1]:70000",
    "ws://127.0.0.1:-1",
    "ws://127.0.0.1:abc",
    "ws://127.0.0.1:0",
    "ws://[zz::1]:80",         # not an IPv6 address
    "wss://[fe80::1%eth0",
    "ftp://127.0.0.1",         # bad scheme
    "127.0.0.1:7880",          # no scheme
    "",
    "ws://",
    "ws://:80",
    "ws://exa mple.com",
    "ws://host\x00",
    None,
    7880,
    b"ws://127.0.0.1:7880",
]


@pytest.mark.parametrize("url", BAD_URLS, ids=repr)
async def test_malformed_url_is_connect_error(url: object) -> None:
    room = Room()
    with pytest.raises(ConnectError) as info:
        await asyncio.wait_for(room.connect(url, "token"), 5)  # type: ignore[arg-type]
    assert info.value.reason == "bad_request"
    assert "invalid server URL" in str(info.value)
    assert room.connection_state == 0  # CONN_DISCONNECTED: nothing was opened
