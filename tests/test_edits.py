"""Human edits survive regeneration.

Real recordings of one procedure (tests/fixtures/pairs): billing-v1, the same five steps
re-recorded with another voice and speed (billing-v1-again), and a re-recording with step 2
changed, step 3 removed and a step added (billing-v2). A reviewer edits v1 with `sopline
edit`; rebuilds apply the edits, and on v2 the edit of the changed step is reported as
orphaned while the others still apply.
"""
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from hypothesis import given
from jsonschema import Draft202012Validator
from hypothesis import strategies as st
from PIL import Image

from pipeline import render
from pipeline.build import BuildSettings, Builder, build, discover, step_ids
from pipeline.cli import main
from pipeline.edits import EditsError, apply_edits, apply_overlay, edits_path_for, load_edits
from pipeline.fsutil import sha256_file
from pipeline.schemas import load_schema, validate

PAIRS = Path(__file__).parent / "fixtures" / "pairs"
SETTINGS = BuildSettings()
STATUS = "check-billing-service-status"
SNAPSHOT = "take-snapshot-billing-database"  # reworded in v2 ("billing ledger")
DRAIN = "drain-billing-service"  # removed in v2
UPGRADE = "upgrade-billing-3-2"
ROTATION = "put-billing-back-into-rotation"
REWORDED = "Snapshot the billing database with `backup billing-db`."
WARNING = "Never upgrade during the nightly billing run."
OVERLAY_HEAD = "# Reviewed by the billing team; keep this comment.\nby: alice  # default author\n"


def place(recs: Path, folder: str, fixture: str) -> Path:
    path = recs / folder / "billing.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(PAIRS / f"{fixture}.mp4", path)
    return path


def edit(*args: str):
    return CliRunner().invoke(main, ["edit", *args])


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    """billing-v1 built once, then edited with `sopline edit` (reword, drop, add a
    warning) and rebuilt twice."""
    base = tmp_path_factory.mktemp("edits")
    recs, out = base / "recs", base / "sops"
    place(recs, "v1", "billing-v1")
    first = build([recs], out, SETTINGS)
    assert not first.failed, [r.message for r in first.failed]
    sop = out / "v1" / "billing"
    generated = json.loads((sop / "sop.json").read_text("utf-8"))
    overlay = recs / "v1" / "billing.sop.edits.yaml"
    overlay.write_text(OVERLAY_HEAD, "utf-8")
    results = [
        edit(str(sop), "--step", SNAPSHOT, "--instruction", REWORDED, "--by", "bob"),
        edit(str(sop / "sop.json"), "--step", STATUS, "--drop"),  # recording found near the output tree
        edit(str(sop), "--recordings", str(recs), "--step", UPGRADE, "--add-warning", WARNING),
    ]
    assert [r.exit_code for r in results] == [0, 0, 0], [r.output for r in results]
    rebuilt = build([recs], out, SETTINGS)
    assert not rebuilt.failed, [r.message for r in rebuilt.failed]
    once = folder_bytes(sop)
    again = build([recs], out, SETTINGS, force=True)
    return SimpleNamespace(base=base, recs=recs, out=out, sop=sop, overlay=overlay, generated=generated,
                           doc=json.loads((sop / "sop.json").read_text("utf-8")),
                           md=(sop / "sop.md").read_text("utf-8"), once=once, twice=folder_bytes(sop),
                           edit_output=[r.output for r in results], report=rebuilt, forced=again)


@pytest.fixture(scope="module")
def again():
    """billing-v1-again (other voice, other speed), generated without edits: the SOP
    record itself, for the id check and for applying overlays directly."""
    rec = discover([PAIRS / "billing-v1-again.mp4"])[0]
    sop, pngs, _ = Builder(SETTINGS).build_sop(rec, sha256_file(rec.path))
    return SimpleNamespace(sop=sop, pngs=pngs)


@pytest.fixture(scope="module")
def v2(v1, tmp_path_factory):
    """billing-v2 (same file name, another folder) with v1's overlay copied beside it;
    in the same build, another recording whose overlay is invalid."""
    base = tmp_path_factory.mktemp("rerecorded")
    recs, out = base / "recs", base / "sops"
    place(recs, "v2", "billing-v2")
    shutil.copy(v1.overlay, recs / "v2" / "billing.sop.edits.yaml")
    (recs / "broken").mkdir()
    shutil.copy(PAIRS.parent / "no-audio.mp4", recs / "broken" / "clip.mp4")  # quick: nothing to transcribe
    (recs / "broken" / "clip.sop.edits.yaml").write_text("steps:\n  check-billing-service-status:\n"
                                                            "    kind: chore\n", "utf-8")
    report = build([recs], out, SETTINGS)
    results = {str(r.recording.source): r for r in report.results}
    return SimpleNamespace(recs=recs, out=out, results=results,
                           doc=json.loads((out / "v2" / "billing" / "sop.json").read_text("utf-8")),
                           overlay_before=v1.overlay.read_bytes())


