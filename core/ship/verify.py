"""Prove that an export's model files predict as the app does: each file present is run over the run's validation
set beside the app's own TrustedModel, and verification.json says what was found.

Full-precision files (ONNX, TorchScript, TFLite) must agree with the app on the top class (a run of label sets: on
the whole label set) and on "none of these" for MIN_AGREEMENT of the images, or the export fails with a sentence.
Smaller int8 files (core.ship.quantize) give up a little of that by design: their agreement, accuracy and size are
recorded beside the full ones so a person can choose, and the export fails only below INT8_FLOOR.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from core.atomic import write_json_atomic
from core.ship import INPUT_NAME

MIN_AGREEMENT = 0.999  # of top classes and unknown verdicts, per full-precision file; below it the export fails
INT8_FLOOR = 0.9  # an int8 file that agrees with the app on fewer top classes (label decisions) is not kept
# An image whose app score lies this close to the threshold is a tie: the files' float rounding (about 1e-6 on the
# digits run) may put it on either side. One validation image always sits there: the threshold is one of their scores.
AT_THRESHOLD = 1e-4
BATCH_SIZE = 256  # images per call while verifying
# name in verification.json: (file in the export folder, how it is run, full precision)
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "tflite": "model.tflite"}
INT8_FILES = {"onnx": "model.int8.onnx", "tflite": "model.int8.tflite"}
LABELS = {"onnx": "ONNX", "torchscript": "TorchScript", "tflite": "TFLite"}


class ExportError(ValueError):
    """An export that cannot be made or does not predict like the app, with a sentence a person can act on."""


def in_batches(predict, images: torch.Tensor) -> tuple[np.ndarray, ...]:
    """(probabilities (N, C), unknown scores (N,), unknown (N,), and a run of label sets' labels (N, C)) of `predict`
    over N images, in batches."""
    parts = [predict(images[start:start + BATCH_SIZE]) for start in range(0, len(images), BATCH_SIZE)]
    return tuple(np.concatenate([np.asarray(part[i]) for part in parts]) for i in range(len(parts[0])))


def agreement_key(verification: dict) -> str:
    """What verification.json calls a file's agreement with the app: on the top class, or on the label set."""
    return "label_set_agreement" if verification.get("multi_label") else "top1_agreement"


def runner(path: Path):
    """A function from pixels (B, S, S, 3) uint8 to the file's three outputs, for an ONNX, TorchScript or TFLite
    file."""
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {INPUT_NAME: x.numpy()})
    if path.suffix == ".tflite":
        from core.ship.mobile import tflite_runner

        return tflite_runner(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        scripted = torch.jit.load(str(path), map_location="cpu")

    def run(x: torch.Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in scripted(x)]
    return run


def verify_export(run_dir: Path) -> dict:
    """Run every model file of the run's export folder over the run's validation set, beside the app's own
    TrustedModel; write verification.json and return it:
        {"n", "multi_label", "<name>_top1_agreement" (a run of label sets: "<name>_label_set_agreement", agreement_key)
         for each full-precision file, "unknown_agreement": {name: ...},
         "unknown_ties", "max_probability_difference", "max_unknown_score_difference", "accuracy": {"app", name...},
         "checkpoint", "sizes": {file: bytes}, "int8": {name: {agreement_key(...), "unknown_agreement", "accuracy"}},
         "coreml": {"inputs", "outputs", "class_labels", "threshold"} when there is a Core ML file}
    ExportError (a sentence) when a full-precision file disagrees with the app on the top class, or on "none of
    these" away from the threshold, for more than 1 - MIN_AGREEMENT of the images, or an int8 file's top classes
    agree on fewer than INT8_FLOOR."""
    from core.runs.folder import RunFolder
    from core.runs.labelsets import run_thresholds

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir).export_folder
    (folder / "verification.json").unlink(missing_ok=True)  # a failed or cut-off check leaves no old verdict behind
    trusted, class_names, images, labels = _validation_set(run_dir)
    pixels, n = images.permute(0, 2, 3, 1).contiguous(), len(labels)  # (N, S, S, 3): the exported files' input
    threshold_list = run_thresholds(RunFolder(run_dir), len(class_names)) if trusted.multi_label else None
    label_thresholds = None if threshold_list is None else np.asarray(threshold_list, np.float32)

    def app(batch: torch.Tensor) -> list[np.ndarray]:  # (B, 3, S, S), as core.ship.predict.Predictor predicts
        probabilities, scores = (t.numpy() for t in trusted(batch))
        return [probabilities, scores, scores > trusted.threshold,
                *([] if label_thresholds is None else [probabilities >= label_thresholds])]

    with torch.no_grad():
        expected = _Expected(in_batches(app, images), labels, trusted.threshold, label_thresholds)
    result = {"n": n, "multi_label": trusted.multi_label, "unknown_agreement": {}, "unknown_ties": {},
              "max_probability_difference": {},
              "max_unknown_score_difference": {}, "accuracy": {"app": expected.accuracy(expected.outputs)},
              "checkpoint": RunFolder(run_dir).model_checkpoint().name, "int8": {}}
    problems = _check_full(folder, pixels, expected, result) + _check_int8(folder, pixels, expected, result)
    if problems:
        raise ExportError(f"The export does not predict like the app: {' and '.join(problems)} validation images. "
                          "Do not use these files; export again, and if it fails again, train the run again.")
    if (folder / "model.mlpackage").is_dir():  # Core ML runs only on Apple systems: its program is checked
        from core.ship.mobile import describe_coreml

        result["coreml"] = described = describe_coreml(folder / "model.mlpackage")
        if described["class_labels"] != class_names or described["threshold"] != trusted.threshold or \
                described.get("label_thresholds") != threshold_list:
            raise ExportError("model.mlpackage does not carry the run's classes and threshold: do not use it; "
                              "export again.")
    result["sizes"] = export_sizes(folder)
    write_json_atomic(folder / "verification.json", result)
    return result


