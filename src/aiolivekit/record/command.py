"""``aiolivekit record``: the command-line shell around :class:`~.recorder.Recorder`.

Exit status: 0 recorded (the duration passed, Ctrl-C / SIGTERM, or the room ended);
1 a file could not be written completely, or interrupted while joining; 2 bad arguments
or an output directory that cannot be written; 3 the room could not be joined
(unreachable server, refused token, timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING, TextIO

from .auth import recorder_token
from .files import RecordConnectError, RecordError
from .naming import format_bytes

if TYPE_CHECKING:
    from .recorder import Recorder

__all__ = ["add_parser", "resolve_token", "run"]

DEV_KEY, DEV_SECRET = "devkey", "secret"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_JOIN = 0, 1, 2, 3


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("record", help="record a room's tracks into files (no re-encoding)",
                       description="Join ROOM at URL as a hidden participant and write every "
                                   "track to OUT/<identity>_<track sid>.<ext> as received.")
    p.add_argument("url", help="server URL, e.g. ws://127.0.0.1:7880")
    p.add_argument("--room", default=None, help="room name (required unless --token)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop this long after the first media (default: until Ctrl-C)")
    p.add_argument("--token", default=None, help="join token (instead of API keys)")
    p.add_argument("--api-key", default=None,
                   help="API key (env LIVEKIT_API_KEY, else the dev key devkey)")
    p.add_argument("--api-secret", default=None,
                   help="API secret (env LIVEKIT_API_SECRET, else the dev secret)")
    p.add_argument("--identity", default=None, help="the recorder's identity")
    p.add_argument("--mix", action="store_true", help="also write mix.wav, all audio mixed")
    p.add_argument("--vp8-container", choices=("webm", "mkv"), default="webm")
    p.add_argument("--h264-container", choices=("mp4", "mkv"), default="mp4")
    p.add_argument("--connect-timeout", type=float, default=20.0, metavar="SECONDS")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def resolve_token(args: argparse.Namespace) -> tuple[str, str]:
    """``(token, room)``; ``ValueError`` with the reason for bad arguments."""
    if args.token:
        if args.api_key or args.api_secret:
            raise ValueError("give --token or --api-key/--api-secret, not both")
        import jwt

        try:
            claims = jwt.decode(args.token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise ValueError(f"--token is not a JWT: {exc}") from exc
        room = str((claims.get("video") or {}).get("room") or "")
        if args.room and room and args.room != room:
            raise ValueError(f"--room {args.room!r} but the token is for room {room!r}")
        return args.token, args.room or room
    if not args.room:
        raise ValueError("--room is required (or a --token)")
    key = args.api_key or os.environ.get("LIVEKIT_API_KEY") or DEV_KEY
    secret = args.api_secret or os.environ.get("LIVEKIT_API_SECRET")
    if not secret:
        if key != DEV_KEY:
            raise ValueError(f"API key {key!r} needs --api-secret (or LIVEKIT_API_SECRET)")
        secret = DEV_SECRET
    return recorder_token(key, secret, args.room, identity=args.identity), args.room


class _Progress:
    """The progress line on ``out``: rewritten in place on a terminal, else one line a
    second."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.shown = False

    def show(self, line: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()
        self.shown = True

    def end(self) -> None:
        if self.tty and self.shown:
            self.out.write("\n")
            self.out.flush()


async def _progress(rec: Recorder, progress: _Progress) -> None:
    period = 0.5 if progress.tty else 1.0
    while True:
        await asyncio.sleep(period)
        progress.show(rec.progress_line())


async def run(args: argparse.Namespace, err: TextIO | None = None) -> int:
    """Record as the arguments say; returns the exit status."""
    from .recorder import Recorder

    err = err if err is not None else sys.stderr
    try:
        token, room = resolve_token(args)
        rec = Recorder(args.url, token, args.out, duration=args.duration, mix=args.mix,
                       vp8_container=args.vp8_container, h264_container=args.h264_container,
                       connect_timeout=args.connect_timeout)
    except ValueError as exc:
        print(f"aiolivekit record: {exc}", file=err)
        return EXIT_USAGE
    loop = asyncio.get_running_loop()
    start = loop.create_task(rec.start())

    def on_signal() -> None:
        rec.request_stop("signal")
        if not start.done():
            start.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    try:
        await start
    except RecordConnectError as exc:
        print(f"aiolivekit record: {exc}", file=err)
        return EXIT_JOIN
    except RecordError as exc:
        print(f"aiolivekit record: {exc}", file=err)
        return EXIT_USAGE
    except asyncio.CancelledError:
        print("aiolivekit record: interrupted while joining", file=err)
        return EXIT_FAILED
    print(f"aiolivekit record: joined room {room!r} at {args.url}; writing to {args.out}"
          + ("" if args.duration is None else f" for {args.duration:g} s")
          + " (Ctrl-C stops)", file=err, flush=True)
    progress = _Progress(err)
    ticker = None if args.quiet else loop.create_task(_progress(rec, progress))
    try:
        reason = await rec.wait()
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await rec.stop()
    if not args.quiet:
        progress.show(rec.progress_line())
        progress.end()
    failed = 0
    why = {"duration": "the duration passed", "signal": "stopped by a signal",
           "disconnected": "the room ended", "stopped": "stopped"}.get(reason, reason)
    print(f"aiolivekit record: {why}; {len(rec.files)} file(s)", file=err)
    for f in rec.files:
        state = f"ERROR {f.error}" if f.error else ("ok" if f.closed else "not closed")
        failed += 1 if f.error or not f.closed else 0
        print(f"  {f.path}  {f.kind} {f.codec}  {f.duration:.2f} s (from {f.offset:.2f} s)"
              f"  {format_bytes(f.size)}  {state}", file=err)
    for reason_skipped in rec.skipped:
        print(f"  not recorded: {reason_skipped}", file=err)
    return EXIT_FAILED if failed else EXIT_OK
