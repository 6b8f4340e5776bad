"""What every backbone is: the registry entry (`Arch`) and what it builds (`Backbone`), and loading a weights file.

core.net.backbones (the one registry) and core.net.zoo (timm's models) both build these; neither imports the other
for them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be had (no network, no cache); the message says what to do."""


@dataclass(frozen=True)
class Backbone:
    body: nn.Module  # images (B, 3, S, S) -> features (B, n_features, h, w)
    n_features: int
    groups: list[list[nn.Parameter]]  # body's parameters split into [early, late] for discriminative rates
    imagenet_fc: nn.Linear  # the original 1,000-class ImageNet classifier (random unless pretrained)


@dataclass(frozen=True)
class Arch:
    label: str  # shown to people
    build: Callable[[bool, int, str], Backbone]  # (pretrained, image size, weights file or "") -> backbone
    weights_note: str  # where the pretrained weights come from


def load_weights_file(net: nn.Module, path: str) -> None:
    """Load a weights file (safetensors, or a weights-only torch state dict, bare or under "state_dict"/"model")
    into `net`; WeightsUnavailable, a sentence, when it cannot be read or does not fit."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("state_dict", state.get("model")), dict):
                state = state.get("state_dict", state.get("model"))
        net.load_state_dict(state)
    except Exception as error:  # a missing, damaged, pickled or mismatched file: all the same to the user
        raise WeightsUnavailable(f"The weights file {path} could not be loaded into this backbone ({error}). It "
                                 "must be a safetensors file or a weights-only state dict of the same "
                                 "architecture.") from error


def parameters(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for module in modules for p in module.parameters()]
