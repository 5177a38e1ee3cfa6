"""The GitHub Action and `sopline publish`, against a local stand-in for the GitHub REST API.

The action's steps are run from action.yml itself: the test parses it, evaluates the
`${{ }}` expressions of `env:`, `if:` and `outputs:` the way the runner does, skips
`uses:` steps, and runs each `run:` script with bash and the variables GitHub sets.
Builds, diffs and audits are real (fixture recordings in a temporary git repository);
only GitHub is played by an HTTP server on 127.0.0.1.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from click.testing import CliRunner

from pipeline.build import BuildSettings, build
from pipeline.cli import main as sopline_main
from pipeline.github import MAX_BODY, fenced, fit_body, write_outputs

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
ACTION = ROOT / "action.yml"
BIN = Path(sys.executable).parent
TOKEN = "ghs_test0123456789abcdefSECRET"
REPO = "acme/ops"
BOT = "github-actions[bot]"


def needs(command: str):
    """The test runs the `sopline <command>` subprocess; fail loudly if it is not registered."""
    assert command in sopline_main.list_commands(None), f"`sopline {command}` is not registered"
    return lambda test: test


# -- a stand-in for the GitHub REST API ----------------------------------------------

@dataclass
class FakeGitHub:
    """The endpoints sopline uses, with GitHub's answers (a workflow token gets 403 on
    /user; pages of `per_page` with a Link header; 422 over 65536 characters)."""

    url: str = ""
    requests: list = field(default_factory=list)
    comments: dict = field(default_factory=dict)  # issue/PR number -> [comment]
    issues: list = field(default_factory=list)
    pulls: dict = field(default_factory=dict)  # number -> head sha
    next_id: int = 1000
    link_base: str | None = None  # pagination links to another host (a hostile or broken proxy)

    def reset(self):
        self.requests.clear()
        self.comments.clear()
        self.issues.clear()
        self.pulls.clear()
        self.link_base = None

    def add_comment(self, number: int, body: str, login: str) -> dict:
        self.next_id += 1
        c = {"id": self.next_id, "body": body, "user": {"login": login},
             "html_url": f"https://github.test/{REPO}/pull/{number}#issuecomment-{self.next_id}"}
        self.comments.setdefault(number, []).append(c)
        return c

    def add_issue(self, title: str, body: str, login: str, labels=(), pull_request=False) -> dict:
        number = len(self.issues) + 1
        issue = {"number": number, "title": title, "body": body, "state": "open",
                 "labels": [{"name": n} for n in labels], "user": {"login": login},
                 "html_url": f"https://github.test/{REPO}/issues/{number}"}
        if pull_request:
            issue["pull_request"] = {"url": "..."}
        self.issues.append(issue)
        return issue

    def calls(self, method=None, pattern=""):
        return [r for r in self.requests if (method is None or r[0] == method) and re.search(pattern, r[1])]

    def handle(self, method: str, path: str, query: dict, body):
        prefix = f"/repos/{REPO}"
        if path == "/user":
            return 403, {"message": "Resource not accessible by integration"}
        if body is not None and len(str(body.get("body", ""))) > 65536:
            return 422, {"message": "Validation Failed",
                         "errors": [{"message": "body is too long (maximum is 65536 characters)"}]}
        if m := re.fullmatch(prefix + r"/issues/(\d+)/comments", path):
            number = int(m.group(1))
            if method == "GET":
                return self.page(self.comments.get(number, []), query, path)
            return 201, self.add_comment(number, body["body"], BOT)
        if m := re.fullmatch(prefix + r"/issues/comments/(\d+)", path):
            for c in (c for cs in self.comments.values() for c in cs):
                if c["id"] == int(m.group(1)):
                    c["body"] = body["body"]
                    return 200, c
            return 404, {"message": "Not Found"}
        if path == prefix + "/issues":
            if method == "POST":
                return 201, self.add_issue(body["title"], body["body"], BOT, body.get("labels", []))
            state = query.get("state", ["open"])[0]
            wanted = set(filter(None, query.get("labels", [""])[0].split(",")))
            found = [i for i in self.issues if (state == "all" or i["state"] == state)
                     and wanted <= {lab["name"] for lab in i["labels"]}]
            return self.page(found, query, path)
        if m := re.fullmatch(prefix + r"/issues/(\d+)", path):
            issue = self.issues[int(m.group(1)) - 1]
            issue.update({k: v for k, v in body.items() if k in ("title", "body", "state", "state_reason")})
            return 200, issue
        if m := re.fullmatch(prefix + r"/pulls/(\d+)", path):
            sha = self.pulls.get(int(m.group(1)))
            return (200, {"number": int(m.group(1)), "head": {"sha": sha}}) if sha else (404, {"message": "Not Found"})
        return 404, {"message": "Not Found"}

    def page(self, items, query, path):
        per_page = int(query.get("per_page", ["30"])[0])
        page = int(query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            rest = "&".join(f"{k}={v[0]}" for k, v in query.items() if k != "page")
            headers["Link"] = f'<{self.link_base or self.url}{path}?{rest}&page={page + 1}>; rel="next"'
        return 200, chunk, headers


@pytest.fixture(scope="module")
def server():
    fake = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            fake.requests.append((self.command, split.path, body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                answer = (401, {"message": "Bad credentials"})
            else:
                answer = fake.handle(self.command, split.path, parse_qs(split.query), body)
            status, doc, headers = (*answer, {})[:3]
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def gh(server):
    server.reset()
    return server


# -- running action.yml the way the runner does -------------------------------------

_TOKEN_RE = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))|"
                       r"(?P<num>\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*(?:\(\))?))")


class Expr:
    """The subset of GitHub's expression language action.yml uses: literals, context
    paths, == != ! && || and parentheses, success() failure() always()."""

    def __init__(self, text: str, context: dict, failed: bool):
        self.tokens, pos = [], 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            assert m and m.end() > pos, f"cannot parse expression {text!r} at {pos}"
            self.tokens.append(next((k, v) for k, v in m.groupdict().items() if v is not None))
            pos = m.end()
        self.context, self.failed, self.i = context, failed, 0
        self.uses_status = any(k == "name" and v.endswith("()") for k, v in self.tokens)

    def value(self):
        v = self._or()
        assert self.i == len(self.tokens), f"trailing tokens in {self.tokens}"
        return v

    def _peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None)

    def _or(self):
        v = self._and()
        while self._peek() == ("op", "||"):
            self.i += 1
            w = self._and()
            v = v if truthy(v) else w
        return v

    def _and(self):
        v = self._not()
        while self._peek() == ("op", "&&"):
            self.i += 1
            w = self._not()
            v = w if truthy(v) else v
        return v

    def _not(self):
        if self._peek() == ("op", "!"):
            self.i += 1
            return not truthy(self._not())
        v = self._atom()
        if self._peek() in (("op", "=="), ("op", "!=")):
            op = self.tokens[self.i][1]
            self.i += 1
            w = self._atom()
            same = as_text(v).lower() == as_text(w).lower()
            return same if op == "==" else not same
        return v

    def _atom(self):
        kind, text = self.tokens[self.i]
        self.i += 1
        if kind == "op" and text == "(":
            v = self._or()
            assert self.tokens[self.i] == ("op", ")")
            self.i += 1
            return v
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return int(text)
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if text.endswith("()"):
            return {"always()": True, "success()": not self.failed, "failure()": self.failed}[text]
        value = self.context
        for part in text.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value


def truthy(v) -> bool:
    return bool(v) and v != 0


def as_text(v) -> str:
    return {True: "true", False: "false", None: ""}.get(v, v) if isinstance(v, (bool, type(None))) else str(v)


def interpolate(text, context, failed=False) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: as_text(Expr(m.group(1), context, failed).value()), str(text))


def condition(text, context, failed) -> bool:
    if text is None:
        return not failed
    text = str(text).strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    expr = Expr(text, context, failed)
    result = truthy(expr.value())
    return result if expr.uses_status else result and not failed


def parse_output_file(path: Path) -> dict:
    """GITHUB_OUTPUT as the runner reads it: NAME=VALUE and NAME<<DELIM ... DELIM."""
    out, lines, i = {}, path.read_text("utf-8").split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            end = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1:end])
            i = end + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


@dataclass
class ActionRun:
    returncode: int
    outputs: dict
    steps: list  # (name, "ran"|"skipped"|"uses", returncode)
    log: str
    summary: str


def run_action(inputs: dict, workspace: Path, tmp: Path, server: FakeGitHub, event_name: str = "pull_request",
               event: dict | None = None) -> ActionRun:
    action = yaml.safe_load(ACTION.read_text())
    declared = action["inputs"]
    unknown = set(inputs) - set(declared)
    assert not unknown, f"inputs not declared in action.yml: {unknown}"
    event = event or {}
    runner_temp = tmp / "runner-temp"
    runner_temp.mkdir(parents=True, exist_ok=True)
    event_path, summary = tmp / "event.json", tmp / "step-summary.md"
    event_path.write_text(json.dumps(event))
    summary.touch()
    github = {"token": TOKEN, "event_name": event_name, "event": event, "repository": REPO,
              "action_path": str(ROOT), "workspace": str(workspace)}
    context = {"github": github, "runner": {"temp": str(runner_temp)}, "steps": {}, "env": {}}
    context["inputs"] = {name: str(inputs[name]) if name in inputs else
                         interpolate(spec.get("default", ""), context) for name, spec in declared.items()}
    base_env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(tmp)), "LANG": "C.UTF-8",
        "CI": "true", "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event_name, "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_REPOSITORY": REPO, "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_ACTION_PATH": str(ROOT), "GITHUB_API_URL": server.url,
        "GITHUB_SERVER_URL": "https://github.test", "GITHUB_RUN_ID": "42",
        "GITHUB_STEP_SUMMARY": str(summary), "RUNNER_TEMP": str(runner_temp),
    }
    failed, first_rc, steps, log = False, 0, [], []
    for n, step in enumerate(action["runs"]["steps"]):
        name = step.get("name", f"step {n}")
        if "uses" in step:
            steps.append((name, "uses", None))
            continue
        if not condition(step.get("if"), context, failed):
            steps.append((name, "skipped", None))
            continue
        output_file = tmp / f"output-{n}.txt"
        output_file.write_text("")
        env = dict(base_env, GITHUB_OUTPUT=str(output_file))
        env.update({k: interpolate(v, context, failed) for k, v in (step.get("env") or {}).items()})
        script = tmp / f"step-{n}.sh"
        script.write_text(step["run"])
        shell = step.get("shell")
        assert shell == "bash", f"{name}: composite run steps need shell: bash"
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], check=False,
                              cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
        log.append(f"--- {name} (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
        steps.append((name, "ran", proc.returncode))
        if step.get("id"):
            context["steps"][step["id"]] = {"outputs": parse_output_file(output_file),
                                            "outcome": "success" if proc.returncode == 0 else "failure"}
        if proc.returncode and not failed:
            failed, first_rc = True, proc.returncode
    outputs = {k: interpolate(v["value"], context) for k, v in (action.get("outputs") or {}).items()}
    return ActionRun(first_rc, outputs, steps, "\n".join(log), summary.read_text())


def ran(run: ActionRun, name: str) -> bool:
    return any(s[0] == name and s[1] == "ran" for s in run.steps)


# -- a pull request in a real repository ---------------------------------------------

def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def build_sops(repo: Path) -> None:
    report = build([repo / "recordings"], repo / "sops", BuildSettings())
    assert not report.failed, [r.message for r in report.failed]


def add_recording(repo: Path, fixture: str, name: str) -> None:
    shutil.copy(FIXTURES / f"{fixture}.mp4", repo / "recordings" / f"{name}.mp4")
    (repo / "recordings" / f"{name}.sop.yaml").write_text(f"title: {name}\nowner: platform-team@example.com\n")


@dataclass(frozen=True)
class PullRequest:
    repo: Path
    base: str
    head: str

    def event(self, number: int = 7, head_repo: str = REPO) -> dict:
        return {"number": number, "pull_request": {"number": number, "base": {"sha": self.base, "ref": "main"},
                                                  "head": {"sha": self.head, "repo": {"full_name": head_repo}}}}

    def checkout(self, where: Path) -> Path:
        """A fresh copy of the work tree, as actions/checkout would leave it."""
        shutil.copytree(self.repo, where, symlinks=True)
        return where


@pytest.fixture(scope="module")
def pull_request(tmp_path_factory) -> PullRequest:
    """main: one recording with its SOP committed; the PR adds a second recording.
    Its SOP is built once here, so the action's own (incremental) build has little to do."""
    repo = tmp_path_factory.mktemp("pr") / "repo"
    (repo / "recordings").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    add_recording(repo, "web-scale", "scale-web")
    build_sops(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "SOPs")
    base = git(repo, "rev-parse", "HEAD")
    add_recording(repo, "no-audio", "silent-change")
    git(repo, "add", "recordings")
    git(repo, "commit", "-q", "-m", "record silent-change")
    head = git(repo, "rev-parse", "HEAD")
    build_sops(repo)
    return PullRequest(repo, base, head)


