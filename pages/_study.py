"""The Runs page's studies: the trials of each Optuna sweep found among the runs, Optuna's own figures, the best
settings and "Train with these settings"."""
from __future__ import annotations

import dataclasses

import streamlit as st

from core.config import TrainConfig
from core.runs import store
from pages._common import SETTINGS
from pages._text import md


def studies_in(runs: list[store.RunSummary]) -> dict[tuple[str, str], list[store.RunSummary]]:
    """The runs that are trials of a study, by (study, storage) as their sweep.json says."""
    from core.sweep.worker import sweep_record

    found: dict[tuple[str, str], list[store.RunSummary]] = {}
    for run in runs:
        record = sweep_record(run.path)
        if isinstance(record.get("study"), str) and isinstance(record.get("storage"), str):
            found.setdefault((record["study"], record["storage"]), []).append(run)
    return found


@st.cache_data(show_spinner="Reading the study…", ttl=5, max_entries=8)
def load_trials(study: str, storage: str) -> list[dict]:
    """Every trial of the study as plain values (number, state, value, params, run, pruned); OSError-like failures
    of the storage come back as ValueError, a sentence."""
    import optuna

    from core.sweep.study import sqlite_file

    database = sqlite_file(storage)
    if database is not None and not database.is_file():  # opening it would make an empty database there
        raise ValueError(f"The study {study}'s database {database} is not there any more.")
    try:
        found = optuna.load_study(study_name=study, storage=storage)
        return [{"trial": t.number, "state": t.state.name.lower(), "accuracy": t.value, **t.params,
                 "run": t.user_attrs.get("run", "")} for t in found.get_trials(deepcopy=False)]
    except Exception as error:  # a database gone, a server not reachable, a password not stored with the runs
        raise ValueError(f"The study {study} could not be read from {storage}: {error}") from None


@st.cache_data(show_spinner="Drawing the study's figures…", max_entries=8)
def figures(study: str, storage: str, finished: int) -> list[tuple[str, object]]:
    """Optuna's figures of the study: history, parallel coordinates, importances (those its trials allow); drawn
    again when another trial has finished."""
    import optuna
    from optuna import visualization as vis

    loaded = optuna.load_study(study_name=study, storage=storage)
    values = {t.value for t in loaded.get_trials(deepcopy=False) if t.value is not None}
    made = []
    for title, plot in (("Accuracy by trial", vis.plot_optimization_history),
                        ("Settings against accuracy", vis.plot_parallel_coordinate),
                        ("Which settings mattered", vis.plot_param_importances)):
        if plot is vis.plot_param_importances and len(values) == 1:
            made.append((title, "Every finished trial reached the same accuracy: no setting mattered more than "
                                "another so far."))
            continue
        try:
            made.append((title, plot(loaded)))
        except (ValueError, RuntimeError) as error:  # too few finished trials for this figure
            made.append((title, str(error)))
    return made


def train_with(config: TrainConfig) -> None:
    """The button's action: these settings become the session's, for the Train page's next Start."""
    for name in SETTINGS:
        st.session_state[name] = getattr(config, name)


def show_studies(runs: list[store.RunSummary]) -> None:
    studies = studies_in(runs)
    if not studies:
        return
    st.subheader("Settings searches (Optuna studies)")
    st.caption("Each trial of a search is a run above, tagged `sweep`; a trial the pruner stopped early says why.")
    keys = sorted(studies, key=lambda key: max(r.created for r in studies[key]), reverse=True)
    study, storage = st.selectbox("Study", keys, format_func=lambda key: f"{key[0]} ({len(studies[key])} runs here)",
                                  key="study_shown")
    st.text(f"Storage: {storage}")
    try:
        trials = load_trials(study, storage)
    except ValueError as error:
        st.error(md(error))
        return
    why = {run.run_id: _why_it_stopped(run) for run in studies[(study, storage)]}
    st.dataframe([{**t, "run": _name(t["run"]), "why it stopped": why.get(_name(t["run"]), "")} for t in trials],
                 hide_index=True, width="stretch", key="study_trials")
    finished = [t for t in trials if t["state"] == "complete" and t["accuracy"] is not None]
    if not finished:
        st.caption("No trial has finished yet.")
        return
    best = max(finished, key=lambda t: t["accuracy"])
    run = next((r for r in studies[(study, storage)] if _name(best["run"]) == r.run_id), None)
    st.success(f"Best so far: trial {best['trial']}, validation accuracy {best['accuracy']:.2%}.")
    st.caption(md(how_sure(best, finished, studies[(study, storage)])))
    if run is not None:
        st.code(run.command or "", language="bash")
        if st.button("Train with these settings", icon=":material/model_training:", key="study_train_with",
                     help="Copies the best trial's settings to the Train page (on today's data, with every fix)."):
            train_with(dataclasses.replace(run.config, edits_upto=-1))
            st.switch_page("pages/train.py")
    else:
        st.caption("The best trial ran on another machine or in another runs folder; its settings are in the table.")
    for title, figure in figures(study, storage, len(finished)):
        st.markdown(f"**{title}**")
        if isinstance(figure, str):
            st.caption(md(figure))
        else:
            st.plotly_chart(figure, key=f"study:{title}")


def how_sure(best: dict, finished: list[dict], runs: list[store.RunSummary]) -> str:
    """The best trial's lead over trial 0 (the starting settings) against what the validation set can tell apart:
    the best of many trials on one validation set is partly luck, and the bench (bench/sweep.py) saw a lead of 1.6
    points on the searched photos turn into 0.8 points behind on another sample of them."""
    import math

    from core.atomic import read_json

    sizes = [read_json(run.path / "data.json").get("n_valid") for run in runs]
    n_valid = next((n for n in sizes if isinstance(n, int) and n > 0), None)
    first = next((t["accuracy"] for t in finished if t["trial"] == 0), None)
    lead = f" Trial 0, the starting settings: {first:.2%} ({(best['accuracy'] - first) * 100:+.1f} points)." \
        if first is not None and best["trial"] != 0 else ""
    if n_valid is None:
        return lead.strip()
    p = best["accuracy"]
    margin = 2 * math.sqrt(max(p * (1 - p), 1e-12) / n_valid)
    return (f"{lead.strip()} On {n_valid:,} validation images an accuracy is known to about ±{margin:.1%} (two "
            "standard errors), and the best of several trials is partly luck: a lead smaller than that may not hold "
            "on other images. Try the best settings on data the search did not see.").strip()


def _name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _why_it_stopped(run: store.RunSummary) -> str:
    """"was pruned after …" or "was stopped with the search", as the trial's sweep.json says; "" otherwise."""
    from core.sweep.worker import sweep_record

    record = sweep_record(run.path)
    why = record.get("pruned") or record.get("stopped")
    return why if isinstance(why, str) else ""
