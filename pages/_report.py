"""A run as one self-contained HTML file: settings and what the recipe chose, the data with its edits, curves,
confusion matrix, most-confused pairs, calibration and "none of these", top losses.

It opens in any browser without the app or a network (plotly.js is inlined once), for demos and sharing.
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.data.sources import source_label
from core.errors import BrokenRun
from core.formats import format_seconds
from core.inspect.attribution import attribute, grad_cam_layer, grad_cam_note
from core.inspect.interpret import Predictions, confusion_matrix, most_confused, per_class_metrics, top_losses
from core.inspect.trust import trust_figures
from core.runs.compare import recipe_text
from core.runs.folder import RunFolder
from pages._figures import confusion_figure, loss_figure, lr_figure, overlay_grid, to_hwc

if TYPE_CHECKING:
    import torch

STYLE = """body{font-family:system-ui,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{color:#1f4e79}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#eef3f8}code{background:#f4f4f4;padding:2px 4px}
.js-plotly-plot{margin-top:30px}.js-plotly-plot .modebar-container{top:-30px!important}"""
# ^ plotly's toolbar sits in a strip of its own above each chart, not over its title


def standalone(figure):
    """The figure as it reads outside Streamlit. Importing streamlit makes its own template plotly's default: a
    placeholder whose colours the app's front end fills in and whose axes leave no margin for their tick labels,
    so an exported chart lost its axis values and the matrix its row names. plotly_white, with room made for them."""
    figure.update_layout(template="plotly_white")
    return figure.update_xaxes(automargin=True).update_yaxes(automargin=True)


def top_losses_figure(model, images: torch.Tensor, targets: list[int], titles: list[str],
                      size: int) -> tuple[str, object]:
    """(a sentence on the heat maps, the overlay figure): Grad-CAM where the image size allows an informative one."""
    layer = grad_cam_layer(model, size)
    heats = attribute(model, images, targets, "grad_cam") if layer is not None else None
    return grad_cam_note(layer, size), overlay_grid(to_hwc(images.numpy()), heats, titles, columns=4, opacity=0.45,
                                                    height_per_row=230)


def table(rows: list[dict]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _data_section(folder: RunFolder) -> str:
    """How many images the run trained and validated on, and the dataset edits it read them with."""
    record = folder.data_record()
    edits = record.get("edits") if isinstance(record.get("edits"), dict) else {}
    counts = f"{record.get('n_train', '?')} training and {record.get('n_valid', '?')} validation images"
    if not edits:
        return f"<p>{html.escape(counts)}; no record of dataset edits (an older run).</p>"
    changed = f"{edits.get('relabelled', 0)} relabelled, {edits.get('removed', 0)} removed, " \
              f"{edits.get('kept', 0)} marked right"
    position = edits.get("position")
    where = f" (the dataset's edit log as it stood at {position} {'entry' if position == 1 else 'entries'}; later " \
            "fixes are not in this run)" if isinstance(position, int) and position else ""
    batches = edits.get("batches", 0)
    text = f"{counts}, read with {batches} {'batch' if batches == 1 else 'batches'} of edits in force: " \
           f"{changed}{where}." if batches else f"{counts}, with no dataset edits."
    return f"<p>{html.escape(text)}</p>"


def _trust_section(folder: RunFolder, predictions: Predictions, n_classes: int) -> str:
    """Calibration before and after, the temperature, and how "none of these" is decided (pages/_trust.py's)."""
    try:
        figures = trust_figures(folder.trust_path, predictions.raw_probs, predictions.probs, predictions.targets,
                                predictions.unknown_scores)
    except BrokenRun as error:
        return f"<p>{html.escape(str(error))}</p>"
    if figures is None:
        return "<p>This run finished before runs were calibrated.</p>"
    trust = figures.trust
    rows = [{"": "calibration error (ECE, 15 bins)",
             "value": f"{figures.ece_before:.1%} before, {figures.ece_after:.1%} after"},
            {"": "temperature", "value": f"{trust.temperature:.2f}"}]
    if figures.flagged is not None:
        rows.append({"": f"\"not one of the {n_classes} classes\" threshold",
                     "value": f"{trust.threshold:.3f} (distance to the {trust.k}th-nearest training image); "
                              f"{figures.flagged:.1%} of the validation images are past it"})
    return table(rows) + "<p>Every probability shown is the calibrated one: softmax(logits / temperature).</p>"


def settings_rows(folder: RunFolder) -> list[dict]:
    """The run's settings as table rows, with what the recipe chose for the unfrozen epochs."""
    settings = [{"setting": k, "value": source_label(v) if k == "data" else v}  # the zip's name, not its folder
                for k, v in folder.request().get("config", {}).items()]
    trained = recipe_text(folder.recipe())
    if trained:
        settings.append({"setting": "unfrozen epochs trained (chosen by the recipe)", "value": trained})
    return settings


def epoch_rows(epochs: list[dict], figures: tuple[str, ...]) -> list[dict]:
    """The epoch table: losses, then each of `figures` (keys of the metrics rows), then the epoch's time."""
    return [{"epoch": r["epoch"], "phase": r["phase"], "train_loss": f"{r['train_loss']:.4f}",
             "valid_loss": f"{r['valid_loss']:.4f}", **{key: f"{r.get(key, float('nan')):.4f}" for key in figures},
             "time": format_seconds(r["seconds"])} for r in epochs]


def document(run_dir: Path, headline: str, body: str) -> str:
    """The whole page: the run's name, dataset, state and `headline` (HTML), the settings, how to reproduce it and
    its data, then `body` (HTML)."""
    folder = RunFolder(run_dir)
    name = html.escape(run_dir.name)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Run {name}</title>
<style>{STYLE}</style></head><body>
<h1>Transfer Learning Studio — run {name}</h1>
<p>Dataset <b>{html.escape(source_label(folder.config().data))}</b> · state
<b>{html.escape(str(folder.status().get('state')))}</b> · {headline} · report made
{time.strftime('%Y-%m-%d %H:%M')}</p>
<h2>Settings</h2>{table(settings_rows(folder))}
<p>Reproduce: <code>{html.escape(folder.reproduce_command())}</code></p>
<h2>Data</h2>{_data_section(folder)}
{body}
</body></html>"""


def charts_html(figures: list) -> list[str]:
    """Each figure as a <div>, plotly.js inlined once (with the first)."""
    return [standalone(f).to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figures)]


def run_report_html(run_dir: Path, model, run_images: torch.Tensor, predictions: Predictions,
                    class_names: list[str], n_top_losses: int = 12) -> str:
    """The whole report as one HTML string."""
    folder = RunFolder(run_dir)
    tail = folder.read_metrics()
    matrix = confusion_matrix(predictions.targets, predictions.predicted, len(class_names))
    worst = top_losses(predictions, n_top_losses)
    titles = [f"{class_names[predictions.targets[p]]}→{class_names[predictions.predicted[p]]}\n"
              f"loss {predictions.losses[p]:.2f}" for p in worst]
    cam_note, losses_figure = top_losses_figure(model, run_images[predictions.item_ids[worst]],
                                                [int(predictions.predicted[p]) for p in worst], titles,
                                                run_images.shape[-1])
    charts = charts_html([loss_figure(tail), lr_figure(tail), confusion_figure(matrix, class_names), losses_figure])
    pairs = [{"actual": a, "predicted": p, "count": n} for a, p, n in most_confused(matrix, class_names)[:15]]
    per_class = [{"class": m.class_name, "precision": f"{m.precision:.3f}", "recall": f"{m.recall:.3f}",
                  "f1": f"{m.f1:.3f}", "support": m.support} for m in per_class_metrics(predictions, class_names)]
    headline = f"validation accuracy <b>{predictions.accuracy:.1%}</b> on {len(predictions.targets)} images"
    return document(run_dir, headline, f"""<h2>Training</h2>{charts[0]}{charts[1]}
{table(epoch_rows(tail.epochs, ("accuracy", "error_rate")))}
<h2>Confusion matrix</h2><p>Rows: actual class; columns: predicted class.</p>{charts[2]}
<h2>Most confused</h2>{table(pairs)}
<h2>Per-class metrics (worst first)</h2>{table(per_class)}
<h2>Can you trust its probabilities?</h2>{_trust_section(folder, predictions, len(class_names))}
<h2>Top losses, with Grad-CAM</h2><p>Each reads actual→predicted, then its loss. {html.escape(cam_note)}</p>
{charts[3]}""")
