"""Atomic file and folder writes: readers see the old version or the new one, never a torn file.

Lives in envs/ because it is the bottom layer every other graft package may import (memory/ uses
SQLite transactions instead).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2))


def recover_dir(final: str | os.PathLike) -> Path:
    """Undo a kill inside `write_dir_atomic`'s swap: with `final` gone and `.final.old` left, the old
    folder is the last complete one and goes back in place. Call before reading `final`."""
    final = Path(final)
    old = final.with_name(f".{final.name}.old")
    if not final.exists() and old.exists():
        os.replace(old, final)
    return final


def write_dir_atomic(write: Callable[[Path], None], final: str | os.PathLike) -> Path:
    """Run `write(tmp_dir)`, then rename tmp_dir to `final` (replacing an older folder)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    old = final.with_name(f".{final.name}.old")
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)  # a kill between these two renames leaves `.old` to recover from
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then os.replace over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
