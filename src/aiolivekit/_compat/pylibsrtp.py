"""pylibsrtp internals: its cffi binding and a session's libsrtp context.

Written for pylibsrtp 1.0.0 (pinned in pyproject.toml). ``pylibsrtp._binding`` is
the cffi module behind the public ``Session``; ``Session._srtp`` holds the ``srtp_t``
context that :class:`~aiolivekit.webrtc.srtp.FastSrtp` drives directly.
"""

from __future__ import annotations

from typing import Any

import pylibsrtp

try:  # the cffi module behind pylibsrtp
    from pylibsrtp import _binding as _srtp_binding
except ImportError:  # pragma: no cover - other pylibsrtp builds
    _srtp_binding = None  # type: ignore[assignment]

__all__ = ["binding_available", "ffi", "lib", "session_context"]


def binding_available() -> bool:
    """Whether pylibsrtp's cffi binding is importable."""
    return _srtp_binding is not None


def ffi() -> Any:
    """The cffi ``FFI`` of pylibsrtp's binding (check :func:`binding_available` first)."""
    return _srtp_binding.ffi


def lib() -> Any:
    """The libsrtp functions of pylibsrtp's binding (``srtp_protect``, ``srtp_unprotect``...)."""
    return _srtp_binding.lib


def session_context(session: Any) -> Any | None:
    """The libsrtp ``srtp_t`` of a pylibsrtp ``Session``, or ``None`` when ``session`` is not
    one or its layout moved."""
    if _srtp_binding is None or not isinstance(session, pylibsrtp.Session):
        return None
    holder = getattr(session, "_srtp", None)
    return None if holder is None else holder[0]
