"""The `sopline` command: a thin layer over the library API."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .build import BuildSettings, build


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

    def _say(self, text: str, final: bool = False) -> None:
        if self.live:
            click.echo("\r\033[K" + text, nl=final, err=True)
        else:
            click.echo(text, err=True)

    def clear(self) -> None:
        if self.live:
            click.echo("\r\033[K", nl=False, err=True)


@click.group()
@click.version_option(__version__, prog_name="sopline")
def main() -> None:
    """Turn narrated screen recordings into Standard Operating Procedures."""


@main.command("build")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for the SOPs and index.json.")
@click.option("--model", default=None, help="Speech model: a local CTranslate2 folder or a model name "
              "(a name may be downloaded). Default: the bundled tiny.en.")
@click.option("--glossary", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="File with one domain term a line (kubectl, terraform...) to bias recognition.")
@click.option("--threads", type=click.IntRange(0, 256), default=0, help="CPU threads for speech (0: all cores).")
def build_command(paths, out, model, glossary, threads) -> None:
    """Build an SOP for every recording in PATHS (files or folders, searched recursively)."""
    settings = BuildSettings(model=model, glossary=_read_glossary(glossary), cpu_threads=threads)
    progress = _Progress()
    try:
        report = build(list(paths), out, settings, progress)
    except Exception as exc:  # a failure outside any one recording (e.g. the model)
        progress.clear()
        raise click.ClickException(str(exc)) from exc
    progress.clear()
    for r in report.results:
        for w in r.warnings:
            click.echo(f"warning: {r.recording.source}: {w}", err=True)
        if not r.ok:
            click.echo(f"error: {r.recording.path}: {r.message}", err=True)
    built = len(report.results) - len(report.failed)
    click.echo(f"built {built} of {len(report.results)} recording(s) into {out}", err=True)
    if not report.results:
        raise click.UsageError("no recordings found (looked for .mp4 .mov .mkv .webm)")
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
@click.option("--sidecar", is_flag=True, help="Print the sidecar schema instead.")
def schema_command(sidecar: bool) -> None:
    """Print the JSON Schema of sop.json (or of the sidecar)."""
    from .schemas import load_schema

    click.echo(json.dumps(load_schema("sidecar" if sidecar else "sop"), indent=2))


if __name__ == "__main__":
    main()
