#!/usr/bin/env python3
"""Speed, memory and step-finding accuracy of `sopline build` against its floors and its peers.

For every input recording, each in a fresh process of its own:
  decode    `ffmpeg -i REC -f null -`                                   (decode floor)
  speech    bare faster-whisper: sopline's model, threads and decoding
            settings, the whole recording in one transcribe() call      (speech floor)
  build     `sopline build` on a folder holding only that recording; speech floor and
            build run in back-to-back pairs (--pairs, 3), order alternating, and the
            pair with the median ratio is kept
  analysis  sopline's video pass alone (decode -> diff -> keyframes), decoding as the
            build does (one thread beside transcription where that is cheaper), its main
            thread's analysis CPU split out, each run right after the same decoding
            alone, five times in one process. The target reads the analysis's own CPU
            (diff + keyframes, as the issue words it) over the decode floor (the least
            disturbed of two runs); beside it, with keeping screenshot frames, and what
            the whole pass adds over decoding alone (the median of the five differences:
            also the decoder slowed by sharing caches with the analysis)
  content / adaptive / hash
            PySceneDetect's detectors with their defaults
and, where the recording has a truth file, boundary F1 of ours and of each detector's
scenes through ../shared/corpus/score.py. Peak RSS is the largest sum over the measured
process tree (polled) and the largest single process (getrusage of the wrapper's children).
Then `sopline build --jobs 1` against `--jobs 2` on the corpus folder.

Inputs: the corpus recordings (with truth), plus long ones made by looping one of them to
--minutes at --heights (cached in bench/.cache/, truth looped with them). Prints Markdown
tables and writes JSON to bench/results/.

    bench/run_bench.py --quick                      corpus only
    bench/run_bench.py --minutes 10 30 --heights 720 1080
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
from pipeline.decode import ffmpeg_binary, probe  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
DETECTORS = ("content", "adaptive", "hash")
TOLERANCE_S = 1.5
TARGET_WALL_RATIO = 1.15
TARGET_ANALYSIS_CPU = 0.15
TARGET_RSS_MB = 700
TARGET_JOBS_EXTRA_CPU = 0.15

# Runs the command, then reports the rusage of everything it waited for: CPU is the sum over
# the whole tree, ru_maxrss the largest single process in it.
_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[2], "wb") as out, open(sys.argv[3], "wb") as err:
    rc = subprocess.call(sys.argv[4:], stdout=out, stderr=err, stdin=subprocess.DEVNULL)
wall = time.perf_counter() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": rc, "wall_s": wall, "cpu_s": r.ru_utime + r.ru_stime, "max_proc_rss_mb": r.ru_maxrss / 1024},
          open(sys.argv[1], "w"))
"""


@dataclass(frozen=True)
class Input:
    name: str
    path: Path
    truth: Path | None
    kind: str  # corpus | long
    minutes: float | None = None
    height: int | None = None


ENV: dict[str, str] = dict(os.environ)  # for every measured process (--pythonpath sets PYTHONPATH)


def measure(cmd: list[str], poll_s: float = 0.05) -> dict:
    """Run cmd in a fresh wrapper process: wall, tree CPU, peak RSS, its JSON output."""
    with tempfile.TemporaryDirectory(prefix="sopline-bench-") as tmp:
        files = [str(Path(tmp) / n) for n in ("rusage.json", "stdout", "stderr")]
        proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, *files, *cmd], stdin=subprocess.DEVNULL, env=ENV,
                                cwd=tmp)  # not the checkout: `python -m` puts the cwd first on sys.path
        wrapper = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            total = 0
            try:
                for child in wrapper.children(recursive=True):
                    try:
                        total += child.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(poll_s)
        usage = json.loads(Path(files[0]).read_text())
        stdout = Path(files[1]).read_text(errors="replace").strip().splitlines()
        stderr = Path(files[2]).read_text(errors="replace").strip().splitlines()
    result = {"wall_s": round(usage["wall_s"], 3), "cpu_s": round(usage["cpu_s"], 3),
              "tree_rss_mb": round(peak / 2**20, 1), "max_proc_rss_mb": round(usage["max_proc_rss_mb"], 1),
              "rc": usage["rc"]}
    result["tree_rss_mb"] = max(result["tree_rss_mb"], result["max_proc_rss_mb"])  # polling can miss a peak
    if stdout:
        try:
            result["out"] = json.loads(stdout[-1])
        except ValueError:
            pass
    if usage["rc"] != 0:
        result["error"] = (stderr[-1] if stderr else f"exit {usage['rc']}")[:300]
    return result


