"""Train: choose a backbone and sizes, start a run as its own process, and watch it live."""

import streamlit as st

from core import runs, zoo
from core.config import BALANCE_METHODS, PRESETS, TrainConfig
from core.formats import format_seconds
from core.models import ARCHS
from core.progress import left_now
from core.metrics import MetricsTail
from core.runfolder import RunFolder
from core.sources import source_label
from core.zoo import TIMM_BACKBONES
from pages._common import (BATCH_SIZES, DEFAULTS, IMAGE_SIZES, current_augment, current_config, current_run_dir,
                           route_through_app, select_run)
from pages._figures import loss_figure, lr_figure, lr_find_figure
from pages._text import md

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
    """Why the chosen dataset cannot be trained yet (a dataset made in the app with too few images), or ""."""
    from core.collect import MIN_IMAGES_PER_CLASS, made_root, shortfall
    from pages._common import health_report

    source = st.session_state["data"]
    if not source.startswith(str(made_root())):
        return ""
    report = health_report(source, st.session_state["label_regex"])
    needs = shortfall(report.class_counts)
    if not report.ok or needs or len(report.class_counts) < 2:
        return (f"This dataset needs more images before training: at least two classes of "
                f"{MIN_IMAGES_PER_CLASS} images each ({sum(needs.values())} more to go). Add them on the Data page.")
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

    Not a form: each change applies (and is saved, core.settings) at once, so a reload never loses one."""
    state = st.session_state
    waiting = not_ready()
    if waiting:
        st.warning(waiting)
    backbones = {**{key: arch.label for key, arch in ARCHS.items()}, **TIMM_BACKBONES}
    if state["arch"] not in backbones:  # another timm model (typed on the command line), or an unknown one
        if zoo.known(state["arch"]):
            backbones[state["arch"]] = f"{state['arch'][len(zoo.PREFIX):]} (timm)"
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
def _costs(arch: str, size: int, bs: int):
    from core.device import pick_device
    from core.estimate import measure

    return measure(arch, size, bs, pick_device())


def time_estimate() -> None:
    """How long the chosen run will take here, from a few timed steps of this backbone at this size (not while a
    run trains: it would slow the run and be timed wrong)."""
    from core.estimate import run_seconds
    from pages._common import health_report

    config = current_config()
    if config.problems() or runs.active_run():
        return
    try:
        n_images = health_report(config.data, config.label_regex).n_images
        costs = _costs(config.arch, config.size, config.bs)
    except Exception:  # a dataset that cannot be read yet, a backbone that cannot be built: Start will say why
        return
    n_valid = max(round(n_images * config.valid_pct), 1)
    minutes, seconds = divmod(int(round(run_seconds(config, max(n_images - n_valid, 1), n_valid, costs))), 60)
    duration = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
    st.caption(f":material/schedule: About **{duration}** of training on this machine, from timed "
               f"steps of this backbone at {config.size} px (plus loading). Time grows with the square of the image "
               f"size: {config.size * 2} px costs about 4× as much, {max(config.size // 2, 16)} px about a quarter.")


def start_run(task: str) -> None:
    """Start the chosen settings as a run process, unless they cannot train or the device is busy."""
    config = current_config()
    problems = config.problems()
    busy = runs.active_run()
    if problems:
        st.error("These settings cannot be trained: " + "; ".join(f"{k} {v}" for k, v in problems.items()) + ".")
    elif busy:
        st.warning(f"Run **{md(busy)}** is training on this device. Stop it or wait for it to finish, then start "
                   "again.")
    else:
        run_dir = runs.create_run(config, task=task)
        runs.launch(run_dir)
        select_run(run_dir.name)
        st.rerun()


def epoch_table(tail: MetricsTail) -> list[dict]:
    """The epoch rows; a frozen phase that ended with an earlier epoch's head (core.recipe.KeepBestEpoch) says so
    in its last row, whose validation figures are that head's."""
    return [{"epoch": r["epoch"], "phase": md(r["phase"] + (f" (epoch {r['kept_epoch']}'s head kept)"
                                                           if "kept_epoch" in r else "")),
             "train_loss": round(r["train_loss"], 4), "valid_loss": round(r["valid_loss"], 4), "accuracy": round(r["accuracy"], 4),
             "error_rate": round(r["error_rate"], 4), "time": format_seconds(r["seconds"])} for r in tail.epochs]


def show_status(folder: RunFolder) -> dict:
    """The run's heading, Stop/Resume, its message and progress: status.json alone, cheap to redraw."""
    status = folder.status()
    state = status.get("state", "unknown")
    header, button = st.columns([4, 1])
    header.subheader(f"Run {md(folder.run_id)} · {md(state)}")
    if state in ("queued", "running", "stopping"):
        if button.button("Stop", icon=":material/stop:", key=f"stop:{folder.path}", disabled=state == "stopping",
                         help="Finish the current batch, save the model, and end the run."):
            folder.request_stop()
            st.rerun(scope="fragment")
    elif folder.can_resume():
        if button.button("Resume", icon=":material/resume:", key=f"resume:{folder.path}",
                         help="Continue from the last checkpoint: model, optimizer, schedule and position."):
            busy = runs.active_run(folder.path.parent)
            if busy:
                st.warning(f"Run **{md(busy)}** is training on this device. Stop it or wait for it to finish first.")
            else:
                runs.launch(folder.path, resume=True)
                st.rerun()
    message = status.get("message")
    if state == "failed":
        st.error(md(message) if message else "The run failed; its log.txt has the details.")
    elif state == "interrupted":
        st.warning(f"{md(message)} What it learned up to its last finished epoch is kept in its checkpoints.")
    elif message:
        st.caption(md(message))
    show_progress(status)
    return status


