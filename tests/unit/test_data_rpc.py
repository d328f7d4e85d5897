"""RPC between two DataManagers back to back (v1 packets and v2 data streams)."""

from __future__ import annotations

import asyncio
import json
import random
import time
import zlib

import pytest
from livekit.protocol import models as models_pb
from test_data_support import Hub

from aiolivekit.data.rpc import (
    ATTR_METHOD,
    ATTR_REQUEST_ID,
    ATTR_RESPONSE_TIMEOUT_MS,
    ATTR_VERSION,
    MAX_PAYLOAD_BYTES,
    RpcError,
    RpcInvocationData,
)

Code = RpcError.ErrorCode


def _kinds(hub: Hub, who: str) -> list[str]:
    return [p.WhichOneof("value") for p in hub.sent_by(who)]


def test_error_codes_and_messages() -> None:
    assert Code.UNSUPPORTED_METHOD == 1400 and Code.UNSUPPORTED_VERSION == 1404
    assert Code.APPLICATION_ERROR == 1500 and Code.SEND_FAILED == 1505
    assert {int(c) for c in Code} == set(range(1400, 1405)) | set(range(1500, 1506))
    assert set(RpcError.ErrorMessage) == set(Code)
    err = RpcError(42, "boom", "{}")
    assert (err.code, err.message, err.data, str(err)) == (42, "boom", "{}", "boom")
    proto = RpcError(7, "m" * 400, None)._to_proto()
    assert len(proto.message) == 256 and proto.data == ""
    assert RpcError._from_proto(models_pb.RpcError(code=3, message="x")).data == ""


@pytest.mark.parametrize("protocol", [0, 1, 2])
async def test_rpc_success_and_wire_format(protocol: int) -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=protocol), hub.join("bob", protocol=protocol)
    seen: list[RpcInvocationData] = []

    async def greet(data: RpcInvocationData) -> str:
        seen.append(data)
        return f"hello {data.payload} from {data.caller_identity}"

    bob.manager.register_rpc_method("greet", greet)
    out = await alice.manager.perform_rpc(
        destination_identity="bob", method="greet", payload="world", response_timeout=10
    )
    assert out == "hello world from alice"
    (inv,) = seen
    assert inv.caller_identity == "alice" and inv.method == "greet"
    assert inv.response_timeout == pytest.approx(3.0)  # 10 s minus the 7 s ack budget
    sent_a, sent_b = _kinds(hub, "alice"), _kinds(hub, "bob")
    if protocol == 0:
        assert sent_a == ["rpc_request"]
        req = hub.sent_by("alice")[0]
        assert list(req.destination_identities) == ["bob"]
        assert (req.rpc_request.version, req.rpc_request.response_timeout_ms) == (1, 3000)
        assert req.rpc_request.id == inv.request_id
        assert sent_b == ["rpc_ack", "rpc_response"]
    else:
        assert "rpc_request" not in sent_a and sent_a[0] == "stream_header"
        header = hub.sent_by("alice")[0].stream_header
        # level 2 peers get single-packet streams, level 1 peers header/chunk/trailer
        assert header.HasField("inline_content") == (protocol == 2)
        assert sent_a == (["stream_header"] if protocol == 2
                          else ["stream_header", "stream_chunk", "stream_trailer"])
        assert header.topic == "lk.rpc_request"
        assert header.attributes[ATTR_REQUEST_ID] == inv.request_id
        assert header.attributes[ATTR_METHOD] == "greet"
        assert header.attributes[ATTR_RESPONSE_TIMEOUT_MS] == "3000"
        assert header.attributes[ATTR_VERSION] == "2"
        assert sent_b[0] == "rpc_ack" and "rpc_response" not in sent_b
        resp = next(p for p in hub.sent_by("bob") if p.HasField("stream_header")).stream_header
        assert resp.topic == "lk.rpc_response"
        assert resp.attributes[ATTR_REQUEST_ID] == inv.request_id


async def test_v2_caller_falls_back_to_v1_for_legacy_callee() -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=2), hub.join("bob", protocol=0)
    bob.manager.register_rpc_method("m", lambda d: d.payload.upper())
    assert await alice.manager.perform_rpc(destination_identity="bob", method="m",
                                           payload="abc") == "ABC"
    assert _kinds(hub, "alice") == ["rpc_request"]
    # and a v1 request is answered with v1 packets even by a v2 callee
    alice.manager.register_rpc_method("m", lambda d: d.payload[::-1])
    assert await bob.manager.perform_rpc(destination_identity="alice", method="m",
                                         payload="abc") == "cba"
    assert _kinds(hub, "alice")[-2:] == ["rpc_ack", "rpc_response"]