def step(doc: dict, sid: str) -> dict:
    return next(s for s in doc["steps"] if s["id"] == sid)


def write_overlay(folder: Path, text: str) -> Path:
    path = folder / "billing.sop.edits.yaml"
    path.write_text(text, "utf-8")
    return path


# ------------------------------------------------------------------ step ids

def test_the_same_step_keeps_its_id_when_re_recorded_at_another_speed_and_voice(v1, again):
    assert [s["id"] for s in v1.generated["steps"]] == [s.id for s in again.sop.steps]
    assert [s["id"] for s in v1.generated["steps"]] == [STATUS, SNAPSHOT, DRAIN, UPGRADE, ROTATION]


def test_a_changed_step_gets_a_new_id_and_unchanged_steps_keep_theirs(v2):
    ids = [s["id"] for s in v2.doc["steps"]]
    assert SNAPSHOT not in ids and DRAIN not in ids
    assert {UPGRADE, ROTATION} <= set(ids)


def test_a_suffix_never_takes_another_steps_own_id():
    assert step_ids(["Run step 2.", "Run step.", "Run step."]) == ["run-step-2", "run-step", "run-step-3"]


@given(st.lists(st.text(max_size=80), max_size=12))
def test_different_steps_never_share_an_id_and_ids_are_schema_slugs(instructions):
    ids = step_ids(instructions)
    assert len(set(ids)) == len(ids)
    slug = Draft202012Validator(load_schema("sop")["$defs"]["slug"])
    assert all(slug.is_valid(i) and len(i) <= 80 for i in ids)


# ------------------------------------------------------------- rebuild flow

def test_sopline_edit_writes_the_overlay_and_prints_the_build_command(v1):
    assert all("apply with: sopline build" in out for out in v1.edit_output)
    assert f"-o {v1.out}" in v1.edit_output[0]


def test_comments_in_the_overlay_survive_sopline_edit(v1):
    text = v1.overlay.read_text("utf-8")
    assert text.startswith(OVERLAY_HEAD)
    assert "by: alice  # default author" in text


def test_edits_are_applied_on_rebuild(v1):
    ids = [s["id"] for s in v1.doc["steps"]]
    assert ids == [SNAPSHOT, DRAIN, UPGRADE, ROTATION]  # status dropped
    assert step(v1.doc, SNAPSHOT)["instruction"] == REWORDED
    assert {"kind": "warning", "text": WARNING} in step(v1.doc, UPGRADE)["callouts"]
    assert step(v1.doc, UPGRADE)["callouts"][0] == step(v1.generated, UPGRADE)["callouts"][0]


