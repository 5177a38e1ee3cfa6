"""The optional <recording>.sop.yaml sidecar."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sidecar import MAX_BYTES, Sidecar, SidecarError, load_sidecar, sidecar_path_for

GOOD = """\
title: Deploy the checkout service
id: deploy-checkout
summary: Roll out a new checkout build and confirm it is healthy.
owner: Platform team
role: On-call SRE
approvers: [sre-leads, alice]
prerequisites:
  - kubectl access to prod
  - VPN connected
expected_outcome: All checkout pods Running on the new image.
review_every_days: 90
tags: [deploy, k8s]
"""


def write(tmp_path: Path, text: str, name: str = "deploy.sop.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_sidecar_loads_every_field(tmp_path):
    sidecar = load_sidecar(write(tmp_path, GOOD))
    assert sidecar.warnings == ()
    assert sidecar.fields["review_every_days"] == 90
    assert sidecar.fields["prerequisites"] == ["kubectl access to prod", "VPN connected"]
    assert set(sidecar.fields) == {"title", "id", "summary", "owner", "role", "approvers",
                                   "prerequisites", "expected_outcome", "review_every_days", "tags"}


def test_sidecar_is_a_frozen_record(tmp_path):
    sidecar = load_sidecar(write(tmp_path, GOOD))
    with pytest.raises(AttributeError):
        sidecar.warnings = ("x",)  # type: ignore[misc]
    assert isinstance(sidecar, Sidecar)


def test_invalid_yaml_error_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "title: Deploy\nowner: Platform\n  role: SRE\n")
    with pytest.raises(SidecarError, match=r"deploy\.sop\.yaml: invalid YAML at line 3") as info:
        load_sidecar(path)
    assert "\n" not in str(info.value)


def test_wrong_types_are_schema_errors(tmp_path):
    path = write(tmp_path, "title: [not, a, string]\nreview_every_days: often\n")
    with pytest.raises(SidecarError) as info:
        load_sidecar(path)
    message = str(info.value)
    assert "review_every_days: 'often' is not of type 'integer'" in message
    assert "title: ['not', 'a', 'string'] is not of type 'string'" in message


def test_review_period_must_be_between_one_day_and_ten_years(tmp_path):
    with pytest.raises(SidecarError, match="review_every_days: 0 is less than the minimum of 1"):
        load_sidecar(write(tmp_path, "review_every_days: 0\n"))


def test_unknown_key_is_a_warning_and_dropped(tmp_path):
    sidecar = load_sidecar(write(tmp_path, "title: Deploy\nreviewer: bob\n"))
    assert sidecar.fields == {"title": "Deploy"}
    assert sidecar.warnings == ("unknown key 'reviewer' ignored",)


def test_id_with_a_parent_directory_is_rejected(tmp_path):
    with pytest.raises(SidecarError, match="id: '../etc/passwd'"):
        load_sidecar(write(tmp_path, "id: ../etc/passwd\n"))


def test_id_with_double_dots_inside_is_rejected(tmp_path):
    with pytest.raises(SidecarError, match="id: 'a..b'"):
        load_sidecar(write(tmp_path, "id: a..b\n"))


def test_tags_must_be_slugs(tmp_path):
    with pytest.raises(SidecarError, match=r"tags\[1\]: 'Not A Slug'"):
        load_sidecar(write(tmp_path, "tags: [ok, Not A Slug]\n"))


def test_huge_file_is_rejected_before_parsing(tmp_path):
    path = write(tmp_path, "summary: " + "x" * MAX_BYTES + "\n")
    with pytest.raises(SidecarError, match="larger than 256 KB"):
        load_sidecar(path)


def test_top_level_list_is_not_a_mapping(tmp_path):
    with pytest.raises(SidecarError, match="expected a mapping"):
        load_sidecar(write(tmp_path, "- title: Deploy\n"))


def test_duplicate_keys_are_an_error_not_a_silent_overwrite(tmp_path):
    with pytest.raises(SidecarError, match="line 2.*duplicate key 'title'"):
        load_sidecar(write(tmp_path, "title: One\ntitle: Two\n"))


def test_yaml_aliases_are_refused(tmp_path):
    with pytest.raises(SidecarError, match="aliases"):
        load_sidecar(write(tmp_path, "approvers: &a [x, y]\nprerequisites: *a\n"))


def test_python_tags_are_refused_by_safe_loading(tmp_path):
    with pytest.raises(SidecarError, match="invalid YAML"):
        load_sidecar(write(tmp_path, "title: !!python/object/apply:os.system ['true']\n"))


def test_empty_sidecar_gives_no_fields_and_a_warning(tmp_path):
    sidecar = load_sidecar(write(tmp_path, "# nothing yet\n"))
    assert sidecar.fields == {} and sidecar.warnings == ("sidecar is empty",)


def test_missing_file_is_a_sidecar_error(tmp_path):
    with pytest.raises(SidecarError, match="cannot read"):
        load_sidecar(tmp_path / "absent.sop.yaml")


def test_sidecar_path_is_beside_the_recording(tmp_path):
    assert sidecar_path_for(tmp_path / "deploy.v2.mp4") == tmp_path / "deploy.v2.sop.yaml"


def test_sidecar_path_accepts_the_yml_spelling(tmp_path):
    write(tmp_path, GOOD, name="deploy.sop.yml")
    assert sidecar_path_for(tmp_path / "deploy.mp4") == tmp_path / "deploy.sop.yml"


def test_both_yaml_and_yml_sidecars_is_an_error(tmp_path):
    write(tmp_path, GOOD, name="deploy.sop.yml")
    write(tmp_path, GOOD, name="deploy.sop.yaml")
    with pytest.raises(SidecarError, match="keep one"):
        sidecar_path_for(tmp_path / "deploy.mp4")
