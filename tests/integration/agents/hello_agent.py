"""A livekit-agents worker without models: each job joins, says hello on the data channel
with the identity and attributes it was given, and ends itself (JobContext.shutdown)."""

from __future__ import annotations

import asyncio
import json

from livekit import rtc
from livekit.agents import JobContext, WorkerOptions, cli


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    me = ctx.room.local_participant
    for _ in range(3):
        await me.publish_data(json.dumps({
            "job": ctx.job.id, "identity": me.identity, "room": ctx.room.name,
            "metadata": ctx.job.metadata, "rtc": rtc.__name__,
        }).encode(), topic="agent-hello")
        await asyncio.sleep(0.3)
    ctx.shutdown("said hello")


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint, agent_name=""))
