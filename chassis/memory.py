"""How the C allocator gives freed memory back: kept for reuse instead of at once.

Why: an event-loop service holds each request's small buffers (its access line among them)
until a batch is written, frees them together, and allocates the same amount again within
milliseconds. glibc's defaults return the freed top of the heap to the kernel as soon as it
exceeds 128 KiB (and adapt the thresholds as they go), so each batch faulted its pages in again:
measured on the gateway at 17k requests/s, 0.2-0.6 page faults per request, and none with the
thresholds below (tests/bench/README.md). The cost is memory kept: at most `trim_mib` of free
heap stays with the process.
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(trim_mib: int, mmap_mib: int = 8) -> bool:
    """Keep up to `trim_mib` MiB of freed heap in the process; serve blocks below `mmap_mib`
    MiB from the heap (setting one threshold turns glibc's adaptation of the other off, and a
    log batch joined for its write must not be mapped and unmapped each time).

    False (nothing changed) with `trim_mib` 0 or where the C library has no glibc `mallopt`
    (musl, macOS)."""
    if trim_mib <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_TRIM_THRESHOLD, trim_mib << 20)) and bool(
        mallopt(_M_MMAP_THRESHOLD, mmap_mib << 20)
    )
    if not applied:
        log.warning("allocator thresholds not applied", extra={"trim_mib": trim_mib})
    return applied
