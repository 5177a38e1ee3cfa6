"""Semantic diff of SOPs: what a reviewer needs to know changed between two versions.

A pull request that touches a recording regenerates its SOP, and the byte diff
of sop.json is useless for review: every timing, hash and narration timestamp
moves even when the procedure is the same. This module compares what the SOP
*says*:

- Steps are matched across versions by what they are, not where they are: the
  similarity of their instructions (content words, order-aware, a compound
  split or joined alike, a different leading verb weighs against) and of their
  screenshots (a perceptual measure, below), with the stable step id as
  supporting evidence, by an optimal assignment that only accepts pairs
  scoring at least ``MATCH_THRESHOLD``.
- A matched step is *moved* only when it left the longest run of steps that
  kept their relative order, so steps renumbered by an insertion are not moved.
- A matched step is *changed* when its instruction, kind, callouts (which
  kinds), inputs, notes or links differ, or its screenshot differs
  perceptually. Speech-recognition noise is not a change: narration text and
  the wording of generated callouts (sentences quoted from the narration) are
  reported as minor information only, as are timings, hashes, the recording's
  bytes and the generator. A re-recording of the same procedure therefore
  reports no change.
- Human edits (the ``edited`` contract in sop.json) are compared on two levels:
  the generated originals (``edited.generated``) against each other, and the
  effective values whenever a person edited the field on either side; each
  change carries its origin, ``generated`` (made by ``sopline build`` from the
  recording and its sidecar) or ``human`` (from the edits overlay).

Screenshot measure: mean SSIM of gray images downscaled 2x, over (a) the union
of both steps' highlighted regions, cropped at the same place in both images,
and (b) each step's own highlighted region aligned at its corner (the result
may sit elsewhere on screen, e.g. a terminal that scrolled differently); the
higher of the two counts, the whole image when either step has no highlight.
The screenshot changed when it is below ``SCREENSHOT_CHANGED_BELOW``. Measured
on the fixture recordings: identical steps re-recorded or re-encoded at CRF 32
score >= 0.98; one word changed in a terminal line ("database" -> "ledger")
scores 0.87; different steps score <= 0.82.
"""
from __future__ import annotations

import difflib
import io
import posixpath
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity

from .model import OrphanedEdit
from .sopread import MAX_SOP_BYTES, SopReadError, parse_sop, read_sop

SCHEMA_VERSION = 1
MATCH_THRESHOLD = 0.5  # a pair of steps scoring less is an added + a removed step
SCREENSHOT_CHANGED_BELOW = 0.95  # perceptual similarity under which a screenshot changed
_ID_MATCH_SCORE = 0.9  # same stable id: the same step unless something matches better
_VERB_MISMATCH = 0.75  # "Check the service" vs "Drain the service" share words, not the action
_POSITION_WEIGHT = 0.01  # breaks ties between repeated steps in favour of keeping order
_IMAGE_FLOOR = 0.85  # screenshot similarity of unrelated steps reaches ~0.82: no evidence below
_REGION_PAD = 8
_MAX_IMAGE_BYTES = 64 * 1024 * 1024
_MAX_IMAGE_PIXELS = 40_000_000

_LIST_FIELDS = ("callouts", "inputs", "notes", "links")
_STEP_FIELDS = ("instruction", "kind", "callouts", "inputs", "notes", "links")
_STOP = frozenset("a an the to of and or in on at for with into from by is it this that then now so".split())


class DiffError(ValueError):
    """An input side cannot be read as SOPs (missing path, git failure); one line."""


# ------------------------------------------------------------------ report

@dataclass(frozen=True)
class WordOp:
    """One run of a word-level diff: ``equal``, ``delete`` or ``insert``."""

    op: str
    text: str


@dataclass(frozen=True)
class FieldChange:
    """A changed field of a step (``instruction``...) or of the SOP (``title``,
    ``metadata.owner``...). ``overridden``: a generated change the reader does
    not see, because a person's edit replaces the field in the new version."""

    field: str
    origin: str  # "generated" | "human"
    old: object = None
    new: object = None
    overridden: bool = False
    words: tuple[WordOp, ...] = ()


@dataclass(frozen=True)
class StepRef:
    number: int
    id: str
    instruction: str
    screenshot: str | None  # path for reviewers: the SOP folder's path + the screenshot's


@dataclass(frozen=True)
class StepChange:
    status: str  # "added" | "removed" | "changed" | "moved"
    old: StepRef | None
    new: StepRef | None
    origin: str = "generated"
    moved: bool = False
    fields: tuple[FieldChange, ...] = ()
    screenshot_changed: bool = False
    screenshot_similarity: float | None = None
    screenshot_origin: str | None = None  # set when screenshot_changed
    match: float | None = None  # the matching score of the pair
    reasons: tuple[str, ...] = ()  # why a person's edit added/removed it
    info: tuple[str, ...] = ()  # minor differences, not counted as changes


