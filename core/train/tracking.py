"""Runs visible where people already look: a run's settings, metrics and model logged to MLflow or TensorBoard.

`--track mlflow,tensorboard` adds one callback per tracker (`trackers_for`), made on rank 0 only:
  MLflowLogger       a local MLflow store, mlruns/ beside the runs folder (mlflow.db and artifacts/), or
                     $MLFLOW_TRACKING_URI: experiment "Transfer Learning Studio", one MLflow run per run (its name
                     is our run id), params = every TrainConfig field, per-epoch metrics with step = epoch, and
                     at the end the final accuracy and the exported model (core.ship.export) under "model"
  TensorBoardLogger  event files in <run folder>/tensorboard/: loss and lr per step, the epoch metrics, the
                     settings as hparams (to compare runs) and as text; every scalar's step is the training step

    mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db
    tensorboard --logdir runs

A tracker never fails a run: its first error turns it off with one sentence in the run's log. mlflow and
tensorboard are imported only when a run asks for them (mlflow takes about a second to import).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import TrainConfig
from core.runs.folder import RunFolder
from core.train.callbacks import Callback

if TYPE_CHECKING:
    from core.train.loop import Learner

EXPERIMENT = "Transfer Learning Studio"
EPOCH_METRICS = ("train_loss", "valid_loss", "accuracy", "error_rate", "seconds")
STEP_METRICS = ("loss", "lr")
RUN_FOLDER_TAG = "studio.run_folder"  # finds a run's MLflow run again when it resumes
MLFLOW_STATUS = {"completed": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}


class Tracker(Callback):
    """A callback that logs to another tool. Subclasses write `start`, `log_step`, `log_epoch`, `end` and
    `release`; the hooks call them so that the first error turns the tracker off with one sentence in the run's
    log, and the run goes on."""

    name = ""  # as a person knows the tool: "MLflow"
    package = ""  # what pip installs

    def __init__(self, folder: RunFolder):
        self.folder = folder
        self.on = True
        self.ended = False

    def start(self, learner: Learner) -> None: ...
    def log_step(self, step: int, logs: dict) -> None: ...
    def log_epoch(self, epoch: int, logs: dict) -> None: ...
    def end(self, logs: dict) -> None: ...
    def release(self, state: str) -> None:
        """Close what is open; `state` is how the run ended ("failed" when it ended without on_fit_end)."""

    def on_fit_start(self, learner: Learner) -> None:
        self._safely(self.start, learner)

    def on_batch_end(self, step: int, logs: dict) -> None:
        self._safely(self.log_step, step, logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self._safely(self.log_epoch, epoch, logs)

    def on_fit_end(self, logs: dict) -> None:
        self._safely(self.end, logs)
        self.close(logs.get("state", "completed"))

    def close(self, state: str = "failed") -> None:
        """End the tracker's record once; core.train.run calls it when the run ends, however it ended."""
        if not self.ended:
            self.ended = True
            self._safely(self.release, state)

    def _safely(self, method, *args) -> None:
        if not self.on:
            return
        try:
            method(*args)
        except Exception as error:  # any failure of another tool: the training itself is unharmed
            self.on = False
            print(self._sentence(error), flush=True)
            if method != self.release:
                with contextlib.suppress(Exception):  # the first error is reported; a second adds nothing
                    self.release("failed")

    def _sentence(self, error: Exception) -> str:
        if isinstance(error, ImportError):
            return (f"Logging to {self.name} is off for this run: the {self.package} package is not installed "
                    f"(install it with: pip install -r requirements.txt). The run goes on.")
        detail = (str(error).strip().splitlines() or [""])[0][:300]
        return f"Logging to {self.name} stopped ({type(error).__name__}: {detail}). The run goes on without it."


