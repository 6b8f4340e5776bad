"""The dataset builder for a dataset of label sets (several labels per image): choose the labels first, from the
dataset's own or typed new, then drop images or take camera photos; each one is saved with exactly the labels chosen
(core.data.collect writes it into images/ and a row of labels.csv). An image with no label is saved only when that
box is ticked: such images teach the model what shows none of the labels. Renaming a label or changing the labels of
an image already saved is not built here yet."""
from __future__ import annotations

import streamlit as st

from core.data.collect import MAX_UPLOAD_BYTES, MIN_IMAGES_PER_CLASS, add_tagged_images, check_tag, shortfall
from core.errors import DataError
from pages._common import forget_dataset_caches, health_report
from pages._text import md

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]


def tag_images(folder) -> None:
    """Add images with their label sets to the dataset in `folder`, and say what it holds and still needs."""
    try:
        report = health_report(str(folder))
    except DataError as error:  # labels.csv changed by hand into something unreadable
        st.error(md(error))
        return
    counts = report.class_counts if report.multi_label else {}
    labels = _choose_labels(str(folder), list(counts))
    if labels is not None:
        _add(folder, labels)
    _summary(counts, report.n_images if report.multi_label else 0, len(report.label_sets.get("no_label", [])))


def _choose_labels(key: str, known: list[str]) -> list[str] | None:
    """The label set the next images get ([]: deliberately none), or None while no choice is made."""
    chosen_key = f"made_tags:{key}"
    typed = st.session_state.get(chosen_key, [])
    options = sorted(set(known) | set(typed))  # a label typed in keeps its place until an image carries it
    chosen = st.multiselect("Labels of the next images", options, key=chosen_key, accept_new_options=True,
                            placeholder="Choose labels, or type a new one",
                            help="Every label the images show. A new label joins the dataset with its first image.")
    none = st.checkbox("These images show none of the labels", key=f"made_no_tags:{key}", disabled=bool(chosen),
                       help="Images with no label teach the model what shows none of them. Tick only on purpose.")
    st.caption("Choose the labels first: every image you drop or photograph now is saved with exactly these labels.")
    try:
        checked = sorted({check_tag(label) for label in chosen})
    except DataError as error:
        st.error(md(error))
        return None
    return checked if checked or none else None


def _add(folder, labels: list[str]) -> None:
    """The drop zone and the camera; what they bring is saved at once with `labels`."""
    state = st.session_state
    round_ = state.setdefault("made_round", 0)  # a new widget key after each save empties the drop zone / camera
    what = ", ".join(labels) if labels else "none of the labels"
    dropped = st.file_uploader(f"Drop images showing {md(what)} (many at once)", accept_multiple_files=True,
                               type=IMAGE_TYPES, max_upload_size=MAX_UPLOAD_BYTES >> 20, key=f"tags_drop:{round_}")
    camera = st.toggle("Use the camera", key="made_camera")
    photo = st.camera_input(f"Take a photo showing {md(what)}", key=f"camera:{round_}") if camera else None
    files = [(f.name, f.getvalue()) for f in dropped or []] + ([("camera.jpg", photo.getvalue())] if photo else [])
    if files:
        try:
            state["made_refused"] = add_tagged_images(folder, files, labels)
        except DataError as error:
            st.error(md(error))
            return
        state["made_round"] = round_ + 1
        forget_dataset_caches()
        st.rerun()
    show_refused(state)


def show_refused(state) -> None:
    """The files the last drop did not add, each with its reason, as text (once)."""
    refused = state.pop("made_refused", [])
    if refused:
        st.warning("Some files were not added:")
        st.text("\n".join(f"{file}: {reason}" for file, reason in refused))


def _summary(counts: dict[str, int], n_images: int, no_label: int) -> None:
    """The running count of each label's images, and what training still needs."""
    if not n_images:
        st.info("Choose or type the labels, then drop images or take photos with the camera.")
    else:
        lines = [f"{n_images} image{'s' if n_images != 1 else ''}, {no_label} with no label"]
        st.text("\n".join(lines + [f"{c}: {n} image{'s' if n != 1 else ''}" for c, n in counts.items()]))
    needs = shortfall(counts)
    if needs or len(counts) < 2:
        st.warning(f"Before training, every label needs at least {MIN_IMAGES_PER_CLASS} images and there must be two "
                   "labels or more.")
        if needs:
            st.text("Still needed: " + "; ".join(f"{name}: {n} more" for name, n in needs.items()))