def diff_inputs(**more) -> dict:
    return {"command": "diff", "paths": "recordings", "out": "sops", "install": "false",
            "python-version": "", **more}


# -- the PR comment through the action ---------------------------------------------

@dataclass(frozen=True)
class Posted:
    """One action run and what the server held afterwards."""

    run: ActionRun
    comments: dict
    issues: list
    requests: list


def snapshot(run: ActionRun, server: FakeGitHub) -> Posted:
    return Posted(run, copy.deepcopy(server.comments), copy.deepcopy(server.issues), list(server.requests))


def restore(server: FakeGitHub, posted: Posted) -> None:
    """The server as a previous run left it (the next run is a later push)."""
    server.comments.update(copy.deepcopy(posted.comments))
    server.issues.extend(copy.deepcopy(posted.issues))


@pytest.fixture(scope="module")
def first_push(server, pull_request, tmp_path_factory) -> Posted:
    """The action's diff on the PR's first push, posting to a PR with no sopline comment."""
    tmp = tmp_path_factory.mktemp("first-push")
    server.reset()
    run = run_action(diff_inputs(), pull_request.checkout(tmp / "ws"), tmp, server, event=pull_request.event())
    assert run.returncode == 0, run.log
    return snapshot(run, server)


@needs("diff")
def test_first_push_creates_one_comment_with_the_marker(first_push):
    assert [r[:2] for r in first_push.requests if r[0] != "GET"] == [("POST", f"/repos/{REPO}/issues/7/comments")]
    (comment,) = first_push.comments[7]
    assert comment["body"].startswith("<!-- sopline:diff -->\n")
    assert "silent-change" in comment["body"]


