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


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: safetensors, or a weights-only torch state dict, bare or under
    "state_dict"/"model"; WeightsUnavailable, a sentence, when it cannot be read."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict", state.get("model")), dict):
            state = state.get("state_dict", state.get("model"))
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("it holds no state dict of tensors")
        return state
    except Exception as error:  # a missing, damaged or pickled file: all the same to the user
        raise WeightsUnavailable(f"The weights file {path} could not be loaded ({error}). It must be a safetensors "
                                 "file or a weights-only state dict.") from error


def classifier_keys(state: dict[str, torch.Tensor], classifier: str, n_classes: int) -> set[str]:
    """The keys of `state` that hold a classifier usable as the network's own (`classifier`.weight and .bias for
    `n_classes` classes); empty for a feature extractor's weights (timm's num_classes=0) or a classifier of another
    task's classes, whose weights are then left out."""
    weight = state.get(f"{classifier}.weight")
    if weight is None or weight.shape[0] != n_classes:
        return set()
    return {key for key in (f"{classifier}.weight", f"{classifier}.bias") if key in state}


def check_fit(path: str, given: set[str], expected: set[str], classifier: str) -> None:
    """WeightsUnavailable unless the file's keys (classifier left aside) are exactly the backbone's."""
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        said = "; ".join(f"{what} {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
                         for what, keys in (("missing", missing), ("not in this backbone", unexpected)) if keys)
        raise WeightsUnavailable(f"The weights file {path} does not fit this backbone ({said}). It must hold the "
                                 f"weights of the same architecture, with or without its classifier ({classifier}).")


def load_weights_file(net: nn.Module, path: str, classifier: str, n_classes: int = 1000) -> None:
    """Load a weights file into `net`, whose ImageNet classifier is the module named `classifier`. A file without
    that classifier (a backbone saved as a feature extractor) or with another task's loads the rest and leaves the
    classifier as built; any other key missing or left over is a sentence (WeightsUnavailable)."""
    state = read_weights(path)
    head = {f"{classifier}.weight", f"{classifier}.bias"}
    kept = classifier_keys(state, classifier, n_classes)
    body = {key: value for key, value in state.items() if key not in head}
    own = set(net.state_dict())
    check_fit(path, set(body) | kept, own if kept else own - head, classifier)
    try:
        net.load_state_dict({**body, **{key: state[key] for key in kept}}, strict=bool(kept))
    except Exception as error:  # shapes of another variant of the architecture
        raise WeightsUnavailable(f"The weights file {path} could not be loaded into this backbone ({error}). It "
                                 "must hold the weights of the same architecture.") from error


def parameters(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for module in modules for p in module.parameters()]
