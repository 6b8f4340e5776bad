"""What happens around the training loop: Keras-style callbacks that write the run folder (metrics, status
heartbeats, checkpoints), print progress, and stop early; and the checkpoint format itself."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from core import runs

if TYPE_CHECKING:
    from core.train import Loop


class Callback:
    """Four hooks, as Keras has them; `logs` is a plain dict."""

    def on_fit_start(self, loop: "Loop") -> None: ...
    def on_batch_end(self, step: int, logs: dict) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_fit_end(self, logs: dict) -> None: ...


class EarlyStop(Exception):
    """Raised after an epoch when the validation loss stopped improving; the run counts as completed."""


def save_checkpoint(path: Path, loop: Loop, class_names: tuple[str, ...]) -> None:
    """Model, optimizer, schedule, RNG state and position, written atomically. Loads with weights_only=True."""
    state = {
        "model": loop.classifier.model.state_dict(),
        "optimizer": loop.optimizer.state_dict() if loop.optimizer else {},
        "scheduler": loop.scheduler.state_dict() if loop.scheduler else {},
        "rng": torch.get_rng_state(),
        "epoch": loop.epoch, "step": loop.step, "phase": loop.phase, "phase_epoch": loop.phase_epoch,
        "batch_in_epoch": loop.batch_in_epoch,
        "config": loop.config.to_dict(), "class_names": list(class_names),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class RunFolderWriter(Callback):
    """Writes metrics.jsonl rows, status.json heartbeats and checkpoints (rank 0 only under torchrun)."""

    def __init__(self, run_dir: Path, class_names: tuple[str, ...]):
        self.run_dir = run_dir
        self.class_names = class_names
        self.metrics = runs.MetricsWriter(run_dir)
        self.best_accuracy = -1.0
        self.last_status = 0.0
        self.recent: list[float] = []  # recent images/s, for a steady speed and time-left estimate

    def on_fit_start(self, loop: Loop) -> None:
        self.loop = loop

    def on_batch_end(self, step: int, logs: dict) -> None:
        self.metrics.write({"kind": "step", "step": step, **logs})
        self.recent = (self.recent + [logs["imgs_per_s"]])[-20:]
        now = time.time()
        if now - self.last_status >= 1.0:
            speed = float(np.median(self.recent))
            steps_left = self.loop.total_steps - step
            runs.write_status(self.run_dir, state="running", step=step, total_steps=self.loop.total_steps,
                              epoch=logs["epoch"], total_epochs=self.loop.total_epochs, phase=self.loop.phase,
                              imgs_per_s=speed, eta_s=steps_left * self.loop.config.bs / max(speed, 1e-9))
            self.last_status = now

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.metrics.write({"kind": "epoch", "epoch": epoch, **logs})
        checkpoints = self.run_dir / "checkpoints"
        save_checkpoint(checkpoints / "last.pt", self.loop, self.class_names)
        if logs["accuracy"] > self.best_accuracy:
            self.best_accuracy = logs["accuracy"]
            shutil.copyfile(checkpoints / "last.pt", checkpoints / ".best.pt.tmp")
            os.replace(checkpoints / ".best.pt.tmp", checkpoints / "best.pt")
        runs.write_status(self.run_dir, state="running", epoch=epoch, step=self.loop.step,
                          best_accuracy=self.best_accuracy)


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


class TerminalProgress(Callback):
    """A tqdm bar when attached to a terminal; plain epoch lines (fastai's table) in a log file."""

    def on_fit_start(self, loop: Loop) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=loop.total_steps, unit="batch", disable=not sys.stderr.isatty(), leave=False)
        print(f"{'epoch':>5} {'phase':>8} {'train_loss':>10} {'valid_loss':>10} {'accuracy':>8} "
              f"{'error_rate':>10} {'time':>6}", flush=True)

    def on_batch_end(self, step: int, logs: dict) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{logs['loss']:.3f}", imgs_s=f"{logs['imgs_per_s']:.0f}")

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.bar.write(f"{epoch:>5} {logs['phase']:>8} {logs['train_loss']:>10.4f} {logs['valid_loss']:>10.4f} "
                       f"{logs['accuracy']:>8.4f} {logs['error_rate']:>10.4f} {format_seconds(logs['seconds']):>6}")

    def on_fit_end(self, logs: dict) -> None:
        self.bar.close()


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
