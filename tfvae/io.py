"""Atomic file writes: write to a temporary name in the same directory, then rename.

A crash leaves either the old file or the new one at the target path, never half a file.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yields a temporary path next to `path`; on success it is renamed to `path`.

    Works for files and directories (whatever the body writes at the yielded path). Keeps
    `suffix` so that writers that check extensions (``.weights.h5``, ``.png``) accept it.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    tmp = os.path.join(tmp_dir, "partial" + suffix)
    try:
        yield tmp
        old = None
        if os.path.isdir(path) and not os.path.islink(path):
            # A directory cannot be replaced in one rename: move the old one aside first, and
            # back if the second rename fails (between the two renames the path is absent).
            old = os.path.join(tmp_dir, "old")
            os.rename(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)
            raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def atomic_write_text(path: str, text: str):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def remove_stale_temporaries(directory: str) -> list[str]:
    """Removes the temporary directories `atomic_path` left in `directory` when its process
    was killed mid-write (hidden directories holding only its "partial*" and "old" entries);
    returns their paths. Call it only when no other process writes to `directory`."""
    removed = []
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if not entry.startswith(".") or not os.path.isdir(path) or os.path.islink(path):
            continue
        if all(name.startswith("partial") or name == "old" for name in os.listdir(path)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def replace_marked_block(text: str, name: str, block: str) -> str:
    """`text` with what lies between the lines `<!-- NAME:start -->` and `<!-- NAME:end -->`
    replaced by `block` (the README's generated tables). ValueError when the markers are missing."""
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"no {start_marker} ... {end_marker} block to replace")
    return text[:start + len(start_marker)] + "\n" + block + text[end:]
