"""Whether the unfrozen epochs of a small run (where the recipe trains every layer) could leave out the first,
highest-resolution stages: every layer against the body cut at module `--cut` (its early stages' output computed once,
as for the late stages), same command otherwise, one after the other.

    .venv/bin/python -m bench.fashion /tmp/fa1 --seed 1                        # once per sample
    .venv/bin/python -m bench.early_cut /tmp/fa1 [--cut 4] [--size 64]

EfficientNet-Lite0's module 4 is where its stride-8 stages start: the stem and the stages at a half and a quarter of
the image's side stay as pretrained. The recipe is not changed here: this forces the cut in its own process (core.train
with core.net.stages' choice replaced) and prints each side's wall time, final validation loss and accuracy (a run of
label sets: accuracy_multi and F1 samples at 0.5).
"""
from __future__ import annotations

import argparse
import sys
import tempfile

from bench.common import python, run_timed

FORCED = """
import sys
from core.net import stages

def pick(self, n_train, n_valid, epochs, budget_bytes, at={at}):
    return None if at is None else stages.LateCut(at, sum(self.seconds[at:]) / sum(self.seconds), self.shapes[at])

stages.StageCosts.pick = pick
from core.train.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", help="a folder (bench/fashion.py or bench/multilabel.py's pool)")
    parser.add_argument("--cut", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        for name, at in (("every layer", None), (f"cut at {args.cut}", args.cut)):
            timed = run_timed([python(), "-c", FORCED.format(at=at), "--data", args.data, "--size", str(args.size),
                               "--runs-dir", runs_dir])
            titles = next(line for line in timed.output if line.split()[:1] == ["epoch"]).split()
            last = next(line for line in reversed(timed.output) if line.split()[1:2] in (["unfrozen"], ["late"]))
            rows[name] = (timed.wall_s, *map(float, last.split()[3:6]))
            print(f"  {name:12} wall {timed.wall_s:6.1f} s  valid_loss {rows[name][1]:.4f}  "
                  f"{titles[4]} {rows[name][2]:.1%}  {titles[5]} {rows[name][3]:.4f}", flush=True)
    (whole_s, _, whole, _), (cut_s, _, cut, _) = rows.values()
    print(f"cut / every layer: wall {cut_s / whole_s:.2f}x, final accuracy {(cut - whole) * 100:+.1f} points")


if __name__ == "__main__":
    sys.exit(main())
