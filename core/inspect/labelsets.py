"""Interpretation of a run of label sets (several labels per image, core.data.multilabel) from its validation
predictions: each label's precision, recall and F1, the images where a label was missed or falsely added, which
label is missed while which other is added, and the top losses with what they missed and added.

A label is predicted where its sigmoid probability reaches the run's own threshold for it (thresholds.json,
chosen on validation after training; 0.5, fastai's, for a run without one), everywhere here, so the figures match
the epoch rows and what the Predict page says. "Missed" is a label the image carries and the model did not
predict; "added" is a label the model predicted and the image does not carry. numpy and scikit-learn only: no
torch, no streamlit.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from core.data.labelscores import THRESHOLD
from core.data.multilabel import joined
from core.errors import BrokenRun
from core.runs.folder import RunFolder
from core.runs.labelsets import thresholds as saved_thresholds


@dataclass(frozen=True)
class LabelSetPredictions:
    targets: np.ndarray  # (N, C) bool: the labels each validation image carries
    probs: np.ndarray  # (N, C) each label's sigmoid probability
    losses: np.ndarray  # (N,) binary cross-entropy per image, averaged over its labels
    item_ids: np.ndarray  # (N,) index of each item in the full dataset
    thresholds: np.ndarray  # (C,) the probability at which each label is predicted
    thresholds_saved: bool  # True: the run's own (thresholds.json); False: 0.5 for every label
    raw_probs: np.ndarray | None = None  # (N, C) the same sigmoids (label sets are not calibrated)
    unknown_scores: np.ndarray | None = None  # (N,) core.inspect.trust's "none of these" score

    @property
    def predicted(self) -> np.ndarray:
        """(N, C) bool: the labels the model gives each image at the thresholds."""
        return self.probs >= self.thresholds.astype(self.probs.dtype)  # as the predictor and the exports compare

    @property
    def missed(self) -> np.ndarray:
        """(N, C) bool: labels the image carries that the model did not give it."""
        return self.targets & ~self.predicted

    @property
    def added(self) -> np.ndarray:
        """(N, C) bool: labels the model gave the image that it does not carry."""
        return self.predicted & ~self.targets

    def label_texts(self, class_names: list[str]) -> list[str]:
        """Each image's true label set as text ("no label" for an empty one)."""
        return [label_set(row, class_names) for row in self.targets]


def label_set(row: np.ndarray, class_names: list[str]) -> str:
    """The labels marked in a (C,) bool row, joined as the dataset writes them; "no label" when none is."""
    return joined(tuple(class_names[j] for j in np.flatnonzero(row))) or "no label"


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {key: np.asarray(npz[key]) for key in npz.files}


