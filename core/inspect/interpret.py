"""Interpretation of a run's validation predictions (predictions.npz): confusion matrix and most-confused pairs.
A run of label sets loads as core.inspect.labelsets' LabelSetPredictions, which has its own views."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from core.errors import BrokenRun
from core.inspect.labelsets import LabelSetPredictions, load_label_sets
from core.runs.folder import RunFolder
from core.runs.labelsets import is_multi_label


@dataclass(frozen=True)
class Predictions:
    targets: np.ndarray  # (N,) actual class index
    probs: np.ndarray  # (N, n_classes) calibrated probabilities (core.inspect.trust; older runs: softmax)
    losses: np.ndarray  # (N,) cross-entropy per item
    item_ids: np.ndarray  # (N,) index of each item in the full dataset
    raw_probs: np.ndarray | None = None  # (N, n_classes) softmax before calibration; None for older runs
    unknown_scores: np.ndarray | None = None  # (N,) core.inspect.trust's "none of these" score; None for older runs

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.targets).mean())

    def label_texts(self, class_names: list[str]) -> list[str]:
        """Each image's true class."""
        return [class_names[t] for t in self.targets]


def load_predictions(run_dir: Path) -> Predictions | LabelSetPredictions:
    """A run's predictions.npz, checked against its class names; BrokenRun, a sentence, when it is damaged. A run of
    label sets gives LabelSetPredictions ((N, C) bool targets, at the run's thresholds)."""
    folder = RunFolder(run_dir)
    if is_multi_label(folder):
        return load_label_sets(run_dir)
    n_classes = len(folder.class_names())
    broken = BrokenRun(f"Run {folder.run_id}'s predictions.npz is damaged or does not fit its {n_classes} classes.")
    try:
        with np.load(folder.predictions_path, allow_pickle=False) as npz:
            predictions = Predictions(*(np.asarray(npz[key]) for key in ("targets", "probs", "losses", "item_ids")),
                                      *(np.asarray(npz[key]) if key in npz else None
                                        for key in ("raw_probs", "unknown_scores")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, cut off, not .npz, pickled
        raise broken from None
    n = len(predictions.targets)
    shapes_fit = predictions.targets.shape == predictions.losses.shape == predictions.item_ids.shape == (n,) and \
        predictions.probs.shape == (n, n_classes) and n > 0
    kinds_fit = all(np.issubdtype(a.dtype, np.integer) for a in (predictions.targets, predictions.item_ids)) and \
        all(np.issubdtype(a.dtype, np.floating) for a in (predictions.probs, predictions.losses))
    extras_fit = (predictions.raw_probs is None or predictions.raw_probs.shape == predictions.probs.shape) and \
        (predictions.unknown_scores is None or predictions.unknown_scores.shape == (n,))
    if not (shapes_fit and kinds_fit and extras_fit) or predictions.targets.min() < 0 \
            or predictions.targets.max() >= n_classes or predictions.item_ids.min() < 0 \
            or not np.isfinite(predictions.probs).all():
        raise broken
    return predictions


def confusion_matrix(targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: row = actual class, column = predicted class."""
    return sk_confusion_matrix(targets, predicted, labels=np.arange(n_classes))


def most_confused(matrix: np.ndarray, class_names: list[str], min_val: int = 1) -> list[tuple[str, str, int]]:
    """Off-diagonal (actual, predicted, count) with count >= min_val, most frequent first (fastai's most_confused)."""
    pairs = [(class_names[i], class_names[j], int(matrix[i, j]))
             for i, j in zip(*np.nonzero(matrix)) if i != j and matrix[i, j] >= min_val]
    return sorted(pairs, key=lambda pair: -pair[2])


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total: the share of each actual class that went to each prediction."""
    totals = matrix.sum(1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)


def pair_positions(predictions: Predictions, actual: int, predicted: int) -> np.ndarray:
    """Positions (into the validation arrays) of items of class `actual` predicted as `predicted`, surest first."""
    positions = np.flatnonzero((predictions.targets == actual) & (predictions.predicted == predicted))
    return positions[np.argsort(-predictions.probs[positions, predicted], kind="stable")]


def typical_positions(predictions: Predictions, class_index: int, k: int = 6) -> np.ndarray:
    """The k items of a class the model got right with the highest confidence: what it thinks the class looks like."""
    return pair_positions(predictions, class_index, class_index)[:k]


def top_losses(predictions: Predictions, k: int = 12) -> np.ndarray:
    """Positions of the k items with the highest loss, highest first: the model's surest mistakes and doubts."""
    return np.argsort(-predictions.losses, kind="stable")[:k]


@dataclass(frozen=True)
class ClassMetrics:
    class_name: str
    precision: float  # of the items predicted as this class, the share that were
    recall: float  # of the items of this class, the share found
    f1: float
    support: int  # items of this class in the validation set


def per_class_metrics(predictions: Predictions, class_names: list[str]) -> list[ClassMetrics]:
    """Precision, recall, F1 and support of every class, worst F1 first."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(
        predictions.targets, predictions.predicted, labels=labels, zero_division=0)
    rows = [ClassMetrics(name, float(p), float(r), float(f), int(s))
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)]
    return sorted(rows, key=lambda row: (row.f1, row.class_name))
