"""Dataset sources and splits: a source string becomes `LabeledImages`, and its split the tensors a run trains on.

Sources: "builtin:NAME" (core.data.builtin), a folder, or a .zip. Folders and zips go through core.data.layouts (what is
where) and core.data.health (what is usable), then core.data.images decodes exactly what the health report accepted:

    python -m core.data inspect PATH_OR_ZIP [--json] [--label-regex REGEX]   (and suspects, edit, undo, export:
                                                                             core.data.__main__)
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.config import RESIZE_METHODS
from core.data import mapped
from core.data.builtin import load_builtin
from core.data.edits import EditLog, apply_edits, apply_edits_to_images, relative_file
from core.data.images import LabeledImages, check_memory, open_rgb
from core.errors import DataError


def _unpacked(source: str) -> tuple[Path, list[tuple[str, str]]]:
    """(folder, entries skipped while unpacking) of a path source: a folder as it is (no copy, nothing skipped),
    or a zip unpacked once under data/ (core.data.archive.unpack)."""
    from core.data.archive import unpack

    path = Path(source).expanduser()
    try:
        if path.is_dir():
            return path, []
        if not path.exists():
            raise DataError(f"'{source}' does not exist. Give a folder of images, a .zip of one, or a built-in "
                            "dataset such as builtin:digits.")
    except OSError as error:  # a name too long for the system, say
        raise DataError(f"'{source}' cannot be read ({error.strerror or error}).") from None
    extraction = unpack(path, path.stem)
    return extraction.folder, extraction.skipped


def resolve_folder(source: str) -> Path:
    """The folder a path source stands for: the folder itself (no copy), or a zip extracted once under data/."""
    return _unpacked(source)[0]


def inspect_source(source: str, label_regex: str | None = None, *, edits: bool = True, edits_upto: int | None = None):
    """The health report (core.data.health.HealthReport) of a folder or zip source, with its edit log applied (its
    first `edits_upto` entries; none when `edits` is off: the files as they are). A zip's entries skipped while
    unpacking come first in the report's skipped list."""
    from core.data.health import inspect_scan
    from core.data.layouts import scan_folder

    folder, unpack_skipped = _unpacked(source)
    scan, removed = scan_folder(folder, label_regex), []
    if edits:
        scan, removed = apply_edits(scan, folder, edits_upto)
    report = inspect_scan(scan, source)
    report.skipped[:0] = unpack_skipped
    report.folder, report.edits, report.removed = str(folder), EditLog(folder, edits_upto).summary().to_dict(), removed
    return report


def edit_log_for(source: str, upto: int | None = None) -> EditLog:
    """The edit log of a source (its first `upto` entries): a built-in dataset's own, or the one of the folder a
    path stands for."""
    return EditLog(source if source.startswith("builtin:") else resolve_folder(source), upto)


def load_report(report, size: int, resize: str = "squish") -> LabeledImages:
    """Decode exactly the images a health report accepted, at `size`."""
    if not report.ok:
        raise DataError(report.problems[0])
    class_names = tuple(report.class_counts)
    index = {name: i for i, name in enumerate(class_names)}
    images = _decoded(report.accepted, size, resize)
    if report.multi_label:  # a row per image, True for each label it carries
        labels = torch.zeros(len(report.accepted), len(class_names), dtype=torch.bool)
        for row, item in enumerate(report.accepted):
            labels[row, [index[label] for label in item.labels]] = True
    else:
        labels = torch.tensor([index[item.label] for item in report.accepted], dtype=torch.long)
    names = tuple(relative_file(item.path, Path(report.folder or report.root)) for item in report.accepted)
    valid = torch.tensor([bool(item.valid) for item in report.accepted]) if report.own_split else None
    return LabeledImages(images, labels, class_names, names, valid)


def _decoded(items: list, size: int, resize: str) -> torch.Tensor:
    """The items' images decoded at `size`, (N, 3, size, size) uint8: in memory, or past what memory holds
    comfortably in a memory-mapped file (core.data.mapped), decoded only when no file holds these files at this size."""
    if not mapped.needs_file(len(items), size):
        check_memory(len(items), size)
        images = torch.empty(len(items), 3, size, size, dtype=torch.uint8)
        for i, item in enumerate(items):
            images[i] = open_rgb(item.path, size, resize)
        return images
    name = mapped.name_for([size, resize, *((str(item.path), *_size_and_time(item.path)) for item in items)])
    return mapped.images_in_file(name, len(items), size, (open_rgb(item.path, size, resize) for item in items),
                                 copies=2)


