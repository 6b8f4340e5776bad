"""Mending a dataset without touching its files: an append-only edit log, applied whenever the dataset is read.

Relabel, remove and keep decisions (from the app's views or `python -m core.data edit PATH EDITS.json`) are
recorded, never carried out on the files: the user's images are not moved, overwritten or deleted. Every read of
the dataset (the Data page, training, `core.train --data PATH`, an export) applies the log. Undo appends a line
that takes back the last batch still in force, so the log itself is never rewritten either.

The log of a dataset lives under the data folder, never in the user's folder:
    <data folder>/edits/<folder name>-<hash of its absolute path>.jsonl   (a folder, or a zip's unpacked folder)
    <data folder>/edits/builtin-<name>.jsonl                              (a built-in dataset)
(for a multi-label dataset a label is a label set, written "a;b"); one JSON object a line:
    {"batch": 3, "time": 1764400000.0, "view": "suspects", "edits": [{"file": "cat/7.jpg", "label": "dog",
     "was": "cat"}, {"file": "dog/2.jpg", "label": null, "was": "dog"}, {"file": "dog/5.jpg", "keep": true}]}
    {"undo": 3, "time": 1764400100.0}
`file` is relative to the dataset folder (a built-in dataset's item name, such as "digit #12"); `label` null
removes the image; `keep` marks it reviewed as right.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import torch

from core.data.images import LabeledImages
from core.data.layouts import Scan
from core.data.multilabel import joined, split_labels
from core.errors import DataError

MAX_LABEL_CHARS = 100


@dataclass(frozen=True)
class EditSummary:
    relabelled: int
    removed: int
    kept: int
    batches: int
    digest: str  # a short hash of every edit in force: two reads with the same digest applied the same edits
    position: int = 0  # entries of the log read: EditLog(dataset, upto=position) reads the same edits again

    def to_dict(self) -> dict:
        return {"relabelled": self.relabelled, "removed": self.removed, "kept": self.kept, "batches": self.batches,
                "digest": self.digest, "position": self.position}


def edit_log_path(dataset: str | Path) -> Path:
    """Where the edit log of a dataset lives: under the data folder, named after the dataset. `dataset` is a
    folder (a zip's unpacked folder) or a built-in source ("builtin:digits")."""
    from core.data.archive import data_root

    if str(dataset).startswith("builtin:"):
        return data_root() / "edits" / f"builtin-{_slug(str(dataset)[8:])}.jsonl"
    resolved = Path(dataset).resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return data_root() / "edits" / f"{_slug(resolved.name)}-{digest}.jsonl"


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip(".-")[:60] or "dataset"


def _check_file(file) -> str:
    """A dataset-relative path as the log keeps it, or a DataError saying why it is not one."""
    if not isinstance(file, str) or not file or "\x00" in file:
        raise DataError("Each edit needs a \"file\": a path relative to the dataset folder.")
    path = PurePosixPath(file.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", file):
        raise DataError(f"'{file}' is not inside the dataset folder; give paths relative to it.")
    return str(path)


def check_label(label) -> str | None:
    """A class name as the log keeps it (None: removed), or a DataError saying why it is not usable."""
    if label is None:
        return None
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS or "/" in label \
            or "\\" in label or label.strip() in (".", ".."):
        raise DataError(f"{label!r} is not a usable class name: use 1 to {MAX_LABEL_CHARS} characters, without "
                        "slashes.")
    return unicodedata.normalize("NFC", label.strip())  # as core.data.layouts reads folder names: one form per class


class EditLog:
    """The edit log of one dataset: a folder (a zip's unpacked folder) or a built-in source; with `upto`, only its
    first `upto` entries (the log as it stood then: it is only ever appended to)."""

    def __init__(self, dataset: str | Path, upto: int | None = None):
        self.path = edit_log_path(dataset)
        self.upto = upto

    def _lines(self) -> list[dict]:
        """The log's entries (lines that are JSON objects), the first `upto` of them."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return []
        lines = []
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash: ignored, the rest still applies
            if isinstance(row, dict):
                lines.append(row)
        return lines if self.upto is None else lines[:self.upto]

    def batches(self) -> list[dict]:
        """The batches in force, oldest first: every batch not taken back by an undo."""
        lines = self._lines()
        undone = {row.get("undo") for row in lines if "undo" in row}
        return [row for row in lines if "batch" in row and row["batch"] not in undone]

    def append(self, edits: list[dict], view: str) -> int:
        """Record one batch of edits ({"file", "label"} or {"file", "keep": true}); returns its number."""
        if not isinstance(edits, list) or not edits:
            raise DataError("There are no edits to record: give a list of {\"file\": ..., \"label\": ...}.")
        checked = []
        for edit in edits:
            if not isinstance(edit, dict):
                raise DataError("Each edit is an object such as {\"file\": \"cat/1.jpg\", \"label\": \"dog\"}.")
            entry = {"file": _check_file(edit.get("file"))}
            if edit.get("keep"):
                entry["keep"] = True
            else:
                if "label" not in edit:
                    raise DataError(f"The edit of '{entry['file']}' needs a \"label\" (null removes the image).")
                entry["label"] = check_label(edit["label"])
                if edit.get("was") is not None:
                    entry["was"] = str(edit["was"])
            checked.append(entry)
        number = max((row.get("batch", 0) for row in self._lines()), default=0) + 1
        self._write({"batch": number, "time": time.time(), "view": str(view), "edits": checked})
        return number

    def undo(self) -> dict | None:
        """Take back the last batch still in force; returns it, or None when there is nothing to undo."""
        batches = self.batches()
        if not batches:
            return None
        self._write({"undo": batches[-1]["batch"], "time": time.time()})
        return batches[-1]

    def _write(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()

    def decisions(self) -> dict[str, dict]:
        """The last decision in force for each file: {"label": str | None} or {"keep": True}."""
        final: dict[str, dict] = {}
        for batch in self.batches():
            for edit in batch.get("edits", []):
                final[edit["file"]] = edit
        return final

    def summary(self) -> EditSummary:
        decisions = self.decisions()
        digest = hashlib.sha256(json.dumps(sorted((f, d.get("label"), bool(d.get("keep")))
                                                  for f, d in decisions.items())).encode()).hexdigest()[:12]
        return EditSummary(relabelled=sum(1 for d in decisions.values() if d.get("label") is not None),
                           removed=sum(1 for d in decisions.values() if "label" in d and d["label"] is None),
                           kept=sum(1 for d in decisions.values() if d.get("keep")),
                           batches=len(self.batches()), digest=digest, position=len(self._lines()))


def apply_edits(scan: Scan, folder: Path, upto: int | None = None) -> tuple[Scan, list[str]]:
    """The scan as the edit log of `folder` (its first `upto` entries) leaves it: relabelled items carry their new
    label, removed ones are left out. Returns (scan, files removed). Edits of files the folder no longer has change
    nothing."""
    decisions = EditLog(folder, upto).decisions()
    if not decisions:
        return scan, []
    items, removed = [], []
    for item in scan.items:
        decision = decisions.get(relative_file(item.path, folder), {})
        if "label" in decision and decision["label"] is None:
            removed.append(relative_file(item.path, folder))
        elif decision.get("label") is not None and scan.multi_label:  # a label set, written "a;b"
            labels = split_labels(decision["label"], ";")
            items.append(replace(item, label=joined(labels), labels=labels))
        elif decision.get("label") is not None:
            items.append(replace(item, label=decision["label"]))
        else:
            items.append(item)
    return Scan(scan.root, scan.layout, items, list(scan.skipped), scan.multi_label), removed


def apply_edits_to_images(data: LabeledImages, source: str, upto: int | None = None) -> LabeledImages:
    """A built-in dataset as its edit log (its first `upto` entries) leaves it (items named by
    LabeledImages.item_names); classes that edits introduce come after the dataset's own."""
    decisions = EditLog(source, upto).decisions()
    if not decisions:
        return data
    class_names = list(data.class_names)
    keep, labels = [], []
    for index, (name, label) in enumerate(zip(data.item_names, data.labels.tolist())):
        decision = decisions.get(name, {})
        if "label" in decision and decision["label"] is None:
            continue
        if decision.get("label") is not None:
            if decision["label"] not in class_names:
                class_names.append(decision["label"])
            label = class_names.index(decision["label"])
        keep.append(index)
        labels.append(label)
    used = sorted(set(labels))  # a class whose every image was removed or relabelled is gone
    renumber = {old: new for new, old in enumerate(used)}
    rows = torch.tensor(keep, dtype=torch.long)
    return LabeledImages(data.images[rows], torch.tensor([renumber[label] for label in labels], dtype=torch.long),
                         tuple(class_names[i] for i in used),
                         tuple(data.item_names[i] for i in keep),
                         data.valid_mask[rows] if data.valid_mask is not None else None)


def relative_file(path: Path, folder: Path) -> str:
    """How the edit log names an image file: its path relative to the dataset folder, with forward slashes."""
    try:
        return Path(path).relative_to(folder).as_posix()
    except ValueError:
        return Path(path).as_posix()
