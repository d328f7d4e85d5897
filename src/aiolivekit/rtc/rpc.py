"""``livekit.rtc.rpc`` names: RPC types, from aiolivekit's implementation."""

from __future__ import annotations

from ..data.rpc import (
    RpcError,
    RpcInvocationData,
)
from ..rpc_interceptor import (
    RpcCallInfo,
    RpcInterceptor,
)

__all__ = [
    "RpcCallInfo",
    "RpcError",
    "RpcInterceptor",
    "RpcInvocationData",
]
