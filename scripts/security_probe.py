#!/usr/bin/env python3
"""Probe a LiveKit server as an attacker holding a valid room token would (issue 14) and
print a table: what each probe saw, and whether that is the safe behaviour.

    scripts/security_probe.py ws://127.0.0.1:7880 --api-key KEY --api-secret SECRET
    scripts/security_probe.py --embedded            # the in-process aiolivekit server
    scripts/security_probe.py --livekit-server      # livekit-server (inside scripts/netns-run)

Keys default to LIVEKIT_API_KEY / LIVEKIT_API_SECRET. ``--quick`` makes the flood probes
smaller; ``--only NAME`` runs some probes only (permissions, max_participants,
metadata_caps, twirp_caps, big_metadata_room, candidate_flood, add_track_layers,
twirp_auth_first, sctp_oversize, half_headers). The probes join rooms named
``probe-<random>-...`` and flood the server: run it against your own server only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aiolivekit.testing.probe import ProbeContext, ProbeResult, run_probes


def _table(target: str, results: list[ProbeResult]) -> str:
    mark = {True: "ok", False: "UNSAFE", None: "?"}
    rows = [("probe", "seen", target)] + [(r.name, r.seen, mark[r.safe]) for r in results]
    lines = [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.insert(1, "|---|---|---|")
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    if args.embedded:
        from aiolivekit.server import DevServer

        async with DevServer(port=0) as server:
            ctx = ProbeContext(server.url, server.api_key, server.api_secret, quick=args.quick,
                               server_pid=os.getpid())
            results = await run_probes(ctx, args.only)
        target = "aiolivekit (embedded)"
    elif args.livekit_server:
        from aiolivekit.testing.servers import LiveKitServerProcess, find_livekit_server

        binary = find_livekit_server()
        if binary is None:
            print("livekit-server not found", file=sys.stderr)
            return 2
        async with LiveKitServerProcess(binary) as proc:
            info = proc.info()
            ctx = ProbeContext(info.url, info.api_key, info.api_secret, quick=args.quick,
                               server_pid=proc.pid)
            results = await run_probes(ctx, args.only)
        target = "livekit-server"
    else:
        if not args.url or not args.api_key or not args.api_secret:
            print("give a URL, --api-key and --api-secret (or LIVEKIT_API_KEY/SECRET), "
                  "or --embedded / --livekit-server", file=sys.stderr)
            return 2
        ctx = ProbeContext(args.url, args.api_key, args.api_secret, quick=args.quick,
                           server_pid=args.server_pid)
        results = await run_probes(ctx, args.only)
        target = args.url
    print(_table(target, results))
    return 1 if any(r.safe is False for r in results) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("LIVEKIT_URL"))
    parser.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY"))
    parser.add_argument("--api-secret", default=os.environ.get("LIVEKIT_API_SECRET"))
    parser.add_argument("--embedded", action="store_true")
    parser.add_argument("--livekit-server", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="the server's pid on this machine: report its RSS under floods")
    parser.add_argument("--only", action="append", default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    warnings.simplefilter("ignore")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
