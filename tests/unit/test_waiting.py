"""tests/support/waiting.py: the one polling helper every test uses."""

from __future__ import annotations

import itertools

import pytest

from tests.support.waiting import WaitTimeout, wait_until, wait_until_async


def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert wait_until(lambda: next(calls) >= 3 and "ready", 5, "the third call") == "ready"


def test_times_out_naming_what_it_waited_for() -> None:
    with pytest.raises(WaitTimeout, match=r"after 0.05s waiting for the impossible"):
        wait_until(lambda: None, 0.05, "the impossible", interval=0.01)
    assert issubclass(WaitTimeout, AssertionError)  # pytest reports a failed expectation


def test_backs_off_up_to_max_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("tests.support.waiting.time.sleep", slept.append)
    calls = itertools.count()
    wait_until(lambda: next(calls) == 5, 60, "five calls", interval=0.05, max_interval=0.3)
    assert slept == [0.05, 0.1, 0.2, 0.3, 0.3]


def test_an_exception_from_the_condition_is_not_swallowed() -> None:
    def boom() -> bool:
        raise KeyError("x")

    with pytest.raises(KeyError):
        wait_until(boom, 5, "never")


async def test_async_awaits_a_coroutine_condition_and_accepts_a_plain_one() -> None:
    calls = itertools.count()

    async def third() -> int | None:
        n = next(calls)
        return n if n >= 2 else None

    assert await wait_until_async(third, 5, "the third call", interval=0.001) == 2
    assert await wait_until_async(lambda: 7, 5, "a plain callable") == 7
    with pytest.raises(WaitTimeout, match="waiting for nothing"):
        await wait_until_async(lambda: False, 0.02, "nothing", interval=0.005)
