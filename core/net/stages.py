"""A body as a chain of stages, so that the early ones can run once and the late ones train on their output.

`stages_of(body)` returns modules that, applied in order, compute exactly `body(x)`, sharing the body's own
layers (training a stage trains the body), and the places the chain can be cut: where a stage of new width or
resolution starts. `split(body, at)` gives (early, late) with late(early(x)) == body(x).

EfficientNet-Lite0, the ResNets (torchvision's and timm's) and timm's EfficientNet(V2), MobileNetV3/V4, ConvNeXt,
RegNet and ViT/DeiT families have stages; a body without (other timm families) answers None, and trains whole.

`choose_cut` decides from the network and the data, never from a timing of the moment, so the same command makes
the same model on a quiet machine and on a busy one (and on a GPU): each stage's cost is modelled from what its
forward pass does to one image at the run's size (floating-point operations, tensor elements written, operations
dispatched: `stage_costs`), weighted by what each cost on a reference CPU (bench/stage_costs fits and checks the
weights). Where training the whole network for the run's epochs would take under ALL_BUDGET_S there it pays to do
so (None); otherwise the cut is the one whose late stages' share of the pass is nearest LATE_SHARE (and at most
MAX_LATE_SHARE), among those whose early outputs for every image fit in CACHE_SHARE of the device's memory.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from core.device import total_bytes

# The cut is the one whose late stages' share of a forward pass is nearest this. EfficientNet-Lite0 at 128 px on
# Fashion-MNIST (bench/fashion.py, 2,000 training images, 3 frozen + 4 epochs): cutting where the late part is 34%,
# 27% and 16% of the pass gave 87.2%, 87.4% and 86.4%. Nearest, not "at most": the 27% cut timed at 25-31% in
# different runs, so "at most 0.3" took the 27% cut in some and the 16% one in others.
LATE_SHARE = 0.3
MAX_LATE_SHARE = 0.5  # a cut that leaves more than this of the pass to train saves too little to pay for its cache
CACHE_SHARE = 0.25  # of the device's memory, for the early stages' outputs of every image (bfloat16)
# Below this, the unfrozen epochs train every layer: the digits at 64 px (3 epochs, ~18 s) reach 96.9% so against
# 94.4% with only the last stage (the cut at 64 px leaves little: the early stages are most of the pass).
ALL_BUDGET_S = 60.0
TRAIN_STEP_PER_FORWARD = 4.0  # a training step against an inference pass of the same images (core.train.progress)
# Seconds an image costs the reference CPU (2 cores, batches of 16) per floating-point operation, per tensor element
# written and per operation dispatched: bench/stage_costs fits them to each stage's timed forward pass of
# EfficientNet-Lite0, ResNet-18 and ResNet-50 at 32-224 px, and prints the late shares both give.
SECONDS_PER_FLOP, SECONDS_PER_ELEMENT, SECONDS_PER_OP = 1.84e-12, 3.83e-10, 3.31e-6


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


class _PositionEmbedding(nn.Module):
    """A timm ViT's `_pos_embed` (class and register tokens, position embedding, dropout) as a stage; the network
    is held without being registered, so the stage's parameters are not the whole network's."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.__dict__["net"] = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._pos_embed(x)


def _stage_starts(stages: list[nn.Module], offset: int) -> list[int]:
    """Indices of each stage's first block (after the first stage's) in a flat list of their blocks placed at
    `offset`."""
    starts, position = [], offset
    for stage in stages:
        starts.append(position)
        position += len(stage)
    return starts[1:]


