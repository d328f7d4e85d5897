"""Raw SRTP datagram I/O for the forwarder (the hot path, kept out of aiortc's Python).

* :class:`FastSrtp` calls libsrtp through pylibsrtp's cffi binding with a buffer and a
  length cell allocated once per session (pylibsrtp's ``Session.protect`` allocates and
  type-checks on every call).
* :class:`ReceiveTap` sits on the UDP protocols of one aiortc DTLS transport (aioice
  ``StunProtocol.datagram_received``, replaced per instance): an SRTP packet whose SSRC
  has a registered route is unprotected and handed to that route synchronously, without
  aioice's STUN parse attempt, its queue, the DTLS transport's receive task, aiortc's
  ``RtpPacket.parse`` and its receiver pipeline. Every other datagram (STUN, DTLS,
  SCTP, RTCP, RTP of other SSRCs) goes the normal way.

Relies on private names of aiortc 1.16 / aioice 0.13; :func:`tap_available` and
:func:`srtp_available` say whether they exist (callers then keep the aiortc path).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aiortc.rtcdtlstransport import State

try:  # the cffi module behind pylibsrtp
    from pylibsrtp import _binding as _srtp_binding
except ImportError:  # pragma: no cover - other pylibsrtp builds
    _srtp_binding = None  # type: ignore[assignment]

__all__ = ["FastSrtp", "ReceiveTap", "srtp_available", "tap_available"]

logger = logging.getLogger(__name__)

_BUFFER_SIZE = 2048
_MAX_PACKET = 1500
_CONNECTED = State.CONNECTED


def srtp_available(session: Any) -> bool:
    """Whether ``session`` (a pylibsrtp ``Session``) can be driven by :class:`FastSrtp`."""
    return (
        _srtp_binding is not None
        and isinstance(session, pylibsrtp.Session)
        and hasattr(session, "_srtp")
    )


class FastSrtp:
    """Protect / unprotect through one pylibsrtp session with preallocated buffers.

    Not re-entrant (one shared buffer); the event loop thread is the only caller.
    """

    __slots__ = ("_buf", "_cdata", "_len", "_protect", "_srtp", "_unprotect", "session")

    def __init__(self, session: pylibsrtp.Session) -> None:
        if not srtp_available(session):
            raise TypeError("not a pylibsrtp session with a cffi binding")
        ffi, lib = _srtp_binding.ffi, _srtp_binding.lib
        self.session = session  # keeps the libsrtp context alive
        self._srtp = session._srtp[0]  # type: ignore[attr-defined]
        self._cdata = ffi.new("char[]", _BUFFER_SIZE)
        self._buf = ffi.buffer(self._cdata)
        self._len = ffi.new("int *")
        self._protect = lib.srtp_protect
        self._unprotect = lib.srtp_unprotect

    def protect(self, packet: bytes) -> bytes:
        """SRTP-protect one plaintext RTP packet."""
        return self._apply(self._protect, packet, _MAX_PACKET, "RTP", "srtp_protect")

    def unprotect(self, packet: bytes) -> bytes:
        """Verify and decrypt one SRTP packet (raises ``pylibsrtp.Error``)."""
        return self._apply(self._unprotect, packet, _BUFFER_SIZE, "SRTP", "srtp_unprotect")

    def _apply(self, func: Any, packet: bytes, limit: int, kind: str, name: str) -> bytes:
        """Run libsrtp's ``func`` on ``packet`` in the preallocated buffer."""
        n = len(packet)
        if n > limit:
            raise ValueError(f"{kind} packet too long ({n} bytes)")
        self._buf[0:n] = packet
        length = self._len
        length[0] = n
        rc = func(self._srtp, self._cdata, length)
        if rc:
            raise pylibsrtp.Error(f"{name} failed ({rc})")
        out: bytes = self._buf[0 : length[0]]
        return out


