"""Runs: every run with its name, tags, data, settings and result; compare several on a chosen x-axis; name, tag,
reproduce, export or delete one; learning-rate sweeps listed apart."""
import time

import streamlit as st

from core.formats import format_seconds
from core.runs import compare, store
from core.runs.folder import RunFolder
from pages._common import route_through_app, select_run
from pages._compare import show_curves, show_data_differences
from pages._export import show_export
from pages._study import show_studies
from pages._text import md

route_through_app()
DELETED = "runs_deleted"  # session key: the run just deleted; nothing is shown picked until the user picks again


def table_key(prefix: str, shown: list[store.RunSummary]) -> str:
    """The table's widget key, a new one whenever its rows change. A selection is kept by row position, in the
    browser too (a keyed table keeps its identity whatever its data), so after a delete, a filter or a new run it
    would silently point at other runs; a new key starts the table over."""
    ids, state = [r.run_id for r in shown], st.session_state
    if state.get(f"{prefix}:rows") not in (None, ids):
        state[f"{prefix}:generation"] = state.get(f"{prefix}:generation", 0) + 1
    state[f"{prefix}:rows"] = ids
    generation = state.get(f"{prefix}:generation", 0)
    return f"{prefix}:{generation}" if generation else prefix


def run_row(r: store.RunSummary, with_problem: bool) -> dict:
    # the accuracy and the data's fixes first: what a person comparing runs looks for, in view on a laptop's screen
    return {"run": r.run_id, "name": r.name,
            "best accuracy": None if r.best_accuracy is None else round(r.best_accuracy, 4),
            "dataset": r.dataset, "data fixes": compare.edits_text(r.edits), "state": r.state, "tags": list(r.tags),
            "backbone": r.config.arch, "pretrained": r.config.pretrained, "size": r.config.size,
            "epochs": r.config.epochs + (r.config.freeze_epochs if r.config.pretrained else 0),
            "duration": format_seconds(r.seconds) if r.seconds else "",
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
            **({"problem": r.problem or ""} if with_problem else {})}


def runs_table(trained: list[store.RunSummary]) -> list[store.RunSummary]:
    """The training runs' table, filtered by tag; returns the runs picked in it (the current run at first, none
    after a delete until the user picks again)."""
    all_tags = sorted({tag for r in trained for tag in r.tags}, key=str.casefold)
    wanted = st.multiselect("Show runs tagged", all_tags, key="runs_tag_filter", placeholder="every run",
                            disabled=not all_tags, help="Runs with any of these tags; tag a run below its charts.")
    shown = [r for r in trained if not wanted or set(wanted) & set(r.tags)]
    deleted = st.session_state.get(DELETED)
    current = [i for i, r in enumerate(shown) if r.run_id == st.session_state.get("run_id")]
    default = [] if deleted else current or [0][:len(shown)]
    st.caption("Select one run or several (click the rows' left edge) to compare their curves and settings.")
    table = st.dataframe([run_row(r, any(run.broken for run in trained)) for r in shown], hide_index=True,
                         width="stretch", on_select="rerun", selection_mode="multi-row", placeholder="—",
                         key=table_key("runs_table", shown), selection_default={"selection": {"rows": default}},
                         column_config={"tags": st.column_config.ListColumn("tags")})
    rows = [i for i in (table.selection.rows if table else []) if i < len(shown)]
    if rows:
        st.session_state.pop(DELETED, None)
    elif deleted:
        st.success(f"Deleted run {md(deleted)} and its folder. Select a run in the table to see it.")
    return [shown[i] for i in rows]


