"""The video pass's decoder (pipeline/frames.py)."""
import os
import sys
from pathlib import Path

import pytest

from pipeline import decode, frames

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are set through /proc")
def test_the_decoders_threads_yield_to_transcription_and_no_other_thread_does():
    """Transcription is the longer path beside the video pass: libavcodec's threads run at
    DECODER_NICE, the thread running the analysis (and everything else) keeps its priority."""
    path = FIXTURES / "term-deploy.mp4"
    video = frames.VideoPass(path, decode.analysis_geometry(decode.probe(path)))
    own = os.getpriority(os.PRIO_PROCESS, 0)
    names = {}
    for n, _ in enumerate(video):
        if n == 5:
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/comm") as comm:
                    names[int(task)] = comm.read().strip()
            priorities = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in names}
    decoders = [tid for tid, name in names.items() if name.startswith("av:")]
    if not decoders:  # recent libavcodec names its threads "av:<codec>:..."; an older one does not
        pytest.skip(f"this libavcodec does not name its threads: {sorted(names.values())}")
    assert all(priorities[tid] == max(own, frames.DECODER_NICE) for tid in decoders)
    assert all(priorities[tid] == own for tid in names if tid not in decoders)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own
