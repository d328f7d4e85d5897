"""Security probes against any LiveKit server (issue 14): what a participant holding a
valid room token, or anyone reaching the port, can make the server do.

Each probe returns a :class:`ProbeResult` (what was seen, and whether that is the safe
behaviour). ``scripts/security_probe.py`` runs them all and prints a table; the tests use
single attacks (``trickle_flood``, ``metadata_flood``) against the in-process server.
Every network wait is bounded. Probes create rooms named ``probe-<random>-...``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from livekit.protocol import models as models_pb, rtc as rtc_pb

from ..server.auth import make_token
from .rawsignal import RawSignal, RawSignalRefused

__all__ = ["PROBES", "ProbeContext", "ProbeResult", "metadata_flood", "run_probes",
           "trickle_flood"]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass
class ProbeContext:
    url: str
    api_key: str
    api_secret: str
    prefix: str = ""
    quick: bool = False
    server_pid: int | None = None
    """The server's process on this machine (``os.getpid()`` for an in-process one): the
    flood probes then report its RSS."""

    def __post_init__(self) -> None:
        if not self.prefix:
            self.prefix = "probe-" + secrets.token_hex(3)

    def room(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def token(self, identity: str, room: str, **grants: object) -> str:
        return make_token(self.api_key, self.api_secret, identity, room, **grants)  # type: ignore[arg-type]

    @property
    def http_url(self) -> str:
        return self.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)


def process_rss(pid: int) -> int:
    """Resident set size of a local process, in bytes."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096


@dataclass
class ProbeResult:
    name: str
    seen: str
    safe: bool | None  # None: not applicable / could not run


# ------------------------------------------------------------------ attacks (reused)


async def trickle_flood(url: str, token: str, count: int = 1000, size: int = MiB,
                        timeout: float = 120.0) -> float:
    """``count`` trickle candidates of ``size`` bytes before any offer; returns the
    seconds until the server answered a ping after them (it handled every frame)."""
    frame = rtc_pb.SignalRequest(trickle=rtc_pb.TrickleRequest(
        candidateInit="c" * size, target=rtc_pb.SignalTarget.PUBLISHER)).SerializeToString()
    async with RawSignal(url, token, timeout=timeout, keep=False) as s:
        start = time.monotonic()
        for _ in range(count):
            await s.send_bytes(frame)
        await s.send(rtc_pb.SignalRequest(ping_req=rtc_pb.Ping(timestamp=1)))
        if await s.wait_for("pong_resp", timeout) is None:
            raise ConnectionError("no pong after the candidates (connection closed?)")
        return time.monotonic() - start


async def metadata_flood(url: str, tokens: list[str], big: int = 1900 * 1024,
                         size: int = 512 * 1024, rounds: int = 20,
                         timeout: float = 30.0) -> list[str]:
    """Each token's participant asks for ``big`` bytes of metadata, then sets ``size``
    bytes ``rounds`` times; returns the RequestResponse reasons of the big requests."""
    clients = [RawSignal(url, t, timeout=timeout, keep=False) for t in tokens]
    reasons: list[str] = []
    try:
        for c in clients:
            await c.connect()
        request_id = 0

        async def update(c: RawSignal, metadata: str) -> rtc_pb.RequestResponse | None:
            nonlocal request_id
            request_id += 1
            mine = request_id
            await c.send(rtc_pb.SignalRequest(update_metadata=rtc_pb.UpdateParticipantMetadata(
                metadata=metadata, request_id=mine)))
            while True:
                resp = await c.wait_for("request_response", timeout)
                if resp is None:
                    return None
                if resp.request_response.request_id == mine:
                    return resp.request_response

        for c in clients:
            rr = await update(c, "x" * big)
            reasons.append("no answer" if rr is None else
                           rtc_pb.RequestResponse.Reason.Name(rr.reason))
        for n in range(rounds):
            await asyncio.gather(*(update(c, str(n % 10) * size) for c in clients))
    finally:
        for c in clients:
            await c.close()
    return reasons


# ------------------------------------------------------------------ probes


