"""Interpret: where a finished run's model goes wrong, from its validation predictions (a run of label sets:
pages/_interpret_labels.py)."""
import html

import numpy as np
import streamlit as st

from core.inspect.attribution import grad_cam_layer, grad_cam_note
from core.inspect.interpret import (
    confusion_matrix,
    most_confused,
    normalize_rows,
    pair_positions,
    per_class_metrics,
    top_losses,
    typical_positions,
)
from core.inspect.labelsets import LabelSetPredictions
from core.runs.folder import RunFolder
from pages._common import (
    cached_attribution,
    model_key,
    pick_finished_run,
    route_through_app,
    run_images,
    run_item_names,
    run_model,
    run_predictions,
)
from pages._figures import confusion_figure, image_grid, overlay_grid, to_hwc
from pages._interpret_labels import label_sets_view
from pages._report import run_report_html
from pages._review import edit_notice, retrain_button, review_grid
from pages._text import md
from pages._trust import trust_section

route_through_app()

st.title("Interpret")
run_dir = pick_finished_run("to see what the model confuses")
if run_dir is None:
    st.stop()
if "last_edit_batch" in st.session_state:
    edit_notice(RunFolder(run_dir).config().data)
    retrain_button(RunFolder(run_dir).config(), "interpret")

class_names = RunFolder(run_dir).class_names()
config = RunFolder(run_dir).config()
predictions = run_predictions(run_dir)
images = run_images(run_dir)
if isinstance(predictions, LabelSetPredictions):  # several labels per image: views of their own
    label_sets_view(run_dir, predictions, images, class_names)
    st.stop()
matrix = confusion_matrix(predictions.targets, predictions.predicted, len(class_names))


def images_at(positions: np.ndarray) -> np.ndarray:
    """Validation images at these positions of the predictions, (N, S, S, 3) uint8."""
    return to_hwc(images[predictions.item_ids[positions]].numpy())


run_items = run_item_names(run_dir)  # image names in the order predictions' item ids count them


def fix_labels(positions: np.ndarray, key: str, view: str) -> None:
    """Relabel, remove or keep the images at these positions (fastai's ImageClassifierCleaner)."""
    with st.expander("Fix these labels"):
        if not run_items:
            st.caption("This run is older than the record of its images; retrain it to fix its data here.")
            return
        names = [run_items[int(predictions.item_ids[p])] for p in positions]
        if review_grid(key, images_at(positions), names, [class_names[predictions.targets[p]] for p in positions],
                       class_names, source=config.data, view=view, label_regex=config.label_regex,
                       suggested=[class_names[predictions.predicted[p]] for p in positions]):
            st.rerun()


def gallery(positions: np.ndarray, empty: str, limit: int = 16, columns: int = 8, key: str = "") -> None:
    if len(positions) == 0:
        st.caption(empty)
        return
    positions = positions[:limit]
    titles = [f"{class_names[predictions.predicted[p]]} · p={predictions.probs[p].max():.2f}" for p in positions]
    st.plotly_chart(image_grid(images_at(positions), titles, columns=columns), key=key)


mistakes = int((predictions.predicted != predictions.targets).sum())
left, middle, right = st.columns(3)
left.metric("Validation accuracy", f"{predictions.accuracy:.1%}")
middle.metric("Error rate", f"{1 - predictions.accuracy:.1%}")
right.metric("Mistakes", f"{mistakes} of {len(predictions.targets)}")

st.subheader("Confusion matrix")
st.caption("Each row is the actual class, each column what the model predicted: the diagonal is right, everything "
           "off it is a mistake. Click a cell (or choose it on the right) to see its images beside the matrix.")
normalized = st.toggle("Show each row as shares of its class", help="Divides each row by the number of images of "
                       "that class, so small classes' mistakes stand out as much as big ones'.")
figure = confusion_figure(normalize_rows(matrix) if normalized else matrix, class_names, normalized)
matrix_column, cell_column = st.columns([figure.layout.width, 360], gap="medium")  # the cell's images beside it
event = matrix_column.plotly_chart(figure, key="confusion", on_select="rerun", selection_mode="points",
                                   width="content")
clicked = [(html.unescape(str(p["y"])), html.unescape(str(p["x"])))  # the matrix names its axes escaped for plotly
           for p in (event.selection.points if event else []) if "x" in p and "y" in p]
if clicked and clicked[-1] != st.session_state.get("last_clicked_cell"):
    st.session_state["last_clicked_cell"] = clicked[-1]
    st.session_state["cell_actual"], st.session_state["cell_predicted"] = clicked[-1]
pairs = most_confused(matrix, class_names)
if "cell_actual" not in st.session_state or st.session_state["cell_actual"] not in class_names:
    first = pairs[0] if pairs else (class_names[0], class_names[0], 0)
    st.session_state["cell_actual"], st.session_state["cell_predicted"] = first[0], first[1]
