"""Text/byte streams: the sans-I/O assembler and two DataManagers back to back."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import random
import zlib

import pytest
from livekit.protocol import models as models_pb
from test_data_support import Hub

from aiolivekit.data.streams import (
    STREAM_CHUNK_SIZE,
    ByteStreamReader,
    StreamAssembler,
    StreamClosed,
    StreamData,
    StreamOpened,
    TextStreamReader,
    build_header,
    chunk_packets,
    split_utf8,
    trailer_packet,
)
from aiolivekit.errors import StreamError

DS = models_pb.DataStream


def _mixed_text(n_bytes: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    alphabet = "abcxyz éàü ж日本語🎉🚀"
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        ch = rng.choice(alphabet)
        parts.append(ch)
        size += len(ch.encode())
    return "".join(parts)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- pure helpers


def test_split_utf8_never_cuts_a_character() -> None:
    data = _mixed_text(200_000).encode()
    pieces = list(split_utf8(data, STREAM_CHUNK_SIZE))
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= STREAM_CHUNK_SIZE for p in pieces)
    for p in pieces:
        p.decode("utf-8")  # each piece is valid on its own
    assert list(split_utf8("🎉🎉".encode(), 5)) == ["🎉".encode(), "🎉".encode()]
    with pytest.raises(ValueError):
        list(split_utf8(b"abc", 3))


def _header(sid: str = "s1", **kw: object) -> DS.Header:
    args: dict = {"stream_id": sid, "topic": "t", "kind": "byte", "mime_type": "x/y", "name": "n"}
    args.update(kw)
    return build_header(**args)  # type: ignore[arg-type]


def test_assembler_orders_chunks_and_merges_trailer() -> None:
    asm = StreamAssembler()
    ev = asm.handle_header(_header(attributes={"a": "1"}), "alice")
    assert isinstance(ev[0], StreamOpened) and ev[0].sender_identity == "alice"
    data = os.urandom(40_000)
    out = []
    for pkt in chunk_packets("s1", data, 0, None, text=False):
        out += asm.handle_chunk(pkt.stream_chunk)
    assert b"".join(e.data for e in out if isinstance(e, StreamData)) == data
    # a repeated chunk is ignored
    assert asm.handle_chunk(DS.Chunk(stream_id="s1", chunk_index=0, content=b"dup")) == []
    closed = asm.handle_trailer(trailer_packet("s1", None, attributes={"b": "2"}).stream_trailer)
    assert closed == [StreamClosed("s1", {"b": "2"}, None)]
    assert "s1" not in asm
    # packets of a finished / unknown stream are dropped
    assert asm.handle_chunk(DS.Chunk(stream_id="s1", chunk_index=3, content=b"x")) == []


def test_assembler_gap_abort_sender_left_close() -> None:
    asm = StreamAssembler()
    asm.handle_header(_header("g"), "alice")
    ev = asm.handle_chunk(DS.Chunk(stream_id="g", chunk_index=1, content=b"x"))
    assert isinstance(ev[0], StreamClosed) and "missing chunk 0" in (ev[0].error or "")

    asm.handle_header(_header("a"), "alice")
    ev = asm.handle_trailer(DS.Trailer(stream_id="a", reason="cancelled by user"))
    assert ev == [StreamClosed("a", {}, "cancelled by user")]

    asm.handle_header(_header("b1"), "bob")
    asm.handle_header(_header("b2"), "bob")
    asm.handle_header(_header("c1"), "carol")
    left = asm.sender_left("bob")
    assert sorted(e.stream_id for e in left) == ["b1", "b2"]
    assert all(isinstance(e, StreamClosed) and e.error for e in left)
    rest = asm.close()
    assert [(e.stream_id, e.error) for e in rest] == [("c1", "Disconnected while receiving")]


def test_assembler_inline_and_compressed() -> None:
    asm = StreamAssembler()
    h = _header("inl")
    h.inline_content = b"hello"
    ev = asm.handle_header(h, "alice")
    assert [type(e) for e in ev] == [StreamOpened, StreamData, StreamClosed]
    assert ev[1].data == b"hello" and ev[2].error is None
    assert "inl" not in asm

    text = _mixed_text(100_000).encode()
    comp = zlib.compressobj(wbits=-15)
    packed = comp.compress(text) + comp.flush()
    hc = _header("z", kind="text", mime_type="text/plain")
    hc.compression = DS.DEFLATE_RAW
    asm.handle_header(hc, "alice")
    got = b""
    for i in range(0, len(packed), 1000):  # compressed chunks cut anywhere
        for e in asm.handle_chunk(DS.Chunk(stream_id="z", chunk_index=i // 1000,
                                           content=packed[i:i + 1000])):
            got += e.data if isinstance(e, StreamData) else b""
    for e in asm.handle_trailer(DS.Trailer(stream_id="z")):
        got += e.data if isinstance(e, StreamData) else b""
    assert got == text


def test_assembler_bounds_inflation() -> None:
    asm = StreamAssembler(max_inflated=100_000)
    comp = zlib.compressobj(wbits=-15)
    bomb = comp.compress(b"\0" * 5_000_000) + comp.flush()
    h = _header("bomb")
    h.compression = DS.DEFLATE_RAW
    h.inline_content = bomb
    ev = asm.handle_header(h, "eve")
    assert isinstance(ev[-1], StreamClosed) and "size limit" in (ev[-1].error or "")
    assert sum(len(e.data) for e in ev if isinstance(e, StreamData)) <= 100_000


# --------------------------------------------------------------------------- end to end


def _collect_text(hub_member, topic: str, sink: dict) -> None:  # type: ignore[no-untyped-def]
    async def consume(reader: TextStreamReader, who: str) -> None:
        try:
            sink[reader.info.stream_id] = (who, await reader.read_all(), reader.info)
        except StreamError as exc:
            sink[reader.info.stream_id] = (who, exc, reader.info)

    hub_member.manager.register_text_stream_handler(
        topic, lambda r, who: asyncio.ensure_future(consume(r, who))
    )


async def _wait_for(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_text_stream_1mb_intact_in_order_with_attributes() -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=0), hub.join("bob", protocol=0)
    got: dict = {}
    _collect_text(bob, "chat", got)
    text = _mixed_text(1_000_000)
    writer = await alice.manager.stream_text(topic="chat", attributes={"a": "1"})
    for i in range(0, len(text), 70_001):
        await writer.write(text[i : i + 70_001])
    await writer.aclose(attributes={"b": "2"})
    await _wait_for(lambda: writer.info.stream_id in got)
    who, received, info = got[writer.info.stream_id]
    assert who == "alice"
    assert _sha(received.encode()) == _sha(text.encode())
    assert info.attributes == {"a": "1", "b": "2"}
    assert info.topic == "chat" and info.mime_type == "text/plain"
    chunks = [p.stream_chunk for p in hub.sent_by("alice") if p.HasField("stream_chunk")]
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert all(len(c.content) <= STREAM_CHUNK_SIZE for c in chunks)
    for c in chunks:
        c.content.decode("utf-8")  # split on character boundaries
    assert all(p.kind == models_pb.DataPacket.RELIABLE for p in hub.sent_by("alice"))


async def test_send_text_reports_size_and_reply_to() -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=0), hub.join("bob", protocol=0)
    got: dict = {}
    _collect_text(bob, "t", got)
    info = await alice.manager.send_text("héllo", topic="t", reply_to_id="orig")
    await _wait_for(lambda: info.stream_id in got)
    assert got[info.stream_id][1] == "héllo"
    assert got[info.stream_id][2].size == len("héllo".encode())
    header = next(p.stream_header for p in hub.sent_by("alice") if p.HasField("stream_header"))
    assert header.text_header.reply_to_stream_id == "orig"
    assert not header.HasField("inline_content")  # bob announced protocol 0


async def test_send_file_5mb_intact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob")
    payload = os.urandom(5 * 1024 * 1024)
    path = tmp_path / "photo.png"
    path.write_bytes(payload)
    got: dict = {}

    async def consume(reader: ByteStreamReader, who: str) -> None:
        h = hashlib.sha256()
        n = 0
        async for chunk in reader:
            h.update(chunk)
            n += len(chunk)
        got["r"] = (who, h.hexdigest(), n, reader.info)

    bob.manager.register_byte_stream_handler(
        "files", lambda r, who: asyncio.ensure_future(consume(r, who))
    )
    info = await alice.manager.send_file(str(path), topic="files", attributes={"k": "v"})
    await _wait_for(lambda: "r" in got, 20)
    who, digest, n, rinfo = got["r"]
    assert (who, digest, n) == ("alice", _sha(payload), len(payload))
    assert rinfo.name == "photo.png" and rinfo.mime_type == "image/png"
    assert rinfo.size == len(payload) and info.size == len(payload)
    assert rinfo.attributes == {"k": "v"} and rinfo.stream_id == info.stream_id


async def test_send_bytes_inline_for_v2_recipient_and_chunked_otherwise() -> None:
    hub = Hub()
    alice = hub.join("alice")
    v2, v0 = hub.join("v2", protocol=2), hub.join("v0", protocol=0)
    got: dict = {}

    async def consume(reader: ByteStreamReader, who: str) -> None:
        data = b"".join([c async for c in reader])
        got.setdefault(reader.info.stream_id, []).append(data)

    for m in (v2, v0):
        m.manager.register_byte_stream_handler(
            "b", lambda r, who: asyncio.ensure_future(consume(r, who))
        )
    small = b"\x01\x02" * 100
    i1 = await alice.manager.send_bytes(small, topic="b", destination_identities=["v2"])
    i2 = await alice.manager.send_bytes(small, topic="b", destination_identities=["v0"])
    big = os.urandom(40_000)
    i3 = await alice.manager.send_bytes(big, topic="b", destination_identities=["v2"])
    await _wait_for(lambda: len(got) == 3)
    assert got == {i1.stream_id: [small], i2.stream_id: [small], i3.stream_id: [big]}
    per_stream: dict[str, list[str]] = {}
    for p in hub.sent_by("alice"):
        which = p.WhichOneof("value")
        sid = getattr(p, which).stream_id
        per_stream.setdefault(sid, []).append(which)
    assert per_stream[i1.stream_id] == ["stream_header"]  # single packet, inline
    assert per_stream[i2.stream_id] == ["stream_header", "stream_chunk", "stream_trailer"]
    assert per_stream[i3.stream_id][0] == "stream_header"
    assert per_stream[i3.stream_id].count("stream_chunk") == 3  # too big to inline


async def test_concurrent_streams_on_several_topics() -> None:
    hub = Hub()
    alice, carol, bob = hub.join("alice"), hub.join("carol"), hub.join("bob")
    got: dict = {}
    for topic in ("t1", "t2", "t3"):
        _collect_text(bob, topic, got)
    expected: dict[str, str] = {}

    async def send(member, topic: str, seed: int) -> None:  # type: ignore[no-untyped-def]
        text = _mixed_text(120_000, seed)
        w = await member.manager.stream_text(topic=topic, destination_identities=["bob"])
        expected[w.info.stream_id] = text
        for i in range(0, len(text), 9_000):
            await w.write(text[i : i + 9_000])
            await asyncio.sleep(0)
        await w.aclose()

    await asyncio.gather(*(
        send(m, t, s) for s, (m, t) in enumerate(
            [(alice, "t1"), (alice, "t2"), (carol, "t1"), (carol, "t3"), (alice, "t3")]
        )
    ))
    await _wait_for(lambda: len(got) == 5)
    for sid, text in expected.items():
        assert got[sid][1] == text
    # the streams really were interleaved on the wire
    order = [getattr(p, p.WhichOneof("value")).stream_id for _, p in hub.wire]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches > 10


async def test_sender_leaves_mid_stream_raises_stream_error() -> None:
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob")
    got: dict = {}
    _collect_text(bob, "t", got)
    w = await alice.manager.stream_text(topic="t")
    await w.write("partial")
    await asyncio.sleep(0.01)
    hub.leave("alice")
    await _wait_for(lambda: w.info.stream_id in got)
    err = got[w.info.stream_id][1]
    assert isinstance(err, StreamError) and "alice" in err.description
    assert isinstance(err, ConnectionError)


async def test_abort_reason_and_room_disconnect() -> None:
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob")
    received: list = []
    errors: dict = {}

    async def consume(reader: TextStreamReader, who: str) -> None:
        try:
            async for chunk in reader:
                received.append(chunk)
        except StreamError as exc:
            errors[reader.info.topic] = exc.description

    for topic in ("abort", "disc"):
        bob.manager.register_text_stream_handler(
            topic, lambda r, who: asyncio.ensure_future(consume(r, who))
        )
    w1 = await alice.manager.stream_text(topic="abort")
    await w1.write("one")
    await w1.aclose(reason="user cancelled")
    w2 = await alice.manager.stream_text(topic="disc")
    await w2.write("two")
    await asyncio.sleep(0.01)
    bob.manager.close()
    await _wait_for(lambda: len(errors) == 2, 1)
    assert errors == {"abort": "user cancelled", "disc": "Disconnected while receiving"}
    assert received == ["one", "two"]  # data before the error is still delivered


async def test_no_handler_drops_with_one_log_line(caplog) -> None:  # type: ignore[no-untyped-def]
    hub = Hub()
    alice, bob = hub.join("alice", protocol=0), hub.join("bob", protocol=0)
    caplog.set_level(logging.DEBUG, logger="aiolivekit.data")
    await alice.manager.send_text("x" * 50_000, topic="nobody")
    await asyncio.sleep(0.02)
    lines = [r for r in caplog.records if "nobody" in r.getMessage()]
    assert len(lines) == 1 and "no handler" in lines[0].getMessage()
    assert bob.manager._readers == {} and bob.manager._assembler.open_streams() == []


async def test_register_handler_twice_raises() -> None:
    hub = Hub()
    bob = hub.join("bob")
    bob.manager.register_text_stream_handler("t", lambda r, w: None)
    with pytest.raises(ValueError):
        bob.manager.register_text_stream_handler("t", lambda r, w: None)
    bob.manager.register_byte_stream_handler("t", lambda r, w: None)  # separate namespace
    with pytest.raises(ValueError):
        bob.manager.register_byte_stream_handler("t", lambda r, w: None)
    bob.manager.unregister_text_stream_handler("t")
    bob.manager.register_text_stream_handler("t", lambda r, w: None)


async def test_unread_stream_is_bounded_then_fails() -> None:
    hub = Hub()
    alice = hub.join("alice")
    bob = hub.join("bob", stream_buffer_limit=100_000)
    readers: list[ByteStreamReader] = []
    bob.manager.register_byte_stream_handler("big", lambda r, w: readers.append(r))
    payload = os.urandom(300_000)
    await alice.manager.send_bytes(payload, topic="big")
    await asyncio.sleep(0.02)
    (reader,) = readers
    assert reader._buffered <= 100_000
    assert bob.manager._readers == {}  # the manager let go of the failed stream
    got = b""
    with pytest.raises(StreamError, match="buffer limit"):
        async for chunk in reader:
            got += chunk
    assert got == payload[: len(got)] and 0 < len(got) <= 100_000


async def test_reader_close_discards_stream() -> None:
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob")
    readers: list[TextStreamReader] = []
    bob.manager.register_text_stream_handler("t", lambda r, w: readers.append(r))
    w = await alice.manager.stream_text(topic="t")
    await w.write("a")
    await asyncio.sleep(0.01)
    readers[0].close()
    await w.write("b")
    await w.aclose()
    await asyncio.sleep(0.01)
    assert [c async for c in readers[0]] == []
    assert bob.manager._assembler.open_streams() == []


async def test_writer_misuse_and_not_connected() -> None:
    hub = Hub()
    alice, _bob = hub.join("alice"), hub.join("bob")
    w = await alice.manager.stream_text(topic="t")
    await w.aclose()
    with pytest.raises(RuntimeError, match="Cannot write after stream is closed"):
        await w.write("x")
    with pytest.raises(RuntimeError, match="Stream already closed"):
        await w.aclose()
    alice.connected = False
    with pytest.raises(StreamError):
        await alice.manager.send_text("x", topic="t")
    hub.leave("alice")
    with pytest.raises(StreamError):
        await alice.manager.stream_bytes("n", topic="t")


async def test_async_handler_is_run_as_task() -> None:
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob")
    got: list[str] = []

    async def handler(reader: TextStreamReader, who: str) -> None:
        got.append(await reader.read_all())

    bob.manager.register_text_stream_handler("t", handler)  # type: ignore[arg-type]
    await alice.manager.send_text("async ok", topic="t")
    await _wait_for(lambda: got == ["async ok"])


async def test_compressed_chunked_text_from_a_peer() -> None:
    """What official clients send us when we announce deflate-raw: slices of one deflate
    stream, cut anywhere (also inside UTF-8 characters of the inflated text)."""
    hub = Hub()
    bob = hub.join("bob")
    got: dict = {}
    _collect_text(bob, "z", got)
    text = _mixed_text(300_000, seed=9)
    comp = zlib.compressobj(wbits=-15)
    packed = comp.compress(text.encode()) + comp.flush()
    header = build_header(stream_id="zs", topic="z", kind="text", mime_type="text/plain",
                          total_length=len(text.encode()), attributes={"x": "1"})
    header.compression = DS.DEFLATE_RAW
    pkt = models_pb.DataPacket(participant_identity="official")
    pkt.stream_header.CopyFrom(header)
    bob.manager.handle_packet(pkt)
    for i, off in enumerate(range(0, len(packed), 777)):
        pkt = models_pb.DataPacket(participant_identity="official")
        pkt.stream_chunk.stream_id = "zs"
        pkt.stream_chunk.chunk_index = i
        pkt.stream_chunk.content = packed[off:off + 777]
        bob.manager.handle_packet(pkt)
        await asyncio.sleep(0)
    pkt = models_pb.DataPacket(participant_identity="official")
    pkt.stream_trailer.stream_id = "zs"
    bob.manager.handle_packet(pkt)
    await _wait_for(lambda: "zs" in got)
    who, received, info = got["zs"]
    assert (who, received == text, info.size, info.attributes) == (
        "official", True, len(text.encode()), {"x": "1"})


async def test_broadcast_inline_and_compression_when_all_recipients_accept() -> None:
    cap = models_pb.ClientInfo.CAP_COMPRESSION_DEFLATE_RAW
    hub = Hub()
    alice = hub.join("alice")
    bob = hub.join("bob", capabilities=(cap,))
    carol = hub.join("carol", capabilities=(cap,))
    got_b: dict = {}
    got_c: dict = {}
    _collect_text(bob, "t", got_b)
    _collect_text(carol, "t", got_c)

    def headers() -> list:
        return [p.stream_header for p in hub.sent_by("alice") if p.HasField("stream_header")]

    small = await alice.manager.send_text("hi all", topic="t")  # broadcast, all at level 2
    text = "compressible é日 " * 20_000  # ~400 kB, deflates to a few kB
    big = await alice.manager.send_text(text, topic="t")
    plain = await alice.manager.send_text(text, topic="t", compress=False)
    await _wait_for(lambda: len(got_b) == 3 and len(got_c) == 3)
    for got in (got_b, got_c):
        assert got[small.stream_id][1] == "hi all"
        assert got[big.stream_id][1] == text and got[plain.stream_id][1] == text
        assert got[big.stream_id][2].size == len(text.encode())
    h_small, h_big, h_plain = headers()
    assert h_small.HasField("inline_content") and h_small.compression == DS.NONE
    assert h_big.compression == DS.DEFLATE_RAW and h_big.HasField("inline_content")
    assert h_big.total_length == len(text.encode())  # the uncompressed size
    assert h_plain.compression == DS.NONE and not h_plain.HasField("inline_content")

    # one recipient without the capability: no compression for anyone
    hub.join("dave")
    hub.wire.clear()
    await alice.manager.send_text(text, topic="t")
    (h,) = headers()
    assert h.compression == DS.NONE and not h.HasField("inline_content")
    # one recipient at level 0: legacy format, even for a tiny text
    hub.join("old", protocol=0)
    hub.wire.clear()
    await alice.manager.send_text("x", topic="t", destination_identities=["bob", "old"])
    (h,) = headers()
    assert not h.HasField("inline_content")


async def test_compressed_chunked_bytes_round_trip() -> None:
    cap = models_pb.ClientInfo.CAP_COMPRESSION_DEFLATE_RAW
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob", capabilities=(cap,))
    got: dict = {}

    async def consume(reader: ByteStreamReader, who: str) -> None:
        got[reader.info.stream_id] = b"".join([c async for c in reader])

    bob.manager.register_byte_stream_handler(
        "b", lambda r, w: asyncio.ensure_future(consume(r, w)))
    rng = random.Random(4)
    data = bytes(rng.choice(b"abcd") for _ in range(600_000))  # ~4x compressible
    info = await alice.manager.send_bytes(data, topic="b", destination_identities=["bob"])
    await _wait_for(lambda: info.stream_id in got)
    assert got[info.stream_id] == data
    sent = hub.sent_by("alice")
    assert sent[0].stream_header.compression == DS.DEFLATE_RAW
    wire_bytes = sum(len(p.stream_chunk.content) for p in sent if p.HasField("stream_chunk"))
    assert wire_bytes < len(data) // 2
