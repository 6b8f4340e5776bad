"""Making a dataset in the app: a plain folder per class under the data folder, filled from dropped files and
camera photos, so every page, the command line and a zip export read it like any other dataset.

    <data folder>/made/<name>/<class>/<image files>                  one label per image
    <data folder>/made/<name>/images/<image files> + labels.csv      several labels per image (label sets)
Images are only ever added, each under a new name (never over an existing file). Renaming, merging or deleting
a class and moving or removing one image are edits (core.data.edits): recorded, undoable, and the files stay.

A dataset of label sets is fastai's planet format, which core.data.layouts reads as multi-label: labels.csv holds
`image_name,tags` rows, the tags separated by `;` so a label may hold spaces ("golden retriever"). A cell of one
label or none ends in `;` ("cat;", ";") so the column reads as label sets before any image has two. The app is the
only writer of labels.csv: each save rewrites it whole and atomically, the rows already there kept as they are.
"""
from __future__ import annotations

import csv
import io
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from core.atomic import write_atomic
from core.data.edits import MAX_LABEL_CHARS, EditLog, check_label
from core.data.health import MAX_PIXELS
from core.data.layouts import open_regular
from core.errors import DataError

MIN_IMAGES_PER_CLASS = 5  # with a fifth held out, every class then has at least one image to validate on
MAX_UPLOAD_BYTES = 50 << 20  # one dropped image
LABELS_FILE, IMAGES_FOLDER = "labels.csv", "images"  # a dataset of label sets
HEADER = ["image_name", "tags"]
_LABELS_WRITE = threading.Lock()  # two tabs (threads of one app) adding at once must not lose each other's rows
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


def create_dataset(name: str, multi_label: bool = False) -> Path:
    """A new, empty dataset folder named after `name` (letters, digits, - and _ kept); refuses a taken name. With
    `multi_label`, a dataset of label sets: an empty images/ folder and a labels.csv of just its header."""
    slug = re.sub(r"[^\w-]+", "-", name.strip(), flags=re.UNICODE).strip("-")[:60]
    if not slug:
        raise DataError("Give the dataset a name, such as 'my-pets'.")
    folder = made_root() / slug
    if folder.exists():
        raise DataError(f"There is a dataset called '{slug}' already: open it, or choose another name.")
    folder.mkdir(parents=True)
    if multi_label:
        (folder / IMAGES_FOLDER).mkdir()
        _write_rows(folder, [])
    return folder


def is_multi_label(folder: Path) -> bool:
    """Whether a dataset made in the app holds label sets (it has a labels.csv) rather than a folder per class."""
    return (Path(folder) / LABELS_FILE).is_file()


def add_class(folder: Path, name: str) -> Path:
    """An (empty) class folder; a class appears in the dataset once it has images."""
    if is_multi_label(folder):
        raise DataError("This dataset has several labels per image: tag each image with labels instead of adding "
                        "a class.")
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
            _save_new(class_dir, original, data)
        except ValueError as reason:
            refused.append((original, str(reason)))
    return refused


def check_tag(name) -> str:
    """A label of a label set as labels.csv keeps it, or a DataError saying why it is not usable: a class name's rules
    (core.data.edits.check_label), runs of spaces and line breaks made one space (as the CSV is read back), no `;`."""
    try:
        label = check_label(" ".join(name.split()) if isinstance(name, str) else "")
    except DataError:
        label = None
    if label is None or ";" in label:
        raise DataError(f"{name!r} is not a usable label: use 1 to {MAX_LABEL_CHARS} characters, without slashes or "
                        "';' (';' separates an image's labels).")
    return label


def add_tagged_images(folder: Path, files: list[tuple[str, bytes]], labels: Iterable[str]) -> list[tuple[str, str]]:
    """Save dropped files or camera photos into a dataset of label sets, each under a new name in images/ and each
    with the label set `labels` (empty: images that show none of the labels, which the page asks for on purpose);
    returns (file, reason) for every file that is not a usable image (nothing is written for those)."""
    folder = Path(folder)
    if not is_multi_label(folder):
        raise DataError("This dataset has one label per image (a folder per class): add images to a class.")
    tags = sorted({check_tag(label) for label in labels})
    images = folder / IMAGES_FOLDER
    if images.is_symlink() or (images.exists() and not images.is_dir()):
        raise DataError(f"The dataset's {IMAGES_FOLDER} is not a folder, so nothing was added.")
    images.mkdir(exist_ok=True)
    refused, rows = [], []
    with _LABELS_WRITE:  # read first: a labels.csv that cannot be read refuses before any image is written
        kept = _read_rows(folder)
        for original, data in files:
            try:
                rows.append([f"{IMAGES_FOLDER}/{_save_new(images, original, data).name}", tags_cell(tags)])
            except ValueError as reason:
                refused.append((original, str(reason)))
        if rows:
            _write_rows(folder, kept + rows)
    return refused


def tags_cell(tags: Iterable[str]) -> str:
    """A label set as labels.csv writes it: "a;b", and "a;" or ";" for one label or none (see the module's note)."""
    tags = list(tags)
    return ";".join(tags) + (";" if len(tags) < 2 else "")


def _read_rows(folder: Path) -> list[list[str]]:
    """The rows of a dataset's labels.csv as they are, its header left out; DataError when it cannot be read."""
    try:
        with open_regular(folder / LABELS_FILE) as f:
            rows = list(csv.reader(io.StringIO(f.read().decode("utf-8-sig"), newline="")))
    except (ValueError, csv.Error) as reason:  # UnicodeDecodeError is a ValueError
        raise DataError(f"The dataset's {LABELS_FILE} cannot be read ({reason}), so nothing was added. Put back a "
                        "UTF-8 CSV of image_name,tags, or make a new dataset.") from None
    return rows[1:] if rows and [cell.strip().lower() for cell in rows[0][:2]] == HEADER else rows


def _write_rows(folder: Path, rows: list[list[str]]) -> None:
    """labels.csv made of its header and `rows`, replaced whole (a reader sees the old file or the new one)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")  # quotes a cell that holds a comma or a quote
    writer.writerow(HEADER)
    writer.writerows(rows)
    write_atomic(folder / LABELS_FILE, lambda f: f.write(text.getvalue().encode("utf-8")))


def _save_new(folder: Path, original: str, data: bytes) -> Path:
    """Write an image's bytes into `folder` under a new name made from `original` (word characters and - only, so
    never a path); ValueError saying why when they are not a usable image (nothing is written then)."""
    suffix = _image_suffix(data)
    stem = re.sub(r"[^\w-]+", "-", Path(original).stem, flags=re.UNICODE).strip("-")[:40] or "image"
    for n in range(10_000):
        target = folder / f"{stem}-{int(time.time() * 1000)}-{n}{suffix}"
        try:
            with open(target, "xb") as out:  # "x": never over an existing file
                out.write(data)
            return target
        except FileExistsError:
            continue
    raise ValueError("no free file name for it")


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
