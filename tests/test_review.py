"""`sopline review`: a review date recorded in the sidecar, the YAML otherwise untouched."""
from __future__ import annotations

import os
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.audit import audit
from pipeline.build import BuildSettings, build
from pipeline.cli import main
from pipeline.sidecar import load_sidecar

FIXTURES = Path(__file__).parent / "fixtures"
TODAY = date(2026, 3, 1)
OLD = "2025-06-01T12:00:00+00:00"

SIDECAR = """\
# Release runbook: owned by the release team
title: "Release the web UI"   # shown as the SOP title
owner: 'release-team'
review_every_days: 90  # quarterly

tags:
  - release
  - web
approvers: [alice, bob]
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """One real recording with a sidecar, built once into root/sops."""
    root = tmp_path_factory.mktemp("library")
    (root / "ui").mkdir()
    shutil.copy(FIXTURES / "no-audio.mp4", root / "ui" / "release.mp4")
    (root / "ui" / "release.sop.yaml").write_text(SIDECAR)
    report = build([root], root / "sops", BuildSettings())
    assert not report.failed, [r.message for r in report.failed]
    return root


@pytest.fixture
def lib(pristine, tmp_path) -> Path:
    root = tmp_path / "lib"
    shutil.copytree(pristine, root)
    return root


def review(*args: str, cwd: Path | None = None):
    old = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        return CliRunner().invoke(main, ["review", *args])
    finally:
        os.chdir(old)


def test_review_keeps_comments_order_and_quoting(lib):
    result = review(str(lib / "ui" / "release.mp4"), "--by", "carol", "--date", "2026-02-20")
    assert result.exit_code == 0, result.output
    assert (lib / "ui" / "release.sop.yaml").read_text() == SIDECAR.replace(
        "review_every_days: 90  # quarterly\n",
        "review_every_days: 90  # quarterly\nlast_reviewed:\n  date: '2026-02-20'\n  by: carol\n")


def test_recorded_review_loads_as_a_valid_sidecar(lib):
    review(str(lib / "ui" / "release.sop.yaml"), "--by", "carol", "--date", "2026-02-20")
    side = load_sidecar(lib / "ui" / "release.sop.yaml")
    assert side.warnings == ()
    assert side.fields["last_reviewed"] == {"date": "2026-02-20", "by": "carol"}


def test_second_review_updates_the_entry_in_place(lib):
    path = lib / "ui" / "release.sop.yaml"
    path.write_text("title: Release\nlast_reviewed:  # signed off\n  date: 2025-01-05\n  by: bob\ntags: [web]\n")
    assert review(str(path), "--by", "carol", "--date", "2026-02-20").exit_code == 0
    assert path.read_text() == ("title: Release\nlast_reviewed:  # signed off\n  date: '2026-02-20'\n"
                                "  by: carol\ntags: [web]\n")


def test_hand_written_unquoted_review_date_is_accepted(lib):
    path = lib / "ui" / "release.sop.yaml"
    path.write_text("owner: ops\nlast_reviewed: {date: 2025-01-05, by: bob}\n")
    assert load_sidecar(path).fields["last_reviewed"] == {"date": "2025-01-05", "by": "bob"}


def test_review_creates_a_missing_sidecar(lib):
    (lib / "ui" / "release.sop.yaml").unlink()
    result = review(str(lib / "ui" / "release.mp4"), "--by", "carol", "--date", "2026-02-20")
    assert result.exit_code == 0 and "created" in result.output
    assert load_sidecar(lib / "ui" / "release.sop.yaml").fields == {
        "last_reviewed": {"date": "2026-02-20", "by": "carol"}}


def test_sop_folder_finds_its_recording_through_index_json(lib):
    result = review(str(lib / "sops" / "ui" / "release"), "--by", "dan", "--date", "2026-02-20",
                    "--recordings", str(lib))
    assert result.exit_code == 0, result.output
    assert load_sidecar(lib / "ui" / "release.sop.yaml").fields["last_reviewed"]["by"] == "dan"


def test_sop_folder_finds_its_recording_above_the_sop_tree_from_anywhere(lib, tmp_path):
    """Without --recordings the recording is looked for around the output tree, as
    `sopline edit` does (one shared locator), not only in the current folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = review(str(lib / "sops" / "ui" / "release"), "--by", "fay", "--date", "2026-02-20", cwd=elsewhere)
    assert result.exit_code == 0, result.output
    assert load_sidecar(lib / "ui" / "release.sop.yaml").fields["last_reviewed"]["by"] == "fay"


def test_sop_json_without_index_uses_its_source_path(lib):
    (lib / "sops" / "index.json").unlink()
    result = review("sops/ui/release/sop.json", "--by", "erin", "--date", "2026-02-20", cwd=lib)
    assert result.exit_code == 0, result.output
    assert load_sidecar(lib / "ui" / "release.sop.yaml").fields["last_reviewed"]["by"] == "erin"


def test_review_clears_an_overdue_finding(lib):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_DATE=OLD, GIT_COMMITTER_DATE=OLD)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "record"]):
        subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
                        "-c", "commit.gpgsign=false", *args], cwd=lib, env=env, check=True, capture_output=True)
    overdue = lambda: [f for f in audit(lib / "sops", lib, TODAY).findings if f.kind == "overdue_review"]
    assert [f.sop for f in overdue()] == ["ui/release"]
    assert review(str(lib / "ui" / "release.mp4"), "--by", "carol", "--date", "2026-02-20").exit_code == 0
    assert overdue() == []


@pytest.mark.parametrize("target", ["nowhere/release.mp4", "sops/index.json", "sops/ui"])
def test_unknown_target_is_a_usage_error(lib, target):
    assert review(str(lib / target), "--by", "carol").exit_code == 2


def test_future_date_is_a_usage_error(lib):
    assert review(str(lib / "ui" / "release.mp4"), "--by", "carol", "--date", "2999-01-01").exit_code == 2


def test_invalid_sidecar_is_left_alone(lib):
    path = lib / "ui" / "release.sop.yaml"
    path.write_text("owner: ops\nowner: twice\n")
    result = review(str(path), "--by", "carol", "--date", "2026-02-20")
    assert result.exit_code == 1
    assert "duplicate key" in result.output and "release.sop.yaml" in result.output
    assert path.read_text() == "owner: ops\nowner: twice\n"
