"""A multi-label dataset of real photos: 2x2 mosaics of Fashion-MNIST photos (npm's `fashion-mnist` package, as
bench.fashion reads it), each labelled with the classes it shows, in fastai's planet format (a labels CSV of
`image_name,tags`, tags separated by spaces). Each tile is a photo of a random class, or left blank one time in
five; a mosaic whose four tiles came out blank shows nothing and has no label.

    .venv/bin/python -m bench.mosaics OUT [--n 2500] [--seed 0] [--classes 10]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from bench.fashion import CLASS_NAMES, download

BLANK = 0.2  # the share of tiles left blank: mosaics carry 1-4 labels, a few none


def write(out: Path, classes: list[np.ndarray], n: int, seed: int) -> dict[str, list[str]]:
    """`n` mosaics under OUT/images and OUT/labels.csv; returns {file: tags}."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True)
    tags = {}
    for i in range(n):
        tiles, shown = [], set()
        for _ in range(4):
            if rng.random() < BLANK:
                tiles.append(np.zeros((28, 28), dtype=np.uint8))
                continue
            label = int(rng.integers(len(classes)))
            tiles.append(classes[label][rng.integers(len(classes[label]))])
            shown.add(CLASS_NAMES[label])
        name = f"images/{i:05}.png"
        Image.fromarray(np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]]), mode="L").save(out / name)
        tags[name] = sorted(shown)
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        rows = csv.writer(f)
        rows.writerow(["image_name", "tags"])
        rows.writerows([name, " ".join(shown)] for name, shown in tags.items())
    return tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=10, help="use the first N of the 10 classes")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder.")
    tags = write(args.out, download()[:args.classes], args.n, args.seed)
    per_image = [len(t) for t in tags.values()]
    print(f"{len(tags)} mosaics in {args.out}: {min(per_image)}-{max(per_image)} labels each (mean "
          f"{np.mean(per_image):.2f}), {sum(not t for t in tags.values())} with none")


if __name__ == "__main__":
    main()
