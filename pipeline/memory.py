"""Keeping the speech process's resident memory close to what it really holds (glibc only).

glibc raises its mmap threshold each time a large block is freed, so after the
first piece of narration the next piece's features (tens of MB) are carved from
the heap, whose freed pages are seldom given back, and the process keeps its
high-water mark for the rest of the build, beside the video pass. Pinning the
threshold keeps such buffers in their own mappings, returned when freed; trimming
hands back what a finished recording let go (the process lives on between
recordings). Elsewhere both are no-ops. Measured on a 10-minute 1080p build
(bench/RESULTS.md): peak of the process tree 608 -> 556 MB.

Pinning the mmap threshold also pins glibc's trim threshold, at 128 KB: the top of
the heap was then handed back after nearly every decoding window and faulted in
again for the next, twice the page faults of the default and 3-5 s more wall time
per 10 minutes of narration (round 9). So the heap keeps up to ``keep_free`` bytes
of free top, and large buffers alone come and go.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def map_large_buffers(threshold: int, keep_free: int) -> None:
    """Allocate blocks of ``threshold`` bytes and more in their own mappings, always
    (each costs a mapping and its page faults: keep per-window buffers under it), and
    give the heap's free top back only beyond ``keep_free`` bytes."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)
        libc.mallopt(_M_TRIM_THRESHOLD, keep_free)


def limit_arenas(count: int) -> None:
    """Let the process's threads share at most ``count`` malloc arenas. By default glibc
    gives busy threads (CTranslate2's, onnxruntime's) arenas of their own, each keeping its
    own free memory: two speech threads held ~70 MB more, and ran no faster (round 11).
    Call before the threads start."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, count)


def give_back_freed() -> None:
    """Return the heap's free pages to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
