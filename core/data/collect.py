"""Making a dataset in the app: a plain folder per class under the data folder, filled from dropped files and
camera photos, so every page, the command line and a zip export read it like any other dataset.

    <data folder>/made/<name>/<class>/<image files>
Images are only ever added, each under a new name (never over an existing file). Renaming, merging or deleting
a class and moving or removing one image are edits (core.data.edits): recorded, undoable, and the files stay.
"""
from __future__ import annotations

import io
import re
import time
from pathlib import Path

from core.data.edits import EditLog, check_label
from core.data.health import MAX_PIXELS
from core.errors import DataError

MIN_IMAGES_PER_CLASS = 5  # with a fifth held out, every class then has at least one image to validate on
MAX_UPLOAD_BYTES = 50 << 20  # one dropped image
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif"}


def made_root() -> Path:
    from core.data.archive import data_root

    return data_root() / "made"


def made_datasets() -> list[Path]:
    """The datasets made in the app, newest first."""
    root = made_root()
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime, reverse=True)


def create_dataset(name: str) -> Path:
    """A new, empty dataset folder named after `name` (letters, digits, - and _ kept); refuses a taken name."""
    slug = re.sub(r"[^\w-]+", "-", name.strip(), flags=re.UNICODE).strip("-")[:60]
    if not slug:
        raise DataError("Give the dataset a name, such as 'my-pets'.")
    folder = made_root() / slug
    if folder.exists():
        raise DataError(f"There is a dataset called '{slug}' already: open it, or choose another name.")
    folder.mkdir(parents=True)
    return folder


def add_class(folder: Path, name: str) -> Path:
    """An (empty) class folder; a class appears in the dataset once it has images."""
    class_dir = Path(folder) / check_label(name if name is not None else "")
    class_dir.mkdir(exist_ok=True)
    return class_dir


def add_images(folder: Path, class_name: str, files: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """Save dropped files or camera photos into a class folder, each under a new name; returns (file, reason)
    for every file that is not a usable image (nothing is written for those)."""
    class_dir = add_class(folder, class_name)
    refused = []
    for original, data in files:
        try:
            suffix = _image_suffix(data)
        except ValueError as reason:
            refused.append((original, str(reason)))
            continue
        stem = re.sub(r"[^\w-]+", "-", Path(original).stem, flags=re.UNICODE).strip("-")[:40] or "image"
        for n in range(10_000):
            target = class_dir / f"{stem}-{int(time.time() * 1000)}-{n}{suffix}"
            try:
                with open(target, "xb") as out:  # "x": never over an existing file
                    out.write(data)
                break
            except FileExistsError:
                continue
    return refused


def _image_suffix(data: bytes) -> str:
    """The file suffix of an image's bytes, judged by its header; ValueError saying why it is not usable."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("empty file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"larger than {MAX_UPLOAD_BYTES >> 20} MB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size[0] * image.size[1] > MAX_PIXELS:
                raise ValueError("too many pixels to open safely")
            image.verify()
            kind = image.format
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        raise ValueError("not an image this app can read (JPEG, PNG, WebP, BMP, GIF or TIFF)") from None
    if kind not in SUFFIXES:
        raise ValueError(f"{kind} images are not read; use JPEG, PNG, WebP, BMP, GIF or TIFF")
    return SUFFIXES[kind]


def shortfall(class_counts: dict[str, int], minimum: int = MIN_IMAGES_PER_CLASS) -> dict[str, int]:
    """How many more images each class needs before training makes sense ({} when none do)."""
    return {name: minimum - count for name, count in class_counts.items() if count < minimum}


def rename_class(folder: Path, items: dict[str, str], old: str, new: str, view: str = "data") -> int:
    """Give every image of class `old` the label `new` (a rename, or a merge when `new` exists) as one batch of
    edits; `items` is {file: label} as the dataset now reads. Returns the batch number."""
    new = check_label(new)
    edits = [{"file": file, "label": new, "was": old} for file, label in items.items() if label == old]
    if not edits:
        raise DataError(f"The class '{old}' has no images to rename.")
    return EditLog(folder).append(edits, view)


def delete_class(folder: Path, items: dict[str, str], name: str, view: str = "data") -> int:
    """Remove every image of a class from the dataset, as one batch of edits (its files stay; undo brings it back)."""
    edits = [{"file": file, "label": None, "was": name} for file, label in items.items() if label == name]
    if not edits:
        raise DataError(f"The class '{name}' has no images to delete.")
    return EditLog(folder).append(edits, view)
