"""Train: choose a backbone and sizes, start a run as its own process, and watch it live."""
from pathlib import Path

import streamlit as st

from core import runs
from core.callbacks import format_seconds
from core.config import PRESETS, TrainConfig
from core.sources import source_label
from core.models import ARCHS
from pages._common import DEFAULTS, IMAGE_SIZES, current_augment, current_run_dir, route_through_app, select_run
from pages._figures import loss_figure, lr_figure, lr_find_figure

route_through_app()

BATCH_SIZES = [8, 16, 32, 64, 128, 256]
LEARNING_RATES = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2]

st.title("Train")
runs_dir = runs.runs_root()
state = st.session_state
PRESET_LABELS = {"": "Your own settings", "lesson1": "fastai lesson 1: Oxford pets, ResNet-34, 224 px, 4 + 2 epochs"}
preset_name = st.selectbox("Start from", list(PRESET_LABELS), format_func=PRESET_LABELS.get,
                           index=list(PRESET_LABELS).index(state.get("preset", "")),
                           help="A preset fills in the settings below; change any of them before starting.")
if preset_name != state.get("preset", ""):
    state["preset"] = preset_name
    for key, value in PRESETS.get(preset_name, {}).items():  # dataset, size and resize live on the Data page
        if key in ("data", "size", "resize", "lr"):
            state[{"data": "dataset", "size": "image_size"}.get(key, key)] = value
preset = {**DEFAULTS.to_dict(), **PRESETS.get(preset_name, {})}
if preset_name == "lesson1":
    st.caption("Four epochs training the new head, then two with every layer at rates from 1e-6 to 1e-4 "
               "(fastai's `slice(1e-6, 1e-4)`). The pets download once (800 MB) and ResNet-34's weights too: "
               "this needs a network the first time.")

with st.form("settings"):
    augment = current_augment()
    st.caption(f"Dataset: **{source_label(state['dataset'])}**, images made square by {state['resize']}, "
               f"{'with augmentation' if augment.active else 'no augmentation'} (change these on the Data page)")
    left, right = st.columns(2)
    arch = left.selectbox("Backbone", list(ARCHS), format_func=lambda key: ARCHS[key].label,
                          index=list(ARCHS).index(preset["arch"]),
                          help="EfficientNet-Lite0's ImageNet weights ship with the app and work offline; "
                               "ResNet weights download once from torchvision, then are cached.")
    pretrained = left.toggle("Start from ImageNet weights", value=preset["pretrained"],
                             help="Off trains every layer from random weights (from scratch), with no frozen phase.")
    epochs = left.number_input("Epochs", min_value=1, max_value=200, value=preset["epochs"],
                               help="Passes over the training images with every layer learning.")
    freeze_epochs = left.number_input("Frozen epochs first", min_value=0, max_value=20, value=preset["freeze_epochs"],
                                      help="With pretrained weights: epochs that train only the new head "
                                           "before the whole network is fine-tuned. Without augmentation the "
                                           "body's features are computed once and these take about a second.")
    size = right.select_slider("Image size (pixels)", IMAGE_SIZES, value=st.session_state["image_size"],
                               help="Every image is resized to this square. 64 px trains in seconds on a CPU.")
    bs = right.select_slider("Batch size", BATCH_SIZES, value=preset["bs"],
                             help="Images per step. Larger is faster per image if memory allows.")
    chosen_lr = state.get("lr", DEFAULTS.lr)
    lr = right.select_slider("Learning rate", sorted(set(LEARNING_RATES) | {chosen_lr}), value=chosen_lr,
                             format_func=lambda v: f"{v:.2g}", help="The peak rate of the one-cycle schedule for "
                             "the new head; earlier layers get less. The finder below suggests one.")
    with st.expander("More settings"):
        left, right = st.columns(2)
        wd = left.select_slider("Weight decay", [0.0, 1e-4, 1e-3, 1e-2, 0.05, 0.1], value=DEFAULTS.wd,
                                format_func=lambda v: f"{v:g}",
                                help="Pulls weights towards zero a little every step, against over-fitting.")
        smoothing = left.slider("Label smoothing", 0.0, 0.3, DEFAULTS.label_smoothing, 0.05,
                                help="Teaches the model to be a little less sure: often better on noisy labels. "
                                     "0.1 is a common choice.")
        patience = right.number_input("Stop early after epochs without improvement (0: never)", 0, 50,
                                      DEFAULTS.patience, help="Ends the run when the validation loss has not "
                                                              "improved for this many epochs in a row.")
        keep_best = right.toggle("Keep the best epoch's weights", value=DEFAULTS.keep_best,
                                 help="At the end, go back to the epoch with the best validation accuracy.")
        adapt_bn = right.toggle("Let BatchNorm statistics follow this data", value=DEFAULTS.adapt_bn,
                                help="fastai's behaviour. Off (the default) keeps the pretrained body's ImageNet "
                                     "statistics, which lets the frozen epochs train on features computed once; "
                                     "on, the frozen epochs run the whole network every time.")
    start_column, find_column = st.columns([1, 3])
    start = start_column.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
    find = find_column.form_submit_button("Find a learning rate", icon=":material/query_stats:",
                                          help="Sweeps the rate from tiny to huge over ~100 batches and suggests "
                                               "one where the loss falls fastest without blowing up (fastai's "
                                               "lr_find). Trains nothing it keeps.")

