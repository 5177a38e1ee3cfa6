"""The video pass's decoder (pipeline/frames.py)."""
import dataclasses
import hashlib
import os
import sys
from pathlib import Path

import pytest

from pipeline import decode, frames

FIXTURES = Path(__file__).parent / "fixtures"


def _threads_while_decoding(video) -> tuple[dict[int, str], dict[int, int]]:
    """Name and priority of each thread of this process, by id, at the pass's sixth frame
    (libavcodec's threads exist once it has decoded a frame); the pass then runs to its end."""
    names, priorities = {}, {}
    for n, _ in enumerate(video):
        if n == 5:
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/comm") as comm:
                    names[int(task)] = comm.read().strip()
            priorities = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in names}
    return names, priorities


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are set through /proc")
def test_the_decoders_threads_yield_to_transcription_and_no_other_thread_does():
    """Transcription is the longer path beside the video pass: libavcodec's threads run at
    DECODER_NICE, the thread running the analysis (and everything else) keeps its priority."""
    path = FIXTURES / "term-deploy.mp4"
    video = frames.VideoPass(path, decode.analysis_geometry(decode.probe(path)))
    own = os.getpriority(os.PRIO_PROCESS, 0)
    names, priorities = _threads_while_decoding(video)
    decoders = [tid for tid, name in names.items() if name.startswith("av:")]
    if not decoders:  # recent libavcodec names its threads "av:<codec>:..."; an older one does not
        pytest.skip(f"this libavcodec does not name its threads: {sorted(names.values())}")
    assert all(priorities[tid] == max(own, frames.DECODER_NICE) for tid in decoders)
    assert all(priorities[tid] == own for tid in names if tid not in decoders)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own


def _decoder_thread_names(video) -> set[str]:
    names, _ = _threads_while_decoding(video)
    return {name for name in names.values() if name.startswith("av:")}


def test_beside_transcription_a_light_video_is_decoded_on_one_thread():
    """One thread costs less CPU per frame than libavcodec's frame threads; beside
    transcription it is the choice while it stays well inside transcription's time, and
    always when transcription leaves one core or none."""
    narrated = decode.probe(FIXTURES / "term-deploy.mp4")  # 960x600 at 10 fps, with speech
    silent = decode.probe(FIXTURES / "no-audio.mp4")
    assert narrated.has_audio and not silent.has_audio
    assert frames.decoder_threads(narrated, 0, 1, 2) == 1
    assert frames.decoder_threads(narrated, 0, 1, 64) == 1
    assert frames.decoder_threads(silent, 0, 1, 2) == 0  # nothing beside it: libavcodec's choice
    assert frames.decoder_threads(silent, 3, 1, 2) == 3  # a --jobs worker's share
    busy = dataclasses.replace(narrated, width=1280, height=720, fps=30.0)
    assert frames.decoder_threads(busy, 0, 1, 8) == 1
    heavy = dataclasses.replace(narrated, width=1920, height=1080, fps=30.0)
    assert frames.decoder_threads(heavy, 0, 1, 2) == 1  # the one core transcription leaves
    assert frames.decoder_threads(heavy, 0, 1, 4) == 3  # one thread would outlast transcription
    assert frames.decoder_threads(heavy, 0, 4, 4) == 1  # transcription holds every core


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read through /proc")
def test_one_decoder_thread_decodes_in_the_calling_thread_with_the_same_frames():
    path = FIXTURES / "web-scale.mp4"
    geometry = decode.analysis_geometry(decode.probe(path))
    threaded = frames.VideoPass(path, geometry)
    if not _decoder_thread_names(threaded):
        pytest.skip("this libavcodec does not name its threads")
    assert not _decoder_thread_names(frames.VideoPass(path, geometry, threads=1))
    one = [hashlib.sha256(plane.tobytes()).digest() for plane in frames.VideoPass(path, geometry, threads=1)]
    assert one == [hashlib.sha256(plane.tobytes()).digest() for plane in frames.VideoPass(path, geometry)]
