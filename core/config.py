"""The one flat, frozen training configuration, written into every run folder and checkpoint."""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    data: str = "builtin:digits"  # dataset source: "builtin:NAME", a folder of images, or a .zip of one
    label_regex: str = ""  # file-name layouts: a regex whose first group is the label ("" finds the layout itself)
    resize: str = "squish"  # how images become square: squish (stretch), crop (centre) or pad (black borders)
    arch: str = "efficientnet_lite0"  # backbone key in core.models.ARCHS
    pretrained: bool = True  # start from ImageNet weights; False trains every layer from random init
    size: int = 64  # square side in pixels of the images the network sees (small is fast on a CPU)
    bs: int = 64  # batch size
    epochs: int = 3  # one-cycle epochs with every layer trainable (after the frozen ones, if pretrained)
    # Epochs with the pretrained body frozen first, as fastai's fine_tune (which does 1). Without augmentation
    # they train the head on body features computed once, a fraction of a second each, so five are cheap.
    freeze_epochs: int = 5
    # Peak learning rate of the head. fastai's fine_tune uses 2e-3; on digits 5e-3 gave 96.9% against 95.5%
    # (1e-2: 98.1%, but ResNet-18 from scratch fell to 19.5% after one epoch at it).
    lr: float = 5e-3
    unfrozen_lr_min: float = 0.0  # unfrozen phase, earliest layers' peak rate (0: unfrozen_lr_max / 100)
    unfrozen_lr_max: float = 0.0  # unfrozen phase, head's peak rate (0: lr / 2, as fine_tune halves it)
    wd: float = 0.01  # AdamW weight decay
    label_smoothing: float = 0.0  # share of each target spread over the other classes (fastai suggests 0.1)
    patience: int = 0  # stop early after this many epochs without a better validation loss (0: never)
    adapt_bn: bool = False  # let a pretrained body's BatchNorm statistics follow the new data (fastai does)
    keep_best: bool = False  # finish with the weights of the epoch with the best validation accuracy
    valid_pct: float = 0.2  # share of each class held out for validation (stratified, seeded)
    seed: int = 42  # seeds the split, the weights of the new head and the batch order
    flip: bool = False  # random horizontal flips (wrong for digits and text; right for most photos)
    rotate: float = 0.0  # random rotation up to this many degrees (fastai's aug_transforms: 10)
    zoom: float = 1.0  # random zoom in up to this factor (fastai: 1.1)
    lighting: float = 0.0  # random brightness and contrast change up to this fraction (fastai: 0.2)

    @property
    def augments(self) -> bool:
        return self.flip or self.rotate > 0 or self.zoom > 1 or self.lighting > 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a dict, ignoring keys this version does not know (older or newer run folders)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def cli_args(self) -> list[str]:
        """The `python -m core.train` flags that reproduce this configuration."""
        args = ["--data", self.data, "--arch", self.arch, "--size", str(self.size), "--bs", str(self.bs),
                "--epochs", str(self.epochs), "--freeze-epochs", str(self.freeze_epochs), "--lr", repr(self.lr),
                "--wd", repr(self.wd), "--valid-pct", repr(self.valid_pct), "--seed", str(self.seed)]
        if not self.pretrained:
            args.append("--no-pretrained")
        if self.unfrozen_lr_max:
            args += ["--unfrozen-lr", repr(self.unfrozen_lr_min or self.unfrozen_lr_max / 100),
                     repr(self.unfrozen_lr_max)]
        for flag, value, neutral in (("--label-smoothing", self.label_smoothing, 0.0),
                                     ("--patience", self.patience, 0)):
            if value != neutral:
                args += [flag, repr(value)]
        if self.keep_best:
            args.append("--keep-best")
        if self.adapt_bn:
            args.append("--adapt-bn")
        if self.label_regex:
            args += ["--label-regex", self.label_regex]
        if self.resize != "squish":
            args += ["--resize", self.resize]
        if self.flip:
            args.append("--flip")
        for flag, value, neutral in (("--rotate", self.rotate, 0.0), ("--zoom", self.zoom, 1.0),
                                     ("--lighting", self.lighting, 0.0)):
            if value != neutral:
                args += [flag, repr(value)]
        return args

    def cli_command(self) -> str:
        return shlex.join(["python", "-m", "core.train", *self.cli_args()])


# Named starting points. Lesson 1 is fastai's course-v3 lesson 1 on the Oxford pets: resnet34 at 224 px, batch
# 64, four frozen epochs (fit_one_cycle(4)), then unfreeze and two epochs at max_lr=slice(1e-6, 1e-4).
PRESETS: dict[str, dict] = {
    "lesson1": dict(data="builtin:pets", arch="resnet34", pretrained=True, size=224, bs=64, freeze_epochs=4,
                    epochs=2, lr=1e-3, unfrozen_lr_min=1e-6, unfrozen_lr_max=1e-4, resize="crop"),
}
