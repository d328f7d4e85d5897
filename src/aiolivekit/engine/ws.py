"""WebSocket transport for LiveKit signalling, with timeouts and error mapping.

A small RFC 6455 client: the framing is a sans-I/O codec (:class:`FrameParser`,
:func:`encode_frame`, handshake helpers) and :class:`SignalTransport` is the asyncio shell
on ``asyncio.open_connection``. (It replaces aiohttp on the client side: importing aiohttp
costs ~10 MiB of RSS and ~0.3 s of start-up for one WebSocket.)

One binary WebSocket message is one serialized ``SignalRequest`` / ``SignalResponse``.
A refused upgrade is explained by GETting ``<rtc url>/validate`` with the same query and
header; its status and body become a :class:`~aiolivekit.errors.ConnectError`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import os
import ssl
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import ParseResult, urlencode, urlparse, urlunparse

from livekit.protocol import rtc as rtc_pb

from ..errors import ConnectError, SignalError
from ..version import __version__

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameParser",
    "SignalTransport",
    "accept_key",
    "capability_names",
    "encode_frame",
    "handshake_request",
    "parse_http_head",
    "rtc_url",
    "signal_query",
]

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 16
MAX_MESSAGE = 8 * 1024 * 1024
MAX_HEAD = 64 * 1024
SEND_NOW_LIMIT = 64 * 1024  # bytes already buffered below which a send needs no drain()
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_REASONS = {400: "bad_request", 401: "unauthorized", 403: "unauthorized", 404: "not_found"}

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# ------------------------------------------------------------------ URL and query


def capability_names(capabilities: Iterable[int]) -> list[str]:
    """Names of ``ClientInfo.Capability`` values (unknown values are skipped)."""
    from livekit.protocol import models as models_pb

    names = []
    for value in capabilities:
        try:
            names.append(models_pb.ClientInfo.Capability.Name(value))  # type: ignore[arg-type]
        except ValueError:
            continue
    return names


def signal_query(token: str, *, auto_subscribe: bool, client_protocol: int = 0,
                 capabilities: Iterable[int] = ()) -> dict[str, str]:
    """The query of the signal URL; ``client_protocol`` and ``capabilities`` are what the
    client's data layer supports (given by the Room)."""
    query = {
        "access_token": token,
        "sdk": "python",
        "version": __version__,
        "protocol": str(PROTOCOL_VERSION),
        "client_protocol": str(int(client_protocol)),
        "auto_subscribe": "1" if auto_subscribe else "0",
        "adaptive_stream": "0",
    }
    caps = capability_names(capabilities)
    if caps:
        query["capabilities"] = ",".join(caps)
    return query


def check_url(url: object) -> ParseResult:
    """Parse a server URL; anything malformed (not a string, bad scheme, no host, an
    unclosed IPv6 bracket, a port outside 1..65535, spaces or control characters) raises
    :class:`ConnectError` with ``reason="bad_request"``."""
    def bad(why: str) -> ConnectError:
        return ConnectError(f"invalid server URL {url!r}: {why} (expected ws://, wss://, "
                            "http:// or https:// and a host)", reason="bad_request")
    if not isinstance(url, str):
        raise bad(f"not a string but {type(url).__name__}")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise bad("contains whitespace or control characters")
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parsed.scheme.lower() not in ("ws", "wss", "http", "https"):
        raise bad(f"unsupported scheme {parsed.scheme!r}")
    if not parsed.hostname:
        raise bad("no host")
    if port is not None and not 0 < port < 65536:
        raise bad(f"port {port} out of range")
    if ":" in parsed.hostname:
        try:
            ipaddress.IPv6Address(parsed.hostname.split("%", 1)[0])
        except ValueError:
            raise bad(f"invalid IPv6 address {parsed.hostname!r}") from None
    return parsed


def rtc_url(url: str, query: dict[str, str], *, validate: bool = False) -> str:
    """``<url>/rtc?query`` with the ws(s) scheme (http(s) for the validate URL)."""
    parsed = check_url(url)
    scheme = parsed.scheme.lower()
    secure = scheme in ("wss", "https")
    if validate:
        scheme = "https" if secure else "http"
    else:
        scheme = "wss" if secure else "ws"
    path = parsed.path.rstrip("/") + "/rtc"
    if validate:
        path += "/validate"
    return urlunparse((scheme, parsed.netloc, path, "", urlencode(query), ""))


# ------------------------------------------------------------------ sans-I/O codec


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for ``key``."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


