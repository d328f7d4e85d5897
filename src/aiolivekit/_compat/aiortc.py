"""aiortc internals, written for aiortc 1.16.0 (pinned in pyproject.toml).

Each function names the private attribute it reads or writes so that an aiortc upgrade
is checked here and nowhere else.
"""

from __future__ import annotations

from typing import Any

__all__ = ["dtls_srtp_session"]


def dtls_srtp_session(dtls: Any, tx: bool) -> Any | None:
    """The pylibsrtp ``Session`` an ``RTCDtlsTransport`` protects with (``tx``) or
    unprotects with; ``None`` before the DTLS handshake set the keys up
    (``RTCDtlsTransport._tx_srtp`` / ``._rx_srtp``)."""
    return getattr(dtls, "_tx_srtp" if tx else "_rx_srtp", None)
