"""Finding the labelled images in a folder, whatever its layout.

Layouts, tried in this order after looking through wrapping folders (`my_dataset/images/cat/...`):
  CSV           a .csv of file,label at the top (paths relative to it)
  train/valid   `train/` and `valid/` (or `val/`) folders, each one folder per class: their split is used
  class folders one sub-folder per class (torchvision's ImageFolder)
  file names    images directly in the folder, labels from a regex on the name (the Oxford pets layout)
Hidden files, `__MACOSX/`, `._*`, `.DS_Store` and `Thumbs.db` are ignored; anything else that is not an image
is listed as skipped with its reason.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
JUNK_NAMES = {"__macosx", ".ds_store", "thumbs.db", "desktop.ini"}
PETS_REGEX = r"^(.+)_\d+\.\w+$"  # great_pyrenees_173.jpg -> great_pyrenees
VALID_NAMES = ("valid", "val", "validation")


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    valid: bool | None = None  # True/False when the layout says which part it belongs to


@dataclass
class Scan:
    root: Path
    layout: str
    items: list[Item] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path relative to root, reason)

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path.relative_to(self.root)), reason))


def is_junk(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in JUNK_NAMES


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not is_junk(p))


def _unwrap(root: Path) -> Path:
    """Look through folders that hold nothing but one folder, down to the level that holds folders or files."""
    while True:
        entries = _visible(root)
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() \
                and any(p.is_dir() for p in _visible(entries[0])):
            root = entries[0]
        else:
            return root


def _walk(folder: Path):
    """Every file below folder, junk and symbolic links left out (a link could point anywhere)."""
    for path in _visible(folder):
        if path.is_symlink():
            yield path, "symbolic links are not followed"
        elif path.is_dir():
            yield from _walk(path)
        else:
            yield path, None


def _add_file(scan: Scan, path: Path, label: str, valid: bool | None = None) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        scan.skip(path, f"not an image file ({path.suffix or 'no extension'})")
    else:
        scan.items.append(Item(path, label, valid))


def _add_class_folders(scan: Scan, folder: Path, valid: bool | None = None) -> None:
    for class_dir in _visible(folder):
        if not class_dir.is_dir() or class_dir.is_symlink():
            reason = "symbolic links are not followed" if class_dir.is_symlink() else \
                "a file beside the class folders belongs to no class"
            scan.skip(class_dir, reason)
            continue
        for path, problem in _walk(class_dir):
            if problem:
                scan.skip(path, problem)
            else:
                _add_file(scan, path, class_dir.name, valid)


def _scan_csv(root: Path, csv_path: Path) -> Scan:
    scan = Scan(root, "CSV of file,label")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["file", "label"], ["filename", "label"],
                                                              ["image", "label"], ["path", "label"]):
        rows = rows[1:]
    resolved_root = root.resolve()
    for number, row in enumerate(rows, start=2):
        if len(row) < 2 or not row[0].strip():
            continue
        name, label = row[0].strip(), row[1].strip()
        path = (csv_path.parent / name)
        inside = path.resolve().is_relative_to(resolved_root)
        if not inside:
            scan.skipped.append((name, f"row {number}: the path points outside the dataset folder"))
        elif not path.is_file():
            scan.skipped.append((name, f"row {number}: no such file"))
        elif not label:
            scan.skipped.append((name, f"row {number}: no label"))
        else:
            _add_file(scan, path, label)
    return scan


def _scan_names(root: Path, label_regex: str) -> Scan:
    scan = Scan(root, f"labels from file names ({label_regex})")
    pattern = re.compile(label_regex)
    for path, problem in _walk(root):
        if problem:
            scan.skip(path, problem)
            continue
        match = pattern.search(path.name)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            scan.skip(path, f"not an image file ({path.suffix or 'no extension'})")
        elif not match or not match.groups():
            scan.skip(path, "its name does not match the label pattern")
        else:
            scan.items.append(Item(path, match.group(1)))
    return scan


def scan_folder(folder: Path, label_regex: str | None = None) -> Scan:
    """Find the labelled images under `folder`; `label_regex` (one group: the label) forces the file-name layout."""
    root = _unwrap(Path(folder))
    entries = _visible(root)
    if label_regex:
        return _scan_names(root, label_regex)
    csvs = [p for p in entries if p.is_file() and p.suffix.lower() == ".csv"]
    if len(csvs) == 1:
        return _scan_csv(root, csvs[0])
    dirs = {p.name.lower(): p for p in entries if p.is_dir()}
    valid_dir = next((dirs[name] for name in VALID_NAMES if name in dirs), None)
    if "train" in dirs and valid_dir is not None:
        scan = Scan(root, f"train/ and {valid_dir.name}/ folders, one folder per class")
        _add_class_folders(scan, dirs["train"], valid=False)
        _add_class_folders(scan, valid_dir, valid=True)
        for other in entries:
            if other not in (dirs["train"], valid_dir):
                scan.skip(other, "only train/ and the validation folder are used")
        return scan
    if dirs:
        scan = Scan(root, "one folder per class")
        _add_class_folders(scan, root)
        if len(dirs) == 1:  # one folder of images (pets/images/*.jpg): names may carry the labels
            by_name = _scan_names(next(iter(dirs.values())), PETS_REGEX)
            if len({item.label for item in by_name.items}) >= 2:
                return by_name
        return scan
    return _scan_names(root, PETS_REGEX)
