"""Sans-I/O agent dispatch: registration, availability, assignment, job tokens, status."""

from __future__ import annotations

from dataclasses import dataclass, field

import jwt
import pytest
from livekit.protocol import agent as agent_pb, agent_dispatch as dispatch_pb, models as models_pb

from aiolivekit.server.agent_dispatch import (
    ASSIGN_TIMEOUT,
    REGISTER_TIMEOUT,
    AgentDispatcher,
    DispatchError,
    WorkerClose,
    WorkerSend,
)
from aiolivekit.server.auth import join_grant, verify_token


@dataclass
class FakeTrack:
    published: bool = True


@dataclass
class FakeParticipant:
    identity: str
    kind: int = models_pb.ParticipantInfo.Kind.STANDARD
    tracks: dict[str, FakeTrack] = field(default_factory=dict)

    def info(self) -> models_pb.ParticipantInfo:
        return models_pb.ParticipantInfo(identity=self.identity, kind=self.kind)  # type: ignore[arg-type]


@dataclass
class FakeRoom:
    participants: dict[str, FakeParticipant]


def _rooms(**rooms: list[str | FakeParticipant]) -> dict[str, FakeRoom]:
    out = {}
    for name, people in rooms.items():
        ps = [p if isinstance(p, FakeParticipant) else FakeParticipant(p) for p in people]
        out[name] = FakeRoom({f"PA_{p.identity}": p for p in ps})
    return out


KEY, SECRET = "devkey", "secret-secret-secret-secret-secret"
T0 = 1_800_000_000.0


def _register(core: AgentDispatcher, agent_name: str = "", now: float = T0,
              **kw: object) -> str:
    w = core.connect(KEY, SECRET, now)
    out = core.handle(w.id, agent_pb.WorkerMessage(register=agent_pb.RegisterWorkerRequest(
        type=agent_pb.JT_ROOM, agent_name=agent_name, version="1.0", **kw)), now)
    assert len(out) == 1 and isinstance(out[0], WorkerSend)
    reg = out[0].message.register
    assert reg.worker_id == w.id and w.id.startswith("AW_")
    assert reg.server_info.agent_protocol == 1
    return w.id


def _room(name: str = "r1") -> models_pb.Room:
    return models_pb.Room(name=name, sid="RM_abc")


def _only(effects: list, kind: str) -> agent_pb.ServerMessage:
    assert len(effects) == 1 and isinstance(effects[0], WorkerSend), effects
    msg = effects[0].message
    assert msg.WhichOneof("message") == kind
    return msg


def _answer(core: AgentDispatcher, wid: str, job_id: str, available: bool = True,
            now: float = T0 + 1, **kw: object) -> list:
    return core.handle(wid, agent_pb.WorkerMessage(availability=agent_pb.AvailabilityResponse(
        job_id=job_id, available=available, **kw)), now)


def test_ping_pong_echoes_timestamp() -> None:
    core = AgentDispatcher()
    w = core.connect(KEY, SECRET, T0)
    out = core.handle(w.id, agent_pb.WorkerMessage(ping=agent_pb.WorkerPing(timestamp=1234)),
                      T0 + 0.5)
    pong = _only(out, "pong").pong
    assert pong.last_timestamp == 1234 and pong.timestamp == int((T0 + 0.5) * 1000)


def test_register_deadline_and_messages_before_register() -> None:
    core = AgentDispatcher()
    w = core.connect(KEY, SECRET, T0)
    assert core.tick(T0 + REGISTER_TIMEOUT - 1) == []
    closes = core.tick(T0 + REGISTER_TIMEOUT)
    assert [type(e) for e in closes] == [WorkerClose] and closes[0].worker_id == w.id
    w2 = core.connect(KEY, SECRET, T0)
    out = core.handle(w2.id, agent_pb.WorkerMessage(
        update_worker=agent_pb.UpdateWorkerStatus(load=0.5)), T0)
    assert isinstance(out[0], WorkerClose)
    w3 = core.connect(KEY, SECRET, T0)
    out = core.handle(w3.id, agent_pb.WorkerMessage(register=agent_pb.RegisterWorkerRequest(
        type=99)), T0)
    assert isinstance(out[0], WorkerClose) and "job type" in out[0].reason


