"""Keyframes stage: meaningful changes and the settled states after them, from pixels alone.

Takes the blobs the diff stage found and keeps those that are content: not a caret
blink, not a pointer jump, not an ambient region (cells that changed in more than
AMBIENT_SHARE of the recording's seconds, such as a clock, widened to cover its
slower digits). Frames with content blobs less than EVENT_GAP_S apart form one
event, so the keystrokes of one command and the output it prints are one change,
and the event ends where the screen settled.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage

from .diff import NOISE_LEVEL, AmbientCounter, Blob, FrameDiff
from .model import Box, ChangeEvent, VisualTimeline

AMBIENT_SHARE = 0.25
AMBIENT_MIN_SECONDS = 4
AMBIENT_GROW_CELLS = (1, 5)  # rows, columns: a clock's minutes sit left of its seconds
EVENT_GAP_S = 1.0
MIN_CONTENT_SRC_PIXELS = 10


def ambient_mask(counter: AmbientCounter) -> np.ndarray:
    """Cells that change so often they are part of the furniture (a ticking clock)."""
    limit = max(AMBIENT_MIN_SECONDS, AMBIENT_SHARE * counter.seconds)
    mask = counter.counts > limit
    if not mask.any():
        return mask
    rows, cols = AMBIENT_GROW_CELLS
    return ndimage.binary_dilation(mask, structure=np.ones((2 * rows + 1, 2 * cols + 1), bool))


def _is_content(blob: Blob, ambient_flat: np.ndarray, scale: float) -> bool:
    if blob.kind != "content" or blob.pixels * scale * scale < MIN_CONTENT_SRC_PIXELS:
        return False
    in_ambient = sum(bool(ambient_flat[c]) for c in blob.cells)
    return in_ambient * 2 < len(blob.cells)


def find_events(diffs: Iterable[FrameDiff], counter: AmbientCounter, fps: float, scale: float,
                frame_count: int, src_size: tuple[int, int]) -> VisualTimeline:
    """Group content changes into events, in time order."""
    ambient_flat = ambient_mask(counter).ravel()
    total_cells = ambient_flat.size
    events: list[ChangeEvent] = []
    current: list[tuple[int, list[Blob]]] = []

    def close() -> None:
        if current:
            events.append(_event(current, fps, scale, total_cells, src_size))
            current.clear()

    for diff in diffs:
        content = [b for b in diff.blobs if _is_content(b, ambient_flat, scale)]
        if not content:
            continue
        if current and (diff.index - current[-1][0]) / fps > EVENT_GAP_S:
            close()
        current.append((diff.index, content))
    close()
    return VisualTimeline(tuple(events), fps, frame_count)


def _event(frames: list[tuple[int, list[Blob]]], fps: float, scale: float, total_cells: int,
           src_size: tuple[int, int]) -> ChangeEvent:
    blobs = [b for _, bs in frames for b in bs]
    x0, y0 = min(b.x0 for b in blobs), min(b.y0 for b in blobs)
    x1, y1 = max(b.x1 for b in blobs), max(b.y1 for b in blobs)
    width, height = src_size
    sx0, sy0 = int(x0 * scale), int(y0 * scale)
    sx1, sy1 = min(width, int(np.ceil(x1 * scale))), min(height, int(np.ceil(y1 * scale)))
    cells = {c for b in blobs for c in b.cells}
    return ChangeEvent(start_s=round(frames[0][0] / fps, 3), end_s=round(frames[-1][0] / fps, 3),
                       box=Box(sx0, sy0, max(1, sx1 - sx0), max(1, sy1 - sy0)),
                       area=round(len(cells) / total_cells, 4))


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
