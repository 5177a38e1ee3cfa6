"""Finding the recording an SOP was built from, for the commands that write beside
it (`sopline review` writes its sidecar, `sopline edit` its overlay).

The recording's path relative to its build root is in the SOP tree's index.json
(the build's own record), else in sop.json's ``source.path``. The build root is
``--recordings`` when given; otherwise the current folder and the folders above
the output tree (and their subfolders) are tried, the recording's sha256
breaking ties between look-alikes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from .build import INDEX_NAME
from .fsutil import sha256_file

_INDEX_SEARCH_DEPTH = 32  # folders to climb from an SOP folder looking for index.json
_SEARCH_LEVELS = 4  # how far above the output folder to look for the recordings


class LocateError(ValueError):
    """The recording cannot be found; the message is one line saying where it looked."""


@dataclass(frozen=True)
class Found:
    recording: Path
    root: Path  # the build root it lies under
    out: Optional[Path]  # the output tree holding the SOP (and its index.json), when known


def recording_of(sop_json: Path, doc: dict, recordings: Path | None = None) -> Found:
    """The recording the SOP at ``sop_json`` (document ``doc``) was built from."""
    source = _source_from_index(sop_json) or doc["source"]["path"]
    parts = PurePosixPath(source).parts
    if not source or PurePosixPath(source).is_absolute() or ".." in parts:
        raise LocateError(f"{sop_json}: source {source!r} is not a relative path")
    sop_dir = sop_json.parent  # OUT/<source without suffix>
    out = sop_dir.parents[len(parts) - 1] if len(sop_dir.parents) >= len(parts) else None
    recording, root = _find_recording(source, doc["source"]["sha256"], out, recordings)
    return Found(recording, root, out)


def _source_from_index(sop_json: Path) -> str | None:
    """The entry's source in the nearest index.json above the SOP folder."""
    folder = sop_json.resolve().parent
    for depth, root in enumerate(folder.parents):
        if depth >= _INDEX_SEARCH_DEPTH:
            break
        index = root / INDEX_NAME
        if not index.is_file():
            continue
        try:
            doc = json.loads(index.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        key = f"{folder.relative_to(root).as_posix()}/sop.json"
        for entry in doc.get("sops", []) if isinstance(doc, dict) else []:
            if isinstance(entry, dict) and entry.get("sop") == key and isinstance(entry.get("source"), str):
                return entry["source"]
        return None
    return None


def _find_recording(source: str, sha: str, out: Path | None, recordings: Path | None) -> tuple[Path, Path]:
    """The recording ``source`` (relative to its build root) on disk, and that root.
    Without ``recordings``, the current folder and the folders above the output tree
    (and their subfolders) are tried; the recording's sha256 breaks ties."""
    if recordings is not None:
        path = recordings / source
        if not path.is_file():
            raise LocateError(f"{path}: recording not found (sop.json names {source!r})")
        return path, recordings
    levels = [Path.cwd()]
    if out is not None:
        up = out.resolve().parent
        for _ in range(_SEARCH_LEVELS):
            levels.append(up)
            if up.parent == up:
                break
            up = up.parent
    seen: set[Path] = set()
    for level in levels:
        roots = [level] + sorted(p for p in _subdirs(level) if out is None or p.resolve() != out.resolve())
        found = []
        for root in roots:
            real = root.resolve()
            if real in seen:
                continue
            seen.add(real)
            if (root / source).is_file():
                found.append(root)
        if len(found) > 1:
            same = [r for r in found if sha256_file(r / source) == sha]
            if len(same) == 1:
                found = same
            else:
                raise LocateError(f"recording {source!r} found under several folders "
                                  f"({', '.join(str(r) for r in found[:4])}); pass --recordings DIR")
        if found:
            return found[0] / source, found[0]
    raise LocateError(f"recording {source!r} not found near the SOP; pass --recordings DIR "
                      "(the folder given to `sopline build`)")


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
