"""``livekit.rtc.log``: the logger aiolivekit's client logs under (``aiolivekit``)."""

from __future__ import annotations

import logging

logger = logging.getLogger("aiolivekit")

__all__ = ["logger"]
