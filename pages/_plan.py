"""What to collect next (core.fix.plan), on the Data page and beside the camera of a dataset made in the app."""
from __future__ import annotations

import html

import plotly.graph_objects as go
import streamlit as st

from core.errors import BrokenRun, DataError
from core.runs import store
from pages._common import edits_stamp
from pages._text import md


@st.cache_data(show_spinner="Reading every image's features…", max_entries=4)
def _inputs(source: str, label_regex: str, stamp: str, run_dir: str | None):
    from core.fix.mend import plan_inputs

    return plan_inputs(source, label_regex or None, None if run_dir is None else store.runs_root() / run_dir)


@st.cache_data(show_spinner="Measuring each class's learning curve…", max_entries=16)
def _plan(source: str, label_regex: str, stamp: str, add: int, run_dir: str | None):
    """The plan; its inputs (the features) are kept apart, so another number of images takes a second."""
    from core.fix.plan import collect_plan

    features, labels, class_names, folds, recall = _inputs(source, label_regex, stamp, run_dir)
    return collect_plan(features, labels, class_names, folds, add=add, **recall)


def collect_plan(source: str, label_regex: str, add: int):
    """The plan, with the recall of the newest finished run trained on this dataset as it is now, if any; None with
    a sentence shown when it cannot be made."""
    stamp = edits_stamp(source)
    runs = [run.run_id for run in store.list_runs() if run.has_predictions and not run.broken
            and run.config.data == source and run.config.label_regex == label_regex]
    for run_id in [*runs[:1], None]:  # the run's classes may differ from today's: then the probe alone
        try:
            return _plan(source, label_regex, stamp, add, run_id)
        except (DataError, BrokenRun) as error:
            reason = error
    st.info(f"No plan for this dataset: {md(reason)}")
    return None


def plan_section(source: str, label_regex: str) -> None:
    st.subheader("What to collect next")
    st.caption("For each class, how well it is recognised now and how well it would be with more training images of "
               "it, from learning curves: a simple classifier on the pretrained network's features, trained again "
               "with fewer images of each class. Classes whose recall would gain most come first.")
    if not st.toggle("Plan what to collect", key="plan_collect", help="Seconds for a few thousand images."):
        return
    add = st.select_slider("Images you could add to a class", [10, 25, 50, 100, 200, 500], value=100, key="plan_add")
    found = collect_plan(source, label_regex, add)
    if found is None:
        return
    for name in found.collect_next[:3]:
        st.text(found.sentence(name))
    st.caption(f"Recall measured on {found.measured_on}, now from {md(found.recall_from)}.")
    figure = go.Figure()
    for row in found.classes:
        figure.add_trace(go.Scatter(x=[n for n, _ in row.curve], y=[r for _, r in row.curve], mode="lines+markers",
                                    name=html.escape(row.name), legendgroup=html.escape(row.name)))
    figure.update_layout(height=360, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="training images of "
                         "the class", yaxis_title="recall (the simple classifier)", xaxis_type="log")
    st.plotly_chart(figure, key="plan_curves")
    st.dataframe([{"class": c.name, "training images": c.train_images, "recall now": round(c.recall, 3),
                   f"with {add} more": round(c.projected_recall, 3)}
                  for c in sorted(found.classes, key=lambda c: found.collect_next.index(c.name))],
                 hide_index=True, key="plan_table")


def photograph_next(folder: str) -> None:
    """Beside the camera: the class whose recall ten more photos would raise most."""
    found = collect_plan(folder, "", 10)
    if found is not None:
        st.info(f"Photograph next: {md(found.sentence(found.collect_next[0]))}.", icon=":material/photo_camera:")