async def probe_permissions(ctx: ProbeContext) -> ProbeResult:
    from .. import AudioSource, LocalAudioTrack, Room

    room_name = ctx.room("perm")
    alice, dave = Room(), Room()
    subscribed: list[str] = []
    source = AudioSource(48000, 1)
    try:
        await asyncio.wait_for(alice.connect(ctx.url, ctx.token("alice", room_name)), 20)
        pub = await asyncio.wait_for(alice.local_participant.publish_track(
            LocalAudioTrack.create_audio_track("mic", source)), 20)
        alice.local_participant.set_track_subscription_permissions(allow_all_participants=False)
        await asyncio.sleep(0.5)
        dave.on("track_subscribed", lambda t, p, rp: subscribed.append(p.sid))
        await asyncio.wait_for(dave.connect(ctx.url, ctx.token("dave", room_name)), 20)
        await asyncio.sleep(3.0)
        got = pub.sid in subscribed
        return ProbeResult("allow_all_participants=False, then dave joins",
                           "dave subscribed to alice's audio" if got else "dave not subscribed",
                           not got)
    finally:
        await dave.disconnect()
        await alice.disconnect()
        await source.aclose()


async def probe_max_participants(ctx: ProbeContext) -> ProbeResult:
    from livekit import api

    room_name = ctx.room("cap")
    lk = api.LiveKitAPI(ctx.http_url, ctx.api_key, ctx.api_secret)
    clients: list[RawSignal] = []
    outcome: list[str] = []
    try:
        await lk.room.create_room(api.CreateRoomRequest(name=room_name, max_participants=2))
        for i in range(4):
            c = RawSignal(ctx.url, ctx.token(f"p{i}", room_name))
            try:
                await c.connect()
                clients.append(c)
                outcome.append("in")
            except (RawSignalRefused, OSError, asyncio.TimeoutError) as exc:
                status = getattr(exc, "status", None)
                outcome.append(f"refused ({status})" if status else f"failed ({exc!r})")
    finally:
        for c in clients:
            await c.close()
        await lk.aclose()
    return ProbeResult("CreateRoom(max_participants=2), then 4 joins",
                       ", ".join(f"#{i + 1} {o}" for i, o in enumerate(outcome)),
                       outcome.count("in") == 2)


async def probe_metadata_caps(ctx: ProbeContext) -> ProbeResult:
    async with RawSignal(ctx.url, ctx.token("meta", ctx.room("meta"))) as s:
        await s.send(rtc_pb.SignalRequest(update_metadata=rtc_pb.UpdateParticipantMetadata(
            metadata="m" * MiB, name="n" * 100_000, request_id=7)))
        resp = await s.wait_for("request_response", 10)
    if resp is None:
        return ProbeResult("UpdateParticipantMetadata 1 MiB metadata + 100 KB name",
                           "no answer", None)
    rr = resp.request_response
    ok = rr.reason == rtc_pb.RequestResponse.Reason.LIMIT_EXCEEDED
    return ProbeResult("UpdateParticipantMetadata 1 MiB metadata + 100 KB name",
                       f"{rtc_pb.RequestResponse.Reason.Name(rr.reason)} {rr.message!r}".strip(),
                       ok)


async def probe_twirp_caps(ctx: ProbeContext) -> ProbeResult:
    from livekit import api

    room_name = ctx.room("twirp")
    lk = api.LiveKitAPI(ctx.http_url, ctx.api_key, ctx.api_secret)
    try:
        async with RawSignal(ctx.url, ctx.token("target", room_name)):
            try:
                await lk.room.update_participant(api.UpdateParticipantRequest(
                    room=room_name, identity="target", metadata="m" * MiB))
                return ProbeResult("Twirp UpdateParticipant 1 MiB metadata", "accepted", False)
            except api.TwirpError as exc:
                return ProbeResult("Twirp UpdateParticipant 1 MiB metadata",
                                   f"{exc.code}: {exc.message}", exc.code == "invalid_argument")
    finally:
        await lk.aclose()


