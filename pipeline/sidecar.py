"""The optional ``<recording>.sop.yaml`` sidecar: what a recording cannot know.

Sidecars come from pull requests, so they are parsed defensively: safe YAML
only, a size cap, no aliases (a few bytes of nested aliases expand into an
enormous structure), no duplicate keys (YAML would silently keep the last one),
and a schema check. Unknown keys only warn, so a sidecar written for a newer
sopline still builds with an older one. A sidecar must be a regular file; a
symbolic link may only point at a file in the recording's own folder tree, so
a pull request cannot make the build read (and publish) a file from elsewhere
on the machine, nor hang it on a device such as /dev/zero.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.schemas import load_schema, validate

MAX_BYTES = 256 * 1024
SUFFIXES = (".sop.yaml", ".sop.yml")
_MAX_REPORTED = 5
_MAX_DEPTH = 64  # far beyond any sidecar; PyYAML recurses once per level


class SidecarError(ValueError):
    """A sidecar that cannot be used; the message is one line naming the file
    and the problem. ``reason`` is the problem alone, for callers that name the
    file themselves (an absolute path must not reach the outputs)."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = _one_line(reason)
        super().__init__(f"{path}: {self.reason}")


@dataclass(frozen=True)
class Sidecar:
    """The sidecar's known keys (schema-valid) and what was ignored."""

    fields: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def sidecar_path_for(recording: Path) -> Path:
    """The sidecar of ``recording``: ``<stem>.sop.yaml`` beside it, or
    ``<stem>.sop.yml`` if only that exists. The ``.sop.yaml`` path is returned
    when neither exists (check ``.exists()``); both existing is an error, since
    silently ignoring one would lose a user's edits, and so is a sidecar that is
    not a regular file or a link leaving the recording's folder (see
    :func:`check_sidecar_file`)."""
    recording = Path(recording)
    candidates = [recording.with_name(recording.stem + s) for s in SUFFIXES]
    existing = [p for p in candidates if os.path.lexists(p)]
    if len(existing) > 1:
        raise SidecarError(recording.name, f"both {existing[0].name} and {existing[1].name} exist; keep one")
    if existing:
        check_sidecar_file(existing[0])
        return existing[0]
    return candidates[0]


