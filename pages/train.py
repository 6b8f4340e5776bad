"""Train: choose a backbone and sizes, start a run as its own process, and watch it live."""

import streamlit as st

from core.config import BALANCE_METHODS, PRESETS, TIMM_PREFIX, TrainConfig
from core.data.sources import source_label
from core.net import zoo
from core.net.backbones import ARCHS
from core.net.zoo import TIMM_BACKBONES
from core.runs import compare, store
from core.runs.folder import RunFolder
from pages._common import (
    BATCH_SIZES,
    DEFAULTS,
    IMAGE_SIZES,
    current_augment,
    current_config,
    current_run_dir,
    route_through_app,
    select_run,
)
from pages._sweep import search_form
from pages._text import md
from pages._watch import live_curves, live_status, show_curves, show_status

route_through_app()

LEARNING_RATES = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2]
WEIGHT_DECAYS = [0.0, 1e-4, 1e-3, 1e-2, 0.05, 0.1]
BALANCE_LABELS = {"none": "Train as they are", "weights": "Weigh the loss by class (small classes count more)",
                  "sampler": "Draw every class equally often"}
TRACKING_CHOICES = {"": "Nowhere else", "mlflow": "MLflow", "tensorboard": "TensorBoard",
                    "mlflow,tensorboard": "MLflow and TensorBoard"}
PRESET_LABELS = {"": "Your own settings", "lesson1": "fastai lesson 1: Oxford pets, ResNet-34, 224 px, 4 + 2 epochs"}
DATA_PAGE_SETTINGS = ("data", "label_regex", "resize", "flip", "rotate", "zoom", "lighting")


def help_for(name: str) -> str:
    """A setting's tooltip: its TrainConfig comment."""
    return TrainConfig.__dataclass_fields__[name].metadata["help"]


def choose_preset() -> None:
    """A preset fills in its settings; going back to "your own settings" resets this page's to the defaults."""
    state = st.session_state
    name = st.selectbox("Start from", list(PRESET_LABELS), format_func=PRESET_LABELS.get,
                        index=list(PRESET_LABELS).index(state.get("preset", "")),
                        help="A preset fills in the settings below; change any of them before starting.")
    if name != state.get("preset", ""):
        state["preset"] = name
        preset = PRESETS.get(name, {})
        for key, value in {**DEFAULTS.to_dict(), **preset}.items():
            if key in preset or key not in DATA_PAGE_SETTINGS:
                state[key] = value
    if name == "lesson1":
        st.caption("Four epochs training the new head, then two with every layer at rates from 1e-6 to 1e-4 "
                   "(fastai's `slice(1e-6, 1e-4)`). The pets download once (800 MB) and ResNet-34's weights too: "
                   "this needs a network the first time.")


def not_ready() -> str:
    """Why the chosen dataset cannot be trained yet (a dataset made in the app with too few images; label sets with
    class balancing or label smoothing), or ""."""
    from core.data.collect import MIN_IMAGES_PER_CLASS, made_root, shortfall
    from pages._common import health_report

    source, state = st.session_state["data"], st.session_state
    try:
        report = health_report(source, state["label_regex"])
    except Exception:  # a dataset that cannot be read: Start says why
        return ""
    kind = "labels" if report.multi_label else "classes"
    needs = shortfall(report.class_counts)
    if source.startswith(str(made_root())) and (not report.ok or needs or len(report.class_counts) < 2):
        return (f"This dataset needs more images before training: at least two {kind} of "
                f"{MIN_IMAGES_PER_CLASS} images each ({sum(needs.values())} more to go). Add them on the Data page.")
    if report.multi_label and (state["balance"] != "none" or state["label_smoothing"]):
        return ("This dataset has label sets (several labels per image): set Imbalanced classes to none and "
                "Label smoothing to 0 under More settings; they are for one label per image.")
    return ""


