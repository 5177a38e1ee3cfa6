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
