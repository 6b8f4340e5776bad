"""What happens around the training loop, as Keras-style callbacks: writing the run folder (metrics, status
heartbeats, checkpoints), printing progress, stopping on request, on a NaN loss, or early.

Four hooks are enough: `on_fit_start(learner)`, `on_batch_end(step, logs)`, `on_epoch_end(epoch, logs)` and
`on_fit_end(logs)`; `logs` is a plain dict. A callback ends training by raising: StopTraining (keep what was
learned, checkpoint, finish), EarlyStop (the run counts as completed), NonFiniteLoss (go back to the last
checkpoint).
"""
from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING

from core.atomic import copy_atomic
from core.distributed import World
from core.formats import format_seconds
from core.runs.folder import RunFolder
from core.train.progress import ActiveTime, TimeLeft

if TYPE_CHECKING:
    from core.train.loop import Learner


class StopTraining(Exception):
    """Raised between batches to end training cleanly (a stop request, the LR finder's end)."""


class EarlyStop(Exception):
    """Raised after an epoch when the validation loss stopped improving; the run counts as completed."""


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; the run goes back to the weights of its last finished epoch."""


class Callback:
    """Four hooks, as Keras has them; `logs` is a plain dict."""

    def on_fit_start(self, learner: Learner) -> None: ...
    def on_batch_end(self, step: int, logs: dict) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_fit_end(self, logs: dict) -> None: ...


class StopOnNonFiniteLoss(Callback):
    """Ends the run when a loss is NaN or infinite; every process agrees (under torchrun), so none waits."""

    def __init__(self, world: World = World()):
        self.world = world

    def on_batch_end(self, step: int, logs: dict) -> None:
        if self.world.any(not math.isfinite(logs["loss"])):
            raise NonFiniteLoss(f"The loss became {logs['loss']} at step {step} (epoch {logs['epoch']}).")


class StopOnRequest(Callback):
    """Ends training after the current batch when the run folder holds a stop request (the Stop button,
    SIGTERM); every process looks, and all agree."""

    def __init__(self, folder: RunFolder, world: World = World()):
        self.folder, self.world = folder, world

    def on_batch_end(self, step: int, logs: dict) -> None:
        if self.world.any(self.folder.stop_requested()):
            raise StopTraining


class EarlyStopping(Callback):
    """Ends training after `patience` epochs in a row without a lower validation loss."""

    def __init__(self, patience: int):
        self.patience, self.best, self.waited = patience, float("inf"), 0

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if logs["valid_loss"] < self.best:
            self.best, self.waited = logs["valid_loss"], 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            raise EarlyStop(f"Stopped early after epoch {epoch}: the validation loss had not improved for "
                            f"{self.patience} epoch(s).")


class RunFolderWriter(Callback):
    """Writes metrics.jsonl rows, status.json heartbeats and checkpoints (rank 0 only under torchrun).

    Every heartbeat carries the run's position (`epoch`: epochs finished, as in the checkpoint and the epoch
    table), `active_s` (seconds spent running, over every start), and what `time_left` makes of the wall time
    of the whole work: `eta_s`, `fraction` (of the run's time done) and `imgs_per_s` (images trained in the
    current phase over the seconds it has taken, its feature cache, validations and checkpoints included).
    An epoch row's `seconds` is its wall time from the end of the one before to the end of its own checkpoint
    (the writer sets it in `logs`, so every later callback shows the same); `epoch_s_before` is what the
    epoch being resumed had already taken before its stop.
    """

    def __init__(self, folder: RunFolder, class_names: list[str], best_accuracy: float = -1.0, *,
                 active: ActiveTime | None = None, time_left: TimeLeft | None = None, epoch_s_before: float = 0.0):
        self.folder = folder
        self.class_names = class_names
        self.metrics = folder.metrics_writer()
        self.best_accuracy = best_accuracy
        self.active, self.time_left = active or ActiveTime(), time_left
        self.epoch_s_before = epoch_s_before
        self.last_status = 0.0

    def on_fit_start(self, learner: Learner) -> None:
        self.learner = learner
        self.epoch_began = self.active() - self.epoch_s_before  # in active seconds: a stop's gap never counts
        self.mark = time.perf_counter()  # this process's last epoch end: what its steps and extra work add up to
        self.epoch_steps_s = self.epoch_features_s = 0.0  # this epoch's training steps and feature cache
        self.features_counted = 0.0
        self.phase, self.phase_began, self.phase_images = "", self.mark, 0

    def epoch_seconds(self) -> float:
        """Active seconds the current epoch has taken so far (before a stop too, when it was resumed)."""
        return self.active() - self.epoch_began

    def on_batch_end(self, step: int, logs: dict) -> None:
        self.metrics.write({"kind": "step", "step": step, **logs})
        learner = self.learner
        if learner.phase != self.phase:  # a phase's speed counts from the end of the one before, cache included
            self.phase, self.phase_began, self.phase_images = learner.phase, self.mark, 0
        batch = min(learner.config.bs, len(learner.split.train_labels))
        self.phase_images += batch
        self.epoch_steps_s += batch / max(logs["imgs_per_s"], 1e-9)
        if self.time_left is not None:
            self.time_left.step(learner.phase, batch / max(logs["imgs_per_s"], 1e-9))
        self.take_features()
        if time.time() - self.last_status >= 1.0:
            self.heartbeat(step=step)

    def take_features(self) -> None:
        """Note the seconds the recipe spent computing the frozen body's features since the last look."""
        seconds = self.learner.feature_seconds - self.features_counted
        if seconds > 0:
            self.features_counted += seconds
            self.epoch_features_s += seconds
            if self.time_left is not None:
                self.time_left.features(seconds)

    def heartbeat(self, **fields) -> None:
        """status.json: where the run stands, and its speed and time left from the wall time of all its work."""
        learner, now = self.learner, time.perf_counter()
        left = self.time_left.seconds_left(learner.phase, learner.phase_epoch, learner.batch_in_epoch) \
            if self.time_left is not None and learner.phase else None
        active = self.active()
        speed = self.phase_images / (now - self.phase_began) if self.phase_images and now > self.phase_began else None
        self.folder.update_status(state="running", total_steps=learner.total_steps, epoch=learner.epoch,
                                  total_epochs=learner.total_epochs, phase=learner.phase, imgs_per_s=speed,
                                  eta_s=left, fraction=None if left is None else active / max(active + left, 1e-9),
                                  active_s=active, forward_s=self.time_left.forward() if self.time_left else None,
                                  **fields)
        self.last_status = time.time()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        from core.runs.checkpoint import save_checkpoint  # torch-heavy; the writer is made only in a training process

        started = time.perf_counter()
        save_checkpoint(self.folder.last_checkpoint, self.learner, self.class_names)
        if logs["accuracy"] > self.best_accuracy:
            self.best_accuracy = logs["accuracy"]
            copy_atomic(self.folder.last_checkpoint, self.folder.best_checkpoint)
        now = time.perf_counter()
        logs["seconds"] = self.epoch_seconds()
        self.metrics.write({"kind": "epoch", "epoch": epoch, **logs})
        self.epoch_began += logs["seconds"]
        self.take_features()
        if self.time_left is not None:
            self.time_left.checkpoint(now - started)
            self.time_left.epoch(logs["phase"], now - self.mark - self.epoch_steps_s - self.epoch_features_s)
        self.mark, self.epoch_steps_s, self.epoch_features_s = now, 0.0, 0.0
        self.heartbeat(step=self.learner.step, best_accuracy=self.best_accuracy)

    def on_fit_end(self, logs: dict) -> None:
        self.metrics.close()


