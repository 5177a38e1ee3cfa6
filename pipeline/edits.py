"""Human refinements of a generated SOP, kept beside the recording and re-applied on every build.

A generated SOP is a draft. Reviewers reword a step, add a warning, attach a
runbook link, drop or merge steps, insert a step the recording cannot show.
Since the recording is the source and SOPs are rebuilt on every merge, those
edits live in an overlay file beside the recording
(``<root>/a/b.mp4`` -> ``<root>/a/b.sop.edits.yaml``), keyed by stable step
ids, and are applied after generation. An edit whose step no longer exists
(a re-recording changed it) is never silently lost: it is reported as
orphaned and the overlay is left exactly as it is; a build never writes it.

Merging folds a step into the one before it in the result (a dropped step
is skipped): narration, inputs, callouts, notes and links are joined, the
earlier step's instruction and kind stay (the later step's own instruction or
kind edit is not shown), and the later step's screenshot is kept, being the
settled result of the combined action, or the earlier one when the later step
has none. After drops, merges and inserts, steps are
renumbered 1..n and screenshots renamed to match (images/step-NN.png).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Mapping, Optional, Sequence

import yaml
from PIL import Image, ImageOps, UnidentifiedImageError

from .model import Callout, EditsInfo, Link, OrphanedEdit, Screenshot, Sop, Step, StepEdit
from .render import image_path, safe_url
from .schemas import load_schema, validate
from .sidecar import StrictLoader, yaml_problem, yaml_where

SUFFIX = ".sop.edits.yaml"
MAX_BYTES = 512 * 1024
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
_PNG_COMPRESS_LEVEL = 6
_MAX_REPORTED = 5
# Order in which edited fields are listed in sop.json, whatever order the overlay uses.
_FIELD_ORDER = ("instruction", "kind", "callouts", "notes", "links", "narration", "inputs", "screenshot")


class EditsError(ValueError):
    """An overlay that cannot be used; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class StepEdits:
    """One entry of ``steps:``: what a person changes in the generated step ``id``."""

    id: str
    by: Optional[str] = None
    instruction: Optional[str] = None
    kind: Optional[str] = None
    callouts: Optional[tuple[Callout, ...]] = None  # replaces the generated ones
    add_callouts: tuple[Callout, ...] = ()
    notes: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    drop: bool = False
    merge: bool = False

    @property
    def operations(self) -> tuple[str, ...]:
        """Overlay keys this entry sets, for reports (orphaned edits)."""
        ops = [name for name, on in (("instruction", self.instruction is not None), ("kind", self.kind is not None),
                                     ("callouts", self.callouts is not None), ("add_callouts", bool(self.add_callouts)),
                                     ("notes", bool(self.notes)), ("links", bool(self.links)), ("drop", self.drop),
                                     ("merge_into_previous", self.merge)) if on]
        return tuple(ops)


@dataclass(frozen=True)
class Insert:
    """One entry of ``insert:``: a step a person adds after ``after`` (None: first)."""

    after: Optional[str]
    instruction: str
    id: Optional[str] = None
    by: Optional[str] = None
    kind: str = "action"
    callouts: tuple[Callout, ...] = ()
    notes: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    inputs: tuple[str, ...] = ()
    image: Optional[str] = None  # relative to the overlay file


@dataclass(frozen=True)
class SopEdits:
    by: Optional[str] = None
    title: Optional[str] = None
    summary: Optional[str] = None
    prerequisites: Optional[tuple[str, ...]] = None
    expected_outcome: Optional[str] = None


@dataclass(frozen=True)
class Edits:
    """A loaded, schema-checked overlay."""

    path: Path
    sha256: str
    by: Optional[str] = None
    mark_edited: bool = True
    sop: SopEdits = SopEdits()
    steps: tuple[StepEdits, ...] = ()  # in file order
    inserts: tuple[Insert, ...] = ()
    warnings: tuple[str, ...] = ()