def test_room_creation_dispatches_to_unnamed_worker_and_assigns_with_token() -> None:
    core = AgentDispatcher()
    named = _register(core, "helper")
    wid = _register(core)
    req = _only(core.room_created(_room(), [], T0), "availability").availability
    job = req.job
    assert job.id.startswith("AJ_") and job.type == agent_pb.JT_ROOM
    assert job.room.name == "r1" and job.agent_name == "" and job.dispatch_id.startswith("AD_")
    assert named not in [e.worker_id for e in core.tick(T0)]
    out = _answer(core, wid, job.id, participant_identity=f"agent-{job.id}",
                  participant_name="bot", participant_metadata="m",
                  participant_attributes={"a": "1"})
    assignment = _only(out, "assignment").assignment
    assert assignment.job.id == job.id and assignment.job.state.status == agent_pb.JS_RUNNING
    assert assignment.job.state.worker_id == wid
    claims = verify_token(assignment.token, {KEY: SECRET}, T0 + 2)
    grant = join_grant(claims)
    assert claims.identity == f"agent-{job.id}" and claims.name == "bot"
    assert claims.metadata == "m" and claims.kind == "agent"
    assert claims.attributes == {"a": "1", "lk.agent_name": ""}
    assert grant.room == "r1" and grant.agent and grant.can_publish and grant.can_subscribe
    assert claims.expires_at == int(T0 + 1) + 3600
    # the dispatch lists the job, running on the worker
    [d] = core.list_dispatch("r1")
    assert [j.id for j in d.state.jobs] == [job.id]
    assert d.state.jobs[0].state.status == agent_pb.JS_RUNNING
    assert d.state.jobs[0].state.participant_identity == f"agent-{job.id}"


def test_worker_permissions_shape_the_token() -> None:
    core = AgentDispatcher()
    wid = _register(core, allowed_permissions=models_pb.ParticipantPermission(
        can_subscribe=True, can_publish=False, can_publish_data=True, hidden=True))
    job = _only(core.room_created(_room(), [], T0), "availability").availability.job
    token = _only(_answer(core, wid, job.id, participant_identity="x"),
                  "assignment").assignment.token
    video = jwt.decode(token, options={"verify_signature": False})["video"]
    assert video["canPublish"] is False and video["hidden"] is True
    assert video["canUpdateOwnMetadata"] is False and video["agent"] is True


def test_declined_and_silent_workers_are_skipped() -> None:
    core = AgentDispatcher()
    w1 = _register(core)
    w2 = _register(core)
    w3 = _register(core)
    first = core.room_created(_room(), [], T0)
    assert first[0].worker_id == w1
    job_id = first[0].message.availability.job.id
    second = _answer(core, w1, job_id, available=False)
    assert second[0].worker_id == w2 and second[0].message.availability.job.id == job_id
    assert core.tick(T0 + ASSIGN_TIMEOUT) == []  # the offer to w2 is counted from T0 + 1
    third = core.tick(T0 + 1 + ASSIGN_TIMEOUT)
    assert third[0].worker_id == w3
    # a late answer from w2 is ignored
    assert _answer(core, w2, job_id) == []
    assert core.tick(T0 + 2 + 2 * ASSIGN_TIMEOUT) == []  # nobody left: the job fails
    [d] = core.list_dispatch("r1")
    assert d.state.jobs[0].state.status == agent_pb.JS_FAILED
    assert d.state.jobs[0].state.error == "no workers available"


def test_full_worker_is_not_offered_and_load_packs_jobs() -> None:
    core = AgentDispatcher()
    w1 = _register(core)
    w2 = _register(core)
    core.handle(w1, agent_pb.WorkerMessage(update_worker=agent_pb.UpdateWorkerStatus(
        status=agent_pb.WS_FULL, load=1.0)), T0)
    out = core.room_created(_room("a"), [], T0)
    assert out[0].worker_id == w2
    core.handle(w1, agent_pb.WorkerMessage(update_worker=agent_pb.UpdateWorkerStatus(
        status=agent_pb.WS_AVAILABLE, load=0.1)), T0)
    _answer(core, w2, out[0].message.availability.job.id, participant_identity="p")
    core.handle(w2, agent_pb.WorkerMessage(update_worker=agent_pb.UpdateWorkerStatus(
        load=0.3)), T0)
    out = core.room_created(_room("b"), [], T0)
    assert out[0].worker_id == w2  # busy worker with the highest load first