class TerminalProgress(Callback):
    """A tqdm bar when attached to a terminal; plain epoch lines (fastai's table) in a log file. A run of label sets
    shows fastai's planet columns, accuracy_multi and F1 averaged over images, where one label shows accuracy and
    error_rate."""

    def __init__(self, multi_label: bool = False):
        self.columns = [("accuracy_multi", "accuracy"), ("f1_samples", "f1_samples")] if multi_label else [
            ("accuracy", "accuracy"), ("error_rate", "error_rate")]

    def on_fit_start(self, learner: Learner) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=learner.total_steps, unit="batch", disable=not sys.stderr.isatty(), leave=False)
        titles = " ".join(f"{title:>10}" for title, _ in self.columns)
        print(f"{'epoch':>5} {'phase':>8} {'train_loss':>10} {'valid_loss':>10} {titles} {'time':>6}", flush=True)

    def on_batch_end(self, step: int, logs: dict) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{logs['loss']:.3f}", imgs_s=f"{logs['imgs_per_s']:.0f}")

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        figures = " ".join(f"{logs[key]:>10.4f}" for _, key in self.columns)
        self.bar.write(f"{epoch:>5} {logs['phase']:>8} {logs['train_loss']:>10.4f} {logs['valid_loss']:>10.4f} "
                       f"{figures} {format_seconds(logs['seconds']):>6}")

    def on_fit_end(self, logs: dict) -> None:
        self.bar.close()
