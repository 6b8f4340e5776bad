"""The learning-rate finder, as fastai has it: a callback on the one training loop that raises the rate
exponentially each batch, records the smoothed loss, and ends the sweep once the loss explodes; then fastai's
"valley" and "steep" suggestions, pure functions of the curve.

    python -m core.train --lr-find --data builtin:digits --arch efficientnet_lite0 --size 64
writes lr_find.json (lrs, losses, suggestions) into its run folder.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from core.config import TrainConfig
from core.data.load import Split
from core.net.backbones import Classifier, freeze_body, unfreeze
from core.train.callbacks import Callback, StopTraining
from core.train.loop import Learner, fit


class LRFinder(Callback):
    """Records (lr, smoothed loss) per batch and ends the sweep after `steps` batches or when the loss passes
    4x its minimum. The loss is an exponential moving average (beta 0.98), bias-corrected, as fastai's."""

    def __init__(self, steps: int, on_step=None):
        self.steps, self.on_step = steps, on_step
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.average, self.best, self.done = 0.0, math.inf, False

    def on_batch_end(self, step: int, logs: dict) -> None:
        if self.done:
            return  # steps already taken when the sweep ended: not part of the curve
        self.average = 0.98 * self.average + 0.02 * logs["loss"]
        smoothed = self.average / (1 - 0.98 ** (len(self.lrs) + 1))
        self.lrs.append(logs["lr"])
        self.losses.append(smoothed)
        if self.on_step is not None:
            self.on_step(len(self.lrs), self.steps)
        self.best = min(self.best, smoothed)
        self.done = not math.isfinite(smoothed) or smoothed > 4 * self.best or len(self.lrs) >= self.steps
        if self.done:
            raise StopTraining

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(lrs, smoothed losses), the non-finite tail dropped."""
        lrs, losses = np.array(self.lrs), np.array(self.losses)
        keep = np.isfinite(losses)
        return lrs[keep], losses[keep]


def exponential(start_lr: float, end_lr: float, steps: int):
    """A schedule (for core.train.loop.fit) that multiplies the rate by the same factor each batch, start to end."""
    ratio = (end_lr / start_lr) ** (1 / (steps - 1))
    return lambda optimizer, total: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: ratio ** step)


def sweep(classifier: Classifier, split: Split, *, batch_size: int, device: torch.device, pretrained: bool,
          keep_bn_stats: bool = False, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
          seed: int = 0, on_step=None) -> tuple[np.ndarray, np.ndarray]:
    """(lrs, smoothed losses) of an exponential learning-rate sweep; the model's weights are left unchanged.

    As fastai's lr_find: body frozen when pretrained (the phase the rate is chosen for), AdamW, on the one
    training loop with the LRFinder callback, over as many epochs as the sweep needs.
    """
    saved = copy.deepcopy(classifier.model.state_dict())
    if pretrained:
        freeze_body(classifier)
    else:
        unfreeze(classifier)
    config = TrainConfig(bs=batch_size, seed=seed, pretrained=pretrained, adapt_bn=not keep_bn_stats, wd=0.01)
    finder = LRFinder(steps, on_step)
    learner = Learner(classifier, split, config, device, callbacks=[finder])
    trainable = [p for p in classifier.model.parameters() if p.requires_grad]
    try:
        fit(learner, math.ceil(steps / learner.batches_per_epoch()), [{"params": trainable, "lr": start_lr}],
            schedule=exponential(start_lr, end_lr, steps), phase="lr_find", validate=False)
    except StopTraining:
        pass
    finally:
        classifier.model.load_state_dict(saved)  # the sweep trained the model into the ground: put it back
        unfreeze(classifier)
    return finder.curve()


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
