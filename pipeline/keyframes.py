"""Keyframes stage: meaningful changes and the settled states after them, from pixels alone.

Takes the blobs the diff stage found and keeps those that are content: not a caret
blink, not a pointer jump, not an ambient region (cells that changed in more than
AMBIENT_SHARE of the recording's seconds, such as a clock, widened to cover its
slower digits). Frames with content blobs less than EVENT_GAP_S apart form one
event, so the keystrokes of one command and the output it prints are one change,
and the event ends where the screen settled.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .diff import NOISE_LEVEL, AmbientCounter, Blob, FirstFrame, FrameDiff
from .model import Box, ChangeEvent, VisualTimeline

AMBIENT_SHARE = 0.25
AMBIENT_MIN_SECONDS = 4
AMBIENT_GROW_CELLS = (1, 5)  # rows, columns: a clock's minutes sit left of its seconds
EVENT_GAP_S = 1.0
MIN_CONTENT_SRC_PIXELS = 10
REVERT_WINDOW_S = 8.0  # a toast or dialog going away within this long of appearing
REVERT_TOLERANCE = 6  # gray levels a cell's mean may differ and still be "as it was"
REVERT_SHARE = 0.9  # share of the change's cells that must be back as they were


def ambient_mask(counter: AmbientCounter) -> np.ndarray:
    """Cells that change so often they are part of the furniture (a ticking clock)."""
    limit = max(AMBIENT_MIN_SECONDS, AMBIENT_SHARE * counter.seconds)
    mask = counter.counts > limit
    if not mask.any():
        return mask
    from scipy import ndimage  # imported when used: most recordings have no ambient cells (~0.3 s)

    rows, cols = AMBIENT_GROW_CELLS
    return ndimage.binary_dilation(mask, structure=np.ones((2 * rows + 1, 2 * cols + 1), bool))


def is_content(blob: Blob, ambient_flat: np.ndarray, scale: float) -> bool:
    if blob.kind != "content" or blob.pixels * scale * scale < MIN_CONTENT_SRC_PIXELS:
        return False
    in_ambient = int(np.count_nonzero(ambient_flat[list(blob.cells)]))
    return in_ambient * 2 < len(blob.cells)


def find_events(diffs: Sequence[FrameDiff], counter: AmbientCounter, fps: float, scale: float,
                frame_count: int, src_size: tuple[int, int], first: FirstFrame | None = None) -> VisualTimeline:
    """Group content changes into events, in time order, without transient reverts."""
    ambient_flat = ambient_mask(counter).ravel()
    groups: list[list[tuple[int, list[Blob]]]] = []
    for diff in diffs:
        content = [b for b in diff.blobs if is_content(b, ambient_flat, scale)]
        if not content:
            continue
        if not groups or (diff.index - groups[-1][-1][0]) / fps > EVENT_GAP_S:
            groups.append([])
        groups[-1].append((diff.index, content))
    reverts = [False] * len(groups)
    if first is not None and first.means is not None:
        reverts = _reverts(groups, CellHistory(diffs, first.means), fps)
    events = tuple(_event(g, fps, scale, ambient_flat.size, src_size, r) for g, r in zip(groups, reverts))
    return VisualTimeline(events, fps, frame_count)


class CellHistory:
    """What each cell showed over time (its mean gray), rebuilt from the diffs.

    Every reported (cell, frame index, value) is kept in one array sorted by cell, then
    index, then report order, so the value of many cells at one frame is one binary search.
    """

    _SPAN = 1 << 32  # frame indexes stay below this: key = cell * _SPAN + index

    def __init__(self, diffs: Sequence[FrameDiff], first_means: np.ndarray):
        self.first = np.asarray(first_means)
        cells: list[int] = []
        indexes: list[int] = []
        values: list[int] = []
        for diff in diffs:
            n = len(cells)
            for blob in diff.blobs:
                cells.extend(blob.cells)
                values.extend(blob.values)
            for cell, value in diff.drift:
                cells.append(cell)
                values.append(value)
            indexes.extend([diff.index] * (len(cells) - n))
        keys = np.asarray(cells, np.int64) * self._SPAN + np.asarray(indexes, np.int64)
        order = np.argsort(keys, kind="stable")  # stable: of two reports at one frame, the later wins
        self._keys = keys[order]
        self._values = np.asarray(values, np.int16)[order]

    def values(self, cells: Sequence[int] | np.ndarray, index: int) -> np.ndarray:
        """Mean gray of each cell as shown in frame `index` (int16)."""
        cells = np.asarray(cells, np.int64)
        if self._keys.size == 0:
            return self.first[cells].astype(np.int16)
        pos = np.searchsorted(self._keys, cells * self._SPAN + index, side="right") - 1
        safe = np.maximum(pos, 0)
        reported = (pos >= 0) & (self._keys[safe] >= cells * self._SPAN)
        return np.where(reported, self._values[safe], self.first[cells].astype(np.int16))

    def value(self, cell: int, index: int) -> int:
        """Mean gray of the cell as shown in frame `index`."""
        return int(self.values([cell], index)[0])


def _reverts(groups, history: CellHistory, fps: float) -> list[bool]:
    """Which changes only put the screen back as it was just before an earlier change: a
    toast or spinner going away is the tail of an earlier step, not a step (though closing
    a dialog or going back to a tab can be one, when narrated: segment.py decides)."""
    kept: list = []
    flags: list[bool] = []
    settle = int(round(EVENT_GAP_S * fps))
    for n, group in enumerate(groups):
        cells = sorted({c for _, blobs in group for b in blobs for c in b.cells})
        start, end = group[0][0], group[-1][0]
        settled = end + settle if n + 1 == len(groups) else min(end + settle, groups[n + 1][0][0] - 1)
        after = history.values(cells, settled)
        before = history.values(cells, start - 1)
        reverted = False
        if (np.abs(after - before) > REVERT_TOLERANCE).any():  # only a real change can be a revert
            for earlier in reversed(kept):
                if (start - earlier[0][0]) / fps > REVERT_WINDOW_S:
                    break
                was = history.values(cells, earlier[0][0] - 1)
                if (np.abs(after - was) <= REVERT_TOLERANCE).mean() >= REVERT_SHARE:
                    reverted = True
                    break
        if not reverted:
            kept.append(group)
        flags.append(reverted)
    return flags


def _event(frames: list[tuple[int, list[Blob]]], fps: float, scale: float, total_cells: int,
           src_size: tuple[int, int], reverts: bool = False) -> ChangeEvent:
    blobs = [b for _, bs in frames for b in bs]
    x0, y0 = min(b.x0 for b in blobs), min(b.y0 for b in blobs)
    x1, y1 = max(b.x1 for b in blobs), max(b.y1 for b in blobs)
    width, height = src_size
    sx0, sy0 = int(x0 * scale), int(y0 * scale)
    sx1, sy1 = min(width, int(np.ceil(x1 * scale))), min(height, int(np.ceil(y1 * scale)))
    cells = {c for b in blobs for c in b.cells}
    return ChangeEvent(start_s=round(frames[0][0] / fps, 3), end_s=round(frames[-1][0] / fps, 3),
                       box=Box(sx0, sy0, max(1, sx1 - sx0), max(1, sy1 - sy0)),
                       area=round(len(cells) / total_cells, 4), reverts=reverts)


def net_change_box(before: np.ndarray, after: np.ndarray, within: Box, min_pixels: int = 12) -> Box | None:
    """The region that differs between the screen before a step and its settled screenshot,
    looked for inside `within` (where the step's changes happened). Transient things (a
    dialog that came and went) are gone from both frames, so the box shows the result."""
    x0, y0 = within.x, within.y
    x1, y1 = x0 + within.w, y0 + within.h
    a = before[y0:y1, x0:x1].astype(np.int16)
    b = after[y0:y1, x0:x1].astype(np.int16)
    if a.size == 0 or a.shape != b.shape:
        return None
    changed = np.abs(a - b).max(axis=-1) > NOISE_LEVEL if a.ndim == 3 else np.abs(a - b) > NOISE_LEVEL
    if int(changed.sum()) < min_pixels:
        return None
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    return Box(x0 + int(cols[0]), y0 + int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
