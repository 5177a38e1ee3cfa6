"""Diff stage: per-frame change signal and changed-region blobs, streamed.

Each analysis frame is compared with the one before it. Pixels whose gray level
moved by more than NOISE_LEVEL count as changed (x264 at screen-recording
bitrates stays well under it on static text); changed pixels are pooled into
CELL x CELL cells and cells into 8-connected blobs. Each blob is classified
here, while its pixels are at hand, as a caret blink (a thin line) or part of a
pointer jump (two small look-alike blobs in one frame); the rest of the
filtering (ambient clocks, grouping into events) needs the whole timeline and
lives in keyframes.py.

In the build the frames are the decoder's luma planes at source size: the
comparison with the previous frame runs on them, and only the parts that differ
are turned into analysis pixels (luma.py) in a picture kept between frames, so an
unchanged frame costs one memory compare. The compiled kernel (_tiles.c) does
that, the cell means and the fade check tile by tile in one call; the numpy path
(bands of rows, machine words) computes the same integers where it is not built.

Memory is bounded by the screen size: only blobs of changed frames are kept,
and the ambient statistics are one counter per cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from .luma import AreaScaler

NOISE_LEVEL = 24  # gray levels; compression noise on static screens stays below
# ...except across an encoder keyframe: x264 at its default presets codes a static screen's
# text edges afresh there, up to 81 gray levels off in a few dozen pixels (CRF 28; 66 at the
# default CRF), which made a step of nothing in a silent recording and grew highlights. Real
# changes are text and panels, far over it. ultrafast (the corpus) codes keyframes alike.
KEYFRAME_NOISE_LEVEL = 96
DRIFT_LEVEL = 3  # a cell's mean gray moving this much is a (slow) change of what it shows
CELL = 8  # analysis pixels per cell side
POINTER_MAX_SRC_PX = 40  # a mouse pointer sprite fits in this many source pixels
CARET_MAX_WIDTH_PX = 3  # a blinking text caret is a line at most this wide (analysis px)
CARET_MAX_HEIGHT_SRC = 40  # ...and at most this tall (source px): one line of text


@dataclass(frozen=True)
class Blob:
    """One connected changed region of a frame, in analysis pixels (x1, y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int
    pixels: int
    cells: tuple[int, ...]  # flat indexes of the changed cells in the cell grid
    kind: str  # "content" | "caret" | "pointer"
    values: tuple[int, ...] = ()  # mean gray of each of those cells after the change

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclass(frozen=True)
class FrameDiff:
    """The change from frame index-1 to frame index (time index / fps)."""

    index: int
    blobs: tuple[Blob, ...]
    # cells whose mean gray drifted without any pixel crossing NOISE_LEVEL (a fade), with
    # their new mean: keeps each cell's history true to the screen for revert checks
    drift: tuple[tuple[int, int], ...] = ()


class AmbientCounter:
    """Counts, per cell, in how many distinct seconds it changed.

    A status-bar clock changes every second for the whole recording; a real step
    changes a region once or a few times. The counts decide which is which once the
    whole timeline is known.
    """

    def __init__(self, cells_shape: tuple[int, int], fps: float):
        self.shape = cells_shape
        self.fps = fps
        self.counts = np.zeros(cells_shape, np.int32)
        self._second = -1
        self._union = np.zeros(cells_shape, bool)
        self.seconds = 0

    def add(self, index: int, changed_cells: np.ndarray | None) -> None:
        second = int(index / self.fps)
        if second != self._second:
            self.counts += self._union
            self._union[:] = False
            self._second = second
            self.seconds = second + 1
        if changed_cells is not None:
            self._union |= changed_cells

    def finish(self) -> None:
        self.counts += self._union
        self._union[:] = False


def cells_shape(width: int, height: int) -> tuple[int, int]:
    return (-(-height // CELL), -(-width // CELL))


def _cell_sums(block: np.ndarray) -> np.ndarray:
    """Sum of each CELL x CELL cell of a uint8 block whose origin is on the cell grid; a cell
    cut by the frame's edge sums the pixels it has (as if the frame were padded with zeros)."""
    h, w = block.shape
    ch, cw = -(-h // CELL), -(-w // CELL)
    if h != ch * CELL or w != cw * CELL:
        padded = np.zeros((ch * CELL, cw * CELL), np.uint8)
        padded[:h, :w] = block
        block = padded
    rows = np.add.reduce(block.reshape(ch, CELL, cw * CELL), axis=1, dtype=np.uint16).reshape(ch, cw, CELL)
    sums = rows[:, :, 0].copy()
    for k in range(1, CELL):  # CELL adds of small arrays beat a reduction over a short last axis
        sums += rows[:, :, k]
    return sums


def _means(sums: np.ndarray) -> np.ndarray:
    # the sum of a cell is exact in float32 and CELL * CELL a power of two: this is the
    # float32 mean of the zero-padded cell, rounded half to even, as it always was
    return np.rint(sums.astype(np.float32) / (CELL * CELL)).astype(np.uint8)


def cell_means(frame: np.ndarray) -> np.ndarray:
    """Mean gray of every cell, flat: a coarse fingerprint of what each cell shows."""
    return _means(_cell_sums(np.ascontiguousarray(frame, np.uint8))).ravel()


def _update_means(picture: np.ndarray, means: np.ndarray, bands: list[tuple[slice, slice]]) -> None:
    """Recompute, in the 2-D grid ``means``, the cells that the bands of changed analysis
    pixels touch; every other cell kept its pixels, so its mean. Two bands far apart (a caret
    at the bottom, a clock at the top) cost their own cells, not the block between them."""
    height, width = picture.shape
    for ys, xs in bands:
        cy0, cy1, cx0, cx1 = ys.start // CELL, -(-ys.stop // CELL), xs.start // CELL, -(-xs.stop // CELL)
        cells = picture[cy0 * CELL:min(cy1 * CELL, height), cx0 * CELL:min(cx1 * CELL, width)]
        means[cy0:cy1, cx0:cx1] = _means(_cell_sums(cells))


BAND_GAP_PX = 32  # source rows: changes further apart than this are rescaled as separate bands


def _changed_cells(prev: np.ndarray, frame: np.ndarray, scaler: AreaScaler
                   ) -> tuple[tuple[int, int, int, int], list[tuple[slice, slice]]] | None:
    """Where two source frames differ, or None when they are identical. Returns the smallest
    block of whole analysis cells (rows cy0:cy1, columns cx0:cx1) outside which they are
    identical, and the analysis pixels that need recomputing, as bands: a caret at the bottom
    and a clock at the top make one tall block but two small bands. Compares machine words,
    not pixels: most frames of a screen recording are identical or differ in a small region."""
    # the widest word dividing a row (rows may be padded: a view needs only the last axis contiguous)
    k = next(k for k in (8, 4, 2, 1) if frame.shape[1] % k == 0)
    word = np.dtype(f"u{k}")
    differs = prev.view(word) != frame.view(word)
    if not differs.any():
        return None
    rows = np.flatnonzero(differs.any(axis=1))
    breaks = np.flatnonzero(np.diff(rows) > BAND_GAP_PX).tolist()
    bands = []
    for lo, hi in zip([0] + [b + 1 for b in breaks], breaks + [rows.size - 1]):
        r0, r1 = int(rows[lo]), int(rows[hi])
        cols = np.flatnonzero(differs[r0:r1 + 1].any(axis=0))
        bands.append((scaler.analysis_span(0, r0, r1),
                      scaler.analysis_span(1, int(cols[0]) * k, int(cols[-1]) * k + k - 1)))
    ay0, ay1 = min(b[0][0] for b in bands), max(b[0][1] for b in bands)
    ax0, ax1 = min(b[1][0] for b in bands), max(b[1][1] for b in bands)
    block = ay0 // CELL, -(-ay1 // CELL), ax0 // CELL, -(-ax1 // CELL)
    return block, [(slice(*ys), slice(*xs)) for ys, xs in bands]


_EIGHT_CONNECTED = np.ones((3, 3), bool)


def _blobs(changed: np.ndarray, cell_mask: np.ndarray, origin: tuple[int, int], grid_width: int,
           scale: float, means: np.ndarray) -> list[Blob]:
    """Blobs of one frame. `changed` and `cell_mask` cover the block of cells starting at cell
    `origin` (row, column) of a grid `grid_width` cells wide; no pixel outside it changed."""
    from scipy import ndimage  # the fallback's only: imported when used (~0.3 s a process)

    labels, count = ndimage.label(cell_mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return []
    oy, ox = origin
    blobs = []
    for label, sl in enumerate(ndimage.find_objects(labels), start=1):
        cy, cx = sl
        region = changed[cy.start * CELL:cy.stop * CELL, cx.start * CELL:cx.stop * CELL]
        own_cells = labels[sl] == label
        own = np.repeat(np.repeat(own_cells, CELL, 0), CELL, 1)[:region.shape[0], :region.shape[1]]
        pix = region & own
        rows = np.flatnonzero(pix.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(pix.any(axis=0))
        ys, xs = np.nonzero(own_cells)
        flat = (ys + (cy.start + oy)) * grid_width + (xs + (cx.start + ox))
        cells = tuple(flat.tolist())
        px0, py0 = (cx.start + ox) * CELL, (cy.start + oy) * CELL
        blobs.append(Blob(px0 + int(cols[0]), py0 + int(rows[0]), px0 + int(cols[-1]) + 1, py0 + int(rows[-1]) + 1,
                          int(np.count_nonzero(pix)), cells, "content", tuple(means[flat].tolist())))
    return _classified(blobs, scale)


def _classified(blobs: list[Blob], scale: float) -> list[Blob]:
    """Content blobs, in order, with carets and a pointer jump told apart."""
    blobs = [_with_kind(b, "caret") if b.width <= CARET_MAX_WIDTH_PX and b.height * scale <= CARET_MAX_HEIGHT_SRC
             else b for b in blobs]
    return _mark_pointer_jump(blobs, scale)


def _with_kind(blob: Blob, kind: str) -> Blob:
    return Blob(blob.x0, blob.y0, blob.x1, blob.y1, blob.pixels, blob.cells, kind, blob.values)


def _mark_pointer_jump(blobs: list[Blob], scale: float) -> list[Blob]:
    """A pointer jump leaves exactly two small blobs of the same size: where the
    sprite was and where it is now. Anything else is left as content."""
    content = [b for b in blobs if b.kind == "content"]
    if len(content) != 2:
        return blobs
    a, b = content
    limit = POINTER_MAX_SRC_PX / scale
    small = all(x.width <= limit and x.height <= limit for x in (a, b))
    alike = (abs(a.width - b.width) <= max(3, 0.35 * max(a.width, b.width))
             and abs(a.height - b.height) <= max(3, 0.35 * max(a.height, b.height)))
    if not (small and alike):
        return blobs
    return [_with_kind(x, "pointer") if x.kind == "content" else x for x in blobs]


class FirstFrame:
    """Receives the cell fingerprint of the first frame, the base of every cell's history."""

    means: np.ndarray | None = None


def diff_frames(frames: Iterable[np.ndarray], scale: float, ambient: AmbientCounter | None = None,
                first: FirstFrame | None = None,
                scaler_of: Callable[[], AreaScaler] | None = None,
                refreshed: Callable[[int], bool] | None = None) -> Iterator[FrameDiff]:
    """Yield a FrameDiff for every frame that differs from its predecessor.

    Frames are uint8 and must not be modified once yielded (the previous one is kept, not
    copied). Without ``scaler_of`` they are the analysis frames; with it, they are source
    luma planes (views of the decoder's frames) and the scaler it returns (asked once the
    first frame is at hand: a decoder knows the source's size and range only then) makes the
    analysis pixels of the bands where a frame differs from the previous one. Only the
    block around them is examined, and only the cells the bands touch get new means:
    elsewhere nothing changed, so neither did the cells' means. With the compiled kernel
    (AreaScaler.tile_kernel) the same happens per tile, in one call per frame.
    ``refreshed(index)``: whether frame ``index`` shows an encoder keyframe or the frame
    right after one; its pixels count as changed only past KEYFRAME_NOISE_LEVEL.
    """
    prev = picture = scaler = kernel = None  # the previous source frame; the current analysis frame
    means = recorded = marks = cell_marks = None  # cell means now / as last reported (2-D); the kernel's marks
    for index, frame in enumerate(frames):
        if scaler is None:
            scaler = scaler_of() if scaler_of is not None else AreaScaler(np.shape(frame), np.shape(frame))
            kernel = scaler.tile_kernel(CELL)
        if scaler.identity:
            frame = np.ascontiguousarray(frame, np.uint8)
        if prev is None:
            prev = frame
            picture = frame if scaler.identity else scaler.full(frame)
            grid_h, grid_w = cells_shape(picture.shape[1], picture.shape[0])
            means = cell_means(picture).reshape(grid_h, grid_w)
            recorded = means.copy()
            if kernel is not None:
                marks, cell_marks = np.zeros(picture.shape, bool), np.zeros(means.shape, bool)
            if first is not None:
                first.means = recorded.ravel().copy()
            if ambient is not None:
                ambient.add(index, None)
            continue
        noise = KEYFRAME_NOISE_LEVEL if refreshed is not None and refreshed(index) else NOISE_LEVEL
        if kernel is not None:  # compiled: the same pixels, marks and means, tile by tile
            found = kernel.update(frame, prev, picture, marks, cell_marks, means, recorded, noise, DRIFT_LEVEL)
        else:
            found = _changed_cells(prev, frame, scaler)
        prev = frame
        if found is None:
            if ambient is not None:
                ambient.add(index, None)
            continue
        if kernel is not None:
            moved, block, drifted = found
            cy0, cy1, cx0, cx1 = block
        else:
            block, bands = found
            cy0, cy1, cx0, cx1 = block
            ys = slice(cy0 * CELL, min(cy1 * CELL, picture.shape[0]))
            xs = slice(cx0 * CELL, min(cx1 * CELL, picture.shape[1]))
            if scaler.identity:
                now, before = frame[ys, xs], picture[ys, xs]
                picture = frame
                changed = (np.maximum(now, before) - np.minimum(now, before)) > noise
                moved = changed.any()
            else:  # only the bands' analysis pixels can have changed
                changed = np.zeros((ys.stop - ys.start, xs.stop - xs.start), bool)
                moved = False
                for band_ys, band_xs in bands:
                    moved |= scaler.update(frame, picture, band_ys, band_xs, changed, (ys.start, xs.start), noise)
            _update_means(picture, means, bands)
            drifted = _drift(means, recorded, block)
        if not moved:
            if ambient is not None:
                ambient.add(index, None)
            if drifted:
                yield FrameDiff(index, (), drifted)
            continue
        if kernel is not None:
            if ambient is not None:
                ambient.add(index, cell_marks)
            found_blobs = kernel.blobs(marks, cell_marks, means, cy0, cy1, cx0, cx1, CELL)  # clears the marks
            blobs = tuple(_classified([Blob(x0, y0, x1, y1, pixels, cells, "content", values)
                                       for x0, y0, x1, y1, pixels, cells, values in found_blobs], scale))
        else:
            block_mask = _cell_sums(changed.view(np.uint8)) > 0
            if ambient is not None:
                cell_mask = np.zeros(means.shape, bool)
                cell_mask[cy0:cy1, cx0:cx1] = block_mask
                ambient.add(index, cell_mask)
            blobs = tuple(_blobs(changed, block_mask, (cy0, cx0), grid_w, scale, means.ravel()))
        if drifted:  # cells a blob reports already are not a fade
            reported = {c for b in blobs for c in b.cells}
            drifted = tuple(pair for pair in drifted if pair[0] not in reported)
        yield FrameDiff(index, blobs, drifted)
    if ambient is not None:
        ambient.finish()


def _drift(means: np.ndarray, recorded: np.ndarray, block: tuple[int, int, int, int]) -> tuple[tuple[int, int], ...]:
    """Cells of the block whose mean moved more than DRIFT_LEVEL since last recorded, in cell
    order, with their new mean; updates `recorded` in place. Cells outside the block kept
    their means, which were within DRIFT_LEVEL of `recorded` after the previous frame."""
    cy0, cy1, cx0, cx1 = block
    now, then = means[cy0:cy1, cx0:cx1], recorded[cy0:cy1, cx0:cx1]
    moved = np.abs(now.astype(np.int16) - then) > DRIFT_LEVEL
    if not moved.any():
        return ()
    then[moved] = now[moved]
    ys, xs = np.nonzero(moved)
    flat = ((ys + cy0) * means.shape[1] + xs + cx0).tolist()
    return tuple(zip(flat, now[moved].tolist()))