@pytest.mark.parametrize("protocol", [0, 2])
async def test_rpc_error_carried_across(protocol: int) -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=protocol), hub.join("bob", protocol=protocol)

    def fail(data: RpcInvocationData) -> str:
        raise RpcError(101, "Test error message", json.dumps({"why": "because"}))

    bob.manager.register_rpc_method("fail", fail)
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(destination_identity="bob", method="fail", payload="")
    assert (info.value.code, info.value.message) == (101, "Test error message")
    assert json.loads(info.value.data or "") == {"why": "because"}
    assert "rpc_response" in _kinds(hub, "bob")  # errors always travel as v1 packets


@pytest.mark.parametrize("protocol", [0, 2])
async def test_unsupported_method_and_application_error(protocol: int) -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=protocol), hub.join("bob", protocol=protocol)
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(destination_identity="bob", method="nope", payload="")
    assert info.value.code == Code.UNSUPPORTED_METHOD
    assert info.value.message == "Method not supported at destination"

    async def broken(data: RpcInvocationData) -> str:
        raise KeyError("secret detail")

    bob.manager.register_rpc_method("broken", broken)
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(destination_identity="bob", method="broken", payload="")
    assert info.value.code == Code.APPLICATION_ERROR
    assert "secret" not in (info.value.message + (info.value.data or ""))


async def test_handler_deadline_cancels_and_caller_gets_response_timeout() -> None:
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob")
    state: dict[str, object] = {}

    async def slow(data: RpcInvocationData) -> str:
        state["started"] = time.monotonic()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] = time.monotonic()
            raise
        return "late"

    bob.manager.register_rpc_method("slow", slow)
    t0 = time.monotonic()
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(
            destination_identity="bob", method="slow", payload="", response_timeout=1.5
        )
    elapsed = time.monotonic() - t0
    assert info.value.code == Code.RESPONSE_TIMEOUT
    assert "cancelled" in state
    assert 0.9 < elapsed < 1.6  # callee deadline is max(1.5 - 7, 1) = 1 s
    responses = [p for p in hub.sent_by("bob") if p.HasField("rpc_response")]
    assert len(responses) == 1 and responses[0].rpc_response.error.code == Code.RESPONSE_TIMEOUT


async def test_caller_response_timeout_when_response_never_comes() -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=0), hub.join("bob", protocol=0)
    # bob acks but its responses are lost
    bob.manager.register_rpc_method("m", lambda d: "x")
    real = hub.deliver

    def lossy(sender: str, raw: bytes) -> None:
        pkt = models_pb.DataPacket.FromString(raw)
        if pkt.HasField("rpc_response"):
            return
        real(sender, raw)

    hub.deliver = lossy  # type: ignore[method-assign]
    t0 = time.monotonic()
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(
            destination_identity="bob", method="m", payload="", response_timeout=0.3
        )
    assert info.value.code == Code.RESPONSE_TIMEOUT
    assert time.monotonic() - t0 < 1.0


async def test_connection_timeout_without_ack() -> None:
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob")
    bob.manager.register_rpc_method("m", lambda d: "x")
    hub.drop_from.add("bob")  # bob's ack and response vanish
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(
            destination_identity="bob", method="m", payload="", max_round_trip_latency=0.2
        )
    assert info.value.code == Code.CONNECTION_TIMEOUT
    assert alice.manager._rpc_client.pending_count == 0


async def test_recipient_not_in_room_and_leaving() -> None:
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob")
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(destination_identity="ghost", method="m", payload="")
    assert info.value.code == Code.RECIPIENT_DISCONNECTED
    assert hub.sent_by("alice") == []

    started = asyncio.Event()

    async def hang(data: RpcInvocationData) -> str:
        started.set()
        await asyncio.sleep(30)
        return ""

    bob.manager.register_rpc_method("hang", hang)
    call = asyncio.ensure_future(
        alice.manager.perform_rpc(destination_identity="bob", method="hang", payload="")
    )
    await asyncio.wait_for(started.wait(), 2)
    hub.leave("bob")
    with pytest.raises(RpcError) as info:
        await asyncio.wait_for(call, 1)
    assert info.value.code == Code.RECIPIENT_DISCONNECTED


async def test_request_payload_too_large_before_sending() -> None:
    hub = Hub()
    alice, _bob = hub.join("alice", protocol=0), hub.join("bob", protocol=0)
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(
            destination_identity="bob", method="m", payload="é" * (MAX_PAYLOAD_BYTES // 2 + 1)
        )
    assert info.value.code == Code.REQUEST_PAYLOAD_TOO_LARGE
    assert hub.sent_by("alice") == []


async def test_large_payloads_over_v2_and_response_too_large_over_v1() -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=2), hub.join("bob", protocol=2)
    bob.manager.register_rpc_method("echo2", lambda d: d.payload * 2)
    big = "x" * 20_000
    assert await alice.manager.perform_rpc(
        destination_identity="bob", method="echo2", payload=big) == big * 2

    legacy = hub.join("legacy", protocol=0)
    legacy.manager.register_rpc_method("echo2", lambda d: d.payload * 2)
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(
            destination_identity="legacy", method="echo2", payload="y" * 10_000)
    assert info.value.code == Code.RESPONSE_PAYLOAD_TOO_LARGE


