"""The server-to-client data channels of one session: ``_reliable`` and ``_lossy``, with
reliable messages held (bounded) until the channel opens."""

from __future__ import annotations

import logging

from aiortc import RTCDataChannel, RTCPeerConnection

__all__ = ["LOSSY_HIGH_WATER", "MAX_BUFFERED_RELIABLE", "DownstreamData"]

logger = logging.getLogger(__name__)

MAX_BUFFERED_RELIABLE = 1000
LOSSY_HIGH_WATER = 64 * 1024  # lossy packets are dropped while this much is queued


class DownstreamData:
    """Sends room data to one participant."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.reliable: RTCDataChannel | None = None
        self.lossy: RTCDataChannel | None = None
        self._pending: list[bytes] = []

    def create_on(self, pc: RTCPeerConnection) -> None:
        """Create both channels on the server's subscriber PC (the primary one)."""
        self.reliable = pc.createDataChannel("_reliable", ordered=True)
        self.lossy = pc.createDataChannel("_lossy", ordered=False, maxRetransmits=0)
        self.reliable.on("open", self.flush)

    def adopt(self, channel: RTCDataChannel, reliable: bool) -> None:
        """Use a channel the client created on its publisher PC (no subscriber PC)."""
        if reliable and self.reliable is None:
            self.reliable = channel
            if channel.readyState == "open":
                self.flush()
            else:
                channel.on("open", self.flush)
        elif not reliable and self.lossy is None:
            self.lossy = channel

    def send(self, payload: bytes, reliable: bool) -> None:
        channel = self.reliable if reliable else self.lossy
        if channel is None or channel.readyState != "open":
            if reliable and len(self._pending) < MAX_BUFFERED_RELIABLE:
                self._pending.append(payload)
            return
        if not reliable and channel.bufferedAmount > LOSSY_HIGH_WATER:
            return
        try:
            channel.send(payload)
        except Exception:
            logger.debug("data send to %s failed (reliable=%s), packet dropped", self.sid,
                         reliable, exc_info=True)

    def flush(self) -> None:
        """Send the reliable messages held while the channel was not open."""
        pending, self._pending = self._pending, []
        if self.reliable is None:
            return
        for payload in pending:
            try:
                self.reliable.send(payload)
            except Exception:
                logger.debug("buffered reliable data send to %s failed, packet dropped",
                             self.sid, exc_info=True)

    def release(self) -> None:
        """Drop listeners and held messages (no reference cycle outlives the session)."""
        for channel in (self.reliable, self.lossy):
            if channel is not None:
                channel.remove_all_listeners()
        self._pending = []
