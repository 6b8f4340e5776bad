"""Starting a sweep worker from the dashboard, and knowing whether one is at work in a runs folder.

The worker is `python -m core.sweep` in its own process session (as a run is), its output appended to
`.sweep-log.txt` in the runs folder. While it works it keeps `.sweep.json` there: its study, storage, trials and
process (pid and start time, so a reused pid is not taken for it); the Train page reads that file to say which
trial is training and to offer Stop for the whole search.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.atomic import read_json, write_json_atomic
from core.config import TrainConfig
from core.runs.process import process_alive, process_start

WORKER_FILE = ".sweep.json"
LOG_FILE = ".sweep-log.txt"
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def command(base: TrainConfig, search: list[str], ranges: dict[str, str], trials: int, budget_s: float | None,
            study: str, runs_dir: Path) -> list[str]:
    """The worker's command line: the starting settings as training flags, what to search and how long."""
    args = ["python", "-m", "core.sweep", *base.cli_args(), "--trials", str(trials), "--study", study,
            "--runs-dir", str(runs_dir), "--search", ",".join(search)]
    args += [f"--range={name}={text}" for name, text in ranges.items()]
    return args + (["--budget-s", f"{budget_s:g}"] if budget_s else [])


def start(args: list[str], runs_dir: Path, study: str, trials: int) -> subprocess.Popen:
    """Start the worker `args` (from `command`) in its own process session, as the Train page starts a run; it is
    known as the folder's worker at once (a second Start while it imports Optuna and torch finds it)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / LOG_FILE, "ab") as log:
        log.write(f"\n$ {shlex.join(args)}\n".encode())
        process = subprocess.Popen([sys.executable, *args[1:]], cwd=PROJECT_ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    _record(runs_dir, process.pid, study=study, storage="", trials=trials)
    threading.Thread(target=process.wait, daemon=True).start()  # reaped when it ends: never a zombie
    return process


def record_worker(runs_dir: Path, study: str, storage: str, trials: int) -> None:
    """Written by the worker itself when it starts (over what the page wrote when it started it)."""
    _record(runs_dir, os.getpid(), study=study, storage=storage, trials=trials)


def _record(runs_dir: Path, pid: int, **fields) -> None:
    write_json_atomic(Path(runs_dir) / WORKER_FILE, {**fields, "pid": pid, "pid_start": process_start(pid),
                                                     "started": time.time()})


def forget_worker(runs_dir: Path) -> None:
    path = Path(runs_dir) / WORKER_FILE
    if read_json(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def active_worker(runs_dir: Path) -> dict:
    """The worker at work in `runs_dir` ({} when none is: no file, a damaged one, or its process gone)."""
    record = read_json(Path(runs_dir) / WORKER_FILE)
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not process_alive(pid, record.get("pid_start")):
        return {}
    return record