@dataclass(frozen=True)
class SopDiff:
    sop: str  # folder path relative to the tree root
    status: str  # "added" | "removed" | "changed" | "unchanged"
    title: str
    steps_old: int | None = None
    steps_new: int | None = None
    fields: tuple[FieldChange, ...] = ()
    steps: tuple[StepChange, ...] = ()
    orphaned: tuple[OrphanedEdit, ...] = ()
    orphaned_changed: bool = False
    info: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.status != "unchanged"

    @property
    def counts(self) -> dict[str, int]:
        return {
            "added": sum(s.status == "added" for s in self.steps),
            "removed": sum(s.status == "removed" for s in self.steps),
            "moved": sum(s.moved for s in self.steps),
            "changed": sum(s.status == "changed" for s in self.steps),
            "screenshot_changed": sum(s.screenshot_changed for s in self.steps),
        }


@dataclass(frozen=True)
class DiffReport:
    sops: tuple[SopDiff, ...]
    base: str | None = None  # the git ref compared against, with --base

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.sops)


# ------------------------------------------------------------------- input

ImageReader = Callable[[str], "bytes | None"]


def _no_images(path: str) -> bytes | None:
    return None


@dataclass(frozen=True)
class SopVersion:
    """One version of one SOP: its document, how to read its screenshots (by
    path relative to sop.json) and the folder path reports use for them."""

    doc: dict
    image: ImageReader = _no_images
    ref_dir: str = ""

    @classmethod
    def from_folder(cls, folder: Path, doc: dict | None = None, ref_dir: str = "") -> "SopVersion":
        """An SOP folder on disk; ``doc`` replaces its sop.json when given."""
        folder = Path(folder)
        return cls(doc if doc is not None else read_sop(folder), _folder_images(folder), ref_dir)


@dataclass(frozen=True)
class SopFile:
    """One SOP of a side, not read yet."""

    key: str
    where: str  # for error messages: a path, or REF:path
    read: Callable[[], bytes]
    image: ImageReader
    ref_dir: str

    def load(self) -> SopVersion:
        return SopVersion(parse_sop(self.read(), self.where), self.image, self.ref_dir)


@dataclass(frozen=True)
class Side:
    """What one side of a diff holds: SOPs by folder path relative to the tree root.
    ``single``: the side named one SOP (a sop.json or an SOP folder), not a tree."""

    sops: Mapping[str, SopFile]
    single: bool = False


def load_side(path: Path, ref_prefix: str = "") -> Side:
    """A sop.json file, an SOP folder or an output tree on disk. ``ref_prefix``
    goes before screenshot paths in reports (the tree's path in the repository)."""
    path = Path(path)
    if path.is_file():
        folder = path.parent
        key = folder.resolve().name or "sop"
        return Side({key: _disk_sop(key, path, folder, ref_prefix + key)}, single=True)
    if not path.is_dir():
        raise DiffError(f"{path}: no such file or folder")
    if (path / "sop.json").is_file():
        key = path.resolve().name or "sop"
        return Side({key: _disk_sop(key, path / "sop.json", path, ref_prefix.rstrip("/") or key)}, single=True)
    sops: dict[str, SopFile] = {}
    for f in sorted(path.rglob("sop.json")):
        rel = f.parent.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not f.is_file():
            continue  # staging folders of an interrupted build
        key = rel.as_posix()
        sops[key] = _disk_sop(key, f, f.parent, ref_prefix + key)
    if not sops and not (path / "index.json").is_file():
        raise DiffError(f"{path}: no sop.json or index.json found (not an SOP output folder)")
    return Side(sops)


def _disk_sop(key: str, file: Path, folder: Path, ref_dir: str) -> SopFile:
    def read() -> bytes:
        try:
            with open(file, "rb") as f:
                return f.read(MAX_SOP_BYTES + 1)
        except OSError as exc:
            raise SopReadError(f"{file}: {exc.strerror or exc}") from None

    return SopFile(key, str(file), read, _folder_images(folder), ref_dir)


def _folder_images(folder: Path) -> ImageReader:
    root = Path(folder).resolve()

    def image(rel: str) -> bytes | None:
        if not _safe_rel(rel):
            return None
        target = (root / rel).resolve()
        if root not in target.parents or not target.is_file():
            return None  # a symlink out of the SOP folder is not its screenshot
        try:
            if target.stat().st_size > _MAX_IMAGE_BYTES:
                return None
            return target.read_bytes()
        except OSError:
            return None

    return image


