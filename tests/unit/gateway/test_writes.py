"""`gateway.writes`: the writes of one loop turn go out together at its end, in order."""

from __future__ import annotations

import asyncio

from gateway.writes import WriteBatch, batch_for


class Sink:
    def __init__(self, closing: bool = False) -> None:
        self.out: list[bytes] = []
        self.closing = closing

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return self.closing


async def test_writes_wait_for_the_end_of_the_turn_and_keep_their_order() -> None:
    batch = WriteBatch(asyncio.get_running_loop())
    a, b, gone = Sink(), Sink(), Sink(closing=True)
    batch.write(a, b"1")
    batch.write(b, b"x")
    batch.write(gone, b"lost")  # closed meanwhile: dropped, not an error
    batch.write(a, b"2")
    assert a.out == [] and b.out == []  # nothing yet: the turn is not over
    await asyncio.sleep(0)
    assert a.out == [b"1", b"2"] and b.out == [b"x"] and gone.out == []
    batch.write(a, b"3")
    batch.flush()  # a direct writer flushes first: nothing held can be overtaken
    assert a.out == [b"1", b"2", b"3"]
    await asyncio.sleep(0)
    assert a.out == [b"1", b"2", b"3"]  # the turn's own flush finds nothing left


async def test_a_failing_write_costs_the_others_nothing() -> None:
    class Broken(Sink):
        def write(self, data: bytes) -> None:
            raise RuntimeError("broken")

    batch = WriteBatch(asyncio.get_running_loop())
    ok = Sink()
    batch.write(Broken(), b"x")
    batch.write(ok, b"y")
    batch.flush()
    assert ok.out == [b"y"]


async def test_one_batch_per_loop() -> None:
    loop = asyncio.get_running_loop()
    assert batch_for(loop) is batch_for(loop)
    other = asyncio.new_event_loop()
    try:
        assert batch_for(other) is not batch_for(loop)
    finally:
        other.close()
