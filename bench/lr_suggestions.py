"""Which learning-rate finder suggestion trains better: fastai's "valley" or "steep", each used as the run's lr.

    python -m bench.lr_suggestions [--seeds 42] [--smoke]

For each data set, core.train.lr_find.sweep runs as the Train page's finder does (body frozen, 100 batches), then
core.train.recipe.fine_tune trains a fresh EfficientNet-Lite0 with each suggestion as `lr` and the app's default
schedule (5 frozen epochs on cached features, 3 unfrozen), reporting validation accuracy after the first
epoch and at the end. Data sets: the built-in digits at 64 px (the app's default), and the digits at 32 px with
20% of the training labels replaced by a seeded wrong class (a noisy-label copy; validation stays clean).
"""
from __future__ import annotations

import argparse

import torch

from bench.common import first_images
from core.config import TrainConfig
from core.data.load import Split, load_source
from core.device import pick_device
from core.net.backbones import build_classifier
from core.train.callbacks import Callback
from core.train.loop import Learner, keeps_bn_stats
from core.train.lr_find import suggest_steep, suggest_valley, sweep
from core.train.recipe import fine_tune

SWEEP_STEPS = 100  # the Train page's finder's batches


class Accuracies(Callback):
    def __init__(self):
        self.values: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.values.append(logs["accuracy"])


def noisy(split: Split, share: float, seed: int) -> Split:
    """A copy whose training labels are wrong for a seeded `share` of the images (validation untouched)."""
    generator = torch.Generator().manual_seed(seed)
    labels = split.train_labels.clone()
    n_classes = int(labels.max()) + 1
    chosen = torch.randperm(len(labels), generator=generator)[: int(share * len(labels))]
    labels[chosen] = (labels[chosen] + torch.randint(1, n_classes, (len(chosen),), generator=generator)) % n_classes
    return Split(split.train_images, labels, split.valid_images, split.valid_labels, split.valid_ids)


def trained(split: Split, config: TrainConfig, device: torch.device) -> list[float]:
    """Validation accuracy after every epoch of the app's recipe under `config`."""
    torch.manual_seed(config.seed)
    classifier = build_classifier(config.arch, int(split.valid_labels.max()) + 1, pretrained=True, size=config.size)
    classifier.model.to(device)
    accuracies = Accuracies()
    fine_tune(Learner(classifier, split, config, device, callbacks=[accuracies]))
    return accuracies.values


def suggestions(split: Split, config: TrainConfig, device: torch.device, steps: int = SWEEP_STEPS) -> dict[str, float]:
    torch.manual_seed(config.seed)
    classifier = build_classifier(config.arch, int(split.valid_labels.max()) + 1, pretrained=True, size=config.size)
    classifier.model.to(device)
    lrs, losses = sweep(classifier, split, batch_size=config.bs, device=device, pretrained=True,
                        keep_bn_stats=keeps_bn_stats(config), seed=config.seed, steps=steps)
    return {"valley": suggest_valley(lrs, losses), "steep": suggest_steep(lrs, losses)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--smoke", action="store_true",
                        help="200 digits at 16 px, batch 16, a 20-batch sweep, one frozen epoch: checks that it runs")
    args = parser.parse_args()
    device = pick_device()
    sets = {"digits 64 px": (64, 0.0), "digits 32 px, 20% noisy labels": (32, 0.2)}
    schedule, steps = (dict(freeze_epochs=1, epochs=0, bs=16), 20) if args.smoke else ({}, SWEEP_STEPS)
    if args.smoke:
        sets = {"digits 16 px": (16, 0.0)}
    wins = {"valley": 0, "steep": 0}
    for name, (size, share) in sets.items():
        for seed in args.seeds:
            config = TrainConfig(size=size, seed=seed, **schedule)
            split = Split.from_dataset(load_source("builtin:digits", size), config.valid_pct, seed).placed(device)
            if args.smoke:
                split = first_images(split, 160, 40)
            if share:
                split = noisy(split, share, seed)
            found = suggestions(split, config, device, steps)
            finals = {}
            for which, lr in found.items():
                accuracies = trained(split, TrainConfig(**{**config.to_dict(), "lr": lr}), device)
                finals[which] = accuracies[-1]
                print(f"{name}, seed {seed}: {which:6} lr {lr:.1e}: first epoch {accuracies[0]:.1%}, "
                      f"final {accuracies[-1]:.1%}", flush=True)
            wins[max(finals, key=finals.get)] += 1
    print(f"better final accuracy: valley {wins['valley']}, steep {wins['steep']} (of {sum(wins.values())})")


if __name__ == "__main__":
    main()
