"""The Interpret page for a run of label sets (several labels per image): its scores at the run's thresholds, each
label's precision, recall and F1, each label's missed and falsely added images with Grad-CAM of that label, which
label is missed while which other is added, and the top losses with what they missed and added.

pages/interpret.py draws this instead of its confusion matrix when the run learnt label sets; the figures come
from core.inspect.labelsets, which predicts a label where its probability reaches the run's own threshold for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from core.data.labelscores import scores
from core.inspect.attribution import CamLayer, grad_cam_layer, grad_cam_note
from core.inspect.labelsets import (
    MINUS,
    LabelSetPredictions,
    added_positions,
    image_mistakes,
    label_set,
    missed_positions,
    missed_while_added,
    most_confused_labels,
    pair_positions,
    per_label_metrics,
    top_losses,
)
from pages._common import cached_attribution, model_key, run_model
from pages._figures import confusion_figure, overlay_grid, to_hwc
from pages._report_labels import label_sets_report_html
from pages._text import md
from pages._trust import label_sets_trust_section

if TYPE_CHECKING:
    import torch

def label_sets_view(run_dir: Path, predictions: LabelSetPredictions, images: torch.Tensor,
                    class_names: list[str]) -> None:
    """Every section of the page for a run of label sets."""
    _scores(predictions, class_names)
    metrics = per_label_metrics(predictions, class_names)
    st.subheader("Per-label metrics")
    st.caption("Precision: of the images given this label, the share that carry it. Recall: of the images that "
               "carry it, the share given it. Missed and added count the images behind each. Worst F1 first.")
    st.dataframe([{"label": m.label, "threshold": round(m.threshold, 2), "precision": round(m.precision, 3),
                   "recall": round(m.recall, 3), "f1": round(m.f1, 3), "support": m.support, "missed": m.missed,
                   "added": m.added} for m in metrics], hide_index=True, width="content", key="per_label")
    _label_mistakes(run_dir, predictions, images, class_names, [m.label for m in metrics])
    _confused_labels(predictions, images, class_names)
    _top_losses(run_dir, predictions, images, class_names, class_names.index(metrics[0].label))
    label_sets_trust_section(run_dir, predictions, images, len(class_names))
    st.subheader("Share this run")
    model, _, _ = run_model(run_dir)
    st.download_button("Download an HTML report", lambda: label_sets_report_html(run_dir, model, images, predictions,
                                                                                 class_names),
                       file_name=f"{run_dir.name}-report.html", mime="text/html", on_click="ignore",
                       icon=":material/download:", help="Settings, curves, scores, per-label metrics, missed and "
                       "added labels and top losses in one file that opens in any browser, without the app.")


def _scores(predictions: LabelSetPredictions, class_names: list[str]) -> None:
    """The epoch row's four scores, and the thresholds they are taken at."""
    found = scores(predictions.probs, predictions.targets, predictions.thresholds)
    columns = st.columns(4)
    columns[0].metric("Accuracy (each yes or no)", f"{found['accuracy_multi']:.1%}", help="fastai's accuracy_multi: "
                      "the share of (image, label) pairs the model answered right.")
    columns[1].metric("F1 per image", f"{found['f1_samples']:.3f}", help="F1 of each image's predicted set against "
                      "its true set, averaged over images (f1_samples).")
    columns[2].metric("F1 per label", f"{found['f1_macro']:.3f}", help="F1 of each label, averaged over labels "
                      "(f1_macro): a rare label counts as much as a common one.")
    columns[3].metric("Mean average precision", f"{found['map']:.3f}", help="How well each label's probabilities "
                      "rank the images that carry it above those that do not, averaged over labels; needs no "
                      "threshold.")
    if predictions.thresholds_saved:
        chosen = ", ".join(f"{name} {t:.2f}" for name, t in zip(class_names, predictions.thresholds))
        st.caption(md(f"Every figure on this page gives an image a label where the label's probability reaches this "
                      f"run's own threshold for it, chosen on the validation images after training (thresholds.json): "
                      f"{chosen}."))
    else:
        st.caption("This run has no readable thresholds.json, so every figure on this page gives an image a label "
                   "where the label's probability reaches 0.5, fastai's default.")


def _images_at(images: torch.Tensor, predictions: LabelSetPredictions, positions: np.ndarray) -> np.ndarray:
    """Validation images at these positions of the predictions, (N, S, S, 3) uint8."""
    return to_hwc(images[predictions.item_ids[positions]].numpy())


def _heats(run_dir: Path | None, images: torch.Tensor, predictions: LabelSetPredictions, positions: np.ndarray,
           label: int | None) -> np.ndarray | None:
    """Grad-CAM of `label`'s logit over the images at these positions (N, S, S), or None: no label asked for, or
    no layer informative at this size (grad_cam_note says so)."""
    if run_dir is None or label is None or len(positions) == 0:
        return None
    model, _, config = run_model(run_dir)
    if _cam_layer(model_key(run_dir), model, config.size) is None:
        return None
    return cached_attribution(model_key(run_dir), "valid:" + ",".join(str(int(p)) for p in positions),
                              (label,) * len(positions), "grad_cam", model, images[predictions.item_ids[positions]])


@st.cache_resource(show_spinner=False, max_entries=4)
def _cam_layer(model_key: str, _model, size: int) -> CamLayer | None:
    """grad_cam_layer, found once per model (a forward pass each time otherwise; the page asks up to five times)."""
    return grad_cam_layer(_model, size)


