"""Build: discover recordings and run the stages for each, writing one SOP folder per recording.

The library API behind `sopline build`. Each recording is independent: a
failure is caught, reported in one line and recorded in the manifest, and the
previous SOP folder for that recording stays as it was (folders are replaced
atomically, only once everything for them has been written).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

from . import __version__, align, analyse, decode, diff, edits, frames, instruct, keyframes, render, screenshots, segment, shots, sidecar, speech, transcribe
from .fsutil import atomic_write_bytes, sha256_file
from .model import Box, GeneratorInfo, Screenshot, Sentence, Sop, SourceInfo, Step, StepPlan, StepText
from .transcribe import TranscribeError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")
INDEX_NAME = "index.json"
LOCK_NAME = ".sopline.lock"
# Speech threads at most on one narration (transcribe.Transcriber's workers): each one more
# holds its piece's buffers, ~90 MB with tiny.en (the model's weights are shared).
MAX_SPEECH_WORKERS = 4
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
    cpu_threads: int = 0  # speech threads; 0: transcribe.default_threads within `cores`
    cores: int = 0  # the cores this build may use; 0: all available (a --jobs worker: its share)
    max_duration_s: float | None = None  # refuse longer recordings up front (not in the digest: it never changes output)

    def digest(self, model_label: str) -> str:
        doc = {"model": model_label, "glossary": list(self.glossary),
               "analysis": {"max_w": decode.ANALYSIS_MAX_W, "max_h": decode.ANALYSIS_MAX_H,
                            "max_fps": decode.ANALYSIS_MAX_FPS, "noise": diff.NOISE_LEVEL,
                            "keyframe_noise": diff.KEYFRAME_NOISE_LEVEL, "skim": frames.SKIM_MIN_SHARE,
                            "event_gap_s": keyframes.EVENT_GAP_S, "block_pause_s": align.BLOCK_PAUSE_S}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """Everything an SOP's content depends on; an unchanged fingerprint means the SOP
    on disk is what a rebuild would write, so the recording can be skipped."""

    sha256: str
    sidecar: str | None  # path relative to the build root, posix
    sidecar_sha256: str | None
    edits: str | None
    edits_sha256: str | None
    settings_sha256: str
    generator_version: str
    model: str

    def as_entry(self) -> dict:
        return {"sha256": self.sha256, "sidecar": self.sidecar, "sidecar_sha256": self.sidecar_sha256,
                "edits": self.edits, "edits_sha256": self.edits_sha256,
                "settings_sha256": self.settings_sha256, "generator_version": self.generator_version,
                "model": self.model}

    def matches(self, entry: dict | None) -> bool:
        if not entry or entry.get("status") != "built":
            return False
        return all(entry.get(k) == v for k, v in self.as_entry().items())


@dataclass(frozen=True)
class BuildResult:
    recording: Recording
    ok: bool
    message: str = ""
    steps: int = 0
    warnings: tuple[str, ...] = ()
    sha256: str = ""
    fingerprint: Fingerprint | None = None
    skipped: bool = False  # unchanged since the last build: nothing was rewritten


@dataclass
class BuildReport:
    results: list[BuildResult] = field(default_factory=list)
    shard: tuple[int, int] | None = None

    @property
    def failed(self) -> list[BuildResult]:
        return [r for r in self.results if not r.ok]

    @property
    def skipped(self) -> list[BuildResult]:
        return [r for r in self.results if r.skipped]


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


_ID_MAX = 64


def step_id_base(instruction: str) -> str:
    """The id a step's instruction gives before de-duplication: its first six content
    words (accents folded), at most 64 characters; timing and position play no part."""
    folded = unicodedata.normalize("NFKD", instruction).encode("ascii", "ignore").decode("ascii")
    words = [w for w in re.findall(r"[a-z0-9]+", folded.lower()) if w not in _ID_STOP][:6]
    return "-".join(words)[:_ID_MAX].rstrip("-") or "step"


def step_ids(instructions: Sequence[str]) -> list[str]:
    """Ids from what each step says (its content words), so the same step keeps its id when
    re-recorded or moved (human edits are keyed by it); a repeated instruction gets -2,
    -3..., skipping any suffix that is another step's own id, so no two steps share one."""
    bases = [step_id_base(text) for text in instructions]
    reserved, used, ids = set(bases), set(), []
    for base in bases:
        sid, n = base, 2
        while sid in used or (sid != base and sid in reserved):
            sid, n = f"{base}-{n}", n + 1
        used.add(sid)
        ids.append(sid)
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
    """Runs the stages for recordings, sharing one speech process (model loaded once)."""

    def __init__(self, settings: BuildSettings, progress: Progress | None = None, *,
                 speech_in_process: bool = False):
        self.settings = settings
        self.progress = progress or (lambda *a, **k: None)
        self.speech_in_process = speech_in_process  # a --jobs worker: it is the separate process
        self._queued: dict[Path, tuple] = {}  # recording -> (its checks, its transcription's future)

    @property
    def cores(self) -> int:
        return self.settings.cores or decode.available_cpus()

    @property
    def speech_threads(self) -> int:
        """CTranslate2's threads: --threads, else what suits the model within the cores."""
        return self.settings.cpu_threads or transcribe.default_threads(self.settings.model, self.cores)

    @property
    def speech_workers(self) -> int:
        """Threads that may share a long narration's pieces once the video pass is over:
        as many as the cores hold at CTranslate2's threads each, up to MAX_SPEECH_WORKERS
        (each helper holds its piece's buffers; the model's weights are shared)."""
        return max(1, min(self.cores // self.speech_threads, MAX_SPEECH_WORKERS))

    @property
    def speech(self) -> speech.SpeechWorker:
        return speech.worker_for(self.settings.model, self.speech_threads, self.settings.glossary,
                                 self.speech_in_process, self.speech_workers)

    def queue_speech(self, rec: Recording) -> None:
        """Have the speech process start on this recording as soon as it is free. The
        process works through its queue in order, so a recording queued while the one
        before it is being built is transcribed while that one's screenshots are rendered
        and written and its own video pass runs: the speech process, the build's longest
        stage, never waits between recordings. A recording that fails its checks is not
        queued; building it reports why."""
        if rec.path in self._queued:
            return
        try:
            checked = self._checked(rec)
        except (BuildError, sidecar.SidecarError, OSError):
            return
        info = checked[0]
        self._queued[rec.path] = (checked, self.speech.listen(rec.path, info.has_audio, info.duration_s or None))

    def _checked(self, rec: Recording):
        """The recording's probe and sidecar, after the checks that refuse it before any
        decoding: (info, sidecar or None, warnings)."""
        warnings: list[str] = []
        try:
            info = decode.probe(rec.path)
        except decode.DecodeError as exc:
            raise BuildError(str(exc)) from exc
        if not info.has_video:
            raise BuildError("no video stream (audio-only file?)")
        if info.width < 16 or info.height < 16:
            raise BuildError(f"video too small to analyse ({info.width}x{info.height})")
        limit = self.settings.max_duration_s
        if limit is not None and info.duration_s > limit:
            raise BuildError(f"the recording lasts {render.format_ts(info.duration_s)} ({info.duration_s:g} s), "
                             f"longer than the maximum of {limit:g} s (--max-duration); refused before decoding")
        side = None
        side_path = sidecar.sidecar_path_for(rec.path)  # refuses links out of the folder, devices
        if side_path is not None and side_path.exists():
            try:
                side = sidecar.load_sidecar(side_path)
            except sidecar.SidecarError as exc:  # the reason alone: no machine path in index.json
                raise BuildError(f"sidecar {side_path.name}: {exc.reason}") from exc
            warnings.extend(f"sidecar {side_path.name}: {w}" for w in side.warnings)
        return info, side, warnings

    def build_sop(self, rec: Recording, sha256: str) -> tuple[Sop, dict[str, bytes], tuple[str, ...]]:
        """All stages for one recording; returns the SOP, its screenshots and warnings."""
        step = lambda stage, **kw: self.progress("stage", recording=str(rec.source), stage=stage, **kw)
        step("probe")
        listener = self.speech
        queued = self._queued.pop(rec.path, None)
        if queued is not None:
            (info, side, warnings), heard = queued
        else:
            info, side, warnings = self._checked(rec)
            heard = listener.listen(rec.path, info.has_audio, info.duration_s or None)  # runs beside the video pass
        step("analyse video")
        try:
            threads = frames.decoder_threads(info, self.settings.cores, self.speech_threads, self.cores)
            analysis = analyse.analyse_video(rec.path, info, threads=threads)
            if analysis.video.count == 0:
                analysis.video.close()
                raise BuildError("no video frames could be decoded (truncated or corrupt file?)")
        except BaseException:
            heard.cancel()
            raise
        geometry, video, timeline = analysis.geometry, analysis.video, analysis.timeline
        content_changes = analysis.content_changes
        duration = info.duration_s or video.count / geometry.fps
        step("transcribe")
        with screenshots.EarlyShots() as early:
            # Until transcription ends, lend the speech process the core the video pass
            # used (a helper thread takes the next pieces), load the instruction writer's
            # tables and, beside it, render the screenshots of the steps heard so far.
            spare_core = self.cores > self.speech_threads
            with listener.core_lent(spare_core):
                try:
                    instruct.warm_up()
                    if spare_core:
                        early.render_while_heard(video, timeline.events, duration, geometry.fps, content_changes,
                                                 heard_so_far=lambda: listener.heard_so_far(heard),
                                                 until=heard.done)
                except BaseException:
                    heard.cancel()
                    raise
                try:
                    result = listener.result(heard)
                except speech.SpeechModelError:
                    raise  # no recording can be built: the run fails as a whole
                except TranscribeError as exc:
                    raise BuildError(f"cannot transcribe the audio: {exc}") from exc
            transcript = result.transcript
            if info.has_audio and not transcript.sentences:
                warnings.append("no speech recognised; steps have no narration")

            step("segment")
            blocks = align.group_sentences(transcript.sentences, result.silence)
            plans = segment.plan_steps(blocks, timeline.events, duration, geometry.fps)

            step("render")
            texts = [instruct.describe_step([s.text for s in p.sentences], bool(p.events)) for p in plans]
            plans, texts = _fold_contentless(plans, texts)
            ids = step_ids([t.instruction for t in texts])
            pngs, shots_of = self._render_screenshots(plans, video, rec.path, info, geometry, content_changes, early)
        video.close()
        steps: list[Step] = []
        for i, (plan, text, sid) in enumerate(zip(plans, texts, ids)):
            steps.append(Step(id=sid, number=i + 1, start_s=plan.start_s, end_s=plan.end_s,
                              change_s=plan.change_s, instruction=text.instruction, kind=text.kind,
                              narration=_narration(plan), callouts=text.callouts, inputs=text.inputs,
                              screenshot=shots_of.get(i)))
        fields = dict(side.fields) if side else {}
        sop = Sop(
            id=str(fields.pop("id", "") or slugify(str(rec.rel))),
            title=str(fields.pop("title", "") or _title_from_name(rec.rel.name)),
            summary=str(fields.pop("summary", "") or _summary(steps)),
            source=SourceInfo(str(rec.source), sha256, round(duration, 3), info.width, info.height,
                              round(info.fps, 3), info.has_audio),
            generator=GeneratorInfo("sopline", __version__, listener.label,
                                    self.settings.digest(listener.label)),
            metadata=fields, steps=tuple(steps),
            transcript=tuple(Sentence(s.start_s, s.end_s, s.text) for s in transcript.sentences))
        # Human edits (<stem>.sop.edits.yaml) go on last, over the generated draft; a
        # generated summary is recomputed so it describes the edited steps.
        summarize = None if side and side.fields.get("summary") else _summary
        try:
            sop, pngs, edit_warnings = edits.apply_overlay(rec.path, sop, pngs, summarize)
        except edits.EditsError as exc:
            raise BuildError(f"edits {exc}") from exc
        warnings.extend(edit_warnings)
        return sop, pngs, tuple(warnings)

    def _render_screenshots(self, plans: Sequence[StepPlan], video: frames.VideoPass, path: Path, info,
                            geometry, content_changes: list[int], early: screenshots.EarlyShots,
                            ) -> tuple[dict[str, bytes], dict[int, Screenshot]]:
        """Each step's screenshot (PNG by image path, and its record by step index): those
        rendered early as they are, the rest now, PNG-encoded on every core (zlib runs
        without the GIL) beside the next frame's decompression."""
        last_frame = video.count - 1  # audio may outlast the video: never point past its end
        frames_of = {i: f for i, p in enumerate(plans) if (f := screenshots.shot_frames(p, geometry.fps, last_frame))}
        pngs: dict[str, bytes] = {}
        shots_of: dict[int, Screenshot] = {}

        def add(i: int, png: bytes, highlight: Box | None) -> None:
            shot = Screenshot(render.image_path(i + 1), round(frames_of[i][0] / geometry.fps, 3),
                              hashlib.sha256(png).hexdigest(), highlight)
            pngs[shot.path] = png
            shots_of[i] = shot

        stand_in = shots.stand_ins(sorted({n for f in frames_of.values() for n in f if n is not None}),
                                   sorted(video.kept), content_changes)
        for i, (n, before) in frames_of.items():
            rendered = early.get(screenshots.shot_key(n, before, plans[i].highlight, stand_in))
            if rendered is not None:
                add(i, *rendered)
        shots_at: dict[int, list[int]] = {}
        befores_at: dict[int, list[int]] = {}
        for i, (n, before) in frames_of.items():
            if i not in shots_of:
                shots_at.setdefault(n, []).append(i)
                if before is not None:
                    befores_at.setdefault(before, []).append(i)
        befores: dict[int, object] = {}  # step -> frame before its change, held until its shot arrives
        encoding: list[concurrent.futures.Future] = []
        cores = self.cores
        with concurrent.futures.ThreadPoolExecutor(cores) as pool:
            for n, frame in screenshots.frames_at(video, path, info, geometry, set(shots_at) | set(befores_at),
                                                  stand_in):
                for i in befores_at.get(n, ()):
                    befores[i] = frame
                for i in shots_at.get(n, ()):
                    encoding.append(pool.submit(lambda i, *a: (i, *screenshots.render_shot(*a)), i, frame,
                                                befores.pop(i, None), plans[i].highlight))
                running = [f for f in encoding if not f.done()]
                while len(running) > cores:  # bound the frames held by queued encodes
                    running = list(concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED).not_done)
            for future in encoding:
                add(*future.result())
        return pngs, shots_of

    def build_one(self, rec: Recording, out: Path, fingerprint: Fingerprint | None = None) -> BuildResult:
        """Build one recording's SOP folder; any failure becomes a failed result, and the
        SOP folder from an earlier build is then left exactly as it was."""
        self.progress("recording", recording=str(rec.source))
        fp = fingerprint
        try:
            if fp is None:
                fp = fingerprint_of(rec, self.settings)
            sop, pngs, warnings = self.build_sop(rec, fp.sha256)
            render.write_sop_folder(sop, pngs, out / Path(*rec.rel.parts))
        except (BuildError, sidecar.SidecarError) as exc:
            return BuildResult(rec, False, str(exc), sha256=fp.sha256 if fp else "", fingerprint=fp)
        except OSError as exc:
            return BuildResult(rec, False, f"{exc.strerror or exc}", sha256=fp.sha256 if fp else "",
                               fingerprint=fp)
        except (ValueError, ArithmeticError, MemoryError) as exc:  # a bug of ours: this recording only
            return BuildResult(rec, False, f"internal error ({type(exc).__name__}: {exc}); please report it",
                               sha256=fp.sha256 if fp else "", fingerprint=fp)
        self.progress("done", recording=str(rec.source), steps=len(sop.steps))
        return BuildResult(rec, True, steps=len(sop.steps), warnings=warnings, sha256=fp.sha256,
                           fingerprint=fp)


def _fold_contentless(plans: Sequence[StepPlan], texts: Sequence[StepText]):
    """A narration block that is pure filler ("Okay.", "So.") and changed nothing on screen
    is not a step: its sentences join the step before it (the next one at the start)."""
    import dataclasses

    kept_plans: list[StepPlan] = []
    kept_texts: list = []
    carried: tuple[Sentence, ...] = ()
    for plan, text in zip(plans, texts):
        if not text.instruction.strip() and not plan.events:
            if kept_plans:
                prev = kept_plans[-1]
                kept_plans[-1] = dataclasses.replace(prev, sentences=prev.sentences + plan.sentences,
                                                     end_s=max(prev.end_s, plan.end_s))
            else:
                carried += plan.sentences
            continue
        if carried:
            plan = dataclasses.replace(plan, sentences=carried + plan.sentences,
                                       start_s=min(plan.start_s, carried[0].start_s))
            carried = ()
        kept_plans.append(plan)
        kept_texts.append(text)
    return kept_plans, kept_texts


def _narration(plan: StepPlan) -> tuple[Sentence, ...]:
    return tuple(Sentence(s.start_s, s.end_s, s.text) for s in plan.sentences)


def fingerprint_of(rec: Recording, settings: BuildSettings, model_label: str | None = None) -> Fingerprint:
    """Hash the recording and the files beside it that shape its SOP (reads bytes only:
    this is all a no-op rebuild costs)."""
    from .transcribe import resolve_model

    label = model_label or resolve_model(settings.model).label
    beside = rec.source.parent

    def optional(path: Path) -> tuple[str | None, str | None]:
        if not os.path.lexists(path):
            return None, None
        if path.is_symlink() or not path.is_file():  # a link to /dev/zero would hash forever
            raise BuildError(f"{path.name}: not a regular file (symlinks are not followed)")
        return str(beside / path.name), sha256_file(path)

    side, side_sha = optional(sidecar.sidecar_path_for(rec.path))
    overlay, overlay_sha = optional(edits.edits_path_for(rec.path))
    return Fingerprint(sha256_file(rec.path), side, side_sha, overlay, overlay_sha, settings.digest(label),
                       __version__, label)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1-based) to ``(I, N)``; raises ValueError with a readable message."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise ValueError(f"{text!r} is not of the form I/N (e.g. 2/4)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"{text!r}: need 1 <= I <= N")
    return index, count


