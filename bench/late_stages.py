"""Unfrozen epochs on the late stages (unfreeze=late, the default) against every layer (unfreeze=all, fastai's
and the previous default), on Fashion-MNIST (bench/fashion.py: 2,000 training and 500 validation photos the
project was never tuned on), same command otherwise, one after the other.

    .venv/bin/python -m bench.fashion /tmp/fashion2500                       # once
    .venv/bin/python -m bench.late_stages /tmp/fashion2500 [--size 128] [--smoke]

Prints, for each, the wall time from launching the process, the best and final validation accuracy, when the
final accuracy of unfreeze=all was first reached, and the peak resident memory; then the ratios.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import digits_folder, python, run_timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default="builtin:digits", help="a folder (bench/fashion.py makes one)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--smoke", action="store_true", help="200 digits at 16 px, to check the benchmark runs")
    args = parser.parse_args()
    extra = ["--epochs", "1", "--freeze-epochs", "1", "--size", "16"] if args.smoke else ["--size", str(args.size)]
    results = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        data = str(digits_folder(Path(runs_dir) / "digits")) if args.smoke else args.data
        for unfreeze in ("all", "late"):
            flags = ["--data", data, *extra, "--unfreeze", unfreeze]
            results[unfreeze] = run_timed([python(), "-m", "core.train", *flags, "--runs-dir", runs_dir])
            print(f"python -m core.train {' '.join(flags)}", flush=True)
    target = results["all"].final_accuracy
    for name, timed in results.items():
        best = max((accuracy for _, _, accuracy in timed.epochs), default=0.0)
        reached = timed.first_reaching(target)
        print(f"  unfreeze={name:4}  wall {timed.wall_s:6.1f} s  best {best:.1%}  final {timed.final_accuracy:.1%}  "
              f"reached {target:.1%} after {'-' if reached is None else f'{reached:.1f} s'}  "
              f"peak RSS {timed.peak_rss_mb:.0f} MB")
    late, whole = results["late"], results["all"]
    print(f"late / all: wall {late.wall_s / whole.wall_s:.2f}x, peak RSS {late.peak_rss_mb / whole.peak_rss_mb:.2f}x, "
          f"final accuracy {(late.final_accuracy - whole.final_accuracy) * 100:+.1f} points")


if __name__ == "__main__":
    main()
