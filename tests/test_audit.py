"""`sopline audit`: real recordings built by sopline, in real git repositories with dated commits."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from pipeline import __version__
from pipeline.audit import audit, to_json, to_markdown
from pipeline.build import BuildSettings, build
from pipeline.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
SCHEMA = Path(__file__).parent.parent / "schemas" / "audit.schema.json"
TODAY = date(2026, 3, 1)
RECENT = "2026-02-15T12:00:00+00:00"  # 14 days before TODAY
OLD = "2025-06-01T12:00:00+00:00"  # 273 days before TODAY

DEPLOY_SIDECAR = """\
# Deploy runbook
owner: platform-team
review_every_days: 90  # quarterly
tags: [deploy]
"""
RELEASE_SIDECAR = "owner: release-team\n"  # no review_every_days: --max-age applies


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Two real recordings with sidecars, built once; tests copy the tree."""
    root = tmp_path_factory.mktemp("library")
    (root / "ops").mkdir()
    (root / "ui").mkdir()
    shutil.copy(FIXTURES / "term-deploy.mp4", root / "ops" / "deploy.mp4")
    shutil.copy(FIXTURES / "no-audio.mp4", root / "ui" / "release.mp4")
    (root / "ops" / "deploy.sop.yaml").write_text(DEPLOY_SIDECAR)
    (root / "ui" / "release.sop.yaml").write_text(RELEASE_SIDECAR)
    report = build([root], root / "sops", BuildSettings())
    assert not report.failed, [r.message for r in report.failed]
    return root


def git(repo: Path, *args: str, when: str = RECENT) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when)
    subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
                    "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
                   cwd=repo, env=env, check=True, capture_output=True)


def commit_all(repo: Path, when: str, message: str = "change") -> None:
    if not (repo / ".git").exists():
        git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, when=when)


def copy_library(pristine: Path, dest: Path, committed: str | None = RECENT) -> Path:
    repo = dest / "repo"
    shutil.copytree(pristine, repo)
    if committed:
        commit_all(repo, committed, "record procedures")
    return repo


@pytest.fixture
def repo(pristine, tmp_path) -> Path:
    """The built library in a git repository, committed 14 days before TODAY."""
    return copy_library(pristine, tmp_path)


def run(repo: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "--sops", str(repo / "sops"), "--recordings", str(repo),
                                       "--today", TODAY.isoformat(), *extra])
    return result.exit_code, result.output


def findings(repo: Path, **kw) -> list[dict]:
    kw.setdefault("max_age", 180)
    report = audit(repo / "sops", repo, TODAY, **kw)
    return [f.to_dict() for f in report.findings]


def kinds(found: list[dict], sop: str | None = None) -> set[tuple[str, str]]:
    return {(f["kind"], f["severity"]) for f in found if sop is None or f["sop"] == sop}


def edit_sop(repo: Path, rel: str, change) -> None:
    path = repo / "sops" / rel / "sop.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


# ---------------------------------------------------------------- clean

def test_clean_library_reports_nothing_and_exits_0(repo):
    code, out = run(repo, "--format", "json")
    doc = json.loads(out)
    assert code == 0, out
    assert doc["findings"] == []
    assert doc["counts"]["sops"] == 2 and doc["counts"]["recordings"] == 2
    assert doc["as_of"] == "2026-03-01"


def test_clean_markdown_says_no_findings(repo):
    code, out = run(repo)
    assert code == 0
    assert out.splitlines()[0] == "# SOP library audit, 2026-03-01"
    assert "No findings in 2 SOPs and 2 recordings." in out
    assert "|" not in out


# ---------------------------------------------------------------- each finding

def test_changed_recording_is_stale(repo):
    with open(repo / "ops" / "deploy.mp4", "ab") as f:
        f.write(b"\0" * 16)
    found = findings(repo)
    assert kinds(found) == {("stale", "high")}
    assert found[0]["sop"] == "ops/deploy" and found[0]["source"] == "ops/deploy.mp4"


def test_changed_sidecar_is_stale_medium(repo):
    entry = json.loads((repo / "sops" / "index.json").read_text())["sops"][0]
    assert len(entry["sidecar_sha256"]) == 64
    side = repo / "ops" / "deploy.sop.yaml"
    side.write_text(side.read_text().replace("[deploy]", "[deploy, k8s]"))
    found = findings(repo)
    assert kinds(found) == {("stale", "medium")}
    assert "sidecar ops/deploy.sop.yaml changed" in found[0]["message"]


def test_new_recording_without_sop_is_missing(repo):
    (repo / "ops" / "rollback").mkdir()
    shutil.copy(FIXTURES / "no-audio.mp4", repo / "ops" / "rollback" / "v2.mp4")
    found = findings(repo)
    assert [(f["sop"], f["kind"], f["source"]) for f in found] == [("ops/rollback/v2", "missing", "ops/rollback/v2.mp4")]