def edits_path_for(recording: Path) -> Path:
    """The overlay of ``recording``: ``<stem>.sop.edits.yaml`` beside it (it may not exist)."""
    recording = Path(recording)
    return recording.with_name(recording.stem + SUFFIX)


def check_overlay_file(path: Path) -> None:
    """Refuse an overlay that is not a regular file (a device or FIFO would hang the
    build), or a symbolic link leading out of the recording's folder (a pull request
    must not make the build read and publish another file of the machine)."""
    path = Path(path)
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not _inside(target, Path(os.path.realpath(path.parent))):
            raise EditsError(f"{path.name}: symbolic link to a file outside the recording's folder; refused")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise EditsError(f"{path.name}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise EditsError(f"{path.name}: not a regular file")


def recording_root(recording: Path, source: str) -> Path:
    """The build root of ``recording``, whose path relative to that root is ``source``."""
    root = Path(recording)
    for _ in PurePosixPath(source).parts:
        root = root.parent
    return root


# ------------------------------------------------------------------ loading

def load_edits(path: Path) -> Edits:
    """Read and check an overlay; raises :class:`EditsError`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise EditsError(f"{path.name}: cannot read: {exc.strerror or exc}") from None
    return parse_edits(data, path)


def parse_edits(data: bytes, path: Path) -> Edits:
    """An overlay from its bytes (``path`` names it in messages and anchors images)."""
    path = Path(path)
    where = path.name
    if len(data) > MAX_BYTES:
        raise EditsError(f"{where}: larger than {MAX_BYTES // 1024} KB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EditsError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise EditsError(f"{where}: invalid YAML{yaml_where(exc)}: {yaml_problem(exc)}") from None
    except RecursionError:
        raise EditsError(f"{where}: YAML nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise EditsError(f"{where}: invalid YAML: {' '.join(str(exc).split())}") from None
    sha = hashlib.sha256(data).hexdigest()
    if doc is None:
        return Edits(path, sha, warnings=(f"edits {where}: overlay is empty",))
    if not isinstance(doc, dict):
        raise EditsError(f"{where}: expected a mapping at the top level (by, sop, steps, insert)")
    schema = load_schema("edits")
    unknown: list[str] = []
    doc = _prune(doc, schema, schema, "", unknown)
    errors = validate("edits", doc)
    if errors:
        shown = "; ".join(errors[:_MAX_REPORTED])
        more = f" (and {len(errors) - _MAX_REPORTED} more)" if len(errors) > _MAX_REPORTED else ""
        raise EditsError(f"{where}: {shown}{more}")
    warnings = tuple(f"edits {where}: unknown key {k!r} ignored" for k in unknown)
    steps = tuple(_step_edits(sid, entry) for sid, entry in (doc.get("steps") or {}).items())
    for entry in steps:
        if entry.drop and entry.merge:
            raise EditsError(f"{where}: steps.{entry.id}: drop and merge_into_previous cannot both be true")
    inserts = tuple(_insert(entry) for entry in doc.get("insert") or ())
    for link in [lk for e in steps for lk in e.links] + [lk for e in inserts for lk in e.links]:
        if safe_url(link.url) is None:  # the schema's pattern already refuses these; belt and braces
            raise EditsError(f"{where}: link {link.url!r}: only http(s) and relative URLs are allowed")
    side = doc.get("sop") or {}
    sop = SopEdits(by=side.get("by"), title=side.get("title"), summary=side.get("summary"),
                   prerequisites=tuple(side["prerequisites"]) if "prerequisites" in side else None,
                   expected_outcome=side.get("expected_outcome"))
    return Edits(path, sha, doc.get("by"), bool(doc.get("mark_edited", True)), sop, steps, inserts, warnings)


def _callouts(items) -> tuple[Callout, ...]:
    return tuple(Callout(c["kind"], c["text"].strip()) for c in items or ())


def _links(items) -> tuple[Link, ...]:
    return tuple(Link(link["title"].strip(), link["url"]) for link in items or ())


def _step_edits(sid: str, entry: dict) -> StepEdits:
    return StepEdits(
        id=sid, by=entry.get("by"),
        instruction=entry["instruction"].strip() if "instruction" in entry else None,
        kind=entry.get("kind"),
        callouts=_callouts(entry["callouts"]) if "callouts" in entry else None,
        add_callouts=_callouts(entry.get("add_callouts")),
        notes=tuple(entry.get("notes") or ()), links=_links(entry.get("links")),
        drop=bool(entry.get("drop", False)), merge=bool(entry.get("merge_into_previous", False)))


def _insert(entry: dict) -> Insert:
    return Insert(after=entry["after"], instruction=entry["instruction"].strip(), id=entry.get("id"),
                  by=entry.get("by"), kind=entry.get("kind", "action"), callouts=_callouts(entry.get("callouts")),
                  notes=tuple(entry.get("notes") or ()), links=_links(entry.get("links")),
                  inputs=tuple(entry.get("inputs") or ()), image=entry.get("image"))


def _prune(value, node: dict, schema: dict, where: str, unknown: list[str]):
    """``value`` without the keys the schema does not know (each noted in
    ``unknown``), so an overlay written for a newer sopline still applies."""
    while isinstance(node, dict) and "$ref" in node and len(node) <= 2:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    if not isinstance(node, dict):
        return value
    if isinstance(value, dict):
        props = node.get("properties")
        extra = node.get("additionalProperties", True)
        out = {}
        for key, sub in value.items():
            path = f"{where}.{key}" if where else str(key)
            if props is not None and key in props:
                out[key] = _prune(sub, props[key], schema, path, unknown)
            elif isinstance(extra, dict):
                out[key] = _prune(sub, extra, schema, path, unknown)
            elif extra is False and isinstance(key, str):
                unknown.append(path)
            else:
                out[key] = sub
        return out
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_prune(v, node["items"], schema, f"{where}[{i}]", unknown) for i, v in enumerate(value)]
    return value


class _StrictLoader(StrictLoader):
    """The sidecar's strict loader (no aliases, no duplicate keys: silently keeping one
    of two edits would lose the other), refusing merge keys as well."""

    what = "an edits overlay"

    def construct_mapping(self, node, deep=False):
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not allowed in an edits overlay", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


# ----------------------------------------------------------------- applying

Summarize = Callable[[Sequence[Step]], str]


def apply_overlay(recording: Path, sop: Sop, pngs: Mapping[str, bytes],
                  summarize: Summarize | None = None) -> tuple[Sop, dict[str, bytes], tuple[str, ...]]:
    """The build's entry point: apply ``recording``'s overlay, if it has one.
    ``summarize`` recomputes a generated summary from the edited steps (None
    when the summary came from a sidecar). Raises :class:`EditsError`."""
    path = edits_path_for(recording)
    if not os.path.lexists(path):
        return sop, dict(pngs), ()
    check_overlay_file(path)
    edits = load_edits(path)
    return apply_edits(sop, pngs, edits, recording_root(recording, sop.source.path), summarize)


def apply_edits(sop: Sop, pngs: Mapping[str, bytes], edits: Edits, root: Path,
                summarize: Summarize | None = None) -> tuple[Sop, dict[str, bytes], tuple[str, ...]]:
    """``sop`` with ``edits`` applied, its screenshots renamed to the new step
    numbers, and warnings (orphaned edits, unknown keys). Never writes the overlay."""
    warnings = list(edits.warnings)
    orphaned: list[OrphanedEdit] = []
    applied = 0
    known = {s.id for s in sop.steps}
    by_id: dict[str, StepEdits] = {}
    for entry in edits.steps:
        if entry.id in known:
            by_id[entry.id] = entry
        elif entry.operations:
            orphaned.append(OrphanedEdit(entry.id, entry.operations, "step no longer exists"))
            warnings.append(f"edits: step '{entry.id}' no longer exists; edit kept, not applied")

    kept: list[Step] = []
    anchor: dict[str, int] = {}  # generated step id -> index in kept it now lives at (-1: start)
    dropped: list[str] = []
    merged: list[str] = []
    for step in sop.steps:
        entry = by_id.get(step.id)
        if entry is None or not entry.operations:
            anchor[step.id] = len(kept)
            kept.append(step)
            continue
        if entry.drop:
            dropped.append(step.id)
            anchor[step.id] = len(kept) - 1
            applied += 1
            continue
        step = _edit_step(step, entry, edits.by)
        if entry.merge:
            if not kept:
                orphaned.append(OrphanedEdit(step.id, ("merge_into_previous",), "no previous step to merge into"))
                warnings.append(f"edits: step '{step.id}' has no previous step to merge into; merge not applied")
                applied += bool(set(entry.operations) - {"merge_into_previous"})
            else:
                kept[-1] = _merge(kept[-1], step, entry.by, edits.by)
                merged.append(step.id)
                anchor[step.id] = len(kept) - 1
                applied += 1
                continue
        else:
            applied += 1
        anchor[step.id] = len(kept)
        kept.append(step)

    slots: dict[int, list[Step]] = {}
    placed: dict[str, int] = {}  # inserted step id -> slot key
    manual_pngs: dict[str, bytes] = {}
    taken = {s.id for s in kept} | set(dropped) | set(merged)
    overlay_dir = Path(edits.path).parent
    for ins in edits.inserts:
        sid = _manual_id(ins, taken)
        if ins.id and sid != ins.id:
            warnings.append(f"edits: inserted step id '{ins.id}' is already used; it is '{sid}' in this build")
        if ins.after is None:
            key, pos = -1, len(slots.get(-1, ()))
        elif ins.after in placed:
            key = placed[ins.after]
            pos = next(i for i, s in enumerate(slots[key]) if s.id == ins.after) + 1
        elif ins.after in anchor:
            key = anchor[ins.after]
            pos = len(slots.get(key, ()))
        else:
            orphaned.append(OrphanedEdit(ins.id or sid, ("insert",),
                                         f"inserted after step '{ins.after}', which no longer exists"))
            warnings.append(f"edits: step '{ins.after}' no longer exists; "
                            f"insert '{ins.id or sid}' kept, not applied")
            continue
        taken.add(sid)
        png = _image_png(ins.image, overlay_dir, root, edits.path.name) if ins.image else None
        if png is not None:
            manual_pngs[sid] = png
        slots.setdefault(key, []).insert(pos, _manual_step(ins, sid, png, edits.by))
        placed[sid] = key
        applied += 1

    ordered: list[Step] = list(slots.get(-1, ()))
    for i, step in enumerate(kept):
        ordered.append(step)
        ordered.extend(slots.get(i, ()))
    steps, new_pngs = _renumber(ordered, pngs, manual_pngs)

    title, summary, metadata = sop.title, sop.summary, dict(sop.metadata)
    sop_fields: list[str] = []
    generated: dict = {}
    side = edits.sop
    if side.title is not None:
        generated["title"], title = title, side.title
        sop_fields.append("title")
    if side.summary is not None:
        generated["summary"], summary = summary, side.summary
        sop_fields.append("summary")
    for key, value in (("prerequisites", side.prerequisites), ("expected_outcome", side.expected_outcome)):
        if value is not None:
            if key in metadata:
                generated[f"metadata.{key}"] = metadata[key]
            metadata[key] = list(value) if isinstance(value, tuple) else value
            sop_fields.append(f"metadata.{key}")
    applied += len(sop_fields)
    if side.summary is None and summarize is not None:
        summary = summarize(steps)

    info = EditsInfo(path=str(PurePosixPath(sop.source.path).with_name(Path(sop.source.path).stem + SUFFIX)),
                     sha256=edits.sha256, applied=applied, dropped=tuple(dropped), merged=tuple(merged),
                     orphaned=tuple(orphaned), sop_fields=tuple(sop_fields), generated=generated,
                     by=side.by or edits.by, mark_edited=edits.mark_edited)
    out = dataclasses.replace(sop, title=title, summary=summary, metadata=metadata, steps=tuple(steps), edits=info)
    return out, new_pngs, tuple(warnings)


def _ordered(fields) -> tuple[str, ...]:
    return tuple(f for f in _FIELD_ORDER if f in set(fields))


def _edit_step(step: Step, entry: StepEdits, file_by: Optional[str]) -> Step:
    """``step`` with the entry's field edits (drop and merge are handled by the caller)."""
    changes: dict = {}
    generated: dict = {}
    if entry.instruction is not None:
        generated["instruction"], changes["instruction"] = step.instruction, entry.instruction
    if entry.kind is not None:
        generated["kind"], changes["kind"] = step.kind, entry.kind
    callouts = step.callouts
    if entry.callouts is not None:
        callouts = entry.callouts
    if entry.add_callouts:
        callouts = callouts + tuple(c for c in dict.fromkeys(entry.add_callouts) if c not in callouts)
    if entry.callouts is not None or entry.add_callouts:
        generated["callouts"] = [c.as_dict() for c in step.callouts]
        changes["callouts"] = callouts
    if entry.notes:
        changes["notes"] = step.notes + entry.notes
    if entry.links:
        changes["links"] = step.links + tuple(link for link in entry.links if link not in step.links)
    if not changes:
        return step
    fields = _ordered(list(changes) + list(step.edited.fields if step.edited else ()))
    edited = StepEdit(fields, entry.by or file_by, generated)
    return dataclasses.replace(step, edited=edited, **changes)


