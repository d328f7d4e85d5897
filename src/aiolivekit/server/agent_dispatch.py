"""Sans-I/O agent dispatch of the dev server: workers, dispatches, jobs.

What livekit-server does with agent workers (``pkg/service/agentservice.go``,
``pkg/agent/worker.go``, the room's dispatches), as plain state: a worker connects on
``/agent`` with a token carrying the ``agent`` grant, registers (``RegisterWorkerRequest``
-> ``RegisterWorkerResponse`` with a ``AW_`` id and the server info), reports its status and
load, pings. A room's creation makes its dispatches (the agents named in the token's or
CreateRoom's room configuration, else one dispatch for the unnamed agent) and launches a
``JT_ROOM`` job for each on a registered worker of that agent name: an
``AvailabilityRequest``, and on an ``available`` answer a ``JobAssignment`` whose token
joins the room as a participant of kind AGENT (identity, name, metadata and attributes from
the answer, ``lk.agent_name`` added, grants from the worker's allowed permissions, 1 h).
A worker that declines or does not answer within ``ASSIGN_TIMEOUT`` is skipped for the
next available one. ``UpdateJobStatus`` moves the job's state; deleting a dispatch or
closing the room sends ``JobTermination``, and so does the job participant leaving the
room (the job then FAILED). ``MigrateJobRequest`` is ignored, as in the
open-source server.

Every method takes the time (Unix seconds) and returns :class:`WorkerSend` /
:class:`WorkerClose` effects for the asyncio shell (:mod:`.agent_service`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from livekit.protocol import agent as agent_pb, agent_dispatch as dispatch_pb, models as models_pb

from .participant_state import new_guid
from .room_resume import server_info

__all__ = [
    "AGENT_NAME_ATTRIBUTE",
    "ASSIGN_TIMEOUT",
    "REGISTER_TIMEOUT",
    "AgentDispatcher",
    "DispatchError",
    "WorkerClose",
    "WorkerSend",
    "WorkerState",
    "job_token",
]

logger = logging.getLogger(__name__)

AGENT_NAME_ATTRIBUTE = "lk.agent_name"
REGISTER_TIMEOUT = 10.0
ASSIGN_TIMEOUT = 10.0
JOB_TOKEN_TTL = 3600
AGENT_PROTOCOL = 1
MAX_DISPATCHES_PER_ROOM = 64

_JOB_TYPES = (agent_pb.JT_ROOM, agent_pb.JT_PUBLISHER, agent_pb.JT_PARTICIPANT)


_DEPENDENT_KINDS = (models_pb.ParticipantInfo.Kind.AGENT, models_pb.ParticipantInfo.Kind.EGRESS)


class ParticipantView(Protocol):
    """What dispatch reads of a participant (a :class:`~.rooms.ParticipantState`)."""

    @property
    def identity(self) -> str: ...
    @property
    def kind(self) -> int: ...
    @property
    def tracks(self) -> Mapping[str, Any]: ...
    def info(self) -> models_pb.ParticipantInfo: ...


class RoomView(Protocol):
    """What dispatch reads of a room (a :class:`~.rooms.RoomState`)."""

    @property
    def participants(self) -> Mapping[str, ParticipantView]: ...


def _is_publisher(p: ParticipantView) -> bool:
    return any(getattr(t, "published", False) for t in p.tracks.values())


class DispatchError(Exception):
    """A dispatch request that cannot be carried out (``code``: a Twirp code name)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class WorkerSend:
    """Send ``message`` on the worker's WebSocket."""

    worker_id: str
    message: agent_pb.ServerMessage


@dataclass
class WorkerClose:
    """Close the worker's WebSocket (``reason`` for the log)."""

    worker_id: str
    reason: str


Effect = WorkerSend | WorkerClose


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


