"""A real livekit-agents worker (``python hello_agent.py start``, official ``livekit.rtc``
in its own venv) dispatched by our DevServer: it registers on ``/agent``, gets the job when
the user's join creates the room, joins as kind AGENT with its job token, says hello on
the data channel and ends the job, which ListDispatch then shows as ended.

Runs inside ``scripts/netns-run`` only (the official SDK's libwebrtc ignores loopback) and
when livekit-agents is installed in ``$AIOLIVEKIT_AGENTS_VENV`` (default
``~/.cache/aiolivekit/agents-venv``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from livekit import api
from livekit.protocol import agent as agent_pb

from aiolivekit import Room
from aiolivekit.server import DevServer

HERE = Path(__file__).resolve().parent
AGENT = HERE / "agents" / "hello_agent.py"
CACHE = Path(os.environ.get("AIOLIVEKIT_CACHE") or Path.home() / ".cache" / "aiolivekit")
AGENTS_VENV = Path(os.environ.get("AIOLIVEKIT_AGENTS_VENV") or CACHE / "agents-venv")
AGENTS_PYTHON = AGENTS_VENV / "bin" / "python"

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.netns,
    pytest.mark.official_sdk,
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
    pytest.mark.skipif(os.environ.get("AIOLIVEKIT_NETNS") != "1",
                       reason="needs scripts/netns-run (libwebrtc ignores loopback)"),
    pytest.mark.skipif(not list(AGENTS_VENV.glob("lib/python*/site-packages/livekit/agents")),
                       reason=f"livekit-agents not installed in {AGENTS_VENV}"),
]


async def test_livekit_agents_worker_is_dispatched_and_joins(tmp_path: Path) -> None:
    log_path = tmp_path / "worker.log"
    async with DevServer() as server:
        env = {k: v for k, v in os.environ.items() if k != "AIOLIVEKIT_AS_LIVEKIT_RTC"}
        env.update(LIVEKIT_URL=server.url, LIVEKIT_API_KEY=server.api_key,
                   LIVEKIT_API_SECRET=server.api_secret)
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                str(AGENTS_PYTHON), str(AGENT), "start", env=env,
                stdout=log_file, stderr=asyncio.subprocess.STDOUT)
        user = Room()
        lkapi = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
        hellos: list[tuple[str, dict[str, str]]] = []
        user.on("data_received", lambda d: hellos.append(
            (d.participant.identity if d.participant else "", json.loads(d.data))))
        try:
            core = server.app.agents.core
            for _ in range(600):  # the worker registers (its start-up can take seconds)
                if any(w.registered for w in core.workers.values()):
                    break
                await asyncio.sleep(0.05)
            assert any(w.registered for w in core.workers.values()), "no worker registered"
            await asyncio.wait_for(user.connect(server.url, server.token("user", "lk-agents")),
                                   30)
            for _ in range(1200):
                if hellos:
                    break
                await asyncio.sleep(0.05)
            assert hellos, "no hello from the agent"
            sender, hello = hellos[0]
            [d] = await lkapi.agent_dispatch.list_dispatch("lk-agents")
            [job] = d.state.jobs
            assert hello == {"job": job.id, "identity": sender, "room": "lk-agents",
                             "metadata": "", "rtc": "livekit.rtc"}
            agent = user.remote_participants.get(sender)
            if agent is not None:  # it may have left already
                assert agent.kind == api.ParticipantInfo.Kind.AGENT
                assert agent.attributes.get("lk.agent_name") == ""
            # livekit-agents leaves the room, then reports JS_SUCCESS when the job process
            # has exited; the server may see the departure first and end the job as
            # livekit-server does (JS_FAILED, "agent worker left the room")
            ended = (agent_pb.JS_SUCCESS, agent_pb.JS_FAILED)
            for _ in range(400):
                [d] = await lkapi.agent_dispatch.list_dispatch("lk-agents")
                if d.state.jobs[0].state.status in ended:
                    break
                await asyncio.sleep(0.05)
            state = d.state.jobs[0].state
            assert (state.status, state.error) in [
                (agent_pb.JS_SUCCESS, ""), (agent_pb.JS_FAILED, "agent worker left the room")]
            assert state.ended_at >= state.started_at > 0
            assert d.state.jobs[0].state.participant_identity == sender
        finally:
            await user.disconnect()
            await lkapi.aclose()
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
            print(log_path.read_text(errors="replace")[-4000:])