def _safe_rel(rel: object) -> bool:
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts


# --------------------------------------------------------------------- git

_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_LFS_POINTER_MAX = 1024  # the spec caps a pointer file below this


def _git(args: Sequence[str], cwd: Path) -> bytes:
    try:
        proc = subprocess.run(["git", "--literal-pathspecs", *args], cwd=cwd, capture_output=True, check=False)
    except OSError as exc:
        raise DiffError(f"git: {exc.strerror or exc}") from None
    if proc.returncode:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DiffError(f"git {args[0]}: {lines[0] if lines else f'exit status {proc.returncode}'}")
    return proc.stdout


def git_location(out: Path) -> tuple[Path, str]:
    """The repository's top-level folder and ``out``'s path inside it ("sops/")."""
    out = Path(out)
    if not out.is_dir():
        raise DiffError(f"{out}: no such folder")
    try:
        lines = _git(["rev-parse", "--show-toplevel", "--show-prefix"], out).decode("utf-8", "surrogateescape")
    except DiffError:
        raise DiffError(f"{out}: not inside a git repository") from None
    top, _, prefix = lines.rstrip("\n").partition("\n")
    return Path(top), prefix.strip("\n")


def load_git_side(out: Path, ref: str) -> Side:
    """The SOPs under ``out`` as they are at git ``ref``, read with git (no
    checkout). ``out`` missing at ``ref`` gives an empty side (all SOPs added)."""
    top, prefix = git_location(out)
    if not ref or ref.startswith("-") or any(c in ref for c in "\x00\n"):
        raise DiffError(f"{ref!r}: not a valid git ref")
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], top).decode().strip()
    except DiffError:
        raise DiffError(f"{ref}: not a commit in the repository of {out}") from None
    listing = _git(["ls-tree", "-r", "-l", "-z", commit, "--", *([prefix] if prefix else [])], top)
    blobs: dict[str, tuple[str, int]] = {}
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        parts = meta.split()
        if len(parts) != 4 or parts[1] != b"blob" or parts[0] not in (b"100644", b"100755"):
            continue  # symlinks and submodules are not SOP files
        size = int(parts[3]) if parts[3].isdigit() else 0
        blobs[raw_path.decode("utf-8", "surrogateescape")] = (parts[2].decode(), size)

    def reader(path: str, limit: int) -> bytes | None:
        entry = blobs.get(path)
        if entry is None or entry[1] > limit:
            return None
        try:
            data = _git(["cat-file", "blob", entry[0]], top)
        except DiffError:
            return None
        if len(data) <= _LFS_POINTER_MAX and data.startswith(_LFS_POINTER):
            # screenshots kept in Git LFS: the blob is a pointer; the checkout's own smudge
            # filter (git-lfs, from its local store or the remote) gives the image, as a
            # checkout would. Without git-lfs the pointer stays unreadable as an image.
            try:
                data = _git(["cat-file", "--filters", f"{commit}:{path}"], top)
            except DiffError:
                return None
            if len(data) > limit:
                return None
        return data

    def sop_file(key: str, json_path: str, ref_dir: str) -> SopFile:
        where = f"{ref}:{json_path}"
        folder = posixpath.dirname(json_path)

        def read() -> bytes:
            size = blobs[json_path][1]
            if size > MAX_SOP_BYTES:
                raise SopReadError(f"{where}: larger than {MAX_SOP_BYTES // (1024 * 1024)} MB")
            data = reader(json_path, MAX_SOP_BYTES)
            if data is None:
                raise SopReadError(f"{where}: cannot be read from git")
            return data

        def image(rel: str) -> bytes | None:
            if not _safe_rel(rel):
                return None
            return reader(posixpath.normpath(posixpath.join(folder, rel)), _MAX_IMAGE_BYTES)

        return SopFile(key, where, read, image, ref_dir)

    if f"{prefix}sop.json" in blobs:
        key = PurePosixPath(prefix.rstrip("/")).name or "sop"
        return Side({key: sop_file(key, f"{prefix}sop.json", prefix.rstrip("/") or key)}, single=True)
    sops: dict[str, SopFile] = {}
    for path in sorted(blobs):
        if not path.startswith(prefix) or not path.endswith("/sop.json"):
            continue
        key = path[len(prefix):-len("/sop.json")]
        if any(part.startswith(".") for part in key.split("/")):
            continue
        sops[key] = sop_file(key, path, prefix + key)
    return Side(sops)


