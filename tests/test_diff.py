"""Diff stage: which pixel changes count, on synthetic frames."""
import numpy as np

from pipeline.diff import AmbientCounter, cells_shape, diff_frames
from synth import H, W, screen, with_rect


def kinds(frames):
    counter = AmbientCounter(cells_shape(W, H), 10)
    return [[b.kind for b in d.blobs] for d in diff_frames(frames, 1.0, counter)]


def test_identical_frames_report_no_change():
    assert kinds([screen(), screen(), screen()]) == []


def test_compression_noise_below_the_noise_level_is_ignored():
    rng = np.random.default_rng(1)
    noisy = (screen().astype(np.int16) + rng.integers(-12, 13, (H, W))).clip(0, 255).astype(np.uint8)
    assert kinds([screen(), noisy]) == []


def test_a_typed_character_is_content():
    assert kinds([screen(), with_rect(screen(), 100, 50, 6, 10)]) == [["content"]]


def test_a_thin_caret_line_is_a_caret():
    assert kinds([screen(), with_rect(screen(), 100, 50, 1, 14)]) == [["caret"]]


def test_a_pointer_jump_leaves_two_lookalike_blobs():
    before = with_rect(screen(), 40, 40, 10, 16)
    after = with_rect(screen(), 200, 120, 10, 16)
    assert kinds([before, after]) == [["pointer", "pointer"]]


def test_two_different_changes_in_one_frame_stay_content():
    after = with_rect(with_rect(screen(), 40, 40, 10, 16), 150, 100, 120, 60)
    assert kinds([screen(), after]) == [["content", "content"]]


def test_blob_boxes_are_in_analysis_pixels():
    diffs = list(diff_frames([screen(), with_rect(screen(), 100, 50, 30, 12)], 1.0))
    blob = diffs[0].blobs[0]
    assert (blob.x0, blob.y0, blob.x1, blob.y1) == (100, 50, 130, 62)
    assert blob.pixels == 30 * 12