def show_progress(status: dict) -> None:
    """The bar: the epoch in progress (numbered as the stop message and the epoch table number it), steps, and
    while the run trains, its speed and time left from the wall time of all its work (core.progress), counted
    down between heartbeats; the bar fills by the share of the run's time done, not by steps."""
    total, step, state = status.get("total_steps") or 0, status.get("step") or 0, status.get("state")
    active = state in ("queued", "running", "stopping")
    if not total:
        if active:
            st.progress(0.0, text="Starting: loading data and weights…")
        return
    parts = []
    if status.get("total_epochs"):
        n, finished = status["total_epochs"], status.get("epoch", 0)
        parts.append(f"{'stopped in ' if state == 'stopped' else ''}epoch "
                     f"{finished if state == 'completed' else min(finished + 1, n)}/{n}")
    parts.append(f"step {step}/{total}")
    fraction = 1.0 if state == "completed" else step / total
    if active:
        left, done = left_now(status)
        if status.get("imgs_per_s"):
            parts.append(f"{status['imgs_per_s']:,.0f} images/s")
        parts.append("estimating the time left…" if left is None else "finishing…" if left < 1 else
                     f"{format_seconds(left)} left")
        fraction = fraction if done is None else done
    st.progress(min(max(fraction, 0.0), 1.0), text=" · ".join(parts))


def use_rate(value: float) -> None:
    st.session_state["lr"] = value


# bench/lr_suggestions (EfficientNet-Lite0, the app's 5 frozen + 3 unfrozen epochs, each suggestion as lr, seeds
# 42 and 0): steep trained better in 4 of 4. Final accuracy steep / valley: digits 64 px 96.4 / 90.3% and 96.7 /
# 93.9%; digits 32 px with 20% wrong labels 88.6 / 78.6% and 90.0 / 78.3%. After the first epoch valley stood at
# 10-27%, steep at 43-78%.
RECOMMENDED_RATE = "steep"
RATE_ADVICE = {
    "steep": "Where the loss falls fastest. With this app's schedule it trained better in every test: on the digits "
             "96% against 90-94% at the end, and on digits with a fifth of the labels wrong 89-90% against 78%.",
    "valley": "fastai's default: a cautious rate well before the loss turns up. In this app's short frozen phase it "
              "learns slowly (10-27% after the first epoch on the digits); pick it if steep's loss blows up.",
}


def rate_suggestions(folder: RunFolder, found: dict) -> None:
    """The finder's curve and its suggestions, each a button that copies it in; the one to pick is marked."""
    st.plotly_chart(lr_find_figure(found["lrs"], found["losses"], found["suggestions"]), key=f"lrfind:{folder.path}")
    for column, (name, value) in zip(st.columns(4), found["suggestions"].items()):
        recommended = name == RECOMMENDED_RATE
        if recommended:
            column.badge("Recommended", icon=":material/thumb_up:", color="green")
        column.button(f"Use {md(name)}: {value:.1e}", key=f"use:{name}:{folder.path}", on_click=use_rate,
                      args=(float(f"{value:.1e}"),), type="primary" if recommended else "secondary",
                      help=RATE_ADVICE.get(name))
    if RECOMMENDED_RATE in found["suggestions"]:
        st.caption(f"**Pick {RECOMMENDED_RATE}.** {RATE_ADVICE[RECOMMENDED_RATE]} Valley: {RATE_ADVICE['valley']} "
                   "(bench/lr_suggestions)")


def show_curves(folder: RunFolder) -> None:
    """Loss and learning-rate curves and the epoch table; new metric rows are read incrementally."""
    key = f"tail:{folder.path}"
    if key not in st.session_state:
        st.session_state[key] = folder.metrics_tail()
    tail: MetricsTail = st.session_state[key]
    tail.poll()
    found = folder.lr_find()
    if found:
        rate_suggestions(folder, found)
    if tail.steps:
        left, right = st.columns(2)
        left.plotly_chart(loss_figure(tail), key=f"loss:{folder.path}")
        right.plotly_chart(lr_figure(tail), key=f"lr:{folder.path}")
    if tail.epochs:
        st.table(epoch_table(tail), hide_index=True)
    st.caption(f"Device: {md(folder.raw_status().get('device', '…'))}")
    if folder.command:
        with st.expander("The same run from a terminal"):
            st.code(folder.command, language="bash")


# While a run trains, the dashboard shares the machine with it (bench/ui_cost measures what a refresh costs
# Chromium and hence the training): the status line redraws every 2 s and the curves every 10 s.
STATUS_EVERY_S, CURVES_EVERY_S = 2.0, 10.0


@st.fragment(run_every=STATUS_EVERY_S)
def live_status(folder: RunFolder) -> None:
    if folder.status().get("state") not in ("queued", "running", "stopping"):
        st.rerun()  # the run just ended: redraw the whole page once, curves complete, without live refresh
    show_status(folder)


@st.fragment(run_every=CURVES_EVERY_S)
def live_curves(folder: RunFolder) -> None:
    show_curves(folder)


st.title("Train")
choose_preset()
start, find = settings_form()
if start or find:
    start_run("lr_find" if find else "train")
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
