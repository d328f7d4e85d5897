"""Resuming a session: a new signal connection for the same participant, same PCs.

:func:`resume_session` is the engine's half of a resume (the Room's retry loop calls
it with the engine): open ``/rtc?...&reconnect=1&sid=PA_..&
reconnect_reason=N``, read the ``ReconnectResponse`` (a LeaveRequest instead is a
refusal: :class:`ResumeRefused`), send a ``SyncState`` (:func:`build_sync_state`), offer
again on the publisher PC, then let the held requests go. The server's ICE-restart offer
for the subscriber PC is answered by the engine's offer loop as any other offer.

aiortc has no ICE restart of its own: :func:`~aiolivekit.webrtc.pc.restart_local_ice`
gives the publisher's running ICE connection new credentials before the offer, and the
pair in use is nominated again once the server's answer is in; the server's restart of
the subscriber PC is followed by :func:`~aiolivekit.webrtc.pc.apply_remote_ice_restart`.
The candidate pair itself is kept: a PC whose ICE failed or closed is never resumed
(``peers_alive``): the caller does a full reconnect instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from livekit.protocol import models as models_pb, rtc as rtc_pb

from ..errors import ConnectError, SignalError
from ..webrtc.pc import nominate_after_restart, restart_local_ice
from . import signal as sig
from .ws import SignalTransport

if TYPE_CHECKING:
    from .engine import RtcEngine

__all__ = ["ResumeRefused", "SyncParts", "build_sync_state", "resume_session"]

logger = logging.getLogger(__name__)


class ResumeRefused(ConnectError):
    """The server will not resume this session (a full reconnect is needed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="leave")


@dataclass
class SyncParts:
    """What the Room knows for the SyncState: subscriptions, published tracks and the
    last reliable sequence received per sender."""

    subscription: rtc_pb.UpdateSubscription = field(default_factory=rtc_pb.UpdateSubscription)
    publish_tracks: list[rtc_pb.TrackPublishedResponse] = field(default_factory=list)
    receive_states: list[rtc_pb.DataChannelReceiveState] = field(default_factory=list)
    track_sids_disabled: list[str] = field(default_factory=list)


def build_sync_state(engine: RtcEngine, parts: SyncParts) -> rtc_pb.SyncState:
    """The SyncState of ``engine``'s session: the subscriber PC's last offer and answer,
    the data channels, and the Room's ``parts``."""
    state = rtc_pb.SyncState()
    sub = engine.subscriber
    if sub is not None:
        local = sub.pc.localDescription
        remote = sub.pc.remoteDescription
        offer_id = engine.last_offer_id
        if local is not None and local.type == "answer":
            state.answer.CopyFrom(rtc_pb.SessionDescription(type="answer", sdp=local.sdp,
                                                            id=offer_id))
        if remote is not None and remote.type == "offer":
            state.offer.CopyFrom(rtc_pb.SessionDescription(type="offer", sdp=remote.sdp,
                                                           id=offer_id))
    state.subscription.CopyFrom(parts.subscription)
    state.publish_tracks.extend(parts.publish_tracks)
    for target, channels in ((sig.PUBLISHER, engine.pub_channels),
                             (sig.SUBSCRIBER, engine.sub_channels)):
        for label, ch in channels.items():
            state.data_channels.append(rtc_pb.DataChannelInfo(
                label=label, id=int(ch.id or 0), target=target))  # type: ignore[arg-type]
    state.track_sids_disabled.extend(parts.track_sids_disabled)
    state.datachannel_receive_states.extend(parts.receive_states)
    return state


async def resume_session(engine: RtcEngine, token: str, reason: int,
                         sync: Callable[[], SyncParts],
                         timeout: float) -> rtc_pb.ReconnectResponse | None:
    """One resume attempt of ``engine``; returns the server's ReconnectResponse (None if it resumed
    without one). Raises :class:`ResumeRefused` (full reconnect needed),
    :class:`ConnectError` (unreachable, timed out; ``status`` 401/403: the token is no
    longer accepted). Only a signal connection that could not be opened is worth
    resuming again; whatever fails once it is open asks for a full reconnect."""
    if engine.closed:
        raise ResumeRefused("the session is closed")
    if not engine.peers_alive():
        raise ResumeRefused("a peer connection failed: it cannot be resumed")
    session = engine.session
    if not session.local.sid:
        raise ResumeRefused("no participant sid to resume")
    if not session.signal_down:
        # a resume asked for while the signal looks fine (e.g. the server's leave RESUME)
        engine.close_signal()
    query = dict(engine.query)
    query.update(reconnect="1", sid=session.local.sid, reconnect_reason=str(int(reason)))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    engine.resume_response = None
    ws = await SignalTransport.connect(engine.url, token, query, timeout=timeout)
    try:
        first = await asyncio.wait_for(ws.recv(), max(0.1, deadline - loop.time()))
    except asyncio.TimeoutError:
        ws.abort()
        raise ResumeRefused(f"no answer to the resume within {timeout:g} s") from None
    except BaseException:
        ws.abort()
        raise
    if first is None:
        raise ResumeRefused("the server closed the signal connection during the resume")
    which = first.WhichOneof("message")
    if which == "leave":
        ws.abort()
        name = models_pb.DisconnectReason.Name(first.leave.reason) \
            if first.leave.reason in models_pb.DisconnectReason.values() else first.leave.reason
        raise ResumeRefused(f"the server refused the resume ({name})")
    if engine.closed:
        ws.abort()
        raise ResumeRefused("the session closed during the resume")
    engine.install_signal(ws)
    try:
        return await _resumed(engine, sync, first, deadline)
    except BaseException:
        engine.drop_signal()  # the next attempt opens a new one
        raise


async def _resumed(engine: RtcEngine, sync: Callable[[], SyncParts],
                   first: rtc_pb.SignalResponse,
                   deadline: float) -> rtc_pb.ReconnectResponse | None:
    session = engine.session
    loop = asyncio.get_running_loop()
    session.signal_reopened(time.time())
    engine.timers_changed()
    for ev in session.receive(first, time.time()):
        await engine.handle_signal_event(ev)
    response = engine.resume_response
    session.sync_state(build_sync_state(engine, sync()))
    engine.send_signal()
    publisher = engine.publisher
    if engine.publisher_was_negotiated() and publisher is not None:
        # an ICE restart of the publisher, as the official clients do: the server may
        # have lost the path meanwhile (its transport failed: leave RESUME)
        restarted = restart_local_ice(publisher.pc)
        try:
            await engine.negotiate_publisher(timeout=max(0.5, deadline - loop.time()))
        except (asyncio.TimeoutError, SignalError) as exc:
            raise ResumeRefused(f"publisher renegotiation after the resume failed: "
                                f"{exc or 'timed out'}") from None
        nominate_after_restart(restarted)
    if not engine.peers_alive():
        raise ResumeRefused("a peer connection failed during the resume")
    if not engine.signal_open():
        raise ResumeRefused("the signal connection closed during the resume")
    session.resume_done()
    engine.send_signal()
    logger.info("session resumed (last reliable sequence received by the server: %s)",
                response.last_message_seq if response is not None else "not reported")
    return response
