"""The runs folder: making runs, listing them, launching one as its own OS process, one training at a time.

A run is a process with a folder (core.runs.folder). The dashboard and the command line both call `create_run`,
then `launch` (the dashboard) or core.train.run directly (the command line); `TrainingLock` keeps a second training
off the same device.
"""
from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from core.atomic import read_json, write_json_atomic
from core.config import TrainConfig, with_edits_upto
from core.data.sources import source_label
from core.errors import BrokenRun
from core.runs.folder import RunFolder, mtime
from core.runs.process import process_start

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where app.py is: runs/ goes beside it, and runs start there
LOCK_NAME = ".train.lock"
RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")  # what create_run makes: no separators, no hidden names
# A run's display name and tags (W&B's), set on the Runs page; a file of its own, so config.json (what was asked)
# is never rewritten after the run is made.
NAMING_FILE = "naming.json"
NAME_MAX, TAG_MAX, TAGS_MAX = 120, 40, 20  # characters, characters, tags: a table cell, not an essay


def runs_root() -> Path:
    """Where runs live: $STUDIO_RUNS_DIR, else runs/ beside app.py."""
    return Path(os.environ.get("STUDIO_RUNS_DIR") or PROJECT_ROOT / "runs")


def _unique_run_dir(runs_dir: Path, name: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:150] or "run"
    candidate, n = runs_dir / name, 2
    while candidate.exists():
        candidate, n = runs_dir / f"{name}-{n}", n + 1
    return candidate


def versions() -> dict[str, str]:
    """The versions a run was started with. torchvision's is read from its package metadata: importing it (for
    __version__) took 2.2 s of every run's start on a 2-core CPU, for a backbone that does not use it."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        vision = version("torchvision")
    except PackageNotFoundError:
        vision = "not installed"
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": vision}


def create_run(config: TrainConfig, runs_dir: Path | None = None, name: str | None = None,
               task: str = "train") -> Path:
    """Make a new run folder holding config.json and a queued status; returns its path.

    `task` is "train" or "lr_find" (a learning-rate sweep that trains nothing it keeps)."""
    runs_dir = Path(runs_dir or runs_root())
    runs_dir.mkdir(parents=True, exist_ok=True)
    default_name = f"{time.strftime('%Y%m%d-%H%M%S')}-{config.arch}" + ("-lr-find" if task == "lr_find" else "")
    folder = RunFolder(_unique_run_dir(runs_dir, name or default_name))
    command = ["python", "-m", "core.train", *config.cli_args(), *(["--lr-find"] if task == "lr_find" else []),
               "--runs-dir", str(runs_dir), "--name", folder.run_id]
    folder.write_request(config, task, shlex.join(command), versions())
    folder.update_status(state="queued")
    return folder.path


def run_folder(run_id: str | None, runs_dir: Path | None = None) -> Path | None:
    """The folder of run `run_id` when it is a run folder directly inside the runs folder, else None.

    Run ids come from addresses (`?run=`) and clicks: an absolute path, `..`, a separator, a hidden name or a
    symbolic link never names a folder outside the runs folder, so nothing outside it is ever shown, resumed,
    exported or deleted."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        return None
    runs_dir = Path(runs_dir or runs_root())
    path = runs_dir / run_id
    try:
        inside = path.resolve().parent == runs_dir.resolve()
    except (OSError, RuntimeError):  # a loop of links, a name the file system refuses
        return None
    return path if inside and RunFolder(path).is_run() else None


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
    problem: str | None = None  # why the folder cannot be read (then state is "broken"), else None
    name: str = ""  # the display name given on the Runs page ("" when none)
    tags: tuple[str, ...] = ()  # its tags, in the order given
    recipe: dict = field(default_factory=dict, hash=False)  # what the recipe chose by itself (RunFolder.recipe)
    edits: dict = field(default_factory=dict, hash=False)  # the dataset edits it read its data with (data.json's)

    @property
    def broken(self) -> bool:
        return self.problem is not None

    @property
    def dataset(self) -> str:
        """The dataset as people name it (an uploaded zip by its name); "" for a broken run."""
        return "" if self.broken else source_label(self.config.data)

    @property
    def label(self) -> str:
        """How charts and headings name the run: "name (run id)" when it has a name, else the run id."""
        return f"{self.name} ({self.run_id})" if self.name else self.run_id


