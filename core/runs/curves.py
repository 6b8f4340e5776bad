"""Several runs' curves on one x-axis, as TensorBoard and W&B let you choose it: by epoch, by fine-tuning epoch
(the body unfrozen at 0, so runs with different frozen phases line up), or by training time.

Pure functions of metrics.jsonl rows (core.runs.metrics): epoch rows {"epoch", "step", "phase", "seconds", ...} and step
rows {"step", "loss", ...}. An epoch row's x is where that epoch ends; a step row's x is interpolated between the
ends of the epochs around it, so the training loss and the validation curves share one axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# alignment -> the x-axis title
ALIGNMENTS = {"epoch": "epoch", "fine_tune": "fine-tuning epoch (the body unfrozen at 0)",
              "time": "training time (minutes)"}


@dataclass(frozen=True)
class Curve:
    x: list[float]
    y: list[float]
    frozen: list[bool]  # the point was trained with the pretrained body frozen (only the new head learning)


def _epoch_ends(epochs: list[dict], align: str) -> tuple[list[float], float]:
    """The x of each epoch row's end, and the x where training began."""
    if align == "time":
        return list(np.cumsum([row["seconds"] for row in epochs]) / 60.0), 0.0
    offset = max((row["epoch"] for row in epochs if row["phase"] == "frozen"), default=0) \
        if align == "fine_tune" else 0
    ends = [float(row["epoch"] - offset) for row in epochs]
    return ends, (ends[0] - 1.0 if ends else 0.0)


def epoch_curve(epochs: list[dict], key: str, align: str) -> Curve:
    """One value per epoch (accuracy, valid_loss, ...) at the chosen x."""
    epochs = sorted(epochs, key=lambda row: row["epoch"])
    x, _ = _epoch_ends(epochs, align)
    return Curve(x, [row[key] for row in epochs], [row["phase"] == "frozen" for row in epochs])


def step_curve(steps: list[dict], epochs: list[dict], align: str, key: str = "loss") -> Curve:
    """One value per training step at the chosen x: interpolated between epoch ends, and past the last finished
    epoch at that epoch's pace. Empty when no epoch has finished (nothing says how long an epoch is)."""
    epochs = sorted(epochs, key=lambda row: row["epoch"])
    if not epochs or not steps:
        return Curve([], [], [])
    ends, start = _epoch_ends(epochs, align)
    knots = [0] + [row["step"] for row in epochs]
    xs = [start] + ends
    last_frozen_step = max((row["step"] for row in epochs if row["phase"] == "frozen"), default=0)
    steps = sorted(steps, key=lambda row: row["step"])
    where = np.array([row["step"] for row in steps], dtype=float)
    x = np.interp(where, knots, xs)
    pace = (xs[-1] - xs[-2]) / max(knots[-1] - knots[-2], 1)  # x per step in the last finished epoch
    x = np.where(where > knots[-1], xs[-1] + (where - knots[-1]) * pace, x)
    return Curve([float(v) for v in x], [row[key] for row in steps],
                 [row["step"] <= last_frozen_step for row in steps])
