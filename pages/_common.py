"""What several pages share: session defaults, cached loaders, the current run, and plotly figure builders."""
from __future__ import annotations

import pickle
import runpy
from pathlib import Path

from typing import TYPE_CHECKING

import streamlit as st

from core import runs
from core.config import TrainConfig

# torch, captum and scikit-learn take about two seconds to import: they load when a function below first needs
# them, so the Home page and the sidebar draw before that (bench/startup).
if TYPE_CHECKING:
    import numpy as np
    import torch

    from core.augment import Augment
    from core.data import LabeledImages
    from core.interpret import Predictions

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


AUGMENT_KEYS = ("flip", "rotate", "zoom", "lighting")


def init_session() -> None:
    """Shared choices live under named keys, so every page sees the same dataset, size, augmentation and run."""
    st.session_state.setdefault("dataset", DEFAULTS.data)
    st.session_state.setdefault("label_regex", DEFAULTS.label_regex)
    st.session_state.setdefault("resize", DEFAULTS.resize)
    st.session_state.setdefault("image_size", DEFAULTS.size)
    for key in AUGMENT_KEYS:
        st.session_state.setdefault(key, getattr(DEFAULTS, key))
    if "run_id" not in st.session_state:
        # the address names the run; a new tab without one shows the run that is training, if any
        st.session_state["run_id"] = st.query_params.get("run") or runs.active_run()


def current_augment() -> Augment:
    """The augmentation chosen on the Data page."""
    from core.augment import Augment

    return Augment(*(st.session_state[key] for key in AUGMENT_KEYS))


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
    from core.train import describe_device, pick_device

    return describe_device(pick_device())


@st.cache_resource(show_spinner="Loading images…", max_entries=4)
def dataset(source: str, size: int, label_regex: str = "", resize: str = "squish") -> LabeledImages:
    """Decoded once per (source, size, labels, resize) and shared by every session; never mutated."""
    from core.data import load_source

    return load_source(source, size, label_regex=label_regex or None, resize=resize)


def run_dataset(config: TrainConfig) -> LabeledImages:
    """The images a run trained on, decoded the way it decoded them."""
    return dataset(config.data, config.size, config.label_regex, config.resize)


def current_dataset(size: int) -> LabeledImages:
    """The dataset chosen on the Data page, at `size`."""
    state = st.session_state
    return dataset(state["dataset"], size, state.get("label_regex", ""), state.get("resize", "squish"))


@st.cache_data(show_spinner="Checking every image…", ttl=120, max_entries=8)
def health_report(source: str, label_regex: str = ""):
    """core.data's health report of a folder or zip (or a built-in set), rechecked at most every two minutes."""
    from core.data import builtin_report, inspect_source

    if source.startswith("builtin:"):
        return builtin_report(source)
    return inspect_source(source, label_regex or None)



def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _model(run_dir: str, _key: str):
    from core.visualize import load_model

    return load_model(Path(run_dir))


def run_model(run_dir: Path):
    """(model in eval mode, class names, config) of a run, reloaded only when its checkpoint changes.

    A checkpoint that is missing, damaged or carries anything but weights stops the page with a sentence."""
    try:
        return _model(str(run_dir), model_key(run_dir))
    except (FileNotFoundError, RuntimeError, pickle.UnpicklingError, KeyError) as error:
        st.error(f"The model of run {run_dir.name} could not be loaded: {error}. Only plain weights are ever "
                 "loaded from a checkpoint, so a damaged or foreign file is refused.")
        st.stop()


@st.cache_data(show_spinner=False, max_entries=16)
def _predictions(run_dir: str, _mtime_stamp: float) -> Predictions:
    from core.interpret import load_predictions

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


@st.cache_resource(show_spinner="Loading the ImageNet network…", max_entries=2)
def imagenet_model(arch: str, size: int):
    """(model, 1,000 ImageNet category names): the pretrained network before any training."""
    from core.models import imagenet_classifier

    return imagenet_classifier(arch, size)


@st.cache_data(show_spinner="Measuring every channel on every image…", max_entries=32)
def cached_channel_maxima(model_key: str, layer_name: str, _model, _images: torch.Tensor) -> np.ndarray:
    """core.visualize.channel_maxima, computed once per (model, layer); the key names both."""
    from core.visualize import channel_maxima

    return channel_maxima(_model, layer_name, _images)


@st.cache_data(show_spinner="Computing attributions…", max_entries=64)
def cached_attribution(model_key: str, images_key: str, targets: tuple[int, ...], method: str, _model,
                       _images: torch.Tensor) -> np.ndarray:
    """core.attribution.attribute, computed once per (model, images, targets, method)."""
    from core.attribution import attribute

    return attribute(_model, _images, list(targets), method)


def model_key(run_dir: Path) -> str:
    """A cache key that changes when the run's checkpoint does."""
    checkpoints = run_dir / "checkpoints"
    return f"{run_dir}@{max(_mtime(checkpoints / 'best.pt'), _mtime(checkpoints / 'last.pt'))}"
