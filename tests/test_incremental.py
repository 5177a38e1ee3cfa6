"""Incremental builds, --force, shards and merge, and parallel jobs, on real recordings."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest

from pipeline.build import BuildSettings, build, parse_shard, shard_of
from pipeline.merge import MergeError, merge

FIXTURES = Path(__file__).parent / "fixtures"
RECORDINGS = ("no-audio.mp4", "narration-only.mp4")
SOPLINE = [sys.executable, "-c", "from pipeline.cli import main; main()"]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every output file under root (the lock file aside), by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".sopline.lock"}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("library")
    (root / "team").mkdir()
    shutil.copy(FIXTURES / RECORDINGS[0], root / RECORDINGS[0])
    shutil.copy(FIXTURES / RECORDINGS[1], root / "team" / RECORDINGS[1])
    return root


@pytest.fixture(scope="module")
def first_build(library, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("first") / "sops"
    report = build([library], out)
    assert not report.failed
    return out


@pytest.fixture()
def built(first_build, tmp_path) -> Path:
    """A private copy of the first build's output, to rebuild into."""
    out = tmp_path / "sops"
    shutil.copytree(first_build, out)
    return out


@pytest.fixture()
def recordings(library, tmp_path) -> Path:
    """A private copy of the recordings, to change."""
    root = tmp_path / "recordings"
    shutil.copytree(library, root)
    return root


def test_unchanged_recordings_are_skipped_and_nothing_is_rewritten(library, built):
    before = {p: p.stat().st_mtime_ns for p in built.rglob("*") if p.is_file()}
    report = build([library], built)
    assert [r.skipped for r in report.results] == [True, True]
    assert all(r.ok for r in report.results)
    after = {p: p.stat().st_mtime_ns for p in built.rglob("*") if p.is_file() and p.name != "index.json"}
    assert after == {p: t for p, t in before.items() if p.name != "index.json"}


def test_manifest_records_what_each_sop_was_built_from(library, first_build):
    entries = {e["sop"]: e for e in json.loads((first_build / "index.json").read_text())["sops"]}
    assert set(entries) == {"no-audio/sop.json", "team/narration-only/sop.json"}
    entry = entries["team/narration-only/sop.json"]
    assert entry["source"] == "team/narration-only.mp4"
    assert entry["status"] == "built" and entry["sidecar"] is None and entry["edits"] is None
    sop = json.loads((first_build / "team/narration-only/sop.json").read_text())
    assert entry["sha256"] == sop["source"]["sha256"]
    assert entry["settings_sha256"] == sop["generator"]["settings_sha256"]
    assert entry["model"] == sop["generator"]["model"]


def test_a_new_sidecar_rebuilds_only_its_recording(recordings, built):
    (recordings / "team" / "narration-only.sop.yaml").write_text("title: Narrated checks\nowner: sre\n")
    report = build([recordings], built)
    by_name = {r.recording.rel.name: r for r in report.results}
    assert by_name["no-audio"].skipped and not by_name["narration-only"].skipped
    sop = json.loads((built / "team/narration-only/sop.json").read_text())
    assert sop["title"] == "Narrated checks"
    entry = {e["sop"]: e for e in json.loads((built / "index.json").read_text())["sops"]}["team/narration-only/sop.json"]
    assert entry["sidecar"] == "team/narration-only.sop.yaml" and len(entry["sidecar_sha256"]) == 64


def test_changed_recording_bytes_rebuild_it(recordings, built):
    shutil.copy(FIXTURES / "term-deploy.mp4", recordings / "no-audio.mp4")
    report = build([recordings], built)
    by_name = {r.recording.rel.name: r for r in report.results}
    assert not by_name["no-audio"].skipped and by_name["narration-only"].skipped
    sop = json.loads((built / "no-audio/sop.json").read_text())
    assert sop["source"]["has_audio"] is True  # term-deploy has narration


def test_changed_settings_rebuild_everything(library, built):
    report = build([library], built, BuildSettings(glossary=("kubectl",)))
    assert not any(r.skipped for r in report.results)


def test_force_rebuilds_and_gives_identical_output(library, built, first_build):
    report = build([library], built, force=True)
    assert not any(r.skipped for r in report.results)
    assert tree_bytes(built) == tree_bytes(first_build)


def test_build_never_removes_files_it_did_not_make(library, built):
    (built / "README.md").write_text("our SOP library\n")
    (built / "team" / "notes.txt").write_text("keep me\n")
    build([library], built, force=True)
    assert (built / "README.md").read_text() == "our SOP library\n"
    assert (built / "team" / "notes.txt").read_text() == "keep me\n"


