"""RPC interceptors: ``RpcCallInfo``, ``RpcInterceptor`` and the chain
``LocalParticipant.add_rpc_interceptor`` runs around every RPC it performs or handles.

Interceptors run in the order they were added, the first one outermost; each gets the
call (outgoing: an ``RpcCallInfo``; incoming: the ``RpcInvocationData``) and ``next``,
and may change the call, the result, or raise ``RpcError`` instead of calling ``next``.
Adding the same instance twice is a no-op. The chain is read at each call, so handlers
registered before an interceptor was added go through it too.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, overload

from .data.api import LocalParticipantDataMixin
from .data.rpc import RpcHandler, RpcInvocationData

__all__ = ["RpcCallInfo", "RpcInterceptor", "RpcInterceptorMixin"]

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

    async def intercept_incoming(
            self, invocation: RpcInvocationData,
            next: Callable[[RpcInvocationData], Awaitable[str | None]]) -> str | None:
        return await next(invocation)


class RpcInterceptorMixin(LocalParticipantDataMixin):
    """``LocalParticipant``'s RPC methods with the interceptor chain around them."""

    _rpc_interceptor_list: list[RpcInterceptor] | None = None

    @property
    def _rpc_interceptors(self) -> list[RpcInterceptor]:
        if self._rpc_interceptor_list is None:
            self._rpc_interceptor_list = []
        return self._rpc_interceptor_list

    def add_rpc_interceptor(self, interceptor: RpcInterceptor) -> None:
        """Wrap every RPC performed or handled from now on (first added = outermost)."""
        if not isinstance(interceptor, RpcInterceptor):
            raise TypeError(f"expected an RpcInterceptor, got {type(interceptor).__name__}")
        if not any(i is interceptor for i in self._rpc_interceptors):
            self._rpc_interceptors.append(interceptor)

    def remove_rpc_interceptor(self, interceptor: RpcInterceptor) -> None:
        """Take ``interceptor`` out of the chain (no error if it is not in it)."""
        self._rpc_interceptor_list = [i for i in self._rpc_interceptors if i is not interceptor]

    async def perform_rpc(
        self,
        *,
        destination_identity: str,
        method: str,
        payload: str,
        response_timeout: float | None = None,
        max_round_trip_latency: float | None = None,
    ) -> str:
        """Call ``method`` on ``destination_identity`` through the interceptors; returns
        its response or raises RpcError."""
        chain = list(self._rpc_interceptors)
        send = super().perform_rpc

        async def step(index: int, call: RpcCallInfo) -> str:
            if index == len(chain):
                return await send(
                    destination_identity=call.destination_identity, method=call.method,
                    payload=call.payload, response_timeout=call.response_timeout,
                    max_round_trip_latency=call.max_round_trip_latency)
            return await chain[index].intercept_outgoing(call, lambda c: step(index + 1, c))

        return await step(0, RpcCallInfo(destination_identity, method, payload,
                                         response_timeout, max_round_trip_latency))

    @overload
    def register_rpc_method(
        self, method_name: str, handler: None = None
    ) -> Callable[[RpcHandler], RpcHandler]: ...

    @overload
    def register_rpc_method(self, method_name: str, handler: RpcHandler) -> None: ...

    def register_rpc_method(
        self, method_name: str, handler: RpcHandler | None = None
    ) -> Callable[[RpcHandler], RpcHandler] | None:
        """Register a (sync or async) handler, run through the interceptors; usable as
        ``@lp.register_rpc_method("name")``."""
        if handler is None:

            def decorator(fn: RpcHandler) -> RpcHandler:
                super(RpcInterceptorMixin, self).register_rpc_method(
                    method_name, self._intercepted(fn))
                return fn

            return decorator
        super().register_rpc_method(method_name, self._intercepted(handler))
        return None

    def _intercepted(self, handler: RpcHandler) -> RpcHandler:
        async def run(data: RpcInvocationData) -> str | None:
            chain = list(self._rpc_interceptors)

            async def step(index: int, invocation: RpcInvocationData) -> str | None:
                if index == len(chain):
                    result: Any = handler(invocation)
                    if inspect.isawaitable(result):
                        result = await result
                    return result  # type: ignore[no-any-return]
                return await chain[index].intercept_incoming(
                    invocation, lambda i: step(index + 1, i))

            return await step(0, data)

        return run