def best(cmd: list[str], repeat: int) -> dict:
    """The fastest of `repeat` runs: on a shared machine the minimum is the least disturbed."""
    runs = [measure(cmd) for _ in range(repeat)]
    top = min(runs, key=lambda r: r["wall_s"])
    if repeat > 1:
        top = dict(top, walls_s=[r["wall_s"] for r in runs])
    return top


# ---------------------------------------------------------------- inputs

def corpus_inputs(folder: Path) -> list[Input]:
    return [Input(p.stem, p, p.with_name(p.stem + ".truth.json"), "corpus")
            for p in sorted(folder.glob("*.mp4")) if p.with_name(p.stem + ".truth.json").exists()]


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def loop_period(looped: Path, source: Path) -> float:
    """Seconds between the starts of two loops, read from the looped file's packet times:
    the first packet of the second loop follows the source's last packet."""
    import av

    with av.open(str(source)) as c:
        n = sum(1 for p in c.demux(video=0) if p.size)
    with av.open(str(looped)) as c:
        stream = c.streams.video[0]
        pts = [p.pts for p, _ in zip((p for p in c.demux(video=0) if p.size), range(n + 1))]
        return float((pts[n] - pts[0]) * stream.time_base)


def looped_truth(truth: dict, period: float, duration: float) -> dict:
    """The source's truth repeated every `period` seconds, keeping steps wholly inside."""
    steps = []
    for k in range(int(math.ceil(duration / period)) + 1):
        shift = k * period
        for step in truth["steps"]:
            s = json.loads(json.dumps(step))
            for key in ("action_start_s", "action_end_s", "settled_s"):
                if s.get(key) is not None:
                    s[key] = round(s[key] + shift, 3)
            for sent in s["sentences"]:
                sent["start_s"] = round(sent["start_s"] + shift, 3)
                sent["end_s"] = round(sent["end_s"] + shift, 3)
            last = max([s["sentences"][-1]["end_s"], s.get("action_end_s") or 0, s.get("settled_s") or 0])
            if last < duration - 0.5:
                s["index"] = len(steps) + 1
                steps.append(s)
    return dict(truth, name=f"{truth['name']}-looped", duration_s=round(duration, 3), steps=steps)


