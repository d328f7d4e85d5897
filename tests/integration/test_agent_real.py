"""A real livekit-agents 1.8.9 voice agent runs on aiolivekit through the drop-in switch.

The agent (``agents/tone_agent.py``, an unchanged livekit-agents program: ``python
tone_agent.py start``) runs in livekit-agents' own venv (scripts/install-agents-venv), with
the official ``livekit`` wheel installed and ``AIOLIVEKIT_AS_LIVEKIT_RTC=1``. Its worker
registers with the server, which dispatches the room to it (automatic dispatch); the job
process starts an AgentSession on tone doubles (``agents/tone_doubles.py``: VAD, STT, LLM,
TTS; no network, no model).

The user (``agents/tone_user.py``, written against ``livekit.rtc``; run on aiolivekit
through the switch, and on the official SDK in its venv) publishes a 440 Hz burst standing
for speech. Asserted:
the agent's ``lk.agent.state`` attribute goes listening -> thinking -> speaking -> listening;
its ``lk.transcription`` text streams carry the user's transcript ("tone 440") and its answer
("answer 880"); the user hears the answer as an 880 Hz tone (FFT); an RPC to the agent works
and reports, from inside the job process, that ``livekit.rtc`` is aiolivekit with no
official module loaded; and no process of the agent (worker, forkserver, job processes) maps
liblivekit_ffi.

Servers: the official livekit-server; and ``aiolivekit serve`` (``DevServer``) once it has
the agent worker endpoint (issue 15 item 4): until then that case is an xfail saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiolivekit.testing.netns import in_private_netns
from aiolivekit.testing.servers import LiveKitServerProcess, ServerInfo, find_livekit_server
from tests.interop.official import OFFICIAL_PYTHON, official_py_available

pytestmark = [pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
AGENT_DIR = Path(__file__).resolve().parent / "agents"
CACHE = Path(os.environ.get("AIOLIVEKIT_CACHE") or Path.home() / ".cache" / "aiolivekit")
AGENTS_VENV = Path(os.environ.get("AIOLIVEKIT_AGENTS_VENV") or CACHE / "agents-venv")
AGENTS_PYTHON = AGENTS_VENV / "bin" / "python"
NATIVE = "liblivekit_ffi"
RATE = 48000
SPEAK_HZ = 440
ANSWER_HZ = 880  # what the doubles make of it: STT "tone 440", LLM "answer 880", TTS 880 Hz
ROOM = "tone-room"


def _agents_venv_reason() -> str | None:
    if not AGENTS_PYTHON.exists():
        return f"no livekit-agents venv at {AGENTS_VENV} (scripts/install-agents-venv makes it)"
    if not list(AGENTS_VENV.glob("lib/python*/site-packages/livekit/agents/__init__.py")):
        return f"livekit-agents is not installed in {AGENTS_VENV}"
    if not list(AGENTS_VENV.glob("lib/python*/site-packages/aiolivekit_as_livekit_rtc.pth")):
        return f"aiolivekit (with its .pth hook) is not installed in {AGENTS_VENV}"
    return None


async def _embedded_has_agent_endpoint(info: ServerInfo) -> bool:
    """Whether the server has a worker WebSocket at ``/agent``: the handshake succeeds, or
    is refused for authorization only (401/403: the test then fails, loudly)."""
    import aiohttp
    from livekit import api

    token = (api.AccessToken(info.api_key, info.api_secret)
             .with_grants(api.VideoGrants(agent=True)).to_jwt())
    async with aiohttp.ClientSession() as http:
        try:
            ws = await asyncio.wait_for(http.ws_connect(
                f"{info.url}/agent", headers={"Authorization": f"Bearer {token}"}), 10)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status in (401, 403)
        await ws.close()
        return True


@pytest.fixture(params=[pytest.param("livekit-server", marks=pytest.mark.livekit_server), "embedded"])
async def agent_host(request: pytest.FixtureRequest) -> AsyncIterator[ServerInfo]:
    """The server the agent worker registers with and the user joins."""
    reason = _agents_venv_reason()
    if reason:
        pytest.skip(reason)
    if request.param == "embedded":
        from aiolivekit.server import DevServer

        async with DevServer(port=0) as server:
            info = ServerInfo("embedded", server.url, server.api_key, server.api_secret)
            if not await _embedded_has_agent_endpoint(info):
                pytest.xfail("aiolivekit serve has no agent worker endpoint (/agent) yet: "
                             "agent dispatch is issue 15 item 4")
            yield info
        return
    binary = find_livekit_server()
    if binary is None:
        pytest.skip("livekit-server binary not found ($LIVEKIT_SERVER_BIN, "
                    "$AIOLIVEKIT_CACHE/bin/server or PATH); scripts/install-deps builds it")
    if not in_private_netns():
        pytest.skip("livekit-server runs only inside a private network namespace")
    log = tempfile.NamedTemporaryFile(prefix="livekit-server-agent-", suffix=".log",
                                      delete=False)
    log.close()
    async with LiveKitServerProcess(binary, log_path=log.name) as proc:
        yield proc.info()


class AgentProcess:
    """``python tone_agent.py start`` in the agents venv, in its own process group."""

    def __init__(self, info: ServerInfo, mode: str = "start") -> None:
        self.info = info
        self.mode = mode  # livekit-agents' CLI command: start, or dev (reload on change)
        self.log_path = Path(tempfile.mkstemp(prefix="tone-agent-", suffix=".log")[1])
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LIVEKIT_", "PYTHON", "VIRTUAL_ENV"))}
        env.update({
            "AIOLIVEKIT_AS_LIVEKIT_RTC": "1",
            "PYTHONPATH": f"{ROOT / 'src'}:{AGENT_DIR}",
            "LIVEKIT_URL": self.info.url,
            "LIVEKIT_API_KEY": self.info.api_key,
            "LIVEKIT_API_SECRET": self.info.api_secret,
            "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0",
            "PYTHONUNBUFFERED": "1",
        })
        log = self.log_path.open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                str(AGENTS_PYTHON), str(AGENT_DIR / "tone_agent.py"), self.mode,
                "--log-level", "debug", env=env, cwd=str(AGENT_DIR),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def report(self) -> str:
        """The log's errors (with tracebacks), then its tail; for assertion messages."""
        errors = []
        for line in self.log().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("ERROR", "CRITICAL"):
                errors.append(f"{entry.get('message')}\n{entry.get('exc_info', '')}"[-3000:])
        return ("\n".join(errors[:3]) + f"\n--- log tail ({self.log_path}):\n"
                + self.log()[-3000:])

    async def wait_registered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while "registered worker" not in self.log():
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"the agent exited ({self.proc.returncode}):\n"
                                     f"{self.report()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent worker did not register in {timeout} s:\n"
                                     f"{self.report()}")
            await asyncio.sleep(0.2)

    def pids(self) -> list[int]:
        """The agent process and all its descendants (from /proc)."""
        assert self.proc is not None
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    async def stop(self) -> None:
        """SIGTERM to the worker (it drains and ends its job processes), then SIGKILL to
        whatever of its process group is left."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)


def native_maps(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return sorted({line.split()[-1] for line in f if NATIVE in line})
    except OSError:  # ended meanwhile
        return []


async def run_user(sdk: str, info: ServerInfo, agent: AgentProcess) -> dict[str, Any]:
    """``agents/tone_user.py`` on the given SDK; its JSON result."""
    if sdk == "official":
        python, env = str(OFFICIAL_PYTHON), {}
    else:
        python, env = sys.executable, {"TONE_USER_SDK": "aiolivekit",
                                       "PYTHONPATH": str(ROOT / "src")}
    env = {**{k: v for k, v in os.environ.items()
              if not k.startswith(("PYTHON", "AIOLIVEKIT_AS_", "TONE_"))}, **env}
    proc = await asyncio.create_subprocess_exec(
        python, str(AGENT_DIR / "tone_user.py"), info.url, info.token("user", ROOM),
        env=env, cwd=str(AGENT_DIR), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 240)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the {sdk} user did not finish in 240 s; agent log:\n"
                             f"{agent.report()}") from None
    lines = out.decode(errors="replace").strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"error": "no output"}
    if proc.returncode != 0 or "error" in result:
        raise AssertionError(f"the {sdk} user failed: {result.get('error')}\n"
                             f"stderr: {err.decode(errors='replace')[-3000:]}\n"
                             f"agent log:\n{agent.report()}")
    return result


@pytest.mark.parametrize(("user", "mode"), [
    ("aiolivekit", "start"), ("official", "start"), ("aiolivekit", "dev")])
async def test_livekit_agents_voice_session_on_aiolivekit(agent_host: ServerInfo,
                                                          user: str, mode: str) -> None:
    if user == "official" and (reason := official_py_available()):
        pytest.skip(reason)
    agent = AgentProcess(agent_host, mode)
    try:
        await agent.start()
        await agent.wait_registered(timeout=120)
        r = await run_user(user, agent_host, agent)
        assert r["sdk"] == ("livekit.rtc" if user == "official" else "aiolivekit.rtc")

        # the agent's state attribute: listening -> thinking -> speaking -> listening
        states = r["states"]
        seq = states[states.index("listening"):]
        assert "thinking" in seq and "speaking" in seq and seq[-1] == "listening", states
        assert seq.index("thinking") < seq.index("speaking"), states

        # RPC into the job process: what it runs on
        reply = r["rpc"]
        assert reply["caller"] == "user" and reply["payload"] == "hello"
        assert reply["rtc"] == "aiolivekit.rtc"
        assert reply["rtc_file"].startswith(str(ROOT / "src" / "aiolivekit")), reply["rtc_file"]
        assert reply["official"] == []
        assert reply["native"] == []

        # what the user heard: the answer tone (the doubles turn 440 Hz into 880 Hz)
        assert r["heard_samples"] > 0.5 * RATE, r["heard_samples"]
        assert abs(r["heard_hz"] - ANSWER_HZ) < 10, r["heard_hz"]

        # the transcription streams, both written by the agent: the user's words on the
        # user's behalf (sender_identity) about the user's track, and the agent's answer
        # about the agent's track
        transcripts = r["transcripts"]
        final = {(who, text.strip(), attrs.get("lk.transcribed_track_id"))
                 for who, text, attrs in transcripts
                 if attrs.get("lk.transcription_final") == "true"}
        assert ("user", f"tone {SPEAK_HZ}", r["mic_sid"]) in final, transcripts
        answer = [t for t in final if t[0] == r["agent"]]
        assert [t[1] for t in answer] == [f"answer {ANSWER_HZ}"], transcripts
        assert answer[0][2] in r["agent_tracks"], (answer, r["agent_tracks"])
        assert {who for who, _, _ in transcripts} == {"user", r["agent"]}, transcripts

        # no process of the agent maps the official native library
        pids = agent.pids()
        assert reply["pid"] in pids, (reply["pid"], pids)
        assert len(pids) >= 3, pids  # worker, forkserver, job process
        assert {pid: native_maps(pid) for pid in pids if native_maps(pid)} == {}
        assert NATIVE not in agent.log(), "the agent log names the native library"
    finally:
        await agent.stop()
