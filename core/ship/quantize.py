"""Smaller models: int8 variants of the exported files, post-training quantized with a calibration sample of the
run's training images (core.ship.verify measures each one's agreement and accuracy beside the full-precision file).

ONNX: onnxruntime's static quantization in QDQ form, per channel, of the convolutions (Conv, Gemm): a quarter of
their bytes. The first convolution (it reads the image) and the last Conv/Gemm (the classifier) stay in float, as is
usual: they hold few of the bytes and much of the error. The kNN bank behind the unknown score stays in float too:
the score is a distance to it. Weights use 7 of their 8 bits (`reduce_range`): onnxruntime's uint8 x int8 kernels on
x86 CPUs without VNNI add pairs of products in 16 bits, which saturate with 8-bit weights, so the same file agreed
with the app on 98.3% of a run's images on an AVX2 machine and 99.7% on an AVX-512 VNNI one. With 7-bit weights no
pair can saturate, every x86 CPU computes the same integers, and what verification measured here holds on the
machine the file is deployed to. Measured (VNNI machine, batches of 32; bench.export for the defaults' digits run):

| tests' run | every layer, 8-bit (before) | float ends, 8-bit | float ends, 7-bit (this) | uint8 weights |
| --- | --- | --- | --- | --- |
| ResNet-18 digits, 32 px: top class agrees | 99.7% | 99.7%, 2,990/s | 99.4%, 2,972/s | 99.7%, 1,441/s |
| Lite0 label sets, 32 px: decisions agree | 93.1% | 95.4%, 4,983/s | 92.1%, 4,951/s | 95.1%, 549/s |

uint8 weights (u8u8 kernels, which do not saturate either) were 9x slower than float on EfficientNet-Lite0's
depthwise layers.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

CALIBRATION_IMAGES = 200  # training images the activations' ranges are measured on
INT8_ONNX = "model.int8.onnx"
QUANTIZED_OPS = ["Conv", "Gemm"]


def calibration_pixels(run_dir: Path, count: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """(count, S, S, 3) uint8: a seeded sample of the run's training images, as the exported files take them."""
    from core.data.load import Split, load_source
    from core.runs.folder import RunFolder

    config = RunFolder(run_dir).config()
    data = load_source(config.data, config.size, label_regex=config.label_regex or None, resize=config.resize,
                       edits_upto=RunFolder(run_dir).edits_upto(config))
    train = Split.from_dataset(data, config.valid_pct, config.seed).train_images
    picks = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return train[picks].permute(0, 2, 3, 1).contiguous().numpy()


def quantize_onnx(folder: Path, pixels: np.ndarray, batch: int = 20) -> Path:
    """folder/model.int8.onnx from folder/model.onnx, its activations calibrated on `pixels` (N, S, S, 3) uint8."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixels": pixels[i:i + batch]} for i in range(0, len(pixels), batch)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # onnxruntime's symbolic shape inference cannot follow the kNN's Expand; ONNX's own inference is enough
        quant_pre_process(str(folder / "model.onnx"), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(folder / INT8_ONNX), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=kept_in_float(prepared),
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return folder / INT8_ONNX


def kept_in_float(model: Path) -> list[str]:
    """The names of the model's first and last convolution or Gemm: the image's first layer and the classifier."""
    import onnx

    layers = [node.name for node in onnx.load(str(model)).graph.node if node.op_type in QUANTIZED_OPS]
    return sorted({layers[0], layers[-1]}) if layers else []
