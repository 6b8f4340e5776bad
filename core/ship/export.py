"""Export a trained run for use outside the app, and prove that the exported files predict exactly as the app does.

The run's export/ folder (and the zip) holds:
  model.onnx, model.torchscript.pt   the app's own TrustedModel (core.inspect.trust) behind one plain interface:
      in   pixels          uint8    (B, S, S, 3)  RGB 0..255, channels last, made square at the run's size S
      out  probabilities   float32  (B, C)        calibrated (the temperature is inside)
           unknown_score   float32  (B,)          distance to the training images (deep kNN)
           unknown         bool     (B,)          unknown_score > the run's threshold: "none of these"
      A run of label sets: probabilities are each label's sigmoid, and a fourth output says the label set:
           labels          bool     (B, C)        each label's probability >= its threshold (thresholds.json)
      Scaling and ImageNet normalisation happen inside, so a caller cannot get them wrong.
  preprocessing.json   how to make `pixels` from an image file with PIL, exactly as the app does (`steps`)
  classes.json         class names, in the order of the probabilities
  weights.safetensors  the plain classifier's weights, for people who fine-tune further
  verification.json    every model file run over the run's validation set beside the app (core.ship.verify)
and, as asked (FORMATS; all by default):
  model.int8.onnx      int8 weights and activations (core.ship.quantize): about half the size, its agreement measured
  web/index.html       a page that runs model.onnx in the browser from file://, no server, no network (core.ship.web)
  model.tflite         LiteRT (TensorFlow Lite) for Android and iOS, batch 1; model.int8.tflite its int8 variant
  model.mlpackage      Core ML for Apple devices, preprocessing and class labels inside (core.ship.mobile)

    python -m core.ship.export RUN_DIR [--formats onnx-int8,web,tflite,tflite-int8,coreml|none]
    # prints the zip's path and the verification; a refusal is one sentence, exit 2
"""
from __future__ import annotations

import io
import json
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from core.atomic import read_json, write_json_atomic
from core.data.batches import IMAGENET_MEAN, IMAGENET_STD
from core.errors import BrokenRun, DataError
from core.inspect.trust import TrustedModel, load_trusted_model
from core.runs.folder import RunFolder
from core.runs.labelsets import run_thresholds
from core.ship import INPUT_NAME, LABELS_OUTPUT, output_names
from core.ship.verify import LABELS, MODEL_FILES, ExportError, agreement_key, export_sizes, verify_export

__all__ = ["ExportError", "ExportedModel", "export_run", "verify_export", "read_verification", "describe",
           "zip_export", "FORMATS"]

EXPORT_FILES = ("model.onnx", "model.torchscript.pt", "weights.safetensors", "classes.json", "preprocessing.json",
                "verification.json")  # always; the formats below add theirs
# What each optional format adds, and what makes it. The command line and the Runs page make them all by default.
FORMATS = {"onnx-int8": ("model.int8.onnx",), "web": ("web/index.html",), "tflite": ("model.tflite",),
           "tflite-int8": ("model.int8.tflite",), "coreml": ("model.mlpackage",)}

# What core.data.images.fit_square does, as a caller writes it with PIL (`size` is preprocessing.json's "size").
RESIZE_STEPS = {
    "squish": "image = image.resize((size, size), Image.Resampling.BILINEAR)",
    "crop": "image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)",
    "pad": "image = ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, color=(0, 0, 0))",
}


class ExportedModel(nn.Module):
    """A TrustedModel behind the exported interface.

    In: pixels (B, S, S, 3) uint8, RGB 0..255 at the run's size: what `numpy.asarray(image)[None]` gives for a
    PIL image prepared as preprocessing.json says. The TorchScript file also takes float pixels in 0..255 (as
    TrustedModel does: test-time augmentation's copies); the ONNX graph's input is uint8 only.
    Out: (probabilities (B, C) float32 calibrated, unknown_score (B,) float32, unknown (B,) bool), and for a run of
    label sets (`label_thresholds`) labels (B, C) bool: each label's probability at or above its threshold.
    """

    def __init__(self, trusted: TrustedModel, label_thresholds: list[float] | None = None):
        super().__init__()
        self.trusted, self.multi_label = trusted, label_thresholds is not None
        self.label_threshold_list = list(label_thresholds or [])  # as thresholds.json says them, for the JSON files
        # Exact in float32: the threshold is one of the validation images' float32 scores.
        self.register_buffer("threshold", torch.tensor(trusted.threshold, dtype=torch.float32))
        self.register_buffer("label_thresholds", torch.tensor(label_thresholds or [], dtype=torch.float32))
        self.eval()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        probabilities, scores = self.trusted(pixels.permute(0, 3, 1, 2))  # (B, 3, S, S), as the app's images are
        if self.multi_label:
            return probabilities, scores, scores > self.threshold, probabilities >= self.label_thresholds
        return probabilities, scores, scores > self.threshold


