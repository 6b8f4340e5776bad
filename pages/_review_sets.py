"""Fixing label sets (multi-label) where the Fix page shows them: each image with its labels, the labels probably
missing (+) and extra (−), and a decision: no change, accept the suggested set, keep, set the labels chosen in its
box, or remove. One button records them as one batch of edits, undone on the Fix page like any other; a new label
set is written "a;b" (core.data.edits), ";" for an image left with no label. Names and labels are plain text."""
from __future__ import annotations

import numpy as np
import streamlit as st

from pages._review import KEEP, NO_CHANGE, REMOVE, record

ACCEPT, CHOSEN = "accept the suggested labels", "set the labels chosen below"


def written(labels: tuple[str, ...]) -> str:
    """A label set as the edit log keeps it: "a;b", and ";" for no label (a relabel needs a text)."""
    return ";".join(labels) or ";"


def caption(name: str, labels: tuple[str, ...], suggested: tuple[str, ...] | None, against: float | None) -> str:
    """What a person reads under an image: its file, its labels, the labels probably missing and extra."""
    lines = [name, f"labels: {'; '.join(labels) or 'no label'}"]
    if suggested is not None:
        lines += [f"+ {label} (probably missing)" for label in suggested if label not in labels]
        lines += [f"− {label} (probably extra)" for label in labels if label not in suggested]
    if against is not None:
        lines.append(f"{against:.0%} of the evidence against its labels")
    return "\n".join(lines)


def label_set_grid(key: str, images: np.ndarray, names: list[str], labels: list[tuple[str, ...]],
                   class_names: list[str], *, source: str, view: str, label_regex: str = "",
                   suggested: list[tuple[str, ...]] | None = None, against: list[float] | None = None,
                   columns: int = 4) -> bool:
    """Images (N, S, S, 3) uint8 with their label sets and a decision each; returns True when a batch of edits was
    just recorded. `suggested`: the label set the evidence gives each image; `against`: how much of it is against
    the set it has (0-1)."""
    with st.form(f"review:{key}", border=False):
        picks = []
        for start in range(0, len(names), columns):
            for column, i in zip(st.columns(columns), range(start, min(start + columns, len(names)))):
                column.image(images[i], width="stretch")
                column.text(caption(names[i], labels[i], suggested[i] if suggested else None,
                                    against[i] if against else None))
                options = [NO_CHANGE, *([ACCEPT] if suggested else []), KEEP, CHOSEN, REMOVE]
                decision = column.selectbox("Decision", options, key=f"{key}:{names[i]}",
                                            label_visibility="collapsed")
                chosen = column.multiselect("Labels", class_names, default=list(labels[i]),
                                            key=f"{key}:{names[i]}:labels", placeholder="no label",
                                            help=f"Used when the decision is \"{CHOSEN}\".")
                picks.append((decision, tuple(sorted(chosen))))
        left, right = st.columns(2)
        apply = left.form_submit_button("Record these decisions", type="primary", icon=":material/check:")
        accept = right.form_submit_button("Accept all suggested sets", disabled=not suggested,
                                          help="Takes every suggested set at once, except where you chose a decision "
                                               "yourself: that one is recorded as you chose it. Undo on the Fix "
                                               "page.")
    if not (apply or accept):
        return False
    # as on one label per image: a decision a person chose is recorded as chosen, whichever button sent it
    edits = [_edit(name, current, ACCEPT if accept and decision == NO_CHANGE else decision, chosen,
                   suggested[i] if suggested else current)
             for i, (name, current, (decision, chosen)) in enumerate(zip(names, labels, picks))]
    return record(source, [edit for edit in edits if edit], view, label_regex)


def _edit(name: str, labels: tuple[str, ...], decision: str, chosen: tuple[str, ...],
          suggested: tuple[str, ...]) -> dict | None:
    """One decision as an edit; None for no change. A set chosen as it already was counts as reviewed and kept."""
    if decision == NO_CHANGE:
        return None
    if decision == REMOVE:
        return {"file": name, "label": None, "was": written(labels)}
    new = suggested if decision == ACCEPT else chosen
    if decision == KEEP or tuple(sorted(new)) == tuple(labels):
        return {"file": name, "keep": True}
    return {"file": name, "label": written(tuple(sorted(new))), "was": written(labels)}


def label_sets_of(class_names: tuple[str, ...], rows: np.ndarray) -> list[tuple[str, ...]]:
    """Each image's label set from its row of yes/no (N, C) bool."""
    names = np.asarray(class_names, dtype=object)
    return [tuple(names[row]) for row in rows]