def sweeps_table(sweeps: list[store.RunSummary]) -> None:
    """Learning-rate sweeps, apart from the training runs (they train nothing they keep): their suggestions, and
    a delete for the one picked."""
    st.subheader("Learning-rate sweeps")
    st.caption("Each sweep tries rising learning rates for a few steps and suggests one; the Train page copies a "
               "suggestion in with one click.")
    rows = [{"sweep": r.run_id, "state": r.state, "dataset": r.dataset, "backbone": r.config.arch,
             "size": r.config.size, "suggestions": ", ".join(
                 f"{name} {lr:.2g}" for name, lr in RunFolder(r.path).lr_find().get("suggestions", {}).items()),
             "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))} for r in sweeps]
    table = st.dataframe(rows, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                         key=table_key("sweeps_table", sweeps), placeholder="—")
    for i in (table.selection.rows if table else []):
        if i < len(sweeps):
            delete_control(sweeps[i], "sweep")


def naming_form(run: store.RunSummary, known_tags: list[str]) -> None:
    """A display name and tags for the run, saved to its naming.json."""
    with st.form(f"naming:{run.run_id}", border=False):
        left, right, button = st.columns([3, 4, 2], vertical_alignment="bottom")
        name = left.text_input("Name", value=run.name, max_chars=store.NAME_MAX, placeholder=run.run_id,
                               key=f"name:{run.run_id}")
        tags = right.multiselect("Tags", sorted(set(known_tags) | set(run.tags), key=str.casefold),
                                 default=list(run.tags), accept_new_options=True, key=f"tags:{run.run_id}",
                                 max_selections=store.TAGS_MAX, placeholder="type a tag and press Enter")
        if button.form_submit_button("Save name and tags", icon=":material/sell:"):
            store.write_naming(run.path, name, tags)
            st.rerun()


def delete_control(run: store.RunSummary, what: str = "run") -> None:
    """Delete with confirmation; afterwards nothing is picked, and the page says what was deleted."""
    active = RunFolder(run.path).is_active()
    with st.popover(f"Delete this {what}", icon=":material/delete:", disabled=active, key=f"popover:{run.run_id}",
                    help="Stop it first" if active else "Removes the run's folder: curves, checkpoints, predictions."):
        st.write(f"Delete **{md(run.run_id)}** and everything in its folder? This cannot be undone.")
        if st.button("Yes, delete it", key=f"delete:{run.run_id}", type="primary"):
            store.delete_run(run.path)
            if st.session_state.get("run_id") == run.run_id:
                select_run(None)
            st.session_state[DELETED] = run.run_id
            st.rerun()


def show_run(run: store.RunSummary, known_tags: list[str]) -> None:
    st.subheader(f"Run {md(run.run_id)}" + (f" · {md(run.name)}" if run.name else ""))
    if run.broken:
        st.error(md(run.problem) + " Its files were left as they are; delete the run if it is of no use.")
    else:
        st.caption(f"{md(run.state)} · {md(run.dataset)} · {md(run.config.arch)}, {run.config.size} px · best "
                   f"accuracy {'—' if run.best_accuracy is None else f'{run.best_accuracy:.1%}'}")
        st.code(run.command or "(no command recorded)", language="bash")
    naming_form(run, known_tags)
    if run.has_predictions and not run.broken:
        show_export(run)
    delete_control(run)


st.title("Runs")
found = store.list_runs()
trained = [r for r in found if r.task != "lr_find"]
sweeps = [r for r in found if r.task == "lr_find"]
if not trained:
    st.info("No training runs yet. Start one on the **Train** page or with `python -m core.train`.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    if sweeps:
        sweeps_table(sweeps)
    st.stop()

picked = runs_table(trained)
if len(picked) == 1 and picked[0].run_id != st.session_state.get("run_id"):
    select_run(picked[0].run_id)
show_curves(picked)
sound = [r for r in picked if not r.broken]
if len(sound) > 1:
    st.subheader("Settings that differ")
    differences = compare.config_differences({r.label: r.config for r in sound}, {r.label: r.recipe for r in sound})
    if differences:
        st.dataframe(differences, hide_index=True, width="stretch", key="differences")
    else:
        st.caption("These runs used the same settings, and their recipes trained the same layers.")
if len(picked) == 2 and len(sound) == 2:
    show_data_differences(*sorted(picked, key=lambda r: r.created))
known_tags = sorted({tag for r in trained for tag in r.tags})
for run in picked:
    show_run(run, known_tags)
show_studies(trained)
if sweeps:
    sweeps_table(sweeps)
