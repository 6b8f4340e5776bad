"""Map: every image of the dataset in 2-D (UMAP of the network's features), coloured by label, split, a run's
prediction, right/wrong or suspect score; a box or lasso opens the chosen images in the Fix page's review; the
outliers, the images least like any other, listed with the reason. Label sets (several labels per image) are coloured
by whether each image carries a chosen label, and reviewed as sets (pages._map_labels)."""
import html

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.data.sources import source_label
from core.errors import DataError
from core.runs import store
from core.runs.folder import RunFolder
from core.runs.labelsets import is_multi_label, run_thresholds
from pages._common import (
    current_config,
    dataset,
    edits_stamp,
    model_key,
    route_through_app,
    run_images,
    run_item_names,
    run_model,
)
from pages._hover import hover_thumbnails
from pages._map_labels import label_set_run_map, review_images, set_colour, set_hover, trained_label_sets
from pages._review import edit_notice, label_review
from pages._text import md

route_through_app()
PRETRAINED = "the pretrained network (the dataset as it is now)"
SHOWN = 60  # images a selection opens in the review at most


@st.cache_data(show_spinner="Placing every image: features, neighbours, then UMAP…", max_entries=4)
def pretrained_map(source: str, label_regex: str, resize: str, stamp: str):
    """(DatasetMap, validation mask) of the dataset as its edits leave it, from the pretrained body's features."""
    import dataclasses

    from core.data.images import resize_uint8
    from core.fix.mend import valid_mask
    from core.fix.suspects import pretrained_features
    from core.inspect.embedding import feature_size, map_dataset

    data = dataset(source, 64, label_regex, resize)
    size = feature_size(len(data))
    seen = data if size == 64 else dataclasses.replace(data, images=resize_uint8(data.images, size))
    return map_dataset(pretrained_features(seen), data.labels), valid_mask(data).numpy()


@st.cache_data(show_spinner="Running the run's model over its images, then UMAP…", max_entries=4)
def run_map(run_dir: str, key: str, labels: np.ndarray, _model, _images):
    """(DatasetMap, predicted class per image) from a trained run's own features (its head's input)."""
    import torch

    from core.inspect.embedding import map_dataset
    from core.inspect.trust import features_and_logits

    features, logits = features_and_logits(_model, _images)
    predicted = logits.argmax(1)
    return map_dataset(features, torch.from_numpy(labels)), predicted.numpy()


def scatter(positions: np.ndarray, colour: np.ndarray | list, hover: list[str], title: str) -> go.Figure:
    """One trace per category (a legend to click), or one trace on a colour scale for scores."""
    figure = go.Figure()
    if isinstance(colour, np.ndarray) and colour.dtype.kind == "f":
        figure.add_trace(go.Scattergl(x=positions[:, 0], y=positions[:, 1], mode="markers", text=hover,
                                      customdata=np.arange(len(positions)), hovertemplate="%{text}<extra></extra>",
                                      marker={"size": 5, "color": colour, "colorscale": "Viridis",
                                              "colorbar": {"title": {"text": title}}}))
    else:
        colour = np.asarray(colour, dtype=object)
        for name in sorted(set(colour.tolist())):
            rows = np.flatnonzero(colour == name)
            figure.add_trace(go.Scattergl(x=positions[rows, 0], y=positions[rows, 1], mode="markers",
                                          name=html.escape(str(name)), text=[hover[i] for i in rows],
                                          customdata=rows, hovertemplate="%{text}<extra></extra>",
                                          marker={"size": 5}))
    figure.update_layout(height=620, margin={"l": 0, "r": 0, "t": 30, "b": 0}, dragmode="lasso",
                         legend={"title": {"text": title}}, xaxis={"visible": False},
                         yaxis={"visible": False, "scaleanchor": "x"})
    return figure


st.title("Map")
config = current_config()
source = config.data
st.text(f"Dataset: {source_label(source)}")
st.caption("Every image placed so that images the network sees as alike lie close together (UMAP of its features). "
           "Hover a point for its image, file and labels; draw a box or a lasso around a region to review those images "
           "as on the Fix page.")
edit_notice(source)
runs_here = [run.run_id for run in store.list_runs() if run.has_predictions and not run.broken
             and run.config.data == source]
basis = st.selectbox("Features from", [PRETRAINED, *runs_here], key="map_basis",
                     format_func=lambda choice: choice if choice == PRETRAINED else f"run {choice}'s model "
                     "(the images it trained and validated on)")
if not st.toggle("Draw the map", key="draw_map", help="Seconds for a few thousand images at 64 px on a CPU."):
    st.stop()

