"""Answer the server's steady-state ICE keepalive checks without aioice's generic STUN path.

Once a candidate pair is nominated, the server keeps sending STUN Binding requests on
it (pion: every ~2 s per peer connection, libwebrtc: consent checks). aioice parses each
into a dict-based message and serialises the response attribute by attribute, which is
most of a connected, idle participant's CPU. :func:`answer_binding_request` is a
sans-I/O answerer for the one case that matters there: a Binding request that
authenticates with our password, carries no USE-CANDIDATE and no role conflict. Every
other datagram (data, responses, first checks, anything unusual) goes to aioice as
before, so aioice stays the authority on ICE state.
"""

from __future__ import annotations

import binascii
import hmac
import logging
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from .._compat import aioice as aioice_compat

__all__ = [
    "BindingRequest",
    "answer_binding_request",
    "binding_response_ok",
    "fast_path_installed",
    "install_keepalive_fast_path",
    "parse_binding_request",
    "seal_message",
]

logger = logging.getLogger(__name__)

_COOKIE = 0x2112A442
_COOKIE_BYTES = struct.pack("!I", _COOKIE)
_BINDING_REQUEST = b"\x00\x01"
_BINDING_SUCCESS = 0x0101
_ATTR_USERNAME = 0x0006
_ATTR_MESSAGE_INTEGRITY = 0x0008
_ATTR_XOR_MAPPED_ADDRESS = 0x0020
_ATTR_USE_CANDIDATE = 0x0025
_ATTR_FINGERPRINT = 0x8028
_ATTR_ICE_CONTROLLED = 0x8029
_ATTR_ICE_CONTROLLING = 0x802A
_FINGERPRINT_XOR = 0x5354554E
_unpack_attr = struct.Struct("!HH").unpack_from
_pack_header = struct.Struct("!HHI12s").pack


class BindingRequest:
    """The fields of a Binding request the keepalive answer needs."""

    __slots__ = (
        "controlled",
        "controlling",
        "integrity_ok",
        "transaction_id",
        "use_candidate",
        "username",
    )

    def __init__(self, transaction_id: bytes, username: str, integrity_ok: bool,
                 use_candidate: bool, controlling: bool, controlled: bool) -> None:
        self.transaction_id = transaction_id
        self.username = username
        self.integrity_ok = integrity_ok
        self.use_candidate = use_candidate
        self.controlling = controlling
        self.controlled = controlled


def _framed(data: bytes, message_type: bytes) -> bool:
    """Whether ``data`` is one whole STUN message of ``message_type`` (2 bytes)."""
    if len(data) < 20 or data[0:2] != message_type or data[4:8] != _COOKIE_BYTES:
        return False
    body_length = (data[2] << 8) | data[3]
    return body_length + 20 == len(data) and not body_length % 4


