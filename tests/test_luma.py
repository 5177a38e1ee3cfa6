"""Analysis pixels made from the decoder's luma plane, block by block (pipeline/luma.py)."""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline import decode, frames
from pipeline.luma import TV_TO_PC, AreaScaler

FIXTURES = Path(__file__).parent / "fixtures"
RATIOS = [((720, 1280), (540, 960)), ((1080, 1920), (540, 960)), ((768, 1366), (540, 960)),
          ((600, 960), (600, 960)), ((1440, 2560), (540, 960)), ((721, 1283), (540, 960))]


@pytest.mark.parametrize("source,analysis", RATIOS)
def test_any_block_is_the_same_pixels_as_the_whole_frame(source, analysis):
    """The diff rescales only changed bands; a band must equal the same pixels of the whole
    scaled frame, wherever it starts and ends (group, whole-number and general ratios)."""
    rng = np.random.default_rng(3)
    scaler = AreaScaler(source, analysis, TV_TO_PC)
    luma = rng.integers(0, 256, source, dtype=np.uint8)
    whole = scaler.full(luma)
    assert whole.shape == analysis
    for _ in range(200):
        y0, x0 = rng.integers(0, analysis[0]), rng.integers(0, analysis[1])
        y1, x1 = rng.integers(y0 + 1, analysis[0] + 1), rng.integers(x0 + 1, analysis[1] + 1)
        assert np.array_equal(scaler.block(luma, slice(y0, y1), slice(x0, x1)), whole[y0:y1, x0:x1])


@pytest.mark.parametrize("source,analysis", RATIOS)
def test_a_changed_source_pixel_changes_only_the_analysis_pixels_its_span_names(source, analysis):
    scaler = AreaScaler(source, analysis)
    rng = np.random.default_rng(4)
    luma = rng.integers(0, 200, source, dtype=np.uint8)
    before = scaler.full(luma)
    for _ in range(30):
        y, x = rng.integers(0, source[0]), rng.integers(0, source[1])
        changed = luma.copy()
        changed[y, x] = 255
        moved = np.argwhere(scaler.full(changed) != before)
        (y0, y1), (x0, x1) = scaler.analysis_span(0, y, y), scaler.analysis_span(1, x, x)
        assert all(y0 <= r < y1 and x0 <= c < x1 for r, c in moved)


def test_a_flat_screen_keeps_its_gray_level_and_the_range_is_stretched():
    scaler = AreaScaler((720, 1280), (540, 960), TV_TO_PC)
    for level, expected in ((16, 0), (235, 255), (126, 128), (0, 0), (255, 255)):
        assert set(np.unique(scaler.full(np.full((720, 1280), level, np.uint8))).tolist()) == {expected}


def test_analysis_frames_match_ffmpegs_own_area_scale_and_range_stretch(tmp_path):
    """The same picture ffmpeg's filters made before (extract luma, area scale, TV to full
    range): on a real 720p recording made by the real ffmpeg, within rounding."""
    ffmpeg = decode.ffmpeg_binary()
    recording = tmp_path / "rec720.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(FIXTURES / "term-deploy.mp4"), "-t", "4", "-vf",
                    "scale=1280:720", "-c:v", "libx264", "-preset", "veryfast", "-an", str(recording)], check=True)
    info = decode.probe(recording)
    geometry = decode.analysis_geometry(info)
    assert (geometry.width, geometry.height) == (960, 540)
    lut = "lut=c0=clip((val-16)*255/219+0.5\\,0\\,255)"
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(recording), "-vf",
                          f"fps=10,extractplanes=y,scale=960:540:flags=area,{lut}", "-f", "rawvideo", "-"],
                         check=True, capture_output=True).stdout
    theirs = np.frombuffer(raw, np.uint8).reshape(-1, 540, 960)
    video = frames.VideoPass(recording, geometry)
    ours = np.stack([video.scaler.full(luma) for luma in video])
    assert ours.shape == theirs.shape
    delta = np.abs(ours.astype(np.int16) - theirs)
    assert delta.max() <= 3 and delta.mean() < 0.005, (int(delta.max()), float(delta.mean()))


@pytest.mark.parametrize("source,analysis", RATIOS)
def test_updating_a_band_in_place_gives_its_block_and_marks_what_moved(source, analysis):
    """The diff recomputes changed bands in place (AreaScaler.update): the band
    must become exactly scaler.block's pixels, nothing outside it may change, and the marks
    must be the pixels that moved by more than the noise level, read from a padded plane as
    the decoder's are."""
    rng = np.random.default_rng(5)
    scaler = AreaScaler(source, analysis, TV_TO_PC)
    h, w = source
    plane = np.zeros((h, w + 40), np.uint8)
    old = rng.integers(0, 256, source, dtype=np.uint8)
    picture = scaler.full(old)
    for _ in range(60):
        plane[:, :w] = old
        y, x = rng.integers(0, h), rng.integers(0, w)
        plane[y:y + rng.integers(1, 60), x:x + rng.integers(1, 90)] = rng.integers(0, 256)
        plane[:, :w] ^= (rng.random(source) < 0.05).astype(np.uint8)  # codec-like noise of one level
        new = plane[:, :w]
        y0, x0 = rng.integers(0, analysis[0]), rng.integers(0, analysis[1])
        y1, x1 = rng.integers(y0 + 1, analysis[0] + 1), rng.integers(x0 + 1, analysis[1] + 1)
        oy, ox = rng.integers(0, y0 + 1), rng.integers(0, x0 + 1)
        before = picture.copy()
        marks = np.zeros((y1 - oy + 3, x1 - ox + 5), bool)
        moved = scaler.update(new, picture, slice(y0, y1), slice(x0, x1), marks, (oy, ox), 24)
        expected = scaler.block(new, slice(y0, y1), slice(x0, x1))
        assert np.array_equal(picture[y0:y1, x0:x1], expected)
        outside = np.ones(analysis, bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(picture[outside], before[outside])
        want = np.zeros_like(marks)
        want[y0 - oy:y1 - oy, x0 - ox:x1 - ox] = np.abs(expected.astype(int) - before[y0:y1, x0:x1]) > 24
        assert np.array_equal(marks, want)
        assert moved == want.any()
        old = new.copy()
