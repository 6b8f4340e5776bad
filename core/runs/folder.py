"""The run folder contract: the one module that knows a run folder's file names and how each is written.

runs/<run_id>/
  config.json     what was asked, written once when the run is made: TrainConfig, task, the CLI command, versions
  data.json       what the data turned out to be, written by the training process: class names, fingerprint, sizes,
                  the dataset edits it was read with (and data_items.json: every image with its label)
  recipe.json     what the recipe chose by itself at the first start (where it cut the network for unfreeze="late",
                  from operation counts: core.net.stages), kept for resumes and compared by the Runs page
  status.json     state, pid (and its start time), heartbeat, epoch/step, message; replaced atomically by the
                  training process (and by the dashboard when it queues a run)
  metrics.jsonl   append-only rows: {"kind": "step", ...} per batch, {"kind": "epoch", ...} per epoch
                  (core.runs.metrics)
  checkpoints/    last.pt (where to resume) and best.pt (the best epoch so far)
  predictions.npz validation targets, calibrated and raw probabilities, losses, unknown scores, item ids
  trust.npz       the calibration (temperature) and the "none of these" bank and threshold (core.inspect.trust)
  lr_find.json    a learning-rate sweep's curve and suggestions
  naming.json     the run's display name and tags, set on the Runs page (core.runs.store.write_naming)
  log.txt         the process's own output
  export/         exported model files
  STOP            present when a stop was requested
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from core.atomic import read_json, write_atomic, write_json_atomic
from core.config import TrainConfig, with_edits_upto
from core.errors import BrokenRun
from core.runs.metrics import NUMBER, MetricsTail, MetricsWriter, fits
from core.runs.process import process_alive

ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("completed", "stopped", "failed", "interrupted")
HEARTBEAT_TIMEOUT_S = 60.0  # a queued run with no process yet: a minute of silence means its start failed


class RunFolder:
    """One run's folder. `writes=False` makes every write a no-op (the ranks other than 0 under torchrun)."""

    def __init__(self, path: Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.npz"

    @property
    def trust_path(self) -> Path:
        return self.path / "trust.npz"

    @property
    def export_folder(self) -> Path:
        return self.path / "export"

    # What was asked: config.json, written once.
    def write_request(self, config: TrainConfig, task: str, command: str, versions: dict) -> None:
        self.path.mkdir()
        (self.path / "checkpoints").mkdir()
        write_json_atomic(self.path / "config.json", {"config": config.to_dict(), "task": task, "command": command,
                                                      "created": time.time(), "versions": versions})

    def request(self) -> dict:
        """config.json, checked; BrokenRun (a sentence) when it is missing, damaged or not as this app writes it."""
        try:
            request = json.loads((self.path / "config.json").read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise BrokenRun(self._broken("config.json is missing")) from None
        except UnicodeDecodeError:
            raise BrokenRun(self._broken("config.json is not UTF-8 text")) from None
        except ValueError:
            raise BrokenRun(self._broken("config.json is not valid JSON (it may have been cut off)")) from None
        except OSError as error:
            raise BrokenRun(self._broken(f"config.json cannot be read ({error.strerror or error})")) from None
        if not isinstance(request, dict):
            raise BrokenRun(self._broken(f"config.json holds a JSON {_json_kind(request)}, not an object"))
        try:
            TrainConfig.from_dict(request.get("config"))
        except ValueError as error:
            raise BrokenRun(f"Run {self.run_id} cannot be read: in its config.json, {error}.") from None
        for key, kinds, what in (("created", (int, float), "a time"), ("task", (str,), "a task name"),
                                 ("command", (str,), "a command")):
            value = request.get(key, 0.0 if key == "created" else "train" if key == "task" else "")
            if not isinstance(value, kinds) or isinstance(value, bool) or \
                    (key == "created" and not math.isfinite(value)) or (key == "task" and value not in TASKS):
                raise BrokenRun(self._broken(f"config.json's '{key}' is {value!r:.40}, not {what}"))
        return request

    def problem(self) -> str | None:
        """Why this run folder cannot be read (a sentence), or None when its config.json is sound."""
        try:
            self.request()
        except BrokenRun as error:
            return str(error)
        return None

    def _broken(self, what: str) -> str:
        return f"Run {self.run_id} cannot be read: its {what}."

    def is_run(self) -> bool:
        """A folder the app made for a run (it has a config.json, sound or not), not a symbolic link."""
        return not self.path.is_symlink() and (self.path / "config.json").is_file()

    def config(self) -> TrainConfig:
        """The run's settings; BrokenRun when config.json cannot be read."""
        return TrainConfig.from_dict(self.request().get("config", {}))

    @property
    def task(self) -> str:
        """"train", or "lr_find" (a learning-rate sweep that trains nothing it keeps)."""
        return self.request().get("task", "train")

    @property
    def command(self) -> str:
        return self.request().get("command", "")

    # What the data turned out to be: data.json, written by the training process.
    def record_data(self, class_names: list[str], fingerprint: str, n_train: int, n_valid: int, edits: dict,
                    items: list[tuple[str, str]], multi_label: bool = False) -> None:
        """What the data turned out to be: classes, fingerprint, sizes, the edits read (core.data.edits' summary),
        label sets or not, and every image with the label (set) it trained with (data_items.json, to compare runs)."""
        if self.writes:
            write_json_atomic(self.path / "data.json", {"class_names": list(class_names), "data_fingerprint":
                                                        fingerprint, "n_train": n_train, "n_valid": n_valid,
                                                        "edits": edits, "multi_label": multi_label})
            write_json_atomic(self.path / "data_items.json", [list(item) for item in items])

    def data_items_stamp(self) -> float:
        """Changes when data_items.json does (0.0 when there is none)."""
        return mtime(self.path / "data_items.json")

    def data_items(self) -> dict[str, str]:
        """{image name: label} of every image the run trained or validated on, in the order the run indexed
        them (predictions.npz's item ids count in it); {} for older runs."""
        try:
            rows = json.loads((self.path / "data_items.json").read_text(encoding="utf-8"))
            return {str(name): str(label) for name, label in rows}
        except (OSError, ValueError, TypeError):
            return {}

    def data_record(self) -> dict:
        return read_json(self.path / "data.json") or read_json(self.path / "config.json")  # older runs kept it there

    def edits_upto(self, config: TrainConfig, record: dict | None = None) -> int | None:
        """How many entries of its dataset's edit log the run (of `config`; `record`: its data_record, when read
        already) reads its data with: its setting, else as many as it read at its first start (so a resume and an
        export read the data the run trained on, whatever was recorded since), else None: every edit."""
        if config.edits_upto >= 0:
            return config.edits_upto
        edits = (self.data_record() if record is None else record).get("edits")
        position = edits.get("position") if isinstance(edits, dict) else None
        return position if fits(position, (int,)) and position >= 0 else None

    def reproduce_command(self) -> str:
        """The command line that trains this run again on the data it had: its command, with the edit log's
        position it read once it has read its data."""
        try:
            return with_edits_upto(self.command, self.edits_upto(self.config()))
        except BrokenRun:
            return self.command

    def class_names(self) -> list[str]:
        """The run's class names, in the order of its outputs; BrokenRun when they are not a list of text."""
        names = self.data_record().get("class_names", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise BrokenRun(self._broken("data.json's class names are not a list of names"))
        return names

    # What the recipe chose by itself: recipe.json, written at the run's first start.
    def record_recipe(self, recipe: dict) -> None:
        if self.writes:
            write_json_atomic(self.path / "recipe.json", recipe)

    def recipe(self) -> dict:
        """recipe.json with every field of the wrong type left out; for a run from before it, the cut its
        status.json kept ({} when it had none)."""
        recipe = read_json(self.path / "recipe.json")
        if not recipe:
            status = self.raw_status()
            recipe = {key: status[key] for key in ("late_cut", "late_share") if key in status}
        return {key: value for key, value in recipe.items() if key in RECIPE_FIELDS and fits(value, RECIPE_FIELDS[key])}

    # status.json
    def update_status(self, **fields) -> None:
        """Merge `fields` into status.json with a fresh heartbeat."""
        if self.writes:
            status = read_json(self.path / "status.json")
            status.update(fields, heartbeat=time.time())
            write_json_atomic(self.path / "status.json", status)

    def finish(self, state: str, message: str, **fields) -> None:
        """The run ended in `state`; `message` is the sentence the dashboard shows."""
        self.update_status(state=state, finished=time.time(), message=message, **fields)

    def raw_status(self) -> dict:
        """status.json with every field of the wrong type left out (a damaged file reads as an empty status)."""
        return {key: value for key, value in read_json(self.path / "status.json").items()
                if fits(value, STATUS_FIELDS.get(key, (str, int, float, bool, type(None))))}

    def status(self) -> dict:
        """status.json, with a run whose process is gone reported as interrupted, and a running one asked to stop
        as stopping.

        Gone: its pid and start time no longer name a live process; a live one runs however long a busy machine
        keeps it silent. A run with no process to ask (queued before it started), or no way to tell its process
        from a later one (no /proc), also goes after a minute of silence. A process writes its end before it
        exits, so a run found gone is read once more: one that just finished shows as finished.
        """
        status = self.raw_status()
        if status.get("state") in ACTIVE_STATES and self._gone(status):
            status = self.raw_status()
            if status.get("state") in ACTIVE_STATES and self._gone(status):
                return {**status, "state": "interrupted",
                        "message": status.get("message") or "The training process ended without finishing."}
        if status.get("state") == "running" and self.stop_requested():
            return {**status, "state": "stopping"}
        return status

    @staticmethod
    def _gone(status: dict) -> bool:
        """Whether the process of an active status has ended (status() says how this is told)."""
        pid, started = status.get("pid"), status.get("pid_start")
        silent = time.time() - status.get("heartbeat", 0) > HEARTBEAT_TIMEOUT_S
        if not pid:
            return silent
        if started is None:  # no start time to tell it from a later process with its pid (no /proc, an older run)
            return silent or not process_alive(pid)
        return not process_alive(pid, started)

    def is_active(self) -> bool:
        return self.status().get("state") in ACTIVE_STATES

    def can_resume(self) -> bool:
        """A run that ended before finishing and saved a checkpoint to continue from."""
        return self.status().get("state") in ("stopped", "interrupted", "failed") and self.last_checkpoint.exists()

    # Stop requests
    def request_stop(self) -> None:
        """Ask the run to stop after its current batch; it checkpoints and writes its predictions first."""
        (self.path / "STOP").touch()

    def stop_requested(self) -> bool:
        return (self.path / "STOP").exists()

    def clear_stop(self) -> None:
        if self.writes:
            (self.path / "STOP").unlink(missing_ok=True)

    # metrics.jsonl
    def metrics_writer(self) -> MetricsWriter:
        return MetricsWriter(self.path / "metrics.jsonl")

    def metrics_tail(self) -> MetricsTail:
        """A reader that takes only the rows appended since its last poll."""
        return MetricsTail(self.path / "metrics.jsonl")

    def read_metrics(self) -> MetricsTail:
        tail = self.metrics_tail()
        tail.poll()
        return tail

    def truncate_metrics(self, step: int, epoch: int) -> None:
        """Keep only the rows up to a checkpoint (step rows <= step, epoch rows <= epoch): a resume redoes the rest."""
        if not self.writes:
            return
        tail = self.read_metrics()
        rows = [r for r in tail.steps if r.get("step", 0) <= step] + \
            [r for r in tail.epochs if r.get("epoch", 0) <= epoch]
        rows.sort(key=lambda r: (r.get("step", 0), r.get("kind") == "epoch"))
        write_atomic(self.path / "metrics.jsonl", lambda f: f.writelines((json.dumps(r) + "\n").encode() for r in rows))

    # Checkpoints and what they produced
    def model_checkpoint(self) -> Path | None:
        """The checkpoint whose weights are the run's model: the one its predictions were made with when it
        finished (best.pt with keep_best, else last.pt), else the newest saved while it trains; None before
        the first epoch ends."""
        chosen = self.raw_status().get("model_checkpoint")
        if chosen in ("best.pt", "last.pt") and (self.path / "checkpoints" / chosen).exists():
            return self.path / "checkpoints" / chosen
        return next((p for p in (self.last_checkpoint, self.best_checkpoint) if p.exists()), None)

    def model_stamp(self) -> str:
        """Changes whenever the run's model does: a cache key for loaded models."""
        path = self.model_checkpoint()
        return f"{self.path}@{path.name if path else ''}@{mtime(path) if path else 0.0}"

    def has_predictions(self) -> bool:
        return self.predictions_path.exists()

    def predictions_stamp(self) -> float:
        return mtime(self.predictions_path)

    def write_lr_find(self, lrs: list[float], losses: list[float], suggestions: dict[str, float]) -> None:
        write_json_atomic(self.path / "lr_find.json", {"lrs": lrs, "losses": losses, "suggestions": suggestions})

    def lr_find(self) -> dict:
        """{"lrs", "losses", "suggestions"} of a learning-rate sweep; {} when there is none or it is damaged."""
        sweep = read_json(self.path / "lr_find.json")
        lrs, losses, suggestions = sweep.get("lrs"), sweep.get("losses"), sweep.get("suggestions")
        sound = isinstance(lrs, list) and isinstance(losses, list) and len(lrs) == len(losses) and \
            all(fits(v, NUMBER) for v in lrs + losses) and isinstance(suggestions, dict) and \
            all(isinstance(k, str) and fits(v, NUMBER) for k, v in suggestions.items())
        return sweep if sound else {}


TASKS = ("train", "lr_find")
# status.json's fields and their types: a field of another type (a damaged or foreign file) is left out.
STATUS_FIELDS = {"state": (str,), "message": (str,), "device": (str,), "phase": (str,), "model_checkpoint": (str,),
                 "pid": (int,), "pid_start": (int,), "step": (int,), "total_steps": (int,), "epoch": (int,),
                 "total_epochs": (int,), "heartbeat": NUMBER, "started": NUMBER, "finished": (*NUMBER, type(None)),
                 "imgs_per_s": NUMBER, "eta_s": NUMBER, "best_accuracy": (*NUMBER, type(None)), "fraction": NUMBER,
                 # wall seconds spent running, over the first start and every resume (never the time stopped)
                 "active_s": NUMBER, "final_accuracy": NUMBER, "epoch_s_at_stop": NUMBER, "forward_s": NUMBER,
                 # unfreeze="late" in runs from before recipe.json: where the body was cut
                 "late_cut": (int,), "late_share": NUMBER}
# recipe.json's fields: what the unfrozen epochs trained ("every layer", also from scratch; "the head only", with no
# unfrozen epochs; or "late stages" from late_cut on, whose share of the work is late_share, on cached early outputs
# of cached_shape an image)
RECIPE_FIELDS = {"unfrozen": (str,), "late_cut": (int, type(None)), "late_share": NUMBER, "cached_shape": (list,)}


def _json_kind(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "true/false"}.get(type(value), "null")


def mtime(path: Path) -> float:
    """A file's modification time, 0.0 when it cannot be read."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