def _cam_note(run_dir: Path) -> None:
    """The sentence on what Grad-CAM reads at this run's size, or why it cannot show anything."""
    model, _, config = run_model(run_dir)
    layer = _cam_layer(model_key(run_dir), model, config.size)
    note = md(grad_cam_note(layer, config.size))
    if layer is None:
        st.info(note, icon=":material/blur_on:")
    else:
        st.caption(note)


def _grid(run_dir: Path | None, images, predictions: LabelSetPredictions, positions: np.ndarray, titles: list[str],
          cam: int | None, opacity: float, key: str, empty: str) -> None:
    """The images at these positions, titled, with Grad-CAM of label `cam` over them (None: no heat)."""
    if len(positions) == 0:
        st.caption(empty)
        return
    heats = _heats(run_dir, images, predictions, positions, cam)
    st.plotly_chart(overlay_grid(_images_at(images, predictions, positions), heats, titles, columns=4,
                                 opacity=opacity, height_per_row=200), key=key)


def _label_mistakes(run_dir: Path, predictions: LabelSetPredictions, images, class_names: list[str],
                    worst_first: list[str]) -> None:
    """A label picker, and that label's missed and falsely added images with Grad-CAM of the label."""
    st.subheader("Each label's mistakes")
    st.caption("Missed: images that carry the label and were not given it, surest first (lowest probability). "
               "Added: images given the label that do not carry it, surest first (highest probability). Each title "
               "is the image's true label set, then the label's probability.")
    left, middle, right = st.columns(3)
    name = left.selectbox("Label", worst_first, key="labels_pick", help="Worst F1 first.")
    show_cam = middle.toggle("Grad-CAM of this label", value=True, key="labels_cam",
                             help="Where the model's evidence for this label lies (the gradient of its logit).")
    opacity = right.slider("Heat map opacity", 0.0, 1.0, 0.45, disabled=not show_cam, key="labels_opacity")
    label = class_names.index(name)
    if show_cam:
        _cam_note(run_dir)
    cam = label if show_cam else None
    for column, what, positions in zip(st.columns(2), ["missed", "falsely added"],
                                       [missed_positions(predictions, label), added_positions(predictions, label)]):
        with column:
            st.caption(md(f"{name}, {what}: {len(positions)} validation images"))
            titles = [f"{label_set(predictions.targets[p], class_names)}\np={predictions.probs[p, label]:.2f}"
                      for p in positions[:12]]
            _grid(run_dir, images, predictions, positions[:12], titles, cam, opacity, f"label_{what}",
                  "None.")


def _confused_labels(predictions: LabelSetPredictions, images, class_names: list[str]) -> None:
    """Which label is missed while which other is added to the same image, as a matrix and its frequent pairs."""
    st.subheader("Missed one label, added another")
    st.caption("Each row is a label the model missed, each column a label it added to the same image: the label "
               "sets' counterpart of a confusion matrix. The diagonal is always empty.")
    matrix = missed_while_added(predictions)
    st.plotly_chart(confusion_figure(matrix, class_names, axes=("Missed", "Added")), key="labels_confusion",
                    width="content")
    pairs = most_confused_labels(matrix, class_names)
    if not pairs:
        st.success("No image had one label missed while another was added.")
        return
    table = st.dataframe([{"missed": a, "added": b, "images": n} for a, b, n in pairs[:20]], hide_index=True,
                         width="content", on_select="rerun", selection_mode="single-row", key="labels_pairs")
    rows = table.selection.rows if table else []
    a, b, n = pairs[rows[0] if rows and rows[0] < min(len(pairs), 20) else 0]
    st.caption(md(f"{a} missed while {b} was added: {n} images, highest loss first"
                  + ("" if rows else " (click a row to open another pair)")))
    positions = pair_positions(predictions, class_names.index(a), class_names.index(b))[:8]
    titles = [row.title for row in image_mistakes(predictions, class_names, positions)]
    _grid(None, images, predictions, positions, titles, None, 0.0, "labels_pair_images", "None.")


def _top_losses(run_dir: Path, predictions: LabelSetPredictions, images, class_names: list[str],
                worst: int) -> None:
    """The images with the highest loss, titled with their set and what was missed and added, with Grad-CAM of a
    chosen label."""
    st.subheader("Top losses")
    st.caption("The images the model was most wrong about: often a mislabelled image, or a hard one.")
    first, second, third, fourth = st.columns(4)
    k = first.slider("Top losses to show", 4, 24, 12, step=4, key="labels_k")
    show_cam = second.toggle("Grad-CAM heat map", value=True, key="labels_loss_cam")
    name = third.selectbox("of the label", class_names, index=worst, disabled=not show_cam, key="labels_cam_of",
                           help="Where the model's evidence for this label lies in each image; the label with the "
                                "worst F1 first.")
    opacity = fourth.slider("Heat map opacity", 0.0, 1.0, 0.45, disabled=not show_cam, key="labels_loss_opacity")
    cam = class_names.index(name) if show_cam else None
    if show_cam:
        _cam_note(run_dir)
    rows = top_losses(predictions, class_names, k)
    _grid(run_dir, images, predictions, np.array([row.position for row in rows], dtype=np.int64),
          [row.title for row in rows], cam, opacity,
          "labels_top_losses", "No validation image.")
    st.caption(f"Titles read the image's true label set, then {MINUS} before each label it missed and + before each "
               "it was falsely given, then its loss (binary cross-entropy averaged over the labels).")
