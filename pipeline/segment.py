"""Segment stage: narration blocks and screen changes become steps.

People say what they are about to do and do it while (or just after) saying it,
so a screen change belongs to the narration block that began most recently
before it; a block that caused no change is a spoken-only step (a note or a
warning); a change with no narration before it is a step of its own. A change
that only puts the screen back as it was (keyframes.py) counts only for a block
that has no other change. A step's screenshot is taken once its last change has
settled, a little later when the screen stays still, but always before the next
step's change begins.
"""
from __future__ import annotations

import bisect
from typing import Sequence

from .align import NarrationBlock
from .model import Box, ChangeEvent, StepPlan

LEAD_S = 0.3  # a change may start this much before its narration is heard
EARLY_S = 1.5  # a change this close before the first narration belongs to it
ORPHAN_AFTER_S = 8.0  # a change this long after a block already served is a step of its own
SHOT_DELAY_S = 1.0  # wait this long after the last change when the screen stays still
SHOT_GUARD_S = 0.4  # and stay this far before the next change


def plan_steps(blocks: Sequence[NarrationBlock], events: Sequence[ChangeEvent], duration_s: float,
               fps: float) -> list[StepPlan]:
    groups: list[tuple[NarrationBlock | None, list[ChangeEvent]]] = [(b, []) for b in blocks]
    for event in events:
        if event.reverts:
            continue
        target = _owner(groups, event)
        if target is None:
            groups.append((None, [event]))
        else:
            target[1].append(event)
    # A change back to an earlier screen is the change of a narrated step that has no
    # other ("close the dialog", "switch back to the first tab"); otherwise it is the
    # tail of a step (a toast going away) and no step of its own.
    for event in events:
        target = _owner(groups, event) if event.reverts else None
        if target is not None and target[0] is not None and all(e.reverts for e in target[1]):
            target[1].append(event)
    groups.sort(key=lambda g: _group_start(g))
    plans = []
    for i, (block, evs) in enumerate(groups):
        later = [e.start_s for _, es in groups[i + 1:] for e in es]
        plans.append(_plan(block, evs, min(later) if later else None, duration_s, fps))
    return plans


def likely_plans(events: Sequence[ChangeEvent], duration_s: float, fps: float) -> list[StepPlan]:
    """Plans steps are likely to have, known before the narration is (the build renders
    their screenshots meanwhile), most likely first: each change as the only change of its
    step, then each change back to an earlier screen alone (a "close the dialog" step).
    (Two successive changes in one step were a third guess: one in four was right.)"""
    changes = [e for e in events if not e.reverts]
    starts = [e.start_s for e in changes]

    def plan(event: ChangeEvent) -> StepPlan:
        after = bisect.bisect_right(starts, event.start_s)
        return _plan(None, [event], starts[after] if after < len(starts) else None, duration_s, fps)

    return [plan(e) for e in changes] + [plan(e) for e in events if e.reverts]


def _group_start(group: tuple[NarrationBlock | None, list[ChangeEvent]]) -> float:
    block, evs = group
    starts = [e.start_s for e in evs] + ([block.start_s] if block else [])
    return min(starts)


def _owner(groups, event: ChangeEvent):
    """The group whose narration this change illustrates, or None for a new step."""
    narrated = [g for g in groups if g[0] is not None]
    before = [g for g in narrated if g[0].heard_s <= event.start_s + LEAD_S]
    if before:
        block, evs = before[-1]
        if evs and event.start_s - max(block.end_s, evs[-1].end_s) > ORPHAN_AFTER_S:
            return None
        return before[-1]
    upcoming = [g for g in narrated if g[0].heard_s - event.start_s <= EARLY_S]
    if upcoming:
        return upcoming[0]
    orphans = [g for g in groups if g[0] is None and event.start_s - g[1][-1].end_s <= LEAD_S]
    return orphans[-1] if orphans else None


def _plan(block: NarrationBlock | None, events: list[ChangeEvent], next_change_s: float | None,
          duration_s: float, fps: float) -> StepPlan:
    sentences = block.sentences if block else ()
    starts = [e.start_s for e in events] + ([block.start_s] if block else [])
    ends = [e.end_s for e in events] + ([block.end_s] if block else [])
    shot = highlight = None
    if events:
        last = max(e.end_s for e in events)
        shot = last + SHOT_DELAY_S
        if next_change_s is not None:
            shot = min(shot, next_change_s - SHOT_GUARD_S)
        frame = 1.0 / fps
        shot = max(shot, last + frame)
        last_frame = max(0.0, duration_s - frame)
        shot = round(round(min(shot, last_frame) * fps) / fps, 3)
        highlight = _union(e.box for e in events)
    return StepPlan(start_s=round(min(starts), 3), end_s=round(max(ends), 3),
                    change_s=round(min(e.start_s for e in events), 3) if events else None,
                    sentences=tuple(sentences), events=tuple(events), shot_time_s=shot, highlight=highlight)


def _union(boxes) -> Box:
    boxes = list(boxes)
    x0 = min(b.x for b in boxes)
    y0 = min(b.y for b in boxes)
    x1 = max(b.x + b.w for b in boxes)
    y1 = max(b.y + b.h for b in boxes)
    return Box(x0, y0, x1 - x0, y1 - y0)
