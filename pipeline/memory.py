"""Keeping the speech process's resident memory close to what it really holds (glibc only).

glibc raises its mmap threshold each time a large block is freed, so after the
first piece of narration the next piece's features (tens of MB) are carved from
the heap, whose freed pages are seldom given back, and the process keeps its
high-water mark for the rest of the build, beside the video pass. Pinning the
threshold keeps such buffers in their own mappings, returned when freed; trimming
hands back what a finished recording let go (the process lives on between
recordings). Elsewhere both are no-ops. Measured on a 10-minute 1080p build
(bench/RESULTS.md): peak of the process tree 608 -> 556 MB for ~2 s more system time.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_MMAP_THRESHOLD = -3


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def map_large_buffers(threshold: int) -> None:
    """Allocate blocks of ``threshold`` bytes and more in their own mappings, always
    (each costs a mapping and its page faults: keep per-window buffers under it)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)


def give_back_freed() -> None:
    """Return the heap's free pages to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
