"""fastai's fine_tune recipe on the one loop: train a new head on a frozen body, then more of the network
with discriminative learning rates. What can be computed once is: without augmentation, the frozen epochs train
the head on body features computed once, and the unfrozen epochs train the body's late stages and the head on
the early stages' outputs computed once (unfreeze="late"; core.net.stages picks the cut from the network's
operation counts).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from core.config import TrainConfig
from core.data import mapped
from core.data.batches import iterate_batches
from core.data.load import Split
from core.device import autocast_for, in_layout, inference_batch_size, memory_format_for
from core.distributed import World
from core.net.backbones import freeze_body, unfreeze
from core.net.stages import LateCut, choose_cut
from core.net.stages import split as split_body
from core.train.callbacks import Callback, StopTraining
from core.train.loop import Cached, Learner, fit_one_cycle, keeps_bn_stats
from core.train.progress import Phase


def fine_tune(learner: Learner, cut: LateCut | None = None) -> None:
    """fastai's recipe: train the new head on a frozen body, then everything with discriminative rates.

    With pretrained weights: `freeze_epochs` one-cycle epochs at lr with the body frozen (pct_start 0.99),
    then halve lr and train `epochs` epochs unfrozen, layer groups at lr/100 .. lr spaced geometrically,
    with pct_start 0.3 and div 5 (or the slice unfrozen_lr_min .. unfrozen_lr_max when given). From scratch
    there is nothing to protect: `epochs` epochs at lr. With a `cut` (late_cut's), the unfrozen epochs train only
    the body's late stages and the head, on the early stages' output computed once.
    """
    config, classifier = learner.config, learner.classifier
    if not config.pretrained:
        unfreeze(classifier)
        params = [p for group in classifier.groups for p in group]
        fit_one_cycle(learner, config.epochs, [{"params": params, "lr": config.lr}], phase="scratch")
        return
    resuming_later = learner.resume is not None and learner.resume["phase"] in ("unfrozen", "late")
    early = None  # the early stages' output (with a cut): computed for the frozen phase, kept for the late one
    if config.freeze_epochs > 0 and not resuming_later:
        freeze_body(classifier)
        trainable, cached = [p for p in classifier.model.parameters() if p.requires_grad], None
        if cut is not None:  # the late phase's cache serves this one too: the late stages run once over it
            early = cache_features(learner, split_body(classifier.body, cut.at)[0])
            cached = Cached(late_features(learner, split_body(classifier.body, cut.at)[1], early), classifier.head)
        elif caches_features(config, learner.world):
            cached = Cached(cache_features(learner, classifier.body, pool=True), classifier.head)
        if cached is not None:
            trainable = list(classifier.head.parameters())
        keep = KeepBestEpoch(learner, config.freeze_epochs)
        learner.callbacks.insert(0, keep)  # before the run folder's writer: its checkpoint holds what is kept
        try:
            fit_one_cycle(learner, config.freeze_epochs, [{"params": trainable, "lr": config.lr}], pct_start=0.99,
                          phase="frozen", cached=cached)
        finally:
            learner.callbacks.remove(keep)
        del cached  # the head's features (N x F floats: 360 MB for 70,000 images) go before the unfrozen epochs
    if config.epochs > 0 and cut is not None:
        train_late(learner, cut, early)
    elif config.epochs > 0:
        unfreeze(classifier)
        fit_one_cycle(learner, config.epochs, unfrozen_groups(learner), pct_start=0.3, div=5.0, phase="unfrozen")


class KeepBestEpoch(Callback):
    """The frozen phase ends with the head of its epoch of lowest validation loss (Keras' restore_best_weights,
    for one phase): on all 70,000 Fashion-MNIST photos at 64 px the head's validation loss went from 0.42 after
    epoch 1 to 0.68 after epoch 5 as the one-cycle rate peaked (bench/frozen_phase), and the unfrozen epochs
    would have started from that head.

    What is kept is what trains in the phase and the body's BatchNorm statistics (which move with adapt_bn), so
    the kept epoch's validation figures hold exactly; the phase's last row says so (`kept_epoch`, its figures)
    and its checkpoint holds the kept head. A resume in the middle of the phase keeps the best since the resume.
    """

    def __init__(self, learner: Learner, epochs: int):
        self.learner, self.epochs = learner, epochs
        self.best_loss, self.best_epoch, self.best_logs, self.saved = math.inf, 0, {}, {}

    def _state(self) -> dict[str, torch.Tensor]:
        model = self.learner.classifier.model
        return {name: value.detach().clone() for name, value in
                [*((n, p) for n, p in model.named_parameters() if p.requires_grad), *model.named_buffers()]}

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if "valid_loss" not in logs:
            return
        if logs["valid_loss"] < self.best_loss:  # a NaN is never kept
            self.best_loss, self.best_epoch, self.saved = logs["valid_loss"], epoch, self._state()
            self.best_logs = {k: logs[k] for k in ("valid_loss", "accuracy", "error_rate")}
        if self.learner.phase_epoch < self.epochs or self.best_epoch in (0, epoch):
            return
        with torch.no_grad():
            state = dict(self.learner.classifier.model.named_parameters()) | dict(
                self.learner.classifier.model.named_buffers())
            for name, value in self.saved.items():
                state[name].copy_(value)
        print(f"The frozen phase ends with epoch {self.best_epoch}'s head (validation loss {self.best_loss:.4f}); "
              f"epoch {epoch}'s ended at {logs['valid_loss']:.4f}.", flush=True)
        logs |= {**self.best_logs, "kept_epoch": self.best_epoch, "ended_valid_loss": logs["valid_loss"],
                 "ended_accuracy": logs["accuracy"]}


def unfrozen_groups(learner: Learner, trainable: set[int] | None = None) -> list[dict]:
    """The optimizer's groups for the unfrozen epochs: early body, late body, head at rates from lr/200 to lr/2
    spaced geometrically (or unfrozen_lr_min .. unfrozen_lr_max), keeping only `trainable` parameters (ids)."""
    config, classifier = learner.config, learner.classifier
    top = config.unfrozen_lr_max or config.lr / 2
    lrs = even_mults(config.unfrozen_lr_min or top / 100, top, len(classifier.groups))
    groups = [{"params": [p for p in params if trainable is None or id(p) in trainable], "lr": lr}
              for params, lr in zip(classifier.groups, lrs)]
    return [group for group in groups if group["params"]]


class _AsFloat(nn.Module):
    """Cached early outputs are kept in bfloat16 (half the memory); the late stages compute in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def train_late(learner: Learner, cut: LateCut, early_features: Split | None = None) -> None:
    """The unfrozen epochs on the body's late stages and the head, fed the early stages' outputs computed once
    (`early_features`, when the frozen phase computed them; otherwise here)."""
    classifier = learner.classifier
    early, late = split_body(classifier.body, cut.at)
    if early_features is None:  # no frozen phase, or a resume into this one
        early_features = cache_features(learner, early)
    unfreeze(classifier)
    for param in early.parameters():
        param.requires_grad_(False)
    trainable = {id(p) for p in late.parameters()} | {id(p) for p in classifier.head.parameters()}
    fit_one_cycle(learner, learner.config.epochs, unfrozen_groups(learner, trainable), pct_start=0.3, div=5.0,
                  phase="late", cached=Cached(early_features, nn.Sequential(_AsFloat(), late, classifier.head)))


def trains_late(config: TrainConfig, world: World = World()) -> bool:
    """Whether the unfrozen epochs may train only the late stages on cached early outputs (then late_cut says
    where, if anywhere)."""
    return config.unfreeze == "late" and config.epochs > 0 and caches_features(config, world)


def late_cut(learner: Learner) -> LateCut | None:
    """Where to cut the body for unfreeze="late" (None: the unfrozen epochs train the whole network)."""
    config = learner.config
    if not trains_late(config, learner.world):
        return None
    return choose_cut(learner.classifier.body, config.size, len(learner.split.train_labels),
                      len(learner.split.valid_labels), config.epochs, learner.device)


def plan(config: TrainConfig, world: World = World(), cut: LateCut | None = None) -> list[Phase]:
    """The phases fine_tune trains, in order, with their epochs: what a run's time left is added up over."""
    if not config.pretrained:
        return [Phase("scratch", config.epochs)]
    frozen = [Phase("frozen", config.freeze_epochs, caches_features(config, world))] if config.freeze_epochs else []
    if not config.epochs:
        return frozen
    return frozen + [Phase("late", config.epochs, True, cut.share) if cut else Phase("unfrozen", config.epochs)]


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
                  chunk: int | None = None, pool: bool = True,
                  stop_requested: Callable[[], bool] | None = None) -> torch.Tensor:
    """A frozen body's (or its early stages') output for uint8 images (N, 3, S, S), on `device`: average-pooled to
    (N, F, 1, 1) float32, or with pool=False the maps themselves (N, C, h, w) in bfloat16 (half the memory).

    The head pools first anyway, so it reads pooled features exactly as it would read the body's feature maps.
    `chunk` (images a forward pass) defaults to inference_batch_size's choice. StopTraining, between two chunks,
    once `stop_requested()` says so: a stop does not wait for a pass over every image.
    """
    body.eval()
    chunk = chunk or inference_batch_size(images.shape[-1], batch_size, device)
    layout = memory_format_for(body, device)

    def parts():
        for x, _ in iterate_batches(images, torch.zeros(len(images), dtype=torch.long), chunk, shuffle=False,
                                    device=device):
            if stop_requested is not None and stop_requested():
                raise StopTraining
            with autocast_for(device):
                out = body(in_layout(x, layout))
            yield out.float().mean((2, 3), keepdim=True) if pool else out.to(torch.bfloat16).contiguous()

    # images in a memory-mapped file (data past what memory holds comfortably): the features go to one too
    return mapped.rows_together(parts(), len(images), to_file=mapped.is_mapped(images) and device.type == "cpu")


