"""`sopline steps` and `sopline edit`: pick a step id, write an edit to the recording's overlay.

The overlay (``<recording stem>.sop.edits.yaml``, see :mod:`pipeline.edits`)
is a file people also edit by hand and review in pull requests, so it is
rewritten round-trip with ruamel.yaml: comments, key order and quoting
survive. Nothing is rebuilt here; the next ``sopline build`` applies the edit.
"""
from __future__ import annotations

import difflib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

import click
import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import LiteralScalarString, SingleQuotedScalarString
from ruamel.yaml.util import load_yaml_guess_indent

from . import edits as edits_mod
from .build import INDEX_NAME, VIDEO_SUFFIXES, step_id_base
from .fsutil import atomic_write_bytes
from .locate import LocateError as RecordingNotFound
from .locate import recording_of
from .render import safe_url
from .sopread import SopReadError, read_sop

_HEADER = ("Human edits to the SOP generated from {name}, keyed by step id (`sopline steps` lists them).\n"
           "Applied on every `sopline build`; the build never changes this file.")


# ------------------------------------------------------------------ locating

@dataclass(frozen=True)
class Located:
    """An SOP and the overlay that refines it."""

    overlay: Path
    recording: Optional[Path] = None
    root: Optional[Path] = None  # the build root the recording was found under
    sop_path: Optional[Path] = None
    doc: Optional[dict] = None  # the sop.json document, when known
    out: Optional[Path] = None  # the output folder holding index.json, when known


class LocateError(click.ClickException):
    pass


def locate(target: Path, recordings: Path | None = None, sop: Path | None = None) -> Located:
    """Where the overlay of ``target`` is: an SOP folder or sop.json (its recording found
    from source.path under ``recordings``, or near the output tree), a recording, or an
    overlay file. ``sop`` names the SOP when ``target`` is a recording or overlay."""
    target = Path(target)
    name = target.name
    if target.is_file() and name.endswith(edits_mod.SUFFIX):
        recording = _sibling_recording(target)
        return _with_sop(Located(target, recording, recordings), sop)
    if target.is_file() and target.suffix.lower() in VIDEO_SUFFIXES:
        return _with_sop(Located(edits_mod.edits_path_for(target), target, recordings), sop)
    if not (target.is_dir() or target.suffix == ".json"):
        if name.endswith(edits_mod.SUFFIX):  # a new overlay beside its recording
            return _with_sop(Located(target, _sibling_recording(target), recordings), sop)
        raise click.UsageError(f"{target}: not an SOP folder, sop.json, recording or {edits_mod.SUFFIX} file")
    sop_path = target / "sop.json" if target.is_dir() else target
    doc = _read(sop_path)
    try:
        found = recording_of(sop_path, doc, recordings)
    except RecordingNotFound as exc:
        raise LocateError(str(exc)) from None
    return Located(edits_mod.edits_path_for(found.recording), found.recording, found.root, sop_path, doc, found.out)


def _read(path: Path) -> dict:
    try:
        return read_sop(path)
    except SopReadError as exc:
        raise LocateError(str(exc)) from None


def _with_sop(loc: Located, sop: Path | None) -> Located:
    if sop is None:
        return loc
    sop_path = sop / "sop.json" if sop.is_dir() else sop
    return Located(loc.overlay, loc.recording, loc.root, sop_path, _read(sop_path), None)


def _sibling_recording(overlay: Path) -> Optional[Path]:
    stem = overlay.name[: -len(edits_mod.SUFFIX)]
    found = [p for p in sorted(overlay.parent.glob(f"{stem}.*")) if p.suffix.lower() in VIDEO_SUFFIXES
             and p.stem == stem]
    return found[0] if found else None


# --------------------------------------------------------------- step index

@dataclass(frozen=True)
class StepInfo:
    number: Optional[int]
    id: str
    kind: str
    instruction: str
    marker: str  # "", "edited", "added", "dropped", "merged"


