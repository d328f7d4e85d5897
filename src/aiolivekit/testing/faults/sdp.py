"""SDP candidate rewriting: make a peer reach the other one through a relay.

``rewrite_candidates(sdp, mapping)`` replaces the address of every ``a=candidate`` line whose
``(host, port)`` is a key of ``mapping`` with the mapped address. Candidates not in the mapping
are removed, so the receiving peer knows no direct path; the count of rewritten candidates is
returned with the text so a test can assert that the rewrite took effect. ``c=`` lines are
left alone: ICE agents (aiortc, libwebrtc, pion) connect to candidates only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .addresses import check_address

__all__ = ["candidate_address", "rewrite_candidates", "strip_candidates"]

Addr = tuple[str, int]


def candidate_address(line: str) -> Addr | None:
    """``(host, port)`` of an ``a=candidate:`` / ``candidate:`` line, ``None`` if malformed."""
    text = line.strip()
    if text.startswith("a="):
        text = text[2:]
    if not text.startswith("candidate:"):
        return None
    fields = text.split()
    if len(fields) < 8 or fields[6] != "typ":
        return None
    try:
        return fields[4], int(fields[5])
    except ValueError:
        return None


def rewrite_candidate_line(line: str, mapping: Mapping[Addr, Addr]) -> str | None:
    """The candidate line pointing at the mapped address, or ``None`` if not mapped."""
    addr = candidate_address(line)
    if addr is None or addr not in mapping:
        return None
    host, port = mapping[addr]
    check_address(host, "relay address")
    prefix = "a=" if line.strip().startswith("a=") else ""
    fields = line.strip()[len(prefix):].split()
    fields[4], fields[5] = host, str(port)
    return prefix + " ".join(fields)


def _rewrite(sdp: str, keep: Callable[[str], str | None]) -> tuple[str, int]:
    eol = "\r\n" if "\r\n" in sdp else "\n"
    out: list[str] = []
    count = 0
    for line in sdp.split(eol):
        if line.startswith("a=candidate:"):
            new = keep(line)
            if new is None:
                continue
            count += 1
            out.append(new)
        else:
            out.append(line)
    return eol.join(out), count


def rewrite_candidates(sdp: str, mapping: Mapping[Addr, Addr]) -> tuple[str, int]:
    """Point mapped candidates at the relay and drop the others; ``(sdp, rewritten)``."""
    return _rewrite(sdp, lambda line: rewrite_candidate_line(line, mapping))


def strip_candidates(sdp: str) -> tuple[str, int]:
    """Remove every ``a=candidate`` line; ``(sdp, 0)`` (the peer learns only peer-reflexive ones)."""
    return _rewrite(sdp, lambda line: None)