async def probe_big_metadata_room(ctx: ProbeContext) -> ProbeResult:
    room_name = ctx.room("bigmeta")
    reasons = await metadata_flood(ctx.url, [ctx.token(f"big{i}", room_name) for i in range(5)],
                                   rounds=0)
    async with RawSignal(ctx.url, ctx.token("late", room_name)) as s:
        assert s.join is not None
        size = s.join.ByteSize()
    refused = all(r == "LIMIT_EXCEEDED" for r in reasons)
    return ProbeResult("5 participants set 1.9 MiB metadata each, a 6th joins",
                       f"updates {'refused' if refused else 'accepted'}; JoinResponse "
                       f"{size / 1024:.0f} KiB", size < 8 * MiB and refused)


async def probe_candidate_flood(ctx: ProbeContext) -> ProbeResult:
    count = 100 if ctx.quick else 1000
    name = f"{count} x 1 MiB trickle candidates before any offer"
    pid = ctx.server_pid
    before = process_rss(pid) if pid else 0
    peak = before

    async def sample() -> None:
        nonlocal peak
        while pid:
            peak = max(peak, process_rss(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    try:
        took = await trickle_flood(ctx.url, ctx.token("flood", ctx.room("flood")), count, MiB)
    except (ConnectionError, RawSignalRefused, asyncio.TimeoutError, OSError) as exc:
        return ProbeResult(name, f"connection ended: {exc!r}", True)
    finally:
        sampler.cancel()
    if not pid:
        return ProbeResult(name, f"handled in {took:.1f} s (server RSS not visible from here)",
                           None)
    await asyncio.sleep(2.0)  # the attacker has left
    after = process_rss(pid)
    return ProbeResult(name, f"server RSS {before / MiB:.0f} -> {peak / MiB:.0f} MiB, "
                             f"{after / MiB:.0f} MiB after the attacker left",
                       peak - before < 64 * MiB and after - before < 16 * MiB)


async def probe_add_track_layers(ctx: ProbeContext) -> ProbeResult:
    async with RawSignal(ctx.url, ctx.token("layers", ctx.room("layers"))) as s:
        req = rtc_pb.AddTrackRequest(
            cid="c1", name="v", type=models_pb.TrackType.VIDEO,
            source=models_pb.TrackSource.CAMERA,
            layers=[models_pb.VideoLayer(quality=i % 3, width=i)  # type: ignore[arg-type]
                    for i in range(10000)],
            simulcast_codecs=[rtc_pb.SimulcastCodec(codec="vp8", cid=f"c{i}")
                              for i in range(2000)])
        await s.send(rtc_pb.SignalRequest(add_track=req))
        for _ in range(20):
            resp = await s.recv(10)
            if resp is None:
                return ProbeResult("AddTrack with 10 000 layers / 2 000 codecs",
                                   "connection closed", True)
            kind = resp.WhichOneof("message")
            if kind == "track_published":
                track = resp.track_published.track
                return ProbeResult("AddTrack with 10 000 layers / 2 000 codecs",
                                   f"stored: {len(track.layers)} layers, "
                                   f"{len(track.codecs)} codecs", len(track.layers) <= 16)
            if kind == "request_response":
                return ProbeResult("AddTrack with 10 000 layers / 2 000 codecs",
                                   f"refused: {resp.request_response.message}", True)
    return ProbeResult("AddTrack with 10 000 layers / 2 000 codecs", "no answer", None)


async def _head_only(http_url: str, path: str, headers: dict[str, str],
                     wait: float = 3.0) -> tuple[str, float]:
    parsed = urlparse(http_url)
    secure = parsed.scheme == "https"
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        parsed.hostname, parsed.port or (443 if secure else 80), ssl=secure or None), 10)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode())
        await writer.drain()
        start = time.monotonic()
        try:
            line = await asyncio.wait_for(reader.readline(), wait)
        except asyncio.TimeoutError:
            return "", time.monotonic() - start
        return line.decode(errors="replace").strip(), time.monotonic() - start
    finally:
        writer.close()