def handshake_request(host: str, target: str, key: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             f"User-Agent: aiolivekit/{__version__}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_http_head(data: bytes) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of an HTTP/1.1 response head."""
    text = data.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"bad HTTP status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def encode_frame(opcode: int, payload: bytes, *, mask: bytes | None = None) -> bytes:
    """One final frame; client frames must be masked (4 random bytes)."""
    n = len(payload)
    head = bytearray([0x80 | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if mask is None:
        return bytes(head) + payload
    return bytes(head) + mask + _apply_mask(payload, mask)


def _apply_mask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


class ProtocolError(Exception):
    """The peer broke RFC 6455."""


@dataclass
class FrameParser:
    """Feed bytes, get complete ``(opcode, payload)`` messages (fragments reassembled)."""

    max_message: int = MAX_MESSAGE
    _buf: bytearray = field(default_factory=bytearray)
    _frag_op: int | None = None
    _frag: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            frame = self._next_frame()
            if frame is None:
                return out
            fin, opcode, payload = frame
            if opcode >= 0x8:  # control frames are never fragmented
                if not fin or len(payload) > 125:
                    raise ProtocolError("invalid control frame")
                out.append((opcode, payload))
            elif opcode == OP_CONT:
                if self._frag_op is None:
                    raise ProtocolError("continuation without a first fragment")
                self._frag += payload
                self._check_size(len(self._frag))
                if fin:
                    out.append((self._frag_op, bytes(self._frag)))
                    self._frag_op, self._frag = None, bytearray()
            elif opcode in (OP_TEXT, OP_BINARY):
                if self._frag_op is not None:
                    raise ProtocolError("new message inside a fragmented one")
                if fin:
                    out.append((opcode, payload))
                else:
                    self._frag_op, self._frag = opcode, bytearray(payload)
            else:
                raise ProtocolError(f"unknown opcode {opcode}")

    def _check_size(self, n: int) -> None:
        if n > self.max_message:
            raise ProtocolError(f"message larger than {self.max_message} bytes")

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        masked, n, pos = b1 & 0x80, b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, pos = struct.unpack_from("!H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
        self._check_size(n)
        mask = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            mask, pos = bytes(buf[pos:pos + 4]), pos + 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos:pos + n])
        del buf[:pos + n]
        if masked:
            payload = _apply_mask(payload, mask)
        return bool(b0 & 0x80), b0 & 0x0F, payload


# ------------------------------------------------------------------ asyncio shell


def _endpoint(url: str) -> tuple[str, int, bool, str, str]:
    parsed = urlparse(url)
    secure = parsed.scheme in ("wss", "https")
    host = parsed.hostname or ""
    port = parsed.port or (443 if secure else 80)
    target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    host_header = parsed.netloc.rsplit("@", 1)[-1]
    return host, port, secure, target, host_header


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str, str]:
    host, port, secure, target, host_header = _endpoint(url)
    ctx = ssl.create_default_context() if secure else None
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx,
                                                   server_hostname=host if secure else None)
    return reader, writer, target, host_header


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ConnectError("oversized HTTP response head", reason="transport") from None
    except asyncio.IncompleteReadError:
        raise ConnectError("connection closed during the HTTP handshake",
                           reason="transport") from None
    if len(head) > MAX_HEAD:
        raise ConnectError("oversized HTTP response head", reason="transport")
    try:
        return parse_http_head(head)
    except ValueError as exc:
        raise ConnectError(str(exc), reason="transport") from None


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except Exception:  # includes asyncio.TimeoutError; the socket is being dropped anyway
        logger.debug("closing the signal socket failed", exc_info=True)


