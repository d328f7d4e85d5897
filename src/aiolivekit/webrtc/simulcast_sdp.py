"""Simulcast in SDP (RFC 8851 rids, RFC 8853 ``a=simulcast``), for what aiortc lacks.

aiortc neither writes nor reads ``a=rid`` / ``a=simulcast``. A simulcast publisher adds
them to its offer's video section (:func:`offer_simulcast`), with the RID header
extension the layers' packets carry; the answer says which of the rids the server takes
(:func:`answered_simulcast`). An answer without ``a=simulcast`` means one layer. A
receiver (the embedded server) takes every layer offered (:func:`answer_simulcast`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RID_URI", "AnsweredSimulcast", "answer_simulcast", "answered_simulcast",
           "offer_simulcast"]

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
_EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\S+)?\s+(\S+)")


@dataclass(frozen=True)
class AnsweredSimulcast:
    """What an answer accepted for one video section: the rids it receives, in order,
    and the RID extension's id."""

    rids: tuple[str, ...]
    rid_extension_id: int


def _sections(sdp: str) -> tuple[list[str], list[list[str]]]:
    lines = sdp.replace("\r\n", "\n").rstrip("\n").split("\n")
    head: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            head.append(line)
    return head, sections


def _join(head: list[str], sections: list[list[str]]) -> str:
    return "\r\n".join(head + [line for s in sections for line in s]) + "\r\n"


def _rid_extension_id(section: list[str]) -> int | None:
    for line in section:
        match = _EXTMAP.match(line)
        if match and match.group(2) == RID_URI:
            return int(match.group(1))
    return None


def _section_of(sections: list[list[str]], mid: str) -> list[str] | None:
    for section in sections:
        if f"a=mid:{mid}" in section:
            return section
    return None


def _section_of_track(sections: list[list[str]], track_id: str) -> list[str] | None:
    for section in sections:
        for line in section:
            if line.startswith("a=msid:") and line.split()[-1] == track_id:
                return section
    return None


def offer_simulcast(sdp: str, track_id: str, rids: list[str]) -> str:
    """``sdp`` with ``a=rid:<rid> send`` for each of ``rids`` (low to high),
    ``a=simulcast:send`` and the RID header extension in the video section sending
    ``track_id`` (its ``a=msid``; a new section has no mid before it is applied).
    The extension gets an id no section uses yet (the bundle shares one id space).
    Raises ``ValueError`` when the section is missing or no id is free."""
    head, sections = _sections(sdp)
    section = _section_of_track(sections, track_id)
    if section is None:
        raise ValueError(f"no media section sends track {track_id!r}")
    if any(line.startswith("a=simulcast:") for line in section):
        return sdp
    used: set[int] = set()
    rid_id = None
    for s in sections:
        for line in s:
            match = _EXTMAP.match(line)
            if match:
                used.add(int(match.group(1)))
                if match.group(2) == RID_URI and s is section:
                    rid_id = int(match.group(1))
    if rid_id is None:
        free = [i for i in range(1, 15) if i not in used]
        if not free:
            raise ValueError("no free one-byte header extension id for the RID")
        rid_id = free[0]
        last_extmap = max((i for i, line in enumerate(section) if line.startswith("a=extmap:")),
                          default=None)
        at = last_extmap + 1 if last_extmap is not None else len(section)
        section.insert(at, f"a=extmap:{rid_id} {RID_URI}")
    section.extend(f"a=rid:{rid} send" for rid in rids)
    section.append("a=simulcast:send " + ";".join(rids))
    return _join(head, sections)


def answered_simulcast(sdp: str, mid: str) -> AnsweredSimulcast | None:
    """The rids the answer receives in section ``mid`` and its RID extension id; None
    when it has no ``a=simulcast`` (or no RID extension): the publisher sends one layer."""
    _, sections = _sections(sdp)
    section = _section_of(sections, mid)
    if section is None:
        return None
    rids: tuple[str, ...] = ()
    for line in section:
        if line.startswith("a=simulcast:"):
            words = line[len("a=simulcast:"):].split()
            if len(words) >= 2 and words[0] == "recv":
                # alternatives (",") and paused rids ("~") are not offered by us
                rids = tuple(r.lstrip("~") for r in re.split("[;,]", words[1]) if r)
    rid_id = _rid_extension_id(section)
    if not rids or rid_id is None:
        return None
    return AnsweredSimulcast(rids, rid_id)


def answer_simulcast(offer_sdp: str, answer_sdp: str) -> str:
    """``answer_sdp`` receiving every simulcast layer ``offer_sdp`` sends: for each video
    section offering ``a=simulcast:send``, its rids as ``a=rid:<rid> recv`` and
    ``a=simulcast:recv`` in the answer's section of the same mid, provided the answer
    accepted the RID header extension (without it the layers cannot be told apart)."""
    _, offered = _sections(offer_sdp)
    head, sections = _sections(answer_sdp)
    changed = False
    for section in offered:
        rids = [line.split()[0][len("a=rid:"):] for line in section
                if line.startswith("a=rid:") and line.split()[1:2] == ["send"]]
        if not rids or not any(line.startswith("a=simulcast:send") for line in section):
            continue
        mid = next((line[len("a=mid:"):] for line in section if line.startswith("a=mid:")), None)
        answer = _section_of(sections, mid) if mid is not None else None
        if answer is None or any(line.startswith("a=simulcast:") for line in answer):
            continue
        if _rid_extension_id(answer) is None:
            continue
        answer.extend(f"a=rid:{rid} recv" for rid in rids)
        answer.append("a=simulcast:recv " + ";".join(rids))
        changed = True
    return _join(head, sections) if changed else answer_sdp
