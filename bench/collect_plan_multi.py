"""Does the plan for label sets name the starved label first, and is its projected recall what adding images carrying
it really gives?

On 2x2 mosaics of scikit-learn's handwritten digits 0-4, labelled with the digits they show (tests.mosaics; about half
of the mosaics carry each digit), with "four" starved: only --starved-to of the mosaics that carry it are kept. For
each sample (seed):
1. train with the defaults on the starved set; `python -m core.data plan --run` it, and without the run (the probe's
   own recall, at 0.5);
2. add mosaics carrying "four" that were held back (add / 0.8 of them, so that about `add` land in the training part
   of the seeded 80/20 split), train with the defaults again, and read four's recall at that run's threshold.
A set of label sets brings no split of its own, so the retrained run is judged on its own validation images (the
same number, a few more of them carrying four): the comparison is of like with like, not of the same images.

    .venv/bin/python -m bench.collect_plan_multi [--seeds 4 5 6] [--n 1500] [--add 100] [--smoke]
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np

from bench.collect_plan import plan, train
from bench.common import scratch
from core.fix.mend import run_label_set_predictions
from tests.mosaics import DIGITS, write_mosaics

STARVED = "four"
SMOKE_TRAIN = ["--size", "32", "--freeze-epochs", "1", "--epochs", "1"]  # a smoke run's few seconds of training


def write_sets(folder: Path, n: int, seed: int, starved_to: int, add: int) -> tuple[Path, Path]:
    """(the starved set, the set with round(add / 0.8) held-back mosaics carrying STARVED added), both as labels CSVs
    over one folder of images."""
    written = write_mosaics(folder / "images-all", n=n, seed=seed)
    carrying = [name for name, labels in written.items() if STARVED in labels]
    extra = round(add / 0.8)
    if len(carrying) < starved_to + extra:
        raise SystemExit(f"Only {len(carrying)} mosaics carry {STARVED}: raise --n.")
    kept = [name for name in written if name not in carrying[starved_to:]]
    grown = kept + carrying[starved_to:starved_to + extra]
    return tuple(_labelled(folder / part, folder / "images-all", {name: written[name] for name in names})
                 for part, names in (("starved", kept), ("grown", grown)))


def _labelled(out: Path, images: Path, labels: dict[str, tuple[str, ...]]) -> Path:
    """A dataset folder holding `labels`' images (copied) and their labels.csv."""
    for name in labels:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(images / name, out / name)
    with open(out / "labels.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["image_name", "tags"])
        rows.writerows([name, " ".join(tags)] for name, tags in labels.items())
    return out


def starved_recall(run_dir: Path) -> tuple[float, int]:
    """(STARVED's validation recall at the run's threshold for it, validation images carrying it)."""
    probs, targets, thresholds = run_label_set_predictions(run_dir, tuple(sorted(DIGITS)))
    c = sorted(DIGITS).index(STARVED)
    carry = targets[:, c]
    given = probs[:, c] >= np.float32(thresholds[c])
    return float((given & carry).sum() / max(carry.sum(), 1)), int(carry.sum())


def one_sample(seed: int, args: argparse.Namespace, folder: Path) -> dict:
    extra = SMOKE_TRAIN if args.smoke else []
    starved, grown = write_sets(folder, args.n, seed, args.starved_to, args.add)
    run_dir, wall = train(starved, folder / "runs-starved", extra)
    with_run, plan_s = plan(starved, args.add, run_dir)
    probe_only, probe_s = plan(starved, args.add, None)
    again, _ = train(grown, folder / "runs-grown", extra)
    real, carriers = starved_recall(again)
    planned = next(c for c in with_run["labels"] if c["label"] == STARVED)
    probed = next(c for c in probe_only["labels"] if c["label"] == STARVED)
    print(f"seed {seed}: starved run {wall:.0f} s; plan {plan_s:.1f} s with the run, {probe_s:.1f} s without; "
          f"collect next: {', '.join(with_run['collect_next'])} (without the run: "
          f"{', '.join(probe_only['collect_next'])})\n  {STARVED}: {planned['train_images']} training images, recall "
          f"{planned['recall']:.3f} -> projected {planned['projected_recall']:.3f}, after adding and retraining "
          f"{real:.3f} on {carriers} validation images carrying it (off by {planned['projected_recall'] - real:+.3f});"
          f" the probe alone: {probed['recall']:.3f} -> {probed['projected_recall']:.3f}", flush=True)
    return {"first": with_run["collect_next"][0], "error": planned["projected_recall"] - real}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 5, 6])
    parser.add_argument("--n", type=int, default=1500, help="mosaics written, before the starved label's are cut")
    parser.add_argument("--starved-to", type=int, default=30, help="mosaics carrying the starved label kept")
    parser.add_argument("--add", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="one seed, 200 mosaics, 32 px, one epoch each phase")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.n, args.starved_to, args.add = args.seeds[:1], 200, 10, 25
    rows = []
    for seed in args.seeds:
        with scratch("bench-plan-multi-") as folder:
            rows.append(one_sample(seed, args, folder))
    errors = [r["error"] for r in rows]
    print(f"{STARVED} named first in {sum(r['first'] == STARVED for r in rows)} of {len(rows)} samples; projected - "
          f"real recall {' '.join(f'{e:+.3f}' for e in errors)}; largest miss {max(map(abs, errors)):.3f}")


if __name__ == "__main__":
    main()