@needs("diff")
def test_diff_writes_the_job_summary_and_outputs(first_push):
    run = first_push.run
    assert run.outputs["changed"] == "1"
    report = Path(run.outputs["report"])
    assert report.is_file() and report.read_text() in run.summary
    assert json.loads(Path(run.outputs["json"]).read_text())["changed"] == 1
    assert first_push.comments[7][0]["body"].endswith(report.read_text())


@needs("diff")
def test_second_push_updates_the_same_comment(gh, first_push, pull_request, tmp_path):
    restore(gh, first_push)
    run = run_action(diff_inputs(), pull_request.checkout(tmp_path / "ws"), tmp_path, gh, event=pull_request.event())
    assert run.returncode == 0, run.log
    assert not gh.calls("POST")
    (patch,) = gh.calls("PATCH")
    assert patch[1] == f"/repos/{REPO}/issues/comments/{first_push.comments[7][0]['id']}"
    assert len(gh.comments[7]) == 1


@needs("diff")
def test_a_marked_comment_by_another_user_is_left_alone(gh, pull_request, tmp_path):
    theirs = gh.add_comment(7, "<!-- sopline:diff -->\nquoting the bot", "mallory")
    run = run_action(diff_inputs(), pull_request.checkout(tmp_path / "ws"), tmp_path, gh,
                     event=pull_request.event())
    assert run.returncode == 0, run.log
    assert not gh.calls("PATCH")
    assert theirs["body"] == "<!-- sopline:diff -->\nquoting the bot"
    assert [c["user"]["login"] for c in gh.comments[7]] == ["mallory", BOT]


