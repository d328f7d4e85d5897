"""One aiortc RTCPeerConnection in a LiveKit role (publisher or subscriber).

Wraps the aiortc calls the engine needs: offer/answer with gathering restricted to the
chosen host addresses, "trickling" the candidates aiortc embedded in its local SDP,
applying remote trickles (queued until a remote description exists), and waiting for
the connection with a timeout. Always created with an explicit ``iceServers`` list.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from ..webrtc import ice, sdp, simulcast_sdp
from ..webrtc.pc import (
    answer_keepalives_fast,
    apply_remote_ice_restart,
    hasten_nomination,
    start_late_transceivers,
    take_over_consent,
)

__all__ = ["PeerTransport"]

logger = logging.getLogger(__name__)


class PeerTransport:
    """A publisher or subscriber peer connection."""

    def __init__(
        self,
        target: int,
        *,
        ice_servers: list[RTCIceServer],
        host_addresses: list[str] | None,
        on_candidate: Callable[[str, int], None],
        relay_only: bool = False,
    ) -> None:
        self.target = target
        self.host_addresses = host_addresses
        self._on_candidate = on_candidate
        # relay-only: aioice gathers relay candidates only (no host, no server-reflexive)
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        self.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=list(ice_servers), iceTransportPolicy=policy,
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self._pending: list[str] = []
        self._remote_set = False
        self._sent_candidates: set[str] = set()
        self._end_of_candidates = False
        self._connected = asyncio.Event()
        self._failed = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)
        self.last_remote_sdp = ""
        self.closed = False
        self._late_start_tasks: set[asyncio.Task[Any]] = set()

    def _on_state(self) -> None:
        state = self.pc.connectionState
        logger.debug("pc %d connection state %s", self.target, state)
        if state == "connected":
            self._connected.set()
            start_late_transceivers(self.pc, self._late_start_tasks)
            take_over_consent(self.pc)
        elif state in ("failed", "closed"):
            self._failed.set()

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    async def wait_connected(self, timeout: float) -> bool:
        """True once connected; False on failure or timeout."""
        if self._connected.is_set():
            return True
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(self._connected.wait()),
             asyncio.ensure_future(self._failed.wait())],
            timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        return self._connected.is_set()

    def on_failed(self) -> asyncio.Event:
        return self._failed

    async def _set_local(self, description: RTCSessionDescription) -> str:
        with ice.host_addresses(self.host_addresses):
            await self.pc.setLocalDescription(description)
        answer_keepalives_fast(self.pc)
        local = self.pc.localDescription.sdp
        self._trickle_local(local)
        return local

    def _trickle_local(self, local_sdp: str) -> None:
        for mid, index, line in sdp.local_candidates(local_sdp):
            key = line.split(" ", 1)[1] if " " in line else line
            if key in self._sent_candidates:
                continue
            self._sent_candidates.add(key)
            init = json.dumps({"candidate": line, "sdpMid": mid, "sdpMLineIndex": index})
            self._on_candidate(init, self.target)

    async def create_offer(self) -> str:
        """Create and apply a local offer; returns its SDP (with candidates)."""
        offer = await self.pc.createOffer()
        # audio we send is not kept for retransmission: no NACK invited for it
        offer = RTCSessionDescription(sdp=sdp.drop_send_audio_nack(offer.sdp), type="offer")
        local = await self._set_local(offer)
        # simulcast (a=rid, a=simulcast): aiortc neither keeps nor writes them, so they go
        # into the text sent, after aiortc applied (and re-serialised) the offer
        for transceiver in self.pc.getTransceivers():
            track = transceiver.sender.track
            rids = getattr(track, "simulcast_rids", None)
            if rids:  # a simulcast video track (media.rtc_local)
                local = simulcast_sdp.offer_simulcast(local, track.id, rids)
        return local

    async def set_answer(self, answer_sdp: str) -> None:
        self.last_remote_sdp = answer_sdp
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        apply_remote_ice_restart(self.pc, answer_sdp)
        await self._remote_applied()

    async def answer(self, offer_sdp: str) -> str:
        """Apply a remote offer and return our answer SDP."""
        self.last_remote_sdp = offer_sdp
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        apply_remote_ice_restart(self.pc, offer_sdp)
        hasten_nomination(self.pc)
        await self._remote_applied()
        answer = await self.pc.createAnswer()
        return await self._set_local(answer)

    async def _remote_applied(self) -> None:
        self._remote_set = True
        pending, self._pending = self._pending, []
        for init in pending:
            await self._add_candidate(init)

    async def add_remote_candidate(self, candidate_init: str, final: bool) -> None:
        """Apply a trickled candidate, or queue it until a remote description is set."""
        if candidate_init:
            if not self._remote_set:
                self._pending.append(candidate_init)
            else:
                await self._add_candidate(candidate_init)
        if final and self._remote_set and not self._pending:
            try:
                await self.pc.addIceCandidate(None)  # type: ignore[arg-type]
            except Exception:  # end-of-candidates is advisory
                logger.debug("end of candidates failed", exc_info=True)

    async def _add_candidate(self, candidate_init: str) -> None:
        await ice.add_remote_candidate(self.pc, candidate_init, bad_level=logging.WARNING)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in list(self._late_start_tasks):
            task.cancel()
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except Exception:  # includes asyncio.TimeoutError
            logger.debug("closing pc failed", exc_info=True)