def check_sidecar_file(path: Path) -> None:
    """Refuse a sidecar that is not a regular file, or a symbolic link whose target
    is outside the folder the sidecar sits in (and its subfolders)."""
    path = Path(path)
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise SidecarError(path.name, "symbolic link to a missing file (or a link loop)") from None
        if not target.is_relative_to(path.parent.resolve()):
            raise SidecarError(path.name, "symbolic link to a file outside the recording's folder; "
                                          "refused (commit the sidecar itself)")
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise SidecarError(path.name, f"cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise SidecarError(path.name, "not a regular file")


def load_sidecar(path: Path) -> Sidecar:
    """Read and check a sidecar; raises :class:`SidecarError`."""
    path = Path(path)
    if os.path.lexists(path):
        check_sidecar_file(path)
    data = _read_capped(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SidecarError(path, f"not UTF-8 text (byte {e.start})") from None
    if _flow_depth(text) > _MAX_DEPTH:  # refused before parsing: deep nesting is slow to fail
        raise SidecarError(path, "invalid YAML: nested too deeply")
    try:
        doc = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        raise SidecarError(path, f"invalid YAML{yaml_where(e)}: {yaml_problem(e)}") from None
    except RecursionError:
        raise SidecarError(path, "invalid YAML: nested too deeply") from None
    except ValueError as e:  # Python refuses to read an integer of thousands of digits
        reason = "a number too long to read" if "digits" in str(e) else _short(str(e))
        raise SidecarError(path, f"invalid YAML: {reason}") from None
    if doc is None:
        return Sidecar({}, ("sidecar is empty",))
    if not isinstance(doc, dict):
        raise SidecarError(path, f"expected a mapping of keys to values at the top level, got {_kind(doc)}")

    known = load_schema("sidecar")["properties"]
    fields = {k: v for k, v in doc.items() if isinstance(k, str) and k in known}
    unknown = [k for k in doc if not (isinstance(k, str) and k in known)]
    warnings = tuple(f"unknown key {_short(repr(k), 60)} ignored" for k in unknown[:_MAX_REPORTED])
    if len(unknown) > _MAX_REPORTED:
        warnings += (f"{len(unknown) - _MAX_REPORTED} more unknown keys ignored",)
    bad_text = _invalid_text(fields)
    if bad_text:
        raise SidecarError(path, f"{bad_text}: text with an invalid character (a lone surrogate escape)")
    errors = _over_caps(fields, known)
    if errors:  # said here, plainly: a schema message would quote the whole huge value
        raise SidecarError(path, "; ".join(errors[:_MAX_REPORTED]))
    try:
        errors = [_friendly(e, fields, known) for e in validate("sidecar", fields)]
    except RecursionError:
        raise SidecarError(path, "nested too deeply") from None
    if errors:
        shown = "; ".join(errors[:_MAX_REPORTED])
        more = f" (and {len(errors) - _MAX_REPORTED} more)" if len(errors) > _MAX_REPORTED else ""
        raise SidecarError(path, f"{shown}{more}")
    return Sidecar(fields, warnings)


def _flow_depth(text: str) -> int:
    """Deepest nesting of [ and { (quotes ignored: a rough upper bound is enough)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}" and depth:
            depth -= 1
    return deepest


def _invalid_text(value, where: str = "") -> str | None:
    """Where a string that cannot be written as UTF-8 hides (YAML allows "\\ud800")."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "value"
        return None
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for name, item in items:
        found = _invalid_text(item, name)
        if found:
            return found
    return None


def _over_caps(fields: dict, properties: dict) -> list[str]:
    """Values over the schema's size caps (maxLength, maxItems), one short line each."""
    errors = []
    for key, value in fields.items():
        rule = properties.get(key, {})
        values = [(key, value, rule)]
        if isinstance(value, list):
            if "maxItems" in rule and len(value) > rule["maxItems"]:
                errors.append(f"{key}: {len(value)} items, more than the {rule['maxItems']} allowed")
            values = [(f"{key}[{i}]", v, rule.get("items", {})) for i, v in enumerate(value)]
        for name, item, item_rule in values:
            if isinstance(item, str) and "maxLength" in item_rule and len(item) > item_rule["maxLength"]:
                errors.append(f"{name}: {len(item)} characters, more than the {item_rule['maxLength']} allowed")
    return errors


_JSON_TYPES = {"string": str, "integer": int, "array": list, "object": dict, "boolean": bool}


def _friendly(error: str, fields: dict, properties: dict) -> str:
    """A schema error as a person would want it: the id rule spelled out, and no
    error longer than a line (a huge value is named by its kind, not repeated)."""
    key = error.split(":", 1)[0]
    expected = properties.get(key, {}).get("type")
    if error.endswith("\u2026") and key in fields and expected in _JSON_TYPES:
        value = fields[key]
        if not isinstance(value, _JSON_TYPES[expected]) or isinstance(value, bool) != (expected == "boolean"):
            return f"{key}: {_kind(value)} is not of type '{expected}'"
    if error.startswith("id: ") and "is not allowed" in error:
        value = error[4:].split(" is not allowed", 1)[0]
        return (f"id: {_short(value, 80)} is not a safe SOP id (lowercase letters, digits, '.', '_' and "
                f"'-', starting with a letter or digit; no '/', '\\' or '..')")
    return _short(error)


def _short(text: str, limit: int = 200) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _read_capped(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SidecarError(path, f"cannot read: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise SidecarError(path, f"larger than {MAX_BYTES // 1024} KB; a sidecar holds a few fields")
    return data


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and duplicate keys, and keeps dates as
    text (``last_reviewed: {date: 2026-11-26}``): the schema and sop.json (JSON)
    expect strings, not date objects. Shared by every YAML file a pull request
    can bring (sidecar, edits overlay); ``what`` names the file in messages."""

    what = "a sidecar"

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_non_json(self, node):
        """!!binary, !!set, !!omap, !!pairs: nothing in our YAML needs them, and they
        would not survive into sop.json (JSON) unchanged."""
        raise yaml.constructor.ConstructorError(
            None, None, f"the tag {node.tag.rsplit(':', 1)[-1]!r} is not allowed in {self.what}", node.start_mark)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*name) are not allowed in {self.what}", event.start_mark)
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


def yaml_where(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    text = f"{problem} ({context})" if context and getattr(error, "problem", None) else problem
    return " ".join(str(text).split())


def _kind(value) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)


for _tag in ("binary", "set", "omap", "pairs"):
    StrictLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", StrictLoader.construct_non_json)
