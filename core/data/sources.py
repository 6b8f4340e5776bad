"""Names of the built-in datasets and how a source is named to people: no torch, so the dashboard's first
page and sidebar can show them before the heavy libraries are loaded (bench/startup)."""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

# core.data.archive's record beside an unpacked zip's files: what it skipped, its name
UNPACKED_RECORD = ".unpacked.json"
BUILTIN_LABELS: dict[str, str] = {
    "digits": "Handwritten digits (offline)",
    "pets": "Oxford-IIIT Pets (download, 800 MB)",
    "cifar10": "CIFAR-10 (download, 170 MB)",
    "fashion_mnist": "Fashion-MNIST (download, 30 MB)",
}


def source_label(source: str) -> str:
    """How a source is named to people: the built-in dataset's label, an uploaded zip's own file name (as its
    unpacking recorded it), a folder's name."""
    if source.startswith("builtin:") and source[8:] in BUILTIN_LABELS:
        return BUILTIN_LABELS[source[8:]]
    name = os.path.basename(os.path.normpath(source)) or source
    uploaded = re.fullmatch(r"(.+)-[0-9a-f]{10}", name)
    if not uploaded or "uploads" not in Path(source).parts:
        return name
    try:
        stamp = os.stat(os.path.join(source, UNPACKED_RECORD)).st_mtime_ns
    except (OSError, ValueError):
        stamp = 0
    return f"{_recorded_name(source, stamp) or uploaded.group(1) + '.zip'} (uploaded)"


@functools.lru_cache(maxsize=64)
def _recorded_name(folder: str, stamp: int) -> str:
    """The zip's file name that core.data.archive recorded beside its unpacked files ("" when none); cached by the
    record's mtime, so the sidebar reads the small file once."""
    if not stamp:
        return ""
    try:
        with open(os.path.join(folder, UNPACKED_RECORD), encoding="utf-8") as f:
            name = json.load(f).get("name")
    except (OSError, ValueError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""
