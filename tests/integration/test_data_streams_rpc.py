"""Data streams and RPC through a real server with real WebRTC data channels.

* aiolivekit <-> aiolivekit on our DevServer (and on livekit-server when available):
  1 MB text stream, 5 MB file, RPC both ways with errors and large payloads.
* aiolivekit <-> the official ``livekit`` Python SDK 1.2.1 (Rust FFI, libwebrtc, a
  subprocess in its own venv): RPC both directions, text streams both ways, a byte stream,
  transcription and DTMF. Those need ``scripts/netns-run`` (libwebrtc ignores loopback).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiolivekit import Room, RpcError, RpcInvocationData
from aiolivekit.testing.servers import ServerInfo
from aiolivekit.types import Transcription, TranscriptionSegment

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

IN_NETNS = os.environ.get("AIOLIVEKIT_NETNS") == "1"


_READERS: set[asyncio.Future[Any]] = set()


def _spawn_reader(coro: Any) -> None:
    """Run a stream reader in the background, keeping a reference until it ends."""
    task = asyncio.ensure_future(coro)
    _READERS.add(task)
    task.add_done_callback(_READERS.discard)


def _mixed_text(n_bytes: int, seed: int = 3) -> str:
    rng = random.Random(seed)
    alphabet = "abcdefgh ijk éü ж日本🎉"
    out, size = [], 0
    while size < n_bytes:
        ch = rng.choice(alphabet)
        out.append(ch)
        size += len(ch.encode())
    return "".join(out)


def _agent_token(server: ServerInfo, identity: str, room: str) -> str:
    """A token of kind "agent": livekit-server forwards transcriptions only from agents."""
    from livekit import api

    grants = api.VideoGrants(room_join=True, room=room, can_publish=True,
                             can_subscribe=True, can_publish_data=True)
    return (api.AccessToken(server.api_key, server.api_secret).with_identity(identity)
            .with_kind("agent").with_grants(grants).to_jwt())


async def _connect(server: ServerInfo, identity: str, room: str, *, agent: bool = False) -> Room:
    r = Room()
    token = _agent_token(server, identity, room) if agent else server.token(identity, room=room)
    await asyncio.wait_for(r.connect(server.url, token), 20)
    return r


async def _until(pred: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def pair(any_server: ServerInfo) -> AsyncIterator[tuple[Room, Room]]:
    a = await _connect(any_server, "alice", "data-room")
    b = await _connect(any_server, "bob", "data-room")
    try:
        await _until(lambda: "bob" in a.remote_participants and "alice" in b.remote_participants,
                     10, "participants to see each other")
        yield a, b
    finally:
        await asyncio.gather(a.disconnect(), b.disconnect(), return_exceptions=True)


# --------------------------------------------------------------------------- ours <-> ours


@pytest.mark.compat('text_stream', 'byte_stream', client="aiolivekit")
async def test_text_1mb_and_file_5mb(pair: tuple[Room, Room], tmp_path: Any) -> None:
    alice, bob = pair
    texts: dict[str, Any] = {}
    files: dict[str, Any] = {}

    def on_text(reader: Any, who: str) -> None:
        async def read() -> None:
            texts[reader.info.stream_id] = (who, await reader.read_all(), reader.info)
        _spawn_reader(read())

    def on_file(reader: Any, who: str) -> None:
        async def read() -> None:
            h, n = hashlib.sha256(), 0
            async for chunk in reader:
                h.update(chunk)
                n += len(chunk)
            files[reader.info.stream_id] = (who, h.hexdigest(), n, reader.info)
        _spawn_reader(read())

    bob.register_text_stream_handler("doc", on_text)
    bob.register_byte_stream_handler("file", on_file)

    text = _mixed_text(1_000_000)
    writer = await alice.local_participant.stream_text(topic="doc", attributes={"part": "1"})
    for i in range(0, len(text), 100_000):
        await writer.write(text[i : i + 100_000])
    await writer.aclose(attributes={"done": "yes"})

    payload = os.urandom(5 * 1024 * 1024)
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)
    info = await alice.local_participant.send_file(str(path), topic="file")

    await _until(lambda: writer.info.stream_id in texts and info.stream_id in files, 60,
                 "text and file")
    who, got, tinfo = texts[writer.info.stream_id]
    assert who == "alice"
    assert hashlib.sha256(got.encode()).digest() == hashlib.sha256(text.encode()).digest()
    assert tinfo.attributes == {"part": "1", "done": "yes"}
    who, digest, n, finfo = files[info.stream_id]
    assert (who, digest, n) == ("alice", hashlib.sha256(payload).hexdigest(), len(payload))
    assert finfo.name == "blob.bin" and finfo.size == len(payload)


@pytest.mark.compat('rpc', client="aiolivekit")
async def test_rpc_both_ways(pair: tuple[Room, Room]) -> None:
    alice, bob = pair

    @bob.local_participant.register_rpc_method("reverse")
    async def reverse(data: RpcInvocationData) -> str:
        assert data.caller_identity == "alice"
        return data.payload[::-1]

    def fail(data: RpcInvocationData) -> str:
        raise RpcError(2001, "nope", "details")

    alice.local_participant.register_rpc_method("fail", fail)
    alice.local_participant.register_rpc_method("size", lambda d: str(len(d.payload)))

    assert await alice.local_participant.perform_rpc(
        destination_identity="bob", method="reverse", payload="hello") == "olleh"
    with pytest.raises(RpcError) as err:
        await bob.local_participant.perform_rpc(destination_identity="alice", method="fail",
                                                payload="")
    assert (err.value.code, err.value.message, err.value.data) == (2001, "nope", "details")
    with pytest.raises(RpcError) as err:
        await bob.local_participant.perform_rpc(destination_identity="alice", method="missing",
                                                payload="")
    assert err.value.code == RpcError.ErrorCode.UNSUPPORTED_METHOD
    # both announce client protocol 2 to each other when the server relays it, so a payload
    # over the v1 limit travels as a data stream; otherwise it is refused before sending
    big = "z" * 40_000
    if bob._data.remote_client_protocol("alice"):
        assert await bob.local_participant.perform_rpc(
            destination_identity="alice", method="size", payload=big) == "40000"
    else:
        with pytest.raises(RpcError) as err:
            await bob.local_participant.perform_rpc(destination_identity="alice",
                                                    method="size", payload=big)
        assert err.value.code == RpcError.ErrorCode.REQUEST_PAYLOAD_TOO_LARGE
    results = await asyncio.gather(*(
        alice.local_participant.perform_rpc(destination_identity="bob", method="reverse",
                                            payload=f"n{i}")
        for i in range(50)
    ))
    assert results == [f"n{i}"[::-1] for i in range(50)]


async def test_sender_leaving_mid_stream_fails_reader(pair: tuple[Room, Room]) -> None:
    alice, bob = pair
    outcome: dict[str, Any] = {}

    def on_text(reader: Any, who: str) -> None:
        async def read() -> None:
            try:
                await reader.read_all()
                outcome["r"] = "completed"
            except ConnectionError as exc:  # StreamError
                outcome["r"] = exc
        _spawn_reader(read())

    bob.register_text_stream_handler("partial", on_text)
    writer = await alice.local_participant.stream_text(topic="partial")
    await writer.write("first part")
    await asyncio.sleep(0.3)
    await alice.disconnect()
    await _until(lambda: "r" in outcome, 20, "reader to end")
    assert isinstance(outcome["r"], ConnectionError), outcome


# --------------------------------------------------------------------------- official SDK


def _official(kind: str = "official_py") -> Any:
    from tests.interop import official

    reason = official.official_available(kind)
    if reason:
        pytest.skip(reason)
    return official


@pytest.mark.netns
@pytest.mark.official_sdk
@pytest.mark.skipif(not IN_NETNS, reason="needs scripts/netns-run (libwebrtc ignores loopback)")
@pytest.mark.parametrize(
    "kind",
    [
        # the transcription cell: official_py and node publish one (the browser page cannot)
        pytest.param("official_py", marks=pytest.mark.compat("transcription")),
        "browser",
        pytest.param("node", marks=pytest.mark.compat("transcription")),
    ],
)
async def test_official_clients_rpc_and_streams(any_server: ServerInfo, kind: str) -> None:
    """The official Python SDK 1.2.1, livekit-client 2.23 (Chromium), @livekit/rtc-node."""
    official = _official(kind)
    room_name = f"interop-data-{kind}"
    has_transcription = kind != "browser"  # the browser page has no publish_transcription
    ours = await _connect(any_server, "ours", room_name)
    texts: list[tuple[str, str, dict[str, str]]] = []
    blobs: list[tuple[str, str, bytes]] = []

    def on_text(reader: Any, who: str) -> None:
        async def read() -> None:
            texts.append((who, await reader.read_all(), dict(reader.info.attributes or {})))
        _spawn_reader(read())

    def on_bytes(reader: Any, who: str) -> None:
        async def read() -> None:
            blobs.append((who, reader.info.name, b"".join([c async for c in reader])))
        _spawn_reader(read())

    ours.register_text_stream_handler("to-ours", on_text)
    ours.register_byte_stream_handler("to-ours", on_bytes)
    transcripts: list[Any] = []
    dtmf: list[Any] = []
    ours.on("transcription_received", lambda segs, p, pub: transcripts.append((segs, p)))
    ours.on("sip_dtmf_received", lambda d: dtmf.append(d))

    @ours.local_participant.register_rpc_method("ours.echo")
    async def echo(data: RpcInvocationData) -> str:
        return f"ours got {data.payload} from {data.caller_identity}"

    def fail(data: RpcInvocationData) -> str:
        raise RpcError(3003, "ours refuses", '{"x":1}')

    ours.local_participant.register_rpc_method("ours.fail", fail)

    big_text = "ü" * 30_000  # 60 kB: several chunks
    steps = [
        {"op": "connect", "url": any_server.url,
         "token": _agent_token(any_server, "official", room_name),
         "stream_topics": ["to-official"]},
        {"op": "wait_participant", "identity": "ours"},
        {"op": "register_rpc", "method": "off.echo", "behaviour": {"type": "echo"}},
        {"op": "register_rpc", "method": "off.fail",
         "behaviour": {"type": "error", "code": 4004, "message": "official refuses",
                       "data": "why"}},
        {"op": "wait_signal", "name": "go", "timeout": 30},
        {"op": "perform_rpc", "dest": "ours", "method": "ours.echo", "payload": "ping"},
        {"op": "perform_rpc", "dest": "ours", "method": "ours.fail", "payload": ""},
        {"op": "perform_rpc", "dest": "ours", "method": "ours.none", "payload": ""},
        {"op": "perform_rpc", "dest": "ours", "method": "ours.echo", "payload": "L",
         "repeat": 20_000},
        {"op": "send_text", "text": "hello ours", "topic": "to-ours",
         "attributes": {"k": "v"}},
        {"op": "send_text", "text": "ü", "repeat": 30_000, "topic": "to-ours"},
        {"op": "send_bytes", "payload": "B", "repeat": 70_000, "name": "b.bin",
         "topic": "to-ours"},
        *([{"op": "publish_transcription", "track_sid": "TR_AMnotreal",
             "segments": [{"id": "seg1", "text": "hi there"}]}] if has_transcription else []),
        {"op": "publish_dtmf", "code": 5, "digit": "5"},
        {"op": "expect_text", "count": 2, "topic": "to-official", "timeout": 20},
        {"op": "wait_signal", "name": "bye", "timeout": 40},
        {"op": "disconnect"},
    ]
    async with official.start_driver(kind, steps, timeout=90) as proc:
        try:
            await proc.wait_for(lambda e: e.get("method") == "off.fail", timeout=40)
            await _until(lambda: "official" in ours.remote_participants, 10, "official peer")
            proc.signal("go")
            lp = ours.local_participant
            assert await lp.perform_rpc(destination_identity="official", method="off.echo",
                                        payload="from ours") == "from ours"
            with pytest.raises(RpcError) as err:
                await lp.perform_rpc(destination_identity="official", method="off.fail",
                                     payload="")
            assert (err.value.code, err.value.message, err.value.data) == \
                (4004, "official refuses", "why")
            with pytest.raises(RpcError) as err:
                await lp.perform_rpc(destination_identity="official", method="off.none",
                                     payload="")
            assert err.value.code == RpcError.ErrorCode.UNSUPPORTED_METHOD
            big = "Q" * 20_000  # beyond the v1 limit: needs the v2 (data stream) path
            assert await lp.perform_rpc(destination_identity="official", method="off.echo",
                                        payload=big) == big
            await lp.send_text("hello official", topic="to-official",
                               destination_identities=["official"])
            w = await lp.stream_text(topic="to-official", attributes={"a": "b"})
            await w.write(big_text[:10_001])
            await w.write(big_text[10_001:])
            await w.aclose()
            await _until(lambda: len(texts) == 2 and len(blobs) == 1 and dtmf
                         and (transcripts or not has_transcription),
                         30, "streams, transcription and DTMF from the official client")
            proc.signal("bye")
            events = await proc.finish()
        finally:
            await ours.disconnect()

    rpc = official.steps(events, "perform_rpc")
    assert rpc[0]["result"] == "ours got ping from official"
    assert rpc[1]["error"] == {"code": 3003, "message": "ours refuses", "data": '{"x":1}'}
    assert rpc[2]["error"]["code"] == RpcError.ErrorCode.UNSUPPORTED_METHOD
    assert rpc[3]["result"] == "ours got " + "L" * 20_000 + " from official"
    received = official.step(events, "expect_text")["items"]
    by_size = sorted(received, key=lambda i: i["size"])
    assert by_size[0]["text"] == "hello official" and by_size[0]["sender"] == "ours"
    assert by_size[1]["size"] == len(big_text.encode()) and by_size[1]["attributes"] == {"a": "b"}
    assert texts[0] == ("official", "hello ours", {"k": "v"})
    assert texts[1][0] == "official" and texts[1][1] == "ü" * 30_000
    assert blobs == [("official", "b.bin", b"B" * 70_000)]
    if has_transcription:
        segs, participant = transcripts[0]
        assert [(s.id, s.text) for s in segs] == [("seg1", "hi there")]
        assert participant is not None and participant.identity == "official"
    assert (dtmf[0].code, dtmf[0].digit, dtmf[0].participant.identity) == (5, "5", "official")


@pytest.mark.netns
@pytest.mark.official_sdk
@pytest.mark.skipif(not IN_NETNS, reason="needs scripts/netns-run (libwebrtc ignores loopback)")
@pytest.mark.compat("transcription", client="official_py")
async def test_official_sdk_receives_our_transcription_and_dtmf(any_server: ServerInfo) -> None:
    official = _official("official_py")
    room_name = "interop-tr"
    ours = await _connect(any_server, "agent-ours", room_name, agent=True)
    steps = [
        {"op": "connect", "url": any_server.url,
         "token": any_server.token("listener", room=room_name)},
        {"op": "wait_participant", "identity": "agent-ours"},
        {"op": "wait_signal", "name": "go", "timeout": 30},
        {"op": "expect_transcription", "count": 1, "timeout": 15},
        {"op": "expect_dtmf", "count": 1, "timeout": 15},
        {"op": "disconnect"},
    ]
    try:
        async with official.start_official_py(steps, timeout=60) as proc:
            await proc.wait_for(op="wait_participant", timeout=40)
            await _until(lambda: "listener" in ours.remote_participants, 10, "listener")
            proc.signal("go")
            await ours.local_participant.publish_transcription(Transcription(
                participant_identity="agent-ours", track_sid="TR_AMnotreal",
                segments=[TranscriptionSegment(id="a", text="spoken", final=True)]))
            await ours.local_participant.publish_dtmf(code=10, digit="*")
            events = await proc.finish()
    finally:
        await ours.disconnect()
    tr = official.step(events, "expect_transcription")["items"][0]
    assert tr["sender"] == "agent-ours"
    assert [(g["id"], g["text"], g["final"]) for g in tr["segments"]] == [("a", "spoken", True)]
    item = official.step(events, "expect_dtmf")["items"][0]
    assert (item["code"], item["digit"], item["sender"]) == (10, "*", "agent-ours")
