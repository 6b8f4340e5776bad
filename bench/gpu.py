"""GPU throughput: the engine on real images against the same model on synthetic data already on the GPU.

    bench/gpu.sh                          # on a machine with a GPU, within 10 minutes: target ratio >= 0.9
    .venv/bin/python -m bench.gpu --smoke # CI, on the CPU: the same code path, tiny

ResNet-50 at 224 px, batch 128, bf16 autocast, channels_last, cudnn.benchmark, fused AdamW under a one-cycle
schedule, a validation pass each epoch: the engine's CUDA path (core.train.loop.fit_one_cycle). Real images are the
digits decoded once at 224 px, `--copies` times over so an epoch has some length. Four ways, alternating:

- real, on the GPU: what a run does when the images fit (Split.placed): moved to GPU memory once, batches
  gathered there;
- real, streamed: the images stay in host memory, each batch is gathered into pinned memory by a thread one
  batch ahead and copied without waiting (what a run does when they do not fit);
- synthetic: random images that already live on the GPU, through the same engine loop: no data moves at all;
- bare loop: the same model and synthetic data through the loop a PyTorch user writes by hand (no loss read
  back, no NaN or stop checks), for the engine's own overhead on a GPU.

If real reaches at least 0.9 of synthetic, data loading is not what limits the GPU. Random weights (no
download needed; the speed is the same as pretrained). The engine's callbacks (metrics rows, a checkpoint each
epoch) are left out on both sides.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import first_images, print_medians
from core.config import TrainConfig
from core.data.batches import normalize
from core.data.load import Split, load_source
from core.device import autocast_for, describe_device, memory_format_for, pick_device
from core.net.backbones import build_classifier, unfreeze
from core.train.loop import Learner, evaluate, fit_one_cycle


def fresh_model(config: TrainConfig, device: torch.device):
    torch.manual_seed(0)
    classifier = build_classifier(config.arch, 10, pretrained=False, size=config.size)
    classifier.model.to(device, memory_format=memory_format_for(classifier.model, device))
    unfreeze(classifier)
    return classifier


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_speed(split: Split, config: TrainConfig, device: torch.device, epochs: int) -> float:
    """core.train.loop.fit_one_cycle after one warm-up epoch (cudnn.benchmark picks its kernels); training images/s."""
    classifier = fresh_model(config, device)
    learner = Learner(classifier, split, config, device)
    params = [p for group in classifier.groups for p in group]
    fit_one_cycle(learner, 1, [{"params": params, "lr": 1e-3}], phase="warm-up")
    synchronize(device)
    started = time.perf_counter()
    fit_one_cycle(learner, epochs, [{"params": params, "lr": 1e-3}], phase="timed")
    synchronize(device)
    return epochs * learner.batches_per_epoch() * config.bs / (time.perf_counter() - started)


def bare_speed(split: Split, config: TrainConfig, device: torch.device, epochs: int) -> float:
    """The hand-written loop on the same data and model, also after a warm-up epoch; training images/s."""
    model = fresh_model(config, device).model
    steps, layout = len(split.train_labels) // config.bs, memory_format_for(model, device)

    def run(n_epochs: int) -> None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=config.wd,
                                      fused=device.type == "cuda")
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=n_epochs * steps)
        for _ in range(n_epochs):
            model.train()
            order = torch.randperm(len(split.train_labels)).to(split.train_images.device)
            labels = split.train_labels.to(device)
            for i in range(steps):
                index = order[i * config.bs:(i + 1) * config.bs]
                x = normalize(split.train_images[index]).contiguous(memory_format=layout)
                with autocast_for(device):
                    loss = F.cross_entropy(model(x), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            evaluate(model, split.valid_images, split.valid_labels, batch_size=config.bs, device=device)

    run(1)
    synchronize(device)
    started = time.perf_counter()
    run(epochs)
    synchronize(device)
    return epochs * steps * config.bs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=3, help="the digits this many times over")
    parser.add_argument("--ways", default="real,streamed,synthetic,bare", help="which of the four to time")
    parser.add_argument("--smoke", action="store_true",
                        help="ResNet-18 at 16 px, two batches of 16, one short repeat (any device)")
    args = parser.parse_args()
    device = pick_device()
    config = TrainConfig(arch="resnet50", pretrained=False, size=224, bs=128)
    if args.smoke:
        config = TrainConfig(arch="resnet18", pretrained=False, size=16, bs=16)
        args.epochs, args.repeats, args.copies = 1, 1, 1
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = load_source("builtin:digits", config.size)
    host = Split.from_dataset(data, 0.2, 0)
    host = Split(host.train_images.repeat(args.copies, 1, 1, 1), host.train_labels.repeat(args.copies),
                 host.valid_images, host.valid_labels, host.valid_ids)
    if args.smoke:  # every way's steps on two training batches and one validation batch
        host = first_images(host, 2 * config.bs, config.bs)
    placed = host.placed(device)
    if device.type == "cuda" and not placed.train_images.is_cuda:
        raise SystemExit("The images did not fit the GPU's memory share; lower --copies.")
    generator = torch.Generator().manual_seed(0)
    synthetic = Split(torch.randint(0, 256, host.train_images.shape, dtype=torch.uint8, generator=generator).to(device),
                      host.train_labels,
                      torch.randint(0, 256, host.valid_images.shape, dtype=torch.uint8, generator=generator).to(device),
                      host.valid_labels, np.arange(len(host.valid_labels)))
    ways = {"real": ("real, on the GPU", lambda: engine_speed(placed, config, device, args.epochs)),
            "streamed": ("real, streamed", lambda: engine_speed(host, config, device, args.epochs)),
            "synthetic": ("synthetic", lambda: engine_speed(synthetic, config, device, args.epochs)),
            "bare": ("bare loop", lambda: bare_speed(synthetic, config, device, args.epochs))}
    chosen = [ways[name] for name in args.ways.split(",")]
    results: dict[str, list[float]] = {label: [] for label, _ in chosen}
    for _ in range(args.repeats):
        for label, measure in chosen:
            results[label].append(measure())
    print(f"{describe_device(device)}; {config.arch} at {config.size} px, batch {config.bs}, "
          f"{len(host.train_labels)} training images, {args.epochs} epochs x {args.repeats} repeats "
          f"(training images/s, validation included)")
    median = print_medians(results)
    ratios = {"real / synthetic": ("real, on the GPU", "synthetic", " (target >= 0.9)"),
              "streamed / synthetic": ("real, streamed", "synthetic", ""),
              "engine / bare loop": ("synthetic", "bare loop", "")}
    print("; ".join(f"{name}: {median[top] / median[bottom]:.3f}{note}" for name, (top, bottom, note) in ratios.items()
                    if top in median and bottom in median))
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
