"""Data: choose or bring a dataset, see its health report, and preview what the network will see."""
import time
from pathlib import Path

import plotly.express as px
import streamlit as st

from core.config import FASTAI_AUGMENT, RESIZE_METHODS
from core.data.archive import data_root, unpack, unpacked_datasets
from core.data.augment import preview
from core.data.builtin import BUILTIN_DATASETS
from core.data.collect import made_datasets, made_root
from core.data.layouts import PETS_REGEX
from core.data.mapped import where_held
from core.data.sources import source_label
from core.errors import DataError
from pages._collect import dataset_builder
from pages._common import current_augment, dataset, health_report, route_through_app
from pages._figures import image_grid, to_hwc
from pages._labelsets import label_sets_section, sample_picks
from pages._plan import plan_section
from pages._text import md, plot

route_through_app()
state = st.session_state
BUILTIN, UPLOAD, IMPORTED, FOLDER, MADE = SOURCES = ["Built-in dataset", "Upload a .zip", "Imported before",
                                                     "A folder on this machine", "Make my own"]
RESIZE_HELP = {"squish": "stretch the whole image to a square", "crop": "cut the centre square out",
               "pad": "fit it whole and fill the rest with black"}


def imported_before(current: str) -> str:
    """A zip unpacked earlier or a dataset made here, chosen again without uploading; stops when there is none."""
    when = lambda folder: time.strftime("%Y-%m-%d %H:%M", time.localtime(folder.stat().st_mtime))  # noqa: E731
    found = {str(e.folder): f"{e.name} · uploaded {when(e.folder)}" for e in unpacked_datasets()}
    found |= {str(folder): f"{folder.name} · made here" for folder in made_datasets()}
    if not found:
        st.info("Nothing imported yet: a .zip uploaded once, or a dataset made here, is listed here from then on.")
        st.stop()
    options = list(found)
    return st.selectbox("Dataset", options, index=options.index(current) if current in found else 0,
                        format_func=found.get, help="Each zip is unpacked once under the data folder; choosing it "
                        "here uses that copy, so nothing is uploaded again.")


st.title("Data")
current = state["data"]
if "data_source_kind" not in state:  # the widget keeps its own state while the page is shown
    state["data_source_kind"] = (BUILTIN if current.startswith("builtin:") else MADE if current.startswith(
        str(made_root())) else IMPORTED if current.startswith(str(data_root())) else FOLDER)
kind = st.radio("Images from", SOURCES, horizontal=True, key="data_source_kind")

source = current
if kind == BUILTIN:
    names = list(BUILTIN_DATASETS)
    name = st.selectbox("Dataset", names, format_func=lambda n: BUILTIN_DATASETS[n].label,
                        index=names.index(current[8:]) if current[8:] in names else 0)
    st.caption(BUILTIN_DATASETS[name].description)
    source = f"builtin:{name}"
elif kind == UPLOAD:
    upload = st.file_uploader("A .zip of your images: one folder per class, train/ and valid/ folders, a CSV of "
                              "file,label, or names like great_pyrenees_173.jpg", type=["zip"])
    if upload is None:
        st.info("Drop a .zip here. It is unpacked once under the data folder; nothing outside it is ever written. "
                "Zips uploaded before are under **Imported before**.")
        st.stop()
    try:  # unpacked once; a second tab (or the command line) unpacking the same zip at once shares the folder
        extraction = unpack(upload.getvalue(), Path(upload.name).stem, file_name=upload.name)
    except DataError as error:
        st.error(md(error))
        st.stop()
    for entry, reason in extraction.skipped:
        st.warning(f"Not unpacked: {md(entry)} — {md(reason)}.")
    source = str(extraction.folder)
elif kind == IMPORTED:
    source = imported_before(current)
elif kind == MADE:
    source = dataset_builder(current)
    if source is None or not health_report(source).ok:  # the builder says what is still needed
        st.stop()
else:
    typed = st.text_input("Folder path", value="" if current.startswith(("builtin:", str(data_root()))) else current,
                          placeholder="/home/me/pictures/my_dataset",
                          help="Used where it is: nothing is copied or changed in it.")
    if not typed:
        st.stop()
    source = typed.strip()

label_regex = ""
if kind in (UPLOAD, IMPORTED, FOLDER):
    with st.expander("Labels from file names", expanded=bool(state["label_regex"])):
        use_names = st.toggle("Take each image's label from its file name", value=bool(state["label_regex"]))
        pattern = st.text_input("Pattern (a regular expression; its first group is the label)",
                                value=state["label_regex"] or PETS_REGEX, disabled=not use_names,
                                help="The Oxford pets pattern turns great_pyrenees_173.jpg into great_pyrenees.")
        label_regex = pattern if use_names else ""

try:
    report = health_report(source, label_regex)
except DataError as error:
    st.error(md(error))
    st.stop()
(st.success if report.ok else st.error)(md(report.verdict()))
if not report.ok:
    st.caption(f"The dataset in use stays **{md(source_label(current))}** until this one can be trained on.")
    st.stop()
state["data"], state["label_regex"] = source, label_regex

