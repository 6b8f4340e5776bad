"""The built-in datasets: scikit-learn's handwritten digits (offline), and Oxford-IIIT Pets, CIFAR-10 and
Fashion-MNIST through torchvision, downloaded once into the data folder where a network exists."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.data.images import LabeledImages, check_memory, open_rgb, resize_uint8
from core.data.sources import BUILTIN_LABELS
from core.errors import DataError


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

    from core.data.archive import data_root

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
        images[i] = open_rgb(path, size, resize)
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


def load_builtin(name: str, size: int) -> LabeledImages:
    """A built-in dataset, decoded at `size`."""
    if name not in BUILTIN_DATASETS:
        raise DataError(f"There is no built-in dataset called '{name}'. "
                        f"Choose one of: {', '.join(BUILTIN_DATASETS)}.")
    return BUILTIN_DATASETS[name].load(size)


def builtin_report(source: str):
    """A health report of a built-in dataset (curated: nothing to skip), for `inspect` and the Data page."""
    from core.data.edits import EditLog, apply_edits_to_images
    from core.data.health import IMBALANCE, HealthReport

    data = apply_edits_to_images(load_builtin(source.split(":", 1)[1], 32), source)
    counts = data.class_counts()
    largest = max(counts.values())
    return HealthReport(source=source, root="(built in)", layout="built-in dataset", class_counts=counts,
                        sizes={}, skipped=[], duplicates=[], conflicts=[], too_small=[],
                        imbalanced=sorted(c for c, n in counts.items() if n * IMBALANCE <= largest),
                        own_split=data.valid_mask is not None, edits=EditLog(source).summary().to_dict())
