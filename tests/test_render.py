"""Render stage: sop.json, sop.md, screenshots and the atomic SOP folder."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from pipeline import fsutil
from pipeline.model import (Box, Callout, GeneratorInfo, Screenshot, Sentence, Sop,
                            SourceInfo, Step)
from pipeline.render import (HIGHLIGHT_PAD, HIGHLIGHT_RGB, HIGHLIGHT_WIDTH, format_ts,
                             image_path, md_code, md_escape, screenshot_png, sop_json_bytes,
                             sop_markdown, sop_to_dict, write_sop_folder)


def gradient_frame(width: int = 160, height: int = 90) -> np.ndarray:
    """A synthetic screen: a smooth gradient with a dark 'window' in it."""
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 128)], axis=-1)
    frame[20:50, 30:100] = (30, 30, 40)
    return frame.astype(np.uint8)


def make_pngs() -> dict[str, bytes]:
    frame = gradient_frame()
    return {image_path(1): screenshot_png(frame, Box(30, 20, 70, 30)),
            image_path(2): screenshot_png(frame, None)}


def make_sop(pngs: dict[str, bytes] | None = None, **changes) -> Sop:
    pngs = make_pngs() if pngs is None else pngs
    said = [
        Sentence(0.5, 3.25, "Now we run kubectl get pods in the prod namespace."),
        Sentence(3.5, 6.0, "Careful, don't delete the pvc."),
        Sentence(7.0, 9.123456, "Make sure every pod says Running."),
    ]
    steps = (
        Step(id="run-kubectl-get-pods", number=1, start_s=0.4, end_s=6.5, change_s=2.0004,
             instruction="Run kubectl get pods in the prod namespace.", kind="action",
             narration=tuple(said[:2]),
             callouts=(Callout("warning", "Do not delete the PVC."),),
             inputs=("kubectl get pods -n prod",),
             screenshot=Screenshot(image_path(1), 6.1, hashlib.sha256(pngs[image_path(1)]).hexdigest(),
                                   Box(30, 20, 70, 30))),
        Step(id="check-pods-running", number=2, start_s=6.5, end_s=9.5, change_s=None,
             instruction="Check that every pod is Running.", kind="verification",
             narration=(said[2],), callouts=(Callout("verify", "Every pod shows Running."),),
             inputs=(), screenshot=Screenshot(image_path(2), 9.0,
                                              hashlib.sha256(pngs[image_path(2)]).hexdigest(), None)),
    )
    sop = Sop(
        id="deploy-checkout",
        title="Deploy the checkout service",
        summary="Roll out a new checkout build to production and confirm it is healthy.",
        source=SourceInfo(path="ops/deploy-checkout.mp4", sha256="a" * 64, duration_s=10.0000001,
                          width=1920, height=1080, fps=29.97002997, has_audio=True),
        generator=GeneratorInfo(name="sopline", version="0.1.0", model="small.en",
                                settings_sha256="b" * 64),
        metadata={"tags": ["deploy", "k8s"], "owner": "Platform team", "review_every_days": 90,
                  "prerequisites": ["kubectl access to prod"], "expected_outcome": "All pods Running.",
                  "approvers": ["sre-leads"], "role": "On-call SRE"},
        steps=steps,
        transcript=tuple(said),
    )
    return dataclasses.replace(sop, **changes)


def with_step_text(sop: Sop, **changes) -> Sop:
    return dataclasses.replace(sop, steps=(dataclasses.replace(sop.steps[0], **changes),) + sop.steps[1:])


# ------------------------------------------------------------------ sop.json

def test_sop_to_dict_puts_schema_version_first_then_design_order():
    doc = sop_to_dict(make_sop())
    assert list(doc) == ["schema_version", "id", "title", "summary", "source", "generator",
                         "metadata", "steps", "transcript"]
    assert doc["schema_version"] == 1
    assert list(doc["steps"][0]) == ["id", "number", "start_s", "end_s", "change_s", "instruction",
                                     "kind", "narration", "callouts", "inputs", "screenshot"]


def test_sop_to_dict_rounds_times_to_three_decimals():
    doc = sop_to_dict(make_sop())
    assert doc["source"]["duration_s"] == 10.0
    assert doc["steps"][0]["change_s"] == 2.0
    assert doc["transcript"][2]["end_s"] == 9.123
    assert doc["source"]["fps"] == 29.97


def test_sop_to_dict_keeps_null_change_and_null_highlight():
    step = sop_to_dict(make_sop())["steps"][1]
    assert step["change_s"] is None
    assert step["screenshot"]["highlight"] is None


def test_sop_to_dict_refuses_an_absolute_source_path():
    sop = make_sop()
    sop = dataclasses.replace(sop, source=dataclasses.replace(sop.source, path="/home/ci/rec.mp4"))
    with pytest.raises(ValueError, match="relative"):
        sop_to_dict(sop)


def test_sop_json_bytes_is_deterministic():
    assert sop_json_bytes(make_sop()) == sop_json_bytes(make_sop())


def test_sop_json_bytes_does_not_depend_on_sidecar_key_order():
    sop = make_sop()
    reordered = dataclasses.replace(sop, metadata=dict(reversed(list(sop.metadata.items()))))
    assert sop_json_bytes(reordered) == sop_json_bytes(sop)


def test_sop_json_bytes_is_indented_utf8_with_trailing_newline():
    data = sop_json_bytes(make_sop(title="Déployer ✓"))
    assert data.endswith(b"}\n")
    assert "Déployer ✓" in data.decode("utf-8")
    assert data.startswith(b'{\n  "schema_version": 1,\n')


# ------------------------------------------------------------------- sop.md

def test_markdown_has_the_sections_a_team_publishes():
    md = sop_markdown(make_sop())
    assert md.startswith("# Deploy the checkout service\n\nRoll out a new checkout build")
    for heading in ("## Prerequisites", "## Expected outcome", "## Procedure", "## Source"):
        assert f"\n{heading}\n" in md
    assert "| Owner | Platform team |" in md
    assert "| Review | every 90 days |" in md
    assert "### 1. Run kubectl get pods in the prod namespace." in md
    assert "### 2. Check that every pod is Running." in md


def test_markdown_step_shows_screenshot_callouts_inputs_and_narration():
    md = sop_markdown(make_sop())
    assert "![Step 1: Run kubectl get pods in the prod namespace.](images/step-01.png)" in md
    assert "> **Warning:** Do not delete the PVC." in md
    assert "> **Verify:** Every pod shows Running." in md
    assert "- `kubectl get pods -n prod`" in md
    assert "<summary>Narration (0:00–0:06)</summary>" in md
    assert "- 0:00 Now we run kubectl get pods in the prod namespace." in md


def test_markdown_badges_verification_steps_but_not_actions():
    md = sop_markdown(make_sop())
    step1, step2 = md.split("### 1.")[1].split("### 2.")
    assert "**Verification**" in step2
    assert "**Verification**" not in step1


def test_markdown_source_section_names_recording_generator_and_model():
    md = sop_markdown(make_sop())
    assert "- Recording: `ops/deploy-checkout.mp4`" in md
    assert "- Generator: sopline 0.1.0" in md
    assert "- Speech model: `small.en`" in md
    assert "1920×1080, 29.97 fps, with audio" in md


def test_markdown_refuses_an_absolute_screenshot_path():
    shot = make_sop().steps[0].screenshot
    sop = with_step_text(make_sop(), screenshot=dataclasses.replace(shot, path="/tmp/step-01.png"))
    with pytest.raises(ValueError, match="relative"):
        sop_markdown(sop)


def test_markdown_escapes_script_tags_from_speech():
    md = sop_markdown(with_step_text(make_sop(), instruction="Paste <script>alert(1)</script> & go."))
    assert "<script>" not in md
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt; &amp; go." in md


def test_markdown_cannot_form_a_javascript_link():
    sop = with_step_text(make_sop(), instruction="Click [here](javascript:alert(1)) now.",
                         callouts=(Callout("tip", "See ](javascript:alert(1))"),))
    md = sop_markdown(sop)
    assert "](javascript:" not in md
    assert "Click [" not in md
    assert "\\[here\\]\\(javascript:alert\\(1\\)\\) now." in md


def test_markdown_escapes_pipes_in_the_metadata_table():
    md = sop_markdown(make_sop(metadata={"owner": "ops | security", "tags": ["a"]}))
    assert "| Owner | ops \\| security |" in md


def test_markdown_escapes_emphasis_code_and_headings_in_titles():
    md = sop_markdown(make_sop(title="# *Rollback* the `db`_now"))
    assert md.startswith("# \\# \\*Rollback\\* the \\`db\\`\\_now\n")


def test_markdown_is_deterministic():
    assert sop_markdown(make_sop()) == sop_markdown(make_sop())


def test_md_escape_neutralises_line_start_block_markers():
    assert md_escape("- not a list") == "\\- not a list"
    assert md_escape("1. not a list") == "1\\. not a list"
    assert md_escape("> not a quote") == "&gt; not a quote"
    assert md_escape("line one\n# line two") == "line one \\# line two"


def test_md_code_uses_a_longer_fence_than_backticks_inside():
    assert md_code("echo `date`") == "`` echo `date` ``"
    assert md_code("a ``b`` c") == "```a ``b`` c```"
    assert md_code("plain") == "`plain`"


def test_markdown_puts_multiline_inputs_in_a_code_block():
    md = sop_markdown(with_step_text(make_sop(), inputs=("helm upgrade \\\n  --install x",)))
    assert "```\nhelm upgrade \\\n  --install x\n```" in md


def test_format_ts_shows_minutes_and_hours():
    assert format_ts(5.9) == "0:05"
    assert format_ts(125) == "2:05"
    assert format_ts(3725) == "1:02:05"


# ---------------------------------------------------------------------- PNG

def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_png_is_deterministic():
    frame = gradient_frame()
    assert screenshot_png(frame, Box(30, 20, 70, 30)) == screenshot_png(frame.copy(), Box(30, 20, 70, 30))


def test_png_outlines_the_highlight_just_outside_the_box_edge():
    box = Box(30, 20, 70, 30)
    img = decode(screenshot_png(gradient_frame(), box))
    outline_x = box.x - HIGHLIGHT_PAD - HIGHLIGHT_WIDTH // 2 - 1
    outline_y = box.y + box.h - 1 + HIGHLIGHT_PAD + HIGHLIGHT_WIDTH // 2 + 1
    mid_y, mid_x = box.y + box.h // 2, box.x + box.w // 2
    assert tuple(img[mid_y, outline_x]) == HIGHLIGHT_RGB  # left edge
    assert tuple(img[outline_y, mid_x]) == HIGHLIGHT_RGB  # bottom edge


def test_png_changes_only_the_outline_pixels():
    frame = gradient_frame()
    box = Box(30, 20, 70, 30)
    img = decode(screenshot_png(frame, box))
    assert np.array_equal(img[20:50, 30:100], frame[20:50, 30:100])
    assert np.array_equal(img[85, 150], frame[85, 150])


def test_png_without_highlight_is_the_frame_losslessly():
    frame = gradient_frame()
    assert np.array_equal(decode(screenshot_png(frame, None)), frame)


def test_png_highlight_at_the_screen_corner_is_clipped_to_the_image():
    frame = gradient_frame()
    img = decode(screenshot_png(frame, Box(0, 0, 20, 10)))
    assert tuple(img[5, 0]) == HIGHLIGHT_RGB
    assert tuple(img[0, 10]) == HIGHLIGHT_RGB


def test_png_carries_no_metadata_chunks():
    png = screenshot_png(gradient_frame(), Box(30, 20, 70, 30))
    chunks, pos = [], 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunks.append(kind.decode())
        pos += 12 + length
    assert set(chunks) == {"IHDR", "IDAT", "IEND"}


def test_png_rejects_a_frame_that_is_not_rgb_uint8():
    with pytest.raises(ValueError, match="uint8"):
        screenshot_png(np.zeros((4, 4), dtype=np.uint8), None)


# ------------------------------------------------------------- SOP folder

def test_write_sop_folder_writes_json_markdown_and_images(tmp_path):
    pngs = make_pngs()
    sop = make_sop(pngs)
    dest = tmp_path / "out" / "ops" / "deploy-checkout"
    write_sop_folder(sop, pngs, dest)
    assert (dest / "sop.json").read_bytes() == sop_json_bytes(sop)
    assert (dest / "sop.md").read_text(encoding="utf-8") == sop_markdown(sop)
    assert (dest / "images" / "step-01.png").read_bytes() == pngs[image_path(1)]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["deploy-checkout"]


def test_write_sop_folder_replaces_the_previous_version_entirely(tmp_path):
    pngs = make_pngs()
    dest = tmp_path / "deploy-checkout"
    write_sop_folder(make_sop(pngs), pngs, dest)
    (dest / "images" / "step-07.png").write_bytes(b"stale")
    fewer = {image_path(1): pngs[image_path(1)]}
    sop = make_sop(pngs)
    write_sop_folder(dataclasses.replace(sop, steps=sop.steps[:1]), fewer, dest)
    assert sorted(p.name for p in (dest / "images").iterdir()) == ["step-01.png"]
    assert len(json.loads((dest / "sop.json").read_text())["steps"]) == 1


class DiskFullAfterFirstImage(dict):
    """PNG bytes whose second read fails the way a full disk does."""

    reads = 0

    def __getitem__(self, key):
        self.reads += 1
        if self.reads > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().__getitem__(key)


def test_write_sop_folder_keeps_the_old_folder_when_writing_fails_midway(tmp_path):
    pngs = make_pngs()
    dest = tmp_path / "deploy-checkout"
    write_sop_folder(make_sop(pngs), pngs, dest)
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    renamed = make_sop(pngs, title="Deploy checkout, second take")
    with pytest.raises(OSError, match="No space left"):
        write_sop_folder(renamed, DiskFullAfterFirstImage(pngs), dest)

    after = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy-checkout"]  # no staging left


def test_write_sop_folder_rejects_a_screenshot_whose_hash_does_not_match(tmp_path):
    pngs = make_pngs()
    dest = tmp_path / "deploy-checkout"
    write_sop_folder(make_sop(pngs), pngs, dest)
    swapped = {image_path(1): pngs[image_path(2)], image_path(2): pngs[image_path(1)]}
    with pytest.raises(ValueError, match="sha256"):
        write_sop_folder(make_sop(pngs), swapped, dest)
    assert (dest / "images" / "step-01.png").read_bytes() == pngs[image_path(1)]


def test_write_sop_folder_rejects_a_sop_that_breaks_the_schema_before_touching_disk(tmp_path):
    dest = tmp_path / "deploy-checkout"
    with pytest.raises(ValueError, match=r"steps\[0\]\.kind"):
        write_sop_folder(with_step_text(make_sop(), kind="chore"), make_pngs(), dest)
    assert list(tmp_path.iterdir()) == []


def test_write_sop_folder_rejects_a_missing_screenshot(tmp_path):
    with pytest.raises(ValueError, match="images/step-02.png"):
        write_sop_folder(make_sop(), {image_path(1): make_pngs()[image_path(1)]}, tmp_path / "x")


def test_write_sop_folder_refuses_image_paths_that_escape_the_folder(tmp_path):
    pngs = make_pngs()
    with pytest.raises(ValueError, match=r"\.\."):
        write_sop_folder(make_sop(pngs), {**pngs, "../evil.png": b"x"}, tmp_path / "x")


# ------------------------------------------------------------------ fsutil

def test_sha256_file_matches_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    (tmp_path / "rec.mp4").write_bytes(data)
    assert fsutil.sha256_file(tmp_path / "rec.mp4") == hashlib.sha256(data).hexdigest()


def test_atomic_write_bytes_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    fsutil.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_staging_dir_is_a_hidden_sibling(tmp_path):
    staging = fsutil.staging_dir_for(tmp_path / "sop")
    assert staging.parent == tmp_path and staging.name.startswith(".sop.") and staging.is_dir()


def test_replace_dir_atomically_refuses_a_staging_folder_elsewhere(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "staging").mkdir(parents=True)
    with pytest.raises(ValueError, match="sibling"):
        fsutil.replace_dir_atomically(tmp_path / "b" / "staging", tmp_path / "a" / "dest")


def test_replace_dir_atomically_swaps_in_the_new_folder(tmp_path):
    dest = tmp_path / "sop"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    staging = fsutil.staging_dir_for(dest)
    (staging / "new.txt").write_text("new")
    fsutil.replace_dir_atomically(staging, dest)
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["sop"]


def test_remove_leftovers_clears_what_a_killed_build_left_behind(tmp_path):
    dest = tmp_path / "sop"
    staging = fsutil.staging_dir_for(dest)
    (staging / "half.png").write_bytes(b"x")
    (tmp_path / ".sop.keep-me").write_text("user file")
    fsutil.remove_leftovers(dest)
    assert [p.name for p in tmp_path.iterdir()] == [".sop.keep-me"]
