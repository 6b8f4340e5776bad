"""Runs: every run with its settings and result; compare several; reproduce or delete one."""
import time

import streamlit as st

from core import runs
from core.errors import BrokenRun, DataError
from core.export import ExportError, describe, export_run, read_verification, zip_export
from core.formats import format_seconds
from core.runfolder import RunFolder
from pages._common import route_through_app, select_run
from pages._figures import compare_figure
from pages._text import md

route_through_app()

def show_data_differences(first: runs.RunSummary, second: runs.RunSummary) -> None:
    """How the two runs' data differed, image by image, beside how their accuracy differed."""
    st.subheader("Data that differs")
    changes = runs.data_differences(first.path, second.path)
    if changes is None:
        st.caption("One of these runs is older than the record of the images it trained on.")
        return
    columns = st.columns(4)
    for column, name in zip(columns, ("relabelled", "removed", "added")):
        column.metric(f"Images {name}", len(changes[name]))
    if first.best_accuracy is not None and second.best_accuracy is not None:
        columns[3].metric("Best accuracy", f"{second.best_accuracy:.1%}",
                          f"{(second.best_accuracy - first.best_accuracy) * 100:+.1f} points")
    st.caption(f"From {md(first.run_id)} (older) to {md(second.run_id)} (newer).")
    rows = [{"image": name, "change": f"{a} → {b}"} for name, a, b in changes["relabelled"]] + \
        [{"image": name, "change": "removed"} for name in changes["removed"]] + \
        [{"image": name, "change": "added"} for name in changes["added"]]
    if rows:
        st.dataframe(rows[:500], hide_index=True, width="stretch", key="data_differences")


def show_export(run: runs.RunSummary) -> None:
    """Export and verify on a click (seconds on a GPU, up to a few minutes on a CPU), then the zip to download with
    what the verification found; a run exported before shows its verification and zip at once."""
    if st.button("Export and verify", key=f"export:{run.run_id}", icon=":material/verified:",
                 help="Writes TorchScript and ONNX files that take plain RGB pixels, runs both over every validation "
                 "image and checks they predict exactly like the app."):
        with st.spinner("Exporting, then checking both files on every validation image…"):
            try:
                export_run(run.path)
            except (ExportError, BrokenRun, DataError, FileNotFoundError) as error:
                st.error(md(error))
    verification = read_verification(run.path)
    if verification:
        st.caption(md(describe(verification)))
        st.download_button("Download the export (TorchScript, ONNX, weights, classes)",
                           lambda run_dir=run.path: zip_export(run_dir), file_name=f"{run.run_id}-export.zip",
                           mime="application/zip", on_click="ignore", icon=":material/download:",
                           key=f"download:{run.run_id}", help="A zip with model.onnx, model.torchscript.pt, "
                           "weights.safetensors, classes.json, preprocessing.json and verification.json; the README "
                           "shows how to use it.")


st.title("Runs")
found = runs.list_runs()
if not found:
    st.info("No runs yet. Start one on the **Train** page or with `python -m core.train`.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

rows = [{"run": r.run_id, "state": r.state, "backbone": r.config.arch, "pretrained": r.config.pretrained,
         "size": r.config.size, "epochs": r.config.epochs + (r.config.freeze_epochs if r.config.pretrained else 0),
         "best accuracy": None if r.best_accuracy is None else round(r.best_accuracy, 4),
         "duration": format_seconds(r.seconds) if r.seconds else "",
         "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
         **({"problem": r.problem or ""} if any(run.broken for run in found) else {})} for r in found]
st.caption("Select one run or several (click the rows' left edge) to compare their curves and settings.")
table = st.dataframe(rows, hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row",
                     key="runs_table")
picked = [found[i] for i in (table.selection.rows if table else [])]
if not picked:
    current = st.session_state.get("run_id")
    picked = [r for r in found if r.run_id == current] or found[:1]

if len(picked) == 1 and picked[0].run_id != st.session_state.get("run_id"):
    select_run(picked[0].run_id)
metrics = {r.run_id: RunFolder(r.path).read_metrics() for r in picked if not r.broken}
left, right = st.columns(2)
left.plotly_chart(compare_figure({rid: ([e["epoch"] for e in m.epochs], [e["accuracy"] for e in m.epochs])
                                  for rid, m in metrics.items()}, "Validation accuracy", "epoch", "accuracy",
                                 markers=True), key="compare_accuracy")
right.plotly_chart(compare_figure({rid: ([e["epoch"] for e in m.epochs], [e["valid_loss"] for e in m.epochs])
                                   for rid, m in metrics.items()}, "Validation loss", "epoch", "loss", markers=True),
                   key="compare_valid_loss")
st.plotly_chart(compare_figure({rid: ([s["step"] for s in m.steps], [s["loss"] for s in m.steps])
                                for rid, m in metrics.items()}, "Training loss", "step", "loss"),
                key="compare_train_loss")

if len(metrics) > 1:
    st.subheader("Settings that differ")
    differences = runs.config_differences({r.run_id: r.config for r in picked if not r.broken})
    if differences:
        st.dataframe(differences, hide_index=True, width="stretch", key="differences")
    else:
        st.caption("These runs used the same settings.")
if len(picked) == 2 and len(metrics) == 2:
    show_data_differences(*sorted(picked, key=lambda r: r.created))

for run in picked:
    st.subheader(f"Run {md(run.run_id)}")
    if run.broken:
        st.error(md(run.problem) + " Its files were left as they are; delete the run if it is of no use.")
    else:
        st.caption(f"{md(run.state)} · {md(run.config.arch)}, {run.config.size} px · best accuracy "
                   f"{'—' if run.best_accuracy is None else f'{run.best_accuracy:.1%}'}")
        st.code(run.command or "(no command recorded)", language="bash")
    if run.has_predictions and not run.broken:
        show_export(run)
    active = RunFolder(run.path).is_active()
    with st.popover("Delete this run", icon=":material/delete:", disabled=active, key=f"popover:{run.run_id}",
                    help="Stop it first" if active else "Removes the run's folder: curves, checkpoints, predictions."):
        st.write(f"Delete **{md(run.run_id)}** and everything in its folder? This cannot be undone.")
        if st.button("Yes, delete it", key=f"delete:{run.run_id}", type="primary"):
            runs.delete_run(run.path)
            if st.session_state.get("run_id") == run.run_id:
                select_run(None)
            st.rerun()