def preprocessing(config, threshold: float, temperature: float, n_classes: int,
                  label_thresholds: list[float] | None = None) -> dict:
    """preprocessing.json: how to make the model's input from an image file, and what comes out; a run of label sets
    (`label_thresholds`) says so, with each label's threshold and the fourth output."""
    size, multi = config.size, label_thresholds is not None
    labels = [{"name": LABELS_OUTPUT, "dtype": "bool", "shape": ["batch", n_classes],
               "meaning": "the image's label set: each label whose probability is at or above its label_threshold"}]
    return {
        "size": size, "resize": config.resize, "arch": config.arch,
        "task": "multi-label" if multi else "single-label",
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", size, size, 3],
                  "layout": "channels last: (batch, height, width, RGB)", "range": "0..255"},
        "outputs": [
            {"name": "probabilities", "dtype": "float32", "shape": ["batch", n_classes],
             "meaning": "probability of each label, each on its own (sigmoid), in the order of classes.json" if multi
             else "calibrated probability of each class, in the order of classes.json"},
            {"name": "unknown_score", "dtype": "float32", "shape": ["batch"],
             "meaning": "distance to the training images; above unknown_threshold the image is none of the classes"},
            {"name": "unknown", "dtype": "bool", "shape": ["batch"], "meaning": "unknown_score > unknown_threshold"},
            *(labels if multi else [])],
        "unknown_threshold": threshold, "temperature": temperature,
        **({"label_thresholds": label_thresholds} if multi else {}),
        "inside_the_model": "pixels / 255, then (x - mean) / std per channel with ImageNet's mean and std; " + (
            "sigmoid(logits) per label; probabilities >= label_thresholds" if multi else
            "softmax(logits / temperature)") + "; the unknown score and verdict",
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


def write_exports(exported: ExportedModel, class_names: list[str], config, folder: Path) -> None:
    """TorchScript, ONNX, weights, classes and preprocessing of an exported model into `folder`."""
    from safetensors.torch import save_file

    trusted = exported.trusted
    example = torch.zeros(2, config.size, config.size, 3, dtype=torch.uint8)  # (B, S, S, 3)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export, but TorchScript is still what LibTorch (C++) and
            # many serving tools load; ONNX below is the forward-looking format.
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            torch.jit.trace(exported, example).save(str(folder / MODEL_FILES["torchscript"]))
        batch = torch.export.Dim("batch", min=1, max=4096)  # uint8 input and the kNN's topk export as they are
        program = torch.onnx.export(exported, (example,), input_names=[INPUT_NAME],
                                    output_names=list(output_names(exported.multi_label)),
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
        config, trusted.threshold, float(trusted.temperature), len(class_names),
        exported.label_threshold_list if exported.multi_label else None))


def export_run(run_dir: Path, formats: tuple[str, ...] = tuple(FORMATS)) -> Path:
    """Write every export of the run's model (the checkpoint that counts, with its calibration) into its export
    folder: ONNX, TorchScript and the weights always, and the optional `formats` (FORMATS); verify them all
    (core.ship.verify); returns the folder. BrokenRun, DataError or ExportError: a sentence."""
    from core.ship.web import write_page

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ExportError(f"There is no export format {unknown[0]!r}; the formats are {', '.join(FORMATS)}.")
    run_dir = Path(run_dir)
    trusted, class_names, config = load_trusted_model(run_dir)
    exported = ExportedModel(trusted, run_thresholds(RunFolder(run_dir), len(class_names))
                             if trusted.multi_label else None)
    folder = RunFolder(run_dir).export_folder
    folder.mkdir(exist_ok=True)
    (folder / "verification.json").unlink(missing_ok=True)
    for files in FORMATS.values():  # an earlier export's optional files belong to an older model
        for name in files:
            shutil.rmtree(folder / name) if (folder / name).is_dir() else (folder / name).unlink(missing_ok=True)
    write_exports(exported, class_names, config, folder)
    write_mobile(exported, class_names, config.size, folder, formats)
    if "onnx-int8" in formats:
        from core.ship.quantize import calibration_pixels, quantize_onnx

        quantize_onnx(folder, calibration_pixels(run_dir))
    if "web" in formats:
        from core.ship.web import WebPageError

        try:
            write_page(folder, class_names, config.size, config.resize, f"{run_dir.resolve().name}: image classifier",
                       multi_label=exported.multi_label)
        except WebPageError as error:
            raise ExportError(str(error)) from error
    verify_export(run_dir)
    return folder


