"""`sopline publish`: post a report to GitHub (one PR comment, one tracking issue) and
hand results to the workflow (job summary, step outputs). A thin layer over github.py."""
from __future__ import annotations

from pathlib import Path

import click

from . import github
from .github import ConfigError, GitHubError


class _Failed(click.ClickException):
    """One line, exit 1 (GitHub refused or could not be reached) or 2 (bad settings)."""

    def __init__(self, exc: GitHubError):
        super().__init__(str(exc))
        self.exit_code = 2 if isinstance(exc, ConfigError) else 1

    def show(self, file=None) -> None:
        click.echo(f"sopline publish: error: {self.format_message()}", err=True)


def _client(token_env: str, repo: str | None, api_url: str | None) -> github.GitHub:
    return github.GitHub.from_env(token_env=token_env, repository=repo, api_url=api_url)


def _connection_options(f):
    f = click.option("--author", envvar="SOPLINE_GITHUB_AUTHOR", default=None, metavar="LOGIN",
                     help="Login whose post may be edited (default: the token's user; "
                          "github-actions[bot] when the token cannot ask).")(f)
    f = click.option("--api-url", default=None, help="REST API base (default: $GITHUB_API_URL or "
                     f"{github.DEFAULT_API_URL}).")(f)
    f = click.option("--repo", default=None, metavar="OWNER/NAME",
                     help="Repository (default: $GITHUB_REPOSITORY).")(f)
    f = click.option("--token-env", default="GITHUB_TOKEN", show_default=True, metavar="VAR",
                     help="Environment variable holding the token (the token itself is never an argument).")(f)
    return f


_body_file = click.option("--body-file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                          help="Markdown report to post (e.g. from `sopline diff --markdown`).")
_marker = click.option("--marker", required=True, metavar="NAME",
                       help="Names the post: <!-- sopline:NAME --> finds it again on later runs.")


@click.group("publish")
def publish_command() -> None:
    """Post reports to GitHub and to the workflow run (comment, issue, summary, outputs)."""


@publish_command.command("comment")
@_marker
@_body_file
@click.option("--pr", default=None, metavar="N", help="Pull request number (default: from the event in "
              "$GITHUB_EVENT_PATH; required for fork PRs under workflow_run).")
@click.option("--expect-head-sha", default=None, metavar="SHA",
              help="Post only if the PR's head commit is SHA (guards a PR number read from an artifact).")
@_connection_options
def comment_command(marker, body_file, pr, expect_head_sha, author, api_url, repo, token_env) -> None:
    """Create or update this workflow's ONE comment on a pull request."""
    try:
        number = github.parse_pr_number(pr) if pr is not None else github.pr_number_from_event()
        if number is None:
            raise ConfigError("no pull request: the event has none; pass --pr N")
        body = github.read_report(body_file)
        gh = _client(token_env, repo, api_url)
        posted = github.upsert_pr_comment(gh, number, body, marker, author=author,
                                          expect_head_sha=expect_head_sha, where=github.run_url())
    except GitHubError as exc:
        raise _Failed(exc) from None
    click.echo(f"{posted.action} comment on PR #{number}" + (f": {posted.url}" if posted.url else ""), err=True)


@publish_command.command("issue")
@_marker
@click.option("--title", required=True, help="Issue title.")
@_body_file
@click.option("--clean", is_flag=True, help="The report has no findings: close the open issue, open none.")
@click.option("--label", default="sopline-audit", show_default=True,
              help="Label given to the issue and used to find it again ('' for none).")
@_connection_options
def issue_command(marker, title, body_file, clean, label, author, api_url, repo, token_env) -> None:
    """Open, update, or (with --clean) close the ONE tracking issue for MARKER."""
    try:
        body = github.read_report(body_file)
        gh = _client(token_env, repo, api_url)
        posted = github.upsert_tracking_issue(gh, title, body, marker, clean, label=label, author=author,
                                              where=github.run_url())
    except GitHubError as exc:
        raise _Failed(exc) from None
    what = {"none": "no open issue and nothing to report"}.get(posted.action, f"{posted.action} issue #{posted.id}")
    click.echo(what + (f": {posted.url}" if posted.url else ""), err=True)


@publish_command.command("summary")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--title", default=None, help="A heading put above the file's text.")
@click.option("--code", is_flag=True, help="Show the file as a code block (for logs).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the Markdown to this file.")
def summary_command(file, title, code, out) -> None:
    """Append FILE (Markdown) to the job summary ($GITHUB_STEP_SUMMARY)."""
    try:
        text = github.read_report(file)
    except GitHubError as exc:
        raise _Failed(exc) from None
    markdown = (f"### {title}\n\n" if title else "") + (github.fenced(text) if code else text)
    if out is not None:
        out.write_text(markdown, "utf-8")
    if not github.append_step_summary(markdown):
        click.echo("GITHUB_STEP_SUMMARY is not set; no job summary written", err=True)


@publish_command.command("outputs")
@click.argument("pairs", nargs=-1, metavar="NAME=VALUE...")
@click.option("--count", "counts", multiple=True, metavar="NAME=FILE:FIELD",
              help="Output NAME = a JSON report's FIELD (an integer, or a list's length).")
def outputs_command(pairs, counts) -> None:
    """Set step outputs in $GITHUB_OUTPUT (values may span lines)."""
    values: dict[str, str] = {}
    try:
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ConfigError(f"{pair[:60]!r}: expected NAME=VALUE")
            values[key] = value
        for spec in counts:
            key, sep, rest = spec.partition("=")
            path, colon, field = rest.rpartition(":")
            if not sep or not colon or not path:
                raise ConfigError(f"--count {spec[:60]!r}: expected NAME=FILE:FIELD")
            values[key] = str(github.json_count(Path(path), field))
        if not github.write_outputs(values):
            click.echo("GITHUB_OUTPUT is not set; outputs: " + ", ".join(f"{k}={v!r}" for k, v in values.items()),
                       err=True)
    except GitHubError as exc:
        raise _Failed(exc) from None

