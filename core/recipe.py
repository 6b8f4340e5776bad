"""fastai's fine_tune recipe on the one loop: train a new head on a frozen body, then everything with
discriminative learning rates. The frozen epochs train on body features computed once when they can.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from core.batches import iterate_batches
from core.config import TrainConfig
from core.data import Split
from core.device import autocast_for, in_layout, inference_batch_size, memory_format_for
from core.distributed import World
from core.loop import Learner, fit_one_cycle, keeps_bn_stats
from core.models import freeze_body, unfreeze
from core.progress import Phase


def fine_tune(learner: Learner) -> None:
    """fastai's recipe: train the new head on a frozen body, then everything with discriminative rates.

    With pretrained weights: `freeze_epochs` one-cycle epochs at lr with the body frozen (pct_start 0.99),
    then halve lr and train `epochs` epochs unfrozen, layer groups at lr/100 .. lr spaced geometrically,
    with pct_start 0.3 and div 5 (or the slice unfrozen_lr_min .. unfrozen_lr_max when given). From scratch
    there is nothing to protect: `epochs` epochs at lr.
    """
    config, classifier = learner.config, learner.classifier
    if not config.pretrained:
        unfreeze(classifier)
        params = [p for group in classifier.groups for p in group]
        fit_one_cycle(learner, config.epochs, [{"params": params, "lr": config.lr}], phase="scratch")
        return
    resuming_unfrozen = learner.resume is not None and learner.resume["phase"] == "unfrozen"
    if config.freeze_epochs > 0 and not resuming_unfrozen:
        freeze_body(classifier)
        trainable = [p for p in classifier.model.parameters() if p.requires_grad]
        if caches_features(config, learner.world):
            learner.features = cache_features(learner)
            trainable = list(classifier.head.parameters())
        try:
            fit_one_cycle(learner, config.freeze_epochs, [{"params": trainable, "lr": config.lr}], pct_start=0.99,
                          phase="frozen")
        finally:
            learner.features = None
    if config.epochs > 0:
        unfreeze(classifier)
        top = config.unfrozen_lr_max or config.lr / 2
        lrs = even_mults(config.unfrozen_lr_min or top / 100, top, len(classifier.groups))
        groups = [{"params": params, "lr": lr} for params, lr in zip(classifier.groups, lrs)]
        fit_one_cycle(learner, config.epochs, groups, pct_start=0.3, div=5.0, phase="unfrozen")


def plan(config: TrainConfig, world: World = World()) -> list[Phase]:
    """The phases fine_tune trains, in order, with their epochs: what a run's time left is added up over."""
    if not config.pretrained:
        return [Phase("scratch", config.epochs)]
    frozen = [Phase("frozen", config.freeze_epochs, caches_features(config, world))] if config.freeze_epochs else []
    return frozen + ([Phase("unfrozen", config.epochs)] if config.epochs else [])


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """n learning rates spaced geometrically from start to stop (fastai's slice(start, stop))."""
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step ** i for i in range(n)]


def caches_features(config: TrainConfig, world: World) -> bool:
    """Whether the frozen phase can train the head on body features computed once.

    Only when every epoch would show the body the same images (no random augmentation), with the ImageNet
    BatchNorm statistics kept (so the frozen body is a fixed function), in one process.
    """
    return config.pretrained and keeps_bn_stats(config) and not config.augments and not world.active


@torch.inference_mode()
def body_features(body: nn.Module, images: torch.Tensor, *, batch_size: int, device: torch.device,
                  chunk: int | None = None) -> torch.Tensor:
    """The frozen body's features of uint8 images, average-pooled to (N, F, 1, 1) float32, on `device`.

    The head pools first anyway, so it reads these exactly as it would read the body's feature maps. `chunk`
    (images a forward pass) defaults to inference_batch_size's choice.
    """
    body.eval()
    chunk = chunk or inference_batch_size(images.shape[-1], batch_size, device)
    parts, layout = [], memory_format_for(body, device)
    for x, _ in iterate_batches(images, torch.zeros(len(images), dtype=torch.long), chunk, shuffle=False,
                                device=device):
        with autocast_for(device):
            parts.append(body(in_layout(x, layout)).float().mean((2, 3), keepdim=True))
    return torch.cat(parts)


def cache_features(learner: Learner) -> Split:
    """Run the frozen body once over the training and validation images (the way Teachable Machine trains a
    head in seconds); the frozen epochs then cost a linear layer's work."""
    started = time.perf_counter()
    learner.announce("Frozen phase: computing the body's features once")
    split, body, bs, device = learner.split, learner.classifier.body, learner.config.bs, learner.device
    features = Split(body_features(body, split.train_images, batch_size=bs, device=device), split.train_labels,
                     body_features(body, split.valid_images, batch_size=bs, device=device), split.valid_labels,
                     split.valid_ids)
    learner.announce("")
    seconds = time.perf_counter() - started
    learner.feature_seconds += seconds  # the run's time left is estimated from this forward pass until unfrozen
    print(f"Frozen phase: body features of {len(split.train_labels) + len(split.valid_labels)} images computed "
          f"once in {seconds:.1f} s; the head trains on them.", flush=True)
    return features
