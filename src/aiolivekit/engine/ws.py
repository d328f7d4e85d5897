"""WebSocket transport for LiveKit signalling (aiohttp), with timeouts and error mapping.

One binary WebSocket message is one serialized ``SignalRequest`` / ``SignalResponse``.
A refused upgrade is explained by GETting ``<rtc url>/validate`` with the same query and
header; its status and body become a :class:`~aiolivekit.errors.ConnectError`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from urllib.parse import urlencode, urlparse, urlunparse

import aiohttp
from livekit.protocol import rtc as rtc_pb

from ..errors import ConnectError, SignalError
from ..version import __version__

__all__ = ["SignalTransport", "rtc_url", "signal_query", "client_protocol"]

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 16

_REASONS = {400: "bad_request", 401: "unauthorized", 403: "unauthorized", 404: "not_found"}


def client_protocol() -> int:
    """``aiolivekit.data.dispatch.CLIENT_PROTOCOL`` when that module exists, else 0."""
    try:
        mod = importlib.import_module("aiolivekit.data.dispatch")
    except ImportError:
        return 0
    return int(getattr(mod, "CLIENT_PROTOCOL", 0))


def client_capabilities() -> list[str]:
    """Names of ``aiolivekit.data.dispatch.CLIENT_CAPABILITIES`` (empty if absent)."""
    try:
        mod = importlib.import_module("aiolivekit.data.dispatch")
    except ImportError:
        return []
    from livekit.protocol import models as models_pb

    names = []
    for value in getattr(mod, "CLIENT_CAPABILITIES", ()):
        try:
            names.append(models_pb.ClientInfo.Capability.Name(value))
        except ValueError:
            continue
    return names


def signal_query(token: str, *, auto_subscribe: bool) -> dict[str, str]:
    query = {
        "access_token": token,
        "sdk": "python",
        "version": __version__,
        "protocol": str(PROTOCOL_VERSION),
        "client_protocol": str(client_protocol()),
        "auto_subscribe": "1" if auto_subscribe else "0",
        "adaptive_stream": "0",
    }
    caps = client_capabilities()
    if caps:
        query["capabilities"] = ",".join(caps)
    return query


def rtc_url(url: str, query: dict[str, str], *, validate: bool = False) -> str:
    """``<url>/rtc?query`` with the ws(s) scheme (http(s) for the validate URL)."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme not in ("ws", "wss", "http", "https"):
        raise ConnectError(f"unsupported URL scheme in {url!r}", reason="bad_request")
    secure = scheme in ("wss", "https")
    if validate:
        scheme = "https" if secure else "http"
    else:
        scheme = "wss" if secure else "ws"
    path = parsed.path.rstrip("/") + "/rtc"
    if validate:
        path += "/validate"
    return urlunparse((scheme, parsed.netloc, path, "", urlencode(query), ""))


class SignalTransport:
    """An open signalling WebSocket: ``send`` requests, ``recv`` responses."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self._closed = False

    @classmethod
    async def connect(cls, url: str, token: str, query: dict[str, str], *,
                      timeout: float) -> "SignalTransport":
        """Open the WebSocket; raise ConnectError with the server's reason on failure."""
        headers = {"Authorization": f"Bearer {token}"}
        ws_url = rtc_url(url, query)
        session = aiohttp.ClientSession()
        try:
            try:
                ws = await asyncio.wait_for(
                    session.ws_connect(ws_url, headers=headers, autoping=True, heartbeat=None,
                                       max_msg_size=8 * 1024 * 1024),
                    timeout,
                )
            except aiohttp.WSServerHandshakeError as exc:
                raise await _validate_error(session, url, query, headers, exc.status,
                                            timeout) from None
            except asyncio.TimeoutError:
                raise ConnectError(
                    f"signal connection to {url} timed out after {timeout:g} s",
                    reason="signal_timeout") from None
            except aiohttp.ClientError as exc:
                raise ConnectError(f"could not reach {url}: {exc}", reason="transport") from exc
            except OSError as exc:
                raise ConnectError(f"could not reach {url}: {exc}", reason="transport") from exc
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    @property
    def closed(self) -> bool:
        return self._closed or self._ws.closed

    async def send(self, request: rtc_pb.SignalRequest) -> None:
        if self.closed:
            raise SignalError("signal connection is closed")
        await self._ws.send_bytes(request.SerializeToString())

    async def recv(self) -> rtc_pb.SignalResponse | None:
        """Next SignalResponse; None when the socket closed. Undecodable frames are skipped."""
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                resp = rtc_pb.SignalResponse()
                try:
                    resp.ParseFromString(msg.data)
                except Exception:
                    logger.warning("undecodable signal frame (%d bytes)", len(msg.data))
                    continue
                return resp
            if msg.type == aiohttp.WSMsgType.TEXT:
                logger.warning("ignoring text signal frame")
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                self._closed = True
                return None

    async def close(self) -> None:
        self._closed = True
        try:
            await asyncio.wait_for(self._ws.close(), 2.0)
        except (asyncio.TimeoutError, Exception):
            pass
        try:
            await self._session.close()
        except Exception:
            pass


async def _validate_error(session: aiohttp.ClientSession, url: str, query: dict[str, str],
                          headers: dict[str, str], status: int, timeout: float) -> ConnectError:
    """Ask ``/rtc/validate`` why the upgrade failed."""
    body = ""

    async def fetch() -> tuple[int, str]:
        async with session.get(rtc_url(url, query, validate=True), headers=headers) as resp:
            return resp.status, (await resp.text()).strip()

    try:
        vstatus, body = await asyncio.wait_for(fetch(), min(timeout, 5.0))
        if vstatus != 200:
            status = vstatus
        else:
            body = ""
    except Exception as exc:  # the validate call is best effort
        logger.debug("validate request failed: %s", exc)
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    if token and len(token) > 8:
        body = body.replace(token, "<token>")  # never put credentials into messages/logs
    reason = _REASONS.get(status, "server_error" if status >= 500 else "bad_request")
    message = body or f"server refused the connection (HTTP {status})"
    return ConnectError(f"could not connect: {message} (HTTP {status})", status=status,
                        reason=reason)
