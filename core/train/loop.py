"""The one training loop: `fit` trains epochs of one phase under a learning-rate schedule and calls back.

    fit(learner, epochs, param_groups, schedule=..., phase=...)   # fit_one_cycle is fit with OneCycleLR

Each epoch: batches (augmented when asked; with balance="sampler" drawn so every class comes up equally often)
-> forward, loss (class-weighted with balance="weights"), backward, step, schedule step -> callbacks'
`on_batch_end`; then validation (never weighted) -> `on_epoch_end`. Everything else (writing the run folder,
stop requests, a NaN loss, early stopping, the learning-rate finder) is a callback (core.train.callbacks), as in Keras
and fastai.
Under torchrun every process runs this same loop on its share of the batches (DistributedDataParallel).
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.config import TrainConfig
from core.data.augment import Augment
from core.data.batches import iterate_batches
from core.data.labelscores import scores
from core.data.load import Split
from core.device import adamw, autocast_for, in_layout, inference_batch_size, memory_format_for
from core.distributed import World
from core.net.backbones import Classifier
from core.train.callbacks import Callback, StopTraining

# (optimizer, total steps) -> the learning-rate schedule
Schedule = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


class OutOfMemory(Exception):
    """The GPU ran out of memory; the message says which batch size to try."""


@dataclass(frozen=True)
class Cached:
    """What a phase trains on in place of the images: a frozen part of the network's output, computed once, and the
    module that reads it (the head; or the late stages and the head)."""

    features: Split  # the frozen part's output for the training and validation images, with their labels
    model: nn.Module


@dataclass
class Learner:
    """The model, its data, and where training stands: what `fit` advances and what callbacks may read."""

    classifier: Classifier
    split: Split
    config: TrainConfig
    device: torch.device
    callbacks: list[Callback] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    step: int = 0
    epoch: int = 0
    total_steps: int = 0
    total_epochs: int = 0
    phase: str = ""
    phase_epoch: int = 0  # epochs finished in the current phase
    batch_in_epoch: int = 0  # batches finished in the current epoch
    epoch_loss: tuple[float, int] = (0.0, 0)  # the current epoch's training loss so far: (sum over images, images)
    resume: dict | None = None  # a checkpoint to continue from, consumed by the phase it was saved in
    world: World = field(default_factory=World)  # the processes training together (one, unless torchrun)
    on_features: bool = False  # whether the current phase trains on cached features (fit's `cached`) in place of images
    loss_weights: torch.Tensor | None = None  # (n_classes,) on the device with balance="weights"; set by fit
    announce: Callable[[str], None] = lambda message: None  # tells the person what a long step is doing
    stop_requested: Callable[[], bool] = lambda: False  # a stop was asked for: long passes outside steps look too
    feature_seconds: float = 0.0  # wall seconds this process spent computing a cached frozen phase's features

    def batches_per_epoch(self) -> int:
        """Steps each process takes per epoch: the full batches, shared out between the processes."""
        n, bs = len(self.split.train_labels), self.config.bs
        return max((n // bs if n >= bs else 1) // self.world.size, 1)

    def call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)


def set_train_mode(model: nn.Module, keep_bn_stats: bool) -> None:
    """model.train(), except that BatchNorm layers keep their running statistics when `keep_bn_stats`.

    A pretrained body's ImageNet statistics are what its features were computed with in the frozen phase;
    replacing them with the new data's batch statistics changes every feature the head has learned to read
    (digits, EfficientNet-Lite0: 30% accuracy after the first unfrozen epoch, against 91% with them kept).
    """
    model.train()
    if keep_bn_stats:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def keeps_bn_stats(config: TrainConfig) -> bool:
    return config.pretrained and not config.adapt_bn


def one_cycle(param_groups: list[dict], *, pct_start: float, div: float) -> Schedule:
    """fastai's fit_one_cycle schedule: warm up from lr/div to each group's peak over pct_start of the steps,
    then cosine-anneal to lr/(div*1e5); momentum (Adam's beta1) cycles 0.95 -> 0.85 -> 0.95."""
    peaks = [group["lr"] for group in param_groups]
    return lambda optimizer, total: torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peaks, total_steps=total, pct_start=pct_start, div_factor=div, final_div_factor=1e5,
        base_momentum=0.85, max_momentum=0.95)