try:
    if basis == PRETRAINED:
        data = dataset(source, 64, config.label_regex, config.resize)
        found, valid = pretrained_map(source, config.label_regex, config.resize, edits_stamp(source))
        names, class_names, labels = list(data.item_names), list(data.class_names), data.labels.numpy()
        images, predicted = data.images, None
    else:
        run_dir = store.runs_root() / basis
        model, class_names, _ = run_model(run_dir)
        images, names = run_images(run_dir), run_item_names(run_dir)
        folder = RunFolder(run_dir)
        items = folder.data_items()
        if is_multi_label(folder):
            labels = trained_label_sets(items, names, class_names)
            found, predicted = label_set_run_map(str(run_dir), model_key(run_dir), labels, tuple(
                run_thresholds(folder, len(class_names))), model, images)
        else:
            labels = np.array([class_names.index(items[name]) for name in names])
            found, predicted = run_map(str(run_dir), model_key(run_dir), labels, model, images)
        valid = np.zeros(len(names), dtype=bool)
        with np.load(folder.predictions_path) as saved:
            valid[saved["item_ids"]] = True
except (DataError, ValueError, KeyError, OSError) as error:
    st.error(f"The map cannot be drawn: {md(error)}")
    st.stop()

shared = {"split": np.where(valid, "validation", "training").tolist(), "outlier score": found.outlier_scores()}
if labels.ndim == 2:  # label sets
    colour, colouring = set_colour(labels, class_names, predicted, shared, source, config.label_regex)
    hover = set_hover(names, labels, class_names, predicted)
else:
    label_names = [class_names[i] for i in labels]
    colourings = ["label", *shared] + (["prediction", "right or wrong"] if predicted is not None
                                       else ["suspect score (label errors)"])
    colouring = st.radio("Colour by", colourings, horizontal=True, key="map_colour")
    colour = {"label": label_names, **shared}.get(colouring)
    if colouring == "prediction":
        colour = [class_names[i] for i in predicted]
    elif colouring == "right or wrong":
        colour = np.where(predicted == labels, "right", "wrong").tolist()
    elif colouring.startswith("suspect"):
        colour = np.asarray(label_review(source, config.label_regex)["against"], dtype=np.float32)
    hover = [html.escape(f"{name} · label {label}" + (f" · predicted {class_names[p]}" if predicted is not None
                                                      else ""))
             for name, label, p in zip(names, label_names, predicted if predicted is not None else labels)]
review_with = {"images": images, "names": names, "labels": labels, "class_names": class_names, "source": source,
               "label_regex": config.label_regex}
event = st.plotly_chart(scatter(found.positions, colour, hover, colouring), key="map_chart", on_select="rerun",
                        selection_mode=("points", "box", "lasso"), width="stretch")
thumbs_key = f"{source}|{edits_stamp(source)}" if basis == PRETRAINED else f"run {basis}|{model_key(run_dir)}"
with_thumbs = hover_thumbnails("map_chart", images, thumbs_key)
if with_thumbs < len(names):
    st.caption(f"A thumbnail on hover for {with_thumbs:,} of the {len(names):,} images (a random sample, to keep the "
               "page light); select a region to see any image.")
# item access: the event as the chart sends it, or as a test puts it in st.session_state (a plain dict)
chosen = sorted({int(point["customdata"]) for point in (event["selection"]["points"] if event else [])
                 if "customdata" in point})
if chosen:
    shown = chosen[:SHOWN]
    st.subheader(f"Selected: {len(chosen)} image(s)")
    if len(chosen) > SHOWN:
        st.caption(f"Reviewing the first {SHOWN}; draw a smaller region to see the others.")
    if review_images("map", shown, view="map", **review_with):
        st.rerun()

st.subheader("Outliers: the images least like any other")
review = found.outliers
st.caption(f"Each image's distance to its nearest images in the network's eyes; {review.flagged} stand out from "
           "the rest (a photo of something else, a blank or broken frame, a drawing among photos). Least alike "
           "first.")
if review.outliers:
    count = st.slider("Outliers to review", 6, min(60, max(6, len(review.outliers))), 12, step=6,
                      key="outliers_shown") if len(review.outliers) > 12 else len(review.outliers)
    top = review.outliers[:count]
    for outlier in top[:count]:
        st.text(f"{names[outlier.index]}: {review.reason(outlier, labels, tuple(class_names))}")
    if review_images("outliers", [o.index for o in top], view="outliers", **review_with):
        st.rerun()
