"""Export a trained run for use outside the app, and prove that the exported files predict exactly as the app does.

The run's export/ folder (and the zip) holds:
  model.onnx, model.torchscript.pt   the app's own TrustedModel (core.inspect.trust) behind one plain interface:
      in   pixels          uint8    (B, S, S, 3)  RGB 0..255, channels last, made square at the run's size S
      out  probabilities   float32  (B, C)        calibrated (the temperature is inside)
           unknown_score   float32  (B,)          distance to the training images (deep kNN)
           unknown         bool     (B,)          unknown_score > the run's threshold: "none of these"
      Scaling and ImageNet normalisation happen inside, so a caller cannot get them wrong.
  preprocessing.json   how to make `pixels` from an image file with PIL, exactly as the app does (`steps`)
  classes.json         class names, in the order of the probabilities
  weights.safetensors  the plain classifier's weights, for people who fine-tune further
  verification.json    both model files run over the run's validation set beside the app (`verify_export`)

    python -m core.ship.export RUN_DIR   # prints the zip's path and the verification; a refusal is one sentence, exit 2
"""
from __future__ import annotations

import io
import json
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.atomic import read_json, write_json_atomic
from core.data.batches import IMAGENET_MEAN, IMAGENET_STD
from core.errors import BrokenRun, DataError
from core.inspect.trust import TrustedModel, load_trusted_model
from core.runs.folder import RunFolder

INPUT_NAME = "pixels"
OUTPUT_NAMES = ("probabilities", "unknown_score", "unknown")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
EXPORT_FILES = (*MODEL_FILES.values(), "weights.safetensors", "classes.json", "preprocessing.json",
                "verification.json")
MIN_AGREEMENT = 0.999  # of top classes and unknown verdicts, per file; below it the export fails
# An image whose app score lies this close to the threshold is a tie: the files' float rounding (about 1e-6 on the
# digits run) may put it on either side. One validation image always sits there: the threshold is one of their scores.
AT_THRESHOLD = 1e-4
BATCH_SIZE = 256  # images per call while verifying

# What core.data.images.fit_square does, as a caller writes it with PIL (`size` is preprocessing.json's "size").
RESIZE_STEPS = {
    "squish": "image = image.resize((size, size), Image.Resampling.BILINEAR)",
    "crop": "image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)",
    "pad": "image = ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, color=(0, 0, 0))",
}


class ExportError(ValueError):
    """An export that cannot be made or does not predict like the app, with a sentence a person can act on."""


class ExportedModel(nn.Module):
    """A TrustedModel behind the exported interface.

    In: pixels (B, S, S, 3) uint8, RGB 0..255 at the run's size: what `numpy.asarray(image)[None]` gives for a
    PIL image prepared as preprocessing.json says. The TorchScript file also takes float pixels in 0..255 (as
    TrustedModel does: test-time augmentation's copies); the ONNX graph's input is uint8 only.
    Out: (probabilities (B, C) float32 calibrated, unknown_score (B,) float32, unknown (B,) bool).
    """

    def __init__(self, trusted: TrustedModel):
        super().__init__()
        self.trusted = trusted
        # Exact in float32: the threshold is one of the validation images' float32 scores.
        self.register_buffer("threshold", torch.tensor(trusted.threshold, dtype=torch.float32))
        self.eval()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probabilities, scores = self.trusted(pixels.permute(0, 3, 1, 2))  # (B, 3, S, S), as the app's images are
        return probabilities, scores, scores > self.threshold


def preprocessing(config, threshold: float, temperature: float, n_classes: int) -> dict:
    """preprocessing.json: how to make the model's input from an image file, and what comes out."""
    size = config.size
    return {
        "size": size, "resize": config.resize, "arch": config.arch,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", size, size, 3],
                  "layout": "channels last: (batch, height, width, RGB)", "range": "0..255"},
        "outputs": [
            {"name": "probabilities", "dtype": "float32", "shape": ["batch", n_classes],
             "meaning": "calibrated probability of each class, in the order of classes.json"},
            {"name": "unknown_score", "dtype": "float32", "shape": ["batch"],
             "meaning": "distance to the training images; above unknown_threshold the image is none of the classes"},
            {"name": "unknown", "dtype": "bool", "shape": ["batch"], "meaning": "unknown_score > unknown_threshold"}],
        "unknown_threshold": threshold, "temperature": temperature,
        "inside_the_model": "pixels / 255, then (x - mean) / std per channel with ImageNet's mean and std; "
                            "softmax(logits / temperature); the unknown score and verdict",
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        # The run's training augmentation: what test-time augmentation (fastai's tta, core.inspect.trust) draws
        # copies with.
        "augment": {"flip": config.flip, "rotate": config.rotate, "zoom": config.zoom, "lighting": config.lighting},
        # The app's decoding (core.data.images.open_rgb) step by step; run in order with `path`, `size` and numpy as np.
        "steps": [
            "from PIL import Image, ImageOps",
            "image = Image.open(path)",
            "image.draft('RGB', (2 * size, 2 * size))  # JPEG decodes at a reduced scale, as in the app",
            "image = ImageOps.exif_transpose(image)",
            "if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'): wide = np.asarray(image, np.float64); "
            "image = Image.fromarray(np.clip(wide * (255.0 / (65535.0 if wide.max() > 255 else 255.0)), 0, 255)"
            ".astype(np.uint8))",
            "if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info): "
            "image = Image.alpha_composite(Image.new('RGBA', image.size, (255, 255, 255, 255)), image.convert('RGBA'))",
            "image = image.convert('RGB')",
            RESIZE_STEPS[config.resize],
            "pixels = np.asarray(image)[None]  # (1, size, size, 3) uint8: the model's input",
        ],
    }


