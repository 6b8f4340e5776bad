"""Transfer Learning Studio: routes to the pages and draws the shared sidebar (dataset, run, device)."""
import streamlit as st

from core import runs
from core.sources import source_label
from pages._common import app_frame, current_run_dir, device_label, init_session, select_run
from pages._text import md

st.set_page_config(page_title="Transfer Learning Studio", page_icon="assets/logo.svg", layout="wide")
init_session()
# Progress bars jump to their new value instead of gliding there for half a second (bench/ui_cost: the glide's
# repaints were a third of what Chromium spent watching a run).
st.html("<style>.stProgress * { transition: none !important; }</style>")

navigation = st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/photo_library:"),
    st.Page("pages/fix.py", title="Fix", icon=":material/healing:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/interpret.py", title="Interpret", icon=":material/grid_on:"),
    st.Page("pages/layers.py", title="Layers", icon=":material/layers:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
])

with st.sidebar:
    st.logo("assets/logo.svg", size="large")
    dataset_slot = st.empty()  # filled after the page ran: the Data page may change the dataset
    run_ids = runs.run_ids()
    current = st.session_state.get("run_id")
    if run_ids:
        index = run_ids.index(current) if current in run_ids else None
        chosen = st.selectbox("Run", run_ids, index=index, placeholder="Choose a run", key=f"sidebar_run_{current}")
        if chosen != current:
            select_run(chosen)
    if current_run_dir() is not None:
        st.query_params["run"] = st.session_state["run_id"]  # keep the run in the address across page switches
    device_slot = st.empty()  # finding the device imports torch (~1.5 s, once): named after the page first draws


def show_dataset_and_device() -> None:
    dataset_slot.caption(f"**Dataset** · {md(source_label(st.session_state['data']))}")
    if "device_label" in st.session_state:
        device_slot.caption(f"**Device** · {st.session_state['device_label']}")


# Drawn before the page too: a page that ends early (st.stop) ends the script run, and nothing drawn after it shows.
show_dataset_and_device()
with app_frame():
    navigation.run()
st.session_state["device_label"] = device_label()
show_dataset_and_device()  # the Data page may have changed the dataset
