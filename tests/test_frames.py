"""The video pass's decoder (pipeline/frames.py)."""
import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import analyse, decode, frames

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


def _encoded(tmp_path: Path, name: str, out: str, *options: str, preset: str = "veryfast") -> Path:
    """Fixture ``name`` encoded again by x264 at ``preset``, with ffmpeg ``options``."""
    path = tmp_path / out
    subprocess.run([decode.ffmpeg_binary(), "-v", "error", "-i", str(FIXTURES / name), *options,
                    "-c:v", "libx264", "-preset", preset, "-an", str(path)], check=True)
    return path


def _reencoded(tmp_path: Path, name: str, fps: int, *x264: str) -> Path:
    """A fixture re-encoded at ``fps`` the way screen recorders and OBS write it: x264 with
    B-frames (``x264`` adds encoder options), so part of its frames are non-reference."""
    return _encoded(tmp_path, name, f"{Path(name).stem}-{fps}.mp4", "-r", str(fps), *x264)


def _digest(plane) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(plane).tobytes()).digest()


def test_skimming_skips_the_non_reference_frames_and_reads_the_same_pictures(tmp_path):
    """At 30 fps with B-frames half the frames are never referenced: the decoder skips them
    (the analysis reads 10 a second), and every analysis frame is still a picture of the
    stream, bit for bit as a whole decode gives it, from within two source frames of its time."""
    path = _reencoded(tmp_path, "gui-release.mp4", 30)
    video = frames.VideoPass(path, decode.analysis_geometry(decode.probe(path)))
    skimmed = [_digest(plane) for plane in video]
    assert video.decoded < 0.6 * video.packets
    times: dict[bytes, list[float]] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            times.setdefault(_digest(frames._luma(frame)), []).append(float(frame.time))  # noqa: SLF001
    assert len(skimmed) == video.count >= 150
    for index, digest in enumerate(skimmed):
        assert any(abs(t - index / 10) <= 2 / 30 + 1e-6 for t in times[digest]), index


def test_a_stream_skimming_would_thin_below_the_minimum_is_decoded_whole(tmp_path):
    """Three B-frames and no pyramid at 15 fps: skipping them would leave 3.75 frames a
    second, under SKIM_MIN_SHARE of the analysis rate, so after the first window every frame
    is decoded."""
    path = _reencoded(tmp_path, "web-scale.mp4", 15, "-bf", "3", "-x264-params", "b-pyramid=none")
    video = frames.VideoPass(path, decode.analysis_geometry(decode.probe(path)))
    assert sum(1 for _ in video) == video.count
    window = round(frames.SKIM_WINDOW_S * 15)
    assert video.packets - window <= video.decoded < video.packets
    assert video.decoded > 0.9 * video.packets


def test_a_second_pass_fetches_the_very_frame_the_skimmed_pass_kept(tmp_path):
    """A screenshot past the keep budget comes from a second pass by analysis frame index: it
    skims as the first did, so the index means the same picture."""
    path = _reencoded(tmp_path, "gui-release.mp4", 30)
    geometry = decode.analysis_geometry(decode.probe(path))
    video = frames.VideoPass(path, geometry)
    wanted = (17, 64, 101)
    for index, _ in enumerate(video):
        if index in wanted:
            video.keep(index)
    assert video.decoded < 0.6 * video.packets
    fetched = frames.grab_rgb_frames(path, decode.probe(path), geometry, wanted)
    assert all(np.array_equal(fetched[i], video.rgb(i)) for i in wanted)
    assert not np.array_equal(fetched[17], fetched[101])
    video.close()


def test_a_variable_rate_recording_is_not_skimmed(tmp_path):
    """Screen recorders that write a frame only on change hold one frame for seconds: the
    frame after a skipped one could come that much later, so every frame is decoded."""
    # every frame of the first 2 s at 30 fps, then 2 a second
    path = _encoded(tmp_path, "gui-release.mp4", "variable.mp4",
                    "-vf", r"fps=30,select='lt(t\,2)+gt(mod(n\,30)\,27)'", "-fps_mode", "vfr")
    info = decode.probe(path)
    geometry = decode.analysis_geometry(info)
    assert info.nominal_fps == 30 and info.fps < 10 and geometry.steady_fps == 0
    video = frames.VideoPass(path, geometry)
    assert sum(1 for _ in video) == video.count > 150
    assert video.decoded >= video.packets - 2


def _events(path: Path) -> list:
    result = analyse.analyse_video(path, decode.probe(path))
    result.video.close()
    return list(result.timeline.events)


def test_an_encoder_keyframe_on_a_still_screen_is_not_a_change(tmp_path):
    """x264 at its default preset codes the static text anew at each keyframe (here every 4
    s), dozens of pixels over NOISE_LEVEL: no event of its own, and no event grows by it."""
    original = _events(FIXTURES / "no-audio.mp4")
    path = _encoded(tmp_path, "no-audio.mp4", "no-audio-medium.mp4", "-g", "40", preset="medium")
    video = frames.VideoPass(path, decode.analysis_geometry(decode.probe(path)))
    assert sum(1 for _ in video) and {4.0, 8.0, 12.0, 16.0, 20.0} <= set(video.keyframes)  # x264 may add cuts
    events = _events(path)
    assert len(events) == len(original) == 3
    for event, before in zip(events, original):
        assert abs(event.start_s - before.start_s) <= 0.1 and abs(event.end_s - before.end_s) <= 0.1
        assert abs(event.box.y - before.box.y) <= 8 and abs(event.box.h - before.box.h) <= 8


def test_an_intra_only_recording_has_no_keyframe_rule(tmp_path):
    """Every frame of an intra-only stream is a keyframe, and a still screen is coded the same
    each time: none is a refresh, and low-contrast changes count at NOISE_LEVEL as anywhere."""
    original = _events(FIXTURES / "no-audio.mp4")
    path = _encoded(tmp_path, "no-audio.mp4", "no-audio-intra.mp4", "-g", "1", preset="ultrafast")
    video = frames.VideoPass(path, decode.analysis_geometry(decode.probe(path)))
    assert not any(video.refreshed(index) for index, _ in enumerate(video))
    assert video.keyframes == []
    assert [(e.start_s, e.end_s, e.box) for e in _events(path)] == [(e.start_s, e.end_s, e.box) for e in original]


def test_a_change_on_a_keyframe_is_still_found(tmp_path):
    """Encoders put a keyframe where the picture changes: the change is there, well over
    KEYFRAME_NOISE_LEVEL, and found at the same frame."""
    original = _events(FIXTURES / "no-audio.mp4")
    cuts = ",".join(f"{e.start_s:g}" for e in original)
    path = _encoded(tmp_path, "no-audio.mp4", "no-audio-cuts.mp4", "-force_key_frames", cuts, preset="ultrafast")
    video = frames.VideoPass(path, decode.analysis_geometry(decode.probe(path)))
    refreshed = [index for index, _ in enumerate(video) if video.refreshed(index)]
    assert [round(t, 1) for t in video.keyframes] == [e.start_s for e in original]
    assert refreshed == [index + after for e in original for index in [round(e.start_s * 10)] for after in (0, 1)]
    events = _events(path)
    assert [(e.start_s, e.end_s) for e in events] == [(e.start_s, e.end_s) for e in original]
