"""Analysis pixels from the decoded luma plane, computed only where the frame changed.

The frame analysis looks at a small gray picture (at most 960x540). Producing it for every
frame with ffmpeg's filters (extract the luma plane, area-scale it, stretch TV range to full
range) cost more CPU than decoding a 720p recording (bench/RESULTS.md), and most of it was
spent on pixels identical to the previous frame's: a screen recording changes a caret, a
line, a dialog at a time. Here the decoder's own luma plane is compared with the previous
one (machine words, no copy), and only the analysis pixels whose source pixels changed are
recomputed, with the same area average and range stretch, into a picture kept between
frames. An unchanged source pixel leaves every analysis pixel it feeds unchanged, so the
picture is always the whole frame's. For ratios in small integer groups (1280 -> 960,
1920 -> 960) a compiled kernel (_tiles.c, built at install where a C compiler is) does the
compare, the rescale and the cell means in one pass per frame; numpy does the same otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import numpy as np

try:  # the compiled kernel (pipeline/_tiles.c); without a C compiler at install, numpy does it all
    from . import _tiles
except ImportError:
    _tiles = None

# Limited-range luma 16..235 stretched to 0..255 (rounded), as ffmpeg's gray conversion does,
# so the analysis thresholds mean the same gray levels for every recording.
TV_TO_PC = np.clip(np.floor((np.arange(256) - 16) * 255 / 219 + 0.5), 0, 255).astype(np.uint8)


MAX_GROUP = 16  # source pixels per repeating group worth exact integer weights
TILE_MIN_SOURCE = (16, 64)  # source rows, columns: a tile is at least an x264 macroblock row tall


@dataclass(frozen=True)
class _Axis:
    """Area weights of one axis: analysis pixel i is the sum of taps[i, k] * source[first[i] + k]."""

    first: np.ndarray  # (n_analysis,) first source pixel of each analysis pixel
    last: np.ndarray  # (n_analysis,) last source pixel of each analysis pixel
    taps: np.ndarray  # (n_analysis, k) float32 weights, zero-padded; each row sums to 1
    # When p source pixels make q analysis pixels in repeating groups (1280 -> 960: 4 -> 3;
    # 1920 -> 960: 2 -> 1), every weight is a multiple of 1/p: the (p, q) integer weights
    # of one group, which sum to p per analysis pixel. Else None.
    group: np.ndarray | None


def _axis(source: int, analysis: int) -> _Axis:
    """Each analysis pixel averages the source span [i*s, (i+1)*s), s = source/analysis,
    every source pixel weighted by how much of it lies in the span (a box filter). Spans
    are counted in units of 1/analysis source pixels, so every overlap is an exact integer."""
    i = np.arange(analysis, dtype=np.int64)
    first = i * source // analysis
    last = np.minimum(source, -(-(i + 1) * source // analysis)) - 1
    j = first[:, None] + np.arange(int((last - first).max()) + 1)  # candidate source pixels
    overlap = np.clip(np.minimum((i[:, None] + 1) * source, (j + 1) * analysis)
                      - np.maximum(i[:, None] * source, j * analysis), 0, None)
    taps = (overlap / source).astype(np.float32)  # overlap / analysis, over the span's s
    group = None
    common = math.gcd(source, analysis)
    p, q = source // common, analysis // common
    if p <= MAX_GROUP:  # then q <= p too: analysis pixels are never more than source ones
        group = np.zeros((p, q), np.int64)
        for n in range(q):  # weight * p = overlap / common, a whole number
            width = int(last[n] - first[n]) + 1
            group[first[n]:first[n] + width, n] = overlap[n, :width] // common
    return _Axis(first, last, taps, group)


class TileKernel(NamedTuple):
    """The compiled analysis of a frame (_tiles.c): ``update`` recomputes what changed, tile
    by tile; ``blobs`` groups the cells it marked and clears the marks for the next frame."""

    update: Callable
    blobs: Callable


class AreaScaler:
    """Source luma (height x width) to analysis pixels, block by block.

    ``levels`` maps the averaged 8-bit value to the analysis gray level (TV_TO_PC for
    limited-range video, None for full range). An analysis size equal to the source size
    with no levels is the identity: the frames are analysis frames already.
    """

    def __init__(self, source_hw: tuple[int, int], analysis_hw: tuple[int, int], levels: np.ndarray | None = None,
                 compiled: bool = True):
        self.source_hw, self.analysis_hw = tuple(source_hw), tuple(analysis_hw)
        self.compiled = compiled and _tiles is not None
        self.levels = levels
        self.identity = self.source_hw == self.analysis_hw and levels is None
        self._y = _axis(self.source_hw[0], self.analysis_hw[0])
        self._x = _axis(self.source_hw[1], self.analysis_hw[1])
        if self._y.group is not None and self._x.group is not None:
            # an integer sum of p_y * p_x weighted pixels -> its analysis gray level: the mean
            # rounded half up, then the range stretch, in one lookup
            area = self._y.group.shape[0] * self._x.group.shape[0]
            means = (np.arange(255 * area + 1) + area // 2) // area
            self._sums = (means if levels is None else levels[means]).astype(np.uint8)
            self._plans = (_plan(self._y.group), _plan(self._x.group))
        # analysis_span as lookups: for each source pixel, the first analysis pixel it feeds
        # and one past the last
        self._span_maps = tuple(
            (np.searchsorted(ax.last, np.arange(n)), np.searchsorted(ax.first, np.arange(n), "right"))
            for ax, n in ((self._y, self.source_hw[0]), (self._x, self.source_hw[1])))

    def tile_kernel(self, cell: int) -> TileKernel | None:
        """The compiled analysis of a frame, tile by tile, for cells of ``cell`` analysis pixels:
        ``kernel.update(source, previous, picture, changed, cell_marks, means, recorded, noise, drift)``
        recomputes the analysis pixels, cell means and marks (set in ``changed`` for pixels that
        moved by more than ``noise``, in ``cell_marks`` for their cells) of the tiles where
        ``source`` differs from ``previous``. It returns None when no tile does, else (moved,
        (cy0, cy1, cx0, cx1), drifted): whether any pixel moved, the block of cells around those
        tiles, and ((cell, mean), ...) of their cells whose mean moved more than ``drift`` from
        ``recorded`` (which it updates). None when not compiled, or for a ratio without small
        integer groups: the numpy path then."""
        if not self.compiled or self.identity or self._y.group is None or self._x.group is None:
            return None
        sizes = []
        for group, least in zip((self._y.group, self._x.group), TILE_MIN_SOURCE):
            p, q = group.shape
            step = cell // math.gcd(q, cell)  # groups per whole number of cells
            sizes.append(step * max(1, -(-least // (step * p))))
        (py, qy), (px, qx) = self._y.group.shape, self._x.group.shape
        params = (np.ascontiguousarray(self._y.group, np.int64), np.ascontiguousarray(self._x.group, np.int64),
                  self._sums, py, qy, px, qx, *sizes, cell)
        return TileKernel(partial(_tiles.update_tiles, params), _tiles.blobs)

    def analysis_span(self, axis: int, lo: int, hi: int) -> tuple[int, int]:
        """Analysis pixels (a0, a1 exclusive) fed by source pixels lo..hi (inclusive) of an axis."""
        starts, stops = self._span_maps[axis]
        return int(starts[lo]), int(stops[hi])

    def block(self, source: np.ndarray, ys: slice, xs: slice) -> np.ndarray:
        """The analysis pixels [ys, xs] (uint8, a new array) of a source luma frame."""
        ay, ax = self._y, self._x
        if ay.group is not None and ax.group is not None:
            return self._grouped(source, ys, xs)
        sy0, sy1 = int(ay.first[ys.start]), int(ay.last[ys.stop - 1]) + 1
        sx0, sx1 = int(ax.first[xs.start]), int(ax.last[xs.stop - 1]) + 1
        rows = _resample(ax, source[sy0:sy1, sx0:sx1].astype(np.float32), xs, 1)
        out = np.floor(_resample(ay, rows, ys, 0) + 0.5).astype(np.uint8)
        return out if self.levels is None else self.levels[out]

    def _grouped(self, source: np.ndarray, ys: slice, xs: slice) -> np.ndarray:
        """Whole groups around the block, in exact integers: the weighted sum over p_y * p_x,
        rounded half up (what the float weights give, without their cost)."""
        (py, qy), (px, qx) = self._y.group.shape, self._x.group.shape
        gy0, gy1 = ys.start // qy, -(-ys.stop // qy)
        gx0, gx1 = xs.start // qx, -(-xs.stop // qx)
        patch = source[gy0 * py:gy1 * py, gx0 * px:gx1 * px]
        if py == qy == px == qx == 1:
            out = np.array(patch, np.uint8)
            return out if self.levels is None else self.levels[out]
        wide = np.uint16 if self._sums.size <= 2 ** 16 else np.uint32
        rows = _combine(patch, self._y.group, self._plans[0], 0, wide)
        sums = _combine(rows, self._x.group, self._plans[1], 1, wide)
        sums = sums[ys.start - gy0 * qy:ys.stop - gy0 * qy, xs.start - gx0 * qx:xs.stop - gx0 * qx]
        return np.take(self._sums, sums)

    def update(self, source: np.ndarray, picture: np.ndarray, ys: slice, xs: slice,
               changed: np.ndarray, origin: tuple[int, int], noise: int) -> bool:
        """Recompute the analysis pixels [ys, xs] of ``picture`` from ``source``; mark in
        ``changed`` (a block of the picture starting at ``origin``) those that moved by more
        than ``noise``. Returns whether any did."""
        new, old = self.block(source, ys, xs), picture[ys, xs]
        moved = (np.maximum(new, old) - np.minimum(new, old)) > noise
        oy, ox = origin
        changed[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox] |= moved
        picture[ys, xs] = new
        return bool(moved.any())

    def full(self, source: np.ndarray) -> np.ndarray:
        """The whole analysis frame."""
        h, w = self.analysis_hw
        return self.block(source, slice(0, h), slice(0, w))


def compiled_kernel_available() -> bool:
    """Whether the install compiled pipeline/_tiles.c (else the numpy path runs)."""
    return _tiles is not None


def _plan(group: np.ndarray) -> tuple[tuple[tuple[int, int], ...], ...]:
    """For each output pixel j of a group, its (source offset, integer weight) pairs."""
    return tuple(tuple((t, int(group[t, j])) for t in np.flatnonzero(group[:, j]).tolist())
                 for j in range(group.shape[1]))


def _combine(data: np.ndarray, group: np.ndarray, plan, axis: int, wide) -> np.ndarray:
    """Integer-weighted sums along ``axis`` of data made of whole groups of p pixels:
    output pixel j of each group is sum_t group[t, j] * data[t::p], strided, no gathers."""
    p, q = group.shape
    if p == q == 1:
        return data.astype(wide)
    shape = list(data.shape)
    shape[axis] = data.shape[axis] // p * q
    out = np.empty(shape, wide)
    for j, taps in enumerate(plan):
        acc = out[j::q] if axis == 0 else out[:, j::q]
        for n, (t, weight) in enumerate(taps):
            part = data[t::p] if axis == 0 else data[:, t::p]
            if n == 0:
                np.multiply(part, weight, out=acc, dtype=wide)
            elif weight == 1:
                np.add(acc, part, out=acc, dtype=wide)
            else:
                np.add(acc, np.multiply(part, weight, dtype=wide), out=acc)
    return out


def _resample(ax: _Axis, data: np.ndarray, span: slice, axis: int) -> np.ndarray:
    """Analysis samples ``span`` along ``axis`` of float data that starts at the span's first
    source pixel and ends at its last: a gather per tap, for ratios without small groups."""
    data = np.moveaxis(data, axis, -1)
    offsets = ax.first[span] - int(ax.first[span.start])
    taps = ax.taps[span]
    out = data[..., offsets] * taps[:, 0]
    for k in range(1, taps.shape[1]):
        out += data[..., np.minimum(offsets + k, data.shape[-1] - 1)] * taps[:, k]
    return np.moveaxis(out, -1, axis)
