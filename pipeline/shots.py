"""Screenshot frames: which frames the decode pass keeps, and which kept frame
stands for each screenshot the steps ask for.

Which frames become screenshots is only known after alignment, once the pass
is over. But a screenshot is always taken in a still stretch between two events
(events are at least EVENT_GAP_S apart; segment.py shoots before the next one),
and the screen of such a stretch is one picture: its last frame shows it as
well as any other. So the pass keeps the last frame of every stretch without
content change that lasted at least half of EVENT_GAP_S (and the last frame of
the recording), and a wanted frame is served by a kept frame of its stretch.
Whether a change is content (not a clock) is only final at the end; during the
pass a cell counts as ambient once it changed in more than half the seconds so
far (a ticking clock: all of them), so a clock does not leave one kept frame per
second. A wanted frame left without a stand-in is fetched by an exact second pass.
"""
from __future__ import annotations

import bisect
from typing import Iterable, Sequence

import numpy as np

from .diff import AmbientCounter, FrameDiff
from .keyframes import EVENT_GAP_S, ambient_mask, is_content

ONLINE_AMBIENT_SHARE = 0.5  # during the pass: a cell changed in more than this share of seconds...
ONLINE_AMBIENT_MIN_SECONDS = 10  # ...and in more than this many, is treated as a clock


class KeepPolicy:
    """Decides, change by change during the pass, whether the frame before it ends a
    still stretch a screenshot may be taken in."""

    def __init__(self, counter: AmbientCounter, scale: float, fps: float):
        self.counter, self.scale = counter, scale
        self.min_still = max(2, int(0.5 * EVENT_GAP_S * fps))  # frames
        self._last_change = self._last_shown = -self.min_still  # frame indexes of the last content change
        self._seconds = -1
        self._ambient = np.zeros(counter.counts.size, bool)

    def wants(self, change: FrameDiff) -> bool:
        if self.counter.seconds != self._seconds:  # the estimate moves once a second at most
            self._seconds = self.counter.seconds
            limit = max(ONLINE_AMBIENT_MIN_SECONDS, ONLINE_AMBIENT_SHARE * self._seconds)
            self._ambient = (self.counter.counts > limit).ravel()
        shown = _shows_content(change, self._ambient, self.scale)
        if not shown and not _fades(change, self._ambient):
            return False
        # a still stretch ends here; or a fade ran into a change that may start an event,
        # whose frame before is the step's "before" picture
        still = (change.index - self._last_change >= self.min_still
                 or (shown and change.index - self._last_shown >= self.min_still))
        self._last_change = change.index
        if shown:
            self._last_shown = change.index
        return still


def _shows_content(change: FrameDiff, ambient_flat: np.ndarray, scale: float) -> bool:
    return any(is_content(b, ambient_flat, scale) for b in change.blobs)


def _fades(change: FrameDiff, ambient_flat: np.ndarray) -> bool:
    """A cell outside the ambient ones drifted (a fade too faint for any pixel to cross the noise)."""
    return any(not ambient_flat[cell] for cell, _ in change.drift)


def _changes_content(change: FrameDiff, ambient_flat: np.ndarray, scale: float) -> bool:
    return _shows_content(change, ambient_flat, scale) or _fades(change, ambient_flat)


def content_changes(diffs: Iterable[FrameDiff], counter: AmbientCounter, scale: float) -> list[int]:
    """Indexes of the frames where content changed, by the recording's final ambient cells."""
    ambient_flat = ambient_mask(counter).ravel()
    return [d.index for d in diffs if _changes_content(d, ambient_flat, scale)]


def stand_ins(wanted: Iterable[int], kept: Sequence[int], changes: Sequence[int]) -> dict[int, int]:
    """For each wanted frame index, the kept frame showing the same screen (no content
    change between them), nearest to it (the later one on a tie); frames without one
    are left out. ``kept`` and ``changes`` are sorted."""
    found: dict[int, int] = {}
    for n in wanted:
        after = bisect.bisect_right(changes, n)
        first = changes[after - 1] if after else 0  # the stretch's first frame
        end = changes[after] if after < len(changes) else None  # the next stretch's first frame
        lo = bisect.bisect_left(kept, first)
        hi = bisect.bisect_left(kept, end) if end is not None else len(kept)
        pos = bisect.bisect_left(kept, n, lo, hi)
        near = [kept[i] for i in (pos - 1, pos) if lo <= i < hi]
        if near:
            found[n] = min(near, key=lambda f: (abs(f - n), -f))
    return found
