"""Transport-wide congestion control feedback toward a publisher (the asyncio shell).

When a publisher's offer carries the transport-cc header extension on a video m-line
(libwebrtc always offers it), the answer accepts it and the ``transport-cc`` RTCP
feedback type, as livekit-server does, and :class:`TwccFeedback` reports every
transport-wide sequence number's arrival (:class:`~aiolivekit.webrtc.twcc.TwccRecorder`)
every :data:`INTERVAL` seconds. libwebrtc's send-side bandwidth estimation ramps its
encoder up on these reports; with REMB alone (aiortc's receiver estimate from
abs-send-time, which libwebrtc stops sending once transport-cc is negotiated) it stayed
at a few hundred kbit/s.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from typing import Any

from .._compat import aiortc as aiortc_compat
from ..webrtc.twcc import TwccRecorder, transport_sequence_number

__all__ = ["INTERVAL", "TwccFeedback"]

logger = logging.getLogger(__name__)

INTERVAL = 0.05  # seconds between two feedback rounds (libwebrtc: 50..250 ms)
SEND_TIMEOUT = 1.0

_by_transport: weakref.WeakKeyDictionary[Any, TwccFeedback] = weakref.WeakKeyDictionary()


class TwccFeedback:
    """Arrivals of one DTLS transport's RTP packets -> transport-cc feedback to its sender."""

    def __init__(self, dtls: Any, ext_id: int) -> None:
        self._dtls = dtls
        self.ext_id = ext_id
        self.recorder = TwccRecorder(random.getrandbits(32) or 1)
        self.errors = 0

    @classmethod
    def start(cls, dtls: Any, ext_id: int, tasks: set[asyncio.Task[Any]]) -> TwccFeedback | None:
        """The transport's feedback (created, hooked and its loop added to ``tasks`` on
        the first call; later calls follow a changed extension id). ``None`` when
        aiortc's receive path cannot be tapped (then no feedback is sent, logged)."""
        fb = _by_transport.get(dtls)
        if fb is not None:
            fb.ext_id = ext_id
            return fb
        fb = cls(dtls, ext_id)
        if not aiortc_compat.tap_rtp_arrivals(dtls, fb.on_rtp):
            logger.warning("aiortc internals changed: no transport-cc feedback is sent; "
                           "libwebrtc publishers will not ramp up their bitrate")
            return None
        _by_transport[dtls] = fb
        task = asyncio.ensure_future(fb.run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return fb

    def on_rtp(self, data: bytes) -> None:
        """One decrypted RTP packet of the transport (called before aiortc routes it)."""
        try:
            seq = transport_sequence_number(data, self.ext_id)
            if seq is not None:
                ssrc = int.from_bytes(data[8:12], "big")
                self.recorder.record(seq, time.monotonic(), ssrc)
        except Exception:  # a bad packet must not stop aiortc's receive path
            self.errors += 1
            if self.errors == 1:
                logger.exception("transport-cc arrival not recorded")

    async def run(self) -> None:
        """Send the feedback every :data:`INTERVAL` until the transport closes."""
        send = aiortc_compat.dtls_send_rtp(self._dtls)
        while True:
            await asyncio.sleep(INTERVAL)
            if not aiortc_compat.dtls_connected(self._dtls):
                if getattr(self._dtls, "state", "") in ("closed", "failed"):
                    return
                continue
            for packet in self.recorder.build():
                try:
                    await asyncio.wait_for(send(packet), SEND_TIMEOUT)
                except (ConnectionError, OSError, asyncio.TimeoutError) as e:
                    logger.debug("transport-cc feedback not sent: %s", e)
                    break
