"""RFC 2198 redundant audio: the sans-I/O codec lives in :mod:`aiolivekit.webrtc.red`
(shared with the SFU, which turns RED into plain Opus for subscribers without RED)."""

from __future__ import annotations

from ..webrtc.red import (
    MAX_BLOCK_LENGTH,
    MAX_TIMESTAMP_OFFSET,
    RedBlock,
    RedEncoder,
    RedPayload,
    build_red,
    parse_red,
)

__all__ = [
    "MAX_BLOCK_LENGTH",
    "MAX_TIMESTAMP_OFFSET",
    "RedBlock",
    "RedEncoder",
    "RedPayload",
    "build_red",
    "parse_red",
]
