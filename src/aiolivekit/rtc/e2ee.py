"""``livekit.rtc.e2ee`` names: end-to-end encryption, from aiolivekit's implementation."""

from __future__ import annotations

from ..e2ee import (
    DEFAULT_FAILURE_TOLERANCE,
    DEFAULT_KEY_RING_SIZE,
    DEFAULT_RATCHET_SALT,
    DEFAULT_RATCHET_WINDOW_SIZE,
    E2EEManager,
    E2EEOptions,
    FrameCryptor,
    KeyProvider,
    KeyProviderOptions,
)

__all__ = [
    "DEFAULT_FAILURE_TOLERANCE",
    "DEFAULT_KEY_RING_SIZE",
    "DEFAULT_RATCHET_SALT",
    "DEFAULT_RATCHET_WINDOW_SIZE",
    "E2EEManager",
    "E2EEOptions",
    "FrameCryptor",
    "KeyProvider",
    "KeyProviderOptions",
]