def _attributes(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """``(type, position, value start, value end)`` of each attribute of a framed
    message; ``ValueError`` if one runs past the end."""
    size = len(data)
    pos = 20
    while pos + 4 <= size:
        attr_type, attr_length = _unpack_attr(data, pos)
        value_start = pos + 4
        value_end = value_start + attr_length
        if value_end > size:
            raise ValueError("STUN attribute runs past the message")
        yield attr_type, pos, value_start, value_end
        pos = value_end + (-attr_length % 4)


def _integrity_ok(data: bytes, pos: int, value_start: int, value_end: int, key: bytes) -> bool:
    """Check the MESSAGE-INTEGRITY attribute at ``pos`` (it covers the header, with the
    length up to its own end, and every attribute before it)."""
    if value_end - value_start != 20:
        return False
    covered = data[0:2] + struct.pack("!H", value_end - 20) + data[4:pos]
    return hmac.compare_digest(hmac.digest(key, covered, "sha1"), data[value_start:value_end])


def parse_binding_request(data: bytes, key: bytes) -> BindingRequest | None:
    """A Binding request checked against ``key``, or ``None`` if ``data`` is anything else."""
    if not _framed(data, _BINDING_REQUEST):
        return None
    username: str | None = None
    integrity_ok = False
    use_candidate = controlling = controlled = False
    try:
        for attr_type, pos, value_start, value_end in _attributes(data):
            if attr_type == _ATTR_USERNAME:
                username = data[value_start:value_end].decode("utf8")
            elif attr_type == _ATTR_MESSAGE_INTEGRITY:
                if value_end - value_start != 20:
                    return None
                integrity_ok = _integrity_ok(data, pos, value_start, value_end, key)
                # only FINGERPRINT may follow MESSAGE-INTEGRITY
                rest = data[value_end:]
                if rest and (len(rest) != 8 or rest[0:2] != b"\x80\x28"):
                    return None
                break
            elif attr_type == _ATTR_USE_CANDIDATE:
                use_candidate = True
            elif attr_type == _ATTR_ICE_CONTROLLING:
                controlling = True
            elif attr_type == _ATTR_ICE_CONTROLLED:
                controlled = True
    except ValueError:  # includes UnicodeDecodeError
        return None
    if username is None:
        return None
    return BindingRequest(data[8:20], username, integrity_ok, use_candidate, controlling,
                          controlled)


def _xor_mapped_address(addr: tuple[str, int], transaction_id: bytes) -> bytes | None:
    host, port = addr[0], addr[1]
    try:
        if ":" in host:
            raw = socket.inet_pton(socket.AF_INET6, host)
            family = 2
            pad = _COOKIE_BYTES + transaction_id
        else:
            raw = socket.inet_aton(host)
            family = 1
            pad = _COOKIE_BYTES
    except OSError:
        return None
    xored = bytes(b ^ p for b, p in zip(raw, pad, strict=False))
    value = struct.pack("!BBH", 0, family, port ^ (_COOKIE >> 16)) + xored
    return struct.pack("!HH", _ATTR_XOR_MAPPED_ADDRESS, len(value)) + value


def seal_message(message_type: int, transaction_id: bytes, attributes: bytes, key: bytes) -> bytes:
    """A STUN message of ``attributes`` (encoded, padded) with MESSAGE-INTEGRITY (``key``)
    and FINGERPRINT appended."""
    # MESSAGE-INTEGRITY covers the header with the length up to and including itself
    covered = _pack_header(message_type, len(attributes) + 24, _COOKIE, transaction_id)
    integrity = hmac.digest(key, covered + attributes, "sha1")
    body = attributes + struct.pack("!HH", _ATTR_MESSAGE_INTEGRITY, 20) + integrity
    with_length = _pack_header(message_type, len(body) + 8, _COOKIE, transaction_id) + body
    crc = (binascii.crc32(with_length) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
    return with_length + struct.pack("!HHI", _ATTR_FINGERPRINT, 4, crc)


def answer_binding_request(request: BindingRequest, addr: tuple[str, int], key: bytes) -> bytes | None:
    """The Binding success response (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT)."""
    mapped = _xor_mapped_address(addr, request.transaction_id)
    if mapped is None:
        return None
    return seal_message(_BINDING_SUCCESS, request.transaction_id, mapped, key)


def binding_response_ok(data: bytes, transaction_id: bytes, key: bytes) -> bool:
    """Whether ``data`` is a Binding success response to ``transaction_id`` whose
    MESSAGE-INTEGRITY verifies with ``key``."""
    if not _framed(data, b"\x01\x01") or data[8:20] != transaction_id:
        return False
    try:
        for attr_type, pos, value_start, value_end in _attributes(data):
            if attr_type == _ATTR_MESSAGE_INTEGRITY:
                return _integrity_ok(data, pos, value_start, value_end, key)
    except ValueError:
        return False
    return False


_SUCCEEDED: Any = None


def install_keepalive_fast_path(
    conn: Any,
    *,
    answered: Callable[[Any], None] | None = None,
    response: Callable[[Any, bytes], bool] | None = None,
) -> int:
    """Wrap the ``datagram_received`` of each of an aioice ``Connection``'s sockets.

    Once ICE has nominated a pair, a Binding request on that socket from the remote
    address of a pair whose checks already succeeded is answered here when it
    authenticates and has no role conflict and no USE-CANDIDATE (unless that pair is
    the nominated one already); ``answered(conn)`` is called after each such answer.
    A Binding success response goes to ``response(conn, data)`` first and is consumed
    if it returns ``True`` (see :mod:`.consent`). Everything else goes to aioice
    unchanged. Returns the number of sockets wrapped. The connection's state is read
    through :mod:`aiolivekit._compat.aioice` (``AiortcCompatibilityError`` if it moved).
    """
    global _SUCCEEDED
    aioice_compat.check_connection(conn)
    if _SUCCEEDED is None:
        _SUCCEEDED = aioice_compat.succeeded_state()
        _warm_up()
    wrapped = 0
    for protocol in aioice_compat.socket_protocols(conn):
        def make(original: Callable[[bytes, tuple[Any, ...]], None],
                 protocol: Any = protocol) -> Callable[..., None]:
            return _make_handler(conn, protocol, original, answered, response)

        if aioice_compat.wrap_datagram_received(protocol, make):
            wrapped += 1
    return wrapped


def _make_handler(conn: Any, protocol: Any,
                  original: Callable[[bytes, tuple[Any, ...]], None],
                  answered: Callable[[Any], None] | None,
                  response: Callable[[Any, bytes], bool] | None) -> Callable[..., None]:
    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        if len(data) >= 20 and data[1] == 1 and data[0] < 2:
            try:
                if data[0] == 0:  # a Binding request
                    if _answer(conn, protocol, data, addr):
                        if answered is not None:
                            answered(conn)
                        return
                elif response is not None and response(conn, data):  # a success response
                    return
            except Exception:  # never lose the datagram: aioice handles it then
                logger.debug("keepalive fast path failed", exc_info=True)
        original(data, addr)

    return datagram_received


def _warm_up() -> None:
    """Run the answer path once on a synthetic request, so its first real use (an
    idle participant's first keepalive) does not pay for OpenSSL's HMAC setup and
    the interpreter's first run of this code."""
    key = b"warm-up-password"
    request = seal_message(0x0001, bytes(12), struct.pack("!HH4s", _ATTR_USERNAME, 3, b"a:b\0"),
                           key)
    parsed = parse_binding_request(request, key)
    if parsed is not None:
        answer_binding_request(parsed, ("127.0.0.1", 9), key)


def _answer(conn: Any, protocol: Any, data: bytes, addr: tuple[Any, ...]) -> bool:
    if aioice_compat.is_closing(conn) or conn.local_password is None:
        return False
    nominated = aioice_compat.nominated_pairs(conn)
    if not aioice_compat.early_checks_done(conn) or not nominated:
        return False
    remote = (addr[0], addr[1])
    for pair in aioice_compat.check_list(conn):
        if pair.protocol is protocol and pair.remote_addr == remote:
            break
    else:
        return False
    # aioice does nothing more for a check on a pair that already succeeded, unless it
    # nominates it; USE-CANDIDATE on the pair already nominated changes nothing either
    if pair.state != _SUCCEEDED:
        return False
    renominates = bool(pair.nominated and pair.remote_nominated
                       and pair in nominated)
    key = conn.local_password.encode("utf8")
    request = parse_binding_request(data, key)
    if (request is None or not request.integrity_ok
            or (request.use_candidate and not (renominates and not conn.ice_controlling))
            or not aioice_compat.valid_username(conn, request.username)
            or (conn.ice_controlling and request.controlling)
            or (not conn.ice_controlling and request.controlled)):
        return False
    response = answer_binding_request(request, remote, key)
    if response is None:
        return False
    protocol.transport.sendto(response, remote)
    return True


def fast_path_installed(protocol: Any) -> bool:
    """Whether :func:`install_keepalive_fast_path` wrapped this aioice socket protocol."""
    return aioice_compat.datagram_received_wrapped(protocol)
