"""schemas/*.schema.json and validate()."""
from __future__ import annotations

import copy
import dataclasses
import hashlib

import pytest
from jsonschema import Draft202012Validator

from pipeline.model import (Box, Callout, GeneratorInfo, Screenshot, Sentence, Sop,
                            SourceInfo, Step)
from pipeline.render import sop_to_dict
from pipeline.schemas import format_path, load_schema, validate


def full_sop() -> Sop:
    said = Sentence(1.0, 4.5, "Now run terraform plan and check the diff.")
    step = Step(id="run-terraform-plan", number=1, start_s=0.8, end_s=5.0, change_s=2.25,
                instruction="Run terraform plan.", kind="action", narration=(said,),
                callouts=(Callout("tip", "Pipe it through less."),), inputs=("terraform plan",),
                screenshot=Screenshot("images/step-01.png", 4.9, hashlib.sha256(b"png").hexdigest(),
                                      Box(10, 20, 300, 40)))
    quiet = dataclasses.replace(step, id="note-maintenance-window", number=2, kind="note",
                                change_s=None, instruction="Work inside the maintenance window.",
                                callouts=(), inputs=(), screenshot=None)
    return Sop(id="terraform-apply", title="Apply Terraform", summary="Plan, review and apply.",
               source=SourceInfo("infra/apply.mkv", "c" * 64, 61.5, 2560, 1440, 60.0, True),
               generator=GeneratorInfo("sopline", "0.1.0", "small.en", "d" * 64),
               metadata={"owner": "infra", "review_every_days": 180, "tags": ["terraform"],
                         "ticket_queue": "INFRA"},
               steps=(step, quiet), transcript=(said,))


def test_schemas_are_valid_draft_2020_12():
    for name in ("sop", "sidecar"):
        schema = load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


def test_every_property_in_both_schemas_has_a_description():
    def undocumented(node, path):
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    yield f"{path}.{key}"
            for key, sub in node.items():
                yield from undocumented(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                yield from undocumented(sub, f"{path}[{i}]")

    for name in ("sop", "sidecar"):
        assert list(undocumented(load_schema(name), name)) == []


def test_sop_metadata_types_known_keys_exactly_like_the_sidecar():
    meta = load_schema("sop")["properties"]["metadata"]["properties"]
    sidecar = load_schema("sidecar")["properties"]
    for key, schema in meta.items():
        assert schema == sidecar[key], key


def test_a_full_sop_from_sop_to_dict_is_valid():
    assert validate("sop", sop_to_dict(full_sop())) == []


def test_sop_metadata_may_carry_extra_keys():
    doc = sop_to_dict(full_sop())
    assert doc["metadata"]["ticket_queue"] == "INFRA"
    assert validate("sop", doc) == []


def test_unknown_step_kind_is_reported_with_its_location():
    doc = sop_to_dict(full_sop())
    doc["steps"][1]["kind"] = "chore"
    assert validate("sop", doc) == [
        "steps[1].kind: 'chore' is not one of ['action', 'verification', 'warning', 'note']"]


def test_unknown_callout_kind_is_rejected():
    doc = sop_to_dict(full_sop())
    doc["steps"][0]["callouts"][0]["kind"] = "danger"
    assert validate("sop", doc) == [
        "steps[0].callouts[0].kind: 'danger' is not one of ['warning', 'tip', 'verify']"]


def test_missing_required_fields_are_reported():
    doc = sop_to_dict(full_sop())
    del doc["generator"]
    del doc["steps"][0]["instruction"]
    assert validate("sop", doc) == ["(root): 'generator' is a required property",
                                    "steps[0]: 'instruction' is a required property"]


def test_extra_top_level_and_step_fields_are_rejected():
    doc = sop_to_dict(full_sop())
    doc["built_at"] = "2024-01-01T00:00:00Z"
    doc["steps"][0]["colour"] = "red"
    errors = validate("sop", doc)
    assert len(errors) == 2
    assert all("Additional properties are not allowed" in e for e in errors)


def test_schema_version_must_be_one():
    doc = sop_to_dict(full_sop())
    doc["schema_version"] = 2
    assert validate("sop", doc) == ["schema_version: 1 was expected"]


@pytest.mark.parametrize("field,value", [
    ("start_s", -0.5), ("change_s", "soon"), ("number", 0)])
def test_bad_step_numbers_are_rejected(field, value):
    doc = sop_to_dict(full_sop())
    doc["steps"][0][field] = value
    errors = validate("sop", doc)
    assert len(errors) == 1 and errors[0].startswith(f"steps[0].{field}: ")


def test_absolute_source_path_is_rejected_by_the_schema():
    doc = sop_to_dict(full_sop())
    doc["source"]["path"] = "/home/ci/infra/apply.mkv"
    assert validate("sop", doc)[0].startswith("source.path: ")


def test_bad_highlight_points_at_the_box_field():
    doc = sop_to_dict(full_sop())
    doc["steps"][0]["screenshot"]["highlight"] = {"x": 1, "y": 2, "w": 0, "h": 3}
    assert validate("sop", doc) == ["steps[0].screenshot.highlight.w: 0 is less than the minimum of 1"]


def test_errors_are_sorted_with_array_indices_numerically():
    doc = sop_to_dict(full_sop())
    doc["steps"] = [copy.deepcopy(doc["steps"][0]) for _ in range(12)]
    for step in doc["steps"]:
        step["kind"] = "x"
    locations = [e.split(":")[0] for e in validate("sop", doc)]
    assert locations == [f"steps[{i}].kind" for i in range(12)]


def test_a_valid_sidecar_document_passes():
    assert validate("sidecar", {"title": "Apply", "review_every_days": 30, "tags": ["infra"]}) == []


def test_format_path_reads_like_code():
    assert format_path(["steps", 2, "kind"]) == "steps[2].kind"
    assert format_path([]) == "(root)"


def test_unknown_schema_name_is_an_error():
    with pytest.raises(ValueError, match="unknown schema"):
        load_schema("index")