@needs("diff")
def test_a_fork_pull_request_is_not_commented_by_the_action(gh, pull_request, tmp_path):
    run = run_action(diff_inputs(), pull_request.checkout(tmp_path / "ws"), tmp_path, gh,
                     event=pull_request.event(head_repo="someone/ops-fork"))
    assert run.returncode == 0, run.log
    assert not gh.requests
    assert "two-workflow" in run.log


# -- inputs are data, never code -----------------------------------------------------

def test_hostile_inputs_are_not_executed(gh, tmp_path):
    ws = tmp_path / "ws"
    (ws / "recordings").mkdir(parents=True)
    pwned = tmp_path / "pwned"
    payloads = [f'x"; touch {pwned}; "', f"$(touch {pwned})", f"`touch {pwned}`", f"';touch {pwned};'"]
    run = run_action({"command": "build", "paths": "\n".join(payloads), "out": f"$(touch {pwned})",
                      "model": f"`touch {pwned}`", "args": f"$(touch {pwned})",
                      "install": "false", "python-version": ""}, ws, tmp_path, gh, event_name="push")
    assert not pwned.exists()
    assert run.returncode == 2, run.log  # the payloads reached sopline as (nonexistent) paths
    assert "does not exist" in run.log


def test_a_base_ref_cannot_smuggle_a_git_option(gh, tmp_path):
    pwned = tmp_path / "pwned"
    run = run_action(diff_inputs(**{"base-ref": f"--upload-pack=touch {pwned}"}), tmp_path, tmp_path, gh,
                     event_name="push")
    assert run.returncode == 2 and "must not start with '-'" in run.log
    assert not pwned.exists()


