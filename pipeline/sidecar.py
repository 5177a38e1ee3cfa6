"""The optional ``<recording>.sop.yaml`` sidecar: what a recording cannot know.

Sidecars come from pull requests, so they are parsed defensively: safe YAML
only, a size cap, no aliases (a few bytes of nested aliases expand into an
enormous structure), no duplicate keys (YAML would silently keep the last one),
and a schema check. Unknown keys only warn, so a sidecar written for a newer
sopline still builds with an older one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.schemas import load_schema, validate

MAX_BYTES = 256 * 1024
SUFFIXES = (".sop.yaml", ".sop.yml")
_MAX_REPORTED = 5


class SidecarError(ValueError):
    """A sidecar that cannot be used; the message is one line naming the file
    and the problem."""


@dataclass(frozen=True)
class Sidecar:
    """The sidecar's known keys (schema-valid) and what was ignored."""

    fields: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def sidecar_path_for(recording: Path) -> Path:
    """The sidecar of ``recording``: ``<stem>.sop.yaml`` beside it, or
    ``<stem>.sop.yml`` if only that exists. The ``.sop.yaml`` path is returned
    when neither exists (check ``.exists()``); both existing is an error, since
    silently ignoring one would lose a user's edits."""
    recording = Path(recording)
    candidates = [recording.with_name(recording.stem + s) for s in SUFFIXES]
    existing = [p for p in candidates if p.exists()]
    if len(existing) > 1:
        raise SidecarError(
            f"{recording}: both {existing[0].name} and {existing[1].name} exist; keep one")
    return existing[0] if existing else candidates[0]


def load_sidecar(path: Path) -> Sidecar:
    """Read and check a sidecar; raises :class:`SidecarError`."""
    path = Path(path)
    data = _read_capped(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SidecarError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        raise SidecarError(f"{path}: invalid YAML{_where(e)}: {_problem(e)}") from None
    if doc is None:
        return Sidecar({}, ("sidecar is empty",))
    if not isinstance(doc, dict):
        raise SidecarError(
            f"{path}: expected a mapping of keys to values at the top level, got {_kind(doc)}")

    known = load_schema("sidecar")["properties"]
    fields = {k: v for k, v in doc.items() if isinstance(k, str) and k in known}
    warnings = tuple(f"unknown key {k!r} ignored" for k in doc if not (isinstance(k, str) and k in known))
    errors = validate("sidecar", fields)
    if errors:
        shown = "; ".join(errors[:_MAX_REPORTED])
        more = f" (and {len(errors) - _MAX_REPORTED} more)" if len(errors) > _MAX_REPORTED else ""
        raise SidecarError(f"{path}: {shown}{more}")
    return Sidecar(fields, warnings)


def _read_capped(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SidecarError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise SidecarError(f"{path}: larger than {MAX_BYTES // 1024} KB; a sidecar holds a few fields")
    return data


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and duplicate keys, and keeps dates as
    text (``last_reviewed: {date: 2026-11-26}``): the schema and sop.json (JSON)
    expect strings, not date objects."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a sidecar", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' may legitimately repeat keys
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key; let SafeLoader report it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _where(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    text = f"{problem} ({context})" if context and getattr(error, "problem", None) else problem
    return " ".join(str(text).split())


def _kind(value) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)