def _merge(first: Step, later: Step, by: Optional[str], file_by: Optional[str]) -> Step:
    """``later`` folded into ``first``: one step doing both, under ``first``'s instruction."""
    changes = {
        "narration": first.narration + later.narration,
        "inputs": first.inputs + tuple(v for v in later.inputs if v not in first.inputs),
        "callouts": first.callouts + tuple(c for c in later.callouts if c not in first.callouts),
        "notes": first.notes + later.notes,
        "links": first.links + tuple(link for link in later.links if link not in first.links),
        "screenshot": later.screenshot or first.screenshot,
    }
    changed = [name for name, value in changes.items() if value != getattr(first, name)]
    prior = first.edited
    edited = StepEdit(_ordered(list(prior.fields if prior else ()) + changed),
                      by or (prior.by if prior else None) or file_by,
                      dict(prior.generated) if prior else {},
                      (prior.merged if prior else ()) + (later.id,))
    change_s = first.change_s if first.change_s is not None else later.change_s
    return dataclasses.replace(first, end_s=max(first.end_s, later.end_s), change_s=change_s,
                               edited=edited, **changes)


def _manual_id(ins: Insert, taken: set[str]) -> str:
    from .build import step_id_base  # build imports this module; import at call time

    base = ins.id or step_id_base(ins.instruction)
    sid, n = base, 2
    while sid in taken:
        sid, n = f"{base}-{n}", n + 1
    return sid


