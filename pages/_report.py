"""A run as one self-contained HTML file: settings, curves, confusion matrix, most-confused pairs, top losses.

It opens in any browser without the app or a network (plotly.js is inlined once), for demos and sharing.
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.attribution import attribute
from core.formats import format_seconds
from core.interpret import Predictions, confusion_matrix, most_confused, per_class_metrics, top_losses
from core.runfolder import RunFolder
from pages._figures import confusion_figure, loss_figure, lr_figure, overlay_grid, to_hwc

if TYPE_CHECKING:
    import torch

STYLE = """body{font-family:system-ui,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{color:#1f4e79}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#eef3f8}code{background:#f4f4f4;padding:2px 4px}"""


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def run_report_html(run_dir: Path, model, run_images: torch.Tensor, predictions: Predictions,
                    class_names: list[str], n_top_losses: int = 12) -> str:
    """The whole report as one HTML string."""
    folder = RunFolder(run_dir)
    request, status, tail = folder.request(), folder.status(), folder.read_metrics()
    matrix = confusion_matrix(predictions.targets, predictions.predicted, len(class_names))
    worst = top_losses(predictions, n_top_losses)
    images = run_images[predictions.item_ids[worst]]
    heats = attribute(model, images, [int(predictions.predicted[p]) for p in worst], "grad_cam")
    titles = [f"{class_names[predictions.targets[p]]}→{class_names[predictions.predicted[p]]} "
              f"loss {predictions.losses[p]:.2f}" for p in worst]
    figures = [loss_figure(tail), lr_figure(tail), confusion_figure(matrix, class_names),
               overlay_grid(to_hwc(images.numpy()), heats, titles, columns=6, opacity=0.45)]
    charts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figures)]
    epochs = [{"epoch": r["epoch"], "phase": r["phase"], "train_loss": f"{r['train_loss']:.4f}",
               "valid_loss": f"{r['valid_loss']:.4f}", "accuracy": f"{r['accuracy']:.4f}",
               "error_rate": f"{r['error_rate']:.4f}", "time": format_seconds(r["seconds"])} for r in tail.epochs]
    settings = [{"setting": k, "value": v} for k, v in request.get("config", {}).items()]
    pairs = [{"actual": a, "predicted": p, "count": n} for a, p, n in most_confused(matrix, class_names)[:15]]
    per_class = [{"class": m.class_name, "precision": f"{m.precision:.3f}", "recall": f"{m.recall:.3f}",
                  "f1": f"{m.f1:.3f}", "support": m.support} for m in per_class_metrics(predictions, class_names)]
    name = html.escape(run_dir.name)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Run {name}</title>
<style>{STYLE}</style></head><body>
<h1>Transfer Learning Studio — run {name}</h1>
<p>State <b>{html.escape(str(status.get('state')))}</b> · validation accuracy
<b>{predictions.accuracy:.1%}</b> on {len(predictions.targets)} images · report made
{time.strftime('%Y-%m-%d %H:%M')}</p>
<h2>Settings</h2>{_table(settings)}
<p>Reproduce: <code>{html.escape(folder.command)}</code></p>
<h2>Training</h2>{charts[0]}{charts[1]}{_table(epochs)}
<h2>Confusion matrix</h2><p>Rows: actual class; columns: predicted class.</p>{charts[2]}
<h2>Most confused</h2>{_table(pairs)}
<h2>Per-class metrics (worst first)</h2>{_table(per_class)}
<h2>Top losses, with Grad-CAM</h2><p>actual→predicted, loss. The heat shows where the model looked.</p>{charts[3]}
</body></html>"""
