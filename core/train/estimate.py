"""How long a run will take on this machine, before it starts: a few timed steps of the chosen backbone at the
chosen size and batch size, added up over the run's phases by the TimeLeft that times a running run.

Random weights cost what pretrained ones do, so nothing is downloaded; the probe runs a small batch and scales
it to the batch size (on a CPU the work grows about linearly with the batch).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.config import TrainConfig
from core.data.batches import normalize
from core.device import autocast_for, available_bytes, in_layout, memory_format_for
from core.distributed import World
from core.inspect.trust import BANK_SIZE
from core.net.backbones import build_classifier
from core.net.stages import CACHE_SHARE, StageTimes, time_stages
from core.net.stages import split as split_body
from core.train.progress import MIN_STEPS, TimeLeft
from core.train.recipe import caches_features, plan

# Images in each timed batch: as many pixels as 64 images at 64 px (a CPU's work per image falls as batches grow:
# 8 images at 64 px, scaled up to a batch of 64, made a 25 s run 49 s), at least 8 (a few seconds at 224 px on
# two CPU cores), at most the batch size.
PROBE_PIXELS = 64 * 64 * 64
MIN_PROBE_IMAGES = 8


@dataclass(frozen=True)
class Costs:
    forward_s: float  # one image through the whole network, inference
    step_s: float  # one training step of the whole network on a batch of the run's batch size
    stages: StageTimes | None = None  # the body's stages, timed: where unfreeze="late" would cut
    cache_budget: float = 0.0  # bytes the early stages' outputs may take
    late_step_s: dict[int, float] | None = None  # cut -> a training step of the late stages and head on a batch


def _timed(work, repeats: int = 2) -> float:
    work()  # the first call pays for allocation and kernel choice
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(arch: str, size: int, batch_size: int, device: torch.device) -> Costs:
    """Time an inference pass and a training step of `arch` at `size` px on `device`."""
    model = build_classifier(arch, 10, pretrained=False, size=size).model.to(device)
    layout = memory_format_for(model, device)
    n = min(batch_size, max(PROBE_PIXELS // (size * size), MIN_PROBE_IMAGES))
    x = in_layout(normalize(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8).to(device)), layout)
    y = torch.randint(0, 10, (n,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    @torch.inference_mode()
    def forward():
        with autocast_for(device):
            model.eval()(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():
        model.train()
        with autocast_for(device):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    stages = time_stages(model[0], size, device)
    late = {at: _late_step_s(model, at, x, y) * batch_size / n for at in stages.cuts} if stages else None
    return Costs(_timed(forward) / n, _timed(step) * batch_size / n, stages, available_bytes(device) * CACHE_SHARE,
                 late)


def _late_step_s(model: nn.Sequential, at: int, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of one training step of the body's stages from `at` on and the head, on the early stages' output
    of x (a late stage's backward pass costs more per forward than a whole network's: small maps)."""
    early, late = split_body(model[0], at)
    with torch.no_grad():
        features = early.eval()(x)
    trained = nn.Sequential(late, model[1]).train()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-4)

    def step():
        loss = F.cross_entropy(trained(features), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return _timed(step)


def run_seconds(config: TrainConfig, n_train: int, n_valid: int, costs: Costs) -> float:
    """Seconds a run of `config` on n_train + n_valid images takes, from measured costs: every phase's steps,
    validation passes, the frozen phase's feature cache and the final pass (not the start-up: loading the
    libraries, the images and the weights)."""
    batch_size = min(config.bs, n_train)
    late = config.unfreeze == "late" and config.epochs > 0 and caches_features(config, World())
    cut = costs.stages.pick(n_train, n_valid, config.epochs, costs.cache_budget) if late and costs.stages else None
    phases = plan(config, cut=cut)
    left = TimeLeft(phases, steps_per_epoch=max(n_train // batch_size, 1), batch_size=batch_size, n_train=n_train,
                    n_valid=n_valid, finish_images=min(BANK_SIZE, n_train) + n_valid)
    left.forward_s = costs.forward_s
    for phase in phases:
        step_s = costs.late_step_s[cut.at] if phase.name == "late" else costs.step_s
        if phase.name in ("unfrozen", "scratch", "late"):
            for _ in range(MIN_STEPS + 1):  # the timed step stands for the phase's steps (the first is a warm-up)
                left.step(phase.name, step_s)
    return left.seconds_left(phases[0].name, 0, 0) if phases else 0.0
