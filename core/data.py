"""Dataset sources, decoding once into uint8 tensors, stratified splits, normalization and batching.

Sources: "builtin:NAME" (digits offline; pets, cifar10, fashion_mnist downloaded once), a folder, or a .zip.
Every source becomes a `LabeledImages`: all images decoded and resized once to the training size and kept as
one uint8 tensor, so epochs after the first do no decoding at all (a CPU spends most of a small model's time
there otherwise). Folders and zips go through core.layouts (what is where) and core.health (what is usable):

    python -m core.data inspect PATH_OR_ZIP [--json] [--label-regex REGEX]
"""
from __future__ import annotations

import functools
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import DataError
from core.sources import BUILTIN_LABELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_METHODS = ("squish", "crop", "pad")  # fastai's ResizeMethod: stretch, centre crop, or letterbox
MEMORY_BUDGET = 6 << 30  # decoded uint8 images kept in memory; past this, ask for a smaller image size


@dataclass(frozen=True)
class LabeledImages:
    images: torch.Tensor  # (N, 3, S, S) uint8, RGB
    labels: torch.Tensor  # (N,) int64 class indices
    class_names: tuple[str, ...]
    item_names: tuple[str, ...]  # where each image came from, for people (file name or "digits #12")
    valid_mask: torch.Tensor | None = None  # (N,) bool when the data brings its own validation split

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        return dict(zip(self.class_names, counts))

    def fingerprint(self) -> str:
        """A short hash of pixels and labels: two runs with the same fingerprint saw the same data."""
        digest = hashlib.sha256(self.images.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) uint8 to (N, C, size, size) uint8 with antialiasing, in chunks to bound memory."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    chunks = []
    for start in range(0, len(images), 512):
        chunk = images[start:start + 512].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        chunks.append(chunk.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks)


def _load_digits(size: int) -> LabeledImages:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # (N, 8, 8) ink intensities 0..16 -> white-on-black uint8, grey copied into three channels
    pixels = torch.from_numpy(np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8))
    images = pixels[:, None].expand(-1, 3, -1, -1)
    names = tuple(f"digit #{i}" for i in range(len(pixels)))
    return LabeledImages(resize_uint8(images, size), torch.from_numpy(digits.target).long(),
                         tuple(str(c) for c in digits.target_names), names)


@dataclass(frozen=True)
class BuiltinDataset:
    label: str  # shown to people
    description: str
    load: Callable[[int], LabeledImages]  # image size -> decoded dataset


def _download(label: str, megabytes: int, factory: Callable):
    """Run a torchvision dataset constructor that downloads on first use, with a bounded wait and a plain reason."""
    import socket

    from core.archive import data_root

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # a blocked network fails in seconds instead of hanging the page
    try:
        return factory(str(data_root() / "torchvision"))
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a failed checksum a RuntimeError
        reason = getattr(error, "reason", None) or "no connection"
        raise DataError(f"{label} is downloaded once (about {megabytes} MB) and then kept under the data folder, "
                        f"but the download server could not be reached ({reason}). Without a network, use the "
                        "handwritten digits or your own images.") from None
    finally:
        socket.setdefaulttimeout(previous)


def _from_arrays(pixels: np.ndarray, targets, class_names, n_train: int, size: int, prefix: str) -> LabeledImages:
    """(N, H, W) or (N, H, W, 3) uint8 arrays, the first n_train for training -> LabeledImages at `size`."""
    check_memory(len(pixels), size)
    images = torch.from_numpy(np.ascontiguousarray(pixels))
    images = images[:, None].expand(-1, 3, -1, -1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    valid = torch.arange(len(images)) >= n_train
    return LabeledImages(resize_uint8(images, size), torch.as_tensor(np.asarray(targets)).long(),
                         tuple(class_names), tuple(f"{prefix} #{i}" for i in range(len(images))), valid)


def _load_torchvision_arrays(name: str, label: str, megabytes: int, size: int) -> LabeledImages:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "fashion_mnist": datasets.FashionMNIST}[name]
    train = _download(label, megabytes, lambda root: cls(root, train=True, download=True))
    test = _download(label, megabytes, lambda root: cls(root, train=False, download=True))
    pixels = np.concatenate([np.asarray(train.data), np.asarray(test.data)])
    targets = np.concatenate([np.asarray(train.targets), np.asarray(test.targets)])
    return _from_arrays(pixels, targets, train.classes, len(train.data), size, label)


