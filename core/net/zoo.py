"""Backbones from the timm zoo as `timm:NAME`: any model `timm.create_model` knows, shaped like every other
backbone here (a body giving (B, F, h, w) maps, layer groups, the ImageNet classifier).

Pretrained weights come through timm's own cache (the Hugging Face hub, downloaded once) where a network exists;
`weights` (a safetensors file or a weights-only state dict) replaces the download where none does. timm's own
loader reads the file, so a ViT's position embeddings are resampled to the image size as for a download.

Transformers give tokens (B, N, C), not maps: `TokenGrid` drops the class and register tokens and lays the patch
tokens back on their grid, so pooling, the cached frozen phase, Grad-CAM and the Layers page treat them as maps.
"""
from __future__ import annotations

import socket

import torch
from torch import nn

from core.config import TIMM_PREFIX, arch_known
from core.net.arch import Arch, Backbone, WeightsUnavailable, check_fit, classifier_keys, read_weights

# The Train page's list: today's backbones that fine-tune well on a CPU or a GPU (timm name with its weights tag).
TIMM_BACKBONES: dict[str, str] = {
    "timm:convnext_nano.in12k_ft_in1k": "ConvNeXt-Nano (timm)",
    "timm:convnext_tiny.in12k_ft_in1k": "ConvNeXt-Tiny (timm)",
    "timm:tf_efficientnetv2_b0.in1k": "EfficientNetV2-B0 (timm)",
    "timm:tf_efficientnetv2_s.in21k_ft_in1k": "EfficientNetV2-S (timm)",
    "timm:mobilenetv3_large_100.ra_in1k": "MobileNetV3-Large (timm)",
    "timm:mobilenetv4_conv_small.e2400_r224_in1k": "MobileNetV4-Conv-Small (timm)",
    "timm:regnety_008.pycls_in1k": "RegNetY-800MF (timm)",
    "timm:resnet50.a1_in1k": "ResNet-50 a1 (timm)",
    "timm:efficientnet_b0.ra_in1k": "EfficientNet-B0 (timm)",
    "timm:vit_small_patch16_224.augreg_in21k_ft_in1k": "ViT-S/16 (timm)",
    "timm:deit_small_patch16_224.fb_in1k": "DeiT-S/16 (timm)",
    "timm:resnet18.a1_in1k": "ResNet-18 a1 (timm)",
}


def is_timm(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX)


def known(arch: str) -> bool:
    """Whether `timm:NAME` names a model timm can build (weights tag allowed)."""
    return is_timm(arch) and arch_known(arch)


class TokenGrid(nn.Module):
    """A transformer's tokens (B, prefix + h*w, C) -> its patch tokens as maps (B, C, h, w)."""

    def __init__(self, n_prefix: int):
        super().__init__()
        self.n_prefix = n_prefix

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.n_prefix:]
        side = int(round(patches.shape[1] ** 0.5))
        return patches.transpose(1, 2).reshape(len(tokens), -1, side, side)


