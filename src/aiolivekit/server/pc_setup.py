"""Peer-connection setup of the server's sessions: the publisher answer's RID extensions
and DTLS role, the forwarder attached to incoming media, a new server PC."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from .._compat import aiortc as aiortc_compat, aiortc_sctp
from . import limits
from .config import ForwardingOptions
from .hub import ForwarderLike

if TYPE_CHECKING:  # pragma: no cover
    from aiortc import RTCRtpReceiver

__all__ = [
    "accept_rid_extensions", "answer_as_dtls_server", "attach_forwarder", "limit_sctp", "new_pc",
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


_RID_URIS = (
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
)


def accept_rid_extensions(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Answer the RID header extensions of video m-lines (aiortc drops them).

    libwebrtc keeps offering only the extensions that earlier answers accepted, and refuses
    to create a simulcast offer without the RID extension ("negotiates simulcast but does
    not negotiate the RID RTP header extension"); aiortc parses RIDs, so accepting them is
    safe. The answer still has no ``a=simulcast``, so the client sends one layer.
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