def summarize(path: Path) -> RunSummary | None:
    """What the run list shows of one folder: config.json and status.json only; None if it is not a run. A run
    whose config.json cannot be read is still listed, as broken, with the reason."""
    folder = RunFolder(path)
    if not folder.is_run():
        return None
    name, tags = read_naming(path)
    try:
        request = folder.request()
    except BrokenRun as error:
        return RunSummary(folder.run_id, path, "broken", TrainConfig(), mtime(path), None, False, None, "",
                          "train", problem=str(error), name=name, tags=tags)
    status, config, record = folder.status(), TrainConfig.from_dict(request.get("config", {})), folder.data_record()
    edits = record.get("edits") if isinstance(record.get("edits"), dict) else {}
    return RunSummary(folder.run_id, path, status.get("state", "unknown"), config, float(request.get("created", 0.0)),
                      status.get("best_accuracy"),  # kept there at every epoch's end: no metrics file is read
                      folder.has_predictions(), _active_seconds(status),
                      with_edits_upto(request.get("command", ""), folder.edits_upto(config, record)),
                      request.get("task", "train"), name=name, tags=tags, recipe=folder.recipe(), edits=edits)


def _active_seconds(status: dict) -> float | None:
    """Wall seconds the run spent running: status.json's active_s (summed over resumes) when the training process
    wrote it, else (older runs) from its first start to its finish or last heartbeat, time spent stopped included."""
    active = status.get("active_s")
    if isinstance(active, (int, float)) and not isinstance(active, bool) and active >= 0:
        return float(active)
    started = status.get("started")
    return (status.get("finished") or status.get("heartbeat", 0)) - started if started else None


def _clean_text(text: object, limit: int) -> str:
    """One line of at most `limit` characters, Unicode NFC (so a name typed on a Mac and on Linux is one name)."""
    text = unicodedata.normalize("NFC", " ".join(str(text).split()))
    return "".join(c for c in text if unicodedata.category(c) != "Cc")[:limit].strip()


def _clean_tags(tags: object) -> tuple[str, ...]:
    """Tags as given, cleaned, duplicates and empty ones dropped; anything that is not a list of text reads as none."""
    if not isinstance(tags, (list, tuple)):
        return ()
    cleaned = (_clean_text(tag, TAG_MAX) for tag in tags if isinstance(tag, str))
    return tuple(dict.fromkeys(tag for tag in cleaned if tag))[:TAGS_MAX]


def read_naming(run_dir: Path) -> tuple[str, tuple[str, ...]]:
    """(display name, tags) of a run; ("", ()) when none were given or naming.json is damaged (a run with a
    damaged name file is still a run: it shows its id, and saving a name again replaces the file)."""
    naming = read_json(Path(run_dir) / NAMING_FILE)
    name = naming.get("name")
    return (_clean_text(name, NAME_MAX) if isinstance(name, str) else ""), _clean_tags(naming.get("tags"))


