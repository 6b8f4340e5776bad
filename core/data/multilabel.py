"""Several labels per image (multi-label): a labels CSV whose label column holds label sets, what the health
report says of them, and how predictions of them are scored (fastai's accuracy_multi, F1, mean average precision)
and thresholded.

A column is read as label sets when its labels are separated by `;` or `|`, or by spaces as in fastai's planet
format ("clear primary water"). Spaces alone are ambiguous (a class may be called "golden retriever"), so they
separate labels only where the words form a smaller vocabulary than the whole labels do: the planet set's 17 words
make hundreds of different rows, while "golden retriever" and "great dane" are four words for two classes.
"""
from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from itertools import combinations

import numpy as np

from core.errors import DataError

SEPARATORS = {";": "semicolons", "|": "vertical bars", " ": "spaces"}
RARE_LABEL = 10  # a label on fewer images than this is flagged: too few to learn it and to judge what was learnt
CO_OCCURRENCE_SHOWN = 20  # the most frequent label pairs the report lists


CSV_HEADERS = ({"file", "filename", "image", "image_name", "path", "id"}, {"label", "labels", "tags", "class"})


def label_rows(rows: list[list[str]]) -> list[tuple[int, str, str]]:
    """(row number, file, label text) of a labels CSV's rows that name a file, its header left out (file,label;
    planet's image_name,tags; ...)."""
    header = [cell.strip().lower() for cell in rows[0][:2]] if rows else []
    if len(header) == 2 and header[0] in CSV_HEADERS[0] and header[1] in CSV_HEADERS[1]:
        rows = rows[1:]
    return [(number, row[0].strip(), row[1].strip()) for number, row in enumerate(rows, start=2)
            if len(row) >= 2 and row[0].strip()]


def label_separator(labels: Iterable[str]) -> str | None:
    """The separator of a label column that holds several labels per image, or None for one label per image."""
    labels = [" ".join(label.split()) for label in labels if label.strip()]
    for separator in (";", "|"):
        if any(separator in label for label in labels):
            return separator
    words = [label.split(" ") for label in labels]
    if not any(len(row) > 1 for row in words):
        return None
    vocabulary = {word for row in words for word in row}
    return " " if len(vocabulary) < len(set(labels)) else None


def split_labels(text: str, separator: str) -> tuple[str, ...]:
    """The label set in one cell, sorted, each label once: an empty cell is an image with no label."""
    parts = text.split() if separator == " " else text.split(separator)
    return tuple(sorted({" ".join(part.split()) for part in parts if part.strip()}))


def joined(labels: tuple[str, ...]) -> str:
    """A label set as one text, for people and for telling two sets apart."""
    return "; ".join(labels)


def label_summary(label_sets: list[tuple[str, ...]], names: list[str]) -> dict:
    """What the health report says of a multi-label dataset: labels per image (min, median, max), the images with no
    label, the most frequent pairs of labels on one image, and the labels too rare to learn."""
    per_image = [len(labels) for labels in label_sets]
    counts = Counter(label for labels in label_sets for label in labels)
    pairs = Counter(pair for labels in label_sets for pair in combinations(labels, 2))
    return {
        "per_image": {"min": min(per_image), "median": statistics.median(per_image), "max": max(per_image)}
        if per_image else {},
        "no_label": [name for name, labels in zip(names, label_sets) if not labels],
        "co_occurrence": [[a, b, n] for (a, b), n in sorted(pairs.items(), key=lambda p: (-p[1], p[0]))
                          [:CO_OCCURRENCE_SHOWN]],
        "rare": sorted(label for label, n in counts.items() if n < RARE_LABEL),
    }


def describe(summary: dict, n_labels: int) -> str:
    """One sentence: how many labels, and how many per image."""
    spread = summary.get("per_image") or {}
    if not spread:
        return f"{n_labels} labels"
    median = spread["median"]
    median = int(median) if float(median).is_integer() else median
    return (f"{n_labels} labels, {spread['min']}–{spread['max']} per image (median {median})"
            if spread["min"] != spread["max"] else f"{n_labels} labels, {spread['min']} per image")


def item_labels(data) -> list[tuple[str, str]]:
    """(item name, its label) of every image of LabeledImages, a label set joined as one text."""
    if data.multi_label:
        return [(name, joined(tuple(data.class_names[j] for j in np.flatnonzero(row))))
                for name, row in zip(data.item_names, data.labels.numpy())]
    return [(name, data.class_names[label]) for name, label in zip(data.item_names, data.labels.tolist())]


def one_label_per_image(data, what: str) -> None:
    """DataError, a sentence, when `data` (LabeledImages or a health report) is multi-label and `what` reads one label
    per image: what the Data page shows of label sets is all the app makes of them so far."""
    if getattr(data, "multi_label", False):
        raise DataError(f"This dataset has several labels per image (multi-label). {what} needs one label per image: "
                        "the app reads and checks label sets (the Data page), but does not train on them yet.")


THRESHOLD = 0.5  # fastai's: a label is predicted when its sigmoid probability passes it
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
    predicted = probs >= np.asarray(thresholds)
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
        f1 = _f1(probs[:, label, None] >= CANDIDATES, targets[:, label, None], 0)
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        chosen[label] = CANDIDATES[best[np.argmin(np.abs(CANDIDATES[best] - THRESHOLD))]]
    return chosen
