"""Names of the built-in datasets and how a source is named to people: no torch, so the dashboard's first
page and sidebar can show them before the heavy libraries are loaded (bench/startup)."""
from __future__ import annotations

import os
import re
from pathlib import Path

BUILTIN_LABELS: dict[str, str] = {
    "digits": "Handwritten digits (offline)",
    "pets": "Oxford-IIIT Pets (download, 800 MB)",
    "cifar10": "CIFAR-10 (download, 170 MB)",
    "fashion_mnist": "Fashion-MNIST (download, 30 MB)",
}


def source_label(source: str) -> str:
    """How a source is named to people: the built-in dataset's label, an uploaded zip's name, a folder's name."""
    if source.startswith("builtin:") and source[8:] in BUILTIN_LABELS:
        return BUILTIN_LABELS[source[8:]]
    name = os.path.basename(os.path.normpath(source)) or source
    uploaded = re.fullmatch(r"(.+)-[0-9a-f]{10}", name)
    return f"{uploaded.group(1)}.zip (uploaded)" if uploaded and "uploads" in Path(source).parts else name
