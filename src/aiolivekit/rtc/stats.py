"""``livekit.rtc.stats``: the official SDK's stats messages (``RtcStats``,
``InboundRtpStreamStats`` ...).

They are not provided yet: ``Room.get_rtc_stats()`` and ``Track.get_stats()`` return
aiortc's stats objects (``.type``, W3C field names). Every name of the official module
raises ``AttributeError`` saying so (an ``AttributeError``, so that ``hasattr`` and
introspection keep working); issue 15 lists the official messages for a later session.
"""

from __future__ import annotations

from typing import NoReturn

__all__: list[str] = []


def __getattr__(name: str) -> NoReturn:
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"aiolivekit.rtc.stats.{name}: the official stats messages are not provided yet "
        "(aiolivekit issue 15); Room.get_rtc_stats() and Track.get_stats() return aiortc "
        "stats objects")
