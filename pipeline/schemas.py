"""The JSON Schemas of sopline's files, and validation with readable errors.

The schemas are the contract other tools rely on, so they live as plain JSON
files (``schemas/`` at the repository root) rather than as Python: editors and
other languages can use them directly. Wheels carry them as package data in
``pipeline/_schemas/``; a source or editable checkout reads ``<repo>/schemas/``.
"""
from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

SCHEMA_NAMES = ("sop", "sidecar", "audit", "edits", "diff")
_MAX_LINE = 300  # a bad value can be huge; one error stays one readable line


def schema_resource(name: str) -> Traversable:
    """The schema file ``<name>.schema.json``: the packaged copy in a wheel,
    ``<repo>/schemas/`` in a source or editable checkout."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    filename = f"{name}.schema.json"
    packaged = resources.files("pipeline") / "_schemas" / filename
    if packaged.is_file():
        return packaged
    source = Path(__file__).resolve().parent.parent / "schemas" / filename
    if source.is_file():
        return source
    raise FileNotFoundError(f"schema {filename} not found in pipeline/_schemas/ or {source.parent}")


@functools.lru_cache(maxsize=None)
def _load(name: str) -> dict:
    return json.loads(schema_resource(name).read_text(encoding="utf-8"))


def load_schema(name: str) -> dict:
    """The schema as a dict (a copy: callers may modify it)."""
    return copy.deepcopy(_load(name))


@functools.lru_cache(maxsize=None)
def _validator(name: str) -> Draft202012Validator:
    schema = _load(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate(name: str, doc: Any) -> list[str]:
    """Every way ``doc`` breaks schema ``name``, one line each, e.g.
    ``steps[2].kind: 'foo' is not one of [...]``; empty when valid.

    Sorted by location (array indices numerically) then message, so the same
    document always gives the same report.
    """
    errors = [_most_specific(e) for e in _validator(name).iter_errors(doc)]
    errors.sort(key=lambda e: (_path_key(e.absolute_path), e.message))
    return [_line(e) for e in errors]


def _most_specific(error: ValidationError) -> ValidationError:
    # anyOf/oneOf failures say only "not valid under any of the given schemas";
    # the closest branch's own error tells the user what to fix.
    while error.context:
        error = best_match(error.context)
    return error


def _path_key(path) -> tuple:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in path)


def format_path(path) -> str:
    """``['steps', 2, 'kind']`` -> ``steps[2].kind``; the empty path is ``(root)``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _line(error: ValidationError) -> str:
    message = error.message
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator == "pattern" and description:
        # A regex means little to a sidecar author; the schema's prose says the rule.
        message = f"{error.instance!r} is not allowed: {description}"
    line = f"{format_path(error.absolute_path)}: {message}"
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 1] + "…"
