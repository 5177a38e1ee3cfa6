"""Diff stage: which pixel changes count, on synthetic frames."""
import numpy as np
import pytest

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


def _screen_session(rng, h, w, n):
    """Source frames of a screen: still stretches, codec-like noise, drawn boxes, slow fades,
    changes at the top and bottom at once, and reverts to an earlier frame."""
    frames = [np.full((h, w), 40, np.uint8)]
    for _ in range(n):
        f = frames[-1].copy()
        r = rng.random()
        if r < 0.25:
            pass
        elif r < 0.45:
            y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
            f[y:y + 4, x:x + 4] = np.clip(f[y:y + 4, x:x + 4].astype(int) + rng.integers(-9, 10, (4, 4)), 0, 255)
        elif r < 0.65:
            y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
            f[y:y + rng.integers(1, h - y), x:x + rng.integers(1, w - x)] = rng.integers(0, 256)
        elif r < 0.75:
            f = np.clip(f.astype(int) + 2, 0, 255).astype(np.uint8)
        elif r < 0.9:
            f[0:3, 0:5] = rng.integers(0, 256)
            f[h - 3:h, w - 6:w - 1] = rng.integers(0, 256)
        else:
            f = frames[rng.integers(0, len(frames))].copy()
        frames.append(f)
    return frames


def test_diffing_source_frames_through_the_scaler_equals_diffing_its_whole_frames():
    """The build diffs the decoder's luma planes and scales only what changed, with the
    compiled kernel (tile by tile) or numpy (band by band): every blob, drift report, ambient
    count and first-frame fingerprint must be what diffing the fully scaled frames gives, for
    the ratios recordings have (4:3, 2:1, odd, 1:1 range-only), sizes that cut the last tile
    and cell short, and planes with padded rows as decoders give them."""
    from pipeline.diff import CELL, FirstFrame
    from pipeline.luma import TV_TO_PC, AreaScaler, _tiles

    rng = np.random.default_rng(7)
    for source, analysis, levels in [((96, 128), (72, 96), TV_TO_PC), ((120, 200), (60, 100), None),
                                     ((100, 140), (75, 105), TV_TO_PC), ((77, 139), (54, 96), TV_TO_PC),
                                     ((64, 80), (64, 80), TV_TO_PC)]:
        compiled, numpy_only = AreaScaler(source, analysis, levels), AreaScaler(source, analysis, levels, compiled=False)
        grouped = source != (77, 139)
        assert (compiled.tile_kernel(CELL) is not None) == (grouped and _tiles is not None)
        assert numpy_only.tile_kernel(CELL) is None
        for _ in range(8):
            frames = _screen_session(rng, *source, 40)
            padded = [np.pad(f, ((0, 0), (0, 24)), constant_values=255)[:, :source[1]] for f in frames]
            runs = []
            for inputs, scaler_of in ((padded, lambda: compiled), (frames, lambda: numpy_only),
                                      ([compiled.full(f) for f in frames], None)):
                counter, first = AmbientCounter(cells_shape(analysis[1], analysis[0]), 10), FirstFrame()
                diffs = list(diff_frames(inputs, 1.5, counter, first, scaler_of))
                runs.append((diffs, counter.counts.tolist(), first.means.tolist()))
            assert runs[0] == runs[2]
            assert runs[1] == runs[2]
            assert runs[0][0], "the sequence must have changes to compare"


