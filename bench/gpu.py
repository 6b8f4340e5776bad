"""GPU throughput: the engine on real images against the same model on synthetic data already on the GPU.

    bench/gpu.sh                          # on a machine with a GPU, within 10 minutes: target ratio >= 0.9
    .venv/bin/python -m bench.gpu --smoke # CI, on the CPU: the same code path, tiny

ResNet-50 at 224 px, batch 128, bf16 autocast, channels_last, cudnn.benchmark: the engine's CUDA path
(core.train.fit_one_cycle). Real: the digits decoded once at 224 px in pinned host memory, each batch copied
with non_blocking and normalized on the GPU. Synthetic: random images that already live on the GPU, so no data
moves at all. If real reaches at least 0.9 of synthetic, data loading is not what limits the GPU. Random
weights (no download needed; the speed is the same as pretrained).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import print_medians
from core.config import TrainConfig
from core.data import load_source
from core.models import build_classifier, unfreeze
from core.train import Loop, Split, describe_device, fit_one_cycle, pick_device


def images_per_second(split: Split, config: TrainConfig, device: torch.device, epochs: int) -> float:
    torch.manual_seed(0)
    classifier = build_classifier(config.arch, 10, pretrained=False, size=config.size)
    classifier.model.to(device, memory_format=torch.channels_last)
    unfreeze(classifier)
    loop = Loop(classifier, split, config, device)
    params = [p for group in classifier.groups for p in group]
    fit_one_cycle(loop, 1, [{"params": params, "lr": 1e-3}], phase="warm-up")  # cudnn.benchmark picks kernels
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fit_one_cycle(loop, epochs, [{"params": params, "lr": 1e-3}], phase="timed")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * loop.batches_per_epoch() * config.bs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="ResNet-18 at 32 px, one short repeat (any device)")
    args = parser.parse_args()
    device = pick_device()
    config = TrainConfig(arch="resnet50", pretrained=False, size=224, bs=128)
    if args.smoke:
        config, args.epochs, args.repeats = TrainConfig(arch="resnet18", pretrained=False, size=32, bs=64), 1, 1
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = load_source("builtin:digits", config.size)
    real = Split.from_dataset(data, 0.2, 0)  # pinned host memory on CUDA
    generator = torch.Generator().manual_seed(0)
    fake = torch.randint(0, 256, real.train_images.shape, dtype=torch.uint8, generator=generator).to(device)
    fake_valid = torch.randint(0, 256, real.valid_images.shape, dtype=torch.uint8, generator=generator).to(device)
    synthetic = Split(fake, real.train_labels, fake_valid, real.valid_labels, np.arange(len(fake_valid)))
    results: dict[str, list[float]] = {"real": [], "synthetic": []}
    for _ in range(args.repeats):
        results["real"].append(images_per_second(real, config, device, args.epochs))
        results["synthetic"].append(images_per_second(synthetic, config, device, args.epochs))
    print(f"{describe_device(device)}; {config.arch} at {config.size} px, batch {config.bs}, {args.epochs} epochs "
          f"x {args.repeats} repeats (training images/s, validation included)")
    median = print_medians(results)
    print(f"real / synthetic: {median['real'] / median['synthetic']:.3f} (target >= 0.9)")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
