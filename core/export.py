"""Export a trained run for use outside the app: TorchScript, ONNX, safetensors weights, class names and the
preprocessing, in the run's export/ folder and as one zip.

    python -m core.export RUN_DIR   # prints the zip's path
"""
from __future__ import annotations

import io
import json
import sys
import warnings
import zipfile
from pathlib import Path

import torch

from core.batches import IMAGENET_MEAN, IMAGENET_STD
from core.checkpoint import load_model
from core.runfolder import RunFolder

EXPORT_FILES = ("model.torchscript.pt", "model.onnx", "weights.safetensors", "classes.json", "preprocessing.json")


def export_run(run_dir: Path) -> Path:
    """Write every export of the run's model (the checkpoint that counts) into its export folder; returns it."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    model, class_names, config = load_model(run_dir)
    folder = RunFolder(run_dir).export_folder
    folder.mkdir(exist_ok=True)
    example = torch.zeros(1, 3, config.size, config.size)  # (B, 3, S, S) normalized float
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, but TorchScript is still what LibTorch (C++) and
        # many serving tools load; ONNX below is the forward-looking format.
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        torch.jit.trace(model, example).save(str(folder / "model.torchscript.pt"))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (example,), input_names=["image"], output_names=["logits"],
                                dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    program.save(str(folder / "model.onnx"))
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
              str(folder / "weights.safetensors"), metadata={"arch": config.arch, "size": str(config.size)})
    (folder / "classes.json").write_text(json.dumps(class_names, ensure_ascii=False, indent=1), encoding="utf-8")
    (folder / "preprocessing.json").write_text(json.dumps({
        "input": "RGB image, made square and resized to size x size, as float in 0..1, layout (batch, 3, size, size)",
        "size": config.size, "resize": config.resize, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "normalize": "(pixel / 255 - mean) / std, per channel", "output": "logits; softmax gives probabilities",
        "arch": config.arch}, indent=1), encoding="utf-8")
    return folder


def export_zip(run_dir: Path) -> bytes:
    """Every export file of the run in one zip (made fresh), for a download button."""
    folder = export_run(run_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in EXPORT_FILES:
            archive.write(folder / name, f"{Path(run_dir).name}/{name}")
    return buffer.getvalue()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m core.export RUN_DIR")
    data = export_zip(Path(sys.argv[1]))
    target = RunFolder(Path(sys.argv[1])).export_folder / f"{Path(sys.argv[1]).name}.zip"
    target.write_bytes(data)
    print(target)
