"""A training alone and beside another training, with libgomp's default spinning and with the app's
(GOMP_SPINCOUNT, set in core/__init__.py): the wall time of the same command, and its ratio.

    .venv/bin/python -m bench.beside [--repeats 3]

The command is the app's default on the digits with four unfrozen epochs; "beside" keeps the same training looping
in its own process and runs folder (bench.common.a_training_beside), both processes with the setting measured.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from bench.common import ROOT, a_training_beside, python, scratch

COMMAND = ["-m", "core.train", "--data", "builtin:digits", "--size", "64", "--epochs", "4"]
SPIN = {"libgomp's default": "300000", "the app's": "1000"}


def wall_s() -> float:
    with scratch("bench-beside-") as runs_dir:
        started = time.perf_counter()
        subprocess.run([python(), *COMMAND, "--runs-dir", str(runs_dir)], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    alone: dict[str, list[float]] = {name: [] for name in SPIN}
    beside: dict[str, float] = {}
    for _ in range(args.repeats):  # alternated, so a drift of the machine falls on both
        for name, count in SPIN.items():
            os.environ["GOMP_SPINCOUNT"] = count  # the children inherit it
            alone[name].append(wall_s())
    for name, count in SPIN.items():
        os.environ["GOMP_SPINCOUNT"] = count
        with a_training_beside():
            beside[name] = wall_s()
    base = statistics.median(alone["libgomp's default"])
    for name in SPIN:
        median = statistics.median(alone[name])
        print(f"spinning {SPIN[name]:>6} ({name}): alone median {median:.1f} s (ratio {median / base:.3f} to the "
              f"default), beside a training {beside[name]:.0f} s ({beside[name] / median:.2f}x alone)")


if __name__ == "__main__":
    main()
