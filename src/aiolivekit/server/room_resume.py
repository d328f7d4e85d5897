"""Sans-I/O signal loss, resume and SimulateScenario of a room (mixed into
:class:`~.rooms.RoomState`): what livekit-server does when a participant's signal
connection drops and comes back (``RoomManager.StartSession``, ``Room.ResumeParticipant``,
``Room.onSyncState``, ``Room.onSimulateScenario``), with the time passed in."""

from __future__ import annotations

import logging
from collections import deque

from livekit.protocol import models as models_pb, rtc as rtc_pb

from .effects import CloseSignal, Effect, IceRestart, SendSignal
from .participant_state import ParticipantState

__all__ = [
    "SERVER_PROTOCOL",
    "SERVER_VERSION",
    "SIMULATE_DISCONNECT_SIGNAL_TIMEOUT",
    "SignalLossMixin",
    "client_configuration",
    "server_info",
]

logger = logging.getLogger(__name__)

SERVER_VERSION = "1.13.5"
SERVER_PROTOCOL = 16
# livekit-server's simulateDisconnectSignalTimeout: a simulated signal disconnect on resume
# applies to resumes within this many seconds of the request
SIMULATE_DISCONNECT_SIGNAL_TIMEOUT = 10.0
# protocol gates of livekit-server (pkg/rtc/types/protocol_version.go)
_PROTOCOL_DISCONNECTED_UPDATE = 8     # > 8: DISCONNECTED updates on resume
_PROTOCOL_LEAVE_ACTION = 12           # > 12: LeaveRequest.action (else can_reconnect)


def _signal(**kwargs: object) -> rtc_pb.SignalResponse:
    return rtc_pb.SignalResponse(**kwargs)  # type: ignore[arg-type]


def client_configuration() -> models_pb.ClientConfiguration:
    # resume_connection unset: clients resume (this server keeps sessions, see resume())
    return models_pb.ClientConfiguration()


def server_info() -> models_pb.ServerInfo:
    return models_pb.ServerInfo(
        edition=models_pb.ServerInfo.Edition.Standard,
        version=SERVER_VERSION,
        protocol=SERVER_PROTOCOL,
        node_id="ND_aiolivekit",
    )



