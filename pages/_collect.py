"""The Data page's "make my own" builder: name a dataset, add classes, drop images or take camera photos into
each (one click a photo, with a running count), rename, merge or delete classes, and review single images.
Images are saved as files in a folder per class under the data folder (core.data.collect); changes to what is
there are edits, undone on the Fix page. A dataset of several labels per image, chosen when it is made, is tagged
instead (pages/_collect_tags.py)."""
from __future__ import annotations

import streamlit as st

from core.data.collect import (
    MAX_UPLOAD_BYTES,
    MIN_IMAGES_PER_CLASS,
    add_class,
    add_images,
    create_dataset,
    delete_class,
    is_multi_label,
    made_datasets,
    made_root,
    rename_class,
    shortfall,
)
from core.data.edits import relative_file
from core.errors import DataError
from pages._collect_tags import show_refused, tag_images
from pages._common import forget_dataset_caches
from pages._plan import photograph_next
from pages._review import edit_notice, review_grid
from pages._text import md

NEW = "+ a new dataset"
KINDS = {"One label per image (a folder per class)": False, "Several labels per image (tags)": True}


def dataset_builder(current: str) -> str | None:
    """The folder of the dataset being made, as a source; None while there is none yet."""
    state = st.session_state
    options = [NEW, *(folder.name for folder in made_datasets())]
    if "made_created" in state:  # made in the run before: open it
        state["made_choice"] = state.pop("made_created")
    if state.get("made_choice") not in options:
        state["made_choice"] = next((n for n in options if current == str(made_root() / n)), NEW)
    choice = st.selectbox("Your dataset", options, key="made_choice")
    if choice == NEW:
        with st.form("new_dataset"):
            name = st.text_input("Name", placeholder="my-pets")
            kind = st.radio("Labels", list(KINDS), horizontal=True)
            st.caption("Several labels per image: each image gets every label it shows (a street photo: car, bus, "
                       "person), chosen as you add it. Decided once, when the dataset is made.")
            if st.form_submit_button("Create", type="primary"):
                try:
                    state["made_created"] = create_dataset(name, multi_label=KINDS[kind]).name
                    st.rerun()
                except DataError as error:
                    st.error(md(error))
        return None
    folder = made_root() / choice
    edit_notice(str(folder))
    if is_multi_label(folder):
        tag_images(folder)
        return str(folder)
    counts, items = _contents(folder)
    _add_images(folder, counts)
    _manage_classes(folder, counts, items)
    needs = shortfall(counts)
    if needs or len(counts) < 2:
        st.warning(f"Before training, every class needs at least {MIN_IMAGES_PER_CLASS} images and there must be two "
                   "classes or more.")
        if needs:
            st.text("Still needed: " + "; ".join(f"{name}: {n} more" for name, n in needs.items()))
    return str(folder)


def _contents(folder) -> tuple[dict[str, int], dict[str, str]]:
    """({class: images} including empty classes, {file: label}) as the dataset now reads, edits applied."""
    from pages._common import health_report

    report = health_report(str(folder))
    items = {relative_file(item.path, folder): item.label for item in report.accepted}
    counts = {p.name: 0 for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    for label in items.values():
        counts[label] = counts.get(label, 0) + 1
    return counts, items


def _add_images(folder, counts: dict[str, int]) -> None:
    state = st.session_state
    with st.form("add_class", clear_on_submit=True, border=False):
        left, right = st.columns([3, 1])
        name = left.text_input("New class", placeholder="cat", label_visibility="collapsed")
        if right.form_submit_button("Add a class", icon=":material/add:") and name:
            try:
                add_class(folder, name)
                st.rerun()
            except DataError as error:
                st.error(md(error))
    if not counts:
        st.info("Add a class, then drop images into it or take photos with the camera.")
        return
    st.text("\n".join(f"{c}: {n} image{'s' if n != 1 else ''}" for c, n in counts.items()))  # the running count
    target = st.radio("Add images to", list(counts), horizontal=True, key="made_target", format_func=md)
    round_ = state.setdefault("made_round", 0)  # a new widget key after each save empties the drop zone / camera
    dropped = st.file_uploader(f"Drop images of {md(target)} (many at once)", accept_multiple_files=True,
                               type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"],
                               max_upload_size=MAX_UPLOAD_BYTES >> 20,  # the box says the cap add_images applies
                               key=f"drop:{round_}")
    camera = st.toggle("Use the camera", key="made_camera")
    if camera and len(counts) >= 2 and not shortfall(counts):
        photograph_next(str(folder))
    photo = st.camera_input(f"Take a photo of {md(target)}", key=f"camera:{round_}") if camera else None
    files = [(f.name, f.getvalue()) for f in dropped or []] + ([("camera.jpg", photo.getvalue())] if photo else [])
    if files:
        refused = add_images(folder, target, files)
        state["made_round"] = round_ + 1
        state["made_refused"] = refused
        forget_dataset_caches()
        st.rerun()
    show_refused(state)


def _manage_classes(folder, counts: dict[str, int], items: dict[str, str]) -> None:
    with st.expander("Rename, merge or delete a class; move or remove single images"):
        left, middle, right = st.columns(3)
        chosen = left.selectbox("Class", list(counts), key="manage_class")
        new = middle.text_input("New name (an existing class merges)", key="manage_new_name")
        if middle.button("Rename or merge", disabled=not new or not counts.get(chosen)):
            _apply(lambda: rename_class(folder, items, chosen, new))
        if right.button(f"Delete {md(chosen)}", disabled=not counts.get(chosen)):
            _apply(lambda: delete_class(folder, items, chosen))
        if chosen and counts.get(chosen):
            from pages._common import dataset
            from pages._figures import to_hwc

            data = dataset(str(folder), 64)
            rows = [i for i, label in enumerate(data.labels.tolist()) if data.class_names[label] == chosen][:30]
            if review_grid(f"class:{chosen}", to_hwc(data.images[rows].numpy()), [data.item_names[i] for i in rows],
                           [chosen] * len(rows), list(counts), source=str(folder), view="data"):
                forget_dataset_caches()
                st.rerun()


def _apply(change) -> None:
    try:
        change()
    except DataError as error:
        st.error(md(error))
        return
    forget_dataset_caches()
    st.rerun()
