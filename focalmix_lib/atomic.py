"""Atomic file writes: write to a temporary name in the same folder, then rename.

A reader (or an interrupted run) therefore sees either the old file or the complete
new one, never half of one. The new file gets the mode a plain ``open(path, "w")``
would give it: an existing file's mode, or ``0o666`` less the user's umask, so a
folder shared with a group (umask 002) stays readable to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from focalmix_lib.errors import KitInputError

# ".<stem>.<8 hex>.tmp<suffix>": the temporary name of a write to <stem><suffix>.
_TEMPORARY = re.compile(r"^\..*\.[0-9a-f]{8}\.tmp(\.[^.]+)?$")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.
    Works for any writer that takes a file name (numpy, torch, SimpleITK, matplotlib).
    The temporary name keeps ``path``'s suffix so that writers choosing a format by
    extension still do the right thing. A write killed outright (SIGKILL, power loss)
    leaves its temporary file; :func:`remove_temporaries` clears such leftovers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that killed writes left in ``folder``; returns them.

    Only the folder's single writer may call this (a run that starts or resumes):
    another process's write in progress would lose its temporary file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    leftovers = [p for p in folder.iterdir() if _TEMPORARY.match(p.name) and p.is_file()]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers


def check_writable_folder(path: str | Path) -> None:
    """Raise KitInputError unless ``path`` is, or can be made, a folder this process can write in.

    Creates nothing that stays: it probes the folder (or the nearest existing folder
    above it) with a temporary folder, so read-only file systems, immutable folders
    and permissions are all caught before any long work starts.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = "exists and is not a folder" if existing == path else f"cannot be made: {existing} is not a folder"
        raise KitInputError(path, problem)
    try:
        Path(tempfile.mkdtemp(prefix=".focalmix-probe.", dir=existing)).rmdir()
    except OSError as error:
        where = "" if existing == path else f" (nor can it be made in {existing})"
        raise KitInputError(path, f"cannot write here{where}: {error.strerror or error}") from None


def _create_temporary(path: Path) -> Path:
    """Create a new empty file beside ``path`` with the mode ``open(path, "w")`` would give."""
    existing = path.is_file()
    mode = stat.S_IMODE(path.stat().st_mode) if existing else 0o666  # the kernel applies the umask to 0o666
    while True:
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        if existing:
            os.fchmod(fd, mode)  # an existing file keeps its mode, whatever the umask
        os.close(fd)
        return tmp