def _size_and_time(path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def load_source(source: str, size: int, *, label_regex: str | None = None, resize: str = "squish",
                edits: bool = True, edits_upto: int | None = None) -> LabeledImages:
    """Load a dataset by its source string ("builtin:NAME", a folder or a .zip) at `size` pixels, as its edit log
    (its first `edits_upto` entries) leaves it (unless `edits` is off)."""
    if resize not in RESIZE_METHODS:
        raise DataError(f"Resize method must be one of {', '.join(RESIZE_METHODS)}.")
    if source.startswith("builtin:"):
        data = load_builtin(source.split(":", 1)[1], size)
        return apply_edits_to_images(data, source, edits_upto) if edits else data
    return load_report(inspect_source(source, label_regex, edits=edits, edits_upto=edits_upto), size, resize)


def stratified_split(labels: torch.Tensor, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of item indices into (train, valid), the same share of every class in each part."""
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    train, valid = [], []
    for label in np.unique(labels_np):
        items = rng.permutation(np.flatnonzero(labels_np == label))
        n_valid = int(round(len(items) * valid_pct))
        if len(items) >= 2:
            n_valid = min(max(n_valid, 1), len(items) - 1)  # every class in both parts
        valid.extend(items[:n_valid])
        train.extend(items[n_valid:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(valid, dtype=np.int64))


def label_set_split(labels: torch.Tensor, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of multi-label items (labels (N, C) bool) into (train, valid): a random share (fastai's
    RandomSplitter); then each label on two or more images that all fell in one part has one of them moved to the
    other, so that it is learnt and judged (rarest labels last: a later move may undo an earlier one's)."""
    rng = np.random.default_rng(seed)
    sets = labels.numpy().astype(bool)
    order = rng.permutation(len(sets))
    in_valid = np.zeros(len(sets), dtype=bool)
    in_valid[order[:int(round(len(sets) * valid_pct))]] = True
    for label in np.argsort(-sets.sum(0), kind="stable"):  # the commonest first, the rarest last
        carriers = order[sets[order, label]]  # in the seeded order
        if len(carriers) >= 2 and (in_valid[carriers].all() or not in_valid[carriers].any()):
            in_valid[carriers[0]] = not in_valid[carriers[0]]
    return np.flatnonzero(~in_valid), np.flatnonzero(in_valid)


def split_indices(data: LabeledImages, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) item indices a run uses: the data's own split when it brings one, else a seeded one."""
    if data.valid_mask is not None:
        return np.flatnonzero(~data.valid_mask.numpy()), np.flatnonzero(data.valid_mask.numpy())
    if data.multi_label:
        return label_set_split(data.labels, valid_pct, seed)
    return stratified_split(data.labels, valid_pct, seed)


@dataclass(frozen=True)
class Split:
    """Training and validation tensors of one dataset: uint8 images in memory, or each part in a memory-mapped file
    of its own when the dataset's images are in one (core.data.mapped)."""

    train_images: torch.Tensor  # (N_train, 3, S, S) uint8
    train_labels: torch.Tensor  # (N_train,)
    valid_images: torch.Tensor  # (N_valid, 3, S, S) uint8
    valid_labels: torch.Tensor  # (N_valid,)
    valid_ids: np.ndarray  # (N_valid,) indices into the full dataset

    @classmethod
    def from_dataset(cls, data: LabeledImages, valid_pct: float, seed: int) -> Split:
        """The data's own split when it brings one (train/ and valid/ folders), else a seeded stratified one."""
        train, valid = split_indices(data, valid_pct, seed)
        return cls(mapped.take_rows(data.images, train), data.labels[train], mapped.take_rows(data.images, valid),
                   data.labels[valid], valid)

    def placed(self, device: torch.device, share: float = 0.25) -> Split:
        """On a GPU, the images move into its memory once when they take at most `share` of what is free, so a
        batch is gathered where it is used and nothing crosses the bus per step; else they stay in host memory
        and each batch is gathered into pinned memory ahead of time (core.data.iterate_batches). Labels stay
        on the host: they are small, and the evaluation compares them there."""
        if device.type != "cuda" or self.train_images.is_cuda:
            return self
        free, _ = torch.cuda.mem_get_info(device)
        if self.train_images.nbytes + self.valid_images.nbytes > share * free:
            return self
        placed = dataclasses.replace(self, train_images=self.train_images.to(device),
                                     valid_images=self.valid_images.to(device))
        mapped.trim()  # images read from memory-mapped files leave resident memory
        return placed
