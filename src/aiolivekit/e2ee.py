"""End-to-end encryption options (real records) and the E2EE runtime objects, which
raise ``UnsupportedOptionError`` until aiolivekit implements E2EE (issue 17).

``RoomOptions(encryption=E2EEOptions(...))`` is refused by ``Room.connect`` before any
network I/O: aiolivekit never connects in clear when encryption was asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .errors import UnsupportedOptionError
from .types import EncryptionType
from .types_ext import KeyDerivationFunction

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

logger = logging.getLogger(__name__)

ISSUE_E2EE = 17
DEFAULT_RATCHET_SALT = b"LKFrameEncryptionKey"
DEFAULT_RATCHET_WINDOW_SIZE = 16
DEFAULT_FAILURE_TOLERANCE = -1
DEFAULT_KEY_RING_SIZE = 16


@dataclass
class KeyProviderOptions:
    shared_key: bytes | None = None
    ratchet_salt: bytes = DEFAULT_RATCHET_SALT
    ratchet_window_size: int = DEFAULT_RATCHET_WINDOW_SIZE
    failure_tolerance: int = DEFAULT_FAILURE_TOLERANCE
    key_ring_size: int = DEFAULT_KEY_RING_SIZE
    key_derivation_function: KeyDerivationFunction = KeyDerivationFunction.PBKDF2


@dataclass
class E2EEOptions:
    key_provider_options: KeyProviderOptions = field(default_factory=KeyProviderOptions)
    encryption_type: EncryptionType = EncryptionType.GCM


def _unsupported(what: str) -> NoReturn:
    raise UnsupportedOptionError(what, "used", issue=ISSUE_E2EE,
                                 detail="end-to-end encryption is not implemented yet")


class E2EEManager:
    """Room E2EE state (``Room.e2ee_manager``); raises: no E2EE yet (issue 17)."""

    def __init__(self, room_handle: Any, options: E2EEOptions | None) -> None:
        _unsupported("E2EEManager")

    @property
    def key_provider(self) -> KeyProvider | None:
        _unsupported("E2EEManager.key_provider")

    @property
    def enabled(self) -> bool:
        _unsupported("E2EEManager.enabled")

    def set_enabled(self, enabled: bool) -> None:
        _unsupported("E2EEManager.set_enabled")

    def frame_cryptors(self) -> list[FrameCryptor]:
        _unsupported("E2EEManager.frame_cryptors")


class KeyProvider:
    """Encryption keys of a room; raises: no E2EE yet (issue 17)."""

    def __init__(self, room_handle: Any, options: KeyProviderOptions) -> None:
        _unsupported("KeyProvider")

    @property
    def options(self) -> KeyProviderOptions:
        _unsupported("KeyProvider.options")

    def set_shared_key(self, key: bytes, key_index: int) -> None:
        _unsupported("KeyProvider.set_shared_key")

    def export_shared_key(self, key_index: int) -> bytes:
        _unsupported("KeyProvider.export_shared_key")

    def ratchet_shared_key(self, key_index: int) -> bytes:
        _unsupported("KeyProvider.ratchet_shared_key")

    def set_key(self, participant_identity: str, key: bytes, key_index: int) -> None:
        _unsupported("KeyProvider.set_key")

    def export_key(self, participant_identity: str, key_index: int) -> bytes:
        _unsupported("KeyProvider.export_key")

    def ratchet_key(self, participant_identity: str, key_index: int) -> bytes:
        _unsupported("KeyProvider.ratchet_key")


class FrameCryptor:
    """Per-track frame encryption state; raises: no E2EE yet (issue 17)."""

    def __init__(self, room_handle: Any, participant_identity: str, track_sid: str,
                 key_index: int, enabled: bool) -> None:
        _unsupported("FrameCryptor")

    @property
    def participant_identity(self) -> str:
        _unsupported("FrameCryptor.participant_identity")

    @property
    def track_sid(self) -> str:
        _unsupported("FrameCryptor.track_sid")

    @property
    def key_index(self) -> int:
        _unsupported("FrameCryptor.key_index")

    @property
    def enabled(self) -> bool:
        _unsupported("FrameCryptor.enabled")

    def set_enabled(self, enabled: bool) -> None:
        _unsupported("FrameCryptor.set_enabled")

    def set_key_index(self, key_index: int) -> None:
        _unsupported("FrameCryptor.set_key_index")