def test_room_config_agents_and_explicit_dispatch_go_to_named_workers() -> None:
    core = AgentDispatcher()
    unnamed = _register(core)
    alice = _register(core, "alice")
    out = core.room_created(_room(), [dispatch_pb.RoomAgentDispatch(agent_name="alice",
                                                                     metadata="hi")], T0)
    job = _only(out, "availability").availability.job
    assert out[0].worker_id == alice and job.metadata == "hi" and job.agent_name == "alice"
    d, out = core.create_dispatch(_room(), "alice", "again", T0)
    assert d.id.startswith("AD_") and d.agent_name == "alice" and d.room == "r1"
    assert out[0].worker_id == alice
    # nobody registered as "bob": a dispatch without a job
    d2, out = core.create_dispatch(_room(), "bob", "", T0)
    assert out == [] and list(d2.state.jobs) == []
    assert {x.agent_name for x in core.list_dispatch("r1")} == {"alice", "bob"}
    assert core.list_dispatch("r1", d2.id)[0].id == d2.id
    assert unnamed not in [e.worker_id for e in out]


def test_job_status_updates_and_dispatch_delete_terminates() -> None:
    core = AgentDispatcher()
    wid = _register(core)
    job = _only(core.room_created(_room(), [], T0), "availability").availability.job
    _answer(core, wid, job.id, participant_identity="p")
    core.handle(wid, agent_pb.WorkerMessage(update_job=agent_pb.UpdateJobStatus(
        job_id=job.id, status=agent_pb.JS_RUNNING)), T0 + 2)
    [d] = core.list_dispatch("r1")
    assert d.state.jobs[0].state.status == agent_pb.JS_RUNNING
    deleted, out = core.delete_dispatch("r1", d.id, T0 + 3)
    assert _only(out, "termination").termination.job_id == job.id
    assert deleted.state.deleted_at == int((T0 + 3) * 1e9)
    assert deleted.state.jobs[0].state.status == agent_pb.JS_SUCCESS
    assert core.list_dispatch("r1") == []
    with pytest.raises(DispatchError):
        core.delete_dispatch("r1", d.id, T0 + 4)


def test_job_ends_by_worker_and_room_close_terminates_running_only() -> None:
    core = AgentDispatcher()
    wid = _register(core)
    j1 = _only(core.room_created(_room("a"), [], T0), "availability").availability.job
    j2 = _only(core.room_created(_room("b"), [], T0), "availability").availability.job
    _answer(core, wid, j1.id, participant_identity="p1")
    _answer(core, wid, j2.id, participant_identity="p2")
    core.handle(wid, agent_pb.WorkerMessage(update_job=agent_pb.UpdateJobStatus(
        job_id=j1.id, status=agent_pb.JS_FAILED, error="boom")), T0 + 2)
    [d] = core.list_dispatch("a")
    assert d.state.jobs[0].state.status == agent_pb.JS_FAILED
    assert d.state.jobs[0].state.error == "boom" and d.state.jobs[0].state.ended_at
    assert core.room_closed("a", T0 + 3) == []  # the job already ended
    out = core.observe_rooms(_rooms(**{"a-never-known": []}), T0 + 3)
    assert _only(out, "termination").termination.job_id == j2.id
    assert core.dispatches == {}


def test_worker_disconnect_moves_pending_offer() -> None:
    core = AgentDispatcher()
    w1 = _register(core)
    w2 = _register(core)
    out = core.room_created(_room(), [], T0)
    assert out[0].worker_id == w1
    moved = core.disconnect(w1, T0 + 1)
    assert moved[0].worker_id == w2
    assert core.handle(w1, agent_pb.WorkerMessage(ping=agent_pb.WorkerPing()), T0) == []


def test_terminate_answer_ends_job_and_simulate_offers_to_same_worker() -> None:
    core = AgentDispatcher()
    wid = _register(core)
    job = _only(core.room_created(_room(), [], T0), "availability").availability.job
    assert _answer(core, wid, job.id, terminate=True) == []
    assert core.list_dispatch("r1")[0].state.jobs[0].state.status == agent_pb.JS_SUCCESS
    out = core.handle(wid, agent_pb.WorkerMessage(simulate_job=agent_pb.SimulateJobRequest(
        type=agent_pb.JT_ROOM, room=_room("sim"))), T0)
    sim = _only(out, "availability").availability.job
    assert sim.room.name == "sim" and out[0].worker_id == wid and not sim.dispatch_id
    # a simulated job is assigned even though no such room exists yet
    token = _only(_answer(core, wid, sim.id, participant_identity="sim-agent"),
                  "assignment").assignment.token
    assert join_grant(verify_token(token, {KEY: SECRET}, T0 + 2)).room == "sim"


