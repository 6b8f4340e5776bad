"""Real multi-label images for tests: 2x2 mosaics of handwritten digits (scikit-learn's), each labelled with the
digits it shows, in fastai's planet format (a labels.csv of image_name,tags)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

DIGITS = ("zero", "one", "two", "three", "four")


def write_mosaics(root: Path, n: int = 60, seed: int = 0, separator: str = " ") -> dict[str, tuple[str, ...]]:
    """`n` 2x2 mosaics of digits 0-4 (each tile a digit or blank, at least one digit), three blank images with no
    label, and `labels.csv` naming each image's digits; returns {file: label set}."""
    rng = np.random.default_rng(seed)
    digits = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for i in range(n + 3):
        tiles, labels = [], set()
        for _ in range(4):
            digit = int(rng.integers(0, 6)) if i < n else 5  # 5: a blank tile
            if digit < 5:
                tile = digits.images[rng.choice(np.flatnonzero(digits.target == digit))] * 16
                labels.add(DIGITS[digit])
            else:
                tile = np.zeros((8, 8))
            tiles.append(tile)
        if i < n and not labels:
            tiles[0], labels = digits.images[0] * 16, {"zero"}
        pixels = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]]).clip(0, 255).astype(np.uint8)
        name = f"images/m{i:03}.png"
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(pixels).convert("RGB").resize((32, 32)).save(root / name)
        written[name] = tuple(sorted(labels))
    with open(root / "labels.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["image_name", "tags"])
        rows.writerows([name, separator.join(labels)] for name, labels in written.items())
    return written


def corrupt_labels(root: Path, written: dict[str, tuple[str, ...]], share: float = 0.1, seed: int = 0,
                   separator: str = " ") -> dict[str, tuple[str, ...]]:
    """Rewrite `root`'s labels.csv (as write_mosaics left it, `written`) with a seeded `share` of its images
    mislabelled: half of them lose one of their digits (an image with none gains one instead), the rest gain one they
    do not show. Returns {file: the label set it now has} for the mislabelled images only."""
    rng = np.random.default_rng(seed)
    names = sorted(written)
    changed = {}
    for name in rng.choice(names, int(round(share * len(names))), replace=False):
        labels = set(written[name])
        absent = [digit for digit in DIGITS if digit not in labels]
        if labels and (rng.random() < 0.5 or not absent):
            labels.discard(str(rng.choice(sorted(labels))))
        else:
            labels.add(str(rng.choice(absent)))
        changed[str(name)] = tuple(sorted(labels))
    with open(root / "labels.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["image_name", "tags"])
        rows.writerows([name, separator.join(changed.get(name, labels))] for name, labels in written.items())
    return changed
