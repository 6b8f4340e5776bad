"""Dataset sources and splits: a source string becomes `LabeledImages`, and its split the tensors a run trains on.

Sources: "builtin:NAME" (core.builtin), a folder, or a .zip. Folders and zips go through core.layouts (what is
where) and core.health (what is usable), then core.images decodes exactly what the health report accepted:

    python -m core.data inspect PATH_OR_ZIP [--json] [--label-regex REGEX]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.builtin import builtin_report, load_builtin
from core.config import RESIZE_METHODS
from core.errors import DataError
from core.images import LabeledImages, check_memory, open_rgb


def resolve_folder(source: str) -> Path:
    """The folder a path source stands for: the folder itself (no copy), or a zip extracted once under data/."""
    from core.archive import archive_name, data_root, extract_zip

    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if not path.exists():
        raise DataError(f"'{source}' does not exist. Give a folder of images, a .zip of one, or a built-in "
                        "dataset such as builtin:digits.")
    folder = data_root() / "uploads" / archive_name(path.stem, path=path)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        extract_zip(path, folder)
    return folder


def inspect_source(source: str, label_regex: str | None = None):
    """The health report (core.health.HealthReport) of a folder or zip source."""
    from core.health import inspect_scan
    from core.layouts import scan_folder

    return inspect_scan(scan_folder(resolve_folder(source), label_regex), source)


def load_report(report, size: int, resize: str = "squish") -> LabeledImages:
    """Decode exactly the images a health report accepted, at `size`."""
    if not report.ok:
        raise DataError(report.problems[0])
    check_memory(len(report.accepted), size)
    class_names = tuple(report.class_counts)
    index = {name: i for i, name in enumerate(class_names)}
    images = torch.empty(len(report.accepted), 3, size, size, dtype=torch.uint8)
    for i, item in enumerate(report.accepted):
        images[i] = open_rgb(item.path, size, resize)
    labels = torch.tensor([index[item.label] for item in report.accepted], dtype=torch.long)
    names = tuple(str(item.path.relative_to(report.root)) for item in report.accepted)
    valid = torch.tensor([bool(item.valid) for item in report.accepted]) if report.own_split else None
    return LabeledImages(images, labels, class_names, names, valid)


def load_source(source: str, size: int, *, label_regex: str | None = None, resize: str = "squish") -> LabeledImages:
    """Load a dataset by its source string ("builtin:NAME", a folder or a .zip) at `size` pixels."""
    if resize not in RESIZE_METHODS:
        raise DataError(f"Resize method must be one of {', '.join(RESIZE_METHODS)}.")
    if source.startswith("builtin:"):
        return load_builtin(source.split(":", 1)[1], size)
    return load_report(inspect_source(source, label_regex), size, resize)


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


@dataclass(frozen=True)
class Split:
    """Training and validation tensors of one dataset, all uint8 images in memory."""

    train_images: torch.Tensor  # (N_train, 3, S, S) uint8
    train_labels: torch.Tensor  # (N_train,)
    valid_images: torch.Tensor  # (N_valid, 3, S, S) uint8
    valid_labels: torch.Tensor  # (N_valid,)
    valid_ids: np.ndarray  # (N_valid,) indices into the full dataset

    @classmethod
    def from_dataset(cls, data: LabeledImages, valid_pct: float, seed: int) -> "Split":
        """The data's own split when it brings one (train/ and valid/ folders), else a seeded stratified one."""
        if data.valid_mask is not None:
            valid = np.flatnonzero(data.valid_mask.numpy())
            train = np.flatnonzero(~data.valid_mask.numpy())
        else:
            train, valid = stratified_split(data.labels, valid_pct, seed)
        return cls(data.images[train], data.labels[train], data.images[valid], data.labels[valid], valid)

    def placed(self, device: torch.device, share: float = 0.25) -> "Split":
        """On a GPU, the images move into its memory once when they take at most `share` of what is free, so a
        batch is gathered where it is used and nothing crosses the bus per step; else they stay in host memory
        and each batch is gathered into pinned memory ahead of time (core.data.iterate_batches). Labels stay
        on the host: they are small, and the evaluation compares them there."""
        if device.type != "cuda" or self.train_images.is_cuda:
            return self
        free, _ = torch.cuda.mem_get_info(device)
        if self.train_images.nbytes + self.valid_images.nbytes > share * free:
            return self
        return dataclasses.replace(self, train_images=self.train_images.to(device),
                                   valid_images=self.valid_images.to(device))


def main(argv: list[str] | None = None) -> int:
    """`python -m core.data inspect PATH_OR_ZIP [--json]`: the health report; exit 0 if trainable, else 2."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m core.data")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="check a dataset before training")
    inspect.add_argument("source", help="a folder, a .zip, or builtin:NAME")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument("--label-regex", default=None, help="labels from file names: a regex with one group")
    args = parser.parse_args(argv)
    try:
        if args.source.startswith("builtin:"):
            report = builtin_report(args.source)
        else:
            report = inspect_source(args.source, args.label_regex)
    except DataError as error:
        print(json.dumps({"ok": False, "verdict": str(error)}) if args.json else str(error))
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    else:
        print(f"{report.source}: {report.layout}, in {report.root}")
        width = max(len(name) for name in report.class_counts) if report.class_counts else 0
        for name, count in report.class_counts.items():
            flag = "  (few: imbalanced)" if name in report.imbalanced else ""
            print(f"  {name:<{width}}  {count:>6}{flag}")
        if report.sizes.get("width"):
            w, h = report.sizes["width"], report.sizes["height"]
            print(f"image sizes: width {w['min']}–{w['max']} (median {w['median']}), "
                  f"height {h['min']}–{h['max']} (median {h['median']})")
        for file, reason in report.skipped:
            print(f"skipped {file}: {reason}")
        for group in report.duplicates:
            print(f"identical files: {', '.join(group)}")
        for group in report.conflicts:
            print(f"the same image under different labels: {', '.join(group)}")
        if report.too_small:
            print(f"too few images to split: {', '.join(report.too_small)}")
        print(report.verdict())
    return 0 if report.ok else 2


if __name__ == "__main__":
    import sys

    sys.exit(main())
