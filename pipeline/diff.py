"""Diff stage: per-frame change signal and changed-region blobs, streamed.

Each analysis frame is compared with the one before it. Pixels whose gray level
moved by more than NOISE_LEVEL count as changed (x264 at screen-recording
bitrates stays well under it on static text); changed pixels are pooled into
CELL x CELL cells and cells into 8-connected blobs. Each blob is classified
here, while its pixels are at hand, as a caret blink (a thin line) or part of a
pointer jump (two small look-alike blobs in one frame); the rest of the
filtering (ambient clocks, grouping into events) needs the whole timeline and
lives in keyframes.py.

Memory is bounded by the screen size: only blobs of changed frames are kept,
and the ambient statistics are one counter per cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from scipy import ndimage

NOISE_LEVEL = 24  # gray levels; compression noise on static screens stays below
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


def _cell_mask(changed: np.ndarray) -> np.ndarray:
    h, w = changed.shape
    ch, cw = cells_shape(w, h)
    padded = np.zeros((ch * CELL, cw * CELL), bool)
    padded[:h, :w] = changed
    return padded.reshape(ch, CELL, cw, CELL).any(axis=(1, 3))


def cell_means(frame: np.ndarray) -> np.ndarray:
    """Mean gray of every cell, flat: a coarse fingerprint of what each cell shows."""
    h, w = frame.shape
    ch, cw = cells_shape(w, h)
    padded = np.zeros((ch * CELL, cw * CELL), np.float32)
    padded[:h, :w] = frame
    return np.rint(padded.reshape(ch, CELL, cw, CELL).mean(axis=(1, 3))).astype(np.uint8).ravel()


def _blobs(changed: np.ndarray, cell_mask: np.ndarray, scale: float, means: np.ndarray) -> list[Blob]:
    labels, count = ndimage.label(cell_mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return []
    blobs = []
    cw = cell_mask.shape[1]
    for label, sl in enumerate(ndimage.find_objects(labels), start=1):
        cy, cx = sl
        region = changed[cy.start * CELL:cy.stop * CELL, cx.start * CELL:cx.stop * CELL]
        own = np.repeat(np.repeat(labels[sl] == label, CELL, 0), CELL, 1)[:region.shape[0], :region.shape[1]]
        pix = region & own
        rows = np.flatnonzero(pix.any(axis=1))
        cols = np.flatnonzero(pix.any(axis=0))
        if rows.size == 0:
            continue
        ys, xs = np.nonzero(labels[sl] == label)
        cells = tuple(int((y + cy.start) * cw + x + cx.start) for y, x in zip(ys, xs))
        x0, y0 = cx.start * CELL + int(cols[0]), cy.start * CELL + int(rows[0])
        blob = Blob(x0, y0, cx.start * CELL + int(cols[-1]) + 1, cy.start * CELL + int(rows[-1]) + 1,
                    int(pix.sum()), cells, "content", tuple(int(means[c]) for c in cells))
        if blob.width <= CARET_MAX_WIDTH_PX and blob.height * scale <= CARET_MAX_HEIGHT_SRC:
            blob = _with_kind(blob, "caret")
        blobs.append(blob)
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
                first: FirstFrame | None = None) -> Iterator[FrameDiff]:
    """Yield a FrameDiff for every frame that differs from its predecessor."""
    prev = None
    recorded = None  # the cell means as last reported, to notice slow fades
    for index, frame in enumerate(frames):
        if prev is None:
            prev = frame.astype(np.int16)
            recorded = cell_means(frame)
            if first is not None:
                first.means = recorded.copy()
            if ambient is not None:
                ambient.add(index, None)
            continue
        current = frame.astype(np.int16)
        delta = np.abs(current - prev)
        prev = current
        changed = delta > NOISE_LEVEL
        if not changed.any():
            if ambient is not None:
                ambient.add(index, None)
            if delta.any():
                drift = _drift(cell_means(frame), recorded, set())
                if drift:
                    yield FrameDiff(index, (), drift)
            continue
        cell_mask = _cell_mask(changed)
        if ambient is not None:
            ambient.add(index, cell_mask)
        means = cell_means(frame)
        blobs = tuple(_blobs(changed, cell_mask, scale, means))
        yield FrameDiff(index, blobs, _drift(means, recorded, {c for b in blobs for c in b.cells}))
    if ambient is not None:
        ambient.finish()


def _drift(means: np.ndarray, recorded: np.ndarray, reported: set[int]) -> tuple[tuple[int, int], ...]:
    """Cells whose mean moved more than DRIFT_LEVEL since last recorded, minus those a blob
    already reports; updates `recorded` in place."""
    moved = np.flatnonzero(np.abs(means.astype(np.int16) - recorded) > DRIFT_LEVEL)
    recorded[moved] = means[moved]
    return tuple((int(c), int(means[c])) for c in moved if int(c) not in reported)