def more_settings() -> None:
    """The settings most runs leave alone, inside the settings form."""
    state = st.session_state
    with st.expander("More settings"):
        left, right = st.columns(2)
        left.select_slider("Weight decay", sorted(set(WEIGHT_DECAYS) | {state["wd"]}), key="wd",
                           persist_state="session", format_func=lambda v: f"{v:g}",
                           help="Pulls weights towards zero a little every step, against over-fitting.")
        left.slider("Label smoothing", 0.0, 0.3, step=0.05, key="label_smoothing", persist_state="session",
                    help="Teaches the model to be a little less sure: often better on noisy labels. "
                         "0.1 is a common choice.")
        right.number_input("Stop early after epochs without improvement (0: never)", 0, 50, key="patience",
                           persist_state="session",
                           help="Ends the run when the validation loss has not improved for this many epochs in a row.")
        right.toggle("Keep the best epoch's weights", key="keep_best", persist_state="session",
                     help="At the end, go back to the epoch with the best validation accuracy.")
        left.selectbox("Imbalanced classes", BALANCE_METHODS, key="balance", persist_state="session",
                       format_func=lambda m: BALANCE_LABELS[m], help=help_for("balance") + ". The Data page "
                       "suggests it when the largest class has more than three times the smallest's images.")
        left.selectbox("Also log the run to", TRACKING_CHOICES, key="track", persist_state="session",
                       format_func=lambda t: TRACKING_CHOICES[t], help="MLflow's local tracking folder (mlruns/ "
                       "beside the runs, with the exported model) and TensorBoard's event files (in the run's "
                       "folder): see the README for the commands that open them.")
        right.toggle("Let BatchNorm statistics follow this data", key="adapt_bn", persist_state="session",
                     help="fastai's behaviour. Off (the default) keeps the pretrained body's ImageNet statistics, "
                          "which lets the frozen epochs train on features computed once; on, the frozen epochs "
                          "run the whole network every time.")


def settings_form() -> tuple[bool, bool]:
    """The settings, each widget keyed by its TrainConfig field; returns (start pressed, finder pressed).

    Not a form: each change applies (and is saved, core.runs.settings) at once, so a reload never loses one."""
    state = st.session_state
    waiting = not_ready()
    if waiting:
        st.warning(waiting)
    backbones = {**{key: arch.label for key, arch in ARCHS.items()}, **TIMM_BACKBONES}
    if state["arch"] not in backbones:  # another timm model (typed on the command line), or an unknown one
        if zoo.known(state["arch"]):
            backbones[state["arch"]] = f"{state['arch'][len(TIMM_PREFIX):]} (timm)"
        else:
            state["arch"] = DEFAULTS.arch
    with st.container(border=True):
        augment = current_augment()
        st.caption(f"Dataset: **{md(source_label(state['data']))}**, images made square by {md(state['resize'])}, "
                   f"{'with augmentation' if augment.active else 'no augmentation'} (change these on the Data page)")
        left, right = st.columns(2)
        left.selectbox("Backbone", list(backbones), format_func=backbones.get, key="arch", persist_state="session",
                       help="EfficientNet-Lite0's ImageNet weights ship with the app and work offline; "
                            "ResNet weights download once from torchvision, timm's from the Hugging Face hub, then "
                            "are cached. Any other timm model: python -m core.train --arch timm:NAME.")
        left.toggle("Start from ImageNet weights", key="pretrained", persist_state="session",
                    help=help_for("pretrained"))
        if state["pretrained"]:
            left.text_input("Weights file, where there is no network (optional)", key="weights",
                            persist_state="session", placeholder="/path/to/weights.safetensors",
                            help=help_for("weights").capitalize() + ".")
        left.number_input("Epochs", min_value=1, max_value=200, key="epochs", persist_state="session",
                          help="Passes over the training images with every layer learning.")
        left.number_input("Frozen epochs first", min_value=0, max_value=20, key="freeze_epochs",
                          persist_state="session",
                          help="With pretrained weights: epochs that train only the new head before the whole "
                               "network is fine-tuned. Without augmentation the body's features are computed once "
                               "and these take about a second.")
        if augment.active and state["pretrained"] and state["freeze_epochs"]:
            left.caption(":material/timer: Augmentation is on (Data page), so each frozen epoch runs the whole network "
                         "instead of a head on features computed once: about 10× slower (bench/augment_cost).")
        right.select_slider("Image size (pixels)", IMAGE_SIZES, key="size", persist_state="session",
                            help="Every image is resized to this square. 64 px trains in seconds on a CPU.")
        right.select_slider("Batch size", BATCH_SIZES, key="bs", persist_state="session",
                            help="Images per step. Larger is faster per image if memory allows.")
        right.select_slider("Learning rate", sorted(set(LEARNING_RATES) | {state["lr"]}), key="lr",
                            persist_state="session", format_func=lambda v: f"{v:.2g}",
                            help="The peak rate of the one-cycle schedule for the new head; earlier layers get "
                                 "less. The finder below suggests one.")
        more_settings()
        time_estimate()
        start_column, find_column = st.columns([1, 3])
        start = start_column.button("Start training", type="primary", icon=":material/play_arrow:",
                                    disabled=bool(waiting))
        find = find_column.button("Find a learning rate", icon=":material/query_stats:", disabled=bool(waiting),
                                  help="Sweeps the rate from tiny to huge over ~100 batches and suggests one where "
                                       "the loss falls fastest without blowing up (fastai's lr_find). Trains nothing "
                                       "it keeps.")
    return start, find


