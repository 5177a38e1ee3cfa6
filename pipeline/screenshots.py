"""Step screenshots: the frames that show a step, its highlight narrowed to what the step
changed, the PNG; and the screenshots rendered early, while transcription runs.

Which steps there are is known only once the narration is, at the end of transcription,
which is the build's longest stage. But the speech process tells what it has heard after
each piece of a long narration, and the steps that end well before that are, almost
always, the steps the whole narration gives: the build renders their screenshots on the
core transcription leaves, and, while the last piece is transcribed, those of the steps
the later screen changes alone suggest (segment.likely_plans). Once the steps are known,
it takes the ones they turned out to have. A screenshot is a pure function of its two
frames and its highlight, so an early one is byte for byte the one the step would get
later, and the SOP does not depend on how many were ready.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from . import align, frames, keyframes, render, segment, shots
from .model import Box, ChangeEvent, StepPlan
from .transcribe import CHUNK_S, LAST_PIECE_CHUNKS

if TYPE_CHECKING:
    from .speech import Heard

# A step that ends this long before the end of the narration heard so far is cut as the
# whole narration will cut it (almost always; segment.ORPHAN_AFTER_S is the longest reach
# of a later sentence).
SETTLED_MARGIN_S = 15.0


def render_shot(frame: np.ndarray, before: np.ndarray | None, highlight: Box | None) -> tuple[bytes, Box | None]:
    """A step's screenshot as PNG, and its highlight: the step's, narrowed to what differs
    from the frame before the step's change, outlined on the frame."""
    if before is not None and highlight is not None:
        highlight = keyframes.net_change_box(before, frame, highlight) or highlight
    return render.screenshot_png(frame, highlight), highlight


def shot_frames(plan: StepPlan, fps: float, last_frame: int) -> tuple[int, int | None] | None:
    """The frame indexes of a step's screenshot and of the frame before its change (None
    when there is no such earlier frame); None for a step without a screenshot."""
    if plan.shot_time_s is None:
        return None
    shot = min(last_frame, int(round(plan.shot_time_s * fps)))
    before = max(0, int(round(plan.change_s * fps)) - 1) if plan.change_s is not None else None
    return shot, before if before is not None and before < shot else None


def shot_key(shot: int, before: int | None, highlight: Box | None, stand_in: dict[int, int]) -> tuple | None:
    """What a screenshot is made of when the video pass kept both of its frames (screens
    identical to the wanted ones): kept frame indexes and the highlight; None otherwise."""
    if shot not in stand_in or (before is not None and before not in stand_in):
        return None
    return stand_in[shot], stand_in.get(before) if before is not None else None, highlight


@dataclass(frozen=True)
class _Spilled:
    offset: int
    size: int
    highlight: Box | None


