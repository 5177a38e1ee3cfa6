#!/usr/bin/env python3
"""Time `sopline build` on a long recording made by looping a short one, and print
wall time, the ratio to the recording's duration, and peak memory (RSS of the child).

Usage: bench/long_recording.py [RECORDING] [--minutes 5] [--height 720]
Default recording: examples/deploy-checkout.mp4. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.decode import ffmpeg_binary, probe  # noqa: E402


def looped(src: Path, minutes: float, height: int, dest: Path) -> Path:
    info = probe(src)
    loops = max(0, int(minutes * 60 / max(info.duration_s, 1)) )
    args = [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", "-stream_loop", str(loops), "-i", str(src)]
    if height == info.height:
        args += ["-c", "copy"]
    else:
        args += ["-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy"]
    subprocess.run(args + ["-t", str(minutes * 60), str(dest)], check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recording", nargs="?", default="examples/deploy-checkout.mp4")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--height", type=int, default=720)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rec_dir = Path(tmp) / "rec"
        rec_dir.mkdir()
        rec = looped(Path(a.recording), a.minutes, a.height, rec_dir / "long.mp4")
        duration = probe(rec).duration_s
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.cli", "build", str(rec_dir), "-o", str(Path(tmp) / "out")],
                       check=True, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        steps = len(json.loads((Path(tmp) / "out" / "long" / "sop.json").read_text())["steps"])
    print(json.dumps({"recording_s": round(duration, 1), "height": a.height, "wall_s": round(wall, 1),
                      "ratio_to_duration": round(wall / duration, 3), "peak_rss_mb": round(peak_mb),
                      "steps": steps}))


if __name__ == "__main__":
    main()
