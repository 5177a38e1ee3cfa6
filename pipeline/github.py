"""Posting sopline reports to GitHub: one PR comment, one tracking issue, the job summary.

A report is posted once and then edited in place, so a pull request carries ONE
sopline comment however often it is pushed to, and the audit keeps ONE open
issue. The post is found again by a hidden marker (``<!-- sopline:NAME -->``)
AND by its author: a comment anyone can write, so only one written by the
token's own user is ever edited (a reviewer quoting the marker is left alone).

The client is the standard library's urllib (no new dependency) and speaks the
few REST endpoints needed. The token goes only into the Authorization header
of requests to the configured API host (never across a redirect, never into a
message), and every failure is one line.
"""
from __future__ import annotations

import json
import os
import re
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
WORKFLOW_BOT = "github-actions[bot]"  # the login behind the workflow's GITHUB_TOKEN
MAX_BODY = 65536  # GitHub refuses longer comment and issue bodies
MAX_SUMMARY_BYTES = 1024 * 1024  # GitHub's limit for one step's job summary
MAX_REPORT_BYTES = 4 * 1024 * 1024  # read no more of a report file than this
MAX_PAGES = 100  # 10,000 comments or issues; more means something is wrong
_MARKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OUTPUT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_PR_NUMBER = re.compile(r"[0-9]{1,10}")


class GitHubError(Exception):
    """A GitHub request or setting failed; the message is one line without the token."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ConfigError(GitHubError):
    """Something the caller must supply is missing or malformed (exit status 2)."""


@dataclass(frozen=True)
class Posted:
    """What a publish did: created | updated | closed | none, and the thing's id and page."""

    action: str
    id: int | None = None
    url: str | None = None


# -- bodies -------------------------------------------------------------------