def write_exports(trusted: TrustedModel, class_names: list[str], config, folder: Path) -> None:
    """TorchScript, ONNX, weights, classes and preprocessing of a trusted model into `folder`."""
    from safetensors.torch import save_file

    exported = ExportedModel(trusted)
    example = torch.zeros(2, config.size, config.size, 3, dtype=torch.uint8)  # (B, S, S, 3)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export, but TorchScript is still what LibTorch (C++) and
            # many serving tools load; ONNX below is the forward-looking format.
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            torch.jit.trace(exported, example).save(str(folder / MODEL_FILES["torchscript"]))
        batch = torch.export.Dim("batch", min=1, max=4096)  # uint8 input and the kNN's topk export as they are
        program = torch.onnx.export(exported, (example,), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
        program.save(str(folder / MODEL_FILES["onnx"]))
    except RuntimeError as error:  # torch.onnx.OnnxExporterError is one too
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ExportError(f"PyTorch could not export this {config.arch} model ({reason}). The run itself is fine: "
                          "use it in the app, or try another backbone if you need the files.") from error
    model = nn.Sequential(trusted.body, nn.Sequential(*trusted.pool, trusted.classifier))  # as load_model built it
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
              str(folder / "weights.safetensors"), metadata={"arch": config.arch, "size": str(config.size)})
    (folder / "classes.json").write_text(json.dumps(class_names, ensure_ascii=False, indent=1), encoding="utf-8")
    write_json_atomic(folder / "preprocessing.json", preprocessing(
        config, trusted.threshold, float(trusted.temperature), len(class_names)))


def _in_batches(predict, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities (N, C), unknown scores (N,), unknown (N,)) of `predict` over N uint8 images."""
    parts = [predict(images[start:start + BATCH_SIZE]) for start in range(0, len(images), BATCH_SIZE)]
    return tuple(np.concatenate([np.asarray(part[i]) for part in parts]) for i in range(3))


def _run_exported(folder: Path, pixels: torch.Tensor) -> dict[str, list[np.ndarray]]:
    """{"onnx": [probabilities, unknown_score, unknown], "torchscript": [...]}: each exported file (onnxruntime,
    torch.jit) run over pixels (N, S, S, 3) uint8, in batches."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / MODEL_FILES["onnx"]), providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        scripted = torch.jit.load(str(folder / MODEL_FILES["torchscript"]), map_location="cpu")
    with torch.no_grad():
        return {"onnx": _in_batches(lambda x: session.run(None, {INPUT_NAME: x.numpy()}), pixels),
                "torchscript": _in_batches(lambda x: [t.numpy() for t in scripted(x)], pixels)}


