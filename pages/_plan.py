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
    """The plan (of each class, or of each label for label sets); its inputs (the features) are kept apart, so another
    number of images takes a second."""
    from core.fix.mend import plan_from

    return plan_from(_inputs(source, label_regex, stamp, run_dir), add)


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


_WORDS = {"class": ("of it", " of each class", "Classes"), "label": ("carrying it", "", "Labels")}  # of the caption


def plan_section(source: str, label_regex: str, kind: str = "class") -> None:
    """`kind`: "class", or "label" for label sets."""
    st.subheader("What to collect next")
    more, cut, plural = _WORDS[kind]
    st.caption(f"For each {kind}, how well it is recognised now and how well it would be with more training images "
               f"{more}, from learning curves: a simple classifier on the pretrained network's features, trained again "
               f"with fewer images{cut}. {plural} whose recall would gain most come first.")
    if not st.toggle("Plan what to collect", key="plan_collect", help="Seconds for a few thousand images."):
        return
    add = st.select_slider(f"Images you could add to a {kind}", [10, 25, 50, 100, 200, 500], value=100,
                           key="plan_add")
    found = collect_plan(source, label_regex, add)
    if found is None:
        return
    for name in found.collect_next[:3]:
        st.text(found.sentence(name))
    label_sets = found.kind == "label"
    if label_sets:
        st.caption("Several labels per image: each label is a yes or no of its own, given where its probability "
                   "reaches its threshold (the run's, or 0.5 for the simple classifier). Its recall is the share of "
                   "the images carrying it that are given it; F1 weighs in the images given it wrongly.")
    st.caption(f"Recall measured on {found.measured_on}, now from {md(found.recall_from)}.")
    figure = go.Figure()
    for row in found.classes:
        figure.add_trace(go.Scatter(x=[n for n, _ in row.curve], y=[r for _, r in row.curve], mode="lines+markers",
                                    name=html.escape(row.name), legendgroup=html.escape(row.name)))
    figure.update_layout(height=360, margin={"l": 0, "r": 0, "t": 10, "b": 0}, xaxis_title="training images "
                         f"{'carrying the label' if label_sets else 'of the class'}",
                         yaxis_title="recall (the simple classifier)", xaxis_type="log")
    st.plotly_chart(figure, key="plan_curves")
    order = sorted(found.classes, key=lambda c: found.collect_next.index(c.name))
    st.dataframe([_row(c, add, label_sets) for c in order], hide_index=True, key="plan_table")


def _row(plan, add: int, label_sets: bool) -> dict:
    """A row of the plan's table: a class's, or a label's with its threshold and F1."""
    if not label_sets:
        return {"class": plan.name, "training images": plan.train_images, "recall now": round(plan.recall, 3),
                f"with {add} more": round(plan.projected_recall, 3)}
    return {"label": plan.name, "training images carrying it": plan.train_images, "threshold": round(plan.threshold, 2),
            "recall now": round(plan.recall, 3), "F1 now": round(plan.f1, 3),
            f"with {add} more": round(plan.projected_recall, 3)}


def photograph_next(folder: str) -> None:
    """Beside the camera: the class whose recall ten more photos would raise most."""
    found = collect_plan(folder, "", 10)
    if found is not None:
        st.info(f"Photograph next: {md(found.sentence(found.collect_next[0]))}.", icon=":material/photo_camera:")