def _load_pets(size: int, resize: str = "squish") -> LabeledImages:
    """Oxford-IIIT Pets, fastai lesson 1's dataset: 37 breeds, its own trainval/test split as train/valid."""
    from torchvision.datasets import OxfordIIITPet

    parts = [_download("Oxford-IIIT Pets", 800, lambda root, s=split: OxfordIIITPet(root, split=s, download=True))
             for split in ("trainval", "test")]
    paths = [p for part in parts for p in part._images]
    check_memory(len(paths), size)
    images = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    for i, path in enumerate(paths):
        images[i] = _open_rgb(path, size, resize)
    labels = torch.tensor([label for part in parts for label in part._labels], dtype=torch.long)
    valid = torch.arange(len(paths)) >= len(parts[0]._images)
    return LabeledImages(images, labels, tuple(parts[0].classes), tuple(Path(p).name for p in paths), valid)


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "digits": BuiltinDataset(
        BUILTIN_LABELS["digits"],
        "1,797 real 8x8 handwritten digits 0-9 from scikit-learn; ships with the install, needs no network.",
        _load_digits,
    ),
    "pets": BuiltinDataset(
        BUILTIN_LABELS["pets"],
        "fastai lesson 1's dataset: 7,349 photos of 37 cat and dog breeds, with its own train/test split. "
        "Downloaded once where a network exists.", _load_pets),
    "cifar10": BuiltinDataset(
        BUILTIN_LABELS["cifar10"],
        "60,000 32x32 colour photos in 10 classes (planes, cars, birds, cats…), 10,000 kept for validation. "
        "Downloaded once where a network exists.",
        lambda size: _load_torchvision_arrays("cifar10", "CIFAR-10", 170, size)),
    "fashion_mnist": BuiltinDataset(
        BUILTIN_LABELS["fashion_mnist"],
        "70,000 28x28 greyscale photos of 10 kinds of clothing, 10,000 kept for validation. Downloaded once "
        "where a network exists.", lambda size: _load_torchvision_arrays("fashion_mnist", "Fashion-MNIST", 30, size)),
}


def _fit(image, size: int, resize: str):
    """Make a PIL image square at `size`: squish (stretch), crop (centre square) or pad (black borders)."""
    from PIL import Image, ImageOps

    if resize == "crop":
        return ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    if resize == "pad":
        return ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, color=(0, 0, 0))
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _open_rgb(path, size: int, resize: str = "squish") -> torch.Tensor:
    """Decode one image file into (3, size, size) uint8: EXIF orientation applied, every mode made RGB the same
    way (transparency onto white, 16-bit scaled, CMYK converted), GIFs at their first frame."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.draft("RGB", (size * 2, size * 2))  # JPEG decodes at reduced scale: big photos stay cheap
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            pixels = np.asarray(image, dtype=np.float64)
            peak = 65535.0 if pixels.max() > 255 else 255.0
            image = Image.fromarray(np.clip(pixels * (255.0 / peak), 0, 255).astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = _fit(image.convert("RGB"), size, resize)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def decode_image(data: bytes, size: int, resize: str = "squish") -> torch.Tensor:
    """An uploaded file's bytes -> (3, size, size) uint8, or a DataError saying why it is not usable."""
    import io

    from PIL import Image

    try:
        return _open_rgb(io.BytesIO(data), size, resize)
    except Image.DecompressionBombError:
        raise DataError("That image has too many pixels to open safely; use a smaller copy.") from None
    except (OSError, ValueError, SyntaxError):
        raise DataError("That file is not an image this app can read (JPEG, PNG, WebP, BMP, GIF or TIFF).") from None


def check_memory(n_images: int, size: int) -> None:
    needed = n_images * 3 * size * size
    if needed > MEMORY_BUDGET:
        raise DataError(f"{n_images:,} images at {size} px need {needed / 2**30:.1f} GB of memory once decoded; "
                        f"choose an image size of {int((MEMORY_BUDGET / (3 * n_images)) ** 0.5)} px or less.")


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
        images[i] = _open_rgb(item.path, size, resize)
    labels = torch.tensor([index[item.label] for item in report.accepted], dtype=torch.long)
    names = tuple(str(item.path.relative_to(report.root)) for item in report.accepted)
    valid = torch.tensor([bool(item.valid) for item in report.accepted]) if report.own_split else None
    return LabeledImages(images, labels, class_names, names, valid)


