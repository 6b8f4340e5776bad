"""Writing a file so that a reader sees the old version or the new one, never half of one.

Every file the engine replaces (status.json, checkpoints, predictions.npz, metrics.jsonl after a resume, run
metadata) goes through `write_atomic`: the bytes go to a temporary file in the same folder, are flushed to
disk, and the temporary file is renamed over the target; the folder is flushed too, so the rename survives a
power cut.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

_WRITES = itertools.count()  # with the process and thread, a temporary name no other writer of this file uses


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write(file)` on a temporary file beside `path`, flush it to disk, then rename it over `path`.

    The temporary file's name is this write's own: two threads of one process (two browser tabs of the app saving
    their settings) writing the same file at once must not rename each other's half-written bytes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_WRITES)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def copy_atomic(source: Path, path: Path) -> None:
    """Make `path` a copy of `source` that a reader sees whole or not at all. A hard link where the file system has
    them: no bytes are written, and a checkpoint kept as "the best epoch" costs no disk while it is also the last one.
    Sound because every file here is replaced by a rename, never written in place: when `source` is replaced, `path`
    keeps the old bytes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_WRITES)}.tmp")
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here (some network or FAT file systems): copy the bytes
        with open(source, "rb") as whole:
            write_atomic(path, lambda f: shutil.copyfileobj(whole, f))
        return
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_json_atomic(path: Path, data: dict | list) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8")))


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or {} when it is missing, unreadable, half-written or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, not a folder, not UTF-8, or half-written by a crashed writer
        return {}
    return data if isinstance(data, dict) else {}


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems cannot flush a folder; the rename itself is still atomic
        pass
    finally:
        os.close(descriptor)
