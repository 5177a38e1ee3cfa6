"""`sopline diff`: a thin layer over :mod:`pipeline.sopdiff`."""
from __future__ import annotations

from pathlib import Path

import click

from .fsutil import atomic_write_bytes
from .diffreport import to_json, to_markdown
from .sopdiff import DiffError, diff_against_ref, diff_trees, load_side
from .sopread import SopReadError


@click.command("diff")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--base", "base", metavar="REF", default=None,
              help="Compare OUT (default: sops) with the same path at git REF (read with git, no checkout).")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True,
              help="What to print on stdout.")
@click.option("--markdown", "md_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the Markdown report to this file.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON report to this file.")
@click.option("--image-base", metavar="URL", default=None,
              help="Link new screenshots as URL/<path> (e.g. https://github.com/o/r/raw/<sha>).")
@click.option("--old-image-base", metavar="URL", default=None, help="The same for the old screenshots.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when SOPs changed (reporting only).")
@click.pass_context
def diff_command(ctx, paths, base, fmt, md_file, json_file, image_base, old_image_base, exit_zero) -> None:
    """Show what changed in the SOPs: `diff OLD NEW` (each a sop.json, an SOP folder or an
    output folder) or `diff --base REF [OUT]`.

    Steps are matched by meaning (instruction and screenshot), not position. Exit status:
    0 no change, 1 changes, 2 error.
    """
    if base is not None:
        if len(paths) > 1:
            raise click.UsageError("with --base give at most one folder (OUT, default: sops)")
    elif len(paths) != 2:
        raise click.UsageError("give OLD and NEW, or --base REF [OUT]")
    try:
        if base is not None:
            report = diff_against_ref(paths[0] if paths else Path("sops"), base)
        else:
            report = diff_trees(load_side(paths[0]), load_side(paths[1]))
        markdown = to_markdown(report, image_base, old_image_base)
        document = to_json(report)
        if md_file is not None:
            _write(md_file, markdown)
        if json_file is not None:
            _write(json_file, document)
    except (SopReadError, DiffError) as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(2)
    click.echo(markdown if fmt == "md" else document, nl=False)
    ctx.exit(1 if report.changed and not exit_zero else 0)


def _write(path: Path, text: str) -> None:
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise DiffError(f"{path}: {exc.strerror or exc}") from None