def test_build_writes_its_log_to_the_summary_and_the_report_output(gh, tmp_path):
    ws = tmp_path / "ws"
    (ws / "recordings").mkdir(parents=True)
    shutil.copy(FIXTURES / "no-audio.mp4", ws / "recordings" / "silent.mp4")
    run = run_action({"command": "build", "install": "false", "python-version": ""}, ws, tmp_path, gh,
                     event_name="push")
    assert run.returncode == 0, run.log
    assert (ws / "sops" / "silent" / "sop.json").is_file()
    report = Path(run.outputs["report"]).read_text()
    assert report.startswith("### sopline build\n") and "silent.mp4" in report
    assert report in run.summary
    assert run.outputs["exit-code"] == "0"
    assert not ran(run, "Comment on the pull request") and not gh.requests


# -- the audit's tracking issue through the action -------------------------------------

def audit_inputs(**more) -> dict:
    return {"command": "audit", "paths": "recordings", "out": "sops", "issue": "true",
            "install": "false", "python-version": "", **more}


def with_missing_sops(pull_request: PullRequest, where: Path, *names: str) -> Path:
    ws = pull_request.checkout(where)
    for name in names:  # recordings with no SOP: `missing` findings
        add_recording(ws, "no-audio", name)
    return ws


@pytest.fixture(scope="module")
def audit_opened(server, pull_request, tmp_path_factory) -> Posted:
    """The scheduled audit finding a recording with no SOP, with no tracking issue yet."""
    tmp = tmp_path_factory.mktemp("audit")
    server.reset()
    run = run_action(audit_inputs(), with_missing_sops(pull_request, tmp / "ws", "new-runbook"), tmp, server,
                     event_name="schedule")
    return snapshot(run, server)


@needs("audit")
def test_audit_findings_open_one_tracking_issue(audit_opened):
    run = audit_opened.run
    assert run.returncode == 1, run.log  # `missing` is medium: the default fail-on fails the job, after posting
    assert run.outputs["findings"] == "1"
    (issue,) = audit_opened.issues
    assert issue["state"] == "open" and issue["title"] == "SOP audit findings"
    assert issue["body"].startswith("<!-- sopline:audit -->\n") and "new-runbook" in issue["body"]
    assert [lab["name"] for lab in issue["labels"]] == ["sopline-audit"]


@needs("audit")
def test_audit_updates_the_open_issue_in_place(gh, audit_opened, pull_request, tmp_path):
    restore(gh, audit_opened)
    run_action(audit_inputs(), with_missing_sops(pull_request, tmp_path / "ws", "new-runbook", "second-runbook"),
               tmp_path, gh, event_name="schedule")
    assert not gh.calls("POST")
    (patch,) = gh.calls("PATCH")
    assert patch[1] == f"/repos/{REPO}/issues/1" and "state" not in patch[2]
    (issue,) = gh.issues
    assert "second-runbook" in issue["body"] and issue["state"] == "open"


