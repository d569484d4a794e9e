"""gateway.timers: per-request deadlines without one loop timer each."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from gateway.timers import Timers


class _Fired(list[object]):
    """What the timers fired, and an event set once `want` of them have."""

    def __init__(self, want: int) -> None:
        super().__init__()
        self.want = want
        self.all_in = asyncio.Event()

    def append(self, item: object) -> None:
        super().append(item)
        if len(self) >= self.want:
            self.all_in.set()

    async def wait(self, limit: float = 2.0) -> None:
        async with asyncio.timeout(limit):
            await self.all_in.wait()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_a_timer_fires_after_its_time_never_before(loop_factory: object) -> None:
    loop = loop_factory()  # type: ignore[operator]
    try:

        async def main() -> list[float]:
            timers = Timers(loop, resolution=0.01)
            late = _Fired(5)
            for delay in (0.0, 0.003, 0.012, 0.025, 0.05):
                when = loop.time() + delay
                timers.call_at(when, lambda w=when: late.append(loop.time() - w))
            await late.wait()
            return late  # type: ignore[return-value]

        late = loop.run_until_complete(main())
    finally:
        loop.close()
    assert all(lag >= -0.001 for lag in late), late  # the loop clock's own granularity
    assert all(lag < 0.5 for lag in late), late


async def test_many_timers_share_a_few_loop_timers() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop, resolution=0.05)
    scheduled: list[float] = []
    real_call_at = loop.call_at

    def counting_call_at(when: float, *args: object, **kwargs: object) -> asyncio.TimerHandle:
        scheduled.append(when)
        return real_call_at(when, *args, **kwargs)  # type: ignore[arg-type]

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        fired = _Fired(1000)
        base = loop.time() + 0.01
        for i in range(1000):
            timers.call_at(base + i * 0.00001, fired.append, i)  # all within 10 ms
        assert 1 <= len(scheduled) <= 2  # one slot, or two if the range crosses a boundary
        await fired.wait()
        assert sorted(fired) == list(range(1000))  # type: ignore[type-var]
    finally:
        del loop.call_at
    assert len(timers) == 0


async def test_a_cancelled_timer_never_fires_and_is_dropped_at_once() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop, resolution=0.005)
    fired = _Fired(1)
    kept = timers.call_later(0.01, fired.append, "kept")
    gone = timers.call_later(0.01, fired.append, "gone")
    gone.cancel()
    gone.cancel()  # twice is harmless
    assert kept.pending() and not gone.pending()
    assert len(timers) == 1
    await fired.wait()
    await asyncio.sleep(0.02)  # the cancelled one's slot has fired too by now
    assert fired == ["kept"]
    kept.cancel()  # after it fired: nothing to do


async def test_a_callback_may_cancel_another_of_its_slot() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop, resolution=0.05)
    fired = _Fired(2)
    when = loop.time() + 0.001
    second = None

    def first() -> None:
        fired.append("first")
        assert second is not None
        second.cancel()

    timers.call_at(when, first)
    second = timers.call_at(when, fired.append, "second")
    third = timers.call_at(when, fired.append, "third")
    await fired.wait()
    assert fired == ["first", "third"]
    assert not second.pending() and not third.pending()


async def test_a_failing_callback_is_reported_and_the_others_still_fire() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        timers = Timers(loop, resolution=0.005)
        fired = _Fired(1)
        when = loop.time()
        timers.call_at(when, lambda: 1 / 0)
        timers.call_at(when, fired.append, 1)
        await fired.wait()
    finally:
        loop.set_exception_handler(None)
    assert isinstance(reported[0]["exception"], ZeroDivisionError)


def test_the_resolution_must_be_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            Timers(loop, resolution=0)
    finally:
        loop.close()
