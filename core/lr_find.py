"""The learning-rate finder: an exponential sweep of the learning rate over one pass of batches, stopped when
the loss explodes, with fastai's "valley" and "steep" suggestions. The weights are restored afterwards.

    python -m core.train --lr-find --data builtin:digits --arch efficientnet_lite0 --size 64
writes lr_find.json (lrs, losses, suggestions) into its run folder.
"""
from __future__ import annotations

import copy
import math
import os
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import runs
from core.data import iterate_batches
from core.models import Classifier, freeze_body, unfreeze
from core.train import Split, autocast_for, in_layout, keeps_bn_stats, memory_format_for, set_train_mode


def suggest_steep(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The rate where the loss falls fastest (steepest negative slope against log10 lr)."""
    slopes = np.gradient(losses, np.log10(lrs))
    return float(lrs[int(np.argmin(slopes))])


def suggest_valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai's valley: within the longest stretch where the loss keeps falling, a point two thirds of the way
    down that stretch (halfway through its middle third); more robust than the steepest point."""
    n = len(losses)
    longest = [1] * n  # longest decreasing run ending at i
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[end] < longest[i]:
                end, start = i, i - longest[i]
    sections = (end - start) / 3
    return float(lrs[start + int(sections) + int(sections / 2)])


def sweep(classifier: Classifier, split: Split, *, batch_size: int, device: torch.device, pretrained: bool,
          keep_bn_stats: bool = False,
          start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100, seed: int = 0,
          on_step=None) -> tuple[np.ndarray, np.ndarray]:
    """(lrs, smoothed losses) of an exponential learning-rate sweep; the model's weights are left unchanged.

    As fastai's lr_find: body frozen when pretrained (the phase the rate is chosen for), AdamW, the loss an
    exponential moving average (beta 0.98, bias-corrected), stopping once it passes 4x its minimum.
    """
    model = classifier.model
    saved = copy.deepcopy(model.state_dict())
    if pretrained:
        freeze_body(classifier)
    else:
        unfreeze(classifier)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=start_lr, weight_decay=0.01, betas=(0.9, 0.99))
    ratio = (end_lr / start_lr) ** (1 / (steps - 1))
    generator = torch.Generator().manual_seed(seed)
    lrs, losses, average, best = [], [], 0.0, math.inf
    layout = memory_format_for(model, device)
    set_train_mode(model, keep_bn_stats)
    done = False
    try:
        while not done:  # as many passes over the batches as the sweep needs
            for x, y in iterate_batches(split.train_images, split.train_labels, batch_size, shuffle=True,
                                        generator=generator, drop_last=len(split.train_labels) >= batch_size,
                                        device=device):
                lr = start_lr * ratio ** len(lrs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast_for(device):
                    loss = F.cross_entropy(model(in_layout(x, layout)), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                average = 0.98 * average + 0.02 * loss.item()
                smoothed = average / (1 - 0.98 ** (len(lrs) + 1))
                lrs.append(lr)
                losses.append(smoothed)
                if on_step is not None:
                    on_step(len(lrs), steps)
                best = min(best, smoothed)
                done = not math.isfinite(smoothed) or smoothed > 4 * best or len(lrs) >= steps
                if done:
                    break
    finally:
        model.load_state_dict(saved)  # the sweep trained the model into the ground: put it back
        unfreeze(classifier)
    lrs_np, losses_np = np.array(lrs), np.array(losses)
    keep = np.isfinite(losses_np)
    return lrs_np[keep], losses_np[keep]


def run_lr_find(run_dir: Path) -> str:
    """The LR finder as a run: its own process, holding the device lock, writing lr_find.json."""
    from core.train import describe_device, pick_device, prepare

    run_dir = Path(run_dir)
    config = runs.load_config(run_dir)
    lock = runs.TrainingLock(run_dir.parent)
    try:
        lock.acquire(run_dir.name)
    except runs.DeviceBusy as busy:
        runs.write_status(run_dir, state="failed", message=str(busy))
        return "failed"
    device = pick_device()
    runs.write_status(run_dir, state="running", pid=os.getpid(), started=time.time(),
                      device=describe_device(device), message="Sweeping the learning rate")
    try:
        _, split, classifier = prepare(run_dir, config, device)
        progress = lambda step, total: runs.write_status(run_dir, state="running", step=step,  # noqa: E731
                                                          total_steps=total) if step % 5 == 0 else None
        lrs, losses = sweep(classifier, split, batch_size=config.bs, device=device, pretrained=config.pretrained,
                            keep_bn_stats=keeps_bn_stats(config),
                            seed=config.seed, on_step=progress)
        if len(lrs) < 5:
            raise ValueError("the loss exploded at once, even at the smallest rates")
        suggestions = {"valley": suggest_valley(lrs, losses), "steep": suggest_steep(lrs, losses)}
        runs.write_json_atomic(run_dir / "lr_find.json", {"lrs": lrs.tolist(), "losses": losses.tolist(),
                                                          "suggestions": suggestions})
        message = f"Suggested learning rate {suggestions['valley']:.1e} (valley); steepest {suggestions['steep']:.1e}."
        runs.write_status(run_dir, state="completed", finished=time.time(), message=message, step=len(lrs),
                          total_steps=len(lrs))
        print(message, flush=True)
        return "completed"
    except Exception as error:  # a sentence for the page, the traceback for the log
        traceback.print_exc()
        runs.write_status(run_dir, state="failed", finished=time.time(),
                          message=f"The learning-rate finder failed: {error}")
        return "failed"
    finally:
        lock.release()
