"""The embedded LiveKit-compatible dev server (signalling, rooms, Twirp RoomService, SFU)."""

from __future__ import annotations

from typing import Any

__all__ = ["DevServer", "ForwardingOptions", "ServerConfig"]


def __getattr__(name: str) -> Any:
    if name == "DevServer":
        from .devserver import DevServer

        return DevServer
    if name == "ServerConfig":
        from .config import ServerConfig

        return ServerConfig
    if name == "ForwardingOptions":
        from .config import ForwardingOptions

        return ForwardingOptions
    raise AttributeError(name)
