"""Configuration of the embedded server (bind address, port, API keys)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = ["DEFAULT_PORT", "DEV_API_KEY", "DEV_API_SECRET", "ServerConfig", "parse_keys"]

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
DEFAULT_PORT = 7880


def parse_keys(text: str) -> dict[str, str]:
    """Parse ``key:secret[,key2:secret2]`` into a dict; raise ``ValueError`` if malformed."""
    keys: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, secret = item.partition(":")
        key, secret = key.strip(), secret.strip()
        if not sep or not key or not secret:
            raise ValueError(f"invalid key pair {item!r}: expected key:secret")
        keys[key] = secret
    if not keys:
        raise ValueError("no API keys given")
    return keys


@dataclass
class ServerConfig:
    """Where the server listens and which API keys it accepts."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    keys: dict[str, str] = field(default_factory=lambda: {DEV_API_KEY: DEV_API_SECRET})

    def ice_addresses(self) -> list[str] | None:
        """The addresses the server's peer connections gather on.

        A specific IP bind address is used as is; a wildcard or host name gives ``None``
        (aioice's default: every non-loopback interface).
        """
        try:
            addr = ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return ["127.0.0.1"] if self.host == "localhost" else None
        if addr.is_unspecified:
            return None
        return [str(addr)]
