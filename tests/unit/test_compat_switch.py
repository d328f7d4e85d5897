"""The drop-in switch (``aiolivekit.compat``): ``livekit.rtc`` resolves to aiolivekit.

Every case runs in a fresh interpreter (the switch is process-wide). The finder and the
``.pth`` hook are checked with this interpreter; the cases with the official ``livekit``
wheel installed beside aiolivekit use the livekit-agents venv (scripts/install-agents-venv),
where ``/proc/self/maps`` shows whether its native library (liblivekit_ffi) was loaded: a
positive control loads it without the switch, so the check can fail.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aiolivekit

SRC = Path(aiolivekit.__file__).resolve().parent.parent
PTH = SRC / "aiolivekit_as_livekit_rtc.pth"
CACHE = Path(os.environ.get("AIOLIVEKIT_CACHE") or Path.home() / ".cache" / "aiolivekit")
AGENTS_VENV = Path(os.environ.get("AIOLIVEKIT_AGENTS_VENV") or CACHE / "agents-venv")
AGENTS_PYTHON = AGENTS_VENV / "bin" / "python"
NATIVE = "liblivekit_ffi"


def run(code: str, *, python: str | Path = sys.executable, switch: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AIOLIVEKIT_AS_LIVEKIT_RTC"}
    env["PYTHONPATH"] = str(SRC)
    args = [str(python), "-c", textwrap.dedent(code)]
    if str(python) == sys.executable:
        # this interpreter's site directories on the path without their .pth files: an
        # installed aiolivekit has put the same hook there, which would run at startup
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), *site.getsitepackages()])
        args.insert(1, "-S")
    if switch is not None:
        env["AIOLIVEKIT_AS_LIVEKIT_RTC"] = switch
    return subprocess.run(args, env=env, cwd="/", capture_output=True, text=True,
                          timeout=timeout, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_install_aliases_the_package_and_its_submodules() -> None:
    out = ok(run("""
        import sys
        import aiolivekit.compat as compat
        compat.install(); compat.install()          # idempotent
        assert compat.installed()
        import livekit.rtc
        import aiolivekit.rtc
        assert livekit.rtc is aiolivekit.rtc
        from livekit import rtc
        assert rtc is aiolivekit.rtc and rtc.Room is aiolivekit.Room
        from livekit.rtc.room import Room
        from livekit.rtc.participant import PublishTrackError
        from livekit.rtc._proto.track_pb2 import AudioTrackFeature
        import livekit.rtc.audio_stream as s
        import aiolivekit.rtc.audio_stream
        assert s is aiolivekit.rtc.audio_stream and Room is aiolivekit.Room
        assert PublishTrackError is aiolivekit.PublishTrackError
        assert AudioTrackFeature is aiolivekit.AudioTrackFeature
        assert sys.modules["livekit.rtc._proto.track_pb2"].__name__ == \\
            "aiolivekit.rtc._proto.track_pb2"
        try:
            import livekit.rtc._ffi_client
        except ModuleNotFoundError as exc:
            assert exc.name == "livekit.rtc._ffi_client", exc.name
            print("missing:", exc)
        else:
            raise AssertionError("livekit.rtc._ffi_client imported")
        compat.uninstall()
        assert not compat.installed()
        assert not [m for m in sys.modules if m.startswith("livekit.rtc")]
        print("done")
    """))
    assert "done" in out
    assert "missing: No module named 'livekit.rtc._ffi_client': livekit.rtc is aiolivekit" in out


def test_install_after_the_official_module_was_imported_raises() -> None:
    proc = run("""
        import sys, types
        sys.modules["livekit.rtc"] = types.ModuleType("livekit.rtc")   # stands for the official
        import aiolivekit.compat as compat
        try:
            compat.install()
        except compat.CompatInstallError as exc:
            assert isinstance(exc, ImportError)
            print("refused:", exc)
        assert not compat.installed()
    """)
    out = ok(proc)
    assert "refused: aiolivekit.compat.install(): the official livekit.rtc is already imported" in out
    assert "AIOLIVEKIT_AS_LIVEKIT_RTC=1" in out


# the .pth file through the interpreter's own site machinery (site.addsitedir reads and
# runs it as at start-up)
PTH_CASE = """
    import shutil, site, sys, tempfile
    d = tempfile.mkdtemp()
    shutil.copy({pth!r}, d)
    {before}
    site.addsitedir(d)
    import aiolivekit.compat as compat
    print("installed" if compat.installed() else "not installed")
