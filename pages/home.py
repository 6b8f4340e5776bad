"""Home: what transfer learning is, the path through the app, and where the user stands."""
import streamlit as st

from core.data.sources import source_label
from pages._common import current_run_dir, route_through_app
from pages._text import md

route_through_app()

st.title("Transfer Learning Studio")
st.markdown(
    "**Transfer learning** starts from a network that already learned to see on ImageNet's 1.2 million photos, "
    "replaces its last layer with a new one for *your* classes, and trains briefly on your images. The early "
    "layers already detect edges, colours and textures, so a few minutes of training — seconds on small "
    "images — give a model that would take days to learn from scratch."
)
st.image("assets/pipeline.svg", caption="A pretrained body keeps what it knows; a new head learns your classes.")

st.subheader("The path")
steps = [  # every page, in the order a first project visits them
    ("pages/data.py", "1 · Data", ":material/photo_library:", "bring or make a dataset; see its classes and health"),
    ("pages/fix.py", "2 · Fix", ":material/healing:", "find images whose label looks wrong, and mend them"),
    ("pages/map.py", "3 · Map", ":material/scatter_plot:", "see the whole dataset at once, and its odd images"),
    ("pages/train.py", "4 · Train", ":material/model_training:",
     "pick a backbone, image and batch size; watch it learn"),
    ("pages/interpret.py", "5 · Interpret", ":material/grid_on:",
     "see which classes the model confuses, and how far to trust it"),
    ("pages/layers.py", "6 · Layers", ":material/layers:", "look at filters, activations and attributions"),
    ("pages/predict.py", "7 · Predict", ":material/image_search:", "try it on your own photos or the camera"),
    ("pages/runs.py", "8 · Runs", ":material/history:", "compare runs, reproduce, export and serve one"),
]
for row in (steps[:4], steps[4:]):
    for column, (page, label, icon, what) in zip(st.columns(4), row):
        with column:
            st.page_link(page, label=label, icon=icon)
            st.caption(what)

st.subheader("Where you are")
run_dir = current_run_dir()
left, right = st.columns(2)
left.metric("Dataset", md(source_label(st.session_state["data"])))
right.metric("Run", md(run_dir.name) if run_dir else "none yet")