@dataclass
class WorkerState:
    """One connected worker."""

    id: str
    api_key: str
    api_secret: str
    connected_at: float
    protocol: int = AGENT_PROTOCOL
    registered: bool = False
    agent_name: str = ""
    namespace: str = ""
    version: str = ""
    job_type: int = agent_pb.JT_ROOM
    permissions: models_pb.ParticipantPermission | None = None
    status: int = agent_pb.WS_AVAILABLE
    load: float = 0.0
    running: dict[str, agent_pb.Job] = field(default_factory=dict)


@dataclass
class _Offer:
    """A job waiting for a worker's AvailabilityResponse."""

    job: agent_pb.Job
    worker_id: str
    deadline: float
    tried: set[str]


def job_token(worker: WorkerState, room: str, res: agent_pb.AvailabilityResponse,
              now: float) -> str:
    """The job participant's token, with the claims livekit-server's ``BuildAgentToken``
    gives: room join + ``agent`` grant, the worker's permissions, kind ``agent``, 1 h."""
    perm = worker.permissions or models_pb.ParticipantPermission(
        can_subscribe=True, can_publish=True, can_publish_data=True, can_update_metadata=True)
    attributes = dict(res.participant_attributes)
    attributes[AGENT_NAME_ATTRIBUTE] = worker.agent_name
    video = {
        "roomJoin": True, "agent": True, "room": room,
        "canSubscribe": perm.can_subscribe, "canPublish": perm.can_publish,
        "canPublishData": perm.can_publish_data, "canUpdateOwnMetadata": perm.can_update_metadata,
        "canSubscribeMetrics": perm.can_subscribe_metrics,
    }
    if perm.hidden:
        video["hidden"] = True
    identity = res.participant_identity
    payload: dict[str, object] = {
        "iss": worker.api_key, "sub": identity, "jti": identity,
        "nbf": int(now), "exp": int(now) + JOB_TOKEN_TTL,
        "video": video, "kind": "agent", "attributes": attributes,
    }
    if res.participant_name:
        payload["name"] = res.participant_name
    if res.participant_metadata:
        payload["metadata"] = res.participant_metadata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short dev secrets trigger InsecureKeyLengthWarning
        return jwt.encode(payload, worker.api_secret, algorithm="HS256")


