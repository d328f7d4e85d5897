"""Only what pyproject.toml cannot say: ship ``aiolivekit_as_livekit_rtc.pth``.

The file goes to the root of the wheel, that is into site-packages, where the interpreter
runs it at start: with ``AIOLIVEKIT_AS_LIVEKIT_RTC=1`` it calls
``aiolivekit.compat.startup_hook()`` (``livekit.rtc`` becomes aiolivekit), otherwise it does
nothing. An editable install (``pip install -e``) gets it too.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "aiolivekit_as_livekit_rtc.pth"
PTH_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", PTH)


class BuildPyWithPth(build_py):
    """build_py that also puts the ``.pth`` file at the root of the wheel."""

    def run(self) -> None:
        super().run()
        self.copy_file(PTH_SOURCE, os.path.join(self._pth_dir(), PTH), preserve_mode=False)

    def _pth_dir(self) -> str:
        if getattr(self, "editable_mode", False):
            # setuptools' editable_wheel builds the packages elsewhere and installs the wheel
            # root from `install.install_lib` (the unpacked editable wheel)
            return str(self.get_finalized_command("install").install_lib)
        return str(self.build_lib)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH))
        return outputs


setup(cmdclass={"build_py": BuildPyWithPth})
