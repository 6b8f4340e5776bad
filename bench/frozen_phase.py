"""Does the frozen phase end with its best head on a big dataset? All 70,000 Fashion-MNIST photos at 64 px
(bench/fashion.py --all), the default five frozen epochs and no unfrozen ones: the epochs' validation losses as
they ended, the one the phase ends with (core.train.recipe.KeepBestEpoch) against the last epoch's (what the phase
ended with before), in the same run.

    .venv/bin/python -m bench.fashion /tmp/fashion70k --all                 # once
    .venv/bin/python -m bench.frozen_phase /tmp/fashion70k [--size 64] [--smoke]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import digits_folder, python, run_timed
from core.runs.folder import RunFolder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default="builtin:digits", help="a folder (bench/fashion.py makes one)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="200 digits at 16 px, to check the benchmark runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs_dir:
        data = str(digits_folder(Path(runs_dir) / "digits")) if args.smoke else args.data
        flags = ["--data", data, "--size", "16" if args.smoke else str(args.size), "--epochs", "0"]
        if args.smoke:
            flags += ["--freeze-epochs", "3", "--lr", "10"]  # a rate far too high, so the last epoch is not the best
        timed = run_timed([python(), "-m", "core.train", *flags, "--runs-dir", runs_dir, "--name", "frozen"])
        rows = RunFolder(Path(runs_dir) / "frozen").read_metrics().epochs
    print(f"python -m core.train {' '.join(flags)}   (wall {timed.wall_s:.1f} s, peak RSS {timed.peak_rss_mb:.0f} MB)")
    epochs = [row for row in rows if row["phase"] == "frozen"]
    # each epoch as it ended (the last row carries the kept head's figures, and its own under ended_*)
    ended = [(row.get("ended_valid_loss", row["valid_loss"]), row.get("ended_accuracy", row["accuracy"]))
             for row in epochs]
    for row, (loss, accuracy) in zip(epochs, ended):
        print(f"  epoch {row['epoch']}: validation loss {loss:.4f}, accuracy {accuracy:.1%}")
    last, (ended_loss, ended_accuracy) = epochs[-1], ended[-1]
    best = min(loss for loss, _ in ended)
    kept = f"epoch {last['kept_epoch']}'s head" if "kept_epoch" in last else "its last epoch's head"
    print(f"the phase ends with {kept}: validation loss {last['valid_loss']:.4f} (best epoch {best:.4f}), accuracy "
          f"{last['accuracy']:.1%}; its last epoch ended at {ended_loss:.4f}, {ended_accuracy:.1%}")
    print(f"kept / last epoch: validation loss {last['valid_loss'] / ended_loss:.2f}x, accuracy "
          f"{(last['accuracy'] - ended_accuracy) * 100:+.1f} points")


if __name__ == "__main__":
    main()