def diff_against_ref(out: Path, ref: str) -> DiffReport:
    """The working tree's ``out`` compared with the same path at git ``ref``."""
    _, prefix = git_location(out)
    old = load_git_side(out, ref)
    new = load_side(out, ref_prefix=prefix)
    return diff_trees(old, new, base=ref)


# -------------------------------------------------------------------- diff

def diff_trees(old: Side, new: Side, base: str | None = None) -> DiffReport:
    """Compare every SOP of two sides, matched by folder path (two single SOPs
    are compared with each other whatever their folder names)."""
    if old.single and new.single:
        ofile, (nkey, nfile) = next(iter(old.sops.values())), next(iter(new.sops.items()))
        return DiffReport((diff_sop(nkey, ofile.load(), nfile.load()),), base)
    if (old.single and new.sops) or (new.single and old.sops):
        raise DiffError("cannot compare one SOP with a tree of SOPs: give two sop.json files or "
                        "SOP folders, or two output folders")
    out = []
    for key in sorted(set(old.sops) | set(new.sops)):
        o, n = old.sops.get(key), new.sops.get(key)
        out.append(diff_sop(key, o.load() if o else None, n.load() if n else None))
    return DiffReport(tuple(out), base)


def diff_sop(key: str, old: SopVersion | None, new: SopVersion | None) -> SopDiff:
    """What changed in one SOP; ``None`` for a side where it does not exist."""
    if old is None and new is None:
        raise ValueError("diff_sop needs at least one version")
    if old is None or new is None:
        version = new or old
        status = "added" if new is not None else "removed"
        steps = tuple(_whole_step(status, s, version) for s in _steps(version.doc))
        return SopDiff(key, status, str(version.doc.get("title", "")),
                       steps_old=None if old is None else len(steps),
                       steps_new=None if new is None else len(steps), steps=steps,
                       orphaned=_orphans(new.doc) if new else ())
    odoc, ndoc = old.doc, new.doc
    fields = _sop_fields(odoc, ndoc)
    steps, step_info = ((), ()) if odoc == ndoc else _step_changes(old, new)
    orphaned = _orphans(ndoc)
    orphaned_changed = set(orphaned) != set(_orphans(odoc))
    info = _sop_info(odoc, ndoc) + step_info
    changed = bool(fields or steps or orphaned_changed)
    return SopDiff(key, "changed" if changed else "unchanged", str(ndoc.get("title", "")),
                   steps_old=len(_steps(odoc)), steps_new=len(_steps(ndoc)), fields=fields,
                   steps=steps, orphaned=orphaned, orphaned_changed=orphaned_changed, info=info)


def _steps(doc: dict) -> list[dict]:
    return [s for s in doc.get("steps", []) if isinstance(s, dict)]


def _edits(doc: dict) -> dict:
    edits = doc.get("edits")
    return edits if isinstance(edits, dict) else {}


def _orphans(doc: dict) -> tuple[OrphanedEdit, ...]:
    out = []
    for o in _edits(doc).get("orphaned") or []:
        if isinstance(o, dict):
            fields = tuple(str(f) for f in o.get("fields") or [] if isinstance(f, str))
            out.append(OrphanedEdit(str(o.get("step", "")), fields, str(o.get("reason", ""))))
    return tuple(sorted(set(out), key=lambda o: (o.step, o.fields, o.reason)))


def _ref(step: dict, version: SopVersion) -> StepRef:
    shot = step.get("screenshot")
    path = shot.get("path") if isinstance(shot, dict) else None
    shown = None
    if isinstance(path, str) and _safe_rel(path):
        shown = posixpath.normpath(posixpath.join(version.ref_dir, path)) if version.ref_dir else path
    return StepRef(int(step.get("number", 0)), str(step.get("id", "")), str(step.get("instruction", "")), shown)


def _manual(step: dict) -> bool:
    return step.get("origin") == "manual"


def _whole_step(status: str, step: dict, version: SopVersion) -> StepChange:
    ref = _ref(step, version)
    return StepChange(status, ref if status == "removed" else None, ref if status == "added" else None,
                      origin="human" if _manual(step) else "generated")


# ---------------------------------------------------------- SOP-level fields

def _sop_fields(odoc: dict, ndoc: dict) -> tuple[FieldChange, ...]:
    """Title, summary and metadata changes; fields a person set (``edits.sop_fields``)
    are compared like step fields: generated originals, then effective values."""
    ometa, nmeta = _dict(odoc.get("metadata")), _dict(ndoc.get("metadata"))
    names = ["id", "title", "summary"] + [f"metadata.{k}" for k in sorted(set(ometa) | set(nmeta), key=str)]
    out = []
    for name in names:
        o_human, n_human = name in _sop_human(odoc), name in _sop_human(ndoc)
        og, ng = _sop_generated(odoc, name), _sop_generated(ndoc, name)
        if og != ng:
            out.append(_field_change(name, "generated", og, ng, overridden=n_human))
        if o_human or n_human:
            oe, ne = _sop_value(odoc, name), _sop_value(ndoc, name)
            if oe != ne:
                out.append(_field_change(name, "human", oe, ne))
    return tuple(out)


