"""Attributions through captum: which pixels made the model choose a class.

One shape for every method, as captum has it: `attribute(model, images, targets, method)` takes uint8 images
(B, 3, S, S) and class indices (B,), and returns heat maps (B, S, S) scaled to 0..1 per image.
Memory stays bounded on big images: Integrated Gradients and Occlusion evaluate in small internal batches.

Grad-CAM is only as fine as the layer it reads. The body's output is 1x1 at 32 px and 2x2 at 64 px for ResNets and
EfficientNet-Lite0 (stride 32): one flat tint, or a blur. So it reads the deepest layer whose map keeps at least
MIN_CAM_SIDE cells a side at the image's size (ResNet-18: layer1 at 32 px, layer2 at 64 px, the body at 224 px),
and where none past the first stage does (16 px), it says so instead of drawing a tint that means nothing.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerGradCam, Occlusion, Saliency
from torch import nn
from torch.nn import functional as F

from core.data.batches import normalize
from core.net.backbones import BLOCK_TYPES

INTERNAL_BATCH = 16  # images evaluated at once inside Integrated Gradients and Occlusion
MIN_CAM_SIDE = 6  # cells a side below which a Grad-CAM map is a blur (6 keeps ResNet-18's layer1 at 24 px)
MIN_CAM_STRIDE = 4  # a layer before the second downsampling sees edges, not parts: not "where the model looked"


class AttributionUnavailable(ValueError):
    """No layer of this model can give an informative map at this image size; the message says why, in words."""


@dataclass(frozen=True)
class CamLayer:
    name: str  # dotted name in the model ("0" is the whole body), as the Layers page lists them
    module: nn.Module
    side: int  # cells a side of its map at the image size asked for
    size: int  # the image size, pixels


def _candidates(body: nn.Module) -> list[nn.Module]:
    """The body and its blocks (their output after the skip connection), or its convolutions when it has none."""
    blocks = [m for m in body.modules() if type(m).__name__ in BLOCK_TYPES]
    return [body, *(blocks or [m for m in body.modules() if isinstance(m, nn.Conv2d)])]


def grad_cam_layer(model: nn.Sequential, size: int) -> CamLayer | None:
    """The layer Grad-CAM reads for (body, head) `model` at `size` px: the deepest whose (h, w) map has at least
    MIN_CAM_SIDE cells a side and lies MIN_CAM_STRIDE or more pixels a cell in (or as deep as the body goes);
    None when there is none. One forward pass of a black image finds every map's side."""
    body, sides, order = model[0], {}, []

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            sides[module] = min(output.shape[-2:])
            order.append(module)  # hooks fire as each layer finishes: forward order, a block after its layers

    candidates = _candidates(body)
    hooks = [module.register_forward_hook(record) for module in candidates]
    try:
        _probe(body, size)
    finally:
        for hook in hooks:
            hook.remove()
    deepest_stride = size / max(sides.get(body, size), 1)
    fit = [m for m in order if sides[m] >= MIN_CAM_SIDE and size / sides[m] >= min(MIN_CAM_STRIDE, deepest_stride)]
    if not fit:
        return None
    names = {module: name for name, module in model.named_modules()}
    return CamLayer(names[fit[-1]], fit[-1], sides[fit[-1]], size)


@torch.no_grad()
def _probe(body: nn.Module, size: int) -> None:
    """A forward pass of a black (1, 3, size, size) image in eval mode: a training body's BatchNorm statistics stay
    as they were (a cached model is in eval mode already, and is left untouched)."""
    training = body.training
    body.eval()
    try:
        body(torch.zeros(1, 3, size, size))
    finally:
        body.train(training)


