"""Build: discover recordings and run the stages for each, writing one SOP folder per recording.

The library API behind `sopline build`. Each recording is independent: a
failure is caught, reported in one line and recorded in the manifest, and the
previous SOP folder for that recording stays as it was (folders are replaced
atomically, only once everything for them has been written).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

from . import __version__, align, decode, diff, instruct, keyframes, render, segment, sidecar
from .fsutil import atomic_write_bytes, sha256_file
from .model import GeneratorInfo, Screenshot, Sentence, Sop, SourceInfo, Step, StepPlan, Transcript
from .transcribe import Transcriber

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")
INDEX_NAME = "index.json"
LOCK_NAME = ".sopline.lock"
Progress = Callable[..., None]


class BuildError(Exception):
    """A recording could not be turned into an SOP; the message is one line."""


@dataclass(frozen=True)
class Recording:
    """A recording found on disk and where its SOP goes."""

    path: Path
    rel: PurePosixPath  # <rel>/<name>: the SOP folder under OUT, also the source path in outputs
    source: PurePosixPath  # path of the recording relative to its root, for outputs


@dataclass(frozen=True)
class BuildSettings:
    model: str | None = None
    glossary: tuple[str, ...] = ()
    cpu_threads: int = 0  # 0: all available cores

    def digest(self, model_label: str) -> str:
        doc = {"model": model_label, "glossary": list(self.glossary),
               "analysis": {"max_w": decode.ANALYSIS_MAX_W, "max_h": decode.ANALYSIS_MAX_H,
                            "max_fps": decode.ANALYSIS_MAX_FPS, "noise": diff.NOISE_LEVEL,
                            "event_gap_s": keyframes.EVENT_GAP_S, "block_pause_s": align.BLOCK_PAUSE_S}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class BuildResult:
    recording: Recording
    ok: bool
    message: str = ""
    steps: int = 0
    warnings: tuple[str, ...] = ()
    sha256: str = ""


@dataclass
class BuildReport:
    results: list[BuildResult] = field(default_factory=list)

    @property
    def failed(self) -> list[BuildResult]:
        return [r for r in self.results if not r.ok]


def discover(paths: Iterable[Path], out: Path | None = None) -> list[Recording]:
    """Recordings under each argument: a folder is searched recursively (hidden folders
    and the output folder skipped); a file's root is its parent folder."""
    found: dict[PurePosixPath, Recording] = {}
    out_resolved = out.resolve() if out else None
    for arg in paths:
        arg = Path(arg)
        if arg.is_dir():
            root = arg
            candidates = sorted(p for p in arg.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                                and not any(part.startswith(".") for part in p.relative_to(arg).parts[:-1]))
            if out_resolved is not None:
                candidates = [p for p in candidates if out_resolved not in p.resolve().parents]
        else:
            root = arg.parent
            candidates = [arg]
        for p in candidates:
            source = PurePosixPath(p.relative_to(root).as_posix())
            rel = source.with_suffix("")
            found.setdefault(rel, Recording(p, rel, source))
    return [found[k] for k in sorted(found)]


def slugify(text: str, limit: int = 64) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "sop"


def _title_from_name(name: str) -> str:
    words = re.sub(r"[-_.]+", " ", name).strip()
    return (words[:1].upper() + words[1:]) if words else "Untitled procedure"


_ID_STOP = set("a an the to of and or so that this it is be i you we for with in on at as then now its".split())


def step_ids(instructions: Sequence[str]) -> list[str]:
    """Ids from what each step says (its content words), so the same step keeps its id when
    re-recorded or moved; a repeated instruction gets -2, -3..."""
    ids, seen = [], {}
    for text in instructions:
        words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _ID_STOP][:6]
        base = "-".join(words) or "step"
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return ids


def _summary(steps: Sequence[Step]) -> str:
    if not steps:
        return "No steps were found in this recording."
    kinds = [s.kind for s in steps]
    parts = [f"{len(steps)} step{'s' if len(steps) != 1 else ''}"]
    for kind, label in (("verification", "verification"), ("warning", "warning")):
        n = kinds.count(kind)
        if n:
            parts.append(f"{n} {label}{'s' if n != 1 else ''}")
    first, last = steps[0].instruction.rstrip("."), steps[-1].instruction.rstrip(".")
    span = f"from \u201c{first}\u201d to \u201c{last}\u201d" if len(steps) > 1 else f"\u201c{first}\u201d"
    return f"A procedure of {', '.join(parts)}, {span}."


