#!/usr/bin/env python3
"""The measured programs of the bench, each run in a fresh process by run_bench.py.

    tasks.py speech REC          speech floor: bare faster-whisper (sopline's model, threads and
                                 decoding settings) on the whole recording in one call
    tasks.py analysis REC [N]    sopline's video pass alone (decode -> diff -> keyframes, keeping
                                 screenshot frames), in-process, with the decoder threads the
                                 build gives it; before it, the same decoder and filters with
                                 no analysis, so what the analysis adds to
                                 decoding is the difference of the two; the pair runs N times
                                 (5) and the round with the median difference is reported
    tasks.py scenedetect NAME REC SOP_JSON
                                 PySceneDetect's detector NAME (content, adaptive, hash) with
                                 its defaults; the scenes are written as a minimal sop.json
                                 that ../shared/corpus/score.py can score

Each prints one JSON object on its last stdout line.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

if not os.environ.get("PYTHONPATH"):  # else the copy of the package it names (run_bench.py --pythonpath)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _package() -> str:
    import pipeline

    return str(Path(pipeline.__file__).parent)


def _speech_threads() -> tuple[int, int]:
    """(CTranslate2's threads, cores) as `sopline build` chooses them (an older copy of the
    package gave speech every core)."""
    from pipeline import decode
    from pipeline.build import Builder, BuildSettings

    builder = Builder(BuildSettings())
    cores = getattr(builder, "cores", decode.available_cpus())
    return getattr(builder, "speech_threads", cores), cores


# sopline's decoding settings before transcribe.decode_options existed (an older copy)
_DECODE_OPTIONS = dict(language="en", task="transcribe", beam_size=5, temperature=0.0,
                       condition_on_previous_text=False, word_timestamps=True, vad_filter=True,
                       vad_parameters={"min_silence_duration_ms": 400, "speech_pad_ms": 200}, hotwords=None)


def speech(rec: Path) -> dict:
    """Bare faster-whisper, as a user would call it by hand: sopline's model, CTranslate2
    threads and decoding settings, the whole recording in one transcribe() call that reads
    the audio itself (PyAV). No pieces, no helper process, nothing of sopline's around it."""
    from faster_whisper import WhisperModel

    from pipeline import transcribe

    t0 = time.perf_counter()
    threads, _ = _speech_threads()
    spec = transcribe.resolve_model(None)
    model = WhisperModel(spec.location, device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1)
    options = transcribe.decode_options() if hasattr(transcribe, "decode_options") else _DECODE_OPTIONS
    t1 = time.perf_counter()
    segments, info = model.transcribe(str(rec), **options)
    words = sum(len(s.words or ()) for s in segments)
    t2 = time.perf_counter()
    return {"threads": threads, "model": spec.label, "load_s": round(t1 - t0, 3),
            "transcribe_s": round(t2 - t1, 3), "audio_s": round(info.duration, 3), "words": words}


def _decoder_threads(rec: Path) -> int:
    """The decoder threads `sopline build` gives this recording's video pass (0: libavcodec's
    choice; a copy of the package older than the choice always decoded so)."""
    from pipeline import decode, frames

    if not hasattr(frames, "decoder_threads"):
        return 0
    speech_threads, cores = _speech_threads()
    if hasattr(frames, "TRANSCRIPTION_CORES"):  # round 7's rule: (info, threads, cores)
        return frames.decoder_threads(decode.probe(rec), 0, speech_threads)
    return frames.decoder_threads(decode.probe(rec), 0, speech_threads, cores)


def _decoding_only(rec: Path, threads: int) -> tuple[float, float]:
    """Wall and process CPU of the video pass's decoder and filters (fps, rotation) with no
    analysis and nothing kept: what any frame analysis in this process starts from."""
    from pipeline import decode, frames

    geometry = decode.analysis_geometry(decode.probe(rec))
    t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    for _ in frames.VideoPass(rec, geometry, analysis=False, threads=threads)._frames():  # noqa: SLF001
        pass
    return time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - c0


def _video_pass(rec: Path, threads: int) -> dict:
    from visual_digest import video_pass

    t0 = time.perf_counter()
    self0 = _cpu(resource.RUSAGE_SELF)
    split: dict = {}
    diffs, _, _, timeline, frames = video_pass(rec, split, threads)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "python_cpu_s": _cpu(resource.RUSAGE_SELF) - self0, **split, "frames": frames,
            "diffs": len(diffs), "events": len(timeline.events)}


def analysis(rec: Path, rounds: int = 5) -> dict:
    """Decoding alone and the video pass, one after the other, `rounds` times in this
    process. What the analysis adds is the median over rounds of the pass's CPU less the
    decoding's just before it: on a shared machine one run of either swings by 10-30 %, and
    a pair run back to back shares the machine's state. The round with the median
    difference is reported, with every round's figures beside it."""
    threads = _decoder_threads(rec)
    rounds_run = []
    for _ in range(rounds):
        decoding = _decoding_only(rec, threads)
        rounds_run.append((decoding, _video_pass(rec, threads)))
    by_added = sorted(rounds_run, key=lambda r: r[1]["python_cpu_s"] - r[0][1])
    (decoding_wall, decoding_cpu), run = by_added[len(by_added) // 2]
    return {**{k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()},
            "decoding_only_wall_s": round(decoding_wall, 3), "decoding_only_cpu_s": round(decoding_cpu, 3),
            "decoder_threads": threads, "rounds": rounds, "decoding_only_cpus_s": [round(d[1], 3) for d, _ in rounds_run],
            "pass_cpus_s": [round(p["python_cpu_s"], 3) for _, p in rounds_run],
            "ffmpeg_cpu_s": round(_cpu(resource.RUSAGE_CHILDREN), 3), "package": _package()}


DETECTORS = ("content", "adaptive", "hash")


def scenedetect(name: str, rec: Path, sop_json: Path) -> dict:
    import scenedetect as sd

    detector = {"content": sd.ContentDetector, "adaptive": sd.AdaptiveDetector, "hash": sd.HashDetector}[name]()
    t0 = time.perf_counter()
    scenes = sd.detect(str(rec), detector)
    wall = time.perf_counter() - t0
    steps = []
    for i, (start, end) in enumerate(scenes):
        s, e = start.get_seconds(), end.get_seconds()
        # a scene after a cut is a "step" whose screen change is the cut; the first scene
        # starts with the recording, not with a change
        steps.append({"number": i + 1, "start_s": round(s, 3), "end_s": round(e, 3),
                      "change_s": round(s, 3) if i else None, "narration": [],
                      "screenshot": {"time_s": round((s + e) / 2, 3)}})
    sop_json.parent.mkdir(parents=True, exist_ok=True)
    sop_json.write_text(json.dumps({"schema_version": 1, "steps": steps, "transcript": []}, indent=1))
    return {"wall_s": round(wall, 3), "scenes": len(scenes), "cuts": max(0, len(scenes) - 1)}


def main(argv: list[str]) -> None:
    what, *args = argv
    if what == "speech":
        out = speech(Path(args[0]))
    elif what == "analysis":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        out = analysis(Path(args[0]), *(int(a) for a in args[1:2]))
    elif what == "scenedetect":
        out = scenedetect(args[0], Path(args[1]), Path(args[2]))
    else:
        raise SystemExit(f"unknown task {what!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
