"""The shipped workflows (ci/workflows), the action's metadata and the container recipe:
they parse, keep untrusted text out of scripts, and fit together."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "ci" / "workflows").glob("*.yml"))
ACTION = ROOT / "action.yml"
OUR_ACTION = re.compile(r"^[\w.-]+/sopline@[\w.-]+$")  # how the workflows refer to this action


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text("utf-8"))
    assert isinstance(doc, dict), f"{path.name}: not a mapping"
    return doc


def triggers(doc: dict) -> dict:
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as true
    return {on: None} if isinstance(on, str) else {t: None for t in on} if isinstance(on, list) else on


def steps(doc: dict) -> list[dict]:
    if "runs" in doc:
        return doc["runs"]["steps"]
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


def test_there_are_workflows_for_each_job_the_action_does():
    names = {p.stem for p in WORKFLOWS}
    assert {"sopline-regenerate", "sopline-pr-diff", "sopline-pr-comment", "sopline-pr-diff-same-repo",
            "sopline-audit", "sopline-build-matrix"} <= names


@pytest.mark.parametrize("path", [*WORKFLOWS, ACTION], ids=lambda p: p.name)
def test_every_file_parses(path):
    doc = load(path)
    if path == ACTION:
        assert doc["runs"]["using"] == "composite"
    else:
        assert triggers(doc) and doc["jobs"] and doc["name"]


@pytest.mark.parametrize("path", [*WORKFLOWS, ACTION], ids=lambda p: p.name)
def test_no_expression_inside_a_run_block(path):
    for step in steps(load(path)):
        assert "${{" not in step.get("run", ""), f"{path.name}: {step.get('name')}: pass values through env:"


@pytest.mark.parametrize("path", [*WORKFLOWS, ACTION], ids=lambda p: p.name)
def test_no_pull_request_target(path):
    code = [ln for ln in path.read_text("utf-8").splitlines() if not ln.lstrip().startswith("#")]
    assert not any("pull_request_target" in ln for ln in code)
    if path != ACTION:
        assert "pull_request_target" not in triggers(load(path))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_checkout_fetches_lfs_content(path):
    checkouts = [s for s in steps(load(path)) if str(s.get("uses", "")).startswith("actions/checkout@")]
    for step in checkouts:
        assert (step.get("with") or {}).get("lfs") is True, f"{path.name}: checkout without lfs: true"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_declares_its_permissions(path):
    assert isinstance(load(path).get("permissions"), dict)


def test_every_action_script_stops_on_errors():
    for step in steps(load(ACTION)):
        if "run" in step:
            assert step.get("shell") == "bash"
            assert step["run"].lstrip().startswith("set -euo pipefail"), step.get("name")


def test_the_privileged_comment_workflow_runs_nothing_from_the_pull_request():
    doc = load(ROOT / "ci" / "workflows" / "sopline-pr-comment.yml")
    assert set(triggers(doc)) == {"workflow_run"}
    assert doc["permissions"] == {"actions": "read", "pull-requests": "write"}
    uses = [str(s.get("uses", "")) for s in steps(doc)]
    assert not any(u.startswith("actions/checkout@") for u in uses)
    script = "\n".join(s.get("run", "") for s in steps(doc))
    assert "^[0-9]{1,10}$" in script and "--expect-head-sha" in script and "-L " in script


def test_the_fork_safe_diff_workflow_cannot_write():
    doc = load(ROOT / "ci" / "workflows" / "sopline-pr-diff.yml")
    assert set(triggers(doc)) == {"pull_request"}
    assert doc["permissions"] == {"contents": "read"}
    assert all(not job.get("permissions") for job in doc["jobs"].values())


def test_the_comment_workflow_follows_the_diff_workflow_and_its_artifact():
    diff = load(ROOT / "ci" / "workflows" / "sopline-pr-diff.yml")
    comment = load(ROOT / "ci" / "workflows" / "sopline-pr-comment.yml")
    assert triggers(comment)["workflow_run"]["workflows"] == [diff["name"]]
    uploaded = {s["with"]["name"] for s in steps(diff) if str(s.get("uses", "")).startswith("actions/upload-artifact@")}
    downloaded = {s["with"]["name"] for s in steps(comment)
                  if str(s.get("uses", "")).startswith("actions/download-artifact@")}
    assert uploaded == downloaded == {"sopline-diff"}


def test_the_matrix_covers_every_shard_once():
    doc = load(ROOT / "ci" / "workflows" / "sopline-build-matrix.yml")
    count = int(doc["env"]["SHARDS"])
    assert doc["jobs"]["build"]["strategy"]["matrix"]["shard"] == list(range(1, count + 1))
    assert doc["jobs"]["merge"]["needs"] == "build"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_give_the_action_only_inputs_it_declares(path):
    declared = set(load(ACTION)["inputs"])
    for step in steps(load(path)):
        if OUR_ACTION.match(str(step.get("uses", ""))):
            assert set(step.get("with") or {}) <= declared, step.get("name")


def test_the_docker_context_holds_what_the_dockerfile_copies():
    dockerfile = (ROOT / "ci" / "Dockerfile").read_text("utf-8")
    kept = {ln[1:].strip().rstrip("/") for ln in (ROOT / "ci" / "Dockerfile.dockerignore").read_text().splitlines()
            if ln.startswith("!")}
    sources = [src for ln in dockerfile.splitlines() if ln.startswith("COPY ") for src in ln.split()[1:-1]]
    assert sources
    for src in sources:
        assert (ROOT / src).exists() and src.rstrip("/") in kept, src
    assert 'ENTRYPOINT ["sopline"]' in dockerfile
    assert re.search(r"apt-get install[^\n]*\bgit\b[^\n]*\bgit-lfs\b", dockerfile)