class Renormalize(nn.Module):
    """Images normalized with ImageNet's mean and std (what every batch here is) -> normalized as a model's
    weights were trained (ViT augreg and EfficientNetV2 in21k: mean and std 0.5), one per-channel affine map."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        from core.data.batches import IMAGENET_MEAN, IMAGENET_STD

        to = torch.tensor(std).view(1, 3, 1, 1)  # not in the state dict: it follows from the model's name
        self.register_buffer("scale", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) / to, persistent=False)
        self.register_buffer("shift", (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)).view(1, 3, 1, 1) / to,
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


def input_norm(net: nn.Module) -> nn.Module:
    """What turns this app's ImageNet-normalized batches into what `net`'s pretrained weights expect."""
    from core.data.batches import IMAGENET_MEAN, IMAGENET_STD

    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3 or torch.allclose(torch.tensor(mean + std),
                                                          torch.tensor(IMAGENET_MEAN + IMAGENET_STD)):
        return nn.Identity()
    return Renormalize(mean, std)


class TimmBody(nn.Module):
    """A timm model's `forward_features` as (B, F, h, w) maps, whatever the family, fed images normalized as its
    weights were trained (`norm`)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.norm = input_norm(net)
        self.net = net
        self.channels_last_output = getattr(net, "output_fmt", "NCHW") == "NHWC"  # Swin and friends
        self.grid = TokenGrid(getattr(net, "num_prefix_tokens", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.forward_features(self.norm(x))
        if features.dim() == 3:
            return self.grid(features)
        return features.permute(0, 3, 1, 2) if self.channels_last_output else features


def _cached(name: str) -> bool:
    """Whether timm's weights for `name` are in the Hugging Face cache already."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
    return bool(hub_id) and any(isinstance(try_to_load_from_cache(hub_id, file), str)
                                for file in ("model.safetensors", "pytorch_model.bin"))


def _hub_reachable() -> bool:
    """One quick connection to the hub: without it, the hub client retries for about half a minute first."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _no_weights(name: str, reason: str) -> WeightsUnavailable:
    return WeightsUnavailable(
        f"The ImageNet weights for {name} could not be had ({reason}). timm downloads them once from the Hugging "
        "Face hub into its cache; without a network, pass a weights file (--weights FILE, a safetensors file) or "
        "choose EfficientNet-Lite0, whose weights ship with the install.")


def _create(name: str, pretrained: bool, size: int, weights: str) -> nn.Module:
    import timm

    if pretrained and not weights and not _cached(name) and not _hub_reachable():
        raise _no_weights(name, "huggingface.co cannot be reached from this machine")
    options = dict(pretrained=pretrained or bool(weights))
    headless = None
    if weights:
        options["pretrained_cfg_overlay"] = dict(file=weights)
        headless = _headless_file(name, weights)
        if headless is not None:  # timm leaves the classifier out of the load, and builds none
            options["num_classes"] = 0
    try:
        try:  # transformers are built for the image size (their position embeddings resampled to it)
            net = timm.create_model(name, img_size=size, **options)
        except TypeError:  # a CNN: takes any size, and no img_size
            net = timm.create_model(name, **options)
    except Exception as error:  # no network, a hub error, a damaged or mismatched file
        if weights:
            raise WeightsUnavailable(f"The weights file {weights} could not be loaded into {name} ({error}). It must "
                                     "be a safetensors file or a weights-only state dict of that model.") from error
        raise _no_weights(name, f"{type(error).__name__}: {error}") from error
    if headless is not None:  # timm loaded it leniently (strict=False): every key must have had its place
        check_fit(weights, headless, set(net.state_dict()), "/".join(_classifiers(name)))
    return net


def _classifiers(name: str) -> tuple[str, ...]:
    """The module names of the ImageNet classifier(s) of timm's `name` ("fc", "head", "head.fc", …)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    names = getattr(cfg, "classifier", None) or "fc"
    return (names,) if isinstance(names, str) else tuple(names)


def _headless_file(name: str, weights: str) -> set[str] | None:
    """Where the weights file holds no ImageNet classifier for `name` (timm's num_classes=0 state dict, a feature
    extractor, or another task's classifier), the keys of the rest; None where it holds the classifier."""
    import timm

    state = read_weights(weights)
    cfg = timm.models.get_pretrained_cfg(name)
    n_classes = getattr(cfg, "num_classes", None) or 1000
    if all(classifier_keys(state, head, n_classes) for head in _classifiers(name)):
        return None
    heads = {f"{head}.{part}" for head in _classifiers(name) for part in ("weight", "bias")}
    return set(state) - heads


def _groups(net: nn.Module) -> list[list[nn.Parameter]]:
    """[early, late] parameters, split at the middle of timm's own coarse grouping (stem, stages or blocks)."""
    from timm.models import group_parameters

    by_group = group_parameters(net, net.group_matcher(coarse=True))  # group id -> parameter names, in depth order
    named = dict(net.named_parameters())
    ordered = [[named[name] for name in names] for _, names in sorted(by_group.items())]
    half = max(len(ordered) // 2, 1)
    return [[p for group in ordered[:half] for p in group], [p for group in ordered[half:] for p in group]]


def build(arch: str, pretrained: bool, size: int, weights: str = "") -> Backbone:
    """The backbone of `timm:NAME`: its body, feature count, layer groups and ImageNet classifier."""
    name = arch[len(TIMM_PREFIX):]
    net = _create(name, pretrained, size, weights)
    classifier = net.get_classifier()
    fc = classifier if isinstance(classifier, nn.Linear) else nn.Linear(net.num_features, 1000)
    groups = _groups(net)
    net.reset_classifier(0)  # the body ends at the features; heads live outside it
    kept = {id(p) for p in net.parameters()}
    groups = [[p for p in group if id(p) in kept] for group in groups]
    return Backbone(TimmBody(net), net.num_features, groups, fc)


def arch(key: str) -> Arch:
    """The registry entry of `timm:NAME`."""
    label = TIMM_BACKBONES.get(key, f"{key[len(TIMM_PREFIX):]} (timm)")
    return Arch(label, lambda pretrained, size, weights="": build(key, pretrained, size, weights),
                "ImageNet weights through timm's cache (downloaded once from the Hugging Face hub), or a file")