def _validation_set(run_dir: Path) -> tuple:
    """(the run's TrustedModel, its class names, validation images (N, 3, S, S) uint8, their labels (N,)): the data
    the run had, not today's."""
    from core.data.load import Split, load_source
    from core.inspect.trust import load_trusted_model
    from core.runs.folder import RunFolder

    trusted, class_names, config = load_trusted_model(run_dir)
    data = load_source(config.data, config.size, label_regex=config.label_regex or None, resize=config.resize,
                       edits_upto=RunFolder(run_dir).edits_upto(config))
    split = Split.from_dataset(data, config.valid_pct, config.seed)
    if len(split.valid_labels) == 0:
        raise ExportError("The run has no validation images to check its export on.")
    return trusted, class_names, split.valid_images, split.valid_labels.numpy()


def _check_full(folder: Path, pixels: torch.Tensor, expected: _Expected, result: dict) -> list[str]:
    """Each full-precision file's figures into `result`; what fails MIN_AGREEMENT, in words."""
    problems, n = [], len(pixels)
    for name, file in MODEL_FILES.items():
        if not (folder / file).is_file():
            continue
        outputs = in_batches(runner(folder / file), pixels)
        differs, ties = expected.verdicts(outputs)
        result[f"{name}_{agreement_key(result)}"] = expected.agreement(outputs)
        result["unknown_agreement"][name] = float(1 - differs.mean())
        result["unknown_ties"][name] = int(ties)
        result["max_probability_difference"][name] = float(np.abs(outputs[0] - expected.outputs[0]).max())
        result["max_unknown_score_difference"][name] = float(np.abs(outputs[1] - expected.outputs[1]).max())
        result["accuracy"][name] = expected.accuracy(outputs)
        top_off, verdict_off = expected.disagreements(outputs), int(differs.sum())
        if top_off > (1 - MIN_AGREEMENT) * n:
            problems.append(f"{file} chose {expected.what} than the app for {top_off} of {n}")
        elif verdict_off > (1 - MIN_AGREEMENT) * n:
            problems.append(f"{file} said \"none of these\" differently from the app for {verdict_off} of {n}")
    return problems


