"""The Data page's samples, and what it shows of a multi-label dataset's label sets (core.data.multilabel)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from core.data.images import LabeledImages
from core.data.multilabel import RARE_LABEL
from pages._text import md

SAMPLES = 20


def sample_picks(data: LabeledImages) -> tuple[list[int], list[str]]:
    """(indices, captions) of up to 20 images to show: two of each class; of a multi-label set, seeded picks with
    their label sets ("no label" for an image without one)."""
    rng = np.random.default_rng(0)
    labels = data.labels.numpy()
    if data.multi_label:
        picks = sorted(int(i) for i in rng.choice(len(data), size=min(SAMPLES, len(data)), replace=False))
    else:
        picks = [int(i) for label in range(len(data.class_names))
                 for i in rng.choice(np.flatnonzero(labels == label), size=min(2, int((labels == label).sum())),
                                     replace=False)][:SAMPLES]
    return picks, [data.label_of(i) for i in picks]


def label_sets_section(summary: dict) -> None:
    """Labels per image, the pairs of labels most often on one image, the images with no label, the rare labels."""
    st.subheader("Labels per image")
    spread = summary.get("per_image") or {}
    if spread:
        st.caption(f"Each image carries {spread['min']}–{spread['max']} labels (median {spread['median']:g}). A run "
                   "learns a yes or no for every label, and the Fix page finds labels probably missing or extra; "
                   "what to collect next plans each label; the Map colours images by a chosen label.")
    for title, rows in [("Labels most often on one image together",
                         [{"label": a, "with": b, "images": n} for a, b, n in summary.get("co_occurrence", [])]),
                        ("Images with no label", [{"file": name} for name in summary.get("no_label", [])]),
                        (f"Labels on fewer than {RARE_LABEL} images (too rare to learn well)",
                         [{"label": label} for label in summary.get("rare", [])])]:
        if rows:
            with st.expander(f"{md(title)} ({len(rows)})"):
                st.dataframe(rows, hide_index=True, width="stretch")
