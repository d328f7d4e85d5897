"""Agent dispatch in the dev server, driven by a minimal worker written on aiohttp +
livekit-protocol (the messages livekit-agents speaks) whose jobs join the room with their
job token through aiolivekit.Room over real WebRTC."""

from __future__ import annotations

import asyncio
import datetime
import json
import warnings
from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent as agent_pb, agent_dispatch as dispatch_pb, room as room_pb

from aiolivekit import AudioFrame, AudioSource, LocalAudioTrack, Room
from aiolivekit.server import DevServer
from aiolivekit.server.agent_service import TICK_INTERVAL

pytestmark = [pytest.mark.asyncio,
              pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]


def _agent_token(server: DevServer, agent: bool = True) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (api.AccessToken(server.api_key, server.api_secret)
                .with_grants(api.VideoGrants(agent=agent))
                .with_ttl(datetime.timedelta(minutes=5)).to_jwt())


class MiniWorker:
    """Registers, accepts every job as ``agent-<job id>`` and joins it with aiolivekit."""

    def __init__(self, http: aiohttp.ClientSession, server: DevServer,
                 agent_name: str = "", job_type: int = agent_pb.JT_ROOM) -> None:
        self.http = http
        self.job_type = job_type
        self.server = server
        self.agent_name = agent_name
        self.worker_id = ""
        self.offers: list[agent_pb.Job] = []
        self.assignments: asyncio.Queue[agent_pb.JobAssignment] = asyncio.Queue()
        self.terminations: asyncio.Queue[str] = asyncio.Queue()
        self.pongs: list[agent_pb.WorkerPong] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self.rooms: list[Room] = []

    async def start(self) -> None:
        self._ws = await self.http.ws_connect(
            f"{self.server.url}/agent?protocol=1",
            headers={"Authorization": f"Bearer {_agent_token(self.server)}"})
        await self.send(agent_pb.WorkerMessage(register=agent_pb.RegisterWorkerRequest(
            type=self.job_type, agent_name=self.agent_name,  # type: ignore[arg-type]
            version="test")))
        msg = await self._ws.receive(timeout=5)
        reg = agent_pb.ServerMessage.FromString(msg.data)
        assert reg.WhichOneof("message") == "register"
        self.worker_id = reg.register.worker_id
        await self.send(agent_pb.WorkerMessage(ping=agent_pb.WorkerPing(timestamp=4242)))
        self._reader = asyncio.ensure_future(self._read())

    async def send(self, msg: agent_pb.WorkerMessage) -> None:
        assert self._ws is not None
        await asyncio.wait_for(self._ws.send_bytes(msg.SerializeToString()), 5)

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            msg = agent_pb.ServerMessage.FromString(raw.data)
            which = msg.WhichOneof("message")
            if which == "availability":
                job = msg.availability.job
                self.offers.append(job)
                await self.send(agent_pb.WorkerMessage(availability=agent_pb.AvailabilityResponse(
                    job_id=job.id, available=True, participant_identity=f"agent-{job.id}",
                    participant_name="mini agent",
                    participant_attributes={"mini": "yes"})))
            elif which == "assignment":
                self.assignments.put_nowait(msg.assignment)
            elif which == "termination":
                self.terminations.put_nowait(msg.termination.job_id)
            elif which == "pong":
                self.pongs.append(msg.pong)

    async def run_job(self, assignment: agent_pb.JobAssignment) -> Room:
        """Join with the job token, say hello on the data channel, report RUNNING."""
        room = Room()
        self.rooms.append(room)
        await asyncio.wait_for(room.connect(assignment.url or self.server.url,
                                            assignment.token), 30)
        await self.send(agent_pb.WorkerMessage(update_job=agent_pb.UpdateJobStatus(
            job_id=assignment.job.id, status=agent_pb.JS_RUNNING)))
        await room.local_participant.publish_data(
            json.dumps({"job": assignment.job.id, "metadata": assignment.job.metadata}),
            topic="agent-hello")
        return room

    async def end_job(self, job_id: str) -> None:
        await self.send(agent_pb.WorkerMessage(update_job=agent_pb.UpdateJobStatus(
            job_id=job_id, status=agent_pb.JS_SUCCESS)))

    async def close(self) -> None:
        for room in self.rooms:
            await room.disconnect()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    async with DevServer() as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def lkapi(server: DevServer) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
    yield client
    await client.aclose()


