import logging

import pytest

from aiolivekit import EventEmitter


def test_on_decorator_and_order() -> None:
    em: EventEmitter[str] = EventEmitter()
    calls: list[tuple[str, tuple[object, ...]]] = []

    @em.on("x")
    def first(a: int, b: int) -> None:
        calls.append(("first", (a, b)))

    em.on("x", lambda a: calls.append(("second", (a,))))
    em.emit("x", 1, 2)
    assert calls == [("first", (1, 2)), ("second", (1,))]


def test_async_handler_refused() -> None:
    em: EventEmitter[str] = EventEmitter()

    async def handler() -> None:
        pass

    with pytest.raises(ValueError):
        em.on("x", handler)
    with pytest.raises(ValueError):
        em.once("x", handler)


def test_once_and_off_of_once() -> None:
    em: EventEmitter[str] = EventEmitter()
    seen: list[int] = []

    def handler(v: int) -> None:
        seen.append(v)

    em.once("x", handler)
    em.emit("x", 1)
    em.emit("x", 2)
    assert seen == [1]

    em.once("x", handler)
    em.off("x", handler)
    em.emit("x", 3)
    assert seen == [1]


def test_exception_logged_others_run(caplog: pytest.LogCaptureFixture) -> None:
    em: EventEmitter[str] = EventEmitter()
    seen: list[str] = []

    def bad() -> None:
        raise RuntimeError("boom")

    em.on("x", bad)
    em.on("x", lambda: seen.append("ok"))
    with caplog.at_level(logging.ERROR):
        em.emit("x")
    assert seen == ["ok"]
    assert "boom" in caplog.text


def test_varargs_handler_gets_everything_and_off_unknown_is_silent() -> None:
    em: EventEmitter[str] = EventEmitter()
    got: list[tuple[object, ...]] = []
    em.on("x", lambda *a: got.append(a))
    em.emit("x", 1, 2, 3)
    em.off("y", print)
    assert got == [(1, 2, 3)]
