"""Two sweep workers started at once on one study: distinct trials, and whether the best settings beat the defaults
on data the search never saw (issue 25).

    .venv/bin/python -m bench.fashion /tmp/fashion2500                        # once: two samples of real photos
    .venv/bin/python -m bench.fashion /tmp/fashion-b --seed 1
    .venv/bin/python -m bench.sweep --data /tmp/fashion2500 --check /tmp/fashion-b [--trials 8] [--size 64]

1. A default run (`python -m core.train`, seed 42): its validation accuracy and time.
2. Two `python -m core.sweep` workers at once on one SQLite storage, each with its own runs folder, varying the
   learning rate, epochs, weight decay and label smoothing: the study's trials (are they distinct?), its wall time,
   and whether trial 0 (the defaults) reproduced step 1's accuracy.
3. The best trial's settings and the defaults, both trained on `--check`, another sample of the same kind of images:
   the comparison is on images the search did not choose the settings on.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import time

import optuna

from bench.common import ROOT, python, run_timed, scratch
from core.config import TrainConfig
from core.sweep.space import with_params

SEARCH = "lr,epochs,wd,label_smoothing"
EPOCHS = "epochs=1:6"  # at most twice the default's unfrozen epochs: a trial costs at most about twice a run
# Two workers on one machine each take half its cores (docs/training.md).
HALF = str(max(1, (os.cpu_count() or 2) // 2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="builtin:digits")
    parser.add_argument("--check", default=None, help="another dataset of the same kind (default: --data)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with scratch("bench-sweep-") as folder:
        base = TrainConfig(data=args.data, size=args.size)

        default = run_timed([python(), "-m", "core.train", *base.cli_args(), "--runs-dir", str(folder / "default")])
        print(f"default run: {default.final_accuracy:.4f} validation accuracy, {default.wall_s:.0f} s", flush=True)

        storage = f"sqlite:///{folder / 'study.db'}"
        started = time.perf_counter()
        workers = [subprocess.Popen([python(), "-m", "core.sweep", *base.cli_args(), "--trials", str(args.trials),
                                     "--study", "bench", "--storage", storage, "--search", SEARCH, "--range", EPOCHS,
                                     "--runs-dir", str(folder / f"worker{n}")], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, "OMP_NUM_THREADS": HALF, "MKL_NUM_THREADS": HALF})
                   for n in (1, 2)]
        outputs = [worker.communicate()[0] for worker in workers]
        sweep_s = time.perf_counter() - started
        if any(worker.returncode for worker in workers):
            raise SystemExit("a worker failed:\n" + "\n".join(out[-2000:] for out in outputs))
        trials = optuna.load_study(study_name="bench", storage=storage).get_trials()
        finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        distinct = len({tuple(sorted(t.params.items())) for t in trials})
        best = max(finished, key=lambda t: t.value)
        first = next(t for t in trials if t.number == 0)
        print(f"sweep: {len(trials)} trials ({distinct} distinct settings; {len(finished)} finished, "
              f"{sum(t.state.name == 'PRUNED' for t in trials)} pruned) by two workers in {sweep_s:.0f} s; "
              f"trial 0 (the defaults) {first.value} against the default run's {default.final_accuracy:.4f}",
              flush=True)
        print(f"best: trial {best.number}, {best.value:.4f}: {best.params}", flush=True)

        check = args.check or args.data
        held_out = []
        for name, config in (("defaults", base), ("best trial's settings", with_params(base, best.params))):
            command = TrainConfig(**{**config.to_dict(), "data": check}).cli_args()
            again = run_timed([python(), "-m", "core.train", *command, "--runs-dir", str(folder / "check")])
            held_out.append(again.final_accuracy)
            print(f"{check}, {name}: {again.final_accuracy:.4f} in {again.wall_s:.0f} s", flush=True)
        print(f"best / defaults on {check}: {held_out[1]:.4f} / {held_out[0]:.4f}, "
              f"{(held_out[1] - held_out[0]) * 100:+.1f} points; on the searched data "
              f"{(best.value - default.final_accuracy) * 100:+.1f} points; sweep wall {sweep_s:.0f} s")


if __name__ == "__main__":
    main()
