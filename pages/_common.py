"""What several pages share: session defaults, cached loaders, the current run, and plotly figure builders."""
from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import runs
from core.config import TrainConfig
from core.data import LabeledImages, load_source, source_label
from core.interpret import Predictions, load_predictions
from core.train import describe_device, pick_device
from core.visualize import load_model

DEFAULTS = TrainConfig()
APP_PATH = Path(__file__).resolve().parent.parent / "app.py"
IMAGE_SIZES = [16, 24, 32, 48, 64, 96, 128, 160, 192, 224]


def route_through_app() -> None:
    """Make sure app.py (navigation, sidebar, session defaults) runs around this page.

    Streamlit treats a folder named pages/ as old-style multipage until app.py calls st.navigation, and
    AppTest resets that before every run: a request for /train would then run the page file alone. Switch that
    mode off and run app.py in its place, in this same script run so no click is lost; app.py runs this page.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(APP_PATH), run_name="__main__")
        st.stop()


def init_session() -> None:
    """Shared choices live under named keys, so every page sees the same dataset, size and run."""
    st.session_state.setdefault("dataset", DEFAULTS.data)
    st.session_state.setdefault("image_size", DEFAULTS.size)
    if "run_id" not in st.session_state:
        st.session_state["run_id"] = st.query_params.get("run")


def current_run_dir() -> Path | None:
    run_id = st.session_state.get("run_id")
    if not run_id:
        return None
    path = runs.runs_root() / run_id
    return path if (path / "config.json").exists() else None


def select_run(run_id: str | None) -> None:
    st.session_state["run_id"] = run_id
    if run_id:
        st.query_params["run"] = run_id
    else:
        st.query_params.pop("run", None)


@st.cache_resource(show_spinner=False)
def device_label() -> str:
    return describe_device(pick_device())


@st.cache_resource(show_spinner="Loading images…", max_entries=4)
def dataset(source: str, size: int) -> LabeledImages:
    """Decoded once per (source, size) and shared by every session; never mutated."""
    return load_source(source, size)


def dataset_label(source: str) -> str:
    return source_label(source)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _model(run_dir: str, _checkpoint_mtime: float):
    return load_model(Path(run_dir))


def run_model(run_dir: Path):
    """(model in eval mode, class names, config) of a run, reloaded only when its checkpoint changes."""
    checkpoints = run_dir / "checkpoints"
    stamp = max(_mtime(checkpoints / "best.pt"), _mtime(checkpoints / "last.pt"))
    return _model(str(run_dir), stamp)


@st.cache_data(show_spinner=False, max_entries=16)
def _predictions(run_dir: str, _mtime_stamp: float) -> Predictions:
    return load_predictions(Path(run_dir))


def run_predictions(run_dir: Path) -> Predictions:
    return _predictions(str(run_dir), _mtime(run_dir / "predictions.npz"))


def pick_finished_run(purpose: str) -> Path | None:
    """The current run if it has predictions, else a choice among those that do; explains when there is none."""
    finished = [run for run in runs.list_runs() if run.has_predictions]
    if not finished:
        st.info(f"No finished run yet. Train a model on the **Train** page first, then come back {purpose}.")
        st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
        return None
    ids = [run.run_id for run in finished]
    current = st.session_state.get("run_id")
    index = ids.index(current) if current in ids else 0
    chosen = st.selectbox("Run", ids, index=index, format_func=lambda rid: _run_caption(finished, rid))
    if chosen != current:
        select_run(chosen)
    return runs.runs_root() / chosen


def _run_caption(found: list[runs.RunSummary], run_id: str) -> str:
    run = next(r for r in found if r.run_id == run_id)
    accuracy = f" · {run.best_accuracy:.1%}" if run.best_accuracy is not None else ""
    return f"{run.run_id} ({run.config.arch}, {run.config.size}px, {run.state}{accuracy})"


def image_grid(images: np.ndarray, titles: list[str], columns: int = 8, height_per_row: int = 120) -> go.Figure:
    """A grid of images (N, H, W, 3) uint8 or (N, H, W) float, each with a title, as one plotly figure."""
    rgb = images.ndim == 4
    if not rgb:  # each map scaled to its own range, so a weak channel's pattern still shows
        flat = images.reshape(len(images), -1)
        low, high = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
        images = (images - low) / np.maximum(high - low, 1e-12)
    figure = px.imshow(images, facet_col=0, facet_col_wrap=columns, binary_string=rgb,
                       color_continuous_scale=None if rgb else "Viridis", facet_col_spacing=0.01,
                       facet_row_spacing=0.06)
    # px names facets "facet_col=0", "facet_col=1", ...: replace each by its title
    for annotation in figure.layout.annotations:
        index = int(annotation.text.split("=")[1])
        annotation.text = titles[index]
    rows = -(-len(images) // columns)
    figure.update_xaxes(visible=False).update_yaxes(visible=False)
    figure.update_layout(height=60 + rows * height_per_row, margin=dict(l=0, r=0, t=30, b=0),
                         coloraxis_showscale=False)
    return figure


def to_hwc(images: "np.ndarray") -> np.ndarray:
    """(N, 3, H, W) -> (N, H, W, 3)."""
    return np.ascontiguousarray(np.asarray(images).transpose(0, 2, 3, 1))
