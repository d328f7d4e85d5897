"""Private network namespaces for tests that run libwebrtc-based clients or livekit-server.

libwebrtc (the official Rust SDKs, Chromium) ignores the loopback interface when it gathers
ICE candidates, so those clients need a namespace with a veth pair. Running them in a fresh
namespace (``unshare -n``) keeps every packet off the machine's real interfaces.
``scripts/netns-run`` builds such a namespace (lo + veth ``10.203.0.1``) and sets
``AIOLIVEKIT_NETNS=1``; :func:`run_in_netns` does the same from Python.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "NETNS_ADDR",
    "can_create_netns",
    "in_private_netns",
    "netns_command",
    "netns_skip_reason",
    "run_in_netns",
]

logger = logging.getLogger(__name__)

NETNS_ADDR = "10.203.0.1"

_SETUP = (
    "set -e; ip link set lo up; "
    "ip link add lkv0 type veth peer name lkv1; "
    f"ip addr add {NETNS_ADDR}/24 dev lkv0; "
    "ip link set lkv0 up; ip link set lkv1 up; "
    f"export AIOLIVEKIT_NETNS=1 AIOLIVEKIT_NETNS_ADDR={NETNS_ADDR}; "
    'exec "$@"'
)

_can_create: bool | None = None


def in_private_netns() -> bool:
    """True inside a namespace made by ``scripts/netns-run`` (or :func:`run_in_netns`)."""
    return os.environ.get("AIOLIVEKIT_NETNS") == "1"


def can_create_netns() -> bool:
    """True if this process may create a network namespace with a veth pair (needs root)."""
    global _can_create
    if _can_create is None:
        _can_create = _probe()
    return _can_create


def _probe() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    try:
        proc = subprocess.run(
            ["unshare", "-n", "--", "bash", "-c", _SETUP, "probe", "true"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def netns_skip_reason() -> str | None:
    """Why a ``netns`` test cannot run here, or ``None`` when it can."""
    if in_private_netns():
        return None
    if can_create_netns():
        return (
            "needs a private network namespace: run it under scripts/netns-run (scripts/test does)"
        )
    return "needs a private network namespace, and this process cannot create one (not root?)"


def netns_command(cmd: Sequence[str]) -> list[str]:
    """``cmd`` wrapped to run in a fresh private namespace (unchanged if already in one)."""
    if in_private_netns():
        return list(cmd)
    return ["unshare", "-n", "--", "bash", "-c", _SETUP, "netns-run", *cmd]


def run_in_netns(
    cmd: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    capture_output: bool = False,
    check: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` inside a private network namespace (lo + veth) and wait for it.

    Raises :class:`RuntimeError` when no namespace can be created, and
    :class:`subprocess.TimeoutExpired` after ``timeout`` seconds (the child is killed).
    """
    if not in_private_netns() and not can_create_netns():
        raise RuntimeError("cannot create a private network namespace (needs root, unshare, ip)")
    full = netns_command(cmd)
    logger.debug("run_in_netns: %s", full)
    merged = dict(os.environ)
    if env:
        merged.update(env)
    return subprocess.run(
        full,
        timeout=timeout,
        env=merged,
        cwd=cwd,
        capture_output=capture_output,
        check=check,
    )
