"""The command line: `python -m core.sweep`, one worker of a study.

    python -m core.sweep --data builtin:digits --trials 12 --search lr,wd,label_smoothing \\
        --study digits-lr --storage sqlite:///sweeps.db --runs-dir runs

Training flags (`--size 64 --epochs 3 ...`, as `python -m core.train` takes them) set the first trial; `--search`
names the settings to vary and `--range NAME=LOW:HIGH` or `NAME=A,B,C` their ranges. More workers: start the same
command again with the same --study and --storage, each with its own --runs-dir (or on another machine, with a
database URL every machine reaches, e.g. postgresql://user@host/optuna).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from core import config as settings
from core.runs import store
from core.sweep.launch import forget_worker, record_worker
from core.sweep.space import DEFAULT_SEARCH, SEARCHABLE, search_space, with_params
from core.sweep.study import absolute_storage, open_study, shown_storage
from core.sweep.worker import Worker, describe

STARTED = time.time()  # before Optuna and torch load: a Stop pressed while they do is this worker's


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core.sweep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--trials", type=int, required=True, help="the study's trials in all, every worker's")
    parser.add_argument("--budget-s", type=float, default=None, help="start no trial after this many seconds")
    parser.add_argument("--study", default=None, help="the study's name (default: sweep-DATE-TIME); workers of one "
                                                      "study give the same name")
    parser.add_argument("--storage", default=None,
                        help="where the study lives: any database URL Optuna takes (default: sqlite:///RUNS_DIR/"
                             "sweeps.db)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="folder of this worker's runs ($STUDIO_RUNS_DIR "
                                                                    "or runs/)")
    parser.add_argument("--search", default=",".join(DEFAULT_SEARCH),
                        help=f"settings to vary, separated by commas, among {', '.join(SEARCHABLE)} (default: "
                             f"%(default)s)")
    parser.add_argument("--range", action="append", default=[], metavar="NAME=LOW:HIGH|A,B,C",
                        help="a searched setting's range or choices, e.g. lr=1e-4:1e-2 or size=32,64,96; "
                             "each setting has a default: " + "; ".join(f"{n} {r.describe()}"
                                                                        for n, r in SEARCHABLE.items()))
    parser.add_argument("--sampler-seed", type=int, default=None,
                        help="seed Optuna's sampler: one worker then asks for the same trials again")
    settings.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = settings.from_arguments(args)
    problems = base.problems()
    if problems:
        raise SystemExit("; ".join(f"{settings.flag(n)} {sentence}" for n, sentence in problems.items()))
    if args.trials < 1:
        raise SystemExit("--trials must be at least 1.")
    try:
        space = search_space(args.search, args.range)
    except ValueError as error:
        raise SystemExit(f"--search/--range: {error}.") from None
    runs_dir = Path(args.runs_dir or store.runs_root())
    runs_dir.mkdir(parents=True, exist_ok=True)
    storage = absolute_storage(args.storage or f"sqlite:///{runs_dir / 'sweeps.db'}")
    name = args.study or time.strftime("sweep-%Y%m%d-%H%M%S")
    try:
        study, made = open_study(name, storage, args.sampler_seed)
    except Exception as error:  # a database that cannot be reached or read: a sentence, not a trace
        raise SystemExit(f"The study {name} could not be opened in {shown_storage(storage)}: {error}") from None
    print(f"Study {name} in {shown_storage(storage)}; searching {', '.join(space)}; runs in {runs_dir}", flush=True)
    record_worker(runs_dir, name, shown_storage(storage), args.trials)
    try:
        Worker(study, base, space, runs_dir, args.trials, args.budget_s, shown_storage(storage),
               log=lambda line: print(line, flush=True), started=STARTED, first=made).run()
    finally:
        forget_worker(runs_dir)
    finished = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    if finished:
        best = study.best_trial
        command = with_params(base, best.params).cli_command()
        print(f"Best: trial {best.number}, validation accuracy {best.value:.2%}, {describe(best.params)}\n"
              f"Train with these settings: {command}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