@st.cache_data(show_spinner="Timing a few training steps on this machine…", max_entries=32)
def _costs(arch: str, size: int, bs: int, late_at: int | None):
    from core.device import pick_device
    from core.train.estimate import measure

    return measure(arch, size, bs, pick_device(), late_at)


@st.cache_data(show_spinner=False, max_entries=32)
def _planned_cut(arch: str, size: int, epochs: int, n_train: int, n_valid: int):
    """Where a run that may train its late stages will cut (keyed by what the cut depends on, so a change of the
    learning rate does not count the network again)."""
    from core.device import pick_device
    from core.train.estimate import planned_cut

    return planned_cut(TrainConfig(arch=arch, size=size, epochs=epochs), n_train, n_valid, pick_device())


def recipe_sentence(cut) -> str:
    """What the unfrozen epochs train, in words a newcomer reads (a LateCut, or None: the whole network)."""
    if cut is None:
        return "the unfrozen epochs train every layer"
    late = compare.recipe_text({"unfrozen": "late stages", **cut.to_dict()})
    return (f"the unfrozen epochs train {late}, on the first part's output computed once "
            f"({'×'.join(map(str, cut.shape))} numbers an image)")


def time_estimate() -> None:
    """How long the chosen run will take here, from a few timed steps of this backbone at this size (not while a
    run trains: it would slow the run and be timed wrong), and what the recipe will train: where it cuts the
    network is chosen from its operation counts, the same here as in the run."""
    from core.train.estimate import STARTUP_S, run_seconds
    from core.train.recipe import trains_late
    from pages._common import health_report

    config = current_config()
    if config.problems() or store.active_run():
        return
    try:
        report = health_report(config.data, config.label_regex)
        n_images = report.n_images
        n_valid = max(round(n_images * config.valid_pct), 1)
        n_train = max(n_images - n_valid, 1)
        cut = _planned_cut(config.arch, config.size, config.epochs, n_train, n_valid) if trains_late(config) \
            else None
        costs = _costs(config.arch, config.size, config.bs, cut.at if cut else None)
        loading = STARTUP_S + _decode_seconds(config.data, config.label_regex, config.size, config.resize,
                                              len(report.accepted))
    except Exception:  # a dataset that cannot be read yet, a backbone that cannot be built: Start will say why
        return
    training = run_seconds(config, n_train, n_valid, costs, cut)
    recipe = f" With these settings {recipe_sentence(cut)}." if config.pretrained and config.epochs else ""
    st.caption(f":material/schedule: About **{_duration(training + loading)}** on this machine: "
               f"{_duration(loading)} to start and decode the images, {_duration(training)} of training "
               f"(the frozen layers' pass over every image included), from timed steps of this backbone at "
               f"{config.size} px; longer while other work shares the machine. Time grows with the square of the "
               f"image size: {config.size * 2} px costs about 4× as much, {max(config.size // 2, 16)} px about a "
               f"quarter.{recipe}")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


@st.cache_data(show_spinner=False, max_entries=32)
def _decode_seconds(source: str, label_regex: str, size: int, resize: str, n_files: int) -> float:
    """Seconds the run will spend decoding the dataset's files at `size` (a built-in set comes decoded)."""
    from core.train.estimate import decode_seconds
    from pages._common import health_report

    if source.startswith("builtin:"):
        return 0.0
    return decode_seconds([item.path for item in health_report(source, label_regex).accepted], size, resize)


def start_run(task: str) -> None:
    """Start the chosen settings as a run process, unless they cannot train or the device is busy."""
    config = current_config()
    problems = config.problems()
    busy = store.active_run()
    if problems:
        st.error("These settings cannot be trained: " + "; ".join(f"{k} {v}" for k, v in problems.items()) + ".")
    elif busy:
        st.warning(f"Run **{md(busy)}** is training on this device. Stop it or wait for it to finish, then start "
                   "again.")
    else:
        run_dir = store.create_run(config, task=task)
        store.launch(run_dir)
        select_run(run_dir.name)
        st.rerun()


st.title("Train")
choose_preset()
start, find = settings_form()
if start or find:
    start_run("lr_find" if find else "train")
search_form()
run_dir = current_run_dir()
if run_dir is None:
    st.info("Choose settings and press **Start training**. The run trains in its own process: switch pages, "
            "refresh, or open a second tab, and it keeps going.")
elif RunFolder(run_dir).is_active():
    live_status(RunFolder(run_dir))
    live_curves(RunFolder(run_dir))
else:
    show_status(RunFolder(run_dir))
    show_curves(RunFolder(run_dir))