def test_steps_are_renumbered_and_screenshots_renamed_to_match(v1):
    for number, s in enumerate(v1.doc["steps"], start=1):
        assert s["number"] == number
        assert s["screenshot"]["path"] == f"images/step-{number:02d}.png"
        data = (v1.sop / s["screenshot"]["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["screenshot"]["sha256"]
    # the snapshot step's picture moved from step-02 to step-01 with it
    assert step(v1.doc, SNAPSHOT)["screenshot"]["sha256"] == step(v1.generated, SNAPSHOT)["screenshot"]["sha256"]
    assert sorted(p.name for p in (v1.sop / "images").iterdir()) == [f"step-0{i}.png" for i in range(1, 5)]


def test_sop_json_records_which_fields_a_person_set_and_by_whom(v1):
    snap = step(v1.doc, SNAPSHOT)["edited"]
    assert snap == {"fields": ["instruction"], "by": "bob",
                    "generated": {"instruction": step(v1.generated, SNAPSHOT)["instruction"]}}
    upgrade = step(v1.doc, UPGRADE)["edited"]
    assert upgrade["fields"] == ["callouts"] and upgrade["by"] == "alice"
    assert upgrade["generated"]["callouts"] == step(v1.generated, UPGRADE)["callouts"]
    assert "edited" not in step(v1.doc, ROTATION) and "origin" not in step(v1.doc, ROTATION)


def test_sop_json_summarises_the_overlay(v1):
    edits = v1.doc["edits"]
    assert edits["path"] == "v1/billing.sop.edits.yaml"
    assert edits["sha256"] == hashlib.sha256(v1.overlay.read_bytes()).hexdigest()
    assert edits["applied"] == 3 and edits["dropped"] == [STATUS] and edits["merged"] == []
    assert edits["orphaned"] == [] and edits["sop_fields"] == []
    assert validate("sop", v1.doc) == []


def test_rebuilt_output_is_byte_stable(v1):
    assert v1.forced.results[0].ok
    assert v1.once == v1.twice


def test_sop_md_shows_edited_content_with_a_marker(v1):
    assert f"### 1. {render.md_escape(REWORDED)} _(edited by bob)_" in v1.md
    assert f"> **Warning:** {render.md_escape(WARNING)}" in v1.md
    assert "Check the billing service status" not in v1.md.split("## Procedure")[1].split("## Source")[0]


def test_sopline_steps_lists_ids_with_an_edited_marker(v1):
    result = CliRunner().invoke(main, ["steps", str(v1.sop), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(s["number"], s["id"], s["edited"]) for s in listed["steps"]] == [
        (1, SNAPSHOT, True), (2, DRAIN, False), (3, UPGRADE, True), (4, ROTATION, False)]
    assert listed["dropped"] == [STATUS]
    table = CliRunner().invoke(main, ["steps", str(v1.sop)]).stdout
    assert f"  1  {SNAPSHOT}" in table and "(edited)" in table and "(dropped by an edit)" in table


def test_an_unknown_step_id_is_refused_with_close_ids(v1):
    before = v1.overlay.read_bytes()
    result = edit(str(v1.sop), "--step", "upgrade-billing", "--instruction", "x")
    assert result.exit_code == 2
    assert "unknown step id 'upgrade-billing'" in result.output and UPGRADE in result.output
    assert v1.overlay.read_bytes() == before


def test_a_link_to_a_script_url_is_refused_by_sopline_edit(v1):
    result = edit(str(v1.sop), "--step", ROTATION, "--link", "Runbook=javascript:alert(1)")
    assert result.exit_code == 2 and "only http(s) and relative URLs" in result.output


def test_sopline_edit_inserts_a_step_with_an_image_into_a_new_overlay(v1, tmp_path):
    (tmp_path / "docs").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "docs" / "pager.png")
    overlay = tmp_path / "billing.sop.edits.yaml"
    result = edit(str(overlay), "--sop", str(v1.sop), "--insert-after", DRAIN,
                  "--instruction", "Confirm the pager is quiet.", "--image", str(tmp_path / "docs" / "pager.png"))
    assert result.exit_code == 0, result.output
    inserted = load_edits(overlay).inserts
    assert [(i.after, i.id, i.instruction, i.image) for i in inserted] == [
        (DRAIN, "confirm-pager-quiet", "Confirm the pager is quiet.", "docs/pager.png")]


def test_sopline_edit_refuses_an_image_outside_the_recording_root(v1, tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "outside.png")
    (tmp_path / "recs").mkdir()
    overlay = tmp_path / "recs" / "billing.sop.edits.yaml"
    result = edit(str(overlay), "--sop", str(v1.sop), "--insert-at-start", "--instruction", "Look.",
                  "--image", str(tmp_path / "outside.png"))
    assert result.exit_code == 2 and "outside the recording root" in result.output
    assert not overlay.exists()


# -------------------------------------------------------------- re-recording

def test_edits_on_unchanged_steps_survive_a_re_recording(v2):
    assert v2.results["v2/billing.mp4"].ok
    assert STATUS not in [s["id"] for s in v2.doc["steps"]]  # still dropped
    assert {"kind": "warning", "text": WARNING} in step(v2.doc, UPGRADE)["callouts"]
    assert v2.doc["edits"]["dropped"] == [STATUS] and v2.doc["edits"]["applied"] == 2


def test_the_edit_of_a_changed_step_is_reported_orphaned(v2):
    assert v2.doc["edits"]["orphaned"] == [{"step": SNAPSHOT, "fields": ["instruction"],
                                            "reason": "step no longer exists"}]
    assert (f"edits: step '{SNAPSHOT}' no longer exists; edit kept, not applied"
            in v2.results["v2/billing.mp4"].warnings)
    assert REWORDED not in json.dumps(v2.doc)


def test_a_build_never_modifies_the_overlay(v2):
    assert (v2.recs / "v2" / "billing.sop.edits.yaml").read_bytes() == v2.overlay_before


def test_an_invalid_overlay_fails_that_recordings_build_with_one_line(v2):
    broken = v2.results["broken/clip.mp4"]
    assert not broken.ok and "\n" not in broken.message
    assert broken.message.startswith("edits clip.sop.edits.yaml: steps.check-billing-service-status.kind:")
    assert not (v2.out / "broken" / "clip" / "sop.json").exists()


# ------------------------------------------------- applying overlays directly

def test_an_inserted_step_with_an_image_is_numbered_and_its_png_named_to_match(again, tmp_path):
    root = tmp_path / "recs"
    (root / "docs").mkdir(parents=True)
    Image.new("RGB", (64, 40), (200, 30, 30)).save(root / "docs" / "pager.jpg", quality=90)
    path = write_overlay(root, "insert:\n  - after: drain-billing-service\n    instruction: Confirm the pager is quiet.\n"
                               "    kind: verification\n    image: docs/pager.jpg\n    by: carol\n"
                               "  - after: null\n    instruction: Announce the maintenance.\n")
    sop, pngs, _ = apply_edits(again.sop, again.pngs, load_edits(path), root)
    assert [s.id for s in sop.steps][:1] == ["announce-maintenance"]
    assert [s.id for s in sop.steps][3:5] == [DRAIN, "confirm-pager-quiet"]
    manual = sop.steps[4]
    assert manual.origin == "manual" and manual.number == 5 and manual.edited.by == "carol"
    assert manual.screenshot.path == "images/step-05.png" and manual.start_s == sop.steps[3].end_s
    assert pngs["images/step-05.png"].startswith(b"\x89PNG") and Image.open(io.BytesIO(pngs["images/step-05.png"])).size == (64, 40)
    assert sorted(pngs) == [s.screenshot.path for s in sop.steps if s.screenshot]
    dest = tmp_path / "out"
    render.write_sop_folder(sop, pngs, dest)  # schema-valid, hashes match the files
    doc = json.loads((dest / "sop.json").read_text("utf-8"))
    assert step(doc, "confirm-pager-quiet")["origin"] == "manual" and "_(added by carol)_" in (dest / "sop.md").read_text()


def test_merging_joins_narration_and_keeps_the_later_screenshot(again, tmp_path):
    path = write_overlay(tmp_path, f"steps:\n  {DRAIN}:\n    merge_into_previous: true\n")
    sop, pngs, _ = apply_edits(again.sop, again.pngs, load_edits(path), tmp_path)
    before = {s.id: s for s in again.sop.steps}
    merged = sop.steps[1]
    assert merged.id == SNAPSHOT and [s.id for s in sop.steps] == [STATUS, SNAPSHOT, UPGRADE, ROTATION]
    assert merged.narration == before[SNAPSHOT].narration + before[DRAIN].narration
    assert merged.screenshot.sha256 == before[DRAIN].screenshot.sha256
    assert merged.edited.merged == (DRAIN,) and sop.edits.merged == (DRAIN,)
    assert merged.end_s == before[DRAIN].end_s


@pytest.mark.parametrize("image, problem", [("../outside.png", "outside the recording root"),
                                            ("docs/escape.png", "symlink pointing outside")])
def test_an_image_outside_the_recording_root_is_refused(again, tmp_path, image, problem):
    root = tmp_path / "recs"
    (root / "docs").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", root / "docs" / "escape.png")
    path = write_overlay(root, f"insert:\n  - after: null\n    instruction: Look.\n    image: {image}\n")
    with pytest.raises(EditsError, match=problem):
        apply_edits(again.sop, again.pngs, load_edits(path), root)


def test_an_absolute_image_path_or_a_gif_is_refused_on_load(tmp_path):
    for image in ("/etc/hosts.png", "docs/anim.gif"):
        path = write_overlay(tmp_path, f"insert:\n  - after: null\n    instruction: Look.\n    image: {image}\n")
        with pytest.raises(EditsError, match="insert\\[0\\].image"):
            load_edits(path)


def test_markdown_and_html_in_a_note_render_inert(again, tmp_path):
    note = ("Takes **a minute**. <script>alert(1)</script> <img src=x onerror=alert(1)> "
            "[runbook](https://wiki.example.com/billing?a=1&b=2) [x](javascript:alert(1)) "
            "[y](javascript&#58;alert(1)) ![pixel](https://tracker.example.com/p.png)\n# not a heading")
    path = write_overlay(tmp_path, "steps:\n  " + UPGRADE + ":\n    notes:\n      - " + json.dumps(note) + "\n"
                         "    links:\n      - {title: '<b>Ticket</b>', url: 'https://t.example.com/OPS-1'}\n")
    sop, _, _ = apply_edits(again.sop, again.pngs, load_edits(path), tmp_path)
    md = render.sop_markdown(sop)
    block = md[md.index("> **Note:**"):md.index("**Links:**")]
    assert "**a minute**" in block and "[runbook](https://wiki.example.com/billing?a=1&amp;b=2)" in block
    for unsafe in ("<script", "<img", "&#58;", "![", "\n> # not"):
        assert unsafe not in block, unsafe
    assert not re.search(r"(?<!\\)\]\(javascript", block)  # brackets escaped: no link forms
    assert "[pixel](https://tracker.example.com/p.png)" in block  # an image only as a link: nothing loads
    assert "[&lt;b&gt;Ticket&lt;/b&gt;](https://t.example.com/OPS-1)" in md
    assert step(render.sop_to_dict(sop), UPGRADE)["notes"] == [note]


def test_a_script_link_in_the_overlay_is_refused_on_load(tmp_path):
    path = write_overlay(tmp_path, "steps:\n  a:\n    links:\n      - {title: x, url: 'javascript:alert(1)'}\n")
    with pytest.raises(EditsError, match="steps.a.links\\[0\\].url"):
        load_edits(path)


@pytest.mark.parametrize("text, problem", [
    ("steps:\n  a: {drop: true}\n  a: {drop: false}\n", "duplicate key 'a'"),
    ("x: &n {drop: true}\nsteps:\n  a: *n\n", "aliases"),
    ("steps: [1, 2]\n", "steps: \\[1, 2\\] is not of type 'object'"),
])
def test_a_bad_overlay_is_refused_in_one_line(tmp_path, text, problem):
    with pytest.raises(EditsError, match=problem) as info:
        load_edits(write_overlay(tmp_path, text))
    assert "\n" not in str(info.value) and str(info.value).startswith("billing.sop.edits.yaml: ")


def test_unknown_keys_are_warned_about_not_fatal(tmp_path):
    edits = load_edits(write_overlay(tmp_path, "colour: blue\nsteps:\n  a:\n    drop: true\n    dorp: true\n"))
    assert edits.warnings == ("edits billing.sop.edits.yaml: unknown key 'colour' ignored",
                              "edits billing.sop.edits.yaml: unknown key 'steps.a.dorp' ignored")
    assert edits.steps[0].drop


def test_sop_level_fields_are_set_and_listed(again, tmp_path):
    path = write_overlay(tmp_path, "sop:\n  by: dana\n  title: Upgrade billing to 3.2\n"
                                   "  prerequisites: [VPN access]\n  expected_outcome: Both instances on 3.2.\n")
    sop, _, _ = apply_edits(again.sop, again.pngs, load_edits(path), tmp_path)
    doc = render.sop_to_dict(sop)
    assert doc["title"] == "Upgrade billing to 3.2" and doc["metadata"]["prerequisites"] == ["VPN access"]
    assert doc["edits"]["sop_fields"] == ["title", "metadata.prerequisites", "metadata.expected_outcome"]
    assert doc["edits"]["generated"] == {"title": again.sop.title} and doc["edits"]["by"] == "dana"


def test_an_sop_without_an_overlay_has_no_edit_fields(again):
    doc = render.sop_to_dict(again.sop)
    assert "edits" not in doc
    assert not any(k in s for s in doc["steps"] for k in ("edited", "origin", "notes", "links"))


def test_the_edited_marker_can_be_switched_off_in_the_overlay(again, tmp_path):
    path = write_overlay(tmp_path, f"mark_edited: false\nsteps:\n  {UPGRADE}:\n    instruction: Upgrade billing.\n")
    sop, _, _ = apply_edits(again.sop, again.pngs, load_edits(path), tmp_path)
    md = render.sop_markdown(sop)
    assert "### 4. Upgrade billing.\n" in md and "_(edited" not in md
    assert step(render.sop_to_dict(sop), UPGRADE)["edited"]["fields"] == ["instruction"]


def test_an_overlay_linking_out_of_the_recordings_folder_is_refused(again, tmp_path):
    (tmp_path / "recs").mkdir()
    (tmp_path / "secret.yaml").write_text("sop: {title: leaked}\n")
    recording = tmp_path / "recs" / again.sop.source.path
    os.symlink(tmp_path / "secret.yaml", edits_path_for(recording))
    with pytest.raises(EditsError, match="outside the recording's folder"):
        apply_overlay(recording, again.sop, again.pngs)


def test_html_after_a_code_fence_in_a_list_item_stays_escaped():
    # The list item ends at the unindented line, closing its fence there: that line must
    # not have been passed through as code.
    lines = render.md_markdown("- item\n  ```\n<script>alert(1)</script>\n```\n<b>x</b>\n")
    assert "<script" not in "\n".join(lines) and "&lt;script&gt;" in "\n".join(lines)