class EarlyShots:
    """Screenshots rendered before the steps are known, by what they are made of
    (`shot_key`). The PNGs wait in a temporary file: a 30-minute 1080p recording has some
    700 candidates, 150 MB, and memory must stay flat in the recording's length."""

    def __init__(self) -> None:
        self._file = None
        self._spilled: dict[tuple, _Spilled] = {}

    def __enter__(self) -> EarlyShots:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._spilled.clear()

    def render(self, video: frames.VideoPass, fps: float, content_changes: Sequence[int],
               plans: Sequence[StepPlan], until: Callable[[], bool]) -> bool:
        """Render the screenshots of ``plans`` not rendered yet, in order, from the frames
        the pass kept, until ``until()`` is true; True when all were."""
        last_frame = video.count - 1
        wanted = [(f, p.highlight) for p in plans if (f := shot_frames(p, fps, last_frame))]
        stand_in = shots.stand_ins(sorted({n for f, _ in wanted for n in f if n is not None}),
                                   sorted(video.kept), content_changes)
        unpacked: dict[int, np.ndarray] = {}  # the last frames decompressed: a shot is often the next "before"
        for (shot, before), highlight in wanted:
            key = shot_key(shot, before, highlight, stand_in)
            if key is None or key in self._spilled:
                continue
            if until():
                return False
            unpacked = {k: unpacked[k] if k in unpacked else video.rgb(k) for k in key[:2] if k is not None}
            png, box = render_shot(unpacked[key[0]], unpacked.get(key[1]), highlight)
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="sopline-shots-")
            offset = self._file.seek(0, 2)
            self._file.write(png)
            self._spilled[key] = _Spilled(offset, len(png), box)
        return True

    def render_while_heard(self, video: frames.VideoPass, events: Sequence[ChangeEvent], duration_s: float,
                           fps: float, content_changes: Sequence[int],
                           heard_so_far: Callable[[], Heard | None], until: Callable[[], bool],
                           poll_s: float = 0.05) -> None:
        """Until ``until()`` is true (transcription has ended), render the screenshots of
        `plans_to_render` for what ``heard_so_far()`` says is heard, again as it grows."""
        seen: object = object()
        done = True
        while not until():
            heard = heard_so_far()
            if heard is not seen:
                seen, done = heard, False
                plans = plans_to_render(heard, events, duration_s, fps)
            if done:
                time.sleep(poll_s)
                continue
            done = self.render(video, fps, content_changes, plans, until)

    def get(self, key: tuple | None) -> tuple[bytes, Box | None] | None:
        """The PNG and highlight rendered for ``key``, if it was."""
        spilled = self._spilled.get(key) if key is not None else None
        if spilled is None:
            return None
        self._file.seek(spilled.offset)
        return self._file.read(spilled.size), spilled.highlight


def plans_to_render(heard: Heard | None, events: Sequence[ChangeEvent], duration_s: float,
                    fps: float) -> list[StepPlan]:
    """The steps worth a screenshot before transcription ends, in order: those of the
    narration heard so far that end SETTLED_MARGIN_S before it; then, once the piece being
    transcribed is the last, the later changes as `segment.likely_plans` guesses them. (A
    guess for the whole recording rendered three screenshots for each one used.)"""
    until_s = heard.until_s if heard is not None and heard.until_s is not None else 0.0
    settled_s = until_s - SETTLED_MARGIN_S
    plans: list[StepPlan] = []
    if heard is not None and heard.transcript.sentences:
        blocks = align.group_sentences(heard.transcript.sentences, heard.silence)
        plans = [p for p in segment.plan_steps(blocks, events, duration_s, fps)
                 if p.shot_time_s is not None and max(p.end_s, p.shot_time_s) <= settled_s]
    if duration_s - until_s <= LAST_PIECE_CHUNKS * CHUNK_S:  # the last piece (transcribe.chunk_bounds)
        later = [e for e in events if e.start_s > settled_s]
        plans += segment.likely_plans(later, duration_s, fps)
    return plans


def frames_at(video: frames.VideoPass, path: Path, info, geometry, wanted: set[int],
              stand_in: dict[int, int]) -> Iterator[tuple[int, np.ndarray]]:
    """RGB frames at the wanted indexes, in order: from the kept frame ``stand_in`` names
    for it (shots.stand_ins), else from an exact second pass (only up to the last such frame)."""
    wanted_sorted = sorted(wanted)
    missing = [n for n in wanted_sorted if n not in stand_in]
    exact = frames.iter_rgb_frames(path, info, geometry, missing)
    pending = next(exact, None)
    unpacked: tuple[int, np.ndarray] | None = None  # a kept frame often stands for two wanted ones
    try:
        for n in wanted_sorted:
            if n in stand_in:
                if unpacked is None or unpacked[0] != stand_in[n]:
                    unpacked = (stand_in[n], video.rgb(stand_in[n]))
                yield n, unpacked[1]
                continue
            while pending is not None and pending[0] < n:
                pending = next(exact, None)
            if pending is not None and pending[0] == n:
                yield pending
    finally:
        exact.close()