def _check_int8(folder: Path, pixels: torch.Tensor, expected: _Expected, result: dict) -> list[str]:
    """Each int8 file's agreement, accuracy and verdicts into result["int8"]; what fails INT8_FLOOR, in words."""
    problems = []
    for name, file in INT8_FILES.items():
        if not (folder / file).is_file():
            continue
        outputs = in_batches(runner(folder / file), pixels)
        result["int8"][name] = {agreement_key(result): expected.agreement(outputs),
                                "accuracy": expected.accuracy(outputs),
                                "unknown_agreement": float(1 - expected.verdicts(outputs)[0].mean())}
        if expected.label_thresholds is not None:  # each yes/no decision: whole sets agree less, by design
            result["int8"][name]["label_agreement"] = expected.label_agreement(outputs)
        if expected.label_thresholds is not None and result["int8"][name]["label_agreement"] < INT8_FLOOR:
            problems.append(f"{file} agreed with the app on {result['int8'][name]['label_agreement']:.1%} of the "
                            f"label decisions for the {len(pixels)}")
        elif expected.label_thresholds is None and expected.agreement(outputs) < INT8_FLOOR:
            problems.append(f"{file} chose another class than the app for {expected.disagreements(outputs)} of "
                            f"{len(pixels)}")
    return problems


class _Expected:
    """The app's outputs over the validation images, and how a file's outputs compare with them: on the top class,
    or for a run of label sets (`label_thresholds`) on the label set, where a label whose app probability lies
    within AT_THRESHOLD of its threshold is a tie, as for the unknown score."""

    def __init__(self, outputs, labels, threshold, label_thresholds=None):
        self.outputs, self.labels, self.top = outputs, labels, outputs[0].argmax(1)
        self.at_threshold = np.abs(outputs[1] - threshold) <= AT_THRESHOLD
        self.label_thresholds, self.what = label_thresholds, "another class"
        if label_thresholds is not None:
            self.what, self.sets = "another label set", outputs[3]
            self.label_ties = np.abs(outputs[0] - label_thresholds) <= AT_THRESHOLD

    def agreeing(self, outputs) -> np.ndarray:
        """(N,) bool: the file's top class, or its label set (ties aside), is the app's."""
        if self.label_thresholds is None:
            return outputs[0].argmax(1) == self.top
        sets = outputs[3] if len(outputs) > 3 else outputs[0] >= self.label_thresholds
        return ((sets.astype(bool) == self.sets) | self.label_ties).all(1)

    def agreement(self, outputs) -> float:
        return float(self.agreeing(outputs).mean())

    def label_agreement(self, outputs) -> float:
        """A run of label sets: the share of yes/no label decisions that are the app's (ties aside)."""
        sets = outputs[3] if len(outputs) > 3 else outputs[0] >= self.label_thresholds
        return float(((sets.astype(bool) == self.sets) | self.label_ties).mean())

    def disagreements(self, outputs) -> int:
        return int((~self.agreeing(outputs)).sum())

    def accuracy(self, outputs) -> float:
        """Top-class accuracy; for label sets, the share of yes/no decisions right at the run's thresholds."""
        if self.label_thresholds is None:
            return float((outputs[0].argmax(1) == self.labels).mean())
        return float(((outputs[0] >= self.label_thresholds) == self.labels).mean())

    def verdicts(self, outputs) -> tuple[np.ndarray, int]:
        """(which images' "none of these" differs away from the threshold, how many differ only at it: a tie)."""
        differs = outputs[2].astype(bool) != self.outputs[2]
        return differs & ~self.at_threshold, int((differs & self.at_threshold).sum())


def export_sizes(folder: Path) -> dict[str, int]:
    """{file: bytes} of the export's files (web/index.html as one; a Core ML .mlpackage folder as one)."""
    sizes = {}
    for path in sorted(folder.rglob("*")):
        inside = path.relative_to(folder)
        package = next((part for part in inside.parents if part.suffix == ".mlpackage"), None)
        if path.is_file() and path.name != "verification.json" and path.suffix != ".zip":
            key = (package or inside).as_posix()
            sizes[key] = sizes.get(key, 0) + path.stat().st_size
    return sizes