"""


@pytest.mark.parametrize(("switch", "expected", "stderr"), [
    (None, "not installed", ""),
    ("", "not installed", ""),
    ("0", "not installed", ""),
    ("1", "installed", ""),
    ("yes", "not installed",
     "aiolivekit: AIOLIVEKIT_AS_LIVEKIT_RTC='yes' is not 1 or 0: livekit.rtc left alone\n"),
])
def test_pth_hook(switch: str | None, expected: str, stderr: str) -> None:
    proc = run(PTH_CASE.format(pth=str(PTH), before="assert 'aiolivekit' not in sys.modules"),
               switch=switch)
    assert ok(proc).split() == expected.split()
    assert proc.stderr == stderr


def test_pth_hook_unset_does_not_import_aiolivekit() -> None:
    out = ok(run(f"""
        import shutil, site, sys, tempfile
        d = tempfile.mkdtemp()
        shutil.copy({str(PTH)!r}, d)
        site.addsitedir(d)
        print(sorted(m for m in sys.modules if m.startswith("aiolivekit")))
    """))
    assert out.strip() == "[]"


def test_pth_hook_never_breaks_the_interpreter() -> None:
    # aiolivekit cannot be imported (uninstalled while the .pth stayed): one line on stderr
    proc = run(f"""
        import shutil, site, sys, tempfile
        d = tempfile.mkdtemp()
        shutil.copy({str(PTH)!r}, d)
        sys.modules["aiolivekit.compat"] = None
        site.addsitedir(d)
        print("alive")
    """, switch="1")
    assert ok(proc).strip() == "alive"
    assert proc.stderr.startswith("aiolivekit: the AIOLIVEKIT_AS_LIVEKIT_RTC hook failed: "
                                  "ModuleNotFoundError(")
    assert proc.stderr.count("\n") == 1
    # the official module already imported when the hook runs: reported, interpreter goes on
    proc = run(PTH_CASE.format(
        pth=str(PTH),
        before="import types; sys.modules['livekit.rtc'] = types.ModuleType('livekit.rtc')"),
        switch="1")
    assert ok(proc).strip() == "not installed"
    assert proc.stderr.startswith("aiolivekit: AIOLIVEKIT_AS_LIVEKIT_RTC=1 could not be honoured: "
                                  "aiolivekit.compat.install(): the official livekit.rtc is")


# ---- with the official livekit wheel installed beside aiolivekit ---------------------------

def _agents_venv_reason() -> str | None:
    if not AGENTS_PYTHON.exists():
        return f"no livekit-agents venv at {AGENTS_VENV} (scripts/install-agents-venv makes it)"
    if not list(AGENTS_VENV.glob("lib/python*/site-packages/livekit/rtc/_ffi_client.py")):
        return f"the official livekit wheel is not installed in {AGENTS_VENV}"
    if not list(AGENTS_VENV.glob("lib/python*/site-packages/aiolivekit_as_livekit_rtc.pth")):
        return f"aiolivekit (with its .pth hook) is not installed in {AGENTS_VENV}"
    return None


needs_agents_venv = pytest.mark.skipif(_agents_venv_reason() is not None,
                                       reason=str(_agents_venv_reason()))

MAPS = f"""
        def native_mapped():
            return sorted({{l.split()[-1] for l in open("/proc/self/maps") if "{NATIVE}" in l}})
"""  # indented as the code it is put before


@needs_agents_venv
def test_control_the_official_sdk_maps_its_native_library() -> None:
    out = ok(run(MAPS + """
        import livekit.rtc
        assert livekit.rtc.__name__ == "livekit.rtc" and "site-packages" in livekit.rtc.__file__
        from livekit.rtc._ffi_client import get_ffi_lib
        get_ffi_lib()
        print(native_mapped())
    """, python=AGENTS_PYTHON))
    assert NATIVE in out


@needs_agents_venv
def test_switch_at_start_never_loads_the_native_library() -> None:
    out = ok(run(MAPS + """
        import asyncio, sys
        import numpy as np
        from livekit import rtc
        import livekit.agents                      # imports livekit.rtc everywhere
        from livekit.agents import AgentSession, Agent, voice   # noqa: F401
        assert rtc.__name__ == "aiolivekit.rtc", rtc.__name__
        async def main():
            room = rtc.Room()
            source = rtc.AudioSource(48000, 1)
            track = rtc.LocalAudioTrack.create_audio_track("t", source)
            frame = rtc.AudioFrame(np.zeros(480, np.int16).tobytes(), 48000, 1, 480)
            await source.capture_frame(frame)
            mixer = rtc.AudioMixer(48000, 1, blocksize=4800, capacity=1)
            await mixer.aclose()
            return room, track
        asyncio.run(main())
        official = [m for m, mod in sys.modules.items()
                    if m.startswith("livekit.rtc") and not mod.__name__.startswith("aiolivekit")]
        print("official:", official)
        print("native:", native_mapped())
        try:
            import livekit.rtc._ffi_client
        except ModuleNotFoundError:
            print("no _ffi_client")
    """, python=AGENTS_PYTHON, switch="1"))
    assert "official: []" in out
    assert "native: []" in out
    assert "no _ffi_client" in out


@needs_agents_venv
def test_install_after_the_official_sdk_was_imported_raises() -> None:
    out = ok(run("""
        import livekit.rtc.room
        import aiolivekit.compat as compat
        try:
            compat.install()
        except compat.CompatInstallError as exc:
            print(exc)
    """, python=AGENTS_PYTHON))
    assert "the official livekit.rtc is already imported in this process (livekit.rtc" in out
