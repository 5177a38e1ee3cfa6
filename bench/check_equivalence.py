#!/usr/bin/env python3
"""Check that pipeline/diff.py and pipeline/keyframes.py in the working tree behave exactly
like the versions at a git ref, on random screen-like frame sequences.

An optimisation of either stage must not change a single blob, drift report, ambient count
or event. This compares everything both versions produce (FrameDiffs, the ambient counter,
the first frame's cell means, the events) on sequences of identical frames, sub-threshold
noise, slow fades, drawn rectangles and reverts to earlier frames, at frame sizes that are
and are not multiples of the cell size. Reads the reference with `git show` only.

Usage: bench/check_equivalence.py [--ref HEAD] [--trials 200] [--seed 0]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pipeline.model  # noqa: E402
from pipeline import diff as new_diff, keyframes as new_keyframes  # noqa: E402

SIZES = [(200, 320), (201, 322), (60, 90), (37, 50), (64, 64), (540, 960), (13, 14), (8, 8), (7, 3), (99, 98)]


def reference(ref: str, tmp: Path):
    """diff and keyframes as they are at `ref`, imported as a separate package."""
    pkg = types.ModuleType("refpipe")
    pkg.__path__ = [str(tmp)]
    sys.modules["refpipe"] = pkg
    sys.modules["refpipe.model"] = pipeline.model  # records are shared, so reprs compare
    mods = []
    for name in ("luma", "diff", "keyframes"):  # luma: what diff imports, at refs that have it
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:pipeline/{name}.py"],
                               capture_output=True, text=True)
        if shown.returncode and name == "luma":
            continue
        shown.check_returncode()
        src = shown.stdout
        path = tmp / f"{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"refpipe.{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"refpipe.{name}"] = module
        spec.loader.exec_module(module)
        if name != "luma":
            mods.append(module)
    return mods


def sequence(rng, h: int, w: int, n: int, quiet: float) -> list[np.ndarray]:
    frames = [np.full((h, w), rng.integers(0, 256), np.uint8)]
    for _ in range(n):
        f = frames[-1].copy()
        r = rng.random()
        if rng.random() < quiet or r < 0.3:
            pass  # the screen stands still
        elif r < 0.5:  # noise, sometimes above the noise level, in one region
            y, x = rng.integers(0, h), rng.integers(0, w)
            sub = f[y:y + rng.integers(1, h + 1), x:x + rng.integers(1, w + 1)]
            sub[...] = (sub.astype(np.int16) + rng.integers(-30, 31, sub.shape)).clip(0, 255)
        elif r < 0.6:  # a slow fade of the whole screen
            f = (f.astype(np.int16) + rng.integers(-2, 3)).clip(0, 255).astype(np.uint8)
        else:  # rectangles drawn
            for _ in range(rng.integers(1, 4)):
                y, x = rng.integers(0, h), rng.integers(0, w)
                f[y:y + rng.integers(1, 40), x:x + rng.integers(1, 60)] = rng.integers(0, 256)
        if rng.random() < 0.1 and len(frames) > 5:  # back to an earlier screen (a toast goes away)
            f = frames[-int(rng.integers(2, 6))].copy()
        frames.append(f)
    return frames


def run(diff, keyframes, frames, scale: float, fps: float, with_first: bool = True) -> str:
    h, w = frames[0].shape
    counter = diff.AmbientCounter(diff.cells_shape(w, h), fps)
    first = diff.FirstFrame()
    diffs = list(diff.diff_frames(frames, scale, counter, first))
    timeline = keyframes.find_events(diffs, counter, fps, scale, len(frames), (int(w * scale), int(h * scale)),
                                     first if with_first else None)
    return repr(([(d.index, d.blobs, d.drift) for d in diffs], counter.counts.tolist(), counter.seconds,
                 first.means.tolist(), timeline))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default="HEAD")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    reverts = 0
    with tempfile.TemporaryDirectory() as tmp:
        ref_diff, ref_keyframes = reference(a.ref, Path(tmp))
        for trial in range(a.trials):
            h, w = SIZES[trial % len(SIZES)]
            quiet = 0.85 if trial % 2 else 0.0  # sparse changes make separate events (and reverts)
            n = int(rng.integers(2, 300)) if h * w < 200_000 else 40
            frames = sequence(rng, h, w, n, quiet)
            scale, fps = float(rng.choice([1.0, 1.333, 2.0])), float(rng.choice([5.0, 10.0]))
            want = run(ref_diff, ref_keyframes, frames, scale, fps)
            got = run(new_diff, new_keyframes, frames, scale, fps)
            if got != want:
                sys.exit(f"DIFFERENT at trial {trial} ({w}x{h}, {n} frames, seed {a.seed})")
            reverts += got != run(new_diff, new_keyframes, frames, scale, fps, with_first=False)
    print(f"identical to {a.ref} on {a.trials} random sequences ({reverts} of them with a transient revert dropped)")


if __name__ == "__main__":
    main()