with cell_column:
    left, right = st.columns(2)
    actual = left.selectbox("Actual class", class_names, key="cell_actual")
    predicted = right.selectbox("Predicted as", class_names, key="cell_predicted")
    cell = pair_positions(predictions, class_names.index(actual), class_names.index(predicted))
    st.caption(f"{len(cell)} validation images of **{md(actual)}** predicted as **{md(predicted)}**, surest first.")
    gallery(cell, "No image falls in this cell.", limit=12, columns=3, key="cell_gallery")
if len(cell) and actual != predicted:
    fix_labels(cell[:16], "cell", "confusion matrix")

st.subheader("Most confused")
st.caption("The pairs of classes the model mixes up most often (fastai's `most_confused`).")
largest = max((count for *_, count in pairs), default=1)
min_val = st.slider("Show pairs confused at least this many times", 1, max(2, largest), 1,
                    help="fastai's most_confused(min_val=...)")
shown = most_confused(matrix, class_names, min_val)
if shown:
    table = st.dataframe([{"actual": a, "predicted": p, "count": n} for a, p, n in shown], hide_index=True,
                         width="content", on_select="rerun", selection_mode="single-row", key="most_confused")
    rows = table.selection.rows if table else []
    a, p, n = shown[rows[0] if rows and rows[0] < len(shown) else 0]
    st.markdown(f"**{md(a)}** mistaken for **{md(p)}**, {n} times"
                + ("" if rows else " (click a row to open another pair)"))
    mistaken, typical = st.columns(2)
    with mistaken:
        st.caption(f"**{md(a)}** images the model called **{md(p)}**")
        gallery(pair_positions(predictions, class_names.index(a), class_names.index(p)), "", limit=8, columns=4,
                key="mistaken")
    fix_labels(pair_positions(predictions, class_names.index(a), class_names.index(p))[:12], "pair", "most confused")
    with typical:
        st.caption(f"Typical **{md(p)}** images, as the model sees them")
        gallery(typical_positions(predictions, class_names.index(p), 8), f"No {md(p)} image was predicted right.",
                limit=8, columns=4, key="typical")
else:
    st.success(f"No pair of classes is confused {min_val} times or more.")

st.subheader("Top losses")
st.caption("The images the model was most wrong about (or right but least sure): often mislabelled data, or a "
           "hard case.")
left, middle, right = st.columns(3)
k = left.slider("Top losses to show", 4, 24, 12, step=4)
show_cam = middle.toggle("Grad-CAM heat map", value=True)
opacity = right.slider("Heat map opacity", 0.0, 1.0, 0.45, disabled=not show_cam)
worst = top_losses(predictions, k)
heats = None
if show_cam:
    model, _, _ = run_model(run_dir)
    layer = grad_cam_layer(model, config.size)
    if layer is None:
        st.info(md(grad_cam_note(layer, config.size)), icon=":material/blur_on:")
    else:
        st.caption(md(grad_cam_note(layer, config.size)))
        heats = cached_attribution(model_key(run_dir), f"top_losses:{k}",
                                   tuple(int(predictions.predicted[p]) for p in worst), "grad_cam", model,
                                   images[predictions.item_ids[worst]])
titles = [f"{class_names[predictions.targets[p]]}→{class_names[predictions.predicted[p]]}\n"
          f"loss {predictions.losses[p]:.2f} · {predictions.probs[p, predictions.predicted[p]]:.0%} sure"
          for p in worst]
st.plotly_chart(overlay_grid(images_at(worst), heats, titles, columns=4, opacity=opacity, height_per_row=230),
                key="top_losses")
st.caption("Titles read actual→predicted, then loss · probability of the prediction.")
fix_labels(worst, "top_losses", "top losses")

trust_section(run_dir, predictions, images, len(class_names))

st.subheader("Per-class metrics")
st.caption("Precision: of the images called this class, the share that were. Recall: of this class's images, the "
           "share found. Worst first.")
st.dataframe([{"class": m.class_name, "precision": round(m.precision, 3), "recall": round(m.recall, 3),
               "f1": round(m.f1, 3), "support": m.support} for m in per_class_metrics(predictions, class_names)],
             hide_index=True, width="content", key="per_class")

st.subheader("Share this run")
model, _, _ = run_model(run_dir)
st.download_button("Download an HTML report", lambda: run_report_html(run_dir, model, images, predictions, class_names),
                   file_name=f"{run_dir.name}-report.html", mime="text/html", on_click="ignore",
                   icon=":material/download:", help="Settings, curves, confusion matrix, most-confused pairs and top "
                                                     "losses in one file that opens in any browser, without the app.")
