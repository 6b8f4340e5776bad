"""Dataset sources, decoding once into uint8 tensors, stratified splits, normalization and batching.

Every source becomes a `LabeledImages`: all images decoded and resized once to the training size and kept as
one uint8 tensor, so epochs after the first do no decoding at all (a CPU spends most of a small model's time
there otherwise).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DataError(ValueError):
    """A dataset that cannot be used, with a sentence a person can act on."""


@dataclass(frozen=True)
class LabeledImages:
    images: torch.Tensor  # (N, 3, S, S) uint8, RGB
    labels: torch.Tensor  # (N,) int64 class indices
    class_names: tuple[str, ...]
    item_names: tuple[str, ...]  # where each image came from, for people (file name or "digits #12")

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


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "digits": BuiltinDataset(
        "Handwritten digits (offline)",
        "1,797 real 8x8 handwritten digits 0-9 from scikit-learn; ships with the install, needs no network.",
        _load_digits,
    ),
}


def _open_rgb(path, size: int) -> torch.Tensor:
    """Decode one image file into (3, size, size) uint8: EXIF orientation applied, every mode made RGB."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.draft("RGB", (size * 2, size * 2))  # JPEG decodes at reduced scale: big photos stay cheap
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P") or "transparency" in image.info:
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """An uploaded file's bytes -> (3, size, size) uint8, or a DataError saying why it is not usable."""
    import io

    from PIL import Image

    try:
        return _open_rgb(io.BytesIO(data), size)
    except Image.DecompressionBombError:
        raise DataError("That image has too many pixels to open safely; use a smaller copy.") from None
    except (OSError, ValueError, SyntaxError):
        raise DataError("That file is not an image this app can read (JPEG, PNG, WebP, BMP, GIF or TIFF).") from None


def _load_folder(root: Path, size: int) -> LabeledImages:
    """One sub-folder per class, images inside (torchvision's ImageFolder layout)."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    images, labels, names = [], [], []
    for index, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue
            try:
                images.append(_open_rgb(path, size))
            except (OSError, ValueError):
                continue  # unreadable files are left out; the Data issue's health report lists them
            labels.append(index)
            names.append(str(path.relative_to(root)))
    present = sorted(set(labels))
    if len(present) < 2:
        raise DataError(f"{root} needs at least two sub-folders of images, one per class; found {len(present)}.")
    return LabeledImages(torch.stack(images), torch.tensor(labels, dtype=torch.long),
                         tuple(d.name for d in class_dirs), tuple(names))


def load_source(source: str, size: int) -> LabeledImages:
    """Load a dataset by its source string ("builtin:digits" or a folder path) at `size` pixels."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_DATASETS:
            raise DataError(f"There is no built-in dataset called '{name}'. "
                            f"Choose one of: {', '.join(BUILTIN_DATASETS)}.")
        return BUILTIN_DATASETS[name].load(size)
    root = Path(source).expanduser()
    if not root.is_dir():
        raise DataError(f"'{source}' is not a folder. Give a folder with one sub-folder of images per class, "
                        "or a built-in dataset such as builtin:digits.")
    return _load_folder(root, size)


def source_label(source: str) -> str:
    if source.startswith("builtin:") and source[8:] in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[source[8:]].label
    return os.path.basename(os.path.normpath(source)) or source


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
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`, to float in 0..1 for display."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def iterate_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None, drop_last: bool = False,
                    device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (normalized float images (B, 3, S, S), labels (B,)) from in-memory uint8 tensors.

    Indexing one tensor is far cheaper than a DataLoader with per-item collation for data that is already
    decoded; on CUDA the uint8 batch is copied from pinned memory and normalized on the GPU.
    """
    order = torch.randperm(len(labels), generator=generator) if shuffle else torch.arange(len(labels))
    device = torch.device(device)
    n_full = len(order) // batch_size * batch_size
    stop = n_full if drop_last and n_full > 0 else len(order)
    for start in range(0, stop, batch_size):
        index = order[start:start + batch_size]
        x, y = images[index], labels[index]
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        yield normalize(x), y
