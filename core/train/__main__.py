"""The command line: `python -m core.train`, the same entry the dashboard starts for every run.

    python -m core.train --data builtin:digits --arch efficientnet_lite0 --size 64 --bs 64 --epochs 3 \
        --runs-dir runs --name demo

Every training setting is a TrainConfig field and its flag comes from it (core.config); `--help` lists them.
A run writes the folder described in core.runs.folder; the dashboard makes that folder first and starts this
command with --run-dir. Under `torchrun --nproc_per_node=N -m core.train ...` it trains on N processes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core import config as settings
from core.distributed import init_from_env, shutdown
from core.runs import store
from core.runs.folder import RunFolder
from core.train.run import run_lr_find, run_training


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n\n")[0])
    settings.add_arguments(parser)
    parser.add_argument("--runs-dir", type=Path, default=None, help="folder of runs ($STUDIO_RUNS_DIR or runs/)")
    parser.add_argument("--name", default=None, help="run folder name (made unique)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="train an existing run folder whose config.json is written (the dashboard uses this)")
    parser.add_argument("--lr-find", action="store_true",
                        help="sweep the learning rate instead of training; writes lr_find.json with suggestions")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue a stopped, interrupted or crashed run from its last checkpoint")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> settings.TrainConfig:
    """The config the flags describe; exits with every problem in one line when it cannot be trained."""
    config = settings.from_arguments(args)
    problems = config.problems()
    if problems:
        raise SystemExit("; ".join(f"{settings.flag(name)} {sentence}" for name, sentence in problems.items()))
    return config


def resume_problem(run_dir: Path) -> str | None:
    """Why `--resume RUN_DIR` cannot even start (a sentence), or None; failures after it starts end the run as
    failed with their own sentence."""
    folder = RunFolder(run_dir)
    if not folder.is_run():
        return f"{run_dir} is not a run folder (it has no config.json); give the folder of a run to resume."
    return folder.problem()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    world = init_from_env()  # a world of one unless started by torchrun
    try:
        if args.resume is not None:
            problem = resume_problem(args.resume)
            if problem:
                print(problem, file=sys.stderr)
                return 2
            return 0 if run_training(args.resume, resume=True, world=world) in ("completed", "stopped") else 1
        run_dir = args.run_dir
        if run_dir is None:
            if world.is_main:
                run_dir = store.create_run(config_from_args(args), args.runs_dir, args.name,
                                          task="lr_find" if args.lr_find else "train")
                print(f"Run folder: {run_dir}", flush=True)
            run_dir = world.broadcast(run_dir)
        if args.lr_find:
            if world.active:
                raise SystemExit("The learning-rate finder runs in one process; start it without torchrun.")
            return 0 if run_lr_find(run_dir) == "completed" else 1
        return 0 if run_training(run_dir, world=world) in ("completed", "stopped") else 1
    finally:
        shutdown(world)


if __name__ == "__main__":
    sys.exit(main())
