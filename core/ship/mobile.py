"""Exports for phones and Apple devices: LiteRT (model.tflite, and int8 model.int8.tflite) and Core ML
(model.mlpackage), each the app's own TrustedModel behind the export's interface.

LiteRT (Android, iOS, microcontrollers, the successor of TensorFlow Lite): converted by litert-torch, run and verified
here with ai-edge-litert's interpreter. Input `pixels` uint8 (BATCH, S, S, 3), outputs `probabilities` float32
(BATCH, C), `unknown_score` float32 (BATCH,), `unknown` bool (BATCH,), in the signature `serving_default`. The batch
is fixed at 1 (litert-torch 0.10 cannot lower a dynamic batch: litert-torch issues 685 and 716): one image a call,
what a phone app does. The kNN's top-k is TFLite's own TOPK_V2: litert-torch lowers torch.topk to a sort the
interpreter cannot load. The int8 file has int8 weights and activations quantized as it runs (ai-edge-quantizer's
dynamic_wi8_afp32): no calibration, a quarter of the size.

Core ML (iPhone, iPad, Mac): converted by coremltools (here too; it runs only on Apple systems, so what can be
checked here is the converted program: its inputs, outputs and class labels, `describe_coreml`). Input `image` (an
RGB image at S × S; the normalisation is inside, as in every export), outputs `classLabel`, `classLabelProbs`
(calibrated), `unknown_score` and `unknown` (1: none of these), the threshold in the metadata; a run of label sets
has no classifier (one label per image) but `probabilities`, `unknown_score`, `unknown` and `labels` (1 per label
found), its classes and thresholds in the metadata. Float32: Core ML's
default float16 moved the kNN score enough to flip 4 of 359 verdicts on the digits run (simulated in PyTorch).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.inspect.trust import knn_scores
from core.ship import output_names

TFLITE, TFLITE_INT8, COREML = "model.tflite", "model.int8.tflite", "model.mlpackage"
SIGNATURE = "serving_default"  # litert-torch's signature


class _LiteRTModel(nn.Module):
    """The exported model for litert-torch: outputs as a dict (the signature's names), TFLite's own top-k."""

    def __init__(self, exported):
        super().__init__()
        from litert_torch.backend.experimental.torch_tfl import _ops  # noqa: F401  registers torch.ops.tfl.*

        self.trusted, self.threshold, self.multi_label = exported.trusted, exported.threshold, exported.multi_label
        self.label_thresholds = exported.label_thresholds
        self.eval()

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        probabilities, scores = self.trusted(pixels.permute(0, 3, 1, 2), topk=torch.ops.tfl.topk_v2)
        outputs = (probabilities, scores, scores > self.threshold)
        if self.multi_label:
            outputs += (probabilities >= self.label_thresholds,)
        return dict(zip(output_names(self.multi_label), outputs))


def convert_tflite(exported, size: int, folder: Path) -> Path:
    """folder/model.tflite of an ExportedModel, batch 1."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # else a progress tree per step
    import litert_torch

    example = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # progress, notes
        warnings.simplefilter("ignore")
        edge = litert_torch.convert(_LiteRTModel(exported), sample_kwargs={"pixels": example})
    edge.export(str(folder / TFLITE))
    return folder / TFLITE


def quantize_tflite(folder: Path) -> Path:
    """folder/model.int8.tflite from folder/model.tflite: int8 weights, activations quantized as it runs."""
    from ai_edge_quantizer import quantizer, recipe

    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        quantized = quantizer.Quantizer(str(folder / TFLITE), recipe.dynamic_wi8_afp32()).quantize(
            None, enable_progress_report=False)
    (folder / TFLITE_INT8).unlink(missing_ok=True)
    quantized.export_model(str(folder / TFLITE_INT8), overwrite=True)
    return folder / TFLITE_INT8


def tflite_runner(path: Path, num_threads: int | None = None):
    """A function from pixels (N, S, S, 3) uint8, any N, to the file's (probabilities, unknown_score, unknown, and a
    run of label sets' labels), run with the LiteRT interpreter in the model's fixed batch (the last one padded)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    (given,) = interpreter.get_input_details()
    batch, named = int(given["shape"][0]), {d["name"]: d for d in interpreter.get_output_details()}
    # serving_default_<name>_output: the signature's tensors (read directly: the signature runner of a quantized
    # file can name a tensor that holds no data)
    outputs = [next(d for key, d in named.items() if key.startswith(f"{SIGNATURE}_{name}_output"))
               for name in output_names(True) if any(key.startswith(f"{SIGNATURE}_{name}_output") for key in named)]

    def read(detail) -> np.ndarray:
        value = interpreter.get_tensor(detail["index"])
        scale, zero = detail["quantization"]
        return (value.astype(np.float32) - zero) * np.float32(scale) if value.dtype.kind in "iu" and scale else value

    def run(pixels) -> list[np.ndarray]:
        pixels = np.ascontiguousarray(np.asarray(pixels), dtype=given["dtype"])
        parts = []
        for start in range(0, len(pixels), batch):
            chunk = pixels[start:start + batch]
            padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            interpreter.set_tensor(given["index"], padded)
            interpreter.invoke()
            parts.append([read(detail)[:len(chunk)] for detail in outputs])
        return [np.concatenate([part[i] for part in parts]) for i in range(len(outputs))]
    return run


class _CoreMLModel(nn.Module):
    """The exported model for Core ML: in (1, 3, S, S) float RGB 0..255 (what an ImageType of scale 1 gives); out
    (unknown_score, unknown as int32, probabilities). The softmax comes last and the verdict is a `where`: the
    classifier attaches to the program's last op, and Core ML has no bool outputs. A run of label sets has no
    classifier (that gives one label): out (probabilities, unknown_score, unknown, labels as int32)."""

    def __init__(self, exported):
        super().__init__()
        self.trusted, self.threshold, self.multi_label = exported.trusted, exported.threshold, exported.multi_label
        self.label_thresholds = exported.label_thresholds
        self.register_buffer("one", torch.ones((), dtype=torch.int32))
        self.register_buffer("zero", torch.zeros((), dtype=torch.int32))
        self.eval()

    def forward(self, image: torch.Tensor):
        features = self.trusted.features(image)
        scores = knn_scores(F.normalize(features, dim=1), self.trusted.bank, self.trusted.k)
        unknown = torch.where(scores > self.threshold, self.one, self.zero)
        probabilities = self.trusted.probabilities(self.trusted.classifier(features))
        if self.multi_label:
            return probabilities, scores, unknown, torch.where(probabilities >= self.label_thresholds, self.one,
                                                               self.zero)
        return scores, unknown, probabilities


DESCRIPTIONS = {"image": "RGB image, made square at the run's size as preprocessing.json says",
                "classLabel": "the most probable class", "classLabelProbs": "calibrated probability of each class",
                "unknown_score": "distance to the training images (deep kNN)",
                "unknown": "1 when unknown_score is above the run's threshold: none of these classes",
                "probabilities": "each label's probability (sigmoid), in the order of the metadata's classes",
                "labels": "1 for each label at or above its threshold (the metadata's label_thresholds)"}


def convert_coreml(exported, size: int, class_names: list[str], folder: Path) -> Path:
    """folder/model.mlpackage of an ExportedModel (an ML program for iOS 16 / macOS 13 and later)."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # that its runtime is Apple's only, on import
    import coremltools as ct

    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # its progress bars
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_CoreMLModel(exported), torch.zeros(1, 3, size, size))
        # outputs are renamed after: naming them beside a classifier fails in coremltools 9 (IndexError)
        classifier = None if exported.multi_label else ct.ClassifierConfig([str(name) for name in class_names])
        model = ct.convert(traced, inputs=[ct.ImageType(name="image", shape=(1, 3, size, size), scale=1.0,
                                                         color_layout=ct.colorlayout.RGB)],
                           classifier_config=classifier, convert_to="mlprogram",
                           minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32,
                           skip_model_load=True)
    spec = model.get_spec()
    if exported.multi_label:  # the outputs in the traced order
        renames = zip([o.name for o in spec.description.output], output_names(True))
        spec.description.metadata.userDefined["classes"] = json.dumps([str(name) for name in class_names])
        spec.description.metadata.userDefined["label_thresholds"] = json.dumps(exported.label_threshold_list)
    else:
        label, probabilities = spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName
        score, unknown = [o.name for o in spec.description.output if o.name not in (label, probabilities)]
        renames = ((probabilities, "classLabelProbs"), (score, "unknown_score"), (unknown, "unknown"))
    for old, new in renames:
        ct.utils.rename_feature(spec, old, new)
    for feature in (*spec.description.input, *spec.description.output):
        feature.shortDescription = DESCRIPTIONS.get(feature.name, "")
    spec.description.metadata.userDefined["unknown_threshold"] = repr(float(exported.threshold))
    target = folder / COREML
    shutil.rmtree(target, ignore_errors=True)
    ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True).save(str(target))
    return target


def describe_coreml(path: Path) -> dict:
    """{"inputs": [(name, kind)], "outputs": [(name, kind)], "class_labels": [...], "threshold"} read from the saved
    program's specification (no Core ML runtime needed)."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    labels = []
    for block in spec.mlProgram.functions["main"].block_specializations.values():
        for op in block.operations:
            if op.type == "classify":
                for value in op.inputs["classes"].arguments[0].value.immediateValue.list.values:
                    labels.append(value.immediateValue.tensor.strings.values[0])
    kinds = lambda features: [(f.name, f.type.WhichOneof("Type")) for f in features]  # noqa: E731
    metadata = spec.description.metadata.userDefined
    if not labels and "classes" in metadata:  # a run of label sets: no classifier, its labels in the metadata
        labels = json.loads(metadata["classes"])
    return {"inputs": kinds(spec.description.input), "outputs": kinds(spec.description.output),
            "class_labels": labels, "threshold": float(metadata["unknown_threshold"]),
            **({"label_thresholds": json.loads(metadata["label_thresholds"])}
               if "label_thresholds" in metadata else {})}