def long_input(source: Path, minutes: float, height: int, cache: Path) -> Input:
    """`source` looped to `minutes` (stream copy), scaled to `height` (x264 veryfast) when
    that is not its own height; cached, with its looped truth beside it."""
    cache.mkdir(parents=True, exist_ok=True)
    info = probe(source)
    stem = f"{source.stem}-{minutes:g}min"
    base = cache / f"{stem}-{info.height}p.mp4"
    if not base.exists():
        tmp = base.with_suffix(".part.mp4")
        _ffmpeg("-stream_loop", "-1", "-i", str(source), "-t", str(minutes * 60), "-c", "copy",
                "-movflags", "+faststart", str(tmp))
        tmp.rename(base)
    path = base
    if height != info.height:
        path = cache / f"{stem}-{height}p.mp4"
        if not path.exists():
            tmp = path.with_suffix(".part.mp4")
            # the same timeline as the stream-copied loop, only re-encoded at another size
            _ffmpeg("-i", str(base), "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "veryfast",
                    "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "copy", "-movflags", "+faststart", str(tmp))
            tmp.rename(path)
    truth_path = path.with_name(path.stem + ".truth.json")
    src_truth = source.with_name(source.stem + ".truth.json")
    if not truth_path.exists() and src_truth.exists():
        truth = looped_truth(json.loads(src_truth.read_text()), loop_period(base, source), probe(path).duration_s)
        truth_path.write_text(json.dumps(truth, indent=1))
    return Input(path.stem, path, truth_path if truth_path.exists() else None, "long", minutes, height)


# ---------------------------------------------------------------- scoring

def _score_module():
    spec = importlib.util.spec_from_file_location("corpus_score", CORPUS / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def score(truth: Path | None, sop_json: Path) -> dict | None:
    if truth is None or not sop_json.exists():
        return None
    r = _score_module().score_one(json.loads(truth.read_text()), json.loads(sop_json.read_text()), TOLERANCE_S)
    return {k: round(r[k], 3) for k in ("f1", "precision", "recall", "screenshot", "narration")} | {
        "sop_steps": r["sop_steps"], "true_steps": r["true_steps"]}


# ---------------------------------------------------------------- one input

def sopline_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


MEASURES = ("decode", "speech", "build", "analysis", "scenedetect")
# The decode floor is the denominator of the analysis target: the least disturbed of at least
# this many runs (one run swings by 10-30 % here), as the analysis task takes its two.
FLOOR_RUNS = 2


def bench_input(inp: Input, work: Path, repeat: int, detectors: tuple[str, ...],
                only: tuple[str, ...] = MEASURES, pair_count: int = 3) -> dict:
    info = probe(inp.path)
    row: dict = {"input": inp.name, "kind": inp.kind, "minutes": inp.minutes, "height": info.height,
                 "width": info.width, "fps": info.fps, "duration_s": info.duration_s,
                 "size_mb": round(inp.path.stat().st_size / 2**20, 1), "pyscenedetect": {}}
    say = lambda what: print(f"  {inp.name}: {what}", file=sys.stderr, flush=True)
    if "decode" in only:
        say("decode floor")
        row["decode"] = best([ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error",
                              "-i", str(inp.path), "-f", "null", "-"], max(repeat, FLOOR_RUNS))
    speech_cmd = [sys.executable, str(BENCH / "tasks.py"), "speech", str(inp.path)]
    src = work / inp.name / "in"
    src.mkdir(parents=True, exist_ok=True)
    link = src / f"{inp.name}.mp4"
    if not link.exists():
        link.symlink_to(inp.path.resolve())
    out = work / inp.name / "sopline"

    def build_once() -> dict:
        shutil.rmtree(out, ignore_errors=True)
        return measure(sopline_cmd("build", str(src), "-o", str(out)))

    if "speech" in only and "build" in only:
        # Floor and build in pairs, the order alternating, the pair with the median ratio
        # kept: one run of either swings by ~10 % here, as much as the target's margin, and
        # a pair run back to back shares the machine's state.
        pairs = []
        for k in range(pair_count):
            say(f"speech floor and sopline build, pair {k + 1} of {pair_count}")
            first, second = (speech_cmd, None) if k % 2 == 0 else (None, speech_cmd)
            a = measure(first) if first else build_once()
            b = measure(second) if second else build_once()
            sp, bu = (a, b) if first else (b, a)
            floor = max(sp["wall_s"], (row.get("decode") or {}).get("wall_s", 0.0))
            pairs.append((round(bu["wall_s"] / floor, 4), sp, bu))
        _, row["speech"], row["build"] = sorted(pairs, key=lambda p: p[0])[len(pairs) // 2]
        row["pairs"] = [{"speech_wall_s": sp["wall_s"], "build_wall_s": bu["wall_s"], "ratio": r,
                         "build_first": bool(k % 2), "build_tree_rss_mb": bu["tree_rss_mb"]}
                        for k, (r, sp, bu) in enumerate(pairs)]
    else:
        if "speech" in only:
            say("speech floor")
            row["speech"] = best(speech_cmd, repeat)
        if "build" in only:
            say("sopline build")
            runs = [build_once() for _ in range(repeat)]
            row["build"] = min(runs, key=lambda r: r["wall_s"])
            if repeat > 1:
                row["build"]["walls_s"] = [r["wall_s"] for r in runs]
    if row.get("build"):  # every run builds the same bytes: the last one's SOP is scored
        row["build"]["score"] = score(inp.truth, out / inp.name / "sop.json")
    if "analysis" in only:
        say("video pass alone")
        row["analysis"] = best([sys.executable, str(BENCH / "tasks.py"), "analysis", str(inp.path)], repeat)
    if "scenedetect" in only:
        for name in detectors:
            say(f"PySceneDetect {name}")
            sop = work / inp.name / name / inp.name / "sop.json"
            r = best([sys.executable, str(BENCH / "tasks.py"), "scenedetect", name, str(inp.path), str(sop)], repeat)
            r["score"] = score(inp.truth, sop)
            row["pyscenedetect"][name] = r
    row["ratios"] = ratios(row)
    return row


def _div(a, b, digits: int = 3):
    return round(a / b, digits) if a is not None and b else None


def ratios(row: dict) -> dict:
    dec, sp, bu, an = (row.get(k) or {} for k in ("decode", "speech", "build", "analysis"))
    out: dict = {}
    if dec and sp:
        floor = max(dec["wall_s"], sp["wall_s"])
        out.update(floor_wall_s=floor, floor_is="decode" if dec["wall_s"] >= sp["wall_s"] else "speech")
        if bu:
            out.update(build_over_floor=_div(bu["wall_s"], floor),
                       build_cpu_over_floors_cpu=_div(bu["cpu_s"], dec["cpu_s"] + sp["cpu_s"]))
    if bu:
        out["build_over_duration"] = _div(bu["wall_s"], row["duration_s"], 4)
    a = an.get("out", {})
    if a and dec:
        if "diff_cpu_s" in a:  # the main thread's own CPU in the analysis, without and with keeping frames
            out["diff_keyframes_cpu_s"] = round(a["diff_cpu_s"] + a["keyframes_cpu_s"], 3)
            out["diff_keyframes_cpu_over_decode_cpu"] = _div(out["diff_keyframes_cpu_s"], dec["cpu_s"])
            out["with_keeping_cpu_over_decode_cpu"] = _div(out["diff_keyframes_cpu_s"] + a.get("keep_cpu_s", 0.0),
                                                           dec["cpu_s"])
        if "decoding_only_cpu_s" in a:  # the video pass less the same decoding without analysis
            out["analysis_added_cpu_s"] = round(a["python_cpu_s"] - a["decoding_only_cpu_s"], 3)
            out["analysis_added_cpu_over_decode_cpu"] = _div(out["analysis_added_cpu_s"], dec["cpu_s"])
        out["video_pass_cpu_over_decode_cpu"] = _div(a["python_cpu_s"], dec["cpu_s"])
    for name, r in row["pyscenedetect"].items():
        if dec:
            out[f"{name}_over_decode_wall"] = _div(r["wall_s"], dec["wall_s"], 2)
    return out


# ---------------------------------------------------------------- --jobs

def bench_jobs(folder: Path, work: Path, repeat: int, jobs: tuple[int, ...] = (1, 2)) -> dict:
    rows = {}
    for n in jobs:
        print(f"  jobs: sopline build {folder.name} --jobs {n}", file=sys.stderr, flush=True)
        out = work / f"jobs-{folder.name}-{n}"
        runs = []
        for _ in range(repeat):
            shutil.rmtree(out, ignore_errors=True)
            runs.append(measure(sopline_cmd("build", str(folder), "-o", str(out), "--jobs", str(n))))
        rows[str(n)] = min(runs, key=lambda r: r["wall_s"])
    base = rows[str(jobs[0])]["wall_s"]
    for n, r in rows.items():
        r["speedup"] = round(base / r["wall_s"], 3) if r["wall_s"] else None
        r["cores_busy"] = round(r["cpu_s"] / r["wall_s"], 2) if r["wall_s"] else None
    return {"folder": folder.name, "recordings": len(list(folder.glob("*.mp4"))), "runs": rows}


# ---------------------------------------------------------------- report

def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("faster_whisper", "ctranslate2", "scenedetect", "cv2", "numpy", "scipy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = None
    ff = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "ffmpeg": ff, "versions": versions}


def _f(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _cell(m: dict | None, fmt: str) -> str:
    """`fmt` filled from measurement m, or a dash when it was not measured."""
    return "–" if not m else fmt.format(**m)


def tables(doc: dict) -> str:
    rows = doc["inputs"]
    ws = "{wall_s:.1f} / {cpu_s:.1f} s"
    lines = ["### Floors and build (wall / CPU)", "",
             "| input | length | decode floor | speech floor | sopline build | build ÷ max(floors) | F1 ours "
             "| screenshot ours |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        q, sc = r["ratios"], (r.get("build") or {}).get("score") or {}
        lines.append(f"| {r['input']} | {r['duration_s']:.0f} s {r['height']}p | {_cell(r.get('decode'), ws)} "
                     f"| {_cell(r.get('speech'), ws)} | {_cell(r.get('build'), ws)} "
                     f"| {_f(q.get('build_over_floor'))} ({q.get('floor_is', '–')}{_pair_ratios(r)}) "
                     f"| {_f(sc.get('f1'), '{:.3f}')} "
                     f"| {_f(sc.get('screenshot'), '{:.3f}')} |")
    rss = "{tree_rss_mb:.0f} MB ({max_proc_rss_mb:.0f})"
    lines += ["", "### Peak RSS (sum over the process tree; largest single process in brackets)", "",
              "| input | decode floor | speech floor | sopline build | video pass alone |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [_cell(r.get(k), rss) for k in ("decode", "speech", "build", "analysis")]
        lines.append(f"| {r['input']} | " + " | ".join(cells) + " |")
    lines += ["", "### Frame analysis (sopline's video pass alone, CPU seconds)", "",
              "| input | decode floor (ffmpeg tool) | decoding in-process (decoder threads), no analysis | video pass "
              "| added by the analysis | of it in the main thread: diff / keeping frames (kept) / keyframes "
              "| diff + keyframes ÷ decode floor (the target) | with keeping frames | added ÷ decode floor "
              "| whole pass ÷ decode floor |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        an = r.get("analysis") or {}
        o, q = an.get("out", {}), r["ratios"]
        lines.append(f"| {r['input']} | {_cell(r.get('decode'), '{cpu_s:.1f}')} | {_f(o.get('decoding_only_cpu_s'))} "
                     f"({_decoder_threads(o)}) | {_f(o.get('python_cpu_s'))} | {_f(q.get('analysis_added_cpu_s'))} "
                     f"| {_f(o.get('diff_cpu_s'))} / {_f(o.get('keep_cpu_s'))} ({o.get('kept_frames', '–')}, "
                     f"{_f(o.get('kept_mb'), '{:.0f} MB')}) / {_f(o.get('keyframes_cpu_s'))} "
                     f"| {_f(q.get('diff_keyframes_cpu_over_decode_cpu'), '{:.1%}')} "
                     f"| {_f(q.get('with_keeping_cpu_over_decode_cpu'), '{:.1%}')} "
                     f"| {_f(q.get('analysis_added_cpu_over_decode_cpu'), '{:.1%}')} "
                     f"| {_f(q.get('video_pass_cpu_over_decode_cpu'), '{:.2f} x')} |")
    dets = [n for n in DETECTORS if any(n in r["pyscenedetect"] for r in rows)]
    if dets:
        head = ("| input | sopline: video pass wall / build wall / F1 | "
                + " | ".join(f"{n}: wall / F1 / cuts" for n in dets) + " |")
        lines += ["", "### Step finding: sopline vs PySceneDetect (default settings)", "", head,
                  "|---|---|" + "---|" * len(dets)]
        for r in rows:
            cells = []
            for n in dets:
                p = r["pyscenedetect"].get(n)
                cells.append("–" if p is None else
                             f"{p['wall_s']:.1f} s / {_f((p.get('score') or {}).get('f1'), '{:.3f}')} / "
                             f"{(p.get('out') or {}).get('cuts', '–')}")
            b = r.get("build") or {}
            video = (r.get("analysis") or {}).get("out")  # the pass's own wall, not the task's (decoding alone too)
            lines.append(f"| {r['input']} | {_cell(video, '{wall_s:.1f} s')} / {_cell(b, '{wall_s:.1f} s')}"
                         f" / {_f((b.get('score') or {}).get('f1'), '{:.3f}')} | " + " | ".join(cells) + " |")
    for j in doc.get("jobs", []):
        lines += ["", f"### `sopline build --jobs N` on {j['folder']} ({j['recordings']} recordings)", "",
                  "| jobs | wall | CPU | cores busy | speedup | peak RSS tree |", "|---|---|---|---|---|---|"]
        for n, r in j["runs"].items():
            err = f" ({r['error']})" if r.get("error") else ""
            lines.append(f"| {n} | {r['wall_s']:.1f} s{err} | {r['cpu_s']:.1f} s | {_f(r['cores_busy'])} "
                         f"| {_f(r['speedup'])} | {r['tree_rss_mb']:.0f} MB |")
    if doc.get("targets"):
        lines += ["", "### Targets (issue 6)", "", "| target | input | figure | met |", "|---|---|---|---|"]
        for t in doc["targets"]:
            lines.append(f"| {t['target']} | {t['input']} | {t['figure']} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines)


def _pair_ratios(row: dict) -> str:
    pairs = row.get("pairs")
    return "; pairs " + " / ".join(f"{p['ratio']:.2f}" for p in pairs) if pairs else ""


def _decoder_threads(out: dict) -> str:
    threads = out.get("decoder_threads")
    return "–" if threads is None else "libavcodec's" if threads == 0 else str(threads)


def summary(doc: dict) -> dict:
    """The figures RESULTS.md quotes, small enough to commit (bench/results/summary.json)."""
    rows = []
    for r in doc["inputs"]:
        row = {"input": r["input"], "duration_s": r["duration_s"], "height": r["height"]}
        for k in ("decode", "speech", "build", "analysis"):
            if r.get(k):
                row[k] = {"wall_s": r[k]["wall_s"], "cpu_s": r[k]["cpu_s"], "peak_rss_mb": r[k]["tree_rss_mb"]}
        if r.get("analysis"):
            row["analysis"].update({k: v for k, v in r["analysis"].get("out", {}).items()
                                    if k.endswith("_cpu_s") or k == "decoder_threads"})
        if r.get("build"):
            row["build"]["score"] = r["build"].get("score")
        row["pyscenedetect"] = {n: {"wall_s": p["wall_s"], "cpu_s": p["cpu_s"], "peak_rss_mb": p["tree_rss_mb"],
                                    "cuts": (p.get("out") or {}).get("cuts"), "f1": (p.get("score") or {}).get("f1")}
                                for n, p in r["pyscenedetect"].items()}
        if r.get("pairs"):
            row["pairs"] = r["pairs"]
        row["ratios"] = r["ratios"]
        rows.append(row)
    return {k: doc.get(k) for k in ("label", "date", "machine", "load_average_at_start", "load_average_at_end",
                                    "repeat", "pairs", "jobs", "targets")} | {"inputs": rows}


def _peak_build_rss(row: dict) -> float:
    """The largest tree RSS of the input's builds: every pair's, not only the reported one's."""
    return max([row["build"]["tree_rss_mb"]] + [p["build_tree_rss_mb"] for p in row.get("pairs", ())])


def targets(rows: list[dict], jobs: list[dict] = (), cores: int | None = None) -> list[dict]:
    out = []
    longs = [r for r in rows if r["kind"] == "long"]
    for r in longs:
        q = r["ratios"]
        if q.get("build_over_floor") is not None:
            out.append({"target": f"build wall <= {TARGET_WALL_RATIO} x max(decode, speech)", "input": r["input"],
                        "figure": f"{q['build_over_floor']:.2f} x ({r['build']['wall_s']:.1f} s vs {q['floor_is']} "
                                  f"{q['floor_wall_s']:.1f} s)", "met": q["build_over_floor"] <= TARGET_WALL_RATIO})
        v = q.get("diff_keyframes_cpu_over_decode_cpu")
        if v is not None:  # the readings beside it count more than the analysis itself: see the docstring
            pair = q.get("analysis_added_cpu_over_decode_cpu")
            out.append({"target": f"frame analysis (diff + keyframes) itself adds <= {TARGET_ANALYSIS_CPU:.0%} CPU "
                                  f"over the decode floor", "input": r["input"],
                        "figure": f"{v:.1%} ({q['diff_keyframes_cpu_s']:.1f} s over {r['decode']['cpu_s']:.1f} s); "
                                  f"with keeping frames {q['with_keeping_cpu_over_decode_cpu']:.1%}"
                                  + (f"; the pass less decoding alone {pair:.1%}" if pair is not None else ""),
                        "met": v <= TARGET_ANALYSIS_CPU})
        v = q.get("video_pass_cpu_over_decode_cpu")
        if v is not None:  # the other reading: decoding as the build does it, plus the analysis
            out.append({"target": f"video pass (decoding + analysis) <= {1 + TARGET_ANALYSIS_CPU:.2f} x the decode "
                                  f"floor's CPU", "input": r["input"],
                        "figure": f"{v:.2f} x ({r['analysis']['out']['python_cpu_s']:.1f} s vs "
                                  f"{r['decode']['cpu_s']:.1f} s)", "met": v <= 1 + TARGET_ANALYSIS_CPU})
    builds = [r for r in longs if r.get("build")]
    for r in builds:
        if r["minutes"] and r["minutes"] >= 30 and r["height"] >= 1080:
            rss = _peak_build_rss(r)
            out.append({"target": f"peak RSS < {TARGET_RSS_MB} MB on 30-min 1080p", "input": r["input"],
                        "figure": f"{rss:.0f} MB (tree), {r['build']['max_proc_rss_mb']:.0f} MB (largest process)",
                        "met": rss < TARGET_RSS_MB})
    by_height: dict[int, list[dict]] = {}
    for r in builds:
        by_height.setdefault(r["height"], []).append(r)
    for h, rs in sorted(by_height.items()):
        if len(rs) > 1:
            rs = sorted(rs, key=lambda r: r["minutes"])
            lo, hi = _peak_build_rss(rs[0]), _peak_build_rss(rs[-1])
            out.append({"target": "peak RSS flat in length (within 10%)", "input": f"{h}p {rs[0]['minutes']:g} -> "
                        f"{rs[-1]['minutes']:g} min", "figure": f"{lo:.0f} -> {hi:.0f} MB ({hi / lo - 1:+.1%})",
                        "met": hi <= lo * 1.10})
    cores = cores or os.cpu_count() or 1  # the measured machine's
    for j in jobs:  # oversubscribed threads wait on each other: the CPU for the same work grows
        runs = j["runs"]
        one = runs.get("1")
        for n, r in runs.items():
            if n == "1" or not one or r.get("rc") or not r.get("wall_s"):
                continue
            extra = r["cpu_s"] / one["cpu_s"] - 1
            out.append({"target": f"--jobs N without oversubscribing {cores} cores (CPU within "
                                  f"{TARGET_JOBS_EXTRA_CPU:.0%} of one job's, faster)",
                        "input": f"{j['folder']} ({j['recordings']} recordings), --jobs {n}",
                        "figure": f"{r['speedup']:.2f} x faster, {r['cpu_s']:.1f} vs {one['cpu_s']:.1f} CPU s "
                                  f"({extra:+.0%}), {r['cores_busy']:.2f} cores busy",
                        "met": r["speedup"] > 1 and extra <= TARGET_JOBS_EXTRA_CPU and r["cores_busy"] <= cores})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="corpus recordings only (no long inputs)")
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 30])
    ap.add_argument("--heights", type=int, nargs="+", default=[720, 1080])
    ap.add_argument("--corpus", type=Path, default=CORPUS / "recordings", help="folder of REC.mp4 + REC.truth.json")
    ap.add_argument("--source", type=Path, default=None,
                    help="recording looped into the long inputs (default: dev-cluster-triage from the corpus)")
    ap.add_argument("--no-corpus", action="store_true", help="long inputs only")
    ap.add_argument("--detectors", nargs="*", default=list(DETECTORS), choices=DETECTORS)
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is kept")
    ap.add_argument("--pairs", type=int, default=3,
                    help="speech floor and build measured in this many back-to-back pairs; the median ratio is kept")
    ap.add_argument("--no-jobs", action="store_true", help="skip the --jobs 1 vs 2 comparison")
    ap.add_argument("--only", nargs="+", default=list(MEASURES), choices=MEASURES,
                    help="measure only these (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default bench/results/bench-<time>.json)")
    ap.add_argument("--pythonpath", type=Path, default=None,
                    help="measure the copy of the `pipeline` package in this folder (e.g. a before/after comparison)")
    ap.add_argument("--label", default="", help="a name for this run, kept in the JSON")
    ap.add_argument("--summary", type=Path, default=None, help="also write the short summary JSON here")
    a = ap.parse_args()
    if a.pythonpath:
        ENV["PYTHONPATH"] = str(a.pythonpath.resolve())

    a.corpus = a.corpus.resolve()
    inputs = [] if a.no_corpus else corpus_inputs(a.corpus)
    if not a.quick:
        source = (a.source or a.corpus / "dev-cluster-triage.mp4").resolve()
        for height in a.heights:
            for minutes in a.minutes:
                print(f"input: {source.name} looped to {minutes:g} min at {height}p", file=sys.stderr, flush=True)
                inputs.append(long_input(source, minutes, height, CACHE))
    load_start = os.getloadavg()
    started = time.time()
    doc = {"label": a.label, "pythonpath": str(a.pythonpath) if a.pythonpath else None,
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
           "load_average_at_start": [round(x, 2) for x in load_start], "repeat": a.repeat, "pairs": a.pairs, "only": a.only,
           "inputs": []}
    with tempfile.TemporaryDirectory(prefix="sopline-bench-") as tmp:
        work = Path(tmp)
        for inp in inputs:
            print(f"bench: {inp.name}", file=sys.stderr, flush=True)
            doc["inputs"].append(bench_input(inp, work, a.repeat, tuple(a.detectors), tuple(a.only), a.pairs))
        doc["jobs"] = []
        if not a.no_jobs and not a.no_corpus:
            doc["jobs"].append(bench_jobs(a.corpus, work, a.repeat))
    doc["targets"] = targets(doc["inputs"], doc.get("jobs", []), doc["machine"]["nproc"])
    doc["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["bench_wall_s"] = round(time.time() - started, 1)
    out = a.out or RESULTS / f"bench-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    if a.summary:
        a.summary.parent.mkdir(parents=True, exist_ok=True)
        a.summary.write_text(json.dumps(summary(doc), indent=1) + "\n")
    m = doc["machine"]
    print(f"\n{m['nproc']} cores ({m['cpu']}), {m['ram_gb']} GB RAM; load average at start "
          f"{doc['load_average_at_start'][0]}, at end {doc['load_average_at_end'][0]}\n")
    print(tables(doc))
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
