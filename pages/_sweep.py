"""The Train page's search: which settings to vary and how, a number of trials or a time budget, Start and Stop.

The search is `python -m core.sweep` started in its own process (core.sweep.launch); each trial is a run that the
page watches like any other, and the Runs page shows the study.
"""
from __future__ import annotations

import time

import streamlit as st

from core.runs import store
from pages._common import current_config, select_run
from pages._text import md

LABELS = {"lr": "Learning rate", "wd": "Weight decay", "label_smoothing": "Label smoothing", "epochs": "Epochs",
          "size": "Image size", "arch": "Backbone", "augment": "fastai's augmentation (on or off)"}


def default_text(rule) -> str:
    from core.sweep.space import Choices

    if isinstance(rule, Choices):
        return ",".join(str(option).lower() if isinstance(option, bool) else str(option) for option in rule.options)
    return f"{int(rule.low)}:{int(rule.high)}" if rule.integer else f"{rule.low:g}:{rule.high:g}"


def search_form() -> None:
    """The settings to search with their ranges, and Start; or, while a search works, what it is doing and Stop."""
    from core.sweep.launch import active_worker

    runs_dir = store.runs_root()
    worker = active_worker(runs_dir)
    with st.expander("Search for better settings (Optuna)", expanded=bool(worker), icon=":material/tune:"):
        if worker:
            show_worker(worker, runs_dir)
        else:
            start_form(runs_dir)
            show_last_log(runs_dir)


def start_form(runs_dir) -> None:
    from core.sweep.launch import command, start
    from core.sweep.space import DEFAULT_SEARCH, SEARCHABLE, search_space

    st.caption("Trains one run after another, each with settings Optuna chooses from what the earlier ones reached; "
               "the first is the settings above. A trial falling behind the others at the same epoch is stopped "
               "early. Each trial is a run: watch it here, compare them on the Runs page.")
    chosen = st.multiselect("Settings to vary", list(SEARCHABLE), default=list(DEFAULT_SEARCH), format_func=LABELS.get,
                            key="sweep_search")
    ranges = {}
    columns = st.columns(3)
    for i, name in enumerate(chosen):
        ranges[name] = columns[i % 3].text_input(f"{LABELS[name]}: from:to, or choices a,b,c",
                                                 default_text(SEARCHABLE[name]), key=f"sweep_range:{name}")
    left, middle, right = st.columns(3)
    trials = left.number_input("Trials", min_value=2, max_value=200, value=10, key="sweep_trials")
    minutes = middle.number_input("Or stop starting trials after (minutes; 0: no limit)", min_value=0, value=0,
                                  key="sweep_minutes")
    study = right.text_input("Study name", value=time.strftime("sweep-%Y%m%d-%H%M"), max_chars=80, key="sweep_study")
    if st.button("Start the search", icon=":material/play_arrow:", disabled=not chosen):
        config = current_config()
        problems = config.problems()
        busy = store.active_run()
        try:
            search_space(",".join(chosen), [f"{name}={text}" for name, text in ranges.items()])
        except ValueError as error:
            st.error(md(f"The ranges: {error}."))
            return
        if problems:
            st.error("These settings cannot be trained: " + "; ".join(f"{k} {v}" for k, v in problems.items()) + ".")
        elif busy:
            st.warning(f"Run **{md(busy)}** is training on this device. Stop it or wait for it to finish first.")
        elif not study.strip():
            st.error("Give the study a name.")
        else:
            start(command(config, chosen, ranges, int(trials), minutes * 60 or None, study.strip(), runs_dir),
                  runs_dir, study.strip(), int(trials))
            st.rerun()


@st.fragment(run_every=2)
def show_worker(worker: dict, runs_dir) -> None:
    """Which trial trains (the page follows it from trial to trial) and Stop; redrawn every 2 s while it works."""
    from core.sweep.launch import active_worker
    from core.sweep.worker import request_stop, stop_requested

    if not active_worker(runs_dir):  # the search ended: the page offers a new one
        st.rerun()
    trial_run = store.active_run(runs_dir)
    st.text(f"Study {worker.get('study', '?')}: {worker.get('trials', '?')} trials in all"
            + (f"; storage {worker['storage']}" if worker.get("storage") else ""))
    if trial_run:
        st.text(f"Training now: run {trial_run}")
        if st.session_state.get("run_id") != trial_run:
            select_run(trial_run)
            st.rerun()
    if stop_requested(runs_dir):
        st.caption("Stopping: the trial training now stops at its next step, and no other starts.")
    elif st.button("Stop the search", icon=":material/stop:", help="The trial training now stops as Stop stops a "
                   "run (it can be resumed as a run); the study keeps every trial that finished."):
        request_stop(runs_dir)
        st.rerun()


def show_last_log(runs_dir) -> None:
    """The end of the searches' log (what the last one said when it ended, or why it could not start)."""
    from core.sweep.launch import LOG_FILE

    try:
        text = (runs_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if st.toggle("Show the last search's log", key="sweep_log"):
        st.code("\n".join(text.splitlines()[-15:]), language=None)