class AgentDispatcher:
    """Workers, the dispatches of each room and their jobs."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerState] = {}
        self.dispatches: dict[str, dict[str, dispatch_pb.AgentDispatch]] = {}
        self.room_info: dict[str, models_pb.Room] = {}
        self._offers: dict[str, _Offer] = {}
        self._job_dispatch: dict[str, tuple[str, str]] = {}  # job id -> (room, dispatch id)
        self._joined: set[str] = set()  # running jobs whose participant was seen
        self._participants_seen: dict[str, set[str]] = {}  # room -> identities
        self._publishers_seen: dict[str, set[str]] = {}

    # ------------------------------------------------------------------ workers

    def connect(self, api_key: str, api_secret: str, now: float,
                protocol: int = AGENT_PROTOCOL) -> WorkerState:
        """A worker's WebSocket was accepted (its token had the ``agent`` grant)."""
        worker = WorkerState(new_guid("AW_"), api_key, api_secret, now, protocol=protocol)
        self.workers[worker.id] = worker
        return worker

    def disconnect(self, worker_id: str, now: float) -> list[Effect]:
        """The worker's WebSocket closed: its offers go to other workers."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return []
        logger.info("agent worker %s (%r) left with %d running job(s)", worker_id,
                    worker.agent_name, len(worker.running))
        effects: list[Effect] = []
        for job_id, offer in list(self._offers.items()):
            if offer.worker_id == worker_id:
                del self._offers[job_id]
                effects += self._offer(offer.job, now, offer.tried)
        for job in worker.running.values():
            self._joined.discard(job.id)
            self._set_state(job, agent_pb.JS_FAILED, "agent worker disconnected", now)
        return effects

    def handle(self, worker_id: str, msg: agent_pb.WorkerMessage, now: float) -> list[Effect]:
        """One WorkerMessage from ``worker_id``."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return []
        which = msg.WhichOneof("message")
        if which == "ping":
            return [WorkerSend(worker_id, agent_pb.ServerMessage(pong=agent_pb.WorkerPong(
                last_timestamp=msg.ping.timestamp, timestamp=int(now * 1000))))]
        if which == "register":
            return self._register(worker, msg.register, now)
        if not worker.registered:
            logger.info("agent worker %s sent %s before registering", worker_id, which)
            return [WorkerClose(worker_id, "message before register")]
        if which == "availability":
            return self._availability(worker, msg.availability, now)
        if which == "update_job":
            self._update_job(worker, msg.update_job, now)
            return []
        if which == "update_worker":
            upd = msg.update_worker
            if upd.HasField("status"):
                worker.status = upd.status
            worker.load = upd.load
            return []
        if which == "simulate_job":
            return self._simulate(worker, msg.simulate_job, now)
        if which == "migrate_job":
            return []  # not implemented by the open-source server either
        logger.info("agent worker %s sent an unknown message", worker_id)
        return []

    def tick(self, now: float) -> list[Effect]:
        """Registration deadlines and availability timeouts that passed."""
        effects: list[Effect] = []
        for worker in list(self.workers.values()):
            if not worker.registered and now - worker.connected_at >= REGISTER_TIMEOUT:
                effects.append(WorkerClose(worker.id, "no register within "
                                           f"{REGISTER_TIMEOUT:g} s"))
        for job_id, offer in list(self._offers.items()):
            if now >= offer.deadline:
                del self._offers[job_id]
                logger.info("agent worker %s did not answer for job %s in %g s",
                            offer.worker_id, job_id, ASSIGN_TIMEOUT)
                effects += self._offer(offer.job, now, offer.tried)
        return effects

    def _register(self, worker: WorkerState, req: agent_pb.RegisterWorkerRequest,
                  now: float) -> list[Effect]:
        if worker.registered:
            logger.info("agent worker %s registered twice; ignored", worker.id)
            return []
        if req.type not in _JOB_TYPES:
            return [WorkerClose(worker.id, f"unknown job type {req.type}")]
        worker.registered = True
        worker.agent_name = req.agent_name
        worker.namespace = req.namespace
        worker.version = req.version
        worker.job_type = req.type
        worker.permissions = (req.allowed_permissions if req.HasField("allowed_permissions")
                              else None)
        logger.info("agent worker %s registered (agent %r, %s)", worker.id, req.agent_name,
                    agent_pb.JobType.Name(req.type))
        info = server_info()
        info.agent_protocol = AGENT_PROTOCOL
        return [WorkerSend(worker.id, agent_pb.ServerMessage(
            register=agent_pb.RegisterWorkerResponse(worker_id=worker.id, server_info=info)))]

    # ------------------------------------------------------------------ rooms

    def room_created(self, room: models_pb.Room,
                     agents: Iterable[dispatch_pb.RoomAgentDispatch], now: float) -> list[Effect]:
        """A room was created: its dispatches (those of its configuration, else one for the
        unnamed agent) are made and their jobs launched."""
        self.room_info[room.name] = room
        self.dispatches.setdefault(room.name, {})
        wanted = list(agents) or [dispatch_pb.RoomAgentDispatch()]
        effects: list[Effect] = []
        for ag in wanted:
            effects += self._new_dispatch(room.name, ag.agent_name, ag.metadata, now)[1]
        return effects

    def room_closed(self, name: str, now: float) -> list[Effect]:
        """The room is gone: its running jobs are terminated, its dispatches dropped."""
        self.room_info.pop(name, None)
        self._participants_seen.pop(name, None)
        self._publishers_seen.pop(name, None)
        effects: list[Effect] = []
        for d in self.dispatches.pop(name, {}).values():
            effects += self._terminate(d, now)
        return effects

    def observe_rooms(self, rooms: Mapping[str, RoomView], now: float) -> list[Effect]:
        """The rooms that exist now. The rooms we know that are gone are closed; a
        participant (not an agent or egress) seen for the first time gets the
        ``JT_PARTICIPANT`` jobs of its room's dispatches, and ``JT_PUBLISHER`` ones once it
        publishes; a job whose participant was seen in its room and has left it is
        terminated and FAILED ("agent worker left the room"), as livekit-server does."""
        effects: list[Effect] = []
        for name in [n for n in self.room_info if n not in rooms]:
            effects += self.room_closed(name, now)
        for name, room in rooms.items():
            if name in self.room_info:
                effects += self._observe_participants(name, room, now)
        for worker in self.workers.values():
            for job_id, job in list(worker.running.items()):
                view = rooms.get(job.room.name)
                if view is None:
                    continue
                identity = job.state.participant_identity
                if any(p.identity == identity for p in view.participants.values()):
                    self._joined.add(job_id)
                elif job_id in self._joined:
                    self._joined.discard(job_id)
                    del worker.running[job_id]
                    logger.info("job %s: agent %r left room %s", job_id, identity,
                                job.room.name)
                    self._set_state(job, agent_pb.JS_FAILED, "agent worker left the room", now)
                    effects.append(WorkerSend(worker.id, agent_pb.ServerMessage(
                        termination=agent_pb.JobTermination(job_id=job_id))))
        return effects

    def _observe_participants(self, name: str, room: RoomView, now: float) -> list[Effect]:
        seen = self._participants_seen.setdefault(name, set())
        publishers = self._publishers_seen.setdefault(name, set())
        present = set()
        effects: list[Effect] = []
        for p in room.participants.values():
            present.add(p.identity)
            if p.kind in _DEPENDENT_KINDS:
                continue
            if p.identity not in seen:
                seen.add(p.identity)
                for d in list(self.dispatches.get(name, {}).values()):
                    effects += self._launch(name, d, agent_pb.JT_PARTICIPANT, now, p)
            if p.identity not in publishers and _is_publisher(p):
                publishers.add(p.identity)
                for d in list(self.dispatches.get(name, {}).values()):
                    effects += self._launch(name, d, agent_pb.JT_PUBLISHER, now, p)
        seen &= present
        publishers &= present
        return effects

    # ------------------------------------------------------------------ dispatches

    def create_dispatch(self, room: models_pb.Room, agent_name: str, metadata: str,
                        now: float, participants: Iterable[ParticipantView] = (),
                        ) -> tuple[dispatch_pb.AgentDispatch, list[Effect]]:
        """AgentDispatchService.CreateDispatch (the room exists: the caller made it): its
        room job, and participant / publisher jobs for the ``participants`` there."""
        self.room_info.setdefault(room.name, room)
        self.dispatches.setdefault(room.name, {})
        d, effects = self._new_dispatch(room.name, agent_name, metadata, now)
        for p in participants:
            if p.kind in _DEPENDENT_KINDS:
                continue
            if _is_publisher(p):
                effects += self._launch(room.name, d, agent_pb.JT_PUBLISHER, now, p)
            effects += self._launch(room.name, d, agent_pb.JT_PARTICIPANT, now, p)
        return d, effects

    def delete_dispatch(self, room: str, dispatch_id: str,
                        now: float) -> tuple[dispatch_pb.AgentDispatch, list[Effect]]:
        """AgentDispatchService.DeleteDispatch: the dispatch's jobs are terminated."""
        d = self.dispatches.get(room, {}).pop(dispatch_id, None)
        if d is None:
            raise DispatchError("not_found", "dispatch ID not found")
        effects = self._terminate(d, now)
        d.state.deleted_at = _ns(now)
        return d, effects

    def list_dispatch(self, room: str, dispatch_id: str = "") -> list[dispatch_pb.AgentDispatch]:
        """AgentDispatchService.ListDispatch (one dispatch when ``dispatch_id`` is given)."""
        found = self.dispatches.get(room, {})
        if dispatch_id:
            return [found[dispatch_id]] if dispatch_id in found else []
        return list(found.values())

    def _new_dispatch(self, room: str, agent_name: str, metadata: str,
                      now: float) -> tuple[dispatch_pb.AgentDispatch, list[Effect]]:
        if len(self.dispatches[room]) >= MAX_DISPATCHES_PER_ROOM:
            raise DispatchError("resource_exhausted",
                                f"at most {MAX_DISPATCHES_PER_ROOM} dispatches per room")
        d = dispatch_pb.AgentDispatch(
            id=new_guid("AD_"), agent_name=agent_name, room=room, metadata=metadata,
            state=dispatch_pb.AgentDispatchState(created_at=_ns(now)))
        self.dispatches[room][d.id] = d
        return d, self._launch(room, d, agent_pb.JT_ROOM, now)

    def _launch(self, room: str, d: dispatch_pb.AgentDispatch, job_type: int, now: float,
                participant: ParticipantView | None = None) -> list[Effect]:
        """A job of ``job_type`` for dispatch ``d``, offered to a worker; none when no
        worker of that agent name and job type is registered (as livekit-server)."""
        job = agent_pb.Job(
            id=new_guid("AJ_"), dispatch_id=d.id, type=job_type,  # type: ignore[arg-type]
            room=self.room_info[room], agent_name=d.agent_name, metadata=d.metadata,
            participant=participant.info() if participant is not None else None,
            state=agent_pb.JobState(status=agent_pb.JS_PENDING, updated_at=_ns(now)))
        if not self._candidates(job, set()):
            logger.debug("room %s: no %s worker registered for agent %r", room,
                         agent_pb.JobType.Name(job_type), d.agent_name)
            return []
        d.state.jobs.append(job)
        self._job_dispatch[job.id] = (room, d.id)
        return self._offer(job, now, set())

    # ------------------------------------------------------------------ jobs

    def _candidates(self, job: agent_pb.Job, tried: set[str]) -> list[WorkerState]:
        return [w for w in self.workers.values()
                if w.registered and w.id not in tried and w.agent_name == job.agent_name
                and w.namespace == job.namespace and w.job_type == job.type
                and w.status == agent_pb.WS_AVAILABLE]

    def _offer(self, job: agent_pb.Job, now: float, tried: set[str]) -> list[Effect]:
        """Ask the next available worker (a busy one with the highest load first, like
        livekit-server packs jobs) to take ``job``."""
        candidates = self._candidates(job, tried)
        if not candidates:
            logger.info("job %s (agent %r, room %s): no agent worker available", job.id,
                        job.agent_name, job.room.name)
            self._set_state(job, agent_pb.JS_FAILED, "no workers available", now)
            return []
        busy = [w for w in candidates if w.running]
        worker = max(busy, key=lambda w: w.load) if busy else candidates[0]
        tried = tried | {worker.id}
        self._offers[job.id] = _Offer(job, worker.id, now + ASSIGN_TIMEOUT, tried)
        return [WorkerSend(worker.id, agent_pb.ServerMessage(
            availability=agent_pb.AvailabilityRequest(job=job)))]

    def _availability(self, worker: WorkerState, res: agent_pb.AvailabilityResponse,
                      now: float) -> list[Effect]:
        offer = self._offers.get(res.job_id)
        if offer is None or offer.worker_id != worker.id:
            logger.info("agent worker %s answered for unknown job %s", worker.id, res.job_id)
            return []
        del self._offers[res.job_id]
        job = offer.job
        if res.terminate:
            self._set_state(job, agent_pb.JS_SUCCESS, "", now)
            return []
        if not res.available:
            return self._offer(job, now, offer.tried)
        if job.dispatch_id and job.room.name not in self.room_info:
            return []  # the room closed while the worker thought about it
        job.state.worker_id = worker.id
        job.state.participant_identity = res.participant_identity
        job.state.started_at = _ns(now)
        self._set_state(job, agent_pb.JS_RUNNING, "", now)
        token = job_token(worker, job.room.name, res, now)
        worker.running[job.id] = job
        logger.info("job %s (room %s) assigned to agent worker %s as %r", job.id,
                    job.room.name, worker.id, res.participant_identity)
        return [WorkerSend(worker.id, agent_pb.ServerMessage(
            assignment=agent_pb.JobAssignment(job=job, token=token)))]

    def _update_job(self, worker: WorkerState, upd: agent_pb.UpdateJobStatus,
                    now: float) -> None:
        job = worker.running.get(upd.job_id)
        if job is None:
            logger.debug("agent worker %s updated unknown job %s", worker.id, upd.job_id)
            return
        if job.state.status == agent_pb.JS_PENDING and upd.status != agent_pb.JS_PENDING:
            job.state.started_at = _ns(now)
        self._set_state(job, upd.status, upd.error, now)
        if upd.status in (agent_pb.JS_SUCCESS, agent_pb.JS_FAILED):
            del worker.running[upd.job_id]
            self._joined.discard(upd.job_id)
            logger.info("job %s ended: %s %s", upd.job_id, agent_pb.JobStatus.Name(upd.status),
                        upd.error)

    def _simulate(self, worker: WorkerState, req: agent_pb.SimulateJobRequest,
                  now: float) -> list[Effect]:
        job = agent_pb.Job(
            id=new_guid("AJ_"), type=(agent_pb.JT_PUBLISHER if req.HasField("participant")
                                      else agent_pb.JT_ROOM),
            room=req.room, participant=req.participant if req.HasField("participant") else None,
            namespace=worker.namespace, agent_name=worker.agent_name,
            state=agent_pb.JobState(status=agent_pb.JS_PENDING, updated_at=_ns(now)))
        self._offers[job.id] = _Offer(job, worker.id, now + ASSIGN_TIMEOUT, {worker.id})
        return [WorkerSend(worker.id, agent_pb.ServerMessage(
            availability=agent_pb.AvailabilityRequest(job=job)))]

    def _terminate(self, d: dispatch_pb.AgentDispatch, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for job in d.state.jobs:
            self._job_dispatch.pop(job.id, None)
            self._offers.pop(job.id, None)
            self._joined.discard(job.id)
            for worker in self.workers.values():
                if worker.running.pop(job.id, None) is not None:
                    effects.append(WorkerSend(worker.id, agent_pb.ServerMessage(
                        termination=agent_pb.JobTermination(job_id=job.id))))
            if job.state.status in (agent_pb.JS_PENDING, agent_pb.JS_RUNNING):
                self._set_state(job, agent_pb.JS_SUCCESS, "", now)
        return effects

    def _set_state(self, job: agent_pb.Job, status: int, error: str, now: float) -> None:
        """Update ``job`` and its copy in the dispatch's state (ListDispatch shows it)."""
        for target in self._job_copies(job):
            target.state.status = status  # type: ignore[assignment]
            target.state.error = error
            target.state.updated_at = _ns(now)
            if job.state.started_at:
                target.state.started_at = job.state.started_at
            if job.state.worker_id:
                target.state.worker_id = job.state.worker_id
                target.state.participant_identity = job.state.participant_identity
            if status in (agent_pb.JS_SUCCESS, agent_pb.JS_FAILED):
                target.state.ended_at = _ns(now)

    def _job_copies(self, job: agent_pb.Job) -> list[agent_pb.Job]:
        out = [job]
        where = self._job_dispatch.get(job.id)
        if where is not None:
            d = self.dispatches.get(where[0], {}).get(where[1])
            if d is not None:
                out += [j for j in d.state.jobs if j.id == job.id and j is not job]
        return out