class SignalLossMixin:
    """Signal loss, departure deadlines, resume and simulated scenarios of a room."""

    participants: dict[str, ParticipantState]
    departure_timeout: float
    _departures: deque[tuple[int, models_pb.ParticipantInfo]]
    _departure_count: int
    _disconnect_on_resume: dict[str, float]
    _disconnect_on_resume_silent: dict[str, list[float]]

    def remove(self, sid: str, reason: int, action: int = rtc_pb.LeaveRequest.Action.DISCONNECT,
               *, send_leave: bool = True) -> list[Effect]:
        raise NotImplementedError

    def info(self) -> models_pb.Room:
        raise NotImplementedError


    def signal_lost(self, sid: str, now: float) -> list[Effect]:
        """The signal connection of ``sid`` dropped: keep the participant, its tracks and
        subscriptions (the others see nothing) until ``now + departure_timeout``."""
        p = self.participants.get(sid)
        if p is None or not p.signal_connected:
            return []
        p.signal_connected = False
        p.departure_deadline = now + self.departure_timeout
        p.signal_lost_mark = self._departure_count
        return []

    def next_departure(self) -> float | None:
        """The earliest departure deadline of a participant without signal (or None)."""
        deadlines = [p.departure_deadline for p in self.participants.values()
                     if p.departure_deadline is not None]
        return min(deadlines) if deadlines else None

    def expire_departures(self, now: float) -> list[Effect]:
        """Participants whose signal stayed away past their deadline leave, as
        livekit-server removes a participant whose connection is gone
        (DisconnectReason CONNECTION_TIMEOUT; the others get its DISCONNECTED update)."""
        effects: list[Effect] = []
        for p in list(self.participants.values()):
            if p.departure_deadline is not None and now >= p.departure_deadline:
                logger.info("participant %s (%s) did not come back within %ss: it leaves",
                            p.identity, p.sid, self.departure_timeout)
                effects += self.remove(p.sid, models_pb.DisconnectReason.CONNECTION_TIMEOUT,
                                       send_leave=False)
        return effects

    def resume(self, sid: str, now: float) -> list[Effect]:
        """A new signal connection of ``sid`` (``reconnect=1``) re-attaches to its session.

        The messages livekit-server sends (``Room.ResumeParticipant``), in its order:
        ReconnectResponse, a ParticipantUpdate with the participants that left while the
        signal was away (protocol > 8), a ParticipantUpdate with everyone (self included),
        a RoomUpdate, then the ICE restart of the subscriber peer connection. A simulated
        signal disconnect on resume (SimulateScenario) closes the new signal again.
        """
        p = self.participants[sid]
        p.signal_connected = True
        p.departure_deadline = None
        silent = self._disconnect_on_resume_silent.get(p.identity)
        if silent is not None:
            until, count = silent
            closed = now < until
            if closed:
                silent[1] = count + 1
            if silent[1] >= 3 or not closed:
                del self._disconnect_on_resume_silent[p.identity]
            if closed:
                p.signal_connected = False
                p.departure_deadline = now + self.departure_timeout
                return [CloseSignal(sid, "simulated disconnect on resume (no messages)")]
        effects: list[Effect] = [SendSignal(sid, _signal(reconnect=rtc_pb.ReconnectResponse(
            ice_servers=[], client_configuration=client_configuration(),
            server_info=server_info(), last_message_seq=p.last_reliable_seq)))]
        if p.protocol > _PROTOCOL_DISCONNECTED_UPDATE:
            gone = [info for mark, info in self._departures if mark > p.signal_lost_mark]
            effects.append(SendSignal(sid, _signal(update=rtc_pb.ParticipantUpdate(
                participants=gone))))
        everyone = [o.info() for o in self.participants.values()
                    if o.sid == sid or not o.hidden]
        effects.append(SendSignal(sid, _signal(update=rtc_pb.ParticipantUpdate(
            participants=everyone))))
        effects.append(SendSignal(sid, _signal(room_update=rtc_pb.RoomUpdate(room=self.info()))))
        effects.append(IceRestart(sid))
        until_at = self._disconnect_on_resume.pop(p.identity, None)
        if until_at is not None and now < until_at:
            p.signal_connected = False
            p.departure_deadline = now + self.departure_timeout
            effects.append(CloseSignal(sid, "simulated disconnect on resume"))
        return effects

    @staticmethod
    def leave_request(p: ParticipantState, reason: int, action: int) -> rtc_pb.LeaveRequest:
        """A LeaveRequest for ``p``: ``action``, plus the legacy ``can_reconnect`` for
        clients of protocol <= 12 (which predate the action field)."""
        leave = rtc_pb.LeaveRequest(reason=reason, action=action)  # type: ignore[arg-type]
        if p.protocol <= _PROTOCOL_LEAVE_ACTION:
            leave.can_reconnect = action == rtc_pb.LeaveRequest.Action.RECONNECT
        return leave

    # ------------------------------------------------------------------ simulate

    def simulate(self, sid: str, scenario: rtc_pb.SimulateScenario,
                 now: float) -> list[Effect]:
        """C->S SimulateScenario, handled as livekit-server 1.13.5 does (``Room.
        onSimulateScenario``). Speaker updates are handled by the caller (they need the
        speaker observer); here: node failure and migration drop the participant without
        a Leave (its resume then finds no session: Leave{STATE_MISMATCH, RECONNECT}),
        server leave sends Leave{SERVER_SHUTDOWN, DISCONNECT}, the two "disconnect signal
        on resume" variants arm the next resume, switch_candidate_protocol restarts ICE
        (UDP only here: no ICE/TCP or TURN/TLS candidates exist to switch to)."""
        p = self.participants.get(sid)
        if p is None:
            return []
        which = scenario.WhichOneof("scenario")
        reason = models_pb.DisconnectReason
        if which == "node_failure":
            return self.remove(sid, reason.SERVER_SHUTDOWN, send_leave=False)
        if which == "migration":
            return self.remove(sid, reason.MIGRATION, send_leave=False)
        if which == "server_leave":
            return self.remove(sid, reason.SERVER_SHUTDOWN)
        if which == "leave_request_full_reconnect":
            return self.remove(sid, reason.CLIENT_INITIATED, rtc_pb.LeaveRequest.Action.RECONNECT)
        if which == "disconnect_signal_on_resume":
            self._disconnect_on_resume[p.identity] = now + SIMULATE_DISCONNECT_SIGNAL_TIMEOUT
            return []
        if which == "disconnect_signal_on_resume_no_messages":
            self._disconnect_on_resume_silent[p.identity] = [
                now + SIMULATE_DISCONNECT_SIGNAL_TIMEOUT, 0]
            return []
        if which == "switch_candidate_protocol":
            logger.warning("SimulateScenario switch_candidate_protocol=%s: this server has "
                           "UDP candidates only; restarting ICE on UDP",
                           scenario.switch_candidate_protocol)
            return [IceRestart(sid)]
        if which == "subscriber_bandwidth":
            logger.warning("SimulateScenario subscriber_bandwidth is not supported by this "
                           "server (no congestion control); ignored")
            return []
        logger.debug("SimulateScenario %s: not handled here", which)
        return []