if start or find:
    st.session_state["image_size"], st.session_state["lr"] = size, lr
    config = TrainConfig(data=state["dataset"], label_regex=state["label_regex"], resize=state["resize"], arch=arch,
                         pretrained=pretrained, size=size, bs=bs, epochs=int(epochs), freeze_epochs=int(freeze_epochs),
                         lr=lr, flip=augment.flip, rotate=augment.rotate, zoom=augment.zoom, lighting=augment.lighting,
                         wd=wd, label_smoothing=smoothing, patience=int(patience), keep_best=keep_best, adapt_bn=adapt_bn,
                         unfrozen_lr_min=preset["unfrozen_lr_min"], unfrozen_lr_max=preset["unfrozen_lr_max"])
    busy = runs.active_run(runs_dir)
    if busy:
        st.warning(f"Run **{busy}** is training on this device. Stop it or wait for it to finish, then start again.")
    else:
        run_dir = runs.create_run(config, runs_dir, task="lr_find" if find else "train")
        runs.launch(run_dir)
        select_run(run_dir.name)
        st.rerun()


def epoch_table(tail: runs.MetricsTail) -> list[dict]:
    return [{"epoch": r["epoch"], "phase": r["phase"], "train_loss": round(r["train_loss"], 4),
             "valid_loss": round(r["valid_loss"], 4), "accuracy": round(r["accuracy"], 4),
             "error_rate": round(r["error_rate"], 4), "time": format_seconds(r["seconds"])} for r in tail.epochs]


