"""Keyframes stage: events from a synthetic screen timeline at 10 frames a second."""
from pipeline.diff import AmbientCounter, FirstFrame, cells_shape, diff_frames
from pipeline.keyframes import find_events
from synth import H, W, screen, with_rect

FPS = 10


def events(frames):
    counter = AmbientCounter(cells_shape(W, H), FPS)
    first = FirstFrame()
    diffs = list(diff_frames(frames, 1.0, counter, first))
    return find_events(diffs, counter, FPS, 1.0, len(frames), (W, H), first).events


def clocked(n_seconds, change_at=None):
    """A screen whose status-bar clock ticks every second; optionally one real change."""
    frames = []
    for i in range(n_seconds * FPS):
        f = with_rect(screen(), 280, 185, 8, 10, value=(i // FPS) % 2 * 200 + 20)
        if change_at is not None and i >= change_at * FPS:
            f = with_rect(f, 20, 20, 200, 80, value=60)
        frames.append(f)
    return frames


def test_a_ticking_clock_is_ambient_not_an_event():
    assert events(clocked(20)) == ()


def test_a_real_change_next_to_a_ticking_clock_is_one_event():
    found = events(clocked(20, change_at=12))
    assert len(found) == 1
    assert abs(found[0].start_s - 12.0) < 0.15
    assert found[0].box.x == 20 and found[0].box.w == 200


def test_keystrokes_of_one_command_form_one_event():
    frames, f = [], screen()
    for i in range(40):
        if 5 <= i < 25:  # one character every 0.1 s, like xdotool typing
            f = with_rect(f, 10 + 6 * (i - 5), 30, 5, 9)
        frames.append(f)
    found = events(frames)
    assert len(found) == 1
    assert found[0].start_s == 0.5 and found[0].end_s == 2.4


def test_changes_separated_by_a_calm_second_are_separate_events():
    frames = [screen()] * 10 + [with_rect(screen(), 10, 10, 40, 20)] * 20
    frames += [with_rect(with_rect(screen(), 10, 10, 40, 20), 100, 100, 40, 20)] * 10
    assert [e.start_s for e in events(frames)] == [1.0, 3.0]


def test_a_blinking_caret_is_not_an_event():
    frames = [with_rect(screen(), 100, 50, 1, 14) if (i // 5) % 2 else screen() for i in range(60)]
    assert events(frames) == ()


def toast_timeline(fade_frames):
    """A click changes the page at 1 s, a toast shows at 2 s and fades out over
    fade_frames frames from 4.5 s; the next action changes another region at 7 s."""
    page = with_rect(screen(), 10, 10, 120, 40, value=90)
    frames = [screen()] * 10 + [page] * 10 + [with_rect(page, 200, 160, 100, 30, value=40)] * 25
    for k in range(1, fade_frames + 1):  # opacity going to 0: each frame a little lighter
        value = int(40 + (235 - 40) * k / fade_frames)
        frames.append(with_rect(page, 200, 160, 100, 30, value=value))
    frames += [page] * (70 - len(frames))
    frames += [with_rect(page, 10, 100, 80, 20)] * 20
    return frames


def test_a_toast_going_away_is_marked_as_putting_the_screen_back():
    found = events(toast_timeline(fade_frames=3))
    assert [(e.start_s, e.reverts) for e in found] == [(1.0, False), (4.5, True), (7.0, False)]


def test_a_slow_fade_below_the_noise_level_still_counts_as_going_away():
    assert [e.start_s for e in events(toast_timeline(fade_frames=12)) if not e.reverts] == [1.0, 7.0]


def test_changing_a_region_to_something_new_is_a_change():
    frames = [screen()] * 10 + [with_rect(screen(), 10, 10, 60, 30, value=90)] * 20
    frames += [with_rect(screen(), 10, 10, 60, 30, value=160)] * 20
    assert [e.start_s for e in events(frames)] == [1.0, 3.0]
