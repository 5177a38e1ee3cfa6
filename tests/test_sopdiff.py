"""`sopline diff`: semantic SOP diffs on real recordings of the same scenario.

billing-v1 and billing-v1-again are the same five steps recorded twice (another
voice, speed and timing); billing-v2 changes step 2 (database -> ledger), drops
step 3 (drain) and adds a last step (post a note). Each is built once, under the
same file name, so the output trees have matching SOP paths.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.build import BuildSettings, build
from pipeline.cli import main
from pipeline.schemas import validate
from pipeline.diffreport import report_dict, to_json, to_markdown
from pipeline.sopdiff import SCREENSHOT_CHANGED_BELOW, diff_against_ref, diff_trees, load_side, text_similarity

PAIRS = Path(__file__).parent / "fixtures" / "pairs"
EXTRA = Path(__file__).parent / "fixtures" / "no-audio.mp4"
SIDECAR = "title: Upgrade the billing service\nowner: billing-team\napprovers: [sre-lead]\n"


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """a: v1, b: v1 re-recorded, c: v2, d: v1 with a sidecar plus a second SOP (ops/notify)."""
    out = {}
    for name, recording in (("a", "billing-v1"), ("b", "billing-v1-again"), ("c", "billing-v2"), ("d", "billing-v1")):
        src = tmp_path_factory.mktemp(f"rec-{name}")
        shutil.copy(PAIRS / f"{recording}.mp4", src / "billing.mp4")
        if name == "d":
            (src / "billing.sop.yaml").write_text(SIDECAR)
            (src / "ops").mkdir()
            shutil.copy(EXTRA, src / "ops" / "notify.mp4")
        out[name] = tmp_path_factory.mktemp(f"sops-{name}")
        report = build([src], out[name], BuildSettings())
        assert not report.failed, [r.message for r in report.failed]
    return out


def diff(old: Path, new: Path):
    return diff_trees(load_side(old), load_side(new))


def run(*args: str):
    return CliRunner().invoke(main, ["diff", *map(str, args)])


def edited_copy(src: Path, dest: Path, change) -> Path:
    """A copy of a built SOP folder whose sop.json ``change(doc)`` modified in place."""
    shutil.copytree(src, dest)
    doc = json.loads((dest / "sop.json").read_text())
    change(doc)
    assert validate("sop", doc) == []  # still a valid SOP: input data, not a broken file
    (dest / "sop.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    return dest


def renumber(doc: dict) -> None:
    for number, step in enumerate(doc["steps"], 1):
        step["number"] = number


# ------------------------------------------------------------ real pairs

def test_rerecording_with_another_voice_reports_no_change(trees):
    report = diff(trees["a"], trees["b"])
    assert report.changed == 0
    (sop,) = report.sops
    assert (sop.sop, sop.status, sop.steps, sop.fields) == ("billing", "unchanged", (), ())
    assert "recording replaced (different bytes)" in sop.info  # bytes differ; not a change


def test_rerecording_exits_zero(trees):
    result = run(trees["a"], trees["b"])
    assert result.exit_code == 0, result.stderr
    assert "No SOP changed" in result.stdout


def test_changed_scenario_reports_one_added_one_removed_one_changed(trees):
    (sop,) = diff(trees["a"], trees["c"]).sops
    assert sop.counts == {"added": 1, "removed": 1, "moved": 0, "changed": 1, "screenshot_changed": 1}
    by_status = {c.status: c for c in sop.steps}
    assert len(sop.steps) == 3  # the unchanged steps (even renumbered ones) are not listed
    assert "Drain" in by_status["removed"].old.instruction
    assert by_status["added"].new.number == 5
    changed = by_status["changed"]
    assert (changed.old.number, changed.new.number) == (2, 2)
    (instruction,) = [f for f in changed.fields if f.field == "instruction"]
    assert instruction.origin == "generated"
    ops = [(w.op, w.text) for w in instruction.words if w.op != "equal"]
    assert ops[-2:] == [("delete", "database."), ("insert", "ledger.")]
    # the rest, if any, is how the recogniser wrote "snapshot of" (it varies by CPU)
    assert all("snap" in text or text in ("of", "on") for _, text in ops[:-2])


def test_a_compound_split_or_joined_is_the_same_word():
    assert text_similarity("Take a snapshot of the billing database.",
                           "Take a snap shot on the billing database.") == 1.0
    assert text_similarity("Roll back the release.", "Rollback the release.") == 1.0
    assert text_similarity("Take a snap.", "Take a snapshot.") < 1.0  # half a compound is not the word


def test_one_word_changed_on_screen_flags_the_screenshot(trees):
    (sop,) = diff(trees["a"], trees["c"]).sops
    (changed,) = [c for c in sop.steps if c.status == "changed"]
    assert changed.screenshot_changed
    assert changed.screenshot_similarity < SCREENSHOT_CHANGED_BELOW


def test_markdown_shows_word_diff_and_summary_line(trees):
    md = to_markdown(diff(trees["a"], trees["c"]), image_base="https://example.test/raw/abc")
    assert "- `billing`: 1 step added, 1 removed, 1 changed, screenshot changed in 1" in md
    assert "~~database.~~ **ledger.**" in md
    assert "<details>" in md and "</details>" in md
    assert "(https://example.test/raw/abc/billing/images/step-05.png)" in md


def test_changes_exit_one_unless_exit_zero(trees):
    assert run(trees["a"], trees["c"]).exit_code == 1
    assert run("--exit-zero", trees["a"], trees["c"]).exit_code == 0


def test_moved_step_is_reported_once(trees, tmp_path):
    def move_second_to_end(doc):
        doc["steps"].append(doc["steps"].pop(1))
        renumber(doc)

    moved = edited_copy(trees["a"] / "billing", tmp_path / "billing", move_second_to_end)
    (sop,) = diff(trees["a"] / "billing", moved).sops
    assert [(c.status, c.old.number, c.new.number) for c in sop.steps] == [("moved", 2, 5)]


def test_step_reworded_entirely_still_pairs_by_its_screenshot(trees, tmp_path):
    def reword(doc):
        doc["steps"][3]["instruction"] = "Roll out version three point two on both instances."
        doc["steps"][3]["id"] = "roll-out-version-three-point-two"

    new = edited_copy(trees["a"] / "billing", tmp_path / "billing", reword)
    (sop,) = diff(trees["a"] / "billing", new).sops
    assert [(c.status, c.old.number, c.new.number, c.screenshot_changed) for c in sop.steps] == [
        ("changed", 4, 4, False)]


# ------------------------------------------------------------ trees and metadata

def test_sop_added_and_removed_between_trees(trees):
    added = {s.sop: s for s in diff(trees["a"], trees["d"]).sops}
    removed = {s.sop: s for s in diff(trees["d"], trees["a"]).sops}
    assert (added["ops/notify"].status, added["ops/notify"].steps_new) == ("added", len(
        json.loads((trees["d"] / "ops" / "notify" / "sop.json").read_text())["steps"]))
    assert removed["ops/notify"].status == "removed"


def test_sidecar_metadata_change_is_reported_without_step_changes(trees):
    sops = {s.sop: s for s in diff(trees["a"], trees["d"]).sops}
    billing = sops["billing"]
    changes = {f.field: (f.origin, f.old, f.new) for f in billing.fields}
    assert changes["metadata.owner"] == ("generated", None, "billing-team")
    assert changes["title"] == ("generated", "Billing", "Upgrade the billing service")
    assert billing.steps == ()


def test_json_report_validates_against_its_schema_and_is_deterministic(trees, tmp_path):
    for old, new in (("a", "c"), ("a", "d"), ("d", "a"), ("a", "b")):
        doc = report_dict(diff(trees[old], trees[new]))
        assert validate("diff", doc) == [], (old, new)
    out = tmp_path / "report.json"
    result = run("--json", out, "--format", "json", trees["a"], trees["c"])
    assert result.exit_code == 1
    assert json.loads(out.read_text()) == json.loads(result.stdout)
    assert validate("diff", json.loads(out.read_text())) == []
    assert to_json(diff(trees["a"], trees["c"])) == out.read_text()


def test_markdown_renders_hostile_sop_text_inert(trees, tmp_path):
    def hostile(doc):
        doc["title"] = "Billing <script>alert(1)</script>\n\n# Injected heading"
        step = doc["steps"][1]
        step["instruction"] = ("Take a snapshot [click](https://evil.example) <img src=x onerror=alert(1)> "
                               "| col | ![i](https://evil.example/i.png) of the billing database.")
        step["inputs"] = ["rm -rf / `whoami`"]

    new = edited_copy(trees["a"] / "billing", tmp_path / "billing", hostile)
    md_file = tmp_path / "report.md"
    result = run("--markdown", md_file, trees["a"] / "billing", new / "sop.json")
    assert result.exit_code == 1
    md = md_file.read_text()
    assert md == result.stdout
    assert "<script" not in md and "<img" not in md
    assert "](https://evil" not in md
    assert "| col |" not in md and "\\| col \\|" in md
    assert not any(line.lstrip().startswith("# ") for line in md.splitlines())
    assert "`` rm -rf / `whoami` ``" in md  # a command stays one code span


# ------------------------------------------------------------ git

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.test", *args],
                          cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def repo(trees, tmp_path_factory) -> Path:
    """A repository whose first commit has no SOPs and whose second has v1's; the
    working tree then rebuilds the SOPs from the v2 recording."""
    repo = tmp_path_factory.mktemp("repo")
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("ops runbooks\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "start")
    (repo / "recordings").mkdir()
    shutil.copy(PAIRS / "billing-v1.mp4", repo / "recordings" / "billing.mp4")
    shutil.copytree(trees["a"], repo / "sops", ignore=shutil.ignore_patterns(".sopline.lock"))
    git(repo, "add", "recordings", "sops")
    git(repo, "commit", "-q", "-m", "billing runbook")
    shutil.copy(PAIRS / "billing-v2.mp4", repo / "recordings" / "billing.mp4")
    report = build([repo / "recordings"], repo / "sops", BuildSettings())
    assert not report.failed
    return repo


def test_base_ref_compares_working_tree_with_git_without_checkout(repo, monkeypatch):
    monkeypatch.chdir(repo)
    result = run("--base", "HEAD", "--format", "json")  # OUT defaults to sops
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    assert validate("diff", doc) == []
    (sop,) = doc["sops"]
    assert sop["counts"] == {"added": 1, "removed": 1, "moved": 0, "changed": 1, "screenshot_changed": 1}
    (changed,) = [c for c in sop["steps"] if c["status"] == "changed"]
    assert changed["old"]["screenshot"] == "sops/billing/images/step-02.png"
    assert changed["screenshot_similarity"] is not None  # the old image was read from git
    assert git(repo, "status", "--porcelain", "--", "sops/index.json").startswith(" M")  # no checkout


FAKE_LFS = """\
import hashlib, pathlib, sys
store = pathlib.Path(sys.argv[2])
store.mkdir(exist_ok=True)
data = sys.stdin.buffer.read()
if sys.argv[1] == "clean":  # what git-lfs commits: a pointer, the content kept aside
    oid = hashlib.sha256(data).hexdigest()
    (store / oid).write_bytes(data)
    sys.stdout.write(f"version https://git-lfs.github.com/spec/v1\\noid sha256:{oid}\\nsize {len(data)}\\n")
