"""Merge: combine the output folders of `sopline build --shard I/N` runs into one tree.

A CI matrix builds each shard on its own runner and uploads the shard's output
as an artifact; a final job downloads them all and merges. Artifacts are files
another job produced, so they are checked before anything is copied: manifest
paths must stay inside the shard folder, SOP folders hold no symlinks, every
sop.json must be valid, and a recording claimed by two shards is an error.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

from .build import INDEX_NAME, write_index_entries, output_lock, parse_shard, read_index, shard_of
from .fsutil import replace_dir_atomically, staging_dir_for
from .sopread import SopReadError, read_sop


class MergeError(Exception):
    """The shards cannot be merged; the message is one line naming the folder."""


@dataclass
class MergeReport:
    copied: list[str] = field(default_factory=list)  # SOP paths (index keys) copied into OUT
    failed: list[str] = field(default_factory=list)  # recordings that failed in their shard
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Shard:
    folder: Path
    spec: tuple[int, int] | None
    entries: dict[str, dict]


def merge(shards: Sequence[Path], out: Path) -> MergeReport:
    """Copy each shard's SOP folders into ``out`` and merge the manifests."""
    out = Path(out)
    loaded = [_load_shard(Path(s)) for s in shards]
    for shard in loaded:
        if shard.folder.resolve() == out.resolve():
            raise MergeError(f"{shard.folder}: the output folder cannot also be a shard")
    report = MergeReport()
    counts = {s.spec[1] for s in loaded if s.spec}
    if len(counts) > 1:
        raise MergeError(f"shards disagree on N: {', '.join(str(n) for n in sorted(counts))}")
    if counts:
        (count,) = counts
        present = {s.spec[0] for s in loaded if s.spec}
        missing = sorted(set(range(1, count + 1)) - present)
        if missing:
            report.warnings.append(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} not given; "
                                   "their recordings keep their previous entries")
    owner: dict[str, Path] = {}
    taken: dict[str, tuple[_Shard, dict]] = {}
    for shard in loaded:
        for key, entry in shard.entries.items():
            rel = _sop_folder(key, shard.folder)
            if shard.spec and shard_of(rel, shard.spec[1]) != shard.spec[0]:
                continue  # an entry the shard merely carried over from an earlier manifest
            if key in owner:
                raise MergeError(f"{key}: built by two shards ({owner[key]} and {shard.folder})")
            owner[key] = shard.folder
            taken[key] = (shard, entry)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        entries = read_index(out)
        for key in sorted(taken):
            shard, entry = taken[key]
            if entry.get("status") == "built":
                _copy_sop(shard.folder, _sop_folder(key, shard.folder), out)
                report.copied.append(key)
            else:
                report.failed.append(key)
            entries[key] = {k: v for k, v in entry.items() if k != "shard"}
        write_index_entries(out, entries)
    return report


def _load_shard(folder: Path) -> _Shard:
    index = folder / INDEX_NAME
    if not index.is_file():
        raise MergeError(f"{folder}: no {INDEX_NAME} (not a sopline build output)")
    try:
        doc = json.loads(index.read_text("utf-8"))
        spec = parse_shard(doc["shard"]) if isinstance(doc, dict) and doc.get("shard") else None
    except (OSError, ValueError, TypeError) as exc:
        raise MergeError(f"{index}: unreadable manifest ({exc})") from None
    return _Shard(folder, spec, read_index(folder))


def _sop_folder(key: str, folder: Path) -> PurePosixPath:
    """The SOP folder of a manifest key, refusing keys that leave the shard folder."""
    path = PurePosixPath(key)
    if (path.is_absolute() or path.name != "sop.json" or len(path.parts) < 2
            or any(part in ("", ".", "..") or "\\" in part for part in path.parts)):
        raise MergeError(f"{folder / INDEX_NAME}: refusing manifest entry {key!r}")
    return path.parent


def _copy_sop(folder: Path, rel: PurePosixPath, out: Path) -> None:
    source = folder / Path(*rel.parts)
    if source.is_symlink() or not source.is_dir():
        raise MergeError(f"{source}: listed as built but not a folder")
    for path in [source, *source.rglob("*")]:
        if path.is_symlink():
            raise MergeError(f"{path}: symlinks are not allowed in a shard's SOP folders")
    try:
        read_sop(source)
    except SopReadError as exc:
        raise MergeError(str(exc)) from None
    dest = out / Path(*rel.parts)
    staging = staging_dir_for(dest)
    staging.rmdir()
    shutil.copytree(source, staging)
    replace_dir_atomically(staging, dest)
