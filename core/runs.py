"""The run folder contract, and launching, watching and stopping a run as its own OS process.

runs/<run_id>/
  config.json     TrainConfig + class names, data fingerprint, versions and the equivalent CLI command
  status.json     state, pid, heartbeat, epoch/step, message; replaced atomically
  metrics.jsonl   append-only rows: {"kind": "step", ...} per batch, {"kind": "epoch", ...} per epoch
  checkpoints/    last.pt and best.pt
  predictions.npz validation targets, probabilities, losses, item ids
  log.txt         the process's own output
  STOP            present when a stop was requested
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.config import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("completed", "stopped", "failed", "interrupted")
HEARTBEAT_TIMEOUT_S = 60.0  # a running process beats every second or so; a minute of silence means it died
LOCK_NAME = ".train.lock"


def runs_root() -> Path:
    """Where runs live: $STUDIO_RUNS_DIR, else runs/ beside app.py."""
    return Path(os.environ.get("STUDIO_RUNS_DIR") or PROJECT_ROOT / "runs")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):  # missing, not a folder, or half-written by a crashed writer
        return {}


def _unique_run_dir(runs_dir: Path, name: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "run"
    candidate, n = runs_dir / name, 2
    while candidate.exists():
        candidate, n = runs_dir / f"{name}-{n}", n + 1
    return candidate


def versions() -> dict[str, str]:
    import platform

    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}


def create_run(config: TrainConfig, runs_dir: Path | None = None, name: str | None = None,
               task: str = "train") -> Path:
    """Make a new run folder holding config.json and a queued status; returns its path.

    `task` is "train" or "lr_find" (a learning-rate sweep that trains nothing it keeps)."""
    runs_dir = Path(runs_dir or runs_root())
    runs_dir.mkdir(parents=True, exist_ok=True)
    default_name = f"{time.strftime('%Y%m%d-%H%M%S')}-{config.arch}" + ("-lr-find" if task == "lr_find" else "")
    run_dir = _unique_run_dir(runs_dir, name or default_name)
    run_dir.mkdir()
    (run_dir / "checkpoints").mkdir()
    lr_find = " --lr-find" if task == "lr_find" else ""
    command = f"{config.cli_command()}{lr_find} --runs-dir {runs_dir} --name {run_dir.name}"
    write_json_atomic(run_dir / "config.json", {"config": config.to_dict(), "command": command, "task": task,
                                                "created": time.time(), "versions": versions()})
    write_status(run_dir, state="queued")
    return run_dir


def load_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict(read_json(Path(run_dir) / "config.json").get("config", {}))


def update_config(run_dir: Path, **fields) -> None:
    data = read_json(Path(run_dir) / "config.json")
    data.update(fields)
    write_json_atomic(Path(run_dir) / "config.json", data)


def write_status(run_dir: Path, **fields) -> dict:
    """Merge `fields` into status.json with a fresh heartbeat. Only the training process writes it after creation."""
    path = Path(run_dir) / "status.json"
    status = read_json(path)
    status.update(fields, heartbeat=time.time())
    write_json_atomic(path, status)
    return status


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(run_dir: Path) -> dict:
    """status.json, with a run whose process is gone (or silent too long) reported as interrupted."""
    status = read_json(Path(run_dir) / "status.json")
    state = status.get("state")
    if state in ACTIVE_STATES:
        silent = time.time() - status.get("heartbeat", 0) > HEARTBEAT_TIMEOUT_S
        dead = silent if state == "queued" else silent or not _pid_alive(status.get("pid"))
        if dead:
            return {**status, "state": "interrupted",
                    "message": status.get("message") or "The training process ended without finishing."}
        if state == "running" and stop_requested(run_dir):
            return {**status, "state": "stopping"}
    return status


def is_active(status: dict) -> bool:
    return status.get("state") in ACTIVE_STATES


class MetricsWriter:
    """Appends one JSON object a line to metrics.jsonl, flushed per line so a reader sees it at once."""

    def __init__(self, run_dir: Path):
        self._file = open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class MetricsTail:
    """Reads only the bytes appended to metrics.jsonl since the last call; a half-written last line waits."""

    path: Path
    offset: int = 0
    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)

    def poll(self) -> int:
        """Read new complete lines into `steps` and `epochs`; returns how many rows arrived."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        rows = 0
        for line in chunk[:end].splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            (self.epochs if row.get("kind") == "epoch" else self.steps).append(row)
            rows += 1
        return rows


