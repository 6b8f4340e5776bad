"""The Map's parts for label sets (several labels per image): the colourings (whether an image carries a chosen
label, how many labels it carries, and with a run of label sets whether the run found that label at its own threshold
and whether it was right, missed it or added it falsely), the hover text, a run's label sets and predictions, and the
review a selection opens (the Fix page's, pages._review_sets, for label sets; pages._review's for one label). Names and
labels from the data are plain text: hover text and trace names are escaped here."""
from __future__ import annotations

import html

import numpy as np
import streamlit as st

from core.data.multilabel import split_labels
from core.errors import DataError
from pages._figures import to_hwc
from pages._review import label_review, review_grid
from pages._review_sets import label_set_grid, label_sets_of

LABEL, PREDICTION, RIGHT_OR_WRONG = "label", "prediction", "right or wrong"
WHOLE_SET, PER_IMAGE, SUSPECT = "whole set right or wrong", "labels per image", "suspect score (label errors)"


def trained_label_sets(items: dict[str, str], names: list[str], class_names: list[str]) -> np.ndarray:
    """(N, C) bool: the label set each of a run's images trained with, from its data_items ("a; b", "" for none);
    DataError, a sentence, for a label the run does not know."""
    column = {name: j for j, name in enumerate(class_names)}
    rows = np.zeros((len(names), len(class_names)), dtype=bool)
    for i, name in enumerate(names):
        for label in split_labels(items[name], ";"):
            if label not in column:
                raise DataError(f"The run's list of images gives {name} the label {label}, which is not one of the "
                                "run's labels: the run folder is damaged.")
            rows[i, column[label]] = True
    return rows


@st.cache_data(show_spinner="Running the run's model over its images, then UMAP…", max_entries=4)
def label_set_run_map(run_dir: str, key: str, labels: np.ndarray, thresholds: tuple[float, ...], _model, _images):
    """(DatasetMap, predicted (N, C) bool) from a run of label sets' own features (its head's input): a label is
    predicted where its sigmoid reaches the run's threshold for it."""
    import torch

    from core.inspect.embedding import map_dataset
    from core.inspect.trust import features_and_logits

    features, logits = features_and_logits(_model, _images)
    probs = torch.sigmoid(logits).numpy()  # (N, C) float32
    predicted = probs >= np.asarray(thresholds, dtype=probs.dtype)  # in the sigmoids' float32, as the predictor
    return map_dataset(features, torch.from_numpy(labels)), predicted


def set_text(row: np.ndarray, class_names: list[str]) -> str:
    return "; ".join(class_names[j] for j in np.flatnonzero(row)) or "no label"


def set_hover(names: list[str], labels: np.ndarray, class_names: list[str], predicted: np.ndarray | None) -> list[str]:
    """Each point's hover text, escaped: file · labels a; b (· predicted c)."""
    return [html.escape(f"{name} · labels {set_text(labels[i], class_names)}" +
                        (f" · predicted {set_text(predicted[i], class_names)}" if predicted is not None else ""))
            for i, name in enumerate(names)]


def set_colour(labels: np.ndarray, class_names: list[str], predicted: np.ndarray | None, others: dict,
               source: str, label_regex: str) -> tuple[list | np.ndarray, str]:
    """(each point's colour, the colouring's name), from a "Colour by" choice and, where it needs one, a label;
    `others`: the colourings both kinds of dataset share ({"split": ..., "outlier score": ...})."""
    options = [LABEL, PER_IMAGE, *others] + ([PREDICTION, RIGHT_OR_WRONG, WHOLE_SET] if predicted is not None
                                             else [SUSPECT])
    colouring = st.radio("Colour by", options, horizontal=True, key="map_colour_sets")
    if colouring in others:
        return others[colouring], colouring
    if colouring == PER_IMAGE:
        return [f"{n} label{'' if n == 1 else 's'}" for n in labels.sum(1).tolist()], colouring
    if colouring == SUSPECT:
        return np.asarray(label_review(source, label_regex)["against"], dtype=np.float32), colouring
    if colouring == WHOLE_SET:
        return np.where((predicted == labels).all(1), "whole set right", "set wrong").tolist(), colouring
    label = st.selectbox("Label", class_names, key="map_label", help="The label the colours are about.")
    j = class_names.index(label)
    carries, found = labels[:, j], predicted[:, j] if predicted is not None else None
    if colouring == LABEL:
        return np.where(carries, label, f"no {label}").tolist(), colouring
    if colouring == PREDICTION:
        return np.where(found, f"{label}: found", f"{label}: not found").tolist(), colouring
    return np.select([carries == found, carries], ["right", "missed"], "falsely added").tolist(), colouring


def review_images(key: str, rows: list[int], *, images, names: list[str], labels: np.ndarray,
                  class_names: list[str], source: str, view: str, label_regex: str) -> bool:
    """The Fix page's review of the images at `rows` (label sets: pages._review_sets'); True when a batch of edits
    was just recorded."""
    shown, chosen = to_hwc(images[rows].numpy()), [names[i] for i in rows]
    if labels.ndim == 2:
        return label_set_grid(key, shown, chosen, label_sets_of(tuple(class_names), labels[rows]), class_names,
                              source=source, view=view, label_regex=label_regex)
    return review_grid(key, shown, chosen, [class_names[i] for i in labels[rows]], class_names, source=source,
                       view=view, label_regex=label_regex)
