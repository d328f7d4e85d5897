"""aiortc internals for audio NACK (RFC 4585 generic NACK on Opus).

aiortc negotiates no feedback for Opus and has no NACK generator for audio. Here:

* :func:`install_opus_nack`: aiortc's Opus codec gets ``a=rtcp-fb:111 nack``. aiortc
  answers with the feedback both sides list, so an answer keeps ``nack`` exactly when
  the offer had it (livekit-server offers it on audio it forwards without RED); our
  server's offers to subscribers carry it (its down-tracks keep an audio history for
  subscribers that accept it).
  A client's send-only audio m-lines do not offer it (``webrtc.sdp.drop_send_audio_nack``,
  on the offer's text): our direct RTP writer keeps no history, so a server's NACK for
  what we publish could not be answered.
* :func:`codec_has_nack` / :func:`send_nack`: the receive side reads the negotiated
  codec and sends the RTCP packet with the receiver's own (private) sender.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["codec_has_nack", "install_opus_nack", "send_nack"]

logger = logging.getLogger(__name__)


def _is_opus(codec: Any) -> bool:
    return str(getattr(codec, "mimeType", "")).lower() == "audio/opus"


def codec_has_nack(codec: Any) -> bool:
    """True when a negotiated codec carries plain ``nack`` feedback (not ``nack pli``)."""
    return any(getattr(fb, "type", None) == "nack" and not getattr(fb, "parameter", None)
               for fb in getattr(codec, "rtcpFeedback", None) or [])


def install_opus_nack() -> bool:
    """Add ``nack`` feedback to aiortc's Opus codec (idempotent); False if the table moved."""
    try:
        from aiortc import codecs as aiortc_codecs
        from aiortc.rtcrtpparameters import RTCRtcpFeedback
    except ImportError:
        return False
    table = getattr(aiortc_codecs, "CODECS", None)
    audio = table.get("audio") if isinstance(table, dict) else None
    opus = next((c for c in audio or [] if _is_opus(c)), None)
    if opus is None or not isinstance(getattr(opus, "rtcpFeedback", None), list):
        logger.warning("aiortc's codec table moved: audio NACK is not negotiated")
        return False
    if not codec_has_nack(opus):
        opus.rtcpFeedback.append(RTCRtcpFeedback(type="nack"))
    return True


def send_nack(receiver: Any, media_ssrc: int, lost: list[int]) -> Coroutine[Any, Any, None]:
    """The receiver's coroutine sending one generic NACK for ``lost`` (``_send_rtcp_nack``;
    nothing is sent before the receiver has its RTCP SSRC)."""
    coro: Coroutine[Any, Any, None] = receiver._send_rtcp_nack(media_ssrc, sorted(lost))
    return coro


OPUS_NACK_INSTALLED = install_opus_nack()
