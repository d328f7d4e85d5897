"""The machine's audio devices (``PlatformAudio``, ``MediaDevices``): the records are
real; the device objects raise ``UnsupportedOptionError``. aiolivekit has no native audio
device layer, and no device library (the official ``MediaDevices`` uses ``sounddevice``)
among its dependencies; capture with your own and push frames to an ``AudioSource``
(``AudioProcessingModule`` does the echo cancellation). Issue 15."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import UnsupportedOptionError

__all__ = [
    "BLOCKSIZE",
    "DEFAULT_CHANNELS",
    "DEFAULT_SAMPLE_RATE",
    "FRAME_SAMPLES",
    "AudioDeviceInfo",
    "InputCapture",
    "MediaDevices",
    "OutputPlayer",
    "PlatformAudio",
    "PlatformAudioError",
    "PlatformAudioOptions",
    "PlatformAudioSource",
]

logger = logging.getLogger(__name__)

ISSUE_DEVICES = 15
DEFAULT_SAMPLE_RATE = 48000
DEFAULT_CHANNELS = 1
FRAME_SAMPLES = 480
BLOCKSIZE = 4800


def _unsupported(what: str) -> NoReturn:
    raise UnsupportedOptionError(what, "used", issue=ISSUE_DEVICES,
                                 detail="platform audio devices are not available in "
                                        "aiolivekit; capture with your own library and "
                                        "push frames to an AudioSource")


class PlatformAudioError(Exception):
    """An audio device error."""


@dataclass
class AudioDeviceInfo:
    index: int
    name: str
    id: str


@dataclass
class PlatformAudioOptions:
    echo_cancellation: bool = True
    noise_suppression: bool = True
    auto_gain_control: bool = True
    prefer_hardware: bool = False


class PlatformAudioSource:
    """Microphone audio through the native device module; raises."""

    def __init__(self, ffi_handle: Any, info: Any) -> None:
        _unsupported("PlatformAudioSource")

    def close(self) -> None:
        _unsupported("PlatformAudioSource.close")


class PlatformAudio:
    """The native audio device module; raises."""

    def __init__(self) -> None:
        _unsupported("PlatformAudio")

    def recording_devices(self) -> list[AudioDeviceInfo]:
        _unsupported("PlatformAudio.recording_devices")

    def playout_devices(self) -> list[AudioDeviceInfo]:
        _unsupported("PlatformAudio.playout_devices")

    def set_recording_device(self, device_id: str) -> None:
        _unsupported("PlatformAudio.set_recording_device")

    def set_playout_device(self, device_id: str) -> None:
        _unsupported("PlatformAudio.set_playout_device")

    def create_audio_source(self, options: PlatformAudioOptions | None = None
                            ) -> PlatformAudioSource:
        _unsupported("PlatformAudio.create_audio_source")

    def close(self) -> None:
        _unsupported("PlatformAudio.close")


@dataclass
class InputCapture:
    """A running microphone capture of ``MediaDevices.open_input``; raises."""

    source: Any
    input_stream: Any
    task: Any
    apm: Any
    delay_estimator: Any

    def __post_init__(self) -> None:
        _unsupported("InputCapture")

    async def aclose(self) -> None:
        _unsupported("InputCapture.aclose")


class OutputPlayer:
    """Speaker playback of ``MediaDevices.open_output``; raises."""

    def __init__(self, *, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 num_channels: int = DEFAULT_CHANNELS, blocksize: int = BLOCKSIZE,
                 apm_for_reverse: Any = None, output_device: int | None = None,
                 delay_estimator: Any = None) -> None:
        _unsupported("OutputPlayer")

    async def add_track(self, track: Any) -> None:
        _unsupported("OutputPlayer.add_track")

    async def remove_track(self, track: Any) -> None:
        _unsupported("OutputPlayer.remove_track")

    async def start(self) -> None:
        _unsupported("OutputPlayer.start")

    async def aclose(self) -> None:
        _unsupported("OutputPlayer.aclose")


class MediaDevices:
    """Microphone and speaker access (the official one uses ``sounddevice``); raises."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop | None = None,
                 input_sample_rate: int = DEFAULT_SAMPLE_RATE,
                 output_sample_rate: int = DEFAULT_SAMPLE_RATE,
                 num_channels: int = DEFAULT_CHANNELS, blocksize: int = BLOCKSIZE) -> None:
        _unsupported("MediaDevices")

    def list_input_devices(self) -> list[dict[str, Any]]:
        _unsupported("MediaDevices.list_input_devices")

    def list_output_devices(self) -> list[dict[str, Any]]:
        _unsupported("MediaDevices.list_output_devices")

    def default_input_device(self) -> int | None:
        _unsupported("MediaDevices.default_input_device")

    def default_output_device(self) -> int | None:
        _unsupported("MediaDevices.default_output_device")

    def open_input(self, *, enable_aec: bool = True, noise_suppression: bool = True,
                   high_pass_filter: bool = True, auto_gain_control: bool = True,
                   input_device: int | None = None, queue_capacity: int = 50,
                   input_channel_index: int | None = None) -> InputCapture:
        _unsupported("MediaDevices.open_input")

    def open_output(self, *, output_device: int | None = None) -> OutputPlayer:
        _unsupported("MediaDevices.open_output")
