"""RoomE2EE (mixed into Room): end-to-end encryption of a room's tracks (issue 17).

``RoomOptions(encryption=E2EEOptions(...))`` (or the deprecated ``e2ee=``) makes
``Room.e2ee_manager`` a live :class:`~aiolivekit.e2ee.E2EEManager`; every track published
then carries a frame cryptor (``AddTrackRequest.encryption = GCM``), every subscribed
track whose publication says it is encrypted gets a decrypting one. Cryptor state changes
are the ``e2ee_state_changed(participant, state)`` events; a participant whose
publications all become encrypted (or stop being so) emits
``participant_encryption_status_changed(participant, is_encrypted)``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError
from livekit.protocol import models as models_pb

from .e2ee import E2EEManager, E2EEOptions
from .media import frame_crypto as fc, frame_crypto_shell as crypto_shell
from .types import EncryptionState, EncryptionType, RoomOptions

if TYPE_CHECKING:
    from .participant import LocalParticipant, Participant, RemoteParticipant
    from .track_publication import RemoteTrackPublication

__all__ = ["ENCRYPTABLE", "RoomE2EE"]

logger = logging.getLogger(__name__)

# the DataPacket values the official SDKs send as an EncryptedPacketPayload
ENCRYPTABLE = ("user", "chat_message", "rpc_request", "rpc_ack", "rpc_response",
               "stream_header", "stream_chunk", "stream_trailer")


class RoomE2EE:
    """The Room's end-to-end encryption state (a mixin; Room provides the rest)."""

    _local: LocalParticipant | None
    _remote: dict[str, RemoteParticipant]

    if TYPE_CHECKING:  # provided by the Room (EventEmitter)
        def emit(self, event: Any, *args: Any) -> None: ...

    def _init_e2ee(self) -> None:
        self._e2ee = E2EEManager(None, None)
        self._encryption_status: dict[str, bool] = {}
        self._no_key_store: fc.KeyStore | None = None
        self._data_cryptor: fc.DataCryptorCore | None = None

    @property
    def e2ee_manager(self) -> E2EEManager:
        """The room's E2EE manager (disabled, without a key provider, when the room was
        connected without ``RoomOptions.encryption``)."""
        return self._e2ee

    @staticmethod
    def _e2ee_options(options: RoomOptions) -> E2EEOptions | None:
        if options.e2ee is not None:
            warnings.warn("RoomOptions.e2ee is deprecated, use RoomOptions.encryption",
                          DeprecationWarning, stacklevel=3)
        value = options.encryption or options.e2ee
        if value is not None and not isinstance(value, E2EEOptions):
            raise TypeError(f"RoomOptions.encryption must be an E2EEOptions, not "
                            f"{type(value).__name__}")
        return value

    def _setup_e2ee(self, options: RoomOptions) -> None:
        """At connect: a manager for ``options`` (before any network I/O)."""
        self._e2ee = E2EEManager(self, self._e2ee_options(options))
        self._e2ee._on_state = self._e2ee_state_changed
        self._encryption_status = {}
        store = self._e2ee._store
        self._data_cryptor = None
        if store is not None:
            crypto_shell.derive_in_background(store, asyncio.get_running_loop())
            self._data_cryptor = fc.DataCryptorCore(store)

    @property
    def _e2ee_configured(self) -> bool:
        return self._e2ee._store is not None

    def _e2ee_joined(self, join: Any) -> None:
        """The JoinResponse's server-injected-frame trailer (frames passed in clear)."""
        store = self._e2ee._store
        if store is not None:
            store.sif_trailer = bytes(join.sif_trailer)

    def _e2ee_participant(self, identity: str) -> Participant | None:
        local = self._local
        if local is not None and local.identity == identity:
            return local
        return self._remote.get(identity)

    def _e2ee_state_changed(self, identity: str, track_sid: str, state: EncryptionState) -> None:
        logger.debug("e2ee state of %s/%s: %s", identity, track_sid, state.name)
        p = self._e2ee_participant(identity)
        if p is not None:
            self.emit("e2ee_state_changed", p, state)

    # -- local tracks

    def _e2ee_encryption(self) -> int:
        """The AddTrackRequest ``encryption`` of a track published now."""
        return int(EncryptionType.GCM) if self._e2ee_configured else int(EncryptionType.NONE)

    def _e2ee_attach_local(self, track: Any, track_sid: str, old_sid: str | None = None) -> None:
        """Give a local track's aiortc track the cryptor of ``track_sid``."""
        if old_sid is not None:
            self._e2ee._remove(old_sid)
        local = self._local
        if not self._e2ee_configured or local is None:
            return
        core = self._e2ee._new_cryptor(local.identity, track_sid, local=True)
        track._rtc_track.frame_cryptor = core

    def _e2ee_detach(self, track_sid: str) -> None:
        self._e2ee._remove(track_sid)

    # -- remote tracks

    def _e2ee_attach_remote(self, p: RemoteParticipant, pub: RemoteTrackPublication,
                            receiver: Any, kind: str) -> None:
        """Decrypt what ``receiver`` gets for ``pub`` when its publication is encrypted."""
        if receiver is None:
            return
        encrypted = int(pub._info.encryption) != int(EncryptionType.NONE)
        core: fc.FrameCryptorCore | None = None
        if encrypted:
            core = self._e2ee._new_cryptor(p.identity, pub.sid, local=False)
            if core is None:
                # no keys here: drop the frames (ciphertext must not reach the decoder)
                logger.warning("track %s of %s is end-to-end encrypted but this room has no "
                               "RoomOptions.encryption: nothing of it can be decoded",
                               pub.sid, p.identity)
                core = fc.FrameCryptorCore(self._no_keys(), p.identity)
        if not crypto_shell.install_decryptor(receiver, kind, core) and core is not None:
            logger.error("cannot decrypt track %s: no jitter buffer to hook", pub.sid)

    def _e2ee_hold(self, receiver: Any, kind: str) -> None:
        """A track arrived before its publication: with encryption on, drop its frames
        until the publication says how to decrypt them (ciphertext must not reach the
        decoder)."""
        if receiver is None or not self._e2ee_configured:
            return
        crypto_shell.install_decryptor(receiver, kind, fc.FrameCryptorCore(self._no_keys(), ""))

    def _no_keys(self) -> fc.KeyStore:
        if self._no_key_store is None:
            self._no_key_store = fc.KeyStore(fc.KeyStoreOptions())
        return self._no_key_store

    # -- participants' encryption status

    def _e2ee_status(self, p: Participant) -> None:
        pubs = list(p.track_publications.values())
        encrypted = bool(pubs) and all(
            int(pub.encryption_type) != int(EncryptionType.NONE) for pub in pubs)
        if self._encryption_status.get(p.identity, False) != encrypted:
            self._encryption_status[p.identity] = encrypted
            self.emit("participant_encryption_status_changed", p, encrypted)

    # -- data packets

    def _e2ee_seal(self, packet: models_pb.DataPacket) -> None:
        """Encrypt ``packet``'s value in place (``encrypted_packet``) when this room
        encrypts; raises ``PublishDataError`` when it should but has no key."""
        cryptor = self._data_cryptor
        if cryptor is None or not self._e2ee.enabled:
            return
        which = packet.WhichOneof("value")
        if which not in ENCRYPTABLE:
            return
        local = self._local
        provider = self._e2ee.key_provider
        assert provider is not None
        payload = models_pb.EncryptedPacketPayload()
        getattr(payload, which).CopyFrom(getattr(packet, which))
        identity = local.identity if local is not None else ""
        key_index = provider._latest_index(identity)
        sealed = cryptor.encrypt(identity, key_index, payload.SerializeToString(),
                                 time.monotonic_ns() // 1_000_000)
        if sealed is None:
            from .errors import PublishDataError

            raise PublishDataError(f"cannot encrypt data: no key at index {key_index} for "
                                   "the local participant (end-to-end encryption is on)")
        data, iv = sealed
        packet.encrypted_packet.CopyFrom(models_pb.EncryptedPacket(
            encryption_type=models_pb.Encryption.GCM, iv=iv, key_index=key_index,
            encrypted_value=data))

    def _e2ee_open(self, packet: models_pb.DataPacket) -> bool:
        """Decrypt an ``encrypted_packet`` in place; False (drop it) when it cannot be."""
        enc = packet.encrypted_packet
        cryptor = self._data_cryptor
        sender = packet.participant_identity
        if cryptor is None:
            logger.warning("dropping an end-to-end encrypted data packet from %s: this room "
                           "has no RoomOptions.encryption", sender)
            return False
        plain = cryptor.decrypt(sender, int(enc.key_index), bytes(enc.iv),
                                bytes(enc.encrypted_value))
        if plain is None:
            logger.warning("dropping a data packet from %s that does not decrypt "
                           "(key index %d)", sender, enc.key_index)
            return False
        payload = models_pb.EncryptedPacketPayload()
        try:
            payload.ParseFromString(plain)
        except DecodeError:
            logger.warning("dropping a decrypted data packet from %s: not a payload", sender)
            return False
        which = payload.WhichOneof("value")
        if which is None:
            return False
        getattr(packet, which).CopyFrom(getattr(payload, which))  # clears encrypted_packet
        return True