def test_deleted_recording_orphans_its_sop(repo):
    (repo / "ui" / "release.mp4").unlink()
    found = findings(repo)
    assert [(f["sop"], f["kind"], f["severity"]) for f in found] == [("ui/release", "orphaned", "medium")]


def test_old_commit_makes_review_overdue(pristine, tmp_path):
    repo = copy_library(pristine, tmp_path, committed=OLD)
    found = [f for f in findings(repo, max_age=365) if f["kind"] == "overdue_review"]
    assert [f["sop"] for f in found] == ["ops/deploy"]  # its sidecar says every 90 days
    assert found[0]["facts"] == {"since": "2025-06-01", "dated_from": "git", "due": "2025-08-30",
                                 "review_every_days": 90, "age_days": 273}


def test_max_age_applies_when_the_sidecar_sets_no_interval(pristine, tmp_path):
    repo = copy_library(pristine, tmp_path, committed=OLD)
    lenient = {f["sop"] for f in findings(repo, max_age=365) if f["kind"] == "overdue_review"}
    strict = {f["sop"] for f in findings(repo, max_age=200) if f["kind"] == "overdue_review"}
    assert lenient == {"ops/deploy"} and strict == {"ops/deploy", "ui/release"}


def test_a_later_commit_to_the_recording_restarts_the_clock(pristine, tmp_path):
    repo = copy_library(pristine, tmp_path, committed=OLD)
    with open(repo / "ops" / "deploy.mp4", "ab") as f:
        f.write(b"\0")  # re-recorded (and, until rebuilt, stale)
    commit_all(repo, RECENT, "re-record")
    assert "overdue_review" not in {f["kind"] for f in findings(repo, max_age=365)}


def test_outside_git_file_times_date_the_review(pristine, tmp_path):
    repo = copy_library(pristine, tmp_path, committed=None)
    old = datetime(2025, 1, 10, 12, tzinfo=timezone.utc).timestamp()
    recent = datetime(2026, 2, 20, 12, tzinfo=timezone.utc).timestamp()
    for path in (repo / "ops" / "deploy.mp4", repo / "ops" / "deploy.sop.yaml"):
        os.utime(path, (old, old))
    for path in (repo / "ui" / "release.mp4", repo / "ui" / "release.sop.yaml"):
        os.utime(path, (recent, recent))
    found = [f for f in findings(repo) if f["kind"] == "overdue_review"]
    assert [f["sop"] for f in found] == ["ops/deploy"]
    assert found[0]["facts"]["dated_from"] == "file time" and found[0]["facts"]["since"] == "2025-01-10"


def test_other_sopline_version_is_generator_drift(repo):
    edit_sop(repo, "ui/release", lambda d: d["generator"].update(version="0.0.1"))
    found = findings(repo)
    assert kinds(found) == {("generator_drift", "low")}
    assert found[0]["facts"] == {"built": "0.0.1", "current": __version__}


def test_other_speech_model_is_model_drift(repo):
    edit_sop(repo, "ops/deploy", lambda d: d["generator"].update(model="small.en"))
    assert kinds(findings(repo)) == {("model_drift", "low")}


def test_model_option_names_the_expected_model(repo):
    code, out = run(repo, "--model", "small.en", "--format", "json", "--fail-on", "low")
    assert code == 1
    assert {f["sop"] for f in json.loads(out)["findings"] if f["kind"] == "model_drift"} == {"ops/deploy", "ui/release"}


@pytest.mark.parametrize("breakage", [
    lambda p: p.write_text(p.read_text()[:200]),  # truncated
    lambda p: p.write_text(p.read_text().replace('"kind": "action"', '"kind": "dance"', 1)),  # schema
])
def test_broken_sop_json_is_invalid(repo, breakage):
    breakage(repo / "sops" / "ops" / "deploy" / "sop.json")
    found = [f for f in findings(repo) if f["kind"] == "invalid"]
    assert [(f["sop"], f["severity"]) for f in found] == [("ops/deploy", "high")]
    assert found[0]["message"].startswith("ops/deploy/sop.json: ")


def test_invalid_sidecar_is_invalid(repo):
    side = repo / "ui" / "release.sop.yaml"
    side.write_text(side.read_text() + "review_every_days: weekly\n")
    found = [f for f in findings(repo) if f["kind"] == "invalid"]
    assert len(found) == 1 and found[0]["message"].startswith("ui/release.sop.yaml: review_every_days")


def test_sidecar_without_owner_is_no_owner(repo):
    (repo / "ui" / "release.sop.yaml").write_text("# nobody yet\ntags: [release]\n")
    found = findings(repo)
    assert ("no_owner", "low") in kinds(found, "ui/release")
    assert ("no_owner", "low") not in kinds(found, "ops/deploy")


