"""A livekit-agents 1.8.9 voice agent on the tone doubles, for tests/integration/test_agent_real.py.

Run as an unchanged livekit-agents program: ``python tone_agent.py start`` with
``LIVEKIT_URL``/``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET`` set, and
``AIOLIVEKIT_AS_LIVEKIT_RTC=1`` to run it on aiolivekit. The worker registers with the
server and takes every room (automatic dispatch). Each job starts an AgentSession on
:mod:`tone_doubles` and registers the RPC method ``probe``, which answers with what the job
process runs on: the module behind ``livekit.rtc``, the official ``livekit.rtc`` modules
loaded (none expected) and the mapped files named liblivekit_ffi (none expected).
"""

from __future__ import annotations

import json
import os
import sys

from livekit import rtc
from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    TurnHandlingOptions,
    cli,
)
from tone_doubles import ToneLLM, ToneSTT, ToneTTS, ToneVAD

server = AgentServer(
    port=0,
    num_idle_processes=1,
    initialize_process_timeout=120.0,
    shutdown_process_timeout=10.0,
    load_threshold=float(os.environ.get("TONE_AGENT_LOAD_THRESHOLD", "1.0")),
)


def process_report() -> dict[str, object]:
    with open("/proc/self/maps") as f:
        native = sorted({line.split()[-1] for line in f if "liblivekit_ffi" in line})
    official = sorted(name for name, mod in list(sys.modules.items())
                      if name.startswith("livekit.rtc")
                      and not getattr(mod, "__name__", "").startswith("aiolivekit"))
    return {"pid": os.getpid(), "rtc": rtc.__name__, "rtc_file": getattr(rtc, "__file__", ""),
            "official": official, "native": native}


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    async def probe(data: rtc.RpcInvocationData) -> str:
        return json.dumps({**process_report(), "caller": data.caller_identity,
                           "payload": data.payload})

    await ctx.connect()
    ctx.room.local_participant.register_rpc_method("probe", probe)
    session: AgentSession = AgentSession(
        vad=ToneVAD(), stt=ToneSTT(), llm=ToneLLM(), tts=ToneTTS(),
        turn_handling=TurnHandlingOptions(
            turn_detection="vad",
            endpointing={"mode": "fixed", "min_delay": 0.2, "max_delay": 1.0},
            interruption={"enabled": False},
            preemptive_generation={"enabled": False},
        ),
        user_away_timeout=None,
    )
    await session.start(agent=Agent(instructions="answer each tone with its octave"),
                        room=ctx.room)


if __name__ == "__main__":
    cli.run_app(server)