async def _until(cond: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_worker_refused_without_agent_grant(server: DevServer,
                                                  http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await http.ws_connect(f"{server.url}/agent",
                              headers={"Authorization": f"Bearer {_agent_token(server, False)}"})
    assert exc.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await http.ws_connect(f"{server.url}/agent")
    assert exc.value.status == 401
    async with http.get(f"{server.http_url}/agent") as resp:  # not a WebSocket
        assert resp.status == 404
    # bad input from a worker: undecodable bytes, or a message before registering
    for payload in (b"\xff\xff\xff", agent_pb.WorkerMessage(
            update_worker=agent_pb.UpdateWorkerStatus(load=0.5)).SerializeToString()):
        ws = await http.ws_connect(f"{server.url}/agent",
                                   headers={"Authorization": f"Bearer {_agent_token(server)}"})
        await ws.send_bytes(payload)
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()
    await _until(lambda: not server.app.agents.core.workers)


async def test_room_creation_dispatches_job_that_joins_as_agent(
        server: DevServer, http: aiohttp.ClientSession, lkapi: api.LiveKitAPI) -> None:
    worker = MiniWorker(http, server)
    named = MiniWorker(http, server, agent_name="someone-else")
    await worker.start()
    await named.start()
    user = Room()
    hellos: list[tuple[str, bytes, str]] = []
    user.on("data_received", lambda d: hellos.append(
        (d.participant.identity if d.participant else "", d.data, d.topic or "")))
    try:
        await asyncio.wait_for(user.connect(server.url, server.token("user", "auto-room")), 30)
        assignment = await asyncio.wait_for(worker.assignments.get(), 10)
        job = assignment.job
        assert job.room.name == "auto-room" and job.type == agent_pb.JT_ROOM
        assert job.agent_name == "" and job.state.status == agent_pb.JS_RUNNING
        assert job.state.worker_id == worker.worker_id
        assert [o.id for o in worker.offers] == [job.id] and named.offers == []
        assert worker.pongs and worker.pongs[0].last_timestamp == 4242

        await worker.run_job(assignment)
        identity = f"agent-{job.id}"
        await _until(lambda: identity in user.remote_participants)
        agent = user.remote_participants[identity]
        assert agent.kind == api.ParticipantInfo.Kind.AGENT
        assert agent.name == "mini agent"
        assert agent.attributes == {"mini": "yes", "lk.agent_name": ""}
        await _until(lambda: hellos)
        sender, data, topic = hellos[0]
        assert (sender, topic) == (identity, "agent-hello")
        assert json.loads(data) == {"job": job.id, "metadata": ""}
        # the server's own view: kind AGENT in ParticipantInfo
        info = await lkapi.room.get_participant(
            room_pb.RoomParticipantIdentity(room="auto-room", identity=identity))
        assert info.kind == api.ParticipantInfo.Kind.AGENT

        [d] = await lkapi.agent_dispatch.list_dispatch("auto-room")
        assert d.agent_name == "" and [j.id for j in d.state.jobs] == [job.id]
        await worker.end_job(job.id)

        async def status() -> int:
            [d] = await lkapi.agent_dispatch.list_dispatch("auto-room")
            return int(d.state.jobs[0].state.status)

        for _ in range(100):
            if await status() == agent_pb.JS_SUCCESS:
                break
            await asyncio.sleep(0.05)
        assert await status() == agent_pb.JS_SUCCESS
    finally:
        await user.disconnect()
        await worker.close()
        await named.close()


async def test_explicit_dispatch_via_agent_dispatch_service(
        server: DevServer, http: aiohttp.ClientSession, lkapi: api.LiveKitAPI) -> None:
    worker = MiniWorker(http, server, agent_name="helper")
    await worker.start()
    user = Room()
    try:
        await asyncio.wait_for(user.connect(server.url, server.token("user", "explicit")), 30)
        await asyncio.sleep(0.3)
        assert worker.offers == []  # a named agent is not dispatched on room creation
        dispatch = await lkapi.agent_dispatch.create_dispatch(
            dispatch_pb.CreateAgentDispatchRequest(agent_name="helper", room="explicit",
                                                   metadata="task 7"))
        assert dispatch.id.startswith("AD_") and dispatch.agent_name == "helper"
        assignment = await asyncio.wait_for(worker.assignments.get(), 10)
        assert assignment.job.dispatch_id == dispatch.id
        assert assignment.job.metadata == "task 7" and assignment.job.agent_name == "helper"
        await worker.run_job(assignment)
        identity = f"agent-{assignment.job.id}"
        await _until(lambda: identity in user.remote_participants)
        assert user.remote_participants[identity].attributes["lk.agent_name"] == "helper"

        listed = await lkapi.agent_dispatch.list_dispatch("explicit")
        assert [x.id for x in listed if x.agent_name == "helper"] == [dispatch.id]
        got = await lkapi.agent_dispatch.get_dispatch(dispatch.id, "explicit")
        assert got is not None and got.state.jobs[0].state.participant_identity == identity

        deleted = await lkapi.agent_dispatch.delete_dispatch(dispatch.id, "explicit")
        assert deleted.id == dispatch.id and deleted.state.deleted_at > 0
        assert await asyncio.wait_for(worker.terminations.get(), 10) == assignment.job.id
        assert await lkapi.agent_dispatch.get_dispatch(dispatch.id, "explicit") is None

        with pytest.raises(api.TwirpError) as bad:
            await lkapi.agent_dispatch.create_dispatch(dispatch_pb.CreateAgentDispatchRequest(
                agent_name="helper", room="explicit", metadata="x" * (512 * 1024 + 1)))
        assert bad.value.code == "invalid_argument"
        with pytest.raises(api.TwirpError) as bad:
            await lkapi.agent_dispatch.delete_dispatch("AD_nope", "explicit")
        assert bad.value.code == "not_found"
        # a dispatch for a room that does not exist yet creates it
        other = await lkapi.agent_dispatch.create_dispatch(
            dispatch_pb.CreateAgentDispatchRequest(agent_name="helper", room="fresh"))
        second = await asyncio.wait_for(worker.assignments.get(), 10)
        assert second.job.room.name == "fresh" and second.job.dispatch_id == other.id
        rooms = await lkapi.room.list_rooms(room_pb.ListRoomsRequest(names=["fresh"]))
        assert [r.name for r in rooms.rooms] == ["fresh"]
    finally:
        await user.disconnect()
        await worker.close()


async def test_agents_in_token_room_configuration(
        server: DevServer, http: aiohttp.ClientSession, lkapi: api.LiveKitAPI) -> None:
    worker = MiniWorker(http, server, agent_name="concierge")
    await worker.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = (api.AccessToken(server.api_key, server.api_secret)
                 .with_identity("user").with_grants(api.VideoGrants(room_join=True,
                                                                      room="configured"))
                 .with_room_config(room_pb.RoomConfiguration(agents=[
                     dispatch_pb.RoomAgentDispatch(agent_name="concierge", metadata="vip")]))
                 .to_jwt())
    user = Room()
    try:
        await asyncio.wait_for(user.connect(server.url, token), 30)
        assignment = await asyncio.wait_for(worker.assignments.get(), 10)
        assert assignment.job.agent_name == "concierge" and assignment.job.metadata == "vip"
        assert assignment.job.room.name == "configured"
        [d] = await lkapi.agent_dispatch.list_dispatch("configured")
        assert d.agent_name == "concierge" and d.metadata == "vip"
        # CreateRoom's agents are the new room's dispatches
        await lkapi.room.create_room(room_pb.CreateRoomRequest(name="created", agents=[
            dispatch_pb.RoomAgentDispatch(agent_name="concierge", metadata="via api")]))
        second = await asyncio.wait_for(worker.assignments.get(), 10)
        assert (second.job.room.name, second.job.metadata) == ("created", "via api")
        # a token without roomAdmin on that room is refused
        url = f"{server.http_url}/twirp/livekit.AgentDispatchService/ListDispatch"
        for token in (server.token("x", "configured"),
                      server.token("x", "elsewhere", room_admin=True)):
            async with http.post(url, json={"room": "configured"},
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 401
                assert (await resp.json())["code"] == "unauthenticated"
    finally:
        await user.disconnect()
        await worker.close()


async def test_agent_leaving_the_room_terminates_its_job(
        server: DevServer, http: aiohttp.ClientSession, lkapi: api.LiveKitAPI) -> None:
    worker = MiniWorker(http, server)
    await worker.start()
    user = Room()
    try:
        await asyncio.wait_for(user.connect(server.url, server.token("user", "leaving")), 30)
        assignment = await asyncio.wait_for(worker.assignments.get(), 10)
        agent_room = await worker.run_job(assignment)
        identity = f"agent-{assignment.job.id}"
        await _until(lambda: identity in user.remote_participants)
        await asyncio.sleep(TICK_INTERVAL * 2)  # the server saw it in the room
        await agent_room.disconnect()
        assert await asyncio.wait_for(worker.terminations.get(), 10) == assignment.job.id
        [d] = await lkapi.agent_dispatch.list_dispatch("leaving")
        state = d.state.jobs[0].state
        assert state.status == agent_pb.JS_FAILED
        assert state.error == "agent worker left the room" and state.ended_at > 0
    finally:
        await user.disconnect()
        await worker.close()


async def test_participant_and_publisher_jobs(server: DevServer,
                                              http: aiohttp.ClientSession) -> None:
    per_participant = MiniWorker(http, server, job_type=agent_pb.JT_PARTICIPANT)
    per_publisher = MiniWorker(http, server, job_type=agent_pb.JT_PUBLISHER)
    await per_participant.start()
    await per_publisher.start()
    user = Room()
    source = AudioSource(48000, 1)
    try:
        await asyncio.wait_for(user.connect(server.url, server.token("user", "targets")), 30)
        first = await asyncio.wait_for(per_participant.assignments.get(), 10)
        assert first.job.type == agent_pb.JT_PARTICIPANT
        assert first.job.participant.identity == "user" and first.job.room.name == "targets"
        await asyncio.sleep(0.5)
        assert per_publisher.offers == []  # nothing published yet
        track = LocalAudioTrack.create_audio_track("mic", source)
        pub = await user.local_participant.publish_track(track)

        async def feed() -> None:
            while True:
                await source.capture_frame(AudioFrame(b"\x10\x00" * 480, 48000, 1, 480))

        feeder = asyncio.ensure_future(feed())
        try:
            second = await asyncio.wait_for(per_publisher.assignments.get(), 10)
        finally:
            feeder.cancel()
        assert second.job.type == agent_pb.JT_PUBLISHER
        assert second.job.participant.identity == "user"
        assert [t.sid for t in second.job.participant.tracks] == [pub.sid]
        # the agent of the participant job is an agent: it gets no job of its own
        await per_participant.run_job(first)
        await asyncio.sleep(1.0)
        assert [o.id for o in per_participant.offers] == [first.job.id]
    finally:
        await user.disconnect()
        await source.aclose()
        await per_participant.close()
        await per_publisher.close()