def load_source(source: str, size: int, *, label_regex: str | None = None, resize: str = "squish") -> LabeledImages:
    """Load a dataset by its source string ("builtin:NAME", a folder or a .zip) at `size` pixels."""
    if resize not in RESIZE_METHODS:
        raise DataError(f"Resize method must be one of {', '.join(RESIZE_METHODS)}.")
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_DATASETS:
            raise DataError(f"There is no built-in dataset called '{name}'. "
                            f"Choose one of: {', '.join(BUILTIN_DATASETS)}.")
        return BUILTIN_DATASETS[name].load(size)
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


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) standardized with ImageNet's channel mean and std."""
    mean, std = _mean_std_255(images.device)
    return (images.float() - mean) / std


@functools.cache
def _mean_std_255(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once per device: a tensor built from a list on a GPU is a copy that waits for the GPU."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`, to float in 0..1 for display."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def iterate_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None, drop_last: bool = False,
                    device: torch.device | str = "cpu",
                    augment: Callable | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (normalized float images (B, 3, S, S), labels (B,)) from in-memory uint8 tensors.

    `augment`, when given, maps float (B, 3, S, S) in 0..255 to the same, drawing from `generator`.

    Indexing one tensor is far cheaper than a DataLoader with per-item collation for data that is already
    decoded. On CUDA, images already in GPU memory (core.train's Split.placed) are gathered there; images in
    host memory are gathered straight into pinned memory by a thread one batch ahead, so the copy to the GPU
    runs without waiting and the gathering overlaps the GPU's work on the batch before.
    """
    order = torch.randperm(len(labels), generator=generator) if shuffle else torch.arange(len(labels))
    device = torch.device(device)
    n_full = len(order) // batch_size * batch_size
    stop = n_full if drop_last and n_full > 0 else len(order)
    if images.is_cuda:  # gather on the GPU, with no copy of an index or labels per batch
        order, labels = order.to(images.device), labels.to(images.device)
    indices = [order[start:start + batch_size] for start in range(0, stop, batch_size)]
    if device.type == "cuda" and not images.is_cuda:
        gathered = gathered_ahead(images, labels, indices, pin=True)
    else:
        gathered = ((images[index], labels[index]) for index in indices)
    for x, y in gathered:
        if device.type != "cpu":  # no-ops for what is there already
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
        if x.dtype != torch.uint8:  # cached features (core.train's frozen phase), not images
            yield x, y
            continue
        yield normalize(augment(x.float(), generator) if augment is not None else x), y


def gathered_ahead(images: torch.Tensor, labels: torch.Tensor, indices: list[torch.Tensor], *,
                   pin: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The rows `indices` picks, batch by batch, each gathered into fresh (pinned, with `pin`) memory while
    the one before is in use: the next batch is always in progress on a thread (index_select releases the
    GIL). Fresh buffers: PyTorch's pinned allocator reuses one only after the copy that read it finished."""
    def gather(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.empty((len(index), *images.shape[1:]), dtype=images.dtype, pin_memory=pin)
        y = torch.empty((len(index), *labels.shape[1:]), dtype=labels.dtype, pin_memory=pin)
        return torch.index_select(images, 0, index, out=x), torch.index_select(labels, 0, index, out=y)

    if not indices:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches-ahead") as pool:
        ahead = pool.submit(gather, indices[0])
        for following in indices[1:] + [None]:
            batch = ahead.result()
            if following is not None:
                ahead = pool.submit(gather, following)
            yield batch


def builtin_report(source: str):
    """A health report of a built-in dataset (curated: nothing to skip), for `inspect` and the Data page."""
    from core.health import IMBALANCE, HealthReport

    data = load_source(source, 32)
    counts = data.class_counts()
    largest = max(counts.values())
    return HealthReport(source=source, root="(built in)", layout="built-in dataset", class_counts=counts,
                        sizes={}, skipped=[], duplicates=[], conflicts=[], too_small=[],
                        imbalanced=sorted(c for c, n in counts.items() if n * IMBALANCE <= largest),
                        own_split=data.valid_mask is not None)


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
