"""How honest the Train page's times are, quiet and beside another training (issue 21): the estimate before Start
against the run's real time, and the time left stated from a quarter of the run on against what really remained.

    .venv/bin/python -m bench.time_left [--data builtin:digits] [--size 64] [--epochs 4]

Each run is started as the Train page starts it (its own process) and its status.json read every half second; the
time left is what the page shows (core.train.progress.left_now). Run alone: the second half is meant to share the
CPU with one training, not with more.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.common import a_training_beside, scratch
from core.config import TrainConfig
from core.data.builtin import builtin_report
from core.data.load import inspect_source
from core.device import pick_device
from core.runs import store
from core.runs.folder import RunFolder
from core.train.estimate import STARTUP_S, decode_seconds, measure, planned_cut, run_seconds
from core.train.progress import left_now
from core.train.recipe import trains_late

BOUND = 1.5


def estimate_before_start(config: TrainConfig) -> float:
    """The Train page's "About N min" for these settings (pages/train.py time_estimate), in seconds."""
    report = builtin_report(config.data) if config.data.startswith("builtin:") else \
        inspect_source(config.data, config.label_regex or None)
    n_valid = max(round(report.n_images * config.valid_pct), 1)
    n_train = max(report.n_images - n_valid, 1)
    device = pick_device()
    cut = planned_cut(config, n_train, n_valid, device) if trains_late(config) else None
    costs = measure(config.arch, config.size, config.bs, device, cut.at if cut else None)
    decoding = 0.0 if config.data.startswith("builtin:") else \
        decode_seconds([item.path for item in report.accepted], config.size, config.resize)
    return STARTUP_S + decoding + run_seconds(config, n_train, n_valid, costs, cut)


def one_run(config: TrainConfig, runs_dir: Path) -> dict:
    """Estimate, start, watch to the end: the estimate, the real time, and each stated time left against the truth."""
    estimate = estimate_before_start(config)
    run_dir = store.create_run(config, runs_dir)
    launched = time.time()
    process = store.launch(run_dir)
    readings = []  # (when, stated seconds left)
    while (status := RunFolder(run_dir).status()).get("state") in ("queued", "running", "stopping", None):
        left, _ = left_now(status)
        if left is not None:
            readings.append((time.time(), left))
        time.sleep(0.5)
    process.wait(timeout=60)
    assert status.get("state") == "completed", status
    finished = status["finished"]
    quarter = launched + (finished - launched) / 4
    late = [(when, left) for when, left in readings if when >= quarter and finished - when > 1]
    outside = [f"at {(when - launched) / (finished - launched):.0%}: {left:.0f} s stated, {finished - when:.0f} s left"
               for when, left in late if not 1 / BOUND <= left / (finished - when) <= BOUND]
    ratios = [left / (finished - when) for when, left in late]
    return {"estimate": estimate, "real": finished - launched, "ratios": ratios, "outside": outside}


def report(label: str, result: dict) -> None:
    ratios = result["ratios"]
    within = sum(1 / BOUND <= r <= BOUND for r in ratios)
    print(f"{label}: estimate before Start {result['estimate']:.0f} s, real {result['real']:.0f} s "
          f"(ratio {result['estimate'] / result['real']:.2f}); time left from a quarter on: median ratio "
          f"{statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}, "
          f"{within}/{len(ratios)} readings within {BOUND}x", flush=True)
    for line in result["outside"]:
        print(f"  outside: {line}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="builtin:digits")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    config = TrainConfig(data=args.data, size=args.size, epochs=args.epochs)
    with scratch("bench-time-left-") as runs_dir:
        report("quiet            ", one_run(config, runs_dir))
        with a_training_beside():
            report("beside a training", one_run(config, runs_dir))


if __name__ == "__main__":
    main()