async def probe_twirp_auth_first(ctx: ProbeContext) -> ProbeResult:
    line, took = await _head_only(
        ctx.http_url, "/twirp/livekit.RoomService/CreateRoom",
        {"Authorization": f"Bearer {ctx.token('x', ctx.room('twirp'))}",
         "Content-Type": "application/protobuf", "Content-Length": "10000000"})
    seen = (f"{line} after {took * 1000:.0f} ms, body not sent" if line
            else f"no answer in {took:.0f} s: waits for the 10 MB body")
    return ProbeResult("10 MB Twirp body with a join-only token", seen,
                       line.startswith("HTTP/1.1 401") or line.startswith("HTTP/1.1 403"))


async def probe_sctp_oversize(ctx: ProbeContext) -> ProbeResult:
    from .. import Room
    from .._compat.aiortc_sctp import sctp_send_unchecked

    room_name = ctx.room("sctp")
    a, b = Room(), Room()
    got: list[int] = []
    try:
        await asyncio.wait_for(a.connect(ctx.url, ctx.token("a", room_name)), 20)
        await asyncio.wait_for(b.connect(ctx.url, ctx.token("b", room_name)), 20)
        b.on("data_received", lambda packet: got.append(len(packet.data)))
        await a.local_participant.publish_data(b"hello")
        await asyncio.sleep(1.0)
        engine = a._engine
        if engine is None:
            return ProbeResult("16 MiB SCTP message", "not connected", None)
        channel = engine.pub_channels["_reliable"]
        packet = models_pb.DataPacket(kind=models_pb.DataPacket.Kind.RELIABLE,
                                      user=models_pb.UserPacket(payload=b"x" * (16 * MiB)))
        sctp_send_unchecked(channel, packet.SerializeToString())
        await asyncio.sleep(4 if ctx.quick else 8)
        delivered = any(n > MiB for n in got)
        sender = "sender disconnected" if a.connection_state == 0 else "sender still connected"
        return ProbeResult("16 MiB SCTP message (client limit bypassed)",
                           f"{'delivered' if delivered else 'not delivered'}; {sender}",
                           not delivered)
    finally:
        await a.disconnect()
        await b.disconnect()


async def _ended(reader: asyncio.StreamReader) -> bool:
    """Whether the server answered or closed this connection (reads what is there)."""
    try:
        await asyncio.wait_for(reader.read(4096), 0.01)
    except asyncio.TimeoutError:
        return False
    except OSError:
        return True
    return True  # an answer (a 503, a 408) or EOF


async def probe_half_headers(ctx: ProbeContext) -> ProbeResult:
    parsed = urlparse(ctx.http_url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    count = 50 if ctx.quick else 300
    readers: list[asyncio.StreamReader] = []
    writers: list[asyncio.StreamWriter] = []
    wait = 15.0  # longer than any sane header timeout (ours: 10 s)
    try:
        for _ in range(count):
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            readers.append(reader)
            writers.append(writer)
        await asyncio.sleep(0.2)
        live = [r for r in readers if not await _ended(r)]
        answered = count - len(live)
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            live = [r for r in live if not await _ended(r)]
    finally:
        for w in writers:
            w.close()
    return ProbeResult(f"{count} half-sent HTTP headers",
                       f"{answered} answered at once (cap), {len(live)} still held after "
                       f"{wait:.0f} s", not live)


PROBES: list[Callable[[ProbeContext], Awaitable[ProbeResult]]] = [
    probe_permissions, probe_max_participants, probe_metadata_caps, probe_twirp_caps,
    probe_big_metadata_room, probe_candidate_flood, probe_add_track_layers,
    probe_twirp_auth_first, probe_sctp_oversize, probe_half_headers,
]


async def run_probes(ctx: ProbeContext, only: list[str] | None = None) -> list[ProbeResult]:
    """Run the probes (or those whose function name contains one of ``only``)."""
    results = []
    for probe in PROBES:
        name = probe.__name__.removeprefix("probe_")
        if only and not any(o in name for o in only):
            continue
        try:
            results.append(await asyncio.wait_for(probe(ctx), 180))
        except Exception as exc:  # one failing probe must not hide the others
            logger.debug("probe %s failed", name, exc_info=True)
            results.append(ProbeResult(name, f"probe failed: {exc!r}"[:200], None))
    return results