def write_mobile(exported: ExportedModel, class_names: list[str], size: int, folder: Path,
                 formats: tuple[str, ...]) -> None:
    """The LiteRT and Core ML files asked for (core.ship.mobile); the int8 LiteRT file comes from the full one."""
    from core.ship import mobile

    try:
        if "tflite" in formats or "tflite-int8" in formats:
            mobile.convert_tflite(exported, size, folder)
        if "tflite-int8" in formats:
            mobile.quantize_tflite(folder)
            if "tflite" not in formats:
                (folder / mobile.TFLITE).unlink()
        if "coreml" in formats:
            mobile.convert_coreml(exported, size, class_names, folder)
    except (RuntimeError, ValueError, AssertionError, NotImplementedError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ExportError(f"This model could not be converted for phones ({reason}). ONNX, TorchScript and the "
                          "web page work without it: export again without LiteRT and Core ML.") from error


def read_verification(run_dir: Path) -> dict | None:
    """The run's verification.json when its export is complete and verified against the model the run has now
    (not older than its checkpoint or calibration); else None."""
    run = RunFolder(run_dir)
    folder, checkpoint = run.export_folder, run.model_checkpoint()
    path = folder / "verification.json"
    try:
        if not all((folder / name).is_file() for name in EXPORT_FILES) or checkpoint is None:
            return None
        verification = read_json(path)
        if set(verification["sizes"]) - set(export_sizes(folder)):  # a file it measured has gone
            return None
        if path.stat().st_mtime < max(checkpoint.stat().st_mtime, run.trust_path.stat().st_mtime):
            return None
    except (OSError, KeyError, TypeError):  # an older app's verification (no sizes) or not as this app writes it
        return None
    try:
        describe(verification)
    except (KeyError, TypeError, ValueError):  # not as this app writes it
        return None
    return verification


def describe(verification: dict) -> str:
    """One sentence: 'Verified on 360 validation images: ONNX agrees 100.0%, TorchScript 100.0%; accuracy 96.9%.'
    (a run of label sets: '... label sets agree: ONNX 100.0%, ...; labels right 93.1%')."""
    key = agreement_key(verification)
    agree = [f"{label} {verification[f'{name}_{key}']:.1%}" for name, label in LABELS.items()
             if f"{name}_{key}" in verification]
    if verification.get("multi_label"):
        return (f"Verified on {verification['n']} validation images: label sets agree: {', '.join(agree)}; "
                f"labels right {verification['accuracy']['app']:.1%} (at the run's thresholds).")
    return (f"Verified on {verification['n']} validation images: {agree[0].replace(' ', ' agrees ', 1)}"
            f"{''.join(', ' + a for a in agree[1:])}; accuracy {verification['accuracy']['app']:.1%}.")


WEIGHTS = (".onnx", ".pt", ".tflite", ".safetensors", ".bin")  # stored in the zip, not compressed


def exported_files(folder: Path) -> list[Path]:
    """Every file of the export folder that goes into the zip."""
    return [path for path in sorted(folder.rglob("*")) if path.is_file() and path.suffix != ".zip"]


def zip_export(run_dir: Path) -> bytes:
    """The export folder's files in one zip, under a folder named after the run (export_run first)."""
    folder = RunFolder(run_dir).export_folder
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in exported_files(folder):  # each file rw-r--r-- whatever its mode here (safetensors writes 600)
            name = f"{Path(run_dir).name}/{path.relative_to(folder).as_posix()}"
            entry = zipfile.ZipInfo.from_file(path, name)
            # weights are near-random floats: deflate saved 8% of them at 30x the time of storing them as they are
            entry.external_attr = 0o100644 << 16
            entry.compress_type = zipfile.ZIP_STORED if path.suffix in WEIGHTS else zipfile.ZIP_DEFLATED
            archive.writestr(entry, path.read_bytes())
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.ship.export", description="Export a run's model and "
                                     "verify every file against the app; prints the zip's path and the verification.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--formats", default=",".join(FORMATS), help="optional formats besides ONNX and "
                        f"TorchScript, comma-separated, or none (default: {','.join(FORMATS)})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    formats = tuple(name for name in args.formats.split(",") if name and name != "none")
    try:
        folder = export_run(args.run_dir, formats)
    except (ExportError, BrokenRun, DataError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 2
    target = folder / f"{args.run_dir.resolve().name}.zip"
    target.write_bytes(zip_export(args.run_dir))
    print(target)
    print(describe(read_json(folder / "verification.json")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
