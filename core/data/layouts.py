"""Finding the labelled images in a folder, whatever its layout.

Layouts, tried in this order after looking through wrapping folders (`my_dataset/images/cat/...`):
  CSV           a .csv of file,label at the top (paths relative to it); labels `a b`, `a;b`: multi-label
  train/valid   `train/` and `valid/` (or `val/`) folders, each one folder per class: their split is used
  class folders one sub-folder per class (torchvision's ImageFolder)
  file names    images directly in the folder, labels from a regex on the name (the Oxford pets layout)
Hidden files, `__MACOSX/`, `._*`, `.DS_Store` and `Thumbs.db` are ignored; anything else that is not an image
is listed as skipped with its reason. Nothing is opened or followed while scanning: each entry is judged by
lstat, so symbolic links, FIFOs, sockets and devices are listed as skipped, as are folders that cannot be read
or lie more than MAX_DEPTH folders down. Labels are Unicode NFC (macOS writes names decomposed, NFD), so
`café` is one class however its name was typed.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from core.data.multilabel import SEPARATORS, joined, label_rows, label_separator, split_labels
from core.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
JUNK_NAMES = {"__macosx", ".ds_store", "thumbs.db", "desktop.ini"}
PETS_REGEX = r"^(.+)_\d+\.\w+$"  # great_pyrenees_173.jpg -> great_pyrenees
VALID_NAMES = ("valid", "val", "validation")
MAX_DEPTH = 32  # folders below a class folder (or below a zip's top); real datasets nest a handful at most
MAX_CSV_BYTES = 64 << 20  # a labels CSV of a million rows is about 50 MB
SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                 (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder"))
READ_ERRORS = {errno.EACCES: "cannot be read (permission denied)", errno.EPERM: "cannot be read (permission denied)",
               errno.ENAMETOOLONG: "its path is longer than the file system allows",
               errno.ELOOP: "symbolic links are not followed", errno.ENOENT: "it disappeared while being read"}


@dataclass(frozen=True)
class Item:
    path: Path
    label: str  # a multi-label item's label set, joined (core.data.multilabel.joined)
    valid: bool | None = None  # True/False when the layout says which part it belongs to
    labels: tuple[str, ...] | None = None  # a multi-label item's label set (sorted; may be empty)


@dataclass
class Scan:
    root: Path
    layout: str
    items: list[Item] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path relative to root, reason)
    multi_label: bool = False  # a labels CSV with several labels per image (core.data.multilabel)

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((shown(str(path.relative_to(self.root))), reason))


@dataclass(frozen=True)
class Entry:
    """One visible name in a folder, judged by lstat without opening or following it."""

    path: Path
    kind: str  # "folder", "file" (a regular file) or "skip"
    problem: str | None = None  # why a "skip" is not read


def is_junk(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in JUNK_NAMES


def shown(name: str) -> str:
    """A file name as text that can be printed and saved: bytes that are not UTF-8 (which Python keeps as lone
    surrogates, and which no terminal or JSON file accepts) written as \\udcXX."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def label_text(text: str) -> str:
    """A label as every layout gives it: Unicode NFC, so composed and decomposed `café` are one class."""
    return unicodedata.normalize("NFC", shown(text))


def special_file(mode: int) -> str:
    """Why a file that is not a regular file is skipped (a FIFO named x.png would block the first read forever)."""
    kind = next((name for test, name in SPECIAL_FILES if test(mode)), None)
    return f"not a regular file ({kind})" if kind else "not a regular file"


