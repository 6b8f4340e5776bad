"""Looking inside a trained network: loading a run's model, conv filters and layer activations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from captum.attr import LayerActivation
from torch import nn

from core.config import TrainConfig
from core.data import normalize
from core.models import build_classifier, conv_layers


def checkpoint_path(run_dir: Path) -> Path:
    """The run's best checkpoint, else its last; FileNotFoundError when it has neither yet."""
    for name in ("best.pt", "last.pt"):
        path = Path(run_dir) / "checkpoints" / name
        if path.exists():
            return path
    raise FileNotFoundError(f"The run {Path(run_dir).name} has no checkpoint yet: it has not finished an epoch.")


def load_model(run_dir: Path) -> tuple[nn.Module, list[str], TrainConfig]:
    """Rebuild a run's model from its checkpoint (weights only: nothing in the file can run code), in eval mode."""
    state = torch.load(checkpoint_path(run_dir), map_location="cpu", weights_only=True)
    config = TrainConfig.from_dict(state["config"])
    class_names = list(state["class_names"])
    classifier = build_classifier(config.arch, len(class_names), pretrained=False, size=config.size)
    classifier.model.load_state_dict(state["model"])
    return classifier.model.eval(), class_names, config


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return conv_layers(model)[0]


def conv_filters(conv: nn.Conv2d) -> np.ndarray:
    """Filters scaled to 0..1 for display. 3 input channels: (out, kh, kw, 3) colour tiles; else (out*in, kh, kw).

    Each filter is scaled by its own min and max, so the pattern shows whatever the weights' magnitude.
    """
    weight = conv.weight.detach().float().cpu()  # (out, in/groups, kh, kw)
    if weight.shape[1] == 3:
        tiles = weight.permute(0, 2, 3, 1)  # (out, kh, kw, 3)
    else:
        tiles = weight.reshape(-1, *weight.shape[2:])  # (out*in, kh, kw)
    flat = tiles.reshape(len(tiles), -1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = (high - low).clamp_min(1e-12)
    shape = (-1,) + (1,) * (tiles.dim() - 1)
    return ((tiles - low.view(shape)) / scale.view(shape)).numpy()


@torch.no_grad()
def activations(model: nn.Module, layer_name: str, image: torch.Tensor, top: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Feature maps of `layer_name` for one uint8 image (3, S, S): returns (maps (k, h, w), channel ids (k,)).

    The k channels with the largest mean activation come first: the ones this image excites most.
    """
    layer = dict(model.named_modules())[layer_name]
    maps = LayerActivation(model, layer).attribute(normalize(image[None]))[0]  # (C, h, w)
    strength = maps.flatten(1).mean(1)
    order = strength.argsort(descending=True)[:top]
    return maps[order].float().numpy(), order.numpy()
