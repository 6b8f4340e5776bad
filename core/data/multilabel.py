"""Several labels per image (multi-label): a labels CSV whose label column holds label sets, and what the health
report says of them (scoring predictions of them: core.data.labelscores). Loads nothing heavy: the Data page's
first draw reads it.

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

SEPARATORS = {";": "semicolons", "|": "vertical bars", " ": "spaces"}
THRESHOLD = 0.5  # fastai's: a label is predicted when its sigmoid probability reaches it (before per-label ones)
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