def grad_cam_note(layer: CamLayer | None, size: int) -> str:
    """One sentence on what Grad-CAM shows through `layer` (grad_cam_layer's answer at `size` px), or why it
    cannot show anything."""
    if layer is None:
        return (f"At {size} px no layer of this network past its first stage keeps a map of {MIN_CAM_SIDE}×"
                f"{MIN_CAM_SIDE} cells or more, so Grad-CAM cannot show where the model looked: it would paint "
                "one flat tint. Train at a larger size to see it (32 px is enough for the CNNs here; a "
                "transformer with 16-px patches needs 96 px).")
    return (f"Grad-CAM reads layer {layer.name}, the deepest whose map keeps {layer.side}×{layer.side} cells at "
            f"{size} px, and is smoothed up to the image: bright where that layer's evidence for the class lies.")


def _grad_cam(model: nn.Sequential, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    layer = grad_cam_layer(model, x.shape[-1])
    if layer is None:
        raise AttributionUnavailable(grad_cam_note(None, x.shape[-1]))
    cam = LayerGradCam(model, layer.module).attribute(x, target=targets, relu_attributions=True)  # (B, 1, h, w)
    # bicubic, not bilinear: an 8x8 map upsampled bilinearly still shows its cells' edges; clamp its overshoot
    smooth = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bicubic", align_corners=False).clamp_min(0)
    return smooth[:, 0]


def _integrated_gradients(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    black = normalize(torch.zeros_like(x, dtype=torch.uint8))  # the path starts from a black image
    attributions = IntegratedGradients(model).attribute(x, baselines=black, target=targets, n_steps=32,
                                                        internal_batch_size=INTERNAL_BATCH)
    return attributions.abs().sum(1)


def _saliency(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return Saliency(model).attribute(x, target=targets, abs=True).amax(1)  # strongest channel, as Simonyan et al.


def _occlusion(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    size = x.shape[-1]
    window = max(size // 8, 2)
    stride = max(window * 3 // 4, 1)  # overlapping patches; at 128 px, 10 x 10 positions (answers in ~1 s)
    attributions = Occlusion(model).attribute(x, target=targets, sliding_window_shapes=(3, window, window),
                                              strides=(3, stride, stride), baselines=0.0,
                                              perturbations_per_eval=INTERNAL_BATCH)
    return attributions.sum(1).clamp_min(0)  # where hiding the pixels lowers the class score


@dataclass(frozen=True)
class AttributionMethod:
    label: str
    explanation: str  # one sentence for a newcomer
    compute: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, x, targets) -> (B, S, S)


METHODS: dict[str, AttributionMethod] = {
    "grad_cam": AttributionMethod(
        "Grad-CAM", "Weights a deep layer's feature maps by how much they raise the class score: coarse, but it "
                    "shows the region the decision rests on.", _grad_cam),
    "integrated_gradients": AttributionMethod(
        "Integrated Gradients", "Adds up, pixel by pixel, how the class score grows as the image fades in from "
                                "black: fine-grained and faithful.", _integrated_gradients),
    "saliency": AttributionMethod(
        "Saliency", "How much the class score changes when each pixel changes a little: the plain gradient.",
        _saliency),
    "occlusion": AttributionMethod(
        "Occlusion", "Hides one patch at a time and measures how much the class score drops: slow but needs no "
                     "gradients.", _occlusion),
}


def attribute(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | list[int], method: str) -> np.ndarray:
    """Heat maps (B, S, S) in 0..1 of `method` for uint8 images (B, 3, S, S) and target classes (B,)."""
    x = normalize(images).requires_grad_(True)
    targets = torch.as_tensor(targets, dtype=torch.long)
    heat = METHODS[method].compute(model, x, targets).detach().float()
    peak = heat.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (heat / peak).numpy()


@torch.no_grad()
def top_predictions(model: nn.Module, image: torch.Tensor, class_names: list[str], k: int = 5,
                    multi_label: bool = False) -> list[tuple[str, float]]:
    """The k most probable classes of one uint8 image (3, S, S), with probabilities (of a model of label sets,
    `multi_label`: each label's own sigmoid)."""
    logits = model(normalize(image[None]))
    probs = (logits.sigmoid() if multi_label else logits.softmax(1))[0]
    values, indices = probs.topk(min(k, len(class_names)))
    return [(class_names[i], float(v)) for v, i in zip(values, indices)]
