"""RPC interceptors between two aiolivekit rooms through a real server (both servers):
the outgoing chain can rewrite the call and the result, the incoming chain sees the
invocation and can answer with an RpcError instead of the handler; the first interceptor
added is outermost; adding twice is a no-op; a removed one no longer runs; handlers
registered before an interceptor was added go through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from aiolivekit import Room, RpcCallInfo, RpcError, RpcInterceptor, RpcInvocationData
from aiolivekit.testing.servers import ServerInfo


class Tagging(RpcInterceptor):
    """Records what it sees and tags payloads and results with its name."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def intercept_outgoing(self, call: RpcCallInfo,
                                 next: Callable[[RpcCallInfo], Awaitable[str]]) -> str:
        self.log.append(f"{self.name}>out {call.method} {call.payload}")
        call.payload = f"{call.payload}+{self.name}"
        result = await next(call)
        self.log.append(f"{self.name}<out {result}")
        return f"{result}+{self.name}"

    async def intercept_incoming(
            self, invocation: RpcInvocationData,
            next: Callable[[RpcInvocationData], Awaitable[str | None]]) -> str | None:
        self.log.append(f"{self.name}>in {invocation.caller_identity} {invocation.payload}")
        if invocation.payload.startswith("forbidden"):
            raise RpcError(4003, "refused by " + self.name)
        result = await next(invocation)
        return f"{result}@{self.name}"


async def _connect(server: ServerInfo, identity: str) -> Room:
    room = Room()
    await asyncio.wait_for(room.connect(server.url, server.token(identity, room="rpc-x")), 20)
    return room


@pytest.fixture
async def pair(any_server: ServerInfo) -> AsyncIterator[tuple[Room, Room]]:
    a = await _connect(any_server, "alice")
    b = await _connect(any_server, "bob")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not ("bob" in a.remote_participants and "alice" in b.remote_participants):
            assert loop.time() < deadline, "participants did not see each other"
            await asyncio.sleep(0.02)
        yield a, b
    finally:
        await asyncio.gather(a.disconnect(), b.disconnect(), return_exceptions=True)


async def test_interceptor_chains_both_ways(pair: tuple[Room, Room]) -> None:
    alice, bob = pair
    log: list[str] = []
    seen: list[str] = []

    @bob.local_participant.register_rpc_method("echo")
    def echo(data: RpcInvocationData) -> str:  # registered before the interceptor
        seen.append(data.payload)
        return data.payload.upper()

    outer, inner = Tagging("A1", log), Tagging("A2", log)
    alice.local_participant.add_rpc_interceptor(outer)
    alice.local_participant.add_rpc_interceptor(inner)
    alice.local_participant.add_rpc_interceptor(outer)  # identity dedupe: no-op
    bob.local_participant.add_rpc_interceptor(Tagging("B", log))

    result = await asyncio.wait_for(alice.local_participant.perform_rpc(
        destination_identity="bob", method="echo", payload="hi"), 20)
    # payload tagged outermost first; handler result tagged by bob's, then inner, outer
    assert seen == ["hi+A1+A2"]
    assert result == "HI+A1+A2@B+A2+A1"
    assert log == ["A1>out echo hi", "A2>out echo hi+A1", "B>in alice hi+A1+A2",
                   "A2<out HI+A1+A2@B", "A1<out HI+A1+A2@B+A2"]

    # an incoming interceptor may answer with an RpcError: the handler does not run
    with pytest.raises(RpcError) as err:
        await asyncio.wait_for(alice.local_participant.perform_rpc(
            destination_identity="bob", method="echo", payload="forbidden"), 20)
    assert (err.value.code, err.value.message) == (4003, "refused by B")
    assert seen == ["hi+A1+A2"]

    # removed interceptors no longer run
    alice.local_participant.remove_rpc_interceptor(outer)
    alice.local_participant.remove_rpc_interceptor(inner)
    log.clear()
    assert await asyncio.wait_for(alice.local_participant.perform_rpc(
        destination_identity="bob", method="echo", payload="x"), 20) == "X@B"
    assert log == ["B>in alice x"]
    with pytest.raises(TypeError):
        alice.local_participant.add_rpc_interceptor(object())  # type: ignore[arg-type]
