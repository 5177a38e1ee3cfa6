"""Two builds of the same inputs give byte-identical outputs, every file of them.

Real recordings (awkward ones from tests/fixtures/broken/: variable frame rate,
rotation, odd size, 4K60, WebM), a sidecar, and failures whose messages land in
index.json; the two builds run from different folders, one by absolute path
and one by relative path, so nothing of the machine can leak in unnoticed.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.build import BuildSettings, build

BROKEN = Path(__file__).parent / "fixtures" / "broken"
INPUTS = ["vfr.mp4", "rotated.mp4", "odd-1366x767.webm", "4k60.mp4", "truncated-data.mp4", "text.mp4"]
SIDECAR = "title: Deploy | <b>checkout</b>\nowner: platform@example.com\ntags: [deploy]\n"


def make_tree(root: Path) -> Path:
    src = root / "recordings"
    (src / "team").mkdir(parents=True)
    for name in INPUTS:
        shutil.copy(BROKEN / name, src / "team" / name)
    shutil.copy(BROKEN / "short-0.5s.mp4", src / "clip.mp4")
    (src / "clip.sop.yaml").write_text(SIDECAR, "utf-8")
    return src


def all_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    first_root, second_root = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    first = build([make_tree(first_root)], first_root / "out", BuildSettings())
    make_tree(second_root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(second_root)  # the second build names its folders relatively
        second = build([Path("recordings")], Path("out"), BuildSettings())
    return first, second, all_files(first_root / "out"), all_files(second_root / "out")


def test_both_builds_built_and_failed_the_same_recordings(two_builds):
    first, second, _, _ = two_builds
    assert [(str(r.recording.source), r.ok, r.message) for r in first.results] == \
           [(str(r.recording.source), r.ok, r.message) for r in second.results]
    assert len(first.failed) == 2 and len(first.results) == len(INPUTS) + 1


def test_every_output_file_is_byte_identical(two_builds):
    _, _, a, b = two_builds
    assert sorted(a) == sorted(b)
    assert [name for name in a if a[name] != b[name]] == []


def test_outputs_cover_every_kind_of_file(two_builds):
    _, _, a, _ = two_builds
    assert "index.json" in a and "clip/sop.md" in a and "team/rotated/sop.json" in a
    assert any(name.startswith("team/4k60/images/") for name in a)