@needs("audit")
def test_a_clean_audit_closes_the_issue(gh, audit_opened, pull_request, tmp_path):
    restore(gh, audit_opened)
    run = run_action(audit_inputs(), pull_request.checkout(tmp_path / "ws"), tmp_path, gh, event_name="schedule")
    assert run.returncode == 0, run.log
    assert run.outputs["findings"] == "0"
    (issue,) = gh.issues
    assert issue["state"] == "closed" and issue["state_reason"] == "completed"
    assert "Closing" in gh.comments[1][0]["body"]


@needs("audit")
def test_a_clean_audit_opens_no_issue(gh, pull_request, tmp_path):
    run = run_action(audit_inputs(), pull_request.checkout(tmp_path / "ws"), tmp_path, gh, event_name="schedule")
    assert run.returncode == 0, run.log
    assert not gh.issues and not gh.calls("POST")


# -- `sopline publish` directly ----------------------------------------------------

def publish(tmp_path: Path, server: FakeGitHub, *args: str, event: dict | None = None, token: str = TOKEN,
            **env):
    """`sopline publish ...` in this process (the server runs on a thread of it)."""
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(event or {}))
    environ = {"GITHUB_TOKEN": token, "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": server.url,
               "GITHUB_EVENT_PATH": str(event_path), "GITHUB_STEP_SUMMARY": None, "GITHUB_OUTPUT": None,
               "GITHUB_SERVER_URL": None, "GITHUB_RUN_ID": None, "SOPLINE_GITHUB_AUTHOR": None, **env}
    return CliRunner().invoke(sopline_main, ["publish", *args], env=environ)


def report(tmp_path: Path, text: str = "## SOP changes\n\n1 SOP changed.\n") -> str:
    path = tmp_path / "report.md"
    path.write_text(text)
    return str(path)


def test_the_pr_number_comes_from_a_workflow_run_event(gh, tmp_path):
    event = {"workflow_run": {"pull_requests": [{"number": 12}]}}
    done = publish(tmp_path, gh, "comment", "--marker", "diff", "--body-file", report(tmp_path), event=event)
    assert done.exit_code == 0, done.stderr
    assert len(gh.comments[12]) == 1


def test_an_untrusted_pr_number_must_be_an_integer(gh, tmp_path):
    done = publish(tmp_path, gh, "comment", "--marker", "diff", "--body-file", report(tmp_path),
                   "--pr", "7; touch /tmp/x")
    assert done.exit_code == 2
    assert done.stderr.count("\n") == 1 and "positive integer" in done.stderr
    assert not gh.requests


def test_a_report_for_another_commit_is_not_posted(gh, tmp_path):
    gh.pulls[7] = "a" * 40
    done = publish(tmp_path, gh, "comment", "--marker", "diff", "--body-file", report(tmp_path), "--pr", "7",
                   "--expect-head-sha", "b" * 40)
    assert done.exit_code == 1 and "refusing" in done.stderr
    assert not gh.calls("POST")


def test_the_comment_is_found_on_a_later_page(gh, tmp_path):
    for i in range(150):
        gh.add_comment(7, f"review {i}", "alice")
    gh.add_comment(7, "<!-- sopline:diff -->\nold report", BOT)
    for i in range(30):
        gh.add_comment(7, f"more {i}", "bob")
    done = publish(tmp_path, gh, "comment", "--marker", "diff", "--body-file", report(tmp_path), "--pr", "7")
    assert done.exit_code == 0, done.stderr
    assert len(gh.calls("GET", r"/comments$")) == 2
    assert not gh.calls("POST") and len(gh.calls("PATCH")) == 1
    assert gh.comments[7][150]["body"].endswith("1 SOP changed.\n")


def test_the_token_never_follows_a_pagination_link_to_another_host(gh, tmp_path):
    for i in range(120):
        gh.add_comment(7, f"review {i}", "alice")
    gh.link_base = "http://127.0.0.2:9"
    done = publish(tmp_path, gh, "comment", "--marker", "diff", "--body-file", report(tmp_path), "--pr", "7")
    assert done.exit_code == 1 and "refusing to send the token to 127.0.0.2:9" in done.stderr
    assert len(gh.calls("GET", r"/comments$")) == 1 and not gh.calls("POST")


