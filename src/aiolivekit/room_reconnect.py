"""The Room's recovery from network faults: resume, full reconnect, retry policy.

:class:`RoomReconnect` is mixed into :class:`~aiolivekit.room.Room`. The engine reports a
lost signal connection (:class:`~.engine.engine.SignalLost`: WebSocket closed, ping
timeout, LeaveRequest RESUME) or a session that cannot go on
(:class:`~.engine.engine.FullReconnectNeeded`: LeaveRequest RECONNECT, a failed peer
connection). The Room then goes ``CONN_RECONNECTING``, emits ``reconnecting`` once and
runs one retry loop, whose decisions are the sans-I/O
:class:`~.engine.reconnect.ReconnectPlan`'s:

* **resume**: same engine, same peer connections, new signal connection
  (:meth:`RtcEngine.resume`); afterwards the reliable packets the server did not receive
  (``ReconnectResponse.last_message_seq``) are sent again from the resend buffer, with
  their original sequence numbers;
* **full**: the remote participants are dropped (their events emitted), a new engine
  joins, every local track is published again (``local_track_republished(publication,
  previous_sid)``), explicit subscription choices are applied again and the reliable
  packets the old server had not acknowledged (SCTP) are sent again, numbering unchanged.

Success emits ``reconnected`` once and ``CONN_CONNECTED``; when the attempts are used up
(or the token is refused) the room disconnects with a DisconnectReason. Data sent
meanwhile waits (bounded by :data:`DATA_WAIT`) instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from livekit.protocol import models as models_pb, rtc as rtc_pb

from .data import packets
from .engine import engine as eng
from .engine.reconnect import ReconnectPlan, RetryPolicy
from .engine.resume import ResumeRefused, SyncParts, resume_session
from .errors import ConnectError
from .participant import LocalParticipant, RemoteParticipant
from .track_publication import RemoteTrackPublication
from .types import ConnectionState, RoomOptions, VideoQuality

if TYPE_CHECKING:
    from .data.manager import DataManager

__all__ = ["DATA_WAIT", "RoomReconnect"]

logger = logging.getLogger(__name__)

#: How long data sent during a reconnection waits for it (then PublishDataError).
DATA_WAIT = 30.0
#: Bound of one resume attempt (signal, ReconnectResponse, publisher renegotiation).
RESUME_TIMEOUT = 10.0


class RoomReconnect:
    """Reconnection state and loop of the Room."""

    _engine: eng.RtcEngine | None
    _state: ConnectionState
    _local: LocalParticipant | None
    _remote: dict[str, RemoteParticipant]
    _by_sid: dict[str, RemoteParticipant]
    _dup: packets.DuplicateFilter
    _encoder: packets.PacketEncoder
    _data: DataManager
    _token: str
    _url: str
    _options: RoomOptions
    _connecting: bool
    _tasks: set[asyncio.Task[Any]]

    if TYPE_CHECKING:  # provided by the Room and its other mixins
        def emit(self, event: Any, *args: Any) -> None: ...

        def _set_state(self, state: ConnectionState) -> None: ...

        def _new_engine(self) -> eng.RtcEngine: ...

        def _finish(self, reason: int) -> None: ...

        def _drop_remote_participants(self) -> None: ...

        async def _connect_engine(self, engine: eng.RtcEngine) -> None: ...

    def _init_reconnect(self) -> None:
        self._reconnect_task: asyncio.Task[None] | None = None
        self._plan: ReconnectPlan | None = None
        self._ready = asyncio.Event()  # set while connected (data waits on it)
        self._gone = asyncio.Event()  # set when the session ended (waiters give up)
        self._resend = packets.ResendBuffer()
        self._subscription_prefs: dict[str, bool] = {}
        self._quality_prefs: dict[str, VideoQuality] = {}  # set_video_quality choices
        self._pending_trigger: tuple[bool, int, str] | None = None
        self._retry_policy = RetryPolicy()
        self._lost_reason: int = models_pb.DisconnectReason.UNKNOWN_REASON
        self.reconnect_stats: list[dict[str, Any]] = []  # one entry per reconnection

    # ------------------------------------------------------------------ triggers

    def _ev_SignalLost(self, ev: eng.SignalLost) -> None:
        self._trigger(full=False, reconnect_reason=ev.reason, error=ev.error,
                      reason=models_pb.DisconnectReason.SIGNAL_CLOSE)

    def _ev_FullReconnectNeeded(self, ev: eng.FullReconnectNeeded) -> None:
        self._trigger(full=True, reconnect_reason=models_pb.ReconnectReason.RR_UNKNOWN,
                      error=ev.error, reason=ev.reason)

    def _trigger(self, *, full: bool, reconnect_reason: int, error: str, reason: int) -> None:
        if self._connecting:
            # connect() is still running: recover once it returned
            prev = self._pending_trigger
            self._pending_trigger = (full or (prev is not None and prev[0]), reason, error)
            return
        if self._state == ConnectionState.CONN_DISCONNECTED or self._engine is None:
            return
        task = self._reconnect_task
        if task is not None and not task.done():
            if full and self._plan is not None:
                self._plan.escalate()
            return
        logger.info("connection lost (%s): reconnecting", error)
        self._lost_reason = reason
        self._plan = ReconnectPlan(full=full, policy=self._retry_policy)
        self._ready.clear()
        loop = asyncio.get_running_loop()
        stats: dict[str, Any] = {"started": loop.time(), "error": error, "attempts": []}
        self.reconnect_stats.append(stats)
        self._set_state(ConnectionState.CONN_RECONNECTING)
        self.emit("reconnecting")
        self._reconnect_task = asyncio.ensure_future(
            self._reconnect_loop(self._plan, reconnect_reason, stats))

    def _after_connect(self) -> None:
        """connect() returned: a fault reported meanwhile starts the recovery now."""
        trigger, self._pending_trigger = self._pending_trigger, None
        engine = self._engine
        if engine is not None and engine.session.signal_down and trigger is None:
            trigger = (False, models_pb.DisconnectReason.SIGNAL_CLOSE, "signal lost")
        if trigger is not None:
            full, reason, error = trigger
            self._trigger(full=full, reconnect_reason=models_pb.ReconnectReason.RR_UNKNOWN,
                          error=error, reason=reason)

    # ------------------------------------------------------------------ loop

    async def _reconnect_loop(self, plan: ReconnectPlan, reconnect_reason: int,
                              stats: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        dropped_remote = False
        while (attempt := plan.next()) is not None:
            if attempt.delay:
                await asyncio.sleep(attempt.delay)
            started = loop.time()
            outcome = "ok"
            try:
                if attempt.kind == "resume":
                    await self._attempt_resume(reconnect_reason)
                else:
                    if not dropped_remote:
                        dropped_remote = True
                        self._drop_remote_participants()
                    await self._attempt_full()
            except ResumeRefused as exc:
                outcome = f"refused: {exc.message}"
                plan.failed("refused")
            except ConnectError as exc:
                outcome = f"error: {exc.message}"
                plan.failed("fatal" if exc.status in (401, 403) else "unreachable")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any other failure: try again
                logger.warning("reconnect attempt failed", exc_info=True)
                outcome = f"error: {exc}"
                plan.failed("unreachable")
            engine = self._engine
            if outcome == "ok" and (engine is None or not engine.healthy()):
                # a new fault during the attempt (its event was folded into this loop)
                outcome = "failed again at once"
                plan.failed("broken" if engine is None or not engine.peers_alive()
                            or engine._full_reconnect_asked else "unreachable")
            stats["attempts"].append((attempt.kind, round(loop.time() - started, 3), outcome))
            logger.info("reconnect attempt %d (%s): %s", attempt.number + 1, attempt.kind,
                        outcome)
            if outcome == "ok":
                stats["reconnected"] = loop.time()
                self._set_state(ConnectionState.CONN_CONNECTED)
                self._ready.set()
                self.emit("reconnected")
                return
        logger.warning("giving up reconnecting after %d attempts", plan.attempts)
        reason = self._lost_reason
        if plan.last_outcome == "fatal":
            reason = models_pb.DisconnectReason.JOIN_FAILURE
        engine = self._engine
        if engine is not None and not engine.closed:
            await engine.abandon()
        self._finish(reason)

    async def _attempt_resume(self, reconnect_reason: int) -> None:
        engine = self._engine
        if engine is None or engine.closed:
            raise ResumeRefused("no session to resume")
        timeout = min(RESUME_TIMEOUT, self._options.connect_timeout or RESUME_TIMEOUT)
        response = await resume_session(engine, self._token, reconnect_reason, self._sync_parts,
                                       timeout)
        last = int(response.last_message_seq) if response is not None else 0
        for _seq, data in self._resend.after(last):
            await engine.send_data(data, reliable=True)

    async def _attempt_full(self) -> None:
        old = self._engine
        if old is not None and not old.closed:
            await old.abandon()
        # the reliable packets the old server had not acknowledged (an ordered channel: the
        # last ones sent) go out again on the new session, with their sequence numbers
        unacked = old.unacked_reliable if old is not None else 0
        if unacked is None:
            logger.warning("unknown which reliable packets the old session's server received: "
                           "none are sent again")
        pending = self._resend.last(unacked or 0)
        if unacked and len(pending) < unacked:
            logger.warning("%d unacknowledged reliable packets were evicted from the resend "
                           "buffer: lost", unacked - len(pending))
        engine = self._new_engine()
        self._engine = engine
        await self._connect_engine(engine)
        if engine.closed:
            raise ConnectError("the new session ended while joining", reason="leave")
        self._resend.clear()
        local = self._local
        if local is not None:
            await local._republish(engine)
        self._restore_subscriptions(engine)
        if pending:
            logger.info("sending again %d reliable packets (from #%d) the old server had not "
                        "acknowledged", len(pending), pending[0][0])
        for seq, data in pending:
            self._resend.add(seq, data)
            await engine.send_data(data, reliable=True)

    # ------------------------------------------------------------------ state for the server

    def _sync_parts(self) -> SyncParts:
        parts = SyncParts()
        auto = self._options.auto_subscribe
        by_participant: dict[str, list[str]] = {}
        for p in self._remote.values():
            for sid, pub in p._track_publications.items():
                if not isinstance(pub, RemoteTrackPublication):
                    continue
                wanted = pub._desired if pub._desired is not None else pub._subscribed
                if auto and not wanted and self._subscription_prefs.get(sid) is False:
                    by_participant.setdefault(p.sid, []).append(sid)
                elif not auto and wanted:
                    by_participant.setdefault(p.sid, []).append(sid)
        sids = [s for group in by_participant.values() for s in group]
        parts.subscription = rtc_pb.UpdateSubscription(
            track_sids=sids, subscribe=not auto,
            participant_tracks=[models_pb.ParticipantTracks(participant_sid=psid, track_sids=t)
                                for psid, t in by_participant.items()])
        local = self._local
        if local is not None:
            for pub in local._track_publications.values():
                track = pub.track
                cid = track._rtc_track.id if track is not None else ""
                parts.publish_tracks.append(rtc_pb.TrackPublishedResponse(cid=cid,
                                                                          track=pub._info))
        for psid, seq in self._dup.last.items():
            parts.receive_states.append(rtc_pb.DataChannelReceiveState(publisher_sid=psid,
                                                                       last_seq=seq))
        return parts

    def _restore_subscriptions(self, engine: eng.RtcEngine) -> None:
        """After a full reconnect: the subscription choices the user made apply again."""
        auto = self._options.auto_subscribe
        for p in self._remote.values():
            for sid, pub in p._track_publications.items():
                want = self._subscription_prefs.get(sid)
                if want is None or want == auto or not isinstance(pub, RemoteTrackPublication):
                    continue
                engine.session.update_subscription([sid], want, p.sid)
                pub._desired = want
        for sid, quality in self._quality_prefs.items():
            if any(sid in p._track_publications for p in self._remote.values()):
                engine.session.update_track_settings([sid], disabled=False, quality=int(quality))
        engine.send_signal()

    # ------------------------------------------------------------------ data and tasks

    async def _wait_ready(self) -> None:
        """Wait (bounded) for a reconnection in progress; PublishDataError if it fails."""
        from .errors import PublishDataError

        if self._ready.is_set():
            return
        if self._state != ConnectionState.CONN_RECONNECTING:
            raise PublishDataError("cannot send data: not connected")
        ready = asyncio.ensure_future(self._ready.wait())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({ready, gone}, timeout=DATA_WAIT,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            gone.cancel()
        if not self._ready.is_set():
            if self._gone.is_set():
                raise PublishDataError("cannot send data: disconnected while reconnecting")
            raise PublishDataError(
                f"cannot send data: still reconnecting after {DATA_WAIT:g} s")

    async def _stop_reconnect(self) -> None:
        """Cancel a reconnection in progress (disconnect() during it)."""
        task, self._reconnect_task = self._reconnect_task, None
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            pass
        except Exception:
            logger.debug("reconnect task failed while stopping", exc_info=True)

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
