"""Fix: the images whose label (or, with several labels per image, label set) is probably wrong, near-duplicates,
and every edit made to the dataset, with undo, an export of the mended dataset, and a retrain on it."""
import re
import time

import streamlit as st

from core.data.load import edit_log_for
from core.data.sources import source_label
from core.errors import DataError
from core.fix.mend import mended_zip
from pages._common import current_config, dataset, route_through_app
from pages._figures import to_hwc
from pages._review import edit_notice, label_review, retrain_button, review_grid
from pages._review_sets import label_set_grid, label_sets_of
from pages._text import md

route_through_app()

st.title("Fix")
config = current_config()
source = config.data
st.text(f"Dataset: {source_label(source)}")
st.caption("Edits are recorded under the data folder and applied whenever the dataset is read; the image files "
           "themselves are never changed.")
edit_notice(source)
try:
    log = edit_log_for(source)
except DataError as error:
    st.error(md(error))
    st.stop()

st.subheader("Suspected label errors")
st.caption("Every image is compared with the images most like it (features of the pretrained network at several "
           "depths), and a simple classifier that never saw it guesses its class from the same features; where both "
           "point to another label, confident learning (cleanlab) flags it. Most suspicious first.")
if st.toggle("Look for label errors", key="find_suspects", help="Takes seconds at 64 px on a CPU."):
    try:
        found = label_review(source, config.label_regex)
    except DataError as error:
        st.error(md(error))
        st.stop()
    data = dataset(source, 64, config.label_regex, config.resize)
    position = {name: i for i, name in enumerate(data.item_names)}
    kept = {file for file, decision in log.decisions().items() if decision.get("keep")}
    suspects = [row for row in found["suspects"] if row["file"] not in kept and row["file"] in position]
    if not suspects:
        st.success("No image's label set is contradicted by the evidence." if data.multi_label else
                   "No image's label is contradicted by its neighbours.")
    else:
        limit = 12 if len(suspects) <= 12 else st.slider("Suspects to review", 12, min(60, len(suspects)), 12, step=6)
        shown = suspects[:limit]
        images = to_hwc(data.images[[position[row["file"]] for row in shown]].numpy())
        names, against = [r["file"] for r in shown], [r["score"] for r in shown]
        if data.multi_label:
            st.caption(f"Confident learning for label sets (cleanlab) estimates that {len(suspects)} image(s) here "
                       f"carry a wrong label set, most certain first; reviewing the first {len(shown)}. Under each: "
                       "+ a label the evidence gives it and it lacks, − a label it has and the evidence denies. Accept "
                       "the suggested labels, choose them yourself, keep them, or remove the image.")
            recorded = label_set_grid("labelsets", images, names, [tuple(r["labels"]) for r in shown],
                                      list(data.class_names), source=source, view="suspects",
                                      label_regex=config.label_regex, suggested=[tuple(r["suggested"]) for r in shown],
                                      against=against)
        else:
            st.caption(f"Confident learning estimates that {len(suspects)} image(s) here carry a wrong label, and the "
                       f"list holds those, most certain first; reviewing the first {len(shown)}. Each says how much of "
                       "its neighbours' vote is against its label: where that falls toward 50%, the suggestions are "
                       "right less often, so look before relabelling all.")
            recorded = review_grid("suspects", images, names, [r["label"] for r in shown], list(data.class_names),
                                   source=source, view="suspects", label_regex=config.label_regex,
                                   suggested=[r["suggested"] for r in shown], against=against)
        if recorded:
            st.rerun()
    pairs = found["near_duplicates"]
    st.subheader("Near-duplicates")
    st.caption("Pairs of images that look the same to the network: across training and validation they flatter the "
               "validation score; under two labels one of them is wrong.")
    if not pairs:
        st.caption("None that cross the split or disagree on the label.")
    for n, pair in enumerate(pairs[:10]):
        why = "one in training, one in validation" if pair["crosses_split"] else "different labels"
        st.text(f"{' and '.join(pair['files'])}: {why} (similarity {pair['similarity']:.3f})")
        rows = [position[f] for f in pair["files"] if f in position]
        if len(rows) != 2:
            continue
        if data.multi_label:
            recorded = label_set_grid(f"pair{n}", to_hwc(data.images[rows].numpy()), pair["files"],
                                      label_sets_of(data.class_names, data.labels[rows].numpy()),
                                      list(data.class_names), source=source, view="near-duplicates",
                                      label_regex=config.label_regex)
        else:
            recorded = review_grid(f"pair{n}", to_hwc(data.images[rows].numpy()), pair["files"], pair["labels"],
                                   list(data.class_names), source=source, view="near-duplicates",
                                   label_regex=config.label_regex)
        if recorded:
            st.rerun()

st.subheader("Edits")
batches = log.batches()
if not batches:
    st.caption("No edits yet: relabel or remove images here, or on the Interpret page.")
else:
    summary = log.summary()
    st.caption(f"In force: {summary.relabelled} relabelled, {summary.removed} removed, {summary.kept} reviewed and "
               f"kept, in {summary.batches} batch(es).")
    st.dataframe([{"batch": b["batch"], "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(b.get("time", 0))),
                   "from": b.get("view", ""), "edits": len(b.get("edits", []))} for b in reversed(batches)],
                 hide_index=True, key="batches")
    left, middle, right = st.columns(3)
    if left.button("Undo the last batch", icon=":material/undo:"):
        taken = log.undo()
        st.session_state.pop("last_edit_batch", None)
        st.toast(f"Took back batch {md(taken['batch'])}.")
        st.rerun()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", source_label(source))[:40].strip("-") or "dataset"
    middle.download_button("Export the mended dataset (.zip)", lambda: mended_zip(source, config.label_regex or None),
                           file_name=f"{stem}-mended.zip", mime="application/zip",
                           on_click="ignore", icon=":material/download:")
    with right:
        retrain_button(config, "fix")
