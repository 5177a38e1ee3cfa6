"""Fuzzing the readers of untrusted files: the sidecar loader (files from pull
requests) and the sop.json reader used by diff and audit (files from output
trees, git history, pull requests). Any input gives a result or the reader's
own one-line error, never another exception."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import render
from pipeline.model import Box, Callout, GeneratorInfo, Screenshot, Sentence, Sop, SourceInfo, Step
from pipeline.sidecar import Sidecar, SidecarError, load_sidecar
from pipeline.sopread import SopReadError, parse_sop

# Modest example counts keep the suite fast; the deadline tolerates a loaded CI machine.
FUZZ = settings(max_examples=150, deadline=timedelta(seconds=5),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=25)

SIDECAR_KEYS = ["title", "id", "summary", "owner", "role", "approvers", "prerequisites", "expected_outcome",
                "review_every_days", "tags", "last_reviewed", "reviewer"]
GOOD_SIDECAR = ("title: Deploy checkout\nid: deploy-checkout\nowner: platform@example.com\n"
                "approvers: [sre-lead]\nprerequisites:\n  - VPN\nreview_every_days: 90\ntags: [deploy]\n")
YAML_PIECES = st.sampled_from(["\n", ": ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!str ", "!!binary ",
                               "? ", "|", ">", "'", '"', "#", "\t", "---\n", "...\n", "<<: ", "~", "\\u00e9",
                               "\\ud800", "1e999", "0x1F", ".nan", "2026-11-26", "title", "tags", "id: ../x",
                               "\x00", "\ufeff", "\u2028"])


def sidecar_outcome(path, data: bytes):
    path.write_bytes(data)
    try:
        result = load_sidecar(path)
    except SidecarError as exc:
        assert "\n" not in str(exc) and exc.reason
        return None
    assert isinstance(result, Sidecar)
    # what a sidecar yields must be writable into sop.json as it is
    json.dumps(result.fields, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return result


@pytest.fixture(scope="module")
def sidecar_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "rec.sop.yaml"


@FUZZ
@given(data=st.binary(max_size=2048))
@example(data=b"title: " + b"[" * 5000 + b"]" * 5000)
@example(data=b"review_every_days: " + b"9" * 5000)
@example(data=b"title: !!set {a, b}")
@example(data=b'title: "\\ud800"')
def test_sidecar_loader_on_arbitrary_bytes(sidecar_file, data):
    sidecar_outcome(sidecar_file, data)


@FUZZ
@given(pieces=st.lists(YAML_PIECES | st.text(max_size=8), max_size=40))
def test_sidecar_loader_on_yaml_like_text(sidecar_file, pieces):
    sidecar_outcome(sidecar_file, "".join(pieces).encode("utf-8", "surrogatepass"))


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(SIDECAR_KEYS) | st.text(max_size=10), json_values, max_size=6))
def test_sidecar_loader_on_well_formed_yaml_of_any_shape(sidecar_file, doc):
    sidecar_outcome(sidecar_file, yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass"))


@FUZZ
@given(at=st.integers(0, len(GOOD_SIDECAR)), cut=st.integers(0, 20), insert=YAML_PIECES | st.text(max_size=6))
def test_sidecar_loader_on_a_damaged_good_sidecar(sidecar_file, at, cut, insert):
    text = GOOD_SIDECAR[:at] + insert + GOOD_SIDECAR[at + cut:]
    sidecar_outcome(sidecar_file, text.encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------- sop.json

def valid_sop_doc() -> dict:
    shot = Screenshot("images/step-01.png", 2.0, "a" * 64, Box(1, 2, 30, 40))
    steps = (
        Step("run-kubectl-get-pods", 1, 0.5, 3.0, 1.2, "Run kubectl get pods.", "action",
             (Sentence(0.5, 3.0, "I run kubectl get pods."),), (Callout("tip", "Use -w to watch."),),
             ("kubectl get pods",), shot),
        Step("check-pods-running", 2, 3.0, 5.0, None, "Check the pods are running.", "verification",
             (), (), (), None),
    )
    sop = Sop("deploy", "Deploy", "Deploy it.", SourceInfo("rec/deploy.mp4", "b" * 64, 5.0, 960, 600, 10.0, True),
              GeneratorInfo("sopline", "0.1.0", "tiny.en", "c" * 64), {"owner": "ops", "tags": ["deploy"]}, steps,
              (Sentence(0.5, 3.0, "I run kubectl get pods."),))
    return render.sop_to_dict(sop)


def test_the_fuzzed_sop_starts_out_valid():
    assert parse_sop(json.dumps(valid_sop_doc()).encode())["id"] == "deploy"


def sop_outcome(data):
    try:
        doc = parse_sop(data, "fuzz/sop.json")
    except SopReadError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz/sop.json: ")
        return None
    assert isinstance(doc, dict)
    json.dumps(doc, allow_nan=False)  # plain JSON data, safe to compare and write again
    return doc


@FUZZ
@given(data=st.binary(max_size=4096))
@example(data=b"[" * 100_000)
@example(data=b'{"schema_version": ' + b"9" * 5000 + b"}")
@example(data=b"\xef\xbb\xbf{}")
@example(data=b'{"schema_version": NaN}')
def test_sop_reader_on_arbitrary_bytes(data):
    sop_outcome(data)


@FUZZ
@given(text=st.text(max_size=500))
def test_sop_reader_on_arbitrary_text(text):
    sop_outcome(text)


@FUZZ
@given(value=json_values)
def test_sop_reader_on_any_json_value(value):
    sop_outcome(json.dumps(value).encode("utf-8", "surrogatepass"))


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_sop_reader_on_a_valid_sop_with_one_part_replaced(data):
    doc = valid_sop_doc()
    path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
    target = doc
    for part in path[:-1]:
        target = target[part]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(json_values)
    sop_outcome(json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.data())
def test_sop_reader_on_a_valid_sop_cut_or_spliced(data):
    raw = json.dumps(valid_sop_doc(), indent=2).encode()
    at = data.draw(st.integers(0, len(raw)))
    cut = data.draw(st.integers(0, 40))
    insert = data.draw(st.binary(max_size=8))
    sop_outcome(raw[:at] + insert + raw[at + cut:])
