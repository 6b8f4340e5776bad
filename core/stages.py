"""A body as a chain of stages, so that the early ones can run once and the late ones train on their output.

`stages_of(body)` returns modules that, applied in order, compute exactly `body(x)`, sharing the body's own
layers (training a stage trains the body), and the places the chain can be cut: where a stage of new width or
resolution starts. `split(body, at)` gives (early, late) with late(early(x)) == body(x).

EfficientNet-Lite0 and the ResNets (torchvision's, and timm's) have stages; a body without (most timm families
for now) answers None, and trains whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class _Chain(nn.Module):
    """Some layers applied in order (the activation shared, as in the network it comes from)."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class _LiteBlock(nn.Module):
    """One MBConv block of EfficientNet-Lite with the drop-connect rate extract_features gives it."""

    def __init__(self, block: nn.Module, drop_connect_rate: float | None):
        super().__init__()
        self.block, self.drop_connect_rate = block, drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_connect_rate)


@dataclass(frozen=True)
class Stages:
    modules: list[nn.Module]  # applied in order: the body
    cuts: list[int]  # indices into modules where a late part may start (a new stage's first module)


def _efficientnet_lite(body: nn.Module) -> Stages:
    net = body.net
    rate = net._global_params.drop_connect_rate
    blocks = [_LiteBlock(block, rate * i / len(net._blocks) if rate else None) for i, block in enumerate(net._blocks)]
    modules = [_Chain(net._conv_stem, net._bn0, net._swish), *blocks, _Chain(net._conv_head, net._bn1, net._swish)]
    widths = [block._block_args.output_filters for block in net._blocks]
    cuts = [i + 1 for i in range(1, len(widths)) if widths[i] != widths[i - 1]] + [len(modules) - 1]
    return Stages(modules, cuts)


def _resnet_layers(layers: list[nn.Module], names: list[str]) -> Stages:
    return Stages(layers, [i for i, name in enumerate(names) if name in ("layer2", "layer3", "layer4")])


def stages_of(body: nn.Module) -> Stages | None:
    """The body as stages, or None for a body this module cannot cut."""
    kind = type(body).__name__
    if kind == "EfficientNetLiteBody":
        return _efficientnet_lite(body)
    if isinstance(body, nn.Sequential) and len(body) == 8:  # torchvision's ResNets: conv1 ... layer4
        return _resnet_layers(list(body), ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"])
    if kind == "TimmBody" and all(hasattr(body.net, name) for name in ("conv1", "layer4", "maxpool")):
        names = ["conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return _resnet_layers([getattr(body.net, name) for name in names], names)
    return None


def split(body: nn.Module, at: int) -> tuple[nn.Module, nn.Module]:
    """(early, late): the body's stages before module `at` and from it on; late(early(x)) == body(x)."""
    stages = stages_of(body)
    if stages is None or at not in stages.cuts:
        raise ValueError(f"cannot cut this body at {at}")
    return _Chain(*stages.modules[:at]), _Chain(*stages.modules[at:])