def write_naming(run_dir: Path, name: str, tags: list[str] | tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Give a run a display name and tags (written atomically to naming.json; nothing else is touched); returns
    what was kept after cleaning. Refuses a folder that is not a run."""
    folder = RunFolder(run_dir)
    if not folder.is_run():
        raise ValueError(f"{folder.path} is not a run folder.")
    kept = _clean_text(name, NAME_MAX), _clean_tags(list(tags))
    write_json_atomic(folder.path / NAMING_FILE, {"name": kept[0], "tags": list(kept[1])})
    return kept


def _run_paths(runs_dir: Path) -> list[Path]:
    """The run folders directly in runs_dir (symbolic links left out: they could point anywhere)."""
    try:
        entries = list(runs_dir.iterdir())
    except OSError:
        return []
    return [path for path in entries if RUN_ID.fullmatch(path.name) and RunFolder(path).is_run() and path.is_dir()]


def list_runs(runs_dir: Path | None = None) -> list[RunSummary]:
    """Every run folder under runs_dir, newest first; broken ones too (state "broken", with the reason)."""
    found = [summarize(path) for path in _run_paths(Path(runs_dir or runs_root()))]
    return sorted((run for run in found if run is not None), key=lambda run: run.created, reverse=True)


def run_ids(runs_dir: Path | None = None) -> list[str]:
    """The ids of every run folder, broken ones included, newest first (config.json and status.json of each: small
    files, cheap enough for every rerun)."""
    return [run.run_id for run in list_runs(runs_dir)]


class DeviceBusy(RuntimeError):
    """Another run holds the training lock."""


class TrainingLock:
    """One training at a time per runs folder (one device): an flock the training process holds until it exits.

    The kernel drops the lock when the process dies, however it dies, so a crash never leaves it stuck. The
    dashboard only looks (`held_by_other`): it takes a shared lock for an instant and writes nothing; a run
    that starts in that instant retries for up to a second, so looking never makes a start fail.
    """

    RETRY_S = 1.0

    def __init__(self, runs_dir: Path):
        self.path = Path(runs_dir) / LOCK_NAME
        self._file = None

    def acquire(self, holder: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        deadline = time.monotonic() + self.RETRY_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:  # perhaps only a dashboard looking: it lets go at once
                    time.sleep(0.02)
                    continue
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
        """The run id holding the lock, or None when it is free; takes nothing a starting run needs."""
        try:
            f = open(self.path, encoding="utf-8", errors="replace")
        except OSError:  # no lock file yet: nothing ever trained here
            return None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().strip() or "another run"
            fcntl.flock(f, fcntl.LOCK_UN)
        return None


def active_run(runs_dir: Path | None = None) -> str | None:
    """The id of the run now queued or training in runs_dir, if any."""
    runs_dir = Path(runs_dir or runs_root())
    holder = TrainingLock(runs_dir).held_by_other()
    if holder:
        return holder
    # started but not yet holding the lock (still importing torch)
    return next((run_id for run_id in run_ids(runs_dir)
                 if RunFolder(runs_dir / run_id).status().get("state") == "queued"), None)


def launch(run_dir: Path, resume: bool = False) -> subprocess.Popen:
    """Start `python -m core.train --run-dir RUN_DIR` (or `--resume RUN_DIR`) as its own process session,
    output appended to log.txt."""
    folder = RunFolder(run_dir)
    if resume:  # shown as queued until the process takes over, like a new run
        folder.update_status(state="queued", message="Resuming")
    command = [sys.executable, "-m", "core.train", "--resume" if resume else "--run-dir", str(folder.path)]
    if folder.task == "lr_find":
        command.append("--lr-find")
    with open(folder.log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                   start_new_session=True)
    # Until the process writes its own status it is known by its pid: a slow start (importing torch on a busy
    # machine) is not taken for a failed one. Reap it when it exits, so it never lingers as a zombie.
    if folder.raw_status().get("state") == "queued":
        folder.update_status(pid=process.pid, pid_start=process_start(process.pid))
    threading.Thread(target=process.wait, daemon=True).start()
    return process


def delete_run(run_dir: Path, runs_dir: Path | None = None) -> None:
    """Remove a finished run's folder. Refuses anything that is not a run folder directly in runs_dir, and runs
    that are still active (stop them first)."""
    runs_dir = Path(runs_dir or runs_root()).resolve()
    folder = RunFolder(run_dir)
    if folder.path.resolve().parent != runs_dir or folder.path.is_symlink() or not folder.is_run():
        raise ValueError(f"{folder.path} is not a run folder in {runs_dir}.")
    if folder.is_active():
        raise ValueError(f"Run {folder.run_id} is still {folder.status()['state']}; stop it before deleting it.")
    shutil.rmtree(folder.path)
