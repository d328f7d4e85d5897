"""The client's and the shared base's door to aiortc / aioice internals (``_compat``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from aiolivekit._compat import PINNED, aioice as aioice_compat, aiortc as aiortc_compat, aiortc_sctp
from aiolivekit.errors import AiortcCompatibilityError


def test_pinned_versions_have_every_hook() -> None:
    """The import-time checks find nothing missing on the versions in PINNED."""
    assert aiortc_compat.CLIENT_MISSING == []
    assert aioice_compat.MISSING == []
    assert PINNED["aiortc"] == "1.16.0" and PINNED["aioice"] == "0.13.0"


def test_check_connection_names_what_moved() -> None:
    class _Moved:  # an aioice Connection whose state attributes were renamed
        def __init__(self) -> None:
            self._nominated: dict[int, Any] = {}

    with pytest.raises(AiortcCompatibilityError) as info:
        aioice_compat.check_connection(_Moved())
    text = str(info.value)
    assert "aioice" in text and "0.13.0" in text
    assert "_check_list" in text and "_query_consent_task" in text
    assert "_nominated," not in text  # present: not reported


async def test_connection_hooks_on_a_real_aioice_connection() -> None:
    conn = aioice.ice.Connection(ice_controlling=True)
    aioice_compat.check_connection(conn)
    assert aioice_compat.nominated_pair(conn) is None
    assert aioice_compat.nominated_pairs(conn) == []
    assert aioice_compat.check_list(conn) == []
    assert not aioice_compat.check_list_done(conn)
    assert not aioice_compat.early_checks_done(conn)
    assert not aioice_compat.is_closing(conn)
    assert not aioice_compat.consent_task_running(conn)
    assert not aioice_compat.stop_consent_task(conn)
    assert aioice_compat.valid_username(conn, conn.local_username + ":remote")
    assert not aioice_compat.valid_username(conn, "someone-else:remote")
    seen: list[tuple[Any, ...]] = []
    assert aioice_compat.wrap_request_received(conn, lambda *a: seen.append(a))
    assert not aioice_compat.wrap_request_received(conn, lambda *a: None)  # once
    await conn.close()
    assert aioice_compat.is_closing(conn)


def test_wrap_datagram_received_once_per_protocol() -> None:
    got: list[bytes] = []

    def make(original: Any) -> Any:
        def handler(data: bytes, addr: Any) -> None:
            got.append(b"ours:" + data)
            original(data, addr)
        return handler

    class _Protocol:  # weak-referenceable, like aioice's StunProtocol
        pass

    p = _Protocol()
    p.datagram_received = lambda data, addr: got.append(b"aioice:" + data)  # type: ignore[attr-defined]
    assert not aioice_compat.datagram_received_wrapped(p)
    assert aioice_compat.wrap_datagram_received(p, make)
    assert not aioice_compat.wrap_datagram_received(p, make)
    assert aioice_compat.datagram_received_wrapped(p)
    p.datagram_received(b"x", ("127.0.0.1", 1))  # type: ignore[attr-defined]
    assert got == [b"ours:x", b"aioice:x"]


async def test_peer_connection_hooks() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("x")
        await pc.setLocalDescription(await pc.createOffer())
        conns = aiortc_compat.ice_connections(pc)
        assert len(conns) == 1 and isinstance(conns[0], aioice.ice.Connection)
        assert aiortc_sctp.sctp_max_message_size(pc.sctp) == 65536  # nothing advertised
        assert aiortc_sctp.sctp_max_message_size(None, 1234) == 1234
        connect = aiortc_compat.start_transceivers(pc)
        assert connect is not None
        await asyncio.wait_for(connect, 5)  # idempotent: nothing to start yet
        assert not aiortc_compat.dtls_connected(pc.sctp.transport)  # type: ignore[union-attr]
    finally:
        await pc.close()


def test_hook_sender_raises_when_aiortc_moved() -> None:
    with pytest.raises(AiortcCompatibilityError, match="_next_encoded_frame"):
        aiortc_compat.hook_sender(SimpleNamespace(), lambda o, c: o(c), lambda o: o())


async def test_sctp_unacked_messages_counts_from_the_first_gap() -> None:
    """On aiortc's real SCTP transport: queued messages, chunks not yet sent and chunks in
    flight from the first unacknowledged one (fragments: a message counts once, at its
    last fragment); other streams and the channel-open handshake do not count."""
    from aiortc.rtcsctptransport import (
        SCTP_DATA_FIRST_FRAG,
        SCTP_DATA_LAST_FRAG,
        WEBRTC_DCEP,
        WEBRTC_STRING,
        DataChunk,
    )

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        channel = pc.createDataChannel("_reliable")
        await pc.setLocalDescription(await pc.createOffer())
        sctp = pc.sctp
        assert sctp is not None
        assert aiortc_sctp.sctp_unacked_messages(channel) == 0
        channel._setId(1)

        def chunk(stream: int, flags: int, acked: bool = False,
                  protocol: int = WEBRTC_STRING) -> DataChunk:
            c = DataChunk(flags=flags)
            c.stream_id, c.protocol, c._acked = stream, protocol, acked
            return c

        whole = SCTP_DATA_FIRST_FRAG | SCTP_DATA_LAST_FRAG
        sctp._sent_queue.extend([
            chunk(1, whole, acked=True, protocol=WEBRTC_DCEP),
            chunk(1, whole, acked=True),              # delivered before the gap
            chunk(3, whole),                          # another stream (lossy)
            chunk(1, whole),                          # the gap: not delivered
            chunk(1, whole, acked=True),              # gap-acked, held behind the gap
            chunk(1, SCTP_DATA_FIRST_FRAG),           # a fragmented message ...
        ])
        sctp._outbound_queue.append(chunk(1, SCTP_DATA_LAST_FRAG))  # ... ends unsent
        sctp._data_channel_queue.append((channel, WEBRTC_STRING, b"queued"))
        sctp._data_channel_queue.append((channel, WEBRTC_DCEP, b"\x03"))
        assert aiortc_sctp.sctp_unacked_messages(channel) == 4
        assert aiortc_sctp.sctp_unacked_messages(None) is None
        sctp._sent_queue.clear()
        sctp._outbound_queue.clear()
        sctp._data_channel_queue.clear()
    finally:
        await pc.close()
