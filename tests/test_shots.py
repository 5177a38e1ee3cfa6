"""Screenshot frames kept during the one decode pass, and the stand-in for each wanted frame."""
from pathlib import Path

from pipeline import decode, shots
from pipeline.analyse import analyse_video

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_wanted_frame_is_served_by_the_nearest_kept_frame_of_its_still_stretch():
    changes = [10, 30]  # content changed at frames 10 and 30: stretches 0-9, 10-29, 30-end
    kept = [9, 12, 29, 45]
    found = shots.stand_ins([0, 5, 11, 20, 25, 31, 60], kept, changes)
    assert found == {0: 9, 5: 9, 11: 12, 20: 12, 25: 29, 31: 45, 60: 45}


def test_a_wanted_frame_with_no_kept_frame_in_its_stretch_has_no_stand_in():
    found = shots.stand_ins([15, 35], kept=[9, 29], changes=[10, 20, 30, 40])
    assert found == {}  # 15 lies in 10-19 and 35 in 30-39: nothing kept there, fetched exactly


def test_a_tie_goes_to_the_later_frame_the_settled_one():
    assert shots.stand_ins([20], kept=[18, 22], changes=[10, 30]) == {20: 22}


def analyse(name):
    path = FIXTURES / name  # or an absolute path
    a = analyse_video(path, decode.probe(path))
    return a.video, a.timeline, a.content_changes, a.geometry


def test_every_events_before_and_settled_frames_have_a_stand_in_without_a_second_pass():
    for name in ("gui-release.mp4", "term-deploy.mp4", "web-scale.mp4"):
        video, timeline, changes, geometry = analyse(name)
        wanted = []
        for i, event in enumerate(timeline.events):
            wanted.append(max(0, round(event.start_s * geometry.fps) - 1))
            settled = round((event.end_s + 0.8) * geometry.fps)
            if i + 1 < len(timeline.events):
                settled = min(settled, round(timeline.events[i + 1].start_s * geometry.fps) - 4)
            wanted.append(min(settled, video.count - 1))
        assert timeline.events
        found = shots.stand_ins(sorted(wanted), sorted(video.kept), changes)
        assert set(found) == set(wanted), (name, sorted(set(wanted) - set(found)))


def test_a_ticking_clock_does_not_keep_a_frame_every_second(tmp_path):
    """The Tk console's status-bar clock ticks every second; looped five times (real ffmpeg,
    stream copy) the recording lasts over a minute and a half."""
    import subprocess

    looped = tmp_path / "console-looped.mp4"
    subprocess.run([decode.ffmpeg_binary(), "-v", "error", "-stream_loop", "4", "-i", str(FIXTURES / "gui-release.mp4"),
                    "-c", "copy", str(looped)], check=True)
    video, timeline, _, geometry = analyse(looped)
    seconds = video.count / geometry.fps
    assert seconds > 90 and len(timeline.events) >= 10
    assert len(video.kept) < seconds / 2  # one a second would be ~100
    assert video.count - 1 in video.kept  # the screen as the recording ends


def test_the_steps_of_the_narration_heard_so_far_are_those_of_the_whole(monkeypatch):
    """The build renders the screenshots of the steps heard so far while transcription
    goes on: a step that ends SETTLED_MARGIN_S before what is heard must be cut as the
    whole narration cuts it (only then is its early screenshot taken)."""
    from pipeline import align, screenshots, segment
    from pipeline.speech import Heard
    from pipeline.transcribe import Transcriber

    monkeypatch.setattr(screenshots, "SETTLED_MARGIN_S", 2.0)  # a 20 s recording in 4 s pieces
    path = FIXTURES / "term-deploy.mp4"
    video, timeline, _, geometry = analyse("term-deploy.mp4")
    duration = decode.probe(path).duration_s
    audio = decode.read_audio_pcm(path)
    silence = align.SilenceMap(audio)
    transcriber = Transcriber(cpu_threads=1)
    transcriber.chunk_s = 4.0
    told: list[Heard] = []
    whole = transcriber.transcribe(audio, lambda until_s, so_far: told.append(Heard(so_far, silence, until_s)))
    steps = segment.plan_steps(align.group_sentences(whole.sentences, silence), timeline.events, duration,
                               geometry.fps)
    settled_counts = []
    for heard in told:
        settled_s = heard.until_s - 2.0
        ahead = screenshots.plans_to_render(heard, timeline.events, duration, geometry.fps)
        settled = [p for p in ahead if max(p.end_s, p.shot_time_s) <= settled_s]
        assert settled == [p for p in steps if p.shot_time_s is not None and max(p.end_s, p.shot_time_s) <= settled_s]
        assert all(p.change_s > settled_s for p in ahead[len(settled):])  # the rest: later changes alone
        settled_counts.append(len(settled))
    assert len(told) >= 3 and settled_counts[-1] >= 2, settled_counts
