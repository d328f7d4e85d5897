"""Configuration of the embedded server (bind address, port, API keys, forwarding)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from .announce import Announce
from .read_batching import MAX_WINDOW_MS, window_from_env

__all__ = [
    "DEFAULT_PORT",
    "DEV_API_KEY",
    "DEV_API_SECRET",
    "ForwardingOptions",
    "ServerConfig",
    "parse_keys",
]

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
DEFAULT_PORT = 7880


def parse_keys(text: str) -> dict[str, str]:
    """Parse ``key:secret[,key2:secret2]`` into a dict; raise ``ValueError`` if malformed."""
    keys: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, secret = item.partition(":")
        key, secret = key.strip(), secret.strip()
        if not sep or not key or not secret:
            raise ValueError(f"invalid key pair {item!r}: expected key:secret")
        keys[key] = secret
    if not keys:
        raise ValueError("no API keys given")
    return keys


def _socket_reader_from_env() -> bool:
    return os.environ.get("AIOLIVEKIT_SOCKET_READER", "1") != "0"


@dataclass(frozen=True)
class ForwardingOptions:
    """How the SFU forwards RTP (every fast path on by default; tests and benchmarks
    turn single ones off to compare with the plain aiortc path).

    ``read_batch_window`` (seconds, 0 = off) defaults to ``AIOLIVEKIT_READ_BATCH_MS``
    (``aiolivekit serve --read-batch-ms``); ``socket_reader`` to
    ``AIOLIVEKIT_SOCKET_READER`` (``0``: never read the UDP sockets ourselves).
    """

    fast_path: bool = True
    """Send synchronously from the receive path when the transport allows."""
    fast_out: bool = True
    """``DownTrack.forward``: the header written into the SRTP buffer, no copies."""
    fanout: bool = True
    """Steady subscribers of a source served in one loop (``fanout.SteadyGroup``)."""
    raw_receive: bool = True
    """Audio: take the publisher's packets from the UDP socket (``rtp_io.ReceiveTap``)."""
    sync_rtcp: bool = True
    """RTCP of the forwarder's transports handled by their ``ReceiveTap`` at once."""
    socket_reader: bool = field(default_factory=_socket_reader_from_env)
    """The tap reads the UDP sockets itself where it can (else it wraps the protocol)."""
    read_batch_window: float = field(default_factory=window_from_env)
    """Seconds between batched socket reads while traffic is dense (0: no batching)."""
    transport_cc: bool = True
    """Answer a publisher's transport-cc offer and send it the feedback (``twcc_feedback``)."""
    publisher_start_bitrate: int = 800_000
    """bit/s given to libwebrtc publishers as ``x-google-start-bitrate`` in the answer
    (0: none, libwebrtc starts at 300 kbit/s and, for its first frames, scales 720p
    down to 320x180, then climbs back in 2 to 4 s steps)."""

    def __post_init__(self) -> None:
        for name in ("fast_path", "fast_out", "fanout", "raw_receive", "sync_rtcp",
                     "socket_reader", "transport_cc"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ForwardingOptions.{name} must be a bool")
        start = self.publisher_start_bitrate
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= 100_000_000:
            raise ValueError("ForwardingOptions.publisher_start_bitrate must be 0..100000000 bit/s")
        window = self.read_batch_window
        if isinstance(window, bool) or not isinstance(window, (int, float)):
            raise TypeError("ForwardingOptions.read_batch_window must be a number of seconds")
        if not 0 <= window <= MAX_WINDOW_MS / 1000.0:
            raise ValueError(f"the read batching window must be 0..{MAX_WINDOW_MS:g} ms, "
                             f"not {window * 1000:g}")


@dataclass
class ServerConfig:
    """Where the server listens, which API keys it accepts and how it forwards media."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    keys: dict[str, str] = field(default_factory=lambda: {DEV_API_KEY: DEV_API_SECRET})
    forwarding: ForwardingOptions = field(default_factory=ForwardingOptions)
    departure_timeout: float = 20.0
    """Seconds a participant whose signal dropped is kept for a resume (livekit-server's
    room departure timeout, 20 s); a room created with ``departure_timeout`` uses its own."""
    ping_timeout: float = 15.0
    """Seconds of silence on a signal connection after which it counts as lost (the
    ``ping_timeout`` announced in the JoinResponse; clients ping every 5 s)."""
    announce: Announce | None = None
    """Test hook: ``(host, port, label) -> (host, port)`` for every ICE candidate the
    server signals (a fault relay's address; ``server/announce.py``)."""
    page: bool | None = None
    """The room page (``/``), the inspector (``/inspect``) and their static files:
    ``None`` serves them in dev mode only (:attr:`dev_mode`). The token endpoint
    ``/dev/token`` answers in dev mode only, whatever this says (docs/page.md)."""

    @property
    def dev_mode(self) -> bool:
        """The public development key pair (``devkey`` / ``secret``) is accepted: anyone
        can mint tokens for this server anyway, so the page may mint them too."""
        return self.keys.get(DEV_API_KEY) == DEV_API_SECRET

    @property
    def page_enabled(self) -> bool:
        return self.dev_mode if self.page is None else bool(self.page)

    def __post_init__(self) -> None:
        if self.page is not None and not isinstance(self.page, bool):
            raise TypeError("ServerConfig.page must be True, False or None")
        for name in ("departure_timeout", "ping_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"ServerConfig.{name} must be a number of seconds")
        if self.departure_timeout < 0:
            raise ValueError("ServerConfig.departure_timeout must be >= 0 seconds")
        if self.ping_timeout <= 0:
            raise ValueError("ServerConfig.ping_timeout must be > 0 seconds")

    def ice_addresses(self) -> list[str] | None:
        """The addresses the server's peer connections gather on.

        A specific IP bind address is used as is; a wildcard or host name gives ``None``
        (aioice's default: every non-loopback interface).
        """
        try:
            addr = ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return ["127.0.0.1"] if self.host == "localhost" else None
        if addr.is_unspecified:
            return None
        return [str(addr)]
