"""`python -m tests.bench.inproc` keeps working: both paths answer, and a figure comes out."""

from __future__ import annotations

import re

import pytest

from gateway import http1
from tests.bench import inproc


@pytest.mark.parametrize("extra", [[], ["--task"], ["--no-access-log"]])
def test_the_in_process_bench_runs(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    start_now = http1.Http1Transport.start
    assert inproc.main(["--requests", "200", "--runs", "1", *extra]) == 0
    out = capsys.readouterr().out
    figure = re.search(r"([0-9.]+) us per request", out)
    assert figure is not None and float(figure.group(1)) > 0, out
    assert ("task path" in out) == ("--task" in extra)
    assert http1.Http1Transport.start is start_now  # the task path's patch is undone


def test_cpu_time_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert inproc.main(["--requests", "200", "--runs", "1", "--cpu"]) == 0
    assert "thread CPU time" in capsys.readouterr().out


def test_opcodes_are_counted_per_function(capsys: pytest.CaptureFixture[str]) -> None:
    assert inproc.main(["--opcodes", "20"]) == 0
    out = capsys.readouterr().out
    total = re.search(r"bytecodes per request: ([0-9.]+)", out)
    assert total is not None and float(total.group(1)) > 0, out
    assert "gateway/front.py:on_header" in out and "tests/bench" not in out
