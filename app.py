"""Transfer Learning Studio: routes to the pages and draws the shared sidebar (dataset, run, device)."""
# Imported before any page can draw a chart: plotly reads pandas (and pyarrow) from sys.modules without importing
# them, and a rerun starts a new script thread while the one it replaces may still be importing pandas (Streamlit's
# fast reruns), so a chart drawn then failed with "partially initialized module 'pandas'" (the Data page after an
# upload, 1 time in 6 here). An import statement waits until the module is whole.
import pandas  # noqa: F401
import streamlit as st

from core.data.sources import source_label
from core.errors import BrokenRun
from core.runs import store
from pages._common import (
    app_frame,
    current_run_dir,
    device_label,
    init_session,
    remember_settings,
    run_notice,
    select_run,
)
from pages._text import md

st.set_page_config(page_title="Transfer Learning Studio", page_icon="assets/logo.svg", layout="wide")
init_session()
# Progress bars jump to their new value instead of gliding there for half a second (bench/ui_cost: the glide's
# repaints were a third of what Chromium spent watching a run). Plotly's toolbar gets a 30 px strip of its own above
# each chart instead of covering its title and labels (the element's fixed flex height grows by the strip).
st.html("<style>.stProgress * { transition: none !important; } "
        ".stElementContainer:has(> div > .stPlotlyChart) { padding-top: 30px; height: auto !important; "
        "flex: 0 0 auto !important; } .stPlotlyChart .js-plotly-plot { overflow: visible !important; } "
        ".stPlotlyChart .modebar-container { top: -30px !important; }</style>")

navigation = st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/photo_library:"),
    st.Page("pages/fix.py", title="Fix", icon=":material/healing:"),
    st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/interpret.py", title="Interpret", icon=":material/grid_on:"),
    st.Page("pages/layers.py", title="Layers", icon=":material/layers:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
])

with st.sidebar:
    st.logo("assets/logo.svg", size="large")
    dataset_slot = st.empty()  # filled after the page ran: the Data page may change the dataset
    found = {run.run_id: run for run in store.list_runs()}
    current = st.session_state.get("run_id")
    if found:
        ids = list(found)
        chosen = st.selectbox("Run", ids, index=ids.index(current) if current in found else None,
                              placeholder="Choose a run", key=f"sidebar_run_{current}",
                              format_func=lambda rid: f"{rid} (broken)" if found[rid].broken else found[rid].label)
        if chosen != current:
            select_run(chosen)
    if current_run_dir() is not None:
        st.query_params["run"] = st.session_state["run_id"]  # keep the run in the address across page switches
    if run_notice():
        st.warning(md(run_notice()), icon=":material/report:")
    if "settings_notice" in st.session_state:  # the settings saved last time could not be used: once, then gone
        st.warning(md(st.session_state.pop("settings_notice")), icon=":material/settings_backup_restore:")
    device_slot = st.empty()  # finding the device imports torch (~1.5 s, once): named after the page first draws


def show_dataset_and_device() -> None:
    dataset_slot.caption(f"**Dataset** · {md(source_label(st.session_state['data']))}")
    if "device_label" in st.session_state:
        device_slot.caption(f"**Device** · {st.session_state['device_label']}")


# Drawn before the page too: a page that ends early (st.stop) ends the script run, and nothing drawn after it shows.
# Every page but Home imports torch anyway, so naming the device first costs them nothing; Home names it after.
if navigation.url_path or "device_label" in st.session_state:
    st.session_state["device_label"] = device_label()
show_dataset_and_device()
try:
    with app_frame():
        try:
            navigation.run()
        except BrokenRun as error:  # a run-folder file damaged after the page chose the run: its sentence, not a trace
            st.error(md(error))
finally:  # also when the page stopped early: what it changed is saved (no drawing here: a stopped run draws nothing)
    remember_settings()
st.session_state["device_label"] = device_label()
show_dataset_and_device()  # the Data page may have changed the dataset
