"""The room inspector's view of a running server: rooms, participants, tracks and the
forwarding counters, as one JSON-ready snapshot (``/inspect/state``, ``/inspect/events``).

Sans-I/O: :class:`Inspector` reads the rooms' state and the sessions' forwarders it is
given and the time passed in; bit rates and loss are computed over the last
:data:`RATE_WINDOW` seconds from the counters' earlier samples it keeps.

Bit rates count RTP payload bytes (no headers, no SRTP tag). The resolution is the one the
publisher declared (``TrackInfo`` width/height and layers): the server does not decode.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from livekit.protocol import models as models_pb

__all__ = ["RATE_WINDOW", "Inspector", "RateMeter", "SubscriberCounters"]

logger = logging.getLogger(__name__)

RATE_WINDOW = 2.0
"""Seconds over which bit rates and loss fractions are averaged."""
KEEP = 10.0
"""Seconds of samples kept per counter."""
MAX_SAMPLES = 256
"""Samples kept per counter (however often snapshots are asked for)."""


class SubscriberCounters(Protocol):
    """One subscriber's down-track counters (``forwarder.SubscriberStats``)."""

    @property
    def pc(self) -> object: ...

    @property
    def packets(self) -> int: ...

    @property
    def octets(self) -> int: ...

    @property
    def dropped_queue(self) -> int: ...

    @property
    def dropped_socket(self) -> int: ...

    @property
    def paused(self) -> bool: ...


class ForwarderStats(Protocol):
    """What the inspector reads of a ``forwarder.TrackForwarder``."""

    @property
    def mime_type(self) -> str | None: ...

    @property
    def packets_received(self) -> int: ...

    @property
    def bytes_received(self) -> int: ...

    @property
    def packets_forwarded(self) -> int: ...

    keyframe_requests_sent: int

    def receive_counts(self) -> tuple[int, int]: ...

    def subscriber_stats(self) -> list[SubscriberCounters]: ...


class RateMeter:
    """Per key, samples of monotonic counters -> their rate over about ``window`` s."""

    def __init__(self, window: float = RATE_WINDOW, keep: float = KEEP) -> None:
        if window <= 0 or keep < window:
            raise ValueError("RateMeter needs 0 < window <= keep")
        self.window = window
        self.keep = keep
        self._samples: dict[Any, deque[tuple[float, tuple[int, ...]]]] = {}

    def update(self, key: Any, now: float, values: tuple[int, ...]) -> tuple[float, ...]:
        """Record ``values`` at ``now``; the per-second increase of each over the window
        (compared with the newest sample at least ``window`` old, else the oldest one;
        zeros for a first sample or a counter that went back)."""
        samples = self._samples.setdefault(key, deque(maxlen=MAX_SAMPLES))
        while samples and now - samples[0][0] > self.keep:
            samples.popleft()
        base = None
        for sample in reversed(samples):
            base = sample
            if now - sample[0] >= self.window:
                break
        samples.append((now, values))
        if base is None or now <= base[0]:
            return tuple(0.0 for _ in values)
        dt = now - base[0]
        return tuple(max(0, v - b) / dt for v, b in zip(values, base[1], strict=True))

    def prune(self, live: set[Any]) -> None:
        """Forget the keys not in ``live`` (tracks and subscriptions that ended)."""
        for key in [k for k in self._samples if k not in live]:
            del self._samples[key]


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)


