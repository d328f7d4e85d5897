"""libsrtp with preallocated buffers (the SRTP fast path shared by both wings).

:class:`FastSrtp` calls libsrtp through pylibsrtp's cffi binding with a buffer and a
length cell allocated once per session (pylibsrtp's ``Session.protect`` allocates and
type-checks on every call). :func:`fast_srtp_for` finds (and caches) the one over an
aiortc DTLS transport's send or receive session.
"""

from __future__ import annotations

import weakref
from typing import Any

import pylibsrtp

from .._compat import aiortc as aiortc_compat, pylibsrtp as srtp_compat

__all__ = ["FastSrtp", "binding_available", "fast_srtp_for", "srtp_available"]

_BUFFER_SIZE = 2048
_MAX_PACKET = 1500

binding_available = srtp_compat.binding_available


def srtp_available(session: Any) -> bool:
    """Whether ``session`` (a pylibsrtp ``Session``) can be driven by :class:`FastSrtp`."""
    return srtp_compat.session_context(session) is not None


class FastSrtp:
    """Protect / unprotect through one pylibsrtp session with preallocated buffers.

    Not re-entrant (one shared buffer); the event loop thread is the only caller.
    """

    __slots__ = ("_buf", "_cdata", "_len", "_protect", "_srtp", "_unprotect", "session")

    def __init__(self, session: pylibsrtp.Session) -> None:
        if not srtp_available(session):
            raise TypeError("not a pylibsrtp session with a cffi binding")
        ffi, lib = srtp_compat.ffi(), srtp_compat.lib()
        self.session = session  # keeps the libsrtp context alive
        self._srtp = srtp_compat.session_context(session)
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


# one FastSrtp per (DTLS transport, direction), dropped with the transport
_fast_by_dtls: weakref.WeakKeyDictionary[Any, dict[bool, FastSrtp]] = weakref.WeakKeyDictionary()


def fast_srtp_for(dtls: Any, tx: bool) -> FastSrtp | None:
    """The :class:`FastSrtp` over ``dtls``'s send (``tx``) or receive session, cached per
    transport; ``None`` before the DTLS handshake set the keys up."""
    session = aiortc_compat.dtls_srtp_session(dtls, tx)
    if session is None:
        return None
    cache = _fast_by_dtls.get(dtls)
    fast = None if cache is None else cache.get(tx)
    if fast is None or fast.session is not session:
        if not srtp_available(session):
            return None
        fast = FastSrtp(session)
        if cache is None:
            cache = _fast_by_dtls[dtls] = {}
        cache[tx] = fast
    return fast