def test_orphaned_human_edits_are_reported(repo):
    orphaned = [{"step": "run-kubectl-rollout", "fields": ["instruction"], "reason": "step no longer exists"}]
    edit_sop(repo, "ops/deploy", lambda d: d.update(edits={
        "path": "ops/deploy.sop.edits.yaml", "sha256": "0" * 64, "applied": 0, "dropped": [], "merged": [],
        "orphaned": orphaned, "sop_fields": []}))
    found = findings(repo)
    assert [(f["sop"], f["kind"], f["severity"]) for f in found] == [("ops/deploy", "orphaned_edits", "medium")]
    assert "run-kubectl-rollout (step no longer exists)" in found[0]["message"]


def test_failed_build_is_reported_not_missing(repo):
    (repo / "broken.mp4").write_bytes(b"not a video at all" * 100)
    report = build([repo / "broken.mp4"], repo / "sops", BuildSettings(cpu_threads=1))
    assert report.failed
    found = findings(repo)
    assert [(f["sop"], f["kind"], f["severity"]) for f in found] == [("broken", "build_failed", "high")]


def test_without_index_sops_are_matched_by_source_path(repo):
    (repo / "sops" / "index.json").unlink()
    assert findings(repo) == []
    with open(repo / "ui" / "release.mp4", "ab") as f:
        f.write(b"\0")
    assert [(f["sop"], f["kind"]) for f in findings(repo)] == [("ui/release", "stale")]


# ---------------------------------------------------------------- exit status and output

def test_fail_on_sets_the_threshold(repo):
    edit_sop(repo, "ui/release", lambda d: d["generator"].update(version="0.0.1"))  # one low finding
    assert run(repo)[0] == 0  # default: medium
    assert run(repo, "--fail-on", "low")[0] == 1
    assert run(repo, "--fail-on", "info")[0] == 1
    assert run(repo, "--fail-on", "high")[0] == 0


def test_high_finding_fails_by_default_unless_never(repo):
    (repo / "sops" / "ops" / "deploy" / "sop.json").write_text("{")
    assert run(repo)[0] == 1
    assert run(repo, "--fail-on", "never")[0] == 0


@pytest.mark.parametrize("args", [["--today", "2026-13-01"], ["--fail-on", "urgent"], ["--max-age", "0"],
                                  ["--sops", "does-not-exist"]])
def test_usage_errors_exit_2(repo, args):
    assert run(repo, *args)[0] == 2


def messy(repo: Path) -> None:
    """A library with one finding of most kinds."""
    with open(repo / "ops" / "deploy.mp4", "ab") as f:
        f.write(b"\0")
    (repo / "ui" / "release.mp4").unlink()
    shutil.copy(FIXTURES / "no-audio.mp4", repo / "ops" / "odd|name.mp4")


def test_report_is_sorted_by_severity_then_sop(repo):
    messy(repo)
    edit_sop(repo, "ui/release", lambda d: d["generator"].update(version="0.0.1"))
    order = [(f["severity"], f["sop"]) for f in findings(repo)]
    assert order == [("high", "ops/deploy"), ("medium", "ops/odd|name"), ("medium", "ui/release")]


def test_json_report_matches_its_schema_and_counts(repo):
    messy(repo)
    code, out = run(repo, "--format", "json")
    doc = json.loads(out)
    assert code == 1
    assert list(Draft202012Validator(json.loads(SCHEMA.read_text())).iter_errors(doc)) == []
    assert doc["counts"]["by_severity"] == {"info": 0, "low": 0, "medium": 2, "high": 1}
    assert doc["counts"]["by_kind"]["missing"] == 1 and doc["counts"]["findings"] == 3


def test_markdown_table_escapes_cells(repo):
    messy(repo)
    md = to_markdown(audit(repo / "sops", repo, TODAY))
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert rows[0] == "| SOP | finding | severity | detail |"
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 5 for row in rows)
    assert "ops/odd\\|name" in md
    assert "**3 findings** (1 high, 2 medium) in 2 SOPs and 2 recordings." in md


def test_reports_written_to_files_hold_no_machine_paths(repo, tmp_path):
    messy(repo)
    (repo / "ops" / "deploy.sop.yaml").write_text("review_every_days: often\n")
    md_file, json_file = tmp_path / "audit.md", tmp_path / "audit.json"
    code, out = run(repo, "--markdown", str(md_file), "--json", str(json_file))
    assert code == 1
    assert md_file.read_text() == out
    for text in (md_file.read_text(), json_file.read_text()):
        assert str(tmp_path) not in text and str(repo) not in text
    assert json_file.read_text() == to_json(audit(repo / "sops", repo, TODAY))
