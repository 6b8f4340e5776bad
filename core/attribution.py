"""Attributions through captum: which pixels made the model choose a class.

One shape for every method, as captum has it: `attribute(model, images, targets, method)` takes uint8 images
(B, 3, S, S) and class indices (B,), and returns heat maps (B, S, S) scaled to 0..1 per image.
Memory stays bounded on big images: Integrated Gradients and Occlusion evaluate in small internal batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency
from torch import nn

from core.batches import normalize

INTERNAL_BATCH = 16  # images evaluated at once inside Integrated Gradients and Occlusion


def _grad_cam(model: nn.Sequential, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # On the body's output, the last and most semantic feature maps: (B, 1, h, w), upsampled to the image.
    cam = LayerGradCam(model, model[0]).attribute(x, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]


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
        "Grad-CAM", "Weights the last feature maps by how much they raise the class score: coarse, but it shows "
                    "the region the decision rests on.", _grad_cam),
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
def top_predictions(model: nn.Module, image: torch.Tensor, class_names: list[str], k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes of one uint8 image (3, S, S), with probabilities."""
    probs = model(normalize(image[None])).softmax(1)[0]
    values, indices = probs.topk(min(k, len(class_names)))
    return [(class_names[i], float(v)) for v, i in zip(values, indices)]
