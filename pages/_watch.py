"""Watching a run on the Train page: its heading with Stop and Resume, its message and progress bar, the loss and
learning-rate curves, fastai's epoch table, and a learning-rate sweep's suggestions; live while it trains."""

import streamlit as st

from core.formats import format_seconds
from core.runs import compare, store
from core.runs.folder import RunFolder
from core.runs.metrics import MetricsTail
from core.train.progress import left_now
from pages._figures import compare_figure, loss_figure, lr_figure, lr_find_figure
from pages._text import md

PHASES = {  # what each phase name in the epoch table means, in a newcomer's words
    "frozen": "only the new head learns, on what the pretrained network sees",
    "late": "the network's last layers learn too, on what its first layers see (computed once)",
    "unfrozen": "every layer learns",
    "scratch": "every layer learns, from random weights",
}


LABEL_SET_SCORES = ("f1_samples", "f1_macro", "map")  # a multi-label run's rows carry these too


def epoch_table(tail: MetricsTail) -> list[dict]:
    """The epoch rows; a frozen phase that ended with an earlier epoch's head (core.train.recipe.KeepBestEpoch) says so
    in its last row, whose validation figures are that head's. A multi-label run's accuracy is fastai's
    accuracy_multi (each yes or no per label), followed by its F1 scores and mean average precision."""
    return [{"epoch": r["epoch"], "phase": md(r["phase"] + (f" (epoch {r['kept_epoch']}'s head kept)"
                                                           if "kept_epoch" in r else "")),
             "train_loss": round(r["train_loss"], 4), "valid_loss": round(r["valid_loss"], 4),
             **({"accuracy_multi": round(r["accuracy"], 4), **{k: round(r[k], 4) for k in LABEL_SET_SCORES}}
                if all(isinstance(r.get(k), (int, float)) for k in LABEL_SET_SCORES) else
                {"accuracy": round(r["accuracy"], 4), "error_rate": round(r["error_rate"], 4)}),
             "time": format_seconds(r["seconds"])} for r in tail.epochs]


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
            busy = store.active_run(folder.path.parent)
            if busy:
                st.warning(f"Run **{md(busy)}** is training on this device. Stop it or wait for it to finish first.")
            else:
                store.launch(folder.path, resume=True)
                st.rerun()
    message = status.get("message")
    if state == "failed":
        st.error(md(message) if message else "The run failed; its log.txt has the details.")
    elif state == "interrupted":
        st.warning(f"{md(message)} What it learned up to its last finished epoch is kept in its checkpoints.")
    elif state == "stopping":  # what the stop waits for: the current batch, or the next chunk of a long pass
        st.caption("Stopping: it ends after the current batch and saves a checkpoint" +
                   (f" (now: {md(message)})." if message else "."))
    elif message:
        st.caption(md(message))
    if state == "stopped":
        from core.sweep.worker import sweep_record

        trial = sweep_record(folder.path)
        if isinstance(trial.get("pruned"), str):  # a trial of a settings search that its study's pruner stopped
            st.info(md(f"This trial of the search {trial.get('study', '')} {trial['pruned']}."))
    show_progress(status)
    return status


def show_progress(status: dict) -> None:
    """The bar: the epoch in progress (numbered as the stop message and the epoch table number it), steps, and
    while the run trains, its speed and time left from the wall time of all its work (core.train.progress), counted
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
    parts.append(f"step {step}/{total}" + (" done: calibrating on the validation images and saving the model"
                                           if active and step >= total else ""))
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
    scored = [r for r in tail.epochs if all(isinstance(r.get(k), (int, float)) for k in LABEL_SET_SCORES)]
    if scored:  # a run of label sets: its scores per epoch
        st.plotly_chart(compare_figure({name: ([r["epoch"] for r in scored], [r[key] for r in scored]) for name, key
                                        in (("accuracy_multi", "accuracy"), *((k, k) for k in LABEL_SET_SCORES))},
                                       "Scores on validation, each epoch", "epoch", "score", markers=True),
                        key=f"scores:{folder.path}")
    if tail.epochs:
        st.table(epoch_table(tail), hide_index=True)
        phases = {r["phase"] for r in tail.epochs}
        st.caption(" · ".join(f"**{name}**: {what}" for name, what in PHASES.items() if name in phases))
    recipe = folder.recipe()
    trained = compare.recipe_text(recipe)
    chosen = ": where to cut was chosen from the network's operation counts, the same on any machine" \
        if recipe.get("late_cut") is not None else ""
    st.caption(f"Device: {md(folder.raw_status().get('device', '…'))}" +
               (f" · The unfrozen epochs train {md(trained)}{chosen}." if trained else ""))
    command = folder.reproduce_command()
    if command:
        with st.expander("The same run from a terminal"):
            st.code(command, language="bash")
            st.caption("It reads the dataset with the edits the run had (--edits-upto: the edit log's entries then), "
                       "whatever was fixed since; leave that flag out to train on the data as it is now.")


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