def verify_export(run_dir: Path) -> dict:
    """Run model.onnx (onnxruntime) and model.torchscript.pt (torch.jit) of the run's export folder over the run's
    validation set, beside the app's own TrustedModel; write verification.json and return it:
        {"n", "onnx_top1_agreement", "torchscript_top1_agreement", "unknown_agreement": {"onnx", "torchscript"},
         "unknown_ties": {...}, "max_probability_difference": {...}, "max_unknown_score_difference": {...},
         "accuracy": {"app", "onnx", "torchscript"}, "checkpoint"}
    ExportError (a sentence) when a file disagrees with the app on the top class, or on "none of these" away from
    the threshold, for more than 1 - MIN_AGREEMENT of the images."""
    from core.data.load import Split, load_source

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir).export_folder
    (folder / "verification.json").unlink(missing_ok=True)  # a failed or cut-off check leaves no old verdict behind
    trusted, class_names, config = load_trusted_model(run_dir)
    data = load_source(config.data, config.size, label_regex=config.label_regex or None, resize=config.resize,
                       edits_upto=RunFolder(run_dir).edits_upto(config))  # the data the run had, not today's
    split = Split.from_dataset(data, config.valid_pct, config.seed)
    images, labels = split.valid_images, split.valid_labels.numpy()  # (N, 3, S, S) uint8, (N,)
    pixels, n = images.permute(0, 2, 3, 1).contiguous(), len(labels)  # (N, S, S, 3): the exported files' input
    if n == 0:
        raise ExportError("The run has no validation images to check its export on.")

    def app(batch: torch.Tensor) -> list[np.ndarray]:  # (B, 3, S, S), as core.ship.predict.Predictor predicts
        probabilities, scores = trusted(batch)
        return [probabilities.numpy(), scores.numpy(), scores.numpy() > trusted.threshold]

    with torch.no_grad():
        expected = _in_batches(app, images)
    outputs = _run_exported(folder, pixels)
    top = expected[0].argmax(1)
    at_threshold = np.abs(expected[1] - trusted.threshold) <= AT_THRESHOLD
    result = {"n": n, **{f"{name}_top1_agreement": float((probabilities.argmax(1) == top).mean())
                         for name, (probabilities, _, _) in outputs.items()},
              "unknown_agreement": {}, "unknown_ties": {}, "max_probability_difference": {},
              "max_unknown_score_difference": {}, "accuracy": {"app": float((top == labels).mean())},
              "checkpoint": RunFolder(run_dir).model_checkpoint().name}
    problems = []
    for name, (probabilities, scores, unknown) in outputs.items():
        differs = unknown.astype(bool) != expected[2]
        # A verdict that differs only at the threshold (a tie, see AT_THRESHOLD) counts as agreeing, and is counted.
        result["unknown_agreement"][name] = float(1 - (differs & ~at_threshold).mean())
        result["unknown_ties"][name] = int((differs & at_threshold).sum())
        result["max_probability_difference"][name] = float(np.abs(probabilities - expected[0]).max())
        result["max_unknown_score_difference"][name] = float(np.abs(scores - expected[1]).max())
        result["accuracy"][name] = float((probabilities.argmax(1) == labels).mean())
        top_off, verdict_off = int((probabilities.argmax(1) != top).sum()), int((differs & ~at_threshold).sum())
        if top_off > (1 - MIN_AGREEMENT) * n:
            problems.append(f"{MODEL_FILES[name]} chose another class than the app for {top_off} of {n}")
        elif verdict_off > (1 - MIN_AGREEMENT) * n:
            problems.append(f"{MODEL_FILES[name]} said \"none of these\" differently from the app for "
                            f"{verdict_off} of {n}")
    if problems:
        raise ExportError(f"The export does not predict like the app: {' and '.join(problems)} validation images. "
                          "Do not use these files; export again, and if it fails again, train the run again.")
    write_json_atomic(folder / "verification.json", result)
    return result


def export_run(run_dir: Path) -> Path:
    """Write every export of the run's model (the checkpoint that counts, with its calibration) into its export
    folder and verify them (verify_export); returns the folder. BrokenRun, DataError or ExportError: a sentence."""
    trusted, class_names, config = load_trusted_model(Path(run_dir))
    folder = RunFolder(run_dir).export_folder
    folder.mkdir(exist_ok=True)
    (folder / "verification.json").unlink(missing_ok=True)
    write_exports(trusted, class_names, config, folder)
    verify_export(run_dir)
    return folder


def read_verification(run_dir: Path) -> dict | None:
    """The run's verification.json when its export is complete and verified against the model the run has now
    (not older than its checkpoint or calibration); else None."""
    run = RunFolder(run_dir)
    folder, checkpoint = run.export_folder, run.model_checkpoint()
    path = folder / "verification.json"
    try:
        if not all((folder / name).is_file() for name in EXPORT_FILES) or checkpoint is None:
            return None
        if path.stat().st_mtime < max(checkpoint.stat().st_mtime, run.trust_path.stat().st_mtime):
            return None
    except OSError:
        return None
    verification = read_json(path)
    try:
        describe(verification)
    except (KeyError, TypeError, ValueError):  # not as this app writes it
        return None
    return verification


def describe(verification: dict) -> str:
    """One sentence: 'Verified on 360 validation images: ONNX agrees 100.0%, TorchScript 100.0%; accuracy 96.9%.'"""
    return (f"Verified on {verification['n']} validation images: ONNX agrees "
            f"{verification['onnx_top1_agreement']:.1%}, TorchScript {verification['torchscript_top1_agreement']:.1%}; "
            f"accuracy {verification['accuracy']['app']:.1%}.")


def zip_export(run_dir: Path) -> bytes:
    """The export folder's files in one zip, under a folder named after the run (export_run first)."""
    folder = RunFolder(run_dir).export_folder
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in EXPORT_FILES:  # each file rw-r--r-- whatever its mode here (safetensors writes weights 600)
            entry = zipfile.ZipInfo.from_file(folder / name, f"{Path(run_dir).name}/{name}")
            entry.external_attr, entry.compress_type = (0o100644 << 16), zipfile.ZIP_DEFLATED
            archive.writestr(entry, (folder / name).read_bytes())
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.ship.export RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    try:
        folder = export_run(run_dir)
    except (ExportError, BrokenRun, DataError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 2
    target = folder / f"{run_dir.resolve().name}.zip"
    target.write_bytes(zip_export(run_dir))
    print(target)
    print(describe(read_json(folder / "verification.json")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
