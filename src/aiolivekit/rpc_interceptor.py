"""``RpcCallInfo`` and ``RpcInterceptor``: the types of ``livekit.rtc``'s RPC interceptor
chain. The chain itself (``LocalParticipant.add_rpc_interceptor``) is not wired into
aiolivekit's RPC layer yet: these classes exist so that code defining interceptors
imports and type-checks; registering one is left for a later session (issue 15)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RpcCallInfo", "RpcInterceptor"]

logger = logging.getLogger(__name__)


@dataclass
class RpcCallInfo:
    """An outgoing RPC call as an interceptor sees it."""

    destination_identity: str
    method: str
    payload: str
    response_timeout: float | None = None
    max_round_trip_latency: float | None = None


class RpcInterceptor:
    """Base class of an RPC interceptor: override either method; the defaults pass the
    call on unchanged (``await next(...)``)."""

    async def intercept_outgoing(self, call: RpcCallInfo,
                                 next: Callable[[RpcCallInfo], Awaitable[str]]) -> str:
        return await next(call)

    async def intercept_incoming(self, invocation: Any,
                                 next: Callable[[Any], Awaitable[str | None]]) -> str | None:
        return await next(invocation)