def test_job_participant_leaving_the_room_fails_the_job() -> None:
    core = AgentDispatcher()
    wid = _register(core)
    job = _only(core.room_created(_room(), [], T0), "availability").availability.job
    _answer(core, wid, job.id, participant_identity="agent-x")
    # not joined yet: its absence is not a departure
    assert core.observe_rooms(_rooms(r1=["user"]), T0 + 2) == []
    assert core.observe_rooms(_rooms(r1=["user", "agent-x"]), T0 + 3) == []
    out = core.observe_rooms(_rooms(r1=["user"]), T0 + 4)
    assert _only(out, "termination").termination.job_id == job.id
    state = core.list_dispatch("r1")[0].state.jobs[0].state
    assert state.status == agent_pb.JS_FAILED and state.error == "agent worker left the room"
    assert core.observe_rooms(_rooms(r1=["user"]), T0 + 5) == []
    # a job the worker ended itself is not terminated when its participant leaves
    job2 = _only(core.create_dispatch(_room(), "", "", T0)[1], "availability").availability.job
    _answer(core, wid, job2.id, participant_identity="agent-y")
    core.observe_rooms(_rooms(r1=["agent-y"]), T0 + 6)
    core.handle(wid, agent_pb.WorkerMessage(update_job=agent_pb.UpdateJobStatus(
        job_id=job2.id, status=agent_pb.JS_SUCCESS)), T0 + 7)
    assert core.observe_rooms(_rooms(r1=[]), T0 + 8) == []


def _register_type(core: AgentDispatcher, job_type: int, agent_name: str = "") -> str:
    w = core.connect(KEY, SECRET, T0)
    core.handle(w.id, agent_pb.WorkerMessage(register=agent_pb.RegisterWorkerRequest(
        type=job_type, agent_name=agent_name)), T0)  # type: ignore[arg-type]
    return w.id


def test_participant_and_publisher_jobs() -> None:
    core = AgentDispatcher()
    room_w = _register(core)
    part_w = _register_type(core, agent_pb.JT_PARTICIPANT)
    pub_w = _register_type(core, agent_pb.JT_PUBLISHER)
    out = core.room_created(_room(), [], T0)
    assert [e.worker_id for e in out] == [room_w]
    alice = FakeParticipant("alice")
    bot = FakeParticipant("bot", kind=models_pb.ParticipantInfo.Kind.AGENT)
    out = core.observe_rooms(_rooms(r1=[alice, bot]), T0 + 1)
    job = _only(out, "availability").availability.job
    assert out[0].worker_id == part_w and job.type == agent_pb.JT_PARTICIPANT
    assert job.participant.identity == "alice"
    assert core.observe_rooms(_rooms(r1=[alice, bot]), T0 + 2) == []  # once per participant
    alice.tracks["TR_a"] = FakeTrack(published=False)
    assert core.observe_rooms(_rooms(r1=[alice]), T0 + 3) == []  # not published yet
    alice.tracks["TR_a"].published = True
    out = core.observe_rooms(_rooms(r1=[alice]), T0 + 4)
    job = _only(out, "availability").availability.job
    assert out[0].worker_id == pub_w and job.type == agent_pb.JT_PUBLISHER
    assert job.participant.identity == "alice"
    [d] = core.list_dispatch("r1")
    assert [j.type for j in d.state.jobs] == [agent_pb.JT_ROOM, agent_pb.JT_PARTICIPANT,
                                              agent_pb.JT_PUBLISHER]
    # an explicit dispatch launches for the participants already there
    _register_type(core, agent_pb.JT_PUBLISHER, "named")
    named_part = _register_type(core, agent_pb.JT_PARTICIPANT, "named")
    _, out = core.create_dispatch(_room(), "named", "", T0 + 5, [alice, bot])
    types = sorted(e.message.availability.job.type for e in out)
    assert types == [agent_pb.JT_PUBLISHER, agent_pb.JT_PARTICIPANT]
    assert named_part in [e.worker_id for e in out]
    # a participant leaving and coming back is a new participant
    assert core.observe_rooms(_rooms(r1=[]), T0 + 6) == []
    out = core.observe_rooms(_rooms(r1=[FakeParticipant("alice")]), T0 + 7)
    assert sorted(e.message.availability.job.agent_name for e in out) == ["", "named"]
