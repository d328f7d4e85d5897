"""Command line: ``aiolivekit serve | token | demo | record`` (also ``python -m aiolivekit``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import signal
import sys
import warnings

from .server.config import DEFAULT_PORT, DEV_API_KEY, DEV_API_SECRET, ForwardingOptions

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

_GRANT_FLAGS = {
    "room_create", "room_list", "room_record", "room_admin", "room_join", "can_publish",
    "can_subscribe", "can_publish_data", "can_update_own_metadata", "hidden", "recorder",
    "agent", "ingress_admin",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiolivekit",
                                     description="aiolivekit: LiveKit in pure Python")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: info, -vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the embedded LiveKit-compatible server")
    serve.add_argument("--dev", action="store_true",
                       help="without other keys, use the public development key devkey / "
                            "secret (loopback only)")
    serve.add_argument("--bind", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help="port (default 7880, 0: any free port)")
    serve.add_argument("--keys", default=None,
                       help="API keys as key:secret[,key2:secret2] (env LIVEKIT_KEYS; also "
                            "LIVEKIT_API_KEY + LIVEKIT_API_SECRET)")
    serve.add_argument("--key-file", default=None, metavar="FILE",
                       help="file of 'key: secret' lines, as livekit-server reads it "
                            "(must not be accessible by others)")
    serve.add_argument("--insecure-dev-keys", action="store_true",
                       help="allow --dev's public key on a non-loopback --bind")
    serve.add_argument("--departure-timeout", type=float, default=20.0, metavar="S",
                       help="seconds a participant whose signal dropped is kept for a resume "
                            "(default 20, as livekit-server)")
    serve.add_argument("--ping-timeout", type=float, default=15.0, metavar="S",
                       help="seconds of signal silence that count as a lost signal (default 15)")
    serve.add_argument("--page", action=argparse.BooleanOptionalAction, default=None,
                       help="serve the room page at / and the inspector at /inspect (default: "
                            "with --dev's public key only; elsewhere users paste tokens, "
                            "docs/page.md)")
    serve.add_argument("--read-batch-ms", type=float, default=None, metavar="MS",
                       help="under dense traffic, read the media sockets every MS ms "
                            "(default 5, env AIOLIVEKIT_READ_BATCH_MS; 0: per packet)")

    token = sub.add_parser("token", help="print an access token (JWT)")
    token.add_argument("--identity", required=True)
    token.add_argument("--room", required=True)
    token.add_argument("--name", default=None)
    token.add_argument("--metadata", default=None)
    token.add_argument("--attributes", default=None, help="JSON object of attributes")
    token.add_argument("--ttl", type=float, default=6 * 3600, help="lifetime in seconds")
    token.add_argument("--api-key", default=DEV_API_KEY)
    token.add_argument("--api-secret", default=DEV_API_SECRET)
    token.add_argument("--grant", action="append", default=[], metavar="NAME[=VALUE]",
                       help="video grant, e.g. room_admin, can_publish=false, "
                            "can_publish_sources=camera,microphone (repeatable)")

    demo = sub.add_parser("demo", help="run the two-participant demo on loopback")
    demo.add_argument("--seconds", type=float, default=4.0, help="how long the tone is analysed")
    demo.add_argument("--port", type=int, default=0, help="port of the embedded server (0: any free)")
    demo.add_argument("--browser", action="store_true",
                      help="open the room page with the demo bots in the room (until Ctrl-C)")

    from .record.command import add_parser as add_record_parser

    add_record_parser(sub)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity < 3:
        for noisy in ("aioice", "aiortc"):
            logging.getLogger(noisy).setLevel(max(level, logging.INFO))


async def _serve(host: str, port: int, keys: dict[str, str],
                 forwarding: ForwardingOptions | None = None, *,
                 departure_timeout: float = 20.0, ping_timeout: float = 15.0,
                 page: bool | None = None) -> None:
    from .server.devserver import DevServer

    server = DevServer(host=host, port=port, keys=keys, forwarding=forwarding,
                       departure_timeout=departure_timeout, ping_timeout=ping_timeout,
                       page=page)
    await server.start()
    key = next(iter(keys))
    bound = ", ".join(server.bound_urls)
    print(f"aiolivekit server listening on {bound} (API key {key})", flush=True)
    if server.app.config.page_enabled:
        how = ("tokens minted by the server" if server.app.config.dev_mode
               else "paste a token; the inspector needs roomList")
        print(f"room page: {server.page_url} (inspector: {server.http_url}/inspect; {how})",
              flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.aclose()


def _grant_value(name: str, value: str | None) -> object:
    if name == "room_join" or name in _GRANT_FLAGS:
        if value is None:
            return True
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"grant {name} needs true/false, got {value!r}")
    if name == "can_publish_sources":
        return [s.strip() for s in (value or "").split(",") if s.strip()]
    if name in ("room", "destination_room"):
        return value or ""
    raise ValueError(f"unknown grant {name!r}")


def _token(args: argparse.Namespace) -> str:
    from livekit import api

    grants = api.VideoGrants(room_join=True, room=args.room)
    for item in args.grant:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        setattr(grants, name, _grant_value(name, value if sep else None))
    tok = (api.AccessToken(args.api_key, args.api_secret).with_identity(args.identity)
           .with_grants(grants).with_ttl(datetime.timedelta(seconds=args.ttl)))
    if args.name is not None:
        tok = tok.with_name(args.name)
    if args.metadata is not None:
        tok = tok.with_metadata(args.metadata)
    if args.attributes:
        attrs = json.loads(args.attributes)
        if not isinstance(attrs, dict):
            raise ValueError("--attributes must be a JSON object")
        tok = tok.with_attributes({str(k): str(v) for k, v in attrs.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tok.to_jwt()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    if args.command == "serve":
        from .server import keys as server_keys

        try:
            source = server_keys.resolve_keys(
                keys_arg=args.keys, key_file=args.key_file, dev=args.dev, bind=args.bind,
                insecure_dev_keys=args.insecure_dev_keys)
        except server_keys.KeyConfigError as exc:
            parser.error(str(exc))
        keys = source.keys
        if source.dev and not server_keys.is_loopback_bind(args.bind):
            print(f"aiolivekit serve: WARNING: the public development key {DEV_API_KEY} is "
                  f"served on {args.bind} (--insecure-dev-keys): anyone who can reach it "
                  "can join and administer rooms", file=sys.stderr, flush=True)
        elif not source.dev:
            for key in server_keys.short_secrets(keys):
                print(f"aiolivekit serve: WARNING: the secret of API key {key!r} is shorter "
                      f"than {server_keys.MIN_SECRET_LENGTH} bytes; tokens signed with it "
                      "can be brute-forced", file=sys.stderr, flush=True)
        forwarding = None
        if args.read_batch_ms is not None:
            from .server import read_batching

            try:
                forwarding = ForwardingOptions(
                    read_batch_window=read_batching.window_seconds(args.read_batch_ms))
            except ValueError:
                parser.error(f"--read-batch-ms must be between 0 and "
                             f"{read_batching.MAX_WINDOW_MS:g}")
        if args.departure_timeout < 0:
            parser.error("--departure-timeout must be >= 0 seconds")
        if args.ping_timeout <= 0:
            parser.error("--ping-timeout must be > 0 seconds")
        try:
            asyncio.run(_serve(args.bind, args.port, keys, forwarding,
                               departure_timeout=args.departure_timeout,
                               ping_timeout=args.ping_timeout, page=args.page))
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"aiolivekit serve: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "token":
        try:
            print(_token(args))
        except ValueError as exc:
            parser.error(str(exc))
        return 0
    if args.command == "demo":
        from .demo import main as demo_main

        argv_demo = ["--seconds", str(args.seconds), "--port", str(args.port)]
        return int(demo_main(argv_demo + (["--browser"] if args.browser else [])) or 0)
    if args.command == "record":
        from .record.command import run as record_run

        try:
            return asyncio.run(record_run(args))
        except KeyboardInterrupt:  # before the signal handlers were installed
            return 1
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
