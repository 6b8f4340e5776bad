"""The engine's training speed against a bare, idiomatic PyTorch loop doing the same work, in one process.

    .venv/bin/python -m bench.engine_overhead [--repeats 3 --epochs 2]   # target: ratio >= 0.97
    .venv/bin/python -m bench.engine_overhead --smoke                    # CI: tiny

Same model (pretrained EfficientNet-Lite0, every layer training, as in the unfrozen phase), same data (digits
decoded once at 64 px), batch size 64, AdamW with a one-cycle schedule, a validation pass each epoch, on the
same device. The engine (core.train.loop.fit_one_cycle) also writes metrics, status heartbeats and a checkpoint
each epoch, checks for NaN and a stop request each step; the bare loop does none of that. Runs alternate and
the medians are compared. A second table shows what two CPU choices of the engine are worth, measured the
same way on the bare loop: channels_last against the default layout, and validation batches of 32 against 128;
and the frozen phase's one pass of feature extraction with 16, 32 and 128 images a forward pass.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import first_images, peak_rss_mb, print_medians
from core.config import TrainConfig
from core.data.batches import normalize
from core.data.load import Split, load_source
from core.device import pick_device
from core.net.backbones import build_classifier, unfreeze
from core.runs import store
from core.runs.folder import RunFolder
from core.train.callbacks import RunFolderWriter, StopOnNonFiniteLoss, StopOnRequest, TerminalProgress
from core.train.loop import Learner, fit_one_cycle, keeps_bn_stats, set_train_mode
from core.train.recipe import body_features


def bare_epochs(model, split: Split, config: TrainConfig, device, epochs: int, *, channels_last: bool,
                eval_batch: int) -> float:
    """The loop a PyTorch user writes by hand; returns training images per second, validation included."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=layout)
    dataset = torch.utils.data.TensorDataset(split.train_images, split.train_labels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.bs, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.wd)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=epochs * len(loader))
    started, seen = time.perf_counter(), 0
    for _ in range(epochs):
        set_train_mode(model, keeps_bn_stats(config))  # the same BatchNorm work as the engine does
        for x, y in loader:
            x = normalize(x.to(device)).contiguous(memory_format=layout)
            loss = F.cross_entropy(model(x), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(split.valid_labels), eval_batch):
                x = normalize(split.valid_images[start:start + eval_batch].to(device)).contiguous(memory_format=layout)
                model(x).argmax(1)
    return seen / (time.perf_counter() - started)


def engine_epochs(model, split: Split, config: TrainConfig, device, epochs: int, runs_dir: Path) -> float:
    """core.train.loop's fit with the callbacks a real run has; returns training images per second."""
    folder = RunFolder(store.create_run(config, runs_dir, "engine"))
    classifier = build_classifier(config.arch, 10, pretrained=False, size=config.size)
    classifier.model.load_state_dict(model.state_dict())
    classifier.model.to(device, memory_format=torch.channels_last)
    unfreeze(classifier)
    writer = RunFolderWriter(folder, [str(i) for i in range(10)])
    callbacks = [StopOnNonFiniteLoss(), writer, TerminalProgress(), StopOnRequest(folder)]
    learner = Learner(classifier, split, config, device, callbacks=callbacks)
    learner.total_epochs, learner.total_steps = epochs, epochs * learner.batches_per_epoch()
    learner.call("on_fit_start", learner)
    started = time.perf_counter()
    fit_one_cycle(learner, epochs, [{"params": list(classifier.model.parameters()), "lr": config.lr}],
                  phase="unfrozen")
    elapsed = time.perf_counter() - started
    writer.metrics.close()
    return epochs * learner.batches_per_epoch() * config.bs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--smoke", action="store_true",
                        help="one repeat of one epoch of two batches at 16 px, to check the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.epochs, args.size = 1, 1, 16
    device = pick_device()
    config = TrainConfig(size=args.size, bs=64, lr=1e-3)  # a rate at which training every layer learns
    data = load_source(config.data, config.size)
    split = Split.from_dataset(data, config.valid_pct, config.seed)
    if args.smoke:
        split = first_images(split, 2 * config.bs, config.bs)
    initial = build_classifier(config.arch, 10, pretrained=True, size=config.size).model
    speeds: dict[str, list[float]] = {"bare": [], "engine": [], "bare, default layout": [],
                                      "bare, validation batch 128": []}
    with tempfile.TemporaryDirectory() as runs_dir:
        for _ in range(args.repeats):
            speeds["bare"].append(bare_epochs(copy.deepcopy(initial), split, config, device, args.epochs,
                                              channels_last=True, eval_batch=32))
            speeds["engine"].append(engine_epochs(initial, split, config, device, args.epochs, Path(runs_dir)))
            speeds["bare, default layout"].append(bare_epochs(copy.deepcopy(initial), split, config, device,
                                                              args.epochs, channels_last=False, eval_batch=32))
            speeds["bare, validation batch 128"].append(bare_epochs(copy.deepcopy(initial), split, config, device,
                                                                    args.epochs, channels_last=True, eval_batch=128))
    features: dict[int, list[float]] = {16: [], 32: [], 128: []}  # the cached frozen phase's one pass
    body = initial[0].to(device, memory_format=torch.channels_last)
    for _ in range(args.repeats):
        for chunk in features:
            started = time.perf_counter()
            body_features(body, split.train_images, batch_size=config.bs, device=device, chunk=chunk)
            features[chunk].append(len(split.train_labels) / (time.perf_counter() - started))
    print(f"EfficientNet-Lite0, {config.size} px, batch {config.bs}, {args.epochs} epochs x {args.repeats} "
          f"repeats on {device}; images/s")
    median = print_medians(speeds)
    print(f"engine / bare loop: {median['engine'] / median['bare']:.3f} (target >= 0.97)")
    print(f"channels_last / default layout: {median['bare'] / median['bare, default layout']:.2f}; "
          f"validation in batches of 32 / 128: {median['bare'] / median['bare, validation batch 128']:.2f}")
    chunks = {chunk: statistics.median(values) for chunk, values in features.items()}
    print("feature extraction (frozen body, eval mode), images/s by images a pass: "
          + ", ".join(f"{chunk}: {value:.0f}" for chunk, value in chunks.items())
          + f"; 32 / 128: {chunks[32] / chunks[128]:.2f}")
    print(f"peak RSS {peak_rss_mb(os.getpid()):.0f} MB")


if __name__ == "__main__":
    main()