def _manual_step(ins: Insert, sid: str, png: Optional[bytes], file_by: Optional[str]) -> Step:
    """An inserted step; its times and screenshot path are set when steps are renumbered."""
    fields = [name for name, on in (("instruction", True), ("kind", ins.kind != "action"),
                                    ("callouts", bool(ins.callouts)), ("notes", bool(ins.notes)),
                                    ("links", bool(ins.links)), ("inputs", bool(ins.inputs)),
                                    ("screenshot", png is not None)) if on]
    shot = Screenshot("", 0.0, hashlib.sha256(png).hexdigest(), None) if png is not None else None
    return Step(id=sid, number=0, start_s=0.0, end_s=0.0, change_s=None, instruction=ins.instruction,
                kind=ins.kind, narration=(), callouts=ins.callouts, inputs=ins.inputs, screenshot=shot,
                notes=ins.notes, links=ins.links, origin="manual",
                edited=StepEdit(_ordered(fields), ins.by or file_by, {}))


def _renumber(steps: Sequence[Step], pngs: Mapping[str, bytes],
              manual_pngs: Mapping[str, bytes]) -> tuple[list[Step], dict[str, bytes]]:
    """Steps numbered 1..n with screenshots named for their number
    (images/step-NN.png); an inserted step sits at the time its predecessor ends."""
    out: list[Step] = []
    new_pngs: dict[str, bytes] = {}
    previous_end = 0.0
    for number, step in enumerate(steps, start=1):
        changes: dict = {"number": number}
        if step.origin == "manual":
            changes["start_s"] = changes["end_s"] = previous_end
        shot = step.screenshot
        if shot is not None:
            data = manual_pngs[step.id] if step.origin == "manual" else pngs[shot.path]
            name = image_path(number)
            new_pngs[name] = data
            time_s = previous_end if step.origin == "manual" else shot.time_s
            changes["screenshot"] = dataclasses.replace(shot, path=name, time_s=time_s)
        step = dataclasses.replace(step, **changes)
        previous_end = max(previous_end, step.end_s)
        out.append(step)
    return out, new_pngs


