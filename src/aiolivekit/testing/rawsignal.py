"""A bare LiveKit signalling client for probes and fuzzing: a WebSocket, protobuf
``SignalRequest`` out, ``SignalResponse`` in, no peer connection and no client-side checks.

Used by ``tests/security`` and ``scripts/security_probe.py`` to send what a well-behaved
SDK never sends (oversized fields, 10 000 layers, garbage frames) to any LiveKit server.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from urllib.parse import urlencode

import aiohttp
from livekit.protocol import rtc as rtc_pb

__all__ = ["RawSignal", "RawSignalRefused"]

logger = logging.getLogger(__name__)

PROTOCOL = 16
MAX_FRAME = 64 * 1024 * 1024


class RawSignalRefused(Exception):
    """The server refused the WebSocket (``status``: its HTTP status, ``text``: the body)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status
        self.text = text


class RawSignal:
    """``async with RawSignal(url, token) as s``: joined; ``s.join`` is the JoinResponse."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0,
                 auto_subscribe: bool = False, keep: bool = True) -> None:
        base = url.rstrip("/")
        for a, b in (("http://", "ws://"), ("https://", "wss://")):
            if base.startswith(a):
                base = b + base[len(a):]
        self.url = base + "/rtc?" + urlencode({
            "access_token": token, "protocol": str(PROTOCOL), "sdk": "python",
            "auto_subscribe": "1" if auto_subscribe else "0"})
        self.timeout = timeout
        self.join: rtc_pb.JoinResponse | None = None
        self.received: list[rtc_pb.SignalResponse] = []
        self.keep = keep  # False: responses are not kept in ``received``
        self.closed = False
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None

    async def __aenter__(self) -> RawSignal:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self, wait_join: bool = True) -> None:
        self._http = aiohttp.ClientSession()
        try:
            async def open_ws() -> aiohttp.ClientWebSocketResponse[bool]:
                assert self._http is not None
                return await self._http.ws_connect(self.url, max_msg_size=MAX_FRAME)

            self._ws = await asyncio.wait_for(open_ws(), self.timeout)
        except aiohttp.WSServerHandshakeError as exc:
            await self._http.close()
            raise RawSignalRefused(exc.status, exc.message) from None
        except BaseException:
            await self._http.close()
            raise
        if wait_join:
            first = await self.recv()
            if first is None or first.WhichOneof("message") != "join":
                await self.close()
                kind = None if first is None else first.WhichOneof("message")
                raise RawSignalRefused(0, f"no JoinResponse (got {kind})")
            self.join = first.join

    async def send(self, request: rtc_pb.SignalRequest) -> None:
        await self.send_bytes(request.SerializeToString())

    async def send_bytes(self, data: bytes) -> None:
        assert self._ws is not None
        await asyncio.wait_for(self._ws.send_bytes(data), self.timeout)

    async def send_str(self, text: str) -> None:
        assert self._ws is not None
        await asyncio.wait_for(self._ws.send_str(text), self.timeout)

    async def recv(self, timeout: float | None = None) -> rtc_pb.SignalResponse | None:
        """The next response, or ``None`` when the connection closed."""
        assert self._ws is not None
        while True:
            msg = await asyncio.wait_for(self._ws.receive(), timeout or self.timeout)
            if msg.type == aiohttp.WSMsgType.BINARY:
                resp = rtc_pb.SignalResponse()
                resp.ParseFromString(msg.data)
                if self.keep:
                    self.received.append(resp)
                return resp
            if msg.type == aiohttp.WSMsgType.TEXT:
                from google.protobuf import json_format

                resp = rtc_pb.SignalResponse()
                json_format.Parse(msg.data, resp, ignore_unknown_fields=True)
                if self.keep:
                    self.received.append(resp)
                return resp
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                self.closed = True
                return None

    async def wait_for(self, kind: str, timeout: float | None = None,
                       ) -> rtc_pb.SignalResponse | None:
        """The first response whose oneof is ``kind`` (others are kept in ``received``);
        ``None`` if the connection closed or ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                resp = await self.recv(left)
            except asyncio.TimeoutError:
                return None
            if resp is None:
                return None
            if resp.WhichOneof("message") == kind:
                return resp

    async def close(self) -> None:
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._ws.close(), 2.0)
            except Exception:  # the server may already be gone
                logger.debug("closing the raw signal WebSocket failed", exc_info=True)
            self._ws = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        self.closed = True