def _sop_human(doc: dict) -> set[str]:
    return set(_str_list(_edits(doc).get("sop_fields")))


def _sop_value(doc: dict, name: str):
    if name.startswith("metadata."):
        return _dict(doc.get("metadata")).get(name[len("metadata."):])
    return doc.get(name)


def _sop_generated(doc: dict, name: str):
    if name in _sop_human(doc):
        return _dict(_edits(doc).get("generated")).get(name)  # absent: the sidecar had none
    return _sop_value(doc, name)


def _sop_info(odoc: dict, ndoc: dict) -> tuple[str, ...]:
    info = []
    osrc, nsrc = _dict(odoc.get("source")), _dict(ndoc.get("source"))
    ogen, ngen = _dict(odoc.get("generator")), _dict(ndoc.get("generator"))
    if osrc.get("sha256") != nsrc.get("sha256"):
        info.append("recording replaced (different bytes)")
    if (osrc.get("width"), osrc.get("height")) != (nsrc.get("width"), nsrc.get("height")):
        info.append(f"video size {osrc.get('width')}x{osrc.get('height')} -> {nsrc.get('width')}x{nsrc.get('height')}")
    if ogen.get("version") != ngen.get("version"):
        info.append(f"generator version {ogen.get('version')} -> {ngen.get('version')}")
    if ogen.get("model") != ngen.get("model"):
        info.append(f"speech model {ogen.get('model')} -> {ngen.get('model')}")
    elif ogen.get("settings_sha256") != ngen.get("settings_sha256"):
        info.append("build settings changed")
    return tuple(info)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _str_list(value) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


# ---------------------------------------------------------- step matching

