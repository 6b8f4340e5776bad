"""Interpretation of a run's validation predictions (predictions.npz): confusion matrix and most-confused pairs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix as sk_confusion_matrix


@dataclass(frozen=True)
class Predictions:
    targets: np.ndarray  # (N,) actual class index
    probs: np.ndarray  # (N, n_classes) softmax probabilities
    losses: np.ndarray  # (N,) cross-entropy per item
    item_ids: np.ndarray  # (N,) index of each item in the full dataset

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.targets).mean())


def load_predictions(run_dir: Path) -> Predictions:
    with np.load(Path(run_dir) / "predictions.npz", allow_pickle=False) as npz:
        return Predictions(npz["targets"], npz["probs"], npz["losses"], npz["item_ids"])


def confusion_matrix(targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: row = actual class, column = predicted class."""
    return sk_confusion_matrix(targets, predicted, labels=np.arange(n_classes))


def most_confused(matrix: np.ndarray, class_names: list[str], min_val: int = 1) -> list[tuple[str, str, int]]:
    """Off-diagonal (actual, predicted, count) with count >= min_val, most frequent first (fastai's most_confused)."""
    pairs = [(class_names[i], class_names[j], int(matrix[i, j]))
             for i, j in zip(*np.nonzero(matrix)) if i != j and matrix[i, j] >= min_val]
    return sorted(pairs, key=lambda pair: -pair[2])