def load_label_sets(run_dir: Path) -> LabelSetPredictions:
    """A run of label sets' predictions.npz, checked against its labels, with the run's thresholds; BrokenRun, a
    sentence, when it is damaged."""
    folder = RunFolder(run_dir)
    n_labels = len(folder.class_names())
    broken = BrokenRun(f"Run {folder.run_id}'s predictions.npz is damaged or does not fit its {n_labels} labels.")
    try:
        arrays = _arrays(folder.predictions_path)
        targets, probs, losses, item_ids = (arrays[key] for key in ("targets", "probs", "losses", "item_ids"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, cut off, not .npz, pickled
        raise broken from None
    raw_probs, unknown_scores = arrays.get("raw_probs"), arrays.get("unknown_scores")
    n = len(targets)
    fits = n > 0 and targets.dtype == bool and targets.shape == probs.shape == (n, n_labels) and \
        losses.shape == item_ids.shape == (n,) and np.issubdtype(item_ids.dtype, np.integer) and \
        all(np.issubdtype(a.dtype, np.floating) for a in (probs, losses)) and \
        (raw_probs is None or raw_probs.shape == probs.shape) and \
        (unknown_scores is None or unknown_scores.shape == (n,))
    if not fits or item_ids.min() < 0 or not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise broken
    chosen = saved_thresholds(folder)
    saved = chosen is not None and len(chosen) == n_labels
    return LabelSetPredictions(targets, probs, losses, item_ids,
                               np.asarray(chosen if saved else [THRESHOLD] * n_labels, dtype=float), saved,
                               raw_probs, unknown_scores)


@dataclass(frozen=True)
class LabelMetrics:
    label: str
    threshold: float  # the probability at which the label is predicted
    precision: float  # of the images given this label, the share that carry it
    recall: float  # of the images that carry it, the share given it
    f1: float
    support: int  # validation images that carry the label
    missed: int  # of those, the images not given it
    added: int  # images given it that do not carry it


def per_label_metrics(predictions: LabelSetPredictions, class_names: list[str]) -> list[LabelMetrics]:
    """Precision, recall, F1 and support of every label at its threshold, worst F1 first (scikit-learn's, with
    zero_division=0 as core.data.labelscores scores it)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        predictions.targets, predictions.predicted, average=None, labels=np.arange(len(class_names)),
        zero_division=0)
    missed, added = predictions.missed.sum(0), predictions.added.sum(0)
    rows = [LabelMetrics(name, float(predictions.thresholds[j]), float(precision[j]), float(recall[j]),
                         float(f1[j]), int(support[j]), int(missed[j]), int(added[j]))
            for j, name in enumerate(class_names)]
    return sorted(rows, key=lambda row: (row.f1, row.label))


def missed_positions(predictions: LabelSetPredictions, label: int) -> np.ndarray:
    """Positions of the images that carry `label` and were not given it, surest first (lowest probability)."""
    positions = np.flatnonzero(predictions.missed[:, label])
    return positions[np.argsort(predictions.probs[positions, label], kind="stable")]


def added_positions(predictions: LabelSetPredictions, label: int) -> np.ndarray:
    """Positions of the images given `label` that do not carry it, surest first (highest probability)."""
    positions = np.flatnonzero(predictions.added[:, label])
    return positions[np.argsort(-predictions.probs[positions, label], kind="stable")]


def missed_while_added(predictions: LabelSetPredictions) -> np.ndarray:
    """(C, C) counts: [i, j] is the number of images where label i was missed while label j was added, the
    multi-label counterpart of a confusion matrix's off-diagonal (a label is never both, so the diagonal is 0)."""
    return predictions.missed.T.astype(np.int64) @ predictions.added.astype(np.int64)


def most_confused_labels(matrix: np.ndarray, class_names: list[str],
                         min_val: int = 1) -> list[tuple[str, str, int]]:
    """(missed, added, count) of missed_while_added's cells with count >= min_val, most frequent first."""
    pairs = [(class_names[i], class_names[j], int(matrix[i, j]))
             for i, j in zip(*np.nonzero(matrix >= max(min_val, 1)))]
    return sorted(pairs, key=lambda pair: -pair[2])


def pair_positions(predictions: LabelSetPredictions, missed: int, added: int) -> np.ndarray:
    """Positions of the images where label `missed` was missed while label `added` was added, highest loss first."""
    positions = np.flatnonzero(predictions.missed[:, missed] & predictions.added[:, added])
    return positions[np.argsort(-predictions.losses[positions], kind="stable")]


MINUS = "\u2212"  # a true minus sign: "−zero" reads as a missed label, not a dash


@dataclass(frozen=True)
class LabelSetLoss:
    position: int  # into the validation arrays
    loss: float
    labels: str  # the image's true label set, as text
    missed: tuple[str, ...]  # labels it carries that the model did not give it
    added: tuple[str, ...]  # labels the model gave it that it does not carry

    @property
    def title(self) -> str:
        """Its true set, then what was missed (−) and added (+), then its loss: two lines of text."""
        changes = " ".join([*(MINUS + name for name in self.missed), *("+" + name for name in self.added)])
        return f"{self.labels}\n{changes or 'all right'} · loss {self.loss:.2f}"


def image_mistakes(predictions: LabelSetPredictions, class_names: list[str],
                   positions: np.ndarray) -> list[LabelSetLoss]:
    """The images at these positions, each with its loss, its true set and what was missed and added."""
    missed, added = predictions.missed, predictions.added
    return [LabelSetLoss(int(p), float(predictions.losses[p]), label_set(predictions.targets[p], class_names),
                         tuple(class_names[j] for j in np.flatnonzero(missed[p])),
                         tuple(class_names[j] for j in np.flatnonzero(added[p])))
            for p in positions]


def top_losses(predictions: LabelSetPredictions, class_names: list[str], k: int = 12) -> list[LabelSetLoss]:
    """The k images with the highest loss, highest first, each with its true set and what was missed and added."""
    return image_mistakes(predictions, class_names, np.argsort(-predictions.losses, kind="stable")[:k])