def _tokens(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+(?:[.'][a-z0-9]+)*", str(text).lower()) if w not in _STOP]


def text_similarity(a: str, b: str) -> float:
    """0..1: how alike two instructions are, by content words in order; a
    different first word (the imperative verb) costs a quarter."""
    ta, tb = _tokens(a), _tokens(b)
    ta, tb = _joined_compounds(ta, tb), _joined_compounds(tb, ta)
    if not ta or not tb:
        return 1.0 if " ".join(str(a).lower().split()) == " ".join(str(b).lower().split()) else 0.0
    ratio = difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()
    return ratio * (1.0 if ta[0] == tb[0] else _VERB_MISMATCH)


def _joined_compounds(tokens: list[str], other: list[str]) -> list[str]:
    """``tokens`` with each pair of neighbours that ``other`` writes as one word joined:
    recognisers and people split and join compounds freely ("snap shot" / "snapshot",
    "roll back" / "rollback"; tiny.en hears the fixture's "snapshot" as two words on some
    CPUs and as one on others)."""
    whole, out, i = set(other), [], 0
    while i < len(tokens):
        if i + 1 < len(tokens) and tokens[i] + tokens[i + 1] in whole:
            out.append(tokens[i] + tokens[i + 1])
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return out


class _Shots:
    """Decoded screenshots of one SOP version, loaded once each."""

    def __init__(self, version: SopVersion):
        self.version = version
        self._cache: dict[str, _Screen | None] = {}

    def get(self, step: dict) -> tuple[_Screen | None, dict | None, str | None]:
        shot = step.get("screenshot")
        if not isinstance(shot, dict):
            return None, None, None
        path = shot.get("path")
        if not isinstance(path, str):
            return None, None, None
        if path not in self._cache:
            data = self.version.image(path)
            self._cache[path] = _screen(data) if data else None
        box = shot.get("highlight") if isinstance(shot.get("highlight"), dict) else None
        return self._cache[path], box, shot.get("sha256")


def _step_changes(old: SopVersion, new: SopVersion) -> tuple[tuple[StepChange, ...], tuple[str, ...]]:
    """The changed steps, and minor differences of the steps that did not change."""
    osteps, nsteps = _steps(old.doc), _steps(new.doc)
    oshots, nshots = _Shots(old), _Shots(new)
    shot_sim: dict[tuple[int, int], float | None] = {}

    def image_sim(i: int, j: int) -> float | None:
        if (i, j) not in shot_sim:
            shot_sim[(i, j)] = _shot_similarity(oshots.get(osteps[i]), nshots.get(nsteps[j]))
        return shot_sim[(i, j)]

    pairs = match_steps(osteps, nsteps, image_sim)
    moved = _moved(pairs)
    ndropped = set(_str_list(_edits(new.doc).get("dropped")))
    nmerged = set(_str_list(_edits(new.doc).get("merged")))
    odropped = set(_str_list(_edits(old.doc).get("dropped"))) | set(_str_list(_edits(old.doc).get("merged")))

    changes: list[tuple[tuple, StepChange]] = []
    quiet: list[str] = []
    matched_old = {i: j for i, j, _ in pairs}
    matched_new = {j for _, j, _ in pairs}
    for i, j, score in pairs:
        o, n = osteps[i], nsteps[j]
        fields, info = _step_field_changes(o, n)
        shot_changed, sim = _screenshot_change(o, n, image_sim(i, j))
        if sim is None and shot_changed is None:
            info.append("screenshot not compared: an image is missing or unreadable")
        is_moved = (i, j) in moved
        if not (fields or shot_changed or is_moved):
            quiet += [f"step {n.get('number')}: {line}" for line in info]
            continue
        status = "changed" if fields or shot_changed else "moved"
        shot_origin = None
        if shot_changed:
            human = "screenshot" in _edited_fields(o) | _edited_fields(n)
            shot_origin = "human" if human else "generated"
        origins = [f.origin for f in fields] + ([shot_origin] if shot_origin else [])
        change = StepChange(status, _ref(o, old), _ref(n, new), moved=is_moved, fields=tuple(fields),
                            screenshot_changed=bool(shot_changed),
                            screenshot_similarity=None if sim is None else round(sim, 3),
                            screenshot_origin=shot_origin, match=round(score, 3), info=tuple(info),
                            origin="human" if origins and all(x == "human" for x in origins) else "generated")
        changes.append(((j, 1, i), change))
    for i, o in enumerate(osteps):
        if i in matched_old:
            continue
        anchor = max((matched_old[k] for k in matched_old if k < i), default=-1)
        sid = str(o.get("id", ""))
        reasons = []
        if sid in ndropped:
            reasons.append("dropped by a person")
        if sid in nmerged:
            reasons.append("merged into another step by a person")
        if _manual(o):
            reasons.append("a step a person had added")
        change = StepChange("removed", _ref(o, old), None, origin="human" if reasons else "generated",
                            reasons=tuple(reasons))
        changes.append(((anchor, 2, i), change))
    for j, n in enumerate(nsteps):
        if j in matched_new:
            continue
        reasons = []
        if _manual(n):
            reasons.append("added by a person")
        if str(n.get("id", "")) in odropped:
            reasons.append("no longer dropped or merged by a person")
        change = StepChange("added", None, _ref(n, new), origin="human" if reasons else "generated",
                            reasons=tuple(reasons))
        changes.append(((j, 0, -1), change))
    changes.sort(key=lambda c: c[0])
    return tuple(c for _, c in changes), tuple(quiet)


def match_steps(osteps: Sequence[dict], nsteps: Sequence[dict],
                image_sim: Callable[[int, int], float | None] | None = None) -> list[tuple[int, int, float]]:
    """Pairs (old index, new index, score) of the same step in two versions.

    First by instruction (and id): the assignment with the highest total score
    among pairs scoring at least ``MATCH_THRESHOLD``, ties going to pairs that
    keep their relative position. Then the steps left over on both sides are
    paired the same way with their screenshots as further evidence (a step a
    person reworded entirely still shows the same screen). Comparing screenshots
    only among the leftovers keeps the cost near linear in the number of steps.
    """
    n, m = len(osteps), len(nsteps)
    pairs = _assign(osteps, nsteps, range(n), range(m), None)
    if image_sim is not None:
        left_old = [i for i in range(n) if i not in {p[0] for p in pairs}]
        left_new = [j for j in range(m) if j not in {p[1] for p in pairs}]
        if left_old and left_new:
            pairs += _assign(osteps, nsteps, left_old, left_new, image_sim)
    return sorted(pairs)


def _assign(osteps, nsteps, rows: Sequence[int], cols: Sequence[int],
            image_sim: Callable[[int, int], float | None] | None) -> list[tuple[int, int, float]]:
    rows, cols = list(rows), list(cols)
    if not rows or not cols:
        return []
    n, m = len(osteps), len(nsteps)
    scores = np.zeros((len(rows), len(cols)))
    objective = np.zeros_like(scores)
    for a, i in enumerate(rows):
        for b, j in enumerate(cols):
            score = _pair_score(osteps[i], nsteps[j], image_sim(i, j) if image_sim else None)
            scores[a, b] = score
            if score >= MATCH_THRESHOLD:
                objective[a, b] = score - _POSITION_WEIGHT * abs((i + 0.5) / n - (j + 0.5) / m)
    picked = zip(*linear_sum_assignment(objective, maximize=True))
    return [(rows[a], cols[b], float(scores[a, b])) for a, b in picked if scores[a, b] >= MATCH_THRESHOLD]


def _pair_score(o: dict, n: dict, image: float | None) -> float:
    text = max((text_similarity(a, b) for a in _instructions(o) for b in _instructions(n)), default=0.0)
    score = text
    if image is not None:
        evidence = min(1.0, max(0.0, (image - _IMAGE_FLOOR) / (1.0 - _IMAGE_FLOOR)))
        score = max(score, 0.5 * text + 0.5 * evidence)
    if o.get("id") and o.get("id") == n.get("id"):
        score = max(score, _ID_MATCH_SCORE)
    return score


def _instructions(step: dict) -> set[str]:
    """The effective and the generated instruction: either may identify the step."""
    return {t for t in (step.get("instruction"), _generated(step, "instruction")) if isinstance(t, str) and t}


def _moved(pairs) -> set[tuple[int, int]]:
    """Matched pairs outside the longest run that kept its relative order."""
    if not pairs:
        return set()
    pairs = sorted((i, j) for i, j, _ in pairs)
    seq = [j for _, j in pairs]
    # longest increasing subsequence, O(n^2): SOPs have tens of steps
    best = [1] * len(seq)
    prev = [-1] * len(seq)
    for k in range(len(seq)):
        for q in range(k):
            if seq[q] < seq[k] and best[q] + 1 > best[k]:
                best[k], prev[k] = best[q] + 1, q
    k = max(range(len(seq)), key=lambda x: (best[x], -x))
    keep = set()
    while k >= 0:
        keep.add(k)
        k = prev[k]
    return {pairs[k] for k in range(len(pairs)) if k not in keep}


# ---------------------------------------------------- step field comparison

def _absent(name: str):
    return [] if name in _LIST_FIELDS else None


def _value(step: dict, name: str):
    return step.get(name, _absent(name))


class _Unknown:
    """The generated value of a field a person extended (notes added, a step
    merged in) without recording the original, or of a step a person added."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


def _edited_fields(step: dict) -> set[str]:
    if _manual(step):
        return set(_STEP_FIELDS) | {"screenshot"}
    edited = step.get("edited")
    return set(_str_list(edited.get("fields"))) if isinstance(edited, dict) else set()


def _generated(step: dict, name: str):
    """The field's value as generated, before any human edit, or UNKNOWN."""
    if _manual(step):
        return UNKNOWN
    if name in _edited_fields(step):
        generated = _dict(_dict(step.get("edited")).get("generated"))
        return generated[name] if name in generated else UNKNOWN
    return _value(step, name)


def _same(name: str, a, b, origin: str) -> bool:
    if name == "callouts" and origin == "generated":
        # generated callouts quote the narration: their wording is speech
        # recognition; whether the step warns, tips or asks to verify is content
        return _callout_kinds(a) == _callout_kinds(b)
    return a == b


def _callout_kinds(callouts) -> list[str]:
    return sorted(str(c.get("kind")) for c in callouts or [] if isinstance(c, dict))


def _step_field_changes(o: dict, n: dict) -> tuple[list[FieldChange], list[str]]:
    out: list[FieldChange] = []
    info: list[str] = []
    for name in _STEP_FIELDS:
        o_human, n_human = name in _edited_fields(o), name in _edited_fields(n)
        og, ng = _generated(o, name), _generated(n, name)
        if og is UNKNOWN or ng is UNKNOWN:
            pass  # only the effective values can be compared, below
        elif not _same(name, og, ng, "generated"):
            out.append(_field_change(name, "generated", og, ng, overridden=n_human))
        elif og != ng and name == "callouts":
            info.append("callout wording differs (speech recognition)")
        if o_human or n_human:
            oe, ne = _value(o, name), _value(n, name)
            if not _same(name, oe, ne, "human"):
                out.append(_field_change(name, "human", oe, ne))
    if _narration_text(o) != _narration_text(n):
        info.append("narration wording differs (speech recognition)")
    return out, info


def _narration_text(step: dict) -> str:
    return " ".join(str(s.get("text", "")) for s in step.get("narration") or [] if isinstance(s, dict))


def _field_change(name: str, origin: str, old, new, overridden: bool = False) -> FieldChange:
    words = word_diff(old, new) if isinstance(old, str) and isinstance(new, str) else ()
    return FieldChange(name, origin, old, new, overridden, words)


def word_diff(old: str, new: str) -> tuple[WordOp, ...]:
    """Word-level diff of two texts as runs of equal, deleted and inserted words."""
    a, b = str(old).split(), str(new).split()
    ops: list[WordOp] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            ops.append(WordOp("equal", " ".join(a[i1:i2])))
            continue
        if i2 > i1:
            ops.append(WordOp("delete", " ".join(a[i1:i2])))
        if j2 > j1:
            ops.append(WordOp("insert", " ".join(b[j1:j2])))
    return tuple(ops)


# ------------------------------------------------------------- screenshots

class _Screen(NamedTuple):
    """A screenshot ready to compare: gray 0..1 pixels at ``scale`` x the source size."""

    pixels: np.ndarray
    scale: float


def _screen(data: bytes) -> _Screen | None:
    """Decode a PNG to gray at half size: the 2x2 box average drops compression
    noise and 1-pixel jitter, and quarters the work."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > _MAX_IMAGE_PIXELS:
                return None
            gray = im.convert("L")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None
    scale = 1.0
    if gray.width >= 32 and gray.height >= 32:
        gray, scale = gray.reduce(2), gray.reduce(2).width / gray.width
    return _Screen(np.asarray(gray, dtype=np.float32) / 255.0, scale)


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    if h < 1 or w < 1:
        return 0.0
    a, b = a[:h, :w], b[:h, :w]
    side = min(h, w)
    if side < 3:
        return 1.0 - float(np.abs(a - b).mean())
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, data_range=1.0, win_size=win))


def _box(box: dict | None, sx: float, sy: float) -> tuple[int, int, int, int] | None:
    if not isinstance(box, dict):
        return None
    try:
        x, y, w, h = (int(box[k]) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError):
        return None
    if w <= 0 or h <= 0:
        return None
    return round(x * sx), round(y * sy), max(1, round(w * sx)), max(1, round(h * sy))


def screenshot_similarity(old_png: bytes, old_box: dict | None, new_png: bytes, new_box: dict | None) -> float | None:
    """Perceptual similarity (0..1) of two steps' screenshots (PNG bytes, with
    their highlight boxes from sop.json); None when an image cannot be decoded.
    See the module docstring for the measure."""
    old, new = _screen(old_png), _screen(new_png)
    if old is None or new is None:
        return None
    return _similarity(old, old_box, new, new_box)


def _similarity(old: _Screen, old_box: dict | None, new: _Screen, new_box: dict | None) -> float:
    a, b = old.pixels, new.pixels
    ry = rx = 1.0
    if b.shape != a.shape:  # another video size: compare at the old one's
        ry, rx = a.shape[0] / b.shape[0], a.shape[1] / b.shape[1]
        img = Image.fromarray(np.uint8(np.clip(b * 255.0, 0, 255)))
        b = np.asarray(img.resize((a.shape[1], a.shape[0]), Image.BILINEAR), dtype=np.float32) / 255.0
    ob = _box(old_box, old.scale, old.scale)
    nb = _box(new_box, new.scale * rx, new.scale * ry)
    if ob is None or nb is None:
        return _ssim(a, b)
    height, width = a.shape
    pad = max(1, round(_REGION_PAD * old.scale))
    x0, y0 = max(0, min(ob[0], nb[0]) - pad), max(0, min(ob[1], nb[1]) - pad)
    x1 = min(width, max(ob[0] + ob[2], nb[0] + nb[2]) + pad)
    y1 = min(height, max(ob[1] + ob[3], nb[1] + nb[3]) + pad)
    union = _ssim(a[y0:y1, x0:x1], b[y0:y1, x0:x1]) if x1 > x0 and y1 > y0 else 0.0
    w, h = max(ob[2], nb[2]), max(ob[3], nb[3])
    aligned = _ssim(a[ob[1]:ob[1] + h, ob[0]:ob[0] + w], b[nb[1]:nb[1] + h, nb[0]:nb[0] + w])
    return max(union, aligned)


def _shot_similarity(o, n) -> float | None:
    (oimg, obox, osha), (nimg, nbox, nsha) = o, n
    if osha and osha == nsha:
        return 1.0
    if oimg is None or nimg is None:
        return None
    return _similarity(oimg, obox, nimg, nbox)


def _screenshot_change(o: dict, n: dict, sim: float | None):
    """(changed, similarity); changed is None when it could not be compared."""
    has_o, has_n = isinstance(o.get("screenshot"), dict), isinstance(n.get("screenshot"), dict)
    if not has_o and not has_n:
        return False, None
    if has_o != has_n:
        return True, None
    if sim is None:
        return None, None
    return sim < SCREENSHOT_CHANGED_BELOW, sim
