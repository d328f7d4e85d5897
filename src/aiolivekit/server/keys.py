"""Where ``aiolivekit serve`` finds its API keys, and the checks it makes before listening.

The sources are those of livekit-server: ``--keys``, a key file (``--key-file``, lines of
``key: secret``, not readable by others), ``LIVEKIT_KEYS`` and, as the server SDKs read
them, ``LIVEKIT_API_KEY`` + ``LIVEKIT_API_SECRET``. Without any of them the server refuses
to start unless ``--dev`` asks for the public development pair ``devkey`` / ``secret``,
which it then only serves on a loopback address (``--insecure-dev-keys`` overrides).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from .config import DEV_API_KEY, DEV_API_SECRET

__all__ = [
    "MIN_SECRET_LENGTH",
    "KeyConfigError",
    "KeySource",
    "is_loopback_bind",
    "load_key_file",
    "parse_key_text",
    "resolve_keys",
    "short_secrets",
]

MIN_SECRET_LENGTH = 32
"""Secrets shorter than this (bytes) are reported, as livekit-server does."""


class KeyConfigError(ValueError):
    """No usable API keys, or a refused combination of options; the message says why."""


@dataclass(frozen=True)
class KeySource:
    """The keys chosen and where they came from (for the startup line)."""

    keys: dict[str, str]
    origin: str
    dev: bool = False


def parse_key_text(text: str) -> dict[str, str]:
    """``key: secret`` pairs separated by newlines or commas (a line starting with ``#``
    is a comment; the value may be quoted); raises ``ValueError`` naming a malformed entry."""
    keys: dict[str, str] = {}
    for raw_line in text.replace(",", "\n").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, secret = line.partition(":")
        key, secret = key.strip().strip("'\""), secret.strip()
        if len(secret) >= 2 and secret[0] == secret[-1] and secret[0] in "'\"":
            secret = secret[1:-1]
        if not sep or not key or not secret:
            raise ValueError(f"invalid key pair {line!r}: expected key:secret")
        keys[key] = secret
    if not keys:
        raise ValueError("no API keys given")
    return keys


def load_key_file(path: str) -> dict[str, str]:
    """Read a livekit-server key file; like livekit-server, refuse one that others may
    read or write."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KeyConfigError(f"key file {path!r}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXO):
        raise KeyConfigError(f"key file {path!r} is accessible by others "
                        f"(mode {stat.S_IMODE(st.st_mode):o}); chmod o-rwx it")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyConfigError(f"key file {path!r}: {exc}") from None
    try:
        return parse_key_text(text)
    except ValueError as exc:
        raise KeyConfigError(f"key file {path!r}: {exc}") from None


def is_loopback_bind(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (a wildcard is not loopback)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def resolve_keys(*, keys_arg: str | None, key_file: str | None, dev: bool,
                 bind: str, insecure_dev_keys: bool,
                 environ: Mapping[str, str] | None = None) -> KeySource:
    """Pick the API keys: ``--keys``, ``--key-file``, ``LIVEKIT_KEYS``,
    ``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET``, then (``--dev`` only) the dev pair."""
    env = os.environ if environ is None else environ
    try:
        if keys_arg:
            return KeySource(parse_key_text(keys_arg), "--keys")
        if key_file:
            return KeySource(load_key_file(key_file), f"key file {key_file}")
        if env.get("LIVEKIT_KEYS", "").strip():
            return KeySource(parse_key_text(env["LIVEKIT_KEYS"]), "LIVEKIT_KEYS")
    except ValueError as exc:
        if isinstance(exc, KeyConfigError):
            raise
        raise KeyConfigError(str(exc)) from None
    api_key, api_secret = env.get("LIVEKIT_API_KEY", ""), env.get("LIVEKIT_API_SECRET", "")
    if api_key or api_secret:
        if not (api_key and api_secret):
            raise KeyConfigError("LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set together")
        return KeySource({api_key: api_secret}, "LIVEKIT_API_KEY/LIVEKIT_API_SECRET")
    if not dev:
        raise KeyConfigError(
            "no API keys: pass --keys key:secret or --key-file FILE, or set LIVEKIT_KEYS "
            "or LIVEKIT_API_KEY + LIVEKIT_API_SECRET (or --dev for the public development "
            f"key {DEV_API_KEY} / {DEV_API_SECRET} on loopback)")
    if not is_loopback_bind(bind) and not insecure_dev_keys:
        raise KeyConfigError(
            f"--dev uses the public development key {DEV_API_KEY} / {DEV_API_SECRET}, which "
            f"anyone can sign tokens with; it is only served on loopback, not on {bind!r}. "
            "Pass real keys (--keys, --key-file, LIVEKIT_KEYS), or --insecure-dev-keys if "
            "this network is trusted")
    return KeySource({DEV_API_KEY: DEV_API_SECRET}, "--dev", dev=True)


def short_secrets(keys: Mapping[str, str]) -> list[str]:
    """The API keys whose secrets are shorter than :data:`MIN_SECRET_LENGTH` bytes."""
    return [k for k, s in keys.items() if len(s.encode()) < MIN_SECRET_LENGTH]
