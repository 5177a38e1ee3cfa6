"""Typed records passed between stages.

Every stage takes and returns these small immutable records, in the manner of
faster-whisper's Segment/Word: no stage reaches into another's internals, and a
record never holds pixels of more than one frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class MediaInfo:
    """Container facts of one recording, as probed before decoding."""

    duration_s: float
    width: int  # display width after rotation
    height: int  # display height after rotation
    fps: float
    has_video: bool
    has_audio: bool
    rotation: int = 0  # degrees, from the display matrix


@dataclass(frozen=True)
class Box:
    """A rectangle in source-video pixels."""

    x: int
    y: int
    w: int
    h: int

    def as_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


@dataclass(frozen=True)
class ChangeEvent:
    """One burst of meaningful screen change, from its first changed frame to the
    first frame after which the screen stayed still (the settled state)."""

    start_s: float
    end_s: float  # time of the last frame that still changed
    box: Box  # union of the changed regions, source pixels
    area: float  # changed share of the screen, 0..1
    # puts the screen back as it was before an earlier change (a toast fading, a dialog
    # closed, a tab switched back): a step's change only if its narration has no other
    reverts: bool = False


@dataclass(frozen=True)
class VisualTimeline:
    """What the diff and keyframe stages saw: meaningful changes in time order."""

    events: tuple[ChangeEvent, ...]
    analysis_fps: float
    frame_count: int


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    text: str
    probability: float = 1.0


@dataclass(frozen=True)
class Sentence:
    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    sentences: tuple[Sentence, ...]
    language: str = "en"
    model: str = ""


@dataclass(frozen=True)
class Callout:
    kind: str  # warning | tip | verify
    text: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text}


@dataclass(frozen=True)
class StepText:
    """What the narration of one step says, rewritten for a document."""

    instruction: str  # one imperative sentence
    kind: str  # action | verification | warning | note
    callouts: tuple[Callout, ...] = ()
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepPlan:
    """A step as cut by the segment stage, before text rewriting and rendering."""

    start_s: float
    end_s: float
    change_s: Optional[float]  # first meaningful screen change of the step, None if none
    sentences: tuple[Sentence, ...]
    events: tuple[ChangeEvent, ...]
    shot_time_s: Optional[float]  # settled frame to show, None when nothing changed
    highlight: Optional[Box]


@dataclass(frozen=True)
class Screenshot:
    path: str  # relative to sop.json
    time_s: float
    sha256: str
    highlight: Optional[Box]

    def as_dict(self) -> dict:
        return {"path": self.path, "time_s": self.time_s, "sha256": self.sha256,
                "highlight": self.highlight.as_dict() if self.highlight else None}


@dataclass(frozen=True)
class Link:
    """A link a person attached to a step (http(s) or relative URL)."""

    title: str
    url: str

    def as_dict(self) -> dict:
        return {"title": self.title, "url": self.url}


@dataclass(frozen=True)
class StepEdit:
    """Which fields of a step a person set, by whom, and the generated values they
    replaced, so a diff can tell a generated change from a human one."""

    fields: tuple[str, ...]
    by: Optional[str] = None
    generated: dict = field(default_factory=dict)  # field -> generated value (JSON-ready)
    merged: tuple[str, ...] = ()  # ids of later steps merged into this one


@dataclass(frozen=True)
class Step:
    id: str
    number: int
    start_s: float
    end_s: float
    change_s: Optional[float]
    instruction: str
    kind: str
    narration: tuple[Sentence, ...]
    callouts: tuple[Callout, ...]
    inputs: tuple[str, ...]
    screenshot: Optional[Screenshot]
    # Set only by human edits (pipeline.edits); defaults keep generated steps unchanged.
    notes: tuple[str, ...] = ()  # Markdown, rendered through a sanitizer
    links: tuple[Link, ...] = ()
    origin: str = "generated"  # generated | manual (a step a person inserted)
    edited: Optional[StepEdit] = None


@dataclass(frozen=True)
class SourceInfo:
    path: str  # relative to the build root, POSIX separators
    sha256: str
    duration_s: float
    width: int
    height: int
    fps: float
    has_audio: bool


@dataclass(frozen=True)
class GeneratorInfo:
    name: str
    version: str
    model: str
    settings_sha256: str


@dataclass(frozen=True)
class Sop:
    id: str
    title: str
    summary: str
    source: SourceInfo
    generator: GeneratorInfo
    metadata: dict = field(default_factory=dict)
    steps: tuple[Step, ...] = ()
    transcript: tuple[Sentence, ...] = ()
    edits: Optional[EditsInfo] = None  # set when the recording has an edits overlay


@dataclass(frozen=True)
class OrphanedEdit:
    """An overlay edit that was kept but not applied (its step no longer exists)."""

    step: str
    fields: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class EditsInfo:
    """What a recording's edits overlay did to its SOP (sop.json's top-level ``edits``)."""

    path: str  # overlay path relative to the build root, POSIX
    sha256: str
    applied: int = 0
    dropped: tuple[str, ...] = ()
    merged: tuple[str, ...] = ()
    orphaned: tuple[OrphanedEdit, ...] = ()
    sop_fields: tuple[str, ...] = ()  # title, summary, metadata.prerequisites, metadata.expected_outcome
    generated: dict = field(default_factory=dict)  # sop field -> value before the edit
    by: Optional[str] = None  # the overlay's file-level author
    mark_edited: bool = True  # sop.md marks edited steps; presentation only, not in sop.json
