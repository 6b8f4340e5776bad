"""Fixing labels where mistakes are shown, as fastai's ImageClassifierCleaner does: each image with "no change",
"keep", "remove" or "relabel as …", several at a time; one button records them as one batch of edits
(core.data.edits), undone on the Fix page. Names and labels from the dataset are shown as plain text."""
from __future__ import annotations

import numpy as np
import streamlit as st

from core.errors import DataError
from core.runs import store
from pages._common import edits_stamp, select_run
from pages._text import md

NO_CHANGE, KEEP, REMOVE, RELABEL = "no change", "keep: the label is right", "remove from the dataset", "relabel as "


def review_grid(key: str, images: np.ndarray, names: list[str], labels: list[str], class_names: list[str], *,
                source: str, view: str, suggested: list[str] | None = None, columns: int = 6,
                label_regex: str = "", against: list[float] | None = None) -> bool:
    """Images (N, S, S, 3) uint8 with a decision each; returns True when a batch of edits was just recorded.
    `against`: for each image, how much of the evidence is against its label (0-1), shown beside the suggestion."""
    with st.form(f"review:{key}", border=False):
        choices = []
        for start in range(0, len(names), columns):
            for column, i in zip(st.columns(columns), range(start, min(start + columns, len(names)))):
                column.image(images[i], width="stretch")
                hint = f"\nlooks like: {suggested[i]}" if suggested and suggested[i] != labels[i] else ""
                hint += f"\n{against[i]:.0%} of the evidence against its label" if against else ""
                column.text(f"{names[i]}\nlabel: {labels[i]}{hint}")
                options = [NO_CHANGE, KEEP, REMOVE, *(RELABEL + c for c in class_names if c != labels[i])]
                choices.append(column.selectbox("Decision", options, key=f"{key}:{names[i]}",
                                                label_visibility="collapsed"))
        left, right = st.columns(2)
        apply = left.form_submit_button("Record these decisions", type="primary", icon=":material/check:")
        accept = right.form_submit_button("Relabel all as suggested", disabled=not suggested,
                                          help="Takes every suggestion at once, except where you chose a decision "
                                               "yourself: that one is recorded as you chose it. Undo on the Fix "
                                               "page.")
    if not (apply or accept):
        return False
    # a decision a person chose is recorded as chosen, whichever button sent it; "Relabel all as suggested" only
    # fills in the images left at "no change"
    edits = [_edit(name, label, choice) if choice != NO_CHANGE else {"file": name, "label": new, "was": label}
             for name, label, choice, new in zip(names, labels, choices, suggested or labels)
             if choice != NO_CHANGE or (accept and new != label)]
    return record(source, edits, view, label_regex)


def _edit(name: str, label: str, choice: str) -> dict:
    if choice == KEEP:
        return {"file": name, "keep": True}
    if choice == REMOVE:
        return {"file": name, "label": None, "was": label}
    return {"file": name, "label": choice[len(RELABEL):], "was": label}


def record(source: str, edits: list[dict], view: str, label_regex: str = "") -> bool:
    """Record a batch and say so; a refusal is a sentence."""
    from core.fix.mend import record_edits

    if not edits:
        st.info("Nothing was chosen: every image says \"no change\".")
        return False
    try:
        batch = record_edits(source, edits, view, label_regex or None)
    except DataError as error:
        st.error(md(error))
        return False
    st.session_state["last_edit_batch"] = (batch, len(edits))
    return True


def edit_notice(config_data: str) -> None:
    """After a batch was recorded: what happened, and the next step."""
    if "last_edit_batch" not in st.session_state:
        return
    batch, n = st.session_state["last_edit_batch"]
    st.success(f"Recorded {n} decision(s) as batch {batch}. Your image files are unchanged; every page and every "
               "new run read the dataset with these fixes. Undo them on the Fix page.")
    st.page_link("pages/fix.py", label="Review all edits, undo, export, or retrain", icon=":material/healing:")


def retrain_button(config, key: str) -> None:
    """Start a run with the same settings on the mended data."""
    if not st.button("Retrain with these fixes", key=f"retrain:{key}", icon=":material/replay:",
                     help="A new run with the same settings; the data is read with every edit in force."):
        return
    busy = store.active_run()
    if busy:
        st.warning(f"Run {md(busy)} is training on this device. Stop it or wait for it to finish, then retrain.")
        return
    run_dir = store.create_run(config)
    store.launch(run_dir)
    select_run(run_dir.name)
    st.switch_page("pages/train.py")


@st.cache_data(show_spinner="Looking for label errors: features of every image, then its neighbours' votes…",
               max_entries=4)
def _label_review(source: str, label_regex: str, stamp: str) -> dict:
    from core.fix.mend import evidence_against, review, review_json

    data, result = review(source, label_regex or None)
    return {**review_json(data, result), "against": evidence_against(data, result)}  # (N,) in dataset order


def label_review(source: str, label_regex: str = "") -> dict:
    """core.fix.mend's review of the dataset as its edits leave it, once for the Fix and Map pages (recomputed when
    the edits change): its suspects and near-duplicates (review_json), and "against", how much of the evidence is
    against each image's label (or label set)."""
    return _label_review(source, label_regex, edits_stamp(source))
