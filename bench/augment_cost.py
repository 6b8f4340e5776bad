"""What one click on fastai's augmentation set costs: the frozen phase with and without augmentation.

    python -m bench.augment_cost [--size 64] [--freeze-epochs 5] [--repeats 3] [--smoke]

Without augmentation the frozen body sees the same images every epoch, so core.train.recipe computes its features
once and the frozen epochs train only the head on them; with any augmentation every frozen epoch runs the whole
body over freshly changed images. Both run core.train.recipe.fine_tune with the app's defaults (EfficientNet-Lite0,
ImageNet weights, digits, batch 64) and `epochs=0`, so only the frozen phase is timed (wall time, feature
caching and every validation pass included). Prints each pair and the median ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import first_images
from core.config import FASTAI_AUGMENT, TrainConfig
from core.data.load import Split, load_source
from core.device import pick_device
from core.net.backbones import build_classifier
from core.train.loop import Learner, evaluate
from core.train.recipe import fine_tune


def frozen_phase(split: Split, config: TrainConfig, device: torch.device) -> tuple[float, float]:
    """(seconds, validation accuracy) of the frozen phase alone under `config`."""
    torch.manual_seed(config.seed)
    classifier = build_classifier(config.arch, int(split.train_labels.max()) + 1, pretrained=True, size=config.size)
    classifier.model.to(device)
    learner = Learner(classifier, split, config, device)
    started = time.perf_counter()
    fine_tune(learner)
    seconds = time.perf_counter() - started
    accuracy = evaluate(classifier.model, split.valid_images, split.valid_labels, batch_size=config.bs,
                        device=device).accuracy
    return seconds, accuracy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=TrainConfig.size)
    parser.add_argument("--freeze-epochs", type=int, default=TrainConfig.freeze_epochs)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="200 digits at 16 px, one epoch, once: checks that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.freeze_epochs, args.repeats = 16, 1, 1
    device = pick_device()
    data = load_source("builtin:digits", args.size)
    base = TrainConfig(size=args.size, freeze_epochs=args.freeze_epochs, epochs=0)
    split = Split.from_dataset(data, base.valid_pct, base.seed).placed(device)
    if args.smoke:
        split = first_images(split, 160, 40)
    ratios = []
    print(f"digits at {args.size} px, {args.freeze_epochs} frozen epochs, {device}, {torch.get_num_threads()} threads")
    for repeat in range(args.repeats):
        plain_s, plain_acc = frozen_phase(split, base, device)
        aug_s, aug_acc = frozen_phase(split, TrainConfig(**{**base.to_dict(), **FASTAI_AUGMENT}), device)
        ratios.append(aug_s / plain_s)
        print(f"  repeat {repeat}: no augmentation {plain_s:6.1f} s ({plain_acc:.1%}), fastai's set {aug_s:6.1f} s "
              f"({aug_acc:.1%}): {ratios[-1]:.1f}x")
    print(f"median: augmentation makes the frozen phase {statistics.median(ratios):.1f}x slower")


if __name__ == "__main__":
    main()