def step_index(doc: dict) -> list[StepInfo]:
    """The SOP's steps, then the generated steps edits removed (dropped, merged):
    every id an edit may name."""
    rows = []
    for step in doc["steps"]:
        marker = "added" if step.get("origin") == "manual" else ("edited" if step.get("edited") else "")
        rows.append(StepInfo(step["number"], step["id"], step["kind"], step["instruction"], marker))
    edits = doc.get("edits") or {}
    rows += [StepInfo(None, sid, "", "", "dropped") for sid in edits.get("dropped", ())]
    rows += [StepInfo(None, sid, "", "", "merged") for sid in edits.get("merged", ())]
    return rows


def _close(sid: str, ids: list[str]) -> str:
    close = difflib.get_close_matches(sid, ids, n=5, cutoff=0.4)
    return f"close ids: {', '.join(close)}" if close else f"ids: {', '.join(ids[:12])}"


@click.command("steps")
@click.argument("sop", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def steps_command(sop: Path, as_json: bool) -> None:
    """List the steps of SOP (an SOP folder or sop.json) with their ids, for `sopline edit`."""
    sop_path = sop / "sop.json" if sop.is_dir() else sop
    doc = _read(sop_path)
    rows = step_index(doc)
    edits = doc.get("edits") or {}
    if as_json:
        click.echo(json.dumps({
            "sop": str(sop_path),
            "steps": [{"number": r.number, "id": r.id, "kind": r.kind, "instruction": r.instruction,
                       "edited": r.marker in ("edited", "added"), "origin": "manual" if r.marker == "added"
                       else "generated"} for r in rows if r.number is not None],
            "dropped": list(edits.get("dropped", ())), "merged": list(edits.get("merged", ())),
            "orphaned": list(edits.get("orphaned", ()))}, indent=2, ensure_ascii=False))
        return
    shown = [r for r in rows if r.number is not None]
    width = max((len(r.id) for r in shown), default=2)
    for r in shown:
        mark = f"  ({r.marker})" if r.marker else ""
        click.echo(f"{r.number:>3}  {r.id:<{width}}  {r.kind:<12}  {r.instruction}{mark}")
    for r in rows:
        if r.number is None:
            click.echo(f"  -  {r.id:<{width}}  ({r.marker} by an edit)")
    for orphan in edits.get("orphaned", ()):
        click.echo(f"  !  {orphan['step']:<{width}}  orphaned edit ({', '.join(orphan['fields'])}): "
                   f"{orphan['reason']}")


# ------------------------------------------------------------ the overlay

@dataclass(frozen=True)
class EditRequest:
    """One `sopline edit` invocation, as data (the API behind the command)."""

    step: Optional[str] = None
    insert_after: Optional[str] = None
    insert_at_start: bool = False
    instruction: Optional[str] = None
    kind: Optional[str] = None
    callouts: tuple[tuple[str, str], ...] = ()  # (kind, text)
    notes: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # (title, url)
    drop: bool = False
    merge: bool = False
    image: Optional[str] = None  # relative to the overlay file, POSIX
    by: Optional[str] = None
    title: Optional[str] = None
    summary: Optional[str] = None
    prerequisites: tuple[str, ...] = ()
    expected_outcome: Optional[str] = None

    @property
    def inserting(self) -> bool:
        return self.insert_after is not None or self.insert_at_start


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    y.representer.add_representer(  # "after: null" reads better than "after:"
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _scalar(text: str):
    """A string that reads back as the same string with PyYAML (YAML 1.1, which the
    build uses): 'no', 'on', '3.2' or '2024-01-01' are quoted, multi-line text is a block."""
    if "\n" in text:
        return LiteralScalarString(text)
    try:
        same = yaml.safe_load(text) == text
    except yaml.YAMLError:
        same = False
    return text if same else SingleQuotedScalarString(text)


def _flow(**items) -> CommentedMap:
    m = CommentedMap((k, _scalar(v)) for k, v in items.items())
    m.fa.set_flow_style()
    return m


def _append(entry: CommentedMap, key: str, value, same=None) -> bool:
    seq = entry.get(key)
    if seq is None:
        seq = entry[key] = CommentedSeq()
    plain = same if same is not None else value
    if any((dict(v) if isinstance(v, dict) else v) == plain for v in seq):
        return False  # already there: editing is idempotent
    seq.append(value)
    return True


def update_overlay(text: str | None, req: EditRequest, doc: dict | None, recording_name: str) -> tuple[str, list[str]]:
    """The overlay's new text with ``req`` applied (round-trip: comments kept), and
    what changed. ``doc`` (the sop.json) is used to check step ids; raises click
    errors for unknown ids or impossible requests."""
    y = _yaml()
    data = None
    if text and text.strip():
        data, ind, bsi = load_yaml_guess_indent(text)
        _keep_indentation(y, text, ind, bsi)
    if data is None:
        data = CommentedMap()
        data.yaml_set_start_comment(_HEADER.format(name=recording_name))
    changes: list[str] = []
    known = step_index(doc) if doc is not None else None
    inserts = data.get("insert") or []
    insert_ids = {str(e.get("id") or step_id_base(str(e.get("instruction", "")))): e for e in inserts}
    all_ids = ([r.id for r in known] if known is not None else []) + list(insert_ids)

    def check(sid: str, option: str) -> None:
        if known is not None and sid not in all_ids:
            raise click.BadParameter(f"unknown step id {sid!r}; {_close(sid, all_ids)}", param_hint=option)

    if req.step and req.inserting:
        raise click.UsageError("use either --step or --insert-after/--insert-at-start, not both")
    step_ops = (req.instruction is not None or req.kind or req.callouts or req.notes or req.links
                or req.drop or req.merge or req.image)
    if step_ops and not (req.step or req.inserting):
        raise click.UsageError("say which step: --step ID, or --insert-after ID / --insert-at-start for a new one")
    if req.image and not req.inserting and not (req.step and req.step in insert_ids):
        raise click.UsageError("--image belongs to an inserted step (--insert-after ID or --insert-at-start)")
    if req.drop and req.merge:
        raise click.UsageError("--drop and --merge-into-previous cannot be combined")

    if req.inserting:
        if not req.instruction:
            raise click.UsageError("an inserted step needs --instruction TEXT")
        if req.drop or req.merge:
            raise click.UsageError("--drop/--merge-into-previous apply to existing steps (--step ID)")
        if req.insert_after is not None:
            check(req.insert_after, "--insert-after")
        taken = set(all_ids) | set(data.get("steps") or {})
        base = step_id_base(req.instruction)
        sid, n = base, 2
        while sid in taken:
            sid, n = f"{base}-{n}", n + 1
        entry = CommentedMap()
        entry["after"] = req.insert_after  # None: at the start
        entry["id"] = sid
        entry["instruction"] = _scalar(req.instruction)
        if data.get("insert") is None:
            data["insert"] = CommentedSeq()
        data["insert"].append(entry)
        _fill_insert(entry, req)
        changes.append(f"inserted step '{sid}' " + (f"after '{req.insert_after}'" if req.insert_after else "at the start"))
    elif req.step:
        check(req.step, "--step")
        if req.step in insert_ids:
            entry = insert_ids[req.step]
            if req.merge:
                raise click.UsageError(f"'{req.step}' is an inserted step; it cannot be merged (edit the overlay)")
            if req.drop:
                data["insert"].remove(entry)
                changes.append(f"removed inserted step '{req.step}'")
            else:
                if req.instruction is not None:
                    entry["instruction"] = _scalar(req.instruction)
                _fill_insert(entry, req)
                changes.append(f"edited inserted step '{req.step}'")
        else:
            if req.merge and known is not None and doc["steps"] and doc["steps"][0]["id"] == req.step:
                raise click.BadParameter(f"'{req.step}' is the first step; there is nothing to merge it into",
                                         param_hint="--merge-into-previous")
            if data.get("steps") is None:
                data["steps"] = CommentedMap()
            entry = data["steps"].get(req.step)
            if entry is None:
                entry = data["steps"][req.step] = CommentedMap()
            if req.instruction is not None:
                entry["instruction"] = _scalar(req.instruction)
            _fill_content(entry, req, "add_callouts")  # a generated step's own callouts stay
            if req.drop:
                entry["drop"] = True
            if req.merge:
                entry["merge_into_previous"] = True
            if req.by:
                entry["by"] = _scalar(req.by)
            changes.append(f"edited step '{req.step}'")

    sop_keys = {"title": req.title, "summary": req.summary, "expected_outcome": req.expected_outcome}
    if any(v is not None for v in sop_keys.values()) or req.prerequisites:
        if data.get("sop") is None:
            data["sop"] = CommentedMap()
        side = data["sop"]
        for key, value in sop_keys.items():
            if value is not None:
                side[key] = _scalar(value)
                changes.append(f"set {key}")
        if req.prerequisites:
            if side.get("prerequisites") is None:  # start from the SOP's list so adding one keeps the others
                current = ((doc or {}).get("metadata") or {}).get("prerequisites") or []
                side["prerequisites"] = CommentedSeq(_scalar(p) for p in current)
            for item in req.prerequisites:
                _append(side, "prerequisites", _scalar(item), item)
            changes.append("set prerequisites")
        if req.by and not req.step and not req.inserting:
            side["by"] = _scalar(req.by)
    if not changes:
        raise click.UsageError("nothing to change: give --step ID with an edit, --insert-after ID, "
                               "or an SOP field (--title, --summary, --prerequisite, --expected-outcome)")
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue(), changes


def _keep_indentation(y: YAML, text: str, seq_indent: int | None, offset: int | None) -> None:
    """Dump with the file's own indentation, so an edit changes only the lines it must."""
    keys = [len(ln) - len(ln.lstrip(" ")) for ln in text.splitlines()
            if ln.strip() and not ln.lstrip().startswith(("#", "-")) and ln.startswith(" ")]
    mapping = min(keys) if keys else 2
    if seq_indent is not None and offset is not None and seq_indent > offset:
        y.indent(mapping=mapping, sequence=seq_indent, offset=offset)
    else:
        y.indent(mapping=mapping, sequence=mapping + 2, offset=mapping)


def _fill_content(entry: CommentedMap, req: EditRequest, callouts_key: str) -> None:
    """Kind, callouts, notes and links of an edit, appended without repeating an item."""
    if req.kind:
        entry["kind"] = req.kind
    for kind, text in req.callouts:
        _append(entry, callouts_key, _flow(kind=kind, text=text), {"kind": kind, "text": text})
    for note in req.notes:
        _append(entry, "notes", _scalar(note), note)
    for title, url in req.links:
        _append(entry, "links", _flow(title=title, url=url), {"title": title, "url": url})


def _fill_insert(entry: CommentedMap, req: EditRequest) -> None:
    _fill_content(entry, req, "callouts")
    if req.image:
        entry["image"] = _scalar(req.image)
    if req.by:
        entry["by"] = _scalar(req.by)


def _link(value: str) -> tuple[str, str]:
    title, sep, url = value.partition("=")
    if not sep or not title.strip() or not url.strip():
        raise click.BadParameter(f"{value!r}: expected TITLE=URL", param_hint="--link")
    if safe_url(url.strip()) is None:
        raise click.BadParameter(f"{url.strip()!r}: only http(s) and relative URLs are allowed", param_hint="--link")
    return title.strip(), url.strip()


def _image_option(image: Path, loc: Located) -> str:
    """--image as the overlay will hold it: relative to the overlay file, checked now
    (inside the recording root, PNG or JPEG) so the build does not fail on it later."""
    if not image.is_file():
        raise click.BadParameter(f"{image}: no such file", param_hint="--image")
    rel = PurePosixPath(Path(os.path.relpath(image.absolute(), loc.overlay.parent.absolute())).as_posix())
    root = loc.root if loc.root is not None else (loc.recording.parent if loc.recording else loc.overlay.parent)
    try:
        edits_mod.image_png(edits_mod.resolve_image(str(rel), loc.overlay.parent, root))
    except edits_mod.EditsError as exc:
        raise click.BadParameter(str(exc), param_hint="--image") from None
    return str(rel)


@click.command("edit")
@click.argument("target", metavar="SOP", type=click.Path(path_type=Path))
@click.option("--step", "step", metavar="ID", help="The step to edit (ids: `sopline steps SOP`).")
@click.option("--instruction", help="Replace the step's instruction (or give an inserted step's).")
@click.option("--kind", type=click.Choice(["action", "verification", "warning", "note"]), help="Set the step's kind.")
@click.option("--add-warning", "warnings", multiple=True, metavar="TEXT", help="Add a warning callout.")
@click.option("--add-tip", "tips", multiple=True, metavar="TEXT", help="Add a tip callout.")
@click.option("--add-verify", "verifies", multiple=True, metavar="TEXT", help="Add a check to make.")
@click.option("--note", "notes", multiple=True, metavar="TEXT", help="Add a note (Markdown).")
@click.option("--link", "links", multiple=True, metavar="TITLE=URL", help="Attach a link (http(s) or relative).")
@click.option("--drop", is_flag=True, help="Leave the step out of the SOP.")
@click.option("--merge-into-previous", "merge", is_flag=True, help="Fold the step into the one before it.")
@click.option("--insert-after", metavar="ID", help="Insert a new step after step ID (needs --instruction).")
@click.option("--insert-at-start", is_flag=True, help="Insert a new step before the first one.")
@click.option("--image", type=click.Path(path_type=Path), help="PNG/JPEG from the repository for an inserted step.")
@click.option("--title", help="Set the SOP's title.")
@click.option("--summary", help="Set the SOP's summary.")
@click.option("--prerequisite", "prerequisites", multiple=True, metavar="TEXT", help="Add a prerequisite.")
@click.option("--expected-outcome", help="Set the SOP's expected outcome.")
@click.option("--by", metavar="NAME", help="Who makes this edit (recorded in sop.json).")
@click.option("--recordings", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The folder given to `sopline build` (default: searched near the SOP).")
@click.option("--sop", "sop_opt", type=click.Path(exists=True, path_type=Path),
              help="The SOP, when SOP names a recording or overlay instead (to check step ids).")
def edit_command(target, step, instruction, kind, warnings, tips, verifies, notes, links, drop, merge,
                 insert_after, insert_at_start, image, title, summary, prerequisites, expected_outcome, by,
                 recordings, sop_opt) -> None:
    """Write an edit of SOP (folder, sop.json, its recording or overlay) to the recording's
    <stem>.sop.edits.yaml; the next `sopline build` applies it."""
    if insert_after is not None and insert_at_start:
        raise click.UsageError("use either --insert-after ID or --insert-at-start")
    loc = locate(target, recordings, sop_opt)
    image_rel = _image_option(image, loc) if image is not None else None
    callouts = tuple(("warning", t) for t in warnings) + tuple(("tip", t) for t in tips) \
        + tuple(("verify", t) for t in verifies)
    req = EditRequest(step=step, insert_after=insert_after, insert_at_start=insert_at_start,
                      instruction=instruction, kind=kind, callouts=callouts, notes=notes,
                      links=tuple(_link(v) for v in links), drop=drop, merge=merge, image=image_rel, by=by,
                      title=title, summary=summary, prerequisites=prerequisites, expected_outcome=expected_outcome)
    overlay = loc.overlay
    old: bytes | None = None
    if overlay.exists():
        try:
            old = overlay.read_bytes()
        except OSError as exc:
            raise click.ClickException(f"{overlay}: cannot read: {exc.strerror or exc}") from None
        try:
            edits_mod.parse_edits(old, overlay)
        except edits_mod.EditsError as exc:
            raise click.ClickException(f"{overlay}: fix the overlay first: {exc}") from None
    if loc.doc is None:
        click.echo("warning: no sop.json given (--sop); step ids are not checked", err=True)
    recording_name = loc.recording.name if loc.recording else overlay.name[: -len(edits_mod.SUFFIX)]
    text, changes = update_overlay(old.decode("utf-8-sig") if old else None, req, loc.doc, recording_name)
    data = text.encode("utf-8")
    try:
        edits_mod.parse_edits(data, overlay)
    except edits_mod.EditsError as exc:
        raise click.ClickException(f"{overlay}: the edit would make the overlay invalid: {exc}") from None
    if data != old:
        atomic_write_bytes(overlay, data)
    click.echo(f"{overlay}: {'; '.join(changes)}", err=True)
    root = str(loc.root) if loc.root is not None else "<recordings>"
    out = str(loc.out) if loc.out is not None and (loc.out / INDEX_NAME).exists() else "<out>"
    click.echo(f"apply with: sopline build {root} -o {out}", err=True)