def test_a_long_report_is_cut_to_githubs_limit_with_a_note(gh, tmp_path):
    rows = "".join(f"| step {i} | changed | {'é' * 40} |\n" for i in range(3000))
    body = "<details><summary>details</summary>\n\n```text\n" + rows + "```\n</details>\n"
    done = publish(tmp_path, gh, "comment", "--marker", "diff", "--body-file", report(tmp_path, body), "--pr", "7")
    assert done.exit_code == 0, done.stderr
    posted = gh.comments[7][0]["body"]
    assert len(posted) <= MAX_BODY and posted.startswith("<!-- sopline:diff -->")
    assert "Report truncated" in posted and "job summary" in posted
    assert posted.count("```") % 2 == 0 and posted.count("<details>") == posted.count("</details>")


def test_errors_are_one_line_and_never_show_the_token(gh, tmp_path):
    done = publish(tmp_path, gh, "comment", "--marker", "diff", "--body-file", report(tmp_path), "--pr", "7",
                   token="ghs_wrong" + TOKEN)
    assert done.exit_code == 1
    assert done.stderr.count("\n") == 1 and "HTTP 401 Bad credentials" in done.stderr
    assert TOKEN not in done.stdout + done.stderr


def test_a_missing_token_is_a_usage_error(gh, tmp_path):
    done = publish(tmp_path, gh, "comment", "--marker", "diff", "--body-file", report(tmp_path), "--pr", "7",
                   token="")
    assert done.exit_code == 2 and "GITHUB_TOKEN" in done.stderr
    assert not gh.requests


def test_a_symlinked_report_is_refused(gh, tmp_path):
    secret = tmp_path / "environ"
    secret.write_text(f"GITHUB_TOKEN={TOKEN}\n")
    (tmp_path / "report.md").symlink_to(secret)
    done = publish(tmp_path, gh, "comment", "--marker", "diff", "--body-file", str(tmp_path / "report.md"),
                   "--pr", "7")
    assert done.exit_code == 2 and "symbolic link" in done.stderr
    assert not gh.requests


def test_pull_requests_in_the_issue_list_are_not_the_tracking_issue(gh, tmp_path):
    gh.add_issue("a PR", "<!-- sopline:audit -->\n", BOT, ["sopline-audit"], pull_request=True)
    done = publish(tmp_path, gh, "issue", "--marker", "audit", "--title", "SOP audit findings",
                   "--body-file", report(tmp_path))
    assert done.exit_code == 0, done.stderr
    assert len(gh.issues) == 2 and gh.issues[0]["body"] == "<!-- sopline:audit -->\n"
    assert gh.issues[1]["body"].startswith("<!-- sopline:audit -->\n## SOP changes")


def test_an_issue_by_another_user_is_not_closed(gh, tmp_path):
    theirs = gh.add_issue("SOP audit findings", "<!-- sopline:audit -->\nmine", "mallory", ["sopline-audit"])
    done = publish(tmp_path, gh, "issue", "--marker", "audit", "--title", "t", "--body-file", report(tmp_path),
                   "--clean")
    assert done.exit_code == 0, done.stderr
    assert theirs["state"] == "open" and not gh.calls("PATCH")


def test_outputs_survive_line_breaks_and_lookalike_delimiters(tmp_path):
    out = tmp_path / "output.txt"
    out.touch()
    value = "first line\nghadelimiter_x\nchanged=999"
    write_outputs({"report": value, "changed": "3"}, env={"GITHUB_OUTPUT": str(out)})
    assert parse_output_file(out) == {"report": value, "changed": "3"}


def test_counts_come_from_the_report_json(gh, tmp_path):
    (tmp_path / "audit.json").write_text(json.dumps({"schema_version": 1, "findings": [{}, {}, {}]}))
    out = tmp_path / "output.txt"
    out.touch()
    done = publish(tmp_path, gh, "outputs", "a=b", "--count", f"findings={tmp_path / 'audit.json'}:findings",
                   GITHUB_OUTPUT=str(out))
    assert done.exit_code == 0, done.stderr
    assert parse_output_file(out) == {"a": "b", "findings": "3"}


def test_a_log_fence_cannot_be_closed_by_the_log():
    block = fenced("name: ```` tricky\n")
    assert block.startswith("`````text\n") and block.endswith("\n`````\n")


def test_a_short_report_is_not_cut():
    assert fit_body("x" * MAX_BODY) == "x" * MAX_BODY
