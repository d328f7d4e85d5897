"""End-to-end encryption (issue 17): the official API over :mod:`.media.frame_crypto`.

``RoomOptions(encryption=E2EEOptions(...))`` makes the Room encrypt every track it
publishes and decrypt every encrypted track it subscribes to, in LiveKit's frame format
(interoperable with livekit-client and the official SDKs). ``Room.e2ee_manager`` holds the
:class:`KeyProvider` (shared key or per-participant keys, rotation, ratchets) and one
:class:`FrameCryptor` per encrypted track. With encryption on, data packets (user
packets, streams, RPC) are sealed as ``EncryptedPacket`` with the same keys, as the
official SDKs do (:mod:`.room_e2ee`; docs/e2ee.md).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .media import frame_crypto as fc
from .types import EncryptionState, EncryptionType
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


def _store_options(options: KeyProviderOptions) -> fc.KeyStoreOptions:
    if options.ratchet_window_size < 0:
        raise ValueError("KeyProviderOptions.ratchet_window_size must be >= 0")
    kdf = int(options.key_derivation_function)
    if kdf not in (fc.KDF_PBKDF2, fc.KDF_HKDF):
        raise ValueError(f"KeyProviderOptions.key_derivation_function: unknown value {kdf}")
    return fc.KeyStoreOptions(
        shared_key=options.shared_key is not None,
        ratchet_salt=bytes(options.ratchet_salt),
        ratchet_window_size=int(options.ratchet_window_size),
        failure_tolerance=int(options.failure_tolerance),
        key_ring_size=int(options.key_ring_size),
        key_derivation_function=kdf,
    )


def _key_bytes(key: bytes | str) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"a key must be bytes, not {type(key).__name__}")
    if not key:
        raise ValueError("a key must not be empty")
    return bytes(key)


class KeyProvider:
    """Encryption keys of a room: one shared key (``KeyProviderOptions.shared_key`` set),
    or one key ring per participant identity (:meth:`set_key`); each ring holds
    ``key_ring_size`` keys by index. A method on a key that does not exist returns ``b""``
    (as the official SDK)."""

    def __init__(self, room_handle: Any, options: KeyProviderOptions) -> None:
        self._options = options
        self._room_handle = room_handle
        self._store = fc.KeyStore(_store_options(options))
        # the index of the key set last: the shared key's (""), or each identity's
        self._latest: dict[str, int] = {}
        self._index_listeners: list[Callable[[str | None, int], None]] = []
        if options.shared_key is not None:
            self._store.set_shared_key(_key_bytes(options.shared_key), 0)

    @property
    def options(self) -> KeyProviderOptions:
        return self._options

    def _key_index_changed(self, identity: str | None, key_index: int) -> None:
        self._latest[identity or ""] = key_index
        for listener in list(self._index_listeners):
            listener(identity, key_index)

    def _latest_index(self, identity: str) -> int:
        """The index ``identity``'s tracks and data are encrypted with: its own key set
        last (per-participant keys), else the shared key set last."""
        return self._latest.get(identity, self._latest.get("", 0))

    def _check_index(self, key_index: int) -> int:
        if not isinstance(key_index, int) or not 0 <= key_index < self._store.options.key_ring_size:
            raise ValueError(f"key_index must be in 0..{self._store.options.key_ring_size - 1}")
        return key_index

    def set_shared_key(self, key: bytes, key_index: int) -> None:
        """Set the shared key at ``key_index`` (every participant's copy too); the tracks
        published from now on are encrypted with it. No-op without a shared key."""
        if self._store.set_shared_key(_key_bytes(key), self._check_index(key_index)):
            self._key_index_changed(None, key_index)
        else:
            logger.warning("set_shared_key ignored: the key provider has no shared key "
                           "(KeyProviderOptions.shared_key was None)")

    def export_shared_key(self, key_index: int) -> bytes:
        return self._store.export_shared_key(self._check_index(key_index))

    def ratchet_shared_key(self, key_index: int) -> bytes:
        """Ratchet the shared key at ``key_index``; the new key (``b""`` without one)."""
        return self._store.ratchet_shared_key(self._check_index(key_index))

    def set_key(self, participant_identity: str, key: bytes, key_index: int) -> None:
        """Set ``participant_identity``'s key at ``key_index`` (per-participant keys)."""
        self._store.set_key(str(participant_identity), _key_bytes(key),
                            self._check_index(key_index))
        self._key_index_changed(str(participant_identity), key_index)

    def export_key(self, participant_identity: str, key_index: int) -> bytes:
        return self._store.export_key(str(participant_identity), self._check_index(key_index))

    def ratchet_key(self, participant_identity: str, key_index: int) -> bytes:
        return self._store.ratchet_key(str(participant_identity), self._check_index(key_index))


class FrameCryptor:
    """The encryption state of one track (a snapshot: ``E2EEManager.frame_cryptors()``);
    :meth:`set_enabled` and :meth:`set_key_index` act on the live cryptor."""

    def __init__(self, room_handle: Any, participant_identity: str, track_sid: str,
                 key_index: int, enabled: bool) -> None:
        self._room_handle = room_handle
        self._participant_identity = participant_identity
        self._track_sid = track_sid
        self._key_index = key_index
        self._enabled = enabled

    @property
    def participant_identity(self) -> str:
        return self._participant_identity

    @property
    def track_sid(self) -> str:
        return self._track_sid

    @property
    def key_index(self) -> int:
        return self._key_index

    @property
    def enabled(self) -> bool:
        return self._enabled

    def _core(self) -> fc.FrameCryptorCore | None:
        manager = self._room_handle
        if isinstance(manager, E2EEManager):
            return manager._core(self._participant_identity, self._track_sid)
        return None

    def set_enabled(self, enabled: bool) -> None:
        """Encrypt (decrypt) this track's frames or not."""
        self._enabled = bool(enabled)
        core = self._core()
        if core is not None:
            core.enabled = self._enabled

    def set_key_index(self, key_index: int) -> None:
        """The key index this track's frames are encrypted with (a local track)."""
        self._key_index = int(key_index)
        core = self._core()
        if core is not None:
            core.key_index = self._key_index


StateListener = Callable[[str, str, EncryptionState], None]


class E2EEManager:
    """A room's end-to-end encryption (``Room.e2ee_manager``): the key provider and one
    frame cryptor per published or subscribed encrypted track."""

    def __init__(self, room_handle: Any, options: E2EEOptions | None) -> None:
        self.options = options
        self._room_handle = room_handle
        self._enabled = options is not None
        self._key_provider: KeyProvider | None = None
        # (identity, track sid) -> (cryptor, local)
        self._cryptors: dict[tuple[str, str], tuple[fc.FrameCryptorCore, bool]] = {}
        self._on_state: StateListener | None = None
        if options is not None:
            if int(options.encryption_type) != int(EncryptionType.GCM):
                from .errors import UnsupportedOptionError

                raise UnsupportedOptionError(
                    "E2EEOptions.encryption_type", options.encryption_type,
                    detail="only EncryptionType.GCM (LiveKit's frame format) is implemented")
            self._key_provider = KeyProvider(room_handle, options.key_provider_options)
            self._key_provider._index_listeners.append(self._follow_key_index)

    @property
    def key_provider(self) -> KeyProvider | None:
        return self._key_provider

    @property
    def enabled(self) -> bool:
        return self._enabled and self._key_provider is not None

    def set_enabled(self, enabled: bool) -> None:
        """Encrypt and decrypt (True) or pass frames through unchanged (False)."""
        self._enabled = bool(enabled)
        for core, _ in self._cryptors.values():
            core.enabled = self._enabled

    def frame_cryptors(self) -> list[FrameCryptor]:
        return [FrameCryptor(self, identity, sid, core.key_index, core.enabled)
                for (identity, sid), (core, _) in self._cryptors.items()]

    # -- the Room's side

    @property
    def _store(self) -> fc.KeyStore | None:
        return self._key_provider._store if self._key_provider is not None else None

    def _core(self, identity: str, track_sid: str) -> fc.FrameCryptorCore | None:
        entry = self._cryptors.get((identity, track_sid))
        return entry[0] if entry is not None else None

    def _follow_key_index(self, identity: str | None, key_index: int) -> None:
        """A key set (the shared one, or our own identity's): our tracks encrypt with its
        index from now on (as livekit-client); a remote participant's key changes nothing
        here."""
        for core, local in self._cryptors.values():
            if local and (identity is None or identity == core.participant):
                core.key_index = key_index

    def _new_cryptor(self, identity: str, track_sid: str, local: bool
                     ) -> fc.FrameCryptorCore | None:
        store = self._store
        if store is None:
            return None
        old = self._cryptors.get((identity, track_sid))
        if old is not None:
            return old[0]

        def on_state(state: int) -> None:
            listener = self._on_state
            if listener is not None:
                listener(identity, track_sid, EncryptionState(state))

        assert self._key_provider is not None
        core = fc.FrameCryptorCore(store, identity, enabled=self._enabled, on_state=on_state,
                                   key_index=self._key_provider._latest_index(identity)
                                   if local else 0)
        self._cryptors[(identity, track_sid)] = (core, local)
        return core

    def _remove(self, track_sid: str) -> None:
        for key in [k for k in self._cryptors if k[1] == track_sid]:
            del self._cryptors[key]

    def _clear(self) -> None:
        self._cryptors.clear()