class Inspector:
    """Builds inspector snapshots of ``rooms`` (a ``RoomManager``) and ``sessions``
    (participant sid -> session with ``forwarders`` and ``subscriber_pc``)."""

    def __init__(self, rooms: Any, sessions: Mapping[str, Any],
                 window: float = RATE_WINDOW) -> None:
        self.rooms = rooms
        self.sessions = sessions
        self.meter = RateMeter(window)

    def snapshot(self, now: float, room: str | None = None) -> dict[str, Any]:
        """Every room (or only ``room``) with its participants and their tracks."""
        live: set[Any] = set()
        pc_owner = {id(getattr(s, "subscriber_pc", None)): sid
                    for sid, s in self.sessions.items()}
        rooms = []
        for name, state in sorted(self.rooms.rooms.items()):
            if room is not None and name != room:
                continue
            identities = {p.sid: p.identity for p in state.participants.values()}
            participants = [self._participant(p, now, live, pc_owner, identities)
                            for p in state.participants.values()]
            rooms.append({
                "name": name, "sid": state.sid, "metadata": state.metadata,
                "created_at": state.created_at, "num_participants": len(participants),
                "participants": participants,
            })
        self.meter.prune(live)
        return {"time": now, "rooms": rooms}

    def _participant(self, p: Any, now: float, live: set[Any], pc_owner: dict[int, str],
                     identities: dict[str, str]) -> dict[str, Any]:
        session = self.sessions.get(p.sid)
        forwarders: Mapping[str, Any] = getattr(session, "forwarders", {}) or {}
        tracks = []
        for t in p.tracks.values():
            info = t.info
            fwd = forwarders.get(info.sid)
            track: dict[str, Any] = {
                "sid": info.sid, "name": info.name,
                "kind": _enum_name(models_pb.TrackType, info.type).lower(),
                "source": _enum_name(models_pb.TrackSource, info.source).lower(),
                "mime_type": info.mime_type, "muted": info.muted, "published": t.published,
                "width": info.width, "height": info.height, "simulcast": info.simulcast,
                "layers": [{"quality": _enum_name(models_pb.VideoQuality, layer.quality).lower(),
                            "width": layer.width, "height": layer.height}
                           for layer in info.layers],
            }
            if fwd is not None:
                track.update(self._forwarding(info.sid, fwd, now, live, pc_owner, identities))
            tracks.append(track)
        return {
            "sid": p.sid, "identity": p.identity, "name": p.name, "metadata": p.metadata,
            "attributes": dict(p.attributes),
            "kind": _enum_name(models_pb.ParticipantInfo.Kind, p.kind).lower(),
            "state": _enum_name(models_pb.ParticipantInfo.State, p.state).lower(),
            "hidden": p.hidden, "signal_connected": p.signal_connected,
            "joined_at_ms": p.joined_at_ms, "tracks": tracks,
        }

    def _forwarding(self, sid: str, fwd: ForwarderStats, now: float, live: set[Any],
                    pc_owner: dict[int, str], identities: dict[str, str]) -> dict[str, Any]:
        expected, received = fwd.receive_counts()
        key = ("in", sid)
        live.add(key)
        bytes_in = fwd.bytes_received
        byte_rate, expected_rate, received_rate = self.meter.update(
            key, now, (bytes_in, expected, received))
        loss = (max(0.0, expected_rate - received_rate) / expected_rate
                if expected_rate > 0 else 0.0)
        subscribers = []
        for sub in fwd.subscriber_stats():
            owner = pc_owner.get(id(sub.pc), "")
            sub_key = ("out", sid, owner or id(sub.pc))
            live.add(sub_key)
            out_rate, = self.meter.update(sub_key, now, (sub.octets,))
            subscribers.append({
                "sid": owner, "identity": identities.get(owner, ""),
                "packets": sub.packets, "bytes": sub.octets, "bitrate": round(out_rate * 8),
                "dropped_queue": sub.dropped_queue, "dropped_socket": sub.dropped_socket,
                "paused": sub.paused,
            })
        return {
            "codec": fwd.mime_type, "bitrate": round(byte_rate * 8),
            "packets_received": fwd.packets_received, "bytes_received": bytes_in,
            "packets_expected": expected, "packets_lost": max(0, expected - received),
            "loss": round(loss, 4), "packets_forwarded": fwd.packets_forwarded,
            "keyframe_requests": fwd.keyframe_requests_sent, "subscribers": subscribers,
        }
