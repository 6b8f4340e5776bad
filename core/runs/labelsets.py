"""A run that learnt label sets (several labels per image, core.data.multilabel): how its folder says so
(data.json's `multi_label`), and its threshold per label (thresholds.json), which everything that predicts with the
run uses (core.ship)."""
from __future__ import annotations

from core.atomic import read_json, write_json_atomic
from core.data.multilabel import THRESHOLD
from core.runs.folder import RunFolder


def is_multi_label(folder: RunFolder) -> bool:
    return folder.data_record().get("multi_label") is True


def write_thresholds(folder: RunFolder, thresholds: list[float]) -> None:
    """Each label's threshold (in the order of the run's class names), chosen on validation."""
    if folder.writes:
        write_json_atomic(folder.path / "thresholds.json", {"thresholds": thresholds})


def thresholds(folder: RunFolder) -> list[float] | None:
    """The run's threshold per label, or None when it has none (a single-label run, or a damaged file)."""
    found = read_json(folder.path / "thresholds.json").get("thresholds")
    fits = isinstance(found, list) and all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in found)
    return [float(t) for t in found] if fits else None


def run_thresholds(folder: RunFolder, n_labels: int) -> list[float]:
    """The thresholds a run of label sets predicts with: its own, or fastai's 0.5 for each label when thresholds.json
    is missing or does not fit its labels (a run cut off before writing it)."""
    found = thresholds(folder)
    return found if found is not None and len(found) == n_labels else [THRESHOLD] * n_labels