def unreadable(error: OSError) -> str:
    """Why a file or folder the system refused to read is skipped, in words."""
    return READ_ERRORS.get(error.errno, f"cannot be read ({(error.strerror or str(error)).lower()})")


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading, never a FIFO, socket or device and never through a symbolic link;
    ValueError with the reason otherwise. lstat judges before the open, fstat again after it (the name could
    have been swapped in between), and O_NONBLOCK keeps even that swapped-in FIFO from blocking the open."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        raise ValueError(unreadable(error)) from None
    if stat.S_ISLNK(mode):
        raise ValueError("symbolic links are not followed")
    if not stat.S_ISREG(mode):
        raise ValueError(special_file(mode))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise ValueError(unreadable(error)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ValueError(special_file(mode))
    return os.fdopen(fd, "rb")


def _judge(entry: os.DirEntry) -> Entry:
    path = Path(entry.path)
    try:  # the d_type scandir already read answers these without another system call on most file systems
        if entry.is_symlink():
            return Entry(path, "skip", "symbolic links are not followed")
        if entry.is_dir(follow_symlinks=False):
            return Entry(path, "folder")
        if entry.is_file(follow_symlinks=False):
            return Entry(path, "file")
        return Entry(path, "skip", special_file(entry.stat(follow_symlinks=False).st_mode))
    except OSError as error:
        return Entry(path, "skip", unreadable(error))


def _entries(folder: Path) -> list[Entry]:
    """The visible entries of a folder in name order; OSError when the folder cannot be listed."""
    with os.scandir(folder) as listing:
        found = [_judge(entry) for entry in listing if not is_junk(Path(entry.name))]
    return sorted(found, key=lambda entry: entry.path.name)


def _unwrap(root: Path) -> Path:
    """Look through folders that hold nothing but one folder, down to the level that holds folders or files."""
    for _ in range(MAX_DEPTH):
        try:
            entries = _entries(root)
            if len(entries) != 1 or entries[0].kind != "folder" \
                    or not any(e.kind == "folder" for e in _entries(entries[0].path)):
                return root
        except OSError:  # an unreadable level is reported by the scan that lists it
            return root
        root = entries[0].path
    return root


def _walk(folder: Path):
    """Every file below folder in name order, as (path, None) or (path, why it is skipped): junk left out, links
    and special files never opened, unreadable folders and those deeper than MAX_DEPTH listed, not entered.
    Iterative, so a folder tree a thousand deep costs a list, not the interpreter's recursion limit."""
    try:
        stack = [iter(_entries(folder))]
    except OSError as error:
        yield folder, unreadable(error)
        return
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif entry.kind == "file":
            yield entry.path, None
        elif entry.kind == "skip":
            yield entry.path, entry.problem
        elif len(stack) > MAX_DEPTH:
            yield entry.path, f"nested more than {MAX_DEPTH} folders deep, so not read"
        else:
            try:
                stack.append(iter(_entries(entry.path)))
            except OSError as error:
                yield entry.path, unreadable(error)


def _add_file(scan: Scan, path: Path, label: str, valid: bool | None = None,
              labels: tuple[str, ...] | None = None) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        scan.skip(path, f"not an image file ({path.suffix or 'no extension'})")
    elif labels is not None:  # a label set: each label NFC as below
        scan.items.append(Item(path, joined(labels := tuple(sorted(set(map(label_text, labels))))), valid, labels))
    else:
        scan.items.append(Item(path, label_text(label), valid))


def _add_class_folders(scan: Scan, folder: Path, valid: bool | None = None) -> None:
    try:
        class_dirs = _entries(folder)
    except OSError as error:
        scan.skip(folder, unreadable(error))
        return
    for class_dir in class_dirs:
        if class_dir.kind != "folder":
            scan.skip(class_dir.path, class_dir.problem or "a file beside the class folders belongs to no class")
            continue
        for path, problem in _walk(class_dir.path):
            if problem:
                scan.skip(path, problem)
            else:
                _add_file(scan, path, class_dir.path.name, valid)


def _read_csv(csv_path: Path) -> list[list[str]]:
    """The rows of a labels CSV, read as UTF-8 (with or without a byte-order mark); DataError otherwise.

    Like pandas (and so fastai and Hugging Face datasets), a file that is not UTF-8 is refused rather than guessed
    at: a wrong guess (Windows-1252 for a Shift-JIS file) would silently make wrong labels.
    """
    try:
        with open_regular(csv_path) as f:
            data = f.read(MAX_CSV_BYTES + 1)
    except ValueError as reason:
        raise DataError(f"The labels file {csv_path.name} cannot be used: {reason}.") from None
    if len(data) > MAX_CSV_BYTES:
        raise DataError(f"The labels file {csv_path.name} is larger than {MAX_CSV_BYTES >> 20} MB; "
                        "give one row per image: file,label.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"The labels file {csv_path.name} is not UTF-8 text (byte {data[error.start]:#04x} at "
                        f"position {error.start}). Save it again as UTF-8 (in Excel: Save As, 'CSV UTF-8') and "
                        "try again.") from None
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise DataError(f"The labels file {csv_path.name} is not a readable CSV ({error}); give one row per "
                        "image: file,label.") from None


def _csv_target(folder: Path, root: Path, name: str) -> tuple[Path | None, str | None]:
    """The file a CSV row names (relative to the CSV's folder), or why it is not used. A name written in NFC
    finds a file whose name macOS stored in NFD, and the other way round."""
    if "\0" in name:
        return None, "not a file name"
    try:
        for variant in dict.fromkeys((name, unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name))):
            path = folder / variant
            if not path.resolve().is_relative_to(root):
                return None, "the path points outside the dataset folder"
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                return None, "symbolic links are not followed"
            return (path, None) if stat.S_ISREG(mode) else (None, special_file(mode))
    except (OSError, RuntimeError) as error:  # RuntimeError: a symbolic link loop, as resolve() reports it
        return None, unreadable(error) if isinstance(error, OSError) else "symbolic links are not followed"
    return None, "no such file"


def _scan_csv(root: Path, csv_path: Path) -> Scan:
    scan = Scan(root, "CSV of file,label")
    rows = label_rows(_read_csv(csv_path))
    separator = label_separator(label for _, _, label in rows)
    if separator is not None:  # several labels per image: an empty cell is an image with none
        scan.layout, scan.multi_label = f"CSV of file,labels (separated by {SEPARATORS[separator]})", True
    resolved_root = root.resolve()
    for number, name, label in rows:
        path, problem = _csv_target(csv_path.parent, resolved_root, name)
        if problem:
            scan.skipped.append((name, f"row {number}: {problem}"))
        elif separator is not None:
            _add_file(scan, path, label, labels=split_labels(label, separator))
        elif not label:
            scan.skipped.append((name, f"row {number}: no label"))
        else:
            _add_file(scan, path, label)
    return scan


def label_pattern(label_regex: str) -> re.Pattern:
    """The compiled label pattern, or a DataError sentence saying what is wrong with it."""
    try:
        pattern = re.compile(label_regex)
    except (re.error, OverflowError, RecursionError) as error:
        raise DataError(f"The label pattern is not a valid regular expression: {error}. Fix it, or use the "
                        f"Oxford pets pattern {PETS_REGEX}.") from None
    if not pattern.groups:
        raise DataError(f"The label pattern has no group: put the part of the name that is the label in "
                        f"brackets, as in {PETS_REGEX}.")
    return pattern


def _scan_names(root: Path, label_regex: str) -> Scan:
    scan = Scan(root, f"labels from file names ({label_regex})")
    pattern = label_pattern(label_regex)
    for path, problem in _walk(root):
        if problem:
            scan.skip(path, problem)
            continue
        match = pattern.search(path.name)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            scan.skip(path, f"not an image file ({path.suffix or 'no extension'})")
        elif not match:
            scan.skip(path, "its name does not match the label pattern")
        elif not match.group(1):
            scan.skip(path, "the label pattern finds an empty label in its name")
        else:
            scan.items.append(Item(path, label_text(match.group(1))))
    return scan


def scan_folder(folder: Path, label_regex: str | None = None) -> Scan:
    """Find the labelled images under `folder`; `label_regex` (one group: the label) forces the file-name layout."""
    if label_regex:
        label_pattern(label_regex)  # a broken pattern is refused before any folder is read
    root = _unwrap(Path(folder))
    try:
        entries = _entries(root)
    except OSError as error:
        cause = (error.strerror or str(error)).lower()
        raise DataError(f"The folder {root} cannot be read ({cause}); check that it exists and that you may read "
                        "it.") from None
    if label_regex:
        return _scan_names(root, label_regex)
    csvs = [e.path for e in entries if e.kind == "file" and e.path.suffix.lower() == ".csv"]
    if len(csvs) == 1:
        return _scan_csv(root, csvs[0])
    dirs = {e.path.name.lower(): e.path for e in entries if e.kind == "folder"}
    valid_dir = next((dirs[name] for name in VALID_NAMES if name in dirs), None)
    if "train" in dirs and valid_dir is not None:
        scan = Scan(root, f"train/ and {valid_dir.name}/ folders, one folder per class")
        _add_class_folders(scan, dirs["train"], valid=False)
        _add_class_folders(scan, valid_dir, valid=True)
        for other in entries:
            if other.path not in (dirs["train"], valid_dir):
                scan.skip(other.path, "only train/ and the validation folder are used")
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
