"""Label sets against fastai's planet recipe: sample-averaged F1 on held-out images, and wall time, one after the other.

    bench/setup_fastai.sh                                          # once: fastai in .venv-fastai, for this only
    .venv/bin/python -m bench.multilabel [--n 2500] [--test 1000] [--seed 0] [--size 64]
    # target (issue 27): F1 (samples) >= fastai's + 0.10, in at most a third of its wall time

The data: bench.mosaics' 2x2 mosaics of Fashion-MNIST photos, labelled with the classes they show; `--n` for training
and validation (the engine's seeded split, handed to fastai as is_valid, so both sides learn and choose on the same
images) and `--test` more, drawn with another seed, that neither side sees until the end. Both sides: the project's
pretrained EfficientNet-Lite0 at `--size` px, batch 64. Ours: `python -m core.train` at its defaults (its per-label
thresholds chosen on validation), then the run's own predictions (core.ship.predict) on the test images. fastai:
bench/fastai_planet (fine_tune(3, base_lr=3e-3, freeze_epochs=4); of the thresholds 0.5 and planet's 0.2, the one with
the better validation F1). Times: from launching each training process to its end (fastai's includes predicting
the test images, a second or two).
"""
from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

from bench.common import ROOT, python, run_timed


def write_sets(folder: Path, n: int, test: int, seed: int) -> None:
    """folder/pool (labels.csv with is_valid, as the engine splits it) and folder/test, both bench.mosaics."""
    from bench.fashion import download
    from bench.mosaics import write
    from core.data.load import load_source, split_indices

    classes = download()
    write(folder / "pool", classes, n, seed)
    write(folder / "test", classes, test, seed + 1000)
    data = load_source(str(folder / "pool"), 28)
    _, valid = split_indices(data, 0.2, 42)  # the run's own split at its default seed and share
    in_valid = {Path(data.item_names[i]).name for i in valid}
    with open(folder / "pool" / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(folder / "pool" / "labels.csv", "w", newline="", encoding="utf-8") as f:  # fastai's valid_col
        csv.writer(f).writerows([[*rows[0], "is_valid"]] + [[*row, Path(row[0]).name in in_valid] for row in rows[1:]])


def truth(folder: Path, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """((N, C) bool label sets of folder/labels.csv's rows over `names`, the rows' files)."""
    with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return np.array([[name in row["tags"].split() for name in names] for row in rows]), [r["image_name"] for r in rows]


def f1_rows(predicted: np.ndarray, targets: np.ndarray) -> dict[str, float | np.ndarray]:
    """scikit-learn's F1 averaged over images (samples) and over labels (macro), and each label's."""
    from sklearn.metrics import f1_score

    per_label = f1_score(targets, predicted, average=None, zero_division=0)
    return {"f1_samples": float(f1_score(targets, predicted, average="samples", zero_division=0)),
            "f1_macro": float(per_label.mean()), "per_label": per_label}


def ours(folder: Path, size: int) -> tuple:
    from core.ship.predict import Predictor

    timed = run_timed([python(), "-m", "core.train", "--data", str(folder / "pool"), "--size", str(size), "--bs", "64",
                       "--runs-dir", str(folder / "runs"), "--name", "ours"])
    predictor = Predictor.from_run(folder / "runs" / "ours")
    targets, files = truth(folder / "test", predictor.class_names)
    found = [set(predictor.file(folder / "test" / file).labels) for file in files]  # one pass an image
    predicted = np.array([[name in labels for name in predictor.class_names] for labels in found])
    return timed, f1_rows(predicted, targets), predictor.class_names


def fastai(folder: Path, size: int) -> tuple:
    out = folder / "fastai.npz"
    timed = run_timed([str(ROOT / ".venv-fastai" / "bin" / "python"), "-m", "bench.fastai_planet",
                       str(folder / "pool"), str(folder / "test"), str(out), "--size", str(size)])
    with np.load(out) as saved:
        valid_probs, test_probs, names = saved["valid"], saved["test"], [str(v) for v in saved["vocab"]]
    pool, _ = truth(folder / "pool", names)
    with open(folder / "pool" / "labels.csv", newline="", encoding="utf-8") as f:
        valid_rows = np.array([row["is_valid"] == "True" for row in csv.DictReader(f)])
    chosen = max((0.5, 0.2), key=lambda t: f1_rows(valid_probs >= t, pool[valid_rows])["f1_samples"])
    targets, _ = truth(folder / "test", names)
    return timed, f1_rows(test_probs >= chosen, targets), names, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    if not (ROOT / ".venv-fastai" / "bin" / "python").exists():
        raise SystemExit("fastai is needed for this benchmark: run bench/setup_fastai.sh first")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_sets(folder, args.n, args.test, args.seed)
        theirs_timed, theirs, names, chosen = fastai(folder, args.size)
        ours_timed, mine, our_names = ours(folder, args.size)
    print(f"{args.n} mosaics (seed {args.seed}) to learn and choose on, {args.test} held out (seed "
          f"{args.seed + 1000}), {args.size} px")
    print(f"fastai planet recipe: {theirs_timed.wall_s:.1f} s, threshold {chosen}; F1 samples "
          f"{theirs['f1_samples']:.3f}, macro {theirs['f1_macro']:.3f}; peak RSS {theirs_timed.peak_rss_mb:.0f} MB")
    print(f"ours (defaults):      {ours_timed.wall_s:.1f} s, per-label thresholds; F1 samples "
          f"{mine['f1_samples']:.3f}, macro {mine['f1_macro']:.3f}; peak RSS {ours_timed.peak_rss_mb:.0f} MB")
    ours_by = dict(zip(our_names, mine["per_label"]))
    for name, f1 in zip(names, theirs["per_label"]):
        print(f"  {name:14} F1 fastai {f1:.3f}  ours {ours_by[name]:.3f}")
    print(f"F1 (samples) ours - fastai: {mine['f1_samples'] - theirs['f1_samples']:+.3f} (target +0.10); time "
          f"{theirs_timed.wall_s / ours_timed.wall_s:.1f}x less (target 3x)")


if __name__ == "__main__":
    main()
