"""What several pages share: routing through app.py, the session's settings, cached loaders and the current run.

The session's settings are keyed by TrainConfig's own field names (`st.session_state["size"]`, `["lr"]`, ...),
and each is owned by one widget on one page; `current_config()` reads them all back as the config a Start would
train.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import runpy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from core.config import TrainConfig
from core.errors import BrokenRun
from core.runs import store
from core.runs.folder import RunFolder
from core.runs.settings import load_settings, save_settings
from pages._text import md

# torch, captum and scikit-learn take about two seconds to import: they load when a function below first needs
# them, so the Home page and the sidebar draw before that (bench/startup).
if TYPE_CHECKING:
    import numpy as np
    import torch

    from core.data.augment import Augment
    from core.data.images import LabeledImages
    from core.inspect.interpret import Predictions
    from core.inspect.labelsets import LabelSetPredictions

DEFAULTS = TrainConfig()
SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig))
APP_PATH = Path(__file__).resolve().parent.parent / "app.py"
IMAGE_SIZES = [16, 24, 32, 48, 64, 96, 128, 160, 192, 224]
BATCH_SIZES = [8, 16, 32, 64, 128, 256]
ON_DISK = "_settings_on_disk"  # the settings as this session last read or wrote them in core.runs.settings' file
_IN_APP = contextvars.ContextVar("in_app", default=False)
_SAVING = threading.Lock()  # one session's script runs, and other sessions, compare and save the settings in turn


@contextlib.contextmanager
def app_frame() -> Iterator[None]:
    """app.py runs the chosen page inside this, so the page knows app.py is around it."""
    token = _IN_APP.set(True)
    try:
        yield
    finally:
        _IN_APP.reset(token)


def route_through_app() -> None:
    """Run app.py (navigation, sidebar, session defaults) around this page when Streamlit ran the page alone.

    While a folder named pages/ exists, Streamlit runs a page file by itself until some session has called
    st.navigation: a fresh server's first deep link (/train), and every AppTest run, which re-detects the
    folder (streamlit/streamlit#9446, fixed for apps without a pages/ folder by PR #14217; no supported switch
    exists, see the MPA v1/v2 discussion in PR #10276). Then run app.py in this same script run instead: its
    st.navigation turns that mode off and runs this page inside app_frame, so no click is lost.
    """
    if not _IN_APP.get():
        runpy.run_path(str(APP_PATH), run_name="__main__")
        st.stop()


def init_session() -> None:
    """Every setting starts where this installation left it (core.runs.settings: the dataset and settings saved beside
    the data, so a reload, a second tab and a restarted server agree), else at its TrainConfig default; the run
    shown comes from the address, else the one that is training.

    Each setting's widget keeps its value while another page is shown (persist_state="session"); nothing here
    re-assigns a setting once the session has it: an assignment sends the value back to the browser, and one
    from a script run that began before the person's next key press (three quick presses on the size slider)
    would undo that press."""
    state = st.session_state
    if ON_DISK not in state:  # a new session: a reload, a second tab, or the first visit since a restart
        saved, notice = load_settings({"size": IMAGE_SIZES, "bs": BATCH_SIZES})
        for name in SETTINGS:
            if name not in state:
                state[name] = saved.get(name, getattr(DEFAULTS, name))
        state[ON_DISK] = {**DEFAULTS.to_dict(), **saved}
        if notice:  # said once; the defaults then replace what could not be used
            state["settings_notice"], state[ON_DISK] = notice, {}
    remember_settings()
    if "run_id" not in state:
        asked = st.query_params.get("run")
        if asked and store.run_folder(asked) is None:  # `../x`, an absolute path, a link, a run that is gone
            state["ignored_address"], asked = asked, None
            st.query_params.pop("run", None)
        state["run_id"] = asked or store.active_run()


def remember_settings() -> None:
    """Save the settings that changed since this session last saved (or loaded) them; nothing when none did.
    app.py calls it before the page (widget changes arrive then) and after it, even when the page stopped.

    Under one lock: a key press can start a session's next script run while the one it interrupted is still
    saving, on another thread. Each compared the file it knew with the value it had read and wrote it, so the
    older 48 px landed after the newer 96 px and stayed (1 try in 16 with both cores busy); now the later
    comparison sees what the earlier one wrote and the session's current value."""
    state = st.session_state
    with _SAVING:
        on_disk = state.get(ON_DISK, {})
        changed = {name: state[name] for name in SETTINGS if name in state and on_disk.get(name) != state[name]}
        if changed:
            save_settings(changed)
            state[ON_DISK] = {**on_disk, **changed}


def current_config() -> TrainConfig:
    """The settings chosen on the Data and Train pages, as the config a Start would train."""
    return TrainConfig(**{name: st.session_state[name] for name in SETTINGS})


def current_augment() -> Augment:
    """The augmentation chosen on the Data page."""
    from core.data.augment import Augment

    return Augment.from_config(current_config())


def current_run_dir() -> Path | None:
    """The folder of the run shown, when it is a readable run folder inside the runs folder; else None (the
    sidebar says why: run_notice)."""
    path = store.run_folder(st.session_state.get("run_id"))
    return path if path is not None and RunFolder(path).problem() is None else None


def run_notice() -> str | None:
    """Why the run the session or its address asked for is not shown (a sentence, as text), or None."""
    ignored = st.session_state.get("ignored_address")
    if ignored:
        return (f"The address asks for run '{ignored}', which is not a run folder in the runs folder, so it is "
                "not shown.")
    path = store.run_folder(st.session_state.get("run_id"))
    return RunFolder(path).problem() if path is not None else None


def select_run(run_id: str | None) -> None:
    st.session_state["run_id"] = run_id
    st.session_state.pop("ignored_address", None)
    if run_id:
        st.query_params["run"] = run_id
    else:
        st.query_params.pop("run", None)


@st.cache_resource(show_spinner=False)
def device_label() -> str:
    from core.device import describe_device, pick_device

    return describe_device(pick_device())


def edits_stamp(source: str) -> str:
    """Changes whenever the dataset's edit log does: part of every cache key of a dataset read."""
    try:
        stat = _edit_log_path(source, _file_stamp(source)).stat()
    except OSError:
        return ""
    return f"{stat.st_size}@{stat.st_mtime_ns}"


def _file_stamp(source: str) -> str:
    try:
        stat = Path(source).stat()
    except (OSError, ValueError):
        return ""
    return f"{stat.st_size}@{stat.st_mtime_ns}"


@st.cache_data(show_spinner=False, max_entries=32)
def _edit_log_path(source: str, file_stamp: str) -> Path:
    """Where a source's edit log is; cached, since naming a zip's folder reads the whole zip."""
    from core.data.load import edit_log_for
    from core.errors import DataError

    try:
        return edit_log_for(source).path
    except DataError:
        return Path("/nonexistent")


@st.cache_resource(show_spinner="Loading images…", max_entries=4)
def _dataset(source: str, size: int, label_regex: str, resize: str, edits: bool, stamp: str) -> LabeledImages:
    from core.data.load import load_source

    return load_source(source, size, label_regex=label_regex or None, resize=resize, edits=edits)


def dataset(source: str, size: int, label_regex: str = "", resize: str = "squish", edits: bool = True) -> LabeledImages:
    """Decoded once per (source, size, labels, resize, edits in force) and shared by every session; never mutated."""
    return _dataset(source, size, label_regex, resize, edits, edits_stamp(source) if edits else "")


@st.cache_data(show_spinner=False, max_entries=8)
def _run_item_names(run_dir: str, stamp: float) -> list[str]:
    return list(RunFolder(Path(run_dir)).data_items())


def run_item_names(run_dir: Path) -> list[str]:
    """The names of a run's images, in the order its predictions' item ids count them ([] for older runs)."""
    return _run_item_names(str(run_dir), RunFolder(run_dir).data_items_stamp())


def run_images(run_dir: Path) -> torch.Tensor:
    """(N, 3, S, S) uint8: the images a run trained and validated on, in the order its predictions' item ids
    count them, decoded the way it decoded them, whatever edits the dataset has had since."""
    config = RunFolder(run_dir).config()
    stamp = RunFolder(run_dir).data_items_stamp() or edits_stamp(config.data)
    return _run_images(str(run_dir), str(stamp))


@st.cache_resource(show_spinner="Loading the run's images…", max_entries=2)
def _run_images(run_dir: str, stamp: str) -> torch.Tensor:
    import numpy as np

    from core.data.mapped import take_rows

    config = RunFolder(Path(run_dir)).config()
    names = run_item_names(Path(run_dir))
    if not names:  # runs from before data_items.json: the dataset as it reads now
        return dataset(config.data, config.size, config.label_regex, config.resize).images
    files = dataset(config.data, config.size, config.label_regex, config.resize, edits=False)
    position = {name: i for i, name in enumerate(files.item_names)}
    # a file the run saw and that is gone (-1) shows as a black square; a memory-mapped dataset (core.data.mapped)
    # gives a mapped file, never a copy in memory
    return take_rows(files.images, np.array([position.get(name, -1) for name in names], dtype=np.int64))


def forget_dataset_caches() -> None:
    """After files were added to a dataset: read it afresh everywhere."""
    _dataset.clear()
    _health_report.clear()


def current_dataset(size: int) -> LabeledImages:
    """The dataset chosen on the Data page, at `size`."""
    config = current_config()
    return dataset(config.data, size, config.label_regex, config.resize)


@st.cache_data(show_spinner="Checking every image…", ttl=120, max_entries=8)
def _health_report(source: str, label_regex: str, stamp: str):
    from core.data.builtin import builtin_report
    from core.data.load import inspect_source

    if source.startswith("builtin:"):
        return builtin_report(source)
    return inspect_source(source, label_regex or None)


def health_report(source: str, label_regex: str = ""):
    """core.data's health report of a folder or zip (or a built-in set), rechecked at most every two minutes
    and whenever its edits change."""
    return _health_report(source, label_regex, edits_stamp(source))


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _model(run_dir: str, stamp: str):  # the stamp is part of the key: a retrained run reloads
    from core.runs.checkpoint import load_model

    return load_model(Path(run_dir))


def run_model(run_dir: Path):
    """(model in eval mode, class names, config) of a run, reloaded only when its model's checkpoint changes.

    A checkpoint that is missing, damaged or carries anything but weights stops the page with its sentence
    (core.runs.checkpoint says which and why)."""
    try:
        return _model(str(run_dir), model_key(run_dir))
    except (FileNotFoundError, BrokenRun) as error:
        st.error(md(error))
        st.stop()


def model_key(run_dir: Path) -> str:
    """A cache key that changes when the run's model does."""
    return RunFolder(run_dir).model_stamp()


@st.cache_data(show_spinner=False, max_entries=16)
def _predictions(run_dir: str, stamp: float) -> Predictions | LabelSetPredictions:  # stamp: in the key
    from core.inspect.interpret import load_predictions

    return load_predictions(Path(run_dir))


def run_predictions(run_dir: Path) -> Predictions | LabelSetPredictions:
    """A run's validation predictions (of a run of label sets: LabelSetPredictions); a damaged predictions.npz
    stops the page with a sentence."""
    try:
        return _predictions(str(run_dir), RunFolder(run_dir).predictions_stamp())
    except BrokenRun as error:
        st.error(md(error))
        st.stop()


def pick_finished_run(purpose: str) -> Path | None:
    """The current run if it has predictions, else a choice among those that do; explains when there is none."""
    finished = [run for run in store.list_runs() if run.has_predictions and not run.broken]
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
    return store.runs_root() / chosen


def _run_caption(found: list[store.RunSummary], run_id: str) -> str:
    run = next(r for r in found if r.run_id == run_id)
    accuracy = f" · {run.best_accuracy:.1%}" if run.best_accuracy is not None else ""
    return f"{run.run_id} ({run.config.arch}, {run.config.size}px, {run.state}{accuracy})"


@st.cache_resource(show_spinner="Loading the ImageNet network…", max_entries=2)
def imagenet_model(arch: str, size: int):
    """(model, 1,000 ImageNet category names): the pretrained network before any training."""
    from core.net.backbones import imagenet_classifier

    return imagenet_classifier(arch, size)


@st.cache_data(show_spinner="Measuring every channel on every image…", max_entries=32)
def cached_channel_maxima(model_key: str, layer_name: str, _model, _images: torch.Tensor) -> np.ndarray:
    """core.inspect.visualize.channel_maxima, computed once per (model, layer); the key names both."""
    from core.inspect.visualize import channel_maxima

    return channel_maxima(_model, layer_name, _images)


@st.cache_data(show_spinner="Computing attributions…", max_entries=64)
def cached_attribution(model_key: str, images_key: str, targets: tuple[int, ...], method: str, _model,
                       _images: torch.Tensor) -> np.ndarray:
    """core.inspect.attribution.attribute, computed once per (model, images, targets, method)."""
    from core.inspect.attribution import attribute

    return attribute(_model, _images, list(targets), method)
