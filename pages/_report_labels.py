"""A run of label sets as one self-contained HTML file, as pages/_report.py makes one for a run of one label per
image: settings and what the recipe chose, the data with its edits, curves with each epoch's accuracy_multi and F1,
the scores at the run's thresholds, per-label metrics, which label is missed while which other is added, "none of
these", and the top losses titled with what they missed (−) and added (+), with Grad-CAM of that label."""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.data.labelscores import scores
from core.errors import BrokenRun
from core.inspect.labelsets import (
    MINUS,
    LabelSetPredictions,
    missed_while_added,
    most_confused_labels,
    per_label_metrics,
)
from core.inspect.labelsets import top_losses as label_top_losses
from core.inspect.trust import Trust, flagged_share
from core.runs.folder import RunFolder
from pages._figures import confusion_figure, loss_figure, lr_figure
from pages._report import charts_html, document, epoch_rows, table, top_losses_figure

if TYPE_CHECKING:
    import torch

SCORED = ("accuracy_multi", "f1_samples", "f1_macro", "map")  # each epoch row's figures for label sets


def _scores_section(predictions: LabelSetPredictions, class_names: list[str]) -> str:
    """The four scores at the run's thresholds, and which thresholds they are."""
    found = scores(predictions.probs, predictions.targets, predictions.thresholds)
    rows = [{"": "accuracy_multi (each yes or no)", "value": f"{found['accuracy_multi']:.1%}"},
            {"": "F1 per image (samples)", "value": f"{found['f1_samples']:.3f}"},
            {"": "F1 per label (macro)", "value": f"{found['f1_macro']:.3f}"},
            {"": "mean average precision", "value": f"{found['map']:.3f}"}]
    if predictions.thresholds_saved:
        said = ("Each label is given where its probability reaches this run's own threshold for it, chosen on the "
                "validation images after training: " +
                ", ".join(f"{name} {t:.2f}" for name, t in zip(class_names, predictions.thresholds)) + ".")
    else:
        said = "This run has no readable thresholds.json: each label is given where its probability reaches 0.5."
    return table(rows) + f"<p>{html.escape(said)}</p>"


def _trust_section(folder: RunFolder, predictions: LabelSetPredictions, n_labels: int) -> str:
    """Why there is no calibration to show, and how "none of these" is decided (pages/_trust.py's sentences)."""
    said = ("Calibration is measured on one softmax answer per image; a run of label sets gives each label its own "
            "sigmoid probability and a threshold chosen on the validation images instead.")
    try:
        trust = Trust.load(folder.trust_path) if folder.trust_path.exists() else None
    except BrokenRun as error:
        return f"<p>{html.escape(said)}</p><p>{html.escape(str(error))}</p>"
    flagged = None if trust is None else flagged_share(trust, predictions.unknown_scores)
    if flagged is None:
        return f"<p>{html.escape(said)}</p>"
    row = {"": "\"none of these\" threshold", "value": f"{trust.threshold:.3f} (distance to the {trust.k}th-nearest "
           f"training image); {flagged:.1%} of the validation images are past it"}
    return f"<p>{html.escape(said)}</p>" + table([row]) + (
        f"<p>An image past it is unlike every image the run learnt from, whatever labels it is given (of the "
        f"{n_labels} labels).</p>")


def _top_losses(model, run_images: torch.Tensor, predictions: LabelSetPredictions, class_names: list[str],
                k: int) -> tuple[str, object]:
    """(the Grad-CAM sentence, the figure) of the k highest losses, each heat map that of the label it got most
    wrong: its surest miss (lowest probability among labels it carries and was not given), else its surest false
    addition."""
    rows = label_top_losses(predictions, class_names, k)
    positions = np.array([row.position for row in rows], dtype=np.int64)
    targets = []
    for p in positions:
        missed, added = np.flatnonzero(predictions.missed[p]), np.flatnonzero(predictions.added[p])
        probs = predictions.probs[p]
        targets.append(int(missed[np.argmin(probs[missed])]) if len(missed) else
                       int(added[np.argmax(probs[added])]) if len(added) else int(np.argmax(probs)))
    return top_losses_figure(model, run_images[predictions.item_ids[positions]], targets, [row.title for row in rows],
                             run_images.shape[-1])


def label_sets_report_html(run_dir: Path, model, run_images: torch.Tensor, predictions: LabelSetPredictions,
                           class_names: list[str], n_top_losses: int = 12) -> str:
    """The whole report of a run of label sets as one HTML string."""
    folder = RunFolder(run_dir)
    tail = folder.read_metrics()
    matrix = missed_while_added(predictions)
    cam_note, losses_figure = _top_losses(model, run_images, predictions, class_names, n_top_losses)
    charts = charts_html([loss_figure(tail), lr_figure(tail),
                          confusion_figure(matrix, class_names, axes=("Missed", "Added")), losses_figure])
    per_label = [{"label": m.label, "threshold": f"{m.threshold:.2f}", "precision": f"{m.precision:.3f}",
                  "recall": f"{m.recall:.3f}", "f1": f"{m.f1:.3f}", "support": m.support, "missed": m.missed,
                  "added": m.added} for m in per_label_metrics(predictions, class_names)]
    pairs = [{"missed": a, "added": b, "images": n} for a, b, n in most_confused_labels(matrix, class_names)[:15]]
    f1 = scores(predictions.probs, predictions.targets, predictions.thresholds)["f1_samples"]
    headline = (f"several labels per image · F1 per image <b>{f1:.3f}</b> on {len(predictions.targets)} validation "
                "images")
    epochs = table(epoch_rows(tail.epochs, SCORED))
    return document(run_dir, headline, f"""<h2>Training</h2>{charts[0]}{charts[1]}{epochs}
<h2>Scores at the run's thresholds</h2>{_scores_section(predictions, class_names)}
<h2>Per-label metrics (worst F1 first)</h2>{table(per_label)}
<h2>Missed one label, added another</h2><p>Rows: a label the model missed; columns: a label it added to the same
image. The label sets' counterpart of a confusion matrix.</p>{charts[2]}{table(pairs)}
<h2>Can you trust its probabilities?</h2>{_trust_section(folder, predictions, len(class_names))}
<h2>Top losses, with Grad-CAM</h2><p>Each reads the image's true label set, then {MINUS} before each label it missed
and + before each it was falsely given, then its loss. The heat map is that of the label it got most wrong: the
missed label of lowest probability, else the added label of highest.
{html.escape(cam_note)}</p>{charts[3]}""")
