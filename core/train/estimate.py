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
from core.device import adamw, autocast_for, in_layout, memory_format_for
from core.inspect.trust import BANK_SIZE
from core.net.backbones import build_classifier
from core.net.stages import LateCut, choose_cut
from core.net.stages import split as split_body
from core.train.progress import MIN_STEPS, TimeLeft
from core.train.recipe import plan, trains_late

# Images in each timed batch: as many pixels as 64 images at 64 px (a CPU's work per image falls as batches grow:
# 8 images at 64 px, scaled up to a batch of 64, made a 25 s run 49 s), at least 8 (a few seconds at 224 px on
# two CPU cores), at most the batch size.
PROBE_PIXELS = 64 * 64 * 64
MIN_PROBE_IMAGES = 8


@dataclass(frozen=True)
class Costs:
    forward_s: float  # one image through the whole network, inference
    step_s: float  # one training step of the whole network on a batch of the run's batch size
    late_step_s: float | None = None  # with a cut: a training step of the late stages and head on a batch


# Starting `python -m core.train` before it reads any data: Python, torch and the app's modules (1.3 s measured here)
# and building the network with its weights.
STARTUP_S = 2.0
DECODE_SAMPLE = 8  # image files decoded to time a dataset's decoding


def decode_seconds(paths: list, size: int, resize: str = "squish") -> float:
    """Seconds decoding every file of `paths` at `size` takes, from a few decoded now (a run decodes its images
    once, before its first step)."""
    from core.data.images import open_rgb

    if not paths:
        return 0.0
    sample = paths[:: max(len(paths) // DECODE_SAMPLE, 1)][:DECODE_SAMPLE]
    started = time.perf_counter()
    for path in sample:
        try:
            open_rgb(path, size, resize)
        except Exception:  # a file the run will skip costs its reading anyway
            pass
    return (time.perf_counter() - started) / len(sample) * len(paths)


def _timed(work, repeats: int = 2) -> float:
    work()  # the first call pays for allocation and kernel choice
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def planned_cut(config: TrainConfig, n_train: int, n_valid: int, device: torch.device) -> LateCut | None:
    """Where a run of `config` on n_train + n_valid images will cut its body (core.train.recipe.late_cut's
    choice, made from operation counts and the device's memory: the same before Start as in the run)."""
    if not trains_late(config):
        return None
    body = build_classifier(config.arch, 10, pretrained=False, size=config.size).body
    return choose_cut(body, config.size, n_train, n_valid, config.epochs, device)


def measure(arch: str, size: int, batch_size: int, device: torch.device, late_at: int | None = None) -> Costs:
    """Time an inference pass and a training step of `arch` at `size` px on `device` (and with `late_at`, a
    training step of the late stages from that cut on)."""
    model = build_classifier(arch, 10, pretrained=False, size=size).model.to(device)
    layout = memory_format_for(model, device)
    n = min(batch_size, max(PROBE_PIXELS // (size * size), MIN_PROBE_IMAGES))
    x = in_layout(normalize(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8).to(device)), layout)
    y = torch.randint(0, 10, (n,), device=device)
    optimizer = adamw(model.parameters(), device, lr=1e-4)

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

    late = None if late_at is None else _late_step_s(model, late_at, x, y) * batch_size / n
    return Costs(_timed(forward) / n, _timed(step) * batch_size / n, late)


def _late_step_s(model: nn.Sequential, at: int, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of one training step of the body's stages from `at` on and the head, on the early stages' output
    of x (a late stage's backward pass costs more per forward than a whole network's: small maps)."""
    early, late = split_body(model[0], at)
    with torch.no_grad():
        features = early.eval()(x)
    trained = nn.Sequential(late, model[1]).train()
    optimizer = adamw(trained.parameters(), x.device, lr=1e-4)

    def step():
        loss = F.cross_entropy(trained(features), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return _timed(step)


def run_seconds(config: TrainConfig, n_train: int, n_valid: int, costs: Costs, cut: LateCut | None = None) -> float:
    """Seconds a run of `config` on n_train + n_valid images takes, cut at `cut` (planned_cut's), from measured
    costs (measured with the cut's late step): every phase's steps, validation passes, the frozen phase's feature
    cache and the final pass (not the start-up: loading the libraries, the images and the weights)."""
    batch_size = min(config.bs, n_train)
    phases = plan(config, cut=cut)
    left = TimeLeft(phases, steps_per_epoch=max(n_train // batch_size, 1), batch_size=batch_size, n_train=n_train,
                    n_valid=n_valid, finish_images=min(BANK_SIZE, n_train) + n_valid)
    left.forward_s = costs.forward_s
    for phase in phases:
        step_s = costs.late_step_s if phase.name == "late" else costs.step_s
        if phase.name in ("unfrozen", "scratch", "late"):
            for _ in range(MIN_STEPS + 1):  # the timed step stands for the phase's steps (the first is a warm-up)
                left.step(phase.name, step_s)
    return left.seconds_left(phases[0].name, 0, 0) if phases else 0.0
