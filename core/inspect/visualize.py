"""Looking inside a network: conv filters, layer activations, and the images that
excite a channel most. Attributions (Grad-CAM and friends) live in core.inspect.attribution.

Every function takes uint8 images (3, S, S) or (N, 3, S, S) and normalizes them itself, and returns numpy
arrays for the pages to draw.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerActivation
from torch import nn

from core.data.batches import normalize
from core.net.backbones import conv_layers


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return conv_layers(model)[0]


def _scale_each(tiles: torch.Tensor) -> np.ndarray:
    """Scale each tile (first dim) to 0..1 by its own min and max, so a pattern shows whatever its magnitude."""
    flat = tiles.reshape(len(tiles), -1)
    low, high = flat.min(1).values, flat.max(1).values
    shape = (-1,) + (1,) * (tiles.dim() - 1)
    return ((tiles - low.view(shape)) / (high - low).clamp_min(1e-12).view(shape)).numpy()


def conv_filters(conv: nn.Conv2d) -> np.ndarray:
    """Filters scaled to 0..1 for display. 3 input channels: (out, kh, kw, 3) colour tiles; else (out*in, kh, kw)."""
    weight = conv.weight.detach().float().cpu()  # (out, in/groups, kh, kw)
    if weight.shape[1] == 3:
        return _scale_each(weight.permute(0, 2, 3, 1))
    return _scale_each(weight.reshape(-1, *weight.shape[2:]))


def filter_slices(conv: nn.Conv2d, out_channel: int, limit: int = 64) -> tuple[np.ndarray, list[str]]:
    """One filter of a deeper layer, input channel by input channel: ((k, kh, kw) in 0..1, labels).

    A depthwise layer (one input channel per filter) shows its first `limit` filters instead.
    """
    weight = conv.weight.detach().float().cpu()  # (out, in/groups, kh, kw)
    if weight.shape[1] == 1:
        tiles = weight[:limit, 0]
        return _scale_each(tiles), [f"filter {o}" for o in range(len(tiles))]
    tiles = weight[out_channel, :limit]
    return _scale_each(tiles), [f"in {i}" for i in range(len(tiles))]


@torch.no_grad()
def activations(model: nn.Module, layer_name: str, image: torch.Tensor, top: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Feature maps of `layer_name` for one uint8 image (3, S, S): returns (maps (k, h, w), channel ids (k,)).

    The k channels with the largest mean activation come first: the ones this image excites most.
    """
    layer = dict(model.named_modules())[layer_name]
    maps = as_maps(model, LayerActivation(model, layer).attribute(normalize(image[None])))[0]  # (C, h, w)
    strength = maps.flatten(1).mean(1)
    order = strength.argsort(descending=True)[:top]
    return maps[order].float().numpy(), order.numpy()


def as_maps(model: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """A layer's output as maps (B, C, h, w): a transformer block's tokens (B, N, C) laid on their grid, the
    model's own way (core.net.zoo.TokenGrid: class and register tokens dropped)."""
    if output.dim() != 3:
        return output
    grid = next((m for m in model.modules() if type(m).__name__ == "TokenGrid"), None)
    return grid(output) if grid is not None else output.transpose(1, 2)[..., None]


@torch.no_grad()
def attention_maps(model: nn.Module, image: torch.Tensor) -> np.ndarray | None:
    """How much the class token attends to each patch in a transformer's last block, per head: (heads, h, w)
    for one uint8 image (3, S, S); None for a network without attention (every CNN).

    timm's attention runs fused (no weights kept), so the weights are recomputed from the block's input with its
    own projections: softmax(q k^T * scale), as the block computes them."""
    blocks = [m for m in model.modules() if hasattr(m, "attn") and hasattr(m.attn, "qkv")]
    grid = next((m for m in model.modules() if type(m).__name__ == "TokenGrid"), None)
    if not blocks or grid is None or grid.n_prefix == 0:
        return None
    attn, captured = blocks[-1].attn, []
    handle = attn.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        model.eval()(normalize(image[None]))
    finally:
        handle.remove()
    tokens = captured[0]  # (1, N, C), after the block's first norm
    qkv = attn.qkv(tokens).reshape(1, tokens.shape[1], 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])  # (1, heads, N, d)
    weights = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1)[0]  # (heads, N, N)
    to_patches = weights[:, 0, grid.n_prefix:]  # the class token's attention to every patch
    side = int(round(to_patches.shape[1] ** 0.5))
    return to_patches.reshape(len(to_patches), side, side).float().numpy()


class _ReachedLayer(Exception):
    """Raised by a forward hook to skip the layers after the one we read: early layers answer fast."""


@torch.no_grad()
def channel_maxima(model: nn.Module, layer_name: str, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """(N, C): the strongest response of each channel of `layer_name` anywhere in each uint8 image (N, 3, S, S)."""
    layer = dict(model.named_modules())[layer_name]
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        captured.append(as_maps(model, output).float().amax(dim=(2, 3)))  # (B, C)
        raise _ReachedLayer

    handle = layer.register_forward_hook(hook)
    try:
        for start in range(0, len(images), batch_size):
            try:
                model(normalize(images[start:start + batch_size]))
            except _ReachedLayer:
                pass
    finally:
        handle.remove()
    return torch.cat(captured).numpy()


def top_images_for_channel(maxima: np.ndarray, channel: int, k: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k images that excite `channel` most, strongest first, and their responses."""
    order = np.argsort(-maxima[:, channel], kind="stable")[:k]
    return order, maxima[order, channel]


# Classic 3x3 kernels for showing what a convolution does, before looking at learned ones.
KERNELS: dict[str, list[list[float]]] = {
    "Vertical edges (Sobel x)": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "Horizontal edges (Sobel y)": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "Outline (Laplacian)": [[0, -1, 0], [-1, 4, -1], [0, -1, 0]],
    "Sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "Blur (box)": [[1 / 9] * 3] * 3,
}


def grayscale(image: torch.Tensor) -> np.ndarray:
    """uint8 (3, S, S) -> float (S, S) luminance in 0..255 (ITU-R 601 weights, as PIL's "L" mode)."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (image.float() * weights).sum(0).numpy()


def convolve(gray: np.ndarray, kernel: list[list[float]] | np.ndarray) -> np.ndarray:
    """Slide a small kernel over a grey image (S, S), zero padding, stride 1: the output (S, S).

    This is cross-correlation, as every deep-learning "convolution" is: the kernel is not flipped.
    """
    kernel_t = torch.as_tensor(np.asarray(kernel), dtype=torch.float32)[None, None]
    padding = kernel_t.shape[-1] // 2
    return F.conv2d(torch.as_tensor(gray, dtype=torch.float32)[None, None], kernel_t, padding=padding)[0, 0].numpy()


def filter_kernel(conv: nn.Conv2d, out_channel: int) -> np.ndarray:
    """One learned filter's weights averaged over its input channels (kh, kw): its numbers, to show them."""
    return conv.weight[out_channel].detach().float().mean(0).numpy()


@torch.no_grad()
def apply_learned_filter(conv: nn.Conv2d, out_channel: int, image: torch.Tensor) -> np.ndarray:
    """One learned first-layer filter slid over the whole normalized image at stride 1: (S, S)."""
    weight = conv.weight[out_channel:out_channel + 1].float()
    padding = weight.shape[-1] // 2
    return F.conv2d(normalize(image[None]), weight, padding=padding)[0, 0].numpy()
