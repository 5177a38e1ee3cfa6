"""Reading sop.json files written by sopline, possibly by another version or by hand.

`diff` and `audit` read SOPs from output trees, git history and pull requests,
so a file may be anything: truncated, hand-edited, hostile. One reader turns
any input into a checked document or one clean `SopReadError`, never a
traceback, so every command reports bad files the same way.
"""
from __future__ import annotations

import json
from pathlib import Path

from .schemas import validate

MAX_SOP_BYTES = 32 * 1024 * 1024  # far above any real sop.json; refuses a memory bomb


class SopReadError(ValueError):
    """A sop.json could not be read or is not a valid SOP; the message is one line."""


def parse_sop(data: bytes | str, where: str = "sop.json") -> dict:
    """A sop.json document from its bytes, checked against the schema."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > MAX_SOP_BYTES:
        raise SopReadError(f"{where}: larger than {MAX_SOP_BYTES // (1024 * 1024)} MB")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise SopReadError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise SopReadError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:
        raise SopReadError(f"{where}: not valid JSON ({_one_line(str(exc))})") from None
    if not isinstance(doc, dict):
        raise SopReadError(f"{where}: not a JSON object")
    try:
        errors = validate("sop", doc)
    except RecursionError:
        raise SopReadError(f"{where}: JSON nested too deeply") from None
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SopReadError(f"{where}: not a valid SOP: {_one_line(errors[0])}{more}")
    return doc


def _no_constant(name: str):
    """NaN and Infinity are not JSON (sopline never writes them); letting them in
    would hand NaN durations to every comparison downstream."""
    raise ValueError(f"{name} is not a JSON number")


def read_sop(path: Path) -> dict:
    """A sop.json document from disk (a file, or an SOP folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "sop.json"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SOP_BYTES + 1)
    except OSError as exc:
        raise SopReadError(f"{path}: {exc.strerror or exc}") from None
    return parse_sop(data, str(path))


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
