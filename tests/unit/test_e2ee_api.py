"""The E2EE API objects (issue 17): KeyProvider, E2EEManager, FrameCryptor, without I/O."""

from __future__ import annotations

import pytest

from aiolivekit import E2EEManager, E2EEOptions, KeyProvider, KeyProviderOptions
from aiolivekit.errors import UnsupportedOptionError
from aiolivekit.media import frame_crypto as fc
from aiolivekit.types import EncryptionState, EncryptionType
from aiolivekit.types_ext import KeyDerivationFunction


def test_shared_key_provider() -> None:
    kp = KeyProvider(None, KeyProviderOptions(shared_key=b"k0"))
    assert kp.export_shared_key(0) == b"k0" and kp.export_shared_key(1) == b""
    kp.set_shared_key(b"k1", 1)
    new = kp.ratchet_shared_key(1)
    assert new == fc.derive(b"k1", fc.DEFAULT_RATCHET_SALT, fc.KDF_PBKDF2, 256)
    assert kp.export_shared_key(1) == new
    assert kp.ratchet_shared_key(5) == b""  # no key there
    kp.set_shared_key("a string key", 2)  # type: ignore[arg-type]
    assert kp.export_shared_key(2) == b"a string key"
    with pytest.raises(ValueError):
        kp.set_shared_key(b"x", 16)  # key_ring_size 16
    with pytest.raises(ValueError):
        kp.set_shared_key(b"", 0)
    with pytest.raises(TypeError):
        kp.set_shared_key(123, 0)  # type: ignore[arg-type]


def test_per_participant_key_provider_and_hkdf() -> None:
    kp = KeyProvider(None, KeyProviderOptions(
        key_derivation_function=KeyDerivationFunction.HKDF, ratchet_salt=b"salt"))
    kp.set_shared_key(b"ignored", 0)  # no shared key configured: a warning, nothing set
    assert kp.export_shared_key(0) == b""
    kp.set_key("alice", b"ka", 0)
    assert kp.export_key("alice", 0) == b"ka" and kp.export_key("bob", 0) == b""
    assert kp.ratchet_key("alice", 0) == fc.derive(b"ka", b"salt", fc.KDF_HKDF, 256)
    assert kp.ratchet_key("bob", 0) == b""


def test_manager_cryptors_follow_own_and_shared_keys_only() -> None:
    m = E2EEManager(None, E2EEOptions(KeyProviderOptions(shared_key=None)))
    kp = m.key_provider
    assert kp is not None and m.enabled
    states: list[tuple[str, str, EncryptionState]] = []
    m._on_state = lambda identity, sid, state: states.append((identity, sid, state))
    local = m._new_cryptor("me", "TR_local", local=True)
    remote = m._new_cryptor("them", "TR_remote", local=False)
    assert local is not None and remote is not None
    kp.set_key("them", b"their key", 2)  # someone else's key: our tracks do not move
    assert local.key_index == 0
    kp.set_key("me", b"my key", 3)
    assert local.key_index == 3 and remote.key_index == 0
    wire = local.encrypt(b"\xfc" + bytes(10), "opus", 1, 1)
    assert wire is not None and wire[-1] == 3
    assert states == [("me", "TR_local", EncryptionState.OK)]
    snap = {c.track_sid: c for c in m.frame_cryptors()}
    assert set(snap) == {"TR_local", "TR_remote"}
    assert snap["TR_local"].participant_identity == "me" and snap["TR_local"].key_index == 3
    snap["TR_local"].set_key_index(1)
    snap["TR_remote"].set_enabled(False)
    assert local.key_index == 1 and not remote.enabled
    m.set_enabled(False)
    assert not m.enabled and not local.enabled
    assert local.encrypt(b"\xfc\x01", "opus", 1, 2) == b"\xfc\x01"  # disabled: unchanged
    m._remove("TR_remote")
    assert [c.track_sid for c in m.frame_cryptors()] == ["TR_local"]


def test_manager_without_options_and_refused_types() -> None:
    m = E2EEManager(None, None)
    assert not m.enabled and m.key_provider is None and m.frame_cryptors() == []
    assert m._new_cryptor("me", "TR_x", local=True) is None
    with pytest.raises(UnsupportedOptionError):
        E2EEManager(None, E2EEOptions(encryption_type=EncryptionType.CUSTOM))
    with pytest.raises(ValueError):
        KeyProvider(None, KeyProviderOptions(key_derivation_function=7))  # type: ignore[arg-type]