def test_the_kernel_recomputes_exactly_the_tiles_that_differ():
    """After each frame the kernel's picture and cell means are the whole frame's, its marks
    are the pixels that moved and their cells, its block covers them, its drift is what numpy finds over the
    whole grid (recorded updated alike), and an identical frame returns None."""
    from pipeline.diff import CELL, DRIFT_LEVEL, NOISE_LEVEL, _cell_sums, _drift, cell_means
    from pipeline.luma import TV_TO_PC, AreaScaler, _tiles

    if _tiles is None:
        pytest.skip("built without a C compiler (or SOPLINE_PURE_PYTHON): the numpy path runs alone")
    rng = np.random.default_rng(3)
    scaler = AreaScaler((100, 140), (75, 105), TV_TO_PC)
    kernel = scaler.tile_kernel(CELL)
    frames = _screen_session(rng, 100, 140, 80)
    grid = cells_shape(105, 75)
    picture = scaler.full(frames[0])
    means = cell_means(picture).reshape(grid)
    recorded, expected_recorded = means.copy(), means.copy()
    drifts = widest = 0
    for before, now in zip(frames, frames[1:]):
        marks, cell_marks = np.zeros(picture.shape, bool), np.zeros(grid, bool)
        old = picture.copy()
        found = kernel.update(now, before, picture, marks, cell_marks, means, recorded, NOISE_LEVEL, DRIFT_LEVEL)
        whole = scaler.full(now)
        assert np.array_equal(picture, whole)
        assert np.array_equal(means.ravel(), cell_means(whole))
        moved = np.abs(whole.astype(int) - old) > NOISE_LEVEL
        assert np.array_equal(marks, moved)
        assert np.array_equal(cell_marks, _cell_sums(moved.astype(np.uint8)) > 0)
        expected_drift = _drift(means, expected_recorded, (0, grid[0], 0, grid[1]))
        assert np.array_equal(recorded, expected_recorded)
        if np.array_equal(before, now):
            assert found is None and expected_drift == ()
            continue
        any_moved, (cy0, cy1, cx0, cx1), drift = found
        assert any_moved == moved.any()
        assert drift == expected_drift
        drifts += bool(drift)
        widest = max(widest, len(drift))
        ys, xs = np.nonzero(moved)
        assert ((ys // CELL >= cy0) & (ys // CELL < cy1) & (xs // CELL >= cx0) & (xs // CELL < cx1)).all()
    assert drifts, "the session must have fades to compare"
    assert widest > 64, "a fade of the whole screen: more drifting cells than the kernel's first allocation"
    with pytest.raises(ValueError, match="shapes"):  # a wrong size must not read past a buffer
        kernel.update(frames[1][:96], frames[0][:96], picture, np.zeros(picture.shape, bool), np.zeros(grid, bool), means,
               recorded, NOISE_LEVEL, DRIFT_LEVEL)


def test_the_kernel_finds_the_blobs_numpy_and_scipy_find():
    """The kernel's blobs (8-connected groups of marked cells, numbered in raster order) have the
    boxes, pixel counts, cells and means of the numpy path's, on marks with diagonal contacts,
    nested shapes and cells cut short by the frame's edge; and it clears the block's marks."""
    from pipeline.diff import CELL, _blobs, _cell_sums
    from pipeline.luma import AreaScaler, _tiles

    if _tiles is None:
        pytest.skip("built without a C compiler (or SOPLINE_PURE_PYTHON): the numpy path runs alone")
    blobs = AreaScaler((96, 128), (72, 96)).tile_kernel(CELL).blobs
    rng = np.random.default_rng(11)
    seen = 0
    for _ in range(300):
        h, w = rng.integers(9, 70), rng.integers(9, 90)
        marks = np.zeros((h, w), bool)
        for _ in range(rng.integers(0, 7)):  # strokes: boxes, rings, diagonal lines, single pixels
            y, x = rng.integers(0, h), rng.integers(0, w)
            y1, x1 = min(h, y + rng.integers(1, 30)), min(w, x + rng.integers(1, 30))
            kind = rng.integers(0, 4)
            if kind == 0:
                marks[y:y1, x:x1] = True
            elif kind == 1:
                marks[y:y1, x:x1] = True
                marks[y + 1:y1 - 1, x + 1:x1 - 1] = False
            elif kind == 2:
                for k in range(min(y1 - y, x1 - x)):
                    marks[y + k, x + k] = True
            else:
                marks[y, x] = True
        cells = _cell_sums(marks.view(np.uint8)) > 0
        ys, xs = np.nonzero(cells)
        if ys.size:
            cy0, cy1 = max(0, ys.min() - rng.integers(0, 2)), ys.max() + 1
            cx0, cx1 = max(0, xs.min() - rng.integers(0, 2)), xs.max() + 1
        else:
            cy0 = cy1 = cx0 = cx1 = 0
        means = rng.integers(0, 256, cells.shape).astype(np.uint8)
        block = marks[cy0 * CELL:cy1 * CELL, cx0 * CELL:cx1 * CELL]
        expected = _blobs(block.copy(), cells[cy0:cy1, cx0:cx1].copy(), (cy0, cx0), cells.shape[1], 1.0, means.ravel())
        got = blobs(marks, cells, means, cy0, cy1, cx0, cx1, CELL)
        assert [(b.x0, b.y0, b.x1, b.y1, b.pixels, b.cells, b.values) for b in expected] == got
        assert not marks.any() and not cells.any()
        seen += len(got) > 1
    assert seen > 50, "most sessions must have several blobs to order"
    with pytest.raises(ValueError, match="block"):  # a block past the grid must not read past a buffer
        blobs(np.zeros((16, 16), bool), np.zeros((2, 2), bool), np.zeros((2, 2), np.uint8), 0, 3, 0, 2, CELL)


def test_the_compiled_kernel_is_built():
    """`pip install` compiles pipeline/_tiles.c (hatch_build.py) where a C compiler exists, as
    on CI: a silent fallback to numpy would cost the analysis three to four times the CPU
    (bench/RESULTS.md)."""
    import os
    import shutil
    import sysconfig

    from pipeline.luma import _tiles

    if os.environ.get("SOPLINE_PURE_PYTHON"):
        pytest.skip("SOPLINE_PURE_PYTHON: built without the kernel on purpose")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not (shutil.which(compiler) and os.path.exists(headers)):
        pytest.skip(f"no C compiler ({compiler}) or Python headers here: the numpy path runs")
    assert _tiles is not None, "a C compiler and Python's headers are here, yet the kernel was not built"


@pytest.mark.parametrize("width", [96, 92, 90, 89])  # rows of 8-, 4-, 2- and 1-byte words
def test_changed_bands_are_the_differing_rows_split_at_gaps_with_their_column_ends(width):
    """The diff rescales bands: rows that differ, split where more than BAND_GAP_PX rows
    apart, from the first to the last differing word of the band, on padded planes (views,
    as the decoder's are). Through a 1:1 scaler the bands are those source pixels."""
    from pipeline.diff import BAND_GAP_PX, _changed_cells
    from pipeline.luma import AreaScaler

    rng = np.random.default_rng(width)
    k = next(k for k in (8, 4, 2, 1) if width % k == 0)
    scaler = AreaScaler((160, width), (160, width))
    for n in range(150):
        a = np.zeros((160, width + 24), np.uint8)
        a[:, :width] = rng.integers(0, 256, (160, width))
        b = a.copy()
        if n < 2:  # single rows exactly the gap apart (one band) and one row more (two)
            b[[10, 10 + BAND_GAP_PX + n], [3, width - 1]] ^= 1
        for _ in range(rng.integers(0, 4) if n >= 2 else 0):
            y, x = rng.integers(0, 160), rng.integers(0, width)
            b[y:y + rng.integers(1, 50), x:x + rng.integers(1, 20)] ^= np.uint8(rng.integers(1, 256))
        prev, cur = a[:, :width], b[:, :width]
        found = _changed_cells(prev, cur, scaler)
        got = [] if found is None else [(ys.start, ys.stop, xs.start, xs.stop) for ys, xs in found[1]]
        differs = prev != cur
        rows = np.flatnonzero(differs.any(axis=1))
        want = []
        for group in np.split(rows, np.flatnonzero(np.diff(rows) > BAND_GAP_PX) + 1) if rows.size else []:
            cols = np.flatnonzero(differs[group[0]:group[-1] + 1].any(axis=0))
            want.append((int(group[0]), int(group[-1]) + 1, int(cols[0]) // k * k, (int(cols[-1]) // k + 1) * k))
        assert got == want


def test_cell_means_are_recomputed_where_bands_touch_and_kept_elsewhere():
    """After a frame the diff recomputes only the cells its bands touch: they must be the
    whole picture's means (rounded half to even, edge cells summing the pixels they have),
    and the others untouched. Cells (0, 0) and (0, 1) hold exact halves, 0.5 and 1.5."""
    from pipeline.diff import CELL, _update_means, cell_means

    rng = np.random.default_rng(11)
    for h, w in ((64, 96), (61, 93)):
        picture = rng.integers(0, 256, (h, w), dtype=np.uint8)
        picture[:8, :16] = 0
        picture[:4, :8], picture[:4, 8:16] = 1, 3
        whole = cell_means(picture).reshape(cells_shape(w, h))
        assert whole[0, 0] == 0 and whole[0, 1] == 2
        for n in range(60):
            bands = []
            for _ in range(rng.integers(1, 4)):
                y0, x0 = rng.integers(0, h), rng.integers(0, w)
                bands.append((slice(y0, rng.integers(y0 + 1, h + 1)), slice(x0, rng.integers(x0 + 1, w + 1))))
            if n == 0:  # the whole picture, halves and edges included
                bands = [(slice(0, h), slice(0, w))]
            means = np.full(whole.shape, 7, np.uint8)
            _update_means(picture, means, bands)
            expected = np.full(whole.shape, 7, np.uint8)
            for ys, xs in bands:
                cells = slice(ys.start // CELL, -(-ys.stop // CELL)), slice(xs.start // CELL, -(-xs.stop // CELL))
                expected[cells] = whole[cells]
            assert np.array_equal(means, expected)