class Builder:
    """Runs the stages for recordings, sharing one loaded speech model."""

    def __init__(self, settings: BuildSettings, progress: Progress | None = None):
        self.settings = settings
        self.progress = progress or (lambda *a, **k: None)
        self._transcriber: Transcriber | None = None
        self._lock = threading.Lock()

    @property
    def transcriber(self) -> Transcriber:
        with self._lock:
            if self._transcriber is None:
                threads = self.settings.cpu_threads or decode.available_cpus()
                self._transcriber = Transcriber(self.settings.model, threads, self.settings.glossary)
            return self._transcriber

    def build_sop(self, rec: Recording, sha256: str) -> tuple[Sop, dict[str, bytes], tuple[str, ...]]:
        """All stages for one recording; returns the SOP, its screenshots and warnings."""
        step = lambda stage, **kw: self.progress("stage", recording=str(rec.source), stage=stage, **kw)
        warnings: list[str] = []
        step("probe")
        try:
            info = decode.probe(rec.path)
        except decode.DecodeError as exc:
            raise BuildError(str(exc)) from exc
        if not info.has_video:
            raise BuildError("no video stream (audio-only file?)")
        if info.width < 16 or info.height < 16:
            raise BuildError(f"video too small to analyse ({info.width}x{info.height})")
        side = None
        side_path = sidecar.sidecar_path_for(rec.path)
        if side_path is not None and side_path.exists():
            try:
                side = sidecar.load_sidecar(side_path)
            except sidecar.SidecarError as exc:
                raise BuildError(f"sidecar {side_path.name}: {exc}") from exc
            warnings.extend(f"sidecar {side_path.name}: {w}" for w in side.warnings)

        transcriber = self.transcriber
        speech: dict[str, object] = {}

        def listen() -> None:
            try:
                if info.has_audio:
                    audio = decode.read_audio(rec.path)
                    speech["silence"] = align.SilenceMap(audio)
                    speech["transcript"] = transcriber.transcribe(audio)
                else:
                    speech["transcript"] = Transcript((), "en", transcriber.spec.label)
            except Exception as exc:  # reported on the main thread
                speech["error"] = exc

        worker = threading.Thread(target=listen, name="transcribe", daemon=True)
        worker.start()
        step("analyse video")
        geometry = decode.analysis_geometry(info)
        counter = diff.AmbientCounter(diff.cells_shape(geometry.width, geometry.height), geometry.fps)
        frames = _counted(decode.stream_gray_frames(rec.path, geometry))
        first = diff.FirstFrame()
        diffs = list(diff.diff_frames(frames, geometry.scale, counter, first))
        if frames.count == 0:
            worker.join()
            raise BuildError("no video frames could be decoded (truncated or corrupt file?)")
        timeline = keyframes.find_events(diffs, counter, geometry.fps, geometry.scale, frames.count,
                                         (info.width, info.height), first)
        del diffs
        step("transcribe")
        worker.join()
        if "error" in speech:
            exc = speech["error"]
            raise BuildError(f"cannot transcribe the audio: {exc}") from exc
        transcript: Transcript = speech["transcript"]  # type: ignore[assignment]
        if info.has_audio and not transcript.sentences:
            warnings.append("no speech recognised; steps have no narration")

        step("segment")
        duration = info.duration_s or frames.count / geometry.fps
        blocks = align.group_sentences(transcript.sentences, speech.get("silence"))  # type: ignore[arg-type]
        plans = segment.plan_steps(blocks, timeline.events, duration, geometry.fps)

        step("render")
        shot_index = {i: int(round(p.shot_time_s * geometry.fps)) for i, p in enumerate(plans)
                      if p.shot_time_s is not None}
        before_index = {i: max(0, int(round(p.change_s * geometry.fps)) - 1) for i, p in enumerate(plans)
                        if p.change_s is not None and i in shot_index}
        frames_rgb = decode.grab_rgb_frames(rec.path, info, geometry,
                                            sorted(set(shot_index.values()) | set(before_index.values())))
        texts = [instruct.describe_step([s.text for s in p.sentences], bool(p.events)) for p in plans]
        ids = step_ids([t.instruction for t in texts])
        pngs: dict[str, bytes] = {}
        steps: list[Step] = []
        for i, (plan, text, sid) in enumerate(zip(plans, texts, ids)):
            shot = None
            frame = frames_rgb.get(shot_index.get(i, -1))
            if frame is not None:
                highlight = plan.highlight
                before = frames_rgb.get(before_index.get(i, -1))
                if before is not None and highlight is not None:
                    highlight = keyframes.net_change_box(before, frame, highlight) or highlight
                name = render.image_path(i + 1)
                png = render.screenshot_png(frame, highlight)
                pngs[name] = png
                shot = Screenshot(name, round(shot_index[i] / geometry.fps, 3), hashlib.sha256(png).hexdigest(),
                                  highlight)
            steps.append(Step(id=sid, number=i + 1, start_s=plan.start_s, end_s=plan.end_s,
                              change_s=plan.change_s, instruction=text.instruction, kind=text.kind,
                              narration=_narration(plan), callouts=text.callouts, inputs=text.inputs,
                              screenshot=shot))
        fields = dict(side.fields) if side else {}
        sop = Sop(
            id=str(fields.pop("id", "") or slugify(str(rec.rel))),
            title=str(fields.pop("title", "") or _title_from_name(rec.rel.name)),
            summary=str(fields.pop("summary", "") or _summary(steps)),
            source=SourceInfo(str(rec.source), sha256, round(duration, 3), info.width, info.height,
                              round(info.fps, 3), info.has_audio),
            generator=GeneratorInfo("sopline", __version__, transcriber.spec.label,
                                    self.settings.digest(transcriber.spec.label)),
            metadata=fields, steps=tuple(steps),
            transcript=tuple(Sentence(s.start_s, s.end_s, s.text) for s in transcript.sentences))
        return sop, pngs, tuple(warnings)

    def build_one(self, rec: Recording, out: Path) -> BuildResult:
        self.progress("recording", recording=str(rec.source))
        sha = ""
        try:
            sha = sha256_file(rec.path)
            sop, pngs, warnings = self.build_sop(rec, sha)
            render.write_sop_folder(sop, pngs, out / Path(*rec.rel.parts))
        except BuildError as exc:
            return BuildResult(rec, False, str(exc), sha256=sha)
        except OSError as exc:
            return BuildResult(rec, False, f"{exc.strerror or exc}", sha256=sha)
        self.progress("done", recording=str(rec.source), steps=len(sop.steps))
        return BuildResult(rec, True, steps=len(sop.steps), warnings=warnings, sha256=sha)


