"""fastai's side of bench/multilabel: the planet recipe (fastai's lesson 3, fastbook chapter 6) on a labels CSV of
label sets, run in .venv-fastai (bench/setup_fastai.sh). Prints core.train's epoch table (accuracy_multi at 0.2 in
the accuracy column), then writes the test images' probabilities.

    .venv-fastai/bin/python -m bench.fastai_planet FOLDER TEST_FOLDER OUT.npz --size 64

FOLDER holds images/ and labels.csv (image_name, tags separated by spaces, is_valid); TEST_FOLDER the same without
is_valid. The recipe: ImageDataLoaders.from_df with label_delim=" " (a MultiCategoryBlock: sigmoid outputs and
BCEWithLogitsLossFlat), vision_learner with accuracy_multi at planet's threshold 0.2, and fastbook's multi-label
fine_tune(3, base_lr=3e-3, freeze_epochs=4). The backbone is the project's EfficientNet-Lite0 body, registered as
bench/fastai_digits does, so both sides start from the same ImageNet weights. OUT.npz: the validation and test
probabilities in the order of labels.csv's rows, and the label names (dls.vocab).
"""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from fastai.vision.all import (
    F1ScoreMulti,
    ImageDataLoaders,
    Resize,
    ResizeMethod,
    accuracy_multi,
    create_head,
    set_seed,
    vision_learner,
)

from bench.fastai_digits import EpochTable, registered_backbone


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--bs", type=int, default=64)
    args = parser.parse_args()
    set_seed(42)
    efficientnet_lite0 = registered_backbone(args.size)
    frame = pd.read_csv(args.folder / "labels.csv", keep_default_na=False)
    dls = ImageDataLoaders.from_df(frame, args.folder, fn_col="image_name", label_col="tags", label_delim=" ",
                                   valid_col="is_valid", bs=args.bs, seed=42,
                                   item_tfms=Resize(args.size, ResizeMethod.Squish))
    table = EpochTable()
    learn = vision_learner(dls, efficientnet_lite0, cbs=table, custom_head=create_head(1280, dls.c),
                           metrics=[partial(accuracy_multi, thresh=0.2), F1ScoreMulti(thresh=0.2, average="samples")])
    with learn.no_bar():
        learn.fine_tune(3, base_lr=3e-3, freeze_epochs=4)
        learn.remove_cb(table)  # predicting runs the epoch events too
        valid_probs, _ = learn.get_preds(dl=dls.valid)
        test_frame = pd.read_csv(args.test / "labels.csv", keep_default_na=False)
        test_probs, _ = learn.get_preds(dl=dls.test_dl([args.test / name for name in test_frame["image_name"]]))
    np.savez(args.out, valid=valid_probs.numpy(), test=test_probs.numpy(), vocab=np.array(list(dls.vocab)))


if __name__ == "__main__":
    main()