def _timm(body: nn.Module) -> Stages | None:
    """A timm body's forward_features as a chain, for the families whose forward_features is one: each stage (or
    block) a module after the body's input normalization, cut where a stage starts (a ViT: at any block)."""
    net, kind = body.net, type(body.net).__name__
    if all(hasattr(net, name) for name in ("conv1", "layer4", "maxpool")):  # the ResNets
        names = ["conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return _resnet_layers([body.norm, *(getattr(net, name) for name in names)], ["norm", *names])
    if kind in ("EfficientNet", "MobileNetV3"):  # EfficientNet(V2), MobileNetV3/V4: blocks in stages
        blocks = [block for stage in net.blocks for block in stage]
        tail = [net.conv_head, net.bn2] if kind == "EfficientNet" else []
        cuts = _stage_starts(list(net.blocks), 3) + ([3 + len(blocks)] if tail else [])
        return Stages([body.norm, net.conv_stem, net.bn1, *blocks, *tail], cuts)
    if kind == "ConvNeXt":
        return Stages([body.norm, net.stem, *net.stages, net.norm_pre], list(range(3, 2 + len(net.stages))))
    if kind == "RegNet":
        return Stages([body.norm, net.stem, net.s1, net.s2, net.s3, net.s4, net.final_conv], [3, 4, 5])
    if kind == "VisionTransformer" and not getattr(net, "dynamic_img_size", False):
        blocks = list(net.blocks)
        modules = [body.norm, net.patch_embed, _PositionEmbedding(net), net.patch_drop, net.norm_pre, *blocks,
                   net.norm, body.grid]
        return Stages(modules, list(range(6, 5 + len(blocks))))
    return None


def stages_of(body: nn.Module) -> Stages | None:
    """The body as stages, or None for a body this module cannot cut."""
    kind = type(body).__name__
    if kind == "EfficientNetLiteBody":
        return _efficientnet_lite(body)
    if isinstance(body, nn.Sequential) and len(body) == 8:  # torchvision's ResNets: conv1 ... layer4
        return _resnet_layers(list(body), ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"])
    if kind == "TimmBody" and not body.channels_last_output:
        return _timm(body)
    return None


def split(body: nn.Module, at: int) -> tuple[nn.Module, nn.Module]:
    """(early, late): the body's stages before module `at` and from it on; late(early(x)) == body(x)."""
    stages = stages_of(body)
    if stages is None or at not in stages.cuts:
        raise ValueError(f"cannot cut this body at {at}")
    return _Chain(*stages.modules[:at]), _Chain(*stages.modules[at:])


@dataclass(frozen=True)
class LateCut:
    at: int  # the first module of the late stages (stages_of(body).modules)
    share: float  # the late stages' share of a forward pass's modelled cost
    shape: tuple[int, ...]  # the early stages' output for one image: what is cached

    def to_dict(self) -> dict:
        return {"late_cut": self.at, "late_share": round(self.share, 4), "cached_shape": list(self.shape)}


@dataclass(frozen=True)
class OpCounts:
    flops: int
    elements: int  # elements of every tensor the operations return
    ops: int

    @property
    def seconds(self) -> float:
        """The reference CPU's time for these operations (module docstring)."""
        return self.flops * SECONDS_PER_FLOP + self.elements * SECONDS_PER_ELEMENT + self.ops * SECONDS_PER_OP


class _Dispatched(TorchDispatchMode):
    """Counts the operations dispatched and the elements of the tensors they return."""

    def __init__(self):
        super().__init__()
        self.ops = self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.elements += tensor.numel()
        return out


@torch.inference_mode()
def count_ops(stages: Stages, size: int) -> tuple[list[OpCounts], list[tuple[int, ...]]]:
    """What each module's forward pass does to one image of `size` px (the same on every machine and load), and
    the shape each receives."""
    counts, shapes, h = [], [], torch.zeros(1, 3, size, size)
    for module in stages.modules:
        shapes.append(tuple(h.shape[1:]))
        with FlopCounterMode(display=False) as flops, _Dispatched() as dispatched:
            h = module(h)
        counts.append(OpCounts(flops.get_total_flops(), dispatched.elements, dispatched.ops))
    return counts, shapes


@dataclass(frozen=True)
class StageCosts:
    """A body's stages at one image size, costed: what choose_cut decides from."""
    cuts: list[int]
    seconds: list[float]  # each module's modelled cost for one image
    shapes: list[tuple[int, ...]]  # what each module receives, for one image

    def pick(self, n_train: int, n_valid: int, epochs: int, budget_bytes: float) -> LateCut | None:
        """The cut for `epochs` epochs on n_train + n_valid images (module docstring), or None."""
        total = sum(self.seconds)
        if epochs * (n_train * TRAIN_STEP_PER_FORWARD + n_valid) * total <= ALL_BUDGET_S:
            return None
        shares = {at: sum(self.seconds[at:]) / total for at in self.cuts}
        fits = [at for at in self.cuts if shares[at] <= MAX_LATE_SHARE
                and (n_train + n_valid) * math.prod(self.shapes[at]) * 2 <= budget_bytes]
        if not fits:
            return None
        at = min(fits, key=lambda at: abs(shares[at] - LATE_SHARE))
        return LateCut(at, shares[at], self.shapes[at])


def stage_costs(body: nn.Module, size: int) -> StageCosts | None:
    """Each stage of `body` costed at `size` px from its operation counts; None for a body without stages. Counted
    on a copy on the CPU in float32 whatever device the body is on, so every device counts alike."""
    on_cpu = all(p.device.type == "cpu" for p in body.parameters())
    probe = body if on_cpu else copy.deepcopy(body).cpu().float()
    stages = stages_of(probe)
    if stages is None:
        return None
    was_training = probe.training
    probe.eval()
    try:
        counts, shapes = count_ops(stages, size)
    finally:
        probe.train(was_training)
    return StageCosts(stages.cuts, [count.seconds for count in counts], shapes)


def choose_cut(body: nn.Module, size: int, n_train: int, n_valid: int, epochs: int,
               device: torch.device) -> LateCut | None:
    """Where to cut `body` for training its late stages for `epochs` epochs on cached early outputs of the
    n_train + n_valid images at `size` px on `device`, from the network's operation counts and the device's
    memory; None when training the whole network is cheap enough to pay, when it has no stages, or when no cut
    fits."""
    costs = stage_costs(body, size)
    return None if costs is None else costs.pick(n_train, n_valid, epochs, total_bytes(device) * CACHE_SHARE)
