"""The `sopline` command: a thin layer over the library API.

Commands that live beside their library modules are imported only when run, so
light commands (`publish`, `steps`) start fast in CI instead of paying for the
video and speech stack on every call.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__


def _read_glossary(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--glossary") from exc
    return tuple(dict.fromkeys(ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")))


class _Progress:
    """Per recording and per stage: a live line on a terminal, plain log lines otherwise."""

    def __init__(self, total: int | None = None):
        self.live = sys.stderr.isatty()
        self.current = ""

    def __call__(self, event: str, **info) -> None:
        rec = info.get("recording", "")
        if event == "recording":
            self.current = rec
            self._say(f"{rec}: starting")
        elif event == "stage":
            self._say(f"{rec}: {info['stage']}")
        elif event == "done":
            self._say(f"{rec}: {info['steps']} steps", final=True)
        elif event == "failed":
            self._say(f"{rec}: failed", final=True)
        elif event == "skipped":
            self._say(f"{rec}: unchanged, skipped")

    def _say(self, text: str, final: bool = False) -> None:
        if self.live:
            click.echo("\r\033[K" + text, nl=final, err=True)
        else:
            click.echo(text, err=True)

    def clear(self) -> None:
        if self.live:
            click.echo("\r\033[K", nl=False, err=True)


# Commands implemented beside their library modules: name -> "module:attribute".
_LAZY_COMMANDS = {
    "audit": "pipeline.cli_audit:audit_command",
    "review": "pipeline.cli_audit:review_command",
    "diff": "pipeline.cli_diff:diff_command",
    "steps": "pipeline.cli_edit:steps_command",
    "edit": "pipeline.cli_edit:edit_command",
    "publish": "pipeline.cli_publish:publish_command",
}


class _LazyGroup(click.Group):
    """A group whose commands in _LAZY_COMMANDS are imported on first use."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(_LAZY_COMMANDS))

    def get_command(self, ctx, name):
        if name in _LAZY_COMMANDS and name not in self.commands:
            import importlib

            module, attr = _LAZY_COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="sopline")
def main() -> None:
    """Turn narrated screen recordings into Standard Operating Procedures."""


class _ShardType(click.ParamType):
    name = "I/N"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from .build import parse_shard

        try:
            return parse_shard(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@main.command("build")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for the SOPs and index.json.")
@click.option("--model", default=None, help="Speech model: a local CTranslate2 folder or a model name "
              "(a name may be downloaded). Default: the bundled tiny.en.")
@click.option("--glossary", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="File with one domain term a line (kubectl, terraform...) to bias recognition.")
@click.option("--threads", type=click.IntRange(0, 256), default=0,
              help="CPU threads for speech (0: one for the bundled tiny.en, else all cores, shared out "
                   "among --jobs).")
@click.option("--max-duration", "max_duration", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Refuse recordings longer than this, before decoding them.")
@click.option("--force", is_flag=True, help="Rebuild every recording, even those unchanged since the last build.")
@click.option("--shard", type=_ShardType(), default=None,
              help="Build only the I-th of N stable shares of the recordings (CI matrix); see `sopline merge`.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=1,
              help="Recordings built in parallel, each in its own process (default 1).")
def build_command(paths, out, model, glossary, threads, max_duration, force, shard, jobs) -> None:
    """Build an SOP for every recording in PATHS (files or folders, searched recursively).

    Recordings unchanged since the last build into OUT (same bytes, sidecar, edits,
    settings and sopline version, per OUT/index.json) are skipped.
    """
    from .build import VIDEO_SUFFIXES, BuildSettings, build, discover

    settings = BuildSettings(model=model, glossary=_read_glossary(glossary), cpu_threads=threads,
                             max_duration_s=max_duration)
    if not discover(list(paths), out):
        raise click.UsageError("no recordings found (looked for " + " ".join(VIDEO_SUFFIXES) + ")")
    from .luma import compiled_kernel_available

    if not compiled_kernel_available():  # say why a build is slower than it should be
        click.echo("note: sopline was installed without its compiled frame-analysis kernel (no C compiler "
                   "or Python headers at install); numpy gives the same SOPs with 3-4x the analysis CPU", err=True)
    progress = _Progress()
    try:
        report = build(list(paths), out, settings, progress, force=force, shard=shard, jobs=jobs)
    except Exception as exc:  # a failure outside any one recording (e.g. the model)
        progress.clear()
        raise click.ClickException(str(exc)) from exc
    progress.clear()
    for r in report.results:
        for w in r.warnings:
            click.echo(f"warning: {r.recording.source}: {w}", err=True)
        if not r.ok:
            click.echo(f"error: {r.recording.path}: {r.message}", err=True)
    total, failed, skipped = len(report.results), len(report.failed), len(report.skipped)
    parts = [f"built {total - failed - skipped}"]
    if skipped:
        parts.append(f"{skipped} unchanged")
    if failed:
        parts.append(f"{failed} failed")
    where = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    click.echo(f"{', '.join(parts)} of {total} recording(s){where} into {out}", err=True)
    sys.exit(1 if report.failed else 0)


@main.command("merge")
@click.argument("shards", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The combined output folder.")
def merge_command(shards, out) -> None:
    """Combine the outputs of `sopline build --shard I/N` runs (SHARDS) into OUT."""
    from .build import BuildError
    from .merge import MergeError, merge

    try:
        report = merge(list(shards), out)
    except (MergeError, BuildError) as exc:
        raise click.ClickException(str(exc)) from exc
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    for key in report.failed:
        click.echo(f"error: {key}: failed in its shard", err=True)
    click.echo(f"merged {len(report.copied)} SOP(s) from {len(shards)} shard(s) into {out}", err=True)
    sys.exit(1 if report.failed else 0)


@main.command("validate")
@click.argument("out", type=click.Path(exists=True, path_type=Path))
def validate_command(out: Path) -> None:
    """Check every sop.json under OUT against the schema."""
    from .schemas import validate

    files = [out] if out.is_file() else sorted(out.rglob("sop.json"))
    if not files:
        raise click.ClickException(f"{out}: no sop.json found")
    bad = 0
    for f in files:
        try:
            doc = json.loads(f.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            click.echo(f"{f}: not readable JSON ({exc})", err=True)
            bad += 1
            continue
        errors = validate("sop", doc)
        for e in errors:
            click.echo(f"{f}: {e}", err=True)
        bad += bool(errors)
    click.echo(f"{len(files) - bad} of {len(files)} sop.json valid", err=True)
    sys.exit(1 if bad else 0)


@main.command("schema")
@click.argument("name", required=False, default="sop",
                type=click.Choice(["sop", "sidecar", "edits", "diff", "audit"]))
@click.option("--sidecar", is_flag=True, help="Same as NAME sidecar.")
def schema_command(name: str, sidecar: bool) -> None:
    """Print the JSON Schema of sop.json, or of another file sopline reads or writes:
    the sidecar, the edits overlay, the diff report or the audit report."""
    from .schemas import load_schema

    click.echo(json.dumps(load_schema("sidecar" if sidecar else name), indent=2))


if __name__ == "__main__":
    main()
