"""The data loop on a dataset source: review its labels, record fixes, take them back, export the mended set.

    python -m core.data suspects PATH [--json] [--top N]   # images whose label (or label set) is probably wrong;
                                                            # near-duplicates
    python -m core.data edit PATH EDITS.json                # [{"file": ..., "label": NEW_LABEL or null}, ...]
    python -m core.data undo PATH                           # take back the last batch of edits
    python -m core.data export PATH OUT.zip                 # the mended dataset as a new zip
Fixes go to the dataset's edit log (core.data.edits); the images themselves are never touched.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

from core.config import TrainConfig
from core.data.edits import relative_file
from core.data.images import LabeledImages
from core.data.load import edit_log_for, inspect_source, load_source, split_indices
from core.errors import DataError
from core.fix.labelsets import LabelSetReview, label_set_suspect, review_label_sets
from core.fix.suspects import LabelReview, near_duplicates, review_labels

REVIEW_SIZE = 64  # the image size features are computed at: seconds on a CPU, and what bench/label_noise measures


def valid_mask(data: LabeledImages, valid_pct: float = TrainConfig.valid_pct, seed: int = TrainConfig.seed):
    """Which images a run with these settings (the defaults: the Train page's) validates on."""
    import torch

    mask = torch.zeros(len(data), dtype=torch.bool)
    mask[split_indices(data, valid_pct, seed)[1]] = True
    return mask


def review(source: str, label_regex: str | None = None,
           size: int = REVIEW_SIZE) -> tuple[LabeledImages, LabelReview | LabelSetReview]:
    """The dataset as its edits leave it, and the review of its labels (core.fix.labelsets' of its label sets when it
    has several labels per image)."""
    data = load_source(source, size, label_regex=label_regex)
    return data, (review_label_sets if data.multi_label else review_labels)(data, size=size)


def evidence_against(data: LabeledImages, result: LabelReview | LabelSetReview):
    """(N,) how much of the evidence is against each image's label (0-1), in dataset order: one minus the
    out-of-sample probability of its label; of a label set, one minus cleanlab's label quality score."""
    import numpy as np

    if isinstance(result, LabelSetReview):
        return result.scores
    return 1 - result.probs[np.arange(len(data)), data.labels.numpy()]


def plan(source: str, label_regex: str | None = None, add: int = 100, run_dir: Path | None = None,
         size: int = REVIEW_SIZE):
    """What to collect next for the dataset as its edits leave it (core.fix.plan's CollectPlan; of label sets,
    core.fix.plan_labels' LabelSetPlan); with a run, its split and its recall."""
    return plan_from(plan_inputs(source, label_regex, run_dir, size), add)


def plan_from(inputs: tuple, add: int):
    """The plan from plan_inputs' answer, for `add` more images: a class's, or a label's for label sets (N, C)."""
    from core.fix.plan import collect_plan
    from core.fix.plan_labels import collect_label_plan

    features, labels, names, folds, recall = inputs
    return (collect_label_plan if labels.dim() == 2 else collect_plan)(features, labels, names, folds, add=add,
                                                                        **recall)


def plan_inputs(source: str, label_regex: str | None = None, run_dir: Path | None = None,
                size: int = REVIEW_SIZE) -> tuple:
    """What a plan is made from, whatever N: (features, labels, class names, folds, keyword arguments: the run's
    recall and its name). The Data page keeps it while a person moves the number of images."""
    from core.fix.plan import plan_folds
    from core.fix.plan_labels import label_set_folds
    from core.fix.suspects import pretrained_features
    from core.runs.folder import RunFolder

    data = load_source(source, size, label_regex=label_regex)
    config = RunFolder(run_dir).config() if run_dir else TrainConfig()
    train, valid = split_indices(data, config.valid_pct, config.seed)
    predictions = run_label_set_predictions if data.multi_label else run_predictions
    recall = {"run": predictions(run_dir, data.class_names) if run_dir else None,
              "recall_from": f"run {run_dir.name}" if run_dir else "the probe"}
    folds = (label_set_folds if data.multi_label else plan_folds)(data.labels, train, valid)
    return pretrained_features(data, size=size), data.labels, data.class_names, folds, recall


def run_predictions(run_dir: Path, class_names: tuple[str, ...]):
    """(calibrated probabilities (V, C) of the run's validation images, columns in class_names' order; their labels
    (V,) as indices into class_names); refused when the run knew other classes."""
    import numpy as np

    from core.runs.folder import RunFolder

    folder = RunFolder(run_dir)
    known = folder.class_names()
    if not folder.has_predictions() or sorted(known) != sorted(class_names):
        raise DataError(f"Run {run_dir.name} has no predictions for this dataset's classes; leave the run out and "
                        "the plan measures recall itself.")
    with np.load(folder.predictions_path) as saved:
        targets, probs = saved["targets"], saved["probs"]
    order = [list(known).index(name) for name in class_names]  # the dataset's class c is the run's order[c]
    return probs[:, order], np.argsort(order)[targets]


def run_label_set_predictions(run_dir: Path, class_names: tuple[str, ...]):
    """(sigmoid probabilities (V, C) of a run of label sets' validation images, columns in class_names' order; their
    label sets (V, C); the run's threshold per label, in that order); refused when the run knew other labels or
    learnt one label per image."""
    import numpy as np

    from core.runs.folder import RunFolder
    from core.runs.labelsets import is_multi_label, run_thresholds

    folder = RunFolder(run_dir)
    known = folder.class_names()
    refused = DataError(f"Run {run_dir.name} has no predictions for this dataset's label sets; leave the run out and "
                        "the plan measures recall itself.")
    if not folder.has_predictions() or sorted(known) != sorted(class_names) or not is_multi_label(folder):
        raise refused
    try:
        with np.load(folder.predictions_path, allow_pickle=False) as saved:
            targets, probs = saved["targets"], saved["probs"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # cut off, not .npz, pickled
        raise refused from None
    if targets.ndim != 2 or probs.shape != targets.shape or probs.shape[1] != len(known):
        raise refused
    order = [list(known).index(name) for name in class_names]  # the dataset's label c is the run's order[c]
    return probs[:, order], targets[:, order].astype(bool), np.asarray(run_thresholds(folder, len(known)))[order]


def run_recall(run_dir: Path, class_names: tuple[str, ...]) -> dict[str, float]:
    """Each class's validation recall in a run's predictions; refused when the run knew other classes."""
    probs, targets = run_predictions(run_dir, class_names)
    guesses = probs.argmax(1)
    return {name: float((guesses[targets == c] == c).mean()) for c, name in enumerate(class_names)
            if (targets == c).any()}


def review_json(data: LabeledImages, result: LabelReview | LabelSetReview, top: int | None = None) -> dict:
    """The suspects (the flagged ones, or the `top` most suspicious) and the near-duplicates, by file name. A label
    set's suspect lists its labels, the suggested set, and the labels probably missing and extra."""
    names, classes = data.item_names, data.class_names
    if isinstance(result, LabelSetReview):
        suspects = [{"file": names[s.index], "labels": list(s.labels), "suggested": list(s.suggested),
                     "missing": list(s.missing), "extra": list(s.extra), "score": round(s.score, 4)}
                    for s in _label_set_rows(data, result, top)]
    else:
        if top is None:
            rows = [(s.index, s.label, s.suggested, s.score) for s in result.suspects]
        else:
            rows = [(int(i), classes[int(data.labels[i])], classes[int(result.probs[i].argmax())],
                     float(1 - result.probs[i, int(data.labels[i])])) for i in result.ranking[:top]]
        suspects = [{"file": names[i], "label": label, "suggested": suggested, "score": round(score, 4)}
                    for i, label, suggested, score in rows]
    duplicates = near_duplicates(result.features, data.labels, valid_mask(data))
    return {"suspects": suspects,
            "near_duplicates": [{"files": [names[d.first], names[d.second]], "similarity": d.similarity,
                                 "labels": [data.label_of(d.first), data.label_of(d.second)],
                                 "crosses_split": d.crosses_split, "labels_differ": d.labels_differ}
                                for d in duplicates if d.crosses_split or d.labels_differ],
            "layers": list(result.layers)}


def _label_set_rows(data: LabeledImages, result: LabelSetReview, top: int | None) -> list:
    """The flagged suspects, or the `top` most suspicious images whether flagged or not."""
    if top is None:
        return result.suspects
    given = data.labels.numpy()
    return [label_set_suspect(int(i), given[i], result.probs[i], data.class_names, float(result.scores[i]))
            for i in result.ranking[:top]]


def record_edits(source: str, edits: list[dict], view: str, label_regex: str | None = None) -> int:
    """Check that every edited file is in the dataset, then record the edits as one batch; returns its number."""
    known = set(_item_names(source, label_regex))
    unknown = [edit.get("file") for edit in edits if isinstance(edit, dict) and edit.get("file") not in known]
    if unknown:
        raise DataError(f"{len(unknown)} edited file(s) are not in this dataset, for example '{unknown[0]}'. "
                        "Give paths relative to the dataset folder, as `suspects` prints them.")
    return edit_log_for(source).append(edits, view)


def _item_names(source: str, label_regex: str | None) -> list[str]:
    """Every image the dataset has before its edits remove any (a removed image can be relabelled back)."""
    if source.startswith("builtin:"):
        from core.data.builtin import load_builtin

        return list(load_builtin(source[8:], 8).item_names)
    report = inspect_source(source, label_regex)
    return [*(relative_file(item.path, report.folder) for item in report.accepted), *report.removed]


def mended_zip(source: str, label_regex: str | None = None, size: int = 64) -> bytes:
    """The dataset as its edits leave it, as a zip of class folders (train/ and valid/ when it has its own
    split; a multi-label set: its files and a labels CSV, labels separated by ;). Folder datasets keep their
    original files; built-in ones are written as PNGs at `size`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if source.startswith("builtin:"):
            _write_pngs(archive, load_source(source, size))
        else:
            report = inspect_source(source, label_regex)
            (_write_label_sets if report.multi_label else _write_class_folders)(archive, report)
    return buffer.getvalue()


def _write_class_folders(archive: zipfile.ZipFile, report) -> None:
    for item in report.accepted:
        part = "" if item.valid is None else ("valid/" if item.valid else "train/")
        archive.write(item.path, f"{part}{item.label}/{relative_file(item.path, report.folder)}")


def _write_label_sets(archive: zipfile.ZipFile, report) -> None:
    """A multi-label set: its files where they were, and their label sets in a CSV that reads back the same."""
    import csv

    rows = io.StringIO()
    table = csv.writer(rows)
    table.writerow(["file", "labels"])
    for item in report.accepted:
        relative = relative_file(item.path, report.folder)
        archive.write(item.path, relative)
        table.writerow([relative, ";".join(item.labels)])
    archive.writestr("labels.csv", rows.getvalue())


def _write_pngs(archive: zipfile.ZipFile, data: LabeledImages) -> None:
    from PIL import Image

    for image, label, name in zip(data.images, data.labels.tolist(), data.item_names):
        png = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(png, format="PNG")
        archive.writestr(f"{data.class_names[label]}/{name.replace('#', '').replace(' ', '_')}.png", png.getvalue())


def write_zip(data: bytes, target: Path) -> None:
    """Write a new zip; an existing file is never overwritten."""
    with open(target, "xb") as f:
        f.write(data)
