"""Remote procedure calls between participants: errors, call table, caller and callee.

Wire protocol (interoperable with the official SDKs):

* **v1** -- ``rpc_request{id, method, payload <= 15360 bytes, response_timeout_ms,
  version=1}`` packet; the callee answers ``rpc_ack{request_id}`` at once, then
  ``rpc_response{request_id, payload | error}``. All reliable, addressed to one identity.
* **v2** (used only when the other side announces client protocol >= 1) -- the request
  is a text stream on topic ``lk.rpc_request`` with attributes ``lk.rpc_request_id``,
  ``lk.rpc_request_method``, ``lk.rpc_request_response_timeout_ms`` and
  ``lk.rpc_request_version="2"``; a successful response is a text stream on
  ``lk.rpc_response`` with ``lk.rpc_request_id``; acks and *error* responses are
  always v1 packets. A v1 request is always answered with v1 packets. v2 has no
  payload size limit.

Timing: the caller waits ``max_round_trip_latency`` (7 s) for the ack
(``CONNECTION_TIMEOUT``), then ``response_timeout`` (15 s) for the response
(``RESPONSE_TIMEOUT``). It tells the callee ``max(response_timeout - 7 s, 1 s)``; the
callee cancels its handler at that deadline and answers ``RESPONSE_TIMEOUT`` itself.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from livekit.protocol import models as models_pb

from ..errors import AioLiveKitError

__all__ = [
    "ATTR_METHOD",
    "ATTR_REQUEST_ID",
    "ATTR_RESPONSE_TIMEOUT_MS",
    "ATTR_VERSION",
    "DEFAULT_MAX_ROUND_TRIP_LATENCY",
    "DEFAULT_RESPONSE_TIMEOUT",
    "MAX_PAYLOAD_BYTES",
    "RPC_REQUEST_TOPIC",
    "RPC_RESPONSE_TOPIC",
    "RpcClient",
    "RpcError",
    "RpcHandler",
    "RpcInvocationData",
    "RpcServer",
]

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 15360
"""Largest v1 request/response payload, in UTF-8 bytes."""
RPC_VERSION_V1 = 1
RPC_VERSION_V2 = 2
RPC_REQUEST_TOPIC = "lk.rpc_request"
RPC_RESPONSE_TOPIC = "lk.rpc_response"
ATTR_REQUEST_ID = "lk.rpc_request_id"
ATTR_METHOD = "lk.rpc_request_method"
ATTR_RESPONSE_TIMEOUT_MS = "lk.rpc_request_response_timeout_ms"
ATTR_VERSION = "lk.rpc_request_version"
DEFAULT_RESPONSE_TIMEOUT = 15.0
DEFAULT_MAX_ROUND_TRIP_LATENCY = 7.0
MIN_EFFECTIVE_TIMEOUT = 1.0
MAX_MESSAGE_BYTES = 256


class RpcError(AioLiveKitError):
    """An RPC failed. Raise it in a handler to send ``code``/``message``/``data`` to the caller.

    Codes 1001-1999 are reserved for the built-in errors of :class:`RpcError.ErrorCode`.
    """

    class ErrorCode(enum.IntEnum):
        APPLICATION_ERROR = 1500
        CONNECTION_TIMEOUT = 1501
        RESPONSE_TIMEOUT = 1502
        RECIPIENT_DISCONNECTED = 1503
        RESPONSE_PAYLOAD_TOO_LARGE = 1504
        SEND_FAILED = 1505

        UNSUPPORTED_METHOD = 1400
        RECIPIENT_NOT_FOUND = 1401
        REQUEST_PAYLOAD_TOO_LARGE = 1402
        UNSUPPORTED_SERVER = 1403
        UNSUPPORTED_VERSION = 1404

    ErrorMessage: ClassVar[dict[RpcError.ErrorCode, str]] = {
        ErrorCode.APPLICATION_ERROR: "Application error in method handler",
        ErrorCode.CONNECTION_TIMEOUT: "Connection timeout",
        ErrorCode.RESPONSE_TIMEOUT: "Response timeout",
        ErrorCode.RECIPIENT_DISCONNECTED: "Recipient disconnected",
        ErrorCode.RESPONSE_PAYLOAD_TOO_LARGE: "Response payload too large",
        ErrorCode.SEND_FAILED: "Failed to send",
        ErrorCode.UNSUPPORTED_METHOD: "Method not supported at destination",
        ErrorCode.RECIPIENT_NOT_FOUND: "Recipient not found",
        ErrorCode.REQUEST_PAYLOAD_TOO_LARGE: "Request payload too large",
        ErrorCode.UNSUPPORTED_SERVER: "RPC not supported by server",
        ErrorCode.UNSUPPORTED_VERSION: "Unsupported RPC version",
    }

    def __init__(
        self, code: int | RpcError.ErrorCode, message: str, data: str | None = None
    ) -> None:
        super().__init__(message)
        self._code = int(code)
        self._message = message
        self._data = data

    @property  # type: ignore[override]
    def code(self) -> int:
        return self._code

    @property  # type: ignore[override]
    def message(self) -> str:  # type: ignore[override]
        return self._message

    @message.setter
    def message(self, value: str) -> None:  # AioLiveKitError.__init__ assigns it
        self._message = value

    @property
    def data(self) -> str | None:
        return self._data

    def __repr__(self) -> str:
        return f"RpcError(code={self._code}, message={self._message!r}, data={self._data!r})"

    @classmethod
    def _built_in(cls, code: RpcError.ErrorCode, data: str | None = None) -> RpcError:
        return cls(code, cls.ErrorMessage[code], data)

    @classmethod
    def _from_proto(cls, proto: models_pb.RpcError) -> RpcError:
        return cls(proto.code, proto.message, proto.data)  # "" when absent, like livekit.rtc

    def _to_proto(self) -> models_pb.RpcError:
        message = _truncate_utf8(self._message, MAX_MESSAGE_BYTES)
        data = _truncate_utf8(self._data, MAX_PAYLOAD_BYTES) if self._data else ""
        return models_pb.RpcError(code=self._code, message=message, data=data)


@dataclass
class RpcInvocationData:
    """What a method handler receives."""

    request_id: str
    caller_identity: str
    payload: str
    response_timeout: float
    method: str = ""


RpcHandler = Callable[[RpcInvocationData], Awaitable[str | None] | str | None]


def _truncate_utf8(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def byte_length(text: str) -> int:
    return len(text.encode("utf-8"))


# --------------------------------------------------------------------------- transport


class RpcTransport:
    """What the RPC client/server need from the data layer (implemented by DataManager)."""

    local_client_protocol: int = 0

    async def send_packet(self, packet: models_pb.DataPacket) -> None:
        raise NotImplementedError

    async def send_rpc_stream(
        self, text: str, *, topic: str, destination: str, attributes: dict[str, str]
    ) -> None:
        raise NotImplementedError

    def remote_client_protocol(self, identity: str) -> int | None:
        raise NotImplementedError


def _addressed(identity: str) -> models_pb.DataPacket:
    packet = models_pb.DataPacket(kind=models_pb.DataPacket.RELIABLE)
    packet.destination_identities.append(identity)
    return packet


def ack_packet(destination: str, request_id: str) -> models_pb.DataPacket:
    packet = _addressed(destination)
    packet.rpc_ack.request_id = request_id
    return packet


def response_packet(
    destination: str, request_id: str, payload: str | None, error: RpcError | None
) -> models_pb.DataPacket:
    packet = _addressed(destination)
    packet.rpc_response.request_id = request_id
    if error is not None:
        packet.rpc_response.error.CopyFrom(error._to_proto())
    else:
        packet.rpc_response.payload = payload or ""
    return packet


# --------------------------------------------------------------------------- caller


@dataclass
class _PendingCall:
    destination: str
    ack: asyncio.Future[None]
    response: asyncio.Future[str]


class RpcClient:
    """Outgoing calls: a table of pending requests matched by request id."""

    def __init__(self, transport: RpcTransport) -> None:
        self._transport = transport
        self._pending: dict[str, _PendingCall] = {}

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    async def perform(
        self,
        *,
        destination_identity: str,
        method: str,
        payload: str,
        response_timeout: float | None = None,
        max_round_trip_latency: float | None = None,
    ) -> str:
        response_timeout = DEFAULT_RESPONSE_TIMEOUT if response_timeout is None else response_timeout
        ack_timeout = (
            DEFAULT_MAX_ROUND_TRIP_LATENCY
            if max_round_trip_latency is None
            else max_round_trip_latency
        )
        if response_timeout <= 0 or ack_timeout <= 0:
            raise ValueError("timeouts must be positive")
        remote = self._transport.remote_client_protocol(destination_identity)
        use_v2 = (
            remote is not None
            and remote >= 1
            and self._transport.local_client_protocol >= 1
        )
        if not use_v2 and byte_length(payload) > MAX_PAYLOAD_BYTES:
            raise RpcError._built_in(RpcError.ErrorCode.REQUEST_PAYLOAD_TOO_LARGE)
        if remote is None:
            raise RpcError._built_in(RpcError.ErrorCode.RECIPIENT_DISCONNECTED)

        request_id = str(uuid.uuid4())
        effective_ms = int(max(response_timeout - ack_timeout, MIN_EFFECTIVE_TIMEOUT) * 1000)
        loop = asyncio.get_running_loop()
        call = _PendingCall(destination_identity, loop.create_future(), loop.create_future())
        self._pending[request_id] = call  # registered before sending: replies may be quick
        try:
            try:
                if use_v2:
                    await self._transport.send_rpc_stream(
                        payload,
                        topic=RPC_REQUEST_TOPIC,
                        destination=destination_identity,
                        attributes={
                            ATTR_REQUEST_ID: request_id,
                            ATTR_METHOD: method,
                            ATTR_RESPONSE_TIMEOUT_MS: str(effective_ms),
                            ATTR_VERSION: str(RPC_VERSION_V2),
                        },
                    )
                else:
                    packet = _addressed(destination_identity)
                    req = packet.rpc_request
                    req.id = request_id
                    req.method = method
                    req.payload = payload
                    req.response_timeout_ms = effective_ms
                    req.version = RPC_VERSION_V1
                    await self._transport.send_packet(packet)
            except RpcError:
                raise
            except Exception as exc:
                raise RpcError._built_in(RpcError.ErrorCode.SEND_FAILED, str(exc)) from exc

            try:
                await asyncio.wait_for(asyncio.shield(call.ack), ack_timeout)
            except asyncio.TimeoutError:
                raise RpcError._built_in(RpcError.ErrorCode.CONNECTION_TIMEOUT) from None
            try:
                return await asyncio.wait_for(asyncio.shield(call.response), response_timeout)
            except asyncio.TimeoutError:
                raise RpcError._built_in(RpcError.ErrorCode.RESPONSE_TIMEOUT) from None
        finally:
            self._pending.pop(request_id, None)
            for fut in (call.ack, call.response):
                if not fut.done():
                    fut.cancel()
                elif not fut.cancelled():
                    fut.exception()  # mark retrieved

    def handle_ack(self, request_id: str) -> None:
        call = self._pending.get(request_id)
        if call is None:
            logger.debug("ack for unknown RPC request %s", request_id)
            return
        if not call.ack.done():
            call.ack.set_result(None)

    def handle_response(
        self, request_id: str, payload: str | None, error: RpcError | None, sender: str = ""
    ) -> None:
        call = self._pending.get(request_id)
        if call is None:
            logger.debug("response for unknown RPC request %s", request_id)
            return
        if sender and sender != call.destination:
            logger.warning("RPC response for %s from unexpected %s dropped", request_id, sender)
            return
        if not call.ack.done():  # a response implies the ack
            call.ack.set_result(None)
        if call.response.done():
            return
        if error is not None:
            call.response.set_exception(error)
        else:
            call.response.set_result(payload or "")

    def handle_response_packet(self, response: models_pb.RpcResponse, sender: str) -> None:
        which = response.WhichOneof("value")
        if which == "error":
            self.handle_response(
                response.request_id, None, RpcError._from_proto(response.error), sender
            )
        elif which == "payload":
            self.handle_response(response.request_id, response.payload, None, sender)
        elif which == "compressed_payload":
            text = _inflate_text(response.compressed_payload)
            if text is None:
                err = RpcError._built_in(RpcError.ErrorCode.APPLICATION_ERROR, "bad payload")
                self.handle_response(response.request_id, None, err, sender)
            else:
                self.handle_response(response.request_id, text, None, sender)
        else:
            self.handle_response(response.request_id, "", None, sender)

    def participant_left(self, identity: str) -> None:
        err = RpcError._built_in(RpcError.ErrorCode.RECIPIENT_DISCONNECTED)
        for call in self._pending.values():
            if call.destination == identity:
                self._fail(call, err)

    def close(self) -> None:
        err = RpcError._built_in(RpcError.ErrorCode.RECIPIENT_DISCONNECTED)
        for call in self._pending.values():
            self._fail(call, err)

    @staticmethod
    def _fail(call: _PendingCall, err: RpcError) -> None:
        if not call.ack.done():
            call.ack.set_result(None)
        if not call.response.done():
            call.response.set_exception(err)


# --------------------------------------------------------------------------- callee


class RpcServer:
    """Incoming calls: registered handlers, ack, deadline, response."""

    def __init__(self, transport: RpcTransport) -> None:
        self._transport = transport
        self._handlers: dict[str, RpcHandler] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def register(self, method: str, handler: RpcHandler) -> None:
        if not callable(handler):
            raise TypeError("RPC handler must be callable")
        self._handlers[method] = handler

    def unregister(self, method: str) -> None:
        self._handlers.pop(method, None)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def handle_request_packet(self, request: models_pb.RpcRequest, caller: str) -> None:
        """A v1 ``rpc_request`` arrived: ack, run, answer with v1 packets."""
        self._spawn(self._serve_v1(request, caller))

    def handle_request_stream(self, reader: Any, caller: str) -> None:
        """A v2 request text stream arrived (``reader`` is a TextStreamReader)."""
        self._spawn(self._serve_v2(reader, caller))

    async def _send(self, packet: models_pb.DataPacket, what: str) -> None:
        try:
            await self._transport.send_packet(packet)
        except Exception as exc:  # noqa: BLE001 - the caller will time out; nothing else to do
            logger.warning("could not send RPC %s: %s", what, exc)

    async def _serve_v1(self, request: models_pb.RpcRequest, caller: str) -> None:
        await self._send(ack_packet(caller, request.id), "ack")
        if request.version != RPC_VERSION_V1:
            error: RpcError | None = RpcError._built_in(RpcError.ErrorCode.UNSUPPORTED_VERSION)
            payload: str | None = None
        else:
            text: str | None = request.payload
            if request.compressed_payload:
                text = _inflate_text(request.compressed_payload)
            if text is None:
                payload, error = None, RpcError._built_in(
                    RpcError.ErrorCode.APPLICATION_ERROR, "bad compressed payload"
                )
            else:
                payload, error = await self._invoke(
                    request.id, caller, request.method, text, request.response_timeout_ms / 1000.0
                )
        if error is None and byte_length(payload or "") > MAX_PAYLOAD_BYTES:
            payload, error = None, RpcError._built_in(
                RpcError.ErrorCode.RESPONSE_PAYLOAD_TOO_LARGE
            )
        await self._send(response_packet(caller, request.id, payload, error), "response")

    async def _serve_v2(self, reader: Any, caller: str) -> None:
        attrs: dict[str, str] = dict(reader.info.attributes or {})
        request_id = attrs.get(ATTR_REQUEST_ID, "")
        if not request_id:
            logger.warning("RPC request stream from %s without request id dropped", caller)
            reader.close()
            return
        method = attrs.get(ATTR_METHOD, "")
        try:
            timeout_ms = int(attrs.get(ATTR_RESPONSE_TIMEOUT_MS, "15000"))
        except ValueError:
            timeout_ms = 15000
        try:
            version = int(attrs.get(ATTR_VERSION, "0"))
        except ValueError:
            version = 0
        await self._send(ack_packet(caller, request_id), "ack")
        if version != RPC_VERSION_V2:
            reader.close()
            err = RpcError._built_in(RpcError.ErrorCode.UNSUPPORTED_VERSION)
            await self._send(response_packet(caller, request_id, None, err), "response")
            return
        try:
            text = await asyncio.wait_for(reader.read_all(), max(timeout_ms / 1000.0, 1.0))
        except Exception as exc:  # noqa: BLE001 - StreamError, TimeoutError -> error response
            reader.close()
            err = RpcError._built_in(
                RpcError.ErrorCode.APPLICATION_ERROR, f"Failed to read request stream: {exc}"
            )
            await self._send(response_packet(caller, request_id, None, err), "response")
            return
        payload, error = await self._invoke(request_id, caller, method, text, timeout_ms / 1000.0)
        if error is None:
            try:
                await self._transport.send_rpc_stream(
                    payload or "",
                    topic=RPC_RESPONSE_TOPIC,
                    destination=caller,
                    attributes={ATTR_REQUEST_ID: request_id},
                )
                return
            except Exception as exc:  # noqa: BLE001 - reported to the caller as SEND_FAILED
                error = RpcError._built_in(RpcError.ErrorCode.SEND_FAILED, str(exc))
        await self._send(response_packet(caller, request_id, None, error), "response")

    async def _invoke(
        self, request_id: str, caller: str, method: str, payload: str, timeout: float
    ) -> tuple[str | None, RpcError | None]:
        """Run the handler under ``timeout``; (payload, None) or (None, error)."""
        handler = self._handlers.get(method)
        if handler is None:
            return None, RpcError._built_in(RpcError.ErrorCode.UNSUPPORTED_METHOD)
        data = RpcInvocationData(request_id, caller, payload, timeout, method=method)

        async def run() -> str | None:
            result = handler(data)
            if inspect.isawaitable(result):
                result = await result
            return result

        task = asyncio.ensure_future(run())
        try:
            done, _ = await asyncio.wait([task], timeout=max(timeout, 0.001))
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            task.add_done_callback(_observe)
            return None, RpcError._built_in(RpcError.ErrorCode.RESPONSE_TIMEOUT)
        if task.cancelled():
            return None, RpcError._built_in(RpcError.ErrorCode.APPLICATION_ERROR)
        exc = task.exception()
        if isinstance(exc, RpcError):
            return None, exc
        if exc is not None:
            logger.error(
                "RPC handler for %r raised; answering APPLICATION_ERROR", method, exc_info=exc
            )
            return None, RpcError._built_in(RpcError.ErrorCode.APPLICATION_ERROR)
        result = task.result()
        if result is not None and not isinstance(result, str):
            logger.error("RPC handler for %r returned %s, not str", method, type(result).__name__)
            return None, RpcError._built_in(RpcError.ErrorCode.APPLICATION_ERROR)
        return result or "", None

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()


def _inflate_text(data: bytes) -> str | None:
    """Inflate a deflate-raw UTF-8 payload (bounded), None when invalid."""
    inflater = zlib.decompressobj(-15)
    try:
        raw = inflater.decompress(data, 64 * 1024 * 1024)
        if inflater.unconsumed_tail:
            return None
        return raw.decode("utf-8")
    except (zlib.error, UnicodeDecodeError):
        return None


def _observe(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