def fast_srtp_for(dtls: Any, tx: bool) -> FastSrtp | None:
    """The :class:`FastSrtp` over ``dtls``'s send (``tx``) or receive session, cached on
    the transport; ``None`` before the DTLS handshake set the keys up."""
    session = dtls._tx_srtp if tx else dtls._rx_srtp
    if session is None:
        return None
    attr = "_lk_fast_tx" if tx else "_lk_fast_rx"
    fast: FastSrtp | None = getattr(dtls, attr, None)
    if fast is None or fast.session is not session:
        if not srtp_available(session):
            return None
        fast = FastSrtp(session)
        setattr(dtls, attr, fast)
    return fast


def tap_available(dtls: Any) -> bool:
    """Whether ``dtls`` (an aiortc ``RTCDtlsTransport``) exposes what :class:`ReceiveTap` uses."""
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    return (
        _srtp_binding is not None
        and hasattr(dtls, "_state")
        and hasattr(dtls, "_rx_srtp")
        and hasattr(dtls, "_RTCDtlsTransport__rx_bytes")
        and hasattr(dtls, "_RTCDtlsTransport__rx_packets")
        and isinstance(getattr(connection, "_protocols", None), list)
    )


RawHandler = Callable[[bytes], None]


class ReceiveTap:
    """Synchronous SRTP receive path for chosen SSRCs of one DTLS transport."""

    def __init__(self, dtls: Any) -> None:
        self._dtls = dtls
        self._routes: dict[int, RawHandler] = {}
        self._hooked: list[Any] = []
        self._errors = 0
        self.packets = 0

    @classmethod
    def for_transport(cls, dtls: Any) -> ReceiveTap | None:
        """The transport's tap (created on first use); ``None`` if internals are missing."""
        tap: ReceiveTap | None = getattr(dtls, "_lk_rx_tap", None)
        if tap is None:
            if not tap_available(dtls):
                logger.warning("aiortc/aioice internals changed: no raw SRTP receive path")
                return None
            tap = cls(dtls)
            dtls._lk_rx_tap = tap
        return tap

    @property
    def routes(self) -> dict[int, RawHandler]:
        return self._routes

    def add_route(self, ssrc: int, handler: RawHandler) -> None:
        """Send RTP of ``ssrc`` to ``handler(plaintext)`` from now on."""
        self._routes[ssrc] = handler
        self._hook()

    def remove_route(self, ssrc: int, handler: RawHandler | None = None) -> None:
        if handler is None or self._routes.get(ssrc) == handler:
            self._routes.pop(ssrc, None)
        if not self._routes:
            self._unhook()

    def _hook(self) -> None:
        protocols = self._dtls.transport._connection._protocols
        for protocol in protocols:
            if any(p is protocol for p in self._hooked):
                continue
            original = protocol.datagram_received  # the bound class method
            protocol.datagram_received = functools.partial(self._on_datagram, original)
            self._hooked.append(protocol)

    def _unhook(self) -> None:
        hooked, self._hooked = self._hooked, []
        for protocol in hooked:
            if "datagram_received" in vars(protocol):
                del protocol.datagram_received

    def _on_datagram(self, original: Callable[[bytes, Any], None], data: bytes, addr: Any) -> None:
        # SRTP (RFC 7983 first byte 128..191) but not SRTCP (packet type 192..223)
        if len(data) >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
            handler = self._routes.get(int.from_bytes(data[8:12], "big"))
            if handler is not None:
                dtls = self._dtls
                if dtls._state is _CONNECTED:
                    srtp = getattr(dtls, "_lk_fast_rx", None)
                    if srtp is None or srtp.session is not dtls._rx_srtp:
                        srtp = fast_srtp_for(dtls, tx=False)
                    if srtp is not None:
                        dtls._RTCDtlsTransport__rx_bytes += len(data)
                        dtls._RTCDtlsTransport__rx_packets += 1
                        try:
                            plain = srtp.unprotect(data)
                        except (pylibsrtp.Error, ValueError):
                            return  # like aiortc: a bad or replayed packet is dropped
                        self.packets += 1
                        try:
                            handler(plain)
                        except Exception:  # never let it reach (and close) the UDP transport
                            self._errors += 1
                            if self._errors <= 5:
                                logger.exception("raw RTP handler failed")
                        return
        original(data, addr)
