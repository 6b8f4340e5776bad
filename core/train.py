"""Training: one-cycle fitting, fastai's fine_tune recipe, evaluation, and the `python -m core.train` entry.

    python -m core.train --data builtin:digits --arch efficientnet_lite0 --size 64 --bs 64 --epochs 3 \
        --runs-dir runs --name demo

A run writes the folder described in core.runs; the dashboard starts exactly this command with --run-dir.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import runs
from core.augment import Augment
from core.callbacks import Callback, EarlyStop, EarlyStopping, RunFolderWriter, TerminalProgress, save_checkpoint
from core.config import PRESETS, TrainConfig
from core.data import RESIZE_METHODS, DataError, LabeledImages, iterate_batches, load_source, stratified_split
from core.distributed import World, init_from_env, shutdown
from core.models import ARCHS, Classifier, WeightsUnavailable, build_classifier, freeze_body, unfreeze


def pick_device(world: World = World()) -> torch.device:
    """CUDA (this process's GPU under torchrun), then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)} (bf16 mixed precision)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({torch.get_num_threads()} threads)"


def inference_batch_size(size: int, batch_size: int, device: torch.device) -> int:
    """Images per forward pass when nothing is learned. A CPU is fastest with batches that stay in its caches
    (EfficientNet-Lite0 features at 64 px: 32 images a pass ran 1.3-2.0x the speed of 128 here, measured by
    bench/engine_overhead); a GPU wants big ones."""
    if device.type != "cpu":
        return batch_size * 2
    return 32 if size <= 96 else 16


def memory_format_for(model: nn.Module, device: torch.device) -> torch.memory_format:
    """The layout a model and its input batches take on a device: channels_last where it is the faster one.

    On a CPU always (oneDNN: training EfficientNet-Lite0 1.6x faster, bench/engine_overhead). On a GPU for
    networks without depthwise (grouped) convolutions: ResNet-50 trains fastest so with bf16, while cuDNN's
    channels_last depthwise kernels cost EfficientNet-Lite0 many seconds of one-time set-up on an H100 (its
    features once: 12.1 s against 3.5 s; the first unfrozen epoch: 29 s against 12 s).
    """
    grouped = any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    if device.type == "cpu" or (device.type == "cuda" and not grouped):
        return torch.channels_last
    return torch.contiguous_format


def in_layout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """A batch of images in `layout`; anything else (pooled features) passes through."""
    return x.contiguous(memory_format=layout) if x.dim() == 4 and x.shape[-1] > 1 else x


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


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Split:
    """Training and validation tensors of one dataset, all uint8 images in memory."""

    train_images: torch.Tensor  # (N_train, 3, S, S) uint8
    train_labels: torch.Tensor  # (N_train,)
    valid_images: torch.Tensor  # (N_valid, 3, S, S) uint8
    valid_labels: torch.Tensor  # (N_valid,)
    valid_ids: np.ndarray  # (N_valid,) indices into the full dataset

    @classmethod
    def from_dataset(cls, data: LabeledImages, valid_pct: float, seed: int) -> "Split":
        """The data's own split when it brings one (train/ and valid/ folders), else a seeded stratified one."""
        if data.valid_mask is not None:
            valid = np.flatnonzero(data.valid_mask.numpy())
            train = np.flatnonzero(~data.valid_mask.numpy())
        else:
            train, valid = stratified_split(data.labels, valid_pct, seed)
        return cls(data.images[train], data.labels[train], data.images[valid], data.labels[valid], valid)

    def placed(self, device: torch.device, share: float = 0.25) -> "Split":
        """On a GPU, the images move into its memory once when they take at most `share` of what is free, so a
        batch is gathered where it is used and nothing crosses the bus per step; else they stay in host memory
        and each batch is gathered into pinned memory ahead of time (core.data.iterate_batches). Labels stay
        on the host: they are small, and the evaluation compares them there."""
        if device.type != "cuda" or self.train_images.is_cuda:
            return self
        free, _ = torch.cuda.mem_get_info(device)
        if self.train_images.nbytes + self.valid_images.nbytes > share * free:
            return self
        return dataclasses.replace(self, train_images=self.train_images.to(device),
                                   valid_images=self.valid_images.to(device))


class StopTraining(Exception):
    """Raised between batches when a stop was requested; the loop ends cleanly."""


class OutOfMemory(Exception):
    """The GPU ran out of memory; the message says which batch size to try."""


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; the run goes back to the weights of its last finished epoch."""


@dataclass
class Loop:
    """What the callbacks may look at: the model, the current optimizer and schedule, and the position."""

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
    resume: dict | None = None  # a checkpoint to continue from, consumed by the phase it was saved in
    world: World = field(default_factory=World)  # the processes training together (one, unless torchrun)
    features: "Split | None" = None  # during a cached frozen phase: the body's features in place of images
    run_dir: Path | None = None  # where a stop request appears (every rank looks, all agree)

    def batches_per_epoch(self) -> int:
        """Steps each process takes per epoch: the full batches, shared out between the processes."""
        n, bs = len(self.split.train_labels), self.config.bs
        return max((n // bs if n >= bs else 1) // self.world.size, 1)


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    probs: np.ndarray  # (N, n_classes) softmax probabilities
    losses: np.ndarray  # (N,) cross-entropy of each item


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
             device: torch.device) -> Evaluation:
    """Loss, accuracy and per-item probabilities of `model` on uint8 images (N, 3, S, S)."""
    model.eval()
    probs, losses = [], []
    chunk = inference_batch_size(images.shape[-1], batch_size, device)
    layout = memory_format_for(model, device)
    for x, y in iterate_batches(images, labels, chunk, shuffle=False, device=device):
        with autocast_for(device):
            logits = model(in_layout(x, layout))
        logits = logits.float()
        losses.append(F.cross_entropy(logits, y, reduction="none").cpu())
        probs.append(logits.softmax(1).cpu())
    prob = torch.cat(probs)
    item_losses = torch.cat(losses)
    accuracy = (prob.argmax(1) == labels).float().mean().item()
    return Evaluation(item_losses.mean().item(), accuracy, prob.numpy(), item_losses.numpy())


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """n learning rates spaced geometrically from start to stop (fastai's slice(start, stop))."""
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step ** i for i in range(n)]


def fit_one_cycle(loop: Loop, epochs: int, param_groups: list[dict], *, pct_start: float = 0.25,
                  div: float = 25.0, phase: str = "fit") -> None:
    """Train `epochs` epochs with AdamW under one one-cycle schedule over the given parameter groups.

    Each group is {"params": [...], "lr": peak lr}. Warm-up from lr/div to the peak over pct_start of the
    steps, then cosine annealing to lr/(div*1e5); momentum (Adam's beta1) cycles 0.95 -> 0.85 -> 0.95.
    """
    config, device, model = loop.config, loop.device, loop.classifier.model
    peaks = [group["lr"] for group in param_groups]
    optimizer = torch.optim.AdamW(param_groups, lr=peaks[-1], weight_decay=config.wd, betas=(0.9, 0.99),
                                  fused=device.type == "cuda")  # one kernel for every parameter's update
    n_batches = loop.batches_per_epoch()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peaks, total_steps=epochs * n_batches, pct_start=pct_start, div_factor=div,
        final_div_factor=1e5, base_momentum=0.85, max_momentum=0.95)
    loop.optimizer, loop.scheduler, loop.phase, loop.phase_epoch = optimizer, scheduler, phase, 0
    skip = 0  # batches of the first epoch already trained before a resume
    if loop.resume is not None and loop.resume["phase"] == phase:
        optimizer.load_state_dict(loop.resume["optimizer"])
        scheduler.load_state_dict(loop.resume["scheduler"])
        torch.set_rng_state(loop.resume["rng"])
        loop.phase_epoch, skip = loop.resume["phase_epoch"], loop.resume["batch_in_epoch"]
        loop.resume = None
    augment = Augment.from_config(config)
    split = loop.split
    drop_last = len(split.train_labels) >= config.bs
    world = loop.world
    if loop.features is not None:  # the frozen body already ran once over every image: only the head trains
        split, model, augment = loop.features, loop.classifier.head, Augment()
    # Under torchrun, wrap per phase: DDP syncs the parameters that are trainable when it is built.
    layout = memory_format_for(model, device)
    train_model = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if world.active else model
    while loop.phase_epoch < epochs:
        set_train_mode(model, keeps_bn_stats(config))
        # Seeded per epoch, so a resumed epoch sees its batches in the same order as it would have.
        generator = torch.Generator().manual_seed(config.seed + loop.epoch)
        started, seen, loss_sum, batch_start = time.perf_counter(), 0, 0.0, time.perf_counter()
        pending: list[tuple] = []  # steps queued, not yet reported: (loss, still on the device; logs without it)

        def settle(keep: int = 0) -> None:
            """Read the losses of the oldest queued steps and report them, until `keep` are left. With the last
            two left queued, a GPU always has work while the host waits for a loss: no step waits for the one
            before it to finish. A non-finite loss ends the run; the weights it left are not kept (run_training
            goes back to the last checkpoint)."""
            nonlocal loss_sum, seen
            while len(pending) > keep:
                loss_tensor, step, logs = pending.pop(0)
                loss_value = loss_tensor.item()
                if world.any(not math.isfinite(loss_value)):  # agreed by every process
                    raise NonFiniteLoss(f"The loss became {loss_value} at step {step} (epoch {loop.epoch + 1}).")
                loss_sum += loss_value * logs["images"]
                seen += logs.pop("images")
                for callback in loop.callbacks:
                    callback.on_batch_end(step, {"loss": loss_value, **logs})

        batches = iterate_batches(split.train_images, split.train_labels, config.bs, shuffle=True,
                                  generator=generator, drop_last=drop_last, device=device,
                                  augment=augment if augment.active else None)
        # Every process draws the same order; process r takes batches r, r + size, ... (equal counts for all).
        mine = ((i // world.size, batch) for i, batch in enumerate(batches)
                if i % world.size == world.rank and i // world.size < n_batches)
        for index, (x, y) in mine:
            if index < skip:
                continue  # trained before the resume; drawn anyway, so the random stream stays the same
            x = in_layout(x, layout)
            try:
                with autocast_for(device):
                    loss = F.cross_entropy(train_model(x), y, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            except torch.OutOfMemoryError:
                raise OutOfMemory(f"The GPU ran out of memory at batch size {config.bs} and {config.size} px. Try "
                                  f"batch size {max(config.bs // 2, 1)}, or a smaller image size.") from None
            optimizer.step()
            lr = optimizer.param_groups[-1]["lr"]  # the head's rate: the schedule's shape is the same for all
            scheduler.step()
            loop.step += 1
            loop.batch_in_epoch = index + 1
            now = time.perf_counter()  # the host keeps pace with the device: it is never more than two steps ahead
            pending.append((loss.detach(), loop.step, {"lr": lr, "imgs_per_s": len(y) / max(now - batch_start, 1e-9),
                                                       "epoch": loop.epoch + 1, "images": len(y)}))
            batch_start = now
            settle(keep=2)
            if loop.run_dir is not None and world.any(runs.stop_requested(loop.run_dir)):
                settle()
                raise StopTraining
        settle()
        skip = 0
        evaluation = evaluate(model, split.valid_images, split.valid_labels, batch_size=config.bs, device=device)
        loop.epoch += 1
        loop.phase_epoch += 1
        loop.batch_in_epoch = 0
        logs = {"phase": phase, "train_loss": loss_sum / max(seen, 1), "valid_loss": evaluation.loss,
                "accuracy": evaluation.accuracy, "error_rate": 1 - evaluation.accuracy,
                "seconds": time.perf_counter() - started, "step": loop.step}
        for callback in loop.callbacks:
            callback.on_epoch_end(loop.epoch, logs)


def fine_tune(loop: Loop) -> None:
    """fastai's recipe: train the new head on a frozen body, then everything with discriminative rates.

    With pretrained weights: `freeze_epochs` one-cycle epochs at lr with the body frozen (pct_start 0.99),
    then halve lr and train `epochs` epochs unfrozen, layer groups at lr/100 .. lr spaced geometrically,
    with pct_start 0.3 and div 5 (or the slice unfrozen_lr_min .. unfrozen_lr_max when given). From scratch
    there is nothing to protect: `epochs` epochs at lr.
    """
    config, classifier = loop.config, loop.classifier
    if not config.pretrained:
        unfreeze(classifier)
        params = [p for group in classifier.groups for p in group]
        fit_one_cycle(loop, config.epochs, [{"params": params, "lr": config.lr}], phase="scratch")
        return
    resuming_unfrozen = loop.resume is not None and loop.resume["phase"] == "unfrozen"
    if config.freeze_epochs > 0 and not resuming_unfrozen:
        freeze_body(classifier)
        trainable = [p for p in classifier.model.parameters() if p.requires_grad]
        if caches_features(config, loop.world):
            loop.features = cache_features(loop)
            trainable = list(classifier.head.parameters())
        try:
            fit_one_cycle(loop, config.freeze_epochs, [{"params": trainable, "lr": config.lr}], pct_start=0.99,
                          phase="frozen")
        finally:
            loop.features = None
    if config.epochs > 0:
        unfreeze(classifier)
        top = config.unfrozen_lr_max or config.lr / 2
        lrs = even_mults(config.unfrozen_lr_min or top / 100, top, len(classifier.groups))
        groups = [{"params": params, "lr": lr} for params, lr in zip(classifier.groups, lrs)]
        fit_one_cycle(loop, config.epochs, groups, pct_start=0.3, div=5.0, phase="unfrozen")


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


def cache_features(loop: Loop) -> Split:
    """Run the frozen body once over the training and validation images (the way Teachable Machine trains a
    head in seconds); the frozen epochs then cost a linear layer's work."""
    started = time.perf_counter()
    if loop.run_dir is not None and loop.world.is_main:
        runs.write_status(loop.run_dir, message="Frozen phase: computing the body's features once")
    split, body, bs, device = loop.split, loop.classifier.body, loop.config.bs, loop.device
    features = Split(body_features(body, split.train_images, batch_size=bs, device=device), split.train_labels,
                     body_features(body, split.valid_images, batch_size=bs, device=device), split.valid_labels,
                     split.valid_ids)
    if loop.run_dir is not None and loop.world.is_main:
        runs.write_status(loop.run_dir, message="")
    print(f"Frozen phase: body features of {len(split.train_labels) + len(split.valid_labels)} images computed "
          f"once in {time.perf_counter() - started:.1f} s; the head trains on them.", flush=True)
    return features


def total_epochs(config: TrainConfig) -> int:
    return config.epochs + (config.freeze_epochs if config.pretrained else 0)


def save_predictions(run_dir: Path, loop: Loop) -> Evaluation:
    """Validation targets, probabilities, losses and item ids: the input of every interpretation view."""
    split = loop.split
    evaluation = evaluate(loop.classifier.model, split.valid_images, split.valid_labels,
                          batch_size=loop.config.bs, device=loop.device)
    tmp = run_dir / ".predictions.tmp.npz"
    np.savez(tmp, targets=split.valid_labels.numpy(), probs=evaluation.probs, losses=evaluation.losses,
             item_ids=split.valid_ids)
    os.replace(tmp, run_dir / "predictions.npz")
    return evaluation


def prepare(run_dir: Path, config: TrainConfig, device: torch.device,
            world: World = World()) -> tuple[LabeledImages, Split, Classifier]:
    """Load the data, split it, build the model on the device, and note class names and sizes in config.json."""
    torch.manual_seed(config.seed)  # the same new head on every process
    data = load_source(config.data, config.size, label_regex=config.label_regex or None, resize=config.resize)
    split = Split.from_dataset(data, config.valid_pct, config.seed).placed(device)
    if world.is_main:
        runs.update_config(run_dir, class_names=list(data.class_names), data_fingerprint=data.fingerprint(),
                           n_train=len(split.train_labels), n_valid=len(split.valid_labels))
    classifier = build_classifier(config.arch, len(data.class_names), pretrained=config.pretrained, size=config.size)
    classifier.model.to(device, memory_format=memory_format_for(classifier.model, device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return data, split, classifier


def run_training(run_dir: Path, resume: bool = False, world: World = World()) -> str:
    """Train the run whose folder (with config.json) exists; returns the final state.

    With resume, continue from checkpoints/last.pt exactly where it was saved (mid-epoch too): model,
    optimizer, schedule, RNG and position; metric rows written after that checkpoint are dropped and redone.
    Under torchrun every process calls this; only rank 0 holds the lock and writes to the run folder.
    """
    run_dir = Path(run_dir)
    config = runs.load_config(run_dir)
    main_rank = world.is_main
    status = (lambda **fields: runs.write_status(run_dir, **fields)) if main_rank else (lambda **fields: None)
    lock = runs.TrainingLock(run_dir.parent)
    busy = None
    if main_rank:
        try:
            lock.acquire(run_dir.name)
        except runs.DeviceBusy as error:
            busy = error
    if world.any(busy is not None):
        status(state="failed", pid=os.getpid(), message=str(busy))
        print(busy or "Rank 0 could not take the training lock.", flush=True)
        return "failed"
    # SIGTERM (a `kill`, a logout) is a stop request: finish the batch, keep what was learned.
    signal.signal(signal.SIGTERM, lambda *_: (run_dir / "STOP").touch())
    device = pick_device(world)
    previous = runs.read_json(run_dir / "status.json")
    status(state="running", pid=os.getpid(), device=describe_device(device),
                      started=previous.get("started") if resume else time.time(), finished=None,
                      message="Loading data and weights")
    writer = None
    try:
        checkpoint = None
        if resume:
            path = run_dir / "checkpoints" / "last.pt"
            if not path.exists():
                raise DataError("This run saved no checkpoint before it ended, so there is nothing to resume; "
                                "start it again instead.")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            if main_rank:
                (run_dir / "STOP").unlink(missing_ok=True)
                runs.truncate_metrics(run_dir, checkpoint["step"], checkpoint["epoch"])
            world.any(False)  # every rank waits until the stale STOP request is gone
        data, split, classifier = prepare(run_dir, config, device, world)
        writer = RunFolderWriter(run_dir, data.class_names) if main_rank else None
        callbacks = [writer, TerminalProgress()] if main_rank else []
        callbacks += [EarlyStopping(config.patience)] if config.patience > 0 else []
        loop = Loop(classifier, split, config, device, callbacks=callbacks, world=world, run_dir=run_dir)
        loop.total_epochs = total_epochs(config)
        loop.total_steps = loop.total_epochs * loop.batches_per_epoch()
        if checkpoint is not None:
            classifier.model.load_state_dict(checkpoint["model"])
            loop.step, loop.epoch, loop.resume = checkpoint["step"], checkpoint["epoch"], checkpoint
            if writer is not None:
                writer.best_accuracy = max((row["accuracy"] for row in runs.read_metrics(run_dir).epochs),
                                           default=-1.0)
                status(best_accuracy=writer.best_accuracy if writer.best_accuracy >= 0 else None)
                print(f"Resuming at epoch {loop.epoch + 1}, step {loop.step}.", flush=True)
        status(state="running", message="", total_steps=loop.total_steps,
                          total_epochs=loop.total_epochs, step=loop.step, epoch=loop.epoch)
        for callback in loop.callbacks:
            callback.on_fit_start(loop)
        state, note = "completed", ""
        try:
            fine_tune(loop)
        except StopTraining:
            state = "stopped"
            if loop.optimizer is not None and main_rank:
                save_checkpoint(run_dir / "checkpoints" / "last.pt", loop, data.class_names)
        except EarlyStop as early:
            note = f"{early} "
        except NonFiniteLoss as bad:  # the weights that produced it are already broken: go back to an epoch's end
            state = "failed"
            note = f"{bad} The learning rate is probably too high: try one about 10 times lower. "
        except OutOfMemory as full:
            state = "failed"
            note = f"{full} "
            if device.type == "cuda":
                torch.cuda.empty_cache()
        last, best = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
        restore = best if config.keep_best and state == "completed" else last if state == "failed" else None
        if restore is not None and restore.exists():
            classifier.model.load_state_dict(torch.load(restore, map_location="cpu", weights_only=True)["model"])
            note += ("Kept the weights of the best epoch. " if restore == best else
                     "The model of the last checkpoint is kept. ")
        elif state == "failed":
            note += "No epoch had finished, so there is no model to keep."
            status(state=state, finished=time.time(), message=note.strip())
            print(note, flush=True)
            return state
        if not main_rank:
            return state
        evaluation = save_predictions(run_dir, loop)
        for callback in loop.callbacks:
            callback.on_fit_end({"accuracy": evaluation.accuracy})
        message = f"{note}Validation accuracy {evaluation.accuracy:.1%} after {loop.epoch} epochs."
        if state == "stopped":
            message = f"Stopped at epoch {loop.epoch + 1}, step {loop.step}. " + message
        status(state=state, finished=time.time(), message=message, step=loop.step,
                          epoch=loop.epoch, final_accuracy=evaluation.accuracy)
        print(message, flush=True)
        return state
    except (DataError, WeightsUnavailable) as error:
        status(state="failed", finished=time.time(), message=str(error))
        print(f"Failed: {error}", flush=True)
        return "failed"
    except Exception as error:  # anything else: a plain sentence for the page, the traceback for the log
        traceback.print_exc()
        status(state="failed", finished=time.time(),
                          message=f"Training failed unexpectedly ({type(error).__name__}: {error}). "
                                  "The details are in the run's log.")
        return "failed"
    finally:
        if writer is not None:
            writer.metrics.close()
        if main_rank:
            lock.release()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=defaults.data, help="builtin:digits or a folder with a sub-folder per class")
    parser.add_argument("--arch", default=defaults.arch, help="efficientnet_lite0, resnet18, resnet34 or resnet50")
    parser.add_argument("--no-pretrained", action="store_true", help="train from random weights, no frozen phase")
    parser.add_argument("--size", type=int, default=defaults.size, help="image side in pixels")
    parser.add_argument("--bs", type=int, default=defaults.bs, help="batch size")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs with every layer trainable")
    parser.add_argument("--freeze-epochs", type=int, default=defaults.freeze_epochs,
                        help="epochs with the pretrained body frozen first")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate of the head")
    parser.add_argument("--unfrozen-lr", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                        help="unfrozen phase: peak rates from the earliest layers to the head (fastai's slice)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="start from a named recipe (lesson1: fastai lesson 1 on the Oxford pets)")
    parser.add_argument("--wd", type=float, default=defaults.wd, help="AdamW weight decay")
    parser.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                        help="spread this share of each target over the other classes (e.g. 0.1)")
    parser.add_argument("--patience", type=int, default=defaults.patience,
                        help="stop after this many epochs without a better validation loss (0: never)")
    parser.add_argument("--keep-best", action="store_true", help="finish with the best epoch's weights")
    parser.add_argument("--adapt-bn", action="store_true",
                        help="let the pretrained body's BatchNorm statistics follow the new data, as fastai does "
                             "(default: keep ImageNet's, which lets the frozen phase train on cached features)")
    parser.add_argument("--valid-pct", type=float, default=defaults.valid_pct, help="validation share")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--label-regex", default=defaults.label_regex,
                        help="labels from file names: a regex whose first group is the label")
    parser.add_argument("--resize", default=defaults.resize, choices=RESIZE_METHODS,
                        help="make images square by squish, crop or pad")
    parser.add_argument("--flip", action="store_true", help="augment: random horizontal flips")
    parser.add_argument("--rotate", type=float, default=defaults.rotate, help="augment: max rotation, degrees")
    parser.add_argument("--zoom", type=float, default=defaults.zoom, help="augment: max zoom factor (>= 1)")
    parser.add_argument("--lighting", type=float, default=defaults.lighting, help="augment: max lighting change")
    parser.add_argument("--aug", action="store_true",
                        help="fastai's aug_transforms set: --flip --rotate 10 --zoom 1.1 --lighting 0.2")
    parser.add_argument("--runs-dir", type=Path, default=None, help="folder of runs ($STUDIO_RUNS_DIR or runs/)")
    parser.add_argument("--name", default=None, help="run folder name (made unique)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="train an existing run folder whose config.json is written (the dashboard uses this)")
    parser.add_argument("--lr-find", action="store_true",
                        help="sweep the learning rate instead of training; writes lr_find.json with suggestions")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue a stopped, interrupted or crashed run from its last checkpoint")
    args = parser.parse_args(argv)
    for action in parser._actions:  # parse again with every default hidden: what remains was typed
        action.default = argparse.SUPPRESS
    args.explicit = set(vars(parser.parse_args(argv)))
    return args


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.aug:
        args.flip, args.rotate, args.zoom, args.lighting = True, 10.0, 1.1, 0.2
    low, high = args.unfrozen_lr or (0.0, 0.0)
    config = TrainConfig(data=args.data, arch=args.arch, pretrained=not args.no_pretrained, size=args.size,
                         bs=args.bs, epochs=args.epochs, freeze_epochs=args.freeze_epochs, lr=args.lr, wd=args.wd,
                         valid_pct=args.valid_pct, seed=args.seed, label_regex=args.label_regex,
                         resize=args.resize, flip=args.flip, rotate=args.rotate, zoom=args.zoom,
                         lighting=args.lighting, label_smoothing=args.label_smoothing, patience=args.patience,
                         keep_best=args.keep_best, adapt_bn=args.adapt_bn, unfrozen_lr_min=low, unfrozen_lr_max=high)
    if args.preset:  # the preset replaces defaults; a setting typed on the command line still wins
        typed = {"unfrozen_lr_min", "unfrozen_lr_max"} if "unfrozen_lr" in args.explicit else set()
        typed |= {"pretrained"} if "no_pretrained" in args.explicit else set()
        typed |= args.explicit
        config = dataclasses.replace(config, **{k: v for k, v in PRESETS[args.preset].items() if k not in typed})
    problems = []
    if config.arch not in ARCHS:
        problems.append(f"--arch must be one of {', '.join(ARCHS)}")
    if config.size < 16:
        problems.append("--size must be at least 16 pixels")
    if config.bs < 1 or config.epochs < 0 or config.freeze_epochs < 0:
        problems.append("--bs must be positive and epochs not negative")
    if not 0 < config.valid_pct < 1:
        problems.append("--valid-pct must be between 0 and 1")
    if not 0 <= config.label_smoothing < 1 or config.patience < 0:
        problems.append("--label-smoothing must be between 0 and 1 and --patience not negative")
    if config.zoom < 1 or config.rotate < 0 or not 0 <= config.lighting < 1:
        problems.append("--zoom must be at least 1, --rotate not negative, --lighting between 0 and 1")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        problems.append("--lr must be a positive number")
    if problems:
        raise SystemExit("; ".join(problems))
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    world = init_from_env()  # a world of one unless started by torchrun
    try:
        if args.resume is not None:
            return 0 if run_training(args.resume, resume=True, world=world) in ("completed", "stopped") else 1
        run_dir = args.run_dir
        if run_dir is None:
            if world.is_main:
                run_dir = runs.create_run(config_from_args(args), args.runs_dir, args.name,
                                          task="lr_find" if args.lr_find else "train")
                print(f"Run folder: {run_dir}", flush=True)
            run_dir = world.broadcast(run_dir)
        if args.lr_find:
            if world.active:
                raise SystemExit("The learning-rate finder runs in one process; start it without torchrun.")
            from core.lr_find import run_lr_find

            return 0 if run_lr_find(run_dir) == "completed" else 1
        state = run_training(run_dir, world=world)
        return 0 if state in ("completed", "stopped") else 1
    finally:
        shutdown(world)


if __name__ == "__main__":
    sys.exit(main())