# ------------------------------------------------------------------- images

def resolve_image(image: str, overlay_dir: Path, root: Path) -> Path:
    """The file an overlay's ``image`` names, refused unless it stays inside
    ``root`` (the build root): no absolute path, no escape through '..' or a
    symlink. Raises :class:`EditsError` (message without the file name)."""
    if (not image or "\x00" in image or "\\" in image or PurePosixPath(image).is_absolute()
            or PureWindowsPath(image).drive):
        raise EditsError(f"image {image!r}: must be a relative path (to the overlay file)")
    root_real = Path(os.path.realpath(root))
    lexical = Path(os.path.normpath(Path(os.path.abspath(overlay_dir)) / image))
    if not _inside(lexical, Path(os.path.abspath(root))):
        raise EditsError(f"image {image!r}: outside the recording root")
    real = Path(os.path.realpath(lexical))
    if not _inside(real, root_real):
        raise EditsError(f"image {image!r}: a symlink pointing outside the recording root")
    if not real.is_file():
        raise EditsError(f"image {image!r}: no such file")
    return real


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def image_png(path: Path) -> bytes:
    """A PNG or JPEG file re-encoded as a plain RGB PNG (no metadata, EXIF
    rotation applied), so only pixels reach the output. Raises :class:`EditsError`."""
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise EditsError(f"image {path.name}: larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
        data = path.read_bytes()
    except OSError as exc:
        raise EditsError(f"image {path.name}: cannot read: {exc.strerror or exc}") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ("PNG", "JPEG"):
                raise EditsError(f"image {path.name}: {img.format or 'unknown'} format; PNG or JPEG only")
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise EditsError(f"image {path.name}: {img.width}x{img.height} is larger than "
                                 f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels")
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                img = flat
            else:
                img = img.convert("RGB")
            buf = io.BytesIO()
            img.save(buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
            return buf.getvalue()
    except EditsError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise EditsError(f"image {path.name}: not a readable PNG or JPEG ({' '.join(str(exc).split())})") from None


def _image_png(image: str, overlay_dir: Path, root: Path, where: str) -> bytes:
    try:
        return image_png(resolve_image(image, overlay_dir, root))
    except EditsError as exc:
        raise EditsError(f"{where}: insert: {exc}") from None