class SignalTransport:
    """An open signalling WebSocket: ``send`` requests, ``recv`` responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 buffered: bytes = b"") -> None:
        self._reader = reader
        self._writer = writer
        self._parser = FrameParser()
        self._pending: list[tuple[int, bytes]] = []
        self._closed = False
        self._write_lock = asyncio.Lock()
        if buffered:
            self._pending = self._parser.feed(buffered)

    @classmethod
    async def connect(cls, url: str, token: str, query: dict[str, str], *,
                      timeout: float) -> SignalTransport:
        """Open the WebSocket; raise ConnectError with the server's reason on failure."""
        headers = {"Authorization": f"Bearer {token}"}
        ws_url = rtc_url(url, query)
        writer: asyncio.StreamWriter | None = None
        try:
            async def handshake() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int,
                                           dict[str, str]]:
                nonlocal writer
                reader, writer, target, host_header = await _open(ws_url)
                key = base64.b64encode(os.urandom(16)).decode()
                writer.write(handshake_request(host_header, target, key, headers))
                await writer.drain()
                status, resp_headers = await _read_head(reader)
                if status == 101 and resp_headers.get("sec-websocket-accept") != accept_key(key):
                    raise ConnectError("bad Sec-WebSocket-Accept from server", reason="transport")
                return reader, writer, status, resp_headers

            try:
                reader, opened, status, _ = await asyncio.wait_for(handshake(), timeout)
            except asyncio.TimeoutError:
                raise ConnectError(
                    f"signal connection to {url} timed out after {timeout:g} s",
                    reason="signal_timeout") from None
            except (OSError, ssl.SSLError) as exc:
                raise ConnectError(f"could not reach {url}: {exc}", reason="transport") from exc
            if status != 101:
                await _close_writer(opened)
                raise await _validate_error(url, query, headers, status, timeout)
        except BaseException:
            if writer is not None:
                await _close_writer(writer)
            raise
        return cls(reader, opened)

    @property
    def closed(self) -> bool:
        return self._closed

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        self._writer.write(encode_frame(opcode, payload, mask=os.urandom(4)))

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        async with self._write_lock:
            self._write_frame(opcode, payload)
            await self._writer.drain()

    def try_send_now(self, request: rtc_pb.SignalRequest) -> bool:
        """Write ``request`` at once if nothing is being sent and the socket buffer is
        nearly empty (no flow control needed); ``False``: use :meth:`send`."""
        transport = self._writer.transport
        if (self._closed or self._write_lock.locked() or transport.is_closing()
                or transport.get_write_buffer_size() > SEND_NOW_LIMIT):
            return False
        try:
            self._write_frame(OP_BINARY, request.SerializeToString())
        except (OSError, RuntimeError) as exc:
            self._closed = True
            raise SignalError(f"signal send failed: {exc}") from exc
        return True

    async def send(self, request: rtc_pb.SignalRequest) -> None:
        if self._closed:
            raise SignalError("signal connection is closed")
        try:
            await self._send_frame(OP_BINARY, request.SerializeToString())
        except (OSError, RuntimeError) as exc:
            self._closed = True
            raise SignalError(f"signal send failed: {exc}") from exc

    async def recv(self) -> rtc_pb.SignalResponse | None:
        """Next SignalResponse; None when the socket closed. Undecodable frames are skipped."""
        while True:
            while self._pending:
                opcode, payload = self._pending.pop(0)
                if opcode == OP_BINARY:
                    resp = rtc_pb.SignalResponse()
                    try:
                        resp.ParseFromString(payload)
                    except Exception:  # noqa: BLE001 - skipped on purpose, see docstring
                        logger.warning("undecodable signal frame (%d bytes)", len(payload))
                        continue
                    return resp
                if opcode == OP_PING:
                    try:
                        await self._send_frame(OP_PONG, payload)
                    except (OSError, RuntimeError):
                        pass
                elif opcode == OP_CLOSE:
                    await self._close(reply=payload[:2] or b"\x03\xe8")
                    return None
                elif opcode == OP_TEXT:
                    logger.warning("ignoring text signal frame")
            if self._closed:
                return None
            try:
                data = await self._reader.read(65536)
            except (OSError, asyncio.IncompleteReadError):
                data = b""
            if not data:
                self._closed = True
                return None
            try:
                self._pending = self._parser.feed(data)
            except ProtocolError as exc:
                logger.warning("signal WebSocket protocol error: %s", exc)
                await self._close(reply=struct.pack("!H", 1002))
                return None

    async def _close(self, reply: bytes) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._send_frame(OP_CLOSE, reply), 1.0)
        except (asyncio.TimeoutError, OSError, RuntimeError):
            pass
        await _close_writer(self._writer)

    def abort(self) -> None:
        """Drop the connection at once (no close handshake): a pending :meth:`recv`
        returns None."""
        self._closed = True
        try:
            self._writer.transport.abort()
        except Exception:  # already gone
            logger.debug("aborting the signal socket failed", exc_info=True)

    async def close(self) -> None:
        """Send a close frame (1000) and close the socket."""
        await self._close(reply=struct.pack("!H", 1000))
        await _close_writer(self._writer)


async def _http_get(url: str, headers: dict[str, str], limit: int = 65536) -> tuple[int, str]:
    reader, writer, target, host_header = await _open(url)
    try:
        lines = [f"GET {target} HTTP/1.1", f"Host: {host_header}", "Connection: close",
                 f"User-Agent: aiolivekit/{__version__}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status, resp_headers = await _read_head(reader)
        length = resp_headers.get("content-length")
        if length is not None and length.isdigit():
            body = await reader.readexactly(min(int(length), limit))
        elif resp_headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader, limit)
        else:
            body = await reader.read(limit)
        return status, body.decode("utf-8", "replace")
    finally:
        await _close_writer(writer)


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    out = bytearray()
    while len(out) < limit:
        size_line = await reader.readline()
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += await reader.readexactly(size)
        await reader.readline()
    return bytes(out[:limit])


async def _validate_error(url: str, query: dict[str, str], headers: dict[str, str],
                          status: int, timeout: float) -> ConnectError:
    """Ask ``/rtc/validate`` why the upgrade failed."""
    body = ""
    try:
        vstatus, vbody = await asyncio.wait_for(
            _http_get(rtc_url(url, query, validate=True), headers), min(timeout, 5.0))
        if vstatus != 200:
            status, body = vstatus, vbody.strip()
    except Exception as exc:  # the validate call is best effort
        logger.debug("validate request failed: %s", exc, exc_info=True)
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    if token and len(token) > 8:
        body = body.replace(token, "<token>")  # never put credentials into messages/logs
    reason = _REASONS.get(status, "server_error" if status >= 500 else "bad_request")
    message = body or f"server refused the connection (HTTP {status})"
    return ConnectError(f"could not connect: {message} (HTTP {status})", status=status,
                        reason=reason)
