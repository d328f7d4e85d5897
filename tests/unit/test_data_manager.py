"""DataManager routing: transcription, DTMF, public mixins, protocol constants."""

from __future__ import annotations

import asyncio

import pytest
from livekit.protocol import models as models_pb
from test_data_support import Hub

from aiolivekit.data.api import LocalParticipantDataMixin, RoomDataMixin
from aiolivekit.data.manager import CLIENT_CAPABILITIES, CLIENT_PROTOCOL, DataManager
from aiolivekit.data.rpc import RpcInvocationData
from aiolivekit.errors import PublishDTMFError, PublishTranscriptionError
from aiolivekit.types import SipDTMF, Transcription, TranscriptionSegment


def test_protocol_constants() -> None:
    assert CLIENT_PROTOCOL == 2
    assert models_pb.ClientInfo.CAP_COMPRESSION_DEFLATE_RAW in CLIENT_CAPABILITIES


async def test_transcription_round_trip() -> None:
    hub = Hub()
    agent, user = hub.join("agent"), hub.join("user")
    listener = hub.join("listener")
    publication = object()
    user.participant.track_publications["TR_mic"] = publication
    segs = [
        TranscriptionSegment(id="s1", text="hello", start_time=10, end_time=20,
                             language="en", final=False),
        TranscriptionSegment(id="s1", text="hello world", start_time=10, end_time=30,
                             language="en", final=True),
    ]
    await agent.manager.publish_transcription(
        Transcription(participant_identity="user", track_sid="TR_mic", segments=segs)
    )
    await asyncio.sleep(0.01)
    events = [e for e in listener.events if e[0] == "transcription_received"]
    assert len(events) == 1
    segments, participant, pub = events[0][1]
    assert segments == segs
    assert participant is user.participant and pub is publication
    wire = hub.sent_by("agent")[0].transcription
    assert (wire.transcribed_participant_identity, wire.track_id) == ("user", "TR_mic")
    # unknown participant / track: None, not an error
    await agent.manager.publish_transcription(Transcription("gone", "TR_x", segs[:1]))
    await asyncio.sleep(0.01)
    last = [e for e in listener.events if e[0] == "transcription_received"][-1][1]
    assert last[1] is None and last[2] is None


async def test_dtmf_round_trip_and_errors() -> None:
    hub = Hub()
    caller, bob = hub.join("sip_caller"), hub.join("bob")
    await caller.manager.publish_dtmf(code=11, digit="#")
    await asyncio.sleep(0.01)
    assert bob.events == [("sip_dtmf_received", (SipDTMF(11, "#", caller.participant),))]
    caller.connected = False
    with pytest.raises(PublishDTMFError):
        await caller.manager.publish_dtmf(code=1, digit="1")
    with pytest.raises(PublishTranscriptionError):
        await caller.manager.publish_transcription(Transcription("x", "y", []))


async def test_unknown_and_chat_packets_are_ignored() -> None:
    events: list = []
    dm = DataManager(lambda *a: events.append(a), lambda i: None)
    pkt = models_pb.DataPacket(participant_identity="x")
    pkt.chat_message.id = "c1"
    pkt.chat_message.message = "hi"
    dm.handle_packet(pkt)
    dm.handle_packet(models_pb.DataPacket())
    pkt2 = models_pb.DataPacket()
    pkt2.stream_chunk.stream_id = "unknown"
    dm.handle_packet(pkt2)
    assert events == []


class _LP(LocalParticipantDataMixin):
    def __init__(self, dm: DataManager) -> None:
        self._data = dm


class _Room(RoomDataMixin):
    def __init__(self, dm: DataManager) -> None:
        self._data = dm


async def test_public_mixins() -> None:
    hub = Hub()
    a, b = hub.join("alice"), hub.join("bob")
    lp_a, lp_b, room_b = _LP(a.manager), _LP(b.manager), _Room(b.manager)

    @lp_b.register_rpc_method("add")
    def add(data: RpcInvocationData) -> str:
        x, y = map(int, data.payload.split(","))
        return str(x + y)

    assert add.__name__ == "add"  # the decorator returns the function
    assert await lp_a.perform_rpc(destination_identity="bob", method="add", payload="2,3") == "5"
    lp_b.unregister_rpc_method("add")

    got: list[tuple[str, str]] = []

    async def read(reader, who) -> None:  # type: ignore[no-untyped-def]
        got.append((who, await reader.read_all()))

    room_b.register_text_stream_handler("t", lambda r, w: asyncio.ensure_future(read(r, w)))
    with pytest.raises(ValueError):
        room_b.register_text_stream_handler("t", lambda r, w: None)
    w = await lp_a.stream_text(topic="t")
    await w.write("abc")
    await w.aclose()
    await lp_a.send_text("def", topic="t", destination_identities=["bob"])
    blobs: list[bytes] = []

    async def read_bytes(reader, who) -> None:  # type: ignore[no-untyped-def]
        blobs.append(b"".join([c async for c in reader]))

    room_b.register_byte_stream_handler("b", lambda r, w: asyncio.ensure_future(read_bytes(r, w)))
    bw = await lp_a.stream_bytes("n.bin", topic="b", total_size=3)
    await bw.write(b"xyz")
    await bw.aclose()
    await lp_a.send_bytes(b"123", topic="b")
    await lp_a.publish_dtmf(code=1, digit="1")
    for _ in range(100):
        if len(got) == 2 and len(blobs) == 2:
            break
        await asyncio.sleep(0.01)
    assert got == [("alice", "abc"), ("alice", "def")]
    assert blobs == [b"xyz", b"123"]
    room_b.unregister_text_stream_handler("t")
    room_b.unregister_byte_stream_handler("b")
    assert b.events[-1][0] == "sip_dtmf_received"
