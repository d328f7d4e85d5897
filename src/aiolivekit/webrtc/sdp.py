"""Sans-I/O reading of the SDP facts aiortc does not expose (msid, rid, ssrc per mid)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MediaSection", "local_candidates", "parse_media_sections"]


@dataclass
class MediaSection:
    """One m-line of a session description."""

    index: int
    kind: str
    mid: str = ""
    direction: str = "sendrecv"
    port: int = 9
    stream_id: str = ""
    track_id: str = ""
    ssrcs: list[int] = field(default_factory=list)
    rids: list[str] = field(default_factory=list)
    simulcast: bool = False
    codecs: list[str] = field(default_factory=list)


def parse_media_sections(sdp: str) -> list[MediaSection]:
    """Split ``sdp`` into its m-lines with mid, direction, msid, ssrcs and rids."""
    sections: list[MediaSection] = []
    current: MediaSection | None = None
    ssrc_msid: dict[int, tuple[str, str]] = {}
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if current is not None:
                _finish(current, ssrc_msid)
            parts = line[2:].split()
            current = MediaSection(index=len(sections), kind=parts[0])
            try:
                current.port = int(parts[1])
            except (IndexError, ValueError):
                pass
            sections.append(current)
            ssrc_msid = {}
            continue
        if current is None:
            continue
        if line.startswith("a=mid:"):
            current.mid = line[6:]
        elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            current.direction = line[2:]
        elif line.startswith("a=msid:"):
            parts = line[7:].split()
            current.stream_id = parts[0] if parts else ""
            current.track_id = parts[1] if len(parts) > 1 else ""
        elif line.startswith("a=ssrc:"):
            head, _, rest = line[7:].partition(" ")
            try:
                ssrc = int(head)
            except ValueError:
                continue
            if ssrc not in current.ssrcs:
                current.ssrcs.append(ssrc)
            if rest.startswith("msid:"):
                parts = rest[5:].split()
                if parts:
                    ssrc_msid[ssrc] = (parts[0], parts[1] if len(parts) > 1 else "")
        elif line.startswith("a=rid:"):
            rid = line[6:].split()[0]
            current.rids.append(rid)
        elif line.startswith("a=simulcast:"):
            current.simulcast = True
        elif line.startswith("a=rtpmap:"):
            _, _, rest = line.partition(" ")
            current.codecs.append(rest.split("/")[0])
    if current is not None:
        _finish(current, ssrc_msid)
    return sections


def _finish(section: MediaSection, ssrc_msid: dict[int, tuple[str, str]]) -> None:
    if not section.track_id and ssrc_msid:
        section.stream_id, section.track_id = next(iter(ssrc_msid.values()))


def local_candidates(sdp: str) -> list[tuple[str, int, str]]:
    """``(mid, mline_index, candidate_line)`` of every candidate in ``sdp``."""
    out: list[tuple[str, int, str]] = []
    index = -1
    mid = ""
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            index += 1
            mid = ""
        elif line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("a=candidate:") and index >= 0:
            out.append((mid, index, line[2:]))
    return out


def drop_send_audio_nack(sdp: str) -> str:
    """``sdp`` without plain ``a=rtcp-fb:<pt> nack`` lines in its send-only audio m-lines
    (a sender that keeps no packet history must not invite NACKs it cannot answer)."""
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    sep = "\r\n" if "\r\n" in sdp else "\n"
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    out: list[str] = list(sections[0])
    for section in sections[1:]:
        if section[0].startswith("m=audio") and "a=sendonly" in section:
            section = [ln for ln in section if not (
                ln.startswith("a=rtcp-fb:") and ln.split(" ", 1)[-1].strip() == "nack")]
        out.extend(section)
    return sep.join(out)