def test_killed_build_leaves_the_previous_sop_intact(library, built):
    """A build killed part-way (CI cancels the job) leaves each SOP as it was or wholly new."""
    before = tree_bytes(built)
    for delay in (1.5, 3.0):
        proc = subprocess.Popen([*SOPLINE, "build", str(library), "-o", str(built), "--force"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        now = tree_bytes(built)
        sops = {k for k in now if k.endswith("sop.json")}
        assert sops == {k for k in before if k.endswith("sop.json")}
        for key in now:  # a rebuild of the same inputs is byte-identical, so nothing may differ
            if not key.startswith(".") and "/." not in key and key != "index.json":
                assert now[key] == before[key], key
    report = build([library], built)  # and the next build cleans up and carries on
    assert all(r.ok for r in report.results)
    assert not [p for p in built.rglob("*") if p.name.endswith((".staging", ".old", ".tmp"))]


def test_shards_split_recordings_into_disjoint_stable_shares():
    names = [PurePosixPath(f"team-{i}/rec-{i}") for i in range(40)]
    shares = {n: shard_of(n, 4) for n in names}
    assert set(shares.values()) == {1, 2, 3, 4}
    more = names + [PurePosixPath(f"new/rec-{i}") for i in range(10)]
    assert all(shard_of(n, 4) == shares[n] for n in names)  # adding recordings moves none
    assert len(more) == len(set(more))


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "two/4", "1-2", ""])
def test_bad_shard_spec_is_refused(text):
    with pytest.raises(ValueError):
        parse_shard(text)


def test_shard_builds_merge_into_the_same_tree_as_one_build(library, first_build, tmp_path):
    count = 3
    shards = []
    for i in range(1, count + 1):
        out = tmp_path / f"shard-{i}"
        report = build([library], out, shard=(i, count))
        assert all(shard_of(r.recording.rel, count) == i for r in report.results)
        shards.append(out)
    merged = tmp_path / "merged"
    report = merge(shards, merged)
    assert sorted(report.copied) == ["no-audio/sop.json", "team/narration-only/sop.json"]
    assert not report.warnings
    expected = {k: v for k, v in tree_bytes(first_build).items() if k != "index.json"}
    assert {k: v for k, v in tree_bytes(merged).items() if k != "index.json"} == expected
    entries = json.loads((merged / "index.json").read_text())["sops"]
    first_entries = json.loads((first_build / "index.json").read_text())["sops"]
    assert entries == first_entries


def test_merge_refuses_a_manifest_entry_outside_the_shard(first_build, tmp_path):
    shard = tmp_path / "shard"
    shutil.copytree(first_build, shard)
    doc = json.loads((shard / "index.json").read_text())
    doc["sops"][0]["sop"] = "../../etc/sop.json"
    (shard / "index.json").write_text(json.dumps(doc))
    with pytest.raises(MergeError, match="refusing manifest entry"):
        merge([shard], tmp_path / "merged")


def test_merge_refuses_symlinks_in_a_shard(first_build, tmp_path):
    shard = tmp_path / "shard"
    shutil.copytree(first_build, shard)
    (shard / "no-audio" / "images" / "leak.png").symlink_to("/etc/hostname")
    with pytest.raises(MergeError, match="symlinks"):
        merge([shard], tmp_path / "merged")
    assert not (tmp_path / "merged" / "no-audio").exists()


def test_merge_refuses_a_recording_built_by_two_shards(first_build, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(first_build, a)
    shutil.copytree(first_build, b)
    with pytest.raises(MergeError, match="two shards"):
        merge([a, b], tmp_path / "merged")


def test_parallel_jobs_give_the_same_output_as_one_job(library, first_build, tmp_path):
    out = tmp_path / "parallel"
    report = build([library], out, jobs=2)
    assert all(r.ok for r in report.results)
    assert tree_bytes(out) == tree_bytes(first_build)


def test_cli_reports_unchanged_recordings(library, built):
    run = subprocess.run([*SOPLINE, "build", str(library), "-o", str(built)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "built 0, 2 unchanged of 2 recording(s)" in run.stderr


def test_cli_merge_and_shard_usage(library, tmp_path):
    bad = subprocess.run([*SOPLINE, "build", str(library), "-o", str(tmp_path / "o"), "--shard", "5/2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "need 1 <= I <= N" in bad.stderr
    missing = subprocess.run([*SOPLINE, "merge", "-o", str(tmp_path / "m"), str(tmp_path)],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "no index.json" in missing.stderr


def test_a_symlinked_lock_file_is_refused_not_followed(library, tmp_path):
    out = tmp_path / "sops"
    out.mkdir()
    (out / ".sopline.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Exception, match="lock file"):
        build([library], out)
    assert not (tmp_path / "elsewhere").exists()


def test_an_edits_overlay_that_is_a_symlink_fails_only_its_recording(recordings, built):
    (recordings / "no-audio.sop.edits.yaml").symlink_to("/dev/zero")  # would hash forever if followed
    report = build([recordings], built)
    by_name = {r.recording.rel.name: r for r in report.results}
    assert not by_name["no-audio"].ok and "not a regular file" in by_name["no-audio"].message
    assert by_name["narration-only"].ok