def fit_one_cycle(learner: Learner, epochs: int, param_groups: list[dict], *, pct_start: float = 0.25,
                  div: float = 25.0, phase: str = "fit", cached: Cached | None = None) -> None:
    """Train `epochs` epochs with AdamW under one one-cycle schedule over the groups ({"params", "lr": peak})."""
    fit(learner, epochs, param_groups, schedule=one_cycle(param_groups, pct_start=pct_start, div=div), phase=phase,
        cached=cached)


def fit(learner: Learner, epochs: int, param_groups: list[dict], *, schedule: Schedule, phase: str,
        validate: bool = True, cached: Cached | None = None) -> None:
    """Train `epochs` epochs of `phase` with AdamW over `param_groups`, the rates following `schedule`; each
    epoch ends with a pass over the validation set unless `validate` is off (the LR finder's sweep). With `cached`,
    its model trains on its features (never augmented) instead of the whole network on the images."""
    config, device = learner.config, learner.device
    optimizer = adamw(param_groups, device, lr=param_groups[-1]["lr"], weight_decay=config.wd, betas=(0.9, 0.99))
    learner.optimizer, learner.scheduler = optimizer, schedule(optimizer, epochs * learner.batches_per_epoch())
    learner.phase, learner.phase_epoch = phase, 0
    skip = _resume_phase(learner)  # batches of the first epoch already trained before a resume
    split, model, augment = learner.split, learner.classifier.model, Augment.from_config(config)
    if cached is not None:  # the body (or its early stages) already ran once over every image
        split, model, augment = cached.features, cached.model, Augment()
    learner.on_features = cached is not None
    learner.loss_weights = class_weights(split.train_labels).to(device) if config.balance == "weights" else None
    # Under torchrun, wrap per phase: DDP syncs the parameters that are trainable when it is built.
    train_model = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if learner.world.active else model
    while learner.phase_epoch < epochs:
        set_train_mode(model, keeps_bn_stats(config))
        started = time.perf_counter()
        train_loss = train_one_epoch(learner, train_model, split, augment, skip)
        skip = 0
        logs = {"phase": phase, "train_loss": train_loss}
        if validate:
            evaluation = evaluate(model, split.valid_images, split.valid_labels, batch_size=config.bs, device=device)
            logs |= {"valid_loss": evaluation.loss, "accuracy": evaluation.accuracy,
                     "error_rate": 1 - evaluation.accuracy, **evaluation.scores}
        learner.epoch += 1
        learner.phase_epoch += 1
        learner.batch_in_epoch, learner.epoch_loss = 0, (0.0, 0)
        learner.call("on_epoch_end", learner.epoch,
                     {**logs, "seconds": time.perf_counter() - started, "step": learner.step})


def _resume_phase(learner: Learner) -> int:
    """Restore the optimizer, schedule, RNG, position and the stopped epoch's loss so far when the checkpoint being
    resumed was saved in this phase; returns how many batches of the current epoch it had already trained."""
    checkpoint = learner.resume
    if checkpoint is None or checkpoint["phase"] != learner.phase:
        return 0
    learner.optimizer.load_state_dict(checkpoint["optimizer"])
    learner.scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["rng"])
    learner.phase_epoch, learner.resume = checkpoint["phase_epoch"], None
    loss_sum, seen = checkpoint.get("epoch_loss", (0.0, 0))  # older checkpoints: the batches after the resume
    learner.epoch_loss = (float(loss_sum), int(seen))
    return checkpoint["batch_in_epoch"]