def cache_features(learner: Learner, module: nn.Module, pool: bool = False) -> Split:
    """Run a frozen `module` (the body, or its early stages) once over the training and validation images (the
    way Teachable Machine trains a head in seconds); what trains next reads its output instead of the images."""
    started = time.perf_counter()
    # not kept between starts: a resume computes it again, and says so
    learner.announce("Computing the frozen layers' output once" if learner.resume is None else
                     "Resuming: computing the frozen layers' output again (it is not kept between starts)")
    split, bs, device, stop = learner.split, learner.config.bs, learner.device, learner.stop_requested
    features = Split(body_features(module, split.train_images, batch_size=bs, device=device, pool=pool,
                                   stop_requested=stop), split.train_labels,
                     body_features(module, split.valid_images, batch_size=bs, device=device, pool=pool,
                                   stop_requested=stop), split.valid_labels, split.valid_ids)
    learner.announce("")
    seconds = time.perf_counter() - started
    learner.feature_seconds += seconds  # the run's time left is estimated from this forward pass until unfrozen
    shape = "x".join(map(str, features.train_images.shape[1:]))
    print(f"Frozen layers' output ({shape} an image) of {len(split.train_labels) + len(split.valid_labels)} images "
          f"computed once in {seconds:.1f} s.", flush=True)
    return features


def late_features(learner: Learner, late: nn.Module, early: Split) -> Split:
    """The body's pooled features from the cached early outputs: the late stages run once over them."""
    started = time.perf_counter()
    bs, device = learner.config.bs, learner.device
    head_in = nn.Sequential(_AsFloat(), late)
    stop = learner.stop_requested
    features = Split(body_features(head_in, early.train_images, batch_size=bs, device=device, stop_requested=stop),
                     early.train_labels,
                     body_features(head_in, early.valid_images, batch_size=bs, device=device, stop_requested=stop),
                     early.valid_labels, early.valid_ids)
    learner.feature_seconds += time.perf_counter() - started  # with the early stages': one forward pass
    return features