class MLflowLogger(Tracker):
    """One MLflow run per run: its settings, per-epoch metrics, final accuracy and exported model."""

    name, package = "MLflow", "mlflow-skinny"

    def start(self, learner: Learner) -> None:
        # The client, not mlflow.start_run: no process-wide "active run" to leak into the next run of a process.
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.learner = learner
        uri, artifacts = mlflow_location(self.folder.path.parent)
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            EXPERIMENT, artifact_location=artifacts)
        earlier = self.client.search_runs([experiment_id], f"tags.`{RUN_FOLDER_TAG}` = {_quoted(self._folder())}",
                                          max_results=1) if learner.step > 0 else []
        if earlier:  # a resume carries on the same MLflow run: it logged no epoch past the checkpoint's
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=self.folder.run_id, tags={
                "task": self.folder.task, "data": learner.config.data, "command": self.folder.reproduce_command(),
                RUN_FOLDER_TAG: self._folder()}).info.run_id
            self.client.log_batch(self.run_id, params=[Param(name, str(value))
                                                       for name, value in learner.config.to_dict().items()])
        if learner.step > 0:  # a resume: the epochs this MLflow run has not heard of (all of them, if it is new)
            logged = {metric.step for metric in self.client.get_metric_history(self.run_id, "accuracy")}
            for row in self.folder.read_metrics().epochs:
                if row["epoch"] not in logged:
                    self.log_epoch(row["epoch"], row)

    def log_epoch(self, epoch: int, logs: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name, float(logs[name]), now, epoch)
                                                    for name in EPOCH_METRICS])

    def end(self, logs: dict) -> None:
        from core.ship.export import export_run

        self.client.log_metric(self.run_id, "final_accuracy", float(logs["accuracy"]), step=self.learner.epoch)
        if logs.get("state") == "completed":
            self.learner.announce("Exporting the model for MLflow")
            # ONNX and TorchScript: the other formats (half a minute more on a CPU) come from the Runs page or
            # python -m core.ship.export
            self.client.log_artifacts(self.run_id, str(export_run(self.folder.path, formats=())), "model")

    def release(self, state: str) -> None:
        if getattr(self, "run_id", None):
            self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(state, "FAILED"))

    def _folder(self) -> str:
        return str(self.folder.path.resolve())


class TensorBoardLogger(Tracker):
    """Event files in the run folder: step and epoch scalars against the training step, the settings as hparams."""

    name, package = "TensorBoard", "tensorboard"

    def start(self, learner: Learner) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # On a resume, hide what was logged after the checkpoint: those steps are trained again.
        self.writer = SummaryWriter(str(self.folder.path / "tensorboard"),
                                    purge_step=learner.step + 1 if learner.step else None)
        # The hparams plugin reads each run's last value of these scalar tags: compare runs by setting.
        for summary in hparams(learner.config.to_dict(), {"epoch/accuracy": None, "epoch/valid_loss": None}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("settings", "    " + self.folder.reproduce_command())  # indented: shown as code
        # No model graph: add_graph traces the model once more (measured on 2 CPU cores: 4.5 s for ResNet-18 at
        # 32 px, 16 s for EfficientNet-Lite0 at 224 px), and the exported ONNX shows it better (e.g. in Netron).

    def log_step(self, step: int, logs: dict) -> None:
        for name in STEP_METRICS:
            self.writer.add_scalar(f"step/{name}", logs[name], step)

    def log_epoch(self, epoch: int, logs: dict) -> None:
        for name in EPOCH_METRICS:
            self.writer.add_scalar(f"epoch/{name}", logs[name], logs["step"])
        self.writer.flush()  # a person watching TensorBoard sees each epoch as it ends

    def release(self, state: str) -> None:
        if getattr(self, "writer", None):
            self.writer.close()


TRACKERS: dict[str, type[Tracker]] = {"mlflow": MLflowLogger, "tensorboard": TensorBoardLogger}


def trackers_for(config: TrainConfig, folder: RunFolder) -> list[Tracker]:
    """The trackers `config.track` asks for (config.problems() already refused unknown names)."""
    return [TRACKERS[name](folder) for name in filter(None, config.track.split(","))]


def mlflow_location(runs_dir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): $MLFLOW_TRACKING_URI when set, else a SQLite
    store in mlruns/ beside the runs folder. MLflow 3 refuses its old plain-folder store unless told to
    (MLFLOW_ALLOW_FILE_STORE), and SQLite is the local store it recommends."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    folder = Path(runs_dir).resolve().parent / "mlruns"
    folder.mkdir(exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def _quoted(value: str) -> str:
    """A string in an MLflow search filter, which has quotes but no escapes."""
    return f'"{value}"' if "'" in value else f"'{value}'"