def show_status(run_dir: Path) -> dict:
    """The run's heading, Stop/Resume, its message and progress: status.json alone, cheap to redraw."""
    status = runs.read_status(run_dir)
    state = status.get("state", "unknown")
    header, button = st.columns([4, 1])
    header.subheader(f"Run {run_dir.name} · {state}")
    if runs.is_active(status):
        if button.button("Stop", icon=":material/stop:", key=f"stop:{run_dir}", disabled=state == "stopping",
                         help="Finish the current batch, save the model, and end the run."):
            runs.request_stop(run_dir)
            st.rerun(scope="fragment")
    elif runs.can_resume(run_dir):
        if button.button("Resume", icon=":material/resume:", key=f"resume:{run_dir}",
                         help="Continue from the last checkpoint: model, optimizer, schedule and position."):
            busy = runs.active_run(run_dir.parent)
            if busy:
                st.warning(f"Run **{busy}** is training on this device. Stop it or wait for it to finish first.")
            else:
                runs.launch(run_dir, resume=True)
                st.rerun()
    message = status.get("message")
    if state == "failed":
        st.error(message or "The run failed; its log.txt has the details.")
    elif state == "interrupted":
        st.warning(f"{message} What it learned up to its last finished epoch is kept in its checkpoints.")
    elif message:
        st.caption(message)

    total, step = status.get("total_steps") or 0, status.get("step") or 0
    if total:
        parts = [f"epoch {status.get('epoch', 0)}/{status['total_epochs']}"] if status.get("total_epochs") else []
        parts.append(f"step {step}/{total}")
        if runs.is_active(status) and status.get("imgs_per_s"):
            parts += [f"{status['imgs_per_s']:.0f} images/s", f"{format_seconds(status.get('eta_s', 0))} left"]
        st.progress(min(step / total, 1.0), text=" · ".join(parts))
    elif runs.is_active(status):
        st.progress(0.0, text="Starting: loading data and weights…")
    return status


def show_curves(run_dir: Path) -> None:
    """Loss and learning-rate curves and the epoch table; new metric rows are read incrementally."""
    key = f"tail:{run_dir}"
    if key not in st.session_state:
        st.session_state[key] = runs.MetricsTail(run_dir / "metrics.jsonl")
    tail: runs.MetricsTail = st.session_state[key]
    tail.poll()
    found = runs.read_json(run_dir / "lr_find.json")
    if found:
        st.plotly_chart(lr_find_figure(found["lrs"], found["losses"], found["suggestions"]), key=f"lrfind:{run_dir}")
        for column, (name, value) in zip(st.columns(4), found["suggestions"].items()):
            if column.button(f"Use {name}: {value:.1e}", key=f"use:{name}:{run_dir}"):
                st.session_state["lr"] = float(f"{value:.1e}")
                st.rerun()
    if tail.steps:
        left, right = st.columns(2)
        left.plotly_chart(loss_figure(tail), key=f"loss:{run_dir}")
        right.plotly_chart(lr_figure(tail), key=f"lr:{run_dir}")
    if tail.epochs:
        st.table(epoch_table(tail), hide_index=True)
    st.caption(f"Device: {runs.read_status(run_dir).get('device', '…')}")
    command = runs.read_json(run_dir / "config.json").get("command")
    if command:
        with st.expander("The same run from a terminal"):
            st.code(command, language="bash")


# While a run trains, the dashboard shares the machine with it (bench/ui_cost). Each refresh is a fragment run,
# and on two CPU cores Chromium spends ~50 ms on one that redraws the status line and ~0.25 s on one that redraws
# the two plotly charts, all taken from the training. So the status line redraws every 2 s and the curves every
# 10 s (TensorBoard reloads every 30 s); a curve a few seconds old loses nothing.
STATUS_EVERY_S, CURVES_EVERY_S = 2.0, 10.0


@st.fragment(run_every=STATUS_EVERY_S)
def live_status(run_dir: Path) -> None:
    st.session_state[f"live:{run_dir}"] = True
    status = show_status(run_dir)
    if not runs.is_active(status):
        st.session_state[f"live:{run_dir}"] = False
        st.rerun()  # the run just ended: redraw the whole page once, curves complete, without live refresh


@st.fragment(run_every=CURVES_EVERY_S)
def live_curves(run_dir: Path) -> None:
    show_curves(run_dir)


run_dir = current_run_dir()
if run_dir is None:
    st.info("Choose settings and press **Start training**. The run trains in its own process: switch pages, "
            "refresh, or open a second tab, and it keeps going.")
elif runs.is_active(runs.read_status(run_dir)):
    live_status(run_dir)
    live_curves(run_dir)
else:
    show_status(run_dir)
    show_curves(run_dir)