else:  # smudge: the pointer back to the content
    oid = data.decode().split("oid sha256:")[1].split()[0]
    sys.stdout.buffer.write((store / oid).read_bytes())
"""


def test_base_ref_reads_screenshots_kept_in_git_lfs(trees, tmp_path):
    """Screenshots committed through Git LFS are pointers in the repository: --base reads the
    image through the checkout's smudge filter, as a checkout would, and compares it. A
    stand-in for git-lfs (same pointer format, filter named lfs) keeps the test offline."""
    import sys

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    script = tmp_path / "fake_lfs.py"
    script.write_text(FAKE_LFS)
    store = tmp_path / "lfs-store"
    for step in ("clean", "smudge"):
        git(repo, "config", f"filter.lfs.{step}", f"{sys.executable} {script} {step} {store}")
    (repo / ".gitattributes").write_text("*.png filter=lfs diff=lfs merge=lfs -text\n")
    shutil.copytree(trees["a"], repo / "sops", ignore=shutil.ignore_patterns(".sopline.lock"))
    git(repo, "add", ".gitattributes", "sops")
    git(repo, "commit", "-q", "-m", "billing runbook")
    pointer = subprocess.run(["git", "cat-file", "-p", "HEAD:sops/billing/images/step-02.png"], cwd=repo,
                             check=True, capture_output=True).stdout
    assert pointer.startswith(b"version https://git-lfs.github.com/spec/v1")
    shutil.rmtree(repo / "sops")
    shutil.copytree(trees["c"], repo / "sops", ignore=shutil.ignore_patterns(".sopline.lock"))

    report = diff_against_ref(repo / "sops", "HEAD")
    (sop,) = report.sops
    compared = [s for s in sop.steps if s.status == "changed"]
    assert compared and all(s.screenshot_similarity is not None for s in compared)
    assert sop.counts["screenshot_changed"] == 1  # as in the same diff without LFS (test above)


def test_base_ref_without_the_folder_reports_all_sops_added(repo):
    report = diff_against_ref(repo / "sops", "HEAD~1")
    assert [(s.sop, s.status) for s in report.sops] == [("billing", "added")]
    assert report.base == "HEAD~1"


def test_unknown_base_ref_is_an_error(repo):
    result = run("--base", "no-such-branch", repo / "sops")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no-such-branch" in result.stderr


# ------------------------------------------------------------ errors

def test_broken_sop_file_exits_two_naming_it(trees, tmp_path):
    broken = shutil.copytree(trees["a"], tmp_path / "broken")
    sop_json = broken / "billing" / "sop.json"
    sop_json.write_bytes(sop_json.read_bytes()[:500])
    for args in ((trees["a"], broken), ("--exit-zero", trees["a"], broken)):
        result = run(*args)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and str(sop_json) in result.stderr
        assert "Traceback" not in result.stderr


def test_missing_side_is_an_error(trees, tmp_path):
    result = run(trees["a"], tmp_path / "nothing-here")
    assert result.exit_code == 2 and "nothing-here" in result.stderr


# ------------------------------------------------------------ human edits

EDIT_BY = {"fields": ["instruction"], "by": "alice"}


def test_human_edit_is_labelled_human(trees, tmp_path):
    def reword(doc):
        step = doc["steps"][1]
        step["edited"] = dict(EDIT_BY, generated={"instruction": step["instruction"]})
        step["instruction"] = "Take a verified snapshot of the billing database."

    new = edited_copy(trees["a"] / "billing", tmp_path / "billing", reword)
    (sop,) = diff(trees["a"] / "billing", new).sops
    (change,) = sop.steps
    assert [(f.field, f.origin) for f in change.fields] == [("instruction", "human")]
    assert change.origin == "human"
    assert "_(human edit)_" in to_markdown(diff(trees["a"] / "billing", new))


def test_generated_change_under_a_kept_human_edit_is_labelled_generated(trees, tmp_path):
    def reword(doc):
        step = doc["steps"][1]
        step["edited"] = dict(EDIT_BY, generated={"instruction": step["instruction"]})
        step["instruction"] = "Take a verified snapshot of billing."

    old = edited_copy(trees["a"] / "billing", tmp_path / "old" / "billing", reword)
    new = edited_copy(trees["c"] / "billing", tmp_path / "new" / "billing", reword)
    (sop,) = diff(old, new).sops
    (change,) = [c for c in sop.steps if c.status == "changed"]
    (instruction,) = [f for f in change.fields if f.field == "instruction"]
    assert (instruction.origin, instruction.overridden) == ("generated", True)
    assert instruction.old == "Take a snapshot of the billing database."
    assert instruction.new.startswith("Take a snap") and instruction.new.endswith(" the billing ledger.")


def test_dropped_step_and_orphaned_edit_are_reported(trees, tmp_path):
    def drop_and_orphan(doc):
        doc["steps"].pop(2)  # "Drain the billing service."
        renumber(doc)
        doc["edits"] = {"path": "billing.sop.edits.yaml", "sha256": "0" * 64, "applied": 1,
                        "dropped": ["drain-billing-service"], "merged": [], "sop_fields": [],
                        "orphaned": [{"step": "restart-billing", "fields": ["notes"],
                                      "reason": "no step restart-billing in the recording"}]}

    new = edited_copy(trees["a"] / "billing", tmp_path / "billing", drop_and_orphan)
    report = diff(trees["a"] / "billing", new)
    (sop,) = report.sops
    (removed,) = sop.steps
    assert (removed.status, removed.origin, removed.reasons) == ("removed", "human", ("dropped by a person",))
    assert sop.orphaned_changed and [o.step for o in sop.orphaned] == ["restart-billing"]
    md = to_markdown(report)
    assert "Orphaned edits" in md and "`restart-billing` (notes): no step restart-billing in the recording" in md