def _narration(plan: StepPlan) -> tuple[Sentence, ...]:
    return tuple(Sentence(s.start_s, s.end_s, s.text) for s in plan.sentences)


class _counted:
    """Wraps a frame iterator and counts what it yielded."""

    def __init__(self, it):
        self._it = it
        self.count = 0

    def __iter__(self):
        for item in self._it:
            self.count += 1
            yield item


def build(paths: Sequence[Path], out: Path, settings: BuildSettings | None = None,
          progress: Progress | None = None) -> BuildReport:
    """Build an SOP for every recording under paths into out, then write out/index.json."""
    settings = settings or BuildSettings()
    builder = Builder(settings, progress)
    report = BuildReport()
    recordings = discover(paths, out)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        for rec in recordings:
            report.results.append(builder.build_one(rec, out))
        write_index(out, report)
    return report


@contextlib.contextmanager
def output_lock(out: Path):
    """One build at a time per output folder: a second concurrent build is refused
    clearly instead of interleaving writes to the same SOPs and manifest."""
    import fcntl

    with open(out / LOCK_NAME, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BuildError(f"{out}: another sopline build is writing to this folder") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_index(out: Path, report: BuildReport) -> None:
    """The manifest: one entry per SOP, merged with entries of recordings not in this run."""
    path = out / INDEX_NAME
    entries: dict[str, dict] = {}
    if path.exists():
        try:
            for entry in json.loads(path.read_text("utf-8")).get("sops", []):
                if isinstance(entry, dict) and isinstance(entry.get("sop"), str):
                    entries[entry["sop"]] = entry
        except (ValueError, AttributeError):
            entries = {}
    for r in report.results:
        key = f"{r.recording.rel}/sop.json"
        entry = {"sop": key, "source": str(r.recording.source), "sha256": r.sha256,
                 "status": "built" if r.ok else "failed", "steps": r.steps}
        if not r.ok:
            entry["error"] = r.message
            previous = entries.get(key)
            if previous and previous.get("status") == "built":
                entry["previous"] = {k: previous[k] for k in ("sha256", "steps") if k in previous}
        entries[key] = entry
    doc = {"schema_version": 1, "generator": {"name": "sopline", "version": __version__},
           "sops": [entries[k] for k in sorted(entries)]}
    atomic_write_bytes(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