def shard_of(rel: PurePosixPath | str, count: int) -> int:
    """The 1-based shard a recording belongs to: a hash of its path, so a recording stays in
    its shard whatever else is added or removed (a CI matrix keeps its caches warm)."""
    digest = hashlib.sha256(str(rel).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def build(paths: Sequence[Path], out: Path, settings: BuildSettings | None = None,
          progress: Progress | None = None, *, force: bool = False,
          shard: tuple[int, int] | None = None, jobs: int = 1) -> BuildReport:
    """Build an SOP for every recording under paths into out, then write out/index.json.

    Recordings whose fingerprint (recording, sidecar, edits, settings, generator) matches
    the manifest are skipped unless ``force``; ``shard=(I, N)`` builds only the I-th of N
    stable shares; ``jobs`` > 1 builds in that many worker processes.
    """
    from .transcribe import resolve_model

    settings = settings or BuildSettings()
    progress = progress or (lambda *a, **k: None)
    recordings = discover(paths, out)
    if shard is not None:
        recordings = [r for r in recordings if shard_of(r.rel, shard[1]) == shard[0]]
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        previous = read_index(out)
        label = resolve_model(settings.model).label
        results: dict[int, BuildResult] = {}
        todo: list[tuple[int, Recording, Fingerprint]] = []
        builder = Builder(settings, progress)
        for i, rec in enumerate(recordings):
            try:
                fp = fingerprint_of(rec, settings, label)
            except sidecar.SidecarError as exc:
                results[i] = BuildResult(rec, False, exc.reason)
                continue
            except BuildError as exc:
                results[i] = BuildResult(rec, False, str(exc))
                continue
            except OSError as exc:
                results[i] = BuildResult(rec, False, f"{exc.strerror or exc}")
                continue
            entry = previous.get(_index_key(rec))
            if not force and fp.matches(entry) and (out / Path(*rec.rel.parts) / "sop.json").is_file():
                results[i] = BuildResult(rec, True, steps=int(entry.get("steps") or 0), sha256=fp.sha256,
                                         fingerprint=fp, skipped=True)
                progress("skipped", recording=str(rec.source))
            else:
                todo.append((i, rec, fp))
                if jobs == 1 and len(todo) == 1:  # a library's first change: no wait for the rest's hashes
                    builder.queue_speech(rec)
        if jobs > 1 and len(todo) > 1:
            results.update(_build_parallel(todo, out, settings, jobs, progress))
        else:
            for k, (i, rec, fp) in enumerate(todo):
                if k + 1 < len(todo):
                    builder.queue_speech(todo[k + 1][1])
                results[i] = builder.build_one(rec, out, fp)
        report = BuildReport([results[i] for i in range(len(recordings))], shard)
        write_index(out, report, previous)
    return report


_worker_builder: Builder | None = None


def _init_worker(settings: BuildSettings) -> None:
    global _worker_builder
    _worker_builder = Builder(settings, speech_in_process=True)  # speech in a thread of this worker


def _build_in_worker(rec: Recording, out: Path, fp: Fingerprint) -> BuildResult:
    assert _worker_builder is not None
    return _worker_builder.build_one(rec, out, fp)


def _build_parallel(todo, out: Path, settings: BuildSettings, jobs: int, progress: Progress) -> dict:
    """Recordings in worker processes: each loads the model once and gets its share of the
    cores for CTranslate2, so N jobs never run more speech threads than there are cores."""
    import dataclasses
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    jobs = min(jobs, len(todo))
    worker_settings = dataclasses.replace(settings, cores=max(1, decode.available_cpus() // jobs))
    results: dict[int, BuildResult] = {}
    # spawn, not fork: the parent may hold threads (progress, ffmpeg readers) and OpenMP state
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                             initargs=(worker_settings,)) as pool:
        futures = {}
        for i, rec, fp in todo:
            futures[pool.submit(_build_in_worker, rec, out, fp)] = (i, rec, fp)
        for future in as_completed(futures):
            i, rec, fp = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool:
                result = BuildResult(rec, False, "the worker process building it died (out of memory?)",
                                     sha256=fp.sha256, fingerprint=fp)
            except Exception as exc:  # noqa: BLE001 - one recording's failure must not stop the rest
                result = BuildResult(rec, False, f"unexpected error: {exc}", sha256=fp.sha256, fingerprint=fp)
            results[i] = result
            if result.ok:
                progress("done", recording=str(rec.source), steps=result.steps)
            else:
                progress("failed", recording=str(rec.source))
    return results


@contextlib.contextmanager
def output_lock(out: Path):
    """One build at a time per output folder: a second concurrent build is refused
    clearly instead of interleaving writes to the same SOPs and manifest."""
    import fcntl

    # O_NOFOLLOW: a committed symlink named like the lock must not create a file elsewhere
    try:
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise BuildError(f"{out / LOCK_NAME}: cannot open the lock file ({exc.strerror or exc}; "
                         "a symlink there is refused)") from exc
    with os.fdopen(fd, "r+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BuildError(f"{out}: another sopline build is writing to this folder") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _index_key(rec: Recording) -> str:
    return f"{rec.rel}/sop.json"


def read_index(out: Path) -> dict[str, dict]:
    """The manifest's entries by SOP path; an unreadable manifest counts as empty (everything
    is then rebuilt, which is slow but never wrong)."""
    path = out / INDEX_NAME
    entries: dict[str, dict] = {}
    if not path.is_file():
        return entries
    try:
        doc = json.loads(path.read_text("utf-8"))
        for entry in doc.get("sops", []):
            if isinstance(entry, dict) and isinstance(entry.get("sop"), str):
                entries[entry["sop"]] = entry
    except (ValueError, AttributeError, OSError):
        return {}
    return entries


def write_index(out: Path, report: BuildReport, previous: dict[str, dict] | None = None) -> None:
    """The manifest: one entry per SOP, merged with entries of recordings not in this run
    (another shard's, or a recording built earlier from another path argument)."""
    entries = dict(read_index(out) if previous is None else previous)
    for r in report.results:
        key = _index_key(r.recording)
        entry = {"sop": key, "source": str(r.recording.source)}
        if r.fingerprint is not None:
            entry.update(r.fingerprint.as_entry())
        else:
            entry["sha256"] = r.sha256
        entry.update({"status": "built" if r.ok else "failed", "steps": r.steps})
        if not r.ok:
            entry["error"] = r.message
            earlier = entries.get(key)
            if earlier and earlier.get("status") == "built":
                entry["previous"] = {k: earlier[k] for k in ("sha256", "steps") if k in earlier}
            elif earlier and isinstance(earlier.get("previous"), dict):
                entry["previous"] = earlier["previous"]
        entries[key] = entry
    write_index_entries(out, entries, report.shard)


def write_index_entries(out: Path, entries: dict[str, dict], shard: tuple[int, int] | None = None) -> None:
    doc: dict = {"schema_version": 1, "generator": {"name": "sopline", "version": __version__}}
    if shard is not None:
        doc["shard"] = f"{shard[0]}/{shard[1]}"
    doc["sops"] = [entries[k] for k in sorted(entries)]
    atomic_write_bytes(out / INDEX_NAME, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
