"""``livekit.rtc._proto.e2ee_pb2``: encryption enums."""

from __future__ import annotations

from typing import NoReturn

from ...types import EncryptionState, EncryptionType
from ...types_ext import KeyDerivationFunction
from . import export, missing

__all__ = export(globals(), EncryptionState=EncryptionState, EncryptionType=EncryptionType,  # noqa: PLE0605
                 KeyDerivationFunction=KeyDerivationFunction)


def __getattr__(name: str) -> NoReturn:
    missing("e2ee_pb2", name)
