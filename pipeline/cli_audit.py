"""`sopline audit` and `sopline review`: thin click layers over pipeline.audit and pipeline.review."""
from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import click

from .audit import DEFAULT_MAX_AGE_DAYS, SEVERITIES, audit, to_json, to_markdown
from .fsutil import atomic_write_bytes
from .review import ReviewError, ReviewTargetError, review

_DAY = click.DateTime(formats=["%Y-%m-%d"])


@click.command("audit")
@click.option("--sops", default="sops", show_default=True, type=click.Path(path_type=Path),
              help="The SOP tree (a `sopline build` output folder, with index.json).")
@click.option("--recordings", default=".", show_default=True, type=click.Path(path_type=Path),
              help="The folder the SOPs were built from; index.json sources are relative to it.")
@click.option("--max-age", type=click.IntRange(1, 36500), default=DEFAULT_MAX_AGE_DAYS, show_default=True,
              help="Review interval in days for SOPs whose sidecar sets no review_every_days.")
@click.option("--fail-on", type=click.Choice([*SEVERITIES, "never"]), default="medium", show_default=True,
              help="Exit 1 when a finding has this severity or worse.")
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the Markdown report to FILE.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON report to FILE.")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True,
              help="Format printed on standard output.")
@click.option("--today", type=_DAY, default=None, help="Audit as of this day, YYYY-MM-DD (default: today, UTC).")
@click.option("--model", default=None,
              help="The speech model the library is built with, as given to `sopline build --model` "
                   "(default: the bundled tiny.en); SOPs built with another are reported as model drift.")
def audit_command(sops, recordings, max_age, fail_on, markdown_file, json_file, fmt, today, model) -> None:
    """Report stale, missing, orphaned, overdue, invalid and drifting SOPs.

    Severities, lowest first: info, low, medium, high. Exit 0 when no finding
    reaches --fail-on, 1 otherwise, 2 on usage errors.
    """
    if not sops.is_dir():
        raise click.UsageError(f"--sops {sops}: no such folder (build the SOPs first)")
    if not recordings.is_dir():
        raise click.UsageError(f"--recordings {recordings}: no such folder")
    label = None
    if model:
        from .transcribe import TranscribeError, resolve_model

        try:
            label = resolve_model(model).label
        except TranscribeError as exc:
            raise click.UsageError(str(exc)) from exc
    as_of = today.date() if today else _utc_today()
    report = audit(sops, recordings, as_of, max_age, model_label=label)
    md, js = to_markdown(report), to_json(report)
    try:
        if markdown_file:
            atomic_write_bytes(markdown_file, md.encode("utf-8"))
        if json_file:
            atomic_write_bytes(json_file, js.encode("utf-8"))
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror or exc}") from exc
    click.echo(md if fmt == "md" else js, nl=False)
    failing = () if fail_on == "never" else report.at_or_above(fail_on)
    sys.exit(1 if failing else 0)


@click.command("review")
@click.argument("sop", type=click.Path(path_type=Path))
@click.option("--by", required=True, help="Who reviewed the SOP (a name or team).")
@click.option("--date", "day", type=_DAY, default=None, help="Day of the review, YYYY-MM-DD (default: today, UTC).")
@click.option("--recordings", type=click.Path(path_type=Path), default=None,
              help="The folder the SOPs were built from (default: found from the current folder "
                   "and the folders above the SOP tree, as `sopline edit` does).")
def review_command(sop, by, day, recordings) -> None:
    """Record that SOP was reviewed, in its recording's sidecar (last_reviewed).

    SOP is an SOP folder, its sop.json, the recording or its sidecar. The
    sidecar keeps its comments, key order and quoting; it is created if absent.
    """
    on = day.date() if day else _utc_today()
    if on > _utc_today():
        raise click.UsageError(f"--date {on.isoformat()} is in the future")
    if recordings is not None and not recordings.is_dir():
        raise click.UsageError(f"--recordings {recordings}: no such folder")
    try:
        done = review(sop, by, on, recordings)
    except ReviewTargetError as exc:
        raise click.UsageError(str(exc)) from exc
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or sop}: {exc.strerror or exc}") from exc
    verb = "created" if done.created else "updated"
    click.echo(f"{done.sidecar}: {verb}, last reviewed {done.date} by {done.by}", err=True)


def _utc_today() -> date:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).date()
