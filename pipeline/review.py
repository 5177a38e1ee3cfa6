"""Review sign-off: record in a recording's sidecar that a person checked its SOP.

The sidecar is the one file beside the recording that people own, so the
review lives there, as ``last_reviewed: {date, by}``, and the audit dates
overdue reviews from it. People write sidecars by hand, so the edit is a
round trip (ruamel.yaml) that keeps their comments, key order and quoting;
only the ``last_reviewed`` entry changes. The file is replaced atomically.
"""
from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from .build import VIDEO_SUFFIXES
from .fsutil import atomic_write_bytes
from .locate import LocateError, recording_of
from .schemas import validate
from .sidecar import SUFFIXES, SidecarError, load_sidecar, sidecar_path_for
from .sopread import SopReadError, read_sop

KEY = "last_reviewed"
# Indentations tried, most common first, to re-emit a sidecar the way it was written.
_INDENTS = ((2, 2, 0), (2, 4, 2), (4, 4, 0), (4, 6, 2), (4, 4, 2), (2, 4, 0))


class ReviewError(ValueError):
    """The review could not be recorded; the message is one line naming the file."""


class ReviewTargetError(ReviewError):
    """The SOP / recording / sidecar given cannot be found (a usage error)."""


@dataclass(frozen=True)
class Review:
    sidecar: Path  # the sidecar written
    created: bool  # it did not exist before
    date: str  # YYYY-MM-DD
    by: str


def review(target: Path, by: str, on: date, recordings: Path | None = None) -> Review:
    """Record a review of ``target`` by ``by`` on day ``on`` in its sidecar.

    ``target`` is an SOP folder or its sop.json (its recording is found through
    the index.json of the SOP tree, else sop.json's source.path, relative to
    ``recordings``, default the current folder), a recording, or a sidecar.
    """
    by = " ".join(str(by).split())
    errors = validate("sidecar", {KEY: {"date": on.isoformat(), "by": by}})
    if errors:
        raise ReviewTargetError(f"--by {by!r}: {errors[0].split(': ', 1)[-1]}")
    path = sidecar_for(Path(target), Path(recordings) if recordings is not None else None)
    created = not path.exists()
    text = "" if created else _check_and_read(path)
    new_text = set_last_reviewed(text, on.isoformat(), by, where=str(path))
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    atomic_write_bytes(path, (bom + new_text).encode("utf-8"))
    return Review(path, created, on.isoformat(), by)


def sidecar_for(target: Path, recordings: Path | None = None) -> Path:
    """The sidecar path for an SOP folder / sop.json, a recording or a sidecar."""
    name = target.name.lower()
    if name.endswith(SUFFIXES):
        if not target.parent.is_dir():
            raise ReviewTargetError(f"{target}: no such folder {target.parent}")
        return target
    if target.suffix.lower() in VIDEO_SUFFIXES:
        if not target.is_file():
            raise ReviewTargetError(f"{target}: no such recording")
        return _sidecar_of(target)
    sop_json = target / "sop.json" if target.is_dir() else target
    if sop_json.name != "sop.json" or not sop_json.is_file():
        raise ReviewTargetError(f"{target}: not an SOP folder, sop.json, recording or sidecar")
    try:
        recording = recording_of(sop_json, _read_sop(sop_json), recordings).recording
    except LocateError as exc:
        raise ReviewTargetError(str(exc)) from None
    return _sidecar_of(recording)


def _sidecar_of(recording: Path) -> Path:
    try:
        return sidecar_path_for(recording)
    except SidecarError as exc:
        raise ReviewError(str(exc)) from None


def _read_sop(sop_json: Path) -> dict:
    try:
        return read_sop(sop_json)
    except SopReadError as exc:
        raise ReviewError(str(exc)) from None


def _check_and_read(path: Path) -> str:
    """The sidecar's text, after the build's own strict checks: a review is not
    recorded into a sidecar the build would refuse."""
    try:
        load_sidecar(path)
    except SidecarError as exc:
        raise ReviewError(f"{exc}; fix it before recording a review") from None
    return path.read_bytes().decode("utf-8-sig")


def set_last_reviewed(text: str, day: str, by: str, where: str = "sidecar") -> str:
    """``text`` (a sidecar's YAML) with ``last_reviewed`` set to ``{date: day, by: by}``,
    everything else as it was: an existing entry is updated in place, a new one
    goes after ``review_every_days`` (else at the end)."""
    yaml, doc = _load_round_trip(text, where)
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ReviewError(f"{where}: expected a mapping of keys to values at the top level")
    current = doc.get(KEY)
    if isinstance(current, CommentedMap):
        for extra in [k for k in current if k not in ("date", "by")]:
            del current[extra]
        current["date"], current["by"] = day, by
    else:
        entry = CommentedMap([("date", day), ("by", by)])
        if KEY in doc:
            doc[KEY] = entry
        elif "review_every_days" in doc:
            doc.insert(list(doc).index("review_every_days") + 1, KEY, entry)
            _pass_on_trailing_lines(doc, "review_every_days", entry)
        else:
            doc[KEY] = entry
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def _pass_on_trailing_lines(doc: CommentedMap, key: str, entry: CommentedMap) -> None:
    """ruamel keeps the blank lines and comments that follow ``key`` on ``key``'s
    own comment token; the new entry now sits after ``key``, so what followed
    ``key``'s line moves to the end of the entry (the next key's comment and its
    separating blank line stay where the person put them)."""
    item = doc.ca.items.get(key)
    token = item[2] if item and len(item) > 2 else None
    if token is None or "\n" not in token.value:
        return
    own, following = token.value.split("\n", 1)
    if not following:
        return
    moved = copy.copy(token)
    moved.value = "\n" + following
    token.value = own + "\n"
    entry.ca.items[list(entry)[-1]] = [None, None, moved, None]


def _load_round_trip(text: str, where: str):
    """A round-trip YAML instance set up to re-emit ``text`` unchanged, and the document."""
    text = text.lstrip("\ufeff")
    chosen = None
    for mapping, sequence, offset in _INDENTS:
        yaml = _yaml(mapping, sequence, offset, text)
        try:
            doc = yaml.load(text)
        except YAMLError as exc:
            raise ReviewError(f"{where}: invalid YAML: {' '.join(str(exc).split())}") from None
        if chosen is None:
            chosen = (yaml, doc)
        if not text.strip():
            break
        out = io.StringIO()
        yaml.dump(doc, out)
        if out.getvalue() == text:
            return yaml, doc
    return chosen


def _yaml(mapping: int, sequence: int, offset: int, text: str) -> YAML:
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a person's long lines
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    yaml.explicit_start = text.lstrip().startswith("---")
    return yaml