async def test_many_concurrent_calls_both_directions() -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=2), hub.join("bob", protocol=0)
    rng = random.Random(5)

    def make(name: str):  # type: ignore[no-untyped-def]
        async def handler(data: RpcInvocationData) -> str:
            await asyncio.sleep(rng.random() * 0.05)
            return f"{name}:{data.payload}"
        return handler

    alice.manager.register_rpc_method("id", make("alice"))
    bob.manager.register_rpc_method("id", make("bob"))
    calls = []
    for i in range(150):
        calls.append(alice.manager.perform_rpc(destination_identity="bob", method="id",
                                               payload=str(i)))
        calls.append(bob.manager.perform_rpc(destination_identity="alice", method="id",
                                             payload=str(i)))
    results = await asyncio.wait_for(asyncio.gather(*calls), 10)
    for i in range(150):
        assert results[2 * i] == f"bob:{i}"
        assert results[2 * i + 1] == f"alice:{i}"
    assert alice.manager._rpc_client.pending_count == 0
    assert bob.manager._rpc_client.pending_count == 0


async def test_close_fails_pending_and_cancels_handlers() -> None:
    hub = Hub()
    alice, bob = hub.join("alice"), hub.join("bob")
    cancelled = asyncio.Event()

    async def hang(data: RpcInvocationData) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return ""

    bob.manager.register_rpc_method("hang", hang)
    alice.manager.register_rpc_method("hang", hang)
    outgoing = asyncio.ensure_future(
        alice.manager.perform_rpc(destination_identity="bob", method="hang", payload="")
    )
    await asyncio.sleep(0.05)
    bob.manager.close()  # bob's room disconnects: its handler is cancelled
    await asyncio.wait_for(cancelled.wait(), 1)
    alice.manager.close()  # alice's room disconnects: her pending call fails
    with pytest.raises(RpcError) as info:
        await asyncio.wait_for(outgoing, 1)
    assert info.value.code == Code.RECIPIENT_DISCONNECTED
    with pytest.raises(RpcError) as info:
        await alice.manager.perform_rpc(destination_identity="bob", method="hang", payload="")
    assert info.value.code == Code.SEND_FAILED


async def test_unsupported_version_v1() -> None:
    hub = Hub()
    _alice, bob = hub.join("alice", protocol=0), hub.join("bob", protocol=0)
    bob.manager.register_rpc_method("m", lambda d: "x")
    packet = models_pb.DataPacket(participant_identity="alice")
    packet.destination_identities.append("bob")
    packet.rpc_request.id = "req-9"
    packet.rpc_request.method = "m"
    packet.rpc_request.version = 9
    packet.rpc_request.response_timeout_ms = 5000
    bob.manager.handle_packet(packet)
    await asyncio.sleep(0.05)
    resp = [p.rpc_response for p in hub.sent_by("bob") if p.HasField("rpc_response")]
    assert [(r.request_id, r.error.code) for r in resp] == [("req-9", Code.UNSUPPORTED_VERSION)]
    assert _kinds(hub, "bob")[0] == "rpc_ack"


async def test_compressed_payloads_are_inflated() -> None:
    hub = Hub()
    alice, bob = hub.join("alice", protocol=0), hub.join("bob", protocol=0)
    seen: list[str] = []
    bob.manager.register_rpc_method("m", lambda d: seen.append(d.payload) or "ok")
    comp = zlib.compressobj(wbits=-15)
    text = "compressé " * 3000
    packet = models_pb.DataPacket(participant_identity="alice")
    packet.rpc_request.id = "req-z"
    packet.rpc_request.method = "m"
    packet.rpc_request.version = 1
    packet.rpc_request.response_timeout_ms = 5000
    packet.rpc_request.compressed_payload = comp.compress(text.encode()) + comp.flush()
    bob.manager.handle_packet(packet)
    await asyncio.sleep(0.05)
    assert seen == [text]
    # and a compressed response resolves a pending call
    call = asyncio.ensure_future(alice.manager.perform_rpc(destination_identity="bob",
                                                           method="m", payload="x"))
    await asyncio.sleep(0.02)
    req_id = next(p.rpc_request.id for p in hub.sent_by("alice") if p.HasField("rpc_request"))
    hub.drop_from.add("bob")
    for kind in ("ack", "response"):
        pkt = models_pb.DataPacket(participant_identity="bob")
        if kind == "ack":
            pkt.rpc_ack.request_id = req_id
        else:
            c = zlib.compressobj(wbits=-15)
            pkt.rpc_response.request_id = req_id
            pkt.rpc_response.compressed_payload = c.compress(b"big answer") + c.flush()
        alice.manager.handle_packet(pkt)
    assert await asyncio.wait_for(call, 1) in ("ok", "big answer")
