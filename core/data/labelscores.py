"""Scoring predictions of label sets (core.data.multilabel): fastai's accuracy_multi, F1 averaged over images and
over labels, mean average precision, and a threshold per label chosen on validation. numpy loads with it: the
training process reads it, never the first page's draw."""
from __future__ import annotations

import numpy as np

from core.data.multilabel import THRESHOLD

CANDIDATES = np.round(np.arange(0.05, 0.951, 0.01), 2)  # the thresholds tried per label after training


def _f1(predicted: np.ndarray, targets: np.ndarray, axis: int) -> np.ndarray:
    """F1 along `axis` of boolean arrays; 0 where nothing is predicted and nothing is there (scikit-learn's
    zero_division=0, as fastai's F1ScoreMulti reports it)."""
    hits = (predicted & targets).sum(axis)
    total = predicted.sum(axis) + targets.sum(axis)
    return np.where(total > 0, 2 * hits / np.maximum(total, 1), 0.0)


def average_precision(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean over labels with at least one positive of the average precision of their ranking (scikit-learn's
    average_precision_score, average="macro")."""
    precisions = []
    for label in range(targets.shape[1]):
        truth = targets[np.argsort(-probs[:, label], kind="stable"), label]
        if truth.any():
            hits = np.cumsum(truth)
            precisions.append(float((hits[truth] / (np.flatnonzero(truth) + 1)).mean()))
    return float(np.mean(precisions)) if precisions else 0.0


def scores(probs: np.ndarray, targets: np.ndarray, thresholds=THRESHOLD) -> dict[str, float]:
    """The epoch row's figures for (N, C) probabilities against (N, C) label sets: fastai's accuracy_multi (every
    yes/no right, at `thresholds`), F1 averaged over images (f1_samples) and over labels (f1_macro), and the mean
    average precision (map), which needs no threshold."""
    targets = targets.astype(bool)
    predicted = probs >= np.asarray(thresholds, dtype=probs.dtype)  # in the sigmoids' precision, as the predictor
    return {"accuracy_multi": float((predicted == targets).mean()),
            "f1_samples": float(_f1(predicted, targets, 1).mean()),
            "f1_macro": float(_f1(predicted, targets, 0).mean()),
            "map": average_precision(probs, targets)}


def best_thresholds(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per label, the threshold among CANDIDATES with the best F1 on these (validation) images, the one nearest
    0.5 among ties; 0.5 for a label with no image here to judge it by."""
    targets = targets.astype(bool)
    chosen = np.full(targets.shape[1], THRESHOLD)
    for label in range(targets.shape[1]):
        if not targets[:, label].any():
            continue
        f1 = _f1(probs[:, label, None] >= CANDIDATES.astype(probs.dtype), targets[:, label, None], 0)
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        chosen[label] = CANDIDATES[best[np.argmin(np.abs(CANDIDATES[best] - THRESHOLD))]]
    return chosen
