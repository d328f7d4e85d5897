"""Compare two dumps of scripts/rtc_surface_dump.py: the official ``livekit.rtc`` and ours.

Each difference is one line whose text starts with a stable key (``Room.connect``,
``submodule room``, ``name AudioFilter`` ...): the allow-list of
tests/unit/test_rtc_surface.py is keyed by those lines.
"""

from __future__ import annotations

from typing import Any


def _compare_member(where: str, off: dict[str, Any], ours: dict[str, Any] | None) -> list[str]:
    if ours is None:
        return [f"{where}: missing ({off['kind']})"]
    out = []
    if off["kind"] != ours["kind"]:
        # a plain attribute where the official SDK has a property reads the same way
        same_read = {off["kind"], ours["kind"]} <= {"property", "attribute"}
        if not same_read:
            out.append(f"{where}: kind {off['kind']} != ours {ours['kind']}")
            return out
    if off.get("async") is not None and ours.get("async") is not None \
            and off["async"] != ours["async"]:
        out.append(f"{where}: async {off['async']} != ours {ours['async']}")
    if off.get("signature") and ours.get("signature") is not None \
            and off["signature"] != ours["signature"]:
        out.append(f"{where}: signature {off['signature']} != ours {ours['signature']}")
    return out


def compare_entry(where: str, off: dict[str, Any], ours: dict[str, Any] | None) -> list[str]:
    """Differences of one described object (see ``describe`` in the dump script)."""
    if ours is None:
        return [f"{where}: missing ({off['kind']})"]
    kind, our_kind = off["kind"], ours["kind"]
    if kind == "enum":
        if our_kind != "enum":
            return [f"{where}: kind enum != ours {our_kind}"]
        missing = [f"{k}={v!r}" for k, v in off["values"].items()
                   if ours["values"].get(k, object()) != v]
        return [f"{where}: enum values missing or different: {', '.join(missing)}"] \
            if missing else []
    if kind == "message":
        fields = ours.get("fields")
        if fields is None:
            return [f"{where}: kind message != ours {our_kind} (no fields)"]
        missing = [f for f in off["fields"] if f not in fields]
        return [f"{where}: fields missing: {', '.join(missing)}"] if missing else []
    if kind != our_kind:
        return [f"{where}: kind {kind} != ours {our_kind}"]
    if kind == "function":
        return _compare_member(where, off, ours)
    if kind != "class":
        return []
    out: list[str] = []
    if off.get("exception") and not ours.get("exception"):
        out.append(f"{where}: not an exception class")
    if off.get("fields") is not None:
        missing = [f for f in off["fields"] if f not in (ours.get("fields") or ())]
        if missing:
            out.append(f"{where}: fields missing: {', '.join(missing)}")
    for name, member in off["members"].items():
        out += _compare_member(f"{where}.{name}", member, ours["members"].get(name))
    return out


def compare(official: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name in official["all"]:
        if name not in ours["all"]:
            out.append(f"{name}: not in __all__")
        out += compare_entry(name, official["names"][name], ours["names"].get(name))
    for sub, info in official["submodules"].items():
        our_info = ours["submodules"].get(sub)
        if our_info is None or "error" in our_info:
            why = our_info["error"] if our_info else "absent"
            out.append(f"submodule {sub}: not importable ({why})")
            continue
        for name, entry in info.get("names", {}).items():
            if official["names"].get(name) == entry:  # the object of __all__: checked above
                if name not in our_info["names"]:
                    out.append(f"{sub}.{name}: missing ({entry['kind']})")
                continue
            out += compare_entry(f"{sub}.{name}", entry, our_info["names"].get(name))
    return sorted(out)
