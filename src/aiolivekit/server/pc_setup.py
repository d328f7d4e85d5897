"""Peer-connection setup of the server's sessions: the publisher answer's RID and transport-cc
extensions and DTLS role, the forwarder attached to incoming media, a new server PC."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpHeaderExtensionParameters

from .._compat import aiortc as aiortc_compat, aiortc_sctp
from ..webrtc import ice, simulcast_sdp
from ..webrtc.pc import answer_keepalives_fast
from ..webrtc.twcc import TWCC_URI
from . import limits
from .config import ForwardingOptions
from .hub import ForwarderLike
from .twcc_feedback import TwccFeedback

if TYPE_CHECKING:  # pragma: no cover
    from aiortc import RTCRtpReceiver

__all__ = [
    "accept_video_extensions", "answer_as_dtls_server", "attach_forwarder", "limit_sctp", "new_pc",
]

logger = logging.getLogger(__name__)


def attach_forwarder(receiver: RTCRtpReceiver, kind: str, codecs: list[Any],
                      options: ForwardingOptions) -> ForwarderLike | None:
    try:
        from .forwarder import TrackForwarder
    except ImportError:  # the forwarder is not available: signalling only
        logger.warning("server.forwarder not available; media will not be forwarded")
        return None
    try:
        return TrackForwarder.attach(receiver, kind, codecs=codecs or None, options=options)
    except Exception:
        logger.exception("cannot forward this %s track", kind)
        return None


_TWCC_FB = RTCRtcpFeedback(type="transport-cc")
_NOT_MEDIA = ("rtx", "red", "ulpfec", "flexfec-03")
_ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_RID_URIS = (
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
)


def accept_video_extensions(pc: RTCPeerConnection, offer_sdp: str,
                            tasks: set[asyncio.Task[Any]], options: ForwardingOptions) -> None:
    """Answer the RID and transport-cc header extensions of video m-lines (aiortc drops
    them) and start the transport-cc feedback (owned by ``tasks``).

    libwebrtc keeps offering only the extensions that earlier answers accepted, and refuses
    to create a simulcast offer without the RID extension ("negotiates simulcast but does
    not negotiate the RID RTP header extension"); aiortc parses RIDs, and the forwarder
    routes simulcast layers by them (:mod:`.simulcast`; the session answers the layers,
    :func:`~aiolivekit.webrtc.simulcast_sdp.answer_simulcast`).

    transport-cc (extension and ``a=rtcp-fb:<pt> transport-cc``) is what livekit-server
    answers and what libwebrtc's send-side bandwidth estimation needs to ramp up; the
    feedback is :class:`~.twcc_feedback.TwccFeedback` (``options.transport_cc``). With it
    the video codecs get ``x-google-start-bitrate`` (``options.publisher_start_bitrate``):
    libwebrtc encodes its first frames at its start bitrate, and below 500 kbit/s it
    scales anything above 640x480 down and only climbs back on low quantizers, a step
    every few seconds.
    """
    try:
        description = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception:
        logger.debug("cannot parse the offer for RID extensions", exc_info=True)
        return
    by_mid = {m.rtp.muxId: m for m in description.media if m.kind == "video"}
    for transceiver in pc.getTransceivers():
        media = by_mid.get(transceiver.mid or "")
        if media is None or transceiver.kind != "video":
            continue
        extensions = aiortc_compat.transceiver_header_extensions(transceiver)
        have = {e.uri for e in extensions}
        for ext in media.rtp.headerExtensions:
            if ext.uri in _RID_URIS and ext.uri not in have:
                extensions.append(
                    RTCRtpHeaderExtensionParameters(id=ext.id, uri=ext.uri))
        twcc = next((e for e in media.rtp.headerExtensions if e.uri == TWCC_URI), None)
        if twcc is None or not options.transport_cc:
            continue
        if TWCC_URI not in have:
            extensions.append(RTCRtpHeaderExtensionParameters(id=twcc.id, uri=TWCC_URI))
        # no abs-send-time beside it: aiortc's receiver would answer that with its own
        # REMB estimate, which ramps far slower and caps libwebrtc's send rate
        extensions[:] = [e for e in extensions if e.uri != _ABS_SEND_TIME_URI]
        offered = {c.payloadType for c in media.rtp.codecs
                   if any(fb.type == "transport-cc" for fb in c.rtcpFeedback)}
        for codec in aiortc_compat.transceiver_codecs(transceiver):
            if codec.payloadType in offered and _TWCC_FB not in codec.rtcpFeedback:
                codec.rtcpFeedback.append(_TWCC_FB)
            if options.publisher_start_bitrate and codec.name.lower() not in _NOT_MEDIA:
                codec.parameters["x-google-start-bitrate"] = options.publisher_start_bitrate // 1000
        TwccFeedback.start(transceiver.receiver.transport, twcc.id, tasks)


async def answer_publisher(pc: RTCPeerConnection, offer_sdp: str, tasks: set[asyncio.Task[Any]],
                           options: ForwardingOptions, bind_addresses: list[str] | None,
                           timeout: float) -> str:
    """Answer a publisher's offer (applied already): the video extensions, our DTLS
    role, the answer applied locally; returns its SDP, with the simulcast layers the
    offer sends accepted."""
    accept_video_extensions(pc, offer_sdp, tasks, options)
    answer_as_dtls_server(pc, offer_sdp)
    answer = await asyncio.wait_for(pc.createAnswer(), timeout)
    with ice.host_addresses(bind_addresses):
        await asyncio.wait_for(pc.setLocalDescription(answer), timeout)
    answer_keepalives_fast(pc)
    return simulcast_sdp.answer_simulcast(offer_sdp, pc.localDescription.sdp)


def answer_as_dtls_server(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Make the coming answer say ``a=setup:passive`` when the offer left the choice to us
    (``actpass``), as livekit-server does (pion ``SetAnsweringDTLSRole(DTLSRoleServer)``).

    The DTLS server picks the SRTP profile from its own preference list. As server we pick
    AES-GCM, which the official clients offer, whereas libwebrtc as server picks
    AES-CM + HMAC-SHA1, whose authentication costs several times more per packet here.
    A role set by an earlier negotiation is kept.
    """
    setups = {line.strip() for line in offer_sdp.splitlines() if line.startswith("a=setup:")}
    if setups != {"a=setup:actpass"}:
        return
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        aiortc_compat.prefer_dtls_server(dtls)


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


def limit_sctp(pc: RTCPeerConnection, on_oversized: Callable[[int], None]) -> None:
    """Refuse data-channel messages over :data:`.limits.MAX_SCTP_MESSAGE_SIZE` on ``pc``
    (once its SCTP transport exists; calling again is harmless)."""
    aiortc_sctp.limit_sctp_message_size(pc.sctp, limits.MAX_SCTP_MESSAGE_SIZE, on_oversized)
