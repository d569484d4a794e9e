"""`chassis.memory`: freed heap kept for reuse, so a busy service stops faulting pages in.

Each case runs in a child process (the allocator's settings are process-wide): it writes
access lines on an event loop as a busy gateway does - the chassis' writer thread frees them
in batches - and counts the page faults of the steady state.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PROBE = textwrap.dedent(
    """
    import asyncio, os, resource, sys
    from chassis.access import record_request
    from chassis.logging import configure_logging
    from chassis.memory import keep_freed_memory
    from chassis.metrics import RequestMetrics

    print(keep_freed_memory(int(sys.argv[1])))
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the lines go nowhere
    configure_logging("probe")
    metrics = RequestMetrics("probe")

    async def batches(n):
        for _ in range(n):  # 2000 lines, then the writer's batch is written and freed
            for _ in range(2000):
                record_request(metrics, "GET", "r", "/p", 200, 0.001, None, {"upstream": "u"})
            await asyncio.sleep(0.06)

    async def main():
        await batches(10)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        await batches(30)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    asyncio.run(main())
    """
)


def _probe(trim_mib: int) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(trim_mib)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_means_no_page_faults_in_the_steady_state() -> None:
    applied, faults = _probe(32)
    assert applied == "True"
    # glibc's defaults faulted 0 to ~3500 pages in these 60000 lines, by how the heap lay
    assert faults < 50, f"{faults} page faults with freed memory kept"


def test_zero_leaves_the_allocator_alone() -> None:
    from chassis.memory import keep_freed_memory

    assert keep_freed_memory(0) is False
