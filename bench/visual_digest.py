#!/usr/bin/env python3
"""Print a digest of what the video pass (decode -> diff -> keyframes) finds in each recording.

An optimisation of pipeline/diff.py or pipeline/keyframes.py must leave every digest
unchanged: run this before and after and compare. It digests every FrameDiff (blobs,
kinds, cells, values, drift), the ambient counts and the resulting events, so it is
stricter than the corpus scores.

Usage: bench/visual_digest.py REC.mp4 [REC.mp4 ...] [--json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

if not os.environ.get("PYTHONPATH"):  # else the copy of the package it names (run_bench.py --pythonpath)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import decode, diff, frames, keyframes, shots  # noqa: E402


class _Timed:
    """Counts the frames of a stream and the CPU time this thread spends getting them
    (demuxing, the filter graph, copying the gray frame out), so the rest of the video
    pass can be told apart. The decoder's own threads are not in it."""

    def __init__(self, frames):
        self._it = iter(frames)
        self.count = 0
        self.cpu_s = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.thread_time()
        try:
            frame = next(self._it)
        finally:
            self.cpu_s += time.thread_time() - start
        self.count += 1
        return frame


def video_pass(path: Path, split: dict | None = None, threads: int = 0):
    """The video half of Builder.build_sop, in-process, keeping screenshot frames as the
    build does: returns (diffs, counter, first, timeline, frames). `split`, if given,
    receives this thread's CPU seconds of getting frames, diff, keeping frames and keyframes.
    `threads`: the decoder's (0: libavcodec's choice); the digest does not depend on them.
    It repeats pipeline.analyse.analyse_video's loop rather than calling it: it times the
    parts, keeps what the digest needs, and runs against older copies of the package
    (run_bench.py --pythonpath) that predate that module."""
    info = decode.probe(path)
    geometry = decode.analysis_geometry(info)
    counter = diff.AmbientCounter(diff.cells_shape(geometry.width, geometry.height), geometry.fps)
    first = diff.FirstFrame()
    video = frames.VideoPass(path, geometry, **({"threads": threads} if threads else {}))
    timed = _Timed(video)
    keep = shots.KeepPolicy(counter, geometry.scale, geometry.fps)
    keep_cpu = 0.0
    start = time.thread_time()
    diffs = []
    # the pass yields luma planes and scales what changed (an earlier copy of the package,
    # measured with --pythonpath, yields analysis frames: it has no scaler)
    scaled = {"scaler_of": lambda: video.scaler} if hasattr(video, "scaler") else {}
    if hasattr(video, "refreshed"):  # the keyframe rule (round 12)
        scaled["refreshed"] = video.refreshed
    for change in diff.diff_frames(timed, geometry.scale, counter, first, **scaled):
        diffs.append(change)
        t = time.thread_time()
        if keep.wants(change):
            video.keep(change.index - 1)
        keep_cpu += time.thread_time() - t
    middle = time.thread_time()
    timeline = keyframes.find_events(diffs, counter, geometry.fps, geometry.scale, video.count,
                                     (info.width, info.height), first)
    shots.content_changes(diffs, counter, geometry.scale)
    if split is not None:
        split.update(read_cpu_s=timed.cpu_s, diff_cpu_s=middle - start - timed.cpu_s - keep_cpu,
                     keep_cpu_s=keep_cpu, keyframes_cpu_s=time.thread_time() - middle,
                     kept_frames=len(video.kept), kept_mb=video.kept_bytes / 2 ** 20)
    return diffs, counter, first, timeline, video.count


def digest(path: Path) -> dict:
    start = time.perf_counter()
    diffs, counter, first, timeline, count = video_pass(path)
    wall = time.perf_counter() - start
    h = hashlib.sha256()
    for d in diffs:
        h.update(repr((d.index, d.blobs, d.drift)).encode())
    h.update(counter.counts.tobytes())
    h.update(repr(counter.seconds).encode())
    h.update(first.means.tobytes() if first.means is not None else b"")
    h.update(repr(timeline).encode())
    return {"recording": path.name, "frames": count, "diffs": len(diffs), "events": len(timeline.events),
            "sha256": h.hexdigest()[:16], "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recordings", nargs="+", type=Path)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = [digest(p) for p in a.recordings]
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['recording']:32s} frames {r['frames']:6d} diffs {r['diffs']:6d} events {r['events']:4d} "
                  f"{r['sha256']}  {r['wall_s']:.2f} s")


if __name__ == "__main__":
    main()