def train_one_epoch(learner: Learner, model: nn.Module, split: Split, augment: Augment, skip: int = 0) -> float:
    """One pass over this process's batches, skipping the first `skip` (trained before a resume); returns the
    mean training loss over the whole epoch (a resumed one's batches before the stop included)."""
    config, world = learner.config, learner.world
    # Seeded per epoch, so a resumed epoch sees its batches in the same order as it would have.
    generator = torch.Generator().manual_seed(config.seed + learner.epoch)
    # balance="sampler": the order itself is drawn from that generator, so a resumed epoch still matches.
    batches = iterate_batches(split.train_images, split.train_labels, config.bs, shuffle=True, generator=generator,
                              drop_last=len(split.train_labels) >= config.bs, device=learner.device,
                              augment=augment if augment.active else None, balanced=config.balance == "sampler")
    n_batches = learner.batches_per_epoch()
    # Every process draws the same order; process r takes batches r, r + size, ... (equal counts for all).
    mine = ((i // world.size, batch) for i, batch in enumerate(batches)
            if i % world.size == world.rank and i // world.size < n_batches)
    losses = LossReports(learner, learner.epoch_loss if skip else (0.0, 0))
    layout = memory_format_for(model, learner.device)
    queued_at = time.perf_counter()
    for index, (x, y) in mine:
        if index < skip:
            continue  # trained before the resume; drawn anyway, so the random stream stays the same
        loss, lr = training_step(learner, model, in_layout(x, layout), y)
        learner.step += 1
        learner.batch_in_epoch = index + 1
        now = time.perf_counter()  # the host keeps pace with the device: it is never more than two steps ahead
        losses.queue(loss, {"lr": lr, "imgs_per_s": len(y) / max(now - queued_at, 1e-9), "epoch": learner.epoch + 1,
                            "images": len(y)})
        queued_at = now
        losses.report(keep=2)
    losses.report()
    return losses.mean()


def training_step(learner: Learner, model: nn.Module, x: torch.Tensor,
                  y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Forward, backward, optimizer and schedule step on one batch; returns the loss (still on the device) and
    the head's learning rate for this step (every group's schedule has the same shape)."""
    config, optimizer = learner.config, learner.optimizer
    try:
        with autocast_for(learner.device):
            loss = training_loss(model(x), y, learner.loss_weights, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    except torch.OutOfMemoryError:
        raise OutOfMemory(f"The GPU ran out of memory at batch size {config.bs} and {config.size} px. Try "
                          f"batch size {max(config.bs // 2, 1)}, or a smaller image size.") from None
    optimizer.step()
    lr = optimizer.param_groups[-1]["lr"]
    learner.scheduler.step()
    return loss.detach(), lr


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-class loss weights (C,) from training labels (N,): n / (n_classes * count), scikit-learn's
    class_weight="balanced", so that the weights average 1 over the training items and every class's items
    weigh as much in total. A class with no training items (possible with a dataset's own split) gets 0."""
    counts = torch.bincount(labels.cpu()).float()
    present = (counts > 0).sum()
    return torch.where(counts > 0, len(labels) / (present * counts.clamp(min=1)), 0.0)


def training_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None, *,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of a batch, logits (B, C) and targets (B,); with `class_weights` (C,), each item's loss
    (its smoothing share included) counts as much as its class's weight.

    The weighted losses are averaged over the batch, not by cross_entropy's `weight=`, which divides by the
    batch's total weight (a batch heavy with small classes would then count no more than any other) and weights
    the smoothing share by the other classes' weights: with weights that average 1 over the training items, a
    batch's mean is an unbiased estimate of the weighted loss over the whole training split.
    """
    if targets.dim() == 2:  # label sets: a yes or no per label (fastai's BCEWithLogitsLossFlat)
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
    if class_weights is None:
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    losses = F.cross_entropy(logits, targets, reduction="none", label_smoothing=label_smoothing)
    return (losses * class_weights[targets]).mean()


class LossReports:
    """Losses of queued steps, read and reported to the callbacks a few steps late.

    Reading a loss waits for its step to finish; with the last two steps left queued, a GPU always has work
    while the host waits, so no step waits for the one before it. A callback that asks to stop (StopTraining)
    still sees every step that was already taken, so the metrics and the checkpoint agree on the step.
    """

    def __init__(self, learner: Learner, start: tuple[float, int] = (0.0, 0)):
        self.learner = learner
        self.pending: deque[tuple[torch.Tensor, int, dict]] = deque()
        self.loss_sum, self.seen = start  # a resumed epoch's loss before its stop
        self.stop: StopTraining | None = None

    def queue(self, loss: torch.Tensor, logs: dict) -> None:
        self.pending.append((loss, self.learner.step, logs))

    def report(self, keep: int = 0) -> None:
        """Report the oldest steps until `keep` are left; when a callback asked to stop, report them all and stop."""
        while len(self.pending) > keep or (self.stop is not None and self.pending):
            loss, step, logs = self.pending.popleft()
            value = loss.item()
            images = logs.pop("images")
            self.loss_sum, self.seen = self.loss_sum + value * images, self.seen + images
            self.learner.epoch_loss = (self.loss_sum, self.seen)  # what a checkpoint at a stop keeps
            for callback in self.learner.callbacks:
                try:
                    callback.on_batch_end(step, {"loss": value, **logs})
                except StopTraining as stop:
                    self.stop = self.stop or stop
        if self.stop is not None:
            raise self.stop

    def mean(self) -> float:
        return self.loss_sum / max(self.seen, 1)


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float  # label sets: fastai's accuracy_multi
    probs: np.ndarray  # (N, n_classes) softmax probabilities (label sets: each label's sigmoid)
    losses: np.ndarray  # (N,) cross-entropy of each item (label sets: its mean binary cross-entropy)
    scores: dict = field(default_factory=dict)  # label sets: core.data.labelscores.scores, for the epoch row

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor) -> Evaluation:
        """Loss, accuracy, probabilities and per-item losses from (N, C) float logits and (N,) labels (or (N, C)
        label sets)."""
        return cls.of(probabilities(logits, labels), item_losses(logits, labels), labels)

    @classmethod
    def of(cls, probs: torch.Tensor, losses: torch.Tensor, labels: torch.Tensor) -> Evaluation:
        """From each item's probabilities and loss, against its label (or label set)."""
        if labels.dim() == 2:
            figures = scores(probs.numpy(), labels.numpy())
            return cls(losses.mean().item(), figures["accuracy_multi"], probs.numpy(), losses.numpy(), figures)
        return cls(losses.mean().item(), (probs.argmax(1) == labels).float().mean().item(), probs.numpy(),
                   losses.numpy())


def item_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each item's unweighted loss: cross-entropy, or for label sets the mean binary cross-entropy of its labels."""
    if labels.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none").mean(1)
    return F.cross_entropy(logits, labels, reduction="none")


def probabilities(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes, or each label's own sigmoid for label sets."""
    return logits.sigmoid() if labels.dim() == 2 else logits.softmax(1)


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
             device: torch.device) -> Evaluation:
    """Loss, accuracy and per-item probabilities of `model` on uint8 images (N, 3, S, S) (or cached features)."""
    model.eval()
    probs, losses = [], []
    chunk = inference_batch_size(images.shape[-1], batch_size, device)
    layout = memory_format_for(model, device)
    for x, y in iterate_batches(images, labels, chunk, shuffle=False, device=device):
        with autocast_for(device):
            logits = model(in_layout(x, layout))
        logits = logits.float()
        # Never class-weighted (balance="weights" weights only the training loss): the validation loss is what a
        # person compares across runs, so it has to mean the same thing in every one.
        losses.append(item_losses(logits, y).cpu())
        probs.append(probabilities(logits, y).cpu())
    return Evaluation.of(torch.cat(probs), torch.cat(losses), labels)