def marker_tag(name: str) -> str:
    """The hidden HTML comment that identifies one kind of sopline post."""
    if not _MARKER_NAME.fullmatch(name or ""):
        raise ConfigError(f"marker {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return f"<!-- sopline:{name} -->"


def _units(text: str) -> int:
    """Length in UTF-16 code units: never less than GitHub's character count."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def fit_body(text: str, limit: int = MAX_BODY, where: str | None = None) -> str:
    """``text`` cut at a line to fit ``limit`` characters, with a note saying so.

    Open code fences and <details> blocks are closed so the note stays visible."""
    if _units(text) <= limit:
        return text
    total = len(text)
    note = (f"\n\n> **Report truncated** to fit GitHub's {limit}-character limit"
            f" ({{shown}} of {total} characters shown). "
            f"{('The full report: ' + where) if where else 'The full report is in the job summary.'}\n")
    budget = limit - _units(note) - 200  # 200: the closers below and the {shown} figure
    cut = text[:budget]
    while _units(cut) > budget:  # astral characters count twice
        cut = cut[: len(cut) - (_units(cut) - budget)]
    if "\n" in cut:
        cut = cut[: cut.rindex("\n")]
    closers = ""
    if sum(1 for ln in cut.splitlines() if ln.lstrip().startswith("```")) % 2:
        closers += "\n```"
    open_details = cut.count("<details") - cut.count("</details>")
    closers += "\n</details>" * max(0, min(open_details, 20))
    return cut + closers + note.replace("{shown}", str(len(cut)))


def with_marker(body: str, tag: str) -> str:
    """The body with the marker as its first line (and nowhere else)."""
    return f"{tag}\n{body.replace(tag, '')}"


def read_report(path: Path) -> str:
    """A report file's text. Refuses a symlink or anything but a regular file, since a
    report may come from an untrusted artifact (a link to /proc/self/environ would
    otherwise post this process's environment); reads at most MAX_REPORT_BYTES."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        reason = "a symbolic link (refused)" if path.is_symlink() else (exc.strerror or str(exc))
        raise ConfigError(f"{path}: {reason}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ConfigError(f"{path}: not a regular file")
        data = f.read(MAX_REPORT_BYTES + 1)
    return data[:MAX_REPORT_BYTES].decode("utf-8", "replace")  # far over MAX_BODY: fit_body cuts it


# -- the client ---------------------------------------------------------------

class GitHub:
    """A minimal GitHub REST client bound to one repository."""

    def __init__(self, token: str, repository: str, api_url: str = DEFAULT_API_URL, timeout: float = 30.0):
        if not token:
            raise ConfigError("no GitHub token (set GITHUB_TOKEN)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository or ""):
            raise ConfigError(f"repository {repository!r}: expected OWNER/NAME (GITHUB_REPOSITORY)")
        parts = urllib.parse.urlsplit(api_url or DEFAULT_API_URL)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ConfigError(f"API URL {api_url!r}: expected http(s)://host[/path] (GITHUB_API_URL)")
        self._token = token
        self.repository = repository
        self.api_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self._opener = urllib.request.build_opener()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, token_env: str = "GITHUB_TOKEN",
                 repository: str | None = None, api_url: str | None = None) -> GitHub:
        env = os.environ if env is None else env
        token = env.get(token_env, "")
        if not token:
            raise ConfigError(f"no GitHub token: the environment variable {token_env} is not set")
        return cls(token, repository or env.get("GITHUB_REPOSITORY", ""),
                   api_url or env.get("GITHUB_API_URL") or DEFAULT_API_URL)

    def _scrub(self, text: str) -> str:
        return " ".join(str(text).replace(self._token, "***").split())

    def _url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        url = path if path.startswith(("http://", "https://")) else self.api_url + path
        if not url.startswith(self.api_url + "/"):
            raise GitHubError(f"refusing to send the token to {urllib.parse.urlsplit(url).netloc}")
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        return url

    def request(self, method: str, path: str, body: Any = None,
                params: Mapping[str, Any] | None = None) -> tuple[Any, Mapping[str, str]]:
        """One API call: (decoded JSON or None, response headers). Idempotent GETs are
        retried twice on a server error or a dropped connection."""
        url = self._url(path, params)
        data = None if body is None else json.dumps(body).encode("utf-8")
        shown = urllib.parse.urlsplit(url).path
        for attempt in range(3 if method == "GET" else 1):
            req = urllib.request.Request(url, data=data, method=method)
            req.add_header("Accept", "application/vnd.github+json")
            req.add_header("X-GitHub-Api-Version", API_VERSION)
            req.add_header("User-Agent", f"sopline/{__version__}")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            req.add_unredirected_header("Authorization", f"Bearer {self._token}")
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    return (json.loads(raw) if raw.strip() else None), resp.headers
            except urllib.error.HTTPError as exc:
                if exc.code >= 500 and attempt < 2 and method == "GET":
                    time.sleep(1 + attempt)
                    continue
                raise GitHubError(f"GitHub API {method} {shown}: HTTP {exc.code} "
                                  f"{self._scrub(_error_message(exc))}", exc.code) from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if attempt < 2 and method == "GET" and not isinstance(exc, ValueError):
                    time.sleep(1 + attempt)
                    continue
                reason = getattr(exc, "reason", exc)
                raise GitHubError(f"GitHub API {method} {shown}: {self._scrub(reason)}") from None
        raise AssertionError("unreachable")

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Every item of a list endpoint, following the Link: rel="next" pages."""
        url: str | None = self._url(path, {**(params or {}), "per_page": 100})
        for _ in range(MAX_PAGES):
            items, headers = self.request("GET", url)
            if not isinstance(items, list):
                raise GitHubError(f"GitHub API GET {path}: expected a list")
            yield from (i for i in items if isinstance(i, dict))
            url = _next_link(headers.get("Link", ""))
            if url is None:
                return
        raise GitHubError(f"GitHub API GET {path}: more than {MAX_PAGES} pages")

    def own_login(self, override: str | None = None) -> str:
        """The login that posts with this token. A workflow's GITHUB_TOKEN may not call
        GET /user (403); its posts are by github-actions[bot]. A GitHub App token posts as
        '<app>[bot]': pass that as ``override``."""
        if override:
            return override
        try:
            user, _ = self.request("GET", "/user")
        except GitHubError as exc:
            if exc.status in (401, 403, 404):
                return WORKFLOW_BOT
            raise
        login = (user or {}).get("login") if isinstance(user, dict) else None
        return login or WORKFLOW_BOT


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(exc.read(65536) or b"{}")
    except (ValueError, OSError):
        return exc.reason or ""
    if not isinstance(doc, dict):
        return exc.reason or ""
    message = str(doc.get("message") or exc.reason or "")
    details = [e.get("message") or e.get("code") for e in doc.get("errors") or [] if isinstance(e, dict)]
    if details:
        message += ": " + "; ".join(str(d) for d in details if d)
    if exc.code == 403 and exc.headers.get("X-RateLimit-Remaining") == "0":
        message += " (rate limit exhausted)"
    return message


def _next_link(header: str) -> str | None:
    for part in header.split(","):
        m = re.fullmatch(r'\s*<([^>]+)>\s*;\s*rel="?next"?\s*', part)
        if m:
            return m.group(1)
    return None


def _same_user(item: dict, login: str) -> bool:
    user = item.get("user") if isinstance(item.get("user"), dict) else {}
    return str(user.get("login", "")).lower() == login.lower()


# -- what sopline posts ---------------------------------------------------------

def upsert_pr_comment(gh: GitHub, pr: int, body: str, marker: str, author: str | None = None,
                      expect_head_sha: str | None = None, where: str | None = None) -> Posted:
    """Create the PR's sopline comment, or edit it in place if this token's user made it.

    ``expect_head_sha`` (from a trusted workflow_run event) refuses to post when the PR
    number (from an untrusted artifact) names a PR whose head is another commit."""
    tag = marker_tag(marker)
    if expect_head_sha:
        pull, _ = gh.request("GET", f"/repos/{gh.repository}/pulls/{pr}")
        head = ((pull or {}).get("head") or {}).get("sha") if isinstance(pull, dict) else None
        if head != expect_head_sha:
            raise GitHubError(f"PR #{pr}: its head is {head or 'unknown'}, not {expect_head_sha}; "
                              "refusing to post a report made for another commit")
    text = fit_body(with_marker(body, tag), where=where)
    login = gh.own_login(author)
    for comment in gh.paginate(f"/repos/{gh.repository}/issues/{pr}/comments"):
        if tag in str(comment.get("body") or "") and _same_user(comment, login):
            done, _ = gh.request("PATCH", f"/repos/{gh.repository}/issues/comments/{int(comment['id'])}",
                                 {"body": text})
            return Posted("updated", int(comment["id"]), (done or {}).get("html_url"))
    done, _ = gh.request("POST", f"/repos/{gh.repository}/issues/{pr}/comments", {"body": text})
    return Posted("created", (done or {}).get("id"), (done or {}).get("html_url"))


def upsert_tracking_issue(gh: GitHub, title: str, body: str, marker: str, clean: bool,
                          label: str = "sopline-audit", author: str | None = None,
                          where: str | None = None) -> Posted:
    """Keep ONE open issue with the report: open it on findings, edit it on later runs,
    and close it (report as its last body, plus a closing comment) once clean. A clean
    run with no open issue does nothing; findings after a close open a new issue."""
    tag = marker_tag(marker)
    text = fit_body(with_marker(body, tag), where=where)
    login = gh.own_login(author)
    params = {"state": "open", "sort": "created", "direction": "asc"}
    if label:
        params["labels"] = label
    existing = next((i for i in gh.paginate(f"/repos/{gh.repository}/issues", params)
                     if "pull_request" not in i and tag in str(i.get("body") or "") and _same_user(i, login)),
                    None)
    if existing is None:
        if clean:
            return Posted("none")
        fields: dict[str, Any] = {"title": title, "body": text}
        if label:
            fields["labels"] = [label]
        done, _ = gh.request("POST", f"/repos/{gh.repository}/issues", fields)
        return Posted("created", (done or {}).get("number"), (done or {}).get("html_url"))
    number = int(existing["number"])
    if clean:
        gh.request("POST", f"/repos/{gh.repository}/issues/{number}/comments",
                   {"body": f"{tag}\nThe sopline audit is clean: no findings. Closing."})
        done, _ = gh.request("PATCH", f"/repos/{gh.repository}/issues/{number}",
                             {"title": title, "body": text, "state": "closed", "state_reason": "completed"})
        return Posted("closed", number, (done or {}).get("html_url"))
    done, _ = gh.request("PATCH", f"/repos/{gh.repository}/issues/{number}", {"title": title, "body": text})
    return Posted("updated", number, (done or {}).get("html_url"))


# -- the workflow run's context and files -----------------------------------------

def parse_pr_number(value: Any) -> int:
    """A PR number from text that may be untrusted: digits only, 1..9999999999."""
    text = str(value).strip()
    if not _PR_NUMBER.fullmatch(text) or int(text) == 0:
        raise ConfigError(f"PR number {text[:40]!r}: expected a positive integer")
    return int(text)


def pr_number_from_event(env: Mapping[str, str] | None = None) -> int | None:
    """The PR of the event in GITHUB_EVENT_PATH: pull_request.number, else the first of
    workflow_run.pull_requests (empty for fork PRs: pass the number explicitly there)."""
    env = os.environ if env is None else env
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return None
    try:
        event = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the event ({exc.__class__.__name__})") from None
    if not isinstance(event, dict):
        return None
    candidates = [(event.get("pull_request") or {}).get("number")]
    prs = (event.get("workflow_run") or {}).get("pull_requests") or []
    if prs and isinstance(prs[0], dict):
        candidates.append(prs[0].get("number"))
    if isinstance(event.get("issue"), dict) and event["issue"].get("pull_request"):
        candidates.append(event["issue"].get("number"))
    for c in candidates:
        if c is not None:
            return parse_pr_number(c)
    return None


def run_url(env: Mapping[str, str] | None = None) -> str | None:
    """This workflow run's page, where the full report sits in the job summary."""
    env = os.environ if env is None else env
    server, repo, run = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


def fenced(text: str, info: str = "text") -> str:
    """``text`` as a Markdown code block whose fence no line of it can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}\n"


def append_step_summary(text: str, env: Mapping[str, str] | None = None) -> bool:
    """Append Markdown to the job summary (GITHUB_STEP_SUMMARY), cut to GitHub's 1 MiB.
    False when not running in a workflow."""
    env = os.environ if env is None else env
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    data = text if text.endswith("\n") else text + "\n"
    if len(data.encode("utf-8")) > MAX_SUMMARY_BYTES:
        data = fit_body(data, limit=MAX_SUMMARY_BYTES // 4, where=None)  # 4: worst-case bytes a character
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
    return True


def write_outputs(values: Mapping[str, str], env: Mapping[str, str] | None = None) -> bool:
    """Write step outputs to GITHUB_OUTPUT; a value with a line break uses the
    ``name<<DELIMITER`` form with a delimiter that does not occur in it."""
    env = os.environ if env is None else env
    path = env.get("GITHUB_OUTPUT")
    for key in values:
        if not _OUTPUT_KEY.fullmatch(key):
            raise ConfigError(f"output name {key!r}: use letters, digits, '_' or '-'")
    if not path:
        return False
    lines = []
    for key, value in values.items():
        value = str(value)
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            while delimiter in value:
                delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            lines.append(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            lines.append(f"{key}={value}\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))
    return True


def json_count(path: Path, field: str) -> int:
    """A count from a report's JSON: an integer field as is, a list field by its length."""
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc.__class__.__name__})") from None
    value = doc.get(field) if isinstance(doc, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, list)):
        raise ConfigError(f"{path}: no integer or list field {field!r}")
    return len(value) if isinstance(value, list) else value
