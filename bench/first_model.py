"""A newcomer's first model: digits, pretrained EfficientNet-Lite0, every setting at the app's default.

    .venv/bin/python -m bench.first_model            # target: >= 95% validation accuracy within 30 s
    .venv/bin/python -m bench.first_model --smoke    # CI: the same path, tiny (no figure worth quoting)

Runs exactly what the Train page starts for those defaults (`python -m core.train` with TrainConfig()'s
settings), timed from launching the process (imports, data, weights included) to the end of the first epoch
whose validation accuracy reaches the target. Prints the ratio of that time to the 30 s budget and the run's
peak resident memory.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import digits_folder, python, run_timed
from core.config import TrainConfig

TARGET_ACCURACY, BUDGET_S = 0.95, 30.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true",
                        help="200 digits at 16 px, one frozen epoch, to check the benchmark runs")
    args = parser.parse_args()
    defaults = TrainConfig()
    assert defaults.data == "builtin:digits" and defaults.arch == "efficientnet_lite0" and defaults.pretrained
    with tempfile.TemporaryDirectory() as runs_dir:
        extra = []  # given after the defaults' flags, these replace them
        if args.smoke:
            extra = ["--data", str(digits_folder(Path(runs_dir) / "digits")), "--size", "16", "--epochs", "0",
                     "--freeze-epochs", "1"]
        command = [python(), "-m", "core.train", *defaults.cli_args(), *extra, "--runs-dir", runs_dir]
        timed = run_timed(command)
    print(f"command: python -m core.train {' '.join(defaults.cli_args() + extra)}")
    for seconds, phase, accuracy in timed.epochs:
        print(f"  {seconds:5.1f} s  {phase:8}  accuracy {accuracy:.4f}")
    reached = timed.first_reaching(TARGET_ACCURACY)
    print(f"final accuracy {timed.final_accuracy:.1%}, run finished after {timed.wall_s:.1f} s, "
          f"peak RSS {timed.peak_rss_mb:.0f} MB")
    if reached is None:
        print(f"never reached {TARGET_ACCURACY:.0%} (target: within {BUDGET_S:.0f} s)")
    else:
        print(f"reached {TARGET_ACCURACY:.0%} after {reached:.1f} s: {reached / BUDGET_S:.2f} of the {BUDGET_S:.0f} s "
              f"budget ({'met' if reached <= BUDGET_S else 'missed'})")


if __name__ == "__main__":
    main()
