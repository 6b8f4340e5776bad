"""The Runs page's comparison: several runs' curves on one chosen x-axis, and how two runs' data differed."""
from __future__ import annotations

import plotly.colors
import plotly.graph_objects as go
import streamlit as st

from core.runs import compare, store
from core.runs.curves import ALIGNMENTS, Curve, epoch_curve, step_curve
from core.runs.folder import RunFolder
from core.runs.metrics import MetricsTail
from pages._text import md, plot

ALIGN_LABELS = {"epoch": "Epoch", "fine_tune": "Fine-tuning epoch", "time": "Training time"}
FROZEN_NOTE = ("Dotted lines and open markers: the pretrained body was frozen there (only the new head learned). "
               "Line up by **fine-tuning epoch** to compare runs whose frozen phases differ.")


def compare_figure(curves: dict[str, Curve], title: str, x_title: str, y_title: str, markers: bool = False,
                   unfrozen_at_zero: bool = False) -> go.Figure:
    """One colour per run ({label: Curve}); its frozen part dotted with open markers, the rest solid."""
    figure = go.Figure()
    palette = plotly.colors.qualitative.Plotly
    for i, (label, curve) in enumerate(curves.items()):
        colour, name = palette[i % len(palette)], plot(label)
        frozen = [k for k, f in enumerate(curve.frozen) if f]
        trained = [k for k, f in enumerate(curve.frozen) if not f]
        if trained and frozen:  # the solid line starts where the frozen one ends, so the run reads as one line
            trained = [frozen[-1]] + trained
        for part, dotted in ((frozen, True), (trained, False)):
            if not part:
                continue
            figure.add_scatter(x=[curve.x[k] for k in part], y=[curve.y[k] for k in part], name=name,
                               legendgroup=name, showlegend=not dotted or not trained,
                               mode="lines+markers" if markers else "lines",
                               line=dict(color=colour, dash="dot" if dotted else "solid"),
                               marker=dict(color=colour, size=8, symbol=["circle-open" if curve.frozen[k] else
                                                                         "circle" for k in part]),
                               hovertemplate=f"{name}{' (frozen)' if dotted else ''}<br>%{{x:.3g}}: %{{y:.4g}}"
                                             "<extra></extra>")
    if unfrozen_at_zero and any(any(curve.frozen) for curve in curves.values()):
        figure.add_vline(x=0, line=dict(color="grey", dash="dash", width=1), annotation_text="unfrozen",
                         annotation_position="bottom right")
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=340,
                         margin=dict(l=0, r=0, t=60, b=0), legend=dict(orientation="h", y=-0.3))
    return figure


def _no_curve_reason(run: store.RunSummary) -> str:
    """Why a run draws no curve, as a sentence (text, for md)."""
    message = RunFolder(run.path).status().get("message", "")
    if run.state == "failed":
        return f"Run {run.label} failed before it finished an epoch, so it has no curve. {message}"
    return f"Run {run.label} has not finished an epoch yet, so it has no curve ({run.state})."


def show_curves(picked: list[store.RunSummary]) -> None:
    """Accuracy, validation loss and training loss of the picked runs on the x-axis the user chooses; a
    sentence instead of empty charts for runs with no finished epoch."""
    metrics: dict[str, MetricsTail] = {r.label: RunFolder(r.path).read_metrics() for r in picked if not r.broken}
    for run in picked:
        if not run.broken and not metrics[run.label].epochs:
            st.info(md(_no_curve_reason(run)))
    metrics = {label: m for label, m in metrics.items() if m.epochs}
    if not metrics:
        return
    align = st.radio("Line up the curves by", list(ALIGNMENTS), format_func=ALIGN_LABELS.get, horizontal=True,
                     key="runs_align", help="Epoch: as trained. Fine-tuning epoch: every run's last frozen epoch "
                     "at 0, so runs with different frozen phases line up. Training time: minutes spent training.")
    x_title, at_zero = ALIGNMENTS[align], align == "fine_tune"
    left, right = st.columns(2)
    for column, key, title, y_title in ((left, "accuracy", "Validation accuracy", "accuracy"),
                                        (right, "valid_loss", "Validation loss", "loss")):
        curves = {label: epoch_curve(m.epochs, key, align) for label, m in metrics.items()}
        column.plotly_chart(compare_figure(curves, title, x_title, y_title, markers=True, unfrozen_at_zero=at_zero),
                            key=f"compare_{key}")
    curves = {label: step_curve(m.steps, m.epochs, align) for label, m in metrics.items()}
    st.plotly_chart(compare_figure(curves, "Training loss", x_title, "loss", unfrozen_at_zero=at_zero),
                    key="compare_train_loss")
    if any(any(row["phase"] == "frozen" for row in m.epochs) for m in metrics.values()):
        st.caption(FROZEN_NOTE)


def show_data_differences(first: store.RunSummary, second: store.RunSummary) -> None:
    """How the two runs' data differed, image by image, beside how their accuracy differed."""
    st.subheader("Data that differs")
    changes = compare.data_differences(first.path, second.path)
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
