"""File-system helpers that keep outputs whole.

A build can be interrupted (CI cancels a job) or fail halfway; readers of the
output folder (a PR diff, a docs site) must then see the previous SOP or the
new one, never a mix. Everything is written beside its destination and moved
into place with a rename, which is atomic within one file system.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

_CHUNK = 1 << 20
_STAGING_SUFFIX = ".staging"
_OLD_SUFFIX = ".old"


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, lowercase hex, read in chunks so a
    multi-gigabyte recording never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one,
    never a truncated one: write a hidden temp file beside it, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 honours the umask, unlike mkstemp's 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def staging_dir_for(dest: Path) -> Path:
    """A new, empty, hidden sibling of ``dest`` (``.<name>.<random>.staging``) to
    build the replacement in; being a sibling keeps the final rename on one file
    system."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        staging = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}{_STAGING_SUFFIX}")
        try:
            staging.mkdir(0o777)  # honours the umask, unlike mkdtemp's 0o700
            return staging
        except FileExistsError:
            continue


def replace_dir_atomically(staging: Path, dest: Path) -> None:
    """Put the fully written ``staging`` folder in place of ``dest``.

    The old ``dest`` is renamed aside, ``staging`` renamed in, then the old one
    removed; if the second rename fails the old one is put back. ``staging``
    must be a sibling of ``dest`` (see :func:`staging_dir_for`).
    """
    staging, dest = Path(staging), Path(dest)
    if staging.parent.resolve() != dest.parent.resolve():
        raise ValueError(f"staging folder {staging} is not a sibling of {dest}")
    if not staging.is_dir():
        raise NotADirectoryError(f"staging folder {staging} does not exist")
    if not os.path.lexists(dest):
        os.rename(staging, dest)
        return
    old = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}{_OLD_SUFFIX}")
    os.rename(dest, old)
    try:
        os.rename(staging, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    _remove(old)


def remove_leftovers(dest: Path) -> None:
    """Remove hidden staging/old siblings of ``dest`` that a killed build left
    behind, so they are not published with the outputs."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return
    prefix = f".{dest.name}."
    for entry in dest.parent.iterdir():
        name = entry.name
        if name.startswith(prefix) and name.endswith((_STAGING_SUFFIX, _OLD_SUFFIX)):
            middle = name[len(prefix):].rsplit(".", 1)[0]
            if len(middle) == 12 and all(c in "0123456789abcdef" for c in middle):
                _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
