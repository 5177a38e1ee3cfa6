"""Compiled inner loops of the frame analysis (numba), for the per-frame work that numpy
could only do as a dozen small array operations and temporary arrays.

Most frames of a screen recording are identical to the one before, or differ by codec
noise in a band or two; a 720p frame decodes in ~0.8 ms. In numpy, finding the bands,
rescaling them (a strided multiply-add per tap), comparing them with the previous picture
and recomputing cell means cost ~0.5 ms a changed frame (bench/RESULTS.md). Here each is
one pass: ``changed_bands`` compares two frames row by row, ``update_band`` computes each
analysis pixel's exact integer area sum, looks up its gray level, compares it with the
pixel it replaces and writes it, and ``cell_means`` sums the cells a band touches.

Compiled on first use and cached beside this module (numba's ``cache=True``; where that
folder is read-only, in numba's per-user cache), so a build pays the compilation once per
installation, not once per run: loading numba and the cached code costs ~1 CPU second per
process (bench/RESULTS.md).
"""
from __future__ import annotations

import numba
import numpy as np


def _compiled(function):
    """njit, cached when numba finds a writable cache folder, else compiled per process."""
    try:
        return numba.njit(cache=True, nogil=True, boundscheck=False)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, boundscheck=False)(function)


@_compiled
def changed_bands(prev: np.ndarray, cur: np.ndarray, bands: np.ndarray, gap: int) -> int:
    """Where two frames (2-D arrays of machine words, same shape) differ, as bands of rows:
    rows that differ, split where more than ``gap`` rows apart. Writes (first row, last row,
    first word, last word) of each band into ``bands`` (at least as many rows as the frames)
    and returns how many there are; 0 when the frames are identical. A row is tested with
    one OR over its words (vectorised); only differing rows are scanned for their ends."""
    count = 0
    for y in range(cur.shape[0]):
        a = prev[y]
        b = cur[y]
        acc = a[0] ^ b[0]
        for x in range(1, a.shape[0]):
            acc |= a[x] ^ b[x]
        if acc == 0:
            continue
        lo = 0
        while a[lo] == b[lo]:
            lo += 1
        hi = a.shape[0] - 1
        while a[hi] == b[hi]:
            hi -= 1
        if count and y - bands[count - 1, 1] <= gap:
            bands[count - 1, 1] = y
            bands[count - 1, 2] = min(bands[count - 1, 2], lo)
            bands[count - 1, 3] = max(bands[count - 1, 3], hi)
        else:
            bands[count, 0] = y
            bands[count, 1] = y
            bands[count, 2] = lo
            bands[count, 3] = hi
            count += 1
    return count


@_compiled
def update_band(source: np.ndarray, picture: np.ndarray, changed: np.ndarray,
                y_group: np.ndarray, x_group: np.ndarray, table: np.ndarray,
                y0: int, y1: int, x0: int, x1: int, oy: int, ox: int, noise: int) -> bool:
    """Recompute analysis pixels [y0:y1, x0:x1] of ``picture`` from the source luma plane.

    The weights repeat in groups: p source pixels make q analysis pixels, output j of a
    group weighing source t by ``group[t, j]`` (luma.py). Each analysis row is the weighted
    sum of its source rows (contiguous), then of its columns, then ``table[sum]``: the
    same exact integers as AreaScaler.block. Where a pixel moves by more than ``noise``,
    ``changed[y - oy, x - ox]`` is set. Returns whether any was.
    """
    py, qy = y_group.shape
    px, qx = x_group.shape
    gx0 = x0 // qx
    groups = (x1 + qx - 1) // qx - gx0
    sx0 = gx0 * px
    width = groups * px
    skip = x0 - gx0 * qx  # outputs of the first group left of x0
    rows = np.empty(width, np.int32)
    sums = np.empty(groups * qx, np.int32)
    values = np.empty(x1 - x0, np.int32)
    limit = np.int32(noise)
    moved = np.uint8(0)
    for y in range(y0, y1):
        g, j = divmod(y, qy)
        first = True
        for t in range(py):  # the weighted source rows: contiguous, vectorised
            weight = np.int32(y_group[t, j])
            if weight != 0:
                line = source[g * py + t, sx0:sx0 + width]
                if first:
                    for s in range(width):
                        rows[s] = weight * np.int32(line[s])
                    first = False
                else:
                    for s in range(width):
                        rows[s] += weight * np.int32(line[s])
        sums[:] = 0
        for jj in range(qx):  # then the columns, output jj of every group
            for t in range(px):
                weight = np.int32(x_group[t, jj])
                if weight != 0:
                    for k in range(groups):
                        sums[k * qx + jj] += weight * rows[k * px + t]
        for i in range(x1 - x0):  # the lookups alone: a loop with a gather does not vectorise
            values[i] = table[sums[skip + i]]
        out = picture[y, x0:x1]
        marks = changed[y - oy, x0 - ox:x1 - ox]
        for i in range(x1 - x0):
            step = values[i] - np.int32(out[i])
            differs = np.uint8((step > limit) | (step < -limit))
            marks[i] |= differs != 0
            moved |= differs
            out[i] = np.uint8(values[i])
    return moved != 0


@_compiled
def cell_means(picture: np.ndarray, cy0: int, cy1: int, cx0: int, cx1: int, cell: int, means: np.ndarray) -> None:
    """The mean gray of cells [cy0:cy1, cx0:cx1] (``cell`` x ``cell`` pixels) of ``picture``
    into ``means``: the cell's sum over ``cell``², rounded half to even; a cell cut by the
    picture's edge sums the pixels it has (as if the picture were padded with zeros)."""
    height, width = picture.shape
    area = cell * cell
    sums = np.zeros((cy1 - cy0, cx1 - cx0), np.int32)
    for y in range(cy0 * cell, min(cy1 * cell, height)):
        line = picture[y]
        row = sums[y // cell - cy0]
        for cx in range(cx1 - cx0):
            start = (cx0 + cx) * cell
            total = np.int32(0)
            for x in range(start, min(start + cell, width)):
                total += line[x]
            row[cx] += total
    for cy in range(cy1 - cy0):
        for cx in range(cx1 - cx0):
            whole, rest = divmod(sums[cy, cx], area)
            if rest * 2 > area or (rest * 2 == area and whole % 2 == 1):
                whole += 1
            means[cy0 + cy, cx0 + cx] = whole


def warm_up() -> None:
    """Compile (and cache) every variant a build can call: frames as 8-, 4-, 2- and 1-byte
    words, planes with and without row padding. For images that install sopline read-only
    (ci/Dockerfile), so no run compiles."""
    plane = np.zeros((8, 48), np.uint8)
    for view in (plane, plane[:, :40]):
        for size in (8, 4, 2, 1):
            words = view.view(f"u{size}")
            changed_bands(words, words, np.empty((8, 4), np.int64), 1)
        group = np.ones((1, 1), np.int32)
        update_band(view, np.zeros((8, 40), np.uint8), np.zeros((8, 40), bool), group, group,
                    np.arange(256).astype(np.uint8), 0, 8, 0, 40, 0, 0, 24)
        cell_means(view, 0, 1, 0, 5, 8, np.zeros((1, 5), np.uint8))
