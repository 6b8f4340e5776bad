"""Imbalanced classes: balanced accuracy and the small classes' recall with balance none, weights and sampler.

    python -m bench.imbalance [--seeds 0 1 2] [--epochs 1] [--smoke]

The digits become a folder with its own split (train/ and valid/, one folder per class): validation is a seeded
stratified 20% of every class, untouched and balanced; training keeps every image of classes 0-4 and a seeded
10% of classes 5-9 (about 14 images each against about 144: the largest class has 10x the smallest's).
The same command, `python -m core.train --data FOLDER --balance B`, trains three times per seed, and the run's
predictions.npz is scored with scikit-learn: balanced accuracy (the mean recall over all ten classes) and the
mean recall of the small classes 5-9. Ratios are against balance none in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from bench.common import python, run_timed

SMALL_CLASSES = (5, 6, 7, 8, 9)
KEEP = 0.10  # share of each small class's training images kept
METHODS = ("none", "weights", "sampler")
# EfficientNet-Lite0's ImageNet weights ship with the package: 5 frozen epochs on cached features, then one
# unfrozen epoch at 32 px (both phases train with the balance asked for).
TRAIN_ARGS = ["--arch", "efficientnet_lite0", "--size", "32", "--bs", "32", "--freeze-epochs", "5"]
SMOKE_ARGS = ["--arch", "efficientnet_lite0", "--size", "16", "--bs", "32", "--freeze-epochs", "1", "--epochs", "0"]
SMOKE_IMAGES = 200  # --smoke: the first 200 digits, so each of the three runs decodes a few PNGs, not 1,400


def write_imbalanced_digits(folder: Path, seed: int, keep: float = KEEP, count: int | None = None) -> dict[str, int]:
    """The digits (the first `count` when given) as 8x8 PNGs under folder/train/<class>/ and folder/valid/<class>/,
    classes 5-9 cut to `keep` of their training images (seeded); returns the training count of each class."""
    from PIL import Image

    from core.data.builtin import load_builtin
    from core.data.load import stratified_split

    data = load_builtin("digits", 8)
    train, valid = stratified_split(data.labels[:count], 0.2, seed)
    rng = np.random.default_rng(seed)
    labels = data.labels[:count].numpy()
    kept = [i for i in train if labels[i] not in SMALL_CLASSES]
    for label in SMALL_CLASSES:
        mine = train[labels[train] == label]
        kept += rng.choice(mine, max(1, round(keep * len(mine))), replace=False).tolist()
    for part, indices in (("train", kept), ("valid", valid)):
        for i in indices:
            target = folder / part / str(labels[i]) / f"{i}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(target)
    return {str(label): int((labels[kept] == label).sum()) for label in range(10)}


def scores(run_dir: Path) -> tuple[float, float]:
    """(balanced accuracy, mean recall of the small classes) of a finished run's validation predictions."""
    from sklearn.metrics import balanced_accuracy_score, recall_score

    from core.runs.folder import RunFolder

    with np.load(run_dir / "predictions.npz") as predictions:
        targets, predicted = predictions["targets"], predictions["probs"].argmax(1)
    names = RunFolder(run_dir).class_names()
    small = [names.index(str(label)) for label in SMALL_CLASSES]
    recalls = recall_score(targets, predicted, labels=small, average=None, zero_division=0)
    return balanced_accuracy_score(targets, predicted), float(np.mean(recalls))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=1, help="unfrozen epochs after the frozen ones")
    parser.add_argument("--smoke", action="store_true", help="one seed, 200 digits, one frozen epoch at 16 px")
    args = parser.parse_args()
    train_args = SMOKE_ARGS if args.smoke else [*TRAIN_ARGS, "--epochs", str(args.epochs)]
    seeds = args.seeds[:1] if args.smoke else args.seeds
    results = {method: {"balanced": [], "small": [], "seconds": []} for method in METHODS}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as data_dir:
            folder = Path(tmp) / "digits"
            counts = write_imbalanced_digits(folder, seed, count=SMOKE_IMAGES if args.smoke else None)
            print(f"seed {seed}: training images per class {counts} (largest / smallest "
                  f"{max(counts.values()) / min(counts.values()):.1f})", flush=True)
            for method in METHODS:
                timed = run_timed([python(), "-m", "core.train", "--data", str(folder), *train_args,
                                   "--seed", str(seed), "--balance", method, "--runs-dir", str(Path(tmp) / "runs"),
                                   "--name", method], env={"STUDIO_DATA_DIR": data_dir})
                balanced, small = scores(Path(tmp) / "runs" / method)
                for name, value in (("balanced", balanced), ("small", small), ("seconds", timed.wall_s)):
                    results[method][name].append(value)
                print(f"  {method:8}  balanced accuracy {balanced:.3f}  small classes' recall {small:.3f}  "
                      f"({timed.wall_s:.0f} s)", flush=True)
    median = {method: {name: statistics.median(values) for name, values in series.items()}
              for method, series in results.items()}
    ratio = lambda method, name: ratio_text(median[method][name], median["none"][name])  # noqa: E731
    print(f"\nmedian of {len(seeds)} seed(s), {' '.join(train_args)}")
    print(f"  {'balance':8}  {'balanced acc':>12}  {'/ none':>6}  {'small recall':>12}  {'/ none':>6}  {'s':>4}")
    for method in METHODS:
        row = median[method]
        print(f"  {method:8}  {row['balanced']:12.3f}  {ratio(method, 'balanced'):>6}  {row['small']:12.3f}  "
              f"{ratio(method, 'small'):>6}  {row['seconds']:4.0f}")
    print(f"small classes' recall, weights / none: {ratio('weights', 'small')}; sampler / none: "
          f"{ratio('sampler', 'small')}")


def ratio_text(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}" if baseline > 0 else "n/a"


if __name__ == "__main__":
    main()