def truncate_metrics(run_dir: Path, step: int, epoch: int) -> None:
    """Keep only the rows up to a checkpoint (step rows <= step, epoch rows <= epoch): a resume redoes the rest."""
    path = Path(run_dir) / "metrics.jsonl"
    tail = read_metrics(run_dir)
    rows = [r for r in tail.steps if r.get("step", 0) <= step] + [r for r in tail.epochs if r.get("epoch", 0) <= epoch]
    rows.sort(key=lambda r: (r.get("step", 0), r.get("kind") == "epoch"))
    tmp = path.with_name(".metrics.jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_metrics(run_dir: Path) -> MetricsTail:
    tail = MetricsTail(Path(run_dir) / "metrics.jsonl")
    tail.poll()
    return tail


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    path: Path
    state: str
    config: TrainConfig
    created: float
    best_accuracy: float | None
    has_predictions: bool
    seconds: float | None  # wall time from start to finish (or to the last heartbeat)
    command: str  # the command line that reproduces it
    task: str  # "train" or "lr_find"


def list_runs(runs_dir: Path | None = None) -> list[RunSummary]:
    """Every run folder under runs_dir, newest first."""
    runs_dir = Path(runs_dir or runs_root())
    if not runs_dir.is_dir():
        return []
    found = []
    for path in runs_dir.iterdir():
        if not path.is_dir():
            continue
        meta = read_json(path / "config.json")
        if not meta:
            continue
        status = read_status(path)
        best = status.get("best_accuracy")  # kept there at every epoch's end: no metrics file is read
        started = status.get("started")
        seconds = (status.get("finished") or status.get("heartbeat", 0)) - started if started else None
        found.append(RunSummary(path.name, path, status.get("state", "unknown"),
                                TrainConfig.from_dict(meta.get("config", {})), meta.get("created", 0.0), best,
                                (path / "predictions.npz").exists(), seconds, meta.get("command", ""),
                                meta.get("task", "train")))
    return sorted(found, key=lambda run: run.created, reverse=True)


def run_ids(runs_dir: Path | None = None) -> list[str]:
    """The ids of every run folder, newest first: only config.json is read (cheap enough for every rerun)."""
    runs_dir = Path(runs_dir or runs_root())
    if not runs_dir.is_dir():
        return []
    created = {path.name: read_json(path / "config.json").get("created") for path in runs_dir.iterdir()
               if path.is_dir()}
    return sorted((name for name, when in created.items() if when is not None), key=created.get, reverse=True)


class DeviceBusy(RuntimeError):
    """Another run holds the training lock."""


class TrainingLock:
    """One training at a time per runs folder (one device): an flock the training process holds until it exits.

    The kernel drops the lock when the process dies, however it dies, so a crash never leaves it stuck.
    """

    def __init__(self, runs_dir: Path):
        self.path = Path(runs_dir) / LOCK_NAME
        self._file = None

    def acquire(self, holder: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            other = f.read().strip() or "another run"
            f.close()
            raise DeviceBusy(f"{other} is training on this device; stop it or wait for it to finish.") from None
        f.seek(0)
        f.truncate()
        f.write(holder)
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def held_by_other(self) -> str | None:
        """The run id holding the lock, or None when it is free."""
        try:
            self.acquire("probe")
        except DeviceBusy:
            return self.path.read_text(encoding="utf-8").strip() or "another run"
        self.release()
        return None


def can_resume(run_dir: Path) -> bool:
    """A run that ended before finishing and saved a checkpoint to continue from."""
    state = read_status(run_dir).get("state")
    return state in ("stopped", "interrupted", "failed") and (Path(run_dir) / "checkpoints" / "last.pt").exists()


def active_run(runs_dir: Path | None = None) -> str | None:
    """The id of the run now queued or training in runs_dir, if any."""
    runs_dir = Path(runs_dir or runs_root())
    holder = TrainingLock(runs_dir).held_by_other()
    if holder:
        return holder
    # started but not yet holding the lock (still importing torch)
    return next((run_id for run_id in run_ids(runs_dir) if read_status(runs_dir / run_id).get("state") == "queued"),
                None)


def launch(run_dir: Path, resume: bool = False) -> subprocess.Popen:
    """Start `python -m core.train --run-dir RUN_DIR` (or `--resume RUN_DIR`) as its own process session,
    output appended to log.txt."""
    run_dir = Path(run_dir)
    log = open(run_dir / "log.txt", "ab")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                     os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    if resume:  # shown as queued until the process takes over, like a new run
        write_status(run_dir, state="queued", message="Resuming")
    command = [sys.executable, "-m", "core.train", "--resume" if resume else "--run-dir", str(run_dir)]
    if read_json(run_dir / "config.json").get("task") == "lr_find":
        command.append("--lr-find")
    process = subprocess.Popen(command, cwd=PROJECT_ROOT,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    log.close()
    # Reap the child when it exits, so a finished process never lingers as a zombie that looks alive.
    threading.Thread(target=process.wait, daemon=True).start()
    return process


def delete_run(run_dir: Path, runs_dir: Path | None = None) -> None:
    """Remove a finished run's folder. Refuses anything that is not a run folder directly in runs_dir, and runs
    that are still active (stop them first)."""
    runs_dir = Path(runs_dir or runs_root()).resolve()
    run_dir = Path(run_dir)
    if run_dir.resolve().parent != runs_dir or run_dir.is_symlink() or not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} is not a run folder in {runs_dir}.")
    if is_active(read_status(run_dir)):
        raise ValueError(f"Run {run_dir.name} is still {read_status(run_dir)['state']}; stop it before deleting it.")
    shutil.rmtree(run_dir)


def config_differences(configs: dict[str, TrainConfig]) -> list[dict]:
    """The settings that differ between runs: one row per setting, one column per run id."""
    rows = []
    for name in TrainConfig.__dataclass_fields__:
        values = {run_id: getattr(config, name) for run_id, config in configs.items()}
        if len({repr(v) for v in values.values()}) > 1:
            rows.append({"setting": name, **{run_id: str(v) for run_id, v in values.items()}})
    return rows


def request_stop(run_dir: Path) -> None:
    """Ask the run to stop after its current batch; it checkpoints and writes its predictions first."""
    (Path(run_dir) / "STOP").touch()


def stop_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / "STOP").exists()
