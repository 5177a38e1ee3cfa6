"""Align and segment stages on synthetic narration and change timelines."""

from pipeline.align import SilenceMap, group_sentences
from pipeline.model import Box, ChangeEvent, Sentence
from pipeline.segment import plan_steps
from synth import hush, tone


def sent(start, end, text="Some words here."):
    return Sentence(start, end, text)


def event(start, end, area=0.05):
    return ChangeEvent(start, end, Box(10, 10, 100, 40), area)


def narration(*spans):
    """Audio with a tone over each (start, end) span and faint hiss elsewhere."""
    total = max(e for _, e in spans) + 1.0
    audio = hush(total)
    for s, e in spans:
        audio[int(s * 16000):int(e * 16000)] += tone(e - s)
    return audio


def test_silence_map_measures_the_real_pause_between_sentences():
    silence = SilenceMap(narration((1.0, 3.0), (4.5, 6.0)))
    assert abs(silence.longest_pause(2.5, 5.0) - 1.5) < 0.05


def test_short_pause_keeps_sentences_in_one_block_and_long_pause_splits():
    audio = narration((1.0, 3.0), (3.4, 5.0), (6.5, 8.0))
    # whisper-like times cut words short: the 0.4 s pause looks like 0.9 s
    sentences = [sent(1.0, 2.8), sent(3.7, 4.8), sent(6.7, 7.9)]
    blocks = group_sentences(sentences, SilenceMap(audio))
    assert [len(b.sentences) for b in blocks] == [2, 1]


def test_without_audio_energy_whisper_gaps_decide():
    blocks = group_sentences([sent(0, 1), sent(1.2, 2), sent(4, 5)], None)
    assert [len(b.sentences) for b in blocks] == [2, 1]


def blocks_of(*spans):
    return group_sentences([sent(s, e) for s, e in spans], None)


def test_a_change_belongs_to_the_block_spoken_before_it():
    plans = plan_steps(blocks_of((1, 4), (7, 9)), [event(3.0, 3.5), event(8.0, 8.4)], 12.0, 10)
    assert [p.change_s for p in plans] == [3.0, 8.0]
    assert [len(p.sentences) for p in plans] == [1, 1]


def test_a_block_without_change_is_a_spoken_only_step():
    plans = plan_steps(blocks_of((1, 4), (6, 8), (10, 12)), [event(2.0, 2.5), event(11.0, 11.2)], 15.0, 10)
    assert [p.change_s for p in plans] == [2.0, None, 11.0]
    assert plans[1].shot_time_s is None and plans[1].highlight is None


def test_several_changes_during_one_block_are_one_step():
    plans = plan_steps(blocks_of((1, 4), (9, 10)), [event(2.0, 2.3), event(3.0, 3.2), event(5.5, 6.0)], 12.0, 10)
    assert len(plans) == 2
    assert plans[0].change_s == 2.0 and len(plans[0].events) == 3


def test_changes_without_narration_are_steps_of_their_own():
    plans = plan_steps([], [event(1.0, 1.5), event(5.0, 5.5)], 8.0, 10)
    assert [p.change_s for p in plans] == [1.0, 5.0]
    assert all(p.sentences == () for p in plans)


def test_screenshot_waits_for_the_screen_to_settle_but_not_past_the_next_change():
    plans = plan_steps(blocks_of((1, 3), (4.0, 5)), [event(2.0, 2.5), event(3.9, 4.1)], 10.0, 10)
    assert plans[0].shot_time_s == 3.5  # next change at 3.9, guard 0.4
    assert plans[1].shot_time_s == 5.1  # last change 4.1 + 1.0
    assert plans[0].shot_time_s > 2.5


def test_screenshot_never_points_past_the_end_of_the_video():
    plans = plan_steps(blocks_of((1, 3)), [event(2.0, 4.9)], 5.0, 10)
    assert plans[0].shot_time_s <= 4.9


def test_block_onset_comes_from_the_audio_when_whisper_starts_late():
    audio = narration((1.0, 3.0), (5.0, 7.0))
    blocks = group_sentences([sent(1.3, 2.9), sent(5.35, 6.8)], SilenceMap(audio))
    assert [round(b.heard_s, 1) for b in blocks] == [1.0, 5.0]


def test_a_change_right_at_the_voice_onset_belongs_to_the_new_block():
    audio = narration((1.0, 3.0), (5.0, 7.0))
    blocks = group_sentences([sent(1.3, 2.9), sent(5.45, 6.8)], SilenceMap(audio))
    plans = plan_steps(blocks, [event(2.0, 2.2), event(5.05, 5.3)], 9.0, 10)
    assert [p.change_s for p in plans] == [2.0, 5.05]


def undo(start, end):
    """A change that puts the screen back as it was (a toast going away, a dialog closed)."""
    return ChangeEvent(start, end, Box(10, 10, 100, 40), 0.05, reverts=True)


def test_going_back_to_an_earlier_screen_is_the_change_of_a_narrated_step_that_has_no_other():
    # "Open the settings dialog." ... "Close the dialog."
    plans = plan_steps(blocks_of((1, 3), (6, 8)), [event(2.0, 2.4), undo(7.0, 7.3)], 10.0, 10)
    assert [p.change_s for p in plans] == [2.0, 7.0]
    assert plans[1].shot_time_s is not None


def test_going_back_during_a_step_with_its_own_change_is_its_tail_not_its_change():
    # the toast of step 1 fades while step 2 is being done
    plans = plan_steps(blocks_of((1, 3), (6, 9)), [event(2.0, 2.4), undo(6.5, 6.8), event(7.5, 7.9)], 12.0, 10)
    assert [p.change_s for p in plans] == [2.0, 7.5]
    assert [len(p.events) for p in plans] == [1, 1]


def test_going_back_with_no_narration_is_no_step():
    plans = plan_steps(blocks_of((1, 3)), [event(2.0, 2.4), undo(20.0, 20.3)], 25.0, 10)
    assert [p.change_s for p in plans] == [2.0]
