"""Predict with a trained run: the top classes with calibrated probabilities, and "none of these".

    python -m core.ship.predict RUN_DIR IMAGE_OR_FOLDER... [--json] [--top 5] [--tta]

With --json, one JSON object per image, one per line:
    {"file": "cat.jpg", "top": [["cat", 0.97], ["dog", 0.02], ...], "unknown": false}
"unknown" is true when the image is far from everything the model was trained on (core.inspect.trust): it is then not
one of the run's classes, whatever the top class says. A run of label sets (several labels per image) adds "labels",
the labels whose probability reaches the run's threshold for them (thresholds.json), most probable first, and its
"top" lists every label with its own (sigmoid) probability:
    {"file": "tile.jpg", "labels": ["clear", "primary"], "top": [["clear", 0.98], ["primary", 0.91], ...], ...}
A file that cannot be read gets {"file", "error"} and the exit status is 2; otherwise 0.
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from core.data.augment import Augment
from core.data.images import decode_image, open_rgb
from core.data.layouts import IMAGE_SUFFIXES, is_junk
from core.errors import BrokenRun, DataError
from core.inspect.trust import TrustedModel, load_trusted_model, tta_probs
from core.runs.folder import RunFolder
from core.runs.labelsets import run_thresholds


@dataclass(frozen=True)
class Prediction:
    top: list[tuple[str, float]]  # (class name, calibrated probability), most probable first
    unknown: bool  # far from every training image: none of the classes
    score: float  # the unknown score (core.inspect.trust); above the threshold means unknown
    labels: list[str] | None = None  # a run of label sets: those at or above their thresholds; None: one label

    def to_dict(self, file: str) -> dict:
        return {"file": file, **({} if self.labels is None else {"labels": self.labels}),
                "top": [[name, round(p, 6)] for name, p in self.top], "unknown": self.unknown}

    def verdict(self, n_classes: int) -> str:
        """In words, as the command line prints it: the top class, the label set, or "not one of"."""
        if self.labels is not None:
            found = ", ".join(self.labels) if self.labels else f"none of the {n_classes} labels"
            return f"far from the training images (labels: {found})" if self.unknown else found
        best, p = self.top[0]
        return f"not one of the {n_classes} classes (closest: {best} {p:.1%})" if self.unknown else f"{best} {p:.1%}"


def predictions(class_names: list[str], probs: torch.Tensor, scores, unknown, *, top: int,
                thresholds: list[float] | None = None) -> list[Prediction]:
    """Predictions of (N, C) probabilities, (N,) unknown scores and verdicts: the `top` most probable classes; with
    `thresholds` (a run of label sets), every label and the set of those at or above their threshold."""
    if thresholds is not None:
        top = len(class_names)
    values, indices = probs.topk(min(top, len(class_names)), dim=1)
    found = None if thresholds is None else (probs >= torch.tensor(thresholds, dtype=probs.dtype)).tolist()
    return [Prediction([(class_names[i], float(p)) for p, i in zip(row_p, row_i)], bool(flag), float(score),
                       None if found is None else [class_names[i] for i in row_i if found[n][i]])
            for n, (row_p, row_i, score, flag) in enumerate(zip(values.tolist(), indices.tolist(), scores, unknown))]


class Predictor:
    """A run's model with its calibration, ready for images: files, uploaded bytes or decoded pixels."""

    def __init__(self, trusted: TrustedModel, class_names: list[str], size: int, resize: str,
                 augment: Augment = Augment(), thresholds: list[float] | None = None):
        self.trusted, self.class_names, self.size = trusted, class_names, size
        self.resize, self.augment, self.thresholds = resize, augment, thresholds

    @classmethod
    def from_run(cls, run_dir: Path) -> Predictor:
        """BrokenRun (a sentence) when the run has no usable model or calibration."""
        trusted, class_names, config = load_trusted_model(Path(run_dir))
        return cls(trusted, class_names, config.size, config.resize, Augment.from_config(config),
                   run_thresholds(RunFolder(run_dir), len(class_names)) if trusted.multi_label else None)

    def pixels(self, images: torch.Tensor, *, top: int = 5, tta: bool = False) -> list[Prediction]:
        """Predictions for uint8 images (N, 3, S, S) already at the run's size."""
        with torch.no_grad():
            probs, scores = self.trusted(images)
        if tta:
            probs = torch.from_numpy(tta_probs(self.trusted, images, self.augment))
        return predictions(self.class_names, probs, scores, scores > self.trusted.threshold, top=top,
                           thresholds=self.thresholds)

    def file(self, path: Path, **options) -> Prediction:
        """DataError (a sentence) when the file is not a readable image."""
        return self.pixels(open_rgb(path, self.size, self.resize)[None], **options)[0]

    def data(self, data: bytes, **options) -> Prediction:
        """An uploaded file's bytes; DataError (a sentence) when they are not a readable image."""
        return self.pixels(decode_image(data, self.size, self.resize)[None], **options)[0]


def image_files(paths: list[Path]) -> list[Path]:
    """The files named, and the images inside the folders named (sorted, hidden files and links left out)."""
    found = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not is_junk(p)
                            and not p.is_symlink() and p.is_file())
        else:
            found.append(path)
    return found


def _readable(path: Path) -> str | None:
    """Why a path cannot be predicted (a sentence), or None."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return f"{path} is not a regular file."
    except OSError as error:
        return f"{path} cannot be read ({error.strerror or error})."
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.ship.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (with its checkpoints and trust.npz)")
    parser.add_argument("images", type=Path, nargs="+", help="image files, or folders of images")
    parser.add_argument("--json", action="store_true", help="one JSON object per image, per line")
    parser.add_argument("--top", type=int, default=5, help="how many classes to list (default 5; a run of label "
                        "sets lists every label)")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (fastai's tta): steadier, slower")
    args = parser.parse_args(argv)
    try:
        predictor = Predictor.from_run(args.run_dir)
    except (BrokenRun, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 2
    failed = False
    for path in image_files(args.images):
        try:
            problem = _readable(path)
            if problem:
                raise DataError(problem)
            prediction = predictor.file(path, top=args.top, tta=args.tta)
        except (DataError, OSError, ValueError) as error:
            failed = True
            message = str(error) if isinstance(error, DataError) else f"{path} is not a readable image."
            print(json.dumps({"file": str(path), "error": message}, ensure_ascii=False) if args.json else
                  f"{path}: {message}", flush=True)
            continue
        if args.json:
            print(json.dumps(prediction.to_dict(str(path)), ensure_ascii=False), flush=True)
        else:
            print(f"{path}: {prediction.verdict(len(predictor.class_names))}", flush=True)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