counts, kind = report.class_counts, "label" if report.multi_label else "class"
left, middle, right = st.columns(3)
left.metric("Images", f"{report.n_images:,}")
middle.metric("Labels" if report.multi_label else "Classes", len(counts))
right.metric("Skipped files", len(report.skipped))
split = "its own train/validation split" if report.own_split else \
    "a random 20% of the images held out for validation, every label on two or more images in both parts" \
    if report.multi_label else "a random 20% of each class held out for validation"
st.caption(f"Layout: {md(report.layout)}. Validation: {split}.")

st.subheader(f"Images per {kind}")
figure = px.bar(x=[plot(name) for name in counts], y=list(counts.values()),
                labels={"x": kind, "y": "images", "color": ""},
                color=["much smaller than the largest" if c in report.imbalanced else "balanced" for c in counts],
                color_discrete_map={"balanced": "#1f4e79", "much smaller than the largest": "#d62728"})
figure.update_layout(height=300, margin=dict(l=0, r=0, t=10, b=0), xaxis_type="category", showlegend=bool(
    report.imbalanced))
st.plotly_chart(figure, key="class_counts")
for suggestion in report.suggestions:
    st.info(md(suggestion) + " Set it on the Train page, under More settings → Imbalanced classes.",
            icon=":material/balance:")
if report.sizes.get("width"):
    w, h = report.sizes["width"], report.sizes["height"]
    st.caption(f"Image sizes: width {w['min']}–{w['max']} px (median {w['median']}), "
               f"height {h['min']}–{h['max']} px (median {h['median']}).")
for title, rows in [("Skipped files", [{"file": f, "reason": r} for f, r in report.skipped]),
                    ("Identical files", [{"files": ", ".join(g)} for g in report.duplicates]),
                    ("The same image under two labels", [{"files": ", ".join(g)} for g in report.conflicts]),
                    (f"{'Classes' if kind == 'class' else 'Labels'} too small to split",
                     [{kind: c} for c in report.too_small])]:
    if rows:
        with st.expander(f"{title} ({len(rows)})"):
            st.dataframe(rows, hide_index=True, width="stretch")

if report.multi_label:
    label_sets_section(report.label_sets)
plan_section(source, label_regex, kind)

st.subheader("What the network will see")
resize = st.radio("Make images square by", RESIZE_METHODS, key="resize", persist_state="session", horizontal=True,
                  format_func=lambda m: f"{m} ({RESIZE_HELP[m]})")
size = state["size"]
size_note, size_link = st.columns([4, 1], vertical_alignment="center")
size_note.caption(f"At {size} px, the image size chosen on the Train page (it is set there only): small is fast on "
                  "a CPU; pretrained networks see most at 128–224 px.")
size_link.page_link("pages/train.py", label="Change the size", icon=":material/photo_size_select_large:")
try:
    data = dataset(source, size, label_regex, resize)
except DataError as error:
    st.error(md(error))
    st.stop()
picks, captions = sample_picks(data)
st.plotly_chart(image_grid(to_hwc(data.images[picks].numpy()), captions, columns=10), key="samples")
st.caption(where_held(data.images))
st.caption("Each image is then normalized with ImageNet's channel mean and standard deviation — the statistics the "
           "pretrained layers learned with — so the app does that for you.")

st.subheader("Augmentation")
st.caption("Random changes to each training image, new every epoch, so the model learns the object rather than the "
           "exact pixels. Validation images are never changed. Flipping is wrong for digits and text.")
st.button("Use fastai's standard set (flip, rotate 10°, zoom 1.1, lighting 0.2)", on_click=state.update,
          args=(FASTAI_AUGMENT,))
# bench/augment_cost: digits at 64 px, 5 frozen epochs on 2 CPU threads: 2.0 s without, 19.7 s with fastai's set
# (median 9.9x over 3 repeats), 92.5% against 92.2% accuracy after the frozen phase.
st.warning("**What it costs:** any augmentation turns off the fast frozen phase. Without it the pretrained body "
           "reads each image once and the frozen epochs train only the new head (on the digits at 64 px: 2 s); with "
           "it, every frozen epoch runs the whole network over freshly changed images (20 s, about **10× slower**), "
           "and the later epochs cost the same either way. **Which to pick:** leave it off for a first run and for "
           "digits or text; turn it on for photos when the validation loss rises while the training loss falls "
           "(over-fitting), or for small datasets trained many epochs.", icon=":material/timer:")
columns = st.columns(4)
columns[0].toggle("Flip left-right", key="flip", persist_state="session")
columns[1].slider("Rotate up to (degrees)", 0.0, 30.0, step=1.0, key="rotate", persist_state="session")
columns[2].slider("Zoom in up to", 1.0, 1.5, step=0.05, key="zoom", persist_state="session")
columns[3].slider("Lighting change up to", 0.0, 0.5, step=0.05, key="lighting", persist_state="session")
augment = current_augment()
if augment.active:
    shown = preview(augment, data.images[picks[:4]], copies=6)
    st.plotly_chart(image_grid(to_hwc(shown.numpy()), [caption for caption in captions[:4] for _ in
                                                       range(6)], columns=6), key="augmented")
    st.caption("Six random versions of each of four images, as the network will see them in training.")
else:
    st.caption("No augmentation: every epoch shows the images as they are (fastest, and right for digits).")
