"""fastai's side of bench/time_to_accuracy: vision_learner + fine_tune on a folder of images, run in
.venv-fastai (bench/setup_fastai.sh). Prints the same epoch table as `python -m core.train`.

    .venv-fastai/bin/python -m bench.fastai_digits FOLDER --size 64 --epochs 3

The backbone is the project's own EfficientNet-Lite0 body (same ImageNet weights, BatchNorm momentum 0.1),
registered in fastai's model_meta the way fastai describes its own architectures, so both sides start from
identical weights; everything else (head, splitter, data pipeline, fine_tune's rates) is fastai's default.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from fastai.vision.all import (
    Callback,
    ImageDataLoaders,
    Normalize,
    Recorder,
    Resize,
    ResizeMethod,
    accuracy,
    create_head,
    default_split,
    imagenet_stats,
    model_meta,
    set_seed,
    vision_learner,
)
from torch import nn

from core.net.backbones import ARCHS


class EpochTable(Callback):
    """One line per epoch in core.train's format, printed as soon as the epoch's validation is done."""

    order = Recorder.order + 1

    def before_fit(self):
        self.phase = "frozen" if not all(p.requires_grad for p in self.model.parameters()) else "unfrozen"

    def before_epoch(self):
        self.started = time.perf_counter()

    def after_epoch(self):
        train_loss, valid_loss, acc = self.recorder.values[-1][:3]
        self.learn.bench_epoch = getattr(self.learn, "bench_epoch", 0) + 1
        seconds = int(time.perf_counter() - self.started)
        print(f"{self.learn.bench_epoch:>5} {self.phase:>8} {train_loss:>10.4f} {valid_loss:>10.4f} {acc:>8.4f} "
              f"{1 - acc:>10.4f} {seconds // 60:02d}:{seconds % 60:02d}", flush=True)


def registered_backbone(size: int):
    """The project's EfficientNet-Lite0 body at `size` px as a fastai architecture (in model_meta: no cut, fastai's
    default split, ImageNet statistics)."""

    def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
        return nn.Sequential(ARCHS["efficientnet_lite0"].build(pretrained, size).body)

    model_meta[efficientnet_lite0] = {"cut": lambda model: model, "split": default_split, "stats": imagenet_stats}
    return efficientnet_lite0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, help="train/ and valid/ folders, one sub-folder per class")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--freeze-epochs", type=int, default=1)
    args = parser.parse_args()
    set_seed(42)
    efficientnet_lite0 = registered_backbone(args.size)
    dls = ImageDataLoaders.from_folder(args.folder, train="train", valid="valid", bs=args.bs, seed=42,
                                       item_tfms=Resize(args.size, ResizeMethod.Squish))
    # fastai's own default head (concat pooling, BatchNorm, dropout, 512 units), given explicitly only because
    # fastai cannot count the features of this body itself (its padded convolutions hide their weights from
    # fastai's num_features_model): create_head(1280, c) is what add_head builds when no head is given.
    learn = vision_learner(dls, efficientnet_lite0, metrics=accuracy, cbs=EpochTable(),
                           custom_head=create_head(1280, dls.c))
    assert any(isinstance(t, Normalize) for t in dls.after_batch.fs)  # ImageNet statistics, from model_meta
    with learn.no_bar():
        learn.fine_tune(args.epochs, freeze_epochs=args.freeze_epochs)


if __name__ == "__main__":
    main()
