"""ForwardingOptions: the one record of the SFU's forwarding switches, carried by the
server configuration (defaults, environment, validation)."""

from __future__ import annotations

import dataclasses

import pytest

from aiolivekit.server import DevServer, ForwardingOptions, ServerConfig


def test_defaults_are_every_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOLIVEKIT_READ_BATCH_MS", raising=False)
    monkeypatch.delenv("AIOLIVEKIT_SOCKET_READER", raising=False)
    options = ForwardingOptions()
    assert (options.fast_path, options.fast_out, options.fanout, options.raw_receive,
            options.sync_rtcp, options.socket_reader) == (True,) * 6
    assert options.read_batch_window == 0.005
    assert ServerConfig().forwarding == options
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.fanout = False  # type: ignore[misc]


def test_environment_gives_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOLIVEKIT_READ_BATCH_MS", "12")
    monkeypatch.setenv("AIOLIVEKIT_SOCKET_READER", "0")
    options = ForwardingOptions()
    assert options.read_batch_window == pytest.approx(0.012)
    assert options.socket_reader is False
    # an explicit value wins over the environment
    assert ForwardingOptions(read_batch_window=0.0, socket_reader=True).socket_reader is True


@pytest.mark.parametrize("kwargs, error, text", [
    ({"read_batch_window": -0.001}, ValueError, "0..100 ms"),
    ({"read_batch_window": 0.5}, ValueError, "0..100 ms"),
    ({"read_batch_window": "5"}, TypeError, "seconds"),
    ({"read_batch_window": True}, TypeError, "seconds"),
    ({"fanout": 1}, TypeError, "fanout must be a bool"),
    ({"fast_path": None}, TypeError, "fast_path must be a bool"),
])
def test_bad_values_raise(kwargs: dict[str, object], error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        ForwardingOptions(**kwargs)  # type: ignore[arg-type]


def test_dev_server_carries_them() -> None:
    options = ForwardingOptions(fanout=False, read_batch_window=0.0)
    server = DevServer(forwarding=options)
    assert server._config.forwarding is options
    assert DevServer()._config.forwarding == ForwardingOptions()
    with pytest.raises(TypeError, match="forwarding must be ForwardingOptions"):
        DevServer(forwarding={"fanout": False})  # type: ignore[arg-type]
